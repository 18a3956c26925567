package testkit

import (
	"slices"
	"sync"
	"time"
)

// LoadResult is what a load run measured.
type LoadResult struct {
	Calls, Errors int
	Elapsed       time.Duration
	Latencies     []time.Duration
}

// Add merges o into r, as if both runs had been one.
func (r *LoadResult) Add(o LoadResult) {
	r.Calls += o.Calls
	r.Errors += o.Errors
	r.Elapsed += o.Elapsed
	r.Latencies = append(r.Latencies, o.Latencies...)
}

// Rate is calls per second.
func (r LoadResult) Rate() float64 { return float64(r.Calls) / r.Elapsed.Seconds() }

// Percentile returns the latency below which the fraction p of calls finished.
func (r LoadResult) Percentile(p float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	s := slices.Clone(r.Latencies)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

// Load calls call from workers goroutines, back to back, for d, and measures every call. It is
// bounded in time and stops by itself.
func Load(workers int, d time.Duration, call func() error) LoadResult {
	var (
		mu    sync.Mutex
		all   LoadResult
		wg    sync.WaitGroup
		start = time.Now()
		stop  = start.Add(d)
	)
	for range workers {
		wg.Go(func() {
			var mine LoadResult
			for time.Now().Before(stop) {
				t0 := time.Now()
				err := call()
				mine.Latencies = append(mine.Latencies, time.Since(t0))
				mine.Calls++
				if err != nil {
					mine.Errors++
				}
			}
			mu.Lock()
			all.Add(mine)
			mu.Unlock()
		})
	}
	wg.Wait()
	all.Elapsed = time.Since(start)
	return all
}
