//! The MCP server with the official MCP Python SDK as its client
//! (`oracles/mcp_client.py`): over streamable HTTP at /mcp with a read-only
//! and a read-write key, and over stdio (`payments-gateway mcp`).

use payments_e2e::{api_key, api_key_for, connect, gateway_database_url, python_report, unique};
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
    let subscription: String = db
        .query_one("SELECT id FROM payments.create_subscription($1, $2, $3)", &[&unique("sub"), &customer, &plan])
        .await
        .unwrap()
        .get(0);
    let coupon = unique("MCP");
    db.execute("SELECT payments.create_coupon($1, percent_off => 50, duration => 'forever')", &[&coupon])
        .await
        .unwrap();
    db.execute("SELECT payments.grant_credits($1, $2, 500, 'tokens')", &[&unique("grant"), &customer]).await.unwrap();

    let gateway = payments_e2e::sandbox_gateway(&[]).await;
    let (_, write_key) = api_key(&["payments:read", "payments:write"]).await;
    let (_, read_key) = api_key(&["payments:read"]).await;
    let (_, stranger_key) = api_key_for(&["payments:read", "payments:write"], &unique("cus_other")).await;
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

    let (bin, database_url) = (std::env::var("PAYMENTS_GATEWAY_BIN").unwrap(), gateway_database_url().await);
    let mcp = format!("{}/mcp", gateway.url);
    let args = [
        &mcp,
        &read_key,
        &write_key,
        &bin,
        &database_url,
        &customer,
        payment["id"].as_str().unwrap(),
        &meter,
        &stranger_key,
        &subscription,
        &coupon,
    ];
    let report = python_report("oracles/mcp_client.py", &args, 120).await;
    assert_eq!(
        report["balance"],
        json!([{"account": "credits", "unit": "tokens", "posted": "500", "held": "0", "available": "500"}])
    );
    assert_eq!(report["settled"], json!(["settled", "150", "50", "applied"]));
    assert_eq!(report["release_after_settle"], "transition_not_allowed");
    assert_eq!(
        report["balance_after"],
        json!([{"account": "credits", "unit": "tokens", "posted": "350", "held": "0", "available": "350"}])
    );
    assert_eq!(report["read_only_reserve"], "scope_missing");
    assert_eq!(report["remaining_before"], "10");
    assert_eq!(report["remaining_after"], "7", "consumed once though asked twice");
    assert_eq!(report["usage_value"], "7", "recorded once though sent twice");
    assert_eq!(report["read_only_consume"], "scope_missing");
    assert_eq!(report["read_only_record_usage"], "scope_missing");
    assert_eq!(report["no_key"], "refused");
    // A key bound to another customer: nothing of this customer's, through any tool.
    assert_eq!(
        report["stranger"],
        json!({"customer_status": "customer_bound", "balance": "customer_bound", "get_payment": "resource_missing",
               "list_payments_of_customer": "customer_bound", "list_payments": [],
               "consume": "customer_bound", "record_usage": "customer_bound",
               "reserve": "customer_bound", "release": "resource_missing",
               "apply_coupon": "resource_missing", "preview_invoice": "resource_missing"})
    );
    assert_eq!(report["coupon"], json!(["applied", "replayed", coupon]));
    assert_eq!(report["preview"], json!([coupon, "0.00", "recurring"]), "a free plan: half of nothing");
    assert_eq!(report["read_only_apply_coupon"], "scope_missing");
    assert_eq!(report["read_only_preview"], json!(coupon));
    assert_eq!(report["stdio"], json!({"has_paid": true, "consume": "scope_missing"}));
    let used: i64 = db
        .query_one("SELECT count(*) FROM payments.usage_log WHERE customer_id = $1", &[&customer])
        .await
        .unwrap()
        .get(0);
    assert_eq!(used, 1);
}
