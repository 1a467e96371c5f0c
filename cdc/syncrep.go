package cdc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// rowcast must never be a synchronous standby. PostgreSQL counts every
// WAL sender whose application_name synchronous_standby_names matches
// ('*' matches all), logical ones included, and a synchronous standby's
// flush position holds up every commit on the server. rowcast reports as
// flushed only what its replay window has let go of (see
// stream.ackTarget), minutes behind, so as a synchronous standby it would
// stall every writer of the cluster, not only the captured table's.
//
// So capture checks before it starts streaming, and keeps checking while
// it streams (the setting can be reloaded at any time, and a WAL sender
// takes up a new one lazily): if it is, or would be, a synchronous
// standby it stops with an error that says what to change. It stops
// rather than retries: every attempt would make commits wait again.

// syncCheckEvery is how often a streaming session asks whether its WAL
// sender has become a synchronous standby. Commits wait at most about
// this long (plus a status interval) before rowcast lets go.
const syncCheckEvery = time.Second

// errSynchronousStandby is the message of the error capture stops with.
func errSynchronousStandby(appName, names string) error {
	return fatalf("cdc: synchronous_standby_names (%q) makes rowcast's replication connection (application_name %q) a synchronous standby: every commit on this server would wait for rowcast, which confirms WAL only once its replay window lets go of it (minutes later), so rowcast does not stream. List your standbys by name, e.g. synchronous_standby_names = 'FIRST 1 (replica1)', never '*' or a name rowcast uses; set another application_name in DATABASE_URL if rowcast's collides with a standby's",
		names, appName)
}

// syncStandbyNames parses synchronous_standby_names ("[FIRST|ANY] n
// (a, b)" or "a, b") into its standby names, unquoted. PostgreSQL matches
// them against application_name ignoring case; "*" matches every name.
func syncStandbyNames(setting string) []string {
	list := strings.TrimSpace(setting)
	if open := strings.IndexByte(list, '('); open >= 0 {
		if end := strings.LastIndexByte(list, ')'); end > open {
			list = list[open+1 : end]
		}
	}
	var names []string
	var cur strings.Builder
	quoted := false
	flush := func() {
		if n := strings.TrimSpace(cur.String()); n != "" {
			names = append(names, strings.Trim(n, `"`))
		}
		cur.Reset()
	}
	for _, r := range list {
		switch {
		case r == '"':
			quoted = !quoted
			cur.WriteRune(r)
		case r == ',' && !quoted:
			flush()
		default:
			cur.WriteRune(r)
		}
	}
	flush()
	return names
}

// namesStandby reports whether synchronous_standby_names would make a WAL
// sender with application_name appName a synchronous standby.
func namesStandby(setting, appName string) bool {
	for _, n := range syncStandbyNames(setting) {
		if n == "*" || strings.EqualFold(n, appName) {
			return true
		}
	}
	return false
}

// checkNotNamedStandby refuses to stream when synchronous_standby_names
// names rowcast's application_name, before the WAL sender exists.
func checkNotNamedStandby(ctx context.Context, reg *pgx.Conn, appName string) error {
	var names string
	if err := reg.QueryRow(ctx, `SELECT current_setting('synchronous_standby_names')`).Scan(&names); err != nil {
		return fmt.Errorf("cdc: reading synchronous_standby_names: %w", err)
	}
	if namesStandby(names, appName) {
		return errSynchronousStandby(appName, names)
	}
	return nil
}

// checkNotSynchronous asks PostgreSQL whether the WAL sender serving
// backend pid is a synchronous standby candidate (sync_priority > 0),
// which is what counts, whatever the setting's syntax. A role without
// pg_read_all_stats (serve's least-privilege role) sees the view's
// details as NULL: then the setting is matched against the WAL sender's
// application_name, as before streaming.
func checkNotSynchronous(ctx context.Context, reg querier, pid uint32) error {
	var (
		priority *int32
		appName  *string
		name     string
	)
	err := reg.QueryRow(ctx, `SELECT sync_priority, application_name, current_setting('synchronous_standby_names')
		FROM pg_stat_replication WHERE pid = $1`, int64(pid)).Scan(&priority, &appName, &name)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // not streaming yet
	}
	if err != nil {
		return fmt.Errorf("cdc: checking whether the replication connection is a synchronous standby: %w", err)
	}
	app := ""
	if appName != nil {
		app = *appName
	}
	switch {
	case priority != nil && *priority > 0:
		return errSynchronousStandby(app, name)
	case priority == nil && appName != nil && namesStandby(name, app):
		return errSynchronousStandby(app, name)
	case priority == nil && appName == nil && namesStandby(name, "*"):
		// Nothing visible but the setting: only '*' is certain to match.
		return errSynchronousStandby(app, name)
	}
	return nil
}
