package observability_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"gopkg.in/yaml.v3"

	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/pkg/testkit"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/tools/loadkit"
	"github.com/meshmart/meshmart/tools/observability"
)

// paths of the files under test, from the repository root.
const (
	rulesFile      = "deploy/observability/prometheus/alerts.yml"
	rulesTestFile  = "deploy/observability/prometheus/alerts.test.yml"
	dashboardsDir  = "deploy/observability/grafana/dashboards"
	chartRulesDir  = "deploy/helm/meshmart/files/rules"
	chartDashboard = "deploy/helm/meshmart/files/dashboards"
)

func promtool(t *testing.T) string {
	t.Helper()
	p, err := observability.Promtool()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRules runs promtool's checks and unit tests of the rules, and checks that the unit tests
// see every alert both fire and stay quiet.
func TestRules(t *testing.T) {
	t.Parallel()
	root := testkit.RepoRoot(t)
	pt := promtool(t)
	if out, err := exec.Command(pt, "check", "rules", filepath.Join(root, rulesFile)).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	cmd := exec.Command(pt, "test", "rules", filepath.Base(rulesTestFile))
	cmd.Dir = filepath.Join(root, filepath.Dir(rulesTestFile))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}

	rules, err := observability.ReadRules(filepath.Join(root, rulesFile))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, rulesTestFile))
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string           `yaml:"alertname"`
				ExpAlerts []map[string]any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(data, &tests); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	alerts := rules.Alerts()
	if len(alerts) < 8 {
		t.Errorf("only %d alerts in %s: %v", len(alerts), rulesFile, alerts)
	}
	for _, a := range alerts {
		if !fires[a] || !quiet[a] {
			t.Errorf("%s: no unit test where %s fires (%v) or where it stays quiet (%v)", rulesTestFile, a, fires[a], quiet[a])
		}
	}
}

// TestDashboards parses every query of every dashboard with Prometheus' PromQL parser (through
// promtool), Grafana's variables substituted first, and checks what Grafana needs of each file.
func TestDashboards(t *testing.T) {
	t.Parallel()
	root := testkit.RepoRoot(t)
	pt := promtool(t)
	files, _ := filepath.Glob(filepath.Join(root, dashboardsDir, "*.json"))
	if len(files) < 3 {
		t.Fatalf("%d dashboards in %s", len(files), dashboardsDir)
	}
	uids := map[string]bool{}
	for _, f := range files {
		d, err := observability.ReadDashboard(f)
		if err != nil {
			t.Fatal(err)
		}
		if d.UID == "" || d.Title == "" || uids[d.UID] {
			t.Errorf("%s: uid %q and title %q must be set, the uid unique", f, d.UID, d.Title)
		}
		uids[d.UID] = true
		queries := d.Queries()
		if len(queries) == 0 {
			t.Errorf("%s has no query", f)
		}
		exprs := make([]string, len(queries))
		for i, q := range queries {
			exprs[i] = observability.Substitute(q.Expr)
		}
		if _, err := observability.MetricNames(pt, exprs...); err != nil {
			// Which one: each on its own.
			for _, q := range queries {
				if _, err := observability.MetricNames(pt, observability.Substitute(q.Expr)); err != nil {
					t.Errorf("%s, %q: %q: %v", q.Dashboard, q.Panel, q.Expr, err)
				}
			}
		}
		for _, p := range d.Panels {
			// The data source is the dashboard's variable, so that the JSON works in any Grafana.
			if p.Type != "row" && !bytes.Contains(p.Datasource, []byte(`"${datasource}"`)) {
				t.Errorf("%s, %q: datasource %s, want the ${datasource} variable", d.Title, p.Title, p.Datasource)
			}
		}
	}
}

// TestChartCopies checks that the Helm chart's copies of the dashboards and rules (Helm reads no
// file outside the chart) are the files in deploy/observability: copy them with
// `cp deploy/observability/prometheus/alerts.yml deploy/helm/meshmart/files/rules/ &&
// cp deploy/observability/grafana/dashboards/*.json deploy/helm/meshmart/files/dashboards/`.
func TestChartCopies(t *testing.T) {
	t.Parallel()
	root := testkit.RepoRoot(t)
	pairs := map[string]string{filepath.Join(chartRulesDir, "alerts.yml"): rulesFile}
	originals, _ := filepath.Glob(filepath.Join(root, dashboardsDir, "*.json"))
	for _, f := range originals {
		pairs[filepath.Join(chartDashboard, filepath.Base(f))] = filepath.Join(dashboardsDir, filepath.Base(f))
	}
	copies, _ := filepath.Glob(filepath.Join(root, chartDashboard, "*"))
	for _, c := range copies {
		if _, ok := pairs[filepath.Join(chartDashboard, filepath.Base(c))]; !ok {
			t.Errorf("%s is no dashboard of %s: remove it", c, dashboardsDir)
		}
	}
	for cp, orig := range pairs {
		a, err1 := os.ReadFile(filepath.Join(root, cp))
		b, err2 := os.ReadFile(filepath.Join(root, orig))
		if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs from %s (%v, %v): copy it", cp, orig, err1, err2)
		}
	}
}

// TestMetricsOnThePlatform starts the platform (one replica of each service and the gateway),
// drives what the dashboards show (sign-ups and logins, an order placed and cancelled, a payment
// declined, an order stream, a call gRPC refuses before the chain), scrapes every instance, and
// checks that every metric a dashboard or a rule names is exported by some instance, or recorded
// by the rules, or made by Prometheus itself (up).
func TestMetricsOnThePlatform(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the platform")
	}
	root := testkit.RepoRoot(t)
	pt := promtool(t)
	// Every expression of the dashboards and the rules, and where it is.
	var exprs, where []string
	files, _ := filepath.Glob(filepath.Join(root, dashboardsDir, "*.json"))
	for _, f := range files {
		d, err := observability.ReadDashboard(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range d.Queries() {
			exprs, where = append(exprs, observability.Substitute(q.Expr)), append(where, q.Dashboard+", "+q.Panel)
		}
	}
	rules, err := observability.ReadRules(filepath.Join(root, rulesFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs, where = append(exprs, r.Expr), append(where, "rule "+r.Record+r.Alert)
		}
	}
	named, err := observability.MetricNames(pt, exprs...)
	if err != nil {
		t.Fatal(err)
	}
	if len(named) < 20 {
		t.Fatalf("only %d metric names in the dashboards and rules: %v", len(named), named)
	}

	// The reconciler reports its backlog every pass; a short interval has it report before the
	// scrape. The per-address limit is on, as by default, so that its counter exists.
	rig := loadkit.Start(t, loadkit.Options{Replicas: 1, Gateway: true,
		Env: []string{"MESHMART_RECONCILE_INTERVAL=500ms", "MESHMART_ADDRESS_RATE_LIMIT=1000"}})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	drive(ctx, t, rig)

	exported := map[string]bool{}
	for _, in := range rig.Instances {
		scrape(t, in.MetricsAddr, exported)
	}
	recorded := rules.Recorded()
	for _, name := range named {
		if exported[name] || slices.Contains(recorded, name) || name == "up" {
			continue
		}
		var in []string
		for i, e := range exprs {
			if strings.Contains(e, name) {
				in = append(in, where[i])
			}
		}
		t.Errorf("no instance of the platform exports %s, which %s name", name, strings.Join(in, "; "))
	}
}

// drive makes the calls whose metrics the dashboards show.
func drive(ctx context.Context, t *testing.T, rig *loadkit.Rig) {
	t.Helper()
	alice := rig.SignUp(t, "alice")
	actx := alice.In(ctx)
	placed, err := rig.Orders.CreateOrder(actx, loadkit.OrderRequest("obs-1"))
	if err != nil {
		t.Fatalf("CreateOrder: %v", err)
	}
	declined := loadkit.OrderRequest("obs-2")
	declined.PaymentMethodToken = "tok_decline"
	if _, err := rig.Orders.CreateOrder(actx, declined); err != nil && status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("CreateOrder with a declined card: %v", err)
	}
	if _, err := rig.Orders.CancelOrder(actx, &orderv1.CancelOrderRequest{Id: placed.GetOrder().GetId()}); err != nil {
		t.Fatalf("CancelOrder: %v", err)
	}
	if _, err := rig.Payments.ListPayments(actx, &paymentv1.ListPaymentsRequest{}); err != nil {
		t.Fatalf("ListPayments: %v", err)
	}
	// A stream: its counters exist once one started.
	sctx, stop := context.WithCancel(actx)
	stream, err := rig.Orders.TrackOrders(sctx)
	if err != nil {
		t.Fatalf("TrackOrders: %v", err)
	}
	if err := stream.Send(&orderv1.TrackOrdersRequest{Action: &orderv1.TrackOrdersRequest_SubscribeOrderId{SubscribeOrderId: placed.GetOrder().GetId()}}); err != nil {
		t.Fatalf("TrackOrders: %v", err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("TrackOrders: %v", err)
	}
	stop()
	// A request the server cannot decode: gRPC answers it Internal before the chain
	// (grpc_server_rejected_total). Field 1, length-delimited, with a length past the end.
	opts, err := rig.DialOptions()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := client.Dial("consul://"+rig.ConsulAddr+"/user", testkit.DiscardLogger(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	var reply []byte
	err = cc.Invoke(actx, userv1.UserService_CreateUser_FullMethodName, []byte{0x0a, 0x7f, 'a'}, &reply, grpc.ForceCodec(rawCodec{}))
	if status.Code(err) != codes.Internal {
		t.Fatalf("an undecodable request: %v, want Internal", err)
	}
	// The reconciler's backlog gauge is set on its next pass; gRPC counts a rejected call a
	// moment after the caller saw its status.
	time.Sleep(time.Second)
}

// rawCodec sends bytes as they are, as the protobuf codec would send a message.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { *(v.(*[]byte)) = data; return nil }
func (rawCodec) Name() string                       { return "proto" }

// scrape adds the names of the series an instance's /metrics exports to names: each family's
// name, and for histograms and summaries the series names Prometheus stores (_bucket, _sum,
// _count). It reads the exposition's TYPE lines only.
func scrape(t *testing.T, addr string, names map[string]bool) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "#" || f[1] != "TYPE" {
			continue
		}
		names[f[2]] = true
		switch f[3] {
		case "histogram":
			names[f[2]+"_bucket"], names[f[2]+"_sum"], names[f[2]+"_count"] = true, true, true
		case "summary":
			names[f[2]+"_sum"], names[f[2]+"_count"] = true, true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestComposeGrafana checks, with docker compose's own reading of docker-compose.yml, that the
// stand-ins' env leaves Grafana out (no replica, never pulled: no Grafana can be built offline)
// and that without it Grafana runs on the public image with the provisioning mounted.
func TestComposeGrafana(t *testing.T) {
	t.Parallel()
	root := testkit.RepoRoot(t)
	type service struct {
		Image      string `json:"image"`
		PullPolicy string `json:"pull_policy"`
		Deploy     struct {
			Replicas *int `json:"replicas"`
		} `json:"deploy"`
		Volumes []struct {
			Target string `json:"target"`
		} `json:"volumes"`
	}
	grafana := func(envFile string) service {
		cmd := exec.Command("docker", "compose", "--env-file", envFile, "config", "--format", "json")
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("docker compose config (install docker and its compose plugin: tools/standins/build.sh builds the plugin): %v", err)
		}
		var cfg struct {
			Services map[string]service `json:"services"`
		}
		if err := json.Unmarshal(out, &cfg); err != nil {
			t.Fatal(err)
		}
		g, ok := cfg.Services["grafana"]
		if !ok {
			t.Fatal("docker-compose.yml has no grafana service")
		}
		return g
	}
	empty := filepath.Join(t.TempDir(), "empty.env")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	public := grafana(empty)
	if !strings.HasPrefix(public.Image, "grafana/grafana:") || public.Deploy.Replicas == nil || *public.Deploy.Replicas != 1 || public.PullPolicy == "never" {
		t.Errorf("grafana by default: %+v, want one replica of grafana/grafana, pulled when missing", public)
	}
	var targets []string
	for _, v := range public.Volumes {
		targets = append(targets, v.Target)
	}
	for _, want := range []string{"/etc/grafana/provisioning", "/var/lib/grafana/dashboards"} {
		if !slices.Contains(targets, want) {
			t.Errorf("grafana mounts %v, not %s", targets, want)
		}
	}
	offline := grafana(filepath.Join(root, "tools", "standins", "standins.env"))
	if offline.Deploy.Replicas == nil || *offline.Deploy.Replicas != 0 || offline.PullPolicy != "never" {
		t.Errorf("grafana with the stand-ins: replicas %v, pull_policy %q; want 0 and never", offline.Deploy.Replicas, offline.PullPolicy)
	}
}
