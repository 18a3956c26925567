// Package ui serves the storefront page: plain HTML, CSS and JavaScript modules embedded in the
// gateway's binary, so the page works on machines with no network beyond the gateway itself (no
// CDN, no build step). The page talks only to the REST API of the gateway that served it, with
// relative URLs, so it needs no CORS and its Content-Security-Policy can allow 'self' alone.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// ContentSecurityPolicy is the policy every response of Handler carries. Scripts, styles and
// fetches may only come from the gateway's own origin; nothing may frame the page, and forms may
// only post back to it. The page has no inline script or style, so none of 'unsafe-*' is needed.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// asset is one embedded file, read once: its bytes and a strong ETag of them, so a browser
// revalidates with If-None-Match and gets 304 instead of the body again.
type asset struct {
	name string
	body []byte
	etag string
}

// handler serves the embedded assets by their path under static/.
type handler struct {
	assets map[string]asset
}

// Handler returns the handler of the storefront: "/" is the page (index.html) and "/<file>" its
// other files. Only GET and HEAD are allowed (405 otherwise); a path with no file is 404. Every
// response carries ContentSecurityPolicy, X-Content-Type-Options: nosniff and Cache-Control:
// no-cache: the file names carry no content hash, so the browser must revalidate (cheaply, by
// ETag) to see a new gateway's page.
func Handler() http.Handler {
	h := &handler{assets: map[string]asset{}}
	// The embedded tree is fixed at build time and the test walks it, so an error here cannot
	// happen at run time; a missing file would only make its path 404.
	_ = fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		name := strings.TrimPrefix(p, "static/")
		h.assets["/"+name] = asset{name: name, body: body,
			etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`}
		return nil
	})
	h.assets["/"] = h.assets["/index.html"]
	return h
}

// ServeHTTP serves one asset.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", ContentSecurityPolicy)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	a, ok := h.assets[path.Clean("/"+r.URL.Path)]
	if !ok {
		http.Error(w, fmt.Sprintf("no such file: %s", r.URL.Path), http.StatusNotFound)
		return
	}
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("ETag", a.etag)
	// ServeContent sets Content-Type from the name's extension and answers If-None-Match and
	// Range requests; the zero time sends no Last-Modified, since embedded files have none.
	http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.body))
}
