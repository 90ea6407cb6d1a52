//! Key rotation in the store: a new secret hash in place of the old, which keeps working
//! for a grace period.

use super::{Store, StoreError};

/// A rotation to store: the new secret's hash and prefix, and until when the old one works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Hex SHA-256 of the secret this rotation replaces, as read before it: a rotation
    /// that lost a race to another finds it replaced already and changes nothing.
    pub replacing: String,
    /// Hex SHA-256 of the new secret.
    pub key_hash: String,
    /// First characters of the new secret.
    pub key_prefix: String,
    /// Until when the replaced secret still works, Unix ms; `None`: it stops at once.
    pub previous_until_ms: Option<i64>,
}

impl Store {
    /// Gives the active key `id` a new secret in place of `rotation.replacing`; `false` if
    /// no active key has that id and that secret. A secret an earlier rotation kept in
    /// grace stops working: only one old secret is kept.
    pub async fn rotate_key(&self, id: &str, rotation: &Rotation) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE virtual_keys SET \
             previous_key_hash = CASE WHEN $1 IS NULL THEN NULL ELSE key_hash END, \
             previous_key_until_ms = $1, key_hash = $2, key_prefix = $3 \
             WHERE id = $4 AND key_hash = $5 AND revoked_at_ms IS NULL",
        )
        .bind(rotation.previous_until_ms)
        .bind(&rotation.key_hash)
        .bind(&rotation.key_prefix)
        .bind(id)
        .bind(&rotation.replacing)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_stores;
    use crate::store::{KeyRow, SecretMatch};

    fn key() -> KeyRow {
        KeyRow {
            id: format!("key_{}", hex::encode(rand::random::<[u8; 6]>())),
            name: "rotating".into(),
            key_hash: hex::encode(rand::random::<[u8; 32]>()),
            key_prefix: "tg-old".into(),
            models: Vec::new(),
            created_at_ms: 1,
            revoked_at_ms: None,
            requests_per_minute: None,
            tokens_per_minute: None,
            user: None,
            team: None,
            expires_at_ms: Some(5_000),
            previous_until_ms: None,
        }
    }

    fn rotation(replacing: &str, until: Option<i64>) -> Rotation {
        Rotation {
            replacing: replacing.to_owned(),
            key_hash: hex::encode(rand::random::<[u8; 32]>()),
            key_prefix: "tg-new".into(),
            previous_until_ms: until,
        }
    }

    async fn exercise(store: &Store) {
        let old = key();
        store.insert_key(&old).await.unwrap();
        let first = rotation(&old.key_hash, Some(1_000));
        assert!(store.rotate_key(&old.id, &first).await.unwrap());

        let by_new = store
            .key_grant_by_hash(&first.key_hash)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_new.secret, SecretMatch::Current);
        assert_eq!(by_new.key.id, old.id);
        assert_eq!(by_new.key.key_prefix, "tg-new");
        assert_eq!(by_new.key.previous_until_ms, Some(1_000));
        assert_eq!(
            by_new.key.expires_at_ms,
            Some(5_000),
            "rotation keeps the expiry"
        );
        let by_old = store
            .key_grant_by_hash(&old.key_hash)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_old.secret, SecretMatch::Previous);
        assert_eq!(by_old.key.id, old.id);

        // A second rotation keeps only the secret it replaces.
        let second = rotation(&first.key_hash, None);
        assert!(store.rotate_key(&old.id, &second).await.unwrap());
        assert!(
            store
                .key_grant_by_hash(&old.key_hash)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .key_grant_by_hash(&first.key_hash)
                .await
                .unwrap()
                .is_none(),
            "a rotation without grace keeps no old secret"
        );
        assert_eq!(
            store
                .key_grant_by_hash(&second.key_hash)
                .await
                .unwrap()
                .unwrap()
                .key
                .previous_until_ms,
            None
        );

        assert!(store.revoke_key(&old.id, 10).await.unwrap());
        assert!(
            !store
                .rotate_key(&old.id, &rotation(&second.key_hash, Some(1)))
                .await
                .unwrap(),
            "revoked: no rotation"
        );
        assert!(
            !store
                .rotate_key("key_missing", &rotation(&second.key_hash, None))
                .await
                .unwrap()
        );
    }

    /// Two rotations that both read the same secret: the second to land would otherwise
    /// push the first one's new secret out (at once with no grace), though its caller was
    /// told it works.
    async fn racing_rotations(store: &Store) {
        let key = key();
        store.insert_key(&key).await.unwrap();
        let first = rotation(&key.key_hash, None);
        let late = rotation(&key.key_hash, None);
        assert!(store.rotate_key(&key.id, &first).await.unwrap());
        assert!(
            !store.rotate_key(&key.id, &late).await.unwrap(),
            "a rotation of a secret already replaced is refused"
        );
        let by_first = store
            .key_grant_by_hash(&first.key_hash)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_first.secret, SecretMatch::Current);
        assert!(
            store
                .key_grant_by_hash(&late.key_hash)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_rotation_racing_another_is_refused_on_sqlite() {
        let (_dir, store) = test_stores::sqlite().await;
        racing_rotations(&store).await;
    }

    #[tokio::test]
    async fn a_rotation_racing_another_is_refused_on_postgres() {
        racing_rotations(&test_stores::postgres().await).await;
    }

    #[tokio::test]
    async fn a_rotated_key_answers_to_both_secrets_on_sqlite() {
        let (_dir, store) = test_stores::sqlite().await;
        exercise(&store).await;
    }

    #[tokio::test]
    async fn a_rotated_key_answers_to_both_secrets_on_postgres() {
        exercise(&test_stores::postgres().await).await;
    }
}
