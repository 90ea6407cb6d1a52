//! OpenAI-style error responses: `{"error":{"message","type","param","code"}}`.
//!
//! Clients (and the official SDKs) map the status and `type` to their own error classes,
//! so every refusal the gateway makes goes through [`ApiError`]: the gateway's own reasons
//! are named in [`crate::refusal::Refusal`], which renders itself as one.

use serde::Serialize;
use std::borrow::Cow;

/// The `type` field of an OpenAI error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or names something that does not exist.
    InvalidRequestError,
    /// The credential is missing, unknown or revoked.
    AuthenticationError,
    /// The credential is valid but may not do this.
    PermissionError,
    /// A limit was hit.
    RateLimitError,
    /// A requests-per-minute limit was hit: OpenAI's own `type` for it.
    Requests,
    /// A tokens-per-minute limit was hit: OpenAI's own `type` for it.
    Tokens,
    /// The gateway or the provider failed.
    ApiError,
    /// A budget is spent: OpenAI's billing error, which SDKs never retry.
    InsufficientQuota,
}

/// An error the gateway answers with, ready to serialize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// The `type` field.
    pub kind: ErrorKind,
    /// Human-readable explanation.
    pub message: String,
    /// The request field at fault, if any.
    pub param: Option<String>,
    /// A machine-readable code, if any (e.g. `invalid_api_key`).
    pub code: Option<&'static str>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: ErrorKind,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    /// A 400 `invalid_request_error` about `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            kind: ErrorKind::InvalidRequestError,
            message: message.into(),
            param: Some(param.into()),
            code: None,
        }
    }

    /// A 400 `invalid_request_error` about the request as a whole.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            kind: ErrorKind::InvalidRequestError,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// A 413 for a body over the configured cap.
    pub fn too_large(limit: usize) -> Self {
        Self {
            status: 413,
            kind: ErrorKind::InvalidRequestError,
            message: format!(
                "The request body is larger than the gateway's limit of {limit} bytes."
            ),
            param: None,
            code: Some("request_too_large"),
        }
    }

    /// A 5xx `api_error` raised by the gateway itself.
    pub fn gateway(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            kind: ErrorKind::ApiError,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// The JSON body, as bytes.
    pub fn body(&self) -> Vec<u8> {
        let envelope = Envelope {
            error: Body {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        // Serializing plain strings and enums into a Vec cannot fail.
        serde_json::to_vec(&envelope).unwrap_or_default()
    }
}

/// The `type` OpenAI uses for an HTTP status, for provider errors that name none.
fn kind_for_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// `code` of the error that replaces a provider's refusal of the gateway's credential.
pub const PROVIDER_AUTH_CODE: &str = "provider_auth_failed";

/// What the client gets when the provider refuses the operator's credential (401/403):
/// the provider's own message may quote part of that key, and the client cannot fix it.
fn provider_auth_error(status: u16) -> ApiError {
    ApiError {
        status,
        kind: ErrorKind::ApiError,
        message: format!(
            "The provider refused the gateway's credential for it (HTTP {status}). This is \
             a problem in the gateway's configuration, not in your request or your key; \
             contact the gateway's operator."
        ),
        param: None,
        code: Some(PROVIDER_AUTH_CODE),
    }
}

/// Rewrites a provider's error body into OpenAI's shape, keeping its message; `None` when
/// it already has that shape and carries nothing to redact. Handles Anthropic
/// (`{"type":"error","error":{…}}`), Gemini (`{"error":{"code","message","status"}}`),
/// vLLM/FastAPI (`{"message"}`, `{"detail"}`) and plain text. A 401 or 403 (the provider
/// refused the operator's credential) becomes the gateway's own message; in any other,
/// credential-like strings are redacted ([`redact_secrets`]).
pub fn openai_error_body(status: u16, body: &[u8]) -> Option<Vec<u8>> {
    if matches!(status, 401 | 403) {
        return Some(provider_auth_error(status).body());
    }
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let is_openai = error.is_some_and(|e| {
        e.get("message").is_some_and(|m| m.is_string())
            && e.get("type").is_some_and(|t| t.is_string())
    }) && parsed.as_ref().and_then(|v| v.get("type")).is_none();
    if is_openai {
        let mut v = parsed?;
        return redact_strings(&mut v)
            .then(|| serde_json::to_vec(&v).ok())
            .flatten();
    }
    let v = parsed.as_ref();
    let message = error
        .and_then(|e| e.get("message"))
        .or_else(|| v.and_then(|v| v.get("message")))
        .or_else(|| v.and_then(|v| v.get("detail")))
        .map(|m| {
            m.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| m.to_string())
        })
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                format!("The provider answered with HTTP {status} and no details.")
            } else {
                // Redacted before the cut, which could leave a secret too short to spot.
                redact_secrets(text).chars().take(1000).collect()
            }
        });
    let kind = error
        .and_then(|e| e.get("type"))
        .or_else(|| {
            v.and_then(|v| v.get("type"))
                .filter(|t| t.as_str() != Some("error"))
        })
        .and_then(|t| t.as_str())
        .unwrap_or_else(|| kind_for_status(status))
        .to_owned();
    let code = error
        .and_then(|e| e.get("status").or_else(|| e.get("code")))
        .and_then(|c| c.as_str())
        .map(str::to_ascii_lowercase);
    let message = redact_secrets(&message);
    let out = serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    serde_json::to_vec(&out).ok()
}

/// Redacts every string in `v`; true if any changed.
fn redact_strings(v: &mut serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => match redact_secrets(s) {
            Cow::Owned(redacted) => {
                *s = redacted;
                true
            }
            Cow::Borrowed(_) => false,
        },
        serde_json::Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, item| redact_strings(item) | changed),
        serde_json::Value::Object(members) => members
            .values_mut()
            .fold(false, |changed, item| redact_strings(item) | changed),
        _ => false,
    }
}

/// How provider credentials begin: OpenAI's and DeepSeek's `sk-` (Anthropic's `sk-ant-`
/// too), Google's `AIza`, xAI's `xai-`, Groq's `gsk_`.
const KEY_PREFIXES: &[&str] = &["sk-", "sk_", "AIza", "xai-", "gsk_"];

/// Shortest run of key characters with letters and digits redacted without a known prefix
/// (longer than request and organization ids, which are harmless to show).
const MIN_SECRET_RUN: usize = 32;

/// Stands in for what was redacted.
const REDACTED: &str = "[redacted]";

/// Characters of keys, tokens and their masked forms (`sk-proj-****x9Qa`), in base64,
/// base64url and hex.
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*' | b'+' | b'/' | b'=')
}

/// `text` with anything that looks like a credential replaced by `[redacted]`: a word
/// starting with a known key prefix, or a run of at least 32 key characters mixing
/// letters and digits. Borrowed when there was nothing to redact.
pub fn redact_secrets(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    // Start of the text not yet copied to `out`.
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !is_key_byte(bytes[i]) {
            i += 1;
            continue;
        }
        let run_end = bytes[i..]
            .iter()
            .position(|&b| !is_key_byte(b))
            .map_or(bytes.len(), |n| i + n);
        let run = &bytes[i..run_end];
        let long = run.len() >= MIN_SECRET_RUN
            && run.iter().any(u8::is_ascii_digit)
            && run.iter().any(u8::is_ascii_alphabetic);
        let secret_start = if long {
            Some(i)
        } else {
            // A prefix at the start of a word inside the run (`key=sk-…`, `/sk-…`), not
            // inside a hyphenated word (`desk-sk-…`).
            (i..run_end).find(|&at| {
                let word_start = at == i
                    || !matches!(bytes[at - 1], b'-' | b'_')
                        && !bytes[at - 1].is_ascii_alphanumeric();
                word_start
                    && KEY_PREFIXES
                        .iter()
                        .any(|p| bytes[at..run_end].starts_with(p.as_bytes()))
            })
        };
        if let Some(start) = secret_start {
            // Runs start and end at ASCII bytes, so these are character boundaries.
            out.push_str(&text[copied..start]);
            out.push_str(REDACTED);
            copied = run_end;
        }
        i = run_end;
    }
    // Every redaction moves `copied` past its run.
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let e = ApiError::invalid("messages", "`messages` must be a non-empty array.");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "messages");
        assert_eq!(v["error"]["code"], serde_json::Value::Null);
        assert_eq!(
            v["error"]["message"],
            "`messages` must be a non-empty array."
        );
    }

    fn normalized(status: u16, body: &str) -> serde_json::Value {
        serde_json::from_slice(&openai_error_body(status, body.as_bytes()).expect("rewritten"))
            .unwrap()
    }

    #[test]
    fn provider_errors_become_openai_shaped() {
        assert_eq!(
            openai_error_body(429, br#"{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#),
            None,
            "OpenAI's own errors pass untouched"
        );
        let a = normalized(
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#,
        );
        assert_eq!(a["error"]["type"], "overloaded_error");
        assert_eq!(a["error"]["message"], "Overloaded");
        let g = normalized(
            400,
            r#"{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT"}}"#,
        );
        assert_eq!(
            (g["error"]["type"].as_str(), g["error"]["code"].as_str()),
            (Some("invalid_request_error"), Some("invalid_argument"))
        );
        let v = normalized(
            404,
            r#"{"object":"error","message":"The model `x` does not exist.","type":"NotFoundError","code":404}"#,
        );
        assert_eq!(v["error"]["message"], "The model `x` does not exist.");
        let f = normalized(
            422,
            r#"{"detail":[{"loc":["body"],"msg":"field required"}]}"#,
        );
        assert!(
            f["error"]["message"]
                .as_str()
                .unwrap()
                .contains("field required")
        );
        let t = normalized(502, "Bad Gateway");
        assert_eq!(
            (t["error"]["message"].as_str(), t["error"]["type"].as_str()),
            (Some("Bad Gateway"), Some("api_error"))
        );
        let e = normalized(500, "");
        assert!(e["error"]["message"].as_str().unwrap().contains("500"));
        assert!(e["error"]["param"].is_null());
    }

    fn fixture(path: &str) -> Vec<u8> {
        let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
    }

    fn assert_gateway_auth_error(status: u16, body: &[u8]) {
        let out = openai_error_body(status, body).expect("replaced");
        let text = String::from_utf8(out.clone()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["code"], PROVIDER_AUTH_CODE, "{text}");
        assert_eq!(v["error"]["type"], "api_error");
        assert!(v["error"]["param"].is_null());
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("refused the gateway's credential"),
            "{message}"
        );
        assert!(message.contains(&status.to_string()), "{message}");
        for quoted in ["x9Qa", "sk-", "api-keys", "x-api-key", "not allowed"] {
            assert!(!text.contains(quoted), "{quoted} relayed: {text}");
        }
    }

    #[test]
    fn openai_401_never_relays_the_operator_key() {
        let body = fixture("openai/error-401-invalid-api-key.json");
        assert!(
            String::from_utf8_lossy(&body).contains("x9Qa"),
            "the sample quotes the key"
        );
        assert_gateway_auth_error(401, &body);
    }

    #[test]
    fn every_provider_auth_refusal_becomes_the_gateway_message() {
        let anthropic = br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"},"request_id":"req_011CzBaNkPfSSMpLsBPfcYJV"}"#;
        assert_gateway_auth_error(401, anthropic);
        let forbidden = br#"{"error":{"message":"You are not allowed to sample from this model","type":"invalid_request_error","param":null,"code":null}}"#;
        assert_gateway_auth_error(403, forbidden);
        let gemini = br#"{"error":{"code":403,"message":"Method doesn't allow unregistered callers. Please use API Key sk-test-1234.","status":"PERMISSION_DENIED"}}"#;
        assert_gateway_auth_error(403, gemini);
        assert_gateway_auth_error(401, b"Unauthorized");
        assert_gateway_auth_error(401, b"");
    }

    #[test]
    fn openai_shaped_errors_are_redacted_and_otherwise_kept() {
        let body = br#"{"error":{"message":"Invalid header value: Bearer sk-proj-abcDEF123456ghiJKL7890mnoPQR. Retry.","type":"invalid_request_error","param":"headers","code":"invalid_header"}}"#;
        let out = openai_error_body(400, body).expect("a key to redact");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["error"]["message"],
            "Invalid header value: Bearer [redacted]. Retry."
        );
        assert_eq!(
            (
                &v["error"]["type"],
                &v["error"]["param"],
                &v["error"]["code"]
            ),
            (
                &serde_json::json!("invalid_request_error"),
                &serde_json::json!("headers"),
                &serde_json::json!("invalid_header")
            )
        );
        for clean in [
            "openai/error-400-invalid-request.json",
            "openai/error-429-rate-limit-exceeded.json",
        ] {
            assert_eq!(openai_error_body(400, &fixture(clean)), None, "{clean}");
        }
    }

    #[test]
    fn other_shapes_are_redacted_as_they_are_rewritten() {
        let vllm = normalized(
            400,
            r#"{"object":"error","message":"bad key AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY in url","type":"BadRequestError","code":400}"#,
        );
        assert_eq!(vllm["error"]["message"], "bad key [redacted] in url");
        let anthropic = normalized(
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"header sk-ant-api03-Xy_9 is malformed"}}"#,
        );
        assert_eq!(
            anthropic["error"]["message"],
            "header [redacted] is malformed"
        );
        // A secret cut by the 1000-character limit would be too short to recognize.
        let long_text = format!("{} 0123456789abcdef0123456789abcdef01", "x".repeat(990));
        let plain = normalized(502, &long_text);
        let message = plain["error"]["message"].as_str().unwrap();
        assert_eq!(message, format!("{} [redacted", "x".repeat(990)));
    }

    #[test]
    fn key_like_substrings_are_redacted() {
        let cases = [
            (
                "Incorrect API key provided: sk-proj-****x9Qa. See",
                "Incorrect API key provided: [redacted]. See",
            ),
            ("sk-abc", "[redacted]"),
            ("key sk-ant-api03-AbC_d-E", "key [redacted]"),
            ("url ?key=AIzaSyA1", "url ?key=[redacted]"),
            ("path/xai-abc9 and gsk_zz", "path/[redacted] and [redacted]"),
            (
                "hex 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08!",
                "hex [redacted]!",
            ),
            (
                "jwt eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ.x",
                "jwt [redacted].[redacted].x",
            ),
            ("é sk-x é", "é [redacted] é"),
        ];
        for (text, redacted) in cases {
            assert_eq!(redact_secrets(text), redacted, "{text}");
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for text in [
            "Rate limit reached for gpt-4.1-mini in organization org-9VWtTh9xCIaaiX5satDdEM91 on tokens per min (TPM): Limit 200000, Used 199368, Requested 1214.",
            "Visit https://platform.openai.com/account/rate-limits to learn more.",
            "request req_011CzBaNkPfSSMpLsBPfcYJV for claude-3-5-sonnet-20241022 failed",
            "a task-runner and a risk-free desk-sk-thing",
            "prompt_tokens_details_cached_tokens_and_more_words",
            "",
        ] {
            assert!(matches!(redact_secrets(text), Cow::Borrowed(_)), "{text}");
        }
    }
}
