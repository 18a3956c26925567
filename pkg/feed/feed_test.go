package feed_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/feed"
	"github.com/meshmart/meshmart/pkg/testkit"
)

// log is an append-only log in memory that counts the queries made of it.
type log struct {
	mu      sync.Mutex
	entries []int64 // entry i has sequence number i+1
	queries atomic.Int64
	panicAt atomic.Int64 // After panics when asked for entries after this seq (0: never)
}

func (l *log) append(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for range n {
		l.entries = append(l.entries, int64(len(l.entries)+1))
	}
}

func (l *log) source() feed.Source[int64] {
	return feed.Source[int64]{
		Last: func(context.Context) (int64, error) {
			l.mu.Lock()
			defer l.mu.Unlock()
			return int64(len(l.entries)), nil
		},
		After: func(_ context.Context, seq int64, limit int) ([]int64, error) {
			l.queries.Add(1)
			if p := l.panicAt.Load(); p != 0 && seq >= p {
				panic("the store went mad")
			}
			l.mu.Lock()
			defer l.mu.Unlock()
			out := l.entries[min(seq, int64(len(l.entries))):]
			return out[:min(limit, len(out))], nil
		},
		Seq: func(e int64) int64 { return e },
	}
}

// next reads batches from s until it holds n entries, or fails after a few seconds.
func next(t *testing.T, s *feed.Sub[int64], n int) []int64 {
	t.Helper()
	var got []int64
	timeout := time.After(5 * time.Second)
	for len(got) < n {
		select {
		case b := <-s.Batches():
			got = append(got, b...)
		case <-s.Done():
			t.Fatalf("subscription ended: %v", s.Err())
		case <-timeout:
			t.Fatalf("got %v, want %d entries", got, n)
		}
	}
	return got
}

// A thousand subscribers cost what one does: the log is read once per interval whoever listens,
// and every subscriber gets every new entry, once, in order, from where it subscribed.
func TestFanOut(t *testing.T) {
	t.Parallel()
	l := &log{}
	l.append(5) // before anyone subscribes: nobody sees these
	f := feed.New(l.source(), 10*time.Millisecond, testkit.Logger(t))
	ctx := context.Background()
	subs := make([]*feed.Sub[int64], 1000)
	for i := range subs {
		s, err := f.Subscribe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		subs[i] = s
	}
	time.Sleep(200 * time.Millisecond)
	// Idle: about 20 polls in 200 ms, whatever the number of subscribers (one poll per
	// subscriber and interval would be 20,000).
	if q := l.queries.Load(); q > 40 {
		t.Errorf("%d queries in 200 ms of 1,000 idle subscribers polling every 10 ms: want one poller", q)
	}
	l.append(3)
	for i, s := range subs {
		if got := next(t, s, 3); fmt.Sprint(got) != "[6 7 8]" {
			t.Fatalf("subscriber %d got %v, want [6 7 8]", i, got)
		}
	}
	if n := f.Subscribers(); n != 1000 {
		t.Errorf("Subscribers = %d, want 1000", n)
	}
}

// The poller runs only while someone listens, and a later subscriber starts it again from the
// log's end.
func TestPollerStopsWithTheLastSubscriber(t *testing.T) {
	t.Parallel()
	l := &log{}
	f := feed.New(l.source(), 5*time.Millisecond, testkit.Logger(t))
	s, err := f.Subscribe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	l.append(1)
	next(t, s, 1)
	s.Close()
	s.Close() // twice is fine
	time.Sleep(50 * time.Millisecond)
	before := l.queries.Load()
	time.Sleep(100 * time.Millisecond)
	if q := l.queries.Load() - before; q != 0 {
		t.Errorf("%d queries with no subscriber, want 0", q)
	}
	l.append(2) // entries 2 and 3, while nobody listens
	s2, err := f.Subscribe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	l.append(1)
	if got := next(t, s2, 1); fmt.Sprint(got) != "[4]" {
		t.Errorf("a new subscriber got %v, want [4]", got)
	}
}

// A subscriber that does not read is ended with ErrBehind; the others go on.
func TestSlowSubscriberIsDropped(t *testing.T) {
	t.Parallel()
	l := &log{}
	f := feed.New(l.source(), 2*time.Millisecond, testkit.Logger(t))
	slow, err := f.Subscribe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fast, err := f.Subscribe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	read := 0
	deadline := time.After(10 * time.Second)
	for slow.Err() == nil {
		l.append(1)
		read += len(next(t, fast, 1))
		select {
		case <-deadline:
			t.Fatal("the slow subscriber was never dropped")
		default:
		}
	}
	if !errors.Is(slow.Err(), feed.ErrBehind) {
		t.Errorf("slow subscriber ended with %v, want ErrBehind", slow.Err())
	}
	if read < 64 {
		t.Errorf("dropped after %d entries, before its 64 pending batches were full", read)
	}
}

// A panic in the poller ends its subscriptions with ErrStopped (and is logged) instead of
// killing the process; the next subscriber starts a fresh poller.
func TestPanicInPollerEndsSubscriptions(t *testing.T) {
	t.Parallel()
	l := &log{}
	f := feed.New(l.source(), 2*time.Millisecond, testkit.DiscardLogger())
	s, err := f.Subscribe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	l.panicAt.Store(1)
	l.append(1)
	next(t, s, 1)
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the subscription outlived its poller's panic")
	}
	if !errors.Is(s.Err(), feed.ErrStopped) {
		t.Errorf("ended with %v, want ErrStopped", s.Err())
	}
	l.panicAt.Store(0)
	s2, err := f.Subscribe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	l.append(1)
	if got := next(t, s2, 1); fmt.Sprint(got) != "[2]" {
		t.Errorf("after the panic a new subscriber got %v, want [2]", got)
	}
}
