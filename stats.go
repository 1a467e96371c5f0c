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
// snapshot. A 32-bit xid (as logical replication sends it) is widened as
// PostgreSQL compares xids: to the full xid within 2^31 before or after
// xmax. That holds across the wraparound in both directions, also for a
// snapshot taken in the first epoch and a change from the second; a 64-bit
// xid of the first epoch (notify mode) near xmax is widened to itself.
func (s XidSnapshot) Visible(xid uint64) bool {
	if xid>>32 == 0 {
		diff := int64(int32(uint32(xid) - uint32(s.Xmax)))
		wide := int64(s.Xmax) + diff
		if wide < 0 {
			return true // before the first xid there is: long committed
		}
		xid = uint64(wide)
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
