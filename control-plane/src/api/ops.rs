//! Operations: `/healthz` (the process is up), `/readyz` (its database answers) and
//! `/metrics` (Prometheus text, behind its own bearer token, never a session).

use super::error::ApiError;
use super::state::ApiState;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// Aggregates in Prometheus's text format, for `Authorization: Bearer` with the token of
/// `[api] metrics_token_env` only (compared in constant time); absent when no token is set.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    security(("metrics_bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text format", body = String),
        (status = 401, description = "No or a wrong metrics token"),
        (status = 404, description = "No metrics token is configured"),
    )
)]
async fn metrics(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<([(header::HeaderName, &'static str); 1], String), ApiError> {
    let Some(token) = &state.settings.metrics_token else {
        return Err(ApiError::NoRoute);
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .map_or(&b""[..], |v| v.as_bytes());
    if !token.accepts(presented) {
        return Err(ApiError::Unauthenticated);
    }
    let body = crate::metrics::global()
        .map(crate::metrics::Metrics::render)
        .unwrap_or_default();
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    ))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Up", body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// The process can serve: its database answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, description = "Ready", body = String),
        (status = 503, description = "The database does not answer"),
    )
)]
async fn readyz(State(state): State<ApiState>) -> Result<&'static str, ApiError> {
    match state.store.ping().await {
        Ok(()) => Ok("ready\n"),
        Err(e) => {
            tracing::warn!("readyz: {e}");
            Err(ApiError::Unavailable)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::api::testing::{TestApi, test_settings};
    use crate::users::Role;
    use axum::http::{Method, StatusCode, header};
    use tollgate_core::sidecar::SidecarToken;

    const METRICS_TOKEN: &str = "metrics-token-metrics-token-metrics-01";

    #[tokio::test]
    async fn metrics_answer_their_own_token_only_and_it_opens_nothing_else() {
        let mut settings = test_settings();
        settings.metrics_token = Some(SidecarToken::from(METRICS_TOKEN.to_owned()));
        let api = TestApi::start_with(settings).await;
        let admin = api.user(Role::Admin, "root").await;
        let with = |token: &str, path: &str| {
            let mut request = api.anonymous().request(Method::GET, path, None);
            request.headers_mut().insert(
                header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
            request
        };
        // A family shows once it has a sample.
        crate::metrics::global().unwrap().refused("api_key_revoked");
        let client = api.anonymous();
        let (status, headers, body) = client.send(with(METRICS_TOKEN, "/metrics")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        assert!(
            body.as_str()
                .unwrap()
                .contains("# TYPE tollgate_refusals_total counter"),
            "{body}"
        );
        for wrong in [
            "metrics-token-metrics-token-metrics-02",
            admin.token.as_deref().unwrap(),
            "",
        ] {
            let (status, _, _) = client.send(with(wrong, "/metrics")).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong}");
        }
        let (status, _) = admin.get("/metrics").await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "an admin's session is not the metrics token"
        );
        let (status, _, _) = client.send(with(METRICS_TOKEN, "/api/users")).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "the metrics token opens no other route"
        );

        let off = TestApi::start().await;
        let (status, _, _) = off.anonymous().send(with(METRICS_TOKEN, "/metrics")).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "no token configured: no metrics"
        );
    }
}
