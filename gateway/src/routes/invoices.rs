//! `/v1/invoices/{id}` (with its items, finalize, void), `/v1/subscriptions/{id}/invoice_preview`,
//! `/v1/credit_notes` and `/v1/payments/{id}/receipt`: invoices, the next one, their credit notes,
//! and receipts as the database renders them, as JSON or as printable pages.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Caller, Object, READ, WRITE};
use crate::db;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::http::{amount_schema, created_or_replayed, decimal_text, idempotency_key, json_response};
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
    document(state, caller, id, db::GET_INVOICE, "invoice", crate::render::invoice_html).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListInvoices {
    pub customer_id: Option<String>,
    pub subscription_id: Option<String>,
    /// draft | open | paid | void | uncollectible
    pub status: Option<String>,
    /// 1 to 100; default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i32>,
    /// The last id of the previous page.
    pub starting_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/invoices", tag = "subscriptions", params(ListInvoices),
    responses((status = 200, description = "A page of invoices without their lines, newest first (`status=draft`: the renewals that still take invoice items)"),
        (status = 400, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListInvoices>,
) -> Result<Response, ApiError> {
    caller.require(READ)?;
    let customer = caller.listed_customer(&q.customer_id)?;
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::LIST_INVOICES).await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&customer, &q.subscription_id, &q.status, &q.limit.unwrap_or(10), &q.starting_after];
    let row = db.query_one(&stmt, &params).await?;
    Ok(json_response(StatusCode::OK, crate::http::list_body("/v1/invoices", &row)?))
}

/// One document by id (`sql` renders its JSON) for a caller who may see it, as JSON or, for an
/// id ending in `.html`, as the printable page `page` draws.
async fn document(
    state: AppState,
    caller: Caller,
    id: String,
    sql: &str,
    what: &'static str,
    page: fn(&serde_json::Value) -> String,
) -> Result<Response, ApiError> {
    caller.require(READ)?;
    let (id, html) = match id.strip_suffix(".html") {
        Some(id) => (id.to_string(), true),
        None => (id, false),
    };
    let db = state.pool.get().await?;
    let json: String = db.query_one(&db.prepare_cached(sql).await?, &[&id]).await?.try_get(0)?;
    caller.sees_json(&json, what)?;
    if !html {
        return Ok(json_response(StatusCode::OK, json));
    }
    Ok(html_response(page(&parsed(&json)?)))
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

#[utoipa::path(post, path = "/v1/invoices/{id}/finalize", tag = "subscriptions",
    params(("id" = String, Path, description = "inv_…: a draft")),
    responses((status = 200, description = "The invoice, final: numbered and charged now rather than at the end of its draft window (an invoice already final as it is)"),
        (status = 403, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn finalize(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    close(state, caller, id, db::FINALIZE_INVOICE).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddInvoiceItem {
    /// What the line says, 1 to 500 characters.
    pub description: String,
    /// The price of one, exact: a decimal string or a JSON number above 0, in the invoice's currency.
    #[schema(schema_with = amount_schema)]
    pub amount: Box<RawValue>,
    /// 1 to 1,000,000 (default 1).
    pub quantity: Option<i32>,
}

#[utoipa::path(post, path = "/v1/invoices/{id}/items", tag = "subscriptions", request_body = AddInvoiceItem,
    params(("id" = String, Path, description = "inv_…: a draft"),
        ("Idempotency-Key" = String, Header, description = "A retry with the same key and body adds nothing more.")),
    responses(
        (status = 201, description = "The draft invoice with the item among its lines (200 with Idempotent-Replayed: true for a repeat)"),
        (status = 400, body = crate::http::ErrorBody), (status = 403, body = crate::http::ErrorBody),
        (status = 404, body = crate::http::ErrorBody),
        (status = 409, body = crate::http::ErrorBody, description = "The invoice is final (a credit note corrects it), or the key was used with another body")),
    security(("bearer" = [])))]
pub async fn add_item(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<AddInvoiceItem>,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    // What a customer is charged is the platform's to add, never the customer's key.
    caller.require_platform()?;
    let key = idempotency_key(&headers)?;
    let amount = decimal_text(&body.amount, "amount")?;
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::ADD_INVOICE_ITEM).await?;
    let row = db.query_one(&stmt, &[&key, &id, &body.description, &amount, &body.quantity]).await?;
    let outcome: &str = row.try_get("outcome")?;
    let invoice = db.query_one(&db.prepare_cached(db::GET_INVOICE).await?, &[&id]).await?.try_get(0)?;
    Ok(created_or_replayed(invoice, outcome == "replayed"))
}

/// Moves an invoice on (`sql`: finalize, void or mark uncollectible), then answers it as GET does.
async fn close(state: AppState, caller: Caller, id: String, sql: &str) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    // Whether a customer owes an invoice is the platform's to say, never the customer's key.
    caller.require_platform()?;
    let db = state.pool.get().await?;
    db.query_one(&db.prepare_cached(sql).await?, &[&id]).await?;
    let invoice: String = db.query_one(&db.prepare_cached(db::GET_INVOICE).await?, &[&id]).await?.try_get(0)?;
    Ok(json_response(StatusCode::OK, invoice))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCreditNote {
    /// inv_…: an open or paid invoice.
    pub invoice_id: String,
    /// Exact: a decimal string or a JSON number, above 0; at most what the invoice has left to credit.
    #[schema(schema_with = amount_schema)]
    pub amount: Box<RawValue>,
    /// duplicate, fraudulent, order_change or product_unsatisfactory.
    pub reason: String,
    /// A paid invoice: true refunds its payment through the provider, false (default) credits the customer's balance.
    pub refund: Option<bool>,
}

#[utoipa::path(post, path = "/v1/credit_notes", tag = "subscriptions", request_body = CreateCreditNote,
    params(("Idempotency-Key" = String, Header, description = "A retry with the same key and body answers with the same credit note.")),
    responses(
        (status = 201, description = "`{object: credit_note, id, invoice_id, number, amount, currency, reason, method: reduced_amount_due | refund | customer_balance, refund_id, created_at}` (200 with Idempotent-Replayed: true for a repeat)"),
        (status = 400, body = crate::http::ErrorBody, description = "Bad input, or more than the invoice has left to credit (amount_too_large)"),
        (status = 403, body = crate::http::ErrorBody), (status = 404, body = crate::http::ErrorBody),
        (status = 409, body = crate::http::ErrorBody, description = "An invoice that takes no credit note, or a refund of one not paid through the provider")),
    security(("bearer" = [])))]
pub async fn create_credit_note(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateCreditNote>,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    // Crediting an invoice is the platform's decision, never the customer's key.
    caller.require_platform()?;
    let key = idempotency_key(&headers)?;
    let amount = decimal_text(&body.amount, "amount")?;
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::CREATE_CREDIT_NOTE).await?;
    let row = db.query_one(&stmt, &[&key, &body.invoice_id, &amount, &body.reason, &body.refund]).await?;
    let (id, outcome): (&str, &str) = (row.try_get("credit_note_id")?, row.try_get("outcome")?);
    let note = db.query_one(&db.prepare_cached(db::GET_CREDIT_NOTE).await?, &[&id]).await?.try_get(0)?;
    Ok(created_or_replayed(note, outcome == "replayed"))
}

#[utoipa::path(get, path = "/v1/credit_notes/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "cn_…, or cn_….html for the printable page")),
    responses((status = 200, description = "The credit note, or its printable HTML"), (status = 404, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn credit_note(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    document(state, caller, id, db::GET_CREDIT_NOTE, "credit note", crate::render::credit_note_html).await
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
