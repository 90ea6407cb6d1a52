//! Request rate limits: the math, with the clock passed in.
//!
//! The promise is "never more than `limit` admits in any 60 s window". A GCRA or token
//! bucket with a burst of `limit` cannot keep it (after a full burst it refills one request
//! per `60 s / limit`, so a window can hold nearly twice the limit), so the state is a
//! sliding window over one-second slots: the admits of the last [`SLOTS`] seconds,
//! counted per second. A call is admitted when the slots, which cover at least the last
//! 60 s, hold fewer than `limit` admits; counting the oldest slot whole makes the window
//! up to one second longer than a minute, never shorter. The state is a small fixed-size
//! value ([`Window::to_bytes`]) so a filter can keep it in Envoy's shared data and update
//! it by compare-and-swap.

use std::time::Duration;

/// The window a per-minute limit counts over.
pub const WINDOW_MS: u64 = 60_000;

/// The width of one counting slot.
pub const SLOT_MS: u64 = 1_000;

/// Slots kept: a minute's worth, plus the partial one the oldest admit may sit in.
pub const SLOTS: usize = 61;

/// Bytes of an encoded [`Window`]: the newest slot's index, then one count per slot.
pub const ENCODED_LEN: usize = 8 + 4 * SLOTS;

/// The admits of the last [`SLOTS`] seconds of one limited subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Index (`ms / SLOT_MS`) of the newest slot counted.
    newest: u64,
    /// Admits per slot; slot `s` lives at `s % SLOTS`.
    counts: [u32; SLOTS],
}

impl Default for Window {
    fn default() -> Self {
        Self {
            newest: 0,
            counts: [0; SLOTS],
        }
    }
}

/// What taking one request from a limit decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The request is admitted.
    Admit(Quota),
    /// The request is refused; it may succeed after `retry_after_ms`.
    Refuse {
        /// Where the limit stands (nothing remaining).
        quota: Quota,
        /// How long until one request is free again.
        retry_after_ms: u64,
    },
}

/// Where a limit stands after a decision: what OpenAI's `x-ratelimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// The limit per minute.
    pub limit: u32,
    /// Requests still allowed now.
    pub remaining: u32,
    /// Time until every request of the limit is free again.
    pub reset_ms: u64,
}

impl Decision {
    /// The quota, admitted or not.
    pub fn quota(&self) -> Quota {
        match self {
            Decision::Admit(q) | Decision::Refuse { quota: q, .. } => *q,
        }
    }
}

impl Window {
    /// Takes one request at `now_ms` against `limit` per minute: the decision, and the
    /// state to store (changed only when admitted, or when old slots were dropped).
    /// A clock that steps back counts as standing still, so it never frees requests.
    pub fn take(&mut self, limit: u32, now_ms: u64) -> Decision {
        let now_slot = (now_ms / SLOT_MS).max(self.newest);
        self.advance(now_slot);
        let used = self.used();
        if used < limit {
            if let Some(count) = self.counts.get_mut(slot_index(now_slot)) {
                *count = count.saturating_add(1);
            }
            let quota = self.quota(limit, now_ms, now_slot);
            return Decision::Admit(quota);
        }
        let quota = self.quota(limit, now_ms, now_slot);
        // A request is free again when enough of the oldest admits leave the window.
        let excess = used.saturating_sub(limit).saturating_add(1);
        let retry_after_ms = if limit == 0 {
            WINDOW_MS
        } else {
            self.leaves_after(excess, now_ms, now_slot)
        };
        Decision::Refuse {
            quota,
            retry_after_ms,
        }
    }

    /// Drops the slots that are no longer in the window ending at `now_slot`.
    fn advance(&mut self, now_slot: u64) {
        let gap = now_slot.saturating_sub(self.newest);
        if gap >= SLOTS as u64 {
            self.counts = [0; SLOTS];
        } else {
            for s in 1..=gap {
                if let Some(count) = self
                    .counts
                    .get_mut(slot_index(self.newest.saturating_add(s)))
                {
                    *count = 0;
                }
            }
        }
        self.newest = now_slot;
    }

    /// Admits counted in the window.
    fn used(&self) -> u32 {
        self.counts.iter().fold(0u32, |a, c| a.saturating_add(*c))
    }

    /// The quota as of `now_ms`, once `now_slot` is the newest slot.
    fn quota(&self, limit: u32, now_ms: u64, now_slot: u64) -> Quota {
        let used = self.used();
        Quota {
            limit,
            remaining: limit.saturating_sub(used),
            reset_ms: if used == 0 {
                0
            } else {
                self.leaves_after(used, now_ms, now_slot)
            },
        }
    }

    /// How long until the oldest `admits` admits have left the window.
    fn leaves_after(&self, admits: u32, now_ms: u64, now_slot: u64) -> u64 {
        let mut left = 0u32;
        let oldest = now_slot.saturating_sub(SLOTS as u64 - 1);
        for slot in oldest..=now_slot {
            let count = self.counts.get(slot_index(slot)).copied().unwrap_or(0);
            left = left.saturating_add(count);
            if left >= admits {
                // Slot `slot` is counted until slot `slot + SLOTS` begins.
                let gone_at = slot.saturating_add(SLOTS as u64).saturating_mul(SLOT_MS);
                return gone_at.saturating_sub(now_ms);
            }
        }
        0
    }

    /// The state as bytes for shared data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(ENCODED_LEN);
        bytes.extend_from_slice(&self.newest.to_be_bytes());
        for count in &self.counts {
            bytes.extend_from_slice(&count.to_be_bytes());
        }
        bytes
    }

    /// The state stored as `bytes`; `None` if they are not one.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != ENCODED_LEN {
            return None;
        }
        let (newest, rest) = bytes.split_at_checked(8)?;
        let mut window = Window {
            newest: u64::from_be_bytes(newest.try_into().ok()?),
            counts: [0; SLOTS],
        };
        for (count, chunk) in window.counts.iter_mut().zip(rest.chunks_exact(4)) {
            *count = u32::from_be_bytes(chunk.try_into().ok()?);
        }
        Some(window)
    }
}

impl Decision {
    /// OpenAI's `x-ratelimit-*-requests` headers for this decision, and `retry-after`
    /// (whole seconds, rounded up) when refused.
    pub fn response_headers(&self) -> Vec<(&'static str, String)> {
        let quota = self.quota();
        let mut headers = vec![
            ("x-ratelimit-limit-requests", quota.limit.to_string()),
            (
                "x-ratelimit-remaining-requests",
                quota.remaining.to_string(),
            ),
            (
                "x-ratelimit-reset-requests",
                openai_duration(Duration::from_millis(quota.reset_ms)),
            ),
        ];
        if let Decision::Refuse { retry_after_ms, .. } = self {
            headers.push(("retry-after", retry_after_secs(*retry_after_ms).to_string()));
        }
        headers
    }
}

/// Where slot `slot` lives in the ring.
fn slot_index(slot: u64) -> usize {
    // The remainder is below SLOTS, so it fits a usize.
    usize::try_from(slot % SLOTS as u64).unwrap_or(0)
}

/// Seconds for `Retry-After`, rounded up so a client that waits them is admitted.
pub fn retry_after_secs(ms: u64) -> u64 {
    ms.div_ceil(1_000)
}

/// A duration as OpenAI writes `x-ratelimit-reset-*` (Go's duration format at
/// millisecond precision): `0s`, `20ms`, `1s`, `1.5s`, `6m0s`, `1h2m3.5s`.
pub fn openai_duration(d: Duration) -> String {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let hours = ms / 3_600_000;
    let minutes = ms % 3_600_000 / 60_000;
    let secs = ms % 60_000 / 1_000;
    let millis = ms % 1_000;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&secs.to_string());
    if millis > 0 {
        let fraction = format!("{millis:03}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn admitted(d: Decision) -> bool {
        matches!(d, Decision::Admit(_))
    }

    #[test]
    fn a_burst_of_the_limit_is_admitted_and_the_next_refused() {
        let mut w = Window::default();
        for i in 0..10u32 {
            let d = w.take(10, 5_500);
            assert_eq!(
                d,
                Decision::Admit(Quota {
                    limit: 10,
                    remaining: 9 - i,
                    // The admits sit in slot 5, counted until slot 66 begins.
                    reset_ms: 66_000 - 5_500,
                })
            );
        }
        assert_eq!(
            w.take(10, 6_000),
            Decision::Refuse {
                quota: Quota {
                    limit: 10,
                    remaining: 0,
                    reset_ms: 60_000,
                },
                retry_after_ms: 60_000,
            }
        );
    }

    #[test]
    fn a_limit_of_zero_admits_nothing() {
        let mut w = Window::default();
        for t in [0, 1, 60_000, 10_000_000] {
            let d = w.take(0, t);
            assert!(!admitted(d), "{d:?}");
            assert_eq!(d.quota().remaining, 0);
        }
    }

    #[test]
    fn the_window_frees_requests_when_the_oldest_slot_leaves() {
        let mut w = Window::default();
        assert!(admitted(w.take(2, 1_200)));
        assert!(admitted(w.take(2, 30_000)));
        let Decision::Refuse { retry_after_ms, .. } = w.take(2, 40_000) else {
            panic!("over the limit")
        };
        // Slot 1 leaves when slot 62 begins.
        assert_eq!(retry_after_ms, 62_000 - 40_000);
        assert!(!admitted(w.take(2, 61_999)));
        assert_eq!(
            w.take(2, 62_000),
            Decision::Admit(Quota {
                limit: 2,
                remaining: 0,
                reset_ms: 123_000 - 62_000,
            })
        );
    }

    #[test]
    fn a_clock_stepping_back_frees_nothing() {
        let mut w = Window::default();
        assert!(admitted(w.take(1, 100_000)));
        assert!(!admitted(w.take(1, 10_000)));
        assert!(!admitted(w.take(1, 100_500)));
    }

    #[test]
    fn state_round_trips_through_bytes_and_refuses_other_lengths() {
        let mut w = Window::default();
        w.take(5, 3_000);
        w.take(5, 70_000);
        let bytes = w.to_bytes();
        assert_eq!(bytes.len(), ENCODED_LEN);
        assert_eq!(Window::from_bytes(&bytes), Some(w));
        assert_eq!(Window::from_bytes(&bytes[1..]), None);
        assert_eq!(Window::from_bytes(&[]), None);
    }

    #[test]
    fn headers_say_where_the_limit_stands_and_refusals_when_to_retry() {
        let quota = Quota {
            limit: 10,
            remaining: 0,
            reset_ms: 59_500,
        };
        let expected = [
            ("x-ratelimit-limit-requests", "10"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "59.5s"),
        ];
        let admit = Decision::Admit(quota).response_headers();
        assert_eq!(
            admit
                .iter()
                .map(|(n, v)| (*n, v.as_str()))
                .collect::<Vec<_>>(),
            expected
        );
        let refuse = Decision::Refuse {
            quota,
            retry_after_ms: 1_200,
        }
        .response_headers();
        assert_eq!(refuse.len(), 4);
        assert_eq!(refuse[3], ("retry-after", "2".to_owned()));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(0), 0);
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(1_000), 1);
        assert_eq!(retry_after_secs(1_001), 2);
    }

    #[test]
    fn durations_are_written_as_openai_writes_them() {
        let ms = |n| openai_duration(Duration::from_millis(n));
        assert_eq!(ms(0), "0s");
        assert_eq!(ms(20), "20ms");
        assert_eq!(ms(999), "999ms");
        assert_eq!(ms(1_000), "1s");
        assert_eq!(ms(1_500), "1.5s");
        assert_eq!(ms(8_640), "8.64s");
        assert_eq!(ms(59_001), "59.001s");
        assert_eq!(ms(60_000), "1m0s");
        assert_eq!(ms(360_000), "6m0s");
        assert_eq!(ms(86_400), "1m26.4s");
        assert_eq!(ms(3_600_000), "1h0m0s");
        assert_eq!(ms(3_723_500), "1h2m3.5s");
        assert_eq!(openai_duration(Duration::from_micros(1_999)), "1ms");
    }

    /// Times in ms, ascending, from steps of up to 3 s (many land in one slot).
    fn clock() -> impl Strategy<Value = Vec<u64>> {
        prop::collection::vec(0u64..3_000, 1..400).prop_map(|steps| {
            steps
                .iter()
                .scan(0u64, |t, s| {
                    *t += s;
                    Some(*t)
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn never_more_than_the_limit_in_any_minute(limit in 0u32..20, times in clock()) {
            let mut w = Window::default();
            let admits: Vec<u64> = times.iter().copied().filter(|t| admitted(w.take(limit, *t))).collect();
            for (i, start) in admits.iter().enumerate() {
                let in_window = admits[i..].iter().take_while(|t| **t < start + WINDOW_MS).count();
                prop_assert!(in_window <= limit as usize, "{in_window} admits in the minute from {start}");
            }
        }

        #[test]
        fn a_refused_request_is_admitted_once_its_retry_after_has_passed(
            limit in 1u32..20, times in clock()
        ) {
            let mut w = Window::default();
            for t in times {
                if let Decision::Refuse { retry_after_ms, .. } = w.take(limit, t) {
                    prop_assert!(retry_after_ms > 0);
                    let mut later = w.clone();
                    prop_assert!(admitted(later.take(limit, t + retry_after_ms)));
                    let mut earlier = w.clone();
                    prop_assert!(!admitted(earlier.take(limit, t + retry_after_ms - 1)));
                }
            }
        }

        #[test]
        fn the_whole_limit_is_free_once_the_reset_has_passed(limit in 1u32..20, times in clock()) {
            let mut w = Window::default();
            for t in times {
                let reset = w.take(limit, t).quota().reset_ms;
                let mut after = w.clone();
                for left in (0..limit).rev() {
                    let d = after.take(limit, t + reset);
                    prop_assert!(admitted(d), "{d:?}");
                    prop_assert_eq!(d.quota().remaining, left);
                }
            }
        }

        #[test]
        fn remaining_counts_down_what_the_window_admits(limit in 0u32..20, times in clock()) {
            let mut w = Window::default();
            for t in times {
                let before = w.clone();
                let d = w.take(limit, t);
                if let Decision::Admit(q) = d {
                    // One fewer than before this admit, as the same window saw it.
                    let mut probe = before;
                    probe.advance((t / SLOT_MS).max(probe.newest));
                    prop_assert_eq!(q.remaining + 1, limit - probe.used());
                }
            }
        }
    }
}
