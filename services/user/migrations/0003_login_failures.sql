-- Failed logins per account, so that every replica backs an account off alike (see
-- internal/user/login.go). The key is "id:<user id>", or the email or username asked for when no
-- account has it, so that unknown accounts back off like known ones. Rows whose last failure is
-- older than the backoff's forget period are pruned.
CREATE TABLE login_failures (
    account_key  TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL,
    last_failure BIGINT NOT NULL
);
CREATE INDEX login_failures_last ON login_failures (last_failure);
