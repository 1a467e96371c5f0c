package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"rowcast"
	"rowcast/integration/harness"
)

// The chaos test's clients: dashboards as README's minimal client is
// written (load the snapshot, connect with its lastEventId, upsert rows by
// key, drop deleted ones, refetch on resync, resume with the last id),
// over WebSocket, SSE and Socket.IO, each keeping a mirror of the table
// that is checked as events arrive and compared with the table at the end.

// mirror is one client's view of the tickets table and what it saw.
type mirror struct {
	name, transport string

	mu   sync.Mutex
	rows map[string]*mrow
	// The last id applied: later events at or before it are dropped
	// (dedupe by id, as a client does after a resume).
	last    rowcast.EventID
	lastID  string
	hasLast bool
	// segments: the ids received since each snapshot, for the logical
	// mode's id oracle.
	segments []segment
	stats    map[string]any

	events, dups, snapshots, connects, resumes int
	resyncs                                    map[string]int
	violations                                 []string
	// resyncLog says when each resync came, for a failure's report.
	resyncLog   []string
	lastEventAt time.Time
	// sockLast is the id of the last event a Socket.IO socket received
	// (its recovery offset), duplicates included.
	sockLast    rowcast.EventID
	hasSockLast bool
}

// mrow is a row of the view (as README's client keeps it: the last event
// wins) and, for the checks, the newest revision seen of it.
type mrow struct {
	data     map[string]any
	maxRev   int64
	fromSnap bool // its newest revision came from a snapshot
}

// refetched marks a segment that a snapshot ended without a resync (a
// Socket.IO connection that was not recovered).
const refetched = "(refetched)"

// segment is what a client received between two snapshots.
type segment struct {
	cursor rowcast.EventID // the snapshot's lastEventId
	hasCur bool
	ids    []rowcast.EventID
	// endedBy is the resync reason that ended it ("" for the last).
	endedBy string
	// resumedFrom is, for Socket.IO, the last event id the socket had
	// received when the resync came: socket.io-client recovers from the
	// offset of the last event it received, which a snapshot fetched
	// since (after a resync, or a connection not recovered) does not
	// move. It can be older than the snapshot's cursor.
	resumedFrom    rowcast.EventID
	hasResumedFrom bool
}

func newMirror(name, transport string) *mirror {
	return &mirror{name: name, transport: transport, rows: map[string]*mrow{}, resyncs: map[string]int{}}
}

func (m *mirror) violation(format string, args ...any) {
	m.violations = append(m.violations, fmt.Sprintf("%s: ", m.name)+fmt.Sprintf(format, args...))
}

// snapshotDoc is /api/snapshot's answer.
type snapshotDoc struct {
	Stats       map[string]any   `json:"stats"`
	Tickets     []map[string]any `json:"tickets"`
	LastEventID string           `json:"lastEventId"`
}

// install replaces the view with a snapshot and starts a new segment.
func (m *mirror) install(snap snapshotDoc) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.snapshots++
	m.rows = map[string]*mrow{}
	for _, tk := range snap.Tickets {
		m.rows[fmt.Sprint(tk["id"])] = &mrow{data: tk, maxRev: revOf(tk), fromSnap: true}
	}
	if n := len(m.segments); n > 0 && m.segments[n-1].endedBy == "" {
		m.segments[n-1].endedBy = refetched
	}
	seg := segment{}
	if id, err := rowcast.ParseEventID(snap.LastEventID); err == nil {
		seg.cursor, seg.hasCur = id, true
		m.last, m.lastID, m.hasLast = id, snap.LastEventID, true
	} else {
		m.hasLast, m.lastID = false, ""
	}
	m.segments = append(m.segments, seg)
	if snap.Stats != nil {
		m.stats = snap.Stats
	}
}

func revOf(row map[string]any) int64 {
	n, _ := strconv.ParseInt(fmt.Sprint(row["rev"]), 10, 64)
	return n
}

// cursor is the id to resume from.
func (m *mirror) cursor() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastID
}

// apply takes one event. It reports a resync (the client must refetch)
// with its reason.
func (m *mirror) apply(id, event string, data json.RawMessage) (resync bool, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch event {
	case "stats:updated":
		var d struct {
			Stats map[string]any `json:"stats"`
		}
		if json.Unmarshal(data, &d) == nil {
			m.stats = d.Stats
		}
		return false, ""
	case "resync":
		var d struct {
			Reason string `json:"reason"`
		}
		json.Unmarshal(data, &d)
		m.resyncs[d.Reason]++
		m.resyncLog = append(m.resyncLog, fmt.Sprintf("%s: resync %q with last id %s, %v after the last event",
			time.Now().Format("15:04:05.000"), d.Reason, m.lastID, time.Since(m.lastEventAt).Round(time.Millisecond)))
		if n := len(m.segments); n > 0 {
			m.segments[n-1].endedBy = d.Reason
			if m.hasSockLast {
				m.segments[n-1].resumedFrom, m.segments[n-1].hasResumedFrom = m.sockLast, true
			}
		}
		return true, d.Reason
	case "ticket:created", "ticket:updated", "ticket:deleted":
	default:
		return false, ""
	}
	eid, err := rowcast.ParseEventID(id)
	if err != nil {
		m.violation("%s without a valid id (%q)", event, id)
		return false, ""
	}
	if m.transport == "socketio" {
		m.sockLast, m.hasSockLast = eid, true
	}
	if m.hasLast && eid.SameEpoch(m.last) && !m.last.Less(eid) {
		m.dups++ // sent again; a client drops it by id
		return false, ""
	}
	m.last, m.lastID, m.hasLast = eid, id, true
	m.lastEventAt = time.Now()
	if n := len(m.segments); n > 0 {
		m.segments[n-1].ids = append(m.segments[n-1].ids, eid)
	}
	m.events++
	var d struct {
		Ticket   map[string]any `json:"ticket"`
		TicketID json.Number    `json:"ticketId"`
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.UseNumber()
	if err := dec.Decode(&d); err != nil {
		m.violation("%s %s: %v", event, id, err)
		return false, ""
	}
	if event == "ticket:deleted" {
		delete(m.rows, d.TicketID.String())
		return false, ""
	}
	key, rev := fmt.Sprint(d.Ticket["id"]), revOf(d.Ticket)
	cur := m.rows[key]
	if cur == nil {
		// A row the client does not have: new, or (after a snapshot)
		// one deleted before the snapshot was read whose changes come
		// again; its delete follows then.
		m.rows[key] = &mrow{data: d.Ticket, maxRev: rev}
		return false, ""
	}
	// A change the snapshot already showed, sent because the snapshot's
	// cursor is taken before its rows are read.
	stale := cur.fromSnap && rev <= cur.maxRev
	switch {
	case stale:
	case event == "ticket:created":
		m.violation("%s %s: ticket %s created again (revision %d; it had %d)", event, id, key, rev, cur.maxRev)
		cur.maxRev, cur.fromSnap = max(cur.maxRev, rev), false
	case rev == cur.maxRev+1:
		cur.maxRev, cur.fromSnap = rev, false
	case rev <= cur.maxRev:
		m.violation("%s %s: ticket %s at revision %d again or out of order (it had %d)", event, id, key, rev, cur.maxRev)
	default:
		m.violation("%s %s: ticket %s jumps from revision %d to %d: changes in between never arrived", event, id, key, cur.maxRev, rev)
		cur.maxRev, cur.fromSnap = rev, false
	}
	cur.data = d.Ticket
	return false, ""
}

// view returns the mirror's rows.
func (m *mirror) view() map[string]map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]map[string]any, len(m.rows))
	for k, r := range m.rows {
		out[k] = r.data
	}
	return out
}

// fetchSnapshot loads /api/snapshot as the client's user.
func fetchSnapshot(ctx context.Context, base, tok string) (snapshotDoc, error) {
	var snap snapshotDoc
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/snapshot?limit=500", nil)
	if err != nil {
		return snap, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := chaosHTTP.Do(req)
	if err != nil {
		return snap, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return snap, fmt.Errorf("snapshot: HTTP %d %s", resp.StatusCode, b)
	}
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	return snap, dec.Decode(&snap)
}

// chaosHTTP is the chaos clients' HTTP client; its idle connections are
// closed before rowcast's goroutines are counted.
var chaosHTTP = &http.Client{Timeout: 30 * time.Second}

// chaosClient runs one dashboard until stop, then catches up and stays
// connected until done.
type chaosClient struct {
	m    *mirror
	base string // rowcast's http://host:port
	tok  string
	slow bool // reads slowly now and then
	// churn: disconnects at random while set.
	churn   func() bool
	monitor bool
}

// backoff waits a little before the next attempt, unless ctx ends.
func backoff(ctx context.Context, rng *rand.Rand) bool {
	t := time.NewTimer(time.Duration(50+rng.IntN(250)) * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// refetch loads the snapshot into the mirror, retrying until it works.
func (c *chaosClient) refetch(ctx context.Context, rng *rand.Rand) bool {
	for ctx.Err() == nil {
		snap, err := fetchSnapshot(ctx, c.base, c.tok)
		if err == nil {
			c.m.install(snap)
			return true
		}
		if !backoff(ctx, rng) {
			return false
		}
	}
	return false
}

// disconnectAfter is how long a churning client stays connected.
func disconnectAfter(rng *rand.Rand) time.Duration {
	return time.Duration(1000+rng.IntN(6000)) * time.Millisecond
}

// runWS is a WebSocket dashboard: /ws?lastEventId=..., refetch and
// reconnect on resync.
func (c *chaosClient) runWS(ctx context.Context, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	if !c.refetch(ctx, rng) {
		return
	}
	for ctx.Err() == nil {
		q := url.Values{"access_token": {c.tok}}
		cur := c.m.cursor()
		if cur != "" {
			q.Set("lastEventId", cur)
		}
		u := "ws" + strings.TrimPrefix(c.base, "http") + "/ws?" + q.Encode()
		d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
		conn, _, err := d.DialContext(ctx, u, nil)
		if err != nil {
			if !backoff(ctx, rng) {
				return
			}
			continue
		}
		c.m.mu.Lock()
		c.m.connects++
		if cur != "" {
			c.m.resumes++
		}
		c.m.mu.Unlock()
		needSnap := c.readWS(ctx, conn, rng)
		conn.Close()
		if needSnap && !c.refetch(ctx, rng) {
			return
		}
		if !backoff(ctx, rng) {
			return
		}
	}
}

// readWS reads one connection until it ends, the client drops it, or a
// resync asks for a refetch (reported).
func (c *chaosClient) readWS(ctx context.Context, conn *websocket.Conn, rng *rand.Rand) (needSnap bool) {
	var drop <-chan time.Time
	if c.churn() {
		t := time.NewTimer(disconnectAfter(rng))
		defer t.Stop()
		drop = t.C
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	go func() {
		if drop != nil {
			select {
			case <-drop:
				conn.Close()
			case <-ctx.Done():
			}
		}
	}()
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return false
		}
		var msg message
		if err := json.Unmarshal(data, &msg); err != nil {
			c.m.mu.Lock()
			c.m.violation("bad frame %q", data)
			c.m.mu.Unlock()
			return false
		}
		if resync, _ := c.m.apply(msg.ID, msg.Event, msg.Data); resync {
			return true
		}
		c.dawdle(rng)
	}
}

// dawdle is a slow reader's pause: now and then a short one, rarely one
// long enough for rowcast's send queue to fill (a slow consumer, 4008).
func (c *chaosClient) dawdle(rng *rand.Rand) {
	if !c.slow || !c.churn() {
		return
	}
	switch n := rng.IntN(1000); {
	case n < 2:
		time.Sleep(time.Duration(1000+rng.IntN(4000)) * time.Millisecond)
	case n < 10:
		time.Sleep(time.Duration(20+rng.IntN(200)) * time.Millisecond)
	}
}

// runSSE is an EventSource-like dashboard on /events with Last-Event-ID.
func (c *chaosClient) runSSE(ctx context.Context, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 2))
	if !c.refetch(ctx, rng) {
		return
	}
	for ctx.Err() == nil {
		needSnap, ok := c.readSSE(ctx, rng)
		if needSnap && !c.refetch(ctx, rng) {
			return
		}
		if !ok && !backoff(ctx, rng) {
			return
		}
	}
}

func (c *chaosClient) readSSE(ctx context.Context, rng *rand.Rand) (needSnap, connected bool) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if c.churn() {
		t := time.AfterFunc(disconnectAfter(rng), cancel)
		defer t.Stop()
	}
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, c.base+"/events", nil)
	if err != nil {
		return false, false
	}
	req.Header.Set("Authorization", "Bearer "+c.tok)
	cur := c.m.cursor()
	if cur != "" {
		req.Header.Set("Last-Event-ID", cur)
	}
	resp, err := sseHTTP.Do(req)
	if err != nil {
		return false, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, false
	}
	c.m.mu.Lock()
	c.m.connects++
	if cur != "" {
		c.m.resumes++
	}
	c.m.mu.Unlock()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	var id, event string
	var data strings.Builder
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if event != "" || data.Len() > 0 {
				if resync, _ := c.m.apply(id, event, json.RawMessage(data.String())); resync {
					return true, true
				}
			}
			id, event = "", ""
			data.Reset()
			c.dawdle(rng)
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id: "):
			id = line[4:]
		case strings.HasPrefix(line, "event: "):
			event = line[7:]
		case strings.HasPrefix(line, "data: "):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(line[6:])
		}
	}
	return false, true
}

// sseHTTP has no overall timeout: a stream lives long.
var sseHTTP = &http.Client{}

// runSIO drives socket.io-client (integration/sio/client.mjs): the
// library reconnects and recovers its connection state by itself; the
// test drops its connection now and then ("close-engine", as a network
// failure would). Socket.IO has no cursor to connect with, so the client
// loads the snapshot once connected, whenever a connection was not
// recovered, and on resync, and goes on applying the same stream (what
// the snapshot already shows is dropped by id or is an older revision).
func (c *chaosClient) runSIO(ctx context.Context, seed uint64, node string, logf func(string, ...any)) {
	rng := rand.New(rand.NewPCG(seed, 3))
	cfg, _ := json.Marshal(map[string]any{"url": c.base, "options": map[string]any{
		"auth": map[string]string{"token": c.tok}, "reconnectionDelay": 100, "reconnectionDelayMax": 1000,
		"randomizationFactor": 0.5,
	}})
	cmd := exec.Command(node, "client.mjs", string(cfg))
	cmd.Dir = sioDir
	stdout, stdoutW, err := os.Pipe()
	if err != nil {
		logf("socket.io client %s: %v", c.m.name, err)
		return
	}
	cmd.Stdout = stdoutW
	stdin, err := cmd.StdinPipe()
	if err != nil {
		logf("socket.io client %s: %v", c.m.name, err)
		return
	}
	proc, err := harness.Start(cmd, nil)
	stdoutW.Close()
	if err != nil {
		stdout.Close()
		logf("socket.io client %s: %v", c.m.name, err)
		return
	}
	defer func() {
		stdin.Close() // client.mjs disconnects and exits
		proc.WaitExit(10 * time.Second)
		stdout.Close()
	}()
	lines := make(chan sioLine, 4096)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 64<<20)
		for sc.Scan() {
			var l sioLine
			if json.Unmarshal(sc.Bytes(), &l) != nil {
				l = sioLine{Type: "garbage", Message: sc.Text()}
			}
			lines <- l
		}
	}()
	drop := time.NewTimer(disconnectAfter(rng))
	defer drop.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-drop.C:
			if c.churn() {
				io.WriteString(stdin, "close-engine\n")
			}
			drop.Reset(disconnectAfter(rng))
		case l, ok := <-lines:
			if !ok {
				c.m.mu.Lock()
				c.m.violation("client.mjs exited: %s", proc.Log)
				c.m.mu.Unlock()
				return
			}
			switch l.Type {
			case "connect":
				c.m.mu.Lock()
				c.m.connects++
				if l.Recovered {
					c.m.resumes++
				}
				c.m.mu.Unlock()
				if !l.Recovered && !c.refetch(ctx, rng) {
					return
				}
			case "event":
				m := l.message()
				if resync, _ := c.m.apply(m.ID, m.Event, m.Data); resync && !c.refetch(ctx, rng) {
					return
				}
			case "garbage":
				c.m.mu.Lock()
				c.m.violation("client.mjs printed %q", l.Message)
				c.m.mu.Unlock()
			}
		}
	}
}

// sioAvailable reports whether node and integration/sio's modules are
// there (installing them as the Socket.IO tests do), without failing.
func sioAvailable() (node string, err error) {
	node, err = exec.LookPath("node")
	if err != nil {
		return "", errors.New("node not found on PATH")
	}
	if _, err := os.Stat(sioDir + "/node_modules/socket.io-client/package.json"); err == nil {
		return node, nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return "", errors.New("integration/sio/node_modules is missing and npm is not on PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = sioDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm ci in integration/sio: %v\n%s", err, out)
	}
	return node, nil
}
