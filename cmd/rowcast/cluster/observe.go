package cluster

import (
	"context"
	"time"
)

// PublishObserver is told how long the stream took to acknowledge a batch.
type PublishObserver interface {
	Published(n int, d time.Duration, err error)
}

// Instrument wraps a Log so that every publish is observed; the publisher
// itself knows nothing of metrics.
func Instrument(log Log, obs PublishObserver) Log {
	if obs == nil {
		return log
	}
	return instrumented{log, obs}
}

type instrumented struct {
	Log
	obs PublishObserver
}

func (i instrumented) Publish(ctx context.Context, msgs []Message, after uint64) (uint64, error) {
	began := time.Now()
	last, err := i.Log.Publish(ctx, msgs, after)
	i.obs.Published(len(msgs), time.Since(began), err)
	return last, err
}
