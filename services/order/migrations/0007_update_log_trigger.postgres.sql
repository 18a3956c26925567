-- The update log's entries are appended by a trigger on orders (see 0006): when an order is
-- created, and when a change gives it a new revision.
ALTER TABLE order_updates ALTER COLUMN snapshot SET DEFAULT '';
-- seq is no longer a plain sequence, which needed writers to take a lock held to COMMIT for it
-- to grow in commit order: the trigger numbers an entry by its transaction's id, and readers
-- take only the entries of transactions older than every one still running (see pkg/sqldb,
-- LogSeq and Published).
ALTER TABLE order_updates ALTER COLUMN seq DROP IDENTITY;

CREATE FUNCTION order_updates_append() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO order_updates (seq, order_id, previous_status, create_time, user_id, items, currency, total, status,
        payment_id, failure_reason, idempotency_key, fingerprint, revision, lease_until, order_create_time, attempts,
        next_attempt_at)
    VALUES (pg_current_xact_id()::text::bigint * 16, NEW.id, CASE WHEN TG_OP = 'INSERT' THEN 0 ELSE OLD.status END,
        NEW.update_time, NEW.user_id, NEW.items, NEW.currency, NEW.total, NEW.status, NEW.payment_id,
        NEW.failure_reason, NEW.idempotency_key, NEW.fingerprint, NEW.revision, NEW.lease_until, NEW.create_time,
        NEW.attempts, NEW.next_attempt_at);
    RETURN NULL;
END
$$;
CREATE TRIGGER orders_created AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION order_updates_append();
CREATE TRIGGER orders_changed AFTER UPDATE OF revision ON orders FOR EACH ROW
    WHEN (NEW.revision <> OLD.revision) EXECUTE FUNCTION order_updates_append();
