package cdc

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// streamConn is a net.Conn reading a byte stream in pieces of at most
// chunk bytes (0: as much as asked).
type streamConn struct {
	net.Conn // nil: only Read is used
	r        *bytes.Reader
	chunk    int
}

func (c *streamConn) Read(p []byte) (int, error) {
	if c.chunk > 0 && len(p) > c.chunk {
		p = p[:c.chunk]
	}
	return c.r.Read(p)
}

func notifyConnOf(stream []byte, chunk int) *notifyConn {
	sc := &streamConn{r: bytes.NewReader(stream), chunk: chunk}
	return &notifyConn{conn: sc, br: bufio.NewReaderSize(sc, notifyBufSize)}
}

// message frames a backend message.
func message(typ byte, body []byte) []byte {
	b := binary.BigEndian.AppendUint32([]byte{typ}, uint32(4+len(body)))
	return append(b, body...)
}

func notificationBody(pid uint32, channel, payload string) []byte {
	b := binary.BigEndian.AppendUint32(nil, pid)
	b = append(append(b, channel...), 0)
	return append(append(b, payload...), 0)
}

// What a LISTEN connection receives is read whole, whatever pieces it
// arrives in: notifications split into sender, channel and payload; the
// ping's answer; notices and parameter changes; an error as PostgreSQL's.
func TestNotifyConnMessages(t *testing.T) {
	errBody := []byte("SFATAL\x00C57P01\x00Mterminating connection due to administrator command\x00\x00")
	long := strings.Repeat("x", 7999)
	var stream []byte
	stream = append(stream, message(msgNotification, notificationBody(42, "rowcast", `{"op":"insert"}`))...)
	stream = append(stream, message(msgNotice, []byte("SNOTICE\x00Mhello\x00\x00"))...)
	stream = append(stream, message(msgNotification, notificationBody(7, "other", long))...)
	stream = append(stream, message(msgEmptyQuery, nil)...)
	stream = append(stream, message(msgReadyForQuery, []byte{'I'})...)
	stream = append(stream, message(msgError, errBody)...)
	for _, chunk := range []int{0, 1, 5, 1000} {
		c := notifyConnOf(stream, chunk)
		var got []string
		for {
			if err := c.wait(); err != nil {
				if err != io.EOF {
					t.Fatalf("chunk %d: %v", chunk, err)
				}
				break
			}
			typ, body := c.next()
			switch typ {
			case msgNotification:
				pid, channel, payload, err := parseNotification(body)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, fmt.Sprintf("%c %d %s %s", typ, pid, channel, strings.ReplaceAll(string(payload), long, "<long>")))
			case msgError:
				var pe *pgconn.PgError
				if err := serverError(body); !errors.As(err, &pe) || pe.Code != "57P01" || pe.Severity != "FATAL" {
					t.Fatalf("error %v", err)
				}
				got = append(got, "E")
			default:
				got = append(got, string(typ))
			}
		}
		want := `A 42 rowcast {"op":"insert"}|N|A 7 other <long>|I|Z|E`
		if strings.Join(got, "|") != want {
			t.Fatalf("chunk %d: %s, want %s", chunk, strings.Join(got, "|"), want)
		}
	}
}

// A length no message of a LISTEN connection has is an error, not a wait
// for bytes that never come or an allocation the stream asks for.
func TestNotifyConnRefuses(t *testing.T) {
	for _, stream := range [][]byte{
		{'A', 0, 0, 0, 3},          // shorter than its own length field
		{'A', 0x7F, 0xFF, 0xFF, 0}, // 2 GiB
		{'A', 0, 1, 0, 1},          // over the buffer
	} {
		if err := notifyConnOf(stream, 0).wait(); err == nil || err == io.EOF {
			t.Errorf("% x: %v", stream, err)
		}
	}
	for _, body := range [][]byte{{0, 0, 1}, {0, 0, 0, 1, 'c'}, {0, 0, 0, 1, 'c', 0, 'p'}} {
		if _, _, _, err := parseNotification(body); err == nil {
			t.Errorf("notification % x parsed", body)
		}
	}
}

// FuzzNotifyConn: any stream ends in an error, never a panic, and no
// message is taken larger than the buffer.
func FuzzNotifyConn(f *testing.F) {
	f.Add(message(msgNotification, notificationBody(1, "rowcast", "{}")), 0)
	f.Add(append(message(msgError, []byte("SERROR\x00Mx\x00\x00")), 'Z', 0, 0, 0, 5, 'I'), 3)
	f.Add([]byte{'A', 0, 0, 0, 4}, 1)
	f.Fuzz(func(t *testing.T, stream []byte, chunk int) {
		c := notifyConnOf(stream, chunk&0xFF)
		for i := 0; i <= len(stream); i++ {
			if err := c.wait(); err != nil {
				return
			}
			typ, body := c.next()
			if len(body) > notifyBufSize {
				t.Fatalf("a %d-byte message", len(body))
			}
			switch typ {
			case msgNotification:
				_, _, _, _ = parseNotification(body)
			case msgError:
				_ = serverError(body)
			}
		}
		t.Fatal("more messages than bytes")
	})
}
