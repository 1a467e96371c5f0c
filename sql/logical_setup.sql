{{/*
Logical replication setup for rowcast, rendered by cdc.LogicalSetupSQL
(`rowcast setup --print`) and run by cdc.SetupLogical. Every statement is
idempotent, and running it on an installation made by an older rowcast
brings it up to date. Run it with psql in autocommit mode (not with -1 or
--single-transaction): a replication slot cannot be created in a
transaction that has already written.

Template fields: .Table (the quoted schema-qualified table), .TableLit (the
same as a string literal), .SchemaLit and .NameLit (schema and table name
literals), .Publication (quoted identifier), .PublicationLit and .SlotLit
(string literals), .CommentLit (the publication's comment, which records
the table for rowcast serve), .HintLit (what to do about a shared
publication).
*/}}
{{- define "publication" -}}
-- rowcast.outbox carries the events of rowcast.broadcast() to logical
-- capture. Only rowcast.broadcast(), which runs as the owner of this table,
-- writes it: no other role has any privilege on it. Each row is deleted in
-- the transaction that inserted it, so the table stays empty; the event
-- lives only in the WAL, which the slot decodes in commit order.
CREATE SCHEMA IF NOT EXISTS rowcast;
CREATE TABLE IF NOT EXISTS rowcast.outbox (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event   text NOT NULL,
    payload jsonb NOT NULL
);
REVOKE ALL ON TABLE rowcast.outbox FROM PUBLIC;
COMMENT ON TABLE rowcast.outbox IS 'rowcast: events from rowcast.broadcast() on their way to logical capture; always empty';

-- The publication holds the table and rowcast.outbox and nothing else:
-- rowcast decodes everything it publishes, and a row of any other table
-- published through it would be another application's data. One that
-- holds other tables (shared with another application, or with another
-- rowcast) is refused rather than extended.
DO $rowcast$
DECLARE
    all_tables boolean;
    others     text;
BEGIN
    SELECT puballtables INTO all_tables FROM pg_publication WHERE pubname = {{.PublicationLit}};
    IF all_tables THEN
        others := 'every table (FOR ALL TABLES)';
    ELSE
        SELECT string_agg(format('%I.%I', schemaname, tablename), ', ' ORDER BY schemaname, tablename) INTO others
        FROM pg_publication_tables
        WHERE pubname = {{.PublicationLit}}
          AND (schemaname, tablename) NOT IN (({{.SchemaLit}}, {{.NameLit}}), ('rowcast', 'outbox'));
    END IF;
    IF others IS NOT NULL THEN
        RAISE EXCEPTION 'publication % also publishes %; rowcast needs a publication of its own', {{.PublicationLit}}, others
            USING HINT = {{.HintLit}};
    END IF;
    IF all_tables IS NULL THEN
        CREATE PUBLICATION {{.Publication}} FOR TABLE {{.Table}}, rowcast.outbox
            WITH (publish = 'insert, update, delete, truncate');
    ELSE
        IF NOT EXISTS (
            SELECT 1 FROM pg_publication_tables
            WHERE pubname = {{.PublicationLit}} AND schemaname = {{.SchemaLit}} AND tablename = {{.NameLit}}
        ) THEN
            ALTER PUBLICATION {{.Publication}} ADD TABLE {{.Table}};
        END IF;
        IF NOT EXISTS (
            SELECT 1 FROM pg_publication_tables
            WHERE pubname = {{.PublicationLit}} AND schemaname = 'rowcast' AND tablename = 'outbox'
        ) THEN
            ALTER PUBLICATION {{.Publication}} ADD TABLE rowcast.outbox;
        END IF;
        IF NOT (SELECT pubinsert AND pubupdate AND pubdelete AND pubtruncate
                FROM pg_publication WHERE pubname = {{.PublicationLit}}) THEN
            ALTER PUBLICATION {{.Publication}} SET (publish = 'insert, update, delete, truncate');
        END IF;
    END IF;
END
$rowcast$;
COMMENT ON PUBLICATION {{.Publication}} IS {{.CommentLit}};

-- Updates and deletes carry the whole old row, including large (TOASTed)
-- values that an update left unchanged. Skipped when already set, since
-- ALTER TABLE waits for an exclusive lock on a busy table.
DO $rowcast$
BEGIN
    IF (SELECT relreplident FROM pg_class WHERE oid = {{.TableLit}}::regclass) <> 'f' THEN
        ALTER TABLE {{.Table}} REPLICA IDENTITY FULL;
    END IF;
END
$rowcast$;
{{end -}}
{{- define "slot" -}}
-- The slot keeps the WAL that rowcast has not confirmed yet, so changes made
-- while rowcast is down are sent when it comes back.
SELECT pg_create_logical_replication_slot({{.SlotLit}}, 'pgoutput')
WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = {{.SlotLit}});
{{end -}}
