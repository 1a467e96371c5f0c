package broadcast

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"time"

	"rowcast"
)

// serveNamespace checks a CONNECT to the main namespace and, when it is
// granted, runs the Session until it ends (writer only). joined reports
// a granted CONNECT; open is false once the Engine.IO session is closed.
//
// The CONNECT payload is socket.io-client's auth option: token (the JWT,
// used when the handshake request carried none in the cookie, the
// Authorization header or access_token) and filter (as /ws's subscribe
// message). A client reconnecting after a connection with state recovery
// adds pid and offset: when the replay window still holds every event
// after offset, the client gets them and its pid back (socket.recovered);
// otherwise it gets a new pid (and resync when offset is too old).
func (e *eioSession) serveNamespace(payload json.RawMessage) (joined, open bool) {
	s := e.srv
	req := parseSIOConnectPayload(payload)
	token := e.token
	if token == "" {
		token = req.Token
	}
	user, err := s.cfg.Auth.Verify(token)
	if err != nil {
		s.obs.ConnectionRefused(sioTransport, "auth")
		return false, e.refuseNamespace(sioAuthMessage(err))
	}
	filter, err := ParseFilterJSON(req.Filter, s.cfg.FilterColumns)
	if err != nil {
		return false, e.refuseNamespace(err.Error())
	}
	var resume *rowcast.EventID
	if sioValidPID(req.PID) && req.Offset != "" {
		if id, err := rowcast.ParseEventID(req.Offset); err == nil {
			resume = &id
		}
	}
	sess := s.newSession(sioTransport, user, filter)
	sess.SetAbort(e.abortWrite)
	if !s.live.add() {
		e.close(sioCloseShutdown, ErrShuttingDown.Error(), false, CloseGoingAway)
		return false, false
	}
	defer s.live.done()
	sub, err := s.cfg.Hub.Subscribe(sess, resume)
	if err != nil {
		e.close(sioCloseShutdown, err.Error(), false, CloseGoingAway)
		return false, false
	}
	pid := sioID()
	recovered := resume != nil && sub.Resync == nil
	if recovered {
		pid = req.PID
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		s.cfg.Hub.Unsubscribe(sess)
		return false, false
	}
	e.ns, e.sess = sioNSConnected, sess
	engine := e.engine
	e.mu.Unlock()

	s.obs.ClientConnected(sioTransport)
	s.log.Info("User connected: "+user.Name()+" ("+sess.ID+")", "transport", sioTransport,
		"engine", engine, "recovered", recovered, "remote", e.remote)
	e.skipDelivered = false
	write := func(ev *Event) error {
		if ev == e.kick {
			e.skipDelivered = true
			return e.flushCtrl()
		}
		p := sioEventPacket(ev)
		if p == nil {
			e.skipDelivered = true
			s.log.Debug("socket.io: event name reserved by socket.io-client; not sent", "event", ev.Name)
			return nil
		}
		return e.send(p, sess.Done())
	}
	err = e.send(sioConnectReply(sess.ID, pid), nil)
	if err == nil {
		err = e.pingIfDue()
	}
	if err == nil {
		err = sess.Pump(context.Background(), sub, sioPumpObserver{s.obs, e}, write, e.ping, e.cfg.PingInterval)
	}
	s.cfg.Hub.Unsubscribe(sess)
	e.mu.Lock()
	if e.sess == sess {
		e.ns, e.sess = sioNSIdle, nil
	}
	closed, engineReason, ws := e.closed, e.closeReason, e.ws
	e.mu.Unlock()

	code, reason := sess.CloseReason()
	var ne net.Error
	open = false
	switch {
	case closed:
		reason = engineReason
	case code == CloseSlowConsumer:
		sioResetConn(ws)
		e.close(sioCloseSlowConsumer, reason, false, code)
	case errors.As(err, &ne) && ne.Timeout():
		reason = "slow consumer (write timed out)"
		s.obs.SlowConsumer(sioTransport)
		sioResetConn(ws)
		e.close(sioCloseSlowConsumer, reason, false, 0)
	case err != nil && !errors.Is(err, errSIOSessionEnded):
		reason = sioWriteFailure(err)
		e.close(sioCloseClient, reason, false, 0)
	case code == CloseGoingAway:
		e.close(sioCloseShutdown, reason, false, code)
	case code != 0:
		e.close(sioCloseProtocol, reason, false, code)
	default:
		// The client left the namespace (DISCONNECT); the Engine.IO
		// session stays until the client closes it.
		open = !e.isClosed()
	}
	s.obs.ClientDisconnected(sioTransport)
	s.log.Info("User disconnected: "+user.Name()+" ("+sess.ID+")", "transport", sioTransport, "reason", reason)
	return true, open
}

// refuseNamespace answers a CONNECT with CONNECT_ERROR {"message": msg};
// the Engine.IO session stays open (socket.io-client closes it).
func (e *eioSession) refuseNamespace(msg string) (open bool) {
	e.mu.Lock()
	if e.ns == sioNSConnecting {
		e.ns = sioNSIdle
	}
	e.mu.Unlock()
	if err := e.send(sioConnectErrorPacket("/", msg), nil); err != nil {
		e.close(sioCloseClient, sioWriteFailure(err), false, 0)
		return false
	}
	return true
}

func sioAuthMessage(err error) string {
	if errors.Is(err, ErrNoToken) {
		return "no token: send the JWT in the cookie, an Authorization: Bearer header, access_token, or socket.io-client's auth: {token}"
	}
	return err.Error()
}

// onEvent handles an event from the client. The one rowcast knows is
// subscribe, which changes the filter like /ws's subscribe message:
// socket.emit("subscribe", {filter: {status: ["open"]}}), answered by a
// subscribed (or error) event. Other events are ignored, as a Socket.IO
// server without a handler for them does.
func (e *eioSession) onEvent(sess *Session, data json.RawMessage) error {
	var args []json.RawMessage
	if err := json.Unmarshal(data, &args); err != nil || len(args) == 0 {
		return sioProtoErr(sioErrParse, "EVENT payload must be a non-empty array")
	}
	var name string
	_ = json.Unmarshal(args[0], &name)
	if name != "subscribe" {
		e.srv.log.Debug("socket.io: ignoring client event", "event", name, "conn", sess.ID)
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
	if reply := e.srv.clientMessage(sess, msg); !sess.offer(reply) {
		sess.Close(CloseSlowConsumer, "slow consumer")
	}
	return nil
}

// sioPumpObserver passes the Observer to Session.Pump, leaving out the
// writes that are not events (control packets, reserved names).
type sioPumpObserver struct {
	Observer
	e *eioSession
}

func (o sioPumpObserver) Delivered(transport string, d time.Duration) {
	if o.e.skipDelivered {
		o.e.skipDelivered = false
		return
	}
	o.Observer.Delivered(transport, d)
}
