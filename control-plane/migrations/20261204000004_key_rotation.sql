-- Key expiry and rotation. Valid SQL for SQLite and PostgreSQL.
-- When the key stops working on its own, Unix ms; NULL: never.
ALTER TABLE virtual_keys ADD COLUMN expires_at_ms BIGINT;
-- After a rotation, the hash of the secret it replaced, which keeps working until
-- `previous_key_until_ms` so clients can move to the new one without an outage.
ALTER TABLE virtual_keys ADD COLUMN previous_key_hash TEXT;
ALTER TABLE virtual_keys ADD COLUMN previous_key_until_ms BIGINT;
-- A lookup by a presented secret checks both hashes; each must be unique on its own.
CREATE UNIQUE INDEX virtual_keys_previous_key_hash ON virtual_keys (previous_key_hash);
