// Package bench measures the platform as `make run` starts it (three replicas of each service,
// Consul, the gateway, real processes on loopback), on SQLite and on PostgreSQL, with ghz as the
// load generator (and net/http for REST through the gateway). Every figure is a ratio or a
// percentile of loads run side by side, in alternating rounds, in the same run: this machine is
// noisy, so absolute figures from separate runs do not compare. `make bench` runs it and prints
// one table; BENCHMARKS.md keeps the latest.
package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bojand/ghz/runner"
	"github.com/jhump/protoreflect/dynamic"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/meshmart/meshmart/pkg/consul"
	"github.com/meshmart/meshmart/pkg/identity"
	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/tools/loadkit"
	"github.com/meshmart/meshmart/tools/platform"
)

const (
	concurrency = 16
	round       = 2 * time.Second
	rounds      = 3
	// seeded accounts, for ExportUsers to stream.
	seeded = 100
)

// BenchmarkPlatform prints one table with a column per database. Run it with -benchtime 1x.
func BenchmarkPlatform(b *testing.B) {
	t := &table{}
	peersBin := buildPeers(b)
	t.kratos, t.gozero = peerVersions(b)
	for _, db := range []string{"sqlite", "postgres"} {
		b.Run(db, func(b *testing.B) { measure(b, db, peersBin, t.column(db)) })
	}
	fmt.Println()
	fmt.Print(t)
	fmt.Println()
	fmt.Print(t.targets())
}

// BenchmarkChassis prints the chassis rows alone (the example servers: chassis, bare grpc-go,
// kratos, go-zero) and their targets, without the platform or a database: a minute or two where
// BenchmarkPlatform takes several. Run it with -benchtime 1x.
func BenchmarkChassis(b *testing.B) {
	t := &table{}
	peersBin := buildPeers(b)
	t.kratos, t.gozero = peerVersions(b)
	chassisRows(b, peersBin, t.column("example servers"))
	fmt.Println()
	fmt.Print(t)
	fmt.Println()
	fmt.Print(t.targets())
}

// call is one ghz load: a method, a target and what to send.
type call struct {
	method string
	target string
	data   any
	token  func() string // the access token of each round (renewed as it nears its expiry); nil: none
	opts   []runner.Option
}

// stat is what alternating rounds of one call measured, merged.
type stat struct {
	testkit.LoadResult
	msgs int64 // stream messages received
	// cpu is what the platform's processes (services, gateway, Consul, PostgreSQL and its
	// backends: this process's descendants) spent during the call's rounds; ghz runs in this
	// process and is not in it.
	cpu time.Duration
}

// cpuPerCall is s's platform CPU time per call.
func (s *stat) cpuPerCall() time.Duration { return s.cpu / time.Duration(max(s.Calls, 1)) }

// alternate runs each call for a round, in turn, rounds times, and merges each call's rounds.
func alternate(b *testing.B, tlsOpts []runner.Option, calls ...call) []*stat {
	stats := make([]*stat, len(calls))
	for i := range stats {
		stats[i] = &stat{}
	}
	for range rounds {
		for i, c := range calls {
			var msgs atomic.Int64
			opts := append([]runner.Option{
				runner.WithConcurrency(concurrency),
				runner.WithRunDuration(round),
				// "wait" lets the calls in flight at the round's end finish; the default
				// "close" would count them as errors.
				runner.WithDurationStopAction("wait"),
				runner.WithData(c.data),
				runner.WithClientLoadBalancing("round_robin"),
				runner.WithStreamRecvMsgIntercept(func(m *dynamic.Message, err error) error {
					if err == nil && m != nil {
						msgs.Add(1)
					}
					return nil
				}),
			}, tlsOpts...)
			opts = append(opts, c.opts...)
			if c.token != nil {
				opts = append(opts, runner.WithMetadata(map[string]string{"authorization": "Bearer " + c.token()}))
			}
			var (
				rep    *runner.Report
				runErr error
			)
			used, err := testkit.DescendantsCPUDuring(func() { rep, runErr = runner.Run(c.method, c.target, opts...) })
			if runErr != nil {
				b.Fatalf("ghz %s on %s: %v", c.method, c.target, runErr)
			}
			if err != nil {
				b.Fatal(err)
			}
			s := stats[i]
			s.cpu += used
			s.Calls += int(rep.Count)
			s.Elapsed += rep.Total
			s.msgs += msgs.Load()
			for _, d := range rep.Details {
				if d.Error != "" {
					s.Errors++
				}
				s.Latencies = append(s.Latencies, d.Latency)
			}
			if len(rep.ErrorDist) > 0 {
				b.Logf("%s on %s: errors %v", c.method, c.target, rep.ErrorDist)
			}
		}
	}
	return stats
}

func measure(b *testing.B, db, peersBin string, col *column) {
	opts := loadkit.Options{
		Gateway: true, // the REST rows (gateway_test.go) go through it
		// Logging as shipped (the rig's tests run at warn).
		Env: []string{"MESHMART_LOG_LEVEL=info"},
	}
	if db == "postgres" {
		opts.Databases = map[string]string{}
		for _, svc := range platform.Services {
			opts.Databases[svc] = testkit.PostgresURL(b)
		}
	}
	r := loadkit.Start(b, opts)
	// ghz dials consul:// targets through gRPC's global resolver registry, which this platform's
	// Consul answers only with its catalog-read ACL token; and it verifies the services' TLS
	// certificates with the platform's CA (they name 127.0.0.1 and the service, the authority of
	// a consul:/// target), presenting none, as a user's client does.
	resolver.Register(consul.NewBuilder(testkit.DiscardLogger(), r.ACL.Reader.SecretID))
	tlsOpts := []runner.Option{runner.WithRootCertificate(r.PKI.BundleFile())}
	admin := r.LogInAdmin(b)
	user := r.SignUp(b, "bench-user")
	seed(b, r)
	consulTarget := func(svc string) string { return "consul://" + r.ConsulAddr + "/" + svc }

	// Chassis overhead: the same handler behind the chassis and behind bare grpc-go, plaintext
	// and with mutual TLS.
	chassisRows(b, peersBin, col)

	// Discovery: consul:// vs the same three addresses given statically, both balanced round
	// robin; and a direct dial of one replica.
	static := manual.NewBuilderWithScheme("static-" + db)
	var endpoints []resolver.Endpoint
	for _, a := range r.Addrs("user") {
		endpoints = append(endpoints, resolver.Endpoint{Addresses: []resolver.Address{{Addr: a}}})
	}
	static.InitialState(resolver.State{Endpoints: endpoints})
	resolver.Register(static)
	getUser := map[string]any{"id": user.ID}
	before := handled(b, r, "user", "GetUser")
	s := alternate(b, tlsOpts,
		call{method: "meshmart.user.v1.UserService.GetUser", target: consulTarget("user"), data: getUser, token: user.AccessToken},
		call{method: "meshmart.user.v1.UserService.GetUser", target: "static-" + db + ":///user", data: getUser, token: user.AccessToken},
		call{method: "meshmart.user.v1.UserService.GetUser", target: r.Addrs("user")[0], data: getUser, token: user.AccessToken})
	col.set("discovery", fmt.Sprintf("%.2f× the calls/s of a static list (%.0f vs %.0f); p50 %v vs %v",
		s[0].Rate()/s[1].Rate(), s[0].Rate(), s[1].Rate(), ms(s[0].Percentile(.5)), ms(s[1].Percentile(.5))))
	col.set("direct", fmt.Sprintf("%.2f× the calls/s of a direct dial of one replica (%.0f vs %.0f); p50 %v vs %v",
		s[0].Rate()/s[2].Rate(), s[0].Rate(), s[2].Rate(), ms(s[0].Percentile(.5)), ms(s[2].Percentile(.5))))
	after := handled(b, r, "user", "GetUser")
	// The direct rounds all went to the first replica; the static ones are spread like the
	// consul ones. Take the direct ones out.
	after[0] -= float64(s[2].Calls)
	var shares []string
	var total float64
	for i := range after {
		total += after[i] - before[i]
	}
	for i := range after {
		shares = append(shares, fmt.Sprintf("%.1f%%", 100*(after[i]-before[i])/total))
	}
	col.set("balance", strings.Join(shares, " / "))

	// The business calls through consul://, side by side, with memory sampled meanwhile.
	idle, own := rss(b, r)
	peak := map[string]int64{}
	stop := sampleRSS(r, peak)
	// REST through the gateway vs gRPC, for the same calls to the order service.
	gatewayRows(b, r, user, col)
	order := map[string]any{
		"items":                []map[string]any{{"sku": "BOOK-1", "quantity": 2}, {"sku": "PEN-7", "quantity": 3}},
		"payment_method_token": "tok_approve",
		"idempotency_key":      "bench-{{newUUID}}",
	}
	// Only the order service may charge: the charges are sent as the order service sends them,
	// with its certificate (mutual TLS), carrying the user's token.
	orderDir := r.PKI.Dir("order")
	asOrder := []runner.Option{runner.WithCertificate(filepath.Join(orderDir, identity.CertFile), filepath.Join(orderDir, identity.KeyFile))}
	charge := map[string]any{
		"order_id":             "{{newUUID}}",
		"amount":               map[string]any{"currency_code": "USD", "minor_units": 1000},
		"payment_method_token": "tok_approve",
		"idempotency_key":      "bench-{{newUUID}}",
	}
	s = alternate(b, tlsOpts,
		call{method: "meshmart.user.v1.UserService.GetUser", target: consulTarget("user"), data: getUser, token: user.AccessToken},
		call{method: "meshmart.payment.v1.PaymentService.CreatePayment", target: consulTarget("payment"), data: charge, token: user.AccessToken, opts: asOrder},
		call{method: "meshmart.order.v1.OrderService.CreateOrder", target: consulTarget("order"), data: order, token: user.AccessToken},
		call{method: "meshmart.user.v1.UserService.ExportUsers", target: consulTarget("user"), data: map[string]any{}, token: admin.AccessToken})
	stop()
	for i, name := range []string{"GetUser", "Charge", "CreateOrder"} {
		col.set(name, fmt.Sprintf("%.0f/s; p50 %v, p95 %v, p99 %v; %d errors", s[i].Rate(), ms(s[i].Percentile(.5)), ms(s[i].Percentile(.95)), ms(s[i].Percentile(.99)), s[i].Errors))
	}
	p50, rate := float64(s[2].Percentile(.5))/float64(s[0].Percentile(.5)), s[2].Rate()/s[0].Rate()
	col.set("CreateOrder/GetUser", fmt.Sprintf("%.1f× the p50 latency, %.2f× the calls/s", p50, rate))
	col.figure("p50 CreateOrder/GetUser", p50)
	col.figure("rate CreateOrder/GetUser", rate)
	ceiling := float64(s[0].cpuPerCall()) / float64(s[2].cpuPerCall())
	col.set("CreateOrder CPU", fmt.Sprintf("%v per CreateOrder, %v per GetUser: %.2f× GetUser's calls/s where the platform's cores are the only limit",
		s[2].cpuPerCall().Round(time.Microsecond), s[0].cpuPerCall().Round(time.Microsecond), ceiling))
	col.figure("ceiling CreateOrder/GetUser", ceiling)
	export := float64(s[3].msgs) / s[3].Elapsed.Seconds()
	col.set("ExportUsers", fmt.Sprintf("%.0f messages/s (%d accounts per stream), %.1f× GetUser's calls/s", export, s[3].msgs/int64(max(s[3].Calls, 1)), export/s[0].Rate()))
	for _, svc := range platform.Programs {
		col.set("RSS "+svc, fmt.Sprintf("%.0f MiB idle (%.0f MiB of its own), %.0f MiB at most under load", mib(idle[svc]), mib(own[svc]), mib(peak[svc])))
		col.figure("RSS "+svc, mib(idle[svc]))
		col.figure("own "+svc, mib(own[svc]))
	}
	for _, st := range s {
		if st.Errors > 0 {
			b.Errorf("%d calls failed", st.Errors)
		}
	}
}

// seed signs up accounts for ExportUsers to stream, 8 at a time.
func seed(b *testing.B, r *loadkit.Rig) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, seeded)
	sem := make(chan struct{}, 8)
	for i := range seeded {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			name := fmt.Sprintf("seeded-%d", i)
			// Eight sign-ups at once hash more passwords than two cores can: the user service
			// sheds the excess with a RetryInfo, and the seeding waits as a client would.
			errs <- loadkit.WhenRefused(ctx, func() error {
				_, err := r.Users.CreateUser(ctx, &userv1.CreateUserRequest{Email: name + "@example.com", Username: name, Password: loadkit.Password, GivenName: "Seeded"})
				return err
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			b.Fatalf("seed accounts: %v", err)
		}
	}
}

// handled returns how many calls of method each replica of service has answered.
func handled(b *testing.B, r *loadkit.Rig, service, method string) []float64 {
	var counts []float64
	for _, in := range r.Instances {
		if in.Service != service {
			continue
		}
		n, err := loadkit.Handled(in.MetricsAddr, method)
		if err != nil {
			b.Fatalf("%s metrics: %v", in.Name, err)
		}
		counts = append(counts, n)
	}
	return counts
}

// rss returns each service's resident memory (VmRSS) and the part of it that is its own
// (RssAnon: heap, stacks; the rest is its binary's pages): the means over its replicas.
func rss(b *testing.B, r *loadkit.Rig) (resident, own map[string]int64) {
	resident, own = map[string]int64{}, map[string]int64{}
	n := map[string]int64{}
	for _, in := range r.Instances {
		v, err := loadkit.RSS(in.Pid())
		if err != nil {
			b.Fatal(err)
		}
		o, err := loadkit.PrivateRSS(in.Pid())
		if err != nil {
			b.Fatal(err)
		}
		resident[in.Service] += v
		own[in.Service] += o
		n[in.Service]++
	}
	for svc := range resident {
		resident[svc] /= n[svc]
		own[svc] /= n[svc]
	}
	return resident, own
}

// sampleRSS records, every 200 ms until stopped, the largest resident memory of any replica of
// each service.
func sampleRSS(r *loadkit.Rig, peak map[string]int64) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			for _, in := range r.Instances {
				if v, err := loadkit.RSS(in.Pid()); err == nil && v > peak[in.Service] {
					peak[in.Service] = v
				}
			}
			select {
			case <-done:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return func() { close(done); <-finished }
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// table is the printed result: a row per figure, a column per database.
type table struct {
	mu             sync.Mutex
	cols           []*column
	kratos, gozero string // the versions tools/benchpeers pins
}

type column struct {
	name    string
	cells   map[string]string
	figures map[string]float64 // what the targets compare, by target key
}

func (c *column) set(row, v string) { c.cells[row] = v }

// figure records the measured figure of a target (targets' key).
func (c *column) figure(key string, v float64) { c.figures[key] = v }

func (t *table) column(name string) *column {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := &column{name: name, cells: map[string]string{}, figures: map[string]float64{}}
	t.cols = append(t.cols, c)
	return c
}

var rows = []struct{ key, label string }{
	{"chassis", "Chassis overhead, plaintext: GetUser through every interceptor, logging as shipped (info, to stderr, successes sampled), vs bare grpc-go (example handler, servers in processes of their own)"},
	{"chassis TLS", "Chassis overhead, mutual TLS: the same, both servers with the same identity.ServerConfig and certificate, the client with a service's (identity.ClientConfig)"},
	{"kratos", "Chassis vs go-kratos (recovery, logging at warn, tracing, metrics, validate), mutual TLS both: GetUser, example handler"},
	{"go-zero", "Chassis vs go-zero zrpc (its default interceptors, logging at error), mutual TLS both: GetUser, example handler"},
	{"pinned", "The same, mutual TLS, each server on a core of its own and the load generator on the others (sched_setaffinity), as when the callers run on other machines (the generator's core limits the calls/s when it costs more per call than the server)"},
	{"allocs", "Server heap allocations per GetUser, mutual TLS (runtime.MemStats read in each server process around its rounds)"},
	{"TLS cost", "Mutual TLS vs plaintext, the same server (long-lived connections: record encryption, no handshakes)"},
	{"discovery", "Discovery: `consul://` vs a static list of the same 3 replicas, both round robin (GetUser)"},
	{"direct", "Balancing: `consul://` round robin over 3 replicas vs a direct dial of one (GetUser)"},
	{"balance", "Balance: share of round-robin GetUser calls per replica (server-side counts)"},
	{"GetUser", "GetUser through `consul://`"},
	{"Charge", "Charge (CreatePayment, as the order service: mutual TLS) through `consul://`"},
	{"CreateOrder", "CreateOrder (user check + charge) through `consul://`"},
	{"CreateOrder/GetUser", "CreateOrder relative to GetUser"},
	{"CreateOrder CPU", "The platform's CPU time per call (services, gateway, Consul, PostgreSQL; from /proc), CreateOrder vs GetUser"},
	{"ExportUsers", "ExportUsers (server stream) relative to unary GetUser"},
	{"REST GetProduct", "REST through the gateway vs gRPC straight to the service: GetProduct (public), 16 HTTP/1.1 keep-alive connections vs the chassis client"},
	{"REST GetOrder", "REST through the gateway vs gRPC straight to the service: GetOrder (the user's token)"},
	{"RSS user", "RSS per replica, user service"},
	{"RSS payment", "RSS per replica, payment service"},
	{"RSS order", "RSS per replica, order service"},
	{"RSS gateway", "RSS of the gateway (one instance)"},
}

func (t *table) String() string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "meshmart platform benchmark: %d concurrent calls, %d alternating rounds of %v per figure, on %s; peers go-kratos %s, go-zero %s (tools/benchpeers/go.mod)\n\n",
		concurrency, rounds, round, host, t.kratos, t.gozero)
	t.header(&b, []string{"Figure"}, nil)
	for _, r := range rows {
		if !t.has(func(c *column) bool { _, ok := c.cells[r.key]; return ok }) {
			continue // a row that the benchmark run does not measure (BenchmarkChassis)
		}
		fmt.Fprintf(&b, "| %s |", r.label)
		for _, c := range t.cols {
			fmt.Fprintf(&b, " %s |", c.cells[r.key])
		}
		b.WriteString("\n")
	}
	return b.String()
}

// header writes a Markdown table's header: the columns named before, one per database, after.
func (t *table) header(b *strings.Builder, before, after []string) {
	names := slices.Concat(before, t.names(), after)
	fmt.Fprintf(b, "| %s |\n|%s\n", strings.Join(names, " | "), strings.Repeat("---|", len(names)))
}

// names returns the columns' names.
func (t *table) names() []string {
	var names []string
	for _, c := range t.cols {
		names = append(names, c.name)
	}
	return names
}

// has reports whether any column satisfies f.
func (t *table) has(f func(*column) bool) bool {
	return slices.ContainsFunc(t.cols, f)
}

// target is one figure of issue 18's table and the bound it must meet.
type target struct {
	key    string // the column figure it reads
	label  string
	bound  float64
	atMost bool   // true: the figure must be ≤ bound; false: ≥ bound
	unit   string // "×" or " MiB"
}

var targets = []target{
	{"cpu/bare", "Chassis vs bare grpc-go, mutual TLS both: server CPU per call", 1.3, true, "×"},
	{"rate/bare", "Chassis vs bare grpc-go, mutual TLS both: calls/s", 0.90, false, "×"},
	{"bytes/bare", "Chassis vs bare grpc-go: allocated bytes per call", 2, true, "×"},
	{"objects/bare", "Chassis vs bare grpc-go: allocated objects per call", 2, true, "×"},
	{"rate/kratos", "Chassis vs go-kratos: calls/s", 1.4, false, "×"},
	{"cpu/kratos", "Chassis vs go-kratos: server CPU per call", 0.7, true, "×"},
	{"rate/go-zero", "Chassis vs go-zero: calls/s", 1.4, false, "×"},
	{"cpu/go-zero", "Chassis vs go-zero: server CPU per call", 0.7, true, "×"},
	{"p50 CreateOrder/GetUser", "CreateOrder p50 / GetUser p50", 5, true, "×"},
	{"rate CreateOrder/GetUser", "CreateOrder calls/s / GetUser calls/s", 0.20, false, "×"},
	{"RSS user", "Idle RSS per replica, user service", 25, true, " MiB"},
	{"RSS payment", "Idle RSS per replica, payment service", 25, true, " MiB"},
	{"RSS order", "Idle RSS per replica, order service", 25, true, " MiB"},
	{"RSS gateway", "Idle RSS, gateway", 25, true, " MiB"},
}

// perColumn returns the figure key of each column that measured it, as "column 0.12×".
func (t *table) perColumn(key string) []string {
	var out []string
	for _, c := range t.cols {
		if v, ok := c.figures[key]; ok {
			out = append(out, fmt.Sprintf("%s %.2f×", c.name, v))
		}
	}
	return out
}

// met reports whether v meets the target.
func (g target) met(v float64) bool {
	if g.atMost {
		return v <= g.bound
	}
	return v >= g.bound
}

// targets prints issue 18's targets: each figure per column, its bound and whether every column
// meets it ("no figure" where a column measured none, as when its benchmark failed first).
func (t *table) targets() string {
	var b strings.Builder
	b.WriteString("Targets of issue 18\n\n")
	t.header(&b, []string{"Target", "bound"}, []string{"met"})
	var skipped []string
	for _, g := range targets {
		if !t.has(func(c *column) bool { _, ok := c.figures[g.key]; return ok }) {
			skipped = append(skipped, g.label) // a target that this benchmark does not measure
			continue
		}
		op := "≥"
		if g.atMost {
			op = "≤"
		}
		fmt.Fprintf(&b, "| %s | %s %s%s |", g.label, op, strconv.FormatFloat(g.bound, 'f', -1, 64), g.unit)
		met := "yes"
		for _, c := range t.cols {
			v, ok := c.figures[g.key]
			switch {
			case !ok:
				met = "no figure"
				b.WriteString(" — |")
				continue
			case !g.met(v) && met == "yes":
				met = "no"
			}
			if g.unit == "×" {
				fmt.Fprintf(&b, " %.2f× |", v)
			} else {
				fmt.Fprintf(&b, " %.0f%s |", v, g.unit)
			}
		}
		fmt.Fprintf(&b, " %s |\n", met)
	}
	if ceilings := t.perColumn("ceiling CreateOrder/GetUser"); len(ceilings) > 0 {
		fmt.Fprintf(&b, "\nThe floor under the CreateOrder rows: where the platform's cores are the only limit, CreateOrder's calls/s are "+
			"GetUser's platform CPU per call ÷ CreateOrder's of GetUser's (%s; the load generator's own CPU holds GetUser back here, so "+
			"the measured ratio is higher), and its p50 under the same load the inverse: 0.20× needs a CreateOrder that costs at most "+
			"five GetUsers. A CreateOrder is two durable commits on each of two databases (the order and the payment recorded before the "+
			"processor is called, each outcome after) and a gRPC hop more than a GetUser; BENCHMARKS.md, \"Where a CreateOrder's CPU "+
			"goes\", has the profile: the databases' work alone is ten GetUsers.\n",
			strings.Join(ceilings, ", "))
	}
	if byCPU := t.perColumn("rate/bare by CPU"); len(byCPU) > 0 {
		fmt.Fprintf(&b, "\nThe ceiling over the calls/s vs bare grpc-go row: with the cores shared, every call costs the server's CPU "+
			"and the load generator's, so at the CPU per call each was measured at, the cores allow the chassis at most "+
			"(bare's + its generator's) ÷ (the chassis' + its generator's) of bare's calls/s: %s. What the chassis spends over "+
			"bare is its concerns (validation, the default deadline where a call has none, the request id, identification, "+
			"the trace context, logging, metrics, the rate limits, authorization), none over 3 %% of the process (client and server) "+
			"in its profile: BENCHMARKS.md, \"Metrics\".\n", strings.Join(byCPU, ", "))
	}
	var bare []string
	for _, c := range t.cols {
		kratos, ok1 := c.figures["bare rate/kratos"]
		gozero, ok2 := c.figures["bare rate/go-zero"]
		if !ok1 || !ok2 {
			continue
		}
		k, z := fmt.Sprintf("%.2f×", kratos), fmt.Sprintf("%.2f×", gozero)
		if p, ok := c.figures["bare rate/kratos pinned"]; ok {
			k += fmt.Sprintf(" (%.2f×)", p)
			z += fmt.Sprintf(" (%.2f×)", c.figures["bare rate/go-zero pinned"])
		}
		bare = append(bare, fmt.Sprintf("%s %s kratos', %s go-zero's", c.name, k, z))
	}
	if len(bare) > 0 {
		fmt.Fprintf(&b, "\nThe ceiling over the calls/s rows: no chassis built on grpc-go beats bare grpc-go, whose own calls/s were "+
			"(in brackets: on a core of its own) %s. Every call also costs the load generator's CPU (the rows print it): "+
			"on the cores it shares with the server, and on its own core, which limits the calls/s whenever it costs more "+
			"than the server's; either way it pulls every calls/s ratio toward 1. The servers' CPU per call is the figure "+
			"that carries to other machines.\n", strings.Join(bare, "; "))
	}
	var owns []string
	for _, c := range t.cols {
		var o []string
		for _, svc := range platform.Programs {
			if v, ok := c.figures["own "+svc]; ok {
				o = append(o, fmt.Sprintf("%s %.0f", svc, v))
			}
		}
		if len(o) > 0 {
			owns = append(owns, c.name+": "+strings.Join(o, ", ")+" MiB")
		}
	}
	if len(owns) > 0 {
		fmt.Fprintf(&b, "\nThe floor under the idle RSS rows: of that resident memory, what each process holds of its own (RssAnon: "+
			"heap, stacks, GC metadata) was %s. The rest is pages of its binary (~50 MiB) that start-up and the platform's "+
			"checks and polling touched: file pages, shared by a host's replicas of the service and the first memory the kernel "+
			"takes back. These are read between the loads, before a service settles; TestIdleMemory (tools/platform) asserts "+
			"≤ 25 MiB of its own once settled, and BENCHMARKS.md, \"Idle memory\", has the heap profile and what the binaries "+
			"hold.\n", strings.Join(owns, "; "))
	}
	skipped = append(skipped, "database round trips and write commits per new order (≤ 10 / ≤ 3)",
		"failed reads while a user replica is SIGSTOPped (0, read p99 ≤ 3× normal)")
	fmt.Fprintf(&b, "\nNot measured by this benchmark: %s.\n", strings.Join(skipped, "; "))
	return b.String()
}
