// Package pgtest gives tests PostgreSQL databases from throwaway clusters
// (see package pgcluster): a fresh database per test in a cluster shared by
// the test binary (ForTest), or a private cluster for a test that stops or
// breaks the server (OwnCluster).
//
// It is kept apart from pgcluster so that the rowcast binary, which uses
// pgcluster for "rowcast demo", does not link package testing.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"rowcast/integration/pgcluster"
)

// EnvTestDatabaseURL names the environment variable that points tests at an
// existing PostgreSQL server (a superuser connection URL, wal_level=logical)
// instead of a throwaway cluster.
const EnvTestDatabaseURL = "ROWCAST_TEST_DATABASE_URL"

var shared struct {
	once    sync.Once
	mu      sync.Mutex
	cluster *pgcluster.Cluster
	err     error
}

// Shared returns the cluster shared by all tests of the test binary,
// starting it on first use. It is closed by Main; if the binary does not
// use Main, the cluster's watchdog removes it when the process exits.
func Shared() (*pgcluster.Cluster, error) {
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c, err := pgcluster.Start(ctx, pgcluster.Options{})
		shared.mu.Lock()
		shared.cluster, shared.err = c, err
		shared.mu.Unlock()
	})
	shared.mu.Lock()
	defer shared.mu.Unlock()
	return shared.cluster, shared.err
}

func closeShared() {
	shared.mu.Lock()
	c := shared.cluster
	shared.mu.Unlock()
	_ = c.Close()
}

// Main runs the tests and then removes the shared cluster, if one was
// started. Use it from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// On SIGINT or SIGTERM it closes every open cluster and exits.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main without the exit: it returns the tests' exit code, for a
// TestMain that has more to clean up afterwards.
func Run(m *testing.M) int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig, ok := <-sigs
		if !ok {
			return
		}
		fmt.Fprintf(os.Stderr, "pgtest: %v received, removing PostgreSQL clusters\n", sig)
		pgcluster.CloseAll()
		os.Exit(1)
	}()
	code := m.Run()
	signal.Stop(sigs)
	close(sigs) // ends the goroutine above
	closeShared()
	pgcluster.CloseAll()
	return code
}

// ForTest returns a connection URL to a fresh, empty database for the
// test, dropped when the test ends.
//
// With ROWCAST_TEST_DATABASE_URL set, the database is created on that
// server. Otherwise it is created in the shared throwaway cluster of the
// test binary (see Shared and Main). Missing PostgreSQL binaries fail the
// test with installation instructions.
func ForTest(t testing.TB) string {
	t.Helper()
	name := "rowcast_test_" + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	if admin := os.Getenv(EnvTestDatabaseURL); admin != "" {
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Fatalf("pgtest: connecting to %s: %v", EnvTestDatabaseURL, err)
		}
		_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
		conn.Close(context.Background())
		if err != nil {
			t.Fatalf("pgtest: creating database %s via %s: %v", name, EnvTestDatabaseURL, err)
		}
		dbURL, err := withDatabase(admin, name)
		if err != nil {
			t.Fatalf("pgtest: %s: %v", EnvTestDatabaseURL, err)
		}
		t.Cleanup(func() { dropDatabase(t, admin, name) })
		return dbURL
	}

	c, err := Shared()
	if err != nil {
		t.Fatalf("pgtest: starting the shared PostgreSQL cluster: %v", hint(err))
	}
	dbURL, err := c.CreateDatabase(ctx, name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { dropDatabase(t, c.URL("postgres"), name) })
	return dbURL
}

// OwnCluster starts a private cluster for a test that stops, restarts or
// breaks PostgreSQL, and closes it when the test ends. It skips the test
// when ROWCAST_TEST_DATABASE_URL is set, since an external server cannot be
// restarted by the test.
func OwnCluster(t testing.TB, opts pgcluster.Options) *pgcluster.Cluster {
	t.Helper()
	if os.Getenv(EnvTestDatabaseURL) != "" {
		t.Skipf("pgtest: skipped: this test needs its own PostgreSQL cluster (it stops or restarts the server), which is not possible with %s set", EnvTestDatabaseURL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, opts)
	if err != nil {
		t.Fatalf("pgtest: starting a PostgreSQL cluster: %v", hint(err))
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return c
}

// hint adds the test-specific way around missing binaries.
func hint(err error) error {
	if errors.Is(err, pgcluster.ErrNoBinaries) {
		return fmt.Errorf("%w (for tests: set %s to a superuser URL of a server with wal_level=logical)", err, EnvTestDatabaseURL)
	}
	return err
}

// dropDatabase drops a test database, first dropping its replication
// slots (DROP DATABASE refuses while slots exist, even WITH (FORCE)).
// Failures are logged, not fatal: they only leave a stray database.
func dropDatabase(t testing.TB, adminURL, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Logf("pgtest: dropping database %s: %v", name, err)
		return
	}
	defer conn.Close(context.Background())
	for attempt := 0; ; attempt++ {
		_, err = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, name)
		if err == nil {
			_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, name)
		}
		if err == nil {
			_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
		}
		if err == nil || attempt == 20 || ctx.Err() != nil {
			break
		}
		// A terminated walsender may still hold its slot for a moment.
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Logf("pgtest: dropping database %s: %v", name, err)
	}
}

// withDatabase returns connString (URL or keyword/value form) with the
// database replaced by dbname.
func withDatabase(connString, dbname string) (string, error) {
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		u, err := url.Parse(connString)
		if err != nil {
			return "", err
		}
		u.Path = "/" + dbname
		u.RawPath = ""
		q := u.Query()
		if q.Has("dbname") {
			q.Set("dbname", dbname)
			u.RawQuery = q.Encode()
		}
		return u.String(), nil
	}
	// Keyword/value form: a later dbname overrides an earlier one.
	return connString + " dbname='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(dbname) + "'", nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
