//! The web dashboard at `/dashboard`: server-rendered pages over the same
//! extension functions and views every other client reads, for people who
//! would rather look than query. Sign-in and sessions live in the extension
//! (`payments.dashboard_sign_in`); the pages use no JavaScript, the charts
//! are SVG drawn here, and the one stylesheet is embedded in the binary.
//!
//! - `session.rs`  sign-in, sign-out, the session cookie, form tokens (CSRF)
//! - `throttle.rs` how many sign-ins run at once, and emails with too many wrong passwords
//! - `pages.rs`    the pages that read
//! - `actions.rs`  what operators do: refund, capture, cancel
//! - `layout.rs`   the page around each page, tables, error pages
//! - `chart.rs`    SVG bar charts
//! - `queries.rs`  the SQL the pages send

mod actions;
pub mod chart;
mod layout;
mod pages;
mod queries;
mod session;
pub mod throttle;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::timeout::TimeoutLayer;

use crate::state::AppState;

/// Forms are a few fields; anything larger is not ours.
const BODY_LIMIT: usize = 16 * 1024;
const STYLE: &str = include_str!("style.css");

pub fn router(request_timeout: Duration) -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(pages::overview))
        .route("/dashboard/sign-in", get(session::sign_in_page).post(session::sign_in))
        .route("/dashboard/sign-out", post(session::sign_out))
        .route("/dashboard/payments", get(pages::payments))
        .route("/dashboard/payments/{id}", get(pages::payment))
        .route("/dashboard/payments/{id}/refund", post(actions::refund))
        .route("/dashboard/payments/{id}/capture", post(actions::capture))
        .route("/dashboard/payments/{id}/cancel", post(actions::cancel))
        .route("/dashboard/refunds", get(pages::refunds_and_disputes))
        .route("/dashboard/subscriptions", get(pages::subscriptions))
        .route("/dashboard/customers", get(pages::customers))
        .route("/dashboard/customers/{id}", get(pages::customer))
        .route("/dashboard/customers/{id}/credit_note", post(actions::credit_note))
        .route("/dashboard/customers/{id}/void", post(actions::void))
        .route("/dashboard/customers/{id}/coupon", post(actions::coupon))
        .route("/dashboard/webhooks", get(pages::webhooks))
        .route("/dashboard/anomalies", get(pages::anomalies))
        .route("/dashboard/style.css", get(style))
        // Not a fallback: the API's unknown routes keep their JSON 404.
        .route("/dashboard/{*rest}", get(not_found))
        .route_layer(DefaultBodyLimit::max(BODY_LIMIT))
        .route_layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, request_timeout))
        .route_layer(middleware::from_fn(security_headers))
}

async fn not_found() -> Response {
    layout::message_page(StatusCode::NOT_FOUND, "Not found", "There is no such page.")
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=3600")], STYLE)
        .into_response()
}

/// Pages load nothing from elsewhere, run no script and may not be framed;
/// they show payment data, so no cache keeps them.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; \
             base-uri 'none'",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
