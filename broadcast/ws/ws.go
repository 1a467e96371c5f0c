// Package ws is the plain WebSocket transport at /ws: each event is one
// JSON text message {"id":...,"event":...,"data":...}; clients may send
// {"type":"subscribe","filter":{...}} to change their filter.
package ws

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"rowcast/broadcast"
	"rowcast/broadcast/wsframe"
)

// Transport is the name in metrics and logs.
const Transport = "ws"

// readLimit bounds what a client may send: only control frames and small
// JSON messages are expected.
const readLimit = 4096

// frames holds each event's text frame (header and JSON payload), built
// once and written as it is to every /ws client: server frames are not
// masked, so the bytes are the same for all.
var frames = broadcast.NewEncoding("ws", func(ev *broadcast.Event) []byte {
	b := wsframe.Reserve(broadcast.JSONFrameSize(ev))
	return wsframe.Seal(wsframe.OpText, broadcast.AppendJSONFrame(b, ev))
})

// pingFrame is the server's ping (no payload).
var pingFrame = wsframe.Control(wsframe.OpPing, nil)

// Upgrader is shared by the WebSocket transports. Origin is checked by
// the gate before the upgrade.
var Upgrader = websocket.Upgrader{
	// gorilla does the handshake only; its Conn and buffers are let go
	// once it is done (wsframe reads and writes the connection), so the
	// buffers are kept small and shared.
	ReadBufferSize:  256,
	WriteBufferSize: 4096,
	CheckOrigin:     func(*http.Request) bool { return true },
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
	// From here the connection is the net.Conn: frames are written
	// straight to it and read by a wsframe.Reader, and gorilla's Conn,
	// done with once the handshake is, is let go with its buffers.
	nc := conn.NetConn()
	sess := h.gate.NewSession(Transport, user, filter)
	sess.SetAbort(func() {
		// Deadlines on the net.Conn are safe to set from another goroutine;
		// a write stuck on a full socket fails within a second.
		_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
	})
	sub, err := h.gate.Hub().Subscribe(sess, cursor)
	if err != nil {
		closeConn(conn, broadcast.CloseGoingAway, err.Error(), h.cfg.WriteTimeout)
		conn.Close()
		slot.Release()
		return
	}
	h.gate.Connected(sess, r.RemoteAddr)
	// The connection's reader runs in its own goroutine so that this
	// handler returns and the HTTP server lets go of the connection's
	// request state and buffers, which an idle WebSocket does not need. A
	// writer goroutine runs only while there is something to write
	// (Session.Start): an idle connection has one goroutine.
	c := &client{h: h, nc: nc, sess: sess, ended: make(chan struct{})}
	// The session's writer is started here, not by run: the reader's
	// goroutine waits through the idle hours, and one whose stack grew
	// once keeps the larger stack.
	sess.Start(sub, c, h.cfg.PingInterval, c.end)
	go c.run(slot)
}

// client is one /ws connection: the Transport its session writes to.
// Every frame the server sends after the upgrade (events, pings, pongs,
// the close frame) is written by the session's single writer, straight
// to the net.Conn, and a wsframe.Reader reads: gorilla does the
// handshake only, so nothing interleaves.
type client struct {
	h    *Handler
	nc   net.Conn
	sess *broadcast.Session

	// mu guards what the reader hands the writer.
	mu   sync.Mutex
	pong []byte // a pong frame to send (the latest ping's)
	echo []byte // the close frame answering the client's, sent at the end

	// Writer only.
	batch wsframe.Batch
	// ended is closed when the writer has said goodbye and closed the
	// connection; d is how the connection ended.
	ended chan struct{}
	d     broadcast.Disconnect
}

// Write sends the events, and a pending pong, in one system call.
func (c *client) Write(evs []*broadcast.Event) error {
	c.mu.Lock()
	pong := c.pong
	c.pong = nil
	c.mu.Unlock()
	c.batch.Add(pong)
	for _, ev := range evs {
		c.batch.Add(frames.Of(ev))
	}
	return c.flush(c.h.cfg.WriteTimeout)
}

func (c *client) Ping() error {
	c.batch.Add(pingFrame)
	return c.flush(c.h.cfg.WriteTimeout)
}

// flush writes the batch. A session the hub drops while this write is
// under way gets its deadline shortened (SetAbort); setting ours first
// and then looking at the session keeps ours from undoing that.
func (c *client) flush(timeout time.Duration) error {
	if c.batch.Len() == 0 {
		return nil
	}
	if err := c.nc.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		c.batch.Reset()
		return fmt.Errorf("setting the write deadline: %w", err)
	}
	select {
	case <-c.sess.Done():
		c.batch.Reset()
		return nil // dropped: the writer ends without writing a backlog
	default:
	}
	if err := c.batch.Flush(c.nc, time.Time{}); err != nil {
		return fmt.Errorf("writing frames: %w", err)
	}
	return nil
}

// run is the connection's reader and owner: it reads until the
// connection fails or the session ends, then waits for the writer's
// goodbye and releases the connection.
func (c *client) run(slot *broadcast.Slot) {
	defer slot.Release()
	c.read() // closes the session whenever it returns
	<-c.ended
	c.h.gate.Disconnected(c.sess, c.d)
}

// end is called by the session's last writer: it says goodbye as the
// outcome asks and closes the connection, which ends the reader.
func (c *client) end(err error) {
	c.h.gate.Hub().Unsubscribe(c.sess)
	c.d = c.sess.Outcome(err)
	c.close(c.d)
	close(c.ended)
}

// close says goodbye as d asks (writer only).
func (c *client) close(d broadcast.Disconnect) {
	switch {
	case d.Kind == broadcast.DisconnectSlowConsumer:
		// Reset rather than close gracefully: a client that stopped
		// reading would otherwise keep megabytes of socket buffers alive.
		if tcp, ok := c.nc.(*net.TCPConn); ok {
			_ = tcp.SetLinger(0)
		}
		if d.Code != 0 {
			c.batch.Add(wsframe.Close(d.Code, d.Reason))
			_ = c.batch.Flush(c.nc, time.Now().Add(time.Second))
		}
	case d.Code != 0:
		c.batch.Add(wsframe.Close(d.Code, d.Reason))
		_ = c.batch.Flush(c.nc, time.Now().Add(c.h.cfg.WriteTimeout))
	default:
		// The client closed: answer its close frame, as gorilla would.
		c.mu.Lock()
		echo := c.echo
		c.mu.Unlock()
		if echo != nil {
			c.batch.Add(echo)
			_ = c.batch.Flush(c.nc, time.Now().Add(time.Second))
		}
	}
	c.nc.Close()
}

func closeConn(conn *websocket.Conn, code int, reason string, timeout time.Duration) {
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(timeout))
}

// errOnlyText and errSlow end the reader (see read).
var (
	errOnlyText = errors.New("only JSON text messages are accepted")
	errSlow     = errors.New("slow consumer")
)

// read reads until the connection fails, answering subscribe messages,
// and closes the session when it returns. Pings and close frames from
// the client are answered by the writer, never from here.
func (c *client) read() {
	sess := c.sess
	wait := c.h.cfg.PingInterval + c.h.cfg.WriteTimeout
	c.nc.SetReadDeadline(time.Now().Add(wait))
	err := wsframe.NewReader(c.nc, readLimit).Serve(func(op byte, p []byte) error {
		switch op {
		case wsframe.OpPong:
			return c.nc.SetReadDeadline(time.Now().Add(wait))
		case wsframe.OpPing:
			c.mu.Lock()
			c.pong = wsframe.Control(wsframe.OpPong, p)
			c.mu.Unlock()
			sess.Wake()
			return nil
		case wsframe.OpText:
			if !sess.Offer(c.h.gate.ClientMessage(sess, p)) {
				return errSlow
			}
			return nil
		}
		return errOnlyText
	})
	var ce *wsframe.CloseError
	switch {
	case errors.As(err, &ce):
		// Answered when the writer says goodbye: the code echoed, or an
		// empty close frame for one without a status.
		c.mu.Lock()
		c.echo = ce.Echo()
		c.mu.Unlock()
		sess.Close(0, "client closed ("+ce.Text+")")
	case errors.Is(err, wsframe.ErrTooBig):
		sess.Close(broadcast.CloseTooBig, "message too big")
	case errors.Is(err, wsframe.ErrProtocol):
		sess.Close(broadcast.CloseProtocol, err.Error())
	case err == errOnlyText:
		sess.Close(broadcast.CloseUnsupported, err.Error())
	case err == errSlow:
		sess.SlowConsumer()
	default:
		sess.Close(0, "connection lost: "+err.Error())
	}
}
