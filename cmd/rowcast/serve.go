package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"rowcast"
	"rowcast/broadcast"
	"rowcast/broadcast/server"
	"rowcast/broadcast/socketio"
	"rowcast/broadcast/sse"
	"rowcast/broadcast/web"
	"rowcast/broadcast/ws"
	"rowcast/cdc"
	"rowcast/metrics"
)

func runServe(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := newSettings("serve", stderr, os.LookupEnv).parse(args, requireDatabase, requireAuth, safeCORS)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, cfg.logger(stderr), serveOptions{})
}

// serveOptions are what the demo adds to a normal serve.
type serveOptions struct {
	demoLogin bool
	// ready is called with the listen address once serving.
	ready func(addr string)
}

func serve(ctx context.Context, cfg Config, log *slog.Logger, opts serveOptions) error {
	pc, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	pc.ConnConfig.RuntimeParams["application_name"] = "rowcast"
	// Values come out as capture reads them (UTC, ISO dates), so that
	// counts and snapshot filters compare what clients see.
	for k, v := range cdc.SessionParams() {
		for have := range pc.ConnConfig.RuntimeParams {
			if strings.EqualFold(have, k) {
				delete(pc.ConnConfig.RuntimeParams, have)
			}
		}
		pc.ConnConfig.RuntimeParams[k] = v
	}
	pc.MaxConns = 4
	if pc.ConnConfig.ConnectTimeout == 0 {
		// A network that drops packets must not hold a snapshot, a
		// count or the metrics poll for minutes.
		pc.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w (check DATABASE_URL and that the server is up)", err)
	}
	table, err := cdc.LookupTable(ctx, pool, cfg.Table)
	if err != nil {
		return err
	}
	res, err := resolve(cfg, table)
	if err != nil {
		return err
	}
	mode, why, err := pickCapture(ctx, pool, cfg, table)
	if err != nil {
		return err
	}
	if mode == "notify" {
		if err := cdc.CheckNotifyInstalled(ctx, pool, table, cfg.Channel, res.tracked); err != nil {
			return err
		}
	} else {
		// Refused before HTTP starts: an installation by an older setup
		// (no outbox, broadcast() open to PUBLIC), or one made for another
		// table. Other tables in the publication are dropped by the slot,
		// which logs them.
		if _, err := cdc.CheckLogicalInstalled(ctx, pool, table.String(), cfg.Publication); err != nil {
			return err
		}
	}

	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	names := broadcast.NamesFor(res.prefix, cfg.Events)
	m.Init(names.Own(), broadcast.DropReasons)
	counts := cdc.CountsLoader(pool, table, cfg.StatsColumns)
	var node *clusterNode
	if cfg.NATSURL != "" {
		if node, err = newClusterNode(cfg, mode, reg, log); err != nil {
			return err
		}
		defer node.conn.Close()
	}
	hub := broadcast.NewHub(broadcast.HubConfig{
		Names:         names,
		StatsColumns:  cfg.StatsColumns,
		StatsInterval: cfg.StatsInterval,
		Counts:        counts,
		WindowSize:    cfg.WindowSize,
		WindowAge:     cfg.WindowAge,
		QueueSize:     cfg.QueueSize,
		Observer:      m,
		Logger:        log,
		// A restarted rowcast answers resumes and snapshots once capture
		// has started (normally within a second), rather than with a
		// resync or a snapshot without a cursor.
		AwaitCapture: 10 * time.Second,
		CatchUp:      node.catchUp(),
	})
	var source rowcast.Source
	if mode == "logical" {
		source = cdc.NewSlot(cdc.SlotConfig{
			ConnString:  pc.ConnString(),
			Slot:        cfg.Slot,
			Publication: cfg.Publication,
			Table:       table.String(),
			Logger:      log,
		})
	} else {
		source = cdc.NewListener(cdc.ListenerConfig{
			ConnString: pc.ConnString(),
			Channel:    cfg.Channel,
			Table:      table,
			Logger:     log,
		})
	}
	metrics.RegisterCapture(reg, source.Status)
	ready := func() bool { return source.Status().Connected }
	run := func(ctx context.Context) error { return source.Run(ctx, hub) }
	if node != nil {
		ready, run = node.wire(source, hub, pc.ConnString(), mode, cfg)
	}
	// Slot lag, retained WAL and NOTIFY queue usage are polled from the
	// database here, so that the capture loop knows nothing of metrics.
	poller := metrics.NewDBPoller(reg, pool, cfg.Slot, func() string { return source.Status().Mode }, 0)
	poller.Logger = log

	var auth *broadcast.Auth
	authMode := "jwt"
	if cfg.AuthOff {
		authMode = "off"
		log.Warn("authentication is off (ROWCAST_AUTH=off): anyone who can reach rowcast receives every event")
	} else {
		auth = broadcast.NewAuth(cfg.JWTSecret, cfg.JWTCookie)
	}
	gate := broadcast.NewGate(broadcast.GateConfig{
		Hub:                  hub,
		Auth:                 auth,
		Visibility:           res.visibility,
		FilterColumns:        res.filterColumns,
		Origins:              cfg.Origins,
		CORSCredentials:      cfg.CORSCredentials,
		LiveUpdates:          cfg.LiveUpdates,
		MaxConnections:       cfg.MaxConnections,
		QueueSize:            cfg.QueueSize,
		KeepAfterTokenExpiry: !cfg.CloseOnTokenExpiry,
		Observer:             m,
		Logger:               log,
	})
	srv := server.New(server.Config{
		Gate: gate,
		WS:   ws.New(ws.Config{Gate: gate, PingInterval: cfg.PingInterval}),
		SSE:  sse.New(sse.Config{Gate: gate, Keepalive: cfg.SSEKeepalive}),
		SocketIO: socketio.New(socketio.Config{Gate: gate, Observer: m.SocketIO(),
			PingInterval: cfg.SIOPingInterval, PingTimeout: cfg.SIOPingTimeout, MaxPayload: cfg.SIOMaxPayload,
			ConnectTimeout: cfg.SIOConnectTimeout, MaxPending: cfg.SIOMaxPending}),
		PollInterval: cfg.PollInterval,
		Ready:        ready,
		Recent:       cdc.RecentRows(pool, table, cfg.SnapshotOrder),
		RecentOrder:  cdc.RecentOrder(table, cfg.SnapshotOrder),
		Pages:        cdc.PageRows(pool, table),
		Counts:       counts,
		Metrics:      metrics.Handler(reg),
		Web:          web.Handler(),
		DemoLogin:    opts.demoLogin,
		Logger:       log,
	})

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (set ROWCAST_LISTEN to a free address)", cfg.Listen, err)
	}
	// Streams live long, so there is no overall read or write timeout:
	// each transport sets its own write deadlines, and the only request
	// bodies (Socket.IO polling) are bounded in size and time where they
	// are read. Headers and idle keep-alive connections are bounded here.
	httpSrv := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	if cfg.DebugListen != "" {
		stopDebug, err := serveDebug(cfg.DebugListen, log)
		if err != nil {
			ln.Close()
			return err
		}
		defer stopDebug()
	}
	log.Info("rowcast starting", "version", version, "capture", mode, "why", why, "cluster", node != nil,
		"table", table.String(), "events", cfg.Events, "visibility", res.visibility.String(), "listen", ln.Addr().String(), "auth", authMode, "live_updates", cfg.LiveUpdates)

	captureCtx, stopCapture := context.WithCancel(context.Background())
	defer stopCapture()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	wg.Add(4)
	go func() { defer wg.Done(); errc <- hub.Run(captureCtx) }()
	go func() { defer wg.Done(); poller.Run(captureCtx) }()
	go func() {
		defer wg.Done()
		if err := run(captureCtx); err != nil {
			errc <- fmt.Errorf("capture: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http: %w", err)
		}
	}()
	if opts.ready != nil {
		opts.ready(ln.Addr().String())
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-errc:
		log.Error("stopping", "err", runErr)
	}
	// Clients first (1001), then the HTTP server, then capture.
	hub.Shutdown()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = httpSrv.Shutdown(sctx)
	cancel()
	gate.Wait()
	stopCapture()
	wg.Wait()
	log.Info("stopped")
	return runErr
}

// pickCapture chooses the capture mode on a pooled connection.
func pickCapture(ctx context.Context, pool *pgxpool.Pool, cfg Config, table cdc.Table) (mode, why string, err error) {
	c, err := pool.Acquire(ctx)
	if err != nil {
		return "", "", fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer c.Release()
	mode, why, err = chooseCapture(ctx, c.Conn(), cfg, installedCapture(ctx, c.Conn(), cfg, table))
	if err != nil {
		return "", "", err
	}
	if mode == "logical" {
		logical, _, err := installedCapture(ctx, c.Conn(), cfg, table)()
		if err != nil {
			return "", "", err
		}
		if !logical {
			return "", "", fmt.Errorf("publication %q does not include %s; run \"rowcast setup\" (or apply \"rowcast setup --print\") first", cfg.Publication, table)
		}
	}
	return mode, why, nil
}

// serveDebug serves Go's profiling handlers on their own address, never on
// the public one: profiles reveal internals and cost CPU.
func serveDebug(addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ROWCAST_DEBUG_LISTEN: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("profiling handlers", "addr", ln.Addr().String())
	return func() { _ = srv.Close() }, nil
}
