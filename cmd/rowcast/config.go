package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	"rowcast/broadcast"
)

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
	SIOMaxPayload, SIOMaxPending                                    int
	SIOConnectTimeout                                               time.Duration
	CloseOnTokenExpiry                                              bool
	WindowSize, MaxConnections, QueueSize                           int
	JWTSecret, JWTCookie                                            string
	AuthOff                                                         bool
	Origins                                                         []string
	CORSCredentials, LiveUpdates                                    bool
	LogLevel                                                        slog.Level
	LogFormat                                                       string
	DebugListen                                                     string
	// Cluster mode (NATS JetStream); off while NATSURL is empty.
	NATSURL, NATSStream                            string
	NATSReplicas, NATSBatch                        int
	NATSCreds, NATSUser, NATSPassword, NATSToken   string
	NATSTLSCA, NATSTLSCert, NATSTLSKey             string
	NATSPublishTimeout, NATSMaxAge, NATSDuplicates time.Duration
}

// configSettings is the one declaration of every setting rowcast reads, in
// --help order: each binds its flag, environment variable, default, parser
// and help text to the field of c it fills. Parsing, --help, error
// messages and the README check all read this table, so a setting cannot
// be parsed one way from a flag and another from the environment.
func configSettings(c *Config) []setting {
	return []setting{
		str(&c.Listen, "listen", "ROWCAST_LISTEN", ":8080",
			"address to serve HTTP on: the streams, /api/, /metrics and the dashboard"),
		secret(&c.DatabaseURL, "database-url", "DATABASE_URL",
			"PostgreSQL connection URL (required), e.g. postgres://user:pass@localhost:5432/helpdesk"),
		str(&c.Table, "table", "ROWCAST_TABLE", "public.tickets",
			"table to capture, as schema.table (a bare name is in public); it needs a primary key"),
		enum(&c.Capture, "capture", "ROWCAST_CAPTURE", "auto", []string{"logical", "notify", "auto"},
			"capture mode: logical (replication slot), notify (trigger + LISTEN/NOTIFY) or auto (what setup installed, else logical when the server and role allow it)"),
		str(&c.Channel, "channel", "ROWCAST_CHANNEL", "rowcast",
			"NOTIFY channel of notify capture: the trigger and rowcast.broadcast() send on it"),
		str(&c.Publication, "publication", "ROWCAST_PUBLICATION", "rowcast",
			"publication for logical capture (setup creates it)"),
		str(&c.Slot, "slot", "ROWCAST_SLOT", "rowcast",
			"replication slot for logical capture (setup creates it)"),
		nonEmptyList(&c.StatsColumns, "stats-columns", "ROWCAST_STATS_COLUMNS", "status,priority",
			"columns whose values are counted in stats:updated and in /api/snapshot's stats (comma-separated; each must be a column of the table)"),
		str(&c.EventPrefix, "event-prefix", "ROWCAST_EVENT_PREFIX", "",
			"event name prefix (default: the table name in singular, tickets → ticket)"),
		str(&c.SnapshotOrder, "snapshot-order", "ROWCAST_SNAPSHOT_ORDER", "updated_at",
			"column that orders /api/snapshot, newest first; the primary key breaks ties, and alone orders a table without this column"),
		enum(&c.Events, "events", "ROWCAST_EVENTS", "colon", []string{"colon", "ticket_update"},
			"event profile: colon (ticket:created, ticket:updated, ticket:deleted) or ticket_update (one ticket_update event with a type; the prefix replaces \"ticket\")"),
		list(&c.FilterColumns, "filter-columns", "ROWCAST_FILTER_COLUMNS", "status,priority,category,assignee_email,requester_email",
			"columns clients may filter on (comma-separated); default columns the table lacks are left out, but a column you name that the table lacks is an error").
			recordGiven(&c.FilterColumnsSet),
		trimmed(&c.Visibility, "visibility", "ROWCAST_VISIBILITY", "",
			"which rows each user sees, from JWT claims (default for a table with requester_email: \""+broadcast.DefaultVisibility+"\", else all)"),
		duration(&c.StatsInterval, "stats-interval", "ROWCAST_STATS_INTERVAL", "250ms",
			"least time between stats:updated events"),
		duration(&c.PingInterval, "ping-interval", "ROWCAST_PING_INTERVAL", "25s",
			"WebSocket (/ws) ping interval"),
		duration(&c.SSEKeepalive, "sse-keepalive", "ROWCAST_SSE_KEEPALIVE", "15s",
			"interval of keepalive comments on idle /events streams"),
		duration(&c.PollInterval, "poll-interval", "ROWCAST_POLL_INTERVAL", "30s",
			"how often the dashboard polls /api/snapshot when live updates are off"),
		integer(&c.WindowSize, "replay-window", "ROWCAST_REPLAY_WINDOW", "10000", 1, math.MaxInt,
			"events kept for clients resuming with lastEventId (or SSE's Last-Event-ID)"),
		duration(&c.WindowAge, "replay-window-age", "ROWCAST_REPLAY_WINDOW_AGE", "5m",
			"longest time an event stays in the replay window"),
		integer(&c.MaxConnections, "max-connections", "ROWCAST_MAX_CONNECTIONS", "10000", 1, math.MaxInt,
			"most concurrent stream connections (/ws, /events and /socket.io/ together); more get 503"),
		integer(&c.QueueSize, "send-queue", "ROWCAST_SEND_QUEUE", "1024", 1, math.MaxInt,
			"events queued per client before it is dropped as a slow consumer"),
		secret(&c.JWTSecret, "jwt-secret", "JWT_SECRET",
			"HS256 key for client tokens (prefer the env var: flags show in ps)"),
		str(&c.JWTCookie, "jwt-cookie", "JWT_COOKIE", "token",
			"cookie that carries the client token (an Authorization: Bearer header or ?access_token= work too)"),
		oneOf(&c.AuthOff, "auth", "ROWCAST_AUTH", "on", []option[bool]{{"on", false}, {"off", true}, {"", false}},
			"on, or off to accept clients without a token (never in production)"),
		list(&c.Origins, "cors-origins", "CORS_ORIGINS", "",
			"comma-separated origins allowed besides the same host, e.g. https://desk.example.com (* allows any): they may open the streams and read /api/snapshot"),
		boolean(&c.CORSCredentials, "cors-credentials", "CORS_CREDENTIALS", "false",
			"let allowed origins send cookies with their requests to /api/snapshot and Socket.IO polling"),
		boolean(&c.LiveUpdates, "live-updates", "ENABLE_LIVE_UPDATES", "true",
			"false makes every stream (/ws, /events, /socket.io/) answer 503, so dashboards poll /api/snapshot instead"),
		level(&c.LogLevel, "log-level", "ROWCAST_LOG_LEVEL", "info",
			"debug, info, warn or error"),
		enum(&c.LogFormat, "log-format", "ROWCAST_LOG_FORMAT", "text", []string{"text", "json"},
			"text or json"),
		str(&c.DebugListen, "debug-listen", "ROWCAST_DEBUG_LISTEN", "",
			"address for Go's pprof handlers (/debug/pprof/), e.g. 127.0.0.1:6060; off when empty"),
		duration(&c.SIOPingInterval, "sio-ping-interval", "ROWCAST_SIO_PING_INTERVAL", "25s",
			"Socket.IO (/socket.io/) ping interval"),
		duration(&c.SIOPingTimeout, "sio-ping-timeout", "ROWCAST_SIO_PING_TIMEOUT", "20s",
			"Socket.IO: how long a pong may take before the client is disconnected"),
		integer(&c.SIOMaxPayload, "sio-max-payload", "ROWCAST_SIO_MAX_PAYLOAD", "1000000", 1, math.MaxInt,
			"Socket.IO: most bytes a client may send in one request or message"),
		duration(&c.SIOConnectTimeout, "sio-connect-timeout", "ROWCAST_SIO_CONNECT_TIMEOUT", "10s",
			"Socket.IO: how long a session may stay without joining the namespace (after its handshake, or after leaving)"),
		integer(&c.SIOMaxPending, "sio-max-pending", "ROWCAST_SIO_MAX_PENDING", "1000", 1, math.MaxInt,
			"Socket.IO: most sessions waiting for an authenticated CONNECT; they hold no connection slot, and more handshakes get 503"),
		boolean(&c.CloseOnTokenExpiry, "close-on-token-expiry", "ROWCAST_CLOSE_ON_TOKEN_EXPIRY", "true",
			"end a stream when its token's exp passes (close code 4001; clients reconnect with a fresh token); false keeps it open"),
		secret(&c.NATSURL, "nats-url", "ROWCAST_NATS_URL",
			"NATS servers (comma-separated nats:// or tls:// URLs): cluster mode, several rowcast nodes sharing one capture through a JetStream stream; empty runs one node alone"),
		str(&c.NATSStream, "nats-stream", "ROWCAST_NATS_STREAM", "ROWCAST",
			"cluster mode: the JetStream stream (created if missing; its subject is the name and .changes); nodes of one deployment share it"),
		integer(&c.NATSReplicas, "nats-replicas", "ROWCAST_NATS_REPLICAS", "1", 1, 5,
			"cluster mode: the stream's replicas: 1 on a single NATS server, 3 in production (one server may fail)"),
		str(&c.NATSCreds, "nats-creds", "ROWCAST_NATS_CREDS", "",
			"cluster mode: NATS credentials file (JWT and NKey seed)"),
		str(&c.NATSUser, "nats-user", "ROWCAST_NATS_USER", "",
			"cluster mode: NATS user (with ROWCAST_NATS_PASSWORD)"),
		secret(&c.NATSPassword, "nats-password", "ROWCAST_NATS_PASSWORD",
			"cluster mode: NATS password"),
		secret(&c.NATSToken, "nats-token", "ROWCAST_NATS_TOKEN",
			"cluster mode: NATS authentication token"),
		str(&c.NATSTLSCA, "nats-tls-ca", "ROWCAST_NATS_TLS_CA", "",
			"cluster mode: CA bundle (PEM) that verifies the NATS servers"),
		str(&c.NATSTLSCert, "nats-tls-cert", "ROWCAST_NATS_TLS_CERT", "",
			"cluster mode: client certificate (PEM) for servers that ask for one"),
		str(&c.NATSTLSKey, "nats-tls-key", "ROWCAST_NATS_TLS_KEY", "",
			"cluster mode: the client certificate's key (PEM)"),
		duration(&c.NATSPublishTimeout, "nats-publish-timeout", "ROWCAST_NATS_PUBLISH_TIMEOUT", "5s",
			"cluster mode: longest wait for JetStream to acknowledge a batch; the capturing node then steps down and another takes over"),
		duration(&c.NATSMaxAge, "nats-max-age", "ROWCAST_NATS_MAX_AGE", "1h",
			"cluster mode: how long the stream keeps a change (at least ROWCAST_REPLAY_WINDOW_AGE): what a starting node fills its replay window from"),
		duration(&c.NATSDuplicates, "nats-duplicates", "ROWCAST_NATS_DUPLICATES", "2m",
			"cluster mode: the stream's deduplication window: a change published again within it (by a new capturer) is stored once"),
		integer(&c.NATSBatch, "nats-batch", "ROWCAST_NATS_BATCH", "512", 1, 65536,
			"cluster mode: most changes in one stream message (each message also stays within the servers' max_payload); 1 publishes one change per message, the only form rowcast read before batches (set it while such nodes still consume the stream)"),
	}
}

// settingFor is the setting that fills a Config field. Checks made far
// from the table (resolve, the commands' requirements) name settings
// through it, so their messages cannot drift from the table.
func settingFor(field func(*Config) any) setting {
	var c Config
	p := field(&c)
	for _, st := range configSettings(&c) {
		if st.dest == p {
			return st
		}
	}
	panic(fmt.Sprintf("settingFor: no setting fills a %T", p))
}

// settingName names the setting that fills a Config field: "--flag / ENV".
func settingName(field func(*Config) any) string { return settingFor(field).name() }

// A check is a requirement a command puts on the parsed Config as a whole.
type check func(Config) error

// requireDatabase: every command but the demo, which can start its own
// PostgreSQL, needs a database.
func requireDatabase(c Config) error {
	if c.DatabaseURL == "" {
		return fmt.Errorf("%s is required, e.g. postgres://user:pass@localhost:5432/helpdesk",
			settingName(func(c *Config) any { return &c.DatabaseURL }))
	}
	return nil
}

// requireAuth: serving without a way to check tokens must be asked for.
func requireAuth(c Config) error {
	if !c.AuthOff && c.JWTSecret == "" {
		auth := settingFor(func(c *Config) any { return &c.AuthOff })
		return fmt.Errorf("%s is not set: set it to the HS256 key your tokens are signed with, or set --%s off / %s=off to accept clients without a token (development only)",
			settingName(func(c *Config) any { return &c.JWTSecret }), auth.flag, auth.env)
	}
	return nil
}

// safeCORS refuses to let every origin send credentials: with "*" in
// CORS_ORIGINS and CORS_CREDENTIALS=true, any web site a user visits could
// read /api/snapshot and the streams with the user's cookie.
func safeCORS(c Config) error {
	if !c.CORSCredentials {
		return nil
	}
	for _, o := range c.Origins {
		if o == "*" {
			return fmt.Errorf("%s has * and %s is true: any site could read the data with your users' cookies; list the dashboards' origins instead, or turn credentials off",
				settingName(func(c *Config) any { return &c.Origins }), settingName(func(c *Config) any { return &c.CORSCredentials }))
		}
	}
	return nil
}

func (c Config) logger(out io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(out, opts))
	}
	return slog.New(slog.NewTextHandler(out, opts))
}

// setting is one configuration value: a flag with a matching environment
// variable, a default, a parser and the variable the parser fills.
type setting struct {
	flag, env string
	// def is the default as an operator would type it, so that --help
	// shows it verbatim and it goes through the same parser as a flag.
	def, help string
	// secret settings never have their value shown, in help or errors.
	secret bool
	// dest is the variable set fills; settingName finds settings by it.
	dest any
	// set parses v into dest. Its error completes a sentence that starts
	// with the quoted value, e.g. "is not a duration (like 25s)".
	set func(v string) error
	// given, when not nil, records whether the value came from a flag or
	// the environment rather than the default: some checks are stricter
	// for what the operator asked for.
	given *bool
}

func (st setting) name() string { return "--" + st.flag + " / " + st.env }

// recordGiven makes the setting report in *p whether the operator gave it.
func (st setting) recordGiven(p *bool) setting {
	st.given = p
	return st
}

func str(p *string, flagName, env, def, help string) setting {
	return setting{flag: flagName, env: env, def: def, help: help, dest: p,
		set: func(v string) error { *p = v; return nil }}
}

// trimmed is a string setting whose surrounding spaces do not count.
func trimmed(p *string, flagName, env, def, help string) setting {
	return setting{flag: flagName, env: env, def: def, help: help, dest: p,
		set: func(v string) error { *p = strings.TrimSpace(v); return nil }}
}

// secret is a string setting without a default whose value is never shown.
func secret(p *string, flagName, env, help string) setting {
	st := str(p, flagName, env, "", help)
	st.secret = true
	return st
}

func boolean(p *bool, flagName, env, def, help string) setting {
	return setting{flag: flagName, env: env, def: def, help: help, dest: p,
		set: func(v string) error {
			b, err := strconv.ParseBool(strings.TrimSpace(v))
			if err != nil {
				return errors.New("is not true or false")
			}
			*p = b
			return nil
		}}
}

// integer is a whole number from lo to hi.
func integer(p *int, flagName, env, def string, lo, hi int, help string) setting {
	return setting{flag: flagName, env: env, def: def, help: help, dest: p,
		set: func(v string) error {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n < lo || n > hi {
				if hi == math.MaxInt {
					return fmt.Errorf("is not a whole number of at least %d (like %s)", lo, def)
				}
				return fmt.Errorf("is not a whole number from %d to %d (like %s)", lo, hi, def)
			}
			*p = n
			return nil
		}}
}

// number is a decimal number from lo to hi.
func number(p *float64, flagName, env, def string, lo, hi float64, help string) setting {
	return setting{flag: flagName, env: env, def: def, help: help, dest: p,
		set: func(v string) error {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || math.IsNaN(f) || f < lo || f > hi {
				return fmt.Errorf("is not a number from %g to %g (like %s)", lo, hi, def)
			}
			*p = f
			return nil
		}}
}

// duration is a positive time.Duration: zero or less would make tickers
// panic or spin.
func duration(p *time.Duration, flagName, env, def, help string) setting {
	return setting{flag: flagName, env: env, def: def, help: help, dest: p,
		set: func(v string) error {
			d, err := time.ParseDuration(strings.TrimSpace(v))
			if err != nil {
				return fmt.Errorf("is not a duration (like %s)", def)
			}
			if d <= 0 {
				return fmt.Errorf("is not a positive duration (like %s)", def)
			}
			*p = d
			return nil
		}}
}

// list is a comma-separated list; blanks around and between items do not
// count, so "" is the empty list.
func list(p *[]string, flagName, env, def, help string) setting {
	return setting{flag: flagName, env: env, def: def, help: help, dest: p,
		set: func(v string) error { *p = splitList(v); return nil }}
}

// nonEmptyList is a list that must name at least one item.
func nonEmptyList(p *[]string, flagName, env, def, help string) setting {
	return setting{flag: flagName, env: env, def: def, help: help, dest: p,
		set: func(v string) error {
			l := splitList(v)
			if len(l) == 0 {
				return fmt.Errorf("names nothing: name at least one, comma-separated (like %s)", def)
			}
			*p = l
			return nil
		}}
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

// option is one word a oneOf setting accepts and the value it stands for.
type option[T any] struct {
	word  string
	value T
}

// oneOf accepts one of a few words, in any case. An option with an empty
// word accepts the empty value without being offered in messages.
func oneOf[T any](p *T, flagName, env, def string, opts []option[T], help string) setting {
	var words []string
	for _, o := range opts {
		if o.word != "" {
			words = append(words, o.word)
		}
	}
	return setting{flag: flagName, env: env, def: def, help: help, dest: p,
		set: func(v string) error {
			for _, o := range opts {
				if strings.EqualFold(strings.TrimSpace(v), o.word) {
					*p = o.value
					return nil
				}
			}
			return fmt.Errorf("is not %s", orList(words))
		}}
}

// enum is a oneOf whose value is the word itself, in lower case.
func enum(p *string, flagName, env, def string, words []string, help string) setting {
	opts := make([]option[string], len(words))
	for i, w := range words {
		opts[i] = option[string]{w, w}
	}
	return oneOf(p, flagName, env, def, opts, help)
}

func level(p *slog.Level, flagName, env, def, help string) setting {
	return setting{flag: flagName, env: env, def: def, help: help, dest: p,
		set: func(v string) error {
			if err := p.UnmarshalText([]byte(strings.TrimSpace(v))); err != nil {
				return errors.New("is not debug, info, warn or error")
			}
			return nil
		}}
}

// orList joins words as "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// settings reads one command's settings from its flags and the
// environment.
type settings struct {
	cmd     string
	entries []*entry
	fs      *flag.FlagSet
	env     func(string) (string, bool)
	cfg     Config
}

// entry is a setting with what its flag received. As a flag.Value it only
// stores the text: values are parsed once the environment is read too, so
// that a flag and its variable are parsed alike, every error is reported
// at once, and the flag package never prints a secret in an error.
type entry struct {
	setting
	flagValue string
	flagSet   bool
}

func (e *entry) String() string     { return "" }
func (e *entry) Set(v string) error { e.flagValue, e.flagSet = v, true; return nil }

// newSettings makes the settings of command cmd, help going to out and
// variables read with env (os.LookupEnv outside tests).
func newSettings(cmd string, out io.Writer, env func(string) (string, bool)) *settings {
	s := &settings{cmd: cmd, fs: flag.NewFlagSet(cmd, flag.ContinueOnError), env: env}
	s.fs.SetOutput(out)
	s.fs.Usage = func() { s.usage(s.fs.Output()) }
	for _, st := range configSettings(&s.cfg) {
		s.add(st)
	}
	return s
}

// add adds a setting that fills a variable of the command's own.
func (s *settings) add(st setting) {
	e := &entry{setting: st}
	s.entries = append(s.entries, e)
	s.fs.Var(e, st.flag, st.help)
}

// redefine gives a setting another default and help for this command.
func (s *settings) redefine(flagName, def, help string) {
	for _, e := range s.entries {
		if e.flag == flagName {
			e.def, e.help = def, help
			return
		}
	}
	panic("redefine: no setting --" + flagName)
}

// parseFlags reads the command line; config then reads the settings.
func (s *settings) parseFlags(args []string) error {
	if err := s.fs.Parse(args); err != nil {
		return err
	}
	if s.fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected arguments %q: settings are flags (--name value) or environment variables; see rowcast %s --help", s.cmd, s.fs.Args(), s.cmd)
	}
	return nil
}

// config fills the Config and the command's own variables: each setting
// from its flag when given, else from its environment variable when set,
// else from its default. Then checks run on the result. Every error is
// returned at once, so an operator fixes them in one go.
func (s *settings) config(checks ...check) (Config, error) {
	var errs []error
	for _, e := range s.entries {
		v, given := e.def, true
		switch env, ok := s.env(e.env); {
		case e.flagSet:
			v = e.flagValue
		case ok:
			v = env
		default:
			given = false
		}
		if e.given != nil {
			*e.given = given
		}
		if err := e.set(v); err != nil {
			shown := strconv.Quote(v)
			if e.secret {
				shown = "the value"
			}
			errs = append(errs, fmt.Errorf("%s: %s %w", e.name(), shown, err))
		}
	}
	for _, c := range checks {
		if err := c(s.cfg); err != nil {
			errs = append(errs, err)
		}
	}
	return s.cfg, errors.Join(errs...)
}

// parse is parseFlags then config.
func (s *settings) parse(args []string, checks ...check) (Config, error) {
	if err := s.parseFlags(args); err != nil {
		return Config{}, err
	}
	return s.config(checks...)
}

// usage writes --help: every setting from the table, then the command's
// other flags. Only defaults are shown, never current values, so a secret
// set in the environment cannot leak into a terminal or a log.
func (s *settings) usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: rowcast %s [flags]\n\n", s.cmd)
	fmt.Fprintln(w, "Settings, each a flag or an environment variable (a flag wins over its variable):")
	flagWidth, envWidth := 0, 0
	for _, e := range s.entries {
		flagWidth = max(flagWidth, len(e.flag)+2)
		envWidth = max(envWidth, len(e.env))
	}
	named := map[string]bool{}
	for _, e := range s.entries {
		named[e.flag] = true
		line := fmt.Sprintf("  %-*s  %-*s", flagWidth, "--"+e.flag, envWidth, e.env)
		if e.def != "" && !e.secret {
			line += "  default " + e.def
		}
		fmt.Fprintln(w, strings.TrimRight(line, " "))
		wrap(w, "      ", e.help, 80)
	}
	first := true
	s.fs.VisitAll(func(f *flag.Flag) {
		if named[f.Name] {
			return
		}
		if first {
			fmt.Fprintf(w, "\nOther flags of rowcast %s:\n", s.cmd)
			first = false
		}
		fmt.Fprintf(w, "  --%s\n", f.Name)
		wrap(w, "      ", f.Usage, 80)
	})
}

// wrap writes text in lines of at most width columns, each after indent.
func wrap(w io.Writer, indent, text string, width int) {
	line := indent
	for _, word := range strings.Fields(text) {
		if len(line) > len(indent) && len(line)+1+len(word) > width {
			fmt.Fprintln(w, line)
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += word
	}
	fmt.Fprintln(w, line)
}
