package cdc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/template"

	"github.com/jackc/pgx/v5"

	rsql "rowcast/sql"
)

var (
	logicalSetupTmpl    = template.Must(template.New("logical_setup").Parse(rsql.LogicalSetupTemplate))
	logicalTeardownTmpl = template.Must(template.New("logical_teardown").Parse(rsql.LogicalTeardownTemplate))
)

type logicalNames struct {
	Table, TableLit, SchemaLit, NameLit string
	Publication, PublicationLit         string
	SlotLit                             string
}

func newLogicalNames(table, publication, slot string) (logicalNames, error) {
	var n logicalNames
	if publication == "" {
		return n, errors.New("cdc: empty publication name")
	}
	if !slotNameRE.MatchString(slot) {
		return n, fmt.Errorf("cdc: invalid replication slot name %q: use lower-case letters, digits and underscores (at most 63)", slot)
	}
	n.Publication = pgx.Identifier{publication}.Sanitize()
	n.PublicationLit = quoteLiteral(publication)
	n.SlotLit = quoteLiteral(slot)
	if table == "" {
		// Teardown names no table.
		return n, nil
	}
	schema, name, err := SplitTableName(table)
	if err != nil {
		return n, fmt.Errorf("cdc: %w", err)
	}
	n.Table = pgx.Identifier{schema, name}.Sanitize()
	n.TableLit = quoteLiteral(n.Table)
	n.SchemaLit = quoteLiteral(schema)
	n.NameLit = quoteLiteral(name)
	return n, nil
}

func renderLogical(t *template.Template, name string, n logicalNames) (string, error) {
	var b strings.Builder
	if err := t.ExecuteTemplate(&b, name, n); err != nil {
		return "", fmt.Errorf("cdc: rendering %s SQL: %w", name, err)
	}
	return b.String(), nil
}

// LogicalSetupSQL returns the SQL that SetupLogical runs, for
// `rowcast setup --print`: the publication, REPLICA IDENTITY FULL and the
// replication slot, each idempotent. Names that are not valid yield SQL
// comments explaining why, since the output is meant for a person.
func LogicalSetupSQL(table, publication, slot string) string {
	if table == "" {
		return "-- cdc: no table to set up: name one, e.g. public.tickets\n"
	}
	n, err := newLogicalNames(table, publication, slot)
	if err != nil {
		return "-- " + err.Error() + "\n"
	}
	pub, err := renderLogical(logicalSetupTmpl, "publication", n)
	if err != nil {
		return "-- " + err.Error() + "\n"
	}
	sl, err := renderLogical(logicalSetupTmpl, "slot", n)
	if err != nil {
		return "-- " + err.Error() + "\n"
	}
	return "-- rowcast logical replication setup for " + n.Table + ".\n" +
		"-- Run in autocommit mode (not psql -1): the slot cannot be created in a\n" +
		"-- transaction that has written.\n\n" + pub + "\n" + sl
}

// LogicalTeardownSQL returns the SQL that TeardownLogical runs.
func LogicalTeardownSQL(publication, slot string) string {
	n, err := newLogicalNames("", publication, slot)
	if err != nil {
		return "-- " + err.Error() + "\n"
	}
	var b strings.Builder
	if err := logicalTeardownTmpl.Execute(&b, n); err != nil {
		return "-- " + err.Error() + "\n"
	}
	return strings.TrimLeft(b.String(), "\n")
}

// SetupLogical prepares table for logical replication capture: a
// publication for it, REPLICA IDENTITY FULL (so updates carry the old row,
// including unchanged large values) and a pgoutput slot. It is idempotent.
// table is schema-qualified, e.g. public.tickets.
func SetupLogical(ctx context.Context, conn *pgx.Conn, table, publication, slot string) error {
	if table == "" {
		return errors.New("cdc: no table to set up: name one, e.g. public.tickets")
	}
	n, err := newLogicalNames(table, publication, slot)
	if err != nil {
		return err
	}
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, n.Table).Scan(&exists); err != nil {
		return fmt.Errorf("cdc: looking up table %s: %w", table, err)
	}
	if !exists {
		return fmt.Errorf("cdc: table %s: %w (create it first, or set the table name)", table, ErrNoTable)
	}
	var info slotInfo
	if info, err = readSlot(ctx, conn, slot); err != nil {
		return err
	}
	if info.exists && (info.slotType != "logical" || info.plugin != "pgoutput" || !info.sameDB) {
		return fmt.Errorf("cdc: replication slot %q already exists but is not a pgoutput logical slot of this database (type %s, plugin %q): choose another slot name, or drop it if it is unused",
			slot, info.slotType, info.plugin)
	}

	pub, err := renderLogical(logicalSetupTmpl, "publication", n)
	if err != nil {
		return err
	}
	// Several statements in one simple-protocol query run as one
	// transaction.
	if _, err := conn.Exec(ctx, pub, pgx.QueryExecModeSimpleProtocol); err != nil {
		return fmt.Errorf("cdc: creating publication %q for %s: %w (the role must own the table)", publication, table, err)
	}

	// Outside the DDL transaction: a slot cannot be created in a
	// transaction that has written.
	if !info.exists {
		sl, err := renderLogical(logicalSetupTmpl, "slot", n)
		if err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, sl, pgx.QueryExecModeSimpleProtocol); err != nil {
			return fmt.Errorf("cdc: creating replication slot %q: %w (the role needs REPLICATION, wal_level must be logical; see DetectLogical)", slot, err)
		}
	}
	return nil
}

// TeardownLogical drops the replication slot and the publication if they
// exist. The slot must not be in use: stop rowcast first. Dropping the slot
// releases the WAL it kept.
func TeardownLogical(ctx context.Context, conn *pgx.Conn, publication, slot string) error {
	n, err := newLogicalNames("", publication, slot)
	if err != nil {
		return err
	}
	var pid *int32
	err = conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("cdc: reading replication slot %q: %w", slot, err)
	}
	if pid != nil {
		return fmt.Errorf("cdc: replication slot %q is in use by PID %d: stop rowcast first, then run teardown again", slot, *pid)
	}
	var b strings.Builder
	if err := logicalTeardownTmpl.Execute(&b, n); err != nil {
		return fmt.Errorf("cdc: rendering teardown SQL: %w", err)
	}
	if _, err := conn.Exec(ctx, b.String(), pgx.QueryExecModeSimpleProtocol); err != nil {
		return fmt.Errorf("cdc: dropping replication slot %q and publication %q: %w", slot, publication, err)
	}
	return nil
}
