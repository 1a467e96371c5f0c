package pgcluster

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func startCluster(t *testing.T, opts Options) *Cluster {
	t.Helper()
	begin := time.Now()
	c, err := Start(testCtx(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster started in %v (%s)", time.Since(begin).Round(time.Millisecond), c.Dir())
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

func connect(t *testing.T, ctx context.Context, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func show(t *testing.T, ctx context.Context, conn *pgx.Conn, name string) string {
	t.Helper()
	var v string
	if err := conn.QueryRow(ctx, "SHOW "+name).Scan(&v); err != nil {
		t.Fatalf("SHOW %s: %v", name, err)
	}
	return v
}

func postmasterPID(t *testing.T, c *Cluster) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.DataDir(), "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestFindBinDir(t *testing.T) {
	dir, err := FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	t.Logf("bin dir: %s", dir)
}

func TestSortByVersionDesc(t *testing.T) {
	dirs := []string{"/usr/lib/postgresql/9.6/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/10/bin"}
	sortByVersionDesc(dirs)
	want := []string{"/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/10/bin", "/usr/lib/postgresql/9.6/bin"}
	if strings.Join(dirs, ",") != strings.Join(want, ",") {
		t.Fatalf("got %v, want %v", dirs, want)
	}
}

func TestStartSettingsAndDatabase(t *testing.T) {
	t.Parallel()
	c := startCluster(t, Options{
		Settings:   map[string]string{"max_slot_wal_keep_size": "'64MB'"},
		InitdbArgs: []string{"--wal-segsize=1"},
	})
	ctx := testCtx(t)

	if n := len(filepath.Join(c.SocketDir(), ".s.PGSQL.5432")); n > maxSocketPath {
		t.Errorf("socket path is %d bytes", n)
	}
	if c.Port() != DefaultPort {
		t.Errorf("Port() = %d, want %d", c.Port(), DefaultPort)
	}
	conn := connect(t, ctx, c.URL("postgres"))
	for name, want := range map[string]string{
		"wal_level":              "logical",
		"max_replication_slots":  "20",
		"max_wal_senders":        "20",
		"max_connections":        "300",
		"fsync":                  "off",
		"full_page_writes":       "off",
		"synchronous_commit":     "on",
		"listen_addresses":       "",
		"max_slot_wal_keep_size": "64MB",
		"wal_segment_size":       "1MB",
		"server_encoding":        "UTF8",
	} {
		if got := show(t, ctx, conn, name); got != want {
			t.Errorf("SHOW %s = %q, want %q", name, got, want)
		}
	}

	url, err := c.CreateDatabase(ctx, "Mixed Case-db")
	if err != nil {
		t.Fatal(err)
	}
	if url != c.URL("Mixed Case-db") {
		t.Errorf("CreateDatabase URL = %q, want %q", url, c.URL("Mixed Case-db"))
	}
	dbConn := connect(t, ctx, url)
	var db string
	if err := dbConn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	if db != "Mixed Case-db" {
		t.Errorf("current_database() = %q", db)
	}
	if _, err := c.CreateDatabase(ctx, "Mixed Case-db"); err == nil {
		t.Error("creating an existing database succeeded")
	}

	out, err := c.Psql(ctx, "Mixed Case-db", "CREATE TABLE t (id int);\nINSERT INTO t VALUES (1), (2);\nSELECT count(*), current_database() FROM t;")
	if err != nil {
		t.Fatal(err)
	}
	if out != "2|Mixed Case-db" {
		t.Errorf("psql output = %q", out)
	}
	if _, err := c.Psql(ctx, "postgres", "SELECT 1/0;\nSELECT 2;"); err == nil || !strings.Contains(err.Error(), "division by zero") {
		t.Errorf("psql error = %v, want division by zero", err)
	}
}

func TestRestart(t *testing.T) {
	t.Parallel()
	c := startCluster(t, Options{})
	ctx := testCtx(t)
	if _, err := c.Psql(ctx, "postgres", "CREATE TABLE t (id int); INSERT INTO t VALUES (1);"); err != nil {
		t.Fatal(err)
	}
	for i, mode := range []string{"fast", "immediate", "smart"} {
		old := connect(t, ctx, c.URL("postgres"))
		if mode == "smart" {
			old.Close(ctx)
		}
		pid := postmasterPID(t, c)
		begin := time.Now()
		if err := c.Restart(ctx, mode); err != nil {
			t.Fatalf("Restart(%s): %v", mode, err)
		}
		t.Logf("restart %s took %v", mode, time.Since(begin).Round(time.Millisecond))
		if !processGone(pid) {
			t.Errorf("old postmaster %d still running after %s restart", pid, mode)
		}
		if mode != "smart" {
			if err := old.Ping(ctx); err == nil {
				t.Errorf("connection from before the %s restart still works", mode)
			}
		}
		if _, err := c.Psql(ctx, "postgres", "INSERT INTO t VALUES ("+strconv.Itoa(i+2)+");"); err != nil {
			t.Fatal(err)
		}
		conn := connect(t, ctx, c.URL("postgres"))
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != i+2 {
			t.Errorf("after %s restart: %d rows, want %d", mode, n, i+2)
		}
		// Smart shutdown waits for every client to disconnect.
		conn.Close(ctx)
		old.Close(ctx)
	}
	if err := c.Restart(ctx, "bogus"); err == nil {
		t.Error("Restart with a bogus mode succeeded")
	}
}

func TestStopStartAgain(t *testing.T) {
	t.Parallel()
	c := startCluster(t, Options{})
	ctx := testCtx(t)
	if err := c.Stop(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	if conn, err := pgx.Connect(ctx, c.URL("postgres")); err == nil {
		conn.Close(ctx)
		t.Fatal("connected to a stopped cluster")
	}
	if err := c.StartAgain(ctx); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, ctx, c.URL("postgres"))
	if got := show(t, ctx, conn, "wal_level"); got != "logical" {
		t.Errorf("wal_level = %q", got)
	}
	// Close works on a stopped cluster too.
	if err := c.Stop(ctx, "immediate"); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.Dir()); !os.IsNotExist(err) {
		t.Errorf("directory %s still exists after Close: %v", c.Dir(), err)
	}
	if err := c.StartAgain(ctx); err == nil {
		t.Error("StartAgain after Close succeeded")
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Hold a connection so that a backend process exists too.
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatal(err)
	}
	pid := postmasterPID(t, c)
	dir := c.Dir()

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("directory %s still exists after Close: %v", dir, err)
	}
	if !processGone(pid) {
		t.Errorf("postmaster %d still running after Close", pid)
	}
	// Backends notice the postmaster's death on their own; give them a moment.
	deadline := time.Now().Add(5 * time.Second)
	for !processGone(backend) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !processGone(backend) {
		t.Errorf("backend %d still running after Close", backend)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	var nilCluster *Cluster
	if err := nilCluster.Close(); err != nil {
		t.Errorf("nil Close: %v", err)
	}
}

// logDirs captures the "dir" attribute of log records.
type logDirs struct {
	mu   sync.Mutex
	dirs []string
}

func (l *logDirs) Enabled(context.Context, slog.Level) bool { return true }
func (l *logDirs) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logDirs) WithGroup(string) slog.Handler            { return l }
func (l *logDirs) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "dir" {
			l.mu.Lock()
			l.dirs = append(l.dirs, a.Value.String())
			l.mu.Unlock()
		}
		return true
	})
	return nil
}

func TestStartFailureCleansUp(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	logs := &logDirs{}
	c, err := Start(ctx, Options{
		Settings: map[string]string{"shared_buffers": "'not a size'"},
		Logger:   slog.New(logs),
	})
	if err == nil {
		c.Close()
		t.Fatal("Start with an invalid setting succeeded")
	}
	t.Logf("expected error: %v", err)
	if !strings.Contains(err.Error(), "shared_buffers") {
		t.Errorf("error does not include the server log: %v", err)
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	if len(logs.dirs) == 0 {
		t.Fatal("no dir logged")
	}
	for _, dir := range logs.dirs {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("directory %s still exists after a failed Start: %v", dir, err)
		}
	}
}

func TestStartOptionErrors(t *testing.T) {
	if _, err := Start(testCtx(t), Options{Port: 5432, TCPPort: 5433}); err == nil {
		t.Error("differing Port and TCPPort accepted")
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestTCP(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	c := startCluster(t, Options{TCPPort: port})
	ctx := testCtx(t)
	if c.Port() != port {
		t.Errorf("Port() = %d, want %d", c.Port(), port)
	}
	for _, url := range []string{c.URL("postgres"), c.TCPURL("postgres")} {
		conn := connect(t, ctx, url)
		if got := show(t, ctx, conn, "listen_addresses"); got != "127.0.0.1" {
			t.Errorf("listen_addresses = %q", got)
		}
	}
}

func TestKillPostmaster(t *testing.T) {
	t.Parallel()
	c := startCluster(t, Options{})
	ctx := testCtx(t)
	conn := connect(t, ctx, c.URL("postgres"))
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatal(err)
	}
	pid := postmasterPID(t, c)
	if err := c.killPostmaster(); err != nil {
		t.Fatal(err)
	}
	if !processGone(pid) || !processGone(backend) {
		t.Errorf("postmaster gone: %v, backend gone: %v", processGone(pid), processGone(backend))
	}
	// The data directory survives a crash.
	if err := c.StartAgain(ctx); err != nil {
		t.Fatal(err)
	}
}

const helperEnv = "ROWCAST_PGCLUSTER_HELPER"

// TestHelperProcess is not a real test: TestWatchdog runs the test binary
// with it to get a process that starts a cluster and dies without Close.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process for TestWatchdog")
	}
	c, err := Start(context.Background(), Options{})
	if err != nil {
		os.Stdout.WriteString("error " + err.Error() + "\n")
		os.Exit(1)
	}
	b, _ := os.ReadFile(filepath.Join(c.DataDir(), "postmaster.pid"))
	line, _, _ := strings.Cut(string(b), "\n")
	os.Stdout.WriteString("ready " + c.Dir() + " " + line + "\n")
	select {}
}

func TestWatchdog(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper: %q, %v", line, err)
	}
	var dir string
	var pid int
	if _, err := fmt.Sscanf(line, "ready %s %d", &dir, &pid); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper said %q: %v", line, err)
	}
	// Die the hard way: no Close, no deferred functions.
	cmd.Process.Kill()
	cmd.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, statErr := os.Stat(dir)
		if os.IsNotExist(statErr) && processGone(pid) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the owner was killed: dir %s stat err %v, postmaster %d gone %v", dir, statErr, pid, processGone(pid))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
