package helmcheck

import (
	"encoding/base64"
	"fmt"
	"regexp"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Rule is one policy over a whole rendered release.
type Rule struct {
	// Name says what the rule requires, in a few words.
	Name string
	// Check returns one message per violation; none when the objects keep the rule.
	Check func(objs []Object) []string
}

// SigningKeyComponent is the only component whose pods may mount the token-signing key.
const SigningKeyComponent = "user"

// signingKeyFile is the file name the chart gives the signing key in a pod and the key devsetup
// gives it in a Secret (secretKeys.signingKey).
const signingKeyFile = "auth.key.pem"

// Rules are the chart's policies, each tested against a deliberately bad object in policy_test.go.
var Rules = []Rule{
	{"every container has readiness and liveness gRPC probes", probes},
	{"every container has CPU and memory requests and limits", resources},
	{"every container is non-root, read-only, unprivileged, capability-free and seccomp-confined", securityContexts},
	{"every Deployment has a preStop hook and a grace period", preStop},
	{"every Deployment's selector matches its pod labels", selectors},
	{"every Deployment has a PodDisruptionBudget selecting it", pdbs},
	{"every HorizontalPodAutoscaler scales a rendered Deployment on CPU and memory", hpas},
	{"every workload is selected by a NetworkPolicy restricting ingress and egress", networkPolicies},
	{"only the user pods mount the token-signing key, and they do", signingKey},
	{"no secret is an environment value or a rendered Secret", secretsAsFiles},
}

// Check runs every rule and returns each violation prefixed with its rule.
func Check(objs []Object) []string {
	var out []string
	for _, r := range Rules {
		for _, v := range r.Check(objs) {
			out = append(out, r.Name+": "+v)
		}
	}
	return out
}

// workload is a rendered object that runs pods.
type workload struct {
	obj  Object
	pod  *corev1.PodTemplateSpec
	long bool // a Deployment: long-running, so probed and drained
}

func workloads(objs []Object) []workload {
	var out []workload
	for _, o := range objs {
		switch v := o.Value.(type) {
		case *appsv1.Deployment:
			out = append(out, workload{o, &v.Spec.Template, true})
		case *batchv1.Job:
			out = append(out, workload{o, &v.Spec.Template, false})
		}
	}
	return out
}

// containers lists every container of a pod, init containers included.
func containers(pod *corev1.PodTemplateSpec) []*corev1.Container {
	var out []*corev1.Container
	for i := range pod.Spec.InitContainers {
		out = append(out, &pod.Spec.InitContainers[i])
	}
	for i := range pod.Spec.Containers {
		out = append(out, &pod.Spec.Containers[i])
	}
	return out
}

func probes(objs []Object) []string {
	var out []string
	for _, w := range workloads(objs) {
		if !w.long {
			continue // a Job's container exits: the kubelet's probes have nothing to keep alive
		}
		for _, c := range w.pod.Spec.Containers {
			for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
				if p == nil || p.GRPC == nil {
					out = append(out, fmt.Sprintf("%s container %s: no %s probe of kind grpc", w.obj, c.Name, name))
				}
			}
		}
	}
	return out
}

func resources(objs []Object) []string {
	var out []string
	for _, w := range workloads(objs) {
		for _, c := range containers(w.pod) {
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if q, ok := c.Resources.Requests[r]; !ok || q.IsZero() {
					out = append(out, fmt.Sprintf("%s container %s: no %s request", w.obj, c.Name, r))
				}
				if q, ok := c.Resources.Limits[r]; !ok || q.IsZero() {
					out = append(out, fmt.Sprintf("%s container %s: no %s limit", w.obj, c.Name, r))
				}
			}
		}
	}
	return out
}

func securityContexts(objs []Object) []string {
	var out []string
	for _, w := range workloads(objs) {
		pod := w.pod.Spec.SecurityContext
		if pod == nil {
			pod = &corev1.PodSecurityContext{}
		}
		for _, c := range containers(w.pod) {
			sc := c.SecurityContext
			if sc == nil {
				sc = &corev1.SecurityContext{}
			}
			bad := func(what string) { out = append(out, fmt.Sprintf("%s container %s: %s", w.obj, c.Name, what)) }
			// runAsNonRoot and seccompProfile may come from the pod; the container's own wins.
			nonRoot := pod.RunAsNonRoot
			if sc.RunAsNonRoot != nil {
				nonRoot = sc.RunAsNonRoot
			}
			if nonRoot == nil || !*nonRoot {
				bad("runAsNonRoot is not true")
			}
			if uid := sc.RunAsUser; uid != nil && *uid == 0 || uid == nil && pod.RunAsUser != nil && *pod.RunAsUser == 0 {
				bad("runs as uid 0")
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				bad("readOnlyRootFilesystem is not true")
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				bad("allowPrivilegeEscalation is not false")
			}
			if sc.Privileged != nil && *sc.Privileged {
				bad("privileged")
			}
			if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
				bad("capabilities do not drop ALL")
			} else if len(sc.Capabilities.Add) > 0 {
				bad(fmt.Sprintf("capabilities add %v", sc.Capabilities.Add))
			}
			seccomp := pod.SeccompProfile
			if sc.SeccompProfile != nil {
				seccomp = sc.SeccompProfile
			}
			if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
				bad("seccompProfile is not RuntimeDefault")
			}
		}
	}
	return out
}

func preStop(objs []Object) []string {
	var out []string
	for _, w := range workloads(objs) {
		if !w.long {
			continue
		}
		for _, c := range w.pod.Spec.Containers {
			if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
				out = append(out, fmt.Sprintf("%s container %s: no preStop hook (the pod would leave Consul only after SIGTERM)", w.obj, c.Name))
			}
		}
		if g := w.pod.Spec.TerminationGracePeriodSeconds; g == nil || *g <= 0 {
			out = append(out, fmt.Sprintf("%s: no terminationGracePeriodSeconds", w.obj))
		}
	}
	return out
}

func selectors(objs []Object) []string {
	var out []string
	for _, w := range workloads(objs) {
		d, ok := w.obj.Value.(*appsv1.Deployment)
		if !ok {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		switch {
		case d.Spec.Selector == nil:
			out = append(out, fmt.Sprintf("%s: no selector", w.obj))
		case err != nil:
			out = append(out, fmt.Sprintf("%s: selector: %v", w.obj, err))
		case sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)):
			out = append(out, fmt.Sprintf("%s: selector %s does not match the pod labels %v", w.obj, sel, d.Spec.Template.Labels))
		}
	}
	return out
}

func pdbs(objs []Object) []string {
	var budgets []labels.Selector
	for _, o := range objs {
		if p, ok := o.Value.(*policyv1.PodDisruptionBudget); ok {
			if s, err := metav1.LabelSelectorAsSelector(p.Spec.Selector); err == nil && !s.Empty() {
				budgets = append(budgets, s)
			}
		}
	}
	var out []string
	for _, w := range workloads(objs) {
		if !w.long {
			continue
		}
		if !slices.ContainsFunc(budgets, func(s labels.Selector) bool { return s.Matches(labels.Set(w.pod.Labels)) }) {
			out = append(out, fmt.Sprintf("%s: no PodDisruptionBudget selects its pods", w.obj))
		}
	}
	return out
}

func hpas(objs []Object) []string {
	deployments := map[string]bool{}
	for _, o := range objs {
		if _, ok := o.Value.(*appsv1.Deployment); ok {
			deployments[o.Name] = true
		}
	}
	var out []string
	for _, o := range objs {
		h, ok := o.Value.(*autoscalingv2.HorizontalPodAutoscaler)
		if !ok {
			continue
		}
		if ref := h.Spec.ScaleTargetRef; ref.Kind != "Deployment" || !deployments[ref.Name] {
			out = append(out, fmt.Sprintf("%s: scales %s/%s, which is not a rendered Deployment", o, ref.Kind, ref.Name))
		}
		var got []string
		for _, m := range h.Spec.Metrics {
			if m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource != nil {
				got = append(got, string(m.Resource.Name))
			}
		}
		for _, want := range []string{"cpu", "memory"} {
			if !slices.Contains(got, want) {
				out = append(out, fmt.Sprintf("%s: no %s metric", o, want))
			}
		}
		if min := h.Spec.MinReplicas; min != nil && *min > h.Spec.MaxReplicas {
			out = append(out, fmt.Sprintf("%s: minReplicas %d above maxReplicas %d", o, *min, h.Spec.MaxReplicas))
		}
	}
	return out
}

func networkPolicies(objs []Object) []string {
	type policy struct {
		sel             labels.Selector
		ingress, egress bool
	}
	var policies []policy
	for _, o := range objs {
		np, ok := o.Value.(*networkingv1.NetworkPolicy)
		if !ok {
			continue
		}
		s, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil {
			continue
		}
		p := policy{sel: s}
		for _, t := range np.Spec.PolicyTypes {
			p.ingress = p.ingress || t == networkingv1.PolicyTypeIngress
			p.egress = p.egress || t == networkingv1.PolicyTypeEgress
		}
		policies = append(policies, p)
	}
	var out []string
	for _, w := range workloads(objs) {
		var ingress, egress bool
		for _, p := range policies {
			if p.sel.Matches(labels.Set(w.pod.Labels)) {
				ingress, egress = ingress || p.ingress, egress || p.egress
			}
		}
		if !ingress || !egress {
			out = append(out, fmt.Sprintf("%s: its pods are not selected by NetworkPolicies restricting both ingress (%t) and egress (%t)", w.obj, ingress, egress))
		}
	}
	return out
}

// signingKey holds the chart to the trust model: the token-signing key reaches the user pods and
// no other, whether through a Secret item, a whole Secret that holds it (the one the user pods
// take it from) or an environment value.
func signingKey(objs []Object) []string {
	// The Secrets the user pods take the key from: another pod mounting one whole gets the key.
	keySecrets := map[string]bool{}
	for _, w := range workloads(objs) {
		if isSigner(w) {
			for _, ref := range secretRefs(w.pod) {
				if ref.hasKey {
					keySecrets[ref.name] = true
				}
			}
		}
	}
	var out []string
	if len(keySecrets) == 0 {
		out = append(out, fmt.Sprintf("no %s Deployment mounts the signing key (%s)", SigningKeyComponent, signingKeyFile))
	}
	for _, w := range workloads(objs) {
		if isSigner(w) {
			continue
		}
		for _, ref := range secretRefs(w.pod) {
			if ref.hasKey || ref.whole && keySecrets[ref.name] {
				out = append(out, fmt.Sprintf("%s: mounts the signing key (Secret %s); only %s may", w.obj, ref.name, SigningKeyComponent))
			}
		}
		for _, c := range containers(w.pod) {
			for _, e := range c.Env {
				if e.Name == "MESHMART_SIGNING_KEY" {
					out = append(out, fmt.Sprintf("%s container %s: sets MESHMART_SIGNING_KEY; only %s may", w.obj, c.Name, SigningKeyComponent))
				}
			}
		}
	}
	return out
}

// isSigner reports whether a workload is the user Deployment, the one the signing key is for.
func isSigner(w workload) bool {
	return w.long && w.pod.Labels["app.kubernetes.io/component"] == SigningKeyComponent
}

// secretRef is one Secret a pod mounts: whole, or some of its keys (hasKey: the signing key).
type secretRef struct {
	name          string
	whole, hasKey bool
}

func secretRefs(pod *corev1.PodTemplateSpec) []secretRef {
	ref := func(name string, items []corev1.KeyToPath) secretRef {
		r := secretRef{name: name, whole: len(items) == 0}
		for _, it := range items {
			r.hasKey = r.hasKey || it.Key == signingKeyFile || it.Path == signingKeyFile
		}
		return r
	}
	var out []secretRef
	for _, v := range pod.Spec.Volumes {
		if s := v.Secret; s != nil {
			out = append(out, ref(s.SecretName, s.Items))
		}
		if p := v.Projected; p != nil {
			for _, src := range p.Sources {
				if s := src.Secret; s != nil {
					out = append(out, ref(s.Name, s.Items))
				}
			}
		}
	}
	return out
}

// secretEnv matches the names of environment variables that hold a secret when given a value:
// the chassis' secret settings and the usual names of passwords, tokens and keys.
var secretEnv = regexp.MustCompile(`(?i)^(DATABASE_URL|CONSUL_HTTP_TOKEN)$|PASSWORD|PASSWD|SECRET|TOKEN$|PRIVATE_KEY|API_KEY|DSN$`)

// secretsAsFiles holds the chart to the project's rule that secrets are files: no environment
// variable that names a secret has a literal value (a _FILE variable naming a path is fine), and
// the chart renders no Secret with data (its secrets exist before the release, or cert-manager
// writes them), so `helm get manifest` never shows one.
func secretsAsFiles(objs []Object) []string {
	var out []string
	for _, w := range workloads(objs) {
		for _, c := range containers(w.pod) {
			for _, e := range c.Env {
				if e.Value != "" && secretEnv.MatchString(e.Name) && !strings.HasSuffix(e.Name, "_FILE") {
					out = append(out, fmt.Sprintf("%s container %s: env %s has a literal value; mount it as a file and set %s_FILE", w.obj, c.Name, e.Name, e.Name))
				}
			}
		}
	}
	for _, o := range objs {
		if s, ok := o.Value.(*corev1.Secret); ok && (len(s.Data) > 0 || len(s.StringData) > 0) {
			out = append(out, fmt.Sprintf("%s: the chart renders a Secret with data", o))
		}
	}
	return out
}

// Leaks returns each of the given secret values that appears in a rendered manifest, in plain
// text or base64 (as a Secret's data would carry it).
func Leaks(manifest []byte, secrets []string) []string {
	var out []string
	for _, s := range secrets {
		for _, form := range []string{s, b64(s)} {
			if strings.Contains(string(manifest), form) {
				out = append(out, s)
				break
			}
		}
	}
	return out
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
