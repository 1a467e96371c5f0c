// Package rowcast holds the types shared by capture (package cdc) and delivery
// (package broadcast): a captured row Change, its position, and the Sink that
// capture hands changes to. Both sides import this package; neither imports
// the other, and only cmd/rowcast wires them together.
package rowcast

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Op is what happened to a row, or a control marker in the change stream.
type Op string

const (
	OpInsert Op = "insert"
	OpUpdate Op = "update"
	OpDelete Op = "delete"
	// OpTruncate: the table was truncated; consumers must recompute state.
	OpTruncate Op = "truncate"
	// OpMessage: an application event written by rowcast.broadcast() in SQL.
	OpMessage Op = "message"
	// OpResync: capture may have missed changes (NOTIFY connection lost, slot
	// recreated). Consumers must recompute state and tell clients to refetch.
	OpResync Op = "resync"
	// OpStart: capture (re)started; every later change has an ID at or
	// after this Change's ID. It lets the replay window tell a client
	// resuming from an older ID that it must resync.
	OpStart Op = "start"
)

// Change is one captured row change (or control marker), in commit order.
type Change struct {
	Op     Op
	Schema string
	Table  string
	// Key holds the primary key column(s) of the row.
	Key Row
	// Row is the new row for inserts and updates, nil for deletes.
	Row Row
	// Old holds old values for updates and deletes. The NOTIFY trigger sends
	// the stats columns only; logical replication (REPLICA IDENTITY FULL)
	// sends the whole old row.
	Old Row
	// Xid is the writing transaction's id, used to tell whether a change is
	// already counted in a stats snapshot (see StatsSnapshot).
	Xid uint64
	// CommitTime is the transaction's commit time when the source knows it
	// (logical replication); zero otherwise.
	CommitTime time.Time
	// CaptureTime is when rowcast received the change.
	CaptureTime time.Time
	// ID orders changes and survives restarts where the source allows it.
	ID EventID
	// Event and Payload carry an application event (OpMessage).
	Event   string
	Payload json.RawMessage
	// Reason explains an OpResync or OpTruncate.
	Reason string
	// Horizon, on OpStart, is the newest ID that can exist when capture
	// starts (the server's WAL position in logical mode; the start ID
	// itself in notify mode, whose epoch is new). A client cursor beyond
	// it was never handed out. Zero when the source cannot tell.
	Horizon EventID
}

// Time is the event timestamp: the commit time when known, else capture time.
func (c *Change) Time() time.Time {
	if !c.CommitTime.IsZero() {
		return c.CommitTime
	}
	return c.CaptureTime
}

// Sink receives changes in commit order. Capture calls it from one goroutine.
// When Apply returns nil, the changes are handed on: a logical replication
// source may acknowledge them to PostgreSQL once Retained allows it.
type Sink interface {
	Apply(ctx context.Context, changes []Change) error
}

// Retainer is implemented by sinks that keep recent changes (the replay
// window). Oldest returns the ID of the oldest change still held; a logical
// replication source never acknowledges past that transaction, so that after
// a crash the slot sends the window again.
type Retainer interface {
	Oldest() (EventID, bool)
}

// Column is one column of a row: its name and its value as JSON.
type Column struct {
	Name  string
	Value json.RawMessage
}

// Row is an ordered list of columns. Values are kept as JSON so that a row
// is encoded exactly once and without loss (bigint, numeric, timestamps).
type Row []Column

var jsonNull = json.RawMessage("null")

// Get returns the JSON value of a column.
func (r Row) Get(name string) (json.RawMessage, bool) {
	for i := range r {
		if r[i].Name == name {
			return r[i].Value, true
		}
	}
	return nil, false
}

// Text returns a column value as text: strings unquoted, other JSON as is.
// ok is false when the column is missing or NULL.
func (r Row) Text(name string) (string, bool) {
	v, found := r.Get(name)
	if !found || bytes.Equal(v, jsonNull) {
		return "", false
	}
	return JSONText(v), true
}

// plainJSONString reports whether b, between a JSON string's quotes,
// holds no escape, quote or control character and is valid UTF-8: its
// text is b itself.
func plainJSONString(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == '"' || c == '\\' {
			return false
		}
	}
	return utf8.Valid(b)
}

// JSONText turns a JSON scalar into text: strings unquoted, others verbatim.
func JSONText(v json.RawMessage) string {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' && plainJSONString(v[1:len(v)-1]) {
		// Nothing escaped (statuses, priorities, most values): the text
		// is what the quotes enclose.
		return string(v[1 : len(v)-1])
	}
	if len(v) > 0 && v[0] == '"' {
		var s string
		if err := json.Unmarshal(v, &s); err == nil {
			return s
		}
	}
	return string(v)
}

// Set replaces or appends a column.
func (r Row) Set(name string, value json.RawMessage) Row {
	for i := range r {
		if r[i].Name == name {
			r[i].Value = value
			return r
		}
	}
	return append(r, Column{Name: name, Value: value})
}

// MarshalJSON writes the columns as one JSON object, in column order.
func (r Row) MarshalJSON() ([]byte, error) {
	if r == nil {
		return []byte("null"), nil
	}
	return r.AppendJSON(nil), nil
}

// AppendJSON appends the row as a JSON object. It runs once per change on
// the capture path, so it sizes the buffer once and quotes plain column
// names without the reflection-based encoder.
func (r Row) AppendJSON(b []byte) []byte {
	n := 2
	for _, c := range r {
		n += len(c.Name) + len(c.Value) + 4
	}
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), len(b)+n)
		copy(nb, b)
		b = nb
	}
	b = append(b, '{')
	for i, c := range r {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendJSONString(b, c.Name)
		b = append(b, ':')
		if len(c.Value) == 0 {
			b = append(b, "null"...)
		} else {
			b = append(b, c.Value...)
		}
	}
	return append(b, '}')
}

// AppendJSONString appends s as a JSON string: directly when it needs no
// escaping (names, usually), else through encoding/json.
func AppendJSONString(b []byte, name string) []byte {
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7f || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(name)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, name...)
	return append(b, '"')
}

// UnmarshalJSON reads a JSON object keeping its key order. encoding/json
// has validated data before calling it, so a small scanner that finds
// where each value ends is enough; values are kept as they are.
func (r *Row) UnmarshalJSON(data []byte) error {
	// The values are slices of one copy of the object, not a copy each.
	row, err := ParseRow(bytes.Clone(data), 12)
	if err != nil {
		return err
	}
	*r = row
	return nil
}

// ParseRow is UnmarshalJSON for a caller that hands data over: the
// values are slices of data itself (capped, so that appending to one
// cannot write over the next), and the column names, the same on every
// row, are interned. A row costs one allocation, not two per column:
// columns, the number the caller expects, sizes it. data must be valid
// JSON; null is a nil Row.
func ParseRow(data []byte, columns int) (Row, error) {
	i := skipSpace(data, 0)
	if bytes.HasPrefix(data[i:], jsonNull) {
		return nil, nil
	}
	if i >= len(data) || data[i] != '{' {
		return nil, errors.New("row: want a JSON object")
	}
	out := make(Row, 0, max(columns, 1))
	err := EachMember(data, func(name, value []byte) error {
		out = append(out, Column{Name: columnNames.intern(name), Value: json.RawMessage(value)})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("row: %w", err)
	}
	return out, nil
}

// columnNames interns the column names of rows decoded from JSON. Names
// come from payloads anyone who can NOTIFY may send, so the table is
// bounded: past maxInterned names, or for long names, a name is a string
// of its own as before.
var columnNames = &internTable{m: make(map[string]string)}

const (
	maxInterned       = 4096
	maxInternedLength = 64
)

type internTable struct {
	mu sync.RWMutex
	m  map[string]string
}

func (t *internTable) intern(b []byte) string {
	if len(b) > maxInternedLength {
		return string(b)
	}
	t.mu.RLock()
	s, ok := t.m[string(b)] // no allocation for the lookup
	t.mu.RUnlock()
	if ok {
		return s
	}
	s = string(b)
	t.mu.Lock()
	if len(t.m) < maxInterned {
		t.m[s] = s
	}
	t.mu.Unlock()
	return s
}

// needsDecoding: escapes, or bytes that encoding/json would check as UTF-8.
func needsDecoding(b []byte) bool {
	for _, c := range b {
		if c == '\\' || c >= 0x80 {
			return true
		}
	}
	return false
}

// EachMember calls fn with each member of the JSON object data, in order:
// its key, unescaped, and its value's bytes as they are. data must be
// valid JSON (json.Valid) holding an object; fn's error ends the walk and
// is returned. It is the reflection-free walk for decoders on the capture
// path, which see every change.
func EachMember(data []byte, fn func(key, value []byte) error) error {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return errors.New("want a JSON object")
	}
	i = skipSpace(data, i+1)
	for i < len(data) && data[i] != '}' {
		end := scanString(data, i)
		if data[i] != '"' || end < 0 {
			return errors.New("want a member name")
		}
		key := data[i+1 : end-1]
		if needsDecoding(key) {
			var decoded string
			if err := json.Unmarshal(data[i:end], &decoded); err != nil {
				return fmt.Errorf("member name: %w", err)
			}
			key = []byte(decoded)
		}
		i = skipSpace(data, end)
		if i >= len(data) || data[i] != ':' {
			return fmt.Errorf("member %q: want ':'", key)
		}
		i = skipSpace(data, i+1)
		vend := scanValue(data, i)
		if vend <= i {
			return fmt.Errorf("member %q: malformed value", key)
		}
		if err := fn(key, data[i:vend:vend]); err != nil {
			return err
		}
		i = skipSpace(data, vend)
		if i < len(data) && data[i] == ',' {
			i = skipSpace(data, i+1)
		}
	}
	return nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString returns the index after the string starting at b[i] ('"'),
// or -1.
func scanString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// scanValue returns the index after the JSON value starting at b[i].
func scanValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return scanString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = scanString(b, j)
				if j < 0 {
					return -1
				}
				j--
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
		j++
	}
	return j
}

// EventID orders events. Logical replication IDs are (history, commit
// LSN, index in the transaction), with the history an Epoch that has
// HistoryFlag set (see HistoryEpoch), so they are stable across restarts
// and never compare with IDs of another database or timeline. Epoch 0
// marks logical IDs of rowcast versions before the history (compared with
// nothing else). NOTIFY IDs are (epoch, sequence): the epoch changes
// whenever rowcast starts or its listener reconnects, because NOTIFY
// cannot replay what was missed.
type EventID struct {
	Epoch uint64
	Pos   uint64
	Index uint32
}

// HistoryFlag marks the Epoch of a logical replication ID. Notify epochs
// are clock milliseconds and never have it.
const HistoryFlag = 1 << 63

// HistoryEpoch is the Epoch of logical replication IDs from one WAL
// history: the server's system identifier (a different cluster, e.g.
// restored from a logical dump) and timeline (a promoted standby, a
// point-in-time restore). WAL positions of two histories do not compare:
// a failover may go back to an earlier position and write different
// changes there, and a client's cursor from the old history must get
// resync, never a replay that skips what the new one wrote.
func HistoryEpoch(systemID string, timeline int32) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", systemID, timeline)
	return h.Sum64() | HistoryFlag
}

// IsZero reports whether the ID is unset.
func (id EventID) IsZero() bool { return id == EventID{} }

// Less orders IDs; IDs of different epochs are not comparable (see SameEpoch).
func (id EventID) Less(o EventID) bool {
	if id.Pos != o.Pos {
		return id.Pos < o.Pos
	}
	return id.Index < o.Index
}

// SameEpoch reports whether two IDs can be compared.
func (id EventID) SameEpoch(o EventID) bool { return id.Epoch == o.Epoch }

// String formats the ID so that IDs of one epoch sort as strings too:
// "8C2F0E1D33A4B5C6-00000000016B3748-00000003" (logical, with its
// history), "00000000016B3748-00000003" (logical, before histories) or
// "e18A2B...-0000000000000007" (notify).
func (id EventID) String() string {
	var b [48]byte
	return string(id.Append(b[:0]))
}

// Append appends the String form to b; events are framed with it once
// per change, so it does without fmt.
func (id EventID) Append(b []byte) []byte {
	switch {
	case id.Epoch&HistoryFlag != 0:
		b = appendHex(b, id.Epoch, 16)
		b = append(b, '-')
		b = appendHex(b, id.Pos, 16)
		b = append(b, '-')
		return appendHex(b, uint64(id.Index), 8)
	case id.Epoch == 0:
		b = appendHex(b, id.Pos, 16)
		b = append(b, '-')
		return appendHex(b, uint64(id.Index), 8)
	}
	b = append(b, 'e')
	b = appendHex(b, id.Epoch, 0)
	b = append(b, '-')
	return appendHex(b, id.Pos, 16)
}

// appendHex appends v in upper-case hexadecimal, zero-padded to width
// digits (%0*X).
func appendHex(b []byte, v uint64, width int) []byte {
	const digits = "0123456789ABCDEF"
	var buf [16]byte
	i := len(buf)
	for v != 0 || i == len(buf) {
		i--
		buf[i] = digits[v&0xF]
		v >>= 4
	}
	for n := len(buf) - i; n < width; n++ {
		b = append(b, '0')
	}
	return append(b, buf[i:]...)
}

// ParseEventID parses the String form.
func ParseEventID(s string) (EventID, error) {
	bad := fmt.Errorf("malformed event id %q: want the id of an event as received", s)
	if len(s) > 64 {
		return EventID{}, bad
	}
	if len(s) > 1 && s[0] == 'e' {
		var epoch, pos string
		for i := 1; i < len(s); i++ {
			if s[i] == '-' {
				epoch, pos = s[1:i], s[i+1:]
				break
			}
		}
		e, err1 := strconv.ParseUint(epoch, 16, 64)
		p, err2 := strconv.ParseUint(pos, 16, 64)
		if err1 != nil || err2 != nil || e == 0 || e&HistoryFlag != 0 {
			return EventID{}, bad
		}
		return EventID{Epoch: e, Pos: p}, nil
	}
	if len(s) == 42 && s[16] == '-' && s[33] == '-' {
		e, err1 := strconv.ParseUint(s[:16], 16, 64)
		p, err2 := strconv.ParseUint(s[17:33], 16, 64)
		i, err3 := strconv.ParseUint(s[34:], 16, 32)
		if err1 != nil || err2 != nil || err3 != nil || e&HistoryFlag == 0 {
			return EventID{}, bad
		}
		return EventID{Epoch: e, Pos: p, Index: uint32(i)}, nil
	}
	if len(s) != 25 || s[16] != '-' {
		return EventID{}, bad
	}
	p, err1 := strconv.ParseUint(s[:16], 16, 64)
	i, err2 := strconv.ParseUint(s[17:], 16, 32)
	if err1 != nil || err2 != nil {
		return EventID{}, bad
	}
	return EventID{Pos: p, Index: uint32(i)}, nil
}
