//! A JSON body extractor whose rejections use the API's error shape.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::Json;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::BodyTooLarge),
            Err(rejection) => Err(ApiError::invalid("body_invalid", shortened(rejection.body_text()), None)),
        }
    }
}

/// A parser's message quotes the offending input (serde: `invalid type: string
/// "…"`); keep at most 200 characters of it, so no answer grows with the input.
pub fn shortened(message: String) -> String {
    match message.char_indices().nth(200) {
        None => message,
        Some((cut, _)) => format!("{}…", &message[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::shortened;

    #[test]
    fn long_messages_are_cut() {
        assert_eq!(shortened("short".into()), "short");
        let cut = shortened("é".repeat(5000));
        assert_eq!(cut.chars().count(), 201);
    }
}
