// Package store keeps the order service's orders and their update log in SQL: SQLite or
// PostgreSQL, through one set of queries. It implements order.Store.
package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/meshmart/meshmart/pkg/paging"
	"github.com/meshmart/meshmart/pkg/sqldb"
	"github.com/meshmart/meshmart/services/order/internal/order"
	"github.com/meshmart/meshmart/services/order/migrations"
)

// Orders is the SQL order store.
type Orders struct{ sqldb.Store }

var _ order.Store = (*Orders)(nil)

// Open opens the database at dsn (see sqldb.Open), applies the migrations and returns the store.
func Open(ctx context.Context, dsn string) (*Orders, error) {
	st, err := sqldb.OpenStore(ctx, dsn, migrations.FS)
	if err != nil {
		return nil, err
	}
	return &Orders{Store: st}, nil
}

const columns = `id, user_id, items, currency, total, status, payment_id, failure_reason, idempotency_key, fingerprint,
	payment_token, revision, lease_until, create_time, update_time, attempts, next_attempt_at`

// Create implements order.Store: one INSERT, whose trigger appends the first update (see
// migrations/0007), so one statement and one commit.
func (s *Orders) Create(ctx context.Context, o order.Order) error {
	items, err := json.Marshal(o.Items)
	if err != nil {
		return err
	}
	_, err = s.DB.ExecContext(ctx, s.DB.Rebind(`INSERT INTO orders (`+columns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		o.ID, o.UserID, string(items), o.Currency, o.TotalMinor, int(o.Status), o.PaymentID, o.FailureReason, o.IdempotencyKey,
		o.Fingerprint, o.PaymentToken, o.Revision, sqldb.Micros(o.LeaseUntil), sqldb.Micros(o.CreateTime), sqldb.Micros(o.UpdateTime),
		o.Attempts, sqldb.Micros(o.NextAttemptAt))
	if _, ok := sqldb.UniqueViolation(err); ok {
		return order.ErrDuplicateKey
	}
	if err != nil {
		return fmt.Errorf("create order: %w", err)
	}
	return nil
}

// GetByKey implements order.Store.
func (s *Orders) GetByKey(ctx context.Context, userID, key string) (order.Order, error) {
	return s.getWhere(ctx, "user_id = ? AND idempotency_key = ?", userID, key)
}

// Get implements order.Store.
func (s *Orders) Get(ctx context.Context, id string) (order.Order, error) {
	return s.getWhere(ctx, "id = ?", id)
}

func (s *Orders) getWhere(ctx context.Context, where string, args ...any) (order.Order, error) {
	o, err := scan(s.DB.Read.QueryRowContext(ctx, s.DB.Rebind("SELECT "+columns+" FROM orders WHERE "+where), args...))
	if errors.Is(err, sql.ErrNoRows) {
		return order.Order{}, order.ErrNotFound
	}
	if err != nil {
		return order.Order{}, fmt.Errorf("get order: %w", err)
	}
	return o, nil
}

func placeholders(n int) string { return "?" + strings.Repeat(", ?", n-1) }

func statusArgs(statuses []order.Status) []any {
	args := make([]any, len(statuses))
	for i, st := range statuses {
		args[i] = int(st)
	}
	return args
}

// Claim implements order.Store: one conditional update, so two replicas never both hold it.
func (s *Orders) Claim(ctx context.Context, id string, statuses []order.Status, now, leaseUntil time.Time) (bool, error) {
	args := append([]any{sqldb.Micros(leaseUntil), id}, statusArgs(statuses)...)
	res, err := s.DB.ExecContext(ctx, s.DB.Rebind("UPDATE orders SET lease_until = ? WHERE id = ? AND status IN ("+
		placeholders(len(statuses))+") AND lease_until <= ?"), append(args, sqldb.Micros(now))...)
	if err != nil {
		return false, fmt.Errorf("claim order %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// Release implements order.Store.
func (s *Orders) Release(ctx context.Context, id string) error {
	if _, err := s.DB.ExecContext(ctx, s.DB.Rebind("UPDATE orders SET lease_until = 0 WHERE id = ?"), id); err != nil {
		return fmt.Errorf("release order %s: %w", id, err)
	}
	return nil
}

// Transition implements order.Store: one conditional UPDATE, whose trigger appends the update
// (see migrations/0007) with the stored status as the previous one.
func (s *Orders) Transition(ctx context.Context, o order.Order, _ order.Status) error {
	res, err := s.DB.ExecContext(ctx, s.DB.Rebind(`UPDATE orders SET status = ?, payment_id = ?, failure_reason = ?,
		payment_token = ?, revision = ?, lease_until = 0, update_time = ?, attempts = 0, next_attempt_at = 0
		WHERE id = ? AND revision = ?`),
		int(o.Status), o.PaymentID, o.FailureReason, o.PaymentToken, o.Revision, sqldb.Micros(o.UpdateTime), o.ID, o.Revision-1)
	if err != nil {
		return fmt.Errorf("update order %s: %w", o.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("update order %s: %w", o.ID, err)
	} else if n == 0 {
		return order.ErrAlreadyChanged
	}
	return nil
}

// Due implements order.Store: the due orders ranked within each user by a window function, so
// that one user's backlog never fills a pass, however long it is.
func (s *Orders) Due(ctx context.Context, q order.DueQuery) ([]order.Order, error) {
	args := append(statusArgs(q.Statuses), sqldb.Micros(q.Now), sqldb.Micros(q.Now), sqldb.Micros(q.ChangedBefore), q.PerUser, q.Limit)
	return s.query(ctx, "SELECT "+columns+" FROM (SELECT "+columns+
		", ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY next_attempt_at, update_time, id) AS user_rank FROM orders WHERE status IN ("+
		placeholders(len(q.Statuses))+") AND lease_until <= ? AND next_attempt_at <= ? AND update_time < ?) due"+
		" WHERE user_rank <= ? ORDER BY user_rank, next_attempt_at, update_time, id LIMIT ?", args...)
}

// Reschedule implements order.Store.
func (s *Orders) Reschedule(ctx context.Context, id string, status order.Status, attempts int, next time.Time) (bool, error) {
	res, err := s.DB.ExecContext(ctx, s.DB.Rebind("UPDATE orders SET attempts = ?, next_attempt_at = ? WHERE id = ? AND status = ? AND attempts = ?"),
		attempts, sqldb.Micros(next), id, int(status), attempts-1)
	if err != nil {
		return false, fmt.Errorf("reschedule order %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// CountUnsettled implements order.Store, in one statement.
func (s *Orders) CountUnsettled(ctx context.Context, statuses []order.Status, createdBefore []time.Time) ([]int64, error) {
	var sums []string
	var args []any
	for _, t := range createdBefore {
		sums, args = append(sums, "COALESCE(SUM(CASE WHEN create_time < ? THEN 1 ELSE 0 END), 0)"), append(args, sqldb.Micros(t))
	}
	counts := make([]int64, len(createdBefore))
	dest := make([]any, len(counts))
	for i := range counts {
		dest[i] = &counts[i]
	}
	err := s.DB.Read.QueryRowContext(ctx, s.DB.Rebind("SELECT "+strings.Join(sums, ", ")+" FROM orders WHERE status IN ("+
		placeholders(len(statuses))+")"), append(args, statusArgs(statuses)...)...).Scan(dest...)
	if err != nil {
		return nil, fmt.Errorf("count unsettled orders: %w", err)
	}
	return counts, nil
}

// List implements order.Store.
func (s *Orders) List(ctx context.Context, f order.Filter, after *paging.Cursor, limit int) ([]order.Order, error) {
	var where []string
	var args []any
	if f.UserID != "" {
		where, args = append(where, "user_id = ?"), append(args, f.UserID)
	}
	if f.Status != order.StatusUnspecified {
		where, args = append(where, "status = ?"), append(args, int(f.Status))
	}
	if after != nil {
		where, args = append(where, "(create_time, id) < (?, ?)"), append(args, sqldb.Micros(after.CreateTime), after.ID)
	}
	q := "SELECT " + columns + " FROM orders"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	return s.query(ctx, q+" ORDER BY create_time DESC, id DESC LIMIT ?", append(args, limit)...)
}

func (s *Orders) query(ctx context.Context, q string, args ...any) ([]order.Order, error) {
	rows, err := s.DB.Read.QueryContext(ctx, s.DB.Rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	defer rows.Close()
	var out []order.Order
	for rows.Next() {
		o, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("list orders: %w", err)
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// updateColumns are an update's order, in the order of columns. Entries written before
// migration 0006 hold a JSON snapshot instead.
const updateColumns = `order_id, user_id, items, currency, total, status, payment_id, failure_reason, idempotency_key,
	fingerprint, '', revision, lease_until, order_create_time, create_time, attempts, next_attempt_at`

// LastUpdateSeq implements order.Store: the newest update readers may see (see sqldb.Published).
func (s *Orders) LastUpdateSeq(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.DB.Read.QueryRowContext(ctx, "SELECT COALESCE(MAX(seq), 0) FROM order_updates WHERE "+s.DB.Published("seq")).Scan(&seq); err != nil {
		return 0, fmt.Errorf("last update: %w", err)
	}
	return seq, nil
}

// UpdatesAfter implements order.Store. On PostgreSQL an update appears once every transaction
// that began writing before it has ended (see sqldb.Published), so none is ever skipped.
func (s *Orders) UpdatesAfter(ctx context.Context, orderIDs []string, seq int64, limit int) ([]order.Update, error) {
	args := []any{seq}
	for _, id := range orderIDs {
		args = append(args, id)
	}
	where := "seq > ? AND " + s.DB.Published("seq")
	if len(orderIDs) > 0 {
		where += " AND order_id IN (" + placeholders(len(orderIDs)) + ")"
	}
	rows, err := s.DB.Read.QueryContext(ctx, s.DB.Rebind("SELECT seq, previous_status, snapshot, "+updateColumns+
		" FROM order_updates WHERE "+where+" ORDER BY seq LIMIT ?"), append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("updates: %w", err)
	}
	defer rows.Close()
	var out []order.Update
	for rows.Next() {
		var (
			u        order.Update
			previous int
			snapshot string
		)
		u.Order, err = scan(prefixed{rows, []any{&u.Seq, &previous, &snapshot}})
		if err != nil {
			return nil, fmt.Errorf("updates: %w", err)
		}
		if snapshot != "" {
			u.Order = order.Order{}
			if err := json.Unmarshal([]byte(snapshot), &u.Order); err != nil {
				return nil, fmt.Errorf("updates: snapshot %d: %w", u.Seq, err)
			}
		}
		u.PreviousStatus = order.Status(previous)
		out = append(out, u)
	}
	return out, rows.Err()
}

// prefixed scans the columns before an order's into dest, then the order's with scan.
type prefixed struct {
	scanner
	dest []any
}

func (p prefixed) Scan(dest ...any) error { return p.scanner.Scan(append(p.dest, dest...)...) }

// PaymentFeedSeq implements order.Store.
func (s *Orders) PaymentFeedSeq(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.DB.Read.QueryRowContext(ctx, "SELECT seq FROM payment_feed WHERE id = 1").Scan(&seq); err != nil {
		return 0, fmt.Errorf("payment feed position: %w", err)
	}
	return seq, nil
}

// AdvancePaymentFeed implements order.Store: a conditional update, so a replica that handled
// fewer events never moves the position back.
func (s *Orders) AdvancePaymentFeed(ctx context.Context, seq int64) error {
	if _, err := s.DB.ExecContext(ctx, s.DB.Rebind("UPDATE payment_feed SET seq = ? WHERE id = 1 AND seq < ?"), seq, seq); err != nil {
		return fmt.Errorf("advance the payment feed to %d: %w", seq, err)
	}
	return nil
}

type scanner interface{ Scan(dest ...any) error }

func scan(r scanner) (order.Order, error) {
	var (
		o                       order.Order
		items                   string
		status                  int
		lease, created, updated int64
		nextAttempt             int64
	)
	err := r.Scan(&o.ID, &o.UserID, &items, &o.Currency, &o.TotalMinor, &status, &o.PaymentID, &o.FailureReason,
		&o.IdempotencyKey, &o.Fingerprint, &o.PaymentToken, &o.Revision, &lease, &created, &updated, &o.Attempts, &nextAttempt)
	if err != nil {
		return order.Order{}, err
	}
	if err := json.Unmarshal([]byte(items), &o.Items); err != nil {
		return order.Order{}, fmt.Errorf("items of order %s: %w", o.ID, err)
	}
	o.Status = order.Status(status)
	o.LeaseUntil, o.CreateTime, o.UpdateTime = sqldb.FromMicros(lease), sqldb.FromMicros(created), sqldb.FromMicros(updated)
	o.NextAttemptAt = sqldb.FromMicros(nextAttempt)
	return o, nil
}
