package pagetoken_test

import (
	"errors"
	"testing"

	"github.com/meshmart/meshmart/pkg/pagetoken"
)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	type pos struct {
		Time int64  `json:"t"`
		ID   string `json:"i"`
	}
	var got pos
	if err := pagetoken.Decode(pagetoken.Encode(pos{42, "x"}), &got); err != nil || got != (pos{42, "x"}) {
		t.Errorf("round trip = %+v, %v", got, err)
	}
	for _, bad := range []string{"%%%", "bm90IGpzb24"} {
		if err := pagetoken.Decode(bad, &got); !errors.Is(err, pagetoken.ErrInvalid) {
			t.Errorf("Decode(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestSize(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ in, want int }{{-1, 50}, {0, 50}, {1, 1}, {500, 500}, {501, 500}} {
		if got := pagetoken.Size(tt.in, 50, 500); got != tt.want {
			t.Errorf("Size(%d) = %d, want %d", tt.in, got, tt.want)
		}
	}
}
