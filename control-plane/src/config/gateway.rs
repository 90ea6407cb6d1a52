//! `[gateway]`: how the filter treats what the control plane tells it.

use super::raw::GatewayFile;
use super::{ConfigError, field_error};

/// The longest a filter may cache a key's grant: one hour.
const MAX_KEY_CACHE_TTL_MS: u32 = 3_600_000;

/// The validated `[gateway]` section; applied only when the process starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewaySettings {
    /// How long the filter may cache a key's grant and a model's route.
    pub key_cache_ttl_ms: u32,
}

/// Validates `[gateway]`.
pub(super) fn validate(file: GatewayFile) -> Result<GatewaySettings, ConfigError> {
    if file.key_cache_ttl_ms > MAX_KEY_CACHE_TTL_MS {
        return Err(field_error(
            "gateway.key_cache_ttl_ms",
            "must be at most 3600000 (one hour)",
        ));
    }
    Ok(GatewaySettings {
        key_cache_ttl_ms: file.key_cache_ttl_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_cache_is_at_most_an_hour() {
        let ttl = |key_cache_ttl_ms| validate(GatewayFile { key_cache_ttl_ms });
        assert_eq!(ttl(0).unwrap().key_cache_ttl_ms, 0);
        assert_eq!(ttl(3_600_000).unwrap().key_cache_ttl_ms, 3_600_000);
        let e = ttl(3_600_001).unwrap_err().to_string();
        assert!(e.contains("gateway.key_cache_ttl_ms"), "{e}");
    }
}
