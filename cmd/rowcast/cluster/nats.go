package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// This file is the one that speaks NATS: the rest of the package sees the
// stream through Log (publish side) and Feed (consume side).

// NATSConfig says how to reach the NATS servers and which stream to use.
type NATSConfig struct {
	// URLs are the servers, nats://host:port (tls:// for TLS).
	URLs []string
	// Stream is the JetStream stream's name; its subject is
	// Stream + ".changes".
	Stream string
	// Replicas is the stream's replica count: 1 on a single server, 3 in
	// production (a majority of the three must be up to publish).
	Replicas int
	// MaxAge bounds how long the stream keeps a change (the replay window
	// of every node, and what a node starting fills its window from).
	MaxAge time.Duration
	// Duplicates is the stream's deduplication window: a change
	// published again within it (a new capturer replaying from the slot)
	// is stored once.
	Duplicates time.Duration
	// Credentials: a creds file, a user and password, or a token.
	CredsFile, User, Password, Token string
	// TLS: a CA bundle to verify the servers, and a client certificate
	// and key when the servers ask for one.
	TLSCA, TLSCert, TLSKey string
	// Name is the connection's name as the servers show it.
	Name   string
	Logger *slog.Logger
}

// Conn is a connection to the NATS servers and the stream of changes.
type Conn struct {
	cfg     NATSConfig
	nc      *nats.Conn
	js      jetstream.JetStream
	subject string
	log     *slog.Logger
}

// Dial connects to NATS. It does not wait for a server: the connection
// keeps trying, forever, and Connected says whether it is up.
func Dial(cfg NATSConfig) (*Conn, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("stream", cfg.Stream)
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.Timeout(5 * time.Second),
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(2),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("NATS disconnected; reconnecting", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("NATS error", "err", err)
		}),
	}
	switch {
	case cfg.CredsFile != "":
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	case cfg.Token != "":
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	nc, err := nats.Connect(strings.Join(cfg.URLs, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS %s: %w (check ROWCAST_NATS_URL, the credentials and TLS settings)", strings.Join(cfg.URLs, ","), err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("JetStream: %w", err)
	}
	return &Conn{cfg: cfg, nc: nc, js: js, subject: cfg.Stream + ".changes", log: log}, nil
}

// Close closes the connection.
func (c *Conn) Close() { c.nc.Close() }

// Connected reports whether a NATS server is connected.
func (c *Conn) Connected() bool { return c.nc.IsConnected() }

// EnsureStream creates the stream, or updates the settings rowcast owns
// on one that exists.
func (c *Conn) EnsureStream(ctx context.Context) error {
	_, err := c.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        c.cfg.Stream,
		Description: "rowcast: changes captured from PostgreSQL, in commit order",
		Subjects:    []string{c.subject},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    c.cfg.Replicas,
		MaxAge:      c.cfg.MaxAge,
		Duplicates:  c.cfg.Duplicates,
		Discard:     jetstream.DiscardOld,
	})
	if err != nil {
		return fmt.Errorf("creating JetStream stream %q (replicas %d): %w (check that JetStream is enabled on the servers, that ROWCAST_NATS_REPLICAS is at most their number, and the account's permissions)", c.cfg.Stream, c.cfg.Replicas, err)
	}
	return nil
}

// Message is a stream message on its way: its deduplication id (its last
// change's, see Publisher) and its encoding, one or more changes.
type Message struct {
	ID   string
	Data []byte
	// Part of Parts (from 1) when Data is a part of one change too large
	// for a message; 0 of 0 otherwise.
	Part, Parts int
}

// partHeader marks a part of a change: "i/n", i from 1 to n.
const partHeader = "Rowcast-Part"

// Publish sends msgs to the stream in order, the first right after
// sequence after (the stream's last message), without waiting: the
// returned Pending tells when the stream has acknowledged all of them.
// Each message expects the stream's last sequence to be the one before its
// own, which the stream leader checks before it replicates the message: one
// lost in a leader election stops the ones after it instead of letting
// them in ahead of it. (An expected last message id is checked only when
// replicas apply a message, and a mismatch there stops the replica.)
func (c *Conn) Publish(ctx context.Context, msgs []Message, after uint64) (Pending, error) {
	p := &natsPending{msgs: msgs, after: after, futures: make([]jetstream.PubAckFuture, 0, len(msgs))}
	for i, m := range msgs {
		msg := &nats.Msg{Subject: c.subject, Data: m.Data}
		if m.Parts > 0 {
			msg.Header = nats.Header{partHeader: []string{strconv.Itoa(m.Part) + "/" + strconv.Itoa(m.Parts)}}
		}
		f, err := c.js.PublishMsgAsync(msg,
			jetstream.WithMsgID(m.ID), jetstream.WithExpectLastSequence(after+uint64(i)))
		if err != nil {
			return nil, fmt.Errorf("publishing change %s: %w", m.ID, err)
		}
		p.futures = append(p.futures, f)
	}
	return p, nil
}

// headerRoom is what MaxMessage leaves of the servers' max_payload for a
// message's subject and headers (its id and expected sequence).
const headerRoom = 1024

// MaxMessage is the largest message data the servers take: their
// max_payload (1 MB unless configured), less room for the headers.
func (c *Conn) MaxMessage() int {
	n := int(c.nc.MaxPayload())
	if n <= 0 {
		n = 1 << 20 // not connected yet: the servers' default
	}
	return max(n-headerRoom, 1)
}

// natsPending is a batch on its way; used by one goroutine at a time.
type natsPending struct {
	msgs    []Message
	after   uint64
	futures []jetstream.PubAckFuture
	acked   int // futures acknowledged so far
	err     error
}

func (p *natsPending) Poll() (bool, error) {
	for p.err == nil && p.acked < len(p.futures) {
		f := p.futures[p.acked]
		select {
		case ack := <-f.Ok():
			p.ack(ack)
		case err := <-f.Err():
			p.err = fmt.Errorf("publishing change %s: %w", p.msgs[p.acked].ID, err)
		default:
			return false, nil
		}
	}
	return true, p.err
}

func (p *natsPending) Wait(ctx context.Context) error {
	for p.err == nil && p.acked < len(p.futures) {
		f := p.futures[p.acked]
		select {
		case ack := <-f.Ok():
			p.ack(ack)
		case err := <-f.Err():
			p.err = fmt.Errorf("publishing change %s: %w", p.msgs[p.acked].ID, err)
		case <-ctx.Done():
			return fmt.Errorf("publishing change %s: no acknowledgement from JetStream: %w", p.msgs[p.acked].ID, context.Cause(ctx))
		}
	}
	return p.err
}

func (p *natsPending) ack(ack *jetstream.PubAck) {
	if want := p.after + uint64(p.acked) + 1; ack.Duplicate || ack.Sequence != want {
		// The publisher skips what it knows the stream holds: another
		// node published it.
		p.err = fmt.Errorf("publishing change %s: the stream holds it already at %d (another node publishes?)", p.msgs[p.acked].ID, ack.Sequence)
		return
	}
	p.acked++
}

// Tail returns the last messages of the stream, newest first, at most n,
// up to the first one enough reports true for, and the sequence of the
// last message (0 for a stream that never had one).
func (c *Conn) Tail(ctx context.Context, n int, enough func(Message) bool) ([]Message, uint64, error) {
	s, err := c.js.Stream(ctx, c.cfg.Stream)
	if err != nil {
		return nil, 0, fmt.Errorf("reading stream %q: %w", c.cfg.Stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("reading stream %q: %w", c.cfg.Stream, err)
	}
	var out []Message
	for seq := info.State.LastSeq; seq >= info.State.FirstSeq && seq > 0 && len(out) < n; seq-- {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, 0, fmt.Errorf("reading message %d of stream %q: %w", seq, c.cfg.Stream, err)
		}
		msg := Message{ID: m.Header.Get(jetstream.MsgIDHeader), Data: m.Data}
		out = append(out, msg)
		if enough(msg) {
			break
		}
	}
	return out, info.State.LastSeq, nil
}

// LastSeq is the sequence of the stream's last message, 0 when it holds
// none (never had one, or all expired).
func (c *Conn) LastSeq(ctx context.Context) (uint64, error) {
	s, err := c.js.Stream(ctx, c.cfg.Stream)
	if err != nil {
		return 0, fmt.Errorf("reading stream %q: %w", c.cfg.Stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("reading stream %q: %w", c.cfg.Stream, err)
	}
	if info.State.Msgs == 0 {
		return 0, nil
	}
	return info.State.LastSeq, nil
}

// Delivery is one message of the stream as a consumer receives it.
type Delivery struct {
	Data []byte
	// Seq is its sequence in the stream; Pending how many follow it.
	Seq, Pending uint64
	// Part of Parts as Message has them; Parts is -1 for a part header
	// that does not parse.
	Part, Parts int
}

// parsePart reads a part header, "i/n" with 1 ≤ i ≤ n; "" is no part.
func parsePart(h string) (part, parts int) {
	if h == "" {
		return 0, 0
	}
	a, b, ok := strings.Cut(h, "/")
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || i < 1 || i > n {
		return 0, -1
	}
	return i, n
}

// Consume delivers the messages of the stream from sequence from (from
// the first it holds when 0), in order, to fn, until ctx ends. An ordered consumer: the server keeps
// no state for it, and the client recreates it after a gap, a
// reconnection or a lost server, from the sequence after the last one
// delivered. fn runs on one goroutine at a time.
func (c *Conn) Consume(ctx context.Context, from uint64, fn func(Delivery)) error {
	occ := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 0 {
		occ = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from}
	}
	cons, err := c.js.OrderedConsumer(ctx, c.cfg.Stream, occ)
	if err != nil {
		return fmt.Errorf("consuming stream %q: %w", c.cfg.Stream, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return
		}
		d := Delivery{Data: m.Data(), Seq: md.Sequence.Stream, Pending: md.NumPending}
		d.Part, d.Parts = parsePart(m.Headers().Get(partHeader))
		fn(d)
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		c.log.Debug("stream consumer", "err", err)
	}))
	if err != nil {
		return fmt.Errorf("consuming stream %q: %w", c.cfg.Stream, err)
	}
	<-ctx.Done()
	cc.Stop()
	<-cc.Closed()
	return nil
}
