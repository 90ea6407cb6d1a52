//! Token usage in one normalized schema, whatever the provider's format.
//!
//! The fields never overlap: `input_uncached + cache_read + cache_write` is the whole prompt,
//! and `output` is everything billed at the output rate, reasoning included; `reasoning`
//! only says how much of `output` was hidden reasoning. So a price can be applied to each
//! field without double counting. How each provider's fields map here (which counts
//! already include cached or reasoning tokens) is in `tests/fixtures/README.md`.

use crate::sample::{TextReservoir, TextSample, unpredictable_seed};
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
        self.input_uncached
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_write)
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
}

/// The count at `path` ("/a/b": member `b` of member `a`). Walked member by member:
/// `Value::pointer` unescapes every segment into two new strings, and usage is read on
/// every call.
fn count(v: &Value, path: &str) -> Option<u64> {
    path.split('/')
        .skip(1)
        .try_fold(v, |v, member| v.get(member))?
        .as_u64()
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
        .saturating_sub(prompt.saturating_add(u.output));
    u.output = u.output.saturating_add(thoughts);
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

fn from_value(format: Format, v: &Value) -> Option<Usage> {
    from_member(format, v.get("usage")?)
}

/// Usage from a body's `usage` member.
fn from_member(format: Format, usage: &Value) -> Option<Usage> {
    match format {
        Format::OpenAiChat => from_openai_usage(usage),
        Format::OpenAiChatReasoningApart => from_reasoning_apart_usage(usage),
        Format::OpenAiResponses => from_responses_usage(usage),
        Format::Anthropic => from_anthropic_usage(usage),
    }
}

/// The only member of a response body that carries usage. Deserializing into this skips
/// everything else without building it, which is most of the cost of reading a body.
#[derive(serde::Deserialize)]
struct UsageMembers {
    #[serde(default)]
    usage: Option<Value>,
}

/// Reads the usage of a whole (non-streamed) response body.
pub fn from_body(format: Format, body: &[u8]) -> Option<Usage> {
    let members: UsageMembers = serde_json::from_slice(body).ok()?;
    from_member(format, members.usage.as_ref()?)
}

/// Most bytes of generated text kept per call for an estimate: 32 blocks of
/// [`crate::sample::SLICE_BYTES`], so answers up to ~3,500 tokens are counted exactly and
/// longer ones from a uniform sample (see [`crate::tokens::MAX_PROMPT_SAMPLE`] for the
/// memory this allows).
pub const MAX_OUTPUT_SAMPLE: usize = 16 * 1024;

/// Collects generated text, bounded, for a token estimate when no usage is reported or a
/// stream is cut before its final count.
#[derive(Debug, Clone)]
pub struct OutputText(TextReservoir, u64);

impl Default for OutputText {
    /// Sampling positions follow a seed no client can predict.
    fn default() -> Self {
        Self::with_seed(unpredictable_seed())
    }
}

impl OutputText {
    /// Collects with sampling choices drawn from `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Self(
            TextReservoir::new(MAX_OUTPUT_SAMPLE / crate::sample::SLICE_BYTES, seed),
            0,
        )
    }

    /// Appends generated text.
    pub fn push(&mut self, text: &str) {
        if !text.is_empty() {
            self.1 = self.1.saturating_add(1);
        }
        self.0.push(text);
    }

    /// Pieces of text pushed (content deltas of a stream): each is at least one token.
    pub fn deltas(&self) -> u64 {
        self.1
    }

    /// Bytes of text pushed, sampled or not.
    pub fn bytes(&self) -> u64 {
        self.0.total_bytes()
    }

    /// What is kept: all of the text when it fits, else a uniform sample of it.
    pub fn sample(&self) -> TextSample {
        self.0.sample()
    }

    /// Nothing was generated.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What the gateway must count itself for a call's usage record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimation {
    /// The provider's report stands as it is.
    Reported,
    /// Nothing to record: a refused call that generated nothing costs nothing.
    Free,
    /// The prompt as reported; the output is the larger of the reported count and the
    /// count of the text the client received (a stream cut before its final count).
    Output,
    /// Nothing reported: prompt and output are both counted by the gateway.
    Whole,
}

/// Decides what to count for a call: `reported` usage, whether the answer `ended` on its
/// own end marker (a whole JSON body always does), its HTTP `status`, and whether any
/// generated text was seen.
pub fn estimation(
    reported: Option<&Usage>,
    ended: bool,
    status: u32,
    output_seen: bool,
) -> Estimation {
    match reported {
        // A cut stream's report can lag what was sent (Anthropic's `message_start` says
        // `output_tokens: 1` until `message_delta`; others report only at the end).
        Some(_) if !ended && output_seen => Estimation::Output,
        Some(_) => Estimation::Reported,
        None if status >= 400 && !output_seen => Estimation::Free,
        None => Estimation::Whole,
    }
}

impl Usage {
    /// This usage with the gateway's own counts applied: `prompt` replaces the prompt
    /// fields (all uncached), `output` raises the output to it; `estimated` is set when
    /// either changed a field.
    pub fn with_counts(self, prompt: Option<u64>, output: Option<u64>) -> Usage {
        let mut u = self;
        if let Some(p) = prompt {
            u.input_uncached = p;
            u.cache_read = 0;
            u.cache_write = 0;
            u.estimated = true;
        }
        if let Some(o) = output.filter(|o| *o > u.output) {
            u.output = o;
            u.estimated = true;
        }
        u
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
        }
    }

    fn on_chat_chunk(&mut self, v: &Value) -> EventRole {
        let choices = v.get("choices").and_then(Value::as_array);
        for choice in choices.into_iter().flatten() {
            let delta = choice.get("delta").or_else(|| choice.get("message"));
            // All generated text the client receives is billed output: the answer, a
            // refusal, and reasoning where a provider streams it (DeepSeek, vLLM).
            for key in ["content", "refusal", "reasoning_content", "reasoning"] {
                if let Some(t) = delta.and_then(|d| d.get(key)).and_then(Value::as_str) {
                    self.text.push(t);
                }
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
            // Every text delta is output the client received: answer text, tool arguments,
            // custom tool input, refusals, reasoning summaries, transcripts.
            kind if kind.ends_with(".delta") => {
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
    }
    meter.text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_counts_saturate_instead_of_wrapping() {
        let max = u64::MAX;
        let apart = serde_json::json!({"usage": {"prompt_tokens": max, "completion_tokens": max,
            "total_tokens": max, "prompt_tokens_details": {"cached_tokens": max}}});
        let u = from_body(
            Format::OpenAiChatReasoningApart,
            apart.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(u.input_total(), max);
        assert_eq!(u.output, max);
    }
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
        assert_eq!(m.text().sample().pieces, ["Hi"]);
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
    fn output_text_is_whole_while_it_fits_then_bounded() {
        let mut t = OutputText::with_seed(7);
        t.push("Hello ");
        t.push("world");
        assert_eq!(t.sample().pieces, ["Hello world"]);
        let chunk = "é".repeat(1000); // 2 bytes each
        for _ in 0..200 {
            t.push(&chunk);
        }
        let sample = t.sample();
        assert_eq!(sample.total_bytes, 400_011);
        assert!(!sample.is_whole());
        assert!(sample.kept_bytes() <= (MAX_OUTPUT_SAMPLE + 4 * 32) as u64);
        assert!(sample.pieces.iter().all(|p| p.chars().all(|c| c == 'é')));
    }

    #[test]
    fn estimation_follows_what_was_reported_and_seen() {
        let u = Usage::default();
        assert_eq!(estimation(Some(&u), true, 200, true), Estimation::Reported);
        assert_eq!(
            estimation(Some(&u), false, 200, false),
            Estimation::Reported
        );
        assert_eq!(estimation(Some(&u), false, 200, true), Estimation::Output);
        assert_eq!(estimation(None, true, 200, false), Estimation::Whole);
        assert_eq!(estimation(None, false, 200, true), Estimation::Whole);
        assert_eq!(estimation(None, true, 429, false), Estimation::Free);
        assert_eq!(estimation(None, true, 500, true), Estimation::Whole);
    }

    #[test]
    fn counts_raise_output_and_replace_prompt() {
        let reported = Usage {
            input_uncached: 10,
            cache_read: 5,
            output: 1,
            ..Usage::default()
        };
        let u = reported.with_counts(None, Some(40));
        assert_eq!((u.input_uncached, u.cache_read, u.output), (10, 5, 40));
        assert!(u.estimated);
        let u = reported.with_counts(None, Some(1));
        assert_eq!(
            u, reported,
            "a count at or below the report changes nothing"
        );
        let u = reported.with_counts(Some(99), None);
        assert_eq!((u.input_total(), u.output, u.estimated), (99, 1, true));
    }

    #[test]
    fn cut_anthropic_stream_keeps_the_text_sent() {
        let mut m = StreamMeter::new(Format::Anthropic);
        let events = decode_all(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n\
              event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello there\"}}\n\n",
        );
        for e in &events {
            m.on_event(e);
        }
        let reported = m.usage();
        assert_eq!(reported.map(|u| u.output), Some(1), "the placeholder");
        assert!(!m.ended());
        assert_eq!(
            estimation(reported.as_ref(), m.ended(), 200, !m.text().is_empty()),
            Estimation::Output
        );
        assert_eq!(m.text().sample().pieces, ["Hello there"]);
    }
}
