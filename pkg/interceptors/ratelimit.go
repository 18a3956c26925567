package interceptors

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/ratelimit"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/peer"

	"github.com/meshmart/meshmart/pkg/auth"
)

// RateLimit allows each client rps calls per second with bursts of burst, and fails the rest with
// ResourceExhausted. A client is the authenticated user when there is one (so it must run after
// Identify), else its address as addr names it (ClientAddress: a browser behind the gateway
// is not limited together with all the others). Streams count once, when they open.
//
// go-grpc-middleware supplies the interceptor but leaves the Limiter to us; x/time/rate has no
// keyed limiter, hence the small map below.
func RateLimit(rps float64, burst int, addr func(ctx context.Context) string) Server {
	l := newKeyedLimiter(rps, burst, func(ctx context.Context) string {
		// A service calling without a user's token has an identity but no subject: keyed by
		// "user:" alone, every such call (the gateway's anonymous browsers, every service's own
		// calls) would share one bucket.
		if id, ok := auth.FromContext(ctx); ok && id.IsUser() {
			return "user:" + id.Subject
		}
		return "ip:" + addr(ctx)
	})
	return Server{
		Unary:  ratelimit.UnaryServerInterceptor(l),
		Stream: ratelimit.StreamServerInterceptor(l),
	}
}

// idleClient is how long a client's limiter is kept after its last call.
const idleClient = 5 * time.Minute

type clientLimiter struct {
	limiter  *rate.Limiter
	lastSeen time.Time
}

// keyedLimiter keeps one token bucket per key (a user, an address), dropping those idle for
// idleClient.
type keyedLimiter struct {
	limit rate.Limit
	burst int
	key   func(ctx context.Context) string

	mu        sync.Mutex
	clients   map[string]*clientLimiter
	lastSweep time.Time
}

func newKeyedLimiter(rps float64, burst int, key func(ctx context.Context) string) *keyedLimiter {
	return &keyedLimiter{limit: rate.Limit(rps), burst: burst, key: key, clients: map[string]*clientLimiter{}}
}

// Limit implements ratelimit.Limiter.
func (l *keyedLimiter) Limit(ctx context.Context) error {
	if _, ok := l.allow(ctx); !ok {
		return fmt.Errorf("more than %g calls per second from this client", float64(l.limit))
	}
	return nil
}

// allow takes a token from the bucket of ctx's key; when there is none, it returns false and how
// long until there is one.
func (l *keyedLimiter) allow(ctx context.Context) (time.Duration, bool) {
	key := l.key(ctx)
	now := time.Now()
	l.mu.Lock()
	if now.Sub(l.lastSweep) > idleClient {
		for k, c := range l.clients {
			if now.Sub(c.lastSeen) > idleClient {
				delete(l.clients, k)
			}
		}
		l.lastSweep = now
	}
	c, ok := l.clients[key]
	if !ok {
		c = &clientLimiter{limiter: rate.NewLimiter(l.limit, l.burst)}
		l.clients[key] = c
	}
	c.lastSeen = now
	l.mu.Unlock()
	if c.limiter.AllowN(now, 1) {
		return 0, true
	}
	missing := 1 - c.limiter.TokensAt(now)
	return time.Duration(missing / float64(l.limit) * float64(time.Second)), false
}

// PeerAddress is the address a call came from, as its connection says (never a header): the
// peer's IP without the port, the whole address when it has no port (bufconn), "" when the call
// has no peer. ClientAddress uses it for every caller but a trusted forwarder.
func PeerAddress(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
		return host
	}
	return p.Addr.String()
}
