-- The product catalog orders are priced from (internal/order's Catalog). Products are never
-- deleted, only made inactive, so an order's SKUs always name a row. active is 0 or 1 on both
-- databases; version grows by one with every change (the etag).
CREATE TABLE products (
    sku         TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    currency    TEXT NOT NULL,
    price       BIGINT NOT NULL,
    active      INTEGER NOT NULL,
    version     BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL
);
