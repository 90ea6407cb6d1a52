//! Which OpenAI-compatible endpoints the gateway serves.

use crate::errors::{ApiError, ErrorKind};

/// An endpoint the gateway knows how to authorize, validate and meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/completions` (legacy text completions).
    Completions,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/responses`.
    Responses,
    /// `GET /v1/models`: answered by the gateway from the key's allowed models.
    ListModels,
    /// `GET /v1/models/{id}`: answered by the gateway.
    GetModel(String),
}

impl Endpoint {
    /// Recognizes a request line; anything else is refused rather than proxied unmetered.
    pub fn parse(method: &[u8], path: &[u8]) -> Result<Self, ApiError> {
        // The query string never selects an endpoint.
        let path = path.split(|b| *b == b'?').next().unwrap_or_default();
        let path = path.strip_suffix(b"/").unwrap_or(path);
        let (endpoint, allowed): (Endpoint, &[u8]) = match path {
            b"/v1/chat/completions" => (Endpoint::ChatCompletions, b"POST"),
            b"/v1/completions" => (Endpoint::Completions, b"POST"),
            b"/v1/embeddings" => (Endpoint::Embeddings, b"POST"),
            b"/v1/responses" => (Endpoint::Responses, b"POST"),
            b"/v1/models" => (Endpoint::ListModels, b"GET"),
            _ => match path.strip_prefix(b"/v1/models/") {
                Some(id) if !id.is_empty() => {
                    let id = percent_decode(id).ok_or_else(|| unknown_url(method, path))?;
                    (Endpoint::GetModel(id), b"GET")
                }
                _ => return Err(unknown_url(method, path)),
            },
        };
        if method != allowed {
            return Err(ApiError {
                status: 405,
                message: format!(
                    "Method {} is not allowed on {}; use {}.",
                    String::from_utf8_lossy(method),
                    String::from_utf8_lossy(path),
                    String::from_utf8_lossy(allowed)
                ),
                kind: ErrorKind::InvalidRequestError,
                param: None,
                code: Some("method_not_allowed"),
            });
        }
        Ok(endpoint)
    }

    /// The path as OpenAI names it, e.g. `/v1/chat/completions`.
    pub fn openai_path(&self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Responses => "/v1/responses",
            Endpoint::ListModels | Endpoint::GetModel(_) => "/v1/models",
        }
    }

    /// Whether the call goes to a provider (the models endpoints are answered locally).
    pub fn is_proxied(&self) -> bool {
        !matches!(self, Endpoint::ListModels | Endpoint::GetModel(_))
    }
}

fn unknown_url(method: &[u8], path: &[u8]) -> ApiError {
    ApiError {
        status: 404,
        message: format!(
            "Unknown request URL: {} {}. Tollgate serves /v1/chat/completions, /v1/completions, \
             /v1/embeddings, /v1/responses and /v1/models.",
            String::from_utf8_lossy(method),
            String::from_utf8_lossy(path)
        ),
        kind: ErrorKind::InvalidRequestError,
        param: None,
        code: Some("unknown_url"),
    }
}

/// Decodes `%XX` escapes (model ids may contain `/` or `:`); `None` if not valid UTF-8.
fn percent_decode(bytes: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxied_endpoints() {
        assert_eq!(
            Endpoint::parse(b"POST", b"/v1/chat/completions?x=1"),
            Ok(Endpoint::ChatCompletions)
        );
        assert_eq!(
            Endpoint::parse(b"POST", b"/v1/chat/completions/"),
            Ok(Endpoint::ChatCompletions)
        );
        assert_eq!(
            Endpoint::parse(b"POST", b"/v1/completions"),
            Ok(Endpoint::Completions)
        );
        assert_eq!(
            Endpoint::parse(b"POST", b"/v1/embeddings"),
            Ok(Endpoint::Embeddings)
        );
        assert_eq!(
            Endpoint::parse(b"POST", b"/v1/responses"),
            Ok(Endpoint::Responses)
        );
    }

    #[test]
    fn model_endpoints() {
        assert_eq!(
            Endpoint::parse(b"GET", b"/v1/models"),
            Ok(Endpoint::ListModels)
        );
        assert_eq!(
            Endpoint::parse(b"GET", b"/v1/models/ft%3Agpt-4o%2Fx"),
            Ok(Endpoint::GetModel("ft:gpt-4o/x".into()))
        );
        assert!(!Endpoint::ListModels.is_proxied());
        assert_eq!(
            Endpoint::parse(b"GET", b"/v1/models/%ff")
                .unwrap_err()
                .status,
            404
        );
        assert_eq!(
            Endpoint::parse(b"GET", b"/v1/models/%4")
                .unwrap_err()
                .status,
            404
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
        assert_eq!(
            Endpoint::parse(b"POST", b"/v1/models").unwrap_err().status,
            405
        );
        let e = Endpoint::parse(b"POST", b"/admin\xff").unwrap_err();
        assert_eq!(e.status, 404);
        assert!(e.message.contains("/admin"));
    }
}
