package order

import "time"

// SetClock makes s read the time from now, so that tests can step past leases and grace periods
// without sleeping. It exists only in test builds.
func SetClock(s *Service, now func() time.Time) { s.now = now }

// SetJitter makes r draw its backoff delays with jitter instead of at random.
func SetJitter(r *Reconciler, jitter func(n time.Duration) time.Duration) { r.jitter = jitter }
