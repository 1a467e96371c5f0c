package cdc

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"rowcast"
)

// RecentRows returns a reader of the newest rows, ordered by orderColumn
// (newest first) when the table has it, else by primary key descending.
func RecentRows(q Querier, t Table, orderColumn string) func(ctx context.Context, limit int) ([]rowcast.Row, error) {
	var order []string
	if orderColumn != "" && t.Has(orderColumn) {
		order = append(order, pgx.Identifier{orderColumn}.Sanitize()+" DESC")
	}
	for _, k := range t.Key {
		order = append(order, pgx.Identifier{k}.Sanitize()+" DESC")
	}
	query := fmt.Sprintf("SELECT row_to_json(t)::text FROM %s t ORDER BY %s LIMIT $1", t.Ident(), strings.Join(order, ", "))
	return func(ctx context.Context, limit int) ([]rowcast.Row, error) {
		rows, err := q.Query(ctx, query, limit)
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
		}
		return out, nil
	}
}
