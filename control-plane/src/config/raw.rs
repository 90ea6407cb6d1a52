//! The config file's schema as written: serde structs with every default, and no checks
//! beyond types. Each section is validated into typed values by its own module.

use serde::Deserialize;
use std::path::PathBuf;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    #[serde(default)]
    pub server: ServerFile,
    #[serde(default)]
    pub storage: StorageFile,
    #[serde(default)]
    pub api: ApiFile,
    #[serde(default)]
    pub gateway: GatewayFile,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub budgets: BudgetsFile,
    #[serde(default)]
    pub secrets: SecretsFile,
    #[serde(default)]
    pub catalog: CatalogFile,
    #[serde(default)]
    pub providers: Vec<ProviderFile>,
    #[serde(default)]
    pub models: Vec<ModelFile>,
    #[serde(default)]
    pub envoy: crate::envoy_config::EnvoyFile,
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ServerFile {
    pub grpc_listen: String,
    pub http_listen: String,
    pub filter_token_env: String,
    pub filter_dir: Option<PathBuf>,
    pub dashboard_dir: Option<PathBuf>,
}

impl Default for ServerFile {
    fn default() -> Self {
        Self {
            grpc_listen: "127.0.0.1:50051".into(),
            http_listen: "127.0.0.1:8080".into(),
            filter_token_env: "TOLLGATE_FILTER_TOKEN".into(),
            filter_dir: None,
            dashboard_dir: None,
        }
    }
}

/// `[api]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ApiFile {
    pub session_secret_env: String,
    pub session_ttl_ms: u64,
    pub cors_origins: Vec<String>,
    pub body_limit_bytes: usize,
    pub login_failures_per_user: u32,
    pub login_failures_per_ip: u32,
    pub login_window_ms: u64,
    pub metrics_token_env: String,
}

impl Default for ApiFile {
    fn default() -> Self {
        Self {
            session_secret_env: "TOLLGATE_SESSION_SECRET".into(),
            session_ttl_ms: 12 * 3_600_000,
            cors_origins: Vec::new(),
            body_limit_bytes: 1 << 20,
            login_failures_per_user: 5,
            login_failures_per_ip: 20,
            login_window_ms: 15 * 60_000,
            metrics_token_env: "TOLLGATE_METRICS_TOKEN".into(),
        }
    }
}

/// `[storage]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct StorageFile {
    pub database_url: Option<String>,
    pub database_url_env: Option<String>,
    pub data_dir: Option<PathBuf>,
}

/// `[gateway]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct GatewayFile {
    pub key_cache_ttl_ms: u32,
}

impl Default for GatewayFile {
    fn default() -> Self {
        Self {
            key_cache_ttl_ms: 5_000,
        }
    }
}

/// `[limits]`. Signed, so a negative value is refused with the field's name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct LimitsFile {
    pub requests_per_minute: Option<i64>,
    pub tokens_per_minute: Option<i64>,
    pub user_requests_per_minute: Option<i64>,
    pub user_tokens_per_minute: Option<i64>,
    pub max_output_tokens: Option<i64>,
    pub failed_auths_per_minute_per_ip: Option<i64>,
    pub share_ttl_ms: Option<i64>,
    pub share_clock_skew_ms: Option<i64>,
}

/// `[budgets]`. Signed, so a negative value is refused with the field's name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct BudgetsFile {
    pub lease_ttl_ms: i64,
    pub reclaim_grace_ms: i64,
    pub sweep_interval_ms: i64,
    pub on_control_plane_unreachable: tollgate_core::settings::Unreachable,
}

impl Default for BudgetsFile {
    fn default() -> Self {
        Self {
            lease_ttl_ms: 60_000,
            reclaim_grace_ms: 660_000,
            sweep_interval_ms: 5_000,
            on_control_plane_unreachable: tollgate_core::settings::Unreachable::Refuse,
        }
    }
}

/// `[secrets]`: each key from a variable or a file, not both.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct SecretsFile {
    pub master_key_env: Option<String>,
    pub master_key_file: Option<PathBuf>,
    pub previous_master_key_env: Option<String>,
    pub previous_master_key_file: Option<PathBuf>,
}

/// `[catalog]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct CatalogFile {
    pub allow_private_upstreams: bool,
}

/// One `[[providers]]` entry, and the fields of a provider the HTTP API adds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderFile {
    /// Name; also its Envoy cluster.
    pub name: String,
    /// Where it is reached, e.g. `https://api.openai.com`.
    pub url: Option<String>,
    /// The API it speaks (default `openai`).
    #[serde(default)]
    pub kind: Option<String>,
    /// Header carrying its key (default: the kind's).
    pub auth_header: Option<String>,
    /// How the key is written into it (default: the kind's).
    pub auth_scheme: Option<AuthScheme>,
    /// The environment variable holding its key (the config file only).
    pub api_key_env: Option<String>,
    /// Longest whole answer, ms.
    #[serde(default)]
    pub timeout_ms: Option<u32>,
    /// Client headers passed on beyond the gateway's allow-list.
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// Responses `background: true` allowed.
    #[serde(default)]
    pub allow_background: bool,
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

/// One `[[models]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelFile {
    pub name: String,
    pub provider: String,
    #[serde(default)]
    pub upstream_model: Option<String>,
    pub input: Option<f64>,
    pub output: Option<f64>,
    #[serde(default)]
    pub cache_read: Option<f64>,
    #[serde(default)]
    pub cache_write: Option<f64>,
    #[serde(default)]
    pub free: bool,
    #[serde(default)]
    pub max_output_tokens: Option<i64>,
}
