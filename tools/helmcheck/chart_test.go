package helmcheck

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// chartDir is the chart under test, relative to this package.
const chartDir = "../../deploy/helm/meshmart"

// helmBin is the pinned Helm (`go tool helm` of tools/go.mod), or $HELM when set.
var helmBin string

func TestMain(m *testing.M) {
	helmBin = os.Getenv("HELM")
	if helmBin == "" {
		// `go tool -n` builds the pinned Helm when needed and prints its path; the Go module proxy
		// (or its cache) is all it needs, so a failure here is a broken setup, never a skip.
		out, err := exec.Command("go", "tool", "-n", "helm").Output()
		if err != nil {
			fmt.Fprintf(os.Stderr, "helmcheck: cannot build the pinned Helm with `go tool -n helm` in tools/: %v\n", err)
			os.Exit(2)
		}
		helmBin = strings.TrimSpace(string(out))
	}
	os.Exit(m.Run())
}

// helm runs the pinned Helm and returns its standard output, or an error with its standard error.
func helm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, helmBin, args...)
	// Helm keeps no state between runs here: no repositories, no registry login, no cache.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"), "HELM_DATA_HOME="+filepath.Join(home, "data"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("helm %s: %w\n%s%s", strings.Join(args, " "), err, stderr.Bytes(), out)
	}
	return out, nil
}

// productionRequired are the values values-production.yaml leaves for the user to provide.
var productionRequired = []string{
	"image.registry=registry.example.com/meshmart",
	"image.tag=1.2.3",
	"consul.address=consul-server.consul.svc:8500",
	"ingress.host=shop.example.com",
}

// dummySecrets are secret-looking values handed to the chart through --set under the keys a user
// might try (the chart has no such keys: its secrets are Secrets made outside it); none may reach
// a manifest. A template that dumped the values (a checksum or a debug ConfigMap) would leak them.
var dummySecrets = map[string]string{
	"database.url":             "postgres://user_service:Dummy-DB-Password-7f3a@db:5432/meshmart_user",
	"user.databaseURL":         "postgres://user_service:Dummy-DB-Password-91c2@db:5432/meshmart_user",
	"consul.token":             "d5b1f4c2-dummy-consul-token-0000000000ab",
	"user.signingKey":          "-----BEGIN PRIVATE KEY-----DummySigningKey8d1e-----END PRIVATE KEY-----",
	"postgresql.auth.password": "Dummy-Postgres-Superuser-4e7b",
	"admin.password":           "Dummy-Admin-Password-c0ffee",
}

func dummySecretArgs() (args, values []string) {
	for k, v := range dummySecrets {
		args = append(args, "--set-string", k+"="+v)
		values = append(values, v)
	}
	return args, values
}

// release is one way of installing the chart the checks render.
type release struct {
	name string
	args []string
	// want counts the objects of some kinds the release must render.
	want map[string]int
}

func observabilityFile(name string) bool {
	_, err := os.Stat(filepath.Join(chartDir, "templates", name))
	return err == nil
}

func releases() []release {
	prod := []string{"-f", chartDir + "/values-production.yaml"}
	for _, s := range productionRequired {
		prod = append(prod, "--set", s)
	}
	core := map[string]int{"Deployment": 4, "PodDisruptionBudget": 4, "Service": 4, "ServiceAccount": 4, "Job": 3, "NetworkPolicy": 7}
	with := func(extra map[string]int) map[string]int {
		m := map[string]int{}
		for k, v := range core {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	obs := map[string]int{"HorizontalPodAutoscaler": 4}
	// The dashboards and alert rules are another part's templates: once they are in the chart,
	// turning them on must render objects, which must validate like the rest.
	if observabilityFile("prometheusrule.yaml") {
		obs["PrometheusRule"] = 1
	}
	prodWant := with(map[string]int{"HorizontalPodAutoscaler": 4, "Ingress": 1})
	if observabilityFile("prometheusrule.yaml") {
		prodWant["PrometheusRule"] = 1
	}
	return []release{
		{"defaults", nil, with(map[string]int{"HorizontalPodAutoscaler": 4, "Ingress": 0, "Certificate": 0})},
		{"dev", []string{"-f", chartDir + "/values-dev.yaml", "--set-file", "order.catalogSeed=../../services/order/catalog.json"},
			with(map[string]int{"HorizontalPodAutoscaler": 0, "Ingress": 1, "ConfigMap": 1})},
		{"production", prod, prodWant},
		{"production-cert-manager", append(append([]string{}, prod...), "--set", "tls.source=certManager"),
			with(map[string]int{"Certificate": 4})},
		{"observability", []string{"--set", "observability.grafanaDashboards.enabled=true,observability.prometheusRule.enabled=true"}, with(obs)},
		{"host-agent-tracing", []string{"--set", "consul.hostAgent=true,tracing.otlpEndpoint=otel-collector.monitoring.svc:4317,networkPolicy.tracing[0].ipBlock.cidr=10.20.0.0/16"},
			with(nil)},
	}
}

// TestLint runs `helm lint --strict` with every values file: warnings fail too.
func TestLint(t *testing.T) {
	t.Parallel()
	for _, r := range releases() {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			if _, err := helm(t, append([]string{"lint", "--strict", chartDir}, r.args...)...); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRender renders every release and holds it to the pinned API and the policy.
func TestRender(t *testing.T) {
	t.Parallel()
	for _, r := range releases() {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			secretArgs, secrets := dummySecretArgs()
			args := append([]string{"template", "shop", chartDir, "--namespace", "meshmart"}, r.args...)
			manifest, err := helm(t, append(args, secretArgs...)...)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := Decode(manifest)
			if err != nil {
				t.Fatalf("not valid against the pinned Kubernetes API:\n%v", err)
			}
			count := map[string]int{}
			for _, o := range objs {
				count[o.Kind]++
			}
			for kind, n := range r.want {
				if count[kind] != n {
					t.Errorf("%d %s objects rendered, want %d", count[kind], kind, n)
				}
			}
			if r.name == "host-agent-tracing" {
				checkHostAgentTracing(t, objs)
			}
			for _, v := range Check(objs) {
				t.Error(v)
			}
			if leaked := Leaks(manifest, secrets); len(leaked) > 0 {
				t.Errorf("secret values passed with --set appear in the manifest: %q", leaked)
			}
		})
	}
}

// checkHostAgentTracing checks the environment and egress of the node-local Consul agent layout
// with tracing on.
func checkHostAgentTracing(t *testing.T, objs []Object) {
	t.Helper()
	for _, o := range objs {
		if np, ok := o.Value.(*networkingv1.NetworkPolicy); ok && !strings.HasSuffix(o.Name, "-migrate") {
			if !slices.ContainsFunc(np.Spec.Egress, func(r networkingv1.NetworkPolicyEgressRule) bool {
				return len(r.Ports) == 1 && r.Ports[0].Port.IntValue() == 4317 && len(r.To) == 1 && r.To[0].IPBlock != nil
			}) {
				t.Errorf("%s: no egress to the trace collector", o)
			}
		}
		d, ok := o.Value.(*appsv1.Deployment)
		if !ok {
			continue
		}
		env := map[string]corev1.EnvVar{}
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			env[e.Name] = e
		}
		if h := env["HOST_IP"]; h.ValueFrom == nil || h.ValueFrom.FieldRef == nil || h.ValueFrom.FieldRef.FieldPath != "status.hostIP" {
			t.Errorf("%s: HOST_IP does not come from status.hostIP: %+v", o, h)
		}
		if got := env["CONSUL_HTTP_ADDR"].Value; got != "$(HOST_IP):8500" {
			t.Errorf("%s: CONSUL_HTTP_ADDR = %q, want the node's agent", o, got)
		}
		if got := env["OTEL_EXPORTER_OTLP_ENDPOINT"].Value; got != "otel-collector.monitoring.svc:4317" {
			t.Errorf("%s: OTEL_EXPORTER_OTLP_ENDPOINT = %q", o, got)
		}
	}
}

// TestRefusals shows the chart refuses values that would deploy something broken or unsafe,
// naming what is wrong.
func TestRefusals(t *testing.T) {
	t.Parallel()
	prodWithout := func(skip string) []string {
		args := []string{"-f", chartDir + "/values-production.yaml"}
		for _, s := range productionRequired {
			if !strings.HasPrefix(s, skip+"=") {
				args = append(args, "--set", s)
			}
		}
		return args
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"production without a registry", prodWithout("image.registry"), "image.registry is required"},
		{"production without Consul", prodWithout("consul.address"), "consul.address is required"},
		{"production without an ingress host", prodWithout("ingress.host"), "ingress.host is required"},
		{"grace period shorter than drain and shutdown", []string{"--set", "lifecycle.terminationGracePeriodSeconds=12"}, "terminationGracePeriodSeconds must exceed"},
		{"unknown tls source", []string{"--set", "tls.source=vault"}, "tls.source must be"},
		{"DSN as an environment value", []string{"--set", "order.extraEnv[0].name=DATABASE_URL,order.extraEnv[0].value=postgres://order_service:pw@db/meshmart_order"}, "secrets are files"},
		{"Consul token as an environment value", []string{"--set", "gateway.extraEnv[0].name=CONSUL_HTTP_TOKEN,gateway.extraEnv[0].value=abc"}, "secrets are files"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := helm(t, append([]string{"template", "shop", chartDir}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("helm template with %v: err = %v, want one containing %q", tt.args, err, tt.want)
			}
		})
	}
}
