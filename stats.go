package rowcast

import "context"

// Counts is the number of rows per value of each stats column, plus the total.
type Counts struct {
	Total int64
	// By maps a stats column to value → count. A NULL value counts under "".
	By map[string]map[string]int64
}

// Clone returns a deep copy.
func (c Counts) Clone() Counts {
	out := Counts{Total: c.Total, By: make(map[string]map[string]int64, len(c.By))}
	for col, m := range c.By {
		cp := make(map[string]int64, len(m))
		for k, v := range m {
			cp[k] = v
		}
		out.By[col] = cp
	}
	return out
}

// XidSnapshot is a PostgreSQL transaction snapshot (pg_current_snapshot()):
// it tells which transactions a query saw. Counts taken under a snapshot
// already include every change of the transactions visible in it, so a
// consumer applies to those counts only changes whose Xid is not Visible.
// This makes the counts exact even while writers are busy during the count.
type XidSnapshot struct {
	Xmin, Xmax uint64
	Xip        []uint64
}

// Visible reports whether the committed transaction xid was visible to the
// snapshot. A 32-bit xid (as logical replication sends it) is widened with
// the snapshot's epoch.
func (s XidSnapshot) Visible(xid uint64) bool {
	if xid>>32 == 0 && s.Xmax>>32 != 0 {
		// As PostgreSQL compares xids: within 2^31 before or after xmax.
		diff := int32(uint32(xid) - uint32(s.Xmax))
		xid = uint64(int64(s.Xmax) + int64(diff))
	}
	if xid < s.Xmin {
		return true
	}
	if xid >= s.Xmax {
		return false
	}
	for _, x := range s.Xip {
		if x == xid {
			return false
		}
	}
	return true
}

// CountsLoader counts rows by the stats columns under a snapshot.
type CountsLoader func(ctx context.Context) (Counts, XidSnapshot, error)
