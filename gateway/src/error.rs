//! The gateway's one error type, and the one place SQLSTATEs become HTTP.
//! Bodies follow Stripe's shape: `{"error": {"type", "code", "message", "param"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Invalid { code: &'static str, message: String, param: Option<&'static str> },
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("the request body is larger than the gateway accepts")]
    BodyTooLarge,
    #[error("this API key lacks the {0} scope")]
    Forbidden(&'static str),
    #[error("the database is busy: no connection became free in time")]
    PoolExhausted,
    #[error("the database is unreachable")]
    DatabaseDown,
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
}

impl ApiError {
    pub fn invalid(code: &'static str, message: impl Into<String>, param: Option<&'static str>) -> Self {
        ApiError::Invalid { code, message: message.into(), param }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Timeout(_) => ApiError::PoolExhausted,
            other => {
                tracing::warn!(error = %other, "database pool error");
                ApiError::DatabaseDown
            }
        }
    }
}

/// SQLSTATE → (HTTP status, error type, error code, param).
pub fn map_sqlstate(sqlstate: &str) -> (StatusCode, &'static str, &'static str, Option<&'static str>) {
    use StatusCode as S;
    const INVALID: &str = "invalid_request_error";
    match sqlstate {
        "PM100" => (S::BAD_REQUEST, INVALID, "parameter_invalid", None),
        "PM101" => (S::BAD_REQUEST, INVALID, "amount_too_precise", Some("amount")),
        "PM102" => (S::BAD_REQUEST, INVALID, "amount_not_positive", Some("amount")),
        "PM103" => (S::BAD_REQUEST, INVALID, "currency_unknown", Some("currency")),
        "PM104" => (S::BAD_REQUEST, INVALID, "amount_too_large", Some("amount")),
        "PM105" => (S::BAD_REQUEST, INVALID, "amount_invalid", Some("amount")),
        "22P02" => (S::BAD_REQUEST, INVALID, "parameter_invalid", None),
        "PM201" => (S::CONFLICT, "idempotency_error", "idempotency_key_reused", Some("Idempotency-Key")),
        "PM202" => (S::CONFLICT, INVALID, "transition_not_allowed", Some("status")),
        "PM203" => (S::CONFLICT, INVALID, "provider_payment_conflict", None),
        "PM204" => (S::NOT_FOUND, INVALID, "resource_missing", Some("id")),
        "PM205" => (S::CONFLICT, INVALID, "history_append_only", None),
        "PM301" => (S::BAD_REQUEST, INVALID, "webhook_signature_invalid", None),
        "PM302" => (S::BAD_REQUEST, INVALID, "webhook_timestamp_outside_tolerance", None),
        "PM303" => (S::SERVICE_UNAVAILABLE, "api_error", "webhook_secret_missing", None),
        "PM304" => (S::BAD_REQUEST, INVALID, "webhook_event_invalid", None),
        "40001" | "40P01" => (S::CONFLICT, "api_error", "concurrent_update_retry", None),
        "42501" => (S::FORBIDDEN, "permission_error", "database_permission_denied", None),
        "57014" => (S::GATEWAY_TIMEOUT, "api_error", "database_timeout", None),
        s if s.starts_with("08") || s.starts_with("53") || s.starts_with("57P") => {
            (S::SERVICE_UNAVAILABLE, "api_error", "database_unavailable", None)
        }
        _ => (S::INTERNAL_SERVER_ERROR, "api_error", "internal_error", None),
    }
}

pub fn error_body(status: StatusCode, kind: &str, code: &str, message: &str, param: Option<&str>) -> Response {
    let body = json!({ "error": { "type": kind, "code": code, "message": message, "param": param } });
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        use StatusCode as S;
        match &self {
            ApiError::Invalid { code, message, param } => {
                error_body(S::BAD_REQUEST, "invalid_request_error", code, message, *param)
            }
            ApiError::BodyTooLarge => {
                error_body(S::PAYLOAD_TOO_LARGE, "invalid_request_error", "body_too_large", &self.to_string(), None)
            }
            ApiError::Unauthenticated(msg) => error_body(S::UNAUTHORIZED, "authentication_error", "api_key_invalid", msg, None),
            ApiError::Forbidden(_) => {
                error_body(S::FORBIDDEN, "permission_error", "scope_missing", &self.to_string(), None)
            }
            ApiError::PoolExhausted => error_body(S::SERVICE_UNAVAILABLE, "api_error", "database_busy", &self.to_string(), None),
            ApiError::DatabaseDown => {
                error_body(S::SERVICE_UNAVAILABLE, "api_error", "database_unavailable", &self.to_string(), None)
            }
            ApiError::Database(e) => match e.as_db_error() {
                Some(db) => {
                    let (status, kind, code, param) = map_sqlstate(db.code().code());
                    if status == S::INTERNAL_SERVER_ERROR {
                        tracing::error!(sqlstate = db.code().code(), error = %db, "unexpected database error");
                        error_body(status, kind, code, "internal error", None)
                    } else {
                        // PM messages are written for users and never carry secrets.
                        error_body(status, kind, code, db.message(), param)
                    }
                }
                None => {
                    tracing::warn!(error = %e, "database connection error");
                    error_body(S::SERVICE_UNAVAILABLE, "api_error", "database_unavailable", "the database is unreachable", None)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_sqlstate_has_its_status() {
        for (code, status) in [
            ("PM100", 400), ("PM101", 400), ("PM102", 400), ("PM103", 400), ("PM104", 400), ("PM105", 400),
            ("PM201", 409), ("PM202", 409), ("PM203", 409), ("PM204", 404), ("PM205", 409),
            ("PM301", 400), ("PM302", 400), ("PM303", 503), ("PM304", 400),
            ("40001", 409), ("42501", 403), ("57014", 504), ("08006", 503), ("53300", 503), ("XX000", 500),
        ] {
            assert_eq!(map_sqlstate(code).0.as_u16(), status, "{code}");
        }
    }
}
