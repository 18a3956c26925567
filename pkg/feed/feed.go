// Package feed tails an append-only log (a table of events numbered by a growing sequence column,
// written by every replica) once per process and fans each batch out to every subscriber, so that
// a thousand idle watch streams cost one query per interval, not a thousand. Subscribers filter
// what they receive themselves (a user sees only their own events).
//
// The poller runs only while someone subscribes: the first subscriber starts it, the last one to
// leave stops it. It is one goroutine per Feed, polling, rather than PostgreSQL's LISTEN/NOTIFY,
// because SQLite has no notifications and one query per interval per replica is already cheap
// (an index range scan that finds nothing).
package feed

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/meshmart/meshmart/pkg/fault"
	"github.com/meshmart/meshmart/pkg/observability"
)

// ErrBehind ends a subscription that did not take its batches as fast as the log grew: the feed
// never waits for one slow stream, and never holds an unbounded backlog for it. It is
// Unavailable, so the client reconnects (to this replica or another) and catches up from there.
var ErrBehind = fault.New(fault.Unavailable, "the stream fell behind the event log; reconnect")

// ErrStopped ends the subscriptions of a feed whose poller failed (a panic, logged).
var ErrStopped = fault.New(fault.Unavailable, "the event feed stopped; reconnect")

// Source is the log a Feed tails.
type Source[T any] struct {
	// Last returns the sequence number of the newest entry (0 when there is none): where a
	// started feed begins.
	Last func(ctx context.Context) (int64, error)
	// After returns up to limit entries with a sequence number above seq, in order.
	After func(ctx context.Context, seq int64, limit int) ([]T, error)
	// Seq is an entry's sequence number.
	Seq func(T) int64
}

// Feed is one poller of a Source shared by every subscriber in the process.
type Feed[T any] struct {
	src      Source[T]
	interval time.Duration
	log      *slog.Logger
	// batch is the most entries one query reads; pending the most batches a subscriber may
	// leave unread before it is ended with ErrBehind.
	batch, pending int

	mu      sync.Mutex
	subs    map[*Sub[T]]struct{}
	seq     int64
	stop    context.CancelFunc // nil while no poller runs
	stopped chan struct{}      // closed when the running poller has returned
}

// New returns a feed of src that polls every interval while it has subscribers; log gets its
// errors. It starts nothing: Subscribe does.
func New[T any](src Source[T], interval time.Duration, log *slog.Logger) *Feed[T] {
	return &Feed[T]{src: src, interval: interval, log: log, batch: 500, pending: 64, subs: map[*Sub[T]]struct{}{}}
}

// Sub is one subscription: batches of entries, in order, each entry once, from where the feed
// stood when it subscribed (at most one interval behind the log).
type Sub[T any] struct {
	f    *Feed[T]
	ch   chan []T
	done chan struct{}
	once sync.Once
	err  error
}

// Batches delivers the entries. A batch is shared with every other subscriber: read it, never
// change it.
func (s *Sub[T]) Batches() <-chan []T { return s.ch }

// Done is closed when the feed ended the subscription; Err then says why.
func (s *Sub[T]) Done() <-chan struct{} { return s.done }

// Err is why the feed ended the subscription (ErrBehind, ErrStopped, or the store's error), nil
// while it runs.
func (s *Sub[T]) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Close ends the subscription; the last one to leave stops the poller. It is safe to call more
// than once.
func (s *Sub[T]) Close() { s.f.remove(s, nil) }

// Subscribe starts a subscription, starting the poller if none runs (which reads where the log
// ends with Source.Last). Close it when done.
func (f *Feed[T]) Subscribe(ctx context.Context) (*Sub[T], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stop == nil {
		if f.stopped != nil {
			// A poller stopped by the last subscriber may still be finishing its query: let it
			// go before starting another, so that two never deliver at once.
			f.mu.Unlock()
			<-f.stopped
			f.mu.Lock()
		}
		if f.stop == nil {
			seq, err := f.src.Last(ctx)
			if err != nil {
				return nil, err
			}
			// The poller outlives the subscriber that started it, so it runs on a context of
			// its own, which the last subscriber to leave cancels.
			pctx, cancel := context.WithCancel(context.Background())
			f.seq, f.stop, f.stopped = seq, cancel, make(chan struct{})
			go f.poll(pctx, f.stopped)
		}
	}
	s := &Sub[T]{f: f, ch: make(chan []T, f.pending), done: make(chan struct{})}
	f.subs[s] = struct{}{}
	return s, nil
}

// remove ends s with err (nil: it left by itself) and stops the poller when s was the last.
func (f *Feed[T]) remove(s *Sub[T], err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.endLocked(s, err)
}

func (f *Feed[T]) endLocked(s *Sub[T], err error) {
	if _, ok := f.subs[s]; !ok {
		return
	}
	delete(f.subs, s)
	s.once.Do(func() { s.err = err; close(s.done) })
	if len(f.subs) == 0 && f.stop != nil {
		f.stop()
		f.stop = nil
	}
}

// Subscribers returns how many subscriptions are open.
func (f *Feed[T]) Subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

func (f *Feed[T]) poll(ctx context.Context, stopped chan struct{}) {
	defer close(stopped)
	defer f.endAll(ErrStopped) // after a panic; a normal return has no subscribers left
	defer observability.Recover(f.log, "event feed")
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := f.drain(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			// The subscribers' streams end with the store's error, as each stream's own poll
			// did: their clients reconnect, and a later subscription starts the feed afresh.
			f.log.Warn("event feed: read the log", "error", err)
			f.endAll(err)
			return
		}
	}
}

// drain reads everything after the feed's position and hands it to every subscriber.
func (f *Feed[T]) drain(ctx context.Context) error {
	for {
		f.mu.Lock()
		seq := f.seq
		f.mu.Unlock()
		entries, err := f.src.After(ctx, seq, f.batch)
		if err != nil {
			return err
		}
		if len(entries) > 0 {
			f.deliver(ctx, entries)
		}
		if len(entries) < f.batch {
			return nil
		}
	}
}

func (f *Feed[T]) deliver(ctx context.Context, entries []T) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ctx.Err() != nil {
		return // stopped while reading: a newer poller may already own f.seq
	}
	f.seq = f.src.Seq(entries[len(entries)-1])
	for s := range f.subs {
		select {
		case s.ch <- entries:
		default:
			f.endLocked(s, ErrBehind)
		}
	}
}

func (f *Feed[T]) endAll(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.subs {
		f.endLocked(s, err)
	}
	if f.stop != nil {
		f.stop()
		f.stop = nil
	}
}
