// Package ws is the plain WebSocket transport at /ws: each event is one
// JSON text message {"id":...,"event":...,"data":...}; clients may send
// {"type":"subscribe","filter":{...}} to change their filter.
package ws

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"rowcast/broadcast"
)

// Transport is the name in metrics and logs.
const Transport = "ws"

// readLimit bounds what a client may send: only control frames and small
// JSON messages are expected.
const readLimit = 4096

// prepared frames each event once for every /ws client.
var prepared = broadcast.NewEncoding("ws", func(ev *broadcast.Event) *websocket.PreparedMessage {
	pm, _ := websocket.NewPreparedMessage(websocket.TextMessage, broadcast.JSONFrame.Of(ev))
	return pm
})

// Upgrader is shared by the WebSocket transports. Origin is checked by
// the gate before the upgrade.
var Upgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferSize: 4096,
	CheckOrigin:     func(*http.Request) bool { return true },
	// Buffers are shared between connections while idle, which keeps
	// memory per idle client small.
	WriteBufferPool: &sync.Pool{},
}

// Config configures the handler.
type Config struct {
	Gate *broadcast.Gate
	// PingInterval is how often the server pings (25s); a client that
	// does not answer within PingInterval+WriteTimeout is dropped.
	PingInterval time.Duration
	// WriteTimeout bounds each write (10s); a client that stops reading
	// is a slow consumer.
	WriteTimeout time.Duration
}

// Handler serves GET /ws.
type Handler struct {
	cfg  Config
	gate *broadcast.Gate
}

// New makes the handler.
func New(cfg Config) *Handler {
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 25 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	return &Handler{cfg: cfg, gate: cfg.Gate}
}

// ServeHTTP admits the client, upgrades the connection and starts its
// writer; the handler returns at once.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cursor := r.URL.Query().Get("lastEventId")
	user, slot, ref := h.gate.Admit(r, Transport, cursor)
	if ref != nil {
		ref.WriteJSON(w)
		return
	}
	// From here the writer goroutine, or the failure paths below, release
	// the slot exactly once.
	filter, filterErr := h.gate.ParseFilterQuery(r.URL.Query())
	conn, err := Upgrader.Upgrade(w, r, nil)
	if err != nil {
		slot.Release()
		h.gate.Logger().Debug("websocket upgrade failed", "err", err)
		return
	}
	if filterErr != nil {
		// Said on the socket: a browser cannot read an HTTP error body.
		conn.SetWriteDeadline(time.Now().Add(h.cfg.WriteTimeout))
		conn.WriteMessage(websocket.TextMessage, broadcast.ErrorEvent(filterErr.Error()).Frame())
		closeConn(conn, broadcast.ClosePolicy, "bad filter", h.cfg.WriteTimeout)
		conn.Close()
		slot.Release()
		return
	}
	sess := h.gate.NewSession(Transport, user, filter)
	sess.SetAbort(func() {
		// Deadlines on the net.Conn are safe to set from another goroutine;
		// a write stuck on a full socket fails within a second.
		_ = conn.UnderlyingConn().SetWriteDeadline(time.Now().Add(time.Second))
	})
	sub, err := h.gate.Hub().Subscribe(sess, cursor)
	if err != nil {
		closeConn(conn, broadcast.CloseGoingAway, err.Error(), h.cfg.WriteTimeout)
		conn.Close()
		slot.Release()
		return
	}
	h.gate.Connected(sess, r.RemoteAddr)
	// The writer runs in its own goroutine so that this handler returns and
	// the HTTP server lets go of the connection's request state and
	// buffers, which an idle WebSocket does not need.
	c := &client{h: h, conn: conn, sess: sess}
	go c.run(sub, slot)
}

// client is one /ws connection: the Transport its session writes to.
type client struct {
	h    *Handler
	conn *websocket.Conn
	sess *broadcast.Session
}

func (c *client) Write(evs []*broadcast.Event) error {
	if len(evs) == 0 {
		return nil
	}
	c.conn.SetWriteDeadline(time.Now().Add(c.h.cfg.WriteTimeout))
	for _, ev := range evs {
		if err := c.conn.WritePreparedMessage(prepared.Of(ev)); err != nil {
			return err
		}
	}
	return nil
}

func (c *client) Ping() error {
	return c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.h.cfg.WriteTimeout))
}

// run is the connection's single writer; it owns the connection's
// shutdown and starts the reader.
func (c *client) run(sub broadcast.Subscription, slot *broadcast.Slot) {
	defer slot.Release()
	readerDone := make(chan struct{})
	go c.read(readerDone)

	err := c.sess.Pump(context.Background(), sub, c, c.h.cfg.PingInterval)
	c.h.gate.Hub().Unsubscribe(c.sess)
	d := c.sess.Outcome(err)
	c.close(d)
	<-readerDone
	c.h.gate.Disconnected(c.sess, d)
}

// close says goodbye as d asks.
func (c *client) close(d broadcast.Disconnect) {
	switch {
	case d.Kind == broadcast.DisconnectSlowConsumer:
		// Reset rather than close gracefully: a client that stopped
		// reading would otherwise keep megabytes of socket buffers alive.
		if tcp, ok := c.conn.UnderlyingConn().(*net.TCPConn); ok {
			_ = tcp.SetLinger(0)
		}
		if d.Code != 0 {
			closeConn(c.conn, d.Code, d.Reason, time.Second)
		}
	case d.Code != 0:
		closeConn(c.conn, d.Code, d.Reason, c.h.cfg.WriteTimeout)
	}
	c.conn.Close()
}

func closeConn(conn *websocket.Conn, code int, reason string, timeout time.Duration) {
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(timeout))
}

// read reads until the connection fails, answering subscribe messages.
func (c *client) read(done chan<- struct{}) {
	defer close(done)
	conn, sess := c.conn, c.sess
	conn.SetReadLimit(readLimit)
	wait := c.h.cfg.PingInterval + c.h.cfg.WriteTimeout
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
				sess.Close(broadcast.CloseTooBig, "message too big")
			default:
				sess.Close(0, "connection lost: "+err.Error())
			}
			return
		}
		if typ != websocket.TextMessage {
			sess.Close(broadcast.CloseUnsupported, "only JSON text messages are accepted")
			return
		}
		if !sess.Offer(c.h.gate.ClientMessage(sess, data)) {
			sess.SlowConsumer()
			return
		}
	}
}
