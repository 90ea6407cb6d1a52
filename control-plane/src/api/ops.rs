//! Operations: `/healthz` (the process is up) and `/readyz` (its database answers).

use super::error::ApiError;
use super::state::ApiState;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
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
