//! The audit log in the store, read newest first in keyset pages.

use super::{Store, StoreError};
use crate::audit::{AuditEntry, AuditRecord};
use sqlx::Row;

impl Store {
    /// Appends an entry; returns its id.
    pub async fn record_audit(&self, entry: &AuditEntry) -> Result<String, StoreError> {
        let id = format!("aud_{}", hex::encode(rand::random::<[u8; 8]>()));
        sqlx::query(
            "INSERT INTO audit_log (id, at_ms, actor, action, target, from_addr) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(entry.at_ms)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.target)
        .bind(&entry.from)
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// Up to `limit` entries, newest first, older than the entry at `before` (its `at_ms`
    /// and id) if given.
    pub async fn list_audit(
        &self,
        before: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        // Without a cursor, start past every entry: i64::MAX sorts after any time.
        let (at_ms, id) = before.unwrap_or((i64::MAX, ""));
        let rows = sqlx::query(
            "SELECT id, at_ms, actor, action, target, from_addr FROM audit_log \
             WHERE at_ms < $1 OR (at_ms = $1 AND id < $2) \
             ORDER BY at_ms DESC, id DESC LIMIT $3",
        )
        .bind(at_ms)
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditRecord {
                    id: row.try_get("id")?,
                    entry: AuditEntry {
                        actor: row.try_get("actor")?,
                        action: row.try_get("action")?,
                        target: row.try_get("target")?,
                        from: row.try_get("from_addr")?,
                        at_ms: row.try_get("at_ms")?,
                    },
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_stores::{postgres, sqlite};

    async fn pages_newest_first(store: &Store) {
        // A time no other test's entries share, so the pages hold only these.
        let base = i64::from(rand::random::<u32>()) * 1_000_000 + 1_000_000_000_000_000;
        let actor = format!("t{}", hex::encode(rand::random::<[u8; 4]>()));
        let mut ids = Vec::new();
        for (i, at) in [base, base + 1, base + 1, base + 2].into_iter().enumerate() {
            let entry = AuditEntry {
                actor: actor.clone(),
                action: "user.create".into(),
                target: format!("u{i}"),
                from: "127.0.0.1".into(),
                at_ms: at,
            };
            ids.push((at, store.record_audit(&entry).await.unwrap()));
        }
        let first = store.list_audit(Some((base + 3, "")), 2).await.unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].entry.target, "u3");
        assert_eq!(first[0].entry.actor, actor);
        assert_eq!(first[0].entry.from, "127.0.0.1");
        let last = &first[1];
        let rest = store
            .list_audit(Some((last.entry.at_ms, &last.id)), 10)
            .await
            .unwrap();
        let mine: Vec<&AuditRecord> = rest.iter().filter(|r| r.entry.actor == actor).collect();
        assert_eq!(
            mine.len(),
            2,
            "the two older entries, none repeated: {rest:?}"
        );
        let mut seen: Vec<&str> = first
            .iter()
            .chain(mine.iter().copied())
            .map(|r| r.id.as_str())
            .collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 4, "every entry once across the pages");
        assert_eq!(mine[1].entry.target, "u0");
    }

    #[tokio::test]
    async fn sqlite_audit_pages() {
        let (_dir, store) = sqlite().await;
        pages_newest_first(&store).await;
        // Without a cursor the newest entry comes first.
        let newest = store.list_audit(None, 1).await.unwrap();
        assert_eq!(newest[0].entry.target, "u3");
    }

    #[tokio::test]
    async fn postgres_audit_pages() {
        pages_newest_first(&postgres().await).await;
    }
}
