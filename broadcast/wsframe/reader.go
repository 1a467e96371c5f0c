package wsframe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"syscall"
	"unicode/utf8"
)

// Opcodes a client may also send (RFC 6455, 5.2).
const (
	OpContinuation = 0x0
	OpBinary       = 0x2
)

// CloseNoStatus is the code a close frame without a payload stands for
// (RFC 6455, 7.1.5); it is never sent.
const CloseNoStatus = 1005

var (
	// ErrTooBig: a message is over the Reader's limit (close with 1009).
	ErrTooBig = errors.New("websocket message over the read limit")
	// ErrProtocol: the client broke RFC 6455 (close with 1002).
	ErrProtocol = errors.New("websocket protocol error")
)

// CloseError is the client's close frame: Next returns it when one
// arrives. The server answers with a close frame of its own (the code
// echoed, or none for CloseNoStatus) and closes the connection.
type CloseError struct {
	Code int
	Text string
}

// Echo is the server's answer: the client's code, or an empty close
// frame when the client's had none.
func (e *CloseError) Echo() []byte {
	if e.Code == CloseNoStatus {
		return Close(0, "")
	}
	return Close(e.Code, "")
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("websocket: close %d %s", e.Code, e.Text)
}

func protocolError(msg string) error { return fmt.Errorf("%w: %s", ErrProtocol, msg) }

// readBufSize is the pooled buffer one burst of reading uses: it holds
// any control frame and the small messages clients send (pongs,
// subscriptions, a CONNECT); larger ones are read straight into their
// own slice.
const readBufSize = 4096

// DefaultLimit is the read limit of a Reader made without one.
const DefaultLimit = 64 << 10

var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// Reader reads what a client sends on a server-side WebSocket (RFC 6455):
// masked frames, fragmented messages put back together, control frames
// between their fragments. The handshake is done by then (gorilla's
// Upgrader does it); from there this is the connection's only reader.
//
// It is built for connections that are idle nearly always. Between
// bursts it holds no buffer (one comes from a pool while bytes are in
// hand), and Serve waits for the client on the smallest goroutine stack:
// at thousands of idle connections these, not the bytes exchanged, are
// what a connection costs.
type Reader struct {
	conn  net.Conn
	raw   syscall.RawConn // nil when conn is not a socket: Wait cannot peek
	limit int
	buf   *[]byte // from readBufs while bytes are in hand, else nil
	r, w  int     // unread bytes: (*buf)[r:w]
	// The message being put back together from its fragments.
	msg   []byte
	msgOp byte
	inMsg bool
	// bursting is the burst under way (Serve).
	bursting sync.WaitGroup
}

// NewReader reads conn's frames; a message over limit bytes is
// ErrTooBig (a limit under 1 is DefaultLimit).
func NewReader(conn net.Conn, limit int) *Reader {
	if limit < 1 {
		limit = DefaultLimit
	}
	r := &Reader{conn: conn, limit: limit}
	if sc, ok := conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			r.raw = raw
		}
	}
	return r
}

// Buffered reports whether bytes the client sent are in hand, or a
// fragmented message is part read: Next goes on without waiting.
func (r *Reader) Buffered() bool { return r.r < r.w || r.inMsg }

// Wait blocks until the client has sent something (or the connection
// failed, closed or reached its read deadline), without reading it and
// without holding a buffer. The wait is a few frames deep, so that the
// goroutine waiting keeps the smallest stack. On a connection that is not
// a socket it returns at once and Next waits instead.
func (r *Reader) Wait() error {
	if r.Buffered() || r.raw == nil {
		return nil
	}
	r.release()
	return r.raw.Read(func(fd uintptr) bool { return peek(fd) })
}

// Serve calls handle with each message and control frame the client
// sends (the payload is handle's to keep) until reading fails or handle
// returns an error, and returns that error. Each burst of frames is read
// and handled on a goroutine of its own while Serve's goroutine waits:
// however deep handling goes, it grows the burst's stack, which ends with
// it, never the stack of the goroutine that waits through the idle hours
// (a grown stack is not shrunk back to the smallest one).
func (r *Reader) Serve(handle func(op byte, payload []byte) error) error {
	// A WaitGroup in the Reader, not a channel: an idle connection keeps
	// nothing of the last burst.
	var err error
	for {
		if err = r.Wait(); err != nil {
			return err
		}
		r.bursting.Add(1)
		go func() {
			defer r.bursting.Done()
			err = r.burst(handle)
		}()
		r.bursting.Wait()
		if err != nil {
			return err
		}
	}
}

// burst handles frames until none is left in hand, then lets go of the
// buffer.
func (r *Reader) burst(handle func(op byte, payload []byte) error) error {
	for {
		op, p, err := r.Next()
		if err != nil {
			return err
		}
		if err := handle(op, p); err != nil {
			return err
		}
		if !r.Buffered() {
			r.release()
			return nil
		}
	}
}

// Next reads the next message (OpText or OpBinary, its fragments put
// together) or control frame (OpPing, OpPong). The payload is a new
// slice, the caller's. A close frame is returned as a *CloseError; a
// breach of the protocol wraps ErrProtocol, a message over the limit is
// ErrTooBig; after any error the connection is done with.
func (r *Reader) Next() (op byte, payload []byte, err error) {
	for {
		fin, op, p, err := r.frame()
		if err != nil {
			if r.inMsg {
				err = unexpectedEOF(err) // inside a fragmented message
			}
			return 0, nil, err
		}
		switch op {
		case OpPing, OpPong:
			return op, p, nil
		case OpClose:
			return 0, nil, closeFrame(p)
		case OpText, OpBinary:
			if r.inMsg {
				return 0, nil, protocolError("a new message began before the last one's final fragment")
			}
			if fin {
				return op, p, nil
			}
			r.msg, r.msgOp, r.inMsg = p, op, true
		case OpContinuation:
			if !r.inMsg {
				return 0, nil, protocolError("a continuation frame outside a fragmented message")
			}
			if len(r.msg)+len(p) > r.limit {
				return 0, nil, ErrTooBig
			}
			r.msg = append(r.msg, p...)
			if fin {
				op, p = r.msgOp, r.msg
				r.msg, r.inMsg = nil, false
				return op, p, nil
			}
		default:
			return 0, nil, protocolError(fmt.Sprintf("unknown opcode %d", op))
		}
	}
}

// frame reads one frame and returns its payload, unmasked, in a new slice.
func (r *Reader) frame() (fin bool, op byte, payload []byte, err error) {
	if err := r.fill(2); err != nil {
		return false, 0, nil, err
	}
	b := *r.buf
	b0, b1 := b[r.r], b[r.r+1]
	fin, op = b0&finBit != 0, b0&0x0F
	if b0&0x70 != 0 {
		return false, 0, nil, protocolError("reserved bits set (no extension was negotiated)")
	}
	if b1&0x80 == 0 {
		return false, 0, nil, protocolError("an unmasked frame from the client")
	}
	size, hdr := uint64(b1&0x7F), 2
	switch size {
	case 126:
		hdr = 4
	case 127:
		hdr = 10
	}
	if err := r.fill(hdr + 4); err != nil {
		return false, 0, nil, err
	}
	b = *r.buf
	switch hdr {
	case 4:
		size = uint64(binary.BigEndian.Uint16(b[r.r+2:]))
	case 10:
		size = binary.BigEndian.Uint64(b[r.r+2:])
		if size>>63 != 0 {
			return false, 0, nil, protocolError("a payload length with its most significant bit set")
		}
	}
	if op >= 0x8 && (!fin || size > maxControlPayload) {
		return false, 0, nil, protocolError("a control frame fragmented or over 125 bytes")
	}
	if size > uint64(r.limit) {
		return false, 0, nil, ErrTooBig
	}
	var key [4]byte
	copy(key[:], b[r.r+hdr:])
	r.r += hdr + 4
	n := min(size, uint64(r.w-r.r))
	// The payload grows as its bytes arrive, read straight into it past
	// what the buffer holds: a length the client claims is never
	// allocated ahead of the bytes.
	payload = make([]byte, n, min(size, readBufSize))
	r.r += copy(payload, b[r.r:])
	for uint64(len(payload)) < size {
		if len(payload) == cap(payload) {
			payload = slices.Grow(payload, int(min(size, 2*uint64(cap(payload))))-len(payload))
		}
		m, err := r.conn.Read(payload[len(payload):min(uint64(cap(payload)), size)])
		payload = payload[:len(payload)+m]
		if err != nil && uint64(len(payload)) < size {
			return false, 0, nil, unexpectedEOF(err)
		}
	}
	for i := range payload {
		payload[i] ^= key[i&3]
	}
	return fin, op, payload, nil
}

// fill reads until n bytes are in hand (n fits the buffer).
func (r *Reader) fill(n int) error {
	if r.buf == nil {
		r.buf = readBufs.Get().(*[]byte)
		r.r, r.w = 0, 0
	}
	b := *r.buf
	if r.w-r.r >= n {
		return nil
	}
	if r.r > 0 {
		r.w = copy(b, b[r.r:r.w])
		r.r = 0
	}
	for r.w < n {
		m, err := r.conn.Read(b[r.w:])
		r.w += m
		if err != nil && r.w < n {
			if r.w > 0 {
				err = unexpectedEOF(err)
			}
			return err
		}
	}
	return nil
}

// release gives the buffer back when nothing is left in it.
func (r *Reader) release() {
	if r.buf != nil && r.r == r.w {
		readBufs.Put(r.buf)
		r.buf, r.r, r.w = nil, 0, 0
	}
}

// unexpectedEOF: a connection that ends inside a frame did not end
// cleanly.
func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// closeFrame reads a close frame's payload (RFC 6455, 5.5.1 and 7.4).
func closeFrame(p []byte) error {
	switch {
	case len(p) == 0:
		return &CloseError{Code: CloseNoStatus}
	case len(p) == 1:
		return protocolError("a close frame with a one-byte payload")
	}
	code := int(binary.BigEndian.Uint16(p))
	if !validCloseCode(code) {
		return protocolError(fmt.Sprintf("close code %d may not be sent", code))
	}
	if !utf8.Valid(p[2:]) {
		return protocolError("a close reason that is not UTF-8")
	}
	return &CloseError{Code: code, Text: string(p[2:])}
}

// validCloseCode: the codes an endpoint may send (RFC 6455, 7.4; IANA's
// registry adds 1012–1014; 3000–4999 are for applications).
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}
