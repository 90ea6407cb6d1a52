//! Rate limits (requests or tokens per minute): the math, with the clock passed in.
//!
//! The promise is "never more than `limit` admitted in any 60 s window". A GCRA or token
//! bucket with a burst of `limit` cannot keep it (after a full burst it refills one unit
//! per `60 s / limit`, so a window can hold nearly twice the limit), so the state is a
//! sliding window over one-second slots: what was taken in the last [`SLOTS`] seconds,
//! summed per second. A take of `amount` (1 for a request, the token hold of a call for
//! tokens) is admitted when the slots, which cover at least the last 60 s, hold no more
//! than `limit - amount`; counting the oldest slot whole makes the window up to one second
//! longer than a minute, never shorter. A token hold is settled to the call's real usage
//! in the slot it was recorded in ([`Window::settle`]), so a call that used less frees the
//! rest for the remainder of the minute, and one that used more counts it. The state is a
//! small fixed-size value ([`Window::to_bytes`]) so a filter can keep it in Envoy's shared
//! data and update it by compare-and-swap.

use std::time::Duration;

/// The window a per-minute limit counts over.
pub const WINDOW_MS: u64 = 60_000;

/// The width of one counting slot.
pub const SLOT_MS: u64 = 1_000;

/// Slots kept: a minute's worth, plus the partial one the oldest take may sit in.
pub const SLOTS: usize = 61;

/// Bytes of an encoded [`Window`]: the newest slot's index, then one sum per slot.
pub const ENCODED_LEN: usize = 8 + 8 * SLOTS;

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Measure {
    /// Requests: each call takes 1.
    Requests,
    /// Tokens, prompt and output: each call takes its hold, settled to its usage.
    Tokens,
}

impl Measure {
    /// The suffix of OpenAI's headers and of window names: `requests` or `tokens`.
    pub fn name(self) -> &'static str {
        match self {
            Measure::Requests => "requests",
            Measure::Tokens => "tokens",
        }
    }
}

/// What was taken in the last [`SLOTS`] seconds from one limited subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Index (`ms / SLOT_MS`) of the newest slot counted.
    newest: u64,
    /// Amount taken per slot; slot `s` lives at `s % SLOTS`.
    counts: [u64; SLOTS],
}

impl Default for Window {
    fn default() -> Self {
        Self {
            newest: 0,
            counts: [0; SLOTS],
        }
    }
}

/// What taking from a limit decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The take is admitted.
    Admit(Quota),
    /// The take is refused; it may succeed after `retry_after_ms`.
    Refuse {
        /// Where the limit stands (not changed by the refusal).
        quota: Quota,
        /// How long until the amount asked for is free again ([`WINDOW_MS`] when it is
        /// more than the whole limit, which no wait makes free).
        retry_after_ms: u64,
    },
}

/// Where a limit stands after a decision: what OpenAI's `x-ratelimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// The limit per minute.
    pub limit: u64,
    /// What may still be taken now.
    pub remaining: u64,
    /// Time until all of the limit is free again.
    pub reset_ms: u64,
}

impl Quota {
    /// Whether this quota leaves less room than `other`: less remaining, or as much for
    /// longer. The headers name the most constraining window of a kind.
    pub fn tighter_than(&self, other: &Quota) -> bool {
        (self.remaining, std::cmp::Reverse(self.reset_ms))
            < (other.remaining, std::cmp::Reverse(other.reset_ms))
    }

    /// The quota once `amount` taken is given back (an all-or-nothing take undone).
    pub fn given_back(self, amount: u64) -> Quota {
        Quota {
            remaining: self.remaining.saturating_add(amount).min(self.limit),
            ..self
        }
    }
}

impl Decision {
    /// The quota, admitted or not.
    pub fn quota(&self) -> Quota {
        match self {
            Decision::Admit(q) | Decision::Refuse { quota: q, .. } => *q,
        }
    }

    /// OpenAI's `x-ratelimit-*-<measure>` headers for this decision, and `retry-after`
    /// (whole seconds, rounded up) when refused.
    pub fn response_headers(&self, measure: Measure) -> Vec<(&'static str, String)> {
        let quota = self.quota();
        let (limit, remaining, reset) = match measure {
            Measure::Requests => (
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ),
            Measure::Tokens => (
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ),
        };
        let mut headers = vec![
            (limit, quota.limit.to_string()),
            (remaining, quota.remaining.to_string()),
            (
                reset,
                openai_duration(Duration::from_millis(quota.reset_ms)),
            ),
        ];
        if let Decision::Refuse { retry_after_ms, .. } = self {
            headers.push(("retry-after", retry_after_secs(*retry_after_ms).to_string()));
        }
        headers
    }
}

impl Window {
    /// Takes `amount` at `now_ms` against `limit` per minute: the decision, and the state
    /// to store (changed only when admitted, or when old slots were dropped). A clock that
    /// steps back counts as standing still, so it never frees anything.
    pub fn take(&mut self, limit: u64, amount: u64, now_ms: u64) -> Decision {
        let now_slot = (now_ms / SLOT_MS).max(self.newest);
        self.advance(now_slot);
        let used = self.used();
        if used.checked_add(amount).is_some_and(|after| after <= limit) {
            // In the slot of this take's own clock, where its settlement will look for it
            // (another worker may have written a later slot already).
            let own_slot = now_ms / SLOT_MS;
            let slot = if now_slot.saturating_sub(own_slot) < SLOTS as u64 {
                own_slot
            } else {
                now_slot
            };
            if let Some(count) = self.counts.get_mut(slot_index(slot)) {
                *count = count.saturating_add(amount);
            }
            return Decision::Admit(self.quota(limit, now_ms, now_slot));
        }
        let quota = self.quota(limit, now_ms, now_slot);
        // The take fits once enough of the oldest takes leave the window; an amount over
        // the whole limit never fits, and is told to wait the window out.
        let retry_after_ms = match used.saturating_add(amount).checked_sub(limit) {
            Some(excess) if amount <= limit && excess > 0 => {
                self.leaves_after(excess, now_ms, now_slot)
            }
            _ => WINDOW_MS,
        };
        Decision::Refuse {
            quota,
            retry_after_ms,
        }
    }

    /// Settles an amount `held` taken at `taken_at_ms` to `actual`, in the slot it was
    /// recorded in, if that slot is still in the window at `now_ms` (once it has left,
    /// the take no longer counts either way). A slot never goes below 0, so a settlement
    /// frees at most what was held. Returns whether the state changed.
    pub fn settle(&mut self, taken_at_ms: u64, held: u64, actual: u64, now_ms: u64) -> bool {
        let now_slot = (now_ms / SLOT_MS).max(self.newest);
        self.advance(now_slot);
        let slot = taken_at_ms / SLOT_MS;
        let in_window = slot <= now_slot && now_slot - slot < SLOTS as u64;
        if !in_window || held == actual {
            return false;
        }
        let Some(count) = self.counts.get_mut(slot_index(slot)) else {
            return false;
        };
        *count = if actual > held {
            count.saturating_add(actual - held)
        } else {
            count.saturating_sub(held - actual)
        };
        true
    }

    /// What [`Window::take`] of `amount` would decide at `now_ms`, changing nothing.
    pub fn peek(&self, limit: u64, amount: u64, now_ms: u64) -> Decision {
        self.clone().take(limit, amount, now_ms)
    }

    /// What the window holds at `now_ms`.
    pub fn count(&self, now_ms: u64) -> u64 {
        let mut at_now = self.clone();
        at_now.advance((now_ms / SLOT_MS).max(self.newest));
        at_now.used()
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
        self.newest = self.newest.max(now_slot);
    }

    /// What the window holds.
    fn used(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, c| a.saturating_add(*c))
    }

    /// The quota as of `now_ms`, once `now_slot` is the newest slot.
    fn quota(&self, limit: u64, now_ms: u64, now_slot: u64) -> Quota {
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

    /// How long until the oldest `amount` taken has left the window.
    fn leaves_after(&self, amount: u64, now_ms: u64, now_slot: u64) -> u64 {
        let mut left = 0u64;
        let oldest = now_slot.saturating_sub(SLOTS as u64 - 1);
        for slot in oldest..=now_slot {
            let count = self.counts.get(slot_index(slot)).copied().unwrap_or(0);
            left = left.saturating_add(count);
            if left >= amount {
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
        for (count, chunk) in window.counts.iter_mut().zip(rest.chunks_exact(8)) {
            *count = u64::from_be_bytes(chunk.try_into().ok()?);
        }
        Some(window)
    }
}

/// The subject a client address is braked under, from Envoy's `source.address` (`ip:port`,
/// `[ipv6]:port`, or a bare address): an IPv4 address whole, an IPv6 one by its /64, the
/// block one subscriber is given, so an attacker cannot step through addresses of its own
/// block (and fill shared data) to escape the brake. `None` if it is not an address.
pub fn address_subject(source: &str) -> Option<String> {
    use std::net::{IpAddr, SocketAddr};
    let ip = source
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| source.parse::<IpAddr>())
        .ok()?;
    Some(match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    })
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
        for i in 0..10u64 {
            let d = w.take(10, 1, 5_500);
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
            w.take(10, 1, 6_000),
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
            let d = w.take(0, 1, t);
            assert!(!admitted(d), "{d:?}");
            assert_eq!(d.quota().remaining, 0);
        }
    }

    #[test]
    fn the_window_frees_requests_when_the_oldest_slot_leaves() {
        let mut w = Window::default();
        assert!(admitted(w.take(2, 1, 1_200)));
        assert!(admitted(w.take(2, 1, 30_000)));
        let Decision::Refuse { retry_after_ms, .. } = w.take(2, 1, 40_000) else {
            panic!("over the limit")
        };
        // Slot 1 leaves when slot 62 begins.
        assert_eq!(retry_after_ms, 62_000 - 40_000);
        assert!(!admitted(w.take(2, 1, 61_999)));
        assert_eq!(
            w.take(2, 1, 62_000),
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
        assert!(admitted(w.take(1, 1, 100_000)));
        assert!(!admitted(w.take(1, 1, 10_000)));
        assert!(!admitted(w.take(1, 1, 100_500)));
    }

    #[test]
    fn state_round_trips_through_bytes_and_refuses_other_lengths() {
        let mut w = Window::default();
        w.take(5, 1, 3_000);
        w.take(5, 1, 70_000);
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
        let admit = Decision::Admit(quota).response_headers(Measure::Requests);
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
        .response_headers(Measure::Requests);
        assert_eq!(refuse.len(), 4);
        assert_eq!(refuse[3], ("retry-after", "2".to_owned()));
    }

    #[test]
    fn a_take_of_many_fits_only_whole() {
        let mut w = Window::default();
        assert!(admitted(w.take(100, 60, 0)));
        let d = w.take(100, 41, 500);
        assert_eq!(
            d,
            Decision::Refuse {
                quota: Quota {
                    limit: 100,
                    remaining: 40,
                    reset_ms: 61_000 - 500,
                },
                retry_after_ms: 61_000 - 500,
            }
        );
        assert!(admitted(w.take(100, 40, 500)));
        assert_eq!(w.peek(100, 1, 500).quota().remaining, 0);
    }

    #[test]
    fn an_amount_over_the_whole_limit_is_never_admitted() {
        let mut w = Window::default();
        let d = w.take(100, 101, 0);
        assert_eq!(
            d,
            Decision::Refuse {
                quota: Quota {
                    limit: 100,
                    remaining: 100,
                    reset_ms: 0,
                },
                retry_after_ms: WINDOW_MS,
            }
        );
        assert!(!admitted(w.take(100, 101, 10_000_000)));
    }

    #[test]
    fn a_settlement_adjusts_the_slot_of_its_take() {
        let mut w = Window::default();
        assert!(admitted(w.take(100, 80, 1_000)));
        assert!(admitted(w.take(100, 10, 5_000)));
        // Used 30 of the 80 held at 1 s: 50 free again.
        assert!(w.settle(1_000, 80, 30, 6_000));
        assert_eq!(w.peek(100, 0, 6_000).quota().remaining, 60);
        // The 30 leave with slot 1, at 62 s; the 10 of slot 5 stay.
        assert_eq!(w.peek(100, 0, 62_000).quota().remaining, 90);
    }

    /// Workers read the clock at different moments: a take whose clock reads a slot older
    /// than one another worker already wrote must be settled where it was recorded. It
    /// was recorded in the newest slot and settled in its own, so its hold was never
    /// freed (or another call's take was freed in its place).
    #[test]
    fn a_take_behind_the_newest_slot_is_settled_where_it_was_recorded() {
        let mut w = Window::default();
        assert!(admitted(w.take(100, 50, 2_000)), "another worker, at 2.0 s");
        assert!(admitted(w.take(100, 50, 1_900)), "this worker read 1.9 s");
        assert!(w.settle(1_900, 50, 0, 2_100));
        assert_eq!(w.peek(100, 0, 2_100).quota().remaining, 50);
        // The other take leaves with slot 2, at 63 s.
        assert_eq!(w.peek(100, 0, 62_500).quota().remaining, 50);
        assert_eq!(w.peek(100, 0, 63_000).quota().remaining, 100);
    }

    #[test]
    fn usage_over_the_hold_is_counted() {
        let mut w = Window::default();
        assert!(admitted(w.take(100, 10, 0)));
        assert!(w.settle(0, 10, 150, 2_000));
        let d = w.take(100, 1, 2_000);
        assert!(!admitted(d));
        assert_eq!(d.quota().remaining, 0);
    }

    #[test]
    fn a_settlement_after_its_slot_left_changes_nothing() {
        let mut w = Window::default();
        assert!(admitted(w.take(100, 80, 1_000)));
        assert!(admitted(w.take(100, 5, 61_000)));
        assert!(!w.settle(1_000, 80, 0, 62_000));
        assert_eq!(w.peek(100, 0, 62_000).quota().remaining, 95);
    }

    #[test]
    fn token_headers_carry_the_tokens_names() {
        let quota = Quota {
            limit: 40_000,
            remaining: 39_000,
            reset_ms: 1_500,
        };
        let names: Vec<_> = Decision::Admit(quota)
            .response_headers(Measure::Tokens)
            .into_iter()
            .collect();
        assert_eq!(
            names,
            [
                ("x-ratelimit-limit-tokens", "40000".to_owned()),
                ("x-ratelimit-remaining-tokens", "39000".to_owned()),
                ("x-ratelimit-reset-tokens", "1.5s".to_owned()),
            ]
        );
    }

    #[test]
    fn the_tighter_quota_has_less_remaining_or_waits_longer() {
        let q = |remaining, reset_ms| Quota {
            limit: 10,
            remaining,
            reset_ms,
        };
        assert!(q(1, 0).tighter_than(&q(2, 9_000)));
        assert!(q(1, 9_000).tighter_than(&q(1, 100)));
        assert!(!q(1, 100).tighter_than(&q(1, 100)));
        assert_eq!(q(8, 5).given_back(5).remaining, 10);
    }

    #[test]
    fn addresses_lose_their_port_and_ipv6_counts_per_64() {
        assert_eq!(
            address_subject("10.1.2.3:5555").as_deref(),
            Some("10.1.2.3")
        );
        assert_eq!(address_subject("10.1.2.3").as_deref(), Some("10.1.2.3"));
        assert_eq!(
            address_subject("[2001:db8:1:2:3:4:5:6]:443").as_deref(),
            Some("2001:db8:1:2::/64")
        );
        assert_eq!(
            address_subject("2001:db8:1:2:ffff::1").as_deref(),
            Some("2001:db8:1:2::/64")
        );
        assert_eq!(
            address_subject("[::ffff:10.0.0.1]:80").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(address_subject("envoy_internal"), None);
        assert_eq!(address_subject(""), None);
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

    /// One call: when it comes, what it asks to hold, and what it turns out to use (at most
    /// the hold, or anything) and when it reports.
    #[derive(Debug, Clone)]
    struct Call {
        at: u64,
        hold: u64,
        used: u64,
        reports_after: u64,
    }

    fn calls(honest: bool) -> impl Strategy<Value = Vec<Call>> {
        prop::collection::vec((0u64..3_000, 0u64..60, 0u64..120, 0u64..90_000), 1..200).prop_map(
            move |v| {
                let mut t = 0;
                v.into_iter()
                    .map(|(step, hold, used, reports_after)| {
                        t += step;
                        let used = if honest { used.min(hold) } else { used };
                        Call {
                            at: t,
                            hold,
                            used,
                            reports_after,
                        }
                    })
                    .collect()
            },
        )
    }

    /// Runs `calls` through one window: takes in time order, each settled when it reports
    /// (before any later take at or after that time). Returns the admitted calls.
    fn run(limit: u64, calls: &[Call]) -> (Window, Vec<Call>) {
        let mut w = Window::default();
        let mut admitted_calls: Vec<Call> = Vec::new();
        let mut pending: Vec<Call> = Vec::new();
        for call in calls {
            pending.sort_by_key(|c| c.at + c.reports_after);
            while pending
                .first()
                .is_some_and(|c| c.at + c.reports_after <= call.at)
            {
                let c = pending.remove(0);
                w.settle(c.at, c.hold, c.used, c.at + c.reports_after);
            }
            if admitted(w.take(limit, call.hold, call.at)) {
                admitted_calls.push(call.clone());
                pending.push(call.clone());
            }
        }
        (w, admitted_calls)
    }

    proptest! {
        #[test]
        fn never_more_than_the_limit_in_any_minute(limit in 0u64..20, times in clock()) {
            let mut w = Window::default();
            let admits: Vec<u64> = times.iter().copied().filter(|t| admitted(w.take(limit, 1, *t))).collect();
            for (i, start) in admits.iter().enumerate() {
                let in_window = admits[i..].iter().take_while(|t| **t < start + WINDOW_MS).count();
                prop_assert!(in_window <= limit as usize, "{in_window} admits in the minute from {start}");
            }
        }

        #[test]
        fn a_refused_request_is_admitted_once_its_retry_after_has_passed(
            limit in 1u64..20, times in clock()
        ) {
            let mut w = Window::default();
            for t in times {
                if let Decision::Refuse { retry_after_ms, .. } = w.take(limit, 1, t) {
                    prop_assert!(retry_after_ms > 0);
                    let mut later = w.clone();
                    prop_assert!(admitted(later.take(limit, 1, t + retry_after_ms)));
                    let mut earlier = w.clone();
                    prop_assert!(!admitted(earlier.take(limit, 1, t + retry_after_ms - 1)));
                }
            }
        }

        #[test]
        fn the_whole_limit_is_free_once_the_reset_has_passed(limit in 1u64..20, times in clock()) {
            let mut w = Window::default();
            for t in times {
                let reset = w.take(limit, 1, t).quota().reset_ms;
                let mut after = w.clone();
                for left in (0..limit).rev() {
                    let d = after.take(limit, 1, t + reset);
                    prop_assert!(admitted(d), "{d:?}");
                    prop_assert_eq!(d.quota().remaining, left);
                }
            }
        }

        #[test]
        fn remaining_counts_down_what_the_window_admits(limit in 0u64..20, times in clock()) {
            let mut w = Window::default();
            for t in times {
                let before = w.clone();
                let d = w.take(limit, 1, t);
                if let Decision::Admit(q) = d {
                    // One fewer than before this admit, as the same window saw it.
                    let mut probe = before;
                    probe.advance((t / SLOT_MS).max(probe.newest));
                    prop_assert_eq!(q.remaining + 1, limit - probe.used());
                }
            }
        }

        #[test]
        fn honest_usage_never_passes_the_limit_in_any_minute(limit in 0u64..200, calls in calls(true)) {
            let (_, admitted_calls) = run(limit, &calls);
            // What counts for a call is its hold until it reports, then its usage; a
            // minute's takes, each counted at the most it ever stood at within the
            // minute, never pass the limit.
            for (i, first) in admitted_calls.iter().enumerate() {
                let end = first.at + WINDOW_MS;
                let counted: u64 = admitted_calls[i..]
                    .iter()
                    .take_while(|c| c.at < end)
                    .map(|c| if c.at + c.reports_after < end { c.used } else { c.hold })
                    .sum();
                prop_assert!(counted <= limit, "{counted} in the minute from {}", first.at);
            }
        }

        #[test]
        fn a_settlement_never_frees_more_than_was_held(
            limit in 1u64..500, calls in calls(false), held in 0u64..100, actual in 0u64..200,
            taken_at in 0u64..400_000, later in 0u64..70_000,
        ) {
            let (mut w, _) = run(limit, &calls);
            let now = taken_at.max(calls.last().map_or(0, |c| c.at)) + later;
            // Whatever the window holds and wherever the take sits, a settlement moves
            // the total by at most the difference, and frees at most what was held.
            w.advance(now / SLOT_MS);
            let before = w.used();
            w.settle(taken_at, held, actual, now);
            let after = w.used();
            prop_assert!(after >= before.saturating_sub(held));
            prop_assert!(after <= before + actual.saturating_sub(held));
        }

        #[test]
        fn huge_amounts_saturate_and_never_wrap(
            a in any::<u64>(), b in any::<u64>(), c in any::<u64>(), t in 0u64..200_000,
        ) {
            let mut w = Window::default();
            let first = w.take(u64::MAX, a, t);
            prop_assert!(admitted(first));
            let second = admitted(w.take(u64::MAX, b, t));
            prop_assert_eq!(second, a.checked_add(b).is_some());
            w.settle(t, a, c, t);
            let others = if second { b } else { 0 };
            prop_assert_eq!(w.used(), c.saturating_add(others));
            let q = w.peek(u64::MAX, 0, t).quota();
            prop_assert_eq!(q.remaining, u64::MAX - c.saturating_add(others));
            let round_trip = Window::from_bytes(&w.to_bytes());
            prop_assert_eq!(round_trip, Some(w));
        }
    }
}
