package client_test

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"

	"github.com/meshmart/meshmart/pkg/client"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// freezer is a loopback TCP proxy to a replica that can freeze as a SIGSTOPped process does: its
// connections stay open and new ones are accepted, but no byte goes through any more.
type freezer struct {
	addr   string
	frozen atomic.Bool
}

func startFreezer(t *testing.T, to string) *freezer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	f := &freezer{addr: lis.Addr().String()}
	go func() {
		for {
			in, err := lis.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", to)
			if err != nil {
				in.Close()
				continue
			}
			t.Cleanup(func() { in.Close(); out.Close() })
			go f.pipe(in, out)
			go f.pipe(out, in)
		}
	}()
	return f
}

func (f *freezer) pipe(from, to net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		for f.frozen.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		if n > 0 {
			if _, err := to.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				to.Close()
			}
			return
		}
	}
}

// sentTo counts the attempts a client sends to each address and when it sent the last.
type sentTo struct {
	mu    sync.Mutex
	last  map[string]time.Time
	count map[string]int
}

func (s *sentTo) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (s *sentTo) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (s *sentTo) HandleConn(context.Context, stats.ConnStats)                       {}
func (s *sentTo) HandleRPC(_ context.Context, st stats.RPCStats) {
	if h, ok := st.(*stats.OutHeader); ok && h.Client && h.RemoteAddr != nil {
		s.mu.Lock()
		s.last[h.RemoteAddr.String()] = time.Now()
		s.count[h.RemoteAddr.String()]++
		s.mu.Unlock()
	}
}

// TestKeepaliveDropsAHungReplica freezes one of two replicas under a steady read load, hedging
// off: the client's keepalive ping goes unanswered and the connection is closed, so round robin
// stops sending it calls within Time + Timeout (12s) of its last answer, with no health check to
// tell it. With the keepalive of before (30s + 10s), calls were still sent to it 16s after it
// froze.
func TestKeepaliveDropsAHungReplica(t *testing.T) {
	t.Parallel()
	good, bad := startReplica(t, "good"), startReplica(t, "bad")
	proxy := startFreezer(t, bad.addr)
	sent := &sentTo{last: map[string]time.Time{}, count: map[string]int{}}
	users := dialAddrs(t, prometheus.NewRegistry(), client.HedgeSettings{Disable: true}, []string{good.addr, proxy.addr}, grpc.WithStatsHandler(sent))
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	untilBothRead(ctx, t, users, good, bad)
	proxy.frozen.Store(true)
	frozen := time.Now()
	const runFor = 16 * time.Second
	failed, calls := 0, 0
	for time.Since(frozen) < runFor {
		callCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		if _, err := users.GetUser(callCtx, &userv1.GetUserRequest{}); err != nil {
			failed++
		}
		cancel()
		calls++
		time.Sleep(5 * time.Millisecond)
	}
	sent.mu.Lock()
	last, n := sent.last[proxy.addr], sent.count[proxy.addr]
	sent.mu.Unlock()
	t.Logf("%d reads over %v after the freeze, %d failed (no hedging); %d attempts sent to the frozen replica in all, the last %v after the freeze",
		calls, runFor, failed, n, last.Sub(frozen).Round(time.Millisecond))
	// Time + Timeout, and a second for a busy machine; fixed, so that it fails with a longer keepalive.
	if bound := 13 * time.Second; last.Sub(frozen) > bound {
		t.Errorf("the frozen replica was still sent calls %v after it froze, want none after %v", last.Sub(frozen), bound)
	}
}
