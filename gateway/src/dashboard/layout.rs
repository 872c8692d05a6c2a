//! The page around every page (navigation, who is signed in, sign-out), the
//! tables pages are made of, and error pages.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

use super::session::Session;
use crate::error::ApiError;

const NAV: [(&str, &str); 7] = [
    ("/dashboard", "Overview"),
    ("/dashboard/payments", "Payments"),
    ("/dashboard/refunds", "Refunds & disputes"),
    ("/dashboard/subscriptions", "Subscriptions"),
    ("/dashboard/customers", "Customers"),
    ("/dashboard/webhooks", "Webhooks"),
    ("/dashboard/anomalies", "Anomalies"),
];

/// A whole page: a skip link, the navigation and the session's sign-out
/// form when someone is signed in, then `body` as the page's main content.
pub fn page(title: &str, session: Option<&Session>, body: Markup) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · payments" }
                link rel="stylesheet" href="/dashboard/style.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    span.brand { "payments" }
                    @if let Some(s) = session {
                        nav aria-label="Dashboard" {
                            ul { @for (href, label) in NAV { li { a href=(href) { (label) } } } }
                        }
                        form.sign-out method="post" action="/dashboard/sign-out" {
                            span.who { (s.email) " (" (s.role) ")" }
                            input type="hidden" name="csrf" value=(s.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    };
    Html(markup.into_string())
}

/// A page that only says something (not found, not allowed).
pub fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    (
        status,
        page(title, None, html! { h1 { (title) } p { (text) } p { a href="/dashboard" { "Back to the dashboard" } } }),
    )
        .into_response()
}

/// An error as a page, with the status and message the API gives for it
/// (the one SQLSTATE → HTTP mapping, `error.rs`).
pub fn error_page(error: ApiError) -> Response {
    let a = error.answer();
    let message = if a.code == "resource_missing" { "Nothing with this id exists.".to_string() } else { a.message };
    message_page(a.status, a.status.canonical_reason().unwrap_or("Error"), &message)
}

/// How a cell is shown.
#[derive(Clone, Copy)]
pub enum Cell {
    Text,
    /// A payment id, linking to its page.
    Payment,
    /// A customer id, linking to the customer's page.
    Customer,
    /// A status word, styled by its value.
    Status,
}

pub struct Column {
    pub key: &'static str,
    pub label: &'static str,
    pub cell: Cell,
}

pub const fn col(key: &'static str, label: &'static str, cell: Cell) -> Column {
    Column { key, label, cell }
}

/// A table of JSON rows (objects), one column per `columns`; `empty` when there are none.
pub fn table(caption: &str, columns: &[Column], rows: &[Value], empty: &str) -> Markup {
    html! {
        @if rows.is_empty() {
            p.empty { (empty) }
        } @else {
            table {
                caption { (caption) }
                thead { tr { @for c in columns { th scope="col" { (c.label) } } } }
                tbody {
                    @for row in rows {
                        tr { @for c in columns { td { (cell(c.cell, &row[c.key])) } } }
                    }
                }
            }
        }
    }
}

fn cell(kind: Cell, value: &Value) -> Markup {
    let text = text(value);
    match kind {
        _ if text.is_empty() => html! { "—" },
        Cell::Text => html! { (text) },
        Cell::Payment => html! { a href=(format!("/dashboard/payments/{}", url(&text))) { code { (text) } } },
        Cell::Customer => html! { a href=(format!("/dashboard/customers/{}", url(&text))) { (text) } },
        Cell::Status => {
            html! { span class=(format!("status s-{}", text.replace(|c: char| !c.is_ascii_alphanumeric(), "_"))) { (text) } }
        }
    }
}

/// A JSON value as text: strings as they are, null as nothing.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        other => other.to_string(),
    }
}

/// A path segment, percent-encoded.
pub fn url(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_escape_and_link_and_say_when_empty() {
        let columns = [
            col("id", "Payment", Cell::Payment),
            col("customer_id", "Customer", Cell::Customer),
            col("status", "Status", Cell::Status),
            col("note", "Note", Cell::Text),
        ];
        let rows = [json!({"id": "pay_1", "customer_id": "cus/<x>", "status": "succeeded", "note": "<script>"})];
        let html = table("Payments", &columns, &rows, "none").into_string();
        assert!(html.contains(r#"<a href="/dashboard/payments/pay_1"><code>pay_1</code></a>"#), "{html}");
        assert!(html.contains(r#"href="/dashboard/customers/cus%2F%3Cx%3E""#), "{html}");
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"), "{html}");
        assert!(html.contains(r#"<th scope="col">Payment</th>"#), "{html}");
        assert_eq!(
            table("Payments", &columns, &[], "No payments.").into_string(),
            r#"<p class="empty">No payments.</p>"#
        );
    }
}
