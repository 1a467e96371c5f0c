package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"rowcast/cdc"
	"rowcast/integration/pgcluster"
	rsql "rowcast/sql"
)

const (
	demoListen   = "127.0.0.1:8080"
	demoDatabase = "helpdesk"
	demoTable    = "public.tickets"
)

// runDemo runs the whole thing on one machine: a throwaway PostgreSQL (or
// DATABASE_URL), the tickets table with sample data, a "legacy" writer that
// changes tickets with plain SQL, and the dashboard with a demo login.
//
// Shutdown order on SIGINT/SIGTERM: the writer, the server, then the
// cluster (its processes and temporary directory).
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	s, opts := demoSettings(stderr, os.LookupEnv)
	// Neither a database nor a JWT secret is required: the demo starts its
	// own PostgreSQL and makes its own secret.
	cfg, err := s.parse(args, safeCORS)
	if err != nil {
		return err
	}
	rate, seedCount := opts.writerRate, opts.tickets
	ownCluster := strings.TrimSpace(cfg.DatabaseURL) == ""
	// The demo always signs its own tokens and logs visitors in.
	cfg.AuthOff = false
	if cfg.JWTSecret == "" {
		cfg.JWTSecret = randomSecret()
	}
	// The writer and the sample data are made for the reference table.
	cfg.Table = demoTable
	log := cfg.logger(stderr)
	say := func(format string, a ...any) { fmt.Fprintf(stdout, "rowcast demo: "+format+"\n", a...) }

	psql := `psql "$DATABASE_URL"`
	if ownCluster {
		c, err := pgcluster.Start(ctx, pgcluster.Options{
			Settings: map[string]string{"wal_level": "logical"},
			Logger:   log,
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, pgcluster.ErrNoBinaries) {
				return err
			}
			return fmt.Errorf("demo: starting PostgreSQL: %w", err)
		}
		defer func() {
			if err := c.Close(); err != nil {
				log.Warn("removing the PostgreSQL cluster", "err", err)
				return
			}
			say("stopped; removed %s", c.Dir())
		}()
		say("PostgreSQL running in %s (removed on exit)", c.Dir())
		if cfg.DatabaseURL, err = c.CreateDatabase(ctx, demoDatabase); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("demo: %w", err)
		}
		psql = shellQuote(psqlPath(c.BinDir())) + " " + shellQuote(cfg.DatabaseURL)
	}

	tickets, err := prepareDemo(ctx, cfg, seedCount, say)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}

	// The server gets its own context so that it stops after the writer.
	serveCtx, stopServe := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServe()
	ready := make(chan string, 1)
	served := make(chan error, 1)
	go func() {
		served <- serve(serveCtx, cfg, log, serveOptions{demoLogin: true, ready: func(addr string) { ready <- addr }})
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-served:
		return err
	case <-ctx.Done():
		stopServe()
		return <-served
	}

	say("dashboard at %s", dashboardURL(addr))
	switch {
	case rate > 0:
		say("%d tickets; a writer makes %s changes a second with plain SQL (--writer-rate)", tickets, strconv.FormatFloat(rate, 'f', -1, 64))
	default:
		say("%d tickets; the writer is off (--writer-rate 0)", tickets)
	}
	say("write tickets yourself and watch the dashboard:")
	fmt.Fprintf(stdout, "    %s\n", psql)
	fmt.Fprintf(stdout, "    INSERT INTO tickets (title, priority, category) VALUES ('Coffee machine leaking', 'urgent', 'other');\n")
	fmt.Fprintf(stdout, "    UPDATE tickets SET status = 'resolved', updated_at = now() WHERE id = 1;\n")
	fmt.Fprintf(stdout, "    SELECT rowcast.broadcast('notification', '{\"type\":\"info\",\"message\":\"Hello from psql\"}');\n")
	say("press Ctrl-C to stop")

	writerCtx, stopWriter := context.WithCancel(ctx)
	defer stopWriter()
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		if rate > 0 {
			w := newDemoWriter(cfg.DatabaseURL, rate, log)
			w.run(writerCtx)
		}
	}()

	var serveErr error
	serving := true
	select {
	case <-ctx.Done():
	case serveErr = <-served:
		serving = false
	}
	stopWriter()
	<-wrote
	stopServe()
	if serving {
		serveErr = <-served
	}
	return serveErr
}

// prepareDemo creates the tickets table, fills it when it is empty and
// installs capture the way "rowcast setup" does. It returns how many
// tickets the table holds.
func prepareDemo(ctx context.Context, cfg Config, seedCount int, say func(string, ...any)) (int, error) {
	conn, err := connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, rsql.Tickets); err != nil {
		return 0, fmt.Errorf("demo: create the tickets table: %w", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM tickets").Scan(&n); err != nil {
		return 0, fmt.Errorf("demo: %w", err)
	}
	// Seed before capture is installed, so the sample data leaves no
	// backlog of changes to stream.
	if n == 0 && seedCount > 0 {
		if err := seedTickets(ctx, conn, seedCount, time.Now()); err != nil {
			return 0, fmt.Errorf("demo: seed tickets: %w", err)
		}
		n = seedCount
	}
	table, err := cdc.LookupTable(ctx, conn, cfg.Table)
	if err != nil {
		return 0, err
	}
	res, err := resolve(cfg, table)
	if err != nil {
		return 0, err
	}
	summary, err := install(ctx, conn, cfg, table, res)
	if err != nil {
		return 0, err
	}
	say("%s", summary)
	return n, nil
}

// demoOptions are the settings only the demo has.
type demoOptions struct {
	writerRate float64
	tickets    int
}

// demoSettings are serve's settings with the demo's defaults and words,
// plus the demo's own.
func demoSettings(out io.Writer, env func(string) (string, bool)) (*settings, *demoOptions) {
	s := newSettings("demo", out, env)
	opts := &demoOptions{}
	s.add(number(&opts.writerRate, "writer-rate", "ROWCAST_DEMO_WRITER_RATE", "3", 0, 1000,
		"changes per second the demo writer makes with plain SQL; 0 disables it"))
	s.add(integer(&opts.tickets, "tickets", "ROWCAST_DEMO_TICKETS", "200", 0, 100000,
		"sample tickets created when the table is empty"))
	s.redefine("listen", demoListen, "HTTP listen address; 127.0.0.1:0 picks a free port")
	s.redefine("database-url", "", "PostgreSQL connection URL; without it the demo starts a throwaway PostgreSQL")
	s.redefine("jwt-secret", "", "HS256 key for client tokens; the demo makes a random one when unset")
	s.redefine("auth", "on", "always on in the demo, which adds a sign-in route for its dashboard")
	s.redefine("table", demoTable, "always "+demoTable+" in the demo")
	return s, opts
}

func randomSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// dashboardURL turns a listen address into a URL a browser can open.
func dashboardURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// psqlPath prefers the psql next to the server binaries.
func psqlPath(binDir string) string {
	p := filepath.Join(binDir, "psql")
	if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
		return p
	}
	if p, err := exec.LookPath("psql"); err == nil {
		return p
	}
	return "psql"
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:=@,", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
