package wsframe

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// sizes cross every header length boundary.
var sizes = []int{0, 1, 125, 126, 127, 65535, 65536, 70000}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

// hijacker is just enough of an http.ResponseWriter for gorilla's
// Upgrade, on one end of a pipe.
type hijacker struct {
	httptest.ResponseRecorder
	conn net.Conn
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.conn, bufio.NewReadWriter(bufio.NewReader(h.conn), bufio.NewWriter(h.conn)), nil
}

// gorillaServer upgrades one end of a pipe with gorilla and returns the
// server's Conn and the other end, past the handshake response.
func gorillaServer(t *testing.T) (*websocket.Conn, *bufio.Reader) {
	t.Helper()
	server, client := net.Pipe()
	t.Cleanup(func() { server.Close(); client.Close() })
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	br := bufio.NewReader(client)
	type result struct {
		c   *websocket.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		u := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
		c, err := u.Upgrade(&hijacker{conn: server}, r, nil)
		done <- result{c, err}
	}()
	resp, err := http.ReadResponse(br, r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	return res.c, br
}

// Each frame is byte for byte the one gorilla writes for the same message.
func TestFramesAsGorillaWritesThem(t *testing.T) {
	conn, br := gorillaServer(t)
	check := func(name string, want []byte, write func() error) {
		t.Helper()
		errc := make(chan error, 1)
		go func() { errc <- write() }()
		got := make([]byte, len(want))
		if _, err := io.ReadFull(br, got); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("%s: gorilla: %v", name, err)
		}
		if !bytes.Equal(got, want) {
			n := min(len(got), 16)
			t.Fatalf("%s: gorilla wrote % x…, wsframe % x…", name, got[:n], want[:n])
		}
	}
	for _, n := range sizes {
		p := payload(n)
		check("text", Text(p), func() error { return conn.WriteMessage(websocket.TextMessage, p) })
	}
	deadline := time.Now().Add(time.Minute)
	check("ping", Control(OpPing, []byte("hi")), func() error { return conn.WriteControl(websocket.PingMessage, []byte("hi"), deadline) })
	check("pong", Control(OpPong, nil), func() error { return conn.WriteControl(websocket.PongMessage, nil, deadline) })
	check("close", Close(4008, "slow consumer"), func() error {
		return conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4008, "slow consumer"), deadline)
	})
}

// A batch of frames written in one call reads back, message by message,
// with a gorilla client: events, a ping in between, then the close frame.
func TestBatchReadByGorillaClient(t *testing.T) {
	long := strings.Repeat("é", 100) // a reason over 123 bytes, cut at a rune boundary
	written := make(chan error, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
		c, err := u.Upgrade(w, r, nil)
		if err != nil {
			written <- err
			return
		}
		defer c.Close()
		var b Batch
		for _, n := range sizes {
			b.Add(Text(payload(n)))
		}
		b.Add(Control(OpPing, []byte("p")))
		b.Add(Text([]byte("after the ping")))
		b.Add(Close(4008, long))
		written <- b.Flush(c.NetConn(), time.Now().Add(time.Minute))
		// Wait for the client's close reply before closing the connection.
		c.SetReadDeadline(time.Now().Add(time.Minute))
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}))
	defer ts.Close()
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(ts.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pinged := false
	c.SetPingHandler(func(data string) error {
		pinged = data == "p"
		return nil
	})
	c.SetReadDeadline(time.Now().Add(time.Minute))
	for _, n := range sizes {
		typ, p, err := c.ReadMessage()
		if err != nil || typ != websocket.TextMessage || !bytes.Equal(p, payload(n)) {
			t.Fatalf("message of %d bytes: type %d, %d bytes, %v", n, typ, len(p), err)
		}
	}
	if _, p, err := c.ReadMessage(); err != nil || string(p) != "after the ping" || !pinged {
		t.Fatalf("after the ping: %q %v (pinged %v)", p, err, pinged)
	}
	_, _, err = c.ReadMessage()
	ce, ok := err.(*websocket.CloseError)
	if !ok || ce.Code != 4008 || !strings.HasPrefix(long, ce.Text) || len(ce.Text) != 122 {
		t.Fatalf("close: %v", err)
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
}

func TestBatchEmptiesOnError(t *testing.T) {
	a, b := net.Pipe()
	b.Close()
	var batch Batch
	batch.Add(Text([]byte("x")))
	batch.Add(Text([]byte("y")))
	if err := batch.Flush(a, time.Now().Add(time.Minute)); err == nil {
		t.Fatal("write to a closed pipe succeeded")
	}
	if batch.Len() != 0 {
		t.Fatalf("%d frames left after a failed flush", batch.Len())
	}
}

// A frame built in place (Reserve, Seal) is the frame Frame builds, for
// payloads at each header length's bounds.
func TestSealAsFrame(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 0xFFFF, 0x10000, 0x10001} {
		payload := bytes.Repeat([]byte{'x'}, n)
		got := Seal(OpText, append(Reserve(n), payload...))
		if want := Frame(OpText, payload); !bytes.Equal(got, want) {
			t.Fatalf("%d bytes: sealed frame starts %x, Frame's %x", n, got[:min(len(got), 12)], want[:min(len(want), 12)])
		}
	}
}
