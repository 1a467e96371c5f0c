package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"rowcast/integration/pgcluster"
)

// browserDir holds dashboard.mjs, the headless-browser check.
const browserDir = "browser"

// TestBrowser drives the dashboard in headless Chromium (through
// browser/dashboard.mjs) against "rowcast demo" on a test database: with
// auth and the demo login, two pages must show an insert, update and
// delete made with psql within 2 s; with live updates off, a page must
// poll. Screenshots go to integration/artifacts/.
func TestBrowser(t *testing.T) {
	node, chromium := browserTools(t)
	psql := psqlBinary(t)
	installNodeModules(t)

	for _, mode := range []string{"live", "polling"} {
		t.Run(mode, func(t *testing.T) {
			db := newDatabase(t)
			env := []string{"DATABASE_URL=" + db, "ROWCAST_SLOT=" + slotName(db)}
			setup(t, db, env...)
			query := ""
			if mode == "polling" {
				env = append(env, "ENABLE_LIVE_UPDATES=false")
				query = "?poll=1000"
			}
			d := startDemo(t, env, "--listen", "127.0.0.1:0", "--writer-rate", "0")
			shot, err := filepath.Abs(filepath.Join("artifacts", "dashboard-"+mode+".png"))
			if err != nil {
				t.Fatal(err)
			}
			psqlArg, _ := json.Marshal([]string{psql, db})

			ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, node, "dashboard.mjs",
				"--url", d.base+"/"+query, "--psql", string(psqlArg), "--screenshot", shot, "--mode", mode)
			cmd.Dir = browserDir
			cmd.Env = append(os.Environ(), "CHROMIUM_PATH="+chromium)
			cmd.WaitDelay = 5 * time.Second
			begin := time.Now()
			out, err := cmd.CombinedOutput()
			t.Logf("node dashboard.mjs --mode %s (%v):\n%s", mode, time.Since(begin).Round(time.Millisecond), out)
			if ctx.Err() != nil {
				t.Fatalf("dashboard.mjs did not finish within 45s")
			}
			if err != nil {
				t.Fatalf("dashboard.mjs --mode %s failed: %v", mode, err)
			}
			if _, err := os.Stat(shot); err != nil {
				t.Errorf("no screenshot: %v", err)
			} else {
				t.Logf("screenshot: %s", shot)
			}
			if inTime, err := d.stop(15 * time.Second); !inTime || err != nil {
				t.Errorf("rowcast demo after SIGINT: exited in time %v, %v", inTime, err)
			}
		})
	}
}

// browserTools returns node and Chromium, or skips the test when either is
// missing (CI installs both).
func browserTools(t *testing.T) (node, chromium string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("browser test skipped: node not found on PATH (install Node.js >= 20, e.g. apt-get install nodejs)")
	}
	chromium = os.Getenv("CHROMIUM_PATH")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if fi, err := os.Stat(chromium); err != nil || fi.IsDir() {
		t.Skipf("browser test skipped: Chromium not found at %s (install it, e.g. apt-get install chromium, or set CHROMIUM_PATH)", chromium)
	}
	return node, chromium
}

// psqlBinary finds psql: next to the server binaries, else on PATH.
func psqlBinary(t *testing.T) string {
	t.Helper()
	if dir, err := pgcluster.FindBinDir(); err == nil {
		p := filepath.Join(dir, "psql")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("psql")
	if err != nil {
		t.Fatal("psql not found next to the PostgreSQL server binaries nor on PATH (install postgresql-client)")
	}
	return p
}

// installNodeModules runs "npm ci" in browser/ when its node_modules is
// missing.
func installNodeModules(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(browserDir, "node_modules", "playwright-core", "package.json")); err == nil {
		return
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatalf("%s/node_modules is missing and npm is not on PATH: install npm, or run npm ci in integration/browser", browserDir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = browserDir
	begin := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", browserDir, err, out)
	}
	t.Logf("npm ci in %s took %v: %s", browserDir, time.Since(begin).Round(time.Millisecond), strings.TrimSpace(string(out)))
}
