//! Token counting with OpenAI's encodings, for estimates and exact prompt counts.
//!
//! Splitting a prompt into the texts that get tokenized ([`prompt_parts`]) needs no
//! tokenizer, so the filter can keep a bounded sample of them ([`prompt_sample`]) for the
//! control plane to count when a provider reports no usage.
//! Counting itself ([`count`], [`prompt`]) needs the `tokenizer` feature: the encodings
//! add ~6 MB of code and tables, which V8 compiles at Envoy start and keeps in every VM,
//! so only the builds that must count before admission include it.

use crate::endpoints::Endpoint;
use crate::sample::{TextSample, unpredictable_seed};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// Tokens a chat prompt spends on framing: 3 per message, 1 more for a `name`, and 3 to
/// prime the reply. Role names are single tokens in both encodings (tested).
const PER_MESSAGE: u64 = 3;
const REPLY_PRIMER: u64 = 3;

/// Tokens OpenAI's chat format spends on function tools, beyond their texts (`name:description`
/// of each function, `key:type:description` of each parameter, each enum value). Fitted by
/// OpenAI's cookbook ("How to count tokens with tiktoken", section 7) to counts its API
/// returned, and tested against those counts (core/tests/openai_cookbook_counts.rs).
const TOOLS_END: u64 = 12;
const PROPERTIES_START: u64 = 3;
const PER_PROPERTY: u64 = 3;
const PER_ENUM_VALUE: u64 = 3;
/// A parameter with an enum costs 3 fewer framing tokens than one without.
const ENUM_SAVES: u64 = 3;

/// Tokens each function tool starts with: more in `cl100k_base` models than in newer ones.
fn per_function(model: &str) -> u64 {
    if uses_cl100k(model) { 10 } else { 7 }
}

/// Whether `model` tokenizes with `cl100k_base` (GPT-4, GPT-3.5, the older embedding
/// models) rather than `o200k_base` (newer families, and non-OpenAI models approximately).
pub fn uses_cl100k(model: &str) -> bool {
    let cl100k = ["gpt-4-", "gpt-3.5", "text-embedding-"];
    let is_cl100k = model == "gpt-4" || cl100k.iter().any(|p| model.starts_with(p));
    is_cl100k && !model.starts_with("gpt-4o")
}

/// Most bytes of prompt text kept for an estimate. 32 KiB holds ~7,000 tokens of prose,
/// so most prompts are counted exactly; longer ones keep 64 slices of [`SLICE_BYTES`],
/// whose scaled count is within a few percent for natural text (tested). With the answer's
/// [`crate::usage::MAX_OUTPUT_SAMPLE`], a stream holds under 50 KiB for its life: 700
/// concurrent streams in one VM keep ~34 MiB, 3% of V8's 1 GiB, and an estimated usage
/// record stays far below a gRPC message's 4 MiB.
///
/// [`SLICE_BYTES`]: crate::sample::SLICE_BYTES
pub const MAX_PROMPT_SAMPLE: usize = 32 * 1024;

/// The texts a prompt is tokenized from, and the tokens its framing and media add.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptParts<'a> {
    /// Each text tokenized on its own (tokens do not span parts).
    pub texts: Vec<Cow<'a, str>>,
    /// Tokens added beyond the texts: the format's framing, and images, audio, files and
    /// token ids counted without a tokenizer (see [`Media`]).
    pub overhead: u64,
}

/// What an estimate of a prompt needs, bounded in size whatever the prompt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptSample {
    /// The prompt's texts, whole or sampled.
    pub texts: TextSample,
    /// Tokens beyond the texts, counted in full.
    pub overhead: u64,
}

/// Token counts for the parts of a prompt that are not text, for a model family, taken at
/// the most a part of that kind can cost, since the gateway does not decode media.
///
/// Sources: OpenAI's vision guide ("Calculating costs"): a tile model charges `base` for
/// `detail: low` and `base + tile × tiles` otherwise, with at most 8 tiles of 512 px (the
/// image fits 2048 px, then its short side 768 px: 4 × 2 tiles); patch models charge at most
/// 1,536 patches times a multiplier. Anthropic's vision guide: larger images are scaled
/// down to about 1,600 tokens. Audio: OpenAI counts user audio at 1 token per 100 ms
/// (Realtime guide), Gemini at 32 tokens a second; the duration is bounded from the bytes
/// by the lowest common bitrates (8 kHz 8-bit mono PCM for `wav`, 8 kbit/s otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Media {
    /// An image with `detail: low`.
    pub image_low: u64,
    /// An image at any other detail, of unknown size.
    pub image: u64,
    /// Audio tokens per second.
    pub audio_per_second: u64,
}

/// Largest number of 512 px tiles a `detail: high` image is cut into.
const MAX_TILES: u64 = 8;
/// Largest number of 32 px patches a patch model reads from one image.
const MAX_PATCHES: u64 = 1536;
/// Bytes of audio per second at the lowest bitrates assumed: 8 kHz 8-bit mono PCM for
/// `wav`, MP3's lowest standard 8 kbit/s for anything else.
const WAV_BYTES_PER_SECOND: u64 = 8000;
const COMPRESSED_AUDIO_BYTES_PER_SECOND: u64 = 1000;
/// A file the gateway cannot see into (by id or URL) counts as one PDF page: up to 3,000
/// tokens of text (Anthropic's PDF guide) and the page's image (1,600).
pub const FILE_WITHOUT_DATA: u64 = 4_600;
/// A file sent inline counts one token per byte of it (and at least as one page):
/// compressed PDF text expands 3-4x and prose is ~4.5 bytes a token, so a text PDF costs
/// under that; scanned pages cost far less and are overcounted.
const FILE_TOKENS_PER_BYTE: u64 = 1;

impl Media {
    const fn tiles(base: u64, tile: u64) -> Self {
        Self {
            image_low: base,
            image: base + tile * MAX_TILES,
            audio_per_second: 10,
        }
    }

    /// `multiplier` in hundredths.
    const fn patches(multiplier: u64) -> Self {
        let most = (MAX_PATCHES * multiplier).div_ceil(100);
        Self {
            image_low: most,
            image: most,
            audio_per_second: 10,
        }
    }

    /// The rules for `model`, by family; a model of no known family gets the largest of
    /// the full-priced rules.
    pub fn of_model(model: &str) -> Self {
        let m = model.to_ascii_lowercase();
        let family = |p: &str| m.starts_with(p);
        if family("gpt-4o-mini") {
            Self::tiles(2833, 5667)
        } else if family("gpt-4.1-mini") || family("gpt-5-mini") {
            Self::patches(162)
        } else if family("gpt-4.1-nano") || family("gpt-5-nano") {
            Self::patches(246)
        } else if family("o4-mini") {
            Self::patches(172)
        } else if family("o1") || family("o3") {
            Self::tiles(75, 150)
        } else if family("gpt-5") {
            Self::tiles(70, 140)
        } else if family("gpt-") || family("chatgpt-") {
            Self::tiles(85, 170)
        } else {
            Self {
                image_low: 1600,
                image: 1600,
                audio_per_second: 32,
            }
        }
    }

    /// Tokens of an image part, by its `detail`.
    fn image_tokens(&self, detail: Option<&str>) -> u64 {
        if detail == Some("low") {
            self.image_low
        } else {
            self.image
        }
    }

    /// Tokens of base64 audio `data` in `format`.
    fn audio_tokens(&self, data: &str, format: Option<&str>) -> u64 {
        let bytes_per_second = if format == Some("wav") {
            WAV_BYTES_PER_SECOND
        } else {
            COMPRESSED_AUDIO_BYTES_PER_SECOND
        };
        let per_second = decoded_len(data).saturating_mul(self.audio_per_second);
        per_second.div_ceil(bytes_per_second).max(1)
    }
}

/// Bytes that base64 `data` (or a `data:` URL) decodes to, at most.
fn decoded_len(data: &str) -> u64 {
    let payload = match data.strip_prefix("data:") {
        Some(rest) => rest.split_once(',').map_or(rest, |(_, b64)| b64),
        None => data,
    };
    (payload.len() as u64).div_ceil(4) * 3
}

/// Tokens of a file part: `file_data` inline, else a file the gateway cannot see.
fn file_tokens(file: &Value) -> u64 {
    match file.get("file_data").and_then(Value::as_str) {
        Some(data) => decoded_len(data)
            .saturating_mul(FILE_TOKENS_PER_BYTE)
            .max(FILE_WITHOUT_DATA),
        None => FILE_WITHOUT_DATA,
    }
}

impl<'a> PromptParts<'a> {
    /// Adds a message's or an input item's `content`: a string, or an array of parts.
    fn push_content(&mut self, content: &'a Value, media: &Media) {
        match content {
            Value::String(s) => self.texts.push(Cow::Borrowed(s)),
            Value::Array(parts) => {
                let mut text: Option<Cow<'a, str>> = None;
                for part in parts {
                    let piece = match part {
                        Value::String(s) => Some(s.as_str()),
                        other => other
                            .get("text")
                            .or_else(|| other.get("refusal"))
                            .and_then(Value::as_str),
                    };
                    if let Some(piece) = piece {
                        match &mut text {
                            None => text = Some(Cow::Borrowed(piece)),
                            Some(t) => t.to_mut().push_str(piece),
                        }
                        continue;
                    }
                    self.overhead = self.overhead.saturating_add(part_tokens(part, media));
                }
                self.texts.extend(text);
            }
            _ => {}
        }
    }

    fn push_list(&mut self, value: Option<&'a Value>) {
        match value {
            Some(Value::String(s)) => self.texts.push(Cow::Borrowed(s)),
            Some(Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::String(s) => self.texts.push(Cow::Borrowed(s)),
                        // Pre-tokenized input: one token per id.
                        Value::Array(ids) => {
                            self.overhead = self.overhead.saturating_add(ids.len() as u64)
                        }
                        Value::Number(_) => self.overhead = self.overhead.saturating_add(1),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// Chat `tools`: function tools as OpenAI renders them into the prompt (see
    /// [`TOOLS_END`]); anything that rendering does not cover (other tool types, nested
    /// schemas, schema keywords beyond `type`/`properties`/`required`) as its JSON text,
    /// which overcounts rather than misses it.
    fn push_chat_tools(&mut self, tools: Option<&'a Value>, model: &str) {
        let Some(tools) = tools else { return };
        let Some(list) = tools.as_array() else {
            return self.push_json(Some(tools));
        };
        if list.is_empty() {
            return;
        }
        self.overhead = self.overhead.saturating_add(TOOLS_END);
        for tool in list {
            match tool.get("function").and_then(Value::as_object) {
                Some(function) if tool.get("type").and_then(Value::as_str) == Some("function") => {
                    self.push_function(function, model);
                    if let Some(object) = tool.as_object() {
                        self.push_unlisted(object, &["function"]);
                    }
                }
                _ => self.push_json(Some(tool)),
            }
        }
    }

    fn push_function(&mut self, function: &'a Map<String, Value>, model: &str) {
        self.overhead = self.overhead.saturating_add(per_function(model));
        let name = function.get("name").and_then(Value::as_str).unwrap_or("");
        let description = function.get("description").and_then(Value::as_str);
        self.texts.push(Cow::Owned(match description {
            Some(d) => format!("{name}:{}", d.strip_suffix('.').unwrap_or(d)),
            None => name.to_owned(),
        }));
        self.push_unlisted(function, &["name", "description", "parameters"]);
        let Some(parameters) = function.get("parameters").and_then(Value::as_object) else {
            return self.push_json(function.get("parameters"));
        };
        self.push_unlisted(parameters, &["properties", "required"]);
        let Some(properties) = parameters.get("properties").and_then(Value::as_object) else {
            return self.push_json(parameters.get("properties"));
        };
        if !properties.is_empty() {
            self.overhead = self.overhead.saturating_add(PROPERTIES_START);
        }
        for (key, property) in properties {
            self.push_property(key, property);
        }
    }

    fn push_property(&mut self, key: &str, property: &'a Value) {
        let Some(fields) = property.as_object() else {
            self.overhead = self.overhead.saturating_add(PER_PROPERTY);
            self.texts.push(Cow::Owned(key.to_owned()));
            return self.push_json(Some(property));
        };
        let text = |field: &str| fields.get(field).and_then(Value::as_str).unwrap_or("");
        let description = text("description");
        self.texts.push(Cow::Owned(format!(
            "{key}:{}:{}",
            text("type"),
            description.strip_suffix('.').unwrap_or(description)
        )));
        let mut framing = PER_PROPERTY;
        if let Some(values) = fields.get("enum").and_then(Value::as_array) {
            framing = (framing - ENUM_SAVES)
                .saturating_add(PER_ENUM_VALUE.saturating_mul(values.len() as u64));
            for value in values {
                match value {
                    Value::String(s) => self.texts.push(Cow::Borrowed(s)),
                    other => self.push_json(Some(other)),
                }
            }
        }
        self.overhead = self.overhead.saturating_add(framing);
        // A `type` that is not a string (a list of types) is not in the text above.
        let described = |field: &str| match field {
            "type" | "description" => fields.get(field).is_some_and(Value::is_string),
            "enum" => fields.get(field).is_some_and(Value::is_array),
            _ => false,
        };
        for (field, value) in fields {
            if !described(field) && !UNBILLED.contains(&field.as_str()) {
                self.push_field(value);
            }
        }
    }

    fn push_json(&mut self, value: Option<&Value>) {
        if let Some(v) = value.filter(|v| !v.is_null()) {
            self.texts.push(Cow::Owned(v.to_string()));
        }
    }

    /// A field the provider may turn into prompt tokens: a string as it is, a structure as
    /// its JSON text; scalars count nothing.
    fn push_field(&mut self, value: &'a Value) {
        match value {
            Value::String(s) => self.texts.push(Cow::Borrowed(s)),
            Value::Array(_) | Value::Object(_) => self.push_json(Some(value)),
            _ => {}
        }
    }

    /// Every member of `object` neither in `handled` nor in `unbilled`: fields this gateway
    /// does not know may carry prompt text (legacy `functions`, `prediction`, Responses
    /// `prompt` variables, input items of new types), so they count as text, conservatively.
    fn push_unlisted(&mut self, object: &'a Map<String, Value>, handled: &[&str]) {
        for (key, value) in object {
            if !handled.contains(&key.as_str()) && !UNBILLED.contains(&key.as_str()) {
                self.push_field(value);
            }
        }
    }
}

/// Request fields that set how a call runs but never become prompt tokens. Any other
/// field a body carries is counted by an estimate (see `push_unlisted`).
const UNBILLED: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "max_tool_calls",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "seed",
    "user",
    "safety_identifier",
    "metadata",
    "store",
    "service_tier",
    "parallel_tool_calls",
    "modalities",
    "reasoning_effort",
    "reasoning",
    "verbosity",
    "prompt_cache_key",
    "prompt_cache_retention",
    "background",
    "include",
    "truncation",
    "encoding_format",
    "dimensions",
    "echo",
    "best_of",
    // Message and input-item framing, counted by PER_MESSAGE.
    "role",
    "type",
    "id",
    "status",
    "call_id",
    "tool_call_id",
];

/// Tokens of one non-text content part (Chat's `image_url`, `input_audio`, `file`;
/// Responses' `input_image`, `input_file`); other parts count nothing.
fn part_tokens(part: &Value, media: &Media) -> u64 {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "image_url" => {
            media.image_tokens(part.pointer("/image_url/detail").and_then(Value::as_str))
        }
        "input_image" => media.image_tokens(part.get("detail").and_then(Value::as_str)),
        "input_audio" => {
            let audio = part.get("input_audio");
            let data = audio.and_then(|a| a.get("data")).and_then(Value::as_str);
            let format = audio.and_then(|a| a.get("format")).and_then(Value::as_str);
            media.audio_tokens(data.unwrap_or(""), format)
        }
        "file" => part.get("file").map_or(FILE_WITHOUT_DATA, file_tokens),
        "input_file" => file_tokens(part),
        _ => 0,
    }
}

/// Splits a request body into the texts its prompt tokens come from, for any endpoint,
/// with the tokens of its framing and non-text parts counted for `model`.
pub fn prompt_parts<'a>(
    endpoint: &Endpoint,
    model: &str,
    body: &'a Map<String, Value>,
) -> PromptParts<'a> {
    let media = Media::of_model(model);
    let mut parts = PromptParts::default();
    match endpoint {
        Endpoint::ChatCompletions => {
            parts.overhead = REPLY_PRIMER;
            for m in body
                .get("messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                parts.overhead = parts.overhead.saturating_add(PER_MESSAGE + 1); // the role
                if let Some(name) = m.get("name").and_then(Value::as_str) {
                    parts.texts.push(Cow::Borrowed(name));
                    parts.overhead = parts.overhead.saturating_add(1);
                }
                if let Some(c) = m.get("content") {
                    parts.push_content(c, &media);
                }
                if m.get("audio").is_some_and(|a| !a.is_null()) {
                    // An earlier spoken answer, referred to by id: unseen, like a file.
                    parts.overhead = parts.overhead.saturating_add(FILE_WITHOUT_DATA);
                }
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    parts.push_json(Some(call));
                }
                if let Some(message) = m.as_object() {
                    parts.push_unlisted(message, &["name", "content", "audio", "tool_calls"]);
                }
            }
            parts.push_chat_tools(body.get("tools"), model);
            parts.push_json(body.get("response_format"));
            parts.push_unlisted(body, &["messages", "tools", "response_format"]);
        }
        Endpoint::Completions => {
            parts.push_list(body.get("prompt"));
            parts.push_unlisted(body, &["prompt"]);
        }
        Endpoint::Embeddings => {
            parts.push_list(body.get("input"));
            parts.push_unlisted(body, &["input"]);
        }
        Endpoint::Responses => {
            if let Some(s) = body.get("instructions").and_then(Value::as_str) {
                parts.texts.push(Cow::Borrowed(s));
            }
            match body.get("input") {
                Some(Value::String(s)) => parts.texts.push(Cow::Borrowed(s)),
                Some(Value::Array(items)) => {
                    for item in items {
                        if let Some(c) = item.get("content") {
                            parts.push_content(c, &media);
                        }
                        // `arguments`, `output`, a custom tool's `input`, a reasoning
                        // `summary`, and whatever a new item type carries.
                        if let Some(object) = item.as_object() {
                            parts.push_unlisted(object, &["content"]);
                        }
                    }
                }
                _ => {}
            }
            parts.push_json(body.get("tools"));
            parts.push_json(body.get("text").and_then(|t| t.get("format")));
            parts.push_unlisted(body, &["instructions", "input", "tools", "text"]);
        }
        Endpoint::ListModels | Endpoint::GetModel(_) => {}
    }
    parts.texts.retain(|t| !t.is_empty());
    parts
}

/// What the gateway keeps of a request's prompt for an estimate: every text whole up to
/// [`MAX_PROMPT_SAMPLE`] bytes, else slices at positions drawn from a seed no client can
/// predict; framing and media tokens are counted in full.
pub fn prompt_sample(endpoint: &Endpoint, model: &str, body: &Map<String, Value>) -> PromptSample {
    let parts = prompt_parts(endpoint, model, body);
    PromptSample {
        texts: TextSample::of_texts(&parts.texts, MAX_PROMPT_SAMPLE, unpredictable_seed()),
        overhead: parts.overhead,
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

    /// The encoding a model uses (see [`super::uses_cl100k`]).
    pub(super) fn encoding(model: &str) -> &'static CoreBPE {
        if super::uses_cl100k(model) {
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
    /// (chat function tools as OpenAI renders them, other tool definitions as their JSON
    /// text, an approximation; media at the most they can cost).
    pub fn prompt(endpoint: &Endpoint, model: &str, body: &Map<String, Value>) -> u64 {
        let PromptParts { texts, overhead } = prompt_parts(endpoint, model, body);
        texts
            .iter()
            .map(|t| count(model, t))
            .fold(overhead, u64::saturating_add)
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
        let b = body(json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "name": "ann", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": " there"}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]}
        ]}));
        let p = prompt_parts(&Endpoint::ChatCompletions, "gpt-4o", &b);
        assert_eq!(p.texts, ["Be brief.", "ann", "Hi there", "No."]);
        assert_eq!(p.overhead, 3 + 3 * (3 + 1) + 1);
    }

    #[test]
    fn other_endpoint_parts() {
        let b = body(json!({"prompt": [[1, 2, 3], [4]]}));
        let p = prompt_parts(&Endpoint::Completions, "m", &b);
        assert_eq!((p.texts.len(), p.overhead), (0, 4));
        let b = body(json!({"input": ["a", "b"]}));
        let p = prompt_parts(&Endpoint::Embeddings, "m", &b);
        assert_eq!(p.texts, ["a", "b"]);
        let b = body(json!({"instructions": "x", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "y"}]},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{\"a\":1}"},
            {"type": "function_call_output", "call_id": "c", "output": "done"}
        ]}));
        let p = prompt_parts(&Endpoint::Responses, "m", &b);
        assert_eq!(p.texts, ["x", "y", "f", "{\"a\":1}", "done"]);
    }

    #[test]
    fn schemas_and_tool_calls_are_counted_as_json() {
        let b = body(json!({"messages": [
            {"role": "assistant", "content": null, "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
        ], "tools": [{"type": "function"}], "response_format": {"type": "json_object"}}));
        let p = prompt_parts(&Endpoint::ChatCompletions, "gpt-4o", &b);
        assert_eq!(p.texts.len(), 3);
        assert!(p.texts[0].contains("\"arguments\":\"{}\""));
        assert_eq!(p.texts[2], r#"{"type":"json_object"}"#);
    }

    #[test]
    fn function_tools_are_rendered_and_what_the_rendering_omits_is_json() {
        let b = body(json!({"messages": [], "tools": [
            {"type": "function", "function": {"name": "f", "description": "Does f.", "parameters": {
                "type": "object", "required": ["a"], "properties": {
                    "a": {"type": "string", "description": "An a.", "enum": ["x", "y"]},
                    "b": {"type": "array", "items": {"type": "integer"}}}}}},
            {"type": "custom", "custom": {"name": "g"}}
        ]}));
        let p = prompt_parts(&Endpoint::ChatCompletions, "gpt-4o", &b);
        assert_eq!(
            p.texts,
            [
                "f:Does f",
                "a:string:An a",
                "x",
                "y",
                "b:array:",
                r#"{"type":"integer"}"#,
                r#"{"type":"custom","custom":{"name":"g"}}"#
            ]
        );
        // primer, tools end, function start, properties start, `a` with 2 enum values, `b`.
        assert_eq!(p.overhead, 3 + 12 + 7 + 3 + 2 * 3 + 3);
        let cl100k = prompt_parts(&Endpoint::ChatCompletions, "gpt-4", &b);
        assert_eq!(cl100k.overhead, p.overhead + 3);
    }

    fn media_overhead(model: &str, parts: Value) -> u64 {
        let b = body(json!({"messages": [{"role": "user", "content": parts}]}));
        let p = prompt_parts(&Endpoint::ChatCompletions, model, &b);
        p.overhead - (3 + 3 + 1)
    }

    #[test]
    fn images_count_at_the_most_their_detail_costs() {
        let image = |detail: &str| json!([{"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": detail}}]);
        // OpenAI's tile rules: 85 + 170 per tile for gpt-4o, at most 8 tiles.
        assert_eq!(media_overhead("gpt-4o", image("low")), 85);
        assert_eq!(media_overhead("gpt-4o", image("high")), 85 + 170 * 8);
        assert_eq!(media_overhead("gpt-4o", image("auto")), 1445);
        // gpt-4o-mini counts images at ~33x the tokens, to price them like gpt-4o.
        assert_eq!(media_overhead("gpt-4o-mini", image("low")), 2833);
        assert_eq!(
            media_overhead("gpt-4o-mini", image("high")),
            2833 + 5667 * 8
        );
        // Patch models: at most 1,536 patches times the model's multiplier.
        assert_eq!(media_overhead("gpt-4.1-nano", image("high")), 3779);
        assert_eq!(media_overhead("o3", image("high")), 75 + 150 * 8);
        assert_eq!(media_overhead("claude-sonnet-4", image("low")), 1600);
        let responses = body(json!({"input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}]}]}));
        let p = prompt_parts(&Endpoint::Responses, "gpt-4o", &responses);
        assert_eq!((p.texts.len(), p.overhead), (0, 85));
    }

    #[test]
    fn audio_and_files_count_from_their_bytes() {
        // 4,000 base64 chars = 3,000 bytes: 3 s of 8 kbit/s MP3 at 10 tokens a second.
        let mp3 = json!([{"type": "input_audio", "input_audio": {"data": "A".repeat(4000), "format": "mp3"}}]);
        assert_eq!(media_overhead("gpt-4o-audio-preview", mp3.clone()), 30);
        assert_eq!(media_overhead("gemini-2.5-flash", mp3), 96);
        let wav = json!([{"type": "input_audio", "input_audio": {"data": "A".repeat(32_000), "format": "wav"}}]);
        assert_eq!(media_overhead("gpt-4o-audio-preview", wav), 30);
        let file = |f: Value| json!([{"type": "file", "file": f}]);
        assert_eq!(
            media_overhead("gpt-4o", file(json!({"file_id": "file-1"}))),
            FILE_WITHOUT_DATA
        );
        let data = format!("data:application/pdf;base64,{}", "A".repeat(40_000));
        assert_eq!(
            media_overhead("gpt-4o", file(json!({"file_data": data}))),
            30_000
        );
        assert_eq!(
            media_overhead("gpt-4o", file(json!({"file_data": "AAAA"}))),
            FILE_WITHOUT_DATA,
            "a tiny file still counts as a page"
        );
    }

    #[test]
    fn prompt_sample_keeps_small_prompts_whole_and_bounds_large_ones() {
        let b = body(json!({"messages": [{"role": "user", "content": "Hello"}]}));
        let s = prompt_sample(&Endpoint::ChatCompletions, "gpt-4o", &b);
        assert_eq!(s.texts.pieces, ["Hello"]);
        assert!(s.texts.is_whole());
        assert_eq!(s.overhead, 7);
        let big = "word ".repeat(200_000);
        let b = body(json!({"messages": [{"role": "user", "content": big}]}));
        let s = prompt_sample(&Endpoint::ChatCompletions, "gpt-4o", &b);
        assert_eq!(s.texts.total_bytes, 1_000_000);
        assert!(s.texts.kept_bytes() <= MAX_PROMPT_SAMPLE as u64);
        assert!(s.texts.kept_bytes() >= MAX_PROMPT_SAMPLE as u64 / 2);
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
