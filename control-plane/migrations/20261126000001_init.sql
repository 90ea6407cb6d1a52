-- One schema for SQLite and PostgreSQL: only types both understand, times as Unix ms.

CREATE TABLE virtual_keys (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    -- Lower-case hex SHA-256 of the secret; the secret itself is never stored.
    key_hash      TEXT NOT NULL UNIQUE,
    -- First characters of the secret, so people can tell keys apart in listings.
    key_prefix    TEXT NOT NULL,
    -- Comma-separated model allow-list; empty means every served model.
    models        TEXT NOT NULL DEFAULT '',
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);

CREATE TABLE usage_records (
    -- The filter's request id; reports are retried, so it is the idempotency key.
    request_id     TEXT PRIMARY KEY,
    key_id         TEXT NOT NULL,
    model          TEXT NOT NULL,
    provider       TEXT NOT NULL,
    status         INTEGER NOT NULL,
    input_uncached BIGINT NOT NULL,
    cache_read     BIGINT NOT NULL,
    cache_write    BIGINT NOT NULL,
    output         BIGINT NOT NULL,
    reasoning      BIGINT NOT NULL,
    estimated      INTEGER NOT NULL,
    partial        INTEGER NOT NULL,
    -- Exact cost in pico-dollars (1e-12 USD), priced when the record arrived.
    cost_picos     BIGINT NOT NULL,
    finished_at_ms BIGINT NOT NULL,
    duration_ms    BIGINT NOT NULL
);

CREATE INDEX usage_records_by_key_time ON usage_records (key_id, finished_at_ms);
