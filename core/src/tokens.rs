//! Token counting with OpenAI's encodings, for estimates and exact prompt counts.
//!
//! Only built with the `tokenizer` feature: the encodings add ~5 MB and tens of MiB once
//! loaded, so they are loaded on first use, never at start.

use crate::endpoints::Endpoint;
use serde_json::{Map, Value};
use tiktoken_rs::CoreBPE;

/// The encoding a model uses; newer families (and non-OpenAI models, approximately)
/// use `o200k_base`, GPT-4, GPT-3.5 and the embedding models `cl100k_base`.
fn encoding(model: &str) -> &'static CoreBPE {
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

fn text_of(content: &Value, out: &mut String) {
    match content {
        Value::String(s) => out.push_str(s),
        Value::Array(parts) => {
            for p in parts {
                match p {
                    Value::String(s) => out.push_str(s),
                    other => {
                        if let Some(t) = other.get("text").and_then(Value::as_str) {
                            out.push_str(t);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// Prompt tokens of a request body, as the provider will count them for OpenAI models
/// (chat: 3 tokens per message, plus role, name and content, plus 3 to prime the reply;
/// tool definitions are counted as their JSON text, an approximation).
pub fn prompt(endpoint: &Endpoint, model: &str, body: &Map<String, Value>) -> u64 {
    match endpoint {
        Endpoint::ChatCompletions => {
            let mut total = 3;
            for m in body
                .get("messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                total += 3;
                if let Some(role) = m.get("role").and_then(Value::as_str) {
                    total += count(model, role);
                }
                if let Some(name) = m.get("name").and_then(Value::as_str) {
                    total += count(model, name) + 1;
                }
                let mut text = String::new();
                if let Some(c) = m.get("content") {
                    text_of(c, &mut text);
                }
                total += count(model, &text);
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    total += count(model, &call.to_string());
                }
            }
            if let Some(tools) = body.get("tools") {
                total += count(model, &tools.to_string());
            }
            total
        }
        Endpoint::Completions => match body.get("prompt") {
            Some(Value::String(s)) => count(model, s),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => count(model, s),
                    Value::Array(ids) => ids.len() as u64,
                    _ => 1,
                })
                .sum(),
            _ => 0,
        },
        Endpoint::Embeddings => match body.get("input") {
            Some(Value::String(s)) => count(model, s),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => count(model, s),
                    Value::Array(ids) => ids.len() as u64,
                    _ => 1,
                })
                .sum(),
            _ => 0,
        },
        Endpoint::Responses => {
            let mut text = String::new();
            if let Some(s) = body.get("instructions").and_then(Value::as_str) {
                text.push_str(s);
            }
            match body.get("input") {
                Some(Value::String(s)) => text.push_str(s),
                Some(Value::Array(items)) => {
                    for item in items {
                        if let Some(c) = item.get("content") {
                            text_of(c, &mut text);
                        }
                    }
                }
                _ => {}
            }
            count(model, &text)
        }
        Endpoint::ListModels | Endpoint::GetModel(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodings_by_family() {
        // "hello world" is 2 tokens in both encodings; a rarer word tells them apart.
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
    fn chat_prompt_follows_openai_formula() {
        let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]});
        // 3 (reply) + 3 (message) + "user" (1) + "Hello" (1)
        assert_eq!(
            prompt(
                &Endpoint::ChatCompletions,
                "gpt-4o",
                body.as_object().unwrap()
            ),
            8
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
