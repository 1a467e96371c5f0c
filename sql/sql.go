// Package sql holds the SQL that rowcast installs in the database, embedded
// in the binary so that "rowcast setup" and "rowcast setup --print" always
// agree with the running code.
package sql

import (
	_ "embed"
)

// Tickets creates the reference helpdesk table used by tests and the demo.
//
//go:embed tickets.sql
var Tickets string

// NotifySetupTemplate is a text/template for the NOTIFY trigger of one table
// (see cdc.NotifySetupSQL for its fields).
//
//go:embed notify_setup.sql.tmpl
var NotifySetupTemplate string

// BroadcastTemplate is a text/template for rowcast.broadcast() (see
// cdc.BroadcastFunctionSQL).
//
//go:embed broadcast.sql.tmpl
var BroadcastTemplate string
