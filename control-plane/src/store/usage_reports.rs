//! Usage reports read from the store: totals and time series from the rollups (never a
//! scan of `usage_records`), and the calls listing, paged newest first by keyset over
//! indexed columns (never OFFSET).
//!
//! Queries are built from [`Dimension::column`] and [`Table::name`] only; every value a
//! caller gives is bound.

use super::rollups::SUM_COLUMNS;
use super::{Store, StoreError, USAGE_COLUMNS, UsageRow, usage_row};
use crate::usage::{self, Bucket, CallCursor, Dimension, HourRange, Span, Totals, UsageFilter};
use sqlx::Row;
use std::collections::BTreeMap;

/// Sums are read in two halves (`value / 2^32` and `value % 2^32`), each of which sums
/// over billions of rows without overflowing SQL's 64-bit integers; they are joined in
/// 128 bits.
const HALF: i64 = 1 << 32;

/// Totals of one bucket and group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSums {
    /// The bucket's start, Unix ms; `None` when not bucketed.
    pub bucket_start_ms: Option<i64>,
    /// The group's value (a key id, user, team, model or provider); `None` when not
    /// grouped, or for calls with no user or team.
    pub group: Option<String>,
    /// What the calls added up to.
    pub totals: Totals,
}

/// A page of the calls listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallsPage {
    /// The calls, newest first.
    pub calls: Vec<UsageRow>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<CallCursor>,
}

/// A query's text and the values it binds, in order.
struct Sql {
    text: String,
    values: Vec<Value>,
}

enum Value {
    Int(i64),
    Text(String),
}

impl Sql {
    /// Adds a bound value and returns its placeholder.
    fn bind(&mut self, value: Value) -> String {
        self.values.push(value);
        format!("${}", self.values.len())
    }

    /// `AND column = $n` for each filtered dimension.
    fn filter(&mut self, filter: &UsageFilter) {
        for (dimension, value) in filter.conditions() {
            let placeholder = self.bind(Value::Text(value.to_owned()));
            self.text
                .push_str(&format!(" AND {} = {placeholder}", dimension.column()));
        }
    }

    async fn fetch_all(self, store: &Store) -> Result<Vec<sqlx::any::AnyRow>, StoreError> {
        let mut query = sqlx::query(&self.text);
        for value in self.values {
            query = match value {
                Value::Int(n) => query.bind(n),
                Value::Text(s) => query.bind(s),
            };
        }
        Ok(query.fetch_all(&store.pool).await?)
    }
}

impl Store {
    /// The totals of the calls in `range` that match `filter`, per value of `group_by`
    /// (one entry when `None`), ordered by group; at most `limit + 1` entries, so more
    /// than `limit` says the answer was cut short.
    pub async fn usage_totals(
        &self,
        filter: &UsageFilter,
        range: HourRange,
        group_by: Option<Dimension>,
        limit: usize,
    ) -> Result<Vec<UsageSums>, StoreError> {
        self.sum_rollups(filter, range, None, group_by, limit).await
    }

    /// The totals of the calls in `range` that match `filter`, per `bucket` (UTC) and
    /// value of `group_by`, ordered by bucket then group; buckets without calls are left
    /// out. At most `limit + 1` entries, so more than `limit` says it was cut short.
    pub async fn usage_series(
        &self,
        filter: &UsageFilter,
        range: HourRange,
        bucket: Bucket,
        group_by: Option<Dimension>,
        limit: usize,
    ) -> Result<Vec<UsageSums>, StoreError> {
        self.sum_rollups(filter, range, Some(bucket), group_by, limit)
            .await
    }

    async fn sum_rollups(
        &self,
        filter: &UsageFilter,
        range: HourRange,
        bucket: Option<Bucket>,
        group_by: Option<Dimension>,
        limit: usize,
    ) -> Result<Vec<UsageSums>, StoreError> {
        let mut merged: BTreeMap<(Option<i64>, String), Totals> = BTreeMap::new();
        let models_only = usage::models_only(filter, group_by);
        for span in range.spans(bucket.unwrap_or(Bucket::Day), models_only) {
            let sql = span_sql(span, filter, bucket, group_by, limit);
            for row in sql.fetch_all(self).await? {
                let bucket_start_ms = match bucket {
                    Some(_) => Some(row.try_get::<i64, _>("bucket")?),
                    None => None,
                };
                let group = match group_by {
                    Some(_) => row.try_get::<String, _>("grp")?,
                    None => String::new(),
                };
                let totals = totals(&row)?;
                if totals.calls > 0 {
                    merged
                        .entry((bucket_start_ms, group))
                        .or_default()
                        .add(&totals);
                }
            }
        }
        Ok(merged
            .into_iter()
            .take(limit.saturating_add(1))
            .map(|((bucket_start_ms, group), totals)| UsageSums {
                bucket_start_ms,
                group: Some(group).filter(|g| !g.is_empty()),
                totals,
            })
            .collect())
    }

    /// A page of at most `limit` calls matching `filter`, finished in `[from_ms, to_ms)`,
    /// newest first, starting after `after`.
    pub async fn usage_calls(
        &self,
        filter: &UsageFilter,
        from_ms: i64,
        to_ms: i64,
        after: Option<&CallCursor>,
        limit: u32,
    ) -> Result<CallsPage, StoreError> {
        let mut sql = Sql {
            text: format!(
                "SELECT {} FROM usage_records WHERE ",
                USAGE_COLUMNS.join(", ")
            ),
            values: Vec::new(),
        };
        let from = sql.bind(Value::Int(from_ms));
        let to = sql.bind(Value::Int(to_ms));
        sql.text.push_str(&format!(
            "finished_at_ms >= {from} AND finished_at_ms < {to}"
        ));
        sql.filter(filter);
        if let Some(after) = after {
            // `<=` first, so the index seeks to the cursor instead of skipping to it.
            let at = sql.bind(Value::Int(after.finished_at_ms));
            let id = sql.bind(Value::Text(after.request_id.clone()));
            sql.text.push_str(&format!(
                " AND finished_at_ms <= {at} AND (finished_at_ms < {at} OR request_id < {id})"
            ));
        }
        let limit_value = sql.bind(Value::Int(i64::from(limit)));
        sql.text.push_str(&format!(
            " ORDER BY finished_at_ms DESC, request_id DESC LIMIT {limit_value}"
        ));
        let calls = sql
            .fetch_all(self)
            .await?
            .iter()
            .map(usage_row)
            .collect::<Result<Vec<_>, _>>()?;
        let full = calls.len() >= usize::try_from(limit).unwrap_or(usize::MAX);
        let next = calls.last().filter(|_| full).map(|last| CallCursor {
            finished_at_ms: last.finished_at_ms,
            request_id: last.request_id.clone(),
        });
        Ok(CallsPage { calls, next })
    }
}

/// The query summing one span's rollup rows per bucket and group.
fn span_sql(
    span: Span,
    filter: &UsageFilter,
    bucket: Option<Bucket>,
    group_by: Option<Dimension>,
    limit: usize,
) -> Sql {
    let bucket_expr = match (bucket, span.table.bucket()) {
        (None, _) => None,
        (Some(Bucket::Day), Bucket::Hour) => Some("bucket_start_ms - bucket_start_ms % 86400000"),
        (Some(_), _) => Some("bucket_start_ms"),
    };
    let mut select = Vec::new();
    let mut group = Vec::new();
    if let Some(expr) = bucket_expr {
        select.push(format!("{expr} AS bucket"));
        group.push(expr.to_owned());
    }
    if let Some(dimension) = group_by {
        select.push(format!("{} AS grp", dimension.column()));
        group.push(dimension.column().to_owned());
    }
    for c in SUM_COLUMNS {
        select.push(format!(
            "CAST(COALESCE(SUM({c} / {HALF}), 0) AS BIGINT) AS {c}_hi, \
             CAST(COALESCE(SUM({c} % {HALF}), 0) AS BIGINT) AS {c}_lo"
        ));
    }
    let mut sql = Sql {
        text: String::new(),
        values: Vec::new(),
    };
    let from = sql.bind(Value::Int(span.from_ms));
    let to = sql.bind(Value::Int(span.to_ms));
    sql.text = format!(
        "SELECT {} FROM {} WHERE bucket_start_ms >= {from} AND bucket_start_ms < {to}",
        select.join(", "),
        span.table.name()
    );
    sql.filter(filter);
    if !group.is_empty() {
        sql.text
            .push_str(&format!(" GROUP BY {}", group.join(", ")));
        sql.text
            .push_str(&format!(" ORDER BY {}", group.join(", ")));
        let cap = sql.bind(Value::Int(
            i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX),
        ));
        sql.text.push_str(&format!(" LIMIT {cap}"));
    }
    sql
}

/// A row's sums, joined from their halves.
fn totals(row: &sqlx::any::AnyRow) -> Result<Totals, StoreError> {
    let mut sums = [0u128; SUM_COLUMNS.len()];
    for (sum, c) in sums.iter_mut().zip(SUM_COLUMNS) {
        let hi: i64 = row.try_get(format!("{c}_hi").as_str())?;
        let lo: i64 = row.try_get(format!("{c}_lo").as_str())?;
        let part = |n: i64| u128::try_from(n).unwrap_or(0);
        *sum = part(hi)
            .saturating_mul(u128::from(HALF.unsigned_abs()))
            .saturating_add(part(lo));
    }
    let narrow = |n: u128| u64::try_from(n).unwrap_or(u64::MAX);
    let [
        calls,
        input_uncached,
        cache_read,
        cache_write,
        output,
        reasoning,
        cost_picos,
        errors,
        partial,
        estimated,
    ] = sums;
    Ok(Totals {
        calls: narrow(calls),
        input_uncached: narrow(input_uncached),
        cache_read: narrow(cache_read),
        cache_write: narrow(cache_write),
        output: narrow(output),
        reasoning: narrow(reasoning),
        cost_picos,
        errors: narrow(errors),
        partial: narrow(partial),
        estimated: narrow(estimated),
    })
}

#[cfg(test)]
mod tests;
