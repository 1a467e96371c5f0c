package broadcast

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"rowcast"
)

func row(kv ...string) rowcast.Row {
	var r rowcast.Row
	for i := 0; i+1 < len(kv); i += 2 {
		v, _ := json.Marshal(kv[i+1])
		if kv[i] == "id" {
			v = json.RawMessage(kv[i+1])
		}
		r = append(r, rowcast.Column{Name: kv[i], Value: v})
	}
	return r
}

func change(op rowcast.Op, pos uint64, xid uint64, newRow, old rowcast.Row) rowcast.Change {
	c := rowcast.Change{Op: op, Schema: "public", Table: "tickets", Row: newRow, Old: old, Xid: xid,
		ID: rowcast.EventID{Pos: pos}, CaptureTime: time.Now()}
	if newRow != nil {
		v, _ := newRow.Get("id")
		c.Key = rowcast.Row{{Name: "id", Value: v}}
	} else if old != nil {
		v, _ := old.Get("id")
		c.Key = rowcast.Row{{Name: "id", Value: v}}
	}
	return c
}

// newTestHub makes a hub whose capture has started, so that it counts.
func newTestHub(counts rowcast.CountsLoader, window int) *Hub {
	h := NewHub(HubConfig{Names: NamesFor("ticket", ProfileColon), StatsColumns: []string{"status"},
		StatsInterval: 5 * time.Millisecond, Counts: counts, WindowSize: window, QueueSize: 64})
	h.started = true
	return h
}

// TestStatsWaitForCapture: no count before capture's first start marker
// (in notify mode a count taken before LISTEN misses what is committed
// in between), one at once after it.
func TestStatsWaitForCapture(t *testing.T) {
	var loads atomic.Int32
	h := NewHub(HubConfig{Names: NamesFor("ticket", ProfileColon), StatsColumns: []string{"status"},
		StatsInterval: time.Millisecond, Counts: func(ctx context.Context) (rowcast.Counts, rowcast.XidSnapshot, error) {
			loads.Add(1)
			return loaded(ctx)
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx) }()
	defer func() { cancel(); <-done }()
	// Run goes round its loop every millisecond: about 50 rounds without
	// a count.
	time.Sleep(50 * time.Millisecond)
	if n := loads.Load(); n != 0 {
		t.Fatalf("%d counts before capture started", n)
	}
	h.Apply(ctx, []rowcast.Change{{Op: rowcast.OpStart, ID: rowcast.EventID{Epoch: 1}}})
	waitUntilTrue(t, func() bool { return loads.Load() == 1 })
}

func drain(s *Session) []*Event {
	return s.take(nil)
}

func names(evs []*Event) string {
	var n []string
	for _, e := range evs {
		n = append(n, e.Name)
	}
	return strings.Join(n, " ")
}

func TestTranslatePayloads(t *testing.T) {
	n := NamesFor(PrefixForTable("tickets"), ProfileColon)
	ts := time.Date(2026, 1, 2, 3, 4, 5, 678900000, time.FixedZone("x", 3600))
	c := change(rowcast.OpInsert, 10, 1, row("id", "7", "title", "Hi \"there\"", "status", "open"), nil)
	c.CommitTime = ts
	ev, _ := n.Translate(&c)
	want := `{"id":"000000000000000A-00000000","event":"ticket:created","data":{"ticket":{"id":7,"title":"Hi \"there\"","status":"open"},"timestamp":"2026-01-02T02:04:05.678Z"}}`
	if string(ev.Frame()) != want {
		t.Errorf("frame\n got %s\nwant %s", ev.Frame(), want)
	}
	d := change(rowcast.OpDelete, 11, 1, nil, row("id", "7", "status", "open"))
	d.CommitTime = ts
	ev, _ = n.Translate(&d)
	if string(ev.Data) != `{"ticketId":7,"timestamp":"2026-01-02T02:04:05.678Z"}` {
		t.Errorf("delete data %s", ev.Data)
	}
	u := NamesFor("ticket", ProfileUpdate)
	ev, _ = u.Translate(&d)
	if ev.Name != "ticket_update" || string(ev.Data) != `{"type":"deleted_ticket","ticket":{"id":7,"status":"open"},"timestamp":"2026-01-02T02:04:05.678Z"}` {
		t.Errorf("ticket_update delete %s %s", ev.Name, ev.Data)
	}
	for table, prefix := range map[string]string{"tickets": "ticket", "categories": "category", "boxes": "box", "status": "status", "news": "new"} {
		if got := PrefixForTable(table); got != prefix {
			t.Errorf("PrefixForTable(%q) = %q, want %q", table, got, prefix)
		}
	}
	if !n.Reserved("ticket:created") || !n.Reserved("resync") || n.Reserved("notification") {
		t.Error("Reserved")
	}
}

// TestStatsSnapshotExact: changes that the counted snapshot already saw
// are not counted twice, even when they arrive during the load.
func TestStatsSnapshotExact(t *testing.T) {
	loadStarted := make(chan struct{})
	release := make(chan struct{})
	loader := func(ctx context.Context) (rowcast.Counts, rowcast.XidSnapshot, error) {
		close(loadStarted)
		<-release
		// The count saw xid 100 (and everything below 100), not 105.
		return rowcast.Counts{Total: 2, By: map[string]map[string]int64{"status": {"open": 2}}},
			rowcast.XidSnapshot{Xmin: 101, Xmax: 106, Xip: []uint64{105}}, nil
	}
	h := newTestHub(loader, 100)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.Run(ctx)
	<-loadStarted
	// Arrive while loading: xid 100 (seen by the count) and 105 (not seen).
	h.Apply(ctx, []rowcast.Change{
		change(rowcast.OpInsert, 1, 100, row("id", "1", "status", "open"), nil),
		change(rowcast.OpInsert, 2, 105, row("id", "2", "status", "closed"), nil),
	})
	close(release)
	waitUntilTrue(t, func() bool { _, st := h.Cursor(); return st != nil })
	// After the load: xid 106 is new, xid 99 is old.
	h.Apply(ctx, []rowcast.Change{
		change(rowcast.OpUpdate, 3, 106, row("id", "1", "status", "closed"), row("id", "1", "status", "open")),
		change(rowcast.OpDelete, 4, 99, nil, row("id", "0", "status", "open")),
	})
	_, st := h.Cursor()
	if string(st) != `{"total":3,"byStatus":{"closed":2,"open":1}}` {
		t.Errorf("stats = %s", st)
	}
}

func waitUntilTrue(t *testing.T, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func loaded(ctx context.Context) (rowcast.Counts, rowcast.XidSnapshot, error) {
	return rowcast.Counts{By: map[string]map[string]int64{"status": {}}}, rowcast.XidSnapshot{}, nil
}

func TestWindowResume(t *testing.T) {
	h := newTestHub(loaded, 3)
	ctx := context.Background()
	h.Apply(ctx, []rowcast.Change{{Op: rowcast.OpStart, ID: rowcast.EventID{Pos: 1}}})
	for i := uint64(1); i <= 5; i++ {
		h.Apply(ctx, []rowcast.Change{change(rowcast.OpInsert, i*10, i, row("id", "1", "status", "open"), nil)})
	}
	// The window holds 30, 40, 50; it promises everything after 20.
	if id, ok := h.Oldest(); !ok || id.Pos != 30 {
		t.Fatalf("oldest = %v %v", id, ok)
	}
	s := NewSession("ws", Identity{}, Scope{All: true}, nil, 8, nil)
	sub, _ := h.Subscribe(s, rowcast.EventID{Pos: 20}.String())
	if sub.Resync != nil || len(sub.Replay) != 3 || sub.Replay[0].ID.Pos != 30 {
		t.Errorf("resume at the promise: resync %v, replay %d", sub.Resync, len(sub.Replay))
	}
	s2 := NewSession("ws", Identity{}, Scope{All: true}, nil, 8, nil)
	if sub, _ := h.Subscribe(s2, rowcast.EventID{Pos: 10}.String()); sub.Resync == nil || len(sub.Replay) != 0 {
		t.Errorf("resume before the window: want resync, got %+v", sub)
	}
	s3 := NewSession("ws", Identity{}, Scope{All: true}, nil, 8, nil)
	if sub, _ := h.Subscribe(s3, rowcast.EventID{Epoch: 9, Pos: 40}.String()); sub.Resync == nil {
		t.Error("resume from another epoch: want resync")
	}
	// Duplicates (a slot resending after a reconnect) are dropped.
	h.Apply(ctx, []rowcast.Change{change(rowcast.OpInsert, 50, 5, row("id", "1", "status", "open"), nil)})
	if got := drain(s); len(got) != 0 {
		t.Errorf("duplicate delivered: %s", names(got))
	}
	// A resync empties the window: no earlier id can resume.
	h.Apply(ctx, []rowcast.Change{{Op: rowcast.OpResync, Reason: "slot lost"}})
	if got := drain(s); names(got) != "resync" {
		t.Errorf("got %s, want resync", names(got))
	}
	s4 := NewSession("ws", Identity{}, Scope{All: true}, nil, 8, nil)
	if sub, _ := h.Subscribe(s4, rowcast.EventID{Pos: 50}.String()); sub.Resync == nil {
		t.Error("resume after resync: want resync")
	}
	// Capture restarts at 100: a snapshot taken now must give a cursor
	// that resumes cleanly, not the last event from before the resync.
	h.Apply(ctx, []rowcast.Change{{Op: rowcast.OpStart, ID: rowcast.EventID{Pos: 100}}})
	cursor, _ := h.Cursor()
	id, err := rowcast.ParseEventID(cursor)
	if err != nil {
		t.Fatal(err)
	}
	s5 := NewSession("ws", Identity{}, Scope{All: true}, nil, 8, nil)
	if sub, _ := h.Subscribe(s5, id.String()); sub.Resync != nil || id.Pos != 100 {
		t.Errorf("cursor %s after a resync does not resume", cursor)
	}
}

func TestSlowConsumerDoesNotBlock(t *testing.T) {
	h := newTestHub(loaded, 100)
	ctx := context.Background()
	slow := NewSession("ws", Identity{}, Scope{All: true}, nil, 2, nil)
	fast := NewSession("ws", Identity{}, Scope{All: true}, nil, 100, nil)
	aborted := false
	slow.SetAbort(func() { aborted = true })
	h.Subscribe(slow, "")
	h.Subscribe(fast, "")
	for i := uint64(1); i <= 5; i++ {
		h.Apply(ctx, []rowcast.Change{change(rowcast.OpInsert, i, i, row("id", "1", "status", "open"), nil)})
	}
	if code, reason := slow.CloseReason(); code != CloseSlowConsumer || reason != "slow consumer" || !aborted {
		t.Errorf("slow: %d %q aborted=%v", code, reason, aborted)
	}
	if got := drain(fast); len(got) != 5 {
		t.Errorf("fast got %d events", len(got))
	}
	if h.Clients() != 1 {
		t.Errorf("clients = %d", h.Clients())
	}
}

func TestVisibilityAndFilterRouting(t *testing.T) {
	vis, err := ParseVisibility(DefaultVisibility)
	if err != nil {
		t.Fatal(err)
	}
	ann := vis.ScopeFor(Identity{Claims: map[string]any{"email": "ann@x", "role": "customer"}})
	agent := vis.ScopeFor(Identity{Claims: map[string]any{"email": "a@x", "roles": "x", "role": "admin"}})
	none := vis.ScopeFor(Identity{Claims: map[string]any{"sub": "s"}})
	arr := vis.ScopeFor(Identity{Claims: map[string]any{"role": []any{"viewer", "agent"}}})
	if ann.All || ann.Column != "requester_email" || ann.Value != "ann@x" || !agent.All || !none.None || !arr.All {
		t.Fatalf("scopes: ann %+v agent %+v none %+v arr %+v", ann, agent, none, arr)
	}
	h := newTestHub(loaded, 100)
	ctx := context.Background()
	sa := NewSession("ws", Identity{}, ann, nil, 100, nil)
	sf := NewSession("ws", Identity{}, Scope{All: true}, Filter{"status": {"open"}}, 100, nil)
	h.Subscribe(sa, "")
	h.Subscribe(sf, "")
	mine := row("id", "1", "status", "open", "requester_email", "ann@x")
	h.Apply(ctx, []rowcast.Change{
		change(rowcast.OpInsert, 1, 1, mine, nil),
		change(rowcast.OpInsert, 2, 2, row("id", "2", "status", "open", "requester_email", "bob@x"), nil),
		// Ann's ticket handed to Bob and closed.
		change(rowcast.OpUpdate, 3, 3, row("id", "1", "status", "closed", "requester_email", "bob@x"), mine),
		change(rowcast.OpDelete, 4, 4, nil, row("id", "2", "status", "open", "requester_email", "bob@x")),
	})
	got := drain(sa)
	if names(got) != "ticket:created ticket:deleted" || strings.Contains(string(got[1].Data), "bob") {
		t.Errorf("ann got %s / %s", names(got), got[len(got)-1].Data)
	}
	// The filtered client: both opens, the leaving update, the open delete.
	if got := drain(sf); names(got) != "ticket:created ticket:created ticket:updated ticket:deleted" {
		t.Errorf("filtered got %s", names(got))
	}
	// Stats go to unrestricted sessions only.
	ctx2, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); h.Run(ctx2) }()
	waitUntilTrue(t, func() bool {
		for _, e := range drain(sf) {
			if e.Name == statsEvent {
				return true
			}
		}
		return false
	})
	cancel()
	wg.Wait()
	for _, e := range drain(sa) {
		if e.Name == statsEvent {
			t.Error("restricted session got stats")
		}
	}
	for _, bad := range []string{"", "role => all", "claim:role in => all", "status", "x = y"} {
		if _, err := ParseVisibility(bad); err == nil {
			t.Errorf("ParseVisibility(%q) accepted", bad)
		}
	}
}

func TestParseFilter(t *testing.T) {
	allowed := []string{"status", "priority"}
	f, err := ParseFilterJSON(json.RawMessage(`{"status":["open","in_progress"],"priority":"high"}`), allowed)
	if err != nil || len(f["status"]) != 2 || f["priority"][0] != "high" {
		t.Fatalf("%v %v", f, err)
	}
	if _, err := ParseFilterJSON(json.RawMessage(`{"title":"x"}`), allowed); err == nil || !strings.Contains(err.Error(), `unknown filter column "title"`) {
		t.Errorf("unknown column: %v", err)
	}
	if _, err := ParseFilterJSON(json.RawMessage(`[1]`), allowed); err == nil {
		t.Error("array accepted")
	}
	if f, err := ParseFilterJSON(json.RawMessage(`null`), allowed); err != nil || f != nil {
		t.Error("null should clear")
	}
}

func BenchmarkFanout1000(b *testing.B) {
	h := newTestHub(loaded, 10000)
	sessions := make([]*Session, 1000)
	for i := range sessions {
		sessions[i] = NewSession("ws", Identity{}, Scope{All: true}, nil, 1024, nil)
		h.Subscribe(sessions[i], "")
	}
	r := row("id", "1", "title", strings.Repeat("x", 300), "status", "open")
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.Apply(ctx, []rowcast.Change{change(rowcast.OpUpdate, uint64(i+1), uint64(i+1), r, r)})
		if i%512 == 511 {
			for _, s := range sessions {
				drain(s)
			}
		}
	}
}

func TestOwnEventNames(t *testing.T) {
	if got := strings.Join(NamesFor("ticket", ProfileColon).Own(), " "); got != "ticket:created ticket:updated ticket:deleted stats:updated resync subscribed error" {
		t.Errorf("colon profile: %s", got)
	}
	if got := strings.Join(NamesFor("ticket", ProfileUpdate).Own(), " "); got != "ticket_update stats:updated resync subscribed error" {
		t.Errorf("ticket_update profile: %s", got)
	}
}

// A cursor that is malformed or ahead of every event gets resync, never
// silence; one at the newest event resumes quietly.
func TestCursorAheadOrMalformed(t *testing.T) {
	ctx := context.Background()
	h := newTestHub(loaded, 100)
	// Capture started at 10 and the server's WAL was at 1000 then.
	h.Apply(ctx, []rowcast.Change{{Op: rowcast.OpStart, ID: rowcast.EventID{Pos: 10}, Horizon: rowcast.EventID{Pos: 1000}}})
	h.Apply(ctx, []rowcast.Change{change(rowcast.OpInsert, 20, 1, row("id", "1", "status", "open"), nil)})
	subscribe := func(cursor string) Subscription {
		sub, err := h.Subscribe(NewSession("ws", Identity{}, Scope{All: true}, nil, 8, nil), cursor)
		if err != nil {
			t.Fatal(err)
		}
		return sub
	}
	for cursor, want := range map[string]string{
		"garbage":                                    "malformed",
		rowcast.EventID{Pos: 2000}.String():          "ahead",
		rowcast.EventID{Epoch: 7, Pos: 1}.String():   "older",
		rowcast.EventID{Pos: 999, Index: 5}.String(): "", // before the horizon: events may still come
		rowcast.EventID{Pos: 20}.String():            "",
		rowcast.EventID{Pos: 10}.String():            "",
	} {
		sub := subscribe(cursor)
		switch {
		case want == "" && sub.Resync != nil:
			t.Errorf("%s: resync %s", cursor, sub.Resync.Data)
		case want != "" && (sub.Resync == nil || !strings.Contains(string(sub.Resync.Data), want)):
			t.Errorf("%s: want a resync saying %q, got %+v", cursor, want, sub.Resync)
		}
	}
	// Notify mode: no horizon beyond the start; an id past the last event
	// of the epoch is ahead.
	h2 := newTestHub(loaded, 100)
	h2.Apply(ctx, []rowcast.Change{{Op: rowcast.OpStart, ID: rowcast.EventID{Epoch: 5}, Horizon: rowcast.EventID{Epoch: 5}}})
	c := change(rowcast.OpInsert, 0, 1, row("id", "1", "status", "open"), nil)
	c.ID = rowcast.EventID{Epoch: 5, Pos: 1}
	h2.Apply(ctx, []rowcast.Change{c})
	sub, _ := h2.Subscribe(NewSession("ws", Identity{}, Scope{All: true}, nil, 8, nil), rowcast.EventID{Epoch: 5, Pos: 3}.String())
	if sub.Resync == nil {
		t.Error("notify: a cursor past the last event was accepted")
	}
}

func TestFilterLimits(t *testing.T) {
	allowed := []string{"status", "priority"}
	many := make([]string, MaxFilterValues+1)
	for i := range many {
		many[i] = fmt.Sprint(i)
	}
	if _, err := ParseFilterQuery(url.Values{"status": {strings.Join(many, ",")}}, allowed); err == nil || !strings.Contains(err.Error(), "at most 100") {
		t.Errorf("101 values in a query: %v", err)
	}
	if _, err := ParseFilterQuery(url.Values{"status": {strings.Repeat("x", MaxFilterBytes)}}, allowed); err == nil || !strings.Contains(err.Error(), "bytes") {
		t.Errorf("a huge query: %v", err)
	}
	js, _ := json.Marshal(map[string][]string{"status": many})
	if _, err := ParseFilterJSON(js, allowed); err == nil {
		t.Errorf("101 values in JSON accepted")
	}
	big, _ := json.Marshal(map[string]string{"status": strings.Repeat("y", MaxFilterBytes)})
	if _, err := ParseFilterJSON(big, allowed); err == nil || !strings.Contains(err.Error(), "bytes") {
		t.Errorf("a huge JSON filter: %v", err)
	}
	f, err := ParseFilterJSON(json.RawMessage(`{"status":["open","closed"],"priority":"high"}`), allowed)
	if err != nil {
		t.Fatal(err)
	}
	if !f.Matches(row("id", "1", "status", "closed", "priority", "high")) || f.Matches(row("id", "1", "status", "closed", "priority", "low")) {
		t.Errorf("matching through sets is wrong")
	}
}

// Application events with a bad or reserved name, or a bad payload, are
// dropped whatever their source; good ones go out.
func TestMessagesChecked(t *testing.T) {
	h := newTestHub(loaded, 100)
	s := NewSession("ws", Identity{}, Scope{All: true}, nil, 100, nil)
	h.Subscribe(s, "")
	msg := func(name, payload string) rowcast.Change {
		return rowcast.Change{Op: rowcast.OpMessage, Event: name, Payload: json.RawMessage(payload), CaptureTime: time.Now()}
	}
	h.Apply(context.Background(), []rowcast.Change{
		msg("x\nid: 1", `{}`), msg("ticket:deleted", `{"ticketId":1}`), msg("resync", `{}`), msg("connect", `{}`),
		msg("notification", `{not json`), msg(strings.Repeat("n", 65), `{}`),
		msg("notification", `{"message":"ok"}`),
	})
	if got := names(drain(s)); got != "notification" {
		t.Errorf("delivered %s, want only the good notification", got)
	}
}

// The window's age counts from each event's commit, not from when this
// process received it: events resent after a restart expire on time.
func TestWindowAgeFromCommit(t *testing.T) {
	h := NewHub(HubConfig{Names: NamesFor("ticket", ProfileColon), WindowAge: time.Minute})
	old := change(rowcast.OpInsert, 10, 1, row("id", "1", "status", "open"), nil)
	old.CommitTime = time.Now().Add(-2 * time.Minute)
	fresh := change(rowcast.OpInsert, 20, 2, row("id", "2", "status", "open"), nil)
	fresh.CommitTime = time.Now()
	h.Apply(context.Background(), []rowcast.Change{old, fresh})
	h.mu.Lock()
	h.win.expire(time.Now())
	h.mu.Unlock()
	if id, ok := h.Oldest(); !ok || id.Pos != 20 {
		t.Fatalf("oldest after expiry: %v %v, want 20", id, ok)
	}
}

// After a TRUNCATE the snapshot's cursor is the truncate's id, never "":
// a client that refetches and resumes from it misses nothing.
func TestCursorAfterTruncate(t *testing.T) {
	h := newTestHub(loaded, 100)
	ctx := context.Background()
	h.Apply(ctx, []rowcast.Change{{Op: rowcast.OpStart, ID: rowcast.EventID{Pos: 1}}})
	h.Apply(ctx, []rowcast.Change{change(rowcast.OpInsert, 10, 1, row("id", "1", "status", "open"), nil)})
	h.Apply(ctx, []rowcast.Change{{Op: rowcast.OpTruncate, ID: rowcast.EventID{Pos: 20}, Reason: "truncated"}})
	cursor, _ := h.Cursor()
	if cursor != (rowcast.EventID{Pos: 20}).String() {
		t.Fatalf("cursor after truncate %q", cursor)
	}
	s := NewSession("ws", Identity{}, Scope{All: true}, nil, 8, nil)
	sub, _ := h.Subscribe(s, cursor)
	if sub.Resync != nil {
		t.Fatalf("resuming from the cursor after truncate: resync")
	}
	h.Apply(ctx, []rowcast.Change{change(rowcast.OpInsert, 30, 2, row("id", "2", "status", "open"), nil)})
	if got := names(drain(s)); got != "ticket:created" {
		t.Fatalf("after truncate: %s", got)
	}
}

// TestRoutingWithoutOldValues: updates and deletes that come without the
// old values a session decides on (a table that is not REPLICA IDENTITY
// FULL) go where the row may have been: the restricted user whose new
// row is not visible gets a delete of the key (never the new values), the
// filtered client the update, everyone a delete; inserts are routed as
// always.
func TestRoutingWithoutOldValues(t *testing.T) {
	h := newTestHub(loaded, 100)
	ctx := context.Background()
	ann := NewSession("ws", Identity{}, Scope{Column: "requester_email", Value: "ann"}, nil, 16, nil)
	open := NewSession("ws", Identity{}, Scope{All: true}, Filter{"status": {"open"}}, 16, nil)
	all := NewSession("ws", Identity{}, Scope{All: true}, nil, 16, nil)
	for _, s := range []*Session{ann, open, all} {
		h.Subscribe(s, "")
	}
	h.Apply(ctx, []rowcast.Change{
		change(rowcast.OpInsert, 1, 1, row("id", "1", "status", "closed", "requester_email", "bob"), nil),
		// Key only, as pgoutput sends under REPLICA IDENTITY DEFAULT.
		change(rowcast.OpUpdate, 2, 2, row("id", "1", "status", "closed", "requester_email", "bob"), nil),
		change(rowcast.OpDelete, 3, 3, nil, row("id", "1")),
	})
	if got := drain(ann); names(got) != "ticket:deleted ticket:deleted" || strings.Contains(string(got[0].Data), "bob") {
		t.Errorf("ann got %s, want two deletes of the key only", names(got))
	}
	if got := drain(open); names(got) != "ticket:updated ticket:deleted" {
		t.Errorf("the open filter got %s", names(got))
	}
	if got := drain(all); names(got) != "ticket:created ticket:updated ticket:deleted" {
		t.Errorf("all got %s", names(got))
	}
}

// TestDegradedRecountsSpaced: changes without old values make the stats
// recount, but not once per change.
func TestDegradedRecountsSpaced(t *testing.T) {
	var loads atomic.Int32
	h := newTestHub(func(ctx context.Context) (rowcast.Counts, rowcast.XidSnapshot, error) {
		loads.Add(1)
		return loaded(ctx)
	}, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitUntilTrue(t, func() bool { return loads.Load() == 1 })
	start := time.Now()
	for i := uint64(1); i <= 50; i++ {
		h.Apply(ctx, []rowcast.Change{change(rowcast.OpUpdate, i, i, row("id", "1", "status", "open"), nil)})
		time.Sleep(time.Millisecond)
	}
	for deadline := time.Now().Add(4 * degradedRecount); loads.Load() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no recount after changes without old values")
		}
	}
	if n, most := loads.Load(), 2+int32(time.Since(start)/degradedRecount); n > most {
		t.Errorf("%d counts for 50 updates in %v; at most %d", n, time.Since(start), most)
	}
}

// TestResyncStartsANewStream: after a resync the positions of what
// follows may be below the last one handled (a failover, a restore):
// those are new changes, not duplicates.
func TestResyncStartsANewStream(t *testing.T) {
	h := newTestHub(loaded, 100)
	ctx := context.Background()
	s := NewSession("ws", Identity{}, Scope{All: true}, nil, 16, nil)
	h.Subscribe(s, "")
	h.Apply(ctx, []rowcast.Change{change(rowcast.OpInsert, 100, 1, row("id", "1", "status", "open"), nil)})
	h.Apply(ctx, []rowcast.Change{{Op: rowcast.OpResync, Reason: "history changed"}})
	h.Apply(ctx, []rowcast.Change{change(rowcast.OpInsert, 50, 2, row("id", "2", "status", "open"), nil)})
	if got := drain(s); names(got) != "ticket:created resync ticket:created" {
		t.Errorf("got %s, want the change after the resync too", names(got))
	}
}

// TestResumeWaitsForCapture: a client resuming from a rowcast that has
// just started waits for capture's start marker, then resumes, where it
// used to be told to resync; a snapshot's cursor waits the same way.
func TestResumeWaitsForCapture(t *testing.T) {
	h := NewHub(HubConfig{Names: NamesFor("ticket", ProfileColon), WindowSize: 100, AwaitCapture: time.Minute})
	ctx := context.Background()
	subc := make(chan Subscription, 1)
	curc := make(chan string, 1)
	go func() {
		sub, _ := h.Subscribe(NewSession("ws", Identity{}, Scope{All: true}, nil, 16, nil), rowcast.EventID{Pos: 50}.String())
		subc <- sub
	}()
	go func() { id, _ := h.Cursor(); curc <- id }()
	// Not answered before capture starts (a wait that proves absence).
	select {
	case <-subc:
		t.Fatal("resume answered before capture started")
	case <-curc:
		t.Fatal("cursor given before capture started")
	case <-time.After(50 * time.Millisecond):
	}
	h.Apply(ctx, []rowcast.Change{{Op: rowcast.OpStart, ID: rowcast.EventID{Pos: 10}, Horizon: rowcast.EventID{Pos: 100}}})
	if sub := <-subc; sub.Resync != nil || !sub.HasCursor {
		t.Errorf("resume after the start marker: %+v, want a replay", sub)
	}
	if id := <-curc; id != (rowcast.EventID{Pos: 10}).String() {
		t.Errorf("cursor %q, want the start marker's", id)
	}
}

// TestTruncateSentAgain: after a restart the slot sends again the
// transactions the window held, a TRUNCATE among them; a client that
// resumed from after it is not told to resync, one from before it is.
func TestTruncateSentAgain(t *testing.T) {
	h := newTestHub(loaded, 100)
	ctx := context.Background()
	h.Apply(ctx, []rowcast.Change{{Op: rowcast.OpStart, ID: rowcast.EventID{Pos: 10}, Horizon: rowcast.EventID{Pos: 100}}})
	after := NewSession("ws", Identity{}, Scope{All: true}, nil, 16, nil)
	before := NewSession("ws", Identity{}, Scope{All: true}, nil, 16, nil)
	fresh := NewSession("ws", Identity{}, Scope{All: true}, nil, 16, nil)
	h.Subscribe(after, rowcast.EventID{Pos: 20, Index: 1}.String())
	h.Subscribe(before, rowcast.EventID{Pos: 10}.String())
	h.Subscribe(fresh, "")
	insert := change(rowcast.OpInsert, 20, 2, row("id", "1", "status", "open"), nil)
	insert.ID.Index = 2
	h.Apply(ctx, []rowcast.Change{{Op: rowcast.OpTruncate, ID: rowcast.EventID{Pos: 20}, Reason: "truncate"}, insert})
	for s, want := range map[*Session]string{after: "ticket:created", before: "resync ticket:created", fresh: "resync ticket:created"} {
		if got := names(drain(s)); got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
}
