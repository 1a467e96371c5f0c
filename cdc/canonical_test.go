package cdc

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"rowcast"
	"rowcast/integration/pgcluster/pgtest"
)

// TestCanonicalForms: for values of the types whose JSON PostgreSQL
// writes differently from capture, the three paths agree on one text: the
// trigger's to_json (in any session time zone) rewritten by
// canonicalJSON, the output function's text decoded by capture (what
// pgoutput sends, and what counts read), and canonicalTextExpr in SQL (what snapshot filters compare).
func TestCanonicalForms(t *testing.T) {
	url := pgtest.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range SessionParams() {
		cfg.RuntimeParams[k] = v
	}
	canon, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer canon.Close(context.Background())
	writer, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close(context.Background())
	for _, v := range []struct{ typ, lit string }{
		{"timestamptz", "2026-01-02 03:04:05+00"},
		{"timestamptz", "2026-01-02 03:04:05.5+05:30"},
		{"timestamptz", "2026-06-30 23:59:59.123456-07"},
		{"timestamptz", "1890-01-01 00:00:00+00"},
		{"timestamptz", "infinity"},
		{"timestamp", "2026-01-02 03:04:05"},
		{"timestamp", "2026-01-02 03:04:05.120"},
		{"date", "2026-01-02"},
		{"bytea", `\x00ff10`},
		{"boolean", "true"},
		{"numeric", "1.50"},
		{"text", "2026-01-02T03:04:05+01:00"},
	} {
		var oid uint32
		var text string
		if err := canon.QueryRow(ctx, "SELECT pg_typeof($1::"+v.typ+")::oid, format('%s', $1::"+v.typ+")", v.lit).Scan(&oid, &text); err != nil {
			t.Fatal(err)
		}
		want, err := newValueDecoder().decode(oid, []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		for _, tz := range []string{"UTC", "America/New_York", "Asia/Kolkata", "Europe/Amsterdam"} {
			var js string
			if err := writer.QueryRow(ctx, "SELECT set_config('TimeZone', $2, false), to_json($1::"+v.typ+")::text", v.lit, tz).Scan(nil, &js); err != nil {
				t.Fatal(err)
			}
			if got := canonicalJSON(oid, []byte(js)); string(got) != string(want) {
				t.Errorf("%s %s in %s: to_json %s becomes %s, capture writes %s", v.typ, v.lit, tz, js, got, want)
			}
		}
		var sqlText string
		if err := canon.QueryRow(ctx, "SELECT "+canonicalTextExpr("v", oid)+" FROM (SELECT $1::"+v.typ+" AS v) t", v.lit).Scan(&sqlText); err != nil {
			t.Fatal(err)
		}
		if sqlText != rowcast.JSONText(want) {
			t.Errorf("%s %s: SQL compares %q, clients see %q", v.typ, v.lit, sqlText, rowcast.JSONText(want))
		}
	}
}
