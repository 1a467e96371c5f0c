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
//
// Every role that can connect may NOTIFY on the channel, so a payload is
// input to check, not a command: one that does not parse, names another
// table, carries a name rowcast does not allow, whose row cannot be read,
// or claims a TRUNCATE the catalog does not confirm is dropped and counted
// (CaptureStatus.Rejected). It never makes the listener reconnect or
// clients resync, so junk cannot cost a real change or a resync storm.
// Only a connection that actually failed is reconnected.
type Listener struct {
	cfg ListenerConfig
	log *slog.Logger

	connected  atomic.Bool
	reconnects atomic.Uint64
	// rejected counts dropped payloads; its log state belongs to the Run
	// goroutine.
	rejected *drops

	// Owned by the Run goroutine.
	epoch, seq uint64
	trunc      truncateCheck
}

// NewListener returns a Listener; call Run to start it.
func NewListener(cfg ListenerConfig) *Listener {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("capture", "notify")
	return &Listener{cfg: cfg, log: log, rejected: newDrops(rowcast.NotifyRejectReasons, log)}
}

// Status implements rowcast.Source.
func (l *Listener) Status() rowcast.CaptureStatus {
	return rowcast.CaptureStatus{Mode: "notify", Connected: l.connected.Load(), Reconnects: l.reconnects.Load(),
		Rejected: l.rejected.snapshot()}
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
	if err := l.trunc.load(ctx, conn, l.cfg.Table); err != nil {
		return false, err
	}
	if wasUp {
		// Whatever was committed while no LISTEN was active is lost.
		err := l.apply(ctx, sink, rowcast.Change{Op: rowcast.OpResync, CaptureTime: time.Now(),
			Reason: ReasonListenerReconnected})
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
		c, reason, err := l.decode(ctx, conn, n.Payload, fetch)
		if err != nil {
			if conn.IsClosed() || ctx.Err() != nil {
				// The connection failed while reading a row or the
				// catalog: reconnecting resyncs clients, so the change
				// is not silently lost.
				return true, err
			}
			l.rejected.add(reason, "dropped a notification on rowcast's channel: it is not a change of the captured table or a rowcast.broadcast() event (any role that can connect may NOTIFY)",
				"err", err, "sender_pid", n.PID, "payload", truncate(n.Payload, 200))
			continue
		}
		if err := l.apply(ctx, sink, c); err != nil {
			return true, err
		}
	}
}

// Resync and truncate reasons of notify capture. They reach every client,
// so they are fixed texts.
const (
	ReasonListenerReconnected = "capture reconnected; changes made meanwhile were not captured"
	ReasonTableTruncated      = "table truncated"
)

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

// decode checks a payload and turns it into a change. On error it returns
// the reason to count (see rowcast.NotifyRejectReasons). An error with the
// connection closed is a connection failure, not a bad payload.
func (l *Listener) decode(ctx context.Context, conn *pgx.Conn, payload string, fetch *rowFetcher) (c rowcast.Change, reason string, err error) {
	var n notification
	if err := json.Unmarshal([]byte(payload), &n); err != nil {
		return c, rowcast.RejectedMalformed, fmt.Errorf("decode notification: %w", err)
	}
	c = rowcast.Change{Xid: n.Xid, CaptureTime: time.Now(), Key: n.Key, Old: n.Old, Row: n.Row}
	t := l.cfg.Table
	switch n.Op {
	case "insert", "update", "delete", "truncate":
		if n.Xid == 0 {
			return c, rowcast.RejectedMalformed, fmt.Errorf("%s without a transaction id", n.Op)
		}
		// The trigger writes the table as schema.name; anything else is
		// another table (or another schema's table of the same name).
		if n.Table != t.String() {
			return c, rowcast.RejectedOtherTable, fmt.Errorf("change of table %q, not the captured %s", n.Table, t)
		}
		c.Schema, c.Table = t.Schema, t.Name
	case "message":
		if err := rowcast.CheckEventName(n.Event); err != nil {
			return c, rowcast.RejectedBadEventName, err
		}
		if n.Key != nil || n.Row != nil || n.Old != nil || n.Table != "" {
			return c, rowcast.RejectedMalformed, errors.New("message with row fields")
		}
		c.Op, c.Event, c.Payload = rowcast.OpMessage, n.Event, n.Payload
		l.seq++
		c.ID = rowcast.EventID{Epoch: l.epoch, Pos: l.seq}
		return c, "", nil
	default:
		return c, rowcast.RejectedMalformed, fmt.Errorf("unknown op %q", n.Op)
	}
	switch n.Op {
	case "truncate":
		ok, err := l.trunc.verify(ctx, conn, n.Xid)
		if err != nil {
			if conn.IsClosed() || ctx.Err() != nil {
				return c, "", err
			}
			// Missing a real TRUNCATE would leave clients with rows that
			// are gone; a resync too many is the lesser harm.
			l.log.Warn("could not check a truncate notification against the catalog; handing it on", "err", err)
		} else if !ok {
			return c, rowcast.RejectedUnverifiedTruncate, errors.New("truncate notification, but the table was not truncated since the last one")
		}
		c.Op, c.Reason = rowcast.OpTruncate, ReasonTableTruncated
		c.Key, c.Old, c.Row = nil, nil, nil
		return c, "", nil
	case "insert", "update":
		c.Op = rowcast.Op(n.Op)
	case "delete":
		c.Op = rowcast.OpDelete
		c.Row = nil
	}
	if !sameColumns(n.Key, t.Key) {
		return c, rowcast.RejectedMalformed, fmt.Errorf("key %s is not the primary key (%s) of %s", truncate(string(mustJSON(n.Key)), 100), strings.Join(t.Key, ", "), t)
	}
	if c.Op != rowcast.OpDelete && c.Row == nil {
		// The trigger sent the key only: the row did not fit NOTIFY.
		row, err := fetch.fetch(ctx, n.Key)
		if err != nil {
			return c, rowcast.RejectedFetchFailed, err
		}
		if row == nil {
			// Deleted since; its delete follows. Keep key and stats
			// values so counts stay exact.
			row = append(append(rowcast.Row{}, n.Key...), n.New...)
		}
		c.Row = row
	}
	l.seq++
	c.ID = rowcast.EventID{Epoch: l.epoch, Pos: l.seq}
	return c, "", nil
}

// sameColumns reports whether r has exactly the columns names, in any
// order, each once and none NULL, as a primary key has.
func sameColumns(r rowcast.Row, names []string) bool {
	if len(r) != len(names) {
		return false
	}
	for _, n := range names {
		if _, ok := r.Text(n); !ok {
			return false
		}
	}
	return true
}

func mustJSON(r rowcast.Row) []byte {
	b, _ := r.MarshalJSON()
	return b
}

// truncateCheck tells a TRUNCATE the trigger reported from a forged one.
// Any role that can connect may NOTIFY {"op": "truncate"} on the channel,
// and each would make every client resync and refetch, a cheap way to
// load the database through rowcast. A real TRUNCATE gives the table new
// storage (pg_class.relfilenode) in a new version of its pg_class row,
// written by the truncating transaction (xmin). So a truncate notification
// is accepted when the table's storage changed since the last accepted
// one, or when its transaction is the one that last wrote the table's
// pg_class row and was not accepted already (two truncating transactions
// whose notifications arrive after both committed). A forger gets at most
// one resync out of each real change to the table's pg_class row
// (TRUNCATE, VACUUM FULL, ALTER TABLE). NOTIFY delivers one notification
// per transaction for identical payloads, so a transaction that truncates
// twice sends one. Partitioned tables have no storage of their own: their
// truncates are accepted unchecked.
type truncateCheck struct {
	query    string
	filenode uint64
	lastXid  uint64
}

func (tc *truncateCheck) read(ctx context.Context, conn *pgx.Conn) (filenode, xmin uint64, partitioned bool, err error) {
	err = conn.QueryRow(ctx, tc.query).Scan(&filenode, &xmin, &partitioned)
	if err != nil {
		return 0, 0, false, fmt.Errorf("read the catalog entry of the captured table: %w", err)
	}
	return filenode, xmin, partitioned, nil
}

// load reads the table's storage when the listener (re)connects.
func (tc *truncateCheck) load(ctx context.Context, conn *pgx.Conn, t Table) error {
	*tc = truncateCheck{query: fmt.Sprintf(
		"SELECT relfilenode::bigint, xmin::text::bigint, relkind = 'p' FROM pg_class WHERE oid = %s::regclass",
		quoteLiteral(t.Ident()))}
	var err error
	tc.filenode, _, _, err = tc.read(ctx, conn)
	return err
}

// verify reports whether a truncate notification with xid (a 64-bit
// txid_current()) is confirmed by the catalog, and remembers it when it
// is.
func (tc *truncateCheck) verify(ctx context.Context, conn *pgx.Conn, xid uint64) (bool, error) {
	filenode, xmin, partitioned, err := tc.read(ctx, conn)
	if err != nil {
		return false, err
	}
	ok := partitioned || filenode != tc.filenode || (uint64(uint32(xid)) == xmin && xid != tc.lastXid)
	if ok {
		tc.filenode, tc.lastXid = filenode, xid
	}
	return ok, nil
}

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
