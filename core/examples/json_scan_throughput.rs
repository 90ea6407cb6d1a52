//! Throughput of the streaming JSON scanner next to whole-body parsing, on answers shaped
//! like the ones the filter meters. Run natively with
//! `cargo run --release -p tollgate-core --example json_scan_throughput`, or build it for
//! wasm32-wasip1 and run it under a WASI runtime to see the filter's hot path.

use std::time::{Duration, Instant};
use tollgate_core::json_scan::JsonScanner;
use tollgate_core::usage::{self, Format};

/// Envoy hands the filter bodies in pieces of about this size.
const CHUNK: usize = 64 * 1024;

/// An embeddings answer laid out as OpenAI sends it: one float per line.
fn embeddings(inputs: usize, dims: usize) -> Vec<u8> {
    let mut body = String::from("{\n  \"object\": \"list\",\n  \"data\": [\n");
    for i in 0..inputs {
        let sep = if i + 1 == inputs { "" } else { "," };
        let floats: Vec<String> = (0..dims)
            .map(|d| {
                format!(
                    "        {:.8}",
                    ((i * 7919 + d * 104_729) % 20_011) as f64 / -9_973.0
                )
            })
            .collect();
        body += &format!(
            "    {{\n      \"object\": \"embedding\",\n      \"index\": {i},\n      \"embedding\": [\n{}\n      ]\n    }}{sep}\n",
            floats.join(",\n")
        );
    }
    body += "  ],\n  \"model\": \"text-embedding-3-large\",\n  \"usage\": {\"prompt_tokens\": 9, \"total_tokens\": 9}\n}\n";
    body.into_bytes()
}

/// A chat answer whose content is `text` repeated to about `bytes`.
fn chat(text: &str, bytes: usize) -> Vec<u8> {
    let content = text.repeat(bytes / text.len());
    let body = serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18}
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Best time of `runs` runs of `f`.
fn best(runs: usize, mut f: impl FnMut() -> bool) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let start = Instant::now();
        assert!(f(), "the measured call found no usage");
        best = best.min(start.elapsed());
    }
    best
}

fn mb_per_s(bytes: usize, time: Duration) -> f64 {
    bytes as f64 / 1e6 / time.as_secs_f64()
}

fn main() {
    let answers = [
        ("embeddings 300x4096", embeddings(300, 4096)),
        (
            "chat, 4 MB English content",
            chat("The quick brown fox jumps over the lazy dog.\n", 4 << 20),
        ),
        (
            "chat, 4 MB Chinese content",
            chat("敏捷的棕色狐狸跳过了懒狗。", 4 << 20),
        ),
    ];
    println!(
        "{:<28} {:>8} {:>10} {:>12} {:>12}",
        "answer", "MB", "scanner", "from_body", "Value"
    );
    for (name, body) in &answers {
        let scan = best(5, || {
            let mut scanner = JsonScanner::default();
            for piece in body.chunks(CHUNK) {
                scanner.feed(piece);
            }
            scanner.finish().usage(Format::OpenAiChat).is_some()
        });
        let members = best(5, || usage::from_body(Format::OpenAiChat, body).is_some());
        let value = best(5, || {
            serde_json::from_slice::<serde_json::Value>(body)
                .is_ok_and(|v| v.get("usage").is_some())
        });
        println!(
            "{:<28} {:>8.1} {:>7.0} MB/s {:>7.0} MB/s {:>7.0} MB/s",
            name,
            body.len() as f64 / 1e6,
            mb_per_s(body.len(), scan),
            mb_per_s(body.len(), members),
            mb_per_s(body.len(), value),
        );
    }
}
