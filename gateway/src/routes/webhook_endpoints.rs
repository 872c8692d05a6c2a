//! `/v1/webhook_endpoints`: where the app wants events delivered (`payments.add_webhook_endpoint`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::auth::{Caller, WEBHOOKS};
use crate::db;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::http::json_response;
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookEndpoint {
    /// http(s) URL the events are POSTed to.
    pub url: String,
    /// payment.succeeded, invoice.* or *; empty or absent: every event.
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
}

#[utoipa::path(post, path = "/v1/webhook_endpoints", tag = "webhook endpoints", request_body = CreateWebhookEndpoint,
    responses((status = 201, description = "Registered; `secret` (whsec_…, Standard Webhooks) is shown this once", body = crate::routes::webhook_endpoints::WebhookEndpoint),
        (status = 400, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateWebhookEndpoint>,
) -> Result<Response, ApiError> {
    caller.require(WEBHOOKS)?;
    caller.require_platform()?;
    state.destinations.check(&body.url).await.map_err(|why| ApiError::invalid("url_forbidden", why, Some("url")))?;
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::ADD_WEBHOOK_ENDPOINT).await?;
    let row = db.query_one(&stmt, &[&body.url, &body.event_types, &body.description]).await?;
    Ok(json_response(StatusCode::CREATED, row.try_get(0)?))
}

#[utoipa::path(get, path = "/v1/webhook_endpoints", tag = "webhook endpoints",
    responses((status = 200, description = "Every endpoint, newest first (secrets never shown)", body = crate::routes::webhook_endpoints::WebhookEndpointList)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(WEBHOOKS)?;
    caller.require_platform()?;
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::LIST_WEBHOOK_ENDPOINTS).await?;
    let data: String = db.query_one(&stmt, &[]).await?.try_get(0)?;
    Ok(json_response(
        StatusCode::OK,
        format!(r#"{{"object": "list", "url": "/v1/webhook_endpoints", "has_more": false, "data": {data}}}"#),
    ))
}

#[utoipa::path(delete, path = "/v1/webhook_endpoints/{id}", tag = "webhook endpoints",
    params(("id" = String, Path, description = "we_…")),
    responses((status = 200, description = "Disabled: nothing more is delivered to it; its log stays", body = crate::routes::webhook_endpoints::DeletedWebhookEndpoint),
        (status = 404, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(WEBHOOKS)?;
    caller.require_platform()?;
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::REMOVE_WEBHOOK_ENDPOINT).await?;
    db.query_one(&stmt, &[&id]).await?;
    Ok(json_response(StatusCode::OK, json!({ "object": "webhook_endpoint", "id": id, "deleted": true }).to_string()))
}

// ---- schemas (documentation of the JSON the database renders) ----

/// Where events are delivered, signed with the Standard Webhooks scheme.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct WebhookEndpoint {
    /// `webhook_endpoint`
    object: String,
    /// we_…
    id: String,
    url: String,
    /// payment.succeeded, invoice.* or *; empty: every event.
    event_types: Vec<String>,
    description: Option<String>,
    /// false once deleted.
    enabled: bool,
    /// Only when created: the signing secret (whsec_…), shown once.
    secret: Option<String>,
    /// In lists.
    created_at: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct WebhookEndpointList {
    object: String,
    url: String,
    has_more: bool,
    data: Vec<WebhookEndpoint>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeletedWebhookEndpoint {
    object: String,
    id: String,
    deleted: bool,
}
