package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strings"
	"time"

	"rowcast/integration/harness"
)

// Profiles (-cpuprofile, -memprofile): rowcast runs with its pprof
// handlers on a loopback address of their own (ROWCAST_DEBUG_LISTEN), and
// the bench saves what they give for the measured part of a scenario:
// a CPU profile of each fan-out step and of each capture drain, and a heap
// profile of the idle connections in the memory scenario. Files are
// named <prefix>-<what>.pprof; read them with go tool pprof.

// profiling reports whether rowcast needs its pprof handlers.
func (b *bench) profiling() bool { return b.opts.cpuProfile != "" || b.opts.memProfile != "" }

// debugEnv is the environment that turns rowcast's pprof handlers on.
func (b *bench) debugEnv() (addr string, env []string, err error) {
	if !b.profiling() {
		return "", nil, nil
	}
	addr, err = harness.FreeAddr()
	if err != nil {
		return "", nil, fmt.Errorf("a port for pprof: %w", err)
	}
	return addr, []string{"ROWCAST_DEBUG_LISTEN=" + addr}, nil
}

// profileName makes a file name of the parts.
func profileName(prefix string, parts ...string) string {
	name := strings.Join(parts, "-")
	name = strings.NewReplacer("/", "_", " ", "_", ":", "_").Replace(name)
	return prefix + "-" + name + ".pprof"
}

// cpuProfile starts a CPU profile of rowcast for d (whole seconds, at
// least one) and returns a function that waits for it and saves it. It
// does nothing without -cpuprofile.
func (b *bench) cpuProfile(ctx context.Context, rc *rowcastProc, d time.Duration, parts ...string) (wait func()) {
	if b.opts.cpuProfile == "" || rc == nil || rc.debug == "" {
		return func() {}
	}
	secs := int(math.Max(1, math.Ceil(d.Seconds())))
	path := profileName(b.opts.cpuProfile, append([]string{"cpu"}, parts...)...)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := b.fetchProfile(ctx, rc, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), time.Duration(secs+30)*time.Second, path); err != nil {
			b.logf("cpu profile %s: %v", path, err)
		}
	}()
	return func() { <-done }
}

// heapProfile saves rowcast's heap profile (after a GC). It does nothing
// without -memprofile.
func (b *bench) heapProfile(ctx context.Context, rc *rowcastProc, parts ...string) {
	if b.opts.memProfile == "" || rc == nil || rc.debug == "" {
		return
	}
	path := profileName(b.opts.memProfile, append([]string{"heap"}, parts...)...)
	if err := b.fetchProfile(ctx, rc, "/debug/pprof/heap?gc=1", 30*time.Second, path); err != nil {
		b.logf("heap profile %s: %v", path, err)
	}
}

func (b *bench) fetchProfile(ctx context.Context, rc *rowcastProc, query string, timeout time.Duration, path string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+rc.debug+query, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	b.debugf("saved %s", path)
	return nil
}
