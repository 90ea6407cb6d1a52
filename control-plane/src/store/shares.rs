//! Rate-limit shares in the store: each limited (subject, measure)'s pool of assigned
//! units, the holders' leases of it, and reclaim of expired leases.
//!
//! Every transaction on a pool starts by writing its row, so the database orders them:
//! PostgreSQL holds the row lock to the commit (a waiting transaction's later statements
//! then read what the first committed), and SQLite has one writer. Within that order the
//! ask is decided from what was read ([`crate::shares::decide`]), so two replicas never
//! assign more than the limit, and a holder never gets two leases of one pool.
//! Transactions take the pool row before lease rows, so grants and reclaims never
//! deadlock.

use super::budgets::{floor_sub, money};
use super::{Store, StoreError, to_i64};
use crate::shares::{Grant, ShareAsk, decide};
use sqlx::{AnyConnection, Row};
use tollgate_core::limits::Measure;

/// A `LeaseShare` ask with the subject's limit resolved, validated by the caller.
#[derive(Debug, Clone, Copy)]
pub struct PoolAsk<'a> {
    /// The limited subject, e.g. `user:alice`.
    pub subject: &'a str,
    /// What is limited.
    pub measure: Measure,
    /// The Envoy asking.
    pub holder: &'a str,
    /// The subject's limit per minute now.
    pub limit: u64,
    /// Want, need and release.
    pub ask: ShareAsk,
    /// The lease the release comes off; `None`: the live one.
    pub releasing: Option<&'a str>,
    /// Now, Unix ms.
    pub now_ms: i64,
    /// How long from now the lease may admit calls.
    pub ttl_ms: i64,
}

/// The holder's lease after an ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareLease {
    /// Whether anything was added.
    pub grant: Grant,
    /// The live lease; empty when the holder has none (nothing granted, none before).
    pub lease_id: String,
    /// Taken off the lease before the grant.
    pub released: u64,
    /// The lease's share after the ask.
    pub share: u64,
    /// Until when the lease admits calls, Unix ms; 0 when there is no lease.
    pub expires_at_ms: i64,
    /// Units of the limit no lease holds after the ask.
    pub available: u64,
}

/// An expired lease deleted by reclaim, and the share it gave back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReclaimedShare {
    /// The lease.
    pub lease_id: String,
    /// Its subject.
    pub subject: String,
    /// Its measure's name.
    pub measure: String,
    /// The Envoy that held it.
    pub holder: String,
    /// Units back in the pool.
    pub returned: u64,
}

/// A lease as stored, for inspection and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredShare {
    /// Its id.
    pub lease_id: String,
    /// The Envoy holding it.
    pub holder: String,
    /// Units per minute.
    pub share: u64,
    /// Until when it admits calls, Unix ms.
    pub expires_at_ms: i64,
}

/// Writes the pool's row (creating it at 0), taking its lock: every pool transaction's
/// first statement. Returns its assigned units.
async fn lock_pool(
    conn: &mut AnyConnection,
    subject: &str,
    measure: &str,
) -> Result<u64, StoreError> {
    let row = sqlx::query(
        "INSERT INTO share_pools (subject, measure) VALUES ($1, $2) \
         ON CONFLICT (subject, measure) DO UPDATE SET assigned = share_pools.assigned \
         RETURNING assigned",
    )
    .bind(subject)
    .bind(measure)
    .fetch_one(conn)
    .await?;
    money(&row, "assigned")
}

impl Store {
    /// Applies a holder's ask to a pool in one transaction: its release, then a grant
    /// between need and want or nothing, extending its lease (live, or lapsed and not yet
    /// reclaimed), or opening one when something is granted and it has none.
    pub async fn lease_share(&self, ask: PoolAsk<'_>) -> Result<ShareLease, StoreError> {
        let measure = ask.measure.name();
        let mut tx = self.pool.begin().await?;
        let assigned = lock_pool(&mut tx, ask.subject, measure).await?;
        // The holder's lease, live or lapsed but not yet reclaimed: a lapsed one is revived
        // with its share rather than replaced. Its share is still assigned, and what the
        // holder admitted under it is still in its window; a new lease would have to be
        // granted that count again, so an Envoy whose lease lapsed (control plane
        // unreachable for a while, idle past its expiry) was refused until the reclaim.
        let lease = sqlx::query(
            "SELECT lease_id, share, expires_at_ms FROM share_leases \
             WHERE holder = $1 AND subject = $2 AND measure = $3 \
             ORDER BY expires_at_ms DESC LIMIT 1",
        )
        .bind(ask.holder)
        .bind(ask.subject)
        .bind(measure)
        .fetch_optional(&mut *tx)
        .await?;
        let held = lease.as_ref().map(|r| money(r, "share")).transpose()?;
        let held_id: Option<String> = lease.as_ref().map(|r| r.try_get("lease_id")).transpose()?;
        let mut share_ask = ask.ask;
        if ask
            .releasing
            .is_some_and(|named| held_id.as_deref() != Some(named))
        {
            // Meant for a lease reclaimed on its way: off this one, the holder (which took
            // it off the old one) would believe in more share than is counted here.
            share_ask.release = 0;
        }
        let decision = decide(ask.limit, assigned, held.unwrap_or(0), share_ask);
        let renewed_until = ask.now_ms.saturating_add(ask.ttl_ms);
        let (lease_id, expires_at_ms) = match &lease {
            Some(row) => {
                let id: String = row.try_get("lease_id")?;
                // Never shortened: a replica with a shorter ttl must not cut a lease short.
                let expires = renewed_until.max(row.try_get("expires_at_ms")?);
                sqlx::query(
                    "UPDATE share_leases SET share = $1, expires_at_ms = $2 WHERE lease_id = $3",
                )
                .bind(to_i64("share", decision.share)?)
                .bind(expires)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                (id, expires)
            }
            None if decision.share > 0 => {
                let id = format!("share_{}", hex::encode(rand::random::<[u8; 12]>()));
                sqlx::query(
                    "INSERT INTO share_leases \
                     (lease_id, subject, measure, holder, share, expires_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&id)
                .bind(ask.subject)
                .bind(measure)
                .bind(ask.holder)
                .bind(to_i64("share", decision.share)?)
                .bind(renewed_until)
                .execute(&mut *tx)
                .await?;
                (id, renewed_until)
            }
            None => (String::new(), 0),
        };
        if decision.assigned != assigned {
            sqlx::query("UPDATE share_pools SET assigned = $1 WHERE subject = $2 AND measure = $3")
                .bind(to_i64("assigned", decision.assigned)?)
                .bind(ask.subject)
                .bind(measure)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(ShareLease {
            grant: decision.grant,
            lease_id,
            released: decision.released,
            share: decision.share,
            expires_at_ms,
            available: decision.available,
        })
    }

    /// Deletes every lease that expired before `cutoff_ms` and gives its share back to
    /// its pool. Each lease is deleted by exactly one caller, however many replicas sweep
    /// at once; a lease renewed meanwhile is live again and kept.
    pub async fn reclaim_expired_shares(
        &self,
        cutoff_ms: i64,
    ) -> Result<Vec<ReclaimedShare>, StoreError> {
        let candidates = sqlx::query(
            "SELECT lease_id, subject, measure FROM share_leases WHERE expires_at_ms < $1 \
             ORDER BY expires_at_ms, lease_id LIMIT 1000",
        )
        .bind(cutoff_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut reclaimed = Vec::new();
        for candidate in candidates {
            let lease_id: String = candidate.try_get("lease_id")?;
            let subject: String = candidate.try_get("subject")?;
            let measure: String = candidate.try_get("measure")?;
            let mut tx = self.pool.begin().await?;
            lock_pool(&mut tx, &subject, &measure).await?;
            let deleted = sqlx::query(
                "DELETE FROM share_leases WHERE lease_id = $1 AND expires_at_ms < $2 \
                 RETURNING holder, share",
            )
            .bind(&lease_id)
            .bind(cutoff_ms)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(deleted) = deleted else {
                // Another replica reclaimed it first.
                tx.rollback().await?;
                continue;
            };
            let returned = money(&deleted, "share")?;
            sqlx::query(&format!(
                "UPDATE share_pools SET assigned = {} WHERE subject = $2 AND measure = $3",
                floor_sub("assigned", "$1")
            ))
            .bind(to_i64("share", returned)?)
            .bind(&subject)
            .bind(&measure)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            reclaimed.push(ReclaimedShare {
                lease_id,
                subject,
                measure,
                holder: deleted.try_get("holder")?,
                returned,
            });
        }
        Ok(reclaimed)
    }

    /// A pool's assigned units (0 when it has none), for inspection and tests.
    pub async fn share_assigned(&self, subject: &str, measure: Measure) -> Result<u64, StoreError> {
        let row =
            sqlx::query("SELECT assigned FROM share_pools WHERE subject = $1 AND measure = $2")
                .bind(subject)
                .bind(measure.name())
                .fetch_optional(&self.pool)
                .await?;
        row.map_or(Ok(0), |r| money(&r, "assigned"))
    }

    /// Every stored lease of a pool, live or awaiting reclaim, by holder and expiry.
    pub async fn share_leases(
        &self,
        subject: &str,
        measure: Measure,
    ) -> Result<Vec<StoredShare>, StoreError> {
        let rows = sqlx::query(
            "SELECT lease_id, holder, share, expires_at_ms FROM share_leases \
             WHERE subject = $1 AND measure = $2 ORDER BY holder, expires_at_ms, lease_id",
        )
        .bind(subject)
        .bind(measure.name())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredShare {
                    lease_id: r.try_get("lease_id")?,
                    holder: r.try_get("holder")?,
                    share: money(r, "share")?,
                    expires_at_ms: r.try_get("expires_at_ms")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
