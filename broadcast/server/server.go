// Package server is rowcast's HTTP surface: it routes the live transports
// (handed in as handlers) and serves what is not a stream: /api/snapshot,
// /api/config, /healthz, /readyz, /metrics, the demo login and the
// dashboard.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	// RecentOrder names the columns Recent orders by, newest first; told
	// to clients in /api/config so a "newest N" view trims the same way.
	RecentOrder []string
	// Pages reads rows in primary key order for /api/snapshot?order=key
	// (nil: only the newest rows are served).
	Pages Pager
	// Counts loads stats when the hub has none yet.
	Counts  rowcast.CountsLoader
	Metrics http.Handler
	Web     http.Handler
	// DemoLogin enables POST /demo/login, which sets a token cookie for
	// anyone. Only "rowcast demo" sets it.
	DemoLogin bool
	Logger    *slog.Logger
}

// Pager reads a table in primary key order, a page at a time.
type Pager interface {
	// Key names the primary key columns, in index order.
	Key() []string
	// Page returns up to limit rows after the key in after (a JSON object
	// of the key columns; nil for the first page). An error with a
	// BadCursor() bool method that returns true is the client's.
	Page(ctx context.Context, after json.RawMessage, limit int, where []rowcast.Condition) ([]rowcast.Row, error)
}

// maxSnapshotLimit bounds the rows of one snapshot response; a client
// that wants more reads pages (order=key).
const maxSnapshotLimit = 500

// snapshotParams are /api/snapshot's own query parameters, removed before
// the rest is read as a filter.
var snapshotParams = []string{"order", "after"}

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
	s.mux.HandleFunc("GET /api/config", s.cors(s.serveConfig))
	s.mux.HandleFunc("OPTIONS /api/config", s.cors(nil))
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

// serveConfig tells clients how this rowcast speaks: whether streams are
// on, how often to poll without them, and what a client library needs to
// follow the table without being told its name (event names, the key,
// the snapshot's rows field, the filterable columns).
func (s *Server) serveConfig(w http.ResponseWriter, r *http.Request) {
	names := s.gate.Hub().Names()
	var key []string
	if s.cfg.Pages != nil {
		key = s.cfg.Pages.Key()
	}
	filterColumns := s.gate.FilterColumns()
	if filterColumns == nil {
		filterColumns = []string{}
	}
	broadcast.WriteJSON(w, http.StatusOK, map[string]any{
		"liveUpdates":    s.gate.LiveUpdates(),
		"pollIntervalMs": s.cfg.PollInterval.Milliseconds(),
		"demoLogin":      s.cfg.DemoLogin && s.gate.Auth() != nil,
		// Whether capture is running: a client that connects before it
		// does is told to resync, so clients wait for it.
		"ready":  s.cfg.Ready == nil || s.cfg.Ready(),
		"prefix": names.Prefix,
		"events": map[string]string{
			"profile": names.Profile,
			"created": names.Created,
			"updated": names.Updated,
			"deleted": names.Delete,
			"stats":   "stats:updated",
			"resync":  "resync",
			// The ticket_update profile's type field.
			"createdType": "new_" + names.Prefix,
			"updatedType": "updated_" + names.Prefix,
			"deletedType": "deleted_" + names.Prefix,
		},
		"deletedKeyField": names.IDField,
		"rowsField":       rowsField(names),
		"key":             key,
		"recentOrder":     s.cfg.RecentOrder,
		"filterColumns":   filterColumns,
		"snapshotLimit":   maxSnapshotLimit,
		"pages":           s.cfg.Pages != nil,
	})
}

// rowsField is the snapshot's rows field: "tickets".
func rowsField(n broadcast.Names) string { return n.Prefix + "s" }

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

// serveSnapshot answers /api/snapshot: the newest rows (order=recent, the
// default), or one page in primary key order (order=key, with after= the
// previous page's next). Either way the response carries the stats and the
// cursor to stream from, taken before the rows were read.
func (s *Server) serveSnapshot(w http.ResponseWriter, r *http.Request) {
	user, err := s.gate.Auth().Authenticate(r)
	if err != nil {
		broadcast.WriteError(w, http.StatusUnauthorized, err.Error())
		return
	}
	query := r.URL.Query()
	order := query.Get("order")
	after, hasAfter := query["after"]
	for _, p := range snapshotParams {
		query.Del(p)
	}
	switch {
	case order == "" && hasAfter, order == "key":
		order = "key"
		if s.cfg.Pages == nil {
			broadcast.WriteError(w, http.StatusBadRequest, "this server does not serve pages in key order")
			return
		}
	case order == "" || order == "recent":
		order = "recent"
	default:
		broadcast.WriteError(w, http.StatusBadRequest, "order must be recent or key")
		return
	}
	if order == "recent" && hasAfter {
		broadcast.WriteError(w, http.StatusBadRequest, "after needs order=key")
		return
	}
	var cursor json.RawMessage
	if hasAfter {
		if len(after) != 1 || after[0] == "" {
			broadcast.WriteError(w, http.StatusBadRequest, "after must be given once, as a page's next")
			return
		}
		cursor = json.RawMessage(after[0])
	}
	filter, err := s.gate.ParseFilterQuery(query)
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
	if order == "key" {
		limit = maxSnapshotLimit
	}
	if v := query.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxSnapshotLimit {
			broadcast.WriteError(w, http.StatusBadRequest, "limit must be a number from 1 to 500")
			return
		}
		limit = n
	}
	hub := s.gate.Hub()
	// The cursor is taken before the rows are read: every event up to it
	// committed before the read, so the rows include it; later events may
	// be included too, and applying them again is harmless (upsert/delete).
	// For pages the same holds for every page, read later than the first:
	// see cdc.Pages.
	lastEventID, stats := hub.Cursor()
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
	var next string
	if !scope.None {
		switch {
		case order == "key":
			// One row more than asked tells whether another page exists,
			// so the last page is never an empty one.
			rows, err = s.cfg.Pages.Page(r.Context(), cursor, limit+1, where)
			if err == nil && len(rows) > limit {
				rows = rows[:limit]
				next, err = s.pageCursor(rows[limit-1])
			}
		case s.cfg.Recent != nil:
			rows, err = s.cfg.Recent(r.Context(), limit, where)
		}
		if err != nil {
			var bad interface{ BadCursor() bool }
			switch {
			case errors.Is(err, context.Canceled):
			case errors.As(err, &bad) && bad.BadCursor():
				broadcast.WriteError(w, http.StatusBadRequest, err.Error())
			default:
				s.log.Error("snapshot: reading rows failed", "err", err)
				broadcast.WriteError(w, http.StatusServiceUnavailable, "database unavailable")
			}
			return
		}
	}
	if rows == nil {
		rows = []rowcast.Row{}
	}
	body := map[string]any{
		"stats":                json.RawMessage(stats),
		rowsField(hub.Names()): rows,
		"lastEventId":          lastEventID,
	}
	if next != "" {
		body["next"] = next
	}
	broadcast.WriteJSON(w, http.StatusOK, body)
}

// pageCursor is the after= value for the page following row: a JSON
// object of its key columns, passed back verbatim.
func (s *Server) pageCursor(row rowcast.Row) (string, error) {
	var key rowcast.Row
	for _, k := range s.cfg.Pages.Key() {
		v, ok := row.Get(k)
		if !ok {
			return "", fmt.Errorf("snapshot: row lacks key column %q", k)
		}
		key = append(key, rowcast.Column{Name: k, Value: v})
	}
	b, err := key.MarshalJSON()
	if err != nil {
		return "", fmt.Errorf("snapshot: encode page cursor: %w", err)
	}
	return string(b), nil
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
