-- Issue 10: people who use the HTTP API, their teams and sessions, the audit log, and the
-- failed-login counters that slow password guessing. Valid SQL for SQLite and PostgreSQL:
-- only types both share, times as Unix ms.

-- A user's name is the one keys (virtual_keys.user_name) and budgets (user:<name>) carry.
CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    -- admin, member or viewer.
    role           TEXT NOT NULL,
    -- Argon2id PHC string; the password itself is never stored.
    password_hash  TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    -- Set: the user cannot sign in and their keys are refused.
    disabled_at_ms BIGINT
);

-- A team's name is the one keys (virtual_keys.team) and budgets (team:<name>) carry.
CREATE TABLE teams (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE team_members (
    team_id     TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    added_at_ms BIGINT NOT NULL,
    PRIMARY KEY (team_id, user_id)
);

CREATE INDEX team_members_by_user ON team_members (user_id);

-- A signed-in session. The token the client holds is signed and names this row; the row
-- must exist, be unrevoked and unexpired, so logout and revocation end a session at once.
CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);

CREATE INDEX sessions_by_user ON sessions (user_id);

-- Every change made through the API or the CLI. Never holds a secret.
CREATE TABLE audit_log (
    id        TEXT PRIMARY KEY,
    at_ms     BIGINT NOT NULL,
    -- A user's name, or `cli`.
    actor     TEXT NOT NULL,
    -- What was done, e.g. `user.create`, `key.revoke`.
    action    TEXT NOT NULL,
    -- What it was done to: an id or a name.
    target    TEXT NOT NULL,
    -- The client's IP address, or `cli`.
    from_addr TEXT NOT NULL
);

CREATE INDEX audit_log_by_time ON audit_log (at_ms, id);

-- Failed logins in the current window, per subject (`user:<name>` or `ip:<address>`):
-- shared by replicas, so a guesser cannot spread tries over them.
CREATE TABLE login_failures (
    subject         TEXT PRIMARY KEY,
    window_start_ms BIGINT NOT NULL,
    failures        BIGINT NOT NULL
);
