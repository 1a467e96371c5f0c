package socketio

import (
	"context"
	"net"
	"rowcast/broadcast/broadcasttest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"rowcast"
)

// The fan-out benchmark of broadcast/ws, on Socket.IO's WebSocket
// transport: clients joined to the main namespace, counting frames.

func benchFanout(b *testing.B, clients, burst int) {
	env := newTestEnv(b, func(c *testConfig) { c.SocketIO.PingInterval = time.Hour })
	var target, remaining atomic.Int64
	reached := make(chan struct{}, 1)
	for range clients {
		c, reply := env.openWS("40", nil)
		if !strings.HasPrefix(reply, "40{") {
			b.Fatalf("CONNECT reply %q", reply)
		}
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
		}(c.c.NetConn())
	}
	for env.hub.Clients() != clients {
		time.Sleep(time.Millisecond)
	}
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
		if err := env.hub.Apply(context.Background(), batch); err != nil {
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
	b.ReportMetric(float64((broadcasttest.CPUTime()-cpu0).Nanoseconds())/deliveries, "cpu-ns/delivery")
}

func BenchmarkFanout100x1(b *testing.B)  { benchFanout(b, 100, 1) }
func BenchmarkFanout100x16(b *testing.B) { benchFanout(b, 100, 16) }
