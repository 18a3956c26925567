// Package migrations embeds the payment service's schema migrations, applied at start-up by
// sqldb.Migrate (through sqldb.OpenStore). Times are BIGINT unix microseconds and money BIGINT
// minor units; only the event sequence differs between SQLite and PostgreSQL.
package migrations

import "embed"

// FS holds the migrations.
//
//go:embed *.sql
var FS embed.FS
