// Package broadcast turns captured changes into dashboard events and hands
// them to connected clients: the Hub (fan-out, replay window, stats), the
// policy that decides what each user sees (auth, visibility, filters), the
// Gate every transport admits clients through, and the Session with its
// bounded queue and single writer. The transports themselves (broadcast/ws,
// broadcast/sse, broadcast/socketio) live in their own packages and meet
// this one at the Transport seam; this package imports no transport
// library.
package broadcast

import (
	"encoding/json"
	"strings"
	"time"
	"unicode"

	"rowcast"
)

// Event is one message to clients. It is encoded once per transport and the
// bytes are shared by every client that receives it.
type Event struct {
	ID    rowcast.EventID
	HasID bool
	Name  string
	// Data is the event's payload as JSON.
	Data json.RawMessage
	// Time is the commit (or capture) time, for latency measurement.
	Time time.Time
	// Row and Old are the row's new and old values (nil when not a row
	// event), kept for per-client filters and visibility.
	Row, Old, Key rowcast.Row

	// op is the row change the event comes from ("" for others).
	op rowcast.Op

	// left is the delete sent to clients for whom the row left their
	// visibility; built once, under the hub's mutex.
	left *Event

	// encoded caches the event's wire bytes, one slot per Encoding.
	encoded [maxEncodings]encodedSlot
}

// JSONFrame is the JSON text message {"id":...,"event":...,"data":...}
// that /ws sends (and tests read).
var JSONFrame = NewEncoding("json", encodeJSONFrame)

// Frame returns the event's JSON frame.
func (e *Event) Frame() []byte { return JSONFrame.Of(e) }

func encodeJSONFrame(e *Event) []byte {
	return AppendJSONFrame(make([]byte, 0, JSONFrameSize(e)), e)
}

// JSONFrameSize is room enough for most events' JSON frames, so that
// building one does not grow its buffer: the id alone is 42 bytes.
func JSONFrameSize(e *Event) int { return len(e.Data) + 2*len(e.Name) + 80 }

// AppendJSONFrame appends e's JSON frame, {"id":..,"event":..,"data":..},
// to b.
func AppendJSONFrame(b []byte, e *Event) []byte {
	b = append(b, '{')
	if e.HasID {
		b = append(b, `"id":"`...)
		b = e.ID.Append(b)
		b = append(b, `",`...)
	}
	b = append(b, `"event":`...)
	b = appendJSONString(b, e.Name)
	b = append(b, `,"data":`...)
	b = append(b, e.Data...)
	return append(b, '}')
}

// timeLayout is RFC 3339 in UTC with milliseconds, as the contract says.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func appendTimestamp(b []byte, t time.Time) []byte {
	b = append(b, `"timestamp":"`...)
	b = rowcast.AppendUTC(b, t, 3)
	return append(b, '"')
}

// Event profiles (ROWCAST_EVENTS): how row changes are named on the wire.
const (
	// ProfileColon: ticket:created, ticket:updated, ticket:deleted.
	ProfileColon = "colon"
	// ProfileUpdate: one event ticket_update with a type field
	// (new_ticket, updated_ticket, deleted_ticket).
	ProfileUpdate = "ticket_update"
)

// Names are the event names for one table.
type Names struct {
	// Prefix is the singular entity name: "ticket" for table tickets.
	Prefix                   string
	Profile                  string
	Created, Updated, Delete string
	// IDField names the key in delete payloads: "ticketId".
	IDField string
}

// NamesFor derives event names from a prefix ("ticket") and a profile.
func NamesFor(prefix, profile string) Names {
	n := Names{
		Prefix:  prefix,
		Profile: profile,
		Created: prefix + ":created",
		Updated: prefix + ":updated",
		Delete:  prefix + ":deleted",
		IDField: camel(prefix) + "Id",
	}
	if profile == ProfileUpdate {
		n.Created, n.Updated, n.Delete = prefix+"_update", prefix+"_update", prefix+"_update"
	} else {
		n.Profile = ProfileColon
	}
	return n
}

// Reserved reports whether an application event name would collide with
// the events rowcast itself sends.
func (n Names) Reserved(name string) bool {
	return strings.HasPrefix(name, n.Prefix+":") || name == n.Prefix+"_update" || reservedNames[name]
}

// reservedNames are rowcast's own events besides the row events, and the
// names socket.io-client keeps for itself (an application event by one of
// these names could not be delivered the same way on every transport).
var reservedNames = map[string]bool{
	statsEvent: true, "resync": true, "subscribed": true, "error": true,
	"connect": true, "connect_error": true, "disconnect": true, "disconnecting": true,
	"newListener": true, "removeListener": true,
}

// MaxMessagePayload bounds an application event's payload.
const MaxMessagePayload = 64 << 10

// Message reasons an application event is dropped for, as counted by
// Observer.EventDropped.
const (
	DropBadName      = "bad_name"
	DropReservedName = "reserved_name"
	DropBadPayload   = "bad_payload"
)

// DropReasons lists every reason, for metrics that start at 0.
var DropReasons = []string{DropBadName, DropReservedName, DropBadPayload}

// checkMessage returns why an application event must be dropped, or "".
// Capture checks names too; this is the last line, whatever the source.
func (n Names) checkMessage(c *rowcast.Change) string {
	switch {
	case rowcast.CheckEventName(c.Event) != nil:
		return DropBadName
	case n.Reserved(c.Event):
		return DropReservedName
	case len(c.Payload) > MaxMessagePayload || (len(c.Payload) > 0 && !json.Valid(c.Payload)):
		return DropBadPayload
	}
	return ""
}

// PrefixForTable derives the default event prefix: "tickets" → "ticket".
func PrefixForTable(table string) string {
	switch {
	case strings.HasSuffix(table, "ies") && len(table) > 3:
		return table[:len(table)-3] + "y"
	case strings.HasSuffix(table, "ses") || strings.HasSuffix(table, "xes"):
		return table[:len(table)-2]
	case strings.HasSuffix(table, "ss"), strings.HasSuffix(table, "us"), strings.HasSuffix(table, "is"):
		return table // address, status, analysis: not plurals
	case strings.HasSuffix(table, "s") && len(table) > 1:
		return table[:len(table)-1]
	}
	return table
}

// camel turns snake_case into camelCase: assignee_email → assigneeEmail.
func camel(s string) string {
	var b strings.Builder
	up := false
	for _, r := range s {
		if r == '_' || r == '-' || r == ' ' {
			up = true
			continue
		}
		if up && b.Len() > 0 {
			r = unicode.ToUpper(r)
		}
		up = false
		b.WriteRune(r)
	}
	return b.String()
}

// Translate turns a row change into its event. ok is false for changes
// that are not client events (control markers).
func (n Names) Translate(c *rowcast.Change) (*Event, bool) {
	ev := &Event{ID: c.ID, HasID: !c.ID.IsZero(), Time: c.Time(), Row: c.Row, Old: c.Old, Key: c.Key}
	if c.Op == rowcast.OpInsert || c.Op == rowcast.OpUpdate || c.Op == rowcast.OpDelete {
		ev.op = c.Op
	}
	if c.Op == rowcast.OpDelete && ev.Old == nil {
		ev.Old = c.Key
	}
	if n.Profile == ProfileUpdate && (c.Op == rowcast.OpInsert || c.Op == rowcast.OpUpdate || c.Op == rowcast.OpDelete) {
		ev.Name = n.Created
		ev.Data = n.updatePayload(c, ev.Time)
		return ev, true
	}
	var b []byte
	switch c.Op {
	case rowcast.OpInsert, rowcast.OpUpdate:
		ev.Name = n.Updated
		if c.Op == rowcast.OpInsert {
			ev.Name = n.Created
		}
		b = make([]byte, 0, rowSize(c.Row)+len(n.Prefix)+48)
		b = append(b, '{')
		b = appendJSONString(b, n.Prefix)
		b = append(b, ':')
		b = c.Row.AppendJSON(b)
		b = append(b, ',')
		b = appendTimestamp(b, ev.Time)
		b = append(b, '}')
	case rowcast.OpDelete:
		ev.Name = n.Delete
		b = append(b, '{')
		b = appendJSONString(b, n.IDField)
		b = append(b, ':')
		b = append(b, keyValue(c.Key)...)
		b = append(b, ',')
		b = appendTimestamp(b, ev.Time)
		b = append(b, '}')
	case rowcast.OpMessage:
		ev.Name = c.Event
		b = c.Payload
		if len(b) == 0 {
			b = []byte("null")
		}
	default:
		return nil, false
	}
	ev.Data = b
	return ev, true
}

// updatePayload is the ticket_update profile's data:
// {"type": "new_ticket", "ticket": {...}, "timestamp": T}.
func (n Names) updatePayload(c *rowcast.Change, t time.Time) []byte {
	typ, row := "updated_"+n.Prefix, c.Row
	switch c.Op {
	case rowcast.OpInsert:
		typ = "new_" + n.Prefix
	case rowcast.OpDelete:
		typ = "deleted_" + n.Prefix
		// The old row (whole in logical mode; key and tracked columns in
		// notify mode), key first.
		row = append(rowcast.Row{}, c.Key...)
		for _, col := range c.Old {
			if _, isKey := c.Key.Get(col.Name); !isKey {
				row = append(row, col)
			}
		}
	}
	rowJSON, _ := row.MarshalJSON()
	b := []byte(`{"type":`)
	b = appendJSONString(b, typ)
	b = append(b, ',')
	b = appendJSONString(b, n.Prefix)
	b = append(b, ':')
	b = append(b, rowJSON...)
	b = append(b, ',')
	b = appendTimestamp(b, t)
	return append(b, '}')
}

// knowsOld reports whether old holds every column the session's
// visibility and filter decide on. Notify capture sends those columns'
// old values, and logical capture the whole old row under REPLICA
// IDENTITY FULL; without it old has the key at most.
func (s *Session) knowsOld(old rowcast.Row) bool {
	if old == nil {
		return false
	}
	if !s.scope.All && !s.scope.None {
		if _, ok := old.Get(s.scope.Column); !ok {
			return false
		}
	}
	for col := range s.filter {
		if _, ok := old.Get(col); !ok {
			return false
		}
	}
	return true
}

// DeletedEvent is the delete event for a row that left a client's
// visibility: the client must drop it but may not see its new values.
func (n Names) DeletedEvent(ev *Event) *Event {
	c := &rowcast.Change{Op: rowcast.OpDelete, Key: ev.Key, Old: ev.Key, ID: ev.ID, CommitTime: ev.Time}
	d, _ := n.Translate(c)
	d.Time, d.HasID = ev.Time, ev.HasID
	return d
}

// rowSize estimates a row's JSON size, to allocate payloads once.
func rowSize(r rowcast.Row) int {
	n := 2
	for _, c := range r {
		n += len(c.Name) + len(c.Value) + 4
	}
	return n
}

// keyValue is the key's single value, or an object for composite keys.
func keyValue(key rowcast.Row) []byte {
	if len(key) == 1 {
		return key[0].Value
	}
	b, _ := key.MarshalJSON()
	return b
}

// ResyncEvent tells clients to refetch their data.
func ResyncEvent(reason string, t time.Time) *Event {
	b := []byte(`{"reason":`)
	b = appendJSONString(b, reason)
	b = append(b, ',')
	b = appendTimestamp(b, t)
	b = append(b, '}')
	return &Event{Name: "resync", Data: b, Time: t}
}

// appendJSONString appends s as a JSON string literal.
func appendJSONString(b []byte, s string) []byte { return rowcast.AppendJSONString(b, s) }

// Own lists the names of the events rowcast itself sends, for metrics
// that start at 0.
func (n Names) Own() []string {
	own := []string{n.Created}
	for _, name := range []string{n.Updated, n.Delete} {
		if name != own[len(own)-1] {
			own = append(own, name)
		}
	}
	return append(own, statsEvent, "resync", "subscribed", "error")
}
