package broadcast

import "time"

// Observer is told what the hub, the gate and the sessions do; package
// metrics turns it into Prometheus series. Transports with series of
// their own (Socket.IO) declare their own observer. Label values must stay bounded: transports,
// event names, reasons, outcomes; never a user or a connection.
type Observer interface {
	ClientConnected(transport string)
	ClientDisconnected(transport string)
	ConnectionRefused(transport, reason string)
	// EventQueued counts n clients receiving an event.
	EventQueued(event, transport string, n int)
	SlowConsumer(transport string)
	// Delivered is called when events were written to a client together,
	// with the time since each one's commit (or capture when the commit
	// time is unknown): one duration per event. A batch in one call lets
	// the observer update shared counters once per write, not once per
	// event. The slice is the caller's: valid only during the call.
	Delivered(transport string, sinceCommit []time.Duration)
	ChangeApplied(table, op string)
	StatsRecomputed()
	Resume(outcome string)
	WindowSize(n int)
	// EventDropped counts an application event the hub refused, by reason
	// (DropReasons): a bad or reserved name, or a bad payload.
	EventDropped(reason string)
}

type nopObserver struct{}

func (nopObserver) ClientConnected(string)            {}
func (nopObserver) ClientDisconnected(string)         {}
func (nopObserver) ConnectionRefused(string, string)  {}
func (nopObserver) EventQueued(string, string, int)   {}
func (nopObserver) SlowConsumer(string)               {}
func (nopObserver) Delivered(string, []time.Duration) {}
func (nopObserver) ChangeApplied(string, string)      {}
func (nopObserver) StatsRecomputed()                  {}
func (nopObserver) Resume(string)                     {}
func (nopObserver) WindowSize(int)                    {}
func (nopObserver) EventDropped(string)               {}
