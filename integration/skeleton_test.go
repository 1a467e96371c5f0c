package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// captureModes lists the capture modes every end-to-end test runs in.
var captureModes = []string{"notify", "logical"}

func forModes(t *testing.T, f func(t *testing.T, mode string)) {
	for _, mode := range captureModes {
		t.Run(mode, func(t *testing.T) { f(t, mode) })
	}
}

// startMode prepares a database for a capture mode and starts rowcast.
func startMode(t *testing.T, mode string, env ...string) (string, *server) {
	t.Helper()
	db := newDatabase(t)
	// Slots are per cluster; tests share one, so each database gets its own.
	env = append(env, "ROWCAST_CAPTURE="+mode, "ROWCAST_SLOT="+slotName(db))
	setup(t, db, env...)
	return db, startServer(t, db, env...)
}

func slotName(dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		return "rowcast"
	}
	return "rc_" + strings.Trim(strings.ToLower(u.Path), "/")
}

var timestampRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)

type ticketData struct {
	Ticket    map[string]any `json:"ticket"`
	TicketID  json.Number    `json:"ticketId"`
	Timestamp string         `json:"timestamp"`
}

func decodeTicket(t *testing.T, m message) ticketData {
	t.Helper()
	var d ticketData
	dec := json.NewDecoder(strings.NewReader(string(m.Data)))
	dec.UseNumber()
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("decode %s: %v", m.Data, err)
	}
	if !timestampRE.MatchString(d.Timestamp) {
		t.Errorf("%s: timestamp %q is not RFC 3339 UTC with milliseconds", m.Event, d.Timestamp)
	}
	if m.ID == "" {
		t.Errorf("%s: no id", m.Event)
	}
	return d
}

func TestRowEvents(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		db, s := startMode(t, mode)
		c := dial(t, s, "")
		first := c.next(5*time.Second, "stats:updated")
		if !strings.Contains(string(first.Data), `"total":0`) {
			t.Errorf("first stats: %s", first.Data)
		}
		conn := connectDB(t, db)
		ctx := context.Background()
		var id int64
		err := conn.QueryRow(ctx, `INSERT INTO tickets (title, description, status, priority, category, requester_email)
			VALUES ('Printer on fire', 'Smoke from tray 2', 'open', 'urgent', 'hardware', 'ann@example.com') RETURNING id`).Scan(&id)
		if err != nil {
			t.Fatal(err)
		}
		m := c.next(5 * time.Second)
		if m.Event != "ticket:created" {
			t.Fatalf("got %s %s, want ticket:created", m.Event, m.Data)
		}
		d := decodeTicket(t, m)
		want := map[string]any{"id": json.Number(fmt.Sprint(id)), "title": "Printer on fire", "description": "Smoke from tray 2",
			"status": "open", "priority": "urgent", "category": "hardware", "requester_email": "ann@example.com", "assignee_email": nil}
		for k, v := range want {
			if !reflect.DeepEqual(d.Ticket[k], v) {
				t.Errorf("ticket[%s] = %#v, want %#v", k, d.Ticket[k], v)
			}
		}
		for _, k := range []string{"created_at", "updated_at"} {
			if s, _ := d.Ticket[k].(string); !strings.HasPrefix(s, "20") {
				t.Errorf("ticket[%s] = %#v, want a timestamp", k, d.Ticket[k])
			}
		}
		createdID := m.ID

		// A rolled-back transaction sends nothing; then update and delete
		// arrive in commit order.
		tx, _ := conn.Begin(ctx)
		tx.Exec(ctx, `UPDATE tickets SET status = 'closed' WHERE id = $1`, id)
		tx.Rollback(ctx)
		if _, err := conn.Exec(ctx, `UPDATE tickets SET status = 'in_progress', assignee_email = 'bob@example.com' WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `DELETE FROM tickets WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
		m = c.next(5 * time.Second)
		if m.Event != "ticket:updated" {
			t.Fatalf("got %s %s, want ticket:updated", m.Event, m.Data)
		}
		d = decodeTicket(t, m)
		if d.Ticket["status"] != "in_progress" || d.Ticket["assignee_email"] != "bob@example.com" {
			t.Errorf("updated ticket: %v", d.Ticket)
		}
		if !(createdID < m.ID) {
			t.Errorf("ids not increasing: %s then %s", createdID, m.ID)
		}
		m = c.next(5 * time.Second)
		if m.Event != "ticket:deleted" {
			t.Fatalf("got %s %s, want ticket:deleted", m.Event, m.Data)
		}
		d = decodeTicket(t, m)
		if d.TicketID.String() != fmt.Sprint(id) {
			t.Errorf("ticketId = %s, want %d", d.TicketID, id)
		}
		c.expectNone(300 * time.Millisecond)
		if n := metric(t, s, `rowcast_changes_captured_total{op="insert",table="tickets"}`); n != 1 {
			t.Errorf("changes captured (insert) = %v, want 1", n)
		}
	})
}

// TestConcurrentWriters: 1,000 random changes from 4 writers arrive once
// each, and the last stats:updated equals a GROUP BY.
func TestConcurrentWriters(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		db, s := startMode(t, mode)
		c := dial(t, s, "")
		statuses := []string{"open", "in_progress", "resolved", "closed"}
		priorities := []string{"low", "medium", "high", "urgent"}
		const writers, perWriter = 4, 250
		var wg sync.WaitGroup
		var mu sync.Mutex
		expected := 0
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				conn := connectDB(t, db)
				ctx := context.Background()
				rng := rand.New(rand.NewPCG(uint64(w), 7))
				var mine []int64
				for i := 0; i < perWriter; i++ {
					var tag pgconnTag
					var err error
					switch op := rng.IntN(10); {
					case op < 5 || len(mine) == 0:
						var id int64
						err = conn.QueryRow(ctx, `INSERT INTO tickets (title, status, priority) VALUES ($1, $2, $3) RETURNING id`,
							fmt.Sprintf("w%d-%d", w, i), statuses[rng.IntN(4)], priorities[rng.IntN(4)]).Scan(&id)
						mine = append(mine, id)
						tag.rows = 1
					case op < 8:
						id := mine[rng.IntN(len(mine))]
						tag.rows = 1
						_, err = conn.Exec(ctx, `UPDATE tickets SET status = $1, priority = $2, updated_at = now() WHERE id = $3`,
							statuses[rng.IntN(4)], priorities[rng.IntN(4)], id)
					default:
						k := rng.IntN(len(mine))
						id := mine[k]
						mine = append(mine[:k], mine[k+1:]...)
						tag.rows = 1
						_, err = conn.Exec(ctx, `DELETE FROM tickets WHERE id = $1`, id)
					}
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					expected += tag.rows
					mu.Unlock()
				}
			}(w)
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		seen := map[string]bool{}
		var lastStats json.RawMessage
		deadline := time.After(30 * time.Second)
		for len(seen) < expected {
			select {
			case m, ok := <-c.msgs:
				if !ok {
					t.Fatalf("closed after %d/%d events: %v", len(seen), expected, <-c.closed)
				}
				switch m.Event {
				case "stats:updated":
					lastStats = m.Data
					continue
				case "ticket:created", "ticket:updated", "ticket:deleted":
				default:
					t.Fatalf("unexpected %s %s", m.Event, m.Data)
				}
				if seen[m.ID] {
					t.Fatalf("event %s delivered twice", m.ID)
				}
				seen[m.ID] = true
			case <-deadline:
				t.Fatalf("got %d of %d events", len(seen), expected)
			}
		}
		want := groupBy(t, db)
		// The last stats:updated may still be on its way (throttled).
		deadline = time.After(10 * time.Second)
		for {
			var got struct {
				Stats map[string]any `json:"stats"`
			}
			if lastStats != nil {
				json.Unmarshal(lastStats, &got)
				if reflect.DeepEqual(got.Stats, want) {
					return
				}
			}
			select {
			case m, ok := <-c.msgs:
				if !ok {
					t.Fatal("closed")
				}
				if m.Event == "stats:updated" {
					lastStats = m.Data
				} else {
					t.Fatalf("unexpected extra event %s %s", m.Event, m.Data)
				}
			case <-deadline:
				t.Fatalf("last stats %s, want %v", lastStats, want)
			}
		}
	})
}

type pgconnTag struct{ rows int }

// TestLargeRow: a 20 KB description (over NOTIFY's limit) is written
// without error and the full ticket arrives.
func TestLargeRow(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		db, s := startMode(t, mode)
		c := dial(t, s, "")
		big := strings.Repeat("0123456789abcdef", 20*1024/16)
		conn := connectDB(t, db)
		var id int64
		if err := conn.QueryRow(context.Background(),
			`INSERT INTO tickets (title, description) VALUES ('big', $1) RETURNING id`, big).Scan(&id); err != nil {
			t.Fatalf("insert with a 20 KB description failed: %v", err)
		}
		if _, err := conn.Exec(context.Background(), `UPDATE tickets SET status = 'resolved' WHERE id = $1`, id); err != nil {
			t.Fatalf("update of a 20 KB row failed: %v", err)
		}
		for _, want := range []string{"ticket:created", "ticket:updated"} {
			m := c.next(5 * time.Second)
			if m.Event != want {
				t.Fatalf("got %s, want %s", m.Event, want)
			}
			d := decodeTicket(t, m)
			if d.Ticket["description"] != big {
				t.Fatalf("%s: description has %d bytes, want %d", want, len(fmt.Sprint(d.Ticket["description"])), len(big))
			}
		}
	})
}

func TestAuthOriginAndLimits(t *testing.T) {
	_, s := startMode(t, "notify", "CORS_ORIGINS=https://desk.example.com")
	expired := token(t, jwt.MapClaims{"sub": "u", "exp": time.Now().Add(-time.Hour).Unix()})
	wrongSig, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "u", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte("other"))
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "u", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	notYet := token(t, jwt.MapClaims{"sub": "u", "nbf": time.Now().Add(time.Hour).Unix()})
	good := token(t, nil)
	cases := []struct {
		name   string
		header http.Header
		query  string
		status int
	}{
		{"no token", nil, "", 401},
		{"expired", http.Header{"Authorization": {"Bearer " + expired}}, "", 401},
		{"not yet valid", http.Header{"Authorization": {"Bearer " + notYet}}, "", 401},
		{"wrong signature", http.Header{"Authorization": {"Bearer " + wrongSig}}, "", 401},
		{"alg none", http.Header{"Authorization": {"Bearer " + none}}, "", 401},
		{"garbage", http.Header{"Authorization": {"Bearer abc.def"}}, "", 401},
		{"bad origin", http.Header{"Authorization": {"Bearer " + good}, "Origin": {"https://evil.example.com"}}, "", 403},
		{"listed origin", http.Header{"Authorization": {"Bearer " + good}, "Origin": {"https://desk.example.com"}}, "", 101},
		{"cookie", http.Header{"Cookie": {"token=" + good}}, "", 101},
		{"query token", nil, "access_token=" + good, 101},
		{"bad lastEventId (answered with resync)", http.Header{"Authorization": {"Bearer " + good}}, "lastEventId=zzz", 101},
	}
	for _, tc := range cases {
		conn, resp, err := dialRaw(s, tc.query, tc.header)
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		if status != tc.status {
			t.Errorf("%s: HTTP %d (%v), want %d", tc.name, status, err, tc.status)
		}
		if conn != nil {
			conn.Close()
		}
	}
	if strings.Contains(s.log.String(), good) {
		t.Error("a token appears in the log")
	}
	if !strings.Contains(s.log.String(), "User connected: agent@example.com (") {
		t.Errorf("no 'User connected' log line")
	}
	if n := metric(t, s, `rowcast_connections_refused_total{reason="auth",transport="ws"}`); n != 6 {
		t.Errorf("refused for auth = %v, want 6", n)
	}
}

func TestLiveUpdatesDisabled(t *testing.T) {
	_, s := startMode(t, "notify", "ENABLE_LIVE_UPDATES=false")
	_, resp, _ := dialRaw(s, "", http.Header{"Authorization": {"Bearer " + token(t, nil)}})
	if resp == nil || resp.StatusCode != 503 {
		t.Fatalf("want 503, got %v", resp)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type %q", ct)
	}
	// Snapshot still works for polling dashboards.
	status, body := httpGet(t, s.base+"/api/snapshot", http.Header{"Authorization": {"Bearer " + token(t, nil)}})
	if status != 200 || !strings.Contains(string(body), `"tickets":[]`) {
		t.Errorf("snapshot: %d %s", status, body)
	}
}

// TestSlowConsumer: a client that never reads is dropped while another one
// still receives every event. The queue holds every event of the test, so
// the reading client can never be dropped however busy the machine is;
// the one that never reads is dropped when a write to it times out.
func TestSlowConsumer(t *testing.T) {
	db, s := startMode(t, "notify", "ROWCAST_SEND_QUEUE=4000")
	// A tiny receive buffer makes the never-reading client back up fast.
	d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if err == nil {
			c.(*net.TCPConn).SetReadBuffer(4096)
		}
		return c, err
	}}
	slow, _, err := d.Dial("ws://"+s.addr+"/ws", http.Header{"Authorization": {"Bearer " + token(t, nil)}})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fast := dial(t, s, "")
	// Wait until both are registered (the fast one gets its stats).
	fast.next(5*time.Second, "stats:updated")
	conn := connectDB(t, db)
	big := strings.Repeat("x", 4000)
	const n = 3000 // 12 MB: more than loopback socket buffers hold
	if _, err := conn.Exec(context.Background(),
		`INSERT INTO tickets (title, description) SELECT 'bulk ' || g, $1 FROM generate_series(1, $2) g`, big, n); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		m := fast.next(20 * time.Second)
		if m.Event != "ticket:created" {
			t.Fatalf("fast client got %s", m.Event)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for metric(t, s, `rowcast_slow_consumer_disconnects_total{transport="ws"}`) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the slow client was not disconnected")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The slow client's connection ends (after whatever was buffered).
	slow.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		if _, _, err := slow.ReadMessage(); err != nil {
			if websocket.IsUnexpectedCloseError(err) || strings.Contains(err.Error(), "timeout") {
				if strings.Contains(err.Error(), "timeout") {
					t.Fatalf("slow client still connected: %v", err)
				}
			}
			break
		}
	}
}

// TestListenerReconnect: when the listener's connection is killed, rowcast
// reconnects, clients get resync, and later changes arrive again.
func TestListenerReconnect(t *testing.T) {
	db, s := startMode(t, "notify")
	c := dial(t, s, "")
	conn := connectDB(t, db)
	ctx := context.Background()
	var killed int
	err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = 'rowcast listener'`).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminated %d listener sessions: %v", killed, err)
	}
	m := c.next(10*time.Second, "resync")
	if !strings.Contains(string(m.Data), "reason") {
		t.Errorf("resync data %s", m.Data)
	}
	s.waitReady(10 * time.Second)
	if _, err := conn.Exec(ctx, `INSERT INTO tickets (title) VALUES ('after reconnect')`); err != nil {
		t.Fatal(err)
	}
	m = c.next(10*time.Second, "ticket:created")
	if !strings.Contains(string(m.Data), "after reconnect") {
		t.Errorf("got %s", m.Data)
	}
	if n := metric(t, s, "rowcast_capture_reconnects_total"); n < 1 {
		t.Errorf("reconnects = %v", n)
	}
}

func TestSetupAndServeChecks(t *testing.T) {
	db := newDatabase(t)
	// serve refuses to start before setup, and says what to do.
	out, err := runRowcast(t, []string{"DATABASE_URL=" + db, "JWT_SECRET=x", "ROWCAST_CAPTURE=notify", "ROWCAST_LISTEN=127.0.0.1:0"}, "serve")
	if err == nil || !strings.Contains(out, "rowcast setup") {
		t.Errorf("serve without setup: %v\n%s", err, out)
	}
	// No JWT secret: refuse unless ROWCAST_AUTH=off.
	out, err = runRowcast(t, []string{"DATABASE_URL=" + db, "JWT_SECRET="}, "serve")
	if err == nil || !strings.Contains(out, "ROWCAST_AUTH=off") {
		t.Errorf("serve without JWT_SECRET: %v\n%s", err, out)
	}
	// Bad settings are all reported at once.
	out, err = runRowcast(t, []string{"DATABASE_URL=" + db, "JWT_SECRET=x", "ROWCAST_STATS_INTERVAL=soon", "ROWCAST_MAX_CONNECTIONS=-1"}, "serve")
	if err == nil || !strings.Contains(out, "ROWCAST_STATS_INTERVAL") || !strings.Contains(out, "ROWCAST_MAX_CONNECTIONS") {
		t.Errorf("bad settings: %v\n%s", err, out)
	}
	// --print writes SQL that psql-style clients can apply; setup twice is fine.
	out, err = runRowcast(t, []string{"DATABASE_URL=" + db, "ROWCAST_CAPTURE=notify"}, "setup", "--print")
	if err != nil || !strings.Contains(out, "CREATE TRIGGER rowcast_capture") {
		t.Fatalf("setup --print: %v\n%s", err, out)
	}
	exec1(t, db, out)
	setup(t, db, "ROWCAST_CAPTURE=notify")
	setup(t, db, "ROWCAST_CAPTURE=notify")
	conn := connectDB(t, db)
	var n int
	conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'rowcast_%'`).Scan(&n)
	if n != 2 {
		t.Errorf("%d rowcast triggers after repeated setup, want 2", n)
	}
	// A table without a primary key is refused with a clear error.
	exec1(t, db, `CREATE TABLE nokey (a int)`)
	out, err = runRowcast(t, []string{"DATABASE_URL=" + db, "ROWCAST_TABLE=public.nokey", "ROWCAST_STATS_COLUMNS=a"}, "setup")
	if err == nil || !strings.Contains(out, "primary key") {
		t.Errorf("setup on a table without a key: %v\n%s", err, out)
	}
	// teardown needs --yes, then removes everything.
	if out, err = runRowcast(t, []string{"DATABASE_URL=" + db}, "teardown"); err == nil {
		t.Errorf("teardown without --yes succeeded: %s", out)
	}
	if out, err = runRowcast(t, []string{"DATABASE_URL=" + db}, "teardown", "--yes"); err != nil {
		t.Fatalf("teardown: %v\n%s", err, out)
	}
	conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'rowcast_%'`).Scan(&n)
	if n != 0 {
		t.Errorf("%d rowcast triggers after teardown", n)
	}
}

// TestGracefulShutdown: SIGTERM closes clients with 1001 and exits 0.
func TestGracefulShutdown(t *testing.T) {
	_, s := startMode(t, "notify")
	c := dial(t, s, "")
	c.next(5*time.Second, "stats:updated")
	if err := s.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	select {
	case err := <-c.closed:
		if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
			t.Errorf("client closed with %v, want 1001", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("client not closed")
	}
}
