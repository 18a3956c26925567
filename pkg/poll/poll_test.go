package poll_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/meshmart/meshmart/pkg/poll"
)

func TestDrain(t *testing.T) {
	t.Parallel()
	log := []int64{1, 2, 3, 5, 8, 13, 21}
	fetch := func(_ context.Context, after int64, limit int) ([]int64, error) {
		i, _ := slices.BinarySearch(log, after+1)
		return log[i:min(i+limit, len(log))], nil
	}
	id := func(n int64) int64 { return n }
	for _, tt := range []struct {
		from, want int64
		read       []int64
	}{
		{0, 21, log},
		{5, 21, []int64{8, 13, 21}},
		{21, 21, nil},
	} {
		var read []int64
		seq, err := poll.Drain(context.Background(), tt.from, 2, fetch, id, func(n int64) error { read = append(read, n); return nil })
		if err != nil || seq != tt.want || !slices.Equal(read, tt.read) {
			t.Errorf("Drain from %d = %d, %v, read %v; want %d, %v", tt.from, seq, err, read, tt.want, tt.read)
		}
	}

	stop := errors.New("stop")
	seq, err := poll.Drain(context.Background(), 0, 2, fetch, id, func(n int64) error {
		if n == 5 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || seq != 5 {
		t.Errorf("Drain stopped by each = %d, %v; want 5, stop", seq, err)
	}
	boom := errors.New("boom")
	if _, err := poll.Drain(context.Background(), 0, 2, func(context.Context, int64, int) ([]int64, error) { return nil, boom }, id,
		func(int64) error { return nil }); !errors.Is(err, boom) {
		t.Errorf("Drain with a failing fetch = %v", err)
	}
}
