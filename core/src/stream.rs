//! A streamed response on its way to the client: metered event by event, and rewritten
//! where the gateway must (dropping the usage chunk it asked for, translating Anthropic).
//!
//! Chunks are never held for long: bytes pass as soon as the events they belong to are
//! complete. Only the unfinished tail of an event is held back, and only when rewriting,
//! and never more than [`MAX_HELD`] bytes of it.

use crate::anthropic::StreamTranslator;
use crate::sse::Decoder;
use crate::usage::{EventRole, Format, StreamMeter};

/// Most bytes of an unfinished event held back while rewriting; a larger event cannot be
/// the small usage-only chunk, so it is let through.
pub const MAX_HELD: usize = 64 * 1024;

/// What to do to the stream besides metering it.
#[derive(Debug)]
pub enum Rewrite {
    /// Pass every byte as it came.
    Passthrough,
    /// Undo the gateway's `include_usage`: drop OpenAI's usage-only chunk and the
    /// `"usage":null` it adds to every other chunk, so the client gets the stream it asked for.
    UnrequestedUsage,
    /// Translate Anthropic events into OpenAI chunks.
    FromAnthropic(Box<StreamTranslator>),
}

/// A change to one complete event, by absolute stream offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edit {
    /// Remove the event.
    Drop,
    /// Remove its top-level `"usage":null` member.
    RemoveNullUsage,
}

/// The state of one streamed response.
#[derive(Debug)]
pub struct StreamRewriter {
    decoder: Decoder,
    meter: StreamMeter,
    rewrite: Rewrite,
    /// Bytes received but not yet passed on, starting at stream offset `held_from`.
    held: Vec<u8>,
    held_from: u64,
    /// Events to change, as (start, end, edit) in absolute offsets, in stream order.
    edits: Vec<(u64, u64, Edit)>,
    /// Where the last complete event ended.
    last_end: u64,
    /// Everything before this offset has been passed on already and cannot be changed.
    released: u64,
}

impl StreamRewriter {
    /// A stream in `format`, rewritten as `rewrite` says.
    pub fn new(format: Format, rewrite: Rewrite) -> Self {
        Self {
            decoder: Decoder::default(),
            meter: StreamMeter::new(format),
            rewrite,
            held: Vec::new(),
            held_from: 0,
            edits: Vec::new(),
            last_end: 0,
            released: 0,
        }
    }

    /// What the stream reported so far.
    pub fn meter(&self) -> &StreamMeter {
        &self.meter
    }

    /// Takes the next chunk; returns `None` to pass it unchanged, or the bytes to send instead.
    pub fn on_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        let mut translated = String::new();
        let meter = &mut self.meter;
        let edits = &mut self.edits;
        let last_end = &mut self.last_end;
        let released = self.released;
        let rewrite = &mut self.rewrite;
        // `editable` is false for an unterminated final event: its bytes may have gone already.
        let mut on_event = |event: crate::sse::Event, end: u64, editable: bool| {
            let role = meter.on_event(&event);
            let start = *last_end;
            *last_end = end;
            match rewrite {
                Rewrite::Passthrough => {}
                Rewrite::UnrequestedUsage => {
                    if editable && start >= released {
                        match role {
                            EventRole::UsageOnly => edits.push((start, end, Edit::Drop)),
                            _ if has_null_usage(&event.data) => {
                                edits.push((start, end, Edit::RemoveNullUsage))
                            }
                            _ => {}
                        }
                    }
                }
                Rewrite::FromAnthropic(t) => translated.push_str(&t.on_event(&event)),
            }
        };
        self.decoder.feed(chunk, |e, end| on_event(e, end, true));
        if end_of_stream {
            let end = self.decoder.offset();
            if let Some(event) = self.decoder.finish() {
                on_event(event, end, false);
            }
        }
        match &self.rewrite {
            Rewrite::Passthrough => None,
            Rewrite::FromAnthropic(_) => Some(translated.into_bytes()),
            Rewrite::UnrequestedUsage => Some(self.release(chunk, end_of_stream)),
        }
    }

    /// The bytes that can go now, with edits applied; the rest of an unfinished event waits.
    fn release(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        self.held.extend_from_slice(chunk);
        let total = self.held_from + self.held.len() as u64;
        let mut upto = if end_of_stream { total } else { self.last_end };
        if total - upto > MAX_HELD as u64 {
            upto = total;
        }
        let at = |offset: u64| (offset - self.held_from) as usize;
        let mut out = Vec::with_capacity(at(upto));
        let mut pos = self.held_from;
        for &(start, end, edit) in self.edits.iter().filter(|(_, end, _)| *end <= upto) {
            out.extend_from_slice(&self.held[at(pos)..at(start)]);
            if edit == Edit::RemoveNullUsage {
                out.extend_from_slice(&remove_null_usage(&self.held[at(start)..at(end)]));
            }
            pos = end;
        }
        out.extend_from_slice(&self.held[at(pos)..at(upto)]);
        self.edits.retain(|(_, end, _)| *end > upto);
        self.held.drain(..at(upto));
        self.held_from = upto;
        self.released = self.released.max(upto);
        out
    }
}

/// The event's JSON has a top-level `"usage": null`.
fn has_null_usage(data: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(data)
        .ok()
        .and_then(|v| {
            v.as_object()
                .map(|o| o.get("usage") == Some(&serde_json::Value::Null))
        })
        .unwrap_or(false)
}

/// Removes the `"usage":null` member from an event's raw bytes, keeping every other byte.
///
/// Inside a JSON string a quote is always escaped, so an unescaped `"usage":null` is a member,
/// never text. The first one is taken: providers write `usage` at the top level only.
fn remove_null_usage(event: &[u8]) -> Vec<u8> {
    for pattern in [
        &b",\"usage\":null"[..],
        b",\"usage\": null",
        b"\"usage\":null,",
        b"\"usage\": null,",
    ] {
        if let Some(i) = event.windows(pattern.len()).position(|w| w == pattern) {
            let mut out = event[..i].to_vec();
            out.extend_from_slice(&event[i + pattern.len()..]);
            return out;
        }
    }
    event.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::Usage;

    fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/{path}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// Runs `bytes` through a rewriter in chunks of `size` (0: whole), with a 0-byte final call.
    fn run(
        format: Format,
        make: impl Fn() -> Rewrite,
        bytes: &[u8],
        size: usize,
    ) -> (Vec<u8>, Option<Usage>) {
        let mut r = StreamRewriter::new(format, make());
        let mut out = Vec::new();
        let size = if size == 0 { bytes.len().max(1) } else { size };
        for piece in bytes.chunks(size) {
            match r.on_chunk(piece, false) {
                Some(b) => out.extend(b),
                None => out.extend_from_slice(piece),
            }
        }
        if let Some(b) = r.on_chunk(&[], true) {
            out.extend(b);
        }
        (out, r.meter().usage())
    }

    #[test]
    fn unrequested_usage_is_removed_and_nothing_else() {
        let bytes = fixture("openai/chat-completion-stream-include-usage.sse");
        let (out, usage) = run(Format::OpenAiChat, || Rewrite::UnrequestedUsage, &bytes, 0);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("\"choices\":[],"), "usage chunk still there");
        assert!(!text.contains("\"usage\""), "usage:null still there");
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert_eq!(usage.map(|u| u.output), Some(9));
        // Everything else is byte for byte what the provider sent.
        let original = String::from_utf8(bytes).unwrap();
        let usage_chunk = original
            .split("\n\n")
            .find(|e| e.contains("\"choices\":[],"))
            .unwrap();
        let expected = original
            .replacen(&format!("{usage_chunk}\n\n"), "", 1)
            .replace(",\"usage\":null", "");
        assert_eq!(text, expected);
    }

    #[test]
    fn any_chunking_gives_the_same_output() {
        type Case = (Format, &'static str, fn() -> Rewrite);
        let cases: [Case; 4] = [
            (
                Format::OpenAiChat,
                "openai/chat-completion-stream-include-usage.sse",
                || Rewrite::UnrequestedUsage,
            ),
            (
                Format::OpenAiChat,
                "deepseek/chat-stream-usage-on-finish-chunk.sse",
                || Rewrite::UnrequestedUsage,
            ),
            (
                Format::Anthropic,
                "anthropic/messages-stream-wire-padding.sse",
                || Rewrite::FromAnthropic(Box::new(StreamTranslator::new("c", 1, false))),
            ),
            (
                Format::OpenAiChat,
                "openai/chat-completion-tool-call-stream.sse",
                || Rewrite::Passthrough,
            ),
        ];
        for (format, path, make) in cases {
            let bytes = fixture(path);
            let whole = run(format, make, &bytes, 0);
            for size in [1, 2, 5, 17, 100] {
                assert_eq!(
                    run(format, make, &bytes, size),
                    whole,
                    "{path} in {size}-byte chunks"
                );
            }
        }
    }

    #[test]
    fn passthrough_changes_nothing() {
        let bytes = fixture("openai/chat-completion-stream.sse");
        assert_eq!(
            run(Format::OpenAiChat, || Rewrite::Passthrough, &bytes, 7).0,
            bytes
        );
    }

    #[test]
    fn null_usage_removal_keeps_text_that_looks_like_it() {
        let event = br#"data: {"choices":[{"delta":{"content":"say \"usage\":null,"}}],"usage":null,"obfuscation":"x"}"#;
        assert_eq!(
            remove_null_usage(event),
            br#"data: {"choices":[{"delta":{"content":"say \"usage\":null,"}}],"obfuscation":"x"}"#
                .to_vec()
        );
        assert!(has_null_usage(r#"{"usage":null}"#));
        assert!(!has_null_usage(r#"{"usage":{"prompt_tokens":1}}"#));
        assert!(!has_null_usage(r#"{"choices":[]}"#));
    }

    #[test]
    fn huge_event_is_released_not_held() {
        let big = format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}]}}",
            "x".repeat(MAX_HELD * 2)
        );
        let mut r = StreamRewriter::new(Format::OpenAiChat, Rewrite::UnrequestedUsage);
        let out = r.on_chunk(big.as_bytes(), false).unwrap();
        assert_eq!(out.len(), big.len(), "held more than MAX_HELD");
        let rest = r.on_chunk(b"\n\ndata: [DONE]\n\n", true).unwrap();
        assert_eq!(rest, b"\n\ndata: [DONE]\n\n");
    }

    #[test]
    fn usage_chunk_split_across_calls_is_still_dropped() {
        let stream = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n";
        for size in 1..stream.len() {
            let (out, usage) = run(
                Format::OpenAiChat,
                || Rewrite::UnrequestedUsage,
                stream,
                size,
            );
            assert_eq!(
                out,
                b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n",
                "chunk size {size}"
            );
            assert_eq!(usage.map(|u| u.input_uncached), Some(3));
        }
    }
}
