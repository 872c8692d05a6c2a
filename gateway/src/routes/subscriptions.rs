//! `/v1/subscriptions`: subscribe a customer to a plan, fetch, cancel.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::auth::{Caller, Object, READ, WRITE};
use crate::db;
use crate::error::ApiError;
use crate::extract::{JsonBody, OptionalJsonBody};
use crate::routes::payments::{created_or_replayed, idempotency_key, json_response};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    pub customer_id: String,
    /// The plan's code.
    pub plan: String,
    pub payment_method: Option<String>,
    /// Default: the plan's trial.
    pub trial_days: Option<i32>,
}

#[utoipa::path(post, path = "/v1/subscriptions", tag = "subscriptions", request_body = CreateSubscription,
    params(("Idempotency-Key" = String, Header, description = "Required. A retry returns the same subscription.")),
    responses((status = 201, description = "Created (trialing, active for a free plan, incomplete for a paid one)", body = crate::openapi::Subscription),
        (status = 200, description = "Replay (Idempotent-Replayed: true)", body = crate::openapi::Subscription),
        (status = 400, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody),
        (status = 409, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateSubscription>,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    caller.may_act_for(&body.customer_id)?;
    let key = idempotency_key(&headers)?;
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::CREATE_SUBSCRIPTION).await?;
    let row =
        db.query_one(&stmt, &[&key, &body.customer_id, &body.plan, &body.payment_method, &body.trial_days]).await?;
    Ok(created_or_replayed(row.try_get("subscription")?, row.try_get::<_, &str>("outcome")? == "replayed"))
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}", tag = "subscriptions", params(("id" = String, Path, description = "sub_…")),
    responses((status = 200, body = crate::openapi::Subscription), (status = 404, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    caller.require(READ)?;
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::GET_SUBSCRIPTION).await?;
    let subscription: String = db.query_one(&stmt, &[&id]).await?.try_get("subscription")?;
    caller.sees_json(&subscription, "subscription")?;
    Ok(json_response(StatusCode::OK, subscription))
}

#[utoipa::path(get, path = "/v1/invoices/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "inv_…, or inv_….html for the printable page")),
    responses((status = 200, description = "The invoice with its lines (`total` a decimal string), or its printable HTML"),
        (status = 404, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn invoice(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(READ)?;
    let (id, html) = match id.strip_suffix(".html") {
        Some(id) => (id.to_string(), true),
        None => (id, false),
    };
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::GET_INVOICE).await?;
    let invoice: String = db.query_one(&stmt, &[&id]).await?.try_get(0)?;
    caller.sees_json(&invoice, "invoice")?;
    if !html {
        return Ok(json_response(StatusCode::OK, invoice));
    }
    Ok(html_response(crate::render::invoice_html(&parsed(&invoice)?)))
}

#[utoipa::path(get, path = "/v1/payments/{id}/receipt", tag = "payments",
    params(("id" = String, Path, description = "pay_…")),
    responses((status = 200, description = "The receipt of a succeeded payment (`payments.receipt`)"),
        (status = 404, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn receipt(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(READ)?;
    caller.owns(&*state.pool.get().await?, Object::Payment, &id).await?;
    Ok(json_response(StatusCode::OK, fetch_receipt(&state, &id).await?))
}

#[utoipa::path(get, path = "/v1/payments/{id}/receipt.html", tag = "payments",
    params(("id" = String, Path, description = "pay_…")),
    responses((status = 200, description = "The receipt as a printable page", content_type = "text/html"),
        (status = 404, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn receipt_html(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(READ)?;
    caller.owns(&*state.pool.get().await?, Object::Payment, &id).await?;
    Ok(html_response(crate::render::receipt_html(&parsed(&fetch_receipt(&state, &id).await?)?)))
}

async fn fetch_receipt(state: &AppState, id: &str) -> Result<String, ApiError> {
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::RECEIPT).await?;
    Ok(db.query_one(&stmt, &[&id]).await?.try_get(0)?)
}

/// JSON PostgreSQL rendered, read to render HTML from (amounts stay strings).
fn parsed(json: &str) -> Result<serde_json::Value, ApiError> {
    serde_json::from_str(json).map_err(|e| ApiError::Internal(format!("the database rendered invalid JSON: {e}")))
}

/// A printable page: it runs no script and loads nothing (its one stylesheet is inline),
/// may not be framed, and is not sniffed as anything but HTML.
fn html_response(page: String) -> Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    (StatusCode::OK, headers, page).into_response()
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelSubscription {
    /// Default true: usable until the period ends.
    pub at_period_end: Option<bool>,
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/cancel", tag = "subscriptions", request_body = CancelSubscription,
    params(("id" = String, Path, description = "sub_…")),
    responses((status = 200, body = crate::openapi::Subscription), (status = 404, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<CancelSubscription>,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    let db = state.pool.get().await?;
    caller.owns(&db, Object::Subscription, &id).await?;
    let stmt = db.prepare_cached(db::CANCEL_SUBSCRIPTION).await?;
    let at_period_end = body.at_period_end.unwrap_or(true);
    Ok(json_response(StatusCode::OK, db.query_one(&stmt, &[&id, &at_period_end]).await?.try_get("subscription")?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    pub customer_id: Option<String>,
    /// trialing | active | past_due | unpaid | canceled | incomplete | paused
    pub status: Option<String>,
    /// 1 to 100; default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i32>,
    /// The last id of the previous page.
    pub starting_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/subscriptions", tag = "subscriptions", params(ListQuery),
    responses((status = 200, description = "A page of subscriptions, newest first"), (status = 400, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    caller.require(READ)?;
    // A bound key lists its own customer's subscriptions (another's it may not name).
    if let Some(customer) = &q.customer_id {
        caller.may_act_for(customer)?;
    }
    let customer = q.customer_id.as_deref().or(caller.customer());
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::LIST_SUBSCRIPTIONS).await?;
    let row = db.query_one(&stmt, &[&customer, &q.status, &q.limit.unwrap_or(10), &q.starting_after]).await?;
    Ok(json_response(StatusCode::OK, crate::routes::payments::list_body("/v1/subscriptions", &row)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePlan {
    /// The new plan's code (same currency).
    pub plan: String,
    /// Default true: at once, prorated (an upgrade is invoiced and charged now); false: from the next period.
    pub prorate: Option<bool>,
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/change_plan", tag = "subscriptions", request_body = ChangePlan,
    params(("id" = String, Path, description = "sub_…")),
    responses((status = 200, body = crate::openapi::Subscription), (status = 400, body = crate::openapi::ErrorBody),
        (status = 404, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn change_plan(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ChangePlan>,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    let db = state.pool.get().await?;
    caller.owns(&db, Object::Subscription, &id).await?;
    let stmt = db.prepare_cached(db::CHANGE_PLAN).await?;
    let prorate = body.prorate.unwrap_or(true);
    Ok(json_response(StatusCode::OK, db.query_one(&stmt, &[&id, &body.plan, &prorate]).await?.try_get("subscription")?))
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/pause", tag = "subscriptions", params(("id" = String, Path, description = "sub_…")),
    responses((status = 200, body = crate::openapi::Subscription), (status = 404, body = crate::openapi::ErrorBody),
        (status = 409, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    one_step(&state, caller, &id, db::PAUSE_SUBSCRIPTION).await
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/resume", tag = "subscriptions", params(("id" = String, Path, description = "sub_…")),
    responses((status = 200, body = crate::openapi::Subscription), (status = 404, body = crate::openapi::ErrorBody),
        (status = 409, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    one_step(&state, caller, &id, db::RESUME_SUBSCRIPTION).await
}

/// A subscription call that takes only its id.
async fn one_step(state: &AppState, caller: Caller, id: &str, statement: &str) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    let db = state.pool.get().await?;
    caller.owns(&db, Object::Subscription, id).await?;
    let stmt = db.prepare_cached(statement).await?;
    Ok(json_response(StatusCode::OK, db.query_one(&stmt, &[&id]).await?.try_get("subscription")?))
}
