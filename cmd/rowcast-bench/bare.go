package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"rowcast/integration/harness"
)

// The bare broadcast server: the limit for fan-out on this machine. It is
// what any Go WebSocket broadcaster has to do at least: one writer
// goroutine per client fed by a bounded channel (1024, like rowcast's
// queue), one PreparedMessage per event shared by every client, the same
// upgrader buffers as rowcast, a reader goroutine per client for control
// frames. It has no database, no auth, no JSON encoding, no filters.
//
// It runs as a separate process ("rowcast-bench bare-server"), pinned like
// rowcast. POST /burst?rate=R&ms=D with the frame as the body broadcasts R
// messages/s for D ms; GET /stats reports clients and drops.

type bareServer struct {
	mu      sync.Mutex
	clients map[*bareClient]struct{}
	drops   atomic.Int64
	sent    atomic.Int64
}

type bareClient struct {
	ch   chan *websocket.PreparedMessage
	done chan struct{}
	once sync.Once
}

func (c *bareClient) stop() { c.once.Do(func() { close(c.done) }) }

var bareUpgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferSize: 4096,
	CheckOrigin:     func(*http.Request) bool { return true },
	WriteBufferPool: &sync.Pool{},
}

func runBareServer(args []string) error {
	fs := flag.NewFlagSet("bare-server", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s := &bareServer{clients: map[*bareClient]struct{}{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", s.serveWS)
	mux.HandleFunc("POST /burst", s.serveBurst)
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		n := len(s.clients)
		s.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]int64{"clients": int64(n), "drops": s.drops.Load(), "sent": s.sent.Load()})
	})
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr().String())
	return http.Serve(ln, mux)
}

func (s *bareServer) serveWS(w http.ResponseWriter, r *http.Request) {
	conn, err := bareUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &bareClient{ch: make(chan *websocket.PreparedMessage, 1024), done: make(chan struct{})}
	s.mu.Lock()
	s.clients[c] = struct{}{}
	s.mu.Unlock()
	go func() {
		defer c.stop()
		conn.SetReadLimit(4096)
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
	defer func() {
		s.mu.Lock()
		delete(s.clients, c)
		s.mu.Unlock()
		conn.Close()
	}()
	for {
		select {
		case <-c.done:
			return
		case pm := <-c.ch:
			conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := conn.WritePreparedMessage(pm); err != nil {
				return
			}
		}
	}
}

func (s *bareServer) broadcast(frame []byte) {
	pm, _ := websocket.NewPreparedMessage(websocket.TextMessage, frame)
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.clients {
		select {
		case c.ch <- pm:
		default:
			// Falling behind: dropped, like rowcast's slow consumer.
			s.drops.Add(1)
			delete(s.clients, c)
			c.stop()
		}
	}
	s.sent.Add(1)
}

func (s *bareServer) serveBurst(w http.ResponseWriter, r *http.Request) {
	rate, _ := strconv.ParseFloat(r.URL.Query().Get("rate"), 64)
	ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
	frame, _ := io.ReadAll(r.Body)
	if rate <= 0 || ms <= 0 || len(frame) == 0 {
		http.Error(w, "want rate, ms and a body", http.StatusBadRequest)
		return
	}
	// Rounded like the bench's own count of what a step offers.
	n := max(1, int64(math.Round(rate*float64(ms)/1000)))
	start := time.Now()
	// A server that cannot keep the rate stops a second after the burst
	// should have ended; the bench sees fewer sent than asked.
	stop := start.Add(time.Duration(ms)*time.Millisecond + time.Second)
	var sent int64
	t := time.NewTicker(time.Millisecond)
	for sent < n && time.Now().Before(stop) {
		due := min(n, int64(time.Since(start).Seconds()*rate)+1)
		for ; sent < due && time.Now().Before(stop); sent++ {
			s.broadcast(frame)
		}
		if sent < n {
			<-t.C
		}
	}
	t.Stop()
	json.NewEncoder(w).Encode(map[string]int64{"sent": sent})
}

// bareProc is the running bare server.
type bareProc struct {
	*harness.Process
	addr string
}

// startBare starts the bare server pinned to core 1; it prints its
// address on its first line.
func (b *bench) startBare(ctx context.Context) (*bareProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := b.pinned(1, exe, "bare-server", "-listen", "127.0.0.1:0")
	cmd.Stderr = os.Stderr
	p, err := b.procs.Start(cmd, nil)
	if err != nil {
		return nil, err
	}
	bp := &bareProc{Process: p}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := p.WaitLog(wctx, func(s string) bool { return strings.Contains(s, "\n") })
	if err != nil {
		bp.stop()
		return nil, fmt.Errorf("bare server did not print its address: %w", err)
	}
	bp.addr, _, _ = strings.Cut(out, "\n")
	return bp, nil
}

func (p *bareProc) stop() { _, _ = p.Stop(syscall.SIGTERM, 5*time.Second) }

type bareStats struct {
	Clients int64 `json:"clients"`
	Drops   int64 `json:"drops"`
	Sent    int64 `json:"sent"`
}

func (p *bareProc) stats() (bareStats, error) {
	var st bareStats
	resp, err := http.Get("http://" + p.addr + "/stats")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// burst broadcasts frame at rate for d and returns how many were sent.
func (p *bareProc) burst(ctx context.Context, frame []byte, rate float64, d time.Duration) (int64, error) {
	url := fmt.Sprintf("http://%s/burst?rate=%g&ms=%d", p.addr, rate, d.Milliseconds())
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(frame))
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out struct {
		Sent int64 `json:"sent"`
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return 0, fmt.Errorf("burst: HTTP %d: %s", resp.StatusCode, b)
	}
	err = json.NewDecoder(resp.Body).Decode(&out)
	return out.Sent, err
}
