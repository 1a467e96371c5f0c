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

func (i instrumented) Publish(ctx context.Context, msgs []Message, after uint64) (Pending, error) {
	began := time.Now()
	p, err := i.Log.Publish(ctx, msgs, after)
	if err != nil {
		i.obs.Published(len(msgs), time.Since(began), err)
		return nil, err
	}
	return &observed{Pending: p, obs: i.obs, n: len(msgs), began: began}, nil
}

// observed reports a batch once, when it is acknowledged or fails.
type observed struct {
	Pending
	obs      PublishObserver
	n        int
	began    time.Time
	reported bool
}

func (o *observed) report(err error) {
	if !o.reported {
		o.reported = true
		o.obs.Published(o.n, time.Since(o.began), err)
	}
}

func (o *observed) Poll() (bool, error) {
	done, err := o.Pending.Poll()
	if done || err != nil {
		o.report(err)
	}
	return done, err
}

func (o *observed) Wait(ctx context.Context) error {
	err := o.Pending.Wait(ctx)
	if err == nil || ctx.Err() == nil {
		o.report(err)
	}
	return err
}
