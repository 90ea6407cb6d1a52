//! Providers: `GET /api/providers[/{name}]` (every role), `POST`, `PATCH` and `DELETE`
//! (admins). A provider's key is write-only: it is sealed before it is stored and only a
//! fingerprint of it is ever answered.

use super::caller::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::Json;
use super::state::ApiState;
use crate::catalog::admin::{CatalogError, KeyChange, NewProvider, ProviderView};
use crate::config::{AuthScheme, ProviderFile};
use crate::secrets::SecretsError;
use crate::users::Role;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use zeroize::Zeroizing;

/// The routes of this module.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_providers, create_provider))
        .routes(routes!(get_provider, update_provider, delete_provider))
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Invalid { field, problem } => ApiError::Invalid { field, problem },
            CatalogError::Conflict(message) => ApiError::Conflict(message),
            CatalogError::NotFound { .. } => ApiError::NotFound,
            CatalogError::Secrets(SecretsError::NoMasterKey) => ApiError::invalid(
                "api_key",
                "cannot be stored: no master key is configured (TOLLGATE_MASTER_KEY or \
                 `secrets.master_key_file`)",
            ),
            CatalogError::Store(e) => e.into(),
            other => {
                // Which provider's key failed is in the message, never the key itself.
                tracing::error!(error = %other, "catalog change failed");
                ApiError::Internal
            }
        }
    }
}

/// A provider to add.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProviderBody {
    /// Name; letters, digits, `-`, `_`, `.` (it is also an Envoy cluster name).
    pub name: String,
    /// `https://host[:port]`; http, loopback and private addresses only with
    /// `catalog.allow_private_upstreams`; link-local and cloud metadata addresses never.
    pub base_url: String,
    /// The API it speaks: `openai` (default), `anthropic`, … .
    pub kind: Option<String>,
    /// Header carrying its key (default: the kind's).
    pub auth_header: Option<String>,
    /// `bearer` or `raw` (default: the kind's).
    #[schema(value_type = Option<String>)]
    pub auth_scheme: Option<AuthScheme>,
    /// Its key: stored sealed, never answered.
    pub api_key: Option<String>,
    /// Longest whole answer, ms (default 600000).
    pub timeout_ms: Option<u32>,
    /// Client headers passed on beyond the gateway's allow-list.
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// Responses `background: true` allowed.
    #[serde(default)]
    pub allow_background: bool,
}

/// Changes to a provider added through the API; a field left out is kept.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderChanges {
    /// New address.
    pub base_url: Option<String>,
    /// New API kind.
    pub kind: Option<String>,
    /// New key header.
    pub auth_header: Option<String>,
    /// `bearer` or `raw`.
    #[schema(value_type = Option<String>)]
    pub auth_scheme: Option<AuthScheme>,
    /// A new key, replacing the stored one.
    pub api_key: Option<String>,
    /// Send no key from now on.
    #[serde(default)]
    pub remove_api_key: bool,
    /// New timeout, ms.
    pub timeout_ms: Option<u32>,
    /// New forwarded headers.
    pub forward_headers: Option<Vec<String>>,
    /// Responses `background: true` allowed.
    pub allow_background: Option<bool>,
}

/// Every provider served: the config file's and the API's.
#[utoipa::path(
    get,
    path = "/api/providers",
    tag = "providers",
    responses(
        (status = 200, description = "Providers by name (keys only as fingerprints)", body = [ProviderView]),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
async fn list_providers(
    State(state): State<ApiState>,
    _caller: Caller,
) -> Result<axum::Json<Vec<ProviderView>>, ApiError> {
    Ok(axum::Json(state.catalog_admin.providers().await?))
}

/// One provider.
#[utoipa::path(
    get,
    path = "/api/providers/{name}",
    tag = "providers",
    params(("name" = String, Path, description = "The provider's name")),
    responses(
        (status = 200, description = "The provider", body = ProviderView),
        (status = 404, description = "No such provider", body = ErrorBody),
    )
)]
async fn get_provider(
    State(state): State<ApiState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<ProviderView>, ApiError> {
    Ok(axum::Json(state.catalog_admin.provider(&name).await?))
}

/// Adds a provider (admin only); it is served at once.
#[utoipa::path(
    post,
    path = "/api/providers",
    tag = "providers",
    request_body = NewProviderBody,
    responses(
        (status = 201, description = "Created", body = ProviderView),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 409, description = "The name is taken (by the API or the config file)", body = ErrorBody),
        (status = 422, description = "A field is wrong, e.g. a base URL inside the network", body = ErrorBody),
    )
)]
async fn create_provider(
    State(state): State<ApiState>,
    caller: Caller,
    Json(body): Json<NewProviderBody>,
) -> Result<(StatusCode, axum::Json<ProviderView>), ApiError> {
    caller.require(Role::Admin)?;
    let new = NewProvider {
        fields: ProviderFile {
            name: body.name,
            url: Some(body.base_url),
            kind: body.kind,
            auth_header: body.auth_header,
            auth_scheme: body.auth_scheme,
            api_key_env: None,
            timeout_ms: body.timeout_ms,
            forward_headers: body.forward_headers,
            allow_background: body.allow_background,
        },
        api_key: body.api_key.map(Zeroizing::new),
    };
    let view = state.catalog_admin.create_provider(new).await?;
    state.audit(&caller, "provider.create", &view.name).await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// Changes a provider added through the API (admin only); the config file's are changed
/// in the file.
#[utoipa::path(
    patch,
    path = "/api/providers/{name}",
    tag = "providers",
    params(("name" = String, Path, description = "The provider's name")),
    request_body = ProviderChanges,
    responses(
        (status = 200, description = "Changed", body = ProviderView),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such provider", body = ErrorBody),
        (status = 409, description = "The config file's provider", body = ErrorBody),
        (status = 422, description = "A field is wrong", body = ErrorBody),
    )
)]
async fn update_provider(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(changes): Json<ProviderChanges>,
) -> Result<axum::Json<ProviderView>, ApiError> {
    caller.require(Role::Admin)?;
    let admin = &state.catalog_admin;
    let key = match (changes.api_key, changes.remove_api_key) {
        (Some(_), true) => {
            return Err(ApiError::invalid(
                "remove_api_key",
                "and `api_key` are exclusive",
            ));
        }
        (Some(key), false) => KeyChange::Set(Zeroizing::new(key)),
        (None, true) => KeyChange::Remove,
        (None, false) => KeyChange::Keep,
    };
    let Some(fields) = admin.stored_provider_fields(&name).await? else {
        return Err(if state.catalog.config_has_provider(&name) {
            ApiError::Conflict(format!(
                "provider `{name}` is defined in the config file; change it there"
            ))
        } else {
            ApiError::NotFound
        });
    };
    let fields = ProviderFile {
        url: changes.base_url.or(fields.url),
        kind: changes.kind.or(fields.kind),
        auth_header: changes.auth_header.or(fields.auth_header),
        auth_scheme: changes.auth_scheme.or(fields.auth_scheme),
        timeout_ms: changes.timeout_ms.or(fields.timeout_ms),
        forward_headers: changes.forward_headers.unwrap_or(fields.forward_headers),
        allow_background: changes.allow_background.unwrap_or(fields.allow_background),
        ..fields
    };
    let view = admin.update_provider(&name, fields, key).await?;
    state.audit(&caller, "provider.update", &name).await?;
    Ok(axum::Json(view))
}

/// Removes a provider added through the API (admin only), unless a model still uses it.
#[utoipa::path(
    delete,
    path = "/api/providers/{name}",
    tag = "providers",
    params(("name" = String, Path, description = "The provider's name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such provider", body = ErrorBody),
        (status = 409, description = "A model still uses it, or it is the config file's", body = ErrorBody),
    )
)]
async fn delete_provider(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    if state.catalog.config_has_provider(&name) {
        return Err(ApiError::Conflict(format!(
            "provider `{name}` is defined in the config file; remove it there"
        )));
    }
    state.catalog_admin.delete_provider(&name).await?;
    state.audit(&caller, "provider.delete", &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests;
