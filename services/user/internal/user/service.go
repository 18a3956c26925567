package user

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/semaphore"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/fault"
	"github.com/meshmart/meshmart/pkg/paging"
)

// exportBatch is how many accounts Export reads from the store at a time.
const exportBatch = 100

// Service carries out the user service's use cases. It is safe for concurrent use.
type Service struct {
	store  Store
	issuer *auth.Issuer
	pages  *paging.Codec
	now    func() time.Time
	// dummyHash is checked against when a login names no account, so that an unknown user costs
	// as much time as a wrong password and cannot be told apart by timing.
	dummyHash string
	// published are the keys verified beside the signing key, which never sign.
	published []ed25519.PublicKey
	// refreshTTL is how long a refresh token is accepted after it was issued.
	refreshTTL time.Duration

	// limits, hashes and addresses guard Login (see login.go); clientAddr names a call's address.
	limits      LoginLimits
	hashes      *semaphore.Weighted
	hashSlots   int64
	hashWaiting atomic.Int64
	addresses   addressFailures
	clientAddr  func(ctx context.Context) string
}

// Option configures NewService.
type Option func(*Service)

// WithPublishedKeys publishes keys beside the issuer's signing key, as keys tokens may be
// verified with, without ever signing with them: the next key before a rotation, so that every
// verifier knows it before the first token it signs, and the previous one until its tokens
// expired. None by default; the signing key itself is skipped.
func WithPublishedKeys(keys ...ed25519.PublicKey) Option {
	return func(s *Service) { s.published = append(s.published, keys...) }
}

// NewService returns a Service keeping accounts in store, issuing tokens with issuer, and signing
// page tokens with the store's page key. No RPC it serves can make an admin: admins are made by
// EnsureAdmin, a local operation on the database (the `user admin` subcommand).
func NewService(store Store, issuer *auth.Issuer, opts ...Option) (*Service, error) {
	dummy, err := HashPassword(uuid.NewString())
	if err != nil {
		return nil, err
	}
	s := &Service{store: store, issuer: issuer, pages: paging.NewCodec(store.PageKey), now: func() time.Time { return time.Now().UTC() },
		dummyHash: dummy, refreshTTL: DefaultRefreshTTL, limits: DefaultLoginLimits, clientAddr: func(context.Context) string { return "" }}
	for _, opt := range opts {
		opt(s)
	}
	s.newHashGate()
	return s, nil
}

// newAccount builds the account nu describes, hashing its password. Every new account holds the
// user role alone, whoever asks and whatever its email.
func (s *Service) newAccount(nu NewUser) (User, error) {
	if strings.TrimSpace(nu.Email) == "" || strings.TrimSpace(nu.Username) == "" {
		return User{}, fault.Invalid("email", "email and username are required")
	}
	if len(nu.Password) < 8 {
		return User{}, fault.Invalid("password", "must be at least 8 characters")
	}
	hash, err := HashPassword(nu.Password)
	if err != nil {
		return User{}, fmt.Errorf("hash password: %w", err)
	}
	now := s.now().Truncate(time.Microsecond)
	return User{
		ID:           uuid.NewString(),
		Email:        normalise(nu.Email),
		Username:     normalise(nu.Username),
		GivenName:    strings.TrimSpace(nu.GivenName),
		FamilyName:   strings.TrimSpace(nu.FamilyName),
		PasswordHash: hash,
		Status:       StatusActive,
		Roles:        []string{RoleUser},
		Version:      1,
		CreateTime:   now,
		UpdateTime:   now,
	}, nil
}

func normalise(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// Create signs a user up. Its hash takes a hashing slot like a login's: sign-ups are no
// cheaper a weapon.
func (s *Service) Create(ctx context.Context, nu NewUser) (User, error) {
	release, err := s.hashSlot(ctx)
	if err != nil {
		return User{}, err
	}
	u, err := s.newAccount(nu)
	release()
	if err != nil {
		return User{}, err
	}
	if err := s.store.Create(ctx, u); err != nil {
		return User{}, err
	}
	return u, nil
}

// Login checks an account's password and issues an access token for it. Any failure, whether no
// such account, a deleted one or a wrong password, is ErrBadCredentials. An account or an
// address that failed too often lately is refused with ErrLoginBackoff before any hash, and a
// hash that finds every slot taken with ErrHashBusy (see login.go).
func (s *Service) Login(ctx context.Context, l Lookup, password string) (token string, expiry time.Time, u User, err error) {
	addr, now := s.clientAddr(ctx), s.now().Truncate(time.Microsecond) // as stored
	if wait := s.addresses.wait(s.limits.Address, addr, now); wait > 0 {
		return "", time.Time{}, User{}, ErrLoginBackoff.RetryAfter(wait)
	}
	// The slot is taken before the first read, so that a flood queues neither on the hashes nor
	// on the database pool that every other call needs too.
	release, err := s.hashSlot(ctx)
	if err != nil {
		return "", time.Time{}, User{}, err
	}
	defer func() {
		if release != nil {
			release()
		}
	}()
	// Again with the slot: while this call waited for it, the address may have failed enough
	// to back off, and a flood's waiting calls must not each get a hash past it.
	now = s.now().Truncate(time.Microsecond)
	if wait := s.addresses.wait(s.limits.Address, addr, now); wait > 0 {
		return "", time.Time{}, User{}, ErrLoginBackoff.RetryAfter(wait)
	}
	l = normaliseLookup(l)
	u, err = s.store.Get(ctx, l)
	found := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return "", time.Time{}, User{}, err
	}
	key := accountKey(u, found, l)
	failures, err := s.accountGuard(ctx, key, now)
	if err != nil {
		return "", time.Time{}, User{}, err
	}
	hash := s.dummyHash // an unknown account costs the same hash, so timing tells nothing
	if found {
		hash = u.PasswordHash
	}
	ok, err := CheckPassword(hash, password)
	failed := err == nil && (!ok || !found || u.Status == StatusDeleted)
	if failed {
		// Before the slot goes: the call waiting for it must see this failure, or a flood's
		// calls would each get a hash past the address' backoff, one after the other.
		s.addresses.fail(s.limits.Address, addr, now)
	}
	release()
	release = nil
	if err != nil {
		return "", time.Time{}, User{}, fmt.Errorf("check password of %s: %w", u.ID, err)
	}
	if failed {
		if err := s.loginFailed(ctx, key, now); err != nil {
			return "", time.Time{}, User{}, err
		}
		return "", time.Time{}, User{}, ErrBadCredentials
	}
	if failures.Count > 0 {
		if err := s.store.ClearLoginFailures(ctx, key); err != nil {
			return "", time.Time{}, User{}, err
		}
	}
	token, expiry, err = s.issue(u)
	if err != nil {
		return "", time.Time{}, User{}, err
	}
	return token, expiry, u, nil
}

func normaliseLookup(l Lookup) Lookup {
	return Lookup{ID: l.ID, Email: normalise(l.Email), Username: normalise(l.Username)}
}

// Get returns an account the caller may read: their own, or any for an admin (or a service).
// Deleted accounts are ErrNotFound, and so is anyone else's account to a caller who may not read
// it: the same error as for a missing one, so that a user cannot probe which ids, emails or
// usernames have accounts.
func (s *Service) Get(ctx context.Context, caller auth.Identity, l Lookup) (User, error) {
	u, err := s.live(ctx, normaliseLookup(l))
	if err != nil {
		return User{}, err
	}
	if !caller.CanActFor(u.ID) {
		return User{}, ErrNotFound
	}
	return u, nil
}

// live returns the account matching l unless it is deleted.
func (s *Service) live(ctx context.Context, l Lookup) (User, error) {
	u, err := s.store.Get(ctx, l)
	if err != nil {
		return User{}, err
	}
	if u.Status == StatusDeleted {
		return User{}, ErrNotFound
	}
	return u, nil
}

// Update applies p to account id when the caller may change it. A non-empty etag must match the
// account's, else ErrStale. Only admins may change status, and nobody to the deleted status here.
// Roles cannot be changed here by anyone (ErrRolesReadOnly): an RPC that could grant a role could
// make an admin.
func (s *Service) Update(ctx context.Context, caller auth.Identity, id, etag string, p Patch) (User, error) {
	if slices.Contains(p.Paths, "roles") {
		return User{}, ErrRolesReadOnly
	}
	u, err := s.writable(ctx, caller, id, etag)
	if err != nil {
		return User{}, err
	}
	suspends := false
	for _, path := range p.Paths {
		switch path {
		case "email":
			u.Email = normalise(p.Email)
		case "username":
			u.Username = normalise(p.Username)
		case "given_name":
			u.GivenName = strings.TrimSpace(p.GivenName)
		case "family_name":
			u.FamilyName = strings.TrimSpace(p.FamilyName)
		case "status":
			if !caller.IsAdmin() {
				return User{}, ErrPermissionDenied
			}
			if p.Status != StatusActive && p.Status != StatusSuspended {
				return User{}, fault.Invalid("user.status", "must be ACTIVE or SUSPENDED; use DeleteUser to delete")
			}
			suspends = p.Status == StatusSuspended && u.Status != StatusSuspended
			u.Status = p.Status
		default:
			return User{}, fault.Invalid("update_mask", fmt.Sprintf("%q cannot be updated", path))
		}
	}
	if suspends {
		// A suspension ends the account's sessions: its access ends with its last access token.
		return s.saveEndingSessions(ctx, u)
	}
	return s.save(ctx, u)
}

// Delete soft-deletes account id when the caller may change it.
func (s *Service) Delete(ctx context.Context, caller auth.Identity, id, etag string) (User, error) {
	u, err := s.writable(ctx, caller, id, etag)
	if err != nil {
		return User{}, err
	}
	u.Status = StatusDeleted
	u.DeleteTime = s.now().Truncate(time.Microsecond)
	return s.saveEndingSessions(ctx, u)
}

// writable reads account id for a change by caller, checking permission and etag. Another's
// account is ErrNotFound to a caller who may not change it, as in Get.
func (s *Service) writable(ctx context.Context, caller auth.Identity, id, etag string) (User, error) {
	u, err := s.live(ctx, Lookup{ID: id})
	if err != nil {
		return User{}, err
	}
	if !caller.CanActFor(u.ID) {
		return User{}, ErrNotFound
	}
	if etag != "" && etag != u.Etag() {
		return User{}, ErrStale
	}
	return u, nil
}

func (s *Service) save(ctx context.Context, u User) (User, error) {
	return s.write(ctx, u, s.store.Update)
}

// write stores u as its next version with update (Store.Update or UpdateEndingSessions).
func (s *Service) write(ctx context.Context, u User, update func(context.Context, User) error) (User, error) {
	u.Version++
	u.UpdateTime = s.now().Truncate(time.Microsecond)
	if err := update(ctx, u); err != nil {
		return User{}, err
	}
	return u, nil
}

// List returns one page of accounts and the token of the next page ("" on the last). A
// pageToken not issued by List for f is paging.ErrInvalidToken. Who may list is the contract's
// business (ListUsers is for admins), enforced before the call gets here.
func (s *Service) List(ctx context.Context, f Filter, pageSize int, pageToken string) ([]User, string, error) {
	return paging.List(ctx, s.pages, "ListUsers", f, pageSize, pageToken, func(after *paging.Cursor, limit int) ([]User, error) {
		return s.store.List(ctx, f, after, limit)
	}, User.Cursor)
}

// Export calls send for every account matching f, oldest first. It reads in batches, so memory
// stays flat however many accounts there are, and stops at the first error from send or when ctx
// ends. Who may export is the contract's business (ExportUsers is for admins).
func (s *Service) Export(ctx context.Context, f Filter, send func(User) error) error {
	var after *paging.Cursor
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		users, err := s.store.List(ctx, f, after, exportBatch)
		if err != nil {
			return err
		}
		for _, u := range users {
			if err := send(u); err != nil {
				return err
			}
		}
		if len(users) < exportBatch {
			return nil
		}
		last := users[len(users)-1].Cursor()
		after = &last
	}
}

// ImportResult is what became of one imported account: the account, or why it was not created.
type ImportResult struct {
	User User
	Err  error
}

// Import creates the accounts nus describe, each on its own: a bad or conflicting one fails alone
// and leaves no trace. Who may import is the contract's business (ImportUsers is for admins).
func (s *Service) Import(ctx context.Context, nus []NewUser) ([]ImportResult, error) {
	results := make([]ImportResult, len(nus))
	var batch []User
	var at []int
	for i, nu := range nus {
		u, err := s.newAccount(nu)
		if err != nil {
			results[i].Err = err
			continue
		}
		results[i].User = u
		batch = append(batch, u)
		at = append(at, i)
	}
	for j, err := range s.store.CreateBatch(ctx, batch) {
		if err != nil {
			results[at[j]] = ImportResult{Err: err}
		}
	}
	return results, nil
}
