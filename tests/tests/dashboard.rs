//! The dashboard in a real browser: Debian's Chromium driven by Playwright
//! for Python (`browser/dashboard.py`) against a gateway with the embedded
//! sandbox. Screenshots of every page land in `PAYMENTS_SCREENSHOTS`
//! (`make test`: .run/screenshots).

use std::time::Duration;

use payments_e2e::{api_key, connect, unique};
use serde_json::{json, Value};

/// A dashboard user with a chosen password, made as an administrator would.
async fn dashboard_user(role: &str) -> (String, String) {
    let email = format!("{}@example.com", unique(role));
    let password = format!("{}-correct-horse", unique("pw"));
    connect()
        .await
        .execute("SELECT payments.create_dashboard_user($1, $2, $3)", &[&email, &role, &password])
        .await
        .unwrap();
    (email, password)
}

#[tokio::test]
async fn sign_in_see_a_payment_refund_it_once_and_a_viewer_cannot() {
    let gateway = payments_e2e::sandbox_gateway(&[]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let customer = unique("cus_dash");
    let payment: Value = reqwest::Client::new()
        .post(format!("{}/v1/payments", gateway.url))
        .bearer_auth(&key)
        .header("Idempotency-Key", unique("dash"))
        .json(&json!({"customer_id": customer, "amount": "25.00", "currency": "usd", "payment_method": "pm_card_visa"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(payment["status"], "succeeded", "{payment}");
    let id = payment["id"].as_str().unwrap();
    let (operator, operator_password) = dashboard_user("operator").await;
    let (viewer, viewer_password) = dashboard_user("viewer").await;

    let python = std::env::var("PAYMENTS_PYTHON").expect("PAYMENTS_PYTHON is set by `make test`");
    let shots = std::env::var("PAYMENTS_SCREENSHOTS")
        .unwrap_or_else(|_| std::env::temp_dir().join(unique("screenshots")).display().to_string());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/browser/dashboard.py");
    let run = tokio::process::Command::new(python)
        .args([script, &gateway.url, id, &customer, &operator, &operator_password, &viewer, &viewer_password, &shots])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run).await.expect("the browser test ends").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "browser test failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("the script's JSON report");
    assert_eq!(report["refunded_shown"], "10.00 USD");
    assert_eq!(report["net_shown"], "15.00 USD");
    assert_eq!(report["viewer_refund_status"], 403);
    assert_eq!(report["forged_form_status"], 403);

    // The double-click and the resent form made one refund, of 10.00.
    let db = connect().await;
    let refunds: Vec<(i64, String)> = db
        .query("SELECT amount_minor, status FROM payments.refund_details WHERE payment_id = $1", &[&id])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(refunds, [(1000, "succeeded".to_string())]);
    for page in ["overview", "payments", "payment", "refunds", "subscriptions", "customer", "webhooks", "anomalies"] {
        let shot = std::path::Path::new(&shots).join(format!("{page}.png"));
        assert!(std::fs::metadata(&shot).map(|m| m.len() > 1000).unwrap_or(false), "no screenshot {}", shot.display());
    }
}
