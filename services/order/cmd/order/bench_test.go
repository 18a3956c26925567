package main

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/meshmart/meshmart/pkg/testkit"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// BenchmarkCreateOrder measures CreateOrder end to end (the order service takes the token's word
// that the account is active and charges through the payment service: one hop, three real
// databases, all found through Consul) against one GetUser call, in alternating rounds of one run, on SQLite and
// on PostgreSQL. Run it with
//
//	make bench-order
func BenchmarkCreateOrder(b *testing.B) {
	const (
		workers = 8
		rounds  = 3
		round   = time.Second
	)
	type row struct {
		name                 string
		getUser, createOrder testkit.LoadResult
		// The CPU time the platform's processes (services, Consul, PostgreSQL and its backends)
		// spent during each rpc's rounds.
		getUserCPU, createOrderCPU time.Duration
	}
	// load runs one round of call and adds it, and the platform's CPU time during it, to res and cpu.
	load := func(res *testkit.LoadResult, cpu *time.Duration, call func() error) {
		used, err := testkit.DescendantsCPUDuring(func() { res.Add(testkit.Load(workers, round, call)) })
		if err != nil {
			b.Fatal(err)
		}
		*cpu += used
	}
	for range b.N {
		var rows []row
		for _, db := range testkit.Databases {
			// One user makes every call from one address, so the per-client and per-address rate
			// limits are lifted.
			s := startStack(b, db.New, 1, "MESHMART_RATE_LIMIT=0", "MESHMART_ADDRESS_RATE_LIMIT=0")
			id, ctx := s.signUp(b, "bench")
			var seq atomic.Int64
			r := row{name: db.Name}
			for range rounds {
				load(&r.getUser, &r.getUserCPU, func() error {
					_, err := s.users.GetUser(ctx, &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Id{Id: id}})
					return err
				})
				load(&r.createOrder, &r.createOrderCPU, func() error {
					resp, err := s.orders.CreateOrder(ctx, orderReq("tok_approve", fmt.Sprint("bench-", seq.Add(1))))
					if err == nil && resp.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PAID {
						err = fmt.Errorf("order %v", resp.GetOrder().GetStatus())
					}
					return err
				})
			}
			rows = append(rows, r)
			for _, res := range []testkit.LoadResult{r.getUser, r.createOrder} {
				if res.Errors > 0 {
					b.Errorf("%s: %d errors", db.Name, res.Errors)
				}
			}
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(w, "databases\trpc\tcalls/s\tp50\tp99\terrors\tp50 vs GetUser\tthroughput vs GetUser\tplatform CPU/call\tGetUser's CPU/call vs this\t\n")
		perCall := func(cpu time.Duration, res testkit.LoadResult) time.Duration {
			return cpu / time.Duration(max(res.Calls, 1))
		}
		for _, r := range rows {
			for _, c := range []struct {
				name string
				res  testkit.LoadResult
				cpu  time.Duration
			}{{"GetUser", r.getUser, r.getUserCPU}, {"CreateOrder", r.createOrder, r.createOrderCPU}} {
				fmt.Fprintf(w, "%s\t%s\t%.0f\t%v\t%v\t%d\t%.1fx\t%.3f\t%v\t%.3f\t\n", r.name, c.name, c.res.Rate(),
					c.res.Percentile(0.5).Round(time.Microsecond), c.res.Percentile(0.99).Round(time.Microsecond), c.res.Errors,
					float64(c.res.Percentile(0.5))/float64(r.getUser.Percentile(0.5)), c.res.Rate()/r.getUser.Rate(),
					perCall(c.cpu, c.res).Round(time.Microsecond), float64(perCall(r.getUserCPU, r.getUser))/float64(perCall(c.cpu, c.res)))
			}
		}
		w.Flush()
		fmt.Printf("(%d workers, %d alternating rounds of %v per rpc; every service's own database; platform CPU: the\n"+
			"services, Consul and PostgreSQL from /proc, in 10 ms steps; the last column is CreateOrder's calls/s\n"+
			"relative to GetUser's where the platform's cores are the only limit)\n", workers, rounds, round)
	}
}
