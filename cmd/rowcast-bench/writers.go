package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Scenario 5: cost to writers. pgbench single-row INSERT and UPDATE
// transactions against tickets, with no capture, with rowcast's NOTIFY
// trigger (rowcast running and listening), with logical capture
// (publication, slot, REPLICA IDENTITY FULL, rowcast consuming) and with a
// bare pg_notify(row_to_json(NEW)) trigger (a bare listener draining).

var pgbenchScripts = map[string]string{
	"insert": `INSERT INTO tickets (title, description, status, priority, category, requester_email, assignee_email)
VALUES ('` + refTitle + `', '` + refDescription + `', 'open', 'medium', 'hardware', '` + refRequester + `', '` + refAssignee + `');
`,
	"update": `\set id random(2, ` + itoa(seedRows) + `)
UPDATE tickets SET updated_at = now() WHERE id = :id;
`,
}

const bareTriggerSQL = `
CREATE OR REPLACE FUNCTION public.bench_bare_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bench_bare', row_to_json(NEW)::text);
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS bench_bare ON tickets;
CREATE TRIGGER bench_bare AFTER INSERT OR UPDATE ON tickets
    FOR EACH ROW EXECUTE FUNCTION public.bench_bare_notify();`

func (b *bench) pgbenchScript(name string) (string, error) {
	p := filepath.Join(b.tmp, name+".sql")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	return p, os.WriteFile(p, []byte(pgbenchScripts[name]), 0o644)
}

func (b *bench) pgbenchSecs() int {
	if b.opts.quick {
		return 2
	}
	return 4
}

func (b *bench) writerClients() []int {
	if b.opts.quick {
		return []int{writerTargetClients}
	}
	return []int{1, 4, writerTargetClients}
}

// writerResult is one pgbench run.
type writerResult struct {
	TPS            float64 `json:"tps"`              // transactions/s
	Failed         float64 `json:"failed"`           // failed transactions
	ConsumerCPUPct float64 `json:"consumer_cpu_pct"` // the consumer's CPU (rowcast, pg_recvlogical, the bare listener), % of a core
}

func writerKey(mode, op string, clients int) string {
	return fmt.Sprintf("%s/%s/%d", mode, op, clients)
}

// The writer targets, at writerTargetClients writers, on writerResult.TPS:
// with logical capture against no capture, and with rowcast's NOTIFY
// trigger against the bare pg_notify(row_to_json(NEW)) trigger.
var (
	writerTargetClients = 16
	writerLogicalTarget = atLeast(0.95) // × no capture
	writerTriggerTarget = atLeast(0.97) // × bare trigger: "no slower", with room for noise
)

// writerModes in the order they run. only16 modes run at
// writerTargetClients writers only: they split a cost into its parts.
var writerModes = []struct {
	key, label string
	only16     bool
}{
	{"none", "no capture", false},
	{"bare", "bare pg_notify(row_to_json(NEW)) trigger, bare LISTEN loop", false},
	{"trigger", "rowcast NOTIFY trigger, bare LISTEN loop", true},
	{"notify", "rowcast NOTIFY capture (trigger, rowcast listening)", false},
	{"recvlogical", "logical setup, pg_recvlogical consuming", true},
	{"logical", "rowcast logical capture (rowcast consuming)", false},
}

func (b *bench) scenarioWriters(ctx context.Context) error {
	secs := b.pgbenchSecs()
	for _, m := range writerModes {
		if err := b.resetTable(ctx); err != nil {
			return err
		}
		stop := func() {}
		cpu := func() float64 { return 0 }
		switch m.key {
		case "bare", "trigger":
			channel := "bench_bare"
			if m.key == "bare" {
				if err := b.exec(ctx, bareTriggerSQL); err != nil {
					return err
				}
			} else {
				if err := b.useCapture(ctx, "notify"); err != nil {
					return err
				}
				channel = "rowcast"
			}
			l, err := b.newBareListener(ctx, channel)
			if err != nil {
				return err
			}
			lctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { _ = l.receive(lctx, 1<<62, time.Hour); close(done) }()
			stop = func() {
				cancel()
				<-done
				l.close()
			}
			cpu = selfCPU
		case "notify", "logical":
			if err := b.useCapture(ctx, m.key); err != nil {
				return err
			}
			rc, err := b.startRowcast(ctx, m.key)
			if err != nil {
				return err
			}
			stop = rc.stop
			cpu = func() float64 { return procCPU(rc.PID()) }
		case "recvlogical":
			if err := b.useCapture(ctx, "logical"); err != nil {
				return err
			}
			args := append(b.pgArgs(), "-d", benchDB, "--start", "-S", "rowcast",
				"-o", "proto_version=1", "-o", "publication_names=rowcast", "-f", "/dev/null")
			p, err := b.procs.Start(b.pinned(1, b.pgTool("pg_recvlogical"), args...), nil)
			if err != nil {
				return err
			}
			stop = func() { _, _ = p.Stop(syscall.SIGTERM, 10*time.Second) }
			cpu = func() float64 { return procCPU(p.PID()) }
		}
		err := func() error {
			defer stop()
			for _, op := range []string{"insert", "update"} {
				script, err := b.pgbenchScript(op)
				if err != nil {
					return err
				}
				for _, c := range b.writerClients() {
					if m.only16 && c != writerTargetClients {
						continue
					}
					cpu0 := cpu()
					res, err := b.pgbench(ctx, script, c, secs)
					if err != nil {
						return err
					}
					b.res.writers.add(writerKey(m.key, op, c), map[string]string{"mode": m.label, "op": op, "clients": itoa(c)},
						writerResult{TPS: res.tps, Failed: float64(res.failed), ConsumerCPUPct: 100 * (cpu() - cpu0) / float64(secs)})
					b.logf("writers %s %s -c %d: %.0f tps", m.key, op, c, res.tps)
				}
			}
			return nil
		}()
		if err != nil {
			return fmt.Errorf("%s: %w", m.key, err)
		}
	}
	return b.resetTable(ctx)
}
