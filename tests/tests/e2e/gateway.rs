//! The HTTP gateway end to end: real cluster, gateway processes on random
//! ports, the embedded sandbox (or a standalone one) as the provider.

use std::time::Duration;

use payments_e2e::{
    api_key, connect, error_code, free_port, gateway_database_url, sandbox_charges, unique, webhook_secret, Gateway,
};
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};

struct Setup {
    gateway: Gateway,
    key: String,
    http: Client,
}

/// The key the tests' sandboxes accept.
const SANDBOX_KEY: &str = payments_e2e::SANDBOX_KEY;

/// A gateway with the embedded sandbox under its own provider name and webhook secret.
async fn embedded(extra_env: &[(&str, String)]) -> Setup {
    let gateway = payments_e2e::sandbox_gateway(extra_env).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    Setup { gateway, key, http: Client::new() }
}

impl Setup {
    async fn create(&self, key: &str, body: Value) -> Response {
        self.http
            .post(format!("{}/v1/payments", self.gateway.url))
            .bearer_auth(&self.key)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> Response {
        self.http.get(format!("{}{path}", self.gateway.url)).bearer_auth(&self.key).send().await.unwrap()
    }

    /// Polls a payment until `done` holds or ten seconds pass.
    async fn wait_for(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..100 {
            let p: Value = self.get(&format!("/v1/payments/{id}")).await.json().await.unwrap();
            if done(&p) {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("payment {id} never reached the expected state");
    }
}

fn visa(customer: &str, pm: &str) -> Value {
    json!({ "customer_id": customer, "amount": "49.99", "currency": "usd", "payment_method": pm })
}

#[tokio::test]
async fn a_card_payment_succeeds_and_an_async_one_settles_by_webhook() {
    let s = embedded(&[]).await;
    let r = s.create(&unique("visa"), visa("cust_gw", "pm_card_visa")).await;
    assert_eq!(r.status(), 201);
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        (p["status"].as_str(), p["amount"].as_str(), p["amount_minor"].as_i64()),
        (Some("succeeded"), Some("49.99"), Some(4999))
    );
    assert!(p["provider_payment_id"].as_str().unwrap().starts_with("pi_"));

    let r = s.create(&unique("ach"), visa("cust_gw", "pm_usBankAccount")).await;
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["status"], "processing");
    let id = p["id"].as_str().unwrap();
    let settled = s.wait_for(id, |p| p["status"] == "succeeded").await;
    assert_eq!(settled["status"], "succeeded");
    let events: Value = s.get(&format!("/v1/payments/{id}/events")).await.json().await.unwrap();
    let last = events["data"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["source"].as_str(), last["to_status"].as_str()), (Some("webhook"), Some("succeeded")));
}

#[tokio::test]
async fn declines_and_authentication_are_recorded() {
    let s = embedded(&[]).await;
    let p: Value = s.create(&unique("decl"), visa("cust_gw", "pm_card_chargeDeclined")).await.json().await.unwrap();
    assert_eq!(p["status"], "failed");
    assert_eq!(p["last_error"]["decline_code"], "generic_decline");
    let p: Value =
        s.create(&unique("sca"), visa("cust_gw", "pm_card_authenticationRequired")).await.json().await.unwrap();
    assert_eq!(p["status"], "requires_action");
    let p: Value = s
        .create(&unique("none"), json!({"customer_id": "c", "amount_minor": 1500, "currency": "KWD"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((p["status"].as_str(), p["amount"].as_str()), (Some("requires_payment_method"), Some("1.500")));
}

#[tokio::test]
async fn idempotent_replays_and_mismatches() {
    let s = embedded(&[]).await;
    let key = unique("idem");
    let first = s.create(&key, visa("cust_idem", "pm_card_visa")).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let replay = s.create(&key, visa("cust_idem", "pm_card_visa")).await;
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["id"], first["id"]);
    assert_eq!(replay["status"], "succeeded");

    let mut other = visa("cust_idem", "pm_card_visa");
    other["amount"] = json!("50.00");
    assert_eq!(error_code(s.create(&key, other).await).await, (StatusCode::CONFLICT, "idempotency_key_reused".into()));
    let no_key = s
        .http
        .post(format!("{}/v1/payments", s.gateway.url))
        .bearer_auth(&s.key)
        .json(&visa("c", "pm_card_visa"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(no_key).await, (StatusCode::BAD_REQUEST, "idempotency_key_missing".into()));

    // The sandbox charged once for the payment, whatever the retries.
    let charges = sandbox_charges(&format!("{}/sandbox", s.gateway.url), SANDBOX_KEY).await;
    assert_eq!(charges[first["id"].as_str().unwrap()], 1);
}

#[tokio::test]
async fn amounts_are_exact_and_bad_input_is_a_clear_400() {
    let s = embedded(&[]).await;
    let number = s.create(&unique("num"), json!({"customer_id": "c", "amount": 49.99, "currency": "EUR"})).await;
    let number: Value = number.json().await.unwrap();
    assert_eq!((number["amount"].as_str(), number["amount_minor"].as_i64()), (Some("49.99"), Some(4999)));
    for (body, code) in [
        (json!({"customer_id": "c", "amount": "49.999", "currency": "USD"}), "amount_too_precise"),
        (json!({"customer_id": "c", "amount": 1.5, "currency": "JPY"}), "amount_too_precise"),
        (json!({"customer_id": "c", "amount": "-1", "currency": "USD"}), "amount_not_positive"),
        (json!({"customer_id": "c", "amount": "1", "currency": "XYZ"}), "currency_unknown"),
        (json!({"customer_id": "c", "amount": "1e20", "currency": "USD"}), "amount_too_large"),
        (json!({"customer_id": "c", "amount": "ten", "currency": "USD"}), "parameter_invalid"),
        (json!({"customer_id": "c", "amount": "1", "amount_minor": 100, "currency": "USD"}), "parameter_invalid"),
        (json!({"customer_id": "c", "currency": "USD"}), "parameter_invalid"),
        (json!({"customer_id": "c", "amount": "1", "currency": "USD", "surprise": 1}), "body_invalid"),
    ] {
        let (status, got) = error_code(s.create(&unique("bad"), body.clone()).await).await;
        assert_eq!((status, got.as_str()), (StatusCode::BAD_REQUEST, code), "{body}");
    }
    let big = "x".repeat(300 * 1024);
    let r = s
        .create(&unique("big"), json!({"customer_id": "c", "amount": "1", "currency": "USD", "description": big}))
        .await;
    assert_eq!(error_code(r).await, (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large".into()));
}

#[tokio::test]
async fn a_forged_webhook_is_refused_with_400() {
    let s = embedded(&[]).await;
    let body = r#"{"id":"evt_forged","object":"event","type":"payment_intent.succeeded","created":1,"data":{"object":{"id":"pi_x"}}}"#;
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let forged = payments_core::webhook::stripe::sign("whsec_attacker", t, body.as_bytes());
    let provider = s.gateway_provider().await;
    let r = s
        .http
        .post(format!("{}/v1/webhooks/{provider}", s.gateway.url))
        .header("Stripe-Signature", forged)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "webhook_signature_invalid".into()));
    let unsigned = s.http.post(format!("{}/v1/webhooks/{provider}", s.gateway.url)).body(body).send().await.unwrap();
    assert_eq!(unsigned.status(), StatusCode::BAD_REQUEST);
}

impl Setup {
    /// The provider name this gateway records (from a payment it made).
    async fn gateway_provider(&self) -> String {
        let p: Value = self.create(&unique("prov"), visa("cust_prov", "pm_card_visa")).await.json().await.unwrap();
        p["provider"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn pagination_walks_every_payment_once() {
    let s = embedded(&[]).await;
    let customer = unique("cust_page");
    let mut created = Vec::new();
    for i in 0..5 {
        let p: Value = s
            .create(&format!("{customer}-{i}"), json!({"customer_id": customer, "amount": "1", "currency": "USD"}))
            .await
            .json()
            .await
            .unwrap();
        created.push(p["id"].as_str().unwrap().to_string());
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page: Value =
            s.get(&format!("/v1/payments?customer_id={customer}&limit=2{after}")).await.json().await.unwrap();
        let data = page["data"].as_array().unwrap();
        seen.extend(data.iter().map(|p| p["id"].as_str().unwrap().to_string()));
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        after = format!("&starting_after={}", data.last().unwrap()["id"].as_str().unwrap());
    }
    created.sort();
    created.reverse();
    assert_eq!(seen, created, "newest first, each once");
    let (status, code) = error_code(s.get("/v1/payments?limit=500").await).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "parameter_invalid"));
    assert_eq!(error_code(s.get("/v1/payments/pay_missing").await).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn provider_outage_then_recovery_converges_with_one_charge_even_across_a_restart() {
    let provider = unique("stripe-down");
    let secret = webhook_secret(&provider).await;
    let sandbox_port = free_port();
    let env = vec![
        ("DATABASE_URL", gateway_database_url().await),
        ("PAYMENTS_PROVIDER_NAME", provider.clone()),
        ("STRIPE_SECRET_KEY", SANDBOX_KEY.to_string()),
        ("STRIPE_API_BASE", format!("http://127.0.0.1:{sandbox_port}")),
        ("PROVIDER_TIMEOUT_MS", "2000".to_string()),
        ("RECONCILE_INTERVAL_MS", "200".to_string()),
        ("RECONCILE_MIN_AGE_MS", "1000".to_string()),
        ("RECONCILE_LEASE_MS", "2000".to_string()),
    ];
    let first = Gateway::spawn(&["serve", "--listen", "127.0.0.1:0"], &env).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let http = Client::new();
    let r = http
        .post(format!("{}/v1/payments", first.url))
        .bearer_auth(&key)
        .header("Idempotency-Key", unique("down"))
        .json(&visa("cust_down", "pm_card_visa"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "the payment is accepted while the provider is down");
    let p: Value = r.json().await.unwrap();
    let id = p["id"].as_str().unwrap().to_string();
    assert_eq!(p["status"], "requires_confirmation");
    assert_eq!(p["last_error"]["type"], "provider_unavailable");
    first.stop().await;

    // The provider comes back, and a new gateway process takes over the work.
    let second = Gateway::spawn(&["serve", "--listen", "127.0.0.1:0"], &env).await;
    let sandbox = Gateway::spawn(
        &["sandbox", "--listen", &format!("127.0.0.1:{sandbox_port}")],
        &[
            ("SANDBOX_WEBHOOK_URL", format!("{}/v1/webhooks/{provider}", second.url)),
            ("SANDBOX_WEBHOOK_SECRET", secret),
            ("SANDBOX_API_KEY", SANDBOX_KEY.to_string()),
        ],
    )
    .await;
    let s = Setup { gateway: second, key, http };
    let done = s.wait_for(&id, |p| p["status"] == "succeeded").await;
    assert!(done["provider_payment_id"].as_str().unwrap().starts_with("pi_"));
    let charges = sandbox_charges(&sandbox.url, SANDBOX_KEY).await;
    assert_eq!(charges[&id], 1, "exactly one provider-side charge: {charges:?}");
}

#[tokio::test]
async fn an_exhausted_pool_answers_503_at_once_and_a_slow_request_408() {
    let s = embedded(&[
        ("GATEWAY_POOL_SIZE", "1".to_string()),
        ("GATEWAY_POOL_WAIT_MS", "50".to_string()),
        ("GATEWAY_REQUEST_TIMEOUT_MS", "1500".to_string()),
    ])
    .await;
    // Hold an idempotency key in an open transaction: the gateway's create
    // with that key waits on it, holding the pool's only connection.
    let mut db = connect().await;
    let key = unique("held");
    let tx = db.transaction().await.unwrap();
    tx.execute("SELECT payments.create_payment($1, 'c', 1, 'USD')", &[&key]).await.unwrap();
    let blocked = {
        let (http, url, api) = (s.http.clone(), s.gateway.url.clone(), s.key.clone());
        let key = key.clone();
        tokio::spawn(async move {
            http.post(format!("{url}/v1/payments"))
                .bearer_auth(api)
                .header("Idempotency-Key", key)
                .json(&json!({"customer_id": "c", "amount": "1", "currency": "USD"}))
                .send()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let busy = s.get("/v1/payments").await;
    assert_eq!(error_code(busy).await, (StatusCode::SERVICE_UNAVAILABLE, "database_busy".into()));
    assert!(started.elapsed() < Duration::from_secs(1), "no hang");
    let slow = blocked.await.unwrap();
    assert_eq!(error_code(slow).await, (StatusCode::REQUEST_TIMEOUT, "request_timeout".into()));
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn health_metrics_and_a_complete_openapi_document() {
    let s = embedded(&[]).await;
    assert_eq!(s.http.get(format!("{}/healthz", s.gateway.url)).send().await.unwrap().status(), 200);
    assert_eq!(s.http.get(format!("{}/readyz", s.gateway.url)).send().await.unwrap().status(), 200);
    let p: Value = s.create(&unique("meta"), visa("cust_meta", "pm_card_visa")).await.json().await.unwrap();

    let metrics = s.http.get(format!("{}/metrics", s.gateway.url)).send().await.unwrap().text().await.unwrap();
    for needle in [
        "http_requests_total",
        "route=\"/v1/payments\"",
        "status=\"201\"",
        "http_request_duration_seconds",
        "provider_calls_total",
        "db_pool_available",
    ] {
        assert!(metrics.contains(needle), "metrics lack {needle}");
    }

    let doc: Value = s.http.get(format!("{}/openapi.json", s.gateway.url)).send().await.unwrap().json().await.unwrap();
    for path in ["/v1/payments", "/v1/payments/{id}", "/v1/payments/{id}/events", "/v1/webhooks/{provider}"] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
    let mut documented: Vec<&String> =
        doc["components"]["schemas"]["Payment"]["properties"].as_object().unwrap().keys().collect();
    let mut actual: Vec<&String> = p.as_object().unwrap().keys().collect();
    documented.sort();
    actual.sort();
    assert_eq!(documented, actual, "the Payment schema matches what the API returns");
}

#[tokio::test]
async fn the_official_stripe_python_sdk_works_against_the_sandbox() {
    let s = embedded(&[]).await;
    let python = std::env::var("PAYMENTS_PYTHON").expect("PAYMENTS_PYTHON is set by `make test`");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/oracles/stripe_sdk.py");
    let out = tokio::process::Command::new(python)
        .args([script, &format!("{}/sandbox", s.gateway.url), SANDBOX_KEY])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["created"], "succeeded");
    assert_eq!(result["retrieved"], "succeeded");
    assert_eq!(result["replayed_same_id"], true);
    assert_eq!(result["declined_code"], "card_declined");
    assert_eq!(result["refund"], json!(["pending", "requested_by_customer", "succeeded"]), "refunds settle later");
    assert_eq!(result["refund_too_much"], "amount_too_large");
    assert_eq!(result["held"], "requires_capture");
    assert_eq!(result["partial_capture"], json!(["succeeded", 3000, 0]), "amount_to_capture is honoured");
    assert_eq!(result["canceled"], json!(["canceled", "abandoned"]));
}

#[tokio::test]
async fn serve_refuses_to_start_without_an_explicit_provider() {
    let bin = std::env::var("PAYMENTS_GATEWAY_BIN").unwrap();
    let database_url = gateway_database_url().await;
    for (env, expected) in [
        (vec![], vec!["STRIPE_SECRET_KEY", "PAYMENTS_PROVIDER=sandbox"]),
        (vec![("STRIPE_SECRET_KEY", "")], vec!["empty"]),
        (vec![("STRIPE_SECRET_KEY", "sk_test_x"), ("PAYMENTS_PROVIDER", "sandbox")], vec!["exclude"]),
    ] {
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]).env("DATABASE_URL", &database_url).kill_on_drop(true);
        for var in ["STRIPE_SECRET_KEY", "PAYMENTS_PROVIDER", "SANDBOX_API_KEY"] {
            cmd.env_remove(var);
        }
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = tokio::time::timeout(Duration::from_secs(20), cmd.output()).await.unwrap().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{env:?} must not start");
        for word in expected {
            assert!(stderr.contains(word), "{env:?}: {stderr}");
        }
    }
}

/// schemathesis (PyPI) generates requests from /openapi.json and checks every
/// answer against it: no server error, only documented statuses, content
/// types and response schemas. 25 examples per operation (5 on Citus: `explored`).
#[tokio::test]
async fn the_api_answers_as_its_openapi_document_says() {
    // The sandbox's webhooks (refunds settling, disputes) arrive in bursts beside the generated
    // requests: a pool that waits instead of answering 503 at once (that answer is checked elsewhere).
    let s = embedded(&[("GATEWAY_POOL_SIZE", "32".to_string()), ("GATEWAY_POOL_WAIT_MS", "5000".to_string())]).await;
    let python = std::env::var("PAYMENTS_PYTHON").expect("PAYMENTS_PYTHON is set by `make test`");
    let schemathesis = std::path::Path::new(&python).with_file_name("schemathesis");
    let examples = payments_e2e::explored(&payments_e2e::connect().await, 25).await;
    let workdir = std::env::temp_dir().join(unique("schemathesis"));
    std::fs::create_dir_all(&workdir).unwrap();
    let out = tokio::process::Command::new(schemathesis)
        .current_dir(&workdir)
        .args(["run", &format!("{}/openapi.json", s.gateway.url)])
        .args(["-H", &format!("Authorization: Bearer {}", s.key)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", &examples.to_string(), "--workers", "1", "--seed", "20261126"])
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("run schemathesis");
    // The endpoints it registered (random URLs) would be sent every later test's events.
    payments_e2e::remove_webhook_endpoints().await;
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schemathesis found failures:\n{report}");
    assert!(report.contains("passed"), "{report}");
}
