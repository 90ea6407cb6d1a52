//! The catalog's part from the store: stored providers with their keys opened, stored
//! models with their prices over time, and the prices of models removed since.

use super::{Catalog, Model, PriceChange, PriceSchedule, Provider};
use crate::config::{AuthScheme, ConfigError, ProviderFile, validate_provider};
use crate::secrets::{Keyring, SecretsError};
use crate::store::{ProviderRecord, StoredCatalog, StoredPrice};
use std::collections::HashMap;
use thiserror::Error;

/// Why the store's part could not be built.
#[derive(Debug, Error)]
pub enum StoredCatalogError {
    /// A provider's key could not be opened.
    #[error("provider `{provider}`'s key: {source}")]
    Key {
        /// The provider.
        provider: String,
        /// Why.
        source: SecretsError,
    },
    /// A stored provider no longer validates.
    #[error("stored provider `{provider}`: {source}")]
    Provider {
        /// The provider.
        provider: String,
        /// Why.
        source: ConfigError,
    },
}

/// `scheme` as stored.
pub(crate) fn scheme_name(scheme: AuthScheme) -> &'static str {
    match scheme {
        AuthScheme::Bearer => "bearer",
        AuthScheme::Raw => "raw",
    }
}

fn scheme_of(name: &str) -> AuthScheme {
    if name == "raw" {
        AuthScheme::Raw
    } else {
        AuthScheme::Bearer
    }
}

/// The record's fields as a provider entry, for validation.
pub(crate) fn provider_file(p: &ProviderRecord) -> ProviderFile {
    ProviderFile {
        name: p.name.clone(),
        url: Some(p.base_url.clone()),
        kind: Some(p.kind.clone()),
        auth_header: Some(p.auth_header.clone()),
        auth_scheme: Some(scheme_of(&p.auth_scheme)),
        api_key_env: None,
        timeout_ms: Some(p.timeout_ms),
        forward_headers: p.forward_headers.clone(),
        allow_background: p.allow_background,
    }
}

/// The stored provider as served, its key opened with `keys`.
fn provider(p: &ProviderRecord, keys: &Keyring) -> Result<Provider, StoredCatalogError> {
    let key = p
        .key
        .as_ref()
        .map(|sealed| keys.open(&p.name, sealed))
        .transpose()
        .map_err(|source| StoredCatalogError::Key {
            provider: p.name.clone(),
            source,
        })?;
    validate_provider(provider_file(p), key.as_deref().map(String::as_str), &|f| {
        f.to_owned()
    })
    .map_err(|source| StoredCatalogError::Provider {
        provider: p.name.clone(),
        source,
    })
}

/// The stored providers as Envoy needs them: address and name, never their key (which
/// the filter injects from the catalog the control plane serves).
pub fn providers_without_keys(stored: &StoredCatalog) -> Result<Vec<Provider>, StoredCatalogError> {
    stored
        .providers
        .iter()
        .map(|p| {
            validate_provider(provider_file(p), None, &|f| f.to_owned()).map_err(|source| {
                StoredCatalogError::Provider {
                    provider: p.name.clone(),
                    source,
                }
            })
        })
        .collect()
}

/// The prices of `stored`, by model.
fn schedules(prices: &[StoredPrice]) -> HashMap<String, PriceSchedule> {
    let mut changes: HashMap<&str, Vec<PriceChange>> = HashMap::new();
    for p in prices {
        changes.entry(&p.model).or_default().push(PriceChange {
            effective_from_ms: p.effective_from_ms,
            price: p.price,
        });
    }
    changes
        .into_iter()
        .filter_map(|(model, c)| Some((model.to_owned(), PriceSchedule::from_changes(c)?)))
        .collect()
}

/// The store's part of the catalog; a model without an output cap of its own gets
/// `default_max_output_tokens`.
pub fn catalog_of(
    stored: &StoredCatalog,
    keys: &Keyring,
    default_max_output_tokens: u64,
) -> Result<Catalog, StoredCatalogError> {
    let providers = stored
        .providers
        .iter()
        .map(|p| Ok((p.name.clone(), provider(p, keys)?)))
        .collect::<Result<HashMap<_, _>, StoredCatalogError>>()?;
    let mut prices = schedules(&stored.prices);
    let mut models = HashMap::new();
    for m in &stored.models {
        let Some(schedule) = prices.remove(&m.name) else {
            tracing::warn!(model = %m.name, "stored model `{}` has no price; it is left out", m.name);
            continue;
        };
        models.insert(
            m.name.clone(),
            Model {
                name: m.name.clone(),
                provider: m.provider.clone(),
                upstream_model: m.upstream_model.clone(),
                prices: schedule,
                max_output_tokens: m.max_output_tokens.unwrap_or(default_max_output_tokens),
            },
        );
    }
    Ok(Catalog {
        providers,
        models,
        // What is left are the prices of removed models.
        retired_prices: prices,
    })
}
