package main

import (
	"fmt"
	"sort"

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
	for _, c := range cfg.StatsColumns {
		if !table.Has(c) {
			return r, fmt.Errorf("ROWCAST_STATS_COLUMNS: %q is not a column of %s", c, table)
		}
	}
	for _, c := range cfg.FilterColumns {
		switch {
		case table.Has(c):
			r.filterColumns = append(r.filterColumns, c)
		case cfg.FilterColumnsSet:
			return r, fmt.Errorf("ROWCAST_FILTER_COLUMNS: %q is not a column of %s", c, table)
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
	if r.visibility, err = broadcast.ParseVisibility(rule); err != nil {
		return r, fmt.Errorf("ROWCAST_VISIBILITY: %w", err)
	}
	for _, c := range r.visibility.Columns() {
		if !table.Has(c) {
			return r, fmt.Errorf("ROWCAST_VISIBILITY: %q is not a column of %s", c, table)
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
