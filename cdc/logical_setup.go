package cdc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/template"

	"github.com/jackc/pgx/v5"

	rsql "rowcast/sql"
)

var logicalSetupTmpl = template.Must(template.New("logical_setup").Parse(rsql.LogicalSetupTemplate))

// The outbox that carries rowcast.broadcast() events to logical capture
// (see sql/logical_setup.sql).
const (
	outboxSchema = "rowcast"
	outboxTable  = "outbox"
)

type logicalNames struct {
	Table, TableLit, SchemaLit, NameLit string
	Publication, PublicationLit         string
	SlotLit                             string
	CommentLit, HintLit                 string

	schema, name, publication string
}

func newLogicalNames(table, publication, slot string) (logicalNames, error) {
	var n logicalNames
	if publication == "" {
		return n, errors.New("cdc: empty publication name")
	}
	if !slotNameRE.MatchString(slot) {
		return n, fmt.Errorf("cdc: invalid replication slot name %q: use lower-case letters, digits and underscores (at most 63)", slot)
	}
	schema, name, err := SplitTableName(table)
	if err != nil {
		return n, fmt.Errorf("cdc: %w", err)
	}
	n.schema, n.name, n.publication = schema, name, publication
	n.Publication = pgx.Identifier{publication}.Sanitize()
	n.PublicationLit = quoteLiteral(publication)
	n.SlotLit = quoteLiteral(slot)
	n.Table = pgx.Identifier{schema, name}.Sanitize()
	n.TableLit = quoteLiteral(n.Table)
	n.SchemaLit = quoteLiteral(schema)
	n.NameLit = quoteLiteral(name)
	n.CommentLit = quoteLiteral(publicationComment(schema, name))
	n.HintLit = quoteLiteral(ownPublicationHint(name))
	return n, nil
}

// ownPublicationHint says what to do when the publication holds other
// tables.
func ownPublicationHint(table string) string {
	suggest := "rowcast_" + table
	if !slotNameRE.MatchString(suggest) {
		suggest = "rowcast_2"
	}
	return "Set ROWCAST_PUBLICATION and ROWCAST_SLOT to new names (e.g. " + suggest + ") and run rowcast setup again."
}

// commentTag starts the comment setup puts on its publication, followed
// by the table as JSON. rowcast serve reads it to know which relation's
// changes to hand on when it is not told (see SlotConfig.Table).
const commentTag = "rowcast setup "

func publicationComment(schema, name string) string {
	b, _ := json.Marshal(setupRecord{Schema: schema, Table: name})
	return commentTag + string(b) + " publishes this table and rowcast.outbox to rowcast; rowcast teardown drops it"
}

type setupRecord struct {
	Schema string `json:"schema"`
	Table  string `json:"table"`
}

// parsePublicationComment returns the table a publication comment written
// by setup names.
func parsePublicationComment(c string) (schema, name string, ok bool) {
	rest, found := strings.CutPrefix(c, commentTag)
	if !found {
		return "", "", false
	}
	var r setupRecord
	if err := json.NewDecoder(strings.NewReader(rest)).Decode(&r); err != nil || r.Schema == "" || r.Table == "" {
		return "", "", false
	}
	return r.Schema, r.Table, true
}

func renderLogical(name string, n logicalNames) (string, error) {
	var b strings.Builder
	if err := logicalSetupTmpl.ExecuteTemplate(&b, name, n); err != nil {
		return "", fmt.Errorf("cdc: rendering %s SQL: %w", name, err)
	}
	return b.String(), nil
}

// LogicalSetupSQL returns the SQL that SetupLogical runs, for
// `rowcast setup --print`: rowcast.outbox, the publication (refused when
// it holds other tables), REPLICA IDENTITY FULL and the replication slot,
// each idempotent. Names that are not valid yield SQL comments explaining
// why, since the output is meant for a person.
func LogicalSetupSQL(table, publication, slot string) string {
	if table == "" {
		return "-- cdc: no table to set up: name one, e.g. public.tickets\n"
	}
	n, err := newLogicalNames(table, publication, slot)
	if err != nil {
		return "-- " + err.Error() + "\n"
	}
	pub, err := renderLogical("publication", n)
	if err != nil {
		return "-- " + err.Error() + "\n"
	}
	sl, err := renderLogical("slot", n)
	if err != nil {
		return "-- " + err.Error() + "\n"
	}
	return "-- rowcast logical replication setup for " + n.Table + ".\n" +
		"-- Run in autocommit mode (not psql -1): the slot cannot be created in a\n" +
		"-- transaction that has written.\n\n" + pub + "\n" + sl
}

// publicationInfo is what the catalog says about a publication.
type publicationInfo struct {
	exists, allTables bool
	comment           string
	// tables lists every table it publishes as {schema, name}.
	tables [][2]string
}

// readPublication reads a publication's tables and comment. It needs no
// privilege: the catalogs are readable by every role.
func readPublication(ctx context.Context, q Querier, publication string) (publicationInfo, error) {
	var info publicationInfo
	err := q.QueryRow(ctx, `SELECT puballtables, coalesce(obj_description(oid, 'pg_publication'), '')
		FROM pg_publication WHERE pubname = $1`, publication).Scan(&info.allTables, &info.comment)
	if errors.Is(err, pgx.ErrNoRows) {
		return info, nil
	}
	if err != nil {
		return info, fmt.Errorf("cdc: reading publication %q: %w", publication, err)
	}
	info.exists = true
	rows, err := q.Query(ctx, `SELECT schemaname::text, tablename::text FROM pg_publication_tables
		WHERE pubname = $1 ORDER BY 1, 2`, publication)
	if err != nil {
		return info, fmt.Errorf("cdc: reading the tables of publication %q: %w", publication, err)
	}
	info.tables, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
		var t [2]string
		err := r.Scan(&t[0], &t[1])
		return t, err
	})
	if err != nil {
		return info, fmt.Errorf("cdc: reading the tables of publication %q: %w", publication, err)
	}
	return info, nil
}

func (p publicationInfo) has(schema, name string) bool {
	for _, t := range p.tables {
		if t[0] == schema && t[1] == name {
			return true
		}
	}
	return false
}

// others lists the tables it publishes besides schema.name and the
// outbox, for a message: quoted names, at most five and a count.
func (p publicationInfo) others(schema, name string) []string {
	var out []string
	n := 0
	for _, t := range p.tables {
		if t == [2]string{schema, name} || t == [2]string{outboxSchema, outboxTable} {
			continue
		}
		n++
		if len(out) < 5 {
			out = append(out, pgx.Identifier{t[0], t[1]}.Sanitize())
		}
	}
	if n > len(out) {
		out = append(out, fmt.Sprintf("and %d more", n-len(out)))
	}
	if p.allTables && len(out) == 0 {
		out = append(out, "every table (FOR ALL TABLES)")
	}
	return out
}

// SetupLogical prepares table for logical replication capture:
// rowcast.outbox, a publication that holds the table and the outbox and
// nothing else, REPLICA IDENTITY FULL (so updates carry the old row,
// including unchanged large values) and a pgoutput slot. It is idempotent
// and brings an installation made by an older rowcast up to date. A
// publication that also holds other tables is refused: rowcast would
// decode them for nothing, and dropping it at teardown would break
// whoever shares it. table is schema-qualified, e.g. public.tickets.
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
	// The SQL refuses a shared publication too (for --print); checked here
	// first to say it without a PostgreSQL error around it.
	pi, err := readPublication(ctx, conn, publication)
	if err != nil {
		return err
	}
	if others := pi.others(n.schema, n.name); pi.exists && len(others) > 0 {
		return fmt.Errorf("cdc: publication %q also publishes %s; rowcast needs a publication that holds only %s.%s (and rowcast.outbox), since it decodes every change a publication sends and teardown drops the publication: %s",
			publication, strings.Join(others, ", "), n.schema, n.name, ownPublicationHint(n.name))
	}

	pub, err := renderLogical("publication", n)
	if err != nil {
		return err
	}
	// Several statements in one simple-protocol query run as one
	// transaction.
	if _, err := conn.Exec(ctx, pub, pgx.QueryExecModeSimpleProtocol); err != nil {
		return fmt.Errorf("cdc: creating rowcast.outbox and publication %q for %s: %w (the role must own the table and the publication, and may need CREATE on the database)", publication, table, err)
	}

	// Outside the DDL transaction: a slot cannot be created in a
	// transaction that has written.
	if !info.exists {
		sl, err := renderLogical("slot", n)
		if err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, sl, pgx.QueryExecModeSimpleProtocol); err != nil {
			return fmt.Errorf("cdc: creating replication slot %q: %w (the role needs REPLICATION, wal_level must be logical; see DetectLogical)", slot, err)
		}
	}
	return nil
}

// CheckLogicalInstalled returns an error that says to run "rowcast setup"
// when publication is missing, does not publish table, or was made by an
// older rowcast (it lacks rowcast.outbox: that version carried events from
// SQL as logical decoding messages, which any role can forge, and rowcast
// now ignores them). table is schema-qualified. It also returns the other
// tables the publication holds (an admin may have added them); their
// changes are dropped, but the operator should know. Errors that only
// setup can fix are *fatalError.
func CheckLogicalInstalled(ctx context.Context, q Querier, table, publication string) (others []string, err error) {
	schema, name, err := SplitTableName(table)
	if err != nil {
		return nil, err
	}
	info, err := readPublication(ctx, q, publication)
	if err != nil {
		return nil, err
	}
	if others, err = info.check(schema, name, publication); err != nil {
		return nil, err
	}
	if err := checkReplicaIdentity(ctx, q, schema, name); err != nil {
		return nil, err
	}
	return others, checkBroadcastFunction(ctx, q, true)
}

// checkReplicaIdentity refuses a table that is not REPLICA IDENTITY FULL
// (setup sets it; an ALTER TABLE may have changed it since). Without it
// updates and deletes carry no old row: the stats could only be kept by
// recounting, and a client would not be told exactly that a row left its
// filter or visibility. Refusing at start says so once, with the fix;
// a change while rowcast runs is handled (safely, at a cost) and counted
// in rowcast_changes_without_old_row_total.
func checkReplicaIdentity(ctx context.Context, q Querier, schema, name string) error {
	var ident string
	err := q.QueryRow(ctx, `SELECT c.relreplident::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2`, schema, name).Scan(&ident)
	if err != nil {
		return fmt.Errorf("cdc: reading the replica identity of %s.%s: %w", schema, name, err)
	}
	if ident == "f" {
		return nil
	}
	kind := map[string]string{"d": "DEFAULT", "i": "USING INDEX", "n": "NOTHING"}[ident]
	table := pgx.Identifier{schema, name}.Sanitize()
	return fatalf("cdc: table %s is REPLICA IDENTITY %s, not FULL, so its updates and deletes would reach rowcast without their old values (stats could only be kept by recounting, and clients would not be told exactly that a row left their filter or visibility): run `rowcast setup`, which sets it, or ALTER TABLE %s REPLICA IDENTITY FULL",
		table, kind, table)
}

func (p publicationInfo) check(schema, name, publication string) (others []string, err error) {
	if !p.exists {
		return nil, fatalf("cdc: publication %q does not exist: run `rowcast setup` (logical mode) first, or use ROWCAST_CAPTURE=notify", publication)
	}
	if s, t, ok := parsePublicationComment(p.comment); ok && (s != schema || t != name) {
		return nil, fatalf("cdc: publication %q was set up for %s.%s, not %s.%s: each rowcast needs its own publication and slot; set ROWCAST_PUBLICATION and ROWCAST_SLOT and run `rowcast setup`",
			publication, s, t, schema, name)
	}
	if !p.has(schema, name) {
		return nil, fatalf("cdc: publication %q does not publish %s.%s: run `rowcast setup` first", publication, schema, name)
	}
	if !p.has(outboxSchema, outboxTable) {
		return nil, fatalf("cdc: publication %q was set up by an older rowcast (it does not publish rowcast.outbox, which now carries the events of rowcast.broadcast()): run `rowcast setup` to bring it up to date, then grant EXECUTE on rowcast.broadcast(text, jsonb) to the roles that send events", publication)
	}
	if o := p.others(schema, name); len(o) > 0 {
		return o, nil
	}
	return nil, nil
}

// TeardownLogical drops the replication slot and undoes what SetupLogical
// did to the publication, and no more: a publication that holds only the
// table and rowcast.outbox is dropped; one that also holds other tables
// (an admin's, or one an older rowcast added the table to) keeps them and
// loses only the table and the outbox, and kept says so. The slot must not
// be in use: stop rowcast first. Dropping the slot releases the WAL it
// kept. table is schema-qualified.
func TeardownLogical(ctx context.Context, conn *pgx.Conn, table, publication, slot string) (kept string, err error) {
	n, err := newLogicalNames(table, publication, slot)
	if err != nil {
		return "", err
	}
	var pid *int32
	err = conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("cdc: reading replication slot %q: %w", slot, err)
	}
	if pid != nil {
		return "", fmt.Errorf("cdc: replication slot %q is in use by PID %d: stop rowcast first, then run teardown again", slot, *pid)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, slot); err != nil {
		return "", fmt.Errorf("cdc: dropping replication slot %q: %w", slot, err)
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		info, err := readPublication(ctx, tx, publication)
		if err != nil || !info.exists {
			return err
		}
		others := info.others(n.schema, n.name)
		if len(others) == 0 {
			if _, err := tx.Exec(ctx, "DROP PUBLICATION "+n.Publication); err != nil {
				return fmt.Errorf("cdc: dropping publication %q: %w", publication, err)
			}
			return nil
		}
		kept = fmt.Sprintf("publication %q kept: it also publishes %s", publication, strings.Join(others, ", "))
		if info.allTables {
			return nil
		}
		var removed []string
		for _, t := range [][2]string{{n.schema, n.name}, {outboxSchema, outboxTable}} {
			if !info.has(t[0], t[1]) {
				continue
			}
			ident := pgx.Identifier{t[0], t[1]}.Sanitize()
			if _, err := tx.Exec(ctx, "ALTER PUBLICATION "+n.Publication+" DROP TABLE "+ident); err != nil {
				return fmt.Errorf("cdc: removing %s from publication %q: %w", ident, publication, err)
			}
			removed = append(removed, ident)
		}
		if len(removed) > 0 {
			kept += "; removed " + strings.Join(removed, " and ") + " from it"
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return kept, nil
}
