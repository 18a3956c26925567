package interceptors

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// addressLimitLogEvery is how often, at most, AddressRateLimit logs the calls it refused.
const addressLimitLogEvery = 10 * time.Second

// AddressRateLimit allows each client address rps calls per second with bursts of burst, and
// fails the rest with ResourceExhausted and a RetryInfo saying when the next call would pass. addr
// names a call's address: ClientAddress, which is the connection's peer (PeerAddress) except for
// calls a trusted forwarder makes for a client, so that the browsers behind the gateway are
// limited one by one. Streams count once, when they open.
//
// It is meant to run first, before the logging interceptor and before any token is looked at,
// so that a flood of calls (bad tokens, logins) costs neither a signature check nor a log line
// each: a refused call is counted in refused (when not nil) and logged at most once every
// addressLimitLogEvery, as one Warn line with the number refused since the last one.
//
// go-grpc-middleware's ratelimit interceptor cannot attach a RetryInfo, hence the two small
// functions below around the keyed limiter RateLimit also uses.
func AddressRateLimit(rps float64, burst int, addr func(ctx context.Context) string, log *slog.Logger, refused prometheus.Counter) Server {
	a := &addressLimiter{limiter: newKeyedLimiter(rps, burst, addr), log: log, refused: refused}
	return Server{
		Unary: func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := a.check(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		},
		Stream: func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if err := a.check(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return handler(srv, ss)
		},
	}
}

type addressLimiter struct {
	limiter *keyedLimiter
	log     *slog.Logger
	refused prometheus.Counter

	mu      sync.Mutex
	count   int // refused since the last log line
	lastLog time.Time
}

func (a *addressLimiter) check(ctx context.Context, method string) error {
	wait, ok := a.limiter.allow(ctx)
	if ok {
		return nil
	}
	if a.refused != nil {
		a.refused.Inc()
	}
	a.note(ctx, method)
	st := status.New(codes.ResourceExhausted, fmt.Sprintf("more than %g calls per second from this address", float64(a.limiter.limit)))
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)}); err == nil {
		st = d
	}
	return st.Err()
}

// note logs a summary of the refused calls at most once every addressLimitLogEvery.
func (a *addressLimiter) note(ctx context.Context, method string) {
	now := time.Now()
	a.mu.Lock()
	a.count++
	if now.Sub(a.lastLog) < addressLimitLogEvery {
		a.mu.Unlock()
		return
	}
	n := a.count
	a.count, a.lastLog = 0, now
	a.mu.Unlock()
	// n counts the calls refused since the last line, this one included; the addresses and the
	// method are this call's, a sample.
	a.log.WarnContext(ctx, "calls refused by the per-address rate limit", "refused", n,
		"client_address", a.limiter.key(ctx), "peer", PeerAddress(ctx), "method", method)
}
