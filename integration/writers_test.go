package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// legacyWriters changes tickets with plain SQL from several connections,
// as a cron job or a legacy service would: inserts, updates (a new title
// each time, so a view can be compared with the table) and deletes, one
// row per transaction. It returns once total changes are committed or ctx
// ends, with the number committed.
func legacyWriters(ctx context.Context, t testing.TB, db string, writers, total int, pace time.Duration) int64 {
	t.Helper()
	var committed atomic.Int64
	return legacyWritersProgress(ctx, t, db, writers, total, pace, &committed)
}

// legacyWritersProgress is legacyWriters counting commits in committed as
// they happen.
func legacyWritersProgress(ctx context.Context, t testing.TB, db string, writers, total int, pace time.Duration, committed *atomic.Int64) int64 {
	t.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	statuses := []string{"open", "in_progress", "resolved", "closed"}
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, db)
			if err != nil {
				t.Errorf("writer %d: %v", w, err)
				return
			}
			defer conn.Close(context.Background())
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			var mine []int64
			for {
				n := next.Add(1)
				if n > int64(total) || ctx.Err() != nil {
					return
				}
				var err error
				switch op := rng.IntN(10); {
				case op < 4 || len(mine) < 5:
					var id int64
					err = conn.QueryRow(ctx, `INSERT INTO tickets (title, status, priority, requester_email) VALUES ($1, $2, 'medium', 'w@example.com') RETURNING id`,
						fmt.Sprintf("v%d", n), statuses[rng.IntN(4)]).Scan(&id)
					if err == nil {
						mine = append(mine, id)
					}
				case op < 8:
					_, err = conn.Exec(ctx, `UPDATE tickets SET title = $1, status = $2, updated_at = now() WHERE id = $3`,
						fmt.Sprintf("v%d", n), statuses[rng.IntN(4)], mine[rng.IntN(len(mine))])
				default:
					k := rng.IntN(len(mine))
					_, err = conn.Exec(ctx, `DELETE FROM tickets WHERE id = $1`, mine[k])
					mine = append(mine[:k], mine[k+1:]...)
				}
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("writer %d: %v", w, err)
					}
					return
				}
				committed.Add(1)
				if pace > 0 {
					time.Sleep(pace)
				}
			}
		}(w)
	}
	wg.Wait()
	return committed.Load()
}
