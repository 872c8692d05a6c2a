//! What operators do: from a payment's page refund, capture, cancel; from a
//! customer's page issue a credit note, void an invoice, apply a coupon. Each is
//! the API's own call (`routes::refunds::request`, `routes::payments::command`,
//! the statements of `db`) behind a role check and the session's form token. A
//! refund or credit note form carries an idempotency key made when the page was
//! drawn, so a double-click, a resent form or a reload does it once; the key
//! stored names the dashboard user.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::layout::{col, error_page, message_page, table, text, url, Cell};
use super::queries::{INVOICE_OF_CUSTOMER, SUBSCRIPTION_OF_CUSTOMER};
use super::session::Session;
use crate::db;
use crate::error::{map_sqlstate, ApiError};
use crate::state::AppState;

/// Statuses a payment can be canceled from (the state machine's edges to `canceled`).
const CANCELABLE: [&str; 4] =
    ["requires_payment_method", "requires_confirmation", "requires_action", "requires_capture"];

#[derive(Deserialize)]
pub struct RefundForm {
    csrf: String,
    idempotency_key: String,
    amount: Option<String>,
    reason: Option<String>,
}

#[derive(Deserialize)]
pub struct CaptureForm {
    csrf: String,
    amount: Option<String>,
}

#[derive(Deserialize)]
pub struct CancelForm {
    csrf: String,
    reason: Option<String>,
}

#[derive(Deserialize)]
pub struct CreditNoteForm {
    csrf: String,
    idempotency_key: String,
    invoice_id: String,
    amount: Option<String>,
    reason: String,
    /// A checkbox: present ("true") when ticked.
    refund: Option<String>,
}

#[derive(Deserialize)]
pub struct VoidForm {
    csrf: String,
    invoice_id: String,
}

#[derive(Deserialize)]
pub struct CouponForm {
    csrf: String,
    subscription_id: String,
    code: String,
}

/// The page that says why an action is refused: not an operator, or not this session's form.
fn refusal(session: &Session, csrf: &str) -> Option<Response> {
    if !session.is_operator() {
        return Some(message_page(
            StatusCode::FORBIDDEN,
            "Operators only",
            "Your role may read the dashboard but not act on payments or invoices.",
        ));
    }
    session.form_refusal(csrf)
}

fn blank_is_none(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// An amount typed into a form: blank is none; the API's bound on its length.
fn amount(v: Option<String>) -> Result<Option<String>, ApiError> {
    match blank_is_none(v) {
        Some(a) if a.len() > MAX_AMOUNT_CHARS => {
            Err(ApiError::invalid("parameter_invalid", "an amount has at most 64 characters", Some("amount")))
        }
        a => Ok(a),
    }
}

/// As the API's JSON amounts (`http::decimal_text`).
const MAX_AMOUNT_CHARS: usize = 64;

/// Back to the page the action was taken from (`page`, about `subject`), saying
/// what happened; a refusal by the extension (a SQLSTATE answered with a 4xx) is
/// said there too, anything else is an error page (and logged).
fn back(session: &Session, page: &str, subject: &str, result: Result<(), ApiError>, done: &str) -> Response {
    match result {
        Ok(()) => {
            tracing::info!(subject, action = done, by = %session.email, "dashboard action");
            Redirect::to(&format!("{page}?done={done}")).into_response()
        }
        Err(e) => match e.sqlstate() {
            Some(code) if map_sqlstate(code).0.is_client_error() => {
                tracing::info!(subject, action = done, by = %session.email, sqlstate = code, "dashboard action refused");
                Redirect::to(&format!("{page}?error={code}")).into_response()
            }
            _ => error_page(e),
        },
    }
}

fn payment_page(id: &str) -> String {
    format!("/dashboard/payments/{}", url(id))
}

fn customer_page(id: &str) -> String {
    format!("/dashboard/customers/{}", url(id))
}

/// An action from a customer's page (`sql`, one of the API's statements, its rows unread) acts on
/// that customer's own invoice or subscription (`owned`: a statement of `queries` counting it),
/// else the page answers 404.
async fn on_customer(
    state: &AppState,
    owned: &str,
    what: &'static str,
    id: &str,
    customer: &str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<(), ApiError> {
    let db = state.pool.get().await?;
    let count: i64 = db.query_one(&db.prepare_cached(owned).await?, &[&id, &customer]).await?.try_get(0)?;
    if count == 0 {
        return Err(ApiError::NotFound(what));
    }
    db.query_one(&db.prepare_cached(sql).await?, params).await?;
    Ok(())
}

pub async fn refund(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<RefundForm>,
) -> Response {
    if let Some(refused) = refusal(&session, &form.csrf) {
        return refused;
    }
    let result = match amount(form.amount) {
        Ok(amount) => {
            let reason = blank_is_none(form.reason);
            // The refund row keeps who asked: its key names the dashboard user.
            let key = format!("dashboard:{}:{}", session.user_id, form.idempotency_key);
            crate::routes::refunds::request(&state, &key, &id, amount, reason).await.map(|_| ())
        }
        Err(e) => Err(e),
    };
    back(&session, &payment_page(&id), &id, result, "refund")
}

pub async fn capture(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<CaptureForm>,
) -> Response {
    if let Some(refused) = refusal(&session, &form.csrf) {
        return refused;
    }
    let result = match amount(form.amount) {
        Ok(amount) => crate::routes::payments::command(&state, &id, db::CAPTURE_PAYMENT, &amount).await.map(|_| ()),
        Err(e) => Err(e),
    };
    back(&session, &payment_page(&id), &id, result, "capture")
}

pub async fn cancel(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<CancelForm>,
) -> Response {
    if let Some(refused) = refusal(&session, &form.csrf) {
        return refused;
    }
    let result = crate::routes::payments::command(&state, &id, db::CANCEL_PAYMENT, &blank_is_none(form.reason)).await;
    back(&session, &payment_page(&id), &id, result.map(|_| ()), "cancel")
}

/// A credit note on one of the customer's invoices (`create_credit_note`).
pub async fn credit_note(
    State(state): State<AppState>,
    session: Session,
    Path(customer): Path<String>,
    Form(form): Form<CreditNoteForm>,
) -> Response {
    if let Some(refused) = refusal(&session, &form.csrf) {
        return refused;
    }
    let result = match amount(form.amount) {
        Ok(amount) => {
            // The credit note keeps who asked: its key names the dashboard user.
            let key = format!("dashboard:{}:{}", session.user_id, form.idempotency_key);
            let refund = form.refund.is_some();
            let params: [&(dyn ToSql + Sync); 5] = [&key, &form.invoice_id, &amount, &form.reason, &refund];
            on_customer(
                &state,
                INVOICE_OF_CUSTOMER,
                "invoice",
                &form.invoice_id,
                &customer,
                db::CREATE_CREDIT_NOTE,
                &params,
            )
            .await
        }
        Err(e) => Err(e),
    };
    back(&session, &customer_page(&customer), &form.invoice_id, result, "credit_note")
}

/// Voids one of the customer's invoices (`void_invoice`).
pub async fn void(
    State(state): State<AppState>,
    session: Session,
    Path(customer): Path<String>,
    Form(form): Form<VoidForm>,
) -> Response {
    if let Some(refused) = refusal(&session, &form.csrf) {
        return refused;
    }
    let id = &form.invoice_id;
    let result = on_customer(&state, INVOICE_OF_CUSTOMER, "invoice", id, &customer, db::VOID_INVOICE, &[id]).await;
    back(&session, &customer_page(&customer), &form.invoice_id, result, "void")
}

/// Applies a coupon to one of the customer's subscriptions (`apply_coupon`).
pub async fn coupon(
    State(state): State<AppState>,
    session: Session,
    Path(customer): Path<String>,
    Form(form): Form<CouponForm>,
) -> Response {
    if let Some(refused) = refusal(&session, &form.csrf) {
        return refused;
    }
    let code = form.code.trim();
    let id = &form.subscription_id;
    let result =
        on_customer(&state, SUBSCRIPTION_OF_CUSTOMER, "subscription", id, &customer, db::APPLY_COUPON, &[id, &code])
            .await;
    back(&session, &customer_page(&customer), &form.subscription_id, result, "coupon")
}

/// The operator's forms on a customer's page: a credit note on an open or paid invoice, voiding
/// an open or uncollectible one, a coupon for a subscription that still renews. None for a viewer.
pub fn customer_actions(customer: &str, invoices: &[Value], subscriptions: &[Value], session: &Session) -> Markup {
    let action = |verb: &str| format!("{}/{verb}", customer_page(customer));
    let with_status = |rows: &[Value], statuses: &[&str]| -> Vec<Value> {
        rows.iter().filter(|r| statuses.contains(&text(&r["status"]).as_str())).cloned().collect()
    };
    let creditable = with_status(invoices, &["open", "paid"]);
    let voidable = with_status(invoices, &["open", "uncollectible"]);
    let renewing = with_status(subscriptions, &["trialing", "active", "past_due"]);
    let invoice_option = |i: &Value| {
        html! { option value=(text(&i["id"])) { (text(&i["number"])) " · " (text(&i["status"])) " · " (text(&i["total"])) } }
    };
    let key = payments_core::id::new_token("dash").unwrap_or_default();
    html! {
        @if session.is_operator() && !(creditable.is_empty() && voidable.is_empty() && renewing.is_empty()) {
            section.actions aria-labelledby="billing-actions-title" {
                h2 #billing-actions-title { "Billing actions" }
                @if !creditable.is_empty() {
                    form method="post" action=(action("credit_note")) {
                        input type="hidden" name="csrf" value=(session.csrf);
                        input type="hidden" name="idempotency_key" value=(key);
                        label for="cn-invoice" { "Invoice to credit" }
                        select #cn-invoice name="invoice_id" { @for i in &creditable { (invoice_option(i)) } }
                        label for="cn-amount" { "Credit amount" }
                        input #cn-amount name="amount" required inputmode="decimal" pattern="[0-9]+([.][0-9]+)?" maxlength="40";
                        label for="cn-reason" { "Credit reason" }
                        select #cn-reason name="reason" {
                            option value="order_change" { "order change" }
                            option value="product_unsatisfactory" { "product unsatisfactory" }
                            option value="duplicate" { "duplicate" }
                            option value="fraudulent" { "fraudulent" }
                        }
                        label for="cn-refund" { "Refund it through the provider (a paid invoice; else its balance)" }
                        input #cn-refund type="checkbox" name="refund" value="true";
                        button type="submit" { "Issue credit note" }
                    }
                }
                @if !voidable.is_empty() {
                    form method="post" action=(action("void")) {
                        input type="hidden" name="csrf" value=(session.csrf);
                        label for="void-invoice" { "Invoice to void (never charged again)" }
                        select #void-invoice name="invoice_id" { @for i in &voidable { (invoice_option(i)) } }
                        button.danger type="submit" { "Void invoice" }
                    }
                }
                @if !renewing.is_empty() {
                    form method="post" action=(action("coupon")) {
                        input type="hidden" name="csrf" value=(session.csrf);
                        label for="coupon-subscription" { "Subscription" }
                        select #coupon-subscription name="subscription_id" {
                            @for s in &renewing {
                                option value=(text(&s["id"])) { (text(&s["id"])) " · " (text(&s["plan"])) " · " (text(&s["status"])) }
                            }
                        }
                        label for="coupon-code" { "Coupon or promotion code" }
                        input #coupon-code name="code" required maxlength="64";
                        button type="submit" { "Apply coupon" }
                    }
                }
            }
        }
    }
}

/// A payment's page: its amounts and balance, the operator's forms, its
/// history with the chain's verdict, refunds, disputes and open anomalies.
pub fn payment_body(d: &Value, session: &Session, notice: &Option<(bool, String)>) -> Markup {
    let p = &d["payment"];
    let id = text(&p["id"]);
    let status = text(&p["status"]);
    let problems: Vec<String> = d["chain_problems"].as_array().map_or(vec![], |a| a.iter().map(text).collect());
    let action = |verb: &str| format!("/dashboard/payments/{}/{verb}", url(&id));
    let key = payments_core::id::new_token("dash").unwrap_or_default();
    html! {
        h1 { "Payment " code { (id) } " " span class=(format!("status s-{status}")) { (status) } }
        @if let Some((ok, said)) = notice {
            p class=(if *ok { "notice ok" } else { "notice error" }) role=(if *ok { "status" } else { "alert" }) { (said) }
        }
        dl.facts {
            dt { "Customer" } dd { a href=(format!("/dashboard/customers/{}", url(&text(&p["customer_id"])))) { (text(&p["customer_id"])) } }
            dt { "Amount" } dd { (text(&p["amount_shown"])) }
            dt { "Captured" } dd.balance-captured { (text(&p["captured_shown"])) }
            dt { "Refunded" } dd.balance-refunded { (text(&p["refunded_shown"])) }
            dt { "Disputed" } dd { (text(&p["disputed_shown"])) }
            dt { "Net" } dd.balance-net { (text(&p["net_shown"])) }
            dt { "Capture" } dd { (text(&p["capture_method"])) }
            dt { "Provider" } dd { (text(&p["provider"])) " " code { (text(&p["provider_payment_id"])) } }
            dt { "Created" } dd { (text(&p["created_shown"])) }
            @if !p["description"].is_null() { dt { "Description" } dd { (text(&p["description"])) } }
            @if !p["last_error"].is_null() { dt { "Last provider error" } dd { code { (p["last_error"].to_string()) } } }
        }
        @if session.is_operator() {
            section.actions aria-labelledby="actions-title" {
                h2 #actions-title { "Actions" }
                @if status == "succeeded" && p["refundable"] == true {
                    form method="post" action=(action("refund")) {
                        input type="hidden" name="csrf" value=(session.csrf);
                        input type="hidden" name="idempotency_key" value=(key);
                        label for="refund-amount" { "Refund amount (" (text(&p["currency"])) "; empty: all that is left)" }
                        input #refund-amount name="amount" inputmode="decimal" pattern="[0-9]+([.][0-9]+)?" maxlength="40";
                        label for="refund-reason" { "Reason" }
                        select #refund-reason name="reason" {
                            option value="" { "none given" }
                            option value="requested_by_customer" { "requested by customer" }
                            option value="duplicate" { "duplicate" }
                            option value="fraudulent" { "fraudulent" }
                        }
                        button type="submit" { "Refund" }
                    }
                }
                @if status == "requires_capture" {
                    form method="post" action=(action("capture")) {
                        input type="hidden" name="csrf" value=(session.csrf);
                        label for="capture-amount" { "Capture amount (empty: all of it)" }
                        input #capture-amount name="amount" inputmode="decimal" pattern="[0-9]+([.][0-9]+)?" maxlength="40";
                        button type="submit" { "Capture" }
                    }
                }
                @if CANCELABLE.contains(&status.as_str()) {
                    form method="post" action=(action("cancel")) {
                        input type="hidden" name="csrf" value=(session.csrf);
                        label for="cancel-reason" { "Reason" }
                        select #cancel-reason name="reason" {
                            option value="requested_by_customer" { "requested by customer" }
                            option value="duplicate" { "duplicate" }
                            option value="fraudulent" { "fraudulent" }
                            option value="abandoned" { "abandoned" }
                        }
                        button.danger type="submit" { "Cancel payment" }
                    }
                }
            }
        }
        section aria-labelledby="timeline-title" {
            h2 #timeline-title { "Timeline" }
            @if problems.is_empty() {
                p.chain.verified { "✓ Chain verified: every event's hash links to the one before it." }
            } @else {
                p.chain.broken role="alert" { "✗ Chain broken: " (problems.join("; ")) }
            }
            (table("Every event of this payment, in order", &[col("seq", "#", Cell::Text), col("at", "When (UTC)", Cell::Text),
                col("from_status", "From", Cell::Status), col("to_status", "To", Cell::Status),
                col("applied", "Applied", Cell::Text), col("source", "Source", Cell::Text),
                col("reason", "Reason", Cell::Text), col("hash", "Hash", Cell::Text)], d["events"].as_array().map_or(&[], |a| a), "No events."))
        }
        h2 { "Refunds" }
        (table("Refunds of this payment", &[col("id", "Refund", Cell::Text), col("amount", "Amount", Cell::Text),
            col("status", "Status", Cell::Status), col("reason", "Reason", Cell::Text), col("created", "Created (UTC)", Cell::Text)],
            d["refunds"].as_array().map_or(&[], |a| a), "No refunds."))
        h2 { "Disputes" }
        (table("Disputes of this payment", &[col("id", "Dispute", Cell::Text), col("amount", "Amount", Cell::Text),
            col("status", "Status", Cell::Status), col("reason", "Reason", Cell::Text)],
            d["disputes"].as_array().map_or(&[], |a| a), "No disputes."))
        h2 { "Open anomalies" }
        (table("Provider objects that named this payment and were not applied", &[col("kind", "Kind", Cell::Status),
            col("source", "Source", Cell::Text), col("observed", "Observed", Cell::Text), col("created", "Seen (UTC)", Cell::Text)],
            d["anomalies"].as_array().map_or(&[], |a| a), "None."))
    }
}
