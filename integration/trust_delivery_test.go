package integration

// The delivery side of rowcast's trust boundary, attacked from outside:
// cursors from nowhere, anonymous Socket.IO handshakes, oversized filters,
// hostile event names, ever new event names, and an unsafe CORS setting.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"rowcast"
)

// A cursor ahead of every event, or a malformed one, gets resync and then
// live events, on /ws and /events: never silence.
func TestCursorsFromNowhereResync(t *testing.T) {
	db, s := startMode(t, "logical")
	c := dial(t, s, "")
	c.next(20*time.Second, "stats:updated") // subscribed: no event can slip by
	exec1(t, db, `INSERT INTO tickets (title) VALUES ('first')`)
	first := c.next(20 * time.Second)
	id, err := rowcast.ParseEventID(first.ID)
	if err != nil {
		t.Fatal(err)
	}
	future := rowcast.EventID{Pos: id.Pos + 1<<40}.String()
	for _, cursor := range []string{future, "zzz"} {
		w := dial(t, s, "lastEventId="+cursor)
		if m := w.next(20*time.Second, "resync", "ticket:created"); m.Event != "resync" {
			t.Fatalf("/ws with lastEventId=%s: first event %s, want resync", cursor, m.Event)
		}
		e := openSSE(t, s, cursor)
		e.next(t, "resync")
		exec1(t, db, `INSERT INTO tickets (title) VALUES ('after the cursor')`)
		if m := w.next(20 * time.Second); m.Event != "ticket:created" {
			t.Fatalf("/ws after resync: %s", m.Event)
		}
		e.next(t, "ticket:created")
	}
}

// Socket.IO handshakes that never send an authenticated CONNECT take no
// connection slot: they cannot lock authenticated users out.
func TestAnonymousHandshakesCannotLockOut(t *testing.T) {
	_, s := startMode(t, "notify", "ROWCAST_MAX_CONNECTIONS=3")
	for i := 0; i < 6; i++ {
		status, body := httpGet(t, s.base+"/socket.io/?EIO=4&transport=polling", nil)
		if status != 200 {
			t.Fatalf("anonymous handshake %d: %d %s", i, status, body)
		}
	}
	for i := 0; i < 3; i++ {
		dial(t, s, "")
	}
	_, resp, err := dialRaw(s, "", http.Header{"Authorization": {"Bearer " + token(t, nil)}})
	if err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("fourth authenticated connection: %v %v, want 503 at the limit", resp, err)
	}
}

// Filters over the caps are refused with a clear error, from the query
// string and from a subscribe message.
func TestOversizedFiltersRefused(t *testing.T) {
	_, s := startMode(t, "notify")
	vals := make([]string, 200)
	for i := range vals {
		vals[i] = fmt.Sprint("v", i)
	}
	conn, _, err := dialRaw(s, "status="+strings.Join(vals, ","), http.Header{"Authorization": {"Bearer " + token(t, nil)}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, data, err := conn.ReadMessage()
	if err != nil || !strings.Contains(string(data), "at most 100") {
		t.Fatalf("200 values: %s %v", data, err)
	}
	if _, _, err := conn.ReadMessage(); !websocket.IsCloseError(err, 1008) {
		t.Fatalf("closed with %v, want 1008", err)
	}
	status, body := httpGet(t, s.base+"/events?status="+strings.Repeat("x", 5000), http.Header{"Authorization": {"Bearer " + token(t, nil)}})
	if status != 400 || !strings.Contains(string(body), "bytes") {
		t.Errorf("/events with a 5000-byte filter: %d %s", status, body)
	}
	c := dial(t, s, "")
	msg, _ := json.Marshal(map[string]any{"type": "subscribe", "filter": map[string]any{"status": vals[:150]}})
	if err := c.conn.WriteMessage(websocket.TextMessage, msg); err != nil {
		t.Fatal(err)
	}
	if m := c.next(20*time.Second, "error", "subscribed"); m.Event != "error" {
		t.Fatalf("oversized subscribe: %s %s", m.Event, m.Data)
	}
}

// An event name that would inject lines into SSE frames, or take a name
// rowcast reserves, never reaches a client; the frames stay well-formed
// and the next good event arrives.
func TestHostileEventNames(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		db, s := startMode(t, mode)
		e := openSSE(t, s, "")
		conn := connectDB(t, db)
		ctx := context.Background()
		for _, name := range []string{"x\nid: 99999\nevent: ticket:deleted", "has space", strings.Repeat("n", 65), "connect", "error"} {
			// Refused in SQL or dropped by rowcast: either way nothing goes out.
			conn.Exec(ctx, `SELECT rowcast.broadcast($1, '{"ticketId": 1}')`, name)
		}
		if _, err := conn.Exec(ctx, `SELECT rowcast.broadcast('notification', '{"message": "ok"}')`); err != nil {
			t.Fatal(err)
		}
		got := e.next(t, "notification")
		if !strings.Contains(got.data, `"ok"`) {
			t.Errorf("notification data %q", got.data)
		}
		select {
		case ev := <-e.events:
			if ev.event != "stats:updated" {
				t.Errorf("unexpected frame %+v", ev)
			}
		default:
		}
	})
}

// rowcast.broadcast() with ever new names does not grow the metric series
// without bound.
func TestEventNameSeriesBounded(t *testing.T) {
	db, s := startMode(t, "logical")
	c := dial(t, s, "")
	c.next(20*time.Second, "stats:updated") // subscribed: no event can slip by
	exec1(t, db, `SELECT rowcast.broadcast('app_' || g, '{}') FROM generate_series(1, 150) g`)
	for i := 0; i < 150; i++ {
		c.next(20 * time.Second)
	}
	_, body := httpGet(t, s.base+"/metrics", nil)
	series := 0
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, `rowcast_events_sent_total{event="app_`) {
			series++
		}
	}
	if series != 100 {
		t.Errorf("%d application event series, want 100 (the rest as other)", series)
	}
	if n := metric(t, s, `rowcast_events_sent_total{event="other",transport="ws"}`); n != 50 {
		t.Errorf("other = %v, want 50", n)
	}
}

// CORS_ORIGINS=* with CORS_CREDENTIALS=true would let any site read the
// data with a user's cookie: rowcast refuses to start.
func TestWildcardCORSWithCredentialsDoesNotStart(t *testing.T) {
	// Settings are checked before rowcast connects anywhere.
	out, err := runRowcast(t, []string{"DATABASE_URL=postgres://127.0.0.1:1/none", "JWT_SECRET=x", "CORS_ORIGINS=*", "CORS_CREDENTIALS=true",
		"ROWCAST_LISTEN=" + freeAddr(t)}, "serve")
	if err == nil || !strings.Contains(out, "CORS_ORIGINS") {
		t.Fatalf("serve started or said %q (%v)", out, err)
	}
}
