package grpcapi_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"testing"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/services/user/internal/grpcapi"
	"github.com/meshmart/meshmart/services/user/internal/store"
	"github.com/meshmart/meshmart/services/user/internal/user"
)

// thumbprint is RFC 7638 for an Ed25519 key, written out here rather than taken from pkg/auth.
func thumbprint(key []byte) string {
	sum := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + base64.RawURLEncoding.EncodeToString(key) + `"}`))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// TestListTokenKeys checks the published keys, without a token: the signing key first, then
// each extra key once (the signing key given as an extra too is not repeated), with their
// thumbprints.
func TestListTokenKeys(t *testing.T) {
	t.Parallel()
	keys := testkit.NewKeys(t)
	signing := keys.Issuer.PublicKey()
	next, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		extra []ed25519.PublicKey
		want  []ed25519.PublicKey
	}{
		{"signing key only", nil, []ed25519.PublicKey{signing}},
		{"with the next key", []ed25519.PublicKey{next}, []ed25519.PublicKey{signing, next}},
		{"signing key also extra", []ed25519.PublicKey{next, signing}, []ed25519.PublicKey{signing, next}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			users, err := store.Open(context.Background(), testkit.SQLitePath(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { users.Close() })
			svc, err := user.NewService(users, keys.Issuer, user.WithPublishedKeys(tt.extra...))
			if err != nil {
				t.Fatal(err)
			}
			api, err := grpcapi.New(svc, testkit.Logger(t))
			if err != nil {
				t.Fatal(err)
			}
			cc := testkit.BufconnService(t, "user", keys, &userv1.UserService_ServiceDesc, api)
			resp, err := userv1.NewUserServiceClient(cc).ListTokenKeys(t.Context(), &userv1.ListTokenKeysRequest{})
			if err != nil {
				t.Fatalf("ListTokenKeys without a token: %v", err)
			}
			if resp.GetIssuer() != auth.DefaultIssuer {
				t.Errorf("issuer = %q, want %q", resp.GetIssuer(), auth.DefaultIssuer)
			}
			if len(resp.GetKeys()) != len(tt.want) {
				t.Fatalf("%d keys, want %d: %v", len(resp.GetKeys()), len(tt.want), resp.GetKeys())
			}
			for i, k := range resp.GetKeys() {
				if !tt.want[i].Equal(ed25519.PublicKey(k.GetPublicKey())) {
					t.Errorf("key %d is not the expected one", i)
				}
				if k.GetKid() != thumbprint(tt.want[i]) || k.GetAlg() != "EdDSA" {
					t.Errorf("key %d: kid %q alg %q, want kid %q alg EdDSA", i, k.GetKid(), k.GetAlg(), thumbprint(tt.want[i]))
				}
			}
			if resp.GetKeys()[0].GetKid() != keys.Issuer.KeyID() {
				t.Errorf("the first key is not the signing key")
			}
		})
	}
}
