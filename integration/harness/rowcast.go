package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ModuleRoot returns the directory of the go.mod around the working
// directory.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w (is the Go toolchain on PATH?)", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the rowcast module: run from the repository (go test ./integration/, go run ./cmd/rowcast-bench)")
	}
	return filepath.Dir(mod), nil
}

// BuildRowcast builds the rowcast command of the module around the working
// directory into dir and returns the binary's path. With race it is built
// with the race detector. Callers build once per process: a build takes
// seconds, a start milliseconds.
func BuildRowcast(ctx context.Context, dir string, race bool) (string, error) {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "rowcast")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	build := exec.CommandContext(ctx, "go", append(args, "./cmd/rowcast")...)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s ./cmd/rowcast in %s: %w\n%s", strings.Join(args, " "), root, err, out)
	}
	return bin, nil
}

// FreeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago, for a child process to listen on.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port on 127.0.0.1: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// RowcastConfig says how to start "rowcast serve".
type RowcastConfig struct {
	// Bin is the rowcast binary (see BuildRowcast).
	Bin string
	// Env is added to this process's environment and ROWCAST_LISTEN, so it
	// overrides both (DATABASE_URL, JWT_SECRET, ROWCAST_CAPTURE, ...).
	Env []string
	// Command makes the command for a program and its arguments; nil means
	// exec.Command. The benchmark wraps the program in taskset here.
	Command func(name string, args ...string) *exec.Cmd
	// Group, when set, owns the process (see Group.StopAll).
	Group *Group
	// LogLimit bounds the log kept (see LogBuffer.Limit); 0 keeps all.
	LogLimit int
	// ReadyTimeout bounds the wait for /readyz; 0 means 30 s.
	ReadyTimeout time.Duration
	// Addr is the address to listen on; empty means a free loopback port.
	// A restart on the same address lets clients reconnect where they were.
	Addr string
	// ReadyPath is what StartRowcast waits to answer 200: "" means
	// /readyz (capture connected); /healthz starts a rowcast whose capture
	// a test keeps from connecting.
	ReadyPath string
}

// Rowcast is a running "rowcast serve".
type Rowcast struct {
	*Process
	Addr string // host:port it listens on
	Base string // "http://" + Addr
}

// StartRowcast starts "rowcast serve" on a free port and waits until its
// /readyz answers 200. When rowcast exits or is not ready in time, it is
// stopped and the error carries its log.
func StartRowcast(ctx context.Context, cfg RowcastConfig) (*Rowcast, error) {
	addr := cfg.Addr
	if addr == "" {
		var err error
		if addr, err = FreeAddr(); err != nil {
			return nil, err
		}
	}
	command := cfg.Command
	if command == nil {
		command = exec.Command
	}
	cmd := command(cfg.Bin, "serve")
	cmd.Env = append(os.Environ(), "ROWCAST_LISTEN="+addr)
	cmd.Env = append(cmd.Env, cfg.Env...)
	p, err := start(cmd, &LogBuffer{Limit: cfg.LogLimit}, cfg.Group)
	if err != nil {
		return nil, err
	}
	r := &Rowcast{Process: p, Addr: addr, Base: "http://" + addr}
	timeout := cfg.ReadyTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	path := cfg.ReadyPath
	if path == "" {
		path = "/readyz"
	}
	if err := r.waitPath(ctx, path, timeout); err != nil {
		_ = r.Kill()
		return nil, err
	}
	return r, nil
}

// WaitReady waits until /readyz answers 200, for at most timeout. It fails
// at once, with the log, when rowcast exits.
func (r *Rowcast) WaitReady(ctx context.Context, timeout time.Duration) error {
	return r.waitPath(ctx, "/readyz", timeout)
}

func (r *Rowcast) waitPath(ctx context.Context, path string, timeout time.Duration) error {
	if err := WaitHTTP(ctx, r.Base+path, timeout, r.Done()); err != nil {
		if r.Exited() {
			return fmt.Errorf("rowcast serve exited before it was ready (%v); its log:\n%s", r.Err(), r.Log)
		}
		return fmt.Errorf("rowcast serve: %w; its log:\n%s", err, r.Log)
	}
	return nil
}

// pollEvery is how often WaitHTTP asks again: HTTP readiness has no event
// to wait on, and a loopback request costs well under a millisecond.
const pollEvery = 20 * time.Millisecond

// WaitHTTP waits until a GET of url answers 200, for at most timeout. It
// fails when ctx ends or exited (may be nil) is closed first.
func WaitHTTP(ctx context.Context, url string, timeout time.Duration, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("GET %s: %w", url, err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		if ctx.Err() == nil {
			last = err
		}
		t := time.NewTimer(pollEvery)
		select {
		case <-t.C:
		case <-exited:
			t.Stop()
			return fmt.Errorf("GET %s: %w", url, ErrExited)
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("GET %s not 200 within %v (last: %v): %w", url, timeout, last, ctx.Err())
		}
	}
}
