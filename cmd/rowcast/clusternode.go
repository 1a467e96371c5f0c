package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"rowcast"
	"rowcast/broadcast"
	"rowcast/cmd/rowcast/cluster"
	"rowcast/metrics"
)

// clusterNode is what cluster mode (ROWCAST_NATS_URL) adds to serve: the
// connection to the stream, the consumer that feeds the hub from it, and
// the election of the node that captures and publishes.
type clusterNode struct {
	conn     *cluster.Conn
	metrics  *metrics.Cluster
	consumer *cluster.Consumer
	log      *slog.Logger
}

func newClusterNode(cfg Config, mode string, reg *prometheus.Registry, log *slog.Logger) (*clusterNode, error) {
	var urls []string
	for _, u := range strings.Split(cfg.NATSURL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	if strings.ContainsAny(cfg.NATSStream, ". *>") || cfg.NATSStream == "" {
		return nil, fmt.Errorf("ROWCAST_NATS_STREAM %q: a stream name has no spaces, dots, * or >", cfg.NATSStream)
	}
	host, _ := os.Hostname()
	maxAge := max(cfg.NATSMaxAge, cfg.WindowAge)
	conn, err := cluster.Dial(cluster.NATSConfig{
		URLs: urls, Stream: cfg.NATSStream, Replicas: cfg.NATSReplicas,
		MaxAge: maxAge, Duplicates: min(cfg.NATSDuplicates, maxAge),
		CredsFile: cfg.NATSCreds, User: cfg.NATSUser, Password: cfg.NATSPassword, Token: cfg.NATSToken,
		TLSCA: cfg.NATSTLSCA, TLSCert: cfg.NATSTLSCert, TLSKey: cfg.NATSTLSKey,
		Name:   "rowcast " + host + " (" + mode + ")",
		Logger: log,
	})
	if err != nil {
		return nil, err
	}
	n := &clusterNode{conn: conn, log: log}
	n.metrics = metrics.NewCluster(reg, n.status)
	return n, nil
}

func (n *clusterNode) status() metrics.ClusterStatus {
	st := metrics.ClusterStatus{Connected: n.conn.Connected()}
	if c := n.consumer; c != nil {
		st.Ready, st.Lag, st.Bad = c.Ready(), c.Lag(), c.Bad()
	}
	return st
}

// catchUp is the hub's CatchUp: nil outside cluster mode.
func (n *clusterNode) catchUp() func(context.Context) error {
	if n == nil {
		return nil
	}
	return func(ctx context.Context) error {
		if c := n.consumer; c != nil {
			return c.CatchUp(ctx)
		}
		return nil
	}
}

// wire returns what serve runs in cluster mode instead of capture into
// the hub: the consumer of the stream into the hub, and beside it the
// election that runs capture into the stream while this node leads. The
// node is ready while it consumes the stream, whether or not it leads.
func (n *clusterNode) wire(source rowcast.Source, hub *broadcast.Hub, connString, mode string, cfg Config) (ready func() bool, run func(context.Context) error) {
	n.consumer = cluster.NewConsumer(n.conn, hub, nil, n.log)
	pub := cluster.NewPublisher(cluster.Instrument(n.conn, n.metrics), cfg.NATSPublishTimeout, n.log)
	pub.HandOff(n.consumer)
	pub.Batch(cfg.NATSBatch)
	what := cfg.Slot
	if mode == "notify" {
		what = cfg.Channel
	}
	leader := cluster.NewLeader(cluster.LeaderConfig{
		ConnString: connString,
		Name:       cfg.NATSStream + "/" + mode + "/" + what,
		Ready:      n.consumer.Ready,
		Observer:   n.metrics,
		Logger:     n.log,
	})
	run = func(ctx context.Context) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		errc := make(chan error, 2)
		go func() { errc <- n.consumer.Run(ctx) }()
		go func() { errc <- leader.Run(ctx, cluster.Term(pub, source, mode == "notify")) }()
		var first error
		for range 2 {
			if err := <-errc; err != nil && first == nil {
				first = err
				cancel()
			} else if ctx.Err() == nil {
				cancel()
			}
		}
		return first
	}
	return n.consumer.Ready, run
}
