//! Issuing and revoking virtual keys.

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::store::{KeyRow, Store, StoreError};
use thiserror::Error;
use tollgate_core::keys::{KEY_PREFIX, display_prefix, hash_key};

/// Why a key operation was refused.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The name is empty or too long.
    #[error("key name must be 1 to 200 characters")]
    BadName,
    /// An allow-listed model is not served by this gateway.
    #[error("model `{0}` is not in the config's [[models]]; served models: {1}")]
    UnknownModel(String, String),
    /// No active key has that id.
    #[error("no active key with id `{0}`")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A freshly issued key: the only moment its secret exists outside the client.
pub struct IssuedKey {
    /// What was stored.
    pub row: KeyRow,
    /// The secret to hand to the client.
    pub secret: String,
}

/// Issues a key named `name`, allowed `models` (empty: all models `catalog` serves),
/// with its own `requests_per_minute` (`None`: the config's default).
pub async fn create(
    store: &Store,
    catalog: &Catalog,
    clock: &Clock,
    name: &str,
    models: Vec<String>,
    requests_per_minute: Option<u32>,
) -> Result<IssuedKey, KeyError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(KeyError::BadName);
    }
    if let Some(unknown) = models.iter().find(|m| !catalog.models.contains_key(*m)) {
        let served = catalog.model_names().join(", ");
        return Err(KeyError::UnknownModel(unknown.clone(), served));
    }
    // 192 bits from the OS generator: unguessable, and the hash needs no salt at that size.
    let secret = format!("{KEY_PREFIX}{}", hex::encode(rand::random::<[u8; 24]>()));
    let row = KeyRow {
        id: format!("key_{}", hex::encode(rand::random::<[u8; 8]>())),
        name: name.to_owned(),
        key_hash: hash_key(secret.as_bytes()),
        key_prefix: display_prefix(&secret),
        models,
        created_at_ms: clock.now_ms(),
        revoked_at_ms: None,
        requests_per_minute,
    };
    store.insert_key(&row).await?;
    Ok(IssuedKey { row, secret })
}

/// Revokes the key with this id, as of `clock`'s now.
pub async fn revoke(store: &Store, clock: &Clock, id: &str) -> Result<(), KeyError> {
    if store.revoke_key(id, clock.now_ms()).await? {
        Ok(())
    } else {
        Err(KeyError::NotFound(id.to_owned()))
    }
}
