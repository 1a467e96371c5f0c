package broadcast

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"sync/atomic"
	"time"

	"rowcast"
)

// Close codes sent to clients (WebSocket close codes; the other
// transports map them to their own way of saying goodbye).
const (
	CloseGoingAway    = 1001 // server shutting down
	CloseProtocol     = 1002 // client broke the WebSocket protocol (RFC 6455)
	ClosePolicy       = 1008 // client broke the protocol
	CloseTooBig       = 1009 // client sent a message over the limit
	CloseUnsupported  = 1003 // client sent a kind of message rowcast does not take
	CloseTokenExpired = 4001 // the client's token expired: reconnect with a fresh one
	CloseSlowConsumer = 4008 // send queue overflowed
)

// Session is one connected client. The hub offers it events without ever
// blocking; the transport's single writer goroutine drains its queue.
type Session struct {
	ID        string
	Transport string
	// User is the user as logs name them (Identity without its Claims).
	User Identity

	// queue holds events for the writer, at most queueMax. A slice that
	// grows on demand, rather than a buffered channel, keeps idle
	// connections small.
	qmu      sync.Mutex
	queue    []*Event
	queueMax int
	// wake tells Pump's writer there is something to take. Pump makes it
	// (under qmu): sessions written on demand (Start) never need it, and
	// each idle connection would carry it. woken records a Wake before.
	wake      chan struct{}
	woken     bool
	done      chan struct{}
	closeOnce sync.Once
	mu        sync.Mutex
	code      int
	reason    string
	// scope and filter decide which row events the client gets; guarded
	// by the hub's mutex once subscribed.
	scope  Scope
	filter filterSet
	// abort unblocks the transport's writer when the session is dropped
	// while a write is stuck on a client that stopped reading.
	abort func()
	obs   Observer
	// expires ends the session when the user's token expires (zero: never).
	expires time.Time
	// notify, when set (Start), is called instead of signalling wake, and
	// once more when the session closes: the writer runs on demand.
	notify atomic.Pointer[func()]
}

// SetAbort sets what Drop calls to unblock a stuck writer. Call it before
// subscribing.
func (s *Session) SetAbort(f func()) { s.abort = f }

// drop closes a session that fell behind and unblocks its writer.
func (s *Session) drop(code int, reason string) {
	s.Close(code, reason)
	if s.abort != nil {
		s.abort()
	}
}

// NewSession makes a session with a bounded send queue. scope is what the
// user may see (Visibility.ScopeFor), filter what the client asked for.
// Transports get theirs from Gate.NewSession.
func NewSession(transport string, user Identity, scope Scope, filter Filter, queueSize int, obs Observer) *Session {
	if queueSize <= 0 {
		queueSize = 1024
	}
	if obs == nil {
		obs = nopObserver{}
	}
	return &Session{
		obs:       obs,
		ID:        newID(),
		Transport: transport,
		// The claims are decided into scope; a session keeps only what
		// its logs name the user by. A token's claims are a map of their
		// own, kept for the life of every connection otherwise.
		User:     Identity{Subject: user.Subject, Email: user.Email, Expires: user.Expires},
		scope:    scope,
		filter:   filter.compile(),
		queueMax: queueSize,
		done:     make(chan struct{}),
	}
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Offer queues an event without blocking; false means the queue is full.
// The hub offers live events; a transport offers its replies to the
// client (and closes the session as a slow consumer on false).
func (s *Session) Offer(ev *Event) bool {
	s.qmu.Lock()
	if len(s.queue) >= s.queueMax {
		s.qmu.Unlock()
		return false
	}
	s.queue = append(s.queue, ev)
	s.qmu.Unlock()
	s.Wake()
	return true
}

// Wake makes the writer call Transport.Write (with no events if none are
// queued), so that a transport can send control messages from its single
// writer.
func (s *Session) Wake() {
	if n := s.notify.Load(); n != nil {
		(*n)()
		return
	}
	s.qmu.Lock()
	w := s.wake
	if w == nil {
		s.woken = true // for Pump, when it starts
	}
	s.qmu.Unlock()
	if w != nil {
		signalWake(w)
	}
}

// signalWake wakes the writer waiting on w, or leaves it a wake-up.
func signalWake(w chan struct{}) {
	select {
	case w <- struct{}{}:
	default:
	}
}

// take moves every queued event into buf. An idle session keeps no queue
// memory: the slice is dropped when it has grown large and drained.
func (s *Session) take(buf []*Event) []*Event {
	s.qmu.Lock()
	buf = append(buf[:0], s.queue...)
	clear(s.queue)
	if cap(s.queue) > 64 {
		s.queue = nil
	} else {
		s.queue = s.queue[:0]
	}
	s.qmu.Unlock()
	return buf
}

// Close ends the session with a close code and reason; the first call wins.
func (s *Session) Close(code int, reason string) {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.code, s.reason = code, reason
		s.mu.Unlock()
		close(s.done)
		if n := s.notify.Load(); n != nil {
			(*n)()
		}
	})
}

// Done is closed when the session has been told to end.
func (s *Session) Done() <-chan struct{} { return s.done }

// CloseReason is the code and reason given to Close.
func (s *Session) CloseReason() (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.code, s.reason
}

// Transport is the seam between a session and its connection: the
// session's single writer goroutine calls it, never concurrently.
type Transport interface {
	// Write sends events in order. A batch lets the transport write them
	// in one go; it may be empty when the session was woken (Wake) so the
	// transport can flush control messages of its own.
	Write(evs []*Event) error
	// Ping keeps the connection alive (and detects a dead peer).
	Ping() error
}

// Pump is the session's writer loop, shared by every transport: it writes
// the subscription's resync, replay and stats, then live events, skipping
// any event at or before the client's cursor, and pings every pingEvery
// (never when pingEvery is 0). It returns when ctx ends, the session is
// closed, or a write fails; Outcome says what that means.
func (s *Session) Pump(ctx context.Context, sub Subscription, t Transport, pingEvery time.Duration) error {
	s.qmu.Lock()
	if s.wake == nil {
		s.wake = make(chan struct{}, 1)
	}
	wake := s.wake
	if s.woken {
		s.woken = false
		signalWake(wake)
	}
	s.qmu.Unlock()
	d := &deliverer{s: s, t: t, cursor: sub.Cursor, hasCursor: sub.HasCursor}
	if err := d.send(sub.first(), false); err != nil {
		return err
	}
	var batch []*Event
	var expired <-chan time.Time
	if !s.expires.IsZero() {
		t := time.NewTimer(time.Until(s.expires))
		defer t.Stop()
		expired = t.C
	}
	var tick <-chan time.Time
	if pingEvery > 0 {
		t := time.NewTicker(pingEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return nil
		case <-wake:
			batch = s.take(batch)
			select {
			case <-s.done:
				clear(batch)
				return nil // dropped: do not keep writing a backlog
			default:
			}
			err := d.send(batch, true)
			clear(batch)
			if err != nil {
				return err
			}
		case <-tick:
			if err := t.Ping(); err != nil {
				return err
			}
		case <-expired:
			s.Close(CloseTokenExpired, "token expired: reconnect with a fresh token")
			return nil
		}
	}
}

// first is what a subscription sends before live events.
func (sub Subscription) first() []*Event {
	first := make([]*Event, 0, len(sub.Replay)+2)
	if sub.Resync != nil {
		first = append(first, sub.Resync)
	}
	first = append(first, sub.Replay...)
	if sub.Stats != nil {
		first = append(first, sub.Stats)
	}
	return first
}

// deliverer hands batches to the transport, skipping the events the
// client has already (at or before its cursor). Writer only.
type deliverer struct {
	s         *Session
	t         Transport
	cursor    rowcast.EventID
	hasCursor bool
	out       []*Event
	// lat holds the latencies of a batch written, for the observer.
	lat []time.Duration
}

// send writes the events of batch that the client does not have yet;
// woken asks for a Write even when none is left (Session.Wake).
func (d *deliverer) send(batch []*Event, woken bool) error {
	out := d.out[:0]
	for _, ev := range batch {
		if ev.HasID && d.hasCursor && ev.ID.SameEpoch(d.cursor) && !d.cursor.Less(ev.ID) {
			continue // already delivered (replay/live overlap after a restart)
		}
		if ev.HasID {
			d.cursor, d.hasCursor = ev.ID, true
		}
		out = append(out, ev)
	}
	if len(out) == 0 && !woken {
		return nil
	}
	err := d.t.Write(out)
	if err == nil && len(out) > 0 {
		// One clock reading and one observation for the batch, not one
		// per event: written together, they were delivered at the same
		// moment.
		now := time.Now()
		lat := d.lat[:0]
		for _, ev := range out {
			lat = append(lat, now.Sub(ev.Time))
		}
		d.s.obs.Delivered(d.s.Transport, lat)
		d.lat = lat[:0]
	}
	clear(out)
	d.out = out[:0]
	if cap(d.out) > 64 {
		d.out = nil // an idle session keeps no batch memory
		d.lat = nil
	}
	return err
}

// Subscription is what a session gets when it joins the hub.
type Subscription struct {
	// Resync is set when the client asked to resume from an ID the window
	// no longer covers.
	Resync *Event
	// Replay holds the events after the client's lastEventId.
	Replay []*Event
	// Stats is the current stats:updated event, if counts are loaded.
	Stats *Event
	// Cursor is the last event the client has; later duplicates are skipped.
	Cursor    rowcast.EventID
	HasCursor bool
}
