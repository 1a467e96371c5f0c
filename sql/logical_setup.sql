{{/*
Logical replication setup for rowcast, rendered by cdc.LogicalSetupSQL
(`rowcast setup --print`) and run by cdc.SetupLogical. Every statement is
idempotent. Run it with psql in autocommit mode (not with -1 or
--single-transaction): a replication slot cannot be created in a
transaction that has already written.

Template fields: .Table (the quoted schema-qualified table), .TableLit (the
same as a string literal), .SchemaLit and .NameLit (schema and table name
literals), .Publication (quoted identifier), .PublicationLit and .SlotLit
(string literals).
*/}}
{{- define "publication" -}}
-- Publish every kind of change of the table. An existing publication gets
-- the table added and all four kinds of change switched on.
DO $rowcast$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = {{.PublicationLit}}) THEN
        CREATE PUBLICATION {{.Publication}} FOR TABLE {{.Table}}
            WITH (publish = 'insert, update, delete, truncate');
    ELSE
        IF NOT EXISTS (
            SELECT 1 FROM pg_publication_tables
            WHERE pubname = {{.PublicationLit}} AND schemaname = {{.SchemaLit}} AND tablename = {{.NameLit}}
        ) THEN
            ALTER PUBLICATION {{.Publication}} ADD TABLE {{.Table}};
        END IF;
        IF NOT (SELECT pubinsert AND pubupdate AND pubdelete AND pubtruncate
                FROM pg_publication WHERE pubname = {{.PublicationLit}}) THEN
            ALTER PUBLICATION {{.Publication}} SET (publish = 'insert, update, delete, truncate');
        END IF;
    END IF;
END
$rowcast$;

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
