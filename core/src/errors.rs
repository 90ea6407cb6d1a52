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
