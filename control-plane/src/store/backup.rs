//! A consistent snapshot of a SQLite store while it serves.

use super::{Backend, Store, StoreError};
use std::path::Path;

impl Store {
    /// Writes a consistent copy of the database to `path` (`VACUUM INTO`: one read
    /// transaction, so the copy is the database as of one instant while writers carry on);
    /// the file must not exist. SQLite only: PostgreSQL is copied with `pg_dump`.
    pub async fn backup_to(&self, path: &Path) -> Result<(), StoreError> {
        if self.backend != Backend::Sqlite {
            return Err(StoreError::BackupUnsupported);
        }
        if path.exists() {
            return Err(StoreError::BackupExists(path.display().to_string()));
        }
        let path = path
            .to_str()
            .ok_or_else(|| StoreError::BackupExists(path.display().to_string()))?;
        sqlx::query("VACUUM INTO $1")
            .bind(path)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEntry;

    #[tokio::test]
    async fn a_backup_is_a_store_with_the_same_rows() {
        let (dir, store) = crate::store::test_stores::sqlite().await;
        store
            .record_audit(&AuditEntry::cli("user.create", "root", 42))
            .await
            .unwrap();
        let copy = dir.path().join("backup.db");
        store.backup_to(&copy).await.unwrap();
        let e = store.backup_to(&copy).await.unwrap_err();
        assert!(matches!(e, StoreError::BackupExists(_)), "{e}");
        // The original keeps serving writes; the copy has what was there at the backup.
        store
            .record_audit(&AuditEntry::cli("user.create", "later", 43))
            .await
            .unwrap();
        let restored = Store::open(&format!("sqlite://{}", copy.display()))
            .await
            .unwrap();
        let entries = restored.list_audit(None, 10).await.unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].entry, AuditEntry::cli("user.create", "root", 42));
    }

    #[tokio::test]
    async fn postgres_is_backed_up_with_pg_dump() {
        let store = crate::store::test_stores::postgres().await;
        let dir = tempfile::tempdir().unwrap();
        let e = store.backup_to(&dir.path().join("b.db")).await.unwrap_err();
        assert!(e.to_string().contains("pg_dump"), "{e}");
    }
}
