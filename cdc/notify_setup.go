package cdc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"text/template"

	"github.com/jackc/pgx/v5"

	"rowcast"

	rsql "rowcast/sql"
)

// notifyPayloadLimit is where the trigger switches to sending a payload
// in parts. PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
const notifyPayloadLimit = 7900

// notifyPartSize is the most payload bytes one part carries: base64 makes
// 7600 characters of them, which leaves room for the part's header (ids
// of up to 20 digits) under notifyPayloadLimit. A multiple of 3, so that
// only the last part has base64 padding.
const notifyPartSize = 5700

var (
	notifySetupTmpl = template.Must(template.New("notify").Parse(rsql.NotifySetupTemplate))
	broadcastTmpl   = template.Must(template.New("broadcast").Parse(rsql.BroadcastTemplate))
)

// BroadcastFunctionSQL renders rowcast.broadcast(event, payload) for a
// capture mode: pg_notify on channel, or a row in rowcast.outbox (which
// SetupLogical creates) that logical capture decodes. Names that
// rowcast.CheckEventName refuses, and names colliding with prefix's
// events, are refused in SQL. EXECUTE is revoked from PUBLIC: the
// operator grants it to the roles that may send events.
func BroadcastFunctionSQL(logical bool, channel, prefix string) (string, error) {
	if err := ValidChannel(channel); err != nil {
		return "", err
	}
	var b bytes.Buffer
	err := broadcastTmpl.Execute(&b, map[string]any{
		"Logical":    logical,
		"ChannelLit": quoteLiteral(channel),
		"PrefixLit":  quoteLiteral(prefix),
		"PrefixLen":  len([]rune(prefix)),
		"Limit":      notifyPayloadLimit,
		"MaxLen":     rowcast.MaxEventNameLen,
	})
	if err != nil {
		return "", fmt.Errorf("render rowcast.broadcast: %w", err)
	}
	return b.String(), nil
}

var channelRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// ValidChannel checks a NOTIFY channel name.
func ValidChannel(ch string) error {
	if !channelRE.MatchString(ch) {
		return fmt.Errorf("channel %q: use letters, digits and underscores (at most 63), starting with a letter", ch)
	}
	return nil
}

// triggerFunction names the per-table trigger function.
func triggerFunction(t Table) string {
	return pgx.Identifier{"capture_" + t.Schema + "_" + t.Name}.Sanitize()
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// jsonObjectExpr is a SQL expression that builds the JSON object of the
// columns of rec (NEW or OLD) by concatenation.
func jsonObjectExpr(rec string, cols []string) string {
	if len(cols) == 0 {
		return "'{}'"
	}
	parts := make([]string, 0, 2*len(cols)+1)
	for i, c := range cols {
		sep := ","
		if i == 0 {
			sep = "{"
		}
		parts = append(parts, quoteLiteral(sep+string(rowcast.AppendJSONString(nil, c))+":"),
			"coalesce(to_json("+rec+"."+pgx.Identifier{c}.Sanitize()+")::text, 'null')")
	}
	parts = append(parts, "'}'")
	return "(" + strings.Join(parts, " || ") + ")"
}

// payloadHead is the constant start of a payload, up to the xid's value.
func payloadHead(op string, t Table) string {
	return quoteLiteral(`{"op":"` + op + `","table":` + string(rowcast.AppendJSONString(nil, t.String())) + `,"xid":`)
}

// keyChangedExpr is a SQL condition that holds when an UPDATE changed the
// primary key.
func keyChangedExpr(key []string) string {
	if len(key) == 1 {
		// Cheaper than comparing row constructors.
		id := pgx.Identifier{key[0]}.Sanitize()
		return "OLD." + id + " IS DISTINCT FROM NEW." + id
	}
	olds, news := make([]string, len(key)), make([]string, len(key))
	for i, k := range key {
		id := pgx.Identifier{k}.Sanitize()
		olds[i], news[i] = "OLD."+id, "NEW."+id
	}
	return "ROW(" + strings.Join(olds, ", ") + ") IS DISTINCT FROM ROW(" + strings.Join(news, ", ") + ")"
}

// triggerFormat names the payload format the trigger writes; serve asks
// for "rowcast setup" when the installed trigger writes another one.
// v2: every payload numbered within its transaction, large payloads in
// parts, the old key of a key change.
const triggerFormat = "v2"

// triggerComment records what the trigger was installed with, so that
// serve can tell when setup must run again.
func triggerComment(channel string, tracked []string) string {
	return "rowcast: sends row changes on channel " + channel + " (payload " + triggerFormat + "); old values of " + strings.Join(tracked, ",")
}

// NotifySetupSQL renders the SQL that installs the NOTIFY trigger. tracked
// lists the columns whose old values updates and deletes carry (the stats,
// filter and visibility columns), sorted.
func NotifySetupSQL(t Table, channel string, tracked []string) (string, error) {
	if err := ValidChannel(channel); err != nil {
		return "", err
	}
	for _, c := range tracked {
		if !t.Has(c) {
			return "", fmt.Errorf("column %q is not a column of %s (columns: %s); fix ROWCAST_STATS_COLUMNS, ROWCAST_FILTER_COLUMNS or ROWCAST_VISIBILITY", c, t, strings.Join(t.Columns, ", "))
		}
	}
	var b bytes.Buffer
	err := notifySetupTmpl.Execute(&b, map[string]any{
		"Table":        t.String(),
		"TableIdent":   t.Ident(),
		"InsertHead":   payloadHead("insert", t),
		"UpdateHead":   payloadHead("update", t),
		"DeleteHead":   payloadHead("delete", t),
		"TruncateHead": payloadHead("truncate", t),
		"Function":     triggerFunction(t),
		"Channel":      channel,
		"ChannelLit":   quoteLiteral(channel),
		"KeyNew":       jsonObjectExpr("NEW", t.Key),
		"KeyOld":       jsonObjectExpr("OLD", t.Key),
		"KeyChanged":   keyChangedExpr(t.Key),
		"TrackedOld":   jsonObjectExpr("OLD", tracked),
		"Limit":        notifyPayloadLimit,
		"PartSize":     notifyPartSize,
		"CommentLit":   quoteLiteral(triggerComment(channel, tracked)),
	})
	if err != nil {
		return "", fmt.Errorf("render notify setup: %w", err)
	}
	return b.String(), nil
}

// SetupNotify installs the trigger in one transaction. Running it again
// replaces the function and trigger with the current version.
func SetupNotify(ctx context.Context, conn *pgx.Conn, t Table, channel string, tracked []string, eventPrefix string) error {
	text, err := NotifySetupSQL(t, channel, tracked)
	if err != nil {
		return err
	}
	fn, err := BroadcastFunctionSQL(false, channel, eventPrefix)
	if err != nil {
		return err
	}
	text += fn
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, text); err != nil {
			return fmt.Errorf("install NOTIFY trigger on %s: %w", t, err)
		}
		return nil
	})
}

// TeardownNotify removes the triggers on t and their function, and then
// the rowcast schema (rowcast.broadcast(), rowcast.outbox) unless another
// rowcast installation in the database still uses it: a trigger on
// another table, or a publication (another rowcast's) that publishes
// rowcast.outbox. Run TeardownLogical first, so that this installation's
// own publication no longer counts. kept says what was left and why.
func TeardownNotify(ctx context.Context, conn *pgx.Conn, t Table) (kept string, err error) {
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, t.Ident()).Scan(&exists); err != nil {
			return fmt.Errorf("teardown: %w", err)
		}
		if exists {
			for _, trg := range []string{"rowcast_capture", "rowcast_capture_truncate"} {
				if _, err := tx.Exec(ctx, "DROP TRIGGER IF EXISTS "+trg+" ON "+t.Ident()); err != nil {
					return fmt.Errorf("teardown: drop trigger %s: %w", trg, err)
				}
			}
		}
		var schema bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'rowcast')`).Scan(&schema); err != nil {
			return fmt.Errorf("teardown: %w", err)
		}
		if !schema {
			return nil
		}
		if _, err := tx.Exec(ctx, "DROP FUNCTION IF EXISTS rowcast."+triggerFunction(t)+"()"); err != nil {
			return fmt.Errorf("teardown: drop function rowcast.%s: %w", triggerFunction(t), err)
		}
		var users []string
		rows, err := tx.Query(ctx, `
			SELECT format('trigger rowcast_capture on %I.%I', n.nspname, c.relname)
			FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE tg.tgname = 'rowcast_capture' AND NOT (n.nspname = $1 AND c.relname = $2)
			UNION ALL
			SELECT format('publication %I', pubname) FROM pg_publication_tables
			WHERE schemaname = 'rowcast' AND tablename = 'outbox'
			ORDER BY 1`, t.Schema, t.Name)
		if err == nil {
			users, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		if err != nil {
			return fmt.Errorf("teardown: looking for other rowcast installations: %w", err)
		}
		if len(users) > 0 {
			kept = "schema rowcast kept (rowcast.broadcast(), rowcast.outbox): another rowcast installation uses it (" +
				strings.Join(users, ", ") + "); tear that one down too to remove it"
			return nil
		}
		if _, err := tx.Exec(ctx, "DROP SCHEMA IF EXISTS rowcast CASCADE"); err != nil {
			return fmt.Errorf("teardown: drop schema rowcast: %w", err)
		}
		return nil
	})
	return kept, err
}

// checkBroadcastFunction returns an error that says to run "rowcast setup"
// when rowcast.broadcast(text, jsonb) is missing, is still executable by
// PUBLIC (as an older rowcast installed it), or is not the version of
// this capture mode (logical: SECURITY DEFINER, writing rowcast.outbox).
// The catalogs it reads need no privilege. Those errors are *fatalError:
// retrying cannot fix them.
func checkBroadcastFunction(ctx context.Context, q Querier, logical bool) error {
	var secdef, public bool
	err := q.QueryRow(ctx, `
		SELECT p.prosecdef, has_function_privilege('public', p.oid, 'EXECUTE')
		FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = 'rowcast' AND p.proname = 'broadcast' AND p.pronargs = 2
		  AND p.proargtypes[0] = 'text'::regtype AND p.proargtypes[1] = 'jsonb'::regtype`).Scan(&secdef, &public)
	if errors.Is(err, pgx.ErrNoRows) {
		return fatalf("rowcast.broadcast(text, jsonb) is not installed; run \"rowcast setup\" (or apply \"rowcast setup --print\") first")
	}
	if err != nil {
		return fmt.Errorf("check rowcast.broadcast: %w", err)
	}
	if public {
		return fatalf("rowcast.broadcast(text, jsonb) may be called by every role (as an older rowcast installed it); run \"rowcast setup\" to revoke that, then grant EXECUTE on it to the roles that send events")
	}
	if logical && !secdef {
		return fatalf("rowcast.broadcast(text, jsonb) was installed for notify capture; run \"rowcast setup\" with this configuration (logical capture)")
	}
	return nil
}

// CheckNotifyInstalled returns an error that says to run "rowcast setup"
// when the trigger is missing or sends on another channel, or when
// rowcast.broadcast() is missing or still executable by every role.
func CheckNotifyInstalled(ctx context.Context, q Querier, t Table, channel string, tracked []string) error {
	var comment *string
	err := q.QueryRow(ctx, `
		SELECT obj_description(tg.oid, 'pg_trigger')
		FROM pg_trigger tg
		WHERE tg.tgrelid = $1::regclass AND tg.tgname = 'rowcast_capture' AND NOT tg.tgisinternal`,
		t.Ident()).Scan(&comment)
	if err == pgx.ErrNoRows {
		return fmt.Errorf("the rowcast trigger is not installed on %s; run \"rowcast setup\" (or apply \"rowcast setup --print\") first", t)
	}
	if err != nil {
		return fmt.Errorf("check rowcast trigger on %s: %w", t, err)
	}
	if comment == nil || *comment != triggerComment(channel, tracked) {
		return fmt.Errorf("the rowcast trigger on %s was installed with other settings (channel, stats, filter or visibility columns) or by an older rowcast; run \"rowcast setup\" again with this configuration", t)
	}
	return checkBroadcastFunction(ctx, q, false)
}
