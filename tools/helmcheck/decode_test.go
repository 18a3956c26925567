package helmcheck

import (
	"strings"
	"testing"
)

// devManifest renders the chart with its development values.
func devManifest(t *testing.T) string {
	t.Helper()
	out, err := helm(t, "template", "shop", chartDir, "-f", chartDir+"/values-dev.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// replaceOnce replaces the first occurrence of old, failing the test when there is none (so that a
// change to the chart cannot turn a mutation into a no-op that passes).
func replaceOnce(t *testing.T, s, old, new string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("the manifest has no %q to mutate", old)
	}
	return strings.Replace(s, old, new, 1)
}

// TestDecodeRejects shows that strict decoding against the pinned API fails on the mistakes that
// `kubectl apply` (with server-side field validation) or the API server would refuse.
func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	manifest := devManifest(t)
	if _, err := Decode([]byte(manifest)); err != nil {
		t.Fatalf("the unmutated manifest does not decode: %v", err)
	}
	tests := []struct {
		name, old, new, want string
	}{
		{"misspelled top-level field", "revisionHistoryLimit: 5", "revisionHistoryLimt: 5", `unknown field "spec.revisionHistoryLimt"`},
		{"misspelled nested field", "imagePullPolicy: Never", "imagePullPolcy: Never", `unknown field "spec.template.spec.containers[0].imagePullPolcy"`},
		{"field in the wrong case", "readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true", "readOnlyRootFileSystem"},
		{"string for an integer", "revisionHistoryLimit: 5", `revisionHistoryLimit: "five"`, "cannot unmarshal string"},
		{"string for a boolean", "automountServiceAccountToken: false", `automountServiceAccountToken: "no"`, "cannot unmarshal string"},
		{"string for a list", "policyTypes: [Ingress, Egress]", "policyTypes: Ingress", "cannot unmarshal string"},
		{"invalid quantity", "cpu: 50m", "cpu: 50 millicores", "quantities must match"},
		{"duplicate field", "revisionHistoryLimit: 5", "revisionHistoryLimit: 5\n  revisionHistoryLimit: 6", "already set"},
		{"kind the API does not know", "kind: PodDisruptionBudget", "kind: PodDisruptionBudgett", "not a kind the pinned API knows"},
		{"removed API version", "apiVersion: policy/v1\n", "apiVersion: policy/v1beta1\n", "not a kind the pinned API knows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Decode([]byte(replaceOnce(t, manifest, tt.old, tt.new)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

const goodCertificate = `# Source: meshmart/templates/certificate.yaml
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: shop-meshmart-user
spec:
  secretName: shop-meshmart-user-tls
  duration: 24h
  uris: [spiffe://meshmart.local/service/user]
  privateKey: { algorithm: ECDSA, size: 256, encoding: PKCS8, rotationPolicy: Always }
  usages: [digital signature, server auth, client auth]
  issuerRef: { name: meshmart-ca, kind: Issuer, group: cert-manager.io }
`

const goodPrometheusRule = `apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: shop-meshmart
spec:
  groups:
    - name: meshmart
      rules:
        - alert: MeshmartDown
          expr: up == 0
          for: 5m
          labels: { severity: page }
`

// TestDecodeCustomResources shows the CRD kinds decode as strictly as the core ones: the
// project's Certificate type and the Prometheus operator's PrometheusRule.
func TestDecodeCustomResources(t *testing.T) {
	t.Parallel()
	for _, good := range []string{goodCertificate, goodPrometheusRule} {
		if _, err := Decode([]byte(good)); err != nil {
			t.Fatalf("a valid object does not decode: %v", err)
		}
	}
	tests := []struct {
		name, doc, old, new, want string
	}{
		{"certificate: misspelled field", goodCertificate, "secretName:", "secretNmae:", `unknown field "spec.secretNmae"`},
		{"certificate: wrong type", goodCertificate, "size: 256", `size: "big"`, "cannot unmarshal string"},
		{"certificate: bad duration", goodCertificate, "duration: 24h", "duration: a day", "invalid duration"},
		{"certificate: unknown usage", goodCertificate, "server auth", "server authentication", "not a cert-manager key usage"},
		{"certificate: unknown algorithm", goodCertificate, "algorithm: ECDSA", "algorithm: DSA", "is not RSA, ECDSA or Ed25519"},
		{"certificate: no issuer", goodCertificate, "name: meshmart-ca, ", "", "spec.issuerRef.name is required"},
		{"rule: misspelled field", goodPrometheusRule, "expr:", "expression:", `unknown field "spec.groups[0].rules[0].expression"`},
		{"rule: wrong type", goodPrometheusRule, "groups:\n    - name: meshmart", "groups:\n    - name: [meshmart]", "cannot unmarshal array"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Decode([]byte(replaceOnce(t, tt.doc, tt.old, tt.new)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
