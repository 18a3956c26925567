-- One row per state change, with the payment as it stood right after it. seq orders events in
-- commit order (writers take a lock first, see internal/store), which WatchPayments relies on.
CREATE TABLE payment_events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    type            INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    amount          BIGINT NOT NULL,
    payment_id      TEXT NOT NULL,
    order_id        TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    p_amount        BIGINT NOT NULL,
    p_refunded      BIGINT NOT NULL,
    p_status        INTEGER NOT NULL,
    p_decline       INTEGER NOT NULL,
    p_failure       TEXT NOT NULL,
    p_create_time   BIGINT NOT NULL,
    create_time     BIGINT NOT NULL
);
CREATE INDEX payment_events_user ON payment_events (user_id, seq);
CREATE INDEX payment_events_order ON payment_events (order_id, seq);
