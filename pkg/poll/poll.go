// Package poll reads an append-only log that several replicas write, such as a table of events
// numbered by a growing sequence column, the way a watch stream tails it.
package poll

import "context"

// Drain reads every entry after seq with fetch, batch entries at a time until a batch comes back
// short, calls each for every entry in order, and returns the sequence number of the last entry
// read (seq when there was none). It stops at the first error from fetch or each.
func Drain[T any](ctx context.Context, seq int64, batch int, fetch func(ctx context.Context, after int64, limit int) ([]T, error),
	seqOf func(T) int64, each func(T) error) (int64, error) {
	for {
		entries, err := fetch(ctx, seq, batch)
		if err != nil {
			return seq, err
		}
		for _, e := range entries {
			seq = seqOf(e)
			if err := each(e); err != nil {
				return seq, err
			}
		}
		if len(entries) < batch {
			return seq, nil
		}
	}
}
