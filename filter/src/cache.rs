//! Authorization answers cached in Envoy's shared data, so every worker's VM reuses them.
//!
//! Two kinds of entry, each an 8-byte big-endian expiry (Unix ms) followed by a protobuf:
//! `tg:key:<sha256 hex>` holds a [`KeyGrant`], `tg:route:<model>` holds a [`Route`].
//! Only keys that exist and models that are served are stored, so the shared data stays
//! bounded by what the control plane knows, not by what clients send. A route carries the
//! provider's credential and is read for every key: it is stored only from an answer that
//! admitted a call, the only kind the control plane sends a route with.

use prost::Message;
use proxy_wasm::hostcalls;
use tollgate_proto::v1::{AuthorizeResponse, KeyGrant, KeyStatus, Route, ServedModel};

/// Entry holding the list of served models (an `AuthorizeResponse` with only that field).
const MODELS_ENTRY: &str = "tg:models";

fn key_entry(key_hash: &str) -> String {
    format!("tg:key:{key_hash}")
}

fn route_entry(model: &str) -> String {
    format!("tg:route:{model}")
}

fn read<M: Message + Default>(entry: &str, now_ms: u64) -> Option<M> {
    let (bytes, _cas) = hostcalls::get_shared_data(entry).ok()?;
    let bytes = bytes?;
    let (expiry, message) = bytes.split_at_checked(8)?;
    let expiry = u64::from_be_bytes(expiry.try_into().ok()?);
    if expiry <= now_ms {
        return None;
    }
    M::decode(message).ok()
}

fn write<M: Message>(entry: &str, message: &M, expires_at_ms: u64) {
    let mut bytes = Vec::with_capacity(8 + message.encoded_len());
    bytes.extend_from_slice(&expires_at_ms.to_be_bytes());
    message.encode_raw(&mut bytes);
    // Last writer wins: both writers hold a fresh answer from the control plane.
    if let Err(status) = hostcalls::set_shared_data(entry, Some(&bytes), None) {
        log::warn!("tollgate: could not cache {entry}: {status:?}");
    }
}

/// The cached grant of a key, if fresh.
pub fn key(key_hash: &str, now_ms: u64) -> Option<KeyGrant> {
    read(&key_entry(key_hash), now_ms)
}

/// The cached route of a model, if fresh.
pub fn route(model: &str, now_ms: u64) -> Option<Route> {
    read(&route_entry(model), now_ms)
}

/// The cached list of served models, if fresh.
pub fn served_models(now_ms: u64) -> Option<Vec<ServedModel>> {
    read::<AuthorizeResponse>(MODELS_ENTRY, now_ms).map(|r| r.served_models)
}

/// Stores the list of served models.
pub fn store_served_models(models: &[ServedModel], expires_at_ms: u64) {
    let message = AuthorizeResponse {
        served_models: models.to_vec(),
        ..AuthorizeResponse::default()
    };
    write(MODELS_ENTRY, &message, expires_at_ms);
}

/// Stores what the control plane answered, for entries worth keeping; `route` only when
/// the answer admitted the call.
pub fn store(
    key_hash: &str,
    model: &str,
    grant: &KeyGrant,
    route: Option<&Route>,
    expires_at_ms: u64,
) {
    // An unknown key is not stored: anyone can invent hashes, and shared data has no eviction.
    if grant.status() != KeyStatus::Unknown {
        write(&key_entry(key_hash), grant, expires_at_ms);
    }
    if let Some(route) = route {
        write(&route_entry(model), route, expires_at_ms);
    }
}
