//! Issuing and revoking virtual keys.

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::store::{KeyRow, KeyUpdate, Limits, Store, StoreError};
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
    /// No key has that id.
    #[error("no key with id `{0}`")]
    NoSuchKey(String),
    /// A user or team name is empty, too long or holds control characters.
    #[error("{0} name must be 1 to 200 characters, without control characters")]
    BadOwner(&'static str),
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

/// What a new key is: its name, allowed models and own limits, and whose it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySpec {
    /// A name people recognize.
    pub name: String,
    /// Allowed models; empty: every model the catalog serves.
    pub models: Vec<String>,
    /// Its own requests per minute (`None`: the config's default).
    pub requests_per_minute: Option<u32>,
    /// Its own tokens per minute (`None`: the config's default).
    pub tokens_per_minute: Option<u64>,
    /// Its user, if any.
    pub user: Option<String>,
    /// Its team, if any.
    pub team: Option<String>,
}

/// A user or team name, trimmed, or [`KeyError::BadOwner`] naming `what`.
pub fn owner_name(what: &'static str, name: &str) -> Result<String, KeyError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(KeyError::BadOwner(what));
    }
    Ok(name.to_owned())
}

/// `Err` naming the first of `models` that `catalog` does not serve.
fn served(catalog: &Catalog, models: &[String]) -> Result<(), KeyError> {
    match models.iter().find(|m| !catalog.models.contains_key(*m)) {
        Some(unknown) => Err(KeyError::UnknownModel(
            unknown.clone(),
            catalog.model_names().join(", "),
        )),
        None => Ok(()),
    }
}

/// Issues a key as `spec` describes.
pub async fn create(
    store: &Store,
    catalog: &Catalog,
    clock: &Clock,
    spec: KeySpec,
) -> Result<IssuedKey, KeyError> {
    let name = spec.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(KeyError::BadName);
    }
    served(catalog, &spec.models)?;
    let user = spec.user.map(|u| owner_name("user", &u)).transpose()?;
    let team = spec.team.map(|t| owner_name("team", &t)).transpose()?;
    // 192 bits from the OS generator: unguessable, and the hash needs no salt at that size.
    let secret = format!("{KEY_PREFIX}{}", hex::encode(rand::random::<[u8; 24]>()));
    let row = KeyRow {
        id: format!("key_{}", hex::encode(rand::random::<[u8; 8]>())),
        name: name.to_owned(),
        key_hash: hash_key(secret.as_bytes()),
        key_prefix: display_prefix(&secret),
        models: spec.models,
        created_at_ms: clock.now_ms(),
        revoked_at_ms: None,
        requests_per_minute: spec.requests_per_minute,
        tokens_per_minute: spec.tokens_per_minute,
        user,
        team,
    };
    store.insert_key(&row).await?;
    Ok(IssuedKey { row, secret })
}

/// Changes the key with this id: `update` and each per-model limit (both `None` in one
/// removes it), all or nothing. Models must be served.
pub async fn update(
    store: &Store,
    catalog: &Catalog,
    id: &str,
    mut update: KeyUpdate,
    model_limits: &[(String, Limits)],
) -> Result<(), KeyError> {
    let models: Vec<String> = model_limits.iter().map(|(m, _)| m.clone()).collect();
    served(catalog, &models)?;
    if let Some(Some(user)) = &update.user {
        update.user = Some(Some(owner_name("user", user)?));
    }
    if let Some(Some(team)) = &update.team {
        update.team = Some(Some(owner_name("team", team)?));
    }
    if !store
        .update_key_and_model_limits(id, &update, model_limits)
        .await?
    {
        return Err(KeyError::NoSuchKey(id.to_owned()));
    }
    Ok(())
}

/// Revokes the key with this id, as of `clock`'s now.
pub async fn revoke(store: &Store, clock: &Clock, id: &str) -> Result<(), KeyError> {
    if store.revoke_key(id, clock.now_ms()).await? {
        Ok(())
    } else {
        Err(KeyError::NotFound(id.to_owned()))
    }
}
