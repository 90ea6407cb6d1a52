//! One HTTP stream through the gateway: authorize, route, validate, meter.
//!
//! Order of events, and why:
//! 1. Request headers. Envoy's `json_to_metadata` filter (configured before this one) has
//!    already read `model` and `stream` from the body into dynamic metadata, so the key can
//!    be checked and the provider chosen while headers can still change. On a cache miss
//!    the stream pauses for one `Authorize` call to the control plane.
//! 2. Request body, whole: validated, and rewritten when the provider needs it (its model
//!    name, `include_usage` on streams, Anthropic's format).
//! 3. Response: JSON bodies are buffered to read `usage` (and translated or normalized
//!    when needed); event streams pass through chunk by chunk, metered as they go.
//! 4. Log: one usage record goes to the outbox for every admitted call, partial or not.

mod metering;
mod models;

use crate::{cache, clock, usage::Outbox};
use metering::ResponseMode;
use prost::Message;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use serde_json::{Value, json};
use std::cell::RefCell;
use std::rc::Rc;
use tollgate_core::access::{self, KeyState, UnknownKeys};
use tollgate_core::anthropic;
use tollgate_core::endpoints::Endpoint;
use tollgate_core::errors::ApiError;
use tollgate_core::headers;
use tollgate_core::inflight::InflightBytes;
use tollgate_core::providers::ProviderKind;
use tollgate_core::settings::FilterSettings;
use tollgate_core::tokens::{self, PromptSample};
use tollgate_core::unmetered::{self, Allowances};
use tollgate_core::usage::Usage;
use tollgate_core::{keys, validation};
use tollgate_proto::v1::{AuthorizeRequest, AuthorizeResponse, KeyGrant, KeyStatus, Route};

/// Longest model name accepted; real ones are far shorter, and it bounds cache keys.
const MAX_MODEL_LEN: usize = 256;

/// What a call holds in its VM for its whole life beyond its request body: the prompt and
/// output samples, the SSE decoder's line, the JSON scanner's captures (each bounded in
/// tollgate-core), with room to spare.
const PER_CALL_BYTES: usize = 128 * 1024;

/// Response header that tells the client which id its call is metered under.
const REQUEST_ID_HEADER: &str = "x-tollgate-request-id";

/// The request headers the filter reads, taken in one host call.
#[derive(Default)]
struct Head {
    method: Vec<u8>,
    path: Vec<u8>,
    authorization: Option<Vec<u8>>,
    content_type: Vec<u8>,
    /// Every header name the client sent, to drop those a provider may not see.
    names: Vec<String>,
}

impl Head {
    fn from_headers(headers: Vec<(String, Vec<u8>)>) -> Self {
        let mut head = Head::default();
        for (name, value) in headers {
            match name.as_str() {
                ":method" => head.method = value,
                ":path" => head.path = value,
                "content-type" => head.content_type = value,
                "authorization" => head.authorization = Some(value),
                _ => {}
            }
            head.names.push(name);
        }
        head
    }
}

/// Where the request body stands. A request goes to its provider only from `Checked`: a
/// body that ends any other way (trailers included) is checked there or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyStage {
    /// Bytes buffered so far, not yet checked.
    Arriving { seen: usize },
    /// Validated (and rewritten) whole.
    Checked,
}

/// Per-stream state.
pub struct Request {
    settings: Rc<FilterSettings>,
    outbox: Rc<RefCell<Outbox>>,
    unknown_keys: Rc<RefCell<UnknownKeys>>,
    inflight: Rc<RefCell<InflightBytes>>,
    /// Bytes this call holds in `inflight`.
    held: usize,
    body_stage: BodyStage,
    request_id: String,
    started_ms: u64,
    head: Head,
    endpoint: Option<Endpoint>,
    key_hash: String,
    model: String,
    /// `stream: true`, as `json_to_metadata` saw it at header time.
    stream_hint: bool,
    /// `content-length` was removed at header time, so the body may be rewritten.
    body_rewritable: bool,
    /// Set once the call is let through to a provider; only admitted calls are metered.
    admitted: Option<Admitted>,
    /// The stream was answered by the gateway itself.
    refused: bool,
    /// A bounded sample of the prompt, kept to estimate its tokens if the provider reports
    /// none; the body itself is dropped once forwarded.
    prompt: Option<PromptSample>,
    /// The client asked for `stream_options.include_usage`.
    client_include_usage: bool,
    /// The gateway added `include_usage`; the client must not see the extra chunk.
    injected_usage: bool,
    /// Exact prompt tokens counted before admission (`count_prompt_tokens`).
    counted_prompt: Option<u64>,
    status: u32,
    response: ResponseMode,
    usage: Option<Usage>,
    response_complete: bool,
}

struct Admitted {
    key_id: String,
    route: Route,
    kind: ProviderKind,
}

impl Request {
    /// A stream that has not seen its headers yet.
    pub fn new(
        settings: Rc<FilterSettings>,
        outbox: Rc<RefCell<Outbox>>,
        unknown_keys: Rc<RefCell<UnknownKeys>>,
        inflight: Rc<RefCell<InflightBytes>>,
        request_id: String,
    ) -> Self {
        Self {
            settings,
            outbox,
            unknown_keys,
            inflight,
            held: 0,
            body_stage: BodyStage::Arriving { seen: 0 },
            request_id,
            started_ms: 0,
            head: Head::default(),
            endpoint: None,
            key_hash: String::new(),
            model: String::new(),
            stream_hint: false,
            body_rewritable: false,
            admitted: None,
            refused: false,
            prompt: None,
            client_include_usage: false,
            injected_usage: false,
            counted_prompt: None,
            status: 0,
            response: ResponseMode::Ignore,
            usage: None,
            response_complete: false,
        }
    }

    /// Answers the client directly; the provider is never called.
    fn reply(&mut self, status: u16, body: &[u8]) {
        self.refused = true;
        self.send_http_response(
            u32::from(status),
            vec![
                ("content-type", "application/json"),
                (REQUEST_ID_HEADER, &self.request_id),
            ],
            Some(body),
        );
    }

    /// Answers the client with an OpenAI-style error.
    fn refuse(&mut self, error: &ApiError) {
        self.reply(error.status, &error.body());
    }

    fn metadata(&self, name: &str) -> Option<Vec<u8>> {
        let ns = self.settings.metadata_namespace.as_str();
        self.get_property(vec!["metadata", "filter_metadata", ns, name])
    }

    /// The model `json_to_metadata` extracted from the body, or why there is none.
    fn model_from_metadata(&self, has_body: bool) -> Result<String, ApiError> {
        if !has_body {
            return Err(ApiError::bad_request(
                "The request has no body; expected a JSON object with `model`.",
            ));
        }
        let model = self.metadata("model");
        if model.is_none() && self.metadata("body_error").is_some() {
            // json_to_metadata gives no detail, and the body cannot be read here: a request
            // without a route never reaches the body callback. Name what can be named.
            let content_type = &self.head.content_type;
            return Err(ApiError::bad_request(
                if validation::is_json_content_type(content_type) {
                    "We could not parse the JSON body of your request: it is not valid JSON."
                        .to_owned()
                } else {
                    format!(
                        "The request body must be JSON sent with `Content-Type: application/json`, not `{}`.",
                        String::from_utf8_lossy(content_type)
                    )
                },
            ));
        }
        let Some(model) = model else {
            return Err(ApiError::invalid(
                "model",
                "You must provide a model parameter.",
            ));
        };
        match String::from_utf8(model) {
            Ok(m) if m.trim().is_empty() => Err(ApiError::invalid(
                "model",
                "`model` must be a non-empty string.",
            )),
            Ok(m) if m.len() > MAX_MODEL_LEN => Err(ApiError::invalid(
                "model",
                format!("`model` is longer than {MAX_MODEL_LEN} bytes."),
            )),
            // Envoy hands metadata over as bytes without their JSON type: `true` arrives as
            // the byte 1, a number as its 8 IEEE bytes. No model name holds a control
            // character, so those are refused here; a number whose bytes happen to spell a
            // name is refused at body time, where `model` must equal a JSON string.
            Ok(m) if m.chars().any(char::is_control) => Err(ApiError::invalid(
                "model",
                "`model` must be a string naming a model.",
            )),
            Ok(m) => Ok(m),
            Err(_) => Err(ApiError::invalid("model", "`model` must be a string.")),
        }
    }

    /// Header-time work; `Ok(true)` when the stream may go on now, `Ok(false)` when it
    /// waits (for the control plane, or because the gateway answered itself).
    fn on_headers(&mut self, end_of_stream: bool) -> Result<bool, ApiError> {
        // Names come lower-cased and ASCII from Envoy (its codecs refuse other bytes with a
        // 400 before any filter runs: tests/e2e check it), so the SDK's UTF-8 conversion of
        // names cannot fail; values stay bytes.
        self.head = Head::from_headers(self.get_http_request_headers_bytes());
        let endpoint = Endpoint::parse(&self.head.method, &self.head.path)?;

        let token = self
            .head
            .authorization
            .as_deref()
            .and_then(keys::bearer_token)
            .ok_or_else(|| ApiError::from(tollgate_core::refusal::Refusal::MissingKey))?;
        self.key_hash = keys::hash_key(token);
        if self
            .unknown_keys
            .borrow()
            .contains(&self.key_hash, clock::now_ms())
        {
            return Err(tollgate_core::refusal::Refusal::UnknownKey.into());
        }

        if !endpoint.is_proxied() {
            self.endpoint = Some(endpoint);
            if let Some(answer) = self.models_from_cache() {
                let (status, body) = answer?;
                self.reply(status, &body);
                return Ok(false);
            }
            self.ask_control_plane()?;
            return Ok(false);
        }

        self.model = self.model_from_metadata(!end_of_stream)?;
        self.stream_hint = self
            .metadata("stream")
            .is_some_and(|v| v.first() == Some(&1));
        self.endpoint = Some(endpoint);
        match self.decide_from_cache() {
            Some(decision) => {
                let (route, key_id) = decision?;
                self.admit(route, key_id)?;
                Ok(true)
            }
            None => {
                self.ask_control_plane()?;
                Ok(false)
            }
        }
    }

    /// The decision from cached facts, or `None` if the control plane must be asked.
    fn decide_from_cache(&self) -> Option<Result<(Route, String), ApiError>> {
        let now = clock::now_ms();
        let grant = cache::key(&self.key_hash, now)?;
        let route = cache::route(&self.model, now);
        let state = key_state(&grant);
        if state == KeyState::Active && route.is_none() {
            // Maybe a model added since; unserved models are never cached, so ask.
            return None;
        }
        let served = route.is_some();
        Some(decide(&grant, &self.model, served, route).map(|r| (r, grant.key_id)))
    }

    fn ask_control_plane(&mut self) -> Result<(), ApiError> {
        let message = AuthorizeRequest {
            key_hash: self.key_hash.clone(),
            model: self.model.clone(),
        }
        .encode_to_vec();
        crate::call_control_plane(
            self,
            &self.settings,
            tollgate_proto::AUTHORIZE_METHOD,
            &message,
        )
        .map(|_token| ())
        .map_err(|status| {
            log::warn!("tollgate: cannot dispatch Authorize: {status:?}");
            control_plane_unavailable()
        })
    }

    /// Rewrites the request for the provider: its path, its credential, its cluster.
    fn admit(&mut self, route: Route, key_id: String) -> Result<(), ApiError> {
        let kind = ProviderKind::from_name(&route.kind).ok_or_else(|| {
            log::error!(
                "tollgate: control plane sent unknown provider kind `{}`",
                route.kind
            );
            ApiError::gateway(
                502,
                "The gateway is misconfigured for this model's provider.",
            )
        })?;
        let endpoint = self.endpoint.clone().unwrap_or(Endpoint::ChatCompletions);
        let upstream_path = kind.upstream_path(&endpoint, &route.provider)?;
        // The query string is the client's too: none of the served endpoints takes one, and
        // a provider parameter there could change what is billed. It is dropped.
        let has_query = self.head.path.contains(&b'?');
        if has_query || upstream_path != endpoint.openai_path() {
            self.set_http_request_header(":path", Some(upstream_path));
        }
        // Only allowed headers reach the provider: credentials, account selectors
        // (`openai-organization`), betas and cookies stay with the client.
        let names = std::mem::take(&mut self.head.names);
        for name in &names {
            if !headers::request_header_allowed(name, &route.forward_headers) {
                self.set_http_request_header(name, None);
            }
        }
        if !route.auth_value.is_empty() {
            self.set_http_request_header(&route.auth_header, Some(&route.auth_value));
        }
        for (name, value) in kind.fixed_headers() {
            self.set_http_request_header(name, Some(value));
        }
        // Bodies are read for usage, so they must arrive uncompressed: `accept-encoding` is
        // not on the allow-list. Only this filter may set a deadline: a client's own is replaced or removed.
        let timeout = (route.timeout_ms > 0).then(|| route.timeout_ms.to_string());
        self.set_http_request_header("x-envoy-upstream-rq-timeout-ms", timeout.as_deref());
        self.body_rewritable = kind.translates()
            || !route.upstream_model.is_empty()
            || (self.stream_hint && kind.needs_include_usage());
        if self.body_rewritable {
            // A rewritten body has another length; Envoy recomputes it only if none is set.
            self.set_http_request_header("content-length", None);
        }
        // Lets provider-side logs be matched with the usage record.
        self.set_http_request_header(REQUEST_ID_HEADER, Some(&self.request_id));
        // Setting the header makes Envoy pick the route again, now by provider.
        self.set_http_request_header(&self.settings.route_header, Some(&route.provider));
        self.admitted = Some(Admitted {
            key_id,
            route,
            kind,
        });
        Ok(())
    }

    fn on_authorize_answer(
        &mut self,
        answer: AuthorizeResponse,
    ) -> Result<Option<(u16, Vec<u8>)>, ApiError> {
        let grant = answer.key.unwrap_or_default();
        if grant.status() == KeyStatus::Unknown {
            self.unknown_keys
                .borrow_mut()
                .insert(&self.key_hash, clock::now_ms());
        }
        let ttl = u64::from(answer.cache_ttl_ms).min(self.settings.max_key_cache_ms);
        let expires = clock::now_ms().saturating_add(ttl);
        if !self.endpoint.as_ref().is_some_and(Endpoint::is_proxied) {
            if ttl > 0 {
                cache::store(&self.key_hash, "", &grant, None, expires);
                cache::store_served_models(&answer.served_models, expires);
            }
            return self.models_answer(&grant, &answer.served_models).map(Some);
        }
        let decision = decide(&grant, &self.model, answer.model_served, answer.route);
        if ttl > 0 {
            // The route carries the provider's credential and serves every key from the
            // cache: it is kept only from an answer that admits this call.
            cache::store(
                &self.key_hash,
                &self.model,
                &grant,
                decision.as_ref().ok(),
                expires,
            );
        }
        self.admit(decision?, grant.key_id)?;
        Ok(None)
    }

    /// Validates the whole body and rewrites it for the provider where needed.
    fn on_body(&mut self, body: Vec<u8>) -> Result<(), ApiError> {
        let Some(admitted) = &self.admitted else {
            return Err(not_admitted());
        };
        let endpoint = self.endpoint.clone().unwrap_or(Endpoint::ChatCompletions);
        let mut valid = validation::request(&endpoint, &body, self.settings.max_body_bytes)?;
        // Routing and `include_usage` were decided from what json_to_metadata read; a body
        // that says otherwise (a duplicated key read two ways, a `model` of another JSON
        // type) would be billed as one call and served as another.
        if valid.info.model != self.model {
            return Err(ApiError::invalid(
                "model",
                "`model` must appear once, as a string.",
            ));
        }
        if valid.info.stream != self.stream_hint {
            return Err(ApiError::invalid(
                "stream",
                "`stream` must appear once, as a boolean.",
            ));
        }
        let allowances = Allowances {
            background: admitted.route.allow_background,
        };
        unmetered::check(&endpoint, &valid.body, allowances)?;
        let kind = admitted.kind;
        let upstream_model = match admitted.route.upstream_model.as_str() {
            "" => self.model.clone(),
            m => m.to_owned(),
        };
        self.prompt = Some(tokens::prompt_sample(
            &endpoint,
            &upstream_model,
            &valid.body,
        ));
        self.client_include_usage = valid.info.include_usage;
        #[cfg(feature = "exact-count")]
        if self.settings.count_prompt_tokens {
            self.counted_prompt = Some(tollgate_core::tokens::prompt(
                &endpoint,
                &self.model,
                &valid.body,
            ));
        }

        let rewritten = if kind.translates() {
            Some(anthropic::request(&valid.body, &upstream_model)?)
        } else {
            let mut changed = false;
            if upstream_model != self.model {
                valid
                    .body
                    .insert("model".into(), Value::String(upstream_model));
                changed = true;
            }
            let streams_usage =
                matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions);
            // Only when content-length was dropped at header time, or the rewrite would be cut.
            if self.body_rewritable
                && valid.info.stream
                && !valid.info.include_usage
                && streams_usage
                && kind.needs_include_usage()
            {
                let options = valid
                    .body
                    .entry("stream_options")
                    .or_insert_with(|| json!({}));
                // `null` is legal (the API's default) and means no options.
                if options.is_null() {
                    *options = json!({});
                }
                if let Value::Object(o) = options {
                    o.insert("include_usage".into(), Value::Bool(true));
                    self.injected_usage = true;
                    changed = true;
                }
            }
            changed.then(|| Value::Object(valid.body))
        };
        if let Some(new_body) = rewritten {
            let bytes = serde_json::to_vec(&new_body).unwrap_or_default();
            self.set_http_request_body(0, body.len(), &bytes);
        }
        Ok(())
    }
}

impl Request {
    /// Checks the whole body, buffered up to `size` bytes, and lets it go on or refuses it.
    fn check_body(&mut self, size: usize) -> Action {
        // Held before the VM copies the body: past the worker's bound the call is refused.
        if !self.hold(size.saturating_add(PER_CALL_BYTES)) {
            self.refuse(&overloaded());
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, size).unwrap_or_default();
        let checked = self.on_body(body);
        // The body goes on now; the call keeps only its metering state.
        self.hold(PER_CALL_BYTES);
        match checked {
            Ok(()) => {
                self.body_stage = BodyStage::Checked;
                Action::Continue
            }
            Err(e) => {
                self.refuse(&e);
                Action::Pause
            }
        }
    }

    /// The response bytes this callback was given (none on a 0-byte final call).
    fn response_chunk(&self, size: usize) -> Vec<u8> {
        if size == 0 {
            return Vec::new();
        }
        self.get_http_response_body(0, size).unwrap_or_default()
    }

    /// Sets what this call holds in the worker's in-flight account; `false` when the
    /// account has no room for it.
    fn hold(&mut self, bytes: usize) -> bool {
        let held = self.inflight.borrow_mut().adjust(self.held, bytes);
        if held {
            self.held = bytes;
        }
        held
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Ok(mut account) = self.inflight.try_borrow_mut() {
            account.adjust(self.held, 0);
        }
    }
}

fn key_state(grant: &KeyGrant) -> KeyState {
    match grant.status() {
        KeyStatus::Unknown => KeyState::Unknown,
        KeyStatus::Active => KeyState::Active,
        KeyStatus::Revoked => KeyState::Revoked,
    }
}

/// The route of an admitted call, or why it is refused. The control plane sends a route
/// only to a call it admits; `model_served` tells a model the key may not use (403) from
/// one nobody serves (404) without one.
fn decide(
    grant: &KeyGrant,
    model: &str,
    model_served: bool,
    route: Option<Route>,
) -> Result<Route, ApiError> {
    access::decide(
        key_state(grant),
        &grant.allowed_models,
        model,
        model_served || route.is_some(),
    )?;
    route.ok_or_else(|| {
        log::error!("tollgate: the control plane admitted a call to `{model}` but sent no route");
        control_plane_unavailable()
    })
}

/// A body reached the filter for a call that was never admitted: refused, never forwarded.
fn not_admitted() -> ApiError {
    log::error!("tollgate: a request body arrived for a call that was not admitted; refused");
    ApiError::gateway(500, "The gateway could not check this request.")
}

/// The worker holds as many request bytes as it may: try again shortly.
fn overloaded() -> ApiError {
    ApiError {
        code: Some("gateway_overloaded"),
        ..ApiError::gateway(
            503,
            "The gateway is handling as much request data as it can; retry shortly.",
        )
    }
}

fn control_plane_unavailable() -> ApiError {
    ApiError::gateway(
        503,
        "The gateway cannot reach its control plane to check the API key; try again shortly.",
    )
}

impl Context for Request {
    fn on_grpc_call_response(&mut self, _token_id: u32, status_code: u32, response_size: usize) {
        let answer = if status_code == 0 {
            self.get_grpc_call_response_body(0, response_size)
                .and_then(|body| AuthorizeResponse::decode(body.as_slice()).ok())
        } else {
            log::warn!("tollgate: Authorize failed with gRPC status {status_code}");
            None
        };
        let outcome = match answer {
            Some(answer) => self.on_authorize_answer(answer),
            None => Err(control_plane_unavailable()),
        };
        match outcome {
            Ok(None) => self.resume_http_request(),
            Ok(Some((status, body))) => self.reply(status, &body),
            Err(e) => self.refuse(&e),
        }
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        self.started_ms = clock::now_ms();
        // The provider and deadline headers are always set by `admit`, replacing any a client
        // sent; a refused request never reaches a route.
        match self.on_headers(end_of_stream) {
            Ok(true) => Action::Continue,
            Ok(false) => Action::Pause,
            Err(e) => {
                self.refuse(&e);
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.refused {
            return Action::Continue;
        }
        if self.admitted.is_none() {
            self.refuse(&not_admitted());
            return Action::Pause;
        }
        if self.body_stage == BodyStage::Checked {
            return Action::Continue;
        }
        let limit = self.settings.max_body_bytes;
        if body_size > limit {
            self.refuse(&ApiError::too_large(limit));
            return Action::Pause;
        }
        self.body_stage = BodyStage::Arriving { seen: body_size };
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
        if self.refused {
            return Action::Continue;
        }
        if self.admitted.is_none() {
            self.refuse(&not_admitted());
            return Action::Pause;
        }
        match self.body_stage {
            BodyStage::Checked => Action::Continue,
            BodyStage::Arriving { seen } => {
                let action = self.check_body(seen);
                if action == Action::Continue {
                    // Continuing from here loses the body when the request was paused at
                    // its headers (a key-cache miss): Envoy then sends the provider the
                    // trailers and no data. Resuming makes it replay the body and the
                    // trailers through this filter, now `Checked`, and on upstream whole.
                    self.resume_http_request();
                    return Action::Pause;
                }
                action
            }
        }
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        if self.refused {
            return Action::Continue;
        }
        // All headers in one host call; those the client may not see are removed.
        let mut content_type = Vec::new();
        for (name, value) in self.get_http_response_headers_bytes() {
            match name.as_str() {
                ":status" => {
                    self.status = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                }
                "content-type" => content_type = value,
                _ => {}
            }
            if !headers::response_header_allowed(&name) {
                self.set_http_response_header(&name, None);
            }
        }
        self.set_http_response_header(REQUEST_ID_HEADER, Some(&self.request_id));
        self.start_response(self.status, &content_type);
        self.response_complete = end_of_stream;
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match &mut self.response {
            ResponseMode::Ignore => {}
            ResponseMode::Scan { .. } => {
                let chunk = self.response_chunk(body_size);
                // Never paused: the answer goes on as it comes, whatever its size.
                self.scan_chunk(&chunk, end_of_stream);
            }
            ResponseMode::Buffer { .. } => {
                if !end_of_stream {
                    return Action::Pause;
                }
                let body = self
                    .get_http_response_body(0, body_size)
                    .unwrap_or_default();
                self.finish_buffered(&body);
            }
            ResponseMode::Stream(_) => {
                let chunk = self.response_chunk(body_size);
                // Never paused: each chunk goes on at once, rewritten or not.
                let out = match &mut self.response {
                    ResponseMode::Stream(rewriter) => rewriter.on_chunk(&chunk, end_of_stream),
                    _ => None,
                };
                if let Some(out) = out {
                    self.set_http_response_body(0, body_size, &out);
                }
            }
        }
        if end_of_stream {
            self.response_complete = true;
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if self.refused {
            return;
        }
        // An answer cut before its end still leaves the text the client received.
        self.scan_chunk(&[], true);
        if let Some(admitted) = &self.admitted {
            let record = self.usage_record(admitted);
            self.outbox.borrow_mut().push(record);
        }
    }
}
