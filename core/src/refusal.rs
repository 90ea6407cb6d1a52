//! Every reason the gateway itself says no to a call, each with a stable `code`.
//!
//! A [`Refusal`] is what decisions return; [`Refusal::to_error`] renders it as the
//! OpenAI-shaped [`ApiError`] the client gets. The `code` is part of the contract: clients
//! branch on it and logs and metrics use it as a label, so a variant's code never changes.

use crate::errors::{ApiError, ErrorKind};

/// A reason the gateway answers a call itself instead of passing it to a provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No `Authorization: Bearer` header.
    #[error(
        "You didn't provide an API key. Send it in an Authorization header using Bearer auth \
         (Authorization: Bearer YOUR_KEY)."
    )]
    MissingKey,
    /// No virtual key has this hash.
    #[error("Incorrect API key provided. Check the key or ask your administrator for a new one.")]
    UnknownKey,
    /// The key was revoked by an operator, expired, or presented by a rotated-out secret.
    #[error("This API key has been revoked or has expired.")]
    RevokedKey,
    /// The key's allow-list does not name the model.
    #[error("This API key is not allowed to use the model `{model}`.")]
    ModelNotAllowed {
        /// The model asked for.
        model: String,
    },
    /// No provider serves the model.
    #[error("The model `{model}` does not exist or is not served by this gateway.")]
    ModelNotFound {
        /// The model asked for.
        model: String,
    },
    /// A proxied endpoint was called without a body.
    #[error("The request has no body; expected a JSON object with `model`.")]
    NoBody,
    /// The body is not JSON, or not sent as JSON.
    #[error("{message}")]
    BadJson {
        /// What is wrong with it.
        message: String,
    },
    /// One request field is invalid.
    #[error("{message}")]
    InvalidParam {
        /// The field at fault.
        param: String,
        /// What is wrong with it.
        message: String,
    },
    /// The request as a whole is invalid (empty body, not an object).
    #[error("{message}")]
    BadRequest {
        /// What is wrong with it.
        message: String,
    },
    /// The body is over the configured cap.
    #[error("{message}")]
    BodyTooLarge {
        /// The cap, as the client reads it.
        message: String,
    },
    /// An option whose cost the gateway could not meter.
    #[error("{message}")]
    UnmeteredOption {
        /// The option.
        param: String,
        /// Why it is refused.
        message: String,
    },
    /// The control plane could not be asked, failed, or answered nonsense.
    #[error("The gateway cannot reach its control plane to check the API key; try again shortly.")]
    ControlPlaneUnavailable,
    /// A body arrived for a call that was never admitted.
    #[error("The gateway could not check this request.")]
    NotAdmitted,
    /// The worker holds as many request bytes as it may.
    #[error("The gateway is handling as much request data as it can; retry shortly.")]
    Overloaded,
    /// The control plane routed the model to a provider kind this filter does not know.
    #[error("The gateway is misconfigured for this model's provider.")]
    MisconfiguredProvider,
    /// The model's provider does not offer this endpoint.
    #[error("{message}")]
    EndpointNotSupported {
        /// Which provider and endpoint.
        message: String,
    },
    /// The URL names no endpoint the gateway serves.
    #[error("{message}")]
    EndpointNotFound {
        /// The method and path, and what is served.
        message: String,
    },
    /// A requests-per-minute limit is used up.
    #[error(
        "Rate limit reached for {subject} on requests per min (RPM): Limit {limit}, \
         Requested 1. Please try again in {}.",
        crate::limits::openai_duration(std::time::Duration::from_millis(*retry_after_ms))
    )]
    RequestsPerMinute {
        /// Whose limit, as a phrase: "this API key", "user `alice`", ...
        subject: String,
        /// The limit.
        limit: u64,
        /// How long until a request is free again.
        retry_after_ms: u64,
    },
    /// A tokens-per-minute limit cannot hold the call's tokens (prompt + capped output).
    #[error(
        "{}",
        tokens_message(subject, *limit, *requested, *retry_after_ms)
    )]
    TokensPerMinute {
        /// Whose limit, as a phrase: "this API key", "user `alice`", ...
        subject: String,
        /// The limit.
        limit: u64,
        /// The tokens the call holds: its prompt and its capped output.
        requested: u64,
        /// How long until that many tokens are free again.
        retry_after_ms: u64,
    },
    /// Too many calls from the client's address failed to authenticate: every call from it
    /// is refused for a while, before its key is looked at (a brute-force brake).
    #[error(
        "Too many requests with missing or invalid API keys from your address. Please try \
         again in {}.",
        crate::limits::openai_duration(std::time::Duration::from_millis(*retry_after_ms))
    )]
    FailedAuthentications {
        /// How long until the address may try again.
        retry_after_ms: u64,
    },
    /// The endpoint exists but not with this method.
    #[error("{message}")]
    MethodNotAllowed {
        /// The method, path and the method to use.
        message: String,
    },
    /// A budget the call is held against has less left than the call could cost.
    #[error(
        "You exceeded your current quota: the {} budget of {subject} has less left than \
         this request could cost. Ask your administrator to raise it, or wait for its next period.",
        period_name(period)
    )]
    InsufficientQuota {
        /// Whose budget: `key:<id>`, `user:<name>` or `team:<name>`.
        subject: String,
        /// `day`, `month` or `total`.
        period: String,
    },
    /// The key's spending is limited and the model has no price to hold its cost at.
    #[error(
        "The model `{model}` has no price, and this API key's spending is limited; \
         ask your administrator to price the model."
    )]
    ModelNotPriced {
        /// The model asked for.
        model: String,
    },
}

/// A budget period as a message reads it.
fn period_name(period: &str) -> &str {
    match period {
        "day" => "daily",
        "month" => "monthly",
        "total" => "total",
        _ => period,
    }
}

/// OpenAI's message for a token limit, and its own for a call larger than the limit.
fn tokens_message(subject: &str, limit: u64, requested: u64, retry_after_ms: u64) -> String {
    if requested > limit {
        return format!(
            "Request too large for {subject} on tokens per min (TPM): Limit {limit}, \
             Requested {requested}. The input or output tokens (`max_tokens`) must be reduced \
             in order to run successfully."
        );
    }
    format!(
        "Rate limit reached for {subject} on tokens per min (TPM): Limit {limit}, Requested \
         {requested}. Please try again in {}.",
        crate::limits::openai_duration(std::time::Duration::from_millis(retry_after_ms))
    )
}

impl Refusal {
    /// The stable machine-readable code (the body's `code`, and the label in logs).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::MissingKey => "missing_api_key",
            Refusal::UnknownKey => "invalid_api_key",
            Refusal::RevokedKey => "api_key_revoked",
            Refusal::ModelNotAllowed { .. } => "model_not_allowed",
            Refusal::ModelNotFound { .. } => "model_not_found",
            Refusal::NoBody => "missing_body",
            Refusal::BadJson { .. } => "invalid_json",
            Refusal::InvalidParam { .. } => "invalid_parameter",
            Refusal::BadRequest { .. } => "invalid_request",
            Refusal::BodyTooLarge { .. } => "request_too_large",
            Refusal::UnmeteredOption { .. } => "unmetered_option",
            Refusal::ControlPlaneUnavailable => "control_plane_unavailable",
            Refusal::NotAdmitted => "not_admitted",
            Refusal::Overloaded => "gateway_overloaded",
            Refusal::MisconfiguredProvider => "provider_misconfigured",
            Refusal::EndpointNotSupported { .. } => "endpoint_not_supported",
            Refusal::EndpointNotFound { .. } => "unknown_url",
            Refusal::MethodNotAllowed { .. } => "method_not_allowed",
            // OpenAI's one code for every rate limit; the `type` tells them apart.
            Refusal::RequestsPerMinute { .. }
            | Refusal::TokensPerMinute { .. }
            | Refusal::FailedAuthentications { .. } => "rate_limit_exceeded",
            Refusal::InsufficientQuota { .. } => "insufficient_quota",
            Refusal::ModelNotPriced { .. } => "model_not_priced",
        }
    }

    /// The HTTP status and the error body's `type`.
    fn status_and_kind(&self) -> (u16, ErrorKind) {
        match self {
            Refusal::MissingKey | Refusal::UnknownKey | Refusal::RevokedKey => {
                (401, ErrorKind::AuthenticationError)
            }
            Refusal::ModelNotAllowed { .. } => (403, ErrorKind::PermissionError),
            Refusal::ModelNotFound { .. } | Refusal::EndpointNotFound { .. } => {
                (404, ErrorKind::InvalidRequestError)
            }
            Refusal::MethodNotAllowed { .. } => (405, ErrorKind::InvalidRequestError),
            Refusal::BodyTooLarge { .. } => (413, ErrorKind::InvalidRequestError),
            Refusal::NoBody
            | Refusal::BadJson { .. }
            | Refusal::InvalidParam { .. }
            | Refusal::BadRequest { .. }
            | Refusal::UnmeteredOption { .. }
            | Refusal::EndpointNotSupported { .. } => (400, ErrorKind::InvalidRequestError),
            Refusal::NotAdmitted => (500, ErrorKind::ApiError),
            Refusal::MisconfiguredProvider => (502, ErrorKind::ApiError),
            Refusal::ControlPlaneUnavailable | Refusal::Overloaded => (503, ErrorKind::ApiError),
            Refusal::RequestsPerMinute { .. } | Refusal::FailedAuthentications { .. } => {
                (429, ErrorKind::Requests)
            }
            Refusal::TokensPerMinute { .. } => (429, ErrorKind::Tokens),
            Refusal::InsufficientQuota { .. } => (429, ErrorKind::InsufficientQuota),
            Refusal::ModelNotPriced { .. } => (500, ErrorKind::ApiError),
        }
    }

    /// The request field at fault, if any.
    fn param(&self) -> Option<&str> {
        match self {
            Refusal::ModelNotAllowed { .. }
            | Refusal::ModelNotFound { .. }
            | Refusal::ModelNotPriced { .. }
            | Refusal::EndpointNotSupported { .. } => Some("model"),
            Refusal::InvalidParam { param, .. } | Refusal::UnmeteredOption { param, .. } => {
                Some(param)
            }
            _ => None,
        }
    }

    /// The HTTP status the client gets.
    pub fn status(&self) -> u16 {
        self.status_and_kind().0
    }

    /// The OpenAI-shaped error the client gets.
    pub fn to_error(&self) -> ApiError {
        let (status, kind) = self.status_and_kind();
        ApiError {
            status,
            kind,
            message: self.to_string(),
            param: self.param().map(str::to_owned),
            code: Some(self.code()),
        }
    }

    /// A body over `limit` bytes.
    pub fn body_too_large(limit: usize) -> Self {
        Refusal::BodyTooLarge {
            message: format!(
                "The request body is larger than the gateway's limit of {limit} bytes."
            ),
        }
    }

    /// A field-level refusal.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Refusal::InvalidParam {
            param: param.into(),
            message: message.into(),
        }
    }
}

/// Lifts an error from core's validators, which still build [`ApiError`]s (only 400, 404,
/// 405 and 413 ones): the codes they set pick the variant, the rest are field-level or
/// whole-request problems.
impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        match (e.code, e.param) {
            (Some("unmetered_option"), param) => Refusal::UnmeteredOption {
                param: param.unwrap_or_default(),
                message: e.message,
            },
            (Some("method_not_allowed"), _) => Refusal::MethodNotAllowed { message: e.message },
            (Some("unknown_url"), _) => Refusal::EndpointNotFound { message: e.message },
            (Some("request_too_large"), _) => Refusal::BodyTooLarge { message: e.message },
            (Some("invalid_json"), _) => Refusal::BadJson { message: e.message },
            (Some("missing_body"), _) => Refusal::NoBody,
            (_, Some(param)) => Refusal::InvalidParam {
                param,
                message: e.message,
            },
            (_, None) => Refusal::BadRequest { message: e.message },
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        r.to_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::Endpoint;
    use std::collections::HashSet;

    fn every_variant() -> Vec<Refusal> {
        let s = || "x".to_owned();
        vec![
            Refusal::MissingKey,
            Refusal::UnknownKey,
            Refusal::RevokedKey,
            Refusal::ModelNotAllowed { model: s() },
            Refusal::ModelNotFound { model: s() },
            Refusal::NoBody,
            Refusal::BadJson { message: s() },
            Refusal::InvalidParam {
                param: s(),
                message: s(),
            },
            Refusal::BadRequest { message: s() },
            Refusal::body_too_large(1),
            Refusal::UnmeteredOption {
                param: s(),
                message: s(),
            },
            Refusal::ControlPlaneUnavailable,
            Refusal::NotAdmitted,
            Refusal::Overloaded,
            Refusal::MisconfiguredProvider,
            Refusal::EndpointNotSupported { message: s() },
            Refusal::EndpointNotFound { message: s() },
            Refusal::MethodNotAllowed { message: s() },
            Refusal::RequestsPerMinute {
                subject: s(),
                limit: 1,
                retry_after_ms: 1,
            },
            Refusal::TokensPerMinute {
                subject: s(),
                limit: 1,
                requested: 1,
                retry_after_ms: 1,
            },
            Refusal::FailedAuthentications { retry_after_ms: 1 },
            Refusal::InsufficientQuota {
                subject: s(),
                period: s(),
            },
            Refusal::ModelNotPriced { model: s() },
        ]
    }

    /// Fails to compile when a variant is added and not listed in `every_variant`.
    fn listed(r: &Refusal) {
        match r {
            Refusal::MissingKey
            | Refusal::UnknownKey
            | Refusal::RevokedKey
            | Refusal::ModelNotAllowed { .. }
            | Refusal::ModelNotFound { .. }
            | Refusal::NoBody
            | Refusal::BadJson { .. }
            | Refusal::InvalidParam { .. }
            | Refusal::BadRequest { .. }
            | Refusal::BodyTooLarge { .. }
            | Refusal::UnmeteredOption { .. }
            | Refusal::ControlPlaneUnavailable
            | Refusal::NotAdmitted
            | Refusal::Overloaded
            | Refusal::MisconfiguredProvider
            | Refusal::EndpointNotSupported { .. }
            | Refusal::EndpointNotFound { .. }
            | Refusal::MethodNotAllowed { .. }
            | Refusal::RequestsPerMinute { .. }
            | Refusal::TokensPerMinute { .. }
            | Refusal::FailedAuthentications { .. }
            | Refusal::InsufficientQuota { .. }
            | Refusal::ModelNotPriced { .. } => {}
        }
    }

    #[test]
    fn codes_are_unique_snake_case_and_bodies_openai_shaped() {
        let all = every_variant();
        let mut codes = HashSet::new();
        for r in &all {
            listed(r);
            let code = r.code();
            // Rate limits share OpenAI's one code; their `type` tells them apart.
            assert!(
                codes.insert(code) || code == "rate_limit_exceeded",
                "code {code} used twice"
            );
            assert!(
                !code.is_empty()
                    && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    && !code.starts_with('_')
                    && !code.ends_with('_'),
                "{code} is not snake_case"
            );
            let e = r.to_error();
            assert!((400..600).contains(&e.status), "{code}: {}", e.status);
            let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
            let obj = v.as_object().unwrap();
            assert_eq!(obj.keys().collect::<Vec<_>>(), ["error"], "{code}");
            let err = v["error"].as_object().unwrap();
            let mut keys: Vec<&str> = err.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["code", "message", "param", "type"], "{code}");
            assert_eq!(err["code"], code);
            assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert!(err["param"].is_null() || err["param"].is_string());
            let kind = err["type"].as_str().unwrap();
            let expected = match e.status {
                401 => "authentication_error",
                403 => "permission_error",
                429 if matches!(r, Refusal::TokensPerMinute { .. }) => "tokens",
                429 if code == "insufficient_quota" => "insufficient_quota",
                429 => "requests",
                400..=499 => "invalid_request_error",
                _ => "api_error",
            };
            assert_eq!(kind, expected, "{code}");
        }
        assert_eq!(codes.len(), 21);
        assert_eq!(all.len(), 23);
    }

    #[test]
    fn codes_clients_rely_on_are_kept() {
        assert_eq!(Refusal::UnknownKey.code(), "invalid_api_key");
        assert_eq!(
            Refusal::ModelNotFound { model: "m".into() }.code(),
            "model_not_found"
        );
        assert_eq!(Refusal::body_too_large(9).code(), "request_too_large");
        let lifted = Refusal::from(ApiError::too_large(9));
        assert_eq!(lifted, Refusal::body_too_large(9));
        assert_eq!(lifted.status(), 413);
        assert_eq!(Refusal::Overloaded.code(), "gateway_overloaded");
        assert_eq!(
            Refusal::UnmeteredOption {
                param: "p".into(),
                message: "m".into()
            }
            .code(),
            "unmetered_option"
        );
    }

    #[test]
    fn validator_errors_keep_their_param_and_code() {
        let method = Refusal::from(Endpoint::parse(b"GET", b"/v1/chat/completions").unwrap_err());
        assert_eq!(
            (method.status(), method.code()),
            (405, "method_not_allowed")
        );
        let url = Refusal::from(Endpoint::parse(b"POST", b"/v2/x").unwrap_err());
        assert_eq!((url.status(), url.code()), (404, "unknown_url"));
        let field = Refusal::from(ApiError::invalid("n", "`n` must be 1."));
        assert_eq!(field, Refusal::invalid("n", "`n` must be 1."));
        assert_eq!(field.to_error().param.as_deref(), Some("n"));
        let whole = Refusal::from(ApiError::bad_request("The request body is not an object."));
        assert_eq!((whole.status(), whole.code()), (400, "invalid_request"));
    }

    #[test]
    fn body_problems_named_at_header_time_keep_their_codes_from_the_validator() {
        let lifted = |body: &[u8]| {
            let e = crate::validation::request(&Endpoint::ChatCompletions, body, 1024);
            e.map(|_| ()).map_err(Refusal::from)
        };
        let bad = lifted(b"{\"model\":").unwrap_err();
        assert!(matches!(bad, Refusal::BadJson { .. }), "{bad:?}");
        assert_eq!((bad.status(), bad.code()), (400, "invalid_json"));
        assert!(bad.to_string().contains("not valid JSON"), "{bad}");
        assert_eq!(lifted(b"  "), Err(Refusal::NoBody));
    }

    #[test]
    fn a_spent_rate_limit_reads_as_openais_429() {
        let e = Refusal::RequestsPerMinute {
            subject: "this API key".into(),
            limit: 10,
            retry_after_ms: 6_000,
        }
        .to_error();
        assert_eq!(e.status, 429);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["type"], "requests");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("Rate limit reached"), "{message}");
        assert!(message.contains("Limit 10"), "{message}");
        assert!(message.ends_with("try again in 6s."), "{message}");
        assert!(
            message.contains("for this API key on requests"),
            "{message}"
        );
    }

    #[test]
    fn a_spent_token_limit_reads_as_openais_429_of_type_tokens() {
        let refusal = |requested| Refusal::TokensPerMinute {
            subject: "user `alice`".into(),
            limit: 1_000,
            requested,
            retry_after_ms: 1_500,
        };
        let e = refusal(300).to_error();
        assert_eq!(e.status, 429);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["type"], "tokens");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        assert_eq!(
            v["error"]["message"],
            "Rate limit reached for user `alice` on tokens per min (TPM): Limit 1000, \
             Requested 300. Please try again in 1.5s."
        );
        let too_large = refusal(1_001).to_string();
        assert!(
            too_large.starts_with("Request too large for user `alice`"),
            "{too_large}"
        );
    }

    #[test]
    fn the_failed_auth_brake_is_a_429_with_the_rate_limit_code() {
        let e = Refusal::FailedAuthentications {
            retry_after_ms: 30_000,
        }
        .to_error();
        assert_eq!((e.status, e.code), (429, Some("rate_limit_exceeded")));
        assert!(e.message.ends_with("try again in 30s."), "{}", e.message);
    }

    #[test]
    fn a_spent_budget_reads_as_openais_billing_error_naming_subject_and_period() {
        let e = Refusal::InsufficientQuota {
            subject: "team:ml".into(),
            period: "month".into(),
        }
        .to_error();
        assert_eq!(e.status, 429);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["type"], "insufficient_quota");
        assert_eq!(v["error"]["code"], "insufficient_quota");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("You exceeded your current quota"),
            "{message}"
        );
        assert!(message.contains("monthly budget of team:ml"), "{message}");
    }

    #[test]
    fn messages_name_the_model() {
        let e = Refusal::ModelNotAllowed {
            model: "gpt-4o".into(),
        }
        .to_error();
        assert_eq!((e.status, e.param.as_deref()), (403, Some("model")));
        assert!(e.message.contains("`gpt-4o`"));
    }
}
