//! What budget leases (`budget`) and rate-limit shares (`limits`) have in common: the
//! Envoy's holder id the control plane leases to, and the entries a worker's calls drew on
//! recently, which its root context renews (or gives back) on its tick.

use crate::cache;
use crate::host::Host;
use std::collections::BTreeMap;

/// Shared-data key of this Envoy's holder id (random, kept while the Envoy runs).
const HOLDER_KEY: &str = "tg:v1:holder";

/// Entries one worker tends at most: past it, newly seen ones are only leased on need.
pub const SEEN_KEPT: usize = 4096;

/// This Envoy's holder id: random, made by the first worker that needs it and kept in
/// shared data for all of them; `None` when it can be neither read nor made.
pub fn holder(host: &impl Host) -> Option<String> {
    let read = || {
        let (bytes, _) = host.shared_data(HOLDER_KEY).ok()?;
        String::from_utf8(bytes?).ok().filter(|id| !id.is_empty())
    };
    if let Some(id) = read() {
        return Some(id);
    }
    let mut fresh = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut fresh) {
        log::error!("tollgate: no randomness for a holder id: {e}");
        return None;
    }
    let fresh = format!("envoy-{}", hex::encode(fresh));
    // Only the first writer's id stands; the others read it back.
    let written = cache::update(host, HOLDER_KEY, |current| {
        current
            .is_none_or(<[u8]>::is_empty)
            .then(|| fresh.clone().into_bytes())
    });
    if let Err(e) = written {
        log::warn!("tollgate: holder id not stored: {e:?}");
        return None;
    }
    read()
}

/// The leased entries a worker's calls drew on recently, by id, each with what the root
/// context needs to tend it (a budget, a rate limit).
#[derive(Debug)]
pub struct Seen<T> {
    entries: BTreeMap<String, (T, u64)>,
}

impl<T> Default for Seen<T> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
        }
    }
}

impl<T: Clone + PartialEq> Seen<T> {
    /// Notes that a call drew on entry `id`, described by `value`, at `now_ms`.
    pub fn note(&mut self, id: &str, value: &T, now_ms: u64) {
        if let Some((kept, at)) = self.entries.get_mut(id) {
            // Called for every call: copy the value only when it changed.
            if kept != value {
                kept.clone_from(value);
            }
            *at = now_ms;
        } else if self.entries.len() < SEEN_KEPT {
            self.entries.insert(id.to_owned(), (value.clone(), now_ms));
        }
    }

    /// The entries drawn on in the last `for_ms`; older ones are forgotten.
    pub fn recent(&mut self, now_ms: u64, for_ms: u64) -> Vec<T> {
        self.entries
            .retain(|_, (_, at)| now_ms.saturating_sub(*at) < for_ms);
        self.entries.values().map(|(v, _)| v.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mock::MockHost;

    #[test]
    fn the_holder_id_is_made_once_and_shared() {
        let worker_a = MockHost::new();
        let worker_b = worker_a.worker();
        let a = holder(&worker_a).unwrap();
        assert!(a.starts_with("envoy-") && a.len() == 38, "{a}");
        assert_eq!(holder(&worker_b), Some(a));
        assert_ne!(holder(&MockHost::new()), holder(&worker_b), "per Envoy");
    }

    #[test]
    fn seen_entries_are_forgotten_when_not_drawn_on() {
        let mut seen = Seen::default();
        seen.note("a", &1, 0);
        seen.note("b", &2, 5_000);
        seen.note("a", &3, 1_000);
        assert_eq!(seen.recent(10_999, 10_000), [3, 2]);
        assert_eq!(seen.recent(11_000, 10_000), [2]);
    }
}
