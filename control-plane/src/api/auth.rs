//! Sessions: `POST /api/auth/login`, `POST /api/auth/logout`, `GET /api/auth/me`.

use super::caller::{self, Caller, ClientAddr};
use super::error::{ApiError, ErrorBody};
use super::extract::Json;
use super::state::ApiState;
use super::users::UserView;
use crate::audit::AuditEntry;
use crate::passwords;
use crate::sessions::{self, SessionClaims};
use crate::store::SessionRow;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
}

/// A login.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The user's name.
    pub name: String,
    /// The user's password.
    pub password: String,
}

/// A new session.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LoginResponse {
    /// The session token, for `Authorization: Bearer` (also set as the HttpOnly cookie).
    pub token: String,
    /// The CSRF token a cookie-authenticated change sends in `x-csrf-token` (also set as
    /// the `tollgate_csrf` cookie).
    pub csrf_token: String,
    /// When the session ends unless used, Unix ms.
    pub expires_at_ms: i64,
    /// Who signed in.
    pub user: UserView,
}

/// Failed logins counted per user and per client address.
fn failure_subjects(name: &str, from: &str) -> [String; 2] {
    [format!("user:{name}"), format!("ip:{from}")]
}

/// Signs in with a name and password: answers the session token and sets it as an
/// HttpOnly, Secure, SameSite=Strict cookie.
#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = LoginResponse),
        (status = 401, description = "Wrong name or password", body = ErrorBody),
        (status = 429, description = "Too many failed logins", body = ErrorBody),
    )
)]
async fn login(
    State(state): State<ApiState>,
    ClientAddr(from): ClientAddr,
    Json(login): Json<LoginRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let name = login.name.trim().to_owned();
    let settings = &state.settings;
    let now = state.clock.now_ms();
    let window = i64::try_from(settings.login_window_ms).unwrap_or(i64::MAX);
    let [user_subject, ip_subject] = failure_subjects(&name, &from);
    let limited = state
        .store
        .login_failures(&user_subject, now, window)
        .await?
        >= u64::from(settings.login_failures_per_user)
        || state.store.login_failures(&ip_subject, now, window).await?
            >= u64::from(settings.login_failures_per_ip);
    if limited {
        tracing::warn!(user = %name, from = %from, "login refused: too many failed logins");
        return Err(ApiError::TooManyAttempts {
            retry_after_s: settings.login_window_ms.div_ceil(1000),
        });
    }
    let user = state.store.user_by_name(&name).await?;
    let password = login.password;
    let user = tokio::task::spawn_blocking(move || match user {
        Some(user) if user.disabled_at_ms.is_none() => {
            passwords::verify(&password, &user.password_hash).then_some(user)
        }
        // The same work as a wrong password: timing does not tell who exists.
        _ => {
            passwords::verify_nothing(&password);
            None
        }
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "password check failed");
        ApiError::Internal
    })?;
    let Some(user) = user else {
        for subject in [&user_subject, &ip_subject] {
            state
                .store
                .count_login_failure(subject, now, window)
                .await?;
        }
        tracing::warn!(user = %name, from = %from, "login failed");
        return Err(ApiError::InvalidCredentials);
    };
    // The address keeps its count: one good account must not reset a guesser's tally.
    state.store.clear_login_failures(&user_subject).await?;
    let ttl_ms = i64::try_from(settings.session_ttl_ms).unwrap_or(i64::MAX);
    let session = SessionRow {
        id: sessions::new_session_id(),
        user_id: user.id.clone(),
        created_at_ms: now,
        expires_at_ms: now.saturating_add(ttl_ms),
    };
    state.store.insert_session(&session).await?;
    let claims = SessionClaims {
        session_id: session.id.clone(),
        user_id: user.id.clone(),
        role: user.role,
        exp: session.expires_at_ms,
    };
    let token = sessions::sign(&state.session_secret, &claims);
    let csrf_token = sessions::csrf_token(&state.session_secret, &session.id);
    state
        .store
        .record_audit(&AuditEntry {
            actor: user.name.clone(),
            action: "session.login".into(),
            target: session.id.clone(),
            from,
            at_ms: now,
        })
        .await?;
    let max_age_s = settings.session_ttl_ms / 1000;
    let mut headers = HeaderMap::new();
    for cookie in [
        caller::session_cookie(&token, max_age_s),
        caller::csrf_cookie(&csrf_token, max_age_s),
    ] {
        let value = HeaderValue::from_str(&cookie).map_err(|_| ApiError::Internal)?;
        headers.append(header::SET_COOKIE, value);
    }
    let body = LoginResponse {
        token,
        csrf_token,
        expires_at_ms: session.expires_at_ms,
        user: UserView::from(&user),
    };
    Ok((headers, axum::Json(body)))
}

/// Signs out: ends the session at once (its token is refused from now on) and clears the
/// cookies.
#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "auth",
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "No live session", body = ErrorBody),
    )
)]
async fn logout(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    state
        .store
        .revoke_session(&caller.session_id, state.clock.now_ms())
        .await?;
    state
        .audit(&caller, "session.logout", &caller.session_id)
        .await?;
    let mut headers = HeaderMap::new();
    for cookie in [caller::session_cookie("", 0), caller::csrf_cookie("", 0)] {
        let value = HeaderValue::from_str(&cookie).map_err(|_| ApiError::Internal)?;
        headers.append(header::SET_COOKIE, value);
    }
    Ok((StatusCode::NO_CONTENT, headers))
}

/// The signed-in user.
#[utoipa::path(
    get,
    path = "/api/auth/me",
    tag = "auth",
    responses(
        (status = 200, description = "The caller", body = UserView),
        (status = 401, description = "No live session", body = ErrorBody),
    )
)]
async fn me(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<axum::Json<UserView>, ApiError> {
    let user = state
        .store
        .user_by_id(&caller.user_id)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    Ok(axum::Json(UserView::from(&user)))
}

#[cfg(test)]
mod tests;
