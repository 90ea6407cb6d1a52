//! Models and their prices: `GET /api/models[/{name}]` (every role) with the price in
//! force and the whole history; `POST /api/models`, `POST /api/models/{name}/prices` and
//! `DELETE /api/models/{name}` (admins). A price takes effect at the instant given (now by
//! default, never in the past): calls are priced by the price in force when they were made.

use super::caller::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::Json;
use super::state::ApiState;
use crate::catalog::admin::{DollarPrice, ModelView, NewModel};
use crate::users::Role;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_models, create_model))
        .routes(routes!(get_model, delete_model))
        .routes(routes!(add_price))
}

/// A model to add, with its first price (in force from now).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewModelBody {
    /// Name clients write in `model`.
    pub name: String,
    /// The provider serving it (the config file's or the API's).
    pub provider: String,
    /// The provider's name for it, when different.
    pub upstream_model: Option<String>,
    /// Most output tokens one completion may produce (default: `limits.max_output_tokens`).
    pub max_output_tokens: Option<i64>,
    /// Its price, US dollars per million tokens.
    pub price: DollarPrice,
}

/// A price from an instant on, US dollars per million tokens.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPriceBody {
    /// From when, Unix ms; now if left out; never in the past.
    pub effective_from_ms: Option<i64>,
    /// The price.
    #[serde(flatten)]
    pub price: DollarPrice,
}

/// Every model served, with its prices.
#[utoipa::path(
    get,
    path = "/api/models",
    tag = "models",
    responses(
        (status = 200, description = "Models by name", body = [ModelView]),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
async fn list_models(
    State(state): State<ApiState>,
    _caller: Caller,
) -> Result<axum::Json<Vec<ModelView>>, ApiError> {
    Ok(axum::Json(state.catalog_admin.models()))
}

/// One model, with its prices.
#[utoipa::path(
    get,
    path = "/api/models/{name}",
    tag = "models",
    params(("name" = String, Path, description = "The model's name")),
    responses(
        (status = 200, description = "The model", body = ModelView),
        (status = 404, description = "No such model", body = ErrorBody),
    )
)]
async fn get_model(
    State(state): State<ApiState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<ModelView>, ApiError> {
    Ok(axum::Json(state.catalog_admin.model(&name)?))
}

/// Adds a model (admin only); it is served at once.
#[utoipa::path(
    post,
    path = "/api/models",
    tag = "models",
    request_body = NewModelBody,
    responses(
        (status = 201, description = "Created", body = ModelView),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field is wrong", body = ErrorBody),
    )
)]
async fn create_model(
    State(state): State<ApiState>,
    caller: Caller,
    Json(body): Json<NewModelBody>,
) -> Result<(StatusCode, axum::Json<ModelView>), ApiError> {
    caller.require(Role::Admin)?;
    let view = state
        .catalog_admin
        .create_model(NewModel {
            name: body.name,
            provider: body.provider,
            upstream_model: body.upstream_model,
            max_output_tokens: body.max_output_tokens,
            price: body.price,
        })
        .await?;
    state.audit(&caller, "model.create", &view.name).await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// Adds a price to a model added through the API (admin only).
#[utoipa::path(
    post,
    path = "/api/models/{name}/prices",
    tag = "models",
    params(("name" = String, Path, description = "The model's name")),
    request_body = NewPriceBody,
    responses(
        (status = 201, description = "Added; the model with its prices", body = ModelView),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 409, description = "A price from that instant exists, or the model is the config file's", body = ErrorBody),
        (status = 422, description = "A price or an instant in the past", body = ErrorBody),
    )
)]
async fn add_price(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<NewPriceBody>,
) -> Result<(StatusCode, axum::Json<ModelView>), ApiError> {
    caller.require(Role::Admin)?;
    let view = state
        .catalog_admin
        .add_price(&name, body.effective_from_ms, body.price)
        .await?;
    state.audit(&caller, "model.price", &name).await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// Removes a model added through the API (admin only); calls made before stay priced.
#[utoipa::path(
    delete,
    path = "/api/models/{name}",
    tag = "models",
    params(("name" = String, Path, description = "The model's name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 409, description = "The config file's model", body = ErrorBody),
    )
)]
async fn delete_model(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    if state.catalog.config_has_model(&name) {
        return Err(ApiError::Conflict(format!(
            "model `{name}` is defined in the config file; remove it there"
        )));
    }
    state.catalog_admin.delete_model(&name).await?;
    state.audit(&caller, "model.delete", &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests;
