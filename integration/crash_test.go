package integration

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"rowcast/integration/pgcluster"
	"rowcast/integration/pgcluster/pgtest"
	rsql "rowcast/sql"
)

// TestCrashSafety: rowcast is killed with SIGKILL twice while 4 writers
// make 20,000 changes; a client that reconnects after each restart with its
// last id sees every committed change exactly once, in commit order, and
// ends with the table's content.
func TestCrashSafety(t *testing.T) {
	changes := envInt("ROWCAST_TEST_CRASH_CHANGES", 20000)
	// The client's queue holds every event: this test is about crashes,
	// and a client that must keep up with four writers fails on a busy
	// machine (slow consumers have their own tests).
	queue := fmt.Sprintf("ROWCAST_SEND_QUEUE=%d", changes+1000)
	db, s := startMode(t, "logical", "ROWCAST_LOG_LEVEL=warn", queue)
	env := []string{"ROWCAST_CAPTURE=logical", "ROWCAST_SLOT=" + slotName(db), "ROWCAST_LOG_LEVEL=warn", queue}
	v := newViewer(t, s, "")
	if err := v.connect(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var written atomic.Int64
	done := make(chan int64, 1)
	go func() {
		done <- legacyWritersProgress(ctx, t, db, 4, changes, 0, &written)
	}()
	for kill := 1; kill <= 2; kill++ {
		target := int64(changes * kill / 3)
		for written.Load() < target {
			time.Sleep(20 * time.Millisecond)
		}
		s.stop(syscall.SIGKILL)
		v.disconnect()
		time.Sleep(200 * time.Millisecond) // writers keep going meanwhile
		s = startServer(t, db, env...)
		v.s = s
		if err := v.connect(); err != nil {
			t.Fatal(err)
		}
		t.Logf("killed and restarted rowcast after %d changes", target)
	}
	total := <-done
	want := tableTitles(t, db)
	waitProgress(t, "the client catching up", 2*time.Minute, func() (bool, int64) {
		n, resyncs, err := v.state()
		if err != nil {
			t.Fatal(err)
		}
		if resyncs != 0 {
			t.Fatalf("%d resync events: the window should have covered the restarts", resyncs)
		}
		if int64(n) > total {
			t.Fatalf("client saw %d events, %d changes were committed", n, total)
		}
		return int64(n) == total, int64(n)
	})
	if diff := sameView(v.titles(), want); diff != "" {
		t.Fatal(diff)
	}
	v.disconnect()
}

// TestPostgresRestart: PostgreSQL restarted (fast, then immediate) while
// writers are busy; logical capture loses no change.
func TestPostgresRestart(t *testing.T) {
	c := pgtest.OwnCluster(t, pgcluster.Options{})
	ctx := context.Background()
	db, err := c.CreateDatabase(ctx, "restart")
	if err != nil {
		t.Fatal(err)
	}
	exec1(t, db, rsql.Tickets)
	setup(t, db, "ROWCAST_CAPTURE=logical")
	s := startServer(t, db, "ROWCAST_CAPTURE=logical")
	v := newViewer(t, s, "")
	if err := v.connect(); err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	var written atomic.Int64
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		resilientWriter(wctx, db, &written)
	}()
	for _, mode := range []string{"fast", "immediate"} {
		target := written.Load() + 200
		for written.Load() < target {
			time.Sleep(10 * time.Millisecond)
		}
		if err := c.Restart(ctx, mode); err != nil {
			t.Fatal(err)
		}
		t.Logf("PostgreSQL restarted (%s) after %d inserts", mode, written.Load())
	}
	target := written.Load() + 200
	for written.Load() < target {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	<-wdone
	want := tableTitles(t, db)
	waitProgress(t, "the view converging after restarts", 2*time.Minute, func() (bool, int64) {
		n, _, err := v.state()
		if err != nil {
			t.Fatal(err)
		}
		return sameView(v.titles(), want) == "", int64(n)
	})
	if _, resyncs, _ := v.state(); resyncs != 0 {
		t.Errorf("%d resyncs; logical capture should resume from the slot", resyncs)
	}
	v.disconnect()
}

// resilientWriter inserts rows until ctx ends, reconnecting when
// PostgreSQL goes away; the table is the truth the view is compared with.
func resilientWriter(ctx context.Context, db string, written *atomic.Int64) {
	for i := 0; ctx.Err() == nil; {
		conn, err := pgx.Connect(ctx, db)
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		for ctx.Err() == nil {
			i++
			if _, err := conn.Exec(ctx, `INSERT INTO tickets (title) VALUES ($1)`, fmt.Sprint("r", i)); err != nil {
				break
			}
			written.Add(1)
		}
		conn.Close(context.Background())
	}
}
