//! `/v1/payments`: create (with the provider call), fetch, list, history.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::auth::{Caller, Object, READ, WRITE};
use crate::db;
use crate::error::ApiError;
use crate::extract::{JsonBody, OptionalJsonBody};
use crate::provider::{self, Charge};

/// A new payment. Give `amount` (major units, a decimal string or a JSON
/// number, read exactly) or `amount_minor` (integer minor units), not both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    pub customer_id: String,
    /// Major units, exact: a decimal string (`"49.99"`) or a JSON number. Not with `amount_minor`.
    #[schema(schema_with = amount_schema)]
    pub amount: Option<Box<RawValue>>,
    /// Integer minor units (`4999`). Not with `amount`.
    #[schema(example = 4999, minimum = 1)]
    pub amount_minor: Option<i64>,
    #[schema(example = "USD")]
    pub currency: String,
    /// A payment method for the provider, e.g. `pm_card_visa`. Without one the
    /// payment waits in `requires_payment_method`.
    pub payment_method: Option<String>,
    pub description: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Box<RawValue>>,
    /// `automatic` (default) or `manual`.
    pub capture_method: Option<String>,
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

#[utoipa::path(post, path = "/v1/payments", tag = "payments", request_body = CreatePayment,
    params(("Idempotency-Key" = String, Header, description = "Required. Retries with the same key and body return the same payment.")),
    responses(
        (status = 201, description = "Created; the provider has been called", body = crate::openapi::Payment),
        (status = 200, description = "Replay of an earlier call (header Idempotent-Replayed: true)", body = crate::openapi::Payment),
        (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody),
        (status = 403, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreatePayment>,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    caller.may_act_for(&body.customer_id)?;
    let key = idempotency_key(&headers)?;
    let amount = match (&body.amount, body.amount_minor) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid("parameter_invalid", "give amount or amount_minor, not both", Some("amount")))
        }
        (Some(raw), None) => Some(amount_text(raw)?),
        (None, _) => None,
    };
    let metadata = body.metadata.as_ref().map(|m| m.get().to_string());

    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::CREATE_PAYMENT).await?;
    let row = db
        .query_one(
            &stmt,
            &[
                &key,
                &body.customer_id,
                &amount,
                &body.amount_minor,
                &body.currency,
                &body.payment_method,
                &body.description,
                &metadata,
                &body.capture_method,
            ],
        )
        .await?;
    let mut payment: String = row.try_get("payment")?;
    if row.try_get::<_, &str>("outcome")? == "replayed" {
        return Ok(created_or_replayed(payment, true));
    }
    if let Some(charge) = Charge::from_row(&row)? {
        let status = provider::status_of(&row)?;
        // The provider may take seconds: no pooled connection waits on it.
        drop(db);
        crate::fault::point("before_provider_call");
        let answer = state.provider.create_payment(&charge).await;
        crate::fault::point("after_provider_answer");
        let db = state.pool.get().await?;
        if let Some(recorded) = provider::record(&db, state.provider.name(), &charge.payment_id, status, answer).await?
        {
            payment = recorded;
        } else {
            let stmt = db.prepare_cached(db::GET_PAYMENT).await?;
            payment = db.query_one(&stmt, &[&charge.payment_id]).await?.try_get("payment")?;
        }
    }
    Ok(json_response(StatusCode::CREATED, payment))
}

#[utoipa::path(get, path = "/v1/payments/{id}", tag = "payments",
    params(("id" = String, Path, description = "pay_…")),
    responses((status = 200, body = crate::openapi::Payment), (status = 404, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    caller.require(READ)?;
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::GET_PAYMENT).await?;
    let payment: String = db.query_one(&stmt, &[&id]).await?.try_get("payment")?;
    caller.sees_json(&payment, "payment")?;
    Ok(json_response(StatusCode::OK, payment))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    pub customer_id: Option<String>,
    pub status: Option<String>,
    /// 1 to 100; default 10 (`payments.list_payments`' default).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i32>,
    /// The last id of the previous page.
    pub starting_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/payments", tag = "payments", params(ListQuery),
    responses((status = 200, body = crate::openapi::PaymentList), (status = 400, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    caller.require(READ)?;
    // A bound key lists its own customer's payments (another's it may not name).
    if let Some(customer) = &q.customer_id {
        caller.may_act_for(customer)?;
    }
    let customer = q.customer_id.as_deref().or(caller.customer());
    let db = state.pool.get().await?;
    let row = match q.limit {
        None => {
            let stmt = db.prepare_cached(db::LIST_PAYMENTS).await?;
            db.query_one(&stmt, &[&customer, &q.status, &q.starting_after]).await?
        }
        Some(limit) => {
            let stmt = db.prepare_cached(db::LIST_PAYMENTS_LIMIT).await?;
            db.query_one(&stmt, &[&customer, &q.status, &q.starting_after, &limit]).await?
        }
    };
    Ok(json_response(StatusCode::OK, list_body("/v1/payments", &row)?))
}

#[utoipa::path(get, path = "/v1/payments/{id}/events", tag = "payments",
    params(("id" = String, Path, description = "pay_…")),
    responses((status = 200, body = crate::openapi::EventList), (status = 404, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(READ)?;
    let db = state.pool.get().await?;
    caller.owns(&db, Object::Payment, &id).await?;
    let stmt = db.prepare_cached(db::LIST_EVENTS).await?;
    let data: String = db.query_one(&stmt, &[&id]).await?.try_get("data")?;
    Ok(json_response(StatusCode::OK, format!(r#"{{"object":"list","data":{data}}}"#)))
}

/// A capture of an authorized payment: all of it, or `amount` (major units) of it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapturePayment {
    /// Major units, exact: a decimal string or a JSON number; at most the authorized amount.
    #[schema(schema_with = amount_schema)]
    pub amount: Option<Box<RawValue>>,
}

/// A cancel, with Stripe's reason.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelPayment {
    /// `duplicate`, `fraudulent`, `requested_by_customer` or `abandoned`.
    pub reason: Option<String>,
}

#[utoipa::path(post, path = "/v1/payments/{id}/capture", tag = "payments", request_body = CapturePayment,
    params(("id" = String, Path, description = "pay_…")),
    responses(
        (status = 200, description = "Captured, or queued if the provider did not answer (status still requires_capture)", body = crate::openapi::Payment),
        (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody),
        (status = 403, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody),
        (status = 409, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn capture(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<CapturePayment>,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    caller.owns(&*state.pool.get().await?, Object::Payment, &id).await?;
    let amount = match body.amount {
        Some(raw) => Some(amount_text(&raw)?),
        None => None,
    };
    Ok(json_response(StatusCode::OK, command(&state, &id, db::CAPTURE_PAYMENT, &amount).await?))
}

#[utoipa::path(post, path = "/v1/payments/{id}/cancel", tag = "payments", request_body = CancelPayment,
    params(("id" = String, Path, description = "pay_…")),
    responses(
        (status = 200, description = "Canceled, or queued if the provider did not answer", body = crate::openapi::Payment),
        (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody),
        (status = 403, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody),
        (status = 409, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<CancelPayment>,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    caller.owns(&*state.pool.get().await?, Object::Payment, &id).await?;
    let reason = body.reason;
    Ok(json_response(StatusCode::OK, command(&state, &id, db::CANCEL_PAYMENT, &reason).await?))
}

/// Queues the command through its SQL function and claims it in the same
/// transaction, then carries it out at once so the answer carries the
/// provider's; unanswered, it stays queued for the worker.
/// A capture or cancel, carried out at once (the API's and the dashboard's): the payment as JSON.
pub(crate) async fn command(
    state: &AppState,
    id: &str,
    statement: &str,
    argument: &Option<String>,
) -> Result<String, ApiError> {
    let (mut payment, claimed) = {
        let mut db = state.pool.get().await?;
        let tx = db.transaction().await?;
        let stmt = tx.prepare_cached(statement).await?;
        let payment: String = tx.query_one(&stmt, &[&id, argument]).await?.try_get("payment")?;
        let claimed = crate::command_worker::claim(state, &tx, Some(id), state.command_lease).await?;
        tx.commit().await?;
        (payment, claimed)
    };
    // Its one command: an answer that could not be recorded is the caller's to know.
    if let Some(done) = crate::command_worker::carry_out_all(state, claimed).await.pop() {
        payment = done?;
    }
    Ok(payment)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn amounts_are_read_as_written() {
        assert_eq!(amount_text(&raw("49.99")).unwrap(), "49.99");
        assert_eq!(amount_text(&raw("\"49.990\"")).unwrap(), "49.990");
        assert_eq!(amount_text(&raw("0.1")).unwrap(), "0.1");
        assert_eq!(amount_text(&raw("12345678901234567.89")).unwrap(), "12345678901234567.89");
        assert_eq!(amount_text(&raw("9007199254740993.01")).unwrap(), "9007199254740993.01");
        for bad in ["true", "null", "[1]", "{}"] {
            assert!(amount_text(&raw(bad)).is_err(), "{bad}");
        }
    }
}
