//! The whole Anthropic translation, snapshotted: every fixture in
//! `fixtures/anthropic/` is read (the directory drives the tests, so a new fixture cannot
//! go unread), answers translated streamed and not, and representative requests.
//!
//! The snapshots in `snapshots/` are the expected values; each was checked by hand
//! against OpenAI's chat-completion (chunk) format and Anthropic's Messages format.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use tollgate_core::anthropic::{StreamTranslator, request, response};
use tollgate_core::sse::Decoder;

const MODEL: &str = "claude-sonnet";
const CREATED: u64 = 1_700_000_000;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/anthropic")
}

/// Every fixture, sorted, as (file stem, extension, bytes).
fn fixtures() -> Vec<(String, String, Vec<u8>)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let stem = p.file_stem().expect("stem").to_string_lossy().into_owned();
            let ext = p.extension().map(|e| e.to_string_lossy().into_owned());
            let bytes = std::fs::read(&p).expect("read");
            (stem, ext.unwrap_or_default(), bytes)
        })
        .collect()
}

/// The translator's output for `bytes` fed `split` bytes at a time.
fn translate_stream(bytes: &[u8], split: usize, include_usage: bool) -> String {
    let mut decoder = Decoder::default();
    let mut translator = StreamTranslator::new(MODEL, CREATED, include_usage);
    let mut out = String::new();
    for piece in bytes.chunks(split) {
        decoder.feed(piece, |event, _| out.push_str(&translator.on_event(&event)));
    }
    if let Some(event) = decoder.finish() {
        out.push_str(&translator.on_event(&event));
    }
    out
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON fixture")
}

#[test]
fn every_fixture_is_translated_and_snapshotted() {
    let mut read = Vec::new();
    for (stem, ext, bytes) in fixtures() {
        match (ext.as_str(), json_of_kind(&ext, &bytes).as_deref()) {
            ("sse", _) => stream_snapshot(&stem, &bytes),
            ("json", Some("message")) => {
                let out = response(&bytes, MODEL, CREATED).expect("a message translates");
                insta::assert_json_snapshot!(format!("response__{stem}"), json_of(&out));
            }
            ("json", Some("error")) => {
                // Errors are not messages: the gateway maps them apart (errors.rs).
                assert_eq!(response(&bytes, MODEL, CREATED), None, "{stem}");
            }
            ("json", Some("request")) => reference_request(&stem, &bytes),
            _ => panic!("{stem}.{ext}: no test knows this kind of fixture"),
        }
        read.push(format!("{stem}.{ext}"));
    }
    assert!(read.len() >= 6, "fixtures read: {read:?}");
}

/// What a JSON fixture is: an Anthropic answer's `type`, or `request`.
fn json_of_kind(ext: &str, bytes: &[u8]) -> Option<String> {
    if ext != "json" {
        return None;
    }
    let v = json_of(bytes);
    if v.get("messages").is_some() && v.get("max_tokens").is_some() {
        return Some("request".into());
    }
    v.get("type").and_then(Value::as_str).map(str::to_owned)
}

fn stream_snapshot(stem: &str, bytes: &[u8]) {
    let whole = translate_stream(bytes, bytes.len().max(1), true);
    for split in [1, 2, 3, 7, 64, 500] {
        assert_eq!(
            translate_stream(bytes, split, true),
            whole,
            "{stem} fed {split} bytes at a time"
        );
    }
    insta::assert_snapshot!(format!("stream__{stem}"), whole);
    if stem == "messages-stream" {
        // A client that did not ask for usage gets none, and no `usage: null` either.
        let without = translate_stream(bytes, 5, false);
        insta::assert_snapshot!(format!("stream_without_usage__{stem}"), without);
    }
}

/// Content as Anthropic accepts it either way: a string is one text block.
fn blocks(content: &Value) -> Value {
    match content {
        Value::String(s) => json!([{"type": "text", "text": s}]),
        other => other.clone(),
    }
}

/// Drops what OpenAI's format cannot express (prompt-cache breakpoints) and spells
/// message content as blocks, so the recorded request and the translation compare.
fn comparable(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(o) => {
                o.remove("cache_control");
                o.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    if let Some(messages) = v.get_mut("messages").and_then(Value::as_array_mut) {
        for m in messages {
            m["content"] = blocks(&m["content"]);
        }
    }
    if v.get("stream") == Some(&Value::Bool(false)) {
        v.as_object_mut().map(|o| o.remove("stream"));
    }
    v
}

/// The recorded Anthropic request, asked for in OpenAI's format: the translation must
/// produce it (up to what OpenAI's format cannot say).
fn reference_request(stem: &str, bytes: &[u8]) {
    let recorded = json_of(bytes);
    let mut messages: Vec<Value> = recorded["system"]
        .as_array()
        .expect("system blocks")
        .iter()
        .map(|b| json!({"role": "system", "content": b["text"]}))
        .collect();
    for m in recorded["messages"].as_array().expect("messages") {
        messages.push(json!({"role": m["role"], "content": m["content"]}));
    }
    let chat = json!({
        "model": MODEL,
        "max_tokens": recorded["max_tokens"],
        "stream": recorded["stream"],
        "messages": messages,
    });
    let translated = request(
        chat.as_object().expect("object"),
        recorded["model"].as_str().expect("model"),
    )
    .expect("translates");
    assert_eq!(
        comparable(translated.clone()),
        comparable(recorded),
        "{stem}"
    );
    insta::assert_json_snapshot!(format!("request__{stem}"), translated);
}

fn chat(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("object")
}

#[test]
fn request_with_tools_images_and_limits() {
    let body = chat(json!({
        "model": MODEL,
        "stream": true,
        "temperature": 1.6,
        "top_p": 0.9,
        "max_completion_tokens": 300,
        "stop": "END",
        "user": "user-42",
        "parallel_tool_calls": false,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "tools": [{"type": "function", "function": {
            "name": "get_weather",
            "description": "Weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        }}],
        "messages": [
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this, and the weather in Paris?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18°C, cloudy"}
        ]
    }));
    let out = request(&body, "claude-sonnet-4-5-20250929").expect("translates");
    insta::assert_json_snapshot!(out);
}

#[test]
fn request_with_defaults() {
    let body = chat(json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hello"}],
    }));
    let out = request(&body, "claude-sonnet-4-5-20250929").expect("translates");
    insta::assert_json_snapshot!(out);
}
