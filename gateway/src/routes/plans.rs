//! `/v1/plans`: what customers can subscribe to (made by an administrator with `payments.create_plan`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use utoipa::ToSchema;

use crate::auth::{Caller, READ};
use crate::db;
use crate::error::ApiError;
use crate::http::json_response;
use crate::state::AppState;

#[utoipa::path(get, path = "/v1/plans", tag = "subscriptions",
    responses((status = 200, description = "Every plan by code, archived ones with active false", body = crate::routes::plans::PlanList)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let data = plans(&state, caller, None).await?;
    Ok(json_response(
        StatusCode::OK,
        format!(r#"{{"object": "list", "url": "/v1/plans", "has_more": false, "data": {data}}}"#),
    ))
}

#[utoipa::path(get, path = "/v1/plans/{code}", tag = "subscriptions", params(("code" = String, Path, description = "The plan's code")),
    responses((status = 200, body = crate::routes::plans::Plan), (status = 404, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    let data = plans(&state, caller, Some(&code)).await?;
    // The array of the one plan, or empty.
    let plan = data.strip_prefix('[').and_then(|d| d.strip_suffix(']')).filter(|d| !d.is_empty());
    match plan {
        Some(plan) => Ok(json_response(StatusCode::OK, plan.to_string())),
        None => Err(ApiError::NotFound("plan")),
    }
}

async fn plans(state: &AppState, caller: Caller, code: Option<&str>) -> Result<String, ApiError> {
    caller.require(READ)?;
    caller.require_platform()?;
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::LIST_PLANS).await?;
    Ok(db.query_one(&stmt, &[&code]).await?.try_get(0)?)
}

// ---- schemas (documentation of the JSON the database renders) ----

/// What a subscription buys.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Plan {
    /// `plan`
    object: String,
    code: String,
    name: Option<String>,
    currency: String,
    /// The recurring price per period, major units, exact, as a decimal string.
    amount: String,
    amount_minor: i64,
    /// day | week | month | year
    billing_interval: String,
    interval_count: i32,
    trial_days: i32,
    /// Each feature and its limit per period (null: unlimited).
    #[schema(value_type = Object)]
    features: (),
    /// The usage it bills in arrears: [{"meter", "price"}].
    #[schema(value_type = Vec<Object>)]
    metered: (),
    /// Usage is invoiced as soon as it reaches this much within a period (major units).
    usage_threshold: Option<String>,
    usage_threshold_minor: Option<i64>,
    /// false once archived (existing subscriptions keep it).
    active: bool,
    created_at: String,
    archived_at: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PlanList {
    object: String,
    url: String,
    has_more: bool,
    data: Vec<Plan>,
}
