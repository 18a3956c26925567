package sqldb

import (
	"context"
	"io/fs"

	"github.com/meshmart/meshmart/pkg/paging"
)

// Store is the part every service's SQL store shares: embed it, and run the queries on DB. It
// gives the store its Close and the PageKey its domain's page tokens are signed with.
type Store struct {
	// DB is the service's database, migrated.
	DB *DB
}

// OpenStore opens the database at dsn (see Open, which takes opts) and applies the migrations
// in fsys (see Migrate).
func OpenStore(ctx context.Context, dsn string, fsys fs.FS, opts ...Option) (Store, error) {
	db, err := OpenMigrated(ctx, dsn, fsys, opts...)
	return Store{DB: db}, err
}

// PageKey returns the key that signs the service's page tokens (see paging.Codec): kept in the
// database, made by the first replica to ask, so that every replica accepts the others' tokens.
func (s Store) PageKey(ctx context.Context) ([]byte, error) {
	return s.DB.Secret(ctx, "page_token", paging.KeySize)
}

// Close closes the database.
func (s Store) Close() error { return s.DB.Close() }
