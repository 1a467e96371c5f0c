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
}
