//! Whether a virtual key may call a model: the decision, apart from how its facts are fetched.

use crate::refusal::Refusal;

/// The state of a virtual key as the control plane knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// No key has this hash.
    Unknown,
    /// Usable.
    Active,
    /// Revoked by an operator.
    Revoked,
}

/// Decides a call to `model` with a key in `state` that may use `allowed_models`
/// (empty: all), given whether any provider serves `model`.
///
/// The order matters: an unknown or revoked key learns nothing about which models exist.
pub fn decide(
    state: KeyState,
    allowed_models: &[String],
    model: &str,
    model_is_served: bool,
) -> Result<(), Refusal> {
    match state {
        KeyState::Unknown => Err(Refusal::UnknownKey),
        KeyState::Revoked => Err(Refusal::RevokedKey),
        KeyState::Active
            if !allowed_models.is_empty() && !allowed_models.iter().any(|m| m == model) =>
        {
            Err(Refusal::ModelNotAllowed {
                model: model.to_owned(),
            })
        }
        KeyState::Active if !model_is_served => Err(Refusal::ModelNotFound {
            model: model.to_owned(),
        }),
        KeyState::Active => Ok(()),
    }
}

/// Key hashes recently found unknown, so a client retrying an invented key costs no
/// control-plane call each time. Bounded in size and age: the oldest entry goes first,
/// and an entry expires so a key created meanwhile works within `ttl_ms`. The default
/// remembers nothing.
#[derive(Debug, Default)]
pub struct UnknownKeys {
    capacity: usize,
    ttl_ms: u64,
    order: std::collections::VecDeque<(String, u64)>,
    seen: std::collections::HashMap<String, u64>,
}

impl UnknownKeys {
    /// At most `capacity` hashes, each remembered for `ttl_ms`.
    pub fn new(capacity: usize, ttl_ms: u64) -> Self {
        Self {
            capacity,
            ttl_ms,
            order: std::collections::VecDeque::new(),
            seen: std::collections::HashMap::new(),
        }
    }

    /// Remembers that `key_hash` was unknown at `now_ms`.
    pub fn insert(&mut self, key_hash: &str, now_ms: u64) {
        if self.capacity == 0 {
            return;
        }
        if self.order.len() >= self.capacity
            && let Some((old, at)) = self.order.pop_front()
            // Only forget it if this was its latest sighting.
            && self.seen.get(&old) == Some(&at)
        {
            self.seen.remove(&old);
        }
        self.order.push_back((key_hash.to_owned(), now_ms));
        self.seen.insert(key_hash.to_owned(), now_ms);
    }

    /// Whether `key_hash` was found unknown less than `ttl_ms` ago.
    pub fn contains(&self, key_hash: &str, now_ms: u64) -> bool {
        self.seen
            .get(key_hash)
            .is_some_and(|at| now_ms.saturating_sub(*at) < self.ttl_ms)
    }
}

#[cfg(test)]
mod unknown_keys_tests {
    use super::UnknownKeys;

    #[test]
    fn remembers_for_ttl_only() {
        let mut u = UnknownKeys::new(10, 1000);
        u.insert("a", 5_000);
        assert!(u.contains("a", 5_999));
        assert!(!u.contains("a", 6_000));
        assert!(!u.contains("b", 5_000));
    }

    #[test]
    fn bounded_oldest_first() {
        let mut u = UnknownKeys::new(2, 1000);
        u.insert("a", 0);
        u.insert("b", 1);
        u.insert("c", 2);
        assert!(!u.contains("a", 3));
        assert!(u.contains("b", 3) && u.contains("c", 3));
        assert!(u.seen.len() <= 2 && u.order.len() <= 2);
    }

    #[test]
    fn re_sighting_survives_eviction_of_its_older_entry() {
        let mut u = UnknownKeys::new(2, 1000);
        u.insert("a", 0);
        u.insert("a", 5);
        u.insert("b", 6); // evicts ("a", 0), which is not a's latest
        assert!(u.contains("a", 7));
    }

    #[test]
    fn capacity_zero_remembers_nothing() {
        let mut u = UnknownKeys::new(0, 1000);
        u.insert("x", 0);
        u.insert("y", 1);
        assert!(!u.contains("x", 1) && !u.contains("y", 1));
        assert!(u.seen.is_empty() && u.order.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn active_key_any_model() {
        assert!(decide(KeyState::Active, &[], "gpt-4o", true).is_ok());
    }

    #[test]
    fn allow_list_is_enforced() {
        let allowed = models(&["gpt-4o-mini"]);
        assert!(decide(KeyState::Active, &allowed, "gpt-4o-mini", true).is_ok());
        let e = decide(KeyState::Active, &allowed, "gpt-4o", true).unwrap_err();
        assert_eq!(
            e,
            Refusal::ModelNotAllowed {
                model: "gpt-4o".into()
            }
        );
    }

    #[test]
    fn unknown_and_revoked_are_401_before_model_checks() {
        for state in [KeyState::Unknown, KeyState::Revoked] {
            let e = decide(state, &models(&["x"]), "not-served", false).unwrap_err();
            assert_eq!(e.status(), 401);
        }
    }

    #[test]
    fn unserved_model_is_404() {
        let e = decide(KeyState::Active, &[], "nope", false).unwrap_err();
        assert_eq!(e.status(), 404);
        assert_eq!(e.code(), "model_not_found");
    }
}
