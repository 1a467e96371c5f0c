package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"

	"rowcast/integration/harness"
	"rowcast/integration/pgcluster"
	rsql "rowcast/sql"
)

const (
	jwtSecret = "rowcast-bench-secret"
	benchDB   = "bench"
	// seedRows is how many tickets exist before any scenario; updates pick
	// among them.
	seedRows = 10000
	// recvSlot is the slot pg_recvlogical drains in the capture scenario.
	recvSlot = "bench_recv"
)

// The reference ticket: a realistic helpdesk row. Its ticket:updated event
// is about 550 bytes of JSON.
const (
	refTitle       = "Printer on 3rd floor jams on every duplex job"
	refDescription = "Started this morning after the firmware update; restarting the printer and reinstalling the driver did not help. Single-sided jobs print fine."
	refRequester   = "ann.lee@example.com"
	refAssignee    = "sam.rivera@example.com"
)

type bench struct {
	opts    options
	log     io.Writer
	started time.Time
	run     int

	tmp        string
	cluster    *pgcluster.Cluster
	dbURL      string
	rowcastBin string
	pgVersion  string
	goVersion  string
	token      string
	// sampleFrame is a real ticket:updated frame from rowcast, reused as
	// the bare broadcast server's message.
	sampleFrame []byte

	res *results

	// procs owns every child process: rowcast, the bare server,
	// pg_recvlogical, pgbench.
	procs harness.Group
}

// prepare builds rowcast, starts PostgreSQL and creates the bench database.
func (b *bench) prepare(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "rowcast-bench-")
	if err != nil {
		return err
	}
	b.tmp = dir

	b.logf("building rowcast")
	if b.rowcastBin, err = harness.BuildRowcast(ctx, dir, false); err != nil {
		return err
	}
	if out, err := exec.Command("go", "env", "GOVERSION").Output(); err == nil {
		b.goVersion = strings.TrimSpace(string(out))
	}

	b.logf("starting PostgreSQL")
	err = b.everyCore(func() (err error) {
		b.cluster, err = pgcluster.Start(ctx, pgcluster.Options{Settings: map[string]string{
			"max_connections":    "200",
			"shared_buffers":     "512MB",
			"max_wal_size":       "8GB",
			"checkpoint_timeout": "1h",
			// rowcast is stopped (SIGSTOP) while backlogs are written.
			"wal_sender_timeout": "10min",
		}})
		return err
	})
	if err != nil {
		return err
	}
	if _, err := b.cluster.CreateDatabase(ctx, benchDB); err != nil {
		return err
	}
	b.dbURL = b.cluster.URL(benchDB)
	conn, err := b.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&b.pgVersion); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, rsql.Tickets); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, seedSQL, seedRows); err != nil {
		return fmt.Errorf("seeding tickets: %w", err)
	}
	if _, err := conn.Exec(ctx, "VACUUM ANALYZE tickets"); err != nil {
		return err
	}
	b.token, err = harness.Token(jwtSecret, jwt.MapClaims{
		"sub": "bench", "email": "agent@example.com", "role": "agent",
		"exp": time.Now().Add(24 * time.Hour).Unix(),
	})
	return err
}

// seedSQL inserts $1 realistic tickets; ticket 1 is the reference ticket.
const seedSQL = `
INSERT INTO tickets (title, description, status, priority, category, requester_email, assignee_email, created_at, updated_at)
SELECT CASE WHEN g = 1 THEN '` + refTitle + `' ELSE '#' || g || ' ` + refTitle + `' END,
       '` + refDescription + `',
       (ARRAY['open','in_progress','waiting','resolved'])[1 + g % 4],
       (ARRAY['low','medium','high','urgent'])[1 + (g / 4) % 4],
       (ARRAY['hardware','network','account','billing','other'])[1 + g % 5],
       CASE WHEN g = 1 THEN '` + refRequester + `' ELSE 'user' || (g % 500) || '@example.com' END,
       '` + refAssignee + `',
       now() - interval '1 day' + g * interval '1 second', now()
FROM generate_series(1, $1::int) g`

func (b *bench) connect(ctx context.Context) (*pgx.Conn, error) {
	return pgx.Connect(ctx, b.dbURL)
}

// exec runs SQL on a short-lived connection.
func (b *bench) exec(ctx context.Context, sql string, args ...any) error {
	conn, err := b.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", firstLine(sql), err)
	}
	return nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return s
}

// pgArgs are libpq connection arguments for PostgreSQL's own tools.
func (b *bench) pgArgs() []string {
	return []string{"-h", b.cluster.SocketDir(), "-p", strconv.Itoa(b.cluster.Port()), "-U", "postgres"}
}

func (b *bench) pgTool(name string) string { return filepath.Join(b.cluster.BinDir(), name) }

// pinned wraps a command to run on core (when pinning is on).
func (b *bench) pinned(core int, name string, args ...string) *exec.Cmd {
	if b.opts.pin {
		return exec.Command("taskset", append([]string{"-c", strconv.Itoa(core), name}, args...)...)
	}
	return exec.Command(name, args...)
}

// cleanup ends every child this process started, then PostgreSQL, then
// removes the temporary directory.
func (b *bench) cleanup() {
	b.procs.StopAll(syscall.SIGTERM, 10*time.Second)
	if b.cluster != nil {
		if err := b.cluster.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "rowcast-bench:", err)
		}
	}
	if b.tmp != "" {
		os.RemoveAll(b.tmp)
	}
}

// runRowcastCmd runs a rowcast subcommand (setup, teardown) to completion.
func (b *bench) runRowcastCmd(ctx context.Context, env []string, args ...string) error {
	cmd := exec.CommandContext(ctx, b.rowcastBin, args...)
	cmd.Env = append(os.Environ(), append([]string{"DATABASE_URL=" + b.dbURL}, env...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("rowcast %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// useCapture leaves exactly one kind of capture installed: "logical",
// "notify", or "none" (nothing, REPLICA IDENTITY back to default).
func (b *bench) useCapture(ctx context.Context, mode string) error {
	if err := b.runRowcastCmd(ctx, nil, "teardown", "--yes"); err != nil {
		return err
	}
	if err := b.exec(ctx, `DROP TRIGGER IF EXISTS bench_bare ON tickets`); err != nil {
		return err
	}
	switch mode {
	case "none":
		return b.exec(ctx, `ALTER TABLE tickets REPLICA IDENTITY DEFAULT`)
	case "logical", "notify":
		return b.runRowcastCmd(ctx, []string{"ROWCAST_CAPTURE=" + mode}, "setup")
	}
	return fmt.Errorf("unknown capture mode %q", mode)
}

// resetTable removes the rows scenarios added and vacuums, with no capture
// installed (so the deletes are not captured).
func (b *bench) resetTable(ctx context.Context) error {
	if err := b.useCapture(ctx, "none"); err != nil {
		return err
	}
	if err := b.exec(ctx, `DELETE FROM tickets WHERE id > $1`, seedRows); err != nil {
		return err
	}
	if err := b.exec(ctx, `VACUUM ANALYZE tickets`); err != nil {
		return err
	}
	return b.exec(ctx, `CHECKPOINT`)
}

// rowcastProc is a running "rowcast serve" and its capture mode.
type rowcastProc struct {
	*harness.Rowcast
	mode string
	// debug is the address of rowcast's pprof handlers ("" when off).
	debug string
}

// startRowcast starts "rowcast serve" pinned to core 1 and waits until
// /readyz answers 200.
func (b *bench) startRowcast(ctx context.Context, mode string, env ...string) (*rowcastProc, error) {
	debug, debugEnv, err := b.debugEnv()
	if err != nil {
		return nil, err
	}
	env = append(env, debugEnv...)
	rc, err := harness.StartRowcast(ctx, harness.RowcastConfig{
		Bin: b.rowcastBin,
		Env: append([]string{
			"DATABASE_URL=" + b.dbURL,
			"ROWCAST_CAPTURE=" + mode,
			"JWT_SECRET=" + jwtSecret,
			"ROWCAST_LOG_LEVEL=warn",
			"ROWCAST_MAX_CONNECTIONS=50000",
		}, env...),
		Command: func(name string, args ...string) *exec.Cmd { return b.pinned(1, name, args...) },
		Group:   &b.procs,
		// Enough for the start and any error; a long run at warn level
		// does not grow the bench's memory.
		LogLimit: 1 << 20,
	})
	if err != nil {
		return nil, err
	}
	return &rowcastProc{Rowcast: rc, mode: mode, debug: debug}, nil
}

// stop ends rowcast (SIGCONT in case it is paused, SIGTERM, then SIGKILL).
func (p *rowcastProc) stop() { _, _ = p.Stop(syscall.SIGTERM, 10*time.Second) }

// metrics scrapes /metrics: series (as printed, with labels) → value.
func (p *rowcastProc) metrics() (map[string]float64, error) {
	return harness.Scrape(p.Base + "/metrics")
}

// procCPU returns the user+system CPU seconds of pid (and its threads).
func procCPU(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	// Fields after ")": state(0) ppid(1) ... utime(11) stime(12).
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / clockTicks
}

// clockTicks is sysconf(_SC_CLK_TCK), 100 on Linux.
const clockTicks = 100

// procRSS returns VmRSS of pid in bytes (0 when unknown).
func procRSS(pid int) float64 {
	n, _ := harness.StatusBytes(pid, "VmRSS")
	return float64(n)
}

// selfCPU is this process's CPU seconds (the load generator).
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

// sleepCtx sleeps d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// cpuStat is the machine's aggregate CPU time from /proc/stat (ticks).
type cpuStat struct{ idle, total float64 }

func readCPUStat() cpuStat {
	line, _, _ := strings.Cut(readFile("/proc/stat"), "\n")
	f := strings.Fields(line)
	var st cpuStat
	for i, v := range f[1:] {
		x, _ := strconv.ParseFloat(v, 64)
		// user nice system idle iowait irq softirq steal (guest is in user).
		if i >= 8 {
			break
		}
		st.total += x
		if i == 3 || i == 4 {
			st.idle += x
		}
	}
	return st
}

// busySecs is the CPU time all cores spent busy since s0 (/proc/stat
// counts in USER_HZ ticks, 100 a second on Linux).
func busySecs(s0 cpuStat) float64 {
	s1 := readCPUStat()
	return ((s1.total - s0.total) - (s1.idle - s0.idle)) / 100
}

// idlePct is the share of all cores left idle since s0.
func idlePct(s0 cpuStat) float64 {
	s1 := readCPUStat()
	if s1.total <= s0.total {
		return 0
	}
	return 100 * (s1.idle - s0.idle) / (s1.total - s0.total)
}
