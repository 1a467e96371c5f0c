package main

import (
	"context"
	"fmt"
	"math"
	"time"

	"rowcast/integration/harness"
)

// Scenario 3: fan-out. N connected clients; the change rate is ramped
// (doubling, then one step halfway in between the last pass and the first
// failure) and the highest step at which no client fell behind is kept:
// no slow-consumer close and every client received every event within a
// drain period after the step. The same ramp runs against the bare
// gorilla/websocket broadcast server with the same clients and the same
// frame bytes.

// fanoutResult is the highest passing step of rowcast and of the bare
// server with the same clients.
type fanoutResult struct {
	Clients           float64 `json:"clients"`             // connected clients
	FrameBytes        float64 `json:"frame_bytes"`         // bytes of the bare server's frame
	RowcastRate       float64 `json:"rowcast_rate"`        // changes/s at rowcast's highest passing step
	RowcastDeliveries float64 `json:"rowcast_deliveries"`  // RowcastRate × clients
	RowcastMeasured   float64 `json:"rowcast_measured"`    // deliveries/s counted at that step
	RowcastCPUPerM    float64 `json:"rowcast_cpu_per_m"`   // rowcast CPU seconds per million deliveries
	RowcastCPUPct     float64 `json:"rowcast_cpu_pct"`     // rowcast CPU, % of a core
	RowcastLoadPct    float64 `json:"rowcast_load_pct"`    // the bench process's CPU, % of a core
	RowcastSteps      float64 `json:"rowcast_steps"`       // steps of rowcast's ramp
	LimitRate         float64 `json:"limit_rate"`          // as the Rowcast fields, for the bare server
	LimitDeliveries   float64 `json:"limit_deliveries"`    //
	LimitMeasured     float64 `json:"limit_measured"`      //
	LimitCPUPerM      float64 `json:"limit_cpu_per_m"`     //
	LimitCPUPct       float64 `json:"limit_cpu_pct"`       //
	LimitLoadPct      float64 `json:"limit_load_pct"`      //
	Ratio             float64 `json:"ratio"`               // RowcastRate / LimitRate, in the same run
	RowcastFailRate   float64 `json:"rowcast_fail_rate"`   // changes/s of rowcast's first failing step (NaN: none)
	LimitFailRate     float64 `json:"limit_fail_rate"`     // as RowcastFailRate, for the bare server
	RowcastFailClosed float64 `json:"rowcast_fail_closed"` // clients closed in rowcast's first failing step
	// The same ramp on rowcast's Socket.IO WebSocket transport, same
	// clients otherwise (joined to the main namespace).
	SIORate       float64 `json:"sio_rate"`       // changes/s at the highest passing step
	SIODeliveries float64 `json:"sio_deliveries"` // SIORate × clients
	SIOCPUPerM    float64 `json:"sio_cpu_per_m"`  // rowcast CPU seconds per million deliveries
	SIOCPURatio   float64 `json:"sio_cpu_ratio"`  // SIOCPUPerM / RowcastCPUPerM, in the same run
	SIOFailRate   float64 `json:"sio_fail_rate"`  // changes/s of the first failing step (NaN: none)
}

// The fan-out targets, at fanoutTargetClients clients: fanoutResult.Ratio
// and RowcastCPUPerM within these bounds.
var (
	fanoutTargetClients = 10000
	fanoutRatioTarget   = atLeast(0.8)
	fanoutCPUTarget     = atMost(4.5) // CPU seconds per million deliveries
)

func fanoutKey(clients int) string { return itoa(clients) }

// fanoutStep is one step of a ramp, as recorded.
type fanoutStep struct {
	Rate           float64 `json:"rate"`             // changes/s offered
	Sent           float64 `json:"sent"`             // changes sent
	Delivered      float64 `json:"delivered"`        // events the clients received
	Expected       float64 `json:"expected"`         // sent × clients
	DeliveriesPerS float64 `json:"deliveries_per_s"` // deliveries/s over the step
	CPUPerM        float64 `json:"cpu_per_m"`        // server CPU seconds per million deliveries
	CPUPct         float64 `json:"cpu_pct"`          // server CPU, % of a core
	LoadCPUPct     float64 `json:"load_cpu_pct"`     // the bench process's CPU, % of a core
	MachineIdlePct float64 `json:"machine_idle_pct"` // % of all cores idle
	Closed         float64 `json:"closed"`           // clients closed during the step
	Drops          float64 `json:"drops"`            // clients the server dropped for falling behind
	Pass           float64 `json:"pass"`             // 1 when the step passed
}

func (b *bench) fanoutSizes() []int {
	if b.opts.quick {
		return []int{fanoutTargetClients}
	}
	return []int{1000, fanoutTargetClients}
}

func (b *bench) fanoutStep() time.Duration {
	if b.opts.quick {
		return 2 * time.Second
	}
	return 3 * time.Second
}

// fanTarget is rowcast or the bare server.
type fanTarget interface {
	pid() int
	// drive sends events at rate for d and returns how many were sent.
	drive(ctx context.Context, rate float64, d time.Duration) (int64, error)
	// drops is the server's count of clients dropped for falling behind.
	drops() float64
	// ready waits until n clients are subscribed.
	ready(ctx context.Context, cs *clientSet, n int) error
}

type rowcastTarget struct {
	rc *rowcastProc
	w  *rateWriters
	// transport names the clients' transport in profile names.
	transport string
}

func (t *rowcastTarget) pid() int { return t.rc.PID() }
func (t *rowcastTarget) drive(ctx context.Context, rate float64, d time.Duration) (int64, error) {
	run := t.w.run(ctx, rate, d)
	return run.committed(), run.err()
}
func (t *rowcastTarget) drops() float64 {
	m, _ := t.rc.metrics()
	return harness.Sum(m, "rowcast_slow_consumer_disconnects_total")
}
func (t *rowcastTarget) ready(ctx context.Context, cs *clientSet, n int) error {
	return cs.waitFrames(ctx, 60*time.Second)
}

type bareTarget struct {
	p     *bareProc
	frame []byte
}

func (t *bareTarget) pid() int { return t.p.PID() }
func (t *bareTarget) drive(ctx context.Context, rate float64, d time.Duration) (int64, error) {
	return t.p.burst(ctx, t.frame, rate, d)
}
func (t *bareTarget) drops() float64 {
	st, _ := t.p.stats()
	return float64(st.Drops)
}
func (t *bareTarget) ready(ctx context.Context, cs *clientSet, n int) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := t.p.stats()
		if err == nil && st.Clients >= int64(n) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bare server has %d of %d clients", st.Clients, n)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

type fanStepResult struct {
	rate, sent, delivered, expect float64
	deliveriesPerSec              float64
	cpuPerMillion, cpuPct         float64
	loadCPUPct, idlePct           float64
	closed, drops                 float64
	pass                          bool
}

func (b *bench) scenarioFanout(ctx context.Context) error {
	if err := b.resetTable(ctx); err != nil {
		return err
	}
	if err := b.useCapture(ctx, "logical"); err != nil {
		return err
	}
	for _, n := range b.fanoutSizes() {
		// rowcast.
		rc, err := b.startRowcast(ctx, "logical")
		if err != nil {
			return err
		}
		w, err := b.newRateWriters(ctx, 8)
		if err != nil {
			rc.stop()
			return err
		}
		rt := &rowcastTarget{rc: rc, w: w, transport: "ws"}
		rbest, rsteps, sample, err := b.ramp(ctx, rt, wsURL(rc.Addr), b.authHeader(), n)
		if err != nil {
			w.close()
			rc.stop()
			return fmt.Errorf("rowcast, %d clients: %w", n, err)
		}
		// The same rowcast, its Socket.IO WebSocket transport.
		rt.transport = "socketio"
		sbest, ssteps, _, err := b.ramp(ctx, rt, sioURL(rc.Addr), b.authHeader(), n)
		w.close()
		rc.stop()
		if err != nil {
			return fmt.Errorf("rowcast socket.io, %d clients: %w", n, err)
		}
		if sample != nil {
			b.sampleFrame = sample
		}
		// The bare server, same clients, same frame.
		frame := b.sampleFrame
		if frame == nil {
			frame = syntheticFrame()
		}
		bp, err := b.startBare(ctx)
		if err != nil {
			return err
		}
		bbest, bsteps, _, err := b.ramp(ctx, &bareTarget{p: bp, frame: frame}, wsURL(bp.addr), nil, n)
		bp.stop()
		if err != nil {
			return fmt.Errorf("bare server, %d clients: %w", n, err)
		}
		b.res.fanout.add(fanoutKey(n), nil, fanoutResult{
			Clients:           float64(n),
			FrameBytes:        float64(len(frame)),
			RowcastRate:       rbest.rate,
			RowcastDeliveries: rbest.rate * float64(n),
			RowcastMeasured:   rbest.deliveriesPerSec,
			RowcastCPUPerM:    rbest.cpuPerMillion,
			RowcastCPUPct:     rbest.cpuPct,
			RowcastLoadPct:    rbest.loadCPUPct,
			RowcastSteps:      float64(len(rsteps)),
			LimitRate:         bbest.rate,
			LimitDeliveries:   bbest.rate * float64(n),
			LimitMeasured:     bbest.deliveriesPerSec,
			LimitCPUPerM:      bbest.cpuPerMillion,
			LimitCPUPct:       bbest.cpuPct,
			LimitLoadPct:      bbest.loadCPUPct,
			Ratio:             rbest.rate / bbest.rate,
			RowcastFailRate:   firstFail(rsteps),
			LimitFailRate:     firstFail(bsteps),
			RowcastFailClosed: failClosed(rsteps),
			SIORate:           sbest.rate,
			SIODeliveries:     sbest.rate * float64(n),
			SIOCPUPerM:        sbest.cpuPerMillion,
			SIOCPURatio:       sbest.cpuPerMillion / rbest.cpuPerMillion,
			SIOFailRate:       firstFail(ssteps),
		})
		for i, st := range rsteps {
			b.res.fanoutSteps.add(fmt.Sprintf("rowcast/%d/%d", n, i), nil, st.record())
		}
		for i, st := range ssteps {
			b.res.fanoutSteps.add(fmt.Sprintf("socketio/%d/%d", n, i), nil, st.record())
		}
		for i, st := range bsteps {
			b.res.fanoutSteps.add(fmt.Sprintf("bare/%d/%d", n, i), nil, st.record())
		}
		b.logf("fanout %d clients: rowcast %.0f deliveries/s (%.2f CPU-s/M), socket.io %.0f deliveries/s (%.2f CPU-s/M), bare %.0f deliveries/s (%.2f CPU-s/M)",
			n, rbest.rate*float64(n), rbest.cpuPerMillion, sbest.rate*float64(n), sbest.cpuPerMillion, bbest.rate*float64(n), bbest.cpuPerMillion)
	}
	return nil
}

func (s fanStepResult) record() fanoutStep {
	return fanoutStep{
		Rate: s.rate, Sent: s.sent, Delivered: s.delivered, Expected: s.expect,
		DeliveriesPerS: s.deliveriesPerSec, CPUPerM: s.cpuPerMillion, CPUPct: s.cpuPct,
		LoadCPUPct: s.loadCPUPct, MachineIdlePct: s.idlePct, Closed: s.closed, Drops: s.drops, Pass: boolf(s.pass),
	}
}

func firstFail(steps []fanStepResult) float64 {
	for _, s := range steps {
		if !s.pass {
			return s.rate
		}
	}
	return math.NaN()
}

func failClosed(steps []fanStepResult) float64 {
	for _, s := range steps {
		if !s.pass {
			return s.closed
		}
	}
	return 0
}

// ramp connects n clients and raises the rate until a step fails. It
// returns the best passing step, every step, and a ticket:updated frame a
// client received (nil if none).
func (b *bench) ramp(ctx context.Context, t fanTarget, url string, h map[string][]string, n int) (best fanStepResult, steps []fanStepResult, sample []byte, err error) {
	cs, err := dialClients(ctx, url, h, n)
	if err != nil {
		return best, nil, nil, err
	}
	defer cs.close()
	if err := t.ready(ctx, cs, n); err != nil {
		return best, nil, nil, err
	}
	rate := 25000 / float64(n)
	// Double until a step fails, then bisect (geometrically) between the
	// last pass and the first failure.
	var failRate float64
	downs := 0
	bisections := 2
	if b.opts.quick {
		bisections = 1
	}
	for i := 0; i < 10+bisections; i++ {
		if closed, _ := cs.closedCount(); closed > 0 {
			if err := cs.fill(ctx); err != nil {
				return best, steps, sample, err
			}
			if err := t.ready(ctx, cs, n); err != nil {
				return best, steps, sample, err
			}
		}
		st, err := b.fanStep(ctx, t, cs, rate)
		if err != nil {
			return best, steps, sample, err
		}
		steps = append(steps, st)
		b.debugf("  step %.1f/s × %d: %.0f deliveries/s, %.1f%% delivered, closed %g, server CPU %.0f%%, load CPU %.0f%%, machine idle %.0f%%, pass %v",
			rate, n, st.deliveriesPerSec, 100*st.delivered/math.Max(st.expect, 1), st.closed, st.cpuPct, st.loadCPUPct, st.idlePct, st.pass)
		if sample == nil {
			for _, c := range cs.clients {
				if c == nil {
					continue
				}
				c.sampleMu.Lock()
				sample = c.sampleRow
				c.sampleMu.Unlock()
				if sample != nil {
					break
				}
			}
		}
		if st.pass && st.rate > best.rate {
			best = st
		}
		if !st.pass && (failRate == 0 || st.rate < failRate) {
			failRate = st.rate
		}
		switch {
		case failRate == 0:
			rate *= 2
			if rate*float64(n) > 8e6 {
				return best, steps, sample, nil
			}
		case best.rate == 0:
			// Even the first step failed (a noisy moment, or a slow
			// machine): go down, at most three times.
			if downs++; downs > 3 {
				return best, steps, sample, nil
			}
			rate /= 2
			failRate = 0
		case bisections == 0:
			return best, steps, sample, nil
		default:
			bisections--
			rate = math.Sqrt(best.rate * failRate)
		}
	}
	return best, steps, sample, nil
}

// fanGrace is how long after a step's end the last delivery may come for
// the step to pass.
const fanGrace = time.Second

func (b *bench) fanStep(ctx context.Context, t fanTarget, cs *clientSet, rate float64) (fanStepResult, error) {
	d := b.fanoutStep()
	st := fanStepResult{rate: rate}
	closed0, _ := cs.closedCount()
	drops0 := t.drops()
	rows0 := cs.rows()
	cpu0 := procCPU(t.pid())
	self0 := selfCPU()
	idle0 := readCPUStat()
	waitProfile := func() {}
	if rt, ok := t.(*rowcastTarget); ok {
		waitProfile = b.cpuProfile(ctx, rt.rc, d, "fanout", rt.transport, itoa(len(cs.clients)), fmt.Sprintf("%.1f", rate))
	}
	t0 := time.Now()
	sent, err := t.drive(ctx, rate, d)
	waitProfile()
	if err != nil {
		return st, err
	}
	driven := time.Since(t0)
	st.idlePct = idlePct(idle0)
	st.sent = float64(sent)
	st.expect = float64(sent * int64(len(cs.clients)))
	got := cs.waitRows(ctx, rows0+sent*int64(len(cs.clients)), max(d+fanGrace-time.Since(t0), 100*time.Millisecond), 2*time.Second)
	inTime := got-rows0 >= sent*int64(len(cs.clients)) && !cs.lastRow().After(t0.Add(d+fanGrace))
	st.delivered = float64(cs.rows() - rows0)
	elapsed := max(cs.lastRow().Sub(t0).Seconds(), d.Seconds())
	wall := time.Since(t0).Seconds()
	cpu := procCPU(t.pid()) - cpu0
	st.loadCPUPct = 100 * (selfCPU() - self0) / wall
	st.cpuPct = 100 * cpu / wall
	st.deliveriesPerSec = st.delivered / elapsed
	st.cpuPerMillion = cpu / math.Max(st.delivered, 1) * 1e6
	closed1, _ := cs.closedCount()
	st.closed = float64(closed1 - closed0)
	st.drops = t.drops() - drops0
	offered := math.Round(rate * d.Seconds())
	st.pass = inTime && st.closed == 0 && st.drops == 0 && st.sent >= offered && driven <= d+fanGrace
	if !st.pass {
		// Not counted: let a lagging server empty its queues before the
		// next step.
		cs.waitRows(ctx, rows0+sent*int64(len(cs.clients)), 6*time.Second, time.Second)
	}
	return st, nil
}

// syntheticFrame is a ticket:updated frame of the reference ticket's size,
// for when rowcast's own frame is not at hand.
func syntheticFrame() []byte {
	return []byte(`{"id":"0/1A2B3C4D:0","event":"ticket:updated","data":{"ticket":{"id":1234,"title":"#1000123 ` + refTitle +
		`","description":"` + refDescription + `","status":"open","priority":"medium","category":"hardware","requester_email":"user123@example.com","assignee_email":"` + refAssignee +
		`","created_at":"2025-01-01T10:00:00.123456+00:00","updated_at":"2025-01-01T10:00:00.123456+00:00"},"timestamp":"2025-01-01T10:00:00.123Z"}}`)
}
