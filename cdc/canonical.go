package cdc

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"rowcast"
)

// A value has one form, whichever way it reaches rowcast: the JSON that
// logical capture writes from PostgreSQL's text output (values.go). The
// stats key it counts under and the text a filter or visibility rule
// compares are that JSON's text (rowcast.JSONText). Other paths are
// brought to it here:
//
//   - JSON that PostgreSQL writes (to_json, row_to_json: the NOTIFY
//     trigger, which runs in the writer's session and so its time zone,
//     and snapshots) differs for timestamps ("2026-01-02T04:05:06+01:00"
//     for "2026-01-02T03:05:06Z") and bytea (hex for base64):
//     canonicalRow rewrites those columns;
//   - counts read each value's output text (format('%s', col) under
//     sessionParams, as pgoutput sends it) and decode it as capture does
//     (CountsLoader);
//   - SQL conditions compare canonicalTextExpr, which computes the same
//     text in SQL.

// SessionParams are the settings a connection needs for its text output
// to be what capture decodes (serve's pool uses them for counts).
func SessionParams() map[string]string {
	out := make(map[string]string, len(sessionParams))
	for k, v := range sessionParams {
		out[k] = v
	}
	return out
}

// typeOf returns the type OID of a column of t, 0 when unknown.
func (t Table) typeOf(col string) uint32 {
	for i, c := range t.Columns {
		if c == col && i < len(t.Types) {
			return t.Types[i]
		}
	}
	return 0
}

// needsCanon reports whether PostgreSQL's JSON for a type differs from
// capture's.
func needsCanon(oid uint32) bool {
	return oid == pgtype.TimestamptzOID || oid == pgtype.TimestampOID || oid == pgtype.ByteaOID
}

// canonicalRow rewrites, in place, the values of r that PostgreSQL's JSON
// writes differently from capture, and returns r.
func (t Table) canonicalRow(r rowcast.Row) rowcast.Row {
	for i := range r {
		if oid := t.typeOf(r[i].Name); needsCanon(oid) {
			r[i].Value = canonicalJSON(oid, r[i].Value)
		}
	}
	return r
}

// pgJSONTime parses timestamps as to_json writes them: ISO 8601 with
// the session's offset (which may have seconds), or none for timestamp.
var pgJSONTime = []string{"2006-01-02T15:04:05.999999999Z07:00", "2006-01-02T15:04:05.999999999Z07:00:00", "2006-01-02T15:04:05.999999999"}

// canonicalJSON turns a value of type oid as PostgreSQL's JSON writes it
// into capture's form. What it cannot read (infinity, years outside
// 1..9999, escape-format bytea) is returned as is. A timestamp's new form
// is written over the old one when it fits (the caller owns v): it is on
// every row the trigger sends.
func canonicalJSON(oid uint32, v json.RawMessage) json.RawMessage {
	if len(v) < 2 || v[0] != '"' {
		return v
	}
	switch oid {
	case pgtype.TimestamptzOID, pgtype.TimestampOID:
		ts, year, ok := parsePGJSONTime(v[1 : len(v)-1])
		if !ok {
			return canonicalJSONSlow(oid, v)
		}
		if year < 1 || year > 9999 {
			return v
		}
		var buf [40]byte
		b := append(buf[:0], '"')
		b = rowcast.AppendUTC(b, ts, 6)
		b = append(b, '"')
		if len(b) <= len(v) {
			return v[:copy(v, b)]
		}
		return append([]byte(nil), b...)
	}
	return canonicalJSONSlow(oid, v)
}

// canonicalJSONSlow is canonicalJSON for any form time.Parse reads, and
// for bytea.
func canonicalJSONSlow(oid uint32, v json.RawMessage) json.RawMessage {
	// v is valid JSON (the row it is in was decoded): its text, or, if
	// it is not, v itself, which neither a time nor bytea parses.
	s := rowcast.JSONText(v)
	switch oid {
	case pgtype.TimestamptzOID, pgtype.TimestampOID:
		for _, layout := range pgJSONTime {
			ts, err := time.Parse(layout, s)
			if err != nil {
				continue
			}
			if y := ts.Year(); y < 1 || y > 9999 {
				return v
			}
			b := append(make([]byte, 0, 34), '"')
			b = rowcast.AppendUTC(b, ts, 6)
			return append(b, '"')
		}
	case pgtype.ByteaOID:
		if !strings.HasPrefix(s, `\x`) {
			return v
		}
		raw, err := hex.DecodeString(s[2:])
		if err != nil {
			return v
		}
		b := make([]byte, base64.StdEncoding.EncodedLen(len(raw))+2)
		b[0] = '"'
		base64.StdEncoding.Encode(b[1:], raw)
		b[len(b)-1] = '"'
		return b
	}
	return v
}

// parsePGJSONTime reads the forms to_json writes a timestamp in, as
// time.Parse does with pgJSONTime but without its layout parsing and
// allocations: "2006-01-02T15:04:05", up to nine digits of fraction, and
// no offset, "Z", "+07:00" or "+07:00:00". ok is false for anything else,
// which canonicalJSONSlow reads. FuzzCanonicalTime holds the two to one
// result. t is in UTC; year is the year as written.
func parsePGJSONTime(s []byte) (t time.Time, year int, ok bool) {
	if len(s) < 19 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return time.Time{}, 0, false
	}
	year, ok1 := digits(s[0:4])
	month, ok2 := digits(s[5:7])
	day, ok3 := digits(s[8:10])
	hour, ok4 := digits(s[11:13])
	minute, ok5 := digits(s[14:16])
	sec, ok6 := digits(s[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || month < 1 || month > 12 || day < 1 ||
		day > daysIn(time.Month(month), year) || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, 0, false
	}
	rest := s[19:]
	nsec := 0
	if len(rest) > 0 && rest[0] == '.' {
		n := 1
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		if n == 1 || n > 10 {
			return time.Time{}, 0, false
		}
		for i := 1; i < 10; i++ {
			nsec *= 10
			if i < n {
				nsec += int(rest[i] - '0')
			}
		}
		rest = rest[n:]
	}
	offset := 0
	switch {
	case len(rest) == 0:
	case len(rest) == 1 && rest[0] == 'Z':
	case (len(rest) == 6 || len(rest) == 9) && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		oh, okh := digits(rest[1:3])
		om, okm := digits(rest[4:6])
		os := 0
		oks := true
		if len(rest) == 9 {
			if rest[6] != ':' {
				return time.Time{}, 0, false
			}
			os, oks = digits(rest[7:9])
		}
		if !okh || !okm || !oks || oh > 23 || om > 59 || os > 59 {
			return time.Time{}, 0, false
		}
		offset = oh*3600 + om*60 + os
		if rest[0] == '-' {
			offset = -offset
		}
	default:
		return time.Time{}, 0, false
	}
	t = time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC)
	return t.Add(-time.Duration(offset) * time.Second), year, true
}

// digits reads a fixed-width run of ASCII digits.
func digits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// daysIn is the number of days in month of year (proleptic Gregorian).
func daysIn(m time.Month, year int) int {
	return time.Date(year, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// canonicalTextExpr is a SQL expression for column col (of type oid) of
// the row alias t that yields rowcast.JSONText of the value's canonical
// JSON, so that SQL compares what a filter or visibility rule compares
// live. Connections running it need sessionParams (dates in ISO).
func canonicalTextExpr(col string, oid uint32) string {
	c := "t." + pgx.Identifier{col}.Sanitize()
	switch oid {
	case pgtype.TimestamptzOID:
		return "(CASE WHEN isfinite(" + c + ") THEN rtrim(rtrim(to_char(" + c + ` AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), '0'), '.') || 'Z' ELSE ` + c + "::text END)"
	case pgtype.TimestampOID:
		return "(CASE WHEN isfinite(" + c + ") THEN rtrim(rtrim(to_char(" + c + `, 'YYYY-MM-DD"T"HH24:MI:SS.US'), '0'), '.') || 'Z' ELSE ` + c + "::text END)"
	case pgtype.ByteaOID:
		return "translate(encode(" + c + ", 'base64'), E'\\n', '')"
	}
	return c + "::text"
}
