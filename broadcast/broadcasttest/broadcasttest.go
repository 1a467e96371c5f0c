// Package broadcasttest gives the transports' tests a hub and a gate with
// no database behind them, and a way to feed the hub row changes.
package broadcasttest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"rowcast"
	"rowcast/broadcast"
)

// Secret signs the tokens of tests that turn authentication on.
const Secret = "broadcast-test-secret"

// Env is a hub for table tickets (stats on status, filters on status) and
// a gate in front of it.
type Env struct {
	Hub  *broadcast.Hub
	Gate *broadcast.Gate
	pos  uint64
}

// New makes an Env whose capture has started (as a start marker from
// capture would say); mod may change the gate's settings (Hub, Logger and
// FilterColumns are set already).
func New(mod func(*broadcast.GateConfig)) *Env {
	e := NewNotStarted(mod)
	if err := e.Hub.Apply(context.Background(), []rowcast.Change{{Op: rowcast.OpStart, CaptureTime: time.Now()}}); err != nil {
		panic(err)
	}
	return e
}

// NewNotStarted is New before capture's start marker.
func NewNotStarted(mod func(*broadcast.GateConfig)) *Env {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	hub := broadcast.NewHub(broadcast.HubConfig{Names: broadcast.NamesFor("ticket", broadcast.ProfileColon),
		StatsColumns: []string{"status"}, WindowSize: 100, Logger: log})
	cfg := broadcast.GateConfig{Hub: hub, LiveUpdates: true, FilterColumns: []string{"status"}, Logger: log}
	if mod != nil {
		mod(&cfg)
	}
	return &Env{Hub: hub, Gate: broadcast.NewGate(cfg)}
}

// Apply sends a row change through the hub: insert, update or delete of
// ticket id with status. It returns the event's id.
func (e *Env) Apply(op rowcast.Op, id int, status string) rowcast.EventID {
	e.pos++
	key := rowcast.Row{{Name: "id", Value: json.RawMessage(fmt.Sprint(id))}}
	row := rowcast.Row{{Name: "id", Value: json.RawMessage(fmt.Sprint(id))},
		{Name: "status", Value: json.RawMessage(`"` + status + `"`)}}
	c := rowcast.Change{Op: op, Schema: "public", Table: "tickets", Key: key, ID: rowcast.EventID{Pos: e.pos}, CaptureTime: time.Now()}
	if op == rowcast.OpDelete {
		c.Old = row
	} else {
		c.Row = row
	}
	if err := e.Hub.Apply(context.Background(), []rowcast.Change{c}); err != nil {
		panic(err) // the hub's Apply only fails when broken
	}
	return c.ID
}

// WaitClients waits until the hub has n sessions: a client's dial returns
// before the handler has subscribed it.
func (e *Env) WaitClients(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for e.Hub.Clients() != n {
		if time.Now().After(deadline) {
			t.Fatalf("hub has %d clients, want %d", e.Hub.Clients(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
