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
	b        *bench
	machine  machineInfo
	points   map[string]*point
	order    []string
	texts    map[string]string
	errs     map[string]string
	elapsedS map[string][]float64
	total    time.Duration
}

type point struct {
	Scenario string               `json:"scenario"`
	Key      string               `json:"key"`
	Labels   map[string]string    `json:"labels,omitempty"`
	Median   map[string]float64   `json:"median"`
	Runs     []map[string]float64 `json:"runs"`
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

func newResults(b *bench) *results {
	r := &results{b: b, points: map[string]*point{}, texts: map[string]string{}, errs: map[string]string{}, elapsedS: map[string][]float64{}}
	cores := runtime.NumCPU()
	if v := os.Getenv(envPinned); v != "" {
		fmt.Sscan(v, &cores)
	}
	r.machine = machineInfo{
		Cores:      cores,
		CPU:        cpuModel(),
		Kernel:     strings.TrimSpace(readFile("/proc/sys/kernel/osrelease")),
		Go:         b.goVersion,
		PostgreSQL: b.pgVersion,
		LoadAvg:    strings.Join(strings.Fields(readFile("/proc/loadavg"))[:3], " "),
		MemTotal:   memTotal(),
	}
	if b.opts.pin {
		r.machine.Pinning = "rowcast, pg_recvlogical and the bare broadcast server on core 1; the bench process (WebSocket clients, writers, bare LISTEN loop) on core 0; PostgreSQL and pgbench not pinned"
	} else {
		r.machine.Pinning = "none (fewer than 2 cores, taskset missing, or -pin=false)"
	}
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

func (r *results) add(scenario, key string, labels map[string]string, vals map[string]float64) {
	id := scenario + "|" + key
	p := r.points[id]
	if p == nil {
		p = &point{Scenario: scenario, Key: key, Labels: labels}
		r.points[id] = p
		r.order = append(r.order, id)
	}
	p.Runs = append(p.Runs, vals)
	p.Median = map[string]float64{}
	names := map[string]bool{}
	for _, run := range p.Runs {
		for k := range run {
			names[k] = true
		}
	}
	for k := range names {
		var v []float64
		for _, run := range p.Runs {
			if x, ok := run[k]; ok && !math.IsNaN(x) {
				v = append(v, x)
			}
		}
		if len(v) == 0 {
			p.Median[k] = math.NaN()
		} else {
			p.Median[k] = median(v)
		}
	}
}

func (r *results) text(scenario, key, s string) { r.texts[scenario+"/"+key] = s }

func (r *results) failed(scenario string, err error) { r.errs[scenario] = err.Error() }

func (r *results) elapsed(scenario string, d time.Duration) {
	r.elapsedS[scenario] = append(r.elapsedS[scenario], d.Seconds())
}

// get returns the median of metric for scenario/key, NaN if absent.
func (r *results) get(scenario, key, metric string) float64 {
	p := r.points[scenario+"|"+key]
	if p == nil {
		return math.NaN()
	}
	v, ok := p.Median[metric]
	if !ok {
		return math.NaN()
	}
	return v
}

func (r *results) has(scenario string) bool {
	for _, id := range r.order {
		if strings.HasPrefix(id, scenario+"|") {
			return true
		}
	}
	return false
}

func (r *results) keys(scenario string) []string {
	var ks []string
	for _, id := range r.order {
		if s, k, _ := strings.Cut(id, "|"); s == scenario {
			ks = append(ks, k)
		}
	}
	return ks
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
	r.renderFanout(w)
	r.renderMemory(w)
	r.renderWriters(w)
	r.renderWire(w)
	r.renderTargets(w)
}

func (r *results) renderCapture(w io.Writer) {
	if !r.has("capture") {
		return
	}
	fmt.Fprintf(w, "\n## Capture throughput\n\n")
	fmt.Fprintf(w, "Backlog written while rowcast was stopped (SIGSTOP, slot or LISTEN kept), then drained to one WebSocket client.\n\n")
	fmt.Fprintf(w, "| capture | backlog | rowcast changes/s | limit (same backlog) | limit changes/s | rowcast / limit | rowcast CPU µs per change |\n|---|---|--:|---|--:|--:|--:|\n")
	for _, k := range r.keys("capture") {
		if k == "notify/sustained" {
			continue
		}
		p := r.points["capture|"+k]
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", p.Labels["mode"], p.Labels["backlog"],
			f(p.Median["rowcast_rate"], 0), p.Labels["limit"], f(p.Median["limit_rate"], 0), f(p.Median["ratio"], 2), f(p.Median["rowcast_cpu_us"], 1))
	}
	if p := r.points["capture|notify/sustained"]; p != nil {
		fmt.Fprintf(w, "\nNOTIFY sustained: pgbench -c 16 -j 2 single-row INSERTs as fast as possible with the trigger, %d s; rowcast (one client) and the bare listener measured in turn.\n\n", r.b.sustainedSecs())
		fmt.Fprintf(w, "| | writer TPS | events received/s during the run | caught up (s after writers stopped) |\n|---|--:|--:|--:|\n")
		lag := func(v float64) string {
			if math.IsNaN(v) {
				return "not within 60 s"
			}
			return f(v, 2)
		}
		fmt.Fprintf(w, "| rowcast → WebSocket client | %s | %s | %s |\n", f(p.Median["writer_tps"], 0), f(p.Median["rowcast_rate"], 0), lag(p.Median["rowcast_lag_s"]))
		fmt.Fprintf(w, "| bare pgx LISTEN loop | %s | %s | %s |\n", f(p.Median["limit_writer_tps"], 0), f(p.Median["limit_rate"], 0), lag(p.Median["limit_lag_s"]))
	}
}

func (r *results) renderLatency(w io.Writer) {
	if !r.has("latency") {
		return
	}
	fmt.Fprintf(w, "\n## End-to-end latency (commit → WebSocket client), logical capture\n\n")
	fmt.Fprintf(w, "Open loop, 8 writer connections, one single-row UPDATE per transaction, %s per point; the writer notes the time right after COMMIT returns, the client the time it has read the frame (same process, same clock). "+
		"Receive times kept for up to %d clients per point (evenly spread), deliveries counted on all; a delivery counts if it arrives within %s after the last commit. "+
		"\"rowcast commit→write\" is rowcast's own histogram (pgoutput commit time to the write to a client), \"walsender behind\" the largest pg_current_wal_lsn() − sent_lsn sampled every 100 ms, \"idle\" the machine's idle CPU during the point.\n\n",
		r.b.latencyDuration(), latencyRecorders, latencyDrain)
	fmt.Fprintf(w, "| changes/s (achieved) | clients | p50 ms | p95 ms | p99 ms | max ms | delivered | slow-consumer closes | writer commit p50 / p99 ms | rowcast commit→write mean ms | walsender behind KiB | rowcast CPU | idle |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, k := range r.keys("latency") {
		p := r.points["latency|"+k].Median
		fmt.Fprintf(w, "| %s (%s) | %s | %s | %s | %s | %s | %s%% | %s | %s / %s | %s | %s | %s%% | %s%% |\n", f(p["rate"], 0), f(p["achieved_rate"], 0), f(p["clients"], 0),
			f(p["p50_ms"], 2), f(p["p95_ms"], 2), f(p["p99_ms"], 2), f(p["max_ms"], 1), f(p["delivered_pct"], 1), f(p["slow_closes"], 0),
			f(p["commit_p50_ms"], 2), f(p["commit_p99_ms"], 2), f(p["server_mean_ms"], 2), f(p["walsender_lag_kb"], 0), f(p["rowcast_cpu_pct"], 0), f(p["machine_idle_pct"], 0))
	}
}

func (r *results) renderFanout(w io.Writer) {
	if !r.has("fanout") {
		return
	}
	fmt.Fprintf(w, "\n## Fan-out\n\n")
	fmt.Fprintf(w, "N clients connected; the change rate is doubled from 25,000 deliveries/s until a step fails (halved if the first fails), then bisected twice (once with -quick); %s steps. "+
		"A step passes when every client received every event no later than %s after the step's end, no client was closed and the server dropped none. "+
		"Deliveries/s = changes/s × clients at the highest passing step. Limit: a bare gorilla/websocket broadcast server (a separate process pinned like rowcast: goroutine + 1024-slot channel per client, one PreparedMessage per event, same upgrader buffers, no auth, no JSON) with the same clients and the same frame bytes. "+
		"CPU from /proc/<pid>/stat of the server process over the passing step.\n\n", r.b.fanoutStep(), fanGrace)
	fmt.Fprintf(w, "| clients | frame bytes | rowcast changes/s | rowcast deliveries/s | rowcast CPU-s per M deliveries | bare msgs/s | bare deliveries/s | bare CPU-s per M | rowcast / bare |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, k := range r.keys("fanout") {
		p := r.points["fanout|"+k].Median
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", f(p["clients"], 0), f(p["frame_bytes"], 0),
			f(p["rowcast_rate"], 1), f(p["rowcast_deliveries"], 0), f(p["rowcast_cpu_per_m"], 2),
			f(p["limit_rate"], 1), f(p["limit_deliveries"], 0), f(p["limit_cpu_per_m"], 2), f(p["ratio"], 2))
	}
}

func (r *results) renderMemory(w io.Writer) {
	if !r.has("memory") {
		return
	}
	fmt.Fprintf(w, "\n## Memory per idle authenticated connection\n\n")
	fmt.Fprintf(w, "| idle clients | RSS per conn | Go heap in use per conn | heap alloc per conn | goroutine stacks per conn | goroutines per conn | RSS before → after |\n|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, k := range r.keys("memory") {
		p := r.points["memory|"+k].Median
		fmt.Fprintf(w, "| %s | %s KiB | %s KiB | %s KiB | %s KiB | %s | %s → %s MiB |\n", f(p["clients"], 0),
			f(p["rss_per_conn"]/1024, 1), f(p["heap_inuse_per_conn"]/1024, 1), f(p["heap_alloc_per_conn"]/1024, 1),
			f(p["stack_per_conn"]/1024, 1), f(p["goroutines_per_conn"], 2), f(p["rss_before"]/(1<<20), 1), f(p["rss_after"]/(1<<20), 1))
	}
}

func (r *results) renderWriters(w io.Writer) {
	if !r.has("writers") {
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
			key := func(mode string) string { return fmt.Sprintf("%s/%s/%d", mode, op, c) }
			get := func(mode string) float64 { return r.get("writers", key(mode), "tps") }
			none := get("none")
			cell := func(mode string) string {
				v := get(mode)
				if math.IsNaN(v) {
					return "–"
				}
				return fmt.Sprintf("%s (%s)", f(v, 0), f(v/none, 2))
			}
			fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s%% / %s%% |\n", op, c, f(none, 0), cell("bare"), cell("trigger"), cell("notify"),
				cell("recvlogical"), cell("logical"), f(get("trigger")/get("bare"), 2),
				f(r.get("writers", key("notify"), "consumer_cpu_pct"), 0), f(r.get("writers", key("logical"), "consumer_cpu_pct"), 0))
		}
	}
}

func (r *results) renderWire(w io.Writer) {
	if !r.has("wire") {
		return
	}
	fmt.Fprintf(w, "\n## Wire size\n\n")
	fmt.Fprintf(w, "Bytes per message for the reference ticket; \"wire\" adds the WebSocket frame header (2 bytes up to 125 bytes of payload, 4 up to 65,535; server frames are unmasked, no compression). TCP/IP headers not counted.\n\n")
	fmt.Fprintf(w, "| capture | ticket:updated payload | ticket:updated wire | stats:updated payload | stats:updated wire |\n|---|--:|--:|--:|--:|\n")
	for _, k := range r.keys("wire") {
		p := r.points["wire|"+k].Median
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", k, f(p["ticket_payload"], 0), f(p["ticket_wire"], 0), f(p["stats_payload"], 0), f(p["stats_wire"], 0))
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
	for _, sh := range []string{"txns", "onetxn"} {
		k := "logical/" + sh
		if p := r.points["capture|"+k]; p != nil {
			ratio := p.Median["ratio"]
			add("logical drain ≥ 0.9 × pg_recvlogical ("+p.Labels["backlog"]+")",
				f(p.Median["rowcast_rate"], 0)+" changes/s ("+f(ratio, 2)+"×)", f(p.Median["limit_rate"], 0)+" changes/s", ratio >= 0.9, known(ratio))
		}
	}
	if p := r.points["capture|notify/sustained"]; p != nil {
		m := p.Median
		add("notify keeps up with the highest trigger TPS at 16 writers",
			f(m["rowcast_rate"], 0)+" events/s delivered, caught up "+f(m["rowcast_lag_s"], 2)+" s after",
			f(m["writer_tps"], 0)+" TPS written", m["keeps_up"] >= 0.5, known(m["keeps_up"]))
	}
	if r.has("latency") {
		p99 := r.get("latency", "1000/1000", "p99_ms")
		del := r.get("latency", "1000/1000", "delivered_pct")
		add("commit→client p99 ≤ 10 ms at 1,000 changes/s, 1,000 clients",
			f(p99, 2)+" ms ("+f(del, 1)+"% delivered)", "10 ms", p99 <= 10 && del >= 100, known(p99, del))
	}
	if r.has("fanout") {
		rd := r.get("fanout", "10000", "rowcast_deliveries")
		ld := r.get("fanout", "10000", "limit_deliveries")
		cpu := r.get("fanout", "10000", "rowcast_cpu_per_m")
		// The ratio is the median of the same-run ratios.
		ratio := r.get("fanout", "10000", "ratio")
		add("fan-out deliveries/s ≥ 0.8 × bare gorilla loop, 10,000 clients",
			f(rd, 0)+" ("+f(ratio, 2)+"× in the same run)", f(ld, 0)+" (bare)", ratio >= 0.8, known(rd, ld, ratio))
		add("fan-out ≤ 4.5 CPU-seconds per million deliveries, 10,000 clients",
			f(cpu, 2), "4.5 (bare: "+f(r.get("fanout", "10000", "limit_cpu_per_m"), 2)+")", cpu <= 4.5, known(cpu))
	}
	if r.has("memory") {
		k := r.keys("memory")[0]
		h := r.get("memory", k, "heap_inuse_per_conn") / 1024
		add("≤ 8 KiB Go heap per idle authenticated connection",
			f(h, 1)+" KiB (+ "+f(r.get("memory", k, "stack_per_conn")/1024, 1)+" KiB stacks)", "8 KiB", h <= 8, known(h))
	}
	if r.has("writers") {
		for _, op := range []string{"insert", "update"} {
			none := r.get("writers", "none/"+op+"/16", "tps")
			lg := r.get("writers", "logical/"+op+"/16", "tps")
			add("writer TPS with logical capture ≥ 0.95 × no capture, 16 writers, "+op,
				f(lg, 0)+" ("+f(lg/none, 2)+"×)", f(none, 0), lg >= 0.95*none, known(none, lg))
		}
		for _, op := range []string{"insert", "update"} {
			bare := r.get("writers", "bare/"+op+"/16", "tps")
			tr := r.get("writers", "trigger/"+op+"/16", "tps")
			add("NOTIFY trigger no slower than bare pg_notify(row_to_json(NEW)) trigger, 16 writers, "+op,
				f(tr, 0)+" ("+f(tr/bare, 2)+"×)", f(bare, 0)+" (≥ 0.97× counts as met)", tr >= 0.97*bare, known(bare, tr))
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
	clean := func(m map[string]float64) map[string]any {
		out := map[string]any{}
		for k, v := range m {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				out[k] = nil
			} else {
				out[k] = v
			}
		}
		return out
	}
	type jpoint struct {
		Scenario string            `json:"scenario"`
		Key      string            `json:"key"`
		Labels   map[string]string `json:"labels,omitempty"`
		Median   map[string]any    `json:"median"`
		Runs     []map[string]any  `json:"runs"`
	}
	var pts []jpoint
	for _, id := range r.order {
		p := r.points[id]
		jp := jpoint{Scenario: p.Scenario, Key: p.Key, Labels: p.Labels, Median: clean(p.Median)}
		for _, run := range p.Runs {
			jp.Runs = append(jp.Runs, clean(run))
		}
		pts = append(pts, jp)
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
