package order

import "time"

// SetClock makes s read the time from now, so that tests can step past leases and grace periods
// without sleeping. It exists only in test builds.
func SetClock(s *Service, now func() time.Time) { s.now = now }
