package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// healthServer answers /healthz with healthz and /readyz with readyz.
func healthServer(t *testing.T, healthz, readyz int) (port string) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			w.WriteHeader(healthz)
		case "/readyz":
			w.WriteHeader(readyz)
		case "/moved":
			http.Redirect(w, r, "/readyz", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func runHC(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), append([]string{"healthcheck"}, args...), &stdout, &stderr)
	if stdout.Len() > 0 {
		t.Errorf("healthcheck wrote to stdout: %q", stdout.String())
	}
	return code, stderr.String()
}

func TestHealthcheckStatus(t *testing.T) {
	port := healthServer(t, http.StatusOK, http.StatusServiceUnavailable)
	t.Setenv("ROWCAST_LISTEN", ":"+port)

	if code, out := runHC(t); code != 0 || out != "" {
		t.Errorf("/healthz 200: exit %d, stderr %q; want 0 and nothing", code, out)
	}
	code, out := runHC(t, "--ready")
	if code != 1 {
		t.Errorf("/readyz 503: exit %d, want 1", code)
	}
	if !strings.Contains(out, "/readyz") || !strings.Contains(out, "503") || strings.Count(out, "\n") != 1 {
		t.Errorf("/readyz 503: stderr %q, want one line naming /readyz and 503", out)
	}
}

func TestHealthcheckURL(t *testing.T) {
	port := healthServer(t, http.StatusServiceUnavailable, http.StatusOK)
	// --url wins over ROWCAST_LISTEN, --listen and --ready.
	t.Setenv("ROWCAST_LISTEN", "127.0.0.1:1")
	if code, out := runHC(t, "--listen", "127.0.0.1:1", "--url", "http://127.0.0.1:"+port+"/readyz"); code != 0 {
		t.Errorf("--url to a 200: exit %d, stderr %q", code, out)
	}
	if code, _ := runHC(t, "--ready", "--url", "http://127.0.0.1:"+port+"/healthz"); code != 1 {
		t.Errorf("--url to a 503: exit %d, want 1", code)
	}
	// A redirect is not a 200, even to a page that answers 200.
	if code, _ := runHC(t, "--url", "http://127.0.0.1:"+port+"/moved"); code != 1 {
		t.Errorf("--url to a redirect: exit %d, want 1", code)
	}
}

func TestHealthcheckListenFlag(t *testing.T) {
	port := healthServer(t, http.StatusOK, http.StatusOK)
	t.Setenv("ROWCAST_LISTEN", "127.0.0.1:1")
	for _, listen := range []string{":" + port, "0.0.0.0:" + port, "127.0.0.1:" + port} {
		if code, out := runHC(t, "--listen", listen); code != 0 {
			t.Errorf("--listen %s: exit %d, stderr %q", listen, code, out)
		}
	}
}

func TestHealthcheckNothingListening(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	code, out := runHC(t, "--listen", addr)
	if code != 1 {
		t.Errorf("nothing listening: exit %d, want 1", code)
	}
	if !strings.Contains(out, addr) || strings.Count(out, "\n") != 1 {
		t.Errorf("nothing listening: stderr %q, want one line naming %s", out, addr)
	}
}

func TestHealthcheckBadArgs(t *testing.T) {
	for _, args := range [][]string{{"--listen", "8080"}, {"--listen", "localhost:"}, {"extra"}, {"--url", "::"}} {
		if code, out := runHC(t, args...); code != 1 || out == "" {
			t.Errorf("%q: exit %d, stderr %q; want 1 and a message", args, code, out)
		}
	}
	if code, _ := runHC(t, "--help"); code != 0 {
		t.Errorf("--help: exit %d, want 0", code)
	}
}

func TestHealthcheckBase(t *testing.T) {
	for _, tc := range []struct{ listen, want string }{
		{":8080", "http://127.0.0.1:8080"},
		{"0.0.0.0:8080", "http://127.0.0.1:8080"},
		{"[::]:8080", "http://127.0.0.1:8080"},
		{"127.0.0.1:9000", "http://127.0.0.1:9000"},
		{"10.1.2.3:8080", "http://10.1.2.3:8080"},
		{"localhost:8080", "http://localhost:8080"},
		{"[::1]:8080", "http://[::1]:8080"},
	} {
		got, err := healthcheckBase(tc.listen)
		if err != nil || got != tc.want {
			t.Errorf("healthcheckBase(%q) = %q, %v; want %q", tc.listen, got, err, tc.want)
		}
	}
}
