//! Budgets in the store, on SQLite and on PostgreSQL (`TOLLGATE_TEST_POSTGRES_URL`).

use super::*;
use crate::store::UsageRow;
use crate::store::test_stores::{postgres_replicas, sqlite};

/// 2026-01-31T12:00:00Z.
const NOON: i64 = 1_769_860_800_000;
const DAY: i64 = 86_400_000;
const TTL: i64 = 60_000;

/// A subject no other test (or earlier run on the shared database) uses.
fn fresh(kind: &str) -> String {
    format!("{kind}:t{}", hex::encode(rand::random::<[u8; 8]>()))
}

fn ask<'a>(
    budget: &'a str,
    lease: Option<&'a str>,
    want: u64,
    need: u64,
    now: i64,
) -> LeaseAsk<'a> {
    LeaseAsk {
        budget_id: budget,
        holder: "envoy-a",
        lease_id: lease,
        want_picos: want,
        need_picos: need,
        now_ms: now,
        ttl_ms: TTL,
    }
}

fn granted(outcome: LeaseOutcome) -> Lease {
    match outcome {
        LeaseOutcome::Granted(lease) => lease,
        other => panic!("expected a grant, got {other:?}"),
    }
}

async fn status(store: &Store, budget_id: &str, at: i64) -> BudgetStatus {
    store
        .list_budgets(at)
        .await
        .unwrap()
        .into_iter()
        .find(|b| b.budget.id == budget_id)
        .expect("budget listed")
}

fn usage(request_id: &str, key_id: &str, cost: i64, at: i64, leases: &[&str]) -> UsageRow {
    UsageRow {
        request_id: request_id.into(),
        key_id: key_id.into(),
        model: "m".into(),
        provider: "p".into(),
        status: 200,
        input_uncached: 1,
        cache_read: 0,
        cache_write: 0,
        output: 1,
        reasoning: 0,
        estimated: false,
        partial: false,
        cost_picos: cost,
        finished_at_ms: at,
        duration_ms: 1,
        user: None,
        team: None,
        lease_ids: leases.iter().map(|l| (*l).to_owned()).collect(),
        lease_charge_picos: 0,
        done_lease_ids: Vec::new(),
    }
}

/// Grants are min(want, available), never below need, and never pass the limit.
async fn grants_never_pass_the_limit(store: &Store) {
    let subject = fresh("key");
    let budget = store
        .set_budget(&subject, Period::Day, 1_000, NOON)
        .await
        .unwrap()
        .budget;
    let a = granted(
        store
            .lease(ask(&budget.id, None, 600, 100, NOON))
            .await
            .unwrap(),
    );
    assert_eq!(
        (a.granted_picos, a.total_picos, a.available_picos),
        (600, 600, 400)
    );
    assert_eq!(a.expires_at_ms, NOON + TTL);
    assert_eq!(a.window_end_ms, Period::Day.window(NOON).end_ms);
    // Only 400 left: a want of 600 gets 400.
    let b = granted(
        store
            .lease(ask(&budget.id, None, 600, 100, NOON))
            .await
            .unwrap(),
    );
    assert_eq!((b.granted_picos, b.available_picos), (400, 0));
    assert_ne!(a.lease_id, b.lease_id);
    // Nothing left: a need of 1 is refused, a renewal (need 0) gets 0.
    assert_eq!(
        store
            .lease(ask(&budget.id, None, 10, 1, NOON))
            .await
            .unwrap(),
        LeaseOutcome::Exhausted {
            available_picos: 0,
            window_end_ms: a.window_end_ms
        }
    );
    let renewal = granted(
        store
            .lease(ask(&budget.id, Some(&a.lease_id), 10, 0, NOON + 1))
            .await
            .unwrap(),
    );
    assert_eq!((renewal.granted_picos, renewal.total_picos), (0, 600));
    let s = status(store, &budget.id, NOON).await;
    assert_eq!(
        (s.spent_picos, s.leased_picos, s.available_picos()),
        (0, 1_000, 0)
    );
    assert_eq!(
        store
            .lease(ask("bud_nope", None, 1, 1, NOON))
            .await
            .unwrap(),
        LeaseOutcome::UnknownBudget
    );
    // Past the store's i64 columns: refused, never wrapped.
    let huge = store.lease(ask(&budget.id, None, u64::MAX, 1, NOON)).await;
    assert!(
        matches!(huge, Err(StoreError::OutOfRange { .. })),
        "{huge:?}"
    );
    let huge = store
        .set_budget(&subject, Period::Day, u64::MAX, NOON)
        .await;
    assert!(
        matches!(huge, Err(StoreError::OutOfRange { .. })),
        "{huge:?}"
    );
}

/// A top-up of an open lease keeps its id and extends it; a closed or expired one, or
/// one of another window, is replaced by a new lease.
async fn top_ups_extend_and_old_leases_are_replaced(store: &Store) {
    let budget = store
        .set_budget(&fresh("team"), Period::Day, 10_000, NOON)
        .await
        .unwrap()
        .budget;
    let first = granted(
        store
            .lease(ask(&budget.id, None, 1_000, 1_000, NOON))
            .await
            .unwrap(),
    );
    let topped = granted(
        store
            .lease(ask(
                &budget.id,
                Some(&first.lease_id),
                500,
                500,
                NOON + 30_000,
            ))
            .await
            .unwrap(),
    );
    assert_eq!(topped.lease_id, first.lease_id);
    assert_eq!((topped.granted_picos, topped.total_picos), (500, 1_500));
    assert_eq!(topped.expires_at_ms, NOON + 30_000 + TTL);
    // Another holder cannot top up this lease: it gets one of its own.
    let other = granted(
        store
            .lease(LeaseAsk {
                holder: "envoy-b",
                ..ask(&budget.id, Some(&first.lease_id), 100, 100, NOON)
            })
            .await
            .unwrap(),
    );
    assert_ne!(other.lease_id, first.lease_id);
    // Expired: a new lease.
    let late = NOON + 30_000 + TTL + 1;
    let renewed = granted(
        store
            .lease(ask(&budget.id, Some(&first.lease_id), 100, 100, late))
            .await
            .unwrap(),
    );
    assert_ne!(renewed.lease_id, first.lease_id);
    assert_eq!(renewed.total_picos, 100);
    // The next day: a new window with the whole limit, and a new lease.
    let tomorrow = NOON + DAY;
    let next = granted(
        store
            .lease(ask(
                &budget.id,
                Some(&renewed.lease_id),
                10_000,
                10_000,
                tomorrow,
            ))
            .await
            .unwrap(),
    );
    assert_ne!(next.lease_id, renewed.lease_id);
    assert_eq!((next.granted_picos, next.available_picos), (10_000, 0));
    assert_eq!(next.window_end_ms, Period::Day.window(tomorrow).end_ms);
    let today = status(store, &budget.id, NOON).await;
    assert_eq!(today.leased_picos, 1_000 + 500 + 100 + 100);
}

/// At the first millisecond of a month the budget has its whole limit again, and a lease
/// of the old month is replaced; the old month's leases still settle in their own month.
async fn a_month_rolls_over_at_utc_midnight(store: &Store) {
    let subject = fresh("key");
    let key_id = subject.trim_start_matches("key:").to_owned();
    let budget = store
        .set_budget(&subject, Period::Month, 1_000, NOON)
        .await
        .unwrap()
        .budget;
    let last_ms = Period::Month.window(NOON).end_ms - 1; // 2026-01-31T23:59:59.999Z
    let january = granted(
        store
            .lease(ask(&budget.id, None, 1_000, 1_000, last_ms))
            .await
            .unwrap(),
    );
    assert_eq!(january.window_end_ms, last_ms + 1);
    assert!(matches!(
        store
            .lease(ask(&budget.id, None, 1, 1, last_ms))
            .await
            .unwrap(),
        LeaseOutcome::Exhausted { .. }
    ));
    let february = granted(
        store
            .lease(ask(
                &budget.id,
                Some(&january.lease_id),
                1_000,
                1_000,
                last_ms + 1,
            ))
            .await
            .unwrap(),
    );
    assert_ne!(february.lease_id, january.lease_id);
    assert_eq!(february.window_end_ms, 1_772_323_200_000); // 2026-03-01T00:00Z
    // A January call reported in February is charged to January's lease and window.
    let late = usage(&fresh("r"), &key_id, 400, last_ms + 5, &[&january.lease_id]);
    store.insert_usage(&[late]).await.unwrap();
    let jan = status(store, &budget.id, last_ms).await;
    assert_eq!((jan.spent_picos, jan.leased_picos), (400, 600));
    let feb = status(store, &budget.id, last_ms + 1).await;
    assert_eq!((feb.spent_picos, feb.leased_picos), (0, 1_000));
}

/// Settlement: spent grows by the cost, the lease's grant covers what it can and that
/// much leaves leased; a duplicate record changes nothing; an overrun goes to spent.
async fn settlement_arithmetic(store: &Store) {
    let key_subject = fresh("key");
    let key_id = key_subject.trim_start_matches("key:").to_owned();
    let budget = store
        .set_budget(&key_subject, Period::Month, 5_000, NOON)
        .await
        .unwrap()
        .budget;
    let user_budget = store
        .set_budget(&fresh("user"), Period::Total, 5_000, NOON)
        .await
        .unwrap()
        .budget;
    let user = user_budget.subject.trim_start_matches("user:").to_owned();
    let lease = granted(
        store
            .lease(ask(&budget.id, None, 1_000, 1_000, NOON))
            .await
            .unwrap(),
    );
    let mut first = usage(&fresh("r"), &key_id, 300, NOON, &[&lease.lease_id]);
    first.user = Some(user.clone());
    assert_eq!(store.insert_usage(&[first.clone()]).await.unwrap(), 1);
    let s = status(store, &budget.id, NOON).await;
    assert_eq!((s.spent_picos, s.leased_picos), (300, 700));
    assert_eq!(
        store.lease_state(&lease.lease_id).await.unwrap(),
        Some((1_000, 300, false))
    );
    // The user's budget named no lease: charged in the window of the finish time.
    let u = status(store, &user_budget.id, NOON).await;
    assert_eq!((u.spent_picos, u.leased_picos), (300, 0));
    // A retried report is not charged again.
    assert_eq!(store.insert_usage(&[first]).await.unwrap(), 0);
    let s = status(store, &budget.id, NOON).await;
    assert_eq!((s.spent_picos, s.leased_picos), (300, 700));
    assert_eq!(status(store, &user_budget.id, NOON).await.spent_picos, 300);
    // 900 more against the 700 left of the grant: 700 come out of leased, 200 overrun.
    let over = usage(&fresh("r"), &key_id, 900, NOON, &[&lease.lease_id]);
    store.insert_usage(&[over]).await.unwrap();
    let s = status(store, &budget.id, NOON).await;
    assert_eq!((s.spent_picos, s.leased_picos), (1_200, 0));
    assert_eq!(
        store.lease_state(&lease.lease_id).await.unwrap(),
        Some((1_000, 1_000, false))
    );
    // A record without a lease is charged in its own finish time's month.
    let next_month = Period::Month.window(NOON).end_ms + 5;
    store
        .insert_usage(&[usage(&fresh("r"), &key_id, 50, next_month, &[])])
        .await
        .unwrap();
    assert_eq!(status(store, &budget.id, next_month).await.spent_picos, 50);
    assert_eq!(status(store, &budget.id, NOON).await.spent_picos, 1_200);
    // A hostile cost saturates spent instead of wrapping.
    store
        .insert_usage(&[usage(&fresh("r"), &key_id, i64::MAX, NOON, &[])])
        .await
        .unwrap();
    store
        .insert_usage(&[usage(&fresh("r"), &key_id, i64::MAX, NOON, &[])])
        .await
        .unwrap();
    assert_eq!(
        status(store, &budget.id, NOON).await.spent_picos,
        i64::MAX as u64
    );
}

/// A record naming a lease of a budget that does not apply to it (another key's lease,
/// forged or mixed up) neither charges that budget nor draws on that lease: the lease's
/// holder would otherwise find its grant used up by someone else's call, and every call
/// it then admits would overrun the budget. The record's own budget is still charged.
async fn a_record_draws_only_on_leases_of_its_own_budgets(store: &Store) {
    let mine = store
        .set_budget(&fresh("key"), Period::Month, 5_000, NOON)
        .await
        .unwrap()
        .budget;
    let key_id = mine.subject.trim_start_matches("key:").to_owned();
    let theirs = store
        .set_budget(&fresh("key"), Period::Month, 5_000, NOON)
        .await
        .unwrap()
        .budget;
    let their_lease = granted(
        store
            .lease(ask(&theirs.id, None, 1_000, 1_000, NOON))
            .await
            .unwrap(),
    );
    let row = usage(&fresh("r"), &key_id, 400, NOON, &[&their_lease.lease_id]);
    assert_eq!(store.insert_usage(&[row]).await.unwrap(), 1);
    let t = status(store, &theirs.id, NOON).await;
    assert_eq!((t.spent_picos, t.leased_picos), (0, 1_000));
    assert_eq!(
        store.lease_state(&their_lease.lease_id).await.unwrap(),
        Some((1_000, 0, false))
    );
    let m = status(store, &mine.id, NOON).await;
    assert_eq!((m.spent_picos, m.leased_picos), (400, 0));
}

/// A lease gives up what its Envoy charged it for a call, when more than the call's cost
/// (an estimated or cut call is charged no less than its hold on the Envoy): the surplus
/// is free again at once. Drawing only the cost left the surplus leased, though the Envoy
/// counted it spent, for as long as the Envoy renewed the lease; a busy Envoy renews it
/// forever, so each cancelled stream stranded its hold and the budget ran out unspent.
async fn a_lease_gives_up_what_its_envoy_charged_it(store: &Store) {
    let budget = store
        .set_budget(&fresh("key"), Period::Month, 5_000, NOON)
        .await
        .unwrap()
        .budget;
    let key_id = budget.subject.trim_start_matches("key:").to_owned();
    let lease = granted(
        store
            .lease(ask(&budget.id, None, 1_000, 1_000, NOON))
            .await
            .unwrap(),
    );
    let mut cancelled = usage(&fresh("r"), &key_id, 100, NOON, &[&lease.lease_id]);
    cancelled.lease_charge_picos = 600;
    store.insert_usage(&[cancelled]).await.unwrap();
    let s = status(store, &budget.id, NOON).await;
    assert_eq!((s.spent_picos, s.leased_picos), (100, 400));
    assert_eq!(s.available_picos(), 4_500);
    assert_eq!(
        store.lease_state(&lease.lease_id).await.unwrap(),
        Some((1_000, 600, false))
    );
    // The control plane counted more than the Envoy charged: the cost is drawn.
    let mut counted_more = usage(&fresh("r"), &key_id, 300, NOON, &[&lease.lease_id]);
    counted_more.lease_charge_picos = 200;
    store.insert_usage(&[counted_more]).await.unwrap();
    let s = status(store, &budget.id, NOON).await;
    assert_eq!((s.spent_picos, s.leased_picos), (400, 100));
    // A charge past the grant draws what is left of it, and spends only the cost.
    let mut past = usage(&fresh("r"), &key_id, 50, NOON, &[&lease.lease_id]);
    past.lease_charge_picos = 10_000;
    store.insert_usage(&[past]).await.unwrap();
    let s = status(store, &budget.id, NOON).await;
    assert_eq!((s.spent_picos, s.leased_picos), (450, 0));
    assert_eq!(
        store.lease_state(&lease.lease_id).await.unwrap(),
        Some((1_000, 1_000, false))
    );
}

/// A lease one call alone drew on (answered to it while another lease was stored) is
/// closed by that call's record, and what is left of its grant is free at once: left
/// open, it stayed leased until TTL + grace (eleven minutes by default), and a burst of
/// calls short of money at once stranded a grant each.
async fn a_lease_drawn_on_by_one_call_alone_closes_with_its_record(store: &Store) {
    let budget = store
        .set_budget(&fresh("key"), Period::Month, 5_000, NOON)
        .await
        .unwrap()
        .budget;
    let key_id = budget.subject.trim_start_matches("key:").to_owned();
    let own = granted(
        store
            .lease(ask(&budget.id, None, 1_000, 1_000, NOON))
            .await
            .unwrap(),
    );
    let shared = granted(
        store
            .lease(ask(&budget.id, None, 2_000, 2_000, NOON))
            .await
            .unwrap(),
    );
    let mut row = usage(&fresh("r"), &key_id, 100, NOON, &[&own.lease_id]);
    row.done_lease_ids = vec![own.lease_id.clone()];
    store.insert_usage(&[row]).await.unwrap();
    let s = status(store, &budget.id, NOON).await;
    assert_eq!((s.spent_picos, s.leased_picos), (100, 2_000));
    assert_eq!(
        store.lease_state(&own.lease_id).await.unwrap(),
        Some((1_000, 100, true))
    );
    // A failed call costs nothing, and is done with its own lease all the same.
    let failed_own = granted(
        store
            .lease(ask(&budget.id, None, 500, 500, NOON))
            .await
            .unwrap(),
    );
    let mut failed = usage(&fresh("r"), &key_id, 0, NOON, &[&failed_own.lease_id]);
    failed.done_lease_ids = vec![failed_own.lease_id.clone()];
    store.insert_usage(&[failed]).await.unwrap();
    assert_eq!(
        store.lease_state(&failed_own.lease_id).await.unwrap(),
        Some((500, 0, true))
    );
    let s = status(store, &budget.id, NOON).await;
    assert_eq!((s.spent_picos, s.leased_picos), (100, 2_000));
    // A lease named done that the record did not draw on (another budget's) stays open.
    let mut stray = usage(&fresh("r"), "another-key", 100, NOON, &[&shared.lease_id]);
    stray.done_lease_ids = vec![shared.lease_id.clone()];
    store.insert_usage(&[stray]).await.unwrap();
    assert_eq!(
        store.lease_state(&shared.lease_id).await.unwrap(),
        Some((2_000, 0, false))
    );
}

/// Reclaim returns granted - used of each expired lease once, even with two sweepers
/// (two stores) racing, and leaves leases within their grace alone.
async fn reclaim_returns_unused_money_once(a: &Store, b: &Store) {
    let budget = a
        .set_budget(&fresh("key"), Period::Total, 1_000_000, NOON)
        .await
        .unwrap()
        .budget;
    let key_id = budget.subject.trim_start_matches("key:").to_owned();
    let mut leases = Vec::new();
    for i in 0..20 {
        leases.push(granted(
            a.lease(ask(&budget.id, None, 1_000, 1_000, NOON + i))
                .await
                .unwrap(),
        ));
    }
    // Half the leases had one call costing 250.
    let rows: Vec<UsageRow> = leases
        .iter()
        .step_by(2)
        .map(|l| usage(&fresh("r"), &key_id, 250, NOON, &[&l.lease_id]))
        .collect();
    a.insert_usage(&rows).await.unwrap();
    let before = status(a, &budget.id, NOON).await;
    assert_eq!(
        (before.spent_picos, before.leased_picos),
        (2_500, 20_000 - 2_500)
    );
    // A late lease, still within its grace at the sweep, stays open.
    let late = granted(
        a.lease(ask(&budget.id, None, 1_000, 1_000, NOON + 10 * TTL))
            .await
            .unwrap(),
    );
    let cutoff = NOON + TTL + 100;
    let (ra, rb) = tokio::join!(a.reclaim_expired(cutoff), b.reclaim_expired(cutoff));
    // Other tests' leases on the same database may be swept too: only this budget's count.
    let mut all: Vec<Reclaimed> = ra
        .unwrap()
        .into_iter()
        .chain(rb.unwrap())
        .filter(|r| r.budget_id == budget.id)
        .collect();
    all.sort_by(|x, y| x.lease_id.cmp(&y.lease_id));
    assert_eq!(all.len(), 20, "each expired lease closed exactly once");
    all.dedup_by(|x, y| x.lease_id == y.lease_id);
    assert_eq!(all.len(), 20);
    let returned: u64 = all.iter().map(|r| r.returned_picos).sum();
    assert_eq!(returned, 10 * 1_000 + 10 * 750);
    let after = status(a, &budget.id, NOON).await;
    assert_eq!((after.spent_picos, after.leased_picos), (2_500, 1_000));
    assert_eq!(
        a.lease_state(&late.lease_id).await.unwrap(),
        Some((1_000, 0, false))
    );
    // Sweeping again returns nothing more.
    assert!(
        b.reclaim_expired(cutoff)
            .await
            .unwrap()
            .iter()
            .all(|r| r.budget_id != budget.id)
    );
    // A cost reported after its lease was reclaimed is still spent, once.
    let straggler = usage(&fresh("r"), &key_id, 100, NOON, &[&leases[1].lease_id]);
    a.insert_usage(&[straggler]).await.unwrap();
    let end = status(a, &budget.id, NOON).await;
    assert_eq!((end.spent_picos, end.leased_picos), (2_600, 1_000));
}

/// Deleting a budget removes it, its windows and its leases.
async fn budgets_are_set_changed_and_deleted(store: &Store) {
    let subject = fresh("user");
    let created = store
        .set_budget(&subject, Period::Day, 7, NOON)
        .await
        .unwrap();
    assert!(created.created);
    let changed = store
        .set_budget(&subject, Period::Day, 9, NOON)
        .await
        .unwrap();
    assert!(!changed.created);
    assert_eq!(changed.budget.id, created.budget.id);
    assert_eq!(changed.budget.limit_picos, 9);
    let other_period = store
        .set_budget(&subject, Period::Total, 9, NOON)
        .await
        .unwrap();
    assert_ne!(other_period.budget.id, created.budget.id);
    assert!(store.delete_budget(&created.budget.id).await.unwrap());
    assert!(!store.delete_budget(&created.budget.id).await.unwrap());
    assert_eq!(store.budget(&created.budget.id).await.unwrap(), None);
}

/// A limit lowered below `spent + leased` grants and extends nothing: the leases out run
/// to their expiry (the README's lag), and once reclaimed the window is under the limit.
async fn a_lowered_limit_lets_only_the_leases_out_run_out(store: &Store) {
    let subject = fresh("user");
    let budget = store
        .set_budget(&subject, Period::Day, 1_000, NOON)
        .await
        .unwrap()
        .budget;
    let lease = granted(
        store
            .lease(ask(&budget.id, None, 600, 1, NOON))
            .await
            .unwrap(),
    );
    store
        .set_budget(&subject, Period::Day, 300, NOON + 1)
        .await
        .unwrap();
    for (lease_id, need) in [(Some(lease.lease_id.as_str()), 0), (None, 1)] {
        assert_eq!(
            store
                .lease(ask(&budget.id, lease_id, 50, need, NOON + 2))
                .await
                .unwrap(),
            LeaseOutcome::Exhausted {
                available_picos: 0,
                window_end_ms: lease.window_end_ms
            }
        );
    }
    // What was leased may still be spent, past the new limit.
    let user = subject.trim_start_matches("user:").to_owned();
    let spend = UsageRow {
        user: Some(user),
        ..usage(&fresh("r"), "key_x", 500, NOON + 3, &[&lease.lease_id])
    };
    store.insert_usage(&[spend]).await.unwrap();
    let s = status(store, &budget.id, NOON).await;
    assert_eq!((s.spent_picos, s.leased_picos), (500, 100));
    // The refused renewal did not extend the lease: it is reclaimed at its first expiry.
    let back = store.reclaim_expired(NOON + TTL + 1).await.unwrap();
    assert_eq!(
        back.iter()
            .filter(|r| r.lease_id == lease.lease_id)
            .map(|r| r.returned_picos)
            .collect::<Vec<_>>(),
        [100]
    );
    let s = status(store, &budget.id, NOON).await;
    assert_eq!(
        (s.spent_picos, s.leased_picos, s.available_picos()),
        (500, 0, 0)
    );
}

#[tokio::test]
async fn sqlite_budgets() {
    let (_dir, store) = sqlite().await;
    grants_never_pass_the_limit(&store).await;
    top_ups_extend_and_old_leases_are_replaced(&store).await;
    a_month_rolls_over_at_utc_midnight(&store).await;
    settlement_arithmetic(&store).await;
    a_record_draws_only_on_leases_of_its_own_budgets(&store).await;
    a_lease_gives_up_what_its_envoy_charged_it(&store).await;
    a_lease_drawn_on_by_one_call_alone_closes_with_its_record(&store).await;
    budgets_are_set_changed_and_deleted(&store).await;
    a_lowered_limit_lets_only_the_leases_out_run_out(&store).await;
    let second = store.clone();
    reclaim_returns_unused_money_once(&store, &second).await;
}

#[tokio::test]
async fn postgres_budgets() {
    let (store, other) = postgres_replicas().await;
    grants_never_pass_the_limit(&store).await;
    top_ups_extend_and_old_leases_are_replaced(&store).await;
    a_month_rolls_over_at_utc_midnight(&store).await;
    settlement_arithmetic(&store).await;
    a_record_draws_only_on_leases_of_its_own_budgets(&store).await;
    a_lease_gives_up_what_its_envoy_charged_it(&store).await;
    a_lease_drawn_on_by_one_call_alone_closes_with_its_record(&store).await;
    budgets_are_set_changed_and_deleted(&store).await;
    a_lowered_limit_lets_only_the_leases_out_run_out(&store).await;
    // Two stores: two replicas' connection pools on one database.
    reclaim_returns_unused_money_once(&store, &other).await;
}

/// The CLI and the server are two processes on one SQLite file: budgets changed, listed
/// and deleted by one while the other grants, tops up, settles and reclaims leases never
/// fail with a locked database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_cli_and_server_share_the_file_while_leases_are_granted() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let server = Store::open(&url).await.unwrap();
    let cli = Store::open(&url).await.unwrap();
    let budget = server
        .set_budget("team:ml", Period::Day, 1_000_000_000, NOON)
        .await
        .unwrap()
        .budget;
    let grants = tokio::spawn({
        let server = server.clone();
        let id = budget.id.clone();
        async move {
            let mut lease: Option<String> = None;
            for i in 0..300i64 {
                let now = NOON + i;
                let outcome = server
                    .lease(LeaseAsk {
                        holder: "envoy-a",
                        ..ask(&id, lease.as_deref(), 1_000, 1, now)
                    })
                    .await
                    .unwrap();
                if let LeaseOutcome::Granted(l) = outcome {
                    let row = UsageRow {
                        team: Some("ml".into()),
                        ..usage(&format!("r{i}"), "key_x", 10, now, &[&l.lease_id])
                    };
                    server.insert_usage(&[row]).await.unwrap();
                    lease = Some(l.lease_id);
                }
                server.reclaim_expired(now - TTL).await.unwrap();
            }
        }
    });
    for i in 0..100u64 {
        cli.set_budget("team:ml", Period::Day, 1_000_000_000 + i, NOON)
            .await
            .unwrap();
        cli.list_budgets(NOON).await.unwrap();
        let other = cli
            .set_budget("team:other", Period::Total, 5, NOON)
            .await
            .unwrap();
        cli.delete_budget(&other.budget.id).await.unwrap();
    }
    grants.await.unwrap();
    let s = status(&cli, &budget.id, NOON).await;
    assert_eq!(s.spent_picos, 3_000);
}

/// Two replicas on one PostgreSQL database, eight Envoys leasing, topping up, reporting
/// (some reports twice, some past their lease's grant, some charging the lease more than
/// the cost) and sweeping at once, with leases expiring as the clock moves: no statement
/// deadlocks or fails, and once every lease is reclaimed nothing stays leased and spent
/// is exactly the sum of the costs stored.
#[tokio::test]
async fn postgres_replicas_interleaving_conserve_money() {
    let (a, b) = postgres_replicas().await;
    let replicas = [a, b];
    let budget = replicas[0]
        .set_budget(&fresh("key"), Period::Total, 200_000, NOON)
        .await
        .unwrap()
        .budget;
    let key_id = budget.subject.trim_start_matches("key:").to_owned();
    let mut envoys = Vec::new();
    for e in 0..8u64 {
        let store = replicas[usize::try_from(e % 2).unwrap()].clone();
        let budget_id = budget.id.clone();
        let key_id = key_id.clone();
        envoys.push(tokio::spawn(async move {
            let holder = format!("envoy-{e}");
            let mut lease: Option<String> = None;
            let mut spent = 0i64;
            for i in 0..25u64 {
                // Each Envoy's clock moves 20 s a step: leases lapse and are replaced.
                let now = NOON + i64::try_from(i * 20_000 + e).unwrap();
                let asked = LeaseAsk {
                    budget_id: &budget_id,
                    holder: &holder,
                    lease_id: lease.as_deref(),
                    want_picos: 5_000,
                    need_picos: 1_000,
                    now_ms: now,
                    ttl_ms: TTL,
                };
                let LeaseOutcome::Granted(l) = store.lease(asked).await.unwrap() else {
                    continue;
                };
                let cost = i64::try_from((e * 37 + i * 101) % 1_500).unwrap();
                let mut row = usage(&fresh("r"), &key_id, cost, now, &[&l.lease_id]);
                row.lease_charge_picos = if i % 3 == 0 { cost + 400 } else { 0 };
                let twice = [row.clone(), row];
                let stored = store
                    .insert_usage(&twice[..1 + usize::from(i % 4 == 0)])
                    .await
                    .unwrap();
                assert_eq!(stored, 1);
                spent += cost;
                lease = Some(l.lease_id);
                if i % 5 == 0 {
                    store.reclaim_expired(now - 30_000).await.unwrap();
                }
            }
            spent
        }));
    }
    let mut total = 0;
    for envoy in envoys {
        total += envoy.await.unwrap();
    }
    let far = NOON + 100 * DAY;
    let (a, b) = tokio::join!(
        replicas[0].reclaim_expired(far),
        replicas[1].reclaim_expired(far)
    );
    a.unwrap();
    b.unwrap();
    let s = status(&replicas[0], &budget.id, far).await;
    assert_eq!(s.leased_picos, 0);
    assert_eq!(s.spent_picos, u64::try_from(total).unwrap());
}
