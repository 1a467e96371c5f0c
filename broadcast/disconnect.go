package broadcast

import (
	"context"
	"errors"
	"net"
)

// DisconnectKind says why a client's connection ended, in words every
// transport shares; each transport turns it into its own goodbye (a
// WebSocket close frame, a reset, an Engine.IO close packet).
type DisconnectKind string

const (
	// DisconnectClient: the client closed, or its connection was lost.
	DisconnectClient DisconnectKind = "client"
	// DisconnectSlowConsumer: the client fell behind: its queue overflowed
	// or a write to it timed out. Its connection is reset, not closed
	// gracefully, so a client that stopped reading does not pin socket
	// buffers.
	DisconnectSlowConsumer DisconnectKind = "slow_consumer"
	// DisconnectWriteFailed: a write failed for another reason.
	DisconnectWriteFailed DisconnectKind = "write_failed"
	// DisconnectShutdown: the server is shutting down (close code 1001).
	DisconnectShutdown DisconnectKind = "shutdown"
	// DisconnectPolicy: the client broke the protocol (the code says how).
	DisconnectPolicy DisconnectKind = "policy"
	// DisconnectTokenExpired: the user's token expired (close code 4001);
	// the client reconnects with a fresh one.
	DisconnectTokenExpired DisconnectKind = "token_expired"
)

// Disconnect is how a session ended: the kind, the close code to send (0:
// none, e.g. when the connection is already gone) and a reason for the
// close frame and the log.
type Disconnect struct {
	Kind   DisconnectKind
	Code   int
	Reason string
}

// Outcome classifies the end of a session from the error Pump returned
// and the code and reason given to Close. It is the one place where a
// write timeout becomes a slow consumer (and is counted as one); every
// transport uses it.
func (s *Session) Outcome(err error) Disconnect {
	code, reason := s.CloseReason()
	var ne net.Error
	switch {
	case code == CloseSlowConsumer:
		// Counted by the hub when it dropped the session (or by the
		// transport whose reply overflowed the queue). After a failed
		// write there is no point in a close frame.
		if err != nil {
			code = 0
		}
		return Disconnect{DisconnectSlowConsumer, code, reason}
	case errors.As(err, &ne) && ne.Timeout():
		// The client stopped reading: the same as an overflowing queue.
		s.obs.SlowConsumer(s.Transport)
		return Disconnect{DisconnectSlowConsumer, 0, "slow consumer (write timed out)"}
	case errors.Is(err, context.Canceled):
		// The request's context ended: the client went away (SSE).
		return Disconnect{DisconnectClient, 0, "client closed"}
	case err != nil:
		return Disconnect{DisconnectWriteFailed, 0, "write failed: " + err.Error()}
	case code == CloseGoingAway:
		return Disconnect{DisconnectShutdown, code, reason}
	case code == CloseTokenExpired:
		return Disconnect{DisconnectTokenExpired, code, reason}
	case code != 0:
		return Disconnect{DisconnectPolicy, code, reason}
	}
	if reason == "" {
		reason = "client closed"
	}
	return Disconnect{DisconnectClient, 0, reason}
}

// SlowConsumer closes the session as a slow consumer: a transport's reply
// to the client did not fit in the queue.
func (s *Session) SlowConsumer() {
	s.obs.SlowConsumer(s.Transport)
	s.drop(CloseSlowConsumer, "slow consumer")
}
