package broadcast

import (
	"bytes"
	"net/http"
	"strings"
	"time"
)

// sseKeepalive is how often an idle SSE stream gets a comment line, so
// proxies and load balancers do not time it out.
const sseKeepalive = 15 * time.Second

// sseRetry is the reconnect delay hint sent to EventSource clients.
const sseRetry = 3 * time.Second

// serveSSE streams events as Server-Sent Events at GET /events: the same
// auth, filters (query parameters) and visibility as /ws; resume with the
// Last-Event-ID header (EventSource sends it on reconnect) or lastEventId.
func (s *Server) serveSSE(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = r.URL.Query().Get("lastEventId")
	}
	resume, err := parseResume(strings.TrimSpace(last))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	filter, err := ParseFilterQuery(r.URL.Query(), s.cfg.FilterColumns)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	user, ok := s.admit(w, r, "sse")
	if !ok {
		return
	}
	defer s.release()
	if !s.live.add() {
		writeError(w, http.StatusServiceUnavailable, ErrShuttingDown.Error())
		return
	}
	defer s.live.done()
	sess := s.newSession("sse", user, filter)
	rc := http.NewResponseController(w)
	sess.SetAbort(func() { _ = rc.SetWriteDeadline(time.Now().Add(time.Second)) })
	sub, err := s.cfg.Hub.Subscribe(sess, resume)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	defer s.cfg.Hub.Unsubscribe(sess)

	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache, no-transform")
	h.Set("Connection", "keep-alive")
	// nginx and some proxies buffer responses unless told not to.
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("retry: " + itoa(sseRetry.Milliseconds()) + "\n\n"))
	flusher.Flush()

	s.obs.ClientConnected("sse")
	s.log.Info("User connected: "+user.Name()+" ("+sess.ID+")", "transport", "sse", "remote", r.RemoteAddr)
	write := func(ev *Event) error {
		_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		if _, err := w.Write(ev.sseFrame()); err != nil {
			return err
		}
		return rc.Flush()
	}
	ping := func() error {
		_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		if _, err := w.Write([]byte(": keepalive\n\n")); err != nil {
			return err
		}
		return rc.Flush()
	}
	// The request context ends when the client goes away.
	err = sess.Pump(r.Context(), sub, s.obs, write, ping, s.keepalive())
	code, reason := sess.CloseReason()
	switch {
	case code == CloseSlowConsumer:
	case err != nil && r.Context().Err() != nil:
		reason = "client closed"
	case err != nil:
		reason = "write failed: " + err.Error()
	}
	s.obs.ClientDisconnected("sse")
	s.log.Info("User disconnected: "+user.Name()+" ("+sess.ID+")", "transport", "sse", "reason", reason)
}

func (s *Server) keepalive() time.Duration {
	if s.cfg.SSEKeepalive > 0 {
		return s.cfg.SSEKeepalive
	}
	return sseKeepalive
}

func itoa(n int64) string {
	return string(appendInt(nil, n))
}

// sseFrame encodes the event once for every SSE client:
// "id: ...\nevent: ...\ndata: ...\n\n". Events without an ID (stats,
// resync) carry no id line, so the client's Last-Event-ID stays on the
// last row event.
func (e *Event) sseFrame() []byte {
	e.sseOnce.Do(func() {
		var b []byte
		if e.HasID {
			b = append(b, "id: "...)
			b = append(b, e.ID.String()...)
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
		b = append(b, "\n\n"...)
		e.sse = b
	})
	return e.sse
}
