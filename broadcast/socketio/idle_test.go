package socketio

import (
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"rowcast/broadcast"
	"rowcast/broadcast/broadcasttest"
)

// idleState counts the goroutines of idle Socket.IO sessions: their
// readers, writers of their own (run) and Session writers at work.
func idleState() (readers, runs, writers int) {
	return broadcasttest.GoroutinesIn("socketio.(*eioSession).readWS"),
		broadcasttest.GoroutinesIn("socketio.(*eioSession).run("),
		broadcasttest.GoroutinesIn("broadcast.writerLoop")
}

// onlySession is the handler's one Engine.IO session.
func onlySession(t *testing.T, env *testEnv) *eioSession {
	t.Helper()
	env.h.reg.mu.Lock()
	defer env.h.reg.mu.Unlock()
	if len(env.h.reg.sessions) != 1 {
		t.Fatalf("%d sessions, want 1", len(env.h.reg.sessions))
	}
	for _, e := range env.h.reg.sessions {
		return e
	}
	return nil
}

// Joined WebSocket sessions that are idle have one goroutine each, their
// reader: no writer runs or waits for them. The hub's shutdown still
// closes them (1001), and their readers end.
func TestIdleSessionsOneGoroutine(t *testing.T) {
	env := newTestEnv(t, nil)
	const n = 20
	var conns []*testConn
	for i := 0; i < n; i++ {
		c, reply := env.openWS("40", nil)
		connectReplyOf(t, reply)
		conns = append(conns, c)
	}
	waitFor(t, func() bool { return env.hub.Clients() == n })
	// Writers that wrote the CONNECT replies and the first batches
	// linger a while for other sessions, then exit.
	broadcasttest.WaitLong(t, "idle sessions down to their readers", func() bool {
		readers, runs, writers := idleState()
		return readers == n && runs == 0 && writers == 0
	})

	env.hub.Shutdown()
	for _, c := range conns {
		c.pong = false
		if err := c.expectClosed(time.Minute); !websocket.IsCloseError(err, broadcast.CloseGoingAway) {
			t.Fatalf("idle session closed with %v, want 1001", err)
		}
	}
	broadcasttest.WaitLong(t, "readers ended", func() bool {
		readers, runs, _ := idleState()
		return readers == 0 && runs == 0
	})
	waitFor(t, func() bool { return env.gate.Connections() == 0 })
	env.expectSessionsClosed(map[string]int{"shutdown": n})
}

// An idle joined session is pinged when its beat says a ping is due, by a
// writer started for it, and closed when the pong is late; in between it
// has no writer goroutine. The beat's timer is driven by hand here (its
// intervals are an hour), so nothing depends on timing.
func TestIdleSessionPingedAndTimedOut(t *testing.T) {
	env := newTestEnv(t, func(c *testConfig) {
		c.SocketIO = Config{PingInterval: time.Hour, PingTimeout: time.Hour}
	})
	c, reply := env.openWS("40", nil)
	connectReplyOf(t, reply)
	c.pong = false
	waitFor(t, func() bool { return env.hub.Clients() == 1 })
	e := onlySession(t, env)
	// No goroutine of the session's but its reader; writers that wrote
	// for it may linger in the pool for other sessions.
	ownOnly := func() bool {
		readers, runs, _ := idleState()
		return readers == 1 && runs == 0
	}
	// Nothing parked at all: the pool's writers have exited too.
	idle := func() bool {
		readers, runs, writers := idleState()
		return readers == 1 && runs == 0 && writers == 0
	}
	broadcasttest.WaitLong(t, "no writer while idle", idle)
	for i := 0; i < 3; i++ {
		broadcasttest.WaitLong(t, "no writer of its own while idle", ownOnly)
		e.beatDue() // the next ping is due
		if p := c.next(); p != "2" {
			t.Fatalf("want a ping, got %q", p)
		}
		c.send("3")
		waitFor(t, func() bool {
			e.mu.Lock()
			defer e.mu.Unlock()
			return !e.waitingPong
		})
	}
	broadcasttest.WaitLong(t, "no writer of its own while idle", ownOnly)
	e.beatDue()
	if p := c.next(); p != "2" {
		t.Fatalf("want a ping, got %q", p)
	}
	broadcasttest.WaitLong(t, "no writer while waiting for the pong", idle)
	e.beatDue() // the pong is late
	c.expectClosed(time.Minute)
	waitFor(t, func() bool { return env.hub.Clients() == 0 && env.gate.Connections() == 0 })
	env.expectSessionsClosed(map[string]int{"ping_timeout": 1})
}
