//! One HTTP stream through the gateway: authorize, route, validate, meter.
//!
//! Order of events, and why:
//! 1. Request headers. Envoy's `json_to_metadata` filter (configured before this one) has
//!    already read `model` from the body into dynamic metadata, so the key can be checked and
//!    the route chosen while headers can still change. On a cache miss the stream pauses
//!    for one `Authorize` call to the control plane.
//! 2. Request body, whole: validated; a bad body is refused before the provider sees it.
//! 3. Response: a JSON body is buffered to read its `usage`.
//! 4. Log: one usage record goes to the outbox for every admitted call.

use crate::{cache, clock, usage::Outbox};
use prost::Message;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use tollgate_core::access::{self, KeyState};
use tollgate_core::endpoints::Endpoint;
use tollgate_core::errors::ApiError;
use tollgate_core::keys;
use tollgate_core::settings::FilterSettings;
use tollgate_core::usage::{self, Usage};
use tollgate_core::validation;
use tollgate_proto::v1::{
    AuthorizeRequest, AuthorizeResponse, KeyGrant, KeyStatus, Route, UsageRecord,
};

/// Longest model name accepted; real ones are far shorter, and it bounds cache keys.
const MAX_MODEL_LEN: usize = 256;

/// Headers a client might put its own credential in; none of them may reach a provider.
const CLIENT_CREDENTIAL_HEADERS: &[&str] = &["authorization", "x-api-key", "api-key"];

/// Response header that tells the client which id its call is metered under.
const REQUEST_ID_HEADER: &str = "x-tollgate-request-id";

/// Per-stream state.
pub struct Request {
    settings: Rc<FilterSettings>,
    outbox: Rc<RefCell<Outbox>>,
    request_id: String,
    started_ms: u64,
    key_hash: String,
    model: String,
    /// Set once the call is let through to a provider; only admitted calls are metered.
    admitted: Option<Admitted>,
    /// The stream was answered by the gateway itself.
    refused: bool,
    status: u32,
    buffer_response: bool,
    usage: Option<Usage>,
    response_complete: bool,
}

struct Admitted {
    key_id: String,
    provider: String,
}

impl Request {
    /// A stream that has not seen its headers yet.
    pub fn new(settings: Rc<FilterSettings>, outbox: Rc<RefCell<Outbox>>) -> Self {
        Self {
            settings,
            outbox,
            request_id: new_request_id(),
            started_ms: 0,
            key_hash: String::new(),
            model: String::new(),
            admitted: None,
            refused: false,
            status: 0,
            buffer_response: false,
            usage: None,
            response_complete: false,
        }
    }

    /// Answers the client with an OpenAI-style error; the provider is never called.
    fn refuse(&mut self, error: &ApiError) {
        self.refused = true;
        self.send_http_response(
            u32::from(error.status),
            vec![
                ("content-type", "application/json"),
                (REQUEST_ID_HEADER, &self.request_id),
            ],
            Some(&error.body()),
        );
    }

    /// The model `json_to_metadata` extracted from the body, or why there is none.
    fn model_from_metadata(&self, has_body: bool) -> Result<String, ApiError> {
        let ns = self.settings.metadata_namespace.as_str();
        let field = |name| self.get_property(vec!["metadata", "filter_metadata", ns, name]);
        if !has_body {
            return Err(ApiError::bad_request(
                "The request has no body; expected a JSON object with `model` and `messages`.",
            ));
        }
        if field("body_error").is_some() {
            // json_to_metadata gives no detail, and the body cannot be read here: a request
            // without a route never reaches the body callback. Name what can be named.
            let content_type = self
                .get_http_request_header_bytes("content-type")
                .unwrap_or_default();
            return Err(ApiError::bad_request(
                if validation::is_json_content_type(&content_type) {
                    "We could not parse the JSON body of your request: it is not valid JSON."
                        .to_owned()
                } else {
                    format!(
                        "The request body must be JSON sent with `Content-Type: application/json`, not `{}`.",
                        String::from_utf8_lossy(&content_type)
                    )
                },
            ));
        }
        let Some(model) = field("model") else {
            return Err(ApiError::invalid(
                "model",
                "You must provide a model parameter.",
            ));
        };
        match String::from_utf8(model.to_vec()) {
            Ok(m) if m.trim().is_empty() => Err(ApiError::invalid(
                "model",
                "`model` must be a non-empty string.",
            )),
            Ok(m) if m.len() > MAX_MODEL_LEN => Err(ApiError::invalid(
                "model",
                format!("`model` is longer than {MAX_MODEL_LEN} bytes."),
            )),
            Ok(m) => Ok(m),
            Err(_) => Err(ApiError::invalid("model", "`model` must be a string.")),
        }
    }

    /// Header-time checks; `Ok(true)` when the call may go on now, `Ok(false)` when it waits
    /// for the control plane.
    fn on_headers(&mut self, end_of_stream: bool) -> Result<bool, ApiError> {
        let method = self
            .get_http_request_header_bytes(":method")
            .unwrap_or_default();
        let path = self
            .get_http_request_header_bytes(":path")
            .unwrap_or_default();
        Endpoint::parse(&method, &path)?;

        let authorization = self.get_http_request_header_bytes("authorization");
        let token = authorization
            .as_deref()
            .and_then(keys::bearer_token)
            .ok_or_else(|| {
                ApiError::unauthenticated(
                    "You didn't provide an API key. Send it in an Authorization header \
                     using Bearer auth (Authorization: Bearer YOUR_KEY).",
                )
            })?;
        self.key_hash = keys::hash_key(token);
        self.model = self.model_from_metadata(!end_of_stream)?;

        match self.decide_from_cache() {
            Some(decision) => {
                let (route, key_id) = decision?;
                self.admit(&route, key_id);
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
        Some(decide(&grant, &self.model, route).map(|r| (r, grant.key_id)))
    }

    fn ask_control_plane(&mut self) -> Result<(), ApiError> {
        let message = AuthorizeRequest {
            key_hash: self.key_hash.clone(),
            model: self.model.clone(),
        }
        .encode_to_vec();
        self.dispatch_grpc_call(
            &self.settings.control_plane_cluster,
            tollgate_proto::GATEWAY_SERVICE,
            tollgate_proto::AUTHORIZE_METHOD,
            Vec::new(),
            Some(&message),
            Duration::from_millis(self.settings.control_plane_timeout_ms),
        )
        .map(|_token| ())
        .map_err(|status| {
            log::warn!("tollgate: cannot dispatch Authorize: {status:?}");
            control_plane_unavailable()
        })
    }

    /// Rewrites the request for the provider: the client's credential out, the provider's in.
    fn admit(&mut self, route: &Route, key_id: String) {
        for header in CLIENT_CREDENTIAL_HEADERS {
            self.set_http_request_header(header, None);
        }
        if !route.auth_value.is_empty() {
            self.set_http_request_header(&route.auth_header, Some(&route.auth_value));
        }
        // Lets provider-side logs be matched with the usage record.
        self.set_http_request_header(REQUEST_ID_HEADER, Some(&self.request_id));
        // Setting the header makes Envoy pick the route again, now by provider.
        self.set_http_request_header(&self.settings.route_header, Some(&route.provider));
        self.admitted = Some(Admitted {
            key_id,
            provider: route.provider.clone(),
        });
    }

    fn on_authorize_answer(&mut self, answer: AuthorizeResponse) -> Result<(), ApiError> {
        let grant = answer.key.unwrap_or_default();
        let ttl = u64::from(answer.cache_ttl_ms).min(self.settings.max_key_cache_ms);
        if ttl > 0 {
            let expires = clock::now_ms().saturating_add(ttl);
            cache::store(
                &self.key_hash,
                &self.model,
                &grant,
                answer.route.as_ref(),
                expires,
            );
        }
        let route = decide(&grant, &self.model, answer.route)?;
        self.admit(&route, grant.key_id);
        Ok(())
    }

    fn usage_record(&self, admitted: &Admitted) -> UsageRecord {
        let usage = self.usage.unwrap_or_default();
        let finished = clock::now_ms();
        UsageRecord {
            request_id: self.request_id.clone(),
            key_id: admitted.key_id.clone(),
            model: self.model.clone(),
            provider: admitted.provider.clone(),
            status: self.status,
            input_uncached: usage.input_uncached,
            cache_read: usage.cache_read,
            cache_write: usage.cache_write,
            output: usage.output,
            reasoning: usage.reasoning,
            estimated: usage.estimated,
            partial: usage.partial || !self.response_complete,
            finished_at_ms: i64::try_from(finished).unwrap_or(i64::MAX),
            duration_ms: u32::try_from(finished.saturating_sub(self.started_ms))
                .unwrap_or(u32::MAX),
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

fn decide(grant: &KeyGrant, model: &str, route: Option<Route>) -> Result<Route, ApiError> {
    access::decide(
        key_state(grant),
        &grant.allowed_models,
        model,
        route.is_some(),
    )?;
    route.ok_or_else(|| ApiError::model_not_found(model))
}

fn control_plane_unavailable() -> ApiError {
    ApiError::gateway(
        503,
        "The gateway cannot reach its control plane to check the API key; try again shortly.",
    )
}

/// 128 random bits, hex: unique across workers and restarts without coordination.
fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Without randomness fall back to time; ids then only need to be unique per VM.
        let t = clock::now_ms().to_le_bytes();
        bytes[..8].copy_from_slice(&t);
    }
    hex::encode(bytes)
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
            Ok(()) => self.resume_http_request(),
            Err(e) => self.refuse(&e),
        }
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        self.started_ms = clock::now_ms();
        // Only this filter may choose a provider.
        self.set_http_request_header(&self.settings.route_header, None);
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
        if self.refused || self.admitted.is_none() {
            return Action::Continue;
        }
        let limit = self.settings.max_body_bytes;
        if body_size > limit {
            self.refuse(&ApiError::too_large(limit));
            return Action::Pause;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        match validation::chat_request(&body, limit) {
            Ok(chat) if chat.model != self.model => {
                // Cannot happen unless the body was changed after json_to_metadata read it.
                self.refuse(&ApiError::invalid(
                    "model",
                    "`model` changed while reading the body.",
                ));
                Action::Pause
            }
            Ok(_) => Action::Continue,
            Err(e) => {
                self.refuse(&e);
                Action::Pause
            }
        }
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        if self.refused {
            return Action::Continue;
        }
        self.status = self
            .get_http_response_header_bytes(":status")
            .and_then(|s| std::str::from_utf8(&s).ok()?.parse().ok())
            .unwrap_or(0);
        self.set_http_response_header(REQUEST_ID_HEADER, Some(&self.request_id));
        let content_type = self
            .get_http_response_header_bytes("content-type")
            .unwrap_or_default();
        self.buffer_response =
            self.admitted.is_some() && validation::is_json_content_type(&content_type);
        self.response_complete = end_of_stream;
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return if self.buffer_response {
                Action::Pause
            } else {
                Action::Continue
            };
        }
        self.response_complete = true;
        if self.buffer_response {
            let body = self
                .get_http_response_body(0, body_size)
                .unwrap_or_default();
            self.usage = usage::from_openai_body(&body);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if let Some(admitted) = &self.admitted {
            if self.refused {
                return;
            }
            let record = self.usage_record(admitted);
            self.outbox.borrow_mut().push(record);
        }
    }
}
