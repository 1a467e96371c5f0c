package cdc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"rowcast"
)

// Pages reads a table in primary key order, one page at a time, so that a
// client can load every row of its filter and not only the newest ones.
//
// Each page is one statement, so it shows the table as it was at one
// moment; pages of one load are read at different moments. A client that
// applies the change stream from the lastEventId it got with the first
// page (taken before that page was read) still ends with exactly the
// table: every key belongs to exactly one page's key range, that page
// shows the key's state at the page's moment, and every change to the key
// after that moment comes after the cursor in the stream.
type Pages struct {
	q     Querier
	t     Table
	order string // "t.k1, t.k2"
	after string // the condition on the cursor, whose JSON is parameter $1
}

// PageRows returns the keyset reader of the table.
func PageRows(q Querier, t Table) *Pages {
	cols := make([]string, len(t.Key))
	bounds := make([]string, len(t.Key))
	for i, k := range t.Key {
		id := pgx.Identifier{k}.Sanitize()
		cols[i] = "t." + id
		// Each key value of the cursor is read from its JSON with the
		// table's own row type, so every key type converts the way
		// row_to_json wrote it. An uncorrelated scalar subquery is
		// computed once, before the scan, and can bound the primary key
		// index: the page costs its own rows, not the rows before it.
		bounds[i] = fmt.Sprintf("(SELECT c.%s FROM json_populate_record(NULL::%s, $1::json) c)", id, t.Ident())
	}
	p := &Pages{q: q, t: t, order: strings.Join(cols, ", ")}
	if len(cols) == 1 {
		p.after = cols[0] + " > " + bounds[0]
	} else {
		p.after = "ROW(" + p.order + ") > ROW(" + strings.Join(bounds, ", ") + ")"
	}
	return p
}

// Key names the primary key columns, in index order.
func (p *Pages) Key() []string { return append([]string(nil), p.t.Key...) }

// CursorError is a page cursor that does not name a key of the table.
// Its BadCursor method lets the HTTP layer answer 400 without importing
// this package.
type CursorError struct{ msg string }

func (e *CursorError) Error() string { return e.msg }

// BadCursor marks the error as the client's.
func (e *CursorError) BadCursor() bool { return true }

// Page returns up to limit rows matching the conditions, in primary key
// order, after the key in after: a JSON object of the key columns (as
// the rows carry them), or nil for the first page.
func (p *Pages) Page(ctx context.Context, after json.RawMessage, limit int, where []rowcast.Condition) ([]rowcast.Row, error) {
	var conds []string
	var args []any
	if after != nil {
		if err := p.checkCursor(after); err != nil {
			return nil, err
		}
		// The cursor is always parameter $1.
		args = append(args, string(after))
		conds = append(conds, p.after)
	}
	for _, c := range where {
		if !p.t.Has(c.Column) {
			return nil, fmt.Errorf("read page of %s: no column %q", p.t, c.Column)
		}
		args = append(args, c.Values)
		conds = append(conds, fmt.Sprintf("t.%s::text = ANY($%d)", pgx.Identifier{c.Column}.Sanitize(), len(args)))
	}
	args = append(args, limit)
	query := "SELECT row_to_json(t)::text FROM " + p.t.Ident() + " t"
	if len(conds) > 0 {
		query += " WHERE " + strings.Join(conds, " AND ")
	}
	query += fmt.Sprintf(" ORDER BY %s LIMIT $%d", p.order, len(args))
	rows, err := p.q.Query(ctx, query, args...)
	if err != nil {
		return nil, p.readErr(err)
	}
	texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, p.readErr(err)
	}
	out := make([]rowcast.Row, len(texts))
	for i, s := range texts {
		if err := json.Unmarshal([]byte(s), &out[i]); err != nil {
			return nil, fmt.Errorf("read page of %s: %w", p.t, err)
		}
	}
	return out, nil
}

// checkCursor accepts an object holding exactly the key columns, each a
// JSON scalar other than null.
func (p *Pages) checkCursor(after json.RawMessage) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(after, &obj); err != nil || obj == nil {
		return &CursorError{fmt.Sprintf("after must be a JSON object of the key columns (%s), as a page's next gives it", strings.Join(p.t.Key, ", "))}
	}
	if len(obj) != len(p.t.Key) {
		return &CursorError{fmt.Sprintf("after must hold exactly the key columns %s", strings.Join(p.t.Key, ", "))}
	}
	for _, k := range p.t.Key {
		v, ok := obj[k]
		v = bytes.TrimSpace(v)
		if !ok || len(v) == 0 || v[0] == '{' || v[0] == '[' || bytes.Equal(v, []byte("null")) {
			return &CursorError{fmt.Sprintf("after must hold a value for key column %q", k)}
		}
	}
	return nil
}

// readErr wraps a read failure; a value of the cursor that the key's type
// refuses (class 22, data exception: the only input cast in the query)
// is the client's error.
func (p *Pages) readErr(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "22") {
		return &CursorError{fmt.Sprintf("after does not hold a key of %s: %s", p.t, pgErr.Message)}
	}
	return fmt.Errorf("read page of %s: %w", p.t, err)
}

// RecentOrder is the order of the newest rows that RecentRows returns,
// newest first: orderColumn when the table has it, then the key columns.
// Clients that keep a "newest N" view trim it by the same order.
func RecentOrder(t Table, orderColumn string) []string {
	var order []string
	if orderColumn != "" && t.Has(orderColumn) {
		order = append(order, orderColumn)
	}
	return append(order, t.Key...)
}
