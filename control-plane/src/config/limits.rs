//! `[limits]`: the defaults of every key's and user's limits (a key's or user's own value
//! overrides them), and the default output cap of models.

use super::raw::LimitsFile;
use super::{ConfigError, field_error};

/// Output cap of a model that sets none and of `[limits]` when it sets none.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 16_384;

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
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            requests_per_minute: None,
            tokens_per_minute: None,
            user_requests_per_minute: None,
            user_tokens_per_minute: None,
            max_output_tokens: DEFAULT_MAX_OUTPUT_TOKENS,
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
        assert_eq!(LimitSettings::default().requests_per_minute(None), None);
        assert_eq!(LimitSettings::default().tokens_per_minute(None), None);
    }
}
