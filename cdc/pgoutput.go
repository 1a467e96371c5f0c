package cdc

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"rowcast"
)

// relKind is what a relation is to rowcast.
type relKind int

const (
	// relOther: any table but the captured one and the outbox. Its changes
	// are dropped: a publication may hold tables rowcast must not send.
	relOther relKind = iota
	// relCaptured: the configured table.
	relCaptured
	// relOutbox: rowcast.outbox, whose inserts are rowcast.broadcast()
	// events.
	relOutbox
)

// relation is a cached pgoutput Relation message plus the primary key.
type relation struct {
	id     uint32
	schema string
	table  string
	kind   relKind
	cols   []relColumn
	// identity holds the replica identity columns (flagged by pgoutput);
	// under REPLICA IDENTITY FULL that is every column.
	identity []int
	// key holds the primary key columns, looked up on first use.
	key      []int
	keyKnown bool
	// warnedToast limits the missing-old-value warning to one per relation.
	warnedToast bool
	// replIdent is the relation's REPLICA IDENTITY as of this message
	// ('f' full, 'd' default, 'i' index, 'n' nothing); warnedIdent
	// limits its error to one per RELATION message.
	replIdent   uint8
	warnedIdent bool
}

type relColumn struct {
	name string
	oid  uint32
}

// newRelation caches a Relation message. captured is the configured
// table as {schema, name}; a relation is told apart by its name, which
// the message carries as of the change's point in the WAL.
func newRelation(m *pglogrepl.RelationMessage, captured [2]string) *relation {
	r := &relation{id: m.RelationID, schema: m.Namespace, table: m.RelationName, replIdent: m.ReplicaIdentity}
	switch [2]string{m.Namespace, m.RelationName} {
	case captured:
		r.kind = relCaptured
	case [2]string{outboxSchema, outboxTable}:
		r.kind = relOutbox
	}
	for i, c := range m.Columns {
		r.cols = append(r.cols, relColumn{name: c.Name, oid: c.DataType})
		if c.Flags&1 != 0 {
			r.identity = append(r.identity, i)
		}
	}
	return r
}

// stream decodes one START_REPLICATION session. It is used by the Run
// goroutine only, which owns the replication connection.
type stream struct {
	s        *Slot
	repl     *pgconn.PgConn
	reg      querier
	sink     rowcast.Sink
	retainer rowcast.Retainer
	dec      *valueDecoder

	relations map[uint32]*relation
	changes   changeDecoder

	inTx  bool
	begin pglogrepl.BeginMessage
	index uint32
	batch []rowcast.Change
	// ends is decodeTuple's scratch: where each value ends in its buffer.
	ends []int
	// committed is the end LSN of the last transaction whose changes
	// are in batch, not handed on yet (0: none).
	committed pglogrepl.LSN
	// sentAt is when the WAL sender sent the message being handled;
	// behind, whether the last COMMIT was sent backlogLag or more after
	// the transaction committed. holdUntil is when a batch held for the
	// transactions behind it goes on (zero: none held); waiting, that
	// everything buffered was read and the next receive waits for more
	// until then.
	sentAt    time.Time
	behind    bool
	holdUntil time.Time
	waiting   bool

	// serverEnd is the last keepalive's ServerWALEnd: everything before it
	// has been sent to us.
	serverEnd  pglogrepl.LSN
	nextStatus time.Time
	// nextSyncCheck is when to ask again whether the WAL sender has
	// become a synchronous standby (see syncrep.go).
	nextSyncCheck time.Time
	// lastStatus is when the last standby status update was sent;
	// lastHeard when the last message arrived (see liveness.go).
	lastStatus, lastHeard time.Time
}

// ackEvery is the least time between two status updates sent because the
// flush position moved. The slot's position is where PostgreSQL starts
// again after rowcast restarts, and what it keeps WAL for: reported as
// soon as it moves, both stay within the replay window. Reported only
// every StandbyTimeout, a connection that fails more often than that
// (a flapping network) would never move it, and a restarted rowcast
// would get the whole history since again, TRUNCATEs included.
const ackEvery = time.Second

// While the stream is behind (a backlog after a restart, or a WAL sender
// that fell back), a batch of committed transactions waits up to
// backlogHold for the ones behind it before it goes on, or until it is
// full. The WAL sender sends each message on its own, and a drain that
// keeps up with it would otherwise hand every transaction on alone: a
// write to every client per change, which in a drain of single-row
// transactions cost more than everything else rowcast does per change.
// Changes that are already backlogLag late wait at most backlogHold more;
// a stream that keeps up is never held.
//
// Behind is judged on the server's clock alone: the COMMIT message's
// commit time against the time the WAL sender sent it.
//
// While a batch is held, the loop pauses for backlogNap each time it has
// read everything buffered (see nap), rather than wake for each message as
// the WAL sender sends it: the next read then takes what gathered
// meanwhile. In a drain of single-row transactions this took rowcast from
// 22-28 to 13-15 µs of CPU per change and its WAL sender from 21-30 to
// 18.5-19.6, at the same drain rate (BENCHMARKS.md, "Per change (capture)").
// The pause is short beside what the socket holds: the WAL sender's unix
// socket was full at about 30 KB, by an estimate some 60 such
// transactions, 1.3 ms of a drain at 45,000 per second.
const (
	backlogLag  = 20 * time.Millisecond
	backlogHold = 2 * time.Millisecond
	backlogNap  = 100 * time.Microsecond
)

// querier is what the stream reads from the regular connection (a row's
// key or unchanged TOAST values when the WAL lacks them, and whether it is
// a synchronous standby).
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func newStream(s *Slot, repl *pgconn.PgConn, reg querier, sink rowcast.Sink) *stream {
	st := &stream{
		s:         s,
		repl:      repl,
		reg:       reg,
		sink:      sink,
		dec:       newValueDecoder(),
		relations: make(map[uint32]*relation),
	}
	st.retainer, _ = sink.(rowcast.Retainer)
	return st
}

// run follows the structure of pglogrepl's demo loop: the receive deadline
// is the next status update, and a keepalive asking for a reply gets one at
// once.
//
// The deadline is the connection's read deadline, set when it moves (once
// per status update or sync check), not a context per message: a context
// with a deadline costs a timer, and pgconn a watcher, for every message
// of the stream. ctx ending sets a read deadline in the past, which ends
// the wait at once.
func (st *stream) run(ctx context.Context) error {
	st.nextStatus = time.Now().Add(st.s.cfg.StandbyTimeout)
	st.nextSyncCheck = time.Now().Add(syncCheckEvery)
	st.lastHeard = time.Now()
	silence := streamSilence(st.s.cfg.StandbyTimeout)
	conn := st.repl.Conn()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()
	var deadline time.Time // the read deadline set last
	for {
		// One clock reading per message for the checks below: the loop
		// runs for every message of the stream.
		now := time.Now()
		if now.Sub(st.lastHeard) > silence {
			return fmt.Errorf("cdc: nothing from PostgreSQL for %v, though every status update asks for a reply (the network may drop the connection)", silence)
		}
		if !now.Before(st.nextSyncCheck) {
			cctx, cancel := context.WithTimeout(ctx, pingTimeout)
			err := checkNotSynchronous(cctx, st.reg, st.repl.PID())
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					st.finish()
					return nil
				}
				return err
			}
			st.nextSyncCheck = time.Now().Add(syncCheckEvery)
		}
		if periodic := !now.Before(st.nextStatus); periodic || st.ackDue(now) {
			// A periodic update asks for a reply: the keepalive that
			// answers shows the connection is alive.
			if err := st.sendStatus(periodic || st.idle()); err != nil {
				return err
			}
		}
		// With committed transactions not handed on yet, the receive only
		// takes what is already buffered (a deadline in the past): the
		// next transaction joins the batch if it is there, else the batch
		// goes to the sink before the loop waits.
		poll := st.committed != 0
		next := minTime(st.nextStatus, st.nextSyncCheck)
		switch {
		case poll && st.waiting:
			next = minTime(next, st.holdUntil)
		case poll:
			next = pollDeadline
		}
		if !next.Equal(deadline) {
			if err := conn.SetReadDeadline(next); err != nil {
				return fmt.Errorf("cdc: setting the replication connection's read deadline: %w", err)
			}
			deadline = next
			// Looked at after setting ours: a cancellation's deadline
			// (AfterFunc) comes after it, or the loop ends here.
			if ctx.Err() != nil {
				st.finish()
				return nil
			}
		}
		raw, err := st.repl.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				st.finish()
				return nil
			}
			if pgconn.Timeout(err) {
				if poll && !st.hold() {
					// Nothing more buffered, and no hold or its end:
					// hand on what was committed.
					if err := st.apply(ctx); err != nil {
						return err
					}
					continue
				}
				if deadline.Equal(pollDeadline) && st.waiting {
					// A held batch, and the poll found nothing buffered:
					// let the WAL sender's next messages gather in the
					// socket, then take them in one read (the next
					// receive waits until the hold ends).
					nap(backlogNap)
				}
				// Past the deadline: the next round sets a new one.
				deadline = time.Time{}
				continue
			}
			return fmt.Errorf("cdc: receiving from the replication connection: %w", err)
		}
		st.lastHeard = time.Now()
		st.waiting = false
		switch msg := raw.(type) {
		case *pgproto3.CopyData:
			if err := st.copyData(ctx, msg.Data); err != nil {
				if ctx.Err() != nil {
					st.finish()
					return nil
				}
				return err
			}
		case *pgproto3.ErrorResponse:
			return classify(fmt.Errorf("cdc: replication stream: %w", pgconn.ErrorResponseToPgError(msg)))
		case *pgproto3.CopyDone:
			return errors.New("cdc: PostgreSQL ended the replication stream (server shutting down?)")
		}
	}
}

// hold is called when everything buffered has been read and committed
// transactions wait to be handed on. While the stream is behind and the
// batch's hold lasts, it reports true: the next receive waits for the next
// message until the hold ends. False means hand the batch on now.
//
// While the hold lasts, the loop naps between reads (backlogNap). An
// earlier trial slept on a 500 µs ticker instead: the runtime's timers
// fire no sooner than about 1.1 ms, the WAL sender sat idle meanwhile,
// and the drain slowed (BENCHMARKS.md, "Per change (capture)").
func (st *stream) hold() bool {
	if !st.behind || len(st.batch) == 0 {
		// Nothing to wait for: a batch that filled up went on already,
		// and the commit's position goes on at once.
		return false
	}
	now := time.Now()
	if st.holdUntil.IsZero() {
		st.holdUntil = now.Add(st.s.cfg.hold)
	}
	st.waiting = now.Before(st.holdUntil)
	return st.waiting
}

// pollDeadline is a read deadline in the past: a receive returns what is
// buffered, or times out at once.
var pollDeadline = time.Unix(1, 0)

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func (st *stream) copyData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("cdc: %w", err)
		}
		if pkm.ServerWALEnd > st.serverEnd {
			st.serverEnd = pkm.ServerWALEnd
		}
		st.s.walSeen = max(st.s.walSeen, pkm.ServerWALEnd)
		if pkm.ReplyRequested {
			if st.idle() && st.ackTarget() < st.serverEnd {
				return st.sendCaughtUp()
			}
			return st.sendStatus(false)
		}
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("cdc: %w", err)
		}
		st.s.raiseReceived(xld.WALStart + pglogrepl.LSN(len(xld.WALData)))
		st.sentAt = xld.ServerTime
		return st.handle(ctx, xld.WALData)
	}
	return nil
}

// idle reports whether everything received has been handed on, so that
// the flush position may follow the server's WAL end.
func (st *stream) idle() bool {
	return !st.inTx && len(st.batch) == 0 && st.committed == 0
}

// ackTarget is the flush position PostgreSQL may forget WAL up to.
func (st *stream) ackTarget() pglogrepl.LSN {
	target := st.s.handedOn
	if st.retainer != nil {
		if oldest, ok := st.retainer.Oldest(); ok && oldest.Epoch == st.s.epoch {
			// Acknowledging exactly the oldest held commit LSN makes
			// PostgreSQL resend that transaction after a crash, which
			// rebuilds the sink's replay window.
			return min(target, pglogrepl.LSN(oldest.Pos))
		}
	}
	if st.idle() && st.serverEnd > target {
		// Writes to tables outside the publication advance the WAL without
		// sending us anything; without this the slot would pin that WAL.
		target = st.serverEnd
	}
	return target
}

// ackDue reports whether the flush position has moved since the last
// status update, which is at least ackEvery old.
func (st *stream) ackDue(now time.Time) bool {
	return now.Sub(st.lastStatus) >= ackEvery && st.ackTarget() > pglogrepl.LSN(st.s.flushedLSN.Load())
}

func (st *stream) sendStatus(requestReply bool) error {
	flush := st.s.raiseFlushed(st.ackTarget())
	write := max(pglogrepl.LSN(st.s.receivedLSN.Load()), flush)
	if flush == 0 {
		// pglogrepl would report the write position as flushed.
		write = 0
	}
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), st.repl, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: write,
		WALFlushPosition: flush,
		WALApplyPosition: flush,
		ReplyRequested:   requestReply,
	})
	st.lastStatus = time.Now()
	st.nextStatus = st.lastStatus.Add(st.s.cfg.StandbyTimeout)
	if err != nil {
		return fmt.Errorf("cdc: sending standby status: %w", err)
	}
	return nil
}

// sendCaughtUp answers a server that asks for a reply while nothing
// received is unhanded but the replay window still holds transactions: it
// reports everything up to the server's WAL end as written and no flush
// position (InvalidXLogRecPtr), which leaves the slot where the window
// needs it. A walsender shutting down waits until the client's flush
// position, or its write position when the flush is invalid, reaches what
// it sent; answering with the window's position would hold up
// PostgreSQL's shutdown until rowcast disconnects. pglogrepl's helper would
// copy the write position into the flush position, so the message is
// encoded here.
func (st *stream) sendCaughtUp() error {
	// Exactly the server's sent position: the walsender compares for
	// equality, and WALStart+len of logical messages can overshoot it.
	write := st.serverEnd
	data := make([]byte, 0, 34)
	data = append(data, pglogrepl.StandbyStatusUpdateByteID)
	data = binary.BigEndian.AppendUint64(data, uint64(write))
	data = binary.BigEndian.AppendUint64(data, 0) // flush: invalid
	data = binary.BigEndian.AppendUint64(data, 0) // apply: invalid
	data = binary.BigEndian.AppendUint64(data, uint64(time.Since(pgEpoch).Microseconds()))
	data = append(data, 0)
	buf, err := (&pgproto3.CopyData{Data: data}).Encode(nil)
	if err != nil {
		return fmt.Errorf("cdc: encoding standby status: %w", err)
	}
	if err := st.repl.Frontend().SendUnbufferedEncodedCopyData(buf); err != nil {
		return fmt.Errorf("cdc: sending standby status: %w", err)
	}
	return nil
}

// pgEpoch is PostgreSQL's timestamp origin.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// finish reports the final flush position and ends the copy stream
// cleanly, so that the walsender has processed the position before the
// connection closes.
func (st *stream) finish() {
	if err := st.sendStatus(false); err != nil {
		return
	}
	st.repl.Frontend().Send(&pgproto3.CopyDone{})
	if err := st.repl.Frontend().Flush(); err != nil {
		return
	}
	// The read deadline may be in the past (run's ctx ended).
	if err := st.repl.Conn().SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return
	}
	for {
		msg, err := st.repl.ReceiveMessage(context.Background())
		if err != nil {
			return
		}
		switch msg.(type) {
		case *pgproto3.ReadyForQuery, *pgproto3.ErrorResponse:
			return
		}
	}
}

func (st *stream) handle(ctx context.Context, walData []byte) error {
	msg, err := st.changes.parse(walData)
	if err != nil {
		return fmt.Errorf("cdc: parsing pgoutput message: %w", err)
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		// Sent before the first change of a relation in a session and again
		// after its schema changed; the new entry replaces the old one.
		st.relations[m.RelationID] = newRelation(m, st.s.table)
	case *pglogrepl.BeginMessage:
		if st.inTx {
			return errors.New("cdc: pgoutput protocol error: BEGIN inside a transaction")
		}
		st.inTx, st.begin, st.index = true, *m, 0
	case *pglogrepl.CommitMessage:
		if !st.inTx {
			return errors.New("cdc: pgoutput protocol error: COMMIT outside a transaction")
		}
		st.inTx = false
		// Handed on with the transactions right behind it (run), in one
		// Sink.Apply, or now when the batch is full.
		st.committed = m.TransactionEndLSN
		st.behind = st.sentAt.Sub(m.CommitTime) >= backlogLag
		if len(st.batch) >= st.s.cfg.BatchSize {
			return st.apply(ctx)
		}
	case *pglogrepl.InsertMessage:
		return st.insert(ctx, m)
	case *pglogrepl.UpdateMessage:
		return st.update(ctx, m)
	case *pglogrepl.DeleteMessage:
		return st.delete(ctx, m)
	case *pglogrepl.TruncateMessage:
		for _, id := range m.RelationIDs {
			rel, err := st.relation(id)
			if err != nil {
				return err
			}
			switch rel.kind {
			case relOther:
				st.ignore(rowcast.IgnoredOtherTable, rel)
				continue
			case relOutbox:
				st.ignore(rowcast.IgnoredBadMessage, rel)
				continue
			}
			if err := st.add(ctx, rowcast.Change{Op: rowcast.OpTruncate, Schema: rel.schema, Table: rel.table, Reason: ReasonTableTruncated}); err != nil {
				return err
			}
		}
	case *pglogrepl.LogicalDecodingMessage:
		return st.message(ctx, m)
	}
	return nil
}

// parseOther is pglogrepl.Parse for the messages changeDecoder does not
// decode (RELATION, TRUNCATE, logical messages, ORIGIN, TYPE). pglogrepl
// indexes into a message without checking its length first (an empty
// message panics), and allocates what a TRUNCATE's relation count claims
// before reading it (a few bytes claiming four billion would allocate
// gigabytes, and running out of memory is a crash no recover catches): a
// malformed message is an error, never a crash. Change messages never
// come here; their lengths are checked by changeDecoder.
func parseOther(b []byte) (msg pglogrepl.Message, err error) {
	if len(b) == 0 {
		return nil, errors.New("empty message")
	}
	// T, relation count (4), options (1), relation ids (4 each).
	if b[0] == 'T' && (len(b) < 6 || uint64(binary.BigEndian.Uint32(b[1:]))*4 > uint64(len(b)-6)) {
		return nil, fmt.Errorf("malformed %q message: counts or lengths beyond its %d bytes", b[0], len(b))
	}
	defer func() {
		if r := recover(); r != nil {
			msg, err = nil, fmt.Errorf("malformed %q message: %v", b[0], r)
		}
	}()
	return pglogrepl.Parse(b)
}

// ignore counts a change of rel that is not handed on.
func (st *stream) ignore(reason string, rel *relation) {
	st.s.ignored.add(reason, "dropped a change the slot sent: it is not the captured table's or a rowcast.broadcast() event",
		"relation", rel.schema+"."+rel.table)
}

func (st *stream) relation(id uint32) (*relation, error) {
	rel, ok := st.relations[id]
	if !ok {
		return nil, fmt.Errorf("cdc: pgoutput protocol error: change for relation %d before its RELATION message", id)
	}
	return rel, nil
}

// add numbers a change within its transaction and hands a full batch on.
func (st *stream) add(ctx context.Context, c rowcast.Change) error {
	if !st.inTx {
		return fmt.Errorf("cdc: pgoutput protocol error: %s outside a transaction", c.Op)
	}
	c.Xid = uint64(st.begin.Xid)
	c.CommitTime = st.begin.CommitTime
	c.CaptureTime = time.Now()
	c.ID = rowcast.EventID{Epoch: st.s.epoch, Pos: uint64(st.begin.FinalLSN), Index: st.index}
	st.index++
	st.batch = append(st.batch, c)
	if len(st.batch) >= st.s.cfg.BatchSize {
		return st.apply(ctx)
	}
	return nil
}

// apply hands the batch to the sink: the changes of the transactions
// committed since the last call (st.committed is the last one's end LSN),
// and those of the open transaction when the batch is full.
func (st *stream) apply(ctx context.Context) error {
	if len(st.batch) > 0 {
		if err := st.sink.Apply(ctx, st.batch); err != nil {
			return fmt.Errorf("cdc: sink did not accept %d changes (they will be resent after reconnecting): %w", len(st.batch), err)
		}
		// A new slice each time: the sink may keep the one it was given.
		st.batch = nil
	}
	commitEnd := st.committed
	st.committed = 0
	st.holdUntil, st.waiting = time.Time{}, false
	if commitEnd > st.s.handedOn {
		st.s.handedOn = commitEnd
	}
	st.s.walSeen = max(st.s.walSeen, commitEnd)
	return nil
}

func (st *stream) insert(ctx context.Context, m *pglogrepl.InsertMessage) error {
	rel, err := st.relation(m.RelationID)
	if err != nil {
		return err
	}
	switch rel.kind {
	case relOther:
		// Not even decoded: its values are none of rowcast's business.
		st.ignore(rowcast.IgnoredOtherTable, rel)
		return nil
	case relOutbox:
		return st.outboxEvent(ctx, rel, m.Tuple)
	}
	vals, err := st.decodeTuple(rel, m.Tuple)
	if err != nil {
		return err
	}
	key, err := st.keyOf(ctx, rel, vals)
	if err != nil {
		return err
	}
	return st.add(ctx, rowcast.Change{Op: rowcast.OpInsert, Schema: rel.schema, Table: rel.table,
		Key: key, Row: rel.row(vals, nil)})
}

func (st *stream) update(ctx context.Context, m *pglogrepl.UpdateMessage) error {
	rel, err := st.relation(m.RelationID)
	if err != nil {
		return err
	}
	switch rel.kind {
	case relOther:
		st.ignore(rowcast.IgnoredOtherTable, rel)
		return nil
	case relOutbox:
		// rowcast.broadcast() never updates the outbox.
		st.ignore(rowcast.IgnoredBadMessage, rel)
		return nil
	}
	if m.OldTupleType != pglogrepl.UpdateMessageTupleTypeOld {
		st.withoutOldRow(rel)
	}
	newVals, err := st.decodeTuple(rel, m.NewTuple)
	if err != nil {
		return err
	}
	var oldVals []json.RawMessage
	if m.OldTuple != nil {
		if oldVals, err = st.decodeTuple(rel, m.OldTuple); err != nil {
			return err
		}
	}
	// Unchanged TOAST values are not in the new tuple. Under REPLICA
	// IDENTITY FULL the old tuple has them in full.
	var missing []int
	for i, v := range newVals {
		if v != nil {
			continue
		}
		if m.OldTupleType == pglogrepl.UpdateMessageTupleTypeOld && oldVals[i] != nil {
			newVals[i] = oldVals[i]
			continue
		}
		missing = append(missing, i)
	}
	if len(missing) > 0 {
		if err := st.fetchUnchanged(ctx, rel, m.NewTuple, newVals, missing); err != nil {
			return err
		}
	}
	key, err := st.keyOf(ctx, rel, newVals)
	if err != nil {
		return err
	}
	old := rel.oldRow(m.OldTupleType, oldVals)
	if oldVals != nil {
		oldKey, err := st.keyOf(ctx, rel, oldVals)
		if err != nil {
			return err
		}
		if !sameValues(oldKey, key) {
			// The primary key changed: to a client the row under its old
			// key is gone and one under the new key appeared. Two changes
			// with consecutive IDs say so; an update of the new key alone
			// would leave the old one on every dashboard.
			if err := st.add(ctx, rowcast.Change{Op: rowcast.OpDelete, Schema: rel.schema, Table: rel.table,
				Key: oldKey, Old: old}); err != nil {
				return err
			}
			return st.add(ctx, rowcast.Change{Op: rowcast.OpInsert, Schema: rel.schema, Table: rel.table,
				Key: key, Row: rel.row(newVals, nil)})
		}
	}
	return st.add(ctx, rowcast.Change{Op: rowcast.OpUpdate, Schema: rel.schema, Table: rel.table,
		Key: key, Row: rel.row(newVals, nil), Old: old})
}

// sameValues reports whether two rows of the same columns hold the same
// values.
func sameValues(a, b rowcast.Row) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || !bytes.Equal(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

func (st *stream) delete(ctx context.Context, m *pglogrepl.DeleteMessage) error {
	rel, err := st.relation(m.RelationID)
	if err != nil {
		return err
	}
	switch rel.kind {
	case relOther:
		st.ignore(rowcast.IgnoredOtherTable, rel)
		return nil
	case relOutbox:
		// rowcast.broadcast() deletes every row it inserts, in the same
		// transaction: the insert was the event.
		return nil
	}
	if m.OldTupleType != pglogrepl.UpdateMessageTupleTypeOld {
		st.withoutOldRow(rel)
	}
	oldVals, err := st.decodeTuple(rel, m.OldTuple)
	if err != nil {
		return err
	}
	key, err := st.keyOf(ctx, rel, oldVals)
	if err != nil {
		return err
	}
	return st.add(ctx, rowcast.Change{Op: rowcast.OpDelete, Schema: rel.schema, Table: rel.table,
		Key: key, Old: rel.oldRow(m.OldTupleType, oldVals)})
}

// withoutOldRow counts an update or delete of the captured table that
// came without the whole old row, and says once per RELATION message why
// and what to do.
func (st *stream) withoutOldRow(rel *relation) {
	st.s.withoutOldRow.Add(1)
	if rel.warnedIdent {
		return
	}
	rel.warnedIdent = true
	st.s.log.Error("updates and deletes arrive without their old row: the table is not REPLICA IDENTITY FULL (someone changed it after setup); stats are recounted at most every 5s and clients get what is safe rather than what is exact (a row that may have left a user's visibility is sent as a delete of its key); run `rowcast setup` to set it back",
		"table", rel.schema+"."+rel.table, "replica_identity", string(rune(rel.replIdent)))
}

// message handles logical decoding messages. Any role may call
// pg_logical_emit_message, so none is handed on: those with rowcast's
// prefix (written by an older rowcast.broadcast(), or forged) are counted;
// other applications' are none of rowcast's business.
func (st *stream) message(_ context.Context, m *pglogrepl.LogicalDecodingMessage) error {
	if m.Prefix == MessagePrefix {
		st.s.ignored.add(rowcast.IgnoredLogicalMessage,
			"dropped a logical decoding message with rowcast's prefix: any role can send one, so events from SQL come only through rowcast.broadcast() and rowcast.outbox",
			"lsn", m.LSN.String())
	}
	return nil
}

// outboxEvent turns an insert into rowcast.outbox, which only
// rowcast.broadcast() can write, into an OpMessage change. A row it cannot
// have written is dropped and counted.
func (st *stream) outboxEvent(ctx context.Context, rel *relation, t *pglogrepl.TupleData) error {
	if t == nil || len(t.Columns) != len(rel.cols) {
		st.ignore(rowcast.IgnoredBadMessage, rel)
		return nil
	}
	var (
		event   string
		payload json.RawMessage
		found   int
	)
	for i, c := range t.Columns {
		if c.DataType != pglogrepl.TupleDataTypeText {
			continue
		}
		switch rel.cols[i].name {
		case "event":
			event = string(c.Data)
			found++
		case "payload":
			payload = copyBytes(c.Data)
			found++
		}
	}
	if found != 2 || !json.Valid(payload) {
		st.ignore(rowcast.IgnoredBadMessage, rel)
		return nil
	}
	// The SQL function applies the same rule; checked again because the
	// outbox's owner could insert by hand.
	if err := rowcast.CheckEventName(event); err != nil {
		st.s.ignored.add(rowcast.IgnoredBadEventName, "dropped a rowcast.broadcast() event with a name rowcast does not allow", "err", err)
		return nil
	}
	return st.add(ctx, rowcast.Change{Op: rowcast.OpMessage, Event: event, Payload: payload})
}

// decodeTuple returns one JSON value per relation column; nil marks an
// unchanged TOAST value, which the tuple does not carry.
func (st *stream) decodeTuple(rel *relation, t *pglogrepl.TupleData) ([]json.RawMessage, error) {
	if t == nil {
		return nil, fmt.Errorf("cdc: pgoutput protocol error: missing tuple for %s.%s", rel.schema, rel.table)
	}
	if len(t.Columns) != len(rel.cols) {
		return nil, fmt.Errorf("cdc: pgoutput protocol error: %s.%s tuple has %d columns, relation has %d",
			rel.schema, rel.table, len(t.Columns), len(rel.cols))
	}
	// Every value goes into one buffer, sliced once it is complete (an
	// append that grows the buffer would move what was sliced before):
	// one allocation per tuple instead of one per column. The values
	// outlive the protocol reader's buffer, so they are copies either way.
	size := 0
	for _, c := range t.Columns {
		size += len(c.Data) + 8 // quotes and a few escapes
	}
	buf := make([]byte, 0, size)
	ends := st.ends[:0]
	for i, c := range t.Columns {
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull, pglogrepl.TupleDataTypeToast:
		case pglogrepl.TupleDataTypeText:
			var err error
			if buf, err = st.dec.appendDecode(buf, rel.cols[i].oid, c.Data); err != nil {
				return nil, fmt.Errorf("cdc: decoding %s.%s.%s: %w", rel.schema, rel.table, rel.cols[i].name, err)
			}
		default:
			return nil, fmt.Errorf("cdc: pgoutput protocol error: column format %q in %s.%s", c.DataType, rel.schema, rel.table)
		}
		ends = append(ends, len(buf))
	}
	st.ends = ends
	vals := make([]json.RawMessage, len(t.Columns))
	start := 0
	for i, c := range t.Columns {
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull:
			vals[i] = json.RawMessage("null")
		case pglogrepl.TupleDataTypeText:
			vals[i] = buf[start:ends[i]:ends[i]]
		}
		// TOAST: nil marks a value the tuple does not carry.
		start = ends[i]
	}
	return vals, nil
}

// row builds a Row of the columns at idx (all when idx is nil), leaving out
// values the tuple did not carry.
func (rel *relation) row(vals []json.RawMessage, idx []int) rowcast.Row {
	if idx == nil {
		out := make(rowcast.Row, 0, len(vals))
		for i, v := range vals {
			if v != nil {
				out = append(out, rowcast.Column{Name: rel.cols[i].name, Value: v})
			}
		}
		return out
	}
	out := make(rowcast.Row, 0, len(idx))
	for _, i := range idx {
		if vals[i] != nil {
			out = append(out, rowcast.Column{Name: rel.cols[i].name, Value: vals[i]})
		}
	}
	return out
}

// oldRow is the old tuple: the whole row under REPLICA IDENTITY FULL, else
// the replica identity columns (the rest of a key tuple is null filler).
func (rel *relation) oldRow(kind uint8, vals []json.RawMessage) rowcast.Row {
	switch kind {
	case pglogrepl.UpdateMessageTupleTypeOld:
		return rel.row(vals, nil)
	case pglogrepl.UpdateMessageTupleTypeKey:
		return rel.row(vals, rel.identity)
	}
	return nil
}

// keyOf returns the primary key columns of a row. Relation messages flag
// the replica identity, which under REPLICA IDENTITY FULL is every column,
// so the primary key is looked up once per relation. Tables without one
// fall back to the replica identity.
func (st *stream) keyOf(ctx context.Context, rel *relation, vals []json.RawMessage) (rowcast.Row, error) {
	if !rel.keyKnown {
		ctx, cancel := context.WithTimeout(ctx, pingTimeout)
		defer cancel()
		rows, err := st.reg.Query(ctx, `
			SELECT a.attname
			FROM pg_index i
			JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
			WHERE i.indrelid = $1::oid AND i.indisprimary
			ORDER BY array_position(i.indkey::int2[], a.attnum)`, rel.id)
		if err != nil {
			return nil, fmt.Errorf("cdc: looking up the primary key of %s.%s: %w", rel.schema, rel.table, err)
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("cdc: looking up the primary key of %s.%s: %w", rel.schema, rel.table, err)
		}
		rel.key = nil
		for _, n := range names {
			for i, c := range rel.cols {
				if c.name == n {
					rel.key = append(rel.key, i)
				}
			}
		}
		if len(rel.key) == 0 {
			rel.key = rel.identity
		}
		rel.keyKnown = true
	}
	return rel.row(vals, rel.key), nil
}

// fetchUnchanged fills unchanged TOAST columns that the old tuple lacks
// (the table is not REPLICA IDENTITY FULL) by reading the row by its key.
// The value read may be newer than this change; a later change in the
// stream then corrects it. A row deleted meanwhile gives null, and its
// delete follows in the stream.
func (st *stream) fetchUnchanged(ctx context.Context, rel *relation, t *pglogrepl.TupleData, vals []json.RawMessage, missing []int) error {
	if !rel.warnedToast {
		rel.warnedToast = true
		st.s.log.Warn("unchanged TOAST values arrive without their old value because the table is not REPLICA IDENTITY FULL; reading them from the table instead (run `rowcast setup` to fix)",
			"table", rel.schema+"."+rel.table)
	}
	if _, err := st.keyOf(ctx, rel, vals); err != nil {
		return err
	}
	cols := make([]string, len(missing))
	for j, i := range missing {
		cols[j] = pgx.Identifier{rel.cols[i].name}.Sanitize()
	}
	var where []string
	var args []any
	for _, i := range rel.key {
		c := t.Columns[i]
		if c.DataType != pglogrepl.TupleDataTypeText {
			where = nil
			break
		}
		args = append(args, string(c.Data))
		where = append(where, fmt.Sprintf("%s = $%d", pgx.Identifier{rel.cols[i].name}.Sanitize(), len(args)))
	}
	fillNull := func(why string) error {
		st.s.log.Warn("unchanged TOAST value not available; emitting null", "table", rel.schema+"."+rel.table, "why", why)
		for _, i := range missing {
			vals[i] = json.RawMessage("null")
		}
		return nil
	}
	if len(where) == 0 {
		return fillNull("no usable key")
	}
	q := "SELECT " + strings.Join(cols, ", ") + " FROM " + pgx.Identifier{rel.schema, rel.table}.Sanitize() +
		" WHERE " + strings.Join(where, " AND ")
	// The simple protocol returns values in text format from the types'
	// output functions, exactly like pgoutput, and sends the key as
	// untyped literals that PostgreSQL casts to the column types.
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	rows, err := st.reg.Query(ctx, q, append([]any{pgx.QueryExecModeSimpleProtocol}, args...)...)
	if err != nil {
		return fmt.Errorf("cdc: reading unchanged TOAST values of %s.%s: %w", rel.schema, rel.table, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return fmt.Errorf("cdc: reading unchanged TOAST values of %s.%s: %w", rel.schema, rel.table, err)
		}
		return fillNull("row no longer exists")
	}
	for j, raw := range rows.RawValues() {
		i := missing[j]
		if raw == nil {
			vals[i] = json.RawMessage("null")
			continue
		}
		v, err := st.dec.decode(rel.cols[i].oid, raw)
		if err != nil {
			return fmt.Errorf("cdc: decoding %s.%s.%s: %w", rel.schema, rel.table, rel.cols[i].name, err)
		}
		vals[i] = v
	}
	rows.Close()
	return rows.Err()
}
