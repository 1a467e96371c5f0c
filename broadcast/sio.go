package broadcast

// Socket.IO compatibility: /socket.io/ speaks Engine.IO protocol 4 (HTTP
// long-polling with upgrade to WebSocket, or WebSocket alone) and
// Socket.IO protocol 5 on top of it, so dashboards written for
// socket.io-client 4 connect unchanged. Only the main namespace exists;
// events are the ones /ws sends, as 42["name",data(,offset)] packets.
//
// Files: sio.go (configuration, routing, CORS, handshake), sio_engine.go
// (the Engine.IO session and its writer), sio_polling.go and
// sio_websocket.go (the transports), sio_socket.go (the Socket.IO
// namespace: auth, filters, recovery) and sio_packet.go (encoding).

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// SocketIOConfig configures /socket.io/.
type SocketIOConfig struct {
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
	// namespace (45s, as Socket.IO servers do).
	ConnectTimeout time.Duration
	// UpgradeTimeout bounds a WebSocket upgrade of a polling session (10s).
	UpgradeTimeout time.Duration

	// reg holds the live sessions; made on first use (sioRegistryFor).
	reg *sioRegistry
}

func (c SocketIOConfig) withDefaults() SocketIOConfig {
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
		c.ConnectTimeout = 45 * time.Second
	}
	if c.UpgradeTimeout <= 0 {
		c.UpgradeTimeout = 10 * time.Second
	}
	c.reg = nil
	return c
}

// sioTransport is the transport name in metrics and logs.
const sioTransport = "socketio"

// Engine.IO transports, as the engine label of the sessions gauge.
const (
	sioEnginePolling   = "polling"
	sioEngineWebSocket = "websocket"
)

// Upgrade outcomes (Observer.SIOUpgrade).
const (
	sioUpgradeOK        = "ok"
	sioUpgradeAbandoned = "abandoned"
	sioUpgradeRefused   = "refused"
)

// sioCloseKind is why a session closed, as Observer.SIOClosed reports it;
// the free-text reason goes to the log only.
type sioCloseKind string

const (
	sioClosePingTimeout    sioCloseKind = "ping_timeout"    // no pong within pingTimeout
	sioClosePollTimeout    sioCloseKind = "poll_timeout"    // a polling client stopped polling
	sioCloseClient         sioCloseKind = "client"          // the client closed, or its connection was lost
	sioCloseProtocol       sioCloseKind = "protocol"        // the client broke the protocol
	sioCloseSlowConsumer   sioCloseKind = "slow_consumer"   // the client fell behind
	sioCloseShutdown       sioCloseKind = "shutdown"        // the server is shutting down
	sioCloseConnectTimeout sioCloseKind = "connect_timeout" // no CONNECT within ConnectTimeout
)

// sioErrKind is the kind of a protocol error, as Observer.SIOProtocolError
// reports it.
type sioErrKind string

const (
	sioErrParse       sioErrKind = "parse"       // malformed packet, or one a client may not send
	sioErrBinary      sioErrKind = "binary"      // binary payloads, frames or attachments
	sioErrAck         sioErrKind = "ack"         // acknowledgements
	sioErrState       sioErrKind = "state"       // a packet the namespace's state does not allow
	sioErrTooLarge    sioErrKind = "too_large"   // over maxPayload, or too many unanswered requests
	sioErrOverlapping sioErrKind = "overlapping" // two GETs or two POSTs at once
	sioErrBadRequest  sioErrKind = "bad_request" // a request /socket.io/ does not take (answered 400)
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

// sioRegistry holds a server's Engine.IO sessions by sid.
type sioRegistry struct {
	cfg      SocketIOConfig
	mu       sync.Mutex
	sessions map[string]*eioSession
}

// sioRegistryMu guards the lazy creation of registries.
var sioRegistryMu sync.Mutex

// sioRegistryFor returns the server's session registry.
func (s *Server) sioRegistryFor() *sioRegistry {
	sioRegistryMu.Lock()
	defer sioRegistryMu.Unlock()
	if s.cfg.SocketIO.reg == nil {
		s.cfg.SocketIO.reg = &sioRegistry{cfg: s.cfg.SocketIO.withDefaults(), sessions: map[string]*eioSession{}}
	}
	return s.cfg.SocketIO.reg
}

func (g *sioRegistry) get(sid string) *eioSession {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sessions[sid]
}

func (g *sioRegistry) add(e *eioSession) {
	g.mu.Lock()
	g.sessions[e.id] = e
	g.mu.Unlock()
}

func (g *sioRegistry) remove(e *eioSession) {
	g.mu.Lock()
	if g.sessions[e.id] == e {
		delete(g.sessions, e.id)
	}
	g.mu.Unlock()
}

// len counts live sessions (for tests).
func (g *sioRegistry) len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.sessions)
}

// sioID makes a random URL-safe identifier (sids and pids).
func sioID() string {
	var b [15]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// sioCORS grants listed origins access to the polling transport: the
// origin is echoed (never "*"), with credentials when CORS_CREDENTIALS is
// set. Other origins get no grant.
func (s *Server) sioCORS(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return
	}
	w.Header().Add("Vary", "Origin")
	if !s.listedOrigin(origin) {
		return
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	if s.cfg.CORSCredentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	if r.Method == http.MethodOptions {
		h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
		if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
			h.Set("Access-Control-Allow-Headers", req)
		} else {
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
		}
		h.Set("Access-Control-Max-Age", "600")
	}
}

// routeSocketIO registers /socket.io/ for every method a client may use,
// so that any method reaches serveSocketIO (which answers 400 for those
// Engine.IO does not take). A method-less "/socket.io/" pattern would
// conflict with the dashboard's "GET /".
func (s *Server) routeSocketIO() {
	for _, m := range []string{"GET", "POST", "OPTIONS", "PUT", "PATCH", "DELETE"} {
		s.mux.HandleFunc(m+" /socket.io/", s.serveSocketIO)
	}
}

// serveSocketIO is /socket.io/: Engine.IO handshakes, long-polling
// requests and WebSocket connections.
func (s *Server) serveSocketIO(w http.ResponseWriter, r *http.Request) {
	reg := s.sioRegistryFor()
	q := r.URL.Query()
	sid := q.Get("sid")
	if !s.originAllowed(r) {
		if sid == "" && r.Method != http.MethodOptions {
			s.obs.ConnectionRefused(sioTransport, "origin")
		}
		eioError(w, http.StatusForbidden, eioErrForbidden, "origin not allowed: add it to CORS_ORIGINS")
		return
	}
	s.sioCORS(w, r)
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if q.Get("EIO") != "4" {
		s.obs.SIOProtocolError(string(sioErrBadRequest))
		eioError(w, http.StatusBadRequest, eioErrUnsupported, "Unsupported protocol version: socket.io-client 3 or 4 (EIO=4) is required")
		return
	}
	transport := q.Get("transport")
	if transport != sioEnginePolling && transport != sioEngineWebSocket {
		s.obs.SIOProtocolError(string(sioErrBadRequest))
		eioError(w, http.StatusBadRequest, eioErrUnknownTransport, "")
		return
	}
	if q.Has("j") {
		s.obs.SIOProtocolError(string(sioErrBadRequest))
		eioError(w, http.StatusBadRequest, eioErrBadRequest, "JSONP polling is not supported")
		return
	}
	isWS := sioIsUpgrade(r)
	if transport == sioEngineWebSocket && (r.Method != http.MethodGet || !isWS) {
		s.obs.SIOProtocolError(string(sioErrBadRequest))
		eioError(w, http.StatusBadRequest, eioErrBadRequest, "transport=websocket needs a WebSocket upgrade request")
		return
	}
	if sid == "" {
		if r.Method != http.MethodGet {
			s.obs.SIOProtocolError(string(sioErrBadRequest))
			eioError(w, http.StatusBadRequest, eioErrBadHandshake, "")
			return
		}
		s.sioHandshake(w, r, reg, transport)
		return
	}
	e := reg.get(sid)
	if e == nil {
		// Expected after a session expired or the server restarted: the
		// client starts over with a handshake. Not a protocol error, but
		// an upgrade that cannot happen.
		if transport == sioEngineWebSocket {
			s.obs.SIOUpgrade(sioUpgradeRefused)
		}
		eioError(w, http.StatusBadRequest, eioErrUnknownSID, "")
		return
	}
	if transport == sioEngineWebSocket {
		e.serveUpgrade(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet:
		e.servePoll(w, r)
	case http.MethodPost:
		e.servePost(w, r)
	default:
		s.obs.SIOProtocolError(string(sioErrBadRequest))
		eioError(w, http.StatusBadRequest, eioErrBadRequest, "polling takes GET and POST requests")
	}
}

func sioIsUpgrade(r *http.Request) bool {
	return sioHeaderHas(r.Header, "Connection", "upgrade") && sioHeaderHas(r.Header, "Upgrade", "websocket")
}

func sioHeaderHas(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, part := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}

// sioHandshake opens an Engine.IO session. The checks are /ws's, in the
// same order: live updates enabled (503), Origin (403, checked by the
// caller), then the connection limit (503). The token is checked when
// the client joins the namespace, since socket.io-client may send it in
// its CONNECT packet (auth: {token}).
func (s *Server) sioHandshake(w http.ResponseWriter, r *http.Request, reg *sioRegistry, transport string) {
	if !s.cfg.LiveUpdates {
		s.obs.ConnectionRefused(sioTransport, "disabled")
		eioError(w, http.StatusServiceUnavailable, eioErrBadRequest, "live updates are disabled; poll /api/snapshot instead")
		return
	}
	if s.conns.Add(1) > int64(s.cfg.MaxConnections) {
		s.conns.Add(-1)
		s.obs.ConnectionRefused(sioTransport, "limit")
		eioError(w, http.StatusServiceUnavailable, eioErrBadRequest, "too many connections; try again later")
		return
	}
	token := ""
	if s.cfg.Auth != nil {
		token = s.cfg.Auth.TokenFrom(r)
	}
	if transport == sioEngineWebSocket {
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			s.release()
			s.log.Debug("socket.io: websocket upgrade failed", "err", err)
			return
		}
		e := newEIOSession(s, reg, token, r.RemoteAddr, sioEngineWebSocket)
		e.ws = conn
		e.wsConn.Store(conn)
		reg.add(e)
		conn.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		if err := conn.WriteMessage(websocket.TextMessage, eioOpenPacket(e.id, nil, reg.cfg)); err != nil {
			e.close(sioCloseClient, "handshake write failed: "+err.Error(), true, 0)
			return
		}
		go e.run()
		e.readWS(conn)
		return
	}
	e := newEIOSession(s, reg, token, r.RemoteAddr, sioEnginePolling)
	reg.add(e)
	e.mu.Lock()
	e.armPollTimer()
	e.mu.Unlock()
	go e.run()
	eioWriteText(w, eioOpenPacket(e.id, []string{"websocket"}, reg.cfg))
}

// eioWriteText answers a polling request.
func eioWriteText(w http.ResponseWriter, body []byte) {
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}
