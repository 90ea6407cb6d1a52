-- Issue 9: rate limits shared across Envoys. Each Envoy (holder) leases a share of a
-- subject's per-minute limit; the shares of a subject's leases never add up past it.
-- Valid SQL for SQLite and PostgreSQL: times as Unix ms, units per minute as BIGINT.

-- One row per limited (subject, measure): `assigned` is the sum of the shares of its
-- leases not yet reclaimed. The limit itself is resolved from the keys, users and config
-- at each ask, so a changed limit applies at once. Every change of a pool's leases starts
-- by writing its row: that row lock orders them, on PostgreSQL across replicas too.
CREATE TABLE share_pools (
    subject  TEXT NOT NULL,
    measure  TEXT NOT NULL,
    assigned BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (subject, measure)
);

-- A holder's share of a pool until expires_at_ms. A holder has at most one live lease
-- (expires_at_ms after now) per (subject, measure); an expired one stays, still counted
-- in `assigned`, until calls admitted under it have left every window, then is deleted
-- by the reclaim that gives its share back.
CREATE TABLE share_leases (
    lease_id      TEXT PRIMARY KEY,
    subject       TEXT NOT NULL,
    measure       TEXT NOT NULL,
    holder        TEXT NOT NULL,
    share         BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);

CREATE INDEX share_leases_by_holder ON share_leases (holder, subject, measure);
CREATE INDEX share_leases_by_expiry ON share_leases (expires_at_ms);
