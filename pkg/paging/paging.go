// Package paging is how meshmart's List methods page: a Cursor (a position in a stable order of
// create time and id), page sizes clamped to one default and maximum, and signed page tokens that
// carry a cursor and are bound to the method and the filter they were issued for.
//
// A token is the cursor, base64url-encoded, and an HMAC-SHA256 over the method, the filter and the
// cursor. A token that was edited, forged, or reused with another method or filter is refused
// with ErrInvalidToken, a client error on the request's page_token field. Every replica holding
// the same key (see sqldb.DB.Secret) accepts the others' tokens.
package paging

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/meshmart/meshmart/pkg/fault"
)

// Page sizes: a request for zero or less gets DefaultSize, one for more than MaxSize gets MaxSize.
const (
	DefaultSize = 50
	MaxSize     = 500
)

// KeySize is the size of a page token key in bytes.
const KeySize = 32

// ErrInvalidToken is the error for a page token that is not one issued for this method and
// filter: an InvalidArgument naming the page_token field.
var ErrInvalidToken = fault.Invalid("page_token", "not a page token issued for this method and filter")

// Cursor is a position in a stable order of rows: their create time, then their id.
type Cursor struct {
	CreateTime time.Time
	ID         string
}

// Size turns a requested page size into the one to serve: DefaultSize for zero or less (the
// contracts' "server's default"), MaxSize for anything larger (AIP-158 lowers, rather than
// refuses, a large one).
func Size(requested int) int {
	switch {
	case requested <= 0:
		return DefaultSize
	case requested > MaxSize:
		return MaxSize
	}
	return requested
}

// Codec issues and reads page tokens signed with one key. It is safe for concurrent use.
type Codec struct {
	source func(context.Context) ([]byte, error)
	mu     sync.Mutex
	key    []byte // nil until source first succeeds
}

// NewCodec returns a Codec signing with the key source returns, asked on first use (and again
// after a failure) and kept once it succeeds. The key should be KeySize random bytes kept secret
// and shared by every replica of the service: a store's source is typically
// sqldb.DB.Secret(ctx, "page_token", KeySize), which the first replica to ask makes.
func NewCodec(source func(context.Context) ([]byte, error)) *Codec { return &Codec{source: source} }

// StaticKey returns a key source that always returns key, for NewCodec.
func StaticKey(key []byte) func(context.Context) ([]byte, error) {
	return func(context.Context) ([]byte, error) { return key, nil }
}

func (c *Codec) loadKey(ctx context.Context) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.key == nil {
		key, err := c.source(ctx)
		if err != nil {
			return nil, fmt.Errorf("page token key: %w", err)
		}
		c.key = key
	}
	return c.key, nil
}

// position is a cursor as a token carries it.
type position struct {
	Time int64  `json:"t"` // create time, unix microseconds
	ID   string `json:"i"`
}

// mac returns the signature of payload for method and filter. The filter is rendered with %#v,
// which names its type and every field, so filter should be a struct of plain values.
func mac(key []byte, method string, filter any, payload []byte) []byte {
	h := hmac.New(sha256.New, key)
	fmt.Fprintf(h, "%s\x00%#v\x00", method, filter)
	h.Write(payload)
	return h.Sum(nil)
}

// Issue returns the token of the page after at, for method listing with filter. It fails only
// when the key cannot be had.
func (c *Codec) Issue(ctx context.Context, method string, filter any, at Cursor) (string, error) {
	key, err := c.loadKey(ctx)
	if err != nil {
		return "", err
	}
	payload, _ := json.Marshal(position{Time: at.CreateTime.UnixMicro(), ID: at.ID}) // cannot fail
	return base64.RawURLEncoding.EncodeToString(payload) + "." +
		base64.RawURLEncoding.EncodeToString(mac(key, method, filter, payload)), nil
}

// Read returns the cursor in token, which must have been issued by Issue with a Codec of the same
// key, for the same method and an equal filter; otherwise it returns ErrInvalidToken. The empty
// token is the first page: a nil cursor. Failing to get the key is an error of its own.
func (c *Codec) Read(ctx context.Context, method string, filter any, token string) (*Cursor, error) {
	if token == "" {
		return nil, nil
	}
	key, err := c.loadKey(ctx)
	if err != nil {
		return nil, err
	}
	payloadPart, sigPart, ok := strings.Cut(token, ".")
	if !ok {
		return nil, ErrInvalidToken
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(payloadPart)
	sig, err2 := base64.RawURLEncoding.DecodeString(sigPart)
	if err1 != nil || err2 != nil || !hmac.Equal(sig, mac(key, method, filter, payload)) {
		return nil, ErrInvalidToken
	}
	var p position
	if err := json.Unmarshal(payload, &p); err != nil {
		return nil, ErrInvalidToken
	}
	return &Cursor{CreateTime: time.UnixMicro(p.Time).UTC(), ID: p.ID}, nil
}

// List serves one page of a List method: it reads token with c (for method and filter), asks
// fetch for Size(size)+1 rows after that position (after is nil on the first page), and returns
// the page without the extra row and, when the extra row showed that more follow, the token of
// the next page ("" on the last). at gives a row's position.
func List[T any](ctx context.Context, c *Codec, method string, filter any, size int, token string,
	fetch func(after *Cursor, limit int) ([]T, error), at func(T) Cursor) ([]T, string, error) {
	after, err := c.Read(ctx, method, filter, token)
	if err != nil {
		return nil, "", err
	}
	size = Size(size)
	// One more than asked for tells whether another page follows.
	rows, err := fetch(after, size+1)
	if err != nil {
		return nil, "", err
	}
	if len(rows) <= size {
		return rows, "", nil
	}
	rows = rows[:size]
	next, err := c.Issue(ctx, method, filter, at(rows[len(rows)-1]))
	if err != nil {
		return nil, "", err
	}
	return rows, next, nil
}

// Map converts the items of a page, typically domain values into the messages of a List
// response: Map(orders, toProto). It returns nil for an empty page, as an unset repeated field.
func Map[T, P any](items []T, f func(T) P) []P {
	if len(items) == 0 {
		return nil
	}
	out := make([]P, len(items))
	for i, it := range items {
		out[i] = f(it)
	}
	return out
}
