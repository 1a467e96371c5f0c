package cdc

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"rowcast"
)

// CountsLoader returns a rowcast.CountsLoader that counts the table's rows
// by each stats column in one REPEATABLE READ transaction and returns the
// transaction's snapshot with them, so that the consumer can tell which
// later changes the counts already include. q's connections need
// SessionParams, so that values are counted under their canonical text.
func CountsLoader(q interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}, t Table, statsColumns []string) rowcast.CountsLoader {
	var b strings.Builder
	b.WriteString("SELECT NULL::text, NULL::text, count(*) FROM " + t.Ident())
	for _, c := range statsColumns {
		id := pgx.Identifier{c}.Sanitize()
		// format('%s', v) is the type's output function, as pgoutput
		// sends values (v::text differs for booleans: 'true', not 't').
		fmt.Fprintf(&b, " UNION ALL SELECT %s, CASE WHEN %s IS NULL THEN NULL ELSE format('%%s', %s) END, count(*) FROM %s GROUP BY %s",
			quoteLiteral(c), id, id, t.Ident(), id)
	}
	query := b.String()
	return func(ctx context.Context) (rowcast.Counts, rowcast.XidSnapshot, error) {
		counts := rowcast.Counts{By: map[string]map[string]int64{}}
		for _, c := range statsColumns {
			counts.By[c] = map[string]int64{}
		}
		var snap rowcast.XidSnapshot
		tx, err := q.Begin(ctx)
		if err != nil {
			return counts, snap, fmt.Errorf("count rows: %w", err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"); err != nil {
			return counts, snap, fmt.Errorf("count rows: %w", err)
		}
		var xmin, xmax string
		var xip []string
		err = tx.QueryRow(ctx, `SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text,
			ARRAY(SELECT x::text FROM pg_snapshot_xip(s) x) FROM pg_current_snapshot() s`).Scan(&xmin, &xmax, &xip)
		if err != nil {
			return counts, snap, fmt.Errorf("read snapshot: %w", err)
		}
		if snap.Xmin, err = strconv.ParseUint(xmin, 10, 64); err != nil {
			return counts, snap, fmt.Errorf("read snapshot: %w", err)
		}
		if snap.Xmax, err = strconv.ParseUint(xmax, 10, 64); err != nil {
			return counts, snap, fmt.Errorf("read snapshot: %w", err)
		}
		for _, x := range xip {
			v, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				return counts, snap, fmt.Errorf("read snapshot: %w", err)
			}
			snap.Xip = append(snap.Xip, v)
		}
		rows, err := tx.Query(ctx, query)
		if err != nil {
			return counts, snap, fmt.Errorf("count rows of %s: %w", t, err)
		}
		defer rows.Close()
		dec := newValueDecoder()
		for rows.Next() {
			var col, val *string
			var n int64
			if err := rows.Scan(&col, &val, &n); err != nil {
				return counts, snap, fmt.Errorf("count rows of %s: %w", t, err)
			}
			switch {
			case col == nil:
				counts.Total = n
			case val == nil:
				counts.By[*col][""] += n
			default:
				// Counted under the text clients see and changes carry
				// (a timestamptz as "2026-01-02T03:04:05Z", not its
				// ::text "2026-01-02 03:04:05+00"), decoded as capture
				// decodes what pgoutput sends.
				v, err := dec.decode(t.typeOf(*col), []byte(*val))
				if err != nil {
					return counts, snap, fmt.Errorf("count rows of %s: column %s: %w", t, *col, err)
				}
				counts.By[*col][rowcast.JSONText(v)] += n
			}
		}
		if err := rows.Err(); err != nil {
			return counts, snap, fmt.Errorf("count rows of %s: %w", t, err)
		}
		return counts, snap, nil
	}
}
