package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshmart/meshmart/pkg/client"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// BenchmarkHedgingOverhead measures what hedging costs a read on a well replica: GetUser to one
// loopback replica, through the chassis client with hedging on and off, in alternating rounds of
// one run; it reports each side's time per call, their ratio (hedged_vs_not) and the hedges sent
// per call (those the replica's p95 and the 2ms floor let through).
func BenchmarkHedgingOverhead(b *testing.B) {
	addr := startReplica(b, "bench").addr
	reg := prometheus.NewRegistry()
	on := dialAddrs(b, reg, client.HedgeSettings{}, []string{addr})
	off := dialAddrs(b, prometheus.NewRegistry(), client.HedgeSettings{Disable: true}, []string{addr})
	ctx := context.Background()
	for range 200 { // connected, and the hedged side's delay follows the method's latency
		for _, users := range []userv1.UserServiceClient{on, off} {
			if _, err := users.GetUser(ctx, &userv1.GetUserRequest{}); err != nil {
				b.Fatal(err)
			}
		}
	}
	hedgesBefore := counter(b, reg, "meshmart_client_hedges_total")
	const rounds = 10
	var took [2]time.Duration
	var calls [2]int
	b.ResetTimer()
	for r := range 2 * rounds {
		side, users := r%2, on
		if side == 1 {
			users = off
		}
		n := b.N/(2*rounds) + 1
		start := time.Now()
		for range n {
			if _, err := users.GetUser(ctx, &userv1.GetUserRequest{}); err != nil {
				b.Fatal(err)
			}
		}
		took[side] += time.Since(start)
		calls[side] += n
	}
	hedged := float64(took[0]) / float64(calls[0])
	plain := float64(took[1]) / float64(calls[1])
	b.ReportMetric(hedged, "ns/hedged-call")
	b.ReportMetric(plain, "ns/plain-call")
	b.ReportMetric(hedged/plain, "hedged_vs_not")
	b.ReportMetric((counter(b, reg, "meshmart_client_hedges_total")-hedgesBefore)/float64(calls[0]), "hedges/call")
}

// counter sums the values of a counter's series in reg.
func counter(b *testing.B, reg *prometheus.Registry, name string) float64 {
	b.Helper()
	families, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
