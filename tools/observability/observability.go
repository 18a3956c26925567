// Package observability checks meshmart's dashboards and alert rules (deploy/observability)
// against Prometheus' own tools and the live platform: its tests run promtool's rule checks and
// unit tests, parse every dashboard query with Prometheus' PromQL parser (promtool's), and find
// every metric a dashboard or rule names on the /metrics of a running platform, so that a renamed
// metric breaks the build rather than a dashboard. The helpers here read the files.
package observability

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// PrometheusModuleVersion is the version of github.com/prometheus/prometheus promtool is built
// from: the Makefile's PROMETHEUS_MODULE_VERSION, the Prometheus stand-in's.
const PrometheusModuleVersion = "v0.316.0"

// Promtool returns the path of the promtool `make promtool` builds, or an error saying to build it.
func Promtool() (string, error) {
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		cache = filepath.Join(home, ".cache")
	}
	path := filepath.Join(cache, "meshmart", "bin", "promtool-"+PrometheusModuleVersion, "promtool")
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("no promtool at %s: run `make promtool` (it builds it from the Go module proxy)", path)
	}
	return path, nil
}

// Query is one PromQL expression of a dashboard: a panel's target or a variable's query.
type Query struct {
	Dashboard, Panel, Expr string
}

// Dashboard is the part of a Grafana dashboard the checks read.
type Dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []Panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

// Panel is one panel of a dashboard, with its queries; rows hold panels of their own.
type Panel struct {
	Title      string          `json:"title"`
	Type       string          `json:"type"`
	Datasource json.RawMessage `json:"datasource"`
	Targets    []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []Panel `json:"panels"`
}

// ReadDashboard reads a dashboard's JSON file.
func ReadDashboard(path string) (Dashboard, error) {
	var d Dashboard
	data, err := os.ReadFile(path)
	if err != nil {
		return d, err
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return d, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// labelValues is Grafana's label_values(selector, label) variable query.
var labelValues = regexp.MustCompile(`^label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$`)

// Queries returns every PromQL expression of the dashboard: each panel target's, and the selector
// of each label_values variable.
func (d Dashboard) Queries() []Query {
	var out []Query
	var walk func(ps []Panel)
	walk = func(ps []Panel) {
		for _, p := range ps {
			for _, t := range p.Targets {
				out = append(out, Query{d.Title, p.Title, t.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(string)
		if m, ok := v.Query.(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		if sub := labelValues.FindStringSubmatch(q); sub != nil {
			out = append(out, Query{d.Title, "variable " + v.Name, sub[1]})
		}
	}
	return out
}

// grafanaVariables are what the checks put in place of Grafana's variables: a value of the kind
// Grafana would, so that the query parses as Prometheus will see it.
var grafanaVariables = strings.NewReplacer(
	"$__rate_interval", "1m", "$__interval", "1m", "$__range", "1h",
	"${service}", "meshmart.user.v1.UserService", "$service", "meshmart.user.v1.UserService",
	"${method}", "GetUser", "$method", "GetUser",
)

// Substitute replaces Grafana's variables in expr as Grafana would before sending it.
func Substitute(expr string) string { return grafanaVariables.Replace(expr) }

// RuleFile is the part of a Prometheus rule file the checks read.
type RuleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Record string `yaml:"record"`
			Alert  string `yaml:"alert"`
			Expr   string `yaml:"expr"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// ReadRules reads a rule file.
func ReadRules(path string) (RuleFile, error) {
	var f RuleFile
	data, err := os.ReadFile(path)
	if err != nil {
		return f, err
	}
	return f, yaml.Unmarshal(data, &f)
}

// Recorded returns the names the file's recording rules record.
func (f RuleFile) Recorded() []string {
	var names []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				names = append(names, r.Record)
			}
		}
	}
	return names
}

// Alerts returns the names of the file's alerts.
func (f RuleFile) Alerts() []string {
	var names []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" && !slices.Contains(names, r.Alert) {
				names = append(names, r.Alert)
			}
		}
	}
	return names
}

// probeLabel is the matcher MetricNames has promtool add to every selector of a query.
const probeLabel = "meshmart_probe"

// selector finds the selectors promtool marked: the metric name (if any) before the braces, and
// a __name__ matcher inside them.
var (
	selector    = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)?\{([^{}]*` + probeLabel + `="x"[^{}]*)\}`)
	nameMatcher = regexp.MustCompile(`__name__="([a-zA-Z_:][a-zA-Z0-9_:]*)"`)
)

// MetricNames returns the metric names the expressions select, as Prometheus' PromQL parser sees
// them: promtool parses them and sets a marker matcher on every vector selector, which finds them
// exactly (no guessing which identifiers are functions, labels or keywords). A parse error is
// returned as promtool reports it. The expressions are parsed as one, "(a) or (b) ...", so that a
// dashboard costs one promtool run: each must be an instant vector, as every panel's query and
// alerting rule's expression is.
func MetricNames(promtool string, exprs ...string) ([]string, error) {
	expr := "(" + strings.Join(exprs, ") or (") + ")"
	out, err := exec.Command(promtool, "--experimental", "promql", "label-matchers", "set", expr, probeLabel, "x").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("promtool: %s: %w", strings.TrimSpace(string(out)), err)
	}
	var names []string
	for _, m := range selector.FindAllStringSubmatch(string(out), -1) {
		name := m[1]
		if name == "" {
			if n := nameMatcher.FindStringSubmatch(m[2]); n != nil {
				name = n[1]
			}
		}
		if name == "" {
			return nil, errors.New("a selector without a metric name: " + m[0])
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no metric selected by %q (promtool printed %q)", expr, out)
	}
	return names, nil
}
