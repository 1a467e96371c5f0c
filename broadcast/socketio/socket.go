package socketio

import (
	"encoding/json"
	"errors"
	"net"

	"rowcast/broadcast"
	"rowcast/broadcast/wsframe"
)

// serveNamespace checks a CONNECT to the main namespace and, when it is
// granted, starts the Session's writer (writer only). joined reports a
// granted CONNECT; open is false once the Engine.IO session is closed;
// started means the Session's on-demand writer (Session.Start) has taken
// over the writing: the caller's writer must stop, and a new one starts
// (run) when the namespace is left with the Engine.IO session still open.
//
// The CONNECT payload is socket.io-client's auth option: token (the JWT,
// used when the handshake request carried none in the cookie, the
// Authorization header or access_token) and filter (as /ws's subscribe
// message). A client reconnecting after a connection with state recovery
// adds pid and offset: when the replay window still holds every event
// after offset, the client gets them and its pid back (socket.recovered);
// otherwise it gets a new pid (and resync when offset is too old).
func (e *eioSession) serveNamespace(payload json.RawMessage) (joined, open, started bool) {
	gate := e.h.gate
	req := parseConnectPayload(payload)
	token := e.token
	if token == "" {
		token = req.Token
	}
	user, ref := gate.Verify(token, Transport)
	if ref != nil {
		return false, e.refuseNamespace(authMessage(token, ref)), false
	}
	filter, err := gate.ParseFilterJSON(req.Filter)
	if err != nil {
		return false, e.refuseNamespace(err.Error()), false
	}
	// A client recovering its connection state resumes from its offset.
	resume := ""
	if validPID(req.PID) {
		resume = req.Offset
	}
	slot, ref := gate.Take(Transport)
	switch {
	case ref != nil && ref.Reason == "shutdown":
		e.close(closeShutdown, ref.Message, false, broadcast.CloseGoingAway)
		return false, false, false
	case ref != nil:
		return false, e.refuseNamespace(ref.Message), false
	}
	sess := gate.NewSession(Transport, user, filter)
	sess.SetAbort(e.abortWrite)
	sub, err := gate.Hub().Subscribe(sess, resume)
	if err != nil {
		slot.Release()
		e.close(closeShutdown, err.Error(), false, broadcast.CloseGoingAway)
		return false, false, false
	}
	pid := newID()
	recovered := resume != "" && sub.Resync == nil
	if recovered {
		pid = req.PID
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		gate.Hub().Unsubscribe(sess)
		slot.Release()
		return false, false, false
	}
	e.ns, e.sess = nsConnected, sess
	e.h.reg.setPending(e, false)
	engine := e.engine
	e.mu.Unlock()

	gate.Connected(sess, e.remote, "engine", engine, "recovered", recovered)
	if err := e.send(connectReply(sess.ID, pid), nil); err != nil {
		return true, e.leaveNamespace(sess, slot, err), false
	}
	// From here the Session's writer runs only while there is something
	// to write (events, control packets, a ping, the end): an idle
	// connection keeps no writer goroutine. Pings are the session's beat
	// (beatDue wakes the writer, Write sends them), not the Session's own;
	// the writer's last act (end) says how the namespace was left.
	sess.Start(sub, namespaceWriter{e, sess}, 0, func(err error) {
		if e.leaveNamespace(sess, slot, err) {
			// The client left the namespace and keeps the Engine.IO
			// session: its writer takes over again, with a fresh
			// connect timeout.
			go e.run()
		}
	})
	return true, true, true
}

// leaveNamespace ends the namespace's Session (writer only): it is
// unsubscribed, its connection slot released, and the Engine.IO session
// closed as the outcome asks. open reports whether the Engine.IO session
// stays open (the client left the namespace).
func (e *eioSession) leaveNamespace(sess *broadcast.Session, slot *broadcast.Slot, err error) (open bool) {
	gate := e.h.gate
	defer slot.Release()
	gate.Hub().Unsubscribe(sess)
	e.mu.Lock()
	if e.sess == sess {
		e.ns, e.sess = nsIdle, nil
	}
	if !e.closed {
		e.h.reg.setPending(e, true)
	}
	closed, engineReason, ws := e.closed, e.closeReason, e.ws
	e.mu.Unlock()

	if errors.Is(err, errSessionEnded) {
		err = nil // the session was closed while its writer waited for a poll
	}
	d := sess.Outcome(err)
	switch {
	case closed:
		d.Reason = engineReason
	case d.Kind == broadcast.DisconnectSlowConsumer:
		resetConn(ws)
		e.close(closeSlowConsumer, d.Reason, false, d.Code)
	case d.Kind == broadcast.DisconnectWriteFailed:
		e.close(closeClient, writeFailure(err), false, 0)
	case d.Kind == broadcast.DisconnectShutdown:
		e.close(closeShutdown, d.Reason, false, d.Code)
	case d.Kind == broadcast.DisconnectPolicy:
		e.close(closeProtocol, d.Reason, false, d.Code)
	case d.Kind == broadcast.DisconnectTokenExpired:
		// Closing the Engine.IO session (not only the namespace) makes
		// socket.io-client reconnect, with the fresh cookie or auth.
		e.close(closeTokenExpired, d.Reason, false, d.Code)
	default:
		// The client left the namespace (DISCONNECT); the Engine.IO
		// session stays until the client closes it.
		open = !e.isClosed()
	}
	gate.Disconnected(sess, d)
	return open
}

// namespaceWriter is the Transport the namespace's Session writes to:
// every write goes through the Engine.IO session (a WebSocket frame, or
// the outbox of a long-polling client), control packets first.
type namespaceWriter struct {
	e    *eioSession
	sess *broadcast.Session
}

func (w namespaceWriter) Write(evs []*broadcast.Event) error {
	e := w.e
	e.mu.Lock()
	ws, closed, ping := e.ws, e.closed, e.pingDue
	var ctrl [][]byte
	if ws != nil && !closed {
		ctrl = e.ctrl
		e.ctrl = nil
	}
	e.mu.Unlock()
	if ws != nil && !closed {
		if ping {
			if err := e.ping(); err != nil {
				return err
			}
		}
		return w.writeWS(ws, ctrl, evs)
	}
	if err := e.flushCtrl(); err != nil {
		return err
	}
	for _, ev := range evs {
		p := eventPacket.Of(ev)
		if p == nil {
			w.e.h.log.Debug("socket.io: event name reserved by socket.io-client; not sent", "event", ev.Name)
			continue
		}
		if err := w.e.send(p, w.sess.Done()); err != nil {
			return err
		}
	}
	return nil
}

// writeWS writes the control packets, then the events, to the WebSocket
// in one system call: each event's frame is built once for every client.
func (w namespaceWriter) writeWS(ws net.Conn, ctrl [][]byte, evs []*broadcast.Event) error {
	e := w.e
	return e.writeWS(ws, e.h.cfg.WriteTimeout, func(b *wsframe.Batch) {
		for _, p := range ctrl {
			b.Add(wsframe.Text(p))
		}
		for _, ev := range evs {
			f := eventFrame.Of(ev)
			if f == nil {
				e.h.log.Debug("socket.io: event name reserved by socket.io-client; not sent", "event", ev.Name)
				continue
			}
			b.Add(f)
		}
		// A session the hub drops while this write is under way gets its
		// deadline shortened (abortWrite); ours is set before this looks
		// at the session, so it cannot undo that.
		select {
		case <-w.sess.Done():
			b.Reset() // dropped: no backlog
		default:
		}
	})
}

// Ping is part of broadcast.Transport; the Session is started without
// pings of its own (the Engine.IO session's beat schedules them), so it is
// called only if that changes.
func (w namespaceWriter) Ping() error { return w.e.ping() }

// refuseNamespace answers a CONNECT with CONNECT_ERROR {"message": msg};
// the Engine.IO session stays open (socket.io-client closes it).
func (e *eioSession) refuseNamespace(msg string) (open bool) {
	e.mu.Lock()
	if e.ns == nsConnecting {
		e.ns = nsIdle
	}
	e.mu.Unlock()
	if err := e.send(connectErrorPacket("/", msg), nil); err != nil {
		e.close(closeClient, writeFailure(err), false, 0)
		return false
	}
	return true
}

func authMessage(token string, ref *broadcast.Refusal) string {
	if token == "" {
		return "no token: send the JWT in the cookie, an Authorization: Bearer header, access_token, or socket.io-client's auth: {token}"
	}
	return ref.Message
}

// onEvent handles an event from the client. The one rowcast knows is
// subscribe, which changes the filter like /ws's subscribe message:
// socket.emit("subscribe", {filter: {status: ["open"]}}), answered by a
// subscribed (or error) event. Other events are ignored, as a Socket.IO
// server without a handler for them does.
func (e *eioSession) onEvent(sess *broadcast.Session, data json.RawMessage) error {
	var args []json.RawMessage
	if err := json.Unmarshal(data, &args); err != nil || len(args) == 0 {
		return protoErr(errParse, "EVENT payload must be a non-empty array")
	}
	var name string
	_ = json.Unmarshal(args[0], &name)
	if name != "subscribe" {
		e.h.log.Debug("socket.io: ignoring client event", "event", name, "conn", sess.ID)
		return nil
	}
	filter := json.RawMessage("null")
	if len(args) > 1 {
		var arg map[string]json.RawMessage
		if json.Unmarshal(args[1], &arg) == nil && arg["filter"] != nil {
			filter = arg["filter"]
		}
	}
	msg := append([]byte(`{"type":"subscribe","filter":`), filter...)
	msg = append(msg, '}')
	if !sess.Offer(e.h.gate.ClientMessage(sess, msg)) {
		sess.SlowConsumer()
	}
	return nil
}
