package integration

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"rowcast/integration/harness"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// The tests here drive rowcast.js, the client library in
// broadcast/web/client, as a dashboard would, through clientlib/view.mjs
// (Node, with the ws package as its WebSocket). The library is installed
// from the tarball npm pack makes of its package, so what is tested is
// what a team installs. The oracle is a SELECT of the table: the
// library's rows must equal it.

const (
	clientlibDir = "clientlib"
	libraryDir   = "../broadcast/web/client"
)

var (
	clientlibOnce    sync.Once
	clientlibErr     error
	clientlibTarball string
)

// clientlibNode returns node once clientlib's node_modules are installed
// (npm ci) and the library is packed and unpacked into them. Without node
// the test is skipped (CI installs it).
func clientlibNode(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("client library test skipped: node not found on PATH (install Node.js >= 20, e.g. apt-get install nodejs npm)")
	}
	clientlibOnce.Do(func() { clientlibErr = prepareClientlib() })
	if clientlibErr != nil {
		t.Fatal(clientlibErr)
	}
	return node
}

func prepareClientlib() error {
	npm, err := exec.LookPath("npm")
	if err != nil {
		return fmt.Errorf("npm is not on PATH: install npm (it packs the client library)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := os.Stat(filepath.Join(clientlibDir, "node_modules", "ws", "package.json")); err != nil {
		cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = clientlibDir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("npm ci in integration/%s: %w\n%s", clientlibDir, err, out)
		}
	}
	dir, err := os.MkdirTemp("", "rowcast-pack-")
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, npm, "pack", "--json", "--pack-destination", dir)
	cmd.Dir = libraryDir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("npm pack in broadcast/web/client: %w\n%s", err, stderr.String())
	}
	var packed []struct {
		Filename string `json:"filename"`
	}
	if err := json.Unmarshal(out, &packed); err != nil || len(packed) != 1 {
		return fmt.Errorf("npm pack printed %q: %v", out, err)
	}
	clientlibTarball = filepath.Join(dir, packed[0].Filename)
	// Unpacked as npm would install it; node_modules is not committed.
	dest := filepath.Join(clientlibDir, "node_modules", "rowcast-client")
	if err := os.RemoveAll(dest); err != nil {
		return err
	}
	return untar(clientlibTarball, dest)
}

// untar unpacks an npm tarball (whose entries sit under package/) into
// dest.
func untar(tarball, dest string) error {
	f, err := os.Open(tarball)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s: %w", tarball, err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", tarball, err)
		}
		name, ok := strings.CutPrefix(h.Name, "package/")
		if !ok || name == "" || strings.Contains(name, "..") || h.Typeflag != tar.TypeReg {
			continue
		}
		p := filepath.Join(dest, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			return err
		}
		if err := os.WriteFile(p, body, 0o644); err != nil {
			return err
		}
	}
}

// libLine is one line printed by view.mjs.
type libLine struct {
	Type    string          `json:"type"`
	Status  string          `json:"status"`
	Message string          `json:"message"`
	Name    string          `json:"name"`
	Data    json.RawMessage `json:"data"`
	ID      string          `json:"id"`

	// dump
	Loaded         bool              `json:"loaded"`
	LastEventID    string            `json:"lastEventId"`
	Keys           []string          `json:"keys"`
	Stats          map[string]any    `json:"stats"`
	Rows           []json.RawMessage `json:"rows"`
	Rendered       []json.RawMessage `json:"rendered"`
	RenderedStatus string            `json:"renderedStatus"`
	Applied        struct {
		Events     int      `json:"events"`
		IDs        int      `json:"ids"`
		Snapshots  int      `json:"snapshots"`
		Violations []string `json:"violations"`
	} `json:"applied"`
}

// libView is a running view.mjs.
type libView struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *harness.LogBuffer

	// table and key are what waitConverged compares with (tickets, id).
	table string
	key   []string

	mu       sync.Mutex
	lines    []libLine
	statuses []string
	exited   bool
	changed  chan struct{}
	pos      int
}

// startView runs view.mjs against the server with connect options.
func startView(t *testing.T, s *server, cfg map[string]any) *libView {
	t.Helper()
	node := clientlibNode(t)
	cfg["url"] = s.base
	if _, ok := cfg["token"]; !ok {
		cfg["token"] = token(t, nil)
	}
	arg, _ := json.Marshal(cfg)
	v := &libView{t: t, stderr: &harness.LogBuffer{}, changed: make(chan struct{}, 1), table: "tickets", key: []string{"id"}}
	v.cmd = exec.Command(node, "view.mjs", string(arg))
	v.cmd.Dir = clientlibDir
	v.cmd.Stderr = v.stderr
	stdout, err := v.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if v.stdin, err = v.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 256<<20)
		for sc.Scan() {
			var l libLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				l = libLine{Type: "garbage", Message: sc.Text()}
			}
			v.mu.Lock()
			v.lines = append(v.lines, l)
			if l.Type == "status" {
				v.statuses = append(v.statuses, l.Status)
			}
			v.mu.Unlock()
			v.notify()
		}
		v.cmd.Wait()
		v.mu.Lock()
		v.exited = true
		v.mu.Unlock()
		v.notify()
	}()
	t.Cleanup(func() {
		v.stdin.Close()
		done := make(chan struct{})
		go func() {
			for {
				v.mu.Lock()
				exited := v.exited
				v.mu.Unlock()
				if exited {
					close(done)
					return
				}
				<-v.changed
			}
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			v.cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("view.mjs stderr:\n%s", v.stderr.String())
		}
	})
	return v
}

func (v *libView) notify() {
	select {
	case v.changed <- struct{}{}:
	default:
	}
}

func (v *libView) send(cmd string) {
	v.t.Helper()
	if _, err := io.WriteString(v.stdin, cmd+"\n"); err != nil {
		v.t.Fatalf("view.mjs: %v", err)
	}
}

// next returns the next line of one of the types, skipping others; an
// error line fails the test unless asked for.
func (v *libView) next(timeout time.Duration, types ...string) libLine {
	v.t.Helper()
	deadline := time.After(timeout)
	for {
		v.mu.Lock()
		for v.pos < len(v.lines) {
			l := v.lines[v.pos]
			v.pos++
			if l.Type == "garbage" {
				v.mu.Unlock()
				v.t.Fatalf("view.mjs printed %q", l.Message)
			}
			if contains(types, l.Type) {
				v.mu.Unlock()
				return l
			}
		}
		exited := v.exited
		v.mu.Unlock()
		if exited {
			v.t.Fatalf("view.mjs exited while waiting for %v\n%s", types, v.stderr.String())
		}
		select {
		case <-v.changed:
		case <-deadline:
			v.t.Fatalf("no %v from view.mjs within %v (statuses so far %v)", types, timeout, v.seenStatuses())
		}
	}
}

func (v *libView) seenStatuses() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.statuses...)
}

// waitStatus waits until the view has reported the status (now or
// earlier than now, counting from the from-th status report).
func (v *libView) waitStatus(from int, status string, timeout time.Duration) int {
	v.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v.mu.Lock()
		for i := from; i < len(v.statuses); i++ {
			if v.statuses[i] == status {
				v.mu.Unlock()
				return i + 1
			}
		}
		exited := v.exited
		v.mu.Unlock()
		if exited {
			v.t.Fatalf("view.mjs exited while waiting for status %q\n%s", status, v.stderr.String())
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("view not %q within %v; statuses %v", status, timeout, v.seenStatuses())
		}
		select {
		case <-v.changed:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (v *libView) dump() libLine {
	v.t.Helper()
	v.send("dump")
	return v.next(30*time.Second, "dump")
}

// normRows turns ticket rows into id → row, with timestamps in one form
// (events write "Z", snapshots "+00:00") and numbers as written.
func normRows(t *testing.T, raws []json.RawMessage) map[string]map[string]any {
	t.Helper()
	return normRowsBy(t, raws, []string{"id"})
}

// normRowsBy is normRows for a table with the key columns.
func normRowsBy(t *testing.T, raws []json.RawMessage, key []string) map[string]map[string]any {
	t.Helper()
	out := make(map[string]map[string]any, len(raws))
	for _, raw := range raws {
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.UseNumber()
		var row map[string]any
		if err := dec.Decode(&row); err != nil {
			t.Fatalf("row %s: %v", raw, err)
		}
		for k, v := range row {
			if s, ok := v.(string); ok {
				if ts, err := time.Parse(time.RFC3339Nano, s); err == nil {
					row[k] = ts.UTC().Format(time.RFC3339Nano)
				}
			}
		}
		var k []string
		for _, c := range key {
			k = append(k, fmt.Sprint(row[c]))
		}
		out[strings.Join(k, "/")] = row
	}
	return out
}

// tableRows reads the tickets (under a WHERE clause, or all of them) as
// the library should hold them.
func tableRows(t *testing.T, db, where string) map[string]map[string]any {
	t.Helper()
	return tableRowsOf(t, db, "tickets", []string{"id"}, where)
}

// tableRowsOf is tableRows for another table and its key columns.
func tableRowsOf(t *testing.T, db, table string, key []string, where string) map[string]map[string]any {
	t.Helper()
	conn := connectDB(t, db)
	q := "SELECT row_to_json(t)::text FROM " + table + " t"
	if where != "" {
		q += " WHERE " + where
	}
	rows, err := conn.Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	var raws []json.RawMessage
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		raws = append(raws, json.RawMessage(s))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	conn.Close(context.Background())
	return normRowsBy(t, raws, key)
}

// diffRows says how two views differ ("" when they are equal).
func diffRows(got, want map[string]map[string]any) string {
	var missing, extra, differ []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			missing = append(missing, k)
		case !reflect.DeepEqual(g, w):
			differ = append(differ, fmt.Sprintf("%s: view %v, table %v", k, g, w))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			extra = append(extra, k)
		}
	}
	if len(missing)+len(extra)+len(differ) == 0 {
		return ""
	}
	sort.Strings(missing)
	sort.Strings(extra)
	sort.Strings(differ)
	cut := func(s []string) []string {
		if len(s) > 5 {
			return append(s[:5:5], "...")
		}
		return s
	}
	return fmt.Sprintf("view %d rows, table %d: %d missing %v, %d extra %v, %d differ %v",
		len(got), len(want), len(missing), cut(missing), len(extra), cut(extra), len(differ), cut(differ))
}

// waitConverged waits until the view's rows (or, with rendered, the rows
// the React component rendered) equal the table under where, and returns
// that dump.
func (v *libView) waitConverged(db, where string, rendered bool, timeout time.Duration) libLine {
	v.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		want := tableRowsOf(v.t, db, v.table, v.key, where)
		d := v.dump()
		rows := d.Rows
		if rendered {
			rows = d.Rendered
		}
		diff := diffRows(normRowsBy(v.t, rows, v.key), want)
		if diff == "" {
			return d
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("the library's view did not converge to the table within %v (status %s): %s", timeout, d.Status, diff)
		}
		select {
		case <-v.changed:
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// seedTickets inserts n tickets in one statement.
func seedTickets(t *testing.T, db string, n int) {
	t.Helper()
	exec1(t, db, `INSERT INTO tickets (title, status, priority, requester_email)
		SELECT 'seed ' || i, (ARRAY['open','in_progress','resolved','closed'])[1 + i % 4], 'low', 'seed@example.com'
		FROM generate_series(1, $1) i`, n)
}

// checkApplied fails when the library applied an event twice or out of
// order (ids must strictly increase between two loads).
func checkApplied(t *testing.T, d libLine) {
	t.Helper()
	if len(d.Applied.Violations) > 0 {
		t.Errorf("the library applied events twice or out of order: %v", d.Applied.Violations)
	}
}

// waitWritten waits until the writers have committed n changes (or are
// done), so that something happens at a known point of their run.
func waitWritten(t *testing.T, written *atomic.Int64, n int64, done <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for written.Load() < n {
		select {
		case <-done:
			return
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("writers committed %d changes, waiting for %d", written.Load(), n)
		}
	}
}

// fastRetry makes the view retry at test speed; the backoff's shape is
// the library's own.
func fastRetry(opts map[string]any) map[string]any {
	opts["reconnectDelay"] = 100
	opts["maxReconnectDelay"] = 1000
	return opts
}

// TestClientLibraryResume (logical capture): the library loads 1,200 rows
// in pages, then writers run while its socket is cut and while rowcast is
// killed and restarted. The view ends equal to the table, and the library
// applied every event once, in order (ids strictly increasing, no reload:
// resumption alone covered both outages).
func TestClientLibraryResume(t *testing.T) {
	changes := envInt("ROWCAST_TEST_CLIENTLIB_CHANGES", 3000)
	db, s := startMode(t, "logical")
	env := []string{"ROWCAST_CAPTURE=logical", "ROWCAST_SLOT=" + slotName(db)}
	seedTickets(t, db, 1200)
	// fallbackAfter is high so that the restart is ridden out by
	// resumption, which is what this test checks; polling has its own.
	v := startView(t, s, map[string]any{"events": []string{"notification"}, "options": fastRetry(map[string]any{"fallbackAfter": 1000})})
	st := v.waitStatus(0, "live", 30*time.Second)
	d := v.waitConverged(db, "", false, 30*time.Second)
	if d.Applied.Snapshots != 1 || len(d.Rows) != 1200 {
		t.Fatalf("initial load: %d rows in %d loads", len(d.Rows), d.Applied.Snapshots)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var written atomic.Int64
	done := make(chan struct{})
	var total int64
	go func() {
		defer close(done)
		total = legacyWritersProgress(ctx, t, db, 3, changes, 0, &written)
	}()

	// The client's connection is cut; writers go on meanwhile.
	waitWritten(t, &written, int64(changes/3), done)
	v.send("kill-socket")
	st = v.waitStatus(st, "reconnecting", 30*time.Second)
	st = v.waitStatus(st, "live", 30*time.Second)

	// rowcast is killed; writers go on while it is down and restarting.
	waitWritten(t, &written, int64(2*changes/3), done)
	s.stop(syscall.SIGKILL)
	st = v.waitStatus(st, "reconnecting", 30*time.Second)
	// Whether or not the writers are still busy, these are written while
	// rowcast is down.
	whileDown := legacyWriters(ctx, t, db, 1, 300, 0)
	s = restartServer(t, s, db, env...)
	v.waitStatus(st, "live", 60*time.Second)
	<-done

	d = v.waitConverged(db, "", false, 60*time.Second)
	checkApplied(t, d)
	if d.Applied.Snapshots != 1 {
		t.Errorf("the view was loaded %d times; resuming should have needed no reload", d.Applied.Snapshots)
	}
	// One event per committed change, each applied once: no gap, no
	// duplicate, across the cut and the restart.
	if int64(d.Applied.IDs) != total+whileDown {
		t.Errorf("the library applied %d events; %d changes were committed", d.Applied.IDs, total+whileDown)
	}
	want := groupBy(t, db)
	deadline := time.Now().Add(10 * time.Second)
	for !reflect.DeepEqual(d.Stats, want) {
		if time.Now().After(deadline) {
			t.Fatalf("stats %v, table %v", d.Stats, want)
		}
		time.Sleep(100 * time.Millisecond)
		d = v.dump()
	}
	// Application events reach their listeners, once.
	exec1(t, db, `SELECT rowcast.broadcast('notification', '{"type": "success", "message": "Import finished"}')`)
	if l := v.next(30*time.Second, "event"); l.Name != "notification" || !strings.Contains(string(l.Data), "Import finished") || l.ID == "" {
		t.Errorf("notification: %+v", l)
	}
	t.Logf("%d writes committed (%d of them while rowcast was down); view holds %d rows equal to the table; %d events applied once each, in order; 1 socket cut, 1 rowcast restart (SIGKILL), 1 load",
		total+whileDown, whileDown, len(d.Rows), d.Applied.IDs)
}

// TestClientLibraryResync (notify capture): while writers run, the
// listener's connection is terminated, the table is truncated, and rowcast
// is restarted (notify keeps nothing meanwhile); each time clients get
// resync, and the library reloads and converges to the table.
func TestClientLibraryResync(t *testing.T) {
	changes := envInt("ROWCAST_TEST_CLIENTLIB_CHANGES", 3000)
	db, s := startMode(t, "notify")
	env := []string{"ROWCAST_CAPTURE=notify", "ROWCAST_SLOT=" + slotName(db)}
	seedTickets(t, db, 700)
	v := startView(t, s, map[string]any{"options": fastRetry(map[string]any{"fallbackAfter": 1000})})
	st := v.waitStatus(0, "live", 30*time.Second)
	v.waitConverged(db, "", false, 30*time.Second)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var written atomic.Int64
	done := make(chan struct{})
	var total int64
	go func() {
		defer close(done)
		total = legacyWritersProgress(ctx, t, db, 3, changes, 0, &written)
	}()
	loads := func() int { return v.dump().Applied.Snapshots }
	waitLoads := func(n int, what string) {
		deadline := time.Now().Add(30 * time.Second)
		for loads() < n {
			if time.Now().After(deadline) {
				t.Fatalf("no reload after %s (statuses %v)", what, v.seenStatuses())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	waitWritten(t, &written, int64(changes/4), done)
	conn := connectDB(t, db)
	var killed int
	if err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = 'rowcast listener'`).Scan(&killed); err != nil || killed != 1 {
		t.Fatalf("terminated %d listener sessions: %v", killed, err)
	}
	waitLoads(2, "the listener was terminated")

	waitWritten(t, &written, int64(changes/2), done)
	if _, err := conn.Exec(ctx, `TRUNCATE tickets`); err != nil {
		t.Fatal(err)
	}
	waitLoads(3, "TRUNCATE")

	waitWritten(t, &written, int64(3*changes/4), done)
	s.stop(syscall.SIGTERM)
	st = v.waitStatus(st, "reconnecting", 30*time.Second)
	whileDown := legacyWriters(ctx, t, db, 1, 300, 0) // lost to notify: the reload has them
	s = restartServer(t, s, db, env...)
	v.waitStatus(st, "live", 60*time.Second)
	waitLoads(4, "rowcast restarted")
	<-done

	d := v.waitConverged(db, "", false, 60*time.Second)
	checkApplied(t, d)
	t.Logf("%d writes committed (%d while rowcast was down); view holds %d rows equal to the table after %d loads (listener killed, TRUNCATE, restart)",
		total+whileDown, whileDown, len(d.Rows), d.Applied.Snapshots)
}

// TestClientLibraryFilter: a view of open and in-progress tickets, over
// WebSocket and SSE, while writers move tickets between statuses (rows
// enter and leave the filter); then subscribe switches it to closed ones.
func TestClientLibraryFilter(t *testing.T) {
	changes := envInt("ROWCAST_TEST_CLIENTLIB_CHANGES", 3000) / 2
	for _, c := range []struct{ name, transport, events string }{
		{"ws", "ws", "colon"},
		{"sse", "sse", "colon"},
		{"ws_ticket_update", "ws", "ticket_update"},
	} {
		transport := c.transport
		t.Run(c.name, func(t *testing.T) {
			db, s := startMode(t, "logical", "ROWCAST_EVENTS="+c.events)
			seedTickets(t, db, 900)
			v := startView(t, s, map[string]any{"options": fastRetry(map[string]any{
				"transport": transport, "filter": map[string]any{"status": []string{"open", "in_progress"}}, "pageSize": 100})})
			st := v.waitStatus(0, "live", 30*time.Second)
			const where = "status IN ('open', 'in_progress')"
			d := v.waitConverged(db, where, false, 30*time.Second)
			if len(d.Rows) != 450 {
				t.Fatalf("filtered load: %d rows, want 450", len(d.Rows))
			}

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var written atomic.Int64
			done := make(chan struct{})
			go func() {
				defer close(done)
				legacyWritersProgress(ctx, t, db, 3, changes, 0, &written)
			}()
			waitWritten(t, &written, int64(changes/2), done)
			v.send("kill-socket")
			v.waitStatus(st, "live", 30*time.Second)
			<-done
			d = v.waitConverged(db, where, false, 60*time.Second)
			checkApplied(t, d)
			// Rows the writers moved out of the filter (or inserted outside it).
			left := len(tableRows(t, db, "status IN ('resolved', 'closed') AND title LIKE 'v%'"))
			if left == 0 {
				t.Fatalf("no row changed status; the test proves nothing")
			}

			v.send(`subscribe {"status": "closed"}`)
			v.next(30*time.Second, "subscribed")
			exec1(t, db, `UPDATE tickets SET status = 'closed', title = 'closed later' WHERE id IN (SELECT id FROM tickets WHERE status = 'open' LIMIT 20)`)
			exec1(t, db, `UPDATE tickets SET status = 'open', title = 'opened later' WHERE id IN (SELECT id FROM tickets WHERE status = 'closed' LIMIT 10)`)
			d = v.waitConverged(db, "status = 'closed'", false, 30*time.Second)
			checkApplied(t, d)
			t.Logf("%s: %d writes; view of open/in_progress equal to the table, %d rows changed status; after subscribe, %d closed rows",
				c.name, changes, left, len(d.Rows))
		})
	}
}

// TestClientLibraryCompositeKey: a table whose primary key has two
// columns and whose events are named after it (line:created, lineId):
// the library takes both from /api/config, loads it in pages, keys rows by
// the JSON of their key values, and follows inserts, updates, deletes and
// rows leaving its filter.
func TestClientLibraryCompositeKey(t *testing.T) {
	db := newDatabase(t)
	exec1(t, db, `CREATE TABLE lines (region text, n int, note text, status text NOT NULL DEFAULT 'open',
		updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (region, n))`)
	exec1(t, db, `INSERT INTO lines (region, n, note, status)
		SELECT r, n, r || n, (ARRAY['open', 'closed'])[1 + n % 2] FROM unnest(ARRAY['north', 'South', 'east west']) r, generate_series(1, 400) n`)
	env := []string{"ROWCAST_CAPTURE=logical", "ROWCAST_SLOT=" + slotName(db), "ROWCAST_TABLE=public.lines",
		"ROWCAST_STATS_COLUMNS=status", "ROWCAST_FILTER_COLUMNS=status,region"}
	setup(t, db, env...)
	s := startServer(t, db, env...)
	v := startView(t, s, map[string]any{"options": fastRetry(map[string]any{"filter": map[string]any{"status": "open"}})})
	v.table, v.key = "lines", []string{"region", "n"}
	v.waitStatus(0, "live", 30*time.Second)
	d := v.waitConverged(db, "status = 'open'", false, 30*time.Second)
	if len(d.Rows) != 600 || len(d.Keys) != 600 {
		t.Fatalf("loaded %d rows, %d keys", len(d.Rows), len(d.Keys))
	}
	// Keys are the JSON of the key values: ["north",2].
	var key string
	var parts []any
	if json.Unmarshal([]byte(d.Keys[0]), &key) != nil || json.Unmarshal([]byte(key), &parts) != nil || len(parts) != 2 {
		t.Fatalf("composite key %s is not the JSON array of the key values", d.Keys[0])
	}
	for _, q := range []string{
		`UPDATE lines SET note = 'changed' WHERE n % 7 = 0`,
		`UPDATE lines SET status = 'closed' WHERE n % 5 = 0`, // leave the filter
		`UPDATE lines SET status = 'open' WHERE n % 9 = 0`,   // enter it
		`DELETE FROM lines WHERE n % 11 = 0`,
		`INSERT INTO lines (region, n, note) SELECT 'north', n, 'new' FROM generate_series(401, 450) n`,
	} {
		exec1(t, db, q)
	}
	d = v.waitConverged(db, "status = 'open'", false, 30*time.Second)
	checkApplied(t, d)
	t.Logf("composite key (region, n): view of %d open lines equal to the table after %d events", len(d.Rows), d.Applied.Events)
}

// TestClientLibraryPolling: the view polls when rowcast answers 503,
// first because live updates are off (ENABLE_LIVE_UPDATES=false), then
// because the connection limit is reached, and goes live again when
// streams come back; the rows follow the table throughout.
func TestClientLibraryPolling(t *testing.T) {
	db := newDatabase(t)
	env := []string{"ROWCAST_CAPTURE=logical", "ROWCAST_SLOT=" + slotName(db)}
	setup(t, db, env...)
	seedTickets(t, db, 300)
	s := startServer(t, db, env...)
	v := startView(t, s, map[string]any{"options": fastRetry(map[string]any{"pollInterval": 300, "fallbackAfter": 2})})
	st := v.waitStatus(0, "live", 30*time.Second)
	v.waitConverged(db, "", false, 30*time.Second)

	// Live updates turned off: rowcast restarts with streams answering 503.
	s.stop(syscall.SIGTERM)
	s = restartServer(t, s, db, append(env, "ENABLE_LIVE_UPDATES=false")...)
	st = v.waitStatus(st, "polling", 60*time.Second)
	if status, _ := httpGet(t, s.base+"/ws", nil); status != 503 {
		t.Fatalf("/ws answers %d with live updates off", status)
	}
	exec1(t, db, `INSERT INTO tickets (title) VALUES ('while polling')`)
	exec1(t, db, `UPDATE tickets SET title = 'polled update' WHERE id = 5`)
	exec1(t, db, `DELETE FROM tickets WHERE id = 6`)
	d := v.waitConverged(db, "", false, 30*time.Second)
	if d.Status != "polling" {
		t.Errorf("status %s while live updates are off", d.Status)
	}
	polls := d.Applied.Snapshots

	// Back on: the view goes live by itself.
	s.stop(syscall.SIGTERM)
	s = restartServer(t, s, db, append(env, "ROWCAST_MAX_CONNECTIONS=1")...)
	st = v.waitStatus(st, "live", 60*time.Second)
	exec1(t, db, `INSERT INTO tickets (title) VALUES ('live again')`)
	v.waitConverged(db, "", false, 30*time.Second)

	// The only connection slot is taken by another client: the view's
	// reconnections get 503 (too many connections), it polls, and it goes
	// live once the slot is free. The view and the other client race for
	// the slot its cut connection frees; the view is cut again until the
	// other client has it.
	auth := http.Header{"Authorization": {"Bearer " + token(t, nil)}}
	var other *websocket.Conn
	deadline := time.Now().Add(60 * time.Second)
	for other == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the other client never got the connection slot")
		}
		v.send("kill-socket")
		v.next(10*time.Second, "killed")
		for try := 0; try < 100 && other == nil; try++ {
			if c, _, err := dialRaw(s, "", auth); err == nil {
				other = c
			} else {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	st = v.waitStatus(st, "polling", 60*time.Second)
	exec1(t, db, `UPDATE tickets SET title = 'polled while refused' WHERE id = 7`)
	d = v.waitConverged(db, "", false, 30*time.Second)
	if d.Status != "polling" {
		t.Errorf("status %s while refused", d.Status)
	}
	if status, _ := httpGet(t, s.base+"/ws", auth); status != 503 {
		t.Errorf("/ws answers %d while the slot is taken, want 503", status)
	}
	other.Close()
	v.waitStatus(st, "live", 60*time.Second)
	exec1(t, db, `UPDATE tickets SET title = 'live once more' WHERE id = 8`)
	d = v.waitConverged(db, "", false, 30*time.Second)
	checkApplied(t, d)
	t.Logf("statuses %v; %d loads while polling", v.seenStatuses(), polls)
}

// TestClientLibraryReact: useRowcast renders the table's rows as writers
// change it (react-test-renderer runs the hook's effects, so the hook
// opens and closes its own view); react-dom/server renders the same rows
// from a loaded view.
func TestClientLibraryReact(t *testing.T) {
	changes := envInt("ROWCAST_TEST_CLIENTLIB_CHANGES", 3000) / 3
	db, s := startMode(t, "logical")
	seedTickets(t, db, 700)
	v := startView(t, s, map[string]any{"react": true, "options": fastRetry(map[string]any{})})
	v.waitStatus(0, "live", 30*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	legacyWriters(ctx, t, db, 2, changes, 0)
	d := v.waitConverged(db, "", true, 60*time.Second)
	if d.RenderedStatus != "live" {
		t.Errorf("rendered status %q", d.RenderedStatus)
	}
	v.send("ssr")
	ssr := v.next(30*time.Second, "ssr")
	if diff := diffRows(normRows(t, ssr.Rows), tableRows(t, db, "")); diff != "" {
		t.Errorf("renderToString: %s", diff)
	}
	v.send("exit")
	if l := v.next(30*time.Second, "exit"); l.Status != "closed" {
		t.Errorf("after unmount the hook's view is %q, want closed", l.Status)
	}
	t.Logf("the component rendered %d rows equal to the table after %d writes; renderToString rendered %d", len(d.Rendered), changes, len(ssr.Rows))
}

// TestClientLibraryUnit runs clientlib/unit.test.mjs (node --test): the
// library's rules one by one against a scripted server.
func TestClientLibraryUnit(t *testing.T) {
	node := clientlibNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "unit.test.mjs")
	cmd.Dir = clientlibDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test unit.test.mjs: %v\n%s", err, out)
	}
	t.Logf("node --test unit.test.mjs:\n%s", out)
}

// TestClientLibraryPackage: the package packs, its tarball installs in a
// scratch project without network, and it exports what its README says.
func TestClientLibraryPackage(t *testing.T) {
	node := clientlibNode(t)
	npm, _ := exec.LookPath("npm")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"name": "scratch", "private": true, "type": "module"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "install", "--offline", "--no-audit", "--no-fund", clientlibTarball)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm install %s: %v\n%s", filepath.Base(clientlibTarball), err, out)
	}
	for _, f := range []string{"package.json", "rowcast.js", "rowcast.d.ts", "rowcast-react.js", "rowcast-react.d.ts", "README.md"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "rowcast-client", f)); err != nil {
			t.Errorf("installed package lacks %s", f)
		}
	}
	installed, _ := os.ReadFile(filepath.Join(dir, "node_modules", "rowcast-client", "rowcast.js"))
	source, _ := os.ReadFile(filepath.Join(libraryDir, "rowcast.js"))
	if string(installed) != string(source) {
		t.Errorf("the installed rowcast.js differs from broadcast/web/client/rowcast.js")
	}
	script := `import * as lib from 'rowcast-client';
const pkg = (await import('rowcast-client/package.json', { with: { type: 'json' } })).default;
let err = '';
try { lib.connect({ url: 'http://127.0.0.1:1', transport: 'ws', WebSocket: undefined }); } catch (e) { err = e.message; }
console.log(JSON.stringify({ exports: Object.keys(lib).sort(), name: pkg.name, react: pkg.exports['./react'].default, err }));`
	cmd = exec.CommandContext(ctx, node, "--input-type=module", "-e", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("importing the installed package: %v\n%s", err, out)
	}
	var got struct {
		Exports []string `json:"exports"`
		Name    string   `json:"name"`
		React   string   `json:"react"`
		Err     string   `json:"err"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	for _, want := range []string{"View", "connect", "compareEventIds", "RowcastError", "STATUSES"} {
		if !contains(got.Exports, want) {
			t.Errorf("exports %v lack %s", got.Exports, want)
		}
	}
	if got.Name != "rowcast-client" || got.React != "./rowcast-react.js" || !strings.Contains(got.Err, "WebSocket") {
		t.Errorf("installed package: %+v", got)
	}
	t.Logf("%s installs offline into a scratch project; exports %v", filepath.Base(clientlibTarball), got.Exports)
}
