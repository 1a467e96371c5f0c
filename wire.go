package rowcast

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// WireVersion is the version of the encoding of a Change that rowcast
// nodes exchange in cluster mode (MarshalChange). A node refuses messages
// of another version rather than guess at their meaning; a change to the
// encoding that older nodes cannot read takes a new version.
const WireVersion = 1

// WireBatchVersion is the version of a stream message that carries
// several changes (WireBatch): {"v":2,"changes":[...]}, each element a
// change as version 1 encodes it, without its "v". A message of one
// change is version 1, so a node that reads only version 1 reads the
// stream of a publisher limited to one change per message.
const WireBatchVersion = 2

// wireChange is the encoded form of a Change. Every field but v and op is
// optional; times are RFC 3339 with nanoseconds, ids their String form.
type wireChange struct {
	V          int             `json:"v"`
	Op         Op              `json:"op"`
	ID         string          `json:"id,omitempty"`
	Schema     string          `json:"schema,omitempty"`
	Table      string          `json:"table,omitempty"`
	Key        Row             `json:"key,omitempty"`
	Row        Row             `json:"row"`
	Old        Row             `json:"old"`
	Xid        uint64          `json:"xid,omitempty"`
	CommitTime *time.Time      `json:"commit,omitempty"`
	Capture    *time.Time      `json:"capture,omitempty"`
	Event      string          `json:"event,omitempty"`
	Payload    json.RawMessage `json:"payload,omitempty"`
	Reason     string          `json:"reason,omitempty"`
	Horizon    string          `json:"horizon,omitempty"`
}

// MaxWireSize bounds an encoded change a node accepts (a row is at most
// about 1 GB in PostgreSQL, but a stream message is bounded by the NATS
// server's max_payload, 1 MB by default and 64 MB at most).
const MaxWireSize = 64 << 20

// MarshalChange encodes a change for the cluster stream, once, at capture.
// It writes what encoding/json would write for a wireChange, without
// reflection, and keeps JSON values (columns, payloads) byte for byte, so
// that every node hands clients the same bytes as the capturing node.
// The values are JSON by construction: capture encodes columns itself and
// checks payloads.
func MarshalChange(c *Change) ([]byte, error) {
	b := make([]byte, 0, wireSize(c))
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, WireVersion, 10)
	b = append(b, ',')
	return appendChangeFields(b, c)
}

// wireSize is about the size of c's encoding.
func wireSize(c *Change) int {
	n := 160 + len(c.Schema) + len(c.Table) + len(c.Event) + len(c.Payload) + len(c.Reason)
	for _, r := range []Row{c.Key, c.Row, c.Old} {
		for _, col := range r {
			n += len(col.Name) + len(col.Value) + 4
		}
	}
	return n
}

// appendChangeFields appends c's fields from "op" on and the closing
// brace: the body of a change object after its opening brace (and "v").
func appendChangeFields(b []byte, c *Change) ([]byte, error) {
	b = append(b, `"op":`...)
	b = AppendJSONString(b, string(c.Op))
	if !c.ID.IsZero() {
		b = append(b, `,"id":"`...)
		b = c.ID.Append(b)
		b = append(b, '"')
	}
	if c.Schema != "" {
		b = append(b, `,"schema":`...)
		b = AppendJSONString(b, c.Schema)
	}
	if c.Table != "" {
		b = append(b, `,"table":`...)
		b = AppendJSONString(b, c.Table)
	}
	if len(c.Key) > 0 {
		b = append(b, `,"key":`...)
		b = c.Key.AppendJSON(b)
	}
	b = append(b, `,"row":`...)
	b = appendRow(b, c.Row)
	b = append(b, `,"old":`...)
	b = appendRow(b, c.Old)
	if c.Xid != 0 {
		b = append(b, `,"xid":`...)
		b = strconv.AppendUint(b, c.Xid, 10)
	}
	var err error
	if !c.CommitTime.IsZero() {
		b = append(b, `,"commit":`...)
		if b, err = appendTime(b, c.CommitTime); err != nil {
			return nil, fmt.Errorf("encoding change %s: commit time: %w", c.ID, err)
		}
	}
	if !c.CaptureTime.IsZero() {
		b = append(b, `,"capture":`...)
		if b, err = appendTime(b, c.CaptureTime); err != nil {
			return nil, fmt.Errorf("encoding change %s: capture time: %w", c.ID, err)
		}
	}
	if c.Event != "" {
		b = append(b, `,"event":`...)
		b = AppendJSONString(b, c.Event)
	}
	if len(c.Payload) > 0 {
		b = append(b, `,"payload":`...)
		b = append(b, c.Payload...)
	}
	if c.Reason != "" {
		b = append(b, `,"reason":`...)
		b = AppendJSONString(b, c.Reason)
	}
	if !c.Horizon.IsZero() {
		b = append(b, `,"horizon":"`...)
		b = c.Horizon.Append(b)
		b = append(b, '"')
	}
	return append(b, '}'), nil
}

func appendRow(b []byte, r Row) []byte {
	if r == nil {
		return append(b, "null"...)
	}
	return r.AppendJSON(b)
}

// appendTime appends t as encoding/json does: RFC 3339 with nanoseconds,
// a four-digit year.
func appendTime(b []byte, t time.Time) ([]byte, error) {
	if y := t.Year(); y < 0 || y > 9999 {
		return b, fmt.Errorf("year %d outside [0,9999]", y)
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), nil
}

// ErrWireVersion: a message of another encoding version (a node of a newer
// rowcast writes the stream; upgrade this one).
var ErrWireVersion = errors.New("change encoded by another rowcast version")

// UnmarshalChange decodes what MarshalChange encoded. The stream is input
// like any other: a message that is not a change this version can hand on
// is an error, never a panic nor a half-filled Change.
func UnmarshalChange(data []byte) (Change, error) {
	if len(data) > MaxWireSize {
		return Change{}, fmt.Errorf("encoded change of %d bytes is larger than %d", len(data), MaxWireSize)
	}
	var w wireChange
	if err := json.Unmarshal(data, &w); err != nil {
		return Change{}, fmt.Errorf("decoding change: %w", err)
	}
	if w.V != WireVersion {
		return Change{}, fmt.Errorf("%w: version %d, this node reads %d", ErrWireVersion, w.V, WireVersion)
	}
	return w.change()
}

// wireMessage is a stream message of either version: a change (version
// 1) or a batch of them (version 2), told apart by "v".
type wireMessage struct {
	wireChange
	Changes []wireChange `json:"changes"`
}

// UnmarshalChanges decodes a stream message, a change (MarshalChange) or
// a batch of them (WireBatch), and appends its changes to dst in order.
// A message is decoded whole or refused whole: on an error dst comes back
// as it was.
func UnmarshalChanges(data []byte, dst []Change) ([]Change, error) {
	if len(data) > MaxWireSize {
		return dst, fmt.Errorf("stream message of %d bytes is larger than %d", len(data), MaxWireSize)
	}
	var w wireMessage
	if err := json.Unmarshal(data, &w); err != nil {
		return dst, fmt.Errorf("decoding change: %w", err)
	}
	switch w.V {
	case WireVersion:
		if w.Changes != nil {
			return dst, errors.New("decoding change: a version 1 message holds one change, not \"changes\"")
		}
		c, err := w.wireChange.change()
		if err != nil {
			return dst, err
		}
		return append(dst, c), nil
	case WireBatchVersion:
		if w.Op != "" || len(w.Changes) == 0 {
			return dst, errors.New("decoding changes: a version 2 message holds \"changes\", one or more, and nothing else")
		}
		n := len(dst)
		for i := range w.Changes {
			e := &w.Changes[i]
			if e.V != 0 {
				return dst[:n], fmt.Errorf("decoding change %d of %d: a change in a batch has no version of its own", i+1, len(w.Changes))
			}
			c, err := e.change()
			if err != nil {
				return dst[:n], fmt.Errorf("change %d of %d: %w", i+1, len(w.Changes), err)
			}
			dst = append(dst, c)
		}
		return dst, nil
	default:
		return dst, fmt.Errorf("%w: version %d, this node reads %d and %d", ErrWireVersion, w.V, WireVersion, WireBatchVersion)
	}
}

// change checks w and returns the change it encodes.
func (w *wireChange) change() (Change, error) {
	c := Change{Op: w.Op, Schema: w.Schema, Table: w.Table, Key: w.Key, Row: w.Row, Old: w.Old,
		Xid: w.Xid, Event: w.Event, Payload: w.Payload, Reason: w.Reason}
	if w.CommitTime != nil {
		c.CommitTime = *w.CommitTime
	}
	if w.Capture != nil {
		c.CaptureTime = *w.Capture
	}
	var err error
	if w.ID != "" {
		if c.ID, err = ParseEventID(w.ID); err != nil {
			return Change{}, fmt.Errorf("decoding change: %w", err)
		}
	}
	if w.Horizon != "" {
		if c.Horizon, err = ParseEventID(w.Horizon); err != nil {
			return Change{}, fmt.Errorf("decoding change: horizon: %w", err)
		}
	}
	switch c.Op {
	case OpInsert, OpUpdate, OpDelete:
		if c.ID.IsZero() || c.Table == "" || len(c.Key) == 0 {
			return Change{}, fmt.Errorf("decoding change: a row %s needs an id, a table and a key", c.Op)
		}
		if c.Op != OpDelete && c.Row == nil {
			return Change{}, fmt.Errorf("decoding change: a row %s needs its row", c.Op)
		}
	case OpMessage:
		// Its name and payload are checked where every event's are
		// (the hub counts what it drops).
		if c.ID.IsZero() {
			return Change{}, errors.New("decoding change: an application event needs an id")
		}
	case OpTruncate:
		if c.ID.IsZero() {
			return Change{}, errors.New("decoding change: a truncate needs an id")
		}
	case OpResync, OpStart:
	default:
		return Change{}, fmt.Errorf("decoding change: unknown op %q", c.Op)
	}
	return c, nil
}

// WireBatch builds one stream message from one or more changes, encoding
// each once: a single change as version 1 (what MarshalChange writes),
// several as version 2. The publisher adds changes until the message is
// full; Undo takes the last one out again when it made the message too
// large.
type WireBatch struct {
	buf  []byte // {"v":2,"changes":[ and the elements, comma-separated
	n    int    // changes added
	last int    // where the last element (its comma included) starts
	hint int    // the size of the last message, for the next buffer
}

const wireBatchHead = `{"v":2,"changes":[`

// Add encodes c into the message.
func (w *WireBatch) Add(c *Change) error {
	if w.buf == nil {
		w.buf = make([]byte, 0, max(w.hint, 4096))
	}
	if w.n == 0 {
		w.buf = append(w.buf[:0], wireBatchHead...)
	}
	w.last = len(w.buf)
	if w.n > 0 {
		w.buf = append(w.buf, ',')
	}
	b, err := appendChangeFields(append(w.buf, '{'), c)
	if err != nil {
		w.buf = w.buf[:w.last]
		return err
	}
	w.buf = b
	w.n++
	return nil
}

// Undo takes the last change added out of the message.
func (w *WireBatch) Undo() {
	if w.n > 0 {
		w.buf = w.buf[:w.last]
		w.n--
	}
}

// Len is the number of changes in the message.
func (w *WireBatch) Len() int { return w.n }

// Size is the size of the message as Message would return it.
func (w *WireBatch) Size() int {
	switch w.n {
	case 0:
		return 0
	case 1:
		// {"v":1, and the element without its brace.
		return len(`{"v":1,`) + len(w.buf) - len(wireBatchHead) - 1
	}
	return len(w.buf) + len(`]}`)
}

// Message returns the message (a new slice, the caller's to keep) and
// empties the batch; nil when it holds no change.
func (w *WireBatch) Message() []byte {
	var m []byte
	switch w.n {
	case 0:
		return nil
	case 1:
		m = make([]byte, 0, w.Size())
		m = append(m, `{"v":`...)
		m = strconv.AppendInt(m, WireVersion, 10)
		m = append(m, ',')
		m = append(m, w.buf[len(wireBatchHead)+1:]...)
	default:
		// The buffer becomes the message: the next one starts anew.
		m = append(w.buf, `]}`...)
		w.buf, w.hint = nil, len(m)
	}
	w.n = 0
	return m
}
