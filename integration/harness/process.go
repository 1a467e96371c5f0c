package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Process is a started child process. A goroutine waits for it from Start
// on, so Done and Err tell when and how it exited without another Wait.
type Process struct {
	Cmd *exec.Cmd
	// Log receives the output that the command did not send elsewhere
	// (Stdout and Stderr left nil before Start).
	Log *LogBuffer

	done chan struct{}
	err  error
}

// Start starts cmd. Its stdout and stderr, unless already set, go to log
// (a new LogBuffer when log is nil). The caller owns the process: stop it
// with Stop, Kill or WaitExit, or start it through a Group that does.
func Start(cmd *exec.Cmd, log *LogBuffer) (*Process, error) {
	return start(cmd, log, nil)
}

func start(cmd *exec.Cmd, log *LogBuffer, g *Group) (*Process, error) {
	if log == nil {
		log = &LogBuffer{}
	}
	if cmd.Stdout == nil {
		cmd.Stdout = log
	}
	if cmd.Stderr == nil {
		cmd.Stderr = log
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	p := &Process{Cmd: cmd, Log: log, done: make(chan struct{})}
	if g != nil {
		g.add(p)
	}
	go func() {
		p.err = cmd.Wait()
		// Out of the group before done closes: whoever saw it exit (as
		// StopAll's callers do) finds the group without it.
		if g != nil {
			g.remove(p)
		}
		close(p.done)
	}()
	return p, nil
}

// PID is the process id.
func (p *Process) PID() int { return p.Cmd.Process.Pid }

// Done is closed once the process has exited and its output is in Log.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the process's exit error (nil for exit status 0); valid once Done
// is closed.
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// Signal sends sig to the process (an error once it has exited).
func (p *Process) Signal(sig os.Signal) error { return p.Cmd.Process.Signal(sig) }

// Pause stops the process with SIGSTOP: it keeps its connections and
// sockets but runs no code until Resume.
func (p *Process) Pause() error { return p.Signal(syscall.SIGSTOP) }

// Resume continues a process stopped by Pause.
func (p *Process) Resume() error { return p.Signal(syscall.SIGCONT) }

// WaitExit waits up to bound for the process to exit and kills it
// (SIGKILL) after that. It reports whether the process exited within bound,
// and its exit error.
func (p *Process) WaitExit(bound time.Duration) (inTime bool, err error) {
	t := time.NewTimer(bound)
	defer t.Stop()
	select {
	case <-p.done:
		return true, p.err
	case <-t.C:
	}
	_ = p.Cmd.Process.Kill()
	<-p.done
	return false, p.err
}

// Stop sends sig and waits up to bound for the exit, then kills the
// process. SIGCONT goes first, because a process stopped by Pause would
// act on sig only once continued. Stopping an exited process returns its
// exit error at once. It reports whether the process exited within bound,
// and its exit error.
func (p *Process) Stop(sig os.Signal, bound time.Duration) (inTime bool, err error) {
	if p.Exited() {
		return true, p.err
	}
	_ = p.Signal(syscall.SIGCONT)
	_ = p.Signal(sig)
	return p.WaitExit(bound)
}

// Kill kills the process with SIGKILL and waits for it to exit.
func (p *Process) Kill() error {
	_, err := p.Stop(syscall.SIGKILL, time.Minute)
	return err
}

// WaitLog waits until cond holds for the process's log (see
// LogBuffer.WaitFor); it fails when ctx ends or the process exits first.
func (p *Process) WaitLog(ctx context.Context, cond func(log string) bool) (string, error) {
	return p.Log.WaitFor(ctx, p.done, cond)
}

// Group owns the processes started through it, so that one call ends
// whatever is still running when a run is interrupted or fails half way.
// The zero value is an empty group.
type Group struct {
	mu    sync.Mutex
	procs map[*Process]struct{}
}

// Start is Start for a process that the group owns until it exits.
func (g *Group) Start(cmd *exec.Cmd, log *LogBuffer) (*Process, error) {
	return start(cmd, log, g)
}

func (g *Group) add(p *Process) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.procs == nil {
		g.procs = map[*Process]struct{}{}
	}
	g.procs[p] = struct{}{}
}

func (g *Group) remove(p *Process) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.procs, p)
}

// StopAll stops every process of the group that is still running, all at
// once, with Stop(sig, bound), and returns when they have all exited.
func (g *Group) StopAll(sig os.Signal, bound time.Duration) {
	g.mu.Lock()
	ps := make([]*Process, 0, len(g.procs))
	for p := range g.procs {
		ps = append(ps, p)
	}
	g.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() { _, _ = p.Stop(sig, bound) })
	}
	wg.Wait()
}
