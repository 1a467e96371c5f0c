package cdc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"rowcast/integration/pgcluster/pgtest"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"rowcast"
)

// readAllPages follows next cursors the way /api/snapshot's clients do.
func readAllPages(t *testing.T, p *Pages, limit int, where []rowcast.Condition) (rows []rowcast.Row, pages int) {
	t.Helper()
	var after json.RawMessage
	for {
		page, err := p.Page(context.Background(), after, limit, where)
		if err != nil {
			t.Fatalf("page %d after %s: %v", pages, after, err)
		}
		pages++
		rows = append(rows, page...)
		if len(page) < limit {
			return rows, pages
		}
		last := page[len(page)-1]
		key := rowcast.Row{}
		for _, k := range p.Key() {
			v, _ := last.Get(k)
			key = append(key, rowcast.Column{Name: k, Value: v})
		}
		if after, err = key.MarshalJSON(); err != nil {
			t.Fatal(err)
		}
		if pages > 1000 {
			t.Fatal("pages do not end")
		}
	}
}

func pageText(r rowcast.Row, col string) string {
	s, _ := r.Text(col)
	return s
}

func TestPageRows(t *testing.T) {
	url := pgtest.ForTest(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{
		slotTicketsDDL,
		`INSERT INTO tickets (title, status) SELECT 't' || i, CASE WHEN i % 3 = 0 THEN 'open' ELSE 'closed' END FROM generate_series(1, 1234) i`,
		// Keys of two columns, one of them text that sorts unlike numbers.
		`CREATE TABLE lines (region text, n int, note text, PRIMARY KEY (region, n))`,
		`INSERT INTO lines SELECT r, n, r || n FROM unnest(ARRAY['b', 'a', 'B', 'a b', 'é']) r, generate_series(1, 30) n`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	tickets, err := LookupTable(ctx, conn, "public.tickets")
	if err != nil {
		t.Fatal(err)
	}
	p := PageRows(conn, tickets)
	rows, pages := readAllPages(t, p, 100, nil)
	if len(rows) != 1234 || pages != 13 {
		t.Fatalf("read %d rows in %d pages, want 1234 in 13", len(rows), pages)
	}
	for i, r := range rows {
		if want := fmt.Sprint(i + 1); pageText(r, "id") != want {
			t.Fatalf("row %d has id %s, want %s", i, pageText(r, "id"), want)
		}
	}
	open, _ := readAllPages(t, p, 50, []rowcast.Condition{{Column: "status", Values: []string{"open"}}})
	if len(open) != 1234/3 {
		t.Errorf("filtered pages: %d rows, want %d", len(open), 1234/3)
	}
	for _, r := range open {
		if pageText(r, "status") != "open" {
			t.Fatalf("filtered pages hold %v", r)
		}
	}

	// The cursor bounds the index scan: no sort, no scan of earlier rows.
	checkPagePlan(t, conn, p, `{"id": 1000}`)

	// Composite key: PostgreSQL's order of (region, n), whatever the
	// collation does with case and accents.
	lt, err := LookupTable(ctx, conn, "public.lines")
	if err != nil {
		t.Fatal(err)
	}
	lp := PageRows(conn, lt)
	if got := lp.Key(); !reflect.DeepEqual(got, []string{"region", "n"}) {
		t.Fatalf("key %v", got)
	}
	got, _ := readAllPages(t, lp, 7, nil)
	wantRows, err := conn.Query(ctx, `SELECT region || '/' || n FROM lines ORDER BY region, n`)
	if err != nil {
		t.Fatal(err)
	}
	want, err := pgx.CollectRows(wantRows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("composite: %d rows, want %d", len(got), len(want))
	}
	for i, r := range got {
		if k := pageText(r, "region") + "/" + pageText(r, "n"); k != want[i] {
			t.Fatalf("composite row %d is %s, want %s", i, k, want[i])
		}
	}

	checkPagePlan(t, conn, lp, `{"region": "b", "n": 3}`)

	for _, bad := range []string{`[1]`, `{}`, `{"id": 1, "x": 2}`, `{"title": 1}`, `{"id": null}`, `{"id": {"a": 1}}`, `{"id": "x"}`, `not json`} {
		_, err := p.Page(ctx, json.RawMessage(bad), 10, nil)
		var ce interface{ BadCursor() bool }
		if !errors.As(err, &ce) {
			t.Errorf("cursor %s: got %v, want a cursor error", bad, err)
		}
	}
	if got := RecentOrder(tickets, "updated_at"); !reflect.DeepEqual(got, []string{"updated_at", "id"}) {
		t.Errorf("RecentOrder: %v", got)
	}
	if got := RecentOrder(lt, "updated_at"); !reflect.DeepEqual(got, []string{"region", "n"}) {
		t.Errorf("RecentOrder without the column: %v", got)
	}
}

// checkPagePlan fails unless a page after the cursor is read from the
// primary key index, bounded by the cursor, without sorting.
func checkPagePlan(t *testing.T, conn *pgx.Conn, p *Pages, after string) {
	t.Helper()
	query := "EXPLAIN (COSTS OFF) SELECT row_to_json(t)::text FROM " + p.t.Ident() + " t WHERE " + p.after + " ORDER BY " + p.order + " LIMIT 10"
	rows, err := conn.Query(context.Background(), query, after)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	plan := strings.Join(lines, "\n")
	t.Logf("plan of a page of %s:\n%s", p.t, plan)
	if !strings.Contains(plan, "Index Cond") || strings.Contains(plan, "Sort") {
		t.Errorf("page plan of %s does not use the key index as a bound:\n%s", p.t, plan)
	}
}
