package rest

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/rs/cors"
)

// corsMaxAge is how long a browser may cache a preflight's answer, in seconds; Chromium caps it
// at two hours, and ten minutes keeps a changed policy from lingering.
const corsMaxAge = 600

// newCORS builds the CORS policy: cross-origin requests from origins and from the gateway's own
// origin; the headers the REST, gRPC-Web and Connect clients send, and the ones they must read.
// Credentials (cookies) are never allowed: the API takes bearer tokens in Authorization, which
// a page sends itself, so no origin gets a browser's ambient credentials.
func newCORS(origins []string) (*cors.Cors, error) {
	allowed := make(map[string]bool, len(origins))
	for _, o := range origins {
		norm, err := checkOrigin(o)
		if err != nil {
			return nil, err
		}
		allowed[norm] = true
	}
	return cors.New(cors.Options{
		AllowOriginVaryRequestFunc: func(r *http.Request, origin string) (bool, []string) {
			return allowed[strings.ToLower(origin)] || ownOrigin(r, origin), nil
		},
		AllowedMethods: []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete},
		AllowedHeaders: []string{"Authorization", "Content-Type", "X-Request-Id", "Connect-Protocol-Version",
			"Connect-Timeout-Ms", "Grpc-Timeout", "X-Grpc-Web", "X-User-Agent"},
		ExposedHeaders:   []string{"Grpc-Status", "Grpc-Message", "Grpc-Status-Details-Bin", "X-Request-Id"},
		MaxAge:           corsMaxAge,
		AllowCredentials: false,
	}), nil
}

// checkOrigin reports an allowed origin that is not scheme://host[:port], which a browser never
// sends and so is a configuration mistake, and "*": origins are listed one by one. It returns the
// origin lowercased, as browsers send it.
func checkOrigin(o string) (string, error) {
	if o == "*" {
		return "", fmt.Errorf("rest: CORS origin %q: list the allowed origins instead", o)
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
		return "", fmt.Errorf("rest: CORS origin %q is not scheme://host[:port]", o)
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// ownOrigin reports whether origin is the gateway's own, as the request reached it: the page the
// gateway serves calls its API from there.
func ownOrigin(r *http.Request, origin string) bool {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return r.Host != "" && strings.EqualFold(origin, scheme+"://"+r.Host)
}
