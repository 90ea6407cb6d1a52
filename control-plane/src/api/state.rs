//! `ApiState`: what every handler of the API reads, cloned per request.

use super::caller::Caller;
use super::error::ApiError;
use crate::catalog::LiveCatalog;
use crate::catalog::admin::CatalogAdmin;
use crate::clock::Clock;
use crate::config::ApiSettings;
use crate::sessions::SessionSecret;
use crate::store::Store;
use std::sync::Arc;

/// The API's shared state: the store, the clock, the live catalog, the session secret and
/// the `[api]` settings. Modules add the fields they need.
#[derive(Clone)]
pub struct ApiState {
    /// The database.
    pub store: Store,
    /// The time every decision reads.
    pub clock: Clock,
    /// Providers, models and prices in force.
    pub catalog: LiveCatalog,
    /// Changes the catalog's stored part (providers, models, prices) and puts it in force
    /// in `catalog`.
    pub catalog_admin: CatalogAdmin,
    /// What sessions are signed with.
    pub session_secret: SessionSecret,
    /// `[api]`: session lifetime, CORS, body limit, login limits.
    pub settings: Arc<ApiSettings>,
}

impl ApiState {
    /// Records `caller`'s change `action` (`object.verb`) of `target` (an id or a name,
    /// never a secret) in the audit log, as of now.
    pub async fn audit(&self, caller: &Caller, action: &str, target: &str) -> Result<(), ApiError> {
        let entry = caller.audit_entry(action, target, self.clock.now_ms());
        self.store.record_audit(&entry).await?;
        Ok(())
    }
}
