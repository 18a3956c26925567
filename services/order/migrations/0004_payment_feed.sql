-- How far the order service has followed the payment service's event log (ListPaymentEvents):
-- the seq of the last payment event handled, so that a restart resumes where it left off. One
-- row, shared by every replica; it only moves forward.
CREATE TABLE payment_feed (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO payment_feed (id, seq) VALUES (1, 0);
