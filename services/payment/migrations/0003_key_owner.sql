-- Idempotency keys are scoped to the caller that wrote with them as well as to the payer (see
-- payment.KeyOwner): a key one caller used never matches another caller's payment or refund, so
-- nobody can claim the keys the order service will use. Every payment so far was created by the
-- order service, the only caller CreatePayment admits; refunds so far are counted as its too.
ALTER TABLE payments ADD COLUMN key_owner TEXT NOT NULL DEFAULT 'service:order';
ALTER TABLE refunds ADD COLUMN key_owner TEXT NOT NULL DEFAULT 'service:order';
DROP INDEX payments_key;
CREATE UNIQUE INDEX payments_key ON payments (user_id, key_owner, idempotency_key);
DROP INDEX refunds_key;
CREATE UNIQUE INDEX refunds_key ON refunds (user_id, key_owner, idempotency_key);
