// Package integration runs rowcast end to end: the real binary against a
// real, throwaway PostgreSQL, with real WebSocket clients and writes made
// by plain SQL, as a legacy writer would.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

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
	rowcastBin = filepath.Join(dir, "rowcast")
	args := []string{"build", "-o", rowcastBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "../cmd/rowcast")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build rowcast:", err)
		os.Exit(1)
	}
	defer os.RemoveAll(dir)
	pgtest.Main(m)
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

// server is a running "rowcast serve" process.
type server struct {
	t    testing.TB
	cmd  *exec.Cmd
	addr string
	base string
	log  *syncBuffer
	done chan struct{}
	err  error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startServer starts "rowcast serve" and waits until /readyz says ready.
func startServer(t testing.TB, dbURL string, env ...string) *server {
	t.Helper()
	s := &server{t: t, addr: freeAddr(t), log: &syncBuffer{}, done: make(chan struct{})}
	s.base = "http://" + s.addr
	s.cmd = exec.Command(rowcastBin, "serve")
	s.cmd.Env = append(os.Environ(),
		"DATABASE_URL="+dbURL, "ROWCAST_LISTEN="+s.addr, "JWT_SECRET="+testSecret,
		"ROWCAST_STATS_INTERVAL=50ms", "ROWCAST_LOG_LEVEL=debug")
	s.cmd.Env = append(s.cmd.Env, env...)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.stop(syscall.SIGKILL)
		if strings.Contains(s.log.String(), "WARNING: DATA RACE") {
			t.Errorf("data race in rowcast:\n%s", s.log.String())
		}
		if t.Failed() {
			t.Logf("rowcast log:\n%s", s.log.String())
		}
	})
	s.waitReady(30 * time.Second)
	return s
}

func (s *server) waitReady(timeout time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			s.t.Fatalf("rowcast exited: %v\n%s", s.err, s.log.String())
		default:
		}
		resp, err := http.Get(s.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("rowcast not ready after %v\n%s", timeout, s.log.String())
}

// stop signals the process and waits for it to exit.
func (s *server) stop(sig os.Signal) error {
	select {
	case <-s.done:
		return s.err
	default:
	}
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		s.t.Errorf("rowcast did not stop within 15s after %v", sig)
	}
	return s.err
}

func token(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	if claims == nil {
		claims = jwt.MapClaims{"sub": "u1", "email": "agent@example.com", "role": "agent"}
	}
	if _, ok := claims["exp"]; !ok {
		claims["exp"] = time.Now().Add(time.Hour).Unix()
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(testSecret))
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
	c, resp, err := dialRaw(s, query, http.Header{"Authorization": {"Bearer " + token(t, nil)}})
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

// metric reads one sample from /metrics ("name{labels}" as printed).
func metric(t testing.TB, s *server, series string) float64 {
	t.Helper()
	_, body := httpGet(t, s.base+"/metrics", nil)
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, series+" ") {
			var v float64
			fmt.Sscanf(strings.TrimPrefix(line, series+" "), "%g", &v)
			return v
		}
	}
	return 0
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
