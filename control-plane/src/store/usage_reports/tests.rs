//! Usage rollups and reports, on SQLite and on PostgreSQL (`TOLLGATE_TEST_POSTGRES_URL`).
//! Each test uses users and keys of its own, so runs sharing the database never meet.

use super::*;
use crate::store::test_stores::{postgres, sqlite};
use crate::usage::{DAY_MS, HOUR_MS};

/// 2026-01-31T00:00:00Z, a day boundary.
const DAY0: i64 = 1_769_817_600_000;

fn fresh(kind: &str) -> String {
    format!("{kind}-{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// One call: 100 uncached input, 10 cached, 20 output, costing `cost` picos.
fn call(id: &str, key: &str, user: &str, model: &str, at_ms: i64, cost: i64) -> UsageRow {
    UsageRow {
        request_id: id.into(),
        key_id: key.into(),
        model: model.into(),
        provider: "prov".into(),
        status: 200,
        input_uncached: 100,
        cache_read: 10,
        cache_write: 0,
        output: 20,
        reasoning: 0,
        estimated: false,
        partial: false,
        cost_picos: cost,
        finished_at_ms: at_ms,
        duration_ms: 5,
        user: Some(user.into()),
        team: None,
        lease_ids: Vec::new(),
        lease_charge_picos: 0,
        done_lease_ids: Vec::new(),
    }
}

fn only_user(user: &str) -> UsageFilter {
    UsageFilter {
        user: Some(user.into()),
        ..UsageFilter::default()
    }
}

fn range(from_ms: i64, to_ms: i64) -> HourRange {
    HourRange::covering(from_ms, to_ms).unwrap()
}

/// Calls by one user over three days: key A on model x (day 0, 23:xx and day 1, 00:xx
/// and 10:xx), key B on model y (day 2, 05:xx), one of them an error.
fn three_days(user: &str, key_a: &str, key_b: &str) -> Vec<UsageRow> {
    let mut error = call(
        &fresh("r"),
        key_a,
        user,
        "x",
        DAY0 + DAY_MS + 10 * HOUR_MS,
        1_000,
    );
    error.status = 429;
    error.partial = true;
    vec![
        call(
            &fresh("r"),
            key_a,
            user,
            "x",
            DAY0 + 23 * HOUR_MS + 1,
            1_000,
        ),
        call(
            &fresh("r"),
            key_a,
            user,
            "x",
            DAY0 + 23 * HOUR_MS + 2,
            1_000,
        ),
        call(&fresh("r"), key_a, user, "x", DAY0 + DAY_MS + 5, 1_000),
        error,
        call(
            &fresh("r"),
            key_b,
            user,
            "y",
            DAY0 + 2 * DAY_MS + 5 * HOUR_MS,
            5_000,
        ),
    ]
}

async fn retried_batches_count_once(store: &Store) {
    let user = fresh("u");
    let (a, b) = (fresh("k"), fresh("k"));
    let rows = three_days(&user, &a, &b);
    assert_eq!(store.insert_usage(&rows[..3]).await.unwrap(), 3);
    // A retry of the first batch with the rest: only the new rows count.
    assert_eq!(store.insert_usage(&rows).await.unwrap(), 2);
    assert_eq!(store.insert_usage(&rows).await.unwrap(), 0);

    let all = store
        .usage_totals(&only_user(&user), range(DAY0, DAY0 + 3 * DAY_MS), None, 10)
        .await
        .unwrap();
    assert_eq!(
        all,
        vec![UsageSums {
            bucket_start_ms: None,
            group: None,
            totals: Totals {
                calls: 5,
                input_uncached: 500,
                cache_read: 50,
                cache_write: 0,
                output: 100,
                reasoning: 0,
                cost_picos: 9_000,
                errors: 1,
                partial: 1,
                estimated: 0,
            }
        }]
    );
}

#[tokio::test]
async fn sqlite_retried_batches_count_once() {
    let (_dir, store) = sqlite().await;
    retried_batches_count_once(&store).await;
}

#[tokio::test]
async fn postgres_retried_batches_count_once() {
    retried_batches_count_once(&postgres().await).await;
}

async fn totals_and_series_group_and_filter(store: &Store) {
    let user = fresh("u");
    let (a, b) = (fresh("k"), fresh("k"));
    store
        .insert_usage(&three_days(&user, &a, &b))
        .await
        .unwrap();
    let mine = only_user(&user);
    let calls_and_cost = |sums: Vec<UsageSums>| -> Vec<(Option<i64>, Option<String>, u64, u128)> {
        sums.into_iter()
            .map(|s| {
                (
                    s.bucket_start_ms,
                    s.group,
                    s.totals.calls,
                    s.totals.cost_picos,
                )
            })
            .collect()
    };

    // Per model over the whole three days (ragged ends: hours, then days, then hours).
    let by_model = store
        .usage_totals(
            &mine,
            range(DAY0 + 20 * HOUR_MS, DAY0 + 2 * DAY_MS + 6 * HOUR_MS),
            Some(Dimension::Model),
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        calls_and_cost(by_model),
        vec![
            (None, Some("x".into()), 4, 4_000),
            (None, Some("y".into()), 1, 5_000)
        ]
    );

    // Per day: day 0 from its last hours, day 1 from the daily table, day 2 from hours.
    let per_day = store
        .usage_series(
            &mine,
            range(DAY0 + 20 * HOUR_MS, DAY0 + 2 * DAY_MS + 6 * HOUR_MS),
            Bucket::Day,
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        calls_and_cost(per_day),
        vec![
            (Some(DAY0), None, 2, 2_000),
            (Some(DAY0 + DAY_MS), None, 2, 2_000),
            (Some(DAY0 + 2 * DAY_MS), None, 1, 5_000)
        ]
    );

    // Per hour and key, within day 1 only: the 23:xx calls of day 0 are outside.
    let per_hour = store
        .usage_series(
            &mine,
            range(DAY0 + DAY_MS, DAY0 + 2 * DAY_MS),
            Bucket::Hour,
            Some(Dimension::Key),
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        calls_and_cost(per_hour),
        vec![
            (Some(DAY0 + DAY_MS), Some(a.clone()), 1, 1_000),
            (
                Some(DAY0 + DAY_MS + 10 * HOUR_MS),
                Some(a.clone()),
                1,
                1_000
            )
        ]
    );

    // Filters combine: key B has no calls of model x.
    let none = store
        .usage_totals(
            &UsageFilter {
                key: Some(b.clone()),
                model: Some("x".into()),
                ..mine.clone()
            },
            range(DAY0, DAY0 + 3 * DAY_MS),
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(none, vec![]);

    // More groups than the limit: limit + 1 entries tell the caller so.
    let cut = store
        .usage_series(&mine, range(DAY0, DAY0 + 3 * DAY_MS), Bucket::Hour, None, 2)
        .await
        .unwrap();
    assert_eq!(cut.len(), 3);
}

#[tokio::test]
async fn sqlite_totals_and_series_group_and_filter() {
    let (_dir, store) = sqlite().await;
    totals_and_series_group_and_filter(&store).await;
}

#[tokio::test]
async fn postgres_totals_and_series_group_and_filter() {
    totals_and_series_group_and_filter(&postgres().await).await;
}

async fn no_user_or_team_is_its_own_group(store: &Store) {
    let key = fresh("k");
    let mut anonymous = call(&fresh("r"), &key, "", "x", DAY0, 1);
    anonymous.user = None;
    let named = call(&fresh("r"), &key, "ann", "x", DAY0, 2);
    store.insert_usage(&[anonymous, named]).await.unwrap();
    let by_user = store
        .usage_totals(
            &UsageFilter {
                key: Some(key),
                ..UsageFilter::default()
            },
            range(DAY0, DAY0 + HOUR_MS),
            Some(Dimension::User),
            10,
        )
        .await
        .unwrap();
    let groups: Vec<(Option<String>, u128)> = by_user
        .into_iter()
        .map(|s| (s.group, s.totals.cost_picos))
        .collect();
    assert_eq!(groups, vec![(None, 1), (Some("ann".into()), 2)]);
}

#[tokio::test]
async fn sqlite_no_user_or_team_is_its_own_group() {
    let (_dir, store) = sqlite().await;
    no_user_or_team_is_its_own_group(&store).await;
}

#[tokio::test]
async fn postgres_no_user_or_team_is_its_own_group() {
    no_user_or_team_is_its_own_group(&postgres().await).await;
}

async fn sums_past_the_stores_i64_are_exact(store: &Store) {
    let user = fresh("u");
    let key = fresh("k");
    // Two hourly rollup rows at the column's maximum (a range of hours: a day's rollup
    // row would hold their sum saturated).
    let rows: Vec<UsageRow> = [0, HOUR_MS]
        .into_iter()
        .map(|at| call(&fresh("r"), &key, &user, "x", DAY0 + at, i64::MAX))
        .collect();
    store.insert_usage(&rows).await.unwrap();
    let sums = store
        .usage_totals(&only_user(&user), range(DAY0, DAY0 + 2 * HOUR_MS), None, 10)
        .await
        .unwrap();
    assert_eq!(
        sums[0].totals.cost_picos,
        2 * u128::from(i64::MAX.unsigned_abs())
    );
}

#[tokio::test]
async fn sqlite_sums_past_the_stores_i64_are_exact() {
    let (_dir, store) = sqlite().await;
    sums_past_the_stores_i64_are_exact(&store).await;
}

#[tokio::test]
async fn postgres_sums_past_the_stores_i64_are_exact() {
    sums_past_the_stores_i64_are_exact(&postgres().await).await;
}

async fn injection_strings_are_only_values(store: &Store) {
    let user = fresh("u");
    store
        .insert_usage(&[call(&fresh("r"), &fresh("k"), &user, "x", DAY0, 1)])
        .await
        .unwrap();
    for evil in [
        "' OR '1'='1",
        "x' OR 1=1 --",
        "x\"; DROP TABLE usage_records; --",
        "') UNION SELECT * FROM virtual_keys --",
    ] {
        let filter = UsageFilter {
            model: Some(evil.into()),
            ..UsageFilter::default()
        };
        let sums = store
            .usage_totals(&filter, range(DAY0, DAY0 + HOUR_MS), None, 10)
            .await
            .unwrap();
        assert_eq!(sums, vec![], "{evil}");
        let page = store
            .usage_calls(&filter, 0, i64::MAX, None, 10)
            .await
            .unwrap();
        assert_eq!(page.calls, vec![], "{evil}");
    }
    // The table is still there, with its row.
    let sums = store
        .usage_totals(&only_user(&user), range(DAY0, DAY0 + HOUR_MS), None, 10)
        .await
        .unwrap();
    assert_eq!(sums[0].totals.calls, 1);
}

#[tokio::test]
async fn sqlite_injection_strings_are_only_values() {
    let (_dir, store) = sqlite().await;
    injection_strings_are_only_values(&store).await;
}

#[tokio::test]
async fn postgres_injection_strings_are_only_values() {
    injection_strings_are_only_values(&postgres().await).await;
}

async fn calls_page_newest_first_without_gaps_or_repeats(store: &Store) {
    let user = fresh("u");
    let key = fresh("k");
    // 7 calls, several finishing in the same millisecond, so the cursor's tie-break on
    // request id matters; one of another user.
    let times = [
        DAY0 + 5,
        DAY0 + 5,
        DAY0 + 5,
        DAY0 + 9,
        DAY0 + 1,
        DAY0 + 9,
        DAY0 + 20,
    ];
    let rows: Vec<UsageRow> = times
        .iter()
        .enumerate()
        .map(|(i, &at)| call(&format!("{user}-{i}"), &key, &user, "x", at, 1))
        .collect();
    let other = call(&fresh("r"), &key, &fresh("u"), "x", DAY0 + 6, 1);
    store.insert_usage(&rows).await.unwrap();
    store.insert_usage(&[other]).await.unwrap();

    let mine = only_user(&user);
    let mut seen = Vec::new();
    let mut cursor: Option<CallCursor> = None;
    let mut pages = 0;
    loop {
        let page = store
            .usage_calls(&mine, 0, DAY0 + DAY_MS, cursor.as_ref(), 3)
            .await
            .unwrap();
        pages += 1;
        seen.extend(page.calls.iter().map(|c| c.request_id.clone()));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let id = |i: usize| format!("{user}-{i}");
    assert_eq!(
        seen,
        vec![id(6), id(5), id(3), id(2), id(1), id(0), id(4)],
        "newest first, ties by request id descending"
    );
    // 3 + 3 + 1: the short page is the last.
    assert_eq!(pages, 3);

    // The time window is half-open on finished_at_ms.
    let window = store
        .usage_calls(&mine, DAY0 + 5, DAY0 + 9, None, 10)
        .await
        .unwrap();
    let ids: Vec<String> = window.calls.into_iter().map(|c| c.request_id).collect();
    assert_eq!(ids, vec![id(2), id(1), id(0)]);
}

#[tokio::test]
async fn sqlite_calls_page_newest_first_without_gaps_or_repeats() {
    let (_dir, store) = sqlite().await;
    calls_page_newest_first_without_gaps_or_repeats(&store).await;
}

#[tokio::test]
async fn postgres_calls_page_newest_first_without_gaps_or_repeats() {
    calls_page_newest_first_without_gaps_or_repeats(&postgres().await).await;
}

/// Three days of calls and, on day 2 at 07:xx, two whose output together pass the
/// store's i64: their rollups saturate at ingest, on rebuild and in the backfill alike.
fn three_days_and_an_overflow(user: &str) -> Vec<UsageRow> {
    let key = fresh("k");
    let mut rows = three_days(user, &key, &fresh("k"));
    for _ in 0..2 {
        let mut huge = call(
            &fresh("r"),
            &key,
            user,
            "x",
            DAY0 + 2 * DAY_MS + 7 * HOUR_MS,
            1,
        );
        huge.output = i64::MAX - 1;
        rows.push(huge);
    }
    rows
}

async fn questions_about_models_read_their_own_rollups(store: &Store) {
    // A model of its own: the model tables hold every user's calls of a model together.
    let model = fresh("m");
    let (ann, bob) = (fresh("u"), fresh("u"));
    let mut rows = vec![
        call(
            &fresh("r"),
            &fresh("k"),
            &ann,
            &model,
            DAY0 + 23 * HOUR_MS,
            10,
        ),
        call(
            &fresh("r"),
            &fresh("k"),
            &bob,
            &model,
            DAY0 + DAY_MS + 1,
            20,
        ),
        call(
            &fresh("r"),
            &fresh("k"),
            &bob,
            &model,
            DAY0 + DAY_MS + 2,
            30,
        ),
    ];
    rows[2].provider = "other".into();
    store.insert_usage(&rows).await.unwrap();
    let by_model = UsageFilter {
        model: Some(model.clone()),
        ..UsageFilter::default()
    };
    let ask = || async {
        let providers = store
            .usage_totals(
                &by_model,
                range(DAY0 + 20 * HOUR_MS, DAY0 + 2 * DAY_MS),
                Some(Dimension::Provider),
                10,
            )
            .await
            .unwrap();
        let days = store
            .usage_series(
                &by_model,
                range(DAY0, DAY0 + 2 * DAY_MS),
                Bucket::Day,
                None,
                10,
            )
            .await
            .unwrap();
        let pairs = |sums: Vec<UsageSums>| -> Vec<(Option<i64>, Option<String>, u64, u128)> {
            sums.into_iter()
                .map(|s| {
                    (
                        s.bucket_start_ms,
                        s.group,
                        s.totals.calls,
                        s.totals.cost_picos,
                    )
                })
                .collect()
        };
        (pairs(providers), pairs(days))
    };
    let kept = ask().await;
    assert_eq!(
        kept,
        (
            vec![
                (None, Some("other".into()), 1, 30),
                (None, Some("prov".into()), 2, 30)
            ],
            vec![
                (Some(DAY0), None, 1, 10),
                (Some(DAY0 + DAY_MS), None, 2, 50)
            ]
        )
    );
    store.rebuild_usage_rollups().await.unwrap();
    assert_eq!(ask().await, kept);
}

#[tokio::test]
async fn sqlite_questions_about_models_read_their_own_rollups() {
    let (_dir, store) = sqlite().await;
    questions_about_models_read_their_own_rollups(&store).await;
}

#[tokio::test]
async fn postgres_questions_about_models_read_their_own_rollups() {
    questions_about_models_read_their_own_rollups(&postgres().await).await;
}

/// Every hourly bucket of a user's calls, for comparing rollups.
async fn hourly_of(store: &Store, user: &str) -> Vec<UsageSums> {
    store
        .usage_series(
            &only_user(user),
            range(DAY0, DAY0 + 3 * DAY_MS),
            Bucket::Hour,
            Some(Dimension::Key),
            100,
        )
        .await
        .unwrap()
}

async fn a_rebuild_gives_the_rollups_kept_at_ingest(store: &Store) {
    let user = fresh("u");
    store
        .insert_usage(&three_days_and_an_overflow(&user))
        .await
        .unwrap();
    let kept = hourly_of(store, &user).await;
    assert_eq!(kept.len(), 5);
    assert_eq!(kept[4].totals.output, i64::MAX.unsigned_abs());
    assert!(store.rebuild_usage_rollups().await.unwrap() >= 4);
    assert_eq!(hourly_of(store, &user).await, kept);
}

#[tokio::test]
async fn sqlite_a_rebuild_gives_the_rollups_kept_at_ingest() {
    let (_dir, store) = sqlite().await;
    a_rebuild_gives_the_rollups_kept_at_ingest(&store).await;
}

#[tokio::test]
async fn postgres_a_rebuild_gives_the_rollups_kept_at_ingest() {
    a_rebuild_gives_the_rollups_kept_at_ingest(&postgres().await).await;
}

/// Puts a migrated database back to before the rollups' migration, keeping its usage
/// rows, so opening it again runs the migration's backfill.
async fn unmigrate_rollups(store: &Store) {
    for statement in [
        "DROP TABLE usage_hourly",
        "DROP TABLE usage_daily",
        "DROP TABLE usage_hourly_models",
        "DROP TABLE usage_daily_models",
        "DROP INDEX usage_records_by_time",
        "DROP INDEX usage_records_by_user_time",
        "DROP INDEX usage_records_by_team_time",
        "DROP INDEX usage_records_by_model_time",
        "DROP INDEX usage_records_by_provider_time",
        "DELETE FROM _sqlx_migrations WHERE version = 20261204000003",
    ] {
        sqlx::query(statement).execute(&store.pool).await.unwrap();
    }
}

async fn the_migration_backfills_rows_stored_before_it(url: &str) {
    let user = fresh("u");
    let store = Store::open(url).await.unwrap();
    store
        .insert_usage(&three_days_and_an_overflow(&user))
        .await
        .unwrap();
    let kept = hourly_of(&store, &user).await;
    unmigrate_rollups(&store).await;
    store.pool.close().await;
    let reopened = Store::open(url).await.unwrap();
    assert_eq!(hourly_of(&reopened, &user).await, kept);
    let days = reopened
        .usage_series(
            &only_user(&user),
            range(DAY0, DAY0 + 3 * DAY_MS),
            Bucket::Day,
            None,
            10,
        )
        .await
        .unwrap();
    let calls: Vec<(u64, u64)> = days
        .iter()
        .map(|d| (d.totals.calls, d.totals.output))
        .collect();
    // Key A's day 2 saturated at i64::MAX, plus key B's 20 of that day.
    let max = i64::MAX.unsigned_abs();
    assert_eq!(calls, vec![(2, 40), (2, 40), (3, max + 20)]);
    // The model tables too (the database holds this test's calls only).
    let models: Vec<(Option<String>, u64)> = reopened
        .usage_totals(
            &UsageFilter::default(),
            range(DAY0, DAY0 + 3 * DAY_MS),
            Some(Dimension::Model),
            10,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.group, s.totals.calls))
        .collect();
    assert_eq!(models, vec![(Some("x".into()), 6), (Some("y".into()), 1)]);
}

#[tokio::test]
async fn sqlite_the_migration_backfills_rows_stored_before_it() {
    let dir = tempfile::tempdir().unwrap();
    the_migration_backfills_rows_stored_before_it(&format!(
        "sqlite://{}/t.db",
        dir.path().display()
    ))
    .await;
}

/// On a database of its own: the shared one's other tests need the rollup tables.
#[tokio::test]
async fn postgres_the_migration_backfills_rows_stored_before_it() {
    let shared = postgres().await;
    let name = format!(
        "tollgate_backfill_{}",
        hex::encode(rand::random::<[u8; 6]>())
    );
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&shared.pool)
        .await
        .unwrap();
    let base = std::env::var("TOLLGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let url = match base.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("no database in {base}"),
    };
    the_migration_backfills_rows_stored_before_it(&url).await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&shared.pool)
        .await
        .unwrap();
}
