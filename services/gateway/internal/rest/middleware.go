package rest

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/interceptors"
)

// requestID gives every request an id: the client's X-Request-Id when the services would keep
// it, else a new UUID, forwarded to them (upstream.Headers) and answered in X-Request-Id, so
// that a client can quote it and one id names the request in every service's log.
//
// It also drops X-Forwarded-For and X-Forwarded-Host: the gateway is the edge, and grpc-gateway
// would forward a client's own values ahead of the address the gateway saw, which the services
// trust from the gateway (per-address limits, audit).
func requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !interceptors.ValidRequestID(id) {
			id = uuid.NewString()
		}
		r.Header.Set("X-Request-Id", id)
		r.Header.Del("X-Forwarded-For")
		r.Header.Del("X-Forwarded-Host")
		w.Header().Set("X-Request-Id", id)
		if isEventStream(r) {
			// No cache or proxy may hold events back.
			w.Header().Set("Cache-Control", "no-cache")
		}
		next.ServeHTTP(w, r.WithContext(interceptors.WithRequestID(r.Context(), id)))
	})
}

// recoverPanics answers a panicking handler with a JSON 500 and logs the panic, rather than
// letting net/http cut the connection. http.ErrAbortHandler, net/http's way to abort a response
// on purpose, is left to net/http.
func recoverPanics(next http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			p := recover()
			if p == nil {
				return
			}
			if p == http.ErrAbortHandler {
				panic(p)
			}
			log.ErrorContext(r.Context(), "panic serving HTTP", "method", r.Method, "path", r.URL.Path,
				"request_id", interceptors.RequestIDFromContext(r.Context()), "panic", fmt.Sprint(p))
			// If the handler already wrote its header, this write is ignored by net/http and the
			// client sees a truncated answer; nothing better is possible then.
			writeStatus(w, http.StatusInternalServerError, status.New(codes.Internal, "internal error"))
		}()
		next.ServeHTTP(w, r)
	})
}

// limitBody refuses a body declared larger than max with 413 before anything reads it, and
// bounds what is read of an undeclared (chunked) one.
func limitBody(next http.Handler, max int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			writeStatus(w, http.StatusRequestEntityTooLarge,
				status.Newf(codes.ResourceExhausted, "request body larger than %d bytes", max))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, max)
		next.ServeHTTP(w, r)
	})
}
