package integration

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"rowcast/integration/harness"
	"rowcast/integration/pgcluster"
	"rowcast/integration/pgcluster/pgtest"
)

// demo is a running "rowcast demo" process.
type demo struct {
	t    testing.TB
	proc *harness.Process
	out  *harness.LogBuffer
	base string // http://127.0.0.1:PORT
	addr string
}

var (
	demoURLRE = regexp.MustCompile(`rowcast demo: dashboard at (http://(\S+))`)
	demoDirRE = regexp.MustCompile(`rowcast demo: PostgreSQL running in (\S+) \(removed on exit\)`)
)

// startDemo runs "rowcast demo" with args. The child gets neither
// DATABASE_URL nor ROWCAST_TEST_DATABASE_URL unless env sets them. It
// waits for the dashboard line and for /readyz.
func startDemo(t testing.TB, env []string, args ...string) *demo {
	t.Helper()
	cmd := exec.Command(rowcastBin, append([]string{"demo"}, args...)...)
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "DATABASE_URL=") || strings.HasPrefix(kv, pgtest.EnvTestDatabaseURL+"=") {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, env...)
	p, err := harness.Start(cmd, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := &demo{t: t, proc: p, out: p.Log}
	t.Cleanup(func() {
		// A failed test may leave the demo running: stop it the normal way
		// so that it removes its cluster.
		d.stop(15 * time.Second)
		if d.out.Contains("WARNING: DATA RACE") {
			t.Errorf("data race in rowcast demo:\n%s", d.out)
		}
		if t.Failed() {
			t.Logf("rowcast demo output:\n%s", d.out)
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := p.WaitLog(ctx, demoURLRE.MatchString)
	if errors.Is(err, harness.ErrExited) {
		t.Fatalf("rowcast demo exited before serving: %v\n%s", p.Err(), out)
	} else if err != nil {
		t.Fatalf("rowcast demo printed no dashboard URL within 90s:\n%s", out)
	}
	m := demoURLRE.FindStringSubmatch(out)
	d.base, d.addr = m[1], m[2]
	if err := harness.WaitHTTP(context.Background(), d.base+"/readyz", 30*time.Second, p.Done()); err != nil {
		t.Fatalf("rowcast demo: %v\n%s", err, d.out)
	}
	return d
}

// stop sends SIGINT and waits up to timeout for the exit (then kills it).
// It reports whether the process exited in time, and its exit error.
func (d *demo) stop(timeout time.Duration) (inTime bool, err error) {
	return d.proc.Stop(syscall.SIGINT, timeout)
}

// login calls the demo login route and returns the token cookie.
func (d *demo) login(t testing.TB) *http.Cookie {
	t.Helper()
	resp, err := http.Post(d.base+"/demo/login", "", nil)
	if err != nil {
		t.Fatalf("POST /demo/login: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST /demo/login: HTTP %d", resp.StatusCode)
	}
	for _, c := range resp.Cookies() {
		if c.Name == "token" && c.Value != "" {
			return c
		}
	}
	t.Fatalf("POST /demo/login set no token cookie (Set-Cookie: %q)", resp.Header.Values("Set-Cookie"))
	return nil
}

// clusterProcesses returns the postmaster of the cluster in dir and its
// children.
func clusterProcesses(t testing.TB, dir string) []int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
	if err != nil {
		t.Fatalf("postmaster.pid of the demo cluster: %v", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("postmaster.pid: %q", line)
	}
	pids := []int{pid}
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			if f := strings.Fields(s[i+1:]); len(f) > 1 && f[1] == strconv.Itoa(pid) {
				child, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
				pids = append(pids, child)
			}
		}
	}
	return pids
}

// alive reports whether pid runs (and is not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// processesMentioning returns the pids whose command line contains s.
func processesMentioning(s string) []int {
	var pids []int
	files, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil || !strings.Contains(string(b), s) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		if pid != os.Getpid() && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestDemo: "rowcast demo" without DATABASE_URL starts its own PostgreSQL,
// seeds tickets, serves the dashboard with a demo login, keeps writing, and
// on SIGINT exits 0 leaving no directory or process behind.
func TestDemo(t *testing.T) {
	if _, err := pgcluster.FindBinDir(); err != nil {
		if os.Getenv(pgtest.EnvTestDatabaseURL) != "" {
			t.Skipf("rowcast demo starts its own PostgreSQL and needs the server binaries: %v", err)
		}
		t.Fatal(err)
	}
	t.Parallel()
	start := time.Now()
	d := startDemo(t, nil, "--listen", "127.0.0.1:0", "--writer-rate", "10")
	t.Logf("demo ready after %v", time.Since(start).Round(time.Millisecond))
	m := demoDirRE.FindStringSubmatch(d.out.String())
	if m == nil {
		t.Fatalf("no cluster directory in the demo's output:\n%s", d.out.String())
	}
	dir := m[1]
	if !strings.Contains(d.out.String(), "psql") || !strings.Contains(d.out.String(), dir) {
		t.Errorf("no psql command line with the socket directory in the output")
	}
	pids := clusterProcesses(t, dir)

	// The dashboard page.
	resp, err := http.Get(d.base + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(string(page), `id="tickets-body"`) {
		t.Errorf("GET /: HTTP %d, %s, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(page))
	}

	// Auth is on: nothing without the demo login's cookie.
	if status, _ := httpGet(t, d.base+"/api/snapshot", nil); status != 401 {
		t.Errorf("snapshot without a token: HTTP %d, want 401", status)
	}
	cookie := d.login(t)
	h := http.Header{"Cookie": {cookie.String()}}
	status, body := httpGet(t, d.base+"/api/snapshot?limit=500", h)
	if status != 200 {
		t.Fatalf("snapshot: HTTP %d %s", status, body)
	}
	var snap struct {
		Stats struct {
			Total    int            `json:"total"`
			ByStatus map[string]int `json:"byStatus"`
		} `json:"stats"`
		Tickets []map[string]any `json:"tickets"`
	}
	if err := json.Unmarshal(body, &snap); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if n := len(snap.Tickets); n < 150 || n > 260 {
		t.Errorf("snapshot has %d tickets, want about 200", n)
	}
	if snap.Stats.Total < 150 || snap.Stats.Total > 260 || len(snap.Stats.ByStatus) < 3 {
		t.Errorf("stats %+v, want about 200 tickets in several statuses", snap.Stats)
	}
	if len(snap.Tickets) > 0 {
		tk := snap.Tickets[0]
		for _, k := range []string{"title", "status", "priority", "category", "requester_email", "created_at"} {
			if tk[k] == nil || tk[k] == "" {
				t.Errorf("ticket without %s: %v", k, tk)
			}
		}
	}

	// The writer's changes arrive over /ws.
	dialer := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	ws, resp, err := dialer.Dial("ws://"+d.addr+"/ws", h)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial /ws with the demo cookie: %v (HTTP %d)", err, status)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	events := map[string]int{}
	for events["ticket:created"]+events["ticket:updated"]+events["ticket:deleted"] < 3 {
		_, data, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for the writer's changes: %v (events so far %v)", err, events)
		}
		var msg message
		if err := json.Unmarshal(data, &msg); err != nil {
			t.Fatalf("bad frame %s", data)
		}
		events[msg.Event]++
	}
	t.Logf("events from the writer: %v", events)

	// Ctrl-C: exit 0, no directory, no server process.
	begin := time.Now()
	inTime, err := d.stop(15 * time.Second)
	if !inTime {
		t.Fatalf("rowcast demo did not exit within 15s of SIGINT")
	}
	if err != nil {
		t.Errorf("rowcast demo exit after SIGINT: %v", err)
	}
	t.Logf("demo stopped %v after SIGINT", time.Since(begin).Round(time.Millisecond))
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("cluster directory %s still exists (%v)", dir, err)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("postgres process %d of the demo cluster still runs", pid)
		}
	}
	if left := processesMentioning(dir); len(left) > 0 {
		t.Errorf("processes still mention %s: %v", dir, left)
	}
	if !strings.Contains(d.out.String(), "rowcast demo: stopped") {
		t.Errorf("no final message in the output")
	}
}
