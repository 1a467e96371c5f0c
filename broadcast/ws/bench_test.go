package ws

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"rowcast"
	"rowcast/broadcast"
	"rowcast/metrics"
)

// frameCounter counts the WebSocket frames in a server's byte stream
// (unmasked frames), without decoding them, so that the clients of a
// fan-out benchmark cost as little as possible next to the server.
type frameCounter struct {
	hdr  [10]byte
	have int   // header bytes collected
	skip int64 // payload bytes still to skip
	n    atomic.Int64
}

func (f *frameCounter) feed(b []byte) {
	for len(b) > 0 {
		if f.skip > 0 {
			k := min(int64(len(b)), f.skip)
			f.skip -= k
			b = b[k:]
			if f.skip == 0 {
				f.n.Add(1)
			}
			continue
		}
		f.hdr[f.have] = b[0]
		f.have++
		b = b[1:]
		if f.have < 2 {
			continue
		}
		need, l := 2, int64(f.hdr[1]&0x7f)
		switch l {
		case 126:
			need = 4
		case 127:
			need = 10
		}
		if f.have < need {
			continue
		}
		switch l {
		case 126:
			l = int64(f.hdr[2])<<8 | int64(f.hdr[3])
		case 127:
			l = 0
			for _, c := range f.hdr[2:10] {
				l = l<<8 | int64(c)
			}
		}
		f.have = 0
		if l == 0 {
			f.n.Add(1)
		}
		f.skip = l
	}
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchRow is the reference ticket's size: a ticket:updated frame of
// about 580 bytes.
func benchRow(id int) rowcast.Row {
	v := func(s string) json.RawMessage { return json.RawMessage(s) }
	return rowcast.Row{
		{Name: "id", Value: v(fmt.Sprint(id))},
		{Name: "title", Value: v(`"` + strings.Repeat("Printer on the third floor jams ", 6) + `"`)},
		{Name: "status", Value: v(`"open"`)},
		{Name: "priority", Value: v(`"high"`)},
		{Name: "assignee_email", Value: v(`"agent.smith@helpdesk.example.com"`)},
		{Name: "customer_email", Value: v(`"someone@customer.example.org"`)},
		{Name: "created_at", Value: v(`"2026-11-30T07:00:00.000000+00:00"`)},
		{Name: "updated_at", Value: v(`"2026-11-30T07:42:00.000000+00:00"`)},
	}
}

// benchFanout connects clients to /ws and sends b.N batches of burst
// updates, waiting after each batch until every client has every frame.
// ns/op is per batch; ns/delivery divides by burst × clients. The gate
// reports to the Prometheus series, as rowcast's does: what is counted
// per delivery is part of the cost.
func benchFanout(b *testing.B, clients, burst int) {
	env, url := serve(b, func(c *broadcast.GateConfig) {
		c.Observer = metrics.New(prometheus.NewRegistry())
	})
	// Each reader reports, once, when its client has target frames; the
	// last one to get there wakes the benchmark.
	var target, remaining atomic.Int64
	reached := make(chan struct{}, 1)
	for range clients {
		c := dial(b, url, nil)
		// Nothing is sent before the first update (no stats, no replay),
		// so the dialer has buffered no frame: count on the raw conn.
		go func(conn net.Conn) {
			var fc frameCounter
			buf := make([]byte, 64<<10)
			done := int64(0)
			for {
				n, err := conn.Read(buf)
				fc.feed(buf[:n])
				if t := target.Load(); fc.n.Load() >= t && done < t {
					done = t
					if remaining.Add(-1) == 0 {
						reached <- struct{}{}
					}
				}
				if err != nil {
					return
				}
			}
		}(c.NetConn())
	}
	env.WaitClients(b, clients)
	pos := uint64(0)
	batch := make([]rowcast.Change, burst)
	round := func() {
		remaining.Store(int64(clients))
		target.Add(int64(burst))
		for i := range batch {
			pos++
			r := benchRow(int(pos % 1000))
			batch[i] = rowcast.Change{Op: rowcast.OpUpdate, Schema: "public", Table: "tickets",
				Key: r[:1], Row: r, ID: rowcast.EventID{Pos: pos}, CaptureTime: time.Now()}
		}
		if err := env.Hub.Apply(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
		select {
		case <-reached:
		case <-time.After(time.Minute):
			b.Fatalf("%d clients short of %d frames after a minute", remaining.Load(), target.Load())
		}
	}
	round()
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		round()
	}
	b.StopTimer()
	deliveries := float64(b.N * burst * clients)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
	// CPU of the whole process (server and clients), which waiting does
	// not count.
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/deliveries, "cpu-ns/delivery")
}

func BenchmarkFanout100x1(b *testing.B)  { benchFanout(b, 100, 1) }
func BenchmarkFanout100x16(b *testing.B) { benchFanout(b, 100, 16) }
