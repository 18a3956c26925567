package user

import (
	"context"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/meshmart/meshmart/pkg/fault"
)

// Login guards: what keeps Login from being a weapon. A password hash costs tens of
// milliseconds of a core and 19 MiB, so hashes run under a bound sized to the cores, and an
// account or an address that keeps failing waits, longer after each failure, before its next
// attempt is even hashed.
var (
	// ErrHashBusy: every hashing slot is taken. The call is refused at once, never queued, so a
	// flood costs neither memory nor time beyond the bound.
	ErrHashBusy = fault.New(fault.ResourceExhausted, "too many sign-ins at once; retry shortly")
	// ErrLoginBackoff: too many failed logins for this account or from this address lately; the
	// error carries the wait. Unknown accounts back off alike, so that it tells nobody which
	// accounts exist.
	ErrLoginBackoff = fault.New(fault.ResourceExhausted, "too many failed sign-ins; retry later")
)

// hashBusyRetry is the retry delay ErrHashBusy suggests: about one hash.
const hashBusyRetry = 100 * time.Millisecond

// Backoff is how long failed logins make the next attempt wait: the first Free failures cost
// nothing, then the wait doubles from Base with every failure, up to Max. Failures are forgotten
// Forget after the last one.
type Backoff struct {
	Free   int
	Base   time.Duration
	Max    time.Duration
	Forget time.Duration
}

// Delay is the wait after n failures in a row.
func (b Backoff) Delay(n int) time.Duration {
	if n <= b.Free {
		return 0
	}
	d := b.Base
	for i := b.Free + 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// Wait is how long an attempt at now must still wait after f, 0 when it may go ahead.
func (b Backoff) Wait(f Failures, now time.Time) time.Duration {
	if f.Count == 0 || now.Sub(f.Last) >= b.Forget {
		return 0
	}
	return max(0, f.Last.Add(b.Delay(f.Count)).Sub(now))
}

// Failures are the failed logins recorded against an account or an address: how many in a row,
// and when the last was.
type Failures struct {
	Count int
	Last  time.Time
}

// LoginLimits are Login's guards.
type LoginLimits struct {
	// HashConcurrency bounds the password hashes running at once (Login and Create); 0 means
	// half of GOMAXPROCS (at least one), so that hashing never holds every P of the process and
	// the service's other calls always find one free: with every P hashing, a GetUser waited
	// for the scheduler to preempt a hash, tens of milliseconds at each step of the call. A login holds its slot from its first database read to the end of its hash,
	// so that a flood of logins cannot queue on the database pool either.
	HashConcurrency int
	// HashWait is how long a hash may wait for a slot (when at most two per slot wait already);
	// 0 refuses at once.
	HashWait time.Duration
	// Account is the backoff per account, kept in the database so that every replica sees it.
	Account Backoff
	// Address is the backoff per client address, kept in each replica's memory: an address's
	// failures are spread over the replicas, so it gets at most replicas times its allowance,
	// which is enough to stop a flood from one place without a database write per address;
	// the account backoff, shared, is what guards an account.
	Address Backoff
}

// DefaultLoginLimits: half of GOMAXPROCS hashes at once, waiting at most 1 s for a slot; 5 free
// failures per account and 10 per address, then a wait of 1 s doubling up to 15 min; failures
// forgotten an hour after the last one.
var DefaultLoginLimits = LoginLimits{
	HashWait: time.Second,
	Account:  Backoff{Free: 5, Base: time.Second, Max: 15 * time.Minute, Forget: time.Hour},
	Address:  Backoff{Free: 10, Base: time.Second, Max: 15 * time.Minute, Forget: time.Hour},
}

// WithLoginLimits replaces DefaultLoginLimits.
func WithLoginLimits(l LoginLimits) Option { return func(s *Service) { s.limits = l } }

// WithClientAddress tells the service how to learn the address a call comes from, for the
// per-address backoff: the chassis' server.Config.ClientAddress, the peer's address or, for the
// gateway's calls, the browser's it forwards. Without it no address backs off.
func WithClientAddress(f func(ctx context.Context) string) Option {
	return func(s *Service) { s.clientAddr = f }
}

// hashSlot takes one of the hashing slots. When none is free it waits for one, at most
// HashWait, but only while fewer than two calls per slot wait already: a short line that absorbs
// a burst of honest sign-ins, never a queue that grows; past it, or past the wait, it fails with
// ErrHashBusy.
func (s *Service) hashSlot(ctx context.Context) (release func(), err error) {
	release = func() { s.hashes.Release(1) }
	if s.hashes.TryAcquire(1) {
		return release, nil
	}
	defer s.hashWaiting.Add(-1)
	if s.hashWaiting.Add(1) > 2*s.hashSlots || s.limits.HashWait <= 0 {
		return nil, ErrHashBusy.RetryAfter(hashBusyRetry)
	}
	wctx, cancel := context.WithTimeout(ctx, s.limits.HashWait)
	defer cancel()
	if err := s.hashes.Acquire(wctx, 1); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, ErrHashBusy.RetryAfter(hashBusyRetry)
	}
	return release, nil
}

func (s *Service) newHashGate() {
	s.hashSlots = int64(s.limits.HashConcurrency)
	if s.hashSlots <= 0 {
		s.hashSlots = int64(max(1, runtime.GOMAXPROCS(0)/2))
	}
	s.hashes = semaphore.NewWeighted(s.hashSlots)
}

// accountKey is what an account's failures are recorded under: its id when it exists, else the
// name it was asked for, so that unknown accounts back off exactly like known ones.
func accountKey(u User, found bool, l Lookup) string {
	switch {
	case found:
		return "id:" + u.ID
	case l.Email != "":
		return "email:" + l.Email
	default:
		return "username:" + l.Username
	}
}

// accountGuard refuses an attempt on the account recorded under key while it must still wait,
// and otherwise returns its recorded failures.
func (s *Service) accountGuard(ctx context.Context, key string, now time.Time) (Failures, error) {
	f, err := s.store.LoginFailures(ctx, key)
	if err != nil {
		return Failures{}, err
	}
	if wait := s.limits.Account.Wait(f, now); wait > 0 {
		return Failures{}, ErrLoginBackoff.RetryAfter(wait)
	}
	return f, nil
}

// loginFailed records a failed attempt against the account (the address' is recorded by Login,
// before it releases its hashing slot), and now and then prunes the account records nobody
// failed for in Forget.
func (s *Service) loginFailed(ctx context.Context, key string, now time.Time) error {
	if err := s.store.RecordLoginFailure(ctx, key, now, now.Add(-s.limits.Account.Forget)); err != nil {
		return err
	}
	if s.addresses.prunePending(now) {
		if _, err := s.store.PruneLoginFailures(ctx, now.Add(-s.limits.Account.Forget)); err != nil {
			return err
		}
	}
	return nil
}

// pruneEvery is how often a replica prunes old failure records, in memory and in the database.
const pruneEvery = time.Minute

// addressFailures are the failed logins per client address, in memory. x/time/rate limits
// rates, not failures, hence this small map; it is pruned every pruneEvery of the entries
// whose last failure is older than Forget.
type addressFailures struct {
	mu        sync.Mutex
	m         map[string]Failures
	lastPrune time.Time
	lastStore time.Time
}

func (a *addressFailures) wait(b Backoff, addr string, now time.Time) time.Duration {
	if addr == "" {
		return 0
	}
	a.mu.Lock()
	f := a.m[addr]
	a.mu.Unlock()
	return b.Wait(f, now)
}

func (a *addressFailures) fail(b Backoff, addr string, now time.Time) {
	if addr == "" {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = map[string]Failures{}
	}
	if now.Sub(a.lastPrune) >= pruneEvery {
		for k, f := range a.m {
			if now.Sub(f.Last) >= b.Forget {
				delete(a.m, k)
			}
		}
		a.lastPrune = now
	}
	f := a.m[addr]
	if now.Sub(f.Last) >= b.Forget {
		f.Count = 0
	}
	a.m[addr] = Failures{Count: f.Count + 1, Last: now}
}

// prunePending reports, once every pruneEvery, that the stored records are due for pruning.
func (a *addressFailures) prunePending(now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if now.Sub(a.lastStore) < pruneEvery {
		return false
	}
	a.lastStore = now
	return true
}

// size is how many addresses have failures on record.
func (a *addressFailures) size() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.m)
}

// WithClock makes the service read the time from now instead of the system clock; tests move
// it to step through backoffs.
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }
