package metrics

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// hist is a gathered histogram: count, sum, and per bucket its upper
// bound and cumulative count.
type hist struct {
	count   uint64
	sum     float64
	buckets [][2]float64
}

func (h hist) GetSampleCount() uint64 { return h.count }
func (h hist) GetSampleSum() float64  { return h.sum }

// histogramOf gathers the one histogram of name with transport.
func histogramOf(t *testing.T, reg *prometheus.Registry, name, transport string) hist {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "transport" && l.GetValue() == transport {
					h := m.GetHistogram()
					out := hist{count: h.GetSampleCount(), sum: h.GetSampleSum()}
					for _, b := range h.GetBucket() {
						out.buckets = append(out.buckets, [2]float64{b.GetUpperBound(), float64(b.GetCumulativeCount())})
					}
					return out
				}
			}
		}
	}
	t.Fatalf("no %s{transport=%q}", name, transport)
	return hist{}
}

// Batches observed from many goroutines give the series a client_golang
// histogram with the same buckets gives for the same observations, one at
// a time.
func TestDeliveryLatencyMatchesHistogram(t *testing.T) {
	ours := prometheus.NewRegistry()
	h := newDeliveryLatency("x_seconds", "x", LatencyBuckets, []string{"ws"})
	ours.MustRegister(h)
	ref := prometheus.NewRegistry()
	rh := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "x_seconds", Help: "x", Buckets: LatencyBuckets}, []string{"transport"})
	ref.MustRegister(rh)

	var wg sync.WaitGroup
	var mu sync.Mutex
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, 1))
			for b := 0; b < 200; b++ {
				batch := make([]time.Duration, r.IntN(20))
				for i := range batch {
					// Milliseconds, so that sums are exact in float64 and
					// values fall on bucket bounds too.
					batch[i] = time.Duration(r.IntN(12000)) * time.Millisecond
				}
				h.observe("ws", batch)
				mu.Lock()
				for _, d := range batch {
					rh.WithLabelValues("ws").Observe(d.Seconds())
				}
				mu.Unlock()
			}
		}(uint64(g))
	}
	wg.Wait()
	h.observe("sse", []time.Duration{time.Millisecond}) // a transport not known in advance
	rh.WithLabelValues("sse").Observe(time.Millisecond.Seconds())

	for _, tr := range []string{"ws", "sse"} {
		got, want := histogramOf(t, ours, "x_seconds", tr), histogramOf(t, ref, "x_seconds", tr)
		if got.GetSampleCount() != want.GetSampleCount() {
			t.Errorf("%s: count %d, want %d", tr, got.GetSampleCount(), want.GetSampleCount())
		}
		if d := got.GetSampleSum() - want.GetSampleSum(); d > 1e-6 || d < -1e-6 {
			t.Errorf("%s: sum %v, want %v", tr, got.GetSampleSum(), want.GetSampleSum())
		}
		if !slices.Equal(got.buckets, want.buckets) {
			t.Errorf("%s: buckets %v, want %v", tr, got.buckets, want.buckets)
		}
	}
	// Known transports are there from the start, at 0.
	if c := histogramOf(t, prometheusWith(newDeliveryLatency("y_seconds", "y", LatencyBuckets, Transports)), "y_seconds", "socketio").GetSampleCount(); c != 0 {
		t.Errorf("fresh series count %d", c)
	}
}

func prometheusWith(c prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	return reg
}

// The cost of observing a client's batch of 16 deliveries, writers on
// every core: one client_golang Observe per event (as before) against one
// observe per batch.
func BenchmarkLatencyPerEvent16(b *testing.B) {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "x_seconds", Help: "x", Buckets: LatencyBuckets}, []string{"transport"}).WithLabelValues("ws")
	batch := benchBatch()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			for _, d := range batch {
				h.Observe(d.Seconds())
			}
		}
	})
}

func BenchmarkLatencyPerBatch16(b *testing.B) {
	h := newDeliveryLatency("x_seconds", "x", LatencyBuckets, Transports)
	batch := benchBatch()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h.observe("ws", batch)
		}
	})
}

// benchBatch is 16 latencies around a few milliseconds.
func benchBatch() []time.Duration {
	batch := make([]time.Duration, 16)
	for i := range batch {
		batch[i] = time.Duration(1500+i*200) * time.Microsecond
	}
	return batch
}
