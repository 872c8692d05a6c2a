//! The gateway started in this test process (`startup::Application` on port
//! 0), as zero2prod and axum's testing example do: no binary, no output to
//! parse. gateway.rs keeps the end-to-end tests that spawn the real binary.

use std::time::Duration;

use clap::Parser;
use payments_e2e::{api_key, gateway_database_url, unique, webhook_secret};
use payments_gateway::config::{Cli, Command};
use payments_gateway::startup::Application;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

/// The key the embedded sandbox accepts in these tests.
const SANDBOX_KEY: &str = "sk_test_in_process";

struct App {
    url: String,
    provider: String,
    http: Client,
}

/// A gateway with the embedded sandbox, its own provider name and webhook secret.
async fn spawn_app(flags: &[&str]) -> App {
    let provider = unique("inproc");
    let secret = webhook_secret(&provider).await;
    let database_url = gateway_database_url().await;
    let mut args = vec!["payments-gateway", "serve", "--listen", "127.0.0.1:0", "--database-url", &database_url];
    args.extend(["--provider", "sandbox", "--provider-name", &provider, "--sandbox-webhook-secret", &secret]);
    args.extend(["--sandbox-api-key", SANDBOX_KEY]);
    args.extend(flags);
    let Command::Serve(serve) = Cli::try_parse_from(args).expect("valid flags").command else {
        unreachable!("the serve subcommand")
    };
    let app = Application::build(serve).await.expect("the gateway builds");
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until(std::future::pending()));
    App { url, provider, http: Client::new() }
}

impl App {
    async fn send(&self, method: Method, path: &str, key: Option<&str>, body: Option<Value>) -> reqwest::Response {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.header("Idempotency-Key", unique("inproc")).json(&body);
        }
        request.send().await.unwrap()
    }

    async fn metrics(&self) -> String {
        self.send(Method::GET, "/metrics", None, None).await.text().await.unwrap()
    }
}

fn payment(customer: &str, pm: Option<&str>) -> Value {
    json!({ "customer_id": customer, "amount": "12.50", "currency": "EUR", "payment_method": pm })
}

#[tokio::test]
async fn keys_and_scopes_guard_every_route() {
    let app = spawn_app(&["--auth-cache-ms", "300"]).await;
    let (_, both) = api_key(&["payments:read", "payments:write"]).await;
    let created: Value =
        app.send(Method::POST, "/v1/payments", Some(&both), Some(payment("c", None))).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    let (read_id, read) = api_key(&["payments:read"]).await;
    let (_, write) = api_key(&["payments:write"]).await;

    let routes = [
        (Method::GET, "/v1/payments".to_string(), "payments:read"),
        (Method::GET, format!("/v1/payments/{id}"), "payments:read"),
        (Method::GET, format!("/v1/payments/{id}/events"), "payments:read"),
        (Method::POST, "/v1/payments".to_string(), "payments:write"),
    ];
    for (method, path, scope) in &routes {
        let body = (*method == Method::POST).then(|| payment("c", None));
        let none = app.send(method.clone(), path, None, body.clone()).await;
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED, "{method} {path} without a key");
        let unknown = app.send(method.clone(), path, Some("sk_pay_nope"), body.clone()).await;
        assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED, "{method} {path} with an unknown key");
        for (key, key_scope) in [(&read, "payments:read"), (&write, "payments:write")] {
            let r = app.send(method.clone(), path, Some(key), body.clone()).await;
            if key_scope == *scope {
                assert!(r.status().is_success(), "{method} {path} with {key_scope}: {}", r.status());
            } else {
                assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {path} with {key_scope}");
            }
        }
    }
    // The webhook route takes no key: its signature is the credential.
    let unsigned = app.send(Method::POST, &format!("/v1/webhooks/{}", app.provider), None, Some(json!({}))).await;
    assert_eq!(unsigned.status(), StatusCode::BAD_REQUEST);

    // A revoked key stops working once the gateway's cache of verified keys expires.
    payments_e2e::connect().await.execute("SELECT payments.revoke_api_key($1)", &[&read_id]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let revoked = app.send(Method::GET, "/v1/payments", Some(&read), None).await;
    assert_eq!(revoked.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_page_has_ten_payments_unless_asked_otherwise() {
    let app = spawn_app(&[]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let customer = unique("cust_default_page");
    for _ in 0..12 {
        let r = app.send(Method::POST, "/v1/payments", Some(&key), Some(payment(&customer, None))).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let page: Value = app
        .send(Method::GET, &format!("/v1/payments?customer_id={customer}"), Some(&key), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 10, "the SQL function's default page size");
    assert_eq!(page["has_more"], true);
    let all: Value = app
        .send(Method::GET, &format!("/v1/payments?customer_id={customer}&limit=100"), Some(&key), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["data"].as_array().unwrap().len(), 12);
    assert_eq!(all["has_more"], false);
}

#[tokio::test]
async fn metrics_count_every_webhook_and_each_failed_provider_call_once() {
    let app = spawn_app(&["--sandbox-error-percent", "100"]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let r = app.send(Method::POST, "/v1/payments", Some(&key), Some(payment("c", Some("pm_card_visa")))).await;
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["last_error"]["type"], "provider_unavailable", "{p}");
    let forged = app.send(Method::POST, &format!("/v1/webhooks/{}", app.provider), None, Some(json!({}))).await;
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
    let stranger = unique("made-up-provider");
    let elsewhere = app.send(Method::POST, &format!("/v1/webhooks/{stranger}"), None, Some(json!({}))).await;
    assert_eq!(elsewhere.status(), StatusCode::NOT_FOUND, "no secret for that provider");

    let metrics = app.metrics().await;
    let provider = app.provider.as_str();
    assert!(
        metrics.contains(&format!(
            "webhooks_received_total{{provider=\"{provider}\",result=\"refused:webhook_signature_invalid\"}} 1"
        )),
        "a refused webhook is counted:\n{metrics}"
    );
    assert!(!metrics.contains(&stranger), "a name from the path is no label unless it is the gateway's provider");
    assert!(metrics.contains("webhooks_received_total{provider=\"other\",result=\"refused:webhook_provider_unknown\"}"));
    let failed_calls: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("provider_calls_total{") && l.contains("outcome=\"unavailable\""))
        .collect();
    assert!(
        !failed_calls.is_empty() && failed_calls.iter().all(|l| l.contains("operation=\"")),
        "a failed call is counted once, with its operation: {failed_calls:?}"
    );
}

#[tokio::test]
async fn the_reconciler_waits_min_age_even_below_a_second() {
    // A payment whose provider call failed is left alone for RECONCILE_MIN_AGE_MS
    // (900 ms, not rounded down to 0 s), then finished with the same idempotency key.
    let app = spawn_app(&[
        "--sandbox-error-percent",
        "100",
        "--reconcile-interval-ms",
        "50",
        "--reconcile-min-age-ms",
        "900",
    ])
    .await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let p: Value = app
        .send(Method::POST, "/v1/payments", Some(&key), Some(payment("c", Some("pm_card_visa"))))
        .await
        .json()
        .await
        .unwrap();
    let id = p["id"].as_str().unwrap().to_string();
    assert_eq!(p["status"], "requires_confirmation");
    let healthy = app
        .http
        .post(format!("{}/sandbox/_sandbox/config", app.url))
        .bearer_auth(SANDBOX_KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(healthy.status().is_success());

    tokio::time::sleep(Duration::from_millis(300)).await;
    let early: Value =
        app.send(Method::GET, &format!("/v1/payments/{id}"), Some(&key), None).await.json().await.unwrap();
    assert_eq!(early["status"], "requires_confirmation", "not taken over before min age: {early}");
    for _ in 0..100 {
        let now: Value =
            app.send(Method::GET, &format!("/v1/payments/{id}"), Some(&key), None).await.json().await.unwrap();
        if now["status"] == "succeeded" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the reconciler never finished {id}");
}

#[tokio::test]
async fn a_cent_at_the_provider_cannot_pay_a_thousand_dollars() {
    let app = spawn_app(&[]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let big: Value = app
        .send(
            Method::POST,
            "/v1/payments",
            Some(&key),
            Some(json!({"customer_id": "c", "amount": "1000.00", "currency": "USD"})),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = big["id"].as_str().unwrap();
    // Anyone with the provider account creates a 0.01 USD intent that names our payment.
    let form = [
        ("amount", "1"),
        ("currency", "usd"),
        ("payment_method", "pm_card_visa"),
        ("confirm", "true"),
        ("metadata[payment_id]", id),
    ];
    let intent = app
        .http
        .post(format!("{}/sandbox/v1/payment_intents", app.url))
        .bearer_auth(SANDBOX_KEY)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(intent.status(), StatusCode::OK);

    // Its signed payment_intent.succeeded webhook arrives and is recorded as an anomaly.
    let db = payments_e2e::connect().await;
    let mut anomaly = None;
    for _ in 0..100 {
        anomaly = db
            .query_opt("SELECT kind, observed ->> 'amount' FROM payments.open_anomalies WHERE payment_id = $1", &[&id])
            .await
            .unwrap()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)));
        if anomaly.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(anomaly, Some(("amount_mismatch".to_string(), "1".to_string())));
    let after: Value =
        app.send(Method::GET, &format!("/v1/payments/{id}"), Some(&key), None).await.json().await.unwrap();
    assert_eq!(
        (after["status"].as_str(), after["provider_payment_id"].as_str()),
        (Some("requires_payment_method"), None)
    );
    assert!(app.metrics().await.contains("payment_anomalies_total{source=\"webhook\"}"));
}

#[tokio::test]
async fn the_sandbox_answers_only_to_its_key_and_within_stripe_limits() {
    let app = spawn_app(&[]).await;
    let sandbox = |path: &str| format!("{}/sandbox{path}", app.url);
    for (method, path) in [
        (Method::POST, "/v1/payment_intents"),
        (Method::GET, "/v1/payment_intents/pi_x"),
        (Method::GET, "/_sandbox/charges"),
        (Method::GET, "/_sandbox/config"),
        (Method::POST, "/_sandbox/config"),
    ] {
        for key in [None, Some("sk_test_other"), Some("sk_live_x")] {
            let mut request = app.http.request(method.clone(), sandbox(path));
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path} with {key:?}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["type"], "invalid_request_error", "Stripe's error shape");
        }
    }
    // Stripe's metadata limits and a bounded body.
    let create = |form: Vec<(String, String)>| {
        app.http.post(sandbox("/v1/payment_intents")).bearer_auth(SANDBOX_KEY).form(&form).send()
    };
    let base = || vec![("amount".to_string(), "100".to_string()), ("currency".to_string(), "usd".to_string())];
    let mut too_many = base();
    too_many.extend((0..51).map(|i| (format!("metadata[k{i}]"), "v".to_string())));
    let mut long_value = base();
    long_value.push(("metadata[k]".to_string(), "v".repeat(501)));
    let mut long_key = base();
    long_key.push((format!("metadata[{}]", "k".repeat(41)), "v".to_string()));
    for form in [too_many, long_value, long_key] {
        let r = create(form).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["param"], "metadata");
    }
    let mut huge = base();
    huge.push(("description".to_string(), "d".repeat(1_500_000)));
    assert_eq!(create(huge).await.unwrap().status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(create(base()).await.unwrap().status(), StatusCode::OK);
}
