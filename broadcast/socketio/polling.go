package socketio

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
)

// servePoll answers a long-polling GET with the packets waiting for the
// client, holding it until there are some. Overlapping GETs break the
// protocol: the second gets 400 and the session closes (the first gets
// the close packet). A GET the client cancels closes the session too.
func (e *eioSession) servePoll(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	if !e.startRequestLocked(w, e.polling, "GET") {
		return
	}
	e.polling = true
	e.pollTimer.Stop()
	for len(e.outbox) == 0 && !e.upgrading && !e.closed && e.ws == nil {
		e.mu.Unlock()
		select {
		case <-e.pollWake:
		case <-e.done:
		case <-r.Context().Done():
			e.mu.Lock()
			e.polling = false
			e.mu.Unlock()
			e.close(closeClient, "poll request cancelled", true, 0)
			return
		}
		e.mu.Lock()
	}
	packets := e.outbox
	e.outbox, e.outBytes = nil, 0
	if len(packets) > 0 {
		close(e.drained)
		e.drained = make(chan struct{})
	}
	switch {
	case e.closed && e.byClient:
		packets = append(packets, eioNoopPacket)
	case e.closed:
		packets = append(packets, eioClosePacket)
	case len(packets) == 0:
		// Upgrading (the client pauses polling) or upgraded.
		packets = [][]byte{eioNoopPacket}
	}
	e.polling = false
	e.armPollTimer()
	e.mu.Unlock()
	eioWriteText(w, eioEncodePayload(packets))
}

// servePost reads the packets a polling client sends. A body over
// maxPayload gets 413 and closes the session; overlapping POSTs and
// packets that break the protocol get 400 and close it.
func (e *eioSession) servePost(w http.ResponseWriter, r *http.Request) {
	max := e.h.cfg.MaxPayload
	if r.ContentLength > int64(max) {
		eioError(w, http.StatusRequestEntityTooLarge, eioErrBadRequest, "payload over maxPayload")
		e.protocolErrorCode(protoErr(errTooLarge, "payload over maxPayload"), 0)
		return
	}
	e.mu.Lock()
	if !e.startRequestLocked(w, e.posting, "POST") {
		return
	}
	e.posting = true
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.posting = false
		e.mu.Unlock()
	}()
	// A client that sends its body slowly must not hold the session's
	// POST slot (and a goroutine) for ever.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(e.h.cfg.WriteTimeout))
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(max)+1))
	if err != nil {
		eioError(w, http.StatusBadRequest, eioErrBadRequest, "reading the request failed")
		e.close(closeClient, "reading a POST failed: "+err.Error(), true, 0)
		return
	}
	if len(body) > max {
		eioError(w, http.StatusRequestEntityTooLarge, eioErrBadRequest, "payload over maxPayload")
		e.protocolErrorCode(protoErr(errTooLarge, "payload over maxPayload"), 0)
		return
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/octet-stream") {
		err := protoErr(errBinary, "binary payloads are not supported")
		eioError(w, http.StatusBadRequest, eioErrBadRequest, err.Error())
		e.protocolError(err)
		return
	}
	for _, p := range eioDecodePayload(body) {
		if err := e.onPacket(p); err != nil {
			if errors.Is(err, errEIOClosed) {
				break // the client closed the session
			}
			eioError(w, http.StatusBadRequest, eioErrBadRequest, err.Error())
			e.protocolError(err)
			return
		}
	}
	eioWriteText(w, []byte("ok"))
}

// startRequestLocked checks that a polling request may proceed: the
// session is open, still on polling, and has no other request of the same
// method under way (overlapping ones break the protocol and close it).
// Called with e.mu held; on false it has unlocked and answered.
func (e *eioSession) startRequestLocked(w http.ResponseWriter, inFlight bool, method string) bool {
	switch {
	case e.closed:
		e.mu.Unlock()
		eioError(w, http.StatusBadRequest, eioErrUnknownSID, "")
		return false
	case e.ws != nil:
		e.mu.Unlock()
		e.h.obs.ProtocolError(string(errBadRequest))
		eioError(w, http.StatusBadRequest, eioErrBadRequest, "the session was upgraded to WebSocket")
		return false
	case inFlight:
		e.mu.Unlock()
		eioError(w, http.StatusBadRequest, eioErrBadRequest, "overlapping "+method+" requests for one session")
		e.protocolError(protoErr(errOverlapping, "overlapping "+method+" requests"))
		return false
	}
	return true
}
