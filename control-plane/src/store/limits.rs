//! Rate limits in the store: a key's own (on `virtual_keys`), per (key, model), per user;
//! and what `Authorize` reads of them and of budgets in two queries.

use super::budgets::BudgetRow;
use super::{KeyRow, Store, StoreError, key_row, to_i64, unsigned};
use sqlx::Row;

/// A requests- and tokens-per-minute pair. `None`: not set here (see where it is used).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute.
    pub tokens_per_minute: Option<u64>,
}

impl Limits {
    /// Neither limit is set.
    pub fn is_empty(&self) -> bool {
        self.requests_per_minute.is_none() && self.tokens_per_minute.is_none()
    }

    fn read(row: &sqlx::any::AnyRow, rpm: &str, tpm: &str) -> Result<Self, StoreError> {
        Ok(Self {
            requests_per_minute: unsigned(row, rpm)?
                .map(|n| u32::try_from(n).map_err(|e| sqlx::Error::Decode(Box::new(e))))
                .transpose()?,
            tokens_per_minute: unsigned(row, tpm)?,
        })
    }

    fn tpm_i64(&self) -> Result<Option<i64>, StoreError> {
        self.tokens_per_minute
            .map(|n| to_i64("tokens_per_minute", n))
            .transpose()
    }
}

/// A key's limits for one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLimit {
    /// The model.
    pub model: String,
    /// Its limits for this key (`None`: none of that kind).
    pub limits: Limits,
}

/// Which of a key's secrets a lookup matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretMatch {
    /// The key's secret.
    Current,
    /// The secret a rotation replaced, which works until the key's `previous_until_ms`.
    Previous,
}

/// A key with its user's stored limits, as one lookup by hash returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGrantRow {
    /// The key.
    pub key: KeyRow,
    /// Which of its secrets was presented.
    pub secret: SecretMatch,
    /// Its user's own limits (`None` inside: the config's default).
    pub user_limits: Limits,
    /// Its user is a disabled account: the key is refused like a revoked one.
    pub owner_disabled: bool,
}

/// Changes to a key; `None`: unchanged, `Some(None)`: cleared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyUpdate {
    /// Its own requests per minute (cleared: the config's default).
    pub requests_per_minute: Option<Option<u32>>,
    /// Its own tokens per minute (cleared: the config's default).
    pub tokens_per_minute: Option<Option<u64>>,
    /// Its user (cleared: none).
    pub user: Option<Option<String>>,
    /// Its team (cleared: none).
    pub team: Option<Option<String>>,
    /// When it stops working, Unix ms (cleared: never).
    pub expires_at_ms: Option<Option<i64>>,
}

impl Store {
    /// The key whose secret, or whose secret before its last rotation, has this hash, with
    /// its user's limits: one query, for `Authorize`.
    pub async fn key_grant_by_hash(
        &self,
        key_hash: &str,
    ) -> Result<Option<KeyGrantRow>, StoreError> {
        let row = sqlx::query(
            "SELECT k.id, k.name, k.key_hash, k.key_prefix, k.models, k.created_at_ms, \
             k.revoked_at_ms, k.requests_per_minute, k.tokens_per_minute, k.user_name, k.team, \
             k.expires_at_ms, k.previous_key_until_ms, \
             u.requests_per_minute AS user_rpm, u.tokens_per_minute AS user_tpm, \
             CASE WHEN p.disabled_at_ms IS NULL THEN 0 ELSE 1 END AS owner_disabled \
             FROM virtual_keys k LEFT JOIN user_limits u ON u.user_name = k.user_name \
             LEFT JOIN users p ON p.name = k.user_name \
             WHERE k.key_hash = $1 OR k.previous_key_hash = $1",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let key = key_row(&r)?;
            let secret = if key.key_hash == key_hash {
                SecretMatch::Current
            } else {
                SecretMatch::Previous
            };
            Ok(KeyGrantRow {
                key,
                secret,
                user_limits: Limits::read(&r, "user_rpm", "user_tpm")?,
                owner_disabled: super::int(&r, "owner_disabled")? != 0,
            })
        })
        .transpose()
    }

    /// A key's per-model limits and the budgets of `subjects`.
    pub async fn model_limits_and_budgets(
        &self,
        key_id: &str,
        subjects: &[String],
    ) -> Result<(Vec<ModelLimit>, Vec<BudgetRow>), StoreError> {
        // Both in one round trip: UNION ALL of two row shapes, told apart by `kind`.
        let mut sql = String::from(
            "SELECT 'model' AS kind, model AS a, '' AS b, '' AS c, \
             requests_per_minute AS n1, tokens_per_minute AS n2 \
             FROM key_model_limits WHERE key_id = $1",
        );
        for i in 0..subjects.len() {
            if i == 0 {
                sql.push_str(
                    " UNION ALL SELECT 'budget', id, subject, period, limit_picos, NULL \
                     FROM budgets WHERE subject IN (",
                );
            } else {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", i + 2));
        }
        if !subjects.is_empty() {
            sql.push(')');
        }
        let mut query = sqlx::query(&sql).bind(key_id);
        for s in subjects {
            query = query.bind(s);
        }
        let mut models = Vec::new();
        let mut budgets = Vec::new();
        for row in query.fetch_all(&self.pool).await? {
            let kind: String = row.try_get("kind")?;
            if kind == "model" {
                models.push(ModelLimit {
                    model: row.try_get("a")?,
                    limits: Limits::read(&row, "n1", "n2")?,
                });
            } else {
                let period: String = row.try_get("c")?;
                budgets.push(BudgetRow {
                    id: row.try_get("a")?,
                    subject: row.try_get("b")?,
                    period: period
                        .parse()
                        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    limit_picos: unsigned(&row, "n1")?.unwrap_or(0),
                });
            }
        }
        models.sort_by(|a, b| a.model.cmp(&b.model));
        budgets.sort_by(|a, b| (&a.subject, a.period).cmp(&(&b.subject, b.period)));
        Ok((models, budgets))
    }

    /// Applies `update` to the key with this id; `false` if there is none.
    pub async fn update_key(&self, id: &str, update: &KeyUpdate) -> Result<bool, StoreError> {
        self.update_key_and_model_limits(id, update, &[]).await
    }

    /// Applies `update` and each per-model limit (both `None` removes it) to the key with
    /// this id, all or nothing; `false` if there is no such key.
    pub async fn update_key_and_model_limits(
        &self,
        id: &str,
        update: &KeyUpdate,
        model_limits: &[(String, Limits)],
    ) -> Result<bool, StoreError> {
        let tpm = update
            .tokens_per_minute
            .map(|t| t.map(|n| to_i64("tokens_per_minute", n)).transpose())
            .transpose()?;
        let mut tx = self.pool.begin().await?;
        let found = sqlx::query("SELECT id FROM virtual_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !found {
            return Ok(false);
        }
        let mut sets = Vec::new();
        if update.requests_per_minute.is_some() {
            sets.push("requests_per_minute");
        }
        if tpm.is_some() {
            sets.push("tokens_per_minute");
        }
        if update.user.is_some() {
            sets.push("user_name");
        }
        if update.team.is_some() {
            sets.push("team");
        }
        if update.expires_at_ms.is_some() {
            sets.push("expires_at_ms");
        }
        if !sets.is_empty() {
            let assignments: Vec<String> = sets
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c} = ${}", i + 2))
                .collect();
            let sql = format!(
                "UPDATE virtual_keys SET {} WHERE id = $1",
                assignments.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(id);
            if let Some(rpm) = update.requests_per_minute {
                query = query.bind(rpm.map(i64::from));
            }
            if let Some(tpm) = tpm {
                query = query.bind(tpm);
            }
            if let Some(user) = &update.user {
                query = query.bind(user.clone());
            }
            if let Some(team) = &update.team {
                query = query.bind(team.clone());
            }
            if let Some(expires_at_ms) = update.expires_at_ms {
                query = query.bind(expires_at_ms);
            }
            query.execute(&mut *tx).await?;
        }
        for (model, limits) in model_limits {
            if limits.is_empty() {
                sqlx::query("DELETE FROM key_model_limits WHERE key_id = $1 AND model = $2")
                    .bind(id)
                    .bind(model)
                    .execute(&mut *tx)
                    .await?;
                continue;
            }
            sqlx::query(
                "INSERT INTO key_model_limits (key_id, model, requests_per_minute, tokens_per_minute) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (key_id, model) DO UPDATE SET \
                 requests_per_minute = excluded.requests_per_minute, \
                 tokens_per_minute = excluded.tokens_per_minute",
            )
            .bind(id)
            .bind(model)
            .bind(limits.requests_per_minute.map(i64::from))
            .bind(limits.tpm_i64()?)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Sets a key's limits for one model; both `None` removes them.
    pub async fn set_key_model_limit(
        &self,
        key_id: &str,
        model: &str,
        limits: Limits,
    ) -> Result<(), StoreError> {
        self.update_key_and_model_limits(
            key_id,
            &KeyUpdate::default(),
            &[(model.to_owned(), limits)],
        )
        .await
        .map(|_| ())
    }

    /// Whether a key with this id exists, revoked or not.
    pub async fn key_exists(&self, id: &str) -> Result<bool, StoreError> {
        let found = sqlx::query("SELECT id FROM virtual_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// A user's own limits (both `None` when none are stored).
    pub async fn user_limits(&self, user: &str) -> Result<Limits, StoreError> {
        let row = sqlx::query(
            "SELECT requests_per_minute, tokens_per_minute FROM user_limits WHERE user_name = $1",
        )
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        row.map_or(Ok(Limits::default()), |r| {
            Limits::read(&r, "requests_per_minute", "tokens_per_minute")
        })
    }

    /// Sets a user's limits; both `None` removes them (the config's defaults apply).
    pub async fn set_user_limits(&self, user: &str, limits: Limits) -> Result<(), StoreError> {
        if limits.is_empty() {
            sqlx::query("DELETE FROM user_limits WHERE user_name = $1")
                .bind(user)
                .execute(&self.pool)
                .await?;
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO user_limits (user_name, requests_per_minute, tokens_per_minute) \
             VALUES ($1, $2, $3) ON CONFLICT (user_name) DO UPDATE SET \
             requests_per_minute = excluded.requests_per_minute, \
             tokens_per_minute = excluded.tokens_per_minute",
        )
        .bind(user)
        .bind(limits.requests_per_minute.map(i64::from))
        .bind(limits.tpm_i64()?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KeyRow;

    #[tokio::test]
    async fn a_key_update_that_fails_part_way_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        let row = KeyRow {
            id: "key_a".into(),
            name: "a".into(),
            key_hash: "00".into(),
            key_prefix: "tg-".into(),
            models: Vec::new(),
            created_at_ms: 0,
            revoked_at_ms: None,
            requests_per_minute: Some(1),
            tokens_per_minute: None,
            user: None,
            team: None,
            expires_at_ms: None,
            previous_until_ms: None,
        };
        store.insert_key(&row).await.unwrap();
        let update = KeyUpdate {
            requests_per_minute: Some(Some(5)),
            ..KeyUpdate::default()
        };
        let fine = Limits {
            requests_per_minute: Some(2),
            tokens_per_minute: None,
        };
        // A token limit the database cannot hold fails the last statement.
        let too_large = Limits {
            requests_per_minute: None,
            tokens_per_minute: Some(u64::MAX),
        };
        let models = [("m1".to_owned(), fine), ("m2".to_owned(), too_large)];
        assert!(
            store
                .update_key_and_model_limits("key_a", &update, &models)
                .await
                .is_err()
        );
        let keys = store.list_keys().await.unwrap();
        assert_eq!(keys[0].requests_per_minute, Some(1), "the key is unchanged");
        let (model_limits, _) = store.model_limits_and_budgets("key_a", &[]).await.unwrap();
        assert!(model_limits.is_empty(), "{model_limits:?}");

        assert!(
            store
                .update_key_and_model_limits("key_a", &update, &models[..1])
                .await
                .unwrap()
        );
        assert_eq!(
            store.list_keys().await.unwrap()[0].requests_per_minute,
            Some(5)
        );
    }
}
