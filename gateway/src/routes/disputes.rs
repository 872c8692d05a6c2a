//! `/v1/disputes`: read only. Disputes come from the provider's webhooks.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;

use utoipa::ToSchema;

use crate::auth::{Caller, Object, READ};
use crate::db;
use crate::error::ApiError;
use crate::http::{json_response, list_body};
use crate::state::AppState;

#[utoipa::path(get, path = "/v1/disputes/{id}", tag = "disputes",
    params(("id" = String, Path, description = "dsp_…")),
    responses((status = 200, body = crate::routes::disputes::Dispute), (status = 404, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    caller.require(READ)?;
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::GET_DISPUTE).await?;
    let dispute: String = db.query_one(&stmt, &[&id]).await?.try_get("dispute")?;
    caller.sees_json(&dispute, "dispute")?;
    Ok(json_response(StatusCode::OK, dispute))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this payment's disputes.
    pub payment: Option<String>,
    /// Only disputes in this status (needs_response, under_review, won, lost, warning_…).
    pub status: Option<String>,
    /// 1 to 100; default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i32>,
    /// The last id of the previous page.
    pub starting_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/disputes", tag = "disputes", params(ListQuery),
    responses((status = 200, body = crate::routes::disputes::DisputeList), (status = 400, body = crate::http::ErrorBody),
        (status = 404, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    caller.require(READ)?;
    let db = state.pool.get().await?;
    // A bound key lists the disputes of one of its customer's payments.
    match (&q.payment, caller.customer()) {
        (Some(payment), _) => caller.owns(&db, Object::Payment, payment).await?,
        (None, Some(_)) => return Err(ApiError::CustomerBound("this key lists the disputes of one payment: name it")),
        (None, None) => {}
    }
    let stmt = db.prepare_cached(db::LIST_DISPUTES).await?;
    let row = db.query_one(&stmt, &[&q.payment, &q.status, &q.limit.unwrap_or(10), &q.starting_after]).await?;
    Ok(json_response(StatusCode::OK, list_body("/v1/disputes", &row)?))
}

// ---- schemas (documentation of the JSON the database renders) ----

/// A dispute (chargeback or inquiry) of a payment, from the provider's webhooks.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Dispute {
    /// `dispute`
    object: String,
    /// dsp_…
    id: String,
    customer_id: String,
    payment_id: String,
    /// Major units, exact, as a decimal string.
    amount: String,
    amount_minor: i64,
    currency: String,
    /// warning_needs_response | warning_under_review | warning_closed | needs_response | under_review | won | lost
    status: String,
    reason: Option<String>,
    evidence_due_by: Option<String>,
    provider: String,
    /// The provider's dispute id (dp_…).
    provider_dispute_id: String,
    created_at: String,
    updated_at: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DisputeList {
    object: String,
    url: String,
    has_more: bool,
    data: Vec<Dispute>,
}
