CREATE TABLE orders (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    items           TEXT NOT NULL,
    currency        TEXT NOT NULL,
    total           BIGINT NOT NULL,
    status          INTEGER NOT NULL,
    payment_id      TEXT NOT NULL DEFAULT '',
    failure_reason  TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    -- The payment method token, kept only while the payment is unsettled (see internal/order).
    payment_token   TEXT NOT NULL DEFAULT '',
    revision        BIGINT NOT NULL,
    lease_until     BIGINT NOT NULL DEFAULT 0,
    create_time     BIGINT NOT NULL,
    update_time     BIGINT NOT NULL
);
CREATE UNIQUE INDEX orders_key ON orders (user_id, idempotency_key);
CREATE INDEX orders_due ON orders (status, update_time);
CREATE INDEX orders_user ON orders (user_id, create_time, id);
CREATE INDEX orders_all ON orders (create_time, id);
