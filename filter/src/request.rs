//! One HTTP stream through the gateway: authorize, route, validate, meter.
//!
//! Order of events, and why:
//! 1. Request headers. Envoy's `json_to_metadata` filter (configured before this one) has
//!    already read `model` and `stream` from the body into dynamic metadata, so the key can
//!    be checked and the provider chosen while headers can still change. On a cache miss
//!    the stream pauses for one `Authorize` call to the control plane ([`admission`]).
//! 2. Request body, whole: validated, and rewritten when the provider needs it (its model
//!    name, `include_usage` on streams, Anthropic's format) ([`body`]); then taken from its
//!    rate limits within this Envoy's shares of them ([`shares`]) and held against its
//!    budgets ([`budgets`]), each step pausing the body for one control-plane call when a
//!    share or a lease falls short.
//! 3. Response: JSON bodies are buffered to read `usage` (and translated or normalized
//!    when needed); event streams pass through chunk by chunk, metered as they go
//!    ([`metering`]).
//! 4. Log: one usage record goes to the outbox for every admitted call, partial or not.
//!
//! Where the stream stands is one [`Phase`]; each decision is a plain value computed from
//! the stream's facts, which this file applies through the [`Host`].

mod admission;
mod body;
mod budgets;
mod metering;
mod models;
mod report;
mod shares;
#[cfg(test)]
mod tests;

use crate::budget::{self, CallBudget, Spent};
use crate::cache::{self, Freshness, Ticket};
use crate::calls::{self, Calls};
use crate::host::Host;
use crate::lease::Seen;
use crate::limits::{self, Brake, CallShares, Limit, Taken};
use crate::metrics::Metrics;
use crate::usage::Outbox;
use admission::{Caller, Head, Target};
use metering::Response;
use prost::Message;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use tollgate_core::access::UnknownKeys;
use tollgate_core::inflight::InflightBytes;
use tollgate_core::metrics::Counter;
use tollgate_core::providers::ProviderKind;
use tollgate_core::refusal::Refusal;
use tollgate_core::settings::FilterSettings;
use tollgate_proto::v1::{AuthorizeRequest, AuthorizeResponse, BudgetRef, Route};

/// What a call holds in its VM for its whole life beyond its request body: the prompt and
/// output samples, the SSE decoder's line, the JSON scanner's captures (each bounded in
/// tollgate-core), with room to spare.
const PER_CALL_BYTES: usize = 128 * 1024;

/// Response header that tells the client which id its call is metered under.
const REQUEST_ID_HEADER: &str = "x-tollgate-request-id";

/// What the worker VM shares with each of its streams.
#[derive(Clone, Default)]
pub struct Shared {
    /// The filter's configuration.
    pub settings: Rc<FilterSettings>,
    /// Usage records waiting to be reported.
    pub outbox: Rc<RefCell<Outbox>>,
    /// Key hashes recently found unknown.
    pub unknown_keys: Rc<RefCell<UnknownKeys>>,
    /// Request bytes held by the worker's calls.
    pub inflight: Rc<RefCell<InflightBytes>>,
    /// Budgets the worker's calls drew on, for the root context to renew.
    pub budgets: Rc<RefCell<Seen<BudgetRef>>>,
    /// Rate limits the worker's calls took from, for the root context to renew or give
    /// their idle share back.
    pub shares: Rc<RefCell<Seen<Limit>>>,
    /// Budgets the control plane recently found spent.
    pub spent: Rc<RefCell<Spent>>,
    /// Calls that needed a budget lease or a rate-limit share while the control plane was
    /// unreachable: (admitted within a lease, refused).
    pub unreachable: Rc<Cell<(u64, u64)>>,
    /// The VM's stats.
    pub metrics: Rc<RefCell<Metrics>>,
}

/// The kinds of call a stream makes; each answer goes to the handler of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamCall {
    /// `Authorize` for a proxied call: admit it or refuse it.
    Admission,
    /// `Authorize` for `/v1/models`: answer it from the served models.
    ModelList,
    /// `LeaseBudget` for money a budget hold lacks.
    Lease,
    /// `LeaseShare` for share a rate limit lacks.
    Share,
}

/// What a body-time step (rate-limit share, budget holds) asks of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Done (or nothing to do): go on.
    Go,
    /// Paused for the control plane's answer.
    Wait,
}

/// A call in flight: its kind, and its ticket, which orders its answer against other
/// workers' answers in the shared cache.
#[derive(Debug, Clone, Copy)]
struct Question {
    kind: StreamCall,
    ticket: Ticket,
}

/// Where the stream stands. Only `Admitted` calls reach a provider and are metered.
enum Phase {
    /// Nothing seen yet.
    AwaitingHeaders,
    /// Paused for the control plane's answer about this call.
    Authorizing(Target),
    /// Let through to a provider.
    Admitted(Box<Admitted>),
    /// The gateway answered the call itself (the models endpoints).
    Answered,
    /// The gateway refused the call.
    Refused(Refusal),
}

/// Where the request body of an admitted call stands. It goes to its provider only from
/// `Checked`: a body that ends any other way (trailers included) is checked there or
/// refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyStage {
    /// Bytes buffered so far, not yet checked.
    Arriving { seen: usize },
    /// Validated (and rewritten) whole; waiting for a rate-limit share or a budget lease
    /// before it goes on.
    Holding,
    /// Validated (and rewritten) whole.
    Checked,
}

/// An admitted call: what it was admitted as, and what it learns on the way.
struct Admitted {
    target: Target,
    key_id: String,
    /// The rate limits the call is taken from once its body is checked.
    limits: Vec<Limit>,
    /// What it took from them, settled when it ends (or given back if it is refused).
    taken: Vec<Taken>,
    /// What it asked the control plane for their shares.
    shares: CallShares,
    /// The key's user and team, for the record.
    user: String,
    team: String,
    /// The key's budgets, and what the call holds against them.
    budgets: Vec<BudgetRef>,
    budget: CallBudget,
    route: Route,
    kind: ProviderKind,
    /// `content-length` was removed at header time, so the body may be rewritten.
    body_rewritable: bool,
    body: BodyStage,
    /// What the body check kept for metering; `None` until the body is checked.
    checked: Option<body::Kept>,
    response: Response,
}

/// What [`Request::on_headers`] asks of the stream.
enum Next {
    /// Go on to the provider now.
    Continue,
    /// Wait: for the control plane, or because the gateway answered.
    Wait,
}

/// Per-stream state.
pub struct Request<H: Host> {
    host: H,
    shared: Shared,
    /// Bytes this call holds in `shared.inflight`.
    held: usize,
    request_id: String,
    started_ms: u64,
    phase: Phase,
    calls: Calls<Question>,
    /// The `x-ratelimit-*` (and `retry-after`) headers of the call's limits, for the answer.
    rate_headers: Vec<(&'static str, String)>,
    /// The failed-authentication brake of the client's address, if it has one.
    brake: Option<Brake>,
    /// From the request's start to the answer's headers, for an admitted call.
    first_byte_ms: Option<u64>,
    /// The key's id and the model of a call refused after it was admitted, for its log line.
    refused_who: Option<(String, String)>,
}

impl<H: Host> Request<H> {
    /// A stream that has not seen its headers yet.
    pub fn new(host: H, shared: Shared, request_id: String) -> Self {
        Self {
            host,
            shared,
            held: 0,
            request_id,
            started_ms: 0,
            phase: Phase::AwaitingHeaders,
            calls: Calls::default(),
            rate_headers: Vec::new(),
            brake: None,
            first_byte_ms: None,
            refused_who: None,
        }
    }

    /// Answers the client directly; the provider is never called.
    fn reply(&self, status: u16, body: &[u8]) {
        let mut headers = vec![
            ("content-type", "application/json"),
            (REQUEST_ID_HEADER, &self.request_id),
        ];
        headers.extend(self.rate_headers.iter().map(|(n, v)| (*n, v.as_str())));
        self.host.send_reply(u32::from(status), &headers, body);
    }

    /// Answers the client with the refusal's OpenAI-style error.
    fn refuse(&mut self, refusal: Refusal) {
        if matches!(
            refusal,
            Refusal::MissingKey | Refusal::UnknownKey | Refusal::RevokedKey
        ) && let Some(brake) = &self.brake
        {
            brake.count_failure(&self.host, self.host.now_ms());
        }
        if matches!(refusal, Refusal::InsufficientQuota { .. }) {
            // The openai SDKs retry every 429 unless told not to; a spent budget stays
            // spent until its next period.
            self.rate_headers
                .push(("x-should-retry", "false".to_owned()));
        }
        if let Phase::Admitted(admitted) = &self.phase {
            // A call refused after it was taken from its limits (its budget refused it, or
            // its lease could not be had) never reaches a provider: it costs nothing.
            limits::give_back(&self.host, &admitted.taken, self.host.now_ms());
        }
        if let Phase::Admitted(admitted) = &self.phase {
            self.refused_who = Some((admitted.key_id.clone(), admitted.target.model.clone()));
        }
        let error = refusal.to_error();
        self.reply(error.status, &error.body());
        self.phase = Phase::Refused(refusal);
    }

    /// Header-time work, at `now` (Unix ms).
    fn on_headers(&mut self, end_of_stream: bool, now: u64) -> Result<Next, Refusal> {
        // Names come lower-cased and ASCII from Envoy (its codecs refuse other bytes with a
        // 400 before any filter runs: tests/e2e check it), so the SDK's UTF-8 conversion of
        // names cannot fail; values stay bytes.
        // A braked address is refused before its key is looked at, here or upstream.
        let source = self.host.property(&["source", "address"]);
        let per_minute = self.shared.settings.failed_auths_per_minute_per_ip;
        self.brake = Brake::of_source(source.as_deref(), per_minute);
        if let Some((refusal, headers)) = self.brake.as_ref().and_then(|b| b.check(&self.host, now))
        {
            self.rate_headers = headers;
            // Its refusal is not one more failure: a braked address only drains.
            self.brake = None;
            return Err(refusal);
        }
        let head = Head::from_headers(self.host.request_headers());
        let metadata = |name: &str| {
            let ns = self.shared.settings.metadata_namespace.as_str();
            self.host
                .property(&["metadata", "filter_metadata", ns, name])
        };
        let unknown = |key_hash: &str| self.shared.unknown_keys.borrow().contains(key_hash, now);
        let target = admission::target(head, end_of_stream, unknown, metadata)?;
        if !target.endpoint.is_proxied() {
            if let Some(answer) = models::from_cache(&self.host, &target, now) {
                let body = answer?;
                self.reply(200, &body);
                self.phase = Phase::Answered;
                return Ok(Next::Wait);
            }
            self.ask_control_plane(target, StreamCall::ModelList, now)?;
            return Ok(Next::Wait);
        }
        let cached = admission::from_cache(&self.host, &target, now);
        let result = if cached.is_some() { "hit" } else { "miss" };
        self.shared
            .metrics
            .borrow_mut()
            .count(&self.host, Counter::KeyCache(result), 1);
        match cached {
            Some(decision) => {
                let (route, caller) = decision?;
                self.admit(target, route, caller, now)?;
                Ok(Next::Continue)
            }
            None => {
                self.ask_control_plane(target, StreamCall::Admission, now)?;
                Ok(Next::Wait)
            }
        }
    }

    fn ask_control_plane(
        &mut self,
        target: Target,
        kind: StreamCall,
        now: u64,
    ) -> Result<(), Refusal> {
        // Drawn before asking: an answer is as new as the question it answers.
        let ticket = cache::next_ticket(&self.host);
        let message = AuthorizeRequest {
            key_hash: target.key_hash.clone(),
            model: target.model.clone(),
        }
        .encode_to_vec();
        let token = calls::control_plane(
            &self.host,
            &self.shared.settings,
            tollgate_proto::AUTHORIZE_METHOD,
            &message,
        )
        .map_err(|status| {
            log::warn!("tollgate: cannot dispatch Authorize: {status:?}");
            Refusal::ControlPlaneUnavailable
        })?;
        self.calls.register(token, Question { kind, ticket }, now);
        self.phase = Phase::Authorizing(target);
        Ok(())
    }

    /// Takes the call from its key's limit, rewrites the request for the provider and
    /// lets it through, at `now` (Unix ms).
    fn admit(
        &mut self,
        mut target: Target,
        route: Route,
        caller: Caller,
        now: u64,
    ) -> Result<(), Refusal> {
        let mut plan = admission::plan(&mut target, &route, &self.shared.settings)?;
        // A call that holds budget money may have its output cap rewritten into its body.
        plan.drop_content_length |= !caller.budgets.is_empty();
        // A spent key is refused before its body is buffered; the request itself is taken
        // once the body has passed its checks, so a call refused for anything else costs
        // no request.
        let peeked = limits::peek_requests(&self.host, &caller.limits, now);
        self.rate_headers = peeked.quotas.headers();
        peeked.outcome?;
        let Caller {
            key_id,
            limits,
            user,
            team,
            budgets,
        } = caller;
        plan.apply(&self.host, &self.request_id);
        let body_rewritable = plan.drop_content_length;
        let kind = plan.kind;
        self.phase = Phase::Admitted(Box::new(Admitted {
            target,
            key_id,
            limits,
            taken: Vec::new(),
            shares: CallShares::default(),
            user,
            team,
            budgets,
            budget: CallBudget::default(),
            route,
            kind,
            body_rewritable,
            body: BodyStage::Arriving { seen: 0 },
            checked: None,
            response: Response::default(),
        }));
        Ok(())
    }

    /// The control plane's answer about this stream's call, or why there is none.
    fn authorize_answer(&self, status: u32, size: usize) -> Result<AuthorizeResponse, Refusal> {
        if status != 0 {
            log::warn!("tollgate: Authorize failed with gRPC status {status}");
            return Err(Refusal::ControlPlaneUnavailable);
        }
        let body = self.host.grpc_response_body(size).unwrap_or_default();
        AuthorizeResponse::decode(body.as_slice()).map_err(|e| {
            log::warn!("tollgate: undecodable Authorize answer: {e}");
            Refusal::ControlPlaneUnavailable
        })
    }

    /// Remembers an unknown key; returns how fresh the answer to question `ticket` is, if
    /// it may be cached at all.
    fn learn(
        &self,
        target: &Target,
        answer: &AuthorizeResponse,
        ticket: Ticket,
    ) -> Option<Freshness> {
        let now = self.host.now_ms();
        let grant = answer.key.as_ref();
        if grant.is_none_or(|g| g.status() == tollgate_proto::v1::KeyStatus::Unknown) {
            self.shared
                .unknown_keys
                .borrow_mut()
                .insert(&target.key_hash, now);
        }
        let ttl = u64::from(answer.cache_ttl_ms).min(self.shared.settings.max_key_cache_ms);
        (ttl > 0).then(|| Freshness {
            ticket,
            now_ms: now,
            expires_at_ms: now.saturating_add(ttl),
        })
    }

    fn on_admission_answer(
        &mut self,
        target: Target,
        answer: AuthorizeResponse,
        ticket: Ticket,
    ) -> Result<(), Refusal> {
        let fresh = self.learn(&target, &answer, ticket);
        let grant = answer.key.unwrap_or_default();
        let decision = admission::decide(&grant, &target.model, answer.model_served, answer.route);
        if let Some(fresh) = fresh {
            // The route carries the provider's credential and serves every key from the
            // cache: it is kept only from an answer that admits this call.
            cache::store(
                &self.host,
                &target.key_hash,
                &target.model,
                &grant,
                decision.as_ref().ok(),
                fresh,
            );
        }
        let caller = Caller::of(&grant, &target.model);
        self.admit(target, decision?, caller, self.host.now_ms())
    }

    fn on_models_answer(
        &mut self,
        target: &Target,
        answer: AuthorizeResponse,
        ticket: Ticket,
    ) -> Result<Vec<u8>, Refusal> {
        let fresh = self.learn(target, &answer, ticket);
        let grant = answer.key.unwrap_or_default();
        if let Some(fresh) = fresh {
            cache::store(&self.host, &target.key_hash, "", &grant, None, fresh);
            cache::store_served_models(&self.host, &answer.served_models, fresh);
        }
        models::answer(&target.endpoint, &grant, &answer.served_models)
    }

    /// Counts and logs a call that needed `what` (a budget lease, a rate-limit share) while
    /// the control plane was unreachable, and whether it was admitted all the same.
    fn count_unreachable(&self, what: &str, admitted: bool) {
        let (mut within, mut refused) = self.shared.unreachable.get();
        if admitted {
            within = within.saturating_add(1);
        } else {
            refused = refused.saturating_add(1);
        }
        self.shared.unreachable.set((within, refused));
        let choice = if admitted {
            "admitted within its lease"
        } else {
            "refused"
        };
        log::warn!(
            "tollgate: control plane unreachable for {what}; request {} {choice} \
             ({within} admitted within a lease, {refused} refused by this worker so far)",
            self.request_id
        );
    }

    /// Checks the whole body, buffered up to `size` bytes, and lets it go on or refuses it.
    fn check_body(&mut self, size: usize) -> Action {
        // Held before the VM copies the body: past the worker's bound the call is refused.
        if !self.hold(size.saturating_add(PER_CALL_BYTES)) {
            self.refuse(Refusal::Overloaded);
            return Action::Pause;
        }
        let bytes = self.host.request_body(size).unwrap_or_default();
        // One clock read for the limits and the budgets: each read is a host call.
        let now = self.host.now_ms();
        let checked = match &self.phase {
            Phase::Admitted(admitted) => body::check(admitted, &self.shared.settings, &bytes),
            _ => Err(Refusal::NotAdmitted),
        };
        // The call is taken from its limits only for a body that passed, and the body is
        // rewritten only for a call that goes on.
        let kept = checked.and_then(|checked| {
            let step = match self.take_limits(checked.kept.bound.total(), now)? {
                Step::Go => self.hold_budgets(&checked.kept, now)?,
                Step::Wait => Step::Wait,
            };
            if let Some(new_body) = &checked.rewrite {
                self.host.set_request_body(bytes.len(), new_body);
            }
            Ok((checked.kept, step))
        });
        drop(bytes);
        // The body went on; the call keeps only its metering state.
        self.hold(PER_CALL_BYTES);
        match kept {
            Ok((kept, step)) => {
                if let Phase::Admitted(admitted) = &mut self.phase {
                    admitted.checked = Some(kept);
                    admitted.body = match step {
                        Step::Go => BodyStage::Checked,
                        Step::Wait => BodyStage::Holding,
                    };
                }
                match step {
                    Step::Go => Action::Continue,
                    Step::Wait => Action::Pause,
                }
            }
            Err(refusal) => {
                self.refuse(refusal);
                Action::Pause
            }
        }
    }

    /// Sets what this call holds in the worker's in-flight account; `false` when the
    /// account has no room for it.
    fn hold(&mut self, bytes: usize) -> bool {
        let held = self.shared.inflight.borrow_mut().adjust(self.held, bytes);
        if held {
            self.held = bytes;
        }
        held
    }

    /// The bytes seen so far of an admitted call's body still arriving, or what to do
    /// instead.
    fn body_arriving(&mut self) -> Result<usize, Action> {
        match &self.phase {
            Phase::Refused(_) | Phase::Answered => Err(Action::Continue),
            Phase::Admitted(a) => match a.body {
                BodyStage::Checked => Err(Action::Continue),
                BodyStage::Holding => Err(Action::Pause),
                BodyStage::Arriving { seen } => Ok(seen),
            },
            Phase::AwaitingHeaders | Phase::Authorizing(_) => {
                log::error!(
                    "tollgate: a request body arrived for a call that was not admitted; refused"
                );
                self.refuse(Refusal::NotAdmitted);
                Err(Action::Pause)
            }
        }
    }
}

impl<H: Host> Drop for Request<H> {
    fn drop(&mut self) {
        if let Ok(mut account) = self.shared.inflight.try_borrow_mut() {
            account.adjust(self.held, 0);
        }
    }
}

impl<H: Host> Context for Request<H> {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let Some((Question { kind, ticket }, dispatched_ms)) = self.calls.take(token_id) else {
            return;
        };
        self.shared.metrics.borrow_mut().control_plane_answered(
            &self.host,
            dispatched_ms,
            status_code,
        );
        match kind {
            StreamCall::Lease => return self.on_lease_answer(status_code, response_size),
            StreamCall::Share => return self.on_share_answer(status_code, response_size),
            StreamCall::Admission | StreamCall::ModelList => {}
        }
        let target = match std::mem::replace(&mut self.phase, Phase::AwaitingHeaders) {
            Phase::Authorizing(target) => target,
            other => {
                log::warn!("tollgate: Authorize answer for a call no longer waiting; ignored");
                self.phase = other;
                return;
            }
        };
        let answer = self.authorize_answer(status_code, response_size);
        match kind {
            StreamCall::Admission => {
                match answer.and_then(|a| self.on_admission_answer(target, a, ticket)) {
                    Ok(()) => self.host.resume_request(),
                    Err(refusal) => self.refuse(refusal),
                }
            }
            StreamCall::ModelList => {
                match answer.and_then(|a| self.on_models_answer(&target, a, ticket)) {
                    Ok(body) => {
                        self.reply(200, &body);
                        self.phase = Phase::Answered;
                    }
                    Err(refusal) => self.refuse(refusal),
                }
            }
            StreamCall::Lease | StreamCall::Share => {}
        }
    }
}

impl<H: Host> HttpContext for Request<H> {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        self.started_ms = self.host.now_ms();
        // The provider and deadline headers are always set by `admit`, replacing any a client
        // sent; a refused request never reaches a route.
        match self.on_headers(end_of_stream, self.started_ms) {
            Ok(Next::Continue) => Action::Continue,
            Ok(Next::Wait) => Action::Pause,
            Err(refusal) => {
                self.refuse(refusal);
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Err(action) = self.body_arriving() {
            return action;
        }
        let limit = self.shared.settings.max_body_bytes;
        if body_size > limit {
            self.refuse(Refusal::body_too_large(limit));
            return Action::Pause;
        }
        if let Phase::Admitted(a) = &mut self.phase {
            a.body = BodyStage::Arriving { seen: body_size };
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.check_body(body_size)
    }

    /// A request that ends with trailers (HTTP/2, or HTTP/1.1 chunked where Envoy keeps
    /// them) never sends a body callback with `end_of_stream`: its body is checked here,
    /// or the request is refused. Without this, Envoy would forward the buffered body
    /// unchecked.
    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        let seen = match self.body_arriving() {
            Ok(seen) => seen,
            Err(action) => return action,
        };
        let action = self.check_body(seen);
        if action == Action::Continue {
            // Continuing from here loses the body when the request was paused at its
            // headers (a key-cache miss): Envoy then sends the provider the trailers and
            // no data. Resuming makes it replay the body and the trailers through this
            // filter, now `Checked`, and on upstream whole.
            self.host.resume_request();
            return Action::Pause;
        }
        action
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        // For a call with limits the gateway's headers replace the provider's of the same
        // kind, which describe the operator's account; without one the provider's pass. A
        // stream's go out before its usage is known: its remaining tokens are after its hold.
        for (name, value) in &self.rate_headers {
            self.host.set_response_header(name, Some(value));
        }
        if let Phase::Admitted(admitted) = &mut self.phase {
            // One clock read for the metering and the log line's first byte.
            let now = self.host.now_ms();
            self.first_byte_ms = Some(now.saturating_sub(self.started_ms));
            metering::on_response_headers(
                &self.host,
                admitted,
                &self.request_id,
                end_of_stream,
                now,
            );
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match &mut self.phase {
            Phase::Admitted(admitted) => {
                metering::on_response_body(&self.host, admitted, body_size, end_of_stream)
            }
            _ => Action::Continue,
        }
    }

    fn on_log(&mut self) {
        let facts = report::Facts {
            request_id: &self.request_id,
            first_byte_ms: self.first_byte_ms,
        };
        let mut metrics = self.shared.metrics.borrow_mut();
        let admitted = match &mut self.phase {
            Phase::Admitted(admitted) => admitted,
            Phase::Refused(refusal) => {
                log::debug!(
                    "tollgate: request {} refused: {}",
                    self.request_id,
                    refusal.code()
                );
                let ending = report::Ending::Refused {
                    refusal,
                    who: self.refused_who.as_ref(),
                };
                report::report(&self.host, &mut metrics, &facts, ending);
                return;
            }
            Phase::Answered => {
                report::report(&self.host, &mut metrics, &facts, report::Ending::Answered);
                return;
            }
            Phase::AwaitingHeaders | Phase::Authorizing(_) => return,
        };
        let now = self.host.now_ms();
        if admitted.body != BodyStage::Checked {
            // Ended before its body went on (the client left while it arrived, or while
            // the call waited for a lease): no provider saw it, so it costs nothing and
            // leaves no record, as if refused.
            limits::give_back(&self.host, &admitted.taken, now);
            if let Some((index, true)) = admitted.shares.waiting.take()
                && let Some(limit) = admitted.limits.get(index)
            {
                // Its answer will reach no one: the mark would block the renewal pass
                // until it lapsed, and a client leaving every few seconds kept it so.
                limits::free_mark(&self.host, limit.key());
            }
            budget::settle(&self.host, &mut admitted.budget, 0);
            log::debug!(
                "tollgate: request {} ended before its body was sent; not metered",
                self.request_id
            );
            let ending = report::Ending::Abandoned { admitted };
            report::report(&self.host, &mut metrics, &facts, ending);
            return;
        }
        let mut record = metering::usage_record(admitted, &self.request_id, self.started_ms, now);
        if let Some(used) = limits::used_tokens(&record) {
            limits::settle_tokens(&self.host, &admitted.taken, used, now);
        }
        budgets::settle(&self.host, admitted, &mut record);
        let ending = report::Ending::Metered {
            admitted,
            record: &record,
        };
        report::report(&self.host, &mut metrics, &facts, ending);
        self.shared.outbox.borrow_mut().push(record);
    }
}
