package ws

import (
	"encoding/json"
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

func serve(t *testing.T, mod func(*broadcast.GateConfig)) (*broadcasttest.Env, string) {
	t.Helper()
	env := broadcasttest.New(mod)
	ts := httptest.NewServer(New(Config{Gate: env.Gate}))
	t.Cleanup(func() {
		env.Hub.Shutdown()
		ts.Close()
	})
	return env, "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"
}

func dial(t *testing.T, url string, h http.Header) *websocket.Conn {
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
	// subscribe changes the filter; the reply says so.
	if err := c.WriteJSON(map[string]any{"type": "subscribe", "filter": map[string]any{"status": []string{"open"}}}); err != nil {
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
