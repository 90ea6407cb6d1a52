//! Usage reports as values: the dimensions calls are grouped and filtered by, the hour
//! ranges questions cover, which rollup table answers each part of a range, summed
//! totals, and the calls listing's keyset cursor. The store runs the queries
//! ([`crate::store`]); nothing here needs the database.

use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// Milliseconds in an hour, the finest bucket rollups keep.
pub const HOUR_MS: i64 = 3_600_000;
/// Milliseconds in a UTC day (no leap seconds in Unix time).
pub const DAY_MS: i64 = 86_400_000;

/// What calls are grouped or filtered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// The virtual key.
    Key,
    /// The key's user when the call was admitted.
    User,
    /// The key's team when the call was admitted.
    Team,
    /// The model asked for.
    Model,
    /// The provider that served it.
    Provider,
}

impl Dimension {
    /// Every dimension, in the order filters are applied.
    pub const ALL: [Dimension; 5] = [
        Dimension::Key,
        Dimension::User,
        Dimension::Team,
        Dimension::Model,
        Dimension::Provider,
    ];

    /// Its column, the same in the rollups and in `usage_records`: the only names a
    /// query is built from (values are always bound).
    pub fn column(self) -> &'static str {
        match self {
            Dimension::Key => "key_id",
            Dimension::User => "user_name",
            Dimension::Team => "team",
            Dimension::Model => "model",
            Dimension::Provider => "provider",
        }
    }

    /// The name in the API: `key`, `user`, `team`, `model` or `provider`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Key => "key",
            Dimension::User => "user",
            Dimension::Team => "team",
            Dimension::Model => "model",
            Dimension::Provider => "provider",
        }
    }
}

/// A name that is no [`Dimension`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown dimension {0:?}: expected key, user, team, model or provider")]
pub struct UnknownDimension(pub String);

impl FromStr for Dimension {
    type Err = UnknownDimension;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dimension::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownDimension(s.to_owned()))
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The width of a series' buckets (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// One hour.
    Hour,
    /// One UTC day.
    Day,
}

impl Bucket {
    /// Its width in ms.
    pub fn millis(self) -> i64 {
        match self {
            Bucket::Hour => HOUR_MS,
            Bucket::Day => DAY_MS,
        }
    }

    /// The start of the bucket holding `at_ms`.
    pub fn floor(self, at_ms: i64) -> i64 {
        at_ms - at_ms.rem_euclid(self.millis())
    }
}

/// A bucket name that is neither `hour` nor `day`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown bucket {0:?}: expected hour or day")]
pub struct UnknownBucket(pub String);

impl FromStr for Bucket {
    type Err = UnknownBucket;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hour" => Ok(Bucket::Hour),
            "day" => Ok(Bucket::Day),
            _ => Err(UnknownBucket(s.to_owned())),
        }
    }
}

/// Which calls a question is about: each filter set must match (all of them: AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    /// Only this key's calls.
    pub key: Option<String>,
    /// Only this user's calls.
    pub user: Option<String>,
    /// Only this team's calls.
    pub team: Option<String>,
    /// Only this model's calls.
    pub model: Option<String>,
    /// Only this provider's calls.
    pub provider: Option<String>,
}

impl UsageFilter {
    /// The value a dimension must have, if filtered.
    pub fn get(&self, dimension: Dimension) -> Option<&str> {
        match dimension {
            Dimension::Key => self.key.as_deref(),
            Dimension::User => self.user.as_deref(),
            Dimension::Team => self.team.as_deref(),
            Dimension::Model => self.model.as_deref(),
            Dimension::Provider => self.provider.as_deref(),
        }
    }

    /// Sets the value a dimension must have.
    pub fn set(&mut self, dimension: Dimension, value: Option<String>) {
        let slot = match dimension {
            Dimension::Key => &mut self.key,
            Dimension::User => &mut self.user,
            Dimension::Team => &mut self.team,
            Dimension::Model => &mut self.model,
            Dimension::Provider => &mut self.provider,
        };
        *slot = value;
    }

    /// The filtered dimensions and their values.
    pub fn conditions(&self) -> impl Iterator<Item = (Dimension, &str)> {
        Dimension::ALL
            .into_iter()
            .filter_map(|d| self.get(d).map(|v| (d, v)))
    }
}

/// A time range rollups can answer: `[from_ms, to_ms)`, both on hour boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourRange {
    from_ms: i64,
    to_ms: i64,
}

/// Why a time range cannot be asked about.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RangeError {
    /// The range is empty or backwards.
    #[error("from_ms ({from_ms}) must be before to_ms ({to_ms})")]
    Empty {
        /// The start asked for.
        from_ms: i64,
        /// The end asked for.
        to_ms: i64,
    },
    /// A bound lies before 1970 or past the year 9999.
    #[error("{field} ({value}) must lie between 0 and {}", MAX_TIME_MS)]
    OutOfBounds {
        /// `from_ms` or `to_ms`.
        field: &'static str,
        /// The value refused.
        value: i64,
    },
}

/// The last instant a range may reach: the start of the year 10000, so rounding up to
/// a day never overflows.
pub const MAX_TIME_MS: i64 = 253_402_300_800_000;

impl HourRange {
    /// The hours covering `[from_ms, to_ms)`: `from_ms` rounded down and `to_ms` up to
    /// the hour, since rollups know nothing finer.
    pub fn covering(from_ms: i64, to_ms: i64) -> Result<Self, RangeError> {
        for (field, value) in [("from_ms", from_ms), ("to_ms", to_ms)] {
            if !(0..=MAX_TIME_MS).contains(&value) {
                return Err(RangeError::OutOfBounds { field, value });
            }
        }
        if from_ms >= to_ms {
            return Err(RangeError::Empty { from_ms, to_ms });
        }
        let from_ms = Bucket::Hour.floor(from_ms);
        let to_ms = round_up(to_ms, HOUR_MS);
        Ok(Self { from_ms, to_ms })
    }

    /// The first hour covered, Unix ms.
    pub fn from_ms(self) -> i64 {
        self.from_ms
    }

    /// The end of the last hour covered, Unix ms.
    pub fn to_ms(self) -> i64 {
        self.to_ms
    }

    /// How many buckets of this width the range touches.
    pub fn buckets(self, bucket: Bucket) -> i64 {
        let first = bucket.floor(self.from_ms);
        let end = round_up(self.to_ms, bucket.millis());
        (end - first) / bucket.millis()
    }

    /// The parts of the range and the table each is read from, so that no answer in
    /// buckets of `finest` or wider reads more rows than it must: whole days from a
    /// daily table when days suffice, the hours at either end from an hourly one; the
    /// model-and-provider tables when `models_only` (see [`models_only`]).
    pub fn spans(self, finest: Bucket, models_only: bool) -> Vec<Span> {
        let (hours, days) = if models_only {
            (Table::HourlyModels, Table::DailyModels)
        } else {
            (Table::Hourly, Table::Daily)
        };
        let hourly = |from_ms, to_ms| Span {
            table: hours,
            from_ms,
            to_ms,
        };
        let first_day = round_up(self.from_ms, DAY_MS);
        let last_day = Bucket::Day.floor(self.to_ms);
        if finest == Bucket::Hour || first_day >= last_day {
            return vec![hourly(self.from_ms, self.to_ms)];
        }
        let mut spans = Vec::with_capacity(3);
        if self.from_ms < first_day {
            spans.push(hourly(self.from_ms, first_day));
        }
        spans.push(Span {
            table: days,
            from_ms: first_day,
            to_ms: last_day,
        });
        if last_day < self.to_ms {
            spans.push(hourly(last_day, self.to_ms));
        }
        spans
    }
}

/// `at_ms` rounded up to a multiple of `step` (`at_ms` within [`MAX_TIME_MS`]).
fn round_up(at_ms: i64, step: i64) -> i64 {
    let below = at_ms - at_ms.rem_euclid(step);
    if below == at_ms { at_ms } else { below + step }
}

/// A rollup table: its bucket width, and whether it keeps every dimension or only
/// model and provider (a few rows per bucket, for questions about the whole gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `usage_hourly`: per hour, key, user, team, model and provider.
    Hourly,
    /// `usage_daily`: the same per UTC day.
    Daily,
    /// `usage_hourly_models`: per hour, model and provider.
    HourlyModels,
    /// `usage_daily_models`: the same per UTC day.
    DailyModels,
}

impl Table {
    /// Every rollup table, in the order ingest adds to them.
    pub const ALL: [Table; 4] = [
        Table::Hourly,
        Table::Daily,
        Table::HourlyModels,
        Table::DailyModels,
    ];

    /// Its name in SQL.
    pub fn name(self) -> &'static str {
        match self {
            Table::Hourly => "usage_hourly",
            Table::Daily => "usage_daily",
            Table::HourlyModels => "usage_hourly_models",
            Table::DailyModels => "usage_daily_models",
        }
    }

    /// The width of its buckets.
    pub fn bucket(self) -> Bucket {
        match self {
            Table::Hourly | Table::HourlyModels => Bucket::Hour,
            Table::Daily | Table::DailyModels => Bucket::Day,
        }
    }

    /// The dimensions its rows are kept per.
    pub fn dimensions(self) -> &'static [Dimension] {
        match self {
            Table::Hourly | Table::Daily => &Dimension::ALL,
            Table::HourlyModels | Table::DailyModels => &[Dimension::Model, Dimension::Provider],
        }
    }
}

/// Whether the model-and-provider rollups answer a question: when it filters and
/// groups by nothing else.
pub fn models_only(filter: &UsageFilter, group_by: Option<Dimension>) -> bool {
    let coarse = |d: Dimension| matches!(d, Dimension::Model | Dimension::Provider);
    filter.conditions().all(|(d, _)| coarse(d)) && group_by.is_none_or(coarse)
}

/// A part of a range read from one table: `[from_ms, to_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Where its rows are.
    pub table: Table,
    /// First bucket start included.
    pub from_ms: i64,
    /// First bucket start excluded.
    pub to_ms: i64,
}

/// Calls and what they used, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Calls.
    pub calls: u64,
    /// Prompt tokens at the full input rate.
    pub input_uncached: u64,
    /// Prompt tokens read from cache.
    pub cache_read: u64,
    /// Prompt tokens written to cache.
    pub cache_write: u64,
    /// Generated tokens.
    pub output: u64,
    /// Of `output`, reasoning tokens.
    pub reasoning: u64,
    /// Cost in pico-dollars: wider than the store's i64, which a year's spend of a large
    /// organization (over $9.2M) would pass.
    pub cost_picos: u128,
    /// Calls answered with an HTTP status of 400 or more.
    pub errors: u64,
    /// Calls whose response ended early.
    pub partial: u64,
    /// Calls counted by the gateway, not the provider.
    pub estimated: u64,
}

impl Totals {
    /// Adds `other` in, saturating.
    pub fn add(&mut self, other: &Totals) {
        self.calls = self.calls.saturating_add(other.calls);
        self.input_uncached = self.input_uncached.saturating_add(other.input_uncached);
        self.cache_read = self.cache_read.saturating_add(other.cache_read);
        self.cache_write = self.cache_write.saturating_add(other.cache_write);
        self.output = self.output.saturating_add(other.output);
        self.reasoning = self.reasoning.saturating_add(other.reasoning);
        self.cost_picos = self.cost_picos.saturating_add(other.cost_picos);
        self.errors = self.errors.saturating_add(other.errors);
        self.partial = self.partial.saturating_add(other.partial);
        self.estimated = self.estimated.saturating_add(other.estimated);
    }
}

/// `cost_picos` in dollars, exactly, with its twelve decimals (`"12.500000000000"`).
pub fn dollars(cost_picos: u128) -> String {
    let per_dollar = u128::from(tollgate_core::pricing::PICOS_PER_DOLLAR);
    format!(
        "{}.{:012}",
        cost_picos / per_dollar,
        cost_picos % per_dollar
    )
}

/// Where a page of the calls listing (newest first) ends: the next page starts after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallCursor {
    /// The last call's finish time, Unix ms.
    pub finished_at_ms: i64,
    /// The last call's request id.
    pub request_id: String,
}

/// A cursor that is not one this API handed out.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("malformed cursor: pass back the next_cursor of a previous page")]
pub struct BadCursor;

/// The longest request id a cursor carries; the filter's are 32 hex digits.
const MAX_CURSOR_ID_BYTES: usize = 128;

impl fmt::Display for CallCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.finished_at_ms, self.request_id)
    }
}

impl FromStr for CallCursor {
    type Err = BadCursor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, id) = s.split_once('.').ok_or(BadCursor)?;
        let finished_at_ms: i64 = ms.parse().map_err(|_| BadCursor)?;
        let id_ok = !id.is_empty()
            && id.len() <= MAX_CURSOR_ID_BYTES
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if finished_at_ms < 0 || !id_ok {
            return Err(BadCursor);
        }
        Ok(Self {
            finished_at_ms,
            request_id: id.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = HOUR_MS;
    const D: i64 = DAY_MS;

    #[test]
    fn a_range_is_rounded_outward_to_whole_hours() {
        let r = HourRange::covering(D + 90_000, D + 2 * H + 1).unwrap();
        assert_eq!((r.from_ms(), r.to_ms()), (D, D + 3 * H));
        let aligned = HourRange::covering(D, D + H).unwrap();
        assert_eq!((aligned.from_ms(), aligned.to_ms()), (D, D + H));
    }

    #[test]
    fn empty_backwards_and_out_of_bounds_ranges_are_refused() {
        assert_eq!(
            HourRange::covering(5, 5),
            Err(RangeError::Empty {
                from_ms: 5,
                to_ms: 5
            })
        );
        assert!(matches!(
            HourRange::covering(10, 5),
            Err(RangeError::Empty { .. })
        ));
        assert_eq!(
            HourRange::covering(-1, 5),
            Err(RangeError::OutOfBounds {
                field: "from_ms",
                value: -1
            })
        );
        assert!(matches!(
            HourRange::covering(0, i64::MAX),
            Err(RangeError::OutOfBounds { field: "to_ms", .. })
        ));
        // The largest range allowed rounds without overflow.
        let widest = HourRange::covering(0, MAX_TIME_MS).unwrap();
        assert_eq!(widest.to_ms(), MAX_TIME_MS);
    }

    #[test]
    fn whole_days_are_read_from_the_daily_table_and_ragged_ends_from_the_hourly() {
        let r = HourRange::covering(D - 3 * H, 4 * D + 5 * H).unwrap();
        assert_eq!(
            r.spans(Bucket::Day, false),
            vec![
                Span {
                    table: Table::Hourly,
                    from_ms: D - 3 * H,
                    to_ms: D
                },
                Span {
                    table: Table::Daily,
                    from_ms: D,
                    to_ms: 4 * D
                },
                Span {
                    table: Table::Hourly,
                    from_ms: 4 * D,
                    to_ms: 4 * D + 5 * H
                },
            ]
        );
        let days = HourRange::covering(D, 3 * D).unwrap();
        assert_eq!(
            days.spans(Bucket::Day, true),
            vec![Span {
                table: Table::DailyModels,
                from_ms: D,
                to_ms: 3 * D
            }]
        );
    }

    #[test]
    fn a_range_without_a_whole_day_or_bucketed_by_hour_reads_hours_only() {
        let within = HourRange::covering(D + H, 2 * D - H).unwrap();
        let across = HourRange::covering(D + H, 2 * D + H).unwrap();
        for (r, bucket) in [
            (within, Bucket::Day),
            (across, Bucket::Day),
            (HourRange::covering(0, 9 * D).unwrap(), Bucket::Hour),
        ] {
            assert_eq!(
                r.spans(bucket, false),
                vec![Span {
                    table: Table::Hourly,
                    from_ms: r.from_ms(),
                    to_ms: r.to_ms()
                }],
                "{r:?} by {bucket:?}"
            );
        }
    }

    #[test]
    fn only_questions_about_models_and_providers_read_their_rollups() {
        let mut f = UsageFilter::default();
        assert!(models_only(&f, None));
        assert!(models_only(&f, Some(Dimension::Model)));
        assert!(models_only(&f, Some(Dimension::Provider)));
        assert!(!models_only(&f, Some(Dimension::Key)));
        f.set(Dimension::Provider, Some("openai".into()));
        assert!(models_only(&f, Some(Dimension::Model)));
        for d in [Dimension::Key, Dimension::User, Dimension::Team] {
            let mut narrower = f.clone();
            narrower.set(d, Some("x".into()));
            assert!(!models_only(&narrower, None), "{d}");
            assert!(!models_only(&narrower, Some(Dimension::Model)), "{d}");
        }
    }

    #[test]
    fn buckets_counts_the_buckets_a_range_touches() {
        let r = HourRange::covering(D - H, D + H).unwrap();
        assert_eq!(r.buckets(Bucket::Hour), 2);
        assert_eq!(r.buckets(Bucket::Day), 2);
        assert_eq!(HourRange::covering(0, D).unwrap().buckets(Bucket::Day), 1);
    }

    #[test]
    fn dimensions_and_buckets_parse_only_their_own_names() {
        for d in Dimension::ALL {
            assert_eq!(d.as_str().parse::<Dimension>(), Ok(d));
        }
        for bad in [
            "",
            "Key",
            "key_id",
            "model; DROP TABLE usage_records",
            "user_name",
        ] {
            assert_eq!(
                bad.parse::<Dimension>(),
                Err(UnknownDimension(bad.to_owned()))
            );
        }
        assert_eq!("hour".parse::<Bucket>(), Ok(Bucket::Hour));
        assert_eq!("day".parse::<Bucket>(), Ok(Bucket::Day));
        assert!("minute".parse::<Bucket>().is_err());
    }

    #[test]
    fn a_filter_lists_only_the_dimensions_set() {
        let mut f = UsageFilter::default();
        assert_eq!(f.conditions().count(), 0);
        f.set(Dimension::Team, Some("ml".into()));
        f.set(Dimension::Key, Some("key_1".into()));
        assert_eq!(
            f.conditions().collect::<Vec<_>>(),
            vec![(Dimension::Key, "key_1"), (Dimension::Team, "ml")]
        );
    }

    #[test]
    fn dollars_are_exact_past_the_stores_i64() {
        assert_eq!(dollars(0), "0.000000000000");
        assert_eq!(dollars(12_500_000_000_001), "12.500000000001");
        let beyond = u128::from(u64::MAX) * 3;
        assert_eq!(dollars(beyond), "55340232.221128654845");
    }

    #[test]
    fn a_cursor_reads_back_what_it_wrote_and_nothing_else() {
        let c = CallCursor {
            finished_at_ms: 1_800_000_000_123,
            request_id: "0f3a-b_9".into(),
        };
        assert_eq!(c.to_string().parse::<CallCursor>(), Ok(c));
        for bad in [
            "",
            "123",
            "123.",
            "-5.abc",
            "x.abc",
            "1.a b",
            "1.a'; DROP TABLE usage_records; --",
            "1.a.b",
        ] {
            assert_eq!(bad.parse::<CallCursor>(), Err(BadCursor), "{bad:?}");
        }
        assert!(
            format!("1.{}", "a".repeat(129))
                .parse::<CallCursor>()
                .is_err()
        );
    }
}
