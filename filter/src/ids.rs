//! Request ids: unguessable, unique across workers and restarts, without a host call per request.

use sha2::{Digest, Sha256};
use std::cell::Cell;

/// Each id is SHA-256 of a secret per-VM seed and a counter, cut to 128 bits: the counter
/// keeps ids within a VM distinct, the 256-bit random seed keeps VMs apart, and no id
/// tells anything about another (no shared prefix, no counter to read or step).
pub struct RequestIds {
    seed: [u8; 32],
    next: Cell<u64>,
}

/// A zero seed, for `Plugin::default()` only: `on_configure` replaces it with a random one
/// before any request, or fails plugin start.
impl Default for RequestIds {
    fn default() -> Self {
        Self::from_seed([0; 32])
    }
}

impl RequestIds {
    /// Ids seeded once from the host's randomness (WASI `random_get`).
    pub fn from_os_random() -> Result<Self, getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)?;
        Ok(Self::from_seed(seed))
    }

    fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            seed,
            next: Cell::new(0),
        }
    }

    /// The next id: 32 lower-case hex digits.
    pub fn next(&self) -> String {
        let n = self.next.get();
        self.next.set(n.wrapping_add(1));
        let digest = Sha256::new()
            .chain_update(self.seed)
            .chain_update(n.to_le_bytes())
            .finalize();
        hex::encode(&digest[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_32_hex_distinct_and_show_no_counter() {
        let ids = RequestIds::from_os_random().unwrap();
        let all: Vec<String> = (0..10_000).map(|_| ids.next()).collect();
        assert!(all.iter().all(|id| {
            id.len() == 32
                && id
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        }));
        let prefixes: HashSet<&str> = all.iter().map(|id| &id[..12]).collect();
        let suffixes: HashSet<&str> = all.iter().map(|id| &id[20..]).collect();
        assert_eq!((prefixes.len(), suffixes.len()), (all.len(), all.len()));
        let mut numbers: Vec<u128> = all
            .iter()
            .map(|id| u128::from_str_radix(id, 16).unwrap())
            .collect();
        numbers.sort_unstable();
        let closest = numbers.windows(2).map(|w| w[1] - w[0]).min().unwrap();
        assert!(closest > 1 << 64, "two ids are {closest} apart");
    }

    #[test]
    fn vms_with_other_seeds_make_other_ids() {
        let a = RequestIds::from_seed([1; 32]);
        let b = RequestIds::from_seed([2; 32]);
        let from_a: HashSet<String> = (0..1000).map(|_| a.next()).collect();
        assert!((0..1000).all(|_| !from_a.contains(&b.next())));
    }
}
