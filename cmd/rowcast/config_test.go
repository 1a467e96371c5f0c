package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"rowcast/cdc"
)

// envOf is an environment holding only m.
func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func parseServe(t *testing.T, env map[string]string, args ...string) (Config, error) {
	t.Helper()
	return newSettings("serve", io.Discard, envOf(env)).parse(args, requireDatabase, requireAuth)
}

func mustParse(t *testing.T, env map[string]string, args ...string) Config {
	t.Helper()
	cfg, err := parseServe(t, env, args...)
	if err != nil {
		t.Fatalf("parse %v %q: %v", env, args, err)
	}
	return cfg
}

// required are the settings serve cannot start without.
func required() map[string]string {
	return map[string]string{"DATABASE_URL": "postgres://localhost/db", "JWT_SECRET": "k"}
}

func with(m map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

func TestDefaults(t *testing.T) {
	cfg := mustParse(t, required())
	want := Config{
		Listen: ":8080", DatabaseURL: "postgres://localhost/db", Table: "public.tickets", Capture: "auto",
		Channel: "rowcast", Publication: "rowcast", Slot: "rowcast",
		StatsColumns:  []string{"status", "priority"},
		FilterColumns: []string{"status", "priority", "category", "assignee_email", "requester_email"},
		EventPrefix:   "", SnapshotOrder: "updated_at", Events: "colon", Visibility: "",
		FilterColumnsSet: false,
		StatsInterval:    250 * time.Millisecond, PingInterval: 25 * time.Second,
		PollInterval: 30 * time.Second, WindowAge: 5 * time.Minute, SSEKeepalive: 15 * time.Second,
		SIOPingInterval: 25 * time.Second, SIOPingTimeout: 20 * time.Second, SIOMaxPayload: 1000000,
		SIOConnectTimeout: 10 * time.Second, SIOMaxPending: 1000, CloseOnTokenExpiry: true,
		WindowSize: 10000, MaxConnections: 10000, QueueSize: 1024,
		JWTSecret: "k", JWTCookie: "token", AuthOff: false, Origins: nil,
		CORSCredentials: false, LiveUpdates: true,
		LogLevel: slog.LevelInfo, LogFormat: "text", DebugListen: "",
		NATSStream: "ROWCAST", NATSReplicas: 1, NATSPublishTimeout: 5 * time.Second,
		NATSMaxAge: time.Hour, NATSDuplicates: 2 * time.Minute, NATSBatch: 512,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", cfg, want)
	}
}

func TestEnvOnly(t *testing.T) {
	cfg := mustParse(t, with(required(),
		"ROWCAST_LISTEN", "127.0.0.1:9000",
		"ROWCAST_PING_INTERVAL", "5s",
		"CORS_ORIGINS", " https://a.example, https://b.example ,",
		"ENABLE_LIVE_UPDATES", "false",
		"ROWCAST_CAPTURE", "NOTIFY",
		"ROWCAST_AUTH", "off",
	))
	if cfg.Listen != "127.0.0.1:9000" || cfg.PingInterval != 5*time.Second || cfg.LiveUpdates || !cfg.AuthOff {
		t.Errorf("env not applied: %+v", cfg)
	}
	if cfg.Capture != "notify" {
		t.Errorf("Capture = %q, want notify: choices are matched in any case", cfg.Capture)
	}
	if want := []string{"https://a.example", "https://b.example"}; !reflect.DeepEqual(cfg.Origins, want) {
		t.Errorf("Origins = %q, want %q", cfg.Origins, want)
	}
}

func TestFlagOnly(t *testing.T) {
	cfg := mustParse(t, required(), "--listen", "127.0.0.1:9001", "--send-queue=7", "--cors-credentials", "true", "--log-level", "debug")
	if cfg.Listen != "127.0.0.1:9001" || cfg.QueueSize != 7 || !cfg.CORSCredentials || cfg.LogLevel != slog.LevelDebug {
		t.Errorf("flags not applied: %+v", cfg)
	}
}

func TestFlagOverridesEnv(t *testing.T) {
	env := with(required(),
		"ROWCAST_LISTEN", "127.0.0.1:1",
		"ROWCAST_SLOT", "from_env",
		// A bad value the flag replaces is not an error: it is not used.
		"ROWCAST_PING_INTERVAL", "soon",
	)
	cfg := mustParse(t, env, "--listen", "127.0.0.1:2", "--ping-interval", "3s")
	if cfg.Listen != "127.0.0.1:2" {
		t.Errorf("Listen = %q, want the flag's", cfg.Listen)
	}
	if cfg.PingInterval != 3*time.Second {
		t.Errorf("PingInterval = %v, want the flag's", cfg.PingInterval)
	}
	if cfg.Slot != "from_env" {
		t.Errorf("Slot = %q, want the environment's when no flag is given", cfg.Slot)
	}
	// An empty variable is a value, not an absence.
	cfg = mustParse(t, with(env, "ROWCAST_EVENT_PREFIX", ""), "--ping-interval", "3s")
	if cfg.EventPrefix != "" {
		t.Errorf("EventPrefix = %q", cfg.EventPrefix)
	}
}

// Every parser's error names the flag and the variable, quotes the value
// and says what is wanted, whether the value came from a flag or the
// environment.
func TestParserErrorsNameFlagAndEnv(t *testing.T) {
	cases := []struct {
		flag, env, value, want string
	}{
		{"ping-interval", "ROWCAST_PING_INTERVAL", "abc", `--ping-interval / ROWCAST_PING_INTERVAL: "abc" is not a duration (like 25s)`},
		{"stats-interval", "ROWCAST_STATS_INTERVAL", "-1s", `--stats-interval / ROWCAST_STATS_INTERVAL: "-1s" is not a positive duration (like 250ms)`},
		{"replay-window", "ROWCAST_REPLAY_WINDOW", "many", `--replay-window / ROWCAST_REPLAY_WINDOW: "many" is not a whole number of at least 1 (like 10000)`},
		{"max-connections", "ROWCAST_MAX_CONNECTIONS", "0", `--max-connections / ROWCAST_MAX_CONNECTIONS: "0" is not a whole number of at least 1 (like 10000)`},
		{"cors-credentials", "CORS_CREDENTIALS", "yes please", `--cors-credentials / CORS_CREDENTIALS: "yes please" is not true or false`},
		{"capture", "ROWCAST_CAPTURE", "wal", `--capture / ROWCAST_CAPTURE: "wal" is not logical, notify or auto`},
		{"events", "ROWCAST_EVENTS", "dots", `--events / ROWCAST_EVENTS: "dots" is not colon or ticket_update`},
		{"auth", "ROWCAST_AUTH", "maybe", `--auth / ROWCAST_AUTH: "maybe" is not on or off`},
		{"log-level", "ROWCAST_LOG_LEVEL", "loud", `--log-level / ROWCAST_LOG_LEVEL: "loud" is not debug, info, warn or error`},
		{"log-format", "ROWCAST_LOG_FORMAT", "xml", `--log-format / ROWCAST_LOG_FORMAT: "xml" is not text or json`},
		{"stats-columns", "ROWCAST_STATS_COLUMNS", " , ", `--stats-columns / ROWCAST_STATS_COLUMNS: " , " names nothing: name at least one, comma-separated (like status,priority)`},
	}
	for _, c := range cases {
		_, fromEnv := parseServe(t, with(required(), c.env, c.value))
		_, fromFlag := parseServe(t, required(), "--"+c.flag, c.value)
		for how, err := range map[string]error{"env": fromEnv, "flag": fromFlag} {
			if err == nil || err.Error() != c.want {
				t.Errorf("%s from %s: got %v\nwant %s", c.flag, how, err, c.want)
			}
		}
	}
}

func TestDemoSettings(t *testing.T) {
	s, opts := demoSettings(io.Discard, envOf(nil))
	cfg, err := s.parse(nil)
	if err != nil {
		t.Fatalf("the demo needs no DATABASE_URL or JWT_SECRET: %v", err)
	}
	if cfg.Listen != demoListen || opts.writerRate != 3 || opts.tickets != 200 {
		t.Errorf("demo defaults: listen %q, writer rate %v, tickets %d", cfg.Listen, opts.writerRate, opts.tickets)
	}
	s, opts = demoSettings(io.Discard, envOf(map[string]string{"ROWCAST_LISTEN": "127.0.0.1:0", "ROWCAST_DEMO_WRITER_RATE": "0.5"}))
	cfg, err = s.parse([]string{"--tickets", "0"})
	if err != nil || cfg.Listen != "127.0.0.1:0" || opts.writerRate != 0.5 || opts.tickets != 0 {
		t.Errorf("demo env and flags: %v; listen %q, writer rate %v, tickets %d", err, cfg.Listen, opts.writerRate, opts.tickets)
	}
	s, _ = demoSettings(io.Discard, envOf(map[string]string{"ROWCAST_DEMO_WRITER_RATE": "fast"}))
	_, err = s.parse([]string{"--tickets", "100001"})
	for _, want := range []string{
		`--writer-rate / ROWCAST_DEMO_WRITER_RATE: "fast" is not a number from 0 to 1000 (like 3)`,
		`--tickets / ROWCAST_DEMO_TICKETS: "100001" is not a whole number from 0 to 100000 (like 200)`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("demo errors: got %v, want %s", err, want)
		}
	}
}

func TestEveryErrorAtOnce(t *testing.T) {
	_, err := parseServe(t, map[string]string{
		"ROWCAST_STATS_INTERVAL":  "soon",
		"ROWCAST_MAX_CONNECTIONS": "-1",
		"ROWCAST_LOG_FORMAT":      "xml",
	}, "--capture", "wal")
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"--stats-interval / ROWCAST_STATS_INTERVAL",
		"--max-connections / ROWCAST_MAX_CONNECTIONS",
		"--log-format / ROWCAST_LOG_FORMAT",
		"--capture / ROWCAST_CAPTURE",
		"--database-url / DATABASE_URL is required",
		"--jwt-secret / JWT_SECRET is not set",
		"ROWCAST_AUTH=off",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 6 {
		t.Errorf("%d errors, want 6:\n%v", n, err)
	}
}

func TestUnexpectedArguments(t *testing.T) {
	_, err := parseServe(t, required(), "--listen", ":1", "false")
	if err == nil || !strings.Contains(err.Error(), `unexpected arguments ["false"]`) {
		t.Errorf("got %v", err)
	}
}

func TestSecretsNeverShown(t *testing.T) {
	const dbPassword, jwtFromEnv, jwtFromFlag = "hunter2-db", "sekrit-env", "sekrit-flag"
	env := map[string]string{
		"DATABASE_URL":          "postgres://app:" + dbPassword + "@db:5432/helpdesk",
		"JWT_SECRET":            jwtFromEnv,
		"ROWCAST_PING_INTERVAL": "abc",
	}
	// A secret whose parser fails is named, never quoted.
	withHidden := func(out io.Writer) *settings {
		s := newSettings("serve", out, envOf(env))
		var hidden string
		s.add(setting{flag: "hidden", env: "ROWCAST_HIDDEN", secret: true, dest: &hidden,
			set: func(string) error { return errors.New("is not a key") }})
		return s
	}
	var help bytes.Buffer
	args := []string{"--jwt-secret", jwtFromFlag, "--hidden", "sekrit-hidden"}
	if _, err := withHidden(&help).parse(append(args, "--help")); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	_, err := withHidden(&help).parse(args)
	if err == nil || !strings.Contains(err.Error(), "--hidden / ROWCAST_HIDDEN: the value is not a key") {
		t.Fatalf("a failing secret: %v", err)
	}
	for _, secret := range []string{dbPassword, jwtFromEnv, jwtFromFlag, "sekrit-hidden"} {
		if strings.Contains(help.String(), secret) {
			t.Errorf("help shows %q:\n%s", secret, help.String())
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error shows %q: %v", secret, err)
		}
	}
}

func TestHelpListsEverySettingOnce(t *testing.T) {
	for _, cmd := range []string{"serve", "demo"} {
		var s *settings
		if cmd == "demo" {
			s, _ = demoSettings(io.Discard, envOf(nil))
		} else {
			s = newSettings(cmd, io.Discard, envOf(nil))
		}
		var out bytes.Buffer
		s.usage(&out)
		lines := strings.Split(out.String(), "\n")
		for _, e := range s.entries {
			heading := regexp.MustCompile(`^  --` + regexp.QuoteMeta(e.flag) + ` +` + regexp.QuoteMeta(e.env) + `( +default ` + regexp.QuoteMeta(e.def) + `)?$`)
			n := 0
			for _, l := range lines {
				if heading.MatchString(l) {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%s --help lists --%s / %s %d times, want once:\n%s", cmd, e.flag, e.env, n, out.String())
			}
			if e.def != "" && !strings.Contains(out.String(), "default "+e.def+"\n") {
				t.Errorf("%s --help lacks the default of --%s", cmd, e.flag)
			}
			if e.help == "" {
				t.Errorf("--%s has no help", e.flag)
			}
		}
	}
}

func TestFlagsAndVariablesAreUnique(t *testing.T) {
	s, _ := demoSettings(io.Discard, envOf(nil))
	flags, envs := map[string]bool{}, map[string]bool{}
	for _, e := range s.entries {
		if flags[e.flag] || envs[e.env] {
			t.Errorf("--%s / %s is declared twice", e.flag, e.env)
		}
		flags[e.flag], envs[e.env] = true, true
	}
}

// nonDefault is a valid value, other than the default, for every setting.
func nonDefault() map[string]string {
	return map[string]string{
		"listen": "127.0.0.1:1", "database-url": "postgres://other/db", "table": "app.orders",
		"capture": "logical", "channel": "ch", "publication": "pub", "slot": "sl",
		"stats-columns": "state", "event-prefix": "order", "snapshot-order": "created_at",
		"events": "ticket_update", "filter-columns": "state", "visibility": "all",
		"stats-interval": "1s", "ping-interval": "1s", "sse-keepalive": "1s", "poll-interval": "1s",
		"replay-window": "5", "replay-window-age": "1s", "max-connections": "5", "send-queue": "5",
		"jwt-secret": "other", "jwt-cookie": "jwt", "auth": "off", "cors-origins": "https://a.example",
		"cors-credentials": "true", "live-updates": "false", "log-level": "error", "log-format": "json",
		"debug-listen": "127.0.0.1:6060", "sio-ping-interval": "1s", "sio-ping-timeout": "1s",
		"sio-max-payload":       "5",
		"sio-connect-timeout":   "1s",
		"sio-max-pending":       "5",
		"close-on-token-expiry": "false",
		"nats-url":              "nats://127.0.0.1:4222", "nats-stream": "DESK", "nats-replicas": "3",
		"nats-creds": "/etc/rowcast/nats.creds", "nats-user": "rowcast", "nats-password": "pw",
		"nats-token": "tok", "nats-tls-ca": "/etc/ca.pem", "nats-tls-cert": "/etc/c.pem",
		"nats-tls-key": "/etc/k.pem", "nats-publish-timeout": "2s", "nats-max-age": "2h",
		"nats-duplicates": "1m",
		"nats-batch":      "1",
	}
}

// Every Config field is filled by exactly one setting, and changes when
// that setting is given, by flag and by variable alike.
func TestEveryFieldIsBound(t *testing.T) {
	var c Config
	table := configSettings(&c)
	values := nonDefault()
	fills := map[uintptr]string{}
	for _, st := range table {
		v := reflect.ValueOf(st.dest)
		if v.Kind() != reflect.Pointer {
			t.Fatalf("--%s fills a %T, not a field", st.flag, st.dest)
		}
		if other, dup := fills[v.Pointer()]; dup {
			t.Errorf("--%s and --%s fill the same field", other, st.flag)
		}
		fills[v.Pointer()] = st.flag
		if _, ok := values[st.flag]; !ok {
			t.Errorf("nonDefault lacks --%s", st.flag)
		}
	}
	if len(values) != len(table) {
		t.Errorf("nonDefault has %d values for %d settings", len(values), len(table))
	}
	cv := reflect.ValueOf(&c).Elem()
	ct := cv.Type()
	for i := range ct.NumField() {
		name := ct.Field(i).Name
		if name == "FilterColumnsSet" {
			continue // derived: whether --filter-columns was given
		}
		if _, ok := fills[cv.Field(i).Addr().Pointer()]; !ok {
			t.Errorf("no setting fills Config.%s", name)
		}
	}

	defaults := mustParse(t, required())
	var args []string
	env := map[string]string{}
	for _, st := range table {
		args = append(args, "--"+st.flag, values[st.flag])
		env[st.env] = values[st.flag]
	}
	for how, cfg := range map[string]Config{"flags": mustParse(t, nil, args...), "env": mustParse(t, env)} {
		dv, cv := reflect.ValueOf(defaults), reflect.ValueOf(cfg)
		for i := range ct.NumField() {
			if reflect.DeepEqual(dv.Field(i).Interface(), cv.Field(i).Interface()) {
				t.Errorf("from %s, Config.%s kept its default %v", how, ct.Field(i).Name, dv.Field(i).Interface())
			}
		}
	}
}

// settingName finds the setting of every field, as the checks outside
// this file (resolve, chooseCapture) rely on.
func TestSettingNameOfEveryField(t *testing.T) {
	var c Config
	for _, st := range configSettings(&c) {
		name := ""
		ct := reflect.ValueOf(&c).Elem()
		for i := range ct.NumField() {
			if ct.Field(i).Addr().Interface() == st.dest {
				name = ct.Type().Field(i).Name
			}
		}
		got := settingName(func(c *Config) any { return reflect.ValueOf(c).Elem().FieldByName(name).Addr().Interface() })
		if want := "--" + st.flag + " / " + st.env; got != want {
			t.Errorf("settingName(Config.%s) = %q, want %q", name, got, want)
		}
	}
}

// The filter-columns check runs on the parsed setting, so a flag and the
// variable fail alike; the default stays lenient on other tables.
func TestFilterColumnsFlagMatchesEnv(t *testing.T) {
	table := cdc.Table{Schema: "public", Name: "tickets", Key: []string{"id"}, Columns: []string{"id", "status", "priority", "title"}}
	fromEnv := mustParse(t, with(required(), "ROWCAST_FILTER_COLUMNS", "status,nosuch"))
	fromFlag := mustParse(t, required(), "--filter-columns", "status,nosuch")
	if !fromEnv.FilterColumnsSet || !fromFlag.FilterColumnsSet {
		t.Fatalf("FilterColumnsSet: env %v, flag %v; want both true", fromEnv.FilterColumnsSet, fromFlag.FilterColumnsSet)
	}
	_, envErr := resolve(fromEnv, table)
	_, flagErr := resolve(fromFlag, table)
	want := `--filter-columns / ROWCAST_FILTER_COLUMNS: "nosuch" is not a column of public.tickets; its columns are id, status, priority, title`
	if envErr == nil || flagErr == nil || envErr.Error() != want || flagErr.Error() != want {
		t.Errorf("unknown filter column:\n env: %v\nflag: %v\nwant: %s", envErr, flagErr, want)
	}

	res, err := resolve(mustParse(t, required()), table)
	if err != nil {
		t.Fatalf("default filter columns: %v", err)
	}
	if want := []string{"status", "priority"}; !reflect.DeepEqual(res.filterColumns, want) {
		t.Errorf("default filter columns on a table without some = %q, want %q", res.filterColumns, want)
	}
}

func TestResolveNamesSettings(t *testing.T) {
	table := cdc.Table{Schema: "public", Name: "orders", Key: []string{"id"}, Columns: []string{"id", "state"}}
	for _, c := range []struct {
		env  map[string]string
		arg  []string
		want string
	}{
		{nil, []string{"--stats-columns", "state,nosuch", "--filter-columns", "state"}, `--stats-columns / ROWCAST_STATS_COLUMNS: "nosuch" is not a column of public.orders`},
		{map[string]string{"ROWCAST_STATS_COLUMNS": "state", "ROWCAST_VISIBILITY": "owner = claim:sub"}, nil, `--visibility / ROWCAST_VISIBILITY: "owner" is not a column of public.orders`},
		{map[string]string{"ROWCAST_STATS_COLUMNS": "state", "ROWCAST_VISIBILITY": "some"}, nil, `--visibility / ROWCAST_VISIBILITY: `},
	} {
		_, err := resolve(mustParse(t, with(required(), flatten(c.env)...), c.arg...), table)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("got %v, want %s...", err, c.want)
		}
	}
}

func flatten(m map[string]string) []string {
	var kv []string
	for k, v := range m {
		kv = append(kv, k, v)
	}
	return kv
}

// The README's settings table lists exactly the settings, with their
// flags and (where it shows one as code) their defaults.
func TestREADMEListsEverySetting(t *testing.T) {
	f, err := os.Open("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	row := regexp.MustCompile("^\\| `([A-Z_]+)` \\| `--([a-z-]+)` \\|([^|]*)\\|")
	type readmeRow struct{ flag, def string }
	rows := map[string]readmeRow{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "## Settings":
			in = true
		case in && strings.HasPrefix(line, "## "):
			in = false
		case in:
			if m := row.FindStringSubmatch(line); m != nil {
				if _, dup := rows[m[1]]; dup {
					t.Errorf("README lists %s twice", m[1])
				}
				rows[m[1]] = readmeRow{m[2], strings.TrimSpace(m[3])}
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	var c Config
	for _, st := range configSettings(&c) {
		r, ok := rows[st.env]
		if !ok {
			t.Errorf("README's settings table lacks %s (--%s)", st.env, st.flag)
			continue
		}
		delete(rows, st.env)
		if r.flag != st.flag {
			t.Errorf("README: %s is --%s, want --%s", st.env, r.flag, st.flag)
		}
		if strings.HasPrefix(r.def, "`") && r.def != "`"+st.def+"`" {
			t.Errorf("README: %s defaults to %s, want `%s`", st.env, r.def, st.def)
		}
	}
	for env := range rows {
		t.Errorf("README lists %s, which is not a setting", env)
	}
}

func TestWildcardOriginWithCredentialsRefused(t *testing.T) {
	_, err := newSettings("serve", io.Discard, envOf(map[string]string{
		"DATABASE_URL": "postgres://localhost/db", "JWT_SECRET": "k",
		"CORS_ORIGINS": "https://desk.example.com,*", "CORS_CREDENTIALS": "true",
	})).parse(nil, requireDatabase, requireAuth, safeCORS)
	if err == nil || !strings.Contains(err.Error(), "CORS_ORIGINS") || !strings.Contains(err.Error(), "CORS_CREDENTIALS") {
		t.Fatalf("* with credentials: %v", err)
	}
	_, err = newSettings("serve", io.Discard, envOf(map[string]string{
		"DATABASE_URL": "postgres://localhost/db", "JWT_SECRET": "k", "CORS_ORIGINS": "*",
	})).parse(nil, requireDatabase, requireAuth, safeCORS)
	if err != nil {
		t.Fatalf("* without credentials: %v", err)
	}
}
