//! Authorization answers cached in Envoy's shared data, so every worker's VM reuses them.
//!
//! Each entry is typed ([`Entry`]): its key and the protobuf it holds, stored after a
//! 16-byte header: the expiry (Unix ms) and the [`Ticket`] of the question the answer
//! belongs to, both big-endian. [`KeyGrantEntry`] holds a [`KeyGrant`], [`RouteEntry`] a
//! [`Route`], [`ServedModelsEntry`] the served models. Only keys that exist and models that
//! are served are stored, so the shared data stays bounded by what the control plane knows,
//! not by what clients send. A route carries the provider's credential and is read for
//! every key: it is stored only from an answer that admitted a call, the only kind the
//! control plane sends a route with.
//!
//! Which answer is newest is told by tickets, not by clocks or expiries: every question to
//! the control plane takes the next number of one counter shared by all workers, and an
//! entry is replaced unless it holds the answer to a later question. Expiries are counted
//! from arrival and clocks step back, so neither orders answers (a revocation learnt with a
//! shorter TTL must still replace the active grant it follows). The counter and every
//! entry are written by a compare-and-swap loop ([`update`]): read with the entry's
//! version, compute, write against that version, and start over if another worker wrote
//! in between, a bounded number of times.

use crate::host::Host;
use prost::Message;
use proxy_wasm::types::Status;
use std::borrow::Cow;
use tollgate_proto::v1::{AuthorizeResponse, KeyGrant, KeyStatus, Route, ServedModel};

/// Attempts of one compare-and-swap write before it gives up.
pub const CAS_ATTEMPTS: usize = 8;

/// The shared counter tickets are drawn from.
const TICKETS: &str = "tg:tickets";

/// Bytes before an entry's message: expiry and ticket.
const HEADER: usize = 16;

/// The place of one question to the control plane among all workers' questions: a later
/// question has a larger ticket. 0 is "unknown", older than every drawn ticket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// A kind of shared-data entry: where it lives and what it holds.
pub trait Entry {
    /// The message stored.
    type Value: Message + Default;
    /// The shared-data key.
    fn key(&self) -> Cow<'_, str>;
}

/// The grant of one key, by the SHA-256 hex of the key.
pub struct KeyGrantEntry<'a>(pub &'a str);

/// The route of one model.
pub struct RouteEntry<'a>(pub &'a str);

/// The list of served models (an `AuthorizeResponse` with only that field).
pub struct ServedModelsEntry;

// `v2`: entries carry a ticket. Shared data outlives a VM (a filter update keeps it), so
// entries of the older layout must never be read as this one.
impl Entry for KeyGrantEntry<'_> {
    type Value = KeyGrant;
    fn key(&self) -> Cow<'_, str> {
        Cow::Owned(format!("tg:v2:key:{}", self.0))
    }
}

impl Entry for RouteEntry<'_> {
    type Value = Route;
    fn key(&self) -> Cow<'_, str> {
        Cow::Owned(format!("tg:v2:route:{}", self.0))
    }
}

impl Entry for ServedModelsEntry {
    type Value = AuthorizeResponse;
    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed("tg:v2:models")
    }
}

/// The expiry, ticket and message of stored bytes, if they have that shape.
fn split(bytes: &[u8]) -> Option<(u64, Ticket, &[u8])> {
    let (header, message) = bytes.split_at_checked(HEADER)?;
    let (expiry, ticket) = header.split_at(8);
    Some((
        u64::from_be_bytes(expiry.try_into().ok()?),
        Ticket(u64::from_be_bytes(ticket.try_into().ok()?)),
        message,
    ))
}

/// The value of an entry, if present and fresh at `now_ms`.
pub fn read<E: Entry>(host: &impl Host, entry: &E, now_ms: u64) -> Option<E::Value> {
    let (bytes, _cas) = host.shared_data(&entry.key()).ok()?;
    let (expiry, _ticket, message) = split(bytes.as_deref()?)?;
    if expiry <= now_ms {
        return None;
    }
    E::Value::decode(message).ok()
}

/// How a compare-and-swap write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The new value is stored.
    Stored,
    /// The current value was kept: nothing to write.
    Kept,
}

/// Why a compare-and-swap write did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasError {
    /// Other writers changed the entry between every read and write.
    Contended,
    /// The host refused a read or write.
    Host(Status),
}

/// Reads `key` with its version, computes its new bytes from the current ones (`None`:
/// keep them), and writes them only if no one wrote meanwhile; on a mismatch, starts over,
/// at most [`CAS_ATTEMPTS`] times.
pub fn update(
    host: &impl Host,
    key: &str,
    mut compute: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
) -> Result<Written, CasError> {
    for _ in 0..CAS_ATTEMPTS {
        let (current, cas) = host.shared_data(key).map_err(CasError::Host)?;
        let Some(new) = compute(current.as_deref()) else {
            return Ok(Written::Kept);
        };
        match host.set_shared_data(key, &new, cas) {
            Ok(()) => return Ok(Written::Stored),
            Err(Status::CasMismatch) => continue,
            Err(status) => return Err(CasError::Host(status)),
        }
    }
    Err(CasError::Contended)
}

/// The next ticket, unique and increasing across every worker of this Envoy; `Ticket(0)`
/// (older than any answer cached) if the counter cannot be moved.
pub fn next_ticket(host: &impl Host) -> Ticket {
    let mut drawn = 0;
    let moved = update(host, TICKETS, |current| {
        let last = current
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes);
        drawn = last.saturating_add(1);
        Some(drawn.to_be_bytes().to_vec())
    });
    match moved {
        Ok(_) => Ticket(drawn),
        Err(e) => {
            log::warn!("tollgate: could not draw a cache ticket: {e:?}");
            Ticket(0)
        }
    }
}

/// Stores `value` as the answer to the question of `fresh.ticket`, unless the entry holds
/// a fresh answer to a later question (a slower answer must not replace it).
pub fn write<E: Entry>(host: &impl Host, entry: &E, value: &E::Value, fresh: Freshness) {
    let key = entry.key();
    let written = update(host, &key, |current| {
        let newer_kept = current
            .and_then(split)
            .is_some_and(|(expiry, held, _)| expiry > fresh.now_ms && held > fresh.ticket);
        if newer_kept {
            return None;
        }
        let mut bytes = Vec::with_capacity(HEADER + value.encoded_len());
        bytes.extend_from_slice(&fresh.expires_at_ms.to_be_bytes());
        bytes.extend_from_slice(&fresh.ticket.0.to_be_bytes());
        value.encode_raw(&mut bytes);
        Some(bytes)
    });
    if let Err(e) = written {
        log::warn!("tollgate: could not cache {key}: {e:?}");
    }
}

/// When an answer was asked for and how long it may be kept.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    /// The question's ticket.
    pub ticket: Ticket,
    /// When the answer arrived (Unix ms).
    pub now_ms: u64,
    /// When it stops being used (Unix ms).
    pub expires_at_ms: u64,
}

/// Stores the list of served models.
pub fn store_served_models(host: &impl Host, models: &[ServedModel], fresh: Freshness) {
    let message = AuthorizeResponse {
        served_models: models.to_vec(),
        ..AuthorizeResponse::default()
    };
    write(host, &ServedModelsEntry, &message, fresh);
}

/// Stores what the control plane answered, for entries worth keeping; `route` only when
/// the answer admitted the call.
pub fn store(
    host: &impl Host,
    key_hash: &str,
    model: &str,
    grant: &KeyGrant,
    route: Option<&Route>,
    fresh: Freshness,
) {
    // An unknown key is not stored: anyone can invent hashes, and shared data has no eviction.
    if grant.status() != KeyStatus::Unknown {
        write(host, &KeyGrantEntry(key_hash), grant, fresh);
    }
    if let Some(route) = route {
        write(host, &RouteEntry(model), route, fresh);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mock::MockHost;

    fn grant(id: &str) -> KeyGrant {
        KeyGrant {
            key_id: id.into(),
            status: KeyStatus::Active.into(),
            ..KeyGrant::default()
        }
    }

    fn fresh(ticket: u64, now_ms: u64, expires_at_ms: u64) -> Freshness {
        Freshness {
            ticket: Ticket(ticket),
            now_ms,
            expires_at_ms,
        }
    }

    fn held(host: &MockHost) -> Option<String> {
        read(host, &KeyGrantEntry("h"), 0).map(|g| g.key_id)
    }

    #[test]
    fn typed_entries_round_trip_until_they_expire() {
        let host = MockHost::new();
        write(&host, &KeyGrantEntry("h"), &grant("k1"), fresh(1, 0, 1_000));
        assert_eq!(
            read(&host, &KeyGrantEntry("h"), 999).map(|g| g.key_id),
            Some("k1".into())
        );
        assert_eq!(read(&host, &KeyGrantEntry("h"), 1_000), None);
        assert_eq!(read(&host, &RouteEntry("h"), 0), None, "another entry");
        assert!(host.shared_value("tg:v2:key:h").is_some());
    }

    #[test]
    fn tickets_increase_across_workers() {
        let worker_a = MockHost::new();
        let worker_b = worker_a.worker();
        let drawn = [
            next_ticket(&worker_a),
            next_ticket(&worker_b),
            next_ticket(&worker_a),
        ];
        assert_eq!(drawn, [Ticket(1), Ticket(2), Ticket(3)]);
    }

    #[test]
    fn the_answer_to_a_later_question_replaces_a_longer_lived_one() {
        // A revocation learnt with a shorter TTL (or after the clock stepped back) must
        // replace the active grant it follows.
        let host = MockHost::new();
        write(
            &host,
            &KeyGrantEntry("h"),
            &grant("active"),
            fresh(1, 500, 2_000),
        );
        write(
            &host,
            &KeyGrantEntry("h"),
            &grant("revoked"),
            fresh(2, 100, 1_500),
        );
        assert_eq!(held(&host), Some("revoked".into()));
    }

    #[test]
    fn a_slow_answer_to_an_earlier_question_does_not_replace_a_later_one() {
        let host = MockHost::new();
        write(
            &host,
            &KeyGrantEntry("h"),
            &grant("later"),
            fresh(5, 100, 1_000),
        );
        write(
            &host,
            &KeyGrantEntry("h"),
            &grant("earlier"),
            fresh(4, 200, 1_100),
        );
        assert_eq!(held(&host), Some("later".into()));
        assert_eq!(host.shared_stats().sets, 1);
    }

    #[test]
    fn an_expired_or_unreadable_entry_is_replaced_whatever_its_ticket() {
        let host = MockHost::new();
        write(
            &host,
            &KeyGrantEntry("h"),
            &grant("expired"),
            fresh(9, 0, 100),
        );
        write(
            &host,
            &KeyGrantEntry("h"),
            &grant("now"),
            fresh(3, 100, 1_000),
        );
        assert_eq!(held(&host), Some("now".into()));
        host.put_shared("tg:v2:key:h", b"short");
        write(
            &host,
            &KeyGrantEntry("h"),
            &grant("again"),
            fresh(1, 100, 1_000),
        );
        assert_eq!(held(&host), Some("again".into()));
    }

    #[test]
    fn a_writer_between_read_and_write_causes_a_retry() {
        let host = MockHost::new();
        host.interleave_writes("tg:v2:key:h", 1);
        write(&host, &KeyGrantEntry("h"), &grant("k1"), fresh(1, 0, 1_000));
        let stats = host.shared_stats();
        assert_eq!(
            (stats.gets, stats.mismatches, stats.sets),
            (2, 1, 1),
            "{stats:?}"
        );
        assert_eq!(held(&host), Some("k1".into()));
    }

    #[test]
    fn the_retry_bound_holds_under_endless_contention() {
        let host = MockHost::new();
        host.interleave_writes("k", usize::MAX);
        let mut computed = 0;
        let result = update(&host, "k", |_| {
            computed += 1;
            Some(b"v".to_vec())
        });
        assert_eq!(result, Err(CasError::Contended));
        assert_eq!(computed, CAS_ATTEMPTS);
        let stats = host.shared_stats();
        assert_eq!((stats.gets, stats.mismatches), (CAS_ATTEMPTS, CAS_ATTEMPTS));
        assert_eq!(stats.sets, 0);
    }

    #[test]
    fn a_contended_counter_gives_the_oldest_ticket() {
        let host = MockHost::new();
        host.interleave_writes(TICKETS, usize::MAX);
        assert_eq!(next_ticket(&host), Ticket(0));
    }

    #[test]
    fn host_refusals_end_the_loop_at_once() {
        let host = MockHost::new();
        host.refuse_shared_writes(Status::InternalFailure);
        let result = update(&host, "k", |_| Some(b"v".to_vec()));
        assert_eq!(result, Err(CasError::Host(Status::InternalFailure)));
        assert_eq!(host.shared_stats().gets, 1);
        write(&host, &KeyGrantEntry("h"), &grant("k1"), fresh(1, 0, 1_000));
        assert_eq!(host.shared_value("tg:v2:key:h"), None);
    }

    #[test]
    fn unknown_keys_are_never_stored() {
        let host = MockHost::new();
        let unknown = KeyGrant {
            status: KeyStatus::Unknown.into(),
            ..KeyGrant::default()
        };
        store(&host, "h", "m", &unknown, None, fresh(1, 0, 1_000));
        assert_eq!(host.shared_stats().sets, 0);
    }
}
