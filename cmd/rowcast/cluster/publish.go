// Package cluster runs rowcast as one of several nodes that share one
// capture through a NATS JetStream stream: the node holding a PostgreSQL
// advisory lock captures and publishes (Leader, Publisher), and every node
// consumes the stream into its hub (Consumer). Only nats.go speaks NATS.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"rowcast"
)

// Log is the stream as the capturing node writes it.
type Log interface {
	// Publish stores msgs in order, the first right after sequence
	// after, and returns once all are acknowledged, with the last one's
	// sequence.
	Publish(ctx context.Context, msgs []Message, after uint64) (uint64, error)
	// Tail returns at most n of the stream's last messages, newest
	// first, up to the first one enough reports true for, and the last
	// message's sequence.
	Tail(ctx context.Context, n int, enough func(Message) bool) ([]Message, uint64, error)
}

// Publisher is the capturing node's rowcast.Sink: Apply returns once
// JetStream has stored the changes, so capture acknowledges to
// PostgreSQL only what the stream holds. It is no rowcast.Retainer: the
// stream keeps the replay window, and the slot's position follows the
// stream closely.
//
// Messages carry their event id as JetStream's deduplication id, and each
// expects the stream's last sequence to be the one before its own: the stream holds
// changes in commit order, without gaps, whatever fails. Begin starts a
// term: it reads where the stream ends, and Apply then skips the changes
// the slot sends again that the stream already holds.
//
// A Publisher is used by one goroutine at a time (capture's).
type Publisher struct {
	log     Log
	timeout time.Duration
	logger  *slog.Logger

	// last is the sequence of the stream's last message; newest the
	// newest change id it holds (hasNewest when it holds one).
	last      uint64
	newest    rowcast.EventID
	hasNewest bool
	// term makes the ids of this term's markers unique.
	term    string
	markers int
}

// NewPublisher returns a publisher to log; a batch not acknowledged within
// timeout fails Apply (and the capturer steps down).
func NewPublisher(log Log, timeout time.Duration, logger *slog.Logger) *Publisher {
	if logger == nil {
		logger = slog.Default()
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return &Publisher{log: log, timeout: timeout, logger: logger}
}

// tailScan bounds how far back Begin looks for the newest change: markers
// are a few per leadership term.
const tailScan = 256

// Begin starts a term: it reads the end of the stream.
func (p *Publisher) Begin(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	tail, last, err := p.log.Tail(ctx, tailScan, func(m Message) bool {
		_, ok := changeID(m.ID)
		return ok
	})
	if err != nil {
		return fmt.Errorf("reading the end of the stream: %w", err)
	}
	var nonce [6]byte
	_, _ = rand.Read(nonce[:])
	p.term, p.markers = hex.EncodeToString(nonce[:]), 0
	p.last, p.hasNewest = last, false
	for _, m := range tail {
		if id, ok := changeID(m.ID); ok {
			p.newest, p.hasNewest = id, true
			break
		}
	}
	p.logger.Debug("publishing to the stream", "after", p.last, "newest_change", p.newest.String())
	return nil
}

// Message ids: "c:" and the event id for a change, "m:", the term and a
// count for a marker (a start or resync marker is news each time).
const changePrefix, markerPrefix = "c:", "m:"

func changeID(msgID string) (rowcast.EventID, bool) {
	s, ok := strings.CutPrefix(msgID, changePrefix)
	if !ok {
		return rowcast.EventID{}, false
	}
	id, err := rowcast.ParseEventID(s)
	return id, err == nil
}

// isChange reports whether c is a change with a place in commit order
// (not a start or resync marker).
func isChange(c *rowcast.Change) bool {
	return !c.ID.IsZero() && c.Op != rowcast.OpStart && c.Op != rowcast.OpResync
}

// Apply implements rowcast.Sink.
func (p *Publisher) Apply(ctx context.Context, changes []rowcast.Change) error {
	msgs := make([]Message, 0, len(changes))
	newest, hasNewest := p.newest, p.hasNewest
	for i := range changes {
		c := &changes[i]
		var id string
		if isChange(c) {
			if hasNewest && c.ID.SameEpoch(newest) && !newest.Less(c.ID) {
				continue // sent again by the slot; the stream holds it
			}
			id = changePrefix + c.ID.String()
			newest, hasNewest = c.ID, true
		} else {
			p.markers++
			id = markerPrefix + p.term + ":" + strconv.Itoa(p.markers)
		}
		data, err := rowcast.MarshalChange(c)
		if err != nil {
			return err
		}
		msgs = append(msgs, Message{ID: id, Data: data})
	}
	if len(msgs) == 0 {
		return nil
	}
	pctx, cancel := context.WithTimeoutCause(ctx, p.timeout, ErrPublishTimeout)
	defer cancel()
	last, err := p.log.Publish(pctx, msgs, p.last)
	if err != nil {
		return &PublishError{err: err}
	}
	p.last = last
	p.newest, p.hasNewest = newest, hasNewest
	return nil
}

// ErrPublishTimeout: JetStream did not acknowledge within the timeout.
var ErrPublishTimeout = errors.New("JetStream did not acknowledge in time")

// PublishError is a batch the stream did not take: the capturer steps
// down and the next one publishes it again from the slot.
type PublishError struct{ err error }

func (e *PublishError) Error() string {
	return "publishing to the stream: " + e.err.Error() + " (is NATS up and the stream's majority reachable?)"
}
func (e *PublishError) Unwrap() error { return e.err }
