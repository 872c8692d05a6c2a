//! The pages that read: overview, payments, a payment, refunds and disputes,
//! subscriptions, customers and a customer, webhooks, anomalies.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::chart::{self, Bar};
use super::layout::{col, error_page, page, table, text, url, Cell};
use super::queries;
use super::session::Session;
use crate::error::ApiError;
use crate::state::AppState;

/// How many days the overview shows.
const OVERVIEW_DAYS: i32 = 30;

/// One statement's one JSON document. Planned anew for its parameters each time (an unnamed
/// statement, never a cached generic plan): the filters are `$n IS NULL OR …`, and only a plan
/// that knows which are given uses the indexes for the others. Pages are few; planning is cheap.
async fn document(state: &AppState, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Value, ApiError> {
    let db = state.pool.get().await?;
    let json: String = db.query_one(sql, params).await?.try_get(0)?;
    serde_json::from_str(&json).map_err(|e| ApiError::Internal(format!("dashboard JSON: {e}")))
}

fn rows(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], |a| a.as_slice())
}

fn respond(result: Result<Markup, ApiError>, title: &str, session: &Session) -> Response {
    match result {
        Ok(body) => page(title, Some(session), body).into_response(),
        Err(e) => error_page(e),
    }
}

pub async fn overview(State(state): State<AppState>, session: Session) -> Response {
    let body = async {
        let o = document(&state, queries::OVERVIEW, &[&OVERVIEW_DAYS]).await?;
        let trial = document(&state, queries::TRIAL_BALANCE, &[]).await?;
        Ok(html! {
            (overview_body(&o))
            h2 { "Ledger" }
            p.lede { "Every account of every customer netted, per unit: the debits equal the credits when the books balance." }
            (table("Trial balance", &[col("unit", "Unit", Cell::Text), col("debits", "Debits", Cell::Text),
                col("credits", "Credits", Cell::Text), col("difference", "Difference", Cell::Text)],
                rows(&trial), "No ledger entries yet."))
        })
    }
    .await;
    respond(body, "Overview", &session)
}

/// A day-by-day series of one number of `rows` (objects with `day`), zero on days without a row.
fn daily(days: &[String], rows: &[Value], value: impl Fn(&Value) -> i64) -> Vec<Bar> {
    let by_day: HashMap<&str, i64> = rows.iter().map(|r| (r["day"].as_str().unwrap_or(""), value(r))).collect();
    days.iter().map(|d| Bar { label: d.clone(), value: by_day.get(d.as_str()).copied().unwrap_or(0) }).collect()
}

fn int(v: &Value) -> i64 {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(0)
}

/// Minor units of `currency` as "12.34 USD".
fn money(minor: i64, currency: &str) -> String {
    payments_core::money::to_major(minor, currency)
        .map_or_else(|_| format!("{minor} (minor) {currency}"), |m| format!("{m} {currency}"))
}

fn currencies(rows: &[Value]) -> Vec<String> {
    let mut c: Vec<String> = rows.iter().filter_map(|r| r["currency"].as_str().map(str::to_string)).collect();
    c.sort();
    c.dedup();
    c
}

fn overview_body(o: &Value) -> Markup {
    let days: Vec<String> = rows(&o["days"]).iter().map(text).collect();
    let in_currency = |rows_: &[Value], currency: &str| -> Vec<Value> {
        rows_.iter().filter(|r| r["currency"] == currency).cloned().collect()
    };
    let outcomes = rows(&o["outcomes"]);
    let (succeeded, failed) =
        outcomes.iter().fold((0, 0), |(s, f), r| (s + int(&r["succeeded"]), f + int(&r["failed"])));
    let subs = &o["subscriptions"];
    let mrr = rows(&o["mrr"]);
    let refunds = daily(&days, rows(&o["refunds"]), |r| int(&r["n"]));
    let disputes = daily(&days, rows(&o["disputes"]), |r| int(&r["n"]));
    let active: Vec<Bar> = {
        let mut per_day: HashMap<&str, i64> = HashMap::new();
        for r in rows(&o["mrr_days"]) {
            *per_day.entry(r["day"].as_str().unwrap_or("")).or_default() += int(&r["active"]);
        }
        days.iter().map(|d| Bar { label: d.clone(), value: per_day.get(d.as_str()).copied().unwrap_or(0) }).collect()
    };
    html! {
        h1 { "Overview" }
        p.lede { "The last " (OVERVIEW_DAYS) " days, by UTC day." }
        section.tiles aria-label="Totals" {
            div.tile { span.label { "Payments succeeded" } span.value { (succeeded) } }
            div.tile { span.label { "Success rate" } span.value { (success_rate(succeeded, failed)) } }
            div.tile { span.label { "Refunds" } span.value { (refunds.iter().map(|b| b.value).sum::<i64>()) } }
            div.tile { span.label { "Disputes" } span.value { (disputes.iter().map(|b| b.value).sum::<i64>()) } }
            div.tile { span.label { "Active subscriptions" } span.value { (int(&subs["active"])) } }
            div.tile { span.label { "Past due" } span.value { (int(&subs["past_due"])) } }
            @for m in mrr {
                div.tile { span.label { "MRR " (text(&m["currency"])) } span.value { (money(int(&m["minor"]), &text(&m["currency"]))) } }
            }
        }
        section.charts aria-label="Charts" {
            @for c in currencies(rows(&o["volume"])) {
                (chart::bars(&format!("Volume succeeded per day, {c}"), &daily(&days, &in_currency(rows(&o["volume"]), &c), |r| int(&r["minor"])), |v| money(v, &c)))
            }
            (chart::bars("Success rate per day (%)", &daily(&days, outcomes, |r| {
                let (s, f) = (int(&r["succeeded"]), int(&r["failed"]));
                if s + f == 0 { 0 } else { 100 * s / (s + f) }
            }), |v| format!("{v} %")))
            (chart::bars("Refunds per day", &refunds, |v| v.to_string()))
            (chart::bars("Disputes opened per day", &disputes, |v| v.to_string()))
            (chart::bars("Paying subscriptions per day (active or past due)", &active, |v| v.to_string()))
            @for c in currencies(rows(&o["mrr_days"])) {
                (chart::bars(&format!("MRR per day, {c}"), &daily(&days, &in_currency(rows(&o["mrr_days"]), &c), |r| int(&r["minor"])), |v| money(v, &c)))
            }
        }
    }
}

#[derive(Deserialize, Default)]
pub struct PaymentFilter {
    q: Option<String>,
    customer: Option<String>,
    status: Option<String>,
    from: Option<String>,
    to: Option<String>,
    before: Option<String>,
}

/// A filter value: absent and blank are the same.
fn given(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

pub async fn payments(State(state): State<AppState>, session: Session, Query(f): Query<PaymentFilter>) -> Response {
    // An id searched for: its page, when it exists.
    if let Some(q) = given(&f.q) {
        return Redirect::to(&format!("/dashboard/payments/{}", url(&q))).into_response();
    }
    let (customer, status, from, to, before) =
        (given(&f.customer), given(&f.status), given(&f.from), given(&f.to), given(&f.before));
    // Unfiltered, the list starts 30 days back: a window the created_at index serves at any size.
    let days_back = customer.is_none().then_some(OVERVIEW_DAYS);
    let body = async {
        let d = document(&state, queries::PAYMENTS, &[&customer, &status, &from, &to, &before, &days_back]).await?;
        let from = Some(text(&d["from"])).filter(|f| !f.is_empty());
        let mut shown = rows(&d["rows"]).to_vec();
        let older = if shown.len() > 50 { shown.truncate(50); shown.last().map(|r| text(&r["id"])) } else { None };
        let next = older.map(|id| {
            let q = serde_urlencoded::to_string([
                ("customer", customer.clone().unwrap_or_default()),
                ("status", status.clone().unwrap_or_default()),
                ("from", from.clone().unwrap_or_default()),
                ("to", to.clone().unwrap_or_default()),
                ("before", id),
            ]).unwrap_or_default();
            format!("/dashboard/payments?{q}")
        });
        Ok(html! {
            h1 { "Payments" }
            form.filters method="get" action="/dashboard/payments" role="search" {
                div { label for="q" { "Payment id" } input #q name="q" type="search" placeholder="pay_…" maxlength="255"; }
                div { label for="customer" { "Customer" } input #customer name="customer" value=[customer.as_deref()] maxlength="255"; }
                div {
                    label for="status" { "Status" }
                    select #status name="status" {
                        option value="" { "any" }
                        @for s in payments_core::state::ALL.map(|s| s.as_str()) {
                            option value=(s) selected[status.as_deref() == Some(s)] { (s) }
                        }
                    }
                }
                div { label for="from" { "From (UTC)" } input #from name="from" type="date" value=[from.as_deref()]; }
                div { label for="to" { "To (UTC)" } input #to name="to" type="date" value=[to.as_deref()]; }
                button type="submit" { "Filter" }
            }
            (table("Payments, newest first", &[
                col("id", "Payment", Cell::Payment), col("customer_id", "Customer", Cell::Customer),
                col("amount", "Amount", Cell::Text), col("status", "Status", Cell::Status),
                col("refund_status", "Refunded", Cell::Text), col("disputed", "Disputed", Cell::Text),
                col("created", "Created (UTC)", Cell::Text)], &shown, "No payments match."))
            @if let Some(next) = next { p { a href=(next) rel="next" { "Older payments" } } }
        })
    }
    .await;
    respond(body, "Payments", &session)
}

#[derive(Deserialize, Default)]
pub struct Notice {
    done: Option<String>,
    error: Option<String>,
}

pub async fn payment(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(notice): Query<Notice>,
) -> Response {
    let body = async {
        let d = document(&state, queries::PAYMENT, &[&id]).await?;
        Ok(super::actions::payment_body(&d, &session, &notice_text(&notice)))
    }
    .await;
    respond(body, &format!("Payment {id}"), &session)
}

/// What an action's redirect asks the page to say: fixed words for what was
/// done, the registry's meaning for an error's SQLSTATE; nothing from the URL is echoed.
fn notice_text(n: &Notice) -> Option<(bool, String)> {
    if let Some(done) = &n.done {
        let said = match done.as_str() {
            "refund" => "Refund requested; it shows as pending until the provider confirms it.",
            "capture" => "Capture requested.",
            "cancel" => "Cancel requested.",
            "credit_note" => "Credit note issued.",
            "void" => "Invoice voided: it will not be charged.",
            "coupon" => "Coupon applied.",
            _ => return None,
        };
        return Some((true, said.to_string()));
    }
    n.error.as_deref().map(|code| {
        let c = payments_core::sqlstate::lookup(code);
        (false, if c.sqlstate == code { capitalized(c.meaning) } else { "The action failed.".to_string() })
    })
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or_else(String::new, |f| f.to_uppercase().collect::<String>() + c.as_str())
}

pub async fn refunds_and_disputes(State(state): State<AppState>, session: Session) -> Response {
    let body = async {
        let d = document(&state, queries::REFUNDS_AND_DISPUTES, &[]).await?;
        Ok(html! {
            h1 { "Refunds and disputes" }
            h2 { "Refunds" }
            (table("The latest 100 refunds", &[col("id", "Refund", Cell::Text), col("payment_id", "Payment", Cell::Payment),
                col("customer_id", "Customer", Cell::Customer), col("amount", "Amount", Cell::Text),
                col("status", "Status", Cell::Status), col("reason", "Reason", Cell::Text),
                col("created", "Created (UTC)", Cell::Text)], rows(&d["refunds"]), "No refunds."))
            h2 { "Disputes" }
            (table("The latest 100 disputes", &[col("id", "Dispute", Cell::Text), col("payment_id", "Payment", Cell::Payment),
                col("customer_id", "Customer", Cell::Customer), col("amount", "Amount", Cell::Text),
                col("status", "Status", Cell::Status), col("reason", "Reason", Cell::Text),
                col("evidence_due_by", "Evidence due", Cell::Text), col("created", "Opened (UTC)", Cell::Text)],
                rows(&d["disputes"]), "No disputes."))
        })
    }
    .await;
    respond(body, "Refunds and disputes", &session)
}

#[derive(Deserialize, Default)]
pub struct SubscriptionFilter {
    status: Option<String>,
}

pub async fn subscriptions(
    State(state): State<AppState>,
    session: Session,
    Query(f): Query<SubscriptionFilter>,
) -> Response {
    let status = given(&f.status);
    let body = async {
        let d = document(&state, queries::SUBSCRIPTIONS, &[&status]).await?;
        Ok(html! {
            h1 { "Subscriptions" }
            form.filters method="get" action="/dashboard/subscriptions" {
                div {
                    label for="status" { "Status" }
                    select #status name="status" {
                        option value="" { "any" }
                        @for s in payments_core::lifecycle::SUBSCRIPTION.statuses {
                            option value=(s) selected[status.as_deref() == Some(s)] { (s) }
                        }
                    }
                }
                button type="submit" { "Filter" }
            }
            (table("The latest 100 subscriptions", &[col("id", "Subscription", Cell::Text),
                col("customer_id", "Customer", Cell::Customer), col("plan", "Plan", Cell::Text),
                col("price", "Price", Cell::Text), col("status", "Status", Cell::Status),
                col("cancel_at_period_end", "Ends at period end", Cell::Text),
                col("period_end", "Period ends", Cell::Text),
                col("billing_error", "Billing failed", Cell::Text)], rows(&d), "No subscriptions."))
        })
    }
    .await;
    respond(body, "Subscriptions", &session)
}

#[derive(Deserialize, Default)]
pub struct CustomerSearch {
    q: Option<String>,
}

pub async fn customers(State(state): State<AppState>, session: Session, Query(f): Query<CustomerSearch>) -> Response {
    if let Some(q) = given(&f.q) {
        return Redirect::to(&format!("/dashboard/customers/{}", url(&q))).into_response();
    }
    let body = async {
        let d = document(&state, queries::CUSTOMERS, &[&OVERVIEW_DAYS]).await?;
        Ok(html! {
            h1 { "Customers" }
            form.filters method="get" action="/dashboard/customers" role="search" {
                div { label for="q" { "Customer id" } input #q name="q" type="search" maxlength="255"; }
                button type="submit" { "Open" }
            }
            (table(&format!("Customers with payments in the last {OVERVIEW_DAYS} days, most recent first (100 at most)"), &[
                col("customer_id", "Customer", Cell::Customer), col("payments", "Payments", Cell::Text),
                col("succeeded", "Succeeded", Cell::Text), col("failed", "Failed", Cell::Text),
                col("last_payment", "Last payment (UTC)", Cell::Text)], rows(&d), "No payments in this window."))
        })
    }
    .await;
    respond(body, "Customers", &session)
}

pub async fn customer(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(notice): Query<Notice>,
) -> Response {
    let body = async {
        let d = document(&state, queries::CUSTOMER, &[&id]).await?;
        let balances = document(&state, queries::CUSTOMER_BALANCES, &[&id]).await?;
        let wallet = document(&state, queries::CUSTOMER_WALLET, &[&id]).await?;
        let entries = document(&state, queries::CUSTOMER_WALLET_ENTRIES, &[&id]).await?;
        let billing = document(&state, queries::CUSTOMER_BILLING, &[&id]).await?;
        let notice = notice_text(&notice);
        Ok(html! {
            h1 { "Customer " code { (id) } }
            @if let Some((ok, said)) = notice {
                p class=(if ok { "notice ok" } else { "notice error" }) role=(if ok { "status" } else { "alert" }) { (said) }
            }
            (super::actions::customer_actions(&id, rows(&billing["invoices"]), rows(&d["subscriptions"]), &session))
            dl.facts {
                dt { "Has paid" } dd { (text(&d["has_paid"])) }
                dt { "Active subscription" } dd { (text(&d["active"])) }
                dt { "Usage counted since (UTC)" } dd { (text(&d["period_start"])) }
            }
            h2 { "Balance" }
            (table("Captured, refunded, disputed and net, by currency", &[col("currency", "Currency", Cell::Text),
                col("gross", "Captured", Cell::Text), col("refunded", "Refunded", Cell::Text),
                col("disputed", "Disputed", Cell::Text), col("net", "Net", Cell::Text)], rows(&balances), "Nothing captured yet."))
            h2 { "Wallet" }
            (table("Credits and balance now, by account and unit", &[col("account", "Account", Cell::Text),
                col("unit", "Unit", Cell::Text), col("posted", "Posted", Cell::Text), col("held", "Held", Cell::Text),
                col("available", "Available", Cell::Text)], rows(&wallet), "No credits or balance."))
            (table("Credit grants, in the order they are used", &[col("id", "Grant", Cell::Text),
                col("unit", "Unit", Cell::Text), col("amount", "Granted", Cell::Text), col("remaining", "Left", Cell::Text),
                col("applies_to", "For", Cell::Text), col("expires", "Expires (UTC)", Cell::Text),
                col("state", "State", Cell::Status)], rows(&entries["grants"]), "No credit grants."))
            (table("The latest 20 holds", &[col("id", "Hold", Cell::Text), col("unit", "Unit", Cell::Text),
                col("amount", "Held", Cell::Text), col("status", "Status", Cell::Status), col("settled", "Spent", Cell::Text),
                col("expires", "Expires (UTC)", Cell::Text)], rows(&entries["holds"]), "No holds."))
            (table("The latest 20 ledger entries", &[col("created", "Time (UTC)", Cell::Text), col("kind", "Kind", Cell::Text),
                col("debit", "Debit", Cell::Text), col("credit", "Credit", Cell::Text), col("amount", "Amount", Cell::Text),
                col("reference", "For", Cell::Text)], rows(&entries["entries"]), "No ledger entries."))
            h2 { "Subscriptions" }
            (table("Subscriptions", &[col("id", "Subscription", Cell::Text), col("plan", "Plan", Cell::Text),
                col("status", "Status", Cell::Status), col("period_end", "Period ends", Cell::Text)],
                rows(&d["subscriptions"]), "No subscriptions."))
            h2 { "Invoices" }
            (table("The latest 20 invoices: what was charged, taken off and credited", &[col("number", "Number", Cell::Text),
                col("status", "Status", Cell::Status), col("subtotal", "Subtotal", Cell::Text),
                col("discount", "Discount", Cell::Text), col("coupon", "Coupon", Cell::Text), col("tax", "Tax", Cell::Text),
                col("credited", "Credited", Cell::Text), col("total", "Total", Cell::Text)],
                rows(&billing["invoices"]), "No invoices."))
            (table("Coupons its subscriptions redeemed", &[col("coupon", "Coupon", Cell::Text),
                col("subscription_id", "Subscription", Cell::Text), col("periods", "Periods", Cell::Text),
                col("state", "State", Cell::Status)], rows(&billing["discounts"]), "No coupons."))
            (table("Tax rates its invoices charge", &[col("display_name", "Tax", Cell::Text),
                col("tax_rate", "Rate", Cell::Text), col("percentage", "Percentage", Cell::Text),
                col("inclusive", "Kind", Cell::Text), col("exempt", "Customer", Cell::Text)],
                rows(&billing["taxes"]), "No tax rates."))
            h2 { "Entitlements" }
            (table("What each feature allows this period, and what is left", &[col("feature", "Feature", Cell::Text),
                col("plan", "Plan", Cell::Text), col("limit", "Limit", Cell::Text), col("used", "Used", Cell::Text),
                col("remaining", "Remaining", Cell::Text)], rows(&d["entitlements"]), "No entitlements."))
            h2 { "Usage this period" }
            (table("Usage by meter", &[col("meter", "Meter", Cell::Text), col("aggregation", "Aggregation", Cell::Text),
                col("value", "Value", Cell::Text), col("events", "Events", Cell::Text)], rows(&d["usage"]), "No meters."))
            h2 { "Latest payments" }
            (table("The latest 20 payments", &[col("id", "Payment", Cell::Payment), col("amount", "Amount", Cell::Text),
                col("status", "Status", Cell::Status), col("created", "Created (UTC)", Cell::Text)],
                rows(&d["payments"]), "No payments."))
        })
    }
    .await;
    respond(body, &format!("Customer {id}"), &session)
}

pub async fn webhooks(State(state): State<AppState>, session: Session) -> Response {
    let body = async {
        let d = document(&state, queries::WEBHOOKS, &[]).await?;
        Ok(html! {
            h1 { "Webhooks" }
            h2 { "Received from the provider" }
            (table("The latest 50 webhooks received (bodies and signatures are not shown)", &[
                col("received", "Received (UTC)", Cell::Text), col("provider", "Provider", Cell::Text),
                col("event_type", "Type", Cell::Text), col("event_id", "Event", Cell::Text),
                col("payment_id", "Payment", Cell::Payment), col("result", "Result", Cell::Status),
                col("still_pending", "Waiting for its payment", Cell::Text)], rows(&d["received"]), "None received."))
            h2 { "Delivered to endpoints" }
            (table("The latest 50 deliveries", &[col("created", "Event time (UTC)", Cell::Text),
                col("type", "Type", Cell::Text), col("object_id", "Object", Cell::Text), col("url", "Endpoint", Cell::Text),
                col("status", "Status", Cell::Status), col("attempts", "Attempts", Cell::Text),
                col("last_status_code", "Last answer", Cell::Text), col("last_error", "Last error", Cell::Text)],
                rows(&d["delivered"]), "No deliveries."))
        })
    }
    .await;
    respond(body, "Webhooks", &session)
}

pub async fn anomalies(State(state): State<AppState>, session: Session) -> Response {
    let body = async {
        let d = document(&state, queries::ANOMALIES, &[]).await?;
        Ok(html! {
            h1 { "Anomalies" }
            p.lede { "Provider objects that named a payment but were not applied to it: other money, or another object than the linked one. An administrator closes one with " code { "payments.resolve_anomaly" } "." }
            (table("Open anomalies, newest first", &[col("created", "Seen (UTC)", Cell::Text),
                col("payment_id", "Payment", Cell::Payment), col("customer_id", "Customer", Cell::Customer),
                col("kind", "Kind", Cell::Status), col("source", "Source", Cell::Text),
                col("expected", "Expected", Cell::Text), col("observed", "Observed", Cell::Text)], rows(&d), "No open anomalies."))
        })
    }
    .await;
    respond(body, "Anomalies", &session)
}

/// The share of succeeded among succeeded and failed, as the overview shows it: in tenths of a
/// percent, rounded half up, in integers (counts, not money, but no float is needed either).
fn success_rate(succeeded: i64, failed: i64) -> String {
    match succeeded + failed {
        0 => "—".to_string(),
        all => {
            let tenths = (1000 * succeeded + all / 2) / all;
            format!("{}.{} %", tenths / 10, tenths % 10)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_daily_series_has_every_day_and_zero_where_nothing_happened() {
        let days = vec!["2026-12-01".to_string(), "2026-12-02".to_string()];
        let bars = daily(&days, &[json!({"day": "2026-12-02", "n": 3})], |r| int(&r["n"]));
        assert_eq!(bars.iter().map(|b| b.value).collect::<Vec<_>>(), [0, 3]);
    }

    #[test]
    fn notices_never_echo_the_url() {
        let n = |done: Option<&str>, error: Option<&str>| {
            notice_text(&Notice { done: done.map(str::to_string), error: error.map(str::to_string) })
        };
        assert!(n(Some("refund"), None).unwrap().0);
        assert_eq!(n(Some("<script>"), None), None);
        assert!(n(None, Some("PM207")).unwrap().1.starts_with("Capture above"));
        assert_eq!(n(None, Some("<b>hi</b>")).unwrap().1, "The action failed.");
    }

    #[test]
    fn the_success_rate_is_in_tenths_of_a_percent_rounded_half_up() {
        assert_eq!(success_rate(0, 0), "—");
        assert_eq!(success_rate(1, 0), "100.0 %");
        assert_eq!(success_rate(2, 1), "66.7 %");
        assert_eq!(success_rate(1, 2), "33.3 %");
        assert_eq!(success_rate(1, 7), "12.5 %");
        assert_eq!(success_rate(0, 5), "0.0 %");
    }
}
