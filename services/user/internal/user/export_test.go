package user

// HoldHashSlots takes every hashing slot until release is called, as that many hashes running
// would.
func HoldHashSlots(s *Service, n int64) (release func()) {
	if !s.hashes.TryAcquire(n) {
		panic("hash slots already taken")
	}
	return func() { s.hashes.Release(n) }
}

// AddressesOnRecord is how many client addresses have failed logins in memory.
func AddressesOnRecord(s *Service) int { return s.addresses.size() }
