package broadcast

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"rowcast"
)

// HubConfig configures a Hub.
type HubConfig struct {
	Names        Names
	StatsColumns []string
	// StatsInterval is the least time between stats:updated events.
	StatsInterval time.Duration
	// Counts loads row counts under a snapshot (at start, after resyncs).
	Counts rowcast.CountsLoader
	// WindowSize and WindowAge bound the replay window.
	WindowSize int
	WindowAge  time.Duration
	// QueueSize bounds each client's send queue.
	QueueSize int
	Observer  Observer
	Logger    *slog.Logger
	// AwaitCapture is how long a snapshot's cursor and a resuming client
	// (a Socket.IO recovery; /ws and /events answer 503 before) wait for
	// capture's first start marker when rowcast has just started (0: not
	// at all). Before it the window can promise nothing: a snapshot would
	// have no cursor, so the changes between its rows and the client's
	// connection would be missed, and a resume would get resync.
	AwaitCapture time.Duration
	// CatchUp, when set, waits until the hub has every change its source
	// holds now (a cluster node: what the stream holds). A client that
	// resumes from an id ahead of the hub waits for it, rather than being
	// told to resync: it comes from a node further ahead.
	CatchUp func(ctx context.Context) error
}

// ErrShuttingDown is returned by Subscribe once the hub is shut down.
var ErrShuttingDown = errors.New("server is shutting down")

// Hub receives changes from capture (it is a rowcast.Sink and a
// rowcast.Retainer), turns them into events, keeps the replay window and the
// stats, and fans events out to sessions without ever waiting for one.
type Hub struct {
	cfg    HubConfig
	log    *slog.Logger
	obs    Observer
	reload chan struct{}

	mu sync.Mutex
	// sessions maps each subscribed session to the cursor it resumed
	// from (zero for a fresh start).
	sessions map[*Session]rowcast.EventID
	win      *window
	stats    *statsState
	lastID   rowcast.EventID
	// horizon is the newest ID capture said can exist when it started.
	horizon rowcast.EventID
	// started: capture has sent its first start marker. Counts are taken
	// only from then on: in notify mode a count taken before LISTEN
	// would miss every change committed in between, for good.
	started bool
	// startedCh is closed with the first start marker.
	startedCh chan struct{}
	closed    bool
	done      chan struct{} // closed by Shutdown
}

// NewHub makes a hub; call Run to maintain stats and expire the window.
func NewHub(cfg HubConfig) *Hub {
	if cfg.StatsInterval <= 0 {
		cfg.StatsInterval = 250 * time.Millisecond
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 1024
	}
	return &Hub{
		cfg:       cfg,
		log:       cfg.Logger,
		obs:       cfg.Observer,
		reload:    make(chan struct{}, 1),
		sessions:  map[*Session]rowcast.EventID{},
		startedCh: make(chan struct{}),
		win:       newWindow(cfg.WindowSize, cfg.WindowAge),
		stats:     newStatsState(cfg.StatsColumns),
		done:      make(chan struct{}),
	}
}

// Names returns the hub's event names.
func (h *Hub) Names() Names { return h.cfg.Names }

// Apply implements rowcast.Sink. When it returns, every event of the
// changes is in the replay window and queued for the connected clients.
func (h *Hub) Apply(ctx context.Context, changes []rowcast.Change) error {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range changes {
		c := &changes[i]
		if c.Op == rowcast.OpStart {
			if !c.ID.IsZero() {
				// A marker without a position (a cluster node that has
				// filled its window from the stream) promises nothing.
				h.win.start(c.ID)
			}
			h.horizon = c.Horizon
			if !h.started {
				h.started = true
				close(h.startedCh)
				h.wakeStats()
			}
			continue
		}
		if c.Op != rowcast.OpResync && !c.ID.IsZero() && !h.lastID.IsZero() && c.ID.SameEpoch(h.lastID) && !h.lastID.Less(c.ID) {
			continue // sent again after a reconnect; already handled
		}
		switch {
		case c.Op == rowcast.OpResync:
			// What follows a resync is a new stream: after a failover or
			// a restore its positions may be below the last one handled,
			// and are new changes all the same.
			h.lastID = c.ID
		case !c.ID.IsZero():
			h.lastID = c.ID
		}
		switch c.Op {
		case rowcast.OpResync, rowcast.OpTruncate:
			h.log.Warn("resync: clients must refetch", "reason", c.Reason)
			h.win.reset()
			if !c.ID.IsZero() {
				// Every later event comes after the marker: a snapshot taken
				// from now on can give it as its cursor, so a client that
				// refetches as told resumes without a gap.
				h.win.start(c.ID)
			}
			h.stats.invalidate()
			if c.Op == rowcast.OpTruncate {
				h.fanoutTruncate(ResyncEvent(c.Reason, now), c.ID)
			} else {
				h.fanout(ResyncEvent(c.Reason, now))
			}
			h.wakeStats()
			continue
		}
		if c.Op == rowcast.OpMessage {
			if why := h.cfg.Names.checkMessage(c); why != "" {
				h.obs.EventDropped(why)
				h.log.Debug("application event dropped", "event", c.Event, "reason", why)
				continue
			}
		}
		ev, ok := h.cfg.Names.Translate(c)
		if !ok {
			continue
		}
		h.obs.ChangeApplied(c.Table, string(c.Op))
		h.stats.apply(c)
		if h.stats.needLoad {
			h.wakeStats()
		}
		if ev.HasID {
			h.win.add(ev)
		}
		h.fanout(ev)
	}
	h.obs.WindowSize(h.win.len())
	return nil
}

func (h *Hub) wakeStats() {
	select {
	case h.reload <- struct{}{}:
	default:
	}
}

// Oldest implements rowcast.Retainer.
func (h *Hub) Oldest() (rowcast.EventID, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.win.oldest()
}

// forSession returns what a session gets of ev: ev itself, nil, or a
// delete for a row that left what the user may see. Called with h.mu held.
//
//   - rows the user may not see are never sent, old or new;
//   - a row that leaves the client's filter (old matched, new does not) is
//     still sent as an update, so the client can remove it;
//   - a row that leaves the user's visibility is sent as a delete of its key
//     only: the client must drop it but may not see its new values.
//
// When the old values the session's visibility or filter needs are
// missing (logical capture of a table that is not REPLICA IDENTITY FULL),
// the row may have been the user's: a delete goes to everyone (its key
// only), an update to everyone who may see the new row, and to the others
// as a delete of its key. A client may hear of a row it never had; it
// never keeps one it should have dropped, and sees no values it may not.
func (h *Hub) forSession(s *Session, ev *Event) *Event {
	if ev.Row == nil && ev.Old == nil {
		if ev.Name == statsEvent && !s.scope.All {
			return nil // restricted users get no global counts
		}
		return ev
	}
	// oldOK: the row was the user's and in the filter before the change;
	// maybe: nobody can tell, because its old values are missing.
	var oldOK, maybe bool
	if ev.op != rowcast.OpInsert {
		if s.knowsOld(ev.Old) {
			oldOK = s.scope.Visible(ev.Old) && s.filter.matches(ev.Old)
		} else {
			maybe = true
		}
	}
	if ev.Row == nil {
		if oldOK || maybe {
			return ev
		}
		return nil
	}
	if s.scope.Visible(ev.Row) {
		if oldOK || maybe || s.filter.matches(ev.Row) {
			return ev
		}
		return nil
	}
	if oldOK || maybe {
		if ev.left == nil {
			ev.left = h.cfg.Names.DeletedEvent(ev)
		}
		return ev.left
	}
	return nil
}

// fanout offers ev to every session; a session whose queue is full is
// closed as a slow consumer. Called with h.mu held.
func (h *Hub) fanout(ev *Event) {
	// Queued events are counted per transport once per fan-out, not once
	// per client: there are few transports and many clients.
	var queued [4]struct {
		transport string
		n         int
	}
	var other map[string]int
	for s := range h.sessions {
		sev := h.forSession(s, ev)
		if sev == nil {
			continue
		}
		if !s.Offer(sev) {
			h.dropSlow(s)
			continue
		}
		if sev != ev {
			// A row that left the user's visibility, sent as a delete.
			h.obs.EventQueued(sev.Name, s.Transport, 1)
			continue
		}
		counted := false
		for i := range queued {
			if queued[i].transport == s.Transport || queued[i].transport == "" {
				queued[i].transport = s.Transport
				queued[i].n++
				counted = true
				break
			}
		}
		if !counted {
			if other == nil {
				other = map[string]int{}
			}
			other[s.Transport]++
		}
	}
	for _, q := range queued {
		if q.n > 0 {
			h.obs.EventQueued(ev.Name, q.transport, q.n)
		}
	}
	for t, n := range other {
		h.obs.EventQueued(ev.Name, t, n)
	}
}

// fanoutTruncate tells sessions to resync after a TRUNCATE at id, except
// those that resumed from a cursor at or after it: what they have is from
// after it. That is a TRUNCATE sent again by the slot after rowcast
// restarted (it resends the transactions its replay window held), which
// is no news to a client that had it. Called with h.mu held.
func (h *Hub) fanoutTruncate(ev *Event, id rowcast.EventID) {
	for s, cur := range h.sessions {
		if !id.IsZero() && !cur.IsZero() && cur.SameEpoch(id) && !cur.Less(id) {
			continue
		}
		if !s.Offer(ev) {
			h.dropSlow(s)
			continue
		}
		h.obs.EventQueued(ev.Name, s.Transport, 1)
	}
}

func (h *Hub) dropSlow(s *Session) {
	delete(h.sessions, s)
	s.drop(CloseSlowConsumer, "slow consumer")
	h.obs.SlowConsumer(s.Transport)
	h.log.Warn("disconnecting slow consumer", "conn", s.ID, "transport", s.Transport, "queue", s.queueMax)
}

// Subscribe adds a session. lastEventID is the client's cursor ("" for a
// fresh start): the subscription replays the events after it, or carries
// a resync when it cannot: the cursor is malformed, older than the window,
// of another epoch, or ahead of every event that exists (a client must
// never be left waiting, silently, for an id that will not come).
func (h *Hub) Subscribe(s *Session, lastEventID string) (Subscription, error) {
	if lastEventID != "" {
		h.awaitCapture()
		h.catchUp(lastEventID)
	}
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return Subscription{}, ErrShuttingDown
	}
	var sub Subscription
	if lastEventID != "" {
		id, err := rowcast.ParseEventID(lastEventID)
		var evs []*Event
		ok := err == nil
		why := "lastEventId is malformed; refetch your data"
		if ok && h.ahead(id) {
			ok, why = false, "lastEventId is ahead of the newest event; refetch your data"
		}
		if ok {
			if evs, ok = h.win.after(id); !ok {
				why = "lastEventId is older than the replay window; refetch your data"
			}
		}
		if ok {
			// Replay respects visibility and filters like live events.
			for _, ev := range evs {
				if ev := h.forSession(s, ev); ev != nil {
					sub.Replay = append(sub.Replay, ev)
				}
			}
			sub.Cursor, sub.HasCursor = id, true
			h.obs.Resume("replayed")
		} else {
			sub.Resync = ResyncEvent(why, now)
			h.obs.Resume("resync")
		}
	}
	if h.stats.loaded && s.scope.All {
		sub.Stats = h.stats.event(now)
	}
	h.sessions[s] = sub.Cursor
	return sub, nil
}

// Started reports whether capture has told the hub where it starts. Before
// that a client resuming with a cursor cannot be told whether it missed
// anything (it would get a resync it does not need): transports ask it to
// retry instead.
func (h *Hub) Started() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.started
}

// ahead reports whether id is past the newest event of its epoch: the
// last one handled, the start marker, or the horizon capture announced at
// start. Called
// with h.mu held.
func (h *Hub) ahead(id rowcast.EventID) bool {
	newest := h.lastID
	later := func(id rowcast.EventID) {
		if !id.IsZero() && (newest.IsZero() || (id.SameEpoch(newest) && newest.Less(id))) {
			newest = id
		}
	}
	later(h.horizon)
	if h.win.baseSet {
		later(h.win.base) // the start marker's position exists too
	}
	if newest.IsZero() || !newest.SameEpoch(id) {
		return false // nothing to compare with; the window decides
	}
	return newest.Less(id)
}

// SetFilter changes a subscribed session's filter (a subscribe message).
func (h *Hub) SetFilter(s *Session, f Filter) {
	fs := f.compile()
	h.mu.Lock()
	s.filter = fs
	h.mu.Unlock()
}

// Unsubscribe removes a session.
func (h *Hub) Unsubscribe(s *Session) {
	h.mu.Lock()
	delete(h.sessions, s)
	h.mu.Unlock()
}

// Clients counts connected sessions.
func (h *Hub) Clients() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.sessions)
}

// Cursor is the ID of the last event handled (for a snapshot's lastEventId)
// and the current stats payload, if loaded.
func (h *Hub) Cursor() (id string, stats []byte) {
	h.awaitCapture()
	h.mu.Lock()
	defer h.mu.Unlock()
	// The later of the window's promise and the last event: after a resync
	// the last event may predate the promise, and resuming from it would
	// only earn another resync.
	if h.win.baseSet {
		cur := h.win.base
		if h.lastID.SameEpoch(cur) && cur.Less(h.lastID) {
			cur = h.lastID
		}
		id = cur.String()
	}
	if h.stats.loaded {
		stats = h.stats.payload()
	}
	return id, stats
}

// catchUpTimeout bounds how long a resume waits for the hub to catch up.
const catchUpTimeout = 5 * time.Second

// catchUp waits, when the cursor is ahead of the hub, for the changes the
// source already holds (see HubConfig.CatchUp).
func (h *Hub) catchUp(lastEventID string) {
	if h.cfg.CatchUp == nil {
		return
	}
	id, err := rowcast.ParseEventID(lastEventID)
	if err != nil {
		return
	}
	h.mu.Lock()
	ahead := h.ahead(id)
	h.mu.Unlock()
	if !ahead {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), catchUpTimeout)
	defer cancel()
	if err := h.cfg.CatchUp(ctx); err != nil {
		h.log.Debug("catching up for a resume failed", "err", err)
	}
}

// awaitCapture waits, at most AwaitCapture, for capture's first start
// marker (at once after it, and on shutdown).
func (h *Hub) awaitCapture() {
	if h.cfg.AwaitCapture <= 0 {
		return
	}
	t := time.NewTimer(h.cfg.AwaitCapture)
	defer t.Stop()
	select {
	case <-h.startedCh:
	case <-h.done:
	case <-t.C:
	}
}

// Shutdown closes every session with 1001 and refuses new ones. Calling
// it again does nothing more.
func (h *Hub) Shutdown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.closed = true
		close(h.done)
	}
	for s := range h.sessions {
		s.Close(CloseGoingAway, "server shutting down")
		delete(h.sessions, s)
	}
}

// Done is closed when Shutdown is called: connections that have not
// subscribed (and so are not closed by Shutdown) end on it.
func (h *Hub) Done() <-chan struct{} { return h.done }

// countTimeout bounds one count of the table.
const countTimeout = 2 * time.Minute

// Run loads and maintains stats, sends stats:updated at most once per
// StatsInterval, and expires the replay window, until ctx ends.
func (h *Hub) Run(ctx context.Context) error {
	tick := time.NewTicker(h.cfg.StatsInterval)
	defer tick.Stop()
	retry, lastCount := time.Time{}, time.Time{}
	for {
		h.mu.Lock()
		spaced := !h.stats.degraded || time.Since(lastCount) >= degradedRecount
		need := h.started && h.stats.needLoad && !h.stats.loading && time.Now().After(retry) && spaced
		var gen uint64
		if need {
			gen = h.stats.beginLoad()
		}
		h.mu.Unlock()
		if need && h.cfg.Counts != nil {
			// Bounded: a count stuck on a dead connection would hold up
			// the window's expiry and every later count.
			cctx, cancel := context.WithTimeout(ctx, countTimeout)
			counts, snap, err := h.cfg.Counts(cctx)
			cancel()
			if err != nil && ctx.Err() == nil {
				h.log.Error("counting rows for stats failed; retrying", "err", err)
				retry = time.Now().Add(2 * time.Second)
			}
			lastCount = time.Now()
			h.mu.Lock()
			h.stats.finishLoad(gen, counts, snap, err)
			h.mu.Unlock()
			if err == nil {
				h.obs.StatsRecomputed()
			}
		}
		h.mu.Lock()
		now := time.Now()
		h.win.expire(now)
		h.obs.WindowSize(h.win.len())
		if h.stats.loaded && h.stats.dirty {
			h.stats.dirty = false
			h.fanout(h.stats.event(now))
		}
		h.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-h.reload:
		}
	}
}

// StatsPayload is the stats payload for counts loaded outside the hub (a
// snapshot served before the hub's first count).
func (h *Hub) StatsPayload(counts rowcast.Counts) json.RawMessage {
	st := newStatsState(h.cfg.StatsColumns)
	st.finishLoad(st.beginLoad(), counts, rowcast.XidSnapshot{}, nil)
	return st.payload()
}
