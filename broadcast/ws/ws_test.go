package ws

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"rowcast"
	"rowcast/broadcast"
	"rowcast/broadcast/broadcasttest"
)

type frame struct {
	ID    string          `json:"id"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

func serve(t testing.TB, mod func(*broadcast.GateConfig)) (*broadcasttest.Env, string) {
	t.Helper()
	env := broadcasttest.New(mod)
	ts := httptest.NewServer(New(Config{Gate: env.Gate}))
	t.Cleanup(func() {
		env.Hub.Shutdown()
		ts.Close()
	})
	return env, "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"
}

func dial(t testing.TB, url string, h http.Header) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(url, h)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", url, err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func next(t *testing.T, c *websocket.Conn) frame {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var f frame
	if err := c.ReadJSON(&f); err != nil {
		t.Fatalf("read: %v", err)
	}
	return f
}

func TestEventsResumeAndSubscribe(t *testing.T) {
	env, url := serve(t, nil)
	c := dial(t, url, nil)
	env.WaitClients(t, 1)
	id := env.Apply(rowcast.OpInsert, 1, "open")
	if f := next(t, c); f.Event != "ticket:created" || f.ID != id.String() {
		t.Fatalf("first event: %+v", f)
	}
	// A client resuming from the first event gets the ones after it.
	id2 := env.Apply(rowcast.OpUpdate, 1, "closed")
	r := dial(t, url+"?lastEventId="+id.String(), nil)
	if f := next(t, r); f.Event != "ticket:updated" || f.ID != id2.String() {
		t.Fatalf("replayed: %+v", f)
	}
	// subscribe changes the filter; the reply says so. The message is
	// larger than the connection's read buffer (read in pieces).
	statuses := []string{"open"}
	for i := 0; i < 90; i++ {
		statuses = append(statuses, fmt.Sprintf("a-status-nobody-uses-number-%03d", i))
	}
	if err := c.WriteJSON(map[string]any{"type": "subscribe", "filter": map[string]any{"status": statuses}}); err != nil {
		t.Fatal(err)
	}
	if f := next(t, c); f.Event != "ticket:updated" {
		t.Fatalf("live update before the subscribe reply: %+v", f)
	}
	if f := next(t, c); f.Event != "subscribed" || !strings.Contains(string(f.Data), `"open"`) {
		t.Fatalf("subscribe reply: %+v", f)
	}
	env.Apply(rowcast.OpInsert, 2, "closed") // filtered out
	env.Apply(rowcast.OpInsert, 3, "open")
	if f := next(t, c); f.Event != "ticket:created" || !strings.Contains(string(f.Data), `"id":3`) {
		t.Fatalf("after subscribe: %+v", f)
	}
	// A malformed cursor, or one ahead of every event, gets resync, then
	// live events: never silence.
	for _, cursor := range []string{"nope", rowcast.EventID{Pos: id2.Pos + 1000}.String()} {
		r := dial(t, url+"?lastEventId="+cursor, nil)
		if f := next(t, r); f.Event != "resync" {
			t.Fatalf("cursor %s: first event %+v, want resync", cursor, f)
		}
	}
	// Garbage gets an error event, not a disconnect.
	c.WriteMessage(websocket.TextMessage, []byte("{nope"))
	if f := next(t, c); f.Event != "error" {
		t.Fatalf("garbage reply: %+v", f)
	}
}

func TestRefusals(t *testing.T) {
	auth := broadcast.NewAuth(broadcasttest.Secret, "token")
	_, url := serve(t, func(c *broadcast.GateConfig) {
		c.Auth = auth
		c.Origins = []string{"https://desk.example.com"}
		c.MaxConnections = 1
	})
	status := func(u string, h http.Header) int {
		_, resp, err := websocket.DefaultDialer.Dial(u, h)
		if err == nil {
			t.Fatalf("%s: connected, want a refusal", u)
		}
		return resp.StatusCode
	}
	if s := status(url, nil); s != http.StatusUnauthorized {
		t.Errorf("no token: %d", s)
	}
	token, _ := auth.Sign(map[string]any{"sub": "u1", "exp": time.Now().Add(time.Hour).Unix()})
	bearer := http.Header{"Authorization": {"Bearer " + token}}
	if s := status(url, http.Header{"Authorization": {"Bearer " + token}, "Origin": {"https://evil.example.com"}}); s != http.StatusForbidden {
		t.Errorf("bad origin: %d", s)
	}
	dial(t, url, bearer)
	if s := status(url, bearer); s != http.StatusServiceUnavailable {
		t.Errorf("over the limit: %d", s)
	}
	_, off := serve(t, func(c *broadcast.GateConfig) { c.LiveUpdates = false })
	if s := status(off, nil); s != http.StatusServiceUnavailable {
		t.Errorf("live updates off: %d", s)
	}
}

func TestBadFilterAndShutdown(t *testing.T) {
	env, url := serve(t, nil)
	c := dial(t, url+"?nosuch=1", nil)
	if f := next(t, c); f.Event != "error" || !strings.Contains(string(f.Data), "unknown filter column") {
		t.Fatalf("bad filter: %+v", f)
	}
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, broadcast.ClosePolicy) {
		t.Fatalf("bad filter closed with %v, want 1008", err)
	}
	c2 := dial(t, url, nil)
	env.WaitClients(t, 1)
	env.Hub.Shutdown()
	c2.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, _, err := c2.ReadMessage(); !websocket.IsCloseError(err, broadcast.CloseGoingAway) {
		t.Fatalf("shutdown closed with %v, want 1001", err)
	}
	env.Gate.Wait()
	if n := env.Gate.Connections(); n != 0 {
		t.Fatalf("%d connection slots held after shutdown", n)
	}
}

// A session ends with 4001 when its token expires, unless the operator
// keeps sessions past expiry.
func TestTokenExpiry(t *testing.T) {
	auth := broadcast.NewAuth(broadcasttest.Secret, "token")
	// exp has one-second resolution: a token that expires in 2s.
	token, _ := auth.Sign(map[string]any{"sub": "u1", "exp": time.Now().Add(2 * time.Second).Unix()})
	bearer := http.Header{"Authorization": {"Bearer " + token}}
	_, url := serve(t, func(c *broadcast.GateConfig) { c.Auth = auth })
	c := dial(t, url, bearer)
	c.SetReadDeadline(time.Now().Add(time.Minute))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		if !websocket.IsCloseError(err, broadcast.CloseTokenExpired) {
			t.Fatalf("closed with %v, want 4001", err)
		}
		break
	}
	env, keep := serve(t, func(c *broadcast.GateConfig) { c.Auth = auth; c.KeepAfterTokenExpiry = true })
	exp := time.Now().Add(2 * time.Second)
	token2, _ := auth.Sign(map[string]any{"sub": "u1", "exp": exp.Unix()})
	k := dial(t, keep, http.Header{"Authorization": {"Bearer " + token2}})
	env.WaitClients(t, 1)
	time.Sleep(time.Until(exp.Add(time.Second))) // until the token has expired
	env.Apply(rowcast.OpInsert, 1, "open")
	if f := next(t, k); f.Event != "ticket:created" {
		t.Fatalf("kept session: %+v", f)
	}
}

// Before capture has said where it starts, a client resuming with a cursor
// is asked to retry (503, Retry-After) rather than given a resync it does
// not need; a fresh client connects.
func TestResumeBeforeCaptureStarts(t *testing.T) {
	env := broadcasttest.NewNotStarted(nil)
	ts := httptest.NewServer(New(Config{Gate: env.Gate}))
	t.Cleanup(func() {
		env.Hub.Shutdown()
		ts.Close()
	})
	url := "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"
	_, resp, err := websocket.DefaultDialer.Dial(url+"?lastEventId="+rowcast.EventID{Pos: 5}.String(), nil)
	if err == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("resume before start: %v %v", err, resp)
	}
	dial(t, url, nil)
}

// An idle connection is one goroutine (its reader): a writer runs only
// while there is something to write. It is still pinged, and closed with
// 1001 on shutdown, after which no goroutine of it is left.
func TestIdleConnectionOneGoroutine(t *testing.T) {
	env := broadcasttest.New(nil)
	pinged := make(chan struct{}, 100)
	ts := httptest.NewServer(New(Config{Gate: env.Gate, PingInterval: 20 * time.Millisecond}))
	defer ts.Close()
	url := "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"
	const n = 10
	var conns []*websocket.Conn
	for range n {
		c := dial(t, url, nil)
		c.SetPingHandler(func(data string) error {
			select {
			case pinged <- struct{}{}:
			default:
			}
			return c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Minute))
		})
		conns = append(conns, c)
	}
	env.WaitClients(t, n)
	broadcasttest.WaitLong(t, "one goroutine per idle connection", func() bool {
		return broadcasttest.GoroutinesIn("rowcast/broadcast/ws.(*client).run") == n && broadcasttest.GoroutinesIn("rowcast/broadcast.(*driver).run") == 0
	})
	// Clients read (and so answer pings) until the shutdown closes them.
	closed := make(chan error, n)
	for _, c := range conns {
		go func() {
			c.SetReadDeadline(time.Now().Add(time.Minute))
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					closed <- err
					return
				}
			}
		}()
	}
	for range 3 * n {
		select {
		case <-pinged:
		case <-time.After(time.Minute):
			t.Fatal("idle connections are not pinged")
		}
	}
	env.Hub.Shutdown()
	for range n {
		if err := <-closed; !websocket.IsCloseError(err, broadcast.CloseGoingAway) {
			t.Fatalf("shutdown closed with %v, want 1001", err)
		}
	}
	env.Gate.Wait()
	broadcasttest.WaitLong(t, "no goroutine left", func() bool {
		return broadcasttest.GoroutinesIn("rowcast/broadcast/ws.(*client)") == 0 && broadcasttest.GoroutinesIn("rowcast/broadcast.(*driver).run") == 0
	})
}

// The client's pings get pongs and its close frame an answer, both from
// the writer (the reader writes nothing), between event frames.
func TestClientPingAndClose(t *testing.T) {
	env, url := serve(t, nil)
	c := dial(t, url, nil)
	env.WaitClients(t, 1)
	ponged := make(chan string, 1)
	c.SetPongHandler(func(data string) error { ponged <- data; return nil })
	if err := c.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	// The pong comes between event frames, whenever the ping got there:
	// events are read (which handles the pong) until it has come.
	for i := 1; ; i++ {
		id := env.Apply(rowcast.OpInsert, i, "open")
		if f := next(t, c); f.ID != id.String() {
			t.Fatalf("event: %+v", f)
		}
		select {
		case data := <-ponged:
			if data != "are you there" {
				t.Fatalf("pong %q", data)
			}
		default:
			if i > 10000 {
				t.Fatal("no pong")
			}
			continue
		}
		break
	}
	if err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(time.Minute))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
			t.Fatalf("close answered with %v, want 1000", err)
		}
		break
	}
	env.WaitClients(t, 0)
	env.Gate.Wait()
}

// A client that stops reading is dropped as a slow consumer: its
// connection ends (4008, or a reset when a write was stuck) and its slot
// is released, while another client gets every event.
func TestSlowConsumerDropped(t *testing.T) {
	env, url := serve(t, func(c *broadcast.GateConfig) { c.QueueSize = 8 })
	d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if err == nil {
			c.(*net.TCPConn).SetReadBuffer(4096)
		}
		return c, err
	}}
	slow, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	env.WaitClients(t, 1)
	// Big events until the hub drops the client that does not read.
	big := strings.Repeat("x", 16<<10)
	for i := 0; env.Hub.Clients() == 1; i++ {
		if i > 100000 {
			t.Fatal("the client that does not read was never dropped")
		}
		env.Apply(rowcast.OpInsert, i, big)
	}
	env.Gate.Wait()
	slow.SetReadDeadline(time.Now().Add(time.Minute))
	for {
		_, _, err := slow.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) && ce.Code != broadcast.CloseSlowConsumer {
			t.Fatalf("closed with %v, want 4008 or a reset", err)
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("slow client still connected: %v", err)
		}
		break
	}
}

// What a client breaks at the frame level closes its connection with the
// code that says what, and frees its slot: a binary message (1003), a
// message over the limit (1009), an unmasked frame (1002). A subscribe
// message the client sends in fragments is taken whole.
func TestClientFrames(t *testing.T) {
	env, url := serve(t, nil)
	closedWith := func(c *websocket.Conn) error {
		c.SetReadDeadline(time.Now().Add(time.Minute))
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return err
			}
		}
	}
	c := dial(t, url, nil)
	c.WriteMessage(websocket.BinaryMessage, []byte{1})
	if err := closedWith(c); !websocket.IsCloseError(err, broadcast.CloseUnsupported) {
		t.Fatalf("binary message: %v, want 1003", err)
	}
	c = dial(t, url, nil)
	c.WriteMessage(websocket.TextMessage, make([]byte, readLimit+1))
	if err := closedWith(c); !websocket.IsCloseError(err, broadcast.CloseTooBig) {
		t.Fatalf("message over the limit: %v, want 1009", err)
	}
	c = dial(t, url, nil)
	c.UnderlyingConn().Write([]byte{0x81, 2, 'h', 'i'}) // text "hi", not masked
	if err := closedWith(c); !websocket.IsCloseError(err, broadcast.CloseProtocol) {
		t.Fatalf("unmasked frame: %v, want 1002", err)
	}
	env.WaitClients(t, 0)
	broadcasttest.WaitLong(t, "slots released", func() bool { return env.Gate.Connections() == 0 })

	// gorilla's client sends a message longer than its write buffer in
	// fragments.
	d := websocket.Dialer{WriteBufferSize: 64}
	c, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	env.WaitClients(t, 1)
	sub := `{"type":"subscribe","filter":{"status":["open","` + strings.Repeat("x", 300) + `"]}}`
	if err := c.WriteMessage(websocket.TextMessage, []byte(sub)); err != nil {
		t.Fatal(err)
	}
	if f := next(t, c); f.Event != "subscribed" || !strings.Contains(string(f.Data), `"open"`) {
		t.Fatalf("subscribe reply: %+v", f)
	}
}
