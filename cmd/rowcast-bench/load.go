package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const insertSQL = `INSERT INTO tickets (title, description, status, priority, category, requester_email, assignee_email)
VALUES ($1, '` + refDescription + `', 'open', 'medium', 'hardware', $2, '` + refAssignee + `')`

// writeBacklogTxns inserts n rows, each in its own transaction (one
// single-row INSERT followed by a Sync, pipelined 500 deep), over conns
// connections. Titles are "#<seq> ...", seq from base.
func (b *bench) writeBacklogTxns(ctx context.Context, n, conns int, base int64) error {
	var wg sync.WaitGroup
	errc := make(chan error, conns)
	per := (n + conns - 1) / conns
	for w := 0; w < conns; w++ {
		lo := w * per
		hi := min(n, lo+per)
		if lo >= hi {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.pipelineInserts(ctx, base+int64(lo), hi-lo); err != nil {
				errc <- err
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

func (b *bench) pipelineInserts(ctx context.Context, from int64, n int) error {
	conn, err := b.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Prepare(ctx, "ins", insertSQL); err != nil {
		return err
	}
	pc := conn.PgConn()
	const depth = 500
	for done := 0; done < n; {
		k := min(depth, n-done)
		pl := pc.StartPipeline(ctx)
		for i := 0; i < k; i++ {
			seq := from + int64(done+i)
			title := "#" + strconv.FormatInt(seq, 10) + " " + refTitle
			email := "user" + strconv.FormatInt(seq%500, 10) + "@example.com"
			pl.SendQueryPrepared("ins", [][]byte{[]byte(title), []byte(email)}, nil, nil)
			pl.SendPipelineSync()
		}
		if err := pl.Flush(); err != nil {
			return err
		}
		for i := 0; i < 2*k; i++ {
			res, err := pl.GetResults()
			if err != nil {
				pl.Close()
				return err
			}
			if rr, ok := res.(*pgconn.ResultReader); ok {
				if _, err := rr.Close(); err != nil {
					pl.Close()
					return err
				}
			}
		}
		if err := pl.Close(); err != nil {
			return err
		}
		done += k
	}
	return nil
}

// writeBacklogOneTxn inserts n rows in one transaction (one statement).
func (b *bench) writeBacklogOneTxn(ctx context.Context, n int, base int64) error {
	return b.exec(ctx, `INSERT INTO tickets (title, description, status, priority, category, requester_email, assignee_email)
SELECT '#' || g || ' `+refTitle+`', '`+refDescription+`', 'open', 'medium', 'hardware', 'user' || (g % 500) || '@example.com', '`+refAssignee+`'
FROM generate_series($1::bigint, $2::bigint) g`, base, base+int64(n)-1)
}

func (b *bench) currentLSN(ctx context.Context) (string, error) {
	conn, err := b.connect(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var lsn string
	err = conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&lsn)
	return lsn, err
}

// rateWriters are connections that update tickets at a fixed rate (open
// loop: each update has an intended start time; a late one starts at once
// and the schedule does not move).
type rateWriters struct {
	conns []*pgx.Conn
	seq   atomic.Int64
}

const updateSQL = `UPDATE tickets SET title = $1, updated_at = now() WHERE id = $2`

func (b *bench) newRateWriters(ctx context.Context, n int) (*rateWriters, error) {
	w := &rateWriters{}
	w.seq.Store(1_000_000)
	for i := 0; i < n; i++ {
		c, err := b.connect(ctx)
		if err != nil {
			w.close()
			return nil, err
		}
		if _, err := c.Prepare(ctx, "upd", updateSQL); err != nil {
			w.close()
			return nil, err
		}
		w.conns = append(w.conns, c)
	}
	return w, nil
}

func (w *rateWriters) close() {
	for _, c := range w.conns {
		c.Close(context.Background())
	}
}

// rateRun is one fixed-rate run: seq base+i was meant to start at
// start+i/rate; begin and commit are nanoseconds since start (commit 0:
// not done).
type rateRun struct {
	base     int64
	n        int64
	rate     float64
	start    time.Time
	begin    []int64
	commit   []int64
	errors   atomic.Int64
	firstErr atomic.Pointer[error]
	// behind counts updates that started more than 5 ms late.
	behind atomic.Int64
}

// committed counts updates that committed.
func (r *rateRun) committed() int64 {
	var n int64
	for i := range r.commit {
		if atomic.LoadInt64(&r.commit[i]) != 0 {
			n++
		}
	}
	return n
}

// span is the time from the start to the last commit.
func (r *rateRun) span() time.Duration {
	var last int64
	for i := range r.commit {
		last = max(last, atomic.LoadInt64(&r.commit[i]))
	}
	return time.Duration(last)
}

// commitLatencies returns writer-side commit latencies (statement sent →
// COMMIT returned) in milliseconds.
func (r *rateRun) commitLatencies() []float64 {
	out := make([]float64, 0, len(r.commit))
	for i := range r.commit {
		if c := r.commit[i]; c != 0 {
			out = append(out, float64(c-r.begin[i])/1e6)
		}
	}
	return out
}

// run updates at rate changes/s for d, spreading updates over the
// connections; it returns when every update has finished.
func (w *rateWriters) run(ctx context.Context, rate float64, d time.Duration) *rateRun {
	n := int64(math.Round(rate * d.Seconds()))
	if n < 1 {
		n = 1
	}
	r := &rateRun{n: n, rate: rate, begin: make([]int64, n), commit: make([]int64, n)}
	r.base = w.seq.Add(n) - n
	r.start = time.Now()
	var wg sync.WaitGroup
	nw := int64(len(w.conns))
	for k := int64(0); k < nw; k++ {
		conn := w.conns[k]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := k; i < n; i += nw {
				due := r.start.Add(time.Duration(float64(i) / rate * 1e9))
				if wait := time.Until(due); wait > 0 {
					if sleepCtx(ctx, wait) != nil {
						return
					}
				} else if wait < -5*time.Millisecond {
					r.behind.Add(1)
				}
				seq := r.base + i
				title := "#" + strconv.FormatInt(seq, 10) + " " + refTitle
				id := 2 + (seq % (seedRows - 1)) // ticket 1 stays the reference
				t0 := time.Now()
				_, err := conn.Exec(ctx, "upd", title, id)
				t1 := time.Now()
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					r.errors.Add(1)
					r.firstErr.CompareAndSwap(nil, &err)
					continue
				}
				atomic.StoreInt64(&r.begin[i], int64(t0.Sub(r.start)))
				atomic.StoreInt64(&r.commit[i], max(1, int64(t1.Sub(r.start))))
			}
		}()
	}
	wg.Wait()
	return r
}

func (r *rateRun) err() error {
	if p := r.firstErr.Load(); p != nil {
		return fmt.Errorf("%d of %d updates failed, first: %w", r.errors.Load(), r.n, *p)
	}
	return nil
}

// bareListener is a plain pgx LISTEN loop: the limit for NOTIFY capture.
type bareListener struct {
	conn     *pgx.Conn
	received atomic.Int64
	last     atomic.Int64
}

func (b *bench) newBareListener(ctx context.Context, channel string) (*bareListener, error) {
	conn, err := b.connect(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	return &bareListener{conn: conn}, nil
}

// receive reads notifications until target have arrived in total, or ctx
// ends, or idle passes without one. The loop itself waits with
// context.Background() (no per-notification context); a watchdog ends a
// stuck wait through the socket's read deadline.
func (l *bareListener) receive(ctx context.Context, target int64, idle time.Duration) error {
	stop := make(chan struct{})
	defer close(stop)
	netConn := l.conn.PgConn().Conn()
	go func() {
		last, lastChange := l.received.Load(), time.Now()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				_ = netConn.SetReadDeadline(time.Now())
				return
			case <-t.C:
				if n := l.received.Load(); n != last {
					last, lastChange = n, time.Now()
				} else if time.Since(lastChange) > idle {
					_ = netConn.SetReadDeadline(time.Now())
					return
				}
			}
		}
	}()
	defer netConn.SetReadDeadline(time.Time{})
	for l.received.Load() < target {
		_, err := l.conn.WaitForNotification(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) || isTimeout(err) {
				return fmt.Errorf("no notification for %v (received %d of %d)", idle, l.received.Load(), target)
			}
			return err
		}
		l.received.Add(1)
		l.last.Store(time.Now().UnixNano())
	}
	return nil
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

func (l *bareListener) close() { l.conn.Close(context.Background()) }
