package broadcast

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"rowcast"
)

// recorder is a Transport that records what it is asked to write and
// fails if it is ever called by two writers at once.
type recorder struct {
	t       *testing.T
	busy    atomic.Bool
	mu      sync.Mutex
	names   []string
	writes  int
	empty   int // writes of no events (a Wake)
	pings   int
	failErr error
	// block, when set, holds every Write until it is closed.
	block chan struct{}
}

func (r *recorder) enter() {
	if !r.busy.CompareAndSwap(false, true) {
		r.t.Error("two writers at once")
	}
}

func (r *recorder) Write(evs []*Event) error {
	r.enter()
	defer r.busy.Store(false)
	if r.block != nil {
		<-r.block
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes++
	if len(evs) == 0 {
		r.empty++
	}
	for _, ev := range evs {
		r.names = append(r.names, ev.Name)
	}
	return r.failErr
}

func (r *recorder) Ping() error {
	r.enter()
	defer r.busy.Store(false)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pings++
	return nil
}

func (r *recorder) snapshot() (names []string, pings int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.names...), r.pings
}

// ended records the end callback, which must come once.
type ended struct {
	t    *testing.T
	n    atomic.Int32
	err  error
	done chan struct{}
}

func newEnded(t *testing.T) *ended { return &ended{t: t, done: make(chan struct{})} }

func (e *ended) end(err error) {
	if e.n.Add(1) != 1 {
		e.t.Error("end called twice")
		return
	}
	e.err = err
	close(e.done)
}

func (e *ended) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-e.done:
		return e.err
	case <-time.After(time.Minute):
		t.Fatal("the session's writer never ended")
		return nil
	}
}

// Start delivers like Pump: the subscription's replay first, then live
// events in order, duplicates skipped; it ends once when the session
// closes and writes nothing after.
func TestStartDeliversAndEnds(t *testing.T) {
	h := newTestHub(loaded, 100)
	ctx := context.Background()
	h.Apply(ctx, []rowcast.Change{change(rowcast.OpInsert, 1, 1, row("id", "1", "status", "open"), nil)})
	h.Apply(ctx, []rowcast.Change{change(rowcast.OpInsert, 2, 2, row("id", "2", "status", "open"), nil)})
	s := NewSession("ws", Identity{}, Scope{All: true}, nil, 100, nil)
	sub, err := h.Subscribe(s, rowcast.EventID{Pos: 1}.String())
	if err != nil || len(sub.Replay) != 1 {
		t.Fatalf("subscribe: %+v %v", sub, err)
	}
	rec := &recorder{t: t}
	e := newEnded(t)
	// Events offered between Subscribe and Start wait in the queue.
	h.Apply(ctx, []rowcast.Change{change(rowcast.OpUpdate, 3, 3, row("id", "1", "status", "closed"), nil)})
	s.Start(sub, rec, 0, e.end)
	for i := uint64(4); i <= 50; i++ {
		h.Apply(ctx, []rowcast.Change{change(rowcast.OpUpdate, i, i, row("id", "1", "status", "open"), nil)})
	}
	// A replayed event offered again live is not written twice.
	s.Offer(sub.Replay[0])
	waitUntilTrue(t, func() bool { n, _ := rec.snapshot(); return len(n) >= 49 })
	s.Close(CloseGoingAway, "server shutting down")
	if err := e.wait(t); err != nil {
		t.Fatalf("end(%v), want nil", err)
	}
	h.Apply(ctx, []rowcast.Change{change(rowcast.OpUpdate, 51, 51, row("id", "1", "status", "open"), nil)})
	s.Wake()
	names, _ := rec.snapshot()
	var want []string
	for _, ev := range sub.Replay {
		want = append(want, ev.Name)
	}
	for len(want) < 49 {
		want = append(want, "ticket:updated")
	}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("wrote %v, want %v", names, want)
	}
	if d := s.Outcome(e.err); d.Kind != DisconnectShutdown || d.Code != CloseGoingAway {
		t.Fatalf("outcome %+v", d)
	}
}

// An idle session is pinged, by one writer at a time.
func TestStartPings(t *testing.T) {
	s := NewSession("ws", Identity{}, Scope{All: true}, nil, 10, nil)
	rec := &recorder{t: t}
	e := newEnded(t)
	s.Start(Subscription{}, rec, time.Millisecond, e.end)
	waitUntilTrue(t, func() bool { _, p := rec.snapshot(); return p >= 5 })
	s.Close(0, "client closed")
	e.wait(t)
}

// A failed write ends the session's writer with the error.
func TestStartWriteFails(t *testing.T) {
	s := NewSession("ws", Identity{}, Scope{All: true}, nil, 10, nil)
	boom := errors.New("boom")
	rec := &recorder{t: t, failErr: boom}
	e := newEnded(t)
	s.Start(Subscription{}, rec, 0, e.end)
	s.Offer(&Event{Name: "x"})
	if err := e.wait(t); !errors.Is(err, boom) {
		t.Fatalf("end(%v), want boom", err)
	}
	if d := s.Outcome(e.err); d.Kind != DisconnectWriteFailed {
		t.Fatalf("outcome %+v", d)
	}
}

// A session whose writer is stuck on a client that stopped reading is
// dropped by the hub as a slow consumer (4008) once its queue is full,
// its writer unblocked (abort), and the backlog not written.
func TestStartSlowConsumer(t *testing.T) {
	h := newTestHub(loaded, 100)
	ctx := context.Background()
	s := NewSession("ws", Identity{}, Scope{All: true}, nil, 4, nil)
	rec := &recorder{t: t, block: make(chan struct{})}
	s.SetAbort(func() { close(rec.block) })
	sub, err := h.Subscribe(s, "")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnded(t)
	s.Start(sub, rec, 0, e.end)
	for i := uint64(1); i <= 20 && h.Clients() == 1; i++ {
		h.Apply(ctx, []rowcast.Change{change(rowcast.OpInsert, i, i, row("id", "1", "status", "open"), nil)})
	}
	if h.Clients() != 0 {
		t.Fatal("the hub kept a session whose queue overflowed")
	}
	e.wait(t)
	if d := s.Outcome(e.err); d.Kind != DisconnectSlowConsumer || d.Code != CloseSlowConsumer {
		t.Fatalf("outcome %+v", d)
	}
	if names, _ := rec.snapshot(); len(names) > 1+1 {
		t.Fatalf("wrote the backlog of a dropped session: %v", names)
	}
}

// Pump makes its wake channel when it starts: an event offered, and a
// bare Wake, before then are not lost. (A hub without stats: nothing else
// wakes the writer.)
func TestPumpWokenBeforeItStarts(t *testing.T) {
	h := NewHub(HubConfig{Names: NamesFor("ticket", ProfileColon), WindowSize: 100, QueueSize: 64})
	h.started = true
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	pump := func(s *Session, sub Subscription, rec *recorder) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Pump(ctx, sub, rec, 0); err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Pump: %v", err)
			}
		}()
	}

	s := NewSession("sse", Identity{}, Scope{All: true}, nil, 100, nil)
	sub, err := h.Subscribe(s, "")
	if err != nil {
		t.Fatal(err)
	}
	h.Apply(ctx, []rowcast.Change{change(rowcast.OpInsert, 1, 1, row("id", "1", "status", "open"), nil)})
	rec := &recorder{t: t}
	pump(s, sub, rec)
	waitUntilTrue(t, func() bool { n, _ := rec.snapshot(); return len(n) == 1 && n[0] == "ticket:created" })

	s2 := NewSession("sse", Identity{}, Scope{All: true}, nil, 100, nil)
	sub2, err := h.Subscribe(s2, "")
	if err != nil {
		t.Fatal(err)
	}
	s2.Wake()
	rec2 := &recorder{t: t}
	pump(s2, sub2, rec2)
	waitUntilTrue(t, func() bool {
		rec2.mu.Lock()
		defer rec2.mu.Unlock()
		return rec2.empty == 1
	})
}
