package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"
)

// setting is one configuration value: an env var with a matching flag.
type setting struct {
	flag, env, def, help string
	secret               bool
	value                *string
}

// settings is every configuration value rowcast reads, in --help order.
type settings struct {
	list []*setting
	fs   *flag.FlagSet
}

func (s *settings) add(flagName, env, def, help string) *string {
	v := new(string)
	s.list = append(s.list, &setting{flag: flagName, env: env, def: def, help: help, value: v})
	return v
}

func (s *settings) addSecret(flagName, env, help string) *string {
	v := s.add(flagName, env, "", help)
	s.list[len(s.list)-1].secret = true
	return v
}

// Config is the validated configuration.
type Config struct {
	Listen, DatabaseURL, Table, Capture, Channel, Publication, Slot string
	StatsColumns, FilterColumns                                     []string
	EventPrefix, SnapshotOrder                                      string
	Events, Visibility                                              string
	FilterColumnsSet                                                bool
	StatsInterval, PingInterval, PollInterval, WindowAge            time.Duration
	SSEKeepalive                                                    time.Duration
	SIOPingInterval, SIOPingTimeout                                 time.Duration
	SIOMaxPayload                                                   int
	WindowSize, MaxConnections, QueueSize                           int
	JWTSecret, JWTCookie                                            string
	AuthOff                                                         bool
	Origins                                                         []string
	CORSCredentials, LiveUpdates                                    bool
	LogLevel                                                        slog.Level
	LogFormat                                                       string
	DebugListen                                                     string
}

type rawConfig struct {
	listen, dbURL, table, capture, channel, publication, slot      *string
	statsColumns, eventPrefix, snapshotOrder                       *string
	statsInterval, pingInterval, pollInterval, windowAge           *string
	sseKeepalive                                                   *string
	sioPingInterval, sioPingTimeout, sioMaxPayload                 *string
	windowSize, maxConns, queueSize                                *string
	jwtSecret, jwtCookie, auth, origins, corsCreds, live, logLevel *string
	logFormat, events, visibility, filterColumns                   *string
	debugListen                                                    *string
}

func newSettings(name string, out io.Writer) (*settings, *rawConfig) {
	s := &settings{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	s.fs.SetOutput(out)
	r := &rawConfig{
		listen:        s.add("listen", "ROWCAST_LISTEN", ":8080", "HTTP listen address"),
		dbURL:         s.addSecret("database-url", "DATABASE_URL", "PostgreSQL connection URL (required)"),
		table:         s.add("table", "ROWCAST_TABLE", "public.tickets", "table to capture (schema.table; it needs a primary key)"),
		capture:       s.add("capture", "ROWCAST_CAPTURE", "auto", "capture mode: logical (replication slot), notify (trigger + LISTEN/NOTIFY) or auto (logical when the server and role allow it)"),
		channel:       s.add("channel", "ROWCAST_CHANNEL", "rowcast", "NOTIFY channel the trigger sends on"),
		publication:   s.add("publication", "ROWCAST_PUBLICATION", "rowcast", "publication for logical capture"),
		slot:          s.add("slot", "ROWCAST_SLOT", "rowcast", "replication slot for logical capture"),
		statsColumns:  s.add("stats-columns", "ROWCAST_STATS_COLUMNS", "status,priority", "columns counted in stats:updated (comma-separated)"),
		eventPrefix:   s.add("event-prefix", "ROWCAST_EVENT_PREFIX", "", "event name prefix (default: the table name in singular, tickets → ticket)"),
		snapshotOrder: s.add("snapshot-order", "ROWCAST_SNAPSHOT_ORDER", "updated_at", "column that orders /api/snapshot, newest first (falls back to the primary key)"),
		events:        s.add("events", "ROWCAST_EVENTS", "colon", "event profile: colon (ticket:created, ...) or ticket_update (one ticket_update event with a type)"),
		filterColumns: s.add("filter-columns", "ROWCAST_FILTER_COLUMNS", "status,priority,category,assignee_email,requester_email", "columns clients may filter on (those the table lacks are left out)"),
		visibility:    s.add("visibility", "ROWCAST_VISIBILITY", "", "which rows each user sees, from JWT claims (default for a table with requester_email: \"claim:role in agent,admin => all; requester_email = claim:email\", else all)"),
		statsInterval: s.add("stats-interval", "ROWCAST_STATS_INTERVAL", "250ms", "least time between stats:updated events"),
		pingInterval:  s.add("ping-interval", "ROWCAST_PING_INTERVAL", "25s", "WebSocket ping interval"),
		sseKeepalive:  s.add("sse-keepalive", "ROWCAST_SSE_KEEPALIVE", "15s", "interval of keepalive comments on idle /events streams"),
		pollInterval:  s.add("poll-interval", "ROWCAST_POLL_INTERVAL", "30s", "dashboard poll interval when live updates are off"),
		windowSize:    s.add("replay-window", "ROWCAST_REPLAY_WINDOW", "10000", "events kept for clients resuming with lastEventId"),
		windowAge:     s.add("replay-window-age", "ROWCAST_REPLAY_WINDOW_AGE", "5m", "longest time an event stays in the replay window"),
		maxConns:      s.add("max-connections", "ROWCAST_MAX_CONNECTIONS", "10000", "most concurrent client connections; more get 503"),
		queueSize:     s.add("send-queue", "ROWCAST_SEND_QUEUE", "1024", "events queued per client before it is dropped as a slow consumer"),
		jwtSecret:     s.addSecret("jwt-secret", "JWT_SECRET", "HS256 key for client tokens (prefer the env var: flags show in ps)"),
		jwtCookie:     s.add("jwt-cookie", "JWT_COOKIE", "token", "cookie that carries the client token"),
		auth:          s.add("auth", "ROWCAST_AUTH", "on", "on, or off to accept clients without a token (never in production)"),
		origins:       s.add("cors-origins", "CORS_ORIGINS", "", "comma-separated origins allowed besides the same host, e.g. https://desk.example.com"),
		corsCreds:     s.add("cors-credentials", "CORS_CREDENTIALS", "false", "let allowed origins send cookies to the HTTP API"),
		live:          s.add("live-updates", "ENABLE_LIVE_UPDATES", "true", "false makes /ws answer 503 so dashboards poll"),
		logLevel:      s.add("log-level", "ROWCAST_LOG_LEVEL", "info", "debug, info, warn or error"),
		logFormat:     s.add("log-format", "ROWCAST_LOG_FORMAT", "text", "text or json"),
		debugListen:   s.add("debug-listen", "ROWCAST_DEBUG_LISTEN", "", "address for Go's pprof handlers (/debug/pprof/), e.g. 127.0.0.1:6060; off when empty"),
	}
	r.sioPingInterval = s.add("sio-ping-interval", "ROWCAST_SIO_PING_INTERVAL", "25s", "Socket.IO (/socket.io/) ping interval")
	r.sioPingTimeout = s.add("sio-ping-timeout", "ROWCAST_SIO_PING_TIMEOUT", "20s", "Socket.IO: how long a pong may take before the client is disconnected")
	r.sioMaxPayload = s.add("sio-max-payload", "ROWCAST_SIO_MAX_PAYLOAD", "1000000", "Socket.IO: most bytes a client may send in one request or message")
	for _, st := range s.list {
		def := st.def
		if v, ok := os.LookupEnv(st.env); ok {
			def = v
		}
		*st.value = def
		shown := st.def
		if st.secret {
			shown = ""
		}
		help := fmt.Sprintf("%s (env %s", st.help, st.env)
		if shown != "" {
			help += ", default " + shown
		}
		help += ")"
		s.fs.Func(st.flag, help, func(v string) error { *st.value = v; return nil })
	}
	return s, r
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func parseBool(name, v string) (bool, error) {
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		return false, fmt.Errorf("%s=%q: want true or false", name, v)
	}
	return b, nil
}

func parseDuration(name, v string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s=%q: want a positive duration such as 250ms, 25s or 5m", name, v)
	}
	return d, nil
}

func parsePositive(name, v string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s=%q: want a positive whole number", name, v)
	}
	return n, nil
}

// validate turns raw strings into a Config, collecting every error so the
// operator can fix them all at once. needServe adds the checks only
// "serve" needs (a JWT secret or explicit ROWCAST_AUTH=off).
func (r *rawConfig) validate(needServe bool) (Config, error) {
	var errs []error
	c := Config{
		Listen: *r.listen, DatabaseURL: *r.dbURL, Table: *r.table, Capture: strings.ToLower(*r.capture),
		Channel: *r.channel, Publication: *r.publication, Slot: *r.slot,
		StatsColumns: splitList(*r.statsColumns), EventPrefix: *r.eventPrefix, SnapshotOrder: *r.snapshotOrder,
		JWTSecret: *r.jwtSecret, JWTCookie: *r.jwtCookie, Origins: splitList(*r.origins),
		LogFormat: strings.ToLower(*r.logFormat), DebugListen: *r.debugListen,
		Events: strings.ToLower(*r.events), Visibility: strings.TrimSpace(*r.visibility),
		FilterColumns: splitList(*r.filterColumns),
	}
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	var err error
	_, c.FilterColumnsSet = os.LookupEnv("ROWCAST_FILTER_COLUMNS")
	if c.Events != "colon" && c.Events != "ticket_update" {
		check(fmt.Errorf("ROWCAST_EVENTS=%q: want colon or ticket_update", *r.events))
	}
	if c.DatabaseURL == "" {
		check(errors.New("DATABASE_URL is required, e.g. postgres://user:pass@localhost:5432/helpdesk"))
	}
	switch c.Capture {
	case "notify", "logical", "auto":
	default:
		check(fmt.Errorf("ROWCAST_CAPTURE=%q: want logical, notify or auto", *r.capture))
	}
	c.StatsInterval, err = parseDuration("ROWCAST_STATS_INTERVAL", *r.statsInterval)
	check(err)
	c.PingInterval, err = parseDuration("ROWCAST_PING_INTERVAL", *r.pingInterval)
	check(err)
	c.PollInterval, err = parseDuration("ROWCAST_POLL_INTERVAL", *r.pollInterval)
	check(err)
	c.SSEKeepalive, err = parseDuration("ROWCAST_SSE_KEEPALIVE", *r.sseKeepalive)
	check(err)
	c.SIOPingInterval, err = parseDuration("ROWCAST_SIO_PING_INTERVAL", *r.sioPingInterval)
	check(err)
	c.SIOPingTimeout, err = parseDuration("ROWCAST_SIO_PING_TIMEOUT", *r.sioPingTimeout)
	check(err)
	c.SIOMaxPayload, err = parsePositive("ROWCAST_SIO_MAX_PAYLOAD", *r.sioMaxPayload)
	check(err)
	c.WindowAge, err = parseDuration("ROWCAST_REPLAY_WINDOW_AGE", *r.windowAge)
	check(err)
	c.WindowSize, err = parsePositive("ROWCAST_REPLAY_WINDOW", *r.windowSize)
	check(err)
	c.MaxConnections, err = parsePositive("ROWCAST_MAX_CONNECTIONS", *r.maxConns)
	check(err)
	c.QueueSize, err = parsePositive("ROWCAST_SEND_QUEUE", *r.queueSize)
	check(err)
	c.CORSCredentials, err = parseBool("CORS_CREDENTIALS", *r.corsCreds)
	check(err)
	c.LiveUpdates, err = parseBool("ENABLE_LIVE_UPDATES", *r.live)
	check(err)
	switch strings.ToLower(*r.auth) {
	case "on", "":
	case "off":
		c.AuthOff = true
	default:
		check(fmt.Errorf("ROWCAST_AUTH=%q: want on or off", *r.auth))
	}
	if needServe && !c.AuthOff && c.JWTSecret == "" {
		check(errors.New("JWT_SECRET is not set: set it to the HS256 key your tokens are signed with, or set ROWCAST_AUTH=off to accept clients without a token (development only)"))
	}
	if err := c.LogLevel.UnmarshalText([]byte(*r.logLevel)); err != nil {
		check(fmt.Errorf("ROWCAST_LOG_LEVEL=%q: want debug, info, warn or error", *r.logLevel))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		check(fmt.Errorf("ROWCAST_LOG_FORMAT=%q: want text or json", *r.logFormat))
	}
	if len(c.StatsColumns) == 0 {
		check(errors.New("ROWCAST_STATS_COLUMNS is empty: name at least one column, e.g. status,priority"))
	}
	return c, errors.Join(errs...)
}

func (c Config) logger(out io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(out, opts))
	}
	return slog.New(slog.NewTextHandler(out, opts))
}
