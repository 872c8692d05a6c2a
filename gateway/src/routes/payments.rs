//! `/v1/payments`: create (with the provider call), fetch, list, history.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Caller, Object, READ, WRITE};
use crate::db;
use crate::error::ApiError;
use crate::extract::{JsonBody, OptionalJsonBody};
use crate::http::{amount_schema, amount_text, created_or_replayed, idempotency_key, json_response, list_body};
use crate::provider::{self, Charge};
use crate::state::AppState;

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

#[utoipa::path(post, path = "/v1/payments", tag = "payments", request_body = CreatePayment,
    params(("Idempotency-Key" = String, Header, description = "Required. Retries with the same key and body return the same payment.")),
    responses(
        (status = 201, description = "Created; the provider has been called", body = crate::routes::payments::Payment),
        (status = 200, description = "Replay of an earlier call (header Idempotent-Replayed: true)", body = crate::routes::payments::Payment),
        (status = 400, body = crate::http::ErrorBody), (status = 401, body = crate::http::ErrorBody),
        (status = 403, body = crate::http::ErrorBody), (status = 409, body = crate::http::ErrorBody)),
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
    charge_new_payment(&state, db, &row).await
}

/// The answer to a call that made (or replayed) a payment, `row` its result with the columns a
/// charge needs (`db::CREATE_PAYMENT`'s): a new one with a payment method is charged at the
/// provider first, with no pooled connection held while it answers.
pub(crate) async fn charge_new_payment(
    state: &AppState,
    db: deadpool_postgres::Object,
    row: &tokio_postgres::Row,
) -> Result<Response, ApiError> {
    let mut payment: String = row.try_get("payment")?;
    if row.try_get::<_, &str>("outcome")? == "replayed" {
        return Ok(created_or_replayed(payment, true));
    }
    if let Some(charge) = Charge::from_row(row)? {
        let status = provider::status_of(row)?;
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
    responses((status = 200, body = crate::routes::payments::Payment), (status = 404, body = crate::http::ErrorBody)),
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
    responses((status = 200, body = crate::routes::payments::PaymentList), (status = 400, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    caller.require(READ)?;
    let customer = caller.listed_customer(&q.customer_id)?;
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
    responses((status = 200, body = crate::routes::payments::EventList), (status = 404, body = crate::http::ErrorBody)),
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
        (status = 200, description = "Captured, or queued if the provider did not answer (status still requires_capture)", body = crate::routes::payments::Payment),
        (status = 400, body = crate::http::ErrorBody), (status = 401, body = crate::http::ErrorBody),
        (status = 403, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody),
        (status = 409, body = crate::http::ErrorBody)),
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
        (status = 200, description = "Canceled, or queued if the provider did not answer", body = crate::routes::payments::Payment),
        (status = 400, body = crate::http::ErrorBody), (status = 401, body = crate::http::ErrorBody),
        (status = 403, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody),
        (status = 409, body = crate::http::ErrorBody)),
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

// ---- schemas (documentation of the JSON the database renders) ----

/// A payment.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Payment {
    /// `payment`
    object: String,
    /// pay_…
    id: String,
    customer_id: String,
    /// Major units, exact, as a decimal string: "49.99".
    amount: String,
    /// Minor units: 4999.
    amount_minor: i64,
    currency: String,
    /// requires_payment_method | requires_confirmation | requires_action | processing | requires_capture | succeeded | canceled | failed
    status: String,
    capture_method: String,
    provider: Option<String>,
    provider_payment_id: Option<String>,
    payment_method: Option<String>,
    description: Option<String>,
    #[schema(value_type = Object)]
    metadata: (),
    #[schema(value_type = Option<Object>)]
    last_error: (),
    created_at: String,
    updated_at: String,
    /// What was captured once succeeded, major units as a decimal string: the amount, or less after a partial capture.
    amount_captured: Option<String>,
    amount_captured_minor: Option<i64>,
    /// Why it was canceled: duplicate | fraudulent | requested_by_customer | abandoned | automatic
    cancellation_reason: Option<String>,
    /// What succeeded refunds gave back, major units as a decimal string.
    amount_refunded: String,
    amount_refunded_minor: i64,
    /// none | partial | full (of what was captured)
    refund_status: String,
    /// Whether a dispute withholds money (open or lost).
    disputed: bool,
    /// What disputes withhold, major units as a decimal string.
    amount_disputed: String,
    amount_disputed_minor: i64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PaymentList {
    object: String,
    url: String,
    has_more: bool,
    data: Vec<Payment>,
}

/// One entry of a payment's append-only history.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Event {
    payment_id: String,
    seq: i64,
    from_status: Option<String>,
    to_status: String,
    /// false: a stale report, recorded but not applied.
    applied: bool,
    source: String,
    reason: Option<String>,
    #[schema(value_type = Object)]
    data: (),
    created_at: String,
    hash: String,
    customer_id: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventList {
    object: String,
    data: Vec<Event>,
}
