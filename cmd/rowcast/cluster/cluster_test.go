package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"rowcast"
	"rowcast/integration/natscluster"
)

// recorder is a sink that keeps what it is handed.
type recorder struct {
	mu      sync.Mutex
	changes []rowcast.Change
}

func (r *recorder) Apply(_ context.Context, cs []rowcast.Change) error {
	r.mu.Lock()
	r.changes = append(r.changes, cs...)
	r.mu.Unlock()
	return nil
}

func (r *recorder) rows() []rowcast.EventID {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []rowcast.EventID
	for _, c := range r.changes {
		if isChange(&c) {
			out = append(out, c.ID)
		}
	}
	return out
}

const epoch = rowcast.HistoryFlag | 42

func change(pos uint64) rowcast.Change {
	return rowcast.Change{Op: rowcast.OpInsert, Schema: "public", Table: "tickets",
		ID:  rowcast.EventID{Epoch: epoch, Pos: pos},
		Key: rowcast.Row{{Name: "id", Value: json.RawMessage(fmt.Sprint(pos))}},
		Row: rowcast.Row{{Name: "id", Value: json.RawMessage(fmt.Sprint(pos))}}, CaptureTime: time.Now()}
}

func changes(from, to uint64) []rowcast.Change {
	var out []rowcast.Change
	for p := from; p < to; p++ {
		out = append(out, change(p))
	}
	return out
}

// apply publishes and waits for the stream's acknowledgement.
func apply(ctx context.Context, p *Publisher, cs []rowcast.Change) error {
	if err := p.Apply(ctx, cs); err != nil {
		return err
	}
	return p.Flush(ctx)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func dial(t *testing.T, nc *natscluster.Cluster, replicas int) *Conn {
	t.Helper()
	conn, err := Dial(NATSConfig{URLs: []string{nc.URLs()}, Stream: "T", Replicas: replicas,
		MaxAge: time.Hour, Duplicates: time.Minute, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := conn.EnsureStream(ctx)
		cancel()
		if err == nil {
			return conn
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// oneServer starts a one-server JetStream for the test and dials it.
func oneServer(t *testing.T) *Conn {
	t.Helper()
	nc, err := natscluster.Start(t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Stop)
	return dial(t, nc, 1)
}

// begun is a publisher to conn that has begun its term.
func begun(t *testing.T, conn *Conn) *Publisher {
	t.Helper()
	p := NewPublisher(conn, 10*time.Second, quiet())
	if err := p.Begin(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	return p
}

// consumeAll runs a consumer into a recorder until the test ends.
func consumeAll(t *testing.T, conn *Conn) (*recorder, *Consumer) {
	rec := &recorder{}
	c := NewConsumer(conn, rec, nil, quiet())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return rec, c
}

func waitRows(t *testing.T, rec *recorder, n int) []rowcast.EventID {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		rows := rec.rows()
		if len(rows) >= n {
			return rows
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer has %d changes, want %d", len(rows), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func checkSequence(t *testing.T, rows []rowcast.EventID, n int) {
	t.Helper()
	if len(rows) != n {
		t.Fatalf("%d changes on the stream, want %d", len(rows), n)
	}
	for i, id := range rows {
		if id.Pos != uint64(i+1) {
			t.Fatalf("change %d on the stream is %d: gap, duplicate or reordering", i+1, id.Pos)
		}
	}
}

// A new term replays from the slot what the stream holds already: it is
// skipped, and what follows is stored once, in order.
func TestPublishTermsReplay(t *testing.T) {
	conn := oneServer(t)
	rec, _ := consumeAll(t, conn)
	ctx := context.Background()
	p := begun(t, conn)
	if err := apply(ctx, p, append([]rowcast.Change{{Op: rowcast.OpStart, ID: rowcast.EventID{Epoch: epoch, Pos: 1}}}, changes(1, 301)...)); err != nil {
		t.Fatal(err)
	}
	// The next term starts from an older slot position.
	p2 := NewPublisher(conn, 10*time.Second, quiet())
	if err := p2.Begin(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := apply(ctx, p2, append([]rowcast.Change{{Op: rowcast.OpStart, ID: rowcast.EventID{Epoch: epoch, Pos: 200}}}, changes(200, 501)...)); err != nil {
		t.Fatal(err)
	}
	// A publisher that did not Begin (a zombie of an old term) is refused:
	// it expects another last message.
	if err := apply(ctx, p, changes(501, 502)); err == nil {
		t.Fatal("a publisher of an old term published after a newer one")
	}
	checkSequence(t, waitRows(t, rec, 500), 500)
}

// One of three NATS servers (the stream's leader) is killed while a
// publisher publishes: each failed batch is published again by a new term,
// as a new capturer would, and the stream holds every change once, in
// order.
func TestPublishAcrossServerKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-server NATS cluster")
	}
	nc, err := natscluster.Start(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Stop()
	conn := dial(t, nc, 3)
	rec, _ := consumeAll(t, conn)
	ctx := context.Background()
	const total, size = 6000, 100
	p := NewPublisher(conn, 5*time.Second, quiet())
	begun, failures, killed := false, 0, false
	for next := uint64(1); next <= total; {
		if !begun {
			if err := p.Begin(ctx, nil); err != nil {
				i, lerr := nc.StreamLeader("T")
				t.Logf("begin: %v (leader %d %v)", err, i, lerr)
				failures++
				time.Sleep(200 * time.Millisecond)
				continue
			}
			begun = true
		}
		if next > total/3 && !killed {
			i, err := nc.StreamLeader("T")
			if err == nil {
				nc.Kill(i)
				killed = true
				t.Logf("killed NATS server %d (the stream leader) after %d changes", i+1, next-1)
			}
		}
		// A new term replays from an older position, like the slot.
		from := next
		if failures > 0 && from > 50 {
			from -= 50
		}
		if err := apply(ctx, p, changes(from, min(next+size, total+1))); err != nil {
			t.Logf("publish: %v", err)
			failures++
			begun = false
			if failures > 200 {
				t.Fatalf("publishing keeps failing: %v", err)
			}
			continue
		}
		next = min(next+size, total+1)
	}
	t.Logf("%d failed batches or terms", failures)
	if !killed {
		t.Fatal("no stream leader found to kill")
	}
	checkSequence(t, waitRows(t, rec, total), total)
}

// A node that starts when every message of the stream has expired (an
// idle night) is ready at once: there is nothing to fill its window from,
// and it must not wait for a message that will not come (it would never
// compete for capture, and nobody would publish one).
func TestConsumerReadyOnExpiredStream(t *testing.T) {
	nc, err := natscluster.Start(t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Stop()
	conn, err := Dial(NATSConfig{URLs: []string{nc.URLs()}, Stream: "T", Replicas: 1,
		MaxAge: time.Second, Duplicates: 500 * time.Millisecond, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	if err := conn.EnsureStream(ctx); err != nil {
		t.Fatal(err)
	}
	p := begun(t, conn)
	if err := apply(ctx, p, changes(1, 11)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); ; {
		last, err := conn.LastSeq(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if last == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stream's messages did not expire")
		}
		time.Sleep(50 * time.Millisecond)
	}
	rec, c := consumeAll(t, conn)
	for deadline := time.Now().Add(time.Minute); !c.Ready(); {
		if time.Now().After(deadline) {
			t.Fatal("the consumer of an expired stream is not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A new term goes on from the stream's sequence.
	if err := p.Begin(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := apply(ctx, p, changes(11, 21)); err != nil {
		t.Fatal(err)
	}
	rows := waitRows(t, rec, 10)
	if rows[0].Pos != 11 || len(rows) != 10 {
		t.Fatalf("consumed %v", rows)
	}
}

// The stream is input too: a message that is not a change is counted and
// skipped, and the changes around it are handed on.
func TestConsumerSkipsBadMessages(t *testing.T) {
	conn := oneServer(t)
	ctx := context.Background()
	p := begun(t, conn)
	if err := apply(ctx, p, changes(1, 6)); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"not json", `{"v":99,"op":"insert"}`, `{"v":1,"op":"insert"}`, `{"v":1,"op":"explode","id":"e1-0000000000000001"}`} {
		if _, err := conn.js.Publish(ctx, "T.changes", []byte(bad)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Begin(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := apply(ctx, p, changes(6, 11)); err != nil {
		t.Fatal(err)
	}
	rec, c := consumeAll(t, conn)
	checkSequence(t, waitRows(t, rec, 10), 10)
	if n := c.Bad(); n != 4 {
		t.Fatalf("%d bad messages counted, want 4", n)
	}
}

// fakeLog acknowledges a batch when the test says so.
type fakeLog struct{ batches []*fakePending }

type fakePending struct {
	done chan struct{}
	err  error
}

func (f *fakePending) Poll() (bool, error) {
	select {
	case <-f.done:
		return true, f.err
	default:
		return false, nil
	}
}

func (f *fakePending) Wait(ctx context.Context) error {
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (l *fakeLog) Publish(_ context.Context, msgs []Message, _ uint64) (Pending, error) {
	p := &fakePending{done: make(chan struct{})}
	l.batches = append(l.batches, p)
	return p, nil
}

func (l *fakeLog) MaxMessage() int { return 1 << 20 }

func (l *fakeLog) Tail(context.Context, int, func(Message) bool) ([]Message, uint64, error) {
	return nil, 0, nil
}

// The slot is held at the oldest change the stream has not acknowledged;
// a batch not acknowledged in time ends the term.
func TestPublisherHoldsTheSlot(t *testing.T) {
	ctx := context.Background()
	log := &fakeLog{}
	p := NewPublisher(log, time.Hour, quiet())
	var failed error
	if err := p.Begin(ctx, func(err error) { failed = err }); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Oldest(); ok {
		t.Fatal("an idle publisher holds the slot")
	}
	for _, b := range [][2]uint64{{1, 4}, {4, 8}} {
		if err := p.Apply(ctx, changes(b[0], b[1])); err != nil {
			t.Fatal(err)
		}
	}
	if id, ok := p.Oldest(); !ok || id.Pos != 1 {
		t.Fatalf("oldest %v %v, want change 1", id, ok)
	}
	close(log.batches[0].done)
	if id, ok := p.Oldest(); !ok || id.Pos != 4 {
		t.Fatalf("oldest %v %v after the first batch, want change 4", id, ok)
	}
	close(log.batches[1].done)
	if _, ok := p.Oldest(); ok {
		t.Fatal("the slot is held after every batch was acknowledged")
	}

	short := NewPublisher(log, time.Millisecond, quiet())
	if err := short.Begin(ctx, func(err error) { failed = err }); err != nil {
		t.Fatal(err)
	}
	if err := short.Apply(ctx, changes(8, 9)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	if err := short.Check(); !errors.Is(err, ErrPublishTimeout) || !errors.Is(failed, ErrPublishTimeout) {
		t.Fatalf("overdue batch: %v, fail told %v", err, failed)
	}
	if err := short.Apply(ctx, changes(9, 10)); err == nil {
		t.Fatal("a failed term published again")
	}
	if id, ok := short.Oldest(); !ok || id.Pos != 8 {
		t.Fatalf("oldest %v %v after a failure, want change 8: the slot must keep it", id, ok)
	}
}

// The capturing node's consumer hands on its own changes as published,
// without decoding them, in the stream's order, across terms (the second
// replays from an older slot position) and with what the stream holds
// from before it started (decoded).
func TestConsumerHandsOnOwnChanges(t *testing.T) {
	conn := oneServer(t)
	ctx := context.Background()
	// Another node published the first 100 before this one started.
	other := begun(t, conn)
	if err := apply(ctx, other, changes(1, 101)); err != nil {
		t.Fatal(err)
	}
	rec, c := consumeAll(t, conn)
	p := NewPublisher(conn, 10*time.Second, quiet())
	p.HandOff(c)
	for term := 0; term < 2; term++ {
		if err := p.Begin(ctx, nil); err != nil {
			t.Fatal(err)
		}
		from := uint64(50 + 200*term) // the slot sends some again
		for i := from; i < from+300; i += 10 {
			if err := p.Apply(ctx, changes(i, i+10)); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	rows := waitRows(t, rec, 549)
	checkSequence(t, rows, 549)
	if got := c.own.taken.Load(); got < 400 {
		t.Fatalf("%d changes handed on without decoding, want at least 400 of this node's 449", got)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, ch := range rec.changes {
		if isChange(&ch) && (ch.Table != "tickets" || len(ch.Row) != 1 || string(ch.Row[0].Value) != fmt.Sprint(ch.ID.Pos)) {
			t.Fatalf("change %d handed on as %+v", ch.ID.Pos, ch)
		}
	}
}

func TestOwnQueue(t *testing.T) {
	var o ownQueue
	a, b := change(1), change(2)
	o.put(1, []byte("a"), []rowcast.Change{a})
	o.put(2, []byte("b"), []rowcast.Change{b})
	if _, ok := o.take(1, []byte("x")); ok {
		t.Fatal("a message with other bytes than published was taken as published")
	}
	if chs, ok := o.take(2, []byte("b")); !ok || len(chs) != 1 || chs[0].ID.Pos != 2 {
		t.Fatalf("take(2) = %v, %v", chs, ok)
	}
	// A new term from an older end of the stream drops what did not land.
	o.put(3, []byte("c"), []rowcast.Change{a})
	o.put(4, []byte("d"), []rowcast.Change{a})
	o.put(3, []byte("e"), []rowcast.Change{b})
	if _, ok := o.take(4, []byte("d")); ok {
		t.Fatal("a message of a failed term was taken")
	}
	if o.n != 0 || o.bytes != 0 {
		t.Fatalf("queue holds %d messages, %d bytes after taking everything", o.n, o.bytes)
	}
	// Grown while wrapped around: every message is taken, in order.
	var w ownQueue
	next := uint64(1)
	for round := 0; round < 3; round++ {
		for i := 0; i < 50; i++ {
			c := change(next + uint64(w.n))
			w.put(c.ID.Pos, []byte(fmt.Sprint(c.ID.Pos)), []rowcast.Change{c})
		}
		for i := 0; i < 30; i++ {
			chs, ok := w.take(next, []byte(fmt.Sprint(next)))
			if !ok || len(chs) != 1 || chs[0].ID.Pos != next {
				t.Fatalf("round %d: take(%d) = %v, %v", round, next, chs, ok)
			}
			next++
		}
	}
	// Bounded: a consumer that does not keep up decodes instead.
	for i := uint64(10); i < 10+2*maxOwnMessages; i++ {
		o.put(i, []byte("f"), []rowcast.Change{a})
	}
	if o.n != maxOwnMessages {
		t.Fatalf("queue holds %d messages, bound %d", o.n, maxOwnMessages)
	}
	// Around the ring: the consumer takes half, the publisher adds more.
	if _, ok := o.take(10+maxOwnMessages/2, []byte("f")); !ok {
		t.Fatal("a queued message was not taken")
	}
	for i := uint64(10 + 2*maxOwnMessages); i < 10+2*maxOwnMessages+maxOwnMessages/4; i++ {
		o.put(i, []byte("g"), []rowcast.Change{a})
	}
	if _, ok := o.take(10+maxOwnMessages, []byte("f")); ok {
		t.Fatal("a message beyond the bound was taken")
	}
	if chs, ok := o.take(10+2*maxOwnMessages+1, []byte("g")); !ok || chs[0].ID != a.ID {
		t.Fatal("a message queued around the ring was not taken")
	}
}

// smallLog is a stream whose servers take small messages only.
type smallLog struct {
	*Conn
	max int
}

func (s smallLog) MaxMessage() int { return s.max }

// A capture batch goes to the stream in as few messages as the limits
// allow: at most Batch changes each, and none larger than the servers
// take. Markers travel among the changes, and the consumer hands on every
// change once, in order, whichever way the messages were cut.
func TestPublishBatches(t *testing.T) {
	for _, tc := range []struct {
		name      string
		batch     int
		max       int
		wantMsgs  int // messages of the first term's 301 changes and 2 markers
		checkSize bool
	}{
		{"default", DefaultBatch, 1 << 20, 1, false},
		{"by count", 7, 1 << 20, 44, false},
		{"one per message", 1, 1 << 20, 303, false},
		{"by size", DefaultBatch, 1000, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := oneServer(t)
			rec, _ := consumeAll(t, conn)
			ctx := context.Background()
			p := NewPublisher(smallLog{conn, tc.max}, 10*time.Second, quiet())
			p.Batch(tc.batch)
			if err := p.Begin(ctx, nil); err != nil {
				t.Fatal(err)
			}
			cs := append([]rowcast.Change{{Op: rowcast.OpStart, ID: rowcast.EventID{Epoch: epoch, Pos: 1}}}, changes(1, 151)...)
			cs = append(cs, rowcast.Change{Op: rowcast.OpResync, Reason: "test"})
			cs = append(cs, changes(151, 302)...)
			if err := apply(ctx, p, cs); err != nil {
				t.Fatal(err)
			}
			last, err := conn.LastSeq(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantMsgs > 0 && last != uint64(tc.wantMsgs) {
				t.Fatalf("%d messages on the stream, want %d", last, tc.wantMsgs)
			}
			if tc.checkSize {
				s, err := conn.js.Stream(ctx, "T")
				if err != nil {
					t.Fatal(err)
				}
				for seq := uint64(1); seq <= last; seq++ {
					m, err := s.GetMsg(ctx, seq)
					if err != nil {
						t.Fatal(err)
					}
					if len(m.Data) > tc.max {
						t.Fatalf("message %d is %d bytes, the servers take %d", seq, len(m.Data), tc.max)
					}
				}
				if last < 20 {
					t.Fatalf("%d messages of at most %d bytes for 303 changes", last, tc.max)
				}
			}
			// The next term replays from an older position: what the
			// stream holds is skipped, whatever message it came in.
			p2 := NewPublisher(smallLog{conn, tc.max}, 10*time.Second, quiet())
			p2.Batch(tc.batch)
			if err := p2.Begin(ctx, nil); err != nil {
				t.Fatal(err)
			}
			if err := apply(ctx, p2, changes(290, 401)); err != nil {
				t.Fatal(err)
			}
			checkSequence(t, waitRows(t, rec, 400), 400)
			rec.mu.Lock()
			defer rec.mu.Unlock()
			var ops []rowcast.Op
			for _, c := range rec.changes {
				// The published markers (not the consumer's own start).
				if !isChange(&c) && (!c.ID.IsZero() || c.Reason != "") {
					ops = append(ops, c.Op)
				}
			}
			if fmt.Sprint(ops) != "[start resync]" {
				t.Fatalf("markers handed on: %v", ops)
			}
		})
	}
}

// A change larger than a message goes in parts, which every node puts
// back together, the capturing node included; parts a failed term left
// behind are dropped, and the change comes again whole; a part header no
// publisher writes is counted; a change larger than any node decodes is
// replaced by a resync.
func TestPublishChangeInParts(t *testing.T) {
	conn := oneServer(t)
	ctx := context.Background()
	rec, c := consumeAll(t, conn)
	other, _ := consumeAll(t, conn)
	p := NewPublisher(smallLog{conn, 1000}, 10*time.Second, quiet())
	p.HandOff(c)
	if err := p.Begin(ctx, nil); err != nil {
		t.Fatal(err)
	}
	big := func(pos uint64) rowcast.Change {
		ch := change(pos)
		ch.Row = append(ch.Row, rowcast.Column{Name: "description", Value: json.RawMessage(`"` + strings.Repeat("x", 5000) + fmt.Sprint(pos) + `"`)})
		return ch
	}
	if err := apply(ctx, p, []rowcast.Change{change(1), big(2), change(3), change(4)}); err != nil {
		t.Fatal(err)
	}
	// A term that fails half way through a change: two parts of three.
	for i := 1; i <= 2; i++ {
		m := nats.NewMsg("T.changes")
		m.Data = []byte(strings.Repeat("y", 900))
		m.Header.Set(partHeader, fmt.Sprintf("%d/3", i))
		if _, err := conn.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// Parts no publisher writes: counted, skipped.
	for _, h := range []string{"x", "0/2", "3/2", "1/-1"} {
		m := nats.NewMsg("T.changes")
		m.Data = []byte(`{"v":1,"op":"resync"}`)
		m.Header.Set(partHeader, h)
		if _, err := conn.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// A part without its beginning: dropped, not counted.
	m := nats.NewMsg("T.changes")
	m.Data = []byte("z")
	m.Header.Set(partHeader, "2/2")
	if _, err := conn.js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	// The next term replays from the big change on.
	if err := p.Begin(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := apply(ctx, p, []rowcast.Change{big(2), change(3), change(4), big(5), change(6)}); err != nil {
		t.Fatal(err)
	}
	// Larger than any node decodes: a resync in its place.
	defer func(n int) { maxChangeBytes = n }(maxChangeBytes)
	maxChangeBytes = 3000
	if err := apply(ctx, p, []rowcast.Change{big(7), change(8)}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*recorder{rec, other} {
		rows := waitRows(t, r, 7)
		if fmt.Sprint(rows) != fmt.Sprint([]rowcast.EventID{change(1).ID, change(2).ID, change(3).ID, change(4).ID, change(5).ID, change(6).ID, change(8).ID}) {
			t.Fatalf("consumed %v", rows)
		}
		r.mu.Lock()
		var resyncs []string
		for _, ch := range r.changes {
			if ch.ID.Pos == 2 || ch.ID.Pos == 5 {
				if want := big(ch.ID.Pos); !reflect.DeepEqual(ch.Row, want.Row) {
					t.Errorf("change %d handed on with row %.80s…", ch.ID.Pos, ch.Row)
				}
			}
			if ch.Op == rowcast.OpResync {
				resyncs = append(resyncs, ch.Reason)
			}
		}
		r.mu.Unlock()
		if fmt.Sprint(resyncs) != "["+ReasonChangeTooLarge+"]" {
			t.Errorf("resyncs %q", resyncs)
		}
	}
	if n := c.Bad(); n != 4 {
		t.Fatalf("%d bad messages counted, want 4", n)
	}
}
