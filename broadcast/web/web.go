// Package web serves the live helpdesk dashboard: a static page, script and
// stylesheet embedded in the binary, and the client library rowcast.js
// (client/, also an npm package) that the dashboard is built on and other
// dashboards may load from /rowcast.js. The page needs no build step and
// loads nothing from outside the server it came from.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// The library is served from the package's own directory, so that
// /rowcast.js and the npm package are the same file.
//
//go:embed client/rowcast.js
var client embed.FS

// contentTypes is consulted before the system MIME table, whose contents
// vary between machines.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".ico":  "image/x-icon",
	".json": "application/json",
	".png":  "image/png",
}

// libraryName is the client library's path: /rowcast.js.
const libraryName = "rowcast.js"

type file struct {
	body        []byte
	etag        string
	contentType string
}

// Handler serves the dashboard files: index.html at "/" and the other files
// by name. Responses carry Cache-Control: no-cache and an ETag, so a browser
// revalidates cheaply and picks up a new page after an upgrade.
func Handler() http.Handler {
	files := load()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
		if name == "" {
			name = "index.html"
		}
		f, ok := files[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", f.contentType)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", f.etag)
		h.Set("X-Content-Type-Options", "nosniff")
		if name == libraryName {
			// Dashboards on other origins import the library as a module
			// script, which browsers fetch with CORS and without
			// credentials; it is public code.
			h.Set("Access-Control-Allow-Origin", "*")
		}
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
	})
}

// load reads the embedded trees once. The files are fixed at build time,
// so a failure here is a build defect.
func load() map[string]file {
	files := make(map[string]file)
	add := func(fsys embed.FS, dir string) error {
		return fs.WalkDir(fsys, dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			body, err := fsys.ReadFile(p)
			if err != nil {
				return err
			}
			files[strings.TrimPrefix(p, dir+"/")] = newFile(p, body)
			return nil
		})
	}
	for _, tree := range []struct {
		fsys embed.FS
		dir  string
	}{{static, "static"}, {client, "client"}} {
		if err := add(tree.fsys, tree.dir); err != nil {
			panic("web: reading embedded files: " + err.Error())
		}
	}
	return files
}

func newFile(p string, body []byte) file {
	sum := sha256.Sum256(body)
	ext := strings.ToLower(path.Ext(p))
	ct, ok := contentTypes[ext]
	if !ok {
		ct = mime.TypeByExtension(ext)
	}
	if ct == "" {
		ct = "application/octet-stream"
	}
	return file{
		body:        body,
		etag:        `"` + hex.EncodeToString(sum[:8]) + `"`,
		contentType: ct,
	}
}
