// Package helmcheck checks the Helm chart in deploy/helm/meshmart offline, without a cluster: it
// decodes every object `helm template` renders strictly into the Go types of a pinned Kubernetes
// API (k8s.io/api, the version tools/go.mod pins), so that a misspelled field, a wrong type or a
// kind the API does not know fails, and it runs the project's policy over the decoded objects
// (probes, resources, security context, a PodDisruptionBudget per Deployment, NetworkPolicies,
// where the signing key is mounted, no secret value in a manifest). Its tests render the chart
// with every values file and run `helm lint --strict`; `make helm-check` runs them.
package helmcheck

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Object is one rendered manifest decoded into its typed Go value.
type Object struct {
	// Source is the template the object came from, as `helm template` names it
	// ("meshmart/templates/deployment.yaml"); empty when the manifest does not say.
	Source string
	// Kind and Name identify the object in messages.
	Kind, Name string
	// Value is a pointer to the typed object: *appsv1.Deployment, *Certificate, ...
	Value any
}

// String names the object as kubectl does, with its template.
func (o Object) String() string {
	if o.Source == "" {
		return o.Kind + "/" + o.Name
	}
	return fmt.Sprintf("%s/%s (%s)", o.Kind, o.Name, o.Source)
}

// kinds maps every kind the chart may render to a constructor of its Go type. Core kinds are the
// pinned k8s.io/api types; PrometheusRule is the Prometheus operator's own Go type (its module is
// light: k8s.io/api and apimachinery only); cert-manager's module is not (it pulls a whole
// controller), so Certificate is the project's transcription in certmanager.go.
var kinds = map[schema.GroupVersionKind]func() any{
	appsv1.SchemeGroupVersion.WithKind("Deployment"):                          func() any { return new(appsv1.Deployment) },
	corev1.SchemeGroupVersion.WithKind("Service"):                             func() any { return new(corev1.Service) },
	corev1.SchemeGroupVersion.WithKind("ServiceAccount"):                      func() any { return new(corev1.ServiceAccount) },
	corev1.SchemeGroupVersion.WithKind("ConfigMap"):                           func() any { return new(corev1.ConfigMap) },
	corev1.SchemeGroupVersion.WithKind("Secret"):                              func() any { return new(corev1.Secret) },
	policyv1.SchemeGroupVersion.WithKind("PodDisruptionBudget"):               func() any { return new(policyv1.PodDisruptionBudget) },
	autoscalingv2.SchemeGroupVersion.WithKind("HorizontalPodAutoscaler"):      func() any { return new(autoscalingv2.HorizontalPodAutoscaler) },
	networkingv1.SchemeGroupVersion.WithKind("NetworkPolicy"):                 func() any { return new(networkingv1.NetworkPolicy) },
	networkingv1.SchemeGroupVersion.WithKind("Ingress"):                       func() any { return new(networkingv1.Ingress) },
	batchv1.SchemeGroupVersion.WithKind("Job"):                                func() any { return new(batchv1.Job) },
	monitoringv1.SchemeGroupVersion.WithKind(monitoringv1.PrometheusRuleKind): func() any { return new(monitoringv1.PrometheusRule) },
	CertificateGroupVersion.WithKind("Certificate"):                           func() any { return new(Certificate) },
}

// Decode splits a multi-document manifest (the output of `helm template`) and decodes each
// object strictly into its Go type: an unknown or misspelled field, a field given twice, a value
// of the wrong type, a kind this package does not know or an object without a name is an error.
// Every document's error is reported, each naming its object.
func Decode(manifest []byte) ([]Object, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(manifest)))
	var objs []Object
	var errs []error
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("split manifest: %w", err)
		}
		if isEmpty(doc) {
			continue
		}
		obj, err := decodeOne(doc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		objs = append(objs, obj)
	}
	return objs, errors.Join(errs...)
}

func decodeOne(doc []byte) (Object, error) {
	source := sourceOf(doc)
	// YAMLToJSONStrict refuses a key given twice in one mapping, which plain YAML decoding would
	// silently resolve to the last one.
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return Object{}, fmt.Errorf("%s: not YAML: %w", orUnknown(source), err)
	}
	var head struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(js, &head); err != nil {
		return Object{}, fmt.Errorf("%s: %w", orUnknown(source), err)
	}
	obj := Object{Source: source, Kind: head.Kind, Name: head.Metadata.Name}
	gvk := schema.FromAPIVersionAndKind(head.APIVersion, head.Kind)
	newValue, ok := kinds[gvk]
	if !ok {
		return obj, fmt.Errorf("%s: apiVersion %q kind %q is not a kind the pinned API knows", obj, head.APIVersion, head.Kind)
	}
	if obj.Name == "" {
		return obj, fmt.Errorf("%s: metadata.name is empty", obj)
	}
	obj.Value = newValue()
	// The decoder the API server uses for strict field validation: case-sensitive field names,
	// and every unknown or duplicate field reported as a strict error.
	strict, err := kjson.UnmarshalStrict(js, obj.Value)
	if err != nil {
		return obj, fmt.Errorf("%s: %w", obj, err)
	}
	if len(strict) > 0 {
		return obj, fmt.Errorf("%s: %w", obj, errors.Join(strict...))
	}
	if v, ok := obj.Value.(interface{ validate() error }); ok {
		if err := v.validate(); err != nil {
			return obj, fmt.Errorf("%s: %w", obj, err)
		}
	}
	return obj, nil
}

// sourceOf reads the "# Source: <template>" comment `helm template` writes above each object.
func sourceOf(doc []byte) string {
	for line := range strings.Lines(string(doc)) {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "# Source: "); ok {
			return s
		}
	}
	return ""
}

func orUnknown(source string) string {
	if source == "" {
		return "manifest"
	}
	return source
}

// isEmpty reports whether a document holds nothing but comments and blank lines (a template that
// rendered nothing).
func isEmpty(doc []byte) bool {
	for line := range strings.Lines(string(doc)) {
		l := strings.TrimSpace(line)
		if l != "" && !strings.HasPrefix(l, "#") && l != "---" {
			return false
		}
	}
	return true
}
