//! `tollgate-offline-provider`: a local stand-in for an OpenAI-compatible provider.
//!
//! Answers are deterministic and token counts are honest (tiktoken's `o200k_base`, with
//! OpenAI's per-message overhead), so tests can check metering to the token and the demo
//! works with no internet. Request headers drive the cases a real provider produces
//! rarely: `x-offline-fault: status=429 | slow=50 | reset-after=2 | no-usage` (comma-
//! separated) and `x-offline-cached-tokens: N`. `GET /_offline/requests` shows what
//! arrived (path and credential headers), so tests can prove what the gateway forwarded.

use anyhow::Context;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use clap::Parser;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tiktoken_rs::CoreBPE;

#[derive(Parser)]
#[command(about = "A local OpenAI-compatible provider for Tollgate's demo and tests")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: std::net::SocketAddr,
    /// Name shown in answers (`system_fingerprint`, `x-offline-provider`), to tell providers apart.
    #[arg(long, default_value = "offline")]
    name: String,
    /// If set, requests must carry `Authorization: Bearer <key>`, as a real provider demands.
    #[arg(long, env = "OFFLINE_PROVIDER_API_KEY")]
    api_key: Option<String>,
}

/// What one request looked like on arrival.
#[derive(Clone, serde::Serialize)]
struct Seen {
    path: String,
    request_id: Option<String>,
    authorization: Option<String>,
    x_api_key: Option<String>,
    model: Option<String>,
}

struct Provider {
    name: String,
    api_key: Option<String>,
    seen: Mutex<VecDeque<Seen>>,
}

const SEEN_KEPT: usize = 1_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let provider = Arc::new(Provider {
        name: args.name,
        api_key: args.api_key,
        seen: Mutex::new(VecDeque::new()),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/_offline/requests", get(seen_requests))
        .route("/_offline/health", get(|| async { "ok\n" }))
        .with_state(Arc::clone(&provider));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    eprintln!(
        "offline provider `{}` listening on http://{}",
        provider.name, args.listen
    );
    // Load the tokenizer before serving so the first request is not slow.
    tokenizer();
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

fn tokenizer() -> &'static CoreBPE {
    static BPE: OnceLock<CoreBPE> = OnceLock::new();
    BPE.get_or_init(|| tiktoken_rs::o200k_base().expect("o200k_base ships inside tiktoken-rs"))
}

fn count(text: &str) -> u64 {
    tokenizer().encode_ordinary(text).len() as u64
}

/// Prompt tokens as OpenAI counts chat input for the 4o family: 3 per message, plus
/// role, content and name, plus 3 to prime the reply.
fn prompt_tokens(messages: &[Value]) -> u64 {
    let mut total = 3;
    for m in messages {
        total += 3;
        if let Some(role) = m.get("role").and_then(Value::as_str) {
            total += count(role);
        }
        if let Some(name) = m.get("name").and_then(Value::as_str) {
            total += count(name) + 1;
        }
        match m.get("content") {
            Some(Value::String(s)) => total += count(s),
            Some(Value::Array(parts)) => {
                for p in parts {
                    if let Some(t) = p.get("text").and_then(Value::as_str) {
                        total += count(t);
                    }
                }
            }
            _ => {}
        }
    }
    total
}

/// Faults asked for in `x-offline-fault`.
#[derive(Default)]
struct Faults {
    status: Option<StatusCode>,
    slow: Option<Duration>,
    reset_after: Option<usize>,
    no_usage: bool,
    cached: u64,
}

fn faults(headers: &HeaderMap) -> Faults {
    let mut f = Faults::default();
    let raw = headers
        .get("x-offline-fault")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    for item in raw.split(',').map(str::trim) {
        let (k, v) = item.split_once('=').unwrap_or((item, ""));
        match k {
            "status" => f.status = v.parse().ok().and_then(|c| StatusCode::from_u16(c).ok()),
            "slow" => f.slow = v.parse().ok().map(Duration::from_millis),
            "reset-after" => f.reset_after = v.parse().ok(),
            "no-usage" => f.no_usage = true,
            _ => {}
        }
    }
    f.cached = headers
        .get("x-offline-cached-tokens")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    f
}

fn error(status: StatusCode, kind: &str, message: &str, code: Option<&str>) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (status, Json(body)).into_response()
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

async fn seen_requests(State(p): State<Arc<Provider>>) -> Json<Vec<Seen>> {
    let seen = p
        .seen
        .lock()
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default();
    Json(seen)
}

async fn models(State(p): State<Arc<Provider>>) -> Json<Value> {
    Json(json!({"object": "list", "data": [
        {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": p.name},
    ]}))
}

/// The deterministic answer to the last user message.
fn reply_text(provider: &str, model: &str, messages: &[Value], choice: usize) -> String {
    let last = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let echo: Vec<&str> = last.split_whitespace().take(12).collect();
    let suffix = if choice > 0 {
        format!(" (choice {choice})")
    } else {
        String::new()
    };
    format!(
        "Hello from the {provider} provider serving {model}. You said: {}{suffix}",
        echo.join(" ")
    )
}

async fn chat_completions(
    State(p): State<Arc<Provider>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: Option<Value> = serde_json::from_slice(&body).ok();
    let model = request
        .as_ref()
        .and_then(|r| r.get("model")?.as_str().map(str::to_owned));
    if let Ok(mut seen) = p.seen.lock() {
        if seen.len() >= SEEN_KEPT {
            seen.pop_front();
        }
        seen.push_back(Seen {
            path: "/v1/chat/completions".into(),
            request_id: header(&headers, "x-tollgate-request-id"),
            authorization: header(&headers, "authorization"),
            x_api_key: header(&headers, "x-api-key"),
            model: model.clone(),
        });
    }
    if let Some(key) = &p.api_key {
        let expected = format!("Bearer {key}");
        if header(&headers, "authorization").as_deref() != Some(expected.as_str()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "Incorrect API key provided.",
                Some("invalid_api_key"),
            );
        }
    }
    let f = faults(&headers);
    if let Some(status) = f.status {
        let (kind, code) = match status.as_u16() {
            429 => ("requests", Some("rate_limit_exceeded")),
            400..=499 => ("invalid_request_error", None),
            _ => ("server_error", None),
        };
        return error(
            status,
            kind,
            &format!("Offline provider fault: status {status}"),
            code,
        );
    }
    let Some(request) = request else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "We could not parse the JSON body of your request.",
            None,
        );
    };
    let model = model.unwrap_or_default();
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let n = request
        .get("n")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 128) as usize;
    let stream = request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let include_usage = request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let texts: Vec<String> = (0..n)
        .map(|i| reply_text(&p.name, &model, &messages, i))
        .collect();
    let prompt = prompt_tokens(&messages);
    let completion: u64 = texts.iter().map(|t| count(t)).sum();
    let cached = f.cached.min(prompt);
    let usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    });
    let id = format!("chatcmpl-offline-{:016x}", fnv(&body));
    let fingerprint = format!("fp_{}", p.name);

    if !stream {
        let choices: Vec<Value> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"index": i, "message": {"role": "assistant", "content": t, "refusal": null, "annotations": []}, "logprobs": null, "finish_reason": "stop"}))
            .collect();
        let mut body = json!({
            "id": id, "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": choices, "service_tier": "default", "system_fingerprint": fingerprint,
        });
        if !f.no_usage {
            body["usage"] = usage;
        }
        return ([("x-offline-provider", p.name.clone())], Json(body)).into_response();
    }

    // Streaming: one chunk per word per choice, then finish chunks, then usage if asked.
    // Like OpenAI, chunks carry `"usage": null` only when usage was asked for.
    let chunk = |choices: Value, usage: Option<Value>| {
        let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": model, "service_tier": "default", "system_fingerprint": fingerprint, "choices": choices});
        if include_usage {
            c["usage"] = usage.unwrap_or(Value::Null);
        }
        c.to_string()
    };
    let mut events: Vec<String> = Vec::new();
    for i in 0..n {
        events.push(chunk(json!([{"index": i, "delta": {"role": "assistant", "content": "", "refusal": null}, "logprobs": null, "finish_reason": null}]), None));
    }
    for (i, text) in texts.iter().enumerate() {
        for word in text.split_inclusive(' ') {
            events.push(chunk(json!([{"index": i, "delta": {"content": word}, "logprobs": null, "finish_reason": null}]), None));
        }
    }
    for i in 0..n {
        events.push(chunk(
            json!([{"index": i, "delta": {}, "logprobs": null, "finish_reason": "stop"}]),
            None,
        ));
    }
    if include_usage && !f.no_usage {
        events.push(chunk(json!([]), Some(usage)));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        for (sent, e) in events.into_iter().enumerate() {
            if f.reset_after == Some(sent) {
                let _ = tx
                    .send(Err(std::io::Error::other("offline provider fault: reset")))
                    .await;
                return;
            }
            if let Some(d) = f.slow {
                tokio::time::sleep(d).await;
            }
            if tx
                .send(Ok(Bytes::from(format!("data: {e}\n\n"))))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .header("x-offline-provider", p.name.clone())
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// FNV-1a, for stable ids derived from the request.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_count_matches_openai_formula() {
        // "Hello" is one o200k token, "user" one: 3 (reply) + 3 (message) + 1 + 1.
        let messages = vec![json!({"role": "user", "content": "Hello"})];
        assert_eq!(prompt_tokens(&messages), 8);
    }

    #[test]
    fn reply_is_deterministic_and_names_provider() {
        let m = vec![json!({"role": "user", "content": "one two three"})];
        let a = reply_text("alpha", "gpt-x", &m, 0);
        assert_eq!(a, reply_text("alpha", "gpt-x", &m, 0));
        assert!(a.contains("alpha") && a.contains("one two three"));
        assert_ne!(a, reply_text("alpha", "gpt-x", &m, 1));
    }
}
