//! Budgets as values: their periods and UTC calendar windows, their subjects, and dollar
//! amounts parsed exactly into pico-dollars. The store keeps their state
//! ([`crate::store`]); this module decides nothing that needs the database.

use std::fmt;
use std::str::FromStr;
use thiserror::Error;
use tollgate_core::pricing::PICOS_PER_DOLLAR;

/// Milliseconds in a UTC day (no leap seconds in Unix time).
const DAY_MS: i64 = 86_400_000;

/// How often a budget's money comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    /// Each UTC calendar day.
    Day,
    /// Each UTC calendar month.
    Month,
    /// Never: one window for all time.
    Total,
}

/// A window of a period: `[start_ms, end_ms)`; a total budget's is `0..0` (no end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First millisecond, Unix ms; 0 for a total budget.
    pub start_ms: i64,
    /// First millisecond of the next window, Unix ms; 0 for a total budget.
    pub end_ms: i64,
}

impl Period {
    /// The name stored and shown: `day`, `month` or `total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
            Period::Total => "total",
        }
    }

    /// The window holding the instant `at_ms` (Unix ms; times before 1970 count as 1970).
    pub fn window(self, at_ms: i64) -> Window {
        let at_ms = at_ms.max(0);
        match self {
            Period::Total => Window {
                start_ms: 0,
                end_ms: 0,
            },
            Period::Day => {
                let start_ms = at_ms - at_ms.rem_euclid(DAY_MS);
                Window {
                    start_ms,
                    end_ms: start_ms.saturating_add(DAY_MS),
                }
            }
            Period::Month => {
                let (year, month, _) = civil_from_days(at_ms.div_euclid(DAY_MS));
                let (next_year, next_month) = if month == 12 {
                    (year.saturating_add(1), 1)
                } else {
                    (year, month + 1)
                };
                Window {
                    start_ms: days_from_civil(year, month, 1).saturating_mul(DAY_MS),
                    end_ms: days_from_civil(next_year, next_month, 1).saturating_mul(DAY_MS),
                }
            }
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A period name that is none of `day`, `month`, `total`.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("`{0}` is not a budget period: use day, month or total")]
pub struct BadPeriod(pub String);

impl FromStr for Period {
    type Err = BadPeriod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "day" => Ok(Period::Day),
            "month" => Ok(Period::Month),
            "total" => Ok(Period::Total),
            other => Err(BadPeriod(other.to_owned())),
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` of a day count since 1970-01-01 (inverse of the above).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Whose money a budget limits, written `key:<id>`, `user:<name>` or `team:<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// One virtual key, by id.
    Key(String),
    /// Every key of one user.
    User(String),
    /// Every key of one team.
    Team(String),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Key(id) => write!(f, "key:{id}"),
            Subject::User(name) => write!(f, "user:{name}"),
            Subject::Team(name) => write!(f, "team:{name}"),
        }
    }
}

/// The subjects whose budgets apply to a call of key `key_id` with this user and team
/// (empty: none).
pub fn subjects_of(key_id: &str, user: &str, team: &str) -> Vec<String> {
    let mut subjects = vec![Subject::Key(key_id.to_owned()).to_string()];
    if !user.is_empty() {
        subjects.push(Subject::User(user.to_owned()).to_string());
    }
    if !team.is_empty() {
        subjects.push(Subject::Team(team.to_owned()).to_string());
    }
    subjects
}

/// Why a dollar amount was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DollarsError {
    /// Not digits with at most one decimal point.
    #[error("`{0}` is not an amount in dollars (write e.g. 12.50)")]
    Syntax(String),
    /// More than 12 decimals: finer than a pico-dollar.
    #[error("`{0}` has more than 12 decimals (a pico-dollar is the smallest unit)")]
    TooPrecise(String),
    /// More than the store holds (i64::MAX pico-dollars, about $9.2 million).
    #[error("`{0}` is more than the largest budget, $9223372.036854775807")]
    TooLarge(String),
}

/// Parses `12.50` (dollars, no sign, at most 12 decimals) into pico-dollars exactly, with
/// no floating point on the way; at most `i64::MAX` so the store can hold it.
pub fn parse_dollars(text: &str) -> Result<u64, DollarsError> {
    let syntax = || DollarsError::Syntax(text.to_owned());
    let trimmed = text.trim().trim_start_matches('$');
    let (whole, fraction) = trimmed.split_once('.').unwrap_or((trimmed, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return Err(syntax());
    }
    if fraction.len() > 12 {
        return Err(DollarsError::TooPrecise(text.to_owned()));
    }
    let too_large = || DollarsError::TooLarge(text.to_owned());
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_large())?
    };
    // Right-padded to 12 digits, the fraction is its pico-dollars.
    let fraction_picos: u64 = format!("{fraction:0<12}").parse().map_err(|_| syntax())?;
    let picos = whole
        .checked_mul(PICOS_PER_DOLLAR)
        .and_then(|p| p.checked_add(fraction_picos))
        .ok_or_else(too_large)?;
    if i64::try_from(picos).is_err() {
        return Err(too_large());
    }
    Ok(picos)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-31T23:59:59.999Z.
    const JAN_31_END: i64 = 1_769_903_999_999;

    #[test]
    fn day_windows_are_utc_calendar_days() {
        let w = Period::Day.window(JAN_31_END);
        assert_eq!(w.start_ms, 1_769_817_600_000); // 2026-01-31T00:00Z
        assert_eq!(w.end_ms, 1_769_904_000_000); // 2026-02-01T00:00Z
        assert_eq!(Period::Day.window(w.end_ms).start_ms, w.end_ms);
    }

    #[test]
    fn month_windows_follow_the_calendar() {
        let jan = Period::Month.window(JAN_31_END);
        assert_eq!(jan.start_ms, 1_767_225_600_000); // 2026-01-01T00:00Z
        assert_eq!(jan.end_ms, 1_769_904_000_000); // 2026-02-01T00:00Z
        let feb = Period::Month.window(jan.end_ms);
        assert_eq!(feb.start_ms, jan.end_ms);
        assert_eq!(feb.end_ms, 1_772_323_200_000); // 2026-03-01T00:00Z: 28 days
        // 2028 is a leap year: February has 29 days.
        let feb_2028 = Period::Month.window(1_833_062_400_000); // 2028-02-01T00:00Z
        assert_eq!(feb_2028.end_ms - feb_2028.start_ms, 29 * DAY_MS);
        let dec = Period::Month.window(1_796_083_200_000); // 2026-12-01T00:00Z
        assert_eq!(dec.end_ms, 1_798_761_600_000); // 2027-01-01T00:00Z
    }

    #[test]
    fn a_total_budget_has_one_window() {
        assert_eq!(
            Period::Total.window(JAN_31_END),
            Window {
                start_ms: 0,
                end_ms: 0
            }
        );
    }

    #[test]
    fn periods_round_trip_and_refuse_others() {
        for p in [Period::Day, Period::Month, Period::Total] {
            assert_eq!(p.as_str().parse::<Period>(), Ok(p));
        }
        assert!("week".parse::<Period>().is_err());
    }

    #[test]
    fn dollars_are_parsed_exactly() {
        assert_eq!(parse_dollars("12.50"), Ok(12_500_000_000_000));
        assert_eq!(parse_dollars("0.1"), Ok(100_000_000_000));
        assert_eq!(parse_dollars("$3"), Ok(3_000_000_000_000));
        assert_eq!(parse_dollars(".000000000001"), Ok(1));
        assert_eq!(parse_dollars("0"), Ok(0));
        // 0.1 + 0.2 style amounts stay exact where f64 would not.
        assert_eq!(parse_dollars("0.3"), Ok(300_000_000_000));
        assert_eq!(
            parse_dollars("9223372.036854775807"),
            Ok(9_223_372_036_854_775_807)
        );
    }

    #[test]
    fn bad_dollars_say_why() {
        for bad in ["", ".", "-1", "1.2.3", "1e3", "abc", "1,5"] {
            assert!(
                matches!(parse_dollars(bad), Err(DollarsError::Syntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_dollars("1.0000000000001"),
            Err(DollarsError::TooPrecise(_))
        ));
        for huge in ["9223372.036854775808", "99999999999999999999"] {
            assert!(
                matches!(parse_dollars(huge), Err(DollarsError::TooLarge(_))),
                "{huge}"
            );
        }
    }

    #[test]
    fn subjects_name_key_user_and_team() {
        assert_eq!(subjects_of("key_1", "", ""), ["key:key_1"]);
        assert_eq!(
            subjects_of("key_1", "alice", "ml"),
            ["key:key_1", "user:alice", "team:ml"]
        );
    }
}
