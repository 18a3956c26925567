package sqldb

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
)

// secretLock is the advisory lock that serialises creating the secrets table on PostgreSQL,
// where two concurrent CREATE TABLE IF NOT EXISTS can still collide.
const secretLock = 7882464627958653557

// Secret returns the secret called name, size random bytes made by whichever caller asks first
// and kept in the database (table sqldb_secrets), so every replica sharing the database gets the
// same one with no setting to share. It is meant for keys that sign what one replica issues and
// another checks, such as page tokens. A secret already stored with another size is an error.
func (db *DB) Secret(ctx context.Context, name string, size int) ([]byte, error) {
	fresh := make([]byte, size)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fmt.Errorf("secret %s: %w", name, err)
	}
	var stored string
	err := InTx(ctx, db, func(tx *sql.Tx) error {
		if db.Dialect == Postgres {
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", int64(secretLock)); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS sqldb_secrets (
			name TEXT PRIMARY KEY, value TEXT NOT NULL)`); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, db.Rebind(`INSERT INTO sqldb_secrets (name, value) VALUES (?, ?)
			ON CONFLICT (name) DO NOTHING`), name, hex.EncodeToString(fresh)); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, db.Rebind(`SELECT value FROM sqldb_secrets WHERE name = ?`), name).Scan(&stored)
	})
	if err != nil {
		return nil, fmt.Errorf("secret %s: %w", name, err)
	}
	secret, err := hex.DecodeString(stored)
	if err != nil || len(secret) != size {
		return nil, fmt.Errorf("secret %s: the stored value is not %d bytes", name, size)
	}
	return secret, nil
}
