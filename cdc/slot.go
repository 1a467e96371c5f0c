package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"rowcast"
)

// SlotConfig configures logical replication capture.
type SlotConfig struct {
	// ConnString is a PostgreSQL URL or keyword/value string. The role needs
	// the REPLICATION attribute (see DetectLogical).
	ConnString string
	// Slot is the replication slot name (default "rowcast"): lower-case
	// letters, digits and underscores, as PostgreSQL requires.
	Slot string
	// Publication is the publication streamed (default "rowcast"); see
	// SetupLogical.
	Publication string
	// Table is the captured table, schema-qualified (public.tickets). Only
	// its changes and rowcast.outbox's events are handed on; changes of
	// any other table the publication holds are dropped and counted
	// (CaptureStatus.Ignored). Empty means the table rowcast setup recorded
	// on the publication.
	Table string
	// StandbyTimeout is the longest time between two standby status
	// updates (default 10s). It must stay below the server's
	// wal_sender_timeout (default 60s).
	StandbyTimeout time.Duration
	// BatchSize is the most changes handed to one Sink.Apply (default 512).
	BatchSize int
	// Logger receives connection and slot events; nil means slog.Default().
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the wait before reconnecting
	// (defaults 100ms and 5s).
	MinBackoff, MaxBackoff time.Duration

	// hold is how long a batch waits for the transactions behind it while
	// the stream is behind (default backlogHold; tests lengthen it).
	hold time.Duration
}

// Slot captures changes through a logical replication slot with the
// pgoutput plugin. It implements rowcast.Source.
type Slot struct {
	cfg SlotConfig
	log *slog.Logger

	running         atomic.Bool
	connected       atomic.Bool
	reconnects      atomic.Uint64
	slotRecreations atomic.Uint64
	withoutOldRow   atomic.Uint64
	receivedLSN     atomic.Uint64
	flushedLSN      atomic.Uint64
	// ignored counts what the stream drops; its log state belongs to the
	// Run goroutine.
	ignored *drops

	// Owned by the Run goroutine.

	// table is the captured table as {schema, name}, checked against the
	// publication at the start of every session.
	table [2]string
	// warnedOthers: the publication's other tables were logged once.
	warnedOthers bool

	// handedOn is the end of the last transaction the sink accepted.
	handedOn pglogrepl.LSN
	// walSeen is the furthest WAL position the server showed this
	// process (commit ends, keepalives): a server whose WAL ends before
	// it went back in time.
	walSeen pglogrepl.LSN
	// history is the WAL history (rowcast.HistoryEpoch) of the last
	// session's server; a session on another one makes clients resync.
	// epoch is what IDs carry: the history, or after the server went back
	// in time on the same history, an epoch of its own, so that no ID
	// from before compares with the positions written since.
	history, epoch uint64
	// resync is a marker the sink has not accepted yet; it survives
	// reconnects so that a slot recreated just before a failure is still
	// reported.
	resync *rowcast.Change
}

var _ rowcast.Source = (*Slot)(nil)

// MessagePrefix is the prefix of the logical decoding messages that
// rowcast before the outbox used for rowcast.broadcast(). Any role may
// call pg_logical_emit_message, so such messages are never handed on:
// they are dropped and counted (rowcast.IgnoredLogicalMessage).
const MessagePrefix = "rowcast"

var slotNameRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// NewSlot returns a Slot with defaults filled in. Nothing connects before
// Run.
func NewSlot(cfg SlotConfig) *Slot {
	if cfg.Slot == "" {
		cfg.Slot = "rowcast"
	}
	if cfg.Publication == "" {
		cfg.Publication = "rowcast"
	}
	if cfg.StandbyTimeout <= 0 {
		cfg.StandbyTimeout = 10 * time.Second
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 512
	}
	if cfg.hold <= 0 {
		cfg.hold = backlogHold
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("slot", cfg.Slot)
	return &Slot{cfg: cfg, log: log, ignored: newDrops(rowcast.IgnoreReasons, log)}
}

// Status reports the capture state; safe to call from any goroutine.
func (s *Slot) Status() rowcast.CaptureStatus {
	return rowcast.CaptureStatus{
		Mode:            "logical",
		Connected:       s.connected.Load(),
		Reconnects:      s.reconnects.Load(),
		ReceivedLSN:     s.receivedLSN.Load(),
		FlushedLSN:      s.flushedLSN.Load(),
		SlotRecreations: s.slotRecreations.Load(),
		WithoutOldRow:   s.withoutOldRow.Load(),
		Ignored:         s.ignored.snapshot(),
	}
}

// fatalError marks errors that reconnecting cannot fix.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

func fatalf(format string, args ...any) error {
	return &fatalError{fmt.Errorf(format, args...)}
}

// Run streams changes to sink until ctx ends (then it returns nil) or an
// error that needs an operator (bad credentials, missing privilege or
// publication, a foreign slot of the same name). Connection losses,
// PostgreSQL restarts and sink errors are retried with backoff; the slot
// resends everything not acknowledged, so nothing is lost (changes may
// arrive twice, with the same IDs).
func (s *Slot) Run(ctx context.Context, sink rowcast.Sink) error {
	if !slotNameRE.MatchString(s.cfg.Slot) {
		return fmt.Errorf("cdc: invalid replication slot name %q: use lower-case letters, digits and underscores (at most 63)", s.cfg.Slot)
	}
	if s.cfg.Publication == "" {
		return errors.New("cdc: empty publication name: create the Slot with NewSlot")
	}
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("cdc: Slot.Run called while already running: a slot streams to one sink at a time")
	}
	defer s.running.Store(false)

	failures := 0
	for {
		began := time.Now()
		streamed, err := s.session(ctx, sink)
		s.connected.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		if fe := (*fatalError)(nil); errors.As(err, &fe) {
			s.log.Error("logical replication stopped", "err", err)
			return err
		}
		if streamed && time.Since(began) >= healthySession {
			failures = 0
		}
		delay := s.backoff(failures)
		failures++
		s.reconnects.Add(1)
		if isSlotInUse(err) {
			s.log.Warn("replication slot is in use by another connection; waiting for it to go", "err", err, "retry_in", delay)
		} else {
			s.log.Warn("logical replication interrupted; reconnecting", "err", err, "retry_in", delay)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// healthySession is how long a session must have streamed for the next
// reconnect to start again from MinBackoff. Shorter sessions (a sink that
// keeps failing, a server that drops us at once) keep backing off.
const healthySession = 10 * time.Second

// backoff is capped exponential with jitter (between d/2 and d), so that several
// rowcast instances restarting together do not reconnect in lockstep.
func (s *Slot) backoff(failures int) time.Duration {
	d := s.cfg.MinBackoff
	for i := 0; i < failures && d < s.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.cfg.MaxBackoff)
	half := d / 2
	return half + rand.N(d-half+1)
}

// session runs one connection lifetime. streamed reports whether
// replication got going.
func (s *Slot) session(ctx context.Context, sink rowcast.Sink) (streamed bool, err error) {
	reg, err := s.connectRegular(ctx)
	if err != nil {
		return false, err
	}
	defer closeQuietly(reg)

	start, err := s.prepareSlot(ctx, reg)
	if err != nil {
		return false, err
	}
	if err := checkNotNamedStandby(ctx, reg, s.appName()); err != nil {
		return false, err
	}

	repl, sys, err := s.startReplication(ctx, reg, start)
	if err != nil {
		return false, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = repl.Close(cctx)
	}()
	if err := checkNotSynchronous(ctx, reg, repl.PID()); err != nil {
		return false, err
	}

	history := rowcast.HistoryEpoch(sys.SystemID, sys.Timeline)
	// The server's WAL ends before what this process already received:
	// the database went back in time on the same timeline (a file-level
	// snapshot restored without recovery). Its positions mean other
	// changes now.
	rewound := history == s.history && sys.XLogPos < s.walSeen
	if s.history != 0 && (history != s.history || rewound) {
		s.log.Warn("the database's WAL history changed (failover, point-in-time or snapshot restore, or another server behind the same address): changes made on the old one after the new one forked are not sent, and clients resync",
			"system_id", sys.SystemID, "timeline", sys.Timeline, "wal_end", sys.XLogPos.String(),
			"seen", s.walSeen.String())
		if s.resync == nil {
			s.resync = &rowcast.Change{Op: rowcast.OpResync, Reason: ReasonHistoryChanged, CaptureTime: time.Now()}
		}
		// Positions of the old history mean nothing on this one; the
		// flush position in particular must not be reported to it.
		s.handedOn, s.walSeen = start, start
		s.receivedLSN.Store(uint64(start))
		s.flushedLSN.Store(uint64(start))
	}
	switch {
	case rewound:
		s.epoch = rowcast.HistoryEpoch(sys.SystemID+" rewound to "+sys.XLogPos.String(), sys.Timeline)
	case history != s.history:
		s.epoch = history
	}
	s.history = history
	epoch := s.epoch
	if s.handedOn < start {
		s.handedOn = start
	}
	s.raiseFlushed(start)

	// Every change of this session has an ID at or after the start
	// position; the hub's replay window needs that promise after a restart.
	// No ID handed out before can be past the server's WAL position now:
	// the hub tells a client whose cursor is beyond it to resync.
	var horizon rowcast.EventID
	if pos, err := currentWAL(ctx, reg); err == nil {
		horizon = rowcast.EventID{Epoch: epoch, Pos: uint64(pos), Index: math.MaxUint32}
	} else {
		s.log.Debug("reading the WAL position failed; cursors are not checked against it", "err", err)
	}
	// The resync marker, if any, and the start marker in one batch:
	// between the two the hub has no cursor to give a snapshot.
	var markers []rowcast.Change
	if s.resync != nil {
		if !s.resync.ID.IsZero() {
			s.resync.ID.Epoch = epoch
		}
		markers = append(markers, *s.resync)
	}
	markers = append(markers, rowcast.Change{Op: rowcast.OpStart, CaptureTime: time.Now(),
		ID: rowcast.EventID{Epoch: epoch, Pos: uint64(start)}, Horizon: horizon})
	if err := sink.Apply(ctx, markers); err != nil {
		return true, fmt.Errorf("cdc: handing the start marker to the sink: %w", err)
	}
	s.resync = nil
	// Ready only now: a client resuming after a restart needs the start
	// marker in the hub before it can be told what it missed.
	s.connected.Store(true)
	s.log.Info("logical replication streaming", "start_lsn", start.String(), "publication", s.cfg.Publication)

	st := newStream(s, repl, reg, sink)
	return true, st.run(ctx)
}

// connectRegular opens the ordinary connection used for slot management,
// primary key lookups and unchanged-TOAST fetches.
func (s *Slot) connectRegular(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(s.cfg.ConnString)
	if err != nil {
		return nil, fatalf("cdc: parsing the connection string: %w", err)
	}
	setSessionParams(cfg.RuntimeParams)
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = connectTimeout
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, classify(fmt.Errorf("cdc: connecting to PostgreSQL: %w", err))
	}
	return conn, nil
}

// appName is the application_name of rowcast's connections: the
// connection string's, else "rowcast".
func (s *Slot) appName() string {
	params := map[string]string{}
	if cfg, err := pgconn.ParseConfig(s.cfg.ConnString); err == nil {
		params = cfg.RuntimeParams
	}
	setSessionParams(params)
	return params["application_name"]
}

func setSessionParams(params map[string]string) {
	for k, v := range sessionParams {
		params[k] = v
	}
	if params["application_name"] == "" {
		params["application_name"] = "rowcast"
	}
}

func closeQuietly(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// slotInfo is a row of pg_replication_slots.
type slotInfo struct {
	exists    bool
	plugin    string
	slotType  string
	sameDB    bool
	confirmed pglogrepl.LSN
	walStatus string
}

func readSlot(ctx context.Context, conn *pgx.Conn, name string) (slotInfo, error) {
	var (
		info      slotInfo
		plugin    *string
		confirmed *string
		sameDB    *bool
	)
	err := conn.QueryRow(ctx, `
		SELECT plugin, slot_type, database = current_database(),
		       confirmed_flush_lsn::text, coalesce(wal_status, '')
		FROM pg_replication_slots WHERE slot_name = $1`, name).
		Scan(&plugin, &info.slotType, &sameDB, &confirmed, &info.walStatus)
	if errors.Is(err, pgx.ErrNoRows) {
		return info, nil
	}
	if err != nil {
		return info, fmt.Errorf("cdc: reading replication slot %q: %w", name, err)
	}
	info.exists = true
	if plugin != nil {
		info.plugin = *plugin
	}
	info.sameDB = sameDB != nil && *sameDB
	if confirmed != nil {
		if info.confirmed, err = pglogrepl.ParseLSN(*confirmed); err != nil {
			return info, fmt.Errorf("cdc: replication slot %q: %w", name, err)
		}
	}
	return info, nil
}

// prepareSlot makes sure the slot exists and can stream, and returns the
// position to start from (the slot's confirmed_flush_lsn).
func (s *Slot) prepareSlot(ctx context.Context, reg *pgx.Conn) (pglogrepl.LSN, error) {
	if err := s.checkInstallation(ctx, reg); err != nil {
		return 0, err
	}

	info, err := readSlot(ctx, reg, s.cfg.Slot)
	if err != nil {
		return 0, err
	}
	switch {
	case !info.exists:
		return s.createSlot(ctx, reg, ReasonSlotCreated)
	case info.slotType != "logical" || info.plugin != "pgoutput" || !info.sameDB:
		return 0, fatalf("cdc: replication slot %q exists but is not a pgoutput logical slot of this database (type %s, plugin %q): configure another slot name, or drop it if it is unused",
			s.cfg.Slot, info.slotType, info.plugin)
	case info.walStatus == "lost":
		return s.recreateSlot(ctx, reg, "wal_status is lost")
	}
	if info.walStatus == "unreserved" {
		s.log.Warn("replication slot is about to lose WAL it needs (wal_status unreserved); raise max_slot_wal_keep_size or keep rowcast running")
	}
	return info.confirmed, nil
}

// checkInstallation finds the captured table and checks that setup made
// the publication and rowcast.broadcast() as this version needs them.
// An installation made by an older rowcast stops capture with what to
// run: its events from SQL came as logical decoding messages, which any
// role can forge, and would now be dropped without a word.
func (s *Slot) checkInstallation(ctx context.Context, reg *pgx.Conn) error {
	info, err := readPublication(ctx, reg, s.cfg.Publication)
	if err != nil {
		return err
	}
	schema, name, ok := "", "", false
	if s.cfg.Table != "" {
		if schema, name, err = SplitTableName(s.cfg.Table); err != nil {
			return fatalf("cdc: %w", err)
		}
	} else if info.exists {
		if schema, name, ok = parsePublicationComment(info.comment); !ok {
			return fatalf("cdc: publication %q does not record which table it was set up for (it was made by an older rowcast, or by hand): run `rowcast setup`", s.cfg.Publication)
		}
	}
	others, err := info.check(schema, name, s.cfg.Publication)
	if err != nil {
		return err
	}
	if err := checkBroadcastFunction(ctx, reg, true); err != nil {
		return err
	}
	if len(others) > 0 && !s.warnedOthers {
		s.warnedOthers = true
		s.log.Warn("the publication also publishes other tables; PostgreSQL sends their changes and rowcast drops them (rowcast_changes_ignored_total{reason=\"other_table\"}): give rowcast a publication of its own",
			"publication", s.cfg.Publication, "table", schema+"."+name, "others", strings.Join(others, ", "))
	}
	s.table = [2]string{schema, name}
	return nil
}

// Resync reasons of logical capture. They reach every client in the
// resync event, so they are fixed texts: nothing from PostgreSQL's error
// messages.
const (
	ReasonSlotCreated    = "replication slot created"
	ReasonSlotRecreated  = "replication slot invalidated and recreated: changes were missed"
	ReasonHistoryChanged = "the database's history changed (failover or restore): refetch your data"
)

func (s *Slot) createSlot(ctx context.Context, reg *pgx.Conn, reason string) (pglogrepl.LSN, error) {
	var lsnText string
	err := reg.QueryRow(ctx, `SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')`, s.cfg.Slot).Scan(&lsnText)
	if err != nil {
		return 0, classify(fmt.Errorf("cdc: creating replication slot %q: %w", s.cfg.Slot, err))
	}
	lsn, err := pglogrepl.ParseLSN(lsnText)
	if err != nil {
		return 0, fmt.Errorf("cdc: creating replication slot %q: %w", s.cfg.Slot, err)
	}
	s.log.Info("created replication slot", "lsn", lsn.String(), "reason", reason)
	// The marker sorts just before anything the new slot sends: a commit
	// LSN is never below the slot's starting point, and never odd.
	s.resync = &rowcast.Change{
		Op:          rowcast.OpResync,
		Reason:      reason,
		CaptureTime: time.Now(),
		ID:          rowcast.EventID{Pos: uint64(lsn) - 1},
	}
	return lsn, nil
}

// recreateSlot replaces an invalidated slot. Changes made while it was
// invalid are gone, so consumers get an OpResync and must refetch.
func (s *Slot) recreateSlot(ctx context.Context, reg *pgx.Conn, why string) (pglogrepl.LSN, error) {
	s.log.Error("replication slot was invalidated: PostgreSQL removed WAL it still needed, so changes were missed; recreating it (raise max_slot_wal_keep_size to avoid this)", "why", why)
	if _, err := reg.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, s.cfg.Slot); err != nil {
		return 0, classify(fmt.Errorf("cdc: dropping invalidated replication slot %q: %w", s.cfg.Slot, err))
	}
	// The reason reaches every client: a fixed text, never the server's
	// error message (why is for the log).
	lsn, err := s.createSlot(ctx, reg, ReasonSlotRecreated)
	if err != nil {
		return 0, err
	}
	s.slotRecreations.Add(1)
	return lsn, nil
}

// startReplication connects in replication mode and issues
// START_REPLICATION, recreating the slot once if PostgreSQL reports it
// invalidated between prepareSlot and now.
func (s *Slot) startReplication(ctx context.Context, reg *pgx.Conn, start pglogrepl.LSN) (*pgconn.PgConn, pglogrepl.IdentifySystemResult, error) {
	var sys pglogrepl.IdentifySystemResult
	cfg, err := pgconn.ParseConfig(s.cfg.ConnString)
	if err != nil {
		return nil, sys, fatalf("cdc: parsing the connection string: %w", err)
	}
	setSessionParams(cfg.RuntimeParams)
	cfg.RuntimeParams["replication"] = "database"
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = connectTimeout
	}

	for attempt := 0; ; attempt++ {
		repl, err := pgconn.ConnectConfig(ctx, cfg)
		if err != nil {
			return nil, sys, classify(fmt.Errorf("cdc: opening the replication connection: %w", err))
		}
		// The server's history, on the connection that streams from it:
		// a regular connection could reach another server (a moved
		// address) between the two.
		sys, err = pglogrepl.IdentifySystem(ctx, repl)
		if err != nil {
			closeCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = repl.Close(closeCtx)
			cancel()
			return nil, sys, classify(fmt.Errorf("cdc: identifying the server on the replication connection: %w", err))
		}
		err = pglogrepl.StartReplication(ctx, repl, s.cfg.Slot, start, pglogrepl.StartReplicationOptions{
			Mode: pglogrepl.LogicalReplication,
			PluginArgs: []string{
				"proto_version '1'",
				"publication_names " + quoteLiteral(pgx.Identifier{s.cfg.Publication}.Sanitize()),
				"messages 'true'",
			},
		})
		if err == nil {
			return repl, sys, nil
		}
		closeCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = repl.Close(closeCtx)
		cancel()
		if isSlotInvalidated(err) && attempt == 0 {
			if start, err = s.recreateSlot(ctx, reg, err.Error()); err != nil {
				return nil, sys, err
			}
			continue
		}
		if isSlotInUse(err) {
			return nil, sys, fmt.Errorf("cdc: replication slot %q is in use (another rowcast still streaming?); retrying until it is released: %w", s.cfg.Slot, err)
		}
		return nil, sys, classify(fmt.Errorf("cdc: starting replication on slot %q: %w", s.cfg.Slot, err))
	}
}

func isSlotInUse(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "55006" && strings.Contains(pe.Message, "is active for PID")
}

func isSlotInvalidated(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	return strings.Contains(pe.Message, "can no longer get changes from replication slot") ||
		strings.Contains(pe.Detail, "This slot has been invalidated")
}

// classify marks errors that a retry cannot fix as fatal.
func classify(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	switch {
	case strings.HasPrefix(pe.Code, "28"): // invalid authorization
		return &fatalError{fmt.Errorf("%w (check the user and password in the connection string)", err)}
	case pe.Code == "3D000": // database does not exist
		return &fatalError{err}
	case pe.Code == "42501": // insufficient privilege
		return &fatalError{fmt.Errorf("%w (the role needs REPLICATION: ALTER ROLE ... REPLICATION, or use ROWCAST_CAPTURE=notify)", err)}
	case pe.Code == "55000" && strings.Contains(pe.Message, "wal_level"):
		return &fatalError{fmt.Errorf("%w (set wal_level=logical and restart PostgreSQL, or use ROWCAST_CAPTURE=notify)", err)}
	case pe.Code == "42704" && strings.Contains(pe.Message, "publication"):
		// Retrying replays the same WAL with the same catalog snapshot,
		// so it fails the same way forever.
		return &fatalError{fmt.Errorf("%w (run `rowcast setup`; if the publication was created after the slot, run `rowcast teardown` and `rowcast setup` again)", err)}
	}
	return err
}

func (s *Slot) raiseFlushed(lsn pglogrepl.LSN) pglogrepl.LSN {
	cur := pglogrepl.LSN(s.flushedLSN.Load())
	if lsn > cur {
		s.flushedLSN.Store(uint64(lsn))
		return lsn
	}
	return cur
}

func (s *Slot) raiseReceived(lsn pglogrepl.LSN) {
	if uint64(lsn) > s.receivedLSN.Load() {
		s.receivedLSN.Store(uint64(lsn))
	}
}

// currentWAL is the server's current WAL write position (the position
// replayed up to, on a standby).
func currentWAL(ctx context.Context, conn *pgx.Conn) (pglogrepl.LSN, error) {
	var text string
	err := conn.QueryRow(ctx, `SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text`).Scan(&text)
	if err != nil {
		return 0, err
	}
	return pglogrepl.ParseLSN(text)
}
