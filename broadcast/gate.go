package broadcast

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// GateConfig configures the admission gate.
type GateConfig struct {
	Hub *Hub
	// Auth checks tokens; nil means ROWCAST_AUTH=off.
	Auth *Auth
	// Visibility maps users to the rows they may see (nil: all).
	Visibility *Visibility
	// FilterColumns are the columns clients may filter on.
	FilterColumns []string
	// Origins is the allowlist for cross-origin clients ("*" allows any).
	Origins []string
	// CORSCredentials lets allowed origins send cookies (CORS_CREDENTIALS).
	CORSCredentials bool
	// LiveUpdates false refuses every stream (503) so dashboards poll.
	LiveUpdates    bool
	MaxConnections int
	// QueueSize bounds each session's send queue.
	QueueSize int
	// KeepAfterTokenExpiry keeps sessions open past their token's exp
	// (ROWCAST_CLOSE_ON_TOKEN_EXPIRY=false); by default a session ends,
	// with close code 4001, when its token expires.
	KeepAfterTokenExpiry bool
	Observer             Observer
	Logger               *slog.Logger
}

// Gate is the one way into a live stream, whatever the transport. Admit
// runs the checks in one order: live updates enabled (503), Origin (403),
// token (401), then the connection limit (503), and every refusal is
// counted by transport and reason. An admitted client holds a Slot until
// its connection has ended; shutdown waits for every slot.
//
// The gate also holds the policy sessions are made with: the user's scope
// (visibility) and the filters a client may ask for.
type Gate struct {
	cfg   GateConfig
	log   *slog.Logger
	obs   Observer
	conns atomic.Int64
	live  liveConns
}

// NewGate makes a gate.
func NewGate(cfg GateConfig) *Gate {
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = 10000
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Gate{cfg: cfg, log: cfg.Logger, obs: cfg.Observer}
}

// Hub is the hub sessions subscribe to.
func (g *Gate) Hub() *Hub { return g.cfg.Hub }

// Auth is the authenticator (nil when authentication is off).
func (g *Gate) Auth() *Auth { return g.cfg.Auth }

// Observer is what transports report to.
func (g *Gate) Observer() Observer { return g.obs }

// Logger is the gate's logger.
func (g *Gate) Logger() *slog.Logger { return g.log }

// FilterColumns are the columns clients may filter on.
func (g *Gate) FilterColumns() []string { return g.cfg.FilterColumns }

// LiveUpdates reports whether streams are enabled.
func (g *Gate) LiveUpdates() bool { return g.cfg.LiveUpdates }

// Refusal is why a client was turned away: the HTTP status, the reason
// label counted in metrics, and the message for the client.
type Refusal struct {
	Status  int
	Reason  string
	Message string
}

func (r *Refusal) Error() string { return r.Message }

// WriteJSON answers the request with the refusal as {"error": message}.
// A refusal that may clear by itself (503) says when to retry.
func (r *Refusal) WriteJSON(w http.ResponseWriter) {
	if r.Status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	WriteError(w, r.Status, r.Message)
}

// Refuse counts a refusal a transport decides on its own (e.g. a cap of
// its own) and returns it.
func (g *Gate) Refuse(transport string, status int, reason, msg string) *Refusal {
	return g.refuse(transport, status, reason, msg)
}

func (g *Gate) refuse(transport string, status int, reason, msg string) *Refusal {
	g.obs.ConnectionRefused(transport, reason)
	return &Refusal{Status: status, Reason: reason, Message: msg}
}

// Open checks what comes before any credentials: live updates are on and
// the request's Origin is allowed.
func (g *Gate) Open(r *http.Request, transport string) *Refusal {
	if !g.cfg.LiveUpdates {
		return g.refuse(transport, http.StatusServiceUnavailable, "disabled", "live updates are disabled; poll /api/snapshot instead")
	}
	if !g.OriginAllowed(r) {
		return g.refuse(transport, http.StatusForbidden, "origin", "origin not allowed: add it to CORS_ORIGINS")
	}
	return nil
}

// Verify checks a token (from the request, or one a transport received
// in its own protocol).
func (g *Gate) Verify(token, transport string) (Identity, *Refusal) {
	user, err := g.cfg.Auth.Verify(token)
	if err != nil {
		return Identity{}, g.refuse(transport, http.StatusUnauthorized, "auth", err.Error())
	}
	return user, nil
}

// TokenFrom is the request's token ("" when authentication is off).
func (g *Gate) TokenFrom(r *http.Request) string {
	if g.cfg.Auth == nil {
		return ""
	}
	return g.cfg.Auth.TokenFrom(r)
}

// Take reserves a connection slot for an authenticated client: under the
// limit, and not while the server shuts down.
func (g *Gate) Take(transport string) (*Slot, *Refusal) {
	if g.conns.Add(1) > int64(g.cfg.MaxConnections) {
		g.conns.Add(-1)
		return nil, g.refuse(transport, http.StatusServiceUnavailable, "limit", "too many connections; try again later")
	}
	if !g.live.add() {
		g.conns.Add(-1)
		return nil, &Refusal{Status: http.StatusServiceUnavailable, Reason: "shutdown", Message: ErrShuttingDown.Error()}
	}
	return &Slot{g: g}, nil
}

// Admit runs every check for a request that carries its credentials
// (WebSocket, SSE); cursor is the client's lastEventId, if any. The caller
// releases the slot when the connection ends.
func (g *Gate) Admit(r *http.Request, transport, cursor string) (Identity, *Slot, *Refusal) {
	if ref := g.Open(r, transport); ref != nil {
		return Identity{}, nil, ref
	}
	if cursor != "" && !g.cfg.Hub.Started() {
		// Answered before any credentials are checked: it says nothing
		// but "come back in a moment".
		return Identity{}, nil, g.refuse(transport, http.StatusServiceUnavailable, "starting",
			"capture is starting; retry in a moment to resume from lastEventId")
	}
	user, ref := g.Verify(g.TokenFrom(r), transport)
	if ref != nil {
		return Identity{}, nil, ref
	}
	slot, ref := g.Take(transport)
	if ref != nil {
		return Identity{}, nil, ref
	}
	return user, slot, nil
}

// Slot is an admitted connection. Release it exactly when the connection's
// goroutines are done; releasing twice does nothing.
type Slot struct {
	g    *Gate
	once sync.Once
}

// Release gives the slot back.
func (s *Slot) Release() {
	if s == nil {
		return
	}
	s.once.Do(func() {
		s.g.conns.Add(-1)
		s.g.live.done()
	})
}

// Wait refuses new slots and returns when every slot has been released
// (after Hub.Shutdown has told the sessions to close).
func (g *Gate) Wait() { g.live.wait() }

// NewSession makes a session for an admitted user with the filter the
// client asked for.
func (g *Gate) NewSession(transport string, user Identity, filter Filter) *Session {
	s := NewSession(transport, user, g.ScopeFor(user), filter, g.cfg.QueueSize, g.obs)
	if !g.cfg.KeepAfterTokenExpiry && g.cfg.Auth != nil {
		s.expires = user.Expires
	}
	return s
}

// ScopeFor is what a user may see; without auth there are no users and
// the visibility rule does not apply.
func (g *Gate) ScopeFor(user Identity) Scope {
	if g.cfg.Auth == nil {
		return Scope{All: true}
	}
	return g.cfg.Visibility.ScopeFor(user)
}

// ParseFilterQuery reads a filter from query parameters.
func (g *Gate) ParseFilterQuery(q url.Values) (Filter, error) {
	return ParseFilterQuery(q, g.cfg.FilterColumns)
}

// ParseFilterJSON reads a filter from a JSON object.
func (g *Gate) ParseFilterJSON(raw json.RawMessage) (Filter, error) {
	return ParseFilterJSON(raw, g.cfg.FilterColumns)
}

// ClientMessage handles a message from a client and returns the reply.
// Clients may send one kind of message: {"type": "subscribe", "filter":
// {...}} to change their filter.
func (g *Gate) ClientMessage(sess *Session, data []byte) *Event {
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
	f, err := g.ParseFilterJSON(msg.Filter)
	if err != nil {
		return ErrorEvent(err.Error())
	}
	g.cfg.Hub.SetFilter(sess, f)
	b, _ := json.Marshal(map[string]any{"filter": f})
	return &Event{Name: "subscribed", Data: b, Time: time.Now()}
}

// Connected reports a session that has joined the hub: metrics and the
// log line every transport writes. attrs add transport details.
func (g *Gate) Connected(sess *Session, remote string, attrs ...any) {
	g.obs.ClientConnected(sess.Transport)
	g.log.Info("User connected: "+sess.User.Name()+" ("+sess.ID+")",
		append([]any{"transport", sess.Transport, "remote", remote}, attrs...)...)
}

// Disconnected reports a session that has ended.
func (g *Gate) Disconnected(sess *Session, d Disconnect) {
	g.obs.ClientDisconnected(sess.Transport)
	g.log.Info("User disconnected: "+sess.User.Name()+" ("+sess.ID+")",
		"transport", sess.Transport, "reason", d.Reason, "kind", string(d.Kind))
}

// OriginAllowed: no Origin (not a browser), the same host, or a listed one.
func (g *Gate) OriginAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	return g.OriginListed(origin)
}

// OriginListed reports whether a cross-origin page may use rowcast.
func (g *Gate) OriginListed(origin string) bool {
	for _, o := range g.cfg.Origins {
		if o == "*" || strings.EqualFold(strings.TrimRight(o, "/"), origin) {
			return true
		}
	}
	return false
}

// CORS grants a listed origin access (the origin is echoed, never "*",
// with credentials when CORS_CREDENTIALS is set) and reports whether it
// did. Other origins get no grant. Preflight answers add the methods
// and headers.
func (g *Gate) CORS(w http.ResponseWriter, r *http.Request, methods string) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	h := w.Header()
	h.Add("Vary", "Origin")
	if !g.OriginListed(origin) {
		return false
	}
	h.Set("Access-Control-Allow-Origin", origin)
	if g.cfg.CORSCredentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	if r.Method == http.MethodOptions {
		h.Set("Access-Control-Allow-Methods", methods)
		if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
			h.Set("Access-Control-Allow-Headers", req)
		} else {
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
		}
		h.Set("Access-Control-Max-Age", "600")
	}
	return true
}

// ErrorEvent tells a client what it did wrong: {"message": "..."}.
func ErrorEvent(msg string) *Event {
	b, _ := json.Marshal(map[string]string{"message": msg})
	return &Event{Name: "error", Data: b, Time: time.Now()}
}

// WriteJSON answers with a JSON body that is never cached.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError answers with {"error": msg}.
func WriteError(w http.ResponseWriter, status int, msg string) {
	WriteJSON(w, status, map[string]string{"error": msg})
}

// liveConns counts connections whose goroutines outlive their handler. A
// WaitGroup would not do: a handler can still be starting a connection
// when shutdown begins to wait, and after that it must refuse instead.
type liveConns struct {
	mu      sync.Mutex
	n       int
	closing bool
	zero    chan struct{}
}

// add counts a connection; false means the server is shutting down.
func (l *liveConns) add() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return false
	}
	l.n++
	return true
}

func (l *liveConns) done() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n--
	if l.n == 0 && l.zero != nil {
		close(l.zero)
		l.zero = nil
	}
}

// wait refuses new connections and returns when the last one is done.
func (l *liveConns) wait() {
	l.mu.Lock()
	l.closing = true
	if l.n == 0 {
		l.mu.Unlock()
		return
	}
	if l.zero == nil {
		l.zero = make(chan struct{})
	}
	ch := l.zero
	l.mu.Unlock()
	<-ch
}

// Connections counts the slots in use.
func (g *Gate) Connections() int { return int(g.conns.Load()) }
