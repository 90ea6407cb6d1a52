//! The HTTP API for people and orchestrators, described by the OpenAPI document it serves
//! at `/api/openapi.json`.
//!
//! Each module serves one domain and returns its routes; [`router`] merges them and wraps
//! them all in the same layers: the session check ([`caller::authenticate`]), JSON errors,
//! a body limit, CORS for the configured origins only, security headers, and request
//! tracing that never records headers (where tokens and cookies travel) or query strings.
//! Paths outside `/api` that no route has are the dashboard's (`crate::dashboard`), under
//! the same layers.

pub mod audit;
pub mod auth;
pub mod budgets;
pub mod caller;
pub mod error;
pub mod extract;
pub mod keys;
pub mod models;
pub mod ops;
pub mod providers;
pub mod state;
pub mod teams;
pub mod usage;
pub mod users;

#[cfg(test)]
pub mod testing;

pub use caller::Caller;
pub use error::ApiError;
pub use state::ApiState;

use crate::dashboard::{Dashboard, is_api_path};
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

/// The OpenAPI document's header and security schemes; the paths come from the modules.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tollgate control plane API",
        description = "Sessions, users, teams, keys, providers, prices, usage and audit of a Tollgate gateway."
    ),
    modifiers(&SessionSchemes),
    security(("session_bearer" = []), ("session_cookie" = []))
)]
struct ApiDoc;

/// Adds the two ways a session is presented to the document.
struct SessionSchemes;

impl utoipa::Modify for SessionSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session_bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "metrics_bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(caller::SESSION_COOKIE))),
        );
    }
}

/// Every route of the API with its OpenAPI description, before state and layers.
pub fn openapi_router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(ops::routes())
        .merge(auth::routes())
        .merge(users::routes())
        .merge(teams::routes())
        .merge(audit::routes())
        .merge(keys::routes())
        .merge(budgets::routes())
        .merge(providers::routes())
        .merge(models::routes())
        .merge(usage::routes())
}

/// The API, ready to serve, and the dashboard (if given) at every path outside it.
pub fn router(state: ApiState, dashboard: Option<Dashboard>) -> Router {
    let (routes, document) = openapi_router().split_for_parts();
    let document = Arc::new(document);
    let settings = Arc::clone(&state.settings);
    routes
        .route(
            "/api/openapi.json",
            get(move || {
                let document = Arc::clone(&document);
                async move { axum::Json(document) }
            }),
        )
        .fallback(move |request: Request| fallback(dashboard.clone(), request))
        .layer(middleware::from_fn_with_state(state.clone(), caller::authenticate))
        .with_state(state)
        .layer(middleware::from_fn(json_errors))
        .layer(RequestBodyLimitLayer::new(settings.body_limit_bytes))
        .layer(tower::util::option_layer(cors(&settings.cors_origins)))
        // On every response: nothing but this origin's resources, no MIME sniffing, no
        // referrer, no framing, no caching of API answers.
        .layer(always(header::CONTENT_SECURITY_POLICY, "default-src 'self'"))
        .layer(always(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(always(header::REFERRER_POLICY, "no-referrer"))
        .layer(always(header::X_FRAME_OPTIONS, "DENY"))
        .layer(always(header::CACHE_CONTROL, "no-store"))
        .layer(
            TraceLayer::new_for_http()
                // Method and path only: headers carry tokens and cookies, queries may too.
                .make_span_with(|request: &Request| {
                    tracing::info_span!("http", method = %request.method(), path = %request.uri().path())
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
            HeaderName::from_static(caller::CSRF_HEADER),
        ]))
}

/// What answers a path no route has: the dashboard outside `/api`, else a JSON 404.
async fn fallback(dashboard: Option<Dashboard>, request: Request) -> Response {
    match dashboard {
        Some(dashboard) if !is_api_path(request.uri().path()) => dashboard.serve(request).await,
        _ => ApiError::NoRoute.into_response(),
    }
}

/// Sets `name: value` on every response, replacing a handler's.
fn always(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
}

/// CORS for `origins` only, with credentials (the session cookie); none for no origin.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_credentials(true)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PATCH,
                Method::PUT,
                Method::DELETE,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static(caller::CSRF_HEADER),
            ])
            .expose_headers([HeaderName::from_static(caller::REFRESHED_TOKEN_HEADER)]),
    )
}

/// Makes every error response JSON: axum's own refusals (an unknown method, a body over
/// the limit) come as plain text or empty; they get the API's shape with a code for
/// their status, and keep their status and other headers.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let mut error = error_for_status(status).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    for (name, value) in error.headers() {
        parts.headers.insert(name, value.clone());
    }
    *error.headers_mut() = parts.headers;
    *error.status_mut() = status;
    error
}

/// The API error closest to a bare status.
fn error_for_status(status: StatusCode) -> ApiError {
    match status {
        StatusCode::UNAUTHORIZED => ApiError::Unauthenticated,
        StatusCode::NOT_FOUND => ApiError::NoRoute,
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge,
        StatusCode::SERVICE_UNAVAILABLE => ApiError::Unavailable,
        s if s.is_server_error() => ApiError::Internal,
        s => ApiError::BadRequest(s.canonical_reason().unwrap_or("bad request").to_lowercase()),
    }
}

#[cfg(test)]
mod tests;
