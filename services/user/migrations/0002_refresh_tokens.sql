-- Refresh tokens: a session is one login; every refresh token it issues is a row here, kept as
-- the hex SHA-256 of the token (the tokens are 256 random bits, so a fast hash is enough: no
-- dictionary to guard against, and a lookup must be an index probe). A spent token stays, with
-- its used_time, until it expires: sending it again is how a stolen token is noticed, and it ends
-- the whole session (revoke_time). Times are unix microseconds, 0 for never.
CREATE TABLE refresh_sessions (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    create_time BIGINT NOT NULL,
    revoke_time BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX refresh_sessions_user ON refresh_sessions (user_id, revoke_time);

CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES refresh_sessions (id),
    parent_hash TEXT NOT NULL,
    create_time BIGINT NOT NULL,
    expire_time BIGINT NOT NULL,
    used_time   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id, expire_time);
