package cdc

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"rowcast"
	"rowcast/integration/pgcluster"
	"rowcast/integration/pgcluster/pgtest"
)

const slotTicketsDDL = `CREATE TABLE tickets(
	id bigserial primary key, title text not null, description text,
	status text not null default 'open', priority text not null default 'medium',
	category text, requester_email text, assignee_email text,
	created_at timestamptz not null default now(), updated_at timestamptz not null default now())`

// slotSink records what the Slot hands on. It does not implement
// rowcast.Retainer; slotWindowSink does.
type slotSink struct {
	mu       sync.Mutex
	changes  []rowcast.Change
	count    int
	maxBatch int
	// batches holds the size of every batch.
	batches []int
	// countOnly keeps counts but not the changes (large tests).
	countOnly bool
	// fail makes Apply return an error this many more times.
	fail int
	// starts holds the OpStart marker of each streaming session.
	starts []rowcast.EventID
}

func (s *slotSink) startMarkers() []rowcast.EventID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]rowcast.EventID(nil), s.starts...)
}

func (s *slotSink) Apply(_ context.Context, cs []rowcast.Change) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail > 0 {
		s.fail--
		return fmt.Errorf("sink unavailable")
	}
	if len(cs) == 1 && cs[0].Op == rowcast.OpStart {
		// The start marker of each session; the tests look at changes.
		s.starts = append(s.starts, cs[0].ID)
		return nil
	}
	s.count += len(cs)
	s.maxBatch = max(s.maxBatch, len(cs))
	s.batches = append(s.batches, len(cs))
	if !s.countOnly {
		s.changes = append(s.changes, cs...)
	}
	return nil
}

func (s *slotSink) snapshot() []rowcast.Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]rowcast.Change(nil), s.changes...)
}

// slotWindowSink holds the last keep changes like the hub's replay window.
type slotWindowSink struct {
	slotSink
	keep int
}

func (s *slotWindowSink) Oldest() (rowcast.EventID, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.changes) == 0 {
		return rowcast.EventID{}, false
	}
	return s.changes[max(0, len(s.changes)-s.keep)].ID, true
}

func slotCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func slotConnect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func slotExec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// slotDB returns a fresh database with a tickets table set up for logical
// replication (publication and slot "rowcast", rowcast.broadcast()).
func slotDB(t *testing.T) (string, *pgx.Conn) {
	t.Helper()
	url := pgtest.ForTest(t)
	conn := slotConnect(t, url)
	slotExec(t, conn, slotTicketsDDL)
	setupLogical(t, conn, "public.tickets", "rowcast", "rowcast")
	return url, conn
}

// setupLogical installs logical capture of table as "rowcast setup" does:
// SetupLogical and rowcast.broadcast().
func setupLogical(t *testing.T, conn *pgx.Conn, table, publication, slot string) {
	t.Helper()
	if err := SetupLogical(slotCtx(t, 30*time.Second), conn, table, publication, slot); err != nil {
		t.Fatal(err)
	}
	fn, err := BroadcastFunctionSQL(true, "rowcast", "ticket")
	if err != nil {
		t.Fatal(err)
	}
	slotExec(t, conn, fn)
}

type testLogWriter struct {
	t    *testing.T
	done atomic.Bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// runSlot starts a Slot and returns a function that stops it, checks that
// Run returned nil, and is also registered as cleanup.
func runSlot(t *testing.T, cfg SlotConfig, sink rowcast.Sink) (*Slot, func()) {
	t.Helper()
	lw := &testLogWriter{t: t}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(lw, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	if cfg.StandbyTimeout == 0 {
		cfg.StandbyTimeout = 200 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = 20*time.Millisecond, 300*time.Millisecond
	}
	s := NewSlot(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, sink) }()
	var once sync.Once
	stop := func() {
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
	}
	t.Cleanup(stop)
	return s, stop
}

// waitUntil polls cond until it holds or d passes.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitRow waits for a change whose row or key has id = want.
func waitForTicket(t *testing.T, sink *slotSink, op rowcast.Op, id int64) rowcast.Change {
	t.Helper()
	var found rowcast.Change
	waitUntil(t, 20*time.Second, fmt.Sprintf("%s of ticket %d", op, id), func() bool {
		for _, c := range sink.snapshot() {
			if c.Op == op && c.Table == "tickets" {
				if v, ok := c.Key.Text("id"); ok && v == fmt.Sprint(id) {
					found = c
					return true
				}
			}
		}
		return false
	})
	return found
}

func ticketChanges(cs []rowcast.Change) []rowcast.Change {
	var out []rowcast.Change
	for _, c := range cs {
		if c.Table == "tickets" {
			out = append(out, c)
		}
	}
	return out
}

func rowJSON(t *testing.T, r rowcast.Row) string {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func text(t *testing.T, r rowcast.Row, col string) string {
	t.Helper()
	v, ok := r.Text(col)
	if !ok {
		t.Fatalf("column %s missing or null in %s", col, rowJSON(t, r))
	}
	return v
}

func slotState(t *testing.T, conn *pgx.Conn, name string) (confirmed pglogrepl.LSN, walStatus string) {
	t.Helper()
	info, err := readSlot(slotCtx(t, 10*time.Second), conn, name)
	if err != nil {
		t.Fatal(err)
	}
	if !info.exists {
		t.Fatalf("slot %s does not exist", name)
	}
	return info.confirmed, info.walStatus
}

func TestSlotInsertUpdateDelete(t *testing.T) {
	url, conn := slotDB(t)
	sink := &slotSink{}
	s, _ := runSlot(t, SlotConfig{ConnString: url}, sink)

	slotExec(t, conn, `INSERT INTO tickets(title, requester_email) VALUES ('Printer on fire', 'ann@example.com')`)
	slotExec(t, conn, `BEGIN; INSERT INTO tickets(title) VALUES ('two'); INSERT INTO tickets(title) VALUES ('three'); COMMIT`)
	slotExec(t, conn, `UPDATE tickets SET status = 'closed', assignee_email = 'bob@example.com' WHERE id = 1`)
	slotExec(t, conn, `BEGIN; INSERT INTO tickets(title) VALUES ('rolled back'); UPDATE tickets SET title = 'nope' WHERE id = 2; ROLLBACK`)
	slotExec(t, conn, `DELETE FROM tickets WHERE id = 3`)
	slotExec(t, conn, `INSERT INTO tickets(id, title) VALUES (100, 'last')`)
	waitForTicket(t, sink, rowcast.OpInsert, 100)

	got := ticketChanges(sink.snapshot())
	var ops []string
	for _, c := range got {
		ops = append(ops, fmt.Sprintf("%s:%s", c.Op, rowcast.JSONText(c.Key[0].Value)))
	}
	want := []string{"insert:1", "insert:2", "insert:3", "update:1", "delete:3", "insert:100"}
	if strings.Join(ops, " ") != strings.Join(want, " ") {
		t.Fatalf("changes = %v, want %v", ops, want)
	}

	ins := got[0]
	if ins.Schema != "public" || len(ins.Key) != 1 || ins.Key[0].Name != "id" || string(ins.Key[0].Value) != "1" {
		t.Errorf("insert key = %s.%s %s", ins.Schema, ins.Table, rowJSON(t, ins.Key))
	}
	if text(t, ins.Row, "title") != "Printer on fire" || text(t, ins.Row, "status") != "open" || ins.Old != nil {
		t.Errorf("insert row = %s old = %v", rowJSON(t, ins.Row), ins.Old)
	}
	if names := len(ins.Row); names != 10 || ins.Row[0].Name != "id" || ins.Row[9].Name != "updated_at" {
		t.Errorf("insert row columns = %s", rowJSON(t, ins.Row))
	}
	if v, _ := ins.Row.Get("category"); string(v) != "null" {
		t.Errorf("category = %s, want null", v)
	}
	if ins.Xid == 0 || ins.CommitTime.IsZero() || ins.CaptureTime.IsZero() || ins.ID.Pos == 0 || ins.ID.Index != 0 {
		t.Errorf("insert metadata: xid %d commit %v capture %v id %v", ins.Xid, ins.CommitTime, ins.CaptureTime, ins.ID)
	}
	if time.Since(ins.CommitTime) > time.Minute {
		t.Errorf("commit time %v is not recent", ins.CommitTime)
	}

	// One transaction: same Pos and Xid, Index counts up.
	if got[1].ID.Pos != got[2].ID.Pos || got[1].ID.Index != 0 || got[2].ID.Index != 1 || got[1].Xid != got[2].Xid {
		t.Errorf("same-transaction ids: %v (xid %d), %v (xid %d)", got[1].ID, got[1].Xid, got[2].ID, got[2].Xid)
	}
	for i := 1; i < len(got); i++ {
		if !got[i-1].ID.Less(got[i].ID) {
			t.Errorf("ids not increasing: %v then %v", got[i-1].ID, got[i].ID)
		}
	}

	upd := got[3]
	if text(t, upd.Row, "status") != "closed" || text(t, upd.Old, "status") != "open" ||
		text(t, upd.Row, "assignee_email") != "bob@example.com" || text(t, upd.Old, "title") != "Printer on fire" {
		t.Errorf("update row %s old %s", rowJSON(t, upd.Row), rowJSON(t, upd.Old))
	}
	if v, _ := upd.Old.Get("assignee_email"); string(v) != "null" {
		t.Errorf("old assignee = %s", v)
	}
	del := got[4]
	if del.Row != nil || text(t, del.Old, "title") != "three" || string(del.Key[0].Value) != "3" {
		t.Errorf("delete row %v old %s key %s", del.Row, rowJSON(t, del.Old), rowJSON(t, del.Key))
	}

	// Everything handed on is acknowledged; nothing was lost on the way.
	waitUntil(t, 10*time.Second, "flush position to pass the last commit", func() bool {
		st := s.Status()
		return st.Connected && st.FlushedLSN > got[len(got)-1].ID.Pos && st.ReceivedLSN >= got[len(got)-1].ID.Pos
	})
	if st := s.Status(); st.Mode != "logical" || st.Reconnects != 0 || st.SlotRecreations != 0 {
		t.Errorf("status = %+v", st)
	}
	// One session, whose start marker precedes every change it sent.
	if starts := sink.startMarkers(); len(starts) != 1 || !starts[0].Less(got[0].ID) && starts[0] != got[0].ID {
		t.Errorf("start markers %v, first change %v", starts, got[0].ID)
	}
}

func TestSlotCreatesMissingSlot(t *testing.T) {
	url, conn := slotDB(t)
	slotExec(t, conn, `SELECT pg_drop_replication_slot('rowcast')`)
	sink := &slotSink{}
	runSlot(t, SlotConfig{ConnString: url}, sink)
	waitUntil(t, 20*time.Second, "slot creation", func() bool { return len(sink.snapshot()) > 0 })
	slotExec(t, conn, `INSERT INTO tickets(title) VALUES ('after creation')`)
	waitForTicket(t, sink, rowcast.OpInsert, 1)
	got := sink.snapshot()
	if got[0].Op != rowcast.OpResync || got[0].Reason != "replication slot created" {
		t.Fatalf("first change = %+v, want the resync for the new slot", got[0])
	}
	if !got[0].ID.Less(got[1].ID) {
		t.Errorf("resync id %v does not sort before %v", got[0].ID, got[1].ID)
	}
}

func TestSlotRefusesMissingPublication(t *testing.T) {
	url := pgtest.ForTest(t)
	s := NewSlot(SlotConfig{ConnString: url, Publication: "nothere", Logger: slog.New(slog.DiscardHandler)})
	err := s.Run(slotCtx(t, 20*time.Second), &slotSink{})
	if err == nil || !strings.Contains(err.Error(), "rowcast setup") {
		t.Fatalf("Run = %v, want an error telling to run setup", err)
	}
}

func TestSlotUnchangedToast(t *testing.T) {
	url, conn := slotDB(t)
	// A table without REPLICA IDENTITY FULL takes the fetch-by-key path:
	// notes, captured by a second slot of its own.
	slotExec(t, conn, `CREATE TABLE notes(id int primary key, body text, n int)`)
	setupLogical(t, conn, "public.notes", "notes", "notes")
	slotExec(t, conn, `ALTER TABLE notes REPLICA IDENTITY DEFAULT`)
	sink, notesSink := &slotSink{}, &slotSink{}
	runSlot(t, SlotConfig{ConnString: url}, sink)
	runSlot(t, SlotConfig{ConnString: url, Publication: "notes", Slot: "notes"}, notesSink)

	// md5 hex compresses poorly enough to be stored out of line.
	const big = `(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 32768) i)`
	slotExec(t, conn, `INSERT INTO tickets(id, title, description) VALUES (1, 'big', `+big+`)`)
	slotExec(t, conn, `UPDATE tickets SET status = 'pending' WHERE id = 1`)
	slotExec(t, conn, `INSERT INTO notes VALUES (1, `+big+`, 0)`)
	slotExec(t, conn, `UPDATE notes SET n = 1 WHERE id = 1`)
	slotExec(t, conn, `INSERT INTO tickets(id, title) VALUES (2, 'marker')`)
	slotExec(t, conn, `INSERT INTO notes VALUES (2, 'marker', 0)`)
	waitForTicket(t, sink, rowcast.OpInsert, 2)
	waitUntil(t, 20*time.Second, "the notes marker", func() bool {
		for _, c := range notesSink.snapshot() {
			if c.Op == rowcast.OpInsert && rowcast.JSONText(c.Key[0].Value) == "2" {
				return true
			}
		}
		return false
	})

	var want string
	if err := conn.QueryRow(context.Background(), `SELECT `+big).Scan(&want); err != nil {
		t.Fatal(err)
	}
	if len(want) != 1<<20 {
		t.Fatalf("description is %d bytes", len(want))
	}
	update := func(sink *slotSink, table string) *rowcast.Change {
		for _, c := range sink.snapshot() {
			if c.Op == rowcast.OpUpdate {
				if c.Table != table {
					t.Errorf("the %s slot handed on a change of %s", table, c.Table)
				}
				return &c
			}
		}
		t.Fatalf("update of %s missing", table)
		return nil
	}
	ticketUpd, noteUpd := update(sink, "tickets"), update(notesSink, "notes")
	if got := text(t, ticketUpd.Row, "description"); got != want {
		t.Errorf("tickets update description has %d bytes, want the full %d", len(got), len(want))
	}
	if text(t, ticketUpd.Row, "status") != "pending" || len(ticketUpd.Row) != 10 {
		t.Errorf("tickets update row has %d columns", len(ticketUpd.Row))
	}
	if got := text(t, noteUpd.Row, "body"); got != want {
		t.Errorf("notes update body has %d bytes, want the full %d", len(got), len(want))
	}
	if text(t, noteUpd.Row, "n") != "1" {
		t.Errorf("notes n = %s", rowJSON(t, noteUpd.Row))
	}
}

func TestSlotAddColumnMidStream(t *testing.T) {
	url, conn := slotDB(t)
	sink := &slotSink{}
	runSlot(t, SlotConfig{ConnString: url}, sink)
	slotExec(t, conn, `INSERT INTO tickets(id, title) VALUES (1, 'before')`)
	waitForTicket(t, sink, rowcast.OpInsert, 1)
	slotExec(t, conn, `ALTER TABLE tickets ADD COLUMN due date`)
	slotExec(t, conn, `INSERT INTO tickets(id, title, due) VALUES (2, 'after', '2026-12-24')`)
	slotExec(t, conn, `UPDATE tickets SET due = '2027-01-02' WHERE id = 1`)
	upd := waitForTicket(t, sink, rowcast.OpUpdate, 1)
	ins := waitForTicket(t, sink, rowcast.OpInsert, 2)
	if v, _ := ins.Row.Get("due"); string(v) != `"2026-12-24"` || len(ins.Row) != 11 {
		t.Errorf("insert after ALTER: %s", rowJSON(t, ins.Row))
	}
	if v, _ := upd.Row.Get("due"); string(v) != `"2027-01-02"` {
		t.Errorf("update after ALTER: %s", rowJSON(t, upd.Row))
	}
	if v, _ := upd.Old.Get("due"); string(v) != `null` {
		t.Errorf("update old after ALTER: %s", rowJSON(t, upd.Old))
	}
}

func TestSlotLargeTransactionStreamsInBatches(t *testing.T) {
	url := pgtest.ForTest(t)
	conn := slotConnect(t, url)
	slotExec(t, conn, slotTicketsDDL)
	const rows, batch = 100_000, 1000
	// Inserted before the slot exists, so that only the update streams.
	slotExec(t, conn, `INSERT INTO tickets(title) SELECT 't' || i FROM generate_series(1, $1) i`, rows)
	setupLogical(t, conn, "public.tickets", "rowcast", "rowcast")
	sink := &slotSink{countOnly: true}
	runSlot(t, SlotConfig{ConnString: url, BatchSize: batch}, sink)
	slotExec(t, conn, `UPDATE tickets SET status = 'closed'`)
	waitUntil(t, 40*time.Second, "the single 100,000-row update", func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return sink.count >= rows
	})
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.count != rows || sink.maxBatch > batch {
		t.Fatalf("got %d changes, largest batch %d; want %d and at most %d", sink.count, sink.maxBatch, rows, batch)
	}
}

// A backlog of single-row transactions is handed on whole and in commit
// order, and the slot's position follows. The transactions were committed
// long before they are sent (the stream is behind), so each batch waits
// for the ones behind it until it is full: with a hold longer than the
// test, every batch is exactly BatchSize. A transaction committed once
// the stream keeps up is not held.
func TestSlotBacklogOfTransactions(t *testing.T) {
	url, conn := slotDB(t)
	const n, batch = 300, 100
	for i := 1; i <= n; i++ {
		slotExec(t, conn, `INSERT INTO tickets(title) VALUES ($1)`, fmt.Sprint("t", i))
	}
	// Committed backlogLag before the slot starts at the latest.
	time.Sleep(backlogLag)
	sink := &slotSink{}
	s, _ := runSlot(t, SlotConfig{ConnString: url, BatchSize: batch, hold: time.Hour}, sink)
	waitUntil(t, 40*time.Second, "the backlog", func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return sink.count >= n
	})
	changes := sink.snapshot()
	if len(changes) != n {
		t.Fatalf("got %d changes, want %d", len(changes), n)
	}
	for i, c := range changes {
		if i > 0 && !changes[i-1].ID.Less(c.ID) {
			t.Fatalf("change %d (%v) not after %v", i, c.ID, changes[i-1].ID)
		}
		if title, _ := c.Row.Get("title"); string(title) != fmt.Sprintf(`"t%d"`, i+1) {
			t.Fatalf("change %d has title %s", i, title)
		}
	}
	sink.mu.Lock()
	batches := slices.Clone(sink.batches)
	sink.mu.Unlock()
	if !slices.Equal(batches, []int{batch, batch, batch}) {
		t.Fatalf("batches of %v changes, want 3 of %d", batches, batch)
	}
	end := changes[n-1].ID.Pos
	waitUntil(t, 40*time.Second, "the slot's position past the backlog", func() bool {
		return s.Status().FlushedLSN >= end
	})
	// Caught up: a new transaction goes on alone, not held for the hour.
	// On a busy machine the WAL sender may send one backlogLag after its
	// commit, which counts as behind and is held: then the next insert,
	// sent in time, takes it along. Only a stream behind for every one of
	// them (or a hold that ignores keeping up) fails.
	arrived := func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return sink.count > n
	}
	for i := 0; !arrived(); i++ {
		if i == 20 {
			t.Fatal("none of 20 transactions committed after the backlog was handed on")
		}
		slotExec(t, conn, `INSERT INTO tickets(title) VALUES ('live')`)
		deadline := time.Now().Add(5 * time.Second)
		for !arrived() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// Events from SQL come through rowcast.outbox, in commit order with the
// row changes; logical decoding messages, which any role may send, are
// dropped and counted.
func TestSlotOutboxEvents(t *testing.T) {
	url, conn := slotDB(t)
	sink := &slotSink{}
	s, _ := runSlot(t, SlotConfig{ConnString: url}, sink)
	slotExec(t, conn, `BEGIN;
		INSERT INTO tickets(id, title) VALUES (1, 'with message');
		SELECT rowcast.broadcast('notification', '{"a": 1}');
		SELECT pg_logical_emit_message(true, 'rowcast', '{"event":"forged","payload":{}}');
		SELECT pg_logical_emit_message(true, 'other', '{"event":"not ours","payload":{}}');
		COMMIT`)
	slotExec(t, conn, `BEGIN;
		SELECT rowcast.broadcast('rolledback', '{}');
		ROLLBACK`)
	slotExec(t, conn, `SELECT pg_logical_emit_message(false, 'rowcast', '{"event":"nontx","payload":{}}')`)
	// The outbox's owner can write it by hand; a row rowcast.broadcast()
	// would refuse is still dropped.
	slotExec(t, conn, `INSERT INTO rowcast.outbox (event, payload) VALUES ('bad name!', '{}')`)
	slotExec(t, conn, `BEGIN; INSERT INTO rowcast.outbox (event, payload) VALUES ('kept', '{}');
		UPDATE rowcast.outbox SET event = 'changed'; DELETE FROM rowcast.outbox; COMMIT`)
	slotExec(t, conn, `SELECT rowcast.broadcast('alone', '[1, "x"]')`)
	waitUntil(t, 20*time.Second, "the event outside any row change", func() bool {
		for _, c := range sink.snapshot() {
			if c.Event == "alone" {
				return true
			}
		}
		return false
	})
	var got []string
	for _, c := range sink.snapshot() {
		got = append(got, fmt.Sprintf("%s/%s/%s/%d", c.Op, c.Event, c.Payload, c.ID.Index))
	}
	want := []string{"insert///0", `message/notification/{"a": 1}/1`, `message/kept/{}/0`, `message/alone/[1, "x"]/0`}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("changes = %v\nwant %v", got, want)
	}
	all := sink.snapshot()
	if all[1].ID.Pos != all[0].ID.Pos || all[1].CommitTime.IsZero() || all[1].Xid != all[0].Xid {
		t.Errorf("message metadata %+v", all[1])
	}
	ignored := s.Status().Ignored
	for reason, n := range map[string]uint64{rowcast.IgnoredLogicalMessage: 2, rowcast.IgnoredBadEventName: 1,
		rowcast.IgnoredBadMessage: 2 /* the update touched both rows */, rowcast.IgnoredOtherTable: 0} {
		if ignored[reason] != n {
			t.Errorf("ignored[%s] = %d, want %d (all: %v)", reason, ignored[reason], n, ignored)
		}
	}
	// The outbox stays empty.
	var rows int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM rowcast.outbox`).Scan(&rows); err != nil || rows != 0 {
		t.Errorf("rowcast.outbox holds %d rows (%v)", rows, err)
	}
}

// Another table in the publication (an admin added it, or the default
// publication was shared) is never handed on, not even its truncate.
func TestSlotDropsOtherTables(t *testing.T) {
	url, conn := slotDB(t)
	slotExec(t, conn, `CREATE TABLE users(id int primary key, email text, password_hash text)`)
	slotExec(t, conn, `ALTER PUBLICATION rowcast ADD TABLE users`)
	sink := &slotSink{}
	s, _ := runSlot(t, SlotConfig{ConnString: url}, sink)
	slotExec(t, conn, `INSERT INTO users VALUES (1, 'a@example.com', 'secret-hash')`)
	slotExec(t, conn, `BEGIN; UPDATE users SET password_hash = 'other'; INSERT INTO tickets(id, title) VALUES (1, 'mixed'); DELETE FROM users; COMMIT`)
	slotExec(t, conn, `TRUNCATE users`)
	slotExec(t, conn, `TRUNCATE tickets, users`)
	slotExec(t, conn, `INSERT INTO tickets(id, title) VALUES (2, 'last')`)
	waitForTicket(t, sink, rowcast.OpInsert, 2)
	var got []string
	for _, c := range sink.snapshot() {
		got = append(got, fmt.Sprintf("%s:%s.%s", c.Op, c.Schema, c.Table))
		if strings.Contains(rowJSON(t, c.Row)+rowJSON(t, c.Old), "hash") {
			t.Errorf("a users row was handed on: %s", rowJSON(t, c.Row))
		}
	}
	want := []string{"insert:public.tickets", "truncate:public.tickets", "insert:public.tickets"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("changes = %v, want %v", got, want)
	}
	if n := s.Status().Ignored[rowcast.IgnoredOtherTable]; n != 5 {
		t.Errorf("ignored other_table = %d, want 5", n)
	}

	// Told the table explicitly, a slot on a publication set up for
	// another table refuses to start.
	err := NewSlot(SlotConfig{ConnString: url, Table: "public.users", Slot: "users_slot", Logger: slog.New(slog.DiscardHandler)}).
		Run(slotCtx(t, 20*time.Second), &slotSink{})
	if err == nil || !strings.Contains(err.Error(), "was set up for public.tickets") {
		t.Errorf("Run for another table = %v", err)
	}
}

// An installation made by an older rowcast (no outbox; rowcast.broadcast()
// executable by PUBLIC, sending logical messages) stops capture with what
// to run, and SetupLogical brings it up to date.
func TestSlotRefusesOldInstallation(t *testing.T) {
	url := pgtest.ForTest(t)
	conn := slotConnect(t, url)
	slotExec(t, conn, slotTicketsDDL)
	slotExec(t, conn, oldLogicalInstallation)
	slotExec(t, conn, `SELECT pg_create_logical_replication_slot('rowcast', 'pgoutput')`)
	err := NewSlot(SlotConfig{ConnString: url, Logger: slog.New(slog.DiscardHandler)}).Run(slotCtx(t, 20*time.Second), &slotSink{})
	if err == nil || !strings.Contains(err.Error(), "rowcast setup") {
		t.Fatalf("Run on an old installation = %v, want an error telling to run setup", err)
	}
	// Told the table, it still refuses: no outbox.
	err = NewSlot(SlotConfig{ConnString: url, Table: "public.tickets", Logger: slog.New(slog.DiscardHandler)}).Run(slotCtx(t, 20*time.Second), &slotSink{})
	if err == nil || !strings.Contains(err.Error(), "older rowcast") {
		t.Fatalf("Run on an old installation = %v, want an error naming the old installation", err)
	}
	// The outbox alone is not enough while rowcast.broadcast() is PUBLIC's.
	if err := SetupLogical(slotCtx(t, 30*time.Second), conn, "public.tickets", "rowcast", "rowcast"); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckLogicalInstalled(slotCtx(t, 10*time.Second), conn, "public.tickets", "rowcast"); err == nil || !strings.Contains(err.Error(), "every role") {
		t.Fatalf("CheckLogicalInstalled with the old function = %v", err)
	}
	setupLogical(t, conn, "public.tickets", "rowcast", "rowcast")
	if _, err := CheckLogicalInstalled(slotCtx(t, 10*time.Second), conn, "public.tickets", "rowcast"); err != nil {
		t.Fatalf("CheckLogicalInstalled after setup: %v", err)
	}
	sink := &slotSink{}
	runSlot(t, SlotConfig{ConnString: url}, sink)
	slotExec(t, conn, `INSERT INTO tickets(id, title) VALUES (1, 'after the upgrade')`)
	waitForTicket(t, sink, rowcast.OpInsert, 1)
}

// oldLogicalInstallation is what rowcast setup installed before the
// outbox: a publication of the table alone, and a rowcast.broadcast()
// that any role could call, sending logical decoding messages.
const oldLogicalInstallation = `
CREATE PUBLICATION rowcast FOR TABLE tickets WITH (publish = 'insert, update, delete, truncate');
ALTER TABLE tickets REPLICA IDENTITY FULL;
CREATE SCHEMA rowcast;
CREATE FUNCTION rowcast.broadcast(event text, payload jsonb DEFAULT '{}'::jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_logical_emit_message(true, 'rowcast', json_build_object('event', event, 'payload', payload)::text);
END
$$;`

func TestSlotTruncate(t *testing.T) {
	url, conn := slotDB(t)
	sink := &slotSink{}
	runSlot(t, SlotConfig{ConnString: url}, sink)
	slotExec(t, conn, `INSERT INTO tickets(id, title) VALUES (1, 'x')`)
	slotExec(t, conn, `TRUNCATE tickets`)
	slotExec(t, conn, `INSERT INTO tickets(id, title) VALUES (2, 'y')`)
	waitForTicket(t, sink, rowcast.OpInsert, 2)
	got := sink.snapshot()
	if len(got) != 3 || got[1].Op != rowcast.OpTruncate || got[1].Table != "tickets" || got[1].Schema != "public" || got[1].Reason != ReasonTableTruncated {
		t.Fatalf("changes = %+v", got)
	}
}

// A window sink holding the last K events: after a restart the slot sends
// those transactions again, with the same IDs, and nothing older.
func TestSlotRestartResendsRetainedWindow(t *testing.T) {
	url, conn := slotDB(t)
	const keep = 3
	first := &slotWindowSink{keep: keep}
	_, stop := runSlot(t, SlotConfig{ConnString: url}, first)
	for i := 1; i <= 8; i++ {
		slotExec(t, conn, `INSERT INTO tickets(id, title) VALUES ($1, 'x')`, i)
	}
	waitForTicket(t, &first.slotSink, rowcast.OpInsert, 8)
	stop()
	held := first.snapshot()[len(first.snapshot())-keep:]
	confirmed, _ := slotState(t, conn, "rowcast")
	if uint64(confirmed) != held[0].ID.Pos {
		t.Errorf("confirmed_flush_lsn %v, want the oldest held commit %v", confirmed, pglogrepl.LSN(held[0].ID.Pos))
	}

	slotExec(t, conn, `INSERT INTO tickets(id, title) VALUES (9, 'x')`)
	second := &slotWindowSink{keep: keep}
	runSlot(t, SlotConfig{ConnString: url}, second)
	waitForTicket(t, &second.slotSink, rowcast.OpInsert, 9)
	again := second.snapshot()
	if len(again) != keep+1 {
		t.Fatalf("after restart got %d changes, want %d held + 1 new", len(again), keep)
	}
	for i := range held {
		if again[i].ID != held[i].ID || rowJSON(t, again[i].Row) != rowJSON(t, held[i].Row) {
			t.Errorf("resent %d: %v %s, want %v %s", i, again[i].ID, rowJSON(t, again[i].Row), held[i].ID, rowJSON(t, held[i].Row))
		}
	}
}

func TestSlotRetriesAfterSinkError(t *testing.T) {
	url, conn := slotDB(t)
	sink := &slotSink{fail: 2}
	s, _ := runSlot(t, SlotConfig{ConnString: url}, sink)
	slotExec(t, conn, `INSERT INTO tickets(id, title) VALUES (1, 'x')`)
	waitForTicket(t, sink, rowcast.OpInsert, 1)
	if st := s.Status(); st.Reconnects < 2 {
		t.Errorf("reconnects = %d, want at least 2", st.Reconnects)
	}
}

// Writes to a table outside the publication must not pin WAL.
func TestSlotIdleTableConfirmsServerPosition(t *testing.T) {
	url, conn := slotDB(t)
	slotExec(t, conn, `CREATE TABLE other(id int, v text)`)
	for _, sink := range []rowcast.Sink{&slotSink{}, &slotWindowSink{keep: 10}} {
		_, stop := runSlot(t, SlotConfig{ConnString: url}, sink)
		slotExec(t, conn, `INSERT INTO other SELECT i, md5(i::text) FROM generate_series(1, 10000) i`)
		var s string
		if err := conn.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		target, err := pglogrepl.ParseLSN(s)
		if err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 20*time.Second, "confirmed_flush_lsn to reach "+target.String(), func() bool {
			confirmed, _ := slotState(t, conn, "rowcast")
			return confirmed >= target
		})
		stop()
	}
}

func TestSlotSurvivesTerminateAndRestart(t *testing.T) {
	c := pgtest.OwnCluster(t, pgcluster.Options{})
	ctx := slotCtx(t, 2*time.Minute)
	url, err := c.CreateDatabase(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	conn := slotConnect(t, url)
	slotExec(t, conn, slotTicketsDDL)
	setupLogical(t, conn, "public.tickets", "rowcast", "rowcast")
	conn.Close(ctx)
	sink := &slotSink{}
	s, _ := runSlot(t, SlotConfig{ConnString: url}, sink)

	// The writer inserts ids in order, one per transaction, reconnecting
	// through the restarts. An insert whose outcome is unknown is retried.
	var written atomic.Int64
	writerCtx, stopWriter := context.WithCancel(ctx)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		var wc *pgx.Conn
		for id := int64(1); writerCtx.Err() == nil; {
			if wc == nil {
				var err error
				if wc, err = pgx.Connect(writerCtx, url); err != nil {
					wc = nil
					time.Sleep(50 * time.Millisecond)
					continue
				}
			}
			_, err := wc.Exec(writerCtx, `INSERT INTO tickets(id, title) VALUES ($1, 'w') ON CONFLICT DO NOTHING`, id)
			if err != nil {
				wc.Close(context.Background())
				wc = nil
				continue
			}
			written.Store(id)
			id++
			time.Sleep(2 * time.Millisecond)
		}
		if wc != nil {
			wc.Close(context.Background())
		}
	}()
	t.Cleanup(func() { stopWriter(); <-writerDone })

	progress := func(what string) {
		n := written.Load() + 20
		waitUntil(t, 30*time.Second, what, func() bool { return written.Load() >= n })
	}
	progress("writes before terminating the walsender")
	admin := slotConnect(t, c.URL("postgres"))
	slotExec(t, admin, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'rowcast'`)
	admin.Close(ctx)
	progress("writes after terminating the walsender")
	if err := c.Restart(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	progress("writes after the fast restart")
	if err := c.Restart(ctx, "immediate"); err != nil {
		t.Fatal(err)
	}
	progress("writes after the immediate restart")
	stopWriter()
	<-writerDone
	last := written.Load()

	waitUntil(t, 30*time.Second, fmt.Sprintf("all %d inserts", last), func() bool {
		seen := map[string]bool{}
		for _, c := range sink.snapshot() {
			if c.Op == rowcast.OpInsert {
				seen[rowcast.JSONText(c.Key[0].Value)] = true
			}
		}
		for id := int64(1); id <= last; id++ {
			if !seen[fmt.Sprint(id)] {
				return false
			}
		}
		return true
	})
	ids := map[string]rowcast.EventID{}
	for _, c := range sink.snapshot() {
		k := rowcast.JSONText(c.Key[0].Value)
		if prev, ok := ids[k]; ok && prev != c.ID {
			t.Errorf("ticket %s delivered twice with different ids %v and %v", k, prev, c.ID)
		}
		ids[k] = c.ID
	}
	st := s.Status()
	if st.Reconnects < 3 {
		t.Errorf("reconnects = %d, want at least 3", st.Reconnects)
	}
	t.Logf("%d inserts, %d changes delivered, %d reconnects", last, len(sink.snapshot()), st.Reconnects)
}

func TestSlotRecoversFromInvalidation(t *testing.T) {
	c := pgtest.OwnCluster(t, pgcluster.Options{
		InitdbArgs: []string{"--wal-segsize=1"},
		Settings: map[string]string{
			"max_slot_wal_keep_size": "1MB",
			"wal_keep_size":          "0",
			"min_wal_size":           "2MB",
			"max_wal_size":           "4MB",
		},
	})
	ctx := slotCtx(t, 2*time.Minute)
	url, err := c.CreateDatabase(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	conn := slotConnect(t, url)
	slotExec(t, conn, slotTicketsDDL)
	slotExec(t, conn, `CREATE TABLE filler(v text)`)
	setupLogical(t, conn, "public.tickets", "rowcast", "rowcast")
	slotExec(t, conn, `INSERT INTO tickets(id, title) VALUES (1, 'lost with the slot')`)
	for i := 0; ; i++ {
		if _, status := slotState(t, conn, "rowcast"); status == "lost" {
			break
		}
		if i == 40 {
			t.Fatal("slot never became lost")
		}
		slotExec(t, conn, `INSERT INTO filler SELECT md5(i::text) FROM generate_series(1, 20000) i`)
		slotExec(t, conn, `SELECT pg_switch_wal()`)
		slotExec(t, conn, `CHECKPOINT`)
	}

	sink := &slotSink{}
	s, _ := runSlot(t, SlotConfig{ConnString: url}, sink)
	waitUntil(t, 20*time.Second, "the resync", func() bool { return len(sink.snapshot()) > 0 })
	slotExec(t, conn, `INSERT INTO tickets(id, title) VALUES (2, 'after recreation')`)
	waitForTicket(t, sink, rowcast.OpInsert, 2)
	got := sink.snapshot()
	// The reason reaches clients: the fixed text, whatever PostgreSQL said.
	if got[0].Op != rowcast.OpResync || got[0].Reason != ReasonSlotRecreated {
		t.Fatalf("first change = %+v, want a resync with reason %q", got[0], ReasonSlotRecreated)
	}
	if st := s.Status(); st.SlotRecreations != 1 {
		t.Errorf("slot recreations = %d, want 1", st.SlotRecreations)
	}
	if _, status := slotState(t, conn, "rowcast"); status == "lost" {
		t.Errorf("slot still lost")
	}
}

func TestSlotWaitsWhileSlotActiveElsewhere(t *testing.T) {
	url, conn := slotDB(t)
	first := &slotSink{}
	s1, stop1 := runSlot(t, SlotConfig{ConnString: url}, first)
	waitUntil(t, 10*time.Second, "the first slot to connect", func() bool { return s1.Status().Connected })

	second := &slotSink{}
	s2, _ := runSlot(t, SlotConfig{ConnString: url}, second)
	waitUntil(t, 10*time.Second, "the second slot to retry", func() bool { return s2.Status().Reconnects >= 2 })
	if s2.Status().Connected {
		t.Fatal("second slot connected while the first streams")
	}
	slotExec(t, conn, `INSERT INTO tickets(id, title) VALUES (1, 'to the first')`)
	waitForTicket(t, first, rowcast.OpInsert, 1)
	stop1()

	waitUntil(t, 10*time.Second, "the second slot to take over", func() bool { return s2.Status().Connected })
	slotExec(t, conn, `INSERT INTO tickets(id, title) VALUES (2, 'to the second')`)
	waitForTicket(t, second, rowcast.OpInsert, 2)
	for _, c := range second.snapshot() {
		if c.Table == "tickets" && rowcast.JSONText(c.Key[0].Value) == "1" {
			t.Errorf("ticket 1, acknowledged by the first slot, was sent again")
		}
	}
}

func TestSetupLogicalIdempotentAndTeardown(t *testing.T) {
	url := pgtest.ForTest(t)
	conn := slotConnect(t, url)
	ctx := slotCtx(t, time.Minute)
	slotExec(t, conn, slotTicketsDDL)
	slotExec(t, conn, `CREATE TABLE other(id int primary key)`)
	for i := 0; i < 2; i++ {
		if err := SetupLogical(ctx, conn, "public.tickets", "rowcast", "rowcast"); err != nil {
			t.Fatalf("SetupLogical #%d: %v", i+1, err)
		}
	}
	pubTables := func(pub string) string {
		var tables *string
		if err := conn.QueryRow(ctx, `SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY schemaname, tablename) FROM pg_publication_tables WHERE pubname = $1`, pub).Scan(&tables); err != nil {
			t.Fatal(err)
		}
		if tables == nil {
			return ""
		}
		return *tables
	}
	var ident, pubOK string
	if err := conn.QueryRow(ctx, `SELECT relreplident::text FROM pg_class WHERE oid = 'public.tickets'::regclass`).Scan(&ident); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT (pubinsert AND pubupdate AND pubdelete AND pubtruncate)::text FROM pg_publication WHERE pubname = 'rowcast'`).Scan(&pubOK); err != nil {
		t.Fatal(err)
	}
	if tables := pubTables("rowcast"); tables != "public.tickets,rowcast.outbox" || ident != "f" || pubOK != "true" {
		t.Errorf("publication tables %q, replica identity %q, publishes all %s", tables, ident, pubOK)
	}
	slotState(t, conn, "rowcast")
	// No grant on the outbox for anyone but its owner.
	var public bool
	if err := conn.QueryRow(ctx, `SELECT has_table_privilege('public', 'rowcast.outbox', 'INSERT')`).Scan(&public); err != nil || public {
		t.Errorf("PUBLIC may insert into rowcast.outbox: %v %v", public, err)
	}

	if err := SetupLogical(ctx, conn, "public.missing", "rowcast", "rowcast"); err == nil {
		t.Error("SetupLogical of a missing table succeeded")
	}
	// A publication that holds another table is refused, whoever made it:
	// another rowcast's, or one shared with another application.
	slotExec(t, conn, `CREATE PUBLICATION shared FOR TABLE other`)
	for _, c := range []struct{ table, pub string }{{"public.other", "rowcast"}, {"public.tickets", "shared"}} {
		err := SetupLogical(ctx, conn, c.table, c.pub, "other_slot")
		if err == nil || !strings.Contains(err.Error(), "ROWCAST_PUBLICATION") || !strings.Contains(err.Error(), "also publishes") {
			t.Errorf("SetupLogical of %s on publication %s = %v", c.table, c.pub, err)
		}
	}
	if tables := pubTables("shared"); tables != "public.other" {
		t.Errorf("refused setup changed publication shared: %s", tables)
	}

	// Teardown refuses while the slot streams.
	fn, err := BroadcastFunctionSQL(true, "rowcast", "ticket")
	if err != nil {
		t.Fatal(err)
	}
	slotExec(t, conn, fn)
	_, stop := runSlot(t, SlotConfig{ConnString: url}, &slotSink{})
	waitUntil(t, 10*time.Second, "the slot to be active", func() bool {
		var active bool
		_ = conn.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = 'rowcast'`).Scan(&active)
		return active
	})
	if _, err := TeardownLogical(ctx, conn, "public.tickets", "rowcast", "rowcast"); err == nil || !strings.Contains(err.Error(), "stop rowcast first") {
		t.Fatalf("TeardownLogical on an active slot = %v", err)
	}
	stop()
	waitUntil(t, 10*time.Second, "teardown", func() bool {
		_, err := TeardownLogical(ctx, conn, "public.tickets", "rowcast", "rowcast")
		return err == nil
	})
	var n int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'rowcast') + (SELECT count(*) FROM pg_publication WHERE pubname = 'rowcast')`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("slot or publication left after teardown")
	}
	if kept, err := TeardownLogical(ctx, conn, "public.tickets", "rowcast", "rowcast"); err != nil || kept != "" {
		t.Errorf("second teardown: %q %v", kept, err)
	}

	// An older rowcast added the table to a shared publication: teardown
	// takes back the table (and the outbox) and leaves the rest.
	slotExec(t, conn, `ALTER PUBLICATION shared ADD TABLE tickets, rowcast.outbox`)
	kept, err := TeardownLogical(ctx, conn, "public.tickets", "shared", "rowcast")
	if err != nil || !strings.Contains(kept, `publication "shared" kept`) || !strings.Contains(kept, "other") {
		t.Errorf("teardown of a shared publication: %q %v", kept, err)
	}
	if tables := pubTables("shared"); tables != "public.other" {
		t.Errorf("shared publication after teardown: %s", tables)
	}

	// The printed SQL does the same when run twice with psql, and refuses
	// a shared publication too.
	psql, err := exec.LookPath("psql")
	if err != nil {
		t.Skip("psql not installed")
	}
	runPsql := func(script string) (string, error) {
		cmd := exec.CommandContext(ctx, psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	script := LogicalSetupSQL("public.tickets", "rowcast", "rowcast")
	for i := 0; i < 2; i++ {
		if out, err := runPsql(script); err != nil {
			t.Fatalf("psql run #%d of the printed setup: %v\n%s\n%s", i+1, err, out, script)
		}
	}
	slotState(t, conn, "rowcast")
	if tables := pubTables("rowcast"); tables != "public.tickets,rowcast.outbox" {
		t.Errorf("publication after the printed setup: %s", tables)
	}
	if out, err := runPsql(LogicalSetupSQL("public.tickets", "shared", "shared_slot")); err == nil || !strings.Contains(out, "also publishes") {
		t.Errorf("printed setup on a shared publication: %v\n%s", err, out)
	}
}

func TestDetectLogical(t *testing.T) {
	url := pgtest.ForTest(t)
	conn := slotConnect(t, url)
	ctx := slotCtx(t, 30*time.Second)
	ok, why, err := DetectLogical(ctx, conn)
	if err != nil || !ok {
		t.Fatalf("DetectLogical as superuser = %v, %q, %v", ok, why, err)
	}
	role := "app_" + strings.ToLower(fmt.Sprint(time.Now().UnixNano()))
	slotExec(t, conn, `CREATE ROLE `+role+` LOGIN`)
	t.Cleanup(func() {
		_, _ = conn.Exec(context.Background(), `DROP ROLE IF EXISTS `+role)
	})
	appCfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	appCfg.User = role
	app, err := pgx.ConnectConfig(ctx, appCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(context.Background())
	ok, why, err = DetectLogical(ctx, app)
	if err != nil || ok || !strings.Contains(why, "lacks REPLICATION") || !strings.Contains(why, "ROWCAST_CAPTURE=notify") {
		t.Fatalf("DetectLogical without REPLICATION = %v, %q, %v", ok, why, err)
	}
}
