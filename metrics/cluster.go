package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ClusterStatus is what the cluster series read at scrape time.
type ClusterStatus struct {
	// Connected: the node reaches the NATS servers.
	Connected bool
	// Ready: the node consumes the stream and has filled its window.
	Ready bool
	// Lag is how many messages of the stream the node has not handed on.
	Lag uint64
	// Bad counts messages of the stream skipped because they could not
	// be decoded.
	Bad uint64
}

// Cluster holds the series of cluster mode (ROWCAST_NATS_URL). It
// implements the leadership and publish observers of cmd/rowcast/cluster
// by their method sets.
type Cluster struct {
	leader         prometheus.Gauge
	leaderChanges  prometheus.Counter
	publishSeconds prometheus.Histogram
	publishFailed  prometheus.Counter
}

// PublishBuckets run from 0.25 ms to 10 s.
var PublishBuckets = []float64{.00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NewCluster registers the cluster series on reg; status is read at
// scrape time.
func NewCluster(reg prometheus.Registerer, status func() ClusterStatus) *Cluster {
	c := &Cluster{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rowcast_cluster_leader",
			Help: "1 on the node that captures (holds the capture lock and publishes to the stream), else 0.",
		}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rowcast_cluster_leader_changes_total",
			Help: "Times this node took over capture.",
		}),
		publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "rowcast_cluster_publish_seconds",
			Help:    "Time from publishing a batch of changes to the stream to JetStream's acknowledgement of all of them (the capturing node).",
			Buckets: PublishBuckets,
		}),
		publishFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rowcast_cluster_publish_failures_total",
			Help: "Batches the stream did not acknowledge in time or refused; each makes the capturer step down.",
		}),
	}
	reg.MustRegister(c.leader, c.leaderChanges, c.publishSeconds, c.publishFailed,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rowcast_cluster_consumer_lag_messages",
			Help: "Messages of the stream (each one or more changes) this node has not handed to its clients yet.",
		}, func() float64 { return float64(status().Lag) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rowcast_cluster_stream_connected",
			Help: "1 while the node reaches the NATS servers, else 0.",
		}, func() float64 { return b2f(status().Connected) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rowcast_cluster_consumer_ready",
			Help: "1 while the node consumes the stream and has filled its replay window from it (what /readyz reports), else 0.",
		}, func() float64 { return b2f(status().Ready) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "rowcast_cluster_bad_messages_total",
			Help: "Messages of the stream that are not a change this version can decode; skipped.",
		}, func() float64 { return float64(status().Bad) }),
	)
	return c
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Leading records that this node started (on) or stopped capturing.
func (c *Cluster) Leading(on bool) {
	if on {
		c.leader.Set(1)
		c.leaderChanges.Inc()
		return
	}
	c.leader.Set(0)
}

// Published records one batch published to the stream.
func (c *Cluster) Published(_ int, d time.Duration, err error) {
	if err != nil {
		c.publishFailed.Inc()
		return
	}
	c.publishSeconds.Observe(d.Seconds())
}
