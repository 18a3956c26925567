package user_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/fault"
	"github.com/meshmart/meshmart/pkg/testkit"
	"github.com/meshmart/meshmart/services/user/internal/store"
	"github.com/meshmart/meshmart/services/user/internal/user"
)

func TestBackoffDelay(t *testing.T) {
	t.Parallel()
	b := user.Backoff{Free: 3, Base: time.Second, Max: time.Minute, Forget: time.Hour}
	for n, want := range map[int]time.Duration{0: 0, 1: 0, 3: 0, 4: time.Second, 5: 2 * time.Second, 6: 4 * time.Second,
		9: 32 * time.Second, 10: time.Minute, 1000: time.Minute} {
		if got := b.Delay(n); got != want {
			t.Errorf("Delay(%d) = %v, want %v", n, got, want)
		}
	}
	last := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := user.Failures{Count: 5, Last: last}
	for at, want := range map[time.Duration]time.Duration{0: 2 * time.Second, time.Second: time.Second, 2 * time.Second: 0, time.Hour: 0} {
		if got := b.Wait(f, last.Add(at)); got != want {
			t.Errorf("Wait 5 failures, %v after the last = %v, want %v", at, got, want)
		}
	}
}

// clock is a settable time for the service.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type addrKey struct{}

func from(addr string) context.Context {
	return context.WithValue(context.Background(), addrKey{}, addr)
}

func guardedService(t *testing.T, limits user.LoginLimits) (*user.Service, *clock, *store.Users) {
	t.Helper()
	st := testkit.OpenSQLite(t, store.Open)
	c := &clock{now: time.Now().UTC()}
	svc, err := user.NewService(st, testkit.NewKeys(t).Issuer, user.WithLoginLimits(limits), user.WithClock(c.Now),
		user.WithClientAddress(func(ctx context.Context) string { s, _ := ctx.Value(addrKey{}).(string); return s }))
	if err != nil {
		t.Fatal(err)
	}
	return svc, c, st
}

func retryDelay(err error) time.Duration {
	f, _ := fault.As(err)
	if f == nil {
		return 0
	}
	return f.RetryDelay
}

// TestLoginBacksOffPerAccount fails logins on one account from ever new addresses: after the
// free failures each attempt must wait, doubling, even with the right password, and an unknown
// account backs off exactly alike (nothing tells which accounts exist). Without the backoff every
// attempt is hashed and answered.
func TestLoginBacksOffPerAccount(t *testing.T) {
	t.Parallel()
	limits := user.LoginLimits{
		Account: user.Backoff{Free: 3, Base: time.Second, Max: time.Minute, Forget: time.Hour},
		Address: user.Backoff{Free: 1000, Base: time.Second, Max: time.Minute, Forget: time.Hour},
	}
	svc, clk, _ := guardedService(t, limits)
	signUp(t, svc, "ada")
	for _, who := range []user.Lookup{{Username: "ada"}, {Email: "nobody@example.com"}} {
		for i := range 4 {
			_, _, _, err := svc.Login(from("10.0.0."+string(rune('a'+i))), who, "wrong password")
			if !errors.Is(err, user.ErrBadCredentials) {
				t.Fatalf("%+v: failure %d = %v, want ErrBadCredentials", who, i+1, err)
			}
		}
		// 4 failures: 1 s to wait, whatever the password and the address.
		_, _, _, err := svc.Login(from("10.0.1.1"), who, "correct horse")
		if !errors.Is(err, user.ErrLoginBackoff) || retryDelay(err) != time.Second {
			t.Fatalf("%+v: after 4 failures = %v (retry %v), want ErrLoginBackoff with 1s", who, err, retryDelay(err))
		}
		clk.Add(time.Second)
		_, _, _, err = svc.Login(from("10.0.1.2"), who, "wrong password")
		if !errors.Is(err, user.ErrBadCredentials) {
			t.Fatalf("%+v: after the wait = %v, want ErrBadCredentials", who, err)
		}
		_, _, _, err = svc.Login(from("10.0.1.3"), who, "wrong password")
		if !errors.Is(err, user.ErrLoginBackoff) || retryDelay(err) != 2*time.Second {
			t.Fatalf("%+v: after 5 failures = %v (retry %v), want ErrLoginBackoff with 2s", who, err, retryDelay(err))
		}
		clk.Add(2 * time.Second)
	}
	// Once the wait is over the right password works, and clears the account's record.
	if _, _, _, err := svc.Login(from("10.0.2.1"), user.Lookup{Username: "ada"}, "correct horse"); err != nil {
		t.Fatalf("right password after the wait: %v", err)
	}
	for i := range 3 {
		if _, _, _, err := svc.Login(from("10.0.2.2"), user.Lookup{Username: "ada"}, "wrong password"); !errors.Is(err, user.ErrBadCredentials) {
			t.Fatalf("failure %d after a success = %v, want a fresh allowance", i+1, err)
		}
	}
}

// TestLoginBacksOffPerAddress fails logins from one address on ever new accounts: the address
// backs off, another address does not.
func TestLoginBacksOffPerAddress(t *testing.T) {
	t.Parallel()
	limits := user.LoginLimits{
		Account: user.Backoff{Free: 1000, Base: time.Second, Max: time.Minute, Forget: time.Hour},
		Address: user.Backoff{Free: 2, Base: time.Second, Max: time.Minute, Forget: time.Hour},
	}
	svc, clk, _ := guardedService(t, limits)
	signUp(t, svc, "ada")
	for i, name := range []string{"a", "b", "c"} {
		if _, _, _, err := svc.Login(from("10.9.9.9"), user.Lookup{Username: name}, "wrong password"); !errors.Is(err, user.ErrBadCredentials) {
			t.Fatalf("failure %d = %v", i+1, err)
		}
	}
	_, _, _, err := svc.Login(from("10.9.9.9"), user.Lookup{Username: "ada"}, "correct horse")
	if !errors.Is(err, user.ErrLoginBackoff) || retryDelay(err) != time.Second {
		t.Fatalf("after 3 failures from the address = %v (retry %v), want ErrLoginBackoff with 1s", err, retryDelay(err))
	}
	if _, _, _, err := svc.Login(from("10.1.1.1"), user.Lookup{Username: "ada"}, "correct horse"); err != nil {
		t.Fatalf("another address: %v", err)
	}
	// An hour without failures forgets the address, and the next failure prunes it from memory.
	clk.Add(time.Hour)
	if _, _, _, err := svc.Login(from("10.2.2.2"), user.Lookup{Username: "x"}, "wrong password"); !errors.Is(err, user.ErrBadCredentials) {
		t.Fatal(err)
	}
	if n := user.AddressesOnRecord(svc); n != 1 {
		t.Errorf("%d addresses on record after an hour, want 1 (the one that just failed)", n)
	}
}

// TestOldFailuresArePruned checks that account records are deleted once forgotten.
func TestOldFailuresArePruned(t *testing.T) {
	t.Parallel()
	limits := user.DefaultLoginLimits
	svc, clk, st := guardedService(t, limits)
	ctx := context.Background()
	if _, _, _, err := svc.Login(from("10.0.0.1"), user.Lookup{Username: "old"}, "wrong password"); !errors.Is(err, user.ErrBadCredentials) {
		t.Fatal(err)
	}
	if f, err := st.LoginFailures(ctx, "username:old"); err != nil || f.Count != 1 {
		t.Fatalf("recorded = %+v, %v; want 1 failure", f, err)
	}
	clk.Add(limits.Account.Forget + time.Minute)
	if _, _, _, err := svc.Login(from("10.0.0.1"), user.Lookup{Username: "new"}, "wrong password"); !errors.Is(err, user.ErrBadCredentials) {
		t.Fatal(err)
	}
	if f, err := st.LoginFailures(ctx, "username:old"); err != nil || f.Count != 0 {
		t.Errorf("after the forget period = %+v, %v; want the record pruned", f, err)
	}
}

// TestHashBoundRefusesAtOnce takes every hashing slot: Login and sign-up then fail at once with
// ErrHashBusy and a retry delay, instead of queueing (and holding 19 MiB each).
func TestHashBoundRefusesAtOnce(t *testing.T) {
	t.Parallel()
	limits := user.DefaultLoginLimits
	limits.HashConcurrency, limits.HashWait = 2, 0
	svc, _, _ := guardedService(t, limits)
	signUp(t, svc, "ada")
	release := user.HoldHashSlots(svc, 2)
	start := time.Now()
	_, _, _, err := svc.Login(from("10.0.0.1"), user.Lookup{Username: "ada"}, "correct horse")
	if !errors.Is(err, user.ErrHashBusy) || retryDelay(err) <= 0 {
		t.Errorf("Login with every slot taken = %v (retry %v), want ErrHashBusy with a delay", err, retryDelay(err))
	}
	if _, err := svc.Create(context.Background(), user.NewUser{Email: "b@example.com", Username: "b", Password: "correct horse"}); !errors.Is(err, user.ErrHashBusy) {
		t.Errorf("sign-up with every slot taken = %v, want ErrHashBusy", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("refusing took %v: it must not wait for a slot", d)
	}
	release()
	if _, _, _, err := svc.Login(from("10.0.0.1"), user.Lookup{Username: "ada"}, "correct horse"); err != nil {
		t.Errorf("Login with a free slot: %v", err)
	}
}

// TestHashWaitIsShortAndBounded: with every slot taken, a login waits for a slot at most
// HashWait, and only two per slot may wait; the others are refused at once. A slot freed within
// the wait lets a waiting login through, as a burst of honest sign-ins needs.
func TestHashWaitIsShortAndBounded(t *testing.T) {
	t.Parallel()
	limits := user.DefaultLoginLimits
	limits.HashConcurrency, limits.HashWait = 1, time.Second
	svc, _, _ := guardedService(t, limits)
	signUp(t, svc, "ada")
	release := user.HoldHashSlots(svc, 1)
	type result struct {
		err  error
		took time.Duration
	}
	results := make(chan result, 6)
	for i := range 6 {
		go func() {
			start := time.Now()
			_, _, _, err := svc.Login(from(fmt.Sprintf("10.0.0.%d", i)), user.Lookup{Username: "ada"}, "correct horse")
			results <- result{err, time.Since(start)}
		}()
	}
	var refusedAtOnce, refusedAfterWait int
	for range 6 {
		r := <-results
		switch {
		case !errors.Is(r.err, user.ErrHashBusy):
			t.Errorf("Login with the slot held = %v, want ErrHashBusy", r.err)
		case r.took < 500*time.Millisecond:
			refusedAtOnce++
		default:
			refusedAfterWait++
		}
	}
	if refusedAtOnce != 4 || refusedAfterWait != 2 {
		t.Errorf("%d refused at once and %d after waiting, want 4 and 2 (two may wait per slot)", refusedAtOnce, refusedAfterWait)
	}
	go func() { time.Sleep(200 * time.Millisecond); release() }()
	if _, _, _, err := svc.Login(from("10.0.1.1"), user.Lookup{Username: "ada"}, "correct horse"); err != nil {
		t.Errorf("Login while a slot frees within the wait: %v", err)
	}
}

// TestChangePasswordBacksOffLikeLogin: a stolen access token does not make ChangePassword a faster
// way to guess the current password: its failures count against the account's backoff, which
// Login then honours too.
func TestChangePasswordBacksOffLikeLogin(t *testing.T) {
	t.Parallel()
	limits := user.LoginLimits{
		Account: user.Backoff{Free: 3, Base: time.Second, Max: time.Minute, Forget: time.Hour},
		Address: user.Backoff{Free: 1000, Base: time.Second, Max: time.Minute, Forget: time.Hour},
	}
	svc, clk, _ := guardedService(t, limits)
	ada := signUp(t, svc, "ada")
	ctx := context.Background()
	for i := range 4 {
		if _, err := svc.ChangePassword(ctx, self(ada), "wrong password", "new horse battery"); !errors.Is(err, user.ErrWrongPassword) {
			t.Fatalf("failure %d = %v, want ErrWrongPassword", i+1, err)
		}
	}
	if _, err := svc.ChangePassword(ctx, self(ada), "correct horse", "new horse battery"); !errors.Is(err, user.ErrLoginBackoff) || retryDelay(err) != time.Second {
		t.Fatalf("after 4 wrong passwords = %v (retry %v), want ErrLoginBackoff with 1s", err, retryDelay(err))
	}
	if _, _, _, err := svc.Login(from("10.0.3.1"), user.Lookup{Username: "ada"}, "correct horse"); !errors.Is(err, user.ErrLoginBackoff) {
		t.Fatalf("Login during ChangePassword's backoff = %v, want ErrLoginBackoff", err)
	}
	clk.Add(time.Second)
	if _, err := svc.ChangePassword(ctx, self(ada), "correct horse", "new horse battery"); err != nil {
		t.Fatalf("right password after the wait: %v", err)
	}
}
