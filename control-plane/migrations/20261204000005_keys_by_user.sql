-- Members list their own keys through the API: by user, not by a scan of every key.
CREATE INDEX virtual_keys_user_name ON virtual_keys (user_name);
