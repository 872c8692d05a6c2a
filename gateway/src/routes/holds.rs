//! `/v1/holds`: two-phase spending for agents. Reserve credits before work whose cost is known
//! only afterwards, then settle the actual cost or release the hold (docs/src/ledger.md).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::auth::{Caller, Object, WRITE};
use crate::db;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::http::{amount_schema, decimal_text, json_response};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reserve {
    pub customer_id: String,
    /// Exact: a decimal string or a JSON number, above 0 (whole for a credit unit).
    #[schema(schema_with = amount_schema)]
    pub amount: Box<RawValue>,
    /// A currency (`usd`) or a credit unit (`tokens`).
    pub unit: String,
    /// The caller's id for this reserve: a retry with it gets the first answer and sets nothing more aside.
    pub request_id: String,
    /// How long the hold lasts unless settled or released; default 900 (15 minutes), at most 30 days.
    pub expires_in_seconds: Option<i32>,
}

#[utoipa::path(post, path = "/v1/holds", tag = "holds", request_body = Reserve,
    responses((status = 200, description = "`{object: hold_answer, hold_id, allowed, available, reason}`: allowed with a hold when the customer's credits cover it, refused (allowed false, hold_id null, reason insufficient_credits or spend_limit_reached) when not: a refusal is an answer, not an error"),
        (status = 400, body = crate::http::ErrorBody), (status = 409, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn reserve(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<Reserve>,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    caller.may_act_for(&body.customer_id)?;
    let amount = decimal_text(&body.amount, "amount")?;
    let seconds = body.expires_in_seconds.unwrap_or(900);
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::RESERVE).await?;
    let row = db.query_one(&stmt, &[&body.customer_id, &amount, &body.unit, &body.request_id, &seconds]).await?;
    Ok(json_response(StatusCode::OK, row.try_get(0)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Settle {
    /// What the work cost: 0 up to the held amount, exact.
    #[schema(schema_with = amount_schema)]
    pub amount: Box<RawValue>,
}

#[utoipa::path(post, path = "/v1/holds/{id}/settle", tag = "holds", request_body = Settle, params(("id" = String, Path)),
    responses((status = 200, description = "`{object: hold, id, status: settled, spent, released, outcome: applied | replayed}`"),
        (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody),
        (status = 409, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn settle(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Settle>,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    let amount = decimal_text(&body.amount, "amount")?;
    let db = state.pool.get().await?;
    caller.owns(&db, Object::Hold, &id).await?;
    let stmt = db.prepare_cached(db::SETTLE).await?;
    Ok(json_response(StatusCode::OK, db.query_one(&stmt, &[&id, &amount]).await?.try_get(0)?))
}

#[utoipa::path(post, path = "/v1/holds/{id}/release", tag = "holds", params(("id" = String, Path)),
    responses((status = 200, description = "`{object: hold, id, status: released, spent, released, outcome: applied | replayed}`"),
        (status = 404, body = crate::http::ErrorBody), (status = 409, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn release(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    let db = state.pool.get().await?;
    caller.owns(&db, Object::Hold, &id).await?;
    let stmt = db.prepare_cached(db::RELEASE).await?;
    Ok(json_response(StatusCode::OK, db.query_one(&stmt, &[&id]).await?.try_get(0)?))
}
