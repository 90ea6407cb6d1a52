//! Issuing, rotating, expiring and revoking virtual keys, and whether a key may be used now.

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::store::{KeyRow, KeyUpdate, Limits, Rotation, SecretMatch, Store, StoreError};
use std::time::Duration;
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
    /// A rotation asked to keep the old secret working for longer than allowed.
    #[error("the old secret's grace period is at most {} days", MAX_ROTATION_GRACE.as_secs() / 86_400)]
    GraceTooLong,
    /// Another rotation of the key landed between reading its secret and replacing it.
    #[error("the key was rotated by another request meanwhile; its new secret stands")]
    RotatedMeanwhile,
    /// An expiry that is not in the future.
    #[error("a key's expiry must be in the future")]
    ExpiryPast,
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
    /// When it stops working on its own, Unix ms; `None`: never.
    pub expires_at_ms: Option<i64>,
}

/// The longest a rotated-out secret keeps working: long enough to roll a fleet, short
/// enough that a leaked secret "rotated away" does not live on for months.
pub const MAX_ROTATION_GRACE: Duration = Duration::from_secs(30 * 86_400);

/// Whether a key found by a presented secret may be used at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Usable; `until_ms`: when that ends on its own (expiry or the end of a rotation's
    /// grace), so no cache keeps it past then.
    Usable {
        /// Unix ms, or `None`: until revoked.
        until_ms: Option<i64>,
    },
    /// Revoked by an operator.
    Revoked,
    /// Past its expiry.
    Expired,
    /// The secret presented was rotated out and its grace is over.
    SecretRetired,
}

/// The standing at `now_ms` of `key`, presented by the secret `secret` matched.
pub fn standing(key: &KeyRow, secret: SecretMatch, now_ms: i64) -> Standing {
    if key.revoked_at_ms.is_some() {
        return Standing::Revoked;
    }
    if key.expires_at_ms.is_some_and(|at| at <= now_ms) {
        return Standing::Expired;
    }
    let secret_until = match secret {
        SecretMatch::Current => None,
        SecretMatch::Previous => match key.previous_until_ms {
            Some(until) if until > now_ms => Some(until),
            _ => return Standing::SecretRetired,
        },
    };
    let until_ms = match (key.expires_at_ms, secret_until) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Standing::Usable { until_ms }
}

/// A new secret: 192 bits from the OS generator, unguessable, so its hash needs no salt.
fn new_secret() -> String {
    format!("{KEY_PREFIX}{}", hex::encode(rand::random::<[u8; 24]>()))
}

/// `Err` unless `expires_at_ms` (if any) is after `clock`'s now.
fn future_expiry(clock: &Clock, expires_at_ms: Option<i64>) -> Result<(), KeyError> {
    match expires_at_ms {
        Some(at) if at <= clock.now_ms() => Err(KeyError::ExpiryPast),
        _ => Ok(()),
    }
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
    future_expiry(clock, spec.expires_at_ms)?;
    let secret = new_secret();
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
        expires_at_ms: spec.expires_at_ms,
        previous_until_ms: None,
    };
    store.insert_key(&row).await?;
    Ok(IssuedKey { row, secret })
}

/// Changes the key with this id: `update` and each per-model limit (both `None` in one
/// removes it), all or nothing. Models must be served; a new expiry must be in the future.
pub async fn update(
    store: &Store,
    catalog: &Catalog,
    clock: &Clock,
    id: &str,
    mut update: KeyUpdate,
    model_limits: &[(String, Limits)],
) -> Result<(), KeyError> {
    let models: Vec<String> = model_limits.iter().map(|(m, _)| m.clone()).collect();
    served(catalog, &models)?;
    if let Some(expiry) = update.expires_at_ms {
        future_expiry(clock, expiry)?;
    }
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

/// Gives the active key `id` a new secret; the old one keeps working for `grace` (zero:
/// it stops at once). Its settings, limits, budgets and usage stay with the key.
pub async fn rotate(
    store: &Store,
    clock: &Clock,
    id: &str,
    grace: Duration,
) -> Result<IssuedKey, KeyError> {
    if grace > MAX_ROTATION_GRACE {
        return Err(KeyError::GraceTooLong);
    }
    let current = store
        .key_by_id(id)
        .await?
        .filter(|k| k.revoked_at_ms.is_none())
        .ok_or_else(|| KeyError::NotFound(id.to_owned()))?;
    let secret = new_secret();
    let grace_ms = i64::try_from(grace.as_millis()).map_err(|_| KeyError::GraceTooLong)?;
    let rotation = Rotation {
        replacing: current.key_hash,
        key_hash: hash_key(secret.as_bytes()),
        key_prefix: display_prefix(&secret),
        previous_until_ms: (grace_ms > 0).then(|| clock.now_ms().saturating_add(grace_ms)),
    };
    if !store.rotate_key(id, &rotation).await? {
        // Revoked meanwhile, or rotated by another request whose secret must keep working.
        return Err(match store.key_by_id(id).await? {
            Some(k) if k.revoked_at_ms.is_none() => KeyError::RotatedMeanwhile,
            _ => KeyError::NotFound(id.to_owned()),
        });
    }
    let row = store
        .key_by_id(id)
        .await?
        .ok_or_else(|| KeyError::NotFound(id.to_owned()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(expires_at_ms: Option<i64>, previous_until_ms: Option<i64>) -> KeyRow {
        KeyRow {
            id: "key_a".into(),
            name: "a".into(),
            key_hash: "00".into(),
            key_prefix: "tg-".into(),
            models: Vec::new(),
            created_at_ms: 0,
            revoked_at_ms: None,
            requests_per_minute: None,
            tokens_per_minute: None,
            user: None,
            team: None,
            expires_at_ms,
            previous_until_ms,
        }
    }

    #[test]
    fn a_key_without_expiry_is_usable_until_revoked() {
        let k = key(None, None);
        assert_eq!(
            standing(&k, SecretMatch::Current, i64::MAX),
            Standing::Usable { until_ms: None }
        );
        let revoked = KeyRow {
            revoked_at_ms: Some(5),
            ..k
        };
        assert_eq!(
            standing(&revoked, SecretMatch::Current, 0),
            Standing::Revoked
        );
    }

    #[test]
    fn a_key_stops_at_its_expiry_instant() {
        let k = key(Some(1_000), None);
        assert_eq!(
            standing(&k, SecretMatch::Current, 999),
            Standing::Usable {
                until_ms: Some(1_000)
            }
        );
        assert_eq!(standing(&k, SecretMatch::Current, 1_000), Standing::Expired);
    }

    #[test]
    fn a_rotated_out_secret_works_until_the_earlier_of_its_grace_and_the_expiry() {
        let k = key(Some(2_000), Some(1_500));
        assert_eq!(
            standing(&k, SecretMatch::Previous, 1_000),
            Standing::Usable {
                until_ms: Some(1_500)
            }
        );
        assert_eq!(
            standing(&k, SecretMatch::Current, 1_000),
            Standing::Usable {
                until_ms: Some(2_000)
            },
            "the new secret is not bound by the old one's grace"
        );
        assert_eq!(
            standing(&k, SecretMatch::Previous, 1_500),
            Standing::SecretRetired
        );
        let expires_first = key(Some(1_200), Some(1_500));
        assert_eq!(
            standing(&expires_first, SecretMatch::Previous, 1_000),
            Standing::Usable {
                until_ms: Some(1_200)
            }
        );
        assert_eq!(
            standing(&key(None, None), SecretMatch::Previous, 0),
            Standing::SecretRetired,
            "no grace recorded: the old secret is refused"
        );
    }

    #[tokio::test]
    async fn rotation_refuses_a_grace_longer_than_the_maximum() {
        let (_dir, store) = crate::store::test_stores::sqlite().await;
        let clock = crate::clock::ManualClock::at(0).clock();
        let err = rotate(
            &store,
            &clock,
            "key_a",
            MAX_ROTATION_GRACE + Duration::from_millis(1),
        )
        .await
        .err();
        assert!(matches!(err, Some(KeyError::GraceTooLong)), "{err:?}");
    }
}
