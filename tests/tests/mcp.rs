//! The MCP server with the official MCP Python SDK as its client
//! (`oracles/mcp_client.py`): over streamable HTTP at /mcp with a read-only
//! and a read-write key, and over stdio (`payments-gateway mcp`).

use std::time::Duration;

use payments_e2e::{api_key, connect, gateway_database_url, unique};
use serde_json::{json, Value};

#[tokio::test]
async fn agents_call_every_tool_and_a_read_only_key_cannot_consume() {
    let db = connect().await;
    let (plan, meter, customer) =
        (unique("mcp_plan").to_lowercase(), unique("mcp_meter").to_lowercase(), unique("cus_mcp"));
    db.execute("SELECT payments.create_meter($1, 'sum')", &[&meter]).await.unwrap();
    db.execute("SELECT payments.create_plan($1, 'USD', 0, 'month', features => '{\"calls\": 10}')", &[&plan])
        .await
        .unwrap();
    db.execute("SELECT payments.create_subscription($1, $2, $3)", &[&unique("sub"), &customer, &plan]).await.unwrap();

    let gateway = payments_e2e::sandbox_gateway(&[]).await;
    let (_, write_key) = api_key(&["payments:read", "payments:write"]).await;
    let (_, read_key) = api_key(&["payments:read"]).await;
    let payment: Value = reqwest::Client::new()
        .post(format!("{}/v1/payments", gateway.url))
        .bearer_auth(&write_key)
        .header("Idempotency-Key", unique("mcp"))
        .json(&json!({"customer_id": customer, "amount": "12.50", "currency": "usd", "payment_method": "pm_card_visa"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(payment["status"], "succeeded", "{payment}");

    let python = std::env::var("PAYMENTS_PYTHON").expect("PAYMENTS_PYTHON is set by `make test`");
    let bin = std::env::var("PAYMENTS_GATEWAY_BIN").unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/oracles/mcp_client.py");
    let run = tokio::process::Command::new(python)
        .args([script, &format!("{}/mcp", gateway.url), &read_key, &write_key, &bin, &gateway_database_url().await])
        .args([&customer, payment["id"].as_str().unwrap(), &meter])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run).await.expect("the MCP client ends").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "MCP client failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("the client's JSON report");
    assert_eq!(report["remaining_before"], "10");
    assert_eq!(report["remaining_after"], "7", "consumed once though asked twice");
    assert_eq!(report["usage_value"], "7", "recorded once though sent twice");
    assert_eq!(report["read_only_consume"], "scope_missing");
    assert_eq!(report["read_only_record_usage"], "scope_missing");
    assert_eq!(report["no_key"], "refused");
    assert_eq!(report["stdio"], json!({"has_paid": true, "consume": "scope_missing"}));
    let used: i64 = db
        .query_one("SELECT count(*) FROM payments.usage_log WHERE customer_id = $1", &[&customer])
        .await
        .unwrap()
        .get(0);
    assert_eq!(used, 1);
}
