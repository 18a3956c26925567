package paging_test

import (
	"context"
	"encoding/base64"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/fault"
	"github.com/meshmart/meshmart/pkg/paging"
)

type filter struct {
	UserID string
	Status int
}

type otherFilter struct {
	UserID string
	Status int
}

var key = []byte("0123456789abcdef0123456789abcdef")

func TestToken(t *testing.T) {
	t.Parallel()
	c := paging.NewCodec(paging.StaticKey(key))
	at := paging.Cursor{CreateTime: time.UnixMicro(1_700_000_000_123_456).UTC(), ID: "o-1"}
	f := filter{UserID: "u", Status: 2}
	ctx := context.Background()
	token, err := c.Issue(ctx, "ListOrders", f, at)
	if err != nil {
		t.Fatal(err)
	}

	got, err := c.Read(ctx, "ListOrders", f, token)
	if err != nil || got == nil || *got != at {
		t.Fatalf("round trip = %+v, %v; want %+v", got, err, at)
	}
	if got, err := paging.NewCodec(paging.StaticKey(key)).Read(ctx, "ListOrders", f, token); err != nil || *got != at {
		t.Errorf("another codec with the same key: %+v, %v", got, err)
	}
	if got, err := c.Read(ctx, "ListOrders", f, ""); got != nil || err != nil {
		t.Errorf("empty token = %+v, %v; want the first page", got, err)
	}

	payload, sig, _ := strings.Cut(token, ".")
	edited := base64.RawURLEncoding.EncodeToString([]byte(`{"t":1700000000123456,"i":"o-2"}`)) + "." + sig
	flip := []byte(sig)
	flip[0] ^= 1
	for _, tt := range []struct {
		name   string
		codec  *paging.Codec
		method string
		filter any
		token  string
	}{
		{"tampered payload", c, "ListOrders", f, edited},
		{"tampered signature", c, "ListOrders", f, payload + "." + string(flip)},
		{"no signature", c, "ListOrders", f, payload},
		{"other method", c, "ListPayments", f, token},
		{"other filter", c, "ListOrders", filter{UserID: "v", Status: 2}, token},
		{"other filter type", c, "ListOrders", otherFilter(f), token},
		{"other key", paging.NewCodec(paging.StaticKey([]byte("fedcba9876543210fedcba9876543210"))), "ListOrders", f, token},
		{"garbage", c, "ListOrders", f, "%%%.%%%"},
		{"not base64", c, "ListOrders", f, "garbage"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.codec.Read(context.Background(), tt.method, tt.filter, tt.token)
			if got != nil || !errors.Is(err, paging.ErrInvalidToken) {
				t.Fatalf("Read = %+v, %v; want ErrInvalidToken", got, err)
			}
			if f, ok := fault.As(err); !ok || f.Code != fault.InvalidArgument || f.Field != "page_token" {
				t.Errorf("error %v is not InvalidArgument on page_token", err)
			}
		})
	}
}

func TestSize(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ in, want int }{{-1, 50}, {0, 50}, {1, 1}, {500, 500}, {501, 500}} {
		if got := paging.Size(tt.in); got != tt.want {
			t.Errorf("Size(%d) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

// TestList pages through 7 rows, 3 at a time, as a List method does.
func TestList(t *testing.T) {
	t.Parallel()
	c := paging.NewCodec(paging.StaticKey(key))
	base := time.Unix(1_700_000_000, 0).UTC()
	var rows []paging.Cursor // newest first
	for i := range 7 {
		rows = append(rows, paging.Cursor{CreateTime: base.Add(-time.Duration(i) * time.Second), ID: string(rune('a' + i))})
	}
	var limits []int
	fetch := func(after *paging.Cursor, limit int) ([]paging.Cursor, error) {
		limits = append(limits, limit)
		from := 0
		if after != nil {
			for from < len(rows) && !rows[from].CreateTime.Before(after.CreateTime) {
				from++
			}
		}
		return rows[from:min(from+limit, len(rows))], nil
	}
	at := func(c paging.Cursor) paging.Cursor { return c }
	var got []paging.Cursor
	token := ""
	for page := 0; ; page++ {
		rs, next, err := paging.List(context.Background(), c, "List", filter{}, 3, token, fetch, at)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) > 3 {
			t.Fatalf("page %d has %d rows", page, len(rs))
		}
		got = append(got, rs...)
		if next == "" {
			break
		}
		token = next
	}
	if len(got) != len(rows) {
		t.Fatalf("got %d rows, want %d", len(got), len(rows))
	}
	for i := range rows {
		if got[i] != rows[i] {
			t.Errorf("row %d = %v, want %v", i, got[i], rows[i])
		}
	}
	if want := []int{4, 4, 4}; !slices.Equal(limits, want) {
		t.Errorf("fetched with limits %v, want %v", limits, want)
	}

	wantErr := errors.New("boom")
	if rs, next, err := paging.List(context.Background(), c, "List", filter{}, 3, "", func(*paging.Cursor, int) ([]paging.Cursor, error) {
		return nil, wantErr
	}, at); rs != nil || next != "" || !errors.Is(err, wantErr) {
		t.Errorf("failing fetch: %v, %q, %v", rs, next, err)
	}
	if _, _, err := paging.List(context.Background(), c, "List", filter{}, 3, "bad", fetch, at); !errors.Is(err, paging.ErrInvalidToken) {
		t.Errorf("bad token: %v", err)
	}
}

// TestKeySource checks that the key is asked for once it is needed, asked again after a failure
// and kept after a success.
func TestKeySource(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	asked := 0
	down := errors.New("database down")
	c := paging.NewCodec(func(context.Context) ([]byte, error) {
		asked++
		if asked == 1 {
			return nil, down
		}
		return key, nil
	})
	if _, err := c.Read(ctx, "List", filter{}, ""); err != nil || asked != 0 {
		t.Fatalf("the first page asked for the key: %d, %v", asked, err)
	}
	if _, err := c.Issue(ctx, "List", filter{}, paging.Cursor{ID: "a"}); !errors.Is(err, down) || errors.Is(err, paging.ErrInvalidToken) {
		t.Fatalf("Issue with no key = %v, want the source's error", err)
	}
	token, err := c.Issue(ctx, "List", filter{}, paging.Cursor{ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.Read(ctx, "List", filter{}, token); err != nil || got.ID != "a" || asked != 2 {
		t.Errorf("Read = %+v, %v after %d asks, want a after 2", got, err, asked)
	}
}

func TestMap(t *testing.T) {
	t.Parallel()
	if got := paging.Map([]int{1, 2, 3}, strconv.Itoa); !slices.Equal(got, []string{"1", "2", "3"}) {
		t.Errorf("Map = %q", got)
	}
	if got := paging.Map(nil, strconv.Itoa); got != nil {
		t.Errorf("Map of an empty page = %q, want nil", got)
	}
}
