//! The gRPC API the Envoy filter calls: key lookups, usage reports, and leases of budget
//! money and of rate-limit shares.
//!
//! Only the filter may call it: every call must carry the token both share, checked before
//! its message is read. A key lookup never waits behind usage reports: reports hold at
//! most half the database connections.

use crate::budgets::{Subject, subjects_of};
use crate::catalog::{Catalog, LiveCatalog};
use crate::clock::Clock;
use crate::config::{BudgetSettings, GatewaySettings, LimitSettings};
use crate::keys::{self, Standing};
use crate::shares::{self, Grant, ShareAsk, ShareSubject};
use crate::store::{KeyGrantRow, LeaseAsk, LeaseOutcome, Limits, PoolAsk, Store, UsageRow};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Semaphore;
use tollgate_core::access::{self, KeyState};
use tollgate_core::sample;
use tollgate_core::sidecar::SidecarToken;
use tollgate_core::tokens;
use tollgate_core::usage::Usage;
use tollgate_proto::v1::gateway_server::{Gateway, GatewayServer};
use tollgate_proto::v1::{
    AuthorizeRequest, AuthorizeResponse, BudgetRef, Estimate, KeyGrant, KeyStatus, LeaseAnswer,
    LeaseRequest, ModelPrice, RateLimit, Route, ServedModel, ShareAnswer, ShareRequest, TextSample,
    UsageAck, UsageBatch, UsageRecord, lease_answer, share_answer,
};
use tonic::service::{Interceptor, interceptor::InterceptedService};
use tonic::{Request, Response, Status};

/// Most records accepted in one report; the filter sends at most 1000.
const MAX_BATCH: usize = 10_000;

/// Batches whose estimates are counted at once, each on a blocking thread: half the
/// cores, at least one. The async workers that answer `Authorize` never tokenize, and a
/// burst of estimates waits its turn instead of taking every core.
fn counting_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Most bytes of one text sample tokenized; the filter sends at most 32 KiB of prompt and
/// 16 KiB of output, so only a record from elsewhere meets this, and its count is scaled.
/// Measured (release, `o200k_base`), 64 KiB takes 3 ms of prose and at most ~60 ms of the
/// slowest text found (letters without spaces), so with the 4 MiB gRPC message limit a
/// batch's counting is bounded to a few seconds of one thread.
const MAX_COUNTED_BYTES: usize = 64 * 1024;

/// Longest budget id, holder id or lease id accepted in a lease request, in bytes.
const MAX_ID_BYTES: usize = 128;

/// Longest subject accepted in a share request, in bytes: a key id and a model name.
const MAX_SUBJECT_BYTES: usize = 512;

/// The service, with the state it reads.
pub struct GatewayService {
    /// Routes and prices; each call reads the snapshot in force when it starts.
    catalog: LiveCatalog,
    settings: GatewaySettings,
    /// Limits of keys without their own.
    limits: LimitSettings,
    /// How long leases live.
    budgets: BudgetSettings,
    /// The time leases are granted at.
    clock: Clock,
    store: Store,
    /// Usage reports handled at once; the rest wait here, not for a database connection.
    report_permits: Semaphore,
    /// Estimates counted at once, on blocking threads.
    counting: Arc<Semaphore>,
}

/// The gRPC service as served: [`GatewayService`] behind the token check.
pub type Server = InterceptedService<GatewayServer<GatewayService>, SidecarAuth>;

/// What [`GatewayService`] serves from, beside the database.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `[gateway]`.
    pub gateway: GatewaySettings,
    /// `[limits]`.
    pub limits: LimitSettings,
    /// `[budgets]`.
    pub budgets: BudgetSettings,
    /// The time every lease is granted at.
    pub clock: Clock,
}

/// The tonic server for [`GatewayService`], answering only calls that carry `token`.
pub fn server(
    catalog: LiveCatalog,
    settings: Settings,
    store: Store,
    token: SidecarToken,
) -> Server {
    let service = GatewayServer::new(GatewayService::new(catalog, settings, store))
        // Set here rather than left to tonic's default: the filter sizes its batches from it.
        .max_decoding_message_size(tollgate_proto::MAX_MESSAGE_BYTES);
    InterceptedService::new(service, SidecarAuth::new(token))
}

impl GatewayService {
    /// The service over `store`, with the catalog in force and the process's settings.
    pub fn new(catalog: LiveCatalog, settings: Settings, store: Store) -> Self {
        let report_permits = Semaphore::new(store.usage_writers());
        GatewayService {
            catalog,
            settings: settings.gateway,
            limits: settings.limits,
            budgets: settings.budgets,
            clock: settings.clock,
            store,
            report_permits,
            counting: Arc::new(Semaphore::new(counting_jobs())),
        }
    }
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

/// The route to `model` as the filter receives it, priced as at `now_ms`.
fn route(catalog: &Catalog, model: &str, now_ms: i64) -> Option<Route> {
    let (model, provider) = catalog.route(model)?;
    let price = model.prices.at(now_ms);
    Some(Route {
        provider: provider.name.clone(),
        auth_header: provider.auth_header.clone(),
        auth_value: provider.auth_value.clone().unwrap_or_default(),
        kind: provider.kind.name().to_owned(),
        upstream_model: model.upstream_model.clone().unwrap_or_default(),
        timeout_ms: provider.timeout_ms,
        forward_headers: provider.forward_headers.clone(),
        allow_background: provider.allow_background,
        price: Some(ModelPrice {
            input: price.input,
            output: price.output,
            cache_read: price.cache_read,
            cache_write: price.cache_write,
            max_output_tokens: model.max_output_tokens,
        }),
    })
}

/// Every served model, by name, for a listing.
fn served_models(catalog: &Catalog) -> Vec<ServedModel> {
    let mut models: Vec<ServedModel> = catalog
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

impl GatewayService {
    /// The rows of `records`, all priced by one catalog snapshot; estimates are tokenized
    /// on a blocking thread, at most [`counting_jobs`] batches at once, so `Authorize`
    /// never waits behind them.
    async fn usage_rows(&self, records: Vec<UsageRecord>) -> Result<Vec<UsageRow>, Status> {
        let catalog = self.catalog.current();
        if records.iter().all(|r| r.estimate.is_none()) {
            return Ok(records
                .into_iter()
                .map(|r| usage_row(&catalog, r))
                .collect());
        }
        let _permit = self.counting.acquire().await.map_err(internal)?;
        tokio::task::spawn_blocking(move || {
            records
                .into_iter()
                .map(|r| usage_row(&catalog, r))
                .collect()
        })
        .await
        .map_err(internal)
    }
}

/// Prices a record at the price in force when its call was admitted (when it finished,
/// less its duration), from the catalog in force or, for a model removed since, its last
/// prices; a model never served costs nothing, never a guess.
fn usage_row(catalog: &Catalog, mut r: UsageRecord) -> UsageRow {
    let reported = Usage {
        input_uncached: r.input_uncached,
        cache_read: r.cache_read,
        cache_write: r.cache_write,
        output: r.output,
        reasoning: r.reasoning,
        estimated: r.estimated,
        partial: r.partial,
    };
    let usage = match r.estimate.take() {
        Some(estimate) => estimated_usage(&r.model, estimate, reported),
        None => reported,
    };
    let admitted_at_ms = r.finished_at_ms.saturating_sub(i64::from(r.duration_ms));
    let cost = match catalog.price_at(&r.model, admitted_at_ms) {
        Some(price) => price.cost_picos(&usage),
        None => {
            tracing::warn!(model = %r.model, request_id = %r.request_id, "usage for a model never configured; cost recorded as 0");
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
        user: Some(r.user).filter(|u| !u.is_empty()),
        team: Some(r.team).filter(|t| !t.is_empty()),
        lease_ids: r.lease_ids,
        lease_charge_picos: clamp(r.lease_charge_picos),
        done_lease_ids: r.done_lease_ids,
    }
}

/// Why a lease request is malformed, or `None` when it is well formed.
fn lease_request_problem(req: &LeaseRequest) -> Option<&'static str> {
    let id_ok = |id: &str, empty_ok: bool| (empty_ok || !id.is_empty()) && id.len() <= MAX_ID_BYTES;
    if !id_ok(&req.budget_id, false) {
        Some("budget_id must be 1 to 128 bytes")
    } else if !id_ok(&req.holder, false) {
        Some("holder must be 1 to 128 bytes")
    } else if !id_ok(&req.lease_id, true) {
        Some("lease_id must be at most 128 bytes")
    } else if req.need_picos > req.want_picos {
        Some("need_picos must not exceed want_picos")
    } else if i64::try_from(req.want_picos).is_err() {
        Some("want_picos must be at most 9223372036854775807")
    } else {
        None
    }
}

/// A share request's subject and measure, or why it is malformed (naming the field).
fn share_request_target(
    req: &ShareRequest,
) -> Result<(ShareSubject, tollgate_core::limits::Measure), &'static str> {
    let subject = Some(req.subject.as_str())
        .filter(|s| s.len() <= MAX_SUBJECT_BYTES)
        .and_then(ShareSubject::parse)
        .ok_or(
            "subject must be key:<key id>, user:<name> or key_model:<key id>:<model>, \
             at most 512 bytes",
        )?;
    let measure =
        shares::measure_named(&req.measure).ok_or("measure must be `requests` or `tokens`")?;
    if req.holder.is_empty() || req.holder.len() > MAX_ID_BYTES {
        return Err("holder must be 1 to 128 bytes");
    }
    if req.need > req.want {
        return Err("need must not exceed want");
    }
    Ok((subject, measure))
}

impl GatewayService {
    /// The grant of an active key: its own limits, its user's, its per-model ones (each
    /// resolved against the config's defaults) and every budget that applies to it.
    async fn active_grant(&self, row: KeyGrantRow) -> Result<KeyGrant, Status> {
        let k = row.key;
        let user = k.user.unwrap_or_default();
        let team = k.team.unwrap_or_default();
        let subjects = subjects_of(&k.id, &user, &team);
        let (model_limits, budgets) = self
            .store
            .model_limits_and_budgets(&k.id, &subjects)
            .await
            .map_err(internal)?;
        let mut rate_limits = Vec::new();
        if !user.is_empty() {
            let limits = self.limits.user_limits(row.user_limits);
            if !limits.is_empty() {
                rate_limits.push(RateLimit {
                    subject: Subject::User(user.clone()).to_string(),
                    model: String::new(),
                    requests_per_minute: limits.requests_per_minute,
                    tokens_per_minute: limits.tokens_per_minute,
                });
            }
        }
        rate_limits.extend(model_limits.into_iter().map(|m| RateLimit {
            subject: format!("key_model:{}:{}", k.id, m.model),
            model: m.model,
            requests_per_minute: m.limits.requests_per_minute,
            tokens_per_minute: m.limits.tokens_per_minute,
        }));
        let own = self.limits.key_limits(Limits {
            requests_per_minute: k.requests_per_minute,
            tokens_per_minute: k.tokens_per_minute,
        });
        Ok(KeyGrant {
            status: KeyStatus::Active as i32,
            requests_per_minute: own.requests_per_minute,
            tokens_per_minute: own.tokens_per_minute,
            key_id: k.id,
            allowed_models: k.models,
            user,
            team,
            rate_limits,
            budgets: budgets
                .into_iter()
                .map(|b| BudgetRef {
                    budget_id: b.id,
                    subject: b.subject,
                    period: b.period.as_str().to_owned(),
                    limit_picos: b.limit_picos,
                })
                .collect(),
        })
    }

    /// The limit per minute `subject` has for `measure` now, resolved as
    /// [`Self::active_grant`] resolves it for the key's grant (defaults included);
    /// `None`: unlimited, or a key that does not exist (its calls are refused anyway).
    async fn share_limit(
        &self,
        subject: &ShareSubject,
        measure: tollgate_core::limits::Measure,
    ) -> Result<Option<u64>, Status> {
        let limits = match subject {
            ShareSubject::Key(id) => match self.store.key_by_id(id).await.map_err(internal)? {
                None => return Ok(None),
                Some(k) => self.limits.key_limits(Limits {
                    requests_per_minute: k.requests_per_minute,
                    tokens_per_minute: k.tokens_per_minute,
                }),
            },
            ShareSubject::User(name) => self
                .limits
                .user_limits(self.store.user_limits(name).await.map_err(internal)?),
            ShareSubject::KeyModel { key_id, model } => {
                let (models, _) = self
                    .store
                    .model_limits_and_budgets(key_id, &[])
                    .await
                    .map_err(internal)?;
                match models.into_iter().find(|m| &m.model == model) {
                    None => return Ok(None),
                    Some(m) => m.limits,
                }
            }
        };
        Ok(shares::per_minute(measure, limits))
    }
}

/// Tokens of a text sample as `model` counts them, bounded in work.
fn count_sample(model: &str, s: TextSample) -> u64 {
    let sample = sample::TextSample {
        pieces: s.pieces,
        total_bytes: s.total_bytes,
    };
    sample.tokens(MAX_COUNTED_BYTES, |piece| tokens::count(model, piece))
}

/// Applies what the filter saw of a call to what its provider reported, as gateway.proto's
/// `Estimate` defines: a counted prompt replaces the reported one, a counted output raises
/// the reported one.
fn estimated_usage(model: &str, e: Estimate, reported: Usage) -> Usage {
    let overhead = e.prompt_overhead;
    let prompt = match (e.counted_prompt_tokens, e.prompt) {
        (Some(exact), _) => Some(exact),
        (None, Some(p)) => Some(overhead.saturating_add(count_sample(model, p))),
        (None, None) => None,
    };
    let output = e.output.map(|o| count_sample(model, o));
    reported.with_counts(prompt, output)
}

#[tonic::async_trait]
impl Gateway for GatewayService {
    async fn authorize(
        &self,
        request: Request<AuthorizeRequest>,
    ) -> Result<Response<AuthorizeResponse>, Status> {
        let req = request.into_inner();
        let started = std::time::Instant::now();
        let key = self
            .store
            .key_grant_by_hash(&req.key_hash)
            .await
            .map_err(internal)?;
        if let Some(metrics) = crate::metrics::global() {
            metrics.store_latency("key_grant", started.elapsed().as_secs_f64());
        }
        let now_ms = self.clock.now_ms();
        // How long the filter may keep this answer: never past the instant the key's
        // standing changes on its own (its expiry, or the end of a rotation's grace).
        let mut cache_ttl_ms = self.settings.key_cache_ttl_ms;
        let (state, grant) = match key {
            None => (KeyState::Unknown, KeyGrant::default()),
            // A disabled user's keys are refused as revoked ones are, until re-enabled.
            Some(row) => match if row.owner_disabled {
                Standing::Revoked
            } else {
                keys::standing(&row.key, row.secret, now_ms)
            } {
                Standing::Usable { until_ms } => {
                    if let Some(until) = until_ms {
                        let left = until.saturating_sub(now_ms).clamp(0, i64::from(u32::MAX));
                        cache_ttl_ms = cache_ttl_ms.min(u32::try_from(left).unwrap_or(0));
                    }
                    (KeyState::Active, self.active_grant(row).await?)
                }
                Standing::Revoked | Standing::Expired | Standing::SecretRetired => (
                    KeyState::Revoked,
                    KeyGrant {
                        status: KeyStatus::Revoked as i32,
                        key_id: row.key.id,
                        allowed_models: row.key.models,
                        ..KeyGrant::default()
                    },
                ),
            },
        };
        tracing::debug!(key_id = %grant.key_id, model = %req.model, status = ?grant.status(), "authorize");
        let catalog = self.catalog.current();
        let listing = req.model.is_empty();
        let route = if listing {
            None
        } else {
            route(&catalog, &req.model, self.clock.now_ms())
        };
        let model_served = route.is_some();
        // The provider's credential goes only with a call the filter will admit, by the
        // same decision the filter makes.
        let decision = access::decide(state, &grant.allowed_models, &req.model, model_served);
        if let (Err(refusal), Some(metrics)) = (&decision, crate::metrics::global()) {
            metrics.refused(refusal.code());
        }
        let admitted = decision.is_ok();
        Ok(Response::new(AuthorizeResponse {
            key: Some(grant),
            route: route.filter(|_| admitted),
            cache_ttl_ms,
            served_models: if listing {
                served_models(&catalog)
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
        let rows = self.usage_rows(records).await?;
        let started = std::time::Instant::now();
        let stored = self.store.insert_usage(&rows).await.map_err(internal)?;
        if let Some(metrics) = crate::metrics::global() {
            metrics.store_latency("insert_usage", started.elapsed().as_secs_f64());
            metrics.usage_stored(&rows, stored, self.clock.now_ms());
        }
        let stored = u32::try_from(stored).unwrap_or(u32::MAX);
        let duplicates = u32::try_from(total)
            .unwrap_or(u32::MAX)
            .saturating_sub(stored);
        tracing::debug!(stored, duplicates, "usage batch");
        Ok(Response::new(UsageAck { stored, duplicates }))
    }

    async fn lease_share(
        &self,
        request: Request<ShareRequest>,
    ) -> Result<Response<ShareAnswer>, Status> {
        let req = request.into_inner();
        let (subject, measure) = share_request_target(&req).map_err(Status::invalid_argument)?;
        let Some(limit) = self.share_limit(&subject, measure).await? else {
            tracing::debug!(subject = %req.subject, measure = %req.measure, holder = %req.holder, "share asked of a subject without that limit: unlimited");
            if req.release > 0 {
                // The limit was lifted while the holder held share: what it gives back
                // still comes off the pool, or a limit set again before the lease is
                // reclaimed would start short of it.
                let release = PoolAsk {
                    subject: &req.subject,
                    measure,
                    holder: &req.holder,
                    limit: u64::MAX,
                    ask: ShareAsk {
                        want: 0,
                        need: 0,
                        release: req.release,
                    },
                    releasing: Some(req.lease_id.as_str()).filter(|id| !id.is_empty()),
                    now_ms: self.clock.now_ms(),
                    ttl_ms: self.limits.share_ttl_ms,
                };
                self.store.lease_share(release).await.map_err(internal)?;
            }
            return Ok(Response::new(ShareAnswer {
                outcome: share_answer::Outcome::Unlimited as i32,
                ..ShareAnswer::default()
            }));
        };
        let ask = PoolAsk {
            subject: &req.subject,
            measure,
            holder: &req.holder,
            limit,
            ask: ShareAsk {
                want: req.want,
                need: req.need,
                release: req.release,
            },
            releasing: Some(req.lease_id.as_str()).filter(|id| !id.is_empty()),
            now_ms: self.clock.now_ms(),
            ttl_ms: self.limits.share_ttl_ms,
        };
        let lease = self.store.lease_share(ask).await.map_err(internal)?;
        let (outcome, granted) = match lease.grant {
            Grant::Granted(granted) => {
                tracing::debug!(subject = %req.subject, measure = %req.measure, holder = %req.holder, lease_id = %lease.lease_id, granted, released = lease.released, share = lease.share, available = lease.available, "share granted");
                (share_answer::Outcome::Granted, granted)
            }
            Grant::Exhausted => {
                // A renewal or release (need 0) refuses no call: only a call's ask is news.
                if req.need == 0 {
                    tracing::debug!(subject = %req.subject, measure = %req.measure, holder = %req.holder, limit, available = lease.available, "share renewal found the limit fully assigned");
                } else {
                    tracing::info!(subject = %req.subject, measure = %req.measure, holder = %req.holder, need = req.need, limit, available = lease.available, "rate limit exhausted across Envoys: a call is refused");
                }
                (share_answer::Outcome::Exhausted, 0)
            }
        };
        Ok(Response::new(ShareAnswer {
            outcome: outcome as i32,
            lease_id: lease.lease_id,
            granted,
            share: lease.share,
            expires_at_ms: lease.expires_at_ms,
            limit,
            available: lease.available,
        }))
    }

    async fn lease_budget(
        &self,
        request: Request<LeaseRequest>,
    ) -> Result<Response<LeaseAnswer>, Status> {
        let req = request.into_inner();
        if let Some(problem) = lease_request_problem(&req) {
            return Err(Status::invalid_argument(problem));
        }
        let ask = LeaseAsk {
            budget_id: &req.budget_id,
            holder: &req.holder,
            lease_id: Some(req.lease_id.as_str()).filter(|id| !id.is_empty()),
            want_picos: req.want_picos,
            need_picos: req.need_picos,
            now_ms: self.clock.now_ms(),
            ttl_ms: self.budgets.lease_ttl_ms,
        };
        let outcome = self.store.lease(ask).await.map_err(internal)?;
        let answer = match outcome {
            LeaseOutcome::Granted(lease) => {
                tracing::debug!(budget_id = %req.budget_id, holder = %req.holder, lease_id = %lease.lease_id, granted = lease.granted_picos, "lease granted");
                LeaseAnswer {
                    outcome: lease_answer::Outcome::Granted as i32,
                    lease_id: lease.lease_id,
                    granted_picos: lease.granted_picos,
                    lease_total_picos: lease.total_picos,
                    expires_at_ms: lease.expires_at_ms,
                    window_end_ms: lease.window_end_ms,
                    available_picos: lease.available_picos,
                }
            }
            LeaseOutcome::Exhausted {
                available_picos,
                window_end_ms,
            } => {
                // A renewal ahead of need (need 0) refuses no call: only a call's ask is news.
                if req.need_picos == 0 {
                    tracing::debug!(budget_id = %req.budget_id, holder = %req.holder, available = available_picos, "lease renewal found the budget spent");
                } else {
                    tracing::info!(budget_id = %req.budget_id, holder = %req.holder, need = req.need_picos, available = available_picos, "budget exhausted: a call is refused");
                }
                LeaseAnswer {
                    outcome: lease_answer::Outcome::Exhausted as i32,
                    window_end_ms,
                    available_picos,
                    ..LeaseAnswer::default()
                }
            }
            LeaseOutcome::UnknownBudget => LeaseAnswer {
                outcome: lease_answer::Outcome::UnknownBudget as i32,
                ..LeaseAnswer::default()
            },
        };
        Ok(Response::new(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::collections::HashMap;

    fn whole(texts: &[&str]) -> TextSample {
        TextSample {
            pieces: texts.iter().map(|t| (*t).to_owned()).collect(),
            total_bytes: texts.iter().map(|t| t.len() as u64).sum(),
        }
    }

    #[test]
    fn estimates_count_and_scale() {
        let e = Estimate {
            prompt: Some(whole(&["hello world", "Hello"])),
            prompt_overhead: 10,
            // Half of the output was kept: (2 tokens + 1 allowance) scaled by 22 / 11.
            output: Some(TextSample {
                pieces: vec!["hello world".into()],
                total_bytes: 22,
            }),
            counted_prompt_tokens: None,
        };
        let reported = Usage {
            partial: true,
            ..Usage::default()
        };
        let u = estimated_usage("gpt-4o", e.clone(), reported);
        assert_eq!((u.input_uncached, u.output), (10 + 2 + 1, 6));
        assert!(u.estimated && u.partial);
        let exact = Estimate {
            counted_prompt_tokens: Some(99),
            ..e
        };
        assert_eq!(
            estimated_usage("gpt-4o", exact, reported).input_uncached,
            99
        );
    }

    #[test]
    fn a_call_is_priced_by_the_price_in_force_when_it_was_admitted() {
        use crate::catalog::{Model, PriceChange, PriceSchedule, Provider};
        use tollgate_core::pricing::Price;
        let per_input = |input| PriceChange {
            effective_from_ms: 0,
            price: Price {
                input,
                ..Price::default()
            },
        };
        // $1 per 1M input tokens until t = 10 000, then $3.
        let prices = PriceSchedule::from_changes([
            per_input(1_000_000),
            PriceChange {
                effective_from_ms: 10_000,
                ..per_input(3_000_000)
            },
        ])
        .unwrap();
        let catalog = Catalog {
            providers: HashMap::from([("p".to_owned(), Provider::for_tests("p"))]),
            models: HashMap::from([(
                "m".to_owned(),
                Model {
                    name: "m".into(),
                    provider: "p".into(),
                    upstream_model: None,
                    prices,
                    max_output_tokens: 100,
                },
            )]),
            retired_prices: HashMap::new(),
        };
        let call = |finished_at_ms, duration_ms| UsageRecord {
            model: "m".into(),
            input_uncached: 1_000,
            finished_at_ms,
            duration_ms,
            ..UsageRecord::default()
        };
        // Admitted at 9 000, finished after the change: the price of its admission.
        assert_eq!(
            usage_row(&catalog, call(12_000, 3_000)).cost_picos,
            1_000_000_000
        );
        assert_eq!(
            usage_row(&catalog, call(12_000, 1_000)).cost_picos,
            3_000_000_000
        );
        assert_eq!(
            usage_row(&catalog, call(10_000, 0)).cost_picos,
            3_000_000_000
        );
    }

    #[test]
    fn a_cut_stream_is_billed_the_larger_output() {
        let reported = Usage {
            input_uncached: 12,
            cache_read: 3,
            output: 1, // Anthropic's placeholder in message_start
            ..Usage::default()
        };
        let e = Estimate {
            output: Some(whole(&["Hello from the claude provider, here is a story"])),
            ..Estimate::default()
        };
        let u = estimated_usage("claude-sonnet", e.clone(), reported);
        assert_eq!(
            (u.input_uncached, u.cache_read),
            (12, 3),
            "reported prompt kept"
        );
        assert_eq!(
            u.output,
            tokens::count(
                "claude-sonnet",
                "Hello from the claude provider, here is a story"
            )
        );
        assert!(u.output > 1 && u.estimated);
        let ahead = Usage {
            output: 500,
            ..reported
        };
        assert_eq!(estimated_usage("claude-sonnet", e, ahead), ahead);
    }

    #[test]
    fn a_sample_is_counted_within_the_byte_bound() {
        let huge = "word ".repeat(MAX_COUNTED_BYTES); // 5x the bound, one piece
        let e = Estimate {
            prompt: Some(whole(&[&huge])),
            ..Estimate::default()
        };
        let u = estimated_usage("gpt-4o", e, Usage::default());
        let truth = tokens::count("gpt-4o", &huge);
        assert!(
            u.input_uncached >= truth && u.input_uncached <= truth + truth / 50,
            "{} vs {truth}",
            u.input_uncached
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn authorize_answers_while_a_batch_is_being_counted() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(
            "[[providers]]\nname = \"local\"\nurl = \"http://127.0.0.1:8000\"\n[[models]]\nname = \"gpt-4o\"\nprovider = \"local\"\ninput = 2.5\noutput = 10\n",
            dir.path(),
            |_| None,
        )
        .unwrap();
        let store = Store::open(&config.storage.database_url).await.unwrap();
        let service = Arc::new(GatewayService {
            catalog: LiveCatalog::new(config.catalog),
            settings: config.gateway,
            limits: config.limits,
            budgets: config.budgets,
            clock: Clock::system(),
            store,
            report_permits: Semaphore::new(1),
            counting: Arc::new(Semaphore::new(1)),
        });
        let prose = "The quick brown fox jumps over the lazy dog. ".repeat(1_000);
        let records: Vec<UsageRecord> = (0..40)
            .map(|i| UsageRecord {
                request_id: format!("r{i}"),
                model: "gpt-4o".into(),
                status: 200,
                estimate: Some(Estimate {
                    prompt: Some(whole(&[&prose])),
                    ..Estimate::default()
                }),
                ..UsageRecord::default()
            })
            .collect();
        let reporter = Arc::clone(&service);
        let report = tokio::spawn(async move {
            reporter
                .report_usage(Request::new(UsageBatch { records }))
                .await
        });
        // One thread runs every task here: counting on it would hold Authorize back.
        for _ in 0..100_000 {
            if service.counting.available_permits() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            service.counting.available_permits(),
            0,
            "the batch is being counted off this thread"
        );
        let answer = service
            .authorize(Request::new(AuthorizeRequest {
                key_hash: "0".repeat(64),
                model: "gpt-4o".into(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.key.unwrap().status(), KeyStatus::Unknown);
        assert!(answer.model_served && answer.route.is_none());
        assert_eq!(
            service.counting.available_permits(),
            0,
            "Authorize was answered while the batch was still being counted"
        );
        let ack = report.await.unwrap().unwrap().into_inner();
        assert_eq!(ack.stored, 40);
        let rows = service.store.list_usage(None, Some("r7"), 1).await.unwrap();
        assert_eq!(
            rows[0].input_uncached,
            i64::try_from(tokens::count("gpt-4o", &prose)).unwrap()
        );
        assert!(rows[0].estimated);
    }

    fn service_with(config: Config, store: Store, clock: Clock) -> GatewayService {
        GatewayService::new(
            LiveCatalog::new(config.catalog),
            Settings {
                gateway: config.gateway,
                limits: config.limits,
                budgets: config.budgets,
                clock,
            },
            store,
        )
    }

    #[tokio::test]
    async fn an_expiring_key_and_a_rotated_secret_are_cached_only_until_they_stop() {
        use crate::clock::ManualClock;
        use crate::keys::{self, KeySpec};
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(
            "[gateway]\nkey_cache_ttl_ms = 10000\n\
             [[providers]]\nname = \"local\"\nurl = \"http://127.0.0.1:8000\"\n\
             [[models]]\nname = \"m\"\nprovider = \"local\"\nfree = true\n",
            dir.path(),
            |_| None,
        )
        .unwrap();
        let catalog = config.catalog.clone();
        let store = Store::open(&config.storage.database_url).await.unwrap();
        let time = ManualClock::at(1_000_000);
        let issued = keys::create(
            &store,
            &catalog,
            &time.clock(),
            KeySpec {
                name: "k".into(),
                expires_at_ms: Some(1_060_000),
                ..KeySpec::default()
            },
        )
        .await
        .unwrap();
        let old_hash = issued.row.key_hash.clone();
        let service = service_with(config, store.clone(), time.clock());
        let ask = |key_hash: &str| {
            service.authorize(Request::new(AuthorizeRequest {
                key_hash: key_hash.to_owned(),
                model: "m".into(),
            }))
        };
        let answer = ask(&old_hash).await.unwrap().into_inner();
        assert_eq!(answer.key.unwrap().status(), KeyStatus::Active);
        assert_eq!(
            answer.cache_ttl_ms, 10_000,
            "expiry a minute away: the configured TTL"
        );

        time.advance_ms(55_000);
        let answer = ask(&old_hash).await.unwrap().into_inner();
        assert_eq!(
            answer.cache_ttl_ms, 5_000,
            "cached no longer than the 5 s it has left"
        );

        let rotated = keys::rotate(
            &store,
            &time.clock(),
            &issued.row.id,
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        let old = ask(&old_hash).await.unwrap().into_inner();
        assert_eq!(
            old.key.unwrap().status(),
            KeyStatus::Active,
            "the old secret in its grace"
        );
        assert_eq!(old.cache_ttl_ms, 2_000, "cached no longer than its grace");
        let new_hash = tollgate_core::keys::hash_key(rotated.secret.as_bytes());
        assert_eq!(
            ask(&new_hash).await.unwrap().into_inner().cache_ttl_ms,
            5_000
        );

        time.advance_ms(2_000);
        let old = ask(&old_hash).await.unwrap().into_inner();
        assert_eq!(old.key.unwrap().status(), KeyStatus::Revoked, "grace over");
        assert!(
            old.route.is_none(),
            "no provider credential for a refused key"
        );
        let new = ask(&new_hash).await.unwrap().into_inner();
        assert_eq!(new.key.unwrap().status(), KeyStatus::Active);

        time.advance_ms(3_000);
        let new = ask(&new_hash).await.unwrap().into_inner();
        assert_eq!(new.key.unwrap().status(), KeyStatus::Revoked, "expired");
        assert!(new.route.is_none());
    }

    #[tokio::test]
    async fn a_disabled_users_keys_are_refused_until_they_are_enabled() {
        use crate::clock::ManualClock;
        use crate::keys::{self, KeySpec};
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(
            "[[providers]]\nname = \"local\"\nurl = \"http://127.0.0.1:8000\"\n\
             [[models]]\nname = \"m\"\nprovider = \"local\"\nfree = true\n",
            dir.path(),
            |_| None,
        )
        .unwrap();
        let catalog = config.catalog.clone();
        let store = Store::open(&config.storage.database_url).await.unwrap();
        let clock = ManualClock::at(1_000_000).clock();
        let alice = crate::users::create(
            &store,
            &clock,
            "alice",
            crate::users::Role::Member,
            "alice's long password".into(),
        )
        .await
        .unwrap();
        let key_of = async |user: &str| {
            let spec = KeySpec {
                name: format!("{user}'s key"),
                user: Some(user.to_owned()),
                ..KeySpec::default()
            };
            keys::create(&store, &catalog, &clock, spec)
                .await
                .unwrap()
                .row
                .key_hash
        };
        let (hers, unregistered) = (key_of("alice").await, key_of("bob").await);
        let service = service_with(config, store.clone(), clock.clone());
        let status = async |key_hash: &str| {
            let answer = service
                .authorize(Request::new(AuthorizeRequest {
                    key_hash: key_hash.to_owned(),
                    model: "m".into(),
                }))
                .await
                .unwrap()
                .into_inner();
            (answer.key.unwrap().status(), answer.route.is_some())
        };
        assert_eq!(status(&hers).await, (KeyStatus::Active, true));
        store
            .set_user_disabled(&alice.id, Some(1_000_001))
            .await
            .unwrap();
        assert_eq!(
            status(&hers).await,
            (KeyStatus::Revoked, false),
            "refused, and no provider credential"
        );
        assert_eq!(
            status(&unregistered).await,
            (KeyStatus::Active, true),
            "a user name with no account is not a disabled account"
        );
        store.set_user_disabled(&alice.id, None).await.unwrap();
        assert_eq!(status(&hers).await, (KeyStatus::Active, true));
    }

    #[tokio::test]
    async fn authorize_returns_the_resolved_limits_and_budgets() {
        use crate::budgets::Period;
        use crate::keys::{self, KeySpec};
        use crate::store::Limits;
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(
            "[limits]\ntokens_per_minute = 5000\nuser_requests_per_minute = 30\nuser_tokens_per_minute = 9000\nmax_output_tokens = 2048\n\
             [[providers]]\nname = \"local\"\nurl = \"http://127.0.0.1:8000\"\n\
             [[models]]\nname = \"gpt-4o\"\nprovider = \"local\"\ninput = 2.5\noutput = 10\nmax_output_tokens = 4096\n\
             [[models]]\nname = \"mini\"\nprovider = \"local\"\ninput = 1\noutput = 2\n",
            dir.path(),
            |_| None,
        )
        .unwrap();
        let catalog = config.catalog.clone();
        let store = Store::open(&config.storage.database_url).await.unwrap();
        let clock = Clock::system();
        let issued = keys::create(
            &store,
            &catalog,
            &clock,
            KeySpec {
                name: "k".into(),
                requests_per_minute: Some(0),
                user: Some("alice".into()),
                team: Some("ml".into()),
                ..KeySpec::default()
            },
        )
        .await
        .unwrap();
        let key_id = issued.row.id.clone();
        store
            .set_key_model_limit(
                &key_id,
                "gpt-4o",
                Limits {
                    requests_per_minute: Some(3),
                    tokens_per_minute: None,
                },
            )
            .await
            .unwrap();
        // Alice's own tokens per minute; her requests per minute stay the default.
        store
            .set_user_limits(
                "alice",
                Limits {
                    requests_per_minute: None,
                    tokens_per_minute: Some(0),
                },
            )
            .await
            .unwrap();
        let mut budget_ids = Vec::new();
        for (subject, period, limit) in [
            (format!("key:{key_id}"), Period::Day, 1_000),
            ("user:alice".to_owned(), Period::Month, 2_000),
            ("team:ml".to_owned(), Period::Total, 3_000),
            ("team:other".to_owned(), Period::Total, 4_000),
        ] {
            let set = store.set_budget(&subject, period, limit, 0).await.unwrap();
            budget_ids.push(set.budget.id);
        }
        let service = service_with(config, store, clock);
        let answer = service
            .authorize(Request::new(AuthorizeRequest {
                key_hash: issued.row.key_hash.clone(),
                model: "gpt-4o".into(),
            }))
            .await
            .unwrap()
            .into_inner();
        let grant = answer.key.unwrap();
        assert_eq!(grant.status(), KeyStatus::Active);
        assert_eq!(grant.requests_per_minute, Some(0), "the key's own 0 wins");
        assert_eq!(grant.tokens_per_minute, Some(5000), "the default");
        assert_eq!((grant.user.as_str(), grant.team.as_str()), ("alice", "ml"));
        assert_eq!(
            grant.rate_limits,
            vec![
                RateLimit {
                    subject: "user:alice".into(),
                    model: String::new(),
                    requests_per_minute: Some(30),
                    tokens_per_minute: Some(0),
                },
                RateLimit {
                    subject: format!("key_model:{key_id}:gpt-4o"),
                    model: "gpt-4o".into(),
                    requests_per_minute: Some(3),
                    tokens_per_minute: None,
                },
            ]
        );
        let mut budgets: Vec<(String, String, String, u64)> = grant
            .budgets
            .iter()
            .map(|b| {
                (
                    b.budget_id.clone(),
                    b.subject.clone(),
                    b.period.clone(),
                    b.limit_picos,
                )
            })
            .collect();
        budgets.sort_by_key(|b| b.3);
        assert_eq!(
            budgets,
            vec![
                (
                    budget_ids[0].clone(),
                    format!("key:{key_id}"),
                    "day".into(),
                    1_000
                ),
                (
                    budget_ids[1].clone(),
                    "user:alice".into(),
                    "month".into(),
                    2_000
                ),
                (
                    budget_ids[2].clone(),
                    "team:ml".into(),
                    "total".into(),
                    3_000
                ),
            ]
        );
        let price = answer.route.unwrap().price.unwrap();
        assert_eq!(price.max_output_tokens, 4096);
        assert_eq!((price.input, price.output), (2_500_000, 10_000_000));
        let mini = service
            .authorize(Request::new(AuthorizeRequest {
                key_hash: issued.row.key_hash,
                model: "mini".into(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            mini.route.unwrap().price.unwrap().max_output_tokens,
            2048,
            "[limits] max_output_tokens stands in for the model's"
        );
    }

    #[tokio::test]
    async fn lease_requests_are_validated_and_usage_settles_on_the_lease() {
        use crate::budgets::Period;
        use crate::clock::ManualClock;
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(
            "[[providers]]\nname = \"local\"\nurl = \"http://127.0.0.1:8000\"\n[[models]]\nname = \"gpt-4o\"\nprovider = \"local\"\ninput = 2.5\noutput = 10\n",
            dir.path(),
            |_| None,
        )
        .unwrap();
        let store = Store::open(&config.storage.database_url).await.unwrap();
        let budget = store
            .set_budget("user:bob", Period::Day, 1_000_000_000, 0)
            .await
            .unwrap()
            .budget;
        let time = ManualClock::at(1_769_860_800_000);
        let service = service_with(config, store.clone(), time.clock());
        let lease = |want, need, lease_id: &str| LeaseRequest {
            budget_id: budget.id.clone(),
            holder: "envoy-1".into(),
            lease_id: lease_id.into(),
            want_picos: want,
            need_picos: need,
        };
        for bad in [
            lease(1, 2, ""),
            lease(u64::MAX, 1, ""),
            LeaseRequest {
                holder: String::new(),
                ..lease(1, 1, "")
            },
            LeaseRequest {
                budget_id: "b".repeat(129),
                ..lease(1, 1, "")
            },
        ] {
            let e = service.lease_budget(Request::new(bad)).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        }
        let answer = service
            .lease_budget(Request::new(lease(100_000_000, 50_000_000, "")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.outcome(), lease_answer::Outcome::Granted);
        assert_eq!(answer.granted_picos, 100_000_000);
        assert_eq!(answer.available_picos, 900_000_000);
        assert_eq!(answer.expires_at_ms, 1_769_860_800_000 + 60_000);
        assert_eq!(answer.window_end_ms, 1_769_904_000_000);
        // 10 prompt tokens at $2.50/M cost a quarter of the lease; sent twice (a retry).
        let record = UsageRecord {
            request_id: "r1".into(),
            key_id: "key_x".into(),
            model: "gpt-4o".into(),
            status: 200,
            input_uncached: 10,
            finished_at_ms: 1_769_860_800_500,
            lease_ids: vec![answer.lease_id.clone()],
            user: "bob".into(),
            ..UsageRecord::default()
        };
        let ack = service
            .report_usage(Request::new(UsageBatch {
                records: vec![record.clone(), record],
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((ack.stored, ack.duplicates), (1, 1));
        let row = &store.list_usage(None, Some("r1"), 1).await.unwrap()[0];
        assert_eq!(
            row.cost_picos, 25_000_000,
            "10 tokens at 2_500_000 picos each"
        );
        assert_eq!(row.user.as_deref(), Some("bob"));
        let status = &store.list_budgets(1_769_860_800_000).await.unwrap()[0];
        assert_eq!(
            (status.spent_picos, status.leased_picos),
            (25_000_000, 75_000_000)
        );
        // A top-up a minute later keeps the lease and extends it.
        time.advance_ms(30_000);
        let topped = service
            .lease_budget(Request::new(lease(10, 0, &answer.lease_id)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(topped.lease_id, answer.lease_id);
        assert_eq!(topped.lease_total_picos, 100_000_010);
        assert_eq!(topped.expires_at_ms, 1_769_860_800_000 + 30_000 + 60_000);
        let exhausted = service
            .lease_budget(Request::new(lease(2_000_000_000, 2_000_000_000, "")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(exhausted.outcome(), lease_answer::Outcome::Exhausted);
        assert_eq!(exhausted.available_picos, 900_000_000 - 10);
        let unknown = service
            .lease_budget(Request::new(LeaseRequest {
                budget_id: "bud_gone".into(),
                ..lease(1, 1, "")
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(unknown.outcome(), lease_answer::Outcome::UnknownBudget);
    }

    #[tokio::test]
    async fn lease_share_answers_each_outcome_from_the_resolved_limit() {
        use crate::clock::ManualClock;
        use crate::keys::{self, KeySpec};
        use crate::store::Limits;
        use share_answer::Outcome;
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(
            "[limits]\nuser_requests_per_minute = 3\nshare_ttl_ms = 20000\n\
             [[providers]]\nname = \"local\"\nurl = \"http://127.0.0.1:8000\"\n\
             [[models]]\nname = \"gpt-4o\"\nprovider = \"local\"\ninput = 2.5\noutput = 10\n",
            dir.path(),
            |_| None,
        )
        .unwrap();
        let catalog = config.catalog.clone();
        let store = Store::open(&config.storage.database_url).await.unwrap();
        let time = ManualClock::at(1_769_860_800_000);
        let issued = keys::create(
            &store,
            &catalog,
            &time.clock(),
            KeySpec {
                name: "k".into(),
                requests_per_minute: Some(2),
                user: Some("alice".into()),
                ..KeySpec::default()
            },
        )
        .await
        .unwrap();
        let key_id = issued.row.id.clone();
        store
            .set_key_model_limit(
                &key_id,
                "gpt-4o",
                Limits {
                    requests_per_minute: Some(0),
                    tokens_per_minute: Some(500),
                },
            )
            .await
            .unwrap();
        store
            .set_user_limits(
                "bob",
                Limits {
                    requests_per_minute: None,
                    tokens_per_minute: Some(1_000),
                },
            )
            .await
            .unwrap();
        let service = service_with(config, store.clone(), time.clock());
        let share = |subject: &str, measure: &str, holder: &str, want, need, release| {
            let request = ShareRequest {
                subject: subject.into(),
                measure: measure.into(),
                holder: holder.into(),
                want,
                need,
                release,
                lease_id: String::new(),
            };
            let service = &service;
            async move {
                service
                    .lease_share(Request::new(request))
                    .await
                    .unwrap()
                    .into_inner()
            }
        };
        let key = format!("key:{key_id}");
        let now = 1_769_860_800_000;
        // The key's own 2 requests per minute.
        let a = share(&key, "requests", "envoy-a", 2, 1, 0).await;
        assert_eq!(a.outcome(), Outcome::Granted);
        assert_eq!((a.granted, a.share, a.limit, a.available), (2, 2, 2, 0));
        assert_eq!(a.expires_at_ms, now + 20_000, "[limits] share_ttl_ms");
        let b = share(&key, "requests", "envoy-b", 1, 1, 0).await;
        assert_eq!(b.outcome(), Outcome::Exhausted);
        assert_eq!(
            (b.lease_id.as_str(), b.granted, b.available, b.limit),
            ("", 0, 0, 2)
        );
        // envoy-a gives one back: now envoy-b gets it.
        let released = share(&key, "requests", "envoy-a", 0, 0, 1).await;
        assert_eq!(released.outcome(), Outcome::Granted);
        assert_eq!(
            (released.lease_id.as_str(), released.share),
            (a.lease_id.as_str(), 1)
        );
        assert_eq!((released.granted, released.available), (0, 1));
        let b = share(&key, "requests", "envoy-b", 1, 1, 0).await;
        assert_eq!((b.outcome(), b.granted), (Outcome::Granted, 1));
        // Past its expiry and before its reclaim, envoy-a's lease is revived, share and all.
        time.advance_ms(20_000);
        let renewed = share(&key, "requests", "envoy-a", 1, 0, 0).await;
        assert_eq!(renewed.lease_id, a.lease_id);
        assert_eq!((renewed.share, renewed.available), (1, 0));
        assert_eq!(renewed.expires_at_ms, now + 40_000);
        // No token limit anywhere for the key: unlimited.
        let tokens = share(&key, "tokens", "envoy-a", 100, 100, 0).await;
        assert_eq!(tokens.outcome(), Outcome::Unlimited);
        // A user's default, and a user's own limit over the default's absence.
        let alice = share("user:alice", "requests", "envoy-a", 5, 1, 0).await;
        assert_eq!(
            (alice.outcome(), alice.granted, alice.limit),
            (Outcome::Granted, 3, 3)
        );
        let bob = share("user:bob", "tokens", "envoy-a", 400, 400, 0).await;
        assert_eq!(
            (bob.outcome(), bob.available, bob.limit),
            (Outcome::Granted, 600, 1_000)
        );
        let carol = share("user:carol", "tokens", "envoy-a", 1, 1, 0).await;
        assert_eq!(carol.outcome(), Outcome::Unlimited);
        // Per model: 0 requests is blocked, even for a renewal; no limit on another model.
        let model = format!("key_model:{key_id}:gpt-4o");
        for (want, need) in [(1, 1), (0, 0)] {
            let blocked = share(&model, "requests", "envoy-a", want, need, 0).await;
            assert_eq!((blocked.outcome(), blocked.limit), (Outcome::Exhausted, 0));
        }
        let model_tokens = share(&model, "tokens", "envoy-a", 800, 100, 0).await;
        assert_eq!(
            (model_tokens.outcome(), model_tokens.granted),
            (Outcome::Granted, 500)
        );
        // The per-model token limit lifted while envoy-a holds all 500: its release still
        // comes off the pool, so the limit set again serves another Envoy whole.
        let lift = |tokens| {
            let store = &store;
            let key_id = &key_id;
            async move {
                store
                    .set_key_model_limit(
                        key_id,
                        "gpt-4o",
                        Limits {
                            requests_per_minute: Some(0),
                            tokens_per_minute: tokens,
                        },
                    )
                    .await
                    .unwrap()
            }
        };
        lift(None).await;
        let given_back = share(&model, "tokens", "envoy-a", 0, 0, 500).await;
        assert_eq!(given_back.outcome(), Outcome::Unlimited);
        lift(Some(500)).await;
        let whole = share(&model, "tokens", "envoy-b", 500, 500, 0).await;
        assert_eq!((whole.outcome(), whole.granted), (Outcome::Granted, 500));
        let other = format!("key_model:{key_id}:mini");
        assert_eq!(
            share(&other, "requests", "envoy-a", 1, 1, 0)
                .await
                .outcome(),
            Outcome::Unlimited
        );
        assert_eq!(
            share("key:key_gone", "requests", "envoy-a", 1, 1, 0)
                .await
                .outcome(),
            Outcome::Unlimited
        );
    }

    #[tokio::test]
    async fn malformed_share_requests_are_refused_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(
            "[limits]\nuser_requests_per_minute = 3\n\
             [[providers]]\nname = \"local\"\nurl = \"http://127.0.0.1:8000\"\n\
             [[models]]\nname = \"m\"\nprovider = \"local\"\nfree = true\n",
            dir.path(),
            |_| None,
        )
        .unwrap();
        let store = Store::open(&config.storage.database_url).await.unwrap();
        let service = service_with(config, store.clone(), Clock::system());
        let good = ShareRequest {
            subject: "user:alice".into(),
            measure: "requests".into(),
            holder: "envoy-a".into(),
            want: 2,
            need: 1,
            release: 0,
            lease_id: String::new(),
        };
        for (bad, field) in [
            (
                ShareRequest {
                    subject: String::new(),
                    ..good.clone()
                },
                "subject",
            ),
            (
                ShareRequest {
                    subject: "team:ml".into(),
                    ..good.clone()
                },
                "subject",
            ),
            (
                ShareRequest {
                    subject: "key:".into(),
                    ..good.clone()
                },
                "subject",
            ),
            (
                ShareRequest {
                    subject: "key_model:k".into(),
                    ..good.clone()
                },
                "subject",
            ),
            (
                ShareRequest {
                    subject: format!("user:{}", "a".repeat(600)),
                    ..good.clone()
                },
                "subject",
            ),
            (
                ShareRequest {
                    measure: "rpm".into(),
                    ..good.clone()
                },
                "measure",
            ),
            (
                ShareRequest {
                    measure: String::new(),
                    ..good.clone()
                },
                "measure",
            ),
            (
                ShareRequest {
                    holder: String::new(),
                    ..good.clone()
                },
                "holder",
            ),
            (
                ShareRequest {
                    holder: "h".repeat(129),
                    ..good.clone()
                },
                "holder",
            ),
            (
                ShareRequest {
                    want: 1,
                    need: 2,
                    ..good.clone()
                },
                "need",
            ),
        ] {
            let e = service
                .lease_share(Request::new(bad.clone()))
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}: {e}");
            assert!(e.message().starts_with(field), "{bad:?}: {}", e.message());
        }
        assert_eq!(
            store
                .share_assigned("user:alice", tollgate_core::limits::Measure::Requests)
                .await
                .unwrap(),
            0,
            "nothing refused reached the store"
        );
        // Huge numbers are fine: a grant is bounded by the limit, a release by the share.
        let huge = ShareRequest {
            want: u64::MAX,
            release: u64::MAX,
            ..good
        };
        let answer = service
            .lease_share(Request::new(huge))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((answer.granted, answer.share), (3, 3));
    }
}
