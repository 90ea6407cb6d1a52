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
//! Workers write concurrently and the last writer wins: every writer holds an answer the
//! control plane just gave.

use crate::host::Host;
use prost::Message;
use std::borrow::Cow;
use tollgate_proto::v1::{AuthorizeResponse, KeyGrant, KeyStatus, Route, ServedModel};

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

/// Stores `value` until `expires_at_ms`, replacing whatever the entry held: the answer just
/// received is the control plane's latest word. Keeping a longer-lived entry instead would
/// keep a key admitted after its revocation was learnt, whenever the revoked answer expires
/// sooner (a shortened `key_cache_ttl_ms`, a clock stepped back); and a slower answer
/// cannot be told apart by its expiry, which is counted from its arrival.
pub fn write<E: Entry>(host: &impl Host, entry: &E, value: &E::Value, expires_at_ms: u64) {
    let key = entry.key();
    let mut bytes = Vec::with_capacity(8 + value.encoded_len());
    bytes.extend_from_slice(&expires_at_ms.to_be_bytes());
    value.encode_raw(&mut bytes);
    if let Err(status) = host.set_shared_data(&key, &bytes, None) {
        log::warn!("tollgate: could not cache {key}: {status:?}");
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
    fn the_latest_answer_replaces_a_longer_lived_one() {
        let host = MockHost::new();
        write(&host, &KeyGrantEntry("h"), &grant("active"), 2_000);
        write(&host, &KeyGrantEntry("h"), &grant("revoked"), 1_500);
        assert_eq!(
            read(&host, &KeyGrantEntry("h"), 0).map(|g| g.key_id),
            Some("revoked".into())
        );
    }

    #[test]
    fn a_host_refusal_leaves_the_entry_unwritten() {
        let host = MockHost::new();
        host.refuse_shared_writes(proxy_wasm::types::Status::InternalFailure);
        write(&host, &KeyGrantEntry("h"), &grant("k1"), 1_000);
        assert_eq!(host.shared_value("tg:key:h"), None);
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
