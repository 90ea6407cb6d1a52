//! Authorization answers cached in Envoy's shared data, so every worker's VM reuses them.
//!
//! Each entry is typed ([`Entry`]): its key and the protobuf it holds, stored as an 8-byte
//! big-endian expiry (Unix ms) followed by the message. [`KeyGrantEntry`] holds a
//! [`KeyGrant`], [`RouteEntry`] a [`Route`], [`ServedModelsEntry`] the served models.
//! Only keys that exist and models that are served are stored, so the shared data stays
//! bounded by what the control plane knows, not by what clients send. A route carries the
//! provider's credential and is read for every key: it is stored only from an answer that
//! admitted a call, the only kind the control plane sends a route with.
//!
//! Workers write concurrently, so every write is a compare-and-swap loop
//! ([`update`]): read with the entry's version, compute, write against that version, and
//! start over if another worker wrote in between, a bounded number of times.

use crate::host::Host;
use prost::Message;
use proxy_wasm::types::Status;
use std::borrow::Cow;
use tollgate_proto::v1::{AuthorizeResponse, KeyGrant, KeyStatus, Route, ServedModel};

/// Attempts of one compare-and-swap write before it gives up.
pub const CAS_ATTEMPTS: usize = 8;

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

impl Entry for KeyGrantEntry<'_> {
    type Value = KeyGrant;
    fn key(&self) -> Cow<'_, str> {
        Cow::Owned(format!("tg:key:{}", self.0))
    }
}

impl Entry for RouteEntry<'_> {
    type Value = Route;
    fn key(&self) -> Cow<'_, str> {
        Cow::Owned(format!("tg:route:{}", self.0))
    }
}

impl Entry for ServedModelsEntry {
    type Value = AuthorizeResponse;
    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed("tg:models")
    }
}

/// The expiry and message of stored bytes, if they have that shape.
fn split(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (expiry, message) = bytes.split_at_checked(8)?;
    Some((u64::from_be_bytes(expiry.try_into().ok()?), message))
}

/// The value of an entry, if present and fresh at `now_ms`.
pub fn read<E: Entry>(host: &impl Host, entry: &E, now_ms: u64) -> Option<E::Value> {
    let (bytes, _cas) = host.shared_data(&entry.key()).ok()?;
    let (expiry, message) = split(bytes.as_deref()?)?;
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

/// Stores `value` until `expires_at_ms`, unless the entry already holds an answer that
/// lives as long: that one is at least as recent, and a slow answer must not replace it.
pub fn write<E: Entry>(host: &impl Host, entry: &E, value: &E::Value, expires_at_ms: u64) {
    let key = entry.key();
    let written = update(host, &key, |current| {
        let current_expiry = current.and_then(split).map(|(e, _)| e);
        if current_expiry.is_some_and(|e| e >= expires_at_ms) {
            return None;
        }
        let mut bytes = Vec::with_capacity(8 + value.encoded_len());
        bytes.extend_from_slice(&expires_at_ms.to_be_bytes());
        value.encode_raw(&mut bytes);
        Some(bytes)
    });
    if let Err(e) = written {
        log::warn!("tollgate: could not cache {key}: {e:?}");
    }
}

/// Stores the list of served models.
pub fn store_served_models(host: &impl Host, models: &[ServedModel], expires_at_ms: u64) {
    let message = AuthorizeResponse {
        served_models: models.to_vec(),
        ..AuthorizeResponse::default()
    };
    write(host, &ServedModelsEntry, &message, expires_at_ms);
}

/// Stores what the control plane answered, for entries worth keeping; `route` only when
/// the answer admitted the call.
pub fn store(
    host: &impl Host,
    key_hash: &str,
    model: &str,
    grant: &KeyGrant,
    route: Option<&Route>,
    expires_at_ms: u64,
) {
    // An unknown key is not stored: anyone can invent hashes, and shared data has no eviction.
    if grant.status() != KeyStatus::Unknown {
        write(host, &KeyGrantEntry(key_hash), grant, expires_at_ms);
    }
    if let Some(route) = route {
        write(host, &RouteEntry(model), route, expires_at_ms);
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

    #[test]
    fn typed_entries_round_trip_until_they_expire() {
        let host = MockHost::new();
        write(&host, &KeyGrantEntry("h"), &grant("k1"), 1_000);
        assert_eq!(
            read(&host, &KeyGrantEntry("h"), 999).map(|g| g.key_id),
            Some("k1".into())
        );
        assert_eq!(read(&host, &KeyGrantEntry("h"), 1_000), None);
        assert_eq!(read(&host, &RouteEntry("h"), 0), None, "another entry");
        assert!(host.shared_value("tg:key:h").is_some());
    }

    #[test]
    fn a_writer_between_read_and_write_causes_a_retry() {
        let host = MockHost::new();
        host.interleave_writes("tg:key:h", 1);
        write(&host, &KeyGrantEntry("h"), &grant("k1"), 1_000);
        let stats = host.shared_stats();
        assert_eq!(
            (stats.gets, stats.mismatches, stats.sets),
            (2, 1, 1),
            "{stats:?}"
        );
        assert_eq!(
            read(&host, &KeyGrantEntry("h"), 0).map(|g| g.key_id),
            Some("k1".into())
        );
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
    fn a_longer_lived_answer_is_not_replaced_by_a_shorter_one() {
        let host = MockHost::new();
        write(&host, &KeyGrantEntry("h"), &grant("new"), 2_000);
        write(&host, &KeyGrantEntry("h"), &grant("old"), 1_500);
        assert_eq!(
            read(&host, &KeyGrantEntry("h"), 0).map(|g| g.key_id),
            Some("new".into())
        );
        assert_eq!(host.shared_stats().sets, 1);
    }

    #[test]
    fn host_refusals_end_the_loop_at_once() {
        let host = MockHost::new();
        host.refuse_shared_writes(Status::InternalFailure);
        let result = update(&host, "k", |_| Some(b"v".to_vec()));
        assert_eq!(result, Err(CasError::Host(Status::InternalFailure)));
        assert_eq!(host.shared_stats().gets, 1);
    }

    #[test]
    fn unknown_keys_are_never_stored() {
        let host = MockHost::new();
        let unknown = KeyGrant {
            status: KeyStatus::Unknown.into(),
            ..KeyGrant::default()
        };
        store(&host, "h", "m", &unknown, None, 1_000);
        assert_eq!(host.shared_stats().sets, 0);
    }
}
