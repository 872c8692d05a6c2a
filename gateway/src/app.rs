//! The router with its middleware: every route, and what wraps them all.

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::error::error_body;
use crate::routes;
use crate::state::{AppState, Limits};

pub fn router(state: AppState, limits: Limits) -> Router {
    Router::new()
        .route("/v1/payments", post(routes::payments::create).get(routes::payments::list))
        .route("/v1/payments/{id}", get(routes::payments::get))
        .route("/v1/payments/{id}/events", get(routes::payments::events))
        .route("/v1/payments/{id}/capture", post(routes::payments::capture))
        .route("/v1/payments/{id}/cancel", post(routes::payments::cancel))
        .route("/v1/refunds", post(routes::refunds::create).get(routes::refunds::list))
        .route("/v1/refunds/{id}", get(routes::refunds::get))
        .route("/v1/disputes", get(routes::disputes::list))
        .route("/v1/reconciliations", post(routes::reconciliations::create))
        .route("/v1/usage", post(routes::usage::record))
        .route("/v1/customers/{id}/usage", get(routes::usage::summary))
        .route("/v1/customers/{id}/entitlements", get(routes::customers::entitlements))
        .route("/v1/customers/{id}/consume", post(routes::customers::consume))
        .route("/v1/customers/{id}/balances", get(routes::customers::balances))
        .route("/v1/customers/{id}/spend_limit", put(routes::customers::set_spend_limit))
        .route("/v1/customers/{id}/tax", put(routes::customers::set_tax))
        .route("/v1/credit_grants", post(routes::credits::grant))
        .route("/v1/top_ups", post(routes::credits::top_up))
        .route("/v1/holds", post(routes::holds::reserve))
        .route("/v1/holds/{id}/settle", post(routes::holds::settle))
        .route("/v1/holds/{id}/release", post(routes::holds::release))
        .route("/v1/subscriptions", post(routes::subscriptions::create).get(routes::subscriptions::list))
        .route("/v1/subscriptions/{id}", get(routes::subscriptions::get))
        .route("/v1/subscriptions/{id}/cancel", post(routes::subscriptions::cancel))
        .route("/v1/subscriptions/{id}/change_plan", post(routes::subscriptions::change_plan))
        .route("/v1/subscriptions/{id}/pause", post(routes::subscriptions::pause))
        .route("/v1/subscriptions/{id}/resume", post(routes::subscriptions::resume))
        .route("/v1/subscriptions/{id}/coupon", post(routes::subscriptions::apply_coupon))
        .route("/v1/subscriptions/{id}/quantity", post(routes::subscriptions::set_quantity))
        .route("/v1/subscriptions/{id}/cancel_at", post(routes::subscriptions::set_cancel_at))
        .route("/v1/subscriptions/{id}/invoice_preview", get(routes::invoices::preview))
        .route("/v1/invoices", get(routes::invoices::list))
        .route("/v1/invoices/{id}", get(routes::invoices::invoice))
        .route("/v1/invoices/{id}/void", post(routes::invoices::void))
        .route("/v1/invoices/{id}/finalize", post(routes::invoices::finalize))
        .route("/v1/invoices/{id}/items", post(routes::invoices::add_item))
        .route("/v1/credit_notes", post(routes::invoices::create_credit_note))
        .route("/v1/credit_notes/{id}", get(routes::invoices::credit_note))
        .route("/v1/invoices/{id}/mark_uncollectible", post(routes::invoices::mark_uncollectible))
        .route("/v1/payments/{id}/receipt", get(routes::invoices::receipt))
        .route("/v1/payments/{id}/receipt.html", get(routes::invoices::receipt_html))
        .route("/v1/disputes/{id}", get(routes::disputes::get))
        .route("/v1/webhooks/{provider}", post(routes::webhooks::receive))
        .route("/v1/webhook_endpoints", post(routes::webhook_endpoints::create).get(routes::webhook_endpoints::list))
        .route("/v1/webhook_endpoints/{id}", delete(routes::webhook_endpoints::delete))
        .route("/v1/coupons/{code}", put(routes::catalog::put_coupon))
        .route("/v1/promotion_codes/{code}", put(routes::catalog::put_promotion_code))
        .route("/v1/tax_rates/{code}", put(routes::catalog::put_tax_rate))
        .route("/v1/plans/{code}/versions", post(routes::catalog::create_plan_version))
        .route("/v1/plans/{code}/migrations", post(routes::catalog::migrate_plan_version))
        .route("/v1/plans", get(routes::plans::list))
        .route("/v1/plans/{code}", get(routes::plans::get))
        .route("/healthz", get(routes::ops::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/metrics", get(routes::ops::metrics))
        .route("/openapi.json", get(crate::openapi::serve))
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout))
        .layer(middleware::from_fn(json_errors))
        // HTML pages and the MCP endpoint answer in their own formats, not the API's JSON errors.
        .merge(crate::dashboard::router(limits.request_timeout))
        .merge(crate::mcp::http::router(state.clone(), &limits))
        // Set after the merges, so no merged router's layers (the dashboard's, /mcp's key check) reach it.
        .fallback(|| async {
            error_body(StatusCode::NOT_FOUND, "invalid_request_error", "route_missing", "no such route", None)
        })
        .layer(middleware::from_fn(record_metrics))
        .layer(TraceLayer::new_for_http().on_failure(log_failure))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// Requests by route and status, and their latency.
async fn record_metrics(request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    // Bounded labels: any other method (clients may invent them) is "other".
    let method = match request.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m.to_string(),
        _ => "other".to_string(),
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed());
    response
}

/// Framework answers without a JSON body (413, 408, 404, 405, extractor
/// rejections) get one in the API's error shape.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (kind, code) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("invalid_request_error", "body_too_large"),
        StatusCode::REQUEST_TIMEOUT => ("api_error", "request_timeout"),
        StatusCode::NOT_FOUND => ("invalid_request_error", "route_missing"),
        StatusCode::METHOD_NOT_ALLOWED => ("invalid_request_error", "method_not_allowed"),
        s if s.is_client_error() => ("invalid_request_error", "request_invalid"),
        _ => ("api_error", "internal_error"),
    };
    let message = match axum::body::to_bytes(response.into_body(), 4096).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).into_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    error_body(status, kind, code, &message, None)
}

/// A 503 (no connection free in time, the database unavailable) or a 504 is back-pressure the
/// service was built to give: a warning. Any other failure is an error.
fn log_failure(
    class: tower_http::classify::ServerErrorsFailureClass,
    latency: std::time::Duration,
    _span: &tracing::Span,
) {
    use tower_http::classify::ServerErrorsFailureClass::StatusCode as Status;
    match class {
        Status(code) if code == StatusCode::SERVICE_UNAVAILABLE || code == StatusCode::GATEWAY_TIMEOUT => {
            tracing::warn!(status = code.as_u16(), ?latency, "back-pressure")
        }
        _ => tracing::error!(%class, ?latency, "response failed"),
    }
}
