// Package pagetoken encodes list positions as opaque page tokens: base64url JSON of a
// service-defined struct that holds the position and the filter the page was listed with, so a
// token reused with another filter can be refused. Tokens are not signed: services apply the
// caller's permissions and filter on every call, so an edited token only moves within what the
// caller may list anyway. (The user service signs its tokens as well; see its README section.)
package pagetoken

import (
	"encoding/base64"
	"encoding/json"
	"errors"
)

// ErrInvalid reports a token that does not decode.
var ErrInvalid = errors.New("not a page token issued for this filter")

// Encode returns the token for v.
func Encode(v any) string {
	raw, err := json.Marshal(v)
	if err != nil {
		panic("pagetoken: a token struct must marshal: " + err.Error()) // a programming error
	}
	return base64.RawURLEncoding.EncodeToString(raw)
}

// Decode fills v from token, returning ErrInvalid if it does not decode.
func Decode(token string, v any) error {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || json.Unmarshal(raw, v) != nil {
		return ErrInvalid
	}
	return nil
}

// Size turns a requested page size into the one to serve: def for zero or less (the contracts'
// "server's default"), max for anything larger (AIP-158 lowers, rather than refuses, a large one).
func Size(requested, def, max int) int {
	switch {
	case requested <= 0:
		return def
	case requested > max:
		return max
	}
	return requested
}
