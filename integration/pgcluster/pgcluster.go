// Package pgcluster starts throwaway PostgreSQL clusters from locally
// installed server binaries (initdb, pg_ctl, postgres).
//
// It is used by tests (through package pgtest, which holds the helpers
// that need package testing), by the "rowcast demo" command and by the
// benchmark command. A cluster lives in a private temporary directory,
// listens on a unix socket in that directory (and optionally on 127.0.0.1),
// uses trust authentication for the "postgres" superuser and is configured
// for logical replication.
//
// Close stops the server and removes the directory. As a safety net, every
// cluster also has a small watchdog process that stops the server and
// removes the directory if the owning process exits without calling Close
// (for example when a test binary is killed by a timeout).
package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoBinaries is returned (wrapped or as is) when the PostgreSQL server
// binaries cannot be found.
var ErrNoBinaries = errors.New(`PostgreSQL server binaries not found (initdb); install them with "sudo apt-get install postgresql" (Debian/Ubuntu) or "brew install postgresql" (macOS), or set DATABASE_URL to an existing database`)

// DefaultPort is the port used when Options.Port and Options.TCPPort are 0.
// Without TCP the port only names the unix socket file, so clusters in
// different directories never conflict.
const DefaultPort = 5432

// maxSocketPath is the usable length of sun_path (108 bytes on Linux, 104 on
// macOS) minus the terminating NUL; the shorter one is used.
const maxSocketPath = 103

// readyTimeout bounds how long Start and StartAgain wait for the server to
// accept connections after pg_ctl has returned.
const readyTimeout = 60 * time.Second

// Options configures a cluster started by Start.
type Options struct {
	// Settings are extra postgresql.conf settings (name -> value), written
	// after the defaults so they override them, e.g.
	// {"max_slot_wal_keep_size": "64MB"}. Values are written verbatim:
	// quote strings yourself ("'replica'").
	Settings map[string]string
	// InitdbArgs are extra initdb arguments, e.g. "--wal-segsize=1".
	InitdbArgs []string
	// Port is the server port. 0 means 5432, on the unix socket only.
	Port int
	// TCPPort, when > 0, makes the server also listen on 127.0.0.1 on that
	// port. PostgreSQL uses a single port number for the socket and TCP, so
	// Port must be 0 or equal to TCPPort.
	TCPPort int
	// Logger receives start/stop messages; nil discards them.
	Logger *slog.Logger
}

// Cluster is a running (or stopped) throwaway PostgreSQL cluster.
type Cluster struct {
	binDir  string
	dir     string
	dataDir string
	logFile string
	port    int
	tcpPort int
	logger  *slog.Logger
	cred    *syscall.Credential // non-nil when running the server as another user

	watchdog  *exec.Cmd
	watchdogW *os.File

	mu     sync.Mutex
	closed bool
}

// live holds every cluster that has not been closed, so that CloseAll can
// close them on SIGINT/SIGTERM.
var live = struct {
	sync.Mutex
	m map[*Cluster]struct{}
}{m: map[*Cluster]struct{}{}}

func register(c *Cluster) {
	live.Lock()
	live.m[c] = struct{}{}
	live.Unlock()
}

func unregister(c *Cluster) {
	live.Lock()
	delete(live.m, c)
	live.Unlock()
}

// CloseAll closes every cluster of this process that is still open: for a
// signal handler or a test binary's exit, where the owners cannot run.
func CloseAll() {
	live.Lock()
	cs := slices.Collect(maps.Keys(live.m))
	live.Unlock()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() { _ = c.Close() })
	}
	wg.Wait()
}

// FindBinDir returns the directory holding initdb, pg_ctl and postgres:
// the one found through PATH first (symlinks resolved), then the newest
// /usr/lib/postgresql/*/bin (Debian/Ubuntu), then a few other well-known
// locations (Homebrew, RHEL). The error wraps ErrNoBinaries.
func FindBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		var cands []string
		if real, err := filepath.EvalSymlinks(p); err == nil {
			cands = append(cands, filepath.Dir(real))
		}
		cands = append(cands, filepath.Dir(p))
		for _, d := range cands {
			if isBinDir(d) {
				if abs, err := filepath.Abs(d); err == nil {
					d = abs
				}
				return d, nil
			}
		}
	}
	for _, pattern := range []string{
		"/usr/lib/postgresql/*/bin",
		"/opt/homebrew/opt/postgresql*/bin",
		"/usr/local/opt/postgresql*/bin",
		"/usr/pgsql-*/bin",
	} {
		dirs, _ := filepath.Glob(pattern)
		sortByVersionDesc(dirs)
		for _, d := range dirs {
			if isBinDir(d) {
				return d, nil
			}
		}
	}
	return "", ErrNoBinaries
}

func isBinDir(dir string) bool {
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// sortByVersionDesc sorts paths such as /usr/lib/postgresql/9.6/bin and
// /usr/lib/postgresql/15/bin by the first number found in them, newest
// first.
func sortByVersionDesc(dirs []string) {
	version := func(s string) float64 {
		start := strings.IndexAny(s, "0123456789")
		if start < 0 {
			return -1
		}
		end := start
		for end < len(s) && (s[end] >= '0' && s[end] <= '9' || s[end] == '.') {
			end++
		}
		v, err := strconv.ParseFloat(strings.TrimSuffix(s[start:end], "."), 64)
		if err != nil {
			return -1
		}
		return v
	}
	slices.SortStableFunc(dirs, func(a, b string) int {
		va, vb := version(a), version(b)
		switch {
		case va > vb:
			return -1
		case va < vb:
			return 1
		}
		return strings.Compare(a, b)
	})
}

// serverCredential returns the credential to run initdb/pg_ctl with: nil
// normally, the "postgres" OS user when running as root (PostgreSQL refuses
// to run as root).
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf(`running as root, and PostgreSQL refuses to run as root, but there is no "postgres" OS user to run it as (%v); create it with "useradd --system postgres" or install the postgresql package, which creates it`, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("postgres OS user has non-numeric uid/gid %q/%q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// tempBase picks the parent of the cluster directory: os.TempDir() unless
// it is too long for unix socket paths or, when the server runs as another
// user, not traversable by that user; /tmp otherwise.
func tempBase(otherUser bool) string {
	base := os.TempDir()
	if len(base) > 60 {
		return "/tmp"
	}
	if otherUser {
		for d := base; ; d = filepath.Dir(d) {
			fi, err := os.Stat(d)
			if err != nil || fi.Mode().Perm()&0o001 == 0 {
				return "/tmp"
			}
			if d == filepath.Dir(d) {
				break
			}
		}
	}
	return base
}

// Start initializes and starts a new cluster in a fresh temporary
// directory. On error nothing is left behind (no directory, no process).
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	begin := time.Now()
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	port := opts.Port
	if opts.TCPPort > 0 {
		if port != 0 && port != opts.TCPPort {
			return nil, fmt.Errorf("pgcluster: Port (%d) and TCPPort (%d) differ; PostgreSQL uses one port for both", port, opts.TCPPort)
		}
		port = opts.TCPPort
	}
	if port == 0 {
		port = DefaultPort
	}
	if port < 0 || port > 65535 {
		return nil, fmt.Errorf("pgcluster: invalid port %d", port)
	}

	binDir, err := FindBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}

	dir, err := os.MkdirTemp(tempBase(cred != nil), "rowcast-pg-")
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	c := &Cluster{
		binDir:  binDir,
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		logFile: filepath.Join(dir, "postgres.log"),
		port:    port,
		tcpPort: opts.TCPPort,
		logger:  logger,
		cred:    cred,
	}
	register(c)
	fail := func(err error) (*Cluster, error) {
		_ = c.Close()
		return nil, err
	}
	logger.Debug("initializing postgres cluster", "dir", dir, "bin_dir", binDir)

	if sock := c.socketFile(); len(sock) > maxSocketPath {
		return fail(fmt.Errorf("pgcluster: unix socket path %s is too long (%d bytes, max %d); set TMPDIR to a shorter directory", sock, len(sock), maxSocketPath))
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fail(fmt.Errorf("pgcluster: chown %s to the postgres user: %w", dir, err))
		}
	}
	if err := c.startWatchdog(); err != nil {
		return fail(err)
	}

	// Defaults first: later initdb arguments override earlier ones.
	args := []string{"-D", c.dataDir, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"}
	args = append(args, opts.InitdbArgs...)
	if out, err := c.run(ctx, "initdb", args...); err != nil {
		return fail(fmt.Errorf("pgcluster: initdb failed: %w\n%s", err, tail(out, 40)))
	}

	if err := c.writeConfig(opts.Settings); err != nil {
		return fail(err)
	}
	if err := c.start(ctx); err != nil {
		return fail(err)
	}
	logger.Info("postgres cluster started", "dir", dir, "port", port, "tcp", opts.TCPPort > 0, "elapsed", time.Since(begin).Round(time.Millisecond))
	return c, nil
}

func (c *Cluster) writeConfig(extra map[string]string) error {
	listen := "''"
	if c.tcpPort > 0 {
		listen = "'127.0.0.1'"
	}
	var b strings.Builder
	b.WriteString("\n# Settings written by rowcast pgcluster.\n")
	set := func(k, v string) { fmt.Fprintf(&b, "%s = %s\n", k, v) }
	set("wal_level", "logical")
	set("max_wal_senders", "20")
	set("max_replication_slots", "20")
	set("fsync", "off")
	set("full_page_writes", "off")
	set("listen_addresses", listen)
	set("unix_socket_directories", quoteConf(c.dir))
	set("port", strconv.Itoa(c.port))
	set("max_connections", "300")
	set("log_min_messages", "warning")
	set("shared_buffers", "128MB")
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		set(k, extra[k])
	}
	f, err := os.OpenFile(filepath.Join(c.dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return fmt.Errorf("pgcluster: writing postgresql.conf: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pgcluster: writing postgresql.conf: %w", err)
	}
	return nil
}

func quoteConf(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// start runs pg_ctl start and waits until a connection succeeds.
func (c *Cluster) start(ctx context.Context) error {
	out, err := c.run(ctx, "pg_ctl", "-D", c.dataDir, "-l", c.logFile, "-w", "-t", "60", "start")
	if err != nil {
		return fmt.Errorf("pgcluster: pg_ctl start failed: %w\n%s%s", err, tail(out, 10), c.logTail())
	}
	if err := c.waitReady(ctx); err != nil {
		return fmt.Errorf("pgcluster: server did not accept connections: %w%s", err, c.logTail())
	}
	return nil
}

func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var lastErr error
	for {
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(context.Background())
			if err == nil {
				return nil
			}
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), lastErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// run runs a binary from the bin dir as the server user and returns its
// combined output.
func (c *Cluster) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, name), args...)
	cmd.Dir = c.dir
	cmd.Env = serverEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// pg_ctl start leaves the postmaster running; it redirects its output
	// to the log file, but never wait for inherited pipes regardless.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return out.Bytes(), err
}

// serverEnv is the environment for server binaries: the current one
// without PG* variables (which would change defaults such as the port or
// data directory) and with the C locale.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// startWatchdog starts a detached shell that waits for this process to
// exit (EOF on a pipe only this process holds) and then stops the server
// and removes the directory. Close does the same and then releases it.
func (c *Cluster) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	defer r.Close()
	const script = `read -r _ || :
"$1" -D "$2/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || {
	pid=$(head -n 1 "$2/data/postmaster.pid" 2>/dev/null) && [ -n "$pid" ] && kill -9 "$pid"
} >/dev/null 2>&1
rm -rf "$2"
`
	cmd := exec.Command("/bin/sh", "-c", script, "pgcluster-watchdog", filepath.Join(c.binDir, "pg_ctl"), c.dir)
	cmd.Dir = "/"
	cmd.Env = serverEnv()
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("pgcluster: starting watchdog: %w", err)
	}
	c.watchdog = cmd
	c.watchdogW = w
	return nil
}

// logTail returns the end of the server log, formatted for an error.
func (c *Cluster) logTail() string {
	b, err := readTail(c.logFile, 8<<10)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	return "\nserver log (" + c.logFile + "):\n" + tail(b, 30)
}

func readTail(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if off := fi.Size() - max; off > 0 {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return nil, err
		}
	}
	return io.ReadAll(f)
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// BinDir returns the directory holding the PostgreSQL binaries in use.
func (c *Cluster) BinDir() string { return c.binDir }

// Dir returns the cluster's temporary directory (data directory, log file
// and unix socket live under it).
func (c *Cluster) Dir() string { return c.dir }

// DataDir returns the PostgreSQL data directory.
func (c *Cluster) DataDir() string { return c.dataDir }

// LogFile returns the path of the server log.
func (c *Cluster) LogFile() string { return c.logFile }

// SocketDir returns the directory holding the unix socket.
func (c *Cluster) SocketDir() string { return c.dir }

// Port returns the server port (the socket file name suffix, and the TCP
// port when TCP is enabled).
func (c *Cluster) Port() int { return c.port }

func (c *Cluster) socketFile() string {
	return filepath.Join(c.dir, ".s.PGSQL."+strconv.Itoa(c.port))
}

// URL returns a pgx/libpq connection URL for database dbname as user
// postgres over the unix socket.
func (c *Cluster) URL(dbname string) string {
	q := url.Values{}
	q.Set("host", c.dir)
	q.Set("port", strconv.Itoa(c.port))
	q.Set("sslmode", "disable")
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Host: "", Path: "/" + dbname, RawQuery: q.Encode()}
	return u.String()
}

// TCPURL returns a connection URL for database dbname over TCP on
// 127.0.0.1, or "" when the cluster was started without TCPPort.
func (c *Cluster) TCPURL(dbname string) string {
	if c.tcpPort <= 0 {
		return ""
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     "127.0.0.1:" + strconv.Itoa(c.tcpPort),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// CreateDatabase creates database name and returns its URL.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return "", fmt.Errorf("pgcluster: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("pgcluster: create database %q: %w", name, err)
	}
	return c.URL(name), nil
}

func validMode(mode string) error {
	switch mode {
	case "fast", "immediate", "smart":
		return nil
	}
	return fmt.Errorf("pgcluster: invalid shutdown mode %q (want fast, immediate or smart)", mode)
}

// Stop stops the server with pg_ctl stop -m mode ("fast", "immediate" or
// "smart") and waits for it to exit. The data directory is kept, so
// StartAgain can start it again.
func (c *Cluster) Stop(ctx context.Context, mode string) error {
	if err := validMode(mode); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("pgcluster: cluster is closed")
	}
	out, err := c.run(ctx, "pg_ctl", "-D", c.dataDir, "-m", mode, "-w", "-t", "60", "stop")
	if err != nil {
		return fmt.Errorf("pgcluster: pg_ctl stop -m %s failed: %w\n%s%s", mode, err, tail(out, 10), c.logTail())
	}
	c.logger.Info("postgres cluster stopped", "dir", c.dir, "mode", mode)
	return nil
}

// StartAgain starts the server again on the same data directory (after
// Stop) and waits until it accepts connections.
func (c *Cluster) StartAgain(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("pgcluster: cluster is closed")
	}
	begin := time.Now()
	if err := c.start(ctx); err != nil {
		return err
	}
	c.logger.Info("postgres cluster started again", "dir", c.dir, "elapsed", time.Since(begin).Round(time.Millisecond))
	return nil
}

// Restart stops the server with the given mode and starts it again.
func (c *Cluster) Restart(ctx context.Context, mode string) error {
	if err := c.Stop(ctx, mode); err != nil {
		return err
	}
	return c.StartAgain(ctx)
}

// RunTool runs a server tool of the bin dir (pg_resetwal, pg_controldata)
// as the server's user, in the cluster's directory, and returns its
// combined output. Tools that change the data directory need the server
// stopped.
func (c *Cluster) RunTool(ctx context.Context, name string, args ...string) ([]byte, error) {
	return c.run(ctx, name, args...)
}

// DataOwner is the uid and gid that own the data directory, for files a
// test puts into it.
func (c *Cluster) DataOwner() (uid, gid int, err error) {
	fi, err := os.Stat(c.dataDir)
	if err != nil {
		return 0, 0, fmt.Errorf("pgcluster: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return os.Getuid(), os.Getgid(), nil
	}
	return int(st.Uid), int(st.Gid), nil
}

// Psql runs sql (one or more statements) with the psql binary against
// database db, with -X -q -v ON_ERROR_STOP=1 -At, and returns its output
// without the trailing newline.
func (c *Cluster) Psql(ctx context.Context, db string, sql string) (string, error) {
	psql := filepath.Join(c.binDir, "psql")
	if _, err := os.Stat(psql); err != nil {
		if psql, err = exec.LookPath("psql"); err != nil {
			return "", fmt.Errorf("pgcluster: psql not found in %s nor in PATH", c.binDir)
		}
	}
	cmd := exec.CommandContext(ctx, psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-d", c.URL(db), "-f", "-")
	cmd.Stdin = strings.NewReader(sql)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("pgcluster: psql: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSuffix(stdout.String(), "\n"), nil
}

// Close stops the server immediately (killing it if pg_ctl fails) and
// removes the temporary directory. It is idempotent and safe to call on a
// nil *Cluster.
func (c *Cluster) Close() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	defer unregister(c)

	var errs []error
	if _, err := os.Stat(filepath.Join(c.dataDir, "postmaster.pid")); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := c.run(ctx, "pg_ctl", "-D", c.dataDir, "-m", "immediate", "-w", "-t", "20", "stop")
		cancel()
		if err != nil {
			c.logger.Warn("pg_ctl stop failed, killing postmaster", "dir", c.dir, "err", err, "output", tail(out, 5))
		}
	}
	// Whatever pg_ctl did, make sure no server process is left.
	if err := c.killPostmaster(); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(c.dir); err != nil {
		errs = append(errs, fmt.Errorf("pgcluster: removing %s: %w", c.dir, err))
	}
	c.stopWatchdog()
	c.logger.Info("postgres cluster removed", "dir", c.dir)
	return errors.Join(errs...)
}

// killPostmaster kills the postmaster named in postmaster.pid and its
// child processes (found through /proc on Linux; elsewhere they exit on
// their own once they notice the postmaster is gone), then waits for them
// to exit.
func (c *Cluster) killPostmaster() error {
	b, err := os.ReadFile(filepath.Join(c.dataDir, "postmaster.pid"))
	if err != nil {
		return nil // not running
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 1 || processGone(pid) {
		return nil
	}
	children := childPIDs(pid)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for _, child := range children {
		_ = syscall.Kill(child, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		alive := 0
		for _, p := range append(children, pid) {
			if !processGone(p) {
				alive++
			}
		}
		if alive == 0 {
			// The dead postmaster may linger as a zombie until its parent
			// (init) reaps it, and a new postmaster would then take the
			// lock files for a live server's: remove them now.
			c.removeStaleLockFiles(pid)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgcluster: postmaster %d or its children did not exit after SIGKILL", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// removeStaleLockFiles removes postmaster.pid and the socket lock file if
// they still name pid.
func (c *Cluster) removeStaleLockFiles(pid int) {
	for _, f := range []string{filepath.Join(c.dataDir, "postmaster.pid"), c.socketFile() + ".lock"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		line, _, _ := strings.Cut(string(b), "\n")
		if strings.TrimSpace(line) == strconv.Itoa(pid) {
			_ = os.Remove(f)
		}
	}
}

// childPIDs returns the pids of the children of ppid (Linux only).
func childPIDs(ppid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the parenthesized command name: state, ppid, ...
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// processGone reports whether pid no longer runs (absent or a zombie).
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesized command name.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z' || s[i+2] == 'X'
	}
	return false
}

// stopWatchdog releases the watchdog (it then finds nothing to do) and
// reaps it.
func (c *Cluster) stopWatchdog() {
	if c.watchdog == nil {
		return
	}
	c.watchdogW.Close()
	done := make(chan struct{})
	go func() {
		_ = c.watchdog.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.watchdog.Process.Kill()
		<-done
	}
	c.watchdog = nil
}
