package socketio

import (
	"errors"
	"net/http"
	"time"

	"github.com/gorilla/websocket"

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
	conn, err := upgrader.Upgrade(w, r, nil)
	e.mu.Lock()
	if err == nil && e.closed {
		conn.Close()
		err = errEIOClosed
	}
	if err == nil {
		e.probe = conn
	} else {
		e.probing = false
	}
	e.mu.Unlock()
	if err != nil {
		e.h.obs.Upgrade(upgradeRefused)
		e.h.log.Debug("socket.io: websocket upgrade failed", "sid", e.id, "err", err)
		return
	}
	if !e.probeUpgrade(conn) {
		return
	}
	// The reader runs in its own goroutine so that this handler returns
	// and the HTTP server lets go of the request and its buffers.
	go e.readWS(conn)
}

// probeUpgrade runs the probe until the client completes the upgrade
// (true) or gives up (false: the WebSocket is dropped, polling goes on).
func (e *eioSession) probeUpgrade(conn *websocket.Conn) bool {
	conn.SetReadLimit(int64(e.h.cfg.MaxPayload))
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
		typ, data, err := conn.ReadMessage()
		if err != nil {
			return abandon(err.Error())
		}
		if typ != websocket.TextMessage {
			return abandon("binary frame during the upgrade")
		}
		switch string(data) {
		case "2probe":
			conn.SetWriteDeadline(time.Now().Add(e.h.cfg.WriteTimeout))
			if err := conn.WriteMessage(websocket.TextMessage, []byte("3probe")); err != nil {
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
func (e *eioSession) finishUpgrade(conn *websocket.Conn) error {
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
func (e *eioSession) readWS(conn *websocket.Conn) {
	conn.SetReadLimit(int64(e.h.cfg.MaxPayload))
	conn.SetPingHandler(func(data string) error {
		err := e.writeWS(conn, e.h.cfg.WriteTimeout, func(b *wsframe.Batch) {
			b.Add(wsframe.Control(wsframe.OpPong, []byte(data)))
		})
		if err != nil && !e.isClosed() {
			return err
		}
		return nil
	})
	conn.SetCloseHandler(func(code int, _ string) error {
		echo := wsframe.Close(0, "")
		if code != websocket.CloseNoStatusReceived {
			echo = wsframe.Close(code, "")
		}
		_ = e.writeWS(conn, time.Second, func(b *wsframe.Batch) { b.Add(echo) })
		return nil
	})
	for {
		typ, data, err := conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			switch {
			case e.isClosed():
			case errors.Is(err, websocket.ErrReadLimit):
				e.protocolErrorCode(protoErr(errTooLarge, "message over maxPayload"), websocket.CloseMessageTooBig)
			case errors.As(err, &ce):
				e.close(closeClient, "client closed ("+ce.Text+")", true, 0)
			default:
				e.close(closeClient, "connection lost: "+err.Error(), true, 0)
			}
			return
		}
		if typ != websocket.TextMessage {
			e.protocolError(protoErr(errBinary, "binary frames are not supported"))
			return
		}
		if err := e.onPacket(data); err != nil {
			if !errors.Is(err, errEIOClosed) {
				e.protocolError(err)
			}
			return
		}
	}
}
