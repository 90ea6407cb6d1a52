//! The reclaim sweeper: every replica, every `[budgets] sweep_interval_ms`, closes budget
//! leases that expired more than `reclaim_grace_ms` ago and returns their unused money,
//! and gives back the shares of rate-limit leases whose calls have left every window.
//! Replicas race safely: the store closes each lease for exactly one of them.

use crate::clock::Clock;
use crate::config::{BudgetSettings, LimitSettings};
use crate::shares::reclaim_cutoff_ms;
use crate::store::{Reclaimed, ReclaimedShare, Store, StoreError};
use std::future::Future;
use tokio::time::MissedTickBehavior;

/// Closes the leases expired before `now - grace` once, for a sweeper started at
/// `started_ms`; logs and returns what went back. Nothing is closed until a grace has
/// passed since the start: calls that finished while no control plane was up report
/// from the Envoys' outboxes only now, and their lease's money must not be leased again
/// before their cost is charged.
pub async fn sweep_once(
    store: &Store,
    settings: &BudgetSettings,
    clock: &Clock,
    started_ms: i64,
) -> Result<Vec<Reclaimed>, StoreError> {
    let now = clock.now_ms();
    if now < started_ms.saturating_add(settings.reclaim_grace_ms) {
        return Ok(Vec::new());
    }
    let cutoff = now.saturating_sub(settings.reclaim_grace_ms);
    let reclaimed = store.reclaim_expired(cutoff).await?;
    for r in &reclaimed {
        tracing::info!(
            lease_id = %r.lease_id,
            budget_id = %r.budget_id,
            returned_picos = r.returned_picos,
            "expired budget lease closed; its unused money is available again"
        );
    }
    Ok(reclaimed)
}

/// Deletes the share leases that expired more than a window (61 s) and
/// `share_clock_skew_ms` ago, once, and gives their shares back; logs and returns them.
/// Unlike budget money this needs no wait after a start: what a lease admitted lives in
/// its Envoy's windows, which empty on their own clock whether a control plane runs or not.
pub async fn sweep_shares_once(
    store: &Store,
    limits: &LimitSettings,
    clock: &Clock,
) -> Result<Vec<ReclaimedShare>, StoreError> {
    let cutoff = reclaim_cutoff_ms(clock.now_ms(), limits.share_clock_skew_ms);
    let reclaimed = store.reclaim_expired_shares(cutoff).await?;
    for r in &reclaimed {
        tracing::info!(
            lease_id = %r.lease_id,
            subject = %r.subject,
            measure = %r.measure,
            holder = %r.holder,
            returned = r.returned,
            "expired share lease closed; its share of the limit is available again"
        );
    }
    Ok(reclaimed)
}

/// Sweeps every `settings.sweep_interval` until `stopped` completes.
pub async fn run(
    store: Store,
    settings: BudgetSettings,
    limits: LimitSettings,
    clock: Clock,
    stopped: impl Future<Output = ()>,
) {
    let started_ms = clock.now_ms();
    let mut ticks = tokio::time::interval(settings.sweep_interval);
    // A slow database must not cause a burst of sweeps when it recovers.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            _ = ticks.tick() => {
                if let Err(e) = sweep_once(&store, &settings, &clock, started_ms).await {
                    tracing::warn!("budget lease sweep failed (retried next interval): {e}");
                }
                if let Err(e) = sweep_shares_once(&store, &limits, &clock).await {
                    tracing::warn!("share lease sweep failed (retried next interval): {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budgets::Period;
    use crate::clock::ManualClock;
    use crate::store::{LeaseAsk, LeaseOutcome};

    /// A store whose one budget of 500 picos is leased whole at t = 1,000,000 ms, under
    /// the default settings, with the clock that leased it and the lease's id.
    async fn leased() -> (
        tempfile::TempDir,
        Store,
        BudgetSettings,
        ManualClock,
        String,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        let settings = BudgetSettings::default();
        let time = ManualClock::at(1_000_000);
        let budget = store
            .set_budget("key:k", Period::Total, 500, 0)
            .await
            .unwrap()
            .budget;
        let ask = LeaseAsk {
            budget_id: &budget.id,
            holder: "h",
            lease_id: None,
            want_picos: 500,
            need_picos: 500,
            now_ms: time.clock().now_ms(),
            ttl_ms: settings.lease_ttl_ms,
        };
        let LeaseOutcome::Granted(lease) = store.lease(ask).await.unwrap() else {
            panic!("granted");
        };
        (dir, store, settings, time, lease.lease_id)
    }

    #[tokio::test]
    async fn a_lease_is_reclaimed_only_after_its_ttl_and_grace() {
        let (_dir, store, settings, time, lease_id) = leased().await;
        let clock = time.clock();
        // Expired, but within the grace: calls in flight may still report.
        time.advance_ms(settings.lease_ttl_ms + settings.reclaim_grace_ms);
        assert!(
            sweep_once(&store, &settings, &clock, 0)
                .await
                .unwrap()
                .is_empty()
        );
        time.advance_ms(1);
        let swept = sweep_once(&store, &settings, &clock, 0).await.unwrap();
        assert_eq!(swept.len(), 1);
        assert_eq!(
            (swept[0].lease_id.as_str(), swept[0].returned_picos),
            (lease_id.as_str(), 500)
        );
        assert!(
            sweep_once(&store, &settings, &clock, 0)
                .await
                .unwrap()
                .is_empty()
        );
        let status = &store.list_budgets(0).await.unwrap()[0];
        assert_eq!(status.available_picos(), 500);
    }

    #[tokio::test]
    async fn after_a_restart_leases_wait_one_grace_for_reports_queued_meanwhile() {
        // A lease expired long before this control plane started: the calls drawn on it
        // may have finished while no control plane was up, their records queued in the
        // Envoys' outboxes and sent only now. Returning the lease's money before they
        // arrive would let it be leased again and then spent twice.
        let (_dir, store, settings, time, _) = leased().await;
        let clock = time.clock();
        // The control plane was down for an hour, then starts.
        time.advance_ms(3_600_000);
        let started_ms = clock.now_ms();
        assert!(
            sweep_once(&store, &settings, &clock, started_ms)
                .await
                .unwrap()
                .is_empty()
        );
        time.advance_ms(settings.reclaim_grace_ms - 1);
        assert!(
            sweep_once(&store, &settings, &clock, started_ms)
                .await
                .unwrap()
                .is_empty()
        );
        time.advance_ms(1);
        let swept = sweep_once(&store, &settings, &clock, started_ms)
            .await
            .unwrap();
        assert_eq!(swept.len(), 1);
    }

    #[tokio::test]
    async fn a_share_is_reclaimed_only_a_window_and_the_skew_after_expiry() {
        use crate::shares::{Grant, ShareAsk};
        use crate::store::PoolAsk;
        use tollgate_core::limits::Measure;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        let limits = LimitSettings::default();
        // Started just now: shares need no wait after a start, unlike budget money.
        let time = ManualClock::at(1_000_000);
        let clock = time.clock();
        let ask = |holder: &'static str, now_ms: i64| PoolAsk {
            subject: "user:alice",
            measure: Measure::Requests,
            holder,
            limit: 10,
            ask: ShareAsk {
                want: 4,
                need: 4,
                release: 0,
            },
            releasing: None,
            now_ms,
            ttl_ms: limits.share_ttl_ms,
        };
        let lease = store.lease_share(ask("a", clock.now_ms())).await.unwrap();
        assert_eq!(lease.grant, Grant::Granted(4));
        assert_eq!(lease.expires_at_ms, 1_000_000 + limits.share_ttl_ms);
        // Past its expiry the holder admits nothing more, but what it admitted just before
        // stays in its window 61 s, by a clock up to the skew behind this one.
        time.advance_ms(limits.share_ttl_ms + 61_000 + limits.share_clock_skew_ms);
        assert!(
            sweep_shares_once(&store, &limits, &clock)
                .await
                .unwrap()
                .is_empty()
        );
        // Meanwhile another holder's lease was granted, and stays live.
        store.lease_share(ask("b", clock.now_ms())).await.unwrap();
        time.advance_ms(1);
        let swept = sweep_shares_once(&store, &limits, &clock).await.unwrap();
        assert_eq!(swept.len(), 1);
        assert_eq!(
            (
                swept[0].lease_id.as_str(),
                swept[0].holder.as_str(),
                swept[0].returned
            ),
            (lease.lease_id.as_str(), "a", 4)
        );
        assert!(
            sweep_shares_once(&store, &limits, &clock)
                .await
                .unwrap()
                .is_empty(),
            "reclaimed once"
        );
        assert_eq!(
            store
                .share_assigned("user:alice", Measure::Requests)
                .await
                .unwrap(),
            4,
            "b's share only"
        );
    }

    #[tokio::test]
    async fn the_sweeper_stops_when_told() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(
            store,
            BudgetSettings::default(),
            LimitSettings::default(),
            Clock::system(),
            async move {
                let _ = stopped.await;
            },
        ));
        stop.send(()).unwrap();
        task.await.unwrap();
    }
}
