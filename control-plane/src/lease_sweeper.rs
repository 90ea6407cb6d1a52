//! The reclaim sweeper: every replica, every `[budgets] sweep_interval_ms`, closes budget
//! leases that expired more than `reclaim_grace_ms` ago and returns their unused money.
//! Replicas race safely: the store closes each lease for exactly one of them.

use crate::clock::Clock;
use crate::config::BudgetSettings;
use crate::store::{Reclaimed, Store, StoreError};
use std::future::Future;
use tokio::time::MissedTickBehavior;

/// Closes the leases expired before `now - grace` once; logs and returns what went back.
pub async fn sweep_once(
    store: &Store,
    settings: &BudgetSettings,
    clock: &Clock,
) -> Result<Vec<Reclaimed>, StoreError> {
    let cutoff = clock.now_ms().saturating_sub(settings.reclaim_grace_ms);
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

/// Sweeps every `settings.sweep_interval` until `stopped` completes.
pub async fn run(
    store: Store,
    settings: BudgetSettings,
    clock: Clock,
    stopped: impl Future<Output = ()>,
) {
    let mut ticks = tokio::time::interval(settings.sweep_interval);
    // A slow database must not cause a burst of sweeps when it recovers.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => return,
            _ = ticks.tick() => {
                if let Err(e) = sweep_once(&store, &settings, &clock).await {
                    tracing::warn!("budget lease sweep failed (retried next interval): {e}");
                }
            }
        }
    }
}
