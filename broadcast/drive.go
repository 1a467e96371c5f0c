package broadcast

import (
	"sync"
	"time"
)

// Start is Pump for a transport whose connection already has a goroutine
// of its own (its reader): instead of a writer goroutine per connection
// for the connection's whole life, a writer goroutine runs only while
// there is something to write (events, a ping, the end), so an idle
// connection costs one goroutine, not two. There is still exactly one
// writer at a time: the transport's Write and Ping are never called
// concurrently, nor after end.
//
// The subscription's resync, replay and stats go first, then live
// events, deduplicated by id as Pump does; pings go out every pingEvery
// (never when 0). When the session closes (Close, the hub dropping it,
// the token expiring) or a write fails, the writer calls end once, from
// the writer goroutine, with the error Pump would have returned (nil for
// a closed session), and no writer runs after it. The owner of the
// connection (its reader) must make the session close when the
// connection goes (Close), and wait for end before it lets go.
func (s *Session) Start(sub Subscription, t Transport, pingEvery time.Duration, end func(error)) {
	w := &driver{s: s, d: deliverer{s: s, t: t, cursor: sub.Cursor, hasCursor: sub.HasCursor},
		first: sub.first(), every: pingEvery, end: end}
	w.runFn = w.run
	if pingEvery > 0 {
		w.ping = time.AfterFunc(pingEvery, w.pingDue)
	}
	if !s.expires.IsZero() {
		w.expiry = time.AfterFunc(time.Until(s.expires), func() {
			s.Close(CloseTokenExpired, "token expired: reconnect with a fresh token")
		})
	}
	kick := func() { w.kick(false) }
	s.notify.Store(&kick)
	// Whatever was offered between Subscribe and now, and the first batch.
	kick()
}

// driver runs a session's writer on demand (Start).
type driver struct {
	s     *Session
	every time.Duration
	end   func(error)

	ping, expiry *time.Timer
	// runFn is w.run as a func value, made once: handing it to a writer
	// allocates no closure each time.
	runFn func()

	mu      sync.Mutex
	running bool // a writer goroutine is running
	dirty   bool // kicked since the writer last looked
	pinging bool // a ping is due
	ended   bool // end has been called: no writer any more

	// Writer only.
	d     deliverer
	first []*Event
	batch []*Event
}

// kick makes a writer look at the session (and ping, when ping is set):
// the running one goes round once more, or a new one starts.
func (w *driver) kick(ping bool) {
	w.mu.Lock()
	if ping {
		w.pinging = true
	} else {
		w.dirty = true
	}
	if w.running || w.ended {
		w.mu.Unlock()
		return
	}
	w.running = true
	w.mu.Unlock()
	startWriter(w.runFn)
}

// Writer goroutines are reused: a writer that has finished waits a while
// (writerLinger) for the next session that needs one, then exits. A new
// goroutine per wake-up would get a small stack and grow it (writing goes
// deep) every time, and give the grown stack back when it exits: with
// many clients that each get one event at a time, allocating and copying
// stacks cost more than the writes' own work. The pool owns the parked
// goroutines and ends each one after writerLinger without work; while
// parked, a goroutine belongs to no session.
var idleWriters = make(chan func())

// writerLinger is how long a finished writer waits for more work.
const writerLinger = 2 * time.Second

// startWriter runs fn in a parked writer goroutine, or a new one.
func startWriter(fn func()) {
	select {
	case idleWriters <- fn:
	default:
		go writerLoop(fn)
	}
}

func writerLoop(fn func()) {
	linger := time.NewTimer(writerLinger)
	defer linger.Stop()
	for {
		fn()
		linger.Reset(writerLinger)
		select {
		case fn = <-idleWriters:
		case <-linger.C:
			return
		}
	}
}

func (w *driver) pingDue() { w.kick(true) }

// run is the writer: it works until nothing is left to do, then exits
// (or ends the session).
func (w *driver) run() {
	for {
		w.mu.Lock()
		woken, ping := w.dirty, w.pinging
		w.dirty, w.pinging = false, false
		w.mu.Unlock()

		err, stop := w.step(woken, ping)
		if stop {
			w.finish(err)
			return
		}

		w.mu.Lock()
		if !w.dirty && !w.pinging {
			w.running = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
	}
}

// step does what is due; stop reports the end of the session.
func (w *driver) step(woken, ping bool) (err error, stop bool) {
	s := w.s
	if s.closed() {
		return nil, true
	}
	if w.first != nil {
		first := w.first
		w.first = nil
		if err := w.d.send(first, false); err != nil {
			return err, true
		}
	}
	batch := s.take(w.batch)
	w.batch = batch[:0]
	if cap(batch) > 64 {
		w.batch = nil // an idle session keeps no batch memory
	}
	if s.closed() {
		clear(batch)
		return nil, true // dropped: do not keep writing a backlog
	}
	if woken || len(batch) > 0 {
		// Woken (Session.Wake): the transport may have control messages
		// of its own to flush even when no event is queued.
		err := w.d.send(batch, true)
		clear(batch)
		if err != nil {
			return err, true
		}
	}
	if ping {
		if err := w.d.t.Ping(); err != nil {
			return err, true
		}
		w.ping.Reset(w.every)
	}
	return nil, false
}

// finish ends the session's writing for good.
func (w *driver) finish(err error) {
	w.mu.Lock()
	w.ended, w.running = true, false
	w.mu.Unlock()
	if w.ping != nil {
		w.ping.Stop()
	}
	if w.expiry != nil {
		w.expiry.Stop()
	}
	w.end(err)
}

// closed reports whether Close has been called.
func (s *Session) closed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}
