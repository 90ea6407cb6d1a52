//! `GET /v1/models` and `GET /v1/models/{id}`, answered by the gateway from what the key
//! may use: the provider is never asked.

use super::{Request, key_state};
use crate::{cache, clock};
use serde_json::json;
use tollgate_core::access::{self, KeyState};
use tollgate_core::endpoints::Endpoint;
use tollgate_core::errors::ApiError;
use tollgate_proto::v1::{KeyGrant, ServedModel};

impl Request {
    /// `/v1/models` from cached facts, or `None` if the control plane must be asked.
    pub(super) fn models_from_cache(&self) -> Option<Result<(u16, Vec<u8>), ApiError>> {
        let now = clock::now_ms();
        let grant = cache::key(&self.key_hash, now)?;
        let served = cache::served_models(now)?;
        Some(self.models_answer(&grant, &served))
    }

    /// The body of `GET /v1/models` or `GET /v1/models/{id}` for this key.
    pub(super) fn models_answer(
        &self,
        grant: &KeyGrant,
        served: &[ServedModel],
    ) -> Result<(u16, Vec<u8>), ApiError> {
        match key_state(grant) {
            KeyState::Active => {}
            state => {
                access::decide(state, &[], "", true)?;
            }
        }
        let visible = served
            .iter()
            .filter(|m| grant.allowed_models.is_empty() || grant.allowed_models.contains(&m.name));
        let object = |m: &ServedModel| json!({"id": m.name, "object": "model", "created": 0, "owned_by": m.provider});
        let body = match &self.endpoint {
            Some(Endpoint::GetModel(id)) => {
                let m = visible.into_iter().find(|m| &m.name == id).ok_or_else(|| {
                    tollgate_core::refusal::Refusal::ModelNotFound { model: id.clone() }
                })?;
                object(m)
            }
            _ => json!({"object": "list", "data": visible.map(object).collect::<Vec<_>>()}),
        };
        Ok((200, serde_json::to_vec(&body).unwrap_or_default()))
    }
}
