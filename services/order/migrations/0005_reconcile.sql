-- The reconciler's schedule of each unsettled order (see internal/order/reconcile.go): how many of
-- its attempts failed, and when it may be tried again (unix microseconds; 0: as soon as the grace
-- has passed). Due orders are read by next attempt, so one order failing again and again is
-- backed off instead of coming first in every pass.
ALTER TABLE orders ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN next_attempt_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX orders_next_attempt ON orders (status, next_attempt_at);
