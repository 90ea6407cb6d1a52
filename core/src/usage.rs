//! Token usage in one normalized schema, whatever the provider's format.
//!
//! The fields never overlap: `input_uncached + cache_read + cache_write` is the whole prompt,
//! and `output` is everything billed at the output rate, reasoning included; `reasoning`
//! only says how much of `output` was hidden reasoning. So a price can be applied to each
//! field without double counting. How each provider's fields map here (which counts
//! already include cached or reasoning tokens) is in `tests/fixtures/README.md`.

use crate::sse::Event;
use serde_json::Value;

/// Tokens of one call, split the way they are priced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens billed at the full input rate.
    pub input_uncached: u64,
    /// Prompt tokens read from the provider's cache.
    pub cache_read: u64,
    /// Prompt tokens written to the provider's cache.
    pub cache_write: u64,
    /// Generated tokens, reasoning included.
    pub output: u64,
    /// Of `output`, the tokens spent on hidden reasoning.
    pub reasoning: u64,
    /// Counted by the gateway because the provider reported nothing.
    pub estimated: bool,
    /// The response ended early; these are the tokens seen until then.
    pub partial: bool,
}

impl Usage {
    /// All prompt tokens, cached or not.
    pub fn input_total(&self) -> u64 {
        self.input_uncached + self.cache_read + self.cache_write
    }
}

/// The wire format a response is in, which decides where usage is and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenAI Chat Completions, Completions and Embeddings, and servers that copy them
    /// (vLLM, Ollama). Also reads DeepSeek's `prompt_cache_hit_tokens`.
    OpenAiChat,
    /// OpenAI chat format where reasoning is outside `completion_tokens` but inside
    /// `total_tokens`: Gemini's OpenAI-compatible endpoint and xAI's chat completions.
    OpenAiChatReasoningApart,
    /// OpenAI Responses API.
    OpenAiResponses,
    /// Anthropic Messages API.
    Anthropic,
    /// Gemini `generateContent` / `streamGenerateContent`.
    Gemini,
}

fn count(v: &Value, pointer: &str) -> Option<u64> {
    v.pointer(pointer).and_then(Value::as_u64)
}

/// Splits a prompt count that includes cached tokens, never going negative: a provider
/// reporting more cached than prompt tokens is wrong, and a negative charge would be worse.
fn split_prompt(prompt: u64, cache_read: u64, cache_write: u64) -> (u64, u64, u64) {
    let cache_read = cache_read.min(prompt);
    let cache_write = cache_write.min(prompt - cache_read);
    (prompt - cache_read - cache_write, cache_read, cache_write)
}

/// Reads an OpenAI-style `usage` object (Chat Completions, Completions, Embeddings).
///
/// `prompt_tokens` includes cached and cache-write tokens; they are split out here.
/// DeepSeek's `prompt_cache_hit_tokens`, when present, is the cached count.
/// Returns `None` when there is no `prompt_tokens`.
pub fn from_openai_usage(usage: &Value) -> Option<Usage> {
    let prompt = count(usage, "/prompt_tokens")?;
    let cache_read = count(usage, "/prompt_cache_hit_tokens")
        .or_else(|| count(usage, "/prompt_tokens_details/cached_tokens"))
        .unwrap_or(0);
    let cache_write = count(usage, "/prompt_tokens_details/cache_write_tokens").unwrap_or(0);
    let (input_uncached, cache_read, cache_write) = split_prompt(prompt, cache_read, cache_write);
    Some(Usage {
        input_uncached,
        cache_read,
        cache_write,
        output: count(usage, "/completion_tokens").unwrap_or(0),
        reasoning: count(usage, "/completion_tokens_details/reasoning_tokens").unwrap_or(0),
        ..Usage::default()
    })
}

/// `usage` where reasoning is billed as output but counted only in `total_tokens` (Gemini's
/// OpenAI endpoint, observed, not documented; xAI chat, documented), so it is recovered
/// from the total.
fn from_reasoning_apart_usage(usage: &Value) -> Option<Usage> {
    let mut u = from_openai_usage(usage)?;
    let prompt = u.input_total();
    let thoughts = count(usage, "/total_tokens")
        .unwrap_or(0)
        .saturating_sub(prompt + u.output);
    u.output += thoughts;
    u.reasoning = u.reasoning.max(thoughts);
    Some(u)
}

/// Reads an OpenAI Responses `usage` object.
fn from_responses_usage(usage: &Value) -> Option<Usage> {
    let input = count(usage, "/input_tokens")?;
    let (input_uncached, cache_read, cache_write) = split_prompt(
        input,
        count(usage, "/input_tokens_details/cached_tokens").unwrap_or(0),
        count(usage, "/input_tokens_details/cache_write_tokens").unwrap_or(0),
    );
    Some(Usage {
        input_uncached,
        cache_read,
        cache_write,
        output: count(usage, "/output_tokens").unwrap_or(0),
        reasoning: count(usage, "/output_tokens_details/reasoning_tokens").unwrap_or(0),
        ..Usage::default()
    })
}

/// Reads an Anthropic `usage` object, where `input_tokens` already excludes cache reads
/// and writes.
pub fn from_anthropic_usage(usage: &Value) -> Option<Usage> {
    let input = count(usage, "/input_tokens")?;
    Some(Usage {
        input_uncached: input,
        cache_read: count(usage, "/cache_read_input_tokens").unwrap_or(0),
        cache_write: count(usage, "/cache_creation_input_tokens").unwrap_or(0),
        output: count(usage, "/output_tokens").unwrap_or(0),
        reasoning: count(usage, "/output_tokens_details/thinking_tokens").unwrap_or(0),
        ..Usage::default()
    })
}

/// Reads Gemini's `usageMetadata`: the prompt count includes cached content; thoughts are
/// billed as output but counted apart from the candidates; tool-use prompt tokens are input.
fn from_gemini_usage(meta: &Value) -> Option<Usage> {
    let prompt =
        count(meta, "/promptTokenCount")? + count(meta, "/toolUsePromptTokenCount").unwrap_or(0);
    let (input_uncached, cache_read, _) = split_prompt(
        prompt,
        count(meta, "/cachedContentTokenCount").unwrap_or(0),
        0,
    );
    let thoughts = count(meta, "/thoughtsTokenCount").unwrap_or(0);
    Some(Usage {
        input_uncached,
        cache_read,
        cache_write: 0,
        output: count(meta, "/candidatesTokenCount").unwrap_or(0) + thoughts,
        reasoning: thoughts,
        ..Usage::default()
    })
}

fn from_value(format: Format, v: &Value) -> Option<Usage> {
    from_members(format, v.get("usage"), v.get("usageMetadata"))
}

/// Usage from a body's `usage` (or Gemini's `usageMetadata`) member.
fn from_members(
    format: Format,
    usage: Option<&Value>,
    usage_metadata: Option<&Value>,
) -> Option<Usage> {
    match format {
        Format::OpenAiChat => from_openai_usage(usage?),
        Format::OpenAiChatReasoningApart => from_reasoning_apart_usage(usage?),
        Format::OpenAiResponses => from_responses_usage(usage?),
        Format::Anthropic => from_anthropic_usage(usage?),
        Format::Gemini => from_gemini_usage(usage_metadata?),
    }
}

/// The only members of a response body that carry usage. Deserializing into this skips
/// everything else without building it, which is most of the cost of reading a body.
#[derive(serde::Deserialize)]
struct UsageMembers {
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default, rename = "usageMetadata")]
    usage_metadata: Option<Value>,
}

/// Reads the usage of a whole (non-streamed) response body.
pub fn from_body(format: Format, body: &[u8]) -> Option<Usage> {
    let members: UsageMembers = serde_json::from_slice(body).ok()?;
    from_members(
        format,
        members.usage.as_ref(),
        members.usage_metadata.as_ref(),
    )
}

/// Most generated text kept per stream for estimating; beyond it only the length is counted.
const MAX_KEPT_TEXT: usize = 256 * 1024;

/// Collects generated text, bounded, for a token estimate when no usage is reported.
#[derive(Debug, Default, Clone)]
pub struct OutputText {
    kept: String,
    total_bytes: u64,
}

impl OutputText {
    /// Appends generated text.
    pub fn push(&mut self, text: &str) {
        self.total_bytes += text.len() as u64;
        let room = MAX_KEPT_TEXT.saturating_sub(self.kept.len());
        if room > 0 {
            let mut end = text.len().min(room);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            self.kept.push_str(&text[..end]);
        }
    }

    /// The text kept (at most 256 KiB).
    pub fn kept(&self) -> &str {
        &self.kept
    }

    /// Bytes of all the text seen, kept or not.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Nothing was generated.
    pub fn is_empty(&self) -> bool {
        self.total_bytes == 0
    }
}

/// What one stream event was, as far as a gateway rewriting the stream cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventRole {
    /// An OpenAI chunk with `"choices":[]` that only carries usage (from `include_usage`).
    UsageOnly,
    /// Anything else.
    Other,
}

/// Follows a streamed response event by event and keeps the latest usage it reported.
#[derive(Debug, Clone)]
pub struct StreamMeter {
    format: Format,
    usage: Option<Usage>,
    text: OutputText,
    /// Anthropic reports input and cache counts in `message_start`, output in `message_delta`.
    anthropic_start: Option<Usage>,
    ended: bool,
}

impl StreamMeter {
    /// A meter for a stream in `format`.
    pub fn new(format: Format) -> Self {
        Self {
            format,
            usage: None,
            text: OutputText::default(),
            anthropic_start: None,
            ended: false,
        }
    }

    /// The usage reported so far (the latest value: providers repeat it cumulatively).
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Generated text seen so far.
    pub fn text(&self) -> &OutputText {
        &self.text
    }

    /// The stream's own end marker was seen (`[DONE]`, `message_stop`, `response.completed`).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Takes one event into account.
    pub fn on_event(&mut self, event: &Event) -> EventRole {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.ended = true;
            return EventRole::Other;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return EventRole::Other;
        };
        match self.format {
            Format::OpenAiChat | Format::OpenAiChatReasoningApart => self.on_chat_chunk(&v),
            Format::OpenAiResponses => {
                self.on_responses_event(&v);
                EventRole::Other
            }
            Format::Anthropic => {
                self.on_anthropic_event(&v);
                EventRole::Other
            }
            Format::Gemini => {
                self.on_gemini_chunk(&v);
                EventRole::Other
            }
        }
    }

    fn on_chat_chunk(&mut self, v: &Value) -> EventRole {
        let choices = v.get("choices").and_then(Value::as_array);
        for choice in choices.into_iter().flatten() {
            let delta = choice.get("delta").or_else(|| choice.get("message"));
            if let Some(t) = delta.and_then(|d| d.get("content")).and_then(Value::as_str) {
                self.text.push(t);
            }
            if let Some(t) = choice.get("text").and_then(Value::as_str) {
                self.text.push(t);
            }
            for call in delta
                .and_then(|d| d.get("tool_calls"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(a) = call.pointer("/function/arguments").and_then(Value::as_str) {
                    self.text.push(a);
                }
                if let Some(n) = call.pointer("/function/name").and_then(Value::as_str) {
                    self.text.push(n);
                }
            }
        }
        let reported = v.get("usage").filter(|u| u.is_object());
        if let Some(usage) = reported.and_then(|_| from_value(self.format, v)) {
            self.usage = Some(usage);
            if choices.is_some_and(|c| c.is_empty()) {
                return EventRole::UsageOnly;
            }
        }
        EventRole::Other
    }

    fn on_responses_event(&mut self, v: &Value) {
        match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "response.output_text.delta" | "response.function_call_arguments.delta" => {
                if let Some(t) = v.get("delta").and_then(Value::as_str) {
                    self.text.push(t);
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                self.ended = true;
                if let Some(u) = v
                    .get("response")
                    .and_then(|r| from_value(Format::OpenAiResponses, r))
                {
                    self.usage = Some(u);
                }
            }
            _ => {}
        }
    }

    fn on_anthropic_event(&mut self, v: &Value) {
        match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                let start = v.pointer("/message/usage").and_then(from_anthropic_usage);
                self.anthropic_start = start;
                // The start's output count is a placeholder; keep it only until a delta comes.
                self.usage = start;
            }
            "message_delta" => {
                let Some(delta) = v.get("usage") else { return };
                let start = self.anthropic_start.unwrap_or_default();
                // Cumulative; newer streams repeat input and cache counts, older ones do not.
                self.usage = Some(Usage {
                    input_uncached: count(delta, "/input_tokens").unwrap_or(start.input_uncached),
                    cache_read: count(delta, "/cache_read_input_tokens")
                        .unwrap_or(start.cache_read),
                    cache_write: count(delta, "/cache_creation_input_tokens")
                        .unwrap_or(start.cache_write),
                    output: count(delta, "/output_tokens").unwrap_or(start.output),
                    reasoning: count(delta, "/output_tokens_details/thinking_tokens")
                        .unwrap_or(start.reasoning),
                    ..Usage::default()
                });
            }
            "content_block_delta" => {
                let delta = v.get("delta");
                for key in ["text", "partial_json", "thinking"] {
                    if let Some(t) = delta.and_then(|d| d.get(key)).and_then(Value::as_str) {
                        self.text.push(t);
                    }
                }
            }
            "message_stop" => self.ended = true,
            _ => {}
        }
    }

    fn on_gemini_chunk(&mut self, v: &Value) {
        for part in v
            .pointer("/candidates/0/content/parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = part.get("text").and_then(Value::as_str) {
                self.text.push(t);
            }
        }
        if let Some(u) = from_value(Format::Gemini, v) {
            self.usage = Some(u);
        }
        if v.pointer("/candidates/0/finishReason").is_some() {
            self.ended = true;
        }
    }
}

/// Generated text of a whole response body, for estimating when it reports no usage.
pub fn output_text_of_body(format: Format, body: &[u8]) -> OutputText {
    let mut text = OutputText::default();
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return text;
    };
    let mut meter = StreamMeter::new(format);
    match format {
        Format::OpenAiChat | Format::OpenAiChatReasoningApart => {
            meter.on_chat_chunk(&v);
        }
        Format::OpenAiResponses => {
            for item in v
                .get("output")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for part in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(t) = part.get("text").and_then(Value::as_str) {
                        text.push(t);
                    }
                }
                if let Some(a) = item.get("arguments").and_then(Value::as_str) {
                    text.push(a);
                }
            }
            return text;
        }
        Format::Anthropic => {
            for block in v
                .get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(t) = block.get("text").and_then(Value::as_str) {
                    text.push(t);
                }
                if let Some(input) = block.get("input") {
                    text.push(&input.to_string());
                }
            }
            return text;
        }
        Format::Gemini => meter.on_gemini_chunk(&v),
    }
    meter.text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::decode_all;
    use serde_json::json;

    #[test]
    fn plain_chat_usage() {
        let u = from_openai_usage(
            &json!({"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29}),
        )
        .unwrap();
        assert_eq!((u.input_uncached, u.output, u.cache_read), (19, 10, 0));
    }

    #[test]
    fn cached_and_reasoning_split_out() {
        let u = from_openai_usage(&json!({
            "prompt_tokens": 1000, "completion_tokens": 300, "total_tokens": 1300,
            "prompt_tokens_details": {"cached_tokens": 400, "cache_write_tokens": 100},
            "completion_tokens_details": {"reasoning_tokens": 256}
        }))
        .unwrap();
        assert_eq!(
            (u.input_uncached, u.cache_read, u.cache_write),
            (500, 400, 100)
        );
        assert_eq!((u.output, u.reasoning), (300, 256));
    }

    #[test]
    fn inconsistent_cache_counts_never_go_negative() {
        let u = from_openai_usage(&json!({
            "prompt_tokens": 10, "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 50, "cache_write_tokens": 5}
        }))
        .unwrap();
        assert_eq!((u.input_total(), u.input_uncached), (10, 0));
    }

    #[test]
    fn deepseek_cache_hits() {
        let u = from_openai_usage(&json!({
            "prompt_tokens": 100, "completion_tokens": 5,
            "prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 36
        }))
        .unwrap();
        assert_eq!((u.input_uncached, u.cache_read), (36, 64));
    }

    #[test]
    fn gemini_openai_thoughts_recovered_from_total() {
        let body = br#"{"usage":{"completion_tokens":34,"prompt_tokens":196,"total_tokens":357}}"#;
        let u = from_body(Format::OpenAiChatReasoningApart, body).unwrap();
        assert_eq!(
            (u.input_uncached, u.output, u.reasoning),
            (196, 34 + 127, 127)
        );
    }

    #[test]
    fn body_without_usage_is_none() {
        assert_eq!(from_body(Format::OpenAiChat, br#"{"id":"x"}"#), None);
        assert_eq!(from_body(Format::OpenAiChat, b"not json"), None);
        assert_eq!(from_body(Format::OpenAiChat, br#"{"usage":null}"#), None);
    }

    #[test]
    fn usage_only_chunk_is_recognized() {
        let mut m = StreamMeter::new(Format::OpenAiChat);
        let events = decode_all(
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n\
              data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n\
              data: [DONE]\n\n",
        );
        let roles: Vec<EventRole> = events.iter().map(|e| m.on_event(e)).collect();
        assert_eq!(
            roles,
            [EventRole::Other, EventRole::UsageOnly, EventRole::Other]
        );
        assert_eq!(
            m.usage().map(|u| (u.input_uncached, u.output)),
            Some((3, 1))
        );
        assert_eq!(m.text().kept(), "Hi");
        assert!(m.ended());
    }

    #[test]
    fn usage_on_a_finish_chunk_is_not_usage_only() {
        let mut m = StreamMeter::new(Format::OpenAiChat);
        let e = decode_all(b"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n");
        assert_eq!(m.on_event(&e[0]), EventRole::Other);
        assert!(m.usage().is_some());
    }

    #[test]
    fn output_text_is_bounded_and_scaled() {
        let mut t = OutputText::default();
        let chunk = "é".repeat(1000); // 2 bytes each
        for _ in 0..200 {
            t.push(&chunk);
        }
        assert!(t.kept().len() <= MAX_KEPT_TEXT);
        assert_eq!(t.total_bytes(), 400_000);
        let kept = t.kept().len() as u64;
        assert_eq!(
            crate::tokens::scale(100, kept, t.total_bytes()),
            (100u64 * 400_000).div_ceil(kept)
        );
        assert_eq!(crate::tokens::scale(100, 10, 10), 100);
    }
}
