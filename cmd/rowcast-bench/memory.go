package main

import (
	"context"
	"fmt"
	"time"
)

// Scenario 4: memory per idle authenticated connection: rowcast's RSS and
// Go heap with N idle clients minus with none, divided by N.

// memoryResult is rowcast's memory with N idle clients against none.
// Sizes are in bytes.
type memoryResult struct {
	Clients           float64 `json:"clients"`              // idle clients connected
	ConnectS          float64 `json:"connect_s"`            // seconds to connect them
	RSSBefore         float64 `json:"rss_before"`           // rowcast RSS without clients
	RSSAfter          float64 `json:"rss_after"`            // rowcast RSS with them
	RSSPerConn        float64 `json:"rss_per_conn"`         // (after - before) / clients, and so on
	HeapInuseBefore   float64 `json:"heap_inuse_before"`    // Go heap in use
	HeapInuseAfter    float64 `json:"heap_inuse_after"`     //
	HeapInusePerConn  float64 `json:"heap_inuse_per_conn"`  //
	HeapAllocPerConn  float64 `json:"heap_alloc_per_conn"`  //
	StackPerConn      float64 `json:"stack_per_conn"`       // goroutine stacks
	GoroutinesPerConn float64 `json:"goroutines_per_conn"`  // goroutines (a count)
	HeapAndStackPerC  float64 `json:"heap_and_stack_per_c"` // heap in use and stacks
	// The same clients on Socket.IO's WebSocket transport (joined to the
	// main namespace), measured after the /ws clients have gone.
	SIORSSPerConn        float64 `json:"sio_rss_per_conn"`
	SIOHeapInusePerConn  float64 `json:"sio_heap_inuse_per_conn"`
	SIOStackPerConn      float64 `json:"sio_stack_per_conn"`
	SIOGoroutinesPerConn float64 `json:"sio_goroutines_per_conn"`
}

// memoryHeapTarget judges memoryResult.HeapInusePerConn, in KiB.
var memoryHeapTarget = atMost(8)

func (b *bench) memoryClients() int {
	if b.opts.quick {
		return 2000
	}
	return 10000
}

type memSample struct {
	rss, heapInuse, heapAlloc, stackInuse, goroutines float64
}

// memSnapshot takes the median of 5 samples 200 ms apart.
func memSnapshot(ctx context.Context, rc *rowcastProc) (memSample, error) {
	var rss, hi, ha, si, g []float64
	for i := 0; i < 5; i++ {
		m, err := rc.metrics()
		if err != nil {
			return memSample{}, err
		}
		rss = append(rss, procRSS(rc.PID()))
		hi = append(hi, m["go_memstats_heap_inuse_bytes"])
		ha = append(ha, m["go_memstats_heap_alloc_bytes"])
		si = append(si, m["go_memstats_stack_inuse_bytes"])
		g = append(g, m["go_goroutines"])
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return memSample{}, err
		}
	}
	return memSample{median(rss), median(hi), median(ha), median(si), median(g)}, nil
}

func (b *bench) scenarioMemory(ctx context.Context) error {
	if err := b.resetTable(ctx); err != nil {
		return err
	}
	if err := b.useCapture(ctx, "logical"); err != nil {
		return err
	}
	rc, err := b.startRowcast(ctx, "logical")
	if err != nil {
		return err
	}
	defer rc.stop()
	if err := sleepCtx(ctx, 2*time.Second); err != nil {
		return err
	}
	before, err := memSnapshot(ctx, rc)
	if err != nil {
		return err
	}
	n := b.memoryClients()
	after, connectSecs, err := b.idleClients(ctx, rc, wsURL(rc.Addr), n, "ws")
	if err != nil {
		return err
	}
	rc.stop()
	// Socket.IO in a rowcast of its own: memory the /ws connections
	// freed would otherwise be reused and not show in RSS.
	rc, err = b.startRowcast(ctx, "logical")
	if err != nil {
		return err
	}
	defer rc.stop()
	if err := sleepCtx(ctx, 2*time.Second); err != nil {
		return err
	}
	sioBefore, err := memSnapshot(ctx, rc)
	if err != nil {
		return err
	}
	sioAfter, _, err := b.idleClients(ctx, rc, sioURL(rc.Addr), n, "socketio")
	if err != nil {
		return err
	}
	per := func(a, b float64) float64 { return (a - b) / float64(n) }
	res := memoryResult{
		Clients:           float64(n),
		ConnectS:          connectSecs,
		RSSBefore:         before.rss,
		RSSAfter:          after.rss,
		RSSPerConn:        per(after.rss, before.rss),
		HeapInuseBefore:   before.heapInuse,
		HeapInuseAfter:    after.heapInuse,
		HeapInusePerConn:  per(after.heapInuse, before.heapInuse),
		HeapAllocPerConn:  per(after.heapAlloc, before.heapAlloc),
		StackPerConn:      per(after.stackInuse, before.stackInuse),
		GoroutinesPerConn: per(after.goroutines, before.goroutines),
		HeapAndStackPerC:  per(after.heapInuse+after.stackInuse, before.heapInuse+before.stackInuse),

		SIORSSPerConn:        per(sioAfter.rss, sioBefore.rss),
		SIOHeapInusePerConn:  per(sioAfter.heapInuse, sioBefore.heapInuse),
		SIOStackPerConn:      per(sioAfter.stackInuse, sioBefore.stackInuse),
		SIOGoroutinesPerConn: per(sioAfter.goroutines, sioBefore.goroutines),
	}
	b.res.memory.add(itoa(n), nil, res)
	b.logf("memory %d idle clients: RSS %.1f KiB, heap in use %.1f KiB, stacks %.1f KiB per connection; socket.io RSS %.1f KiB, heap in use %.1f KiB, stacks %.1f KiB",
		n, res.RSSPerConn/1024, res.HeapInusePerConn/1024, res.StackPerConn/1024,
		res.SIORSSPerConn/1024, res.SIOHeapInusePerConn/1024, res.SIOStackPerConn/1024)
	return nil
}

// idleClients connects n clients to url, waits until each has its first
// frame and then 3 s, takes rowcast's memory (and, with -memprofile, its
// heap profile), and disconnects them.
func (b *bench) idleClients(ctx context.Context, rc *rowcastProc, url string, n int, transport string) (after memSample, connectSecs float64, err error) {
	t0 := time.Now()
	cs, err := dialClients(ctx, url, b.authHeader(), n)
	if err != nil {
		return after, 0, err
	}
	defer cs.close()
	if err := cs.waitFrames(ctx, 60*time.Second); err != nil {
		return after, 0, err
	}
	connectSecs = time.Since(t0).Seconds()
	if err := sleepCtx(ctx, 3*time.Second); err != nil {
		return after, 0, err
	}
	if after, err = memSnapshot(ctx, rc); err != nil {
		return after, 0, err
	}
	b.heapProfile(ctx, rc, "memory", transport, itoa(n))
	if closed, _ := cs.closedCount(); closed > 0 {
		return after, 0, fmt.Errorf("%d of %d idle %s clients were disconnected", closed, n, transport)
	}
	return after, connectSecs, nil
}

// Scenario 6: wire size of ticket:updated for the reference ticket and of
// stats:updated, per capture mode. The WebSocket frame header (2 bytes up
// to 125 bytes of payload, 4 bytes up to 65535; server frames are not
// masked; rowcast does not negotiate compression) is counted in "wire".

// wireResult is the size of one message of each kind, in bytes.
type wireResult struct {
	TicketPayload float64 `json:"ticket_payload"` // ticket:updated, JSON
	TicketWire    float64 `json:"ticket_wire"`    // with the WebSocket frame header
	StatsPayload  float64 `json:"stats_payload"`  // stats:updated, JSON
	StatsWire     float64 `json:"stats_wire"`     // with the WebSocket frame header
}

func (b *bench) scenarioWire(ctx context.Context) error {
	for _, mode := range []string{"logical", "notify"} {
		if err := b.useCapture(ctx, mode); err != nil {
			return err
		}
		rc, err := b.startRowcast(ctx, mode, "ROWCAST_STATS_INTERVAL=50ms")
		if err != nil {
			return err
		}
		err = b.wireMode(ctx, rc, mode)
		rc.stop()
		if err != nil {
			return fmt.Errorf("%s: %w", mode, err)
		}
	}
	return nil
}

func (b *bench) wireMode(ctx context.Context, rc *rowcastProc, mode string) error {
	cs, err := dialClients(ctx, wsURL(rc.Addr), b.authHeader(), 1)
	if err != nil {
		return err
	}
	defer cs.close()
	if err := cs.waitFrames(ctx, 10*time.Second); err != nil {
		return err
	}
	c := cs.clients[0]
	// The reference ticket changes status (and back), so that both a
	// ticket:updated and a stats:updated follow.
	for _, st := range []string{"in_progress", "open"} {
		rows0 := c.rows.Load()
		if err := b.exec(ctx, `UPDATE tickets SET status = $1, updated_at = now() WHERE id = 1`, st); err != nil {
			return err
		}
		if cs.waitRows(ctx, rows0+1, 10*time.Second, 10*time.Second) < rows0+1 {
			return fmt.Errorf("no ticket:updated within 10s")
		}
	}
	if err := sleepCtx(ctx, 300*time.Millisecond); err != nil {
		return err
	}
	c.sampleMu.Lock()
	row := append([]byte(nil), c.sampleRow...)
	stats := append([]byte(nil), c.sampleStats...)
	c.sampleMu.Unlock()
	if len(row) == 0 || len(stats) == 0 {
		return fmt.Errorf("missing frames (ticket:updated %d bytes, stats:updated %d bytes)", len(row), len(stats))
	}
	b.res.wire.add(mode, nil, wireResult{
		TicketPayload: float64(len(row)),
		TicketWire:    float64(len(row) + wsHeaderLen(len(row))),
		StatsPayload:  float64(len(stats)),
		StatsWire:     float64(len(stats) + wsHeaderLen(len(stats))),
	})
	b.res.text("wire", mode+"/ticket", string(row))
	b.res.text("wire", mode+"/stats", string(stats))
	if mode == "logical" && b.sampleFrame == nil {
		b.sampleFrame = row
	}
	b.logf("wire %s: ticket:updated %d bytes payload, stats:updated %d bytes payload", mode, len(row), len(stats))
	return nil
}
