package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"rowcast"
)

// viewer is a dashboard-like client: it keeps a view of the table from
// ticket events, remembers the last event id, checks that ids only grow
// (no duplicate, no reordering) and can reconnect with lastEventId.
type viewer struct {
	t     testing.TB
	s     *server
	token string

	mu      sync.Mutex
	conn    *websocket.Conn
	lastID  string
	last    rowcast.EventID
	rows    map[string]json.RawMessage // ticket id → ticket JSON
	events  int                        // row events applied
	resyncs int
	other   []message // non-row events other than stats:updated
	err     error
	done    chan struct{}
}

func newViewer(t testing.TB, s *server, tok string) *viewer {
	if tok == "" {
		tok = token(t, nil)
	}
	return &viewer{t: t, s: s, token: tok, rows: map[string]json.RawMessage{}}
}

// connect dials /ws, resuming from the last id when there is one.
func (v *viewer) connect() error {
	v.mu.Lock()
	q := url.Values{}
	if v.lastID != "" {
		q.Set("lastEventId", v.lastID)
	}
	v.mu.Unlock()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	u := "ws://" + v.s.addr + "/ws"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	conn, _, err := d.Dial(u, http.Header{"Authorization": {"Bearer " + v.token}})
	if err != nil {
		return err
	}
	done := make(chan struct{})
	v.mu.Lock()
	v.conn, v.done = conn, done
	v.mu.Unlock()
	go v.read(conn, done)
	return nil
}

// disconnect closes the connection and waits for the reader to stop.
func (v *viewer) disconnect() {
	v.mu.Lock()
	conn, done := v.conn, v.done
	v.conn = nil
	v.mu.Unlock()
	if conn != nil {
		conn.Close()
		<-done
	}
}

func (v *viewer) read(conn *websocket.Conn, done chan struct{}) {
	defer close(done)
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		var m struct {
			ID    string `json:"id"`
			Event string `json:"event"`
			Data  struct {
				Ticket   json.RawMessage `json:"ticket"`
				TicketID json.RawMessage `json:"ticketId"`
			} `json:"data"`
		}
		if err := json.Unmarshal(data, &m); err != nil {
			v.fail(fmt.Errorf("bad frame %q: %w", data, err))
			return
		}
		v.apply(m.ID, m.Event, m.Data.Ticket, m.Data.TicketID, data)
	}
}

func (v *viewer) fail(err error) {
	v.mu.Lock()
	if v.err == nil {
		v.err = err
	}
	v.mu.Unlock()
}

func (v *viewer) apply(id, event string, ticket, ticketID json.RawMessage, raw []byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch event {
	case "stats:updated":
		return
	case "resync":
		v.resyncs++
		return
	case "ticket:created", "ticket:updated", "ticket:deleted":
	default:
		var m message
		json.Unmarshal(raw, &m)
		v.other = append(v.other, m)
		if id == "" {
			return
		}
	}
	eid, err := rowcast.ParseEventID(id)
	if err != nil {
		v.err = fmt.Errorf("event %s without a valid id %q", event, id)
		return
	}
	if v.lastID != "" && eid.SameEpoch(v.last) && !v.last.Less(eid) {
		v.err = fmt.Errorf("event %s arrived after %s: duplicate or out of order", id, v.lastID)
		return
	}
	v.lastID, v.last = id, eid
	if event == "ticket:created" || event == "ticket:updated" || event == "ticket:deleted" {
		v.events++
	}
	switch event {
	case "ticket:created", "ticket:updated":
		var k struct {
			ID json.Number `json:"id"`
		}
		json.Unmarshal(ticket, &k)
		v.rows[k.ID.String()] = append(json.RawMessage(nil), ticket...)
	case "ticket:deleted":
		delete(v.rows, strings.Trim(string(ticketID), `"`))
	}
}

func (v *viewer) state() (events, resyncs int, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.events, v.resyncs, v.err
}

// titles returns ticket id → title from the view.
func (v *viewer) titles() map[string]string {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make(map[string]string, len(v.rows))
	for id, raw := range v.rows {
		var r struct {
			Title string `json:"title"`
		}
		json.Unmarshal(raw, &r)
		out[id] = r.Title
	}
	return out
}

// tableTitles returns ticket id → title from the database.
func tableTitles(t testing.TB, db string) map[string]string {
	t.Helper()
	conn := connectDB(t, db)
	rows, err := conn.Query(context.Background(), "SELECT id::text, title FROM tickets")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, title string
		rows.Scan(&id, &title)
		out[id] = title
	}
	return out
}

func sameView(a, b map[string]string) string {
	if len(a) != len(b) {
		return fmt.Sprintf("%d rows in view, %d in table", len(a), len(b))
	}
	for k, v := range b {
		if a[k] != v {
			return fmt.Sprintf("ticket %s: view has %q, table %q", k, a[k], v)
		}
	}
	return ""
}
