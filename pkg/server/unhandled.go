package server

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/interceptors"
)

// unhandled logs and counts the calls grpc-go would answer before any interceptor runs: a unary
// request it cannot decode (INTERNAL, "error unmarshalling request"), a method it does not know
// (UNIMPLEMENTED). The logging and metrics interceptors never see those, so without it a client
// could send garbage all day and leave no trace.
//
// It wraps the handler of every unary method registered (the generated handler decodes the
// request before it calls the interceptor chain, and returns the decoding error without calling
// it), and answers unknown methods itself: grpc-go hands them to the UnknownServiceHandler
// through the stream chain, whose outermost interceptor (gate) stops them. A stats handler,
// which sees every RPC, did this before issue 18, but any stats handler makes grpc-go build an
// event for every step of every call: 24 allocations and 1.7 KB a call.
type unhandled struct {
	log      *slog.Logger
	rejected *prometheus.CounterVec
	// known holds the full names of the methods served ("/pkg.Service/Method"), set by Serve.
	known atomic.Pointer[map[string]bool]
}

func newUnhandled(log *slog.Logger, reg prometheus.Registerer) (*unhandled, error) {
	u := &unhandled{log: log, rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "grpc_server_rejected_total",
		Help: "Calls answered before the interceptors ran (undecodable requests, unknown methods), by method and code.",
	}, []string{"grpc_service", "grpc_method", "grpc_code"})}
	if err := reg.Register(u.rejected); err != nil {
		return nil, err
	}
	return u, nil
}

// serving records the methods srv serves, once every service is registered.
func (u *unhandled) serving(srv *grpc.Server) {
	known := map[string]bool{}
	for name, info := range srv.GetServiceInfo() {
		for _, m := range info.Methods {
			known["/"+name+"/"+m.Name] = true
		}
	}
	u.known.Store(&known)
}

// wrap returns a copy of desc whose unary methods log and count a request they cannot decode.
func (u *unhandled) wrap(desc *grpc.ServiceDesc) *grpc.ServiceDesc {
	d := *desc
	d.Methods = slices.Clone(desc.Methods)
	for i, m := range d.Methods {
		method, handler := "/"+desc.ServiceName+"/"+m.MethodName, m.Handler
		d.Methods[i].Handler = func(srv any, ctx context.Context, dec func(any) error, chain grpc.UnaryServerInterceptor) (any, error) {
			start := time.Now()
			var decodeErr error
			resp, err := handler(srv, ctx, func(v any) error { decodeErr = dec(v); return decodeErr }, chain)
			if decodeErr != nil {
				u.reject(ctx, method, start, err)
			}
			return resp, err
		}
	}
	return &d
}

// unknownMethod is the server's UnknownServiceHandler: gate has logged and counted the call.
func unknownMethod(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	return unknownStatus(method)
}

// unknownStatus is grpc-go's own answer to a method it does not serve.
func unknownStatus(method string) error {
	service, name := splitMethod(method)
	return status.Error(codes.Unimplemented, fmt.Sprintf("unknown method %v for service %v", name, service))
}

// gate is the outermost interceptor of the chain: a call of a method the server does not serve
// (which grpc-go hands to unknownMethod as a stream) is answered UNIMPLEMENTED, logged and counted
// before anything else of the chain runs, as grpc-go would have answered it.
func (u *unhandled) gate() interceptors.Server {
	return interceptors.Server{
		Stream: func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if known := u.known.Load(); known != nil && !(*known)[info.FullMethod] {
				err := unknownStatus(info.FullMethod)
				u.reject(ss.Context(), info.FullMethod, time.Now(), err)
				return err
			}
			return handler(srv, ss)
		},
	}
}

// reject logs and counts a call of method, started at start, that the chain never saw.
func (u *unhandled) reject(ctx context.Context, method string, start time.Time, err error) {
	svc, name := splitMethod(method)
	st := status.Convert(err)
	u.rejected.WithLabelValues(svc, name, st.Code().String()).Inc()
	attrs := []any{"service", svc, "method", name, "code", st.Code().String(), "error", st.Message(),
		"duration_ms", time.Since(start).Milliseconds()}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, "peer", p.Addr.String())
	}
	// Warn, not Error: it is the client's request that was broken.
	u.log.Warn("call rejected before handling", attrs...)
}

// splitMethod splits "/pkg.Service/Method" into "pkg.Service" and "Method".
func splitMethod(full string) (string, string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}
