//! Prepaid credits (the ledger: docs/src/ledger.md): `/v1/credit_grants`, granted by the platform,
//! and `/v1/top_ups`, bought by the customer with a payment.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::auth::{Caller, WRITE};
use crate::db;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::http::{amount_schema, created_or_replayed, decimal_text, idempotency_key, optional_instant};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantCredits {
    pub customer_id: String,
    /// Exact: a decimal string or a JSON number, above 0 (whole for a credit unit).
    #[schema(schema_with = amount_schema)]
    pub amount: Box<RawValue>,
    /// A currency (`usd`) or a credit unit (`tokens`: lower-case letters, digits, underscores).
    pub unit: String,
    /// RFC 3339 with its offset, in the future; absent: never.
    pub expires_at: Option<String>,
    /// A feature or meter the credits pay for; absent: invoices.
    pub applies_to: Option<String>,
    /// Lower is used first; default 0.
    pub priority: Option<i32>,
}

#[utoipa::path(post, path = "/v1/credit_grants", tag = "credits", request_body = GrantCredits,
    params(("Idempotency-Key" = String, Header, description = "A retry with the same key and body answers with the same grant.")),
    responses(
        (status = 201, description = "`{object: credit_grant, id, customer_id, unit, amount, remaining, applies_to, priority, expires_at, outcome}` (outcome replayed and 200 for a repeat)"),
        (status = 400, body = crate::http::ErrorBody), (status = 403, body = crate::http::ErrorBody),
        (status = 409, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn grant(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<GrantCredits>,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    // Credits are the platform's to give: a key bound to a customer never grants itself any.
    caller.require_platform()?;
    let key = idempotency_key(&headers)?;
    let amount = decimal_text(&body.amount, "amount")?;
    let expires_at = optional_instant("expires_at", &body.expires_at)?;
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::GRANT_CREDITS).await?;
    let row = db
        .query_one(
            &stmt,
            &[&key, &body.customer_id, &amount, &body.unit, &expires_at, &body.applies_to, &body.priority],
        )
        .await?;
    let (id, outcome): (&str, &str) = (row.try_get("grant_id")?, row.try_get("outcome")?);
    // (A statement of its own: the grant is visible only after the call that made it.)
    let stmt = db.prepare_cached(db::CREDIT_GRANT).await?;
    let grant = db.query_one(&stmt, &[&body.customer_id, &id, &outcome]).await?.try_get(0)?;
    Ok(created_or_replayed(grant, outcome == "replayed"))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUp {
    pub customer_id: String,
    /// What the customer pays, in major units, exact: a decimal string or a JSON number.
    #[schema(schema_with = amount_schema)]
    pub amount: Box<RawValue>,
    #[schema(example = "USD")]
    pub currency: String,
    /// The payment method charged now, e.g. `pm_card_visa`.
    pub payment_method: String,
    /// What the payment grants when it succeeds: `{amount, unit, expires_at?, applies_to?, priority?}`
    /// (e.g. 1000 tokens); absent: money credit of what was paid.
    #[schema(value_type = Option<Object>)]
    pub credits: Option<Box<RawValue>>,
}

#[utoipa::path(post, path = "/v1/top_ups", tag = "credits", request_body = TopUp,
    params(("Idempotency-Key" = String, Header, description = "Required. A retry with the same key and body returns the same payment and grants nothing more.")),
    responses(
        (status = 201, description = "The top-up's payment, charged: its credits are granted when it succeeds, once (`GET /v1/customers/{id}/balances`)", body = crate::routes::payments::Payment),
        (status = 200, description = "Replay of an earlier call (header Idempotent-Replayed: true)", body = crate::routes::payments::Payment),
        (status = 400, body = crate::http::ErrorBody), (status = 409, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn top_up(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<TopUp>,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    // A customer may buy its own credits: it pays for them.
    caller.may_act_for(&body.customer_id)?;
    let key = idempotency_key(&headers)?;
    let amount = decimal_text(&body.amount, "amount")?;
    let credits = body.credits.as_ref().map(|c| c.get().to_string());
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::TOP_UP).await?;
    let row = db
        .query_one(&stmt, &[&key, &body.customer_id, &amount, &body.currency, &body.payment_method, &credits])
        .await?;
    crate::routes::payments::charge_new_payment(&state, db, &row).await
}
