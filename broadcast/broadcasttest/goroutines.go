package broadcasttest

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// GoroutinesIn counts the goroutines whose stack has a frame containing
// fn: how the transports' tests see what an idle connection keeps.
func GoroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			count++
		}
	}
	return count
}

// WaitLong waits for cond without a tight bound: what the idle tests
// wait for (writer goroutines lingering in their pool) takes seconds, not
// milliseconds.
func WaitLong(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after a minute", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
