package metrics

import (
	"fmt"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// deliveryLatency is rowcast_commit_to_send_seconds: a histogram by
// transport that takes the latencies of a batch of deliveries in one
// call. client_golang's Histogram takes one observation per call, each
// with atomic updates of shared counters (count, bucket, sum); a client's
// writer delivers its events in batches, and at a million deliveries a
// second, with writers on every core, those updates per event were about
// 5% of rowcast's CPU in fan-out. Here a batch is counted into buckets
// locally and added with one atomic update per bucket it touched and one
// for the sum. The series are those of a client_golang histogram with the
// same buckets: one observation per event delivered.
type deliveryLatency struct {
	desc  *prometheus.Desc
	upper []float64 // bucket upper bounds, ascending

	mu     sync.RWMutex
	series map[string]*latencySeries // by transport
}

// maxLatencyBuckets bounds the buckets, so that a batch is counted in an
// array on the stack.
const maxLatencyBuckets = 31

// latencySeries is one transport's histogram.
type latencySeries struct {
	// counts holds the observations per bucket (not cumulative); the
	// last is the +Inf bucket.
	counts []atomic.Uint64
	// sumBits is the sum of the observations in seconds, as float64 bits.
	sumBits atomic.Uint64
}

func newDeliveryLatency(name, help string, upper []float64, transports []string) *deliveryLatency {
	if len(upper) > maxLatencyBuckets || !sort.Float64sAreSorted(upper) {
		panic(fmt.Sprintf("metrics: %s: at most %d ascending buckets", name, maxLatencyBuckets))
	}
	h := &deliveryLatency{
		desc:   prometheus.NewDesc(name, help, []string{"transport"}, nil),
		upper:  upper,
		series: map[string]*latencySeries{},
	}
	// Known transports have their series from the start, at 0.
	for _, t := range transports {
		h.get(t)
	}
	return h
}

// get returns a transport's series, making it on first use.
func (h *deliveryLatency) get(transport string) *latencySeries {
	h.mu.RLock()
	s := h.series[transport]
	h.mu.RUnlock()
	if s != nil {
		return s
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if s = h.series[transport]; s == nil {
		s = &latencySeries{counts: make([]atomic.Uint64, len(h.upper)+1)}
		h.series[transport] = s
	}
	return s
}

// observe records one observation per duration, in seconds.
func (h *deliveryLatency) observe(transport string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	s := h.get(transport)
	var local [maxLatencyBuckets + 1]uint64
	sum := 0.0
	for _, d := range ds {
		v := d.Seconds()
		sum += v
		// The first bucket whose upper bound is at least v (le).
		local[sort.SearchFloat64s(h.upper, v)]++
	}
	for i, n := range local[:len(h.upper)+1] {
		if n > 0 {
			s.counts[i].Add(n)
		}
	}
	for {
		old := s.sumBits.Load()
		if s.sumBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+sum)) {
			return
		}
	}
}

func (h *deliveryLatency) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

// Collect reports each transport's histogram. The count is the sum of the
// buckets as read, so the buckets never exceed it even while observations
// are being added.
func (h *deliveryLatency) Collect(ch chan<- prometheus.Metric) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for t, s := range h.series {
		buckets := make(map[float64]uint64, len(h.upper))
		var count uint64
		for i := range s.counts {
			count += s.counts[i].Load()
			if i < len(h.upper) {
				buckets[h.upper[i]] = count
			}
		}
		sum := math.Float64frombits(s.sumBits.Load())
		ch <- prometheus.MustNewConstHistogram(h.desc, count, sum, buckets, t)
	}
}
