//! Checks a request body before it costs anyone money.
//!
//! Only what the gateway must understand is checked (shape, model, parameter ranges the
//! provider would reject anyway); unknown fields pass through untouched, so new provider
//! features work without a gateway release.

use crate::endpoints::Endpoint;
use crate::errors::ApiError;
use serde_json::{Map, Value};

/// What the gateway learned from a valid request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// The `model` field.
    pub model: String,
    /// `stream: true` was asked for.
    pub stream: bool,
    /// `stream_options.include_usage: true` was asked for.
    pub include_usage: bool,
    /// The number of choices the provider generates and bills: `n`, or Completions'
    /// `best_of` when larger (1 when neither is sent), for each prompt of a Completions
    /// list.
    pub n: u64,
    /// The output cap the client asked for (`max_tokens`, `max_completion_tokens` or
    /// `max_output_tokens`; the largest when several are sent, since the provider honours
    /// one of them and an upper bound must cover whichever it is).
    pub max_output: Option<u64>,
    /// The endpoint answers with generated tokens (false for embeddings).
    pub generates: bool,
}

/// A valid request: what the gateway needs to know, and the parsed body to rewrite it.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRequest {
    /// The fields the gateway acts on.
    pub info: RequestInfo,
    /// The whole body, parsed; key order is kept.
    pub body: Map<String, Value>,
}

/// Roles the OpenAI chat API accepts in `messages`.
pub const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Whether a `Content-Type` value is JSON (`application/json`, any parameters, any case).
pub fn is_json_content_type(value: &[u8]) -> bool {
    value
        .get(..16)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"application/json"))
}

/// Validates the body of a proxied endpoint, of at most `max_bytes` bytes.
pub fn request(
    endpoint: &Endpoint,
    body: &[u8],
    max_bytes: usize,
) -> Result<ValidRequest, ApiError> {
    if body.len() > max_bytes {
        return Err(ApiError::too_large(max_bytes));
    }
    // The codes are those of the same problems caught at header time (`Refusal`), so a
    // client sees one code for one problem wherever the gateway notices it.
    if body.trim_ascii().is_empty() {
        return Err(ApiError {
            code: Some("missing_body"),
            ..ApiError::bad_request("The request body is empty; expected a JSON object.")
        });
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError {
        code: Some("invalid_json"),
        ..ApiError::bad_request(format!(
            "The request body is not valid JSON: {e}. Expected a JSON object."
        ))
    })?;
    let Value::Object(obj) = value else {
        return Err(ApiError::bad_request(
            "The request body must be a JSON object.",
        ));
    };

    let model = model(&obj)?;
    match endpoint {
        Endpoint::ChatCompletions => {
            messages(&obj)?;
            number_in(&obj, "presence_penalty", -2.0, 2.0)?;
            number_in(&obj, "frequency_penalty", -2.0, 2.0)?;
            integer_in(&obj, "max_completion_tokens", 1, u32::MAX as u64)?;
        }
        Endpoint::Completions => {
            prompt(&obj)?;
            integer_in(&obj, "best_of", 1, 128)?;
        }
        Endpoint::Embeddings => embedding_input(&obj)?,
        Endpoint::Responses => {
            match obj.get("input") {
                None | Some(Value::Null) | Some(Value::String(_)) | Some(Value::Array(_)) => {}
                Some(_) => {
                    return Err(invalid_type("input", "a string or an array of input items"));
                }
            }
            integer_in(&obj, "max_output_tokens", 1, u32::MAX as u64)?;
        }
        Endpoint::ListModels | Endpoint::GetModel(_) => {}
    }
    number_in(&obj, "temperature", 0.0, 2.0)?;
    number_in(&obj, "top_p", 0.0, 1.0)?;
    integer_in(&obj, "n", 1, 128)?;
    integer_in(&obj, "max_tokens", 1, u32::MAX as u64)?;
    let stream = optional_bool(&obj, "stream")?;
    if stream && *endpoint == Endpoint::Embeddings {
        return Err(ApiError::invalid(
            "stream",
            "Embeddings cannot be streamed.",
        ));
    }
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(opts)) => {
            if !stream {
                return Err(ApiError::invalid(
                    "stream_options",
                    "`stream_options` is only allowed when `stream` is true.",
                ));
            }
            optional_bool(opts, "include_usage")
                .map_err(|_| invalid_type("stream_options.include_usage", "a boolean"))?
        }
        Some(_) => return Err(invalid_type("stream_options", "an object")),
    };
    // Completions' `best_of` generates that many answers server-side and bills them all,
    // returning the best `n`; and it answers each prompt of a list with as many.
    let per_prompt = ["n", "best_of"]
        .iter()
        .filter_map(|k| obj.get(*k).and_then(Value::as_u64))
        .max()
        .unwrap_or(1);
    let prompts = match (endpoint, obj.get("prompt")) {
        (Endpoint::Completions, Some(Value::Array(items)))
            if items.iter().all(|i| i.is_string() || i.is_array()) =>
        {
            items.len().max(1) as u64
        }
        _ => 1,
    };
    let n = per_prompt.saturating_mul(prompts);
    let max_output = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .filter_map(|k| obj.get(*k).and_then(Value::as_u64))
        .max();

    Ok(ValidRequest {
        info: RequestInfo {
            model,
            stream,
            include_usage,
            n,
            max_output,
            generates: *endpoint != Endpoint::Embeddings,
        },
        body: obj,
    })
}

fn prompt(obj: &Map<String, Value>) -> Result<(), ApiError> {
    let ok = match obj.get("prompt") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                "prompt",
                "Missing required parameter: `prompt`.",
            ));
        }
        Some(Value::String(_)) => true,
        Some(Value::Array(items)) => {
            items.iter().all(Value::is_string)
                || items.iter().all(Value::is_u64)
                || items
                    .iter()
                    .all(|i| i.as_array().is_some_and(|a| a.iter().all(Value::is_u64)))
        }
        Some(_) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid_type(
            "prompt",
            "a string, an array of strings, or an array of token arrays",
        ))
    }
}

fn embedding_input(obj: &Map<String, Value>) -> Result<(), ApiError> {
    match obj.get("input") {
        None | Some(Value::Null) => Err(ApiError::invalid(
            "input",
            "Missing required parameter: `input`.",
        )),
        Some(Value::String(s)) if s.is_empty() => {
            Err(ApiError::invalid("input", "`input` must not be empty."))
        }
        Some(Value::Array(a)) if a.is_empty() => {
            Err(ApiError::invalid("input", "`input` must not be empty."))
        }
        Some(Value::String(_)) | Some(Value::Array(_)) => {
            integer_in(obj, "dimensions", 1, 65_536)?;
            match obj.get("encoding_format") {
                None | Some(Value::Null) => Ok(()),
                Some(Value::String(f)) if f == "float" || f == "base64" => Ok(()),
                Some(_) => Err(ApiError::invalid(
                    "encoding_format",
                    "`encoding_format` must be \"float\" or \"base64\".",
                )),
            }
        }
        Some(_) => Err(invalid_type("input", "a string or an array")),
    }
}

fn invalid_type(param: &str, expected: &str) -> ApiError {
    ApiError::invalid(param, format!("`{param}` must be {expected}."))
}

fn model(obj: &Map<String, Value>) -> Result<String, ApiError> {
    match obj.get("model") {
        None | Some(Value::Null) => Err(ApiError::invalid(
            "model",
            "You must provide a model parameter.",
        )),
        Some(Value::String(m)) if m.trim().is_empty() => {
            Err(ApiError::invalid("model", "`model` must not be empty."))
        }
        Some(Value::String(m)) => Ok(m.clone()),
        Some(_) => Err(invalid_type("model", "a string")),
    }
}

fn messages(obj: &Map<String, Value>) -> Result<(), ApiError> {
    let list = match obj.get("messages") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                "messages",
                "Missing required parameter: `messages`.",
            ));
        }
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid_type("messages", "an array")),
    };
    if list.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must contain at least one message.",
        ));
    }
    for (i, message) in list.iter().enumerate() {
        let Value::Object(m) = message else {
            return Err(invalid_type(&format!("messages[{i}]"), "an object"));
        };
        let role = match m.get("role") {
            Some(Value::String(r)) => r.as_str(),
            Some(_) => return Err(invalid_type(&format!("messages[{i}].role"), "a string")),
            None => {
                return Err(ApiError::invalid(
                    format!("messages[{i}].role"),
                    format!("Missing required parameter: `messages[{i}].role`."),
                ));
            }
        };
        if !ROLES.contains(&role) {
            return Err(ApiError::invalid(
                format!("messages[{i}].role"),
                format!(
                    "Invalid value `{role}` for `messages[{i}].role`; expected one of {}.",
                    ROLES.join(", ")
                ),
            ));
        }
        match m.get("content") {
            Some(Value::String(_)) | Some(Value::Array(_)) => {}
            // An assistant turn that only calls tools carries no content.
            None | Some(Value::Null)
                if role == "assistant"
                    && (m.contains_key("tool_calls") || m.contains_key("function_call")) => {}
            None | Some(Value::Null) => {
                return Err(ApiError::invalid(
                    format!("messages[{i}].content"),
                    format!("Missing required parameter: `messages[{i}].content`."),
                ));
            }
            Some(_) => {
                return Err(invalid_type(
                    &format!("messages[{i}].content"),
                    "a string or an array of content parts",
                ));
            }
        }
    }
    Ok(())
}

fn number_in(obj: &Map<String, Value>, key: &str, min: f64, max: f64) -> Result<(), ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if (min..=max).contains(&x) => Ok(()),
            _ => Err(ApiError::invalid(
                key,
                format!("`{key}` must be between {min} and {max}, got {n}."),
            )),
        },
        Some(_) => Err(invalid_type(key, "a number")),
    }
}

fn integer_in(obj: &Map<String, Value>, key: &str, min: u64, max: u64) -> Result<(), ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(x) if (min..=max).contains(&x) => Ok(()),
            _ => Err(ApiError::invalid(
                key,
                format!("`{key}` must be an integer between {min} and {max}, got {n}."),
            )),
        },
        Some(_) => Err(invalid_type(key, "an integer")),
    }
}

fn optional_bool(obj: &Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid_type(key, "a boolean")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat_request(body: &[u8], max_bytes: usize) -> Result<RequestInfo, ApiError> {
        request(&Endpoint::ChatCompletions, body, max_bytes).map(|r| r.info)
    }

    const LIMIT: usize = 1 << 20;

    fn ok(body: &str) -> RequestInfo {
        chat_request(body.as_bytes(), LIMIT).expect("valid request")
    }

    fn err(body: &str) -> ApiError {
        chat_request(body.as_bytes(), LIMIT).expect_err("invalid request")
    }

    #[test]
    fn json_content_types() {
        assert!(is_json_content_type(b"application/json"));
        assert!(is_json_content_type(b"Application/JSON; charset=utf-8"));
        assert!(!is_json_content_type(b"text/plain"));
        assert!(!is_json_content_type(b""));
    }

    #[test]
    fn minimal_request() {
        let r = ok(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#);
        assert_eq!(r.model, "gpt-4o-mini");
        assert!(!r.stream);
        assert!(!r.include_usage);
        assert_eq!(r.max_output, None);
        assert!(r.generates);
    }

    #[test]
    fn the_output_cap_is_the_largest_of_the_fields_sent() {
        let r = ok(r#"{"model":"m","max_tokens":50,"max_completion_tokens":70,
                "messages":[{"role":"user","content":"hi"}]}"#);
        assert_eq!(r.max_output, Some(70));
        let r = request(
            &Endpoint::Responses,
            br#"{"model":"m","input":"hi","max_output_tokens":9}"#,
            LIMIT,
        )
        .expect("valid request")
        .info;
        assert_eq!(r.max_output, Some(9));
        let r = request(
            &Endpoint::Embeddings,
            br#"{"model":"m","input":"hi"}"#,
            LIMIT,
        )
        .expect("valid request")
        .info;
        assert!(!r.generates);
    }

    #[test]
    fn stream_with_usage() {
        let r = ok(
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},
                "messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#,
        );
        assert!(r.stream && r.include_usage);
    }

    #[test]
    fn tool_call_turn_without_content() {
        ok(r#"{"model":"m","messages":[
            {"role":"user","content":"weather?"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"w","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"sunny"}]}"#);
    }

    #[test]
    fn unknown_fields_pass() {
        ok(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"some_future_field":{"a":1}}"#,
        );
    }

    #[test]
    fn malformed_json_names_the_problem() {
        let e = err(r#"{"model":"m","messages":[}"#);
        assert_eq!(e.status, 400);
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        assert!(e.message.contains("column"), "{}", e.message);
    }

    #[test]
    fn shape_errors_name_the_field() {
        let cases = [
            (r#"[]"#, None),
            (r#""#, None),
            (
                r#"{"messages":[{"role":"user","content":"x"}]}"#,
                Some("model"),
            ),
            (
                r#"{"model":7,"messages":[{"role":"user","content":"x"}]}"#,
                Some("model"),
            ),
            (
                r#"{"model":" ","messages":[{"role":"user","content":"x"}]}"#,
                Some("model"),
            ),
            (r#"{"model":"m"}"#, Some("messages")),
            (r#"{"model":"m","messages":{}}"#, Some("messages")),
            (r#"{"model":"m","messages":[]}"#, Some("messages")),
            (r#"{"model":"m","messages":["hi"]}"#, Some("messages[0]")),
            (
                r#"{"model":"m","messages":[{"content":"x"}]}"#,
                Some("messages[0].role"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#,
                Some("messages[0].role"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}]}"#,
                Some("messages[0].content"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":5}]}"#,
                Some("messages[0].content"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#,
                Some("temperature"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
                Some("temperature"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_p":-0.1}"#,
                Some("top_p"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":0}"#,
                Some("n"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":1.5}"#,
                Some("n"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#,
                Some("max_tokens"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
                Some("stream"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}"#,
                Some("stream_options"),
            ),
            (
                r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":1}}"#,
                Some("stream_options.include_usage"),
            ),
        ];
        for (body, param) in cases {
            let e = err(body);
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.param.as_deref(), param, "{body}: {}", e.message);
        }
    }

    #[test]
    fn best_of_completions_are_all_held() {
        // `best_of` makes the provider generate (and bill) that many completions and
        // return the best `n`: each of them is output the call can be charged for.
        let v = |body: &str| request(&Endpoint::Completions, body.as_bytes(), LIMIT);
        let r = v(r#"{"model":"m","prompt":"x","max_tokens":10,"best_of":20}"#).expect("valid");
        assert_eq!(r.info.n, 20);
        assert_eq!(crate::hold::output_bound(&r.info, 4_096), 200);
        let r = v(r#"{"model":"m","prompt":"x","n":3,"best_of":2}"#).expect("valid");
        assert_eq!(r.info.n, 3);
        for bad in [
            r#""best_of":0"#,
            r#""best_of":-1"#,
            r#""best_of":1.5"#,
            r#""best_of":"9""#,
        ] {
            let e = v(&format!(r#"{{"model":"m","prompt":"x",{bad}}}"#)).unwrap_err();
            assert_eq!(e.param.as_deref(), Some("best_of"), "{bad}");
        }
    }

    #[test]
    fn every_prompt_of_a_batched_completion_is_held() {
        // Completions answers each prompt of a list with `n` (or `best_of`) choices.
        let v = |body: &str| request(&Endpoint::Completions, body.as_bytes(), LIMIT);
        let r = v(r#"{"model":"m","prompt":["a","b","c"],"max_tokens":10,"n":2}"#).expect("valid");
        assert_eq!(crate::hold::output_bound(&r.info, 4_096), 60);
        let r = v(r#"{"model":"m","prompt":[[1,2],[3],[4]],"best_of":4}"#).expect("valid");
        assert_eq!(r.info.n, 12);
        let r = v(r#"{"model":"m","prompt":[1,2,3]}"#).expect("valid");
        assert_eq!(r.info.n, 1);
        let r = v(r#"{"model":"m","prompt":"abc","n":5}"#).expect("valid");
        assert_eq!(r.info.n, 5);
    }

    #[test]
    fn other_endpoints() {
        let v = |e: Endpoint, body: &str| request(&e, body.as_bytes(), LIMIT);
        assert!(v(Endpoint::Completions, r#"{"model":"m","prompt":"Say hi"}"#).is_ok());
        assert!(
            v(
                Endpoint::Completions,
                r#"{"model":"m","prompt":[[1,2],[3]]}"#
            )
            .is_ok()
        );
        assert_eq!(
            v(Endpoint::Completions, r#"{"model":"m"}"#)
                .unwrap_err()
                .param
                .as_deref(),
            Some("prompt")
        );
        assert_eq!(
            v(Endpoint::Completions, r#"{"model":"m","prompt":[1,"a"]}"#)
                .unwrap_err()
                .param
                .as_deref(),
            Some("prompt")
        );
        assert!(
            v(
                Endpoint::Embeddings,
                r#"{"model":"m","input":["a","b"],"dimensions":8}"#
            )
            .is_ok()
        );
        assert_eq!(
            v(Endpoint::Embeddings, r#"{"model":"m","input":""}"#)
                .unwrap_err()
                .param
                .as_deref(),
            Some("input")
        );
        assert_eq!(
            v(
                Endpoint::Embeddings,
                r#"{"model":"m","input":"a","stream":true}"#
            )
            .unwrap_err()
            .param
            .as_deref(),
            Some("stream")
        );
        assert_eq!(
            v(
                Endpoint::Embeddings,
                r#"{"model":"m","input":"a","encoding_format":"int8"}"#
            )
            .unwrap_err()
            .param
            .as_deref(),
            Some("encoding_format")
        );
        let r = v(
            Endpoint::Responses,
            r#"{"model":"m","input":"hi","stream":true}"#,
        )
        .unwrap();
        assert!(r.info.stream && !r.info.include_usage);
        assert_eq!(
            v(Endpoint::Responses, r#"{"model":"m","input":5}"#)
                .unwrap_err()
                .param
                .as_deref(),
            Some("input")
        );
    }

    #[test]
    fn body_order_is_kept() {
        let r = request(
            &Endpoint::ChatCompletions,
            br#"{"z":1,"model":"m","messages":[{"role":"user","content":"x"}],"a":2}"#,
            LIMIT,
        )
        .unwrap();
        let keys: Vec<&String> = r.body.keys().collect();
        assert_eq!(keys, ["z", "model", "messages", "a"]);
        assert_eq!(r.info.n, 1);
    }

    #[test]
    fn body_over_cap_is_413() {
        let body = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
            "x".repeat(100)
        );
        assert_eq!(chat_request(body.as_bytes(), 50).unwrap_err().status, 413);
        assert!(chat_request(body.as_bytes(), body.len()).is_ok());
    }

    #[test]
    fn never_panics_on_garbage() {
        for body in [
            &b"\xff\xfe\x00"[..],
            b"{",
            b"{\"model\":",
            b"nul",
            b"{}",
            b"\"\\ud800\"",
        ] {
            let _ = chat_request(body, LIMIT);
        }
    }
}
