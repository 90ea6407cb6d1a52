//! `[limits]`: the defaults of every key's and user's limits (a key's or user's own value
//! overrides them), the default output cap of models, the failed-authentication brake
//! per client address, rendered into the filter's settings, and how long the shares of
//! limits leased to Envoys live.

use super::raw::LimitsFile;
use super::{ConfigError, field_error};
use crate::store::Limits;

/// Output cap of a model that sets none and of `[limits]` when it sets none.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 16_384;

/// Default of [`LimitSettings::failed_auths_per_minute_per_ip`]: enough for a person
/// fumbling a key, far too few to guess one.
pub const DEFAULT_FAILED_AUTHS_PER_MINUTE_PER_IP: u32 = 30;

/// Default of [`LimitSettings::share_ttl_ms`]: a busy Envoy renews about every 20 s (its
/// filter renews in a lease's last 10 s), and a killed one pins its share for at most
/// this, a minute and the skew.
pub const DEFAULT_SHARE_TTL_MS: i64 = 30_000;

/// Default of [`LimitSettings::share_clock_skew_ms`]: far more than NTP-synced hosts
/// drift apart, little next to the minute a reclaim waits anyway.
pub const DEFAULT_SHARE_CLOCK_SKEW_MS: i64 = 5_000;

/// Longest share lease: ten minutes. A killed Envoy pins its share that long, and a small
/// limit split across Envoys must not lose a part for longer.
const MAX_SHARE_TTL_MS: i64 = 600_000;

/// Largest clock skew margin: five minutes. Clocks further apart are broken, not skewed.
const MAX_SHARE_CLOCK_SKEW_MS: i64 = 300_000;

/// The validated `[limits]` section; applied only when the process starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// Requests per minute of a key without its own; `None`: unlimited, 0: blocked.
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute of a key without its own; `None`: unlimited, 0: blocked.
    pub tokens_per_minute: Option<u64>,
    /// Requests per minute of a user without their own; `None`: unlimited, 0: blocked.
    pub user_requests_per_minute: Option<u32>,
    /// Tokens per minute of a user without their own; `None`: unlimited, 0: blocked.
    pub user_tokens_per_minute: Option<u64>,
    /// Output cap of a `[[models]]` entry that sets no `max_output_tokens`.
    pub max_output_tokens: u64,
    /// Calls with a missing, unknown or revoked key one client address may make in any
    /// minute before every call from it is refused (the filter's setting of that name).
    pub failed_auths_per_minute_per_ip: u32,
    /// How long from a `LeaseShare` answer an Envoy may admit calls against its share of
    /// a limit, in ms.
    pub share_ttl_ms: i64,
    /// How far an Envoy's clock may be behind the control plane's, in ms: an expired
    /// share goes back to its pool a minute and this long after its expiry.
    pub share_clock_skew_ms: i64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            requests_per_minute: None,
            tokens_per_minute: None,
            user_requests_per_minute: None,
            user_tokens_per_minute: None,
            max_output_tokens: DEFAULT_MAX_OUTPUT_TOKENS,
            failed_auths_per_minute_per_ip: DEFAULT_FAILED_AUTHS_PER_MINUTE_PER_IP,
            share_ttl_ms: DEFAULT_SHARE_TTL_MS,
            share_clock_skew_ms: DEFAULT_SHARE_CLOCK_SKEW_MS,
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

    /// The requests per minute of a user whose own limit is `own` (`None`: not set).
    pub fn user_requests_per_minute(&self, own: Option<u32>) -> Option<u32> {
        own.or(self.user_requests_per_minute)
    }

    /// The tokens per minute of a user whose own limit is `own` (`None`: not set).
    pub fn user_tokens_per_minute(&self, own: Option<u64>) -> Option<u64> {
        own.or(self.user_tokens_per_minute)
    }

    /// A key's limits, its own (`own`) or else the defaults.
    pub fn key_limits(&self, own: Limits) -> Limits {
        Limits {
            requests_per_minute: self.requests_per_minute(own.requests_per_minute),
            tokens_per_minute: self.tokens_per_minute(own.tokens_per_minute),
        }
    }

    /// A user's limits, their own (`own`) or else the defaults.
    pub fn user_limits(&self, own: Limits) -> Limits {
        Limits {
            requests_per_minute: self.user_requests_per_minute(own.requests_per_minute),
            tokens_per_minute: self.user_tokens_per_minute(own.tokens_per_minute),
        }
    }
}

/// A per-minute request limit from the file: 0 to u32::MAX, absent for none.
fn rpm(field: &str, value: Option<i64>) -> Result<Option<u32>, ConfigError> {
    value
        .map(|n| {
            u32::try_from(n).map_err(|_| {
                field_error(
                    field,
                    "must be from 0 (every call refused) to 4294967295; leave it out for no limit",
                )
            })
        })
        .transpose()
}

/// A per-minute token limit from the file: 0 to i64::MAX, absent for none.
fn tpm(field: &str, value: Option<i64>) -> Result<Option<u64>, ConfigError> {
    value
        .map(|n| {
            u64::try_from(n).map_err(|_| {
                field_error(
                    field,
                    "must be 0 (every call refused) or more; leave it out for no limit",
                )
            })
        })
        .transpose()
}

/// A model's output cap as written at `field`: 1 or more.
pub(super) fn max_output_tokens(field: &str, value: i64) -> Result<u64, ConfigError> {
    u64::try_from(value).ok().filter(|n| *n > 0).ok_or_else(|| {
        field_error(
            field,
            "must be 1 or more (tokens one completion may produce)",
        )
    })
}

/// A duration in ms from the file at `field`: `default` when absent, else within `range`.
fn millis(
    field: &str,
    value: Option<i64>,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, ConfigError> {
    match value {
        None => Ok(default),
        Some(n) if range.contains(&n) => Ok(n),
        Some(_) => Err(field_error(
            field,
            format!("must be from {} to {} (ms)", range.start(), range.end()),
        )),
    }
}

/// Validates `[limits]`.
pub(super) fn validate(file: LimitsFile) -> Result<LimitSettings, ConfigError> {
    Ok(LimitSettings {
        requests_per_minute: rpm("limits.requests_per_minute", file.requests_per_minute)?,
        tokens_per_minute: tpm("limits.tokens_per_minute", file.tokens_per_minute)?,
        user_requests_per_minute: rpm(
            "limits.user_requests_per_minute",
            file.user_requests_per_minute,
        )?,
        user_tokens_per_minute: tpm("limits.user_tokens_per_minute", file.user_tokens_per_minute)?,
        max_output_tokens: file
            .max_output_tokens
            .map(|n| max_output_tokens("limits.max_output_tokens", n))
            .transpose()?
            .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS),
        failed_auths_per_minute_per_ip: match file.failed_auths_per_minute_per_ip {
            None => DEFAULT_FAILED_AUTHS_PER_MINUTE_PER_IP,
            Some(n) => u32::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
                field_error(
                    "limits.failed_auths_per_minute_per_ip",
                    "must be from 1 to 4294967295 (0 would refuse every address)",
                )
            })?,
        },
        share_ttl_ms: millis(
            "limits.share_ttl_ms",
            file.share_ttl_ms,
            DEFAULT_SHARE_TTL_MS,
            1_000..=MAX_SHARE_TTL_MS,
        )?,
        share_clock_skew_ms: millis(
            "limits.share_clock_skew_ms",
            file.share_clock_skew_ms,
            DEFAULT_SHARE_CLOCK_SKEW_MS,
            0..=MAX_SHARE_CLOCK_SKEW_MS,
        )?,
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
    fn the_brake_is_read_and_checked() {
        let brake = |n| {
            validate(LimitsFile {
                failed_auths_per_minute_per_ip: n,
                ..LimitsFile::default()
            })
        };
        assert_eq!(brake(None).unwrap().failed_auths_per_minute_per_ip, 30);
        assert_eq!(brake(Some(5)).unwrap().failed_auths_per_minute_per_ip, 5);
        for bad in [0, -1, i64::from(u32::MAX) + 1] {
            let e = brake(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("limits.failed_auths_per_minute_per_ip"), "{e}");
        }
    }

    #[test]
    fn share_durations_default_and_are_checked_by_name() {
        let shares = |ttl, skew| {
            validate(LimitsFile {
                share_ttl_ms: ttl,
                share_clock_skew_ms: skew,
                ..LimitsFile::default()
            })
        };
        let default = shares(None, None).unwrap();
        assert_eq!(
            (default.share_ttl_ms, default.share_clock_skew_ms),
            (30_000, 5_000)
        );
        let set = shares(Some(1_000), Some(0)).unwrap();
        assert_eq!((set.share_ttl_ms, set.share_clock_skew_ms), (1_000, 0));
        let most = shares(Some(600_000), Some(300_000)).unwrap();
        assert_eq!(
            (most.share_ttl_ms, most.share_clock_skew_ms),
            (600_000, 300_000)
        );
        for bad in [0, 999, -1, 600_001] {
            let e = shares(Some(bad), None).unwrap_err().to_string();
            assert!(e.contains("limits.share_ttl_ms"), "{e}");
        }
        for bad in [-1, 300_001, i64::MAX] {
            let e = shares(None, Some(bad)).unwrap_err().to_string();
            assert!(e.contains("limits.share_clock_skew_ms"), "{e}");
        }
    }

    #[test]
    fn absent_is_unlimited_and_zero_is_blocked() {
        assert_eq!(rpm(None).unwrap().requests_per_minute, None);
        assert_eq!(rpm(Some(0)).unwrap().requests_per_minute, Some(0));
        assert_eq!(rpm(Some(600)).unwrap().requests_per_minute, Some(600));
        let all = validate(LimitsFile {
            tokens_per_minute: Some(0),
            user_requests_per_minute: Some(7),
            user_tokens_per_minute: Some(i64::MAX),
            ..LimitsFile::default()
        })
        .unwrap();
        assert_eq!(all.tokens_per_minute, Some(0));
        assert_eq!(all.user_requests_per_minute, Some(7));
        assert_eq!(all.user_tokens_per_minute, Some(i64::MAX as u64));
        assert_eq!(all.requests_per_minute, None);
        assert_eq!(all.max_output_tokens, 16_384);
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        for bad in [-1, i64::from(u32::MAX) + 1] {
            let e = rpm(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("limits.requests_per_minute"), "{e}");
            let e = validate(LimitsFile {
                user_requests_per_minute: Some(bad),
                ..LimitsFile::default()
            })
            .unwrap_err()
            .to_string();
            assert!(e.contains("limits.user_requests_per_minute"), "{e}");
        }
        for (file, field) in [
            (
                LimitsFile {
                    tokens_per_minute: Some(-1),
                    ..LimitsFile::default()
                },
                "limits.tokens_per_minute",
            ),
            (
                LimitsFile {
                    user_tokens_per_minute: Some(-5),
                    ..LimitsFile::default()
                },
                "limits.user_tokens_per_minute",
            ),
            (
                LimitsFile {
                    max_output_tokens: Some(0),
                    ..LimitsFile::default()
                },
                "limits.max_output_tokens",
            ),
        ] {
            let e = validate(file).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }

    #[test]
    fn a_keys_own_limit_wins_over_the_default_even_when_zero() {
        let default = validate(LimitsFile {
            requests_per_minute: Some(100),
            tokens_per_minute: Some(1000),
            user_requests_per_minute: Some(50),
            user_tokens_per_minute: Some(500),
            ..LimitsFile::default()
        })
        .unwrap();
        assert_eq!(default.requests_per_minute(None), Some(100));
        assert_eq!(default.requests_per_minute(Some(0)), Some(0));
        assert_eq!(default.requests_per_minute(Some(5)), Some(5));
        assert_eq!(default.tokens_per_minute(None), Some(1000));
        assert_eq!(default.tokens_per_minute(Some(0)), Some(0));
        assert_eq!(default.user_requests_per_minute(None), Some(50));
        assert_eq!(default.user_requests_per_minute(Some(0)), Some(0));
        assert_eq!(default.user_tokens_per_minute(Some(9)), Some(9));
        let own = Limits {
            requests_per_minute: Some(0),
            tokens_per_minute: None,
        };
        assert_eq!(
            default.key_limits(own),
            Limits {
                requests_per_minute: Some(0),
                tokens_per_minute: Some(1000)
            }
        );
        assert_eq!(
            default.user_limits(own),
            Limits {
                requests_per_minute: Some(0),
                tokens_per_minute: Some(500)
            }
        );
        assert_eq!(LimitSettings::default().requests_per_minute(None), None);
        assert_eq!(LimitSettings::default().tokens_per_minute(None), None);
    }
}
