-- Issue 9: token limits, users and teams, per-model limits, and budgets with their leases.
-- Valid SQL for SQLite and PostgreSQL: only types both share, times as Unix ms, money in
-- pico-dollars (1e-12 USD) as BIGINT, flags as INTEGER 0/1.

-- A key's owner and team (plain names until issue 10 makes them entities; NULL: none)
-- and its own tokens per minute (NULL: the config's default; 0: every call refused).
ALTER TABLE virtual_keys ADD COLUMN user_name TEXT;
ALTER TABLE virtual_keys ADD COLUMN team TEXT;
ALTER TABLE virtual_keys ADD COLUMN tokens_per_minute BIGINT;

-- A key's limits for one model. NULL: no limit of that kind for the pair; 0: blocked.
CREATE TABLE key_model_limits (
    key_id              TEXT NOT NULL,
    model               TEXT NOT NULL,
    requests_per_minute BIGINT,
    tokens_per_minute   BIGINT,
    PRIMARY KEY (key_id, model)
);

-- A user's limits, shared by all their keys. NULL: the config's default; 0: blocked.
CREATE TABLE user_limits (
    user_name           TEXT PRIMARY KEY,
    requests_per_minute BIGINT,
    tokens_per_minute   BIGINT
);

-- A spend limit: subject is "key:<id>", "user:<name>" or "team:<name>"; period is "day",
-- "month" (UTC calendar) or "total". One budget per subject and period.
CREATE TABLE budgets (
    id          TEXT PRIMARY KEY,
    subject     TEXT NOT NULL,
    period      TEXT NOT NULL,
    limit_picos BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (subject, period)
);

-- A budget's money in one window (window_start_ms 0 for a total budget). Created with
-- INSERT .. ON CONFLICT DO NOTHING, so a window's start is idempotent across replicas.
-- Invariant after every grant: spent_picos + leased_picos <= the budget's limit.
CREATE TABLE budget_windows (
    budget_id        TEXT NOT NULL,
    window_start_ms  BIGINT NOT NULL,
    spent_picos      BIGINT NOT NULL DEFAULT 0,
    leased_picos     BIGINT NOT NULL DEFAULT 0,
    -- What the latest grant added, written by the same UPDATE that adds it: RETURNING
    -- sees only the new row, and this is how the one conditional UPDATE tells its grant.
    last_grant_picos BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (budget_id, window_start_ms)
);

-- Money of one window leased to one Envoy (holder). used_picos is what settled calls took
-- from granted_picos (never more than it: an overrun goes to spent alone). Closed once
-- reclaimed, when granted - used went back to the window.
CREATE TABLE budget_leases (
    lease_id         TEXT PRIMARY KEY,
    budget_id        TEXT NOT NULL,
    window_start_ms  BIGINT NOT NULL,
    holder           TEXT NOT NULL,
    granted_picos    BIGINT NOT NULL,
    used_picos       BIGINT NOT NULL DEFAULT 0,
    -- What the latest settlement took from the grant; see last_grant_picos.
    last_drawn_picos BIGINT NOT NULL DEFAULT 0,
    expires_at_ms    BIGINT NOT NULL,
    closed           INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX budget_leases_open_by_expiry ON budget_leases (closed, expires_at_ms);
CREATE INDEX budget_leases_by_budget ON budget_leases (budget_id);

-- The user and team of the key when the call was admitted, for rollups (NULL: none).
ALTER TABLE usage_records ADD COLUMN user_name TEXT;
ALTER TABLE usage_records ADD COLUMN team TEXT;
