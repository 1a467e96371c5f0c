package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"rowcast/integration/harness"
)

// Scenario 2: end-to-end latency, commit → WebSocket client receive.
//
// Writers update tickets at a fixed rate (open loop, 8 connections); the
// row's title carries a sequence number; the writer notes the time right
// after COMMIT returns, the client the time it has read the frame. Clients
// and writers are in this process, so both times come from one clock.

type latencyPoint struct {
	rate    float64
	clients int
	// dur, when set, is how long the writers run instead of
	// latencyDuration (a longer window steadies a CPU figure).
	dur time.Duration
}

// duration is how long the writers run at pt.
func (b *bench) duration(pt latencyPoint) time.Duration {
	if pt.dur > 0 && !b.opts.quick {
		return pt.dur
	}
	return b.latencyDuration()
}

// key names the point among the latency results.
func (pt latencyPoint) key() string { return fmt.Sprintf("%g/%d", pt.rate, pt.clients) }

// latencyResult is one point: a change rate with a number of clients.
type latencyResult struct {
	Rate           float64 `json:"rate"`             // changes/s offered
	MachineIdlePct float64 `json:"machine_idle_pct"` // % of all cores idle during the point
	Settled        float64 `json:"settled"`          // 1 when rowcast had caught up before the point
	WalsenderLagKB float64 `json:"walsender_lag_kb"` // largest pg_current_wal_lsn() - sent_lsn, KiB
	ServerMeanMs   float64 `json:"server_mean_ms"`   // rowcast's own commit→write mean, ms
	Clients        float64 `json:"clients"`          // connected clients
	AchievedRate   float64 `json:"achieved_rate"`    // changes/s committed
	WritersBehind  float64 `json:"writers_behind"`   // updates that started more than 5 ms late
	DeliveredPct   float64 `json:"delivered_pct"`    // % of the expected deliveries that arrived in time
	SlowCloses     float64 `json:"slow_closes"`      // clients closed as slow consumers
	Samples        float64 `json:"samples"`          // latencies measured
	P50Ms          float64 `json:"p50_ms"`           // commit → client latency quantiles, ms
	P95Ms          float64 `json:"p95_ms"`
	P99Ms          float64 `json:"p99_ms"`
	MaxMs          float64 `json:"max_ms"`
	CommitP50Ms    float64 `json:"commit_p50_ms"` // writer-side commit latency quantiles, ms
	CommitP99Ms    float64 `json:"commit_p99_ms"`
	RowcastCPUS    float64 `json:"rowcast_cpu_s"`   // rowcast CPU seconds
	RowcastCPUPct  float64 `json:"rowcast_cpu_pct"` // rowcast CPU, % of a core
}

// The latency target: at latencyTargetPoint, P99Ms and DeliveredPct of
// latencyResult within these bounds.
var (
	latencyTargetPoint     = latencyPoint{rate: 1000, clients: 1000}
	latencyP99Target       = atMost(10)   // ms
	latencyDeliveredTarget = atLeast(100) // %
)

func (b *bench) latencyPoints() []latencyPoint {
	if b.opts.quick {
		return []latencyPoint{{rate: 100, clients: 1}, latencyTargetPoint}
	}
	var pts []latencyPoint
	for _, c := range []int{1, 100, 1000} {
		for _, r := range []float64{100, 1000, 5000} {
			pts = append(pts, latencyPoint{rate: r, clients: c})
		}
	}
	return pts
}

func (b *bench) latencyDuration() time.Duration {
	if b.opts.quick {
		return 3 * time.Second
	}
	return 5 * time.Second
}

// latencyDrain is how long after the writers stop deliveries still count.
const latencyDrain = 3 * time.Second

// latencyRecorders is the most clients whose receive times are kept per
// point (evenly spread); every client counts deliveries.
const latencyRecorders = 200

func (b *bench) scenarioLatency(ctx context.Context) error {
	mode := "logical"
	if err := b.resetTable(ctx); err != nil {
		return err
	}
	if err := b.useCapture(ctx, mode); err != nil {
		return err
	}
	rc, err := b.startRowcast(ctx, mode)
	if err != nil {
		return err
	}
	defer rc.stop()
	w, err := b.newRateWriters(ctx, 8)
	if err != nil {
		return err
	}
	defer w.close()
	// Warm up: connections, prepared statements, rowcast's relation cache.
	w.run(ctx, 200, 500*time.Millisecond)

	pts := b.latencyPoints()
	var cs *clientSet
	defer func() {
		if cs != nil {
			cs.close()
		}
	}()
	for _, pt := range pts {
		if cs == nil || len(cs.clients) != pt.clients {
			if cs != nil {
				cs.close()
				cs = nil
			}
			// An overloaded point leaves a backlog; rowcast drains it
			// faster with no clients.
			b.settle(ctx, nil, 30*time.Second)
			if cs, err = dialClients(ctx, wsURL(rc.Addr), b.authHeader(), pt.clients); err != nil {
				return err
			}
			if err := cs.waitFrames(ctx, 30*time.Second); err != nil {
				return err
			}
		} else if closed, _ := cs.closedCount(); closed > 0 {
			if err := cs.fill(ctx); err != nil {
				return err
			}
			if err := cs.waitFrames(ctx, 30*time.Second); err != nil {
				return err
			}
		}
		settled := b.settle(ctx, cs, 15*time.Second)
		if err := b.latencyPoint(ctx, rc, cs, w, pt, settled); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) latencyPoint(ctx context.Context, rc *rowcastProc, cs *clientSet, w *rateWriters, pt latencyPoint, settled bool) error {
	res, err := b.measureLatency(ctx, rc, cs, w, pt, settled)
	if err != nil {
		return err
	}
	b.res.latency.add(pt.key(), map[string]string{"mode": rc.mode}, res)
	return nil
}

// measureLatency measures one point of commit → client latency.
func (b *bench) measureLatency(ctx context.Context, rc *rowcastProc, cs *clientSet, w *rateWriters, pt latencyPoint, settled bool) (latencyResult, error) {
	d := b.duration(pt)
	n := int64(math.Round(pt.rate * d.Seconds()))
	base := w.seq.Load()
	recs := cs.record(base, n, latencyRecorders)
	cs.countRange(base, base+n)
	rows0 := cs.inRange()
	m0, _ := rc.metrics()
	cpu0 := procCPU(rc.PID())
	// How far PostgreSQL's walsender for rowcast is behind the WAL it
	// could send, sampled every 100 ms: tells a lag before rowcast from
	// one inside it.
	sctx, stopSampling := context.WithCancel(ctx)
	sendLag := make(chan float64, 1)
	go func() { sendLag <- b.maxSendLag(sctx, 100*time.Millisecond) }()
	idle0 := readCPUStat()
	run := w.run(ctx, pt.rate, d)
	idle := idlePct(idle0)
	stopSampling()
	maxLag := <-sendLag
	if err := run.err(); err != nil {
		return latencyResult{}, err
	}
	committed := run.committed()
	expect := committed * int64(len(cs.clients))
	// Deliveries count when they arrive within 3 s after the last commit.
	cs.waitInRange(ctx, rows0+expect, latencyDrain, latencyDrain)
	delivered := cs.inRange() - rows0
	cs.countRange(0, 0)
	cpu := procCPU(rc.PID()) - cpu0
	m1, _ := rc.metrics()
	cs.stopRecording()
	_, slow := cs.closedCount()
	slowMetric := harness.Sum(m1, "rowcast_slow_consumer_disconnects_total") - harness.Sum(m0, "rowcast_slow_consumer_disconnects_total")

	// rowcast's own view: commit (pgoutput commit time) → write to a
	// client, from its histogram.
	srvCount := harness.Sum(m1, "rowcast_commit_to_send_seconds_count") - harness.Sum(m0, "rowcast_commit_to_send_seconds_count")
	srvSum := harness.Sum(m1, "rowcast_commit_to_send_seconds_sum") - harness.Sum(m0, "rowcast_commit_to_send_seconds_sum")

	var lat []float64
	for _, r := range recs {
		r.mu.Lock()
		for _, p := range r.pairs {
			if c := run.commit[p.seq]; c != 0 {
				lat = append(lat, float64(p.recv-run.start.UnixNano()-c)/1e6)
			}
		}
		r.mu.Unlock()
	}
	slices.Sort(lat)
	cl := run.commitLatencies()
	slices.Sort(cl)
	res := latencyResult{
		Rate:           pt.rate,
		MachineIdlePct: idle,
		Settled:        boolf(settled),
		WalsenderLagKB: maxLag / 1024,
		ServerMeanMs:   1000 * srvSum / math.Max(srvCount, 1),
		Clients:        float64(pt.clients),
		AchievedRate:   float64(committed) / max(run.span(), d).Seconds(),
		WritersBehind:  float64(run.behind.Load()),
		DeliveredPct:   100 * float64(delivered) / float64(max(expect, 1)),
		SlowCloses:     math.Max(float64(slow), slowMetric),
		Samples:        float64(len(lat)),
		P50Ms:          quantile(lat, 0.50),
		P95Ms:          quantile(lat, 0.95),
		P99Ms:          quantile(lat, 0.99),
		MaxMs:          quantile(lat, 1),
		CommitP50Ms:    quantile(cl, 0.50),
		CommitP99Ms:    quantile(cl, 0.99),
		RowcastCPUS:    cpu,
		RowcastCPUPct:  100 * cpu / time.Since(run.start).Seconds(),
	}
	b.logf("latency %g changes/s × %d clients: p50 %.2f p99 %.2f max %.1f ms, delivered %.1f%%, slow closes %d, rowcast commit→write mean %.2f ms, writers behind %d, walsender behind at most %.0f KiB, machine idle %.0f%%",
		pt.rate, pt.clients, res.P50Ms, res.P99Ms, res.MaxMs, res.DeliveredPct, int(res.SlowCloses), res.ServerMeanMs, run.behind.Load(), maxLag/1024, idle)
	return res, nil
}

// quantile of sorted values (nearest rank); NaN when empty.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// maxSendLag samples pg_current_wal_lsn() - sent_lsn of rowcast's
// walsender until ctx ends and returns the largest, in bytes.
func (b *bench) maxSendLag(ctx context.Context, every time.Duration) float64 {
	conn, err := b.connect(ctx)
	if err != nil {
		return math.NaN()
	}
	defer conn.Close(context.Background())
	var worst float64
	for ctx.Err() == nil {
		var lag *float64
		err := conn.QueryRow(ctx, `SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), sent_lsn))::float8
			FROM pg_stat_replication WHERE application_name = 'rowcast'`).Scan(&lag)
		if err == nil && lag != nil {
			worst = max(worst, *lag)
		}
		if sleepCtx(ctx, every) != nil {
			break
		}
	}
	return worst
}

// settle waits until rowcast has caught up: its walsender is less than
// 64 KiB behind and (with clients) no row event arrived for 300 ms. It
// gives up after max and reports whether it settled.
func (b *bench) settle(ctx context.Context, cs *clientSet, max time.Duration) bool {
	conn, err := b.connect(ctx)
	if err != nil {
		return false
	}
	defer conn.Close(context.Background())
	deadline := time.Now().Add(max)
	var rows int64 = -1
	quiet := time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var lag *float64
		_ = conn.QueryRow(ctx, `SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), sent_lsn))::float8
			FROM pg_stat_replication WHERE application_name = 'rowcast'`).Scan(&lag)
		caughtUp := lag != nil && *lag < 64<<10
		if cs != nil {
			if n := cs.rows(); n != rows {
				rows, quiet = n, time.Now()
			}
			caughtUp = caughtUp && time.Since(quiet) >= 300*time.Millisecond
		}
		if caughtUp {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}
