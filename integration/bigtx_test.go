package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"rowcast/integration/harness"
)

// TestLargeTransaction: one UPDATE of 100,000 tickets streams through
// logical capture without buffering the transaction, every change reaches
// the client, and the stats stay exact.
func TestLargeTransaction(t *testing.T) {
	// Under the race detector everything runs about ten times slower: the
	// race run uses 20,000 rows, and "make test" runs this test again at
	// full size without it.
	rows := 100000
	if raceEnabled {
		rows = 20000
	}
	rows = envInt("ROWCAST_TEST_BIG_TX_ROWS", rows)
	// The client's queue holds every event of the test: a client that must
	// keep up with a 100,000-row burst fails on a busy machine, and that is
	// not what this test is about (slow consumers have their own tests).
	db, s := startMode(t, "logical", fmt.Sprintf("ROWCAST_SEND_QUEUE=%d", rows+1000), "ROWCAST_LOG_LEVEL=warn")
	conn := connectDB(t, db)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, `INSERT INTO tickets (title, status, priority)
		SELECT 'bulk ' || g, 'open', (ARRAY['low','medium','high','urgent'])[1 + g % 4] FROM generate_series(1, $1) g`, rows); err != nil {
		t.Fatal(err)
	}
	c := dial(t, s, "")
	// The client counts frames without decoding them, to keep up.
	var updates int
	var lastStats json.RawMessage
	countUntil := func(want int, deadline time.Time) {
		for updates < want {
			select {
			case m, ok := <-c.msgs:
				if !ok {
					t.Fatalf("closed after %d updates: %v", updates, <-c.closed)
				}
				switch m.Event {
				case "ticket:updated":
					updates++
				case "stats:updated":
					lastStats = m.Data
				}
			case <-time.After(time.Until(deadline)):
				t.Fatalf("%d of %d updates arrived", updates, want)
			}
		}
	}
	start := time.Now()
	if _, err := conn.Exec(ctx, `UPDATE tickets SET status = CASE WHEN id % 3 = 0 THEN 'closed' ELSE 'in_progress' END`); err != nil {
		t.Fatal(err)
	}
	countUntil(rows, time.Now().Add(10*time.Minute))
	elapsed := time.Since(start)
	want := groupBy(t, db)
	deadline := time.After(2 * time.Minute)
	for {
		var got struct {
			Stats map[string]any `json:"stats"`
		}
		json.Unmarshal(lastStats, &got)
		if reflect.DeepEqual(got.Stats, want) {
			break
		}
		select {
		case m := <-c.msgs:
			if m.Event == "stats:updated" {
				lastStats = m.Data
			}
		case <-deadline:
			t.Fatalf("stats %s, want %v", lastStats, want)
		}
	}
	hwm := peakRSS(t, s.rc.PID())
	t.Logf("%d-row UPDATE delivered in %v; rowcast peak RSS %d MiB (race detector: %v)", rows, elapsed.Round(time.Millisecond), hwm>>20, raceEnabled)
	// Bounded memory: capture hands the transaction on in batches, the
	// window holds 10,000 events, and only a client that falls behind
	// holds more (at most every event once, shared with nobody else).
	limit := int64(400 << 20)
	if raceEnabled {
		limit = 1200 << 20 // the race detector multiplies memory
	}
	if hwm > limit {
		t.Errorf("rowcast peak RSS %d MiB, over %d MiB", hwm>>20, limit>>20)
	}
}

// peakRSS reads a process's peak resident set (VmHWM) in bytes.
func peakRSS(t testing.TB, pid int) int64 {
	n, err := harness.StatusBytes(pid, "VmHWM")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	return n
}
