//! The catalog's stored part: providers (keys sealed), models and their prices over time,
//! as added through the HTTP API. Every change bumps `catalog_version` in its transaction,
//! so a replica can tell its copy is stale by one read.

use super::{Store, StoreError, to_i64, unsigned};
use crate::secrets::SealedSecret;
use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_core::pricing::Price;

/// A stored provider; its key only sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRecord {
    /// Name; also its Envoy cluster.
    pub name: String,
    /// The API it speaks (tollgate-core `ProviderKind` name).
    pub kind: String,
    /// Where it is reached, e.g. `https://api.openai.com`.
    pub base_url: String,
    /// Header carrying its key.
    pub auth_header: String,
    /// `bearer` or `raw`.
    pub auth_scheme: String,
    /// Longest whole answer, ms.
    pub timeout_ms: u32,
    /// Client headers passed on beyond the gateway's allow-list.
    pub forward_headers: Vec<String>,
    /// Responses `background: true` allowed.
    pub allow_background: bool,
    /// Its key, sealed; `None`: calls carry no credential.
    pub key: Option<SealedSecret>,
    /// Created, Unix ms.
    pub created_at_ms: i64,
    /// Last changed, Unix ms.
    pub updated_at_ms: i64,
}

/// A stored model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRecord {
    /// Name clients use.
    pub name: String,
    /// Provider serving it (stored or the config file's).
    pub provider: String,
    /// The provider's name for it, when different.
    pub upstream_model: Option<String>,
    /// Its own output cap; `None`: the config's default.
    pub max_output_tokens: Option<u64>,
    /// Created, Unix ms.
    pub created_at_ms: i64,
}

/// A model's price from an instant on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceRecord<'a> {
    /// The model.
    pub model: &'a str,
    /// From when, Unix ms.
    pub effective_from_ms: i64,
    /// The price, micro-dollars per million tokens.
    pub price: Price,
    /// When it was added, Unix ms.
    pub created_at_ms: i64,
}

/// A stored price, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPrice {
    /// The model.
    pub model: String,
    /// From when, Unix ms.
    pub effective_from_ms: i64,
    /// The price.
    pub price: Price,
    /// When it was added, Unix ms.
    pub created_at_ms: i64,
}

/// Everything of the catalog the store holds, read in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredCatalog {
    /// `catalog_version` when read.
    pub version: i64,
    /// Providers, by name.
    pub providers: Vec<ProviderRecord>,
    /// Models, by name.
    pub models: Vec<ModelRecord>,
    /// Prices of stored models and of removed ones, by model then instant.
    pub prices: Vec<StoredPrice>,
}

/// Why a provider was not removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderRemoval {
    /// Removed.
    Removed,
    /// No stored provider has that name.
    NotFound,
    /// Stored models still name it.
    InUse(Vec<String>),
}

/// A provider key moved to another master key: `name`'s key, wrapped by `from_master_id`.
#[derive(Debug, Clone)]
pub struct Rewrapped {
    /// The provider.
    pub name: String,
    /// The master key id the row must still hold (else it changed meanwhile).
    pub from_master_id: String,
    /// The key as re-wrapped.
    pub key: SealedSecret,
}

const PROVIDER_COLUMNS: &str = "name, kind, base_url, auth_header, auth_scheme, timeout_ms, \
     forward_headers, allow_background, key_ciphertext, key_nonce, key_wrapped, key_master_id, \
     key_fingerprint, created_at_ms, updated_at_ms";

const BUMP_VERSION: &str = "UPDATE catalog_version SET version = version + 1 WHERE id = 1";

impl Store {
    /// Everything of the catalog the store holds, as of one instant.
    pub async fn stored_catalog(&self) -> Result<StoredCatalog, StoreError> {
        let mut tx = self.pool.begin().await?;
        let version = sqlx::query("SELECT version FROM catalog_version WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?
            .try_get("version")?;
        let providers = sqlx::query(&format!(
            "SELECT {PROVIDER_COLUMNS} FROM providers ORDER BY name"
        ))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(provider_record)
        .collect::<Result<_, _>>()?;
        let models = sqlx::query(
            "SELECT name, provider, upstream_model, max_output_tokens, created_at_ms \
             FROM models ORDER BY name",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(model_record)
        .collect::<Result<_, _>>()?;
        let prices = sqlx::query(
            "SELECT model, effective_from_ms, input, output, cache_read, cache_write, \
             created_at_ms FROM model_prices ORDER BY model, effective_from_ms",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(stored_price)
        .collect::<Result<_, _>>()?;
        tx.commit().await?;
        Ok(StoredCatalog {
            version,
            providers,
            models,
            prices,
        })
    }

    /// The catalog's change count: differs from a [`StoredCatalog::version`] once anything
    /// changed since it was read.
    pub async fn catalog_version(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query("SELECT version FROM catalog_version WHERE id = 1")
                .fetch_one(&self.pool)
                .await?
                .try_get("version")?,
        )
    }

    /// The stored provider named `name`.
    pub async fn provider(&self, name: &str) -> Result<Option<ProviderRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {PROVIDER_COLUMNS} FROM providers WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(provider_record).transpose()
    }

    /// Stores a new provider; `false` if one has its name.
    pub async fn insert_provider(&self, p: &ProviderRecord) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let key = p.key.as_ref();
        let done = sqlx::query(&format!(
            "INSERT INTO providers ({PROVIDER_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (name) DO NOTHING"
        ))
        .bind(&p.name)
        .bind(&p.kind)
        .bind(&p.base_url)
        .bind(&p.auth_header)
        .bind(&p.auth_scheme)
        .bind(i64::from(p.timeout_ms))
        .bind(p.forward_headers.join(","))
        .bind(i64::from(p.allow_background))
        .bind(key.map(|k| k.ciphertext.clone()))
        .bind(key.map(|k| k.nonce.clone()))
        .bind(key.map(|k| k.wrapped_key.clone()))
        .bind(key.map(|k| k.master_key_id.clone()))
        .bind(key.map(|k| k.fingerprint.clone()))
        .bind(p.created_at_ms)
        .bind(p.updated_at_ms)
        .execute(&mut *tx)
        .await?;
        finish(tx, done.rows_affected() == 1).await
    }

    /// Replaces the stored provider named `p.name` (its creation time kept); `false` if
    /// there is none.
    pub async fn update_provider(&self, p: &ProviderRecord) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let key = p.key.as_ref();
        let done = sqlx::query(
            "UPDATE providers SET kind = $2, base_url = $3, auth_header = $4, auth_scheme = $5, \
             timeout_ms = $6, forward_headers = $7, allow_background = $8, key_ciphertext = $9, \
             key_nonce = $10, key_wrapped = $11, key_master_id = $12, key_fingerprint = $13, \
             updated_at_ms = $14 WHERE name = $1",
        )
        .bind(&p.name)
        .bind(&p.kind)
        .bind(&p.base_url)
        .bind(&p.auth_header)
        .bind(&p.auth_scheme)
        .bind(i64::from(p.timeout_ms))
        .bind(p.forward_headers.join(","))
        .bind(i64::from(p.allow_background))
        .bind(key.map(|k| k.ciphertext.clone()))
        .bind(key.map(|k| k.nonce.clone()))
        .bind(key.map(|k| k.wrapped_key.clone()))
        .bind(key.map(|k| k.master_key_id.clone()))
        .bind(key.map(|k| k.fingerprint.clone()))
        .bind(p.updated_at_ms)
        .execute(&mut *tx)
        .await?;
        finish(tx, done.rows_affected() == 1).await
    }

    /// Removes the stored provider `name`, unless a stored model still names it.
    pub async fn delete_provider(&self, name: &str) -> Result<ProviderRemoval, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The write first: a SQLite transaction that reads and then writes fails when
        // another connection wrote in between.
        let done = sqlx::query(
            "DELETE FROM providers WHERE name = $1 \
             AND NOT EXISTS (SELECT 1 FROM models WHERE provider = $1)",
        )
        .bind(name)
        .execute(&mut *tx)
        .await?;
        if finish(tx, done.rows_affected() == 1).await? {
            return Ok(ProviderRemoval::Removed);
        }
        let users: Vec<String> =
            sqlx::query("SELECT name FROM models WHERE provider = $1 ORDER BY name")
                .bind(name)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|row| row.try_get("name"))
                .collect::<Result<_, _>>()?;
        if users.is_empty() {
            Ok(ProviderRemoval::NotFound)
        } else {
            Ok(ProviderRemoval::InUse(users))
        }
    }

    /// Stores a new model with its first price; `false` (nothing stored) if a model has
    /// its name.
    pub async fn insert_model(
        &self,
        m: &ModelRecord,
        first_price: &PriceRecord<'_>,
    ) -> Result<bool, StoreError> {
        let cap = m
            .max_output_tokens
            .map(|n| to_i64("max_output_tokens", n))
            .transpose()?;
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "INSERT INTO models (name, provider, upstream_model, max_output_tokens, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&m.name)
        .bind(&m.provider)
        .bind(m.upstream_model.clone())
        .bind(cap)
        .bind(m.created_at_ms)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        // A model of that name removed earlier left its prices: the new one starts afresh
        // from its first price on, and keeps the old ones before it for calls made then.
        sqlx::query("DELETE FROM model_prices WHERE model = $1 AND effective_from_ms >= $2")
            .bind(&m.name)
            .bind(first_price.effective_from_ms)
            .execute(&mut *tx)
            .await?;
        insert_price(&mut tx, first_price).await?;
        sqlx::query(BUMP_VERSION).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Removes the stored model `name`, keeping its prices (calls made before are still
    /// priced); `false` if there is none.
    pub async fn delete_model(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM models WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        finish(tx, done.rows_affected() == 1).await
    }

    /// Adds a price to a stored model; `false` (nothing stored) if the model is not
    /// stored or already has a price from that instant.
    pub async fn insert_price(&self, p: &PriceRecord<'_>) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The write first (see `delete_provider`), undone if the model is not stored.
        if !insert_price(&mut tx, p).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        let exists = sqlx::query("SELECT name FROM models WHERE name = $1")
            .bind(p.model)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        finish(tx, exists).await
    }

    /// Every provider key as stored, with its provider's name, for a master-key rotation.
    pub async fn sealed_provider_keys(&self) -> Result<Vec<(String, SealedSecret)>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {PROVIDER_COLUMNS} FROM providers WHERE key_master_id IS NOT NULL ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in &rows {
            let record = provider_record(row)?;
            if let Some(key) = record.key {
                keys.push((record.name, key));
            }
        }
        Ok(keys)
    }

    /// Replaces the wrapped data keys of `moved` in one transaction: all or none. `false`
    /// (nothing changed) if any row no longer holds the key it was read with.
    pub async fn rewrap_provider_keys(&self, moved: &[Rewrapped]) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        for m in moved {
            let done = sqlx::query(
                "UPDATE providers SET key_wrapped = $1, key_master_id = $2 \
                 WHERE name = $3 AND key_master_id = $4 AND key_ciphertext = $5",
            )
            .bind(&m.key.wrapped_key)
            .bind(&m.key.master_key_id)
            .bind(&m.name)
            .bind(&m.from_master_id)
            .bind(&m.key.ciphertext)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
        }
        if !moved.is_empty() {
            sqlx::query(BUMP_VERSION).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

/// Commits `tx` with the catalog's change count bumped when `changed`, else rolls it back
/// (at once: a dropped transaction would hold SQLite's write lock until its connection's
/// next use); returns `changed`.
async fn finish(
    mut tx: sqlx::Transaction<'_, sqlx::Any>,
    changed: bool,
) -> Result<bool, StoreError> {
    if changed {
        sqlx::query(BUMP_VERSION).execute(&mut *tx).await?;
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(changed)
}

/// Inserts a price unless its model has one from that instant; whether it did.
async fn insert_price(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    p: &PriceRecord<'_>,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO model_prices \
         (model, effective_from_ms, input, output, cache_read, cache_write, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (model, effective_from_ms) DO NOTHING",
    )
    .bind(p.model)
    .bind(p.effective_from_ms)
    .bind(to_i64("input", p.price.input)?)
    .bind(to_i64("output", p.price.output)?)
    .bind(to_i64("cache_read", p.price.cache_read)?)
    .bind(to_i64("cache_write", p.price.cache_write)?)
    .bind(p.created_at_ms)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

fn provider_record(row: &AnyRow) -> Result<ProviderRecord, StoreError> {
    let forward: String = row.try_get("forward_headers")?;
    let timeout_ms: i64 = row.try_get("timeout_ms")?;
    let key = match (
        row.try_get::<Option<String>, _>("key_ciphertext")?,
        row.try_get::<Option<String>, _>("key_nonce")?,
        row.try_get::<Option<String>, _>("key_wrapped")?,
        row.try_get::<Option<String>, _>("key_master_id")?,
        row.try_get::<Option<String>, _>("key_fingerprint")?,
    ) {
        (
            Some(ciphertext),
            Some(nonce),
            Some(wrapped_key),
            Some(master_key_id),
            Some(fingerprint),
        ) => Some(SealedSecret {
            ciphertext,
            nonce,
            wrapped_key,
            master_key_id,
            fingerprint,
        }),
        _ => None,
    };
    Ok(ProviderRecord {
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        base_url: row.try_get("base_url")?,
        auth_header: row.try_get("auth_header")?,
        auth_scheme: row.try_get("auth_scheme")?,
        timeout_ms: u32::try_from(timeout_ms).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        forward_headers: forward
            .split(',')
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect(),
        allow_background: row.try_get::<i64, _>("allow_background")? != 0,
        key,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

fn model_record(row: &AnyRow) -> Result<ModelRecord, StoreError> {
    Ok(ModelRecord {
        name: row.try_get("name")?,
        provider: row.try_get("provider")?,
        upstream_model: row.try_get("upstream_model")?,
        max_output_tokens: unsigned(row, "max_output_tokens")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

fn stored_price(row: &AnyRow) -> Result<StoredPrice, StoreError> {
    let micros =
        |column: &str| -> Result<u64, StoreError> { Ok(unsigned(row, column)?.unwrap_or(0)) };
    Ok(StoredPrice {
        model: row.try_get("model")?,
        effective_from_ms: row.try_get("effective_from_ms")?,
        price: Price {
            input: micros("input")?,
            output: micros("output")?,
            cache_read: micros("cache_read")?,
            cache_write: micros("cache_write")?,
        },
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

#[cfg(test)]
mod tests;
