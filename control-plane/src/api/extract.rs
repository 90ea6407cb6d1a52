//! Extractors that refuse a bad request with the API's JSON error instead of axum's plain
//! text: a body that is not the expected JSON, a query string that does not parse.

use super::error::ApiError;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// A JSON body of type `T`; a body that is not one is a 400 (413 when too large).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_refusal(&rejection)),
        }
    }
}

/// The API's error for a body axum could not read as JSON.
fn json_refusal(rejection: &JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::TooLarge;
    }
    // axum's text names the problem (a missing field, a wrong type, a line and column),
    // never anything of the server.
    ApiError::BadRequest(rejection.body_text())
}

/// A query string of type `T`; one that does not parse is a 400.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(query_refusal(&rejection)),
        }
    }
}

/// The API's error for a query string axum could not parse.
fn query_refusal(rejection: &QueryRejection) -> ApiError {
    ApiError::BadRequest(rejection.body_text())
}
