//! `/v1/usage` and `/v1/customers/{id}/usage`: metered usage in, sums out.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Caller, READ, WRITE};
use crate::db;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::http::{
    amount_schema, created_or_replayed, decimal_text, idempotency_key, instant, json_response, optional_instant,
};
use crate::state::AppState;

/// One usage event (with the `Idempotency-Key` header), or a batch of them (`events`, each with its own key).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordUsage {
    pub customer_id: Option<String>,
    pub meter: Option<String>,
    /// Exact: a decimal string or a JSON number, 0 to 10^15.
    #[schema(schema_with = amount_schema)]
    pub quantity: Option<Box<RawValue>>,
    /// RFC 3339 with its offset (`2026-12-07T10:00:00Z`); default now. At most 35 days ago and 5 minutes ahead.
    pub occurred_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub properties: Option<Box<RawValue>>,
    /// A batch of up to 1000 events `{idempotency_key, customer_id, meter, quantity, occurred_at?, properties?}`,
    /// instead of the fields above.
    #[schema(value_type = Option<Vec<Object>>)]
    pub events: Option<Box<RawValue>>,
}

#[utoipa::path(post, path = "/v1/usage", tag = "usage", request_body = RecordUsage,
    params(("Idempotency-Key" = Option<String>, Header, description = "Required for one event; a batch carries a key per event.")),
    responses(
        (status = 201, description = "Recorded: `{id, outcome}` for one event (outcome replayed and 200 for a repeat), `{object: list, data: [...]}` for a batch"),
        (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody),
        (status = 409, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn record(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RecordUsage>,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    let db = state.pool.get().await?;
    if let Some(events) = &body.events {
        if body.customer_id.is_some() || body.meter.is_some() || body.quantity.is_some() {
            return Err(ApiError::invalid("parameter_invalid", "send one event or events, not both", Some("events")));
        }
        // A bound key records its own customer's usage only: a batch naming another is refused whole.
        if caller.customer().is_some() {
            // Only each event's customer_id is read (numbers are not parsed): a batch this cannot
            // read is refused whole, never passed on unchecked.
            #[derive(serde::Deserialize)]
            struct Named {
                customer_id: Option<String>,
            }
            let listed: Vec<Named> = serde_json::from_str(events.get()).map_err(|_| {
                ApiError::invalid("parameter_invalid", "events must be an array of usage event objects", Some("events"))
            })?;
            for event in &listed {
                caller.may_act_for(event.customer_id.as_deref().unwrap_or_default())?;
            }
        }
        let stmt = db.prepare_cached(db::RECORD_USAGE_BATCH).await?;
        let data: String = db.query_one(&stmt, &[&events.get()]).await?.try_get(0)?;
        return Ok(json_response(StatusCode::CREATED, format!(r#"{{"object":"list","data":{data}}}"#)));
    }
    if let Some(customer) = &body.customer_id {
        caller.may_act_for(customer)?;
    }
    let key = idempotency_key(&headers)?;
    let missing =
        |name: &'static str| ApiError::invalid("parameter_missing", format!("{name} is required"), Some(name));
    let quantity = decimal_text(body.quantity.as_deref().ok_or_else(|| missing("quantity"))?, "quantity")?;
    let occurred_at = optional_instant("occurred_at", &body.occurred_at)?;
    let properties = body.properties.as_ref().map(|p| p.get().to_string());
    let stmt = db.prepare_cached(db::RECORD_USAGE).await?;
    let row = db
        .query_one(
            &stmt,
            &[
                &key,
                &body.customer_id.as_deref().ok_or_else(|| missing("customer_id"))?,
                &body.meter.as_deref().ok_or_else(|| missing("meter"))?,
                &quantity,
                &occurred_at,
                &properties,
            ],
        )
        .await?;
    Ok(created_or_replayed(row.try_get("event")?, row.try_get::<_, &str>("outcome")? == "replayed"))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SummaryQuery {
    pub meter: String,
    /// Start (inclusive), RFC 3339 with its offset.
    pub from: String,
    /// End (exclusive), RFC 3339 with its offset.
    pub to: String,
}

#[utoipa::path(get, path = "/v1/customers/{id}/usage", tag = "usage", params(("id" = String, Path), SummaryQuery),
    responses((status = 200, description = "`{customer_id, meter, aggregation, value, event_count, from, to}`; value a decimal string"),
        (status = 400, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn summary(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer): Path<String>,
    Query(q): Query<SummaryQuery>,
) -> Result<Response, ApiError> {
    caller.require(READ)?;
    caller.sees(Some(&customer), "customer")?;
    let (from, to) = (instant("from", &q.from)?, instant("to", &q.to)?);
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::USAGE_SUMMARY).await?;
    let summary: String = db.query_one(&stmt, &[&customer, &q.meter, &from, &to]).await?.try_get(0)?;
    Ok(json_response(StatusCode::OK, summary))
}
