//! `ApiError`: every refusal and failure of the API as JSON
//! `{"error":{"code":"not_found","message":"…"}}` with a stable snake_case `code`.
//!
//! Store failures are logged with their cause and answered `500 internal` with nothing of
//! it: no SQL, no paths, no stack traces reach a client.

use crate::store::StoreError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use thiserror::Error;

/// Why a request was refused or failed.
#[derive(Debug, Error)]
pub enum ApiError {
    /// No session, or one that is tampered with, expired, revoked or of a disabled user.
    #[error("sign in first: the session is missing, expired or ended")]
    Unauthenticated,
    /// Wrong user name or password (never says which).
    #[error("wrong user name or password")]
    InvalidCredentials,
    /// Too many failed logins for this user or from this address.
    #[error("too many failed logins; try again in {retry_after_s} s")]
    TooManyAttempts {
        /// Seconds until the window ends.
        retry_after_s: u64,
    },
    /// The caller's role does not allow this (never used to hide an object: see `NotFound`).
    #[error("{0}")]
    Forbidden(String),
    /// A cookie-authenticated change without the session's CSRF token.
    #[error("missing or wrong x-csrf-token header")]
    Csrf,
    /// No such object, or one the caller may not see.
    #[error("not found")]
    NotFound,
    /// The request names something that already exists.
    #[error("{0}")]
    Conflict(String),
    /// A field's value is wrong.
    #[error("`{field}` {problem}")]
    Invalid {
        /// The field, e.g. `role` or `name`.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// The body or query could not be read (not JSON, wrong type, unknown field).
    #[error("{0}")]
    BadRequest(String),
    /// The body is larger than `[api] body_limit_bytes`.
    #[error("request body too large")]
    TooLarge,
    /// No route has this path.
    #[error("no such route")]
    NoRoute,
    /// The route has no such method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The service is not ready (its database does not answer).
    #[error("unavailable")]
    Unavailable,
    /// Anything the client cannot fix; the cause is logged, not answered.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// The error's stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::TooManyAttempts { .. } => "too_many_attempts",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Csrf => "csrf_failed",
            ApiError::NotFound => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Invalid { .. } => "invalid",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::TooLarge => "too_large",
            ApiError::NoRoute => "no_route",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal => "internal",
        }
    }

    /// The error's HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated | ApiError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ApiError::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Forbidden(_) | ApiError::Csrf => StatusCode::FORBIDDEN,
            ApiError::NotFound | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A refusal naming `field`.
    pub fn invalid(field: impl Into<String>, problem: impl ToString) -> Self {
        ApiError::Invalid {
            field: field.into(),
            problem: problem.to_string(),
        }
    }
}

/// The JSON body of every error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// An error's code and message.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code, e.g. `not_found`.
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
            },
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let ApiError::TooManyAttempts { retry_after_s } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
        }
        if matches!(
            self,
            ApiError::Unauthenticated | ApiError::InvalidCredentials
        ) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        // A client's number too large for the store is the client's mistake, not ours.
        if let StoreError::OutOfRange { field, .. } = e {
            return ApiError::invalid(field, format!("is at most {}", i64::MAX));
        }
        // The cause goes to the log only: SQL and paths are for operators.
        tracing::error!(error = %e, "API request failed in the store");
        ApiError::Internal
    }
}

impl From<crate::users::UserRuleError> for ApiError {
    fn from(e: crate::users::UserRuleError) -> Self {
        ApiError::Forbidden(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(e: ApiError) -> (StatusCode, serde_json::Value) {
        let response = e.into_response();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn errors_are_json_with_a_stable_code() {
        let (status, json) =
            body(ApiError::invalid("role", "must be admin, member or viewer")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(json["error"]["code"], "invalid");
        assert_eq!(
            json["error"]["message"],
            "`role` must be admin, member or viewer"
        );
    }

    #[tokio::test]
    async fn a_store_failure_answers_nothing_of_its_cause() {
        let cause = StoreError::DataDir(
            "/var/lib/secret-path".into(),
            std::io::Error::other("SELECT * FROM users"),
        );
        let (status, json) = body(cause.into()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "internal", "message": "internal error"}})
        );
    }
}
