//! `/v1/plans`: what customers can subscribe to (made by an administrator with `payments.create_plan`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::app::AppState;
use crate::auth::{Caller, READ};
use crate::db;
use crate::error::ApiError;
use crate::routes::payments::json_response;

#[utoipa::path(get, path = "/v1/plans", tag = "subscriptions",
    responses((status = 200, description = "Every plan by code, archived ones with active false", body = crate::openapi::PlanList)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let data = plans(&state, caller, None).await?;
    Ok(json_response(
        StatusCode::OK,
        format!(r#"{{"object": "list", "url": "/v1/plans", "has_more": false, "data": {data}}}"#),
    ))
}

#[utoipa::path(get, path = "/v1/plans/{code}", tag = "subscriptions", params(("code" = String, Path, description = "The plan's code")),
    responses((status = 200, body = crate::openapi::Plan), (status = 404, body = crate::openapi::ErrorBody)),
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
