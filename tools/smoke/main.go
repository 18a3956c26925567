// Command smoke is `make smoke`: the whole user journey against a running platform (`make run` or
// `docker compose up`), through grpcurl only, exactly as a user at a terminal would make it, and
// then a second journey through the REST gateway with curl only (rest.go).
//
// It first asks Consul which instances of each service (and of the gateway) pass their health
// checks, and compares that with how many it expects (-replicas): every instance that is
// missing (not registered: stopped, or deregistered) or failing (critical, with its check's
// output) is named, and fewer passing than expected fails the run at once, before any dial. The
// journey then runs against the instances that pass: it lists and describes every service through
// reflection on every passing instance, health-checks it, signs up, logs in, renews the access
// token with the refresh token, creates a paid and a declined order, cancels the paid one (which
// refunds it), reads the payments, logs out (the refresh token is then refused), logs in as the
// platform's admin (made by `user admin`, its password in -admin-password-file) to list the
// accounts and finds that no call makes the smoke user an admin, and checks every answer,
// spreading the calls over the replicas. The gateway counts as an instance: its gRPC port answers
// reflection and health, it is registered and passing in Consul, and Prometheus scrapes it. It
// stops at the first wrong answer, saying what it expected and what it got.
//
// Consul knows the compose stack's instances by their container names (user-2:50051); smoke
// reaches replica n of a service on the host's well-known port of that replica (user-2 on
// -host:50061, the gateway on -host:50054), as docker-compose.yml publishes them. Addresses that
// are not container names (make run's 127.0.0.1:50061) are dialled as Consul gives them.
//
// Usage:
//
//	smoke [-grpcurl path] [-curl path] [-gateway http://127.0.0.1:8080]
//	      [-host 127.0.0.1] [-replicas 2 | -replicas user=2,order=2,payment=2,gateway=1]
//	      [-instances user=host:port,host:port ...] [-consul 127.0.0.1:8500]
//	      [-cacert data/secrets/ca.pem] [-consul-token-file data/secrets/consul/reader.token]
//	      [-admin-email admin@meshmart.local] [-admin-password-file data/secrets/admin/password]
//	      [-prometheus 127.0.0.1:9090] [-jaeger 127.0.0.1:16686]
//
// -replicas is how many instances must pass in Consul: one number for each of user, order and
// payment (the gateway stays 1), or service=count pairs, a service left out keeping its default
// (2 for the services, 1 for the gateway). With one replica of the compose stack stopped
// (`docker compose stop user-2`), `-replicas user=1` checks the rest. -instances names where the
// host reaches a service's instances when they are not on the well-known ports (the swarm stack's,
// which Docker picks: `make smoke-swarm` passes them); that many must then pass in Consul.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshmart/meshmart/tools/platform"
)

func main() {
	cfg := config{}
	flag.StringVar(&cfg.grpcurl, "grpcurl", "grpcurl", "the grpcurl executable (make smoke passes go tool's)")
	flag.StringVar(&cfg.curl, "curl", "curl", "the curl executable, for the REST journey")
	flag.StringVar(&cfg.gateway, "gateway", "http://127.0.0.1:"+strconv.Itoa(platform.GatewayPorts.REST), "the gateway's base URL, for the REST journey")
	host := flag.String("host", "127.0.0.1", "host the services' and the gateway's well-known ports are on")
	replicas := replicasFlag{}
	flag.Var(replicas, "replicas", "instances that must pass in Consul: a number for each of user, order and payment (the gateway stays 1), or service=count pairs such as user=1,order=2 (a service left out: 2, the gateway 1); the journey runs on those that pass")
	flag.StringVar(&cfg.consul, "consul", "127.0.0.1:8500", "Consul HTTP address, to check every instance is registered and passing; empty skips")
	flag.StringVar(&cfg.cacert, "cacert", "data/secrets/ca.pem", "the CA bundle that verifies the services' certificates (grpcurl -cacert): make run's, or the compose stack's data/compose/ca.pem")
	flag.StringVar(&cfg.consulTokenFile, "consul-token-file", "data/secrets/consul/reader.token", "a Consul ACL token that may read the catalog (the compose stack's: data/compose/consul-reader.token)")
	flag.StringVar(&cfg.prometheus, "prometheus", "", "Prometheus HTTP address, to check it scrapes every instance (the compose stack: 127.0.0.1:9090)")
	flag.StringVar(&cfg.jaeger, "jaeger", "", "Jaeger query HTTP address, to check an order's trace spans the order and payment services (the compose stack: 127.0.0.1:16686)")
	flag.StringVar(&cfg.adminEmail, "admin-email", platform.AdminEmail, "the admin's email (make run's)")
	instances := pairs{}
	flag.Var(instances, "instances", "name=host:port,host:port: the gRPC addresses of a service's (or the gateway's) instances, instead of the well-known ports on -host (repeatable; the swarm stack's: go run ./tools/swarm smoke-flags)")
	adminFile := flag.String("admin-password-file", "data/secrets/admin/password", "file holding the admin's password (make run's; the compose stack's: data/compose/admin-password)")
	flag.Parse()
	pw, err := os.ReadFile(*adminFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "smoke: the admin's password:", err)
		os.Exit(1)
	}
	cfg.adminPassword = strings.TrimSpace(string(pw))
	cfg.host = *host
	cfg.expected = replicas.addrs(*host)
	cfg.given = map[string]bool{}
	for name, addrs := range instances {
		cfg.expected[name] = addrs
		cfg.given[name] = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := journey(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "smoke: FAILED:", err)
		os.Exit(1)
	}
	fmt.Println("smoke: every answer as expected")
}

type config struct {
	adminEmail, adminPassword string
	grpcurl                   string
	curl                      string
	gateway                   string // the gateway's base URL
	cacert                    string
	consulTokenFile           string
	consul                    string
	prometheus                string
	jaeger                    string
	// host is where the compose stack publishes its replicas' well-known ports (-host).
	host string
	// expected are the addresses, on the host, of the instances that must pass (the well-known
	// ports of -replicas replicas), by service or gateway: their number is what must pass in
	// Consul, and they name what is missing. Without Consul (-consul "") the journey runs on them.
	expected map[string][]string
	// given marks the services whose expected addresses -instances named: published ports that
	// Consul's registered addresses (overlay task names) do not map to.
	given map[string]bool
	// instances are the addresses the journey calls, by service or gateway: the instances
	// Consul says pass (journey sets them), or the expected ones without Consul.
	instances map[string][]string
}

// catalogService is the order service's second gRPC service.
const catalogService = "meshmart.order.v1.CatalogService"

// fullNames are the gRPC services the platform's services serve.
var fullNames = map[string]string{
	"user":    "meshmart.user.v1.UserService",
	"order":   "meshmart.order.v1.OrderService",
	"payment": "meshmart.payment.v1.PaymentService",
}

// call is one grpcurl invocation and what came of it.
type call struct {
	args   []string
	out    []byte // stdout
	errOut string // stderr
	err    error
}

// object decodes the JSON answer.
func (c call) object() (map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal(c.out, &m); err != nil {
		return nil, fmt.Errorf("grpcurl %s: answer is not a JSON object: %v\n%s", strings.Join(c.args, " "), err, c.out)
	}
	return m, nil
}

type runner struct {
	cfg config
	log *os.File
}

// grpcurl runs grpcurl with args, a JSON request body when data is not nil, and a bearer token
// when token is not empty.
func (r runner) grpcurl(ctx context.Context, token string, data any, args ...string) call {
	full := []string{"-cacert", r.cfg.cacert, "-max-time", "20"}
	if token != "" {
		full = append(full, "-H", "authorization: Bearer "+token)
	}
	var stdin []byte
	if data != nil {
		stdin, _ = json.Marshal(data)
		full = append(full, "-d", "@")
	}
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, r.cfg.grpcurl, full...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	shown := slices.Clone(full)
	for i, a := range shown {
		if strings.HasPrefix(a, "authorization: ") {
			shown[i] = "authorization: Bearer $TOKEN"
		}
	}
	return call{args: shown, out: stdout.Bytes(), errOut: stderr.String(), err: err}
}

// ok runs a call that must succeed and returns its answer.
func (r runner) ok(ctx context.Context, token string, data any, args ...string) (map[string]any, error) {
	c := r.grpcurl(ctx, token, data, args...)
	if c.err != nil {
		return nil, fmt.Errorf("grpcurl %s: %v\n%s", strings.Join(c.args, " "), c.err, c.errOut)
	}
	return c.object()
}

// fails runs a call that must fail with the given gRPC code (grpcurl prints "Code: X").
func (r runner) fails(ctx context.Context, code, token string, data any, args ...string) error {
	c := r.grpcurl(ctx, token, data, args...)
	if c.err == nil {
		return fmt.Errorf("grpcurl %s: succeeded, want %s\n%s", strings.Join(c.args, " "), code, c.out)
	}
	if !strings.Contains(c.errOut, "Code: "+code+"\n") {
		return fmt.Errorf("grpcurl %s: want %s, got\n%s", strings.Join(c.args, " "), code, c.errOut)
	}
	return nil
}

func (r runner) step(format string, args ...any) {
	fmt.Fprintf(r.log, "smoke: "+format+"\n", args...)
}

// get walks a decoded JSON answer: get(m, "order", "status").
func get(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = obj[p]
	}
	return v
}

func str(m map[string]any, path ...string) string {
	s, _ := get(m, path...).(string)
	return s
}

// expect fails when an answer's field is not want.
func expect(what string, m map[string]any, want string, path ...string) error {
	if got := str(m, path...); got != want {
		answer, _ := json.Marshal(m)
		return fmt.Errorf("%s: %s = %q, want %q (answer %s)", what, strings.Join(path, "."), got, want, answer)
	}
	return nil
}

func journey(ctx context.Context, cfg config, log *os.File) error {
	r := runner{cfg: cfg, log: log}
	r.cfg.instances = cfg.expected
	if cfg.consul != "" {
		passing, err := r.passing(ctx)
		if err != nil {
			return err
		}
		r.cfg.instances = passing
	}
	cfg = r.cfg
	if err := r.everyInstance(ctx); err != nil {
		return err
	}
	user1, user2 := cfg.instances["user"][0], cfg.instances["user"][len(cfg.instances["user"])-1]
	order1, order2 := cfg.instances["order"][0], cfg.instances["order"][len(cfg.instances["order"])-1]
	pay1, pay2 := cfg.instances["payment"][0], cfg.instances["payment"][len(cfg.instances["payment"])-1]

	// Sign up, with a name of its own so that the journey can run again on the same data.
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := "smoke" + hex.EncodeToString(suffix)
	email := name + "@example.com"
	r.step("sign up %s on %s", email, user1)
	if err := r.fails(ctx, "InvalidArgument", "", map[string]any{"email": "not-an-email", "username": name, "password": "correct horse", "given_name": "Smoke"},
		user1, fullNames["user"]+"/CreateUser"); err != nil {
		return err
	}
	created, err := r.ok(ctx, "", map[string]any{"email": email, "username": name, "password": "correct horse", "given_name": "Smoke"},
		user1, fullNames["user"]+"/CreateUser")
	if err != nil {
		return err
	}
	if err := expect("CreateUser", created, "USER_STATUS_ACTIVE", "user", "status"); err != nil {
		return err
	}
	userID := str(created, "user", "id")
	if userID == "" || get(created, "user", "password") != nil || get(created, "user", "passwordHash") != nil {
		return fmt.Errorf("CreateUser: want an id and no password in %v", created)
	}
	if err := r.fails(ctx, "AlreadyExists", "", map[string]any{"email": email, "username": name + "x", "password": "correct horse", "given_name": "Smoke"},
		user2, fullNames["user"]+"/CreateUser"); err != nil {
		return err
	}

	r.step("log in on the other replica, %s", user2)
	if err := r.fails(ctx, "Unauthenticated", "", map[string]any{"username": name, "password": "wrong horse"}, user2, fullNames["user"]+"/Login"); err != nil {
		return err
	}
	login, err := r.ok(ctx, "", map[string]any{"username": name, "password": "correct horse"}, user2, fullNames["user"]+"/Login")
	if err != nil {
		return err
	}
	if str(login, "accessToken") == "" || str(login, "refreshToken") == "" {
		return fmt.Errorf("Login: no accessToken or refreshToken in %v", login)
	}
	// Access tokens live minutes: renew with the refresh token, as a client does, on the other
	// replica. The refresh token spent, sending it again is a replay, which ends the session.
	r.step("renew the access token with RefreshToken on %s", user1)
	renewed, err := r.ok(ctx, "", map[string]any{"refresh_token": str(login, "refreshToken")}, user1, fullNames["user"]+"/RefreshToken")
	if err != nil {
		return err
	}
	token := str(renewed, "accessToken")
	if token == "" || str(renewed, "refreshToken") == "" {
		return fmt.Errorf("RefreshToken: no accessToken or refreshToken in %v", renewed)
	}
	me, err := r.ok(ctx, token, map[string]any{"id": userID}, user1, fullNames["user"]+"/GetUser")
	if err != nil {
		return err
	}
	if err := expect("GetUser", me, email, "user", "email"); err != nil {
		return err
	}

	r.step("create a paid order on %s", order1)
	if err := r.fails(ctx, "Unauthenticated", "", map[string]any{}, order1, fullNames["order"]+"/ListOrders"); err != nil {
		return err
	}
	r.step("browse the catalog on %s with no token; a lower price is refused", order1)
	book, err := r.ok(ctx, "", map[string]any{"sku": "BOOK-1"}, order1, catalogService+"/GetProduct")
	if err != nil {
		return err
	}
	if err := expect("BOOK-1's price", book, "1999", "product", "price", "minorUnits"); err != nil {
		return err
	}
	if err := r.fails(ctx, "FailedPrecondition", token, map[string]any{"items": []any{map[string]any{"sku": "BOOK-1", "quantity": 2, "unit_price_minor": 1}},
		"payment_method_token": "tok_approve", "idempotency_key": name + "-cheap"}, order1, fullNames["order"]+"/CreateOrder"); err != nil {
		return err
	}
	// No price and no currency: the order is priced from the catalog.
	item := map[string]any{"sku": "BOOK-1", "quantity": 2}
	paidReq := map[string]any{"items": []any{item}, "payment_method_token": "tok_approve", "idempotency_key": name + "-paid"}
	paid, err := r.ok(ctx, token, paidReq, order1, fullNames["order"]+"/CreateOrder")
	if err != nil {
		return err
	}
	if err := expect("the paid order", paid, "ORDER_STATUS_PAID", "order", "status"); err != nil {
		return err
	}
	if err := expect("the paid order's total", paid, "3998", "order", "total", "minorUnits"); err != nil {
		return err
	}
	orderID, paymentID := str(paid, "order", "id"), str(paid, "order", "paymentId")
	if paymentID == "" {
		return fmt.Errorf("the paid order has no paymentId: %v", paid)
	}
	again, err := r.ok(ctx, token, paidReq, order2, fullNames["order"]+"/CreateOrder")
	if err != nil {
		return err
	}
	if err := expect("CreateOrder retried with the same key on the other replica", again, orderID, "order", "id"); err != nil {
		return err
	}

	r.step("create a declined order on %s", order2)
	declined, err := r.ok(ctx, token, map[string]any{"items": []any{map[string]any{"sku": "PEN-7", "quantity": 1}},
		"payment_method_token": "tok_decline", "idempotency_key": name + "-declined"},
		order2, fullNames["order"]+"/CreateOrder")
	if err != nil {
		return err
	}
	if err := expect("the declined order", declined, "ORDER_STATUS_PAYMENT_FAILED", "order", "status"); err != nil {
		return err
	}
	if str(declined, "order", "paymentFailureReason") == "" {
		return fmt.Errorf("the declined order has no paymentFailureReason: %v", declined)
	}

	r.step("cancel the paid order on %s: it is refunded", order2)
	cancelled, err := r.ok(ctx, token, map[string]any{"id": orderID, "reason": "smoke test"}, order2, fullNames["order"]+"/CancelOrder")
	if err != nil {
		return err
	}
	if err := expect("CancelOrder", cancelled, "ORDER_STATUS_CANCELLED", "order", "status"); err != nil {
		return err
	}
	got, err := r.ok(ctx, token, map[string]any{"id": orderID}, order1, fullNames["order"]+"/GetOrder")
	if err != nil {
		return err
	}
	if err := expect("GetOrder after the cancellation", got, "ORDER_STATUS_CANCELLED", "order", "status"); err != nil {
		return err
	}

	r.step("read the payments on %s and %s", pay1, pay2)
	payment, err := r.ok(ctx, token, map[string]any{"id": paymentID}, pay1, fullNames["payment"]+"/GetPayment")
	if err != nil {
		return err
	}
	if err := expect("the cancelled order's payment", payment, "PAYMENT_STATUS_REFUNDED", "payment", "status"); err != nil {
		return err
	}
	if err := expect("the cancelled order's payment", payment, "3998", "payment", "refundedAmount", "minorUnits"); err != nil {
		return err
	}
	list, err := r.ok(ctx, token, map[string]any{}, pay2, fullNames["payment"]+"/ListPayments")
	if err != nil {
		return err
	}
	payments, _ := get(list, "payments").([]any)
	var statuses []string
	for _, p := range payments {
		m, _ := p.(map[string]any)
		statuses = append(statuses, str(m, "status"))
	}
	slices.Sort(statuses)
	if want := []string{"PAYMENT_STATUS_DECLINED", "PAYMENT_STATUS_REFUNDED"}; !slices.Equal(statuses, want) {
		return fmt.Errorf("ListPayments: statuses %v, want %v", statuses, want)
	}
	if err := r.fails(ctx, "NotFound", token, map[string]any{"id": "00000000-0000-4000-8000-000000000000"}, pay1, fullNames["payment"]+"/GetPayment"); err != nil {
		return err
	}

	r.step("no call makes %s an admin; the admin %s lists the accounts", name, cfg.adminEmail)
	if err := r.fails(ctx, "InvalidArgument", token, map[string]any{"user": map[string]any{"id": userID, "roles": []string{"ROLE_ADMIN"}},
		"update_mask": map[string]any{"paths": []string{"roles"}}}, user2, fullNames["user"]+"/UpdateUser"); err != nil {
		return err
	}
	if err := r.fails(ctx, "PermissionDenied", token, map[string]any{"page_size": 1}, user1, fullNames["user"]+"/ListUsers"); err != nil {
		return err
	}
	r.step("log out on %s: the session's refresh token is refused", user2)
	if _, err := r.ok(ctx, token, map[string]any{"refresh_token": str(renewed, "refreshToken")}, user2, fullNames["user"]+"/Logout"); err != nil {
		return err
	}
	if err := r.fails(ctx, "Unauthenticated", "", map[string]any{"refresh_token": str(renewed, "refreshToken")}, user1, fullNames["user"]+"/RefreshToken"); err != nil {
		return err
	}
	adminLogin, err := r.ok(ctx, "", map[string]any{"email": cfg.adminEmail, "password": cfg.adminPassword}, user1, fullNames["user"]+"/Login")
	if err != nil {
		return err
	}
	if _, err := r.ok(ctx, str(adminLogin, "accessToken"), map[string]any{"page_size": 1}, user2, fullNames["user"]+"/ListUsers"); err != nil {
		return err
	}
	if err := r.restJourney(ctx); err != nil {
		return err
	}
	if cfg.prometheus != "" {
		r.step("Prometheus at %s scrapes every instance", cfg.prometheus)
		if err := r.scraped(ctx); err != nil {
			return err
		}
	}
	if cfg.jaeger != "" {
		r.step("Jaeger at %s holds a CreateOrder trace through the order and payment services", cfg.jaeger)
		if err := r.traced(ctx); err != nil {
			return err
		}
	}
	return nil
}

// getJSON fetches url into v.
func getJSON(ctx context.Context, url string, v any) error { return getJSONAs(ctx, url, "", v) }

// getJSONAs is getJSON with a Consul ACL token.
func getJSONAs(ctx context.Context, url, consulToken string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if consulToken != "" {
		req.Header.Set("X-Consul-Token", consulToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// poll retries check every second for a minute: scrapes and trace exports run on their own
// schedules.
func poll(ctx context.Context, check func() error) error {
	deadline := time.Now().Add(time.Minute)
	for {
		err := check()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}

// scraped checks that Prometheus found every instance through Consul and scrapes it.
func (r runner) scraped(ctx context.Context) error {
	want := 0
	for _, svc := range platform.Programs {
		want += len(r.cfg.instances[svc])
	}
	return poll(ctx, func() error {
		var targets struct {
			Data struct {
				ActiveTargets []struct {
					Labels map[string]string `json:"labels"`
					Health string            `json:"health"`
				} `json:"activeTargets"`
			} `json:"data"`
		}
		if err := getJSON(ctx, "http://"+r.cfg.prometheus+"/api/v1/targets?state=active", &targets); err != nil {
			return fmt.Errorf("prometheus: %w", err)
		}
		var up []string
		for _, t := range targets.Data.ActiveTargets {
			if t.Health == "up" && slices.Contains(platform.Programs, t.Labels["service"]) {
				up = append(up, t.Labels["instance"])
			}
		}
		if len(up) != want {
			return fmt.Errorf("prometheus scrapes %d instances (%v), want %d", len(up), up, want)
		}
		return nil
	})
}

// traced checks that Jaeger holds a trace of the order service that reached user and payment.
func (r runner) traced(ctx context.Context) error {
	return poll(ctx, func() error {
		var traces struct {
			Data []struct {
				Processes map[string]struct {
					ServiceName string `json:"serviceName"`
				} `json:"processes"`
			} `json:"data"`
		}
		if err := getJSON(ctx, "http://"+r.cfg.jaeger+"/api/traces?service=order&operation=meshmart.order.v1.OrderService%2FCreateOrder&limit=20&lookback=1h", &traces); err != nil {
			return fmt.Errorf("jaeger: %w", err)
		}
		for _, t := range traces.Data {
			seen := map[string]bool{}
			for _, p := range t.Processes {
				seen[p.ServiceName] = true
			}
			// An active account's order asks the user service nothing (its token says so: issue
			// 18, the user-check hop): the trace is the order's and its payment's.
			if seen["order"] && seen["payment"] {
				return nil
			}
		}
		return fmt.Errorf("jaeger: none of %d CreateOrder traces spans order and payment", len(traces.Data))
	})
}

// everyInstance lists and describes every instance's services through reflection and checks
// its health, overall and per service. The gateway serves no service of its own on its gRPC
// port: only health and reflection.
func (r runner) everyInstance(ctx context.Context) error {
	for _, svc := range platform.Programs {
		full := fullNames[svc]
		for _, addr := range r.cfg.instances[svc] {
			r.step("%s at %s: reflection and health", svc, addr)
			c := r.grpcurl(ctx, "", nil, addr, "list")
			if c.err != nil {
				return fmt.Errorf("grpcurl %s list: %v\n%s", addr, c.err, c.errOut)
			}
			listed := strings.Fields(string(c.out))
			for _, want := range []string{full, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
				if want != "" && !slices.Contains(listed, want) {
					return fmt.Errorf("grpcurl %s list: %s missing from %v", addr, want, listed)
				}
			}
			if full == "" {
				health, err := r.ok(ctx, "", map[string]any{}, addr, "grpc.health.v1.Health/Check")
				if err != nil {
					return err
				}
				if err := expect("health of "+addr, health, "SERVING", "status"); err != nil {
					return err
				}
				continue
			}
			c = r.grpcurl(ctx, "", nil, addr, "describe", full)
			if c.err != nil || !bytes.Contains(c.out, []byte("service "+full[strings.LastIndex(full, ".")+1:]+" {")) {
				return fmt.Errorf("grpcurl %s describe %s: %v\n%s%s", addr, full, c.err, c.out, c.errOut)
			}
			for _, name := range []string{"", full} {
				health, err := r.ok(ctx, "", map[string]any{"service": name}, addr, "grpc.health.v1.Health/Check")
				if err != nil {
					return err
				}
				if err := expect("health of "+addr+" ("+name+")", health, "SERVING", "status"); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// pairs is a repeatable name=a,b flag.
type pairs map[string][]string

func (p pairs) String() string { return fmt.Sprint(map[string][]string(p)) }

func (p pairs) Set(v string) error {
	name, list, ok := strings.Cut(v, "=")
	if !ok || name == "" || list == "" {
		return fmt.Errorf("want name=host:port[,host:port], not %q", v)
	}
	p[name] = strings.Split(list, ",")
	return nil
}
