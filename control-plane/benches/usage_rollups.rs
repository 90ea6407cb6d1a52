//! How fast the usage pages answer with millions of stored calls: p50/p95/p99 of the
//! dashboard's queries (totals, series, the calls listing) over usage rollups, on SQLite
//! (and PostgreSQL when `TOLLGATE_BENCH_POSTGRES_URL` names a server: the bench creates a
//! database of its own there and drops it after). Then what keeping the rollups costs at
//! ingest: records/s through `insert_usage` with and without them, in the same sitting.
//! Prints figures; asserts nothing about speed.
//!
//! `cargo bench -p tollgate-control-plane --bench usage_rollups [-- ROWS]` (10,000,000 by
//! default). The rows are generated in SQL and the rollups rebuilt from them in one pass
//! (`Store::rebuild_usage_rollups`), since 10 million single inserts would take hours.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};
use tollgate_control_plane::store::{Store, UsageRow};
use tollgate_control_plane::usage::{
    Bucket, CallCursor, DAY_MS, Dimension, HOUR_MS, HourRange, UsageFilter,
};

/// The calls span 30 days ending here (2026-12-01T00:00:00Z).
const END_MS: i64 = 1_796_083_200_000;
const SPAN_MS: i64 = 30 * DAY_MS;
/// 500 keys, 5 per user (100 users), 5 users per team (20 teams); each key uses 3 of 12
/// models, served by 4 providers.
const KEYS: i64 = 500;
/// How often each query is timed.
const RUNS: usize = 60;
/// Rows loaded per statement.
const LOAD_CHUNK: i64 = 1_000_000;
/// Groups or points a query may return, as the API allows.
const LIMIT: usize = 10_000;

/// The SELECT producing rows `lo..hi` of the generated usage, in `usage_records`' column
/// order, from a row number `i`; `hex32` renders `i` as a 32-digit request id.
fn generated_columns(hex32: &str) -> String {
    let key = format!("((i * 7919) % {KEYS})");
    let model = format!("(({key} + (i % 3) * 4) % 12)");
    format!(
        "{hex32}, \
         'key_' || {key}, \
         'model_' || {model}, \
         'prov_' || ({model} % 4), \
         CASE WHEN i % 50 = 0 THEN 429 ELSE 200 END, \
         500 + i % 1000, (i % 3) * 100, 0, 100 + i % 400, 0, \
         CASE WHEN i % 20 = 0 THEN 1 ELSE 0 END, CASE WHEN i % 30 = 0 THEN 1 ELSE 0 END, \
         (500 + i % 1000) * 150000 + (100 + i % 400) * 600000, \
         {start} + i * {SPAN_MS} / $3, \
         100 + i % 1000, \
         'user_' || ({key} / 5), \
         'team_' || ({key} / 25)",
        start = END_MS - SPAN_MS,
    )
}

const COLUMNS: &str = "request_id, key_id, model, provider, status, input_uncached, \
     cache_read, cache_write, output, reasoning, estimated, partial, cost_picos, \
     finished_at_ms, duration_ms, user_name, team";

/// Fills `usage_records` with `rows` generated calls, then rebuilds the rollups.
async fn load(store: &Store, url: &str, rows: i64) {
    let sqlite = url.starts_with("sqlite:");
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("connect");
    let sql = if sqlite {
        format!(
            "WITH RECURSIVE n(i) AS (SELECT $1 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $2) \
             INSERT INTO usage_records ({COLUMNS}) SELECT {} FROM n",
            generated_columns("printf('%032x', i)")
        )
    } else {
        format!(
            "INSERT INTO usage_records ({COLUMNS}) SELECT {} \
             FROM generate_series(CAST($1 AS BIGINT), CAST($2 AS BIGINT) - 1) AS i",
            generated_columns("lpad(to_hex(i), 32, '0')")
        )
    };
    let started = Instant::now();
    for lo in (0..rows).step_by(LOAD_CHUNK as usize) {
        let hi = (lo + LOAD_CHUNK).min(rows);
        sqlx::query(&sql)
            .bind(lo)
            .bind(hi)
            .bind(rows)
            .execute(&pool)
            .await
            .expect("load");
        eprint!(
            "\r  loaded {hi} rows in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    eprintln!();
    let rebuild = Instant::now();
    let hourly = store.rebuild_usage_rollups().await.expect("rebuild");
    if !sqlite {
        // What autovacuum would have done by the time anyone looks.
        sqlx::query("ANALYZE")
            .execute(&pool)
            .await
            .expect("analyze");
    }
    let daily: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_daily")
        .fetch_one(&pool)
        .await
        .expect("count");
    println!(
        "  {rows} calls loaded in {:.0} s; rollups rebuilt in {:.0} s: {hourly} hourly rows, \
         {daily} daily rows",
        rebuild.duration_since(started).as_secs_f64(),
        rebuild.elapsed().as_secs_f64(),
    );
    pool.close().await;
}

/// The p50, p95 and p99 of `times`, in ms.
fn percentiles(mut times: Vec<Duration>) -> (f64, f64, f64) {
    times.sort();
    let at = |q: f64| {
        let i = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1;
        times[i].as_secs_f64() * 1e3
    };
    (at(0.50), at(0.95), at(0.99))
}

fn filter(dimension: Dimension, value: String) -> UsageFilter {
    let mut f = UsageFilter::default();
    f.set(dimension, Some(value));
    f
}

/// The range `[END_MS - length, END_MS)` moved back by `shift` hours.
fn last(length: i64, shift: i64) -> HourRange {
    let to = END_MS - shift * HOUR_MS;
    HourRange::covering(to - length, to).unwrap()
}

/// The dashboard's questions, as [`ask`] numbers them.
const QUESTIONS: [&str; 13] = [
    "totals, 30 days",
    "totals by model, 30 days, ragged ends",
    "totals by key, 30 days",
    "series by day and model, 30 days",
    "series by hour and model, 24 h",
    "series by hour, 7 days",
    "member: totals by model, 30 days",
    "member: series by day, 30 days",
    "team: series by day and key, 30 days",
    "calls: newest 50",
    "calls: 50 after a cursor mid-month",
    "calls: a member's newest 50",
    "calls: a model's 50 in a past day",
];

/// Asks question `q` in its variant `r` (users, keys and ranges vary with it); returns
/// the number of groups, points or calls answered.
async fn ask(store: &Store, q: usize, r: i64) -> usize {
    let all = UsageFilter::default();
    let user = filter(Dimension::User, format!("user_{}", r % 100));
    let month = last(SPAN_MS, 0);
    let sums = |result: Result<Vec<_>, _>| result.unwrap().len();
    match q {
        0 => sums(store.usage_totals(&all, month, None, LIMIT).await),
        1 => {
            let ragged = last(SPAN_MS - DAY_MS, r % 24);
            sums(
                store
                    .usage_totals(&all, ragged, Some(Dimension::Model), LIMIT)
                    .await,
            )
        }
        2 => sums(
            store
                .usage_totals(&all, month, Some(Dimension::Key), LIMIT)
                .await,
        ),
        3 => sums(
            store
                .usage_series(&all, month, Bucket::Day, Some(Dimension::Model), LIMIT)
                .await,
        ),
        4 => {
            let day = last(DAY_MS, r % 48);
            sums(
                store
                    .usage_series(&all, day, Bucket::Hour, Some(Dimension::Model), LIMIT)
                    .await,
            )
        }
        5 => {
            let week = last(7 * DAY_MS, r % 24);
            sums(
                store
                    .usage_series(&all, week, Bucket::Hour, None, LIMIT)
                    .await,
            )
        }
        6 => sums(
            store
                .usage_totals(&user, month, Some(Dimension::Model), LIMIT)
                .await,
        ),
        7 => sums(
            store
                .usage_series(&user, month, Bucket::Day, None, LIMIT)
                .await,
        ),
        8 => {
            let team = filter(Dimension::Team, format!("team_{}", r % 20));
            sums(
                store
                    .usage_series(&team, month, Bucket::Day, Some(Dimension::Key), LIMIT)
                    .await,
            )
        }
        9 => store
            .usage_calls(&all, 0, i64::MAX, None, 50)
            .await
            .unwrap()
            .calls
            .len(),
        10 => {
            let cursor = CallCursor {
                finished_at_ms: END_MS - SPAN_MS / 2 - r * HOUR_MS,
                request_id: "f".repeat(32),
            };
            let page = store
                .usage_calls(&all, 0, i64::MAX, Some(&cursor), 50)
                .await;
            page.unwrap().calls.len()
        }
        11 => store
            .usage_calls(&user, 0, i64::MAX, None, 50)
            .await
            .unwrap()
            .calls
            .len(),
        _ => {
            let model = filter(Dimension::Model, format!("model_{}", r % 12));
            let to = END_MS - (r % 30) * DAY_MS;
            let page = store.usage_calls(&model, to - DAY_MS, to, None, 50).await;
            page.unwrap().calls.len()
        }
    }
}

/// Times each question [`RUNS`] times and prints their percentiles; returns the worst
/// p95.
async fn queries(store: &Store) -> f64 {
    let mut worst: f64 = 0.0;
    println!(
        "  {:<42} {:>8} {:>8} {:>8} {:>7}",
        "query", "p50 ms", "p95 ms", "p99 ms", "rows"
    );
    for (q, name) in QUESTIONS.iter().enumerate() {
        // One untimed run: the first reads pages from disk into the cache.
        ask(store, q, 0).await;
        let mut times = Vec::with_capacity(RUNS);
        let mut rows = 0;
        for r in 0..RUNS {
            let started = Instant::now();
            rows = ask(store, q, r as i64).await;
            times.push(started.elapsed());
        }
        let (p50, p95, p99) = percentiles(times);
        worst = worst.max(p95);
        println!("  {name:<42} {p50:>8.2} {p95:>8.2} {p99:>8.2} {rows:>7}");
    }
    worst
}

fn ingest_row(run: &str, i: usize) -> UsageRow {
    let key = (i * 7919) % 500;
    UsageRow {
        request_id: format!("{run}-{i:09}"),
        key_id: format!("key_{key}"),
        model: format!("model_{}", (key + (i % 3) * 4) % 12),
        provider: format!("prov_{}", (key + (i % 3) * 4) % 12 % 4),
        status: 200,
        input_uncached: 1200,
        cache_read: 512,
        cache_write: 0,
        output: 300,
        reasoning: 0,
        estimated: false,
        partial: false,
        cost_picos: 123_456,
        // One batch a second of arrivals: ~1000 calls/s.
        finished_at_ms: END_MS + i as i64,
        duration_ms: 40,
        user: Some(format!("user_{}", key / 5)),
        team: Some(format!("team_{}", key / 25)),
        lease_ids: Vec::new(),
        lease_charge_picos: 0,
        done_lease_ids: Vec::new(),
    }
}

/// Records/s through `insert_usage` with rollups and without: each batch of 1000 split in
/// halves, one stored each way, so both see the same database size and machine load.
async fn ingest(store: &Store, records: usize) -> (f64, f64) {
    const BATCH: usize = 1_000;
    let run = format!("ingest-{}", std::process::id());
    let (mut with, mut without) = (Duration::ZERO, Duration::ZERO);
    for (n, start) in (0..records).step_by(BATCH).enumerate() {
        let rows: Vec<UsageRow> = (start..(start + BATCH).min(records))
            .map(|i| ingest_row(&run, i))
            .collect();
        let (rollups, plain) = rows.split_at(rows.len() / 2);
        // Each goes first in every other batch.
        for kept in [n % 2 == 0, n % 2 == 1] {
            let started = Instant::now();
            if kept {
                store.insert_usage(rollups).await.expect("insert");
                with += started.elapsed();
            } else {
                store
                    .insert_usage_without_rollups(plain)
                    .await
                    .expect("insert");
                without += started.elapsed();
            }
        }
    }
    let half = records as f64 / 2.0;
    (half / with.as_secs_f64(), half / without.as_secs_f64())
}

async fn bench(label: &str, url: &str, rows: i64) {
    println!("{label}:");
    let store = Store::open(url).await.expect("store");
    load(&store, url, rows).await;
    let worst = queries(&store).await;
    println!("  worst p95: {worst:.2} ms (target: under 100 ms)");
    let (with, without) = ingest(&store, 100_000).await;
    println!(
        "  ingest (insert_usage, batches of 1000, on top of the {rows} rows): \
         {with:.0} records/s with rollups, {without:.0} without ({:.2}x)",
        with / without
    );
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; the first number given is the row count.
    let rows = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000_000i64);
    let dir = tempfile::tempdir().expect("tempdir");
    bench(
        "SQLite",
        &format!("sqlite://{}/usage.db", dir.path().display()),
        rows,
    )
    .await;
    if let Ok(server) = std::env::var("TOLLGATE_BENCH_POSTGRES_URL") {
        let admin = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&server)
            .await
            .expect("connect");
        let name = format!("tollgate_usage_bench_{}", std::process::id());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create database");
        let url = match server.rsplit_once('/') {
            Some((host, _)) => format!("{host}/{name}"),
            None => panic!("no database in {server}"),
        };
        bench("PostgreSQL", &url, rows).await;
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&admin)
            .await
            .expect("drop database");
    }
}
