-- The update log is written by the database itself, in the statement that creates or changes an
-- order (issue 18): one statement and one commit per change, where the store used to insert the
-- log entry in a transaction of its own. An entry now holds the order's columns (all but the
-- payment token) instead of a JSON snapshot; the entries written before keep their snapshot, and
-- their new columns keep the defaults. A change is a new revision: claims, releases and the
-- reconciler's bookkeeping write no entry.
ALTER TABLE order_updates ADD COLUMN user_id TEXT NOT NULL DEFAULT '';
ALTER TABLE order_updates ADD COLUMN items TEXT NOT NULL DEFAULT '[]';
ALTER TABLE order_updates ADD COLUMN currency TEXT NOT NULL DEFAULT '';
ALTER TABLE order_updates ADD COLUMN total BIGINT NOT NULL DEFAULT 0;
ALTER TABLE order_updates ADD COLUMN status INTEGER NOT NULL DEFAULT 0;
ALTER TABLE order_updates ADD COLUMN payment_id TEXT NOT NULL DEFAULT '';
ALTER TABLE order_updates ADD COLUMN failure_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE order_updates ADD COLUMN idempotency_key TEXT NOT NULL DEFAULT '';
ALTER TABLE order_updates ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
ALTER TABLE order_updates ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE order_updates ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;
ALTER TABLE order_updates ADD COLUMN order_create_time BIGINT NOT NULL DEFAULT 0;
ALTER TABLE order_updates ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE order_updates ADD COLUMN next_attempt_at BIGINT NOT NULL DEFAULT 0;
