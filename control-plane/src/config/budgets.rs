//! `[budgets]`: how long a budget lease lives, how long after expiry its unused money is
//! reclaimed, and how often replicas look for such leases.

use super::raw::BudgetsFile;
use super::{ConfigError, field_error};
use crate::catalog::Provider;
use std::collections::HashMap;
use std::time::Duration;
use tollgate_core::settings::Unreachable;

/// Longest lease: a day. Longer would let a dead Envoy pin money for longer than any
/// daily budget lasts.
const MAX_LEASE_TTL_MS: i64 = 86_400_000;

/// The validated `[budgets]` section; applied only when the process starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSettings {
    /// How long from a grant an Envoy may draw on a lease, in ms.
    pub lease_ttl_ms: i64,
    /// How long after a lease expires its unused money goes back, in ms: calls admitted
    /// just before expiry have this long to report their cost.
    pub reclaim_grace_ms: i64,
    /// How often each replica looks for expired leases.
    pub sweep_interval: Duration,
    /// What the filter does with a call that needs a lease it cannot get (rendered into
    /// the filter's settings).
    pub on_control_plane_unreachable: Unreachable,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        Self {
            lease_ttl_ms: 60_000,
            reclaim_grace_ms: 660_000,
            sweep_interval: Duration::from_millis(5_000),
            on_control_plane_unreachable: Unreachable::Refuse,
        }
    }
}

impl BudgetSettings {
    /// Whether this grace covers every provider's timeout: checked again on reload, since
    /// a reload applies providers but the grace only at start.
    pub fn covers(&self, providers: &HashMap<String, Provider>) -> Result<(), ConfigError> {
        grace_covers(self.reclaim_grace_ms, providers)
    }
}

/// What the grace needs beyond a provider's timeout: a call admitted just before its
/// lease expired runs up to the timeout, then waits for its Envoy's next usage flush and
/// the report's trip. A tenth of the timeout, at least a second.
fn report_margin_ms(timeout_ms: i64) -> i64 {
    (timeout_ms / 10).max(1_000)
}

/// The grace must be at least the slowest provider's timeout, plus [`report_margin_ms`].
fn grace_covers(
    reclaim_grace_ms: i64,
    providers: &HashMap<String, Provider>,
) -> Result<(), ConfigError> {
    let slowest = providers
        .values()
        .max_by_key(|p| p.timeout_ms)
        .map(|p| (p.name.as_str(), i64::from(p.timeout_ms)));
    match slowest.filter(|(_, t)| reclaim_grace_ms < t.saturating_add(report_margin_ms(*t))) {
        None => Ok(()),
        Some((name, timeout_ms)) => Err(field_error(
            "budgets.reclaim_grace_ms",
            format!(
                "is {reclaim_grace_ms} but provider `{name}` may take {timeout_ms} ms to answer: \
                 the grace must cover the longest provider timeout and a tenth more (at least \
                 {} ms), so calls in flight report before their lease's money is returned",
                timeout_ms.saturating_add(report_margin_ms(timeout_ms))
            ),
        )),
    }
}

/// Validates `[budgets]`; the grace must cover the longest provider timeout, or a slow
/// call's cost would arrive after its lease's money was handed out again.
pub(super) fn validate(
    file: BudgetsFile,
    providers: &HashMap<String, Provider>,
) -> Result<BudgetSettings, ConfigError> {
    if !(1_000..=MAX_LEASE_TTL_MS).contains(&file.lease_ttl_ms) {
        return Err(field_error(
            "budgets.lease_ttl_ms",
            "must be from 1000 (1 s) to 86400000 (1 day)",
        ));
    }
    grace_covers(file.reclaim_grace_ms, providers)?;
    if file.reclaim_grace_ms > MAX_LEASE_TTL_MS {
        return Err(field_error(
            "budgets.reclaim_grace_ms",
            "must be at most 86400000 (1 day)",
        ));
    }
    if !(100..=MAX_LEASE_TTL_MS).contains(&file.sweep_interval_ms) {
        return Err(field_error(
            "budgets.sweep_interval_ms",
            "must be from 100 to 86400000",
        ));
    }
    Ok(BudgetSettings {
        lease_ttl_ms: file.lease_ttl_ms,
        reclaim_grace_ms: file.reclaim_grace_ms,
        sweep_interval: Duration::from_millis(file.sweep_interval_ms.unsigned_abs()),
        on_control_plane_unreachable: file.on_control_plane_unreachable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn providers(timeout_ms: u32) -> HashMap<String, Provider> {
        let p = Provider {
            timeout_ms,
            ..Provider::for_tests("slow")
        };
        HashMap::from([(p.name.clone(), p)])
    }

    #[test]
    fn defaults_are_a_minute_eleven_minutes_and_five_seconds() {
        let s = validate(BudgetsFile::default(), &providers(300_000)).unwrap();
        assert_eq!(s, BudgetSettings::default());
        assert_eq!(s.lease_ttl_ms, 60_000);
        assert_eq!(s.reclaim_grace_ms, 660_000);
        assert_eq!(s.sweep_interval, Duration::from_secs(5));
    }

    #[test]
    fn the_grace_must_cover_the_slowest_provider() {
        let e = validate(BudgetsFile::default(), &providers(900_000))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("budgets.reclaim_grace_ms") && e.contains("`slow`") && e.contains("900000"),
            "{e}"
        );
        let equal = BudgetsFile {
            reclaim_grace_ms: 900_000,
            ..BudgetsFile::default()
        };
        let e = validate(equal, &providers(900_000))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("at least 990000 ms"),
            "a call at the deadline still reports: {e}"
        );
        let longer = BudgetsFile {
            reclaim_grace_ms: 990_000,
            ..BudgetsFile::default()
        };
        assert!(validate(longer, &providers(900_000)).is_ok());
        let short = BudgetsFile {
            reclaim_grace_ms: 2_900,
            ..BudgetsFile::default()
        };
        assert!(
            validate(short, &providers(2_000)).is_err(),
            "a second at least"
        );
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        for (file, field) in [
            (
                BudgetsFile {
                    lease_ttl_ms: 0,
                    ..BudgetsFile::default()
                },
                "budgets.lease_ttl_ms",
            ),
            (
                BudgetsFile {
                    lease_ttl_ms: -5,
                    ..BudgetsFile::default()
                },
                "budgets.lease_ttl_ms",
            ),
            (
                BudgetsFile {
                    sweep_interval_ms: 0,
                    ..BudgetsFile::default()
                },
                "budgets.sweep_interval_ms",
            ),
            (
                BudgetsFile {
                    reclaim_grace_ms: i64::MAX,
                    ..BudgetsFile::default()
                },
                "budgets.reclaim_grace_ms",
            ),
        ] {
            let e = validate(file, &providers(1_000)).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }
}
