package helmcheck

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// handRelease builds a small, policy-abiding release by hand: a user and an order Deployment, each
// with its PodDisruptionBudget, HorizontalPodAutoscaler and NetworkPolicy, and a migration Job
// with its NetworkPolicy. Each test case breaks one thing in it.
func handRelease() []Object {
	var objs []Object
	add := func(kind, name string, v any) { objs = append(objs, Object{Kind: kind, Name: name, Value: v}) }
	pod := func(component string, probed bool) corev1.PodTemplateSpec {
		c := corev1.Container{
			Name:  component,
			Image: "meshmart/" + component + ":1",
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("256Mi")},
			},
			SecurityContext: &corev1.SecurityContext{
				ReadOnlyRootFilesystem:   ptr.To(true),
				AllowPrivilegeEscalation: ptr.To(false),
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
			Env: []corev1.EnvVar{{Name: "DATABASE_URL_FILE", Value: "/etc/meshmart/secrets/database-url"}},
		}
		if probed {
			grpc := corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 8086}}
			c.ReadinessProbe = &corev1.Probe{ProbeHandler: grpc}
			c.LivenessProbe = &corev1.Probe{ProbeHandler: grpc}
			c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"/service", "drain"}}}}
		}
		items := []corev1.KeyToPath{{Key: "cert.pem", Path: "cert.pem"}, {Key: "database-url", Path: "database-url"}}
		if component == "user" {
			items = append(items, corev1.KeyToPath{Key: "auth.key.pem", Path: "auth.key.pem"})
		}
		return corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app.kubernetes.io/component": component}},
			Spec: corev1.PodSpec{
				TerminationGracePeriodSeconds: ptr.To[int64](30),
				SecurityContext: &corev1.PodSecurityContext{
					RunAsNonRoot:   ptr.To(true),
					RunAsUser:      ptr.To[int64](65532),
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
				Containers: []corev1.Container{c},
				Volumes: []corev1.Volume{{Name: "secrets", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
					Sources: []corev1.VolumeProjection{{Secret: &corev1.SecretProjection{
						LocalObjectReference: corev1.LocalObjectReference{Name: "shop-" + strings.TrimSuffix(component, "-migrate")},
						Items:                items,
					}}},
				}}}},
			},
		}
	}
	selector := func(component string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/component": component}}
	}
	netpol := func(component string) *networkingv1.NetworkPolicy {
		return &networkingv1.NetworkPolicy{Spec: networkingv1.NetworkPolicySpec{
			PodSelector: *selector(component),
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		}}
	}
	for _, c := range []string{"user", "order"} {
		add("Deployment", c, &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Selector: selector(c), Template: pod(c, true)}})
		add("PodDisruptionBudget", c, &policyv1.PodDisruptionBudget{Spec: policyv1.PodDisruptionBudgetSpec{Selector: selector(c)}})
		add("HorizontalPodAutoscaler", c, &autoscalingv2.HorizontalPodAutoscaler{Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{Kind: "Deployment", Name: c},
			MinReplicas:    ptr.To[int32](2), MaxReplicas: 6,
			Metrics: []autoscalingv2.MetricSpec{
				{Type: autoscalingv2.ResourceMetricSourceType, Resource: &autoscalingv2.ResourceMetricSource{Name: corev1.ResourceCPU}},
				{Type: autoscalingv2.ResourceMetricSourceType, Resource: &autoscalingv2.ResourceMetricSource{Name: corev1.ResourceMemory}},
			},
		}})
		add("NetworkPolicy", c, netpol(c))
	}
	add("Job", "user-migrate", &batchv1.Job{Spec: batchv1.JobSpec{Template: pod("user-migrate", false)}})
	add("NetworkPolicy", "user-migrate", netpol("user-migrate"))
	return objs
}

// find returns the typed value of the named object of a release.
func find[T any](t *testing.T, objs []Object, name string) T {
	t.Helper()
	for _, o := range objs {
		if v, ok := o.Value.(T); ok && o.Name == name {
			return v
		}
	}
	t.Fatalf("no %T named %s", *new(T), name)
	panic("unreachable")
}

func container(t *testing.T, objs []Object, name string) *corev1.Container {
	t.Helper()
	for _, o := range objs {
		if o.Name != name {
			continue
		}
		switch v := o.Value.(type) {
		case *appsv1.Deployment:
			return &v.Spec.Template.Spec.Containers[0]
		case *batchv1.Job:
			return &v.Spec.Template.Spec.Containers[0]
		}
	}
	t.Fatalf("no workload named %s", name)
	return nil
}

func without(objs []Object, kind, name string) []Object {
	return slices.DeleteFunc(objs, func(o Object) bool { return o.Kind == kind && o.Name == name })
}

// TestPolicyRejects breaks the hand-made release one way per case and expects the rule it breaks
// (and only that rule) to report it; the unbroken release keeps every rule.
func TestPolicyRejects(t *testing.T) {
	t.Parallel()
	if v := Check(handRelease()); len(v) > 0 {
		t.Fatalf("the hand-made release breaks the policy: %q", v)
	}
	rule := func(prefix string) string {
		for _, r := range Rules {
			if strings.HasPrefix(r.Name, prefix) {
				return r.Name
			}
		}
		t.Fatalf("no rule starts with %q", prefix)
		return ""
	}
	tests := []struct {
		name   string
		rule   string
		break_ func(t *testing.T, objs []Object) []Object
	}{
		{"no readiness probe", "every container has readiness", func(t *testing.T, o []Object) []Object {
			container(t, o, "order").ReadinessProbe = nil
			return o
		}},
		{"an exec liveness probe", "every container has readiness", func(t *testing.T, o []Object) []Object {
			container(t, o, "user").LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/service", "healthcheck"}}}}
			return o
		}},
		{"no memory limit", "every container has CPU", func(t *testing.T, o []Object) []Object {
			delete(container(t, o, "order").Resources.Limits, corev1.ResourceMemory)
			return o
		}},
		{"a Job without a CPU request", "every container has CPU", func(t *testing.T, o []Object) []Object {
			delete(container(t, o, "user-migrate").Resources.Requests, corev1.ResourceCPU)
			return o
		}},
		{"runAsNonRoot false on the container", "every container is non-root", func(t *testing.T, o []Object) []Object {
			container(t, o, "order").SecurityContext.RunAsNonRoot = ptr.To(false)
			return o
		}},
		{"uid 0", "every container is non-root", func(t *testing.T, o []Object) []Object {
			container(t, o, "order").SecurityContext.RunAsUser = ptr.To[int64](0)
			return o
		}},
		{"writable root filesystem", "every container is non-root", func(t *testing.T, o []Object) []Object {
			container(t, o, "user-migrate").SecurityContext.ReadOnlyRootFilesystem = nil
			return o
		}},
		{"privilege escalation", "every container is non-root", func(t *testing.T, o []Object) []Object {
			container(t, o, "user").SecurityContext.AllowPrivilegeEscalation = ptr.To(true)
			return o
		}},
		{"capabilities kept", "every container is non-root", func(t *testing.T, o []Object) []Object {
			container(t, o, "user").SecurityContext.Capabilities.Drop = nil
			return o
		}},
		{"a capability added", "every container is non-root", func(t *testing.T, o []Object) []Object {
			container(t, o, "user").SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
			return o
		}},
		{"unconfined seccomp", "every container is non-root", func(t *testing.T, o []Object) []Object {
			container(t, o, "order").SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
			return o
		}},
		{"no preStop hook", "every Deployment has a preStop", func(t *testing.T, o []Object) []Object {
			container(t, o, "order").Lifecycle = nil
			return o
		}},
		{"selector not matching the pods", "every Deployment's selector", func(t *testing.T, o []Object) []Object {
			find[*appsv1.Deployment](t, o, "order").Spec.Selector.MatchLabels["app.kubernetes.io/component"] = "orders"
			return o
		}},
		{"no PodDisruptionBudget", "every Deployment has a PodDisruptionBudget", func(t *testing.T, o []Object) []Object {
			return without(o, "PodDisruptionBudget", "order")
		}},
		{"a PodDisruptionBudget selecting other pods", "every Deployment has a PodDisruptionBudget", func(t *testing.T, o []Object) []Object {
			find[*policyv1.PodDisruptionBudget](t, o, "user").Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "user"}}
			return o
		}},
		{"autoscaling on CPU only", "every HorizontalPodAutoscaler", func(t *testing.T, o []Object) []Object {
			h := find[*autoscalingv2.HorizontalPodAutoscaler](t, o, "user")
			h.Spec.Metrics = h.Spec.Metrics[:1]
			return o
		}},
		{"autoscaling a missing Deployment", "every HorizontalPodAutoscaler", func(t *testing.T, o []Object) []Object {
			find[*autoscalingv2.HorizontalPodAutoscaler](t, o, "order").Spec.ScaleTargetRef.Name = "orders"
			return o
		}},
		{"no NetworkPolicy", "every workload is selected", func(t *testing.T, o []Object) []Object {
			return without(o, "NetworkPolicy", "order")
		}},
		{"a NetworkPolicy on ingress only", "every workload is selected", func(t *testing.T, o []Object) []Object {
			find[*networkingv1.NetworkPolicy](t, o, "user-migrate").Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
			return o
		}},
		{"signing key projected into order", "only the user pods", func(t *testing.T, o []Object) []Object {
			src := find[*appsv1.Deployment](t, o, "order").Spec.Template.Spec.Volumes[0].Projected.Sources[0].Secret
			src.Items = append(src.Items, corev1.KeyToPath{Key: "auth.key.pem", Path: "auth.key.pem"})
			return o
		}},
		{"the user Secret mounted whole in the migration Job", "only the user pods", func(t *testing.T, o []Object) []Object {
			spec := &find[*batchv1.Job](t, o, "user-migrate").Spec.Template.Spec
			spec.Volumes = append(spec.Volumes, corev1.Volume{Name: "all", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "shop-user"}}})
			return o
		}},
		{"signing key setting in order", "only the user pods", func(t *testing.T, o []Object) []Object {
			c := container(t, o, "order")
			c.Env = append(c.Env, corev1.EnvVar{Name: "MESHMART_SIGNING_KEY", Value: "/etc/meshmart/secrets/auth.key.pem"})
			return o
		}},
		{"user without its signing key", "only the user pods", func(t *testing.T, o []Object) []Object {
			src := find[*appsv1.Deployment](t, o, "user").Spec.Template.Spec.Volumes[0].Projected.Sources[0].Secret
			src.Items = src.Items[:2]
			return o
		}},
		{"a DSN as an environment value", "no secret is an environment value", func(t *testing.T, o []Object) []Object {
			c := container(t, o, "order")
			c.Env = append(c.Env, corev1.EnvVar{Name: "DATABASE_URL", Value: "postgres://order_service:pw@db/meshmart_order"})
			return o
		}},
		{"a password as an environment value", "no secret is an environment value", func(t *testing.T, o []Object) []Object {
			c := container(t, o, "user-migrate")
			c.Env = append(c.Env, corev1.EnvVar{Name: "PGPASSWORD", Value: "pw"})
			return o
		}},
		{"a rendered Secret with data", "no secret is an environment value", func(t *testing.T, o []Object) []Object {
			return append(o, Object{Kind: "Secret", Name: "shop-user", Value: &corev1.Secret{StringData: map[string]string{"database-url": "postgres://..."}}})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want := rule(tt.rule)
			got := Check(tt.break_(t, handRelease()))
			if len(got) == 0 {
				t.Fatalf("no violation reported, want one of %q", want)
			}
			for _, v := range got {
				if !strings.HasPrefix(v, want+": ") {
					t.Errorf("violation of another rule than %q: %s", want, v)
				}
			}
		})
	}
}

// TestLeaks shows the secret grep finds a value in plain text and base64, and nothing else.
func TestLeaks(t *testing.T) {
	t.Parallel()
	secrets := []string{"Dummy-DB-Password-7f3a", "d5b1f4c2-dummy-consul-token"}
	clean := []byte("kind: Deployment\nenv:\n  - {name: DATABASE_URL_FILE, value: /etc/meshmart/secrets/database-url}\n")
	if got := Leaks(clean, secrets); len(got) != 0 {
		t.Errorf("Leaks(clean) = %q, want none", got)
	}
	plain := append(clean, "  - {name: DATABASE_URL, value: 'postgres://u:Dummy-DB-Password-7f3a@db/x'}\n"...)
	if got := Leaks(plain, secrets); !slices.Equal(got, secrets[:1]) {
		t.Errorf("Leaks(plain) = %q, want %q", got, secrets[:1])
	}
	encoded := append(clean, "data:\n  token: "+b64(secrets[1])+"\n"...)
	if got := Leaks(encoded, secrets); !slices.Equal(got, secrets[1:]) {
		t.Errorf("Leaks(base64) = %q, want %q", got, secrets[1:])
	}
}
