//! Which OpenAI-compatible endpoints the gateway serves.

use crate::errors::ApiError;

/// An endpoint the gateway knows how to authorize, validate and meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
}

impl Endpoint {
    /// Recognizes a request line; anything else is refused rather than proxied unmetered.
    pub fn parse(method: &[u8], path: &[u8]) -> Result<Self, ApiError> {
        // The query string never selects an endpoint.
        let path = path.split(|b| *b == b'?').next().unwrap_or_default();
        let path = path.strip_suffix(b"/").unwrap_or(path);
        let endpoint = match path {
            b"/v1/chat/completions" => Endpoint::ChatCompletions,
            _ => {
                return Err(ApiError {
                    status: 404,
                    message: format!(
                        "Unknown request URL: {} {}. Tollgate serves POST /v1/chat/completions.",
                        String::from_utf8_lossy(method),
                        String::from_utf8_lossy(path)
                    ),
                    kind: crate::errors::ErrorKind::InvalidRequestError,
                    param: None,
                    code: Some("unknown_url"),
                });
            }
        };
        if method != b"POST" {
            return Err(ApiError {
                status: 405,
                message: format!(
                    "Method {} is not allowed here; use POST.",
                    String::from_utf8_lossy(method)
                ),
                kind: crate::errors::ErrorKind::InvalidRequestError,
                param: None,
                code: Some("method_not_allowed"),
            });
        }
        Ok(endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_completions() {
        assert_eq!(
            Endpoint::parse(b"POST", b"/v1/chat/completions?x=1"),
            Ok(Endpoint::ChatCompletions)
        );
        assert_eq!(
            Endpoint::parse(b"POST", b"/v1/chat/completions/"),
            Ok(Endpoint::ChatCompletions)
        );
    }

    #[test]
    fn others_refused() {
        assert_eq!(
            Endpoint::parse(b"GET", b"/v1/chat/completions")
                .unwrap_err()
                .status,
            405
        );
        let e = Endpoint::parse(b"POST", b"/admin\xff").unwrap_err();
        assert_eq!(e.status, 404);
        assert!(e.message.contains("/admin"));
    }
}
