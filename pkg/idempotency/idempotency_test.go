package idempotency_test

import (
	"testing"

	"github.com/meshmart/meshmart/pkg/idempotency"
)

func TestFingerprint(t *testing.T) {
	t.Parallel()
	if idempotency.Fingerprint("ab", "c") == idempotency.Fingerprint("a", "bc") {
		t.Error("parts that join to the same string have the same fingerprint")
	}
	if idempotency.Fingerprint("a", "b") != idempotency.Fingerprint("a", "b") {
		t.Error("the same parts have different fingerprints")
	}
	if got := idempotency.Fingerprint(); len(got) != 64 {
		t.Errorf("Fingerprint() = %q, want 64 hex digits", got)
	}
}
