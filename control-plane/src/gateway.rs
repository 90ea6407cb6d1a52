//! The gRPC API the Envoy filter calls: key lookups and usage reports.
//!
//! Only the filter may call it: every call must carry the token both share, checked before
//! its message is read. A key lookup never waits behind usage reports: reports hold at
//! most half the database connections.

use crate::config::Config;
use crate::store::{Store, UsageRow};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Semaphore;
use tollgate_core::access::{self, KeyState};
use tollgate_core::sidecar::SidecarToken;
use tollgate_core::tokens;
use tollgate_core::usage::Usage;
use tollgate_proto::v1::gateway_server::{Gateway, GatewayServer};
use tollgate_proto::v1::{
    AuthorizeRequest, AuthorizeResponse, Estimate, KeyGrant, KeyStatus, Route, ServedModel,
    UsageAck, UsageBatch, UsageRecord,
};
use tonic::service::{Interceptor, interceptor::InterceptedService};
use tonic::{Request, Response, Status};

/// Most records accepted in one report; the filter sends at most 1000.
const MAX_BATCH: usize = 10_000;

/// The service, with the state it reads.
pub struct GatewayService {
    config: Arc<Config>,
    store: Store,
    /// Usage reports handled at once; the rest wait here, not for a database connection.
    report_permits: Semaphore,
}

/// The gRPC service as served: [`GatewayService`] behind the token check.
pub type Server = InterceptedService<GatewayServer<GatewayService>, SidecarAuth>;

/// The tonic server for [`GatewayService`], answering only calls that carry `token`.
pub fn server(config: Arc<Config>, store: Store, token: SidecarToken) -> Server {
    let report_permits = Semaphore::new(store.usage_writers());
    let service = GatewayServer::new(GatewayService {
        config,
        store,
        report_permits,
    })
    // Set here rather than left to tonic's default: the filter sizes its batches from it.
    .max_decoding_message_size(tollgate_proto::MAX_MESSAGE_BYTES);
    InterceptedService::new(service, SidecarAuth::new(token))
}

/// Refuses, with UNAUTHENTICATED and before the message is decoded, any call whose
/// `authorization` metadata does not carry the filter's token.
#[derive(Clone)]
pub struct SidecarAuth {
    token: Arc<SidecarToken>,
    refused: Arc<AtomicU64>,
}

impl SidecarAuth {
    fn new(token: SidecarToken) -> Self {
        Self {
            token: Arc::new(token),
            refused: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Interceptor for SidecarAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request.metadata().get("authorization");
        if presented.is_some_and(|v| self.token.accepts(v.as_bytes())) {
            return Ok(request);
        }
        // Counted, and logged at powers of two: a caller hammering the port cannot flood the log.
        let refused = self
            .refused
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if refused.is_power_of_two() {
            tracing::warn!(
                remote = ?request.remote_addr(),
                token_sent = presented.is_some(),
                refused,
                "gRPC call without the filter's token refused (check the filter's control_plane_token)"
            );
        }
        Err(Status::unauthenticated(
            "this API answers only the gateway's filter",
        ))
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!("gateway: {e}");
    Status::internal("control plane storage error")
}

impl GatewayService {
    fn route(&self, model: &str) -> Option<Route> {
        let model = self.config.models.get(model)?;
        let provider = self.config.providers.get(&model.provider)?;
        Some(Route {
            provider: provider.name.clone(),
            auth_header: provider.auth_header.clone(),
            auth_value: provider.auth_value.clone().unwrap_or_default(),
            kind: provider.kind.name().to_owned(),
            upstream_model: model.upstream_model.clone().unwrap_or_default(),
            timeout_ms: provider.timeout_ms,
            forward_headers: provider.forward_headers.clone(),
            allow_background: provider.allow_background,
        })
    }

    fn served_models(&self) -> Vec<ServedModel> {
        let mut models: Vec<ServedModel> = self
            .config
            .models
            .values()
            .map(|m| ServedModel {
                name: m.name.clone(),
                provider: m.provider.clone(),
            })
            .collect();
        models.sort_by(|a, b| a.name.cmp(&b.name));
        models
    }

    /// Prices a record with the current price table; an unpriced model costs nothing
    /// (config validation makes that "marked free"), never a guess.
    fn usage_row(&self, r: UsageRecord) -> UsageRow {
        let usage = match &r.estimate {
            Some(estimate) => estimated_usage(&r.model, estimate, r.partial),
            None => Usage {
                input_uncached: r.input_uncached,
                cache_read: r.cache_read,
                cache_write: r.cache_write,
                output: r.output,
                reasoning: r.reasoning,
                estimated: r.estimated,
                partial: r.partial,
            },
        };
        let cost = match self.config.models.get(&r.model) {
            Some(m) => m.price.cost_picos(&usage),
            None => {
                tracing::warn!(model = %r.model, request_id = %r.request_id, "usage for a model no longer configured; cost recorded as 0");
                0
            }
        };
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        UsageRow {
            request_id: r.request_id,
            key_id: r.key_id,
            model: r.model,
            provider: r.provider,
            status: i64::from(r.status),
            input_uncached: clamp(usage.input_uncached),
            cache_read: clamp(usage.cache_read),
            cache_write: clamp(usage.cache_write),
            output: clamp(usage.output),
            reasoning: clamp(usage.reasoning),
            estimated: usage.estimated,
            partial: usage.partial,
            cost_picos: clamp(cost),
            finished_at_ms: r.finished_at_ms,
            duration_ms: i64::from(r.duration_ms),
        }
    }
}

/// Counts what the filter saw of a call whose provider reported no usage, with the
/// model's tokenizer; texts cut to a bound are scaled by bytes.
fn estimated_usage(model: &str, e: &Estimate, partial: bool) -> Usage {
    let prompt = e.counted_prompt_tokens.unwrap_or_else(|| {
        let kept_bytes: usize = e.prompt_texts.iter().map(String::len).sum();
        let counted: u64 = e.prompt_texts.iter().map(|t| tokens::count(model, t)).sum();
        e.prompt_overhead + tokens::scale(counted, kept_bytes as u64, e.prompt_bytes)
    });
    let output = tokens::scale(
        tokens::count(model, &e.output_text),
        e.output_text.len() as u64,
        e.output_bytes,
    );
    Usage {
        input_uncached: prompt,
        output,
        estimated: true,
        partial,
        ..Usage::default()
    }
}

#[tonic::async_trait]
impl Gateway for GatewayService {
    async fn authorize(
        &self,
        request: Request<AuthorizeRequest>,
    ) -> Result<Response<AuthorizeResponse>, Status> {
        let req = request.into_inner();
        let key = self
            .store
            .key_by_hash(&req.key_hash)
            .await
            .map_err(internal)?;
        let (state, grant) = match key {
            None => (KeyState::Unknown, KeyGrant::default()),
            Some(k) => {
                let (state, status) = if k.revoked_at_ms.is_some() {
                    (KeyState::Revoked, KeyStatus::Revoked)
                } else {
                    (KeyState::Active, KeyStatus::Active)
                };
                let grant = KeyGrant {
                    status: status as i32,
                    key_id: k.id,
                    allowed_models: k.models,
                };
                (state, grant)
            }
        };
        tracing::debug!(key_id = %grant.key_id, model = %req.model, status = ?grant.status(), "authorize");
        let listing = req.model.is_empty();
        let route = if listing {
            None
        } else {
            self.route(&req.model)
        };
        let model_served = route.is_some();
        // The provider's credential goes only with a call the filter will admit, by the
        // same decision the filter makes.
        let admitted =
            access::decide(state, &grant.allowed_models, &req.model, model_served).is_ok();
        Ok(Response::new(AuthorizeResponse {
            key: Some(grant),
            route: route.filter(|_| admitted),
            cache_ttl_ms: self.config.key_cache_ttl_ms,
            served_models: if listing {
                self.served_models()
            } else {
                Vec::new()
            },
            model_served,
        }))
    }

    async fn report_usage(
        &self,
        request: Request<UsageBatch>,
    ) -> Result<Response<UsageAck>, Status> {
        let _permit = self
            .report_permits
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the control plane is shutting down"))?;
        let records = request.into_inner().records;
        if records.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_BATCH} records per batch"
            )));
        }
        let total = records.len();
        let rows: Vec<UsageRow> = records.into_iter().map(|r| self.usage_row(r)).collect();
        let stored = self.store.insert_usage(&rows).await.map_err(internal)?;
        let stored = u32::try_from(stored).unwrap_or(u32::MAX);
        let duplicates = u32::try_from(total)
            .unwrap_or(u32::MAX)
            .saturating_sub(stored);
        tracing::debug!(stored, duplicates, "usage batch");
        Ok(Response::new(UsageAck { stored, duplicates }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_count_and_scale() {
        let e = Estimate {
            prompt_texts: vec!["hello world".into(), "Hello".into()],
            prompt_overhead: 10,
            prompt_bytes: 16,
            output_text: "hello world".into(),
            output_bytes: 22, // only half of the output was kept
            counted_prompt_tokens: None,
        };
        let u = estimated_usage("gpt-4o", &e, true);
        assert_eq!((u.input_uncached, u.output), (10 + 2 + 1, 4));
        assert!(u.estimated && u.partial);
        let exact = Estimate {
            counted_prompt_tokens: Some(99),
            ..e
        };
        assert_eq!(estimated_usage("gpt-4o", &exact, false).input_uncached, 99);
    }
}
