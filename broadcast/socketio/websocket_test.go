package socketio

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"rowcast"
	"rowcast/broadcast"
)

// A burst of events goes out in one write and reads back, packet by
// packet and in order, with a gorilla client; the client's pings are
// answered in between, and its close frame gets an answer.
func TestWebSocketBatchPingClose(t *testing.T) {
	env := newTestEnv(t, nil)
	c, reply := env.openWS("40", nil)
	if !strings.HasPrefix(reply, "40{") {
		t.Fatalf("CONNECT reply %q", reply)
	}
	waitFor(t, func() bool { return env.hub.Clients() == 1 })
	ponged := make(chan string, 1)
	c.c.SetPongHandler(func(data string) error { ponged <- data; return nil })
	if err := c.c.WriteControl(websocket.PingMessage, []byte("hello"), time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	var batch []rowcast.Change
	for i := 1; i <= 16; i++ {
		env.pos++
		row := rowcast.Row{{Name: "id", Value: []byte(fmt.Sprint(i))}, {Name: "status", Value: []byte(`"open"`)}}
		batch = append(batch, rowcast.Change{Op: rowcast.OpInsert, Schema: "public", Table: "tickets", Key: row[:1], Row: row,
			ID: rowcast.EventID{Pos: env.pos}, CaptureTime: time.Now()})
	}
	if err := env.hub.Apply(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 16; i++ {
		name, data, offset := eventOf(t, c.next())
		ticket, _ := data["ticket"].(map[string]any)
		if name != "ticket:created" || ticket["id"] != float64(i) || offset != batch[i-1].ID.String() {
			t.Fatalf("event %d: %s %v %s", i, name, data, offset)
		}
	}
	// The pong came before, between or after the events: read on until
	// it has (an event at a time).
	for i := 17; ; i++ {
		select {
		case data := <-ponged:
			if data != "hello" {
				t.Fatalf("pong %q", data)
			}
		default:
			if i > 10000 {
				t.Fatal("no pong")
			}
			env.apply(rowcast.OpInsert, i, "open")
			c.next()
			continue
		}
		break
	}
	if err := c.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := c.expectClosed(time.Minute); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("close answered with %v, want 1000", err)
	}
	waitFor(t, func() bool { return env.hub.Clients() == 0 })
}

// A WebSocket client that stops reading is dropped as a slow consumer,
// and its connection ends (4008, or a reset when a write was stuck).
func TestWebSocketSlowConsumer(t *testing.T) {
	env := newTestEnv(t, func(c *testConfig) { c.GateConfig.QueueSize = 8 })
	d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if err == nil {
			c.(*net.TCPConn).SetReadBuffer(4096)
		}
		return c, err
	}}
	conn, _, err := d.Dial(env.wsURL("EIO=4&transport=websocket"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &testConn{t: t, c: conn, pong: true}
	if open := c.next(); !strings.HasPrefix(open, "0{") {
		t.Fatalf("open packet %q", open)
	}
	c.send("40")
	if reply := c.next(); !strings.HasPrefix(reply, "40{") {
		t.Fatalf("CONNECT reply %q", reply)
	}
	waitFor(t, func() bool { return env.hub.Clients() == 1 })
	big := strings.Repeat("x", 16<<10)
	for i := 0; env.hub.Clients() == 1; i++ {
		if i > 100000 {
			t.Fatal("the client that does not read was never dropped")
		}
		env.apply(rowcast.OpInsert, i, big)
	}
	deadline := time.Now().Add(time.Minute)
	for env.obs.count(env.obs.closes, string(closeSlowConsumer)) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("not closed as a slow consumer")
		}
		time.Sleep(5 * time.Millisecond)
	}
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	for {
		_, _, err := conn.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) && ce.Code != broadcast.CloseSlowConsumer {
			t.Fatalf("closed with %v, want 4008 or a reset", err)
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("slow client still connected: %v", err)
		}
		break
	}
}
