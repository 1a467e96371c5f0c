package main

import (
	"context"
	"errors"
	"fmt"
	"io"

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
	s, raw := newSettings("setup", stderr)
	print := s.fs.Bool("print", false, "write the SQL to stdout instead of applying it")
	if err := s.fs.Parse(args); err != nil {
		return err
	}
	cfg, err := raw.validate(false)
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
	if *print {
		text, err := cdc.NotifySetupSQL(table, cfg.Channel, cfg.StatsColumns)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, "BEGIN;")
		fmt.Fprint(stdout, text)
		fmt.Fprintln(stdout, "COMMIT;")
		return nil
	}
	if err := cdc.SetupNotify(ctx, conn, table, cfg.Channel, cfg.StatsColumns); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rowcast: NOTIFY capture installed on %s (channel %s)\n", table, cfg.Channel)
	return nil
}

func runTeardown(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	s, raw := newSettings("teardown", stderr)
	yes := s.fs.Bool("yes", false, "confirm: drop the trigger and the rowcast schema")
	if err := s.fs.Parse(args); err != nil {
		return err
	}
	if !*yes {
		return errors.New("teardown removes rowcast's trigger and schema; run it again with --yes to confirm")
	}
	cfg, err := raw.validate(false)
	if err != nil {
		return err
	}
	conn, err := connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	table, err := cdc.LookupTable(ctx, conn, cfg.Table)
	if err != nil && !errors.Is(err, cdc.ErrNoTable) {
		return err
	}
	if err := cdc.TeardownNotify(ctx, conn, table); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "rowcast: removed")
	return nil
}
