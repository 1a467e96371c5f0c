// Command rowcast-bench measures rowcast end to end on this machine and
// prints Markdown tables (and writes JSON with -out).
//
// It starts its own throwaway PostgreSQL, builds rowcast from the tree and
// runs it as a separate process, drives load over loopback, and measures
// every rowcast figure beside a limit measured in the same run:
// pg_recvlogical and a bare LISTEN loop for capture, a bare gorilla/websocket
// broadcast server for fan-out, PostgreSQL without capture for writers.
//
//	go run ./cmd/rowcast-bench                 # everything (make bench)
//	go run ./cmd/rowcast-bench -quick          # smaller sizes, under 2 minutes
//	go run ./cmd/rowcast-bench -scenarios capture,wire -runs 3 -out results.json
//
// With two or more cores, rowcast (and every process that plays its role:
// pg_recvlogical, the bare broadcast server) runs pinned to core 1 and the
// load generator (this process: WebSocket clients, writers, the bare
// listener) to core 0, with taskset. PostgreSQL and pgbench are not pinned.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// allScenarios in the order they run.
var allScenarios = []string{"capture", "latency", "fanout", "memory", "writers", "wire", "cluster"}

type options struct {
	quick     bool
	scenarios []string
	runs      int
	out       string
	pin       bool
	verbose   bool
	// cpuProfile and memProfile are file prefixes (profile.go).
	cpuProfile string
	memProfile string
}

// envPinned marks the re-executed, pinned bench process.
const envPinned = "ROWCAST_BENCH_PINNED"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "bare-server" {
		if err := runBareServer(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bare-server:", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(run())
}

func run() int {
	var opts options
	var scen string
	fs := flag.NewFlagSet("rowcast-bench", flag.ContinueOnError)
	fs.BoolVar(&opts.quick, "quick", false, "smaller sizes and shorter points (under 2 minutes)")
	fs.StringVar(&scen, "scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios to run: "+strings.Join(allScenarios, ","))
	fs.IntVar(&opts.runs, "runs", 1, "repeat every measurement N times and report the median")
	fs.StringVar(&opts.out, "out", "", "write the results as JSON to this file")
	fs.BoolVar(&opts.pin, "pin", true, "pin rowcast to core 1 and the load to core 0 with taskset (needs 2+ cores)")
	fs.BoolVar(&opts.verbose, "v", false, "log progress details")
	fs.StringVar(&opts.cpuProfile, "cpuprofile", "", "save CPU profiles of rowcast (each fan-out step, each capture drain) as `PREFIX`-cpu-....pprof")
	fs.StringVar(&opts.memProfile, "memprofile", "", "save rowcast's heap profile with the memory scenario's idle clients as `PREFIX`-heap-....pprof")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	for _, s := range strings.Split(scen, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(allScenarios, s) {
			fmt.Fprintf(os.Stderr, "rowcast-bench: unknown scenario %q (want %s)\n", s, strings.Join(allScenarios, ","))
			return 2
		}
		opts.scenarios = append(opts.scenarios, s)
	}
	if opts.runs < 1 {
		opts.runs = 1
	}

	// Children inherit the raised limit because it is set explicitly
	// (Go restores the original soft limit in children otherwise).
	raiseNoFile()

	// Pin this process to core 0 by running again under taskset; the
	// environment marks the pinned process (and keeps the core count seen
	// before pinning, for the report).
	if opts.pin && os.Getenv(envPinned) == "" {
		opts.pin = false
		if cores := runtime.NumCPU(); cores >= 2 {
			if ts, err := exec.LookPath("taskset"); err == nil {
				if exe, err := os.Executable(); err == nil {
					os.Setenv(envPinned, fmt.Sprint(cores))
					args := append([]string{ts, "-c", "0", exe}, os.Args[1:]...)
					err = syscall.Exec(ts, args, os.Environ())
					fmt.Fprintln(os.Stderr, "rowcast-bench: re-exec under taskset failed, running unpinned:", err)
					os.Unsetenv(envPinned)
				}
			}
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A last bound on the whole run, whatever happens.
	ctx, cancel := context.WithTimeout(ctx, time.Duration(opts.runs)*30*time.Minute)
	defer cancel()
	b := &bench{opts: opts, log: os.Stderr, started: time.Now()}
	err := b.main(ctx)
	b.cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "rowcast-bench:", err)
		return 1
	}
	return 0
}

func raiseNoFile() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	lim.Cur = lim.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "[%6.1fs] %s\n", time.Since(b.started).Seconds(), fmt.Sprintf(format, args...))
}

func (b *bench) debugf(format string, args ...any) {
	if b.opts.verbose {
		b.logf(format, args...)
	}
}

func (b *bench) main(ctx context.Context) error {
	if err := b.prepare(ctx); err != nil {
		return err
	}
	b.res = newResults(b)
	for _, s := range allScenarios {
		if !slices.Contains(b.opts.scenarios, s) {
			continue
		}
		for run := 1; run <= b.opts.runs; run++ {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			b.run = run
			b.logf("scenario %s, run %d/%d", s, run, b.opts.runs)
			begin := time.Now()
			var err error
			switch s {
			case "capture":
				err = b.scenarioCapture(ctx)
			case "latency":
				err = b.scenarioLatency(ctx)
			case "fanout":
				err = b.scenarioFanout(ctx)
			case "memory":
				err = b.scenarioMemory(ctx)
			case "writers":
				err = b.scenarioWriters(ctx)
			case "wire":
				err = b.scenarioWire(ctx)
			case "cluster":
				err = b.scenarioCluster(ctx)
			}
			// Whatever a failed scenario left running.
			b.procs.StopAll(syscall.SIGTERM, 10*time.Second)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				b.logf("scenario %s failed: %v", s, err)
				b.res.failed(s, err)
				break
			}
			b.res.elapsed(s, time.Since(begin))
		}
	}
	b.res.total = time.Since(b.started)
	b.res.render(os.Stdout)
	if b.opts.out != "" {
		if err := b.res.writeJSON(b.opts.out); err != nil {
			return err
		}
		b.logf("wrote %s", b.opts.out)
	}
	return nil
}
