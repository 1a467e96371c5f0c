package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Sample helpdesk data and the writer that keeps changing it, for the demo.

var demoCategories = []string{"hardware", "network", "account", "billing", "other"}

var demoTitles = map[string][]string{
	"hardware": {
		"Printer on 3rd floor jams", "Laptop battery drains in an hour", "Second monitor flickers",
		"Docking station does not detect the display", "Keyboard missing the Enter key",
		"Projector in room 4B shows no signal", "Badge reader at the side entrance is dead",
		"Desk phone has no dial tone", "Webcam not recognised after update", "Headset microphone crackles",
		"Laptop fan is very loud", "Scanner saves blank pages", "Need a replacement charger",
		"Printer in the mail room prints in pink",
	},
	"network": {
		"VPN drops every 10 minutes", "Wi-Fi slow in the east wing", "Cannot reach the shared drive",
		"Guest Wi-Fi password expired", "Video calls freeze on Wi-Fi", "Intranet pages do not resolve",
		"Ethernet port at desk 12 is dead", "Remote desktop times out", "Cannot connect to the VPN from hotel",
		"File uploads to SharePoint stall",
	},
	"account": {
		"Password reset for new hire", "Locked out after too many attempts", "Need access to the finance folder",
		"MFA codes not arriving", "Email alias for the support team", "Remove access for departed contractor",
		"Cannot sign in to the HR portal", "Shared mailbox permissions", "Name change after marriage",
		"Add me to the on-call distribution list",
	},
	"billing": {
		"Invoice 4821 charged twice", "Refund not received", "Wrong VAT number on invoice",
		"Update credit card on file", "Subscription renewed after cancellation", "Need copies of last year's invoices",
		"Discount not applied to order", "Payment failed but money was taken", "Upgrade to the annual plan",
	},
	"other": {
		"Coffee machine leaking on 2nd floor", "Request a standing desk", "Meeting room booking shows wrong times",
		"Add holiday calendar to shared calendars", "TV remote missing from room 3A", "Air conditioning too cold in room 3A",
		"Parking permit for a visitor", "Lost and found: blue umbrella",
	},
}

var demoDetails = map[string][]string{
	"hardware": {"Started this morning; restarting did not help.", "Happens several times a day.", "Affects the whole team on that floor.", "Tried another cable, same result."},
	"network":  {"Only on Wi-Fi, wired is fine.", "Several colleagues see the same.", "Started after yesterday's maintenance.", "Works from home, not from the office."},
	"account":  {"Urgent: blocks my work today.", "Manager approval attached.", "Needed before Monday.", "Tried the self-service reset twice."},
	"billing":  {"Customer is waiting for an answer.", "Reference number in the attachment.", "Second request about this.", "Please confirm by email."},
	"other":    {"Facilities may need to look at it.", "No rush.", "Reported by reception.", "Thanks in advance!"},
}

var demoPeople = []string{
	"ann.lee", "bob.martin", "carla.diaz", "dev.patel", "erik.larsen", "fatima.khan", "george.ng", "hana.sato",
	"ivan.petrov", "julia.rossi", "kofi.mensah", "lucia.gomez", "mark.owens", "nina.berg", "oscar.silva",
	"paula.weber", "quinn.doyle", "rosa.alves", "sven.olsen", "tara.walsh", "umar.farouk", "vera.novak",
}

var demoAgents = []string{
	"sam.rivera@example.com", "priya.shah@example.com", "tom.becker@example.com",
	"lena.novak@example.com", "omar.haddad@example.com",
}

var demoPriorities = []string{"low", "medium", "high", "urgent"}

// pick returns a random element of list.
func pick[T any](r *rand.Rand, list []T) T { return list[r.IntN(len(list))] }

// weighted returns list[i] with probability weights[i]/sum(weights).
func weighted(r *rand.Rand, list []string, weights []int) string {
	sum := 0
	for _, w := range weights {
		sum += w
	}
	n := r.IntN(sum)
	for i, w := range weights {
		if n < w {
			return list[i]
		}
		n -= w
	}
	return list[len(list)-1]
}

type demoTicket struct {
	title, description, status, priority, category, requester string
	assignee                                                  *string
	created, updated                                          time.Time
}

func newDemoTicket(r *rand.Rand, created, now time.Time) demoTicket {
	cat := weighted(r, demoCategories, []int{30, 25, 22, 13, 10})
	t := demoTicket{
		title:     pick(r, demoTitles[cat]),
		category:  cat,
		priority:  weighted(r, demoPriorities, []int{25, 40, 25, 10}),
		requester: pick(r, demoPeople) + "@example.com",
		created:   created,
	}
	if r.IntN(3) > 0 {
		t.description = pick(r, demoDetails[cat])
	}
	// Older tickets are more likely to be done.
	age := now.Sub(created)
	switch {
	case age > 14*24*time.Hour:
		t.status = weighted(r, []string{"open", "in_progress", "resolved", "closed"}, []int{5, 10, 25, 60})
	case age > 3*24*time.Hour:
		t.status = weighted(r, []string{"open", "in_progress", "resolved", "closed"}, []int{20, 30, 30, 20})
	default:
		t.status = weighted(r, []string{"open", "in_progress", "resolved", "closed"}, []int{50, 35, 10, 5})
	}
	if t.status != "open" || r.IntN(3) == 0 {
		a := pick(r, demoAgents)
		t.assignee = &a
	}
	t.updated = created
	if t.status != "open" {
		t.updated = created.Add(time.Duration(r.Int64N(int64(now.Sub(created)) + 1)))
	}
	return t
}

// seedTickets inserts n tickets created over the 30 days before now, oldest
// first, so that ids follow creation time.
func seedTickets(ctx context.Context, conn *pgx.Conn, n int, now time.Time) error {
	r := rand.New(rand.NewPCG(uint64(now.UnixNano()), 1))
	created := make([]time.Time, n)
	for i := range created {
		// More recent days are busier.
		f := 1 - r.Float64()*r.Float64()
		created[i] = now.Add(-time.Duration((1 - f) * float64(30*24*time.Hour))).Truncate(time.Second)
	}
	slices.SortFunc(created, func(a, b time.Time) int { return a.Compare(b) })
	rows := make([][]any, n)
	for i, c := range created {
		t := newDemoTicket(r, c, now)
		var desc *string
		if t.description != "" {
			desc = &t.description
		}
		rows[i] = []any{t.title, desc, t.status, t.priority, t.category, t.requester, t.assignee, t.created, t.updated}
	}
	_, err := conn.CopyFrom(ctx, pgx.Identifier{"tickets"},
		[]string{"title", "description", "status", "priority", "category", "requester_email", "assignee_email", "created_at", "updated_at"},
		pgx.CopyFromRows(rows))
	return err
}

// demoWriter plays a legacy application that writes tickets with plain SQL,
// knowing nothing about rowcast: it inserts, assigns, moves tickets through
// their statuses, changes priorities and deletes, and now and then calls
// rowcast.broadcast to show a notification.
type demoWriter struct {
	url   string
	every time.Duration
	log   *slog.Logger
	rng   *rand.Rand
	conn  *pgx.Conn
}

func newDemoWriter(url string, rate float64, log *slog.Logger) *demoWriter {
	return &demoWriter{
		url:   url,
		every: time.Duration(float64(time.Second) / rate),
		log:   log.With("component", "demo writer"),
		rng:   rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2)),
	}
}

// run writes until ctx ends. Errors are logged and the writer carries on,
// reconnecting when its connection is lost.
func (w *demoWriter) run(ctx context.Context) {
	defer func() {
		if w.conn != nil {
			w.conn.Close(context.Background())
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		err := w.step(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := w.every/2 + time.Duration(w.rng.Int64N(int64(w.every)+1))
		if err != nil {
			failures++
			if failures == 1 || failures%20 == 0 {
				w.log.Warn("write failed", "err", err, "failures", failures)
			}
			if w.conn != nil && w.conn.IsClosed() {
				w.conn = nil
			}
			wait = max(wait, time.Second)
		} else {
			failures = 0
		}
		timer.Reset(wait)
	}
}

func (w *demoWriter) step(ctx context.Context) error {
	if w.conn == nil {
		cc, err := pgx.ParseConfig(w.url)
		if err != nil {
			return err
		}
		cc.RuntimeParams["application_name"] = "rowcast demo writer"
		if w.conn, err = pgx.ConnectConfig(ctx, cc); err != nil {
			return err
		}
	}
	var total int
	if err := w.conn.QueryRow(ctx, "SELECT count(*) FROM tickets").Scan(&total); err != nil {
		return err
	}
	// Keep the table near its seeded size: insert more when it shrinks,
	// delete more when it grows.
	insertW, deleteW := 12, 12
	switch {
	case total < 180:
		insertW, deleteW = 24, 4
	case total > 220:
		insertW, deleteW = 4, 24
	}
	// Toasts also come with reopened and escalated tickets: keep the
	// plain notices rare.
	op := weighted(w.rng, []string{"insert", "status", "assign", "priority", "delete", "notify"},
		[]int{insertW, 38, 14, 12, deleteW, 1})
	switch op {
	case "insert":
		return w.insert(ctx)
	case "status":
		return w.advance(ctx)
	case "assign":
		return w.assign(ctx)
	case "priority":
		return w.reprioritize(ctx)
	case "delete":
		return w.remove(ctx)
	default:
		return w.notify(ctx, pick(w.rng, []string{"info", "info", "success", "warning"}), pick(w.rng, demoNotices))
	}
}

var demoNotices = []string{
	"Nightly backup finished",
	"Reminder: maintenance window Saturday 22:00–23:00",
	"New knowledge base article: Resetting your VPN profile",
	"Printer fleet firmware update scheduled for Friday",
	"Two agents joined the morning shift",
	"Mail server latency is back to normal",
	"SLA check: all urgent tickets have an assignee",
}

func (w *demoWriter) insert(ctx context.Context) error {
	t := newDemoTicket(w.rng, time.Now(), time.Now())
	var desc *string
	if t.description != "" {
		desc = &t.description
	}
	_, err := w.conn.Exec(ctx, `INSERT INTO tickets (title, description, status, priority, category, requester_email)
		VALUES ($1, $2, 'open', $3, $4, $5)`, t.title, desc, t.priority, t.category, t.requester)
	return err
}

// randomTicket returns a random ticket with one of statuses, or ok false.
func (w *demoWriter) randomTicket(ctx context.Context, statuses ...string) (id int64, status string, assignee *string, ok bool, err error) {
	err = w.conn.QueryRow(ctx, `SELECT id, status, assignee_email FROM tickets WHERE status = ANY($1)
		ORDER BY random() LIMIT 1`, statuses).Scan(&id, &status, &assignee)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, "", nil, false, nil
	}
	return id, status, assignee, err == nil, err
}

// advance moves a ticket one step through its life:
// open → in progress → resolved → closed, with the odd reopened ticket.
func (w *demoWriter) advance(ctx context.Context) error {
	id, status, assignee, ok, err := w.randomTicket(ctx, "open", "in_progress", "resolved")
	if err != nil || !ok {
		return err
	}
	next := map[string]string{"open": "in_progress", "in_progress": "resolved", "resolved": "closed"}[status]
	if status == "resolved" && w.rng.IntN(6) == 0 {
		next = "open"
	}
	a := assignee
	if a == nil && next != "open" {
		agent := pick(w.rng, demoAgents)
		a = &agent
	}
	_, err = w.conn.Exec(ctx, `UPDATE tickets SET status = $1, assignee_email = $2, updated_at = now() WHERE id = $3`, next, a, id)
	if err == nil && next == "open" && status == "resolved" {
		err = w.notify(ctx, "warning", fmt.Sprintf("Ticket #%d was reopened by its requester", id))
	}
	return err
}

func (w *demoWriter) assign(ctx context.Context) error {
	id, _, assignee, ok, err := w.randomTicket(ctx, "open", "in_progress")
	if err != nil || !ok {
		return err
	}
	agent := pick(w.rng, demoAgents)
	for assignee != nil && agent == *assignee {
		agent = pick(w.rng, demoAgents)
	}
	_, err = w.conn.Exec(ctx, `UPDATE tickets SET assignee_email = $1,
		status = CASE WHEN status = 'open' THEN 'in_progress' ELSE status END, updated_at = now() WHERE id = $2`, agent, id)
	return err
}

func (w *demoWriter) reprioritize(ctx context.Context) error {
	id, _, _, ok, err := w.randomTicket(ctx, "open", "in_progress")
	if err != nil || !ok {
		return err
	}
	var title, priority string
	if err := w.conn.QueryRow(ctx, `SELECT title, priority FROM tickets WHERE id = $1`, id).Scan(&title, &priority); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	}
	i := slices.Index(demoPriorities, priority)
	switch {
	case i < 0:
		i = 1
	case i == 0:
		i++
	case i == len(demoPriorities)-1:
		i--
	case w.rng.IntN(3) > 0:
		i++ // escalations are more common
	default:
		i--
	}
	next := demoPriorities[i]
	if _, err := w.conn.Exec(ctx, `UPDATE tickets SET priority = $1, updated_at = now() WHERE id = $2`, next, id); err != nil {
		return err
	}
	if next == "urgent" {
		return w.notify(ctx, "warning", fmt.Sprintf("Ticket #%d escalated to urgent: %s", id, title))
	}
	return nil
}

// remove deletes a closed ticket (archived), or now and then a duplicate.
func (w *demoWriter) remove(ctx context.Context) error {
	statuses := []string{"closed"}
	if w.rng.IntN(5) == 0 {
		statuses = []string{"open"}
	}
	id, _, _, ok, err := w.randomTicket(ctx, statuses...)
	if err != nil || !ok {
		return err
	}
	_, err = w.conn.Exec(ctx, `DELETE FROM tickets WHERE id = $1`, id)
	return err
}

// notify shows a toast on every dashboard, through rowcast.broadcast.
func (w *demoWriter) notify(ctx context.Context, kind, message string) error {
	payload, err := json.Marshal(map[string]string{"type": kind, "message": strings.TrimSpace(message)})
	if err != nil {
		return err
	}
	_, err = w.conn.Exec(ctx, `SELECT rowcast.broadcast('notification', $1::jsonb)`, string(payload))
	return err
}
