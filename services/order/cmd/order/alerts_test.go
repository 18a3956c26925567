package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/meshmart/meshmart/pkg/testkit"
	"github.com/meshmart/meshmart/services/order/internal/order"
)

// TestAlertRules parses the platform's rules (deploy/observability/prometheus/alerts.yml, which
// promtool checks and unit-tests in tools/observability) for what only this service knows: every
// order metric an expression names is one this service exports, with a label value it really
// sets (an older_than bucket the reconciler reports), and compose's Prometheus loads the file.
func TestAlertRules(t *testing.T) {
	root := testkit.RepoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "deploy", "observability", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Record      string            `yaml:"record"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true) // a misspelt key is an error, as it is to Prometheus
	if err := dec.Decode(&file); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}

	// What this service exports: every series of its reconciler's metrics.
	reg := prometheus.NewRegistry()
	m, err := newReconcileMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.Unsettled(make([]int64, len(order.UnsettledAges)))
	m.Attempted(order.OutcomeGivenUp)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string][]string{} // metric name -> "label=value" of its series
	for _, f := range families {
		labels[f.GetName()] = nil
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				labels[f.GetName()] = append(labels[f.GetName()], l.GetName()+"="+l.GetValue())
			}
		}
	}

	metric := regexp.MustCompile(`\b(meshmart_order_[a-z0-9_]+)(\{[^}]*\})?`)
	matcher := regexp.MustCompile(`([a-z_]+)="([^"]*)"`)
	rules := 0
	for _, g := range file.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("a group without a name or rules: %+v", g)
		}
		for _, r := range g.Rules {
			if g.Name != "meshmart-orders" {
				continue // the SLO and replica rules name no order metric
			}
			rules++
			if r.Alert == "" || strings.TrimSpace(r.Expr) == "" || r.Annotations["summary"] == "" || r.Labels["severity"] == "" {
				t.Errorf("rule %q: an alert needs a name, an expression, a severity and a summary", r.Alert)
			}
			if r.For != "" {
				if _, err := model.ParseDuration(r.For); err != nil {
					t.Errorf("rule %s: for %q: %v", r.Alert, r.For, err)
				}
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") {
				t.Errorf("rule %s: unbalanced parentheses in %q", r.Alert, r.Expr)
			}
			found := metric.FindAllStringSubmatch(r.Expr, -1)
			if len(found) == 0 {
				t.Errorf("rule %s names no order metric: %q", r.Alert, r.Expr)
			}
			for _, f := range found {
				series, ok := labels[f[1]]
				if !ok {
					t.Errorf("rule %s: the order service exports no %s", r.Alert, f[1])
					continue
				}
				for _, lm := range matcher.FindAllStringSubmatch(f[2], -1) {
					if !slices.Contains(series, lm[1]+"="+lm[2]) {
						t.Errorf("rule %s: %s has no series %s=%q (it has %v)", r.Alert, f[1], lm[1], lm[2], series)
					}
				}
			}
		}
	}
	if rules == 0 {
		t.Fatal("alerts.yml holds no meshmart-orders rule")
	}
	// The stuck-orders buckets are the reconciler's ages, in seconds.
	for _, age := range []string{"900", "3600"} {
		secs, _ := strconv.Atoi(age)
		if !slices.Contains(order.UnsettledAges, time.Duration(secs)*time.Second) {
			t.Errorf("no unsettled-orders bucket of %s s", age)
		}
	}

	// Compose's Prometheus loads the file.
	prom, err := os.ReadFile(filepath.Join(root, "tools", "compose", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		RuleFiles []string `yaml:"rule_files"`
	}
	if err := yaml.Unmarshal(prom, &cfg); err != nil || !slices.Contains(cfg.RuleFiles, "/etc/prometheus/alerts.yml") {
		t.Errorf("prometheus.yml rule_files = %v (%v); want /etc/prometheus/alerts.yml", cfg.RuleFiles, err)
	}
	compose, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(compose), "./deploy/observability/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro") {
		t.Error("docker-compose.yml does not mount deploy/observability/prometheus/alerts.yml into Prometheus")
	}
}
