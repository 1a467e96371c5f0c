package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// wsClient is one dashboard: it reads every frame, counts row events
// (ticket:*), and when recording, notes the sequence number in the row's
// title and the receive time.
type wsClient struct {
	conn *websocket.Conn
	// sio: a Socket.IO client on the WebSocket transport (Engine.IO
	// pings answered, events as 42["name",data,"offset"] packets).
	sio bool

	frames    atomic.Int64
	rows      atomic.Int64
	wireBytes atomic.Int64
	// lastRow is the receive time (UnixNano) of the last row event.
	lastRow atomic.Int64
	closed  atomic.Bool
	// closeCode is the close code the server sent (0 if none).
	closeCode atomic.Int32
	done      chan struct{}

	rec atomic.Pointer[recorder]
	// rng is the set's sequence range; inRange counts row events whose
	// title carries a sequence number in it.
	rng     *seqRange
	inRange atomic.Int64

	sampleMu    sync.Mutex
	sampleRow   []byte // last ticket:updated frame
	sampleStats []byte // last stats:updated frame
}

// seqRange is [lo, hi) of sequence numbers being counted (empty: lo == hi).
type seqRange struct{ lo, hi atomic.Int64 }

// recorder keeps (seq, receive time) pairs for sequence numbers in
// [base, base+n).
type recorder struct {
	mu    sync.Mutex
	base  int64
	n     int64
	pairs []recPair
}

type recPair struct {
	seq  int32
	recv int64
}

var (
	sioPing        = []byte("2")
	sioPong        = []byte("3")
	sioRowMarker   = []byte(`42["ticket:`)
	sioStatsMarker = []byte(`42["stats:updated"`)
	rowMarker      = []byte(`"event":"ticket:`)
	statsMarker    = []byte(`"event":"stats:updated"`)
	titleMarker    = []byte(`"title":"#`)
	updMarker      = []byte(`"event":"ticket:updated"`)
)

// wsHeaderLen is the header length of an unmasked server frame.
func wsHeaderLen(n int) int {
	switch {
	case n <= 125:
		return 2
	case n <= 65535:
		return 4
	}
	return 10
}

func (c *wsClient) readLoop() {
	defer close(c.done)
	var buf bytes.Buffer
	for {
		_, r, err := c.conn.NextReader()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				c.closeCode.Store(int32(ce.Code))
			}
			c.closed.Store(true)
			return
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			c.closed.Store(true)
			return
		}
		now := time.Now().UnixNano()
		msg := buf.Bytes()
		if c.sio && bytes.Equal(msg, sioPing) {
			// Only this goroutine writes after the handshake.
			if err := c.conn.WriteMessage(websocket.TextMessage, sioPong); err != nil {
				c.closed.Store(true)
				return
			}
			continue
		}
		c.frames.Add(1)
		c.wireBytes.Add(int64(len(msg) + wsHeaderLen(len(msg))))
		head := msg[:min(len(msg), 96)]
		isRow, isStats := bytes.Contains(head, rowMarker), bytes.Contains(head, statsMarker)
		if c.sio {
			isRow, isStats = bytes.HasPrefix(msg, sioRowMarker), bytes.HasPrefix(msg, sioStatsMarker)
		}
		if isRow {
			rec := c.rec.Load()
			if lo, hi := c.rng.lo.Load(), c.rng.hi.Load(); hi > lo || rec != nil {
				if seq, ok := titleSeq(msg); ok {
					if seq >= lo && seq < hi {
						c.inRange.Add(1)
					}
					if rec != nil && seq >= rec.base && seq < rec.base+rec.n {
						rec.mu.Lock()
						rec.pairs = append(rec.pairs, recPair{seq: int32(seq - rec.base), recv: now})
						rec.mu.Unlock()
					}
				}
			}
			if !c.sio && bytes.Contains(head, updMarker) && c.sampleRow == nil {
				c.sampleMu.Lock()
				c.sampleRow = append([]byte(nil), msg...)
				c.sampleMu.Unlock()
			}
			c.lastRow.Store(now)
			c.rows.Add(1)
		} else if isStats {
			c.sampleMu.Lock()
			c.sampleStats = append(c.sampleStats[:0], msg...)
			c.sampleMu.Unlock()
		}
	}
}

// titleSeq parses the number in a title written as "#<seq> ...".
func titleSeq(msg []byte) (int64, bool) {
	i := bytes.Index(msg, titleMarker)
	if i < 0 {
		return 0, false
	}
	var n int64
	j := i + len(titleMarker)
	start := j
	for j < len(msg) && msg[j] >= '0' && msg[j] <= '9' {
		n = n*10 + int64(msg[j]-'0')
		j++
	}
	return n, j > start
}

// close ends the connection with a reset (no TIME_WAIT on loopback ports).
func (c *wsClient) close() {
	if tcp, ok := c.conn.UnderlyingConn().(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	c.conn.Close()
	<-c.done
}

// clientSet is many clients of one server.
type clientSet struct {
	url     string
	header  http.Header
	clients []*wsClient
	rng     seqRange
}

var dialer = websocket.Dialer{
	HandshakeTimeout: 20 * time.Second,
	ReadBufferSize:   4096,
	WriteBufferSize:  512,
}

func dialOne(ctx context.Context, url string, h http.Header, rng *seqRange) (*wsClient, error) {
	conn, resp, err := dialer.DialContext(ctx, url, h)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: %w (HTTP %d)", url, err, resp.StatusCode)
		}
		return nil, fmt.Errorf("dial %s: %w", url, err)
	}
	c := &wsClient{conn: conn, done: make(chan struct{}), rng: rng}
	if strings.Contains(url, "/socket.io/") {
		c.sio = true
		if err := sioJoin(conn); err != nil {
			conn.Close()
			return nil, fmt.Errorf("socket.io %s: %w", url, err)
		}
	}
	go c.readLoop()
	return c, nil
}

// sioJoin reads the Engine.IO open packet and joins the main namespace
// (the token went with the handshake request).
func sioJoin(conn *websocket.Conn) error {
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	defer conn.SetReadDeadline(time.Time{})
	_, open, err := conn.ReadMessage()
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(open, []byte("0{")) {
		return fmt.Errorf("open packet %q", open)
	}
	if err := conn.WriteMessage(websocket.TextMessage, []byte("40")); err != nil {
		return err
	}
	_, reply, err := conn.ReadMessage()
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(reply, []byte("40{")) {
		return fmt.Errorf("CONNECT reply %q", reply)
	}
	return nil
}

// dialClients connects n clients, at most 256 handshakes at a time.
func dialClients(ctx context.Context, url string, h http.Header, n int) (*clientSet, error) {
	s := &clientSet{url: url, header: h, clients: make([]*wsClient, n)}
	if err := s.fill(ctx); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// fill (re)connects every missing or closed client.
func (s *clientSet) fill(ctx context.Context) error {
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := range s.clients {
		if c := s.clients[i]; c != nil {
			if !c.closed.Load() {
				continue
			}
			c.close()
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			var c *wsClient
			var err error
			for attempt := 0; attempt < 3; attempt++ {
				if c, err = dialOne(ctx, s.url, s.header, &s.rng); err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			s.clients[i] = c
		}(i)
	}
	wg.Wait()
	return firstErr
}

// waitFrames waits until every client has received at least one frame
// (rowcast sends stats:updated on connect).
func (s *clientSet) waitFrames(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		missing := 0
		for _, c := range s.clients {
			if c == nil || c.frames.Load() == 0 {
				missing++
			}
		}
		if missing == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d clients received no frame within %v", missing, len(s.clients), timeout)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

func (s *clientSet) close() {
	var wg sync.WaitGroup
	for _, c := range s.clients {
		if c != nil {
			wg.Add(1)
			go func() { defer wg.Done(); c.close() }()
		}
	}
	wg.Wait()
}

// rows sums row events received by all clients.
func (s *clientSet) rows() int64 {
	var n int64
	for _, c := range s.clients {
		if c != nil {
			n += c.rows.Load()
		}
	}
	return n
}

// closedCount counts clients whose connection ended, and those the server
// closed with 4008 (slow consumer).
func (s *clientSet) closedCount() (closed, slow int) {
	for _, c := range s.clients {
		if c == nil || c.closed.Load() {
			closed++
			if c != nil && c.closeCode.Load() == 4008 {
				slow++
			}
		}
	}
	return closed, slow
}

// countRange starts counting row events with sequence numbers in
// [lo, hi); (0, 0) stops.
func (s *clientSet) countRange(lo, hi int64) {
	s.rng.lo.Store(lo)
	s.rng.hi.Store(hi)
}

// inRange sums the row events in the current range over all clients.
func (s *clientSet) inRange() int64 {
	var n int64
	for _, c := range s.clients {
		if c != nil {
			n += c.inRange.Load()
		}
	}
	return n
}

// waitInRange waits until the clients together have target row events in
// the range, or timeout, or no progress for stall.
func (s *clientSet) waitInRange(ctx context.Context, target int64, timeout, stall time.Duration) int64 {
	deadline := time.Now().Add(timeout)
	last, lastChange := s.inRange(), time.Now()
	for {
		n := s.inRange()
		if n >= target {
			return n
		}
		if n != last {
			last, lastChange = n, time.Now()
		}
		if time.Now().After(deadline) || time.Since(lastChange) > stall || ctx.Err() != nil {
			return n
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// lastRow is the latest row receive time over all clients.
func (s *clientSet) lastRow() time.Time {
	var t int64
	for _, c := range s.clients {
		if c != nil {
			t = max(t, c.lastRow.Load())
		}
	}
	return time.Unix(0, t)
}

// waitRows waits until the clients together have received target row
// events, or timeout, or no progress for stall. It returns the count.
func (s *clientSet) waitRows(ctx context.Context, target int64, timeout, stall time.Duration) int64 {
	deadline := time.Now().Add(timeout)
	last, lastChange := s.rows(), time.Now()
	for {
		n := s.rows()
		if n >= target {
			return n
		}
		if n != last {
			last, lastChange = n, time.Now()
		}
		if time.Now().After(deadline) || time.Since(lastChange) > stall || ctx.Err() != nil {
			return n
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// record starts recording sequence numbers [base, base+n) on the clients
// picked (at most max of them, evenly spread).
func (s *clientSet) record(base, n int64, maxClients int) []*recorder {
	step := 1
	if len(s.clients) > maxClients {
		step = len(s.clients) / maxClients
	}
	var recs []*recorder
	for i := 0; i < len(s.clients); i += step {
		c := s.clients[i]
		if c == nil {
			continue
		}
		r := &recorder{base: base, n: n, pairs: make([]recPair, 0, min(n, 1<<16))}
		c.rec.Store(r)
		recs = append(recs, r)
	}
	return recs
}

func (s *clientSet) stopRecording() {
	for _, c := range s.clients {
		if c != nil {
			c.rec.Store(nil)
		}
	}
}

// authHeader is the rowcast client's Authorization header.
func (b *bench) authHeader() http.Header {
	return http.Header{"Authorization": {"Bearer " + b.token}}
}

func wsURL(addr string) string { return "ws://" + addr + "/ws" }

// sioURL is rowcast's Socket.IO endpoint on the WebSocket transport.
func sioURL(addr string) string { return "ws://" + addr + "/socket.io/?EIO=4&transport=websocket" }

func itoa(n int) string { return strconv.Itoa(n) }
