//! `/mcp`: the MCP server over streamable HTTP, stateless (every request
//! stands alone, so any gateway replica can answer it) with JSON answers.
//! The API key is checked before the request reaches the server, and its
//! scopes travel in the request's extensions to the tools.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use super::PaymentsMcp;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::{AppState, Limits};

/// `/mcp` within the API's limits on body size and time; it answers only the Host
/// headers in `limits.mcp_allowed_hosts` (a defence against DNS rebinding).
pub fn router(state: AppState, limits: &Limits) -> Router<AppState> {
    // One server, its tool router built once; each request gets a clone (stateless mode).
    let server = PaymentsMcp::new(state.pool.clone(), None);
    let config = StreamableHttpServerConfig::default()
        .with_stateful_mode(false)
        .with_json_response(true)
        .with_allowed_hosts(limits.mcp_allowed_hosts.clone());
    let service: StreamableHttpService<PaymentsMcp, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(server.clone()), Arc::default(), config);
    Router::new()
        .nest_service("/mcp", service)
        .route_layer(middleware::from_fn_with_state(state, authenticate))
        .route_layer(RequestBodyLimitLayer::new(limits.body_bytes))
        .route_layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout))
}

/// 401 (the API's JSON error) without a valid key; otherwise the caller rides along. A request
/// without a Host (or an empty one) is refused first: the allowed-hosts check cannot judge it.
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let host = request.headers().get(axum::http::header::HOST).map(|h| h.as_bytes().trim_ascii());
    if host.is_none_or(<[u8]>::is_empty) {
        return ApiError::invalid("host_missing", "a request to /mcp names its Host", Some("Host")).into_response();
    }
    let (mut parts, body) = request.into_parts();
    match Caller::from_request_parts(&mut parts, &state).await {
        Ok(caller) => {
            parts.extensions.insert(caller);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(e) => e.into_response(),
    }
}
