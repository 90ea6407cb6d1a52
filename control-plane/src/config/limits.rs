//! `[limits]`: the defaults of every key's limits; a key's own value overrides them.

use super::raw::LimitsFile;
use super::{ConfigError, field_error};

/// The validated `[limits]` section; applied only when the process starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitSettings {
    /// Requests per minute of a key without its own; `None`: unlimited, 0: blocked.
    pub requests_per_minute: Option<u32>,
}

impl LimitSettings {
    /// The requests per minute of a key whose own limit is `own` (`None`: not set).
    pub fn requests_per_minute(&self, own: Option<u32>) -> Option<u32> {
        own.or(self.requests_per_minute)
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
    Ok(LimitSettings {
        requests_per_minute,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpm(requests_per_minute: Option<i64>) -> Result<LimitSettings, ConfigError> {
        validate(LimitsFile {
            requests_per_minute,
        })
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
