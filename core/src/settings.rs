//! The filter's configuration: the JSON given as the wasm plugin's `configuration` in Envoy.
//!
//! Parsed and checked once when the plugin starts; a bad field fails plugin start with
//! an error naming it, so a typo shows up at deploy time rather than as odd traffic.

use serde::Deserialize;
use thiserror::Error;

/// Everything the filter can be told.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterSettings {
    /// Envoy cluster (HTTP/2) that reaches the control plane's gRPC port.
    pub control_plane_cluster: String,
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
    /// Count every prompt with the model's tokenizer before admission (exact, but it loads
    /// the tokenizer, ~40 MiB per worker, and costs CPU per request). Off: prompts are only
    /// counted when a provider reports no usage.
    pub count_prompt_tokens: bool,
}

impl Default for FilterSettings {
    fn default() -> Self {
        Self {
            control_plane_cluster: "tollgate_control_plane".into(),
            control_plane_timeout_ms: 2_000,
            metadata_namespace: "tollgate".into(),
            route_header: "x-tollgate-provider".into(),
            max_body_bytes: 4 << 20,
            max_key_cache_ms: 30_000,
            unknown_key_cache_ms: 1_000,
            usage_flush_interval_ms: 250,
            usage_buffer_limit: 10_000,
            count_prompt_tokens: false,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SettingsError {
    /// Not JSON, wrong types, or an unknown field.
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
    /// Parses and validates the plugin configuration; empty means all defaults.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SettingsError> {
        let settings: Self = if bytes.trim_ascii().is_empty() {
            Self::default()
        } else {
            serde_json::from_slice(bytes).map_err(|e| SettingsError::Parse(e.to_string()))?
        };
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let field = |field, problem| Err(SettingsError::Field { field, problem });
        if self.control_plane_cluster.is_empty() {
            return field("control_plane_cluster", "must not be empty");
        }
        if !(1..=60_000).contains(&self.control_plane_timeout_ms) {
            return field("control_plane_timeout_ms", "must be between 1 and 60000");
        }
        if self.metadata_namespace.is_empty() {
            return field("metadata_namespace", "must not be empty");
        }
        let header_ok = !self.route_header.is_empty()
            && self
                .route_header
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !header_ok {
            return field(
                "route_header",
                "must be a lower-case header name (a-z, 0-9, -)",
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_means_defaults() {
        assert_eq!(
            FilterSettings::from_json(b"").unwrap(),
            FilterSettings::default()
        );
        assert_eq!(
            FilterSettings::from_json(b" {} ").unwrap(),
            FilterSettings::default()
        );
    }

    #[test]
    fn fields_override() {
        let s = FilterSettings::from_json(br#"{"max_key_cache_ms": 500, "route_header": "x-p"}"#)
            .unwrap();
        assert_eq!(s.max_key_cache_ms, 500);
        assert_eq!(s.route_header, "x-p");
    }

    #[test]
    fn bad_fields_are_named() {
        let e = FilterSettings::from_json(br#"{"max_body_bytes": 0}"#).unwrap_err();
        assert!(e.to_string().contains("max_body_bytes"), "{e}");
        let e = FilterSettings::from_json(br#"{"route_header": "X-Bad"}"#).unwrap_err();
        assert!(e.to_string().contains("route_header"), "{e}");
        let e = FilterSettings::from_json(br#"{"max_body_bytez": 1}"#).unwrap_err();
        assert!(e.to_string().contains("max_body_bytez"), "{e}");
        let e = FilterSettings::from_json(br#"{"max_body_bytes": "big"}"#).unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
    }
}
