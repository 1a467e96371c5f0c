// Package wsframe writes a WebSocket server's frames straight to the
// connection. A server's frames are not masked (RFC 6455, 5.1), so the
// frame of an event (header and payload) is the same bytes for every
// client: it is built once and shared, and the frames queued for one
// client go out in one system call (writev) instead of one write each.
//
// It reads what clients send too (Reader), so that an idle connection
// holds no read buffer and waits on the smallest goroutine stack; the
// WebSocket library does the handshake only. Whoever writes with this
// package must be the connection's only writer, control frames (pong,
// close) included, or frames would interleave.
package wsframe

import (
	"encoding/binary"
	"net"
	"time"
	"unicode/utf8"
)

// Opcodes (RFC 6455, 5.2).
const (
	OpText  = 0x1
	OpClose = 0x8
	OpPing  = 0x9
	OpPong  = 0xA
)

// finBit marks the final (here: only) frame of a message.
const finBit = 0x80

// MaxHeader is the longest header of an unmasked frame.
const MaxHeader = 10

// AppendHeader appends the header of an unmasked final frame of opcode
// op carrying n payload bytes.
func AppendHeader(b []byte, op byte, n int) []byte {
	switch {
	case n <= 125:
		return append(b, finBit|op, byte(n))
	case n <= 0xFFFF:
		return binary.BigEndian.AppendUint16(append(b, finBit|op, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, finBit|op, 127), uint64(n))
	}
}

// Frame returns payload as one unmasked final frame of opcode op, in a
// new slice that may be shared by every writer.
func Frame(op byte, payload []byte) []byte {
	b := make([]byte, 0, MaxHeader+len(payload))
	return append(AppendHeader(b, op, len(payload)), payload...)
}

// Reserve returns an empty buffer with room for a frame's header in front
// and size bytes of payload: append the payload to it, then Seal it. A
// frame built so is one allocation, not a payload and then its copy.
func Reserve(size int) []byte { return make([]byte, MaxHeader, MaxHeader+size) }

// Seal writes the header of a final frame of opcode op in front of the
// payload appended to b (from Reserve) and returns the frame.
func Seal(op byte, b []byte) []byte {
	var h [MaxHeader]byte
	hdr := AppendHeader(h[:0], op, len(b)-MaxHeader)
	start := MaxHeader - len(hdr)
	copy(b[start:], hdr)
	return b[start:]
}

// Text returns payload as one text frame.
func Text(payload []byte) []byte { return Frame(OpText, payload) }

// maxControlPayload bounds a control frame's payload (RFC 6455, 5.5).
const maxControlPayload = 125

// Close returns a close frame with code and reason; the reason is cut,
// at a rune boundary, to fit a control frame. Code 0 makes an empty close
// frame (no status).
func Close(code int, reason string) []byte {
	if code == 0 {
		return Frame(OpClose, nil)
	}
	if cut := maxControlPayload - 2; len(reason) > cut {
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason = reason[:cut]
	}
	p := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reason)), uint16(code))
	return Frame(OpClose, append(p, reason...))
}

// Control returns a ping or pong frame; a payload over 125 bytes is cut.
func Control(op byte, payload []byte) []byte {
	if len(payload) > maxControlPayload {
		payload = payload[:maxControlPayload]
	}
	return Frame(op, payload)
}

// Batch collects frames for one connection and writes them with one
// system call. The frames are not copied: they must not change until
// Flush returns. Not safe for concurrent use; its owner is the
// connection's single writer.
type Batch struct {
	bufs net.Buffers
}

// Add queues a frame.
func (b *Batch) Add(frame []byte) {
	if len(frame) > 0 {
		b.bufs = append(b.bufs, frame)
	}
}

// Len is the number of frames queued.
func (b *Batch) Len() int { return len(b.bufs) }

// Flush writes the queued frames to conn, with a write deadline (none
// when zero), and empties the batch whatever happens: after an error the
// connection is broken (a frame may have gone out in part).
func (b *Batch) Flush(conn net.Conn, deadline time.Time) error {
	if len(b.bufs) == 0 {
		return nil
	}
	if !deadline.IsZero() {
		if err := conn.SetWriteDeadline(deadline); err != nil {
			b.Reset()
			return err
		}
	}
	var err error
	if len(b.bufs) == 1 {
		_, err = conn.Write(b.bufs[0])
	} else {
		// WriteTo consumes its receiver; a copy of the slice header keeps
		// the backing array for the next batch.
		v := b.bufs
		_, err = v.WriteTo(conn)
	}
	b.Reset()
	return err
}

// Reset drops the queued frames. A batch that grew large lets go of its
// array, so that an idle connection keeps no memory.
func (b *Batch) Reset() {
	clear(b.bufs)
	if cap(b.bufs) > 64 {
		b.bufs = nil
	} else {
		b.bufs = b.bufs[:0]
	}
}
