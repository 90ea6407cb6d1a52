//! Rate-limit shares as values: the subjects and measures a `LeaseShare` names, what one
//! ask does to a subject's pool and to the holder's lease, and when an expired lease's
//! share may go back. The store applies these decisions ([`crate::store`]); this module
//! needs no database.

use crate::store::Limits;
use std::fmt;
use tollgate_core::limits::{Measure, SLOT_MS, SLOTS};

/// A subject whose per-minute limits are leased in shares, as `ShareRequest.subject`
/// writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareSubject {
    /// `key:<id>`: a key's own limits.
    Key(String),
    /// `user:<name>`: the limits every key of a user shares.
    User(String),
    /// `key_model:<key id>:<model>`: a key's limits for one model.
    KeyModel {
        /// The key.
        key_id: String,
        /// The model (may itself hold `:`).
        model: String,
    },
}

impl ShareSubject {
    /// Reads `key:<id>`, `user:<name>` or `key_model:<id>:<model>`, every part non-empty;
    /// `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let filled = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
        // `key_model:` first: it does not start with `key:`, but reads clearer this way.
        if let Some(rest) = text.strip_prefix("key_model:") {
            let (key_id, model) = rest.split_once(':')?;
            return Some(Self::KeyModel {
                key_id: filled(key_id)?,
                model: filled(model)?,
            });
        }
        if let Some(id) = text.strip_prefix("key:") {
            return filled(id).filter(|id| !id.contains(':')).map(Self::Key);
        }
        text.strip_prefix("user:").and_then(filled).map(Self::User)
    }
}

impl fmt::Display for ShareSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(id) => write!(f, "key:{id}"),
            Self::User(name) => write!(f, "user:{name}"),
            Self::KeyModel { key_id, model } => write!(f, "key_model:{key_id}:{model}"),
        }
    }
}

/// The measure named `requests` or `tokens` (`Measure::name`), or `None`.
pub fn measure_named(name: &str) -> Option<Measure> {
    [Measure::Requests, Measure::Tokens]
        .into_iter()
        .find(|m| m.name() == name)
}

/// The per-minute limit `limits` set for `measure`; `None`: unlimited.
pub fn per_minute(measure: Measure, limits: Limits) -> Option<u64> {
    match measure {
        Measure::Requests => limits.requests_per_minute.map(u64::from),
        Measure::Tokens => limits.tokens_per_minute,
    }
}

/// How long a take stays in a holder's sliding window: every slot it keeps, the oldest
/// counted whole (61 s).
pub const WINDOW_SPAN_MS: i64 = SLOTS as i64 * SLOT_MS as i64;

/// Leases that expired before this instant may give their share back at `now_ms`: what
/// their holder admitted up to its expiry has left its window, even with its clock
/// `clock_skew_ms` behind the control plane's.
pub fn reclaim_cutoff_ms(now_ms: i64, clock_skew_ms: i64) -> i64 {
    now_ms
        .saturating_sub(WINDOW_SPAN_MS)
        .saturating_sub(clock_skew_ms)
}

/// What a holder asks of a pool, in units per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareAsk {
    /// Would like added to its share.
    pub want: u64,
    /// The least that serves the call waiting (0: renewing or releasing).
    pub need: u64,
    /// Of its share, no longer drawn on: taken off before anything is added.
    pub release: u64,
}

/// Whether an ask added to the share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// This many units were added (0 for a renewal or release).
    Granted(u64),
    /// Less than `need` is unassigned, or the limit is 0: nothing was added.
    Exhausted,
}

/// An ask's effect on a pool and on the holder's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareDecision {
    /// Whether anything was added.
    pub grant: Grant,
    /// Taken off the lease (never more than it held).
    pub released: u64,
    /// The pool's assigned units after the ask.
    pub assigned: u64,
    /// The lease's share after the ask.
    pub share: u64,
    /// Units of the limit no lease holds after the ask.
    pub available: u64,
}

/// Applies `ask` to a pool of `limit` with `assigned` units leased, of which the asking
/// holder's live lease holds `share`: the release first (never below zero), then a grant
/// between `need` and `want` of what is unassigned, or nothing. After an operator lowered
/// the limit under `assigned`, nothing is unassigned until releases and reclaims bring it
/// under; a limit of 0 refuses every ask, renewals included, so the holder learns it.
pub fn decide(limit: u64, assigned: u64, share: u64, ask: ShareAsk) -> ShareDecision {
    let released = ask.release.min(share);
    let share = share - released;
    let assigned = assigned.saturating_sub(released);
    let available = limit.saturating_sub(assigned);
    if limit == 0 || available < ask.need {
        return ShareDecision {
            grant: Grant::Exhausted,
            released,
            assigned,
            share,
            available,
        };
    }
    let granted = ask.want.min(available);
    // granted <= limit - assigned: the sum stays within the limit.
    let assigned = assigned.saturating_add(granted);
    ShareDecision {
        grant: Grant::Granted(granted),
        released,
        assigned,
        share: share.saturating_add(granted),
        available: limit.saturating_sub(assigned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(want: u64, need: u64, release: u64) -> ShareAsk {
        ShareAsk {
            want,
            need,
            release,
        }
    }

    #[test]
    fn subjects_round_trip_and_refuse_others() {
        for text in [
            "key:key_1",
            "user:alice",
            "key_model:key_1:gpt-4o",
            "key_model:k:a:b",
        ] {
            let subject = ShareSubject::parse(text).unwrap();
            assert_eq!(subject.to_string(), text);
        }
        assert_eq!(
            ShareSubject::parse("key_model:k:org/model:latest"),
            Some(ShareSubject::KeyModel {
                key_id: "k".into(),
                model: "org/model:latest".into()
            })
        );
        for bad in [
            "",
            "key:",
            "user:",
            "team:ml",
            "key_model:k",
            "key_model::m",
            "key_model:k:",
            "key:a:b",
            "KEY:k",
            "keyk",
        ] {
            assert_eq!(ShareSubject::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn measures_are_named_as_in_the_filter() {
        assert_eq!(measure_named("requests"), Some(Measure::Requests));
        assert_eq!(measure_named("tokens"), Some(Measure::Tokens));
        assert_eq!(measure_named("Requests"), None);
        assert_eq!(measure_named(""), None);
    }

    #[test]
    fn a_limit_is_read_for_its_measure() {
        let limits = Limits {
            requests_per_minute: Some(7),
            tokens_per_minute: None,
        };
        assert_eq!(per_minute(Measure::Requests, limits), Some(7));
        assert_eq!(per_minute(Measure::Tokens, limits), None);
    }

    #[test]
    fn grants_lie_between_need_and_want_or_are_nothing() {
        let d = decide(100, 30, 0, ask(50, 10, 0));
        assert_eq!(d.grant, Grant::Granted(50));
        assert_eq!((d.assigned, d.share, d.available), (80, 50, 20));
        let d = decide(100, 80, 0, ask(50, 10, 0));
        assert_eq!(d.grant, Grant::Granted(20), "what is left, at least need");
        assert_eq!((d.assigned, d.available), (100, 0));
        let d = decide(100, 95, 0, ask(50, 10, 0));
        assert_eq!(d.grant, Grant::Exhausted);
        assert_eq!((d.assigned, d.share, d.available), (95, 0, 5));
        let renewal = decide(100, 100, 40, ask(10, 0, 0));
        assert_eq!(renewal.grant, Grant::Granted(0), "a renewal needs nothing");
        assert_eq!(renewal.share, 40);
    }

    #[test]
    fn releases_apply_first_and_never_go_below_zero() {
        // The release frees room the same ask is then granted from.
        let d = decide(100, 100, 40, ask(30, 20, 25));
        assert_eq!(d.released, 25);
        assert_eq!(d.grant, Grant::Granted(25));
        assert_eq!((d.assigned, d.share), (100, 40));
        // A release past the share takes only the share.
        let d = decide(100, 60, 10, ask(0, 0, 1_000));
        assert_eq!((d.released, d.share, d.assigned), (10, 0, 50));
        // A release is applied even when the ask is refused.
        let d = decide(100, 100, 10, ask(50, 50, 5));
        assert_eq!(d.grant, Grant::Exhausted);
        assert_eq!(
            (d.released, d.share, d.assigned, d.available),
            (5, 5, 95, 5)
        );
        // A pool whose count lags (never expected) still never goes below zero.
        let d = decide(100, 3, 10, ask(0, 0, 10));
        assert_eq!((d.released, d.assigned), (10, 0));
    }

    #[test]
    fn a_lowered_limit_grants_nothing_until_assigned_falls_under_it() {
        let d = decide(50, 80, 20, ask(5, 1, 0));
        assert_eq!(d.grant, Grant::Exhausted);
        assert_eq!(d.available, 0);
        let d = decide(50, 80, 20, ask(5, 0, 0));
        assert_eq!(d.grant, Grant::Granted(0));
        // Releasing 20 brings it to 60: still over.
        let d = decide(50, 80, 20, ask(5, 1, 20));
        assert_eq!((d.grant, d.assigned), (Grant::Exhausted, 60));
        // Once under, the room is granted again.
        let d = decide(50, 47, 0, ask(5, 1, 0));
        assert_eq!((d.grant, d.assigned), (Grant::Granted(3), 50));
    }

    #[test]
    fn a_limit_of_zero_refuses_every_ask() {
        for a in [ask(1, 1, 0), ask(0, 0, 0), ask(5, 0, 3)] {
            assert_eq!(decide(0, 0, 0, a).grant, Grant::Exhausted, "{a:?}");
        }
    }

    #[test]
    fn nothing_overflows_on_huge_numbers() {
        let d = decide(u64::MAX, u64::MAX - 1, 0, ask(u64::MAX, u64::MAX, u64::MAX));
        assert_eq!(d.grant, Grant::Exhausted);
        let d = decide(u64::MAX, 0, u64::MAX, ask(u64::MAX, 1, 0));
        assert_eq!(d.grant, Grant::Granted(u64::MAX));
        assert_eq!(d.share, u64::MAX, "saturates");
    }

    #[test]
    fn reclaim_waits_a_window_and_the_skew_after_expiry() {
        assert_eq!(WINDOW_SPAN_MS, 61_000);
        assert_eq!(reclaim_cutoff_ms(1_000_000, 5_000), 1_000_000 - 66_000);
        assert_eq!(reclaim_cutoff_ms(i64::MIN + 5, 5_000), i64::MIN);
    }
}
