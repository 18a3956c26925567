package user

import (
	"crypto/ed25519"
	"slices"
)

// TokenKeys are the keys access tokens may be signed with, as the service publishes them to
// every service that verifies tokens.
type TokenKeys struct {
	// Issuer is the issuer ("iss" claim) of every token they sign.
	Issuer string
	// Keys are the public keys, the signing key first, each once.
	Keys []ed25519.PublicKey
}

// TokenKeys returns the signing key's public half followed by the published keys
// (WithPublishedKeys). Its result is also the set the service verifies its own tokens with.
func (s *Service) TokenKeys() TokenKeys {
	keys := []ed25519.PublicKey{s.issuer.PublicKey()}
	for _, k := range s.published {
		if !slices.ContainsFunc(keys, func(have ed25519.PublicKey) bool { return have.Equal(k) }) {
			keys = append(keys, k)
		}
	}
	return TokenKeys{Issuer: s.issuer.Name(), Keys: keys}
}
