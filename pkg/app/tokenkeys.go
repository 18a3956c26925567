package app

import (
	"context"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/pkg/tokenkeys"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// fetchTokenKeys gives the service a verifier that starts with no key, and a worker that keeps
// its keys equal to those the user service publishes at Config.AuthKeysTarget (see
// tokenkeys.Sync); Serve hands the verifier to the server.
//
// The fetch runs as a worker rather than inside server construction, so that it runs while the
// service starts: the service listens at once, but reports NOT_SERVING and stays out of Consul
// until the first keys arrived (App.ReadyWhen), which the worker tries every second; once
// serving, a user service outage does not stop it (a failed refresh keeps the keys it holds). A
// call that reaches it before the keys (a client dialling its address directly) fails with
// Unavailable, which clients retry. A worker also keeps running through the drain, so tokens
// keep verifying until the server stops.
func (s *Setup) fetchTokenKeys() error {
	v, err := auth.NewVerifier(nil, s.Config.AuthOptions()...)
	if err != nil {
		return err
	}
	// Mutual TLS with the service's identity, as every call between services: the server must
	// prove to be the user service, so an instance registered under "user" in Consul that is not
	// cannot hand out keys of its own.
	cc, err := s.Dial(s.Config.AuthKeysTarget, client.WithServer("user"))
	if err != nil {
		return err
	}
	users := userv1.NewUserServiceClient(cc)
	s.Go("token keys", func(ctx context.Context) error {
		return tokenkeys.Sync(ctx, users, v, s.Config.AuthIssuer, s.Config.AuthKeysRefresh, s.Log)
	})
	s.verifier = v
	s.ReadyWhen("the token keys", v.Ready())
	return nil
}
