//! What every route shares: the Idempotency-Key header, exact amounts, JSON answers and
//! pages of lists, and the error body's schema.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::error::ApiError;

/// A time the API takes (`occurred_at`, `from`, `cancel_at`, …): RFC 3339 with its offset,
/// `2026-12-07T10:00:00Z`, as each event of a usage batch must be. PostgreSQL would also take a
/// time without an offset (read in the server's time zone) or a word such as `now`; the API
/// refuses those (400) rather than guess which instant was meant.
pub(crate) fn instant<'a>(param: &'static str, value: &'a str) -> Result<&'a str, ApiError> {
    if payments_core::timestamp::is_rfc3339(value) {
        return Ok(value);
    }
    let message = format!(
        "{param} must be an RFC 3339 time with its offset, such as 2026-12-07T10:00:00Z, not {}",
        serde_json::Value::from(payments_core::error::shown(value, crate::error::QUOTED))
    );
    Err(ApiError::invalid("parameter_invalid", message, Some(param)))
}

/// [`instant`] for a time that may be left out.
pub(crate) fn optional_instant<'a>(
    param: &'static str,
    value: &'a Option<String>,
) -> Result<Option<&'a str>, ApiError> {
    value.as_deref().map(|v| instant(param, v)).transpose()
}

/// The one `Idempotency-Key` header: printable ASCII (HTTP allows other
/// bytes, which could not be echoed back exactly), 1 to 255 characters, not
/// starting with a prefix the product reserves for its own keys.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<&str, ApiError> {
    let param = Some("Idempotency-Key");
    let mut all = headers.get_all("idempotency-key").iter();
    let Some(value) = all.next() else {
        return Err(ApiError::invalid("idempotency_key_missing", "the Idempotency-Key header is required", param));
    };
    // Printable ASCII only (HeaderValue::to_str also lets a tab through).
    let printable = |k: &&str| k.bytes().all(|b| (0x20..0x7f).contains(&b));
    let key = value.to_str().ok().filter(|k| all.next().is_none() && (1..=255).contains(&k.len()) && printable(k));
    let key = key.ok_or_else(|| {
        ApiError::invalid(
            "idempotency_key_invalid",
            "send one Idempotency-Key of 1 to 255 printable ASCII characters",
            param,
        )
    })?;
    match payments_core::vocabulary::reserved_key_prefix(key) {
        Some(prefix) => Err(ApiError::invalid(
            "idempotency_key_reserved",
            format!("Idempotency-Key may not start with {prefix:?}: the product makes those keys itself"),
            param,
        )),
        None => Ok(key),
    }
}

/// `amount` in the OpenAPI document: a decimal string or a number.
pub(crate) fn amount_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    Schema::OneOf(
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String).examples(["49.99"]))
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .build(),
    )
}

/// The amount's exact text: a JSON string's content or a JSON number's
/// literal, never through a float. PostgreSQL's `numeric` input reads it.
pub(crate) fn amount_text(raw: &RawValue) -> Result<String, ApiError> {
    decimal_text(raw, "amount")
}

/// A decimal parameter's exact text (as `amount_text`), errors naming `param`.
pub(crate) fn decimal_text(raw: &RawValue, param: &'static str) -> Result<String, ApiError> {
    let text = raw.get();
    let not_a_decimal =
        || ApiError::invalid("parameter_invalid", format!("{param} must be a decimal string or a number"), Some(param));
    // No valid amount is this long (12 digits, a point, zeros): refuse before the
    // database would parse, and quote, all of it.
    if text.len() > 64 {
        return Err(ApiError::invalid(
            "amount_invalid",
            format!("{param} is not a decimal of at most 64 characters"),
            Some(param),
        ));
    }
    // RawValue holds valid JSON, so a leading digit or minus sign means a number.
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text).map_err(|_| not_a_decimal()),
        Some(b'-' | b'0'..=b'9') => Ok(text.to_string()),
        _ => Err(not_a_decimal()),
    }
}

/// The answer to an idempotent create: 201 with the new object, or 200 with
/// `Idempotent-Replayed: true` when the key replayed an earlier call.
pub fn created_or_replayed(body: String, replayed: bool) -> Response {
    if !replayed {
        return json_response(StatusCode::CREATED, body);
    }
    let mut response = json_response(StatusCode::OK, body);
    response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// A page as Stripe shapes lists, from a row with `data` (a JSON array) and `has_more`.
pub(crate) fn list_body(url: &str, row: &tokio_postgres::Row) -> Result<String, ApiError> {
    let data: &str = row.try_get("data")?;
    let has_more: bool = row.try_get("has_more")?;
    Ok(format!(r#"{{"object":"list","url":"{url}","has_more":{has_more},"data":{data}}}"#))
}

/// A JSON document rendered by PostgreSQL, sent as is.
pub fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// invalid_request_error | idempotency_error | authentication_error | permission_error | api_error
    r#type: String,
    code: String,
    message: String,
    param: Option<String>,
}
