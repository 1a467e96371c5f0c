package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"

	"rowcast/integration/harness"
	"rowcast/integration/pgcluster"
	"rowcast/integration/pgcluster/pgtest"
	rsql "rowcast/sql"
)

// The tests here each pin one edge where delivery or the stats used to
// stop being exact; each failed before its fix.

// waitStats waits until the client's latest stats:updated equals a fresh
// GROUP BY of the table, and fails with both when they stay apart.
func waitStats(t *testing.T, c *client, db string) {
	t.Helper()
	want := groupBy(t, db)
	var last map[string]any
	deadline := time.After(patient(10 * time.Second))
	for {
		select {
		case m, ok := <-c.msgs:
			if !ok {
				t.Fatalf("connection closed while waiting for stats %v: %v", want, <-c.closed)
			}
			if m.Event != "stats:updated" {
				continue
			}
			var d struct {
				Stats map[string]any `json:"stats"`
			}
			if err := json.Unmarshal(m.Data, &d); err != nil {
				t.Fatal(err)
			}
			if last = d.Stats; reflect.DeepEqual(last, want) {
				return
			}
		case <-deadline:
			t.Fatalf("stats %v, a fresh GROUP BY gives %v", last, want)
		}
	}
}

// ticketOf decodes a row event's ticket.
func ticketOf(t *testing.T, m message) map[string]any {
	t.Helper()
	return decodeTicket(t, m).Ticket
}

// TestLargeRowExact: a row over NOTIFY's limit arrives as it was
// committed, not as it is when rowcast gets to it. rowcast is paused
// while the big ticket is inserted and then closed, so that in notify
// mode the row is long closed when the insert's notification is read:
// the insert must still say pending, and the stats must not count it
// twice as closed (once pending: -1, closed: 2, against a table with one
// closed and one open ticket).
func TestLargeRowExact(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		db, s := startMode(t, mode)
		c := dial(t, s, "")
		c.next(5*time.Second, "stats:updated")
		conn := connectDB(t, db)
		ctx := context.Background()
		big := strings.Repeat("large description ", 1000) // 18 KB
		if err := s.rc.Pause(); err != nil {
			t.Fatal(err)
		}
		var id int64
		if err := conn.QueryRow(ctx, `INSERT INTO tickets (title, description, status) VALUES ('big', $1, 'pending') RETURNING id`, big).Scan(&id); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `UPDATE tickets SET status = 'closed' WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `INSERT INTO tickets (title, status) VALUES ('small', 'open')`); err != nil {
			t.Fatal(err)
		}
		if err := s.rc.Resume(); err != nil {
			t.Fatal(err)
		}
		for _, want := range []struct{ event, status string }{{"ticket:created", "pending"}, {"ticket:updated", "closed"}, {"ticket:created", "open"}} {
			m := c.next(10 * time.Second)
			row := ticketOf(t, m)
			if m.Event != want.event || row["status"] != want.status {
				t.Fatalf("got %s with status %v, want %s with status %s", m.Event, row["status"], want.event, want.status)
			}
			if row["title"] == "big" && row["description"] != big {
				t.Fatalf("%s: the description has %d bytes, want %d", m.Event, len(fmt.Sprint(row["description"])), len(big))
			}
		}
		waitStats(t, c, db)
	})
}

// TestSameRowTwiceInOneTransaction: a ticket closed, reopened and closed
// again in one transaction arrives as three updates ending closed (NOTIFY
// would fold the first and third, identical, payloads), and two
// TRUNCATEs in one transaction are two resyncs, each before the rows
// inserted after it.
func TestSameRowTwiceInOneTransaction(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		db, s := startMode(t, mode)
		c := dial(t, s, "")
		c.next(5*time.Second, "stats:updated")
		conn := connectDB(t, db)
		ctx := context.Background()
		var id int64
		if err := conn.QueryRow(ctx, `INSERT INTO tickets (title, status) VALUES ('flip', 'open') RETURNING id`).Scan(&id); err != nil {
			t.Fatal(err)
		}
		c.next(5*time.Second, "ticket:created")
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range []string{"closed", "open", "closed"} {
			if _, err := tx.Exec(ctx, `UPDATE tickets SET status = $1 WHERE id = $2`, st, id); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"closed", "open", "closed"} {
			m := c.next(10 * time.Second)
			if got := ticketOf(t, m)["status"]; m.Event != "ticket:updated" || got != want {
				t.Fatalf("got %s with status %v, want ticket:updated with status %s", m.Event, got, want)
			}
		}
		waitStats(t, c, db)

		tx, err = conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{`TRUNCATE tickets`, `INSERT INTO tickets (title) VALUES ('between')`,
			`TRUNCATE tickets`, `INSERT INTO tickets (title) VALUES ('after')`} {
			if _, err := tx.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		var got []string
		for len(got) < 4 {
			m := c.next(10 * time.Second)
			switch m.Event {
			case "resync":
				got = append(got, "resync")
			case "ticket:created":
				got = append(got, fmt.Sprint(ticketOf(t, m)["title"]))
			default:
				t.Fatalf("unexpected %s %s", m.Event, m.Data)
			}
		}
		if want := "resync between resync after"; strings.Join(got, " ") != want {
			t.Fatalf("got %q, want %q", strings.Join(got, " "), want)
		}
	})
}

// TestLargeTrackedValues: a 9 KB value in a filter column (which the
// trigger sends besides the row, as the old value of updates and
// deletes) never makes the writer's statement fail, and the insert,
// update and delete reach the client whole.
func TestLargeTrackedValues(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		db, s := startMode(t, mode)
		cat := strings.Repeat("c", 9*1024)
		c := dial(t, s, "")
		c.next(5*time.Second, "stats:updated")
		conn := connectDB(t, db)
		ctx := context.Background()
		var id int64
		if err := conn.QueryRow(ctx, `INSERT INTO tickets (title, category) VALUES ('wide', $1) RETURNING id`, cat).Scan(&id); err != nil {
			t.Fatalf("insert with a 9 KB category: %v", err)
		}
		if _, err := conn.Exec(ctx, `UPDATE tickets SET title = 'wider' WHERE id = $1`, id); err != nil {
			t.Fatalf("update of a row with a 9 KB category: %v", err)
		}
		if _, err := conn.Exec(ctx, `DELETE FROM tickets WHERE id = $1`, id); err != nil {
			t.Fatalf("delete of a row with a 9 KB category: %v", err)
		}
		for _, want := range []string{"ticket:created", "ticket:updated", "ticket:deleted"} {
			m := c.next(10 * time.Second)
			if m.Event != want {
				t.Fatalf("got %s, want %s", m.Event, want)
			}
			if want != "ticket:deleted" && ticketOf(t, m)["category"] != cat {
				t.Fatalf("%s: the category did not arrive whole", want)
			}
		}
	})
}

// TestKeyChange: an UPDATE of the primary key reaches clients as a
// delete of the old key followed by a created of the row under the new
// one, with consecutive ids, so no dashboard keeps a ghost of the old
// key; the stats follow a key change that also moves the status.
func TestKeyChange(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		db, s := startMode(t, mode)
		c := dial(t, s, "")
		c.next(5*time.Second, "stats:updated")
		conn := connectDB(t, db)
		ctx := context.Background()
		var id int64
		if err := conn.QueryRow(ctx, `INSERT INTO tickets (title, status) VALUES ('moving', 'open') RETURNING id`).Scan(&id); err != nil {
			t.Fatal(err)
		}
		c.next(5*time.Second, "ticket:created")
		for _, q := range []struct {
			sql    string
			to     int64
			status string
		}{
			{`UPDATE tickets SET id = 1000 WHERE id = $1`, 1000, "open"},
			{`UPDATE tickets SET id = 2000, status = 'closed' WHERE id = $1`, 2000, "closed"},
		} {
			if _, err := conn.Exec(ctx, q.sql, id); err != nil {
				t.Fatal(err)
			}
			del := c.next(10 * time.Second)
			if d := decodeTicket(t, del); del.Event != "ticket:deleted" || d.TicketID.String() != fmt.Sprint(id) {
				t.Fatalf("got %s %s, want ticket:deleted of %d", del.Event, del.Data, id)
			}
			cre := c.next(10 * time.Second)
			row := ticketOf(t, cre)
			if cre.Event != "ticket:created" || fmt.Sprint(row["id"]) != fmt.Sprint(q.to) || row["status"] != q.status {
				t.Fatalf("got %s %s, want ticket:created of %d, %s", cre.Event, cre.Data, q.to, q.status)
			}
			if !(del.ID < cre.ID) {
				t.Errorf("ids %s then %s: the delete must come first", del.ID, cre.ID)
			}
			id = q.to
		}
		waitStats(t, c, db)
	})
}

// proxiedCluster starts a PostgreSQL cluster of the test's own, listening
// on a loopback TCP port too, creates a database with the tickets table
// and puts a fault proxy in front of it. It returns the cluster, the
// database's URL (unix socket: the test's own connections, which faults
// spare) and its URL through the proxy (for rowcast).
func proxiedCluster(t *testing.T, settings map[string]string) (*pgcluster.Cluster, string, string, *faultProxy) {
	t.Helper()
	addr := freeAddr(t)
	_, portText, _ := strings.Cut(addr, ":")
	port, _ := strconv.Atoi(portText)
	c := pgtest.OwnCluster(t, pgcluster.Options{TCPPort: port, Settings: settings})
	ctx, cancel := context.WithTimeout(context.Background(), patient(time.Minute))
	defer cancel()
	db, err := c.CreateDatabase(ctx, "exact")
	if err != nil {
		t.Fatal(err)
	}
	exec1(t, db, rsql.Tickets)
	p := newFaultProxy(t, addr)
	via := strings.Replace(c.TCPURL("exact"), addr, p.Addr(), 1)
	return c, db, via, p
}

// TestStatsCountedAfterListen: notify mode counts the rows only once the
// listener listens. The proxy holds the listener's connection while rows
// are inserted: a count taken at start, before LISTEN, would never see
// them, and the stats would stay short until the next resync.
func TestStatsCountedAfterListen(t *testing.T) {
	_, db, via, p := proxiedCluster(t, nil)
	setup(t, db, "ROWCAST_CAPTURE=notify")
	p.Hold(func(params map[string]string) bool { return params["application_name"] == "rowcast listener" })
	s := startServerAt(t, "", via, "/healthz", "ROWCAST_CAPTURE=notify")
	waitProgress(t, "the listener's connection to reach the proxy", patient(10*time.Second), func() (bool, int64) {
		return p.Held() == 1, 0
	})
	// A rowcast that counts at start has done so by now (it does not
	// wait for the listener); one that waits for LISTEN has not.
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if metric(t, s, "rowcast_stats_recomputations_total") >= 1 {
			break
		}
	}
	exec1(t, db, `INSERT INTO tickets (title, status) VALUES ('a', 'open'), ('b', 'open'), ('c', 'closed')`)
	p.Release()
	s.waitReady(10 * time.Second)
	c := dial(t, s, "")
	waitStats(t, c, db)
}

// TestReplicaIdentityNotFull: logical capture needs the whole old row.
// serve refuses to start on a table that is not REPLICA IDENTITY FULL and
// says what to run; when the table is changed under a running rowcast,
// nothing is lost and nothing leaks: the changes are counted, a user
// whose ticket moves to someone else is told to drop it, a filtered
// client gets the update that takes the row out of its filter, the stats
// stay exact, and 50 updates do not cost 50 recounts.
func TestReplicaIdentityNotFull(t *testing.T) {
	db := newDatabase(t)
	env := []string{"ROWCAST_CAPTURE=logical", "ROWCAST_SLOT=" + slotName(db)}
	setup(t, db, env...)
	exec1(t, db, `ALTER TABLE tickets REPLICA IDENTITY DEFAULT`)
	rc, err := harness.StartRowcast(context.Background(), harness.RowcastConfig{Bin: rowcastBin,
		Env: append([]string{"DATABASE_URL=" + db, "JWT_SECRET=" + testSecret}, env...), ReadyTimeout: patient(30 * time.Second)})
	if err == nil {
		rc.Kill()
		t.Fatal("serve started on a table that is not REPLICA IDENTITY FULL")
	}
	if msg := err.Error(); !strings.Contains(msg, "REPLICA IDENTITY DEFAULT, not FULL") || !strings.Contains(msg, "rowcast setup") {
		t.Fatalf("serve's refusal does not say what is wrong and what to run: %v", err)
	}

	setup(t, db, env...)
	s := startServer(t, db, env...)
	ann := dialClaims(t, s, jwt.MapClaims{"sub": "ann", "email": "ann@example.com", "role": "user"})
	open := dial(t, s, "status=open")
	all := dial(t, s, "")
	all.next(5*time.Second, "stats:updated")
	conn := connectDB(t, db)
	ctx := context.Background()
	var id int64
	if err := conn.QueryRow(ctx, `INSERT INTO tickets (title, status, requester_email) VALUES ('t', 'open', 'ann@example.com') RETURNING id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client{ann, open, all} {
		c.next(10*time.Second, "ticket:created")
	}
	exec1(t, db, `ALTER TABLE tickets REPLICA IDENTITY DEFAULT`)
	before := metric(t, s, "rowcast_stats_recomputations_total")
	start := time.Now()
	for i := 0; i < 50; i++ {
		if _, err := conn.Exec(ctx, `UPDATE tickets SET title = $1 WHERE id = $2`, fmt.Sprint("n", i), id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.Exec(ctx, `UPDATE tickets SET status = 'closed', requester_email = 'bob@example.com' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 51; i++ {
		if m := all.next(10 * time.Second); m.Event != "ticket:updated" {
			t.Fatalf("got %s, want ticket:updated", m.Event)
		}
	}
	elapsed := time.Since(start)
	if m := ann.next(10*time.Second, "ticket:deleted"); !strings.Contains(string(m.Data), fmt.Sprint(id)) || strings.Contains(string(m.Data), "bob") {
		t.Errorf("ann got %s %s, want a delete of ticket %d", m.Event, m.Data, id)
	}
	var last message
	for i := 0; i < 51; i++ {
		last = open.next(10*time.Second, "ticket:updated")
	}
	if ticketOf(t, last)["status"] != "closed" {
		t.Errorf("the filtered client's last update is %s, want the one that closes the ticket", last.Data)
	}
	waitStats(t, all, db)
	if n := metric(t, s, "rowcast_changes_without_old_row_total"); n != 51 {
		t.Errorf("rowcast_changes_without_old_row_total = %v, want 51", n)
	}
	// One recount per 5s at most while the changes come, and one after.
	if n, most := metric(t, s, "rowcast_stats_recomputations_total")-before, 2+float64(elapsed/(5*time.Second)); n > most {
		t.Errorf("%v recounts for 51 updates in %v; at most %v", n, elapsed, most)
	}
}

// TestSynchronousStandby: rowcast never becomes a synchronous standby,
// which would make every commit on the server wait for its replay window
// (minutes). With synchronous_standby_names = '*' serve refuses to
// start; when the setting is reloaded under a running rowcast, it lets
// go at once and the real standby (pg_receivewal --synchronous) serves
// the commit.
func TestSynchronousStandby(t *testing.T) {
	c, db, _, _ := proxiedCluster(t, nil)
	// The test's own statements must not wait for a standby.
	local := db + "&options=-c%20synchronous_commit%3Dlocal"
	env := []string{"ROWCAST_CAPTURE=logical", "ROWCAST_REPLAY_WINDOW_AGE=1h"}
	setup(t, local, env...)
	exec1(t, local, `ALTER SYSTEM SET synchronous_standby_names = '*'`)
	exec1(t, local, `SELECT pg_reload_conf()`)
	rc, err := harness.StartRowcast(context.Background(), harness.RowcastConfig{Bin: rowcastBin,
		Env: append([]string{"DATABASE_URL=" + db, "JWT_SECRET=" + testSecret}, env...), ReadyTimeout: patient(30 * time.Second)})
	if err == nil {
		rc.Kill()
		t.Fatal("serve started with synchronous_standby_names = '*'")
	}
	if !strings.Contains(err.Error(), "synchronous standby") || !strings.Contains(err.Error(), `application_name \"rowcast\"`) {
		t.Fatalf("serve's refusal does not say what is wrong: %v", err)
	}

	exec1(t, local, `ALTER SYSTEM RESET synchronous_standby_names`)
	exec1(t, local, `SELECT pg_reload_conf()`)
	s := startServer(t, db, env...)
	recv, err := harness.Start(exec.Command(filepath.Join(c.BinDir(), "pg_receivewal"), "--synchronous", "--no-loop",
		"-D", t.TempDir(), "-d", c.URL("postgres")), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { recv.Kill() })
	conn := connectDB(t, local)
	ctx := context.Background()
	waitProgress(t, "pg_receivewal to stream", patient(10*time.Second), func() (bool, int64) {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pg_receivewal' AND state = 'streaming'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if recv.Exited() {
			t.Fatalf("pg_receivewal exited: %v\n%s", recv.Err(), recv.Log)
		}
		return n == 1, 0
	})
	exec1(t, local, `ALTER SYSTEM SET synchronous_standby_names = '*'`)
	exec1(t, local, `SELECT pg_reload_conf()`)
	writer := connectDB(t, db)
	wctx, cancel := context.WithTimeout(ctx, patient(10*time.Second))
	defer cancel()
	start := time.Now()
	if _, err := writer.Exec(wctx, `INSERT INTO tickets (title) VALUES ('synchronous')`); err != nil {
		t.Fatalf("a commit waited %v for rowcast as a synchronous standby: %v", time.Since(start), err)
	}
	select {
	case <-s.rc.Done():
	case <-time.After(patient(10 * time.Second)):
		t.Fatal("rowcast keeps streaming as a synchronous standby")
	}
	if !s.log.Contains("synchronous standby") {
		t.Errorf("rowcast's log does not say why it stopped:\n%s", s.log)
	}
}

// TestTimestampStatsAndFilters: a timestamptz stats and filter column is
// counted, sent and matched under one text per value, whatever the
// writers' time zones: the stats equal a fresh GROUP BY (they used to
// count "2026-01-02 03:04:05+00" at start and "2026-01-02T03:04:05Z" or
// "...T04:04:05+01:00" in changes), and a snapshot filtered on a value
// returns what the live filter matches. An empty filter value matches
// NULL in the snapshot as it does live.
func TestTimestampStatsAndFilters(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		db := newDatabase(t)
		exec1(t, db, `ALTER TABLE tickets ADD COLUMN due_at timestamptz`)
		env := []string{"ROWCAST_CAPTURE=" + mode, "ROWCAST_SLOT=" + slotName(db),
			"ROWCAST_STATS_COLUMNS=status,due_at", "ROWCAST_FILTER_COLUMNS=status,assignee_email,due_at"}
		setup(t, db, env...)
		exec1(t, db, `INSERT INTO tickets (title, due_at) VALUES ('before start', '2026-01-02 03:04:05+00'), ('no due date', NULL)`)
		s := startServer(t, db, env...)
		c := dial(t, s, "")
		due := dial(t, s, "due_at=2026-01-02T03:04:05Z")
		unassigned := dial(t, s, "assignee_email=")
		c.next(5*time.Second, "stats:updated")
		ctx := context.Background()
		writer := func(tz string) *pgx.Conn {
			conn := connectDB(t, db)
			if _, err := conn.Exec(ctx, `SELECT set_config('TimeZone', $1, false)`, tz); err != nil {
				t.Fatal(err)
			}
			return conn
		}
		ny, kolkata := writer("America/New_York"), writer("Asia/Kolkata")
		var id int64
		if err := ny.QueryRow(ctx, `INSERT INTO tickets (title, due_at) VALUES ('ny', '2026-01-02 03:04:05+00') RETURNING id`).Scan(&id); err != nil {
			t.Fatal(err)
		}
		if _, err := kolkata.Exec(ctx, `UPDATE tickets SET due_at = '2026-03-04 05:06:07.5+00' WHERE title = 'before start'`); err != nil {
			t.Fatal(err)
		}
		if _, err := ny.Exec(ctx, `DELETE FROM tickets WHERE title = 'before start'`); err != nil {
			t.Fatal(err)
		}
		if _, err := kolkata.Exec(ctx, `INSERT INTO tickets (title, assignee_email) VALUES ('unassigned', NULL)`); err != nil {
			t.Fatal(err)
		}
		if m := due.next(10*time.Second, "ticket:created"); ticketOf(t, m)["due_at"] != "2026-01-02T03:04:05Z" {
			t.Errorf("the due_at filter got %s", m.Data)
		}

		// The stats: one key per instant, as clients see the values.
		want := map[string]any{}
		rows, err := connectDB(t, db).Query(ctx, `SELECT due_at FROM tickets`)
		if err != nil {
			t.Fatal(err)
		}
		var total float64
		for rows.Next() {
			var at *time.Time
			if err := rows.Scan(&at); err != nil {
				t.Fatal(err)
			}
			k := ""
			if at != nil {
				k = at.UTC().Format("2006-01-02T15:04:05.999999Z07:00")
			}
			n, _ := want[k].(float64)
			want[k] = n + 1
			total++
		}
		waitProgress(t, "stats by due_at", patient(10*time.Second), func() (bool, int64) {
			m := c.next(10*time.Second, "stats:updated")
			var d struct {
				Stats struct {
					Total   float64        `json:"total"`
					ByDueAt map[string]any `json:"byDueAt"`
				} `json:"stats"`
			}
			json.Unmarshal(m.Data, &d)
			return d.Stats.Total == total && reflect.DeepEqual(d.Stats.ByDueAt, want), 0
		})

		// Snapshots filter as the live filters do.
		snapshot := func(query string) []string {
			status, body := httpGet(t, s.base+"/api/snapshot?"+query, http.Header{"Authorization": {"Bearer " + token(t, nil)}})
			if status != 200 {
				t.Fatalf("snapshot ?%s: %d %s", query, status, body)
			}
			var snap struct {
				Tickets []map[string]any `json:"tickets"`
			}
			json.Unmarshal(body, &snap)
			var titles []string
			for _, tk := range snap.Tickets {
				titles = append(titles, fmt.Sprint(tk["title"]))
			}
			sort.Strings(titles)
			return titles
		}
		if got := snapshot("due_at=2026-01-02T03:04:05Z"); strings.Join(got, ",") != "ny" {
			t.Errorf("snapshot filtered on due_at: %v, want [ny]", got)
		}
		if got := snapshot("assignee_email="); strings.Join(got, ",") != "no due date,ny,unassigned" {
			t.Errorf("snapshot filtered on an empty assignee: %v, want every unassigned ticket", got)
		}
		if m := unassigned.next(10*time.Second, "ticket:created"); ticketOf(t, m)["title"] != "ny" {
			t.Errorf("the live empty-assignee filter got %s first", m.Data)
		}
	})
}

// switchWAL moves the server's WAL position on by a few segments, so that
// it is well past another cluster's.
func switchWAL(t *testing.T, db string, segments int) {
	t.Helper()
	for i := 0; i < segments; i++ {
		exec1(t, db, `CREATE TEMP TABLE IF NOT EXISTS wal_filler (x int); INSERT INTO wal_filler VALUES (1); SELECT pg_switch_wal()`)
	}
}

// TestHistoryChangeResyncs: when the address rowcast streams from leads
// to another server (a failover to a standby of another history, a
// restore into a new cluster), whose WAL positions are below those rowcast
// handed out, clients are told to resync and the new server's changes
// arrive. They used to be dropped as already sent, silently, until the
// new server's WAL passed the old one's; and a client's cursor from the
// old server resumed as if it were valid.
func TestHistoryChangeResyncs(t *testing.T) {
	_, dbA, via, p := proxiedCluster(t, nil)
	clusterB, dbB, _, _ := proxiedCluster(t, nil)
	env := []string{"ROWCAST_CAPTURE=logical"}
	setup(t, dbA, env...)
	setup(t, dbB, env...)
	switchWAL(t, dbA, 4)
	s := startServer(t, via, env...)
	c := dial(t, s, "")
	c.next(5*time.Second, "stats:updated")
	exec1(t, dbA, `INSERT INTO tickets (title) VALUES ('on A')`)
	onA := c.next(10*time.Second, "ticket:created")

	u, err := url.Parse(clusterB.TCPURL("exact"))
	if err != nil {
		t.Fatal(err)
	}
	p.SetTarget(u.Host)
	p.Cut()
	s.waitReady(10 * time.Second)
	if m := c.next(10*time.Second, "resync"); !strings.Contains(string(m.Data), "history") {
		t.Errorf("resync %s does not say why", m.Data)
	}
	exec1(t, dbB, `INSERT INTO tickets (title) VALUES ('on B')`)
	if m := c.next(10*time.Second, "ticket:created"); ticketOf(t, m)["title"] != "on B" {
		t.Fatalf("got %s, want the insert on B", m.Data)
	}
	waitStats(t, c, dbB)
	// A cursor from A means nothing on B.
	late := dial(t, s, "lastEventId="+onA.ID)
	if m := late.next(10 * time.Second); m.Event != "resync" {
		t.Fatalf("a client resuming from A's %s got %s %s, want resync", onA.ID, m.Event, m.Data)
	}
}

// TestWALRewindResyncs: the database is put back to a file-level copy
// taken earlier (same system, same timeline: a snapshot restored without
// recovery), so its WAL positions go back below what rowcast already
// sent. Clients resync and the changes written after the restore arrive;
// they used to be dropped as already sent.
func TestWALRewindResyncs(t *testing.T) {
	cl, db, _, _ := proxiedCluster(t, nil)
	env := []string{"ROWCAST_CAPTURE=logical"}
	setup(t, db, env...)
	s := startServer(t, db, env...)
	c := dial(t, s, "")
	c.next(5*time.Second, "stats:updated")
	ctx := context.Background()
	exec1(t, db, `INSERT INTO tickets (title) VALUES ('before the copy')`)
	c.next(10*time.Second, "ticket:created")

	snapshot := cl.DataDir() + ".copy"
	if err := cl.Stop(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", cl.DataDir(), snapshot).CombinedOutput(); err != nil {
		t.Fatalf("copy the data directory: %v\n%s", err, out)
	}
	if err := cl.StartAgain(ctx); err != nil {
		t.Fatal(err)
	}
	switchWAL(t, db, 3)
	exec1(t, db, `INSERT INTO tickets (title) VALUES ('after the copy, then lost')`)
	c.next(patient(10*time.Second), "ticket:created")

	if err := cl.Stop(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(cl.DataDir()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(snapshot, cl.DataDir()); err != nil {
		t.Fatal(err)
	}
	if err := cl.StartAgain(ctx); err != nil {
		t.Fatal(err)
	}
	s.waitReady(10 * time.Second)
	if m := c.next(10*time.Second, "resync"); !strings.Contains(string(m.Data), "history") {
		t.Errorf("resync %s does not say why", m.Data)
	}
	exec1(t, db, `INSERT INTO tickets (title) VALUES ('after the restore')`)
	// The slot sends again what the restored copy holds after its
	// confirmed position (the first insert): a new stream after a resync.
	for {
		m := c.next(10*time.Second, "ticket:created")
		if title := ticketOf(t, m)["title"]; title == "after the restore" {
			break
		} else if title != "before the copy" {
			t.Fatalf("got %s, want the insert after the restore", m.Data)
		}
	}
	waitStats(t, c, db)
}

// TestResumeRightAfterRestart: a dashboard that loads a snapshot from a
// rowcast started a moment ago, before capture streams, waits for capture
// instead of getting a snapshot without a cursor (the changes between its
// rows and its connection would be missed), and a client resuming then
// (told to retry in a moment while capture starts) gets what it missed,
// not a resync. The proxy holds the new replication connection meanwhile.
func TestResumeRightAfterRestart(t *testing.T) {
	_, db, via, p := proxiedCluster(t, nil)
	env := []string{"ROWCAST_CAPTURE=logical"}
	setup(t, db, env...)
	s := startServer(t, via, env...)
	c := dial(t, s, "")
	c.next(5*time.Second, "stats:updated")
	exec1(t, db, `INSERT INTO tickets (title) VALUES ('one'), ('two')`)
	c.next(10*time.Second, "ticket:created")
	last := c.next(10*time.Second, "ticket:created")
	s.stop(syscall.SIGKILL)

	p.Hold(func(params map[string]string) bool { return params["replication"] == "database" })
	s = startServerAt(t, s.addr, via, "/healthz", env...)
	exec1(t, db, `INSERT INTO tickets (title) VALUES ('three')`)
	snap := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest("GET", s.base+"/api/snapshot", nil)
		req.Header.Set("Authorization", "Bearer "+token(t, nil))
		var doc struct {
			LastEventID string `json:"lastEventId"`
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			json.NewDecoder(resp.Body).Decode(&doc)
			resp.Body.Close()
		}
		snap <- doc.LastEventID
	}()
	waitProgress(t, "the replication connection to reach the proxy", patient(10*time.Second), func() (bool, int64) {
		return p.Held() == 1, 0
	})
	p.Release()
	if cursor := <-snap; cursor == "" {
		t.Errorf("a snapshot loaded while capture started has no cursor")
	}
	var r *client
	for deadline := time.Now().Add(patient(10 * time.Second)); r == nil; {
		conn, resp, err := dialRaw(s, "lastEventId="+url.QueryEscape(last.ID), http.Header{"Authorization": {"Bearer " + token(t, nil)}})
		switch {
		case err == nil:
			conn.Close()
			r = dial(t, s, "lastEventId="+url.QueryEscape(last.ID))
		case resp != nil && resp.StatusCode == http.StatusServiceUnavailable && time.Now().Before(deadline):
			time.Sleep(100 * time.Millisecond) // Retry-After, in short
		default:
			t.Fatalf("resume: %v", err)
		}
	}
	if m := r.next(10 * time.Second); m.Event != "ticket:created" || ticketOf(t, m)["title"] != "three" {
		t.Fatalf("the resumed client got %s %s, want the change made while rowcast was down", m.Event, m.Data)
	}
}

// TestStatsAcrossXidWraparound: the stats stay exact when the count is
// taken just before the 32-bit transaction id wraps and the changes come
// after (logical replication sends 32-bit xids; notify 64-bit ones).
// pg_resetwal puts the cluster's next transaction id 2,000 short of 2^32.
func TestStatsAcrossXidWraparound(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		c := pgtest.OwnCluster(t, pgcluster.Options{})
		ctx := context.Background()
		// Every row must be frozen, or a jump of 2^32 - 2000 xids would
		// put the xids that wrote it in the future (the catalogs too).
		for _, db := range []string{"postgres", "template1"} {
			exec1(t, c.URL(db), `VACUUM FREEZE`)
		}
		if err := c.Stop(ctx, "fast"); err != nil {
			t.Fatal(err)
		}
		const next = 1<<32 - 2000
		// The commit log segment of the new xid must exist (see
		// pg_resetwal's documentation): 32 pages of 8 KB, 4 xids a byte.
		seg := filepath.Join(c.DataDir(), "pg_xact", fmt.Sprintf("%04X", next/(8192*4*32)))
		if err := os.WriteFile(seg, make([]byte, 8192*32), 0o600); err != nil {
			t.Fatal(err)
		}
		uid, gid, err := c.DataOwner()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(seg, uid, gid); err != nil {
			t.Fatal(err)
		}
		if out, err := c.RunTool(ctx, "pg_resetwal", "-x", fmt.Sprint(next), "-u", fmt.Sprint(next), "-D", c.DataDir()); err != nil {
			t.Fatalf("pg_resetwal: %v\n%s", err, out)
		}
		if err := c.StartAgain(ctx); err != nil {
			t.Fatal(err)
		}
		db, err := c.CreateDatabase(ctx, "wrap")
		if err != nil {
			t.Fatal(err)
		}
		exec1(t, db, rsql.Tickets)
		exec1(t, db, `CREATE PROCEDURE burn(n int) LANGUAGE plpgsql AS $$
			BEGIN FOR i IN 1..n LOOP PERFORM txid_current(); COMMIT; END LOOP; END $$`)
		env := []string{"ROWCAST_CAPTURE=" + mode}
		setup(t, db, env...)
		s := startServer(t, db, env...)
		cl := dial(t, s, "")
		conn := connectDB(t, db)
		xid := func() uint64 {
			var x uint64
			if err := conn.QueryRow(ctx, `SELECT txid_current()`).Scan(&x); err != nil {
				t.Fatal(err)
			}
			return x
		}
		exec1(t, db, `INSERT INTO tickets (title, status) VALUES ('a', 'open'), ('b', 'open'), ('c', 'closed')`)
		waitStats(t, cl, db)
		if x := xid(); x >= 1<<32 {
			t.Fatalf("xid %d: the count should come before the wraparound", x)
		}
		exec1(t, db, `CALL burn(2500)`)
		if x := xid(); x < 1<<32 {
			t.Fatalf("xid %d: the changes should come after the wraparound", x)
		}
		exec1(t, db, `INSERT INTO tickets (title, status) VALUES ('d', 'open')`)
		exec1(t, db, `UPDATE tickets SET status = 'closed' WHERE title = 'a'`)
		exec1(t, db, `DELETE FROM tickets WHERE title = 'b'`)
		waitStats(t, cl, db)
	})
}

// TestBlackHoleDetected: when the network between rowcast and PostgreSQL
// silently drops everything and does not recover (a lost NAT entry, a
// dead link), capture notices within a bound and says so
// (rowcast_capture_connected 0, /readyz 503) instead of listening to
// nothing for ever; once the network is back it reconnects, and a client
// gets the change made meanwhile (logical) or a resync (notify).
func TestBlackHoleDetected(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		_, db, via, p := proxiedCluster(t, nil)
		env := []string{"ROWCAST_CAPTURE=" + mode}
		setup(t, db, env...)
		s := startServer(t, via, env...)
		c := dial(t, s, "")
		c.next(5*time.Second, "stats:updated")
		p.Blackhole()
		start := time.Now()
		for deadline := start.Add(patient(time.Minute)); metric(t, s, "rowcast_capture_connected") != 0; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("capture still says it is connected %v into a black hole", time.Since(start).Round(time.Second))
			}
		}
		t.Logf("%s capture noticed the black hole after %v", mode, time.Since(start).Round(time.Second))
		exec1(t, db, `INSERT INTO tickets (title) VALUES ('during the black hole')`)
		p.CutAndHeal()
		s.waitReady(30 * time.Second)
		want := "ticket:created"
		if mode == "notify" {
			want = "resync"
		}
		c.next(30*time.Second, want)
	})
}

// TestSnapshotCursorAfterTruncate: after a TRUNCATE the snapshot still
// carries a cursor (it had none, so a client that refetched as told and
// connected without an id missed the changes made in between), and a
// client connecting with it gets exactly the change made after its
// snapshot, not a resync.
func TestSnapshotCursorAfterTruncate(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		db, s := startMode(t, mode)
		c := dial(t, s, "")
		c.next(5*time.Second, "stats:updated")
		exec1(t, db, `INSERT INTO tickets (title) VALUES ('before')`)
		c.next(10*time.Second, "ticket:created")
		exec1(t, db, `TRUNCATE tickets`)
		if m := c.next(10*time.Second, "resync"); !strings.Contains(string(m.Data), "truncate") {
			t.Fatalf("resync after TRUNCATE: %s", m.Data)
		}

		status, body := httpGet(t, s.base+"/api/snapshot", http.Header{"Authorization": {"Bearer " + token(t, nil)}})
		var snap struct {
			Tickets     []json.RawMessage `json:"tickets"`
			LastEventID string            `json:"lastEventId"`
		}
		if status != http.StatusOK || json.Unmarshal(body, &snap) != nil {
			t.Fatalf("snapshot: %d %s", status, body)
		}
		if len(snap.Tickets) != 0 || snap.LastEventID == "" {
			t.Fatalf("snapshot after TRUNCATE: %d tickets, lastEventId %q; want none and a cursor", len(snap.Tickets), snap.LastEventID)
		}

		exec1(t, db, `INSERT INTO tickets (title) VALUES ('after')`)
		r := dial(t, s, "lastEventId="+url.QueryEscape(snap.LastEventID))
		m := r.next(10*time.Second, "ticket:created", "resync")
		if m.Event != "ticket:created" || ticketOf(t, m)["title"] != "after" {
			t.Fatalf("a client resuming from the snapshot's cursor got %s %s, want the insert made after it", m.Event, m.Data)
		}
		r.expectNone(300 * time.Millisecond)
	})
}
