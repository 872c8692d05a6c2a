//! Extractors whose rejections use the API's error shape: JSON bodies, and the caller
//! (the API key of the request's `Authorization: Bearer` header, verified).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use serde::de::DeserializeOwned;

use payments_core::error::shown;

use crate::auth::{bearer_key, Caller};
use crate::error::{ApiError, QUOTED};
use crate::state::AppState;

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Caller::verify(&state.pool, &state.keys, bearer_key(&parts.headers)?).await
    }
}

pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::BodyTooLarge),
            // A parser's message quotes the offending input (serde: `invalid type: string "…"`).
            Err(rejection) => Err(ApiError::invalid("body_invalid", shown(&rejection.body_text(), QUOTED), None)),
        }
    }
}

/// A JSON body that may be left out (an empty body is `T::default()`), as
/// Stripe's capture and cancel take one.
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(bytes) => bytes,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::BodyTooLarge)
            }
            Err(rejection) => {
                return Err(ApiError::invalid("body_invalid", shown(&rejection.body_text(), QUOTED), None))
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(OptionalJsonBody)
            .map_err(|e| ApiError::invalid("body_invalid", shown(&e.to_string(), QUOTED), None))
    }
}
