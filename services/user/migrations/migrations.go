// Package migrations embeds the user service's schema migrations, applied at start-up by
// sqldb.Migrate (through sqldb.OpenStore). Times are BIGINT unix microseconds and roles a
// comma-separated TEXT, so that one schema serves SQLite and PostgreSQL alike.
package migrations

import "embed"

// FS holds the migrations.
//
//go:embed *.sql
var FS embed.FS
