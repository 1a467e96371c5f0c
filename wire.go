package rowcast

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// WireVersion is the version of the encoding of a Change that rowcast
// nodes exchange in cluster mode (MarshalChange). A node refuses messages
// of another version rather than guess at their meaning; a change to the
// encoding that older nodes cannot read takes a new version.
const WireVersion = 1

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
func MarshalChange(c *Change) ([]byte, error) {
	w := wireChange{V: WireVersion, Op: c.Op, Schema: c.Schema, Table: c.Table,
		Key: c.Key, Row: c.Row, Old: c.Old, Xid: c.Xid, Event: c.Event, Payload: c.Payload, Reason: c.Reason}
	if !c.ID.IsZero() {
		w.ID = c.ID.String()
	}
	if !c.Horizon.IsZero() {
		w.Horizon = c.Horizon.String()
	}
	if !c.CommitTime.IsZero() {
		t := c.CommitTime
		w.CommitTime = &t
	}
	if !c.CaptureTime.IsZero() {
		t := c.CaptureTime
		w.Capture = &t
	}
	b, err := json.Marshal(&w)
	if err != nil {
		return nil, fmt.Errorf("encoding change %s: %w", c.ID, err)
	}
	return b, nil
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
