package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"rowcast/integration/harness"
	"strconv"
	"strings"
	"time"
)

// Scenario 1: capture throughput.
//
// rowcast runs with one connected client and is stopped (SIGSTOP) while a
// backlog of single-row changes is written; it keeps its replication slot
// or its LISTEN session, so the backlog waits in PostgreSQL. The time from
// SIGCONT until the client has every event gives changes/s.
//
// Limits, on the same backlog: pg_recvlogical draining a second slot
// created beside rowcast's before the writes (-f /dev/null, --endpos at the
// WAL position after the writes); for notify, a bare pgx LISTEN loop that
// was listening (and not reading) while the backlog was written.

// captureBacklog is one backlog drained by rowcast and by the limit, from
// the same backlog.
type captureBacklog struct {
	N            float64 `json:"n"`              // changes in the backlog
	WriteS       float64 `json:"write_s"`        // seconds to write it
	RowcastS     float64 `json:"rowcast_s"`      // seconds from SIGCONT to the client's last event
	RowcastRate  float64 `json:"rowcast_rate"`   // changes/s delivered by rowcast
	RowcastCPUS  float64 `json:"rowcast_cpu_s"`  // rowcast CPU seconds while draining
	LimitS       float64 `json:"limit_s"`        // seconds the limit took
	LimitRate    float64 `json:"limit_rate"`     // changes/s of the limit
	Ratio        float64 `json:"ratio"`          // limit seconds / rowcast seconds: rowcast's rate as a share of the limit's
	RowcastCPUUs float64 `json:"rowcast_cpu_us"` // rowcast CPU µs per change

	// Where the 2 cores went during the logical drains (0: not measured,
	// as in runs before these were added).
	WalsenderCPUUs   float64 `json:"walsender_cpu_us,omitempty"`       // rowcast's WAL sender, CPU µs per change
	ClientCPUUs      float64 `json:"client_cpu_us,omitempty"`          // the bench process (the WebSocket client), CPU µs per change
	BusyPct          float64 `json:"busy_pct,omitempty"`               // % of both cores busy during rowcast's drain
	LimitCPUUs       float64 `json:"limit_cpu_us,omitempty"`           // pg_recvlogical, CPU µs per change
	LimitBusyPct     float64 `json:"limit_busy_pct,omitempty"`         // % of both cores busy during pg_recvlogical's drain
	LimitWalsenderUs float64 `json:"limit_walsender_cpu_us,omitempty"` // the rest of that busy time, per change: its WAL sender and what else ran
}

// logicalDrainTarget judges captureBacklog.Ratio of logical capture:
// rowcast drains a backlog at least this share as fast as pg_recvlogical.
var logicalDrainTarget = atLeast(0.9)

// captureSustained is the NOTIFY capture under sustainedWriters pgbench
// writers, rowcast and the bare listener measured in turn.
type captureSustained struct {
	WriterTPS        float64 `json:"writer_tps"`        // pgbench TPS with rowcast listening
	Committed        float64 `json:"committed"`         // transactions committed then
	RowcastRate      float64 `json:"rowcast_rate"`      // events/s the client received while the writers ran
	RowcastDelivered float64 `json:"rowcast_delivered"` // events the client received in the end
	RowcastLagS      float64 `json:"rowcast_lag_s"`     // seconds after the writers stopped until the last event (NaN: not all arrived)
	RowcastCPUS      float64 `json:"rowcast_cpu_s"`     // rowcast CPU seconds
	LimitWriterTPS   float64 `json:"limit_writer_tps"`  // pgbench TPS with the bare listener
	LimitCommitted   float64 `json:"limit_committed"`   // transactions committed then
	LimitRate        float64 `json:"limit_rate"`        // notifications/s the bare listener received while the writers ran
	LimitLagS        float64 `json:"limit_lag_s"`       // as RowcastLagS, for the bare listener
	Ratio            float64 `json:"ratio"`             // RowcastRate / LimitRate
	KeepsUp          float64 `json:"keeps_up"`          // 1 when every event arrived within notifyCatchUp after the writers stopped
	RowcastCPUUs     float64 `json:"rowcast_cpu_us"`    // rowcast CPU µs per event
	RowcastSharePct  float64 `json:"rowcast_share_pct"` // % of the committed changes delivered while the writers ran
}

const (
	// sustainedWriters is the number of pgbench writers in the sustained
	// NOTIFY run.
	sustainedWriters = 16
	// sustainedKey is the sustained run's point among the capture points.
	sustainedKey = "notify/sustained"
	// The backlog shapes (backlogShape.key).
	shapeTxns   = "txns"
	shapeOneTxn = "onetxn"
)

// notifyCatchUp is how soon after the writers stop the last event must
// arrive for captureSustained.KeepsUp.
var notifyCatchUp = atMost(1) // seconds

// notifyKeepsUpTarget judges captureSustained.KeepsUp, whose median over
// runs of 0 or 1 is at least 0.5 when most runs kept up.
var notifyKeepsUpTarget = atLeast(0.5)

func captureKey(mode, shape string) string { return mode + "/" + shape }

func (b *bench) backlogSize() int {
	if b.opts.quick {
		return 20000
	}
	return 200000
}

// captureEnv: rowcast never pings during a run (it is stopped for longer
// than a ping interval) and the client's queue holds the whole backlog, so
// that what is measured is capture and delivery, not the slow-consumer
// policy.
func (b *bench) captureEnv() []string {
	return []string{"ROWCAST_PING_INTERVAL=30m", "ROWCAST_SEND_QUEUE=" + strconv.Itoa(2*b.backlogSize()+1024)}
}

func (b *bench) scenarioCapture(ctx context.Context) error {
	if err := b.captureLogical(ctx); err != nil {
		return fmt.Errorf("logical: %w", err)
	}
	if err := b.captureNotify(ctx); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}

type backlogShape struct {
	key, label string
	write      func(ctx context.Context, n int, base int64) error
}

func (b *bench) shapes() []backlogShape {
	return []backlogShape{
		{shapeTxns, "single-row transactions", func(ctx context.Context, n int, base int64) error {
			return b.writeBacklogTxns(ctx, n, 4, base)
		}},
		{shapeOneTxn, "one transaction", b.writeBacklogOneTxn},
	}
}

// captureProfileWindow is how long the CPU profile of a drain runs from
// SIGCONT (-cpuprofile): longer than a drain takes here, and a profile
// has no samples while rowcast is idle.
const captureProfileWindow = 15 * time.Second

func (b *bench) captureLogical(ctx context.Context) error {
	if err := b.resetTable(ctx); err != nil {
		return err
	}
	if err := b.useCapture(ctx, "logical"); err != nil {
		return err
	}
	_ = b.exec(ctx, `SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1`, recvSlot)
	if err := b.exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, recvSlot); err != nil {
		return err
	}
	defer b.exec(context.Background(), `SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1`, recvSlot)

	rc, err := b.startRowcast(ctx, "logical", b.captureEnv()...)
	if err != nil {
		return err
	}
	defer rc.stop()
	cs, err := dialClients(ctx, wsURL(rc.Addr), b.authHeader(), 1)
	if err != nil {
		return err
	}
	defer cs.close()
	if err := cs.waitFrames(ctx, 10*time.Second); err != nil {
		return err
	}
	n := b.backlogSize()
	for i, sh := range b.shapes() {
		base := int64(10_000_000 * (i + 1))
		rows0 := cs.rows()
		if err := rc.Pause(); err != nil {
			return err
		}
		w0 := time.Now()
		if err := sh.write(ctx, n, base); err != nil {
			rc.Resume()
			return err
		}
		writeSecs := time.Since(w0).Seconds()
		end, err := b.currentLSN(ctx)
		if err != nil {
			return err
		}
		walPID, err := b.walSenderPID(ctx)
		if err != nil {
			return err
		}
		cpu0, wal0, self0, stat0 := procCPU(rc.PID()), procCPU(walPID), procCPU(os.Getpid()), readCPUStat()
		t0 := time.Now()
		// Asked while rowcast is stopped, the profile starts with the drain.
		waitProfile := b.cpuProfile(ctx, rc, captureProfileWindow, "capture", "logical", sh.key)
		if err := rc.Resume(); err != nil {
			return err
		}
		got := cs.waitRows(ctx, rows0+int64(n), 5*time.Minute, 30*time.Second) - rows0
		waitProfile()
		if got < int64(n) {
			_, slow := cs.closedCount()
			return fmt.Errorf("%s: the client received %d of %d events (slow-consumer closes: %d)\n%s", sh.key, got, n, slow, rc.Log.String())
		}
		rowcastSecs := cs.lastRow().Sub(t0).Seconds()
		cpu := procCPU(rc.PID()) - cpu0
		walCPU, selfCPU, busy := procCPU(walPID)-wal0, procCPU(os.Getpid())-self0, 100-idlePct(stat0)

		recv, err := b.recvLogical(ctx, end)
		if err != nil {
			return err
		}
		recvSecs := recv.secs
		b.res.capture.add(captureKey("logical", sh.key), map[string]string{"mode": "logical", "backlog": fmt.Sprintf("%d changes, %s", n, sh.label), "limit": "pg_recvlogical"}, captureBacklog{
			N:            float64(n),
			WriteS:       writeSecs,
			RowcastS:     rowcastSecs,
			RowcastRate:  float64(n) / rowcastSecs,
			RowcastCPUS:  cpu,
			LimitS:       recvSecs,
			LimitRate:    float64(n) / recvSecs,
			Ratio:        recvSecs / rowcastSecs,
			RowcastCPUUs: cpu / float64(n) * 1e6,

			WalsenderCPUUs:   walCPU / float64(n) * 1e6,
			ClientCPUUs:      selfCPU / float64(n) * 1e6,
			BusyPct:          busy,
			LimitCPUUs:       recv.cpu / float64(n) * 1e6,
			LimitBusyPct:     recv.busyPct,
			LimitWalsenderUs: (recv.busySecs - recv.cpu) / float64(n) * 1e6,
		})
		b.logf("capture logical %s: rowcast %.0f/s, pg_recvlogical %.0f/s", sh.key, float64(n)/rowcastSecs, float64(n)/recvSecs)
	}
	return nil
}

// recvDrain is pg_recvlogical's drain: its wall time (process start to
// exit), its CPU seconds, and the share of both cores busy meanwhile.
type recvDrain struct{ secs, cpu, busyPct, busySecs float64 }

// recvLogical runs pg_recvlogical on the second slot until end.
func (b *bench) recvLogical(ctx context.Context, end string) (recvDrain, error) {
	args := append(b.pgArgs(), "-d", benchDB, "--start", "-S", recvSlot,
		"-o", "proto_version=1", "-o", "publication_names=rowcast",
		"-f", "/dev/null", "-E", end, "--no-loop")
	stat0 := readCPUStat()
	t0 := time.Now()
	p, err := b.procs.Start(b.pinned(1, b.pgTool("pg_recvlogical"), args...), nil)
	if err != nil {
		return recvDrain{}, err
	}
	bound := time.NewTimer(5 * time.Minute)
	defer bound.Stop()
	select {
	case <-p.Done():
		if err := p.Err(); err != nil {
			return recvDrain{}, fmt.Errorf("pg_recvlogical: %w\n%s", err, p.Log)
		}
	case <-bound.C:
		p.Kill()
		return recvDrain{}, fmt.Errorf("pg_recvlogical did not reach %s within 5 minutes", end)
	case <-ctx.Done():
		p.Kill()
		return recvDrain{}, ctx.Err()
	}
	d := recvDrain{secs: time.Since(t0).Seconds(), busyPct: 100 - idlePct(stat0), busySecs: busySecs(stat0)}
	if ps := p.Cmd.ProcessState; ps != nil {
		d.cpu = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	// Make sure the slot starts after this backlog next time.
	conn, err := b.connect(ctx)
	if err != nil {
		return recvDrain{}, err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, `SELECT pg_replication_slot_advance($1, $2::pg_lsn) FROM pg_replication_slots
		WHERE slot_name = $1 AND confirmed_flush_lsn < $2::pg_lsn`, recvSlot, end)
	return d, err
}

// walSenderPID is the process of the WAL sender streaming to rowcast
// (the active slot other than pg_recvlogical's).
func (b *bench) walSenderPID(ctx context.Context) (int, error) {
	conn, err := b.connect(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var pid int
	err = conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE active AND slot_name <> $1 LIMIT 1`, recvSlot).Scan(&pid)
	if err != nil {
		return 0, fmt.Errorf("finding rowcast's WAL sender: %w", err)
	}
	return pid, nil
}

func (b *bench) captureNotify(ctx context.Context) error {
	if err := b.resetTable(ctx); err != nil {
		return err
	}
	if err := b.useCapture(ctx, "notify"); err != nil {
		return err
	}
	rc, err := b.startRowcast(ctx, "notify", b.captureEnv()...)
	if err != nil {
		return err
	}
	defer rc.stop()
	cs, err := dialClients(ctx, wsURL(rc.Addr), b.authHeader(), 1)
	if err != nil {
		return err
	}
	defer cs.close()
	if err := cs.waitFrames(ctx, 10*time.Second); err != nil {
		return err
	}
	bare, err := b.newBareListener(ctx, "rowcast")
	if err != nil {
		return err
	}
	defer func() { bare.close() }()

	n := b.backlogSize()
	for i, sh := range b.shapes() {
		base := int64(10_000_000 * (i + 3))
		rows0 := cs.rows()
		if err := rc.Pause(); err != nil {
			return err
		}
		w0 := time.Now()
		if err := sh.write(ctx, n, base); err != nil {
			rc.Resume()
			return err
		}
		writeSecs := time.Since(w0).Seconds()

		// The bare listener first, while rowcast is still stopped.
		recv0 := bare.received.Load()
		t0 := time.Now()
		if err := bare.receive(ctx, recv0+int64(n), 30*time.Second); err != nil {
			rc.Resume()
			return fmt.Errorf("bare listener: %w", err)
		}
		bareSecs := time.Since(t0).Seconds()

		cpu0 := procCPU(rc.PID())
		t0 = time.Now()
		// Asked while rowcast is stopped, the profile starts with the drain.
		waitProfile := b.cpuProfile(ctx, rc, captureProfileWindow, "capture", "notify", sh.key)
		if err := rc.Resume(); err != nil {
			return err
		}
		got := cs.waitRows(ctx, rows0+int64(n), 5*time.Minute, 30*time.Second) - rows0
		waitProfile()
		if got < int64(n) {
			_, slow := cs.closedCount()
			return fmt.Errorf("%s: the client received %d of %d events (slow-consumer closes: %d)\n%s", sh.key, got, n, slow, rc.Log.String())
		}
		rowcastSecs := cs.lastRow().Sub(t0).Seconds()
		cpu := procCPU(rc.PID()) - cpu0
		b.res.capture.add(captureKey("notify", sh.key), map[string]string{"mode": "notify", "backlog": fmt.Sprintf("%d changes, %s", n, sh.label), "limit": "bare pgx LISTEN loop"}, captureBacklog{
			N:            float64(n),
			WriteS:       writeSecs,
			RowcastS:     rowcastSecs,
			RowcastRate:  float64(n) / rowcastSecs,
			RowcastCPUS:  cpu,
			LimitS:       bareSecs,
			LimitRate:    float64(n) / bareSecs,
			Ratio:        bareSecs / rowcastSecs,
			RowcastCPUUs: cpu / float64(n) * 1e6,
		})
		b.logf("capture notify %s: rowcast %.0f/s, bare listener %.0f/s", sh.key, float64(n)/rowcastSecs, float64(n)/bareSecs)
	}

	// Sustained: sustainedWriters pgbench writers inserting as fast as they
	// can with the trigger installed; rowcast (with one client) against the
	// bare listener, each alone.
	secs := b.sustainedSecs()
	script, err := b.pgbenchScript("insert")
	if err != nil {
		return err
	}
	rows0 := cs.rows()
	cpu0 := procCPU(rc.PID())
	pb, err := b.pgbench(ctx, script, sustainedWriters, secs)
	if err != nil {
		return err
	}
	atEnd := cs.rows() - rows0
	tEnd := time.Now()
	got := cs.waitRows(ctx, rows0+pb.processed, 60*time.Second, 10*time.Second) - rows0
	// Seconds after the writers stopped until the last event arrived (0 if
	// it arrived before), NaN if not all arrived.
	lag := max(0, cs.lastRow().Sub(tEnd).Seconds())
	if got < pb.processed {
		lag = math.NaN()
	}
	rowcastCPU := procCPU(rc.PID()) - cpu0
	rc.stop()
	cs.close()

	// The bare listener alone.
	bare.close()
	if bare, err = b.newBareListener(ctx, "rowcast"); err != nil {
		return err
	}
	bctx, cancel := context.WithCancel(ctx)
	bdone := make(chan error, 1)
	go func() { bdone <- bare.receive(bctx, 1<<62, time.Hour) }()
	pb2, err := b.pgbench(ctx, script, sustainedWriters, secs)
	if err != nil {
		cancel()
		<-bdone
		return err
	}
	bareAtEnd := bare.received.Load()
	tEnd2 := time.Now()
	for bare.received.Load() < pb2.processed && time.Since(tEnd2) < 60*time.Second {
		time.Sleep(5 * time.Millisecond)
	}
	bareLag := max(0, time.Unix(0, bare.last.Load()).Sub(tEnd2).Seconds())
	if bare.received.Load() < pb2.processed {
		bareLag = math.NaN()
	}
	cancel()
	<-bdone

	b.res.sustained.add(sustainedKey, map[string]string{"mode": "notify", "backlog": fmt.Sprintf("sustained, pgbench -c %d single-row INSERTs", sustainedWriters), "limit": "bare pgx LISTEN loop"}, captureSustained{
		WriterTPS:        pb.tps,
		Committed:        float64(pb.processed),
		RowcastRate:      float64(atEnd) / pb.seconds,
		RowcastDelivered: float64(got),
		RowcastLagS:      lag,
		RowcastCPUS:      rowcastCPU,
		LimitWriterTPS:   pb2.tps,
		LimitCommitted:   float64(pb2.processed),
		LimitRate:        float64(bareAtEnd) / pb2.seconds,
		LimitLagS:        bareLag,
		Ratio:            (float64(atEnd) / pb.seconds) / (float64(bareAtEnd) / pb2.seconds),
		KeepsUp:          boolf(notifyCatchUp.met(lag) && got >= pb.processed),
		RowcastCPUUs:     rowcastCPU / float64(max(got, 1)) * 1e6,
		RowcastSharePct:  100 * float64(atEnd) / float64(max(pb.processed, 1)),
	})
	b.logf("capture notify sustained: writers %.0f tps, rowcast delivered %.0f/s (lag %.2fs), bare listener %.0f/s", pb.tps, float64(atEnd)/pb.seconds, lag, float64(bareAtEnd)/pb2.seconds)
	return nil
}

// pgbenchResult is what pgbench reports.
type pgbenchResult struct {
	tps       float64
	processed int64
	failed    int64
	seconds   float64
}

// pgbench runs a custom script with -n -M prepared -j 2 (unpinned).
func (b *bench) pgbench(ctx context.Context, script string, clients, secs int) (pgbenchResult, error) {
	jobs := min(2, clients)
	args := append(b.pgArgs(), "-n", "-M", "prepared", "-f", script, "-c", strconv.Itoa(clients), "-j", strconv.Itoa(jobs), "-T", strconv.Itoa(secs), benchDB)
	t0 := time.Now()
	// Killed with ctx, so that an interrupted run does not wait for -T.
	var p *harness.Process
	err := b.everyCore(func() (err error) {
		p, err = b.procs.Start(exec.CommandContext(ctx, b.pgTool("pgbench"), args...), nil)
		return err
	})
	if err != nil {
		return pgbenchResult{}, err
	}
	err = p.Err()
	out := p.Log.String()
	res := pgbenchResult{seconds: time.Since(t0).Seconds()}
	if err != nil {
		return res, fmt.Errorf("pgbench: %w\n%s", err, out)
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "tps = "):
			f := strings.Fields(line)
			res.tps, _ = strconv.ParseFloat(f[2], 64)
		case strings.HasPrefix(line, "number of transactions actually processed:"):
			f := strings.Fields(strings.TrimPrefix(line, "number of transactions actually processed:"))
			if len(f) > 0 {
				res.processed, _ = strconv.ParseInt(strings.Split(f[0], "/")[0], 10, 64)
			}
		case strings.HasPrefix(line, "number of failed transactions:"):
			f := strings.Fields(strings.TrimPrefix(line, "number of failed transactions:"))
			if len(f) > 0 {
				res.failed, _ = strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	if res.tps == 0 {
		return res, fmt.Errorf("pgbench: no tps in output:\n%s", out)
	}
	// The run lasted -T seconds of transactions; rates use that.
	res.seconds = float64(secs)
	return res, nil
}

// sustainedSecs is the length of the sustained NOTIFY run.
func (b *bench) sustainedSecs() int {
	if b.opts.quick {
		return 3
	}
	return 8
}
