//! Users: `GET /api/users`, `POST /api/users` (admin).

use super::caller::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::Json;
use super::state::ApiState;
use crate::store::UserRow;
use crate::users::{self, Role, UserError};
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(list_users, create_user))
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

#[cfg(test)]
mod tests;
