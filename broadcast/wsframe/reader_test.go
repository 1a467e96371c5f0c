package wsframe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// masked builds a frame as a client sends it.
func masked(fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= finBit
	}
	b := []byte{b0}
	switch n := len(payload); {
	case n <= 125:
		b = append(b, 0x80|byte(n))
	case n <= 0xFFFF:
		b = binary.BigEndian.AppendUint16(append(b, 0x80|126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 0x80|127), uint64(n))
	}
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	b = append(b, key[:]...)
	for i, c := range payload {
		b = append(b, c^key[i&3])
	}
	return b
}

// byteConn is a net.Conn that reads from a byte slice, in pieces of at
// most chunk bytes; it is not a socket, so Wait returns at once.
type byteConn struct {
	net.Conn // nil: only Read is used
	r        *bytes.Reader
	chunk    int
}

func (c *byteConn) Read(p []byte) (int, error) {
	if c.chunk > 0 && len(p) > c.chunk {
		p = p[:c.chunk]
	}
	return c.r.Read(p)
}

func readerOf(data []byte, chunk, limit int) *Reader {
	return NewReader(&byteConn{r: bytes.NewReader(data), chunk: chunk}, limit)
}

type frameRead struct {
	op      byte
	payload string
}

// readAll reads frames until an error.
func readAll(r *Reader) ([]frameRead, error) {
	var got []frameRead
	for {
		op, p, err := r.Next()
		if err != nil {
			return got, err
		}
		got = append(got, frameRead{op, string(p)})
	}
}

// What a client may send comes out as messages and control frames,
// whatever the pieces the bytes arrive in.
func TestReaderFrames(t *testing.T) {
	big := strings.Repeat("0123456789", 1000) // over the pooled buffer
	var in []byte
	in = append(in, masked(true, OpText, []byte(`{"type":"subscribe"}`))...)
	in = append(in, masked(true, OpPing, []byte("p"))...)
	in = append(in, masked(false, OpText, []byte("frag"))...)
	in = append(in, masked(true, OpPong, nil)...) // between fragments
	in = append(in, masked(false, OpContinuation, []byte("men"))...)
	in = append(in, masked(true, OpContinuation, []byte("ted"))...)
	in = append(in, masked(true, OpBinary, []byte{0, 1, 2})...)
	in = append(in, masked(true, OpText, []byte(big))...)
	in = append(in, masked(true, OpText, nil)...)
	in = append(in, masked(true, OpClose, append([]byte{0x0F, 0xA0}, "bye"...))...) // 4000
	want := []frameRead{
		{OpText, `{"type":"subscribe"}`},
		{OpPing, "p"},
		{OpPong, ""},
		{OpText, "fragmented"},
		{OpBinary, "\x00\x01\x02"},
		{OpText, big},
		{OpText, ""},
	}
	for _, chunk := range []int{0, 1, 3, 700} {
		got, err := readAll(readerOf(in, chunk, 1<<20))
		var ce *CloseError
		if !errors.As(err, &ce) || ce.Code != 4000 || ce.Text != "bye" {
			t.Fatalf("chunk %d: ended with %v, want close 4000 bye", chunk, err)
		}
		if !bytes.Equal(ce.Echo(), Close(4000, "")) {
			t.Fatalf("echo % x", ce.Echo())
		}
		if len(got) != len(want) {
			t.Fatalf("chunk %d: %d frames, want %d", chunk, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("chunk %d: frame %d is %d %.40q, want %d %.40q", chunk, i, got[i].op, got[i].payload, want[i].op, want[i].payload)
			}
		}
	}
}

// Every breach of RFC 6455 a client can commit is an error that says
// what it was, never a panic or a hang.
func TestReaderRefuses(t *testing.T) {
	unmasked := []byte{finBit | OpText, 2, 'h', 'i'}
	cat := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	huge := []byte{finBit | OpBinary, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}
	for _, tc := range []struct {
		name string
		in   []byte
		want error // ErrProtocol, ErrTooBig, io.EOF or io.ErrUnexpectedEOF
		text string
	}{
		{"unmasked", unmasked, ErrProtocol, "unmasked"},
		{"reserved bits", func() []byte { f := masked(true, OpText, []byte("x")); f[0] |= 0x40; return f }(), ErrProtocol, "reserved"},
		{"unknown opcode", masked(true, 0x3, nil), ErrProtocol, "opcode 3"},
		{"fragmented ping", masked(false, OpPing, nil), ErrProtocol, "control frame"},
		{"long ping", masked(true, OpPing, make([]byte, 126)), ErrProtocol, "control frame"},
		{"lone continuation", masked(true, OpContinuation, []byte("x")), ErrProtocol, "continuation"},
		{"message inside a message", cat(masked(false, OpText, []byte("a")), masked(true, OpText, []byte("b"))), ErrProtocol, "new message"},
		{"64-bit length", huge, ErrProtocol, "most significant"},
		{"over the limit", masked(true, OpText, make([]byte, 101)), ErrTooBig, ""},
		{"fragments over the limit", cat(masked(false, OpText, make([]byte, 60)), masked(true, OpContinuation, make([]byte, 60))), ErrTooBig, ""},
		{"claims more than the limit", []byte{finBit | OpText, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4}, ErrTooBig, ""},
		{"one-byte close", masked(true, OpClose, []byte{3}), ErrProtocol, "one-byte"},
		{"close 1005", masked(true, OpClose, []byte{0x03, 0xED}), ErrProtocol, "1005"},
		{"close 999", masked(true, OpClose, []byte{0x03, 0xE7}), ErrProtocol, "999"},
		{"close 2000", masked(true, OpClose, []byte{0x07, 0xD0}), ErrProtocol, "2000"},
		{"close reason not UTF-8", masked(true, OpClose, []byte{0x03, 0xE8, 0xFF}), ErrProtocol, "UTF-8"},
		{"clean end", nil, io.EOF, ""},
		{"ends in a header", masked(true, OpText, []byte("hello"))[:3], io.ErrUnexpectedEOF, ""},
		{"ends in a payload", masked(true, OpText, []byte("hello"))[:8], io.ErrUnexpectedEOF, ""},
		{"ends in a fragmented message", masked(false, OpText, []byte("a")), io.ErrUnexpectedEOF, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readAll(readerOf(tc.in, 0, 100))
			if !errors.Is(err, tc.want) || !strings.Contains(errString(err), tc.text) {
				t.Fatalf("got %v, want %v saying %q", err, tc.want, tc.text)
			}
		})
	}
	// An empty close frame stands for "no status".
	_, err := readAll(readerOf(masked(true, OpClose, nil), 0, 100))
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != CloseNoStatus || !bytes.Equal(ce.Echo(), Close(0, "")) {
		t.Fatalf("empty close: %v", err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// upgraded is a server-side WebSocket over TCP after gorilla's handshake,
// and the client's end.
func upgraded(t *testing.T) (net.Conn, *websocket.Conn) {
	t.Helper()
	got := make(chan net.Conn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
		c, err := u.Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		got <- c.NetConn()
	}))
	t.Cleanup(srv.Close)
	d := websocket.Dialer{WriteBufferSize: 256} // longer messages go out fragmented
	client, _, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	nc := <-got
	t.Cleanup(func() { nc.Close() })
	return nc, client
}

// Against gorilla's client over TCP: Wait waits without reading and
// without a buffer, Serve hands over each burst's frames, a message
// fragmented by the client comes out whole, and the client's close frame
// ends Serve.
func TestReaderServesGorillaClient(t *testing.T) {
	nc, client := upgraded(t)
	r := NewReader(nc, 1<<20)
	if r.raw == nil {
		t.Fatal("a TCP connection should be waited on by peeking")
	}

	// Nothing sent: Wait runs into its deadline, holding no buffer.
	nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if err := r.Wait(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Wait with nothing sent: %v", err)
	}
	if r.buf != nil {
		t.Fatal("Wait holds a buffer")
	}
	nc.SetReadDeadline(time.Time{})

	// Something sent: Wait returns and has read nothing of it.
	if err := client.WriteMessage(websocket.TextMessage, []byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := r.Wait(); err != nil {
		t.Fatal(err)
	}
	if r.buf != nil {
		t.Fatal("Wait read what it waited for")
	}
	if op, p, err := r.Next(); err != nil || op != OpText || string(p) != "first" {
		t.Fatalf("after Wait: %d %q %v", op, p, err)
	}

	long := strings.Repeat("x", 10000)
	go func() {
		client.WriteMessage(websocket.TextMessage, []byte(long))
		client.WriteControl(websocket.PingMessage, []byte("hi"), time.Now().Add(time.Minute))
		client.WriteMessage(websocket.BinaryMessage, []byte{7})
		client.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "done"), time.Now().Add(time.Minute))
	}()
	var got []frameRead
	err := r.Serve(func(op byte, p []byte) error {
		got = append(got, frameRead{op, string(p)})
		return nil
	})
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure || ce.Text != "done" {
		t.Fatalf("Serve ended with %v, want the client's close", err)
	}
	want := []frameRead{{OpText, long}, {OpPing, "hi"}, {OpBinary, "\x07"}}
	if len(got) != len(want) {
		t.Fatalf("got %d frames, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("frame %d: %d %.20q, want %d %.20q", i, got[i].op, got[i].payload, want[i].op, want[i].payload)
		}
	}
}

// Serve stops at the first error its handler returns, and returns it;
// a closed connection ends it too.
func TestReaderServeStops(t *testing.T) {
	nc, client := upgraded(t)
	stop := errors.New("stop")
	client.WriteMessage(websocket.TextMessage, []byte("a"))
	client.WriteMessage(websocket.TextMessage, []byte("b"))
	n := 0
	err := NewReader(nc, 100).Serve(func(op byte, p []byte) error {
		n++
		if string(p) == "b" {
			return stop
		}
		return nil
	})
	if err != stop || n != 2 {
		t.Fatalf("Serve: %v after %d frames, want stop after 2", err, n)
	}

	nc2, _ := upgraded(t)
	done := make(chan error, 1)
	go func() { done <- NewReader(nc2, 100).Serve(func(byte, []byte) error { return nil }) }()
	nc2.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Serve on a closed connection: %v", err)
	}
}

// FuzzReader: any bytes from a client end in an error (never a panic or
// a hang), and nothing it returns is over the limit.
func FuzzReader(f *testing.F) {
	f.Add(masked(true, OpText, []byte("hello")), 0)
	f.Add(append(masked(false, OpText, []byte("a")), masked(true, OpContinuation, []byte("b"))...), 1)
	f.Add(masked(true, OpClose, []byte{0x03, 0xE8, 'x'}), 2)
	f.Add([]byte{finBit | OpText, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4, 'a'}, 3)
	f.Fuzz(func(t *testing.T, data []byte, chunk int) {
		const limit = 1000
		r := readerOf(data, chunk&0xFF, limit)
		for i := 0; ; i++ {
			op, p, err := r.Next()
			if err != nil {
				return
			}
			if len(p) > limit {
				t.Fatalf("a %d-byte payload over the limit", len(p))
			}
			if op != OpText && op != OpBinary && op != OpPing && op != OpPong {
				t.Fatalf("opcode %d returned", op)
			}
			if i > len(data) {
				t.Fatal("more frames than bytes")
			}
		}
	})
}
