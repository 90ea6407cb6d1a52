//! Hard budgets on the gateway's side: a call's worst-case cost, and the lease of a
//! budget's money one Envoy holds calls against.
//!
//! The control plane is the authority on a budget; it leases part of the remaining money
//! to each Envoy (`LeaseBudget`), and the Envoy keeps one [`Lease`] per budget in shared
//! data, updated by compare-and-swap. `charged` is the sum of the holds open on the lease
//! and the settled costs of calls that drew on it: a hold is taken only when it fits in
//! `granted - charged`, so this Envoy never draws more than it was granted. Everything
//! here is plain arithmetic with the clock passed in, saturating on numbers that come from
//! clients or providers.

use crate::hold::TokenBound;
use crate::pricing::Price;

/// Shared-data key of the lease of `budget_id`. `v1`: the layout of [`Lease::to_bytes`];
/// a new layout takes a new key, since shared data outlives a VM.
pub fn lease_key(budget_id: &str) -> String {
    format!("tg:v1:lease:{budget_id}")
}

/// A lease is renewed ahead of need once it has less than this long left.
pub const RENEW_AHEAD_MS: u64 = 10_000;

/// How long one holder may keep the renewal of a lease to itself: after that (an answer
/// lost, a worker gone) another may renew.
pub const RENEWAL_MARK_MS: u64 = 5_000;

/// The most a lease call may ask for: the control plane keeps money as signed 64-bit.
pub const MAX_ASK_PICOS: u64 = i64::MAX as u64;

/// Parts of the limit asked for at once: a lease takes a twentieth of the budget (or of a
/// rate limit, tollgate-core `share`), so twenty Envoys can share it before they must come
/// back for more.
pub const LEASE_SHARE: u64 = 20;

/// The worst-case cost of a call in pico-dollars: every prompt token at the dearer of the
/// input and cache-write prices (a prompt may be written to cache), every output token at
/// the output price. Saturates rather than wraps.
pub fn hold_picos(bound: &TokenBound, price: &Price) -> u64 {
    let prompt_price = price.input.max(price.cache_write);
    bound
        .prompt
        .saturating_mul(prompt_price)
        .saturating_add(bound.output.saturating_mul(price.output))
}

/// What to ask the control plane for when a call needs `need` pico-dollars of a budget of
/// `limit_picos`: at least the need, and a share of the limit so the next calls need no
/// round trip; never more than [`MAX_ASK_PICOS`].
pub fn want_picos(need: u64, limit_picos: u64) -> u64 {
    need.max(limit_picos / LEASE_SHARE).clamp(1, MAX_ASK_PICOS)
}

/// What a renewal ahead of need asks for on a lease with `remaining` left: what brings it
/// back to a share of the limit, and nothing when it holds that already (the renewal then
/// only extends the lease). Without this, every renewal for time would lease another share
/// and an idle Envoy would soon hold the whole budget.
pub fn renewal_want(remaining: u64, limit_picos: u64) -> u64 {
    want_picos(0, limit_picos).saturating_sub(remaining)
}

/// What a call holding `amount` must be granted more on a lease with `remaining` left
/// (all of it when the lease is not live): only what it lacks, so a budget with just
/// enough left between the lease and the control plane still serves it.
pub fn missing(amount: u64, remaining: u64) -> u64 {
    amount.saturating_sub(remaining).max(1)
}

/// Output tokens a streamed answer has produced by the gateway's count: the larger of the
/// number of content deltas (a delta is at least one token) and a quarter of the text's
/// bytes (an average token is about four bytes of English).
pub fn output_seen(deltas: u64, text_bytes: u64) -> u64 {
    deltas.max(text_bytes / 4)
}

/// One Envoy's lease of one budget, as kept in shared data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lease {
    /// The control plane's id of the lease.
    pub lease_id: String,
    /// End of the budget window the lease belongs to (Unix ms); 0 for a total budget.
    pub window_end_ms: u64,
    /// Until when the lease may be drawn on (Unix ms).
    pub expires_at_ms: u64,
    /// Pico-dollars granted on the lease so far (all grants).
    pub granted: u64,
    /// Open holds plus settled costs drawn on the lease.
    pub charged: u64,
    /// A renewal is in flight until then (Unix ms); 0: none.
    pub renewing_until_ms: u64,
}

/// Bytes of the fixed part of an encoded lease: version, then five big-endian u64s.
const FIXED_LEN: usize = 1 + 5 * 8;

/// The layout version byte of [`Lease::to_bytes`].
const LAYOUT: u8 = 1;

/// Why a hold was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Short {
    /// There is no lease, or it may no longer be drawn on (expired, or of a window that ended).
    Lapsed,
    /// The lease lacks money: `need` more would be needed than is left on it.
    Funds,
}

/// What the control plane answered to a `LeaseBudget` call, in plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The lease `lease_id` now totals `total` pico-dollars.
    Granted {
        /// The lease's id (a new one when the asked lease was closed or of an older window).
        lease_id: String,
        /// The lease's total so far.
        total: u64,
        /// Until when it may be drawn on (Unix ms).
        expires_at_ms: u64,
        /// End of the budget's window (Unix ms); 0 for a total budget.
        window_end_ms: u64,
    },
    /// Less than the need is left in the budget's window: `available` pico-dollars.
    Exhausted {
        /// Money neither spent nor leased when the control plane answered.
        available: u64,
    },
    /// The budget is gone: the lease is dropped.
    UnknownBudget,
}

impl Lease {
    /// The fixed-layout bytes kept in shared data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + self.lease_id.len());
        out.push(LAYOUT);
        for n in [
            self.window_end_ms,
            self.expires_at_ms,
            self.granted,
            self.charged,
            self.renewing_until_ms,
        ] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out.extend_from_slice(self.lease_id.as_bytes());
        out
    }

    /// Reads [`Lease::to_bytes`]; `None` for bytes of another shape.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (fixed, id) = bytes.split_at_checked(FIXED_LEN)?;
        let (version, numbers) = fixed.split_first()?;
        if *version != LAYOUT {
            return None;
        }
        let mut n = numbers
            .chunks_exact(8)
            .map(|c| c.try_into().map(u64::from_be_bytes));
        let mut next = || n.next()?.ok();
        Some(Self {
            window_end_ms: next()?,
            expires_at_ms: next()?,
            granted: next()?,
            charged: next()?,
            renewing_until_ms: next()?,
            lease_id: String::from_utf8(id.to_vec()).ok()?,
        })
    }

    /// Money still free on the lease.
    pub fn remaining(&self) -> u64 {
        self.granted.saturating_sub(self.charged)
    }

    /// The lease may be drawn on at `now_ms`: not expired, and its window not over.
    pub fn live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms && (self.window_end_ms == 0 || now_ms < self.window_end_ms)
    }

    /// Takes a hold of `amount` at `now_ms` if the lease is live and has the money.
    /// `lapsed_ok` draws on a lease past its expiry too (the control plane is unreachable
    /// and the operator chose to admit within what is leased).
    pub fn try_hold(&mut self, amount: u64, now_ms: u64, lapsed_ok: bool) -> Result<(), Short> {
        if self.lease_id.is_empty() || !(lapsed_ok || self.live(now_ms)) {
            return Err(Short::Lapsed);
        }
        if self.remaining() < amount {
            return Err(Short::Funds);
        }
        self.charged = self.charged.saturating_add(amount);
        Ok(())
    }

    /// Settles a hold of `held` taken on lease `lease_id` to the call's `cost`; returns
    /// whether it changed anything. A hold taken on a lease since replaced changes
    /// nothing: the control plane settles that lease from the call's record.
    pub fn settle(&mut self, lease_id: &str, held: u64, cost: u64) -> bool {
        if self.lease_id != lease_id || self.lease_id.is_empty() {
            return false;
        }
        self.charged = self.charged.saturating_sub(held).saturating_add(cost);
        true
    }

    /// Whether a renewal ahead of need is due at `now_ms`: the lease is live, no renewal
    /// is in flight, and it runs low on money (under `low_water`) or time.
    pub fn renewal_due(&self, now_ms: u64, low_water: u64) -> bool {
        !self.lease_id.is_empty()
            && self.live(now_ms)
            && self.renewing_until_ms <= now_ms
            && (self.remaining() < low_water
                || self.expires_at_ms.saturating_sub(now_ms) < RENEW_AHEAD_MS)
    }

    /// Marks a renewal in flight from `now_ms`, so other workers leave it alone.
    pub fn mark_renewing(&mut self, now_ms: u64) {
        self.renewing_until_ms = now_ms.saturating_add(RENEWAL_MARK_MS);
    }

    /// Takes the mark for a call that must ask for money at `now_ms`, if no renewal or
    /// other call holds it: the holder asks for a share, the others only for their need.
    pub fn claim_ask(&mut self, now_ms: u64) -> bool {
        claim_mark(&mut self.renewing_until_ms, now_ms)
    }
}

/// Takes a lease's mark (`until_ms`: a call to the control plane about it is in flight
/// until then) at `now_ms` if no one holds it, for [`RENEWAL_MARK_MS`]: one worker asks
/// about a lease at a time, and a lost answer frees the mark when it lapses.
pub fn claim_mark(until_ms: &mut u64, now_ms: u64) -> bool {
    if *until_ms > now_ms {
        return false;
    }
    *until_ms = now_ms.saturating_add(RENEWAL_MARK_MS);
    true
}

/// How an answer to a `LeaseBudget` call about lease `asked` changed the stored lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The stored lease is now this (the answer's lease, or the stored one topped up).
    Stored(Lease),
    /// The answer's lease could not be stored (another lease took the place meanwhile);
    /// the asker may still draw on it alone.
    Apart(Lease),
    /// The lease is dropped (the budget is gone).
    Dropped,
    /// Nothing changes (the budget is exhausted; the stored lease stays as it is).
    Unchanged,
}

/// Applies the answer to a `LeaseBudget` call that asked about lease `asked` (empty: a
/// new lease) to the `current` stored lease, at `now_ms`; `marked`: the asker held the
/// lease's mark (a renewal, or the call that asked for a share).
///
/// Grants of the same lease only grow its total and its expiry, so answers applied in any
/// order leave the largest of each. An answer with another lease id replaces the stored
/// lease only when its asker held the mark and asked about that lease, or the stored one
/// can no longer be drawn on; otherwise the answer stays apart: an unmarked asker asked
/// for its own need alone, and must not push out the share the marked one will store.
pub fn apply_answer(
    current: Option<&Lease>,
    asked: &str,
    answer: &Answer,
    now_ms: u64,
    marked: bool,
) -> Applied {
    let (lease_id, total, expires_at_ms, window_end_ms) = match answer {
        Answer::Granted {
            lease_id,
            total,
            expires_at_ms,
            window_end_ms,
        } => (lease_id, *total, *expires_at_ms, *window_end_ms),
        Answer::Exhausted { .. } => {
            return match current {
                Some(c) if marked && c.renewing_until_ms != 0 => {
                    let mut kept = c.clone();
                    kept.renewing_until_ms = 0;
                    Applied::Stored(kept)
                }
                _ => Applied::Unchanged,
            };
        }
        Answer::UnknownBudget => return Applied::Dropped,
    };
    match current {
        Some(c) if !c.lease_id.is_empty() && c.lease_id == *lease_id => {
            let mut topped = c.clone();
            topped.granted = topped.granted.max(total);
            topped.expires_at_ms = topped.expires_at_ms.max(expires_at_ms);
            topped.window_end_ms = topped.window_end_ms.max(window_end_ms);
            if marked {
                topped.renewing_until_ms = 0;
            }
            Applied::Stored(topped)
        }
        current => {
            let fresh = Lease {
                lease_id: lease_id.clone(),
                window_end_ms,
                expires_at_ms,
                granted: total,
                charged: 0,
                renewing_until_ms: 0,
            };
            let replaceable = marked
                && current.is_none_or(|c| {
                    c.lease_id.is_empty() || c.lease_id == asked || !c.live(now_ms)
                });
            if replaceable {
                Applied::Stored(fresh)
            } else {
                Applied::Apart(fresh)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lease(id: &str, granted: u64, charged: u64) -> Lease {
        Lease {
            lease_id: id.into(),
            window_end_ms: 0,
            expires_at_ms: 60_000,
            granted,
            charged,
            renewing_until_ms: 0,
        }
    }

    fn granted(id: &str, total: u64, expires_at_ms: u64) -> Answer {
        Answer::Granted {
            lease_id: id.into(),
            total,
            expires_at_ms,
            window_end_ms: 0,
        }
    }

    #[test]
    fn a_hold_prices_the_prompt_at_the_dearer_prompt_price_and_the_output_at_its_own() {
        let price = Price {
            input: 2_500_000,
            output: 10_000_000,
            cache_read: 1_250_000,
            cache_write: 3_750_000,
        };
        let bound = TokenBound {
            prompt: 1_000,
            output: 500,
        };
        // Prices are picos per token: 1000 × 3_750_000 + 500 × 10_000_000 p$ = $0.00875.
        assert_eq!(hold_picos(&bound, &price), 8_750_000_000);
        let cheaper_write = Price {
            cache_write: 0,
            ..price
        };
        assert_eq!(hold_picos(&bound, &cheaper_write), 7_500_000_000);
    }

    #[test]
    fn hostile_token_counts_saturate() {
        let price = Price {
            input: 1,
            output: 15_000_000,
            ..Price::default()
        };
        let bound = TokenBound {
            prompt: u64::MAX,
            output: u64::MAX / 2,
        };
        assert_eq!(hold_picos(&bound, &price), u64::MAX);
        let mut l = lease("a", 1_000, 900);
        assert!(l.settle("a", 100, u64::MAX));
        assert_eq!((l.charged, l.remaining()), (u64::MAX, 0));
        assert_eq!(l.try_hold(1, 0, false), Err(Short::Funds));
    }

    #[test]
    fn the_want_is_the_need_or_a_twentieth_of_the_limit() {
        assert_eq!(want_picos(7, 1_000), 50);
        assert_eq!(want_picos(70, 1_000), 70);
        assert_eq!(want_picos(0, 0), 1);
        assert_eq!(want_picos(u64::MAX, 0), MAX_ASK_PICOS);
        assert_eq!(missing(50, 30), 20);
        assert_eq!(missing(50, 80), 1);
        assert_eq!(missing(u64::MAX, 0), u64::MAX);
    }

    #[test]
    fn a_renewal_tops_up_to_a_share_and_a_funded_lease_asks_nothing() {
        assert_eq!(renewal_want(0, 2_000), 100, "a twentieth of the limit");
        assert_eq!(renewal_want(30, 2_000), 70);
        assert_eq!(renewal_want(100, 2_000), 0, "only extended");
        assert_eq!(renewal_want(5_000, 2_000), 0);
    }

    #[test]
    fn output_seen_takes_the_larger_count() {
        assert_eq!(output_seen(10, 8), 10);
        assert_eq!(output_seen(3, 400), 100);
        assert_eq!(output_seen(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn bytes_round_trip_and_other_shapes_are_refused() {
        let l = Lease {
            lease_id: "lea_1".into(),
            window_end_ms: 86_400_000,
            expires_at_ms: 61_000,
            granted: 5,
            charged: 3,
            renewing_until_ms: 7,
        };
        assert_eq!(Lease::from_bytes(&l.to_bytes()), Some(l.clone()));
        let mut other_layout = l.to_bytes();
        other_layout[0] = 2;
        assert_eq!(Lease::from_bytes(&other_layout), None);
        assert_eq!(Lease::from_bytes(&l.to_bytes()[..FIXED_LEN - 1]), None);
        let mut bad_id = l.to_bytes();
        bad_id.push(0xff);
        assert_eq!(Lease::from_bytes(&bad_id), None);
    }

    #[test]
    fn holds_fit_in_what_is_left_and_only_on_a_live_lease() {
        let mut l = lease("a", 100, 0);
        assert_eq!(l.try_hold(60, 0, false), Ok(()));
        assert_eq!(l.try_hold(41, 0, false), Err(Short::Funds));
        assert_eq!(l.try_hold(40, 0, false), Ok(()));
        assert_eq!(l.remaining(), 0);
        let mut expired = lease("a", 100, 0);
        assert_eq!(expired.try_hold(1, 60_000, false), Err(Short::Lapsed));
        assert_eq!(
            expired.try_hold(1, 60_000, true),
            Ok(()),
            "admit within lease"
        );
        let mut window_over = Lease {
            window_end_ms: 30_000,
            ..lease("a", 100, 0)
        };
        assert_eq!(window_over.try_hold(1, 30_000, false), Err(Short::Lapsed));
        assert_eq!(Lease::default().try_hold(0, 0, true), Err(Short::Lapsed));
    }

    #[test]
    fn settlement_moves_the_hold_to_the_cost_on_the_current_lease_only() {
        let mut l = lease("a", 100, 0);
        l.try_hold(60, 0, false).unwrap();
        assert!(l.settle("a", 60, 25));
        assert_eq!(l.charged, 25);
        assert!(!l.settle("b", 25, 0), "a hold on a replaced lease");
        assert_eq!(l.charged, 25);
    }

    #[test]
    fn renewal_is_due_when_low_on_money_or_time_and_none_is_in_flight() {
        let l = lease("a", 100, 80);
        assert!(l.renewal_due(0, 50), "20 left, low water 50");
        assert!(!l.renewal_due(0, 10));
        assert!(l.renewal_due(60_000 - RENEW_AHEAD_MS + 1, 10), "expiring");
        assert!(
            !l.renewal_due(60_000, 10),
            "expired: a new lease is taken on need"
        );
        let mut marked = l.clone();
        marked.mark_renewing(0);
        assert!(!marked.renewal_due(RENEWAL_MARK_MS - 1, 50));
        assert!(
            marked.renewal_due(RENEWAL_MARK_MS, 50),
            "a lost answer frees the mark"
        );
    }

    #[test]
    fn an_answer_tops_up_the_same_lease_in_any_order() {
        let mut stored = lease("a", 100, 70);
        stored.mark_renewing(0);
        let first = granted("a", 300, 90_000);
        let second = granted("a", 200, 80_000);
        let Applied::Stored(after_first) = apply_answer(Some(&stored), "a", &first, 0, true) else {
            panic!()
        };
        let Applied::Stored(after_both) = apply_answer(Some(&after_first), "a", &second, 0, true)
        else {
            panic!()
        };
        assert_eq!(
            (
                after_both.granted,
                after_both.charged,
                after_both.expires_at_ms
            ),
            (300, 70, 90_000)
        );
        assert_eq!(after_both.renewing_until_ms, 0);
    }

    #[test]
    fn a_new_lease_replaces_the_one_asked_about_or_a_lapsed_one_only() {
        let stored = lease("a", 100, 100);
        let answer = granted("b", 50, 120_000);
        let fresh = Lease {
            lease_id: "b".into(),
            expires_at_ms: 120_000,
            granted: 50,
            ..Lease::default()
        };
        assert_eq!(
            apply_answer(Some(&stored), "a", &answer, 0, true),
            Applied::Stored(fresh.clone())
        );
        assert_eq!(
            apply_answer(None, "", &answer, 0, true),
            Applied::Stored(fresh.clone())
        );
        assert_eq!(
            apply_answer(Some(&stored), "", &answer, 0, true),
            Applied::Apart(fresh.clone()),
            "another worker stored `a` after this one asked"
        );
        assert_eq!(
            apply_answer(Some(&stored), "", &answer, 60_000, true),
            Applied::Stored(fresh),
            "`a` expired"
        );
    }

    #[test]
    fn exhausted_and_unknown_answers() {
        let mut stored = lease("a", 100, 100);
        assert_eq!(
            apply_answer(
                Some(&stored),
                "a",
                &Answer::Exhausted { available: 0 },
                0,
                true
            ),
            Applied::Unchanged
        );
        stored.mark_renewing(0);
        let Applied::Stored(cleared) = apply_answer(
            Some(&stored),
            "a",
            &Answer::Exhausted { available: 0 },
            0,
            true,
        ) else {
            panic!()
        };
        assert_eq!(cleared.renewing_until_ms, 0);
        assert_eq!(
            apply_answer(Some(&stored), "a", &Answer::UnknownBudget, 0, true),
            Applied::Dropped
        );
    }

    #[test]
    fn an_unmarked_askers_answer_stays_apart_and_leaves_the_mark() {
        let mut stored = Lease::default();
        assert!(stored.claim_ask(0), "nothing in flight");
        assert!(!stored.claim_ask(1), "one asker holds the mark");
        let own = granted("own", 50, 120_000);
        assert!(matches!(
            apply_answer(Some(&stored), "", &own, 0, false),
            Applied::Apart(_)
        ));
        assert_eq!(
            apply_answer(
                Some(&stored),
                "",
                &Answer::Exhausted { available: 0 },
                0,
                false
            ),
            Applied::Unchanged
        );
        let mut live = lease("a", 100, 100);
        live.mark_renewing(0);
        let Applied::Stored(topped) =
            apply_answer(Some(&live), "a", &granted("a", 150, 90_000), 0, false)
        else {
            panic!()
        };
        assert_eq!(
            (topped.granted, topped.renewing_until_ms),
            (150, RENEWAL_MARK_MS),
            "topped up, the mark still the marked asker's"
        );
    }

    /// One step of a random run against a lease.
    #[derive(Debug, Clone)]
    enum Step {
        Hold(u64),
        Settle(usize, u64),
        Grant(u64),
        Replace(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..2_000u64).prop_map(Step::Hold),
            (0..64usize, prop_oneof![0..3_000u64, Just(u64::MAX)])
                .prop_map(|(i, c)| Step::Settle(i, c)),
            (0..5_000u64).prop_map(Step::Grant),
            (0..5_000u64).prop_map(Step::Replace),
        ]
    }

    proptest! {
        /// Whatever the order of holds, settlements, top-ups and replacements, open holds
        /// on the current lease never pass what it was granted, and a settlement of a hold
        /// taken on a replaced lease leaves the current lease as it was.
        #[test]
        fn never_held_past_granted(steps in proptest::collection::vec(step(), 1..80)) {
            let mut current = lease("l0", 1_000, 0);
            let mut generation = 0u32;
            let mut open: Vec<(String, u64)> = Vec::new();
            for s in steps {
                match s {
                    Step::Hold(amount) => {
                        if current.try_hold(amount, 0, false).is_ok() {
                            open.push((current.lease_id.clone(), amount));
                        }
                    }
                    Step::Settle(i, cost) => {
                        if open.is_empty() { continue; }
                        let (id, held) = open.remove(i % open.len());
                        let before = current.clone();
                        let changed = current.settle(&id, held, cost);
                        prop_assert_eq!(changed, id == before.lease_id);
                        if !changed { prop_assert_eq!(&current, &before); }
                    }
                    Step::Grant(more) => {
                        let answer = granted(&current.lease_id, current.granted.saturating_add(more), 60_000);
                        let id = current.lease_id.clone();
                        if let Applied::Stored(l) = apply_answer(Some(&current), &id, &answer, 0, true) {
                            current = l;
                        }
                    }
                    Step::Replace(total) => {
                        generation += 1;
                        let answer = granted(&format!("l{generation}"), total, 60_000);
                        let id = current.lease_id.clone();
                        if let Applied::Stored(l) = apply_answer(Some(&current), &id, &answer, 0, true) {
                            current = l;
                        }
                    }
                }
                let open_here: u64 = open
                    .iter()
                    .filter(|(id, _)| *id == current.lease_id)
                    .map(|(_, h)| *h)
                    .sum();
                prop_assert!(open_here <= current.charged);
                prop_assert!(open_here <= current.granted, "holds past the grant: {:?}", current);
            }
        }
    }
}
