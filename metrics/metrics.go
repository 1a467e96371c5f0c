// Package metrics exposes rowcast's Prometheus series. Everything is
// registered on a registry passed in by the caller; nothing is global.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"rowcast"
)

// Metrics implements broadcast.Observer.
type Metrics struct {
	changes        *prometheus.CounterVec
	eventsSent     *prometheus.CounterVec
	clients        *prometheus.GaugeVec
	refused        *prometheus.CounterVec
	slowConsumers  *prometheus.CounterVec
	latency        *prometheus.HistogramVec
	statsRecompute prometheus.Counter
	resumes        *prometheus.CounterVec
	windowSize     prometheus.Gauge
}

// LatencyBuckets run from 1 ms to 10 s.
var LatencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// New registers the collectors on reg, including the Go and process ones.
func New(reg *prometheus.Registry) *Metrics {
	m := &Metrics{
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rowcast_changes_captured_total",
			Help: "Row changes captured from PostgreSQL, by table and operation.",
		}, []string{"table", "op"}),
		eventsSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rowcast_events_sent_total",
			Help: "Events queued to clients, by event name and transport (one per receiving client).",
		}, []string{"event", "transport"}),
		clients: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rowcast_clients_connected",
			Help: "Clients connected now, by transport.",
		}, []string{"transport"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rowcast_connections_refused_total",
			Help: "Connections refused, by transport and reason (auth, origin, limit, disabled).",
		}, []string{"transport", "reason"}),
		slowConsumers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rowcast_slow_consumer_disconnects_total",
			Help: "Clients disconnected because their send queue overflowed, by transport.",
		}, []string{"transport"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rowcast_commit_to_send_seconds",
			Help:    "Time from the transaction's commit (capture time in notify mode) to the write to a client.",
			Buckets: LatencyBuckets,
		}, []string{"transport"}),
		statsRecompute: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rowcast_stats_recomputations_total",
			Help: "Full recounts of the stats (at start, after resyncs and truncates).",
		}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rowcast_resumes_total",
			Help: "Clients resuming with lastEventId, by outcome (replayed, resync).",
		}, []string{"outcome"}),
		windowSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rowcast_replay_window_events",
			Help: "Events held in the replay window.",
		}),
	}
	reg.MustRegister(m.changes, m.eventsSent, m.clients, m.refused, m.slowConsumers, m.latency,
		m.statsRecompute, m.resumes, m.windowSize,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

func (m *Metrics) ClientConnected(t string)    { m.clients.WithLabelValues(t).Inc() }
func (m *Metrics) ClientDisconnected(t string) { m.clients.WithLabelValues(t).Dec() }
func (m *Metrics) ConnectionRefused(t, reason string) {
	m.refused.WithLabelValues(t, reason).Inc()
}
func (m *Metrics) EventQueued(event, t string, n int) {
	m.eventsSent.WithLabelValues(event, t).Add(float64(n))
}
func (m *Metrics) SlowConsumer(t string) { m.slowConsumers.WithLabelValues(t).Inc() }
func (m *Metrics) Delivered(t string, d time.Duration) {
	m.latency.WithLabelValues(t).Observe(d.Seconds())
}
func (m *Metrics) ChangeApplied(table, op string) { m.changes.WithLabelValues(table, op).Inc() }
func (m *Metrics) StatsRecomputed()               { m.statsRecompute.Inc() }
func (m *Metrics) Resume(outcome string)          { m.resumes.WithLabelValues(outcome).Inc() }
func (m *Metrics) WindowSize(n int)               { m.windowSize.Set(float64(n)) }

// RegisterCapture exposes the capture source's status.
func RegisterCapture(reg *prometheus.Registry, status func() rowcast.CaptureStatus) {
	up := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rowcast_capture_connected",
		Help: "1 while capture is connected and listening or streaming, else 0.",
	}, func() float64 {
		if status().Connected {
			return 1
		}
		return 0
	})
	reconnects := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "rowcast_capture_reconnects_total",
		Help: "Capture connection losses followed by a reconnect attempt.",
	}, func() float64 { return float64(status().Reconnects) })
	reg.MustRegister(up, reconnects)
}
