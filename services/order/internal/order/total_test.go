package order

import (
	"testing"

	"github.com/meshmart/meshmart/pkg/fault"
)

func TestTotal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		items []Item
		want  int64
		bad   bool
	}{
		{[]Item{{"A", 2, 1999}, {"B", 3, 250}}, 4748, false},
		{[]Item{{"A", 10000, 100000000000}}, 1_000_000_000_000_000, false},
		{nil, 0, true},
		{[]Item{{"A", 0, 1}}, 0, true},
		{[]Item{{"A", 1, -5}}, 0, true},
		{[]Item{{"A", 1 << 40, 1 << 40}}, 0, true},          // the product overflows
		{[]Item{{"A", 1, 1<<63 - 1}, {"B", 1, 1}}, 0, true}, // the sum overflows
	}
	for _, tt := range tests {
		got, err := total(tt.items)
		if tt.bad != (fault.CodeOf(err) == fault.InvalidArgument) || got != tt.want {
			t.Errorf("total(%v) = %d, %v; want %d (invalid %v)", tt.items, got, err, tt.want, tt.bad)
		}
	}
}
