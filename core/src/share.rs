//! Rate limits shared across Envoys: one Envoy's leased share of a per-minute limit, and
//! the sliding window its workers count takes in, kept together as one [`Allowance`].
//!
//! The control plane keeps, per limited subject and measure, the limit `L` and the shares
//! it leased (`LeaseShare`); their sum never passes `L`. An Envoy admits a take only while
//! its lease is live and its own window, with the take, holds no more than its share `S`.
//! Every window being within its Envoy's share, and the shares within the limit, no minute
//! admits more than `L` across all Envoys.
//!
//! Share and window are one value so that a take, a release and an answer are each one
//! compare-and-swap of one shared-data entry: a release can never go below what the window
//! counts. Answers add their grant to the share as a delta, and a release is taken off
//! locally before the control plane hears of it, so answers applied in any order (or lost)
//! never leave the local share above the control plane's count of it.

use crate::budget::{LEASE_SHARE, RENEW_AHEAD_MS, claim_mark};
use crate::limits::{self, Decision, Quota, Window};

/// An entry a worker's calls took from in this long is in use: its share keeps a spare
/// part of the limit and is renewed ahead of need; past it the spare goes back.
pub const IN_USE_FOR_MS: u64 = 10_000;

/// How long the control plane's word that a limit's pool was exhausted holds: calls that
/// lack more than it had left are refused without asking again meanwhile, so a burst of
/// refusals is not a burst of `LeaseShare` calls.
pub const EXHAUSTED_FOR_MS: u64 = 1_000;

/// How long a call refused because other Envoys hold the limit is told to wait: shares
/// move when those Envoys give idle share back, which they do on their ticks.
pub const SHARE_MOVES_MS: u64 = 1_000;

/// The layout version byte of [`Allowance::to_bytes`].
const LAYOUT: u8 = 4;

/// Bytes of the fixed part of an encoded allowance: version, window, eleven u64s.
const FIXED_LEN: usize = 1 + limits::ENCODED_LEN + 11 * 8;

/// One Envoy's share of one (subject, measure) limit and the window its workers took from
/// it, as kept in shared data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowance {
    /// What the Envoy's workers took in the last minute.
    pub window: Window,
    /// The control plane's id of the lease; empty: none.
    pub lease_id: String,
    /// Units per minute the lease holds, as far as this Envoy knows (never more than the
    /// control plane counts).
    pub share: u64,
    /// Until when takes may draw on the share (Unix ms, the control plane's clock).
    pub expires_at_ms: u64,
    /// The limit per minute, as the last take or answer knew it.
    pub limit: u64,
    /// Units no lease held when the control plane last answered (plus what this Envoy
    /// released since): what other Envoys leave, for the `remaining` headers.
    pub available: u64,
    /// The most this Envoy's share could grow to when the control plane last answered: the
    /// lease's share there plus what no lease held, i.e. the limit less what other Envoys
    /// hold. Taken from one answer, so it is right however answers and deltas interleave.
    pub reachable: u64,
    /// When the control plane last answered that the pool was exhausted (Unix ms); 0: not
    /// since it last granted.
    pub exhausted_at_ms: u64,
    /// When a take was last admitted (Unix ms).
    pub used_at_ms: u64,
    /// A `LeaseShare` call about this lease is in flight until then (see
    /// [`claim_mark`]); 0: none.
    pub marked_until_ms: u64,
    /// `LeaseShare` calls dispatched about this lease by any worker: a renewal's answer
    /// is exact only when none was dispatched after it.
    pub asks: u64,
    /// When the last `LeaseShare` call about this lease was dispatched (Unix ms).
    pub asked_at_ms: u64,
    /// Units this Envoy released off the lease whose answers it has not heard: the
    /// control plane may apply such a release after any later answer (the call timed out
    /// here, not there), so a [sync](Allowance::sync) leaves them off its count.
    pub releasing: u64,
}

/// What a take from an [`Allowance`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Admitted, or refused without asking the control plane (past the limit itself, or
    /// the pool recently found exhausted).
    Decided(Decision),
    /// The share lacks `need` units (or the lease is not live): the control plane must be
    /// asked before the take can fit.
    Lacks {
        /// The least more share that fits the take.
        need: u64,
    },
}

/// What the control plane answered to a `LeaseShare` call, in plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `granted` units were added to lease `lease_id` (0 for a renewal or a release), or
    /// (`exhausted`) less than the need was unassigned: nothing was added, but a release
    /// was applied and the lease extended all the same.
    Lease {
        /// The lease's id.
        lease_id: String,
        /// Units added.
        granted: u64,
        /// Until when the lease may be drawn on (Unix ms).
        expires_at_ms: u64,
        /// The limit per minute now.
        limit: u64,
        /// Units of the limit no lease holds after this answer.
        available: u64,
        /// The lease's share after this answer, as the control plane counts it.
        share: u64,
        /// The pool could not serve the need.
        exhausted: bool,
    },
    /// The subject has no such limit any more.
    Unlimited,
}

impl Answer {
    /// How long before `now_ms` the lease this answer grants or extends had expired (by
    /// this clock): the control plane's clock is behind this one by more than a share
    /// lives, so no share it grants can ever be drawn on. `None` for a live lease or none.
    pub fn lapsed_on_arrival(&self, now_ms: u64) -> Option<u64> {
        match self {
            Self::Lease {
                lease_id,
                expires_at_ms,
                ..
            } if !lease_id.is_empty() && *expires_at_ms <= now_ms => Some(now_ms - *expires_at_ms),
            _ => None,
        }
    }
}

/// What the renewal pass does for one allowance (see [`Allowance::tend`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tending {
    /// Gives `units` of idle share back; already taken off the local share.
    Release {
        /// Units released.
        units: u64,
    },
    /// Renews the lease ahead of need, asking `want` more (0: only extend it).
    Renew {
        /// Units asked.
        want: u64,
    },
}

/// What a call asks for when its take lacks `need`: at least that, and a twentieth of
/// the limit, so the next calls need no round trip (small limits lease exactly the need).
pub fn want(need: u64, limit: u64) -> u64 {
    need.max(limit / LEASE_SHARE).max(1)
}

impl Allowance {
    /// Whether takes may draw on the share at `now_ms`: a lease, not expired.
    pub fn live(&self, now_ms: u64) -> bool {
        !self.lease_id.is_empty() && now_ms < self.expires_at_ms
    }

    /// The share takes may draw on at `now_ms`: none once the lease lapsed.
    fn live_share(&self, now_ms: u64) -> u64 {
        if self.live(now_ms) { self.share } else { 0 }
    }

    /// The share the control plane still holds for this Envoy at `now_ms`, live or not: the
    /// holder's next ask revives a lapsed lease with its share until it is reclaimed,
    /// which waits until what was admitted under it left every window. Asking for the
    /// window's whole count on top of it would ask for those takes twice.
    fn held_share(&self, now_ms: u64) -> u64 {
        let reclaimable_at = self
            .expires_at_ms
            .saturating_add((limits::SLOTS as u64).saturating_mul(limits::SLOT_MS));
        if !self.lease_id.is_empty() && now_ms < reclaimable_at {
            self.share
        } else {
            0
        }
    }

    /// Takes `amount` at `now_ms` against the limit `limit` per minute (the key's grant's
    /// word), within the share. A take past the limit itself is refused as a window of its
    /// own would refuse it; one that only lacks share is told what it lacks, unless the
    /// control plane recently said the pool cannot serve it.
    pub fn take(&mut self, limit: u64, amount: u64, now_ms: u64) -> Take {
        self.limit = limit;
        let alone = self.window.peek(limit, amount, now_ms);
        if let Decision::Refuse { .. } = alone {
            return Take::Decided(alone);
        }
        let share = self.live_share(now_ms);
        if let Decision::Admit(_) = self.window.take(share.min(limit), amount, now_ms) {
            self.used_at_ms = self.used_at_ms.max(now_ms);
            return Take::Decided(Decision::Admit(self.quota(now_ms)));
        }
        let count = self.window.count(now_ms);
        let need = count
            .saturating_add(amount)
            .saturating_sub(self.held_share(now_ms))
            .max(1);
        if self.exhausted_for(need, now_ms) {
            return Take::Decided(self.exhausted(amount, now_ms));
        }
        Take::Lacks { need }
    }

    /// What a take of one would decide at `now_ms`, changing nothing; a take that only
    /// lacks share is admitted here (the take itself will ask).
    pub fn peek(&self, limit: u64, now_ms: u64) -> Decision {
        match self.clone().take(limit, 1, now_ms) {
            Take::Decided(decision) => decision,
            Take::Lacks { .. } => Decision::Admit(self.quota(now_ms)),
        }
    }

    /// Whether the control plane said less than `need` was unassigned within the last
    /// [`EXHAUSTED_FOR_MS`].
    fn exhausted_for(&self, need: u64, now_ms: u64) -> bool {
        self.exhausted_at_ms != 0
            && now_ms.saturating_sub(self.exhausted_at_ms) < EXHAUSTED_FOR_MS
            && need > self.available
    }

    /// The refusal of a take of `amount` the pool cannot serve: it may fit once this
    /// Envoy's own takes leave its window, when they are what is in the way (the share and
    /// what is unassigned would hold it then), or else once other Envoys give share back.
    pub fn exhausted(&self, amount: u64, now_ms: u64) -> Decision {
        let reachable = self.reachable.min(self.limit);
        let retry_after_ms = match self.window.peek(reachable, amount, now_ms) {
            Decision::Refuse { retry_after_ms, .. } if amount <= reachable => retry_after_ms,
            _ => SHARE_MOVES_MS,
        };
        // Refused, what is left is only what this Envoy holds unused and what nobody
        // holds: share granted for calls still waiting is theirs, not the client's.
        let window = self.window.peek(self.limit, 0, now_ms).quota();
        let unused = self
            .live_share(now_ms)
            .saturating_sub(self.window.count(now_ms))
            .saturating_add(self.available);
        Decision::Refuse {
            quota: Quota {
                remaining: unused.min(window.remaining),
                ..window
            },
            retry_after_ms,
        }
    }

    /// Where the limit stands at `now_ms` for the `x-ratelimit-*` headers: what this
    /// Envoy's share could grow to less what its window holds, capped to what the limit
    /// leaves this window. Exact with one Envoy (nothing is leased to others); across
    /// several an estimate, since others' windows are not seen. Not the local share plus
    /// `available`: grants arrive as deltas in any order, so those two may come from
    /// different answers and undercount.
    pub fn quota(&self, now_ms: u64) -> Quota {
        let window = self.window.peek(self.limit, 0, now_ms).quota();
        let count = self.window.count(now_ms);
        let within = if self.live(now_ms) {
            self.reachable.saturating_sub(count)
        } else {
            self.available.saturating_sub(count)
        };
        Quota {
            remaining: within.min(window.remaining),
            ..window
        }
    }

    /// Settles a take of `held` at `taken_at_ms` to `actual`, as [`Window::settle`].
    pub fn settle(&mut self, taken_at_ms: u64, held: u64, actual: u64, now_ms: u64) -> bool {
        self.window.settle(taken_at_ms, held, actual, now_ms)
    }

    /// Takes the mark for a call that must ask at `now_ms`, if no other call or renewal
    /// holds it: the holder asks for a twentieth of the limit, the others only for their
    /// need, so calls short at once do not each lease a spare part.
    pub fn claim_ask(&mut self, now_ms: u64) -> bool {
        claim_mark(&mut self.marked_until_ms, now_ms)
    }

    /// Frees the mark of a call that asked holding it and will hear no answer (it left
    /// while it waited), so renewals and the next spare ask need not wait for it to
    /// lapse. The mark only spares the control plane calls; freeing one another worker
    /// took after a lapse costs at most one more call. Returns whether it was set.
    pub fn free_mark(&mut self) -> bool {
        let was = self.marked_until_ms != 0;
        self.marked_until_ms = 0;
        was
    }

    /// The renewal pass at `now_ms`: gives back the share beyond what the window holds
    /// and a spare twentieth of the limit (none once idle for [`IN_USE_FOR_MS`]) once it
    /// passes that by half a spare part, or renews a lease in use that runs low on time or
    /// share (under half a spare part left), or an idle one near expiry whose share still
    /// backs what the window counts. Marks the allowance when it
    /// acts, so one worker at a time does; a release comes off the share here, before the
    /// control plane hears of it.
    pub fn tend(&mut self, now_ms: u64) -> Option<Tending> {
        if !self.live(now_ms) || self.marked_until_ms > now_ms {
            return None;
        }
        let in_use = now_ms.saturating_sub(self.used_at_ms) < IN_USE_FOR_MS;
        let spare = if in_use { self.limit / LEASE_SHARE } else { 0 };
        let count = self.window.count(now_ms);
        let target = count.saturating_add(spare);
        let ending = self.expires_at_ms.saturating_sub(now_ms) < RENEW_AHEAD_MS;
        // Half a spare part of slack either way, so a busy share whose settlements free
        // a few units does not go back and forth to the control plane on every tick.
        let tending = if self.share > target.saturating_add(spare / 2) {
            let units = self.share - target;
            self.share = target;
            self.available = self.available.saturating_add(units);
            self.releasing = self.releasing.saturating_add(units);
            Tending::Release { units }
        } else if in_use && (ending || self.share.saturating_sub(count) < spare / 2) {
            // Within the slack the share may sit above its target: ask for nothing then.
            Tending::Renew {
                want: target.saturating_sub(self.share),
            }
        } else if ending && self.share > 0 {
            // Idle, the share still backs takes the window counts. Lapsed, it would stay
            // assigned until reclaim (expiry, a minute and the skew), refusing this
            // Envoy's next calls long after its window drained; live, it goes back as
            // the window drains.
            Tending::Renew { want: 0 }
        } else {
            return None;
        };
        claim_mark(&mut self.marked_until_ms, now_ms);
        Some(tending)
    }

    /// Applies the answer to a `LeaseShare` call at `now_ms`; `marked`: its asker held the
    /// mark, which is freed. A grant of the stored lease adds to the share and can only
    /// extend it; one of another lease is adopted when the stored one is gone or lapsed,
    /// or expires before it (its successor), else it is a stale answer and ignored.
    /// Returns whether anything changed.
    pub fn apply(&mut self, answer: &Answer, now_ms: u64, marked: bool) -> bool {
        let before = self.clone();
        if marked {
            self.marked_until_ms = 0;
        }
        if let Answer::Lease {
            lease_id,
            granted,
            expires_at_ms,
            limit,
            available,
            share,
            exhausted,
        } = answer
        {
            let same = !lease_id.is_empty() && *lease_id == self.lease_id;
            // The control plane opens a holder's next lease only once the last one expired
            // by its clock, so a lease expiring later than the stored one is its successor
            // (a clock behind still has the stored one live); an earlier one is stale.
            let successor = *expires_at_ms > self.expires_at_ms;
            let adopt = !same && !lease_id.is_empty() && (!self.live(now_ms) || successor);
            if same {
                self.share = self.share.saturating_add(*granted);
                self.expires_at_ms = self.expires_at_ms.max(*expires_at_ms);
            } else if adopt {
                self.lease_id.clone_from(lease_id);
                self.share = *granted;
                self.expires_at_ms = *expires_at_ms;
                // Releases named the old lease: the control plane applies none to this one.
                self.releasing = 0;
            }
            if same || adopt || *exhausted {
                self.limit = *limit;
                self.available = *available;
                self.reachable = share.saturating_add(*available);
                self.exhausted_at_ms = if *exhausted { now_ms.max(1) } else { 0 };
            }
        }
        *self != before
    }

    /// Notes a `LeaseShare` call about this lease dispatched at `now_ms`; returns its
    /// number, for [`Allowance::sync`].
    pub fn note_ask(&mut self, now_ms: u64) -> u64 {
        self.asks = self.asks.wrapping_add(1);
        self.asked_at_ms = self.asked_at_ms.max(now_ms);
        self.asks
    }

    /// Whether no `LeaseShare` call was dispatched in the `answer_within_ms` (the call
    /// timeout) before `now_ms`: each earlier one was answered, or never will be.
    pub fn quiet(&self, now_ms: u64, answer_within_ms: u64) -> bool {
        self.asks == 0 || now_ms.saturating_sub(self.asked_at_ms) > answer_within_ms
    }

    /// Takes the lease's share from the answer to ask number `ask`, dispatched when the
    /// allowance was [`quiet`](Allowance::quiet), if no call was dispatched since: the
    /// control plane's count then covers every grant and release this Envoy will ever
    /// hear of, and also those whose answers were lost (a call that left while it waited,
    /// a failed call the control plane served). Without this, a lost grant stays leased
    /// to this Envoy, unused, for as long as it keeps renewing the lease. Releases not
    /// heard of stay off it: one that timed out here may still reach the control plane
    /// after this answer, and taken back by the sync it would leave this Envoy drawing on
    /// share the control plane grants to others. Returns whether the share changed.
    pub fn sync(&mut self, answer: &Answer, ask: u64) -> bool {
        let Answer::Lease {
            lease_id, share, ..
        } = answer
        else {
            return false;
        };
        if self.asks != ask || lease_id.is_empty() || *lease_id != self.lease_id {
            return false;
        }
        let synced = share.saturating_sub(self.releasing);
        let changed = self.share != synced;
        self.share = synced;
        changed
    }

    /// Notes that the control plane answered a release of `units` off lease `lease_id`
    /// (applied, or not because that lease was gone): it can no longer come off the count
    /// later. A release of an earlier lease is not this one's. Returns whether anything
    /// changed.
    pub fn heard_release(&mut self, lease_id: &str, units: u64) -> bool {
        if lease_id != self.lease_id {
            return false;
        }
        let before = self.releasing;
        self.releasing = self.releasing.saturating_sub(units);
        self.releasing != before
    }

    /// The fixed-layout bytes kept in shared data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + self.lease_id.len());
        out.push(LAYOUT);
        out.extend_from_slice(&self.window.to_bytes());
        for n in [
            self.share,
            self.expires_at_ms,
            self.limit,
            self.available,
            self.reachable,
            self.exhausted_at_ms,
            self.used_at_ms,
            self.marked_until_ms,
            self.asks,
            self.asked_at_ms,
            self.releasing,
        ] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out.extend_from_slice(self.lease_id.as_bytes());
        out
    }

    /// Reads [`Allowance::to_bytes`]; `None` for bytes of another shape.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (fixed, id) = bytes.split_at_checked(FIXED_LEN)?;
        let (version, rest) = fixed.split_first()?;
        if *version != LAYOUT {
            return None;
        }
        let (window, numbers) = rest.split_at_checked(limits::ENCODED_LEN)?;
        let mut n = numbers
            .chunks_exact(8)
            .map(|c| c.try_into().map(u64::from_be_bytes));
        let mut next = || n.next()?.ok();
        Some(Self {
            window: Window::from_bytes(window)?,
            share: next()?,
            expires_at_ms: next()?,
            limit: next()?,
            available: next()?,
            reachable: next()?,
            exhausted_at_ms: next()?,
            used_at_ms: next()?,
            marked_until_ms: next()?,
            asks: next()?,
            asked_at_ms: next()?,
            releasing: next()?,
            lease_id: String::from_utf8(id.to_vec()).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn granted(lease_id: &str, granted: u64, expires_at_ms: u64, available: u64) -> Answer {
        Answer::Lease {
            lease_id: lease_id.into(),
            granted,
            expires_at_ms,
            limit: 100,
            available,
            share: granted,
            exhausted: false,
        }
    }

    /// The pool is exhausted; this Envoy's lease holds `share` of it.
    fn exhausted(share: u64, available: u64) -> Answer {
        Answer::Lease {
            lease_id: "l1".into(),
            granted: 0,
            expires_at_ms: 60_000,
            limit: 100,
            available,
            share,
            exhausted: true,
        }
    }

    /// An allowance of lease `l1` with `share` of a limit of 100, the rest unassigned.
    fn leased(share: u64) -> Allowance {
        let mut a = Allowance::default();
        assert!(a.apply(&granted("l1", share, 60_000, 100 - share), 0, false));
        a
    }

    fn admitted(t: Take) -> bool {
        matches!(t, Take::Decided(Decision::Admit(_)))
    }

    #[test]
    fn takes_fit_within_the_share_and_a_take_past_it_lacks_what_is_missing() {
        let mut a = leased(3);
        for _ in 0..3 {
            assert!(admitted(a.take(100, 1, 1_000)));
        }
        assert_eq!(a.take(100, 1, 1_000), Take::Lacks { need: 1 });
        assert_eq!(a.take(100, 5, 1_000), Take::Lacks { need: 5 });
        assert_eq!(
            a.window.count(1_000),
            3,
            "a take that lacks share takes nothing"
        );
    }

    #[test]
    fn without_a_live_lease_a_take_lacks_what_the_lapsed_share_does_not_cover() {
        let mut a = leased(3);
        assert!(admitted(a.take(100, 3, 1_000)));
        // Lapsed at 60 s: the window holds 3, the lapsed share covers them.
        assert_eq!(a.take(100, 2, 60_000), Take::Lacks { need: 2 }, "expired");
        // Reclaimable 61 s after the expiry, when no take under it is in the window.
        assert_eq!(a.take(100, 2, 121_000), Take::Lacks { need: 2 });
        assert_eq!(
            Allowance::default().take(100, 2, 0),
            Take::Lacks { need: 2 }
        );
    }

    /// An Envoy took 6 of 10 per minute; its lease lapsed (the control plane was
    /// unreachable past the expiry). Its next ask revives the lease, which still holds
    /// those 6: it asks for 1, not for 7 on top of them, which a pool with 4 unassigned
    /// refused until the reclaim a minute later.
    #[test]
    fn a_lapsed_lease_asks_only_past_the_share_it_still_holds() {
        let mut a = Allowance::default();
        assert!(a.apply(&granted("l1", 6, 30_000, 4), 0, false));
        for _ in 0..6 {
            assert!(admitted(a.take(10, 1, 1_000)));
        }
        let back = 35_000;
        assert!(!a.live(back));
        assert_eq!(a.take(10, 1, back), Take::Lacks { need: 1 });
        assert_eq!(
            a.window.count(back),
            6,
            "a take that lacks share takes nothing"
        );
        // The control plane revives l1 with the 1 asked: the take fits.
        assert!(a.apply(&granted("l1", 1, back + 30_000, 3), back, false));
        assert_eq!((a.share, a.expires_at_ms), (7, back + 30_000));
        assert!(admitted(a.take(10, 1, back)));
        assert_eq!(a.take(10, 1, back), Take::Lacks { need: 1 });
    }

    #[test]
    fn past_the_limit_itself_is_refused_at_once_with_the_windows_retry() {
        let mut a = leased(100);
        assert!(admitted(a.take(10, 10, 5_500)));
        let Take::Decided(Decision::Refuse {
            retry_after_ms,
            quota,
        }) = a.take(10, 1, 6_000)
        else {
            panic!("refused without asking")
        };
        assert_eq!((retry_after_ms, quota.remaining), (60_000, 0));
        assert!(matches!(
            Allowance::default().take(10, 11, 0),
            Take::Decided(Decision::Refuse { .. })
        ));
    }

    #[test]
    fn remaining_is_the_share_left_plus_the_unassigned_capped_to_the_limit() {
        // One Envoy: everything not leased to it is unassigned, so remaining is exact.
        let mut a = leased(5);
        let Take::Decided(Decision::Admit(q)) = a.take(100, 2, 0) else {
            panic!()
        };
        assert_eq!((q.limit, q.remaining), (100, 98));
        // Another Envoy holds 50: this one could grow its share by the 45 unassigned.
        a.reachable = 5 + 45;
        assert_eq!(a.quota(0).remaining, 3 + 45);
    }

    #[test]
    fn remaining_follows_the_newest_answer_whatever_order_grants_arrive_in() {
        // Two grants of one Envoy's lease of 10; the second answer arrives first.
        let mut a = Allowance::default();
        let grant = |granted, share| Answer::Lease {
            lease_id: "l1".into(),
            granted,
            expires_at_ms: 60_000,
            limit: 10,
            available: 10 - share,
            share,
            exhausted: false,
        };
        a.apply(&grant(1, 2), 0, false);
        assert!(admitted(a.take(10, 1, 0)));
        // The local share (1) lags the control plane's (2), yet nothing is leased to
        // anyone else: 9 are left, not 1 + 8 unassigned = 9 only by chance of order.
        assert_eq!(a.quota(0).remaining, 9);
        a.apply(&grant(1, 1), 0, false);
        assert!(admitted(a.take(10, 1, 0)));
        assert_eq!(a.quota(0).remaining, 8);
    }

    #[test]
    fn a_refused_take_reports_only_the_unused_share_and_the_unassigned_left() {
        // 3 of a share of 5 taken; 2 more were granted for calls still waiting, so the
        // pool is exhausted: what this refusal says is left is the 2 unused, not 10 - 3.
        let mut a = leased(5);
        assert!(admitted(a.take(100, 3, 0)));
        assert!(a.apply(&exhausted(5, 0), 0, true));
        a.limit = 10;
        let Take::Decided(Decision::Refuse { quota, .. }) = a.take(10, 3, 0) else {
            panic!("the memo refuses")
        };
        assert_eq!(quota.remaining, 2);
    }

    #[test]
    fn a_recent_exhausted_answer_refuses_what_it_could_not_serve_without_asking() {
        let mut a = leased(2);
        assert!(admitted(a.take(100, 2, 10_000)));
        assert!(a.apply(&exhausted(2, 1), 10_100, true));
        let Take::Decided(Decision::Refuse { retry_after_ms, .. }) = a.take(100, 2, 10_200) else {
            panic!("memo refuses")
        };
        // Share 2 and 1 unassigned would hold 2 more once this Envoy's 2 leave its window:
        // they sit in slot 10, counted until slot 71 begins.
        assert_eq!(retry_after_ms, 71_000 - 10_200);
        assert_eq!(
            a.take(100, 1, 10_200),
            Take::Lacks { need: 1 },
            "1 was left"
        );
        assert_eq!(
            a.take(100, 2, 11_100),
            Take::Lacks { need: 2 },
            "a second later, ask again"
        );
    }

    #[test]
    fn an_exhausted_pool_held_by_others_is_retried_after_a_tick() {
        let a = Allowance {
            limit: 100,
            ..Allowance::default()
        };
        assert_eq!(
            a.exhausted(5, 0),
            Decision::Refuse {
                quota: Quota {
                    limit: 100,
                    remaining: 0,
                    reset_ms: 0
                },
                retry_after_ms: SHARE_MOVES_MS,
            }
        );
    }

    #[test]
    fn answers_of_the_lease_add_and_extend_and_others_replace_only_a_lapsed_lease() {
        let mut a = leased(10);
        assert!(a.apply(&granted("l1", 5, 50_000, 0), 0, false));
        assert_eq!(
            (a.share, a.expires_at_ms),
            (15, 60_000),
            "expiry only grows"
        );
        // An older lease's answer, late: its expiry is before the stored lease's.
        assert!(
            !a.apply(&granted("l0", 50, 40_000, 0), 1_000, false),
            "stale"
        );
        assert_eq!(a.lease_id, "l1");
        assert!(a.apply(&granted("l2", 50, 90_000, 0), 60_000, false));
        assert_eq!(
            (a.lease_id.as_str(), a.share, a.expires_at_ms),
            ("l2", 50, 90_000)
        );
        assert!(!a.apply(&Answer::Unlimited, 0, false));
    }

    #[test]
    fn a_successor_lease_is_adopted_while_a_clock_behind_still_has_the_old_one_live() {
        // This Envoy's clock is 2 s behind the control plane's: at its 59 s the control
        // plane (at 61 s) found l1 expired and opened l2 for the waiting call. Ignored as
        // stale, l2's 5 would stay assigned, unused, for as long as l2 is renewed: the
        // next answer of l2 would be adopted with its own grant alone.
        let mut a = leased(10);
        assert!(a.apply(&granted("l2", 5, 91_000, 0), 59_000, true));
        assert_eq!(
            (a.lease_id.as_str(), a.share, a.expires_at_ms),
            ("l2", 5, 91_000)
        );
        assert!(a.apply(&granted("l2", 1, 91_500, 0), 59_500, false));
        assert_eq!(a.share, 6, "the successor's grants add up");
        assert!(
            !a.apply(&granted("l1", 3, 60_000, 0), 59_600, false),
            "a late answer of the old lease is stale"
        );
        assert_eq!((a.lease_id.as_str(), a.share), ("l2", 6));
    }

    #[test]
    fn the_mark_lets_one_asker_at_a_time_and_an_answer_frees_it() {
        let mut a = leased(1);
        assert!(a.claim_ask(0));
        assert!(!a.claim_ask(10));
        a.apply(&granted("l1", 1, 60_000, 0), 20, true);
        assert!(a.claim_ask(30));
        assert!(
            a.claim_ask(30 + crate::budget::RENEWAL_MARK_MS),
            "a lost answer lapses"
        );
    }

    #[test]
    fn the_want_is_the_need_or_a_twentieth_of_the_limit() {
        assert_eq!(want(1, 10), 1, "small limits lease exactly the need");
        assert_eq!(want(3, 1_000), 50);
        assert_eq!(want(70, 1_000), 70);
        assert_eq!(want(0, 0), 1);
    }

    #[test]
    fn an_idle_share_goes_back_down_to_what_the_window_holds() {
        let mut a = leased(50);
        assert!(admitted(a.take(100, 10, 1_000)));
        // In use: a spare twentieth (5) is kept beyond the 10 counted.
        assert_eq!(a.tend(2_000), Some(Tending::Release { units: 35 }));
        assert_eq!((a.share, a.available), (15, 85));
        assert_eq!(a.tend(2_000), None, "marked");
        a.marked_until_ms = 0;
        assert_eq!(
            a.tend(1_000 + IN_USE_FOR_MS),
            Some(Tending::Release { units: 5 })
        );
        a.marked_until_ms = 0;
        assert_eq!(a.tend(62_000), None, "lapsed at 60 s");
    }

    #[test]
    fn a_busy_share_keeps_half_a_spare_part_of_slack_before_it_goes_back() {
        let mut a = leased(17);
        assert!(admitted(a.take(100, 10, 1_000)));
        // 10 counted, 5 spare: 17 is within half a spare part (2) of the 15.
        assert_eq!(a.tend(2_000), None);
        a.share = 18;
        assert_eq!(a.tend(2_000), Some(Tending::Release { units: 3 }));
        assert_eq!(a.share, 15);
    }

    #[test]
    fn a_lease_in_use_is_renewed_ahead_of_its_expiry_or_when_low() {
        let mut a = leased(15);
        assert!(admitted(a.take(100, 10, 1_000)));
        assert_eq!(a.tend(2_000), None, "5 spare kept, far from expiry");
        let mut idle = a.clone();
        assert_eq!(
            idle.tend(55_000),
            Some(Tending::Release { units: 5 }),
            "idle near expiry: no renewal, the spare goes back"
        );
        a.used_at_ms = 51_000;
        assert_eq!(a.tend(51_000), Some(Tending::Renew { want: 0 }));
        let mut low = leased(12);
        assert!(admitted(low.take(100, 11, 1_000)));
        assert_eq!(low.tend(1_000), Some(Tending::Renew { want: 4 }));
    }

    #[test]
    fn a_busy_share_within_its_slack_renews_near_expiry_asking_nothing_more() {
        // 10 counted, 5 spare: a share of 17 sits within the slack above its target of 15,
        // so it is kept; near expiry it is renewed, and asks for nothing (not 15 - 17).
        let mut a = leased(17);
        assert!(admitted(a.take(100, 10, 51_000)));
        assert_eq!(a.tend(51_000), Some(Tending::Renew { want: 0 }));
    }

    #[test]
    fn an_idle_share_still_backing_counted_takes_is_renewed_so_it_can_go_back() {
        // 10 taken, then idle: the share comes down to the 10 counted, which the control
        // plane can have back only while the lease lives (else after expiry, a minute and
        // the skew). So the lease is renewed ahead of expiry while its share backs takes.
        let mut a = leased(10);
        assert!(admitted(a.take(100, 10, 1_000)));
        assert_eq!(a.tend(55_000), Some(Tending::Renew { want: 0 }));
        a.marked_until_ms = 0;
        a.expires_at_ms = 90_000;
        assert_eq!(
            a.tend(62_000),
            Some(Tending::Release { units: 10 }),
            "gone from the window"
        );
        a.marked_until_ms = 0;
        a.expires_at_ms = 70_000;
        assert_eq!(a.tend(62_000), None, "nothing held: free to lapse");
    }

    #[test]
    fn a_sync_leaves_off_a_release_the_control_plane_may_still_apply() {
        // Found by the model: 2 leased, 1 released at 0 (its call timed out here, the
        // control plane has not handled it), then at 5 s a quiet renewal asking 1 more is
        // answered first: the control plane counts 3, and applies the release after, to
        // 2. Synced to 3, this Envoy would draw on 1 the control plane may grant elsewhere.
        let mut a = leased(2);
        a.share = 1;
        a.releasing = 1;
        a.note_ask(0);
        assert!(a.quiet(5_000, 2_000));
        let ask = a.note_ask(5_000);
        let renewed = Answer::Lease {
            lease_id: "l1".into(),
            granted: 1,
            expires_at_ms: 65_000,
            limit: 100,
            available: 97,
            share: 3,
            exhausted: false,
        };
        assert!(a.apply(&renewed, 5_000, true));
        assert_eq!(a.share, 2);
        assert!(
            !a.sync(&renewed, ask),
            "the control plane's 3 less the 1 on its way"
        );
        assert_eq!(a.share, 2);
        assert!(a.heard_release("l1", 1));
        assert_eq!(a.releasing, 0, "answered: it can no longer come off later");
        assert!(!a.heard_release("l0", 1), "a release of another lease");
    }

    #[test]
    fn a_release_is_counted_until_heard_and_forgotten_with_its_lease() {
        let mut a = leased(50);
        assert!(admitted(a.take(100, 10, 1_000)));
        assert_eq!(a.tend(2_000), Some(Tending::Release { units: 35 }));
        assert_eq!(a.releasing, 35);
        assert!(a.apply(&granted("l2", 4, 120_000, 0), 61_000, true));
        assert_eq!(
            a.releasing, 0,
            "the next lease owes nothing to l1's releases"
        );
    }

    #[test]
    fn bytes_round_trip_and_other_shapes_are_refused() {
        let mut a = leased(7);
        a.take(100, 3, 4_000);
        a.exhausted_at_ms = 9;
        a.marked_until_ms = 11;
        assert_eq!(Allowance::from_bytes(&a.to_bytes()), Some(a.clone()));
        let mut other = a.to_bytes();
        other[0] = LAYOUT + 1;
        assert_eq!(Allowance::from_bytes(&other), None);
        assert_eq!(Allowance::from_bytes(&a.to_bytes()[..FIXED_LEN - 1]), None);
        assert_eq!(
            Allowance::from_bytes(&a.window.to_bytes()),
            None,
            "a bare window"
        );
    }

    /// One thing that may happen to an allowance and the control plane leasing it.
    #[derive(Debug, Clone)]
    enum Op {
        /// A take of an amount, after some ms.
        Take(u64, u64),
        /// A settlement of the n-th admitted take to a fraction (in %) of its hold.
        Settle(usize, u64),
        /// The renewal pass, after some ms.
        Tend(u64),
        /// The clock moves on by some ms: leases lapse, and are reclaimed a window later.
        Wait(u64),
        /// The control plane handles the n-th message in flight to it.
        Deliver(usize),
        /// The n-th answer in flight reaches the filter (any order; past the call timeout
        /// the call has failed and the answer is dropped).
        Answer(usize),
        /// The n-th answer is lost: its call left while it waited (and frees the mark it
        /// held), or the call failed after the control plane served it.
        Lose(usize),
        /// Other Envoys lease (true) or give back some of the pool.
        Others(u64, bool),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![
                4 => (0u64..3_000, 1u64..30).prop_map(|(t, a)| Op::Take(t, a)),
                1 => (0usize..50, 0u64..=100).prop_map(|(i, p)| Op::Settle(i, p)),
                3 => (0u64..6_000).prop_map(Op::Tend),
                1 => (0u64..40_000).prop_map(Op::Wait),
                3 => (0usize..50).prop_map(Op::Deliver),
                3 => (0usize..50).prop_map(Op::Answer),
                1 => (0usize..50).prop_map(Op::Lose),
                1 => (0u64..50, any::<bool>()).prop_map(|(n, t)| Op::Others(n, t)),
            ],
            1..400,
        )
    }

    /// The control plane's lease of this Envoy.
    #[derive(Debug)]
    struct CpLease {
        id: String,
        share: u64,
        expires_at_ms: u64,
    }

    /// A model of the control plane's pool of `limit`: this Envoy's lease (one at a time,
    /// revived by its next ask while not reclaimed) and what other Envoys hold.
    #[derive(Debug)]
    struct ControlPlane {
        limit: u64,
        ttl_ms: u64,
        others: u64,
        lease: Option<CpLease>,
        opened: u64,
    }

    /// What the filter sends: an ask of (need, want), or a release of units off a named
    /// lease.
    #[derive(Debug, Clone)]
    enum Ask {
        Share { need: u64, want: u64 },
        Release { units: u64, lease_id: String },
    }

    /// A `LeaseShare` call in flight: what it asks, when it was dispatched, the number a
    /// renewal's answer may sync on, whether its asker holds the mark, and whether a
    /// waiting call (not the tick) asked.
    #[derive(Debug, Clone)]
    struct Call {
        ask: Ask,
        sent_at_ms: u64,
        sync: Option<u64>,
        marked: bool,
        waiting: bool,
    }

    impl ControlPlane {
        fn assigned(&self) -> u64 {
            self.others + self.lease.as_ref().map_or(0, |l| l.share)
        }

        /// The sweeper: a lease goes back once what was admitted under it left every
        /// window (no clock skew here).
        fn reclaim(&mut self, now_ms: u64) {
            if self
                .lease
                .as_ref()
                .is_some_and(|l| l.expires_at_ms.saturating_add(61_000) < now_ms)
            {
                self.lease = None;
            }
        }

        fn others(&mut self, units: u64, take: bool) {
            if take {
                self.others += units.min(self.limit.saturating_sub(self.assigned()));
            } else {
                self.others -= units.min(self.others);
            }
        }

        /// Handles one call at `now_ms`: the release (only off the lease it names), then a
        /// grant between need and want of what is unassigned, or nothing; the lease is
        /// extended (revived when lapsed) or opened.
        fn handle(&mut self, ask: &Ask, now_ms: u64) -> Answer {
            let (need, want, release) = match ask {
                Ask::Share { need, want } => (*need, *want, 0),
                Ask::Release { units, lease_id } => {
                    let named = self.lease.as_ref().is_some_and(|l| l.id == *lease_id);
                    (0, 0, if named { *units } else { 0 })
                }
            };
            let held = self.lease.as_ref().map_or(0, |l| l.share);
            let released = release.min(held);
            let assigned = self.assigned() - released;
            let available = self.limit.saturating_sub(assigned);
            let exhausted = available < need;
            let granted = if exhausted { 0 } else { want.min(available) };
            let share = held - released + granted;
            let renewed_until = now_ms + self.ttl_ms;
            let (lease_id, expires_at_ms) = match &mut self.lease {
                Some(lease) => {
                    lease.share = share;
                    lease.expires_at_ms = lease.expires_at_ms.max(renewed_until);
                    (lease.id.clone(), lease.expires_at_ms)
                }
                None if share > 0 => {
                    self.opened += 1;
                    let id = format!("l{}", self.opened);
                    self.lease = Some(CpLease {
                        id: id.clone(),
                        share,
                        expires_at_ms: renewed_until,
                    });
                    (id, renewed_until)
                }
                None => (String::new(), 0),
            };
            Answer::Lease {
                lease_id,
                granted,
                expires_at_ms,
                limit: self.limit,
                available: self.limit.saturating_sub(self.assigned()),
                share,
                exhausted,
            }
        }
    }

    /// The filter's timeout on a `LeaseShare` call in the model.
    const CALL_TIMEOUT_MS: u64 = 2_000;

    proptest! {
        /// Takes, honest settlements, renewals (syncing when quiet), named releases and
        /// answers in any order (some lost, some past the call timeout), against a control
        /// plane that revives a lapsed lease, reclaims it a window after expiry and opens
        /// the next, while other Envoys lease from the same pool and the clock runs past
        /// short leases: the window never counts more than the share after a take admits,
        /// nor ever more than the control plane holds for this Envoy; a live local lease
        /// is the control plane's and its share never passes the control plane's count;
        /// the pool never assigns past the limit.
        #[test]
        fn the_window_stays_within_the_share_and_the_share_within_the_control_planes(
            limit in 1u64..200, ttl_ms in 3_000u64..20_000, ops in ops(),
        ) {
            let mut a = Allowance::default();
            let mut cp = ControlPlane { limit, ttl_ms, others: 0, lease: None, opened: 0 };
            let mut to_cp: Vec<Call> = Vec::new();
            let mut answers: Vec<(Answer, Call)> = Vec::new();
            let mut takes: Vec<(u64, u64)> = Vec::new();
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Take(dt, amount) => {
                        now += dt;
                        cp.reclaim(now);
                        match a.take(limit, amount, now) {
                            Take::Decided(Decision::Admit(_)) => {
                                takes.push((now, amount));
                                prop_assert!(a.window.count(now) <= a.share, "{a:?}");
                            }
                            Take::Decided(Decision::Refuse { .. }) => {}
                            Take::Lacks { need } => {
                                let marked = a.claim_ask(now);
                                a.note_ask(now);
                                let want = if marked { want(need, limit) } else { need };
                                to_cp.push(Call {
                                    ask: Ask::Share { need, want },
                                    sent_at_ms: now,
                                    sync: None,
                                    marked,
                                    waiting: true,
                                });
                            }
                        }
                    }
                    Op::Settle(i, percent) => {
                        if !takes.is_empty() {
                            let (at, held) = takes.swap_remove(i % takes.len());
                            a.settle(at, held, held * percent / 100, now);
                        }
                    }
                    Op::Tend(dt) => {
                        now += dt;
                        cp.reclaim(now);
                        let count = a.window.count(now);
                        let before = a.share;
                        if let Some(t) = a.tend(now) {
                            let quiet = a.quiet(now, CALL_TIMEOUT_MS);
                            let number = a.note_ask(now);
                            let ask = match t {
                                Tending::Release { units } => {
                                    prop_assert_eq!(a.share, before - units);
                                    prop_assert!(a.share >= count, "{a:?}");
                                    Ask::Release { units, lease_id: a.lease_id.clone() }
                                }
                                Tending::Renew { want } => Ask::Share { need: 0, want },
                            };
                            to_cp.push(Call {
                                ask,
                                sent_at_ms: now,
                                sync: quiet.then_some(number),
                                marked: true,
                                waiting: false,
                            });
                        }
                    }
                    Op::Wait(dt) => {
                        now += dt;
                        cp.reclaim(now);
                    }
                    Op::Deliver(i) => {
                        if !to_cp.is_empty() {
                            let call = to_cp.swap_remove(i % to_cp.len());
                            answers.push((cp.handle(&call.ask, now), call));
                        }
                    }
                    Op::Answer(i) => {
                        if !answers.is_empty() {
                            let (answer, call) = answers.swap_remove(i % answers.len());
                            if now - call.sent_at_ms <= CALL_TIMEOUT_MS {
                                a.apply(&answer, now, call.marked);
                                if let Ask::Release { units, lease_id } = &call.ask {
                                    a.heard_release(lease_id, *units);
                                }
                                if let Some(ask) = call.sync {
                                    a.sync(&answer, ask);
                                }
                                prop_assert_eq!(answer.lapsed_on_arrival(now), None);
                            }
                        }
                    }
                    Op::Lose(i) => {
                        if !answers.is_empty() {
                            let (_, call) = answers.swap_remove(i % answers.len());
                            if call.waiting && call.marked {
                                a.free_mark();
                            }
                        }
                    }
                    Op::Others(units, take) => cp.others(units, take),
                }
                let cp_share = cp.lease.as_ref().map_or(0, |l| l.share);
                prop_assert!(cp.assigned() <= cp.limit, "{cp:?}");
                prop_assert!(
                    a.window.count(now) <= cp_share,
                    "window {} past what the control plane holds: {a:?} {cp:?}",
                    a.window.count(now)
                );
                if let Some(lease) = cp.lease.as_ref().filter(|l| l.id == a.lease_id) {
                    prop_assert!(
                        a.share <= lease.share,
                        "local {} > control plane {}: {a:?} {cp:?}", a.share, lease.share
                    );
                } else {
                    prop_assert!(!a.live(now), "live without the control plane's lease: {a:?} {cp:?}");
                }
            }
        }

        /// Whatever the share, the takes, their age and the lease's time left, the
        /// renewal pass asks for no more than brings the share to what the window holds
        /// and a spare part, and gives back only share the window does not hold.
        #[test]
        fn the_renewal_pass_asks_at_most_its_target_and_releases_only_unheld_share(
            limit in 1u64..400, taken in 0u64..400, above_permille in 0u64..150,
            below in 0u64..3, idle_ms in 0u64..20_000, left_ms in 1u64..40_000,
        ) {
            let taken = taken.min(limit);
            // Around what the window holds and a spare part, where the pass decides.
            let share = (taken + limit * above_permille / 1_000).saturating_sub(below);
            let mut a = Allowance::default();
            a.apply(&Answer::Lease {
                lease_id: "l1".into(),
                granted: limit,
                expires_at_ms: u64::MAX,
                limit,
                available: 0,
                share: limit,
                exhausted: false,
            }, 0, false);
            prop_assert!(admitted(a.take(limit, taken, 1_000)) || taken == 0);
            let now = 1_000 + idle_ms;
            a.share = share;
            a.expires_at_ms = now + left_ms;
            let count = a.window.count(now);
            match a.tend(now) {
                Some(Tending::Renew { want }) => {
                    let room = count.saturating_add(limit / LEASE_SHARE).saturating_sub(share);
                    prop_assert!(want <= room, "want {want} past the room {room} (share {share}, count {count})");
                    prop_assert_eq!(a.share, share);
                }
                Some(Tending::Release { units }) => {
                    prop_assert_eq!(a.share, share - units);
                    prop_assert!(a.share >= count);
                }
                None => prop_assert_eq!(a.share, share),
            }
        }

        #[test]
        fn a_take_is_never_admitted_past_the_limit_in_any_minute(
            share in 0u64..40, limit in 0u64..40,
            times in prop::collection::vec(0u64..3_000, 1..200),
        ) {
            let mut a = Allowance::default();
            a.apply(&granted("l1", share, u64::MAX, 0), 0, false);
            let mut now = 0;
            let mut admits = Vec::new();
            for dt in times {
                now += dt;
                if admitted(a.take(limit, 1, now)) {
                    admits.push(now);
                }
            }
            let cap = share.min(limit) as usize;
            for (i, start) in admits.iter().enumerate() {
                let in_minute = admits[i..].iter().take_while(|t| **t < start + limits::WINDOW_MS).count();
                prop_assert!(in_minute <= cap, "{in_minute} admits from {start}");
            }
        }
    }
}
