package cdc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"rowcast"
)

// ListenerConfig configures NOTIFY capture.
type ListenerConfig struct {
	ConnString string
	Channel    string
	Table      Table
	Logger     *slog.Logger
	// MinBackoff and MaxBackoff bound the reconnect delay (100ms, 5s).
	MinBackoff, MaxBackoff time.Duration
}

// Listener captures changes sent by the rowcast trigger with pg_notify. It
// owns one dedicated connection (never a pooled one: LISTEN is per session).
// NOTIFY keeps nothing for an absent listener, so after a reconnect it emits
// OpResync and starts a new epoch of event IDs.
type Listener struct {
	cfg ListenerConfig
	log *slog.Logger

	connected  atomic.Bool
	reconnects atomic.Uint64

	// epoch and seq are owned by the Run goroutine.
	epoch, seq uint64
}

// NewListener returns a Listener; call Run to start it.
func NewListener(cfg ListenerConfig) *Listener {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Listener{cfg: cfg, log: cfg.Logger.With("capture", "notify")}
}

// Status implements rowcast.Source.
func (l *Listener) Status() rowcast.CaptureStatus {
	return rowcast.CaptureStatus{Mode: "notify", Connected: l.connected.Load(), Reconnects: l.reconnects.Load()}
}

var lastEpoch struct {
	sync.Mutex
	v uint64
}

// newEpoch returns a strictly increasing epoch based on the clock, so that
// IDs from before a restart or reconnect are never mistaken for later ones.
func newEpoch() uint64 {
	lastEpoch.Lock()
	defer lastEpoch.Unlock()
	e := uint64(time.Now().UnixMilli())
	if e <= lastEpoch.v {
		e = lastEpoch.v + 1
	}
	lastEpoch.v = e
	return e
}

// Run listens until ctx ends, reconnecting with capped backoff.
func (l *Listener) Run(ctx context.Context, sink rowcast.Sink) error {
	bo := newBackoff(l.cfg.MinBackoff, l.cfg.MaxBackoff)
	wasUp := false
	for {
		up, err := l.listen(ctx, sink, wasUp)
		l.connected.Store(false)
		wasUp = wasUp || up
		if ctx.Err() != nil {
			return nil
		}
		if up {
			bo.reset()
		}
		var se *sinkError
		if errors.As(err, &se) {
			return err
		}
		l.reconnects.Add(1)
		l.log.Warn("NOTIFY listener disconnected; reconnecting", "err", err)
		if !bo.wait(ctx) {
			return nil
		}
	}
}

// sinkError marks a failure of the consumer, which reconnecting cannot fix.
type sinkError struct{ err error }

func (e *sinkError) Error() string { return "hand on changes: " + e.err.Error() }
func (e *sinkError) Unwrap() error { return e.err }

func (l *Listener) apply(ctx context.Context, sink rowcast.Sink, ch ...rowcast.Change) error {
	if err := sink.Apply(ctx, ch); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &sinkError{err}
	}
	return nil
}

// listen runs one connection. up reports whether LISTEN was established.
func (l *Listener) listen(ctx context.Context, sink rowcast.Sink, wasUp bool) (up bool, err error) {
	cc, err := pgx.ParseConfig(l.cfg.ConnString)
	if err != nil {
		return false, fmt.Errorf("parse connection string: %w", err)
	}
	// Named so operators (and tests) can tell the listener's session apart.
	cc.RuntimeParams["application_name"] = "rowcast listener"
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{l.cfg.Channel}.Sanitize()); err != nil {
		return false, fmt.Errorf("LISTEN %s: %w", l.cfg.Channel, err)
	}
	l.epoch, l.seq = newEpoch(), 0
	if wasUp {
		// Whatever was committed while no LISTEN was active is lost.
		err := l.apply(ctx, sink, rowcast.Change{Op: rowcast.OpResync, CaptureTime: time.Now(),
			Reason: "capture reconnected; changes made meanwhile were not captured"})
		if err != nil {
			return true, err
		}
	}
	if err := l.apply(ctx, sink, rowcast.Change{Op: rowcast.OpStart, CaptureTime: time.Now(),
		ID: rowcast.EventID{Epoch: l.epoch}, Horizon: rowcast.EventID{Epoch: l.epoch}}); err != nil {
		return true, err
	}
	l.connected.Store(true)
	l.log.Info("listening", "channel", l.cfg.Channel, "table", l.cfg.Table.String())
	fetch := newRowFetcher(conn, l.cfg.Table)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, fmt.Errorf("wait for notification: %w", err)
		}
		if n.Channel != l.cfg.Channel {
			continue
		}
		c, err := l.decode(ctx, n.Payload, fetch)
		var fe *fetchError
		if errors.As(err, &fe) {
			// The connection failed while reading a row; reconnecting
			// resyncs clients, so the change is not silently lost.
			return true, err
		}
		if err != nil {
			// A payload that is not ours (someone else's NOTIFY on the
			// channel) must not stop capture.
			l.log.Error("ignoring malformed notification", "err", err, "payload", truncate(n.Payload, 200))
			continue
		}
		if err := l.apply(ctx, sink, c); err != nil {
			return true, err
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// notification is the trigger's payload (see sql/notify_setup.sql.tmpl).
type notification struct {
	Op      string          `json:"op"`
	Table   string          `json:"table"`
	Xid     uint64          `json:"xid"`
	Key     rowcast.Row     `json:"key"`
	Old     rowcast.Row     `json:"old"`
	Row     rowcast.Row     `json:"row"`
	New     rowcast.Row     `json:"new"`
	Event   string          `json:"event"`
	Payload json.RawMessage `json:"payload"`
}

func (l *Listener) decode(ctx context.Context, payload string, fetch *rowFetcher) (rowcast.Change, error) {
	var n notification
	if err := json.Unmarshal([]byte(payload), &n); err != nil {
		return rowcast.Change{}, fmt.Errorf("decode notification: %w", err)
	}
	c := rowcast.Change{Xid: n.Xid, CaptureTime: time.Now(), Key: n.Key, Old: n.Old, Row: n.Row}
	if n.Table != "" {
		c.Schema, c.Table, _ = strings.Cut(n.Table, ".")
	}
	switch n.Op {
	case "insert", "update":
		c.Op = rowcast.Op(n.Op)
		if c.Row == nil {
			// The trigger sent the key only: the row did not fit NOTIFY.
			row, err := fetch.fetch(ctx, n.Key)
			if err != nil {
				return rowcast.Change{}, &fetchError{err}
			}
			if row == nil {
				// Deleted since; its delete follows. Keep key and stats
				// values so counts stay exact.
				row = append(append(rowcast.Row{}, n.Key...), n.New...)
			}
			c.Row = row
		}
	case "delete":
		c.Op = rowcast.OpDelete
	case "truncate":
		c.Op, c.Reason = rowcast.OpTruncate, "table truncated"
		return c, nil
	case "message":
		if n.Event == "" {
			return rowcast.Change{}, errors.New("message without event name")
		}
		c.Op, c.Event, c.Payload = rowcast.OpMessage, n.Event, n.Payload
	default:
		return rowcast.Change{}, fmt.Errorf("unknown op %q", n.Op)
	}
	if c.Op != rowcast.OpMessage && c.Table != l.cfg.Table.Name {
		return rowcast.Change{}, fmt.Errorf("change of table %q, not the captured %s", n.Table, l.cfg.Table)
	}
	l.seq++
	c.ID = rowcast.EventID{Epoch: l.epoch, Pos: l.seq}
	return c, nil
}

type fetchError struct{ err error }

func (e *fetchError) Error() string { return e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

// rowFetcher reads a row by key on the listener's own connection (which may
// run queries between notifications).
type rowFetcher struct {
	conn  *pgx.Conn
	query string
}

func newRowFetcher(conn *pgx.Conn, t Table) *rowFetcher {
	conds := make([]string, len(t.Key))
	for i, k := range t.Key {
		id := pgx.Identifier{k}.Sanitize()
		conds[i] = "t." + id + " = k." + id
	}
	return &rowFetcher{conn: conn, query: fmt.Sprintf(
		"SELECT row_to_json(t)::text FROM %s t, jsonb_populate_record(NULL::%s, $1::jsonb) k WHERE %s",
		t.Ident(), t.Ident(), strings.Join(conds, " AND "))}
}

func (f *rowFetcher) fetch(ctx context.Context, key rowcast.Row) (rowcast.Row, error) {
	k, _ := key.MarshalJSON()
	var text string
	err := f.conn.QueryRow(ctx, f.query, string(k)).Scan(&text)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fetch row %s: %w", k, err)
	}
	var row rowcast.Row
	if err := json.Unmarshal([]byte(text), &row); err != nil {
		return nil, fmt.Errorf("fetch row %s: %w", k, err)
	}
	return row, nil
}
