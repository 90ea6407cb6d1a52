//! Virtual keys: `GET|POST /api/keys`, `GET|PATCH /api/keys/{id}`,
//! `POST /api/keys/{id}/rotate`, `POST /api/keys/{id}/revoke`.
//!
//! Admins see and change every key, viewers see every key, members see and manage only
//! their own (a key whose user is them); another member's key is a 404, never a 403, so
//! its existence does not leak. A key's secret is in the answer to its creation and to a
//! rotation, and nowhere else.

use super::caller::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::Json;
use super::state::ApiState;
use crate::keys::{self, KeyError, KeySpec, MAX_ROTATION_GRACE, Standing};
use crate::store::{KeyRow, KeyUpdate, Limits, SecretMatch};
use crate::users::Role;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(get_key, update_key))
        .routes(routes!(rotate_key))
        .routes(routes!(revoke_key))
}

/// Where a key stands, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Usable.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
}

/// A key's limit for one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelLimitView {
    /// The model.
    pub model: String,
    /// Requests per minute for this key on this model (`null`: none of its own).
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute for this key on this model (`null`: none of its own).
    pub tokens_per_minute: Option<u64>,
}

/// A key as the API shows it (never its secret, never its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    /// Stable id, `key_…`.
    pub id: String,
    /// A name people recognize.
    pub name: String,
    /// The first characters of the secret, to tell keys apart.
    pub prefix: String,
    /// Models it may call; empty: every served model.
    pub models: Vec<String>,
    /// Its user: their limits and budgets apply, and they manage it.
    pub user: Option<String>,
    /// Its team: the team's budgets apply.
    pub team: Option<String>,
    /// Active, expired or revoked, now.
    pub status: KeyStatus,
    /// Created, Unix ms.
    pub created_at_ms: i64,
    /// Revoked, Unix ms.
    pub revoked_at_ms: Option<i64>,
    /// When it stops working on its own, Unix ms.
    pub expires_at_ms: Option<i64>,
    /// After a rotation, until when the old secret still works, Unix ms.
    pub old_secret_until_ms: Option<i64>,
    /// Its own requests per minute (`null`: the configured default).
    pub requests_per_minute: Option<u32>,
    /// Its own tokens per minute (`null`: the configured default).
    pub tokens_per_minute: Option<u64>,
    /// Its limits per model (only on `GET /api/keys/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_limits: Option<Vec<ModelLimitView>>,
}

impl KeyView {
    fn of(key: &KeyRow, now_ms: i64) -> Self {
        let status = match keys::standing(key, SecretMatch::Current, now_ms) {
            Standing::Usable { .. } => KeyStatus::Active,
            Standing::Expired => KeyStatus::Expired,
            Standing::Revoked | Standing::SecretRetired => KeyStatus::Revoked,
        };
        Self {
            id: key.id.clone(),
            name: key.name.clone(),
            prefix: key.key_prefix.clone(),
            models: key.models.clone(),
            user: key.user.clone(),
            team: key.team.clone(),
            status,
            created_at_ms: key.created_at_ms,
            revoked_at_ms: key.revoked_at_ms,
            expires_at_ms: key.expires_at_ms,
            old_secret_until_ms: key.previous_until_ms.filter(|&until| until > now_ms),
            requests_per_minute: key.requests_per_minute,
            tokens_per_minute: key.tokens_per_minute,
            model_limits: None,
        }
    }
}

/// A key and its secret: the answer to a creation or a rotation, the only time the
/// secret is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuedKeyView {
    /// The key.
    pub key: KeyView,
    /// The secret to hand to the client; it is not stored and cannot be shown again.
    pub secret: String,
}

/// A new key. Members create keys for themselves only, without a team or limits of its own.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// A name people recognize.
    pub name: String,
    /// Models it may call; empty or absent: every served model.
    #[serde(default)]
    pub models: Vec<String>,
    /// Its user (admins only; a member's key is always theirs).
    pub user: Option<String>,
    /// Its team (admins only).
    pub team: Option<String>,
    /// Its own requests per minute (admins only; absent: the configured default).
    pub requests_per_minute: Option<u32>,
    /// Its own tokens per minute (admins only; absent: the configured default).
    pub tokens_per_minute: Option<u64>,
    /// When it stops working, Unix ms, in the future (absent: never).
    pub expires_at_ms: Option<i64>,
}

/// Changes to a key: a field absent stays, a field `null` is cleared. Only admins change
/// limits, user and team; a member may bring their own key's expiry closer.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyChange {
    /// Its own requests per minute (`null`: the configured default).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>)]
    pub requests_per_minute: Option<Option<u32>>,
    /// Its own tokens per minute (`null`: the configured default).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    pub tokens_per_minute: Option<Option<u64>>,
    /// Its user (`null`: none).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub user: Option<Option<String>>,
    /// Its team (`null`: none).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub team: Option<Option<String>>,
    /// When it stops working, Unix ms, in the future (`null`: never).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub expires_at_ms: Option<Option<i64>>,
    /// Per-model limits to set; one with both limits `null` is removed.
    #[serde(default)]
    pub model_limits: Vec<ModelLimitView>,
}

impl KeyChange {
    /// Whether the change touches more than the expiry (what only admins may change).
    fn beyond_expiry(&self) -> bool {
        self.requests_per_minute.is_some()
            || self.tokens_per_minute.is_some()
            || self.user.is_some()
            || self.team.is_some()
            || !self.model_limits.is_empty()
    }
}

/// Whether a member may change their key's expiry from `current` to `asked`: only closer,
/// so a member never lifts, extends or revives an expiry an admin set.
fn member_may_set_expiry(current: Option<i64>, asked: Option<i64>) -> bool {
    match (current, asked) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(current), Some(asked)) => asked < current,
    }
}

/// A field that is present, `null` or not: absent fields stay `None` through `default`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A rotation.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotationAsk {
    /// How long the old secret keeps working, in seconds (0: it stops at once; at most 30 days).
    pub grace_seconds: u64,
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::BadName => ApiError::invalid("name", "must be 1 to 200 characters"),
            e @ KeyError::UnknownModel(..) => ApiError::invalid("models", e),
            KeyError::NotFound(_) | KeyError::NoSuchKey(_) => ApiError::NotFound,
            KeyError::BadOwner(what) => ApiError::invalid(
                what,
                "must be 1 to 200 characters, without control characters",
            ),
            e @ KeyError::GraceTooLong => ApiError::invalid("grace_seconds", e),
            e @ KeyError::ExpiryPast => ApiError::invalid("expires_at_ms", e),
            e @ KeyError::RotatedMeanwhile => ApiError::Conflict(e.to_string()),
            KeyError::Store(e) => e.into(),
        }
    }
}

/// Whether `caller` may see `key`: admins and viewers every key, members their own.
fn visible(caller: &Caller, key: &KeyRow) -> bool {
    caller.role != Role::Member || key.user.as_deref() == Some(caller.user_name.as_str())
}

/// The key `id` if `caller` may see it, else 404.
async fn visible_key(state: &ApiState, caller: &Caller, id: &str) -> Result<KeyRow, ApiError> {
    match state.store.key_by_id(id).await? {
        Some(key) if visible(caller, &key) => Ok(key),
        _ => Err(ApiError::NotFound),
    }
}

/// The keys the caller may see, oldest first.
#[utoipa::path(
    get,
    path = "/api/keys",
    tag = "keys",
    responses((status = 200, description = "Keys, oldest first", body = [KeyView]))
)]
async fn list_keys(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<axum::Json<Vec<KeyView>>, ApiError> {
    let now_ms = state.clock.now_ms();
    let keys = match caller.role {
        Role::Member => state.store.list_keys_of_user(&caller.user_name).await?,
        Role::Admin | Role::Viewer => state.store.list_keys().await?,
    };
    Ok(axum::Json(
        keys.iter().map(|k| KeyView::of(k, now_ms)).collect(),
    ))
}

/// Issues a key; the answer holds its secret, shown this once.
#[utoipa::path(
    post,
    path = "/api/keys",
    tag = "keys",
    request_body = NewKey,
    responses(
        (status = 201, description = "Created; the secret is shown this once", body = IssuedKeyView),
        (status = 403, description = "A viewer, or a member setting what only admins set", body = ErrorBody),
        (status = 422, description = "A field is wrong", body = ErrorBody),
    )
)]
async fn create_key(
    State(state): State<ApiState>,
    caller: Caller,
    Json(new): Json<NewKey>,
) -> Result<(StatusCode, axum::Json<IssuedKeyView>), ApiError> {
    caller.may_write()?;
    let user = if caller.is_admin() {
        new.user
    } else {
        if new.user.as_ref().is_some_and(|u| u != &caller.user_name)
            || new.team.is_some()
            || new.requests_per_minute.is_some()
            || new.tokens_per_minute.is_some()
        {
            return Err(ApiError::Forbidden(
                "only admins set a key's user, team or limits".into(),
            ));
        }
        Some(caller.user_name.clone())
    };
    let spec = KeySpec {
        name: new.name,
        models: new.models,
        requests_per_minute: new.requests_per_minute,
        tokens_per_minute: new.tokens_per_minute,
        user,
        team: new.team,
        expires_at_ms: new.expires_at_ms,
    };
    let catalog = state.catalog.current();
    let issued = keys::create(&state.store, &catalog, &state.clock, spec).await?;
    state.audit(&caller, "key.create", &issued.row.id).await?;
    let key = KeyView::of(&issued.row, state.clock.now_ms());
    Ok((
        StatusCode::CREATED,
        axum::Json(IssuedKeyView {
            key,
            secret: issued.secret,
        }),
    ))
}

/// One key, with its per-model limits.
#[utoipa::path(
    get,
    path = "/api/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 200, description = "The key", body = KeyView),
        (status = 404, description = "No such key, or not the caller's", body = ErrorBody),
    )
)]
async fn get_key(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<KeyView>, ApiError> {
    let key = visible_key(&state, &caller, &id).await?;
    let (limits, _) = state.store.model_limits_and_budgets(&key.id, &[]).await?;
    let mut view = KeyView::of(&key, state.clock.now_ms());
    view.model_limits = Some(
        limits
            .into_iter()
            .map(|m| ModelLimitView {
                model: m.model,
                requests_per_minute: m.limits.requests_per_minute,
                tokens_per_minute: m.limits.tokens_per_minute,
            })
            .collect(),
    );
    Ok(axum::Json(view))
}

/// Changes a key; gateways apply it within their key cache time.
#[utoipa::path(
    patch,
    path = "/api/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    request_body = KeyChange,
    responses(
        (status = 200, description = "The key as changed", body = KeyView),
        (status = 403, description = "A viewer, or a member changing more than the expiry or moving it later", body = ErrorBody),
        (status = 404, description = "No such key, or not the caller's", body = ErrorBody),
        (status = 422, description = "A field is wrong", body = ErrorBody),
    )
)]
async fn update_key(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(change): Json<KeyChange>,
) -> Result<axum::Json<KeyView>, ApiError> {
    caller.may_write()?;
    let key = visible_key(&state, &caller, &id).await?;
    if !caller.is_admin() && change.beyond_expiry() {
        return Err(ApiError::Forbidden(
            "only admins change a key's limits, user or team".into(),
        ));
    }
    if !caller.is_admin()
        && change
            .expires_at_ms
            .is_some_and(|asked| !member_may_set_expiry(key.expires_at_ms, asked))
    {
        return Err(ApiError::Forbidden(
            "a member may only bring their key's expiry closer".into(),
        ));
    }
    if key.revoked_at_ms.is_some() {
        return Err(ApiError::Conflict("the key is revoked".into()));
    }
    let model_limits: Vec<(String, Limits)> = change
        .model_limits
        .iter()
        .map(|m| {
            let limits = Limits {
                requests_per_minute: m.requests_per_minute,
                tokens_per_minute: m.tokens_per_minute,
            };
            (m.model.clone(), limits)
        })
        .collect();
    let update = KeyUpdate {
        requests_per_minute: change.requests_per_minute,
        tokens_per_minute: change.tokens_per_minute,
        user: change.user,
        team: change.team,
        expires_at_ms: change.expires_at_ms,
    };
    let catalog = state.catalog.current();
    keys::update(
        &state.store,
        &catalog,
        &state.clock,
        &key.id,
        update,
        &model_limits,
    )
    .await?;
    state.audit(&caller, "key.update", &key.id).await?;
    let changed = visible_key(&state, &caller, &key.id).await?;
    Ok(axum::Json(KeyView::of(&changed, state.clock.now_ms())))
}

/// Gives a key a new secret; the old one keeps working for the grace asked for.
#[utoipa::path(
    post,
    path = "/api/keys/{id}/rotate",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    request_body = RotationAsk,
    responses(
        (status = 200, description = "The new secret, shown this once", body = IssuedKeyView),
        (status = 403, description = "A viewer", body = ErrorBody),
        (status = 404, description = "No such active key, or not the caller's", body = ErrorBody),
        (status = 409, description = "Another rotation of the key landed first", body = ErrorBody),
        (status = 422, description = "The grace is longer than 30 days", body = ErrorBody),
    )
)]
async fn rotate_key(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(ask): Json<RotationAsk>,
) -> Result<axum::Json<IssuedKeyView>, ApiError> {
    caller.may_write()?;
    let key = visible_key(&state, &caller, &id).await?;
    if ask.grace_seconds > MAX_ROTATION_GRACE.as_secs() {
        return Err(KeyError::GraceTooLong.into());
    }
    let grace = Duration::from_secs(ask.grace_seconds);
    let issued = keys::rotate(&state.store, &state.clock, &key.id, grace).await?;
    state.audit(&caller, "key.rotate", &key.id).await?;
    let key = KeyView::of(&issued.row, state.clock.now_ms());
    Ok(axum::Json(IssuedKeyView {
        key,
        secret: issued.secret,
    }))
}

/// Revokes a key; gateways refuse it within their key cache time.
#[utoipa::path(
    post,
    path = "/api/keys/{id}/revoke",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 200, description = "The key as revoked", body = KeyView),
        (status = 403, description = "A viewer", body = ErrorBody),
        (status = 404, description = "No such active key, or not the caller's", body = ErrorBody),
    )
)]
async fn revoke_key(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<KeyView>, ApiError> {
    caller.may_write()?;
    let key = visible_key(&state, &caller, &id).await?;
    keys::revoke(&state.store, &state.clock, &key.id).await?;
    state.audit(&caller, "key.revoke", &key.id).await?;
    let revoked = visible_key(&state, &caller, &key.id).await?;
    Ok(axum::Json(KeyView::of(&revoked, state.clock.now_ms())))
}

#[cfg(test)]
mod tests;
