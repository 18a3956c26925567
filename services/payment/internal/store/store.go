// Package store keeps the payment service's payments, refunds and events in SQL: SQLite or
// PostgreSQL, through one set of queries. It implements payment.Store.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/meshmart/meshmart/pkg/paging"
	"github.com/meshmart/meshmart/pkg/sqldb"
	"github.com/meshmart/meshmart/services/payment/internal/payment"
	"github.com/meshmart/meshmart/services/payment/migrations"
)

// Payments is the SQL payment store.
type Payments struct{ sqldb.Store }

var _ payment.Store = (*Payments)(nil)

// Open opens the database at dsn (see sqldb.Open), applies the migrations and returns the store.
func Open(ctx context.Context, dsn string) (*Payments, error) {
	st, err := sqldb.OpenStore(ctx, dsn, migrations.FS)
	if err != nil {
		return nil, err
	}
	return &Payments{Store: st}, nil
}

const paymentColumns = `id, order_id, user_id, currency, amount, refunded, status, decline_reason, failure_message,
	idempotency_key, key_owner, fingerprint, attempts, lease_until, create_time, update_time`

// CreatePending implements payment.Store.
func (s *Payments) CreatePending(ctx context.Context, p payment.Payment) error {
	_, err := s.DB.ExecContext(ctx, s.DB.Rebind(`INSERT INTO payments (`+paymentColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		p.ID, p.OrderID, p.UserID, p.Amount.Currency, p.Amount.Minor, p.RefundedMinor, int(p.Status), int(p.DeclineReason),
		p.FailureMessage, p.IdempotencyKey, p.KeyOwner, p.Fingerprint, p.Attempts, sqldb.Micros(p.LeaseUntil), sqldb.Micros(p.CreateTime), sqldb.Micros(p.UpdateTime))
	if _, ok := sqldb.UniqueViolation(err); ok {
		return payment.ErrDuplicateKey
	}
	if err != nil {
		return fmt.Errorf("create payment: %w", err)
	}
	return nil
}

// GetByKey implements payment.Store.
func (s *Payments) GetByKey(ctx context.Context, owner, userID, key string) (payment.Payment, error) {
	return s.getWhere(ctx, "user_id = ? AND key_owner = ? AND idempotency_key = ?", userID, owner, key)
}

// Get implements payment.Store.
func (s *Payments) Get(ctx context.Context, id string) (payment.Payment, error) {
	return s.getWhere(ctx, "id = ?", id)
}

func (s *Payments) getWhere(ctx context.Context, where string, args ...any) (payment.Payment, error) {
	p, err := scanPayment(s.DB.Read.QueryRowContext(ctx, s.DB.Rebind("SELECT "+paymentColumns+" FROM payments WHERE "+where), args...))
	if errors.Is(err, sql.ErrNoRows) {
		return payment.Payment{}, payment.ErrNotFound
	}
	if err != nil {
		return payment.Payment{}, fmt.Errorf("get payment: %w", err)
	}
	ps := []payment.Payment{p}
	if err := s.loadRefunds(ctx, ps); err != nil {
		return payment.Payment{}, err
	}
	return ps[0], nil
}

// Claim implements payment.Store: one conditional update, so two replicas can never both hold it.
func (s *Payments) Claim(ctx context.Context, id string, now, leaseUntil time.Time) (int, bool, error) {
	var attempt int
	err := s.DB.QueryRowContext(ctx, s.DB.Rebind(`UPDATE payments SET attempts = attempts + 1, lease_until = ?
		WHERE id = ? AND status = ? AND lease_until <= ? RETURNING attempts`),
		sqldb.Micros(leaseUntil), id, int(payment.StatusPending), sqldb.Micros(now)).Scan(&attempt)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("claim payment %s: %w", id, err)
	}
	return attempt, true, nil
}

// Release implements payment.Store.
func (s *Payments) Release(ctx context.Context, id string) error {
	_, err := s.DB.ExecContext(ctx, s.DB.Rebind("UPDATE payments SET lease_until = 0 WHERE id = ? AND status = ?"), id, int(payment.StatusPending))
	if err != nil {
		return fmt.Errorf("release payment %s: %w", id, err)
	}
	return nil
}

// Settle implements payment.Store: on PostgreSQL one statement, the conditional update and the
// events it appends; on SQLite, which has no UPDATE in a WITH, one transaction of both.
func (s *Payments) Settle(ctx context.Context, p payment.Payment, events []payment.Event) error {
	update := `UPDATE payments SET status = ?, decline_reason = ?, failure_message = ?, attempts = ?, lease_until = 0,
		update_time = ? WHERE id = ? AND status = ?`
	args := []any{int(p.Status), int(p.DeclineReason), p.FailureMessage, p.Attempts, sqldb.Micros(p.UpdateTime), p.ID, int(payment.StatusPending)}
	var err error
	if s.DB.Dialect == sqldb.Postgres && len(events) > 0 {
		// The events are selected from the update's RETURNING: none when it matched nothing.
		var selects []string
		for k, e := range events {
			sel, eargs := s.eventSelect(k, e)
			selects, args = append(selects, sel+" FROM settled"), append(args, eargs...)
		}
		var res sql.Result
		res, err = s.DB.ExecContext(ctx, s.DB.Rebind("WITH settled AS ("+update+" RETURNING id) INSERT INTO payment_events ("+
			eventInsertColumns(s.DB)+") "+strings.Join(selects, " UNION ALL ")), args...)
		if err == nil {
			if n, rerr := res.RowsAffected(); rerr != nil || n == 0 {
				err = errors.Join(rerr, payment.ErrAlreadySettled)
			}
		}
	} else {
		err = sqldb.InTx(ctx, s.DB, func(tx *sql.Tx) error {
			res, err := tx.ExecContext(ctx, s.DB.Rebind(update), args...)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n == 0 {
				return errors.Join(err, payment.ErrAlreadySettled)
			}
			return s.insertEvents(ctx, tx, events)
		})
	}
	if err != nil && !errors.Is(err, payment.ErrAlreadySettled) {
		return fmt.Errorf("settle payment %s: %w", p.ID, err)
	}
	return err
}

// errExceeds aborts a refund transaction whose conditional update matched nothing.
var errExceeds = errors.New("refund exceeds")

// Refund implements payment.Store: the refund row, a conditional update that only passes while
// the refunds stay within the capture, and the event, in one transaction.
func (s *Payments) Refund(ctx context.Context, r payment.Refund, e payment.Event) (payment.Payment, error) {
	err := sqldb.InTx(ctx, s.DB, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.DB.Rebind(`INSERT INTO refunds (`+refundColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			r.ID, r.PaymentID, r.UserID, r.AmountMinor, r.Reason, r.IdempotencyKey, r.KeyOwner, r.Fingerprint, sqldb.Micros(r.CreateTime))
		if _, ok := sqldb.UniqueViolation(err); ok {
			return payment.ErrDuplicateKey
		}
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, s.DB.Rebind(`UPDATE payments SET refunded = refunded + ?,
			status = CASE WHEN refunded + ? = amount THEN CAST(? AS INTEGER) ELSE CAST(? AS INTEGER) END, update_time = ?
			WHERE id = ? AND status IN (?, ?) AND refunded + ? <= amount`),
			r.AmountMinor, r.AmountMinor, int(payment.StatusRefunded), int(payment.StatusPartiallyRefunded), sqldb.Micros(r.CreateTime),
			r.PaymentID, int(payment.StatusCaptured), int(payment.StatusPartiallyRefunded), r.AmountMinor)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(err, errExceeds)
		}
		// The event carries the payment as it now stands, read inside the transaction.
		after, err := scanPayment(tx.QueryRowContext(ctx, s.DB.Rebind("SELECT "+paymentColumns+" FROM payments WHERE id = ?"), r.PaymentID))
		if err != nil {
			return err
		}
		e.Payment = after
		return s.insertEvents(ctx, tx, []payment.Event{e})
	})
	switch {
	case errors.Is(err, payment.ErrDuplicateKey):
		return payment.Payment{}, payment.ErrDuplicateKey
	case errors.Is(err, errExceeds):
		return payment.Payment{}, payment.ErrRefundExceeds
	case err != nil:
		return payment.Payment{}, fmt.Errorf("refund payment %s: %w", r.PaymentID, err)
	}
	return s.Get(ctx, r.PaymentID)
}

// GetRefundByKey implements payment.Store.
func (s *Payments) GetRefundByKey(ctx context.Context, owner, userID, key string) (payment.Refund, error) {
	r, err := scanRefund(s.DB.Read.QueryRowContext(ctx, s.DB.Rebind("SELECT "+refundColumns+
		" FROM refunds WHERE user_id = ? AND key_owner = ? AND idempotency_key = ?"), userID, owner, key))
	if errors.Is(err, sql.ErrNoRows) {
		return payment.Refund{}, payment.ErrNotFound
	}
	if err != nil {
		return payment.Refund{}, fmt.Errorf("get refund: %w", err)
	}
	return r, nil
}

// List implements payment.Store.
func (s *Payments) List(ctx context.Context, f payment.Filter, after *paging.Cursor, limit int) ([]payment.Payment, error) {
	where, args := filter(f)
	if f.IdempotencyKey != "" {
		where, args = append(where, "key_owner = ?", "idempotency_key = ?"), append(args, f.KeyOwner, f.IdempotencyKey)
	}
	if after != nil {
		where = append(where, "(create_time, id) < (?, ?)")
		args = append(args, sqldb.Micros(after.CreateTime), after.ID)
	}
	q := "SELECT " + paymentColumns + " FROM payments"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY create_time DESC, id DESC LIMIT ?"
	rows, err := s.DB.Read.QueryContext(ctx, s.DB.Rebind(q), append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("list payments: %w", err)
	}
	defer rows.Close()
	var ps []payment.Payment
	for rows.Next() {
		p, err := scanPayment(rows)
		if err != nil {
			return nil, fmt.Errorf("list payments: %w", err)
		}
		ps = append(ps, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list payments: %w", err)
	}
	if err := s.loadRefunds(ctx, ps); err != nil {
		return nil, err
	}
	return ps, nil
}

func filter(f payment.Filter) ([]string, []any) {
	var where []string
	var args []any
	if f.OrderID != "" {
		where, args = append(where, "order_id = ?"), append(args, f.OrderID)
	}
	if f.UserID != "" {
		where, args = append(where, "user_id = ?"), append(args, f.UserID)
	}
	return where, args
}

const refundColumns = "id, payment_id, user_id, amount, reason, idempotency_key, key_owner, fingerprint, create_time"

// loadRefunds fills in the refunds of ps with one query.
func (s *Payments) loadRefunds(ctx context.Context, ps []payment.Payment) error {
	if len(ps) == 0 {
		return nil
	}
	at := make(map[string]int, len(ps))
	args := make([]any, len(ps))
	for i, p := range ps {
		at[p.ID], args[i] = i, p.ID
	}
	rows, err := s.DB.Read.QueryContext(ctx, s.DB.Rebind("SELECT "+refundColumns+" FROM refunds WHERE payment_id IN (?"+
		strings.Repeat(", ?", len(ps)-1)+") ORDER BY create_time, id"), args...)
	if err != nil {
		return fmt.Errorf("load refunds: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		r, err := scanRefund(rows)
		if err != nil {
			return fmt.Errorf("load refunds: %w", err)
		}
		i := at[r.PaymentID]
		ps[i].Refunds = append(ps[i].Refunds, r)
	}
	return rows.Err()
}

const eventColumns = `seq, id, type, currency, amount, payment_id, order_id, user_id, p_amount, p_refunded, p_status,
	p_decline, p_failure, p_create_time, create_time`

// eventInsertColumns are the columns an INSERT of events fills: seq too on PostgreSQL (see
// sqldb.LogSeq).
func eventInsertColumns(db *sqldb.DB) string {
	cols := `id, type, currency, amount, payment_id, order_id, user_id, p_amount, p_refunded, p_status, p_decline, p_failure,
		p_create_time, create_time`
	if db.Dialect == sqldb.Postgres {
		cols = "seq, " + cols
	}
	return cols
}

// eventSelect returns the select list of event e, the k-th its transaction appends, in the
// order of eventInsertColumns, and its arguments. The casts type the arguments where no column
// does (in a SELECT under an INSERT).
func (s *Payments) eventSelect(k int, e payment.Event) (string, []any) {
	p := e.Payment
	sel := "CAST(? AS TEXT), CAST(? AS INTEGER), CAST(? AS TEXT), CAST(? AS BIGINT), CAST(? AS TEXT), CAST(? AS TEXT), " +
		"CAST(? AS TEXT), CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS INTEGER), CAST(? AS INTEGER), CAST(? AS TEXT), " +
		"CAST(? AS BIGINT), CAST(? AS BIGINT)"
	if seq := s.DB.LogSeq(k); seq != "" {
		sel = seq + ", " + sel
	}
	return "SELECT " + sel, []any{e.ID, int(e.Type), e.Amount.Currency, e.Amount.Minor, p.ID, p.OrderID, p.UserID, p.Amount.Minor,
		p.RefundedMinor, int(p.Status), int(p.DeclineReason), p.FailureMessage, sqldb.Micros(p.CreateTime), sqldb.Micros(e.CreateTime)}
}

// insertEvents appends events in one INSERT, in transaction tx.
func (s *Payments) insertEvents(ctx context.Context, tx *sql.Tx, events []payment.Event) error {
	if len(events) == 0 {
		return nil
	}
	var (
		selects []string
		args    []any
	)
	for k, e := range events {
		sel, eargs := s.eventSelect(k, e)
		selects, args = append(selects, sel), append(args, eargs...)
	}
	if _, err := tx.ExecContext(ctx, s.DB.Rebind("INSERT INTO payment_events ("+eventInsertColumns(s.DB)+") "+
		strings.Join(selects, " UNION ALL ")), args...); err != nil {
		return fmt.Errorf("insert events: %w", err)
	}
	return nil
}

// LastEventSeq implements payment.Store: the newest event readers may see (see sqldb.Published).
func (s *Payments) LastEventSeq(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.DB.Read.QueryRowContext(ctx, "SELECT COALESCE(MAX(seq), 0) FROM payment_events WHERE "+s.DB.Published("seq")).Scan(&seq); err != nil {
		return 0, fmt.Errorf("last event: %w", err)
	}
	return seq, nil
}

// EventsAfter implements payment.Store. On PostgreSQL an event appears once every transaction
// that began writing before it has ended (see sqldb.Published), so none is ever skipped.
func (s *Payments) EventsAfter(ctx context.Context, f payment.Filter, seq int64, limit int) ([]payment.Event, error) {
	where, args := filter(f)
	where = append([]string{"seq > ?", s.DB.Published("seq")}, where...)
	args = append([]any{seq}, args...)
	rows, err := s.DB.Read.QueryContext(ctx, s.DB.Rebind("SELECT "+eventColumns+" FROM payment_events WHERE "+
		strings.Join(where, " AND ")+" ORDER BY seq LIMIT ?"), append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	defer rows.Close()
	var events []payment.Event
	for rows.Next() {
		var (
			e                    payment.Event
			typ, status, decline int
			pCreate, create      int64
		)
		p := &e.Payment
		if err := rows.Scan(&e.Seq, &e.ID, &typ, &e.Amount.Currency, &e.Amount.Minor, &p.ID, &p.OrderID, &p.UserID,
			&p.Amount.Minor, &p.RefundedMinor, &status, &decline, &p.FailureMessage, &pCreate, &create); err != nil {
			return nil, fmt.Errorf("events: %w", err)
		}
		e.Type, p.Status, p.DeclineReason = payment.EventType(typ), payment.Status(status), payment.DeclineReason(decline)
		p.Amount.Currency = e.Amount.Currency
		p.CreateTime, p.UpdateTime, e.CreateTime = sqldb.FromMicros(pCreate), sqldb.FromMicros(create), sqldb.FromMicros(create)
		events = append(events, e)
	}
	return events, rows.Err()
}

type scanner interface{ Scan(dest ...any) error }

func scanPayment(r scanner) (payment.Payment, error) {
	var (
		p                       payment.Payment
		status, decline         int
		lease, created, updated int64
	)
	err := r.Scan(&p.ID, &p.OrderID, &p.UserID, &p.Amount.Currency, &p.Amount.Minor, &p.RefundedMinor, &status, &decline,
		&p.FailureMessage, &p.IdempotencyKey, &p.KeyOwner, &p.Fingerprint, &p.Attempts, &lease, &created, &updated)
	if err != nil {
		return payment.Payment{}, err
	}
	p.Status, p.DeclineReason = payment.Status(status), payment.DeclineReason(decline)
	p.LeaseUntil, p.CreateTime, p.UpdateTime = sqldb.FromMicros(lease), sqldb.FromMicros(created), sqldb.FromMicros(updated)
	return p, nil
}

func scanRefund(r scanner) (payment.Refund, error) {
	var rf payment.Refund
	var created int64
	if err := r.Scan(&rf.ID, &rf.PaymentID, &rf.UserID, &rf.AmountMinor, &rf.Reason, &rf.IdempotencyKey, &rf.KeyOwner, &rf.Fingerprint, &created); err != nil {
		return payment.Refund{}, err
	}
	rf.CreateTime = sqldb.FromMicros(created)
	return rf, nil
}
