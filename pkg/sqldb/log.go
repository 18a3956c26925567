package sqldb

import "strconv"

// An event log (the order service's updates, the payment service's events) is read by pollers
// asking for "the entries after seq N", so an entry must never become visible with a seq below
// one a poller has already read. Concurrent writers on PostgreSQL break that with a plain
// sequence: a transaction that took seq 5 can commit after one that took seq 6 and was read.
// A lock held to COMMIT prevents it by making writers wait for each other, which is what capped
// the platform's write rate (issue 18).
//
// Instead, on PostgreSQL an entry's seq is its transaction's id times 16 plus its index within
// the transaction (LogSeq), and readers take only the entries below the oldest transaction still
// running when their statement began, times 16 (Published). Every transaction with a smaller id
// has then ended, so that part of the log is final: whatever commits later has a transaction id
// at least that oldest one, hence a larger seq than anything read. Writers wait for nobody; a
// reader sees an entry once every transaction that began writing before it has ended, which a
// long-running writing transaction anywhere on the server delays (it never loses an entry).
//
// Transaction ids (xid8) only grow and count every transaction the server ever ran, so they
// exceed the number of entries that a log numbered one by one (as these logs were before) holds,
// and the new numbers follow the old ones. SQLite has one writer at a time: its seq, an
// AUTOINCREMENT column filled inside the write transaction, already grows in commit order.

// logEntriesPerTx bounds the entries one transaction may append to a log: their indexes must
// stay below it for seqs to be unique.
const logEntriesPerTx = 16

// LogSeq returns the SQL expression of the seq of the k-th entry (k from 0 to 15) that a
// transaction appends to an event log read with Published, for an INSERT's column list: on
// PostgreSQL the transaction's id times 16 plus k; on SQLite "", as the column's AUTOINCREMENT
// numbers it (leave the column out).
func (db *DB) LogSeq(k int) string {
	if db.Dialect != Postgres {
		return ""
	}
	return "pg_current_xact_id()::text::bigint * " + strconv.Itoa(logEntriesPerTx) + " + " + strconv.Itoa(k)
}

// Published returns the SQL condition that keeps, of an event log numbered with LogSeq, only the
// entries whose place in the log is final (see above), column naming the log's seq: on SQLite
// every committed entry.
func (db *DB) Published(column string) string {
	if db.Dialect != Postgres {
		return "1 = 1"
	}
	return column + " < pg_snapshot_xmin(pg_current_snapshot())::text::bigint * " + strconv.Itoa(logEntriesPerTx)
}
