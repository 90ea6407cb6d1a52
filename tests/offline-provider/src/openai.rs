//! OpenAI's API and the dialects that copy it (DeepSeek, Gemini's OpenAI endpoint, xAI,
//! vLLM).

use crate::reply::{self, Call, answer, chat_prompt_tokens, count, last_user_text};
use crate::{Dialect, Provider};
use axum::Json;
use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};
use std::sync::Arc;

const CREATED: u64 = 1_700_000_000;

/// `GET /v1/models`.
pub async fn models(State(p): State<Arc<Provider>>) -> Json<Value> {
    Json(json!({"object": "list", "data": [
        {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": p.name},
    ]}))
}

/// Token counts of one answer, before they are written in a dialect's usage shape.
struct Counts {
    prompt: u64,
    cached: u64,
    /// Visible generated tokens.
    text: u64,
    reasoning: u64,
}

/// The usage object as `dialect` writes it.
fn usage(dialect: Dialect, c: &Counts) -> Value {
    match dialect {
        Dialect::Gemini => {
            // Thinking is billed but only visible in total_tokens (observed behaviour).
            let mut u = json!({
                "completion_tokens": c.text,
                "prompt_tokens": c.prompt,
                "total_tokens": c.prompt + c.text + c.reasoning,
            });
            if c.cached > 0 {
                u["prompt_tokens_details"] = json!({"cached_tokens": c.cached});
            }
            u
        }
        Dialect::Deepseek => json!({
            "prompt_tokens": c.prompt,
            "completion_tokens": c.text + c.reasoning,
            "total_tokens": c.prompt + c.text + c.reasoning,
            "prompt_tokens_details": {"cached_tokens": c.cached},
            "completion_tokens_details": {"reasoning_tokens": c.reasoning},
            "prompt_cache_hit_tokens": c.cached,
            "prompt_cache_miss_tokens": c.prompt - c.cached,
        }),
        // As xAI's documented example: `total = prompt + completion + reasoning`.
        Dialect::Xai => json!({
            "prompt_tokens": c.prompt,
            "completion_tokens": c.text,
            "total_tokens": c.prompt + c.text + c.reasoning,
            "prompt_tokens_details": {"text_tokens": c.prompt, "audio_tokens": 0,
                "image_tokens": 0, "cached_tokens": c.cached},
            "completion_tokens_details": {"reasoning_tokens": c.reasoning, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
            "num_sources_used": 0,
        }),
        Dialect::Openai | Dialect::Anthropic => json!({
            "prompt_tokens": c.prompt,
            "completion_tokens": c.text + c.reasoning,
            "total_tokens": c.prompt + c.text + c.reasoning,
            "prompt_tokens_details": {"cached_tokens": c.cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": c.reasoning, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }),
    }
}

/// A tool call, when the request offers tools and the last turn is not a tool result.
fn tool_call(request: &Value, messages: &[Value]) -> Option<Value> {
    let tools = request.get("tools")?.as_array()?;
    if request.get("tool_choice").and_then(Value::as_str) == Some("none") {
        return None;
    }
    if messages
        .last()
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        == Some("tool")
    {
        return None;
    }
    let name = tools.first()?.pointer("/function/name")?.as_str()?;
    let arguments = json!({"echo": last_user_text(messages)}).to_string();
    Some(
        json!({"id": "call_offline_1", "type": "function", "function": {"name": name, "arguments": arguments}}),
    )
}

/// `POST /v1/chat/completions` (and Gemini's `/v1beta/openai/chat/completions`).
pub async fn chat(call: Call) -> Response {
    let p = &call.provider;
    let model = call.model();
    let messages = call.messages();
    let n = call
        .request
        .get("n")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 16) as usize;
    let stream = call
        .request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let include_usage = call
        .request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let said = last_user_text(&messages);
    let tool = tool_call(&call.request, &messages);

    let texts: Vec<String> = (0..n).map(|i| answer(&p.name, &model, &said, i)).collect();
    let prompt = chat_prompt_tokens(&messages);
    let text_tokens: u64 = match &tool {
        Some(t) => {
            count(t["function"]["name"].as_str().unwrap_or("")) * n as u64
                + count(t["function"]["arguments"].as_str().unwrap_or("")) * n as u64
        }
        None => texts.iter().map(|t| count(t)).sum(),
    };
    let counts = Counts {
        prompt,
        cached: call.faults.cached.min(prompt),
        text: text_tokens,
        reasoning: call.faults.reasoning,
    };
    let usage = usage(p.dialect, &counts);
    let report = !call.faults.no_usage;
    let id = call.id("chatcmpl-offline-");
    let fingerprint = format!("fp_{}", p.name);
    let finish = if tool.is_some() { "tool_calls" } else { "stop" };

    if !stream {
        let choices: Vec<Value> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let message = match &tool {
                    Some(call) => json!({"role": "assistant", "content": null, "tool_calls": [call], "refusal": null}),
                    None => json!({"role": "assistant", "content": t, "refusal": null, "annotations": []}),
                };
                json!({"index": i, "message": message, "logprobs": null, "finish_reason": finish})
            })
            .collect();
        let mut body = json!({
            "id": id, "object": "chat.completion", "created": CREATED, "model": model,
            "choices": choices, "service_tier": "default", "system_fingerprint": fingerprint,
        });
        if report {
            body["usage"] = usage.clone();
            call.reported(&usage);
        }
        return reply::json(&p.name, body);
    }

    // Where usage goes in a stream is what tells the dialects apart.
    let trailing_usage = report && include_usage && p.dialect != Dialect::Gemini;
    let usage_on_finish =
        report && !trailing_usage && matches!(p.dialect, Dialect::Gemini | Dialect::Deepseek);
    let null_usage = include_usage && p.dialect != Dialect::Gemini;
    let chunk = |choices: Value, usage: Option<&Value>| {
        let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": CREATED,
            "model": model, "service_tier": "default", "system_fingerprint": fingerprint, "choices": choices});
        match usage {
            Some(u) => c["usage"] = u.clone(),
            None if null_usage => c["usage"] = Value::Null,
            None => {}
        }
        format!("data: {c}\n\n")
    };
    let mut events = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        events.push(chunk(json!([{"index": i, "delta": {"role": "assistant", "content": "", "refusal": null}, "logprobs": null, "finish_reason": null}]), None));
        match &tool {
            Some(t) => events.push(chunk(json!([{"index": i, "delta": {"tool_calls": [{"index": 0, "id": t["id"], "type": "function",
                "function": {"name": t["function"]["name"], "arguments": t["function"]["arguments"]}}]}, "logprobs": null, "finish_reason": null}]), None)),
            None => {
                for word in text.split_inclusive(' ') {
                    events.push(chunk(json!([{"index": i, "delta": {"content": word}, "logprobs": null, "finish_reason": null}]), None));
                }
            }
        }
    }
    for i in 0..n {
        let last = i + 1 == n;
        let u = (last && usage_on_finish).then_some(&usage);
        events.push(chunk(
            json!([{"index": i, "delta": {}, "logprobs": null, "finish_reason": finish}]),
            u,
        ));
    }
    let generated = events.len();
    if trailing_usage {
        events.push(chunk(json!([]), Some(&usage)));
    }
    events.push("data: [DONE]\n\n".to_owned());
    if trailing_usage || usage_on_finish {
        call.reported(&usage);
    }
    reply::stream(&p.name, call.faults, events, generated)
}

/// `POST /v1/completions`.
pub fn completions(call: Call) -> Response {
    let p = &call.provider;
    let model = call.model();
    let prompt_text = match call.request.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    let text = answer(&p.name, &model, &prompt_text, 0);
    let counts = Counts {
        prompt: count(&prompt_text),
        cached: 0,
        text: count(&text),
        reasoning: 0,
    };
    let usage = json!({"prompt_tokens": counts.prompt, "completion_tokens": counts.text,
        "total_tokens": counts.prompt + counts.text});
    let mut body = json!({
        "id": call.id("cmpl-offline-"), "object": "text_completion", "created": CREATED, "model": model,
        "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": "stop"}],
    });
    if !call.faults.no_usage {
        body["usage"] = usage.clone();
        call.reported(&usage);
    }
    reply::json(&p.name, body)
}

/// `POST /v1/embeddings`: deterministic vectors, honest prompt counts.
pub fn embeddings(call: Call) -> Response {
    let p = &call.provider;
    let inputs: Vec<String> = match call.request.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect(),
        _ => Vec::new(),
    };
    let dims = call
        .request
        .get("dimensions")
        .and_then(Value::as_u64)
        .unwrap_or(8)
        .clamp(1, 4096) as usize;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let seed = reply::fnv(text.as_bytes());
            let vector: Vec<f64> = (0..dims)
                .map(|d| (((seed.rotate_left(d as u32 * 7) % 2000) as f64) / 1000.0) - 1.0)
                .collect();
            json!({"object": "embedding", "index": i, "embedding": vector})
        })
        .collect();
    let prompt: u64 = inputs.iter().map(|t| count(t)).sum();
    let usage = json!({"prompt_tokens": prompt, "total_tokens": prompt});
    let mut body = json!({"object": "list", "data": data, "model": call.model()});
    if !call.faults.no_usage {
        body["usage"] = usage.clone();
        call.reported(&usage);
    }
    reply::json(&p.name, body)
}

/// `POST /v1/responses`, streamed (named events) or not.
pub async fn responses(call: Call) -> Response {
    let p = &call.provider;
    let model = call.model();
    let (said, input_text) = match call.request.get("input") {
        Some(Value::String(s)) => (s.clone(), s.clone()),
        Some(Value::Array(items)) => {
            let texts: Vec<String> = items
                .iter()
                .map(|i| reply::text_of(i.get("content")))
                .collect();
            (texts.last().cloned().unwrap_or_default(), texts.join(""))
        }
        _ => (String::new(), String::new()),
    };
    let instructions = call
        .request
        .get("instructions")
        .and_then(Value::as_str)
        .unwrap_or("");
    let text = answer(&p.name, &model, &said, 0);
    let input = count(instructions) + count(&input_text);
    let cached = call.faults.cached.min(input);
    let output = count(&text) + call.faults.reasoning;
    let usage = json!({
        "input_tokens": input, "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output, "output_tokens_details": {"reasoning_tokens": call.faults.reasoning},
        "total_tokens": input + output,
    });
    let id = call.id("resp_offline_");
    let message = json!({"id": "msg_offline", "type": "message", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "annotations": [], "text": text}]});
    let mut response = json!({"id": id, "object": "response", "created_at": CREATED, "status": "completed",
        "model": model, "output": [message], "usage": Value::Null});
    if !call.faults.no_usage {
        response["usage"] = usage.clone();
        call.reported(&usage);
    }
    if !call
        .request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return reply::json(&p.name, response);
    }
    let event = |kind: &str, seq: usize, mut data: Value| {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(seq);
        format!("event: {kind}\ndata: {data}\n\n")
    };
    let mut in_progress = response.clone();
    in_progress["status"] = json!("in_progress");
    in_progress["output"] = json!([]);
    in_progress["usage"] = Value::Null;
    let mut events = vec![event(
        "response.created",
        0,
        json!({"response": in_progress}),
    )];
    for word in text.split_inclusive(' ') {
        events.push(event(
            "response.output_text.delta",
            events.len(),
            json!({"item_id": "msg_offline", "output_index": 0, "content_index": 0, "delta": word}),
        ));
    }
    events.push(event(
        "response.output_text.done",
        events.len(),
        json!({"item_id": "msg_offline", "output_index": 0, "content_index": 0, "text": text}),
    ));
    let generated = events.len();
    events.push(event(
        "response.completed",
        events.len(),
        json!({"response": response}),
    ));
    reply::stream(&p.name, call.faults, events, generated)
}
