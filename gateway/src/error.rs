//! The gateway's one error type, and the one place SQLSTATEs become HTTP: the
//! answers come from `payments_core::sqlstate::REGISTRY`, the same table the
//! README and the SQL files are checked against.
//! Bodies follow Stripe's shape: `{"error": {"type", "code", "message", "param"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use payments_core::sqlstate;
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
    /// A key bound to one customer asked for another's, or for a platform-wide route.
    #[error("{0}")]
    CustomerBound(&'static str),
    /// A lookup the gateway answers from a view found nothing: answered as PM204.
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("the database is busy: no connection became free in time")]
    PoolExhausted,
    #[error("the database is unreachable")]
    DatabaseDown,
    /// The provider could not be asked (an outage, a rate limit, a bad key): nothing was recorded.
    #[error("the payment provider did not answer: {0}")]
    ProviderUnavailable(String),
    /// A broken promise between the gateway and the extension (logged, never shown).
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
}

impl ApiError {
    pub fn invalid(code: &'static str, message: impl Into<String>, param: Option<&'static str>) -> Self {
        ApiError::Invalid { code, message: message.into(), param }
    }

    /// The `error.code` this error is answered with.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid { code, .. } => code,
            ApiError::Unauthenticated(_) => "api_key_invalid",
            ApiError::BodyTooLarge => "body_too_large",
            ApiError::Forbidden(_) => "scope_missing",
            ApiError::CustomerBound(_) => "customer_bound",
            ApiError::NotFound(_) => sqlstate::lookup(NOT_FOUND).name,
            ApiError::PoolExhausted => "database_busy",
            ApiError::DatabaseDown => "database_unavailable",
            ApiError::ProviderUnavailable(_) => "provider_unavailable",
            ApiError::Internal(_) => sqlstate::INTERNAL.name,
            ApiError::Database(e) => match e.as_db_error() {
                Some(db) => sqlstate::lookup(db.code().code()).name,
                None => "database_unavailable",
            },
        }
    }
}

impl ApiError {
    /// The SQLSTATE of an error the database answered with.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ApiError::Database(e) => e.as_db_error().map(|db| db.code().code()),
            _ => None,
        }
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

/// SQLSTATE → (HTTP status, error type, error code, param), from the registry.
pub fn map_sqlstate(code: &str) -> (StatusCode, &'static str, &'static str, Option<&'static str>) {
    let c = sqlstate::lookup(code);
    let status = StatusCode::from_u16(c.http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, c.kind.as_str(), c.name, c.param)
}

/// The extension's "not found", which lookups made here answer with too.
pub const NOT_FOUND: &str = "PM204";

/// How much of a parser's or PostgreSQL's message (which quote input) an answer carries.
pub const QUOTED: usize = 200;

pub fn error_body(status: StatusCode, kind: &str, code: &str, message: &str, param: Option<&str>) -> Response {
    let body = json!({ "error": { "type": kind, "code": code, "message": message, "param": param } });
    (status, Json(body)).into_response()
}

/// What a client is told about an error: its HTTP status, error type, code,
/// a message that carries no secret or internal detail, and the parameter.
pub struct Answer {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
}

impl ApiError {
    /// How this error is answered (over HTTP, and by the MCP tools); logs what the client is not told.
    pub fn answer(&self) -> Answer {
        use StatusCode as S;
        let code = self.code();
        let answer = |status, kind, message: &str, param| Answer { status, kind, code, message: message.into(), param };
        match self {
            ApiError::Invalid { message, param, .. } => {
                answer(S::BAD_REQUEST, "invalid_request_error", message, *param)
            }
            ApiError::BodyTooLarge => answer(S::PAYLOAD_TOO_LARGE, "invalid_request_error", &self.to_string(), None),
            ApiError::Unauthenticated(msg) => answer(S::UNAUTHORIZED, "authentication_error", msg, None),
            ApiError::Forbidden(_) | ApiError::CustomerBound(_) => {
                answer(S::FORBIDDEN, "permission_error", &self.to_string(), None)
            }
            ApiError::NotFound(_) => {
                let (status, kind, code, param) = map_sqlstate(NOT_FOUND);
                Answer { status, kind, code, message: self.to_string(), param }
            }
            ApiError::PoolExhausted | ApiError::DatabaseDown => {
                answer(S::SERVICE_UNAVAILABLE, "api_error", &self.to_string(), None)
            }
            ApiError::ProviderUnavailable(why) => {
                tracing::warn!(error = %why, "provider unavailable");
                answer(S::BAD_GATEWAY, "api_error", "the payment provider did not answer; try again later", None)
            }
            ApiError::Internal(why) => {
                tracing::error!(error = %why, "internal error");
                answer(S::INTERNAL_SERVER_ERROR, "api_error", "internal error", None)
            }
            ApiError::Database(e) => match e.as_db_error() {
                Some(db) => {
                    let (status, kind, code, param) = map_sqlstate(db.code().code());
                    let message = if status == S::INTERNAL_SERVER_ERROR {
                        tracing::error!(sqlstate = db.code().code(), error = %db, "unexpected database error");
                        "internal error".to_string()
                    } else if status == S::SERVICE_UNAVAILABLE {
                        // Out of connections or resources: the operator's to see, not the client's.
                        tracing::warn!(sqlstate = db.code().code(), error = %db, "database unavailable");
                        "the database is unavailable".to_string()
                    } else {
                        // PM messages are written for users and never carry secrets; PostgreSQL's
                        // own (22P02 and the like) quote the input, so they are cut short.
                        payments_core::error::shown(db.message(), QUOTED)
                    };
                    Answer { status, kind, code, message, param }
                }
                None => {
                    tracing::warn!(error = %e, "database connection error");
                    answer(S::SERVICE_UNAVAILABLE, "api_error", "the database is unreachable", None)
                }
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let a = self.answer();
        error_body(a.status, a.kind, a.code, &a.message, a.param)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_sqlstate_gets_its_status_type_and_code() {
        for c in sqlstate::REGISTRY {
            let (status, kind, code, param) = map_sqlstate(c.sqlstate);
            assert_eq!(status.as_u16(), c.http_status, "{}", c.sqlstate);
            assert_eq!((kind, code, param), (c.kind.as_str(), c.name, c.param), "{}", c.sqlstate);
        }
    }

    #[test]
    fn unregistered_codes_are_500_and_connection_classes_503() {
        for (code, status) in [("XX000", 500), ("PM999", 500), ("08006", 503), ("53300", 503), ("57P01", 503)] {
            assert_eq!(map_sqlstate(code).0.as_u16(), status, "{code}");
        }
        assert_eq!(
            map_sqlstate("PM204"),
            (StatusCode::NOT_FOUND, "invalid_request_error", "resource_missing", Some("id"))
        );
    }
}
