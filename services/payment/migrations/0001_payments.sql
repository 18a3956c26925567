CREATE TABLE payments (
    id              TEXT PRIMARY KEY,
    order_id        TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    currency        TEXT NOT NULL,
    amount          BIGINT NOT NULL,
    refunded        BIGINT NOT NULL DEFAULT 0,
    status          INTEGER NOT NULL,
    decline_reason  INTEGER NOT NULL DEFAULT 0,
    failure_message TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    lease_until     BIGINT NOT NULL DEFAULT 0,
    create_time     BIGINT NOT NULL,
    update_time     BIGINT NOT NULL,
    CHECK (refunded >= 0 AND refunded <= amount)
);
-- Idempotency keys are scoped to the caller.
CREATE UNIQUE INDEX payments_key ON payments (user_id, idempotency_key);
CREATE INDEX payments_order ON payments (order_id, create_time, id);
CREATE INDEX payments_user ON payments (user_id, create_time, id);
CREATE INDEX payments_order_all ON payments (create_time, id);

CREATE TABLE refunds (
    id              TEXT PRIMARY KEY,
    payment_id      TEXT NOT NULL REFERENCES payments (id),
    user_id         TEXT NOT NULL,
    amount          BIGINT NOT NULL CHECK (amount > 0),
    reason          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    create_time     BIGINT NOT NULL
);
CREATE UNIQUE INDEX refunds_key ON refunds (user_id, idempotency_key);
CREATE INDEX refunds_payment ON refunds (payment_id, create_time);
