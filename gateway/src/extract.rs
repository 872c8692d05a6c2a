//! A JSON body extractor whose rejections use the API's error shape.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::Json;
use serde::de::DeserializeOwned;

use payments_core::error::shown;

use crate::error::{ApiError, QUOTED};

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
