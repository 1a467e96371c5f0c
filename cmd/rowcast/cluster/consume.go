package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"rowcast"
)

// Feed is the stream as every node reads it.
type Feed interface {
	// EnsureStream creates the stream when it does not exist.
	EnsureStream(ctx context.Context) error
	// LastSeq is the sequence of the stream's last message, 0 when it
	// holds none.
	LastSeq(ctx context.Context) (uint64, error)
	// Consume delivers the stream's messages from sequence from (0: the
	// first it holds) in order until ctx ends.
	Consume(ctx context.Context, from uint64, fn func(Delivery)) error
	// Connected reports whether the stream's servers are reachable.
	Connected() bool
}

// ConsumerObserver is told what the consumer skips.
type ConsumerObserver interface {
	BadMessage()
}

// Consumer feeds a node's hub from the stream: at start the changes the
// stream still holds (the replay window), then each as it is published.
type Consumer struct {
	feed Feed
	sink rowcast.Sink
	obs  ConsumerObserver
	log  *slog.Logger

	applied  atomic.Uint64 // sequence of the last message handed on
	pending  atomic.Uint64 // messages after it when it was delivered
	caughtUp atomic.Bool   // everything there was at start is handed on
	bad      atomic.Uint64

	mu       sync.Mutex
	progress chan struct{} // closed and replaced when applied moves

	own ownQueue // what this node publishes, when it captures

	part partial // a change in parts being put back together (consume's)
}

// NewConsumer returns a consumer of feed into sink (the hub).
func NewConsumer(feed Feed, sink rowcast.Sink, obs ConsumerObserver, log *slog.Logger) *Consumer {
	if log == nil {
		log = slog.Default()
	}
	return &Consumer{feed: feed, sink: sink, obs: obs, log: log, progress: make(chan struct{})}
}

// Ready reports whether the node serves the stream: its servers are
// reachable and what the stream held at start is handed on.
func (c *Consumer) Ready() bool { return c.caughtUp.Load() && c.feed.Connected() }

// Lag is how many messages of the stream this node has not handed on
// yet, as of the last one delivered.
func (c *Consumer) Lag() uint64 { return c.pending.Load() }

// Bad counts messages skipped because they could not be decoded.
func (c *Consumer) Bad() uint64 { return c.bad.Load() }

// Run consumes until ctx ends.
func (c *Consumer) Run(ctx context.Context) error {
	var last uint64
	for attempt := 0; ; attempt++ {
		err := c.feed.EnsureStream(ctx)
		if err == nil {
			last, err = c.feed.LastSeq(ctx)
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		c.log.Warn("the stream is not reachable yet; retrying", "err", err)
		if !sleep(ctx, retryDelay(attempt)) {
			return nil
		}
	}
	c.log.Info("consuming the stream", "messages_to_fill", last)
	if last == 0 {
		c.start(ctx)
	}
	for attempt := 0; ; attempt++ {
		from := uint64(0)
		if a := c.applied.Load(); a > 0 {
			from = a + 1
		}
		began := time.Now()
		err := c.consume(ctx, from, last)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(began) > time.Minute {
			attempt = 0
		}
		c.log.Warn("consuming the stream failed; retrying", "err", err, "from", from)
		if !sleep(ctx, retryDelay(attempt)) {
			return nil
		}
	}
}

// retryDelay is how long the consumer waits before its attempt-th retry:
// doubling from 100 ms up to 3 s.
func retryDelay(attempt int) time.Duration {
	return min(time.Duration(1<<min(attempt, 5))*100*time.Millisecond, 3*time.Second)
}

// handBatch is about the most changes handed to the hub at once: the
// consumer stops taking what is delivered once it has this many (a
// message of several changes may take it past).
const handBatch = 512

// consume runs one consumer from sequence from until ctx ends or it fails.
func (c *Consumer) consume(ctx context.Context, from, last uint64) error {
	deliveries := make(chan Delivery, 1024)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		errc <- c.feed.Consume(cctx, from, func(d Delivery) {
			select {
			case deliveries <- d:
			case <-cctx.Done():
			}
		})
	}()
	batch := make([]rowcast.Change, 0, handBatch)
	for {
		var d Delivery
		select {
		case <-ctx.Done():
			cancel()
			<-errc
			return nil
		case err := <-errc:
			if err == nil {
				err = errors.New("the consumer stopped")
			}
			return err
		case d = <-deliveries:
		}
		if d.Seq <= c.applied.Load() {
			continue // delivered again after a reset
		}
		batch = batch[:0]
		batch = c.decode(batch, d)
		seq, pending := d.Seq, d.Pending
	drain:
		for len(batch) < handBatch {
			select {
			case d = <-deliveries:
				if d.Seq <= seq {
					continue
				}
				batch = c.decode(batch, d)
				seq, pending = d.Seq, d.Pending
			default:
				break drain
			}
		}
		if len(batch) > 0 {
			// The hub may keep the slice: hand it a copy.
			if err := c.sink.Apply(ctx, append([]rowcast.Change(nil), batch...)); err != nil && ctx.Err() == nil {
				c.log.Error("the hub refused changes from the stream", "err", err)
			}
		}
		c.applied.Store(seq)
		c.pending.Store(pending)
		// Caught up with what the stream held at start: its last message,
		// or none after this one (the last may have expired meanwhile).
		if !c.caughtUp.Load() && (seq >= last || pending == 0) {
			c.start(ctx)
		}
		c.mu.Lock()
		close(c.progress)
		c.progress = make(chan struct{})
		c.mu.Unlock()
	}
}

// start tells the hub that what the stream held is handed on: from now
// on it may count the table and answer resumes.
func (c *Consumer) start(ctx context.Context) {
	_ = c.sink.Apply(ctx, []rowcast.Change{{Op: rowcast.OpStart, CaptureTime: time.Now()}})
	c.caughtUp.Store(true)
	c.log.Info("the replay window is filled from the stream")
}

// Published implements Local: the capturing node on this process says
// what message seq of the stream will be. When that message arrives with
// the same bytes, the consumer hands on its changes as they are instead of
// decoding the bytes again; the order stays the stream's.
func (c *Consumer) Published(seq uint64, data []byte, changes []rowcast.Change) {
	c.own.put(seq, data, changes)
}

// decode appends the changes of d to batch: a message is one change or
// several (see rowcast.WireBatch), and is skipped whole when it cannot be
// decoded.
func (c *Consumer) decode(batch []rowcast.Change, d Delivery) []rowcast.Change {
	data := d.Data
	if d.Parts == 0 {
		c.part.drop() // parts that will not be completed
		if chs, ok := c.own.take(d.Seq, d.Data); ok {
			return append(batch, chs...)
		}
	} else {
		var err error
		if data, err = c.part.add(d); err != nil {
			c.skip(d.Seq, err)
		}
		if data == nil {
			return batch
		}
	}
	batch, err := rowcast.UnmarshalChanges(data, batch)
	if err != nil {
		c.skip(d.Seq, err)
	}
	return batch
}

// skip counts a message of the stream that is not a change.
func (c *Consumer) skip(seq uint64, err error) {
	c.bad.Add(1)
	if c.obs != nil {
		c.obs.BadMessage()
	}
	c.log.Warn("skipping a message of the stream that is not a change", "seq", seq, "err", err)
}

// partial puts a change published in parts back together. Its parts are
// consecutive messages (one publish, each expecting the one before it);
// one out of place drops what was gathered: a term that failed half way
// through a change, or a stream read from the middle of one, leaves parts
// without the rest, and the change comes again whole.
type partial struct {
	active      bool
	seq         uint64 // the last part's sequence
	next, parts int
	buf         []byte
}

// add takes part d and returns the change's encoding once its last part
// is in. An error is a part header or size no publisher writes.
func (p *partial) add(d Delivery) ([]byte, error) {
	if d.Parts < 0 {
		p.drop()
		return nil, errors.New("a part header that does not parse")
	}
	switch {
	case d.Part == 1:
		p.drop()
		p.active, p.parts = true, d.Parts
	case !p.active || d.Part != p.next || d.Parts != p.parts || d.Seq != p.seq+1:
		p.drop()
		return nil, nil // a part without its beginning
	}
	if len(p.buf)+len(d.Data) > rowcast.MaxWireSize {
		p.drop()
		return nil, fmt.Errorf("a change in parts larger than %d bytes", rowcast.MaxWireSize)
	}
	p.buf = append(p.buf, d.Data...)
	p.seq, p.next = d.Seq, d.Part+1
	if d.Part < p.parts {
		return nil, nil
	}
	// Decoding copies what it keeps; the buffer is let go, as a change
	// this large is rare.
	data := p.buf
	p.active, p.buf = false, nil
	return data, nil
}

func (p *partial) drop() {
	p.active, p.buf = false, nil
}

// CatchUp waits until this node has handed on everything the stream holds
// now, or ctx ends. A client that resumes from an id this node has not
// handed on yet (it comes from a node further ahead) waits for it
// rather than being told to resync.
func (c *Consumer) CatchUp(ctx context.Context) error {
	last, err := c.feed.LastSeq(ctx)
	if err != nil {
		return err
	}
	for {
		c.mu.Lock()
		ch := c.progress
		c.mu.Unlock()
		if c.applied.Load() >= last {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// ownQueue holds what this node published and its consumer has not
// received yet, in sequence order: a ring, grown as needed. It is bounded: a consumer far behind (or not consuming)
// decodes what the queue let go.
type ownQueue struct {
	mu    sync.Mutex
	ring  []ownMessage
	head  int // index of the oldest message
	n     int // messages held
	bytes int
	taken atomic.Uint64 // changes handed on without decoding
}

type ownMessage struct {
	seq     uint64
	data    []byte
	changes []rowcast.Change
}

// The queue's bounds: in messages, and in bytes of their encoding.
const (
	maxOwnMessages = 8192
	maxOwnBytes    = 16 << 20
)

func (o *ownQueue) at(i int) *ownMessage { return &o.ring[(o.head+i)%len(o.ring)] }

func (o *ownQueue) put(seq uint64, data []byte, changes []rowcast.Change) {
	o.mu.Lock()
	defer o.mu.Unlock()
	// A new term publishes from where the stream ends: what was queued
	// from there on did not land.
	for o.n > 0 && o.at(o.n-1).seq >= seq {
		m := o.at(o.n - 1)
		o.bytes -= len(m.data)
		*m = ownMessage{}
		o.n--
	}
	if o.n >= maxOwnMessages || o.bytes+len(data) > maxOwnBytes {
		return
	}
	if o.n == len(o.ring) {
		// Grown as needed: a capturer whose consumer keeps up holds a few.
		ring := make([]ownMessage, min(max(2*len(o.ring), 64), maxOwnMessages))
		for i := 0; i < o.n; i++ {
			ring[i] = *o.at(i)
		}
		o.ring, o.head = ring, 0
	}
	m := o.at(o.n)
	m.seq, m.data, m.changes = seq, data, changes
	o.n++
	o.bytes += len(data)
}

// take returns the changes published as message seq when data is what
// was published, and forgets everything before it.
func (o *ownQueue) take(seq uint64, data []byte) ([]rowcast.Change, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for o.n > 0 && o.at(0).seq <= seq {
		m := o.at(0)
		found := m.seq == seq && bytes.Equal(m.data, data)
		chs := m.changes
		o.bytes -= len(m.data)
		*m = ownMessage{}
		o.head = (o.head + 1) % len(o.ring)
		o.n--
		if found {
			o.taken.Add(uint64(len(chs)))
			return chs, true
		}
	}
	return nil, false
}
