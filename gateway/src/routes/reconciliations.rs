//! `/v1/reconciliations`: the provider's objects of a window against ours.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::{Caller, ADMIN, WRITE};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::http::{instant, json_response};
use crate::state::AppState;

/// A window `[from, to)` to reconcile.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReconciliation {
    /// Start (inclusive), RFC 3339 with its offset: `2026-11-01T00:00:00Z`.
    pub from: String,
    /// End (exclusive).
    pub to: String,
    /// Refresh what the provider's objects settle (a missed success, another status). Default false.
    pub repair: Option<bool>,
}

#[utoipa::path(post, path = "/v1/reconciliations", tag = "reconciliations", request_body = CreateReconciliation,
    responses(
        (status = 201, description = "The run, with every disagreement found", body = crate::routes::reconciliations::Reconciliation),
        (status = 400, body = crate::http::ErrorBody), (status = 401, body = crate::http::ErrorBody),
        (status = 403, body = crate::http::ErrorBody), (status = 502, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateReconciliation>,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    caller.require_platform()?;
    let (from, to) = (instant("from", &body.from)?, instant("to", &body.to)?);
    let repair = body.repair.unwrap_or(false);
    // Reading a report is a write key's; changing records from it is an administrator's.
    if repair {
        caller.require(ADMIN)?;
    }
    let report = crate::reconciliation::run(&state.pool, state.provider.as_ref(), from, to, repair).await?;
    Ok(json_response(StatusCode::CREATED, report))
}

// ---- schemas (documentation of the JSON the database renders) ----

/// A reconciliation run: the provider's objects of a window against ours.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Reconciliation {
    /// `reconciliation`
    object: String,
    /// rec_…
    id: String,
    provider: String,
    from: String,
    to: String,
    repair: bool,
    /// How many provider objects were pulled.
    fetched: i32,
    /// How many disagreements were repaired from the provider's objects.
    repaired: i32,
    disagreements: Vec<Disagreement>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Disagreement {
    /// missed_success | status_differs | amount_differs | currency_differs | unknown_to_us | unknown_to_provider
    kind: String,
    /// payment | refund
    object_type: String,
    provider_object_id: String,
    payment_id: Option<String>,
    refund_id: Option<String>,
    /// Our status, amount_minor and currency.
    #[schema(value_type = Option<Object>)]
    ours: (),
    /// The provider's status (in our words), amount_minor and currency.
    #[schema(value_type = Option<Object>)]
    theirs: (),
    repaired: bool,
}
