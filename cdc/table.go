// Package cdc captures row changes from PostgreSQL: a NOTIFY listener fed by
// a trigger (Listener) and logical replication with pgoutput (Slot). Both
// decode into rowcast.Change and hand changes to a rowcast.Sink in commit
// order. This package knows nothing of clients or metrics.
package cdc

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Table names a captured table and the columns rowcast needs from it.
type Table struct {
	Schema, Name string
	// Key lists the primary key columns, in index order.
	Key []string
	// Columns lists every column, in table order.
	Columns []string
	// Types holds each column's type OID, as Columns (nil when unknown).
	Types []uint32
}

// Ident is the quoted, schema-qualified name for SQL text.
func (t Table) Ident() string { return pgx.Identifier{t.Schema, t.Name}.Sanitize() }

// String is the plain "schema.name".
func (t Table) String() string { return t.Schema + "." + t.Name }

// Has reports whether the table has the column.
func (t Table) Has(col string) bool {
	for _, c := range t.Columns {
		if c == col {
			return true
		}
	}
	return false
}

// ErrNoTable is returned when the configured table does not exist.
var ErrNoTable = errors.New("table not found")

// SplitTableName splits "schema.table" (default schema public).
func SplitTableName(name string) (schema, table string, err error) {
	parts := strings.Split(name, ".")
	switch {
	case len(parts) == 1 && parts[0] != "":
		return "public", parts[0], nil
	case len(parts) == 2 && parts[0] != "" && parts[1] != "":
		return parts[0], parts[1], nil
	}
	return "", "", fmt.Errorf("table name %q: want schema.table, e.g. public.tickets", name)
}

// Querier is the part of pgx.Conn and pgxpool.Pool that this package uses.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// LookupTable reads the table's columns and primary key from the catalog.
func LookupTable(ctx context.Context, q Querier, name string) (Table, error) {
	schema, rel, err := SplitTableName(name)
	if err != nil {
		return Table{}, err
	}
	t := Table{Schema: schema, Name: rel}
	rows, err := q.Query(ctx, `
		SELECT a.attname, a.atttypid::int8
		FROM pg_attribute a
		JOIN pg_class c ON c.oid = a.attrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attnum`, schema, rel)
	if err != nil {
		return Table{}, fmt.Errorf("read columns of %s: %w", t, err)
	}
	var col string
	var oid int64
	_, err = pgx.ForEachRow(rows, []any{&col, &oid}, func() error {
		t.Columns = append(t.Columns, col)
		t.Types = append(t.Types, uint32(oid))
		return nil
	})
	if err != nil {
		return Table{}, fmt.Errorf("read columns of %s: %w", t, err)
	}
	if len(t.Columns) == 0 {
		return Table{}, fmt.Errorf("%w: %s does not exist or has no columns; create it first (the reference table is in sql/tickets.sql) or set ROWCAST_TABLE", ErrNoTable, t)
	}
	rows, err = q.Query(ctx, `
		SELECT a.attname
		FROM pg_index i
		JOIN pg_class c ON c.oid = i.indrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE n.nspname = $1 AND c.relname = $2 AND i.indisprimary
		ORDER BY k.ord`, schema, rel)
	if err != nil {
		return Table{}, fmt.Errorf("read primary key of %s: %w", t, err)
	}
	t.Key, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return Table{}, fmt.Errorf("read primary key of %s: %w", t, err)
	}
	if len(t.Key) == 0 {
		return Table{}, fmt.Errorf("table %s has no primary key; rowcast needs one to identify rows: ALTER TABLE %s ADD PRIMARY KEY (...)", t, t.Ident())
	}
	return t, nil
}
