package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"rowcast/integration/natscluster"
)

// Scenario 7: cluster mode (ROWCAST_NATS_URL) beside a single node, in the
// same run: commit → client latency and rowcast's CPU per change, at the
// latency scenario's method, first with rowcast alone, then with the same
// rowcast as the one node of a cluster whose stream lives on a 3-server
// NATS JetStream cluster (3 replicas). The NATS servers run inside the
// bench process (core 0 when pinned, like the clients and writers), so
// rowcast's CPU is its own: capture, publish, consume and fan-out.

// clusterResult compares the two at one point.
type clusterResult struct {
	Rate             float64 `json:"rate"`              // changes/s offered
	Clients          float64 `json:"clients"`           // connected clients
	SingleP50Ms      float64 `json:"single_p50_ms"`     // commit → client, single node
	SingleP99Ms      float64 `json:"single_p99_ms"`     //
	ClusterP50Ms     float64 `json:"cluster_p50_ms"`    // commit → client through JetStream
	ClusterP99Ms     float64 `json:"cluster_p99_ms"`    //
	AddedP50Ms       float64 `json:"added_p50_ms"`      // cluster p50 − single p50
	SingleCPUUs      float64 `json:"single_cpu_us"`     // rowcast CPU µs per change, single node
	ClusterCPUUs     float64 `json:"cluster_cpu_us"`    // the capturing node's CPU µs per change
	CPURatio         float64 `json:"cpu_ratio"`         // cluster / single CPU per change
	SingleDelivered  float64 `json:"single_delivered"`  // % delivered in time
	ClusterDelivered float64 `json:"cluster_delivered"` // % delivered in time
	PublishMeanMs    float64 `json:"publish_mean_ms"`   // rowcast's publish → ack mean, ms
	AchievedRate     float64 `json:"achieved_rate"`     // changes/s committed (cluster)
	SingleRate       float64 `json:"single_achieved"`   // changes/s committed (single)
	Replicas         float64 `json:"stream_replicas"`   // the stream's replicas
	NATSServers      float64 `json:"nats_servers"`      // servers of the NATS cluster
	Settled          float64 `json:"settled"`           // 1 when both had caught up before
	// A backlog drained (capture at full speed, see clusterDrain).
	DrainN            float64 `json:"drain_n"`              // single-row transactions in the backlog
	SingleDrainRate   float64 `json:"single_drain_rate"`    // changes/s to the client, single node
	ClusterDrainRate  float64 `json:"cluster_drain_rate"`   // changes/s to the client through JetStream
	SingleDrainCPUUs  float64 `json:"single_drain_cpu_us"`  // rowcast CPU µs per change, single node
	ClusterDrainCPUUs float64 `json:"cluster_drain_cpu_us"` // the capturing node's CPU µs per change
	DrainCPURatio     float64 `json:"drain_cpu_ratio"`      // cluster / single
}

// drainResult is one side's drain.
type drainResult struct{ rate, cpuUs float64 }

// The cluster targets: the added p50 at clusterPoint, and the capturing
// node's CPU per captured change (a backlog drained, as the capture
// scenario measures it) as a multiple of a single node's. The CPU per
// change at clusterPoint is reported beside it: at one change per
// transaction and per millisecond, each change is its own publish and
// acknowledgement (a write and a read on the NATS connection), which a
// drain batches.
var (
	clusterPoint          = latencyPoint{rate: 1000, clients: 1, dur: 15 * time.Second}
	clusterAddedP50Target = atMost(2)   // ms
	clusterCPUTarget      = atMost(1.5) // × single node
)

func (b *bench) scenarioCluster(ctx context.Context) error {
	pt := clusterPoint
	single, sdrain, ssettled, _, err := b.clusterSide(ctx, pt, nil)
	if err != nil {
		return fmt.Errorf("single node: %w", err)
	}
	dir, err := os.MkdirTemp(b.tmp, "nats-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(filepath.Clean(dir))
	nc, err := natscluster.Start(dir, 3)
	if err != nil {
		return err
	}
	defer nc.Stop()
	env := []string{"ROWCAST_NATS_URL=" + nc.URLs(), "ROWCAST_NATS_REPLICAS=3", "ROWCAST_NATS_STREAM=BENCH"}
	clus, cdrain, csettled, publish, err := b.clusterSide(ctx, pt, env)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	perChange := func(r latencyResult) float64 {
		return 1e6 * r.RowcastCPUS / (r.AchievedRate * b.duration(pt).Seconds())
	}
	res := clusterResult{
		Rate: pt.rate, Clients: float64(pt.clients),
		SingleP50Ms: single.P50Ms, SingleP99Ms: single.P99Ms,
		ClusterP50Ms: clus.P50Ms, ClusterP99Ms: clus.P99Ms,
		AddedP50Ms:  clus.P50Ms - single.P50Ms,
		SingleCPUUs: perChange(single), ClusterCPUUs: perChange(clus),
		SingleDelivered: single.DeliveredPct, ClusterDelivered: clus.DeliveredPct,
		PublishMeanMs: publish, AchievedRate: clus.AchievedRate, SingleRate: single.AchievedRate,
		Replicas: 3, NATSServers: 3, Settled: boolf(ssettled && csettled),
	}
	res.CPURatio = res.ClusterCPUUs / res.SingleCPUUs
	res.DrainN = float64(b.clusterBacklog())
	res.SingleDrainRate, res.SingleDrainCPUUs = sdrain.rate, sdrain.cpuUs
	res.ClusterDrainRate, res.ClusterDrainCPUUs = cdrain.rate, cdrain.cpuUs
	res.DrainCPURatio = cdrain.cpuUs / sdrain.cpuUs
	b.res.cluster.add(pt.key(), nil, res)
	b.logf("cluster %g changes/s × %d clients: p50 %.2f ms single, %.2f ms cluster (+%.2f); CPU per change %.1f µs single, %.1f µs cluster (%.2f×); publish mean %.2f ms",
		pt.rate, pt.clients, res.SingleP50Ms, res.ClusterP50Ms, res.AddedP50Ms, res.SingleCPUUs, res.ClusterCPUUs, res.CPURatio, publish)
	b.logf("cluster drain of %d: %.0f changes/s at %.1f µs/change single, %.0f changes/s at %.1f µs/change cluster (%.2f×)",
		b.clusterBacklog(), sdrain.rate, sdrain.cpuUs, cdrain.rate, cdrain.cpuUs, res.DrainCPURatio)
	return nil
}

// clusterSide measures one side: rowcast with env (nil: alone).
func (b *bench) clusterSide(ctx context.Context, pt latencyPoint, env []string) (res latencyResult, drain drainResult, settled bool, publishMs float64, err error) {
	settled, publishMs, err = b.clusterSideRun(ctx, pt, env, &res, &drain)
	return res, drain, settled, publishMs, err
}

func (b *bench) clusterSideRun(ctx context.Context, pt latencyPoint, env []string, res *latencyResult, drain *drainResult) (settled bool, publishMs float64, err error) {
	if err := b.resetTable(ctx); err != nil {
		return false, 0, err
	}
	if err := b.useCapture(ctx, "logical"); err != nil {
		return false, 0, err
	}
	side := "single"
	if env != nil {
		side = "cluster"
	}
	rc, err := b.startRowcast(ctx, "logical", append(b.captureEnv(), env...)...)
	if err != nil {
		return false, 0, err
	}
	defer rc.stop()
	w, err := b.newRateWriters(ctx, 8)
	if err != nil {
		return false, 0, err
	}
	defer w.close()
	w.run(ctx, 200, 500*time.Millisecond)
	cs, err := dialClients(ctx, wsURL(rc.Addr), b.authHeader(), pt.clients)
	if err != nil {
		return false, 0, err
	}
	defer cs.close()
	if err := cs.waitFrames(ctx, 30*time.Second); err != nil {
		return false, 0, err
	}
	settled = b.settle(ctx, cs, 15*time.Second)
	m0, _ := rc.metrics()
	waitProfile := b.cpuProfile(ctx, rc, b.duration(pt), "cluster", side)
	*res, err = b.measureLatency(ctx, rc, cs, w, pt, settled)
	waitProfile()
	if err != nil {
		return settled, 0, err
	}
	m1, _ := rc.metrics()
	n := m1["rowcast_cluster_publish_seconds_count"] - m0["rowcast_cluster_publish_seconds_count"]
	if n > 0 {
		publishMs = 1000 * (m1["rowcast_cluster_publish_seconds_sum"] - m0["rowcast_cluster_publish_seconds_sum"]) / n
	}
	*drain, err = b.clusterDrain(ctx, rc, cs, side)
	return settled, publishMs, err
}

// clusterBacklog is the drain's backlog of single-row transactions.
func (b *bench) clusterBacklog() int { return b.backlogSize() / 4 }

// clusterDrain is the capture scenario's method on one side: rowcast is
// stopped (SIGSTOP) while a backlog is written, then resumed; rate and
// CPU per change from then until the client has every event.
func (b *bench) clusterDrain(ctx context.Context, rc *rowcastProc, cs *clientSet, side string) (drainResult, error) {
	n := b.clusterBacklog()
	rows0 := cs.rows()
	if err := rc.Pause(); err != nil {
		return drainResult{}, err
	}
	if err := b.writeBacklogTxns(ctx, n, 4, 50_000_000); err != nil {
		rc.Resume()
		return drainResult{}, err
	}
	cpu0 := procCPU(rc.PID())
	t0 := time.Now()
	waitProfile := b.cpuProfile(ctx, rc, captureProfileWindow, "cluster", "drain", side)
	if err := rc.Resume(); err != nil {
		return drainResult{}, err
	}
	got := cs.waitRows(ctx, rows0+int64(n), 5*time.Minute, 30*time.Second) - rows0
	waitProfile()
	if got < int64(n) {
		_, slow := cs.closedCount()
		return drainResult{}, fmt.Errorf("drain: the client received %d of %d events (slow-consumer closes: %d)\n%s", got, n, slow, rc.Log.String())
	}
	secs := cs.lastRow().Sub(t0).Seconds()
	cpu := procCPU(rc.PID()) - cpu0
	return drainResult{rate: float64(n) / secs, cpuUs: cpu / float64(n) * 1e6}, nil
}
