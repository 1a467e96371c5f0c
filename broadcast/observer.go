package broadcast

import "time"

// Observer is told what the hub and transports do; package metrics turns it
// into Prometheus series. Label values must stay bounded: transports,
// event names, reasons, outcomes; never a user or a connection.
type Observer interface {
	ClientConnected(transport string)
	ClientDisconnected(transport string)
	ConnectionRefused(transport, reason string)
	// EventQueued counts n clients receiving an event.
	EventQueued(event, transport string, n int)
	SlowConsumer(transport string)
	// Delivered is called when an event was written to a client, with the
	// time since its commit (or capture when the commit time is unknown).
	Delivered(transport string, sinceCommit time.Duration)
	ChangeApplied(table, op string)
	StatsRecomputed()
	Resume(outcome string)
	WindowSize(n int)

	// SIOSession moves the count of open Engine.IO sessions on engine
	// ("polling" or "websocket", the session's current transport) by
	// delta: +1 at the handshake, -1 when the session closes, and -1/+1
	// when an upgrade moves a session from polling to websocket.
	SIOSession(engine string, delta int)
	// SIOUpgrade counts a WebSocket upgrade of a polling session by
	// outcome: "ok", "abandoned" (the probe failed or the client gave
	// up; polling goes on) or "refused" (the server turned the request
	// down).
	SIOUpgrade(outcome string)
	// SIOProtocolError counts a client breaking the Engine.IO or
	// Socket.IO protocol, by kind: "parse", "binary", "ack", "state",
	// "too_large", "overlapping" or "bad_request".
	SIOProtocolError(kind string)
	// SIOClosed counts a closed Engine.IO session by reason:
	// "ping_timeout", "poll_timeout", "client", "protocol",
	// "slow_consumer", "shutdown" or "connect_timeout".
	SIOClosed(reason string)
}

type nopObserver struct{}

func (nopObserver) ClientConnected(string)           {}
func (nopObserver) ClientDisconnected(string)        {}
func (nopObserver) ConnectionRefused(string, string) {}
func (nopObserver) EventQueued(string, string, int)  {}
func (nopObserver) SlowConsumer(string)              {}
func (nopObserver) Delivered(string, time.Duration)  {}
func (nopObserver) ChangeApplied(string, string)     {}
func (nopObserver) StatsRecomputed()                 {}
func (nopObserver) Resume(string)                    {}
func (nopObserver) WindowSize(int)                   {}
func (nopObserver) SIOSession(string, int)           {}
func (nopObserver) SIOUpgrade(string)                {}
func (nopObserver) SIOProtocolError(string)          {}
func (nopObserver) SIOClosed(string)                 {}
