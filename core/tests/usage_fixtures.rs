//! Golden tests: every provider sample normalizes to the usage worked out by hand from
//! the mapping in `tests/fixtures/README.md`, and streams give the same answer whatever
//! their chunking.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tollgate_core::sse::{Decoder, decode_all};
use tollgate_core::usage::{EventRole, Format, StreamMeter, Usage, from_body};

fn fixture(path: &str) -> Vec<u8> {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// (uncached input, cache read, cache write, output, reasoning)
fn usage(u: Usage) -> (u64, u64, u64, u64, u64) {
    (
        u.input_uncached,
        u.cache_read,
        u.cache_write,
        u.output,
        u.reasoning,
    )
}

fn body(format: Format, path: &str) -> (u64, u64, u64, u64, u64) {
    usage(from_body(format, &fixture(path)).unwrap_or_else(|| panic!("{path}: no usage")))
}

fn stream(format: Format, path: &str) -> Option<(u64, u64, u64, u64, u64)> {
    stream_in_chunks(format, &fixture(path), 0)
}

/// Meters `bytes` fed in chunks of `chunk` bytes (0: all at once).
fn stream_in_chunks(
    format: Format,
    bytes: &[u8],
    chunk: usize,
) -> Option<(u64, u64, u64, u64, u64)> {
    let mut meter = StreamMeter::new(format);
    let mut decoder = Decoder::default();
    let size = if chunk == 0 {
        bytes.len().max(1)
    } else {
        chunk
    };
    for piece in bytes.chunks(size) {
        decoder.feed(piece, |e, _| {
            meter.on_event(&e);
        });
    }
    if let Some(e) = decoder.finish() {
        meter.on_event(&e);
    }
    meter.usage().map(usage)
}

#[test]
fn openai_bodies() {
    assert_eq!(
        body(Format::OpenAiChat, "openai/chat-completion.json"),
        (86, 1920, 0, 480, 448)
    );
    assert_eq!(
        body(Format::OpenAiChat, "openai/chat-completion-n2.json"),
        (24, 0, 0, 21, 0)
    );
    assert_eq!(
        body(Format::OpenAiChat, "openai/chat-completion-tool-call.json"),
        (82, 0, 0, 23, 0)
    );
    assert_eq!(
        body(Format::OpenAiChat, "openai/completion-legacy.json"),
        (5, 0, 0, 7, 0)
    );
    assert_eq!(
        body(Format::OpenAiChat, "openai/embeddings.json"),
        (8, 0, 0, 0, 0)
    );
    assert_eq!(
        body(Format::OpenAiResponses, "openai/responses.json"),
        (212, 3200, 0, 466, 448)
    );
}

#[test]
fn openai_streams() {
    assert_eq!(
        stream(
            Format::OpenAiChat,
            "openai/chat-completion-stream-include-usage.sse"
        ),
        Some((158, 1152, 0, 9, 0))
    );
    // Without include_usage OpenAI reports nothing: the gateway must ask for it.
    assert_eq!(
        stream(Format::OpenAiChat, "openai/chat-completion-stream.sse"),
        None
    );
    assert_eq!(
        stream(
            Format::OpenAiChat,
            "openai/chat-completion-tool-call-stream.sse"
        ),
        None
    );
    assert_eq!(
        stream(Format::OpenAiResponses, "openai/responses-stream.sse"),
        Some((212, 3200, 0, 466, 448))
    );
}

#[test]
fn anthropic() {
    let expected = (31, 2213, 412, 74, 0);
    assert_eq!(
        body(Format::Anthropic, "anthropic/messages-response.json"),
        expected
    );
    assert_eq!(
        stream(Format::Anthropic, "anthropic/messages-stream.sse"),
        Some(expected)
    );
    assert_eq!(
        stream(
            Format::Anthropic,
            "anthropic/messages-stream-wire-padding.sse"
        ),
        Some(expected)
    );
    // An overloaded stream stops after message_start: input known, output is the placeholder.
    assert_eq!(
        stream(
            Format::Anthropic,
            "anthropic/messages-stream-error-overloaded.sse"
        ),
        Some((18, 0, 0, 1, 0))
    );
}

#[test]
fn gemini_openai_compatible() {
    assert_eq!(
        stream(
            Format::OpenAiChatReasoningApart,
            "gemini/openai-compat-chat-stream.sse"
        ),
        Some((196, 0, 0, 161, 127))
    );
}

#[test]
fn deepseek() {
    assert_eq!(
        body(Format::OpenAiChat, "deepseek/chat-completion.json"),
        (128, 1408, 0, 27, 0)
    );
    assert_eq!(
        body(Format::OpenAiChat, "deepseek/chat-completion-reasoner.json"),
        (17, 0, 0, 47, 38)
    );
    assert_eq!(
        stream(
            Format::OpenAiChat,
            "deepseek/chat-stream-reasoner-include-usage.sse"
        ),
        Some((17, 0, 0, 47, 38))
    );
    assert_eq!(
        stream(
            Format::OpenAiChat,
            "deepseek/chat-stream-usage-on-finish-chunk.sse"
        ),
        Some((10, 1280, 0, 9, 0))
    );
}

#[test]
fn xai_and_vllm() {
    // xAI chat: 311 reasoning tokens outside completion_tokens, billed as output.
    assert_eq!(
        body(Format::OpenAiChatReasoningApart, "xai/chat-completion.json"),
        (74, 1152, 0, 320, 311)
    );
    assert_eq!(
        stream(
            Format::OpenAiChat,
            "vllm/chat-completion-stream-include-usage.sse"
        ),
        Some((42, 0, 0, 10, 0))
    );
}

#[test]
fn every_stream_fixture_meters_the_same_in_any_chunking() {
    let cases = [
        (
            Format::OpenAiChat,
            "openai/chat-completion-stream-include-usage.sse",
        ),
        (Format::OpenAiResponses, "openai/responses-stream.sse"),
        (
            Format::Anthropic,
            "anthropic/messages-stream-wire-padding.sse",
        ),
        (
            Format::OpenAiChatReasoningApart,
            "gemini/openai-compat-chat-stream.sse",
        ),
        (
            Format::OpenAiChat,
            "deepseek/chat-stream-usage-on-finish-chunk.sse",
        ),
    ];
    for (format, path) in cases {
        let bytes = fixture(path);
        let whole = stream_in_chunks(format, &bytes, 0);
        assert!(whole.is_some(), "{path}");
        for chunk in [1, 2, 3, 7, 64, 1000] {
            assert_eq!(
                stream_in_chunks(format, &bytes, chunk),
                whole,
                "{path} in {chunk}-byte chunks"
            );
        }
    }
}

#[test]
fn only_the_trailing_usage_chunk_is_usage_only() {
    let events = decode_all(&fixture("openai/chat-completion-stream-include-usage.sse"));
    let mut meter = StreamMeter::new(Format::OpenAiChat);
    let roles: Vec<EventRole> = events.iter().map(|e| meter.on_event(e)).collect();
    assert_eq!(
        roles.iter().filter(|r| **r == EventRole::UsageOnly).count(),
        1
    );
    assert_eq!(
        roles[roles.len() - 2],
        EventRole::UsageOnly,
        "just before [DONE]"
    );
    assert!(meter.ended());
    // DeepSeek's usage on the finish chunk must never be stripped: it carries a choice.
    let events = decode_all(&fixture("deepseek/chat-stream-usage-on-finish-chunk.sse"));
    let mut meter = StreamMeter::new(Format::OpenAiChat);
    assert!(events.iter().all(|e| meter.on_event(e) == EventRole::Other));
}
