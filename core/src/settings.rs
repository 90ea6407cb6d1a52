//! The filter's configuration: the JSON given as the wasm plugin's `configuration` in Envoy.
//!
//! Parsed and checked once when the plugin starts; a bad field fails plugin start with
//! an error naming it, so a typo shows up at deploy time rather than as odd traffic.

use crate::headers;
use crate::sidecar::SidecarToken;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Default of [`FilterSettings::control_plane_cluster`].
pub const DEFAULT_CONTROL_PLANE_CLUSTER: &str = "tollgate_control_plane";
/// Default of [`FilterSettings::metadata_namespace`].
pub const DEFAULT_METADATA_NAMESPACE: &str = "tollgate";
/// Default of [`FilterSettings::route_header`].
pub const DEFAULT_ROUTE_HEADER: &str = "x-tollgate-provider";

/// Keys under [`FilterSettings::metadata_namespace`] that Envoy's `json_to_metadata` writes
/// and the filter reads: both sides name them from here.
pub mod metadata_key {
    /// The body's `model`.
    pub const MODEL: &str = "model";
    /// Set when the JSON body has no `model`.
    pub const MODEL_MISSING: &str = "model_missing";
    /// Set when the body is not JSON.
    pub const BODY_ERROR: &str = "body_error";
    /// The body's `stream`.
    pub const STREAM: &str = "stream";
}

/// Everything the filter can be told.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterSettings {
    /// Envoy cluster (HTTP/2) that reaches the control plane's gRPC port.
    pub control_plane_cluster: String,
    /// The secret sent with every call to the control plane (`authorization: Bearer …`);
    /// the control plane refuses calls without it. Required, at least 32 bytes, unless
    /// [`FilterSettings::control_plane_token_env`] names where to read it.
    pub control_plane_token: SidecarToken,
    /// The VM's environment variable holding the token instead, so the plugin
    /// configuration (Envoy's bootstrap, a Kubernetes ConfigMap) holds no secret; Envoy
    /// exposes it through `vm_config.environment_variables.host_env_keys`.
    pub control_plane_token_env: Option<String>,
    /// Deadline for a call to the control plane.
    pub control_plane_timeout_ms: u64,
    /// Dynamic-metadata namespace where `json_to_metadata` writes `model` and `stream`.
    pub metadata_namespace: String,
    /// Request header the filter sets to the provider (= Envoy cluster) name; routes select on it.
    pub route_header: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Upper bound on how long an authorization answer is reused (the control plane may ask for less).
    pub max_key_cache_ms: u64,
    /// How long a key found unknown is refused without asking the control plane again
    /// (per worker, at most 4096 keys); a key created meanwhile works after this. 0: off.
    pub unknown_key_cache_ms: u64,
    /// How often usage records are sent to the control plane.
    pub usage_flush_interval_ms: u64,
    /// Records kept per worker while the control plane is unreachable; the oldest go first.
    pub usage_buffer_limit: usize,
    /// Bytes of records kept per worker (estimates carry text, up to hundreds of KiB each);
    /// the oldest go first. The batch in flight comes on top.
    pub usage_buffer_bytes: usize,
    /// Bytes a worker's VM may hold for calls in flight: request bodies while they are read,
    /// and a fixed charge per call for its metering state (tollgate-core `inflight`). A call
    /// that would pass it gets a 503; V8 traps a VM that passes 1 GiB.
    pub max_inflight_bytes: usize,
    /// Count every prompt with the model's tokenizer before admission (exact, but it loads
    /// the tokenizer, ~40 MiB per worker, and costs CPU per request). Off: prompts are only
    /// counted when a provider reports no usage.
    pub count_prompt_tokens: bool,
    /// Calls with a missing, unknown or revoked key one client address may make in any
    /// minute; past it every call from that address gets a 429 before its key is looked
    /// up (IPv6 addresses count per /64). At least 1.
    pub failed_auths_per_minute_per_ip: u32,
    /// The output cap of a token hold for a route whose price names none (the control
    /// plane sends the model's own; this stands in for an older one). At least 1.
    pub default_max_output_tokens: u64,
    /// What a call that needs more of a budget's money does when the control plane cannot
    /// lease it (`[budgets] on_control_plane_unreachable`).
    pub budgets_on_control_plane_unreachable: Unreachable,
}

/// What a call that needs a new budget lease does when the control plane cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unreachable {
    /// Fail closed: 503 `control_plane_unavailable`.
    #[default]
    Refuse,
    /// Keep drawing on what is left of the lease already held, expired or not: a budget
    /// can then be overrun by at most one lease per Envoy.
    AdmitWithinLease,
}

impl Default for FilterSettings {
    fn default() -> Self {
        Self {
            control_plane_cluster: DEFAULT_CONTROL_PLANE_CLUSTER.into(),
            control_plane_token: SidecarToken::default(),
            control_plane_token_env: None,
            control_plane_timeout_ms: 2_000,
            metadata_namespace: DEFAULT_METADATA_NAMESPACE.into(),
            route_header: DEFAULT_ROUTE_HEADER.into(),
            max_body_bytes: 4 << 20,
            max_key_cache_ms: 30_000,
            unknown_key_cache_ms: 1_000,
            usage_flush_interval_ms: 250,
            usage_buffer_limit: 10_000,
            usage_buffer_bytes: 32 << 20,
            max_inflight_bytes: 256 << 20,
            count_prompt_tokens: false,
            failed_auths_per_minute_per_ip: 30,
            default_max_output_tokens: 32_768,
            budgets_on_control_plane_unreachable: Unreachable::Refuse,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SettingsError {
    /// Not JSON, wrong types, or an unknown field (the message starts with the field's path).
    #[error("invalid filter configuration: {0}")]
    Parse(String),
    /// A field has a value outside its range.
    #[error("invalid filter configuration: `{field}` {problem}")]
    Field {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
}

impl FilterSettings {
    /// Parses and validates the plugin configuration; empty means all defaults. A token
    /// named by `control_plane_token_env` is never found: see [`FilterSettings::from_json_with_env`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, SettingsError> {
        Self::from_json_with_env(bytes, |_| None)
    }

    /// Parses and validates the plugin configuration, reading the token from the variable
    /// `control_plane_token_env` names through `env` (the VM's environment in the filter).
    pub fn from_json_with_env(
        bytes: &[u8],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SettingsError> {
        let mut settings: Self = if bytes.trim_ascii().is_empty() {
            Self::default()
        } else {
            // The path names the field a wrong type is in; serde alone names only the type.
            let mut json = serde_json::Deserializer::from_slice(bytes);
            serde_path_to_error::deserialize(&mut json)
                .map_err(|e| SettingsError::Parse(e.to_string()))?
        };
        if let Some(name) = &settings.control_plane_token_env {
            if !settings.control_plane_token.reveal().is_empty() {
                return Err(SettingsError::Field {
                    field: "control_plane_token_env",
                    problem: "and `control_plane_token` are exclusive: give the token one way",
                });
            }
            settings.control_plane_token =
                env(name)
                    .map(SidecarToken::from)
                    .ok_or(SettingsError::Field {
                        field: "control_plane_token_env",
                        problem: "names a variable the VM's environment lacks: set it in Envoy's \
                              environment and list it in the plugin's \
                              vm_config.environment_variables.host_env_keys",
                    })?;
        }
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let field = |field, problem| Err(SettingsError::Field { field, problem });
        if self.control_plane_cluster.is_empty() {
            return field("control_plane_cluster", "must not be empty");
        }
        if let Some(problem) = self.control_plane_token.problem() {
            return field("control_plane_token", problem);
        }
        if !(1..=60_000).contains(&self.control_plane_timeout_ms) {
            return field("control_plane_timeout_ms", "must be between 1 and 60000");
        }
        // Envoy reserves `envoy.*` metadata for its own filters (envoy.lb feeds load balancing).
        if self.metadata_namespace.is_empty() || self.metadata_namespace.starts_with("envoy.") {
            return field(
                "metadata_namespace",
                "must be non-empty and not start with `envoy.` (Envoy's own namespaces)",
            );
        }
        let header_ok = self
            .route_header
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && headers::free_for_routing(&self.route_header);
        if !header_ok {
            return field(
                "route_header",
                "must be a lower-case `x-` header name (a-z, 0-9, -) that HTTP, Envoy and \
                 providers give no meaning to (not x-envoy-*, x-forwarded-*, x-api-key, \
                 x-request-id, x-tollgate-request-id)",
            );
        }
        if self.unknown_key_cache_ms > 60_000 {
            return field("unknown_key_cache_ms", "must be at most 60000");
        }
        if self.max_body_bytes == 0 {
            return field("max_body_bytes", "must be greater than 0");
        }
        if !(10..=3_600_000).contains(&self.usage_flush_interval_ms) {
            return field("usage_flush_interval_ms", "must be between 10 and 3600000");
        }
        if self.usage_buffer_limit == 0 {
            return field("usage_buffer_limit", "must be greater than 0");
        }
        if self.max_inflight_bytes < self.max_body_bytes.saturating_mul(2)
            || self.max_inflight_bytes > 512 << 20
        {
            return field(
                "max_inflight_bytes",
                "must be at least twice max_body_bytes and at most 536870912 (512 MiB)",
            );
        }
        // At least one full batch; at most half of what a V8 VM may ever hold (1 GiB).
        if !((1 << 20)..=(512 << 20)).contains(&self.usage_buffer_bytes) {
            return field(
                "usage_buffer_bytes",
                "must be between 1048576 (1 MiB) and 536870912 (512 MiB)",
            );
        }
        if self.failed_auths_per_minute_per_ip == 0 {
            return field(
                "failed_auths_per_minute_per_ip",
                "must be at least 1 (0 would refuse every address)",
            );
        }
        if self.default_max_output_tokens == 0 {
            return field("default_max_output_tokens", "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn with_token(json: &str) -> Vec<u8> {
        let fields = json
            .trim()
            .trim_start_matches('{')
            .trim_end_matches('}')
            .trim();
        let sep = if fields.is_empty() { "" } else { ", " };
        format!(r#"{{"control_plane_token": "{TOKEN}"{sep}{fields}}}"#).into_bytes()
    }

    #[test]
    fn only_the_token_is_required() {
        let s = FilterSettings::from_json(&with_token("{}")).unwrap();
        assert_eq!(
            s,
            FilterSettings {
                control_plane_token: SidecarToken::from(TOKEN.to_owned()),
                ..FilterSettings::default()
            }
        );
        assert_eq!(s.control_plane_token.bearer(), format!("Bearer {TOKEN}"));
        for empty in [&b""[..], b" {} "] {
            let e = FilterSettings::from_json(empty).unwrap_err();
            assert!(e.to_string().contains("control_plane_token"), "{e}");
        }
    }

    #[test]
    fn fields_override() {
        let s = FilterSettings::from_json(&with_token(
            r#"{"max_key_cache_ms": 500, "route_header": "x-p"}"#,
        ))
        .unwrap();
        assert_eq!(s.max_key_cache_ms, 500);
        assert_eq!(s.route_header, "x-p");
    }

    #[test]
    fn route_header_and_namespace_cannot_take_names_http_or_envoy_give_meaning() {
        // Each would be overwritten with a provider's name (a credential, the body's length,
        // the Host) or read by Envoy itself; `envoy.` namespaces are Envoy's own.
        for header in [
            "authorization",
            "host",
            "connection",
            "content-length",
            "transfer-encoding",
            "te",
            "upgrade",
            "cookie",
            "x-api-key",
            "x-envoy-upstream-rq-timeout-ms",
            "x-forwarded-for",
            "x-request-id",
            "x-tollgate-request-id",
        ] {
            let json = format!(r#"{{"route_header": "{header}"}}"#);
            let e = FilterSettings::from_json(&with_token(&json)).unwrap_err();
            assert!(e.to_string().contains("route_header"), "{header}: {e}");
        }
        for ns in ["envoy.lb", "envoy.filters.http.wasm"] {
            let json = format!(r#"{{"metadata_namespace": "{ns}"}}"#);
            let e = FilterSettings::from_json(&with_token(&json)).unwrap_err();
            assert!(e.to_string().contains("metadata_namespace"), "{ns}: {e}");
        }
        let ok = FilterSettings::from_json(&with_token(
            r#"{"route_header": "x-route", "metadata_namespace": "com.example.meter"}"#,
        ))
        .unwrap();
        assert_eq!(
            (ok.route_header.as_str(), ok.metadata_namespace.as_str()),
            ("x-route", "com.example.meter")
        );
    }

    #[test]
    fn the_unreachable_mode_fails_closed_unless_told_otherwise() {
        let s = FilterSettings::from_json(&with_token("{}")).unwrap();
        assert_eq!(s.budgets_on_control_plane_unreachable, Unreachable::Refuse);
        let s = FilterSettings::from_json(&with_token(
            r#"{"budgets_on_control_plane_unreachable": "admit_within_lease"}"#,
        ))
        .unwrap();
        assert_eq!(
            s.budgets_on_control_plane_unreachable,
            Unreachable::AdmitWithinLease
        );
        let e = FilterSettings::from_json(&with_token(
            r#"{"budgets_on_control_plane_unreachable": "admit"}"#,
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("budgets_on_control_plane_unreachable"),
            "{e}"
        );
    }

    #[test]
    fn the_token_can_come_from_the_environment_instead() {
        let env = |name: &str| (name == "TG_TOKEN").then(|| TOKEN.to_owned());
        let s =
            FilterSettings::from_json_with_env(br#"{"control_plane_token_env": "TG_TOKEN"}"#, env)
                .unwrap();
        assert_eq!(s.control_plane_token.bearer(), format!("Bearer {TOKEN}"));
        for (json, problem) in [
            (r#"{"control_plane_token_env": "OTHER"}"#, "lacks"),
            (
                &*format!(
                    r#"{{"control_plane_token_env": "TG_TOKEN", "control_plane_token": "{TOKEN}"}}"#
                ),
                "exclusive",
            ),
        ] {
            let e = FilterSettings::from_json_with_env(json.as_bytes(), env)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("control_plane_token_env") && e.contains(problem),
                "{e}"
            );
        }
        let short = |_: &str| Some("short".to_owned());
        let e = FilterSettings::from_json_with_env(br#"{"control_plane_token_env": "T"}"#, short)
            .unwrap_err();
        assert!(e.to_string().contains("control_plane_token"), "{e}");
        assert!(!e.to_string().contains("short`"), "{e}");
        // Without an environment (the control plane's checks), the variable is never found.
        let e =
            FilterSettings::from_json(br#"{"control_plane_token_env": "TG_TOKEN"}"#).unwrap_err();
        assert!(e.to_string().contains("lacks"), "{e}");
    }

    #[test]
    fn bad_fields_are_named() {
        let short = br#"{"control_plane_token": "too-short"}"#;
        let e = FilterSettings::from_json(short).unwrap_err();
        assert!(e.to_string().contains("control_plane_token"), "{e}");
        assert!(!e.to_string().contains("too-short"), "{e}");
        for bytes in ["0", "1048575", "536870913"] {
            let json = format!(r#"{{"usage_buffer_bytes": {bytes}}}"#);
            let e = FilterSettings::from_json(&with_token(&json)).unwrap_err();
            assert!(e.to_string().contains("usage_buffer_bytes"), "{e}");
        }
        for json in [
            r#"{"max_inflight_bytes": 1000}"#,
            r#"{"max_body_bytes": 200000000}"#,
            r#"{"max_inflight_bytes": 536870913}"#,
        ] {
            let e = FilterSettings::from_json(&with_token(json)).unwrap_err();
            assert!(e.to_string().contains("max_inflight_bytes"), "{json}: {e}");
        }
        for json in [
            r#"{"failed_auths_per_minute_per_ip": 0}"#,
            r#"{"default_max_output_tokens": 0}"#,
        ] {
            let e = FilterSettings::from_json(&with_token(json)).unwrap_err();
            let field = json.split('"').nth(1).unwrap_or_default();
            assert!(e.to_string().contains(field), "{json}: {e}");
        }
        let e = FilterSettings::from_json(&with_token(r#"{"max_body_bytes": 0}"#)).unwrap_err();
        assert!(e.to_string().contains("max_body_bytes"), "{e}");
        let e = FilterSettings::from_json(&with_token(r#"{"route_header": "X-Bad"}"#)).unwrap_err();
        assert!(e.to_string().contains("route_header"), "{e}");
        let e = FilterSettings::from_json(br#"{"max_body_bytez": 1}"#).unwrap_err();
        assert!(e.to_string().contains("max_body_bytez"), "{e}");
        let e = FilterSettings::from_json(br#"{"max_body_bytes": "big"}"#).unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
        assert!(e.to_string().contains("max_body_bytes"), "{e}");
    }
}
