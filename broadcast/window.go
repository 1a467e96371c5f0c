package broadcast

import (
	"sort"
	"time"

	"rowcast"
)

// window keeps the most recent events for clients that resume with
// lastEventId. It is owned by the Hub and guarded by the Hub's mutex.
//
// base is the window's promise: every event with an ID after base is in the
// window or still to come. A client resuming from an ID at or after base
// gets exactly the later events; an older ID gets a resync.
type window struct {
	max int
	age time.Duration

	events []windowEntry
	head   int // events[head:] are live; the prefix is reclaimed lazily

	base    rowcast.EventID
	baseSet bool
}

type windowEntry struct {
	ev *Event
	// born is the event's commit time (capture time when the source does
	// not know it). Age is measured from it, not from when this process
	// received the event: after a restart the slot resends the window's
	// events, and counting their age from the resend would keep the slot
	// pinned at the same commit for ever under a crash loop or a rolling
	// deploy.
	born time.Time
}

func newWindow(max int, age time.Duration) *window {
	if max <= 0 {
		max = 10000
	}
	if age <= 0 {
		age = 5 * time.Minute
	}
	return &window{max: max, age: age}
}

func (w *window) len() int { return len(w.events) - w.head }

func (w *window) add(ev *Event) {
	if !w.baseSet {
		// First event after a reset without a start marker: only later
		// events can be promised.
		w.base, w.baseSet = ev.ID, true
	}
	w.events = append(w.events, windowEntry{ev: ev, born: ev.Time})
	for w.len() > w.max {
		w.dropOldest()
	}
}

func (w *window) dropOldest() {
	w.base = w.events[w.head].ev.ID
	w.events[w.head] = windowEntry{}
	w.head++
	// Reclaim the dead prefix once it is half the slice.
	if w.head > 1024 && w.head*2 > len(w.events) {
		n := copy(w.events, w.events[w.head:])
		clear(w.events[n:])
		w.events = w.events[:n]
		w.head = 0
	}
}

// expire drops events older than the window's age.
func (w *window) expire(now time.Time) {
	for w.len() > 0 && now.Sub(w.events[w.head].born) > w.age {
		w.dropOldest()
	}
}

// reset forgets everything: after a resync no earlier ID can be resumed.
func (w *window) reset() {
	clear(w.events)
	w.events, w.head, w.baseSet = w.events[:0], 0, false
}

// start records a capture start marker: every later event has an ID at or
// after id. It sets the promise only when the window has none yet.
func (w *window) start(id rowcast.EventID) {
	if !w.baseSet && w.len() == 0 {
		w.base, w.baseSet = id, true
	}
}

func (w *window) oldest() (rowcast.EventID, bool) {
	if w.len() == 0 {
		return rowcast.EventID{}, false
	}
	return w.events[w.head].ev.ID, true
}

// after returns the events after id; ok is false when id is older than the
// window (or of another epoch) and the client must resync instead.
func (w *window) after(id rowcast.EventID) (evs []*Event, ok bool) {
	if !w.baseSet || !w.base.SameEpoch(id) || id.Less(w.base) {
		return nil, false
	}
	live := w.events[w.head:]
	i := sort.Search(len(live), func(i int) bool { return id.Less(live[i].ev.ID) })
	evs = make([]*Event, 0, len(live)-i)
	for _, e := range live[i:] {
		evs = append(evs, e.ev)
	}
	return evs, true
}
