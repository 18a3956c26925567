// Package migrations embeds the order service's schema migrations, applied at start-up by
// sqldb.Migrate (through sqldb.OpenStore). Times are BIGINT unix microseconds, money BIGINT minor
// units, and line items a JSON TEXT; only the update sequence differs between SQLite and
// PostgreSQL.
package migrations

import "embed"

// FS holds the migrations.
//
//go:embed *.sql
var FS embed.FS
