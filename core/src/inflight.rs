//! The bytes a worker's VM holds for calls in flight, bounded so that no mix of requests
//! can run it out of memory (V8 caps a VM's memory, and a VM out of memory traps).
//!
//! A call holds the bytes of its request body while the body is read and checked, and a
//! fixed charge for its metering state for as long as it lasts; a call that would pass the
//! bound is refused (503) before the VM copies its body.

/// A per-VM account of held bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InflightBytes {
    held: usize,
    limit: usize,
}

impl InflightBytes {
    /// An empty account that lets at most `limit` bytes be held at once.
    pub fn new(limit: usize) -> Self {
        Self { held: 0, limit }
    }

    /// Moves a call's holding from `from` to `to` bytes; `false` (and no change) when
    /// growing it would pass the bound. Shrinking always succeeds.
    pub fn adjust(&mut self, from: usize, to: usize) -> bool {
        let others = self.held.saturating_sub(from);
        if to > from && others.saturating_add(to) > self.limit {
            return false;
        }
        self.held = others.saturating_add(to);
        true
    }

    /// Bytes held now, by all calls.
    pub fn held(&self) -> usize {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn growth_past_the_bound_is_refused_and_changes_nothing() {
        let mut a = InflightBytes::new(100);
        assert!(a.adjust(0, 60));
        assert!(!a.adjust(0, 41), "60 + 41 > 100");
        assert_eq!(a.held(), 60);
        assert!(a.adjust(0, 40));
        assert_eq!(a.held(), 100);
        assert!(a.adjust(60, 10), "shrinking always succeeds");
        assert_eq!(a.held(), 50);
        assert!(a.adjust(40, 0) && a.adjust(10, 0));
        assert_eq!(a.held(), 0);
    }

    proptest! {
        /// Whatever calls do, the account never passes its bound and returns to zero.
        #[test]
        fn never_past_the_bound(limit in 0usize..1000, wants in prop::collection::vec(0usize..400, 1..40)) {
            let mut a = InflightBytes::new(limit);
            let mut holdings = vec![0usize; wants.len()];
            for (i, want) in wants.iter().enumerate() {
                if a.adjust(holdings[i], *want) {
                    holdings[i] = *want;
                }
                prop_assert!(a.held() <= limit);
                prop_assert_eq!(a.held(), holdings.iter().sum::<usize>());
            }
            for h in holdings.iter_mut() {
                prop_assert!(a.adjust(*h, 0));
                *h = 0;
            }
            prop_assert_eq!(a.held(), 0);
        }
    }
}
