//! `tollgate-offline-provider`: a local stand-in for LLM providers, speaking their real
//! wire formats.
//!
//! `--dialect` picks whose API it speaks: `openai` (also what vLLM and Ollama copy),
//! `deepseek`, `gemini` (its OpenAI-compatible endpoint), `xai` or `anthropic`. Answers are
//! deterministic and token counts are honest (tiktoken's `o200k_base`, with OpenAI's
//! per-message overhead), so tests can check metering to the token and the demo works
//! with no internet.
//!
//! Request headers drive the cases a real provider produces rarely:
//! - `x-offline-fault`, comma-separated: `status=429` (an error in the dialect's shape),
//!   `delay=800` (ms before the response starts), `drop` (close the connection without
//!   answering), `slow=50` (ms between stream events),
//!   `reset-after=3` (cut the stream after 3 events), `no-usage` (report none);
//! - `x-offline-cached-tokens: N`, `x-offline-cache-write-tokens: N`,
//!   `x-offline-reasoning-tokens: N`: report that many.
//!
//! `GET /_offline/requests` lists what arrived (path, credential headers, model, and the
//! usage the provider reported), so tests can check what the gateway forwarded and stored.

mod anthropic;
mod openai;
mod reply;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use clap::{Parser, ValueEnum};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Parser)]
#[command(about = "A local LLM provider for Tollgate's demo and tests")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: std::net::SocketAddr,
    /// Name shown in answers (`system_fingerprint`, `x-offline-provider`), to tell providers apart.
    #[arg(long, default_value = "offline")]
    name: String,
    /// Whose API to speak.
    #[arg(long, value_enum, default_value_t = Dialect::Openai)]
    dialect: Dialect,
    /// If set, requests must carry this key (`Authorization: Bearer`, or `x-api-key` for Anthropic).
    #[arg(long, env = "OFFLINE_PROVIDER_API_KEY")]
    api_key: Option<String>,
}

/// The provider API being imitated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Dialect {
    /// OpenAI (and vLLM, Ollama): usage on a trailing chunk only with `include_usage`.
    Openai,
    /// DeepSeek: cache hits in `prompt_cache_hit_tokens`; usage on the finish chunk unasked.
    Deepseek,
    /// Gemini's OpenAI endpoint: usage on the finish chunk, thinking only in `total_tokens`.
    Gemini,
    /// xAI: OpenAI's paths, reasoning outside `completion_tokens` but in `total_tokens`.
    Xai,
    /// Anthropic Messages.
    Anthropic,
}

/// What one request looked like on arrival, and what was answered.
#[derive(Clone, serde::Serialize)]
pub struct Seen {
    path: String,
    request_id: Option<String>,
    authorization: Option<String>,
    x_api_key: Option<String>,
    anthropic_version: Option<String>,
    model: Option<String>,
    /// Every header name that arrived, in order.
    header_names: Vec<String>,
    /// Bytes of the body as it arrived (the body itself is `null` when it is not JSON).
    body_bytes: usize,
    /// The path with its query string, as it arrived.
    path_and_query: Option<String>,
    body: Value,
    /// The usage object the provider reported (in its own format), if any.
    usage: Option<Value>,
}

/// Shared state.
pub struct Provider {
    pub name: String,
    pub dialect: Dialect,
    api_key: Option<String>,
    seen: Mutex<VecDeque<Seen>>,
}

const SEEN_KEPT: usize = 2_000;

impl Provider {
    /// Records a request as it arrived.
    fn record(
        &self,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &Value,
        body_bytes: usize,
    ) {
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() >= SEEN_KEPT {
                seen.pop_front();
            }
            seen.push_back(Seen {
                path: path.to_owned(),
                request_id: header("x-tollgate-request-id"),
                authorization: header("authorization"),
                x_api_key: header("x-api-key"),
                anthropic_version: header("anthropic-version"),
                model: body.get("model").and_then(Value::as_str).map(str::to_owned),
                header_names: headers.keys().map(|k| k.as_str().to_owned()).collect(),
                body_bytes,
                path_and_query: query.map(|q| format!("{path}?{q}")),
                body: body.clone(),
                usage: None,
            });
        }
    }

    /// Notes the usage reported for the request with this id.
    pub fn reported(&self, request_id: Option<&str>, usage: &Value) {
        let Some(id) = request_id else { return };
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        if let Some(s) = seen
            .iter_mut()
            .rev()
            .find(|s| s.request_id.as_deref() == Some(id))
        {
            s.usage = Some(usage.clone());
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(key) = &self.api_key else {
            return true;
        };
        let got = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match self.dialect {
            Dialect::Anthropic => got("x-api-key") == Some(key.as_str()),
            _ => got("authorization") == Some(format!("Bearer {key}").as_str()),
        }
    }
}

/// Faults and reported counts asked for in request headers.
#[derive(Default, Clone, Copy)]
pub struct Faults {
    pub status: Option<StatusCode>,
    pub delay: Option<Duration>,
    pub slow: Option<Duration>,
    pub reset_after: Option<usize>,
    pub drop: bool,
    pub no_usage: bool,
    /// Answer with the account headers and cookie a real provider sends.
    pub account_headers: bool,
    pub cached: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

impl Faults {
    fn from_headers(headers: &HeaderMap) -> Self {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let num = |name: &str| get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut f = Faults {
            cached: num("x-offline-cached-tokens"),
            cache_write: num("x-offline-cache-write-tokens"),
            reasoning: num("x-offline-reasoning-tokens"),
            ..Faults::default()
        };
        for item in get("x-offline-fault")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
        {
            let (k, v) = item.split_once('=').unwrap_or((item, ""));
            match k {
                "status" => f.status = v.parse().ok().and_then(|c| StatusCode::from_u16(c).ok()),
                "delay" => f.delay = v.parse().ok().map(Duration::from_millis),
                "slow" => f.slow = v.parse().ok().map(Duration::from_millis),
                "reset-after" => f.reset_after = v.parse().ok(),
                "no-usage" => f.no_usage = true,
                "drop" => f.drop = true,
                "account-headers" => f.account_headers = true,
                _ => {}
            }
        }
        f
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let provider = Arc::new(Provider {
        name: args.name,
        dialect: args.dialect,
        api_key: args.api_key,
        seen: Mutex::new(VecDeque::new()),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(handle))
        .route("/v1beta/openai/chat/completions", post(handle))
        .route("/v1/completions", post(handle))
        .route("/v1/embeddings", post(handle))
        .route("/v1beta/openai/embeddings", post(handle))
        .route("/v1/responses", post(handle))
        .route("/v1/messages", post(handle))
        .route("/v1/models", get(openai::models))
        .route("/_offline/requests", get(seen_requests))
        .route("/_offline/health", get(|| async { "ok\n" }))
        // Real providers take prompts of many megabytes; axum's default stops at 2 MB.
        .layer(axum::extract::DefaultBodyLimit::max(32 << 20))
        .with_state(Arc::clone(&provider));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    eprintln!(
        "offline provider `{}` ({:?}) listening on http://{}",
        provider.name, provider.dialect, args.listen
    );
    // Load the tokenizer before serving so the first request is not slow.
    reply::count("warm up");
    // Stream events go out as they are written, as a real provider's do (no Nagle delay).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

async fn seen_requests(State(p): State<Arc<Provider>>) -> Json<Vec<Seen>> {
    let seen = p
        .seen
        .lock()
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default();
    Json(seen)
}

/// Every API call: record it, check the key, apply faults, then answer in the dialect.
async fn handle(
    State(p): State<Arc<Provider>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    p.record(&path, uri.query(), &headers, &request, body.len());
    let request_id = headers
        .get("x-tollgate-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let faults = Faults::from_headers(&headers);
    if let Some(d) = faults.delay {
        tokio::time::sleep(d).await;
    }
    if faults.drop {
        // Unwinding out of the handler makes hyper close the connection with no response,
        // as a crashing provider does; resume_unwind skips the panic hook's noise.
        std::panic::resume_unwind(Box::new("offline provider fault: drop"));
    }
    let expected = match p.dialect {
        Dialect::Anthropic => path == "/v1/messages",
        Dialect::Gemini => path.starts_with("/v1beta/openai/"),
        Dialect::Deepseek => path == "/v1/chat/completions",
        Dialect::Xai => path == "/v1/chat/completions" || path == "/v1/responses",
        Dialect::Openai => path.starts_with("/v1/") && path != "/v1/messages",
    };
    if !expected {
        return error(
            &p,
            StatusCode::NOT_FOUND,
            &format!("{path} is not part of this provider's API"),
        );
    }
    if !p.authorized(&headers) {
        return error(&p, StatusCode::UNAUTHORIZED, "Incorrect API key provided.");
    }
    if let Some(status) = faults.status {
        return error(
            &p,
            status,
            &format!("Offline provider fault: status {}", status.as_u16()),
        );
    }
    if request.is_null() {
        return error(
            &p,
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request.",
        );
    }
    let ctx = reply::Call {
        provider: Arc::clone(&p),
        request,
        faults,
        request_id,
    };
    let mut response = match path.as_str() {
        "/v1/messages" => anthropic::messages(ctx).await,
        "/v1/completions" => openai::completions(ctx),
        "/v1/embeddings" | "/v1beta/openai/embeddings" => openai::embeddings(ctx),
        "/v1/responses" => openai::responses(ctx).await,
        _ => openai::chat(ctx).await,
    };
    if faults.account_headers {
        // What api.openai.com and api.anthropic.com answer with: the account that paid.
        let h = response.headers_mut();
        for (name, value) in [
            ("openai-organization", "org-operator"),
            ("openai-project", "proj_operator"),
            ("anthropic-organization-id", "operator-org-id"),
            ("set-cookie", "__cf_bm=operator-session; path=/; HttpOnly"),
            ("x-ratelimit-remaining-requests", "9999"),
        ] {
            h.insert(
                axum::http::HeaderName::from_static(name),
                axum::http::HeaderValue::from_static(value),
            );
        }
    }
    response
}

/// An error in the dialect's own shape.
fn error(p: &Provider, status: StatusCode, message: &str) -> Response {
    let body = match p.dialect {
        Dialect::Anthropic => {
            let kind = match status.as_u16() {
                401 => "authentication_error",
                404 => "not_found_error",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                400..=499 => "invalid_request_error",
                _ => "api_error",
            };
            serde_json::json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_offline"})
        }
        Dialect::Gemini => {
            serde_json::json!({"error": {"code": status.as_u16(), "message": message, "status": "INVALID_ARGUMENT"}})
        }
        _ => {
            let (kind, code) = match status.as_u16() {
                401 => ("invalid_request_error", Some("invalid_api_key")),
                429 => ("requests", Some("rate_limit_exceeded")),
                400..=499 => ("invalid_request_error", None),
                _ => ("server_error", None),
            };
            serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
    };
    (status, Json(body)).into_response()
}
