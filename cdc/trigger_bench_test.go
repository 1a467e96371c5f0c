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

// BenchmarkTriggerUpdate times UPDATEs of triggerRows tickets with rowcast's
// NOTIFY trigger, with a bare pg_notify(row_to_json(NEW)) trigger and with
// none, on the same table: the trigger's own cost, which the writers pay.
// "statement" updates every row in one statement (one transaction, one
// notification per row): the cost per row. "single" updates them one per
// transaction, as most writers do: the cost per transaction, which adds
// what PostgreSQL does once per transaction (PL/pgSQL prepares each
// expression of the function anew in every transaction).
func BenchmarkTriggerUpdate(b *testing.B) {
	const triggerRows = 1000
	tb := newTriggerBench(b, triggerRows)
	ctx, conn := tb.ctx, tb.conn
	exec := func(sql string) { b.Helper(); tb.exec(b, sql) }
	var pid int
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		b.Fatal(err)
	}
	update := func(b *testing.B, single bool) {
		exec(`VACUUM tickets`)
		var cpu time.Duration
		b.ResetTimer()
		for range b.N {
			cpu0 := procCPUTime(b, pid)
			if single {
				for id := 1; id <= triggerRows; id++ {
					if _, err := conn.Exec(ctx, `UPDATE tickets SET updated_at = now() WHERE id = $1`, id); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				exec(`UPDATE tickets SET updated_at = now(), status = CASE status WHEN 'open' THEN 'pending' ELSE 'open' END`)
			}
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
	for _, shape := range []string{"statement", "single"} {
		single := shape == "single"
		b.Run("none/"+shape, func(b *testing.B) { update(b, single) })
		b.Run("bare/"+shape, func(b *testing.B) {
			exec(`CREATE TRIGGER bare AFTER INSERT OR UPDATE OR DELETE ON tickets FOR EACH ROW EXECUTE FUNCTION bare_notify()`)
			defer exec(`DROP TRIGGER bare ON tickets`)
			update(b, single)
		})
		b.Run("rowcast/"+shape, func(b *testing.B) {
			defer tb.installRowcast(b)()
			update(b, single)
		})
	}
}

// triggerBench is the table both trigger benchmarks write to: the
// reference tickets, rowcast's NOTIFY capture not installed yet, and the
// bare pg_notify(row_to_json(NEW)) trigger's function (on channel
// "bare").
type triggerBench struct {
	ctx   context.Context
	url   string
	conn  *pgx.Conn
	table Table
}

func newTriggerBench(b *testing.B, rows int) *triggerBench {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	b.Cleanup(cancel)
	tb := &triggerBench{ctx: ctx, url: pgtest.ForTest(b)}
	conn, err := pgx.Connect(ctx, tb.url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close(context.Background()) })
	tb.conn = conn
	tb.exec(b, slotTicketsDDL)
	tb.exec(b, fmt.Sprintf(`INSERT INTO tickets (title, description, category, requester_email, assignee_email)
		SELECT 'Printer on the third floor jams ' || g, repeat('Long description with some detail. ', 10),
			'hardware', 'user' || g || '@example.com', 'agent@example.com' FROM generate_series(1, %d) g`, rows))
	if tb.table, err = LookupTable(ctx, conn, "public.tickets"); err != nil {
		b.Fatal(err)
	}
	tb.exec(b, `CREATE FUNCTION bare_notify() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN PERFORM pg_notify('bare', row_to_json(NEW)::text); RETURN NULL; END $$`)
	return tb
}

// installRowcast installs rowcast's NOTIFY capture of the table; the
// function returned removes it.
func (tb *triggerBench) installRowcast(b *testing.B) (remove func()) {
	if err := SetupNotify(tb.ctx, tb.conn, tb.table, "rowcast", []string{"priority", "status"}, "ticket"); err != nil {
		b.Fatal(err)
	}
	return func() {
		if _, err := TeardownNotify(tb.ctx, tb.conn, tb.table); err != nil {
			b.Fatal(err)
		}
	}
}

func (tb *triggerBench) exec(b *testing.B, sql string) {
	b.Helper()
	if _, err := tb.conn.Exec(tb.ctx, sql); err != nil {
		b.Fatalf("%s: %v", sql, err)
	}
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

// BenchmarkTriggerWriters runs single-row UPDATEs from 16 connections at
// once, as the bench's "cost to writers" scenario does, with rowcast's
// NOTIFY trigger and with the bare pg_notify(row_to_json(NEW)) trigger,
// while a LISTEN connection drains the notifications. Besides the time per
// transaction it reports what the writers' backends were doing, sampled
// from pg_stat_activity every 2 ms: the share of
// samples on the CPU ("cpu-%") and per wait event ("Lock:object-%" is the
// lock every NOTIFYing transaction takes at commit to queue its
// notifications in commit order), and the mean payload. Two variants
// take rowcast's trigger apart: without the payloads' numbering, and the
// bare trigger with payloads as large as rowcast's.
func BenchmarkTriggerWriters(b *testing.B) {
	const writers, rows = 16, 1600
	tb := newTriggerBench(b, rows)
	ctx, url, conn := tb.ctx, tb.url, tb.conn
	exec := func(sql string) { b.Helper(); tb.exec(b, sql) }
	connect := func(t testing.TB, app string) *pgx.Conn {
		t.Helper()
		cfg, err := pgx.ParseConfig(url)
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuntimeParams["application_name"] = app
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	var ws []*pgx.Conn
	for range writers {
		ws = append(ws, connect(b, "trigger writer"))
	}
	sampler := connect(b, "trigger sampler")

	// avgPayload is the mean NOTIFY payload of the last run per channel.
	avgPayload := map[string]int{}
	run := func(b *testing.B, channel string) {
		exec(`VACUUM tickets`)
		lctx, stopListen := context.WithCancel(ctx)
		listener := connect(b, "trigger listener")
		if _, err := listener.Exec(ctx, "LISTEN "+channel); err != nil {
			b.Fatal(err)
		}
		drained := make(chan struct{})
		var payloadBytes, payloads int
		go func() {
			defer close(drained)
			for {
				n, err := listener.WaitForNotification(lctx)
				if err != nil {
					return
				}
				payloadBytes += len(n.Payload)
				payloads++
			}
		}()
		defer func() {
			stopListen()
			<-drained
			if payloads > 0 {
				avgPayload[channel] = payloadBytes / payloads
				b.ReportMetric(float64(payloadBytes)/float64(payloads), "payload-bytes")
			}
		}()

		done := make(chan error, writers)
		b.ResetTimer()
		for w, c := range ws {
			go func() {
				// Each writer its own rows: no writer waits on another's
				// row lock.
				per := rows / writers
				for i := range (b.N + writers - 1) / writers {
					id := w*per + i%per + 1
					if _, err := c.Exec(ctx, `UPDATE tickets SET updated_at = now(), status = CASE status WHEN 'open' THEN 'pending' ELSE 'open' END WHERE id = $1`, id); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
		}
		// A sample every 2 ms: the sampler's own backend shares the
		// machine's cores with the writers.
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		samples := map[string]int{}
		total := 0
		for finished := 0; finished < writers; {
			select {
			case err := <-done:
				if err != nil {
					b.Fatal(err)
				}
				finished++
				continue
			case <-tick.C:
			}
			rs, err := sampler.Query(ctx, `SELECT coalesce(wait_event_type || ':' || wait_event, 'cpu') FROM pg_stat_activity
				WHERE application_name = 'trigger writer' AND state = 'active'`)
			if err != nil {
				b.Fatal(err)
			}
			events, err := pgx.CollectRows(rs, pgx.RowTo[string])
			if err != nil {
				b.Fatal(err)
			}
			for _, e := range events {
				samples[e]++
				total++
			}
		}
		b.StopTimer()
		if total == 0 {
			return
		}
		for e, n := range samples {
			if pct := 100 * float64(n) / float64(total); pct >= 1 {
				b.ReportMetric(pct, strings.ReplaceAll(e, " ", "")+"-%")
			}
		}
	}
	b.Run("bare", func(b *testing.B) {
		exec(`CREATE TRIGGER bare AFTER INSERT OR UPDATE OR DELETE ON tickets FOR EACH ROW EXECUTE FUNCTION bare_notify()`)
		defer exec(`DROP TRIGGER bare ON tickets`)
		run(b, "bare")
	})
	b.Run("rowcast", func(b *testing.B) {
		defer tb.installRowcast(b)()
		run(b, "rowcast")
	})
	// rowcast's trigger with every payload numbered 1: what numbering the
	// payloads (a transaction-local setting, read and set per row) costs
	// the writers. Not a trigger to install: PostgreSQL would deliver
	// identical payloads of one transaction once.
	b.Run("rowcast-unnumbered", func(b *testing.B) {
		defer tb.installRowcast(b)()
		var name, src string
		if err := conn.QueryRow(ctx, `SELECT proname, prosrc FROM pg_proc
			WHERE pronamespace = 'rowcast'::regnamespace AND prorettype = 'trigger'::regtype AND prosrc LIKE '%notify_seq%'`).Scan(&name, &src); err != nil {
			b.Fatal(err)
		}
		i, j := strings.Index(src, "seq := coalesce"), strings.Index(src, "IF TG_OP")
		if i < 0 || j < i {
			b.Fatalf("the trigger function no longer numbers its payloads as this benchmark expects:\n%s", src)
		}
		exec(`CREATE OR REPLACE FUNCTION rowcast.` + name + `() RETURNS trigger LANGUAGE plpgsql AS $rowcast$` +
			src[:i] + "seq := 1;\n    " + src[j:] + `$rowcast$`)
		run(b, "rowcast")
	})
	// The bare trigger with its payload padded to the size of rowcast's:
	// what the size alone costs (the commit-time lock is held while the
	// payloads are copied into the notification queue).
	b.Run("bare-padded", func(b *testing.B) {
		pad := avgPayload["rowcast"] - avgPayload["bare"]
		if pad <= 0 {
			b.Skip("needs the bare and rowcast runs first, rowcast's payload the larger")
		}
		exec(fmt.Sprintf(`CREATE FUNCTION bare_padded_notify() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN PERFORM pg_notify('bare_padded', row_to_json(NEW)::text || repeat(' ', %d)); RETURN NULL; END $$`, pad))
		exec(`CREATE TRIGGER bare_padded AFTER INSERT OR UPDATE OR DELETE ON tickets FOR EACH ROW EXECUTE FUNCTION bare_padded_notify()`)
		defer exec(`DROP TRIGGER bare_padded ON tickets; DROP FUNCTION bare_padded_notify()`)
		run(b, "bare_padded")
	})
}
