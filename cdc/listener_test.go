package cdc

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/jackc/pgx/v5"

	"rowcast"
	"rowcast/integration/pgcluster/pgtest"
)

// notifyDB returns a database with the tickets table and notify capture
// installed as "rowcast setup" does, and the table as the listener sees it.
func notifyDB(t *testing.T) (string, *pgx.Conn, Table) {
	t.Helper()
	url := pgtest.ForTest(t)
	conn := slotConnect(t, url)
	slotExec(t, conn, slotTicketsDDL)
	ctx := slotCtx(t, 30*time.Second)
	table, err := LookupTable(ctx, conn, "public.tickets")
	if err != nil {
		t.Fatal(err)
	}
	if err := SetupNotify(ctx, conn, table, "rowcast", []string{"priority", "status"}, "ticket"); err != nil {
		t.Fatal(err)
	}
	return url, conn, table
}

// runListener starts a Listener and stops it when the test ends.
func runListener(t *testing.T, cfg ListenerConfig, sink rowcast.Sink) *Listener {
	t.Helper()
	lw := &testLogWriter{t: t}
	cfg.Logger = slog.New(slog.NewTextHandler(lw, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg.MinBackoff, cfg.MaxBackoff = 20*time.Millisecond, 300*time.Millisecond
	l := NewListener(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, sink) }()
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("Run did not return within 15s of cancel")
			}
			lw.done.Store(true)
		})
	})
	waitUntil(t, 20*time.Second, "the listener to listen", func() bool { return l.Status().Connected })
	return l
}

// unprivileged creates a role with no grant at all (it may connect, as
// every role may by default) and returns a connection as that role.
func unprivileged(t *testing.T, admin *pgx.Conn, url string) *pgx.Conn {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	role := "nobody_" + hex.EncodeToString(b)
	slotExec(t, admin, `CREATE ROLE `+role+` LOGIN`)
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), `DROP ROLE IF EXISTS `+role) })
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.User = role
	conn, err := pgx.ConnectConfig(slotCtx(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Junk on the channel from a role with no privilege is dropped and
// counted by reason; it never reconnects the listener or resyncs, and the
// real change written right after it arrives.
func TestListenerRejectsJunk(t *testing.T) {
	url, admin, table := notifyDB(t)
	sink := &slotSink{}
	l := runListener(t, ListenerConfig{ConnString: url, Channel: "rowcast", Table: table}, sink)
	evil := unprivileged(t, admin, url)
	junk := map[string][]string{
		rowcast.RejectedMalformed: {
			`not json`,
			`{}`,
			`{"op":"frobnicate"}`,
			`{"op":"insert","table":"public.tickets","key":{"id":1},"row":null}`,
			`{"op":"insert","table":"public.tickets","xid":"x"}`,
			`{"op":"insert","table":"public.tickets","xid":5,"key":{"nope":1},"row":null}`,
			`{"op":"delete","table":"public.tickets","xid":5,"key":{"id":null}}`,
			`{"op":"insert","table":"public.tickets","xid":5,"key":{"id":1},"row":[1,2]}`,
			`{"op":"message","event":"notification","payload":{},"key":{"id":1}}`,
			// Rows are never read back by key: a change without its row
			// is not one the trigger sends.
			`{"op":"insert","table":"public.tickets","xid":5,"key":{"id":"abc"},"row":null}`,
			`{"op":"update","table":"public.tickets","xid":5,"key":{"id":{"x":1}},"row":null}`,
			`{"op":"update","table":"public.tickets","xid":5,"key":{"id":1},"oldkey":{"nope":1},"row":{"id":1}}`,
			`{"op":"insert","table":"public.tickets","xid":5,"key":{"id":1},"oldkey":{"id":2},"row":{"id":1}}`,
			// Parts that do not make a payload, or not a valid one.
			`{"op":"part","xid":5,"seq":1,"part":1,"parts":2,"data":"e30="}`,
			`{"op":"part","xid":5,"seq":2,"part":3,"parts":2,"data":""}`,
			`{"op":"part","xid":5,"seq":3,"part":0,"parts":1,"data":"!!"}`,
			`{"op":"part","xid":5,"seq":4,"part":0,"parts":1,"data":"` + base64.StdEncoding.EncodeToString([]byte(`{"op":"part","xid":5,"seq":4,"part":0,"parts":1,"data":""}`)) + `"}`,
			`{"op":"part","xid":5,"seq":5,"part":0,"parts":1,"data":"` + base64.StdEncoding.EncodeToString([]byte(`not json`)) + `"}`,
		},
		rowcast.RejectedOtherTable: {
			`{"op":"insert","table":"public.users","xid":5,"key":{"id":1},"row":{"id":1,"password_hash":"x"}}`,
			`{"op":"delete","table":"other.tickets","xid":5,"key":{"id":1}}`,
			`{"op":"truncate","table":"tickets","xid":5}`,
		},
		rowcast.RejectedBadEventName: {
			`{"op":"message","xid":5,"event":"bad name!","payload":{}}`,
			`{"op":"message","xid":5,"event":"","payload":{}}`,
			`{"op":"message","xid":5,"event":"` + strings.Repeat("x", 65) + `","payload":{}}`,
		},
		rowcast.RejectedUnverifiedTruncate: {
			`{"op":"truncate","table":"public.tickets","xid":123}`,
		},
	}
	ctx := slotCtx(t, time.Minute)
	for _, payloads := range junk {
		for _, p := range payloads {
			if _, err := evil.Exec(ctx, `SELECT pg_notify('rowcast', $1)`, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	slotExec(t, admin, `INSERT INTO tickets(id, title) VALUES (1, 'real')`)
	waitForTicket(t, sink, rowcast.OpInsert, 1)
	if got := sink.snapshot(); len(got) != 1 || text(t, got[0].Row, "title") != "real" {
		t.Fatalf("changes = %+v, want only the real insert", got)
	}
	st := l.Status()
	for reason, payloads := range junk {
		if st.Rejected[reason] != uint64(len(payloads)) {
			t.Errorf("rejected[%s] = %d, want %d", reason, st.Rejected[reason], len(payloads))
		}
	}
	if st.Reconnects != 0 || !st.Connected || len(sink.startMarkers()) != 1 {
		t.Errorf("status %+v, %d sessions: the listener must not reconnect", st, len(sink.startMarkers()))
	}
}

// A real TRUNCATE is handed on; a forged one is refused, even when it
// names the transaction that truncated.
func TestListenerVerifiesTruncate(t *testing.T) {
	url, admin, table := notifyDB(t)
	sink := &slotSink{}
	l := runListener(t, ListenerConfig{ConnString: url, Channel: "rowcast", Table: table}, sink)
	evil := unprivileged(t, admin, url)
	ctx := slotCtx(t, time.Minute)

	slotExec(t, admin, `INSERT INTO tickets(id, title) VALUES (1, 'a')`)
	slotExec(t, admin, `TRUNCATE tickets`)
	var xid uint64
	if err := admin.QueryRow(ctx, `SELECT xmin::text::bigint FROM pg_class WHERE oid = 'tickets'::regclass`).Scan(&xid); err != nil {
		t.Fatal(err)
	}
	for _, x := range []uint64{xid, xid + 1, 3} {
		if _, err := evil.Exec(ctx, `SELECT pg_notify('rowcast', $1)`,
			fmt.Sprintf(`{"op":"truncate","table":"public.tickets","xid":%d}`, x)); err != nil {
			t.Fatal(err)
		}
	}
	slotExec(t, admin, `INSERT INTO tickets(id, title) VALUES (2, 'b')`)
	waitForTicket(t, sink, rowcast.OpInsert, 2)
	var got []string
	for _, c := range sink.snapshot() {
		got = append(got, string(c.Op))
	}
	if want := "insert truncate insert"; strings.Join(got, " ") != want {
		t.Errorf("changes %v, want %s", got, want)
	}
	if st := l.Status(); st.Rejected[rowcast.RejectedUnverifiedTruncate] != 3 || st.Reconnects != 0 {
		t.Errorf("status %+v, want 3 unverified truncates and no reconnect", st)
	}
}

// One transaction's notifications arrive together, and the ones already
// read are handed on in batches: every change in order, and a TRUNCATE in
// the middle of a batch is still checked against the catalog (on the
// catalog connection, opened for it).
func TestListenerBurst(t *testing.T) {
	url, admin, table := notifyDB(t)
	sink := &slotSink{}
	l := runListener(t, ListenerConfig{ConnString: url, Channel: "rowcast", Table: table}, sink)
	slotExec(t, admin, `BEGIN;
		INSERT INTO tickets(id, title) SELECT g, 'before' FROM generate_series(1, 200) g;
		TRUNCATE tickets;
		INSERT INTO tickets(id, title) SELECT g, 'after' FROM generate_series(201, 400) g;
		COMMIT`)
	waitForTicket(t, sink, rowcast.OpInsert, 400)
	got := sink.snapshot()
	if len(got) != 401 {
		t.Fatalf("%d changes, want 401", len(got))
	}
	for i, c := range got {
		want, id := rowcast.OpInsert, i+1
		switch {
		case i == 200:
			want, id = rowcast.OpTruncate, 0
		case i > 200:
			id = i
		}
		if c.Op != want {
			t.Fatalf("change %d is %s, want %s", i, c.Op, want)
		}
		if v, _ := c.Key.Text("id"); id != 0 && v != fmt.Sprint(id) {
			t.Fatalf("change %d is ticket %s, want %d", i, v, id)
		}
	}
	st := l.Status()
	for reason, n := range st.Rejected {
		if n != 0 {
			t.Errorf("%d notifications rejected (%s)", n, reason)
		}
	}
	if st.Reconnects != 0 {
		t.Errorf("%d reconnects", st.Reconnects)
	}
	sink.mu.Lock()
	t.Logf("401 changes in batches of up to %d", sink.maxBatch)
	sink.mu.Unlock()
}

// Quiet for its idle time, the listener pings PostgreSQL (an empty query
// on the LISTEN connection) and reads the answer among the notifications:
// the connection stays up and the next change arrives.
func TestListenerPings(t *testing.T) {
	url, admin, table := notifyDB(t)
	sink := &slotSink{}
	cfg := ListenerConfig{ConnString: url, Channel: "rowcast", Table: table}
	lw := &testLogWriter{t: t}
	cfg.Logger = slog.New(slog.NewTextHandler(lw, &slog.HandlerOptions{Level: slog.LevelInfo}))
	l := NewListener(cfg)
	l.idle = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, sink) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		lw.done.Store(true)
	})
	waitUntil(t, 20*time.Second, "the listener to listen", func() bool { return l.Status().Connected })
	// The empty query is the listener session's last statement once it
	// has pinged; several pings go by while this waits.
	qctx := slotCtx(t, time.Minute)
	waitUntil(t, 20*time.Second, "a ping", func() bool {
		var n int
		err := admin.QueryRow(qctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rowcast listener' AND query = ';'`).Scan(&n)
		return err == nil && n == 1
	})
	slotExec(t, admin, `INSERT INTO tickets(id, title) VALUES (1, 'after the pings')`)
	waitForTicket(t, sink, rowcast.OpInsert, 1)
	if st := l.Status(); st.Reconnects != 0 || !st.Connected {
		t.Errorf("status %+v, want connected without a reconnect", st)
	}
}

// The check itself, with the notifications of two TRUNCATEs read only
// after both committed (as when the listener is busy): the first is
// confirmed by the new storage, the second by its pg_class row; repeats
// and strangers are not.
func TestTruncateCheck(t *testing.T) {
	_, admin, table := notifyDB(t)
	ctx := slotCtx(t, time.Minute)
	var tc truncateCheck
	if err := tc.load(ctx, admin, table); err != nil {
		t.Fatal(err)
	}
	truncate := func() uint64 {
		var xid uint64
		err := pgx.BeginFunc(ctx, admin, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `TRUNCATE tickets`); err != nil {
				return err
			}
			return tx.QueryRow(ctx, `SELECT txid_current()`).Scan(&xid)
		})
		if err != nil {
			t.Fatal(err)
		}
		return xid
	}
	first, second := truncate(), truncate()
	const writer, forger = 100, 200
	for i, c := range []struct {
		note truncateNote
		want bool
	}{
		{truncateNote{first, 1, writer}, true},
		{truncateNote{second, 1, writer}, true},
		// A second TRUNCATE in the same transaction, in its run: the
		// catalog shows only the last storage.
		{truncateNote{second, 3, writer}, true},
		{truncateNote{second, 3, writer}, false},
		{truncateNote{second, 4, forger}, false},
		// The run ended with the forger's notification.
		{truncateNote{second, 5, writer}, false},
		{truncateNote{first, 9, writer}, false},
		{truncateNote{second + 1, 1, writer}, false},
	} {
		ok, err := tc.verify(ctx, admin, c.note)
		if err != nil || ok != c.want {
			t.Errorf("check %d (%+v): %v %v, want %v", i, c.note, ok, err, c.want)
		}
	}
	slotExec(t, admin, `VACUUM FULL tickets`)
	if ok, err := tc.verify(ctx, admin, truncateNote{12345, 1, forger}); err != nil || !ok {
		t.Errorf("after VACUUM FULL: %v %v; a forger gets one resync out of new storage", ok, err)
	}
	if ok, err := tc.verify(ctx, admin, truncateNote{12345, 1, forger}); err != nil || ok {
		t.Errorf("again after VACUUM FULL: %v %v", ok, err)
	}
}

// The notify hot path: the trigger's payload for an INSERT of the
// reference ticket, decoded into a change as the listener does.
func BenchmarkDecodeNotification(b *testing.B) {
	l := NewListener(ListenerConfig{Table: Table{Schema: "public", Name: "tickets", Key: []string{"id"},
		Columns: []string{"id", "title", "description", "status", "priority", "category", "requester_email", "assignee_email", "created_at", "updated_at"},
		Types:   []uint32{pgtype.Int8OID, pgtype.TextOID, pgtype.TextOID, pgtype.TextOID, pgtype.TextOID, pgtype.TextOID, pgtype.TextOID, pgtype.TextOID, pgtype.TimestamptzOID, pgtype.TimestamptzOID}}})
	payload := `{"op":"insert","table":"public.tickets","xid":812345,"seq":1,"key":{"id":1234567},"row":{"id":1234567,` +
		`"title":"#1234567 Printer on 3rd floor jams on every duplex job","description":"Started this morning after the firmware update; restarting the printer and reinstalling the driver did not help. Single-sided jobs print fine.",` +
		`"status":"open","priority":"medium","category":"hardware","requester_email":"user17@example.com","assignee_email":"sam.rivera@example.com",` +
		`"created_at":"2026-11-30T13:06:29.123456+00:00","updated_at":"2026-11-30T13:06:29.123456+00:00"}}`
	b.ReportAllocs()
	for b.Loop() {
		cs, _, err := l.decode(context.Background(), []byte(payload), 42) // the copy the LISTEN connection's read makes
		if err != nil || len(cs) != 1 {
			b.Fatal(err, cs)
		}
	}
}
