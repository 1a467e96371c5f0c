package socketio

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"rowcast/broadcast"
	"rowcast/broadcast/wsframe"
)

// Namespace states of an Engine.IO session (only the main namespace).
const (
	nsIdle       = iota // not joined (before CONNECT, after DISCONNECT or CONNECT_ERROR)
	nsConnecting        // CONNECT received, being checked by the writer
	nsConnected
)

var (
	errEIOClosed = errors.New("socket.io session closed")
	// errSessionEnded: the namespace session ended while its writer
	// waited for the client to poll.
	errSessionEnded = errors.New("session ended")
)

// protoError is a client breaking the protocol; the session is
// closed.
type protoError struct {
	kind errKind
	msg  string
}

func (e *protoError) Error() string { return e.msg }

func protoErr(kind errKind, msg string) error { return &protoError{kind, msg} }

// errKindOf is the kind of a protocol error (parse unless it says).
func errKindOf(err error) errKind {
	var pe *protoError
	if errors.As(err, &pe) {
		return pe.kind
	}
	return errParse
}

// maxCtrl bounds control packets (connect errors) waiting for the writer.
const maxCtrl = 16

// eioSession is one Engine.IO session. Whatever its transport, one writer
// at a time produces every packet the server sends: until the namespace
// is joined, a goroutine of its own (run) sends pings and the namespace's
// replies; once joined, the namespace's Session writes them with the
// events, from a writer that runs only while there is something to write
// (Session.Start), so an idle joined session has no writer goroutine.
// With long-polling the packets wait in the outbox until a GET takes
// them; with WebSocket the writer writes frames itself. The transport's
// reader (POST requests or the WebSocket read loop) handles what the
// client sends.
type eioSession struct {
	id     string
	h      *Handler
	token  string // from the handshake request; never logged
	remote string
	done   chan struct{}

	mu          sync.Mutex
	closed      bool
	byClient    bool // the client closed: a pending GET gets noop, not close
	closeReason string
	// engine is "polling" or "websocket": counted in the sessions gauge
	// from the handshake until close, moved by an upgrade (both under mu,
	// so a move and the final -1 never cross).
	engine    string
	ws        net.Conn // set once the transport is WebSocket
	probe     net.Conn // WebSocket being probed for an upgrade
	probing   bool     // an upgrade is under way (one at a time)
	upgrading bool     // probe answered: GETs return at once
	outbox    [][]byte // packets waiting for a GET
	outBytes  int
	// drained, pollWake and pollTimer exist for sessions that start on
	// long-polling only: a WebSocket session never needs them, and at
	// thousands of idle connections each one counts.
	drained   chan struct{} // closed (and replaced) when the outbox is taken
	pollWake  chan struct{} // wakes the pending GET
	polling   bool          // a GET is pending
	posting   bool          // a POST is being read
	pollTimer *time.Timer   // no GET for PingInterval+PingTimeout: close
	// beat is the session's one timer for the heartbeat: while no pong
	// is awaited it fires when the next ping is due (pingDue, and the
	// current writer is woken to send it); after a ping it fires if the
	// pong is late. One timer, whichever writer runs, so that the pings
	// keep their schedule across the writer's phases and an idle session
	// needs no goroutine to send them.
	beat        *time.Timer
	waitingPong bool
	pingDue     bool
	ns          int                // namespace state
	pending     bool               // counted as pending by the registry (no slot held)
	sess        *broadcast.Session // the namespace's session while connected
	ctrl        [][]byte           // control packets for the writer

	wake chan struct{} // ctrl packets, a ping or a CONNECT for run
	// connect is a CONNECT's payload for run, pending while connecting
	// (under mu): a field and a wake, not a channel of its own, which
	// every idle connection would carry.
	connect        json.RawMessage
	connectPending bool
	wsConn         atomic.Value // net.Conn: e.ws, for abortWrite

	// wsLock (a semaphore, so that a wait can be bounded) is held for
	// every write to the WebSocket, which goes straight to the net.Conn
	// under gorilla: the writer's packets, the reader's pongs and the
	// close frame never interleave. wsBatch is what the holder writes.
	wsLock  chan struct{}
	wsBatch wsframe.Batch
}

// newEIOSession makes a session on engine and counts it as open; close
// counts it out.
func newEIOSession(h *Handler, token, remote, engine string) *eioSession {
	e := &eioSession{
		id:     newID(),
		h:      h,
		token:  token,
		remote: remote,
		engine: engine,
		done:   make(chan struct{}),
		wake:   make(chan struct{}, 1),
		wsLock: make(chan struct{}, 1),
	}
	e.beat = time.AfterFunc(e.h.cfg.PingInterval, e.beatDue)
	if engine == enginePolling {
		e.drained = make(chan struct{})
		e.pollWake = make(chan struct{}, 1)
		e.pollTimer = time.AfterFunc(time.Hour, e.pollTimedOut)
		e.pollTimer.Stop()
	}
	h.obs.Session(engine, 1)
	return e
}

// signal wakes whoever waits on c, if anyone; a nil c (a channel the
// session does not have) is a no-op.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// close ends the session once: the connected Session ends, a pending GET
// is answered (close packet, or noop when the client closed), WebSockets
// are closed (with a close frame when code is set), the connection slot
// is released. kind is what metrics count; reason is logged.
func (e *eioSession) close(kind closeKind, reason string, byClient bool, code int) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed, e.byClient, e.closeReason = true, byClient, reason
	sess, ws, probe := e.sess, e.ws, e.probe
	e.beat.Stop()
	if e.pollTimer != nil {
		e.pollTimer.Stop()
	}
	close(e.done)
	e.h.obs.Session(e.engine, -1)
	e.mu.Unlock()
	e.h.obs.Closed(string(kind))

	e.h.reg.remove(e)
	e.mu.Lock()
	e.h.reg.setPending(e, false)
	e.mu.Unlock()
	if sess != nil {
		sess.Close(0, reason)
	}
	if ws != nil {
		if code != 0 {
			// As gorilla's WriteControl did: wait at most a second for a
			// write under way (a client that stopped reading).
			_ = e.writeWS(ws, time.Second, func(b *wsframe.Batch) { b.Add(wsframe.Close(code, closeText(reason))) })
		}
		ws.Close()
	}
	if probe != nil {
		probe.Close()
	}
	e.h.log.Debug("socket.io session closed", "sid", e.id, "reason", reason)
}

// closeText fits a reason into a close frame (123 bytes at most).
func closeText(reason string) string {
	if len(reason) <= 120 {
		return reason
	}
	cut := 120
	for cut > 0 && !utf8.RuneStart(reason[cut]) {
		cut--
	}
	return reason[:cut]
}

// protocolError closes the session of a client that broke the protocol.
func (e *eioSession) protocolError(err error) {
	e.protocolErrorCode(err, broadcast.ClosePolicy)
}

// protocolErrorCode is protocolError with a WebSocket close code.
func (e *eioSession) protocolErrorCode(err error, code int) {
	e.h.obs.ProtocolError(string(errKindOf(err)))
	e.h.log.Debug("socket.io protocol error", "sid", e.id, "err", err, "remote", e.remote)
	e.close(closeProtocol, "protocol error: "+err.Error(), false, code)
}

func (e *eioSession) isClosed() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// beatDue: a ping is due, or the client did not answer one within
// PingTimeout. A due ping is sent by whichever writer runs: run (woken
// through wake) before the namespace is joined, the Session's on-demand
// writer (Session.Wake) while it is. A polling client with no GET pending
// when its pong is late has stopped polling (it may not even have the
// ping): that is a polling timeout, which the poll timer would report at
// about the same moment.
func (e *eioSession) beatDue() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	if !e.waitingPong {
		e.pingDue = true
		sess := e.sess
		e.mu.Unlock()
		// A writer that starts (run, or Session.Start's first write)
		// looks at pingDue too, so a ping due while the writing changes
		// hands is not lost.
		if sess != nil {
			sess.Wake()
		} else {
			signal(e.wake)
		}
		return
	}
	idlePolling := e.ws == nil && !e.polling
	e.mu.Unlock()
	if idlePolling {
		e.close(closePollTimeout, "polling timeout: no poll for pingInterval+pingTimeout", false, 0)
	} else {
		e.close(closePingTimeout, "ping timeout", false, 0)
	}
}

// pollTimedOut: a polling client stopped polling.
func (e *eioSession) pollTimedOut() {
	e.mu.Lock()
	idle := !e.polling && e.ws == nil
	e.mu.Unlock()
	if idle {
		e.close(closePollTimeout, "polling timeout: no poll for pingInterval+pingTimeout", false, 0)
	}
}

// armPollTimer starts the polling expiry. Called with e.mu held.
func (e *eioSession) armPollTimer() {
	if !e.closed && e.ws == nil && e.pollTimer != nil {
		e.pollTimer.Reset(e.h.cfg.PingInterval + e.h.cfg.PingTimeout)
	}
}

// onPong handles a pong.
func (e *eioSession) onPong() {
	e.mu.Lock()
	if e.waitingPong && !e.closed {
		// The next ping is PingInterval from now, as the reference
		// server schedules it.
		e.beat.Reset(e.h.cfg.PingInterval)
	}
	e.waitingPong = false
	e.mu.Unlock()
}

// outboxLimit is how many bytes may wait for a GET before the event
// writer waits; then the Session's queue fills and the hub drops the
// client as a slow consumer, as with /ws.
const outboxLimit = 64 << 10

// send hands a packet to the transport. Event packets (sessDone set) wait
// while the polling outbox is full; control packets never wait.
func (e *eioSession) send(p []byte, sessDone <-chan struct{}) error {
	e.mu.Lock()
	for {
		if e.closed {
			e.mu.Unlock()
			return errEIOClosed
		}
		if e.ws != nil {
			break
		}
		if sessDone == nil || e.outBytes < outboxLimit {
			e.outbox = append(e.outbox, p)
			e.outBytes += len(p)
			signal(e.pollWake)
			e.mu.Unlock()
			return nil
		}
		drained := e.drained
		e.mu.Unlock()
		select {
		case <-drained:
		case <-e.done:
		case <-sessDone:
			return errSessionEnded
		}
		e.mu.Lock()
	}
	ws := e.ws
	e.mu.Unlock()
	return e.writeWS(ws, e.h.cfg.WriteTimeout, func(b *wsframe.Batch) { b.Add(wsframe.Text(p)) })
}

// errWriteBusy: another write to the WebSocket did not finish in time. A
// timeout, like a write that timed out itself: the client stopped reading.
var errWriteBusy error = writeBusy{}

type writeBusy struct{}

func (writeBusy) Error() string   { return "websocket write timed out waiting for another write" }
func (writeBusy) Timeout() bool   { return true }
func (writeBusy) Temporary() bool { return true }

// writeWS writes what fill adds to the batch to the WebSocket in one
// system call, within timeout (the wait for another write included).
func (e *eioSession) writeWS(nc net.Conn, timeout time.Duration, fill func(*wsframe.Batch)) error {
	deadline := time.Now().Add(timeout)
	select {
	case e.wsLock <- struct{}{}:
	default:
		t := time.NewTimer(timeout)
		select {
		case e.wsLock <- struct{}{}:
			t.Stop()
		case <-t.C:
			return errWriteBusy
		}
	}
	defer func() { <-e.wsLock }()
	// The deadline is set before fill looks at anything (see
	// namespaceWriter.writeWS).
	if err := nc.SetWriteDeadline(deadline); err != nil {
		return fmt.Errorf("websocket write deadline: %w", err)
	}
	fill(&e.wsBatch)
	if err := e.wsBatch.Flush(nc, time.Time{}); err != nil {
		return fmt.Errorf("websocket write: %w", err)
	}
	return nil
}

// ping sends a ping and expects a pong within PingTimeout (writer only).
func (e *eioSession) ping() error {
	e.mu.Lock()
	e.pingDue = false
	if !e.waitingPong && !e.closed {
		e.waitingPong = true
		e.beat.Reset(e.h.cfg.PingTimeout)
	}
	e.mu.Unlock()
	return e.send(eioPingPacket, nil)
}

// queueCtrl queues a control packet for the writer.
func (e *eioSession) queueCtrl(p []byte) error {
	e.mu.Lock()
	if len(e.ctrl) >= maxCtrl {
		e.mu.Unlock()
		return protoErr(errTooLarge, "too many unanswered requests")
	}
	e.ctrl = append(e.ctrl, p)
	sess := e.sess
	e.mu.Unlock()
	if sess != nil {
		sess.Wake() // the namespace's writer flushes ctrl in Write
	}
	signal(e.wake)
	return nil
}

// flushCtrl sends the queued control packets, and a ping when one is due
// (writer only).
func (e *eioSession) flushCtrl() error {
	e.mu.Lock()
	ctrl, ping := e.ctrl, e.pingDue
	e.ctrl = nil
	e.mu.Unlock()
	for _, p := range ctrl {
		if err := e.send(p, nil); err != nil {
			return err
		}
	}
	if ping {
		return e.ping()
	}
	return nil
}

// run is the session's writer while its namespace is not joined: it
// pings, answers the namespace and, once a CONNECT is granted, hands the
// writing to the namespace's Session (Session.Start) and returns, so that
// a joined session has no writer goroutine while idle. When the client
// leaves the namespace with the Engine.IO session open, the Session's
// last writer starts run again. The hub's Shutdown ends a joined
// Session (and so the Engine.IO session); until then the hub's Done does,
// so that a session that never joined, and its pending GET, end at once
// too.
func (e *eioSession) run() {
	// A session whose namespace was just left may owe the client control
	// packets or a ping that came due while the Session's writer ended.
	if err := e.flushCtrl(); err != nil {
		e.close(closeClient, writeFailure(err), false, 0)
		return
	}
	connectTimer := time.NewTimer(e.h.cfg.ConnectTimeout)
	defer connectTimer.Stop()
	connectTimeout := connectTimer.C
	shutdown := e.h.gate.Hub().Done()
	for {
		var err error
		select {
		case <-e.done:
			return
		case <-shutdown:
			e.close(closeShutdown, "server shutting down", false, broadcast.CloseGoingAway)
			return
		case <-connectTimeout:
			e.mu.Lock()
			idle := e.ns == nsIdle
			e.mu.Unlock()
			if idle {
				e.close(closeConnectTimeout, "no Socket.IO CONNECT within "+e.h.cfg.ConnectTimeout.String(), false, broadcast.ClosePolicy)
				return
			}
		case <-e.wake:
			e.mu.Lock()
			payload, connecting := e.connect, e.connectPending
			e.connect, e.connectPending = nil, false
			e.mu.Unlock()
			if !connecting {
				err = e.flushCtrl()
				break
			}
			joined, open, started := e.serveNamespace(payload)
			if !open || started {
				return
			}
			if joined {
				// The namespace was joined and has been left: the client
				// must CONNECT again within the timeout, as after the
				// handshake.
				connectTimer.Reset(e.h.cfg.ConnectTimeout)
				connectTimeout = connectTimer.C
			}
			err = e.flushCtrl()
		}
		if err != nil {
			e.close(closeClient, writeFailure(err), false, 0)
			return
		}
	}
}

func writeFailure(err error) string {
	if errors.Is(err, errEIOClosed) {
		return "closed"
	}
	return "write failed: " + err.Error()
}

// onPacket handles one Engine.IO packet from the client's current
// transport. An error closes the session.
func (e *eioSession) onPacket(p []byte) error {
	if len(p) == 0 {
		return protoErr(errParse, "empty packet")
	}
	switch p[0] {
	case eioPong:
		e.onPong()
		return nil
	case eioMessage:
		return e.onMessage(p[1:])
	case eioClose:
		e.close(closeClient, "client closed the connection", true, 0)
		return errEIOClosed
	case eioUpgrade, eioNoop:
		return nil // outside an upgrade: nothing to do
	case eioPing:
		return protoErr(errParse, "ping from the client: in Engine.IO 4 the server pings")
	case 'b':
		return protoErr(errBinary, "binary payloads are not supported")
	}
	return protoErr(errParse, "unknown Engine.IO packet type "+string(p[:1]))
}

// onMessage handles a Socket.IO packet.
func (e *eioSession) onMessage(data []byte) error {
	p, err := decodePacket(data)
	if err != nil {
		kind := errParse
		if errors.Is(err, errBinaryAttachment) {
			kind = errBinary
		}
		return protoErr(kind, err.Error())
	}
	if p.NSP != "/" {
		if p.Type == typeConnect {
			return e.queueCtrl(connectErrorPacket(p.NSP, "Invalid namespace"))
		}
		return protoErr(errState, "namespace "+p.NSP+" is not connected")
	}
	e.mu.Lock()
	state, sess := e.ns, e.sess
	switch {
	case p.Type == typeConnect && state == nsIdle:
		e.ns = nsConnecting
		e.connect, e.connectPending = p.Data, true
	case p.Type == typeDisconnect && state == nsConnected:
		e.ns, e.sess = nsIdle, nil
	}
	e.mu.Unlock()
	switch p.Type {
	case typeConnect:
		if state != nsIdle {
			return protoErr(errState, "CONNECT to a namespace already joined")
		}
		signal(e.wake)
		return nil
	case typeDisconnect:
		if state != nsConnected {
			return protoErr(errState, "DISCONNECT from a namespace not joined")
		}
		sess.Close(0, "client left the namespace")
		return nil
	case typeEvent:
		if state != nsConnected {
			return protoErr(errState, "EVENT before CONNECT")
		}
		// An ack id asks for an acknowledgement rowcast never sends, as a
		// Socket.IO server without a handler for the event would not.
		return e.onEvent(sess, p.Data)
	case typeAck:
		return protoErr(errAck, "acknowledgements are not supported")
	}
	return protoErr(errParse, "unexpected Socket.IO packet type")
}

// abortWrite unblocks a writer stuck on a WebSocket client that stopped
// reading (Session.SetAbort). It must not take e.mu: the hub calls it
// with its own lock held.
func (e *eioSession) abortWrite() {
	if c, ok := e.wsConn.Load().(net.Conn); ok {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	}
}

// resetConn drops a slow client's TCP connection rather than closing it
// gracefully, as /ws does.
func resetConn(c net.Conn) {
	if tcp, ok := c.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
}
