//! Changes to the catalog through the HTTP API: providers (their keys sealed), models and
//! prices. Each change is checked, written to the store, and the store's part of the
//! catalog is read again and put in force at once (other replicas follow within
//! [`CatalogAdmin::refresh_if_changed`]'s period).

use super::stored::{StoredCatalogError, catalog_of, provider_file, scheme_name};
use super::upstream_policy;
use super::{LiveCatalog, PriceSchedule};
use crate::clock::Clock;
use crate::config::{
    BudgetSettings, ConfigError, ModelFile, ProviderFile, validate_model, validate_provider,
};
use crate::secrets::{Keyring, SecretsError};
use crate::store::{
    ModelRecord, PriceRecord, ProviderRecord, ProviderRemoval, Rewrapped, Store, StoreError,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use thiserror::Error;
use tollgate_core::pricing::{self, Price};
use zeroize::Zeroizing;

/// Why a catalog change was refused or failed.
#[derive(Debug, Error)]
pub enum CatalogError {
    /// A field's value is refused.
    #[error("`{field}` {problem}")]
    Invalid {
        /// The field, as the API names it.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// The name is taken, by the store or the config file.
    #[error("{0}")]
    Conflict(String),
    /// No stored provider or model has that name.
    #[error("no {kind} named `{name}`")]
    NotFound {
        /// `provider` or `model`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A key could not be sealed or opened.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The store's part of the catalog could not be built.
    #[error(transparent)]
    Stored(#[from] StoredCatalogError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ConfigError> for CatalogError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Field { field, problem } => CatalogError::Invalid { field, problem },
            other => CatalogError::Invalid {
                field: "body".into(),
                problem: other.to_string(),
            },
        }
    }
}

fn invalid(field: &str, problem: impl Into<String>) -> CatalogError {
    CatalogError::Invalid {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

/// A provider as the API describes it: every field but the key, of which only a
/// fingerprint is shown.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ProviderView {
    /// Name; also its Envoy cluster.
    pub name: String,
    /// The API it speaks.
    pub kind: String,
    /// Where it is reached.
    pub base_url: String,
    /// Header carrying its key.
    pub auth_header: String,
    /// Longest whole answer, ms.
    pub timeout_ms: u32,
    /// Client headers passed on beyond the gateway's allow-list.
    pub forward_headers: Vec<String>,
    /// Responses `background: true` allowed.
    pub allow_background: bool,
    /// Calls carry a key.
    pub has_key: bool,
    /// A digest of the stored key (`sha256:…`); none for the config file's providers.
    pub key_fingerprint: Option<String>,
    /// `config` (the file; changed there) or `api`.
    pub source: &'static str,
}

/// A price as the API shows it: US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DollarPrice {
    /// Uncached prompt tokens.
    pub input: f64,
    /// Generated tokens.
    pub output: f64,
    /// Prompt tokens read from cache.
    #[serde(default)]
    pub cache_read: f64,
    /// Prompt tokens written to cache.
    #[serde(default)]
    pub cache_write: f64,
}

impl DollarPrice {
    fn of(p: &Price) -> Self {
        // Micro-dollars are exact in f64 up to 2^53, far beyond any price.
        let dollars = |micros: u64| micros as f64 / 1_000_000.0;
        Self {
            input: dollars(p.input),
            output: dollars(p.output),
            cache_read: dollars(p.cache_read),
            cache_write: dollars(p.cache_write),
        }
    }

    fn to_price(self) -> Result<Price, CatalogError> {
        let micros = |field: &str, v: f64| {
            pricing::micros_per_mtok(v).map_err(|e| invalid(field, e.to_string()))
        };
        Ok(Price {
            input: micros("input", self.input)?,
            output: micros("output", self.output)?,
            cache_read: micros("cache_read", self.cache_read)?,
            cache_write: micros("cache_write", self.cache_write)?,
        })
    }
}

/// One price of a model's history.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct PriceView {
    /// From when, Unix ms; `None`: since the start (the config file's price).
    pub effective_from_ms: Option<i64>,
    /// The price.
    #[serde(flatten)]
    pub price: DollarPrice,
}

/// A model as the API describes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ModelView {
    /// Name clients use.
    pub name: String,
    /// Provider serving it.
    pub provider: String,
    /// The provider's name for it, when different.
    pub upstream_model: Option<String>,
    /// Most output tokens one completion may produce.
    pub max_output_tokens: u64,
    /// The price in force now.
    pub price: DollarPrice,
    /// Every price, earliest first (future ones included).
    pub prices: Vec<PriceView>,
    /// `config` or `api`.
    pub source: &'static str,
}

/// A provider to add.
#[derive(Debug, Clone)]
pub struct NewProvider {
    /// Its fields as a config entry would give them.
    pub fields: ProviderFile,
    /// Its key; `None`: calls carry no credential.
    pub api_key: Option<Zeroizing<String>>,
}

/// What to do with a provider's key on update.
#[derive(Debug, Clone)]
pub enum KeyChange {
    /// Keep the stored one.
    Keep,
    /// Replace it.
    Set(Zeroizing<String>),
    /// Send no credential from now on.
    Remove,
}

/// A model to add, with its first price.
#[derive(Debug, Clone)]
pub struct NewModel {
    /// Name clients use.
    pub name: String,
    /// Provider serving it.
    pub provider: String,
    /// The provider's name for it, when different.
    pub upstream_model: Option<String>,
    /// Its own output cap.
    pub max_output_tokens: Option<i64>,
    /// Its first price, in force from its creation.
    pub price: DollarPrice,
}

/// What [`CatalogAdmin`] is configured with.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// `catalog.allow_private_upstreams`.
    pub allow_private_upstreams: bool,
    /// `limits.max_output_tokens`: the output cap of a model without its own.
    pub default_max_output_tokens: u64,
    /// `[budgets]` as running: a provider's timeout must fit its grace.
    pub budgets: BudgetSettings,
}

/// Applies catalog changes to the store and the catalog in force; cheap to clone.
#[derive(Clone)]
pub struct CatalogAdmin {
    store: Store,
    keys: Arc<Keyring>,
    live: LiveCatalog,
    clock: Clock,
    settings: Arc<AdminSettings>,
    /// `catalog_version` of the store's part in force (-1: none read yet).
    version: Arc<AtomicI64>,
}

impl std::fmt::Debug for CatalogAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogAdmin")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Longest model name, in bytes.
const MAX_NAME_BYTES: usize = 256;

impl CatalogAdmin {
    /// An admin over `store`, putting changes into `live`.
    pub fn new(
        store: Store,
        keys: Arc<Keyring>,
        live: LiveCatalog,
        clock: Clock,
        settings: AdminSettings,
    ) -> Self {
        Self {
            store,
            keys,
            live,
            clock,
            settings: Arc::new(settings),
            version: Arc::new(AtomicI64::new(-1)),
        }
    }

    /// The keyring provider keys are sealed with.
    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    /// Reads the store's part again and puts it in force.
    pub async fn refresh(&self) -> Result<(), CatalogError> {
        let stored = self.store.stored_catalog().await?;
        let part = catalog_of(&stored, &self.keys, self.settings.default_max_output_tokens)?;
        self.live.replace_stored(part);
        self.version.store(stored.version, Ordering::SeqCst);
        Ok(())
    }

    /// Refreshes when another replica (or the CLI) changed the store since the last read;
    /// whether it did.
    pub async fn refresh_if_changed(&self) -> Result<bool, CatalogError> {
        let version = self.store.catalog_version().await?;
        if version == self.version.load(Ordering::SeqCst) {
            return Ok(false);
        }
        self.refresh().await?;
        Ok(true)
    }

    /// Every provider served, by name.
    pub async fn providers(&self) -> Result<Vec<ProviderView>, CatalogError> {
        let stored: HashMap<String, ProviderRecord> = self
            .store
            .stored_catalog()
            .await?
            .providers
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        let catalog = self.live.current();
        let mut views: Vec<ProviderView> = catalog
            .providers
            .values()
            .map(|p| {
                let record = stored
                    .get(&p.name)
                    .filter(|_| !self.live.config_has_provider(&p.name));
                ProviderView {
                    name: p.name.clone(),
                    kind: p.kind.name().to_owned(),
                    base_url: record.map_or_else(|| upstream_url(p), |r| r.base_url.clone()),
                    auth_header: p.auth_header.clone(),
                    timeout_ms: p.timeout_ms,
                    forward_headers: p.forward_headers.clone(),
                    allow_background: p.allow_background,
                    has_key: p.auth_value.is_some(),
                    key_fingerprint: record
                        .and_then(|r| r.key.as_ref())
                        .map(|k| k.fingerprint.clone()),
                    source: if record.is_some() { "api" } else { "config" },
                }
            })
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(views)
    }

    /// The provider `name`, if served.
    pub async fn provider(&self, name: &str) -> Result<ProviderView, CatalogError> {
        self.providers()
            .await?
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| CatalogError::NotFound {
                kind: "provider",
                name: name.to_owned(),
            })
    }

    /// Checks `fields` (with `key`) as a provider the API may add or change.
    fn checked(
        &self,
        fields: &ProviderFile,
        key: Option<&str>,
    ) -> Result<crate::catalog::Provider, CatalogError> {
        let provider = validate_provider(fields.clone(), key, &|f| match f {
            "url" => "base_url".to_owned(),
            f => f.to_owned(),
        })?;
        upstream_policy::check(&provider.url, self.settings.allow_private_upstreams)
            .map_err(|problem| invalid("base_url", problem))?;
        let one = HashMap::from([(provider.name.clone(), provider.clone())]);
        self.settings
            .budgets
            .covers(&one)
            .map_err(|e| invalid("timeout_ms", e.to_string()))?;
        Ok(provider)
    }

    fn record(
        &self,
        fields: &ProviderFile,
        key: Option<crate::secrets::SealedSecret>,
        created_at_ms: i64,
    ) -> ProviderRecord {
        let provider_scheme = fields.auth_scheme;
        ProviderRecord {
            name: fields.name.clone(),
            kind: fields.kind.clone().unwrap_or_else(|| "openai".into()),
            base_url: fields.url.clone().unwrap_or_default(),
            auth_header: fields.auth_header.clone().unwrap_or_default(),
            auth_scheme: provider_scheme.map_or("bearer", scheme_name).to_owned(),
            timeout_ms: fields.timeout_ms.unwrap_or_default(),
            forward_headers: fields.forward_headers.clone(),
            allow_background: fields.allow_background,
            key,
            created_at_ms,
            updated_at_ms: self.clock.now_ms(),
        }
    }

    /// Adds a provider; its key is sealed before it reaches the store.
    pub async fn create_provider(&self, new: NewProvider) -> Result<ProviderView, CatalogError> {
        let provider = self.checked(&new.fields, new.api_key.as_deref().map(String::as_str))?;
        if self.live.config_has_provider(&provider.name) {
            return Err(CatalogError::Conflict(format!(
                "provider `{}` is defined in the config file; change it there",
                provider.name
            )));
        }
        let sealed = new
            .api_key
            .as_ref()
            .map(|k| self.keys.seal(&provider.name, k.trim()))
            .transpose()?;
        // Stored as validated, defaults filled in, so a reader sees what is served.
        let fields = served_fields(&new.fields, &provider);
        let record = self.record(&fields, sealed, self.clock.now_ms());
        if !self.store.insert_provider(&record).await? {
            return Err(CatalogError::Conflict(format!(
                "a provider named `{}` exists",
                provider.name
            )));
        }
        self.refresh().await?;
        self.provider(&provider.name).await
    }

    /// Changes a stored provider: `fields` replace its own (the name stays), `key` says
    /// what becomes of its key.
    pub async fn update_provider(
        &self,
        name: &str,
        fields: ProviderFile,
        key: KeyChange,
    ) -> Result<ProviderView, CatalogError> {
        let not_found = || CatalogError::NotFound {
            kind: "provider",
            name: name.to_owned(),
        };
        let old = self.store.provider(name).await?.ok_or_else(not_found)?;
        let fields = ProviderFile {
            name: old.name.clone(),
            ..fields
        };
        let sealed = match key {
            KeyChange::Keep => old.key.clone(),
            KeyChange::Remove => None,
            KeyChange::Set(k) => Some(self.keys.seal(name, k.trim())?),
        };
        // Checked with a stand-in key: the stored one need not be opened to change the rest.
        let provider = self.checked(&fields, sealed.as_ref().map(|_| "key"))?;
        let fields = served_fields(&fields, &provider);
        let record = self.record(&fields, sealed, old.created_at_ms);
        if !self.store.update_provider(&record).await? {
            return Err(not_found());
        }
        self.refresh().await?;
        self.provider(name).await
    }

    /// The fields of the stored provider `name` (not the config file's), to change some.
    pub async fn stored_provider_fields(
        &self,
        name: &str,
    ) -> Result<Option<ProviderFile>, CatalogError> {
        Ok(self.store.provider(name).await?.as_ref().map(provider_file))
    }

    /// Removes a stored provider, unless a stored model names it.
    pub async fn delete_provider(&self, name: &str) -> Result<(), CatalogError> {
        match self.store.delete_provider(name).await? {
            ProviderRemoval::Removed => {
                self.refresh().await?;
                Ok(())
            }
            ProviderRemoval::NotFound => Err(CatalogError::NotFound {
                kind: "provider",
                name: name.to_owned(),
            }),
            ProviderRemoval::InUse(models) => Err(CatalogError::Conflict(format!(
                "provider `{name}` still serves {}: remove them first",
                models.join(", ")
            ))),
        }
    }

    /// Every model served, by name, with its prices.
    pub fn models(&self) -> Vec<ModelView> {
        let catalog = self.live.current();
        let now = self.clock.now_ms();
        let mut views: Vec<ModelView> = catalog
            .models
            .values()
            .map(|m| ModelView {
                name: m.name.clone(),
                provider: m.provider.clone(),
                upstream_model: m.upstream_model.clone(),
                max_output_tokens: m.max_output_tokens,
                price: DollarPrice::of(m.prices.at(now)),
                prices: price_views(&m.prices),
                source: if self.live.config_has_model(&m.name) {
                    "config"
                } else {
                    "api"
                },
            })
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }

    /// The model `name`, if served.
    pub fn model(&self, name: &str) -> Result<ModelView, CatalogError> {
        self.models()
            .into_iter()
            .find(|m| m.name == name)
            .ok_or_else(|| CatalogError::NotFound {
                kind: "model",
                name: name.to_owned(),
            })
    }

    /// Adds a model, priced from now on.
    pub async fn create_model(&self, new: NewModel) -> Result<ModelView, CatalogError> {
        if new.name.len() > MAX_NAME_BYTES {
            return Err(invalid("name", "must be 1 to 256 bytes"));
        }
        let price = new.price.to_price()?;
        let catalog = self.live.current();
        validate_model(
            ModelFile {
                name: new.name.clone(),
                provider: new.provider.clone(),
                upstream_model: new.upstream_model.clone(),
                input: Some(new.price.input),
                output: Some(new.price.output),
                cache_read: Some(new.price.cache_read),
                cache_write: Some(new.price.cache_write),
                free: false,
                max_output_tokens: new.max_output_tokens,
            },
            &catalog.providers,
            self.settings.default_max_output_tokens,
            &|f| f.to_owned(),
        )?;
        if self.live.config_has_model(&new.name) {
            return Err(CatalogError::Conflict(format!(
                "model `{}` is defined in the config file; change it there",
                new.name
            )));
        }
        let now = self.clock.now_ms();
        let record = ModelRecord {
            name: new.name.clone(),
            provider: new.provider,
            upstream_model: new.upstream_model,
            max_output_tokens: new
                .max_output_tokens
                .map(|n| u64::try_from(n).unwrap_or_default()),
            created_at_ms: now,
        };
        let first = PriceRecord {
            model: &new.name,
            effective_from_ms: now,
            price,
            created_at_ms: now,
        };
        if !self.store.insert_model(&record, &first).await? {
            return Err(CatalogError::Conflict(format!(
                "a model named `{}` exists",
                new.name
            )));
        }
        self.refresh().await?;
        self.model(&new.name)
    }

    /// Adds a price to a stored model from `effective_from_ms` (now if `None`) on; an
    /// instant in the past is refused, since calls made then are already priced.
    pub async fn add_price(
        &self,
        model: &str,
        effective_from_ms: Option<i64>,
        price: DollarPrice,
    ) -> Result<ModelView, CatalogError> {
        let price = price.to_price()?;
        let now = self.clock.now_ms();
        let from = effective_from_ms.unwrap_or(now);
        if from < now {
            return Err(invalid(
                "effective_from_ms",
                "is in the past: calls made then are already priced",
            ));
        }
        if self.live.config_has_model(model) {
            return Err(CatalogError::Conflict(format!(
                "model `{model}` is defined in the config file; change its price there and reload"
            )));
        }
        let record = PriceRecord {
            model,
            effective_from_ms: from,
            price,
            created_at_ms: now,
        };
        if !self.store.insert_price(&record).await? {
            // Either the model is not stored, or it has a price from that instant.
            let catalog = self.live.current();
            return Err(if catalog.models.contains_key(model) {
                CatalogError::Conflict(format!("model `{model}` already has a price from {from}"))
            } else {
                CatalogError::NotFound {
                    kind: "model",
                    name: model.to_owned(),
                }
            });
        }
        self.refresh().await?;
        self.model(model)
    }

    /// Removes a stored model; its prices are kept for calls made before.
    pub async fn delete_model(&self, name: &str) -> Result<(), CatalogError> {
        if !self.store.delete_model(name).await? {
            return Err(CatalogError::NotFound {
                kind: "model",
                name: name.to_owned(),
            });
        }
        self.refresh().await
    }
}

/// Re-wraps every stored provider key not under the current master key, in one
/// transaction; how many moved. A key under a master key the keyring lacks stops it
/// before anything changes.
pub async fn rotate_master(store: &Store, keys: &Keyring) -> Result<usize, CatalogError> {
    let mut moved = Vec::new();
    for (name, sealed) in store.sealed_provider_keys().await? {
        if let Some(key) = keys.rewrap(&sealed)? {
            moved.push(Rewrapped {
                name,
                from_master_id: sealed.master_key_id,
                key,
            });
        }
    }
    if !store.rewrap_provider_keys(&moved).await? {
        return Err(CatalogError::Conflict(
            "a provider key changed during the rotation; nothing was changed, run it again".into(),
        ));
    }
    Ok(moved.len())
}

/// `fields` with what validation filled in (kind, header, scheme, timeout), as stored.
fn served_fields(fields: &ProviderFile, provider: &crate::catalog::Provider) -> ProviderFile {
    ProviderFile {
        kind: Some(provider.kind.name().to_owned()),
        auth_header: Some(provider.auth_header.clone()),
        auth_scheme: Some(
            fields
                .auth_scheme
                .unwrap_or(match provider.kind.default_auth() {
                    tollgate_core::providers::AuthStyle::Bearer => {
                        crate::config::AuthScheme::Bearer
                    }
                    tollgate_core::providers::AuthStyle::Raw(_) => crate::config::AuthScheme::Raw,
                }),
        ),
        timeout_ms: Some(provider.timeout_ms),
        ..fields.clone()
    }
}

/// The base URL of a config file's provider, as written back from its parts.
fn upstream_url(p: &crate::catalog::Provider) -> String {
    let scheme = match p.url.transport {
        crate::envoy_config::Transport::Tls => "https",
        crate::envoy_config::Transport::Cleartext => "http",
    };
    match p.url.host {
        crate::envoy_config::Host::Ip(std::net::IpAddr::V6(ip)) => {
            format!("{scheme}://[{ip}]:{}", p.url.port)
        }
        ref host => format!("{scheme}://{host}:{}", p.url.port),
    }
}

fn price_views(prices: &PriceSchedule) -> Vec<PriceView> {
    prices
        .changes()
        .iter()
        .map(|c| PriceView {
            effective_from_ms: (c.effective_from_ms != i64::MIN).then_some(c.effective_from_ms),
            price: DollarPrice::of(&c.price),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::Config;
    use crate::secrets::{MasterKey, MasterKeySource, SecretsSettings};
    use crate::store::test_stores::sqlite;
    use std::path::{Path, PathBuf};

    const NOW: i64 = 1_800_000_000_000;
    const PROVIDER_KEY: &str = "sk-test-SECRET-provider-key-0123456789";

    /// A config file serving provider `cfg` and model `cfg-model`, with a 1-hour grace.
    fn config() -> Config {
        let text = "[budgets]\nreclaim_grace_ms = 3600000\n\
                    [[providers]]\nname = \"cfg\"\nurl = \"http://127.0.0.1:9000\"\n\
                    [[models]]\nname = \"cfg-model\"\nprovider = \"cfg\"\ninput = 1\noutput = 2\n";
        Config::parse(text, Path::new("/srv"), |_| None).unwrap()
    }

    fn write_key(path: &Path, key: &MasterKey) {
        std::fs::write(path, key.to_base64().as_bytes()).unwrap();
    }

    fn ring(master: &Path, previous: Option<&Path>) -> Arc<Keyring> {
        let file = |p: &Path| MasterKeySource::File {
            path: PathBuf::from(p),
        };
        Arc::new(
            Keyring::load(SecretsSettings {
                master: Some(file(master)),
                previous: previous.map(file),
            })
            .unwrap(),
        )
    }

    fn admin(store: &Store, keys: Arc<Keyring>, clock: Clock) -> CatalogAdmin {
        let config = config();
        CatalogAdmin::new(
            store.clone(),
            keys,
            LiveCatalog::new(config.catalog.clone()),
            clock,
            AdminSettings {
                allow_private_upstreams: false,
                default_max_output_tokens: 4_096,
                budgets: config.budgets,
            },
        )
    }

    fn new_provider(name: &str, url: &str, key: Option<&str>) -> NewProvider {
        NewProvider {
            fields: ProviderFile {
                name: name.into(),
                url: Some(url.into()),
                kind: None,
                auth_header: None,
                auth_scheme: None,
                api_key_env: None,
                timeout_ms: Some(30_000),
                forward_headers: Vec::new(),
                allow_background: false,
            },
            api_key: key.map(|k| Zeroizing::new(k.to_owned())),
        }
    }

    fn price(input: f64) -> DollarPrice {
        DollarPrice {
            input,
            output: 2.0 * input,
            cache_read: 0.0,
            cache_write: 0.0,
        }
    }

    fn served_key(admin: &CatalogAdmin, name: &str) -> Option<String> {
        admin.live.current().providers[name].auth_value.clone()
    }

    #[tokio::test]
    async fn a_provider_key_is_served_but_only_its_fingerprint_is_shown_or_stored() {
        let (dir, store) = sqlite().await;
        write_key(&dir.path().join("master.key"), &MasterKey::generate());
        let admin = admin(
            &store,
            ring(&dir.path().join("master.key"), None),
            ManualClock::at(NOW).clock(),
        );
        admin.refresh().await.unwrap();

        let view = admin
            .create_provider(new_provider(
                "openai-2",
                "https://api.openai.com",
                Some(PROVIDER_KEY),
            ))
            .await
            .unwrap();
        assert_eq!(
            served_key(&admin, "openai-2").as_deref(),
            Some(&*format!("Bearer {PROVIDER_KEY}"))
        );
        assert_eq!(view.source, "api");
        assert!(view.has_key);
        assert_eq!(
            view.key_fingerprint,
            Some(crate::secrets::fingerprint(PROVIDER_KEY))
        );
        let listed = serde_json::to_string(&admin.providers().await.unwrap()).unwrap();
        assert!(
            listed.contains("\"cfg\"") && listed.contains("openai-2"),
            "{listed}"
        );
        let stored = format!("{:?}", store.stored_catalog().await.unwrap());
        let record = store.provider("openai-2").await.unwrap().unwrap();
        let sealed = record.key.clone().unwrap();
        let row_text = [
            &sealed.ciphertext,
            &sealed.nonce,
            &sealed.wrapped_key,
            &record.base_url,
        ];
        for text in row_text
            .iter()
            .map(|s| s.as_str())
            .chain([listed.as_str(), stored.as_str()])
        {
            assert!(!text.contains("SECRET"), "{text}");
        }

        // The key is replaced, kept, or removed on update; the rest changes.
        let mut fields = new_provider("openai-2", "https://api2.openai.com", None).fields;
        fields.timeout_ms = Some(60_000);
        let kept = admin
            .update_provider("openai-2", fields.clone(), KeyChange::Keep)
            .await
            .unwrap();
        assert_eq!(
            (kept.timeout_ms, kept.base_url.as_str()),
            (60_000, "https://api2.openai.com")
        );
        assert_eq!(
            served_key(&admin, "openai-2").as_deref(),
            Some(&*format!("Bearer {PROVIDER_KEY}"))
        );
        let set = admin
            .update_provider(
                "openai-2",
                fields.clone(),
                KeyChange::Set(Zeroizing::new("sk-new".into())),
            )
            .await
            .unwrap();
        assert_eq!(
            set.key_fingerprint,
            Some(crate::secrets::fingerprint("sk-new"))
        );
        assert_eq!(
            served_key(&admin, "openai-2").as_deref(),
            Some("Bearer sk-new")
        );
        let removed = admin
            .update_provider("openai-2", fields, KeyChange::Remove)
            .await
            .unwrap();
        assert!(!removed.has_key && removed.key_fingerprint.is_none());
        assert_eq!(served_key(&admin, "openai-2"), None);

        admin.delete_provider("openai-2").await.unwrap();
        assert!(!admin.live.current().providers.contains_key("openai-2"));
        assert!(matches!(
            admin.delete_provider("openai-2").await,
            Err(CatalogError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn addresses_inside_the_network_and_config_names_are_refused() {
        let (dir, store) = sqlite().await;
        write_key(&dir.path().join("master.key"), &MasterKey::generate());
        let admin = admin(
            &store,
            ring(&dir.path().join("master.key"), None),
            ManualClock::at(NOW).clock(),
        );
        for url in [
            "http://169.254.169.254",
            "http://127.0.0.1:9000",
            "https://[::1]",
            "http://api.openai.com",
        ] {
            let refused = admin
                .create_provider(new_provider("x", url, Some("k")))
                .await;
            assert!(
                matches!(&refused, Err(CatalogError::Invalid { field, .. }) if field == "base_url"),
                "{url}: {refused:?}"
            );
        }
        let refused = admin
            .create_provider(new_provider("cfg", "https://api.example.com", None))
            .await;
        assert!(
            matches!(refused, Err(CatalogError::Conflict(_))),
            "{refused:?}"
        );
        let mut slow = new_provider("slow", "https://api.example.com", None);
        slow.fields.timeout_ms = Some(3_600_000);
        let refused = admin.create_provider(slow).await;
        assert!(
            matches!(&refused, Err(CatalogError::Invalid { field, .. }) if field == "timeout_ms"),
            "{refused:?}"
        );
        assert!(
            store.stored_catalog().await.unwrap().providers.is_empty(),
            "nothing stored"
        );
    }

    #[tokio::test]
    async fn a_call_is_priced_by_the_price_in_force_when_it_was_made() {
        let (dir, store) = sqlite().await;
        write_key(&dir.path().join("master.key"), &MasterKey::generate());
        let time = ManualClock::at(NOW);
        let admin = admin(
            &store,
            ring(&dir.path().join("master.key"), None),
            time.clock(),
        );
        admin
            .create_model(NewModel {
                name: "m".into(),
                provider: "cfg".into(),
                upstream_model: Some("m-2026".into()),
                max_output_tokens: None,
                price: price(1.5),
            })
            .await
            .unwrap();
        let view = admin
            .add_price("m", Some(NOW + 60_000), price(3.0))
            .await
            .unwrap();
        assert_eq!(view.price.input, 1.5, "the later price is not in force yet");
        let history: Vec<(Option<i64>, f64)> = view
            .prices
            .iter()
            .map(|p| (p.effective_from_ms, p.price.input))
            .collect();
        assert_eq!(history, vec![(Some(NOW), 1.5), (Some(NOW + 60_000), 3.0)]);
        assert_eq!(view.max_output_tokens, 4_096);

        let catalog = admin.live.current();
        assert_eq!(
            catalog.price_at("m", NOW + 59_999).map(|p| p.input),
            Some(1_500_000)
        );
        assert_eq!(
            catalog.price_at("m", NOW + 60_000).map(|p| p.input),
            Some(3_000_000)
        );
        time.advance_ms(60_000);
        assert_eq!(admin.model("m").unwrap().price.input, 3.0);

        let past = admin.add_price("m", Some(NOW), price(9.0)).await;
        assert!(
            matches!(&past, Err(CatalogError::Invalid { field, .. }) if field == "effective_from_ms"),
            "{past:?}"
        );
        let config_model = admin.add_price("cfg-model", None, price(9.0)).await;
        assert!(
            matches!(config_model, Err(CatalogError::Conflict(_))),
            "{config_model:?}"
        );
        assert_eq!(
            admin.model("cfg-model").unwrap().prices[0].effective_from_ms,
            None
        );
        let unknown = admin.add_price("nope", None, price(9.0)).await;
        assert!(
            matches!(unknown, Err(CatalogError::NotFound { .. })),
            "{unknown:?}"
        );

        // Removed, the model is no longer served but calls made before are still priced.
        admin.delete_model("m").await.unwrap();
        let catalog = admin.live.current();
        assert!(catalog.route("m").is_none());
        assert_eq!(
            catalog.price_at("m", NOW + 1).map(|p| p.input),
            Some(1_500_000)
        );
    }

    #[tokio::test]
    async fn a_master_key_rotation_loses_no_key_and_a_running_control_plane_follows_it() {
        let (dir, store) = sqlite().await;
        let (master_file, old_file) = (dir.path().join("master.key"), dir.path().join("old.key"));
        let (old, new) = (MasterKey::generate(), MasterKey::generate());
        write_key(&master_file, &old);
        // The running control plane: its master key file, no previous key configured.
        let running = admin(&store, ring(&master_file, None), Clock::system());
        running
            .create_provider(new_provider("a", "https://a.example.com", Some("sk-a")))
            .await
            .unwrap();

        // Step 1: the new key goes into the master key file, the old one into another.
        write_key(&master_file, &new);
        write_key(&old_file, &old);
        running
            .create_provider(new_provider("b", "https://b.example.com", Some("sk-b")))
            .await
            .unwrap();
        // Step 2: `tollgate secrets rotate-master`, configured with both.
        let cli = ring(&master_file, Some(&old_file));
        assert_eq!(
            rotate_master(&store, &cli).await.unwrap(),
            1,
            "only `a` was under the old key"
        );
        assert_eq!(rotate_master(&store, &cli).await.unwrap(), 0);
        for (_, sealed) in store.sealed_provider_keys().await.unwrap() {
            assert_eq!(sealed.master_key_id, new.id());
        }

        // The running one reads the store again and still serves both keys.
        running.refresh().await.unwrap();
        assert_eq!(served_key(&running, "a").as_deref(), Some("Bearer sk-a"));
        assert_eq!(served_key(&running, "b").as_deref(), Some("Bearer sk-b"));
        // A restart needs only the new key; the old one can be destroyed.
        std::fs::remove_file(&old_file).unwrap();
        let restarted = admin(&store, ring(&master_file, None), Clock::system());
        restarted.refresh().await.unwrap();
        assert_eq!(served_key(&restarted, "a").as_deref(), Some("Bearer sk-a"));

        // A key under a master key nobody has stops a rotation before it changes anything.
        let lost = crate::secrets::seal(&MasterKey::generate(), "c", "sk-c").unwrap();
        let record = ProviderRecord {
            key: Some(lost),
            ..store.provider("a").await.unwrap().unwrap()
        };
        store
            .insert_provider(&ProviderRecord {
                name: "c".into(),
                ..record
            })
            .await
            .unwrap();
        assert!(matches!(
            rotate_master(&store, &ring(&master_file, None)).await,
            Err(CatalogError::Secrets(SecretsError::UnknownMasterKey(_)))
        ));
        assert!(matches!(
            restarted.refresh().await,
            Err(CatalogError::Stored(_))
        ));
        assert_eq!(
            served_key(&restarted, "a").as_deref(),
            Some("Bearer sk-a"),
            "the catalog in force stays"
        );
    }

    /// Every log line written while it lives, at every level.
    struct CapturedLogs {
        lines: Arc<std::sync::Mutex<Vec<u8>>>,
        _guard: tracing::subscriber::DefaultGuard,
    }

    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture_logs() -> CapturedLogs {
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .finish();
        CapturedLogs {
            lines,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    #[tokio::test]
    async fn no_log_line_holds_a_provider_key() {
        let logs = capture_logs();
        let (dir, store) = sqlite().await;
        write_key(&dir.path().join("master.key"), &MasterKey::generate());
        let admin = admin(
            &store,
            ring(&dir.path().join("master.key"), None),
            Clock::system(),
        );
        admin
            .create_provider(new_provider(
                "p",
                "https://p.example.com",
                Some(PROVIDER_KEY),
            ))
            .await
            .unwrap();
        let fields = new_provider("p", "https://p2.example.com", None).fields;
        let key = KeyChange::Set(Zeroizing::new(format!("{PROVIDER_KEY}-2")));
        admin.update_provider("p", fields, key).await.unwrap();
        // Refused and failing changes log too: a key under a master key nobody has.
        let lost = crate::secrets::seal(&MasterKey::generate(), "q", PROVIDER_KEY).unwrap();
        let record = ProviderRecord {
            name: "q".into(),
            key: Some(lost),
            ..store.provider("p").await.unwrap().unwrap()
        };
        store.insert_provider(&record).await.unwrap();
        assert!(admin.refresh().await.is_err());
        let _ = admin
            .create_provider(new_provider(
                "r",
                "http://169.254.169.254",
                Some(PROVIDER_KEY),
            ))
            .await;
        tracing::info!(catalog = ?admin.live.current(), "the catalog, printed");
        let text = String::from_utf8(logs.lines.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("the catalog, printed"),
            "logs were captured: {text}"
        );
        assert!(!text.contains("SECRET"), "{text}");
    }
}
