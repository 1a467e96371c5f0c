package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"rowcast"
	"rowcast/cdc"
	"rowcast/integration/harness"
	"rowcast/integration/pgcluster"
)

// TestChaos is the fault-injection oracle test. In each capture mode, for
// ROWCAST_CHAOS_DURATION (default 60s; `make chaos` runs 20 minutes):
//
//   - writers make mixed INSERT, UPDATE and DELETE on tickets with plain
//     SQL, some in multi-row transactions (a row changed twice in one),
//     some on another table, some with rows over 8 KB, primary-key
//     changes, and now and then a TRUNCATE; every UPDATE bumps the row's
//     rev, so each row's history is a sequence the clients can check;
//   - dashboards over WebSocket, SSE and Socket.IO keep a mirror of the
//     table, disconnect at random and resume with their last id, some
//     reading slowly; on resync they refetch the snapshot;
//   - faults, one at a time: kill -9 of rowcast and a restart, PostgreSQL
//     restarts (fast and immediate), pg_terminate_backend of rowcast's
//     sessions, rowcast paused (SIGSTOP/SIGCONT), and the connection
//     between rowcast and PostgreSQL cut or black-holed by a TCP proxy;
//     after each, a probe change must reach a client (the recovery time).
//
// Once the writers stop and the faults end, the oracle checks: every
// client's mirror equals the table, and its stats a fresh GROUP BY; no
// row skipped a revision or got one twice, except across a resync; in
// logical mode every client received, after each snapshot, exactly the
// ids an independent reading of the WAL (a slot of the test's own)
// gives, in order, and resynced only for a TRUNCATE; in notify mode every
// lost stretch was announced by resync; rowcast's goroutines and heap
// came back to their baseline; the slot's retained WAL stayed under
// chaosWALBound. ROWCAST_CHAOS_REPORT names a JSON file for the figures,
// ROWCAST_CHAOS_MARKDOWN a file (RELIABILITY.md) whose generated section
// they replace.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test skipped in -short mode")
	}
	d := 60 * time.Second
	if v := os.Getenv("ROWCAST_CHAOS_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("ROWCAST_CHAOS_DURATION=%q: %v", v, err)
		}
	}
	rep := chaosReport{Started: time.Now().UTC().Format(time.RFC3339), Duration: d.String(), Race: raceEnabled}
	forModes(t, func(t *testing.T, mode string) {
		r := runChaos(t, mode, d)
		rep.Modes = append(rep.Modes, r)
		for _, v := range r.Violations {
			t.Error(v)
		}
	})
	rep.write(t)
}

// chaosWALBound is the most WAL the slot may retain at any moment of the
// run: the replay window's age (chaosWindowAge) of writes, plus the
// longest outage (seconds), is a few MB at the writers' pace; 128 MiB
// leaves room for a slow machine and a PostgreSQL restart's checkpoint.
const chaosWALBound = 128 << 20

// chaosWindowAge is rowcast's ROWCAST_REPLAY_WINDOW_AGE here: short, so
// the window drains before the heap is measured at the end, and long
// enough for every client disconnect the test makes.
const chaosWindowAge = 20 * time.Second

type chaosEnv struct {
	t       *testing.T
	mode    string
	cluster *pgcluster.Cluster
	db, via string
	proxy   *faultProxy
	addr    string
	debug   string
	base    string
	env     []string
	tok     string

	mu      sync.Mutex
	rc      *harness.Rowcast
	killing bool // the current process is being stopped on purpose

	rep *chaosModeReport
	// violations found outside the clients' mirrors.
	vmu        sync.Mutex
	violations []string
	rowCount   atomic.Int64
}

func (e *chaosEnv) violation(format string, args ...any) {
	e.vmu.Lock()
	defer e.vmu.Unlock()
	if len(e.violations) < 200 {
		e.violations = append(e.violations, fmt.Sprintf(format, args...))
	}
}

func runChaos(t *testing.T, mode string, d time.Duration) *chaosModeReport {
	e := &chaosEnv{t: t, mode: mode, rep: &chaosModeReport{Mode: mode, Faults: map[string]int{},
		Resyncs: map[string]int{}, RecoveryMaxMS: map[string]int64{}, Clients: map[string]int{}, WriterErrors: map[string]int{}}}
	e.cluster, e.db, e.via, e.proxy = proxiedCluster(t, nil)
	exec1(t, e.db, `ALTER TABLE tickets ADD COLUMN rev bigint NOT NULL DEFAULT 1;
		CREATE TABLE chaos_other (id bigserial PRIMARY KEY, note text, at timestamptz DEFAULT now())`)
	e.env = []string{"ROWCAST_CAPTURE=" + mode}
	setup(t, e.db, e.env...)
	// The oracle reads the WAL on a slot of its own from before the
	// first write.
	var oracle *walOracle
	if mode == "logical" {
		oracle = newWALOracle(t, e.db)
	}
	exec1(t, e.db, `INSERT INTO tickets (title, status, priority) SELECT 'seed ' || g, 'open', 'low' FROM generate_series(1, 100) g`)
	e.rowCount.Store(100)

	e.addr, e.debug = freeAddr(t), freeAddr(t)
	e.base = "http://" + e.addr
	e.tok = token(t, nil)
	e.startRowcast(true)
	defer e.stopRowcast()
	baseline := e.runtimeFigures()
	e.rep.BaselineGoroutines, e.rep.BaselineHeapBytes = baseline.goroutines, baseline.heap

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var bg sync.WaitGroup
	walCtx, stopWAL := context.WithCancel(ctx)
	defer func() { stopWAL(); bg.Wait() }()
	// The oracle's reader is stopped before its last reads (drain): two
	// readers of one slot make PostgreSQL refuse the second.
	oracleCtx, stopOracle := context.WithCancel(walCtx)
	var ow sync.WaitGroup
	defer func() { stopOracle(); ow.Wait() }()
	if oracle != nil {
		ow.Add(1)
		go func() { defer ow.Done(); oracle.run(oracleCtx) }()
	}
	bg.Add(1)
	go func() { defer bg.Done(); e.sampleDatabase(walCtx) }()

	// Clients.
	var churning atomic.Bool
	churning.Store(true)
	churn := func() bool { return churning.Load() }
	clientCtx, stopClients := context.WithCancel(ctx)
	var clients []*chaosClient
	var cw sync.WaitGroup
	// On any way out, nothing the test started outlives it.
	defer func() { stopClients(); cw.Wait() }()
	add := func(name, transport string, slow, monitor bool, run func(c *chaosClient, ctx context.Context, seed uint64)) *chaosClient {
		c := &chaosClient{m: newMirror(name, transport), base: e.base, tok: e.tok, slow: slow, monitor: monitor, churn: churn}
		if monitor {
			c.churn = func() bool { return false }
		}
		clients = append(clients, c)
		e.rep.Clients[transport]++
		seed := uint64(len(clients))
		cw.Add(1)
		go func() { defer cw.Done(); run(c, clientCtx, seed) }()
		return c
	}
	ws := func(c *chaosClient, ctx context.Context, seed uint64) { c.runWS(ctx, seed) }
	sse := func(c *chaosClient, ctx context.Context, seed uint64) { c.runSSE(ctx, seed) }
	monitor := add("ws-monitor", "ws", false, true, ws)
	add("ws-1", "ws", false, false, ws)
	add("ws-slow", "ws", true, false, ws)
	add("sse-1", "sse", false, false, sse)
	add("sse-slow", "sse", true, false, sse)
	if node, err := sioAvailable(); err == nil {
		add("socketio-1", "socketio", false, false, func(c *chaosClient, ctx context.Context, seed uint64) {
			c.runSIO(ctx, seed, node, t.Logf)
		})
	} else {
		e.rep.Notes = append(e.rep.Notes, "no Socket.IO client: "+err.Error())
		t.Logf("chaos: no Socket.IO client: %v", err)
	}

	// Writers.
	writeCtx, stopWriters := context.WithCancel(ctx)
	var ww sync.WaitGroup
	defer func() { stopWriters(); ww.Wait() }()
	var wstats writerStats
	for w := 0; w < 3; w++ {
		ww.Add(1)
		go func() { defer ww.Done(); e.writer(writeCtx, w, &wstats) }()
	}

	// Faults, one at a time, until the duration is over.
	t.Logf("chaos %s: writers, clients and faults for %v", mode, d)
	began := time.Now()
	e.faults(ctx, began.Add(d), monitor, &wstats)
	stopWriters()
	ww.Wait()
	e.rep.RanSeconds = time.Since(began).Seconds()
	wstats.report(e.rep)

	// Quiet: no more churn; every client catches up.
	t.Logf("chaos %s: writers stopped after %d transactions; waiting for the clients to catch up", mode, e.rep.Transactions)
	churning.Store(false)
	want := e.tableRows()
	wantStats := groupBy(t, e.db)
	waitProgress(t, "every client's mirror to equal the table", patient(time.Minute), func() (bool, int64) {
		var n int64
		done := true
		for _, c := range clients {
			c.m.mu.Lock()
			n += int64(c.m.events + c.m.snapshots)
			stats := c.m.stats
			c.m.mu.Unlock()
			if mirrorDiff(c.m.view(), want) != "" || !statsEqual(stats, wantStats) {
				done = false
			}
		}
		return done, n
	})
	if oracle != nil {
		stopOracle()
		ow.Wait()
		oracle.drain(t)
	}
	stopClients()
	cw.Wait()

	// The oracle.
	t.Logf("chaos %s: checking", mode)
	for _, c := range clients {
		if diff := mirrorDiff(c.m.view(), want); diff != "" {
			e.violation("%s: mirror differs from the table: %s", c.m.name, diff)
		}
		c.m.mu.Lock()
		for _, v := range c.m.violations {
			e.violation("%s", v)
		}
		for reason, n := range c.m.resyncs {
			e.rep.Resyncs[reason] += n
		}
		e.rep.ClientEvents += c.m.events
		e.rep.Resumes += c.m.resumes
		e.rep.Connects += c.m.connects
		e.rep.DuplicatesDropped += c.m.dups
		e.rep.Snapshots += c.m.snapshots
		segs, resyncLog := c.m.segments, c.m.resyncLog
		c.m.mu.Unlock()
		if oracle != nil {
			e.checkSegments(c.m.name, c.m.transport, segs, resyncLog, oracle)
		}
	}
	if mode == "logical" {
		for reason := range e.rep.Resyncs {
			if !truncateResync(reason) {
				e.violation("logical mode: clients were told to resync (%q) with no TRUNCATE to explain it", reason)
			}
		}
		e.rep.WALOracleIDs = oracle.count()
	}

	// Back to the baseline: no client, an empty window, a collection.
	stopWAL()
	bg.Wait()
	chaosHTTP.CloseIdleConnections()
	sseHTTP.CloseIdleConnections()
	for deadline := time.Now().Add(chaosWindowAge + patient(30*time.Second)); ; {
		m := e.scrape()
		clientsLeft := m[`rowcast_clients_connected{transport="ws"}`] + m[`rowcast_clients_connected{transport="sse"}`] +
			m[`rowcast_clients_connected{transport="socketio"}`]
		if clientsLeft == 0 && m["rowcast_replay_window_events"] == 0 {
			break
		}
		if time.Now().After(deadline) {
			e.violation("rowcast still has %v clients and %v events in its window %v after the last client left",
				clientsLeft, m["rowcast_replay_window_events"], chaosWindowAge+patient(30*time.Second))
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.countSlowDrops()
	end := e.runtimeFigures()
	e.rep.EndGoroutines, e.rep.EndHeapBytes = end.goroutines, end.heap
	if end.goroutines > baseline.goroutines+8 {
		e.violation("rowcast has %d goroutines at the end, %d at the start: something did not stop", end.goroutines, baseline.goroutines)
	}
	if end.heap > max(2*baseline.heap, baseline.heap+16<<20) {
		e.violation("rowcast's heap in use is %d bytes at the end, %d at the start", end.heap, baseline.heap)
	}
	if mode == "logical" {
		e.rep.RetainedWALBound = chaosWALBound
		if e.rep.RetainedWALMax > chaosWALBound {
			e.violation("the slot retained %d bytes of WAL, over the bound of %d", e.rep.RetainedWALMax, chaosWALBound)
		}
	}
	e.vmu.Lock()
	e.rep.Violations = append([]string{}, e.violations...)
	e.vmu.Unlock()
	if len(e.rep.Violations) > 0 {
		e.mu.Lock()
		t.Logf("rowcast's log (last process):\n%s", e.rc.Log)
		e.mu.Unlock()
	}
	return e.rep
}

// statsEqual compares stats payloads (decoded JSON).
func statsEqual(got, want map[string]any) bool {
	a, _ := json.Marshal(got)
	b, _ := json.Marshal(want)
	return string(a) == string(b)
}

func truncateResync(reason string) bool {
	return reason == cdc.ReasonTableTruncated || strings.Contains(reason, "older than the replay window")
}

// startRowcast starts rowcast on its fixed address; ready waits for
// /readyz, else /healthz (HTTP up), so that a restart's recovery is
// measured by the probe.
func (e *chaosEnv) startRowcast(ready bool) {
	e.t.Helper()
	path := "/readyz"
	if !ready {
		path = "/healthz"
	}
	rc, err := harness.StartRowcast(context.Background(), harness.RowcastConfig{
		Bin:  rowcastBin,
		Addr: e.addr,
		Env: append([]string{"DATABASE_URL=" + e.via, "JWT_SECRET=" + testSecret, "ROWCAST_DEBUG_LISTEN=" + e.debug, "ROWCAST_STATS_INTERVAL=100ms", "ROWCAST_LOG_LEVEL=info",
			"ROWCAST_REPLAY_WINDOW_AGE=" + chaosWindowAge.String(),
			"ROWCAST_SIO_PING_INTERVAL=3s", "ROWCAST_SIO_PING_TIMEOUT=5s"}, e.env...),
		LogLimit:     4 << 20,
		ReadyPath:    path,
		ReadyTimeout: patient(30 * time.Second),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.mu.Lock()
	e.rc, e.killing = rc, false
	e.mu.Unlock()
	go func() {
		<-rc.Done()
		e.mu.Lock()
		expected := e.killing || e.rc != rc
		e.mu.Unlock()
		if !expected {
			e.violation("rowcast exited by itself (%v); its log:\n%s", rc.Err(), rc.Log.String())
		}
	}()
}

// stopRowcast stops the current process with SIGTERM, as a deploy would.
func (e *chaosEnv) stopRowcast() {
	e.mu.Lock()
	rc := e.rc
	e.killing = true
	e.mu.Unlock()
	if rc == nil {
		return
	}
	if inTime, err := rc.Stop(syscall.SIGTERM, 15*time.Second); !inTime || err != nil {
		e.violation("rowcast did not stop cleanly on SIGTERM (in time: %v): %v", inTime, err)
	}
}

func (e *chaosEnv) current() *harness.Rowcast {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.rc
}

func (e *chaosEnv) scrape() map[string]float64 {
	m, err := harness.Scrape(e.base + "/metrics")
	if err != nil {
		return map[string]float64{}
	}
	return m
}

// countSlowDrops adds the current process's slow-consumer disconnects
// to the report (before it is killed, and at the end).
func (e *chaosEnv) countSlowDrops() {
	m := e.scrape()
	for _, tr := range []string{"ws", "sse", "socketio"} {
		e.rep.SlowConsumerDrops += int(m[`rowcast_slow_consumer_disconnects_total{transport="`+tr+`"}`])
	}
}

type runtimeFigures struct{ goroutines, heap int64 }

// runtimeFigures collects garbage (through the profiling handler's
// gc=1) and reads rowcast's goroutines and heap in use.
func (e *chaosEnv) runtimeFigures() runtimeFigures {
	e.t.Helper()
	resp, err := chaosHTTP.Get("http://" + e.debug + "/debug/pprof/heap?gc=1")
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	m := e.scrape()
	return runtimeFigures{goroutines: int64(m["go_goroutines"]), heap: int64(m["go_memstats_heap_inuse_bytes"])}
}

// tableRows reads the table as the oracle compares it.
func (e *chaosEnv) tableRows() map[string]map[string]any {
	e.t.Helper()
	conn := connectDB(e.t, e.db)
	rows, err := conn.Query(context.Background(), `SELECT row_to_json(t)::text FROM tickets t`)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]map[string]any{}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			e.t.Fatal(err)
		}
		var r map[string]any
		dec := json.NewDecoder(strings.NewReader(s))
		dec.UseNumber()
		if err := dec.Decode(&r); err != nil {
			e.t.Fatal(err)
		}
		out[fmt.Sprint(r["id"])] = r
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// chaosColumns are the columns compared; timestamps are compared as
// instants.
var chaosColumns = []string{"id", "rev", "title", "description", "status", "priority", "category", "requester_email", "assignee_email"}

// mirrorDiff says how a mirror differs from the table ("" when equal).
func mirrorDiff(view, table map[string]map[string]any) string {
	if len(view) != len(table) {
		var extra, missing []string
		for k := range view {
			if table[k] == nil {
				extra = append(extra, k)
			}
		}
		for k := range table {
			if view[k] == nil {
				missing = append(missing, k)
			}
		}
		sort.Strings(extra)
		sort.Strings(missing)
		return fmt.Sprintf("%d rows, the table has %d (rows the table lacks: %v; rows missing: %v)", len(view), len(table), clipList(extra), clipList(missing))
	}
	keys := make([]string, 0, len(table))
	for k := range table {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v, tr := view[k], table[k]
		if v == nil {
			return "row " + k + " missing"
		}
		for _, col := range chaosColumns {
			if fmt.Sprint(v[col]) != fmt.Sprint(tr[col]) {
				return fmt.Sprintf("row %s: %s is %.60q, the table has %.60q", k, col, fmt.Sprint(v[col]), fmt.Sprint(tr[col]))
			}
		}
		for _, col := range []string{"created_at", "updated_at"} {
			a, err1 := time.Parse(time.RFC3339Nano, fmt.Sprint(v[col]))
			b, err2 := time.Parse(time.RFC3339Nano, fmt.Sprint(tr[col]))
			if err1 != nil || err2 != nil || !a.Equal(b) {
				return fmt.Sprintf("row %s: %s is %v, the table has %v", k, col, v[col], tr[col])
			}
		}
	}
	return ""
}

func clipList(l []string) []string {
	if len(l) > 10 {
		return append(l[:10:10], fmt.Sprintf("and %d more", len(l)-10))
	}
	return l
}

// sampleDatabase records, every second, the slot's retained WAL (logical
// mode) and the table's size (which the writers keep bounded).
func (e *chaosEnv) sampleDatabase(ctx context.Context) {
	for ctx.Err() == nil {
		conn, err := pgx.Connect(ctx, e.db)
		if err != nil {
			if !sleepCtx(ctx, 200*time.Millisecond) {
				return
			}
			continue
		}
		for ctx.Err() == nil {
			var n int64
			var retained *int64
			err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM tickets),
				(SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = 'rowcast')`).Scan(&n, &retained)
			if err != nil {
				break
			}
			e.rowCount.Store(n)
			if retained != nil {
				e.vmu.Lock()
				e.rep.RetainedWALMax = max(e.rep.RetainedWALMax, *retained)
				e.vmu.Unlock()
			}
			if !sleepCtx(ctx, time.Second) {
				break
			}
		}
		conn.Close(context.Background())
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// writerStats counts what the writers committed.
type writerStats struct {
	tx, rows, inserts, updates, deletes, keyChanges, large, multi, other, truncates atomic.Int64
	mu                                                                              sync.Mutex
	errors                                                                          map[string]int
}

func (w *writerStats) report(r *chaosModeReport) {
	r.Transactions, r.RowChanges = w.tx.Load(), w.rows.Load()
	r.Inserts, r.Updates, r.Deletes = w.inserts.Load(), w.updates.Load(), w.deletes.Load()
	r.KeyChanges, r.LargeRows, r.MultiRowTx, r.OtherTableTx, r.Truncates = w.keyChanges.Load(), w.large.Load(), w.multi.Load(), w.other.Load(), w.truncates.Load()
	w.mu.Lock()
	for k, v := range w.errors {
		r.WriterErrors[k] += v
	}
	w.mu.Unlock()
}

var (
	chaosStatuses   = []string{"open", "in_progress", "resolved", "closed"}
	chaosPriorities = []string{"low", "medium", "high", "urgent"}
)

// bigText is a description over NOTIFY's 8000-byte limit.
func bigText(rng *rand.Rand) string {
	var b strings.Builder
	n := 9000 + rng.IntN(12000)
	for b.Len() < n {
		fmt.Fprintf(&b, "line %d of a long description; ", rng.IntN(1e6))
	}
	return b.String()
}

// pick is a random ticket the writers may change (never a probe).
const pick = `(SELECT id FROM tickets WHERE title NOT LIKE 'probe-%' ORDER BY random() LIMIT 1)`

// writer changes tickets until ctx ends, reconnecting after faults.
func (e *chaosEnv) writer(ctx context.Context, w int, st *writerStats) {
	rng := rand.New(rand.NewPCG(uint64(w)+1, uint64(time.Now().UnixNano())))
	pace := 15 * time.Millisecond
	if raceEnabled {
		pace = 60 * time.Millisecond
	}
	for ctx.Err() == nil {
		conn, err := pgx.Connect(ctx, e.db)
		if err != nil {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		for ctx.Err() == nil {
			if err := e.writeOnce(ctx, conn, rng, st); err != nil {
				if ctx.Err() != nil {
					break
				}
				st.mu.Lock()
				if st.errors == nil {
					st.errors = map[string]int{}
				}
				kind, expected := classifyWriteError(err)
				st.errors[kind]++
				st.mu.Unlock()
				if !expected {
					e.violation("a writer's statement failed: %v", err)
				}
				if conn.IsClosed() {
					break
				}
			}
			sleepCtx(ctx, time.Duration(rng.IntN(int(2*pace))))
		}
		conn.Close(context.Background())
	}
}

// classifyWriteError names an error and says whether faults explain it
// (a lost connection, a server shutting down, a deadlock between two
// writers); any other means rowcast broke a writer's statement.
func classifyWriteError(err error) (string, bool) {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "40P01":
			return "deadlock", true
		case "40001":
			return "serialization", true
		case "57P01", "57P02", "57P03", "08006", "08003", "08000":
			return "server shutdown", true
		case "25P02":
			return "aborted transaction", true
		}
		return "SQLSTATE " + pe.Code, false
	}
	return "connection", true
}

// writeOnce commits one random transaction.
func (e *chaosEnv) writeOnce(ctx context.Context, conn *pgx.Conn, rng *rand.Rand, st *writerStats) error {
	size := e.rowCount.Load()
	r := rng.IntN(100)
	switch {
	case size > 220 && r < 50:
		r = 55 // delete
	case size < 60 && r >= 45:
		r = 40 // insert
	}
	var rows int64
	var kind func()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	exec := func(sql string, args ...any) error {
		tag, err := tx.Exec(ctx, sql, args...)
		rows += tag.RowsAffected()
		return err
	}
	update := func(large bool) error {
		if large {
			st.large.Add(1)
			return exec(`UPDATE tickets SET description = $1, rev = rev + 1, updated_at = now() WHERE id = `+pick, bigText(rng))
		}
		return exec(`UPDATE tickets SET status = $1, priority = $2, title = $3, rev = rev + 1, updated_at = now() WHERE id = `+pick,
			chaosStatuses[rng.IntN(4)], chaosPriorities[rng.IntN(4)], fmt.Sprint("t", rng.IntN(1e6)))
	}
	insert := func(large bool) error {
		desc := any(nil)
		if large {
			st.large.Add(1)
			desc = bigText(rng)
		}
		return exec(`INSERT INTO tickets (title, description, status, priority, category) VALUES ($1, $2, $3, $4, $5)`,
			fmt.Sprint("n", rng.IntN(1e6)), desc, chaosStatuses[rng.IntN(4)], chaosPriorities[rng.IntN(4)], []string{"hardware", "software", "network"}[rng.IntN(3)])
	}
	switch {
	case r < 30:
		kind = func() { st.updates.Add(rows) }
		err = update(rng.IntN(12) == 0)
	case r < 48:
		kind = func() { st.inserts.Add(rows) }
		err = insert(rng.IntN(10) == 0)
	case r < 58:
		kind = func() { st.deletes.Add(rows) }
		err = exec(`DELETE FROM tickets WHERE id = ` + pick)
	case r < 75:
		// Several rows, one of them changed twice (and back).
		kind = func() { st.multi.Add(1); st.updates.Add(rows) }
		var id int64
		if err = tx.QueryRow(ctx, pick).Scan(&id); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			return err
		}
		for i := 0; i < 2+rng.IntN(3) && err == nil; i++ {
			switch rng.IntN(4) {
			case 0:
				err = exec(`UPDATE tickets SET status = 'closed', rev = rev + 1 WHERE id = $1`, id)
				if err == nil {
					err = exec(`UPDATE tickets SET status = 'open', rev = rev + 1 WHERE id = $1`, id)
				}
				if err == nil {
					err = exec(`UPDATE tickets SET status = 'closed', rev = rev + 1 WHERE id = $1`, id)
				}
			case 1:
				err = insert(false)
			case 2:
				err = update(false)
			case 3:
				err = exec(`DELETE FROM tickets WHERE id = `+pick+` AND id <> $1`, id)
			}
		}
	case r < 82:
		kind = func() { st.keyChanges.Add(rows) }
		err = exec(`UPDATE tickets SET id = nextval('tickets_id_seq'), rev = rev + 1 WHERE id = ` + pick)
	case r < 92:
		kind = func() { st.other.Add(1); st.updates.Add(rows) }
		err = exec(`INSERT INTO chaos_other (note) VALUES ($1)`, fmt.Sprint("note ", rng.IntN(1e6)))
		rows = 0
		if err == nil {
			err = update(false)
		}
	default:
		kind = func() { st.other.Add(1) }
		err = exec(`INSERT INTO chaos_other (note) SELECT 'bulk ' || g FROM generate_series(1, $1::int) g`, 1+rng.IntN(20))
		rows = 0
	}
	if err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	st.tx.Add(1)
	st.rows.Add(rows)
	kind()
	return nil
}

// chaosFaults are the faults injected, one at a time.
var chaosFaults = []string{"kill -9 and restart", "PostgreSQL restart (fast)", "PostgreSQL restart (immediate)",
	"pg_terminate_backend", "SIGSTOP/SIGCONT", "connection cut", "black hole, then healed", "black hole, then cut"}

// faults injects faults until deadline; after each, a probe (a ticket
// change) must reach the monitor client: the time it takes is the
// recovery. Now and then a TRUNCATE is written between faults.
func (e *chaosEnv) faults(ctx context.Context, deadline time.Time, monitor *chaosClient, st *writerStats) {
	// Long runs also black-hole the connection for longer than capture
	// waits for the server (see cdc/liveness.go): it must give up,
	// reconnect once the network is back, and lose nothing (logical) or
	// say so (notify).
	long := time.Until(deadline) >= 10*time.Minute
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	probe := 0
	nextTruncate := time.Now().Add(time.Duration(20+rng.IntN(20)) * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if !sleepCtx(ctx, time.Duration(2000+rng.IntN(4000))*time.Millisecond) {
			return
		}
		if time.Now().After(nextTruncate) {
			e.truncate(ctx, st)
			nextTruncate = time.Now().Add(time.Duration(30+rng.IntN(30)) * time.Second)
		}
		faults := chaosFaults
		if long {
			faults = append(faults[:len(faults):len(faults)], "black hole for 40s")
		}
		kind := faults[rng.IntN(len(faults))]
		ended, err := e.inject(ctx, kind, rng)
		if err != nil {
			e.violation("fault %q could not be injected: %v", kind, err)
			return
		}
		e.rep.Faults[kind]++
		probe++
		title := fmt.Sprintf("probe-%d", probe)
		if err := e.writeProbe(ctx, title); err != nil {
			e.violation("after %q: writing the probe: %v", kind, err)
			return
		}
		ok := false
		for wait := time.Now().Add(patient(30 * time.Second)); time.Now().Before(wait); {
			if hasTitle(monitor.m, title) {
				ok = true
				break
			}
			if !sleepCtx(ctx, 10*time.Millisecond) {
				return
			}
		}
		if !ok {
			e.violation("after %q, a change did not reach a client within %v: no recovery", kind, patient(30*time.Second))
			return
		}
		ms := time.Since(ended).Milliseconds()
		e.t.Logf("chaos %s: %s, recovered in %d ms", e.mode, kind, ms)
		e.rep.RecoveryMaxMS[kind] = max(e.rep.RecoveryMaxMS[kind], ms)
		if ms > e.rep.LongestRecoveryMS {
			e.rep.LongestRecoveryMS, e.rep.LongestRecoveryFault = ms, kind
		}
	}
}

func hasTitle(m *mirror, title string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.rows {
		if r.data["title"] == title {
			return true
		}
	}
	return false
}

// writeProbe replaces the last probe with a new one, retrying while
// PostgreSQL comes back.
func (e *chaosEnv) writeProbe(ctx context.Context, title string) error {
	var last error
	for deadline := time.Now().Add(patient(time.Minute)); time.Now().Before(deadline); {
		conn, err := pgx.Connect(ctx, e.db)
		if err == nil {
			err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `DELETE FROM tickets WHERE title LIKE 'probe-%'`); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `INSERT INTO tickets (title) VALUES ($1)`, title)
				return err
			})
			conn.Close(context.Background())
			if err == nil {
				return nil
			}
		}
		last = err
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
	return last
}

// truncate empties the table and puts a few rows back, in one
// transaction.
func (e *chaosEnv) truncate(ctx context.Context, st *writerStats) {
	conn, err := pgx.Connect(ctx, e.db)
	if err == nil {
		_, err = conn.Exec(ctx, `BEGIN; TRUNCATE tickets; INSERT INTO tickets (title, status, priority) SELECT 'after truncate ' || g, 'open', 'medium' FROM generate_series(1, 80) g; COMMIT`)
		conn.Close(context.Background())
	}
	if err != nil {
		if _, expected := classifyWriteError(err); !expected {
			e.violation("TRUNCATE failed: %v", err)
		}
		return
	}
	st.truncates.Add(1)
	st.tx.Add(1)
	st.rows.Add(80)
	st.inserts.Add(80)
}

// inject runs one fault and returns when it ended (rowcast restarted,
// resumed, the network healed, PostgreSQL back).
func (e *chaosEnv) inject(ctx context.Context, kind string, rng *rand.Rand) (ended time.Time, err error) {
	switch kind {
	case "kill -9 and restart":
		e.countSlowDrops()
		e.mu.Lock()
		rc := e.rc
		e.killing = true
		e.mu.Unlock()
		if err := rc.Kill(); err != nil && !strings.Contains(err.Error(), "killed") {
			return time.Time{}, err
		}
		e.startRowcast(false)
	case "PostgreSQL restart (fast)", "PostgreSQL restart (immediate)":
		m := "fast"
		if strings.Contains(kind, "immediate") {
			m = "immediate"
		}
		if err := e.cluster.Restart(ctx, m); err != nil {
			return time.Time{}, err
		}
	case "pg_terminate_backend":
		conn, err := pgx.Connect(ctx, e.db)
		if err != nil {
			return time.Time{}, err
		}
		_, err = conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'rowcast%' AND pid <> pg_backend_pid()`)
		conn.Close(context.Background())
		if err != nil {
			return time.Time{}, err
		}
	case "SIGSTOP/SIGCONT":
		rc := e.current()
		if err := rc.Pause(); err != nil {
			return time.Time{}, err
		}
		sleepCtx(ctx, time.Duration(500+rng.IntN(4500))*time.Millisecond)
		if err := rc.Resume(); err != nil {
			return time.Time{}, err
		}
	case "connection cut":
		e.proxy.Cut()
	case "black hole for 40s":
		e.proxy.Blackhole()
		sleepCtx(ctx, 40*time.Second)
		e.proxy.Heal()
	case "black hole, then healed", "black hole, then cut":
		e.proxy.Blackhole()
		sleepCtx(ctx, time.Duration(500+rng.IntN(7500))*time.Millisecond)
		if strings.HasSuffix(kind, "cut") {
			e.proxy.CutAndHeal()
		} else {
			e.proxy.Heal()
		}
	}
	return time.Now(), nil
}

// checkSegments compares what a client received after each snapshot with
// the ids the WAL holds (logical mode): every id after the snapshot's
// cursor, in order, none twice, up to the next TRUNCATE when a resync
// ended the segment, up to the last one otherwise.
func (e *chaosEnv) checkSegments(name, transport string, segs []segment, resyncLog []string, o *walOracle) {
	exp, truncs := o.sorted()
	for i, s := range segs {
		if !s.hasCur {
			e.violation("%s: snapshot %d had no cursor", name, i+1)
			continue
		}
		lo := sort.Search(len(exp), func(j int) bool { return s.cursor.Less(exp[j]) })
		hi := len(exp)
		switch {
		case s.endedBy == refetched:
			// The next snapshot shows what came after it.
			if i+1 < len(segs) && segs[i+1].hasCur {
				next := segs[i+1].cursor
				hi = sort.Search(len(exp), func(j int) bool { return next.Less(exp[j]) })
			}
		case s.endedBy != "":
			// The resync answers the position the client resumed from:
			// the snapshot's cursor or a later id, or for Socket.IO the
			// socket's offset, which may be older than the snapshot.
			from := s.cursor
			if s.hasResumedFrom && s.resumedFrom.Less(from) {
				from = s.resumedFrom
			}
			t := sort.Search(len(truncs), func(j int) bool { return from.Less(truncs[j]) })
			if from.Less(s.cursor) && strings.Contains(s.endedBy, "older than the replay window") {
				// The socket's offset predates the snapshot the client
				// holds: the window may have let it go (its commit is
				// older than the window's age) with nothing lost, since
				// the snapshot holds what came after it. What the
				// segment received is a prefix of what followed.
				break
			}
			if t == len(truncs) {
				e.violation("%s: resync %q after %s (resumed from %s) with no TRUNCATE after it (the client's resyncs: %s)", name, s.endedBy, s.cursor, from, strings.Join(resyncLog, "; "))
				continue
			}
			if s.cursor.Less(truncs[t]) {
				hi = sort.Search(len(exp), func(j int) bool { return !exp[j].Less(truncs[t]) })
			}
			// Else the TRUNCATE came before the snapshot: what the
			// segment received is a prefix of what followed it.
		}
		want := exp[lo:max(lo, hi)]
		got := s.ids
		if transport == "socketio" && len(got) > 0 {
			// Socket.IO recovers from the offset of the last event its
			// socket received, not from the snapshot's cursor, and that
			// offset can be past the cursor: a rowcast that has just
			// restarted gives the slot's start as a snapshot's cursor.
			// What the socket received before the snapshot is in the
			// snapshot's rows (the revision checks would see a change
			// missing from both); from its first id on, the run must be
			// the WAL's, without a gap.
			k := sort.Search(len(want), func(j int) bool { return !want[j].Less(got[0]) })
			if k < len(want) && want[k].Pos == got[0].Pos && want[k].Index == got[0].Index {
				want = want[k:]
			}
		}
		if s.endedBy != "" && len(got) < len(want) {
			// A client away when the TRUNCATE came resumes into a
			// resync: what it did not get before is gone with the rows.
			want = want[:len(got)]
		}
		if len(got) != len(want) {
			e.violation("%s: after snapshot %d (cursor %s) it received %d ids, the WAL holds %d%s", name, i+1, s.cursor, len(got), len(want), firstDiff(got, want))
			continue
		}
		if d := firstDiff(got, want); d != "" {
			e.violation("%s: after snapshot %d (cursor %s)%s", name, i+1, s.cursor, d)
		}
	}
}

func firstDiff(got, want []rowcast.EventID) string {
	for i := range min(len(got), len(want)) {
		if got[i].Pos != want[i].Pos || got[i].Index != want[i].Index {
			return fmt.Sprintf("; first difference at %d: got %s, the WAL has %s", i, got[i], want[i])
		}
	}
	return ""
}

// walOracle reads the WAL on a logical slot of its own through the SQL
// interface and notes the id of every change rowcast must send (commit
// LSN and index in the transaction, a key change taking two), and of
// every TRUNCATE. It shares no code with rowcast's capture.
type walOracle struct {
	t  *testing.T
	db string

	mu     sync.Mutex
	ids    map[[2]uint64]bool
	truncs map[[2]uint64]bool
	rels   map[uint32]oracleRel
	// the transaction being read
	pos   uint64
	index uint32
}

type oracleRel struct {
	tickets bool
	key     int // column index of id
}

func newWALOracle(t *testing.T, db string) *walOracle {
	exec1(t, db, `SELECT pg_create_logical_replication_slot('chaos_oracle', 'pgoutput')`)
	return &walOracle{t: t, db: db, ids: map[[2]uint64]bool{}, truncs: map[[2]uint64]bool{}, rels: map[uint32]oracleRel{}}
}

// run reads changes until ctx ends, reconnecting after faults.
func (o *walOracle) run(ctx context.Context) {
	for ctx.Err() == nil {
		conn, err := pgx.Connect(ctx, o.db)
		if err != nil {
			sleepCtx(ctx, 200*time.Millisecond)
			continue
		}
		for ctx.Err() == nil {
			n, err := o.read(ctx, conn)
			if err != nil {
				break
			}
			if n == 0 && !sleepCtx(ctx, 500*time.Millisecond) {
				break
			}
		}
		conn.Close(context.Background())
	}
}

// drain reads until the slot has nothing more. The background reader
// has stopped; its backend may still hold the slot for a moment after
// its query was cancelled, which is waited out.
func (o *walOracle) drain(t *testing.T) {
	conn := connectDB(t, o.db)
	deadline := time.Now().Add(time.Minute)
	for i := 0; i < 3; {
		n, err := o.read(context.Background(), conn)
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "55006" && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond) // the slot is still active for the stopped reader's backend
			continue
		}
		if err != nil {
			t.Fatalf("reading the oracle's slot: %v", err)
		}
		if n == 0 {
			i++
		}
	}
}

// read takes what the slot holds (at most 20,000 messages) and returns
// how many messages it read. A batch read twice (the connection failed
// after PostgreSQL sent it) is noted once.
func (o *walOracle) read(ctx context.Context, conn *pgx.Conn) (int, error) {
	rows, err := conn.Query(ctx, `SELECT data FROM pg_logical_slot_get_binary_changes('chaos_oracle', NULL, 20000,
		'proto_version', '1', 'publication_names', 'rowcast')`)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	o.mu.Lock()
	defer o.mu.Unlock()
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return n, err
		}
		n++
		msg, err := pglogrepl.Parse(data)
		if err != nil {
			return n, err
		}
		switch m := msg.(type) {
		case *pglogrepl.RelationMessage:
			r := oracleRel{tickets: m.Namespace == "public" && m.RelationName == "tickets", key: -1}
			for i, c := range m.Columns {
				if c.Name == "id" {
					r.key = i
				}
			}
			o.rels[m.RelationID] = r
		case *pglogrepl.BeginMessage:
			o.pos, o.index = uint64(m.FinalLSN), 0
		case *pglogrepl.InsertMessage:
			if o.rels[m.RelationID].tickets {
				o.note(false)
			}
		case *pglogrepl.DeleteMessage:
			if o.rels[m.RelationID].tickets {
				o.note(false)
			}
		case *pglogrepl.UpdateMessage:
			r := o.rels[m.RelationID]
			if !r.tickets {
				continue
			}
			if m.OldTuple != nil && string(m.OldTuple.Columns[r.key].Data) != string(m.NewTuple.Columns[r.key].Data) {
				o.note(false) // the delete of the old key
			}
			o.note(false)
		case *pglogrepl.TruncateMessage:
			for _, id := range m.RelationIDs {
				if o.rels[id].tickets {
					o.note(true)
				}
			}
		}
	}
	return n, rows.Err()
}

func (o *walOracle) note(truncate bool) {
	k := [2]uint64{o.pos, uint64(o.index)}
	o.index++
	if truncate {
		o.truncs[k] = true
	} else {
		o.ids[k] = true
	}
}

func (o *walOracle) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.ids)
}

// sorted returns the change ids and the TRUNCATE ids in WAL order.
func (o *walOracle) sorted() (ids, truncs []rowcast.EventID) {
	o.mu.Lock()
	defer o.mu.Unlock()
	conv := func(m map[[2]uint64]bool) []rowcast.EventID {
		out := make([]rowcast.EventID, 0, len(m))
		for k := range m {
			out = append(out, rowcast.EventID{Pos: k[0], Index: uint32(k[1])})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
		return out
	}
	return conv(o.ids), conv(o.truncs)
}

// chaosReport is what TestChaos writes for RELIABILITY.md.
type chaosReport struct {
	Started  string             `json:"started"`
	Duration string             `json:"durationPerMode"`
	Race     bool               `json:"raceDetector"`
	Commit   string             `json:"commit,omitempty"`
	Modes    []*chaosModeReport `json:"modes"`
}

type chaosModeReport struct {
	Mode                                                                                  string           `json:"mode"`
	RanSeconds                                                                            float64          `json:"ranSeconds"`
	Transactions                                                                          int64            `json:"transactions"`
	RowChanges                                                                            int64            `json:"rowChanges"`
	Inserts, Updates, Deletes, KeyChanges, LargeRows, MultiRowTx, OtherTableTx, Truncates int64            `json:"-"`
	WriterErrors                                                                          map[string]int   `json:"writerErrors"`
	Clients                                                                               map[string]int   `json:"clients"`
	ClientEvents                                                                          int              `json:"clientEvents"`
	Connects                                                                              int              `json:"connects"`
	Resumes                                                                               int              `json:"resumes"`
	Snapshots                                                                             int              `json:"snapshots"`
	SlowConsumerDrops                                                                     int              `json:"slowConsumerDrops"`
	DuplicatesDropped                                                                     int              `json:"duplicatesDropped"`
	Resyncs                                                                               map[string]int   `json:"resyncs"`
	Faults                                                                                map[string]int   `json:"faults"`
	RecoveryMaxMS                                                                         map[string]int64 `json:"recoveryMaxMs"`
	LongestRecoveryMS                                                                     int64            `json:"longestRecoveryMs"`
	LongestRecoveryFault                                                                  string           `json:"longestRecoveryFault"`
	RetainedWALMax                                                                        int64            `json:"retainedWalMaxBytes,omitempty"`
	RetainedWALBound                                                                      int64            `json:"retainedWalBoundBytes,omitempty"`
	WALOracleIDs                                                                          int              `json:"walOracleIds,omitempty"`
	BaselineGoroutines, EndGoroutines, BaselineHeapBytes, EndHeapBytes                    int64            `json:"-"`
	Notes                                                                                 []string         `json:"notes,omitempty"`
	Violations                                                                            []string         `json:"violations"`
}

func (r *chaosModeReport) MarshalJSON() ([]byte, error) {
	type plain chaosModeReport
	return json.Marshal(struct {
		*plain
		Writes  map[string]int64 `json:"writes"`
		Runtime map[string]int64 `json:"runtime"`
	}{(*plain)(r), map[string]int64{"inserts": r.Inserts, "updates": r.Updates, "deletes": r.Deletes,
		"keyChanges": r.KeyChanges, "rowsOver8KB": r.LargeRows, "multiRowTransactions": r.MultiRowTx,
		"otherTableTransactions": r.OtherTableTx, "truncates": r.Truncates},
		map[string]int64{"baselineGoroutines": r.BaselineGoroutines, "endGoroutines": r.EndGoroutines,
			"baselineHeapInuseBytes": r.BaselineHeapBytes, "endHeapInuseBytes": r.EndHeapBytes}})
}

// write saves the report where the environment says.
func (rep *chaosReport) write(t *testing.T) {
	if out, err := gitOutput("describe", "--always", "--dirty"); err == nil {
		rep.Commit = out
	}
	if path := os.Getenv("ROWCAST_CHAOS_REPORT"); path != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Errorf("writing %s: %v", path, err)
		}
	}
	if path := os.Getenv("ROWCAST_CHAOS_MARKDOWN"); path != "" {
		if err := replaceSection(path, rep.markdown()); err != nil {
			t.Errorf("writing %s: %v", path, err)
		}
	}
}

func gitOutput(args ...string) (string, error) {
	out, err := exec.Command("git", args...).Output()
	return strings.TrimSpace(string(out)), err
}

const (
	chaosBegin = "<!-- chaos figures: begin (generated by TestChaos; do not edit) -->"
	chaosEnd   = "<!-- chaos figures: end -->"
)

// replaceSection puts text between the markers of the file at path.
func replaceSection(path, text string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	i, j := strings.Index(s, chaosBegin), strings.Index(s, chaosEnd)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %q ... %q section", path, chaosBegin, chaosEnd)
	}
	s = s[:i+len(chaosBegin)] + "\n" + text + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}

func (rep *chaosReport) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run of %s, %s per capture mode, commit `%s`", rep.Started, rep.Duration, rep.Commit)
	if rep.Race {
		b.WriteString(", rowcast built with the race detector")
	}
	b.WriteString(".\n\n")
	row := func(label string, f func(r *chaosModeReport) string) {
		fmt.Fprintf(&b, "| %s |", label)
		for _, r := range rep.Modes {
			fmt.Fprintf(&b, " %s |", f(r))
		}
		b.WriteString("\n")
	}
	b.WriteString("| |")
	for _, r := range rep.Modes {
		fmt.Fprintf(&b, " %s |", r.Mode)
	}
	b.WriteString("\n|---|")
	for range rep.Modes {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	num := func(n int64) string { return strconv.FormatInt(n, 10) }
	row("ran for", func(r *chaosModeReport) string { return (time.Duration(r.RanSeconds) * time.Second).String() })
	row("transactions committed", func(r *chaosModeReport) string { return num(r.Transactions) })
	row("row changes committed", func(r *chaosModeReport) string { return num(r.RowChanges) })
	row("of which inserts / updates / deletes", func(r *chaosModeReport) string {
		return fmt.Sprintf("%d / %d / %d", r.Inserts, r.Updates, r.Deletes)
	})
	row("primary-key changes", func(r *chaosModeReport) string { return num(r.KeyChanges) })
	row("rows written over 8 KB", func(r *chaosModeReport) string { return num(r.LargeRows) })
	row("multi-row transactions (one row changed away and back)", func(r *chaosModeReport) string { return num(r.MultiRowTx) })
	row("transactions writing another table", func(r *chaosModeReport) string { return num(r.OtherTableTx) })
	row("TRUNCATEs", func(r *chaosModeReport) string { return num(r.Truncates) })
	row("writer errors (all from faults)", func(r *chaosModeReport) string { return mapText(r.WriterErrors) })
	row("clients", func(r *chaosModeReport) string { return mapText(r.Clients) })
	row("events applied by clients", func(r *chaosModeReport) string { return strconv.Itoa(r.ClientEvents) })
	row("connections / resumes with the last id", func(r *chaosModeReport) string { return fmt.Sprintf("%d / %d", r.Connects, r.Resumes) })
	row("snapshots loaded", func(r *chaosModeReport) string { return strconv.Itoa(r.Snapshots) })
	row("slow-consumer disconnects (4008)", func(r *chaosModeReport) string { return strconv.Itoa(r.SlowConsumerDrops) })
	row("events received twice and dropped by id", func(r *chaosModeReport) string { return strconv.Itoa(r.DuplicatesDropped) })
	row("resyncs, by reason", func(r *chaosModeReport) string { return mapText(r.Resyncs) })
	row("faults", func(r *chaosModeReport) string { return mapText(r.Faults) })
	row("longest recovery (fault end to a change on a client)", func(r *chaosModeReport) string {
		return fmt.Sprintf("%.1f s (%s)", float64(r.LongestRecoveryMS)/1000, r.LongestRecoveryFault)
	})
	row("longest recovery by fault", func(r *chaosModeReport) string {
		m := map[string]int{}
		for k, v := range r.RecoveryMaxMS {
			m[k] = int(v)
		}
		return mapText(m) + " ms"
	})
	row("WAL retained by the slot, at most", func(r *chaosModeReport) string {
		if r.RetainedWALBound == 0 {
			return "(no slot)"
		}
		return fmt.Sprintf("%.1f MiB (bound %d MiB)", float64(r.RetainedWALMax)/(1<<20), r.RetainedWALBound>>20)
	})
	row("ids checked against the WAL", func(r *chaosModeReport) string {
		if r.WALOracleIDs == 0 {
			return "(notify ids are rowcast's own)"
		}
		return strconv.Itoa(r.WALOracleIDs)
	})
	row("rowcast goroutines, start → end", func(r *chaosModeReport) string {
		return fmt.Sprintf("%d → %d", r.BaselineGoroutines, r.EndGoroutines)
	})
	row("rowcast heap in use, start → end", func(r *chaosModeReport) string {
		return fmt.Sprintf("%.1f → %.1f MiB", float64(r.BaselineHeapBytes)/(1<<20), float64(r.EndHeapBytes)/(1<<20))
	})
	row("oracle violations", func(r *chaosModeReport) string { return strconv.Itoa(len(r.Violations)) })
	for _, r := range rep.Modes {
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "\nNote (%s): %s\n", r.Mode, n)
		}
		for _, v := range r.Violations {
			fmt.Fprintf(&b, "\nViolation (%s): %s\n", r.Mode, v)
		}
	}
	return b.String()
}

func mapText[V int | int64](m map[string]V) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, m[k])
	}
	return strings.Join(parts, "; ")
}
