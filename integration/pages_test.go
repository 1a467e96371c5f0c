package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"
	"time"
)

// TestSnapshotPagesConverge: the whole table is read in pages of 100
// (/api/snapshot?order=key) while writers are busy, and between every two
// pages rows are also inserted, updated and deleted on both sides of the
// page boundary, in key ranges already read and not yet read. A client
// that takes the rows of every page and then applies events from the
// FIRST page's lastEventId ends with exactly the table, seeing each event
// once.
func TestSnapshotPagesConverge(t *testing.T) {
	forModes(t, func(t *testing.T, mode string) {
		// The viewer replays thousands of events while writers go on; its
		// queue holds them all, so a busy machine cannot make it a slow
		// consumer (which this viewer does not recover from).
		db, s := startMode(t, mode, "ROWCAST_SEND_QUEUE=100000")
		seedTickets(t, db, 2000)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var written atomic.Int64
		done := make(chan int64, 1)
		go func() { done <- legacyWritersProgress(ctx, t, db, 2, 3000, 0, &written) }()
		waitWritten(t, &written, 100, nil)

		tok := token(t, nil)
		auth := http.Header{"Authorization": {"Bearer " + tok}}
		conn := connectDB(t, db)
		rows := map[string]json.RawMessage{}
		var cursor, after string
		pages, between := 0, 0
		for {
			u := s.base + "/api/snapshot?order=key&limit=100"
			if after != "" {
				u += "&after=" + url.QueryEscape(after)
			}
			status, body := httpGet(t, u, auth)
			if status != 200 {
				t.Fatalf("GET %s: %d %s", u, status, body)
			}
			var page struct {
				Tickets     []json.RawMessage `json:"tickets"`
				LastEventID string            `json:"lastEventId"`
				Next        string            `json:"next"`
			}
			if err := json.Unmarshal(body, &page); err != nil {
				t.Fatal(err)
			}
			if pages == 0 {
				cursor = page.LastEventID
			}
			pages++
			for _, raw := range page.Tickets {
				var k struct {
					ID json.Number `json:"id"`
				}
				json.Unmarshal(raw, &k)
				if _, dup := rows[k.ID.String()]; dup {
					t.Fatalf("ticket %s on two pages", k.ID)
				}
				rows[k.ID.String()] = raw
			}
			if page.Next == "" {
				break
			}
			after = page.Next
			var last struct {
				ID int64 `json:"id"`
			}
			if err := json.Unmarshal([]byte(after), &last); err != nil {
				t.Fatalf("next %q: %v", after, err)
			}
			// The table changes behind the reader, around the boundary.
			for _, q := range []string{
				fmt.Sprintf(`UPDATE tickets SET title = 'read, then changed %d', updated_at = now() WHERE id = (SELECT max(id) FROM tickets WHERE id <= %d)`, pages, last.ID),
				fmt.Sprintf(`UPDATE tickets SET title = 'changed before read %d', updated_at = now() WHERE id = (SELECT min(id) FROM tickets WHERE id > %d)`, pages, last.ID),
				fmt.Sprintf(`DELETE FROM tickets WHERE id = (SELECT min(id) FROM tickets WHERE id < %d AND title LIKE 'seed%%')`, last.ID),
				fmt.Sprintf(`DELETE FROM tickets WHERE id = (SELECT max(id) FROM tickets WHERE id > %d + 50 AND title LIKE 'seed%%')`, last.ID),
				fmt.Sprintf(`INSERT INTO tickets (title) VALUES ('inserted after page %d')`, pages),
			} {
				if _, err := conn.Exec(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
				between++
			}
		}
		if cursor == "" {
			t.Fatal("the first page has no lastEventId")
		}
		if pages < 20 {
			t.Fatalf("read %d pages; the table should take at least 20", pages)
		}

		v := newViewer(t, s, tok)
		v.rows = rows
		v.lastID = cursor
		if err := v.connect(); err != nil {
			t.Fatal(err)
		}
		total := <-done
		want := tableTitles(t, db)
		deadline := time.Now().Add(30 * time.Second)
		for sameView(v.titles(), want) != "" {
			if _, resyncs, err := v.state(); err != nil || resyncs > 0 {
				t.Fatalf("viewer: %v, %d resyncs", err, resyncs)
			}
			if time.Now().After(deadline) {
				t.Fatalf("pages plus events from the first page's cursor did not converge: %s", sameView(v.titles(), want))
			}
			time.Sleep(50 * time.Millisecond)
		}
		v.disconnect()
		t.Logf("%s: %d pages read while %d writer changes and %d changes between pages were committed; the view equals the table (%d rows)",
			mode, pages, total, between, len(want))
	})
}
