// Command rowcast streams PostgreSQL row changes to dashboards.
//
// The flow, from here down: serve() opens the database, checks that capture
// is installed (cdc), builds the Hub and the HTTP server (broadcast), then
// runs capture → Hub.Apply → sessions → WebSocket writers until a signal.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `rowcast streams PostgreSQL row changes to dashboards as live events.

Usage:
  rowcast serve      [flags]   capture changes and serve /ws, /events, /socket.io/, /api/snapshot, /metrics
  rowcast setup      [flags]   install capture in the database (idempotent); --print writes the SQL instead
  rowcast teardown --yes       remove everything setup installed
  rowcast demo       [flags]   the dashboard on sample tickets, with a throwaway PostgreSQL and a writer
  rowcast healthcheck [flags]  exit 0 if the local rowcast answers /healthz (--ready: /readyz), for container health checks
  rowcast version              print the version

Every setting is a flag or the environment variable named beside it.
Run "rowcast serve --help" for the settings.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "serve":
		err = runServe(ctx, rest, stderr)
	case "setup":
		err = runSetup(ctx, rest, stdout, stderr)
	case "teardown":
		err = runTeardown(ctx, rest, stdout, stderr)
	case "demo":
		err = runDemo(ctx, rest, stdout, stderr)
	case "healthcheck":
		err = runHealthcheck(ctx, rest, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "rowcast", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		fmt.Fprintln(stdout)
		newSettings("serve", stdout, os.LookupEnv).usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "rowcast: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "rowcast:", err)
		return 1
	}
	return 0
}
