//! The control plane's one configuration: a TOML file, checked whole at start.
//!
//! The file is read into its raw schema ([`raw`]) and each section is validated by its
//! own module into typed values. Every error names the field at fault (`models[2].input`),
//! so a bad deploy stops with a message a person can act on instead of a gateway that
//! misprices calls.

mod api;
mod budgets;
mod gateway;
mod limits;
mod models;
mod providers;
mod raw;
mod secrets;
mod server;
mod storage;

pub use api::ApiSettings;
pub use budgets::BudgetSettings;
pub use gateway::GatewaySettings;
pub use limits::LimitSettings;
pub(crate) use models::model as validate_model;
pub(crate) use providers::provider_with_key as validate_provider;
pub use raw::AuthScheme;
pub(crate) use raw::ModelFile;
pub use raw::ProviderFile;
pub use server::ServerSettings;
pub use storage::StorageSettings;

use crate::catalog::Catalog;
use crate::envoy_config::EnvoySection;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

/// Why the configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid TOML, or a field of the wrong type.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the field.
        message: String,
    },
    /// A field's value is wrong.
    #[error("invalid config: `{field}` {problem}")]
    Field {
        /// Path of the field, e.g. `models[0].provider`.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

pub(crate) fn field_error(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Entries of a `[[section]]` by name, each name once: the second use of a name is refused
/// at `section[i].name`.
fn by_name<T>(
    section: &str,
    entries: impl IntoIterator<Item = Result<T, ConfigError>>,
    name: impl Fn(&T) -> &str,
) -> Result<HashMap<String, T>, ConfigError> {
    let mut named = HashMap::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let entry = entry?;
        let key = name(&entry).to_owned();
        if named.contains_key(&key) {
            return Err(field_error(
                format!("{section}[{i}].name"),
                format!("`{key}` is defined twice"),
            ));
        }
        named.insert(key, entry);
    }
    Ok(named)
}

/// The validated `[catalog]` section; applied only when the process starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatalogSettings {
    /// Providers added through the API may be on loopback or a private network (and
    /// speak plain http): for local model servers, never needed for hosted providers.
    pub allow_private_upstreams: bool,
}

/// Resolves an environment variable's name to its value (the process's, or a test's).
type Env<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// An [`Env`] kept for later reloads.
type SharedEnv = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The validated configuration of the control plane, by section.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`: listen addresses and the filter's token.
    pub server: ServerSettings,
    /// `[storage]`: the database.
    pub storage: StorageSettings,
    /// `[api]`: sessions, CORS and limits of the HTTP API.
    pub api: ApiSettings,
    /// `[gateway]`: what the filter is told about caching.
    pub gateway: GatewaySettings,
    /// `[limits]`: the defaults of every key's limits.
    pub limits: LimitSettings,
    /// `[budgets]`: budget leases and their reclaim.
    pub budgets: BudgetSettings,
    /// `[[providers]]` and `[[models]]`: what is served, the part that reloads live.
    pub catalog: Catalog,
    /// `[catalog]`: what the HTTP API may add to it.
    pub catalog_settings: CatalogSettings,
    /// `[secrets]`: the master key that seals provider keys stored through the API.
    pub secrets: crate::secrets::SecretsSettings,
    /// `[envoy]`: the Envoy in front of the filter, for `tollgate envoy-config`.
    pub envoy: EnvoySection,
}

impl Config {
    /// Reads and validates the file at `path`; `env` resolves `api_key_env` names.
    pub fn load(path: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, env).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Validates TOML text; relative paths are taken from `base`, and made absolute.
    pub fn parse(
        text: &str,
        base: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let file: raw::File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        // Paths end up in files other processes read from their own working directory
        // (Envoy's bootstrap), so they are made absolute here, from this process's.
        // A file named without a directory has the empty path as parent.
        let base = if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        };
        let base = std::path::absolute(base).map_err(|source| ConfigError::Read {
            path: base.to_owned(),
            source,
        })?;
        let base = base.as_path();
        let server = server::validate(file.server, &env, base)?;
        let storage = storage::validate(file.storage, base, &env)?;
        let api = api::validate(file.api, &env)?;
        let gateway = gateway::validate(file.gateway)?;
        let limits = limits::validate(file.limits)?;
        let providers = providers::validate(file.providers, &env)?;
        let models = models::validate(file.models, &providers, limits.max_output_tokens)?;
        let budgets = budgets::validate(file.budgets, &providers)?;
        let envoy = EnvoySection::from_file(file.envoy, server.grpc_listen, base)?;
        let secrets = secrets::validate(file.secrets, &env, base)?;
        let catalog_settings = CatalogSettings {
            allow_private_upstreams: file.catalog.allow_private_upstreams,
        };
        Ok(Config {
            server,
            storage,
            api,
            gateway,
            limits,
            budgets,
            catalog: Catalog {
                providers,
                models,
                retired_prices: HashMap::new(),
            },
            catalog_settings,
            secrets,
            envoy,
        })
    }

    /// The fields applied only at start whose value in `newer` differs from this one's:
    /// what a reload cannot apply and a restart would.
    pub fn restart_needed(&self, newer: &Config) -> Vec<&'static str> {
        let (old, new) = (&self.server, &newer.server);
        [
            ("server.grpc_listen", old.grpc_listen != new.grpc_listen),
            ("server.http_listen", old.http_listen != new.http_listen),
            ("server.filter_dir", old.filter_dir != new.filter_dir),
            (
                "server.dashboard_dir",
                old.dashboard_dir != new.dashboard_dir,
            ),
            (
                "server.filter_token_env",
                old.filter_token_env != new.filter_token_env
                    || old.filter_token != new.filter_token,
            ),
            ("storage", self.storage != newer.storage),
            ("api", self.api != newer.api),
            ("gateway", self.gateway != newer.gateway),
            // The default output cap goes into the models, which the reload applies.
            (
                "limits",
                LimitSettings {
                    max_output_tokens: newer.limits.max_output_tokens,
                    ..self.limits
                } != newer.limits,
            ),
            ("budgets", self.budgets != newer.budgets),
            ("catalog", self.catalog_settings != newer.catalog_settings),
            ("secrets", self.secrets != newer.secrets),
        ]
        .into_iter()
        .filter_map(|(field, changed)| changed.then_some(field))
        .collect()
    }
}

/// Where the configuration comes from, kept so it can be read again on reload.
#[derive(Clone)]
pub struct ConfigSource {
    path: PathBuf,
    env: SharedEnv,
}

impl ConfigSource {
    /// The file at `path`, with variables resolved by `env`.
    pub fn new(
        path: impl Into<PathBuf>,
        env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            path: path.into(),
            env: Arc::new(env),
        }
    }

    /// The file at `path`, with variables from this process's environment.
    pub fn with_process_env(path: impl Into<PathBuf>) -> Self {
        Self::new(path, |var| std::env::var(var).ok())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and validates the file as it is now.
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(&self.path, |var| (self.env)(var))
    }
}

impl fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigSource")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::pricing::Price;
    use tollgate_core::providers::ProviderKind;

    const GOOD: &str = r#"
        [gateway]
        key_cache_ttl_ms = 1000

        [[providers]]
        name = "openai"
        url = "http://127.0.0.1:9000"
        api_key_env = "OPENAI_API_KEY"

        [[providers]]
        name = "anthropic"
        url = "http://127.0.0.1:9000"
        kind = "anthropic"
        api_key_env = "ANTHROPIC_API_KEY"
        timeout_ms = 30000

        [[providers]]
        name = "local"
        url = "http://127.0.0.1:9000"

        [[models]]
        name = "gpt-4o"
        provider = "openai"
        input = 2.5
        output = 10
        cache_read = 1.25

        [[models]]
        name = "claude-sonnet-4"
        provider = "anthropic"
        upstream_model = "claude-sonnet-4-20250514"
        input = 3
        output = 15
        cache_read = 0.3
        cache_write = 3.75

        [[models]]
        name = "llama"
        provider = "local"
        free = true
    "#;

    const FILTER_TOKEN: &str = "filter-token-filter-token-filter-token";

    fn env(name: &str) -> Option<String> {
        match name {
            "TOLLGATE_FILTER_TOKEN" => Some(FILTER_TOKEN.into()),
            "OPENAI_API_KEY" => Some("sk-openai".into()),
            "ANTHROPIC_API_KEY" => Some("sk-ant".into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/srv"), env)
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("config must be refused").to_string()
    }

    #[test]
    fn a_file_named_without_a_directory_is_read_from_the_working_directory() {
        // `tollgate check-config` reads `tollgate.toml`, whose parent is the empty path.
        let bare = Path::new("tollgate.toml");
        assert_eq!(bare.parent(), Some(Path::new("")));
        let c = Config::parse(GOOD, bare.parent().unwrap(), env).unwrap();
        let here = std::env::current_dir().unwrap();
        assert_eq!(
            c.storage.database_url,
            format!("sqlite://{}/.tollgate/tollgate.db", here.display())
        );
    }

    #[test]
    fn good_config() {
        let c = parse(GOOD).unwrap();
        assert_eq!(
            c.storage.database_url,
            "sqlite:///srv/.tollgate/tollgate.db"
        );
        assert_eq!(c.gateway.key_cache_ttl_ms, 1000);
        assert!(
            c.server
                .filter_token()
                .unwrap()
                .accepts(format!("Bearer {FILTER_TOKEN}").as_bytes())
        );
        assert_eq!(
            c.catalog.providers["openai"].auth_value.as_deref(),
            Some("Bearer sk-openai")
        );
        assert_eq!(c.catalog.providers["anthropic"].auth_header, "x-api-key");
        assert_eq!(
            c.catalog.providers["anthropic"].auth_value.as_deref(),
            Some("sk-ant")
        );
        assert_eq!(c.catalog.providers["local"].auth_value, None);
        assert_eq!(
            c.catalog.providers["anthropic"].kind,
            ProviderKind::Anthropic
        );
        assert_eq!(c.catalog.providers["anthropic"].timeout_ms, 30_000);
        assert_eq!(c.catalog.providers["openai"].kind, ProviderKind::OpenAi);
        assert_eq!(c.catalog.providers["openai"].auth_header, "authorization");
        assert_eq!(
            c.catalog.models["claude-sonnet-4"]
                .upstream_model
                .as_deref(),
            Some("claude-sonnet-4-20250514")
        );
        assert_eq!(c.catalog.models["gpt-4o"].prices.at(0).input, 2_500_000);
        assert_eq!(
            c.catalog.models["gpt-4o"].prices.at(0).cache_read,
            1_250_000
        );
        assert_eq!(
            c.catalog.models["claude-sonnet-4"].prices.at(0).cache_write,
            3_750_000
        );
        assert_eq!(*c.catalog.models["llama"].prices.at(0), Price::default());
    }

    #[test]
    fn missing_price_is_named() {
        let e = err(r#"
            [[providers]]
            name = "p"
            url = "http://127.0.0.1:9000"
            [[models]]
            name = "m"
            provider = "p"
            input = 1
        "#);
        assert!(e.contains("models[0].output"), "{e}");
        assert!(e.contains("free = true"), "{e}");
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (
                "[server]\ngrpc_listen = \"nowhere\"\n[[providers]]\nname=\"p\"\nurl = \"http://127.0.0.1:9000\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true",
                "server.grpc_listen",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl = \"http://127.0.0.1:9000\"\n[[models]]\nname=\"m\"\nprovider=\"q\"\nfree=true",
                "models[0].provider",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl = \"http://127.0.0.1:9000\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\ninput=-1\noutput=1",
                "models[0].input",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl = \"http://127.0.0.1:9000\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\ninput=0.0000001\noutput=1",
                "models[0].input",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl = \"http://127.0.0.1:9000\"\napi_key_env=\"NOPE\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true",
                "providers[0].api_key_env",
            ),
            (
                "[[providers]]\nname=\"a b\"\nurl = \"http://127.0.0.1:9000\"\n[[models]]\nname=\"m\"\nprovider=\"a b\"\nfree=true",
                "providers[0].name",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl = \"http://127.0.0.1:9000\"\n[[providers]]\nname=\"p\"\nurl = \"http://127.0.0.1:9000\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true",
                "providers[1].name",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl = \"http://127.0.0.1:9000\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true\ninput=1",
                "models[0].input",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl = \"http://127.0.0.1:9000\"",
                "models",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl = \"http://127.0.0.1:9000\"\nkind=\"azure\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true",
                "providers[0].kind",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl = \"http://127.0.0.1:9000\"\ntimeout_ms=0\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true",
                "providers[0].timeout_ms",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl = \"http://127.0.0.1:9000\"\nforward_headers=[\"x-ok\", \"Cookie\"]\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true",
                "providers[0].forward_headers[1]",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl = \"http://127.0.0.1:9000\"\nforward_headers=[\"authorization\"]\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true",
                "providers[0].forward_headers[0]",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl = \"http://127.0.0.1:9000\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true\nupstream_model=\"\"",
                "models[0].upstream_model",
            ),
            (
                "[storage]\ndatabase_url=\"mysql://x\"\n[[providers]]\nname=\"p\"\nurl = \"http://127.0.0.1:9000\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true",
                "storage.database_url",
            ),
            (
                "[gateway]\nkey_cache_ttl_ms=99999999\n[[providers]]\nname=\"p\"\nurl = \"http://127.0.0.1:9000\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true",
                "gateway.key_cache_ttl_ms",
            ),
        ];
        for (text, field) in cases {
            let e = err(text);
            assert!(e.contains(field), "expected `{field}` in: {e}");
        }
    }

    #[test]
    fn filter_token_is_checked_and_named() {
        let models = "[[providers]]\nname=\"p\"\nurl = \"http://127.0.0.1:9000\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true\n";
        let elsewhere = format!("[server]\nfilter_token_env = \"MY_TOKEN\"\n{models}");
        let short = Config::parse(&elsewhere, Path::new("/"), |v| {
            (v == "MY_TOKEN").then(|| "tiny-secret".to_owned())
        })
        .expect_err("a short token is refused")
        .to_string();
        assert!(
            short.contains("server.filter_token_env") && short.contains("32 bytes"),
            "{short}"
        );
        assert!(
            !short.contains("tiny-secret"),
            "the value is not shown: {short}"
        );

        let unset = Config::parse(&elsewhere, Path::new("/"), |_| None).unwrap();
        let e = unset.server.filter_token().unwrap_err().to_string();
        assert!(
            e.contains("server.filter_token_env") && e.contains("MY_TOKEN"),
            "{e}"
        );

        let set = Config::parse(&elsewhere, Path::new("/"), |v| {
            (v == "MY_TOKEN").then(|| "t".repeat(32))
        })
        .unwrap();
        assert!(set.server.filter_token().is_ok());
        assert!(
            !format!("{set:?}").contains(&"t".repeat(32)),
            "Debug shows the token"
        );
    }

    #[test]
    fn unknown_and_mistyped_fields_are_named() {
        let e = err("[[providers]]\nname=\"p\"\nurl = \"http://127.0.0.1:9000\"\nkey_env=\"X\"");
        assert!(e.contains("key_env"), "{e}");
        let e = err("[gateway]\nkey_cache_ttl_ms=\"soon\"");
        assert!(e.contains("key_cache_ttl_ms"), "{e}");
    }

    #[test]
    fn only_fields_applied_at_start_need_a_restart() {
        let running = parse(GOOD).unwrap();
        let repriced = GOOD.replace("input = 2.5", "input = 3.5");
        assert_eq!(
            running.restart_needed(&parse(&repriced).unwrap()),
            Vec::<&str>::new()
        );
        let moved = format!(
            "[server]\ngrpc_listen = \"127.0.0.1:1\"\n[storage]\ndata_dir = \"elsewhere\"\n{}",
            GOOD.replace("key_cache_ttl_ms = 1000", "key_cache_ttl_ms = 2000")
        );
        assert_eq!(
            running.restart_needed(&parse(&moved).unwrap()),
            ["server.grpc_listen", "storage", "gateway"]
        );
        // The default output cap is part of the models, which a reload applies at once:
        // naming it as restart-only would tell the operator the opposite of what happened.
        let capped = parse(&format!("[limits]\nmax_output_tokens = 100\n{GOOD}")).unwrap();
        assert_eq!(capped.catalog.models["llama"].max_output_tokens, 100);
        assert_eq!(running.restart_needed(&capped), Vec::<&str>::new());
        let limited = parse(&format!("[limits]\nrequests_per_minute = 5\n{GOOD}")).unwrap();
        assert_eq!(running.restart_needed(&limited), ["limits"]);
        let other_token = Config::parse(GOOD, Path::new("/srv"), |v| {
            (v == "TOLLGATE_FILTER_TOKEN")
                .then(|| "another-token-another-token-another".to_owned())
                .or_else(|| env(v))
        })
        .unwrap();
        assert_eq!(
            running.restart_needed(&other_token),
            ["server.filter_token_env"]
        );
    }

    #[test]
    fn a_source_reads_the_file_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, GOOD).unwrap();
        let source = ConfigSource::new(&path, env);
        assert_eq!(source.load().unwrap().catalog.models.len(), 3);
        std::fs::write(
            &path,
            GOOD.replace("name = \"llama\"", "name = \"llama-2\""),
        )
        .unwrap();
        let again = source.load().unwrap();
        assert!(again.catalog.models.contains_key("llama-2"));
        assert_eq!(
            again.storage.database_url,
            format!("sqlite://{}/.tollgate/tollgate.db", dir.path().display())
        );
        assert!(!format!("{source:?}").contains("sk-openai"));
    }
}
