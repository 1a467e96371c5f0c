package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"
)

// runHealthcheck implements "rowcast healthcheck": it asks a running
// "rowcast serve" for /healthz (or /readyz with --ready) and fails unless
// the answer is 200. It exists so that a container health check needs no
// shell, wget or curl in the image.
//
// It reads ROWCAST_LISTEN and its own flags only, not the serve settings:
// a health check must not fail because, say, DATABASE_URL is unset in the
// environment it runs in.
func runHealthcheck(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listenDef := os.Getenv("ROWCAST_LISTEN")
	if listenDef == "" {
		listenDef = ":8080"
	}
	listen := fs.String("listen", listenDef, "listen address of the rowcast to check; an unspecified host (:8080, 0.0.0.0:8080, [::]:8080) means 127.0.0.1 (env ROWCAST_LISTEN, default :8080)")
	ready := fs.Bool("ready", false, "check /readyz (200 only while capture is connected) instead of /healthz (200 while the process serves HTTP)")
	rawURL := fs.String("url", "", "full URL to GET instead, e.g. http://10.0.0.5:8080/readyz (overrides --listen and --ready)")
	timeout := fs.Duration("timeout", 2*time.Second, "how long to wait for the answer")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: rowcast healthcheck [--ready] [--listen addr | --url url] [--timeout d]\n\nExits 0 when the rowcast HTTP server answers 200, 1 otherwise.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("healthcheck: unexpected argument %q; see rowcast healthcheck --help", fs.Arg(0))
	}
	target := *rawURL
	if target == "" {
		path := "/healthz"
		if *ready {
			path = "/readyz"
		}
		base, err := healthcheckBase(*listen)
		if err != nil {
			return fmt.Errorf("healthcheck: %w", err)
		}
		target = base + path
	}
	return checkHealth(ctx, target, *timeout)
}

// healthcheckBase turns a listen address into the base URL to reach it
// from the same host (or container): an unspecified host becomes
// 127.0.0.1, since a server listening on every interface listens on the
// loopback one too.
func healthcheckBase(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("listen address %q: %w (want host:port or :port, as in ROWCAST_LISTEN; or pass --url)", listen, err)
	}
	if port == "" {
		return "", fmt.Errorf("listen address %q has no port (want host:port or :port, as in ROWCAST_LISTEN; or pass --url)", listen)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// checkHealth GETs target and returns nil when it answers 200.
func checkHealth(ctx context.Context, target string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w (pass an http:// URL to --url)", err)
	}
	client := &http.Client{
		// Straight to the server: no proxy from the environment, and a
		// redirect counts as an answer other than 200.
		Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if ue, ok := err.(*url.Error); ok {
		err = ue.Err // the URL is in the message already
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("healthcheck: GET %s: no answer within %v: %w (is rowcast overloaded or stuck?)", target, timeout, err)
		}
		return fmt.Errorf("healthcheck: GET %s: %w (is rowcast serve running there? set ROWCAST_LISTEN or --url to its address)", target, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: GET %s: %s", target, resp.Status)
	}
	return nil
}
