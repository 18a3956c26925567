-- seq is no longer a plain sequence, which needed writers to take a lock held to COMMIT for it to
-- grow in commit order (issue 18): the store numbers an event by its transaction's id, and
-- readers take only the events of transactions older than every one still running (see
-- pkg/sqldb, LogSeq and Published). SQLite's seq, filled by its one writer at a time, stays.
ALTER TABLE payment_events ALTER COLUMN seq DROP IDENTITY;
