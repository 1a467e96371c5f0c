package cdc

import (
	"context"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"
)

// plainIdentRE matches identifiers that need no quotes in SQL.
var plainIdentRE = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// DetectLogical reports whether logical replication capture can work on
// this server with this role. When it cannot, why says what to change, as
// a sentence for the operator; err is only for failed queries.
func DetectLogical(ctx context.Context, conn *pgx.Conn) (ok bool, why string, err error) {
	var (
		walLevel             string
		role                 string
		replication, super   bool
		maxSenders, maxSlots int
	)
	err = conn.QueryRow(ctx, `
		SELECT current_setting('wal_level'), r.rolname, r.rolreplication, r.rolsuper,
		       current_setting('max_wal_senders')::int, current_setting('max_replication_slots')::int
		FROM pg_roles r WHERE r.rolname = current_user`).
		Scan(&walLevel, &role, &replication, &super, &maxSenders, &maxSlots)
	if err != nil {
		return false, "", fmt.Errorf("cdc: checking logical replication support: %w", err)
	}
	const orNotify = ", or use ROWCAST_CAPTURE=notify"
	switch {
	case walLevel != "logical":
		return false, fmt.Sprintf("wal_level is %s; set wal_level=logical and restart PostgreSQL%s", walLevel, orNotify), nil
	case !replication && !super:
		ident := role
		if !plainIdentRE.MatchString(role) {
			ident = pgx.Identifier{role}.Sanitize()
		}
		return false, fmt.Sprintf("role %s lacks REPLICATION; ALTER ROLE %s REPLICATION%s", role, ident, orNotify), nil
	case maxSenders < 1:
		return false, "max_wal_senders is 0; set it to at least 1 and restart PostgreSQL" + orNotify, nil
	case maxSlots < 1:
		return false, "max_replication_slots is 0; set it to at least 1 and restart PostgreSQL" + orNotify, nil
	}
	return true, "", nil
}
