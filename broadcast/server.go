package broadcast

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"rowcast"
)

// ServerConfig configures the HTTP endpoints.
type ServerConfig struct {
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
	// LiveUpdates false makes /ws answer 503 so dashboards poll instead.
	LiveUpdates    bool
	MaxConnections int
	PingInterval   time.Duration
	// SSEKeepalive is how often idle SSE streams get a comment (15s).
	SSEKeepalive time.Duration
	WriteTimeout time.Duration
	QueueSize    int
	// PollInterval is what the dashboard polls at without live updates.
	PollInterval time.Duration
	// Ready reports whether capture is connected (for /readyz).
	Ready func() bool
	// Recent reads the newest rows for /api/snapshot.
	Recent func(ctx context.Context, limit int, where []rowcast.Condition) ([]rowcast.Row, error)
	// Counts loads stats when the hub has none yet.
	Counts       rowcast.CountsLoader
	StatsColumns []string
	Metrics      http.Handler
	Web          http.Handler
	// DemoLogin enables POST /demo/login, which sets a token cookie for
	// anyone. Only "rowcast demo" sets it.
	DemoLogin bool
	Observer  Observer
	Logger    *slog.Logger
	// SocketIO configures /socket.io/ (Engine.IO 4 + Socket.IO 5).
	SocketIO SocketIOConfig
}

// Server serves /ws, /api/snapshot, /api/config, /healthz, /readyz,
// /metrics and the dashboard.
type Server struct {
	cfg   ServerConfig
	log   *slog.Logger
	obs   Observer
	conns atomic.Int64
	live  liveConns
	mux   *http.ServeMux
}

// NewServer builds the handlers.
func NewServer(cfg ServerConfig) *Server {
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 25 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = 10000
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 30 * time.Second
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, log: cfg.Logger, obs: cfg.Observer, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.serveReady)
	s.mux.HandleFunc("GET /ws", s.serveWS)
	s.routeSocketIO()
	s.mux.HandleFunc("GET /events", s.serveSSE)
	s.mux.HandleFunc("GET /api/snapshot", s.cors(s.serveSnapshot))
	s.mux.HandleFunc("OPTIONS /api/snapshot", s.cors(nil))
	s.mux.HandleFunc("GET /api/config", s.serveConfig)
	if cfg.DemoLogin && cfg.Auth != nil {
		s.mux.HandleFunc("POST /demo/login", s.serveDemoLogin)
	}
	if cfg.Metrics != nil {
		s.mux.Handle("GET /metrics", cfg.Metrics)
	}
	if cfg.Web != nil {
		s.mux.Handle("GET /", cfg.Web)
	}
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Wait returns when every connection handler has finished (after
// Hub.Shutdown has told them to close).
func (s *Server) Wait() { s.live.wait() }

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

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Ready != nil && !s.cfg.Ready() {
		writeError(w, http.StatusServiceUnavailable, "capture is not connected")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) serveConfig(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"liveUpdates":    s.cfg.LiveUpdates,
		"pollIntervalMs": s.cfg.PollInterval.Milliseconds(),
		"demoLogin":      s.cfg.DemoLogin && s.cfg.Auth != nil,
	})
}

// originAllowed: no Origin (not a browser), the same host, or a listed one.
func (s *Server) originAllowed(r *http.Request) bool {
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
	return s.listedOrigin(origin)
}

func (s *Server) listedOrigin(origin string) bool {
	for _, o := range s.cfg.Origins {
		if o == "*" || strings.EqualFold(strings.TrimRight(o, "/"), origin) {
			return true
		}
	}
	return false
}

// cors grants listed origins access to the JSON API; others get no grant.
func (s *Server) cors(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		w.Header().Add("Vary", "Origin")
		if origin != "" && s.listedOrigin(origin) {
			w.Header().Set("Access-Control-Allow-Origin", origin)
			if s.cfg.CORSCredentials {
				w.Header().Set("Access-Control-Allow-Credentials", "true")
			}
			w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
			w.Header().Set("Access-Control-Allow-Methods", "GET, OPTIONS")
		}
		if next == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next(w, r)
	}
}

func (s *Server) refuse(w http.ResponseWriter, transport, reason string, status int, msg string) {
	s.obs.ConnectionRefused(transport, reason)
	writeError(w, status, msg)
}

// admit runs the checks every transport shares, in order: live updates
// enabled (503), Origin (403), token (401), then the connection limit
// (503). On success the caller owns one connection slot; release it.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, transport string) (Identity, bool) {
	if !s.cfg.LiveUpdates {
		s.refuse(w, transport, "disabled", http.StatusServiceUnavailable, "live updates are disabled; poll /api/snapshot instead")
		return Identity{}, false
	}
	if !s.originAllowed(r) {
		s.refuse(w, transport, "origin", http.StatusForbidden, "origin not allowed: add it to CORS_ORIGINS")
		return Identity{}, false
	}
	user, err := s.cfg.Auth.Authenticate(r)
	if err != nil {
		s.refuse(w, transport, "auth", http.StatusUnauthorized, err.Error())
		return Identity{}, false
	}
	if s.conns.Add(1) > int64(s.cfg.MaxConnections) {
		s.conns.Add(-1)
		s.refuse(w, transport, "limit", http.StatusServiceUnavailable, "too many connections; try again later")
		return Identity{}, false
	}
	return user, true
}

func (s *Server) release() { s.conns.Add(-1) }

// newSession makes a session for an admitted user.
func (s *Server) newSession(transport string, user Identity, filter Filter) *Session {
	return NewSession(transport, user, s.scopeFor(user), filter, s.cfg.QueueSize)
}

// scopeFor is what a user may see; without auth there are no users and
// the visibility rule does not apply.
func (s *Server) scopeFor(user Identity) Scope {
	if s.cfg.Auth == nil {
		return Scope{All: true}
	}
	return s.cfg.Visibility.ScopeFor(user)
}

// ErrorEvent tells a client what it did wrong: {"message": "..."}.
func ErrorEvent(msg string) *Event {
	b, _ := json.Marshal(map[string]string{"message": msg})
	return &Event{Name: "error", Data: b, Time: time.Now()}
}

// parseResume reads lastEventId; an empty value means a fresh start.
func parseResume(v string) (*rowcast.EventID, error) {
	if v == "" {
		return nil, nil
	}
	id, err := rowcast.ParseEventID(v)
	if err != nil {
		return nil, err
	}
	return &id, nil
}

func (s *Server) serveSnapshot(w http.ResponseWriter, r *http.Request) {
	user, err := s.cfg.Auth.Authenticate(r)
	if err != nil {
		writeError(w, http.StatusUnauthorized, err.Error())
		return
	}
	filter, err := ParseFilterQuery(r.URL.Query(), s.cfg.FilterColumns)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	scope := s.scopeFor(user)
	where := filter.Conditions()
	if !scope.All {
		where = append(where, rowcast.Condition{Column: scope.Column, Values: []string{scope.Value}})
	}
	limit := 50
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			writeError(w, http.StatusBadRequest, "limit must be a number from 1 to 500")
			return
		}
		limit = n
	}
	// The cursor is taken before the rows are read: every event up to it
	// committed before the read, so the rows include it; later events may
	// be included too, and applying them again is harmless (upsert/delete).
	cursor, stats := s.cfg.Hub.Cursor()
	if !scope.All {
		stats = []byte("null") // restricted users get no global counts
	} else if stats == nil && s.cfg.Counts != nil {
		counts, _, err := s.cfg.Counts(r.Context())
		if err != nil {
			s.log.Error("snapshot: counting rows failed", "err", err)
			writeError(w, http.StatusServiceUnavailable, "database unavailable")
			return
		}
		st := newStatsState(s.cfg.StatsColumns)
		st.finishLoad(st.beginLoad(), counts, rowcast.XidSnapshot{}, nil)
		stats = st.payload()
	}
	var rows []rowcast.Row
	if s.cfg.Recent != nil && !scope.None {
		rows, err = s.cfg.Recent(r.Context(), limit, where)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return
			}
			s.log.Error("snapshot: reading rows failed", "err", err)
			writeError(w, http.StatusServiceUnavailable, "database unavailable")
			return
		}
	}
	if rows == nil {
		rows = []rowcast.Row{}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"stats":                        json.RawMessage(stats),
		s.cfg.Hub.Names().Prefix + "s": rows,
		"lastEventId":                  cursor,
	})
}

func (s *Server) serveDemoLogin(w http.ResponseWriter, r *http.Request) {
	if !s.originAllowed(r) {
		writeError(w, http.StatusForbidden, "origin not allowed")
		return
	}
	token, err := s.cfg.Auth.Sign(map[string]any{
		"sub": "demo", "email": "demo@example.com", "role": "agent",
		"exp": time.Now().Add(12 * time.Hour).Unix(),
	})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "cannot sign token")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: s.cfg.Auth.Cookie(), Value: token, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteLaxMode, MaxAge: 12 * 3600})
	w.WriteHeader(http.StatusNoContent)
}
