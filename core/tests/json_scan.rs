//! The streaming scanner against the whole-body parsers: every provider fixture split at
//! every byte reads the same usage and text, generated documents in any chunking give the
//! same captures, and arbitrary bytes never panic.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use serde_json::{Map, Value};
use tollgate_core::json_scan::{
    JsonScanner, Member, RAW_TEXT_MEMBERS, Scanned, TEXT_MEMBERS, Verdict,
};
use tollgate_core::usage::{Format, from_body, output_text_of_body};

const FORMATS: [Format; 4] = [
    Format::OpenAiChat,
    Format::OpenAiChatReasoningApart,
    Format::OpenAiResponses,
    Format::Anthropic,
];

fn fixture(path: &str) -> Vec<u8> {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// Every `.json` fixture, as (provider/file, bytes).
fn json_fixtures() -> Vec<(String, Vec<u8>)> {
    let root = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in std::fs::read_dir(&root).expect("fixtures") {
        let dir = dir.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).expect("provider dir") {
            let file = file.expect("entry").path();
            if file.extension().is_some_and(|e| e == "json") {
                let name = file.strip_prefix(&root).expect("under root");
                out.push((
                    name.display().to_string(),
                    std::fs::read(&file).expect("read"),
                ));
            }
        }
    }
    out.sort();
    out
}

/// Scans `bytes` cut at each of `cuts` (positions taken modulo the length).
fn scan_split(bytes: &[u8], cuts: &[usize]) -> Scanned {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.sort_unstable();
    let mut scanner = JsonScanner::default();
    let mut start = 0;
    for cut in at {
        scanner.feed(&bytes[start..cut]);
        start = cut;
    }
    scanner.feed(&bytes[start..]);
    scanner.finish()
}

/// What chunking must not change.
fn summary(s: &Scanned) -> (Verdict, Vec<(&'static str, Member)>, String, u64, u64) {
    (
        s.verdict,
        s.members.clone(),
        s.text.sample().pieces.concat().to_owned(),
        s.text.sample().total_bytes,
        s.bytes,
    )
}

#[test]
fn every_json_fixture_reads_the_usage_of_the_whole_body_split_at_every_byte() {
    let fixtures = json_fixtures();
    assert!(fixtures.len() >= 15, "found {}", fixtures.len());
    let mut with_usage = 0;
    for (name, bytes) in &fixtures {
        let whole = scan_split(bytes, &[]);
        assert_eq!(whole.verdict, Verdict::Json, "{name}");
        for format in FORMATS {
            assert_eq!(
                whole.usage(format),
                from_body(format, bytes),
                "{name} as {format:?}"
            );
        }
        if FORMATS.iter().any(|f| whole.usage(*f).is_some()) {
            with_usage += 1;
        }
        let expected = summary(&whole);
        for cut in 0..=bytes.len() {
            assert_eq!(
                summary(&scan_split(bytes, &[cut])),
                expected,
                "{name} cut at {cut}"
            );
        }
        let every_byte: Vec<usize> = (0..bytes.len()).collect();
        assert_eq!(
            summary(&scan_split(bytes, &every_byte)),
            expected,
            "{name} bytewise"
        );
    }
    assert!(with_usage >= 10, "only {with_usage} fixtures carried usage");
}

/// Bytes of `s` sorted: the same text whatever order its pieces came in.
fn sorted(s: &str) -> Vec<u8> {
    let mut b = s.as_bytes().to_vec();
    b.sort_unstable();
    b
}

#[test]
fn fixture_text_agrees_with_the_whole_body_reader() {
    let answers = [
        ("openai/chat-completion.json", Format::OpenAiChat),
        ("openai/chat-completion-n2.json", Format::OpenAiChat),
        ("openai/chat-completion-tool-call.json", Format::OpenAiChat),
        ("openai/completion-legacy.json", Format::OpenAiChat),
        ("openai/embeddings.json", Format::OpenAiChat),
        ("openai/models-list.json", Format::OpenAiChat),
        ("openai/error-400-invalid-request.json", Format::OpenAiChat),
        ("openai/error-401-invalid-api-key.json", Format::OpenAiChat),
        (
            "openai/error-429-rate-limit-exceeded.json",
            Format::OpenAiChat,
        ),
        ("openai/responses.json", Format::OpenAiResponses),
        ("anthropic/messages-response.json", Format::Anthropic),
        ("anthropic/error-529-overloaded.json", Format::Anthropic),
        ("deepseek/chat-completion.json", Format::OpenAiChat),
        ("xai/chat-completion.json", Format::OpenAiChatReasoningApart),
    ];
    let mut non_empty = 0;
    for (path, format) in answers {
        let bytes = fixture(path);
        let body = output_text_of_body(format, &bytes);
        let scanned = scan_split(&bytes, &[]).text;
        // The whole-body reader takes a tool call's arguments before its name.
        assert_eq!(
            sorted(&scanned.sample().pieces.concat()),
            sorted(&body.sample().pieces.concat()),
            "{path}"
        );
        assert_eq!(
            scanned.sample().total_bytes,
            body.sample().total_bytes,
            "{path}"
        );
        if !body.is_empty() {
            non_empty += 1;
        }
    }
    assert_eq!(non_empty, 8);
}

#[test]
fn deepseek_reasoning_is_counted_as_generated_text() {
    // Both readers keep `reasoning_content`, which DeepSeek bills as output.
    let bytes = fixture("deepseek/chat-completion-reasoner.json");
    let body = output_text_of_body(Format::OpenAiChat, &bytes);
    let scanned = scan_split(&bytes, &[]).text;
    let expected = "9.11 is smaller than 9.9.Compare the tenths digit first: 9.11 has 1 tenth, 9.9 has 9 tenths. 1 < 9, so 9.11 < 9.9.";
    assert_eq!(body.sample().pieces.concat(), expected);
    assert_eq!(scanned.sample().pieces.concat(), expected);
}

#[test]
fn anthropic_tool_use_text_agrees_with_the_whole_body_reader() {
    let bytes = br#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"Checking."},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"location":"Boston, MA","unit":"fahrenheit"}}],"usage":{"input_tokens":10,"output_tokens":20}}"#;
    let body = output_text_of_body(Format::Anthropic, bytes);
    let scanned = scan_split(bytes, &[]).text;
    // The scanner also counts the tool's name, which is generated output too.
    assert_eq!(
        scanned.sample().pieces.concat(),
        format!(
            "Checking.get_weather{}",
            &body.sample().pieces.concat()["Checking.".len()..]
        )
    );
    assert_eq!(
        body.sample().pieces.concat(),
        r#"Checking.{"location":"Boston, MA","unit":"fahrenheit"}"#
    );
}

/// An embeddings answer of `inputs` vectors of `dims` floats, as OpenAI formats it.
fn embeddings_answer(inputs: usize, dims: usize) -> Vec<u8> {
    let mut out = String::from("{\n  \"object\": \"list\",\n  \"data\": [\n");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..inputs {
        out.push_str("    {\n      \"object\": \"embedding\",\n      \"index\": ");
        out.push_str(&i.to_string());
        out.push_str(",\n      \"embedding\": [\n");
        for d in 0..dims {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = (x % 2_000_000) as f64 / 1_000_000.0 - 1.0;
            out.push_str(&format!("        {v:.8}"));
            out.push_str(if d + 1 < dims { ",\n" } else { "\n" });
        }
        out.push_str("      ]\n    }");
        out.push_str(if i + 1 < inputs { ",\n" } else { "\n" });
    }
    out.push_str("  ],\n  \"model\": \"text-embedding-3-large\",\n  \"usage\": {\n    \"prompt_tokens\": 2400,\n    \"total_tokens\": 2400\n  }\n}\n");
    out.into_bytes()
}

#[test]
fn a_twenty_mebibyte_embeddings_answer_is_metered_in_chunks() {
    let bytes = embeddings_answer(300, 4096);
    assert!(bytes.len() > 20 << 20, "{} bytes", bytes.len());
    let mut scanner = JsonScanner::default();
    for piece in bytes.chunks(16 * 1024) {
        scanner.feed(piece);
    }
    let scanned = scanner.finish();
    assert_eq!(scanned.verdict, Verdict::Json);
    assert_eq!(scanned.bytes, bytes.len() as u64);
    let usage = scanned.usage(Format::OpenAiChat).expect("usage");
    assert_eq!((usage.input_uncached, usage.output), (2400, 0));
    assert_eq!(Some(usage), from_body(Format::OpenAiChat, &bytes));
    assert!(scanned.text.is_empty());
}

/// Member names the generator favours: the ones the scanner looks for, and others.
const NAMES: &[&str] = &[
    "usage",
    "content",
    "text",
    "input",
    "name",
    "arguments",
    "id",
    "choices",
    "data",
];

fn json_value() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        "[a-z ]{0,12}",
        "\\PC{0,8}",
        Just("quote \" back \\ nl \n tab \t ctl \u{1} nul \u{0}".to_owned()),
        Just("emoji 😀 é 中".to_owned()),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1.0e6f64..1.0e6).prop_map(Value::from),
        text.prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        let name = prop_oneof![
            proptest::sample::select(NAMES).prop_map(str::to_owned),
            "[a-zA-Z_]{1,6}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((name, inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A provider-like answer: a top-level object, usually with usage among other members.
fn answer() -> impl Strategy<Value = Value> {
    (
        proptest::collection::vec((proptest::sample::select(NAMES), json_value()), 0..6),
        proptest::option::of(json_value()),
    )
        .prop_map(|(members, usage)| {
            let mut map: Map<String, Value> = members
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            if let Some(u) = usage {
                map.insert("usage".into(), u);
            }
            Value::Object(map)
        })
}

/// The generated text of a document, walked as a tree: strings of text members, and
/// the compact JSON of tool-input containers without looking inside them.
fn text_of(v: &Value, out: &mut String) {
    match v {
        Value::Object(members) => {
            for (name, value) in members {
                let text = TEXT_MEMBERS.contains(&name.as_str());
                let raw = RAW_TEXT_MEMBERS.contains(&name.as_str());
                match value {
                    Value::String(s) if text || raw => out.push_str(s),
                    Value::Object(_) | Value::Array(_) if raw => out.push_str(&value.to_string()),
                    _ => text_of(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| text_of(item, out)),
        _ => {}
    }
}

/// A one-byte edit of `bytes`: delete, replace or insert at `at`.
fn mutate(bytes: &[u8], op: u8, at: usize, byte: u8) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let at = at % (out.len() + 1);
    match op % 3 {
        0 if at < out.len() => {
            out.remove(at);
        }
        1 if at < out.len() => out[at] = byte,
        _ => out.insert(at, byte),
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_chunking_of_an_answer_gives_the_same_captures(
        doc in answer(),
        pretty in any::<bool>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..24),
    ) {
        let bytes = if pretty {
            serde_json::to_vec_pretty(&doc).unwrap()
        } else {
            serde_json::to_vec(&doc).unwrap()
        };
        let whole = scan_split(&bytes, &[]);
        prop_assert_eq!(whole.verdict, Verdict::Json);
        prop_assert_eq!(summary(&scan_split(&bytes, &cuts)), summary(&whole));
        let reparsed: Value = serde_json::from_slice(&bytes).unwrap();
        let captured = match &whole.members[0] {
            (_, Member::Captured(raw)) => Some(serde_json::from_slice::<Value>(raw).unwrap()),
            (_, Member::Absent) => None,
            (_, other) => return Err(TestCaseError::fail(format!("usage {other:?}"))),
        };
        prop_assert_eq!(captured.as_ref(), reparsed.get("usage"));
        for format in FORMATS {
            prop_assert_eq!(whole.usage(format), from_body(format, &bytes));
        }
        if !pretty {
            let mut expected = String::new();
            text_of(&doc, &mut expected);
            prop_assert_eq!(whole.text.sample().pieces.concat(), expected.as_str());
        }
    }

    #[test]
    fn one_byte_edits_are_judged_as_serde_json_judges_them(
        doc in answer(),
        op in any::<u8>(),
        at in any::<usize>(),
        byte in prop_oneof![any::<u8>(), proptest::sample::select(b"{}[]:,\"\\0123456789.eE+-tfnul \n".to_vec())],
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let edited = mutate(&serde_json::to_vec(&doc).unwrap(), op, at, byte);
        let scanned = scan_split(&edited, &cuts);
        prop_assert_eq!(summary(&scan_split(&edited, &[])), summary(&scanned));
        match serde_json::from_slice::<Value>(&edited) {
            Ok(_) => prop_assert_eq!(scanned.verdict, Verdict::Json),
            // Value refuses what the grammar allows: lone surrogates, numbers beyond f64.
            Err(e) if e.to_string().contains("surrogate")
                || e.to_string().contains("number out of range") => {}
            Err(e) => prop_assert_ne!(scanned.verdict, Verdict::Json, "serde: {}", e),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_ignore_chunking(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        prop_assert_eq!(summary(&scan_split(&bytes, &cuts)), summary(&scan_split(&bytes, &[])));
    }

    #[test]
    fn json_like_bytes_never_panic_and_ignore_chunking(
        bytes in proptest::collection::vec(
            proptest::sample::select(b"{}[]:,\"\\u0123456789abcdefE.+- tnrl\xc3\xa9\xf0\x9f".to_vec()),
            0..256,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        let mut body = br#"{"usage":"#.to_vec();
        body.extend_from_slice(&bytes);
        prop_assert_eq!(summary(&scan_split(&body, &cuts)), summary(&scan_split(&body, &[])));
    }

    #[test]
    fn any_bytes_in_a_text_string_are_judged_alike_in_any_chunking(
        text in proptest::collection::vec(
            prop_oneof![
                any::<u8>(),
                proptest::sample::select(vec![0xC3, 0xA9, 0xE4, 0xB8, 0xAD, 0xF0, 0x9F, 0x98, 0x80, 0xED, 0xA0, 0x80]),
            ],
            0..64,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        let mut body = br#"{"content":""#.to_vec();
        body.extend_from_slice(&text);
        body.extend_from_slice(br#""}"#);
        let whole = scan_split(&body, &[]);
        prop_assert_eq!(summary(&scan_split(&body, &cuts)), summary(&whole));
        let expected = std::str::from_utf8(&text).ok().filter(|t| !t.contains(['"', '\\']) && !t.contains(|c: char| c < ' '));
        if let Some(t) = expected {
            prop_assert_eq!(whole.verdict, Verdict::Json);
            prop_assert_eq!(whole.text.sample().pieces.concat(), t);
        } else if std::str::from_utf8(&text).is_err() && !text.contains(&b'"') {
            prop_assert_ne!(whole.verdict, Verdict::Json);
        }
    }
}
