//! Translation between OpenAI Chat Completions (what clients send) and Anthropic Messages.
//!
//! Requests go one way, answers come back, streamed or not. Fields with no Anthropic
//! equivalent are dropped; features Anthropic cannot provide (`n > 1`) are refused.

use crate::errors::ApiError;
use crate::sse::Event;
use crate::usage::{Usage, from_anthropic_usage};
use serde_json::{Map, Value, json};

/// Default `max_tokens`, which Anthropic requires and OpenAI clients often omit.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn image_block(url: &str) -> Value {
    // data:<media type>;base64,<data>
    if let Some((meta, data)) = url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(','))
    {
        let media_type = meta.trim_end_matches(";base64");
        return json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}});
    }
    json!({"type": "image", "source": {"type": "url", "url": url}})
}

fn user_content(content: &Value) -> Value {
    match content {
        Value::Array(parts) => Value::Array(
            parts
                .iter()
                .filter_map(|p| match p.get("type").and_then(Value::as_str) {
                    Some("text") => Some(
                        json!({"type": "text", "text": p.get("text").cloned().unwrap_or_default()}),
                    ),
                    Some("image_url") => p
                        .pointer("/image_url/url")
                        .and_then(Value::as_str)
                        .map(image_block),
                    _ => None,
                })
                .collect(),
        ),
        other => Value::String(text_of(other)),
    }
}

/// Builds the Anthropic request for a validated chat-completions body.
pub fn request(chat: &Map<String, Value>, upstream_model: &str) -> Result<Value, ApiError> {
    if chat.get("n").and_then(Value::as_u64).unwrap_or(1) > 1 {
        return Err(ApiError::invalid(
            "n",
            "This model's provider (Anthropic) cannot return more than one choice; use n=1.",
        ));
    }
    let mut system: Vec<Value> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for m in chat
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let content = m.get("content").cloned().unwrap_or(Value::Null);
        match role {
            "system" | "developer" => {
                system.push(json!({"type": "text", "text": text_of(&content)}));
            }
            "user" => messages.push(json!({"role": "user", "content": user_content(&content)})),
            "assistant" => {
                let mut blocks = Vec::new();
                let text = text_of(&content);
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let arguments = call
                        .pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or("{}");
                    let input: Value =
                        serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.get("id").cloned().unwrap_or_default(),
                        "name": call.pointer("/function/name").cloned().unwrap_or_default(),
                        "input": input,
                    }));
                }
                messages.push(json!({"role": "assistant", "content": blocks}));
            }
            "tool" => messages.push(json!({"role": "user", "content": [{
                "type": "tool_result",
                "tool_use_id": m.get("tool_call_id").cloned().unwrap_or_default(),
                "content": text_of(&content),
            }]})),
            other => {
                return Err(ApiError::invalid(
                    "messages",
                    format!(
                        "Messages with role `{other}` cannot be sent to this model's provider (Anthropic)."
                    ),
                ));
            }
        }
    }

    let mut out = Map::new();
    out.insert("model".into(), Value::String(upstream_model.to_owned()));
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    out.insert("messages".into(), Value::Array(messages));
    let max_tokens = chat
        .get("max_completion_tokens")
        .or_else(|| chat.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    out.insert("max_tokens".into(), json!(max_tokens));
    if let Some(t) = chat.get("temperature").and_then(Value::as_f64) {
        // Anthropic's range is 0..=1, OpenAI's 0..=2.
        out.insert("temperature".into(), json!(t.min(1.0)));
    }
    if let Some(p) = chat.get("top_p").filter(|v| v.is_number()) {
        out.insert("top_p".into(), p.clone());
    }
    match chat.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) => {
            out.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if chat.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), Value::Bool(true));
    }
    if let Some(tools) = chat.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| {
                let mut tool = json!({
                    "name": f.get("name").cloned().unwrap_or_default(),
                    "input_schema": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"})),
                });
                if let Some(d) = f.get("description") {
                    tool["description"] = d.clone();
                }
                tool
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    let mut choice = match chat.get("tool_choice") {
        Some(Value::String(s)) if s == "none" => Some(json!({"type": "none"})),
        Some(Value::String(s)) if s == "required" => Some(json!({"type": "any"})),
        Some(Value::String(s)) if s == "auto" => Some(json!({"type": "auto"})),
        Some(Value::Object(o)) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .map(|name| json!({"type": "tool", "name": name})),
        _ => None,
    };
    if chat.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false) {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        c["disable_parallel_tool_use"] = Value::Bool(true);
    }
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    if let Some(user) = chat.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    Ok(Value::Object(out))
}

fn finish_reason(stop_reason: Option<&str>) -> Value {
    match stop_reason {
        Some("end_turn") | Some("stop_sequence") | Some("pause_turn") => json!("stop"),
        Some("max_tokens") => json!("length"),
        Some("tool_use") => json!("tool_calls"),
        Some("refusal") => json!("content_filter"),
        None => Value::Null,
        Some(_) => json!("stop"),
    }
}

/// OpenAI's `usage` object for a normalized Anthropic usage.
pub fn openai_usage(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.input_total(),
        "completion_tokens": u.output,
        "total_tokens": u.input_total().saturating_add(u.output),
        "prompt_tokens_details": {"cached_tokens": u.cache_read, "cache_write_tokens": u.cache_write},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning},
    })
}

/// Translates a whole Anthropic message into a chat completion; `None` if it is not one.
pub fn response(body: &[u8], model: &str, created: u64) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if v.get("type").and_then(Value::as_str) != Some("message") {
        return None;
    }
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in v
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or_default(),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or_default(),
                    "arguments": block.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                },
            })),
            _ => {}
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) },
        "refusal": null,
    });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let usage = v
        .get("usage")
        .and_then(from_anthropic_usage)
        .unwrap_or_default();
    let out = json!({
        "id": v.get("id").cloned().unwrap_or_default(),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(v.get("stop_reason").and_then(Value::as_str)),
        }],
        "usage": openai_usage(&usage),
    });
    serde_json::to_vec(&out).ok()
}

/// Turns an Anthropic event stream into OpenAI chat-completion chunks, event by event.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    created: u64,
    include_usage: bool,
    id: String,
    /// Anthropic content-block index -> OpenAI tool-call index.
    tool_blocks: Vec<(u64, usize)>,
    usage: Usage,
    finish: Value,
    done: bool,
}

impl StreamTranslator {
    /// A translator answering as `model`; `include_usage` adds OpenAI's trailing usage chunk.
    pub fn new(model: &str, created: u64, include_usage: bool) -> Self {
        Self {
            model: model.to_owned(),
            created,
            include_usage,
            id: String::new(),
            tool_blocks: Vec::new(),
            usage: Usage::default(),
            finish: Value::Null,
            done: false,
        }
    }

    fn chunk(&self, choices: Value) -> String {
        let mut c = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": choices,
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        format!("data: {c}\n\n")
    }

    fn delta(&self, delta: Value, finish: Value) -> String {
        self.chunk(json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]))
    }

    /// The OpenAI SSE bytes for one Anthropic event (often none).
    pub fn on_event(&mut self, event: &Event) -> String {
        if self.done {
            return String::new();
        }
        let Ok(v) = serde_json::from_str::<Value>(event.data.trim()) else {
            return String::new();
        };
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event.name.as_str());
        match kind {
            "message_start" => {
                self.id = v
                    .pointer("/message/id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                if let Some(u) = v.pointer("/message/usage").and_then(from_anthropic_usage) {
                    self.usage = u;
                }
                self.delta(json!({"role": "assistant", "content": ""}), Value::Null)
            }
            "content_block_start" => {
                let block = v.get("content_block");
                if block.and_then(|b| b.get("type")).and_then(Value::as_str) != Some("tool_use") {
                    return String::new();
                }
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let tool_index = self.tool_blocks.len();
                self.tool_blocks.push((index, tool_index));
                self.delta(
                    json!({"tool_calls": [{
                        "index": tool_index,
                        "id": block.and_then(|b| b.get("id")).cloned().unwrap_or_default(),
                        "type": "function",
                        "function": {"name": block.and_then(|b| b.get("name")).cloned().unwrap_or_default(), "arguments": ""},
                    }]}),
                    Value::Null,
                )
            }
            "content_block_delta" => {
                let delta = v.get("delta");
                match delta.and_then(|d| d.get("type")).and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta
                            .and_then(|d| d.get("text"))
                            .cloned()
                            .unwrap_or_default();
                        self.delta(json!({"content": text}), Value::Null)
                    }
                    Some("input_json_delta") => {
                        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let Some(&(_, tool_index)) =
                            self.tool_blocks.iter().find(|(b, _)| *b == index)
                        else {
                            return String::new();
                        };
                        let partial = delta
                            .and_then(|d| d.get("partial_json"))
                            .cloned()
                            .unwrap_or_default();
                        self.delta(
                            json!({"tool_calls": [{"index": tool_index, "function": {"arguments": partial}}]}),
                            Value::Null,
                        )
                    }
                    _ => String::new(),
                }
            }
            "message_delta" => {
                if let Some(u) = v.get("usage") {
                    let count = |k: &str, old: u64| u.get(k).and_then(Value::as_u64).unwrap_or(old);
                    self.usage = Usage {
                        input_uncached: count("input_tokens", self.usage.input_uncached),
                        cache_read: count("cache_read_input_tokens", self.usage.cache_read),
                        cache_write: count("cache_creation_input_tokens", self.usage.cache_write),
                        output: count("output_tokens", self.usage.output),
                        ..self.usage
                    };
                }
                self.finish =
                    finish_reason(v.pointer("/delta/stop_reason").and_then(Value::as_str));
                self.delta(json!({}), self.finish.clone())
            }
            "message_stop" => {
                self.done = true;
                let mut out = String::new();
                if self.include_usage {
                    let mut c = json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [],
                    });
                    c["usage"] = openai_usage(&self.usage);
                    out.push_str(&format!("data: {c}\n\n"));
                }
                out.push_str("data: [DONE]\n\n");
                out
            }
            "error" => {
                self.done = true;
                let message = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("The provider failed.");
                let kind = v
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("api_error");
                format!(
                    "data: {}\n\n",
                    json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
                )
            }
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::decode_all;

    fn chat(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn request_maps_roles_tools_and_limits() {
        let out = request(
            &chat(json!({
                "model": "claude", "max_tokens": 100, "temperature": 1.5, "stop": "END", "stream": true,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
                ],
                "tools": [{"type": "function", "function": {"name": "weather", "description": "Get weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
                "tool_choice": "required", "parallel_tool_calls": false, "user": "u-1"
            })),
            "claude-sonnet-4-5",
        )
        .unwrap();
        assert_eq!(out["model"], "claude-sonnet-4-5");
        assert_eq!(out["system"][0]["text"], "Be brief.");
        assert_eq!(out["max_tokens"], 100);
        assert_eq!(out["temperature"], 1.0);
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert_eq!(out["stream"], true);
        assert_eq!(
            out["messages"][0]["content"][1]["source"]["media_type"],
            "image/png"
        );
        assert_eq!(out["messages"][1]["content"][0]["type"], "tool_use");
        assert_eq!(out["messages"][1]["content"][0]["input"]["city"], "Oslo");
        assert_eq!(out["messages"][2]["content"][0]["tool_use_id"], "call_1");
        assert_eq!(
            out["tools"][0]["input_schema"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(
            out["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        assert_eq!(out["metadata"]["user_id"], "u-1");
    }

    #[test]
    fn defaults_and_refusals() {
        let out = request(
            &chat(json!({"model": "c", "messages": [{"role": "user", "content": "x"}]})),
            "c",
        )
        .unwrap();
        assert_eq!(out["max_tokens"], DEFAULT_MAX_TOKENS);
        assert!(out.get("system").is_none());
        let e = request(&chat(json!({"model": "c", "n": 2, "messages": []})), "c").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("n"));
    }

    #[test]
    fn response_translates_text_tools_and_usage() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x",
            "content":[{"type":"text","text":"Let me check."},{"type":"tool_use","id":"tu_1","name":"weather","input":{"city":"Oslo"}}],
            "stop_reason":"tool_use","usage":{"input_tokens":10,"cache_read_input_tokens":20,"cache_creation_input_tokens":5,"output_tokens":7}}"#;
        let out: Value = serde_json::from_slice(&response(body, "claude", 123).unwrap()).unwrap();
        assert_eq!(out["object"], "chat.completion");
        assert_eq!(out["model"], "claude");
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(out["choices"][0]["message"]["content"], "Let me check.");
        assert_eq!(
            out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Oslo\"}"
        );
        assert_eq!(out["usage"]["prompt_tokens"], 35);
        assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 20);
        assert_eq!(out["usage"]["completion_tokens"], 7);
        assert!(response(br#"{"type":"error"}"#, "c", 0).is_none());
    }

    #[test]
    fn stream_translates_to_openai_chunks() {
        let fixture = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/anthropic/messages-stream.sse"
        ))
        .unwrap();
        let mut t = StreamTranslator::new("claude", 1, true);
        let out: String = decode_all(&fixture).iter().map(|e| t.on_event(e)).collect();
        let chunks: Vec<Value> = decode_all(out.as_bytes())
            .iter()
            .filter(|e| e.data != "[DONE]")
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert!(text.starts_with("Rotate it in four steps:"), "{text}");
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["prompt_tokens"], 31 + 2213 + 412);
        assert_eq!(last["usage"]["completion_tokens"], 74);
        assert!(
            chunks
                .iter()
                .any(|c| c["choices"][0]["finish_reason"] == "stop")
        );
        assert!(out.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn stream_error_becomes_an_error_chunk() {
        let fixture = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/anthropic/messages-stream-error-overloaded.sse"
        ))
        .unwrap();
        let mut t = StreamTranslator::new("claude", 1, false);
        let out: String = decode_all(&fixture).iter().map(|e| t.on_event(e)).collect();
        assert!(out.contains(r#""type":"overloaded_error""#), "{out}");
        assert!(!out.contains("[DONE]"));
    }

    #[test]
    fn tool_stream_indexes_calls_from_zero() {
        let events = decode_all(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n\
              event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"tu\",\"name\":\"f\",\"input\":{}}}\n\n\
              event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\"\"}}\n\n",
        );
        let mut t = StreamTranslator::new("c", 1, false);
        let out: String = events.iter().map(|e| t.on_event(e)).collect();
        let chunks: Vec<Value> = decode_all(out.as_bytes())
            .iter()
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect();
        assert_eq!(
            chunks[1]["choices"][0]["delta"]["tool_calls"][0]["index"],
            0
        );
        assert_eq!(
            chunks[1]["choices"][0]["delta"]["tool_calls"][0]["id"],
            "tu"
        );
        assert_eq!(
            chunks[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\""
        );
        assert!(
            chunks[0].get("usage").is_none(),
            "no usage key unless asked"
        );
    }
}
