//! Header time: what a call asks for ([`Target`]), whether it may ([`decide`]), and how its
//! request headers change on the way to the provider ([`AdmissionPlan`]).

use crate::cache::{self, KeyGrantEntry, RouteEntry};
use crate::host::Host;
use crate::limits::Limit;
use tollgate_core::access::{self, KeyState};
use tollgate_core::endpoints::Endpoint;
use tollgate_core::headers;
use tollgate_core::keys;
use tollgate_core::providers::ProviderKind;
use tollgate_core::refusal::Refusal;
use tollgate_core::settings::{FilterSettings, metadata_key};
use tollgate_core::validation;
use tollgate_proto::v1::{BudgetRef, KeyGrant, KeyStatus, Route};

use super::REQUEST_ID_HEADER;

/// The upstream deadline Envoy reads; only this filter sets it.
const DEADLINE_HEADER: &str = "x-envoy-upstream-rq-timeout-ms";

/// Longest model name accepted; real ones are far shorter, and it bounds cache keys.
const MAX_MODEL_LEN: usize = 256;

/// The request headers the filter reads, taken in one host call.
#[derive(Default)]
pub(super) struct Head {
    method: Vec<u8>,
    path: Vec<u8>,
    authorization: Option<Vec<u8>>,
    content_type: Vec<u8>,
    /// Every header name the client sent, to drop those a provider may not see.
    names: Vec<String>,
}

impl Head {
    /// The headers the filter reads, out of all of them.
    pub(super) fn from_headers(headers: Vec<(String, Vec<u8>)>) -> Self {
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

/// What a call asks for, resolved once at header time.
#[derive(Debug)]
pub(super) struct Target {
    /// The endpoint called.
    pub(super) endpoint: Endpoint,
    /// SHA-256 hex of the client's key.
    pub(super) key_hash: String,
    /// Empty for the models endpoints.
    pub(super) model: String,
    /// `stream: true`, as `json_to_metadata` saw it at header time.
    pub(super) stream_hint: bool,
    /// The path carried a query string.
    has_query: bool,
    /// Every header name the client sent.
    names: Vec<String>,
}

/// The call's target from its headers and the body facts `json_to_metadata` left in
/// `metadata`, or why it is refused. A key `recently_unknown` says was just found unknown
/// is refused before anything about the body is.
pub(super) fn target(
    head: Head,
    end_of_stream: bool,
    recently_unknown: impl FnOnce(&str) -> bool,
    metadata: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<Target, Refusal> {
    let endpoint = Endpoint::parse(&head.method, &head.path)?;
    let token = head
        .authorization
        .as_deref()
        .and_then(keys::bearer_token)
        .ok_or(Refusal::MissingKey)?;
    let key_hash = keys::hash_key(token);
    if recently_unknown(&key_hash) {
        return Err(Refusal::UnknownKey);
    }
    let (model, stream_hint) = if endpoint.is_proxied() {
        let model = model_from_metadata(&head.content_type, !end_of_stream, &metadata)?;
        let stream = metadata(metadata_key::STREAM).is_some_and(|v| v.first() == Some(&1));
        (model, stream)
    } else {
        (String::new(), false)
    };
    Ok(Target {
        endpoint,
        key_hash,
        model,
        stream_hint,
        has_query: head.path.contains(&b'?'),
        names: head.names,
    })
}

/// The model `json_to_metadata` extracted from the body, or why there is none.
fn model_from_metadata(
    content_type: &[u8],
    has_body: bool,
    metadata: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<String, Refusal> {
    if !has_body {
        return Err(Refusal::NoBody);
    }
    let model = metadata(metadata_key::MODEL);
    if model.is_none() && metadata(metadata_key::BODY_ERROR).is_some() {
        // json_to_metadata gives no detail, and the body cannot be read here: a request
        // without a route never reaches the body callback. Name what can be named.
        let message = if validation::is_json_content_type(content_type) {
            "We could not parse the JSON body of your request: it is not valid JSON.".to_owned()
        } else {
            format!(
                "The request body must be JSON sent with `Content-Type: application/json`, not `{}`.",
                String::from_utf8_lossy(content_type)
            )
        };
        return Err(Refusal::BadJson { message });
    }
    let Some(model) = model else {
        return Err(Refusal::invalid(
            "model",
            "You must provide a model parameter.",
        ));
    };
    match String::from_utf8(model) {
        Ok(m) if m.trim().is_empty() => Err(Refusal::invalid(
            "model",
            "`model` must be a non-empty string.",
        )),
        Ok(m) if m.len() > MAX_MODEL_LEN => Err(Refusal::invalid(
            "model",
            format!("`model` is longer than {MAX_MODEL_LEN} bytes."),
        )),
        // Envoy hands metadata over as bytes without their JSON type: `true` arrives as
        // the byte 1, a number as its 8 IEEE bytes. No model name holds a control
        // character, so those are refused here; a number whose bytes happen to spell a
        // name is refused at body time, where `model` must equal a JSON string.
        Ok(m) if m.chars().any(char::is_control) => Err(Refusal::invalid(
            "model",
            "`model` must be a string naming a model.",
        )),
        Ok(m) => Ok(m),
        Err(_) => Err(Refusal::invalid("model", "`model` must be a string.")),
    }
}

/// The key's state as access decisions name it.
pub(super) fn key_state(grant: &KeyGrant) -> KeyState {
    match grant.status() {
        KeyStatus::Unknown => KeyState::Unknown,
        KeyStatus::Active => KeyState::Active,
        KeyStatus::Revoked => KeyState::Revoked,
    }
}

/// Who an admitted call is charged to, as its grant says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Caller {
    /// The key's stable id.
    pub(super) key_id: String,
    /// Every rate limit the call is taken from.
    pub(super) limits: Vec<Limit>,
    /// The key's user and team ("" for none), for the usage record.
    pub(super) user: String,
    pub(super) team: String,
    /// Every budget a call of the key is held against.
    pub(super) budgets: Vec<BudgetRef>,
}

impl Caller {
    /// The caller a grant names, for a call to `model`.
    pub(super) fn of(grant: &KeyGrant, model: &str) -> Self {
        Self {
            key_id: grant.key_id.clone(),
            limits: Limit::of_grant(grant, model),
            user: grant.user.clone(),
            team: grant.team.clone(),
            budgets: grant.budgets.clone(),
        }
    }
}

/// The decision from cached facts, or `None` if the control plane must be asked.
pub(super) fn from_cache(
    host: &impl Host,
    target: &Target,
    now_ms: u64,
) -> Option<Result<(Route, Caller), Refusal>> {
    let grant = cache::read(host, &KeyGrantEntry(&target.key_hash), now_ms)?;
    let route = cache::read(host, &RouteEntry(&target.model), now_ms);
    if key_state(&grant) == KeyState::Active && route.is_none() {
        // Maybe a model added since; unserved models are never cached, so ask.
        return None;
    }
    let served = route.is_some();
    Some(
        decide(&grant, &target.model, served, route)
            .map(|r| (r, Caller::of(&grant, &target.model))),
    )
}

/// The route of an admitted call, or why it is refused. The control plane sends a route
/// only to a call it admits; `model_served` tells a model the key may not use (403) from
/// one nobody serves (404) without one.
pub(super) fn decide(
    grant: &KeyGrant,
    model: &str,
    model_served: bool,
    route: Option<Route>,
) -> Result<Route, Refusal> {
    access::decide(
        key_state(grant),
        &grant.allowed_models,
        model,
        model_served || route.is_some(),
    )?;
    route.ok_or_else(|| {
        log::error!("tollgate: the control plane admitted a call to `{model}` but sent no route");
        Refusal::ControlPlaneUnavailable
    })
}

/// How an admitted call's request headers change before it goes to its provider.
#[derive(Debug, PartialEq)]
pub(super) struct AdmissionPlan<'a> {
    /// The provider's kind.
    pub(super) kind: ProviderKind,
    /// The new `:path`, when it changes.
    pub(super) path: Option<&'static str>,
    /// Client headers the provider may not see.
    pub(super) removed: Vec<String>,
    /// The provider credential: header and value.
    pub(super) credential: Option<(&'a str, &'a str)>,
    /// Headers the provider kind always needs.
    pub(super) fixed: &'static [(&'static str, &'static str)],
    /// `x-envoy-upstream-rq-timeout-ms`; `None` removes a client's own.
    pub(super) deadline_ms: Option<String>,
    /// The body may be rewritten, so its length must go.
    pub(super) drop_content_length: bool,
    /// The header that picks the provider's route, and its value.
    pub(super) route_header: (&'a str, &'a str),
}

/// The header edits that send `target` to `route`, or why it cannot go there. Takes the
/// target's header names: only the plan needs them.
pub(super) fn plan<'a>(
    target: &mut Target,
    route: &'a Route,
    settings: &'a FilterSettings,
) -> Result<AdmissionPlan<'a>, Refusal> {
    let kind = ProviderKind::from_name(&route.kind).ok_or_else(|| {
        log::error!(
            "tollgate: control plane sent unknown provider kind `{}`",
            route.kind
        );
        Refusal::MisconfiguredProvider
    })?;
    let upstream_path = kind
        .upstream_path(&target.endpoint, &route.provider)
        .map_err(|e| Refusal::EndpointNotSupported { message: e.message })?;
    // The query string is the client's too: none of the served endpoints takes one, and
    // a provider parameter there could change what is billed. It is dropped.
    let path = (target.has_query || upstream_path != target.endpoint.openai_path())
        .then_some(upstream_path);
    // Only allowed headers reach the provider: credentials, account selectors
    // (`openai-organization`), betas and cookies stay with the client.
    let mut removed = std::mem::take(&mut target.names);
    removed.retain(|name| !headers::request_header_allowed(name, &route.forward_headers));
    let credential = (!route.auth_value.is_empty())
        .then_some((route.auth_header.as_str(), route.auth_value.as_str()));
    // Bodies are read for usage, so they must arrive uncompressed: `accept-encoding` is
    // not on the allow-list. Only this filter may set a deadline: a client's own is
    // replaced or removed.
    let deadline_ms = (route.timeout_ms > 0).then(|| route.timeout_ms.to_string());
    let drop_content_length = kind.translates()
        || !route.upstream_model.is_empty()
        || (target.stream_hint && kind.needs_include_usage());
    let fixed = kind.fixed_headers();
    let route_header = settings.route_header.as_str();
    // A header the plan sets anyway is replaced by that edit; removing it first was one
    // more host call (~1.3 µs of Envoy CPU), on every call for a client's `authorization`.
    // Only a header sent once: Envoy's replace may change only the first of several
    // (`http_set_copy_replace_all_headers` off), and a second one must not go on.
    let replaced: Vec<bool> = removed
        .iter()
        .map(|name| {
            let set = credential.is_some_and(|(header, _)| header == name)
                || fixed.iter().any(|(header, _)| header == name)
                || [DEADLINE_HEADER, REQUEST_ID_HEADER, route_header].contains(&name.as_str());
            set && removed.iter().filter(|n| *n == name).count() == 1
        })
        .collect();
    let mut replaced = replaced.into_iter();
    removed.retain(|_| !replaced.next().unwrap_or(false));
    Ok(AdmissionPlan {
        kind,
        path,
        removed,
        credential,
        fixed,
        deadline_ms,
        drop_content_length,
        route_header: (route_header, &route.provider),
    })
}

impl AdmissionPlan<'_> {
    /// Makes the edits on the stream's request headers.
    pub(super) fn apply(&self, host: &impl Host, request_id: &str) {
        if let Some(path) = self.path {
            host.set_request_header(":path", Some(path));
        }
        for name in &self.removed {
            host.set_request_header(name, None);
        }
        if let Some((name, value)) = self.credential {
            host.set_request_header(name, Some(value));
        }
        for (name, value) in self.fixed {
            host.set_request_header(name, Some(value));
        }
        host.set_request_header(DEADLINE_HEADER, self.deadline_ms.as_deref());
        if self.drop_content_length {
            // A rewritten body has another length; Envoy recomputes it only if none is set.
            host.set_request_header("content-length", None);
        }
        // Lets provider-side logs be matched with the usage record.
        host.set_request_header(REQUEST_ID_HEADER, Some(request_id));
        // Setting the header makes Envoy pick the route again, now by provider. Last, so
        // every other edit is made before Envoy routes.
        let (name, provider) = self.route_header;
        host.set_request_header(name, Some(provider));
    }
}
