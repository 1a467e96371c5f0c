package cdc

import (
	"log/slog"
	"sync/atomic"
	"time"
)

// drops counts what capture drops instead of handing it on, by reason
// from a fixed set (rowcast.IgnoreReasons, rowcast.NotifyRejectReasons),
// and logs it without letting a flood of hostile input flood the log: the
// first drop of a reason is a warning, later ones are warnings at most
// once per dropLogEvery (with how many were dropped meanwhile) and debug
// lines otherwise. The counters are the signal; the log says why.
//
// add is called by the capture goroutine only; snapshot from any.
type drops struct {
	reasons []string
	counts  []atomic.Uint64

	// Owned by the capture goroutine.
	log   *slog.Logger
	last  []time.Time
	since []uint64
}

// dropLogEvery is the least time between two warnings of one reason.
const dropLogEvery = time.Minute

func newDrops(reasons []string, log *slog.Logger) *drops {
	return &drops{
		reasons: reasons,
		counts:  make([]atomic.Uint64, len(reasons)),
		log:     log,
		last:    make([]time.Time, len(reasons)),
		since:   make([]uint64, len(reasons)),
	}
}

// add counts one drop and logs msg with attrs. A reason outside the set is
// a programming error; it is counted under the last reason rather than
// lost.
func (d *drops) add(reason, msg string, attrs ...any) {
	i := len(d.reasons) - 1
	for j, r := range d.reasons {
		if r == reason {
			i = j
			break
		}
	}
	d.counts[i].Add(1)
	d.since[i]++
	now := time.Now()
	attrs = append(attrs, "reason", reason)
	if !d.last[i].IsZero() && now.Sub(d.last[i]) < dropLogEvery {
		d.log.Debug(msg, attrs...)
		return
	}
	d.log.Warn(msg, append(attrs, "dropped_since_last_warning", d.since[i])...)
	d.last[i], d.since[i] = now, 0
}

// snapshot returns the cumulative count of every reason.
func (d *drops) snapshot() map[string]uint64 {
	out := make(map[string]uint64, len(d.reasons))
	for i, r := range d.reasons {
		out[r] = d.counts[i].Load()
	}
	return out
}
