// Package rest is the gateway's HTTP edge: grpc-gateway's REST transcoding of every
// google.api.http binding of the user, order and payment contracts, behind the middleware a
// browser-facing edge needs (request ids, trace context, CORS, a body limit, panic recovery),
// with every error answered as a JSON google.rpc.Status, server streams as newline-delimited
// JSON or Server-Sent Events, and the OpenAPI document at /openapi.json.
//
// The gateway verifies no access token itself: it forwards the Authorization header, and the
// services, which own the policies, decide.
package rest

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"google.golang.org/grpc"

	"github.com/meshmart/meshmart/pkg/observability"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/services/gateway/internal/openapi"
	"github.com/meshmart/meshmart/services/gateway/internal/upstream"
)

// Conns are the connections to the services the gateway forwards to; each is required. The
// order connection serves both OrderService and CatalogService.
type Conns struct {
	User    grpc.ClientConnInterface
	Order   grpc.ClientConnInterface
	Payment grpc.ClientConnInterface
}

// OpenAPIPath is where the OpenAPI document is served.
const OpenAPIPath = "/openapi.json"

// Gateway is the gateway's HTTP handler: /v1/... REST and /openapi.json, and whatever else is
// added with Handle, all behind the same middleware. A path nothing handles is answered with a
// JSON 404.
type Gateway struct {
	mux     *http.ServeMux
	handler http.Handler
}

// New builds the gateway's handler over conns. It returns an error for a missing connection or
// a bad option (an origin that is no origin, or "*").
func New(ctx context.Context, conns Conns, log *slog.Logger, opts ...Option) (*Gateway, error) {
	if conns.User == nil || conns.Order == nil || conns.Payment == nil {
		return nil, errors.New("rest: a connection to each of the user, order and payment services is required")
	}
	cfg := defaultConfig()
	for _, o := range opts {
		o.apply(&cfg)
	}
	corsHandler, err := newCORS(cfg.origins)
	if err != nil {
		return nil, err
	}
	gw := runtime.NewServeMux(
		runtime.WithIncomingHeaderMatcher(incomingHeader),
		// The request id goes back to the client from the middleware, for every answer, routing
		// errors included; nothing a service puts in its headers or trailers is exposed.
		runtime.WithOutgoingHeaderMatcher(dropHeader),
		runtime.WithOutgoingTrailerMatcher(dropHeader),
		runtime.WithErrorHandler(errorHandler(log)),
		runtime.WithRoutingErrorHandler(routingErrorHandler),
		runtime.WithMarshalerOption(EventStreamType, newEventStream()),
	)
	regs := []struct {
		name string
		reg  func() error
	}{
		{"UserService", func() error {
			return userv1.RegisterUserServiceHandlerClient(ctx, gw, userv1.NewUserServiceClient(conns.User))
		}},
		{"OrderService", func() error {
			return orderv1.RegisterOrderServiceHandlerClient(ctx, gw, orderv1.NewOrderServiceClient(conns.Order))
		}},
		{"CatalogService", func() error {
			return orderv1.RegisterCatalogServiceHandlerClient(ctx, gw, orderv1.NewCatalogServiceClient(conns.Order))
		}},
		{"PaymentService", func() error {
			return paymentv1.RegisterPaymentServiceHandlerClient(ctx, gw, paymentv1.NewPaymentServiceClient(conns.Payment))
		}},
	}
	for _, r := range regs {
		if err := r.reg(); err != nil {
			return nil, errors.New("rest: register " + r.name + ": " + err.Error())
		}
	}

	g := &Gateway{mux: http.NewServeMux()}
	g.mux.Handle("/v1/", gw)
	g.mux.HandleFunc(OpenAPIPath, serveOpenAPI)

	// Outermost first: the span covers everything; the request id is set before anything can
	// answer, so that every answer (a recovered panic's, a refused preflight's) carries it.
	var h http.Handler = http.HandlerFunc(g.route)
	h = limitBody(h, cfg.maxBody)
	h = corsHandler.Handler(h)
	h = recoverPanics(h, log)
	h = requestID(h)
	h = otelhttp.NewHandler(h, "gateway",
		otelhttp.WithTracerProvider(cfg.tracer),
		otelhttp.WithPropagators(observability.Propagator()),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return "HTTP " + r.Method }),
	)
	g.handler = h
	return g, nil
}

// Handle serves pattern (an http.ServeMux pattern) with h behind the gateway's middleware: the
// storefront page at "/" and the gRPC-Web and Connect handlers at the services' gRPC paths are
// added this way. Call it before serving; it panics on a pattern that conflicts with one
// already registered (/v1/, /openapi.json), as http.ServeMux does.
func (g *Gateway) Handle(pattern string, h http.Handler) { g.mux.Handle(pattern, h) }

// ServeHTTP implements http.Handler.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.handler.ServeHTTP(w, r) }

// route dispatches r through the mux, answering a path no pattern matches with a JSON 404
// rather than the mux's text one.
func (g *Gateway) route(w http.ResponseWriter, r *http.Request) {
	h, pattern := g.mux.Handler(r)
	if pattern == "" {
		routingErrorHandler(r.Context(), nil, nil, w, r, http.StatusNotFound)
		return
	}
	h.ServeHTTP(w, r)
}

// serveOpenAPI answers GET and HEAD with the OpenAPI document.
func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		routingErrorHandler(r.Context(), nil, nil, w, r, http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if r.Method == http.MethodGet {
		_, _ = w.Write(openapi.Document)
	}
}

// incomingHeader is the allow-list of HTTP headers forwarded as gRPC metadata: upstream.Headers
// and nothing else, no Grpc-Metadata-* passthrough. Authorization is left to grpc-gateway, which
// forwards it unconditionally; matching it too would send it twice. The trace context the chassis
// client's own propagation then sets to the gateway's span.
func incomingHeader(key string) (string, bool) {
	md := strings.ToLower(key)
	if md == "authorization" || !slices.Contains(upstream.Headers, md) {
		return "", false
	}
	return md, true
}

// dropHeader forwards no service metadata to the client.
func dropHeader(string) (string, bool) { return "", false }

// isEventStream reports whether r asks for Server-Sent Events.
func isEventStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		if strings.EqualFold(strings.TrimSpace(v), EventStreamType) {
			return true
		}
	}
	return false
}
