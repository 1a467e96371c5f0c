package cdc

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff is a capped exponential delay with full jitter, so that many
// rowcast processes losing the same server do not reconnect in lockstep.
type backoff struct {
	min, max time.Duration
	next     time.Duration
}

func newBackoff(min, max time.Duration) *backoff {
	if min <= 0 {
		min = 100 * time.Millisecond
	}
	if max < min {
		max = 5 * time.Second
	}
	return &backoff{min: min, max: max, next: min}
}

func (b *backoff) reset() { b.next = b.min }

// wait sleeps for the next delay; it returns false when ctx ends first.
func (b *backoff) wait(ctx context.Context) bool {
	d := b.next/2 + rand.N(b.next/2+1)
	b.next *= 2
	if b.next > b.max {
		b.next = b.max
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
