package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"time"
)

// results holds every measurement of every run; tables show medians.
type results struct {
	b       *bench
	machine machineInfo
	// order lists every point of every scenario in the order first
	// measured: the order of the results file.
	order []recorded

	capture     series[captureBacklog]
	sustained   series[captureSustained]
	latency     series[latencyResult]
	fanout      series[fanoutResult]
	fanoutSteps series[fanoutStep]
	memory      series[memoryResult]
	writers     series[writerResult]
	wire        series[wireResult]
	cluster     series[clusterResult]

	texts    map[string]string
	errs     map[string]string
	elapsedS map[string][]float64
	total    time.Duration
}

type machineInfo struct {
	Cores      int    `json:"cores"`
	CPU        string `json:"cpu"`
	Kernel     string `json:"kernel"`
	Go         string `json:"go"`
	PostgreSQL string `json:"postgresql"`
	LoadAvg    string `json:"loadavg_at_start"`
	MemTotal   string `json:"mem_total"`
	Pinning    string `json:"pinning"`
}

// machineCores is the machine's core count, as seen before the bench
// pinned itself.
func machineCores() int {
	cores := runtime.NumCPU()
	if v := os.Getenv(envPinned); v != "" {
		fmt.Sscan(v, &cores)
	}
	return cores
}

func newResults(b *bench) *results {
	r := newEmptyResults(b)
	r.machine = machineInfo{
		Cores:      machineCores(),
		CPU:        cpuModel(),
		Kernel:     strings.TrimSpace(readFile("/proc/sys/kernel/osrelease")),
		Go:         b.goVersion,
		PostgreSQL: b.pgVersion,
		LoadAvg:    strings.Join(strings.Fields(readFile("/proc/loadavg"))[:3], " "),
		MemTotal:   memTotal(),
	}
	if b.opts.pin {
		r.machine.Pinning = "rowcast, pg_recvlogical and the bare broadcast server on core 1; the bench process (WebSocket clients, writers, bare LISTEN loop) on core 0; PostgreSQL and pgbench on either core (not pinned)"
	} else {
		r.machine.Pinning = "none (fewer than 2 cores, taskset missing, or -pin=false)"
	}
	return r
}

// newEmptyResults returns results without measurements or machine.
func newEmptyResults(b *bench) *results {
	r := &results{b: b, texts: map[string]string{}, errs: map[string]string{}, elapsedS: map[string][]float64{}}
	r.capture = newSeries[captureBacklog](r, "capture")
	r.sustained = newSeries[captureSustained](r, "capture")
	r.latency = newSeries[latencyResult](r, "latency")
	r.fanout = newSeries[fanoutResult](r, "fanout")
	r.fanoutSteps = newSeries[fanoutStep](r, "fanout_steps")
	r.memory = newSeries[memoryResult](r, "memory")
	r.writers = newSeries[writerResult](r, "writers")
	r.wire = newSeries[wireResult](r, "wire")
	r.cluster = newSeries[clusterResult](r, "cluster")
	return r
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func cpuModel() string {
	for _, line := range strings.Split(readFile("/proc/cpuinfo"), "\n") {
		if strings.HasPrefix(line, "model name") {
			if _, v, ok := strings.Cut(line, ":"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return runtime.GOARCH
}

func memTotal() string {
	for _, line := range strings.Split(readFile("/proc/meminfo"), "\n") {
		if strings.HasPrefix(line, "MemTotal:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				var kb float64
				fmt.Sscan(f[1], &kb)
				return fmt.Sprintf("%.1f GiB", kb/(1<<20))
			}
		}
	}
	return ""
}

func (r *results) text(scenario, key, s string) { r.texts[scenario+"/"+key] = s }

func (r *results) failed(scenario string, err error) { r.errs[scenario] = err.Error() }

func (r *results) elapsed(scenario string, d time.Duration) {
	r.elapsedS[scenario] = append(r.elapsedS[scenario], d.Seconds())
}

// f formats a number with d decimals, "–" for NaN.
func f(v float64, d int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	if d == 0 {
		return commas(int64(math.Round(v)))
	}
	return fmt.Sprintf("%.*f", d, v)
}

func commas(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

func (r *results) render(w io.Writer) {
	m := r.machine
	mode := "full"
	if r.b.opts.quick {
		mode = "quick"
	}
	fmt.Fprintf(w, "\n# rowcast-bench (%s, median of %d run(s))\n\n", mode, r.b.opts.runs)
	fmt.Fprintf(w, "- Machine: %d cores, %s, %s RAM, Linux %s; %s; PostgreSQL %s; load average at start %s.\n", m.Cores, m.CPU, m.MemTotal, m.Kernel, m.Go, m.PostgreSQL, m.LoadAvg)
	fmt.Fprintf(w, "- Load generators and rowcast share these %d cores. Pinning: %s.\n", m.Cores, m.Pinning)
	fmt.Fprintf(w, "- Everything on loopback; PostgreSQL over its unix socket (fsync=off, wal_level=logical, shared_buffers=512MB).\n")
	fmt.Fprintf(w, "- Total time %s.\n", r.total.Round(time.Second))
	for _, s := range allScenarios {
		if e, ok := r.errs[s]; ok {
			fmt.Fprintf(w, "\n**%s failed:** %s\n", s, firstLine(e))
		}
	}
	r.renderCapture(w)
	r.renderLatency(w)
	r.renderCluster(w)
	r.renderFanout(w)
	r.renderMemory(w)
	r.renderWriters(w)
	r.renderWire(w)
	r.renderTargets(w)
}

func (r *results) renderCapture(w io.Writer) {
	if !r.capture.measured() && !r.sustained.measured() {
		return
	}
	fmt.Fprintf(w, "\n## Capture throughput\n\n")
	fmt.Fprintf(w, "Backlog written while rowcast was stopped (SIGSTOP, slot or LISTEN kept), then drained to one WebSocket client.\n\n")
	fmt.Fprintf(w, "| capture | backlog | rowcast changes/s | limit (same backlog) | limit changes/s | rowcast / limit | rowcast CPU µs per change |\n|---|---|--:|---|--:|--:|--:|\n")
	for _, p := range r.capture.points {
		m := p.Median
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", p.Labels["mode"], p.Labels["backlog"],
			f(m.RowcastRate, 0), p.Labels["limit"], f(m.LimitRate, 0), f(m.Ratio, 2), f(m.RowcastCPUUs, 1))
	}
	r.renderDrainCPU(w)
	if p := r.sustained.point(sustainedKey); p != nil {
		m := p.Median
		fmt.Fprintf(w, "\nNOTIFY sustained: pgbench -c %d -j 2 single-row INSERTs as fast as possible with the trigger, %d s; rowcast (one client) and the bare listener measured in turn.\n\n", sustainedWriters, r.b.sustainedSecs())
		fmt.Fprintf(w, "| | writer TPS | events received/s during the run | caught up (s after writers stopped) |\n|---|--:|--:|--:|\n")
		lag := func(v float64) string {
			if math.IsNaN(v) {
				return "not within 60 s"
			}
			return f(v, 2)
		}
		fmt.Fprintf(w, "| rowcast → WebSocket client | %s | %s | %s |\n", f(m.WriterTPS, 0), f(m.RowcastRate, 0), lag(m.RowcastLagS))
		fmt.Fprintf(w, "| bare pgx LISTEN loop | %s | %s | %s |\n", f(m.LimitWriterTPS, 0), f(m.LimitRate, 0), lag(m.LimitLagS))
	}
}

// renderDrainCPU shows where both cores went during the logical drains:
// rowcast's drain feeds a WebSocket client on the same machine, which
// pg_recvlogical's (written to /dev/null) does not.
func (r *results) renderDrainCPU(w io.Writer) {
	var rows []string
	for _, p := range r.capture.points {
		m := p.Median
		if p.Labels["mode"] != "logical" || !(m.WalsenderCPUUs > 0) {
			continue
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s | %s%% | %s | %s | %s%% |\n", p.Labels["backlog"],
			f(m.RowcastCPUUs, 1), f(m.WalsenderCPUUs, 1), f(m.ClientCPUUs, 1), f(m.BusyPct, 0),
			f(m.LimitCPUUs, 1), f(m.LimitWalsenderUs, 1), f(m.LimitBusyPct, 0)))
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "\nWhere both cores went during the logical drains, CPU µs per change: rowcast's drain also feeds the WebSocket client (the bench process), pg_recvlogical writes to /dev/null. \"WAL sender and the rest\" is the machine's busy time during pg_recvlogical's drain less pg_recvlogical's own.\n\n")
	fmt.Fprintf(w, "| backlog | rowcast | its WAL sender | client | both cores busy | pg_recvlogical | WAL sender and the rest | both cores busy |\n|---|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, row := range rows {
		fmt.Fprint(w, row)
	}
}

func (r *results) renderLatency(w io.Writer) {
	if !r.latency.measured() {
		return
	}
	fmt.Fprintf(w, "\n## End-to-end latency (commit → WebSocket client), logical capture\n\n")
	fmt.Fprintf(w, "Open loop, 8 writer connections, one single-row UPDATE per transaction, %s per point; the writer notes the time right after COMMIT returns, the client the time it has read the frame (same process, same clock). "+
		"Receive times kept for up to %d clients per point (evenly spread), deliveries counted on all; a delivery counts if it arrives within %s after the last commit. "+
		"\"rowcast commit→write\" is rowcast's own histogram (pgoutput commit time to the write to a client), \"walsender behind\" the largest pg_current_wal_lsn() − sent_lsn sampled every 100 ms, \"idle\" the machine's idle CPU during the point.\n\n",
		r.b.latencyDuration(), latencyRecorders, latencyDrain)
	fmt.Fprintf(w, "| changes/s (achieved) | clients | p50 ms | p95 ms | p99 ms | max ms | delivered | slow-consumer closes | writer commit p50 / p99 ms | rowcast commit→write mean ms | walsender behind KiB | rowcast CPU | idle |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, p := range r.latency.points {
		m := p.Median
		fmt.Fprintf(w, "| %s (%s) | %s | %s | %s | %s | %s | %s%% | %s | %s / %s | %s | %s | %s%% | %s%% |\n", f(m.Rate, 0), f(m.AchievedRate, 0), f(m.Clients, 0),
			f(m.P50Ms, 2), f(m.P95Ms, 2), f(m.P99Ms, 2), f(m.MaxMs, 1), f(m.DeliveredPct, 1), f(m.SlowCloses, 0),
			f(m.CommitP50Ms, 2), f(m.CommitP99Ms, 2), f(m.ServerMeanMs, 2), f(m.WalsenderLagKB, 0), f(m.RowcastCPUPct, 0), f(m.MachineIdlePct, 0))
	}
}

func (r *results) renderCluster(w io.Writer) {
	if !r.cluster.measured() {
		return
	}
	fmt.Fprintf(w, "\n## Cluster mode (NATS JetStream) beside a single node\n\n")
	fmt.Fprintf(w, "The latency scenario's method, in the same run: rowcast alone, then the same rowcast as the one node of a cluster (ROWCAST_NATS_URL) whose stream has 3 replicas on a 3-server NATS cluster running in the bench process (so rowcast's CPU is its own: capture, publish, consume, fan-out). "+
		"CPU per change is rowcast's CPU over the point (the writers run %s) divided by the changes committed.\n\n", r.b.duration(clusterPoint))
	fmt.Fprintf(w, "| changes/s (single / cluster) | clients | p50 ms single | p50 ms cluster | p50 added ms | p99 ms single / cluster | CPU µs per change single | cluster | ratio | publish→ack mean ms | delivered single / cluster |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, p := range r.cluster.points {
		m := p.Median
		fmt.Fprintf(w, "| %s / %s | %s | %s | %s | %s | %s / %s | %s | %s | %s | %s | %s%% / %s%% |\n",
			f(m.SingleRate, 0), f(m.AchievedRate, 0), f(m.Clients, 0), f(m.SingleP50Ms, 2), f(m.ClusterP50Ms, 2), f(m.AddedP50Ms, 2),
			f(m.SingleP99Ms, 2), f(m.ClusterP99Ms, 2), f(m.SingleCPUUs, 1), f(m.ClusterCPUUs, 1), f(m.CPURatio, 2), f(m.PublishMeanMs, 2),
			f(m.SingleDelivered, 1), f(m.ClusterDelivered, 1))
	}
	fmt.Fprintf(w, "\nCapture at full speed, as the capture scenario measures it: rowcast is stopped (SIGSTOP) while a backlog of single-row transactions is written by 4 connections, then resumed; rate and CPU per change from then until the client has every event.\n\n")
	fmt.Fprintf(w, "| backlog | changes/s single | changes/s cluster | CPU µs per change single | cluster | ratio |\n|--:|--:|--:|--:|--:|--:|\n")
	for _, p := range r.cluster.points {
		m := p.Median
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", f(m.DrainN, 0), f(m.SingleDrainRate, 0), f(m.ClusterDrainRate, 0),
			f(m.SingleDrainCPUUs, 1), f(m.ClusterDrainCPUUs, 1), f(m.DrainCPURatio, 2))
	}
}

func (r *results) renderFanout(w io.Writer) {
	if !r.fanout.measured() {
		return
	}
	fmt.Fprintf(w, "\n## Fan-out\n\n")
	fmt.Fprintf(w, "N clients connected; the change rate is doubled from 25,000 deliveries/s until a step fails (halved if the first fails), then bisected twice (once with -quick); %s steps. "+
		"A step passes when every client received every event no later than %s after the step's end, no client was closed and the server dropped none. "+
		"Deliveries/s = changes/s × clients at the highest passing step. Limit: a bare gorilla/websocket broadcast server (a separate process pinned like rowcast: goroutine + 1024-slot channel per client, one PreparedMessage per event, same upgrader buffers, no auth, no JSON) with the same clients and the same frame bytes. "+
		"CPU from /proc/<pid>/stat of the server process over the passing step. "+
		"Socket.IO: the same ramp against the same rowcast process, clients on its Socket.IO WebSocket transport (joined to the main namespace, answering Engine.IO pings).\n\n", r.b.fanoutStep(), fanGrace)
	fmt.Fprintf(w, "| clients | frame bytes | rowcast changes/s | rowcast deliveries/s | rowcast CPU-s per M deliveries | Socket.IO deliveries/s | Socket.IO CPU-s per M | Socket.IO / ws CPU | bare msgs/s | bare deliveries/s | bare CPU-s per M | rowcast / bare |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, p := range r.fanout.points {
		m := p.Median
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", f(m.Clients, 0), f(m.FrameBytes, 0),
			f(m.RowcastRate, 1), f(m.RowcastDeliveries, 0), f(m.RowcastCPUPerM, 2),
			f(m.SIODeliveries, 0), f(m.SIOCPUPerM, 2), f(m.SIOCPURatio, 2),
			f(m.LimitRate, 1), f(m.LimitDeliveries, 0), f(m.LimitCPUPerM, 2), f(m.Ratio, 2))
	}
}

func (r *results) renderMemory(w io.Writer) {
	if !r.memory.measured() {
		return
	}
	fmt.Fprintf(w, "\n## Memory per idle authenticated connection\n\n")
	fmt.Fprintf(w, "| idle clients | RSS per conn | Go heap in use per conn | heap alloc per conn | goroutine stacks per conn | goroutines per conn | RSS before → after | Socket.IO: RSS / heap in use / stacks per conn | Socket.IO goroutines per conn |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, p := range r.memory.points {
		m := p.Median
		fmt.Fprintf(w, "| %s | %s KiB | %s KiB | %s KiB | %s KiB | %s | %s → %s MiB | %s / %s / %s KiB | %s |\n", f(m.Clients, 0),
			f(m.RSSPerConn/1024, 1), f(m.HeapInusePerConn/1024, 1), f(m.HeapAllocPerConn/1024, 1),
			f(m.StackPerConn/1024, 1), f(m.GoroutinesPerConn, 2), f(m.RSSBefore/(1<<20), 1), f(m.RSSAfter/(1<<20), 1),
			f(m.SIORSSPerConn/1024, 1), f(m.SIOHeapInusePerConn/1024, 1), f(m.SIOStackPerConn/1024, 1), f(m.SIOGoroutinesPerConn, 2))
	}
}

func (r *results) renderWriters(w io.Writer) {
	if !r.writers.measured() {
		return
	}
	fmt.Fprintf(w, "\n## Cost to writers\n\n")
	fmt.Fprintf(w, "pgbench -n -M prepared -j 2 -T %d, one single-row INSERT or UPDATE per transaction; TPS, and in parentheses the ratio to no capture. "+
		"\"bare trigger\": pg_notify(row_to_json(NEW)) with a bare LISTEN loop draining; \"rowcast trigger\": rowcast's NOTIFY trigger with the same bare LISTEN loop (rowcast not running); "+
		"\"rowcast notify\": the trigger with rowcast listening; \"pg_recvlogical\": rowcast's logical setup (publication, slot, REPLICA IDENTITY FULL) consumed by pg_recvlogical; \"rowcast logical\": the same consumed by rowcast. "+
		"The consumer runs on the same 2 cores as PostgreSQL and pgbench, so its CPU (last column pair, %% of a core) is taken from the writers.\n\n", r.b.pgbenchSecs())
	fmt.Fprintf(w, "| op | writers | no capture | bare trigger | rowcast trigger | rowcast notify | pg_recvlogical | rowcast logical | rowcast trigger / bare trigger | CPU: rowcast notify / rowcast logical |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, op := range []string{"insert", "update"} {
		for _, c := range r.b.writerClients() {
			get := func(mode string) writerResult { return r.writers.median(writerKey(mode, op, c)) }
			none := get("none").TPS
			cell := func(mode string) string {
				v := get(mode).TPS
				if math.IsNaN(v) {
					return "–"
				}
				return fmt.Sprintf("%s (%s)", f(v, 0), f(v/none, 2))
			}
			fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s%% / %s%% |\n", op, c, f(none, 0), cell("bare"), cell("trigger"), cell("notify"),
				cell("recvlogical"), cell("logical"), f(get("trigger").TPS/get("bare").TPS, 2),
				f(get("notify").ConsumerCPUPct, 0), f(get("logical").ConsumerCPUPct, 0))
		}
	}
}

func (r *results) renderWire(w io.Writer) {
	if !r.wire.measured() {
		return
	}
	fmt.Fprintf(w, "\n## Wire size\n\n")
	fmt.Fprintf(w, "Bytes per message for the reference ticket; \"wire\" adds the WebSocket frame header (2 bytes up to 125 bytes of payload, 4 up to 65,535; server frames are unmasked, no compression). TCP/IP headers not counted.\n\n")
	fmt.Fprintf(w, "| capture | ticket:updated payload | ticket:updated wire | stats:updated payload | stats:updated wire |\n|---|--:|--:|--:|--:|\n")
	for _, p := range r.wire.points {
		m := p.Median
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", p.Key, f(m.TicketPayload, 0), f(m.TicketWire, 0), f(m.StatsPayload, 0), f(m.StatsWire, 0))
	}
}

// target is one line of the targets table.
type target struct {
	Name     string  `json:"name"`
	Measured string  `json:"measured"`
	Limit    string  `json:"limit"`
	Met      *bool   `json:"met"`
	Value    float64 `json:"-"`
}

// targets judges the medians against the bounds declared beside each
// scenario's results; names and limits are written from the same bounds.
func (r *results) targets() []target {
	var ts []target
	add := func(name, measured, limit string, ok bool, known bool) {
		t := target{Name: name, Measured: measured, Limit: limit}
		if known {
			t.Met = &ok
		}
		ts = append(ts, t)
	}
	known := func(vs ...float64) bool {
		for _, v := range vs {
			if math.IsNaN(v) {
				return false
			}
		}
		return true
	}
	for _, sh := range []string{shapeTxns, shapeOneTxn} {
		if p := r.capture.point(captureKey("logical", sh)); p != nil {
			m := p.Median
			add("logical drain "+logicalDrainTarget.String()+" × pg_recvlogical ("+p.Labels["backlog"]+")",
				f(m.RowcastRate, 0)+" changes/s ("+f(m.Ratio, 2)+"×)", f(m.LimitRate, 0)+" changes/s", logicalDrainTarget.met(m.Ratio), known(m.Ratio))
		}
	}
	if p := r.sustained.point(sustainedKey); p != nil {
		m := p.Median
		add(fmt.Sprintf("notify keeps up with the highest trigger TPS at %d writers", sustainedWriters),
			f(m.RowcastRate, 0)+" events/s delivered, caught up "+f(m.RowcastLagS, 2)+" s after",
			f(m.WriterTPS, 0)+" TPS written", notifyKeepsUpTarget.met(m.KeepsUp), known(m.KeepsUp))
	}
	if r.latency.measured() {
		pt := latencyTargetPoint
		m := r.latency.median(pt.key())
		add(fmt.Sprintf("commit→client p99 %s ms at %s changes/s, %s clients", latencyP99Target, f(pt.rate, 0), commas(int64(pt.clients))),
			f(m.P99Ms, 2)+" ms ("+f(m.DeliveredPct, 1)+"% delivered)", fmt.Sprintf("%g ms", latencyP99Target.limit),
			latencyP99Target.met(m.P99Ms) && latencyDeliveredTarget.met(m.DeliveredPct), known(m.P99Ms, m.DeliveredPct))
	}
	if r.cluster.measured() {
		pt := clusterPoint
		m := r.cluster.median(pt.key())
		add(fmt.Sprintf("cluster mode adds to commit→client p50 %s ms at %s changes/s", clusterAddedP50Target, f(pt.rate, 0)),
			f(m.AddedP50Ms, 2)+" ms ("+f(m.SingleP50Ms, 2)+" → "+f(m.ClusterP50Ms, 2)+")", fmt.Sprintf("%g ms", clusterAddedP50Target.limit),
			clusterAddedP50Target.met(m.AddedP50Ms), known(m.AddedP50Ms))
		add(fmt.Sprintf("cluster mode capture CPU per change %s× single node (a backlog drained)", clusterCPUTarget),
			f(m.DrainCPURatio, 2)+"× ("+f(m.SingleDrainCPUUs, 1)+" → "+f(m.ClusterDrainCPUUs, 1)+" µs)", fmt.Sprintf("%g×", clusterCPUTarget.limit),
			clusterCPUTarget.met(m.DrainCPURatio), known(m.DrainCPURatio))
	}
	if r.fanout.measured() {
		n := commas(int64(fanoutTargetClients))
		m := r.fanout.median(fanoutKey(fanoutTargetClients))
		// The ratio is the median of the same-run ratios.
		add("fan-out deliveries/s "+fanoutRatioTarget.String()+" × bare gorilla loop, "+n+" clients",
			f(m.RowcastDeliveries, 0)+" ("+f(m.Ratio, 2)+"× in the same run)", f(m.LimitDeliveries, 0)+" (bare)",
			fanoutRatioTarget.met(m.Ratio), known(m.RowcastDeliveries, m.LimitDeliveries, m.Ratio))
		add("fan-out "+fanoutCPUTarget.String()+" CPU-seconds per million deliveries, "+n+" clients",
			f(m.RowcastCPUPerM, 2), fmt.Sprintf("%g (bare: %s)", fanoutCPUTarget.limit, f(m.LimitCPUPerM, 2)),
			fanoutCPUTarget.met(m.RowcastCPUPerM), known(m.RowcastCPUPerM))
	}
	if r.memory.measured() {
		m := r.memory.points[0].Median
		h := m.HeapInusePerConn / 1024
		add(memoryHeapTarget.String()+" KiB Go heap per idle authenticated connection",
			f(h, 1)+" KiB (+ "+f(m.StackPerConn/1024, 1)+" KiB stacks)", fmt.Sprintf("%g KiB", memoryHeapTarget.limit), memoryHeapTarget.met(h), known(h))
	}
	if r.writers.measured() {
		c := writerTargetClients
		for _, op := range []string{"insert", "update"} {
			none := r.writers.median(writerKey("none", op, c)).TPS
			lg := r.writers.median(writerKey("logical", op, c)).TPS
			add(fmt.Sprintf("writer TPS with logical capture %s × no capture, %d writers, %s", writerLogicalTarget, c, op),
				f(lg, 0)+" ("+f(lg/none, 2)+"×)", f(none, 0), writerLogicalTarget.metBy(lg, none), known(none, lg))
		}
		for _, op := range []string{"insert", "update"} {
			bare := r.writers.median(writerKey("bare", op, c)).TPS
			tr := r.writers.median(writerKey("trigger", op, c)).TPS
			add(fmt.Sprintf("NOTIFY trigger no slower than bare pg_notify(row_to_json(NEW)) trigger, %d writers, %s", c, op),
				f(tr, 0)+" ("+f(tr/bare, 2)+"×)", fmt.Sprintf("%s (%s× counts as met)", f(bare, 0), writerTriggerTarget), writerTriggerTarget.metBy(tr, bare), known(bare, tr))
		}
	}
	return ts
}

func (r *results) renderTargets(w io.Writer) {
	ts := r.targets()
	if len(ts) == 0 {
		return
	}
	fmt.Fprintf(w, "\n## Targets\n\n| target | rowcast | limit / bound | |\n|---|--:|--:|---|\n")
	for _, t := range ts {
		verdict := "not measured"
		if t.Met != nil {
			verdict = "missed"
			if *t.Met {
				verdict = "met"
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", t.Name, t.Measured, t.Limit, verdict)
	}
}

// writeJSON writes every point (medians and each run), the machine, the
// targets and the frames seen.
func (r *results) writeJSON(path string) error {
	pts := make([]jsonPoint, 0, len(r.order))
	for _, p := range r.order {
		pts = append(pts, p.jsonPoint())
	}
	doc := map[string]any{
		"generated": time.Now().UTC().Format(time.RFC3339),
		"machine":   r.machine,
		"options": map[string]any{
			"quick": r.b.opts.quick, "runs": r.b.opts.runs, "scenarios": r.b.opts.scenarios, "pinned": r.b.opts.pin,
		},
		"total_seconds":    r.total.Seconds(),
		"scenario_seconds": r.elapsedS,
		"points":           pts,
		"targets":          r.targets(),
		"frames":           r.texts,
		"errors":           r.errs,
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
