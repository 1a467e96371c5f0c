package socketio

import (
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"

	"rowcast/broadcast"
	"rowcast/broadcast/wsframe"
)

// serveUpgrade takes a WebSocket for a polling session: the client probes
// it (2probe, answered 3probe), pauses polling, then sends 5 and the
// session moves to the WebSocket with whatever was waiting for a GET. A
// second WebSocket for the same session is accepted and closed at once.
func (e *eioSession) serveUpgrade(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	switch {
	case e.closed:
		e.mu.Unlock()
		e.h.obs.Upgrade(upgradeRefused)
		eioError(w, http.StatusBadRequest, eioErrUnknownSID, "")
		return
	case e.ws != nil || e.probing:
		e.mu.Unlock()
		e.h.obs.Upgrade(upgradeRefused)
		// As the reference server does: complete the WebSocket handshake,
		// then close the new connection; the session keeps the one it has.
		if conn, err := upgrader.Upgrade(w, r, nil); err == nil {
			_ = conn.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, "session already upgraded or upgrading"),
				time.Now().Add(time.Second))
			conn.Close()
		}
		return
	}
	// Reserve the upgrade before the handshake so that a concurrent second
	// one is refused.
	e.probing = true
	e.mu.Unlock()
	var nc net.Conn
	conn, err := upgrader.Upgrade(w, r, nil)
	if err == nil {
		nc = conn.NetConn() // gorilla's Conn is done with (see handshake)
	}
	e.mu.Lock()
	if err == nil && e.closed {
		nc.Close()
		err = errEIOClosed
	}
	if err == nil {
		e.probe = nc
	} else {
		e.probing = false
	}
	e.mu.Unlock()
	if err != nil {
		e.h.obs.Upgrade(upgradeRefused)
		e.h.log.Debug("socket.io: websocket upgrade failed", "sid", e.id, "err", err)
		return
	}
	rd := wsframe.NewReader(nc, e.h.cfg.MaxPayload)
	if !e.probeUpgrade(nc, rd) {
		return
	}
	// The reader runs in its own goroutine so that this handler returns
	// and the HTTP server lets go of the request and its buffers.
	go e.readWS(nc, rd)
}

// probeUpgrade runs the probe until the client completes the upgrade
// (true) or gives up (false: the WebSocket is dropped, polling goes on).
func (e *eioSession) probeUpgrade(conn net.Conn, rd *wsframe.Reader) bool {
	conn.SetReadDeadline(time.Now().Add(e.h.cfg.UpgradeTimeout))
	abandon := func(why string) bool {
		e.mu.Lock()
		if e.probe == conn {
			e.probe, e.probing, e.upgrading = nil, false, false
		}
		e.mu.Unlock()
		conn.Close()
		e.h.obs.Upgrade(upgradeAbandoned)
		e.h.log.Debug("socket.io: upgrade abandoned", "sid", e.id, "why", why)
		return false
	}
	for {
		op, data, err := rd.Next()
		var ce *wsframe.CloseError
		switch {
		case errors.As(err, &ce):
			// Nothing else writes to the probe yet: answered here.
			conn.SetWriteDeadline(time.Now().Add(time.Second))
			conn.Write(ce.Echo())
			return abandon(err.Error())
		case err != nil:
			return abandon(err.Error())
		case op == wsframe.OpPong:
			continue
		case op == wsframe.OpPing:
			conn.SetWriteDeadline(time.Now().Add(e.h.cfg.WriteTimeout))
			if _, err := conn.Write(wsframe.Control(wsframe.OpPong, data)); err != nil {
				return abandon(err.Error())
			}
			continue
		case op != wsframe.OpText:
			return abandon("binary frame during the upgrade")
		}
		switch string(data) {
		case "2probe":
			conn.SetWriteDeadline(time.Now().Add(e.h.cfg.WriteTimeout))
			if _, err := conn.Write(probeReply); err != nil {
				return abandon(err.Error())
			}
			// Answer the pending GET so that the client can pause polling.
			e.mu.Lock()
			e.upgrading = true
			signal(e.pollWake)
			e.mu.Unlock()
		case "5":
			if err := e.finishUpgrade(conn); err != nil {
				return abandon(err.Error())
			}
			conn.SetReadDeadline(time.Time{})
			return true
		default:
			return abandon("unexpected packet during the upgrade")
		}
	}
}

// finishUpgrade moves the session to the WebSocket: the packets waiting
// for a GET go first, then the writer writes frames itself.
func (e *eioSession) finishUpgrade(conn net.Conn) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errEIOClosed
	}
	// Holding e.mu keeps the writer out until the WebSocket is the
	// transport, so these writes come first and are not concurrent.
	outbox := e.outbox
	if err := e.writeWS(conn, e.h.cfg.WriteTimeout, func(b *wsframe.Batch) {
		for _, p := range outbox {
			b.Add(wsframe.Text(p))
		}
	}); err != nil {
		return err
	}
	e.outbox, e.outBytes = nil, 0
	close(e.drained)
	e.drained = make(chan struct{})
	e.ws, e.probe, e.probing, e.upgrading = conn, nil, false, false
	e.wsConn.Store(conn)
	e.h.obs.Session(e.engine, -1)
	e.engine = engineWebSocket
	e.h.obs.Session(e.engine, 1)
	e.h.obs.Upgrade(upgradeOK)
	e.pollTimer.Stop()
	signal(e.pollWake) // a GET still pending gets noop
	return nil
}

// readWS reads the session's WebSocket until it fails or the session
// closes. Its pongs and close replies go through writeWS, as every write
// to the WebSocket does.
func (e *eioSession) readWS(conn net.Conn, rd *wsframe.Reader) {
	err := rd.Serve(func(op byte, data []byte) error {
		switch op {
		case wsframe.OpPing:
			err := e.writeWS(conn, e.h.cfg.WriteTimeout, func(b *wsframe.Batch) {
				b.Add(wsframe.Control(wsframe.OpPong, data))
			})
			if err != nil && !e.isClosed() {
				return err
			}
			return nil
		case wsframe.OpPong:
			return nil
		case wsframe.OpText:
			if err := e.onPacket(data); err != nil {
				return packetError{err}
			}
			return nil
		}
		return packetError{protoErr(errBinary, "binary frames are not supported")}
	})
	var ce *wsframe.CloseError
	var pe packetError
	switch {
	case errors.As(err, &pe):
		if !errors.Is(pe.err, errEIOClosed) {
			e.protocolError(pe.err)
		}
	case e.isClosed():
	case errors.As(err, &ce):
		_ = e.writeWS(conn, time.Second, func(b *wsframe.Batch) { b.Add(ce.Echo()) })
		e.close(closeClient, "client closed ("+ce.Text+")", true, 0)
	case errors.Is(err, wsframe.ErrTooBig):
		e.protocolErrorCode(protoErr(errTooLarge, "message over maxPayload"), broadcast.CloseTooBig)
	case errors.Is(err, wsframe.ErrProtocol):
		e.protocolErrorCode(protoErr(errParse, err.Error()), broadcast.CloseProtocol)
	default:
		e.close(closeClient, "connection lost: "+err.Error(), true, 0)
	}
}

// packetError is what handling a packet from the client failed with, as
// against reading it.
type packetError struct{ err error }

func (p packetError) Error() string { return p.err.Error() }

// probeReply answers the client's probe.
var probeReply = wsframe.Text([]byte("3probe"))
