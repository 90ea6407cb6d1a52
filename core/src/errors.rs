//! OpenAI-style error responses: `{"error":{"message","type","param","code"}}`.
//!
//! Clients (and the official SDKs) map the status and `type` to their own error classes,
//! so every refusal the gateway makes goes through [`ApiError`].

use serde::Serialize;

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
    /// The gateway or the provider failed.
    ApiError,
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

    /// A 401 `authentication_error`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self {
            status: 401,
            kind: ErrorKind::AuthenticationError,
            message: message.into(),
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    /// A 403 `permission_error`.
    pub fn forbidden(param: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            status: 403,
            kind: ErrorKind::PermissionError,
            message: message.into(),
            param: param.map(str::to_owned),
            code: None,
        }
    }

    /// A 404 `invalid_request_error` for a model no provider serves.
    pub fn model_not_found(model: &str) -> Self {
        Self {
            status: 404,
            kind: ErrorKind::InvalidRequestError,
            message: format!(
                "The model `{model}` does not exist or is not served by this gateway."
            ),
            param: Some("model".into()),
            code: Some("model_not_found"),
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

/// Rewrites a provider's error body into OpenAI's shape, keeping its message; `None` when
/// it already has that shape. Handles Anthropic (`{"type":"error","error":{…}}`), Gemini
/// (`{"error":{"code","message","status"}}`), vLLM/FastAPI (`{"message"}`, `{"detail"}`)
/// and plain text.
pub fn openai_error_body(status: u16, body: &[u8]) -> Option<Vec<u8>> {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let is_openai = error.is_some_and(|e| {
        e.get("message").is_some_and(|m| m.is_string())
            && e.get("type").is_some_and(|t| t.is_string())
    }) && parsed.as_ref().and_then(|v| v.get("type")).is_none();
    if is_openai {
        return None;
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
                text.chars().take(1000).collect()
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
    let out = serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    serde_json::to_vec(&out).ok()
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

    #[test]
    fn auth_error_carries_code() {
        let e = ApiError::unauthenticated("Incorrect API key provided.");
        assert_eq!(e.status, 401);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["type"], "authentication_error");
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert!(v["error"]["param"].is_null());
    }
}
