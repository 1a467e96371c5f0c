package broadcast

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"

	"rowcast"
)

// Filter restricts a client to rows whose columns hold one of the listed
// values (equality and lists; all columns must match). A nil Filter
// matches every row.
type Filter map[string][]string

// reservedParams are query parameters that are not filters.
var reservedParams = map[string]bool{
	"lastEventId": true, "access_token": true, "limit": true,
	// Engine.IO's own parameters.
	"EIO": true, "transport": true, "sid": true, "t": true, "b64": true,
}

// Limits on what one client may ask for: a filter is matched against every
// event for every session, under the hub's lock, so its size is bounded
// and it is matched through sets (see filterSet).
const (
	// MaxFilterColumns is the most columns one filter may name.
	MaxFilterColumns = 16
	// MaxFilterValues is the most values one column of a filter may list.
	MaxFilterValues = 100
	// MaxFilterBytes bounds a filter's text: the query parameters, or the
	// JSON object of a subscribe message.
	MaxFilterBytes = 4096
)

// FilterError is a filter the operator does not allow or cannot parse.
type FilterError struct{ msg string }

func (e *FilterError) Error() string { return e.msg }

func unknownColumn(col string, allowed []string) error {
	return &FilterError{fmt.Sprintf("unknown filter column %q: filters may use %s (ROWCAST_FILTER_COLUMNS)", col, strings.Join(allowed, ", "))}
}

func allowedColumn(col string, allowed []string) bool {
	for _, a := range allowed {
		if a == col {
			return true
		}
	}
	return false
}

// ParseFilterQuery reads filters from query parameters, e.g.
// ?status=open,in_progress&priority=high. Parameters that are not filters
// (lastEventId, access_token, Engine.IO's) are ignored.
func ParseFilterQuery(q url.Values, allowed []string) (Filter, error) {
	var f Filter
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	size := 0
	for _, col := range keys {
		if reservedParams[col] {
			continue
		}
		if !allowedColumn(col, allowed) {
			return nil, unknownColumn(col, allowed)
		}
		var vals []string
		for _, v := range q[col] {
			if size += len(col) + len(v) + 2; size > MaxFilterBytes {
				return nil, tooLarge()
			}
			for _, p := range strings.Split(v, ",") {
				vals = append(vals, strings.TrimSpace(p))
			}
		}
		if f == nil {
			f = Filter{}
		}
		f[col] = vals
	}
	return f, f.check()
}

func tooLarge() error {
	return &FilterError{fmt.Sprintf("filter is over %d bytes", MaxFilterBytes)}
}

// check applies the limits on columns and values.
func (f Filter) check() error {
	if len(f) > MaxFilterColumns {
		return &FilterError{fmt.Sprintf("filter names %d columns; at most %d are allowed", len(f), MaxFilterColumns)}
	}
	for col, vals := range f {
		if len(vals) > MaxFilterValues {
			return &FilterError{fmt.Sprintf("filter %q lists %d values; at most %d are allowed", col, len(vals), MaxFilterValues)}
		}
	}
	return nil
}

// ParseFilterJSON reads a filter object: {"status": ["open", "in_progress"],
// "priority": "high"}. null or {} clears the filter.
func ParseFilterJSON(raw json.RawMessage, allowed []string) (Filter, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	if len(raw) > MaxFilterBytes {
		return nil, tooLarge()
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, &FilterError{"filter must be an object of column: value or column: [values]"}
	}
	var f Filter
	for col, v := range obj {
		if !allowedColumn(col, allowed) {
			return nil, unknownColumn(col, allowed)
		}
		var vals []string
		var one any
		if err := json.Unmarshal(v, &one); err != nil {
			return nil, &FilterError{fmt.Sprintf("filter %q: %v", col, err)}
		}
		switch x := one.(type) {
		case []any:
			for _, e := range x {
				vals = append(vals, scalarText(e))
			}
		default:
			vals = append(vals, scalarText(x))
		}
		if f == nil {
			f = Filter{}
		}
		f[col] = vals
	}
	return f, f.check()
}

func scalarText(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

// Matches reports whether the row passes the filter.
func (f Filter) Matches(row rowcast.Row) bool { return f.compile().matches(row) }

// filterSet is a Filter compiled for matching: one set lookup per column,
// whatever the number of values. Sessions hold their filter in this form.
type filterSet map[string]map[string]struct{}

func (f Filter) compile() filterSet {
	if f == nil {
		return nil
	}
	fs := make(filterSet, len(f))
	for col, vals := range f {
		set := make(map[string]struct{}, len(vals))
		for _, v := range vals {
			set[v] = struct{}{}
		}
		fs[col] = set
	}
	return fs
}

func (fs filterSet) matches(row rowcast.Row) bool {
	if row == nil {
		return false
	}
	for col, set := range fs {
		v, _ := row.Text(col)
		if _, ok := set[v]; !ok {
			return false
		}
	}
	return true
}

// Conditions lists the filter as column → values, for SQL.
func (f Filter) Conditions() []rowcast.Condition {
	out := make([]rowcast.Condition, 0, len(f))
	for col, vals := range f {
		out = append(out, rowcast.Condition{Column: col, Values: vals, EmptyMatchesNull: true})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Column < out[j].Column })
	return out
}
