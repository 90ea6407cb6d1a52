-- A key's own requests per minute. NULL: the config's `[limits]` default applies (which
-- may be none: unlimited); 0: every call refused. Valid SQL for SQLite and PostgreSQL.
ALTER TABLE virtual_keys ADD COLUMN requests_per_minute BIGINT;
