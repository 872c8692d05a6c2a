//! `POST /v1/webhooks/{provider}`: the raw body bytes and the headers go to
//! `payments.ingest_webhook`, which verifies and applies them.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value};

use utoipa::ToSchema;

use crate::db;
use crate::error::ApiError;
use crate::http::json_response;
use crate::state::AppState;

#[utoipa::path(post, path = "/v1/webhooks/{provider}", tag = "webhooks",
    params(("provider" = String, Path, description = "The provider name the secret was added under")),
    request_body(content = String, description = "The provider's event, verified as the exact bytes received"),
    responses((status = 200, description = "applied, noop, stale, ignored, pending_match, mismatch or duplicate", body = crate::routes::webhooks::WebhookResult),
              (status = 400, description = "bad signature, timestamp outside the tolerance, or not an event", body = crate::http::ErrorBody)))]
pub async fn receive(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // Repeated headers are joined with ", " as HTTP allows; non-UTF-8 values cannot carry a signature.
    let mut map = Map::new();
    for (name, value) in &headers {
        if let Ok(v) = value.to_str() {
            match map.get_mut(name.as_str()) {
                Some(Value::String(existing)) => {
                    existing.push_str(", ");
                    existing.push_str(v);
                }
                _ => {
                    map.insert(name.as_str().to_string(), Value::String(v.to_string()));
                }
            }
        }
    }
    let headers_json = Value::Object(map).to_string();
    let ingested = ingest(&state, &provider, &headers_json, &body).await;
    // Every delivery is counted, refused ones under the error code they got.
    // The path is anyone's to choose, so a refused one is labelled with it only
    // when it names this gateway's provider: labels stay bounded.
    if matches!(&ingested, Ok((_, result)) if result == "mismatch") {
        metrics::counter!("payment_anomalies_total", "source" => "webhook").increment(1);
    }
    let (provider, result) = match &ingested {
        Ok((_, result)) => (provider, result.clone()),
        Err(e) if provider == state.provider.name() => (provider, format!("refused:{}", e.code())),
        Err(e) => ("other".to_string(), format!("refused:{}", e.code())),
    };
    metrics::counter!("webhooks_received_total", "provider" => provider, "result" => result).increment(1);
    ingested.map(|(answer, _)| json_response(StatusCode::OK, answer))
}

/// `ingest_webhook`'s answer (JSON text) and its `result`.
async fn ingest(state: &AppState, provider: &str, headers: &str, body: &[u8]) -> Result<(String, String), ApiError> {
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::INGEST_WEBHOOK).await?;
    let row = db.query_one(&stmt, &[&provider, &headers, &body]).await?;
    Ok((row.try_get("answer")?, row.try_get("result")?))
}

// ---- schemas (documentation of the JSON the database renders) ----

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct WebhookResult {
    /// applied | noop | stale | ignored | pending_match | mismatch | duplicate
    result: String,
    event_id: String,
    payment_id: Option<String>,
    status: Option<String>,
}
