-- Issue 10: providers and models added through the HTTP API, and prices over time.
-- Valid SQL for SQLite and PostgreSQL: only types both share, times as Unix ms, prices in
-- micro-dollars per million tokens as BIGINT, flags as INTEGER 0/1.

-- A provider added through the API (the config file's live in the file). Its key is
-- sealed (envelope encryption, see control-plane/src/secrets.rs): the ciphertext under a
-- data key of its own, that data key wrapped by the master key whose id is stored beside
-- it. The master key is never stored. A provider without a key has NULL in all key_ columns.
CREATE TABLE providers (
    name             TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    base_url         TEXT NOT NULL,
    auth_header      TEXT NOT NULL,
    -- "bearer" or "raw": how the key is written into auth_header.
    auth_scheme      TEXT NOT NULL,
    timeout_ms       BIGINT NOT NULL,
    -- Comma-separated lower-case header names.
    forward_headers  TEXT NOT NULL DEFAULT '',
    allow_background INTEGER NOT NULL DEFAULT 0,
    key_ciphertext   TEXT,
    key_nonce        TEXT,
    key_wrapped      TEXT,
    key_master_id    TEXT,
    -- What people see of the key: a short digest.
    key_fingerprint  TEXT,
    created_at_ms    BIGINT NOT NULL,
    updated_at_ms    BIGINT NOT NULL
);

-- A model added through the API; its provider may be the config file's, so no foreign key.
CREATE TABLE models (
    name              TEXT PRIMARY KEY,
    provider          TEXT NOT NULL,
    -- The provider's name for it; NULL: the model's own name.
    upstream_model    TEXT,
    -- Most output tokens of one completion; NULL: the config's default.
    max_output_tokens BIGINT,
    created_at_ms     BIGINT NOT NULL
);

-- A model's prices over time, per one million tokens. Kept when the model is removed, so
-- a call made before is still priced after a restart.
CREATE TABLE model_prices (
    model             TEXT NOT NULL,
    effective_from_ms BIGINT NOT NULL,
    input             BIGINT NOT NULL,
    output            BIGINT NOT NULL,
    cache_read        BIGINT NOT NULL,
    cache_write       BIGINT NOT NULL,
    created_at_ms     BIGINT NOT NULL,
    PRIMARY KEY (model, effective_from_ms)
);

-- Counts changes to the three tables above: a replica whose count differs reads them again.
CREATE TABLE catalog_version (
    id      INTEGER PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO catalog_version (id, version) VALUES (1, 0);
