-- Issue 10: usage rollups, kept up to date at ingest in the transaction that stores the
-- usage rows (only rows actually inserted are added, so a retried batch never counts
-- twice), so totals and series never scan usage_records. Valid SQL for SQLite and
-- PostgreSQL: times as Unix ms (UTC buckets), money in pico-dollars, counts as BIGINT.
-- user_name and team are '' for none: NULLs would never conflict in the primary key.

-- One row per hour (bucket_start_ms a multiple of 3,600,000) and (key, user, team,
-- model, provider) that had calls.
CREATE TABLE usage_hourly (
    bucket_start_ms BIGINT NOT NULL,
    key_id          TEXT NOT NULL,
    user_name       TEXT NOT NULL,
    team            TEXT NOT NULL,
    model           TEXT NOT NULL,
    provider        TEXT NOT NULL,
    calls           BIGINT NOT NULL,
    input_uncached  BIGINT NOT NULL,
    cache_read      BIGINT NOT NULL,
    cache_write     BIGINT NOT NULL,
    output          BIGINT NOT NULL,
    reasoning       BIGINT NOT NULL,
    cost_picos      BIGINT NOT NULL,
    -- Calls answered with an HTTP status of 400 or more.
    errors          BIGINT NOT NULL,
    partial         BIGINT NOT NULL,
    estimated       BIGINT NOT NULL,
    PRIMARY KEY (bucket_start_ms, key_id, user_name, team, model, provider)
);

-- The same per UTC day (bucket_start_ms a multiple of 86,400,000): a month's totals read
-- 30 rows per combination instead of 720.
CREATE TABLE usage_daily (
    bucket_start_ms BIGINT NOT NULL,
    key_id          TEXT NOT NULL,
    user_name       TEXT NOT NULL,
    team            TEXT NOT NULL,
    model           TEXT NOT NULL,
    provider        TEXT NOT NULL,
    calls           BIGINT NOT NULL,
    input_uncached  BIGINT NOT NULL,
    cache_read      BIGINT NOT NULL,
    cache_write     BIGINT NOT NULL,
    output          BIGINT NOT NULL,
    reasoning       BIGINT NOT NULL,
    cost_picos      BIGINT NOT NULL,
    errors          BIGINT NOT NULL,
    partial         BIGINT NOT NULL,
    estimated       BIGINT NOT NULL,
    PRIMARY KEY (bucket_start_ms, key_id, user_name, team, model, provider)
);

-- The same per hour and per UTC day for (model, provider) only: questions about the whole
-- gateway (its totals, per model or provider) read a dozen rows a bucket instead of one
-- per key and model.
CREATE TABLE usage_hourly_models (
    bucket_start_ms BIGINT NOT NULL,
    model           TEXT NOT NULL,
    provider        TEXT NOT NULL,
    calls           BIGINT NOT NULL,
    input_uncached  BIGINT NOT NULL,
    cache_read      BIGINT NOT NULL,
    cache_write     BIGINT NOT NULL,
    output          BIGINT NOT NULL,
    reasoning       BIGINT NOT NULL,
    cost_picos      BIGINT NOT NULL,
    errors          BIGINT NOT NULL,
    partial         BIGINT NOT NULL,
    estimated       BIGINT NOT NULL,
    PRIMARY KEY (bucket_start_ms, model, provider)
);

CREATE TABLE usage_daily_models (
    bucket_start_ms BIGINT NOT NULL,
    model           TEXT NOT NULL,
    provider        TEXT NOT NULL,
    calls           BIGINT NOT NULL,
    input_uncached  BIGINT NOT NULL,
    cache_read      BIGINT NOT NULL,
    cache_write     BIGINT NOT NULL,
    output          BIGINT NOT NULL,
    reasoning       BIGINT NOT NULL,
    cost_picos      BIGINT NOT NULL,
    errors          BIGINT NOT NULL,
    partial         BIGINT NOT NULL,
    estimated       BIGINT NOT NULL,
    PRIMARY KEY (bucket_start_ms, model, provider)
);

-- A member's view reads their own rows; key and team pages read theirs.
CREATE INDEX usage_hourly_by_user ON usage_hourly (user_name, bucket_start_ms);
CREATE INDEX usage_hourly_by_key ON usage_hourly (key_id, bucket_start_ms);
CREATE INDEX usage_hourly_by_team ON usage_hourly (team, bucket_start_ms);
CREATE INDEX usage_daily_by_user ON usage_daily (user_name, bucket_start_ms);
CREATE INDEX usage_daily_by_key ON usage_daily (key_id, bucket_start_ms);
CREATE INDEX usage_daily_by_team ON usage_daily (team, bucket_start_ms);

-- The calls listing pages newest first by (finished_at_ms, request_id), filtered by any
-- one of these; (key_id, finished_at_ms) exists already.
CREATE INDEX usage_records_by_time ON usage_records (finished_at_ms);
CREATE INDEX usage_records_by_user_time ON usage_records (user_name, finished_at_ms);
CREATE INDEX usage_records_by_team_time ON usage_records (team, finished_at_ms);
CREATE INDEX usage_records_by_model_time ON usage_records (model, finished_at_ms);
CREATE INDEX usage_records_by_provider_time ON usage_records (provider, finished_at_ms);

-- Backfill from the rows stored before this migration. Token and cost sums saturate at
-- the largest BIGINT instead of failing the migration: summed in halves of 32 bits, then
-- joined unless they pass it (Store::rebuild_usage_rollups builds the same statements).
INSERT INTO usage_hourly
SELECT finished_at_ms - finished_at_ms % 3600000, key_id, COALESCE(user_name, ''),
       COALESCE(team, ''), model, provider, COUNT(*),
       CASE WHEN (CAST(SUM(input_uncached / 4294967296) AS BIGINT) + CAST(SUM(input_uncached % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(input_uncached / 4294967296) AS BIGINT) + CAST(SUM(input_uncached % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(input_uncached % 4294967296) AS BIGINT) % 4294967296) END,
       CASE WHEN (CAST(SUM(cache_read / 4294967296) AS BIGINT) + CAST(SUM(cache_read % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(cache_read / 4294967296) AS BIGINT) + CAST(SUM(cache_read % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(cache_read % 4294967296) AS BIGINT) % 4294967296) END,
       CASE WHEN (CAST(SUM(cache_write / 4294967296) AS BIGINT) + CAST(SUM(cache_write % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(cache_write / 4294967296) AS BIGINT) + CAST(SUM(cache_write % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(cache_write % 4294967296) AS BIGINT) % 4294967296) END,
       CASE WHEN (CAST(SUM(output / 4294967296) AS BIGINT) + CAST(SUM(output % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(output / 4294967296) AS BIGINT) + CAST(SUM(output % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(output % 4294967296) AS BIGINT) % 4294967296) END,
       CASE WHEN (CAST(SUM(reasoning / 4294967296) AS BIGINT) + CAST(SUM(reasoning % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(reasoning / 4294967296) AS BIGINT) + CAST(SUM(reasoning % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(reasoning % 4294967296) AS BIGINT) % 4294967296) END,
       CASE WHEN (CAST(SUM(cost_picos / 4294967296) AS BIGINT) + CAST(SUM(cost_picos % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(cost_picos / 4294967296) AS BIGINT) + CAST(SUM(cost_picos % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(cost_picos % 4294967296) AS BIGINT) % 4294967296) END,
       SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), SUM(partial), SUM(estimated)
FROM usage_records
GROUP BY finished_at_ms - finished_at_ms % 3600000, key_id, COALESCE(user_name, ''),
         COALESCE(team, ''), model, provider;

INSERT INTO usage_daily
SELECT bucket_start_ms - bucket_start_ms % 86400000, key_id, user_name, team, model,
       provider, SUM(calls),
       CASE WHEN (CAST(SUM(input_uncached / 4294967296) AS BIGINT) + CAST(SUM(input_uncached % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(input_uncached / 4294967296) AS BIGINT) + CAST(SUM(input_uncached % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(input_uncached % 4294967296) AS BIGINT) % 4294967296) END,
       CASE WHEN (CAST(SUM(cache_read / 4294967296) AS BIGINT) + CAST(SUM(cache_read % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(cache_read / 4294967296) AS BIGINT) + CAST(SUM(cache_read % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(cache_read % 4294967296) AS BIGINT) % 4294967296) END,
       CASE WHEN (CAST(SUM(cache_write / 4294967296) AS BIGINT) + CAST(SUM(cache_write % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(cache_write / 4294967296) AS BIGINT) + CAST(SUM(cache_write % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(cache_write % 4294967296) AS BIGINT) % 4294967296) END,
       CASE WHEN (CAST(SUM(output / 4294967296) AS BIGINT) + CAST(SUM(output % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(output / 4294967296) AS BIGINT) + CAST(SUM(output % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(output % 4294967296) AS BIGINT) % 4294967296) END,
       CASE WHEN (CAST(SUM(reasoning / 4294967296) AS BIGINT) + CAST(SUM(reasoning % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(reasoning / 4294967296) AS BIGINT) + CAST(SUM(reasoning % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(reasoning % 4294967296) AS BIGINT) % 4294967296) END,
       CASE WHEN (CAST(SUM(cost_picos / 4294967296) AS BIGINT) + CAST(SUM(cost_picos % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(cost_picos / 4294967296) AS BIGINT) + CAST(SUM(cost_picos % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(cost_picos % 4294967296) AS BIGINT) % 4294967296) END,
       SUM(errors), SUM(partial), SUM(estimated)
FROM usage_hourly
GROUP BY bucket_start_ms - bucket_start_ms % 86400000, key_id, user_name, team, model,
         provider;

INSERT INTO usage_hourly_models
SELECT bucket_start_ms, model, provider, SUM(calls),
       CASE WHEN (CAST(SUM(input_uncached / 4294967296) AS BIGINT) + CAST(SUM(input_uncached % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(input_uncached / 4294967296) AS BIGINT) + CAST(SUM(input_uncached % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(input_uncached % 4294967296) AS BIGINT) % 4294967296) END,
       CASE WHEN (CAST(SUM(cache_read / 4294967296) AS BIGINT) + CAST(SUM(cache_read % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(cache_read / 4294967296) AS BIGINT) + CAST(SUM(cache_read % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(cache_read % 4294967296) AS BIGINT) % 4294967296) END,
       CASE WHEN (CAST(SUM(cache_write / 4294967296) AS BIGINT) + CAST(SUM(cache_write % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(cache_write / 4294967296) AS BIGINT) + CAST(SUM(cache_write % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(cache_write % 4294967296) AS BIGINT) % 4294967296) END,
       CASE WHEN (CAST(SUM(output / 4294967296) AS BIGINT) + CAST(SUM(output % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(output / 4294967296) AS BIGINT) + CAST(SUM(output % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(output % 4294967296) AS BIGINT) % 4294967296) END,
       CASE WHEN (CAST(SUM(reasoning / 4294967296) AS BIGINT) + CAST(SUM(reasoning % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(reasoning / 4294967296) AS BIGINT) + CAST(SUM(reasoning % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(reasoning % 4294967296) AS BIGINT) % 4294967296) END,
       CASE WHEN (CAST(SUM(cost_picos / 4294967296) AS BIGINT) + CAST(SUM(cost_picos % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(cost_picos / 4294967296) AS BIGINT) + CAST(SUM(cost_picos % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(cost_picos % 4294967296) AS BIGINT) % 4294967296) END,
       SUM(errors), SUM(partial), SUM(estimated)
FROM usage_hourly
GROUP BY bucket_start_ms, model, provider;

INSERT INTO usage_daily_models
SELECT bucket_start_ms, model, provider, SUM(calls),
       CASE WHEN (CAST(SUM(input_uncached / 4294967296) AS BIGINT) + CAST(SUM(input_uncached % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(input_uncached / 4294967296) AS BIGINT) + CAST(SUM(input_uncached % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(input_uncached % 4294967296) AS BIGINT) % 4294967296) END,
       CASE WHEN (CAST(SUM(cache_read / 4294967296) AS BIGINT) + CAST(SUM(cache_read % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(cache_read / 4294967296) AS BIGINT) + CAST(SUM(cache_read % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(cache_read % 4294967296) AS BIGINT) % 4294967296) END,
       CASE WHEN (CAST(SUM(cache_write / 4294967296) AS BIGINT) + CAST(SUM(cache_write % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(cache_write / 4294967296) AS BIGINT) + CAST(SUM(cache_write % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(cache_write % 4294967296) AS BIGINT) % 4294967296) END,
       CASE WHEN (CAST(SUM(output / 4294967296) AS BIGINT) + CAST(SUM(output % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(output / 4294967296) AS BIGINT) + CAST(SUM(output % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(output % 4294967296) AS BIGINT) % 4294967296) END,
       CASE WHEN (CAST(SUM(reasoning / 4294967296) AS BIGINT) + CAST(SUM(reasoning % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(reasoning / 4294967296) AS BIGINT) + CAST(SUM(reasoning % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(reasoning % 4294967296) AS BIGINT) % 4294967296) END,
       CASE WHEN (CAST(SUM(cost_picos / 4294967296) AS BIGINT) + CAST(SUM(cost_picos % 4294967296) AS BIGINT) / 4294967296) >= 2147483648
            THEN 9223372036854775807
            ELSE (CAST(SUM(cost_picos / 4294967296) AS BIGINT) + CAST(SUM(cost_picos % 4294967296) AS BIGINT) / 4294967296) * 4294967296
                 + (CAST(SUM(cost_picos % 4294967296) AS BIGINT) % 4294967296) END,
       SUM(errors), SUM(partial), SUM(estimated)
FROM usage_daily
GROUP BY bucket_start_ms, model, provider;
