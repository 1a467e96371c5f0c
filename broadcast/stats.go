package broadcast

import (
	"encoding/json"
	"sort"
	"time"

	"rowcast"
)

const statsEvent = "stats:updated"

// statsState maintains row counts by the stats columns from the changes'
// old and new values, starting from counts taken under a snapshot. It is
// guarded by the Hub's mutex.
type statsState struct {
	columns []string
	fields  []string // "byStatus" for column status

	counts   rowcast.Counts
	snap     rowcast.XidSnapshot
	loaded   bool
	loading  bool
	needLoad bool
	// pending holds deltas that arrived while counts were being loaded;
	// they are applied after the load unless the snapshot already saw them.
	pending []statsDelta
	dirty   bool
	// gen changes on every invalidation; a load that started before it is
	// stale and its result is dropped.
	gen uint64
	// degraded: a change came without the old values the counts need
	// (a table that is not REPLICA IDENTITY FULL). Only a recount can
	// fix the counts then, and such changes may come one per update, so
	// these recounts are spaced out (see degradedRecount).
	degraded bool
}

// degradedRecount is the least time between two recounts caused by
// changes without old values: without it every such update would cost a
// full GROUP BY of the table.
const degradedRecount = 5 * time.Second

type statsDelta struct {
	xid   uint64
	total int64
	moves []statsMove
}

type statsMove struct {
	col      int
	from, to string
	hasFrom  bool
	hasTo    bool
}

func newStatsState(columns []string) *statsState {
	s := &statsState{columns: columns, needLoad: true}
	for _, c := range columns {
		s.fields = append(s.fields, "by"+upperFirst(camel(c)))
	}
	return s
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	if s[0] >= 'a' && s[0] <= 'z' {
		return string(s[0]-'a'+'A') + s[1:]
	}
	return s
}

// delta computes a change's effect on the counts. ok is false when the
// change lacks an old value the counts need; the counts must be reloaded.
func (s *statsState) delta(c *rowcast.Change) (d statsDelta, ok bool) {
	d.xid = c.Xid
	d.moves = make([]statsMove, 0, len(s.columns))
	switch c.Op {
	case rowcast.OpInsert:
		d.total = 1
		for i, col := range s.columns {
			to, _ := c.Row.Text(col)
			d.moves = append(d.moves, statsMove{col: i, to: to, hasTo: true})
		}
	case rowcast.OpDelete:
		d.total = -1
		for i, col := range s.columns {
			if _, present := c.Old.Get(col); !present {
				return d, false
			}
			from, _ := c.Old.Text(col)
			d.moves = append(d.moves, statsMove{col: i, from: from, hasFrom: true})
		}
	case rowcast.OpUpdate:
		for i, col := range s.columns {
			if _, present := c.Old.Get(col); !present {
				return d, false
			}
			from, _ := c.Old.Text(col)
			to, _ := c.Row.Text(col)
			if from != to {
				d.moves = append(d.moves, statsMove{col: i, from: from, to: to, hasFrom: true, hasTo: true})
			}
		}
	}
	return d, true
}

// apply adds a change to the counts, unless the loaded snapshot already
// includes its transaction.
func (s *statsState) apply(c *rowcast.Change) {
	if c.Op != rowcast.OpInsert && c.Op != rowcast.OpUpdate && c.Op != rowcast.OpDelete {
		return
	}
	d, ok := s.delta(c)
	if !ok {
		s.needLoad, s.degraded = true, true
		return
	}
	switch {
	case s.loading:
		s.pending = append(s.pending, d)
	case s.loaded:
		if !s.snap.Visible(d.xid) {
			s.add(d)
		}
	}
}

func (s *statsState) add(d statsDelta) {
	if d.total == 0 && len(d.moves) == 0 {
		return
	}
	s.counts.Total += d.total
	for _, m := range d.moves {
		by := s.counts.By[s.columns[m.col]]
		if m.hasFrom {
			by[m.from]--
			if by[m.from] == 0 {
				delete(by, m.from)
			}
		}
		if m.hasTo {
			by[m.to]++
			if by[m.to] == 0 {
				delete(by, m.to)
			}
		}
	}
	s.dirty = true
}

// beginLoad marks a load in progress; deltas are queued until finishLoad.
func (s *statsState) beginLoad() uint64 {
	s.loading, s.needLoad, s.degraded, s.pending = true, false, false, s.pending[:0]
	return s.gen
}

func (s *statsState) finishLoad(gen uint64, counts rowcast.Counts, snap rowcast.XidSnapshot, err error) {
	s.loading = false
	if err != nil || gen != s.gen {
		s.needLoad = true
		s.pending = s.pending[:0]
		return
	}
	for _, c := range s.columns {
		if counts.By[c] == nil {
			counts.By[c] = map[string]int64{}
		}
	}
	s.counts, s.snap, s.loaded, s.dirty = counts, snap, true, true
	for _, d := range s.pending {
		if !snap.Visible(d.xid) {
			s.add(d)
		}
	}
	s.pending = s.pending[:0]
}

// invalidate drops the counts (after resync or truncate) until reloaded.
func (s *statsState) invalidate() {
	s.loaded, s.needLoad, s.degraded = false, true, false
	s.gen++
}

// payload encodes {"total":N,"byStatus":{...},...}.
func (s *statsState) payload() json.RawMessage {
	b := []byte(`{"total":`)
	b = appendInt(b, s.counts.Total)
	for i, col := range s.columns {
		b = append(b, ',')
		b = appendJSONString(b, s.fields[i])
		b = append(b, ":{"...)
		by := s.counts.By[col]
		keys := make([]string, 0, len(by))
		for k := range by {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for j, k := range keys {
			if j > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendInt(b, by[k])
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

func appendInt(b []byte, n int64) []byte {
	q, _ := json.Marshal(n)
	return append(b, q...)
}

// event builds a stats:updated event with the current counts.
func (s *statsState) event(now time.Time) *Event {
	b := []byte(`{"stats":`)
	b = append(b, s.payload()...)
	b = append(b, ',')
	b = appendTimestamp(b, now)
	b = append(b, '}')
	return &Event{Name: statsEvent, Data: b, Time: now}
}
