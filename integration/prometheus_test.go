package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"rowcast/integration/harness"
	"rowcast/metrics"
)

// The operations side, checked with the real tools: promtool lints what
// /metrics serves, and a real Prometheus scrapes rowcast, loads
// metrics/alerts.yml and fires RowcastCaptureDown when capture is cut off.

const alertsFile = "../metrics/alerts.yml"

func needTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not found on PATH: install it (Debian: apt-get install prometheus; .ci/run does) to run this test", name)
	}
	return path
}

// TestPrometheusCheckMetrics: promtool finds nothing to complain about in
// what a running rowcast serves, in each capture mode.
func TestPrometheusCheckMetrics(t *testing.T) {
	promtool := needTool(t, "promtool")
	forModes(t, func(t *testing.T, mode string) {
		db, s := startMode(t, mode)
		c := dial(t, s, "")
		exec1(t, db, `INSERT INTO tickets (title) VALUES ('metrics')`)
		c.next(10*time.Second, "ticket:created")
		status, body := httpGet(t, s.base+"/metrics", nil)
		if status != 200 {
			t.Fatalf("/metrics: HTTP %d", status)
		}
		want := []string{"rowcast_capture_connected 1", `rowcast_capture_info{mode="` + mode + `"} 1`,
			"rowcast_commit_to_send_seconds_bucket", "rowcast_changes_captured_total",
			"process_start_time_seconds", "go_goroutines"}
		if mode == "logical" {
			want = append(want, "rowcast_replication_received_lsn_bytes ", "rowcast_replication_slot_recreations_total 0")
		}
		for _, w := range want {
			if !bytes.Contains(body, []byte(w)) {
				t.Errorf("/metrics has no %s", w)
			}
		}
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(body)
		out, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Fatalf("promtool check metrics: %v\n%s", err, out)
		}
	})
}

// TestPrometheusDBPoller runs the poller's real queries against PostgreSQL:
// a logical slot, a missing slot, and the NOTIFY queue.
func TestPrometheusDBPoller(t *testing.T) {
	db := newDatabase(t)
	conn := connectDB(t, db)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, `SELECT pg_create_logical_replication_slot('rowcast_poll_test', 'pgoutput')`); err != nil {
		t.Fatalf("create slot: %v", err)
	}
	// Some WAL after the slot's position, so that the lag is not zero.
	exec1(t, db, `INSERT INTO tickets (title) SELECT 'wal ' || g FROM generate_series(1, 100) g`)

	mode := metrics.ModeLogical
	slot := "rowcast_poll_test"
	sample := func(reg *prometheus.Registry, name, label string) (float64, bool) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				if label == "" || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label) {
					return m.GetGauge().GetValue(), true
				}
			}
		}
		return 0, false
	}
	poll := func() *prometheus.Registry {
		t.Helper()
		reg := prometheus.NewPedanticRegistry()
		p := metrics.NewDBPoller(reg, conn, slot, func() string { return mode }, 0)
		if err := p.Poll(ctx); err != nil {
			t.Fatalf("poll (%s mode, slot %s): %v", mode, slot, err)
		}
		return reg
	}

	reg := poll()
	if v, _ := sample(reg, "rowcast_replication_slot_wal_status", "reserved"); v != 1 {
		t.Errorf("wal_status{reserved} = %v, want 1", v)
	}
	if v, ok := sample(reg, "rowcast_replication_lag_bytes", ""); !ok || v <= 0 {
		t.Errorf("lag = %v (present %v), want > 0 after writes the slot has not consumed", v, ok)
	}
	if v, ok := sample(reg, "rowcast_replication_retained_wal_bytes", ""); !ok || v <= 0 {
		t.Errorf("retained = %v (present %v), want > 0", v, ok)
	}
	var confirmed float64
	if err := conn.QueryRow(ctx, `SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::float8 FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&confirmed); err != nil {
		t.Fatal(err)
	}
	if v, _ := sample(reg, "rowcast_replication_slot_confirmed_flush_lsn_bytes", ""); v != confirmed {
		t.Errorf("confirmed flush LSN = %v, want %v", v, confirmed)
	}
	if v, ok := sample(reg, "rowcast_replication_slot_active", ""); !ok || v != 0 {
		t.Errorf("active = %v (present %v), want 0: nothing streams from the slot", v, ok)
	}

	slot = "rowcast_no_such_slot"
	reg = poll()
	if v, _ := sample(reg, "rowcast_replication_slot_wal_status", "missing"); v != 1 {
		t.Errorf("missing slot: wal_status{missing} = %v, want 1", v)
	}

	mode = metrics.ModeNotify
	reg = poll()
	if v, ok := sample(reg, "rowcast_notify_queue_usage_ratio", ""); !ok || v < 0 || v > 1 {
		t.Errorf("queue usage = %v (present %v)", v, ok)
	}
}

// promServer is a running Prometheus.
type promServer struct {
	t    *testing.T
	base string
	proc *harness.Process
}

// startPrometheus starts Prometheus scraping target every second, with the
// rules in rulesFile evaluated every second.
func startPrometheus(t *testing.T, bin, target, rulesFile string) *promServer {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: rowcast
    static_configs:
      - targets: [%q]
`, rulesFile, target)
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	proc, err := harness.Start(cmd, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &promServer{t: t, base: "http://" + addr, proc: proc}
	t.Cleanup(func() {
		_, _ = p.proc.Stop(syscall.SIGTERM, 10*time.Second)
		if t.Failed() {
			t.Logf("prometheus log:\n%s", p.proc.Log)
		}
	})
	if err := harness.WaitHTTP(context.Background(), p.base+"/-/ready", 20*time.Second, proc.Done()); err != nil {
		t.Fatalf("prometheus not ready: %v\n%s", err, proc.Log)
	}
	return p
}

// waitFor polls cond every 200 ms until it holds; it fails the test with
// the last state after timeout or when Prometheus exits.
func (p *promServer) waitFor(what string, timeout time.Duration, cond func() (bool, string)) {
	p.t.Helper()
	deadline := time.Now().Add(patient(timeout))
	last := ""
	for {
		select {
		case <-p.proc.Done():
			p.t.Fatalf("prometheus exited while waiting for %s\n%s", what, p.proc.Log)
		default:
		}
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			p.t.Fatalf("prometheus: no %s within %v; last: %s", what, timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// api GETs a Prometheus API path and decodes its data field into out.
func (p *promServer) api(path string, out any) error {
	resp, err := http.Get(p.base + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return fmt.Errorf("%s: HTTP %d: %w", path, resp.StatusCode, err)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, env.Status, env.Error)
	}
	return json.Unmarshal(env.Data, out)
}

type promAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
}

func (p *promServer) alerts() ([]promAlert, error) {
	var data struct {
		Alerts []promAlert `json:"alerts"`
	}
	err := p.api("/api/v1/alerts", &data)
	return data.Alerts, err
}

// shortRules copies alerts.yml with every "for:" set to 0s, so that the
// real expressions fire as soon as they hold.
func shortRules(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	out := regexp.MustCompile(`(?m)^(\s+)for: \S+$`).ReplaceAll(b, []byte("${1}for: 0s"))
	if bytes.Equal(out, b) {
		t.Fatal("no for: clauses found in alerts.yml")
	}
	f := filepath.Join(t.TempDir(), "alerts.yml")
	if err := os.WriteFile(f, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestPrometheusScrapeAndAlert: a real Prometheus scrapes rowcast, loads
// the alert rules and evaluates them cleanly, evaluates every dashboard
// query, raises nothing while rowcast is healthy, and fires
// RowcastCaptureDown once rowcast's listener is cut off from PostgreSQL.
func TestPrometheusScrapeAndAlert(t *testing.T) {
	bin := needTool(t, "prometheus")
	db, s := startMode(t, "notify")
	exec1(t, db, `INSERT INTO tickets (title) VALUES ('scraped')`)
	p := startPrometheus(t, bin, s.addr, shortRules(t))

	// The scrape is up.
	p.waitFor("healthy rowcast target", 20*time.Second, func() (bool, string) {
		var data struct {
			ActiveTargets []struct {
				Labels    map[string]string `json:"labels"`
				Health    string            `json:"health"`
				LastError string            `json:"lastError"`
			} `json:"activeTargets"`
		}
		if err := p.api("/api/v1/targets", &data); err != nil {
			return false, err.Error()
		}
		if len(data.ActiveTargets) != 1 {
			return false, fmt.Sprintf("%d targets", len(data.ActiveTargets))
		}
		tg := data.ActiveTargets[0]
		return tg.Health == "up" && tg.Labels["job"] == "rowcast", fmt.Sprintf("%+v", tg)
	})
	query := func(q string) ([]struct {
		Metric map[string]string `json:"metric"`
		Value  []any             `json:"value"`
	}, error) {
		var data struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  []any             `json:"value"`
			} `json:"result"`
		}
		err := p.api("/api/v1/query?query="+url.QueryEscape(q), &data)
		return data.Result, err
	}
	p.waitFor("up == 1 and capture connected", 10*time.Second, func() (bool, string) {
		r, err := query(`up{job="rowcast"} == 1 and on(instance) rowcast_capture_connected == 1`)
		if err != nil {
			return false, err.Error()
		}
		return len(r) == 1, fmt.Sprintf("%v", r)
	})

	// Every rule is loaded, has its annotations and evaluates without error.
	p.waitFor("all rules evaluated", 15*time.Second, func() (bool, string) {
		var data struct {
			Groups []struct {
				Rules []struct {
					Name        string            `json:"name"`
					Type        string            `json:"type"`
					Health      string            `json:"health"`
					LastError   string            `json:"lastError"`
					Annotations map[string]string `json:"annotations"`
				} `json:"rules"`
			} `json:"groups"`
		}
		if err := p.api("/api/v1/rules", &data); err != nil {
			return false, err.Error()
		}
		n := 0
		for _, g := range data.Groups {
			for _, r := range g.Rules {
				n++
				if r.Type != "alerting" {
					t.Fatalf("rule %s is a %s rule", r.Name, r.Type)
				}
				for _, a := range []string{"summary", "description", "runbook"} {
					if strings.TrimSpace(r.Annotations[a]) == "" {
						t.Fatalf("rule %s has no %s annotation", r.Name, a)
					}
				}
				if r.Health == "err" {
					t.Fatalf("rule %s fails to evaluate: %s", r.Name, r.LastError)
				}
				if r.Health != "ok" {
					return false, fmt.Sprintf("rule %s: %s", r.Name, r.Health)
				}
			}
		}
		return n >= 8, fmt.Sprintf("%d rules", n)
	})

	// Every dashboard query is valid PromQL over the real series.
	dash, err := os.ReadFile("../metrics/grafana/rowcast.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(dash, &d); err != nil {
		t.Fatal(err)
	}
	vars := strings.NewReplacer("$job", ".*", "$instance", ".*", "$__rate_interval", "1m")
	for _, panel := range d.Panels {
		for _, tg := range panel.Targets {
			if _, err := query(vars.Replace(tg.Expr)); err != nil {
				t.Errorf("dashboard panel %q: %v", panel.Title, err)
			}
		}
	}

	// Healthy: nothing fires, even with every "for" at 0s.
	time.Sleep(2 * time.Second)
	as, err := p.alerts()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		t.Errorf("alert %s is %s while rowcast is healthy: %v", a.Labels["alertname"], a.State, a.Annotations["summary"])
	}

	// Cut capture off: no new connections to the database, then end the
	// listener's session. rowcast keeps retrying; capture stays down.
	// (A database cannot disallow connections to itself: do it from the
	// postgres database.)
	ctx := context.Background()
	cc, err := pgx.ParseConfig(db)
	if err != nil {
		t.Fatal(err)
	}
	name := cc.Database
	cc.Database = "postgres"
	admin, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		t.Fatalf("connect to the postgres database: %v", err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+ident+" ALLOW_CONNECTIONS false"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = admin.Exec(context.Background(), "ALTER DATABASE "+ident+" ALLOW_CONNECTIONS true")
	})
	var killed int
	if err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = 'rowcast listener' AND datname = $1`, name).Scan(&killed); err != nil || killed != 1 {
		t.Fatalf("terminated %d listener sessions: %v", killed, err)
	}
	start := time.Now()
	p.waitFor("RowcastCaptureDown firing", 30*time.Second, func() (bool, string) {
		as, err := p.alerts()
		if err != nil {
			return false, err.Error()
		}
		for _, a := range as {
			if a.Labels["alertname"] == "RowcastCaptureDown" && a.State == "firing" {
				if a.Labels["cause"] != "disconnected" || a.Labels["severity"] != "critical" || a.Labels["instance"] != s.addr {
					t.Fatalf("RowcastCaptureDown labels %v", a.Labels)
				}
				if !strings.Contains(a.Annotations["summary"], s.addr) {
					t.Errorf("summary %q does not name the instance", a.Annotations["summary"])
				}
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", as)
	})
	t.Logf("RowcastCaptureDown fired %v after the listener was cut off", time.Since(start).Round(100*time.Millisecond))
	if n := metric(t, s, "rowcast_capture_connected"); n != 0 {
		t.Errorf("rowcast_capture_connected = %v, want 0", n)
	}
}
