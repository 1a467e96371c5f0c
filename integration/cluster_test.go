package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"rowcast/integration/harness"
	"rowcast/integration/natscluster"
)

// Cluster mode end to end: a real PostgreSQL, a real 3-server NATS
// JetStream cluster (in this process, on loopback ports) and three rowcast
// processes. Every check is an oracle: each client's count of events, the
// order of their ids (a viewer fails on a duplicate or a reordering), its
// resyncs, and its view against the table.

// startNATS starts a 3-server JetStream cluster for the test.
func startNATS(t *testing.T) *natscluster.Cluster {
	t.Helper()
	nc, err := natscluster.Start(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Stop)
	return nc
}

// clusterEnv is the environment of every node of a test's cluster.
func clusterEnv(db string, nc *natscluster.Cluster, extra ...string) []string {
	return append([]string{"ROWCAST_CAPTURE=logical", "ROWCAST_SLOT=" + slotName(db),
		"ROWCAST_NATS_URL=" + nc.URLs(), "ROWCAST_NATS_STREAM=ROWCAST", "ROWCAST_NATS_REPLICAS=3",
		"ROWCAST_LOG_LEVEL=info",
		// The clients' queues hold every event: these tests are about
		// failures, and slow consumers have their own tests.
		"ROWCAST_SEND_QUEUE=100000"}, extra...)
}

// startNodes prepares db and starts n rowcast nodes.
func startNodes(t *testing.T, db string, env []string, n int) []*server {
	t.Helper()
	setup(t, db, env...)
	var nodes []*server
	for i := 0; i < n; i++ {
		nodes = append(nodes, startServer(t, db, env...))
	}
	return nodes
}

// leaderOf returns the index of the node that captures, or -1.
func leaderOf(t *testing.T, nodes []*server, skip int) int {
	t.Helper()
	for i, s := range nodes {
		if i == skip {
			continue
		}
		m, err := harness.Scrape(s.base + "/metrics")
		if err != nil {
			continue
		}
		if m["rowcast_cluster_leader"] == 1 && m["rowcast_capture_connected"] == 1 {
			return i
		}
	}
	return -1
}

// waitLeader waits until a node other than skip captures.
func waitLeader(t *testing.T, nodes []*server, skip int) int {
	t.Helper()
	deadline := time.Now().Add(patient(30 * time.Second))
	for {
		if i := leaderOf(t, nodes, skip); i >= 0 {
			return i
		}
		if time.Now().After(deadline) {
			t.Fatal("no node captures")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// connected reports whether the viewer's connection is still open.
func (v *viewer) connected() bool {
	v.mu.Lock()
	done := v.done
	v.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// moveTo reconnects the viewer to s with its last id, as a client whose
// node died would reconnect to another behind a load balancer.
func (v *viewer) moveTo(s *server) {
	v.t.Helper()
	v.disconnect()
	v.s = s
	if err := v.connect(); err != nil {
		v.t.Fatal(err)
	}
}

// clone returns a viewer with v's view and cursor, not connected.
func (v *viewer) clone(s *server) *viewer {
	v.mu.Lock()
	defer v.mu.Unlock()
	c := newViewer(v.t, s, v.token)
	c.lastID, c.last, c.events = v.lastID, v.last, v.events
	for k, r := range v.rows {
		c.rows[k] = r
	}
	return c
}

// converge waits until every viewer has seen total changes, without a
// resync, and holds the table's content.
func converge(t *testing.T, db string, total int64, viewers []*viewer) {
	t.Helper()
	want := tableTitles(t, db)
	for i, v := range viewers {
		waitProgress(t, fmt.Sprintf("viewer %d catching up", i), patient(20*time.Second), func() (bool, int64) {
			n, resyncs, err := v.state()
			if err != nil {
				t.Fatalf("viewer %d: %v", i, err)
			}
			if resyncs != 0 {
				t.Fatalf("viewer %d: %d resync events", i, resyncs)
			}
			if int64(n) > total {
				t.Fatalf("viewer %d saw %d events, %d changes were committed", i, n, total)
			}
			return int64(n) == total, int64(n)
		})
		if diff := sameView(v.titles(), want); diff != "" {
			t.Fatalf("viewer %d: %s", i, diff)
		}
	}
}

// slotCaughtUp waits until the slot's confirmed position reaches the WAL
// written so far: in cluster mode the stream holds the replay window, so
// the slot keeps next to no WAL.
func slotCaughtUp(t *testing.T, db string) {
	t.Helper()
	conn := connectDB(t, db)
	var target string
	if err := conn.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&target); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(patient(10 * time.Second))
	for {
		var behind int64
		err := conn.QueryRow(context.Background(),
			`SELECT pg_wal_lsn_diff($1::pg_lsn, confirmed_flush_lsn) FROM pg_replication_slots WHERE slot_name = $2`,
			target, slotName(db)).Scan(&behind)
		if err != nil {
			t.Fatal(err)
		}
		if behind <= 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slot is %d bytes behind the WAL written before the writers stopped", behind)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClusterLeaderKill: the capturing node is killed with SIGKILL,
// ROWCAST_TEST_FAILOVERS times (default 2), while writers commit changes;
// each time the killed node is started again. Clients of the surviving
// nodes stay connected and see every change once, in order; clients of
// the killed node reconnect to another node with their last id and miss
// nothing; a client resuming on a restarted node (whose window came from
// the stream) misses nothing either. The time from each kill until
// another node captures is measured; with ROWCAST_TEST_FAILOVER_OUT set,
// viewersOn connects one client to each node.
func viewersOn(t *testing.T, nodes []*server) []*viewer {
	t.Helper()
	var viewers []*viewer
	for _, s := range nodes {
		v := newViewer(t, s, "")
		if err := v.connect(); err != nil {
			t.Fatal(err)
		}
		viewers = append(viewers, v)
	}
	return viewers
}

// backgroundWriters commit changes from two connections while a cluster
// test kills things; they stop when the test ends.
type backgroundWriters struct {
	written  atomic.Int64
	finished chan struct{}
	total    int64 // committed, once finished is closed
}

func startWriters(t *testing.T, db string, total int) *backgroundWriters {
	ctx, cancel := context.WithCancel(context.Background())
	w := &backgroundWriters{finished: make(chan struct{})}
	go func() {
		defer close(w.finished)
		w.total = legacyWritersProgress(ctx, t, db, 2, total, 2*time.Millisecond, &w.written)
	}()
	t.Cleanup(func() { cancel(); <-w.finished })
	return w
}

// reach waits until n changes are committed; writers that end before
// that fail the test.
func (w *backgroundWriters) reach(t *testing.T, n int64) {
	t.Helper()
	for w.written.Load() < n {
		select {
		case <-w.finished:
			if w.written.Load() < n {
				t.Fatalf("the writers ended after %d changes, before %d", w.written.Load(), n)
			}
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// wait returns how many changes were committed once the writers are done.
func (w *backgroundWriters) wait() int64 {
	<-w.finished
	return w.total
}

// the figures go to that file as JSON (make failover).
func TestClusterLeaderKill(t *testing.T) {
	kills := envInt("ROWCAST_TEST_FAILOVERS", 2)
	perKill := envInt("ROWCAST_TEST_FAILOVER_CHANGES", 400)
	nc := startNATS(t)
	db := newDatabase(t)
	env := clusterEnv(db, nc)
	nodes := startNodes(t, db, env, 3)
	viewers := viewersOn(t, nodes)
	total := (kills + 1) * perKill
	w := startWriters(t, db, total)

	var failovers []time.Duration
	var late *viewer
	for k := 1; k <= kills; k++ {
		target := int64(k * perKill)
		w.reach(t, target)
		dead := waitLeader(t, nodes, -1)
		began := time.Now()
		if err := nodes[dead].rc.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		next := waitLeader(t, nodes, dead)
		failovers = append(failovers, time.Since(began))
		nodes[dead].stop(syscall.SIGKILL)
		// Clients of the others never noticed.
		for i, v := range viewers {
			if v.s != nodes[dead] && !v.connected() {
				t.Fatalf("viewer %d on a surviving node was disconnected", i)
			}
		}
		survivors := []int{}
		for i := range nodes {
			if i != dead {
				survivors = append(survivors, i)
			}
		}
		for _, v := range viewers {
			if v.s == nodes[dead] {
				v.moveTo(nodes[survivors[rand.IntN(len(survivors))]])
			}
		}
		if k == kills {
			// A client at this point resumes, later, on the node started
			// next: its window is filled from the stream.
			late = viewers[survivors[0]].clone(nil)
		}
		nodes[dead] = restartServer(t, nodes[dead], db, env...)
		t.Logf("kill %d: node %d killed after %d changes; node %d captured %v later", k, dead, target, next, failovers[k-1].Round(time.Millisecond))
	}
	n := w.wait()
	if n != int64(total) {
		t.Fatalf("%d changes committed, want %d", n, total)
	}
	for _, s := range nodes {
		if s.rc.Exited() {
			t.Fatal("a node exited")
		}
	}
	late.s = lastRestarted(nodes, viewers)
	if err := late.connect(); err != nil {
		t.Fatal(err)
	}
	converge(t, db, n, append(viewers, late))
	slotCaughtUp(t, db)
	reportFailovers(t, failovers)
}

// lastRestarted is a node no viewer is on: the one restarted last.
func lastRestarted(nodes []*server, viewers []*viewer) *server {
	for _, s := range nodes {
		if !slices.ContainsFunc(viewers, func(v *viewer) bool { return v.s == s }) {
			return s
		}
	}
	return nodes[0]
}

// reportFailovers logs the distribution of failover times and writes it
// to ROWCAST_TEST_FAILOVER_OUT when set.
func reportFailovers(t *testing.T, d []time.Duration) {
	t.Helper()
	if len(d) == 0 {
		return
	}
	s := slices.Clone(d)
	slices.Sort(s)
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	var sum time.Duration
	for _, x := range s {
		sum += x
	}
	r := map[string]any{
		"kills": len(s), "min_ms": ms(s[0]), "p50_ms": ms(q(0.5)), "p90_ms": ms(q(0.9)),
		"max_ms": ms(s[len(s)-1]), "mean_ms": ms(sum / time.Duration(len(s))),
	}
	var all []float64
	for _, x := range d {
		all = append(all, ms(x))
	}
	r["each_ms"] = all
	t.Logf("failover (SIGKILL of the capturing node → another node captures), %d kills: min %.0f ms, p50 %.0f ms, p90 %.0f ms, max %.0f ms",
		len(s), r["min_ms"], r["p50_ms"], r["p90_ms"], r["max_ms"])
	if out := os.Getenv("ROWCAST_TEST_FAILOVER_OUT"); out != "" {
		b, _ := json.MarshalIndent(r, "", "  ")
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// TestClusterNATSServerKill: the NATS server that leads the stream is
// killed while writers commit changes, and later started again: no client
// of any node misses a change, sees one twice or is disconnected.
func TestClusterNATSServerKill(t *testing.T) {
	const total = 1200
	nc := startNATS(t)
	db := newDatabase(t)
	nodes := startNodes(t, db, clusterEnv(db, nc), 3)
	viewers := viewersOn(t, nodes)
	w := startWriters(t, db, total)
	w.reach(t, total/3)
	var killed int
	for {
		i, err := nc.StreamLeader("ROWCAST")
		if err == nil {
			killed = i
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	nc.Kill(killed)
	t.Logf("killed NATS server %d (the stream's leader) after %d changes", killed+1, w.written.Load())
	w.reach(t, 2*total/3)
	if err := nc.Restart(killed); err != nil {
		t.Fatal(err)
	}
	n := w.wait()
	converge(t, db, n, viewers)
	for i, v := range viewers {
		if !v.connected() {
			t.Fatalf("viewer %d was disconnected", i)
		}
	}
	slotCaughtUp(t, db)
}

// TestClusterNATSUnreachable: every NATS server stops while writers keep
// committing. The nodes stop being ready (/readyz 503) but keep their
// clients; the slot keeps the WAL meanwhile, and once NATS is back every
// node catches up: every client sees every change once, without a resync.
func TestClusterNATSUnreachable(t *testing.T) {
	const total = 900
	nc := startNATS(t)
	db := newDatabase(t)
	nodes := startNodes(t, db, clusterEnv(db, nc), 2)
	viewers := viewersOn(t, nodes)
	w := startWriters(t, db, total)
	w.reach(t, total/3)
	nc.Stop()
	t.Logf("stopped every NATS server after %d changes", w.written.Load())
	for i, s := range nodes {
		deadline := time.Now().Add(patient(20 * time.Second))
		for {
			code, _ := httpGet(t, s.base+"/readyz", nil)
			if code == 503 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d: /readyz still %d with NATS down", i, code)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	w.reach(t, 2*total/3)
	for i, v := range viewers {
		if !v.connected() {
			t.Fatalf("viewer %d was disconnected while NATS was down", i)
		}
	}
	for i := 0; i < nc.Size(); i++ {
		if err := nc.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("NATS started again after %d changes", w.written.Load())
	for _, s := range nodes {
		s.waitReady(30 * time.Second)
	}
	n := w.wait()
	converge(t, db, n, viewers)
	for i, v := range viewers {
		if !v.connected() {
			t.Fatalf("viewer %d was disconnected", i)
		}
	}
	slotCaughtUp(t, db)
}

// TestClusterNotifyTakeover: in notify mode NOTIFY cannot replay what was
// committed while no node listened, so a leader change is a resync: the
// surviving node's client stays connected, gets exactly one resync, and
// then every change committed after the takeover.
func TestClusterNotifyTakeover(t *testing.T) {
	nc := startNATS(t)
	db := newDatabase(t)
	env := clusterEnv(db, nc, "ROWCAST_CAPTURE=notify")
	nodes := startNodes(t, db, env, 2)
	dead := waitLeader(t, nodes, -1)
	other := 1 - dead
	v := newViewer(t, nodes[other], "")
	if err := v.connect(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if n := legacyWriters(ctx, t, db, 1, 20, 0); n != 20 {
		t.Fatalf("%d changes committed", n)
	}
	waitProgress(t, "the first changes", patient(10*time.Second), func() (bool, int64) {
		n, _, err := v.state()
		if err != nil {
			t.Fatal(err)
		}
		return n == 20, int64(n)
	})
	nodes[dead].stop(syscall.SIGKILL)
	waitLeader(t, nodes, dead)
	waitProgress(t, "the resync", patient(10*time.Second), func() (bool, int64) {
		_, resyncs, _ := v.state()
		return resyncs > 0, int64(resyncs)
	})
	if n := legacyWriters(ctx, t, db, 1, 20, 0); n != 20 {
		t.Fatalf("%d changes committed", n)
	}
	waitProgress(t, "the changes after the takeover", patient(10*time.Second), func() (bool, int64) {
		n, _, err := v.state()
		if err != nil {
			t.Fatal(err)
		}
		if n > 40 {
			t.Fatalf("%d events for 40 changes", n)
		}
		return n == 40, int64(n)
	})
	if _, resyncs, _ := v.state(); resyncs != 1 {
		t.Fatalf("%d resyncs, want 1", resyncs)
	}
	if !v.connected() {
		t.Fatal("the surviving node's client was disconnected")
	}
}

// TestClusterLargeRow: a ticket larger than a NATS message (the servers'
// max_payload, 1 MB) reaches the clients of every node whole, the node
// that captures and the others alike, in order with the changes around
// it, and nothing on the stream is counted as bad.
func TestClusterLargeRow(t *testing.T) {
	nc := startNATS(t)
	db := newDatabase(t)
	nodes := startNodes(t, db, clusterEnv(db, nc), 2)
	waitLeader(t, nodes, -1)
	var clients []*client
	for _, s := range nodes {
		clients = append(clients, dial(t, s, ""))
	}
	big := strings.Repeat("0123456789abcdef", 2500*1024/16) // 2.5 MB
	conn := connectDB(t, db)
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO tickets (title) VALUES ('before')`,
		`INSERT INTO tickets (title, description) VALUES ('big', '` + big + `')`,
		`INSERT INTO tickets (title) VALUES ('after')`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range clients {
		for _, title := range []string{"before", "big", "after"} {
			m := c.next(30*time.Second, "ticket:created")
			d := decodeTicket(t, m)
			if d.Ticket["title"] != title {
				t.Fatalf("node %d: got %v, want %s", i, d.Ticket["title"], title)
			}
			if title == "big" && d.Ticket["description"] != big {
				t.Fatalf("node %d: the description has %d bytes, want %d", i, len(fmt.Sprint(d.Ticket["description"])), len(big))
			}
		}
	}
	for i, s := range nodes {
		m, err := harness.Scrape(s.base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		if n := m["rowcast_cluster_bad_messages_total"]; n != 0 {
			t.Fatalf("node %d counted %v bad messages on the stream", i, n)
		}
	}
}
