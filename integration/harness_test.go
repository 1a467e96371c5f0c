// Package integration runs rowcast end to end: the real binary against a
// real, throwaway PostgreSQL, with real WebSocket clients and writes made
// by plain SQL, as a legacy writer would.
package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

	"rowcast/integration/harness"
	"rowcast/integration/pgcluster/pgtest"
	rsql "rowcast/sql"
)

const testSecret = "integration-test-secret"

var rowcastBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rowcast-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	rowcastBin, err = harness.BuildRowcast(context.Background(), dir, raceEnabled)
	if err != nil {
		fmt.Fprintln(os.Stderr, "build rowcast:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := pgtest.Run(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// newDatabase returns a fresh database with the tickets table.
func newDatabase(t *testing.T) string {
	t.Helper()
	url := pgtest.ForTest(t)
	exec1(t, url, rsql.Tickets)
	return url
}

func connectDB(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func exec1(t testing.TB, url, sql string, args ...any) {
	t.Helper()
	conn := connectDB(t, url)
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

// runRowcast runs a rowcast command to completion.
func runRowcast(t testing.TB, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(rowcastBin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func setup(t testing.TB, dbURL string, env ...string) {
	t.Helper()
	out, err := runRowcast(t, append([]string{"DATABASE_URL=" + dbURL}, env...), "setup")
	if err != nil {
		t.Fatalf("rowcast setup: %v\n%s", err, out)
	}
}

// server is a running "rowcast serve" process, stopped when the test ends.
type server struct {
	t    testing.TB
	rc   *harness.Rowcast
	addr string
	base string
	log  *harness.LogBuffer
}

func freeAddr(t testing.TB) string {
	t.Helper()
	addr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// startServer starts "rowcast serve" and waits until /readyz says ready.
func startServer(t testing.TB, dbURL string, env ...string) *server {
	t.Helper()
	return startServerAt(t, "", dbURL, "/readyz", env...)
}

// restartServer starts "rowcast serve" again on the address of the one
// before (which must have stopped), so that clients reconnect to it.
func restartServer(t testing.TB, old *server, dbURL string, env ...string) *server {
	t.Helper()
	return startServerAt(t, old.addr, dbURL, "/readyz", env...)
}

// startServerAt starts "rowcast serve" on addr (a free port when empty)
// and waits until path answers 200.
func startServerAt(t testing.TB, addr, dbURL, path string, env ...string) *server {
	t.Helper()
	rc, err := harness.StartRowcast(context.Background(), harness.RowcastConfig{
		Bin: rowcastBin, Addr: addr,
		Env: append([]string{"DATABASE_URL=" + dbURL, "JWT_SECRET=" + testSecret,
			"ROWCAST_STATS_INTERVAL=50ms", "ROWCAST_LOG_LEVEL=debug"}, env...),
		ReadyPath:    path,
		ReadyTimeout: patient(30 * time.Second),
	})
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, rc: rc, addr: rc.Addr, base: rc.Base, log: rc.Log}
	t.Cleanup(func() {
		s.stop(syscall.SIGKILL)
		if s.log.Contains("WARNING: DATA RACE") {
			t.Errorf("data race in rowcast:\n%s", s.log)
		}
		if t.Failed() {
			t.Logf("rowcast log:\n%s", s.log)
		}
	})
	return s
}

// patient stretches a wait's deadline: a deadline only matters when a test
// is about to fail, and a busy machine (two cores shared with other work)
// must not turn a slow pass into a failure. ROWCAST_TEST_PATIENCE sets the
// factor (default 10); waits that prove something does not happen are not
// stretched.
func patient(d time.Duration) time.Duration {
	return d * time.Duration(envInt("ROWCAST_TEST_PATIENCE", 10))
}

// waitProgress waits until done reports true, failing only when progress
// (a count that grows as the test advances) has not moved for stall, so a
// slow machine is never mistaken for a stuck one.
func waitProgress(t testing.TB, what string, stall time.Duration, step func() (done bool, progress int64)) {
	t.Helper()
	last, since := int64(-1), time.Now()
	for {
		done, p := step()
		if done {
			return
		}
		if p != last {
			last, since = p, time.Now()
		} else if time.Since(since) > stall {
			t.Fatalf("%s: no progress for %v (at %d)", what, stall, p)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *server) waitReady(timeout time.Duration) {
	s.t.Helper()
	if err := s.rc.WaitReady(context.Background(), patient(timeout)); err != nil {
		s.t.Fatal(err)
	}
}

// stop signals the process and waits for it to exit.
func (s *server) stop(sig os.Signal) error {
	inTime, err := s.rc.Stop(sig, 15*time.Second)
	if !inTime {
		s.t.Errorf("rowcast did not stop within 15s after %v", sig)
	}
	return err
}

func token(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	if claims == nil {
		claims = jwt.MapClaims{"sub": "u1", "email": "agent@example.com", "role": "agent"}
	}
	s, err := harness.Token(testSecret, claims)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// message is one frame from /ws.
type message struct {
	ID    string          `json:"id"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

type client struct {
	t    testing.TB
	conn *websocket.Conn
	msgs chan message
	// closed receives the close error once the connection ends.
	closed chan error
}

// dial connects to /ws with a valid token and starts reading.
func dial(t testing.TB, s *server, query string) *client {
	t.Helper()
	return dialToken(t, s, query, token(t, nil))
}

// dialClaims connects to /ws with a token carrying claims.
func dialClaims(t testing.TB, s *server, claims jwt.MapClaims) *client {
	t.Helper()
	return dialToken(t, s, "", token(t, claims))
}

func dialToken(t testing.TB, s *server, query, tok string) *client {
	t.Helper()
	c, resp, err := dialRaw(s, query, http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial /ws: %v (HTTP %d)", err, status)
	}
	cl := &client{t: t, conn: c, msgs: make(chan message, 100000), closed: make(chan error, 1)}
	go func() {
		for {
			_, data, err := c.ReadMessage()
			if err != nil {
				cl.closed <- err
				close(cl.msgs)
				return
			}
			var m message
			if err := json.Unmarshal(data, &m); err != nil {
				cl.closed <- fmt.Errorf("bad frame %q: %w", data, err)
				close(cl.msgs)
				return
			}
			cl.msgs <- m
		}
	}()
	t.Cleanup(func() { c.Close() })
	return cl
}

func dialRaw(s *server, query string, h http.Header) (*websocket.Conn, *http.Response, error) {
	u := "ws://" + s.addr + "/ws"
	if query != "" {
		u += "?" + query
	}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	return d.Dial(u, h)
}

// next returns the next message other than stats:updated (unless asked).
func (c *client) next(timeout time.Duration, events ...string) message {
	c.t.Helper()
	timeout = patient(timeout)
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-c.msgs:
			if !ok {
				c.t.Fatalf("connection closed while waiting for %v: %v", events, <-c.closed)
			}
			if len(events) == 0 && m.Event == "stats:updated" {
				continue
			}
			if len(events) > 0 && !contains(events, m.Event) {
				continue
			}
			return m
		case <-deadline:
			c.t.Fatalf("no %v event within %v", events, timeout)
		}
	}
}

// expectNone checks that no non-stats event arrives within d.
func (c *client) expectNone(d time.Duration) {
	c.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m, ok := <-c.msgs:
			if !ok {
				return
			}
			if m.Event != "stats:updated" {
				c.t.Fatalf("unexpected event %s %s", m.Event, m.Data)
			}
		case <-deadline:
			return
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func httpGet(t testing.TB, url string, h http.Header) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// metric reads one sample from /metrics ("name{labels}" as printed), 0
// when absent.
func metric(t testing.TB, s *server, series string) float64 {
	t.Helper()
	m, err := harness.Scrape(s.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return m[series]
}

// groupBy returns the table's stats as the stats payload would hold them.
func groupBy(t testing.TB, url string) map[string]any {
	t.Helper()
	conn := connectDB(t, url)
	ctx := context.Background()
	out := map[string]any{}
	var total int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM tickets").Scan(&total); err != nil {
		t.Fatal(err)
	}
	out["total"] = float64(total)
	for _, col := range []string{"status", "priority"} {
		rows, err := conn.Query(ctx, "SELECT "+col+", count(*) FROM tickets GROUP BY 1")
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]any{}
		for rows.Next() {
			var k string
			var n int64
			if err := rows.Scan(&k, &n); err != nil {
				t.Fatal(err)
			}
			m[k] = float64(n)
		}
		out["by"+strings.ToUpper(col[:1])+col[1:]] = m
	}
	return out
}
