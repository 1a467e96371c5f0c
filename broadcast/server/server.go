// Package server is rowcast's HTTP surface: it routes the live transports
// (handed in as handlers) and serves what is not a stream: /api/snapshot,
// /api/config, /healthz, /readyz, /metrics, the demo login and the
// dashboard.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"rowcast"
	"rowcast/broadcast"
)

// Config configures the HTTP endpoints.
type Config struct {
	Gate *broadcast.Gate
	// WS, SSE and SocketIO are the live transports: GET /ws, GET /events,
	// and every method on /socket.io/ (nil: not served).
	WS, SSE, SocketIO http.Handler
	// PollInterval is what the dashboard polls at without live updates.
	PollInterval time.Duration
	// Ready reports whether capture is connected (for /readyz).
	Ready func() bool
	// Recent reads the newest rows for /api/snapshot.
	Recent func(ctx context.Context, limit int, where []rowcast.Condition) ([]rowcast.Row, error)
	// Counts loads stats when the hub has none yet.
	Counts  rowcast.CountsLoader
	Metrics http.Handler
	Web     http.Handler
	// DemoLogin enables POST /demo/login, which sets a token cookie for
	// anyone. Only "rowcast demo" sets it.
	DemoLogin bool
	Logger    *slog.Logger
}

// Server is the HTTP handler for every endpoint.
type Server struct {
	cfg  Config
	gate *broadcast.Gate
	log  *slog.Logger
	mux  *http.ServeMux
}

// New builds the routes.
func New(cfg Config) *Server {
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, gate: cfg.Gate, log: cfg.Logger, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		broadcast.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.serveReady)
	if cfg.WS != nil {
		s.mux.Handle("GET /ws", cfg.WS)
	}
	if cfg.SSE != nil {
		s.mux.Handle("GET /events", cfg.SSE)
	}
	if cfg.SocketIO != nil {
		// Every method a client may use reaches the handler, which answers
		// 400 for those Engine.IO does not take. A method-less
		// "/socket.io/" pattern would conflict with the dashboard's "GET /".
		for _, m := range []string{"GET", "POST", "OPTIONS", "PUT", "PATCH", "DELETE"} {
			s.mux.Handle(m+" /socket.io/", cfg.SocketIO)
		}
	}
	s.mux.HandleFunc("GET /api/snapshot", s.cors(s.serveSnapshot))
	s.mux.HandleFunc("OPTIONS /api/snapshot", s.cors(nil))
	s.mux.HandleFunc("GET /api/config", s.serveConfig)
	if cfg.DemoLogin && s.gate.Auth() != nil {
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

func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Ready != nil && !s.cfg.Ready() {
		broadcast.WriteError(w, http.StatusServiceUnavailable, "capture is not connected")
		return
	}
	broadcast.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) serveConfig(w http.ResponseWriter, r *http.Request) {
	broadcast.WriteJSON(w, http.StatusOK, map[string]any{
		"liveUpdates":    s.gate.LiveUpdates(),
		"pollIntervalMs": s.cfg.PollInterval.Milliseconds(),
		"demoLogin":      s.cfg.DemoLogin && s.gate.Auth() != nil,
	})
}

// cors grants listed origins access to the JSON API; others get no grant.
func (s *Server) cors(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Origin") == "" {
			w.Header().Add("Vary", "Origin")
		}
		s.gate.CORS(w, r, "GET, OPTIONS")
		if next == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next(w, r)
	}
}

func (s *Server) serveSnapshot(w http.ResponseWriter, r *http.Request) {
	user, err := s.gate.Auth().Authenticate(r)
	if err != nil {
		broadcast.WriteError(w, http.StatusUnauthorized, err.Error())
		return
	}
	filter, err := s.gate.ParseFilterQuery(r.URL.Query())
	if err != nil {
		broadcast.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	scope := s.gate.ScopeFor(user)
	where := filter.Conditions()
	if !scope.All {
		where = append(where, rowcast.Condition{Column: scope.Column, Values: []string{scope.Value}})
	}
	limit := 50
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			broadcast.WriteError(w, http.StatusBadRequest, "limit must be a number from 1 to 500")
			return
		}
		limit = n
	}
	hub := s.gate.Hub()
	// The cursor is taken before the rows are read: every event up to it
	// committed before the read, so the rows include it; later events may
	// be included too, and applying them again is harmless (upsert/delete).
	cursor, stats := hub.Cursor()
	if !scope.All {
		stats = []byte("null") // restricted users get no global counts
	} else if stats == nil && s.cfg.Counts != nil {
		counts, _, err := s.cfg.Counts(r.Context())
		if err != nil {
			s.log.Error("snapshot: counting rows failed", "err", err)
			broadcast.WriteError(w, http.StatusServiceUnavailable, "database unavailable")
			return
		}
		stats = hub.StatsPayload(counts)
	}
	var rows []rowcast.Row
	if s.cfg.Recent != nil && !scope.None {
		rows, err = s.cfg.Recent(r.Context(), limit, where)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return
			}
			s.log.Error("snapshot: reading rows failed", "err", err)
			broadcast.WriteError(w, http.StatusServiceUnavailable, "database unavailable")
			return
		}
	}
	if rows == nil {
		rows = []rowcast.Row{}
	}
	broadcast.WriteJSON(w, http.StatusOK, map[string]any{
		"stats":                  json.RawMessage(stats),
		hub.Names().Prefix + "s": rows,
		"lastEventId":            cursor,
	})
}

func (s *Server) serveDemoLogin(w http.ResponseWriter, r *http.Request) {
	if !s.gate.OriginAllowed(r) {
		broadcast.WriteError(w, http.StatusForbidden, "origin not allowed")
		return
	}
	auth := s.gate.Auth()
	token, err := auth.Sign(map[string]any{
		"sub": "demo", "email": "demo@example.com", "role": "agent",
		"exp": time.Now().Add(12 * time.Hour).Unix(),
	})
	if err != nil {
		broadcast.WriteError(w, http.StatusInternalServerError, "cannot sign token")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: auth.Cookie(), Value: token, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteLaxMode, MaxAge: 12 * 3600})
	w.WriteHeader(http.StatusNoContent)
}
