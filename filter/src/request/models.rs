//! `GET /v1/models` and `GET /v1/models/{id}`, answered by the gateway from what the key
//! may use: the provider is never asked.

use super::admission::{Target, key_state};
use crate::cache::{self, KeyGrantEntry, ServedModelsEntry};
use crate::host::Host;
use serde_json::json;
use tollgate_core::access::{self, KeyState};
use tollgate_core::endpoints::Endpoint;
use tollgate_core::refusal::Refusal;
use tollgate_proto::v1::{KeyGrant, ServedModel};

/// The answer from cached facts, or `None` if the control plane must be asked.
pub(super) fn from_cache(
    host: &impl Host,
    target: &Target,
    now_ms: u64,
) -> Option<Result<Vec<u8>, Refusal>> {
    let grant = cache::read(host, &KeyGrantEntry(&target.key_hash), now_ms)?;
    let served = cache::read(host, &ServedModelsEntry, now_ms)?.served_models;
    Some(answer(&target.endpoint, &grant, &served))
}

/// The 200 body of `GET /v1/models` or `GET /v1/models/{id}` for this key.
pub(super) fn answer(
    endpoint: &Endpoint,
    grant: &KeyGrant,
    served: &[ServedModel],
) -> Result<Vec<u8>, Refusal> {
    match key_state(grant) {
        KeyState::Active => {}
        state => access::decide(state, &[], "", true)?,
    }
    let visible = served
        .iter()
        .filter(|m| grant.allowed_models.is_empty() || grant.allowed_models.contains(&m.name));
    let object = |m: &ServedModel| json!({"id": m.name, "object": "model", "created": 0, "owned_by": m.provider});
    let body = match endpoint {
        Endpoint::GetModel(id) => {
            let m = visible
                .into_iter()
                .find(|m| &m.name == id)
                .ok_or_else(|| Refusal::ModelNotFound { model: id.clone() })?;
            object(m)
        }
        _ => json!({"object": "list", "data": visible.map(object).collect::<Vec<_>>()}),
    };
    Ok(serde_json::to_vec(&body).unwrap_or_default())
}
