package socketio

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"rowcast"
	"rowcast/broadcast"
	"rowcast/metrics"
)

// testObserver counts what the transports report.
type testObserver struct {
	mu        sync.Mutex
	refused   map[string]int
	connected map[string]int
	delivered int
	// sessions sums the Session deltas by engine; moves records them
	// in order ("+polling", "-polling", ...).
	sessions  map[string]int
	moves     []string
	negative  string // the first move that took an engine below 0
	upgrades  map[string]int
	protoErrs map[string]int
	closes    map[string]int
}

func newTestObserver() *testObserver {
	return &testObserver{refused: map[string]int{}, connected: map[string]int{}, sessions: map[string]int{},
		upgrades: map[string]int{}, protoErrs: map[string]int{}, closes: map[string]int{}}
}

func (o *testObserver) ClientConnected(t string) {
	o.mu.Lock()
	o.connected[t]++
	o.mu.Unlock()
}
func (o *testObserver) ClientDisconnected(t string) {
	o.mu.Lock()
	o.connected[t]--
	o.mu.Unlock()
}
func (o *testObserver) ConnectionRefused(t, reason string) {
	o.mu.Lock()
	o.refused[t+"/"+reason]++
	o.mu.Unlock()
}
func (o *testObserver) EventQueued(string, string, int) {}
func (o *testObserver) SlowConsumer(string)             {}
func (o *testObserver) Delivered(_ string, d []time.Duration) {
	o.mu.Lock()
	o.delivered += len(d)
	o.mu.Unlock()
}
func (o *testObserver) ChangeApplied(string, string) {}
func (o *testObserver) StatsRecomputed()             {}
func (o *testObserver) Resume(string)                {}
func (o *testObserver) WindowSize(int)               {}
func (o *testObserver) EventDropped(string)          {}
func (o *testObserver) Session(engine string, delta int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.sessions[engine] += delta
	o.moves = append(o.moves, fmt.Sprintf("%+d %s", delta, engine))
	if o.sessions[engine] < 0 && o.negative == "" {
		o.negative = fmt.Sprint(o.moves)
	}
}
func (o *testObserver) Upgrade(outcome string) {
	o.mu.Lock()
	o.upgrades[outcome]++
	o.mu.Unlock()
}
func (o *testObserver) ProtocolError(kind string) {
	o.mu.Lock()
	o.protoErrs[kind]++
	o.mu.Unlock()
}
func (o *testObserver) Closed(reason string) {
	o.mu.Lock()
	o.closes[reason]++
	o.mu.Unlock()
}

func (o *testObserver) count(m map[string]int, k string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return m[k]
}

type testEnv struct {
	t    testing.TB
	ts   *httptest.Server
	h    *Handler
	gate *broadcast.Gate
	hub  *broadcast.Hub
	obs  *testObserver
	pos  uint64
}

// testConfig is what a test may change: the gate's settings and the
// handler's.
type testConfig struct {
	broadcast.GateConfig
	SocketIO Config
}

const testSecret = "sio-test-secret"

// newTestEnv serves a Server with a real Hub (no database) on httptest.
// Pings are slow unless the test asks otherwise.
func newTestEnv(t testing.TB, mod func(*testConfig)) *testEnv {
	t.Helper()
	obs := newTestObserver()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	hub := broadcast.NewHub(broadcast.HubConfig{Names: broadcast.NamesFor("ticket", broadcast.ProfileColon), StatsColumns: []string{"status"},
		WindowSize: 100, Observer: obs, Logger: log})
	cfg := testConfig{
		GateConfig: broadcast.GateConfig{Hub: hub, LiveUpdates: true, FilterColumns: []string{"status"}, Observer: obs, Logger: log},
		SocketIO:   Config{PingInterval: 5 * time.Second, PingTimeout: 5 * time.Second},
	}
	if mod != nil {
		mod(&cfg)
	}
	gate := broadcast.NewGate(cfg.GateConfig)
	cfg.SocketIO.Gate, cfg.SocketIO.Observer = gate, obs
	h := New(cfg.SocketIO)
	ts := httptest.NewServer(h)
	t.Cleanup(func() {
		hub.Shutdown()
		ts.CloseClientConnections()
		ts.Close()
	})
	return &testEnv{t: t, ts: ts, h: h, gate: gate, hub: hub, obs: obs}
}

func (e *testEnv) url(q string) string { return e.ts.URL + "/socket.io/?" + q }

func (e *testEnv) wsURL(q string) string {
	return "ws" + strings.TrimPrefix(e.ts.URL, "http") + "/socket.io/?" + q
}

// apply sends a row change through the hub: insert, update or delete of
// ticket id with status.
func (e *testEnv) apply(op rowcast.Op, id int, status string) rowcast.EventID {
	e.pos++
	key := rowcast.Row{{Name: "id", Value: json.RawMessage(fmt.Sprint(id))}}
	row := rowcast.Row{{Name: "id", Value: json.RawMessage(fmt.Sprint(id))}, {Name: "status", Value: json.RawMessage(`"` + status + `"`)}}
	c := rowcast.Change{Op: op, Schema: "public", Table: "tickets", Key: key, ID: rowcast.EventID{Pos: e.pos}, CaptureTime: time.Now()}
	switch op {
	case rowcast.OpDelete:
		c.Old = row
	default:
		c.Row = row
	}
	if err := e.hub.Apply(context.Background(), []rowcast.Change{c}); err != nil {
		e.t.Fatal(err)
	}
	return c.ID
}

var sioHTTPClient = &http.Client{Timeout: 10 * time.Second}

func (e *testEnv) do(method, u, body string, h http.Header) (int, http.Header, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := sioHTTPClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

type eioOpenInfo struct {
	SID          string   `json:"sid"`
	Upgrades     []string `json:"upgrades"`
	PingInterval int      `json:"pingInterval"`
	PingTimeout  int      `json:"pingTimeout"`
	MaxPayload   int      `json:"maxPayload"`
}

// handshake opens a polling session.
func (e *testEnv) handshake(h http.Header) (eioOpenInfo, string) {
	e.t.Helper()
	status, _, body := e.do("GET", e.url("EIO=4&transport=polling&t=x"), "", h)
	if status != 200 || !strings.HasPrefix(body, "0") {
		e.t.Fatalf("handshake: %d %q", status, body)
	}
	var o eioOpenInfo
	if err := json.Unmarshal([]byte(body[1:]), &o); err != nil {
		e.t.Fatalf("open packet %q: %v", body, err)
	}
	return o, body
}

func (e *testEnv) poll(sid string) (int, string) {
	e.t.Helper()
	status, _, body := e.do("GET", e.url("EIO=4&transport=polling&sid="+sid), "", nil)
	return status, body
}

func (e *testEnv) post(sid, body string) (int, string) {
	e.t.Helper()
	status, _, b := e.do("POST", e.url("EIO=4&transport=polling&sid="+sid), body, http.Header{"Content-Type": {"text/plain;charset=UTF-8"}})
	return status, b
}

// pollPackets polls until it gets a packet other than ping (answering
// pings), and returns the payload's packets.
func (e *testEnv) pollPackets(sid string) []string {
	e.t.Helper()
	for {
		status, body := e.poll(sid)
		if status != 200 {
			e.t.Fatalf("poll: %d %s", status, body)
		}
		var out []string
		for _, p := range strings.Split(body, "\x1e") {
			if p == "2" {
				e.post(sid, "3")
				continue
			}
			out = append(out, p)
		}
		if len(out) > 0 {
			return out
		}
	}
}

// testConn is a raw Engine.IO WebSocket client.
type testConn struct {
	t testing.TB
	c *websocket.Conn
	// pong answers pings automatically.
	pong bool
}

func (e *testEnv) dialWS(q string, h http.Header) (*testConn, *http.Response, error) {
	c, resp, err := websocket.DefaultDialer.Dial(e.wsURL(q), h)
	if err != nil {
		return nil, resp, err
	}
	e.t.Cleanup(func() { c.Close() })
	return &testConn{t: e.t, c: c, pong: true}, resp, nil
}

func (c *testConn) send(s string) {
	c.t.Helper()
	if err := c.c.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		c.t.Fatalf("write %q: %v", s, err)
	}
}

// read returns the next packet, or "" and the error once closed.
func (c *testConn) read(timeout time.Duration) (string, error) {
	for {
		c.c.SetReadDeadline(time.Now().Add(timeout))
		_, b, err := c.c.ReadMessage()
		if err != nil {
			return "", err
		}
		if c.pong && string(b) == "2" {
			c.send("3")
			continue
		}
		return string(b), nil
	}
}

func (c *testConn) next() string {
	c.t.Helper()
	s, err := c.read(5 * time.Second)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return s
}

// expectClosed checks that the server closes the connection within d.
func (c *testConn) expectClosed(d time.Duration) error {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		s, err := c.read(time.Until(deadline))
		if err != nil {
			if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
				c.t.Fatalf("connection still open after %v", d)
			}
			return err
		}
		_ = s
	}
}

// expectUpgradeClosed opens a WebSocket with the sid of a session that is
// upgraded or upgrading: the handshake must succeed, and the server must
// close the connection without sending a packet (the socket.io-protocol
// test-suite's "should ignore WebSocket connection with same sid after
// upgrade").
func (e *testEnv) expectUpgradeClosed(sid string) {
	e.t.Helper()
	c, resp, err := e.dialWS("EIO=4&transport=websocket&sid="+sid, nil)
	if err != nil {
		e.t.Fatalf("second WebSocket for %s: %v %v", sid, err, resp)
	}
	c.pong = false
	p, err := c.read(10 * time.Second)
	if err == nil {
		e.t.Fatalf("second WebSocket got packet %q, want a close", p)
	}
	if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		e.t.Fatalf("second WebSocket: %v, want a normal close", err)
	}
}

// openWS opens a WebSocket-only session and joins the main namespace.
func (e *testEnv) openWS(connect string, h http.Header) (*testConn, string) {
	e.t.Helper()
	c, resp, err := e.dialWS("EIO=4&transport=websocket", h)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		e.t.Fatalf("dial: %v (HTTP %d)", err, status)
	}
	open := c.next()
	if !strings.HasPrefix(open, "0{") {
		e.t.Fatalf("open packet %q", open)
	}
	c.send(connect)
	return c, c.next()
}

func connectReplyOf(t *testing.T, p string) (sid, pid string) {
	t.Helper()
	if !strings.HasPrefix(p, "40{") {
		t.Fatalf("want a CONNECT reply, got %q", p)
	}
	var v struct{ SID, PID string }
	if err := json.Unmarshal([]byte(p[2:]), &v); err != nil || v.SID == "" || v.PID == "" {
		t.Fatalf("CONNECT reply %q: %v", p, err)
	}
	return v.SID, v.PID
}

// eventOf decodes 42[name,data(,offset)].
func eventOf(t *testing.T, p string) (name string, data map[string]any, offset string) {
	t.Helper()
	if !strings.HasPrefix(p, "42[") {
		t.Fatalf("want an event, got %q", p)
	}
	var args []json.RawMessage
	if err := json.Unmarshal([]byte(p[2:]), &args); err != nil || len(args) < 2 {
		t.Fatalf("event %q: %v", p, err)
	}
	json.Unmarshal(args[0], &name)
	json.Unmarshal(args[1], &data)
	if len(args) > 2 {
		json.Unmarshal(args[2], &offset)
	}
	return name, data, offset
}

func TestHandshake(t *testing.T) {
	env := newTestEnv(t, func(c *testConfig) {
		c.SocketIO = Config{PingInterval: 25 * time.Second, PingTimeout: 20 * time.Second, MaxPayload: 1000000}
	})
	status, h, body := env.do("GET", env.url("EIO=4&transport=polling&t=N8hyd6w"), "", nil)
	if status != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Fatalf("handshake: %d %s", status, h.Get("Content-Type"))
	}
	var o eioOpenInfo
	json.Unmarshal([]byte(body[1:]), &o)
	want := fmt.Sprintf(`0{"sid":%q,"upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`, o.SID)
	if body != want || len(o.SID) < 16 {
		t.Errorf("open packet\n got %s\nwant %s", body, want)
	}
	c, _, err := env.dialWS("EIO=4&transport=websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	open := c.next()
	json.Unmarshal([]byte(open[1:]), &o)
	want = fmt.Sprintf(`0{"sid":%q,"upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`, o.SID)
	if open != want {
		t.Errorf("websocket open packet\n got %s\nwant %s", open, want)
	}
}

func TestBadRequests(t *testing.T) {
	env := newTestEnv(t, nil)
	o, _ := env.handshake(nil)
	cases := []struct {
		name, method, query string
		code                int
	}{
		{"no EIO", "GET", "transport=polling", 5},
		{"EIO=3", "GET", "EIO=3&transport=polling", 5},
		{"EIO=abc", "GET", "EIO=abc&transport=polling", 5},
		{"no transport", "GET", "EIO=4", 0},
		{"unknown transport", "GET", "EIO=4&transport=abc", 0},
		{"POST handshake", "POST", "EIO=4&transport=polling", 2},
		{"PUT handshake", "PUT", "EIO=4&transport=polling", 2},
		{"unknown sid (GET)", "GET", "EIO=4&transport=polling&sid=nope", 1},
		{"unknown sid (POST)", "POST", "EIO=4&transport=polling&sid=nope", 1},
		{"PUT on a session", "PUT", "EIO=4&transport=polling&sid=" + o.SID, 3},
		{"websocket without upgrade", "GET", "EIO=4&transport=websocket", 3},
		{"JSONP", "GET", "EIO=4&transport=polling&j=0", 3},
	}
	for _, tc := range cases {
		status, h, body := env.do(tc.method, env.url(tc.query), "", nil)
		var v struct {
			Code    *int   `json:"code"`
			Message string `json:"message"`
		}
		if status != 400 || h.Get("Content-Type") != "application/json" || json.Unmarshal([]byte(body), &v) != nil ||
			v.Code == nil || *v.Code != tc.code || v.Message == "" {
			t.Errorf("%s: %d %s %s, want 400 with code %d", tc.name, status, h.Get("Content-Type"), body, tc.code)
		}
	}
	// A WebSocket with an unknown sid is refused before the upgrade.
	if _, resp, err := env.dialWS("EIO=4&transport=websocket&sid=nope", nil); err == nil || resp == nil || resp.StatusCode != 400 {
		t.Errorf("websocket with an unknown sid: %v %v", err, resp)
	}
	// A polling request for a WebSocket session is refused.
	c, _, err := env.dialWS("EIO=4&transport=websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	var wo eioOpenInfo
	json.Unmarshal([]byte(c.next()[1:]), &wo)
	if status, _ := env.poll(wo.SID); status != 400 {
		t.Errorf("poll of a websocket session: %d", status)
	}
}

func TestPollingRoundTrip(t *testing.T) {
	env := newTestEnv(t, nil)
	o, _ := env.handshake(nil)
	if status, body := env.post(o.SID, "40"); status != 200 || body != "ok" {
		t.Fatalf("POST 40: %d %q", status, body)
	}
	p := env.pollPackets(o.SID)
	sid, _ := connectReplyOf(t, p[0])
	if sid == o.SID {
		t.Error("the Socket.IO sid must differ from the Engine.IO sid")
	}
	waitFor(t, func() bool { return env.hub.Clients() == 1 })
	id := env.apply(rowcast.OpInsert, 7, "open")
	env.apply(rowcast.OpUpdate, 7, "closed")
	env.apply(rowcast.OpDelete, 7, "closed")
	var got []string
	for len(got) < 3 {
		got = append(got, env.pollPackets(o.SID)...)
	}
	name, data, offset := eventOf(t, got[0])
	if name != "ticket:created" || offset != id.String() {
		t.Errorf("first event %q", got[0])
	}
	if ticket, _ := data["ticket"].(map[string]any); ticket["status"] != "open" || data["timestamp"] == nil {
		t.Errorf("created data %v", data)
	}
	// The payload is exactly /ws's data.
	var ev *broadcast.Event
	ev, _ = env.hub.Names().Translate(&rowcast.Change{Op: rowcast.OpDelete, Key: rowcast.Row{{Name: "id", Value: json.RawMessage("7")}}})
	if !strings.HasPrefix(got[2], `42["ticket:deleted",{"ticketId":7,"timestamp":"`) {
		t.Errorf("deleted %q (want data like %s)", got[2], ev.Data)
	}
	if name, _, _ := eventOf(t, got[1]); name != "ticket:updated" {
		t.Errorf("second event %q", got[1])
	}
	// Several packets in one POST; a client event is ignored; DISCONNECT
	// leaves the namespace but keeps the session.
	if status, _ := env.post(o.SID, "3\x1e42[\"hello\",1]\x1e41"); status != 200 {
		t.Fatalf("POST: %d", status)
	}
	waitFor(t, func() bool { return env.hub.Clients() == 0 })
	if status, body := env.post(o.SID, "40"); status != 200 {
		t.Fatalf("second CONNECT: %d %s", status, body)
	}
	connectReplyOf(t, env.pollPackets(o.SID)[0])
	// Closing from the client: a pending GET gets noop, then the sid is gone.
	done := make(chan string)
	go func() {
		_, body := env.poll(o.SID)
		done <- body
	}()
	time.Sleep(100 * time.Millisecond)
	env.post(o.SID, "1")
	if body := <-done; body != "6" {
		t.Errorf("pending GET after close: %q, want 6", body)
	}
	if status, _ := env.poll(o.SID); status != 400 {
		t.Errorf("poll after close: %d", status)
	}
	waitFor(t, func() bool { return env.gate.Connections() == 0 })
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestUpgrade(t *testing.T) {
	env := newTestEnv(t, nil)
	o, _ := env.handshake(nil)
	env.post(o.SID, "40")
	connectReplyOf(t, env.pollPackets(o.SID)[0])
	waitFor(t, func() bool { return env.hub.Clients() == 1 })

	// A GET is pending when the probe comes.
	pending := make(chan string, 1)
	go func() {
		_, body := env.poll(o.SID)
		pending <- body
	}()
	time.Sleep(50 * time.Millisecond)
	ws, resp, err := env.dialWS("EIO=4&transport=websocket&sid="+o.SID, nil)
	if err != nil {
		t.Fatalf("upgrade: %v %v", err, resp)
	}
	// A second WebSocket for the same session completes its handshake and
	// is closed at once, as the reference server does.
	env.expectUpgradeClosed(o.SID)
	ws.send("2probe")
	if p := ws.next(); p != "3probe" {
		t.Fatalf("probe answer %q", p)
	}
	select {
	case body := <-pending:
		if body != "6" {
			t.Errorf("pending GET during upgrade: %q, want noop", body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pending GET not answered during the upgrade")
	}
	// An event while the client has paused polling goes out on the
	// WebSocket once the upgrade completes.
	id := env.apply(rowcast.OpInsert, 1, "open")
	time.Sleep(50 * time.Millisecond)
	ws.send("5")
	name, _, offset := eventOf(t, ws.next())
	if name != "ticket:created" || offset != id.String() {
		t.Errorf("first event after upgrade: %s %s", name, offset)
	}
	env.apply(rowcast.OpInsert, 2, "open")
	if name, _, _ := eventOf(t, ws.next()); name != "ticket:created" {
		t.Errorf("event over websocket: %s", name)
	}
	// Polling is over for this session, and so are further upgrades.
	if status, _ := env.poll(o.SID); status != 400 {
		t.Errorf("poll after upgrade: %d", status)
	}
	if status, _ := env.post(o.SID, "3"); status != 400 {
		t.Errorf("POST after upgrade: %d", status)
	}
	env.expectUpgradeClosed(o.SID)
	// The session still works.
	ws.send("41")
	waitFor(t, func() bool { return env.hub.Clients() == 0 })
	ws.send("40")
	connectReplyOf(t, ws.next())
}

func TestPingTimeout(t *testing.T) {
	env := newTestEnv(t, func(c *testConfig) {
		c.SocketIO = Config{PingInterval: 150 * time.Millisecond, PingTimeout: 100 * time.Millisecond}
	})
	// Answered pings keep the session.
	c, reply := env.openWS("40", nil)
	connectReplyOf(t, reply)
	c.pong = false
	for i := 0; i < 3; i++ {
		if p := c.next(); p != "2" {
			t.Fatalf("want ping, got %q", p)
		}
		c.send("3")
	}
	// Unanswered, the session closes.
	start := time.Now()
	if p := c.next(); p != "2" {
		t.Fatalf("want ping, got %q", p)
	}
	c.expectClosed(2 * time.Second)
	if d := time.Since(start); d < 80*time.Millisecond {
		t.Errorf("closed %v after the ping, before pingTimeout", d)
	}
	waitFor(t, func() bool { return env.hub.Clients() == 0 && env.gate.Connections() == 0 })

	// A polling session that nobody polls expires.
	o, _ := env.handshake(nil)
	time.Sleep(400 * time.Millisecond)
	if status, body := env.poll(o.SID); status != 400 {
		t.Errorf("poll after pingInterval+pingTimeout: %d %q", status, body)
	}
	// Polled and answered, it lives.
	o, _ = env.handshake(nil)
	for i := 0; i < 3; i++ {
		if status, body := env.poll(o.SID); status != 200 || body != "2" {
			t.Fatalf("poll %d: %d %q", i, status, body)
		}
		if status, _ := env.post(o.SID, "3"); status != 200 {
			t.Fatalf("pong: %d", status)
		}
	}
}

func TestConnectTimeout(t *testing.T) {
	env := newTestEnv(t, func(c *testConfig) {
		c.SocketIO.ConnectTimeout = 200 * time.Millisecond
	})
	c, _, err := env.dialWS("EIO=4&transport=websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.next() // open
	c.expectClosed(3 * time.Second)
}

func TestGarbageCloses(t *testing.T) {
	env := newTestEnv(t, nil)
	for _, bad := range []string{
		"abc",    // unknown Engine.IO packet type
		"4",      // empty Socket.IO packet
		"4abc",   // unknown Socket.IO packet type
		"47",     // unknown Socket.IO packet type
		`42["x"`, // unparseable JSON
		`451-["x",{"_placeholder":true,"num":0}]`, // binary attachments
		`43[]`,                        // ack
		`40null`,                      // CONNECT payload not an object
		`40{}` + "\x00" + `41{"a":1}`, // garbage after the payload
		"2",                           // ping from the client
		`44{"message":"x"}`,           // CONNECT_ERROR from the client
	} {
		c, reply := env.openWS("40", nil)
		connectReplyOf(t, reply)
		c.send(bad)
		c.expectClosed(2 * time.Second)
	}
	// Before CONNECT, anything but CONNECT closes.
	for _, bad := range []string{`42["x"]`, "41"} {
		c, _, _ := env.dialWS("EIO=4&transport=websocket", nil)
		c.next()
		c.send(bad)
		c.expectClosed(2 * time.Second)
	}
	// A second CONNECT to the joined namespace closes.
	c, reply := env.openWS("40", nil)
	connectReplyOf(t, reply)
	c.send("40")
	c.expectClosed(2 * time.Second)
	// Binary frames close.
	c, reply = env.openWS("40", nil)
	connectReplyOf(t, reply)
	c.c.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3})
	c.expectClosed(2 * time.Second)
	// Polling: 400, then the session is gone.
	o, _ := env.handshake(nil)
	if status, _ := env.post(o.SID, "abc"); status != 400 {
		t.Errorf("POST garbage: %d", status)
	}
	if status, _ := env.poll(o.SID); status != 400 {
		t.Errorf("poll after garbage: %d", status)
	}
	o, _ = env.handshake(nil)
	status, _, _ := env.do("POST", env.url("EIO=4&transport=polling&sid="+o.SID), "\x01\x02", http.Header{"Content-Type": {"application/octet-stream"}})
	if status != 400 {
		t.Errorf("POST binary: %d", status)
	}
	waitFor(t, func() bool { return env.gate.Connections() == 0 && env.hub.Clients() == 0 })
}

func TestUnknownNamespace(t *testing.T) {
	env := newTestEnv(t, nil)
	c, reply := env.openWS("40/admin,", nil)
	if reply != `44/admin,{"message":"Invalid namespace"}` {
		t.Errorf("unknown namespace: %q", reply)
	}
	// The session stays; the main namespace works.
	c.send("40")
	connectReplyOf(t, c.next())
	c.send(`40/other,{"token":"x"}`)
	if p := c.next(); p != `44/other,{"message":"Invalid namespace"}` {
		t.Errorf("unknown namespace while connected: %q", p)
	}
}

func TestMaxPayload(t *testing.T) {
	env := newTestEnv(t, func(c *testConfig) { c.SocketIO.MaxPayload = 1000 })
	o, body := env.handshake(nil)
	if !strings.Contains(body, `"maxPayload":1000}`) {
		t.Errorf("open packet %s", body)
	}
	if status, _ := env.post(o.SID, "4"+strings.Repeat("x", 1000)); status != 413 {
		t.Errorf("POST over maxPayload: %d, want 413", status)
	}
	if status, _ := env.poll(o.SID); status != 400 {
		t.Errorf("poll after 413: %d", status)
	}
	// At the limit is fine.
	o, _ = env.handshake(nil)
	if status, _ := env.post(o.SID, `42["x","`+strings.Repeat("y", 1000-10)+`"]`); status != 400 {
		// EVENT before CONNECT: a protocol error, but not 413.
		t.Errorf("POST at maxPayload: %d, want 400 for EVENT before CONNECT", status)
	}
	c, reply := env.openWS("40", nil)
	connectReplyOf(t, reply)
	c.send(`42["x","` + strings.Repeat("y", 1000) + `"]`)
	c.expectClosed(2 * time.Second)
}

func TestConcurrentPolls(t *testing.T) {
	env := newTestEnv(t, nil)
	o, _ := env.handshake(nil)
	first := make(chan string, 1)
	go func() {
		_, body := env.poll(o.SID)
		first <- body
	}()
	time.Sleep(100 * time.Millisecond)
	if status, _ := env.poll(o.SID); status != 400 {
		t.Errorf("second GET: %d, want 400", status)
	}
	if body := <-first; body != "1" {
		t.Errorf("first GET: %q, want the close packet", body)
	}
	if status, _ := env.poll(o.SID); status != 400 {
		t.Errorf("GET after: %d", status)
	}
}

func TestCancelledPollCloses(t *testing.T) {
	env := newTestEnv(t, nil)
	o, _ := env.handshake(nil)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", env.url("EIO=4&transport=polling&sid="+o.SID), nil)
	go func() {
		time.Sleep(100 * time.Millisecond)
		cancel()
	}()
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
	waitFor(t, func() bool { return env.gate.Connections() == 0 })
	if status, _ := env.poll(o.SID); status != 400 {
		t.Errorf("poll after a cancelled poll: %d", status)
	}
}

func TestCORS(t *testing.T) {
	env := newTestEnv(t, func(c *testConfig) {
		c.GateConfig.Origins = []string{"https://desk.example.com"}
		c.GateConfig.CORSCredentials = true
	})
	h := http.Header{"Origin": {"https://desk.example.com"}}
	status, rh, _ := env.do("GET", env.url("EIO=4&transport=polling"), "", h)
	if status != 200 || rh.Get("Access-Control-Allow-Origin") != "https://desk.example.com" ||
		rh.Get("Access-Control-Allow-Credentials") != "true" {
		t.Errorf("listed origin: %d %v", status, rh)
	}
	pre := http.Header{"Origin": {"https://desk.example.com"}, "Access-Control-Request-Method": {"POST"},
		"Access-Control-Request-Headers": {"content-type"}}
	status, rh, _ = env.do("OPTIONS", env.url("EIO=4&transport=polling"), "", pre)
	if status != 204 || rh.Get("Access-Control-Allow-Origin") != "https://desk.example.com" ||
		!strings.Contains(rh.Get("Access-Control-Allow-Methods"), "POST") || rh.Get("Access-Control-Allow-Headers") != "content-type" {
		t.Errorf("preflight: %d %v", status, rh)
	}
	evil := http.Header{"Origin": {"https://evil.example.com"}}
	status, rh, _ = env.do("GET", env.url("EIO=4&transport=polling"), "", evil)
	if status != 403 || rh.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("other origin: %d %v", status, rh)
	}
	status, rh, _ = env.do("OPTIONS", env.url("EIO=4&transport=polling"), "", evil)
	if status != 403 || rh.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("other origin preflight: %d %v", status, rh)
	}
	if _, resp, err := env.dialWS("EIO=4&transport=websocket", evil); err == nil || resp.StatusCode != 403 {
		t.Errorf("websocket from another origin: %v", err)
	}
	if n := env.obs.count(env.obs.refused, "socketio/origin"); n != 2 {
		t.Errorf("refused for origin: %d, want 2", n)
	}
	// Without CORS_CREDENTIALS the origin is echoed without credentials.
	env2 := newTestEnv(t, func(c *testConfig) { c.GateConfig.Origins = []string{"https://desk.example.com"} })
	_, rh, _ = env2.do("GET", env2.url("EIO=4&transport=polling"), "", h)
	if rh.Get("Access-Control-Allow-Origin") != "https://desk.example.com" || rh.Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("no credentials: %v", rh)
	}
}

func TestAuth(t *testing.T) {
	auth := broadcast.NewAuth(testSecret, "token")
	env := newTestEnv(t, func(c *testConfig) { c.GateConfig.Auth = auth })
	good, _ := auth.Sign(map[string]any{"sub": "u1", "email": "a@example.com", "exp": time.Now().Add(time.Hour).Unix()})
	other, _ := broadcast.NewAuth("other", "token").Sign(map[string]any{"sub": "u1"})

	// No token anywhere: CONNECT_ERROR, the session stays.
	c, reply := env.openWS("40", nil)
	if !strings.HasPrefix(reply, `44{"message":"no token`) {
		t.Errorf("no token: %q", reply)
	}
	// The token in the auth payload.
	c.send(`40{"token":"` + good + `"}`)
	connectReplyOf(t, c.next())
	// A CONNECT far larger than a WebSocket's read buffer, in one frame.
	big, _ := auth.Sign(map[string]any{"sub": "u1", "pad": strings.Repeat("x", 4000), "exp": time.Now().Add(time.Hour).Unix()})
	_, reply = env.openWS(`40{"token":"`+big+`"}`, nil)
	connectReplyOf(t, reply)
	// A bad token.
	_, reply = env.openWS(`40{"token":"`+other+`"}`, nil)
	if !strings.HasPrefix(reply, `44{"message":"invalid token`) {
		t.Errorf("bad token: %q", reply)
	}
	// Cookie, header and access_token on the handshake request win over
	// the payload.
	_, reply = env.openWS(`40{"token":"`+other+`"}`, http.Header{"Cookie": {"token=" + good}})
	connectReplyOf(t, reply)
	_, reply = env.openWS("40", http.Header{"Authorization": {"Bearer " + good}})
	connectReplyOf(t, reply)
	o, _ := env.handshake(http.Header{"Cookie": {"token=" + good}})
	env.post(o.SID, "40")
	connectReplyOf(t, env.pollPackets(o.SID)[0])
	if n := env.obs.count(env.obs.refused, "socketio/auth"); n != 2 {
		t.Errorf("refused for auth: %d, want 2", n)
	}
}

func TestFilter(t *testing.T) {
	env := newTestEnv(t, nil)
	_, reply := env.openWS(`40{"filter":{"priority":"high"}}`, nil)
	if !strings.HasPrefix(reply, `44{"message":"unknown filter column \"priority\"`) {
		t.Errorf("bad filter: %q", reply)
	}
	c, reply := env.openWS(`40{"filter":{"status":["open"]}}`, nil)
	connectReplyOf(t, reply)
	waitFor(t, func() bool { return env.hub.Clients() == 1 })
	env.apply(rowcast.OpInsert, 1, "closed")
	env.apply(rowcast.OpInsert, 2, "open")
	_, data, _ := eventOf(t, c.next())
	if ticket, _ := data["ticket"].(map[string]any); ticket["id"] != 2.0 {
		t.Errorf("filtered event %v", data)
	}
	// subscribe changes the filter.
	c.send(`42["subscribe",{"filter":{"status":"closed"}}]`)
	if name, data, _ := eventOf(t, c.next()); name != "subscribed" || !reflect.DeepEqual(data["filter"], map[string]any{"status": []any{"closed"}}) {
		t.Errorf("subscribe reply %s %v", name, data)
	}
	env.apply(rowcast.OpInsert, 3, "open")
	env.apply(rowcast.OpInsert, 4, "closed")
	if _, data, _ := eventOf(t, c.next()); data["ticket"].(map[string]any)["id"] != 4.0 {
		t.Errorf("after subscribe: %v", data)
	}
	c.send(`42["subscribe",{"filter":{"nope":"x"}}]`)
	if name, _, _ := eventOf(t, c.next()); name != "error" {
		t.Errorf("bad subscribe: %s", name)
	}
}

func TestRecovery(t *testing.T) {
	env := newTestEnv(t, nil)
	c, reply := env.openWS("40", nil)
	_, pid := connectReplyOf(t, reply)
	waitFor(t, func() bool { return env.hub.Clients() == 1 })
	env.apply(rowcast.OpInsert, 1, "open")
	_, _, offset := eventOf(t, c.next())
	c.c.Close()
	waitFor(t, func() bool { return env.hub.Clients() == 0 })
	missed := env.apply(rowcast.OpInsert, 2, "open")

	// The client comes back with its pid and offset: same pid, the missed
	// event follows.
	c, reply = env.openWS(`40{"pid":"`+pid+`","offset":"`+offset+`"}`, nil)
	if _, got := connectReplyOf(t, reply); got != pid {
		t.Errorf("recovered pid %q, want %q", got, pid)
	}
	if _, _, off := eventOf(t, c.next()); off != missed.String() {
		t.Errorf("replayed %s, want %s", off, missed)
	}
	// An offset the window no longer covers: a new pid and resync.
	_, reply = env.openWS(`40{"pid":"`+pid+`","offset":"e1-0000000000000001"}`, nil)
	if _, got := connectReplyOf(t, reply); got == pid {
		t.Error("kept the pid although recovery failed")
	}
	c2, reply := env.openWS(`40{"pid":"`+pid+`","offset":"e1-0000000000000001"}`, nil)
	connectReplyOf(t, reply)
	if name, _, off := eventOf(t, c2.next()); name != "resync" || off != "" {
		t.Errorf("want resync, got %s %s", name, off)
	}
	// No offset (nothing received yet) or a malformed one: a fresh start.
	for _, payload := range []string{`{"pid":"` + pid + `"}`, `{"pid":"` + pid + `","offset":"zzz"}`, `{"pid":"a b","offset":"` + offset + `"}`} {
		_, reply = env.openWS("40"+payload, nil)
		if _, got := connectReplyOf(t, reply); got == pid {
			t.Errorf("%s: kept the pid", payload)
		}
	}
}

func TestLiveUpdatesDisabledAndLimit(t *testing.T) {
	env := newTestEnv(t, func(c *testConfig) { c.GateConfig.LiveUpdates = false })
	if status, _, body := env.do("GET", env.url("EIO=4&transport=polling"), "", nil); status != 503 || !strings.Contains(body, "live updates are disabled") {
		t.Errorf("disabled: %d %s", status, body)
	}
	// The limit counts namespace sessions, not handshakes: a handshake
	// takes no connection slot, the CONNECT does once its token is checked.
	env = newTestEnv(t, func(c *testConfig) { c.GateConfig.MaxConnections = 1 })
	first, _ := env.handshake(nil)
	env.post(first.SID, "40")
	connectReplyOf(t, env.pollPackets(first.SID)[0])
	second, _ := env.handshake(nil)
	env.post(second.SID, "40")
	if p := env.pollPackets(second.SID)[0]; !strings.HasPrefix(p, "44") || !strings.Contains(p, "too many connections") {
		t.Errorf("CONNECT over the limit: %q, want CONNECT_ERROR", p)
	}
	if n := env.obs.count(env.obs.refused, "socketio/limit"); n != 1 {
		t.Errorf("refused for limit: %d", n)
	}
	env.post(first.SID, "1")
	waitFor(t, func() bool { return env.gate.Connections() == 0 })
	env.post(second.SID, "40")
	connectReplyOf(t, env.pollPackets(second.SID)[0])
}

func TestShutdown(t *testing.T) {
	env := newTestEnv(t, nil)
	c, reply := env.openWS("40", nil)
	connectReplyOf(t, reply)
	o, _ := env.handshake(nil)
	env.post(o.SID, "40")
	connectReplyOf(t, env.pollPackets(o.SID)[0])
	waitFor(t, func() bool { return env.hub.Clients() == 2 })
	pending := make(chan string, 1)
	go func() {
		_, body := env.poll(o.SID)
		pending <- body
	}()
	time.Sleep(50 * time.Millisecond)
	env.hub.Shutdown()
	err := c.expectClosed(2 * time.Second)
	if !websocket.IsCloseError(err, broadcast.CloseGoingAway) {
		t.Errorf("websocket closed with %v, want 1001", err)
	}
	if body := <-pending; body != "1" {
		t.Errorf("pending GET at shutdown: %q", body)
	}
	done := make(chan struct{})
	go func() { env.gate.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Gate.Wait did not return")
	}
	if n := env.obs.count(env.obs.connected, "socketio"); n != 0 {
		t.Errorf("clients gauge %d after shutdown", n)
	}
	env.expectSessionsClosed(map[string]int{"shutdown": 2})
}

func TestDecodePacket(t *testing.T) {
	ok := []struct {
		in   string
		want packet
	}{
		{"0", packet{Type: 0, NSP: "/"}},
		{`0{"token":"123"}`, packet{Type: 0, NSP: "/", Data: json.RawMessage(`{"token":"123"}`)}},
		{"0/admin,", packet{Type: 0, NSP: "/admin"}},
		{"0/admin", packet{Type: 0, NSP: "/admin"}},
		{`0/admin,{"a":1}`, packet{Type: 0, NSP: "/admin", Data: json.RawMessage(`{"a":1}`)}},
		{"1", packet{Type: 1, NSP: "/"}},
		{"1/admin,", packet{Type: 1, NSP: "/admin"}},
		{`2["foo"]`, packet{Type: 2, NSP: "/", Data: json.RawMessage(`["foo"]`)}},
		{`212["foo"]`, packet{Type: 2, NSP: "/", ID: 12, HasID: true, Data: json.RawMessage(`["foo"]`)}},
		{`2/admin,13[1]`, packet{Type: 2, NSP: "/admin", ID: 13, HasID: true, Data: json.RawMessage(`[1]`)}},
		{`3/admin,13["bar"]`, packet{Type: 3, NSP: "/admin", ID: 13, HasID: true, Data: json.RawMessage(`["bar"]`)}},
		{`4{"message":"x"}`, packet{Type: 4, NSP: "/", Data: json.RawMessage(`{"message":"x"}`)}},
	}
	for _, tc := range ok {
		got, err := decodePacket([]byte(tc.in))
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("decode %q = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "7", "a", "0[1]", "0null", `1{}`, `2{}`, `2[]`, `2["connect"]`, `2[{}]`, `2["x"`, `3{}`,
		`51-["x",{"_placeholder":true,"num":0}]`, `61-1[{"_placeholder":true,"num":0}]`, `4[]`} {
		if p, err := decodePacket([]byte(bad)); err == nil {
			t.Errorf("decode %q = %+v, want an error", bad, p)
		}
	}
}

func TestEncode(t *testing.T) {
	ev := &broadcast.Event{Name: "ticket:created", Data: json.RawMessage(`{"ticket":{"id":1}}`), HasID: true, ID: rowcast.EventID{Pos: 0x1A2B3C4}}
	if got := string(eventPacket.Of(ev)); got != `42["ticket:created",{"ticket":{"id":1}},"0000000001A2B3C4-00000000"]` {
		t.Errorf("event with an id: %s", got)
	}
	stats := &broadcast.Event{Name: "stats:updated", Data: json.RawMessage(`{"stats":{}}`)}
	if got := string(eventPacket.Of(stats)); got != `42["stats:updated",{"stats":{}}]` {
		t.Errorf("event without an id: %s", got)
	}
	if p := eventPacket.Of(&broadcast.Event{Name: "disconnect", Data: json.RawMessage(`1`)}); p != nil {
		t.Errorf("reserved name encoded: %s", p)
	}
	if got := string(connectReply("a", "b")); got != `40{"sid":"a","pid":"b"}` {
		t.Errorf("connect reply %s", got)
	}
	if got := string(connectErrorPacket("/", `say "no"`)); got != `44{"message":"say \"no\""}` {
		t.Errorf("connect error %s", got)
	}
	if got := string(eioEncodePayload([][]byte{[]byte("4hello"), []byte("2"), []byte("4world")})); got != "4hello\x1e2\x1e4world" {
		t.Errorf("payload %q", got)
	}
	if got := eioDecodePayload([]byte("4test1\x1e4test2")); len(got) != 2 || string(got[1]) != "4test2" {
		t.Errorf("decode payload %q", got)
	}
}

func TestProbeAbandoned(t *testing.T) {
	env := newTestEnv(t, nil)
	o, _ := env.handshake(nil)
	env.post(o.SID, "40")
	connectReplyOf(t, env.pollPackets(o.SID)[0])
	for _, how := range []string{"close", "garbage"} {
		ws, _, err := env.dialWS("EIO=4&transport=websocket&sid="+o.SID, nil)
		if err != nil {
			t.Fatal(err)
		}
		ws.send("2probe")
		if p := ws.next(); p != "3probe" {
			t.Fatalf("probe answer %q", p)
		}
		if how == "close" {
			ws.c.Close()
		} else {
			ws.send("4hello")
			ws.expectClosed(2 * time.Second)
		}
		// Polling goes on: GETs wait again, and events arrive.
		waitFor(t, func() bool {
			e := env.h.reg.get(o.SID)
			e.mu.Lock()
			defer e.mu.Unlock()
			return !e.probing && !e.upgrading
		})
		env.apply(rowcast.OpInsert, 1, "open")
		if name, _, _ := eventOf(t, env.pollPackets(o.SID)[0]); name != "ticket:created" {
			t.Errorf("%s: event after an abandoned upgrade: %s", how, name)
		}
	}
	// A later upgrade succeeds.
	ws, _, err := env.dialWS("EIO=4&transport=websocket&sid="+o.SID, nil)
	if err != nil {
		t.Fatal(err)
	}
	ws.send("2probe")
	ws.next()
	ws.send("5")
	env.apply(rowcast.OpInsert, 2, "open")
	if name, _, _ := eventOf(t, ws.next()); name != "ticket:created" {
		t.Errorf("event after upgrade: %s", name)
	}
}

// TestSlowPollingClient: a polling client that stops polling while
// events pile up is dropped as a slow consumer; the others are not held up.
func TestSlowPollingClient(t *testing.T) {
	env := newTestEnv(t, func(c *testConfig) { c.GateConfig.QueueSize = 8 })
	o, _ := env.handshake(nil)
	env.post(o.SID, "40")
	connectReplyOf(t, env.pollPackets(o.SID)[0])
	fast, reply := env.openWS("40", nil)
	connectReplyOf(t, reply)
	waitFor(t, func() bool { return env.hub.Clients() == 2 })
	big := strings.Repeat("x", 1000)
	for i := 0; i < 200; i++ {
		env.apply(rowcast.OpInsert, i, big)
		if name, _, _ := eventOf(t, fast.next()); name != "ticket:created" {
			t.Fatalf("fast client got %s", name)
		}
	}
	waitFor(t, func() bool { return env.hub.Clients() == 1 })
	// The session is gone (the client reconnects and recovers from the
	// replay window).
	if status, _ := env.poll(o.SID); status != 400 {
		t.Errorf("poll after the drop: %d", status)
	}
	if n := env.obs.count(env.obs.closes, "slow_consumer"); n != 1 {
		t.Errorf("slow consumer closes: %d, want 1", n)
	}
}

// counts copies one of the observer's maps, without zero entries.
func (o *testObserver) counts(m map[string]int) map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string]int{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// expectSessionsClosed waits until every Engine.IO session is gone, then
// checks that the sessions gauge is back to 0 for each engine (never
// below it on the way) and which closes were counted.
func (e *testEnv) expectSessionsClosed(closes map[string]int) {
	e.t.Helper()
	waitFor(e.t, func() bool {
		return e.h.reg.len() == 0 && e.gate.Connections() == 0 && e.hub.Clients() == 0
	})
	o := e.obs
	if got := o.counts(o.sessions); len(got) != 0 {
		o.mu.Lock()
		e.t.Errorf("sessions gauge %v after every session closed, want 0 (moves %v)", got, o.moves)
		o.mu.Unlock()
	}
	o.mu.Lock()
	if o.negative != "" {
		e.t.Errorf("sessions gauge went below 0: %s", o.negative)
	}
	o.mu.Unlock()
	if got := o.counts(o.closes); !reflect.DeepEqual(got, closes) {
		e.t.Errorf("closes %v, want %v", got, closes)
	}
	if n := o.count(o.connected, Transport); n != 0 {
		e.t.Errorf("clients gauge %d after every session closed", n)
	}
}

// TestSessionMetrics: the sessions gauge follows each session's
// transport and returns to 0 after every kind of close, each close being
// counted once with its reason.
func TestSessionMetrics(t *testing.T) {
	fast := func(c *testConfig) {
		c.SocketIO = Config{PingInterval: 150 * time.Millisecond, PingTimeout: 100 * time.Millisecond}
	}
	t.Run("polling timeout", func(t *testing.T) {
		env := newTestEnv(t, fast)
		env.handshake(nil)
		if got := env.obs.counts(env.obs.sessions); !reflect.DeepEqual(got, map[string]int{"polling": 1}) {
			t.Errorf("after the handshake: %v", got)
		}
		// Nobody polls (so nobody answers the ping either).
		env.expectSessionsClosed(map[string]int{"poll_timeout": 1})
	})
	t.Run("websocket close", func(t *testing.T) {
		env := newTestEnv(t, nil)
		c, reply := env.openWS("40", nil)
		connectReplyOf(t, reply)
		if got := env.obs.counts(env.obs.sessions); !reflect.DeepEqual(got, map[string]int{"websocket": 1}) {
			t.Errorf("after the handshake: %v", got)
		}
		c.c.Close()
		env.expectSessionsClosed(map[string]int{"client": 1})
		// And an Engine.IO close packet.
		c, _ = env.openWS("40", nil)
		c.send("1")
		env.expectSessionsClosed(map[string]int{"client": 2})
	})
	t.Run("upgrade then close", func(t *testing.T) {
		env := newTestEnv(t, nil)
		o, _ := env.handshake(nil)
		env.post(o.SID, "40")
		connectReplyOf(t, env.pollPackets(o.SID)[0])
		ws, _, err := env.dialWS("EIO=4&transport=websocket&sid="+o.SID, nil)
		if err != nil {
			t.Fatal(err)
		}
		ws.send("2probe")
		if p := ws.next(); p != "3probe" {
			t.Fatalf("probe answer %q", p)
		}
		ws.send("5")
		waitFor(t, func() bool { return env.obs.count(env.obs.upgrades, "ok") == 1 })
		if got := env.obs.counts(env.obs.sessions); !reflect.DeepEqual(got, map[string]int{"websocket": 1}) {
			t.Errorf("after the upgrade: %v", got)
		}
		ws.send("1")
		env.expectSessionsClosed(map[string]int{"client": 1})
		env.obs.mu.Lock()
		moves := env.obs.moves
		env.obs.mu.Unlock()
		if want := []string{"+1 polling", "-1 polling", "+1 websocket", "-1 websocket"}; !reflect.DeepEqual(moves, want) {
			t.Errorf("moves %v, want %v", moves, want)
		}
	})
	t.Run("upgrade abandoned then polling close", func(t *testing.T) {
		env := newTestEnv(t, nil)
		o, _ := env.handshake(nil)
		ws, _, err := env.dialWS("EIO=4&transport=websocket&sid="+o.SID, nil)
		if err != nil {
			t.Fatal(err)
		}
		ws.send("2probe")
		ws.next()
		ws.c.Close()
		waitFor(t, func() bool { return env.obs.count(env.obs.upgrades, "abandoned") == 1 })
		if got := env.obs.counts(env.obs.sessions); !reflect.DeepEqual(got, map[string]int{"polling": 1}) {
			t.Errorf("after an abandoned upgrade: %v", got)
		}
		// An upgrade of an unknown session is refused.
		if _, resp, err := env.dialWS("EIO=4&transport=websocket&sid=nope", nil); err == nil || resp.StatusCode != 400 {
			t.Errorf("upgrade of an unknown sid: %v", err)
		}
		env.post(o.SID, "1")
		env.expectSessionsClosed(map[string]int{"client": 1})
		if got := env.obs.counts(env.obs.upgrades); !reflect.DeepEqual(got, map[string]int{"abandoned": 1, "refused": 1}) {
			t.Errorf("upgrades %v", got)
		}
	})
	t.Run("ping timeout", func(t *testing.T) {
		env := newTestEnv(t, fast)
		c, reply := env.openWS("40", nil)
		connectReplyOf(t, reply)
		c.pong = false
		if p := c.next(); p != "2" {
			t.Fatalf("want ping, got %q", p)
		}
		c.expectClosed(2 * time.Second)
		env.expectSessionsClosed(map[string]int{"ping_timeout": 1})
	})
	t.Run("connect timeout", func(t *testing.T) {
		env := newTestEnv(t, func(c *testConfig) { c.SocketIO.ConnectTimeout = 200 * time.Millisecond })
		c, _, err := env.dialWS("EIO=4&transport=websocket", nil)
		if err != nil {
			t.Fatal(err)
		}
		c.next()
		c.expectClosed(3 * time.Second)
		env.expectSessionsClosed(map[string]int{"connect_timeout": 1})
	})
	t.Run("protocol error", func(t *testing.T) {
		env := newTestEnv(t, nil)
		o, _ := env.handshake(nil)
		env.post(o.SID, "abc")
		c, reply := env.openWS("40", nil)
		connectReplyOf(t, reply)
		c.send("43[]")
		env.expectSessionsClosed(map[string]int{"protocol": 2})
	})
}

// TestProtocolErrorKinds: each protocol error is counted once by kind;
// all but bad requests close the session.
func TestProtocolErrorKinds(t *testing.T) {
	octet := http.Header{"Content-Type": {"application/octet-stream"}}
	cases := []struct {
		kind string
		run  func(env *testEnv)
	}{
		{"parse", func(env *testEnv) {
			o, _ := env.handshake(nil)
			env.post(o.SID, "abc")
		}},
		{"binary", func(env *testEnv) {
			o, _ := env.handshake(nil)
			env.do("POST", env.url("EIO=4&transport=polling&sid="+o.SID), "\x01", octet)
		}},
		{"binary", func(env *testEnv) {
			c, reply := env.openWS("40", nil)
			connectReplyOf(t, reply)
			c.send(`451-["x",{"_placeholder":true,"num":0}]`)
			c.expectClosed(2 * time.Second)
		}},
		{"parse", func(env *testEnv) {
			// A frame the client did not mask breaks RFC 6455: 1002.
			c, reply := env.openWS("40", nil)
			connectReplyOf(t, reply)
			c.c.UnderlyingConn().Write([]byte{0x81, 1, '3'})
			if err := c.expectClosed(2 * time.Second); !websocket.IsCloseError(err, broadcast.CloseProtocol) {
				t.Errorf("unmasked frame: %v, want 1002", err)
			}
		}},
		{"ack", func(env *testEnv) {
			c, reply := env.openWS("40", nil)
			connectReplyOf(t, reply)
			c.send("43[]")
			c.expectClosed(2 * time.Second)
		}},
		{"state", func(env *testEnv) {
			o, _ := env.handshake(nil)
			env.post(o.SID, `42["x"]`)
		}},
		{"too_large", func(env *testEnv) {
			o, _ := env.handshake(nil)
			env.post(o.SID, "4"+strings.Repeat("x", 2000))
		}},
		{"too_large", func(env *testEnv) {
			c, reply := env.openWS("40", nil)
			connectReplyOf(t, reply)
			c.send(`42["x","` + strings.Repeat("y", 2000) + `"]`)
			c.expectClosed(2 * time.Second)
		}},
		{"overlapping", func(env *testEnv) {
			o, _ := env.handshake(nil)
			first := make(chan struct{})
			go func() { env.poll(o.SID); close(first) }()
			time.Sleep(100 * time.Millisecond)
			env.poll(o.SID)
			<-first
		}},
		{"bad_request", func(env *testEnv) {
			env.do("GET", env.url("EIO=3&transport=polling"), "", nil)
		}},
	}
	for _, tc := range cases {
		env := newTestEnv(t, func(c *testConfig) { c.SocketIO.MaxPayload = 1000 })
		tc.run(env)
		closes := map[string]int{"protocol": 1}
		if tc.kind == "bad_request" {
			closes = map[string]int{}
		}
		env.expectSessionsClosed(closes)
		if got := env.obs.counts(env.obs.protoErrs); !reflect.DeepEqual(got, map[string]int{tc.kind: 1}) {
			t.Errorf("%s: protocol errors %v", tc.kind, got)
		}
	}
}

// TestShutdownUnjoined: sessions that never joined the namespace, and
// a GET pending on one, end as soon as the hub shuts down.
func TestShutdownUnjoined(t *testing.T) {
	env := newTestEnv(t, nil)
	o, _ := env.handshake(nil)
	pending := make(chan string, 1)
	go func() {
		_, body := env.poll(o.SID)
		pending <- body
	}()
	c, _, err := env.dialWS("EIO=4&transport=websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.next() // open
	joined, reply := env.openWS("40", nil)
	connectReplyOf(t, reply)
	waitFor(t, func() bool { return env.hub.Clients() == 1 })
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	env.hub.Shutdown()
	env.hub.Shutdown() // twice is harmless
	select {
	case body := <-pending:
		if body != "1" {
			t.Errorf("pending GET at shutdown: %q, want the close packet", body)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("pending GET of an unjoined session still open after shutdown")
	}
	for _, ws := range []*testConn{c, joined} {
		if err := ws.expectClosed(2 * time.Second); !websocket.IsCloseError(err, broadcast.CloseGoingAway) {
			t.Errorf("websocket closed with %v, want 1001", err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("sessions took %v to close", d)
	}
	env.expectSessionsClosed(map[string]int{"shutdown": 3})
	select {
	case <-env.hub.Done():
	default:
		t.Error("Hub.Done not closed after Shutdown")
	}
	// A session opened after the shutdown ends at once too.
	o, _ = env.handshake(nil)
	if status, body := env.poll(o.SID); status == 200 && body != "1" {
		t.Errorf("poll of a session opened after shutdown: %d %q", status, body)
	}
	env.expectSessionsClosed(map[string]int{"shutdown": 4})
}

// The label values the transport reports (every constant of sio.go) are
// the ones package metrics creates series for.
func TestLabelSets(t *testing.T) {
	for _, c := range []struct {
		name      string
		ours, pkg []string
	}{
		{"engines", []string{enginePolling, engineWebSocket}, metrics.SIOEngines},
		{"upgrade outcomes", []string{upgradeOK, upgradeAbandoned, upgradeRefused}, metrics.SIOUpgradeOutcomes},
		{"close reasons", []string{string(closePingTimeout), string(closePollTimeout), string(closeClient),
			string(closeProtocol), string(closeSlowConsumer), string(closeShutdown), string(closeConnectTimeout), string(closeTokenExpired)},
			metrics.SIOCloseReasons},
		{"protocol error kinds", []string{string(errParse), string(errBinary), string(errAck), string(errState),
			string(errTooLarge), string(errOverlapping), string(errBadRequest)},
			metrics.SIOProtocolErrorKinds},
	} {
		if !reflect.DeepEqual(c.ours, c.pkg) {
			t.Errorf("%s: broadcast reports %v, metrics has %v", c.name, c.ours, c.pkg)
		}
	}
}

// Sessions that have not joined the namespace hold no connection slot and
// are capped on their own: more handshakes get 503, and a CONNECT frees a
// place.
func TestPendingCap(t *testing.T) {
	env := newTestEnv(t, func(c *testConfig) {
		c.SocketIO.MaxPending = 2
		c.GateConfig.MaxConnections = 1
	})
	a, _ := env.handshake(nil)
	env.handshake(nil)
	status, _, body := env.do("GET", env.url("EIO=4&transport=polling"), "", nil)
	if status != 503 || !strings.Contains(body, "waiting for CONNECT") {
		t.Fatalf("third pending handshake: %d %s", status, body)
	}
	if _, resp, err := env.dialWS("EIO=4&transport=websocket", nil); err == nil || resp.StatusCode != 503 {
		t.Fatalf("pending WebSocket handshake over the cap: %v %v", err, resp)
	}
	if n := env.obs.count(env.obs.refused, "socketio/pending"); n != 2 {
		t.Errorf("refused as pending: %d", n)
	}
	if n := env.gate.Connections(); n != 0 {
		t.Errorf("pending sessions hold %d connection slots", n)
	}
	env.post(a.SID, "40")
	connectReplyOf(t, env.pollPackets(a.SID)[0])
	if n := env.gate.Connections(); n != 1 {
		t.Errorf("a joined session holds %d slots", n)
	}
	env.handshake(nil) // a place is free again
}

// A session that leaves the namespace must join again within the connect
// timeout, as after its handshake.
func TestConnectTimeoutAfterLeaving(t *testing.T) {
	env := newTestEnv(t, func(c *testConfig) { c.SocketIO.ConnectTimeout = 300 * time.Millisecond })
	c, reply := env.openWS("40", nil)
	connectReplyOf(t, reply)
	time.Sleep(400 * time.Millisecond) // longer than the timeout while joined: no close
	c.send("41")
	if err := c.expectClosed(30 * time.Second); !websocket.IsCloseError(err, broadcast.ClosePolicy) {
		t.Fatalf("closed with %v, want 1008 after leaving and not joining again", err)
	}
}
