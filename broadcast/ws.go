package broadcast

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
)

// wsReadLimit bounds what a client may send: only control frames and small
// JSON messages are expected.
const wsReadLimit = 4096

var upgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferSize: 4096,
	// Origin is checked by admit before the upgrade.
	CheckOrigin: func(*http.Request) bool { return true },
	// Buffers are shared between connections while idle, which keeps
	// memory per idle client small.
	WriteBufferPool: &writePool,
}

var writePool = syncPool{}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	resume, err := parseResume(r.URL.Query().Get("lastEventId"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	user, ok := s.admit(w, r, "ws")
	if !ok {
		return
	}
	if !s.live.add() {
		s.release()
		writeError(w, http.StatusServiceUnavailable, ErrShuttingDown.Error())
		return
	}
	// From here the writer goroutine, or the failure paths below, call
	// finish exactly once.
	finish := func() { s.live.done(); s.release() }
	filter, filterErr := ParseFilterQuery(r.URL.Query(), s.cfg.FilterColumns)
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		finish()
		s.log.Debug("websocket upgrade failed", "err", err)
		return
	}
	if filterErr != nil {
		// Said on the socket: a browser cannot read an HTTP error body.
		conn.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		conn.WriteMessage(websocket.TextMessage, ErrorEvent(filterErr.Error()).Frame())
		closeWS(conn, ClosePolicy, "bad filter", s.cfg.WriteTimeout)
		conn.Close()
		finish()
		return
	}
	sess := s.newSession("ws", user, filter)
	sess.SetAbort(func() {
		// Deadlines on the net.Conn are safe to set from another goroutine;
		// a write stuck on a full socket fails within a second.
		_ = conn.UnderlyingConn().SetWriteDeadline(time.Now().Add(time.Second))
	})
	sub, err := s.cfg.Hub.Subscribe(sess, resume)
	if err != nil {
		closeWS(conn, CloseGoingAway, err.Error(), s.cfg.WriteTimeout)
		conn.Close()
		finish()
		return
	}
	s.obs.ClientConnected("ws")
	s.log.Info("User connected: "+user.Name()+" ("+sess.ID+")", "transport", "ws", "remote", r.RemoteAddr)
	// The writer runs in its own goroutine so that this handler returns and
	// the HTTP server lets go of the connection's request state and
	// buffers, which an idle WebSocket does not need.
	go s.writeWS(conn, sess, sub, finish)
}

// writeWS is the connection's single writer; it owns the connection's
// shutdown and starts the reader.
func (s *Server) writeWS(conn *websocket.Conn, sess *Session, sub Subscription, finish func()) {
	defer finish()
	readerDone := make(chan struct{})
	go s.readWS(conn, sess, readerDone)

	write := func(ev *Event) error {
		conn.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		return conn.WritePreparedMessage(ev.prepared())
	}
	ping := func() error {
		return conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.cfg.WriteTimeout))
	}
	err := sess.Pump(context.Background(), sub, s.obs, write, ping, s.cfg.PingInterval)
	s.cfg.Hub.Unsubscribe(sess)
	code, reason := sess.CloseReason()
	var ne net.Error
	switch {
	case code == CloseSlowConsumer:
		// Reset rather than close gracefully: a client that stopped
		// reading would otherwise keep megabytes of socket buffers alive.
		if tcp, ok := conn.UnderlyingConn().(*net.TCPConn); ok {
			_ = tcp.SetLinger(0)
		}
		if err == nil {
			closeWS(conn, code, reason, time.Second)
		}
	case errors.As(err, &ne) && ne.Timeout():
		// The client stopped reading: the same as an overflowing queue.
		reason = "slow consumer (write timed out)"
		s.obs.SlowConsumer("ws")
	case err != nil:
		reason = "write failed: " + err.Error()
	case code != 0:
		closeWS(conn, code, reason, s.cfg.WriteTimeout)
	}
	conn.Close()
	<-readerDone
	s.obs.ClientDisconnected("ws")
	s.log.Info("User disconnected: "+sess.User.Name()+" ("+sess.ID+")", "transport", "ws", "reason", reason)
}

func closeWS(conn *websocket.Conn, code int, reason string, timeout time.Duration) {
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(timeout))
}

// readWS reads until the connection fails. Clients may send one kind of
// message: {"type": "subscribe", "filter": {...}} to change their filter.
func (s *Server) readWS(conn *websocket.Conn, sess *Session, done chan<- struct{}) {
	defer close(done)
	conn.SetReadLimit(wsReadLimit)
	wait := s.cfg.PingInterval + s.cfg.WriteTimeout
	conn.SetReadDeadline(time.Now().Add(wait))
	conn.SetPongHandler(func(string) error {
		conn.SetReadDeadline(time.Now().Add(wait))
		return nil
	})
	for {
		typ, data, err := conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			switch {
			case errors.As(err, &ce):
				sess.Close(0, "client closed ("+ce.Text+")")
			case errors.Is(err, websocket.ErrReadLimit):
				sess.Close(websocket.CloseMessageTooBig, "message too big")
			default:
				sess.Close(0, "connection lost: "+err.Error())
			}
			return
		}
		if typ != websocket.TextMessage {
			sess.Close(websocket.CloseUnsupportedData, "only JSON text messages are accepted")
			return
		}
		if reply := s.clientMessage(sess, data); !sess.offer(reply) {
			sess.Close(CloseSlowConsumer, "slow consumer")
			return
		}
	}
}

// clientMessage handles a message from a client and returns the reply.
func (s *Server) clientMessage(sess *Session, data []byte) *Event {
	var msg struct {
		Type   string          `json:"type"`
		Filter json.RawMessage `json:"filter"`
	}
	if err := json.Unmarshal(data, &msg); err != nil {
		return ErrorEvent("malformed message: want JSON like {\"type\":\"subscribe\",\"filter\":{\"status\":[\"open\"]}}")
	}
	if msg.Type != "subscribe" {
		return ErrorEvent(fmt.Sprintf("unknown message type %q: the only client message is subscribe", msg.Type))
	}
	f, err := ParseFilterJSON(msg.Filter, s.cfg.FilterColumns)
	if err != nil {
		return ErrorEvent(err.Error())
	}
	s.cfg.Hub.SetFilter(sess, f)
	b, _ := json.Marshal(map[string]any{"filter": f})
	return &Event{Name: "subscribed", Data: b, Time: time.Now()}
}
