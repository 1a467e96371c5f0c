package cluster

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"rowcast"
)

// LeaderConfig configures the election of the capturing node.
type LeaderConfig struct {
	// ConnString reaches PostgreSQL for the lock's own connection.
	ConnString string
	// Name identifies what is captured (the stream, the slot or channel):
	// nodes with the same Name compete for one lock.
	Name string
	// Poll is how often a waiting node tries the lock and the leader
	// checks its connection (default 250ms).
	Poll time.Duration
	// Ready reports whether this node may lead: it reaches the stream.
	Ready func() bool
	// Observer is told when this node starts and stops capturing.
	Observer LeaderObserver
	Logger   *slog.Logger
}

// LeaderObserver is told of leadership changes on this node.
type LeaderObserver interface {
	Leading(on bool)
}

// Leader makes this node the capturer while it holds a PostgreSQL advisory
// lock: the lock lives on a connection of its own, and PostgreSQL
// releases it as soon as that connection goes (a killed node, a cut
// network). Capture runs only while the lock is held.
type Leader struct {
	cfg     LeaderConfig
	log     *slog.Logger
	key     int64
	leading atomic.Bool
}

// NewLeader returns a Leader; Run competes.
func NewLeader(cfg LeaderConfig) *Leader {
	if cfg.Poll <= 0 {
		cfg.Poll = 250 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Ready == nil {
		cfg.Ready = func() bool { return true }
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "rowcast capture %s", cfg.Name)
	return &Leader{cfg: cfg, log: cfg.Logger, key: int64(h.Sum64())}
}

// Leading reports whether this node captures now.
func (l *Leader) Leading() bool { return l.leading.Load() }

// ErrStepDown wraps why a capturer gave up leadership without an error
// that needs an operator: another node takes over.
var ErrStepDown = errors.New("stepping down")

// Run competes for the lock until ctx ends, and runs capture while holding
// it. capture returns when its context ends (then nil), when it steps down
// (an error wrapping ErrStepDown or a *PublishError), or with an error
// retrying cannot fix, which Run returns.
func (l *Leader) Run(ctx context.Context, capture func(ctx context.Context) error) error {
	failures := 0
	for ctx.Err() == nil {
		err := l.round(ctx, capture)
		if ctx.Err() != nil {
			return nil
		}
		var pe *PublishError
		switch {
		case err == nil:
			failures = 0
		case errors.Is(err, ErrStepDown) || errors.As(err, &pe):
			l.log.Warn("capture stepped down; another node may take over", "err", err)
			failures++
		case isFatal(err):
			return err
		default:
			l.log.Warn("leader election interrupted; retrying", "err", err)
			failures++
		}
		// After stepping down, wait longer than the others poll, so that
		// a node that can publish takes over first.
		d := min(time.Duration(1<<min(failures, 5))*l.cfg.Poll, 10*time.Second)
		if !sleep(ctx, d/2+rand.N(d/2+1)) {
			return nil
		}
	}
	return nil
}

// fatal marks a capture error that needs an operator.
type fatal struct{ err error }

func (f *fatal) Error() string { return f.err.Error() }
func (f *fatal) Unwrap() error { return f.err }

// Fatal marks err as one retrying cannot fix: Run returns it.
func Fatal(err error) error { return &fatal{err} }

func isFatal(err error) bool {
	var f *fatal
	return errors.As(err, &f)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// round connects, waits for the lock and runs one term. The connection is
// closed at the end of the round, which releases the lock whatever
// happened.
func (l *Leader) round(ctx context.Context, capture func(ctx context.Context) error) error {
	for !l.cfg.Ready() {
		if !sleep(ctx, l.cfg.Poll) {
			return nil
		}
	}
	cfg, err := pgx.ParseConfig(l.cfg.ConnString)
	if err != nil {
		return Fatal(fmt.Errorf("leader election: parsing the connection string: %w", err))
	}
	cfg.RuntimeParams["application_name"] = "rowcast leader election"
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("leader election: connecting to PostgreSQL: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	for {
		if l.cfg.Ready() {
			got, err := l.try(ctx, conn)
			if err != nil {
				return err
			}
			if got {
				break
			}
		}
		if !sleep(ctx, l.cfg.Poll) {
			return nil
		}
	}
	return l.term(ctx, conn, capture)
}

func (l *Leader) try(ctx context.Context, conn *pgx.Conn) (bool, error) {
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var got bool
	if err := conn.QueryRow(qctx, `SELECT pg_try_advisory_lock($1)`, l.key).Scan(&got); err != nil {
		if ctx.Err() != nil {
			return false, nil
		}
		return false, fmt.Errorf("leader election: trying the advisory lock: %w", err)
	}
	return got, nil
}

// term captures while the lock's connection answers.
func (l *Leader) term(ctx context.Context, conn *pgx.Conn, capture func(ctx context.Context) error) error {
	began := time.Now()
	l.leading.Store(true)
	if l.cfg.Observer != nil {
		l.cfg.Observer.Leading(true)
	}
	l.log.Info("this node captures now (it holds the capture lock)")
	defer func() {
		l.leading.Store(false)
		if l.cfg.Observer != nil {
			l.cfg.Observer.Leading(false)
		}
		l.log.Info("this node stopped capturing", "after", time.Since(began).Round(time.Millisecond).String())
	}()
	tctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan error, 1)
	go func() { done <- capture(tctx) }()
	tick := time.NewTicker(l.cfg.Poll)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if cause := context.Cause(tctx); err == nil && cause != nil && !errors.Is(cause, context.Canceled) {
				return cause
			}
			return err
		case <-tick.C:
			if !l.cfg.Ready() {
				cancel(fmt.Errorf("%w: the stream is unreachable", ErrStepDown))
				continue
			}
			pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
			err := conn.Ping(pctx)
			pcancel()
			if err != nil && ctx.Err() == nil {
				// The lock may be gone with its connection: capture
				// must stop before another node starts.
				cancel(fmt.Errorf("%w: the capture lock's connection failed: %v", ErrStepDown, err))
			}
		}
	}
}

// Term is one leadership term of capture: it starts the publisher, tells
// the nodes to resync in notify mode (NOTIFY cannot replay what was
// committed while no node listened), and runs the source into the
// publisher until ctx ends or a batch cannot be published.
func Term(pub *Publisher, source rowcast.Source, notify bool) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		ctx, stop := context.WithCancelCause(ctx)
		defer stop(nil)
		if err := pub.Begin(ctx, stop); err != nil {
			return &PublishError{err: err}
		}
		// A capturer with nothing more to publish still steps down when
		// the stream fails or stops acknowledging what it published.
		var checks sync.WaitGroup
		defer func() { stop(nil); checks.Wait() }()
		checks.Add(1)
		go func() {
			defer checks.Done()
			t := time.NewTicker(checkEvery)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					_ = pub.Check()
				}
			}
		}()
		if notify {
			err := pub.Apply(ctx, []rowcast.Change{{Op: rowcast.OpResync, Reason: ReasonTakeover, CaptureTime: time.Now()}})
			if err != nil {
				return err
			}
		}
		err := source.Run(ctx, pub)
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			return cause
		}
		if err != nil {
			return Fatal(err)
		}
		return nil
	}
}

// ReasonTakeover is the resync reason when capture moves to another node
// in notify mode.
const ReasonTakeover = "capture moved to another node (notify mode cannot replay what was missed): refetch your data"

// checkEvery is how often a term checks its publisher's acknowledgements.
const checkEvery = 250 * time.Millisecond
