package broadcast

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// maxEncodings bounds the per-event cache: JSON, WebSocket frames, SSE and
// Socket.IO need four; the rest is headroom. A fixed array keeps an event
// one allocation and the lookup an index.
const maxEncodings = 6

// encodings counts the registered encodings (their slots).
var encodings atomic.Int32

type encodedSlot struct {
	once sync.Once
	v    any
}

// Encoding is one wire form of events. Each transport declares the ones
// it needs as package variables; an event is encoded at most once per
// Encoding, by whichever writer needs it first, and every client that
// receives it shares the result.
type Encoding[T any] struct {
	name   string
	slot   int
	encode func(*Event) T
}

// NewEncoding registers an encoding. Call it from a package variable's
// initialiser: the number of encodings is fixed at build time, and going
// past maxEncodings is a programming error.
func NewEncoding[T any](name string, encode func(*Event) T) *Encoding[T] {
	slot := int(encodings.Add(1)) - 1
	if slot >= maxEncodings {
		panic(fmt.Sprintf("broadcast: encoding %q is one too many (maxEncodings is %d)", name, maxEncodings))
	}
	return &Encoding[T]{name: name, slot: slot, encode: encode}
}

// Of returns ev in this encoding, encoding it on first use. Safe for
// concurrent use by every writer that sends ev.
func (enc *Encoding[T]) Of(ev *Event) T {
	s := &ev.encoded[enc.slot]
	s.once.Do(func() { s.v = enc.encode(ev) })
	return s.v.(T)
}

// Name is the encoding's name.
func (enc *Encoding[T]) Name() string { return enc.name }
