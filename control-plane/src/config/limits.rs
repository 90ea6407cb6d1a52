//! `[limits]`: the defaults of every key's limits (a key's own value overrides them), and
//! the failed-authentication brake per client address, rendered into the filter's settings.

use super::raw::LimitsFile;
use super::{ConfigError, field_error};

/// Default of [`LimitSettings::failed_auths_per_minute_per_ip`]: enough for a person
/// fumbling a key, far too few to guess one.
pub const DEFAULT_FAILED_AUTHS_PER_MINUTE_PER_IP: u32 = 30;

/// The validated `[limits]` section; applied only when the process starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// Requests per minute of a key without its own; `None`: unlimited, 0: blocked.
    pub requests_per_minute: Option<u32>,
    /// Tokens (prompt + output) per minute of a key without its own; `None`: unlimited,
    /// 0: blocked.
    pub tokens_per_minute: Option<u64>,
    /// Calls with a missing, unknown or revoked key one client address may make in any
    /// minute before every call from it is refused (the filter's setting of that name).
    pub failed_auths_per_minute_per_ip: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            requests_per_minute: None,
            tokens_per_minute: None,
            failed_auths_per_minute_per_ip: DEFAULT_FAILED_AUTHS_PER_MINUTE_PER_IP,
        }
    }
}

impl LimitSettings {
    /// The requests per minute of a key whose own limit is `own` (`None`: not set).
    pub fn requests_per_minute(&self, own: Option<u32>) -> Option<u32> {
        own.or(self.requests_per_minute)
    }

    /// The tokens per minute of a key whose own limit is `own` (`None`: not set).
    pub fn tokens_per_minute(&self, own: Option<u64>) -> Option<u64> {
        own.or(self.tokens_per_minute)
    }
}

/// Validates `[limits]`.
pub(super) fn validate(file: LimitsFile) -> Result<LimitSettings, ConfigError> {
    let requests_per_minute = file
        .requests_per_minute
        .map(|n| {
            u32::try_from(n).map_err(|_| {
                field_error(
                    "limits.requests_per_minute",
                    "must be from 0 (every call refused) to 4294967295; leave it out for no limit",
                )
            })
        })
        .transpose()?;
    let tokens_per_minute = file
        .tokens_per_minute
        .map(|n| {
            u64::try_from(n).map_err(|_| {
                field_error(
                    "limits.tokens_per_minute",
                    "must be 0 (every call refused) or more; leave it out for no limit",
                )
            })
        })
        .transpose()?;
    let failed_auths_per_minute_per_ip = match file.failed_auths_per_minute_per_ip {
        None => DEFAULT_FAILED_AUTHS_PER_MINUTE_PER_IP,
        Some(n) => u32::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
            field_error(
                "limits.failed_auths_per_minute_per_ip",
                "must be from 1 to 4294967295 (0 would refuse every address)",
            )
        })?,
    };
    Ok(LimitSettings {
        requests_per_minute,
        tokens_per_minute,
        failed_auths_per_minute_per_ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpm(requests_per_minute: Option<i64>) -> Result<LimitSettings, ConfigError> {
        validate(LimitsFile {
            requests_per_minute,
            ..LimitsFile::default()
        })
    }

    #[test]
    fn tokens_and_the_brake_are_read_and_checked() {
        let file = |tpm, brake| LimitsFile {
            tokens_per_minute: tpm,
            failed_auths_per_minute_per_ip: brake,
            ..LimitsFile::default()
        };
        let absent = validate(file(None, None)).unwrap();
        assert_eq!(absent.tokens_per_minute, None);
        assert_eq!(absent.failed_auths_per_minute_per_ip, 30);
        let set = validate(file(Some(0), Some(5))).unwrap();
        assert_eq!(set.tokens_per_minute, Some(0));
        assert_eq!(set.failed_auths_per_minute_per_ip, 5);
        assert_eq!(set.tokens_per_minute(None), Some(0));
        assert_eq!(set.tokens_per_minute(Some(7)), Some(7));
        let e = validate(file(Some(-1), None)).unwrap_err().to_string();
        assert!(e.contains("limits.tokens_per_minute"), "{e}");
        for bad in [0, -1, i64::from(u32::MAX) + 1] {
            let e = validate(file(None, Some(bad))).unwrap_err().to_string();
            assert!(e.contains("limits.failed_auths_per_minute_per_ip"), "{e}");
        }
    }

    #[test]
    fn absent_is_unlimited_and_zero_is_blocked() {
        assert_eq!(rpm(None).unwrap().requests_per_minute, None);
        assert_eq!(rpm(Some(0)).unwrap().requests_per_minute, Some(0));
        assert_eq!(rpm(Some(600)).unwrap().requests_per_minute, Some(600));
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        for bad in [-1, i64::from(u32::MAX) + 1] {
            let e = rpm(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("limits.requests_per_minute"), "{e}");
        }
    }

    #[test]
    fn a_keys_own_limit_wins_over_the_default_even_when_zero() {
        let default = rpm(Some(100)).unwrap();
        assert_eq!(default.requests_per_minute(None), Some(100));
        assert_eq!(default.requests_per_minute(Some(0)), Some(0));
        assert_eq!(default.requests_per_minute(Some(5)), Some(5));
        assert_eq!(LimitSettings::default().requests_per_minute(None), None);
    }
}
