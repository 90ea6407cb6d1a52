//! Persistence: virtual keys, usage records, people and the audit log, in SQLite (embedded default) or PostgreSQL.
//!
//! One set of queries serves both through sqlx's `Any` driver: placeholders are `$N`,
//! which both accept, and the schema uses only types both share (times are Unix ms).

mod audit;
mod backup;
mod budgets;
mod catalog;
mod key_rotation;
mod limits;
mod people;
mod rollups;
mod shares;
mod teams;
mod usage_reports;

pub use budgets::{BudgetRow, BudgetSet, BudgetStatus, Lease, LeaseAsk, LeaseOutcome, Reclaimed};
pub use catalog::{
    ModelRecord, PriceRecord, ProviderRecord, ProviderRemoval, Rewrapped, StoredCatalog,
    StoredPrice,
};
pub use key_rotation::Rotation;
pub use limits::{KeyGrantRow, KeyUpdate, Limits, ModelLimit, SecretMatch};
pub use people::{SessionRow, UserRow};
pub use shares::{PoolAsk, ReclaimedShare, ShareLease, StoredShare};
pub use teams::TeamRow;
pub use usage_reports::{CallsPage, UsageSums};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row};
use std::time::Duration;
use thiserror::Error;

/// A store failure.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database refused or failed a query.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The SQLite file's folder could not be created.
    #[error("cannot create the data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    /// `tollgate backup` on PostgreSQL.
    #[error("backup copies SQLite only; back PostgreSQL up with pg_dump (see README)")]
    BackupUnsupported,
    /// The backup's file exists (or its path is not UTF-8).
    #[error("will not overwrite {0}: give a new file")]
    BackupExists(String),
    /// A number is larger than the store's signed 64-bit columns hold.
    #[error(
        "{field} is {value}, more than the largest value stored ({})",
        i64::MAX
    )]
    OutOfRange {
        /// What the number is.
        field: &'static str,
        /// The value refused.
        value: u64,
    },
}

/// `value` as the store's i64, or [`StoreError::OutOfRange`] naming `field`.
pub(crate) fn to_i64(field: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { field, value })
}

/// A virtual key as stored (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// Stable id, e.g. `key_3f2a…`.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Hex SHA-256 of the secret.
    pub key_hash: String,
    /// First characters of the secret.
    pub key_prefix: String,
    /// Allow-listed models; empty means all.
    pub models: Vec<String>,
    /// Creation time, Unix ms.
    pub created_at_ms: i64,
    /// Revocation time, Unix ms, if revoked.
    pub revoked_at_ms: Option<i64>,
    /// The key's own requests per minute; `None`: the config's default.
    pub requests_per_minute: Option<u32>,
    /// The key's own tokens per minute; `None`: the config's default.
    pub tokens_per_minute: Option<u64>,
    /// The user the key belongs to, if any.
    pub user: Option<String>,
    /// The team the key belongs to, if any.
    pub team: Option<String>,
    /// When the key stops working on its own, Unix ms; `None`: never.
    pub expires_at_ms: Option<i64>,
    /// After a rotation, until when the replaced secret still works, Unix ms.
    pub previous_until_ms: Option<i64>,
}

/// One call's usage and cost as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsageRow {
    /// The filter's request id.
    pub request_id: String,
    /// The key that made the call.
    pub key_id: String,
    /// Model asked for.
    pub model: String,
    /// Provider that served it.
    pub provider: String,
    /// HTTP status returned to the client.
    pub status: i64,
    /// Prompt tokens at the full input rate.
    pub input_uncached: i64,
    /// Prompt tokens read from cache.
    pub cache_read: i64,
    /// Prompt tokens written to cache.
    pub cache_write: i64,
    /// Generated tokens.
    pub output: i64,
    /// Of `output`, reasoning tokens.
    pub reasoning: i64,
    /// Counted by the gateway, not the provider.
    pub estimated: bool,
    /// The response ended early.
    pub partial: bool,
    /// Cost in pico-dollars.
    pub cost_picos: i64,
    /// When the response finished, Unix ms.
    pub finished_at_ms: i64,
    /// Request duration in ms.
    pub duration_ms: i64,
    /// The key's user when the call was admitted, if any.
    pub user: Option<String>,
    /// The key's team when the call was admitted, if any.
    pub team: Option<String>,
    /// The budget leases the call's hold was drawn from; settled on insert, not stored
    /// (read back empty).
    #[serde(skip)]
    pub lease_ids: Vec<String>,
    /// What the filter charged each of `lease_ids` for the call (0: the cost); drawn on
    /// them when larger than the cost, not stored.
    #[serde(skip)]
    pub lease_charge_picos: i64,
    /// Of `lease_ids`, the leases the call alone drew on: closed once drawn on, not stored.
    #[serde(skip)]
    pub done_lease_ids: Vec<String>,
}

/// Columns of `usage_records`, in the order [`UsageRow`] binds them.
const USAGE_COLUMNS: [&str; 17] = [
    "request_id",
    "key_id",
    "model",
    "provider",
    "status",
    "input_uncached",
    "cache_read",
    "cache_write",
    "output",
    "reasoning",
    "estimated",
    "partial",
    "cost_picos",
    "finished_at_ms",
    "duration_ms",
    "user_name",
    "team",
];

/// Columns of `virtual_keys` that [`key_row`] reads.
const KEY_COLUMNS: &str = "id, name, key_hash, key_prefix, models, created_at_ms, revoked_at_ms, \
     requests_per_minute, tokens_per_minute, user_name, team, expires_at_ms, previous_key_until_ms";

/// Rows per INSERT statement. Measured (benches/ingest.rs): binding costs grow faster
/// than linearly with a statement's parameters, so 10-row statements in one transaction
/// store ~110k rows/s on SQLite where 1000-row statements managed under 5k.
const INSERT_CHUNK: usize = 10;

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// Usage writes allowed at once; see [`Store::usage_writers`].
    usage_writers: usize,
    /// Which database it is.
    backend: Backend,
}

/// Whether a usage insert adds to the rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rollups {
    Kept,
    Skipped,
}

/// The databases the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// One file, one writer at a time.
    Sqlite,
    /// Shared by replicas.
    Postgres,
}

impl Store {
    /// Connects (creating a SQLite file and its folder if needed) and migrates the schema.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = if sqlite {
            sqlite_url(url)?
        } else {
            url.to_owned()
        };
        let connections = if sqlite { 4 } else { 16 };
        let mut options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(10))
            .max_connections(connections);
        if sqlite {
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL lets CLI commands and the server use the file at once.
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout = 5000")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA synchronous = NORMAL")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(&url).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self {
            pool,
            // SQLite writers take turns on the file anyway: a second would only hold a
            // connection while it waits.
            usage_writers: if sqlite { 1 } else { connections as usize / 2 },
            backend: if sqlite {
                Backend::Sqlite
            } else {
                Backend::Postgres
            },
        })
    }

    /// How many usage writes may run at once: at most half the connections, so key
    /// lookups always find one free.
    pub fn usage_writers(&self) -> usize {
        self.usage_writers
    }

    /// The placeholder many-row statements bind fastest with: SQLite resolves `$N` by
    /// name, linearly per parameter, and numbered `?N` directly; PostgreSQL takes `$N`.
    fn placeholder(&self) -> char {
        match self.backend {
            Backend::Sqlite => '?',
            Backend::Postgres => '$',
        }
    }

    /// Succeeds when the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Stores a new key.
    pub async fn insert_key(&self, key: &KeyRow) -> Result<(), StoreError> {
        let tpm = key
            .tokens_per_minute
            .map(|n| to_i64("tokens_per_minute", n))
            .transpose()?;
        sqlx::query(
            "INSERT INTO virtual_keys \
             (id, name, key_hash, key_prefix, models, created_at_ms, requests_per_minute, \
              tokens_per_minute, user_name, team, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(&key.key_hash)
        .bind(&key.key_prefix)
        .bind(key.models.join(","))
        .bind(key.created_at_ms)
        .bind(key.requests_per_minute.map(i64::from))
        .bind(tpm)
        .bind(key.user.clone())
        .bind(key.team.clone())
        .bind(key.expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every key, oldest first.
    pub async fn list_keys(&self) -> Result<Vec<KeyRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM virtual_keys ORDER BY created_at_ms, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_row).collect()
    }

    /// The keys of the user `user`, oldest first.
    pub async fn list_keys_of_user(&self, user: &str) -> Result<Vec<KeyRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM virtual_keys WHERE user_name = $1 ORDER BY created_at_ms, id"
        ))
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_row).collect()
    }

    /// The key with this secret hash, revoked or not.
    pub async fn key_by_hash(&self, key_hash: &str) -> Result<Option<KeyRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM virtual_keys WHERE key_hash = $1"
        ))
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_row).transpose()
    }

    /// The key with this id, revoked or not.
    pub async fn key_by_id(&self, id: &str) -> Result<Option<KeyRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM virtual_keys WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_row).transpose()
    }

    /// Marks a key revoked; `false` if no active key has this id.
    pub async fn revoke_key(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE virtual_keys SET revoked_at_ms = $1 WHERE id = $2 AND revoked_at_ms IS NULL",
        )
        .bind(at_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores usage rows in one transaction, skipping request ids already stored, and in
    /// the same transaction settles each new row's cost on the budgets it applies to and
    /// adds it to the usage rollups (a retried record is never charged or counted twice);
    /// returns how many were new.
    pub async fn insert_usage(&self, rows: &[UsageRow]) -> Result<u64, StoreError> {
        self.insert_usage_keeping(rows, Rollups::Kept).await
    }

    /// [`Store::insert_usage`] without adding to the rollups, which then miss the rows
    /// until [`Store::rebuild_usage_rollups`]: the usage benchmark's baseline, measuring
    /// what keeping them costs.
    #[doc(hidden)]
    pub async fn insert_usage_without_rollups(&self, rows: &[UsageRow]) -> Result<u64, StoreError> {
        self.insert_usage_keeping(rows, Rollups::Skipped).await
    }

    async fn insert_usage_keeping(
        &self,
        rows: &[UsageRow],
        rollups: Rollups,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        // RETURNING names only the rows inserted: ON CONFLICT skipped the others.
        let mut new_ids = std::collections::HashSet::new();
        // In request id order: two replicas storing overlapping retried batches then take
        // the rows' locks in one order instead of deadlocking.
        let mut ordered: Vec<&UsageRow> = rows.iter().collect();
        ordered.sort_by(|a, b| a.request_id.cmp(&b.request_id));
        for chunk in ordered.chunks(INSERT_CHUNK) {
            let sql = usage_insert_sql(chunk.len(), self.placeholder());
            let mut query = sqlx::query(&sql);
            for r in chunk {
                query = query
                    .bind(&r.request_id)
                    .bind(&r.key_id)
                    .bind(&r.model)
                    .bind(&r.provider)
                    .bind(r.status)
                    .bind(r.input_uncached)
                    .bind(r.cache_read)
                    .bind(r.cache_write)
                    .bind(r.output)
                    .bind(r.reasoning)
                    .bind(i64::from(r.estimated))
                    .bind(i64::from(r.partial))
                    .bind(r.cost_picos)
                    .bind(r.finished_at_ms)
                    .bind(r.duration_ms)
                    .bind(r.user.clone())
                    .bind(r.team.clone());
            }
            for row in query.fetch_all(&mut *tx).await? {
                new_ids.insert(row.try_get::<String, _>("request_id")?);
            }
        }
        let stored = u64::try_from(new_ids.len()).unwrap_or(u64::MAX);
        // Each id once, even when a batch names it twice.
        let fresh: Vec<&UsageRow> = rows
            .iter()
            .filter(|r| new_ids.remove(&r.request_id))
            .collect();
        budgets::settle(&mut tx, &fresh).await?;
        if rollups == Rollups::Kept {
            rollups::add(&mut tx, &fresh, self.placeholder()).await?;
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// The newest usage rows, optionally of one key or one request.
    pub async fn list_usage(
        &self,
        key_id: Option<&str>,
        request_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM usage_records \
             WHERE ($1 = '' OR key_id = $1) AND ($2 = '' OR request_id = $2) \
             ORDER BY finished_at_ms DESC, request_id LIMIT $3",
            USAGE_COLUMNS.join(", ")
        );
        let rows = sqlx::query(&sql)
            .bind(key_id.unwrap_or(""))
            .bind(request_id.unwrap_or(""))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(usage_row).collect()
    }
}

/// Adds `mode=rwc` (create if missing) and creates the file's folder.
fn sqlite_url(url: &str) -> Result<String, StoreError> {
    let path = url
        .trim_start_matches("sqlite:")
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or_default();
    if let Some(dir) = std::path::Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::DataDir(dir.display().to_string(), e))?;
    }
    Ok(if url.contains('?') {
        url.to_owned()
    } else {
        format!("{url}?mode=rwc")
    })
}

fn usage_insert_sql(rows: usize, placeholder: char) -> String {
    format!(
        "INSERT INTO usage_records ({}) VALUES {} \
         ON CONFLICT (request_id) DO NOTHING RETURNING request_id",
        USAGE_COLUMNS.join(", "),
        values_list(rows, USAGE_COLUMNS.len(), placeholder)
    )
}

/// `(p1, p2, …), (…)`: the VALUES of a `rows`-row insert of `width` columns, numbered
/// from 1 with `placeholder` (`$` or `?`).
pub(super) fn values_list(rows: usize, width: usize, placeholder: char) -> String {
    let mut sql = String::new();
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for col in 0..width {
            if col > 0 {
                sql.push_str(", ");
            }
            sql.push(placeholder);
            sql.push_str(&(row * width + col + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

pub(crate) fn key_row(row: &sqlx::any::AnyRow) -> Result<KeyRow, StoreError> {
    let models: String = row.try_get("models")?;
    Ok(KeyRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        key_hash: row.try_get("key_hash")?,
        key_prefix: row.try_get("key_prefix")?,
        models: models
            .split(',')
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect(),
        created_at_ms: row.try_get("created_at_ms")?,
        revoked_at_ms: row.try_get("revoked_at_ms")?,
        requests_per_minute: row
            .try_get::<Option<i64>, _>("requests_per_minute")?
            .map(|n| u32::try_from(n).map_err(|e| sqlx::Error::Decode(Box::new(e))))
            .transpose()?,
        tokens_per_minute: unsigned(row, "tokens_per_minute")?,
        user: row.try_get("user_name")?,
        team: row.try_get("team")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        previous_until_ms: row.try_get("previous_key_until_ms")?,
    })
}

/// A nullable BIGINT column that holds a non-negative number.
pub(crate) fn unsigned(row: &sqlx::any::AnyRow, column: &str) -> Result<Option<u64>, StoreError> {
    Ok(row
        .try_get::<Option<i64>, _>(column)?
        .map(|n| u64::try_from(n).map_err(|e| sqlx::Error::Decode(Box::new(e))))
        .transpose()?)
}

fn usage_row(row: &sqlx::any::AnyRow) -> Result<UsageRow, StoreError> {
    Ok(UsageRow {
        request_id: row.try_get("request_id")?,
        key_id: row.try_get("key_id")?,
        model: row.try_get("model")?,
        provider: row.try_get("provider")?,
        status: int(row, "status")?,
        input_uncached: row.try_get("input_uncached")?,
        cache_read: row.try_get("cache_read")?,
        cache_write: row.try_get("cache_write")?,
        output: row.try_get("output")?,
        reasoning: row.try_get("reasoning")?,
        estimated: flag(row, "estimated")?,
        partial: flag(row, "partial")?,
        cost_picos: row.try_get("cost_picos")?,
        finished_at_ms: row.try_get("finished_at_ms")?,
        duration_ms: row.try_get("duration_ms")?,
        user: row.try_get("user_name")?,
        team: row.try_get("team")?,
        lease_ids: Vec::new(),
        lease_charge_picos: 0,
        done_lease_ids: Vec::new(),
    })
}

/// An INTEGER column: i64 from SQLite, i32 from PostgreSQL.
pub(crate) fn int(row: &sqlx::any::AnyRow, column: &str) -> Result<i64, StoreError> {
    Ok(row
        .try_get::<i64, _>(column)
        .or_else(|_| row.try_get::<i32, _>(column).map(i64::from))?)
}

/// A 0/1 INTEGER column as a flag.
fn flag(row: &sqlx::any::AnyRow, column: &str) -> Result<bool, StoreError> {
    Ok(int(row, column)? != 0)
}

#[cfg(test)]
pub(crate) mod test_stores;

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(id: &str, key: &str, t: i64) -> UsageRow {
        UsageRow {
            request_id: id.into(),
            key_id: key.into(),
            model: "m".into(),
            provider: "p".into(),
            status: 200,
            input_uncached: 10,
            cache_read: 2,
            cache_write: 1,
            output: 5,
            reasoning: 3,
            estimated: false,
            partial: true,
            cost_picos: 123_456_789,
            finished_at_ms: t,
            duration_ms: 42,
            user: Some("alice".into()),
            team: None,
            lease_ids: Vec::new(),
            lease_charge_picos: 0,
            done_lease_ids: Vec::new(),
        }
    }

    async fn exercise(store: &Store) {
        store.ping().await.unwrap();
        let key = KeyRow {
            id: format!("key_{}", hex::encode(rand::random::<[u8; 6]>())),
            name: "test".into(),
            key_hash: hex::encode(rand::random::<[u8; 32]>()),
            key_prefix: "tg-abc".into(),
            models: vec!["a".into(), "b".into()],
            created_at_ms: 1,
            revoked_at_ms: None,
            requests_per_minute: None,
            tokens_per_minute: Some(u64::try_from(i64::MAX).unwrap()),
            user: Some("alice".into()),
            team: None,
            expires_at_ms: None,
            previous_until_ms: None,
        };
        store.insert_key(&key).await.unwrap();
        // A key's own limit keeps 0 apart from none.
        for rpm in [Some(0), Some(u32::MAX)] {
            let limited = KeyRow {
                id: format!("{}-{rpm:?}", key.id),
                key_hash: hex::encode(rand::random::<[u8; 32]>()),
                requests_per_minute: rpm,
                ..key.clone()
            };
            store.insert_key(&limited).await.unwrap();
            let read = store.key_by_hash(&limited.key_hash).await.unwrap();
            assert_eq!(read.and_then(|k| k.requests_per_minute), rpm);
        }
        assert_eq!(
            store.key_by_hash(&key.key_hash).await.unwrap().as_ref(),
            Some(&key)
        );
        assert!(store.list_keys().await.unwrap().contains(&key));
        let alices = store.list_keys_of_user("alice").await.unwrap();
        assert!(alices.contains(&key));
        assert!(alices.iter().all(|k| k.user.as_deref() == Some("alice")));
        let nobody = format!("nobody-{}", hex::encode(rand::random::<[u8; 6]>()));
        assert!(store.list_keys_of_user(&nobody).await.unwrap().is_empty());
        assert!(store.revoke_key(&key.id, 99).await.unwrap());
        assert!(
            !store.revoke_key(&key.id, 100).await.unwrap(),
            "revoking twice is a no-op"
        );
        // What Authorize reads, in its two queries.
        store
            .set_user_limits(
                "alice",
                Limits {
                    requests_per_minute: Some(0),
                    tokens_per_minute: None,
                },
            )
            .await
            .unwrap();
        store
            .set_key_model_limit(
                &key.id,
                "a",
                Limits {
                    requests_per_minute: None,
                    tokens_per_minute: Some(77),
                },
            )
            .await
            .unwrap();
        let budget = store
            .set_budget(
                &format!("key:{}", key.id),
                crate::budgets::Period::Day,
                5,
                0,
            )
            .await
            .unwrap()
            .budget;
        let grant = store
            .key_grant_by_hash(&key.key_hash)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(grant.user_limits.requests_per_minute, Some(0));
        assert_eq!(grant.user_limits.tokens_per_minute, None);
        let subjects = crate::budgets::subjects_of(&key.id, "", &format!("team-{}", key.id));
        let (models, budgets) = store
            .model_limits_and_budgets(&key.id, &subjects)
            .await
            .unwrap();
        assert_eq!(
            models,
            vec![ModelLimit {
                model: "a".into(),
                limits: Limits {
                    requests_per_minute: None,
                    tokens_per_minute: Some(77)
                }
            }]
        );
        assert_eq!(budgets, vec![budget]);
        let revoked = store.key_by_hash(&key.key_hash).await.unwrap().unwrap();
        assert_eq!(revoked.revoked_at_ms, Some(99));
        assert_eq!(store.key_by_hash("nope").await.unwrap(), None);

        let rows: Vec<UsageRow> = (0..2500)
            .map(|i| usage(&format!("{}-{i}", key.id), &key.id, i))
            .collect();
        assert_eq!(store.insert_usage(&rows).await.unwrap(), 2500);
        // A retried batch, half old and half new, stores only the new half.
        let mut retry = rows[2000..].to_vec();
        retry.push(usage(&format!("{}-new", key.id), &key.id, 9999));
        assert_eq!(store.insert_usage(&retry).await.unwrap(), 1);
        let newest = store.list_usage(Some(&key.id), None, 2).await.unwrap();
        assert_eq!(newest[0].request_id, format!("{}-new", key.id));
        assert_eq!(newest[1], rows[2499]);
        let one = store
            .list_usage(None, Some(&rows[7].request_id), 10)
            .await
            .unwrap();
        assert_eq!(one, vec![rows[7].clone()]);
    }

    #[tokio::test]
    async fn sqlite_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sub/t.db", dir.path().display());
        let store = Store::open(&url).await.unwrap();
        exercise(&store).await;
        // Re-opening runs migrations again as a no-op.
        Store::open(&url).await.unwrap();
    }

    /// PostgreSQL is what several replicas share; `TOLLGATE_TEST_POSTGRES_URL` points at one.
    #[tokio::test]
    async fn postgres_round_trip() {
        let url = test_stores::fresh_postgres_url().await;
        let store = Store::open(&url)
            .await
            .expect("PostgreSQL must be running for this test (see README)");
        exercise(&store).await;
    }
}
