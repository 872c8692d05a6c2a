//! `/v1/subscriptions`: subscribe a customer to a plan, fetch, cancel.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Caller, Object, READ, WRITE};
use crate::db;
use crate::error::ApiError;
use crate::extract::{JsonBody, OptionalJsonBody};
use crate::http::{created_or_replayed, idempotency_key, json_response, optional_instant};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    pub customer_id: String,
    /// The plan's code.
    pub plan: String,
    pub payment_method: Option<String>,
    /// Default: the plan's trial.
    pub trial_days: Option<i32>,
    /// Seats (default 1): each period's fee is the plan's amount times it.
    pub quantity: Option<i32>,
    /// What it is billed in (default: the customer's currency, else the plan's own): the plan's
    /// currency or one of its currency options. A customer's first subscription fixes its currency.
    pub currency: Option<String>,
    /// RFC 3339 with its offset, within the first period and without a trial: the first period ends there, its fee
    /// prorated, and whole periods follow from it.
    pub billing_cycle_anchor: Option<String>,
    /// RFC 3339 with its offset: when it is canceled (it grants nothing from then on).
    pub cancel_at: Option<String>,
    /// What the end of its trial does without a payment method: create_invoice (default), pause or cancel.
    pub missing_payment_method: Option<String>,
}

#[utoipa::path(post, path = "/v1/subscriptions", tag = "subscriptions", request_body = CreateSubscription,
    params(("Idempotency-Key" = String, Header, description = "Required. A retry returns the same subscription.")),
    responses((status = 201, description = "Created (trialing, active for a free plan, incomplete for a paid one)", body = crate::routes::subscriptions::Subscription),
        (status = 200, description = "Replay (Idempotent-Replayed: true)", body = crate::routes::subscriptions::Subscription),
        (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody),
        (status = 409, body = crate::http::ErrorBody)),
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
    let billing_cycle_anchor = optional_instant("billing_cycle_anchor", &body.billing_cycle_anchor)?;
    let cancel_at = optional_instant("cancel_at", &body.cancel_at)?;
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::CREATE_SUBSCRIPTION).await?;
    let row = db
        .query_one(
            &stmt,
            &[
                &key,
                &body.customer_id,
                &body.plan,
                &body.payment_method,
                &body.trial_days,
                &body.quantity,
                &body.currency,
                &billing_cycle_anchor,
                &cancel_at,
                &body.missing_payment_method,
            ],
        )
        .await?;
    Ok(created_or_replayed(row.try_get("subscription")?, row.try_get::<_, &str>("outcome")? == "replayed"))
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}", tag = "subscriptions", params(("id" = String, Path, description = "sub_…")),
    responses((status = 200, body = crate::routes::subscriptions::Subscription), (status = 404, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    caller.require(READ)?;
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::GET_SUBSCRIPTION).await?;
    let subscription: String = db.query_one(&stmt, &[&id]).await?.try_get("subscription")?;
    caller.sees_json(&subscription, "subscription")?;
    Ok(json_response(StatusCode::OK, subscription))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelSubscription {
    /// Default true: usable until the period ends.
    pub at_period_end: Option<bool>,
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/cancel", tag = "subscriptions", request_body = CancelSubscription,
    params(("id" = String, Path, description = "sub_…")),
    responses((status = 200, body = crate::routes::subscriptions::Subscription), (status = 404, body = crate::http::ErrorBody)),
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
    responses((status = 200, description = "A page of subscriptions, newest first"), (status = 400, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    caller.require(READ)?;
    let customer = caller.listed_customer(&q.customer_id)?;
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::LIST_SUBSCRIPTIONS).await?;
    let row = db.query_one(&stmt, &[&customer, &q.status, &q.limit.unwrap_or(10), &q.starting_after]).await?;
    Ok(json_response(StatusCode::OK, crate::http::list_body("/v1/subscriptions", &row)?))
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
    responses((status = 200, body = crate::routes::subscriptions::Subscription), (status = 400, body = crate::http::ErrorBody),
        (status = 404, body = crate::http::ErrorBody), (status = 409, body = crate::http::ErrorBody)),
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetQuantity {
    /// Seats, 1 to 1,000,000.
    pub quantity: i32,
    /// Default true: at once, prorated (more seats invoiced and charged now); false: from the next invoice.
    pub prorate: Option<bool>,
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/quantity", tag = "subscriptions", request_body = SetQuantity,
    params(("id" = String, Path, description = "sub_…")),
    responses((status = 200, body = crate::routes::subscriptions::Subscription), (status = 400, body = crate::http::ErrorBody),
        (status = 404, body = crate::http::ErrorBody), (status = 409, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_quantity(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<SetQuantity>,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    let db = state.pool.get().await?;
    caller.owns(&db, Object::Subscription, &id).await?;
    let stmt = db.prepare_cached(db::SET_SUBSCRIPTION_QUANTITY).await?;
    let row = db.query_one(&stmt, &[&id, &body.quantity, &body.prorate]).await?;
    Ok(json_response(StatusCode::OK, row.try_get("subscription")?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetCancelAt {
    /// RFC 3339 with its offset, in the future: when it is canceled; null: no longer.
    pub cancel_at: Option<String>,
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/cancel_at", tag = "subscriptions", request_body = SetCancelAt,
    params(("id" = String, Path, description = "sub_…")),
    responses((status = 200, body = crate::routes::subscriptions::Subscription), (status = 400, body = crate::http::ErrorBody),
        (status = 404, body = crate::http::ErrorBody), (status = 409, body = crate::http::ErrorBody, description = "It has ended")),
    security(("bearer" = [])))]
pub async fn set_cancel_at(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<SetCancelAt>,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    let cancel_at = optional_instant("cancel_at", &body.cancel_at)?;
    let db = state.pool.get().await?;
    caller.owns(&db, Object::Subscription, &id).await?;
    let stmt = db.prepare_cached(db::SET_SUBSCRIPTION_CANCEL_AT).await?;
    let row = db.query_one(&stmt, &[&id, &cancel_at]).await?;
    Ok(json_response(StatusCode::OK, row.try_get("subscription")?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyCoupon {
    /// The coupon's code (made by an administrator with `payments.create_coupon`).
    pub code: String,
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/coupon", tag = "subscriptions", request_body = ApplyCoupon,
    params(("id" = String, Path, description = "sub_…")),
    responses((status = 200, description = "`{object: discount, id, subscription_id, coupon, first_period, last_period, outcome: applied | replayed}`: its discount comes off the invoices of those periods"),
        (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody),
        (status = 409, body = crate::http::ErrorBody, description = "No redemptions left, expired, another plan or currency, or a subscription that has ended")),
    security(("bearer" = [])))]
pub async fn apply_coupon(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ApplyCoupon>,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    let db = state.pool.get().await?;
    caller.owns(&db, Object::Subscription, &id).await?;
    let stmt = db.prepare_cached(db::APPLY_COUPON).await?;
    Ok(json_response(StatusCode::OK, db.query_one(&stmt, &[&id, &body.code]).await?.try_get(0)?))
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/pause", tag = "subscriptions", params(("id" = String, Path, description = "sub_…")),
    responses((status = 200, body = crate::routes::subscriptions::Subscription), (status = 404, body = crate::http::ErrorBody),
        (status = 409, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    one_step(&state, caller, &id, db::PAUSE_SUBSCRIPTION).await
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/resume", tag = "subscriptions", params(("id" = String, Path, description = "sub_…")),
    responses((status = 200, body = crate::routes::subscriptions::Subscription), (status = 404, body = crate::http::ErrorBody),
        (status = 409, body = crate::http::ErrorBody)),
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

// ---- schemas (documentation of the JSON the database renders) ----

/// A customer's subscription to a plan.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Subscription {
    /// `subscription`
    object: String,
    /// sub_…
    id: String,
    customer_id: String,
    plan: String,
    /// trialing | active | past_due | unpaid | canceled | incomplete | incomplete_expired | paused
    status: String,
    payment_method: Option<String>,
    current_period_start: String,
    current_period_end: String,
    trial_end: Option<String>,
    cancel_at_period_end: bool,
    canceled_at: Option<String>,
    created_at: String,
    updated_at: String,
    /// Why the last billing run failed for it: `{sqlstate, message, first_at, last_at, attempts}`; null when it did not.
    #[schema(value_type = Option<Object>)]
    billing_error: Option<serde_json::Value>,
    /// Seats: each period's fee is the plan's amount times it.
    quantity: i32,
    /// What it is billed in (ISO 4217).
    currency: String,
    /// The version of its plan's prices it is billed at.
    plan_version: i32,
    /// When it is canceled, if set.
    cancel_at: Option<String>,
    /// What the end of its trial does without a payment method: create_invoice, pause or cancel.
    missing_payment_method: String,
}
