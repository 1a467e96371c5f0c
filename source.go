package rowcast

import "context"

// Source captures changes from PostgreSQL and hands them to a Sink in commit
// order. Run owns its database connection, reconnects on failure and returns
// only when ctx ends or on an error that retrying cannot fix.
type Source interface {
	Run(ctx context.Context, sink Sink) error
	Status() CaptureStatus
}

// CaptureStatus is a point-in-time view of a Source, read by /readyz and
// the metrics collectors (the capture loop itself knows nothing of metrics).
type CaptureStatus struct {
	Mode string // "notify" or "logical"
	// Connected is true while the source is connected and listening/streaming.
	Connected bool
	// Reconnects counts connection losses followed by a new attempt.
	Reconnects uint64
	// ReceivedLSN and FlushedLSN: logical mode only.
	ReceivedLSN, FlushedLSN uint64
	// SlotRecreations counts slots recreated after loss or invalidation.
	SlotRecreations uint64
	// WithoutOldRow counts updates and deletes of the captured table that
	// logical capture received without the whole old row (the table is
	// not REPLICA IDENTITY FULL): the stats must be recounted and
	// clients whose filter or visibility the row may have left are sent
	// what is safe rather than what is exact. Cumulative.
	WithoutOldRow uint64
	// Ignored counts, by reason (one of IgnoreReasons), what logical
	// capture received from the slot and dropped instead of handing it on.
	// Cumulative; nil or a missing reason means 0.
	Ignored map[string]uint64
	// Rejected counts, by reason (one of NotifyRejectReasons), payloads
	// on the NOTIFY channel that notify capture dropped. Cumulative; nil
	// or a missing reason means 0.
	Rejected map[string]uint64
}

// Why logical capture drops what the slot sends (CaptureStatus.Ignored).
// The set is fixed so that it can label a metric.
const (
	// IgnoredOtherTable: a change of a table other than the captured one
	// (a publication that holds more tables, e.g. extended by an admin).
	IgnoredOtherTable = "other_table"
	// IgnoredLogicalMessage: a logical decoding message with rowcast's
	// prefix. Any role may call pg_logical_emit_message, so rowcast never
	// trusts one; events from SQL travel through rowcast.outbox instead.
	IgnoredLogicalMessage = "logical_message"
	// IgnoredBadEventName: an outbox event whose name CheckEventName refuses.
	IgnoredBadEventName = "bad_event_name"
	// IgnoredBadMessage: an outbox row rowcast.broadcast() cannot have
	// written (a malformed payload, an update or truncate of the outbox).
	IgnoredBadMessage = "bad_message"
)

// IgnoreReasons lists every reason of CaptureStatus.Ignored.
var IgnoreReasons = []string{IgnoredOtherTable, IgnoredLogicalMessage, IgnoredBadEventName, IgnoredBadMessage}

// Why notify capture drops a payload from its channel
// (CaptureStatus.Rejected). Any role that can connect may NOTIFY on the
// channel, so none of these stops capture or makes clients resync.
const (
	// RejectedMalformed: not JSON, or not the shape the trigger or
	// rowcast.broadcast() sends (unknown op, key without the primary key
	// columns, a row that is not an object, a change without its row,
	// parts of a large payload that do not arrive together and in order).
	RejectedMalformed = "malformed"
	// RejectedOtherTable: a row change that names another table.
	RejectedOtherTable = "other_table"
	// RejectedBadEventName: an event whose name CheckEventName refuses.
	RejectedBadEventName = "bad_event_name"
	// RejectedFetchFailed: kept so that its series stays; nothing counts
	// under it since large changes travel in parts and rowcast never
	// reads a row back by its key (what used to fail here is malformed).
	RejectedFetchFailed = "fetch_failed"
	// RejectedUnverifiedTruncate: a truncate the table's catalog entry
	// does not confirm (a genuine TRUNCATE gives the table new storage).
	RejectedUnverifiedTruncate = "unverified_truncate"
)

// NotifyRejectReasons lists every reason of CaptureStatus.Rejected.
var NotifyRejectReasons = []string{RejectedMalformed, RejectedOtherTable, RejectedBadEventName,
	RejectedFetchFailed, RejectedUnverifiedTruncate}
