package pgtest

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"rowcast/integration/pgcluster"
)

func TestMain(m *testing.M) { Main(m) }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func connect(t *testing.T, ctx context.Context, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func show(t *testing.T, ctx context.Context, conn *pgx.Conn, name string) string {
	t.Helper()
	var v string
	if err := conn.QueryRow(ctx, "SHOW "+name).Scan(&v); err != nil {
		t.Fatalf("SHOW %s: %v", name, err)
	}
	return v
}

func TestForTest(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	a, b := ForTest(t), ForTest(t)
	if a == b {
		t.Fatalf("ForTest returned the same URL twice: %s", a)
	}
	for _, url := range []string{a, b} {
		conn := connect(t, ctx, url)
		var name string
		var tables int
		if err := conn.QueryRow(ctx, "SELECT current_database(), (SELECT count(*) FROM pg_tables WHERE schemaname = 'public')").Scan(&name, &tables); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(name, "rowcast_test_") || tables != 0 {
			t.Errorf("database %q with %d tables", name, tables)
		}
		if got := show(t, ctx, conn, "wal_level"); got != "logical" {
			t.Errorf("wal_level = %q", got)
		}
	}

	// A database with a logical replication slot is still dropped.
	t.Run("dropped", func(t *testing.T) {
		var name string
		// Registered first, so it runs after ForTest's cleanup.
		t.Cleanup(func() {
			conn, err := pgx.Connect(context.Background(), a)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			var n int
			if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
				t.Error(err)
			} else if n != 0 {
				t.Errorf("database %s not dropped", name)
			}
		})
		var repl *pgconn.PgConn
		t.Cleanup(func() { // runs after ForTest's cleanup, like a stream left running
			if repl != nil {
				repl.Close(context.Background())
			}
		})
		url := ForTest(t)
		conn := connect(t, ctx, url)
		if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "CREATE PUBLICATION p FOR ALL TABLES"); err != nil {
			t.Fatal(err)
		}
		cfg, err := pgconn.ParseConfig(url)
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuntimeParams["replication"] = "database"
		repl, err = pgconn.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pglogrepl.CreateReplicationSlot(ctx, repl, "s1", "pgoutput", pglogrepl.CreateReplicationSlotOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := pglogrepl.StartReplication(ctx, repl, "s1", 0, pglogrepl.StartReplicationOptions{
			PluginArgs: []string{"proto_version '1'", "publication_names 'p'"},
		}); err != nil {
			t.Fatal(err)
		}
		var active bool
		if err := conn.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = 's1'").Scan(&active); err != nil || !active {
			t.Fatalf("slot active = %v, %v", active, err)
		}
	})
}

func TestForTestShared(t *testing.T) {
	if os.Getenv(EnvTestDatabaseURL) != "" {
		t.Skipf("%s is set", EnvTestDatabaseURL)
	}
	t.Parallel()
	ForTest(t)
	c1, err1 := Shared()
	c2, err2 := Shared()
	if err1 != nil || err2 != nil || c1 != c2 || c1 == nil {
		t.Fatalf("Shared() = %p, %v; %p, %v", c1, err1, c2, err2)
	}
}

func TestOwnCluster(t *testing.T) {
	t.Parallel()
	c := OwnCluster(t, pgcluster.Options{Settings: map[string]string{"max_slot_wal_keep_size": "'16MB'"}})
	ctx := testCtx(t)
	if err := c.Restart(ctx, "immediate"); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, ctx, c.URL("postgres"))
	if got := show(t, ctx, conn, "max_slot_wal_keep_size"); got != "16MB" {
		t.Errorf("max_slot_wal_keep_size = %q", got)
	}
}

func TestWithDatabase(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u:p@h:5/old?sslmode=disable":     "postgres://u:p@h:5/new_db?sslmode=disable",
		"postgresql://u@/old?host=/tmp/x&dbname=old": "postgresql://u@/new_db?dbname=new_db&host=%2Ftmp%2Fx",
		"postgres://h":           "postgres://h/new_db",
		"host=/tmp/x dbname=old": "host=/tmp/x dbname=old dbname='new_db'",
		"host=/tmp/x port=5432 user=postgres sslmode=disable": "host=/tmp/x port=5432 user=postgres sslmode=disable dbname='new_db'",
	} {
		got, err := withDatabase(in, "new_db")
		if err != nil {
			t.Errorf("withDatabase(%q): %v", in, err)
			continue
		}
		if got != want {
			t.Errorf("withDatabase(%q) = %q, want %q", in, got, want)
		}
		cfg, err := pgx.ParseConfig(got)
		if err != nil {
			t.Errorf("ParseConfig(%q): %v", got, err)
		} else if cfg.Database != "new_db" {
			t.Errorf("ParseConfig(%q).Database = %q", got, cfg.Database)
		}
	}
}
