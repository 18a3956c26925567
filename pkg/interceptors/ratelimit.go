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
// Authenticate), else the peer's IP address. Streams count once, when they open.
//
// go-grpc-middleware supplies the interceptor but leaves the Limiter to us; x/time/rate has no
// keyed limiter, hence the small map below.
func RateLimit(rps float64, burst int) Server {
	l := &perClientLimiter{limit: rate.Limit(rps), burst: burst, clients: map[string]*clientLimiter{}}
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

type perClientLimiter struct {
	limit rate.Limit
	burst int

	mu        sync.Mutex
	clients   map[string]*clientLimiter
	lastSweep time.Time
}

// Limit implements ratelimit.Limiter.
func (l *perClientLimiter) Limit(ctx context.Context) error {
	key := clientKey(ctx)
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
	if !c.limiter.AllowN(now, 1) {
		return fmt.Errorf("more than %g calls per second from this client", float64(l.limit))
	}
	return nil
}

func clientKey(ctx context.Context) string {
	if id, ok := auth.FromContext(ctx); ok {
		return "user:" + id.Subject
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
			return "ip:" + host
		}
		return "addr:" + p.Addr.String()
	}
	return "unknown"
}
