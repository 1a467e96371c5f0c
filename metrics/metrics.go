// Package metrics exposes rowcast's Prometheus series. Everything is
// registered on a registry passed in by the caller; nothing is global.
//
// Naming follows the Prometheus conventions: every series starts with
// rowcast_, uses base units (_seconds, _bytes, _ratio), counters end in
// _total, and label values come from small fixed sets (transports, event
// names, operations, reasons, outcomes, capture modes, slot states,
// Socket.IO engines and protocol error kinds): never a user, a token, a
// row key or a connection.
package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"rowcast"
)

// Metrics turns what the hub and the transports report into series. It
// implements broadcast.Observer (by its method set; this package does not
// import broadcast).
type Metrics struct {
	changes        *prometheus.CounterVec
	eventsSent     *prometheus.CounterVec
	clients        *prometheus.GaugeVec
	refused        *prometheus.CounterVec
	slowConsumers  *prometheus.CounterVec
	latency        *deliveryLatency
	statsRecompute prometheus.Counter
	resumes        *prometheus.CounterVec
	windowSize     prometheus.Gauge
	sioSessions    *prometheus.GaugeVec
	sioUpgrades    *prometheus.CounterVec
	sioProtoErrors *prometheus.CounterVec
	sioCloses      *prometheus.CounterVec
	eventsDropped  *prometheus.CounterVec

	// eventNames holds the event label values in use: rowcast's own (from
	// Init) and the first MaxEventNames application events. Any later name
	// is counted as OtherEvent, so that rowcast.broadcast() with ever new
	// names cannot grow the series without bound.
	eventNames sync.Map
	eventMu    sync.Mutex
	eventCount int
}

// MaxEventNames is how many application event names get a label value of
// their own in rowcast_events_sent_total.
const MaxEventNames = 100

// OtherEvent is the event label of application events past MaxEventNames.
const OtherEvent = "other"

// The label values of the Socket.IO series (as package broadcast reports
// them). Every series of these sets exists from the start, at 0.
var (
	// SIOEngines: the engine label of rowcast_socketio_sessions.
	SIOEngines = []string{"polling", "websocket"}
	// SIOUpgradeOutcomes: the outcome label of
	// rowcast_socketio_upgrades_total.
	SIOUpgradeOutcomes = []string{"ok", "abandoned", "refused"}
	// SIOProtocolErrorKinds: the kind label of
	// rowcast_socketio_protocol_errors_total.
	SIOProtocolErrorKinds = []string{"parse", "binary", "ack", "state", "too_large", "overlapping", "bad_request"}
	// SIOCloseReasons: the reason label of
	// rowcast_socketio_session_closes_total.
	SIOCloseReasons = []string{"ping_timeout", "poll_timeout", "client", "protocol", "slow_consumer", "shutdown", "connect_timeout", "token_expired"}
)

// LatencyBuckets run from 1 ms to 10 s.
var LatencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// New registers the collectors on reg, including the Go and process ones.
// It panics if one of them is already registered.
func New(reg prometheus.Registerer) *Metrics {
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
		latency: newDeliveryLatency("rowcast_commit_to_send_seconds",
			"Time from the transaction's commit (capture time in notify mode) to the write to a client.",
			LatencyBuckets, Transports),
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
		sioSessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rowcast_socketio_sessions",
			Help: "Engine.IO sessions open now on /socket.io/, by current transport (polling, websocket); an upgrade moves a session from polling to websocket.",
		}, []string{"engine"}),
		sioUpgrades: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rowcast_socketio_upgrades_total",
			Help: "WebSocket upgrades of polling Socket.IO sessions, by outcome (ok, abandoned, refused).",
		}, []string{"outcome"}),
		sioProtoErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rowcast_socketio_protocol_errors_total",
			Help: "Socket.IO clients breaking the Engine.IO or Socket.IO protocol, by kind (parse, binary, ack, state, too_large, overlapping, bad_request).",
		}, []string{"kind"}),
		eventsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rowcast_events_dropped_total",
			Help: "Application events (rowcast.broadcast()) refused by the hub, by reason (bad_name, reserved_name, bad_payload).",
		}, []string{"reason"}),
		sioCloses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rowcast_socketio_session_closes_total",
			Help: "Engine.IO sessions closed, by reason (ping_timeout, poll_timeout, client, protocol, slow_consumer, shutdown, connect_timeout, token_expired).",
		}, []string{"reason"}),
	}
	for _, v := range SIOEngines {
		m.sioSessions.WithLabelValues(v)
	}
	for _, v := range SIOUpgradeOutcomes {
		m.sioUpgrades.WithLabelValues(v)
	}
	for _, v := range SIOProtocolErrorKinds {
		m.sioProtoErrors.WithLabelValues(v)
	}
	for _, v := range SIOCloseReasons {
		m.sioCloses.WithLabelValues(v)
	}
	reg.MustRegister(m.changes, m.eventsSent, m.clients, m.refused, m.slowConsumers, m.latency,
		m.statsRecompute, m.resumes, m.windowSize,
		m.sioSessions, m.sioUpgrades, m.sioProtoErrors, m.sioCloses, m.eventsDropped,
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
	m.eventsSent.WithLabelValues(m.eventLabel(event), t).Add(float64(n))
}

// eventLabel is the label value for an event name: the name while the
// set of names is small, else OtherEvent.
func (m *Metrics) eventLabel(name string) string {
	if _, ok := m.eventNames.Load(name); ok {
		return name
	}
	m.eventMu.Lock()
	defer m.eventMu.Unlock()
	if _, ok := m.eventNames.Load(name); ok {
		return name
	}
	if m.eventCount >= MaxEventNames {
		return OtherEvent
	}
	m.eventCount++
	m.eventNames.Store(name, struct{}{})
	return name
}

func (m *Metrics) EventDropped(reason string) { m.eventsDropped.WithLabelValues(reason).Inc() }
func (m *Metrics) SlowConsumer(t string)      { m.slowConsumers.WithLabelValues(t).Inc() }
func (m *Metrics) Delivered(t string, sinceCommit []time.Duration) {
	m.latency.observe(t, sinceCommit)
}
func (m *Metrics) ChangeApplied(table, op string) { m.changes.WithLabelValues(table, op).Inc() }
func (m *Metrics) StatsRecomputed()               { m.statsRecompute.Inc() }
func (m *Metrics) Resume(outcome string)          { m.resumes.WithLabelValues(outcome).Inc() }
func (m *Metrics) WindowSize(n int)               { m.windowSize.Set(float64(n)) }

// SocketIO is the observer of the Socket.IO transport's Engine.IO
// sessions (socketio.Observer, by its method set).
func (m *Metrics) SocketIO() SocketIO { return SocketIO{m} }

// SocketIO turns what the Socket.IO transport reports into the
// rowcast_socketio_* series.
type SocketIO struct{ m *Metrics }

func (s SocketIO) Session(engine string, delta int) {
	s.m.sioSessions.WithLabelValues(engine).Add(float64(delta))
}
func (s SocketIO) Upgrade(outcome string)    { s.m.sioUpgrades.WithLabelValues(outcome).Inc() }
func (s SocketIO) ProtocolError(kind string) { s.m.sioProtoErrors.WithLabelValues(kind).Inc() }
func (s SocketIO) Closed(reason string)      { s.m.sioCloses.WithLabelValues(reason).Inc() }

// Transports are the transport label values: /ws, /events, /socket.io/.
var Transports = []string{"ws", "sse", "socketio"}

// Init creates the series whose label values are known in advance at 0,
// so that dashboards and alert rules read 0, not "no data", on a fresh
// process: clients and slow-consumer disconnects per transport, events
// sent for each of rowcast's own event names on each transport, and
// dropped application events by reason.
func (m *Metrics) Init(events, dropReasons []string) {
	for _, e := range events {
		m.eventNames.Store(e, struct{}{}) // rowcast's own: not counted against MaxEventNames
	}
	for _, t := range Transports {
		m.clients.WithLabelValues(t)
		m.slowConsumers.WithLabelValues(t)
		for _, e := range events {
			m.eventsSent.WithLabelValues(e, t)
		}
	}
	for _, r := range dropReasons {
		m.eventsDropped.WithLabelValues(r)
	}
}

// RegisterCapture exposes the capture source's status. status is called
// once per scrape, so all capture series of a scrape come from the same
// snapshot. It panics if the series are already registered.
func RegisterCapture(reg prometheus.Registerer, status func() rowcast.CaptureStatus) {
	reg.MustRegister(newCaptureCollector(status))
}

// captureCollector reads a rowcast.CaptureStatus at scrape time.
type captureCollector struct {
	status func() rowcast.CaptureStatus

	connected, reconnects, info        *prometheus.Desc
	receivedLSN, flushedLSN, recreated *prometheus.Desc
	ignored, rejected                  *prometheus.Desc
	withoutOldRow                      *prometheus.Desc
}

func newCaptureCollector(status func() rowcast.CaptureStatus) *captureCollector {
	return &captureCollector{
		status: status,
		connected: prometheus.NewDesc("rowcast_capture_connected",
			"1 while capture is connected and listening or streaming, else 0.", nil, nil),
		reconnects: prometheus.NewDesc("rowcast_capture_reconnects_total",
			"Capture connection losses followed by a reconnect attempt.", nil, nil),
		info: prometheus.NewDesc("rowcast_capture_info",
			"Capture mode of this process (notify or logical); the value is always 1.", []string{"mode"}, nil),
		receivedLSN: prometheus.NewDesc("rowcast_replication_received_lsn_bytes",
			"WAL position (LSN as a byte offset) of the last data received from the replication slot. Logical mode only.", nil, nil),
		flushedLSN: prometheus.NewDesc("rowcast_replication_flushed_lsn_bytes",
			"WAL position (LSN as a byte offset) rowcast last reported to PostgreSQL as flushed, i.e. handed on to clients. Logical mode only.", nil, nil),
		recreated: prometheus.NewDesc("rowcast_replication_slot_recreations_total",
			"Replication slots recreated after being lost or invalidated; every recreation means changes were missed and clients were told to resync.", nil, nil),
		ignored: prometheus.NewDesc("rowcast_changes_ignored_total",
			"What logical capture received from the slot and dropped, by reason (other_table, logical_message, bad_event_name, bad_message). Logical mode; 0 in notify mode.", []string{"reason"}, nil),
		withoutOldRow: prometheus.NewDesc("rowcast_changes_without_old_row_total",
			"Logical mode: updates and deletes of the captured table received without the whole old row because the table is not REPLICA IDENTITY FULL (stats are recounted, clients get what is safe rather than what is exact). Run rowcast setup to fix. 0 in notify mode.", nil, nil),
		rejected: prometheus.NewDesc("rowcast_notify_rejected_total",
			"Payloads on the NOTIFY channel that notify capture dropped, by reason (malformed, other_table, bad_event_name, fetch_failed, unverified_truncate). Notify mode; 0 in logical mode.", []string{"reason"}, nil),
	}
}

func (c *captureCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.connected, c.reconnects, c.info, c.receivedLSN, c.flushedLSN, c.recreated, c.ignored, c.rejected, c.withoutOldRow} {
		ch <- d
	}
}

func (c *captureCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	connected := 0.0
	if st.Connected {
		connected = 1
	}
	mode := st.Mode
	if mode == "" {
		mode = "unknown"
	}
	ch <- prometheus.MustNewConstMetric(c.connected, prometheus.GaugeValue, connected)
	ch <- prometheus.MustNewConstMetric(c.reconnects, prometheus.CounterValue, float64(st.Reconnects))
	ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1, mode)
	ch <- prometheus.MustNewConstMetric(c.recreated, prometheus.CounterValue, float64(st.SlotRecreations))
	ch <- prometheus.MustNewConstMetric(c.withoutOldRow, prometheus.CounterValue, float64(st.WithoutOldRow))
	// Every reason of both sets, in both modes, from the start: rate()
	// and alert rules then see 0 rather than no data.
	for _, r := range rowcast.IgnoreReasons {
		ch <- prometheus.MustNewConstMetric(c.ignored, prometheus.CounterValue, float64(st.Ignored[r]), r)
	}
	for _, r := range rowcast.NotifyRejectReasons {
		ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue, float64(st.Rejected[r]), r)
	}
	if st.Mode == ModeLogical {
		// Before the first message the positions are 0: not worth a point.
		if st.ReceivedLSN > 0 {
			ch <- prometheus.MustNewConstMetric(c.receivedLSN, prometheus.GaugeValue, float64(st.ReceivedLSN))
		}
		if st.FlushedLSN > 0 {
			ch <- prometheus.MustNewConstMetric(c.flushedLSN, prometheus.GaugeValue, float64(st.FlushedLSN))
		}
	}
}

// Capture modes as reported in rowcast.CaptureStatus.Mode.
const (
	ModeNotify  = "notify"
	ModeLogical = "logical"
)
