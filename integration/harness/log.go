// Package harness runs rowcast and other programs as child processes for
// the end-to-end tests (integration/) and the benchmark command
// (cmd/rowcast-bench): it builds the binary, starts it on a free port,
// waits until it is ready, keeps its output, and stops it.
//
// It reports failures as errors rather than through package testing, so
// that the benchmark command, an ordinary program, can use it too.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
)

// LogBuffer keeps what a child process writes, for reading while it runs.
// It is safe for concurrent use; the zero value is an empty buffer without
// a limit.
type LogBuffer struct {
	// Limit, when > 0, is how many bytes are kept. Later output is counted
	// and dropped, so that a chatty child cannot fill memory during a long
	// benchmark; the head is what is kept because startup errors and
	// addresses are printed first.
	Limit int

	mu      sync.Mutex
	b       bytes.Buffer
	dropped int64
	// changed is closed (and replaced) on every write, to wake WaitFor.
	changed chan struct{}
}

// ErrExited is returned by WaitFor when the process writing the log exited
// before the log satisfied the condition.
var ErrExited = errors.New("the process exited")

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	keep := p
	if l.Limit > 0 {
		room := max(l.Limit-l.b.Len(), 0)
		if len(keep) > room {
			keep = keep[:room]
		}
	}
	l.b.Write(keep)
	l.dropped += int64(len(p) - len(keep))
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
	return len(p), nil
}

// String returns everything kept so far, with a note of what was dropped.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dropped > 0 {
		return l.b.String() + fmt.Sprintf("\n[%d more bytes of output dropped]\n", l.dropped)
	}
	return l.b.String()
}

// Contains reports whether the log contains s.
func (l *LogBuffer) Contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Contains(l.b.Bytes(), []byte(s))
}

// snapshot returns the content and a channel closed by the next write.
func (l *LogBuffer) snapshot() (string, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed == nil {
		l.changed = make(chan struct{})
	}
	return l.b.String(), l.changed
}

// WaitFor blocks until cond holds for the log's content and returns that
// content. It returns an error wrapping ctx's error when ctx ends first,
// and one wrapping ErrExited when exited is closed (the writer is gone)
// and the complete log still does not satisfy cond. exited may be nil.
func (l *LogBuffer) WaitFor(ctx context.Context, exited <-chan struct{}, cond func(log string) bool) (string, error) {
	for {
		s, changed := l.snapshot()
		if cond(s) {
			return s, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return s, fmt.Errorf("waiting for the log: %w", ctx.Err())
		case <-exited:
			// The output may have been written between the snapshot and
			// the exit: look once more.
			if s := l.String(); cond(s) {
				return s, nil
			}
			return l.String(), ErrExited
		}
	}
}
