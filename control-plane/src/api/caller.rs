//! Who is calling: the session a request presents (the `tollgate_session` cookie or an
//! `Authorization: Bearer` token), checked before any handler runs.
//!
//! [`authenticate`] (a middleware on every route) verifies the token's signature in
//! constant time before any store lookup, then asks the store whether the session is
//! still live, checks the CSRF token of cookie-authenticated changes, and refreshes a
//! session past half its lifetime. It leaves an [`Authentication`] in the request; the
//! [`Caller`] extractor turns it into the caller or a 401/403.

use super::error::ApiError;
use super::state::ApiState;
use crate::audit::AuditEntry;
use crate::sessions::{self, SessionClaims};
use crate::store::StoreError;
use crate::users::Role;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use std::net::SocketAddr;

/// The cookie that carries the session token (HttpOnly: scripts never see it).
pub const SESSION_COOKIE: &str = "tollgate_session";
/// The cookie that carries the session's CSRF token (readable by the dashboard's script).
pub const CSRF_COOKIE: &str = "tollgate_csrf";
/// The header a cookie-authenticated change must echo the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The response header that carries a refreshed session token to bearer clients.
pub const REFRESHED_TOKEN_HEADER: &str = "x-tollgate-session";

/// The signed-in user making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user's id.
    pub user_id: String,
    /// The user's name (what keys, budgets and usage carry).
    pub user_name: String,
    /// The user's role, as the store has it now.
    pub role: Role,
    /// The session the request came with.
    pub session_id: String,
    /// The client's IP address (the TCP peer's; forwarded headers are not trusted).
    pub from: String,
}

impl Caller {
    /// `Ok` if the caller's role is `role` or above (admin > member > viewer), else 403.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("this needs the {role} role")))
        }
    }

    /// `Ok` unless the caller is a viewer, who may change nothing.
    pub fn may_write(&self) -> Result<(), ApiError> {
        if self.role.may_write() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "viewers may not change anything".into(),
            ))
        }
    }

    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The audit entry of this caller's change `action` of `target` at `at_ms`.
    pub fn audit_entry(&self, action: &str, target: &str, at_ms: i64) -> AuditEntry {
        AuditEntry {
            actor: self.user_name.clone(),
            action: action.to_owned(),
            target: target.to_owned(),
            from: self.from.clone(),
            at_ms,
        }
    }
}

/// What [`authenticate`] found, left in the request's extensions.
#[derive(Debug, Clone)]
pub enum Authentication {
    /// The request carried no session.
    Anonymous,
    /// It carried one that cannot be used.
    Refused(Refusal),
    /// It carried a live session.
    Authenticated(Caller),
}

/// Why a presented session was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed, tampered, signed with another secret, expired, revoked, or its user disabled.
    Session,
    /// A cookie-authenticated change without the session's CSRF token.
    Csrf,
}

/// Where a request's session token came from: CSRF only threatens cookies, which a
/// browser attaches on its own; a bearer token is attached by code that holds it.
enum Presented {
    None,
    Bearer(String),
    Cookie(String),
}

impl Presented {
    /// The bearer token if the request has an `Authorization` header, else the session
    /// cookie. An `Authorization` header that is not a bearer token is a refusal, never a
    /// fall-back to the cookie.
    fn from_headers(headers: &HeaderMap) -> Option<Self> {
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let token = tollgate_core::keys::bearer_token(value.as_bytes())?;
            return Some(Presented::Bearer(
                String::from_utf8_lossy(token).into_owned(),
            ));
        }
        Some(match CookieJar::from_headers(headers).get(SESSION_COOKIE) {
            Some(cookie) => Presented::Cookie(cookie.value().to_owned()),
            None => Presented::None,
        })
    }
}

/// The client's IP address (the TCP peer's), for handlers without a session (login).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddr(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(client_addr(&parts.extensions)))
    }
}

/// The client's IP address as the request's connection tells it, or `unknown`.
pub fn client_addr(extensions: &axum::http::Extensions) -> String {
    extensions.get::<ConnectInfo<SocketAddr>>().map_or_else(
        || "unknown".to_owned(),
        |ConnectInfo(addr)| addr.ip().to_string(),
    )
}

/// A session token refreshed for the response.
struct Refreshed {
    token: String,
    max_age_s: u64,
}

/// Middleware on every route: authenticates the request's session (see the module doc),
/// and sends a refreshed token back when the session was past half its lifetime.
pub async fn authenticate(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    let from = client_addr(request.extensions());
    let unsafe_method = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let csrf = request
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let presented = Presented::from_headers(request.headers());
    let (authentication, refreshed) = match presented {
        None => (Authentication::Refused(Refusal::Session), None),
        Some(Presented::None) => (Authentication::Anonymous, None),
        Some(Presented::Bearer(token)) => match resolve(&state, &token, from).await {
            Ok(found) => found,
            Err(e) => return ApiError::from(e).into_response(),
        },
        Some(Presented::Cookie(token)) => match resolve(&state, &token, from).await {
            Ok((Authentication::Authenticated(caller), _))
                if unsafe_method
                    && !csrf.as_deref().is_some_and(|presented| {
                        sessions::csrf_matches(&state.session_secret, &caller.session_id, presented)
                    }) =>
            {
                (Authentication::Refused(Refusal::Csrf), None)
            }
            Ok(found) => found,
            Err(e) => return ApiError::from(e).into_response(),
        },
    };
    request.extensions_mut().insert(authentication);
    let mut response = next.run(request).await;
    // A handler that set the session cookie itself (logout) has the last word.
    let handler_set_session = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|c| c.as_bytes().starts_with(SESSION_COOKIE.as_bytes()));
    if let Some(refreshed) = refreshed.filter(|_| !handler_set_session) {
        let headers = response.headers_mut();
        if let Ok(cookie) =
            HeaderValue::from_str(&session_cookie(&refreshed.token, refreshed.max_age_s))
        {
            headers.append(header::SET_COOKIE, cookie);
        }
        if let Ok(token) = HeaderValue::from_str(&refreshed.token) {
            headers.insert(REFRESHED_TOKEN_HEADER, token);
        }
    }
    response
}

/// The session `token` names, if its signature holds, it has not expired, and the store
/// still has it live; with a refreshed token when it is past half its lifetime.
async fn resolve(
    state: &ApiState,
    token: &str,
    from: String,
) -> Result<(Authentication, Option<Refreshed>), StoreError> {
    let now = state.clock.now_ms();
    let refused = (Authentication::Refused(Refusal::Session), None);
    // Signature first: a forged token never reaches the store.
    let Ok(claims) = sessions::verify(&state.session_secret, token, now) else {
        return Ok(refused);
    };
    let Some((session, user)) = state.store.live_session(&claims.session_id, now).await? else {
        return Ok(refused);
    };
    if session.user_id != claims.user_id {
        return Ok(refused);
    }
    let caller = Caller {
        user_id: user.id,
        user_name: user.name,
        role: user.role,
        session_id: session.id,
        from,
    };
    let ttl = state.settings.session_ttl_ms;
    let mut refreshed = None;
    if sessions::needs_refresh(session.expires_at_ms, now, ttl) {
        let exp = now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
        if state.store.extend_session(&caller.session_id, exp).await? {
            let claims = SessionClaims {
                session_id: caller.session_id.clone(),
                user_id: caller.user_id.clone(),
                role: caller.role,
                exp,
            };
            refreshed = Some(Refreshed {
                token: sessions::sign(&state.session_secret, &claims),
                max_age_s: ttl / 1000,
            });
        }
    }
    Ok((Authentication::Authenticated(caller), refreshed))
}

/// The `Set-Cookie` value of a session token: HttpOnly (no script reads it), Secure (never
/// over plain HTTP), SameSite=Strict (no other site's page sends it).
pub fn session_cookie(token: &str, max_age_s: u64) -> String {
    format!(
        "{SESSION_COOKIE}={token}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_age_s}"
    )
}

/// The `Set-Cookie` value of a session's CSRF token: readable by the dashboard's script,
/// which echoes it in `x-csrf-token`.
pub fn csrf_cookie(token: &str, max_age_s: u64) -> String {
    format!("{CSRF_COOKIE}={token}; Secure; SameSite=Strict; Path=/; Max-Age={max_age_s}")
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Authentication>() {
            Some(Authentication::Authenticated(caller)) => Ok(caller.clone()),
            Some(Authentication::Refused(Refusal::Csrf)) => Err(ApiError::Csrf),
            Some(Authentication::Anonymous | Authentication::Refused(Refusal::Session)) => {
                Err(ApiError::Unauthenticated)
            }
            None => {
                tracing::error!("Caller extracted on a route without the authenticate middleware");
                Err(ApiError::Internal)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role) -> Caller {
        Caller {
            user_id: "usr_1".into(),
            user_name: "alice".into(),
            role,
            session_id: "ses_1".into(),
            from: "10.0.0.1".into(),
        }
    }

    #[test]
    fn roles_rank_admin_over_member_over_viewer() {
        assert!(caller(Role::Admin).require(Role::Member).is_ok());
        assert!(caller(Role::Member).require(Role::Member).is_ok());
        assert!(matches!(
            caller(Role::Member).require(Role::Admin),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            caller(Role::Viewer).may_write(),
            Err(ApiError::Forbidden(_))
        ));
        assert!(caller(Role::Member).may_write().is_ok());
    }

    #[test]
    fn an_authorization_header_that_is_not_a_bearer_is_refused_not_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("tollgate_session=abc"),
        );
        assert!(
            matches!(Presented::from_headers(&headers), Some(Presented::Cookie(t)) if t == "abc")
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YWRtaW46YWRtaW4="),
        );
        assert!(Presented::from_headers(&headers).is_none());
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer xyz"),
        );
        assert!(
            matches!(Presented::from_headers(&headers), Some(Presented::Bearer(t)) if t == "xyz")
        );
    }

    #[test]
    fn cookies_carry_their_protections() {
        let c = session_cookie("tok", 60);
        for part in ["HttpOnly", "Secure", "SameSite=Strict", "Max-Age=60"] {
            assert!(c.contains(part), "{c}");
        }
        assert!(
            !csrf_cookie("tok", 60).contains("HttpOnly"),
            "the dashboard reads it"
        );
    }
}
