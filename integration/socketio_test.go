package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"rowcast/integration/harness"
)

// The tests here drive rowcast's /socket.io/ with the real socket.io-client
// 4 (integration/sio, pinned in its package.json), through sio/client.mjs:
// the script prints one JSON line per connect, event, error or
// disconnect, and takes commands on stdin.

const sioDir = "sio"

var (
	sioInstallOnce sync.Once
	sioInstallErr  error
)

// sioNode returns node, installing integration/sio's node_modules when
// missing. Without node the test is skipped (CI installs it).
func sioNode(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("Socket.IO client test skipped: node not found on PATH (install Node.js >= 20, e.g. apt-get install nodejs npm)")
	}
	sioInstallOnce.Do(func() {
		if _, err := os.Stat(filepath.Join(sioDir, "node_modules", "socket.io-client", "package.json")); err == nil {
			return
		}
		npm, err := exec.LookPath("npm")
		if err != nil {
			sioInstallErr = fmt.Errorf("%s/node_modules is missing and npm is not on PATH: install npm, or run npm ci in integration/sio", sioDir)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = sioDir
		if out, err := cmd.CombinedOutput(); err != nil {
			sioInstallErr = fmt.Errorf("npm ci in integration/%s: %v\n%s", sioDir, err, out)
		}
	})
	if sioInstallErr != nil {
		t.Fatal(sioInstallErr)
	}
	return node
}

// sioLine is one line printed by client.mjs.
type sioLine struct {
	Type      string            `json:"type"`
	ID        string            `json:"id"`
	Recovered bool              `json:"recovered"`
	Transport string            `json:"transport"`
	Name      string            `json:"name"`
	Args      []json.RawMessage `json:"args"`
	Message   string            `json:"message"`
	Reason    string            `json:"reason"`
	Attempt   int               `json:"attempt"`
}

// offset is the last argument socket.io-client keeps for recovery.
func (l sioLine) offset() string {
	if len(l.Args) < 2 {
		return ""
	}
	var s string
	json.Unmarshal(l.Args[len(l.Args)-1], &s)
	return s
}

// message turns an event line into a /ws message, for decodeTicket.
func (l sioLine) message() message {
	m := message{ID: l.offset(), Event: l.Name}
	if len(l.Args) > 0 {
		m.Data = l.Args[0]
	}
	return m
}

type sioClient struct {
	t     *testing.T
	proc  *harness.Process // its Log holds client.mjs's stderr
	stdin io.WriteCloser

	mu      sync.Mutex
	lines   []sioLine // everything printed so far
	exited  bool
	changed chan struct{}
	pos     int // next line for next()
}

// startSIOClient runs client.mjs against the server with socket.io-client
// options.
func startSIOClient(t *testing.T, s *server, options map[string]any) *sioClient {
	t.Helper()
	node := sioNode(t)
	cfg, _ := json.Marshal(map[string]any{"url": s.base, "options": options})
	c := &sioClient{t: t, changed: make(chan struct{}, 1)}
	cmd := exec.Command(node, "client.mjs", string(cfg))
	cmd.Dir = sioDir
	// stdout is a pipe of our own rather than StdoutPipe, whose reads must
	// end before Wait, which harness.Start calls at once: this one is read
	// to EOF whenever the client exits.
	stdout, stdoutW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = stdoutW
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	c.proc, err = harness.Start(cmd, nil)
	stdoutW.Close() // the child has its copy
	if err != nil {
		stdout.Close()
		t.Fatal(err)
	}
	go func() {
		defer stdout.Close()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			var l sioLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				l = sioLine{Type: "garbage", Message: sc.Text()}
			}
			c.mu.Lock()
			c.lines = append(c.lines, l)
			c.mu.Unlock()
			c.notify()
		}
		c.mu.Lock()
		c.exited = true
		c.mu.Unlock()
		c.notify()
	}()
	t.Cleanup(func() {
		// Closing stdin asks client.mjs to disconnect and exit.
		c.stdin.Close()
		c.proc.WaitExit(5 * time.Second)
		if t.Failed() {
			t.Logf("client.mjs stderr:\n%s", c.proc.Log)
		}
	})
	return c
}

func (c *sioClient) send(cmd string) {
	c.t.Helper()
	if _, err := io.WriteString(c.stdin, cmd+"\n"); err != nil {
		c.t.Fatalf("client.mjs: %v", err)
	}
}

func (c *sioClient) notify() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// scan waits for a line of one of the types at or after *pos.
func (c *sioClient) scan(pos *int, timeout time.Duration, types []string) sioLine {
	c.t.Helper()
	timeout = patient(timeout)
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		for *pos < len(c.lines) {
			l := c.lines[*pos]
			*pos++
			if l.Type == "garbage" {
				c.mu.Unlock()
				c.t.Fatalf("client.mjs printed %q", l.Message)
			}
			if contains(types, l.Type) {
				c.mu.Unlock()
				return l
			}
		}
		exited := c.exited
		c.mu.Unlock()
		if exited {
			c.t.Fatalf("client.mjs exited while waiting for %v\n%s", types, c.proc.Log)
		}
		select {
		case <-c.changed:
		case <-deadline:
			c.t.Fatalf("no %v from socket.io-client within %v", types, timeout)
		}
	}
}

// next returns the next line of one of the types, skipping others.
func (c *sioClient) next(timeout time.Duration, types ...string) sioLine {
	c.t.Helper()
	return c.scan(&c.pos, timeout, types)
}

// seen returns the first line of the type printed so far or within
// timeout, whatever next has consumed.
func (c *sioClient) seen(timeout time.Duration, typ string) sioLine {
	c.t.Helper()
	pos := 0
	return c.scan(&pos, timeout, []string{typ})
}

// event returns the next event with one of the names (any event when no
// name is given), failing on connection errors and disconnects.
func (c *sioClient) event(timeout time.Duration, names ...string) sioLine {
	c.t.Helper()
	for {
		l := c.next(timeout, "event", "connect_error", "disconnect")
		if l.Type != "event" {
			c.t.Fatalf("waiting for %v: %s %s%s", names, l.Type, l.Message, l.Reason)
		}
		if len(names) == 0 || contains(names, l.Name) {
			return l
		}
	}
}

// expectNone fails if a line of one of the types comes within d.
func (c *sioClient) expectNone(d time.Duration, types ...string) {
	c.t.Helper()
	time.Sleep(d)
	c.mu.Lock()
	defer c.mu.Unlock()
	for ; c.pos < len(c.lines); c.pos++ {
		if l := c.lines[c.pos]; contains(types, l.Type) {
			c.t.Fatalf("unexpected %s: %+v", l.Type, l)
		}
	}
}

// sameData compares JSON payloads by value (socket.io-client re-encodes
// them).
func sameData(t *testing.T, a, b json.RawMessage) bool {
	t.Helper()
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// TestSocketIOEvents: socket.io-client with its default options (polling,
// then upgrade to WebSocket) and cookie auth, and WebSocket-only with
// auth: {token}, both receive the row events /ws sends, with the same
// payloads and each row event's offset as its last argument.
func TestSocketIOEvents(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		db, s := startMode(t, mode)
		tok := token(t, nil)
		clients := map[string]*sioClient{
			"polling+upgrade": startSIOClient(t, s, map[string]any{"extraHeaders": map[string]string{"Cookie": "token=" + tok}}),
			"websocket":       startSIOClient(t, s, map[string]any{"transports": []string{"websocket"}, "auth": map[string]string{"token": tok}}),
		}
		for name, c := range clients {
			l := c.next(10*time.Second, "connect", "connect_error")
			if l.Type != "connect" || l.ID == "" {
				t.Fatalf("%s: %+v", name, l)
			}
			if name == "websocket" && l.Transport != "websocket" {
				t.Errorf("%s: connected over %s", name, l.Transport)
			}
			st := c.event(5*time.Second, "stats:updated")
			if !strings.Contains(string(st.Args[0]), `"total":0`) || len(st.Args) != 1 {
				t.Errorf("%s: first stats %s", name, st.Args)
			}
		}
		// Default options start with polling, then upgrade (possibly
		// before the namespace's CONNECT reply arrives).
		if l := clients["polling+upgrade"].seen(10*time.Second, "upgrade"); l.Transport != "websocket" {
			t.Errorf("upgraded to %s", l.Transport)
		}
		ws := dial(t, s, "")
		ws.next(5*time.Second, "stats:updated")

		conn := connectDB(t, db)
		ctx := context.Background()
		var id int64
		if err := conn.QueryRow(ctx, `INSERT INTO tickets (title, status, priority, requester_email)
			VALUES ('Printer on fire', 'open', 'urgent', 'ann@example.com') RETURNING id`).Scan(&id); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `UPDATE tickets SET status = 'in_progress' WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `DELETE FROM tickets WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
		var want []message
		for range 3 {
			want = append(want, ws.next(5*time.Second))
		}
		for name, c := range clients {
			for i, w := range want {
				l := c.event(5*time.Second, "ticket:created", "ticket:updated", "ticket:deleted")
				if l.Name != w.Event || l.offset() != w.ID || len(l.Args) != 2 {
					t.Errorf("%s: event %d is %s (offset %q, %d args), want %s (id %s)", name, i, l.Name, l.offset(), len(l.Args), w.Event, w.ID)
					continue
				}
				if !sameData(t, l.Args[0], w.Data) {
					t.Errorf("%s: %s data\n got %s\nwant %s", name, l.Name, l.Args[0], w.Data)
				}
				d := decodeTicket(t, l.message())
				switch l.Name {
				case "ticket:created":
					if d.Ticket["title"] != "Printer on fire" || d.Ticket["status"] != "open" {
						t.Errorf("%s: created %v", name, d.Ticket)
					}
				case "ticket:updated":
					if d.Ticket["status"] != "in_progress" {
						t.Errorf("%s: updated %v", name, d.Ticket)
					}
				case "ticket:deleted":
					if d.TicketID.String() != fmt.Sprint(id) {
						t.Errorf("%s: deleted %s, want %d", name, d.TicketID, id)
					}
				}
			}
			// stats:updated follows the changes.
			st := c.event(5*time.Second, "stats:updated")
			if len(st.Args) != 1 || !strings.Contains(string(st.Args[0]), `"stats"`) {
				t.Errorf("%s: stats %s", name, st.Args)
			}
		}
		if !strings.Contains(s.log.String(), "User connected: agent@example.com (") || !strings.Contains(s.log.String(), "transport=socketio") {
			t.Error("no 'User connected' log line for socketio")
		}
		if n := metric(t, s, `rowcast_clients_connected{transport="socketio"}`); n != 2 {
			t.Errorf("socketio clients = %v, want 2", n)
		}
		if strings.Contains(s.log.String(), tok) {
			t.Error("a token appears in the log")
		}
	})
}

// TestSocketIOAuthRefused: a bad or missing token gives connect_error,
// and socket.io-client does not retry.
func TestSocketIOAuthRefused(t *testing.T) {
	_, s := startMode(t, "notify")
	bad, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "u", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte("other"))
	cases := []struct {
		name    string
		options map[string]any
		message string
	}{
		{"bad token", map[string]any{"auth": map[string]string{"token": bad}}, "invalid token"},
		{"no token", map[string]any{"transports": []string{"websocket"}}, "no token"},
	}
	for _, tc := range cases {
		c := startSIOClient(t, s, tc.options)
		l := c.next(10*time.Second, "connect", "connect_error")
		if l.Type != "connect_error" || !strings.Contains(l.Message, tc.message) {
			t.Errorf("%s: %+v, want connect_error %q", tc.name, l, tc.message)
		}
		c.expectNone(1500*time.Millisecond, "connect", "connect_error", "reconnect_attempt")
	}
	if n := metric(t, s, `rowcast_connections_refused_total{reason="auth",transport="socketio"}`); n != 2 {
		t.Errorf("refused for auth = %v, want 2", n)
	}
}

// TestSocketIORecovery: after the connection drops, socket.io-client
// reconnects with its pid and offset and gets the events it missed, once,
// with socket.recovered === true.
func TestSocketIORecovery(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		db, s := startMode(t, mode)
		c := startSIOClient(t, s, map[string]any{
			"auth":                 map[string]string{"token": token(t, nil)},
			"reconnectionDelay":    1000,
			"randomizationFactor":  0,
			"reconnectionDelayMax": 1000,
		})
		if l := c.next(10*time.Second, "connect", "connect_error"); l.Type != "connect" || l.Recovered {
			t.Fatalf("first connect: %+v", l)
		}
		c.seen(10*time.Second, "upgrade")
		ws := dial(t, s, "")
		conn := connectDB(t, db)
		ctx := context.Background()
		insert := func(title string) {
			if _, err := conn.Exec(ctx, `INSERT INTO tickets (title) VALUES ($1)`, title); err != nil {
				t.Fatal(err)
			}
			ws.next(5*time.Second, "ticket:created")
		}
		insert("before")
		if l := c.event(5*time.Second, "ticket:created"); !strings.Contains(string(l.Args[0]), "before") || l.offset() == "" {
			t.Fatalf("first event %s", l.Args)
		}
		c.send("close-engine")
		if l := c.next(5*time.Second, "disconnect"); l.Reason == "io client disconnect" {
			t.Fatalf("disconnect reason %q", l.Reason)
		}
		insert("missed 1")
		insert("missed 2")
		l := c.next(15*time.Second, "connect", "connect_error")
		if l.Type != "connect" || !l.Recovered {
			t.Fatalf("reconnect: %+v, want recovered", l)
		}
		for _, want := range []string{"missed 1", "missed 2"} {
			l := c.event(5*time.Second, "ticket:created")
			if !strings.Contains(string(l.Args[0]), want) {
				t.Errorf("got %s, want %q", l.Args[0], want)
			}
		}
		insert("after")
		if l := c.event(5*time.Second, "ticket:created", "resync"); !strings.Contains(string(l.Args[0]), "after") {
			t.Errorf("got %s %s, want the ticket \"after\"", l.Name, l.Args)
		}
		if n := metric(t, s, `rowcast_resumes_total{outcome="replayed"}`); n != 1 {
			t.Errorf("replayed resumes = %v, want 1", n)
		}
	})
}

// TestSocketIOTicketUpdateProfile: with ROWCAST_EVENTS=ticket_update a
// socket.io dashboard gets one ticket_update event per change.
func TestSocketIOTicketUpdateProfile(t *testing.T) {
	db, s := startMode(t, "notify", "ROWCAST_EVENTS=ticket_update")
	c := startSIOClient(t, s, map[string]any{"auth": map[string]string{"token": token(t, nil)}})
	if l := c.next(10*time.Second, "connect", "connect_error"); l.Type != "connect" {
		t.Fatalf("connect: %+v", l)
	}
	conn := connectDB(t, db)
	ctx := context.Background()
	var id int64
	if err := conn.QueryRow(ctx, `INSERT INTO tickets (title) VALUES ('profiled') RETURNING id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	conn.Exec(ctx, `UPDATE tickets SET status = 'closed' WHERE id = $1`, id)
	conn.Exec(ctx, `DELETE FROM tickets WHERE id = $1`, id)
	for _, typ := range []string{"new_ticket", "updated_ticket", "deleted_ticket"} {
		l := c.event(5*time.Second, "ticket_update", "ticket:created", "ticket:updated", "ticket:deleted")
		if l.Name != "ticket_update" {
			t.Fatalf("got %s, want ticket_update", l.Name)
		}
		var d struct {
			Type   string         `json:"type"`
			Ticket map[string]any `json:"ticket"`
		}
		json.Unmarshal(l.Args[0], &d)
		if d.Type != typ || fmt.Sprint(d.Ticket["id"]) != fmt.Sprint(id) || l.offset() == "" {
			t.Errorf("got %s (offset %q), want type %s for ticket %d", l.Args[0], l.offset(), typ, id)
		}
	}
}
