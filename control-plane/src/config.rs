//! The control plane's one configuration: a TOML file, checked whole at start.
//!
//! Every error names the field at fault (`models[2].input`), so a bad deploy stops with
//! a message a person can act on instead of a gateway that misprices calls.

use crate::envoy_config::{EnvoyFile, EnvoySection, Upstream};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;
use tollgate_core::headers;
use tollgate_core::pricing::{self, Price};
use tollgate_core::providers::{AuthStyle, ProviderKind};
use tollgate_core::sidecar::SidecarToken;

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

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    server: ServerFile,
    #[serde(default)]
    storage: StorageFile,
    #[serde(default)]
    gateway: GatewayFile,
    #[serde(default)]
    providers: Vec<ProviderFile>,
    #[serde(default)]
    models: Vec<ModelFile>,
    #[serde(default)]
    envoy: EnvoyFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ServerFile {
    grpc_listen: String,
    http_listen: String,
    filter_token_env: String,
}

impl Default for ServerFile {
    fn default() -> Self {
        Self {
            grpc_listen: "127.0.0.1:50051".into(),
            http_listen: "127.0.0.1:8080".into(),
            filter_token_env: "TOLLGATE_FILTER_TOKEN".into(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StorageFile {
    database_url: Option<String>,
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct GatewayFile {
    key_cache_ttl_ms: u32,
}

impl Default for GatewayFile {
    fn default() -> Self {
        Self {
            key_cache_ttl_ms: 5_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderFile {
    name: String,
    url: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    auth_header: Option<String>,
    auth_scheme: Option<AuthScheme>,
    api_key_env: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u32>,
    #[serde(default)]
    forward_headers: Vec<String>,
    #[serde(default)]
    allow_background: bool,
}

/// How the provider's key is written into its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthScheme {
    /// `Bearer <key>` (OpenAI, DeepSeek, Gemini's OpenAI endpoint, vLLM).
    Bearer,
    /// The key alone (Anthropic's `x-api-key`, Azure's `api-key`).
    Raw,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    name: String,
    provider: String,
    #[serde(default)]
    upstream_model: Option<String>,
    input: Option<f64>,
    output: Option<f64>,
    #[serde(default)]
    cache_read: Option<f64>,
    #[serde(default)]
    cache_write: Option<f64>,
    #[serde(default)]
    free: bool,
}

/// A provider the gateway can send calls to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// Name; also the Envoy cluster that reaches it.
    pub name: String,
    /// Where Envoy reaches it (`url`).
    pub url: Upstream,
    /// The API it speaks.
    pub kind: ProviderKind,
    /// The longest its whole answer may take, streams included, in ms.
    pub timeout_ms: u32,
    /// Header carrying the provider's credential.
    pub auth_header: String,
    /// The full header value, or `None` to send no credential (e.g. a local server).
    pub auth_value: Option<String>,
    /// Client headers passed to this provider beyond the gateway's allow-list.
    pub forward_headers: Vec<String>,
    /// Responses `background: true` (usage never seen by the gateway) is allowed.
    pub allow_background: bool,
}

/// A model the gateway serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// Name, as clients write it in `model`.
    pub name: String,
    /// Name of the provider that serves it.
    pub provider: String,
    /// The name the provider knows it by, when it differs.
    pub upstream_model: Option<String>,
    /// Prices; all zero for a model marked free.
    pub price: Price,
}

/// The validated configuration of the control plane.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the filter's gRPC API listens.
    pub grpc_listen: SocketAddr,
    /// Where the HTTP API (health, later the dashboard) listens.
    pub http_listen: SocketAddr,
    /// The environment variable holding the filter's token (`server.filter_token_env`).
    pub filter_token_env: String,
    /// The token every gRPC call from the filter must carry, if its variable is set;
    /// only `serve` needs it (see [`Config::filter_token`]).
    pub filter_token: Option<SidecarToken>,
    /// sqlx URL: `sqlite://…` (default, under the data dir) or `postgres://…`.
    pub database_url: String,
    /// How long the filter may cache a key's grant and a model's route.
    pub key_cache_ttl_ms: u32,
    /// Providers by name.
    pub providers: HashMap<String, Provider>,
    /// Models by name.
    pub models: HashMap<String, Model>,
    /// The Envoy in front of the filter (`[envoy]`), for `tollgate envoy-config`.
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

    /// Validates TOML text; relative paths are taken from `base`.
    pub fn parse(
        text: &str,
        base: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;

        let grpc_listen = file.server.grpc_listen.parse().map_err(|_| {
            field_error(
                "server.grpc_listen",
                "must be an address like 127.0.0.1:50051",
            )
        })?;
        let http_listen = file.server.http_listen.parse().map_err(|_| {
            field_error(
                "server.http_listen",
                "must be an address like 127.0.0.1:8080",
            )
        })?;

        let filter_token_env = file.server.filter_token_env;
        let filter_token = env(&filter_token_env).map(SidecarToken::from);
        if let Some(problem) = filter_token.as_ref().and_then(SidecarToken::problem) {
            return Err(field_error(
                "server.filter_token_env",
                format!("names `{filter_token_env}`, whose value {problem}"),
            ));
        }

        let database_url = match (file.storage.database_url, file.storage.data_dir) {
            (Some(_), Some(_)) => {
                return Err(field_error(
                    "storage.database_url",
                    "and `storage.data_dir` are exclusive: the data dir only places the SQLite file",
                ));
            }
            (Some(url), None) => {
                if !(url.starts_with("sqlite:")
                    || url.starts_with("postgres://")
                    || url.starts_with("postgresql://"))
                {
                    return Err(field_error(
                        "storage.database_url",
                        "must start with sqlite:, postgres:// or postgresql://",
                    ));
                }
                url
            }
            (None, dir) => {
                let dir = base.join(dir.unwrap_or_else(|| PathBuf::from(".tollgate")));
                format!("sqlite://{}", dir.join("tollgate.db").display())
            }
        };

        if file.gateway.key_cache_ttl_ms > 3_600_000 {
            return Err(field_error(
                "gateway.key_cache_ttl_ms",
                "must be at most 3600000 (one hour)",
            ));
        }

        let mut providers = HashMap::new();
        for (i, p) in file.providers.into_iter().enumerate() {
            let provider = provider(i, p, &env)?;
            if providers.contains_key(&provider.name) {
                return Err(field_error(
                    format!("providers[{i}].name"),
                    format!("`{}` is defined twice", provider.name),
                ));
            }
            providers.insert(provider.name.clone(), provider);
        }

        let mut models = HashMap::new();
        for (i, m) in file.models.into_iter().enumerate() {
            let model = model(i, m, &providers)?;
            if models.contains_key(&model.name) {
                return Err(field_error(
                    format!("models[{i}].name"),
                    format!("`{}` is defined twice", model.name),
                ));
            }
            models.insert(model.name.clone(), model);
        }
        if models.is_empty() {
            return Err(field_error("models", "must list at least one model"));
        }

        let envoy = EnvoySection::from_file(file.envoy, grpc_listen, base)?;

        Ok(Config {
            grpc_listen,
            http_listen,
            filter_token_env,
            filter_token,
            database_url,
            key_cache_ttl_ms: file.gateway.key_cache_ttl_ms,
            providers,
            models,
            envoy,
        })
    }
}

impl Config {
    /// The token the filter must send; serving without one would leave the gRPC API open.
    pub fn filter_token(&self) -> Result<&SidecarToken, ConfigError> {
        self.filter_token.as_ref().ok_or_else(|| {
            field_error(
                "server.filter_token_env",
                format!(
                    "names the environment variable `{}`, which is not set: it must hold the \
                     token the filter sends (its `control_plane_token`)",
                    self.filter_token_env
                ),
            )
        })
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn provider(
    i: usize,
    p: ProviderFile,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Provider, ConfigError> {
    if !is_name(&p.name) {
        return Err(field_error(
            format!("providers[{i}].name"),
            "must be a non-empty name of letters, digits, '-', '_' or '.' (it is also an Envoy cluster name)",
        ));
    }
    // Required: a provider without an address cannot be reached.
    let url = p.url.as_deref().ok_or_else(|| {
        field_error(
            format!("providers[{i}].url"),
            "is missing: give the provider's address, e.g. https://api.openai.com",
        )
    })?;
    let url = Upstream::parse(url).map_err(|e| field_error(format!("providers[{i}].url"), e))?;
    let kind = match p.kind.as_deref() {
        None => ProviderKind::OpenAi,
        Some(k) => ProviderKind::from_name(k).ok_or_else(|| {
            let kinds: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.name()).collect();
            field_error(
                format!("providers[{i}].kind"),
                format!("`{k}` is not one of {}", kinds.join(", ")),
            )
        })?,
    };
    let (default_header, default_scheme) = match kind.default_auth() {
        AuthStyle::Bearer => ("authorization", AuthScheme::Bearer),
        AuthStyle::Raw(header) => (header, AuthScheme::Raw),
    };
    let auth_header = p.auth_header.unwrap_or_else(|| default_header.to_owned());
    let auth_scheme = p.auth_scheme.unwrap_or(default_scheme);
    let header_ok = !auth_header.is_empty()
        && auth_header
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !header_ok {
        return Err(field_error(
            format!("providers[{i}].auth_header"),
            "must be a lower-case header name",
        ));
    }
    let auth_value = match p.api_key_env {
        None => None,
        Some(var) => {
            let key = env(&var).filter(|k| !k.trim().is_empty()).ok_or_else(|| {
                field_error(
                    format!("providers[{i}].api_key_env"),
                    format!("names the environment variable `{var}`, which is not set"),
                )
            })?;
            Some(match auth_scheme {
                AuthScheme::Bearer => format!("Bearer {}", key.trim()),
                AuthScheme::Raw => key.trim().to_owned(),
            })
        }
    };
    let timeout_ms = p.timeout_ms.unwrap_or(600_000);
    if !(1..=3_600_000).contains(&timeout_ms) {
        return Err(field_error(
            format!("providers[{i}].timeout_ms"),
            "must be between 1 and 3600000",
        ));
    }
    for (j, h) in p.forward_headers.iter().enumerate() {
        let name_ok = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok || headers::never_forwarded(h) || *h == auth_header {
            return Err(field_error(
                format!("providers[{i}].forward_headers[{j}]"),
                format!(
                    "`{h}` must be a lower-case header name that is not a credential, a cookie \
                     or a header the gateway sets"
                ),
            ));
        }
    }
    Ok(Provider {
        name: p.name,
        url,
        kind,
        timeout_ms,
        auth_header,
        auth_value,
        forward_headers: p.forward_headers,
        allow_background: p.allow_background,
    })
}

fn model(
    i: usize,
    m: ModelFile,
    providers: &HashMap<String, Provider>,
) -> Result<Model, ConfigError> {
    if m.name.trim().is_empty() || m.name.len() > 256 {
        return Err(field_error(
            format!("models[{i}].name"),
            "must be 1 to 256 bytes",
        ));
    }
    if !providers.contains_key(&m.provider) {
        return Err(field_error(
            format!("models[{i}].provider"),
            format!("names `{}`, which is not in [[providers]]", m.provider),
        ));
    }
    let price_of = |field: &str, value: Option<f64>, required: bool| -> Result<u64, ConfigError> {
        match value {
            None if required && !m.free => Err(field_error(
                format!("models[{i}].{field}"),
                "is missing: give the price in USD per 1M tokens, or set `free = true`",
            )),
            None => Ok(0),
            Some(_) if m.free => Err(field_error(
                format!("models[{i}].{field}"),
                "is set on a model marked `free = true`",
            )),
            Some(v) => pricing::micros_per_mtok(v)
                .map_err(|e| field_error(format!("models[{i}].{field}"), e.to_string())),
        }
    };
    let price = Price {
        input: price_of("input", m.input, true)?,
        output: price_of("output", m.output, true)?,
        cache_read: price_of("cache_read", m.cache_read, false)?,
        cache_write: price_of("cache_write", m.cache_write, false)?,
    };
    if m.upstream_model
        .as_deref()
        .is_some_and(|u| u.trim().is_empty() || u.len() > 256)
    {
        return Err(field_error(
            format!("models[{i}].upstream_model"),
            "must be 1 to 256 bytes",
        ));
    }
    Ok(Model {
        name: m.name,
        provider: m.provider,
        upstream_model: m.upstream_model,
        price,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [gateway]
        key_cache_ttl_ms = 1000

        [[providers]]
        name = "openai"
        url = "https://api.openai.com"
        api_key_env = "OPENAI_API_KEY"

        [[providers]]
        name = "anthropic"
        url = "https://api.anthropic.com"
        kind = "anthropic"
        api_key_env = "ANTHROPIC_API_KEY"
        timeout_ms = 30000

        [[providers]]
        name = "local"
        url = "http://127.0.0.1:8000"

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
    fn good_config() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.database_url, "sqlite:///srv/.tollgate/tollgate.db");
        assert_eq!(c.key_cache_ttl_ms, 1000);
        assert!(
            c.filter_token()
                .unwrap()
                .accepts(format!("Bearer {FILTER_TOKEN}").as_bytes())
        );
        assert_eq!(
            c.providers["openai"].auth_value.as_deref(),
            Some("Bearer sk-openai")
        );
        assert_eq!(c.providers["anthropic"].auth_header, "x-api-key");
        assert_eq!(
            c.providers["anthropic"].auth_value.as_deref(),
            Some("sk-ant")
        );
        assert_eq!(c.providers["local"].auth_value, None);
        assert_eq!(c.providers["anthropic"].kind, ProviderKind::Anthropic);
        assert_eq!(c.providers["anthropic"].timeout_ms, 30_000);
        assert_eq!(c.providers["openai"].kind, ProviderKind::OpenAi);
        assert_eq!(c.providers["openai"].auth_header, "authorization");
        assert_eq!(
            c.models["claude-sonnet-4"].upstream_model.as_deref(),
            Some("claude-sonnet-4-20250514")
        );
        assert_eq!(c.models["gpt-4o"].price.input, 2_500_000);
        assert_eq!(c.models["gpt-4o"].price.cache_read, 1_250_000);
        assert_eq!(c.models["claude-sonnet-4"].price.cache_write, 3_750_000);
        assert_eq!(c.models["llama"].price, Price::default());
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
                "[server]\ngrpc_listen = \"nowhere\"\n[[providers]]\nname=\"p\"\nurl=\"http://127.0.0.1:9000\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true",
                "server.grpc_listen",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl=\"http://127.0.0.1:9000\"\n[[models]]\nname=\"m\"\nprovider=\"q\"\nfree=true",
                "models[0].provider",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl=\"http://127.0.0.1:9000\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\ninput=-1\noutput=1",
                "models[0].input",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl=\"http://127.0.0.1:9000\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\ninput=0.0000001\noutput=1",
                "models[0].input",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl=\"http://127.0.0.1:9000\"\napi_key_env=\"NOPE\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true",
                "providers[0].api_key_env",
            ),
            (
                "[[providers]]\nname=\"a b\"\nurl=\"http://127.0.0.1:9000\"\n[[models]]\nname=\"m\"\nprovider=\"a b\"\nfree=true",
                "providers[0].name",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl=\"http://127.0.0.1:9000\"\n[[providers]]\nname=\"p\"\nurl=\"http://127.0.0.1:9000\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true",
                "providers[1].name",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl=\"http://127.0.0.1:9000\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true\ninput=1",
                "models[0].input",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl=\"http://127.0.0.1:9000\"",
                "models",
            ),
            (
                "[[providers]]\nname=\"p\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true",
                "providers[0].url",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl=\"ftp://x\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true",
                "providers[0].url",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl=\"http://127.0.0.1:9000\"\nkind=\"azure\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true",
                "providers[0].kind",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl=\"http://127.0.0.1:9000\"\ntimeout_ms=0\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true",
                "providers[0].timeout_ms",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl=\"http://127.0.0.1:9000\"\nforward_headers=[\"x-ok\", \"Cookie\"]\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true",
                "providers[0].forward_headers[1]",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl=\"http://127.0.0.1:9000\"\nforward_headers=[\"authorization\"]\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true",
                "providers[0].forward_headers[0]",
            ),
            (
                "[[providers]]\nname=\"p\"\nurl=\"http://127.0.0.1:9000\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true\nupstream_model=\"\"",
                "models[0].upstream_model",
            ),
            (
                "[storage]\ndatabase_url=\"mysql://x\"\n[[providers]]\nname=\"p\"\nurl=\"http://127.0.0.1:9000\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true",
                "storage.database_url",
            ),
            (
                "[gateway]\nkey_cache_ttl_ms=99999999\n[[providers]]\nname=\"p\"\nurl=\"http://127.0.0.1:9000\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true",
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
        let models = "[[providers]]\nname=\"p\"\nurl=\"http://127.0.0.1:9000\"\n[[models]]\nname=\"m\"\nprovider=\"p\"\nfree=true\n";
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
        let e = unset.filter_token().unwrap_err().to_string();
        assert!(
            e.contains("server.filter_token_env") && e.contains("MY_TOKEN"),
            "{e}"
        );

        let set = Config::parse(&elsewhere, Path::new("/"), |v| {
            (v == "MY_TOKEN").then(|| "t".repeat(32))
        })
        .unwrap();
        assert!(set.filter_token().is_ok());
        assert!(
            !format!("{set:?}").contains(&"t".repeat(32)),
            "Debug shows the token"
        );
    }

    #[test]
    fn unknown_and_mistyped_fields_are_named() {
        let e = err("[[providers]]\nname=\"p\"\nurl=\"http://127.0.0.1:9000\"\nkey_env=\"X\"");
        assert!(e.contains("key_env"), "{e}");
        let e = err("[gateway]\nkey_cache_ttl_ms=\"soon\"");
        assert!(e.contains("key_cache_ttl_ms"), "{e}");
    }
}
