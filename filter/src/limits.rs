//! Per-key request limits kept in Envoy's shared data, so every worker of one Envoy draws
//! from the same window: each take is one compare-and-swap write ([`cache::update`]).

use crate::cache;
use crate::host::Host;
use tollgate_core::limits::{Decision, Quota, Window};

/// How long a client is told to wait when the window could not be updated.
const CONTENDED_RETRY_MS: u64 = 1_000;

/// The shared-data key of a key's requests-per-minute window. `v1`: the layout of
/// [`Window::to_bytes`]; a new layout takes a new key, since shared data outlives a VM.
fn window_key(key_id: &str) -> String {
    format!("tg:v1:rpm:{key_id}")
}

/// Takes one request from `key_id`'s window of `limit` per minute at `now_ms`. Fails
/// closed: a window that cannot be written (contended past the CAS bound, or refused by
/// the host) refuses the call.
pub fn take(host: &impl Host, key_id: &str, limit: u32, now_ms: u64) -> Decision {
    let key = window_key(key_id);
    let mut decision = None;
    let written = cache::update(host, &key, |current| {
        // Only this module writes the key, in this layout: bytes of another shape can
        // only be absent ones.
        let mut window = current.and_then(Window::from_bytes).unwrap_or_default();
        let d = window.take(limit, now_ms);
        decision = Some(d);
        // A refusal changes nothing that must be kept.
        matches!(d, Decision::Admit(_)).then(|| window.to_bytes())
    });
    match (written, decision) {
        (Ok(_), Some(d)) => d,
        (Err(e), _) => {
            log::warn!("tollgate: rate limit of {key_id} not updated ({e:?}); refused");
            fail_closed(limit)
        }
        (Ok(_), None) => fail_closed(limit),
    }
}

/// What [`take`] would decide now, storing nothing: lets a spent key be refused at its
/// headers, before its body is buffered, while only a call that passes every check is
/// charged. A window that cannot be read is taken as empty; the [`take`] decides then.
pub fn peek(host: &impl Host, key_id: &str, limit: u32, now_ms: u64) -> Decision {
    let current = host
        .shared_data(&window_key(key_id))
        .ok()
        .and_then(|(b, _)| b);
    let mut window = current
        .as_deref()
        .and_then(Window::from_bytes)
        .unwrap_or_default();
    window.take(limit, now_ms)
}

/// The refusal given when the window could not be read or written.
fn fail_closed(limit: u32) -> Decision {
    Decision::Refuse {
        quota: Quota {
            limit,
            remaining: 0,
            reset_ms: CONTENDED_RETRY_MS,
        },
        retry_after_ms: CONTENDED_RETRY_MS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mock::MockHost;
    use proxy_wasm::types::Status;

    fn admits(d: Decision) -> bool {
        matches!(d, Decision::Admit(_))
    }

    #[test]
    fn workers_share_one_window() {
        let worker_a = MockHost::new();
        let worker_b = worker_a.worker();
        let taken: Vec<bool> = (0..6)
            .map(|i| {
                let host = if i % 2 == 0 { &worker_a } else { &worker_b };
                admits(take(host, "k", 4, 1_000))
            })
            .collect();
        assert_eq!(taken, [true, true, true, true, false, false]);
        assert!(admits(take(&worker_b, "other", 4, 1_000)), "per key");
    }

    #[test]
    fn a_write_between_read_and_write_is_retried_and_counted_once() {
        let host = MockHost::new();
        host.interleave_writes(&window_key("k"), 1);
        assert!(admits(take(&host, "k", 2, 0)));
        assert!(admits(take(&host, "k", 2, 0)));
        assert!(!admits(take(&host, "k", 2, 0)));
    }

    #[test]
    fn a_peek_takes_nothing() {
        let host = MockHost::new();
        for _ in 0..3 {
            assert!(admits(peek(&host, "k", 1, 0)));
        }
        assert!(admits(take(&host, "k", 1, 0)));
        assert!(!admits(peek(&host, "k", 1, 0)));
    }

    #[test]
    fn endless_contention_refuses() {
        let host = MockHost::new();
        host.interleave_writes(&window_key("k"), usize::MAX);
        assert_eq!(
            take(&host, "k", 100, 0),
            Decision::Refuse {
                quota: Quota {
                    limit: 100,
                    remaining: 0,
                    reset_ms: CONTENDED_RETRY_MS
                },
                retry_after_ms: CONTENDED_RETRY_MS,
            }
        );
    }

    #[test]
    fn a_host_refusing_writes_refuses_the_call() {
        let host = MockHost::new();
        host.refuse_shared_writes(Status::InternalFailure);
        assert!(!admits(take(&host, "k", 100, 0)));
    }
}
