//! Users: list and create (admin), read, change role or disable (admin, never oneself),
//! set a password, end someone's sessions.

use super::caller::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::Json;
use super::state::ApiState;
use crate::store::UserRow;
use crate::users::{self, Role, UserError};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user))
        .routes(routes!(set_password))
        .routes(routes!(revoke_sessions))
}

/// A user as the API shows them (never the password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UserView {
    /// Stable id.
    pub id: String,
    /// Unique name, the one keys, budgets and usage carry.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// Creation time, Unix ms.
    pub created_at_ms: i64,
    /// When the user was disabled, if they are.
    pub disabled_at_ms: Option<i64>,
}

impl From<&UserRow> for UserView {
    fn from(user: &UserRow) -> Self {
        Self {
            id: user.id.clone(),
            name: user.name.clone(),
            role: user.role,
            created_at_ms: user.created_at_ms,
            disabled_at_ms: user.disabled_at_ms,
        }
    }
}

/// A new user.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Unique name.
    pub name: String,
    /// `admin`, `member` or `viewer`.
    pub role: Role,
    /// At least 12 characters; stored only as its Argon2id hash.
    pub password: String,
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::BadName => ApiError::invalid(
                "name",
                "must be 1 to 200 characters, without control characters",
            ),
            UserError::Password(
                e @ (crate::passwords::PasswordError::TooShort
                | crate::passwords::PasswordError::TooLong),
            ) => ApiError::invalid("password", e.to_string().trim_start_matches("password ")),
            UserError::Password(crate::passwords::PasswordError::Hash(cause)) => {
                tracing::error!(error = %cause, "password hashing failed");
                ApiError::Internal
            }
            e @ UserError::Taken(_) => ApiError::Conflict(e.to_string()),
            UserError::NoSuchUser(_) => ApiError::NotFound,
            UserError::Store(e) => e.into(),
        }
    }
}

/// Every user (admins and viewers; members see only themselves through `/api/auth/me`).
#[utoipa::path(
    get,
    path = "/api/users",
    tag = "users",
    responses(
        (status = 200, description = "Users by name", body = [UserView]),
        (status = 403, description = "Members may not list users", body = ErrorBody),
    )
)]
async fn list_users(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<axum::Json<Vec<UserView>>, ApiError> {
    if caller.role == Role::Member {
        return Err(ApiError::Forbidden("members may not list users".into()));
    }
    let users = state.store.list_users().await?;
    Ok(axum::Json(users.iter().map(UserView::from).collect()))
}

/// Creates a user (admin only).
#[utoipa::path(
    post,
    path = "/api/users",
    tag = "users",
    request_body = NewUser,
    responses(
        (status = 201, description = "Created", body = UserView),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field is wrong", body = ErrorBody),
    )
)]
async fn create_user(
    State(state): State<ApiState>,
    caller: Caller,
    Json(new): Json<NewUser>,
) -> Result<(StatusCode, axum::Json<UserView>), ApiError> {
    users::may_create_user(caller.role)?;
    let user = users::create(
        &state.store,
        &state.clock,
        &new.name,
        new.role,
        new.password,
    )
    .await?;
    state.audit(&caller, "user.create", &user.name).await?;
    Ok((StatusCode::CREATED, axum::Json(UserView::from(&user))))
}

/// The user with `id` if the caller may see them: admins and viewers see everyone,
/// members only themselves (anyone else is "not found": no existence leak).
async fn visible_user(state: &ApiState, caller: &Caller, id: &str) -> Result<UserRow, ApiError> {
    if caller.role == Role::Member && caller.user_id != id {
        return Err(ApiError::NotFound);
    }
    state.store.user_by_id(id).await?.ok_or(ApiError::NotFound)
}

/// A user.
#[utoipa::path(
    get,
    path = "/api/users/{id}",
    tag = "users",
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 404, description = "No such user, or not one the caller may see", body = ErrorBody),
    )
)]
async fn get_user(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<UserView>, ApiError> {
    let user = visible_user(&state, &caller, &id).await?;
    Ok(axum::Json(UserView::from(&user)))
}

/// A change to a user; fields left out stay as they are.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    /// A new role.
    pub role: Option<Role>,
    /// `true` disables the user (sessions end at once, keys stop within the key cache
    /// TTL); `false` enables them again.
    pub disabled: Option<bool>,
}

/// Changes a user's role or disables them (admin only; never oneself).
#[utoipa::path(
    patch,
    path = "/api/users/{id}",
    tag = "users",
    params(("id" = String, Path, description = "The user's id")),
    request_body = UserUpdate,
    responses(
        (status = 200, description = "The user as changed", body = UserView),
        (status = 403, description = "Not an admin, or one's own account", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    )
)]
async fn update_user(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(update): Json<UserUpdate>,
) -> Result<axum::Json<UserView>, ApiError> {
    // The same rule for both: an admin locking themselves out or demoting themselves could
    // leave no admin; anyone else would be raising themselves.
    users::may_set_role(caller.role, &caller.user_id, &id)?;
    let user = visible_user(&state, &caller, &id).await?;
    if let Some(role) = update.role {
        state.store.set_user_role(&id, role).await?;
        state
            .audit(&caller, &format!("user.set_role.{role}"), &user.name)
            .await?;
    }
    if let Some(disabled) = update.disabled {
        let at = disabled.then(|| state.clock.now_ms());
        state.store.set_user_disabled(&id, at).await?;
        let action = if disabled {
            "user.disable"
        } else {
            "user.enable"
        };
        state.audit(&caller, action, &user.name).await?;
    }
    let user = state
        .store
        .user_by_id(&id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(axum::Json(UserView::from(&user)))
}

/// A new password.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// At least 12 characters.
    pub password: String,
    /// One's own current password (needed to change one's own, not for an admin's reset
    /// of someone else's).
    pub current_password: Option<String>,
}

/// Sets a user's password: one's own (with the current one), or anyone's as an admin.
/// Every session of the user ends.
#[utoipa::path(
    post,
    path = "/api/users/{id}/password",
    tag = "users",
    params(("id" = String, Path, description = "The user's id")),
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed; the user's sessions ended"),
        (status = 403, description = "Someone else's, and not an admin; or a wrong current password", body = ErrorBody),
        (status = 404, description = "No such user, or not one the caller may see", body = ErrorBody),
        (status = 422, description = "The password breaks the policy", body = ErrorBody),
    )
)]
async fn set_password(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(change): Json<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    let user = visible_user(&state, &caller, &id).await?;
    let own = caller.user_id == id;
    if own {
        // Whoever holds a session but not the password (a borrowed laptop) cannot keep it.
        let current = change.current_password.unwrap_or_default();
        let stored = user.password_hash.clone();
        let matches =
            tokio::task::spawn_blocking(move || crate::passwords::verify(&current, &stored))
                .await
                .map_err(|_| ApiError::Internal)?;
        if !matches {
            return Err(ApiError::Forbidden("the current password is wrong".into()));
        }
    } else {
        caller.require(Role::Admin)?;
    }
    let hash = users::hash_password(change.password).await?;
    state
        .store
        .set_user_password(&id, &hash, state.clock.now_ms())
        .await?;
    let action = if own {
        "user.change_password"
    } else {
        "user.reset_password"
    };
    state.audit(&caller, action, &user.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends every session of a user: one's own (signing out everywhere), or anyone's as an
/// admin.
#[utoipa::path(
    delete,
    path = "/api/users/{id}/sessions",
    tag = "users",
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 204, description = "Every session ended"),
        (status = 403, description = "Someone else's, and not an admin", body = ErrorBody),
        (status = 404, description = "No such user, or not one the caller may see", body = ErrorBody),
    )
)]
async fn revoke_sessions(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user = visible_user(&state, &caller, &id).await?;
    if caller.user_id != id {
        caller.require(Role::Admin)?;
    }
    state
        .store
        .revoke_user_sessions(&id, state.clock.now_ms())
        .await?;
    state
        .audit(&caller, "user.revoke_sessions", &user.name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests;
