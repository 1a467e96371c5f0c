package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/jackc/pgx/v5"

	"rowcast/cdc"
)

func connect(ctx context.Context, url string) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	cc.RuntimeParams["application_name"] = "rowcast"
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w (check DATABASE_URL and that the server is up)", err)
	}
	return conn, nil
}

func runSetup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	s := newSettings("setup", stderr, os.LookupEnv)
	print := s.fs.Bool("print", false, "write the SQL to stdout instead of applying it")
	cfg, err := s.parse(args, requireDatabase)
	if err != nil {
		return err
	}
	conn, err := connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	table, err := cdc.LookupTable(ctx, conn, cfg.Table)
	if err != nil {
		return err
	}
	res, err := resolve(cfg, table)
	if err != nil {
		return err
	}
	if *print {
		mode, _, err := chooseCapture(ctx, conn, cfg, nil)
		if err != nil {
			return err
		}
		return printSetup(cfg, table, res, mode, stdout)
	}
	summary, err := install(ctx, conn, cfg, table, res)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "rowcast:", summary)
	fmt.Fprintln(stdout, "rowcast: only the roles you grant it to may call rowcast.broadcast(): GRANT USAGE ON SCHEMA rowcast TO app_writer; GRANT EXECUTE ON FUNCTION rowcast.broadcast(text, jsonb) TO app_writer;")
	return nil
}

// printSetup writes the SQL that install would run for mode.
func printSetup(cfg Config, table cdc.Table, res resolved, mode string, stdout io.Writer) error {
	if mode == "logical" {
		fn, err := cdc.BroadcastFunctionSQL(true, cfg.Channel, res.prefix)
		if err != nil {
			return err
		}
		fmt.Fprint(stdout, cdc.LogicalSetupSQL(table.String(), cfg.Publication, cfg.Slot))
		fmt.Fprintln(stdout, "BEGIN;")
		fmt.Fprint(stdout, fn)
		fmt.Fprintln(stdout, "COMMIT;")
		return nil
	}
	text, err := cdc.NotifySetupSQL(table, cfg.Channel, res.tracked)
	if err != nil {
		return err
	}
	fn, err := cdc.BroadcastFunctionSQL(false, cfg.Channel, res.prefix)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "BEGIN;")
	fmt.Fprint(stdout, text)
	fmt.Fprint(stdout, fn)
	fmt.Fprintln(stdout, "COMMIT;")
	return nil
}

// install installs capture on table (in the mode chooseCapture picks, as
// "rowcast setup" does) and rowcast.broadcast. It is idempotent and returns
// a one-line summary of what it installed and why.
func install(ctx context.Context, conn *pgx.Conn, cfg Config, table cdc.Table, res resolved) (string, error) {
	mode, why, err := chooseCapture(ctx, conn, cfg, nil)
	if err != nil {
		return "", err
	}
	if mode == "logical" {
		fn, err := cdc.BroadcastFunctionSQL(true, cfg.Channel, res.prefix)
		if err != nil {
			return "", err
		}
		if err := cdc.SetupLogical(ctx, conn, table.String(), cfg.Publication, cfg.Slot); err != nil {
			return "", err
		}
		if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, fn)
			return err
		}); err != nil {
			return "", fmt.Errorf("install rowcast.broadcast: %w", err)
		}
		return fmt.Sprintf("logical capture installed on %s (publication %s, slot %s; %s)",
			table, cfg.Publication, cfg.Slot, why), nil
	}
	if err := cdc.SetupNotify(ctx, conn, table, cfg.Channel, res.tracked, res.prefix); err != nil {
		return "", err
	}
	return fmt.Sprintf("NOTIFY capture installed on %s (channel %s; %s)", table, cfg.Channel, why), nil
}

func runTeardown(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	s := newSettings("teardown", stderr, os.LookupEnv)
	yes := s.fs.Bool("yes", false, "confirm: drop the replication slot, publication, trigger and the rowcast schema (a publication or schema that others still use is kept)")
	if err := s.parseFlags(args); err != nil {
		return err
	}
	if !*yes {
		return errors.New("teardown drops rowcast's replication slot, publication, trigger and schema; run it again with --yes to confirm")
	}
	cfg, err := s.config(requireDatabase)
	if err != nil {
		return err
	}
	conn, err := connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	table, err := cdc.LookupTable(ctx, conn, cfg.Table)
	if errors.Is(err, cdc.ErrNoTable) {
		table.Schema, table.Name, err = cdc.SplitTableName(cfg.Table)
	}
	if err != nil {
		return err
	}
	// Logical first: the schema stays while a publication (another
	// rowcast's) still publishes rowcast.outbox.
	keptPub, err := cdc.TeardownLogical(ctx, conn, table.String(), cfg.Publication, cfg.Slot)
	if err != nil {
		return err
	}
	keptSchema, err := cdc.TeardownNotify(ctx, conn, table)
	if err != nil {
		return err
	}
	for _, kept := range []string{keptPub, keptSchema} {
		if kept != "" {
			fmt.Fprintln(stdout, "rowcast:", kept)
		}
	}
	fmt.Fprintln(stdout, "rowcast: removed")
	return nil
}
