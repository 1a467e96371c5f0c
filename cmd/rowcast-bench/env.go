package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"

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

	mu       sync.Mutex
	children map[*exec.Cmd]struct{}
	rowcasts map[*rowcastProc]struct{}
}

// prepare builds rowcast, starts PostgreSQL and creates the bench database.
func (b *bench) prepare(ctx context.Context) error {
	b.children = map[*exec.Cmd]struct{}{}
	b.rowcasts = map[*rowcastProc]struct{}{}
	dir, err := os.MkdirTemp("", "rowcast-bench-")
	if err != nil {
		return err
	}
	b.tmp = dir

	root, err := moduleRoot()
	if err != nil {
		return err
	}
	b.rowcastBin = filepath.Join(dir, "rowcast")
	b.logf("building rowcast from %s", root)
	build := exec.CommandContext(ctx, "go", "build", "-o", b.rowcastBin, "./cmd/rowcast")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/rowcast: %w\n%s", err, out)
	}
	if out, err := exec.Command("go", "env", "GOVERSION").Output(); err == nil {
		b.goVersion = strings.TrimSpace(string(out))
	}

	b.logf("starting PostgreSQL")
	b.cluster, err = pgcluster.Start(ctx, pgcluster.Options{Settings: map[string]string{
		"max_connections":    "200",
		"shared_buffers":     "512MB",
		"max_wal_size":       "8GB",
		"checkpoint_timeout": "1h",
		// rowcast is stopped (SIGSTOP) while backlogs are written.
		"wal_sender_timeout": "10min",
	}})
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
	b.token, err = jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "bench", "email": "agent@example.com", "role": "agent",
		"exp": time.Now().Add(24 * time.Hour).Unix(),
	}).SignedString([]byte(jwtSecret))
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

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run rowcast-bench from inside the rowcast module (go run ./cmd/rowcast-bench)")
	}
	return filepath.Dir(mod), nil
}

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

func (b *bench) track(cmd *exec.Cmd) {
	b.mu.Lock()
	b.children[cmd] = struct{}{}
	b.mu.Unlock()
}

func (b *bench) untrack(cmd *exec.Cmd) {
	b.mu.Lock()
	delete(b.children, cmd)
	b.mu.Unlock()
}

// cleanup ends every child this process started, then PostgreSQL, then
// removes the temporary directory.
func (b *bench) cleanup() {
	b.stopAllRowcast()
	b.mu.Lock()
	cmds := make([]*exec.Cmd, 0, len(b.children))
	for c := range b.children {
		cmds = append(cmds, c)
	}
	b.mu.Unlock()
	for _, c := range cmds {
		if c.Process != nil {
			_ = c.Process.Signal(syscall.SIGCONT)
			_ = c.Process.Kill()
		}
	}
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

// rowcastProc is a running "rowcast serve".
type rowcastProc struct {
	b    *bench
	cmd  *exec.Cmd
	mode string
	addr string
	base string
	log  *syncBuffer
	done chan struct{}
	err  error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 1<<20 {
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startRowcast starts "rowcast serve" pinned to core 1 and waits until
// /readyz answers 200.
func (b *bench) startRowcast(ctx context.Context, mode string, env ...string) (*rowcastProc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p := &rowcastProc{b: b, mode: mode, addr: addr, base: "http://" + addr, log: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = b.pinned(1, b.rowcastBin, "serve")
	p.cmd.Env = append(os.Environ(),
		"DATABASE_URL="+b.dbURL,
		"ROWCAST_CAPTURE="+mode,
		"JWT_SECRET="+jwtSecret,
		"ROWCAST_LISTEN="+addr,
		"ROWCAST_LOG_LEVEL=warn",
		"ROWCAST_MAX_CONNECTIONS=50000",
	)
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	b.track(p.cmd)
	b.mu.Lock()
	b.rowcasts[p] = struct{}{}
	b.mu.Unlock()
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-p.done:
			p.stop()
			return nil, fmt.Errorf("rowcast serve exited: %v\n%s", p.err, p.log.String())
		default:
		}
		resp, err := http.Get(p.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.stop()
			return nil, fmt.Errorf("rowcast serve not ready after 30s\n%s", p.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *rowcastProc) pid() int { return p.cmd.Process.Pid }

// stop ends rowcast (SIGCONT in case it is stopped, SIGTERM, then SIGKILL).
func (p *rowcastProc) stop() {
	defer func() {
		p.b.untrack(p.cmd)
		p.b.mu.Lock()
		delete(p.b.rowcasts, p)
		p.b.mu.Unlock()
	}()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *rowcastProc) signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

func (b *bench) stopAllRowcast() {
	b.mu.Lock()
	ps := make([]*rowcastProc, 0, len(b.rowcasts))
	for p := range b.rowcasts {
		ps = append(ps, p)
	}
	b.mu.Unlock()
	for _, p := range ps {
		p.stop()
	}
}

// metrics scrapes /metrics: series (as printed, with labels) → value.
func (p *rowcastProc) metrics() (map[string]float64, error) {
	return scrape(p.base + "/metrics")
}

func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// sumPrefix adds every series whose name starts with prefix.
func sumPrefix(m map[string]float64, name string) float64 {
	var s float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			s += v
		}
	}
	return s
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

// procRSS returns VmRSS of pid in bytes.
func procRSS(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseFloat(f[1], 64)
				return kb * 1024
			}
		}
	}
	return 0
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

// idlePct is the share of all cores left idle since s0.
func idlePct(s0 cpuStat) float64 {
	s1 := readCPUStat()
	if s1.total <= s0.total {
		return 0
	}
	return 100 * (s1.idle - s0.idle) / (s1.total - s0.total)
}
