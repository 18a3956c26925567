-- One row per change of an order's status, with the order as it stood right after it; seq grows
-- in commit order (writers take a lock first, see internal/store), which TrackOrders relies on.
CREATE TABLE order_updates (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id        TEXT NOT NULL,
    previous_status INTEGER NOT NULL,
    snapshot        TEXT NOT NULL,
    create_time     BIGINT NOT NULL
);
CREATE INDEX order_updates_order ON order_updates (order_id, seq);
