// Package socketio serves /socket.io/: Engine.IO protocol 4 (HTTP
// long-polling with upgrade to WebSocket, or WebSocket alone) and
// Socket.IO protocol 5 on top of it, so dashboards written for
// socket.io-client 4 connect unchanged. Only the main namespace exists;
// events are the ones /ws sends, as 42["name",data(,offset)] packets.
//
// Files: socketio.go (configuration, routing, CORS, handshake), engine.go
// (the Engine.IO session and its writer), polling.go and websocket.go (the
// Engine.IO transports), socket.go (the Socket.IO namespace: auth,
// filters, recovery) and packet.go (encoding).
package socketio

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"rowcast/broadcast"
	"rowcast/broadcast/wsframe"
)

// Config configures /socket.io/.
type Config struct {
	// PingInterval is how often the server pings each client
	// (ROWCAST_SIO_PING_INTERVAL, 25s).
	PingInterval time.Duration
	// PingTimeout is how long a pong may take before the session is
	// closed (ROWCAST_SIO_PING_TIMEOUT, 20s). A polling client that does
	// not poll for PingInterval+PingTimeout is closed too.
	PingTimeout time.Duration
	// MaxPayload is the most bytes a client may send in one long-polling
	// request or WebSocket message (ROWCAST_SIO_MAX_PAYLOAD, 1000000).
	MaxPayload int
	// ConnectTimeout closes a session that has not joined the main
	// namespace, or has left it, for this long (ROWCAST_SIO_CONNECT_TIMEOUT,
	// 10s: socket.io-client sends CONNECT right after the handshake).
	ConnectTimeout time.Duration
	// MaxPending caps the sessions without a joined namespace
	// (ROWCAST_SIO_MAX_PENDING, 1000); more handshakes get 503.
	MaxPending int
	// UpgradeTimeout bounds a WebSocket upgrade of a polling session (10s).
	UpgradeTimeout time.Duration
	// WriteTimeout bounds each WebSocket write (10s).
	WriteTimeout time.Duration

	// Gate admits clients; the namespace's CONNECT takes the connection
	// slot once its token is checked.
	Gate *broadcast.Gate
	// Observer is told about Engine.IO sessions (nil: nobody).
	Observer Observer
}

func (c Config) withDefaults() Config {
	if c.PingInterval <= 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.PingTimeout <= 0 {
		c.PingTimeout = 20 * time.Second
	}
	if c.MaxPayload <= 0 {
		c.MaxPayload = 1000000
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 1000
	}
	if c.UpgradeTimeout <= 0 {
		c.UpgradeTimeout = 10 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	return c
}

// Observer is told what the Engine.IO layer does; package metrics turns
// it into the rowcast_socketio_* series. What every transport reports
// (connections, deliveries) goes to the gate's broadcast.Observer.
type Observer interface {
	// Session moves the count of open Engine.IO sessions on engine
	// ("polling" or "websocket", the session's current transport) by
	// delta: +1 at the handshake, -1 when the session closes, and -1/+1
	// when an upgrade moves a session from polling to websocket.
	Session(engine string, delta int)
	// Upgrade counts a WebSocket upgrade of a polling session by outcome:
	// "ok", "abandoned" (the probe failed or the client gave up; polling
	// goes on) or "refused" (the server turned the request down).
	Upgrade(outcome string)
	// ProtocolError counts a client breaking the Engine.IO or Socket.IO
	// protocol, by kind: "parse", "binary", "ack", "state", "too_large",
	// "overlapping" or "bad_request".
	ProtocolError(kind string)
	// Closed counts a closed Engine.IO session by reason: "ping_timeout",
	// "poll_timeout", "client", "protocol", "slow_consumer", "shutdown",
	// "connect_timeout" or "token_expired".
	Closed(reason string)
}

type nopObserver struct{}

func (nopObserver) Session(string, int)  {}
func (nopObserver) Upgrade(string)       {}
func (nopObserver) ProtocolError(string) {}
func (nopObserver) Closed(string)        {}

// Handler serves /socket.io/ and owns its sessions.
type Handler struct {
	cfg  Config
	gate *broadcast.Gate
	obs  Observer
	log  *slog.Logger
	reg  *registry
}

// New makes the handler.
func New(cfg Config) *Handler {
	cfg = cfg.withDefaults()
	return &Handler{cfg: cfg, gate: cfg.Gate, obs: cfg.Observer, log: cfg.Gate.Logger(),
		reg: &registry{sessions: map[string]*eioSession{}}}
}

// upgrader makes the WebSockets. Origin is checked before the upgrade;
// write buffers are shared between connections while idle.
var upgrader = websocket.Upgrader{
	// gorilla does the handshake only; its Conn and buffers are let go
	// once it is done (wsframe reads and writes the connection), so the
	// buffers are kept small and shared.
	ReadBufferSize:  256,
	WriteBufferSize: 4096,
	CheckOrigin:     func(*http.Request) bool { return true },
	WriteBufferPool: &sync.Pool{},
}

// Transport is the transport name in metrics and logs.
const Transport = "socketio"

// Engine.IO transports, as the engine label of the sessions gauge.
const (
	enginePolling   = "polling"
	engineWebSocket = "websocket"
)

// Upgrade outcomes (Observer.SIOUpgrade).
const (
	upgradeOK        = "ok"
	upgradeAbandoned = "abandoned"
	upgradeRefused   = "refused"
)

// closeKind is why a session closed, as Observer.SIOClosed reports it;
// the free-text reason goes to the log only.
type closeKind string

const (
	closePingTimeout    closeKind = "ping_timeout"    // no pong within pingTimeout
	closePollTimeout    closeKind = "poll_timeout"    // a polling client stopped polling
	closeClient         closeKind = "client"          // the client closed, or its connection was lost
	closeProtocol       closeKind = "protocol"        // the client broke the protocol
	closeSlowConsumer   closeKind = "slow_consumer"   // the client fell behind
	closeShutdown       closeKind = "shutdown"        // the server is shutting down
	closeConnectTimeout closeKind = "connect_timeout" // no CONNECT within ConnectTimeout
	closeTokenExpired   closeKind = "token_expired"   // the user's token expired
)

// errKind is the kind of a protocol error, as Observer.SIOProtocolError
// reports it.
type errKind string

const (
	errParse       errKind = "parse"       // malformed packet, or one a client may not send
	errBinary      errKind = "binary"      // binary payloads, frames or attachments
	errAck         errKind = "ack"         // acknowledgements
	errState       errKind = "state"       // a packet the namespace's state does not allow
	errTooLarge    errKind = "too_large"   // over maxPayload, or too many unanswered requests
	errOverlapping errKind = "overlapping" // two GETs or two POSTs at once
	errBadRequest  errKind = "bad_request" // a request /socket.io/ does not take (answered 400)
)

// Engine.IO error codes, sent as {"code":N,"message":"..."}.
const (
	eioErrUnknownTransport = 0
	eioErrUnknownSID       = 1
	eioErrBadHandshake     = 2
	eioErrBadRequest       = 3
	eioErrForbidden        = 4
	eioErrUnsupported      = 5
)

var eioErrMessages = map[int]string{
	eioErrUnknownTransport: "Transport unknown",
	eioErrUnknownSID:       "Session ID unknown",
	eioErrBadHandshake:     "Bad handshake method",
	eioErrBadRequest:       "Bad request",
	eioErrForbidden:        "Forbidden",
	eioErrUnsupported:      "Unsupported protocol version",
}

func eioError(w http.ResponseWriter, status, code int, msg string) {
	if msg == "" {
		msg = eioErrMessages[code]
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{code, msg})
}

// registry holds the handler's Engine.IO sessions by sid, and counts the
// pending ones: sessions that hold no connection slot because their
// namespace is not joined (no authenticated CONNECT yet). Those are capped
// apart from the connection limit, so anonymous handshakes can neither
// lock authenticated users out nor pile up without bound.
type registry struct {
	mu       sync.Mutex
	sessions map[string]*eioSession
	pending  int
}

// reserve counts a session about to be made as pending; false means the
// cap is reached. add then registers it.
func (g *registry) reserve(max int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pending >= max {
		return false
	}
	g.pending++
	return true
}

// unreserve gives back a reservation that did not become a session.
func (g *registry) unreserve() {
	g.mu.Lock()
	g.pending--
	g.mu.Unlock()
}

// add registers a session reserved as pending.
func (g *registry) add(e *eioSession) {
	g.mu.Lock()
	e.pending = true
	g.sessions[e.id] = e
	g.mu.Unlock()
}

// setPending moves a session in or out of the pending count. Called with
// e.mu held.
func (g *registry) setPending(e *eioSession, pending bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if e.pending == pending {
		return
	}
	e.pending = pending
	if pending {
		g.pending++
	} else {
		g.pending--
	}
}

func (g *registry) get(sid string) *eioSession {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sessions[sid]
}

func (g *registry) remove(e *eioSession) {
	g.mu.Lock()
	if g.sessions[e.id] == e {
		delete(g.sessions, e.id)
	}
	g.mu.Unlock()
}

// len counts live sessions (for tests).
func (g *registry) len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.sessions)
}

// newID makes a random URL-safe identifier (sids and pids).
func newID() string {
	var b [15]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// ServeHTTP is /socket.io/: Engine.IO handshakes, long-polling
// requests and WebSocket connections.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sid := q.Get("sid")
	if !h.gate.OriginAllowed(r) {
		if sid == "" && r.Method != http.MethodOptions {
			h.gate.Open(r, Transport) // counts the refusal
		}
		eioError(w, http.StatusForbidden, eioErrForbidden, "origin not allowed: add it to CORS_ORIGINS")
		return
	}
	h.gate.CORS(w, r, "GET, POST, OPTIONS")
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if q.Get("EIO") != "4" {
		h.obs.ProtocolError(string(errBadRequest))
		eioError(w, http.StatusBadRequest, eioErrUnsupported, "Unsupported protocol version: socket.io-client 3 or 4 (EIO=4) is required")
		return
	}
	transport := q.Get("transport")
	if transport != enginePolling && transport != engineWebSocket {
		h.obs.ProtocolError(string(errBadRequest))
		eioError(w, http.StatusBadRequest, eioErrUnknownTransport, "")
		return
	}
	if q.Has("j") {
		h.obs.ProtocolError(string(errBadRequest))
		eioError(w, http.StatusBadRequest, eioErrBadRequest, "JSONP polling is not supported")
		return
	}
	isWS := isUpgrade(r)
	if transport == engineWebSocket && (r.Method != http.MethodGet || !isWS) {
		h.obs.ProtocolError(string(errBadRequest))
		eioError(w, http.StatusBadRequest, eioErrBadRequest, "transport=websocket needs a WebSocket upgrade request")
		return
	}
	if sid == "" {
		if r.Method != http.MethodGet {
			h.obs.ProtocolError(string(errBadRequest))
			eioError(w, http.StatusBadRequest, eioErrBadHandshake, "")
			return
		}
		h.handshake(w, r, transport)
		return
	}
	e := h.reg.get(sid)
	if e == nil {
		// Expected after a session expired or the server restarted: the
		// client starts over with a handshake. Not a protocol error, but
		// an upgrade that cannot happen.
		if transport == engineWebSocket {
			h.obs.Upgrade(upgradeRefused)
		}
		eioError(w, http.StatusBadRequest, eioErrUnknownSID, "")
		return
	}
	if transport == engineWebSocket {
		e.serveUpgrade(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet:
		e.servePoll(w, r)
	case http.MethodPost:
		e.servePost(w, r)
	default:
		h.obs.ProtocolError(string(errBadRequest))
		eioError(w, http.StatusBadRequest, eioErrBadRequest, "polling takes GET and POST requests")
	}
}

func isUpgrade(r *http.Request) bool {
	return headerHas(r.Header, "Connection", "upgrade") && headerHas(r.Header, "Upgrade", "websocket")
}

func headerHas(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, part := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}

// handshake opens an Engine.IO session: live updates must be enabled
// (503; Origin was checked by the caller). The token and the connection
// limit are checked when the client joins the namespace, since
// socket.io-client may send the token in its CONNECT packet (auth:
// {token}); a session that never joins holds no connection slot.
func (h *Handler) handshake(w http.ResponseWriter, r *http.Request, transport string) {
	if ref := h.gate.Open(r, Transport); ref != nil {
		eioError(w, ref.Status, eioErrBadRequest, ref.Message)
		return
	}
	token := h.gate.TokenFrom(r)
	if !h.reg.reserve(h.cfg.MaxPending) {
		ref := h.gate.Refuse(Transport, http.StatusServiceUnavailable, "pending",
			"too many Socket.IO sessions waiting for CONNECT; try again later")
		eioError(w, ref.Status, eioErrBadRequest, ref.Message)
		return
	}
	if transport == engineWebSocket {
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			h.reg.unreserve()
			h.log.Debug("socket.io: websocket upgrade failed", "err", err)
			return
		}
		// gorilla's Conn is done with once the handshake is: wsframe
		// reads and writes the net.Conn, and the Conn's buffers go.
		nc := conn.NetConn()
		e := newEIOSession(h, token, r.RemoteAddr, engineWebSocket)
		e.ws = nc
		e.wsConn.Store(nc)
		h.reg.add(e)
		open := eioOpenPacket(e.id, nil, h.cfg)
		if err := e.writeWS(nc, h.cfg.WriteTimeout, func(b *wsframe.Batch) { b.Add(wsframe.Text(open)) }); err != nil {
			e.close(closeClient, "handshake write failed: "+err.Error(), true, 0)
			return
		}
		go e.run()
		// The reader runs in its own goroutine so that this handler
		// returns and the HTTP server lets go of the request and its
		// buffers, which an idle WebSocket does not need.
		go e.readWS(nc, wsframe.NewReader(nc, h.cfg.MaxPayload))
		return
	}
	e := newEIOSession(h, token, r.RemoteAddr, enginePolling)
	h.reg.add(e)
	e.mu.Lock()
	e.armPollTimer()
	e.mu.Unlock()
	go e.run()
	eioWriteText(w, eioOpenPacket(e.id, []string{"websocket"}, h.cfg))
}

// eioWriteText answers a polling request.
func eioWriteText(w http.ResponseWriter, body []byte) {
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}
