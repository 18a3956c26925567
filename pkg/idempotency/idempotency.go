// Package idempotency tells a retry from a reuse: a request repeated under the same idempotency
// key must return what the first one did, while the same key sent with different parameters is a
// client error. Services store a Fingerprint of the parameters beside the key and compare.
package idempotency

import (
	"crypto/sha256"
	"encoding/hex"
)

// Fingerprint returns a hex SHA-256 over parts, each ended by a NUL byte so that ("ab", "c") and
// ("a", "bc") differ. Secrets among the parts (a payment method token) are safe to pass: only the
// hash is kept.
func Fingerprint(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}
