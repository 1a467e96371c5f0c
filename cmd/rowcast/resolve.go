package main

import (
	"fmt"
	"sort"
	"strings"

	"rowcast/broadcast"
	"rowcast/cdc"
)

// resolved is the configuration checked against the table: what setup
// installs and serve expects must agree, so both compute it here.
type resolved struct {
	prefix        string
	visibility    *broadcast.Visibility
	filterColumns []string
	// tracked are the columns whose old values updates and deletes must
	// carry: stats, filter and visibility columns.
	tracked []string
}

func resolve(cfg Config, table cdc.Table) (resolved, error) {
	var r resolved
	r.prefix = cfg.EventPrefix
	if r.prefix == "" {
		r.prefix = broadcast.PrefixForTable(table.Name)
	}
	for _, col := range cfg.StatsColumns {
		if !table.Has(col) {
			return r, notAColumn(func(c *Config) any { return &c.StatsColumns }, col, table)
		}
	}
	for _, col := range cfg.FilterColumns {
		switch {
		case table.Has(col):
			r.filterColumns = append(r.filterColumns, col)
		// The default names the reference table's columns and may be
		// used on any table, but a column the operator named (by flag or
		// variable alike) that is missing is a typo to report.
		case cfg.FilterColumnsSet:
			return r, notAColumn(func(c *Config) any { return &c.FilterColumns }, col, table)
		}
	}
	rule := cfg.Visibility
	if rule == "" {
		rule = "all"
		if table.Has("requester_email") {
			rule = broadcast.DefaultVisibility
		}
	}
	var err error
	visibility := func(c *Config) any { return &c.Visibility }
	if r.visibility, err = broadcast.ParseVisibility(rule); err != nil {
		return r, fmt.Errorf("%s: %w", settingName(visibility), err)
	}
	for _, col := range r.visibility.Columns() {
		if !table.Has(col) {
			return r, notAColumn(visibility, col, table)
		}
	}
	seen := map[string]bool{}
	for _, list := range [][]string{cfg.StatsColumns, r.filterColumns, r.visibility.Columns()} {
		for _, c := range list {
			if !seen[c] {
				seen[c] = true
				r.tracked = append(r.tracked, c)
			}
		}
	}
	sort.Strings(r.tracked)
	return r, nil
}

// notAColumn is the error for a setting that names a column the table
// lacks; it lists the columns there are, so the fix is at hand.
func notAColumn(field func(*Config) any, column string, table cdc.Table) error {
	return fmt.Errorf("%s: %q is not a column of %s; its columns are %s",
		settingName(field), column, table, strings.Join(table.Columns, ", "))
}
