//! Request ids: unique across workers and restarts, without a host call per request.

use std::cell::Cell;

/// A per-VM random prefix and a counter: 64 random bits make VMs collide with negligible
/// odds, and the counter makes ids within a VM distinct.
pub struct RequestIds {
    prefix: u64,
    next: Cell<u64>,
}

impl Default for RequestIds {
    fn default() -> Self {
        let mut bytes = [0u8; 8];
        if getrandom::fill(&mut bytes).is_err() {
            // Without randomness, the start time still tells VMs apart in practice.
            bytes = crate::clock::now_ms().to_le_bytes();
        }
        Self {
            prefix: u64::from_le_bytes(bytes),
            next: Cell::new(0),
        }
    }
}

impl RequestIds {
    /// The next id: 32 lower-case hex digits.
    pub fn next(&self) -> String {
        let n = self.next.get();
        self.next.set(n.wrapping_add(1));
        format!("{:016x}{n:016x}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_32_hex() {
        let ids = RequestIds {
            prefix: 0xabc,
            next: Cell::new(0),
        };
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
}
