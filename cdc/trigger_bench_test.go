package cdc

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"rowcast/integration/pgcluster/pgtest"
)

// BenchmarkTriggerUpdate times one UPDATE of triggerRows tickets (one
// transaction, one notification per row) with rowcast's NOTIFY trigger and
// with a bare pg_notify(row_to_json(NEW)) trigger, on the same table: the
// trigger's own cost per row, which the writers pay.
func BenchmarkTriggerUpdate(b *testing.B) {
	const triggerRows = 1000
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgtest.ForTest(b))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	exec := func(sql string) {
		b.Helper()
		if _, err := conn.Exec(ctx, sql); err != nil {
			b.Fatalf("%s: %v", sql, err)
		}
	}
	exec(slotTicketsDDL)
	exec(`INSERT INTO tickets (title, description, category, requester_email, assignee_email)
		SELECT 'Printer on the third floor jams ' || g, repeat('Long description with some detail. ', 10),
			'hardware', 'user' || g || '@example.com', 'agent@example.com' FROM generate_series(1, 1000) g`)
	table, err := LookupTable(ctx, conn, "public.tickets")
	if err != nil {
		b.Fatal(err)
	}
	exec(`CREATE FUNCTION bare_notify() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN PERFORM pg_notify('bare', row_to_json(NEW)::text); RETURN NULL; END $$`)
	var pid int
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		b.Fatal(err)
	}
	update := func(b *testing.B) {
		exec(`VACUUM tickets`)
		var cpu time.Duration
		b.ResetTimer()
		for range b.N {
			cpu0 := procCPUTime(b, pid)
			exec(`UPDATE tickets SET updated_at = now(), status = CASE status WHEN 'open' THEN 'pending' ELSE 'open' END`)
			cpu += procCPUTime(b, pid) - cpu0
			// Every round starts from the same table, not one that
			// bloats as the benchmark goes on.
			b.StopTimer()
			exec(`VACUUM tickets`)
			b.StartTimer()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*triggerRows), "ns/row")
		// The backend's own CPU (the statement, the trigger, the commit),
		// which waiting for a busy machine does not inflate.
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*triggerRows), "backend-cpu-ns/row")
	}
	b.Run("bare", func(b *testing.B) {
		exec(`CREATE TRIGGER bare AFTER INSERT OR UPDATE OR DELETE ON tickets FOR EACH ROW EXECUTE FUNCTION bare_notify()`)
		defer exec(`DROP TRIGGER bare ON tickets`)
		update(b)
	})
	b.Run("rowcast", func(b *testing.B) {
		if err := SetupNotify(ctx, conn, table, "rowcast", []string{"priority", "status"}, "ticket"); err != nil {
			b.Fatal(err)
		}
		defer func() {
			if _, err := TeardownNotify(ctx, conn, table); err != nil {
				b.Fatal(err)
			}
		}()
		update(b)
	})
}

// procCPUTime is a process's user and system CPU time, from /proc (the
// server runs on this machine). Its resolution is the clock tick (10 ms),
// which a round of triggerRows rows spans many times.
func procCPUTime(b *testing.B, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Skipf("the server's CPU time is not readable here: %v", err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
