// Package user holds the user service's business rules: accounts, sign-up, login, who may read
// and change what, and paging. It knows nothing of gRPC or SQL: the transport maps its errors to
// status codes, and any Store implementation keeps its data.
package user

import (
	"context"
	"fmt"
	"time"

	"github.com/meshmart/meshmart/pkg/fault"
	"github.com/meshmart/meshmart/pkg/paging"
)

// Status is where an account stands.
type Status int

// Statuses, numbered as in the contract.
const (
	StatusUnspecified Status = iota
	StatusActive
	StatusSuspended
	StatusDeleted
)

// Role names, as carried in access tokens.
const (
	RoleUser  = "user"
	RoleAdmin = "admin"
)

// User is an account.
type User struct {
	ID           string
	Email        string // lower-cased
	Username     string // lower-cased
	GivenName    string
	FamilyName   string
	PasswordHash string // never leaves the service
	Status       Status
	Roles        []string
	Version      int64 // grows by one with every change; the etag derives from it
	CreateTime   time.Time
	UpdateTime   time.Time
	DeleteTime   time.Time // zero while not deleted
}

// Etag is the opaque version clients send back for conditional writes.
func (u User) Etag() string { return fmt.Sprintf("v%d", u.Version) }

// NewUser is what sign-up needs.
type NewUser struct {
	Email, Username, Password, GivenName, FamilyName string
}

// Lookup names one account by exactly one of its keys.
type Lookup struct {
	ID, Email, Username string
}

// Patch is a change to an account: the fields named in Paths take their values from the rest.
// "roles" is not among the paths Update accepts (ErrRolesReadOnly).
type Patch struct {
	Paths      []string
	Email      string
	Username   string
	GivenName  string
	FamilyName string
	Status     Status
}

// Sentinel errors, each with its code and a message written for the client; the transport maps
// them with grpcerr.ToStatus.
var (
	// ErrNotFound: no such account, or it was deleted.
	ErrNotFound = fault.New(fault.NotFound, "user not found")
	// ErrBadCredentials: wrong password, or no such account; deliberately the same.
	ErrBadCredentials = fault.New(fault.Unauthenticated, "wrong email, username or password")
	// ErrPermissionDenied: the caller may not do this to this account.
	ErrPermissionDenied = fault.New(fault.PermissionDenied, "permission denied")
	// ErrStale: the account changed since the caller read it (its etag no longer matches).
	ErrStale = fault.New(fault.Aborted, "the user was changed by someone else; read it again")
	// ErrEmailTaken: another account has this email.
	ErrEmailTaken = fault.New(fault.AlreadyExists, "email is already taken")
	// ErrUsernameTaken: another account has this username.
	ErrUsernameTaken = fault.New(fault.AlreadyExists, "username is already taken")
	// ErrIDTaken: another account has this id (a generated id that collided).
	ErrIDTaken = fault.New(fault.AlreadyExists, "id is already taken")
	// ErrRolesReadOnly: an update asked to change roles, which no RPC may do; admins are made
	// by the `user admin` subcommand on the database.
	ErrRolesReadOnly = fault.Invalid("user.roles", "roles cannot be changed through UpdateUser")
)

// Filter selects accounts for listing and export.
type Filter struct {
	// Status selects one status; StatusUnspecified selects every account not deleted.
	Status Status
}

// Cursor is u's position in the stable order of accounts (create time, then id).
func (u User) Cursor() paging.Cursor { return paging.Cursor{CreateTime: u.CreateTime, ID: u.ID} }

// Store keeps accounts. Implementations must be safe for concurrent use by several replicas of
// the service sharing one database.
type Store interface {
	// Create stores u, failing with ErrEmailTaken or ErrUsernameTaken when one of them is taken.
	Create(ctx context.Context, u User) error
	// CreateBatch stores each user on its own: the result holds nil or the error for each,
	// and a failed one never stops or undoes the others.
	CreateBatch(ctx context.Context, us []User) []error
	// Get returns the account matching l, deleted or not, or ErrNotFound.
	Get(ctx context.Context, l Lookup) (User, error)
	// Update replaces the stored account with u if the stored version is still
	// u.Version-1, else fails with ErrStale; a taken email or username is ErrEmailTaken or ErrUsernameTaken.
	Update(ctx context.Context, u User) error
	// List returns up to limit accounts matching f after the cursor (nil: from the start), in the
	// stable order.
	List(ctx context.Context, f Filter, after *paging.Cursor, limit int) ([]User, error)
	// LoginFailures returns the failed logins recorded under key (an account), none when there
	// are none.
	LoginFailures(ctx context.Context, key string) (Failures, error)
	// RecordLoginFailure counts one more failed login under key at t, starting again from one
	// when the last was before forgetBefore.
	RecordLoginFailure(ctx context.Context, key string, t, forgetBefore time.Time) error
	// ClearLoginFailures forgets the failures under key (a successful login).
	ClearLoginFailures(ctx context.Context, key string) error
	// PruneLoginFailures deletes the records whose last failure is before before, returning how
	// many.
	PruneLoginFailures(ctx context.Context, before time.Time) (int64, error)
	// PageKey returns the key page tokens are signed with, the same for every replica sharing
	// the store (see paging.NewCodec).
	PageKey(ctx context.Context) ([]byte, error)
	// SessionStore keeps the sessions that refresh tokens belong to.
	SessionStore
}
