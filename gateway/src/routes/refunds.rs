//! `/v1/refunds`: create (queued in SQL, then carried out at once), fetch, list.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Caller, Object, READ, WRITE};
use crate::db;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::http::{amount_schema, amount_text, created_or_replayed, idempotency_key, json_response, list_body};
use crate::state::AppState;

/// A refund of a succeeded payment: all that is left of it, or `amount`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    /// The payment (`pay_…`).
    pub payment: String,
    /// Major units, exact: a decimal string or a JSON number. Default: all that is left to refund.
    #[schema(schema_with = amount_schema)]
    pub amount: Option<Box<RawValue>>,
    /// `duplicate`, `fraudulent` or `requested_by_customer`.
    pub reason: Option<String>,
}

#[utoipa::path(post, path = "/v1/refunds", tag = "refunds", request_body = CreateRefund,
    params(("Idempotency-Key" = String, Header, description = "Required. Retries with the same key and body return the same refund.")),
    responses(
        (status = 201, description = "Created; the provider has been asked (status pending until it settles)", body = crate::routes::refunds::Refund),
        (status = 200, description = "Replay of an earlier call (header Idempotent-Replayed: true)", body = crate::routes::refunds::Refund),
        (status = 400, body = crate::http::ErrorBody), (status = 401, body = crate::http::ErrorBody),
        (status = 403, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody),
        (status = 409, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateRefund>,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    caller.owns(&*state.pool.get().await?, Object::Payment, &body.payment).await?;
    let key = idempotency_key(&headers)?;
    let amount = body.amount.as_deref().map(amount_text).transpose()?;
    let (refund, replayed) = request(&state, key, &body.payment, amount, body.reason).await?;
    Ok(created_or_replayed(refund, replayed))
}

/// Records a refund and carries out its provider call at once (the API's and
/// the dashboard's): the refund as JSON, and whether the key replayed an earlier one.
pub(crate) async fn request(
    state: &AppState,
    key: &str,
    payment: &str,
    amount: Option<String>,
    reason: Option<String>,
) -> Result<(String, bool), ApiError> {
    // Queued and claimed in one transaction, as a capture is (routes/payments.rs).
    let (refund, replayed, claimed) = {
        let mut db = state.pool.get().await?;
        let tx = db.transaction().await?;
        let stmt = tx.prepare_cached(db::CREATE_REFUND).await?;
        let row = tx.query_one(&stmt, &[&key, &payment, &amount, &reason]).await?;
        let refund: String = row.try_get("refund")?;
        let replayed = row.try_get::<_, &str>("outcome")? == "replayed";
        let claimed = if replayed {
            vec![]
        } else {
            crate::command_worker::claim(state, &tx, Some(payment), state.command_lease).await?
        };
        tx.commit().await?;
        (refund, replayed, claimed)
    };
    if replayed || claimed.is_empty() {
        return Ok((refund, replayed));
    }
    // Each claimed command is recorded or left to its lease; the refund then shows the provider's answer.
    crate::command_worker::carry_out_all(state, claimed).await;
    let id = serde_json::from_str::<serde_json::Value>(&refund)
        .ok()
        .and_then(|r| r["id"].as_str().map(str::to_string))
        .ok_or_else(|| ApiError::Internal("a refund without an id".into()))?;
    Ok((fetch(state, &id).await?, false))
}

async fn fetch(state: &AppState, id: &str) -> Result<String, ApiError> {
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::GET_REFUND).await?;
    Ok(db.query_one(&stmt, &[&id]).await?.try_get("refund")?)
}

#[utoipa::path(get, path = "/v1/refunds/{id}", tag = "refunds",
    params(("id" = String, Path, description = "rfd_…")),
    responses((status = 200, body = crate::routes::refunds::Refund), (status = 404, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    caller.require(READ)?;
    let refund = fetch(&state, &id).await?;
    caller.sees_json(&refund, "refund")?;
    Ok(json_response(StatusCode::OK, refund))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this payment's refunds.
    pub payment: Option<String>,
    /// 1 to 100; default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i32>,
    /// The last id of the previous page.
    pub starting_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/refunds", tag = "refunds", params(ListQuery),
    responses((status = 200, body = crate::routes::refunds::RefundList), (status = 400, body = crate::http::ErrorBody),
        (status = 404, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    caller.require(READ)?;
    let db = state.pool.get().await?;
    // A bound key lists the refunds of one of its customer's payments.
    match (&q.payment, caller.customer()) {
        (Some(payment), _) => caller.owns(&db, Object::Payment, payment).await?,
        (None, Some(_)) => return Err(ApiError::CustomerBound("this key lists the refunds of one payment: name it")),
        (None, None) => {}
    }
    let stmt = db.prepare_cached(db::LIST_REFUNDS).await?;
    let row = db.query_one(&stmt, &[&q.payment, &q.limit.unwrap_or(10), &q.starting_after]).await?;
    Ok(json_response(StatusCode::OK, list_body("/v1/refunds", &row)?))
}

// ---- schemas (documentation of the JSON the database renders) ----

/// A refund of a payment.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Refund {
    /// `refund`
    object: String,
    /// rfd_…
    id: String,
    customer_id: String,
    payment_id: String,
    /// Major units, exact, as a decimal string.
    amount: String,
    amount_minor: i64,
    currency: String,
    /// pending | succeeded | failed | canceled
    status: String,
    /// duplicate | fraudulent | requested_by_customer | expired_uncaptured_charge
    reason: Option<String>,
    provider: String,
    /// The provider's refund id (re_…), once it answered.
    provider_refund_id: Option<String>,
    failure_reason: Option<String>,
    created_at: String,
    updated_at: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RefundList {
    object: String,
    url: String,
    has_more: bool,
    data: Vec<Refund>,
}
