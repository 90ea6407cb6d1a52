//! What every dialect shares: the deterministic answer, honest token counts, and a
//! stream sender that applies the timing faults.

use crate::{Faults, Provider};
use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::{Arc, OnceLock};
use tiktoken_rs::CoreBPE;

/// One call being answered.
pub struct Call {
    pub provider: Arc<Provider>,
    pub request: Value,
    pub faults: Faults,
    pub request_id: Option<String>,
}

impl Call {
    /// The `model` the client asked for.
    pub fn model(&self) -> String {
        self.request
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    }

    /// The request's `messages` (empty if absent).
    pub fn messages(&self) -> Vec<Value> {
        self.request
            .get("messages")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    /// A stable id derived from the request body.
    pub fn id(&self, prefix: &str) -> String {
        format!("{prefix}{:016x}", fnv(self.request.to_string().as_bytes()))
    }

    /// Tells the provider's record what usage was reported.
    pub fn reported(&self, usage: &Value) {
        self.provider.reported(self.request_id.as_deref(), usage);
    }
}

// The vocabulary is compiled into tiktoken-rs: failing to load it is a broken build of this
// test double, not something a request can cause.
#[allow(clippy::expect_used)]
fn tokenizer() -> &'static CoreBPE {
    static BPE: OnceLock<CoreBPE> = OnceLock::new();
    BPE.get_or_init(|| tiktoken_rs::o200k_base().expect("o200k_base ships inside tiktoken-rs"))
}

/// Tokens in `text` (`o200k_base`).
pub fn count(text: &str) -> u64 {
    tokenizer().encode_ordinary(text).len() as u64
}

/// Text of a message `content`: a string, or the text parts of an array.
pub fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// Prompt tokens as OpenAI counts chat input for the 4o family: 3 per message, plus
/// role, content and name, plus 3 to prime the reply.
pub fn chat_prompt_tokens(messages: &[Value]) -> u64 {
    let mut total = 3;
    for m in messages {
        total += 3;
        if let Some(role) = m.get("role").and_then(Value::as_str) {
            total += count(role);
        }
        if let Some(name) = m.get("name").and_then(Value::as_str) {
            total += count(name) + 1;
        }
        total += count(&text_of(m.get("content")));
    }
    total
}

/// The deterministic answer to `said`.
pub fn answer(provider: &str, model: &str, said: &str, choice: usize) -> String {
    let echo: Vec<&str> = said.split_whitespace().take(12).collect();
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

/// The last user message of a chat.
pub fn last_user_text(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| text_of(m.get("content")))
        .unwrap_or_default()
}

/// Sends SSE `events` (already framed) with the call's timing faults; a reset cuts the
/// connection after `reset-after` events, the way a crashing provider does. Only the first
/// `generated` events are paced by `slow`: the rest (usage, `[DONE]`) follow at once, as
/// a real provider sends them right after the last token.
pub fn stream(provider: &str, faults: Faults, events: Vec<String>, generated: usize) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        for (sent, e) in events.into_iter().enumerate() {
            if faults.reset_after == Some(sent) {
                // Let what was sent leave first: hyper drops unflushed bytes on a body error.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let _ = tx
                    .send(Err(std::io::Error::other("offline provider fault: reset")))
                    .await;
                return;
            }
            if let Some(d) = faults.slow.filter(|_| sent < generated) {
                tokio::time::sleep(d).await;
            }
            if tx.send(Ok(Bytes::from(e))).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .header("x-offline-provider", provider)
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A JSON answer naming the provider.
pub fn json(provider: &str, body: Value) -> Response {
    (
        [("x-offline-provider", provider.to_owned())],
        axum::Json(body),
    )
        .into_response()
}

/// FNV-1a, for stable ids derived from the request.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prompt_count_matches_openai_formula() {
        // "Hello" is one o200k token, "user" one: 3 (reply) + 3 (message) + 1 + 1.
        assert_eq!(
            chat_prompt_tokens(&[json!({"role": "user", "content": "Hello"})]),
            8
        );
    }

    #[test]
    fn answer_is_deterministic_and_names_provider() {
        let a = answer("alpha", "gpt-x", "one two three", 0);
        assert_eq!(a, answer("alpha", "gpt-x", "one two three", 0));
        assert!(a.contains("alpha") && a.contains("one two three"));
        assert_ne!(a, answer("alpha", "gpt-x", "one two three", 1));
    }
}
