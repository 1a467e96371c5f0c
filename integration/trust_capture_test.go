package integration

// The capture side of the trust boundary, attacked from outside: real
// PostgreSQL, the real rowcast binary, real WebSocket clients, and roles
// without privileges where the attack is "any role".

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"
)

// trustRole creates a role with attrs (e.g. "LOGIN", "LOGIN REPLICATION")
// and no grant at all, and drops it (with what it was granted in db) when
// the test ends. Roles are cluster-wide, so the name is random.
func trustRole(t *testing.T, db, prefix, attrs string) string {
	t.Helper()
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	role := prefix + "_" + hex.EncodeToString(b)
	exec1(t, db, "CREATE ROLE "+role+" "+attrs)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, db)
		if err != nil {
			t.Logf("dropping role %s: %v", role, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP OWNED BY "+role+"; DROP ROLE "+role); err != nil {
			t.Logf("dropping role %s: %v", role, err)
		}
	})
	return role
}

// asRole returns db's URL with another user.
func asRole(t *testing.T, db, role string) string {
	t.Helper()
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	return u.String()
}

// until returns every message other than stats:updated up to and
// including the first event named last.
func (c *client) until(timeout time.Duration, last string) []message {
	c.t.Helper()
	var out []message
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-c.msgs:
			if !ok {
				c.t.Fatalf("connection closed while waiting for %s (got %v): %v", last, events(out), <-c.closed)
			}
			if m.Event == "stats:updated" {
				continue
			}
			out = append(out, m)
			if m.Event == last {
				return out
			}
		case <-deadline:
			c.t.Fatalf("no %s within %v (got %v)", last, timeout, events(out))
		}
	}
}

func events(ms []message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Event
	}
	return out
}

// execAs runs sql on conn and returns the error.
func execAs(conn *pgx.Conn, sql string, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := conn.Exec(ctx, sql, args...)
	return err
}

const usersDDL = `CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL, role text NOT NULL DEFAULT 'member', password_hash text)`

// TestTrustTwoInstancesOneDatabase: two rowcast instances on two tables of
// one database never see each other's rows. Setting up the second on the
// first's publication is refused; with publications of their own, writes
// to either table reach only that table's clients, and tearing one down
// leaves the other working.
func TestTrustTwoInstancesOneDatabase(t *testing.T) {
	db := newDatabase(t)
	exec1(t, db, usersDDL)
	tickets := []string{"ROWCAST_CAPTURE=logical", "ROWCAST_SLOT=" + slotName(db)}
	users := []string{"ROWCAST_CAPTURE=logical", "ROWCAST_TABLE=public.users", "ROWCAST_STATS_COLUMNS=role"}
	setup(t, db, tickets...)

	// The default publication is the tickets instance's: refused, with
	// what to set instead, and nothing changed.
	out, err := runRowcast(t, append([]string{"DATABASE_URL=" + db}, append(users, "ROWCAST_SLOT="+slotName(db)+"_users")...), "setup")
	if err == nil || !strings.Contains(out, "also publishes") || !strings.Contains(out, "ROWCAST_PUBLICATION") {
		t.Fatalf("setup of users on the tickets publication: %v\n%s", err, out)
	}
	users = append(users, "ROWCAST_PUBLICATION=rowcast_users", "ROWCAST_SLOT="+slotName(db)+"_users")
	setup(t, db, users...)

	st := startServer(t, db, tickets...)
	su := startServer(t, db, users...)
	ct, cu := dial(t, st, ""), dial(t, su, "")
	ct.next(10*time.Second, "stats:updated")
	cu.next(10*time.Second, "stats:updated")

	conn := connectDB(t, db)
	for _, sql := range []string{
		`INSERT INTO users (email, password_hash) VALUES ('ann@example.com', 'pbkdf2$leaked-hash')`,
		`INSERT INTO tickets (title) VALUES ('first ticket')`,
		`UPDATE users SET role = 'admin', password_hash = 'pbkdf2$other-hash'`,
		`DELETE FROM users`,
		`TRUNCATE users`,
		`INSERT INTO users (email) VALUES ('marker@example.com')`,
		`INSERT INTO tickets (title) VALUES ('marker')`,
	} {
		if err := execAs(conn, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	got := ct.until(20*time.Second, "ticket:created")
	got = append(got, ct.until(20*time.Second, "ticket:created")...)
	if e := strings.Join(events(got), " "); e != "ticket:created ticket:created" {
		t.Errorf("tickets client got %s, want two ticket:created and nothing else", e)
	}
	for _, m := range got {
		if strings.Contains(string(m.Data), "hash") || strings.Contains(string(m.Data), "example.com") {
			t.Errorf("tickets client got a users row: %s %s", m.Event, m.Data)
		}
	}
	var ue []message
	for len(ue) == 0 || !strings.Contains(string(ue[len(ue)-1].Data), "marker@") {
		ue = append(ue, cu.until(20*time.Second, "user:created")...)
	}
	if e := strings.Join(events(ue), " "); e != "user:created user:updated user:deleted resync user:created" {
		t.Errorf("users client got %s", e)
	}
	for _, m := range ue {
		if strings.Contains(string(m.Data), "ticket") {
			t.Errorf("users client got a ticket: %s %s", m.Event, m.Data)
		}
	}
	for _, s := range []*server{st, su} {
		if n := metric(t, s, `rowcast_changes_ignored_total{reason="other_table"}`); n != 0 {
			t.Errorf("%s: other_table = %v; a publication of its own sends nothing else", s.addr, n)
		}
	}

	// Tearing down the users instance leaves the tickets instance, and its
	// events from SQL, working.
	if err := su.stop(os.Interrupt); err != nil {
		t.Fatalf("stop users instance: %v", err)
	}
	out, err = runRowcast(t, append([]string{"DATABASE_URL=" + db}, users...), "teardown", "--yes")
	if err != nil || !strings.Contains(out, "schema rowcast kept") {
		t.Fatalf("teardown of the users instance: %v\n%s", err, out)
	}
	if err := execAs(conn, `SELECT rowcast.broadcast('notification', '{"after": "teardown"}')`); err != nil {
		t.Fatal(err)
	}
	if m := ct.next(20 * time.Second); m.Event != "notification" {
		t.Errorf("after the other teardown: %s %s, want notification", m.Event, m.Data)
	}
}

// TestTrustExtendedPublication: an admin adds another table to rowcast's
// publication. rowcast filters in the replication loop: that table's
// rows, truncates and stats never reach clients, nobody resyncs, and the
// drops are counted. Teardown then keeps the admin's table in the
// publication and removes only rowcast's.
func TestTrustExtendedPublication(t *testing.T) {
	db, s := startMode(t, "logical")
	exec1(t, db, usersDDL)
	exec1(t, db, `ALTER PUBLICATION rowcast ADD TABLE users`)
	c := dial(t, s, "")
	c.next(10*time.Second, "stats:updated")
	conn := connectDB(t, db)
	for _, sql := range []string{
		`INSERT INTO users (email, password_hash) VALUES ('ann@example.com', 'pbkdf2$leaked-hash')`,
		`UPDATE users SET password_hash = 'pbkdf2$other-hash'`,
		`TRUNCATE users`,
		`INSERT INTO tickets (title, status) VALUES ('marker', 'open')`,
	} {
		if err := execAs(conn, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	got := c.until(20*time.Second, "ticket:created")
	if len(got) != 1 || strings.Contains(string(got[0].Data), "hash") || !strings.Contains(string(got[0].Data), "marker") {
		t.Fatalf("client got %v (%s), want only the marker ticket", events(got), got[len(got)-1].Data)
	}
	if n := metric(t, s, `rowcast_changes_ignored_total{reason="other_table"}`); n != 3 {
		t.Errorf("other_table = %v, want 3 (insert, update, truncate of users)", n)
	}
	if n := metric(t, s, `rowcast_changes_captured_total{op="insert",table="users"}`); n != 0 {
		t.Errorf("users inserts captured: %v", n)
	}
	// Stats count tickets only: one ticket, whatever users holds.
	exec1(t, db, `INSERT INTO users (email) VALUES ('b@example.com'), ('c@example.com')`)
	exec1(t, db, `INSERT INTO tickets (title, status) VALUES ('second', 'open')`)
	c.until(20*time.Second, "ticket:created")
	for {
		m := c.next(20*time.Second, "stats:updated")
		var d struct {
			Stats struct {
				Total int `json:"total"`
			} `json:"stats"`
		}
		if err := json.Unmarshal(m.Data, &d); err != nil {
			t.Fatal(err)
		}
		if d.Stats.Total == 2 {
			break
		}
		if d.Stats.Total > 2 {
			t.Fatalf("stats total %d: users rows counted (%s)", d.Stats.Total, m.Data)
		}
	}

	if err := s.stop(os.Interrupt); err != nil {
		t.Fatalf("stop: %v", err)
	}
	out, err := runRowcast(t, []string{"DATABASE_URL=" + db, "ROWCAST_SLOT=" + slotName(db)}, "teardown", "--yes")
	if err != nil || !strings.Contains(out, `publication "rowcast" kept`) {
		t.Fatalf("teardown: %v\n%s", err, out)
	}
	var tables string
	if err := connectDB(t, db).QueryRow(context.Background(),
		`SELECT string_agg(schemaname || '.' || tablename, ',') FROM pg_publication_tables WHERE pubname = 'rowcast'`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != "public.users" {
		t.Errorf("publication rowcast after teardown holds %q, want public.users", tables)
	}
}

// TestTrustForgedEventsLogical: a role with no grant can neither forge an
// event with pg_logical_emit_message (ignored and counted; a client whose
// visibility is "none" gets nothing) nor call rowcast.broadcast() or
// write rowcast.outbox; a role granted EXECUTE can, within the names
// rowcast allows.
func TestTrustForgedEventsLogical(t *testing.T) {
	db, s := startMode(t, "logical")
	evil := trustRole(t, db, "evil", "LOGIN")
	writer := trustRole(t, db, "app_writer", "LOGIN")
	exec1(t, db, "GRANT USAGE ON SCHEMA rowcast TO "+writer+"; GRANT EXECUTE ON FUNCTION rowcast.broadcast(text, jsonb) TO "+writer)
	agent := dial(t, s, "")
	viewer := dialClaims(t, s, jwt.MapClaims{"sub": "v1", "role": "viewer"})
	owner := connectDB(t, db)
	// Both clients are subscribed once this reaches them.
	if err := execAs(owner, `SELECT rowcast.broadcast('hello', '{}')`); err != nil {
		t.Fatal(err)
	}
	agent.until(20*time.Second, "hello")
	viewer.until(20*time.Second, "hello")

	ev := connectDB(t, asRole(t, db, evil))
	for _, forged := range []string{
		`SELECT pg_logical_emit_message(true, 'rowcast', '{"event":"ticket:deleted","payload":{"ticketId":1}}')`,
		`SELECT pg_logical_emit_message(false, 'rowcast', '{"event":"notification","payload":{"type":"error","message":"forged"}}')`,
	} {
		if err := execAs(ev, forged); err != nil {
			t.Fatalf("%s: %v", forged, err)
		}
	}
	for _, denied := range []string{
		`SELECT rowcast.broadcast('notification', '{"message":"forged"}')`,
		`INSERT INTO rowcast.outbox (event, payload) VALUES ('notification', '{}')`,
	} {
		if err := execAs(ev, denied); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("%s as a role without grants: %v, want permission denied", denied, err)
		}
	}
	// Usage of the schema alone is not enough.
	exec1(t, db, "GRANT USAGE ON SCHEMA rowcast TO "+evil)
	for _, denied := range []string{
		`SELECT rowcast.broadcast('notification', '{"message":"forged"}')`,
		`INSERT INTO rowcast.outbox (event, payload) VALUES ('notification', '{}')`,
	} {
		if err := execAs(ev, denied); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("%s with schema usage only: %v, want permission denied", denied, err)
		}
	}

	wr := connectDB(t, asRole(t, db, writer))
	for name, want := range map[string]string{"ticket:deleted": "reserved", "resync": "reserved", "stats:updated": "reserved",
		"bad name": "not allowed", "": "not allowed", strings.Repeat("n", 65): "not allowed"} {
		if err := execAs(wr, `SELECT rowcast.broadcast($1, '{}')`, name); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("broadcast(%q) by a granted role: %v, want %q", name, err, want)
		}
	}
	if err := execAs(owner, `INSERT INTO tickets (title, requester_email) VALUES ('real', 'someone@example.com')`); err != nil {
		t.Fatal(err)
	}
	if err := execAs(wr, `SELECT rowcast.broadcast('notification', '{"type":"success","message":"granted"}')`); err != nil {
		t.Fatalf("broadcast by a granted role: %v", err)
	}
	if e := strings.Join(events(agent.until(20*time.Second, "notification")), " "); e != "ticket:created notification" {
		t.Errorf("agent got %s, want ticket:created notification", e)
	}
	got := viewer.until(20*time.Second, "notification")
	if e := strings.Join(events(got), " "); e != "notification" || !strings.Contains(string(got[0].Data), "granted") {
		t.Errorf("viewer (visibility none) got %s %s, want only the granted notification", e, got[len(got)-1].Data)
	}
	if n := metric(t, s, `rowcast_changes_ignored_total{reason="logical_message"}`); n != 2 {
		t.Errorf("logical_message = %v, want 2", n)
	}
}

// TestTrustNotifyJunk: junk NOTIFYs of many kinds from a role without
// privileges are dropped and counted; the listener keeps its connection,
// nobody resyncs, and the real change written right after them arrives.
func TestTrustNotifyJunk(t *testing.T) {
	db, s := startMode(t, "notify")
	c := dial(t, s, "")
	c.next(10*time.Second, "stats:updated")
	owner := connectDB(t, db)
	ctx := context.Background()
	listenerPID := func() int {
		var pid int
		if err := owner.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name = 'rowcast listener' AND datname = current_database()`).Scan(&pid); err != nil {
			t.Fatalf("listener backend: %v", err)
		}
		return pid
	}
	before := listenerPID()

	evil := connectDB(t, asRole(t, db, trustRole(t, db, "evil", "LOGIN")))
	junk := map[string][]string{
		"malformed": {
			`not json`, `{}`, `{"op":"frobnicate"}`, `[1,2,3]`,
			`{"op":"insert","table":"public.tickets","key":{"id":1},"row":null}`,
			`{"op":"insert","table":"public.tickets","xid":"x"}`,
			`{"op":"insert","table":"public.tickets","xid":5,"key":{"nope":1},"row":null}`,
			`{"op":"delete","table":"public.tickets","xid":5,"key":{"id":null}}`,
			`{"op":"insert","table":"public.tickets","xid":5,"key":{"id":1},"row":"x"}`,
			// rowcast never reads a row back by its key: a change
			// without its row is not one the trigger sends.
			`{"op":"insert","table":"public.tickets","xid":5,"key":{"id":"abc"},"row":null}`,
			`{"op":"update","table":"public.tickets","xid":5,"key":{"id":"99999999999999999999999"},"row":null}`,
			// Parts that never make a payload.
			`{"op":"part","xid":5,"seq":1,"part":1,"parts":2,"data":"e30="}`,
			`{"op":"part","xid":5,"seq":1,"part":0,"parts":1,"data":"!"}`,
		},
		"other_table": {
			`{"op":"insert","table":"public.users","xid":5,"key":{"id":1},"row":{"id":1,"password_hash":"x"}}`,
			`{"op":"delete","table":"evil.tickets","xid":5,"key":{"id":1}}`,
		},
		"bad_event_name": {
			`{"op":"message","xid":5,"event":"bad name!","payload":{}}`,
			`{"op":"message","xid":5,"event":"","payload":{}}`,
		},
		"unverified_truncate": {
			`{"op":"truncate","table":"public.tickets","xid":5}`,
		},
	}
	// Repeated: what used to reconnect the listener and resync everyone
	// once per NOTIFY must not add up to anything.
	for round := 0; round < 3; round++ {
		for _, payloads := range junk {
			for _, p := range payloads {
				if err := execAs(evil, `SELECT pg_notify('rowcast', $1)`, p); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if err := execAs(owner, `INSERT INTO tickets (title) VALUES ('real after junk')`); err != nil {
		t.Fatal(err)
	}
	if err := execAs(owner, `SELECT rowcast.broadcast('done', '{}')`); err != nil {
		t.Fatal(err)
	}
	got := c.until(20*time.Second, "done")
	if e := strings.Join(events(got), " "); e != "ticket:created done" || !strings.Contains(string(got[0].Data), "real after junk") {
		t.Fatalf("client got %s (%s), want exactly the real ticket:created, then done", e, got[0].Data)
	}
	if after := listenerPID(); after != before {
		t.Errorf("listener backend changed from %d to %d: it reconnected", before, after)
	}
	if n := metric(t, s, "rowcast_capture_reconnects_total"); n != 0 {
		t.Errorf("reconnects = %v", n)
	}
	for reason, payloads := range junk {
		series := `rowcast_notify_rejected_total{reason="` + reason + `"}`
		if n := metric(t, s, series); n != float64(3*len(payloads)) {
			t.Errorf("%s = %v, want %d", series, n, 3*len(payloads))
		}
	}
}

// TestTrustLeastPrivilege: serve runs as a role with only what it needs
// (logical: REPLICATION and SELECT on the table; notify: SELECT), after
// setup ran as a superuser. Changes and granted events arrive, the
// database poll works, an ungranted role's rowcast.broadcast() is denied.
func TestTrustLeastPrivilege(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		db := newDatabase(t)
		env := []string{"ROWCAST_CAPTURE=" + mode, "ROWCAST_SLOT=" + slotName(db)}
		setup(t, db, env...)
		attrs := "LOGIN"
		if mode == "logical" {
			attrs = "LOGIN REPLICATION"
		}
		serveRole := trustRole(t, db, "rowcast_serve", attrs)
		exec1(t, db, "GRANT SELECT ON tickets TO "+serveRole)
		writer := trustRole(t, db, "app_writer", "LOGIN")
		exec1(t, db, "GRANT USAGE ON SCHEMA rowcast TO "+writer+"; GRANT EXECUTE ON FUNCTION rowcast.broadcast(text, jsonb) TO "+writer)
		other := trustRole(t, db, "app_other", "LOGIN")
		exec1(t, db, "GRANT USAGE ON SCHEMA rowcast TO "+other)

		s := startServer(t, asRole(t, db, serveRole), env...)
		c := dial(t, s, "")
		c.next(10*time.Second, "stats:updated")
		if err := execAs(connectDB(t, db), `INSERT INTO tickets (title) VALUES ('as the table owner')`); err != nil {
			t.Fatal(err)
		}
		if err := execAs(connectDB(t, asRole(t, db, writer)), `SELECT rowcast.broadcast('notification', '{"from":"writer"}')`); err != nil {
			t.Fatalf("broadcast by the granted role: %v", err)
		}
		err := execAs(connectDB(t, asRole(t, db, other)), `SELECT rowcast.broadcast('notification', '{"from":"other"}')`)
		if err == nil || !strings.Contains(err.Error(), "permission denied for function broadcast") {
			t.Errorf("broadcast by an ungranted role: %v, want permission denied", err)
		}
		if e := strings.Join(events(c.until(20*time.Second, "notification")), " "); e != "ticket:created notification" {
			t.Errorf("got %s, want ticket:created notification", e)
		}
		// The database poll (slot or NOTIFY queue) works for this role.
		series := "rowcast_notify_queue_usage_ratio "
		if mode == "logical" {
			series = "rowcast_replication_slot_active 1"
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, body := httpGet(t, s.base+"/metrics", nil)
			if strings.Contains(string(body), "\n"+series) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %q in /metrics within 30s", series)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if n := metric(t, s, "rowcast_db_poll_errors_total"); n != 0 {
			t.Errorf("db poll errors = %v", n)
		}
		if strings.Contains(s.log.String(), "permission denied") {
			t.Errorf("serve hit a missing privilege:\n%s", s.log.String())
		}
	})
}

// TestTrustUpgrade: an installation made by the previous setup (logical
// messages, rowcast.broadcast() executable by PUBLIC; in notify mode, the
// function still PUBLIC's) makes serve stop with "run rowcast setup";
// setup run again migrates it, idempotently. A publication an older setup
// shared with another application is refused, and teardown gives the
// other application its publication back.
func TestTrustUpgrade(t *testing.T) {
	t.Run("logical", func(t *testing.T) {
		db := newDatabase(t)
		exec1(t, db, oldLogicalSetup)
		exec1(t, db, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slotName(db))
		env := []string{"ROWCAST_CAPTURE=logical", "ROWCAST_SLOT=" + slotName(db)}
		if out, err := serveUntilExit(t, db, env...); err == nil || !strings.Contains(out, "rowcast setup") {
			t.Fatalf("serve on the old installation: %v\n%s", err, out)
		}
		setup(t, db, env...)
		setup(t, db, env...)
		var public bool
		var tables string
		conn := connectDB(t, db)
		if err := conn.QueryRow(context.Background(), `SELECT has_function_privilege('public', 'rowcast.broadcast(text, jsonb)', 'EXECUTE'),
			(SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY 1) FROM pg_publication_tables WHERE pubname = 'rowcast')`).Scan(&public, &tables); err != nil {
			t.Fatal(err)
		}
		if public || tables != "public.tickets,rowcast.outbox" {
			t.Errorf("after setup: PUBLIC may execute %v, publication %s", public, tables)
		}
		s := startServer(t, db, env...)
		c := dial(t, s, "")
		if err := execAs(conn, `SELECT pg_logical_emit_message(true, 'rowcast', '{"event":"old","payload":{}}')`); err != nil {
			t.Fatal(err)
		}
		if err := execAs(conn, `SELECT rowcast.broadcast('new', '{}')`); err != nil {
			t.Fatal(err)
		}
		if e := strings.Join(events(c.until(20*time.Second, "new")), " "); e != "new" {
			t.Errorf("got %s, want only the event through the outbox", e)
		}
	})
	t.Run("notify", func(t *testing.T) {
		db := newDatabase(t)
		env := []string{"ROWCAST_CAPTURE=notify"}
		setup(t, db, env...)
		// As the previous setup left it: every role may call it.
		exec1(t, db, `GRANT EXECUTE ON FUNCTION rowcast.broadcast(text, jsonb) TO PUBLIC`)
		if out, err := serveUntilExit(t, db, env...); err == nil || !strings.Contains(out, "rowcast setup") {
			t.Fatalf("serve with a PUBLIC rowcast.broadcast(): %v\n%s", err, out)
		}
		setup(t, db, env...)
		startServer(t, db, env...)
	})
	t.Run("shared publication", func(t *testing.T) {
		db := newDatabase(t)
		exec1(t, db, usersDDL)
		// An older setup added the table to a publication an application
		// already used.
		exec1(t, db, `CREATE PUBLICATION app FOR TABLE users; ALTER PUBLICATION app ADD TABLE tickets`)
		env := []string{"DATABASE_URL=" + db, "ROWCAST_CAPTURE=logical", "ROWCAST_PUBLICATION=app", "ROWCAST_SLOT=" + slotName(db)}
		out, err := runRowcast(t, env, "setup")
		if err == nil || !strings.Contains(out, `publication "app" also publishes "public"."users"`) || !strings.Contains(out, "ROWCAST_SLOT") {
			t.Fatalf("setup on a shared publication: %v\n%s", err, out)
		}
		out, err = runRowcast(t, env, "teardown", "--yes")
		if err != nil || !strings.Contains(out, `publication "app" kept`) {
			t.Fatalf("teardown: %v\n%s", err, out)
		}
		var tables string
		if err := connectDB(t, db).QueryRow(context.Background(),
			`SELECT string_agg(schemaname || '.' || tablename, ',') FROM pg_publication_tables WHERE pubname = 'app'`).Scan(&tables); err != nil {
			t.Fatal(err)
		}
		if tables != "public.users" {
			t.Errorf("publication app after teardown: %s", tables)
		}
	})
}

// oldLogicalSetup is what the previous rowcast setup installed in logical
// mode (the slot aside): a publication of the table, and a
// rowcast.broadcast() that every role may call, sending a logical
// decoding message.
const oldLogicalSetup = `
CREATE PUBLICATION rowcast FOR TABLE tickets WITH (publish = 'insert, update, delete, truncate');
ALTER TABLE tickets REPLICA IDENTITY FULL;
CREATE SCHEMA rowcast;
CREATE FUNCTION rowcast.broadcast(event text, payload jsonb DEFAULT '{}'::jsonb) RETURNS void
LANGUAGE plpgsql AS $rowcast$
BEGIN
    PERFORM pg_logical_emit_message(true, 'rowcast', json_build_object('event', event, 'payload', payload)::text);
END
$rowcast$;`

// serveUntilExit runs "rowcast serve", which is expected to stop by
// itself, and returns its output; it fails the test if it is still
// running after a minute.
func serveUntilExit(t *testing.T, db string, env ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, rowcastBin, "serve")
	cmd.Env = append(os.Environ(), append([]string{"DATABASE_URL=" + db, "JWT_SECRET=" + testSecret,
		"ROWCAST_LISTEN=" + freeAddr(t)}, env...)...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("rowcast serve still running after a minute:\n%s", out)
	}
	return string(out), err
}
