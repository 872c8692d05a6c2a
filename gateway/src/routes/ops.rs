//! Operations: liveness, readiness, Prometheus metrics, the OpenAPI document.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::state::AppState;

/// The process is up.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// The database answers.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let ready = match state.pool.get().await {
        Ok(db) => db.simple_query("SELECT 1").await.is_ok(),
        Err(_) => false,
    };
    if ready {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "database unavailable" }))).into_response()
    }
}

/// Prometheus text format, with the pool's state sampled now.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let status = state.pool.status();
    metrics::gauge!("db_pool_max_size").set(status.max_size as u32);
    metrics::gauge!("db_pool_connections").set(status.size as u32);
    metrics::gauge!("db_pool_available").set(status.available as u32);
    metrics::gauge!("db_pool_waiting").set(status.waiting as u32);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}
