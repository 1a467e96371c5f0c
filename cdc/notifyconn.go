package cdc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// notifyConn is the LISTEN connection once pgx has connected,
// authenticated and run LISTEN: from there the listener reads the
// protocol itself, and this file alone touches it. A notification is read
// from the connection's buffer into one new slice, its payload a slice of
// that, which the listener decodes in place; pgx would copy each payload
// twice (bytes, then a string) besides. Only what a listening session
// receives is understood: notifications, the answer to the listener's
// ping (an empty query), notices and parameter changes (skipped), and
// errors (the connection is done with).
type notifyConn struct {
	conn net.Conn
	br   *bufio.Reader
}

// notifyBufSize is the read buffer, and the largest message taken: a
// notification's payload is under 8,000 bytes, PostgreSQL's other
// messages here a few hundred.
const notifyBufSize = 64 << 10

// hijackListen takes conn (LISTEN done) from pgx. Notifications pgx has
// already read are returned, to be handled before any read from the
// connection.
func hijackListen(ctx context.Context, conn *pgx.Conn) (*notifyConn, []*pgconn.Notification, error) {
	pc := conn.PgConn()
	// Whatever pgx has read or reads while syncing ends in its own
	// buffer of notifications, taken here without waiting (a read
	// deadline in the past: nothing more is read from the socket).
	if err := pc.SyncConn(ctx); err != nil {
		return nil, nil, fmt.Errorf("taking over the LISTEN connection: %w", err)
	}
	raw := pc.Conn()
	if err := raw.SetReadDeadline(pollDeadline); err != nil {
		return nil, nil, fmt.Errorf("taking over the LISTEN connection: %w", err)
	}
	var early []*pgconn.Notification
	for {
		n, err := conn.WaitForNotification(context.Background())
		if n != nil {
			early = append(early, n)
		}
		if err != nil {
			if !pgconn.Timeout(err) || conn.IsClosed() {
				return nil, nil, fmt.Errorf("taking over the LISTEN connection: %w", err)
			}
			break
		}
	}
	hc, err := pc.Hijack()
	if err != nil {
		return nil, nil, fmt.Errorf("taking over the LISTEN connection: %w", err)
	}
	if n := hc.Frontend.ReadBufferLen(); n != 0 {
		hc.Conn.Close()
		return nil, nil, fmt.Errorf("taking over the LISTEN connection: pgx holds %d bytes not yet read", n)
	}
	return &notifyConn{conn: hc.Conn, br: bufio.NewReaderSize(hc.Conn, notifyBufSize)}, early, nil
}

// ready reports whether a whole message is in the buffer: next returns
// it without reading from the connection.
func (c *notifyConn) ready() bool {
	ok, _ := c.whole()
	return ok
}

// whole looks at the buffer: a whole message, or a header no message of
// the LISTEN connection has.
func (c *notifyConn) whole() (bool, error) {
	n := c.br.Buffered()
	if n < 5 {
		return false, nil
	}
	hdr, _ := c.br.Peek(5)
	size := 1 + int(binary.BigEndian.Uint32(hdr[1:]))
	if size < 5 || size > notifyBufSize {
		return false, fmt.Errorf("a %q message of %d bytes from PostgreSQL (at most %d expected)", hdr[0], size, notifyBufSize)
	}
	return n >= size, nil
}

// wait reads until a whole message is in the buffer, within the
// connection's read deadline. A timeout leaves the stream intact: nothing
// is taken from the buffer here.
func (c *notifyConn) wait() error {
	for {
		ok, err := c.whole()
		if ok || err != nil {
			return err
		}
		if _, err := c.br.Peek(c.br.Buffered() + 1); err != nil {
			return err
		}
	}
}

// next returns the whole message in the buffer (after ready or wait):
// its type and its body, a new slice.
func (c *notifyConn) next() (typ byte, body []byte) {
	hdr, _ := c.br.Peek(5)
	typ = hdr[0]
	body = make([]byte, int(binary.BigEndian.Uint32(hdr[1:]))-4)
	_, _ = c.br.Discard(5)
	_, _ = io.ReadFull(c.br, body) // whole in the buffer: a copy, no read
	return typ, body
}

// Message types the listener receives (PostgreSQL's protocol, 55.7).
const (
	msgNotification  = 'A'
	msgError         = 'E'
	msgNotice        = 'N'
	msgParameter     = 'S'
	msgEmptyQuery    = 'I'
	msgReadyForQuery = 'Z'
)

// parseNotification splits a notification's body: the sender's pid, the
// channel, the payload (slices of body).
func parseNotification(body []byte) (pid uint32, channel, payload []byte, err error) {
	if len(body) < 4 {
		return 0, nil, nil, errors.New("a notification shorter than its header")
	}
	pid = binary.BigEndian.Uint32(body)
	rest := body[4:]
	i := bytes.IndexByte(rest, 0)
	if i < 0 {
		return 0, nil, nil, errors.New("a notification without the end of its channel name")
	}
	channel, rest = rest[:i], rest[i+1:]
	j := bytes.IndexByte(rest, 0)
	if j < 0 {
		return 0, nil, nil, errors.New("a notification without the end of its payload")
	}
	return pid, channel, rest[:j], nil
}

// serverError is an ErrorResponse's body as an error (*pgconn.PgError).
func serverError(body []byte) error {
	var er pgproto3.ErrorResponse
	if err := er.Decode(body); err != nil {
		return fmt.Errorf("an error from PostgreSQL that does not decode: %w", err)
	}
	return pgconn.ErrorResponseToPgError(&er)
}

// pingQuery is an empty query: PostgreSQL answers EmptyQueryResponse,
// then ReadyForQuery.
var pingQuery = []byte{'Q', 0, 0, 0, 6, ';', 0}

// ping sends the empty query; its answer comes as the next messages.
func (c *notifyConn) ping(timeout time.Duration) error {
	if err := c.conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	_, err := c.conn.Write(pingQuery)
	return err
}

// close says goodbye (Terminate) and closes the connection.
func (c *notifyConn) close() {
	_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.conn.Write([]byte{'X', 0, 0, 0, 4})
	c.conn.Close()
}
