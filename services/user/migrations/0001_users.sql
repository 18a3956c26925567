CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL,
    username      TEXT NOT NULL,
    given_name    TEXT NOT NULL,
    family_name   TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    status        INTEGER NOT NULL,
    roles         TEXT NOT NULL,
    version       BIGINT NOT NULL,
    create_time   BIGINT NOT NULL,
    update_time   BIGINT NOT NULL,
    delete_time   BIGINT NOT NULL DEFAULT 0
);
-- Emails and usernames stay reserved after a soft delete, so a deleted account's name cannot be
-- taken over.
CREATE UNIQUE INDEX users_email_key ON users (email);
CREATE UNIQUE INDEX users_username_key ON users (username);
CREATE INDEX users_status_order ON users (status, create_time, id);
CREATE INDEX users_order ON users (create_time, id);
