package metrics_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"rowcast"
	"rowcast/integration/harness"
	"rowcast/metrics"
)

// fakeDB answers the poller's queries from canned rows.
type fakeDB struct {
	mu      sync.Mutex
	logical []any // the slot query's columns
	usage   float64
	err     error
	queries []string
	args    [][]any
}

func (f *fakeDB) QueryRow(_ context.Context, sql string, args ...any) pgx.Row {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, sql)
	f.args = append(f.args, args)
	if f.err != nil {
		return fakeRow{err: f.err}
	}
	if strings.Contains(sql, "pg_notification_queue_usage") {
		return fakeRow{vals: []any{f.usage}}
	}
	return fakeRow{vals: f.logical}
}

func (f *fakeDB) set(fn func(f *fakeDB)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeDB) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.queries)
}

type fakeRow struct {
	vals []any
	err  error
}

// Scan stores each value in the destination pointer; nil stores the zero
// value (a nil pointer for the nullable columns), as pgx does for NULL.
func (r fakeRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	if len(dest) != len(r.vals) {
		return fmt.Errorf("scan: %d destinations for %d columns", len(dest), len(r.vals))
	}
	for i, d := range dest {
		dv := reflect.ValueOf(d).Elem()
		if r.vals[i] == nil {
			dv.Set(reflect.Zero(dv.Type()))
			continue
		}
		v := reflect.ValueOf(r.vals[i])
		if dv.Kind() == reflect.Pointer {
			p := reflect.New(dv.Type().Elem())
			p.Elem().Set(v)
			v = p
		}
		dv.Set(v)
	}
	return nil
}

// slotRow is a slot query result: exists, lag, retained, confirmed,
// wal_status, safe_wal_size, active.
func slotRow(exists bool, lag, retained, confirmed any, status any, safe any, active bool) []any {
	return []any{exists, lag, retained, confirmed, status, safe, active}
}

// everything registers every rowcast collector on a fresh registry and
// gives each series at least one sample.
func everything(t *testing.T, mode string) (*prometheus.Registry, *fakeDB, *metrics.DBPoller) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.ClientConnected("ws")
	m.ClientConnected("ws")
	m.ClientDisconnected("ws")
	m.ConnectionRefused("ws", "auth")
	m.EventQueued("ticket:created", "ws", 3)
	m.SlowConsumer("ws")
	m.Delivered("ws", []time.Duration{20 * time.Millisecond})
	m.ChangeApplied("tickets", "insert")
	m.StatsRecomputed()
	m.Resume("replayed")
	m.WindowSize(42)
	m.SocketIO().Session("polling", 1)
	m.SocketIO().Session("polling", -1)
	m.SocketIO().Session("websocket", 1)
	m.SocketIO().Upgrade("ok")
	m.SocketIO().ProtocolError("parse")
	m.SocketIO().Closed("ping_timeout")
	metrics.RegisterCapture(reg, func() rowcast.CaptureStatus {
		return rowcast.CaptureStatus{Mode: mode, Connected: true, Reconnects: 2,
			ReceivedLSN: 0x1_6B374D48, FlushedLSN: 0x1_6B374D00, SlotRecreations: 1}
	})
	cl := metrics.NewCluster(reg, func() metrics.ClusterStatus {
		return metrics.ClusterStatus{Connected: true, Ready: true, Lag: 3, Bad: 1}
	})
	cl.Leading(true)
	cl.Published(10, 2*time.Millisecond, nil)
	db := &fakeDB{logical: slotRow(true, 1024.0, 4096.0, 6094801664.0, "reserved", 3e9, true), usage: 0.25}
	p := metrics.NewDBPoller(reg, db, "rowcast", func() string { return mode }, 0)
	if err := p.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	return reg, db, p
}

// The series SREs alert and graph on; each must exist with help text.
var wantLogical = []string{
	"rowcast_changes_captured_total", "rowcast_events_sent_total", "rowcast_clients_connected",
	"rowcast_connections_refused_total", "rowcast_slow_consumer_disconnects_total",
	"rowcast_commit_to_send_seconds", "rowcast_stats_recomputations_total", "rowcast_resumes_total",
	"rowcast_replay_window_events", "rowcast_socketio_sessions", "rowcast_socketio_upgrades_total",
	"rowcast_socketio_protocol_errors_total", "rowcast_socketio_session_closes_total", "rowcast_capture_connected", "rowcast_capture_reconnects_total",
	"rowcast_capture_info", "rowcast_replication_received_lsn_bytes", "rowcast_replication_flushed_lsn_bytes",
	"rowcast_replication_slot_recreations_total", "rowcast_replication_lag_bytes",
	"rowcast_replication_retained_wal_bytes", "rowcast_replication_slot_wal_status",
	"rowcast_replication_slot_confirmed_flush_lsn_bytes", "rowcast_replication_slot_safe_wal_size_bytes",
	"rowcast_replication_slot_active", "rowcast_db_poll_errors_total",
	"rowcast_changes_ignored_total", "rowcast_notify_rejected_total",
	"go_goroutines", "process_start_time_seconds",
}

func families(t *testing.T, reg *prometheus.Registry) map[string]string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]string{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf.GetHelp()
	}
	return out
}

func TestNamesAndHelp(t *testing.T) {
	reg, _, _ := everything(t, metrics.ModeLogical)
	got := families(t, reg)
	for _, name := range wantLogical {
		if _, ok := got[name]; !ok {
			t.Errorf("series %s missing", name)
		}
	}
	for name, help := range got {
		if strings.TrimSpace(help) == "" {
			t.Errorf("%s has no help text", name)
		}
		if !strings.HasPrefix(name, "rowcast_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			t.Errorf("%s: unexpected prefix", name)
		}
	}
}

// collectAndLint and gatherAndLint do what testutil.CollectAndLint and
// testutil.GatherAndLint do (promlint on a pedantic registry); testutil
// itself would add a module (its diff package) to go.mod for two helpers.
func collectAndLint(c prometheus.Collector) ([]promlint.Problem, error) {
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		return nil, fmt.Errorf("registering collector failed: %w", err)
	}
	return gatherAndLint(reg)
}

func gatherAndLint(g prometheus.Gatherer) ([]promlint.Problem, error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, fmt.Errorf("gathering metrics failed: %w", err)
	}
	return promlint.NewWithMetricFamilies(mfs).Lint()
}

func TestLint(t *testing.T) {
	for _, mode := range []string{metrics.ModeLogical, metrics.ModeNotify} {
		reg, _, _ := everything(t, mode)
		problems, err := gatherAndLint(reg)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("%s mode: lint: %s: %s", mode, p.Metric, p.Text)
		}
		// And the text /metrics serves.
		problems, err = promlint.New(bytes.NewReader(exposition(t, reg))).Lint()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("%s mode: /metrics lint: %s: %s", mode, p.Metric, p.Text)
		}
	}
	// Collector by collector, on pedantic registries (they also check that
	// every collected series matches a described one).
	logical := func() string { return metrics.ModeLogical }
	for _, db := range []*fakeDB{
		{logical: slotRow(true, 1.0, 2.0, 3.0, "reserved", 4.0, true)},
		{logical: slotRow(false, nil, nil, nil, nil, nil, false)},
	} {
		p := metrics.NewDBPoller(prometheus.NewRegistry(), db, "", logical, 0)
		if err := p.Poll(context.Background()); err != nil {
			t.Fatal(err)
		}
		problems, err := collectAndLint(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, pr := range problems {
			t.Errorf("poller lint: %s: %s", pr.Metric, pr.Text)
		}
	}
}

// The Socket.IO series exist for every label value from the start (so
// rate() and "== 0" see them before the first event), and the sessions
// gauge follows the deltas.
func TestSocketIOSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	sets := map[string]struct {
		label  string
		values []string
	}{
		"rowcast_socketio_sessions":              {"engine", metrics.SIOEngines},
		"rowcast_socketio_upgrades_total":        {"outcome", metrics.SIOUpgradeOutcomes},
		"rowcast_socketio_protocol_errors_total": {"kind", metrics.SIOProtocolErrorKinds},
		"rowcast_socketio_session_closes_total":  {"reason", metrics.SIOCloseReasons},
	}
	for name, set := range sets {
		for _, v := range set.values {
			if got, ok := sample(t, reg, name, set.label+"="+v); !ok || got != 0 {
				t.Errorf("%s{%s=%q} = %v (present %v), want 0", name, set.label, v, got, ok)
			}
		}
	}
	// Two polling sessions; one upgrades, then both close.
	m.SocketIO().Session("polling", 1)
	m.SocketIO().Session("polling", 1)
	m.SocketIO().Session("polling", -1)
	m.SocketIO().Session("websocket", 1)
	m.SocketIO().Upgrade("ok")
	if v, _ := sample(t, reg, "rowcast_socketio_sessions", "engine=polling"); v != 1 {
		t.Errorf("polling sessions = %v, want 1", v)
	}
	if v, _ := sample(t, reg, "rowcast_socketio_sessions", "engine=websocket"); v != 1 {
		t.Errorf("websocket sessions = %v, want 1", v)
	}
	m.SocketIO().Session("polling", -1)
	m.SocketIO().Closed("poll_timeout")
	m.SocketIO().Session("websocket", -1)
	m.SocketIO().Closed("client")
	m.SocketIO().ProtocolError("overlapping")
	m.SocketIO().ProtocolError("overlapping")
	for _, c := range []struct {
		name, labels string
		want         float64
	}{
		{"rowcast_socketio_sessions", "engine=polling", 0},
		{"rowcast_socketio_sessions", "engine=websocket", 0},
		{"rowcast_socketio_upgrades_total", "outcome=ok", 1},
		{"rowcast_socketio_upgrades_total", "outcome=abandoned", 0},
		{"rowcast_socketio_session_closes_total", "reason=poll_timeout", 1},
		{"rowcast_socketio_session_closes_total", "reason=client", 1},
		{"rowcast_socketio_protocol_errors_total", "kind=overlapping", 2},
	} {
		if v, ok := sample(t, reg, c.name, c.labels); !ok || v != c.want {
			t.Errorf("%s{%s} = %v (present %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		want := "COUNTER"
		if mf.GetName() == "rowcast_socketio_sessions" {
			want = "GAUGE"
		}
		if _, ok := sets[mf.GetName()]; ok && mf.GetType().String() != want {
			t.Errorf("%s is a %s, want %s", mf.GetName(), mf.GetType(), want)
		}
	}
}

func TestCaptureSeries(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	st := rowcast.CaptureStatus{Mode: "notify", Connected: false, Reconnects: 3}
	var mu sync.Mutex
	metrics.RegisterCapture(reg, func() rowcast.CaptureStatus { mu.Lock(); defer mu.Unlock(); return st })
	type check struct {
		name, labels string
		want         float64
		present      bool
	}
	run := func(mode string, checks []check) {
		t.Helper()
		for _, c := range checks {
			v, ok := sample(t, reg, c.name, c.labels)
			if ok != c.present || v != c.want {
				t.Errorf("%s mode: %s{%s} = %v (present %v), want %v (present %v)", mode, c.name, c.labels, v, ok, c.want, c.present)
			}
		}
	}
	run("notify", []check{
		{"rowcast_capture_connected", "", 0, true},
		{"rowcast_capture_reconnects_total", "", 3, true},
		{"rowcast_capture_info", "mode=notify", 1, true},
		{"rowcast_replication_slot_recreations_total", "", 0, true},
		{"rowcast_replication_received_lsn_bytes", "", 0, false},
		{"rowcast_replication_flushed_lsn_bytes", "", 0, false},
	})
	mu.Lock()
	st = rowcast.CaptureStatus{Mode: "logical", Connected: true, ReceivedLSN: 5000, FlushedLSN: 4000, SlotRecreations: 1}
	mu.Unlock()
	run("logical", []check{
		{"rowcast_capture_connected", "", 1, true},
		{"rowcast_capture_info", "mode=logical", 1, true},
		{"rowcast_capture_info", "mode=notify", 0, false},
		{"rowcast_replication_received_lsn_bytes", "", 5000, true},
		{"rowcast_replication_flushed_lsn_bytes", "", 4000, true},
		{"rowcast_replication_slot_recreations_total", "", 1, true},
	})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "rowcast_replication_slot_recreations_total" && mf.GetType().String() != "COUNTER" {
			t.Errorf("%s is a %s", mf.GetName(), mf.GetType())
		}
	}
}

// Every reason of rowcast_changes_ignored_total and
// rowcast_notify_rejected_total exists from the start, at 0, in both
// modes, and follows the cumulative counts of the capture status.
func TestCaptureDropSeries(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	var mu sync.Mutex
	st := rowcast.CaptureStatus{Mode: "logical"}
	metrics.RegisterCapture(reg, func() rowcast.CaptureStatus { mu.Lock(); defer mu.Unlock(); return st })
	for _, mode := range []string{"logical", "notify"} {
		mu.Lock()
		st = rowcast.CaptureStatus{Mode: mode}
		mu.Unlock()
		for _, r := range rowcast.IgnoreReasons {
			if v, ok := sample(t, reg, "rowcast_changes_ignored_total", "reason="+r); !ok || v != 0 {
				t.Errorf("%s mode: rowcast_changes_ignored_total{reason=%q} = %v (present %v), want 0", mode, r, v, ok)
			}
		}
		for _, r := range rowcast.NotifyRejectReasons {
			if v, ok := sample(t, reg, "rowcast_notify_rejected_total", "reason="+r); !ok || v != 0 {
				t.Errorf("%s mode: rowcast_notify_rejected_total{reason=%q} = %v (present %v), want 0", mode, r, v, ok)
			}
		}
	}
	mu.Lock()
	st = rowcast.CaptureStatus{Mode: "logical",
		Ignored:  map[string]uint64{rowcast.IgnoredOtherTable: 7, rowcast.IgnoredLogicalMessage: 2},
		Rejected: map[string]uint64{rowcast.RejectedFetchFailed: 3}}
	mu.Unlock()
	for _, c := range []struct {
		name, reason string
		want         float64
	}{
		{"rowcast_changes_ignored_total", "other_table", 7},
		{"rowcast_changes_ignored_total", "logical_message", 2},
		{"rowcast_changes_ignored_total", "bad_message", 0},
		{"rowcast_notify_rejected_total", "fetch_failed", 3},
		{"rowcast_notify_rejected_total", "malformed", 0},
	} {
		if v, ok := sample(t, reg, c.name, "reason="+c.reason); !ok || v != c.want {
			t.Errorf("%s{reason=%q} = %v (present %v), want %v", c.name, c.reason, v, ok, c.want)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "rowcast_changes_ignored_total", "rowcast_notify_rejected_total":
			if mf.GetType().String() != "COUNTER" {
				t.Errorf("%s is a %s", mf.GetName(), mf.GetType())
			}
		}
	}
}

// sample returns the value of name{labels} (labels as "k=v,k=v", sorted),
// and whether it exists.
func sample(t *testing.T, reg *prometheus.Registry, name, labels string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, lp := range m.GetLabel() {
				ls = append(ls, lp.GetName()+"="+lp.GetValue())
			}
			if strings.Join(ls, ",") != labels {
				continue
			}
			switch {
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			}
		}
	}
	return 0, false
}

func TestDBPollerLogical(t *testing.T) {
	reg := prometheus.NewRegistry()
	db := &fakeDB{logical: slotRow(true, 2048.0, 1<<30+0.0, 6094801664.0, "extended", nil, true)}
	p := metrics.NewDBPoller(reg, db, "my_slot", func() string { return metrics.ModeLogical }, time.Second)
	if err := p.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(db.args) != 1 || len(db.args[0]) != 1 || db.args[0][0] != "my_slot" {
		t.Errorf("query args %v, want the slot name", db.args)
	}
	if !strings.Contains(db.queries[0], "pg_replication_slots") || !strings.Contains(db.queries[0], "pg_current_wal_lsn()") {
		t.Errorf("query %q", db.queries[0])
	}
	checks := []struct {
		name, labels string
		want         float64
	}{
		{"rowcast_replication_lag_bytes", "", 2048},
		{"rowcast_replication_retained_wal_bytes", "", 1 << 30},
		{"rowcast_replication_slot_confirmed_flush_lsn_bytes", "", 6094801664},
		{"rowcast_replication_slot_active", "", 1},
		{"rowcast_replication_slot_wal_status", "status=extended", 1},
		{"rowcast_replication_slot_wal_status", "status=reserved", 0},
		{"rowcast_replication_slot_wal_status", "status=unreserved", 0},
		{"rowcast_replication_slot_wal_status", "status=lost", 0},
		{"rowcast_replication_slot_wal_status", "status=missing", 0},
		{"rowcast_db_poll_errors_total", "", 0},
	}
	for _, c := range checks {
		if v, ok := sample(t, reg, c.name, c.labels); !ok || v != c.want {
			t.Errorf("%s{%s} = %v (present %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	// safe_wal_size is NULL without max_slot_wal_keep_size: no series.
	if _, ok := sample(t, reg, "rowcast_replication_slot_safe_wal_size_bytes", ""); ok {
		t.Error("safe_wal_size series present although NULL")
	}
	if _, ok := sample(t, reg, "rowcast_notify_queue_usage_ratio", ""); ok {
		t.Error("NOTIFY queue series present in logical mode")
	}

	// The slot is lost: restart_lsn (and so retained) is NULL.
	db.set(func(f *fakeDB) { f.logical = slotRow(true, 9e9, nil, 6094801664.0, "lost", -1e6, false) })
	if err := p.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v, _ := sample(t, reg, "rowcast_replication_slot_wal_status", "status=lost"); v != 1 {
		t.Errorf("lost = %v, want 1", v)
	}
	if _, ok := sample(t, reg, "rowcast_replication_retained_wal_bytes", ""); ok {
		t.Error("retained WAL present although restart_lsn is NULL")
	}
	if v, _ := sample(t, reg, "rowcast_replication_slot_safe_wal_size_bytes", ""); v != -1e6 {
		t.Errorf("safe_wal_size = %v", v)
	}
	if v, _ := sample(t, reg, "rowcast_replication_slot_active", ""); v != 0 {
		t.Errorf("active = %v, want 0", v)
	}

	// The slot does not exist: status "missing", no positions.
	db.set(func(f *fakeDB) { f.logical = slotRow(false, nil, nil, nil, nil, nil, false) })
	if err := p.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, s := range metrics.SlotStatuses {
		want := 0.0
		if s == "missing" {
			want = 1
		}
		if v, ok := sample(t, reg, "rowcast_replication_slot_wal_status", "status="+s); !ok || v != want {
			t.Errorf("wal_status{%s} = %v (present %v), want %v", s, v, ok, want)
		}
	}
	for _, name := range []string{"rowcast_replication_lag_bytes", "rowcast_replication_retained_wal_bytes",
		"rowcast_replication_slot_confirmed_flush_lsn_bytes", "rowcast_replication_slot_active"} {
		if _, ok := sample(t, reg, name, ""); ok {
			t.Errorf("%s present for a missing slot", name)
		}
	}
}

func TestDBPollerNotifyAndErrors(t *testing.T) {
	reg := prometheus.NewRegistry()
	db := &fakeDB{usage: 0.125}
	var mode = metrics.ModeNotify
	var mu sync.Mutex
	p := metrics.NewDBPoller(reg, db, "", func() string { mu.Lock(); defer mu.Unlock(); return mode }, 0)
	if err := p.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v, ok := sample(t, reg, "rowcast_notify_queue_usage_ratio", ""); !ok || v != 0.125 {
		t.Errorf("queue usage = %v (present %v)", v, ok)
	}
	if _, ok := sample(t, reg, "rowcast_replication_slot_wal_status", "status=missing"); ok {
		t.Error("slot series in notify mode")
	}

	// A failed poll is counted and drops the database series.
	db.set(func(f *fakeDB) { f.err = errors.New("connection refused") })
	if err := p.Poll(context.Background()); err == nil {
		t.Fatal("poll succeeded against a failing database")
	}
	if v, _ := sample(t, reg, "rowcast_db_poll_errors_total", ""); v != 1 {
		t.Errorf("poll errors = %v, want 1", v)
	}
	if _, ok := sample(t, reg, "rowcast_notify_queue_usage_ratio", ""); ok {
		t.Error("stale queue usage kept after a failed poll")
	}

	// A cancelled poll (shutdown) is not a database error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	db.set(func(f *fakeDB) { f.err = context.Canceled })
	_ = p.Poll(ctx)
	if v, _ := sample(t, reg, "rowcast_db_poll_errors_total", ""); v != 1 {
		t.Errorf("poll errors after a cancelled poll = %v, want 1", v)
	}

	// Recovery, and a mode that polls nothing.
	db.set(func(f *fakeDB) { f.err = nil })
	if err := p.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := sample(t, reg, "rowcast_notify_queue_usage_ratio", ""); !ok {
		t.Error("queue usage not back after recovery")
	}
	mu.Lock()
	mode = ""
	mu.Unlock()
	n := db.calls()
	if err := p.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if db.calls() != n {
		t.Error("queried the database with no capture mode")
	}
}

func TestDBPollerRun(t *testing.T) {
	reg := prometheus.NewRegistry()
	db := &fakeDB{err: errors.New("too many connections")}
	p := metrics.NewDBPoller(reg, db, "", func() string { return metrics.ModeNotify }, 10*time.Millisecond)
	var logBuf harness.LogBuffer
	p.Logger = slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for db.calls() < 3 {
		if time.Now().After(deadline) {
			t.Fatal("Run does not poll every interval")
		}
		time.Sleep(5 * time.Millisecond)
	}
	db.set(func(f *fakeDB) { f.err = nil })
	n := db.calls()
	for db.calls() < n+2 {
		if time.Now().After(deadline) {
			t.Fatal("Run stopped polling")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	log := logBuf.String()
	// One warning when polling starts failing, one line when it recovers;
	// the repeats in between are debug lines.
	if c := strings.Count(log, "level=WARN"); c != 1 || !strings.Contains(log, "too many connections") {
		t.Errorf("want one warning with the error, got:\n%s", log)
	}
	if !strings.Contains(log, "works again") {
		t.Errorf("no recovery line:\n%s", log)
	}
	if v, _ := sample(t, reg, "rowcast_db_poll_errors_total", ""); v < 3 {
		t.Errorf("poll errors = %v, want >= 3", v)
	}
}

// exposition is what /metrics serves for the registry (text format).
func exposition(t *testing.T, reg *prometheus.Registry) []byte {
	t.Helper()
	rec := httptest.NewRecorder()
	metrics.Handler(reg).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics: HTTP %d: %s", rec.Code, rec.Body)
	}
	return rec.Body.Bytes()
}

// Series whose label values are known in advance exist at 0 on a fresh
// process, so that dashboards and alert rules read 0, not "no data".
func TestKnownSeriesStartAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.Init([]string{"ticket:created", "ticket:updated", "ticket:deleted", "stats:updated", "resync"}, []string{"bad_name"})
	out := string(exposition(t, reg))
	for _, tr := range metrics.Transports {
		for _, want := range []string{
			`rowcast_clients_connected{transport="` + tr + `"} 0`,
			`rowcast_slow_consumer_disconnects_total{transport="` + tr + `"} 0`,
			`rowcast_events_sent_total{event="ticket:created",transport="` + tr + `"} 0`,
			`rowcast_events_sent_total{event="stats:updated",transport="` + tr + `"} 0`,
			`rowcast_events_sent_total{event="resync",transport="` + tr + `"} 0`,
		} {
			if !strings.Contains(out, want+"\n") {
				t.Errorf("missing %s", want)
			}
		}
	}
	if !strings.Contains(out, `rowcast_events_dropped_total{reason="bad_name"} 0`+"\n") {
		t.Errorf("missing rowcast_events_dropped_total")
	}
}

// Application event names get label values of their own up to a bound;
// the rest share one.
func TestEventLabelsBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.Init([]string{"ticket:created"}, nil)
	for i := 0; i < 3*metrics.MaxEventNames; i++ {
		m.EventQueued(fmt.Sprintf("app%d", i), "ws", 1)
	}
	m.EventQueued("ticket:created", "ws", 1)
	out := string(exposition(t, reg))
	if n := strings.Count(out, "rowcast_events_sent_total{"); n != metrics.MaxEventNames+1+len(metrics.Transports) {
		t.Errorf("%d series, want %d", n, metrics.MaxEventNames+1+len(metrics.Transports))
	}
	if !strings.Contains(out, `rowcast_events_sent_total{event="other",transport="ws"} 200`) {
		t.Errorf("names past the bound are not counted as other")
	}
	if !strings.Contains(out, `rowcast_events_sent_total{event="ticket:created",transport="ws"} 1`) {
		t.Errorf("rowcast's own name lost its series")
	}
}
