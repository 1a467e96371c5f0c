package metrics

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Querier runs one query returning one row. *pgxpool.Pool and *pgx.Conn
// implement it; tests use a fake.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// DefaultPollInterval is used when NewDBPoller is given 0.
const DefaultPollInterval = 10 * time.Second

// SlotStatuses are the values of the status label of
// rowcast_replication_slot_wal_status: PostgreSQL's wal_status values, and
// "missing" when the slot does not exist.
var SlotStatuses = []string{"reserved", "extended", "unreserved", "lost", "missing"}

// Queries run by the poller. In logical mode one row always comes back
// (LEFT JOIN), with exists = false when the slot is gone. wal_status and
// safe_wal_size are read through to_jsonb so that servers without those
// columns (PostgreSQL < 13) give NULL instead of an error.
const (
	slotQuery = `SELECT s.slot_name IS NOT NULL,
       (w.lsn - s.confirmed_flush_lsn)::float8,
       (w.lsn - s.restart_lsn)::float8,
       (s.confirmed_flush_lsn - '0/0'::pg_lsn)::float8,
       to_jsonb(s) ->> 'wal_status',
       (to_jsonb(s) ->> 'safe_wal_size')::float8,
       coalesce(s.active, false)
FROM (SELECT pg_current_wal_lsn() AS lsn) w
LEFT JOIN pg_replication_slots s ON s.slot_name = $1`
	notifyQueueQuery = `SELECT pg_notification_queue_usage()`
)

// DBPoller reads, every interval, what only the database knows: how far
// the replication slot lags and how much WAL it holds back (logical mode),
// or how full the NOTIFY queue is (notify mode). The last successful poll
// is what a scrape sees; after a failed poll the database series are left
// out (no stale values) until the next success.
type DBPoller struct {
	q        Querier
	slot     string
	mode     func() string
	interval time.Duration
	errors   prometheus.Counter

	// Logger receives poll failures; set it before Run. nil means
	// slog.Default().
	Logger *slog.Logger

	lag, retained, confirmed, safeWAL, active, walStatus, queueUsage *prometheus.Desc

	mu   sync.Mutex
	last pollResult
}

// pollResult is one successful poll; nil fields were NULL or not asked.
type pollResult struct {
	mode                              string
	slotExists                        bool
	lag, retained, confirmed, safeWAL *float64
	walStatus                         *string
	active                            bool
	queueUsage                        *float64
	ok                                bool
}

// NewDBPoller registers the database series on reg and returns the poller;
// call Run to start polling. slot is the replication slot read in logical
// mode ("" means "rowcast", the capture's default). mode is asked before
// every poll and returns ModeLogical or ModeNotify (anything else polls
// nothing). interval 0 means DefaultPollInterval. It panics if the series
// are already registered.
func NewDBPoller(reg prometheus.Registerer, q Querier, slot string, mode func() string, interval time.Duration) *DBPoller {
	if slot == "" {
		slot = "rowcast"
	}
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	p := &DBPoller{
		q: q, slot: slot, mode: mode, interval: interval,
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rowcast_db_poll_errors_total",
			Help: "Failed polls of the database for replication slot or NOTIFY queue status (see the log for the error).",
		}),
		lag: prometheus.NewDesc("rowcast_replication_lag_bytes",
			"Bytes of WAL between the server's current WAL position and the slot's confirmed_flush_lsn: written but not yet acknowledged by rowcast. Logical mode only.", nil, nil),
		retained: prometheus.NewDesc("rowcast_replication_retained_wal_bytes",
			"Bytes of WAL the server keeps on disk for the slot (current WAL position minus restart_lsn). Logical mode only.", nil, nil),
		confirmed: prometheus.NewDesc("rowcast_replication_slot_confirmed_flush_lsn_bytes",
			"The slot's confirmed_flush_lsn as a byte offset, as PostgreSQL records it. Logical mode only.", nil, nil),
		safeWAL: prometheus.NewDesc("rowcast_replication_slot_safe_wal_size_bytes",
			"Bytes of WAL that can still be written before the slot is in danger of being lost (pg_replication_slots.safe_wal_size); absent when max_slot_wal_keep_size is -1. Logical mode only.", nil, nil),
		active: prometheus.NewDesc("rowcast_replication_slot_active",
			"1 while a replication connection streams from the slot, else 0. Logical mode only.", nil, nil),
		walStatus: prometheus.NewDesc("rowcast_replication_slot_wal_status",
			"1 for the slot's current wal_status (reserved, extended, unreserved, lost; missing when the slot does not exist), 0 for the others. Logical mode only.", []string{"status"}, nil),
		queueUsage: prometheus.NewDesc("rowcast_notify_queue_usage_ratio",
			"Fraction of the server's NOTIFY queue in use (pg_notification_queue_usage()), 0 to 1. Notify mode only.", nil, nil),
	}
	reg.MustRegister(p.errors, p)
	return p
}

// Run polls once at once, then every interval, until ctx ends.
func (p *DBPoller) Run(ctx context.Context) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	failing := false
	for {
		err := p.Poll(ctx)
		if ctx.Err() != nil {
			return
		}
		log := p.Logger
		if log == nil {
			log = slog.Default()
		}
		switch {
		case err != nil && !failing:
			log.Warn("polling the database for metrics failed; database series are left out until it works again (counted in rowcast_db_poll_errors_total)", "err", err)
			failing = true
		case err != nil:
			log.Debug("polling the database for metrics failed again", "err", err)
		case failing:
			log.Info("polling the database for metrics works again")
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Poll runs one poll now. Run calls it; it is exported for tests and for
// callers that drive polling themselves. A failure is counted, and the
// database series are left out until the next success.
func (p *DBPoller) Poll(ctx context.Context) error {
	mode := ""
	if p.mode != nil {
		mode = p.mode()
	}
	ctx, cancel := context.WithTimeout(ctx, p.interval)
	defer cancel()
	r := pollResult{mode: mode, ok: true}
	var err error
	switch mode {
	case ModeLogical:
		err = p.q.QueryRow(ctx, slotQuery, p.slot).Scan(&r.slotExists, &r.lag, &r.retained, &r.confirmed,
			&r.walStatus, &r.safeWAL, &r.active)
	case ModeNotify:
		var u float64
		err = p.q.QueryRow(ctx, notifyQueueQuery).Scan(&u)
		r.queueUsage = &u
	}
	if err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			// Shutting down: not a database problem.
			return err
		}
		p.errors.Inc()
		r = pollResult{}
	}
	p.mu.Lock()
	p.last = r
	p.mu.Unlock()
	return err
}

func (p *DBPoller) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{p.lag, p.retained, p.confirmed, p.safeWAL, p.active, p.walStatus, p.queueUsage} {
		ch <- d
	}
}

func (p *DBPoller) Collect(ch chan<- prometheus.Metric) {
	p.mu.Lock()
	r := p.last
	p.mu.Unlock()
	if !r.ok {
		return
	}
	gauge := func(d *prometheus.Desc, v *float64) {
		if v != nil {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, *v)
		}
	}
	switch r.mode {
	case ModeLogical:
		status := "missing"
		if r.slotExists {
			status = ""
			if r.walStatus != nil {
				status = *r.walStatus
			}
			gauge(p.lag, r.lag)
			gauge(p.retained, r.retained)
			gauge(p.confirmed, r.confirmed)
			gauge(p.safeWAL, r.safeWAL)
			active := 0.0
			if r.active {
				active = 1
			}
			ch <- prometheus.MustNewConstMetric(p.active, prometheus.GaugeValue, active)
		}
		// Always the same five series, so that "== 1" alerts and graphs
		// see a 0 rather than nothing. An unknown status (or none, before
		// PostgreSQL 13) sets none of them.
		for _, s := range SlotStatuses {
			v := 0.0
			if s == status {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(p.walStatus, prometheus.GaugeValue, v, s)
		}
	case ModeNotify:
		gauge(p.queueUsage, r.queueUsage)
	}
}
