package user

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"

	"github.com/meshmart/meshmart/pkg/fault"
)

// pager issues and reads page tokens: the position of the last account on a page and the filter
// it was listed with, signed with HMAC-SHA256 so that a client can neither forge a position nor
// reuse a token with another filter to skip it. Every replica holding the same key accepts the
// others' tokens.
type pager struct{ key []byte }

type pageToken struct {
	Status Status `json:"s"`
	Time   int64  `json:"t"` // create time, unix microseconds
	ID     string `json:"i"`
}

func (p pager) issue(f Filter, c Cursor) string {
	payload, _ := json.Marshal(pageToken{Status: f.Status, Time: c.CreateTime.UnixMicro(), ID: c.ID})
	mac := hmac.New(sha256.New, p.key)
	mac.Write(payload)
	return base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// read returns the cursor in token, which must have been issued for f.
func (p pager) read(token string, f Filter) (*Cursor, error) {
	bad := fault.Invalid("page_token", "not a page token issued for this filter")
	payloadPart, sigPart, ok := strings.Cut(token, ".")
	if !ok {
		return nil, bad
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(payloadPart)
	sig, err2 := base64.RawURLEncoding.DecodeString(sigPart)
	if err1 != nil || err2 != nil {
		return nil, bad
	}
	mac := hmac.New(sha256.New, p.key)
	mac.Write(payload)
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return nil, bad
	}
	var t pageToken
	if err := json.Unmarshal(payload, &t); err != nil || t.Status != f.Status {
		return nil, bad
	}
	return &Cursor{CreateTime: time.UnixMicro(t.Time).UTC(), ID: t.ID}, nil
}
