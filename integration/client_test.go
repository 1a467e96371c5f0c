package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// envInt reads a test size from the environment (for full-scale runs).
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestResumeUnderLoad: clients drop at random moments while writers are
// busy and reconnect with their last id; each ends with every event exactly
// once, in order, and a view equal to the table. The race detector slows
// everything tenfold, so under -race the default size is smaller; "make
// test" runs it again at full size (200 clients, 20,000 changes) without.
func TestResumeUnderLoad(t *testing.T) {
	clients, changes := 200, 20000
	if raceEnabled {
		clients, changes = 40, 3000
	}
	clients = envInt("ROWCAST_TEST_RESUME_CLIENTS", clients)
	changes = envInt("ROWCAST_TEST_RESUME_CHANGES", changes)
	forModes(t, func(t *testing.T, mode string) {
		// Every client's queue holds every event: this test is about
		// resuming, and a client that must keep up with the writers fails
		// on a busy machine (slow consumers have their own tests).
		db, s := startMode(t, mode, "ROWCAST_LOG_LEVEL=warn", fmt.Sprintf("ROWCAST_SEND_QUEUE=%d", changes+1000))
		tok := token(t, nil)
		viewers := make([]*viewer, clients)
		for i := range viewers {
			viewers[i] = newViewer(t, s, tok)
			if err := viewers[i].connect(); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		// Each client drops and comes back at random moments while the
		// writers run.
		var wg sync.WaitGroup
		for i, v := range viewers {
			wg.Add(1)
			go func(i int, v *viewer) {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(i), 1))
				for ctx.Err() == nil {
					time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
					if ctx.Err() != nil {
						return
					}
					v.disconnect()
					time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
					if err := v.connect(); err != nil {
						v.fail(fmt.Errorf("reconnect: %w", err))
						return
					}
				}
			}(i, v)
		}
		start := time.Now()
		total := legacyWriters(ctx, t, db, 4, changes, 0)
		writeTime := time.Since(start)
		cancel()
		wg.Wait()
		for _, v := range viewers {
			if v.conn == nil {
				if err := v.connect(); err != nil {
					t.Fatal(err)
				}
			}
		}
		want := tableTitles(t, db)
		for i, v := range viewers {
			waitProgress(t, fmt.Sprintf("client %d catching up", i), 2*time.Minute, func() (bool, int64) {
				n, resyncs, err := v.state()
				if err != nil {
					t.Fatalf("client %d: %v", i, err)
				}
				if resyncs > 0 {
					t.Fatalf("client %d got %d resync events", i, resyncs)
				}
				if int64(n) > total {
					t.Fatalf("client %d has %d of %d events", i, n, total)
				}
				return int64(n) == total, int64(n)
			})
			if diff := sameView(v.titles(), want); diff != "" {
				t.Fatalf("client %d: %s", i, diff)
			}
			v.disconnect()
		}
		t.Logf("%s: %d clients, %d changes written in %v, all delivered exactly once after %v",
			mode, clients, total, writeTime.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	})
}

// TestResumeOlderThanWindow: a lastEventId older than the replay window
// yields exactly one resync, then live events.
func TestResumeOlderThanWindow(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		db, s := startMode(t, mode, "ROWCAST_REPLAY_WINDOW=5")
		c := dial(t, s, "")
		conn := connectDB(t, db)
		for i := 0; i < 12; i++ {
			if _, err := conn.Exec(context.Background(), `INSERT INTO tickets (title) VALUES ($1)`, fmt.Sprint("t", i)); err != nil {
				t.Fatal(err)
			}
		}
		first := c.next(5 * time.Second)
		var lastID string
		for i := 1; i < 12; i++ {
			lastID = c.next(5 * time.Second).ID
		}
		// The first event is long out of the window: one resync.
		old := dial(t, s, "lastEventId="+first.ID)
		if m := old.next(5 * time.Second); m.Event != "resync" {
			t.Fatalf("got %s, want resync", m.Event)
		}
		// A recent id replays exactly what came after it.
		recent := dial(t, s, "lastEventId="+lastID)
		conn.Exec(context.Background(), `INSERT INTO tickets (title) VALUES ('after')`)
		for _, cl := range []*client{old, recent} {
			m := cl.next(5 * time.Second)
			if m.Event != "ticket:created" || !strings.Contains(string(m.Data), `"after"`) {
				t.Fatalf("got %s %s, want the live insert", m.Event, m.Data)
			}
			cl.expectNone(200 * time.Millisecond)
		}
	})
}

// TestSnapshotCursorConverges: snapshot, then connect with its lastEventId
// while writers are busy; the client ends with exactly the table.
func TestSnapshotCursorConverges(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		db, s := startMode(t, mode)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan int64)
		go func() { done <- legacyWriters(ctx, t, db, 3, 1500, time.Millisecond) }()
		time.Sleep(300 * time.Millisecond)
		tok := token(t, nil)
		status, body := httpGet(t, s.base+"/api/snapshot?limit=500", http.Header{"Authorization": {"Bearer " + tok}})
		if status != 200 {
			t.Fatalf("snapshot: %d %s", status, body)
		}
		var snap struct {
			Tickets     []json.RawMessage `json:"tickets"`
			LastEventID string            `json:"lastEventId"`
			Stats       map[string]any    `json:"stats"`
		}
		if err := json.Unmarshal(body, &snap); err != nil {
			t.Fatal(err)
		}
		if snap.LastEventID == "" || snap.Stats == nil {
			t.Fatalf("snapshot without cursor or stats: %s", body)
		}
		v := newViewer(t, s, tok)
		for _, raw := range snap.Tickets {
			v.apply("", "seed", nil, nil, nil)
			var k struct {
				ID json.Number `json:"id"`
			}
			json.Unmarshal(raw, &k)
			v.rows[k.ID.String()] = raw
		}
		v.other = nil
		v.lastID = snap.LastEventID
		if err := v.connect(); err != nil {
			t.Fatal(err)
		}
		<-done
		want := tableTitles(t, db)
		if len(want) > 500 {
			t.Fatalf("table has %d rows; the test needs them all in one snapshot", len(want))
		}
		deadline := time.Now().Add(patient(20 * time.Second))
		for sameView(v.titles(), want) != "" {
			if _, _, err := v.state(); err != nil {
				t.Fatal(err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("view did not converge: %s", sameView(v.titles(), want))
			}
			time.Sleep(50 * time.Millisecond)
		}
		v.disconnect()
	})
}

// TestFilters: rooms by column values, a row leaving the filter, deletes,
// a bad column, and changing the filter with a subscribe message.
func TestFilters(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		db, s := startMode(t, mode)
		c := dial(t, s, "status=open,in_progress&priority=high")
		conn := connectDB(t, db)
		ctx := context.Background()
		insert := func(status, priority string) int64 {
			var id int64
			if err := conn.QueryRow(ctx, `INSERT INTO tickets (title, status, priority) VALUES ('f', $1, $2) RETURNING id`, status, priority).Scan(&id); err != nil {
				t.Fatal(err)
			}
			return id
		}
		in := insert("open", "high")
		insert("closed", "high") // not in the room
		insert("open", "low")    // not in the room
		if m := c.next(5 * time.Second); m.Event != "ticket:created" || !strings.Contains(string(m.Data), fmt.Sprintf(`"id":%d`, in)) {
			t.Fatalf("got %s %s", m.Event, m.Data)
		}
		// Leaves the room: still sent, as an update, so the client removes it.
		conn.Exec(ctx, `UPDATE tickets SET status = 'closed' WHERE id = $1`, in)
		if m := c.next(5 * time.Second); m.Event != "ticket:updated" || !strings.Contains(string(m.Data), `"closed"`) {
			t.Fatalf("got %s %s, want the leaving update", m.Event, m.Data)
		}
		// Now outside: its delete is not for this client; a room member's is.
		conn.Exec(ctx, `DELETE FROM tickets WHERE id = $1`, in)
		other := insert("in_progress", "high")
		conn.Exec(ctx, `DELETE FROM tickets WHERE id = $1`, other)
		if m := c.next(5 * time.Second); m.Event != "ticket:created" {
			t.Fatalf("got %s %s", m.Event, m.Data)
		}
		if m := c.next(5 * time.Second); m.Event != "ticket:deleted" || !strings.Contains(string(m.Data), fmt.Sprint(other)) {
			t.Fatalf("got %s %s, want the member's delete", m.Event, m.Data)
		}
		c.expectNone(300 * time.Millisecond)

		// Change the filter with a subscribe message.
		if err := c.conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","filter":{"priority":"low"}}`)); err != nil {
			t.Fatal(err)
		}
		if m := c.next(5*time.Second, "subscribed"); !strings.Contains(string(m.Data), `"low"`) {
			t.Fatalf("subscribed: %s", m.Data)
		}
		insert("open", "high")
		low := insert("closed", "low")
		if m := c.next(5 * time.Second); m.Event != "ticket:created" || !strings.Contains(string(m.Data), fmt.Sprintf(`"id":%d`, low)) {
			t.Fatalf("after subscribe got %s %s", m.Event, m.Data)
		}
		// A bad column in a subscribe message: an error, the filter stays.
		c.conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","filter":{"title":"x"}}`))
		if m := c.next(5*time.Second, "error"); !strings.Contains(string(m.Data), "unknown filter column") {
			t.Fatalf("error: %s", m.Data)
		}

		// A bad column at connect: an error message on the socket, then close.
		bad := dial(t, s, "colour=red")
		m := bad.next(5*time.Second, "error")
		if !strings.Contains(string(m.Data), `unknown filter column \"colour\"`) {
			t.Errorf("error message: %s", m.Data)
		}
		select {
		case err := <-bad.closed:
			if !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
				t.Errorf("closed with %v, want 1008", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("connection with a bad filter not closed")
		}
	})
}

// TestVisibility: a restricted user never receives another user's ticket:
// not live, not through a status change, a delete, a replay or a snapshot.
func TestVisibility(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		db, s := startMode(t, mode)
		ann := token(t, jwt.MapClaims{"sub": "ann", "email": "ann@example.com", "role": "customer"})
		bob := token(t, jwt.MapClaims{"sub": "bob", "email": "bob@example.com"})
		anon := token(t, jwt.MapClaims{"sub": "nobody"})
		dialAs := func(tok, query string) *client {
			conn, _, err := dialRaw(s, query, http.Header{"Authorization": {"Bearer " + tok}})
			if err != nil {
				t.Fatal(err)
			}
			c := &client{t: t, conn: conn, msgs: make(chan message, 1000), closed: make(chan error, 1)}
			go func() {
				for {
					_, data, err := conn.ReadMessage()
					if err != nil {
						c.closed <- err
						close(c.msgs)
						return
					}
					var m message
					json.Unmarshal(data, &m)
					c.msgs <- m
				}
			}()
			t.Cleanup(func() { conn.Close() })
			return c
		}
		a, b, n, agent := dialAs(ann, ""), dialAs(bob, ""), dialAs(anon, ""), dial(t, s, "")
		agent.next(5*time.Second, "stats:updated")
		conn := connectDB(t, db)
		ctx := context.Background()
		var annID, bobID int64
		conn.QueryRow(ctx, `INSERT INTO tickets (title, requester_email) VALUES ('ann''s', 'ann@example.com') RETURNING id`).Scan(&annID)
		conn.QueryRow(ctx, `INSERT INTO tickets (title, requester_email) VALUES ('bob''s', 'bob@example.com') RETURNING id`).Scan(&bobID)
		conn.Exec(ctx, `UPDATE tickets SET status = 'resolved' WHERE id = $1`, bobID)
		conn.Exec(ctx, `DELETE FROM tickets WHERE id = $1`, bobID)
		conn.Exec(ctx, `UPDATE tickets SET status = 'in_progress' WHERE id = $1`, annID)
		// Ann's ticket handed over to Bob: Ann must drop it, without its new values.
		conn.Exec(ctx, `UPDATE tickets SET requester_email = 'bob@example.com', title = 'now bob''s' WHERE id = $1`, annID)

		want := []string{"ticket:created", "ticket:updated", "ticket:deleted"}
		for i, ev := range want {
			m := a.next(5 * time.Second)
			if m.Event != ev || strings.Contains(string(m.Data), "bob") {
				t.Fatalf("ann's event %d: %s %s, want %s without bob's data", i, m.Event, m.Data, ev)
			}
			if ev == "ticket:deleted" && !strings.Contains(string(m.Data), fmt.Sprintf(`"ticketId":%d`, annID)) {
				t.Fatalf("ann's delete: %s", m.Data)
			}
		}
		a.expectNone(300 * time.Millisecond)
		// Bob sees his ticket's life and then the handed-over one.
		for _, ev := range []string{"ticket:created", "ticket:updated", "ticket:deleted", "ticket:updated"} {
			if m := b.next(5 * time.Second); m.Event != ev || strings.Contains(string(m.Data), "ann@") {
				t.Fatalf("bob's: %s %s, want %s", m.Event, m.Data, ev)
			}
		}
		// No claims the rule needs: nothing at all; agents: everything.
		n.expectNone(200 * time.Millisecond)
		var firstID string
		for i := 0; i < 6; i++ {
			m := agent.next(5 * time.Second)
			if i == 0 {
				firstID = m.ID
			}
		}
		// Restricted users get no global stats.
		for _, c := range []*client{a, b, n} {
			select {
			case m := <-c.msgs:
				t.Fatalf("restricted user got %s %s", m.Event, m.Data)
			default:
			}
		}
		// A replay holds only what Ann may see: her update and the drop.
		replay := dialAs(ann, "lastEventId="+firstID)
		for _, ev := range []string{"ticket:updated", "ticket:deleted"} {
			if m := replay.next(5 * time.Second); m.Event != ev || strings.Contains(string(m.Data), "bob") {
				t.Fatalf("ann's replay: %s %s, want %s", m.Event, m.Data, ev)
			}
		}
		replay.expectNone(200 * time.Millisecond)
		status, body := httpGet(t, s.base+"/api/snapshot", http.Header{"Authorization": {"Bearer " + ann}})
		if status != 200 || !strings.Contains(string(body), `"stats":null`) || strings.Contains(string(body), "bob") || strings.Contains(string(body), `"tickets":[{`) {
			t.Errorf("ann's snapshot (she owns nothing now): %d %s", status, body)
		}
		status, body = httpGet(t, s.base+"/api/snapshot", http.Header{"Authorization": {"Bearer " + bob}})
		if status != 200 || !strings.Contains(string(body), "now bob's") {
			t.Errorf("bob's snapshot: %d %s", status, body)
		}
	})
}
