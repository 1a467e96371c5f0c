{{/*
Removes what logical_setup.sql created, rendered by cdc.LogicalTeardownSQL
and run by cdc.TeardownLogical. Stop rowcast first: an active slot cannot be
dropped. The table keeps REPLICA IDENTITY FULL, which is harmless.

Template fields: .Publication (quoted identifier), .SlotLit (string literal).
*/}}
SELECT pg_drop_replication_slot(slot_name)
FROM pg_replication_slots WHERE slot_name = {{.SlotLit}};

DROP PUBLICATION IF EXISTS {{.Publication}};
