package server

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/interceptors"
)

// unhandled logs and counts the calls grpc-go answers before any interceptor runs: a unary
// request it cannot decode (INTERNAL, "error unmarshalling request"), a method it does not know
// (UNIMPLEMENTED). The logging and metrics interceptors never see those, so without it a client
// could send garbage all day and leave no trace. It is a stats handler, the one hook grpc-go calls
// for every RPC, with an interceptor (outermost in the chain) that marks the calls the chain saw.
type unhandled struct {
	log      *slog.Logger
	rejected *prometheus.CounterVec
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

type seenKey struct{}

// call is what the stats handler keeps of one RPC.
type call struct {
	method string // /pkg.Service/Method
	seen   atomic.Bool
}

// mark is the interceptor that tells the stats handler the chain saw the call.
func (u *unhandled) mark() interceptors.Server {
	set := func(ctx context.Context) {
		if c, ok := ctx.Value(seenKey{}).(*call); ok {
			c.seen.Store(true)
		}
	}
	return interceptors.Server{
		Unary: func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			set(ctx)
			return handler(ctx, req)
		},
		Stream: func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			set(ss.Context())
			return handler(srv, ss)
		},
	}
}

// TagRPC implements stats.Handler.
func (u *unhandled) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, seenKey{}, &call{method: info.FullMethodName})
}

// HandleRPC implements stats.Handler: at the end of a call the chain never saw, one log line and
// one count.
func (u *unhandled) HandleRPC(ctx context.Context, s stats.RPCStats) {
	end, ok := s.(*stats.End)
	if !ok || end.IsClient() {
		return
	}
	c, ok := ctx.Value(seenKey{}).(*call)
	if !ok || c.seen.Load() {
		return
	}
	svc, method := splitMethod(c.method)
	st := status.Convert(end.Error)
	u.rejected.WithLabelValues(svc, method, st.Code().String()).Inc()
	attrs := []any{"service", svc, "method", method, "code", st.Code().String(), "error", st.Message(),
		"duration_ms", end.EndTime.Sub(end.BeginTime).Milliseconds()}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, "peer", p.Addr.String())
	}
	// Warn, not Error: it is the client's request that was broken.
	u.log.Warn("call rejected before handling", attrs...)
}

// TagConn implements stats.Handler.
func (u *unhandled) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

// HandleConn implements stats.Handler.
func (u *unhandled) HandleConn(context.Context, stats.ConnStats) {}

// splitMethod splits "/pkg.Service/Method" into "pkg.Service" and "Method".
func splitMethod(full string) (string, string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}
