package metrics_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"

	"rowcast/metrics"
)

// The alert rules, their unit tests and the dashboard ship next to this
// package; these tests keep them consistent with the series it exports.

var seriesRE = regexp.MustCompile(`\b(rowcast_[a-z0-9_]+|process_[a-z0-9_]+|go_[a-z0-9_]+)`)

// exported returns every series name the registry exposes in either
// capture mode, with the _bucket/_sum/_count names of histograms.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, mode := range []string{metrics.ModeLogical, metrics.ModeNotify} {
		reg, _, _ := everything(t, mode)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			n := mf.GetName()
			out[n] = true
			if mf.GetType().String() == "HISTOGRAM" {
				out[n+"_bucket"], out[n+"_sum"], out[n+"_count"] = true, true, true
			}
		}
	}
	return out
}

func referenced(text string) []string {
	seen := map[string]bool{}
	for _, m := range seriesRE.FindAllString(text, -1) {
		seen[m] = true
	}
	var out []string
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func TestAlertRulesFile(t *testing.T) {
	b, err := os.ReadFile("alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	have := exported(t)
	for _, n := range referenced(text) {
		if !have[n] {
			t.Errorf("alerts.yml uses %s, which rowcast does not export", n)
		}
	}
	for _, name := range []string{"RowcastCaptureDown", "RowcastReplicationLagHigh", "RowcastRetainedWALHigh",
		"RowcastSlotLost", "RowcastSlowConsumers", "RowcastLatencyP99High", "RowcastNoChangesCaptured",
		"RowcastNotifyQueueFilling", "RowcastUntrustedInput"} {
		if !strings.Contains(text, "- alert: "+name+"\n") {
			t.Errorf("alerts.yml has no %s", name)
		}
	}
	// Every rule has the three annotations on-call reads.
	rules := strings.Count(text, "- alert: ")
	for _, a := range []string{"summary:", "description:", "runbook:", "severity:"} {
		if n := strings.Count(text, "          "+a); n != rules {
			t.Errorf("%d rules but %d with %s", rules, n, a)
		}
	}
}

func TestDashboardFile(t *testing.T) {
	b, err := os.ReadFile("grafana/rowcast.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		SchemaVersion int `json:"schemaVersion"`
		Inputs        []struct {
			Name     string `json:"name"`
			Type     string `json:"type"`
			PluginID string `json:"pluginId"`
		} `json:"__inputs"`
		UID    string `json:"uid"`
		Panels []struct {
			ID         int    `json:"id"`
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource *struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
			GridPos struct{ H, W, X, Y int } `json:"gridPos"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("grafana/rowcast.json is not valid JSON: %v", err)
	}
	if d.SchemaVersion != 39 {
		t.Errorf("schemaVersion %d, want 39", d.SchemaVersion)
	}
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].Type != "datasource" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("__inputs %+v, want one DS_PROMETHEUS datasource", d.Inputs)
	}
	if d.UID == "" {
		t.Error("no uid")
	}
	have := exported(t)
	ids := map[int]bool{}
	var exprs int
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q is wider than the grid", p.Title)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${DS_PROMETHEUS}" {
			t.Errorf("panel %q does not use ${DS_PROMETHEUS}", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs++
			for _, n := range referenced(tg.Expr) {
				if !have[n] {
					t.Errorf("panel %q uses %s, which rowcast does not export", p.Title, n)
				}
			}
		}
	}
	if exprs < 10 {
		t.Errorf("only %d queries", exprs)
	}
}

// promtool runs promtool with args (and stdin); it skips the test when
// promtool is not installed (.ci/run installs it).
func promtool(t *testing.T, stdin []byte, args ...string) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not found on PATH; install it (Debian: apt-get install prometheus) to check the rules and the exposition")
	}
	cmd := exec.Command(path, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if args[0] == "check" && args[1] == "metrics" && len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("promtool check metrics found problems:\n%s", out)
	}
}

func TestPromtoolCheckRules(t *testing.T) {
	promtool(t, nil, "check", "rules", "alerts.yml")
}

func TestPromtoolTestRules(t *testing.T) {
	promtool(t, nil, "test", "rules", "alerts_test.yml")
}

func TestPromtoolCheckMetrics(t *testing.T) {
	for _, mode := range []string{metrics.ModeLogical, metrics.ModeNotify} {
		reg, _, _ := everything(t, mode)
		promtool(t, exposition(t, reg), "check", "metrics")
	}
}
