package integration

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

type sseEvent struct{ id, event, data string }

// sseStream reads an /events response line by line.
type sseStream struct {
	resp     *http.Response
	events   chan sseEvent
	comments chan string
}

func openSSE(t *testing.T, s *server, lastID string) *sseStream {
	t.Helper()
	req, _ := http.NewRequest("GET", s.base+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+token(t, nil))
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET /events: %d", resp.StatusCode)
	}
	st := &sseStream{resp: resp, events: make(chan sseEvent, 1000), comments: make(chan string, 100)}
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.event != "" {
					st.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				select {
				case st.comments <- line:
				default:
				}
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data += line[6:]
			}
		}
		close(st.events)
	}()
	t.Cleanup(func() { resp.Body.Close() })
	return st
}

func (st *sseStream) next(t *testing.T, event string) sseEvent {
	t.Helper()
	deadline := time.After(patient(5 * time.Second))
	for {
		select {
		case ev, ok := <-st.events:
			if !ok {
				t.Fatalf("stream ended while waiting for %s", event)
			}
			if ev.event == event {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s within 5s", event)
		}
	}
}

func TestSSE(t *testing.T) {
	db, s := startMode(t, "logical", "ROWCAST_SSE_KEEPALIVE=300ms")
	st := openSSE(t, s, "")
	for h, want := range map[string]string{"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"} {
		if got := st.resp.Header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	st.next(t, "stats:updated")
	conn := connectDB(t, db)
	ctx := context.Background()
	conn.Exec(ctx, `INSERT INTO tickets (title) VALUES ('one')`)
	first := st.next(t, "ticket:created")
	if first.id == "" || !strings.Contains(first.data, `"one"`) {
		t.Fatalf("first event: %+v", first)
	}
	select {
	case c := <-st.comments:
		if c != ": keepalive" {
			t.Errorf("comment %q", c)
		}
	case <-time.After(3 * time.Second):
		t.Error("no keepalive comment")
	}
	st.resp.Body.Close()
	// Missed while away, then resumed with Last-Event-ID.
	conn.Exec(ctx, `INSERT INTO tickets (title) VALUES ('two')`)
	conn.Exec(ctx, `INSERT INTO tickets (title) VALUES ('three')`)
	again := openSSE(t, s, first.id)
	for _, title := range []string{"two", "three"} {
		ev := again.next(t, "ticket:created")
		if !strings.Contains(ev.data, `"`+title+`"`) {
			t.Fatalf("resumed: %+v, want %s", ev, title)
		}
	}
	// Same auth as /ws.
	resp, err := http.Get(s.base + "/events")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("no token: %d", resp.StatusCode)
	}
}

// TestBroadcastFromSQL: rowcast.broadcast() events arrive only when their
// transaction commits, in order with the row events.
func TestBroadcastFromSQL(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		db, s := startMode(t, mode)
		c := dial(t, s, "")
		conn := connectDB(t, db)
		ctx := context.Background()
		tx, _ := conn.Begin(ctx)
		tx.Exec(ctx, `INSERT INTO tickets (title) VALUES ('rolled back')`)
		tx.Exec(ctx, `SELECT rowcast.broadcast('notification', '{"type":"error","message":"never"}')`)
		tx.Rollback(ctx)
		tx, _ = conn.Begin(ctx)
		tx.Exec(ctx, `INSERT INTO tickets (title) VALUES ('before')`)
		if _, err := tx.Exec(ctx, `SELECT rowcast.broadcast('notification', '{"type":"success","message":"Import finished"}')`); err != nil {
			t.Fatal(err)
		}
		tx.Exec(ctx, `INSERT INTO tickets (title) VALUES ('after')`)
		tx.Commit(ctx)
		conn.Exec(ctx, `SELECT rowcast.broadcast('polling_status', '{"enabled":true}')`)
		want := []string{"ticket:created", "notification", "ticket:created", "polling_status"}
		for i, ev := range want {
			m := c.next(5 * time.Second)
			if m.Event != ev {
				t.Fatalf("event %d: %s %s, want %s", i, m.Event, m.Data, ev)
			}
			if ev == "notification" && string(m.Data) != `{"type": "success", "message": "Import finished"}` && string(m.Data) != `{"type":"success","message":"Import finished"}` {
				t.Errorf("notification data %s", m.Data)
			}
			if m.ID == "" {
				t.Errorf("%s has no id", ev)
			}
		}
		c.expectNone(300 * time.Millisecond)
		for _, name := range []string{"ticket:created", "stats:updated", "resync", "ticket_update"} {
			_, err := conn.Exec(ctx, `SELECT rowcast.broadcast($1, '{}')`, name)
			if err == nil || !strings.Contains(err.Error(), "reserved") {
				t.Errorf("broadcast(%q): %v, want a reserved-name error", name, err)
			}
		}
	})
}

func TestMaxConnections(t *testing.T) {
	_, s := startMode(t, "notify", "ROWCAST_MAX_CONNECTIONS=2")
	dial(t, s, "")
	dial(t, s, "")
	_, resp, err := dialRaw(s, "", http.Header{"Authorization": {"Bearer " + token(t, nil)}})
	if err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("third connection: %v %v, want 503", resp, err)
	}
	if n := metric(t, s, `rowcast_connections_refused_total{reason="limit",transport="ws"}`); n != 1 {
		t.Errorf("refused for limit = %v", n)
	}
}
