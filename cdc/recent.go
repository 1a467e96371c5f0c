package cdc

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"rowcast"
)

// RecentRows returns a reader of the newest rows matching the conditions,
// ordered by orderColumn (newest first) when the table has it, else by
// primary key descending. Rows and comparisons use the values' canonical
// form (see canonical.go); q's connections need SessionParams.
func RecentRows(q Querier, t Table, orderColumn string) func(ctx context.Context, limit int, where []rowcast.Condition) ([]rowcast.Row, error) {
	var order []string
	if orderColumn != "" && t.Has(orderColumn) {
		order = append(order, pgx.Identifier{orderColumn}.Sanitize()+" DESC")
	}
	for _, k := range t.Key {
		order = append(order, pgx.Identifier{k}.Sanitize()+" DESC")
	}
	orderBy := strings.Join(order, ", ")
	return func(ctx context.Context, limit int, where []rowcast.Condition) ([]rowcast.Row, error) {
		args := []any{limit}
		var conds []string
		for _, c := range where {
			if !t.Has(c.Column) {
				return nil, fmt.Errorf("read recent rows of %s: no column %q", t, c.Column)
			}
			args = append(args, c.Values)
			// The value's text as clients and the live filters see it.
			cond := fmt.Sprintf("%s = ANY($%d)", canonicalTextExpr(c.Column, t.typeOf(c.Column)), len(args))
			if c.EmptyMatchesNull {
				cond = fmt.Sprintf("(%s OR (t.%s IS NULL AND '' = ANY($%d)))", cond, pgx.Identifier{c.Column}.Sanitize(), len(args))
			}
			conds = append(conds, cond)
		}
		query := "SELECT row_to_json(t)::text FROM " + t.Ident() + " t"
		if len(conds) > 0 {
			query += " WHERE " + strings.Join(conds, " AND ")
		}
		query += " ORDER BY " + orderBy + " LIMIT $1"
		rows, err := q.Query(ctx, query, args...)
		if err != nil {
			return nil, fmt.Errorf("read recent rows of %s: %w", t, err)
		}
		texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("read recent rows of %s: %w", t, err)
		}
		out := make([]rowcast.Row, len(texts))
		for i, s := range texts {
			if err := json.Unmarshal([]byte(s), &out[i]); err != nil {
				return nil, fmt.Errorf("read recent rows of %s: %w", t, err)
			}
			t.canonicalRow(out[i])
		}
		return out, nil
	}
}
