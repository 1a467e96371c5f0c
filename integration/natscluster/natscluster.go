// Package natscluster runs a NATS JetStream cluster inside the test
// process, on loopback ports, for the cluster-mode tests and benchmarks.
// It links the NATS server; rowcast itself never imports this package.
package natscluster

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster is n NATS servers forming one JetStream cluster.
type Cluster struct {
	dir    string
	mu     sync.Mutex
	opts   []*server.Options
	srv    []*server.Server
	client []int // client port of each server
}

// Start starts n servers (1 or 3, usually) with JetStream, storing under
// dir, and waits until each accepts connections.
func Start(dir string, n int) (*Cluster, error) {
	c := &Cluster{dir: dir}
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	var routes []*url.URL
	if n > 1 {
		for i := 0; i < n; i++ {
			routes = append(routes, &url.URL{Scheme: "nats-route", Host: "127.0.0.1:" + strconv.Itoa(ports[n+i])})
		}
	}
	for i := 0; i < n; i++ {
		o := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       ports[i],
			JetStream:  true,
			StoreDir:   filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			NoSigs:     true,
			NoLog:      os.Getenv("NATSCLUSTER_LOG") == "",
		}
		if n > 1 {
			o.Cluster = server.ClusterOpts{Name: "rowcast-test", Host: "127.0.0.1", Port: ports[n+i]}
			o.Routes = routes
		}
		c.opts = append(c.opts, o)
		c.client = append(c.client, ports[i])
		c.srv = append(c.srv, nil)
	}
	for i := range c.opts {
		if err := c.Restart(i); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var out []int
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port on 127.0.0.1: %w", err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// URLs is the comma-separated client URLs of every server (ROWCAST_NATS_URL).
func (c *Cluster) URLs() string {
	var u []string
	for _, p := range c.client {
		u = append(u, "nats://127.0.0.1:"+strconv.Itoa(p))
	}
	return strings.Join(u, ",")
}

// Size is the number of servers.
func (c *Cluster) Size() int { return len(c.opts) }

// Kill shuts server i down (its clients are disconnected and move to the
// others); its storage stays for Restart.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	s := c.srv[i]
	c.srv[i] = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart starts server i again on its ports and storage.
func (c *Cluster) Restart(i int) error {
	o := c.opts[i].Clone()
	s, err := server.NewServer(o)
	if err != nil {
		return fmt.Errorf("NATS server %s: %w", o.ServerName, err)
	}
	if !o.NoLog {
		s.ConfigureLogger()
	}
	go s.Start()
	if !s.ReadyForConnections(60 * time.Second) {
		s.Shutdown()
		return fmt.Errorf("NATS server %s did not accept connections within 60s", o.ServerName)
	}
	c.mu.Lock()
	c.srv[i] = s
	c.mu.Unlock()
	return nil
}

// Running reports whether server i runs.
func (c *Cluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.srv[i] != nil
}

// StreamLeader returns the index of the server that leads stream, or an
// error when none does now.
func (c *Cluster) StreamLeader(stream string) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, s := range c.srv {
		if s != nil && s.JetStreamIsStreamLeader("$G", stream) {
			return i, nil
		}
	}
	return -1, errors.New("no server leads the stream now")
}

// Stop shuts every server down.
func (c *Cluster) Stop() {
	for i := range c.srv {
		c.Kill(i)
	}
}
