package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

	"rowcast/integration/pgcluster"
	rsql "rowcast/sql"
)

// maxImageSize is the most the image may weigh, as podman reports it.
const maxImageSize = 25_000_000

// imageUID is the user the image runs as (build/rootfs/etc/passwd).
const imageUID = 65532

// podmanCmd runs podman with the runc runtime (crun fails on some cgroup
// setups; .ci/run configures runc too) and returns its stdout.
func podmanCmd(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "podman", append([]string{"--runtime", "runc"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("podman %s: %w\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return strings.TrimSpace(stdout.String()), nil
}

func podman(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := podmanCmd(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestImage builds the container image the way CI and "make image" do
// (build/image.sh) and runs it against a throwaway PostgreSQL: non-root,
// ready, an INSERT reaches a WebSocket client, the health check command
// works without a shell, SIGTERM stops it with status 0, and the image
// stays small.
func TestImage(t *testing.T) {
	if _, err := exec.LookPath("podman"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("podman not found, and CI must build and run the image: .ci/run installs podman and runc")
		}
		t.Skip("container image test skipped: podman not found (install podman and runc, e.g. apt-get install podman runc; see .ci/run for the containers.conf settings)")
	}
	if _, err := pgcluster.FindBinDir(); err != nil {
		t.Fatalf("the image test starts its own PostgreSQL: %v", err)
	}
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	image := "localhost/rowcast-test:" + suffix
	version := "imagetest-" + suffix

	// Build: the same script as "make image".
	begin := time.Now()
	build := exec.Command("build/image.sh", image)
	build.Dir = ".."
	build.Env = append(os.Environ(), "VERSION="+version)
	out, err := build.CombinedOutput()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := podmanCmd(ctx, "image", "rm", "--force", image); err != nil {
			t.Logf("removing the test image: %v", err)
		}
	})
	if err != nil {
		t.Fatalf("build/image.sh: %v\n%s", err, out)
	}
	t.Logf("image built in %v", time.Since(begin).Round(time.Second))

	// The image as built.
	var imgs []struct {
		Size        int64
		Healthcheck *struct{ Test []string }
		Config      struct {
			User         string
			Entrypoint   []string
			Cmd          []string
			StopSignal   string
			ExposedPorts map[string]any
			Labels       map[string]string
		}
	}
	if err := json.Unmarshal([]byte(podman(t, "image", "inspect", image)), &imgs); err != nil || len(imgs) != 1 {
		t.Fatalf("podman image inspect: %v (%d images)", err, len(imgs))
	}
	img := imgs[0]
	t.Logf("image size: %d bytes (%.1f MB)", img.Size, float64(img.Size)/1e6)
	if img.Size > maxImageSize {
		t.Errorf("image is %d bytes, more than %d", img.Size, maxImageSize)
	}
	cfg := img.Config
	if cfg.User != fmt.Sprintf("%d:%d", imageUID, imageUID) {
		t.Errorf("image user %q, want %d:%d", cfg.User, imageUID, imageUID)
	}
	if !slices.Equal(cfg.Entrypoint, []string{"/rowcast"}) || !slices.Equal(cfg.Cmd, []string{"serve"}) {
		t.Errorf("entrypoint %q, cmd %q; want [/rowcast] [serve]", cfg.Entrypoint, cfg.Cmd)
	}
	if cfg.StopSignal != "SIGTERM" {
		t.Errorf("stop signal %q, want SIGTERM", cfg.StopSignal)
	}
	if _, ok := cfg.ExposedPorts["8080/tcp"]; !ok {
		t.Errorf("exposed ports %v, want 8080/tcp", cfg.ExposedPorts)
	}
	if hc := img.Healthcheck; hc == nil || !slices.Equal(hc.Test, []string{"CMD", "/rowcast", "healthcheck"}) {
		t.Errorf("health check %+v, want exec form CMD /rowcast healthcheck", hc)
	}
	if v := cfg.Labels["org.opencontainers.image.version"]; v != version {
		t.Errorf("version label %q, want %q", v, version)
	}
	// --health-interval disable: podman would run the check from a systemd
	// timer; the test runs it itself below.
	run := []string{"run", "--rm", "--network", "host", "--health-interval", "disable"}
	if got := podman(t, append(run, image, "version")...); got != "rowcast "+version {
		t.Errorf("rowcast version in the image: %q, want %q", got, "rowcast "+version)
	}

	// PostgreSQL on a loopback TCP port, reached from the container through
	// the host network.
	pgPort := freePort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{TCPPort: pgPort})
	if err != nil {
		t.Fatalf("starting PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		if err := cluster.Close(); err != nil {
			t.Errorf("stopping PostgreSQL: %v", err)
		}
	})
	if _, err := cluster.CreateDatabase(ctx, "helpdesk"); err != nil {
		t.Fatal(err)
	}
	dbURL := cluster.TCPURL("helpdesk")
	db, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connecting over TCP: %v", err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })
	if _, err := db.Exec(ctx, rsql.Tickets); err != nil {
		t.Fatalf("creating the tickets table: %v", err)
	}
	// rowcast setup from the image, as compose.yaml runs it.
	podman(t, append(run, "-e", "DATABASE_URL="+dbURL, image, "setup")...)

	// rowcast serve in the container.
	const secret = "image-test-secret"
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	name := "rowcast-test-" + suffix
	begin = time.Now()
	podman(t, "run", "--detach", "--name", name, "--network", "host", "--health-interval", "disable",
		"-e", "DATABASE_URL="+dbURL, "-e", "ROWCAST_LISTEN="+addr, "-e", "JWT_SECRET="+secret, image)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if t.Failed() {
			// rowcast logs to stderr, which podman logs writes to its own.
			logs, _ := exec.CommandContext(ctx, "podman", "logs", name).CombinedOutput()
			t.Logf("container log:\n%s", logs)
		}
		if _, err := podmanCmd(ctx, "rm", "--force", "--time", "0", name); err != nil {
			t.Logf("removing the container: %v", err)
		}
	})
	waitContainerReady(t, name, "http://"+addr+"/readyz")
	t.Logf("start to ready (podman run to /readyz 200): %v", time.Since(begin).Round(time.Millisecond))

	// Non-root: the configured user, and the uid the process really has.
	if u := podman(t, "container", "inspect", "--format", "{{.Config.User}}", name); u != fmt.Sprintf("%d:%d", imageUID, imageUID) {
		t.Errorf("container user %q, want %d:%d", u, imageUID, imageUID)
	}
	pid := podman(t, "container", "inspect", "--format", "{{.State.Pid}}", name)
	if uids := procUIDs(t, pid); !slices.Equal(uids, []string{strconv.Itoa(imageUID)}) {
		t.Errorf("rowcast process (pid %s) runs with uids %v, want %d only", pid, uids, imageUID)
	} else {
		t.Logf("rowcast runs as uid %v", uids)
	}

	// The image's health check, run the way the engine runs it: an exec of
	// /rowcast healthcheck inside the container.
	if _, err := podmanCmdTimeout("healthcheck", "run", name); err != nil {
		t.Errorf("health check on a ready container: %v", err)
	}
	// And it fails where nothing answers (exit status 1, one line).
	if out, err := exec.Command("podman", "--runtime", "runc", "exec", name, "/rowcast", "healthcheck", "--ready", "--listen", "127.0.0.1:1").CombinedOutput(); err == nil {
		t.Errorf("health check against a closed port succeeded: %s", out)
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("health check against a closed port: %v, want exit status 1\n%s", err, out)
	} else {
		t.Logf("health check against a closed port: %s", bytes.TrimSpace(out))
	}

	// An INSERT reaches a WebSocket client as ticket:created.
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "u1", "email": "agent@example.com", "role": "agent", "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	dialer := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, resp, err := dialer.Dial("ws://"+addr+"/ws", http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial /ws: %v (HTTP %d)", err, status)
	}
	t.Cleanup(func() { ws.Close() })
	// The first stats:updated means the session is subscribed.
	readEvent(t, ws, "stats:updated")
	insertCtx, cancelInsert := context.WithTimeout(context.Background(), time.Minute)
	defer cancelInsert()
	if _, err := db.Exec(insertCtx, `INSERT INTO tickets (title, status, priority) VALUES ('Container smoke test', 'open', 'high')`); err != nil {
		t.Fatal(err)
	}
	created := readEvent(t, ws, "ticket:created")
	if !strings.Contains(string(created), `"title":"Container smoke test"`) {
		t.Errorf("ticket:created data %s, want the inserted ticket", created)
	}

	// SIGTERM (the image's stop signal) stops it cleanly within the grace
	// period: podman would send SIGKILL after 30s, and exit status 137.
	begin = time.Now()
	podman(t, "stop", "--time", "30", name)
	stopped := time.Since(begin)
	state := podman(t, "container", "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name)
	t.Logf("stopped in %v: %s", stopped.Round(time.Millisecond), state)
	if state != "exited 0" {
		t.Errorf("after podman stop: state %q, want exited with status 0", state)
	}
}

// podmanCmdTimeout runs podman with a minute's timeout.
func podmanCmdTimeout(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return podmanCmd(ctx, args...)
}

// waitContainerReady polls url until it answers 200, failing if the
// container stops first.
func waitContainerReady(t *testing.T, name, url string) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(2 * time.Minute)
	for i := 0; ; i++ {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("rowcast in the container not ready after 2 minutes (last: %v)", err)
		}
		if i%20 == 19 {
			if st, _ := podmanCmdTimeout("container", "inspect", "--format", "{{.State.Status}}", name); st != "running" {
				t.Fatalf("container is %q before it became ready", st)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// procUIDs returns the real, effective, saved and filesystem uids of a
// process, deduplicated.
func procUIDs(t *testing.T, pid string) []string {
	t.Helper()
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		t.Fatalf("reading the container's process: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Uid:"); ok {
			uids := strings.Fields(rest)
			slices.Sort(uids)
			return slices.Compact(uids)
		}
	}
	t.Fatalf("no Uid line in /proc/%s/status", pid)
	return nil
}

// readEvent reads /ws frames until one named event arrives and returns its
// data.
func readEvent(t *testing.T, ws *websocket.Conn, event string) json.RawMessage {
	t.Helper()
	if err := ws.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for %s on /ws: %v", event, err)
		}
		var m struct {
			Event string          `json:"event"`
			Data  json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("bad frame %q: %v", data, err)
		}
		if m.Event == event {
			return m.Data
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestImageDefinitionsAgree: the Dockerfile's final stage and
// build/Containerfile (the one CI builds) describe the same image: the
// same instructions after FROM scratch, apart from where COPY takes the
// root file system from.
func TestImageDefinitionsAgree(t *testing.T) {
	final := func(path string) []string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		// Join continuation lines, drop comments and blank lines.
		text := regexp.MustCompile(`\\\n\s*`).ReplaceAllString(string(b), " ")
		var out []string
		for _, line := range strings.Split(text, "\n") {
			line = strings.Join(strings.Fields(line), " ")
			switch {
			case line == "" || strings.HasPrefix(line, "#"):
			case strings.HasPrefix(strings.ToUpper(line), "FROM "):
				out = []string{line}
			case strings.HasPrefix(strings.ToUpper(line), "COPY "):
				out = append(out, "COPY")
			default:
				out = append(out, line)
			}
		}
		return out
	}
	docker, container := final("../Dockerfile"), final("../build/Containerfile")
	if len(docker) == 0 || docker[0] != "FROM scratch" {
		t.Fatalf("Dockerfile's final stage starts %q, want FROM scratch", docker)
	}
	if !slices.Equal(docker, container) {
		t.Errorf("the final stages differ:\nDockerfile:\n  %s\nbuild/Containerfile:\n  %s",
			strings.Join(docker, "\n  "), strings.Join(container, "\n  "))
	}
}
