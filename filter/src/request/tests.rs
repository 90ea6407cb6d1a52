//! The request flow on the mock host: every assertion is on what the stream asked of its
//! host (edits, replies, dispatches, resumes) or on the usage record it left.

use super::admission::{self, Head};
use super::*;
use crate::Plugin;
use crate::cache;
use crate::host::mock::MockHost;
use proxy_wasm::types::Status;
use serde_json::{Value, json};
use tollgate_core::keys;
use tollgate_proto::v1::{KeyGrant, KeyStatus, ServedModel, UsageBatch, UsageRecord};

mod budgets;
mod report;
mod shares;

const KEY: &str = "tg-test-key";
/// The `authorization` header carrying [`KEY`].
const AUTH: &str = "Bearer tg-test-key";
const CHAT: &str = "/v1/chat/completions";
/// Far enough ahead that cached entries never expire in a test.
const LATER: u64 = 1_000_000;

/// An answer cached earlier, as another call would have left it.
const CACHED: cache::Freshness = cache::Freshness {
    ticket: cache::Ticket(0),
    now_ms: 0,
    expires_at_ms: LATER,
};

/// A worker VM on the mock host, configured with the default settings.
fn plugin() -> Plugin<MockHost> {
    plugin_with(FilterSettings::default())
}

fn plugin_with(settings: FilterSettings) -> Plugin<MockHost> {
    let mut plugin = Plugin::new(MockHost::new());
    plugin.host.set_now(5_000);
    plugin.configure(settings);
    plugin
}

fn route(kind: &str) -> Route {
    Route {
        provider: "alpha".into(),
        auth_header: "authorization".into(),
        auth_value: "Bearer sk-provider".into(),
        kind: kind.into(),
        upstream_model: String::new(),
        timeout_ms: 30_000,
        forward_headers: vec![],
        allow_background: false,
        ..Route::default()
    }
}

fn grant(status: KeyStatus, allowed: &[&str]) -> KeyGrant {
    KeyGrant {
        status: status.into(),
        key_id: "key-1".into(),
        allowed_models: allowed.iter().map(|m| (*m).to_owned()).collect(),
        requests_per_minute: None,
        ..KeyGrant::default()
    }
}

fn key_hash() -> String {
    keys::hash_key(KEY.as_bytes())
}

/// Caches an active key and `route` for `model`, as an earlier call would have.
fn cache_admission(host: &MockHost, model: &str, route: &Route) {
    let g = grant(KeyStatus::Active, &[]);
    cache::store(host, &key_hash(), model, &g, Some(route), CACHED);
}

/// Sets the request line, the key and `json_to_metadata`'s view of the body.
fn chat_request(host: &MockHost, model: &str, stream: bool) {
    host.set_request_headers(&[
        (":method", "POST"),
        (":path", CHAT),
        ("content-type", "application/json"),
        ("authorization", AUTH),
        ("cookie", "session=1"),
        ("openai-organization", "org-1"),
        ("x-envoy-upstream-rq-timeout-ms", "1"),
    ]);
    host.set_metadata("tollgate", "model", model.as_bytes());
    if stream {
        host.set_metadata("tollgate", "stream", &[1]);
    }
}

fn chat_body(model: &str, extra: Value) -> Vec<u8> {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hello"}]});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    serde_json::to_vec(&body).unwrap()
}

/// Sends the body in one callback.
fn send_body(req: &mut Request<MockHost>, host: &MockHost, body: &[u8]) -> Action {
    host.set_request_body_bytes(body);
    req.on_http_request_body(body.len(), true)
}

/// A stream admitted from the cache, its body checked.
fn admitted(
    plugin: &Plugin<MockHost>,
    kind: &str,
    stream: bool,
    extra: Value,
) -> Request<MockHost> {
    admitted_on(plugin, route(kind), stream, extra)
}

fn admitted_on(
    plugin: &Plugin<MockHost>,
    route: Route,
    stream: bool,
    extra: Value,
) -> Request<MockHost> {
    let host = &plugin.host;
    cache_admission(host, "gpt-4o", &route);
    chat_request(host, "gpt-4o", stream);
    let mut req = plugin.stream();
    assert_eq!(req.on_http_request_headers(7, false), Action::Continue);
    let mut extra = extra;
    if stream && let Value::Object(e) = &mut extra {
        e.insert("stream".into(), Value::Bool(true));
    }
    let body = chat_body("gpt-4o", extra);
    assert_eq!(send_body(&mut req, host, &body), Action::Continue);
    req
}

/// The one reply the stream sent: status and error code (if an error).
fn reply_of(host: &MockHost) -> (u32, Value) {
    let replies = host.replies();
    assert_eq!(replies.len(), 1, "{replies:?}");
    let body: Value = serde_json::from_slice(&replies[0].body).unwrap();
    (replies[0].status, body)
}

fn refusal_code(host: &MockHost) -> (u32, String) {
    let (status, body) = reply_of(host);
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

/// Delivers the provider's response: headers, then each chunk.
fn respond(
    req: &mut Request<MockHost>,
    host: &MockHost,
    headers: &[(&str, &str)],
    chunks: &[&[u8]],
) {
    host.set_response_headers(headers);
    req.on_http_response_headers(headers.len(), chunks.is_empty());
    for (i, chunk) in chunks.iter().enumerate() {
        host.set_response_chunk(chunk);
        let action = req.on_http_response_body(chunk.len(), i + 1 == chunks.len());
        if action == Action::Continue {
            host.pass_response_chunk();
        }
    }
}

/// The records the outbox would send next.
fn outbox_records(plugin: &Plugin<MockHost>) -> Vec<UsageRecord> {
    let batch = plugin.shared.outbox.borrow_mut().next_batch();
    batch.map_or_else(Vec::new, |b| {
        UsageBatch::decode(b.as_slice()).unwrap().records
    })
}

fn authorize_answer(answer: &AuthorizeResponse) -> Vec<u8> {
    answer.encode_to_vec()
}

// ---- admission ----

#[test]
fn admission_from_cache_applies_the_plan_without_a_control_plane_call() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_admission(host, "gpt-4o", &route("openai"));
    chat_request(host, "gpt-4o", false);
    let mut req = plugin.stream();
    assert_eq!(req.on_http_request_headers(7, false), Action::Continue);
    assert!(host.dispatches().is_empty());
    assert!(host.replies().is_empty());
    assert_eq!(
        host.request_header("authorization").as_deref(),
        Some("Bearer sk-provider")
    );
    assert_eq!(host.request_header("cookie"), None);
    assert_eq!(host.request_header("openai-organization"), None);
    assert_eq!(
        host.request_header("x-envoy-upstream-rq-timeout-ms")
            .as_deref(),
        Some("30000")
    );
    assert_eq!(
        host.request_header("x-tollgate-provider").as_deref(),
        Some("alpha")
    );
    assert_eq!(host.request_header(":path").as_deref(), Some(CHAT));
    let edits = host.request_edits();
    assert_eq!(
        edits.last(),
        Some(&("x-tollgate-provider".to_owned(), Some("alpha".to_owned()))),
        "the route header goes last: Envoy routes on it"
    );
    assert!(
        edits.iter().all(|(n, _)| n != ":path"),
        "path unchanged: {edits:?}"
    );
}

#[test]
fn the_plan_names_every_header_edit() {
    let settings = FilterSettings::default();
    let head = Head::from_headers(vec![
        (":method".into(), b"POST".to_vec()),
        (":path".into(), b"/v1/chat/completions?x=1".to_vec()),
        ("authorization".into(), AUTH.as_bytes().to_vec()),
        ("cookie".into(), b"a".to_vec()),
        ("x-keep".into(), b"1".to_vec()),
    ]);
    let metadata = |name: &str| (name == "model").then(|| b"claude".to_vec());
    let mut target = admission::target(head, false, |_| false, metadata).unwrap();
    let route = Route {
        kind: "anthropic".into(),
        auth_header: "x-api-key".into(),
        auth_value: "sk-ant".into(),
        forward_headers: vec!["x-keep".into()],
        timeout_ms: 0,
        ..route("anthropic")
    };
    let plan = admission::plan(&mut target, &route, &settings).unwrap();
    assert_eq!(plan.path, Some("/v1/messages"));
    assert_eq!(plan.removed, ["authorization", "cookie"]);
    assert_eq!(plan.credential, Some(("x-api-key", "sk-ant")));
    assert_eq!(plan.fixed, &[("anthropic-version", "2023-06-01")]);
    assert_eq!(plan.deadline_ms, None, "a client's own deadline is removed");
    assert!(plan.drop_content_length, "a translated body changes length");
    assert_eq!(plan.route_header, ("x-tollgate-provider", "alpha"));
}

#[test]
fn a_header_the_plan_sets_is_replaced_without_being_removed_first() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_admission(host, "gpt-4o", &route("openai"));
    chat_request(host, "gpt-4o", false);
    host.set_request_headers(&[
        (":method", "POST"),
        (":path", CHAT),
        ("authorization", AUTH),
        ("cookie", "session=1"),
        ("x-tollgate-provider", "beta"),
        ("x-tollgate-request-id", "forged"),
        ("x-envoy-upstream-rq-timeout-ms", "1"),
    ]);
    let mut req = plugin.stream();
    assert_eq!(req.on_http_request_headers(7, false), Action::Continue);
    let edits = host.request_edits();
    let removals: Vec<&str> = edits
        .iter()
        .filter(|(_, value)| value.is_none())
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(removals, ["cookie"], "{edits:?}");
    assert_eq!(
        host.request_header("authorization").as_deref(),
        Some("Bearer sk-provider")
    );
    assert_eq!(
        host.request_header("x-tollgate-provider").as_deref(),
        Some("alpha")
    );
    assert_eq!(
        host.request_header("x-envoy-upstream-rq-timeout-ms")
            .as_deref(),
        Some("30000")
    );
    assert_ne!(
        host.request_header("x-tollgate-request-id").as_deref(),
        Some("forged")
    );
}

#[test]
fn a_header_sent_twice_is_removed_before_it_is_replaced() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_admission(host, "gpt-4o", &route("openai"));
    chat_request(host, "gpt-4o", false);
    host.set_request_headers(&[
        (":method", "POST"),
        (":path", CHAT),
        ("authorization", "Bearer another-key"),
        ("authorization", AUTH),
    ]);
    let mut req = plugin.stream();
    assert_eq!(req.on_http_request_headers(4, false), Action::Continue);
    let edits = host.request_edits();
    let authorization: Vec<&Option<String>> = edits
        .iter()
        .filter(|(name, _)| name == "authorization")
        .map(|(_, value)| value)
        .collect();
    assert_eq!(
        authorization,
        [&None, &None, &Some("Bearer sk-provider".to_owned())],
        "both removed, then set"
    );
}

#[test]
fn a_query_string_is_dropped_from_the_path() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_admission(host, "gpt-4o", &route("openai"));
    chat_request(host, "gpt-4o", false);
    host.set_request_headers(&[
        (":method", "POST"),
        (":path", "/v1/chat/completions?api-version=1"),
        ("authorization", AUTH),
    ]);
    let mut req = plugin.stream();
    assert_eq!(req.on_http_request_headers(3, false), Action::Continue);
    assert_eq!(host.request_header(":path").as_deref(), Some(CHAT));
}

#[test]
fn a_cache_miss_asks_the_control_plane_then_admits_and_caches() {
    let plugin = plugin();
    let host = &plugin.host;
    chat_request(host, "gpt-4o", false);
    let mut req = plugin.stream();
    assert_eq!(req.on_http_request_headers(7, false), Action::Pause);
    let dispatches = host.dispatches();
    assert_eq!(dispatches.len(), 1);
    assert_eq!(dispatches[0].method, tollgate_proto::AUTHORIZE_METHOD);
    assert_eq!(dispatches[0].cluster, "tollgate_control_plane");
    let asked = AuthorizeRequest::decode(dispatches[0].message.as_slice()).unwrap();
    assert_eq!(
        (asked.key_hash.as_str(), asked.model.as_str()),
        (key_hash().as_str(), "gpt-4o")
    );

    let answer = AuthorizeResponse {
        key: Some(grant(KeyStatus::Active, &[])),
        route: Some(route("openai")),
        cache_ttl_ms: 10_000,
        model_served: true,
        ..AuthorizeResponse::default()
    };
    let bytes = authorize_answer(&answer);
    host.set_grpc_body(&bytes);
    req.on_grpc_call_response(dispatches[0].token, 0, bytes.len());
    assert_eq!(host.resumes(), 1);
    assert!(host.replies().is_empty());
    assert_eq!(
        host.request_header("x-tollgate-provider").as_deref(),
        Some("alpha")
    );

    // A second stream on another worker is admitted from what the first one cached.
    let other = host.worker();
    chat_request(&other, "gpt-4o", false);
    let mut second = Request::new(other.clone(), plugin.shared.clone(), "id-2".into());
    assert_eq!(second.on_http_request_headers(7, false), Action::Continue);
    assert!(other.dispatches().is_empty());
}

#[test]
fn an_answer_under_an_unknown_token_is_ignored() {
    let plugin = plugin();
    let host = &plugin.host;
    chat_request(host, "gpt-4o", false);
    let mut req = plugin.stream();
    req.on_http_request_headers(7, false);
    let token = host.dispatches()[0].token;
    host.set_grpc_body(b"not an AuthorizeResponse");
    req.on_grpc_call_response(token + 100, 0, 24);
    assert!(
        host.replies().is_empty(),
        "nothing decoded, nothing answered"
    );
    assert_eq!(host.resumes(), 0);
    assert!(matches!(req.phase, Phase::Authorizing(_)));
    // The real answer still reaches its handler.
    let bytes = authorize_answer(&AuthorizeResponse {
        key: Some(grant(KeyStatus::Revoked, &[])),
        ..AuthorizeResponse::default()
    });
    host.set_grpc_body(&bytes);
    req.on_grpc_call_response(token, 0, bytes.len());
    assert_eq!(refusal_code(host), (401, "api_key_revoked".into()));
}

// ---- refusals ----

/// The refusal a chat call gets when the control plane answers `answer`.
fn refusal_after(answer: AuthorizeResponse) -> (u32, String) {
    let plugin = plugin();
    let host = &plugin.host;
    chat_request(host, "gpt-4o", false);
    let mut req = plugin.stream();
    req.on_http_request_headers(7, false);
    let bytes = authorize_answer(&answer);
    host.set_grpc_body(&bytes);
    req.on_grpc_call_response(host.dispatches()[0].token, 0, bytes.len());
    assert_eq!(host.resumes(), 0);
    refusal_code(host)
}

#[test]
fn access_refusals_from_the_control_plane() {
    let unknown = AuthorizeResponse::default();
    assert_eq!(refusal_after(unknown), (401, "invalid_api_key".into()));
    let revoked = AuthorizeResponse {
        key: Some(grant(KeyStatus::Revoked, &[])),
        ..AuthorizeResponse::default()
    };
    assert_eq!(refusal_after(revoked), (401, "api_key_revoked".into()));
    let not_allowed = AuthorizeResponse {
        key: Some(grant(KeyStatus::Active, &["gpt-4o-mini"])),
        model_served: true,
        ..AuthorizeResponse::default()
    };
    assert_eq!(
        refusal_after(not_allowed),
        (403, "model_not_allowed".into())
    );
    let not_served = AuthorizeResponse {
        key: Some(grant(KeyStatus::Active, &[])),
        ..AuthorizeResponse::default()
    };
    assert_eq!(refusal_after(not_served), (404, "model_not_found".into()));
    let no_route = AuthorizeResponse {
        key: Some(grant(KeyStatus::Active, &[])),
        model_served: true,
        ..AuthorizeResponse::default()
    };
    assert_eq!(
        refusal_after(no_route),
        (503, "control_plane_unavailable".into())
    );
    let bad_kind = AuthorizeResponse {
        key: Some(grant(KeyStatus::Active, &[])),
        route: Some(route("carrier-pigeon")),
        model_served: true,
        ..AuthorizeResponse::default()
    };
    assert_eq!(
        refusal_after(bad_kind),
        (502, "provider_misconfigured".into())
    );
}

#[test]
fn an_unknown_key_is_remembered_and_refused_without_asking_again() {
    let plugin = plugin();
    assert_eq!(refusal_after_on(&plugin, AuthorizeResponse::default()), 401);
    // Refused before its body is looked at: this one has no `model` at all.
    let other = plugin.host.worker();
    other.set_request_headers(&[
        (":method", "POST"),
        (":path", CHAT),
        ("authorization", AUTH),
    ]);
    let mut again = Request::new(other.clone(), plugin.shared.clone(), "id-2".into());
    assert_eq!(again.on_http_request_headers(3, false), Action::Pause);
    assert!(other.dispatches().is_empty());
    assert_eq!(refusal_code(&other), (401, "invalid_api_key".into()));
    let hash = key_hash();
    let entry = cache::Entry::key(&cache::KeyGrantEntry(&hash)).into_owned();
    assert_eq!(
        plugin.host.shared_value(&entry),
        None,
        "unknown keys are not cached"
    );
}

fn refusal_after_on(plugin: &Plugin<MockHost>, answer: AuthorizeResponse) -> u32 {
    let host = &plugin.host;
    chat_request(host, "gpt-4o", false);
    let mut req = plugin.stream();
    req.on_http_request_headers(7, false);
    let bytes = authorize_answer(&answer);
    host.set_grpc_body(&bytes);
    req.on_grpc_call_response(host.dispatches()[0].token, 0, bytes.len());
    reply_of(host).0
}

#[test]
fn cached_refusals_need_no_call() {
    let plugin = plugin();
    let host = &plugin.host;
    let revoked = grant(KeyStatus::Revoked, &[]);
    cache::store(host, &key_hash(), "gpt-4o", &revoked, None, CACHED);
    chat_request(host, "gpt-4o", false);
    let mut req = plugin.stream();
    assert_eq!(req.on_http_request_headers(7, false), Action::Pause);
    assert!(host.dispatches().is_empty());
    assert_eq!(refusal_code(host), (401, "api_key_revoked".into()));
}

/// The refusal of a request with these headers and metadata, at header time.
fn header_refusal(
    headers: &[(&str, &str)],
    metadata: &[(&str, &[u8])],
    eos: bool,
) -> (u32, String) {
    let plugin = plugin();
    let host = &plugin.host;
    host.set_request_headers(headers);
    for (name, value) in metadata {
        host.set_metadata("tollgate", name, value);
    }
    let mut req = plugin.stream();
    assert_eq!(
        req.on_http_request_headers(headers.len(), eos),
        Action::Pause
    );
    assert!(host.dispatches().is_empty());
    let (status, code) = refusal_code(host);
    let reply = &host.replies()[0];
    assert!(
        reply
            .headers
            .iter()
            .any(|(n, _)| n == "x-tollgate-request-id")
    );
    (status, code)
}

#[test]
fn header_time_refusals() {
    let auth = AUTH;
    let post = |ct: &'static str| vec![(":method", "POST"), (":path", CHAT), ("content-type", ct)];
    let with_key = |mut h: Vec<(&'static str, &'static str)>, a: &'static str| {
        h.push(("authorization", a));
        h
    };
    let json = "application/json";
    assert_eq!(
        header_refusal(&post(json), &[("model", b"m")], false),
        (401, "missing_api_key".into())
    );
    assert_eq!(
        header_refusal(&with_key(post(json), "Basic dXNlcjpwYXNz"), &[], false),
        (401, "missing_api_key".into())
    );
    assert_eq!(
        header_refusal(&with_key(post(json), auth), &[("model", b"m")], true),
        (400, "missing_body".into())
    );
    assert_eq!(
        header_refusal(&with_key(post(json), auth), &[("body_error", b"1")], false),
        (400, "invalid_json".into())
    );
    assert_eq!(
        header_refusal(
            &with_key(post("text/plain"), auth),
            &[("body_error", b"1")],
            false
        ),
        (400, "invalid_json".into())
    );
    for model in [
        &b""[..],
        b"  ",
        &[1u8][..],
        &[0xff, 0xfe][..],
        &[b'm'; 257][..],
    ] {
        assert_eq!(
            header_refusal(&with_key(post(json), auth), &[("model", model)], false),
            (400, "invalid_parameter".into()),
            "{model:?}"
        );
    }
    assert_eq!(
        header_refusal(&with_key(post(json), auth), &[], false),
        (400, "invalid_parameter".into())
    );
    let get = vec![(":method", "GET"), (":path", CHAT), ("authorization", auth)];
    assert_eq!(
        header_refusal(&get, &[], true),
        (405, "method_not_allowed".into())
    );
    let nowhere = vec![
        (":method", "POST"),
        (":path", "/v2/x"),
        ("authorization", auth),
    ];
    assert_eq!(
        header_refusal(&nowhere, &[], true),
        (404, "unknown_url".into())
    );
}

#[test]
fn an_endpoint_the_provider_lacks_is_refused() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_admission(host, "claude", &route("anthropic"));
    host.set_request_headers(&[
        (":method", "POST"),
        (":path", "/v1/embeddings"),
        ("authorization", AUTH),
    ]);
    host.set_metadata("tollgate", "model", b"claude");
    let mut req = plugin.stream();
    assert_eq!(req.on_http_request_headers(3, false), Action::Pause);
    assert_eq!(refusal_code(host), (400, "endpoint_not_supported".into()));
}

#[test]
fn the_control_plane_unreachable_is_503() {
    // Dispatch fails.
    let plugin = plugin();
    let host = &plugin.host;
    host.fail_dispatch(Status::BadArgument);
    chat_request(host, "gpt-4o", false);
    let mut req = plugin.stream();
    assert_eq!(req.on_http_request_headers(7, false), Action::Pause);
    assert_eq!(
        refusal_code(host),
        (503, "control_plane_unavailable".into())
    );

    // The call fails with a gRPC status.
    let plugin = self::plugin();
    let host = &plugin.host;
    chat_request(host, "gpt-4o", false);
    let mut req = plugin.stream();
    req.on_http_request_headers(7, false);
    req.on_grpc_call_response(host.dispatches()[0].token, 14, 0);
    assert_eq!(
        refusal_code(host),
        (503, "control_plane_unavailable".into())
    );

    // The answer cannot be decoded.
    let plugin = self::plugin();
    let host = &plugin.host;
    chat_request(host, "gpt-4o", false);
    let mut req = plugin.stream();
    req.on_http_request_headers(7, false);
    host.set_grpc_body(&[0xff, 0xff, 0xff]);
    req.on_grpc_call_response(host.dispatches()[0].token, 0, 3);
    assert_eq!(
        refusal_code(host),
        (503, "control_plane_unavailable".into())
    );
    assert_eq!(host.resumes(), 0);
}

/// The refusal of a chat body, once admitted from the cache.
fn body_refusal(route: Route, stream_hint: bool, body: &[u8]) -> (u32, Value) {
    let plugin = plugin();
    let host = &plugin.host;
    cache_admission(host, "gpt-4o", &route);
    chat_request(host, "gpt-4o", stream_hint);
    let mut req = plugin.stream();
    assert_eq!(req.on_http_request_headers(7, false), Action::Continue);
    assert_eq!(send_body(&mut req, host, body), Action::Pause);
    assert!(host.request_body_set().is_none());
    let (status, body) = reply_of(host);
    (status, body["error"].clone())
}

#[test]
fn body_refusals() {
    let openai = || route("openai");
    let (status, e) = body_refusal(
        openai(),
        false,
        &chat_body("gpt-4o", json!({"temperature": 99})),
    );
    assert_eq!((status, e["param"].as_str()), (400, Some("temperature")));
    assert_eq!(e["code"], "invalid_parameter");
    let (_, e) = body_refusal(openai(), false, &chat_body("gpt-4o-mini", json!({})));
    assert_eq!(
        (e["param"].as_str(), e["code"].as_str()),
        (Some("model"), Some("invalid_parameter"))
    );
    let (_, e) = body_refusal(openai(), true, &chat_body("gpt-4o", json!({})));
    assert_eq!(
        e["param"], "stream",
        "the body says no stream, the metadata said stream"
    );
    let (_, e) = body_refusal(
        openai(),
        false,
        &chat_body("gpt-4o", json!({"service_tier": "flex"})),
    );
    assert_eq!(e["code"], "unmetered_option");
}

#[test]
fn a_body_over_the_limit_is_413() {
    let plugin = plugin_with(FilterSettings {
        max_body_bytes: 100,
        ..FilterSettings::default()
    });
    let host = &plugin.host;
    cache_admission(host, "gpt-4o", &route("openai"));
    chat_request(host, "gpt-4o", false);
    let mut req = plugin.stream();
    req.on_http_request_headers(7, false);
    assert_eq!(req.on_http_request_body(101, false), Action::Pause);
    assert_eq!(refusal_code(host), (413, "request_too_large".into()));
    assert_eq!(
        req.on_http_request_body(200, true),
        Action::Continue,
        "refused: nothing more to do"
    );
    assert_eq!(host.replies().len(), 1);
}

#[test]
fn a_worker_out_of_room_is_overloaded() {
    let plugin = plugin_with(FilterSettings {
        max_inflight_bytes: 64 * 1024,
        ..FilterSettings::default()
    });
    let host = &plugin.host;
    cache_admission(host, "gpt-4o", &route("openai"));
    chat_request(host, "gpt-4o", false);
    let mut req = plugin.stream();
    req.on_http_request_headers(7, false);
    assert_eq!(
        send_body(&mut req, host, &chat_body("gpt-4o", json!({}))),
        Action::Pause
    );
    assert_eq!(refusal_code(host), (503, "gateway_overloaded".into()));
}

#[test]
fn a_body_for_a_call_not_admitted_is_refused() {
    let plugin = plugin();
    let host = &plugin.host;
    chat_request(host, "gpt-4o", false);
    let mut req = plugin.stream();
    assert_eq!(req.on_http_request_headers(7, false), Action::Pause);
    assert_eq!(send_body(&mut req, host, b"{}"), Action::Pause);
    assert_eq!(refusal_code(host), (500, "not_admitted".into()));
    let mut fresh = plugin.stream();
    assert_eq!(fresh.on_http_request_trailers(1), Action::Pause);
}

// ---- body rewrites ----

#[test]
fn the_upstream_model_name_replaces_the_clients() {
    let plugin = plugin();
    let route = Route {
        upstream_model: "gpt-4o-2024-08-06".into(),
        ..route("openai")
    };
    let _req = admitted_on(&plugin, route, false, json!({}));
    let sent: Value = serde_json::from_slice(&plugin.host.request_body_set().unwrap()).unwrap();
    assert_eq!(sent["model"], "gpt-4o-2024-08-06");
    assert_eq!(sent["messages"][0]["content"], "hello");
    assert!(
        plugin
            .host
            .request_edits()
            .contains(&("content-length".into(), None))
    );
}

#[test]
fn an_unchanged_body_is_not_rewritten() {
    let plugin = plugin();
    let _req = admitted(&plugin, "openai", false, json!({}));
    assert_eq!(plugin.host.request_body_set(), None);
    assert!(
        !plugin
            .host
            .request_edits()
            .contains(&("content-length".into(), None))
    );
}

#[test]
fn include_usage_is_injected_into_streams_including_null_options() {
    for options in [
        json!({}),
        json!({"stream_options": null}),
        json!({"stream_options": {}}),
    ] {
        let plugin = plugin();
        let _req = admitted(&plugin, "openai", true, options.clone());
        let sent: Value = serde_json::from_slice(&plugin.host.request_body_set().unwrap()).unwrap();
        assert_eq!(
            sent["stream_options"],
            json!({"include_usage": true}),
            "{options}"
        );
    }
    // A client's own include_usage is left alone.
    let plugin = plugin();
    let _req = admitted(
        &plugin,
        "openai",
        true,
        json!({"stream_options": {"include_usage": true}}),
    );
    assert_eq!(plugin.host.request_body_set(), None);
    // DeepSeek reports usage unasked: nothing injected.
    let plugin = self::plugin();
    let _req = admitted(&plugin, "deepseek", true, json!({}));
    assert_eq!(plugin.host.request_body_set(), None);
}

#[test]
fn anthropic_requests_are_translated() {
    let plugin = plugin();
    let _req = admitted(&plugin, "anthropic", false, json!({"max_tokens": 10}));
    let sent: Value = serde_json::from_slice(&plugin.host.request_body_set().unwrap()).unwrap();
    assert_eq!(sent["model"], "gpt-4o");
    assert_eq!(sent["max_tokens"], 10);
    assert_eq!(sent["messages"][0]["role"], "user");
    assert_eq!(
        plugin.host.request_header(":path").as_deref(),
        Some("/v1/messages")
    );
    assert_eq!(
        plugin.host.request_header("anthropic-version").as_deref(),
        Some("2023-06-01")
    );
}

#[test]
fn a_body_in_pieces_is_checked_once_whole() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_admission(host, "gpt-4o", &route("openai"));
    chat_request(host, "gpt-4o", false);
    let mut req = plugin.stream();
    req.on_http_request_headers(7, false);
    let body = chat_body("gpt-4o", json!({}));
    host.set_request_body_bytes(&body);
    assert_eq!(req.on_http_request_body(10, false), Action::Pause);
    assert_eq!(req.on_http_request_body(body.len(), true), Action::Continue);
    assert!(host.replies().is_empty());
    assert_eq!(
        req.on_http_request_body(body.len(), true),
        Action::Continue,
        "checked already"
    );
}

#[test]
fn a_body_ending_in_trailers_is_checked_there_and_replayed() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_admission(host, "gpt-4o", &route("openai"));
    chat_request(host, "gpt-4o", false);
    let mut req = plugin.stream();
    req.on_http_request_headers(7, false);
    let body = chat_body("gpt-4o", json!({}));
    host.set_request_body_bytes(&body);
    assert_eq!(req.on_http_request_body(body.len(), false), Action::Pause);
    assert_eq!(req.on_http_request_trailers(1), Action::Pause);
    assert_eq!(
        host.resumes(),
        1,
        "resumed so Envoy replays body and trailers"
    );
    assert!(host.replies().is_empty());
    // The replay passes: the body is checked.
    assert_eq!(req.on_http_request_body(body.len(), true), Action::Continue);
    assert_eq!(req.on_http_request_trailers(1), Action::Continue);

    // A bad body ending in trailers is refused there.
    let plugin = self::plugin();
    let host = &plugin.host;
    cache_admission(host, "gpt-4o", &route("openai"));
    chat_request(host, "gpt-4o", false);
    let mut req = plugin.stream();
    req.on_http_request_headers(7, false);
    host.set_request_body_bytes(b"{\"model\":\"gpt-4o\"}");
    req.on_http_request_body(18, false);
    assert_eq!(req.on_http_request_trailers(1), Action::Pause);
    assert_eq!(reply_of(host).0, 400);
    assert_eq!(host.resumes(), 0);
}

// ---- responses and metering ----

const JSON: (&str, &str) = ("content-type", "application/json");
const SSE: (&str, &str) = ("content-type", "text/event-stream");

#[test]
fn a_scanned_json_answer_is_metered_and_passed_untouched() {
    let plugin = plugin();
    let host = &plugin.host;
    let mut req = admitted(&plugin, "openai", false, json!({}));
    let answer = br#"{"id":"x","object":"chat.completion","choices":[{"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}"#;
    let (first, second) = answer.split_at(40);
    respond(
        &mut req,
        host,
        &[
            (":status", "200"),
            JSON,
            ("set-cookie", "a=b"),
            ("openai-organization", "o"),
        ],
        &[first, second],
    );
    assert_eq!(host.response_out(), answer.to_vec());
    let edits = host.response_edits();
    assert!(edits.contains(&("set-cookie".into(), None)), "{edits:?}");
    assert!(edits.contains(&("x-tollgate-request-id".into(), Some(req.request_id.clone()))));
    req.on_log();
    let records = outbox_records(&plugin);
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(
        (r.key_id.as_str(), r.model.as_str(), r.provider.as_str()),
        ("key-1", "gpt-4o", "alpha")
    );
    assert_eq!((r.status, r.input_uncached, r.output), (200, 11, 7));
    assert!(!r.partial && !r.estimated && r.estimate.is_none());
}

#[test]
fn an_anthropic_answer_is_buffered_and_translated() {
    let plugin = plugin();
    let host = &plugin.host;
    let mut req = admitted(&plugin, "anthropic", false, json!({"max_tokens": 10}));
    let answer = br#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":5,"output_tokens":3}}"#;
    let first = &answer[..30];
    host.set_response_headers(&[(":status", "200"), JSON, ("content-length", "170")]);
    req.on_http_response_headers(3, false);
    assert!(
        host.response_edits()
            .contains(&("content-length".into(), None))
    );
    host.set_response_chunk(first);
    assert_eq!(req.on_http_response_body(first.len(), false), Action::Pause);
    host.set_response_chunk(answer);
    assert_eq!(
        req.on_http_response_body(answer.len(), true),
        Action::Continue
    );
    host.pass_response_chunk();
    let out: Value = serde_json::from_slice(&host.response_out()).unwrap();
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["choices"][0]["message"]["content"], "hi");
    req.on_log();
    let r = &outbox_records(&plugin)[0];
    assert_eq!((r.input_uncached, r.output, r.partial), (5, 3, false));
}

#[test]
fn a_provider_error_is_normalized_and_free() {
    let plugin = plugin();
    let host = &plugin.host;
    let mut req = admitted(&plugin, "openai", false, json!({}));
    respond(
        &mut req,
        host,
        &[(":status", "500"), ("content-type", "text/plain")],
        &[b"upstream broke"],
    );
    assert!(
        host.response_edits()
            .contains(&("content-type".into(), Some("application/json".into())))
    );
    let out: Value = serde_json::from_slice(&host.response_out()).unwrap();
    assert_eq!(out["error"]["message"], "upstream broke");
    assert_eq!(out["error"]["type"], "api_error");
    req.on_log();
    let r = &outbox_records(&plugin)[0];
    assert_eq!((r.status, r.output, r.estimated), (500, 0, false));
}

#[test]
fn a_provider_auth_failure_hides_the_providers_message() {
    let plugin = plugin();
    let host = &plugin.host;
    let mut req = admitted(&plugin, "openai", false, json!({}));
    respond(&mut req, host, &[(":status", "401"), JSON], &[br#"{"error":{"message":"Incorrect API key provided: sk-prov****","type":"invalid_request_error"}}"#]);
    let out: Value = serde_json::from_slice(&host.response_out()).unwrap();
    assert_eq!(out["error"]["code"], "provider_auth_failed");
    assert!(!String::from_utf8_lossy(&host.response_out()).contains("sk-prov"));
}

const OPENAI_STREAM: &[&[u8]] = &[
    b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n",
    b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}],\"usage\":null}\n\n",
    b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n",
    b"data: [DONE]\n\n",
];

#[test]
fn a_stream_with_injected_usage_is_metered_and_the_extra_chunk_hidden() {
    let plugin = plugin();
    let host = &plugin.host;
    let mut req = admitted(&plugin, "openai", true, json!({}));
    respond(&mut req, host, &[(":status", "200"), SSE], OPENAI_STREAM);
    let out = String::from_utf8(host.response_out()).unwrap();
    assert!(
        out.contains("Hel") && out.contains("lo") && out.contains("[DONE]"),
        "{out}"
    );
    assert!(
        !out.contains("prompt_tokens"),
        "the client did not ask for usage: {out}"
    );
    assert!(!out.contains("\"usage\":null"), "{out}");
    req.on_log();
    let r = &outbox_records(&plugin)[0];
    assert_eq!((r.input_uncached, r.output, r.partial), (9, 2, false));
}

#[test]
fn a_stream_the_client_asked_usage_for_passes_untouched() {
    let plugin = plugin();
    let host = &plugin.host;
    let mut req = admitted(
        &plugin,
        "openai",
        true,
        json!({"stream_options": {"include_usage": true}}),
    );
    respond(&mut req, host, &[(":status", "200"), SSE], OPENAI_STREAM);
    assert_eq!(host.response_out(), OPENAI_STREAM.concat());
    assert!(
        !host
            .response_edits()
            .contains(&("content-length".into(), None))
    );
}

#[test]
fn a_stream_cut_before_its_end_leaves_a_partial_estimated_record() {
    let plugin = plugin();
    let host = &plugin.host;
    let mut req = admitted(&plugin, "openai", true, json!({}));
    host.set_response_headers(&[(":status", "200"), SSE]);
    req.on_http_response_headers(2, false);
    host.set_response_chunk(OPENAI_STREAM[0]);
    req.on_http_response_body(OPENAI_STREAM[0].len(), false);
    host.pass_response_chunk();
    req.on_log();
    let r = &outbox_records(&plugin)[0];
    assert!(r.partial && r.estimated, "{r:?}");
    let estimate = r.estimate.as_ref().unwrap();
    assert_eq!(estimate.output.as_ref().unwrap().pieces.concat(), "Hel");
    assert!(
        estimate
            .prompt
            .as_ref()
            .unwrap()
            .pieces
            .concat()
            .contains("hello")
    );
}

#[test]
fn a_json_answer_cut_before_its_end_is_partial() {
    let plugin = plugin();
    let host = &plugin.host;
    let mut req = admitted(&plugin, "openai", false, json!({}));
    host.set_response_headers(&[(":status", "200"), JSON]);
    req.on_http_response_headers(2, false);
    let piece = br#"{"choices":[{"message":{"content":"partial answ"#;
    host.set_response_chunk(piece);
    req.on_http_response_body(piece.len(), false);
    req.on_log();
    let r = &outbox_records(&plugin)[0];
    assert!(r.partial && r.estimated, "{r:?}");
    assert_eq!(
        r.estimate
            .as_ref()
            .unwrap()
            .output
            .as_ref()
            .unwrap()
            .pieces
            .concat(),
        "partial answ"
    );
}

#[test]
fn an_anthropic_stream_is_translated() {
    let plugin = plugin();
    let host = &plugin.host;
    let mut req = admitted(&plugin, "anthropic", true, json!({"max_tokens": 10}));
    let events: &[&[u8]] = &[
        b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":4,\"output_tokens\":1}}}\n\n",
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"yo\"}}\n\n",
        b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":6}}\n\n",
        b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ];
    respond(&mut req, host, &[(":status", "200"), SSE], events);
    let out = String::from_utf8(host.response_out()).unwrap();
    assert!(
        out.contains("chat.completion.chunk") && out.contains("\"yo\""),
        "{out}"
    );
    assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
    req.on_log();
    let r = &outbox_records(&plugin)[0];
    assert_eq!((r.input_uncached, r.output, r.partial), (4, 6, false));
}

#[test]
fn a_response_of_another_type_is_not_metered() {
    let plugin = plugin();
    let host = &plugin.host;
    let mut req = admitted(&plugin, "openai", false, json!({}));
    respond(
        &mut req,
        host,
        &[
            (":status", "200"),
            ("content-type", "application/octet-stream"),
        ],
        &[b"\x00\x01"],
    );
    assert_eq!(host.response_out(), b"\x00\x01");
    req.on_log();
    let r = &outbox_records(&plugin)[0];
    assert_eq!((r.status, r.partial), (200, false));
}

#[test]
fn only_admitted_calls_leave_a_record() {
    let plugin = plugin();
    let host = &plugin.host;
    host.set_request_headers(&[(":method", "POST"), (":path", CHAT)]);
    let mut req = plugin.stream();
    req.on_http_request_headers(2, false);
    host.set_response_headers(&[(":status", "401"), JSON]);
    assert_eq!(req.on_http_response_headers(2, false), Action::Continue);
    assert!(
        host.response_edits().is_empty(),
        "the gateway's own reply is left alone"
    );
    req.on_log();
    assert!(outbox_records(&plugin).is_empty());
}

#[test]
fn the_record_carries_ids_and_timing() {
    let plugin = plugin();
    let host = &plugin.host;
    let mut req = admitted(&plugin, "openai", false, json!({}));
    host.set_now(5_250);
    respond(
        &mut req,
        host,
        &[(":status", "200"), JSON],
        &[br#"{"usage":{"prompt_tokens":1,"completion_tokens":1}}"#],
    );
    req.on_log();
    let r = &outbox_records(&plugin)[0];
    assert_eq!(r.request_id, req.request_id);
    assert_eq!(r.request_id.len(), 32);
    assert_eq!((r.finished_at_ms, r.duration_ms), (5_250, 250));
}

// ---- /v1/models ----

fn models_request(host: &MockHost, path: &str) {
    host.set_request_headers(&[(":method", "GET"), (":path", path), ("authorization", AUTH)]);
}

fn served() -> Vec<ServedModel> {
    ["gpt-4o", "gpt-4o-mini"]
        .iter()
        .map(|m| ServedModel {
            name: (*m).into(),
            provider: "alpha".into(),
        })
        .collect()
}

#[test]
fn models_are_listed_from_the_control_plane_then_from_the_cache() {
    let plugin = plugin();
    let host = &plugin.host;
    models_request(host, "/v1/models");
    let mut req = plugin.stream();
    assert_eq!(req.on_http_request_headers(3, true), Action::Pause);
    let asked = AuthorizeRequest::decode(host.dispatches()[0].message.as_slice()).unwrap();
    assert_eq!(asked.model, "");
    let bytes = authorize_answer(&AuthorizeResponse {
        key: Some(grant(KeyStatus::Active, &["gpt-4o-mini"])),
        served_models: served(),
        cache_ttl_ms: 10_000,
        ..AuthorizeResponse::default()
    });
    host.set_grpc_body(&bytes);
    req.on_grpc_call_response(host.dispatches()[0].token, 0, bytes.len());
    let (status, body) = reply_of(host);
    assert_eq!(status, 200);
    assert_eq!(
        body["data"],
        json!([{"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "alpha"}])
    );
    assert_eq!(host.resumes(), 0);
    req.on_log();
    assert!(
        outbox_records(&plugin).is_empty(),
        "answered by the gateway: not metered"
    );

    let other = host.worker();
    models_request(&other, "/v1/models/gpt-4o");
    let mut one = Request::new(other.clone(), plugin.shared.clone(), "id-2".into());
    assert_eq!(one.on_http_request_headers(3, true), Action::Pause);
    assert!(other.dispatches().is_empty(), "from the cache");
    assert_eq!(
        refusal_code(&other),
        (404, "model_not_found".into()),
        "not on the key's list"
    );

    let third = host.worker();
    models_request(&third, "/v1/models/gpt-4o-mini");
    let mut found = Request::new(third.clone(), plugin.shared.clone(), "id-3".into());
    found.on_http_request_headers(3, true);
    assert_eq!(reply_of(&third).1["id"], "gpt-4o-mini");
}

#[test]
fn a_revoked_key_lists_no_models() {
    let plugin = plugin();
    let host = &plugin.host;
    models_request(host, "/v1/models");
    let mut req = plugin.stream();
    req.on_http_request_headers(3, true);
    let bytes = authorize_answer(&AuthorizeResponse {
        key: Some(grant(KeyStatus::Revoked, &[])),
        served_models: served(),
        ..AuthorizeResponse::default()
    });
    host.set_grpc_body(&bytes);
    req.on_grpc_call_response(host.dispatches()[0].token, 0, bytes.len());
    assert_eq!(refusal_code(host), (401, "api_key_revoked".into()));
}

// ---- the root context ----

#[test]
fn usage_is_reported_on_tick_and_the_ack_routed_to_the_outbox() {
    let mut plugin = plugin();
    let mut req = admitted(&plugin, "openai", false, json!({}));
    respond(
        &mut req,
        &plugin.host.clone(),
        &[(":status", "200"), JSON],
        &[br#"{"usage":{"prompt_tokens":1,"completion_tokens":1}}"#],
    );
    req.on_log();
    plugin.flush();
    let reports: Vec<_> = plugin
        .host
        .dispatches()
        .into_iter()
        .filter(|d| d.method == tollgate_proto::REPORT_USAGE_METHOD)
        .collect();
    assert_eq!(reports.len(), 1);
    let batch = UsageBatch::decode(reports[0].message.as_slice()).unwrap();
    assert_eq!(batch.records.len(), 1);
    assert_eq!(
        reports[0].authorization,
        FilterSettings::default()
            .control_plane_token
            .bearer()
            .into_bytes()
    );
    // An answer under another token is ignored: the batch stays in flight.
    plugin.on_answer(reports[0].token + 1, 14, 0);
    plugin.flush();
    assert_eq!(
        plugin.host.dispatches().len(),
        1,
        "no second batch while one is in flight"
    );
    // A transient failure of the real call puts the batch back; the next tick resends it.
    plugin.on_answer(reports[0].token, 14, 0);
    plugin.flush();
    let all = plugin.host.dispatches();
    let resent = UsageBatch::decode(all[all.len() - 1].message.as_slice()).unwrap();
    assert_eq!(resent.records[0].request_id, batch.records[0].request_id);
}

#[test]
fn an_undispatched_report_waits_for_the_next_tick() {
    let mut plugin = plugin();
    plugin.shared.outbox.borrow_mut().push(UsageRecord {
        request_id: "r1".into(),
        ..UsageRecord::default()
    });
    plugin.host.fail_dispatch(Status::InternalFailure);
    plugin.flush();
    assert!(plugin.host.dispatches().is_empty());
    assert_eq!(outbox_records(&plugin)[0].request_id, "r1", "still waiting");
}

#[test]
fn the_plugin_starts_only_on_a_valid_configuration() {
    let token = "t".repeat(32);
    let mut plugin = Plugin::new(MockHost::new());
    let raw = format!(
        r#"{{"control_plane_token":"{token}","usage_flush_interval_ms":400,"max_body_bytes":77}}"#
    );
    assert_eq!(
        plugin.start(raw.as_bytes()),
        Some(std::time::Duration::from_millis(400))
    );
    assert_eq!(plugin.shared.settings.max_body_bytes, 77);
    let unseeded = crate::ids::RequestIds::default().next();
    assert_ne!(
        plugin.stream().request_id,
        unseeded,
        "ids are seeded from randomness at start"
    );

    let mut refused = Plugin::new(MockHost::new());
    assert_eq!(refused.start(br#"{"control_plane_token":"short"}"#), None);
    assert_eq!(refused.start(b"{not json"), None);
    let counting = format!(r#"{{"control_plane_token":"{token}","count_prompt_tokens":true}}"#);
    let expected = cfg!(feature = "exact-count").then(|| std::time::Duration::from_millis(250));
    assert_eq!(refused.start(counting.as_bytes()), expected);
}

#[test]
fn an_answer_for_a_stream_refused_meanwhile_is_ignored() {
    let plugin = plugin();
    let host = &plugin.host;
    chat_request(host, "gpt-4o", false);
    let mut req = plugin.stream();
    req.on_http_request_headers(7, false);
    // A body before the control plane answered: refused.
    assert_eq!(send_body(&mut req, host, b"{}"), Action::Pause);
    let bytes = authorize_answer(&AuthorizeResponse {
        key: Some(grant(KeyStatus::Active, &[])),
        route: Some(route("openai")),
        model_served: true,
        ..AuthorizeResponse::default()
    });
    host.set_grpc_body(&bytes);
    req.on_grpc_call_response(host.dispatches()[0].token, 0, bytes.len());
    assert_eq!(host.resumes(), 0, "a refused stream is never resumed");
    assert_eq!(refusal_code(host), (500, "not_admitted".into()));
    assert_eq!(host.request_header("x-tollgate-provider"), None);
}

#[test]
fn a_cached_key_without_a_cached_route_asks_again_and_a_failed_cache_write_still_admits() {
    let plugin = plugin();
    let host = &plugin.host;
    let g = grant(KeyStatus::Active, &[]);
    cache::store(host, &key_hash(), "gpt-4o", &g, None, CACHED);
    host.refuse_shared_writes(Status::InternalFailure);
    chat_request(host, "gpt-4o-new", false);
    let mut req = plugin.stream();
    assert_eq!(req.on_http_request_headers(7, false), Action::Pause);
    let asked = AuthorizeRequest::decode(host.dispatches()[0].message.as_slice()).unwrap();
    assert_eq!(asked.model, "gpt-4o-new");
    let bytes = authorize_answer(&AuthorizeResponse {
        key: Some(g),
        route: Some(route("openai")),
        model_served: true,
        cache_ttl_ms: 10_000,
        ..AuthorizeResponse::default()
    });
    host.set_grpc_body(&bytes);
    req.on_grpc_call_response(host.dispatches()[0].token, 0, bytes.len());
    assert_eq!(host.resumes(), 1);
    assert!(host.shared_value("tg:v2:route:gpt-4o-new").is_none());
}

#[test]
fn an_anthropic_answer_without_usage_is_estimated_from_its_text() {
    let plugin = plugin();
    let host = &plugin.host;
    let mut req = admitted(&plugin, "anthropic", false, json!({"max_tokens": 10}));
    let answer = br#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"no usage here"}],"stop_reason":"end_turn"}"#;
    respond(&mut req, host, &[(":status", "200"), JSON], &[answer]);
    req.on_log();
    let r = &outbox_records(&plugin)[0];
    assert!(r.estimated && !r.partial, "{r:?}");
    let estimate = r.estimate.as_ref().unwrap();
    assert_eq!(
        estimate.output.as_ref().unwrap().pieces.concat(),
        "no usage here"
    );
}

#[test]
fn a_stream_cut_after_its_prompt_count_estimates_only_the_output() {
    let plugin = plugin();
    let host = &plugin.host;
    let mut req = admitted(&plugin, "anthropic", true, json!({"max_tokens": 10}));
    host.set_response_headers(&[(":status", "200"), SSE]);
    req.on_http_response_headers(2, false);
    for event in [
        &b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":4,\"output_tokens\":1}}}\n\n"[..],
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"cut\"}}\n\n",
    ] {
        host.set_response_chunk(event);
        req.on_http_response_body(event.len(), false);
    }
    req.on_log();
    let r = &outbox_records(&plugin)[0];
    assert!(r.partial, "{r:?}");
    assert_eq!(r.input_uncached, 4);
    let estimate = r.estimate.as_ref().unwrap();
    assert_eq!(estimate.output.as_ref().unwrap().pieces.concat(), "cut");
    assert!(
        estimate.prompt.is_none(),
        "the prompt was counted by the provider"
    );
}

// ---- revocation through the shared cache ----

/// A chat call for `model` on a fresh stream of another worker; when it asks the control
/// plane, `answer` is delivered. Returns that stream's host, to read what it did.
fn call_on_worker(plugin: &Plugin<MockHost>, model: &str, answer: &AuthorizeResponse) -> MockHost {
    let host = plugin.host.worker();
    chat_request(&host, model, false);
    let mut req = Request::new(host.clone(), plugin.shared.clone(), "id".into());
    if req.on_http_request_headers(7, false) == Action::Pause
        && let Some(call) = host.dispatches().first()
    {
        let bytes = authorize_answer(answer);
        host.set_grpc_body(&bytes);
        req.on_grpc_call_response(call.token, 0, bytes.len());
    }
    host
}

fn answer_for(status: KeyStatus, cache_ttl_ms: u32) -> AuthorizeResponse {
    let admits = status == KeyStatus::Active;
    AuthorizeResponse {
        key: Some(grant(status, &[])),
        route: admits.then(|| route("openai")),
        model_served: true,
        cache_ttl_ms,
        ..AuthorizeResponse::default()
    }
}

/// Once the control plane says a key is revoked, the cache says so too, whatever the
/// expiry of the active entry it replaces: revocation must not wait for that entry.
fn assert_revocation_reaches_cached_routes(clock_after: u64, revoked_ttl_ms: u32) {
    let plugin = plugin();
    let first = call_on_worker(&plugin, "gpt-4o", &answer_for(KeyStatus::Active, 10_000));
    assert_eq!(first.resumes(), 1, "admitted and cached");

    plugin.host.set_now(clock_after);
    // A model whose route is not cached makes the next call ask, and learn the revocation.
    let asking = call_on_worker(
        &plugin,
        "gpt-4o-mini",
        &answer_for(KeyStatus::Revoked, revoked_ttl_ms),
    );
    assert_eq!(refusal_code(&asking), (401, "api_key_revoked".into()));

    // A call to the model whose route is cached is answered from the cache: revoked.
    let cached = call_on_worker(&plugin, "gpt-4o", &answer_for(KeyStatus::Active, 10_000));
    assert!(cached.dispatches().is_empty(), "answered from the cache");
    assert_eq!(refusal_code(&cached), (401, "api_key_revoked".into()));
}

#[test]
fn a_revocation_replaces_an_active_entry_after_the_clock_steps_back() {
    // Cached at 5_000 until 15_000; the clock steps back 3 s, the revocation is learnt at
    // 2_000 with the same TTL, so it would expire at 12_000, before the active entry.
    assert_revocation_reaches_cached_routes(2_000, 10_000);
}

#[test]
fn a_revocation_replaces_an_active_entry_after_the_ttl_is_shortened() {
    // An operator lowers key_cache_ttl_ms to 1 s to make revocations quick, then revokes.
    assert_revocation_reaches_cached_routes(6_000, 1_000);
}

#[test]
fn a_body_problem_has_one_code_wherever_it_is_caught() {
    // At header time json_to_metadata's verdict gives `invalid_json` and `missing_body`
    // (header_time_refusals); the body check must name the same problems the same way.
    let (status, e) = body_refusal(route("openai"), false, b"{\"model\":");
    assert_eq!((status, e["code"].as_str()), (400, Some("invalid_json")));
    let (status, e) = body_refusal(route("openai"), false, b" \n");
    assert_eq!((status, e["code"].as_str()), (400, Some("missing_body")));
    let (status, e) = body_refusal(route("openai"), false, b"[1]");
    assert_eq!((status, e["code"].as_str()), (400, Some("invalid_request")));
}

#[test]
fn a_slow_answer_does_not_undo_the_revocation_a_later_question_learnt() {
    // Two workers ask about the same key; the control plane revokes it in between. The
    // later question's answer (revoked) arrives first, the earlier one's (active) last.
    let plugin = plugin();
    let (early_host, late_host) = (plugin.host.worker(), plugin.host.worker());
    chat_request(&early_host, "gpt-4o", false);
    chat_request(&late_host, "gpt-4o", false);
    let mut early = Request::new(early_host.clone(), plugin.shared.clone(), "a".into());
    let mut late = Request::new(late_host.clone(), plugin.shared.clone(), "b".into());
    assert_eq!(early.on_http_request_headers(7, false), Action::Pause);
    assert_eq!(late.on_http_request_headers(7, false), Action::Pause);

    let revoked = authorize_answer(&answer_for(KeyStatus::Revoked, 10_000));
    late_host.set_grpc_body(&revoked);
    late.on_grpc_call_response(late_host.dispatches()[0].token, 0, revoked.len());
    let active = authorize_answer(&answer_for(KeyStatus::Active, 10_000));
    early_host.set_grpc_body(&active);
    early.on_grpc_call_response(early_host.dispatches()[0].token, 0, active.len());
    assert_eq!(
        early_host.resumes(),
        1,
        "the earlier call itself was admitted"
    );

    let next = call_on_worker(&plugin, "gpt-4o", &answer_for(KeyStatus::Active, 10_000));
    assert!(next.dispatches().is_empty(), "answered from the cache");
    assert_eq!(refusal_code(&next), (401, "api_key_revoked".into()));
}

// ---- requests per minute ----

/// Leases this Envoy the whole of every limit of `g` for `gpt-4o`, as answers to it would
/// have: alone, it admits what one Envoy's windows admitted before shares.
fn lease_whole(host: &MockHost, g: &KeyGrant) {
    crate::limits::testing::lease_all(host, &Limit::of_grant(g, "gpt-4o"));
}

/// Caches an active key limited to `rpm` and the OpenAI route for `gpt-4o`, its whole
/// limit leased to this Envoy.
fn cache_limited(host: &MockHost, rpm: Option<u32>) {
    let g = KeyGrant {
        requests_per_minute: rpm,
        ..grant(KeyStatus::Active, &[])
    };
    lease_whole(host, &g);
    cache::store(
        host,
        &key_hash(),
        "gpt-4o",
        &g,
        Some(&route("openai")),
        CACHED,
    );
}

/// Makes one chat call on `host` (a worker), its body sent if its headers pass: the
/// stream and the last action.
fn limited_call(
    plugin: &Plugin<MockHost>,
    host: &MockHost,
    id: &str,
) -> (Request<MockHost>, Action) {
    chat_request(host, "gpt-4o", false);
    let mut req = Request::new(host.clone(), plugin.shared.clone(), id.into());
    let mut action = req.on_http_request_headers(7, false);
    if action == Action::Continue {
        action = send_body(&mut req, host, &chat_body("gpt-4o", json!({})));
    }
    (req, action)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn a_limited_key_is_admitted_up_to_its_limit_then_refused_with_openais_429() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_limited(host, Some(3));
    for i in 0..3 {
        let (_req, action) = limited_call(&plugin, host, &format!("id-{i}"));
        assert_eq!(action, Action::Continue, "call {i}");
    }
    assert!(host.replies().is_empty());
    let (_req, action) = limited_call(&plugin, host, "id-3");
    assert_eq!(action, Action::Pause);
    let (status, body) = reply_of(host);
    assert_eq!(status, 429);
    assert_eq!(body["error"]["type"], "requests");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    let headers = &host.replies()[0].headers;
    // Admitted at 5 s, slot 5: free again when slot 66 begins, 61 s later.
    assert_eq!(header(headers, "retry-after"), Some("61"));
    assert_eq!(header(headers, "x-ratelimit-limit-requests"), Some("3"));
    assert_eq!(header(headers, "x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(header(headers, "x-ratelimit-reset-requests"), Some("1m1s"));
}

#[test]
fn an_admitted_answer_carries_the_gateways_headers_over_the_providers() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_limited(host, Some(5));
    let (mut req, action) = limited_call(&plugin, host, "id-1");
    assert_eq!(action, Action::Continue);
    respond(
        &mut req,
        host,
        &[
            (":status", "200"),
            JSON,
            ("x-ratelimit-remaining-requests", "9999"),
        ],
        &[],
    );
    let edits = host.response_edits();
    let set = |name: &str| {
        edits
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
    };
    assert_eq!(set("x-ratelimit-limit-requests").as_deref(), Some("5"));
    assert_eq!(set("x-ratelimit-remaining-requests").as_deref(), Some("4"));
    assert_eq!(set("x-ratelimit-reset-requests").as_deref(), Some("1m1s"));
    assert_eq!(set("retry-after"), None);
}

#[test]
fn two_workers_draw_from_one_window() {
    let plugin = plugin();
    let worker_a = &plugin.host;
    let worker_b = worker_a.worker();
    cache_limited(worker_a, Some(2));
    let (_a, first) = limited_call(&plugin, worker_a, "id-a");
    let (_b, second) = limited_call(&plugin, &worker_b, "id-b");
    assert_eq!((first, second), (Action::Continue, Action::Continue));
    let (_c, third) = limited_call(&plugin, &worker_b, "id-c");
    assert_eq!(third, Action::Pause);
    assert_eq!(refusal_code(&worker_b), (429, "rate_limit_exceeded".into()));
    assert!(worker_a.replies().is_empty());
}

#[test]
fn a_limit_of_zero_blocks_every_call() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_limited(host, Some(0));
    let (_req, action) = limited_call(&plugin, host, "id-1");
    assert_eq!(action, Action::Pause);
    assert_eq!(refusal_code(host), (429, "rate_limit_exceeded".into()));
}

#[test]
fn an_unset_limit_is_unlimited_and_leaves_the_providers_headers() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_limited(host, None);
    for i in 0..200 {
        let (_req, action) = limited_call(&plugin, host, &format!("id-{i}"));
        assert_eq!(action, Action::Continue, "call {i}");
    }
    let (mut req, _) = limited_call(&plugin, host, "id-last");
    respond(&mut req, host, &[(":status", "200"), JSON], &[]);
    assert!(
        !host
            .response_edits()
            .iter()
            .any(|(n, _)| n.starts_with("x-ratelimit")),
        "{:?}",
        host.response_edits()
    );
    assert!(host.replies().is_empty());
}

#[test]
fn a_call_refused_for_another_reason_costs_no_request() {
    let plugin = plugin();
    let host = &plugin.host;
    let g = KeyGrant {
        requests_per_minute: Some(1),
        ..grant(KeyStatus::Active, &[])
    };
    lease_whole(host, &g);
    let mut broken = route("openai");
    broken.kind = "no-such-kind".into();
    cache::store(host, &key_hash(), "bad", &g, Some(&broken), CACHED);
    cache::store(
        host,
        &key_hash(),
        "gpt-4o",
        &g,
        Some(&route("openai")),
        CACHED,
    );
    chat_request(host, "bad", false);
    let mut req = plugin.stream();
    assert_eq!(req.on_http_request_headers(7, false), Action::Pause);
    assert_eq!(refusal_code(host).1, "provider_misconfigured");
    let other = host.worker();
    let (_req, action) = limited_call(&plugin, &other, "id-2");
    assert_eq!(action, Action::Continue);
}

#[test]
fn a_limit_learnt_from_the_control_plane_applies_to_that_call() {
    let plugin = plugin();
    let host = &plugin.host;
    let answer = AuthorizeResponse {
        key: Some(KeyGrant {
            requests_per_minute: Some(0),
            ..grant(KeyStatus::Active, &[])
        }),
        route: Some(route("openai")),
        cache_ttl_ms: 10_000,
        model_served: true,
        ..AuthorizeResponse::default()
    };
    let (mut req, action) = limited_call(&plugin, host, "id-1");
    assert_eq!(action, Action::Pause);
    let bytes = authorize_answer(&answer);
    host.set_grpc_body(&bytes);
    req.on_grpc_call_response(host.dispatches()[0].token, 0, bytes.len());
    assert_eq!(host.resumes(), 0);
    assert_eq!(refusal_code(host), (429, "rate_limit_exceeded".into()));
}

#[test]
fn a_call_whose_body_is_refused_costs_no_request() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_limited(host, Some(1));
    // A body with an unmetered option, then one of another model than the metadata's:
    // both refused after the headers were admitted.
    for (i, body) in [
        chat_body("gpt-4o", json!({"service_tier": "flex"})),
        chat_body("gpt-4o-mini", json!({})),
    ]
    .iter()
    .enumerate()
    {
        let worker = host.worker();
        chat_request(&worker, "gpt-4o", false);
        let mut req = Request::new(worker.clone(), plugin.shared.clone(), format!("bad-{i}"));
        assert_eq!(req.on_http_request_headers(7, false), Action::Continue);
        assert_eq!(send_body(&mut req, &worker, body), Action::Pause);
        assert_eq!(refusal_code(&worker).0, 400);
    }
    let worker = host.worker();
    let (_req, action) = limited_call(&plugin, &worker, "good");
    assert_eq!(action, Action::Continue);
    assert!(worker.replies().is_empty(), "{:?}", worker.replies());
    let (_req, action) = limited_call(&plugin, &host.worker(), "over");
    assert_eq!(action, Action::Pause, "the good call took the only request");
}

#[test]
fn headers_alone_take_nothing_and_a_spent_key_is_refused_before_its_body() {
    let plugin = plugin();
    let host = &plugin.host;
    cache_limited(host, Some(1));
    let waiting: Vec<Request<MockHost>> = (0..3)
        .map(|i| {
            let worker = host.worker();
            chat_request(&worker, "gpt-4o", false);
            let mut req = Request::new(worker, plugin.shared.clone(), format!("h-{i}"));
            assert_eq!(req.on_http_request_headers(7, false), Action::Continue);
            req
        })
        .collect();
    let (_req, action) = limited_call(&plugin, &host.worker(), "first");
    assert_eq!(action, Action::Continue);
    // One of the streams whose headers passed sends its body after the key is spent.
    let mut late = waiting.into_iter().next().unwrap();
    let worker = late.host.clone();
    assert_eq!(
        send_body(&mut late, &worker, &chat_body("gpt-4o", json!({}))),
        Action::Pause
    );
    assert_eq!(refusal_code(&worker), (429, "rate_limit_exceeded".into()));
    let worker = host.worker();
    chat_request(&worker, "gpt-4o", false);
    let mut req = Request::new(worker.clone(), plugin.shared.clone(), "spent".into());
    assert_eq!(req.on_http_request_headers(7, false), Action::Pause);
    assert_eq!(refusal_code(&worker), (429, "rate_limit_exceeded".into()));
}

// ---- tokens per minute, and the failed-authentication brake ----

/// Caches an active key with `grant`'s limits and a route whose model caps output at 400,
/// its limits leased whole to this Envoy.
fn cache_token_limited(host: &MockHost, g: KeyGrant) {
    lease_whole(host, &g);
    let mut r = route("openai");
    r.price = Some(tollgate_proto::v1::ModelPrice {
        max_output_tokens: 400,
        ..Default::default()
    });
    cache::store(host, &key_hash(), "gpt-4o", &g, Some(&r), CACHED);
}

/// One chat call asking for `max_tokens` on a fresh worker: the stream, its host, and the
/// last action.
fn token_call(plugin: &Plugin<MockHost>, max_tokens: u64) -> (Request<MockHost>, MockHost, Action) {
    let host = plugin.host.worker();
    chat_request(&host, "gpt-4o", false);
    let mut req = Request::new(host.clone(), plugin.shared.clone(), "t".into());
    let mut action = req.on_http_request_headers(7, false);
    if action == Action::Continue {
        let body = chat_body("gpt-4o", json!({ "max_tokens": max_tokens }));
        action = send_body(&mut req, &host, &body);
    }
    (req, host, action)
}

/// The `x-ratelimit-*` header `name` an admitted call's answer carries.
fn answered_header(req: &mut Request<MockHost>, host: &MockHost, name: &str) -> Option<u64> {
    respond(req, host, &[(":status", "200"), JSON], &[]);
    host.response_edits()
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.as_deref()?.parse().ok())
}

#[test]
fn a_token_limit_holds_prompt_and_capped_output_and_settles_to_usage() {
    let plugin = plugin();
    cache_token_limited(
        &plugin.host,
        KeyGrant {
            tokens_per_minute: Some(1_000),
            ..grant(KeyStatus::Active, &[])
        },
    );
    let remaining = "x-ratelimit-remaining-tokens";
    let (mut first, first_host, action) = token_call(&plugin, 300);
    assert_eq!(action, Action::Continue);
    let after_first = answered_header(&mut first, &first_host, remaining).unwrap();
    let hold = 1_000 - after_first;
    assert!(
        hold > 300 && hold < 400,
        "prompt bound + 300 output: {hold}"
    );
    // A hostile max_tokens is held at the model's cap of 400, 100 more than 300.
    let (mut second, second_host, action) = token_call(&plugin, 1_000_000_000);
    assert_eq!(action, Action::Continue);
    let after_second = answered_header(&mut second, &second_host, remaining).unwrap();
    assert_eq!(after_first - after_second, hold + 100);
    let (_third, third_host, action) = token_call(&plugin, 300);
    assert_eq!(action, Action::Pause, "{after_second} left, {hold} asked");
    let (status, body) = reply_of(&third_host);
    assert_eq!(status, 429);
    assert_eq!(body["error"]["type"], "tokens");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    let headers = &third_host.replies()[0].headers;
    assert_eq!(header(headers, "x-ratelimit-limit-tokens"), Some("1000"));
    assert_eq!(
        header(headers, "x-ratelimit-remaining-tokens"),
        Some(after_second.to_string().as_str())
    );
    assert!(header(headers, "retry-after").is_some());

    // The first call used 18 tokens: the rest of its hold is free again.
    let usage = br#"{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}"#;
    first_host.set_response_chunk(usage);
    first.on_http_response_body(usage.len(), true);
    first.on_log();
    let (mut fourth, fourth_host, action) = token_call(&plugin, 300);
    assert_eq!(action, Action::Continue);
    let after_fourth = answered_header(&mut fourth, &fourth_host, remaining).unwrap();
    assert_eq!(after_fourth, after_second + hold - 18 - hold);
}

#[test]
fn a_call_refused_for_tokens_gives_its_request_back() {
    let plugin = plugin();
    cache_token_limited(
        &plugin.host,
        KeyGrant {
            requests_per_minute: Some(10),
            tokens_per_minute: Some(100),
            ..grant(KeyStatus::Active, &[])
        },
    );
    let (_big, big_host, action) = token_call(&plugin, 300);
    assert_eq!(action, Action::Pause);
    assert_eq!(reply_of(&big_host).1["error"]["type"], "tokens");
    let headers = &big_host.replies()[0].headers;
    assert_eq!(
        header(headers, "x-ratelimit-remaining-requests"),
        Some("10")
    );
    let (mut small, small_host, action) = token_call(&plugin, 10);
    assert_eq!(action, Action::Continue);
    let left = answered_header(&mut small, &small_host, "x-ratelimit-remaining-requests");
    assert_eq!(left, Some(9));
}

#[test]
fn a_failed_call_gives_its_whole_hold_back() {
    let plugin = plugin();
    cache_token_limited(
        &plugin.host,
        KeyGrant {
            tokens_per_minute: Some(1_000),
            ..grant(KeyStatus::Active, &[])
        },
    );
    let (mut failed, failed_host, action) = token_call(&plugin, 300);
    assert_eq!(action, Action::Continue);
    let error = br#"{"error":{"message":"down","type":"server_error","param":null,"code":null}}"#;
    respond(
        &mut failed,
        &failed_host,
        &[(":status", "500"), JSON],
        &[error],
    );
    failed.on_log();
    let (mut next, next_host, action) = token_call(&plugin, 300);
    assert_eq!(action, Action::Continue);
    let after = answered_header(&mut next, &next_host, "x-ratelimit-remaining-tokens").unwrap();
    let (mut again, again_host, _) = token_call(&plugin, 300);
    let after_again =
        answered_header(&mut again, &again_host, "x-ratelimit-remaining-tokens").unwrap();
    // Only `next` and `again` hold: `failed` holds nothing any more.
    assert_eq!(1_000 - after, after - after_again);
}

fn braking_plugin() -> Plugin<MockHost> {
    plugin_with(FilterSettings {
        failed_auths_per_minute_per_ip: 2,
        ..FilterSettings::default()
    })
}

/// A call from `address` with `authorization` (none when `None`), on a fresh worker.
fn call_from(
    plugin: &Plugin<MockHost>,
    address: &str,
    authorization: Option<&str>,
) -> (Request<MockHost>, MockHost, Action) {
    let host = plugin.host.worker();
    chat_request(&host, "gpt-4o", false);
    let mut headers = vec![
        (":method", "POST"),
        (":path", CHAT),
        ("content-type", "application/json"),
    ];
    if let Some(a) = authorization {
        headers.push(("authorization", a));
    }
    host.set_request_headers(&headers);
    host.set_property(&["source", "address"], address.as_bytes());
    let mut req = Request::new(host.clone(), plugin.shared.clone(), "b".into());
    let action = req.on_http_request_headers(7, false);
    (req, host, action)
}

#[test]
fn an_address_past_its_failed_authentications_is_refused_before_any_key_lookup() {
    let plugin = braking_plugin();
    cache_admission(&plugin.host, "gpt-4o", &route("openai"));
    for _ in 0..2 {
        let (_req, host, _) = call_from(&plugin, "203.0.113.7:40000", None);
        assert_eq!(refusal_code(&host), (401, "missing_api_key".into()));
    }
    // The next call is refused whatever its key: a valid one, or one the control plane
    // would have to be asked about.
    for auth in [AUTH, "Bearer tg-never-seen"] {
        let (_req, host, action) = call_from(&plugin, "203.0.113.7:40001", Some(auth));
        assert_eq!(action, Action::Pause);
        assert_eq!(refusal_code(&host), (429, "rate_limit_exceeded".into()));
        assert!(host.dispatches().is_empty(), "no control-plane call");
        assert_eq!(
            header(&host.replies()[0].headers, "retry-after"),
            Some("61")
        );
    }
    let (_req, other, action) = call_from(&plugin, "198.51.100.1:40000", Some(AUTH));
    assert_eq!(action, Action::Continue, "{:?}", other.replies());
    // The brake lifts when the failures leave the window, and braked calls were not
    // counted as failures.
    plugin.host.set_now(5_000 + 61_000);
    let (_req, host, action) = call_from(&plugin, "203.0.113.7:40002", Some(AUTH));
    assert_eq!(action, Action::Continue, "{:?}", host.replies());
}

#[test]
fn unknown_and_revoked_keys_count_against_the_address() {
    let plugin = braking_plugin();
    let revoked = grant(KeyStatus::Revoked, &[]);
    cache::store(&plugin.host, &key_hash(), "gpt-4o", &revoked, None, CACHED);
    let (_req, host, _) = call_from(&plugin, "[2001:db8::1]:5000", Some(AUTH));
    assert_eq!(refusal_code(&host), (401, "api_key_revoked".into()));
    // An unknown key, answered by the control plane.
    let (mut req, host, action) =
        call_from(&plugin, "[2001:db8::2]:5000", Some("Bearer tg-unknown"));
    assert_eq!(action, Action::Pause);
    let answer = authorize_answer(&AuthorizeResponse {
        key: Some(grant(KeyStatus::Unknown, &[])),
        ..AuthorizeResponse::default()
    });
    host.set_grpc_body(&answer);
    let token = host.dispatches()[0].token;
    req.on_grpc_call_response(token, 0, answer.len());
    assert_eq!(refusal_code(&host), (401, "invalid_api_key".into()));
    // Both from one /64: braked.
    let (_req, host, _) = call_from(&plugin, "[2001:db8::3]:1", Some(AUTH));
    assert_eq!(refusal_code(&host), (429, "rate_limit_exceeded".into()));
}
