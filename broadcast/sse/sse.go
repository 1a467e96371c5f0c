// Package sse is the Server-Sent Events transport at GET /events: the
// same auth, filters (query parameters) and visibility as /ws; clients
// resume with the Last-Event-ID header (EventSource sends it on
// reconnect) or lastEventId.
package sse

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"time"

	"rowcast/broadcast"
)

// Transport is the name in metrics and logs.
const Transport = "sse"

// retry is the reconnect delay hint sent to EventSource clients.
const retry = 3 * time.Second

// Config configures the handler.
type Config struct {
	Gate *broadcast.Gate
	// Keepalive is how often an idle stream gets a comment line, so
	// proxies and load balancers do not time it out (15s).
	Keepalive time.Duration
	// WriteTimeout bounds each write (10s); a client that stops reading
	// is a slow consumer.
	WriteTimeout time.Duration
}

// Handler serves GET /events.
type Handler struct {
	cfg  Config
	gate *broadcast.Gate
}

// New makes the handler.
func New(cfg Config) *Handler {
	if cfg.Keepalive <= 0 {
		cfg.Keepalive = 15 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	return &Handler{cfg: cfg, gate: cfg.Gate}
}

// frame encodes each event once for every SSE client.
var frame = broadcast.NewEncoding("sse", encode)

// encode is "id: ...\nevent: ...\ndata: ...\n\n". Events without an ID
// (stats, resync) carry no id line, so the client's Last-Event-ID stays
// on the last row event.
func encode(e *broadcast.Event) []byte {
	var b []byte
	if e.HasID {
		b = append(b, "id: "...)
		b = e.ID.Append(b)
		b = append(b, '\n')
	}
	b = append(b, "event: "...)
	b = append(b, e.Name...)
	// JSON may hold raw newlines (a json column's own formatting): each
	// line becomes a data line, which EventSource joins with "\n".
	for _, line := range bytes.Split(e.Data, []byte("\n")) {
		b = append(b, "\ndata: "...)
		b = append(b, bytes.TrimSuffix(line, []byte("\r"))...)
	}
	return append(b, "\n\n"...)
}

// ServeHTTP streams events until the client goes away or the session ends.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, ok := w.(http.Flusher); !ok {
		broadcast.WriteError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = r.URL.Query().Get("lastEventId")
	}
	filter, err := h.gate.ParseFilterQuery(r.URL.Query())
	if err != nil {
		broadcast.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	last = strings.TrimSpace(last)
	user, slot, ref := h.gate.Admit(r, Transport, last)
	if ref != nil {
		ref.WriteJSON(w)
		return
	}
	defer slot.Release()
	sess := h.gate.NewSession(Transport, user, filter)
	rc := http.NewResponseController(w)
	sess.SetAbort(func() { _ = rc.SetWriteDeadline(time.Now().Add(time.Second)) })
	sub, err := h.gate.Hub().Subscribe(sess, last)
	if err != nil {
		broadcast.WriteError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	defer h.gate.Hub().Unsubscribe(sess)

	// A listed cross-origin dashboard may read the stream, as it may read
	// /api/snapshot (EventSource with credentials sends no preflight).
	h.gate.CORS(w, r, "GET")
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream; charset=utf-8")
	hd.Set("Cache-Control", "no-cache, no-transform")
	hd.Set("Connection", "keep-alive")
	// nginx and some proxies buffer responses unless told not to.
	hd.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("retry: " + strconv.FormatInt(retry.Milliseconds(), 10) + "\n\n"))
	_ = rc.Flush()

	h.gate.Connected(sess, r.RemoteAddr)
	c := &client{w: w, rc: rc, timeout: h.cfg.WriteTimeout}
	// The request context ends when the client goes away.
	err = sess.Pump(r.Context(), sub, c, h.cfg.Keepalive)
	h.gate.Disconnected(sess, sess.Outcome(err))
}

// client is one stream: the Transport its session writes to. A batch of
// events is written with one flush.
type client struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (c *client) Write(evs []*broadcast.Event) error {
	if len(evs) == 0 {
		return nil
	}
	_ = c.rc.SetWriteDeadline(time.Now().Add(c.timeout))
	for _, ev := range evs {
		if _, err := c.w.Write(frame.Of(ev)); err != nil {
			return err
		}
	}
	return c.rc.Flush()
}

func (c *client) Ping() error {
	_ = c.rc.SetWriteDeadline(time.Now().Add(c.timeout))
	if _, err := c.w.Write([]byte(": keepalive\n\n")); err != nil {
		return err
	}
	return c.rc.Flush()
}
