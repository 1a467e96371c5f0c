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
	"sync"
	"time"

	"rowcast"
)

// Log is the stream as the capturing node writes it.
type Log interface {
	// Publish sends msgs in order, the first right after sequence after,
	// without waiting for the stream's acknowledgement.
	Publish(ctx context.Context, msgs []Message, after uint64) (Pending, error)
	// MaxMessage is the largest message data the stream takes.
	MaxMessage() int
	// Tail returns at most n of the stream's last messages, newest
	// first, up to the first one enough reports true for, and the last
	// message's sequence.
	Tail(ctx context.Context, n int, enough func(Message) bool) ([]Message, uint64, error)
}

// Pending is a published batch the stream has not acknowledged yet.
type Pending interface {
	// Poll reports, without waiting, whether the stream has acknowledged
	// every message of the batch, or why it will not.
	Poll() (done bool, err error)
	// Wait waits for the acknowledgement of every message, or ctx.
	Wait(ctx context.Context) error
}

// Publisher is the capturing node's rowcast.Sink and rowcast.Retainer:
// Apply publishes a batch and returns without waiting (batches are
// pipelined, so a commit does not wait for the one before it), and Oldest
// holds the slot's flush position at the oldest change the stream has not
// acknowledged: capture acknowledges to PostgreSQL only what the stream
// holds, and a new capturer gets the rest from the slot again. The stream,
// not the node, keeps the replay window, so the slot's position follows
// the stream closely.
//
// Messages carry their event id as JetStream's deduplication id, and each
// expects the stream's last sequence to be the one before its own: the
// stream holds changes in commit order, without gaps, whatever fails.
// Begin starts a term: it reads where the stream ends, and Apply then
// skips the changes the slot sends again that the stream already holds. A
// batch refused, or not acknowledged within the timeout, ends the term
// (see Term): the publisher calls its fail function and refuses every
// later batch.
type Publisher struct {
	log     Log
	timeout time.Duration
	logger  *slog.Logger
	local   Local

	mu sync.Mutex
	// next is the sequence the next message expects as the stream's last.
	next uint64
	// newest is the newest change id the stream holds or will (hasNewest
	// when there is one).
	newest    rowcast.EventID
	hasNewest bool
	// inflight holds the batches not acknowledged yet, oldest first.
	inflight []*batch
	// failed is why the term's publishing stopped; fail is told once.
	failed error
	fail   func(error)
	// term makes the ids of this term's markers unique.
	term    string
	markers int
	// enc builds the messages; batch is the most changes in one.
	enc   rowcast.WireBatch
	batch int
}

// Local is told, in order, what the capturing node publishes and at which
// sequence it will land, so that the node's own consumer hands its own
// changes on without decoding them again (see Consumer.Published).
type Local interface {
	Published(seq uint64, data []byte, changes []rowcast.Change)
}

// HandOff makes p tell local what it publishes; call it before Begin.
func (p *Publisher) HandOff(local Local) { p.local = local }

// DefaultBatch is the most changes in one stream message by default.
const DefaultBatch = 512

// Batch sets the most changes in one stream message (DefaultBatch
// unless set); 1 publishes every change as a message of its own, in
// wire version 1 (see rowcast.WireBatchVersion). Call it before Begin.
func (p *Publisher) Batch(n int) { p.batch = max(n, 1) }

// batch is a published batch: its acknowledgement and the oldest change
// in it (zero for a batch of markers only).
type batch struct {
	pending  Pending
	oldest   rowcast.EventID
	deadline time.Time
}

// maxInflight bounds the batches published and not acknowledged: Apply
// waits for the oldest beyond it.
const maxInflight = 256

// NewPublisher returns a publisher to log; a batch not acknowledged within
// timeout ends the term.
func NewPublisher(log Log, timeout time.Duration, logger *slog.Logger) *Publisher {
	if logger == nil {
		logger = slog.Default()
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return &Publisher{log: log, timeout: timeout, logger: logger, batch: DefaultBatch}
}

// tailScan bounds how far back Begin looks for the newest change: markers
// are a few per leadership term.
const tailScan = 256

// Begin starts a term: it reads the end of the stream. fail is called,
// once, when a batch of the term fails.
func (p *Publisher) Begin(ctx context.Context, fail func(error)) error {
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
	p.mu.Lock()
	defer p.mu.Unlock()
	p.term, p.markers = hex.EncodeToString(nonce[:]), 0
	p.next, p.hasNewest, p.inflight, p.failed, p.fail = last, false, nil, nil, fail
	for _, m := range tail {
		if id, ok := changeID(m.ID); ok {
			p.newest, p.hasNewest = id, true
			break
		}
	}
	p.logger.Debug("publishing to the stream", "after_seq", last, "newest_change", p.newest.String())
	return nil
}

// Message ids: "c:" and the event id for a change (the last in its
// message), "m:", the term and a count for a marker (a start or resync
// marker is news each time), "p:" for a part of a change but its last.
const changePrefix, markerPrefix, partPrefix = "c:", "m:", "p:"

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

// Apply implements rowcast.Sink: it publishes the changes and returns
// without waiting for the stream (see Oldest), unless maxInflight batches
// are on their way. The changes go in as few messages as the limits allow
// (at most Batch changes, and at most the servers' largest message each):
// the stream's cost (a publish, its acknowledgement, a delivery to every
// node) is per message.
func (p *Publisher) Apply(ctx context.Context, changes []rowcast.Change) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.reap(); err != nil {
		return err
	}
	for len(p.inflight) >= maxInflight {
		if err := p.waitOldest(ctx); err != nil {
			return err
		}
	}
	limit := p.log.MaxMessage()
	var msgs []Message
	var groups [][]rowcast.Change // each message's changes, for local
	var group []rowcast.Change
	newest, hasNewest := p.newest, p.hasNewest
	var oldest rowcast.EventID
	id := "" // the message's id: its last change's, or a marker's
	markers := p.markers
	flush := func() {
		msgs = append(msgs, Message{ID: id, Data: p.enc.Message()})
		if p.local != nil {
			groups = append(groups, group)
			group = nil
		}
	}
	for i := range changes {
		c := &changes[i]
		var cid string
		if isChange(c) {
			if hasNewest && c.ID.SameEpoch(newest) && !newest.Less(c.ID) {
				continue // sent again by the slot; the stream holds it
			}
			cid = changePrefix + c.ID.String()
		} else {
			markers++
			cid = markerPrefix + p.term + ":" + strconv.Itoa(markers)
		}
		if err := p.enc.Add(c); err != nil {
			p.enc.Message() // drop what this batch encoded
			return fmt.Errorf("encoding change %s for the stream: %w", c.ID, err)
		}
		if p.enc.Size() > limit && p.enc.Len() > 1 {
			p.enc.Undo()
			flush()
			if err := p.enc.Add(c); err != nil {
				return err // encoded a moment ago
			}
		}
		if p.enc.Size() > limit {
			// Alone and still larger than a message: it goes in parts,
			// consecutive messages the consumers put back together.
			data := p.enc.Message()
			if len(data) > maxChangeBytes {
				// No node would decode it: clients are told to resync
				// in its place, and the term goes on.
				p.logger.Error("a change too large for the stream was skipped; clients resync", "id", c.ID.String(), "bytes", len(data), "max", maxChangeBytes)
				var err error
				if data, err = rowcast.MarshalChange(&rowcast.Change{Op: rowcast.OpResync, Reason: ReasonChangeTooLarge, CaptureTime: time.Now()}); err != nil {
					return err
				}
			}
			msgs = append(msgs, parts(data, limit, cid, p.term)...)
			for len(groups) < len(msgs) && p.local != nil {
				groups = append(groups, nil) // consumers decode parts
			}
			if isChange(c) {
				newest, hasNewest = c.ID, true
				if oldest.IsZero() {
					oldest = c.ID
				}
			}
			continue
		}
		switch {
		case isChange(c):
			newest, hasNewest = c.ID, true
			if oldest.IsZero() {
				oldest = c.ID
			}
			id = cid
		case p.enc.Len() == 1 || !strings.HasPrefix(id, changePrefix):
			id = cid // a marker, first in its message or after markers only
		}
		if p.local != nil {
			group = append(group, *c)
		}
		if p.enc.Len() >= p.batch {
			flush()
		}
	}
	if p.enc.Len() > 0 {
		flush()
	}
	if len(msgs) == 0 {
		return nil
	}
	pend, err := p.log.Publish(ctx, msgs, p.next)
	if err != nil {
		return p.stop(err)
	}
	if p.local != nil {
		// Each message expects the one before it as the stream's last,
		// so it lands at this sequence or not at all.
		for j, m := range msgs {
			if m.Parts == 0 {
				p.local.Published(p.next+1+uint64(j), m.Data, groups[j])
			}
		}
	}
	p.inflight = append(p.inflight, &batch{pending: pend, oldest: oldest, deadline: time.Now().Add(p.timeout)})
	p.next += uint64(len(msgs))
	p.newest, p.hasNewest, p.markers = newest, hasNewest, markers
	return nil
}

// ReasonChangeTooLarge is the resync published in place of a change whose
// encoding is larger than any node decodes (rowcast.MaxWireSize).
const ReasonChangeTooLarge = "a change too large for the cluster stream (over 64 MiB) was skipped"

// maxChangeBytes is the largest change published: what every node decodes
// (a variable for tests).
var maxChangeBytes = rowcast.MaxWireSize

// parts cuts the encoding of one change into messages of at most limit
// bytes. The last part carries the change's message id, so that a new
// term finds the change on the stream only once all of it is there; the
// others carry ids of this term (a term that fails half way leaves its
// parts behind, and the next publishes the change again whole).
func parts(data []byte, limit int, id, term string) []Message {
	n := (len(data) + limit - 1) / limit
	out := make([]Message, 0, n)
	for i := range n {
		m := Message{Data: data[i*limit : min((i+1)*limit, len(data))], Part: i + 1, Parts: n, ID: id}
		if i < n-1 {
			m.ID = partPrefix + term + ":" + strconv.Itoa(i+1) + ":" + id
		}
		out = append(out, m)
	}
	return out
}

// Oldest implements rowcast.Retainer: the oldest change published and not
// acknowledged by the stream (after a failure: not acknowledged before it).
// Capture acknowledges nothing from its transaction on.
func (p *Publisher) Oldest() (rowcast.EventID, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.reap()
	for _, b := range p.inflight {
		if !b.oldest.IsZero() {
			return b.oldest, true
		}
	}
	return rowcast.EventID{}, false
}

// Check notices acknowledged, refused and overdue batches (Term calls it
// periodically, so that a capturer with nothing more to publish still
// steps down when the stream fails it).
func (p *Publisher) Check() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reap()
}

// Flush waits until the stream has acknowledged every batch published.
func (p *Publisher) Flush(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.inflight) > 0 {
		if err := p.waitOldest(ctx); err != nil {
			return err
		}
	}
	return p.failed
}

// reap drops the acknowledged batches at the front. Called with p.mu held.
func (p *Publisher) reap() error {
	if p.failed != nil {
		return p.failed
	}
	for len(p.inflight) > 0 {
		b := p.inflight[0]
		done, err := b.pending.Poll()
		if err != nil {
			return p.stop(err)
		}
		if !done {
			if time.Now().After(b.deadline) {
				return p.stop(ErrPublishTimeout)
			}
			return nil
		}
		p.inflight[0] = nil
		p.inflight = p.inflight[1:]
	}
	return nil
}

// waitOldest waits for the oldest batch. Called with p.mu held.
func (p *Publisher) waitOldest(ctx context.Context) error {
	b := p.inflight[0]
	wctx, cancel := context.WithDeadlineCause(ctx, b.deadline, ErrPublishTimeout)
	defer cancel()
	if err := b.pending.Wait(wctx); err != nil {
		return p.stop(err)
	}
	p.inflight[0] = nil
	p.inflight = p.inflight[1:]
	return nil
}

// stop fails the term. Called with p.mu held.
func (p *Publisher) stop(err error) error {
	if p.failed == nil {
		// The batches not acknowledged stay: they hold the slot (Oldest)
		// until the term's capture has stopped, so that the next
		// capturer gets them from the slot again.
		p.failed = &PublishError{err: err}
		if p.fail != nil {
			p.fail(p.failed)
		}
	}
	return p.failed
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
