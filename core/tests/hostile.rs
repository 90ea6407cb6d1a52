//! Breaks found by a hostile review after issue 7: generated text a client receives in a
//! stream that is cut before its final count must be billed (README, "Cut streams"), but
//! some kinds of delta are never collected, so the cut call records 0 output tokens.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tollgate_core::sse::decode_all;
use tollgate_core::usage::{Format, StreamMeter};

/// Bytes of generated text the meter kept after `stream`, which ends without its marker.
fn text_kept(format: Format, stream: &str) -> u64 {
    let mut meter = StreamMeter::new(format);
    for event in decode_all(stream.as_bytes()) {
        meter.on_event(&event);
    }
    assert!(!meter.ended(), "the stream is cut");
    meter.text().sample().total_bytes
}

const REASONING: &str = "Let me think about this step by step before answering.";

#[test]
fn deepseek_reasoning_content_received_before_a_cut_is_billed() {
    // deepseek-reasoner streams its chain of thought in `reasoning_content`, billed as output.
    let stream = format!(
        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":null,\"reasoning_content\":\"{REASONING}\"}}}}]}}\n\n"
    );
    assert!(
        text_kept(Format::OpenAiChat, &stream) >= REASONING.len() as u64,
        "reasoning text sent to the client is not kept for the estimate"
    );
}

#[test]
fn chat_refusal_received_before_a_cut_is_billed() {
    let stream = format!(
        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"refusal\":\"{REASONING}\"}}}}]}}\n\n"
    );
    assert!(text_kept(Format::OpenAiChat, &stream) >= REASONING.len() as u64);
}

#[test]
fn responses_reasoning_summary_and_refusal_received_before_a_cut_are_billed() {
    for kind in [
        "response.reasoning_summary_text.delta",
        "response.refusal.delta",
        "response.custom_tool_call_input.delta",
    ] {
        let stream = format!(
            "event: {kind}\ndata: {{\"type\":\"{kind}\",\"item_id\":\"x\",\"output_index\":0,\"delta\":\"{REASONING}\"}}\n\n"
        );
        assert!(
            text_kept(Format::OpenAiResponses, &stream) >= REASONING.len() as u64,
            "{kind} text sent to the client is not kept for the estimate"
        );
    }
}
