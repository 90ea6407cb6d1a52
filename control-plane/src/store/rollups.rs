//! Usage rollups kept at ingest: per hour and per UTC day, and per (key, user, team,
//! model, provider) or per (model, provider) only, the sums of the calls stored (see
//! [`Table`]). [`add`] runs in the transaction that
//! inserts the usage rows and is given only the rows it inserted, so a retried batch is
//! never counted twice and a failed one not at all.
//!
//! Rows are upserted table by table in [`Table::ALL`]'s order and in primary-key order
//! within each, so two replicas adding
//! to the same rows on PostgreSQL take their locks in one order instead of deadlocking.

use super::budgets::saturating_add;
use super::{Backend, Store, StoreError, UsageRow, values_list};
use crate::usage::{Bucket, Dimension, Table};
use sqlx::AnyConnection;
use std::collections::BTreeMap;

/// The columns a rollup row is keyed by, in primary-key order.
fn key_columns(table: Table) -> Vec<&'static str> {
    std::iter::once("bucket_start_ms")
        .chain(table.dimensions().iter().map(|d| d.column()))
        .collect()
}

/// The columns a rollup row sums, in the order [`Sums`] binds them.
pub(super) const SUM_COLUMNS: [&str; 10] = [
    "calls",
    "input_uncached",
    "cache_read",
    "cache_write",
    "output",
    "reasoning",
    "cost_picos",
    "errors",
    "partial",
    "estimated",
];

/// Rollup rows per upsert statement (at most 16 parameters each): few statements per
/// batch, since on PostgreSQL each is a round trip while rows wait on their locks.
const UPSERT_CHUNK: usize = 50;

/// A rollup row's key: its bucket and the call's dimensions ('' for no user or team).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RollupKey<'a> {
    bucket_start_ms: i64,
    key_id: &'a str,
    user: &'a str,
    team: &'a str,
    model: &'a str,
    provider: &'a str,
}

/// What a rollup row adds up, as the store's i64 (saturating: a column never overflows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sums([i64; SUM_COLUMNS.len()]);

impl Sums {
    /// One call's contribution.
    fn of(row: &UsageRow) -> Self {
        Self([
            1,
            row.input_uncached,
            row.cache_read,
            row.cache_write,
            row.output,
            row.reasoning,
            row.cost_picos,
            i64::from(row.status >= 400),
            i64::from(row.partial),
            i64::from(row.estimated),
        ])
    }

    fn add(&mut self, other: &Sums) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            // Usage counts are never negative (the gateway stores them from u64).
            *mine = mine.saturating_add(theirs.max(0));
        }
    }
}

/// The rollup rows that `rows` add to, per hour, in key order.
fn hourly<'a>(rows: &[&'a UsageRow]) -> BTreeMap<RollupKey<'a>, Sums> {
    let mut sums: BTreeMap<RollupKey<'_>, Sums> = BTreeMap::new();
    for row in rows {
        let key = RollupKey {
            bucket_start_ms: Bucket::Hour.floor(row.finished_at_ms),
            key_id: &row.key_id,
            user: row.user.as_deref().unwrap_or(""),
            team: row.team.as_deref().unwrap_or(""),
            model: &row.model,
            provider: &row.provider,
        };
        sums.entry(key).or_default().add(&Sums::of(row));
    }
    sums
}

/// The rows of `table` the hourly ones add to.
fn rekeyed<'a>(
    table: Table,
    hourly: &BTreeMap<RollupKey<'a>, Sums>,
) -> BTreeMap<RollupKey<'a>, Sums> {
    let every_dimension = table.dimensions().len() == Dimension::ALL.len();
    let mut sums: BTreeMap<RollupKey<'a>, Sums> = BTreeMap::new();
    for (key, hour) in hourly {
        let mut row = RollupKey {
            bucket_start_ms: table.bucket().floor(key.bucket_start_ms),
            ..key.clone()
        };
        if !every_dimension {
            (row.key_id, row.user, row.team) = ("", "", "");
        }
        sums.entry(row).or_default().add(hour);
    }
    sums
}

/// Adds newly stored usage rows to every rollup table, inside the caller's transaction.
pub(super) async fn add(
    conn: &mut AnyConnection,
    rows: &[&UsageRow],
    placeholder: char,
) -> Result<(), StoreError> {
    let hours = hourly(rows);
    for table in Table::ALL {
        let sums = rekeyed(table, &hours);
        let entries: Vec<_> = sums.iter().collect();
        for chunk in entries.chunks(UPSERT_CHUNK) {
            let sql = upsert_sql(table, chunk.len(), placeholder);
            let mut query = sqlx::query(&sql);
            for (key, sums) in chunk {
                query = query.bind(key.bucket_start_ms);
                for dimension in table.dimensions() {
                    query = query.bind(match dimension {
                        Dimension::Key => key.key_id,
                        Dimension::User => key.user,
                        Dimension::Team => key.team,
                        Dimension::Model => key.model,
                        Dimension::Provider => key.provider,
                    });
                }
                for value in sums.0 {
                    query = query.bind(value);
                }
            }
            query.execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// `INSERT … ON CONFLICT DO UPDATE` of `rows` rollup rows, adding to existing sums.
fn upsert_sql(table: Table, rows: usize, placeholder: char) -> String {
    let keys = key_columns(table);
    let columns: Vec<&str> = keys.iter().chain(&SUM_COLUMNS).copied().collect();
    let updates: Vec<String> = SUM_COLUMNS
        .iter()
        .map(|c| {
            let existing = format!("{}.{c}", table.name());
            format!(
                "{c} = {}",
                saturating_add(&existing, &format!("excluded.{c}"))
            )
        })
        .collect();
    format!(
        "INSERT INTO {} ({}) VALUES {} ON CONFLICT ({}) DO UPDATE SET {}",
        table.name(),
        columns.join(", "),
        values_list(rows, columns.len(), placeholder),
        keys.join(", "),
        updates.join(", ")
    )
}

/// The token and cost columns, which [`saturating_sum`] adds up when rebuilding.
const AMOUNT_COLUMNS: [&str; 6] = [
    "input_uncached",
    "cache_read",
    "cache_write",
    "output",
    "reasoning",
    "cost_picos",
];

/// `SUM(column)` of non-negative values, saturating at i64::MAX where SQL's SUM would
/// fail (SQLite) or leave BIGINT (PostgreSQL): summed in halves of 32 bits, which never
/// overflow, then joined unless they pass the largest value. The same in the rollups'
/// migration, whose backfill this is.
fn saturating_sum(column: &str) -> String {
    let hi = format!(
        "(CAST(SUM({column} / 4294967296) AS BIGINT) \
         + CAST(SUM({column} % 4294967296) AS BIGINT) / 4294967296)"
    );
    let lo = format!("(CAST(SUM({column} % 4294967296) AS BIGINT) % 4294967296)");
    format!(
        "CASE WHEN {hi} >= 2147483648 THEN 9223372036854775807 ELSE {hi} * 4294967296 + {lo} END"
    )
}

/// The statement recomputing `table` from `usage_records` (the hourly table) or from
/// the hourly or daily table (the others).
fn rebuild_sql(table: Table) -> String {
    let amounts: Vec<String> = AMOUNT_COLUMNS.iter().map(|c| saturating_sum(c)).collect();
    if table == Table::Hourly {
        let dimensions = "finished_at_ms - finished_at_ms % 3600000, key_id, \
                          COALESCE(user_name, ''), COALESCE(team, ''), model, provider";
        return format!(
            "INSERT INTO usage_hourly SELECT {dimensions}, COUNT(*), {}, \
             SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), SUM(partial), SUM(estimated) \
             FROM usage_records GROUP BY {dimensions}",
            amounts.join(", ")
        );
    }
    let source = match table.bucket() {
        Bucket::Hour => Table::Hourly,
        Bucket::Day if table == Table::Daily => Table::Hourly,
        Bucket::Day => Table::Daily,
    };
    let bucket = match table.bucket() {
        Bucket::Hour => "bucket_start_ms".to_owned(),
        Bucket::Day => "bucket_start_ms - bucket_start_ms % 86400000".to_owned(),
    };
    let dimensions: Vec<&str> = std::iter::once(bucket.as_str())
        .chain(table.dimensions().iter().map(|d| d.column()))
        .collect();
    format!(
        "INSERT INTO {} SELECT {}, SUM(calls), {}, SUM(errors), SUM(partial), SUM(estimated) \
         FROM {} GROUP BY {}",
        table.name(),
        dimensions.join(", "),
        amounts.join(", "),
        source.name(),
        dimensions.join(", ")
    )
}

impl Store {
    /// Recomputes every rollup from the stored usage rows, in one transaction that holds
    /// off usage inserts meanwhile (after rows were loaded or deleted by hand, or a
    /// restore); returns the number of hourly rows.
    pub async fn rebuild_usage_rollups(&self) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            // An insert committed after this snapshot would add to rollups rebuilt
            // without it. SHARE mode lets reads on and holds writers back.
            sqlx::query("LOCK TABLE usage_records IN SHARE MODE")
                .execute(&mut *tx)
                .await?;
        }
        // SQLite: the first write takes the database's one write lock.
        for table in Table::ALL {
            sqlx::query(&format!("DELETE FROM {}", table.name()))
                .execute(&mut *tx)
                .await?;
        }
        let mut hourly_rows = 0;
        // In Table::ALL's order: each is built from one before it.
        for table in Table::ALL {
            let done = sqlx::query(&rebuild_sql(table)).execute(&mut *tx).await?;
            if table == Table::Hourly {
                hourly_rows = done.rows_affected();
            }
        }
        tx.commit().await?;
        Ok(hourly_rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{DAY_MS, HOUR_MS};

    fn call(id: &str, key: &str, at_ms: i64, status: i64) -> UsageRow {
        UsageRow {
            request_id: id.into(),
            key_id: key.into(),
            model: "m".into(),
            provider: "p".into(),
            status,
            input_uncached: 10,
            cache_read: 1,
            cache_write: 2,
            output: 3,
            reasoning: 1,
            estimated: true,
            partial: false,
            cost_picos: 7,
            finished_at_ms: at_ms,
            duration_ms: 1,
            user: Some("ann".into()),
            team: None,
            lease_ids: Vec::new(),
            lease_charge_picos: 0,
            done_lease_ids: Vec::new(),
        }
    }

    #[test]
    fn calls_of_one_hour_and_key_add_up_to_one_row_and_days_sum_their_hours() {
        let a = call("a", "k1", DAY_MS + 5, 200);
        let b = call("b", "k1", DAY_MS + HOUR_MS - 1, 500);
        let c = call("c", "k1", DAY_MS + HOUR_MS, 200);
        let d = call("d", "k2", DAY_MS + 5, 200);
        let rows = [&a, &b, &c, &d];
        let hours = hourly(&rows);
        let sums: Vec<(i64, &str, [i64; 10])> = hours
            .iter()
            .map(|(k, s)| (k.bucket_start_ms, k.key_id, s.0))
            .collect();
        assert_eq!(
            sums,
            vec![
                (DAY_MS, "k1", [2, 20, 2, 4, 6, 2, 14, 1, 0, 2]),
                (DAY_MS, "k2", [1, 10, 1, 2, 3, 1, 7, 0, 0, 1]),
                (DAY_MS + HOUR_MS, "k1", [1, 10, 1, 2, 3, 1, 7, 0, 0, 1]),
            ]
        );
        let days: Vec<(i64, &str, i64, &str)> = rekeyed(Table::Daily, &hours)
            .iter()
            .map(|(k, s)| (k.bucket_start_ms, k.key_id, s.0[0], k.user))
            .collect();
        assert_eq!(
            days,
            vec![(DAY_MS, "k1", 3, "ann"), (DAY_MS, "k2", 1, "ann")]
        );
    }

    #[test]
    fn sums_saturate_instead_of_overflowing() {
        let mut huge = call("a", "k", 0, 200);
        huge.output = i64::MAX;
        let small = call("b", "k", 1, 200);
        let hours = hourly(&[&huge, &small]);
        let sums = hours.values().next().unwrap();
        assert_eq!(sums.0[4], i64::MAX);
        assert_eq!(sums.0[0], 2);
    }

    #[test]
    fn the_upsert_adds_every_sum_column_and_names_only_known_columns() {
        let models = upsert_sql(Table::DailyModels, 1, '?');
        assert!(models.starts_with(
            "INSERT INTO usage_daily_models (bucket_start_ms, model, provider, calls"
        ));
        assert!(models.contains("ON CONFLICT (bucket_start_ms, model, provider) DO UPDATE"));
        let sql = upsert_sql(Table::Daily, 2, '$');
        assert!(sql.starts_with("INSERT INTO usage_daily (bucket_start_ms, key_id"));
        assert!(sql.contains("($1, $2, $3"));
        assert!(sql.contains("$32)"));
        for c in SUM_COLUMNS {
            assert!(
                sql.contains(&format!("ELSE usage_daily.{c} + excluded.{c} END")),
                "{c}"
            );
        }
    }
}
