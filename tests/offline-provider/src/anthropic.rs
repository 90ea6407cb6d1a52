//! Anthropic's Messages API: `POST /v1/messages`, streamed as named events or not.

use crate::reply::{self, Call, answer, count, text_of};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Text of the last user turn that is not a tool result.
fn last_user_text(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| text_of(m.get("content")))
        .find(|t| !t.is_empty())
        .unwrap_or_default()
}

fn ends_with_tool_result(messages: &[Value]) -> bool {
    messages
        .last()
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .is_some_and(|blocks| {
            blocks
                .iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        })
}

/// `POST /v1/messages`.
pub async fn messages(call: Call) -> Response {
    let p = &call.provider;
    let model = call.model();
    if call
        .request
        .get("max_tokens")
        .and_then(Value::as_u64)
        .is_none()
    {
        let body = json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}});
        return (axum::http::StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    let messages = call.messages();
    let system = match call.request.get("system") {
        Some(s) => text_of(Some(s)),
        None => String::new(),
    };
    let said = last_user_text(&messages);
    let tool = call
        .request
        .get("tools")
        .and_then(Value::as_array)
        .and_then(|t| t.first())
        .and_then(|t| t.get("name"))
        .filter(|_| !ends_with_tool_result(&messages))
        .cloned();
    let text = answer(&p.name, &model, &said, 0);

    let prompt = count(&system)
        + messages
            .iter()
            .map(|m| 3 + count(&text_of(m.get("content"))))
            .sum::<u64>();
    let cache_read = call.faults.cached.min(prompt);
    let cache_write = call.faults.cache_write.min(prompt - cache_read);
    let input = prompt - cache_read - cache_write;
    let tool_input = json!({"echo": said});
    // Extended thinking is billed inside `output_tokens`; newer responses also say how
    // much of it was thinking.
    let thinking = call.faults.reasoning;
    let output = thinking
        + match &tool {
            Some(name) => count(name.as_str().unwrap_or("")) + count(&tool_input.to_string()),
            None => count(&text),
        };
    let mut usage = json!({
        "input_tokens": input, "cache_creation_input_tokens": cache_write, "cache_read_input_tokens": cache_read,
        "cache_creation": {"ephemeral_5m_input_tokens": cache_write, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output, "service_tier": "standard",
    });
    if thinking > 0 {
        usage["output_tokens_details"] = json!({"thinking_tokens": thinking});
    }
    let report = !call.faults.no_usage;
    if report {
        call.reported(&usage);
    }
    let id = call.id("msg_offline_");
    let stop_reason = if tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    let content = match &tool {
        Some(name) => {
            json!([{"type": "tool_use", "id": "toolu_offline_1", "name": name, "input": tool_input}])
        }
        None => json!([{"type": "text", "text": text}]),
    };

    if !call
        .request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        let mut body = json!({"model": model, "id": id, "type": "message", "role": "assistant",
            "content": content, "stop_reason": stop_reason, "stop_sequence": null});
        if report {
            body["usage"] = usage;
        }
        return reply::json(&p.name, body);
    }

    let event = |kind: &str, data: Value| format!("event: {kind}\ndata: {data}\n\n");
    let mut start_usage = usage.clone();
    start_usage["output_tokens"] = json!(1); // Anthropic's placeholder in message_start
    if let Some(u) = start_usage.as_object_mut() {
        u.remove("output_tokens_details");
    }
    let mut message = json!({"model": model, "id": id, "type": "message", "role": "assistant",
        "content": [], "stop_reason": null, "stop_sequence": null});
    if report {
        message["usage"] = start_usage;
    }
    let mut events = vec![event(
        "message_start",
        json!({"type": "message_start", "message": message}),
    )];
    match &tool {
        Some(name) => {
            events.push(event("content_block_start", json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_offline_1", "name": name, "input": {}}})));
            let args = tool_input.to_string();
            let (a, b) = args.split_at(args.len() / 2);
            for part in [a, b] {
                events.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": part}}),
                ));
            }
        }
        None => {
            events.push(event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            ));
            events.push(event("ping", json!({"type": "ping"})));
            for word in text.split_inclusive(' ') {
                events.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": word}}),
                ));
            }
        }
    }
    events.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    let mut delta = json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}});
    if report {
        delta["usage"] = json!({"input_tokens": input, "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read, "output_tokens": output});
        if thinking > 0 {
            delta["usage"]["output_tokens_details"] = json!({"thinking_tokens": thinking});
        }
    }
    let generated = events.len();
    events.push(event("message_delta", delta));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    reply::stream(&p.name, call.faults, events, generated)
}
