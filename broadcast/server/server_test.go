package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"rowcast"
	"rowcast/broadcast"
	"rowcast/broadcast/broadcasttest"
)

// marker is a transport stand-in that says which one was reached.
type marker string

func (m marker) ServeHTTP(w http.ResponseWriter, r *http.Request) { io.WriteString(w, string(m)) }

func get(t *testing.T, ts *httptest.Server, method, path string, h http.Header) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, ts.URL+path, nil)
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestRoutesAndSnapshot(t *testing.T) {
	env := broadcasttest.New(func(c *broadcast.GateConfig) {
		c.Origins = []string{"https://desk.example.com"}
		c.CORSCredentials = true
	})
	ready := false
	var where []rowcast.Condition
	srv := New(Config{
		Gate: env.Gate, WS: marker("ws"), SSE: marker("sse"), SocketIO: marker("socketio"),
		Ready: func() bool { return ready },
		Recent: func(ctx context.Context, limit int, w []rowcast.Condition) ([]rowcast.Row, error) {
			where = w
			return []rowcast.Row{{{Name: "id", Value: json.RawMessage("7")}}}, nil
		},
		Counts: func(context.Context) (rowcast.Counts, rowcast.XidSnapshot, error) {
			return rowcast.Counts{Total: 2, By: map[string]map[string]int64{"status": {"open": 2}}}, rowcast.XidSnapshot{}, nil
		},
	})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	for path, want := range map[string]string{"/ws": "ws", "/events": "sse", "/socket.io/?EIO=4": "socketio"} {
		if _, body := get(t, ts, "GET", path, nil); body != want {
			t.Errorf("GET %s reached %q", path, body)
		}
	}
	if _, body := get(t, ts, "POST", "/socket.io/?EIO=4&sid=x", nil); body != "socketio" {
		t.Errorf("POST /socket.io/ reached %q", body)
	}
	if resp, _ := get(t, ts, "GET", "/healthz", nil); resp.StatusCode != 200 {
		t.Errorf("healthz: %d", resp.StatusCode)
	}
	if resp, _ := get(t, ts, "GET", "/readyz", nil); resp.StatusCode != 503 {
		t.Errorf("readyz while capture is down: %d", resp.StatusCode)
	}
	ready = true
	if resp, _ := get(t, ts, "GET", "/readyz", nil); resp.StatusCode != 200 {
		t.Errorf("readyz: %d", resp.StatusCode)
	}
	id := env.Apply(rowcast.OpInsert, 7, "open")
	resp, body := get(t, ts, "GET", "/api/snapshot?status=open", http.Header{"Origin": {"https://desk.example.com"}})
	var snap struct {
		Stats       map[string]any   `json:"stats"`
		Tickets     []map[string]any `json:"tickets"`
		LastEventID string           `json:"lastEventId"`
	}
	if err := json.Unmarshal([]byte(body), &snap); err != nil || resp.StatusCode != 200 {
		t.Fatalf("snapshot: %d %s", resp.StatusCode, body)
	}
	if snap.LastEventID != id.String() || len(snap.Tickets) != 1 || snap.Stats == nil {
		t.Errorf("snapshot: %s", body)
	}
	if len(where) != 1 || where[0].Column != "status" {
		t.Errorf("snapshot filter: %+v", where)
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://desk.example.com" || resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Errorf("CORS for a listed origin: %v", resp.Header)
	}
	resp, _ = get(t, ts, "GET", "/api/snapshot", http.Header{"Origin": {"https://evil.example.com"}})
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("CORS granted to an unlisted origin")
	}
	if resp, body := get(t, ts, "GET", "/api/snapshot?limit=501", nil); resp.StatusCode != 400 || !strings.Contains(body, "limit") {
		t.Errorf("limit 501: %d %s", resp.StatusCode, body)
	}
	if _, body := get(t, ts, "GET", "/api/config", nil); !strings.Contains(body, `"liveUpdates":true`) {
		t.Errorf("config: %s", body)
	}
}

func TestSnapshotAuth(t *testing.T) {
	auth := broadcast.NewAuth(broadcasttest.Secret, "token")
	env := broadcasttest.New(func(c *broadcast.GateConfig) { c.Auth = auth })
	ts := httptest.NewServer(New(Config{Gate: env.Gate}))
	defer ts.Close()
	if resp, _ := get(t, ts, "GET", "/api/snapshot", nil); resp.StatusCode != 401 {
		t.Errorf("no token: %d", resp.StatusCode)
	}
	token, _ := auth.Sign(map[string]any{"sub": "u"})
	if resp, body := get(t, ts, "GET", "/api/snapshot", http.Header{"Cookie": {"token=" + token}}); resp.StatusCode != 200 {
		t.Errorf("with cookie: %d %s", resp.StatusCode, body)
	}
}
