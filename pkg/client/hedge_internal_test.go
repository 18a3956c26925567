package client

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoregistry"

	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// TestHedgeDelayFollowsLatency checks the delay before a hedge: MaxDelay until a method has
// answered 20 calls, then the quantile of its recent latencies, within MinDelay and MaxDelay.
func TestHedgeDelayFollowsLatency(t *testing.T) {
	t.Parallel()
	s := HedgeSettings{MinDelay: 5 * time.Millisecond, MaxDelay: 300 * time.Millisecond}.withDefaults()
	tests := []struct {
		name    string
		latency func(i int) time.Duration // of the i-th answer, from 0
		answers int
		want    time.Duration
	}{
		{"no answers yet", nil, 0, 300 * time.Millisecond},
		{"fewer than 20 answers", func(int) time.Duration { return time.Millisecond }, 19, 300 * time.Millisecond},
		{"the 95th percentile", func(i int) time.Duration { return time.Duration(i%100+1) * time.Millisecond }, 512, 95 * time.Millisecond},
		{"at least MinDelay", func(int) time.Duration { return 100 * time.Microsecond }, 64, 5 * time.Millisecond},
		{"at most MaxDelay", func(int) time.Duration { return 2 * time.Second }, 64, 300 * time.Millisecond},
		// Only the last 512 answers count: a method that became fast is hedged sooner.
		{"recent answers only", func(i int) time.Duration {
			if i < 512 {
				return 200 * time.Millisecond
			}
			return 20 * time.Millisecond
		}, 1024, 20 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := newLatencies(s)
			for i := range tt.answers {
				l.observe(tt.latency(i))
			}
			if got := l.delay(); got != tt.want {
				t.Errorf("delay = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestHedgeTokenBucket checks the cap on hedges: Burst hedges at once, then one per 1/Ratio calls.
func TestHedgeTokenBucket(t *testing.T) {
	t.Parallel()
	b := newTokenBucket(2, 0.1)
	if !b.take() || !b.take() {
		t.Fatal("a full bucket of 2 refused one of 2 hedges")
	}
	if b.take() {
		t.Fatal("an empty bucket allowed a hedge")
	}
	for range 9 {
		b.earn()
	}
	if b.take() {
		t.Fatal("9 calls at a ratio of 0.1 earned a hedge")
	}
	b.earn()
	if !b.take() {
		t.Fatal("10 calls at a ratio of 0.1 earned no hedge")
	}
	for range 1000 {
		b.earn()
	}
	n := 0
	for b.take() {
		n++
	}
	if n != 2 {
		t.Errorf("after many calls the bucket held %d tokens, want its burst of 2", n)
	}
}

// BenchmarkHedgerBookkeeping measures the hedger's own work on a call that answers at once (no
// network: the invoker returns), against the same call not hedged: what every read pays for
// hedging besides the hedges themselves. Run with -benchmem.
func BenchmarkHedgerBookkeeping(b *testing.B) {
	h := newHedger(HedgeSettings{}, protoregistry.GlobalFiles, nil)
	invoker := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error { return nil }
	ctx := context.Background()
	for _, bench := range []struct{ name, method string }{
		{"hedged", "/meshmart.user.v1.UserService/GetUser"},
		{"not_hedged", "/meshmart.user.v1.UserService/UpdateUser"},
	} {
		b.Run(bench.name, func(b *testing.B) {
			reply := &userv1.GetUserResponse{}
			for b.Loop() {
				if err := h.unary(ctx, bench.method, nil, reply, nil, invoker); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
