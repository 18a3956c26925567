-- The update log's entries are appended by a trigger on orders (see 0006): when an order is
-- created, and when a change gives it a new revision.
-- SQLite cannot change a column's default; the trigger gives snapshot ''.
CREATE TRIGGER orders_created AFTER INSERT ON orders BEGIN
    INSERT INTO order_updates (order_id, previous_status, snapshot, create_time, user_id, items, currency, total, status,
        payment_id, failure_reason, idempotency_key, fingerprint, revision, lease_until, order_create_time, attempts,
        next_attempt_at)
    VALUES (NEW.id, 0, '', NEW.update_time, NEW.user_id, NEW.items, NEW.currency, NEW.total, NEW.status, NEW.payment_id,
        NEW.failure_reason, NEW.idempotency_key, NEW.fingerprint, NEW.revision, NEW.lease_until, NEW.create_time,
        NEW.attempts, NEW.next_attempt_at);
END;
CREATE TRIGGER orders_changed AFTER UPDATE OF revision ON orders WHEN NEW.revision <> OLD.revision BEGIN
    INSERT INTO order_updates (order_id, previous_status, snapshot, create_time, user_id, items, currency, total, status,
        payment_id, failure_reason, idempotency_key, fingerprint, revision, lease_until, order_create_time, attempts,
        next_attempt_at)
    VALUES (NEW.id, OLD.status, '', NEW.update_time, NEW.user_id, NEW.items, NEW.currency, NEW.total, NEW.status,
        NEW.payment_id, NEW.failure_reason, NEW.idempotency_key, NEW.fingerprint, NEW.revision, NEW.lease_until,
        NEW.create_time, NEW.attempts, NEW.next_attempt_at);
END;
