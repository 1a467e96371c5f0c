package integration

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// faultProxy stands between rowcast and PostgreSQL on loopback and breaks
// the connection on demand, as networks do:
//
//   - Cut closes every connection at once (a reset, a failover's VIP move);
//   - Blackhole holds every byte in both directions, and every new
//     connection, until Heal (the partition ends and TCP delivers what it
//     held) or Cut (the partition ends in a reset);
//   - Hold keeps new connections whose startup parameters match (e.g. the
//     listener's application_name) from reaching PostgreSQL until
//     Release, to put rowcast's start-up steps in a chosen order;
//   - SetTarget sends new connections to another server (a failover).
//
// Connections must be plain (sslmode=disable) for Hold to read the
// startup message.
type faultProxy struct {
	t  testing.TB
	ln net.Listener

	mu      sync.Mutex
	cond    *sync.Cond
	target  string
	conns   map[*proxyConn]struct{}
	blocked bool // black-holed
	hold    func(params map[string]string) bool
	held    int // connections waiting in Hold now
	closed  bool
	wg      sync.WaitGroup
}

type proxyConn struct {
	client, server net.Conn
}

func (c *proxyConn) close() {
	c.client.Close()
	if c.server != nil {
		c.server.Close()
	}
}

// newFaultProxy listens on a free loopback port and forwards to target
// (host:port). It is closed when the test ends.
func newFaultProxy(t testing.TB, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{t: t, ln: ln, target: target, conns: map[*proxyConn]struct{}{}}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's host:port.
func (p *faultProxy) Addr() string { return p.ln.Addr().String() }

// Port is the proxy's port.
func (p *faultProxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		pc := &proxyConn{client: c}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.conns[pc] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(pc)
	}
}

// serve connects one client to the target and copies both ways.
func (p *faultProxy) serve(pc *proxyConn) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
		pc.close()
	}()
	startup, params, err := readStartup(pc.client)
	if err != nil {
		return
	}
	p.mu.Lock()
	if p.hold != nil && p.hold(params) {
		p.held++
		p.cond.Broadcast()
		for p.hold != nil && p.hold(params) && !p.closed && p.live(pc) {
			p.cond.Wait()
		}
		p.held--
	}
	for p.blocked && !p.closed && p.live(pc) {
		p.cond.Wait()
	}
	target, ok := p.target, !p.closed && p.live(pc)
	p.mu.Unlock()
	if !ok {
		return
	}
	srv, err := net.DialTimeout("tcp", target, 10*time.Second)
	if err != nil {
		return
	}
	p.mu.Lock()
	pc.server = srv
	if !p.live(pc) || p.closed {
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	if _, err := srv.Write(startup); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { p.pipe(pc, srv, pc.client); done <- struct{}{} }()
	go func() { p.pipe(pc, pc.client, srv); done <- struct{}{} }()
	<-done // either side ending ends both
	pc.close()
	<-done
}

// live reports whether pc has not been cut. Called with p.mu held.
func (p *faultProxy) live(pc *proxyConn) bool {
	_, ok := p.conns[pc]
	return ok
}

// pipe copies src to dst, holding each chunk while the proxy is
// black-holed.
func (p *faultProxy) pipe(pc *proxyConn, dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.blocked && !p.closed && p.live(pc) {
				p.cond.Wait()
			}
			p.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// readStartup reads the first message of a PostgreSQL connection (a
// StartupMessage; an SSLRequest is answered "no" first) and returns its
// bytes and parameters.
func readStartup(c net.Conn) ([]byte, map[string]string, error) {
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return nil, nil, err
		}
		n := int(binary.BigEndian.Uint32(hdr[:4]))
		if n < 8 || n > 1<<16 {
			return nil, nil, fmt.Errorf("startup message of %d bytes", n)
		}
		code := binary.BigEndian.Uint32(hdr[4:])
		if code == 80877103 || code == 80877104 { // SSLRequest, GSSENCRequest
			if _, err := c.Write([]byte{'N'}); err != nil {
				return nil, nil, err
			}
			continue
		}
		msg := make([]byte, n)
		copy(msg, hdr[:])
		if _, err := io.ReadFull(c, msg[8:]); err != nil {
			return nil, nil, err
		}
		params := map[string]string{}
		rest := msg[8:]
		for len(rest) > 1 {
			k, after, ok := cutNUL(rest)
			if !ok {
				break
			}
			v, after2, ok := cutNUL(after)
			if !ok {
				break
			}
			params[k] = v
			rest = after2
		}
		return msg, params, nil
	}
}

func cutNUL(b []byte) (string, []byte, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:], true
		}
	}
	return "", nil, false
}

// Cut closes every connection now (new ones are accepted as usual).
func (p *faultProxy) Cut() int {
	p.mu.Lock()
	n := len(p.conns)
	for pc := range p.conns {
		delete(p.conns, pc)
		pc.close()
	}
	p.cond.Broadcast()
	p.mu.Unlock()
	return n
}

// Blackhole stops every byte, both ways, and new connections' way to the
// server, until Heal or Cut.
func (p *faultProxy) Blackhole() {
	p.mu.Lock()
	p.blocked = true
	p.mu.Unlock()
}

// Heal ends a black hole: what it held is delivered.
func (p *faultProxy) Heal() {
	p.mu.Lock()
	p.blocked = false
	p.cond.Broadcast()
	p.mu.Unlock()
}

// CutAndHeal ends a black hole with every connection reset.
func (p *faultProxy) CutAndHeal() {
	p.Cut()
	p.Heal()
}

// Hold keeps new connections whose startup parameters match from the
// server until Release.
func (p *faultProxy) Hold(match func(params map[string]string) bool) {
	p.mu.Lock()
	p.hold = match
	p.mu.Unlock()
}

// Held is the number of connections waiting in Hold.
func (p *faultProxy) Held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held
}

// Release lets held connections through.
func (p *faultProxy) Release() {
	p.mu.Lock()
	p.hold = nil
	p.cond.Broadcast()
	p.mu.Unlock()
}

// SetTarget sends new connections to another server.
func (p *faultProxy) SetTarget(addr string) {
	p.mu.Lock()
	p.target = addr
	p.mu.Unlock()
}

// Close stops accepting, closes every connection and waits for the
// proxy's goroutines.
func (p *faultProxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	for pc := range p.conns {
		delete(p.conns, pc)
		pc.close()
	}
	p.cond.Broadcast()
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}
