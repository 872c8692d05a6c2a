//! `/v1/invoices/{id}`, `/v1/subscriptions/{id}/invoice_preview` and `/v1/payments/{id}/receipt`:
//! invoices, the next one, and receipts as the database renders them, as JSON or as printable pages.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::auth::{Caller, Object, READ, WRITE};
use crate::db;
use crate::error::ApiError;
use crate::http::json_response;
use crate::state::AppState;

#[utoipa::path(get, path = "/v1/invoices/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "inv_…, or inv_….html for the printable page")),
    responses((status = 200, description = "The invoice with its lines (`total` a decimal string), or its printable HTML"),
        (status = 404, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn invoice(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(READ)?;
    let (id, html) = match id.strip_suffix(".html") {
        Some(id) => (id.to_string(), true),
        None => (id, false),
    };
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::GET_INVOICE).await?;
    let invoice: String = db.query_one(&stmt, &[&id]).await?.try_get(0)?;
    caller.sees_json(&invoice, "invoice")?;
    if !html {
        return Ok(json_response(StatusCode::OK, invoice));
    }
    Ok(html_response(crate::render::invoice_html(&parsed(&invoice)?)))
}

#[utoipa::path(post, path = "/v1/invoices/{id}/void", tag = "subscriptions",
    params(("id" = String, Path, description = "inv_…")),
    responses((status = 200, description = "The invoice, void: never charged again; the credits and balance it applied went back"),
        (status = 403, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody),
        (status = 409, body = crate::http::ErrorBody, description = "A paid invoice (a credit note corrects it)")),
    security(("bearer" = [])))]
pub async fn void(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    close(state, caller, id, db::VOID_INVOICE).await
}

#[utoipa::path(post, path = "/v1/invoices/{id}/mark_uncollectible", tag = "subscriptions",
    params(("id" = String, Path, description = "inv_…")),
    responses((status = 200, description = "The invoice, uncollectible: no more retries"),
        (status = 403, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody),
        (status = 409, body = crate::http::ErrorBody, description = "Not open")),
    security(("bearer" = [])))]
pub async fn mark_uncollectible(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    close(state, caller, id, db::MARK_UNCOLLECTIBLE).await
}

/// Stops collecting an invoice (`sql`: void or mark uncollectible), then answers it as GET does.
async fn close(state: AppState, caller: Caller, id: String, sql: &str) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    // Whether a customer owes an invoice is the platform's to say, never the customer's key.
    caller.require_platform()?;
    let db = state.pool.get().await?;
    db.query_one(&db.prepare_cached(sql).await?, &[&id]).await?;
    let invoice: String = db.query_one(&db.prepare_cached(db::GET_INVOICE).await?, &[&id]).await?.try_get(0)?;
    Ok(json_response(StatusCode::OK, invoice))
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}/invoice_preview", tag = "subscriptions",
    params(("id" = String, Path, description = "sub_…")),
    responses((status = 200, description = "The next invoice as it stands now, written nowhere: `{object: invoice_preview, period_number, period_start, period_end, currency, coupon, subtotal, discount, tax, credits_applied, balance_applied, total, lines, taxes}` (amounts as decimal strings)"),
        (status = 404, body = crate::http::ErrorBody),
        (status = 409, body = crate::http::ErrorBody, description = "No next invoice (ended, paused, or ending at its period's end)")),
    security(("bearer" = [])))]
pub async fn preview(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(READ)?;
    let db = state.pool.get().await?;
    caller.owns(&db, Object::Subscription, &id).await?;
    let stmt = db.prepare_cached(db::PREVIEW_INVOICE).await?;
    Ok(json_response(StatusCode::OK, db.query_one(&stmt, &[&id]).await?.try_get(0)?))
}

#[utoipa::path(get, path = "/v1/payments/{id}/receipt", tag = "payments",
    params(("id" = String, Path, description = "pay_…")),
    responses((status = 200, description = "The receipt of a succeeded payment (`payments.receipt`)"),
        (status = 404, body = crate::http::ErrorBody), (status = 409, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn receipt(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(READ)?;
    caller.owns(&*state.pool.get().await?, Object::Payment, &id).await?;
    Ok(json_response(StatusCode::OK, fetch_receipt(&state, &id).await?))
}

#[utoipa::path(get, path = "/v1/payments/{id}/receipt.html", tag = "payments",
    params(("id" = String, Path, description = "pay_…")),
    responses((status = 200, description = "The receipt as a printable page", content_type = "text/html"),
        (status = 404, body = crate::http::ErrorBody), (status = 409, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn receipt_html(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(READ)?;
    caller.owns(&*state.pool.get().await?, Object::Payment, &id).await?;
    Ok(html_response(crate::render::receipt_html(&parsed(&fetch_receipt(&state, &id).await?)?)))
}

async fn fetch_receipt(state: &AppState, id: &str) -> Result<String, ApiError> {
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::RECEIPT).await?;
    Ok(db.query_one(&stmt, &[&id]).await?.try_get(0)?)
}

/// JSON PostgreSQL rendered, read to render HTML from (amounts stay strings).
fn parsed(json: &str) -> Result<serde_json::Value, ApiError> {
    serde_json::from_str(json).map_err(|e| ApiError::Internal(format!("the database rendered invalid JSON: {e}")))
}

/// A printable page: it runs no script and loads nothing (its one stylesheet is inline),
/// may not be framed, and is not sniffed as anything but HTML.
fn html_response(page: String) -> Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    (StatusCode::OK, headers, page).into_response()
}
