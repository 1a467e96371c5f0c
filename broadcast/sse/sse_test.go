package sse

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"rowcast"
	"rowcast/broadcast"
	"rowcast/broadcast/broadcasttest"
)

// stream reads SSE frames (blank-line separated) from a response.
type stream struct {
	t  *testing.T
	sc *bufio.Scanner
}

func open(t *testing.T, url string, h http.Header) (*http.Response, *stream) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp, &stream{t: t, sc: bufio.NewScanner(resp.Body)}
}

func (s *stream) next() string {
	s.t.Helper()
	var lines []string
	for s.sc.Scan() {
		if s.sc.Text() == "" {
			if len(lines) > 0 {
				return strings.Join(lines, "\n")
			}
			continue
		}
		lines = append(lines, s.sc.Text())
	}
	s.t.Fatalf("stream ended: %v", s.sc.Err())
	return ""
}

func serve(t *testing.T, mod ...func(*broadcast.GateConfig)) (*broadcasttest.Env, string) {
	env := broadcasttest.New(func(c *broadcast.GateConfig) {
		for _, m := range mod {
			m(c)
		}
	})
	ts := httptest.NewServer(New(Config{Gate: env.Gate, Keepalive: time.Hour}))
	t.Cleanup(func() {
		env.Hub.Shutdown()
		ts.CloseClientConnections()
		ts.Close()
	})
	return env, ts.URL + "/events"
}

func TestStreamAndResume(t *testing.T) {
	env, url := serve(t)
	resp, s := open(t, url, nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("open: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if f := s.next(); f != "retry: 3000" {
		t.Fatalf("first frame %q", f)
	}
	env.WaitClients(t, 1)
	id := env.Apply(rowcast.OpInsert, 1, "open")
	want := "id: " + id.String() + "\nevent: ticket:created\ndata: "
	if f := s.next(); !strings.HasPrefix(f, want) {
		t.Fatalf("event frame %q, want prefix %q", f, want)
	}
	id2 := env.Apply(rowcast.OpDelete, 1, "open")
	s.next()
	// EventSource resumes with Last-Event-ID.
	_, r := open(t, url, http.Header{"Last-Event-ID": {id.String()}})
	r.next() // retry
	if f := r.next(); !strings.HasPrefix(f, "id: "+id2.String()+"\nevent: ticket:deleted\n") {
		t.Fatalf("replayed %q", f)
	}
	// A malformed Last-Event-ID gets resync, never silence.
	_, g := open(t, url, http.Header{"Last-Event-ID": {"garbage"}})
	g.next() // retry
	if f := g.next(); !strings.HasPrefix(f, "event: resync\n") {
		t.Fatalf("malformed Last-Event-ID: %q, want resync", f)
	}
	if resp, _ := open(t, url+"?nosuch=1", nil); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad filter: %d", resp.StatusCode)
	}
}

// A payload with raw newlines (a json column's own formatting) becomes one
// data line per line, which EventSource joins again.
func TestMultilineData(t *testing.T) {
	ev := &broadcast.Event{Name: "note", Data: []byte("{\"a\":\r\n 1}")}
	if got := string(frame.Of(ev)); got != "event: note\ndata: {\"a\":\ndata:  1}\n\n" {
		t.Fatalf("frame %q", got)
	}
}

func TestShutdownEndsStream(t *testing.T) {
	env, url := serve(t)
	_, s := open(t, url, nil)
	s.next()
	env.WaitClients(t, 1)
	env.Hub.Shutdown()
	for s.sc.Scan() {
	}
	env.Gate.Wait()
	if n := env.Gate.Connections(); n != 0 {
		t.Fatalf("%d connection slots held after shutdown", n)
	}
}

// A listed cross-origin dashboard gets the same CORS grant as for
// /api/snapshot; others get none.
func TestCORS(t *testing.T) {
	_, url := serve(t, func(c *broadcast.GateConfig) {
		c.Origins = []string{"https://desk.example.com"}
		c.CORSCredentials = true
	})
	resp, s := open(t, url, http.Header{"Origin": {"https://desk.example.com"}})
	s.next()
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://desk.example.com" || resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Errorf("listed origin: %v", resp.Header)
	}
	if resp, _ := open(t, url, http.Header{"Origin": {"https://evil.example.com"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("unlisted origin: %d", resp.StatusCode)
	}
}
