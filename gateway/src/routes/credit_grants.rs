//! `/v1/credit_grants`: prepaid credits, granted by the platform (the ledger: docs/src/ledger.md).

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
use crate::http::{amount_schema, created_or_replayed, decimal_text, idempotency_key};
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
    /// RFC 3339, in the future; absent: never.
    pub expires_at: Option<String>,
    /// A feature or meter the credits pay for; absent: invoices.
    pub applies_to: Option<String>,
    /// Lower is used first; default 0.
    pub priority: Option<i32>,
}

#[utoipa::path(post, path = "/v1/credit_grants", tag = "credit_grants", request_body = GrantCredits,
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
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::GRANT_CREDITS).await?;
    let row = db
        .query_one(
            &stmt,
            &[&key, &body.customer_id, &amount, &body.unit, &body.expires_at, &body.applies_to, &body.priority],
        )
        .await?;
    let (id, outcome): (&str, &str) = (row.try_get("grant_id")?, row.try_get("outcome")?);
    // (A statement of its own: the grant is visible only after the call that made it.)
    let stmt = db.prepare_cached(db::CREDIT_GRANT).await?;
    let grant = db.query_one(&stmt, &[&body.customer_id, &id, &outcome]).await?.try_get(0)?;
    Ok(created_or_replayed(grant, outcome == "replayed"))
}
