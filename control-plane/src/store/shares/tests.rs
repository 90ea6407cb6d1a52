//! Shares in the store, on SQLite and on PostgreSQL (`TOLLGATE_TEST_POSTGRES_URL`).

use super::*;
use crate::shares::{Grant, ShareAsk};
use crate::store::test_stores::{postgres_replicas, sqlite};

/// 2026-01-31T12:00:00Z.
const NOON: i64 = 1_769_860_800_000;
const TTL: i64 = 30_000;

/// A subject no other test (or earlier run on the shared database) uses.
fn fresh() -> String {
    format!("user:t{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// Asks `store` for `holder`'s share of `subject`'s requests at `now`.
async fn ask(
    store: &Store,
    subject: &str,
    holder: &str,
    limit: u64,
    (want, need, release): (u64, u64, u64),
    now_ms: i64,
) -> ShareLease {
    store
        .lease_share(PoolAsk {
            subject,
            measure: Measure::Requests,
            holder,
            limit,
            ask: ShareAsk {
                want,
                need,
                release,
            },
            releasing: None,
            now_ms,
            ttl_ms: TTL,
        })
        .await
        .unwrap()
}

async fn assigned(store: &Store, subject: &str) -> u64 {
    store
        .share_assigned(subject, Measure::Requests)
        .await
        .unwrap()
}

/// Grants lie between need and want, or are nothing, and never pass the limit.
async fn grants_never_pass_the_limit(store: &Store) {
    let subject = fresh();
    let a = ask(store, &subject, "a", 100, (60, 10, 0), NOON).await;
    assert_eq!(a.grant, Grant::Granted(60));
    assert_eq!(
        (a.share, a.available, a.expires_at_ms),
        (60, 40, NOON + TTL)
    );
    assert!(a.lease_id.starts_with("share_"), "{}", a.lease_id);
    let b = ask(store, &subject, "b", 100, (60, 10, 0), NOON).await;
    assert_eq!(b.grant, Grant::Granted(40), "what is left, at least need");
    assert_eq!(b.available, 0);
    assert_ne!(a.lease_id, b.lease_id);
    let c = ask(store, &subject, "c", 100, (5, 1, 0), NOON).await;
    assert_eq!(c.grant, Grant::Exhausted);
    assert_eq!((c.lease_id.as_str(), c.share, c.expires_at_ms), ("", 0, 0));
    assert_eq!(assigned(store, &subject).await, 100);
    // A renewal needs nothing: granted 0, same lease, extended.
    let renewed = ask(store, &subject, "a", 100, (10, 0, 0), NOON + 5_000).await;
    assert_eq!(renewed.grant, Grant::Granted(0));
    assert_eq!(renewed.lease_id, a.lease_id);
    assert_eq!(
        (renewed.share, renewed.expires_at_ms),
        (60, NOON + 5_000 + TTL)
    );
    let leases = store
        .share_leases(&subject, Measure::Requests)
        .await
        .unwrap();
    assert_eq!(
        leases
            .iter()
            .map(|l| (l.holder.as_str(), l.share))
            .collect::<Vec<_>>(),
        [("a", 60), ("b", 40)],
        "no lease for the refused holder"
    );
    // Another measure of the same subject is its own pool.
    let tokens = store
        .lease_share(PoolAsk {
            subject: &subject,
            measure: Measure::Tokens,
            holder: "a",
            limit: 1_000,
            ask: ShareAsk {
                want: 700,
                need: 700,
                release: 0,
            },
            releasing: None,
            now_ms: NOON,
            ttl_ms: TTL,
        })
        .await
        .unwrap();
    assert_eq!((tokens.grant, tokens.available), (Grant::Granted(700), 300));
    assert_ne!(tokens.lease_id, a.lease_id);
}

/// A holder tops up its one lease; once it lapsed (unrenewed past its expiry) and until it
/// is reclaimed, the holder's next ask revives it with the share it held, instead of
/// opening a second lease while the first one's share stays assigned.
async fn one_lease_per_holder_revived_after_it_lapsed(store: &Store) {
    let subject = fresh();
    let first = ask(store, &subject, "a", 100, (10, 10, 0), NOON).await;
    let topped = ask(store, &subject, "a", 100, (15, 5, 0), NOON + 1_000).await;
    assert_eq!(topped.lease_id, first.lease_id);
    assert_eq!((topped.grant, topped.share), (Grant::Granted(15), 25));
    assert_eq!(topped.expires_at_ms, NOON + 1_000 + TTL);
    // At its expiry the holder stopped admitting (it admits while now < expiry).
    let expiry = topped.expires_at_ms;
    let revived = ask(store, &subject, "a", 100, (20, 1, 0), expiry).await;
    assert_eq!(revived.lease_id, first.lease_id);
    assert_eq!((revived.grant, revived.share), (Grant::Granted(20), 45));
    assert_eq!(revived.expires_at_ms, expiry + TTL);
    assert_eq!(revived.available, 100 - 45);
    assert_eq!(assigned(store, &subject).await, 45);
    // A release naming another lease (one reclaimed while the release was on its way) is
    // not taken off this one: its holder took it off that lease, and counts this one at
    // only what it was granted here.
    let late = store
        .lease_share(PoolAsk {
            subject: &subject,
            measure: Measure::Requests,
            holder: "a",
            limit: 100,
            ask: ShareAsk {
                want: 0,
                need: 0,
                release: 25,
            },
            releasing: Some("share_reclaimed_meanwhile"),
            now_ms: expiry + 1,
            ttl_ms: TTL,
        })
        .await
        .unwrap();
    assert_eq!(late.lease_id, first.lease_id);
    assert_eq!((late.released, late.share), (0, 45));
    assert_eq!(assigned(store, &subject).await, 45);
    // A release naming this lease, or none, comes off it.
    let released = ask(store, &subject, "a", 100, (0, 0, 25), expiry + 1).await;
    assert_eq!(released.lease_id, first.lease_id);
    assert_eq!((released.released, released.share), (25, 20));
    assert_eq!(assigned(store, &subject).await, 20);
    let leases = store
        .share_leases(&subject, Measure::Requests)
        .await
        .unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(
        (leases[0].lease_id.as_str(), leases[0].share),
        (first.lease_id.as_str(), 20)
    );
}

/// An Envoy that took 6 of a 10 per minute limit and whose lease lapsed (the control plane
/// was unreachable past its expiry) still counts those 6 in its window: it needs 7 to
/// admit one more. Its lapsed lease holds 6, so 1 more is what the limit has to give, and
/// the other 3 stay with the rest of the limit.
async fn a_lapsed_lease_serves_its_holder_again_before_reclaim(store: &Store) {
    let subject = fresh();
    let a = ask(store, &subject, "a", 10, (6, 6, 0), NOON).await;
    assert_eq!(a.grant, Grant::Granted(6));
    let back = a.expires_at_ms + 5_000;
    let again = ask(store, &subject, "a", 10, (1, 1, 0), back).await;
    assert_eq!(again.grant, Grant::Granted(1), "{again:?}");
    assert_eq!(
        (again.lease_id.as_str(), again.share),
        (a.lease_id.as_str(), 7)
    );
    assert_eq!(again.available, 3);
    // Another Envoy gets the rest, and no more.
    let b = ask(store, &subject, "b", 10, (5, 1, 0), back).await;
    assert_eq!((b.grant, b.available), (Grant::Granted(3), 0));
    assert_eq!(assigned(store, &subject).await, 10);
}

/// Releases come off before a grant, only from the holder's share, never below zero, and
/// apply even when the grant is refused.
async fn releases_apply_first_and_never_go_below_zero(store: &Store) {
    let subject = fresh();
    let a = ask(store, &subject, "a", 10, (6, 6, 0), NOON).await;
    ask(store, &subject, "b", 10, (4, 4, 0), NOON).await;
    // Full: a's release of 3 makes the room its own need of 3 takes.
    let swap = ask(store, &subject, "a", 10, (3, 3, 3), NOON + 1).await;
    assert_eq!(
        (swap.grant, swap.released, swap.share),
        (Grant::Granted(3), 3, 6)
    );
    assert_eq!(swap.lease_id, a.lease_id);
    // Refused, the release still applies and the lease is extended.
    let refused = ask(store, &subject, "a", 10, (9, 9, 2), NOON + 2).await;
    assert_eq!(refused.grant, Grant::Exhausted);
    assert_eq!(
        (refused.released, refused.share, refused.available),
        (2, 4, 2)
    );
    assert_eq!(refused.lease_id, a.lease_id);
    assert_eq!(refused.expires_at_ms, NOON + 2 + TTL);
    // A release past the share takes the share, no more.
    let all = ask(store, &subject, "a", 10, (0, 0, u64::MAX), NOON + 3).await;
    assert_eq!((all.released, all.share, all.available), (4, 0, 6));
    assert_eq!(assigned(store, &subject).await, 4, "b's share only");
    // A holder without a lease releases nothing.
    let none = ask(store, &subject, "c", 10, (0, 0, 50), NOON + 4).await;
    assert_eq!((none.released, none.lease_id.as_str()), (0, ""));
    assert_eq!(assigned(store, &subject).await, 4);
}

/// After the limit is lowered under what is assigned, nothing is granted until releases
/// bring it under; a limit of 0 refuses every ask.
async fn a_lowered_limit_grants_nothing_until_assigned_falls_under_it(store: &Store) {
    let subject = fresh();
    ask(store, &subject, "a", 100, (80, 80, 0), NOON).await;
    let b = ask(store, &subject, "b", 50, (5, 1, 0), NOON).await;
    assert_eq!((b.grant, b.available), (Grant::Exhausted, 0));
    let renewal = ask(store, &subject, "a", 50, (5, 0, 0), NOON).await;
    assert_eq!((renewal.grant, renewal.share), (Grant::Granted(0), 80));
    ask(store, &subject, "a", 50, (0, 0, 20), NOON).await;
    assert_eq!(assigned(store, &subject).await, 60);
    let still = ask(store, &subject, "b", 50, (5, 1, 0), NOON).await;
    assert_eq!(still.grant, Grant::Exhausted, "60 assigned of 50");
    ask(store, &subject, "a", 50, (0, 0, 20), NOON).await;
    let under = ask(store, &subject, "b", 50, (20, 5, 0), NOON).await;
    assert_eq!((under.grant, under.available), (Grant::Granted(10), 0));
    let blocked = ask(store, &subject, "a", 0, (0, 0, 0), NOON).await;
    assert_eq!(blocked.grant, Grant::Exhausted);
    assert_eq!(blocked.share, 40, "the lease is kept, extended");
}

/// Expired leases are reclaimed strictly after the cutoff, by one of two replicas
/// sweeping at once, and their share is back in the pool; live leases stay.
async fn reclaim_returns_the_share_once(a: &Store, b: &Store) {
    let subject = fresh();
    let old = ask(a, &subject, "old", 100, (30, 30, 0), NOON).await;
    let live = ask(a, &subject, "live", 100, (20, 20, 0), NOON + 10_000).await;
    assert_eq!(assigned(a, &subject).await, 50);
    // Other tests' leases on a shared database may be reclaimed too: look at ours.
    let ours = |r: &Vec<ReclaimedShare>| {
        r.iter()
            .filter(|s| s.subject == subject)
            .map(|s| (s.lease_id.clone(), s.holder.clone(), s.returned))
            .collect::<Vec<_>>()
    };
    let early = a.reclaim_expired_shares(old.expires_at_ms).await.unwrap();
    assert!(
        ours(&early).is_empty(),
        "a lease expiring at the cutoff stays"
    );
    let cutoff = old.expires_at_ms + 1;
    let (x, y) = tokio::join!(
        a.reclaim_expired_shares(cutoff),
        b.reclaim_expired_shares(cutoff)
    );
    let mut both = ours(&x.unwrap());
    both.extend(ours(&y.unwrap()));
    assert_eq!(both, [(old.lease_id.clone(), "old".to_owned(), 30)]);
    assert_eq!(assigned(a, &subject).await, 20);
    let leases = a.share_leases(&subject, Measure::Requests).await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].lease_id, live.lease_id);
    assert!(ours(&a.reclaim_expired_shares(cutoff).await.unwrap()).is_empty());
}

#[tokio::test]
async fn sqlite_shares() {
    let (dir, store) = sqlite().await;
    grants_never_pass_the_limit(&store).await;
    one_lease_per_holder_revived_after_it_lapsed(&store).await;
    a_lapsed_lease_serves_its_holder_again_before_reclaim(&store).await;
    releases_apply_first_and_never_go_below_zero(&store).await;
    a_lowered_limit_grants_nothing_until_assigned_falls_under_it(&store).await;
    let second = Store::open(&format!("sqlite://{}/t.db", dir.path().display()))
        .await
        .unwrap();
    reclaim_returns_the_share_once(&store, &second).await;
}

#[tokio::test]
async fn postgres_shares() {
    let (store, other) = postgres_replicas().await;
    grants_never_pass_the_limit(&store).await;
    one_lease_per_holder_revived_after_it_lapsed(&store).await;
    a_lapsed_lease_serves_its_holder_again_before_reclaim(&store).await;
    releases_apply_first_and_never_go_below_zero(&store).await;
    a_lowered_limit_grants_nothing_until_assigned_falls_under_it(&store).await;
    // Two stores: two replicas' connection pools on one database.
    reclaim_returns_the_share_once(&store, &other).await;
}
