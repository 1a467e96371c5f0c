package sql

import _ "embed"

// LogicalSetupTemplate is a text/template for the logical replication setup
// of one table, with templates "publication" and "slot" (see
// cdc.LogicalSetupSQL for its fields).
//
//go:embed logical_setup.sql
var LogicalSetupTemplate string
