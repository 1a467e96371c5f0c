package harness

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestLogBufferLimit(t *testing.T) {
	l := &LogBuffer{Limit: 5}
	fmt.Fprint(l, "abc")
	if n, err := l.Write([]byte("defgh")); n != 5 || err != nil {
		t.Fatalf("Write = %d, %v; want all bytes accepted", n, err)
	}
	if got := l.String(); !strings.HasPrefix(got, "abcde\n") || !strings.Contains(got, "3 more bytes") {
		t.Errorf("String() = %q", got)
	}
	if l.Contains("f") {
		t.Error("a dropped byte is reported as contained")
	}
}

func TestLogBufferWaitFor(t *testing.T) {
	var l LogBuffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got := make(chan error, 1)
	go func() {
		_, err := l.WaitFor(ctx, nil, func(s string) bool { return strings.Contains(s, "ready\n") })
		got <- err
	}()
	fmt.Fprint(&l, "starting\n")
	fmt.Fprint(&l, "rea")
	fmt.Fprint(&l, "dy\n")
	if err := <-got; err != nil {
		t.Fatal(err)
	}

	exited := make(chan struct{})
	close(exited)
	if _, err := l.WaitFor(ctx, exited, func(s string) bool { return strings.Contains(s, "never") }); !errors.Is(err, ErrExited) {
		t.Errorf("after exit: %v, want ErrExited", err)
	}
	short, cancelShort := context.WithCancel(ctx)
	cancelShort()
	if _, err := l.WaitFor(short, nil, func(string) bool { return false }); !errors.Is(err, context.Canceled) {
		t.Errorf("after cancel: %v, want context.Canceled", err)
	}
}

func TestProcessStop(t *testing.T) {
	// A stopped process acts on SIGTERM only once continued: Stop must
	// send SIGCONT to a paused process.
	p, err := Start(exec.Command("/bin/sh", "-c", "echo started; exec sleep 600"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := p.WaitLog(ctx, func(s string) bool { return strings.Contains(s, "started") }); err != nil {
		t.Fatal(err)
	}
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	inTime, err := p.Stop(syscall.SIGTERM, time.Minute)
	if !inTime {
		t.Error("not stopped by SIGTERM")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Errorf("exit error %v, want killed by SIGTERM", err)
	}
	// Stopping again only reports the exit.
	if inTime, err2 := p.Stop(syscall.SIGTERM, time.Minute); !inTime || err2 != err {
		t.Errorf("second Stop = %v, %v", inTime, err2)
	}
}

func TestProcessStopBound(t *testing.T) {
	// A process that ignores the signal is killed once the bound passes.
	p, err := Start(exec.Command("/bin/sh", "-c", `trap "" TERM; echo trapped; while :; do sleep 1; done`), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := p.WaitLog(ctx, func(s string) bool { return strings.Contains(s, "trapped") }); err != nil {
		t.Fatal(err)
	}
	if inTime, _ := p.Stop(syscall.SIGTERM, 100*time.Millisecond); inTime {
		t.Error("a process ignoring SIGTERM reported as stopped in time")
	}
	if !p.Exited() {
		t.Error("still running after Stop")
	}
}

func TestGroupStopAll(t *testing.T) {
	var g Group
	var ps []*Process
	for range 3 {
		p, err := g.Start(exec.Command("sleep", "600"), nil)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	if err := ps[0].Kill(); err == nil {
		t.Error("Kill: no exit error")
	}
	g.StopAll(syscall.SIGTERM, time.Minute)
	for i, p := range ps {
		if !p.Exited() {
			t.Errorf("process %d still runs", i)
		}
	}
	g.mu.Lock()
	left := len(g.procs)
	g.mu.Unlock()
	if left != 0 {
		t.Errorf("%d processes left in the group", left)
	}
}

func TestWaitHTTP(t *testing.T) {
	ready := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-ready:
		default:
			close(ready) // the next request is ready
			http.Error(w, "starting", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	if err := WaitHTTP(context.Background(), srv.URL, time.Minute, nil); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	close(exited)
	if err := WaitHTTP(context.Background(), "http://127.0.0.1:1/", time.Minute, exited); !errors.Is(err, ErrExited) {
		t.Errorf("after exit: %v, want ErrExited", err)
	}
}

func TestScrape(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "# HELP x A counter.\n# TYPE x counter\nx{reason=\"slow consumer\"} 2\nx{reason=\"gone\"} 3\nx_total 1.5e+06\n")
	}))
	defer srv.Close()
	m, err := Scrape(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if v := m[`x{reason="slow consumer"}`]; v != 2 {
		t.Errorf("labelled series = %v", v)
	}
	if v := Sum(m, "x"); v != 5 {
		t.Errorf("Sum(x) = %v, want 5 (x_total is another metric)", v)
	}
}
