package grpcapi

import (
	"context"

	"github.com/meshmart/meshmart/pkg/auth"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// ListTokenKeys implements user.v1.UserService: the keys every other service verifies access
// tokens with, the signing key first.
func (s *Server) ListTokenKeys(context.Context, *userv1.ListTokenKeysRequest) (*userv1.ListTokenKeysResponse, error) {
	tk := s.svc.TokenKeys()
	resp := &userv1.ListTokenKeysResponse{Issuer: tk.Issuer, Keys: make([]*userv1.TokenKey, 0, len(tk.Keys))}
	for _, k := range tk.Keys {
		resp.Keys = append(resp.Keys, &userv1.TokenKey{Kid: auth.KeyID(k), Alg: "EdDSA", PublicKey: k})
	}
	return resp, nil
}
