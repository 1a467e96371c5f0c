package broadcast

import (
	"fmt"
	"strings"

	"rowcast"
)

// DefaultVisibility is the rule for the helpdesk tickets table: agents and
// admins see every ticket, everyone else only the tickets they requested.
const DefaultVisibility = "claim:role in agent,admin => all; requester_email = claim:email"

// Visibility maps a user's JWT claims to the rows they may see. It is a list
// of rules separated by ";", tried in order; the first that applies decides:
//
//	[claim:NAME = VALUE =>] SCOPE
//	[claim:NAME in V1,V2,... =>] SCOPE
//	SCOPE is: all | none | COLUMN = claim:NAME
//
// A user no rule applies to sees nothing. "all" alone shows every row to
// every authenticated user.
type Visibility struct {
	rules []visRule
	text  string
}

type visRule struct {
	claim  string   // condition's claim; "" = always
	values []string // condition holds if the claim is one of these
	scope  Scope
}

// Scope is what one user may see: everything, nothing, or the rows whose
// Column equals Value.
type Scope struct {
	All, None     bool
	Column, Value string
}

// Visible reports whether the user may see the row.
func (s Scope) Visible(row rowcast.Row) bool {
	switch {
	case s.All:
		return true
	case s.None || row == nil:
		return false
	}
	v, ok := row.Text(s.Column)
	return ok && v == s.Value
}

// ParseVisibility parses the rule text.
func ParseVisibility(text string) (*Visibility, error) {
	v := &Visibility{text: strings.TrimSpace(text)}
	for _, part := range strings.Split(text, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		var r visRule
		scopeText := part
		if cond, scope, ok := strings.Cut(part, "=>"); ok {
			scopeText = strings.TrimSpace(scope)
			cond = strings.TrimSpace(cond)
			var name, vals string
			if n, rest, ok := strings.Cut(cond, " in "); ok {
				name, vals = strings.TrimSpace(n), rest
			} else if n, rest, ok := strings.Cut(cond, "="); ok {
				name, vals = strings.TrimSpace(n), rest
			} else {
				return nil, fmt.Errorf("visibility rule %q: the condition must be claim:NAME = VALUE or claim:NAME in V1,V2", part)
			}
			claim, ok := strings.CutPrefix(name, "claim:")
			if !ok || claim == "" {
				return nil, fmt.Errorf("visibility rule %q: a condition starts with claim:NAME", part)
			}
			r.claim = claim
			for _, x := range strings.Split(vals, ",") {
				if x = strings.TrimSpace(x); x != "" {
					r.values = append(r.values, x)
				}
			}
			if len(r.values) == 0 {
				return nil, fmt.Errorf("visibility rule %q: no values after the claim", part)
			}
		}
		switch scopeText {
		case "all":
			r.scope.All = true
		case "none":
			r.scope.None = true
		default:
			col, claim, ok := strings.Cut(scopeText, "=")
			col, claim = strings.TrimSpace(col), strings.TrimSpace(claim)
			name, isClaim := strings.CutPrefix(claim, "claim:")
			if !ok || col == "" || !isClaim || name == "" {
				return nil, fmt.Errorf("visibility rule %q: the scope must be all, none, or COLUMN = claim:NAME", part)
			}
			r.scope.Column, r.scope.Value = col, name // Value holds the claim name until resolved
		}
		v.rules = append(v.rules, r)
	}
	if len(v.rules) == 0 {
		return nil, fmt.Errorf("visibility rule %q is empty: use \"all\" to let every user see every row", text)
	}
	return v, nil
}

// Columns lists the row columns the rules compare.
func (v *Visibility) Columns() []string {
	var out []string
	for _, r := range v.rules {
		if r.scope.Column != "" && !allowedColumn(r.scope.Column, out) {
			out = append(out, r.scope.Column)
		}
	}
	return out
}

// String returns the rule text.
func (v *Visibility) String() string { return v.text }

// ScopeFor applies the rules to a user's claims. A nil Visibility shows all.
func (v *Visibility) ScopeFor(id Identity) Scope {
	if v == nil {
		return Scope{All: true}
	}
	for _, r := range v.rules {
		if r.claim != "" && !claimIn(id.Claims[r.claim], r.values) {
			continue
		}
		s := r.scope
		if s.Column != "" {
			val, ok := claimText(id.Claims[s.Value])
			if !ok || val == "" {
				// The token lacks the claim the rule needs: nothing.
				return Scope{None: true}
			}
			s.Value = val
		}
		return s
	}
	return Scope{None: true}
}

func claimText(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case float64, bool:
		return scalarText(x), true
	}
	return "", false
}

// claimIn: a string claim equal to one of the values, or an array claim
// holding one of them (e.g. roles: ["agent"]).
func claimIn(v any, values []string) bool {
	if arr, ok := v.([]any); ok {
		for _, e := range arr {
			if claimIn(e, values) {
				return true
			}
		}
		return false
	}
	s, ok := claimText(v)
	if !ok {
		return false
	}
	for _, want := range values {
		if s == want {
			return true
		}
	}
	return false
}
