package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/paging"
	"github.com/meshmart/meshmart/pkg/testkit"
	"github.com/meshmart/meshmart/services/user/internal/store"
	"github.com/meshmart/meshmart/services/user/internal/user"
)

// TestStore runs one suite against SQLite and PostgreSQL.
func TestStore(t *testing.T) {
	t.Parallel()
	testkit.ForEachDatabase(t, func(t *testing.T, db testkit.Database) { suite(t, db.New(t)) })
}

func account(n int) user.User {
	now := time.Date(2026, 1, 1, 0, 0, n, 0, time.UTC)
	return user.User{
		ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", n), Email: fmt.Sprintf("u%d@example.com", n),
		Username: fmt.Sprintf("user%d", n), GivenName: "U", PasswordHash: "$argon2id$x", Status: user.StatusActive,
		Roles: []string{user.RoleUser}, Version: 1, CreateTime: now, UpdateTime: now,
	}
}

func suite(t *testing.T, dsn string) {
	ctx := context.Background()
	s, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// A second replica opening the same database applies nothing twice.
	again, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	again.Close()

	a := account(1)
	if err := s.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	for _, l := range []user.Lookup{{ID: a.ID}, {Email: a.Email}, {Username: a.Username}} {
		got, err := s.Get(ctx, l)
		if err != nil || got.ID != a.ID || !got.CreateTime.Equal(a.CreateTime) || got.Roles[0] != user.RoleUser {
			t.Errorf("Get(%+v) = %+v, %v", l, got, err)
		}
	}
	if _, err := s.Get(ctx, user.Lookup{ID: "00000000-0000-4000-8000-999999999999"}); !errors.Is(err, user.ErrNotFound) {
		t.Errorf("Get of a missing user = %v, want ErrNotFound", err)
	}

	// Duplicates name the taken field.
	dupEmail, dupName := account(2), account(3)
	dupEmail.Email, dupName.Username = a.Email, a.Username
	for want, u := range map[error]user.User{user.ErrEmailTaken: dupEmail, user.ErrUsernameTaken: dupName} {
		if err := s.Create(ctx, u); !errors.Is(err, want) {
			t.Errorf("duplicate = %v, want %v", err, want)
		}
	}

	// Optimistic concurrency: an update against an old version fails.
	a.GivenName, a.Version = "Changed", 2
	if err := s.Update(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, a); !errors.Is(err, user.ErrStale) {
		t.Errorf("update of a stale version = %v, want ErrStale", err)
	}

	// Concurrent updates from one version: exactly one wins.
	var wg sync.WaitGroup
	wins := make(chan bool, 8)
	for i := range 8 {
		u := a
		u.Version, u.FamilyName = 3, fmt.Sprint(i)
		wg.Go(func() { wins <- s.Update(ctx, u) == nil })
	}
	wg.Wait()
	close(wins)
	won := 0
	for w := range wins {
		if w {
			won++
		}
	}
	if won != 1 {
		t.Errorf("%d concurrent updates of one version succeeded, want 1", won)
	}

	// A batch: good items land, a duplicate fails alone.
	batch := []user.User{account(10), account(11), account(12)}
	batch[1].Email = a.Email
	errs := s.CreateBatch(ctx, batch)
	if errs[0] != nil || !errors.Is(errs[1], user.ErrEmailTaken) || errs[2] != nil {
		t.Fatalf("CreateBatch = %v", errs)
	}
	if _, err := s.Get(ctx, user.Lookup{ID: batch[1].ID}); !errors.Is(err, user.ErrNotFound) {
		t.Errorf("the failed batch item was written")
	}

	// Listing: stable order, cursor, status filter, deleted accounts hidden.
	suspended := account(20)
	suspended.Status = user.StatusSuspended
	deleted := account(21)
	deleted.Status = user.StatusDeleted
	for _, u := range []user.User{suspended, deleted} {
		if err := s.Create(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	all, err := s.List(ctx, user.Filter{}, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	if ids := idsOf(all); fmt.Sprint(ids) != fmt.Sprint([]string{a.ID, batch[0].ID, batch[2].ID, suspended.ID}) {
		t.Errorf("List = %v", ids)
	}
	page, err := s.List(ctx, user.Filter{}, &paging.Cursor{CreateTime: batch[0].CreateTime, ID: batch[0].ID}, 2)
	if err != nil || fmt.Sprint(idsOf(page)) != fmt.Sprint([]string{batch[2].ID, suspended.ID}) {
		t.Errorf("List after a cursor = %v, %v", idsOf(page), err)
	}
	only, err := s.List(ctx, user.Filter{Status: user.StatusSuspended}, nil, 100)
	if err != nil || len(only) != 1 || only[0].ID != suspended.ID {
		t.Errorf("List of suspended = %v, %v", idsOf(only), err)
	}
}

func idsOf(us []user.User) []string {
	var ids []string
	for _, u := range us {
		ids = append(ids, u.ID)
	}
	return ids
}

// TestLoginFailures checks the failure records on SQLite and PostgreSQL: concurrent failures all
// count (one statement each), a failure after the forget period starts again from one, and
// Clear and Prune delete.
func TestLoginFailures(t *testing.T) {
	t.Parallel()
	testkit.ForEachDatabase(t, func(t *testing.T, db testkit.Database) {
		ctx := context.Background()
		s, err := store.Open(ctx, db.New(t))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				if err := s.RecordLoginFailure(ctx, "id:a", t0, t0.Add(-time.Hour)); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if f, err := s.LoginFailures(ctx, "id:a"); err != nil || f.Count != 10 || !f.Last.Equal(t0) {
			t.Fatalf("after 10 concurrent failures = %+v, %v", f, err)
		}
		t1 := t0.Add(2 * time.Hour)
		if err := s.RecordLoginFailure(ctx, "id:a", t1, t1.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		if f, _ := s.LoginFailures(ctx, "id:a"); f.Count != 1 || !f.Last.Equal(t1) {
			t.Errorf("a failure after the forget period = %+v, want a count of 1", f)
		}
		if err := s.RecordLoginFailure(ctx, "email:old@example.com", t0, t0.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		if n, err := s.PruneLoginFailures(ctx, t0.Add(time.Minute)); err != nil || n != 1 {
			t.Errorf("pruned %d, %v; want the one old record", n, err)
		}
		if err := s.ClearLoginFailures(ctx, "id:a"); err != nil {
			t.Fatal(err)
		}
		if f, err := s.LoginFailures(ctx, "id:a"); err != nil || f.Count != 0 {
			t.Errorf("after Clear = %+v, %v", f, err)
		}
	})
}
