package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"rowcast/cdc"
)

// chooseCapture resolves ROWCAST_CAPTURE to "logical" or "notify" and says
// why. For auto, installed reports what setup left in the database, so that
// serve follows setup's choice.
func chooseCapture(ctx context.Context, conn *pgx.Conn, cfg Config, installed func() (logical, notify bool, err error)) (mode, why string, err error) {
	ok, whyNot, err := cdc.DetectLogical(ctx, conn)
	if err != nil {
		return "", "", err
	}
	switch cfg.Capture {
	case "notify":
		return "notify", "ROWCAST_CAPTURE=notify", nil
	case "logical":
		if !ok {
			return "", "", fmt.Errorf("%s is logical but this server cannot: %s",
				settingName(func(c *Config) any { return &c.Capture }), whyNot)
		}
		return "logical", "ROWCAST_CAPTURE=logical", nil
	}
	if installed != nil {
		logical, notify, err := installed()
		if err != nil {
			return "", "", err
		}
		switch {
		case logical && ok:
			return "logical", "auto: the publication is installed and the server and role allow logical replication", nil
		case notify:
			why := "auto: the NOTIFY trigger is installed"
			if !ok {
				why += " and logical replication is unavailable (" + whyNot + ")"
			}
			return "notify", why, nil
		}
	}
	if ok {
		return "logical", "auto: wal_level is logical and the role may replicate", nil
	}
	return "notify", "auto: logical replication is unavailable (" + whyNot + ")", nil
}

// installedCapture reports whether the publication and the trigger exist.
func installedCapture(ctx context.Context, conn *pgx.Conn, cfg Config, table cdc.Table) func() (bool, bool, error) {
	return func() (logical, notify bool, err error) {
		err = conn.QueryRow(ctx, `SELECT
			EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3),
			EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = $4::regclass AND tgname = 'rowcast_capture')`,
			cfg.Publication, table.Schema, table.Name, table.Ident()).Scan(&logical, &notify)
		if err != nil {
			return false, false, fmt.Errorf("check what rowcast setup installed: %w", err)
		}
		return logical, notify, nil
	}
}
