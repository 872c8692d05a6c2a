//! Printable HTML for receipts and invoices, rendered from the JSON the
//! extension returns (`payments.receipt`, the invoice with its lines).
//! Amounts stay the exact decimal strings PostgreSQL wrote; every text is
//! escaped, and the page loads nothing from elsewhere.

use serde_json::Value;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;color:#111}\
table{width:100%;border-collapse:collapse}td,th{padding:.4rem;border-bottom:1px solid #ddd;text-align:left}\
td.n,th.n{text-align:right}h1{font-size:1.4rem}.muted{color:#555}";

/// Text for HTML: `&`, `<`, `>`, `"` and `'` escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An amount in major units with its currency's symbol where one is unambiguous
/// (`$49.99`, `€12.50`, `¥1500`), else with its code (`1.500 KWD`). Never parsed.
pub fn money(amount: &str, currency: &str) -> String {
    let symbol = match currency {
        "USD" => "$",
        "EUR" => "€",
        "GBP" => "£",
        "JPY" => "¥",
        "INR" => "₹",
        "CAD" => "CA$",
        "AUD" => "A$",
        _ => return escape(&format!("{amount} {currency}")),
    };
    match amount.strip_prefix('-') {
        Some(positive) => escape(&format!("-{symbol}{positive}")),
        None => escape(&format!("{symbol}{amount}")),
    }
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head>\
         <body>{body}</body></html>",
        escape(title)
    )
}

pub fn receipt_html(r: &Value) -> String {
    let currency = text(r, "currency");
    let mut rows = format!(
        "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
        escape(r["description"].as_str().unwrap_or("Payment")),
        money(text(r, "amount"), currency)
    );
    for refund in r["refunds"].as_array().into_iter().flatten() {
        rows.push_str(&format!(
            "<tr><td>Refund {}</td><td class=\"n\">{}</td></tr>",
            escape(text(refund, "id")),
            money(&format!("-{}", text(refund, "amount")), currency)
        ));
    }
    // The taxes of the invoice it paid: inside the amount, whether inclusive or added.
    for tax in r["invoice"]["taxes"].as_array().into_iter().flatten() {
        rows.push_str(&format!(
            "<tr><td class=\"muted\">Includes {} {}%</td><td class=\"n muted\">{}</td></tr>",
            escape(text(tax, "display_name")),
            escape(text(tax, "percentage")),
            money(text(tax, "amount"), currency)
        ));
    }
    let invoice = match r["invoice"]["number"].as_str() {
        Some(number) => format!("<p>Invoice {}</p>", escape(number)),
        None => String::new(),
    };
    page(
        "Receipt",
        &format!(
            "<h1>Receipt</h1><p class=\"muted\">Payment {} · {} · paid {}</p>{invoice}\
             <table><tr><th>Item</th><th class=\"n\">Amount</th></tr>{rows}</table>\
             <p>Paid with {} via {}</p>",
            escape(text(r, "payment_id")),
            escape(text(r, "customer_id")),
            escape(text(r, "paid_at")),
            escape(r["payment_method"].as_str().unwrap_or("—")),
            escape(r["provider"].as_str().unwrap_or("—")),
        ),
    )
}

pub fn invoice_html(i: &Value) -> String {
    let currency = text(i, "currency");
    let list = |key: &str| i[key].as_array().cloned().unwrap_or_default();
    let nonzero = |v: &Value| v.as_str().is_some_and(|a| a.chars().any(|c| c.is_ascii_digit() && c != '0'));
    let rows: String = list("lines")
        .iter()
        .map(|l| {
            // A line's discount, on a row of its own under it (Stripe's invoices show it so).
            let discount = if nonzero(&l["discount"]) {
                format!(
                    "<tr><td class=\"muted\">Discount ({})</td><td></td><td class=\"n\">-{}</td></tr>",
                    escape(text(i, "coupon")),
                    money(text(l, "discount"), currency)
                )
            } else {
                String::new()
            };
            format!(
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>{discount}",
                escape(text(l, "description")),
                escape(&l["quantity"].to_string()),
                money(text(l, "amount"), currency)
            )
        })
        .collect();
    // Each tax, with its rate as it was; an inclusive one is inside the amounts above.
    let taxes: String = list("taxes")
        .iter()
        .map(|t| {
            format!(
                "<tr><td>{} {}%{}</td><td></td><td class=\"n\">{}</td></tr>",
                escape(text(t, "display_name")),
                escape(text(t, "percentage")),
                if t["inclusive"] == true { " (included)" } else { "" },
                money(text(t, "amount"), currency)
            )
        })
        .collect();
    // A draft has no number yet (nor does a draft that was void).
    let title = match i["number"].as_str() {
        Some(number) => format!("Invoice {number}"),
        None => "Draft invoice".to_string(),
    };
    page(
        &title,
        &format!(
            "<h1>{}</h1><p class=\"muted\">{} · {} · {} to {}</p>\
             <table><tr><th>Description</th><th class=\"n\">Qty</th><th class=\"n\">Amount</th></tr>{rows}{taxes}\
             <tr><th>Total</th><th></th><th class=\"n\">{}</th></tr></table>",
            escape(&title),
            escape(text(i, "customer_id")),
            escape(text(i, "status")),
            escape(text(i, "period_start")),
            escape(text(i, "period_end")),
            money(text(i, "total"), currency)
        ),
    )
}

/// A printable credit note: what it credits, on which invoice, and how.
pub fn credit_note_html(n: &Value) -> String {
    let how = match text(n, "method") {
        "refund" => "refunded to the payment method",
        "customer_balance" => "credited to the customer's balance",
        _ => "taken off what the invoice owes",
    };
    page(
        &format!("Credit note {}", text(n, "number")),
        &format!(
            "<h1>Credit note {}</h1><p class=\"muted\">{} · invoice {} · {}</p>\
             <table><tr><th>Credited</th><th class=\"n\">{}</th></tr><tr><td>{how}</td><td></td></tr></table>",
            escape(text(n, "number")),
            escape(text(n, "customer_id")),
            escape(text(n, "invoice_id")),
            escape(text(n, "reason")),
            money(text(n, "amount"), text(n, "currency"))
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_is_escaped_and_amounts_keep_their_digits() {
        assert_eq!(escape("<b>\"Tom's\" & co</b>"), "&lt;b&gt;&quot;Tom&#39;s&quot; &amp; co&lt;/b&gt;");
        assert_eq!(money("49.99", "USD"), "$49.99");
        assert_eq!(money("-2.50", "EUR"), "-€2.50");
        assert_eq!(money("1500", "JPY"), "¥1500");
        assert_eq!(money("1.500", "KWD"), "1.500 KWD");
        assert_eq!(money("12345678901234567.89", "USD"), "$12345678901234567.89", "never through a float");
    }

    #[test]
    fn a_receipt_shows_the_payment_its_refunds_and_nothing_unescaped() {
        let r = json!({ "payment_id": "pay_1", "customer_id": "<script>", "amount": "10.00", "currency": "USD",
                        "paid_at": "2026-11-26", "description": "Pro plan", "payment_method": "pm_card_visa",
                        "provider": "stripe", "refunds": [{ "id": "rfd_1", "amount": "2.00" }],
                        "invoice": { "number": "2026-000007", "taxes": [{ "display_name": "Sales tax",
                                     "percentage": "8.25", "inclusive": false, "amount": "0.76" }] } });
        let html = receipt_html(&r);
        assert!(html.contains("$10.00") && html.contains("-$2.00") && html.contains("2026-000007"), "{html}");
        assert!(html.contains("Includes Sales tax 8.25%") && html.contains("$0.76"), "the tax it paid: {html}");
        assert!(!html.contains("<script>") && html.contains("&lt;script&gt;"));
    }

    #[test]
    fn an_invoice_lists_its_lines_and_total() {
        let i = json!({ "number": "2026-000001", "customer_id": "c", "status": "paid", "currency": "EUR",
                        "total": "15.00", "period_start": "a", "period_end": "b",
                        "lines": [{ "description": "Monthly, period 1", "quantity": 1, "amount": "15.00" }] });
        let html = invoice_html(&i);
        assert!(html.contains("Invoice 2026-000001") && html.contains("Monthly, period 1") && html.contains("€15.00"));
        assert!(!html.contains("Discount"), "no discount, no row for it");
        let draft = invoice_html(
            &json!({ "number": null, "status": "draft", "currency": "EUR", "total": "15.00", "lines": [] }),
        );
        assert!(draft.contains("<h1>Draft invoice</h1>") && !draft.contains("null"), "{draft}");
    }

    #[test]
    fn a_credit_note_shows_what_it_credits_and_how() {
        let n = json!({ "number": "CN-2026-000003", "customer_id": "c", "invoice_id": "inv_1", "reason": "duplicate",
                        "amount": "4.00", "currency": "USD", "method": "refund" });
        let html = credit_note_html(&n);
        for shown in ["Credit note CN-2026-000003", "inv_1", "$4.00", "refunded to the payment method"] {
            assert!(html.contains(shown), "{shown} missing: {html}");
        }
    }

    #[test]
    fn an_invoice_shows_each_lines_discount_and_each_tax() {
        let i = json!({ "number": "2026-000002", "customer_id": "c", "status": "open", "currency": "USD",
                        "total": "25.98", "period_start": "a", "period_end": "b", "coupon": "SAVE20",
                        "lines": [{ "description": "Team, period 1", "quantity": 1, "amount": "30.00",
                                    "discount": "6.00", "tax": "1.98" }],
                        "taxes": [{ "display_name": "Sales tax", "percentage": "8.25", "inclusive": false,
                                    "amount": "1.98" }] });
        let html = invoice_html(&i);
        for shown in ["$30.00", "Discount (SAVE20)", "-$6.00", "Sales tax 8.25%", "$1.98", "$25.98"] {
            assert!(html.contains(shown), "{shown} missing: {html}");
        }
    }
}
