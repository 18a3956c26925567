package user

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshmart/meshmart/pkg/fault"
)

// Admin describes the administrator EnsureAdmin makes sure of.
type Admin struct {
	// Email names the account; it is required.
	Email string
	// Username is used when the account is created, and replaces an existing account's when it
	// is set. Empty means the email's local part for a new account, and no change otherwise.
	Username string
	// Password is the account's password from now on; at least 8 characters.
	Password string
}

// ensureAttempts bounds how often EnsureAdmin retries when another writer changed the account
// between its read and its write.
const ensureAttempts = 3

// EnsureAdmin makes sure an active account with a.Email exists, holds the admin role and has
// a.Password: it creates the account if there is none, and otherwise promotes it, reactivates it
// (a suspended or deleted one) and sets its password. It is the only way to make an admin, meant
// for an operator with access to the database (the `user admin` subcommand), never for an RPC.
// It is idempotent: an account already as asked is not written. created reports a new account.
func (s *Service) EnsureAdmin(ctx context.Context, a Admin) (u User, created bool, err error) {
	email := normalise(a.Email)
	if email == "" || !strings.Contains(email, "@") {
		return User{}, false, fault.Invalid("email", "an email address is required")
	}
	if len(a.Password) < 8 {
		return User{}, false, fault.Invalid("password", "must be at least 8 characters")
	}
	for range ensureAttempts {
		u, created, err = s.ensureAdmin(ctx, email, a)
		if !errors.Is(err, ErrStale) && !errors.Is(err, ErrEmailTaken) {
			return u, created, err
		}
		// Someone wrote the account meanwhile (or created it): read it again.
	}
	return User{}, false, fmt.Errorf("ensure admin %s: %w", email, err)
}

func (s *Service) ensureAdmin(ctx context.Context, email string, a Admin) (User, bool, error) {
	u, err := s.store.Get(ctx, Lookup{Email: email})
	if errors.Is(err, ErrNotFound) {
		username := a.Username
		if strings.TrimSpace(username) == "" {
			username, _, _ = strings.Cut(email, "@")
		}
		u, err := s.newAccount(NewUser{Email: email, Username: username, Password: a.Password, GivenName: "Admin"})
		if err != nil {
			return User{}, false, err
		}
		u.Roles = append(u.Roles, RoleAdmin)
		if err := s.store.Create(ctx, u); err != nil {
			return User{}, false, err
		}
		return u, true, nil
	}
	if err != nil {
		return User{}, false, err
	}
	// A new role or password (or a reactivation) ends the account's sessions: tokens issued
	// before carry the old roles, or came from whoever knew the old password.
	changed, endSessions := false, false
	if name := normalise(a.Username); name != "" && name != u.Username {
		u.Username, changed = name, true
	}
	if !slices.Contains(u.Roles, RoleAdmin) {
		u.Roles, changed, endSessions = append(slices.Clone(u.Roles), RoleAdmin), true, true
	}
	if u.Status != StatusActive {
		u.Status, u.DeleteTime, changed, endSessions = StatusActive, time.Time{}, true, true
	}
	if ok, err := CheckPassword(u.PasswordHash, a.Password); err != nil || !ok {
		hash, err := HashPassword(a.Password)
		if err != nil {
			return User{}, false, fmt.Errorf("hash password: %w", err)
		}
		u.PasswordHash, changed, endSessions = hash, true, true
	}
	switch {
	case endSessions:
		u, err = s.saveEndingSessions(ctx, u)
	case changed:
		u, err = s.save(ctx, u)
	}
	return u, false, err
}

// NewPassword returns a random password for an admin made without one: 26 base32 characters
// from crypto/rand, 130 bits.
func NewPassword() string { return rand.Text() }
