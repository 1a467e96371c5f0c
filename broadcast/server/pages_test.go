package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"rowcast"
	"rowcast/broadcast"
	"rowcast/broadcast/broadcasttest"
)

// fakePages serves ids 1..n in key order, as cdc.Pages would.
type fakePages struct {
	n     int
	calls []string // after of each call
	where []rowcast.Condition
}

type cursorErr struct{}

func (cursorErr) Error() string   { return "bad cursor" }
func (cursorErr) BadCursor() bool { return true }

func (f *fakePages) Key() []string { return []string{"id"} }

func (f *fakePages) Page(_ context.Context, after json.RawMessage, limit int, where []rowcast.Condition) ([]rowcast.Row, error) {
	f.calls = append(f.calls, string(after))
	f.where = where
	from := 0
	if after != nil {
		var k struct{ ID *int }
		if err := json.Unmarshal(after, &k); err != nil || k.ID == nil {
			return nil, cursorErr{}
		}
		from = *k.ID
	}
	var rows []rowcast.Row
	for id := from + 1; id <= f.n && len(rows) < limit; id++ {
		rows = append(rows, rowcast.Row{{Name: "id", Value: json.RawMessage(fmt.Sprint(id))}, {Name: "status", Value: json.RawMessage(`"open"`)}})
	}
	return rows, nil
}

type page struct {
	Tickets     []map[string]any `json:"tickets"`
	LastEventID string           `json:"lastEventId"`
	Next        *string          `json:"next"`
	Error       string           `json:"error"`
}

func getPage(t *testing.T, ts *httptest.Server, path string) (int, page) {
	t.Helper()
	resp, body := get(t, ts, "GET", path, nil)
	var p page
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	return resp.StatusCode, p
}

func TestSnapshotPages(t *testing.T) {
	env := broadcasttest.New(nil)
	pages := &fakePages{n: 1203}
	ts := httptest.NewServer(New(Config{Gate: env.Gate, Pages: pages}))
	defer ts.Close()
	id := env.Apply(rowcast.OpInsert, 7, "open")

	var ids []float64
	path := "/api/snapshot?order=key&status=open"
	for n := 0; ; n++ {
		status, p := getPage(t, ts, path)
		if status != 200 {
			t.Fatalf("GET %s: %d %s", path, status, p.Error)
		}
		if p.LastEventID != id.String() {
			t.Errorf("page %d: lastEventId %q, want %q", n, p.LastEventID, id)
		}
		for _, r := range p.Tickets {
			ids = append(ids, r["id"].(float64))
		}
		if p.Next == nil {
			if len(p.Tickets) == 0 {
				t.Errorf("last page is empty")
			}
			break
		}
		if len(p.Tickets) != maxSnapshotLimit {
			t.Errorf("page %d with next has %d rows", n, len(p.Tickets))
		}
		path = "/api/snapshot?status=open&after=" + url.QueryEscape(*p.Next)
	}
	if len(ids) != 1203 || ids[0] != 1 || ids[1202] != 1203 {
		t.Fatalf("pages hold %d ids", len(ids))
	}
	if want := []string{"", `{"id":500}`, `{"id":1000}`}; !reflect.DeepEqual(pages.calls, want) {
		t.Errorf("cursors %q, want %q", pages.calls, want)
	}
	if len(pages.where) != 1 || pages.where[0].Column != "status" {
		t.Errorf("filter not passed to pages: %+v", pages.where)
	}

	// A page that ends exactly at the last row has no next.
	pages.n = 20
	if status, p := getPage(t, ts, "/api/snapshot?order=key&limit=20"); status != 200 || p.Next != nil || len(p.Tickets) != 20 {
		t.Errorf("exact page: %d, %d rows, next %v", status, len(p.Tickets), p.Next)
	}
	for path, want := range map[string]string{
		"/api/snapshot?after=" + url.QueryEscape(`{"x":1}`):         "bad cursor",
		"/api/snapshot?order=recent&after=" + url.QueryEscape(`{}`): "after needs order=key",
		"/api/snapshot?order=sideways":                              "order must be",
		"/api/snapshot?order=key&after=":                            "after must be given once",
		"/api/snapshot?order=key&limit=501":                         "limit",
		"/api/snapshot?order=key&bogus=1":                           "unknown filter column",
	} {
		if status, p := getPage(t, ts, path); status != 400 || !strings.Contains(p.Error, want) {
			t.Errorf("GET %s: %d %q, want 400 %q", path, status, p.Error, want)
		}
	}

	// Without a pager, key order is refused rather than ignored.
	ts2 := httptest.NewServer(New(Config{Gate: env.Gate}))
	defer ts2.Close()
	if status, p := getPage(t, ts2, "/api/snapshot?order=key"); status != 400 || !strings.Contains(p.Error, "key order") {
		t.Errorf("no pager: %d %s", status, p.Error)
	}
}

func TestConfigDescribesTheTable(t *testing.T) {
	env := broadcasttest.New(func(c *broadcast.GateConfig) { c.Origins = []string{"https://desk.example.com"} })
	ready := true
	ts := httptest.NewServer(New(Config{Gate: env.Gate, Pages: &fakePages{}, RecentOrder: []string{"updated_at", "id"},
		Ready: func() bool { return ready }}))
	defer ts.Close()
	resp, body := get(t, ts, "GET", "/api/config", http.Header{"Origin": {"https://desk.example.com"}})
	var cfg struct {
		LiveUpdates     bool              `json:"liveUpdates"`
		Ready           bool              `json:"ready"`
		Prefix          string            `json:"prefix"`
		Events          map[string]string `json:"events"`
		DeletedKeyField string            `json:"deletedKeyField"`
		RowsField       string            `json:"rowsField"`
		Key             []string          `json:"key"`
		RecentOrder     []string          `json:"recentOrder"`
		FilterColumns   []string          `json:"filterColumns"`
		SnapshotLimit   int               `json:"snapshotLimit"`
		Pages           bool              `json:"pages"`
	}
	if err := json.Unmarshal([]byte(body), &cfg); err != nil {
		t.Fatalf("config %s: %v", body, err)
	}
	if !cfg.LiveUpdates || !cfg.Ready || cfg.Prefix != "ticket" || cfg.Events["created"] != "ticket:created" ||
		cfg.Events["deleted"] != "ticket:deleted" || cfg.Events["profile"] != "colon" ||
		cfg.DeletedKeyField != "ticketId" || cfg.RowsField != "tickets" || !reflect.DeepEqual(cfg.Key, []string{"id"}) ||
		!reflect.DeepEqual(cfg.RecentOrder, []string{"updated_at", "id"}) || !reflect.DeepEqual(cfg.FilterColumns, []string{"status"}) ||
		cfg.SnapshotLimit != 500 || !cfg.Pages {
		t.Errorf("config: %s", body)
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://desk.example.com" {
		t.Errorf("config is not readable by a listed origin: %v", resp.Header)
	}
	ready = false
	if _, body := get(t, ts, "GET", "/api/config", nil); !strings.Contains(body, `"ready":false`) {
		t.Errorf("config while capture is down: %s", body)
	}
	if resp, _ := get(t, ts, "OPTIONS", "/api/config", http.Header{"Origin": {"https://desk.example.com"}}); resp.StatusCode != 204 {
		t.Errorf("preflight of /api/config: %d", resp.StatusCode)
	}
}
