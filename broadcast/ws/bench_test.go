package ws

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"rowcast"
	"rowcast/broadcast"
	"rowcast/broadcast/broadcasttest"
	"rowcast/metrics"
)

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
			var fc broadcasttest.FrameCounter
			buf := make([]byte, 64<<10)
			done := int64(0)
			for {
				n, err := conn.Read(buf)
				fc.Feed(buf[:n])
				if t := target.Load(); fc.Frames() >= t && done < t {
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
			r := broadcasttest.BenchRow(int(pos % 1000))
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
	cpu0 := broadcasttest.CPUTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		round()
	}
	b.StopTimer()
	deliveries := float64(b.N * burst * clients)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
	// CPU of the whole process (server and clients), which waiting does
	// not count.
	b.ReportMetric(float64((broadcasttest.CPUTime()-cpu0).Nanoseconds())/deliveries, "cpu-ns/delivery")
}

func BenchmarkFanout100x1(b *testing.B)  { benchFanout(b, 100, 1) }
func BenchmarkFanout100x16(b *testing.B) { benchFanout(b, 100, 16) }
