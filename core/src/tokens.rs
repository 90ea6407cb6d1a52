//! Token counting with OpenAI's encodings, for estimates and exact prompt counts.
//!
//! Splitting a prompt into the texts that get tokenized ([`prompt_parts`]) needs no
//! tokenizer, so the filter can hand those texts to the control plane, which counts them.
//! Counting itself ([`count`], [`prompt`]) needs the `tokenizer` feature: the encodings
//! add ~6 MB of code and tables, which V8 compiles at Envoy start and keeps in every VM,
//! so only the builds that must count before admission include it.

use crate::endpoints::Endpoint;
use serde_json::{Map, Value};

/// Tokens a chat prompt spends on framing: 3 per message, 1 more for a `name`, and 3 to
/// prime the reply. Role names are single tokens in both encodings (tested).
const PER_MESSAGE: u64 = 3;
const REPLY_PRIMER: u64 = 3;

/// The texts a prompt is tokenized from, and the tokens its framing adds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptParts {
    /// Each text tokenized on its own (tokens do not span parts).
    pub texts: Vec<String>,
    /// Tokens added by the format, beyond the texts.
    pub overhead: u64,
}

fn push_content(content: &Value, out: &mut Vec<String>) {
    match content {
        Value::String(s) => out.push(s.clone()),
        Value::Array(parts) => {
            let text: String = parts
                .iter()
                .filter_map(|p| match p {
                    Value::String(s) => Some(s.as_str()),
                    other => other.get("text").and_then(Value::as_str),
                })
                .collect();
            out.push(text);
        }
        _ => {}
    }
}

/// Splits a request body into the texts its prompt tokens come from, for any endpoint.
pub fn prompt_parts(endpoint: &Endpoint, body: &Map<String, Value>) -> PromptParts {
    let mut parts = PromptParts::default();
    let list = |key: &str, parts: &mut PromptParts| match body.get(key) {
        Some(Value::String(s)) => parts.texts.push(s.clone()),
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(s) => parts.texts.push(s.clone()),
                    // Pre-tokenized input: one token per id.
                    Value::Array(ids) => parts.overhead += ids.len() as u64,
                    Value::Number(_) => parts.overhead += 1,
                    _ => {}
                }
            }
        }
        _ => {}
    };
    match endpoint {
        Endpoint::ChatCompletions => {
            parts.overhead = REPLY_PRIMER;
            for m in body
                .get("messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                parts.overhead += PER_MESSAGE + 1; // the role
                if let Some(name) = m.get("name").and_then(Value::as_str) {
                    parts.texts.push(name.to_owned());
                    parts.overhead += 1;
                }
                if let Some(c) = m.get("content") {
                    push_content(c, &mut parts.texts);
                }
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    parts.texts.push(call.to_string());
                }
            }
            if let Some(tools) = body.get("tools") {
                parts.texts.push(tools.to_string());
            }
        }
        Endpoint::Completions => list("prompt", &mut parts),
        Endpoint::Embeddings => list("input", &mut parts),
        Endpoint::Responses => {
            if let Some(s) = body.get("instructions").and_then(Value::as_str) {
                parts.texts.push(s.to_owned());
            }
            match body.get("input") {
                Some(Value::String(s)) => parts.texts.push(s.clone()),
                Some(Value::Array(items)) => {
                    for item in items {
                        if let Some(c) = item.get("content") {
                            push_content(c, &mut parts.texts);
                        }
                    }
                }
                _ => {}
            }
        }
        Endpoint::ListModels | Endpoint::GetModel(_) => {}
    }
    parts.texts.retain(|t| !t.is_empty());
    parts
}

/// Scales a token count of the first `kept_bytes` of a text to all `total_bytes` of it,
/// for texts cut to a bound before counting.
pub fn scale(kept_tokens: u64, kept_bytes: u64, total_bytes: u64) -> u64 {
    if kept_bytes == 0 || kept_bytes >= total_bytes {
        kept_tokens
    } else {
        kept_tokens.saturating_mul(total_bytes).div_ceil(kept_bytes)
    }
}

#[cfg(feature = "tokenizer")]
pub use counting::{count, prompt};

#[cfg(feature = "tokenizer")]
mod counting {
    use super::{PromptParts, prompt_parts};
    use crate::endpoints::Endpoint;
    use serde_json::{Map, Value};
    use tiktoken_rs::CoreBPE;

    /// The encoding a model uses; newer families (and non-OpenAI models, approximately)
    /// use `o200k_base`; GPT-4, GPT-3.5 and the older embedding models `cl100k_base`.
    pub(super) fn encoding(model: &str) -> &'static CoreBPE {
        let cl100k = ["gpt-4-", "gpt-3.5", "text-embedding-"];
        let is_cl100k = model == "gpt-4" || cl100k.iter().any(|p| model.starts_with(p));
        if is_cl100k && !model.starts_with("gpt-4o") {
            tiktoken_rs::cl100k_base_singleton()
        } else {
            tiktoken_rs::o200k_base_singleton()
        }
    }

    /// Tokens in `text` as `model` would count them.
    pub fn count(model: &str, text: &str) -> u64 {
        if text.is_empty() {
            return 0;
        }
        encoding(model).encode_ordinary(text).len() as u64
    }

    /// Prompt tokens of a request body, as the provider counts them for OpenAI models
    /// (tool definitions are counted as their JSON text, an approximation).
    pub fn prompt(endpoint: &Endpoint, model: &str, body: &Map<String, Value>) -> u64 {
        let PromptParts { texts, overhead } = prompt_parts(endpoint, body);
        overhead + texts.iter().map(|t| count(model, t)).sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn chat_parts_and_framing() {
        let p = prompt_parts(
            &Endpoint::ChatCompletions,
            &body(json!({"messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "name": "ann", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": " there"}]}
            ]})),
        );
        assert_eq!(p.texts, ["Be brief.", "ann", "Hi there"]);
        assert_eq!(p.overhead, 3 + 2 * (3 + 1) + 1);
    }

    #[test]
    fn other_endpoint_parts() {
        let p = prompt_parts(
            &Endpoint::Completions,
            &body(json!({"prompt": [[1, 2, 3], [4]]})),
        );
        assert_eq!((p.texts.len(), p.overhead), (0, 4));
        let p = prompt_parts(&Endpoint::Embeddings, &body(json!({"input": ["a", "b"]})));
        assert_eq!(p.texts, ["a", "b"]);
        let p = prompt_parts(
            &Endpoint::Responses,
            &body(json!({"instructions": "x", "input": "y"})),
        );
        assert_eq!(p.texts, ["x", "y"]);
    }

    #[cfg(feature = "tokenizer")]
    mod counting {
        use super::super::counting::encoding;
        use super::super::*;
        use serde_json::json;

        #[test]
        fn encodings_by_family() {
            assert_eq!(count("gpt-4o-mini", "hello world"), 2);
            assert_eq!(count("gpt-4", "hello world"), 2);
            assert!(std::ptr::eq(
                encoding("gpt-4o"),
                tiktoken_rs::o200k_base_singleton()
            ));
            assert!(std::ptr::eq(
                encoding("gpt-4-turbo"),
                tiktoken_rs::cl100k_base_singleton()
            ));
            assert!(std::ptr::eq(
                encoding("text-embedding-3-small"),
                tiktoken_rs::cl100k_base_singleton()
            ));
            assert!(std::ptr::eq(
                encoding("claude-sonnet-4"),
                tiktoken_rs::o200k_base_singleton()
            ));
            assert_eq!(count("gpt-4o", ""), 0);
        }

        #[test]
        fn roles_are_single_tokens_in_both_encodings() {
            for model in ["gpt-4o", "gpt-4"] {
                for role in crate::validation::ROLES {
                    assert_eq!(count(model, role), 1, "{role} in {model}");
                }
            }
        }

        #[test]
        fn chat_prompt_follows_openai_formula() {
            let b = json!({"messages": [{"role": "user", "content": "Hello"}]});
            // 3 (reply) + 3 (message) + "user" (1) + "Hello" (1)
            assert_eq!(
                prompt(&Endpoint::ChatCompletions, "gpt-4o", b.as_object().unwrap()),
                8
            );
            // Role and content are counted apart, not as one concatenated string.
            let b = json!({"messages": [{"role": "user", "content": "tell me a long story"}]});
            assert_eq!(
                prompt(&Endpoint::ChatCompletions, "gpt-4o", b.as_object().unwrap()),
                3 + 3 + 1 + 5
            );
        }

        #[test]
        fn other_endpoints() {
            let b = |v: Value| v.as_object().cloned().unwrap();
            assert_eq!(
                prompt(
                    &Endpoint::Completions,
                    "m",
                    &b(json!({"prompt": [[1, 2, 3], [4]]}))
                ),
                4
            );
            assert_eq!(
                prompt(
                    &Endpoint::Embeddings,
                    "m",
                    &b(json!({"input": ["hello world", "hello"]}))
                ),
                3
            );
            assert_eq!(
                prompt(
                    &Endpoint::Responses,
                    "m",
                    &b(json!({"input": "hello world"}))
                ),
                2
            );
        }
    }
}
