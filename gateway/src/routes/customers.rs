//! `/v1/customers/{id}/…`: what a customer may do now and consuming it, and its balances.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::auth::{Caller, READ, WRITE};
use crate::db;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::http::{amount_schema, decimal_text, json_response};
use crate::state::AppState;

#[utoipa::path(get, path = "/v1/customers/{id}/entitlements", tag = "customers", params(("id" = String, Path)),
    responses((status = 200, description = "`{customer_id, active, data: [{feature, limit, used, remaining, subscription_id, plan, period_start, period_end}]}`; numbers as decimal strings, limit and remaining null when unlimited")),
    security(("bearer" = [])))]
pub async fn entitlements(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer): Path<String>,
) -> Result<Response, ApiError> {
    customer_document(&state, &caller, &customer, db::ENTITLEMENTS).await
}

#[utoipa::path(get, path = "/v1/customers/{id}/balances", tag = "customers", params(("id" = String, Path)),
    responses((status = 200, description = "`{object: balances, customer_id, data: [{account, unit, posted, held, available}]}`: the customer's own accounts now, amounts as decimal strings (major units of a currency, whole credit units)")),
    security(("bearer" = [])))]
pub async fn balances(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer): Path<String>,
) -> Result<Response, ApiError> {
    customer_document(&state, &caller, &customer, db::BALANCES).await
}

/// The JSON document `sql` makes of one customer, for a caller who may read it.
async fn customer_document(state: &AppState, caller: &Caller, customer: &str, sql: &str) -> Result<Response, ApiError> {
    caller.require(READ)?;
    caller.sees(Some(customer), "customer")?;
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(sql).await?;
    Ok(json_response(StatusCode::OK, db.query_one(&stmt, &[&customer]).await?.try_get(0)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Consume {
    pub feature: String,
    /// Exact: a decimal string or a JSON number, above 0.
    #[schema(schema_with = amount_schema)]
    pub quantity: Box<RawValue>,
    /// The caller's id for this request: a retry with it gets the first answer and consumes nothing.
    pub request_id: String,
}

#[utoipa::path(post, path = "/v1/customers/{id}/consume", tag = "customers", request_body = Consume, params(("id" = String, Path)),
    responses((status = 200, description = "`{allowed, remaining, outcome: consumed | refused | replayed, reason, credits_drawn, credits_unit}` (a refusal is an answer, not an error; past the plan's limit, credits pay for the rest and credits_drawn says how much)"),
        (status = 400, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn consume(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer): Path<String>,
    JsonBody(body): JsonBody<Consume>,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    caller.sees(Some(&customer), "customer")?;
    let quantity = decimal_text(&body.quantity, "quantity")?;
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::CONSUME).await?;
    let row = db.query_one(&stmt, &[&customer, &body.feature, &quantity, &body.request_id]).await?;
    Ok(json_response(StatusCode::OK, row.try_get(0)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpendLimit {
    /// What the customer may spend per period, exact; null removes the limit.
    #[schema(schema_with = amount_schema)]
    pub amount: Option<Box<RawValue>>,
    /// A currency (`usd`) or a credit unit (`tokens`).
    pub unit: String,
    /// `day`, `week`, `month` or `year` (periods in UTC); required with an amount.
    pub period: Option<String>,
}

#[utoipa::path(put, path = "/v1/customers/{id}/spend_limit", tag = "customers", request_body = SpendLimit,
    params(("id" = String, Path)),
    responses((status = 200, description = "`{object: spend_limit, customer_id, unit, limited}`"),
        (status = 400, body = crate::http::ErrorBody), (status = 403, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_spend_limit(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer): Path<String>,
    JsonBody(body): JsonBody<SpendLimit>,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    // A budget binds the customer's agents: a key bound to the customer may not lift it.
    caller.require_platform()?;
    let amount = match body.amount.as_deref() {
        Some(raw) if raw.get() != "null" => Some(decimal_text(raw, "amount")?),
        _ => None,
    };
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::SET_SPEND_LIMIT).await?;
    let row = db.query_one(&stmt, &[&customer, &amount, &body.unit, &body.period]).await?;
    Ok(json_response(StatusCode::OK, row.try_get(0)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerTax {
    /// Up to 5 tax rates' codes (made by an administrator with `payments.create_tax_rate`), charged by every new invoice.
    pub tax_rates: Vec<String>,
    /// Default false: exempt customers' invoices charge no tax.
    pub tax_exempt: Option<bool>,
}

#[utoipa::path(put, path = "/v1/customers/{id}/tax", tag = "customers", request_body = CustomerTax,
    params(("id" = String, Path)),
    responses((status = 200, description = "`{object: customer_tax, customer_id, tax_rates, tax_exempt}`"),
        (status = 400, body = crate::http::ErrorBody), (status = 403, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_tax(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer): Path<String>,
    JsonBody(body): JsonBody<CustomerTax>,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    // What a customer is taxed is the platform's to say: a key bound to it may not exempt itself.
    caller.require_platform()?;
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::SET_CUSTOMER_TAX).await?;
    let row = db.query_one(&stmt, &[&customer, &body.tax_rates, &body.tax_exempt.unwrap_or(false)]).await?;
    Ok(json_response(StatusCode::OK, row.try_get(0)?))
}
