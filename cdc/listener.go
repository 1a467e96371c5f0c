package cdc

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
// owns one dedicated connection (never a pooled one: LISTEN is per session),
// whose protocol it reads itself once pgx has set it up (notifyconn.go),
// and a second one, opened when a TRUNCATE is to be checked against the
// catalog.
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
	// catalogConfig and cat: the connection for the TRUNCATE check's
	// query (the LISTEN connection reads nothing but notifications).
	catalogConfig *pgx.ConnConfig
	cat           *pgx.Conn
	// idle is how long the listener waits for a notification before it
	// pings (listenerIdle; tests shorten it).
	idle time.Duration
}

// catalogError is a failure of the catalog connection: the listener
// reconnects, and clients resync.
type catalogError struct{ err error }

func (e *catalogError) Error() string { return "the catalog connection: " + e.err.Error() }
func (e *catalogError) Unwrap() error { return e.err }

// catalog is the connection for catalog queries, opened on first use.
func (l *Listener) catalog(ctx context.Context) (*pgx.Conn, error) {
	if l.cat != nil && !l.cat.IsClosed() {
		return l.cat, nil
	}
	l.closeCatalog()
	conn, err := pgx.ConnectConfig(ctx, l.catalogConfig)
	if err != nil {
		return nil, &catalogError{fmt.Errorf("connect: %w", err)}
	}
	l.cat = conn
	return conn, nil
}

func (l *Listener) closeCatalog() {
	if l.cat == nil {
		return
	}
	cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	l.cat.Close(cctx)
	l.cat = nil
}

// NewListener returns a Listener; call Run to start it.
func NewListener(cfg ListenerConfig) *Listener {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("capture", "notify")
	return &Listener{cfg: cfg, log: log, rejected: newDrops(rowcast.NotifyRejectReasons, log), idle: listenerIdle}
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
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = connectTimeout
	}
	l.catalogConfig = cc.Copy()
	l.catalogConfig.RuntimeParams["application_name"] = "rowcast listener catalog"
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
	var markers []rowcast.Change
	if wasUp {
		// Whatever was committed while no LISTEN was active is lost.
		markers = append(markers, rowcast.Change{Op: rowcast.OpResync, CaptureTime: time.Now(),
			Reason: ReasonListenerReconnected})
	}
	// One batch: between a resync and the start marker the hub has no
	// cursor to give a snapshot.
	markers = append(markers, rowcast.Change{Op: rowcast.OpStart, CaptureTime: time.Now(),
		ID: rowcast.EventID{Epoch: l.epoch}, Horizon: rowcast.EventID{Epoch: l.epoch}})
	if err := l.apply(ctx, sink, markers...); err != nil {
		return true, err
	}
	l.connected.Store(true)
	l.log.Info("listening", "channel", l.cfg.Channel, "table", l.cfg.Table.String())
	nc, early, err := hijackListen(ctx, conn)
	if err != nil {
		return true, err
	}
	defer nc.close()
	defer l.closeCatalog()
	var asm assembly
	// Changes decoded but not handed on yet. The notifications already
	// read from the connection join one batch (up to maxBatch) before it
	// goes to the sink: one hand-on, and one write to each client, for a
	// burst instead of one for each of its notifications.
	var batch []rowcast.Change
	last := 1 // the last batch's size: the next one's is made for as many
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := l.apply(ctx, sink, batch...)
		last, batch = len(batch), nil // the sink may keep the slice it was given
		return err
	}
	// handle takes one notification; a non-nil error ends the connection.
	handle := func(pid uint32, channel, payload []byte) error {
		if string(channel) != l.cfg.Channel {
			return nil
		}
		l.trunc.seen(pid)
		payload, complete, why := asm.add(pid, payload)
		if why != "" {
			l.rejected.add(rowcast.RejectedMalformed, "dropped a payload sent in parts on rowcast's channel: its parts did not arrive together and in order (any role that can connect may NOTIFY)",
				"why", why, "sender_pid", pid)
		}
		if why == whyTooLarge {
			// A change may have been lost; clients must not trust their
			// data without being told.
			batch = append(batch, rowcast.Change{Op: rowcast.OpResync, CaptureTime: time.Now(),
				Reason: ReasonChangeTooLarge})
		}
		if !complete {
			return nil
		}
		cs, reason, err := l.decode(ctx, payload, pid)
		if err != nil {
			var ce *catalogError
			if errors.As(err, &ce) || ctx.Err() != nil {
				// The connection failed while reading the catalog:
				// reconnecting resyncs clients, so the change is not
				// silently lost. What came before it goes on.
				if ferr := flush(); ferr != nil {
					return ferr
				}
				return err
			}
			l.rejected.add(reason, "dropped a notification on rowcast's channel: it is not a change of the captured table or a rowcast.broadcast() event (any role that can connect may NOTIFY)",
				"err", err, "sender_pid", pid, "payload", truncate(string(payload[:min(len(payload), 201)]), 200))
			return nil
		}
		if batch == nil {
			batch = make([]rowcast.Change, 0, max(last, len(cs)))
		}
		batch = append(batch, cs...)
		if len(batch) >= maxBatch {
			return flush()
		}
		return nil
	}
	for _, n := range early {
		if err := handle(n.PID, []byte(n.Channel), []byte(n.Payload)); err != nil {
			return true, err
		}
	}
	// The wait for a message is bounded by the connection's read
	// deadline, set only when the loop is about to wait (nothing whole in
	// the buffer). ctx ending sets a read deadline in the past, which ends
	// the wait at once. Quiet for listenerIdle, the listener pings; a ping
	// not answered within pingTimeout ends the connection.
	raw := nc.conn
	stop := context.AfterFunc(ctx, func() { _ = raw.SetReadDeadline(time.Now()) })
	defer stop()
	var pinged time.Time // when the unanswered ping was sent
	for {
		if !nc.ready() {
			// Nothing more in hand: the batch goes on before the wait.
			if err := flush(); err != nil {
				return true, err
			}
			deadline := time.Now().Add(l.idle)
			if !pinged.IsZero() {
				deadline = pinged.Add(pingTimeout)
			}
			if err := raw.SetReadDeadline(deadline); err != nil {
				return true, fmt.Errorf("setting the listener's read deadline: %w", err)
			}
			// Looked at after setting ours: a cancellation's deadline
			// (AfterFunc) comes after it, or the loop ends here.
			if err := ctx.Err(); err != nil {
				return true, err
			}
			if err := nc.wait(); err != nil {
				if ctx.Err() != nil {
					return true, ctx.Err()
				}
				var ne net.Error
				switch {
				case !errors.As(err, &ne) || !ne.Timeout():
					return true, fmt.Errorf("wait for notification: %w", err)
				case !pinged.IsZero():
					return true, fmt.Errorf("PostgreSQL did not answer a ping within %v after %v without a notification (the network may drop the connection)", pingTimeout, l.idle)
				}
				// Quiet for a while: is the server still there? A network
				// that drops everything would otherwise leave the
				// listener waiting for ever, and clients without a word.
				if err := nc.ping(pingTimeout); err != nil {
					return true, fmt.Errorf("pinging PostgreSQL after %v without a notification: %w", l.idle, err)
				}
				pinged = time.Now()
				continue
			}
		}
		typ, body := nc.next()
		switch typ {
		case msgNotification:
			pid, channel, payload, err := parseNotification(body)
			if err != nil {
				return true, fmt.Errorf("the LISTEN connection: %w", err)
			}
			if err := handle(pid, channel, payload); err != nil {
				return true, err
			}
		case msgReadyForQuery:
			pinged = time.Time{} // the ping's answer
		case msgEmptyQuery, msgNotice, msgParameter:
		case msgError:
			// The session is ending (terminated, the server shutting
			// down): what was read before the error still goes on.
			if err := flush(); err != nil {
				return true, err
			}
			return true, fmt.Errorf("the LISTEN connection: %w", serverError(body))
		default:
			return true, fmt.Errorf("the LISTEN connection: unexpected message %q from PostgreSQL", typ)
		}
	}
}

// maxBatch is the most changes the listener hands on at once.
const maxBatch = 512

// maxAssembled bounds a payload put together from parts. A row's JSON
// this large does not belong on a dashboard; past it the change is
// dropped and clients are told to resync, so nothing is lost silently
// and a forger cannot make rowcast hold unbounded memory.
const maxAssembled = 256 << 20

const (
	whyTooLarge   = "payload over 256 MiB"
	whyOutOfOrder = "parts out of order, or mixed with other notifications"
	whyBadPart    = "malformed part"
)

// assembly puts a payload sent in parts back together. A transaction's
// notifications reach the listener together and in order, so the parts
// of one payload arrive one after the other from one backend; anything
// else (a part out of place, a notification in the middle) drops what was
// collected.
type assembly struct {
	active      bool
	pid         uint32
	xid, seq    uint64
	next, parts int
	buf         []byte
}

// part is the trigger's notification for one part of a payload.
type part struct {
	Op    string `json:"op"`
	Xid   uint64 `json:"xid"`
	Seq   uint64 `json:"seq"`
	Part  *int   `json:"part"`
	Parts int    `json:"parts"`
	Data  string `json:"data"`
}

// isPart tells a part from any other payload without decoding it all.
func isPart(payload []byte) bool { return bytes.HasPrefix(payload, []byte(`{"op":"part"`)) }

// add takes a notification's payload. It returns the payload to decode
// (the notification's own, or the last part's assembled one) with
// complete set, or complete false while parts are outstanding. why says
// what was dropped, if anything.
func (a *assembly) add(pid uint32, payload []byte) (out []byte, complete bool, why string) {
	if !isPart(payload) {
		if a.active {
			why = whyOutOfOrder
			a.reset()
		}
		return payload, true, why
	}
	var p part
	if err := json.Unmarshal(payload, &p); err != nil || p.Op != "part" || p.Part == nil ||
		p.Parts < 1 || *p.Part < 0 || *p.Part >= p.Parts || p.Xid == 0 || p.Seq == 0 {
		a.reset()
		return nil, false, whyBadPart
	}
	if *p.Part == 0 {
		if a.active {
			why = whyOutOfOrder
		}
		a.reset()
		a.active, a.pid, a.xid, a.seq, a.parts = true, pid, p.Xid, p.Seq, p.Parts
	} else if !a.active || pid != a.pid || p.Xid != a.xid || p.Seq != a.seq || p.Parts != a.parts || *p.Part != a.next {
		a.reset()
		return nil, false, whyOutOfOrder
	}
	data, err := base64.StdEncoding.DecodeString(p.Data)
	if err != nil {
		a.reset()
		return nil, false, whyBadPart
	}
	if len(a.buf)+len(data) > maxAssembled {
		a.reset()
		return nil, false, whyTooLarge
	}
	a.buf = append(a.buf, data...)
	a.next++
	if a.next < a.parts {
		return nil, false, why
	}
	out = bytes.Clone(a.buf) // a.buf is kept for the next payload
	a.reset()
	if isPart(out) {
		return nil, false, whyBadPart
	}
	return out, true, why
}

func (a *assembly) reset() {
	buf := a.buf[:0]
	if cap(buf) > 1<<20 {
		buf = nil // do not keep a large row's buffer for ever
	}
	*a = assembly{buf: buf}
}

// Resync and truncate reasons. They reach every client, so they are fixed
// texts, the same in both capture modes.
const (
	ReasonListenerReconnected = "capture reconnected; changes made meanwhile were not captured"
	ReasonTableTruncated      = "table truncated"
	ReasonChangeTooLarge      = "a change too large to deliver (over 256 MiB) was skipped"
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
	Seq     uint64          `json:"seq"`
	Key     rowcast.Row     `json:"key"`
	OldKey  rowcast.Row     `json:"oldkey"`
	Old     rowcast.Row     `json:"old"`
	Row     rowcast.Row     `json:"row"`
	Event   string          `json:"event"`
	Payload json.RawMessage `json:"payload"`
}

// decode checks a payload and turns it into changes: one, or two for an
// update that changed the primary key (a delete of the old key, then an
// insert of the row under its new key, so that clients drop the old
// one). On error it returns the reason to count (see
// rowcast.NotifyRejectReasons). A *catalogError is a failure of the
// catalog connection, not a bad payload. payload is decode's: row values
// are slices of it, rewritten in place.
func (l *Listener) decode(ctx context.Context, payload []byte, pid uint32) (cs []rowcast.Change, reason string, err error) {
	var n notification
	if err := decodeNotification(payload, &n, len(l.cfg.Table.Key), len(l.cfg.Table.Columns)); err != nil {
		return nil, rowcast.RejectedMalformed, fmt.Errorf("decode notification: %w", err)
	}
	t := l.cfg.Table
	// The trigger's JSON comes from the writer's session (its time zone):
	// brought to the form logical capture writes, so that stats keys,
	// filters and clients see one text per value.
	for _, r := range []rowcast.Row{n.Key, n.OldKey, n.Old, n.Row} {
		t.canonicalRow(r)
	}
	c := rowcast.Change{Xid: n.Xid, CaptureTime: time.Now(), Key: n.Key, Old: n.Old, Row: n.Row}
	switch n.Op {
	case "insert", "update", "delete", "truncate":
		if n.Xid == 0 {
			return nil, rowcast.RejectedMalformed, fmt.Errorf("%s without a transaction id", n.Op)
		}
		// The trigger writes the table as schema.name; anything else is
		// another table (or another schema's table of the same name).
		if n.Table != t.String() {
			return nil, rowcast.RejectedOtherTable, fmt.Errorf("change of table %q, not the captured %s", n.Table, t)
		}
		c.Schema, c.Table = t.Schema, t.Name
	case "message":
		if err := rowcast.CheckEventName(n.Event); err != nil {
			return nil, rowcast.RejectedBadEventName, err
		}
		if n.Key != nil || n.Row != nil || n.Old != nil || n.OldKey != nil || n.Table != "" {
			return nil, rowcast.RejectedMalformed, errors.New("message with row fields")
		}
		c.Op, c.Event, c.Payload = rowcast.OpMessage, n.Event, n.Payload
		return []rowcast.Change{l.number(c)}, "", nil
	default:
		return nil, rowcast.RejectedMalformed, fmt.Errorf("unknown op %q", n.Op)
	}
	switch n.Op {
	case "truncate":
		cat, err := l.catalog(ctx)
		if err != nil {
			return nil, "", err
		}
		ok, err := l.trunc.verify(ctx, cat, truncateNote{xid: n.Xid, seq: n.Seq, pid: pid})
		if err != nil {
			if cat.IsClosed() || ctx.Err() != nil {
				return nil, "", &catalogError{err}
			}
			// Missing a real TRUNCATE would leave clients with rows that
			// are gone; a resync too many is the lesser harm.
			l.log.Warn("could not check a truncate notification against the catalog; handing it on", "err", err)
		} else if !ok {
			return nil, rowcast.RejectedUnverifiedTruncate, errors.New("truncate notification, but the table was not truncated since the last one")
		}
		c.Op, c.Reason = rowcast.OpTruncate, ReasonTableTruncated
		c.Key, c.Old, c.Row = nil, nil, nil
		return []rowcast.Change{l.number(c)}, "", nil
	case "insert", "update":
		c.Op = rowcast.Op(n.Op)
		if c.Row == nil {
			return nil, rowcast.RejectedMalformed, fmt.Errorf("%s without the row", n.Op)
		}
	case "delete":
		c.Op = rowcast.OpDelete
		c.Row = nil
	}
	if !sameColumns(n.Key, t.Key) {
		return nil, rowcast.RejectedMalformed, fmt.Errorf("key %s is not the primary key (%s) of %s", truncate(string(mustJSON(n.Key)), 100), strings.Join(t.Key, ", "), t)
	}
	if n.OldKey != nil {
		if c.Op != rowcast.OpUpdate || !sameColumns(n.OldKey, t.Key) {
			return nil, rowcast.RejectedMalformed, fmt.Errorf("old key %s is not the primary key (%s) of %s, or not on an update", truncate(string(mustJSON(n.OldKey)), 100), strings.Join(t.Key, ", "), t)
		}
		del := c
		del.Op, del.Key, del.Row = rowcast.OpDelete, n.OldKey, nil
		del.Old = append(append(rowcast.Row{}, n.OldKey...), withoutColumns(n.Old, t.Key)...)
		ins := c
		ins.Op, ins.Old = rowcast.OpInsert, nil
		return []rowcast.Change{l.number(del), l.number(ins)}, "", nil
	}
	return []rowcast.Change{l.number(c)}, "", nil
}

// number gives a change the next ID of the listener's epoch.
func (l *Listener) number(c rowcast.Change) rowcast.Change {
	l.seq++
	c.ID = rowcast.EventID{Epoch: l.epoch, Pos: l.seq}
	return c
}

// withoutColumns returns r without the named columns.
func withoutColumns(r rowcast.Row, names []string) rowcast.Row {
	out := make(rowcast.Row, 0, len(r))
	for _, c := range r {
		skip := false
		for _, n := range names {
			skip = skip || c.Name == n
		}
		if !skip {
			out = append(out, c)
		}
	}
	return out
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
// whose notifications arrive after both committed). A transaction that
// truncates twice sends two notifications (numbered, so PostgreSQL does
// not fold them) that the catalog confirms only once: the later one is
// accepted when it comes from the same backend and transaction as the
// last accepted truncate, later in that transaction, with no other
// backend's notification in between (a transaction's notifications are
// delivered together). A forger gets at most one resync out of each real
// change to the table's pg_class row (TRUNCATE, VACUUM FULL, ALTER
// TABLE), besides what the truncating session itself could cause by
// truncating again. Partitioned tables have no storage of their own:
// their truncates are accepted unchecked.
type truncateCheck struct {
	query    string
	filenode uint64
	lastXid  uint64
	// last is the last accepted truncate; lastPID the sender of the last
	// notification seen, which ends its transaction's run when it changes.
	last    truncateNote
	lastPID uint32
}

// truncateNote is what a truncate notification claims and who sent it.
type truncateNote struct {
	xid, seq uint64
	pid      uint32
}

func (tc *truncateCheck) read(ctx context.Context, conn *pgx.Conn) (filenode, xmin uint64, partitioned bool, err error) {
	// Bounded: a catalog that does not answer must not hold capture up.
	// At connect the query runs on the LISTEN connection, before the
	// listener takes it over; later on the catalog connection.
	if err := conn.PgConn().Conn().SetReadDeadline(time.Now().Add(pingTimeout)); err != nil {
		return 0, 0, false, fmt.Errorf("setting the read deadline for the catalog query: %w", err)
	}
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

// seen records the sender of every notification on the channel, so that
// a run of one transaction's notifications is known to have ended.
func (tc *truncateCheck) seen(pid uint32) {
	if pid != tc.lastPID {
		tc.last = truncateNote{}
	}
	tc.lastPID = pid
}

// verify reports whether a truncate notification (its xid a 64-bit
// txid_current()) is confirmed by the catalog or by the run of its
// transaction, and remembers it when it is.
func (tc *truncateCheck) verify(ctx context.Context, conn *pgx.Conn, n truncateNote) (bool, error) {
	tc.seen(n.pid)
	if tc.last.xid != 0 && n.xid == tc.last.xid && n.pid == tc.last.pid && n.seq > tc.last.seq {
		tc.last = n
		return true, nil
	}
	filenode, xmin, partitioned, err := tc.read(ctx, conn)
	if err != nil {
		return false, err
	}
	ok := partitioned || filenode != tc.filenode || (uint64(uint32(n.xid)) == xmin && n.xid != tc.lastXid)
	if ok {
		tc.filenode, tc.lastXid, tc.last = filenode, n.xid, n
	}
	return ok, nil
}
