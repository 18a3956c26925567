package ui

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	t.Parallel()
	h := Handler()
	tests := []struct {
		name, method, path string
		wantStatus         int
		wantType           string // prefix of Content-Type
		wantBody           string // substring of the body
	}{
		{name: "index at root", method: "GET", path: "/", wantStatus: 200, wantType: "text/html; charset=utf-8", wantBody: `<script type="module" src="/app.js">`},
		{name: "index by name", method: "GET", path: "/index.html", wantStatus: 200, wantType: "text/html"},
		{name: "module", method: "GET", path: "/app.js", wantStatus: 200, wantType: "text/javascript; charset=utf-8", wantBody: "from './api.js'"},
		{name: "money module", method: "GET", path: "/money.js", wantStatus: 200, wantType: "text/javascript", wantBody: "export function format"},
		{name: "style", method: "GET", path: "/style.css", wantStatus: 200, wantType: "text/css; charset=utf-8"},
		{name: "icon", method: "GET", path: "/favicon.svg", wantStatus: 200, wantType: "image/svg+xml"},
		{name: "head", method: "HEAD", path: "/", wantStatus: 200, wantType: "text/html"},
		{name: "unknown asset", method: "GET", path: "/nope.js", wantStatus: 404, wantType: "text/plain"},
		{name: "no escape from the tree", method: "GET", path: "/../ui.go", wantStatus: 404},
		{name: "embedded dir name", method: "GET", path: "/static/index.html", wantStatus: 404},
		{name: "post", method: "POST", path: "/", wantStatus: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			res := rec.Result()
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d (body %q)", res.StatusCode, tt.wantStatus, rec.Body)
			}
			if got := res.Header.Get("Content-Type"); !strings.HasPrefix(got, tt.wantType) {
				t.Errorf("Content-Type %q, want prefix %q", got, tt.wantType)
			}
			if !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("body lacks %q", tt.wantBody)
			}
			// Error responses carry the security headers too: a 404 page must not be sniffed or
			// framed either.
			if got := res.Header.Get("Content-Security-Policy"); got != ContentSecurityPolicy {
				t.Errorf("Content-Security-Policy %q", got)
			}
			if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options %q, want nosniff", got)
			}
			if tt.wantStatus == 200 {
				if got := res.Header.Get("Cache-Control"); got != "no-cache" {
					t.Errorf("Cache-Control %q, want no-cache", got)
				}
				if res.Header.Get("ETag") == "" {
					t.Error("no ETag")
				}
			}
			if tt.wantStatus == 405 && res.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow %q", res.Header.Get("Allow"))
			}
		})
	}
}

// TestPolicyAllowsOnlySelf pins the CSP's script and connect sources: the page must run no
// script from elsewhere and call no API but its gateway's.
func TestPolicyAllowsOnlySelf(t *testing.T) {
	t.Parallel()
	directives := map[string]string{}
	for _, d := range strings.Split(ContentSecurityPolicy, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
		directives[name] = value
	}
	for name, want := range map[string]string{
		"default-src": "'none'", "script-src": "'self'", "connect-src": "'self'", "frame-ancestors": "'none'",
	} {
		if got := directives[name]; got != want {
			t.Errorf("%s %q, want %q", name, got, want)
		}
	}
}

// TestETagRevalidates checks that a browser holding the current page gets 304 and no body.
func TestETagRevalidates(t *testing.T) {
	t.Parallel()
	h := Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/app.js", nil))
	etag := rec.Result().Header.Get("ETag")

	req := httptest.NewRequest("GET", "/app.js", nil)
	req.Header.Set("If-None-Match", etag)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
		t.Errorf("revalidation: status %d, %d body bytes; want 304 and none", rec.Code, rec.Body.Len())
	}
}

// TestPageReferencesOnlyEmbeddedFiles checks that every file the page and its modules load by a
// root-relative path is embedded, and that nothing is loaded from another origin: the gateway
// runs on machines with no network.
func TestPageReferencesOnlyEmbeddedFiles(t *testing.T) {
	t.Parallel()
	h := Handler().(*handler)
	for name, a := range h.assets {
		body := string(a.body)
		if strings.Contains(body, "http://") || strings.Contains(body, "https://") {
			if !strings.HasSuffix(name, ".svg") { // the SVG namespace is a URL, not a load
				t.Errorf("%s names another origin", name)
			}
		}
		for _, attr := range []string{`src="`, `href="`, `from '`} {
			for _, part := range strings.Split(body, attr)[1:] {
				ref, _, _ := strings.Cut(part, string(attr[len(attr)-1]))
				ref = strings.TrimPrefix(ref, ".")
				if ref == "/openapi.json" { // served by the gateway, not by this package
					continue
				}
				if _, ok := h.assets[ref]; !ok {
					t.Errorf("%s loads %q, which is not embedded", name, ref)
				}
			}
		}
	}
	if _, err := fs.Stat(static, "static/index.html"); err != nil {
		t.Fatal(err)
	}
}
