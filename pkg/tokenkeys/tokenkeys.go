// Package tokenkeys keeps a service's access-token verifier in step with the keys the user
// service publishes (user.v1 ListTokenKeys), so that only the user service holds a private key
// and keys rotate without a flag day: a key is published before it signs, and withdrawn after
// its tokens expired.
package tokenkeys

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/observability"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// retryEvery is how often Sync retries until its first fetch succeeds: until then the service
// refuses every token.
const retryEvery = time.Second

// fetchTimeout bounds one ListTokenKeys call.
const fetchTimeout = 5 * time.Second

// Fetch asks the user service for the keys it publishes. It checks what it gets: every key is
// an EdDSA (Ed25519) key whose kid is its thumbprint, so a key that does not match its id is
// refused rather than trusted under a wrong name.
func Fetch(ctx context.Context, users userv1.UserServiceClient) (issuer string, keys []ed25519.PublicKey, err error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	resp, err := users.ListTokenKeys(ctx, &userv1.ListTokenKeysRequest{})
	if err != nil {
		return "", nil, fmt.Errorf("list token keys: %w", err)
	}
	for _, k := range resp.GetKeys() {
		if k.GetAlg() != "EdDSA" || len(k.GetPublicKey()) != ed25519.PublicKeySize {
			return "", nil, fmt.Errorf("list token keys: key %q is %q with %d bytes, not a 32-byte EdDSA key", k.GetKid(), k.GetAlg(), len(k.GetPublicKey()))
		}
		key := ed25519.PublicKey(k.GetPublicKey())
		if id := auth.KeyID(key); id != k.GetKid() {
			return "", nil, fmt.Errorf("list token keys: key %q has the thumbprint %q", k.GetKid(), id)
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return "", nil, errors.New("list token keys: the user service published no key")
	}
	return resp.GetIssuer(), keys, nil
}

// Sync keeps v's keys equal to those users publishes until ctx ends, then returns nil. It
// fetches them at once, retrying every second until the first success, then every refresh, and
// at once whenever v asks (a token named a key it does not know; v rate-limits those). A failed
// fetch keeps the keys v has, so a user service that is briefly away costs nothing. issuer is
// the issuer v expects: a user service publishing as another is logged, since none of its tokens
// would verify.
func Sync(ctx context.Context, users userv1.UserServiceClient, v *auth.Verifier, issuer string, refresh time.Duration, log *slog.Logger) error {
	if refresh <= 0 {
		return fmt.Errorf("tokenkeys: refresh %v is not positive", refresh)
	}
	synced := false
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-v.RefreshRequests():
			log.InfoContext(ctx, "fetching token keys: a token named an unknown key")
		}
		next := refresh
		// A panic in one fetch (a malformed answer the parsing did not foresee) is an error
		// like any other: the keys held stay, and the next tick tries again.
		if err := observability.Safely(log, "token key sync", func() error { return sync(ctx, users, v, issuer, log) }); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.WarnContext(ctx, "token keys not fetched; keeping the keys held", "error", err, "keys", len(v.KeyIDs()))
			if !synced {
				next = retryEvery
			}
		} else {
			synced = true
		}
		timer.Reset(next) // since Go 1.23 no stale tick survives a Reset

	}
}

func sync(ctx context.Context, users userv1.UserServiceClient, v *auth.Verifier, issuer string, log *slog.Logger) error {
	published, keys, err := Fetch(ctx, users)
	if err != nil {
		return err
	}
	if published != issuer {
		log.ErrorContext(ctx, "the user service publishes its keys as another issuer: its tokens will not verify (see -auth-issuer)",
			"published_issuer", published, "expected_issuer", issuer)
	}
	before := v.KeyIDs()
	if err := v.SetKeys(keys); err != nil {
		return err
	}
	if after := v.KeyIDs(); !slices.Equal(before, after) {
		log.InfoContext(ctx, "token keys changed", "kids", after)
	}
	return nil
}
