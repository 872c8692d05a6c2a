//! The gateway started in this test process (`startup::Application` on port
//! 0), as zero2prod and axum's testing example do: no binary, no output to
//! parse. gateway.rs keeps the end-to-end tests that spawn the real binary.

use std::collections::HashSet;
use std::time::Duration;

use clap::Parser;
use payments_e2e::{api_key, api_key_for, error_code, gateway_database_url, unique, unique_code, webhook_secret};
use payments_gateway::config::{Cli, Command};
use payments_gateway::startup::Application;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

/// The key the embedded sandbox accepts in these tests.
const SANDBOX_KEY: &str = "sk_test_in_process";

struct App {
    url: String,
    provider: String,
    /// The secret the provider's webhooks are signed with.
    secret: String,
    http: Client,
}

/// A gateway with the embedded sandbox, its own provider name and webhook secret.
async fn spawn_app(flags: &[&str]) -> App {
    let provider = unique("inproc");
    let secret = webhook_secret(&provider).await;
    let database_url = gateway_database_url().await;
    let worker_url = payments_e2e::worker_database_url().await;
    let mut args = vec!["payments-gateway", "serve", "--listen", "127.0.0.1:0", "--database-url", &database_url];
    args.extend(["--worker-database-url", &worker_url]);
    args.extend(["--provider", "sandbox", "--provider-name", &provider, "--sandbox-webhook-secret", &secret]);
    args.extend(["--sandbox-api-key", SANDBOX_KEY]);
    args.extend(flags);
    let Command::Serve(serve) = Cli::try_parse_from(args).expect("valid flags").command else {
        unreachable!("the serve subcommand")
    };
    let app = Application::build(*serve).await.expect("the gateway builds");
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until(std::future::pending()));
    App { url, provider, secret, http: Client::new() }
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

    /// The payment once it reaches `status` (polled for up to 20 s), or as last seen.
    async fn payment_once(&self, key: &str, id: &str, status: &str) -> Value {
        let mut seen = Value::Null;
        for _ in 0..200 {
            seen = self.send(Method::GET, &format!("/v1/payments/{id}"), Some(key), None).await.json().await.unwrap();
            if seen["status"] == status {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen
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

/// The error code of a 4xx answer with the API's JSON error body; fails on anything else.
async fn client_error(r: reqwest::Response, what: &str) -> (u16, String) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert!((400..500).contains(&status), "{what}: {status} {}", &text[..text.len().min(300)]);
    assert!(text.len() < 2048, "{what}: a {}-byte error body", text.len());
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
    (status, body["error"]["code"].as_str().unwrap_or_else(|| panic!("{what}: no error.code: {text}")).to_string())
}

/// Every input observed to reach a 5xx (or an unbounded answer) before.
#[tokio::test]
async fn each_observed_bad_input_is_a_short_4xx() {
    let app = spawn_app(&[]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let post = |body: String| {
        app.http
            .post(format!("{}/v1/payments", app.url))
            .bearer_auth(&key)
            .header("Idempotency-Key", unique("bad"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let nested = |depth: usize| format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
    let bodies = [
        r#"{"customer_id": "c\u0000", "amount": "1", "currency": "USD"}"#.to_string(),
        r#"{"customer_id": "c", "amount": "1", "currency": "US\u0000"}"#.to_string(),
        r#"{"customer_id": "c", "amount": "1", "currency": "USD", "description": "\u0000"}"#.to_string(),
        r#"{"customer_id": "c", "amount": "1", "currency": "USD", "payment_method": "pm\u0000"}"#.to_string(),
        r#"{"customer_id": "c", "amount": "1", "currency": "USD", "metadata": {"k\u0000": "v"}}"#.to_string(),
        r#"{"customer_id": "c", "amount": "1", "currency": "USD", "metadata": {"k": "v\u0000"}}"#.to_string(),
        r#"{"customer_id": "c", "amount": "1e131072", "currency": "USD"}"#.to_string(),
        r#"{"customer_id": "c", "amount": 1e200000, "currency": "USD"}"#.to_string(),
        r#"{"customer_id": "c", "amount": "1e131071", "currency": "USD"}"#.to_string(),
        format!(r#"{{"customer_id": "c", "amount": "{}", "currency": "USD"}}"#, "9".repeat(100_000)),
        r#"{"customer_id": "c", "amount": "1", "currency": "USD", "metadata": {"n": 1e200000}}"#.to_string(),
        format!(r#"{{"customer_id": "c", "amount": "1", "currency": "USD", "metadata": {}}}"#, nested(50_000)),
        format!(r#"{{"customer_id": "c", "amount": "1", "currency": "USD", "metadata": {}}}"#, nested(10_000)),
        format!(r#"{{"customer_id": "c", "amount": "1", "currency": "USD", "metadata": {}}}"#, nested(3)),
    ];
    for body in bodies {
        let what = body.chars().take(90).collect::<String>();
        client_error(post(body).await.unwrap(), &what).await;
    }
    for path in
        ["/v1/payments/%00", "/v1/payments?customer_id=%00", "/v1/payments?status=%00", "/v1/payments/%00/events"]
    {
        client_error(app.send(Method::GET, path, Some(&key), None).await, path).await;
    }

    // Webhooks need no key: NUL in the provider, an unknown provider (not echoed), huge ids.
    let hook = |provider: &str, body: &str, signature: Option<String>| {
        let mut r = app.http.post(format!("{}/v1/webhooks/{provider}", app.url)).body(body.to_string());
        if let Some(sig) = signature {
            r = r.header("Stripe-Signature", sig);
        }
        r.send()
    };
    client_error(hook("%00", "{}", None).await.unwrap(), "NUL provider").await;
    let stranger = "no-such-provider-4711";
    let r = hook(stranger, "{}", None).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(!r.text().await.unwrap().contains(stranger), "the name is not echoed");
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let long = "x".repeat(4800);
    for (event_id, object_id) in [(long.as_str(), "pi_1"), ("evt_1", long.as_str())] {
        let body = format!(
            r#"{{"id":"{event_id}","object":"event","type":"payment_intent.succeeded","created":{t},"data":{{"object":{{"id":"{object_id}","amount":1,"currency":"usd"}}}}}}"#
        );
        let sig = payments_core::webhook::stripe::sign(&app.secret, t, body.as_bytes());
        let (status, code) = client_error(hook(&app.provider, &body, Some(sig)).await.unwrap(), "long id").await;
        assert_eq!((status, code.as_str()), (400, "webhook_event_invalid"));
    }

    // Headers: the scheme in any case, one Authorization, a printable Idempotency-Key.
    let lower = app.http.get(format!("{}/v1/payments", app.url)).header("Authorization", format!("bearer {key}"));
    assert_eq!(lower.send().await.unwrap().status(), StatusCode::OK);
    let two = app
        .http
        .get(format!("{}/v1/payments", app.url))
        .header("Authorization", format!("Bearer {key}"))
        .header("Authorization", format!("Bearer {key}"));
    assert_eq!(client_error(two.send().await.unwrap(), "two keys").await.0, 401);
    let non_ascii = app
        .http
        .post(format!("{}/v1/payments", app.url))
        .bearer_auth(&key)
        .header("Idempotency-Key", reqwest::header::HeaderValue::from_bytes("schlüssel".as_bytes()).unwrap())
        .json(&payment("c", None));
    let (status, code) = client_error(non_ascii.send().await.unwrap(), "non-ASCII key").await;
    assert_eq!((status, code.as_str()), (400, "idempotency_key_invalid"));
}

#[tokio::test]
async fn invented_methods_share_one_metrics_label() {
    let app = spawn_app(&[]).await;
    for i in 0..20 {
        let method = Method::from_bytes(format!("INVENTED{i}").as_bytes()).unwrap();
        let r = app.send(method, "/v1/payments", None, None).await;
        assert!(r.status().is_client_error());
    }
    let metrics = app.metrics().await;
    assert!(!metrics.contains("INVENTED"), "request methods are not labels");
    assert!(metrics.contains("method=\"other\""));
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app(&["--header-read-timeout-ms", "300"]).await;
    let mut stream = tokio::net::TcpStream::connect(app.url.trim_start_matches("http://")).await.unwrap();
    stream.write_all(b"GET /v1/payments HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    let mut buf = Vec::new();
    // The server closes it (hyper answers 408 first); without the timeout this read would wait for ever.
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the connection is still open after 10 s");
}

/// A few thousand generated requests (a fifth on Citus: `explored`), of every shape a client could send:
/// none is answered 5xx.
#[tokio::test]
async fn generated_requests_never_get_a_server_error() {
    let app = spawn_app(&[]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let mut rng = fastrand::Rng::with_seed(0x5eed_f00d);
    let strings = ["", "c", "USD", "usd", "JPY", "KWD", "\u{0}", "é", "😀", "pm_card_visa", "automatic", "manual", "x"];
    let numbers = ["0", "-1", "1", "1.5", "49.99", "1e3", "1e131072", "1e200000", "0.001", "99999999999999999999"];
    let value = |rng: &mut fastrand::Rng, depth: usize| -> Value {
        fn gen(rng: &mut fastrand::Rng, depth: usize, strings: &[&str], numbers: &[&str]) -> Value {
            match rng.u8(..8) {
                0 => Value::Null,
                1 => Value::Bool(rng.bool()),
                2 | 3 => Value::String(if rng.u8(..10) == 0 {
                    "s".repeat(rng.usize(..3000))
                } else {
                    strings[rng.usize(..strings.len())].to_string()
                }),
                4 => serde_json::from_str(numbers[rng.usize(..numbers.len())]).unwrap_or(Value::Null),
                5 => Value::String(numbers[rng.usize(..numbers.len())].to_string()),
                6 if depth < 4 => {
                    Value::Array((0..rng.usize(..4)).map(|_| gen(rng, depth + 1, strings, numbers)).collect())
                }
                _ if depth < 4 => Value::Object(
                    (0..rng.usize(..5)).map(|i| (format!("k{i}"), gen(rng, depth + 1, strings, numbers))).collect(),
                ),
                _ => Value::Null,
            }
        }
        gen(rng, depth, &strings, &numbers)
    };
    let fields = [
        "customer_id",
        "amount",
        "amount_minor",
        "currency",
        "payment_method",
        "description",
        "metadata",
        "capture_method",
    ];
    let mut statuses = std::collections::BTreeMap::new();
    let run = unique("fuzz");
    let count = payments_e2e::explored(&payments_e2e::connect().await, 2500).await;
    for i in 0..count {
        let request = match i % 5 {
            0..=2 => {
                let mut body = serde_json::Map::new();
                for f in fields {
                    if rng.u8(..4) != 0 {
                        body.insert(f.to_string(), value(&mut rng, 1));
                    }
                }
                if rng.u8(..3) == 0 {
                    body.insert("customer_id".into(), json!("c"));
                    body.insert("currency".into(), json!("usd"));
                    body.insert("amount".into(), json!("1.00"));
                }
                let text = if rng.u8(..20) == 0 { "{not json".to_string() } else { Value::Object(body).to_string() };
                app.http
                    .post(format!("{}/v1/payments", app.url))
                    .bearer_auth(&key)
                    .header("Idempotency-Key", format!("{run}-{i}"))
                    .header("Content-Type", "application/json")
                    .body(text)
            }
            3 => {
                let segment = value(&mut rng, 3).to_string();
                let path =
                    format!("/v1/payments/{}", segment.replace('/', "%2F").replace('#', "%23").replace('?', "%3F"));
                app.http.get(format!("{}{path}", app.url)).bearer_auth(&key)
            }
            _ => app
                .http
                .post(format!("{}/v1/webhooks/{}", app.url, if rng.bool() { app.provider.as_str() } else { "other" }))
                .header("Stripe-Signature", format!("t={},v1={}", rng.u32(..), "ab".repeat(rng.usize(..40))))
                .body(value(&mut rng, 0).to_string()),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap();
        if status >= 400 {
            assert!(body.len() < 2048, "a {}-byte error answer: {}", body.len(), String::from_utf8_lossy(&body[..300]));
        }
        *statuses.entry(status).or_insert(0u32) += 1;
    }
    println!("{count} generated requests, answers by status: {statuses:?}");
    assert!(statuses.keys().all(|s| *s < 500), "answers by status: {statuses:?}");
    assert!(statuses.keys().any(|s| *s == 201), "some generated payments were valid: {statuses:?}");
}

/// A payment linked to a real sandbox intent that stays `processing` (bank
/// debit): its id and provider id.
async fn processing_payment(app: &App, db: &tokio_postgres::Client, customer: &str) -> (String, String) {
    let form = [("amount", "1000"), ("currency", "usd"), ("payment_method", "pm_usBankAccount"), ("confirm", "true")];
    let intent: Value = app
        .http
        .post(format!("{}/sandbox/v1/payment_intents", app.url))
        .bearer_auth(SANDBOX_KEY)
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pi = intent["id"].as_str().unwrap().to_string();
    // Created and linked in one transaction: the reconciler never sees it unlinked.
    db.batch_execute("BEGIN").await.unwrap();
    let id: String = db
        .query_one(
            "SELECT id FROM payments.create_payment($1, $2, 10, 'USD', payment_method => 'pm_usBankAccount')",
            &[&unique("proc"), &customer],
        )
        .await
        .unwrap()
        .get(0);
    db.execute(
        "SELECT payments.record_provider_result($1, $2, $3, 'processing', $4)",
        &[&id, &app.provider, &pi, &intent],
    )
    .await
    .unwrap();
    db.batch_execute("COMMIT").await.unwrap();
    (id, pi)
}

impl App {
    /// Posts a signed `event_type` event for intent `pi` (10.00 USD) and returns the status and how long it took.
    async fn webhook(&self, event_id: &str, event_type: &str, pi: &str) -> (StatusCode, Duration) {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let body = json!({
            "id": event_id, "object": "event", "type": event_type, "created": t,
            "data": { "object": { "id": pi, "object": "payment_intent", "amount": 1000, "currency": "usd",
                                  "amount_received": 1000, "amount_capturable": 0 } }
        })
        .to_string();
        let signature = payments_core::webhook::stripe::sign(&self.secret, t, body.as_bytes());
        let started = std::time::Instant::now();
        let r = self
            .http
            .post(format!("{}/v1/webhooks/{}", self.url, self.provider))
            .header("Stripe-Signature", signature)
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status(), started.elapsed())
    }
}

/// The blocking scenario: the reconciler is inside a 3-second provider call
/// for a payment; a webhook for that payment is answered at once, because the
/// claim is a committed lease, not a row lock held across the call.
#[tokio::test]
async fn a_webhook_is_not_held_up_by_a_slow_provider_call() {
    let app = spawn_app(&[
        "--reconcile-interval-ms",
        "50",
        "--reconcile-min-age-ms",
        "0",
        "--sandbox-async-delay-ms",
        "600000",
    ])
    .await;
    let db = payments_e2e::connect().await;
    // The provider is slow before the payment exists, so the reconciler's first call is slow too.
    let slow = app
        .http
        .post(format!("{}/sandbox/_sandbox/config", app.url))
        .bearer_auth(SANDBOX_KEY)
        .json(&json!({ "latency_ms": 3000, "async_delay_ms": 600000 }))
        .send()
        .await
        .unwrap();
    assert!(slow.status().is_success());
    let (id, pi) = processing_payment(&app, &db, "cust_slow").await;
    // Wait until the reconciler has claimed it (and is waiting on the provider).
    let mut claimed = false;
    for _ in 0..100 {
        let attempts: i32 = db
            .query_one("SELECT reconcile_attempts FROM payments.payments WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        if attempts > 0 {
            claimed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(claimed, "the reconciler claimed the payment");
    let (status, took) = app.webhook(&unique("evt_slow"), "payment_intent.processing", &pi).await;
    payments_e2e::report(
        "webhook while the reconciler waits 3 s on the provider for its payment",
        1,
        usize::from(status != StatusCode::OK || took >= Duration::from_secs(1)),
        &format!("answered {} in {took:.0?}", status.as_u16()),
    );
    assert_eq!(status, StatusCode::OK);
    assert!(took < Duration::from_secs(1), "the webhook waited {took:?} on the provider call");
}

/// The deadlock scenario, many times over: the gateway's reconciler
/// (refreshing every payment against a provider with latency), webhooks and API
/// calls all work on the same payments at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_the_reconciler_and_the_api_share_payments_without_deadlock_or_loss() {
    let app = std::sync::Arc::new(
        spawn_app(&[
            "--reconcile-interval-ms",
            "5",
            "--reconcile-min-age-ms",
            "0",
            "--reconcile-lease-ms",
            "1",
            "--provider-timeout-ms",
            "200",
            "--sandbox-latency-ms",
            "2",
            "--sandbox-async-delay-ms",
            "600000",
            // Deadlocks and loss are the question here, not load shedding: a
            // call may wait for a connection (on the shared cores of a loopback
            // Citus cluster, longer than the 100 ms default).
            "--pool-wait-ms",
            "5000",
        ])
        .await,
    );
    let db = payments_e2e::connect().await;
    let customer = unique("cust_race");
    let mut payments = Vec::new();
    for _ in 0..20 {
        payments.push(processing_payment(&app, &db, &customer).await);
    }
    let payments = std::sync::Arc::new(payments);
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    // SQL writers lock the same rows as commands do: a cancel the state machine
    // refuses (PM202, after taking the row lock) and a provider failure (row lock, history).
    let sql_writer = {
        let payments = payments.clone();
        tokio::spawn(async move {
            let db = payments_e2e::connect().await;
            let mut rng = fastrand::Rng::with_seed(99);
            let mut codes: std::collections::BTreeMap<String, u32> = std::collections::BTreeMap::new();
            for _ in 0..300 {
                let (id, _) = &payments[rng.usize(..payments.len())];
                let result = if rng.bool() {
                    db.execute("SELECT payments.transition($1, 'canceled', 'api')", &[id]).await
                } else {
                    db.execute("SELECT payments.record_provider_error($1, '{\"type\": \"timeout\"}')", &[id]).await
                };
                let code = match result {
                    Ok(_) => "ok".to_string(),
                    Err(e) => e.code().map_or("?".to_string(), |c| c.code().to_string()),
                };
                *codes.entry(code).or_default() += 1;
            }
            codes
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..4u64 {
        let (app, payments, key) = (app.clone(), payments.clone(), key.clone());
        tasks.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(worker);
            let mut statuses = Vec::new();
            for round in 0..300 {
                let (id, pi) = &payments[rng.usize(..payments.len())];
                let status = if worker < 3 {
                    // Mostly confirming (noop) and late (stale) events; each id once, some sent twice.
                    let kind = ["payment_intent.processing", "payment_intent.requires_action"][rng.usize(..2)];
                    let event_id = format!("evt_{worker}_{round}_{id}");
                    let first = app.webhook(&event_id, kind, pi).await.0;
                    if rng.u8(..4) == 0 {
                        statuses.push(app.webhook(&event_id, kind, pi).await.0);
                    }
                    first
                } else {
                    app.send(Method::GET, &format!("/v1/payments/{id}/events"), Some(&key), None).await.status()
                };
                statuses.push(status);
            }
            statuses
        });
    }
    let mut answers = std::collections::BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        for s in done.unwrap() {
            *answers.entry(s.as_u16()).or_insert(0u32) += 1;
        }
    }
    let sql_codes = sql_writer.await.unwrap();
    let rounds: u32 = answers.values().sum::<u32>() + sql_codes.values().sum::<u32>();
    println!("{rounds} webhook, HTTP and SQL calls beside the reconciler: {answers:?}, SQL {sql_codes:?}");
    let not_200: u32 = answers.iter().filter(|(s, _)| **s != 200).map(|(_, n)| n).sum();
    let unexpected_sql: u32 =
        sql_codes.iter().filter(|(c, _)| !["ok", "PM202"].contains(&c.as_str())).map(|(_, n)| n).sum();

    let ids: Vec<String> = payments.iter().map(|(id, _)| id.clone()).collect();
    // Each table read on its own (on Citus they live on different shards) and compared here.
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM payments.verify_event_chain() v WHERE v.payment_id = ANY($1)),
                    (SELECT max(reconcile_attempts) FROM payments.payments WHERE id = ANY($1))",
            &[&ids],
        )
        .await
        .unwrap();
    let (broken, attempts): (i64, i32) = (row.get(0), row.get(1));
    let received: HashSet<(String, String)> = db
        .query(
            "SELECT payment_id, event_id FROM payments.webhook_events
             WHERE payment_id = ANY($1) AND result IN ('applied', 'stale')",
            &[&ids],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let all_received: HashSet<String> = db
        .query("SELECT event_id FROM payments.webhook_events WHERE provider = $1", &[&app.provider])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let recorded: Vec<(String, String)> = db
        .query(
            "SELECT payment_id, data ->> 'webhook_event_id' FROM payments.payment_events
             WHERE payment_id = ANY($1) AND source = 'webhook'",
            &[&ids],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let recorded_set: HashSet<(String, String)> = recorded.iter().cloned().collect();
    let lost = received.difference(&recorded_set).count() as i64;
    let invented = recorded.iter().filter(|(_, event)| !all_received.contains(event)).count() as i64;
    let duplicated = (recorded.len() - recorded_set.len()) as i64;
    let deadlocks = sql_codes.get("40P01").copied().unwrap_or(0) + answers.get(&409).copied().unwrap_or(0);
    payments_e2e::report(
        "webhooks, the reconciler, HTTP reads and SQL writes on the same payments",
        rounds as usize,
        (not_200 + unexpected_sql) as usize + (broken + lost + invented + duplicated) as usize,
        &format!(
            "{deadlocks} deadlocks (40P01, or 409 over HTTP), {not_200} HTTP answers other than 200, \
             {unexpected_sql} SQL errors other than PM202; {broken} broken chains, {lost} lost, {invented} invented, \
             {duplicated} duplicated events; {attempts} reconciler claims of one payment"
        ),
    );
    assert!(rounds >= 1000);
    assert_eq!(answers.keys().copied().collect::<Vec<_>>(), vec![200], "every call answered 200: {answers:?}");
    assert_eq!(unexpected_sql, 0, "SQL writers: {sql_codes:?}");
    assert_eq!(broken, 0, "every chain intact");
    assert!(attempts > 1, "the reconciler worked the same payments meanwhile");
    assert_eq!(lost, 0, "every applied or stale webhook is in its payment's history");
    assert_eq!(invented, 0, "every webhook event in a history was received");
    assert_eq!(duplicated, 0, "no webhook event twice in a history");
}

/// A manual-capture payment the sandbox authorized, created over HTTP.
async fn authorized_payment(app: &App, key: &str, amount: &str) -> Value {
    let body = json!({ "customer_id": unique("cust_cap"), "amount": amount, "currency": "USD",
                       "payment_method": "pm_card_visa", "capture_method": "manual" });
    let created: Value = app.send(Method::POST, "/v1/payments", Some(key), Some(body)).await.json().await.unwrap();
    assert_eq!(created["status"], "requires_capture", "{created}");
    created
}

#[tokio::test]
async fn partial_capture_and_cancel_through_http_reach_the_provider() {
    let app = spawn_app(&[]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let held_for_capture = authorized_payment(&app, &key, "49.99").await;
    let capture = format!("/v1/payments/{}/capture", held_for_capture["id"].as_str().unwrap());

    let garbled =
        app.http.post(format!("{}{capture}", app.url)).bearer_auth(&key).body("{\"amount\":").send().await.unwrap();
    assert_eq!(garbled.status(), StatusCode::BAD_REQUEST, "a body that is not JSON is a 400, not a capture");
    let too_much = app.send(Method::POST, &capture, Some(&key), Some(json!({ "amount": "50.00" }))).await;
    assert_eq!(too_much.status(), StatusCode::BAD_REQUEST);
    let error: Value = too_much.json().await.unwrap();
    assert_eq!(error["error"]["code"], "amount_too_large", "{error}");

    let captured: Value =
        app.send(Method::POST, &capture, Some(&key), Some(json!({ "amount": "30.00" }))).await.json().await.unwrap();
    assert_eq!(captured["status"], "succeeded", "{captured}");
    assert_eq!(captured["amount"], "49.99");
    assert_eq!(captured["amount_captured"], "30.00");
    assert_eq!(captured["amount_captured_minor"], 3000);
    // The provider captured 30.00 and released the rest.
    let intent: Value = app
        .http
        .get(format!("{}/sandbox/v1/payment_intents/{}", app.url, captured["provider_payment_id"].as_str().unwrap()))
        .bearer_auth(SANDBOX_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((intent["amount_received"].as_i64(), intent["amount_capturable"].as_i64()), (Some(3000), Some(0)));
    let again = app.send(Method::POST, &capture, Some(&key), None).await;
    assert_eq!(again.status(), StatusCode::CONFLICT, "nothing left to capture");

    let held = authorized_payment(&app, &key, "20.00").await;
    let cancel = format!("/v1/payments/{}/cancel", held["id"].as_str().unwrap());
    let canceled: Value = app
        .send(Method::POST, &cancel, Some(&key), Some(json!({ "reason": "requested_by_customer" })))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (canceled["status"].as_str(), canceled["cancellation_reason"].as_str()),
        (Some("canceled"), Some("requested_by_customer")),
        "{canceled}"
    );
    assert_eq!(app.send(Method::POST, &cancel, Some(&key), None).await.status(), StatusCode::CONFLICT, "final");

    // Never at the provider: canceled at once, with no body at all.
    let unpaid: Value =
        app.send(Method::POST, "/v1/payments", Some(&key), Some(payment("c", None))).await.json().await.unwrap();
    let r = app
        .send(Method::POST, &format!("/v1/payments/{}/cancel", unpaid["id"].as_str().unwrap()), Some(&key), None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "canceled");
    // Every step is in the history, in order.
    let events: Value = app
        .send(
            Method::GET,
            &format!("/v1/payments/{}/events", held_for_capture["id"].as_str().unwrap()),
            Some(&key),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    let reasons: Vec<&str> = events["data"].as_array().unwrap().iter().filter_map(|e| e["reason"].as_str()).collect();
    assert!(reasons.contains(&"capture requested"), "{reasons:?}");
}

#[tokio::test]
async fn an_authorization_past_the_capture_window_is_canceled_by_the_worker() {
    let app = spawn_app(&["--capture-window-ms", "1000", "--command-interval-ms", "100"]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let payment = authorized_payment(&app, &key, "5.00").await;
    let seen = app.payment_once(&key, payment["id"].as_str().unwrap(), "canceled").await;
    assert_eq!(
        (seen["status"].as_str(), seen["cancellation_reason"].as_str()),
        (Some("canceled"), Some("automatic")),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_captures_of_one_payment_capture_once() {
    // More connections than clients: the 16 requests wait on one payment's lock while the first
    // records the provider's answer, and a full pool would answer 503 by design (on Citus, CI saw it).
    let app = std::sync::Arc::new(spawn_app(&["--pool-size", "32"]).await);
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let held = authorized_payment(&app, &key, "10.00").await;
    let id = held["id"].as_str().unwrap().to_string();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (app, key, id) = (app.clone(), key.clone(), id.clone());
        clients.spawn(async move {
            app.send(Method::POST, &format!("/v1/payments/{id}/capture"), Some(&key), None).await.status()
        });
    }
    let mut answers = std::collections::BTreeMap::new();
    while let Some(status) = clients.join_next().await {
        *answers.entry(status.unwrap().as_u16()).or_insert(0) += 1;
    }
    // 200 (captured, or the same capture already queued), or 409 once it succeeded: never a second capture.
    assert!(answers.keys().all(|s| [200, 409].contains(s)), "{answers:?}");
    let db = payments_e2e::connect().await;
    let commands: i64 = db
        .query_one("SELECT count(*) FROM payments.provider_commands WHERE payment_id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(commands, 1, "one capture queued for 16 requests {answers:?}");
    let done = app.payment_once(&key, &id, "succeeded").await;
    assert_eq!(done["amount_captured_minor"], 1000, "{done}");
}

#[tokio::test]
async fn a_capture_the_provider_cannot_take_now_is_finished_by_the_worker() {
    let app =
        spawn_app(&["--command-interval-ms", "100", "--provider-timeout-ms", "200", "--reconcile-lease-ms", "400"])
            .await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let held = authorized_payment(&app, &key, "8.00").await;
    let knobs = |error_percent: u8| {
        app.http
            .post(format!("{}/sandbox/_sandbox/config", app.url))
            .bearer_auth(SANDBOX_KEY)
            .json(&json!({ "error_percent": error_percent }))
            .send()
    };
    assert!(knobs(100).await.unwrap().status().is_success());
    let path = format!("/v1/payments/{}", held["id"].as_str().unwrap());
    let queued: Value = app
        .send(Method::POST, &format!("{path}/capture"), Some(&key), Some(json!({ "amount": 5 })))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(queued["status"], "requires_capture", "the provider is down: still authorized, the capture queued");
    assert!(knobs(0).await.unwrap().status().is_success());
    let seen = app.payment_once(&key, held["id"].as_str().unwrap(), "succeeded").await;
    assert_eq!(
        (seen["status"].as_str(), seen["amount_captured"].as_str()),
        (Some("succeeded"), Some("5.00")),
        "{seen}"
    );
}

// ---- refunds and disputes ----------------------------------------------------

impl App {
    /// A POST with the given Idempotency-Key.
    async fn post_with_key(&self, path: &str, key: &str, idempotency_key: &str, body: Value) -> reqwest::Response {
        let request = self.http.post(format!("{}{path}", self.url)).bearer_auth(key);
        request.header("Idempotency-Key", idempotency_key).json(&body).send().await.unwrap()
    }

    async fn get_json(&self, key: &str, path: &str) -> Value {
        self.send(Method::GET, path, Some(key), None).await.json().await.unwrap()
    }

    /// GET `path` until `done` holds (for up to 20 s); the last answer.
    async fn get_until(&self, key: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let mut seen = Value::Null;
        for _ in 0..200 {
            seen = self.get_json(key, path).await;
            if done(&seen) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen
    }

    /// The sandbox's own API, as an operator in Stripe's dashboard would use it.
    async fn sandbox_post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let r = self.http.post(format!("{}/sandbox{path}", self.url)).bearer_auth(SANDBOX_KEY).form(form).send();
        r.await.unwrap().json().await.unwrap()
    }
}

/// A succeeded 10.00 USD payment paid with `pm`.
async fn paid(app: &App, key: &str, pm: &str) -> Value {
    let body = json!({ "customer_id": unique("cust_rf"), "amount": "10.00", "currency": "USD", "payment_method": pm });
    let created: Value = app.send(Method::POST, "/v1/payments", Some(key), Some(body)).await.json().await.unwrap();
    assert_eq!(created["status"], "succeeded", "{created}");
    created
}

fn refunds_of(payment: &Value) -> String {
    format!("/v1/refunds?payment={}&limit=100", payment["id"].as_str().unwrap())
}

#[tokio::test]
async fn partial_refunds_settle_by_webhook_and_never_exceed_the_capture() {
    let app = spawn_app(&[]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let payment = paid(&app, &key, "pm_card_visa").await;
    let id = payment["id"].as_str().unwrap();
    let first_key = unique("rf");
    let mut refunds = vec![];
    for (amount, idem) in [("2.00", first_key.clone()), ("3.00", unique("rf")), ("4.00", unique("rf"))] {
        let r = app.post_with_key("/v1/refunds", &key, &idem, json!({ "payment": id, "amount": amount })).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let refund: Value = r.json().await.unwrap();
        assert_eq!((refund["amount"].as_str(), refund["status"].as_str()), (Some(amount), Some("pending")), "{refund}");
        refunds.push(refund);
    }
    // Only 1.00 is left: 2.00 more is refused; a replay answers as the first time; the same key for other money is refused.
    let too_much =
        app.post_with_key("/v1/refunds", &key, &unique("rf"), json!({ "payment": id, "amount": "2.00" })).await;
    let (status, body) = (too_much.status(), too_much.json::<Value>().await.unwrap());
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("amount_too_large")), "{body}");
    let replay = app.post_with_key("/v1/refunds", &key, &first_key, json!({ "payment": id, "amount": "2.00" })).await;
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.json::<Value>().await.unwrap()["id"], refunds[0]["id"]);
    let reused = app.post_with_key("/v1/refunds", &key, &first_key, json!({ "payment": id, "amount": "1.00" })).await;
    assert_eq!(reused.status(), StatusCode::CONFLICT);

    // The sandbox settles each refund later and says so by webhook.
    let settled = app
        .get_until(&key, &refunds_of(&payment), |l| {
            l["data"].as_array().is_some_and(|d| d.len() == 3 && d.iter().all(|r| r["status"] == "succeeded"))
        })
        .await;
    assert!(
        settled["data"].as_array().unwrap().iter().all(|r| r["provider_refund_id"].as_str().is_some()),
        "{settled}"
    );
    let seen = app.get_json(&key, &format!("/v1/payments/{id}")).await;
    assert_eq!((seen["amount_refunded"].as_str(), seen["refund_status"].as_str()), (Some("9.00"), Some("partial")));

    // The rest, without an amount: the payment is then fully refunded.
    let rest: Value =
        app.send(Method::POST, "/v1/refunds", Some(&key), Some(json!({ "payment": id }))).await.json().await.unwrap();
    assert_eq!(rest["amount"], "1.00", "{rest}");
    let done = app.get_until(&key, &format!("/v1/payments/{id}"), |p| p["refund_status"] == "full").await;
    assert_eq!(done["amount_refunded_minor"], 1000, "{done}");
    let one: Value = app.get_json(&key, &format!("/v1/refunds/{}", rest["id"].as_str().unwrap())).await;
    assert_eq!(one["status"], "succeeded");

    // Each step is in the payment's hash chain, which still verifies.
    let events = app.get_json(&key, &format!("/v1/payments/{id}/events")).await;
    let reasons: Vec<&str> = events["data"].as_array().unwrap().iter().filter_map(|e| e["reason"].as_str()).collect();
    assert_eq!(reasons.iter().filter(|r| **r == "refund succeeded").count(), 4, "{reasons:?}");
    let db = payments_e2e::connect().await;
    let problems: i64 =
        db.query_one("SELECT count(*) FROM payments.verify_event_chain($1)", &[&id]).await.unwrap().get(0);
    assert_eq!(problems, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_refunds_of_one_payment_never_exceed_it() {
    let app = std::sync::Arc::new(spawn_app(&["--pool-size", "48"]).await);
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let payment = paid(&app, &key, "pm_card_visa").await;
    let id = payment["id"].as_str().unwrap().to_string();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (app, key, id) = (app.clone(), key.clone(), id.clone());
        clients.spawn(async move {
            let body = json!({ "payment": id, "amount": "1.00" });
            app.send(Method::POST, "/v1/refunds", Some(&key), Some(body)).await.status().as_u16()
        });
    }
    let mut answers = std::collections::BTreeMap::new();
    while let Some(status) = clients.join_next().await {
        *answers.entry(status.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(answers, [(201, 10), (400, 22)].into(), "ten refunds of 1.00 fit in 10.00, the rest are refused");
    let done = app.get_until(&key, &format!("/v1/payments/{id}"), |p| p["refund_status"] == "full").await;
    assert_eq!(done["amount_refunded_minor"], 1000, "{done}");
}

#[tokio::test]
async fn a_refund_the_bank_returns_fails_after_it_succeeded() {
    let app = spawn_app(&[]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let payment = paid(&app, &key, "pm_card_refundFail").await;
    let id = payment["id"].as_str().unwrap();
    let r: Value =
        app.send(Method::POST, "/v1/refunds", Some(&key), Some(json!({ "payment": id }))).await.json().await.unwrap();
    let path = format!("/v1/refunds/{}", r["id"].as_str().unwrap());
    let failed = app.get_until(&key, &path, |r| r["status"] == "failed").await;
    assert_eq!(failed["failure_reason"], "expired_or_canceled_card", "{failed}");
    let seen = app.get_json(&key, &format!("/v1/payments/{id}")).await;
    assert_eq!((seen["amount_refunded"].as_str(), seen["refund_status"].as_str()), (Some("0.00"), Some("none")));
    // The money is the merchant's again: it can be refunded once more.
    let again = app.send(Method::POST, "/v1/refunds", Some(&key), Some(json!({ "payment": id }))).await;
    assert_eq!(again.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn disputes_are_opened_won_and_lost_by_the_providers_webhooks() {
    let app = spawn_app(&[]).await;
    let (_, key) = api_key(&["payments:read"]).await;
    let (_, writer) = api_key(&["payments:read", "payments:write"]).await;
    for (evidence, outcome, still_disputed) in [("winning_evidence", "won", false), ("losing_evidence", "lost", true)] {
        let payment = paid(&app, &writer, "pm_card_createDispute").await;
        let id = payment["id"].as_str().unwrap();
        let list = format!("/v1/disputes?payment={id}");
        let opened = app.get_until(&key, &list, |l| l["data"][0]["status"] == "needs_response").await;
        let dispute = &opened["data"][0];
        assert_eq!((dispute["amount"].as_str(), dispute["reason"].as_str()), (Some("10.00"), Some("fraudulent")));
        let seen = app.get_json(&key, &format!("/v1/payments/{id}")).await;
        assert_eq!(
            (seen["disputed"].as_bool(), seen["amount_disputed"].as_str()),
            (Some(true), Some("10.00")),
            "{seen}"
        );
        // The merchant answers at the provider; the bank decides.
        let provider_id = dispute["provider_dispute_id"].as_str().unwrap();
        app.sandbox_post(&format!("/v1/disputes/{provider_id}"), &[("evidence[uncategorized_text]", evidence)]).await;
        let path = format!("/v1/disputes/{}", dispute["id"].as_str().unwrap());
        let closed = app.get_until(&key, &path, |d| d["status"] == outcome).await;
        assert_eq!(closed["status"], outcome, "{closed}");
        let seen = app.get_json(&key, &format!("/v1/payments/{id}")).await;
        assert_eq!(seen["disputed"], still_disputed, "{seen}");
        let events = app.get_json(&key, &format!("/v1/payments/{id}/events")).await;
        let reasons: Vec<&str> =
            events["data"].as_array().unwrap().iter().filter_map(|e| e["reason"].as_str()).collect();
        for step in ["dispute needs_response", "dispute under_review", &format!("dispute {outcome}")] {
            assert!(reasons.contains(&step), "{step} in {reasons:?}");
        }
    }
    let filtered = app.get_json(&key, "/v1/disputes?status=won&limit=100").await;
    assert!(filtered["data"].as_array().unwrap().iter().all(|d| d["status"] == "won"));
    let unknown = app.send(Method::GET, "/v1/disputes/dsp_nope", Some(&key), None).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

// ---- reconciliation ----------------------------------------------------------

impl App {
    /// A PaymentIntent made at the sandbox directly (form parameters as Stripe takes them).
    async fn sandbox_intent(&self, form: &[(&str, &str)]) -> Value {
        let intent = self.sandbox_post("/v1/payment_intents", form).await;
        assert!(intent["id"].as_str().is_some(), "{intent}");
        intent
    }
}

/// Links a payment of ours (10.00 USD, no payment method: the reconciler leaves it alone) to
/// `pi` as the provider reported it in `status`, with `object` as its evidence.
async fn linked(db: &tokio_postgres::Client, provider: &str, pi: &str, status: &str, object: Value) -> String {
    let id: String = db
        .query_one("SELECT id FROM payments.create_payment($1, $2, 10, 'USD')", &[&unique("k"), &unique("cust_rec")])
        .await
        .unwrap()
        .get(0);
    let stmt = "SELECT outcome FROM payments.record_provider_result($1, $2, $3, $4, $5::text::jsonb)";
    let outcome: String =
        db.query_one(stmt, &[&id, &provider, &pi, &status, &object.to_string()]).await.unwrap().get(0);
    assert_eq!(outcome, "applied", "{object}");
    id
}

fn kinds_of(report: &Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = report["disagreements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["kind"].as_str().unwrap().to_string(), d["provider_object_id"].as_str().unwrap().to_string()))
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn a_reconciliation_finds_each_planted_disagreement_and_repairs_what_the_provider_settles() {
    let app = spawn_app(&[]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let db = payments_e2e::connect().await;
    let p = app.provider.as_str();
    // A refund settled by the provider whose webhook we never got.
    let refunded = paid(&app, &key, "pm_card_visa").await;
    // From here on no webhook arrives (the sandbox holds them for ten minutes): only the report can tell.
    let quiet = app.http.post(format!("{}/sandbox/_sandbox/config", app.url)).bearer_auth(SANDBOX_KEY);
    quiet.json(&json!({ "webhook_delay_ms": 600_000 })).send().await.unwrap();
    let refund: Value = app
        .send(Method::POST, "/v1/refunds", Some(&key), Some(json!({ "payment": refunded["id"], "amount": "1.00" })))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(refund["status"], "pending", "{refund}");
    let visa = [("amount", "1000"), ("currency", "usd"), ("payment_method", "pm_card_visa"), ("confirm", "true")];
    // 1. The provider took the money; we never heard: missed_success.
    let missed = app.sandbox_intent(&visa).await;
    let missed_pi = missed["id"].as_str().unwrap();
    let mut asked = missed.clone();
    asked["status"] = json!("requires_confirmation");
    let missed_id = linked(&db, p, missed_pi, "requires_confirmation", asked).await;
    // ... and a refund made in the provider's dashboard: unknown to us.
    let outside = app.sandbox_post("/v1/refunds", &[("payment_intent", missed_pi), ("amount", "300")]).await;
    // 2. Canceled at the provider, still authorized here: status_differs.
    let mut manual = visa.to_vec();
    manual.push(("capture_method", "manual"));
    let held = app.sandbox_intent(&manual).await;
    let held_pi = held["id"].as_str().unwrap();
    let held_id = linked(&db, p, held_pi, "requires_capture", held.clone()).await;
    app.sandbox_post(&format!("/v1/payment_intents/{held_pi}/cancel"), &[]).await;
    // 3 and 4. Other money than the provider's: amount_differs, currency_differs (planted by hand).
    let mut tampered = vec![];
    for column in ["amount_minor = 900", "currency = 'EUR'"] {
        let intent = app.sandbox_intent(&visa).await;
        let id = linked(&db, p, intent["id"].as_str().unwrap(), "succeeded", intent.clone()).await;
        db.execute(&format!("UPDATE payments.payments SET {column} WHERE id = $1"), &[&id]).await.unwrap();
        tampered.push(intent["id"].as_str().unwrap().to_string());
    }
    // 5. A payment at the provider we have no row for.
    let stranger = app.sandbox_intent(&visa).await;
    // 6. A payment of ours the provider never saw.
    let ghost_pi = unique("pi_ghost");
    let ghost = json!({ "id": ghost_pi, "object": "payment_intent", "amount": 1000, "currency": "usd" });
    linked(&db, p, &ghost_pi, "requires_confirmation", ghost).await;
    // The sandbox settles the refund we asked for.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // A day either side of now (a window is at most 92 days).
    let day = "SELECT to_char(now() AT TIME ZONE 'UTC' + $1 * interval '1 day', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')";
    let (from, to): (String, String) =
        (db.query_one(day, &[&-1.0f64]).await.unwrap().get(0), db.query_one(day, &[&1.0f64]).await.unwrap().get(0));
    let window = json!({ "from": from, "to": to });
    let r = app.send(Method::POST, "/v1/reconciliations", Some(&key), Some(window.clone())).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let report: Value = r.json().await.unwrap();
    let refund_pid = refund["provider_refund_id"].as_str().unwrap().to_string();
    let mut expected = vec![
        ("missed_success".to_string(), missed_pi.to_string()),
        ("missed_success".to_string(), refund_pid.clone()),
        ("unknown_to_us".to_string(), outside["id"].as_str().unwrap().to_string()),
        ("status_differs".to_string(), held_pi.to_string()),
        ("amount_differs".to_string(), tampered[0].clone()),
        ("currency_differs".to_string(), tampered[1].clone()),
        ("unknown_to_us".to_string(), stranger["id"].as_str().unwrap().to_string()),
        ("unknown_to_provider".to_string(), ghost_pi.clone()),
    ];
    expected.sort();
    assert_eq!(kinds_of(&report), expected, "{report}");
    assert!(report["fetched"].as_i64().unwrap() >= 8, "{report}");

    // The same from the command line, which prints the report.
    let cli = tokio::process::Command::new(std::env::var("PAYMENTS_GATEWAY_BIN").unwrap())
        .args(["reconcile", "--from", &from, "--to", &to, "--provider-name", p])
        .args(["--stripe-api-base", &format!("{}/sandbox", app.url), "--stripe-secret-key", SANDBOX_KEY])
        .env("DATABASE_URL", gateway_database_url().await)
        .output()
        .await
        .unwrap();
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    assert_eq!(kinds_of(&serde_json::from_slice(&cli.stdout).unwrap()), expected);

    // Repair: what the provider's objects settle is refreshed (and recorded); the rest stays for an operator.
    let mut repair = window.clone();
    repair["repair"] = json!(true);
    let refused = app.send(Method::POST, "/v1/reconciliations", Some(&key), Some(repair.clone())).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN, "repairing needs payments:admin, reading a report does not");
    let (_, admin) = api_key(&["payments:write", "payments:admin"]).await;
    let repaired: Value =
        app.send(Method::POST, "/v1/reconciliations", Some(&admin), Some(repair)).await.json().await.unwrap();
    assert_eq!(repaired["repaired"], 4, "{repaired}");
    assert_eq!(app.get_json(&key, &format!("/v1/payments/{missed_id}")).await["status"], "succeeded");
    assert_eq!(app.get_json(&key, &format!("/v1/payments/{held_id}")).await["status"], "canceled");
    let seen = app.get_json(&key, &format!("/v1/payments/{missed_id}")).await;
    assert_eq!(seen["amount_refunded"], "3.00", "the dashboard's refund is taken in: {seen}");
    let after: Value =
        app.send(Method::POST, "/v1/reconciliations", Some(&key), Some(window)).await.json().await.unwrap();
    let left: Vec<String> = kinds_of(&after).into_iter().map(|(k, _)| k).collect();
    assert_eq!(left, ["amount_differs", "currency_differs", "unknown_to_provider", "unknown_to_us"], "{after}");
    let runs: i64 = db
        .query_one("SELECT count(*) FROM payments.reconciliation_runs WHERE provider = $1", &[&p])
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs, 4);
    let bad = app
        .send(Method::POST, "/v1/reconciliations", Some(&key), Some(json!({ "from": "yesterday-ish", "to": "now" })))
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    // Unbounded windows are refused before anything is fetched or recorded: a clear 400, never a 500.
    for (from, to) in [("-infinity", "2027-01-01"), ("2027-01-01", "infinity"), ("2026-01-01", "2027-01-01")] {
        let r =
            app.send(Method::POST, "/v1/reconciliations", Some(&key), Some(json!({ "from": from, "to": to }))).await;
        let (status, code) = client_error(r, from).await;
        assert_eq!((status, code.as_str()), (400, "parameter_invalid"), "{from} .. {to}");
    }
    let after: i64 = db
        .query_one("SELECT count(*) FROM payments.reconciliation_runs WHERE provider = $1", &[&p])
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, runs, "no run recorded for a refused window");
}

/// What a timed-out reconciliation relies on: the statement of an abandoned request is canceled on
/// the server, not left to finish (and record a run) after the client was answered 408.
#[tokio::test]
async fn a_statement_whose_request_is_abandoned_is_canceled_on_the_server() {
    let pool = payments_gateway::db::pool(&gateway_database_url().await, 1, Duration::from_secs(5)).unwrap();
    let client = payments_gateway::db::CancelOnDrop::new(pool.get().await.unwrap());
    let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let sleeping = async move {
        let result = client.query_one("SELECT pg_sleep(30)", &[]).await;
        client.done();
        result
    };
    assert!(tokio::time::timeout(Duration::from_millis(300), sleeping).await.is_err(), "abandoned");
    let db = payments_e2e::connect().await;
    let busy = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'";
    let mut still_running = 1;
    for _ in 0..50 {
        still_running = db.query_one(busy, &[&pid]).await.unwrap().get::<_, i64>(0);
        if still_running == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(still_running, 0, "the abandoned statement still runs on the server");
    // The canceled connection left the pool: the next borrower's statement is not the one a
    // late cancel would stop.
    let next: i32 = pool.get().await.unwrap().query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    assert_ne!(next, pid, "the canceled connection was lent again");
}

#[tokio::test]
async fn printable_pages_mcp_and_idempotency_keys_close_their_small_edges() {
    let app = spawn_app(&[]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    // A receipt served as HTML runs no script and is not sniffed as anything else.
    let payment = paid(&app, &key, "pm_card_visa").await;
    let id = payment["id"].as_str().unwrap();
    let receipt = app.get_until(&key, &format!("/v1/payments/{id}"), |p| p["status"] == "succeeded").await;
    assert_eq!(receipt["status"], "succeeded");
    let page = app.send(Method::GET, &format!("/v1/payments/{id}/receipt.html"), Some(&key), None).await;
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'") && !csp.contains("script"), "{csp}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    // A tab inside an Idempotency-Key is not printable ASCII.
    let tabbed = app
        .post_with_key(
            "/v1/payments",
            &key,
            "key\twith-tab",
            json!({ "customer_id": "c", "amount": "1", "currency": "USD" }),
        )
        .await;
    assert_eq!(client_error(tabbed, "tab").await, (400, "idempotency_key_invalid".to_string()));
    // /mcp without a Host to judge (DNS rebinding) is refused before anything else.
    let address = app.url.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: \r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("host_missing"), "{answer}");
}

#[tokio::test]
async fn keys_the_product_makes_for_itself_cannot_be_claimed_over_http() {
    let app = spawn_app(&[]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let paid = paid(&app, &key, "pm_card_visa").await;
    for (path, body, idempotency_key) in [
        ("/v1/payments", json!({ "customer_id": "c", "amount": "1.00", "currency": "USD" }), "invoice:inv_next:1"),
        ("/v1/refunds", json!({ "payment": paid["id"], "amount": "1.00" }), "dashboard:1:form"),
    ] {
        let r = app.post_with_key(path, &key, idempotency_key, body).await;
        let (status, code) = client_error(r, idempotency_key).await;
        assert_eq!((status, code.as_str()), (400, "idempotency_key_reserved"), "{path}");
    }
    let r = app
        .post_with_key(
            "/v1/payments",
            &key,
            &unique("my-invoice:"),
            json!({ "customer_id": "c", "amount": "1", "currency": "USD" }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "only the prefix is reserved");
}

// ---- usage metering ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_retried_concurrently_or_in_a_batch_counts_once() {
    let app = std::sync::Arc::new(spawn_app(&["--pool-size", "24"]).await);
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let db = payments_e2e::connect().await;
    let meter = unique_code("tokens");
    db.execute("SELECT payments.create_meter($1, 'sum')", &[&meter]).await.unwrap();
    let customer = unique("cust_use");
    // An agent retries one event 16 times at once: one event.
    let idem = unique("use");
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (app, key, idem, body) = (
            app.clone(),
            key.clone(),
            idem.clone(),
            json!({ "customer_id": customer, "meter": meter, "quantity": "1.5" }),
        );
        clients.spawn(async move { app.post_with_key("/v1/usage", &key, &idem, body).await.status().as_u16() });
    }
    let mut answers = std::collections::BTreeMap::new();
    while let Some(status) = clients.join_next().await {
        *answers.entry(status.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(answers, [(200, 15), (201, 1)].into(), "one created, the others replayed");
    let other =
        app.post_with_key("/v1/usage", &key, &idem, json!({ "customer_id": customer, "meter": meter, "quantity": 2 }));
    assert_eq!(other.await.status(), StatusCode::CONFLICT, "the key with another quantity");
    // A batch repeating the first key and itself: each result reported, each event once.
    let event =
        |k: &str, q: &str| json!({ "idempotency_key": k, "customer_id": customer, "meter": meter, "quantity": q });
    let body = json!({ "events": [event(&idem, "1.5"), event("b-1", "10"), event("b-1", "10"), event("b-2", "-1")] });
    let r = app.send(Method::POST, "/v1/usage", Some(&key), Some(body)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let batch: Value = r.json().await.unwrap();
    let outcomes: Vec<&str> = batch["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().or(r["error"]["sqlstate"].as_str()).unwrap())
        .collect();
    assert_eq!(outcomes, ["replayed", "created", "replayed", "PM100"], "{batch}");
    let path =
        format!("/v1/customers/{customer}/usage?meter={meter}&from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z");
    let summary = app.get_json(&key, &path).await;
    assert_eq!((summary["value"].as_str(), summary["event_count"].as_i64()), (Some("11.5"), Some(2)), "{summary}");
    // The running totals that bound the next invoice count each event once too (a replay adds nothing).
    let totals = db
        .query_one(
            "SELECT sum(quantity)::text, sum(events)::bigint FROM payments.usage_daily WHERE customer_id = $1",
            &[&customer],
        )
        .await
        .unwrap();
    assert_eq!((totals.get::<_, String>(0), totals.get::<_, i64>(1)), ("11.5".into(), 2));
    let missing =
        app.send(Method::POST, "/v1/usage", Some(&key), Some(json!({ "customer_id": customer, "meter": meter }))).await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_time_without_its_offset_is_a_400_naming_it_and_an_offset_is_honoured() {
    let app = spawn_app(&[]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let db = payments_e2e::connect().await;
    let meter = unique_code("offsets");
    db.execute("SELECT payments.create_meter($1, 'sum')", &[&meter]).await.unwrap();
    let customer = unique("cust_tz");
    // An hour ago, written in Tokyo's time (+09:00, no summer time), and the same instant in UTC.
    let row = db
        .query_one(
            "SELECT to_char(t AT TIME ZONE 'Asia/Tokyo', 'YYYY-MM-DD\"T\"HH24:MI:SS') || '+09:00',
                    to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
             FROM (SELECT date_trunc('second', now() - interval '1 hour') AS t) n",
            &[],
        )
        .await
        .unwrap();
    let (tokyo, utc): (String, String) = (row.get(0), row.get(1));
    let offsetless = tokyo.trim_end_matches("+09:00").to_string();
    let usage = |at: &str| json!({ "customer_id": customer, "meter": meter, "quantity": 1, "occurred_at": at });
    // Read in the server's time zone, or a moving word: refused, the field named, nothing recorded.
    for at in [offsetless.as_str(), "now", "today", "infinity", "2026-12-07"] {
        let r = app.post_with_key("/v1/usage", &key, &unique("u"), usage(at)).await;
        let (status, body): (u16, Value) = (r.status().as_u16(), r.json().await.unwrap());
        assert_eq!((status, body["error"]["param"].as_str()), (400, Some("occurred_at")), "{at}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("offset"), "{body}");
    }
    let path = |from: &str| format!("/v1/customers/{customer}/usage?meter={meter}&from={from}&to=2100-01-01T00:00:00Z");
    let r = app.send(Method::GET, &path("2000-01-01T00:00:00"), Some(&key), None).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["param"], "from", "{body}");
    let r = app
        .send(
            Method::POST,
            "/v1/subscriptions/sub_none/cancel_at",
            Some(&key),
            Some(json!({ "cancel_at": "tomorrow" })),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // With its offset, the instant is the one written, whatever the zone it was written in.
    let r = app.post_with_key("/v1/usage", &key, &unique("u"), usage(&tokyo)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let stored: Vec<String> = db
        .query(
            "SELECT to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM payments.usage_log
             WHERE customer_id = $1",
            &[&customer],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, [utc]);
    let summary = app.get_json(&key, &path("2000-01-01T00:00:00%2B00:00")).await;
    assert_eq!(summary["event_count"], 1, "{summary}");
}

#[tokio::test]
async fn concurrent_batches_over_the_same_customers_all_land_and_keep_the_running_totals_exact() {
    let app = std::sync::Arc::new(spawn_app(&["--pool-size", "24"]).await);
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let db = payments_e2e::connect().await;
    let meter = unique_code("load");
    db.execute("SELECT payments.create_meter($1, 'sum')", &[&meter]).await.unwrap();
    let customers: Vec<String> = (0..4).map(|_| unique("cust_batch")).collect();
    // 24 batches at once on 24 connections (more than the 16 stripes of a day's running total,
    // so some share a row), each over the same four customers, half of them in reverse order.
    let mut clients = tokio::task::JoinSet::new();
    for batch in 0..24 {
        let mut events: Vec<Value> = (0..40)
            .map(|i| {
                json!({ "idempotency_key": format!("{batch}-{i}"), "customer_id": customers[i % 4],
                        "meter": meter, "quantity": format!("{}.5", i + 1) })
            })
            .collect();
        if batch % 2 == 1 {
            events.reverse();
        }
        let (app, key) = (app.clone(), key.clone());
        clients.spawn(async move {
            let r = app.send(Method::POST, "/v1/usage", Some(&key), Some(json!({ "events": events }))).await;
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        });
    }
    while let Some(answer) = clients.join_next().await {
        let (status, body) = answer.unwrap();
        assert_eq!(status, 201, "{body}");
        let created = body["data"].as_array().unwrap().iter().filter(|r| r["outcome"] == "created").count();
        assert_eq!(created, 40, "no event waited out a deadlock: {body}");
    }
    // What record_usage checks invoices against adds up to the events, customer by customer.
    let totals = db
        .query(
            "SELECT e.customer_id, e.total::text, d.total::text, e.events, d.events
             FROM (SELECT customer_id, sum(quantity) AS total, count(*) AS events FROM payments.usage_events
                   WHERE meter = $1 GROUP BY 1) e
             JOIN (SELECT customer_id, sum(quantity) AS total, sum(events)::bigint AS events FROM payments.usage_daily
                   WHERE meter = $1 GROUP BY 1) d USING (customer_id)",
            &[&meter],
        )
        .await
        .unwrap();
    assert_eq!(totals.len(), 4);
    for row in totals {
        let (events, daily): (i64, i64) = (row.get(3), row.get(4));
        assert_eq!((row.get::<_, String>(1), events), (row.get::<_, String>(2), daily));
        assert_eq!(events, 240, "24 batches of 10 events for {}", row.get::<_, String>(0));
    }
}

// ---- subscriptions and quotas --------------------------------------------------

#[tokio::test]
async fn sixty_four_agents_of_one_customer_never_consume_past_its_limit() {
    let db = payments_e2e::connect().await;
    let plan = unique_code("quota");
    let customer = unique("cust_busy");
    db.execute("SELECT payments.create_plan($1, 'USD', 0, 'month', features => '{\"calls\": 250}')", &[&plan])
        .await
        .unwrap();
    db.execute("SELECT payments.create_subscription($1, $2, $3)", &[&unique("sub"), &customer, &plan]).await.unwrap();
    // 64 connections at once, in pairs that send the same 13 requests (an agent and its retry,
    // each request twice at the same moment): 32 × (12 × 1 + 3) = 480 units asked of 250.
    let mut agents = tokio::task::JoinSet::new();
    for agent in 0..64 {
        let customer = customer.clone();
        agents.spawn(async move {
            let db = payments_e2e::connect().await;
            let mut answers = vec![];
            for call in 0..13 {
                let quantity = if call == 12 { 3 } else { 1 };
                let request = format!("{}-{call}", agent / 2);
                let row = db
                    .query_one(
                        "SELECT allowed, reason FROM payments.consume($1, 'calls', $2::int, $3)",
                        &[&customer, &quantity, &request],
                    )
                    .await
                    .unwrap();
                let allowed = row.get::<_, bool>(0);
                if !allowed {
                    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("limit_exceeded"));
                }
                answers.push((request, quantity, allowed));
            }
            answers
        });
    }
    let mut told = std::collections::BTreeMap::new();
    while let Some(answers) = agents.join_next().await {
        for (request, quantity, allowed) in answers.unwrap() {
            let first = *told.entry(request.clone()).or_insert((quantity, allowed));
            assert_eq!(first, (quantity, allowed), "both senders of {request} got one answer");
        }
    }
    // Exactly the limit: never more, and never less than was asked while room was left.
    let allowed: i32 = told.values().filter(|(_, allowed)| *allowed).map(|(quantity, _)| quantity).sum();
    assert_eq!(allowed, 250, "what the agents were told they may use, each request once");
    // (One query each: on Citus a function call may not sit beside a query of the tables.)
    let mut counts = vec![];
    for sql in [
        "SELECT sum(used)::int FROM payments.feature_usage WHERE customer_id = $1",
        "SELECT used::int FROM payments.entitlements($1) WHERE feature = 'calls'",
        "SELECT sum(quantity)::int FROM payments.consumptions WHERE customer_id = $1 AND allowed",
        "SELECT count(*)::int FROM payments.consumptions WHERE customer_id = $1",
        "SELECT sum(allowance)::int FROM payments.feature_usage WHERE customer_id = $1",
    ] {
        counts.push(db.query_one(sql, &[&customer]).await.unwrap().get::<_, i32>(0));
    }
    assert_eq!(counts, [250, 250, 250, 32 * 13, 250], "counted, shown, recorded, answered, split");
}

#[tokio::test]
async fn credits_over_http_granted_by_the_platform_bought_by_the_customer_and_spent_by_its_agent() {
    let app = spawn_app(&[]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let customer = unique("cust_wallet");
    let (_, own_key) = payments_e2e::api_key_for(&["payments:read", "payments:write"], &customer).await;
    let (_, other_key) = payments_e2e::api_key_for(&["payments:read", "payments:write"], &unique("cust_x")).await;
    let idem = unique("grant");
    let body = json!({ "customer_id": customer, "amount": "1000", "unit": "tokens", "applies_to": "calls",
                       "expires_at": "2099-01-01T00:00:00Z", "priority": 2 });
    let r = app.post_with_key("/v1/credit_grants", &key, &idem, body.clone()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let grant: Value = r.json().await.unwrap();
    assert_eq!(
        (grant["object"].as_str(), grant["amount"].as_str(), grant["remaining"].as_str(), grant["unit"].as_str()),
        (Some("credit_grant"), Some("1000"), Some("1000"), Some("tokens")),
        "{grant}"
    );
    assert_eq!((grant["applies_to"].as_str(), grant["priority"].as_i64()), (Some("calls"), Some(2)), "{grant}");
    let again = app.post_with_key("/v1/credit_grants", &key, &idem, body.clone()).await;
    assert_eq!((again.status(), again.headers()["idempotent-replayed"].to_str().unwrap()), (StatusCode::OK, "true"));
    let again: Value = again.json().await.unwrap();
    assert_eq!((again["id"].clone(), again["outcome"].as_str()), (grant["id"].clone(), Some("replayed")));
    let reused = app.post_with_key(
        "/v1/credit_grants",
        &key,
        &idem,
        json!({ "customer_id": customer, "amount": 5, "unit": "tokens" }),
    );
    assert_eq!(error_code(reused.await).await, (StatusCode::CONFLICT, "idempotency_key_reused".into()));
    for (amount, unit, code) in
        [("1.5", "tokens", "amount_too_precise"), ("1", "Tokens", "unit_unknown"), ("0", "usd", "amount_not_positive")]
    {
        let grant_key = unique("g");
        let bad = json!({ "customer_id": customer, "amount": amount, "unit": unit });
        let bad = app.post_with_key("/v1/credit_grants", &key, &grant_key, bad).await;
        assert_eq!(error_code(bad).await, (StatusCode::BAD_REQUEST, code.to_string()), "{amount} {unit}");
    }
    // A key bound to the customer may read its balances, but never grant itself credits.
    let grant_key = unique("g");
    let own = json!({ "customer_id": customer, "amount": 1, "unit": "tokens" });
    let own = app.post_with_key("/v1/credit_grants", &own_key, &grant_key, own).await;
    assert_eq!(error_code(own).await, (StatusCode::FORBIDDEN, "customer_bound".into()));

    let path = format!("/v1/customers/{customer}/balances");
    for k in [&key, &own_key] {
        let shown = app.get_json(k, &path).await;
        assert_eq!(
            shown["data"],
            json!([{"account": "credits", "unit": "tokens", "posted": "1000", "held": "0", "available": "1000"}]),
            "{shown}"
        );
    }
    let hidden = app.send(Method::GET, &path, Some(&other_key), None).await;
    assert_eq!(hidden.status(), StatusCode::NOT_FOUND);

    // The customer's own agent reserves, then settles what the work cost; another's key sees no hold.
    let reserve = |amount: &str, request: &str| {
        let body = json!({ "customer_id": customer, "amount": amount, "unit": "tokens", "request_id": request });
        app.send(Method::POST, "/v1/holds", Some(&own_key), Some(body))
    };
    let held: Value = reserve("600", "job-1").await.json().await.unwrap();
    assert_eq!((held["allowed"].as_bool(), held["available"].as_str()), (Some(true), Some("400")), "{held}");
    let refused: Value = reserve("401", "job-2").await.json().await.unwrap();
    assert_eq!((refused["allowed"].as_bool(), refused["hold_id"].is_null()), (Some(false), true), "{refused}");
    let hold = held["hold_id"].as_str().unwrap();
    let settle_path = format!("/v1/holds/{hold}/settle");
    let settle = |k: &'static str, amount: &'static str| {
        let key = if k == "own" { own_key.clone() } else { other_key.clone() };
        let (app, path) = (&app, settle_path.clone());
        async move { app.send(Method::POST, &path, Some(&key), Some(json!({ "amount": amount }))).await }
    };
    assert_eq!(settle("other", "1").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(settle("own", "601").await).await, (StatusCode::BAD_REQUEST, "amount_too_large".into()));
    let settled: Value = settle("own", "250").await.json().await.unwrap();
    assert_eq!((settled["spent"].as_str(), settled["released"].as_str()), (Some("250"), Some("350")), "{settled}");
    let release = app.send(Method::POST, &format!("/v1/holds/{hold}/release"), Some(&own_key), None).await;
    assert_eq!(error_code(release).await, (StatusCode::CONFLICT, "transition_not_allowed".into()));
    let shown = app.get_json(&key, &path).await;
    assert_eq!((shown["data"][0]["posted"].as_str(), shown["data"][0]["held"].as_str()), (Some("750"), Some("0")));

    // The customer buys credits with a card (its own key may): granted once the payment succeeded,
    // once; a declined card grants nothing.
    let top_up = |pm: &'static str, request: String| {
        let body = json!({ "customer_id": customer, "amount": "10.00", "currency": "usd", "payment_method": pm,
                           "credits": {"amount": 500, "unit": "tokens"} });
        let (app, own_key) = (&app, own_key.clone());
        async move { app.post_with_key("/v1/top_ups", &own_key, &request, body).await }
    };
    let bought = top_up("pm_card_visa", idem.clone() + "-top-up").await;
    assert_eq!(bought.status(), StatusCode::CREATED);
    let bought: Value = bought.json().await.unwrap();
    assert_eq!(bought["status"], "succeeded", "{bought}");
    let again = top_up("pm_card_visa", idem.clone() + "-top-up").await;
    assert_eq!(again.status(), StatusCode::OK, "a retry is the same payment");
    let declined: Value = top_up("pm_card_chargeDeclined", idem.clone() + "-declined").await.json().await.unwrap();
    assert_eq!(declined["status"], "failed", "{declined}");
    let shown = app.get_json(&key, &path).await;
    assert_eq!(shown["data"][0]["posted"], "1250", "500 tokens bought once: {shown}");

    // A budget is the platform's to set; the agent's next reserve past it is refused.
    let limit = json!({ "amount": "100", "unit": "tokens", "period": "day" });
    let limit_path = format!("/v1/customers/{customer}/spend_limit");
    let denied = app.send(Method::PUT, &limit_path, Some(&own_key), Some(limit.clone())).await;
    assert_eq!(error_code(denied).await, (StatusCode::FORBIDDEN, "customer_bound".into()));
    let set: Value = app.send(Method::PUT, &limit_path, Some(&key), Some(limit)).await.json().await.unwrap();
    assert_eq!(set["limited"], true, "{set}");
    let over: Value = reserve("1", "job-3").await.json().await.unwrap();
    assert_eq!(
        (over["allowed"].as_bool(), over["reason"].as_str()),
        (Some(false), Some("spend_limit_reached")),
        "{over}"
    );
}

#[tokio::test]
async fn an_agent_checks_its_entitlements_and_consumes_within_them_over_http() {
    let app = spawn_app(&[]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let db = payments_e2e::connect().await;
    let plan = unique_code("starter");
    db.execute(
        "SELECT payments.create_plan($1, 'EUR', 0, 'month', features => '{\"calls\": 5, \"seats\": null}')",
        &[&plan],
    )
    .await
    .unwrap();
    let customer = unique("cust_agent");
    let idem = unique("sub");
    let body = json!({ "customer_id": customer, "plan": plan });
    let r = app.post_with_key("/v1/subscriptions", &key, &idem, body.clone()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let sub: Value = r.json().await.unwrap();
    assert_eq!((sub["object"].as_str(), sub["status"].as_str()), (Some("subscription"), Some("active")), "{sub}");
    let again = app.post_with_key("/v1/subscriptions", &key, &idem, body).await;
    assert_eq!((again.status(), again.headers()["idempotent-replayed"].to_str().unwrap()), (StatusCode::OK, "true"));

    let entitled = app.get_json(&key, &format!("/v1/customers/{customer}/entitlements")).await;
    assert_eq!(entitled["active"], true, "{entitled}");
    let calls = entitled["data"].as_array().unwrap().iter().find(|e| e["feature"] == "calls").unwrap().clone();
    assert_eq!((calls["limit"].as_str(), calls["remaining"].as_str()), (Some("5"), Some("5")), "{entitled}");

    let consume_path = format!("/v1/customers/{customer}/consume");
    let consume = |quantity: &str, request: &str| {
        let body = json!({ "feature": "calls", "quantity": quantity, "request_id": request });
        app.send(Method::POST, &consume_path, Some(&key), Some(body))
    };
    let first: Value = consume("3", "r1").await.json().await.unwrap();
    assert_eq!(
        (first["allowed"].as_bool(), first["remaining"].as_str(), first["outcome"].as_str()),
        (Some(true), Some("2"), Some("consumed"))
    );
    let retry: Value = consume("3", "r1").await.json().await.unwrap();
    assert_eq!((retry["remaining"].as_str(), retry["outcome"].as_str()), (Some("2"), Some("replayed")), "{retry}");
    let over: Value = consume("3", "r2").await.json().await.unwrap();
    assert_eq!((over["allowed"].as_bool(), over["reason"].as_str()), (Some(false), Some("limit_exceeded")), "{over}");
    assert_eq!(consume("0", "r3").await.status(), StatusCode::BAD_REQUEST);
    // Credits granted for calls pay for what passes the limit, in the same call.
    db.execute("SELECT payments.grant_credits($1, $2, 10, 'calls', applies_to => 'calls')", &[&unique("g"), &customer])
        .await
        .unwrap();
    let paid: Value = consume("3", "r4").await.json().await.unwrap();
    assert_eq!(
        (
            paid["allowed"].as_bool(),
            paid["remaining"].as_str(),
            paid["credits_drawn"].as_str(),
            paid["credits_unit"].as_str()
        ),
        (Some(true), Some("0"), Some("1"), Some("calls")),
        "{paid}"
    );

    let id = sub["id"].as_str().unwrap();
    // Paused, it grants nothing; resumed, it does again; moved to a bigger plan at once, its limits grow.
    let paused: Value =
        app.send(Method::POST, &format!("/v1/subscriptions/{id}/pause"), Some(&key), None).await.json().await.unwrap();
    assert_eq!(paused["status"], "paused", "{paused}");
    assert_eq!(app.get_json(&key, &format!("/v1/customers/{customer}/entitlements")).await["active"], false);
    let resumed: Value =
        app.send(Method::POST, &format!("/v1/subscriptions/{id}/resume"), Some(&key), None).await.json().await.unwrap();
    assert_eq!(resumed["status"], "active", "{resumed}");
    let bigger = format!("{plan}_big");
    db.execute("SELECT payments.create_plan($1, 'EUR', 0, 'month', features => '{\"calls\": 50}')", &[&bigger])
        .await
        .unwrap();
    let moved: Value = app
        .send(Method::POST, &format!("/v1/subscriptions/{id}/change_plan"), Some(&key), Some(json!({ "plan": bigger })))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(moved["plan"], bigger.as_str(), "{moved}");
    let more: Value = consume("3", "r5").await.json().await.unwrap();
    // 3 + 2 counted before (the credit paid for one), 3 now: 42 of 50 left.
    assert_eq!((more["allowed"].as_bool(), more["remaining"].as_str()), (Some(true), Some("42")), "{more}");
    let listed = app.get_json(&key, &format!("/v1/subscriptions?customer_id={customer}")).await;
    assert_eq!(listed["data"][0]["id"], id, "{listed}");
    let canceled: Value = app
        .send(
            Method::POST,
            &format!("/v1/subscriptions/{id}/cancel"),
            Some(&key),
            Some(json!({ "at_period_end": false })),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    assert_eq!(app.get_json(&key, &format!("/v1/subscriptions/{id}")).await["status"], "canceled");
    let after: Value = consume("1", "r6").await.json().await.unwrap();
    assert_eq!(after["reason"], "no_entitlement");
    assert_eq!(app.get_json(&key, &format!("/v1/customers/{customer}/entitlements")).await["active"], false);
    let unknown = app.send(Method::GET, "/v1/subscriptions/sub_nope", Some(&key), None).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn invoices_are_paid_by_prepaid_credits_and_the_balance_first_and_charged_only_for_the_rest() {
    // The reconciler charges each invoice's payment at the sandbox as soon as run_billing makes it.
    let app = spawn_app(&["--reconcile-min-age-ms", "0", "--reconcile-interval-ms", "100"]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let db = payments_e2e::connect().await;
    let (plan, small) = (unique_code("pro"), unique_code("lite"));
    db.execute("SELECT payments.create_plan($1, 'USD', 15, 'month', trial_days => 1)", &[&plan]).await.unwrap();
    db.execute("SELECT payments.create_plan($1, 'USD', 5, 'month')", &[&small]).await.unwrap();
    let customer = unique("cust_prepaid");
    let create =
        "SELECT id FROM payments.create_subscription($1, $2, $3, 'pm_card_visa', at => now() - interval '2 days')";
    let sub: String = db.query_one(create, &[&unique("k"), &customer, &plan]).await.unwrap().get(0);
    let grant = json!({ "customer_id": customer, "amount": "5.00", "unit": "usd" });
    assert_eq!(app.post_with_key("/v1/credit_grants", &key, &unique("g"), grant).await.status(), StatusCode::CREATED);
    let lines = |invoice: &Value| {
        invoice["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| format!("{} {}", l["kind"].as_str().unwrap(), l["amount"].as_str().unwrap()))
            .collect::<Vec<_>>()
    };

    // The first month: 5.00 of credits, 10.00 charged at the provider.
    let first = renew(&db, &sub).await;
    let paid = app.get_until(&key, &format!("/v1/invoices/{first}"), |i| i["status"] == "paid").await;
    assert_eq!(lines(&paid), ["recurring 15.00", "prepaid_credits -5.00"], "{paid}");
    assert_eq!(paid["total"], "10.00");
    let payment = app.get_json(&key, &format!("/v1/payments/{}", paid["payment_id"].as_str().unwrap())).await;
    assert_eq!(
        (payment["amount"].as_str(), payment["status"].as_str()),
        (Some("10.00"), Some("succeeded")),
        "{payment}"
    );

    // Half-way, down to the 5.00 plan: 7.50 unused less 2.50 for the rest is the customer's balance.
    let half = "SELECT payments.change_plan($1, $2, at => (SELECT current_period_start + (current_period_end - current_period_start) / 2
                                                           FROM payments.subscriptions WHERE id = $1))";
    db.execute(half, &[&sub, &small]).await.unwrap();
    let balances = app.get_json(&key, &format!("/v1/customers/{customer}/balances")).await;
    let balance = balances["data"].as_array().unwrap().iter().find(|b| b["account"] == "balance").cloned();
    assert_eq!(balance.map(|b| b["available"].clone()), Some(json!("5.00")), "{balances}");

    // The next month costs 5.00: the balance pays it all, and nothing is charged.
    let second = renew(&db, &sub).await;
    let paid = app.get_until(&key, &format!("/v1/invoices/{second}"), |i| i["status"] == "paid").await;
    assert_eq!(lines(&paid), ["recurring 5.00", "balance -5.00"], "{paid}");
    assert_eq!((paid["total"].as_str(), paid["payment_id"].as_str()), (Some("0.00"), None), "{paid}");
    let balances = app.get_json(&key, &format!("/v1/customers/{customer}/balances")).await;
    assert!(balances["data"].as_array().unwrap().iter().all(|b| b["available"] == "0.00"), "{balances}");
}

#[tokio::test]
async fn three_seats_with_a_coupon_and_a_tax_renew_as_foretold_and_a_fourth_seat_is_prorated() {
    let app = spawn_app(&["--reconcile-min-age-ms", "0", "--reconcile-interval-ms", "100"]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let db = payments_e2e::connect().await;
    let plan = unique_code("taxed");
    let (coupon, rate) = (unique("TWENTY"), unique("ca").to_lowercase());
    // 10.00 a seat (Stripe's example: 3 seats, 20 % off, 8.25 % sales tax).
    db.execute("SELECT payments.create_plan($1, 'USD', 10, 'month', trial_days => 1)", &[&plan]).await.unwrap();
    db.execute("SELECT payments.create_tax_rate($1, 'Sales tax', 8.25, false, 'US-CA')", &[&rate]).await.unwrap();
    db.execute(
        "SELECT payments.create_coupon($1, percent_off => 20, duration => 'repeating', duration_in_periods => 2)",
        &[&coupon],
    )
    .await
    .unwrap();
    let customer = unique("cust_taxed");
    let (_, own_key) = payments_e2e::api_key_for(&["payments:read", "payments:write"], &customer).await;
    let (_, other_key) = payments_e2e::api_key_for(&["payments:read", "payments:write"], &unique("cust_x")).await;
    let body = json!({ "customer_id": customer, "plan": plan, "payment_method": "pm_card_visa", "quantity": 3 });
    let created: Value = app.post_with_key("/v1/subscriptions", &key, &unique("k"), body).await.json().await.unwrap();
    assert_eq!((created["quantity"].as_i64(), created["status"].as_str()), (Some(3), Some("trialing")), "{created}");
    let sub = created["id"].as_str().unwrap().to_string();

    // The platform assigns the tax; the customer's own key may not.
    let tax_path = format!("/v1/customers/{customer}/tax");
    let body = json!({ "tax_rates": [rate] });
    let denied = app.send(Method::PUT, &tax_path, Some(&own_key), Some(body.clone())).await;
    assert_eq!(error_code(denied).await, (StatusCode::FORBIDDEN, "customer_bound".into()));
    let set: Value = app.send(Method::PUT, &tax_path, Some(&key), Some(body)).await.json().await.unwrap();
    assert_eq!((set["tax_rates"].clone(), set["tax_exempt"].clone()), (json!([rate]), json!(false)), "{set}");
    // The customer's own key redeems a coupon for its subscription; another customer's cannot see it.
    let coupon_path = format!("/v1/subscriptions/{sub}/coupon");
    let hidden = app.send(Method::POST, &coupon_path, Some(&other_key), Some(json!({ "code": coupon }))).await;
    assert_eq!(error_code(hidden).await, (StatusCode::NOT_FOUND, "resource_missing".into()));
    let applied: Value = app
        .send(Method::POST, &coupon_path, Some(&own_key), Some(json!({ "code": coupon })))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (applied["outcome"].as_str(), applied["first_period"].as_i64()),
        (Some("applied"), Some(1)),
        "{applied}"
    );
    let unknown = app.send(Method::POST, &coupon_path, Some(&key), Some(json!({ "code": "NOPE" }))).await;
    assert_eq!(error_code(unknown).await.0, StatusCode::NOT_FOUND);

    // Three renewals: 30.00 less 20 % plus 8.25 % of what is left twice, then without the coupon.
    for (period, total, discount, tax) in
        [(1, "25.98", "6.00", "1.98"), (2, "25.98", "6.00", "1.98"), (3, "32.48", "0.00", "2.48")]
    {
        let preview = app.get_json(&own_key, &format!("/v1/subscriptions/{sub}/invoice_preview")).await;
        let invoice = renew(&db, &sub).await;
        let paid = app.get_until(&key, &format!("/v1/invoices/{invoice}"), |i| i["status"] == "paid").await;
        assert_eq!(paid["total"], total, "period {period}: {paid}");
        assert_eq!(
            (paid["lines"][0]["discount"].as_str(), paid["lines"][0]["tax"].as_str()),
            (Some(discount), Some(tax))
        );
        assert_eq!(paid["taxes"][0]["amount"], tax, "{paid}");
        // Its receipt shows the tax it paid.
        let receipt =
            app.get_json(&key, &format!("/v1/payments/{}/receipt", paid["payment_id"].as_str().unwrap())).await;
        assert_eq!(receipt["invoice"]["taxes"][0]["amount"], tax, "{receipt}");
        assert_eq!(
            (
                preview["total"].clone(),
                preview["discount"].clone(),
                preview["tax"].clone(),
                preview["period_number"].clone()
            ),
            (json!(total), json!(discount), json!(tax), json!(period)),
            "the preview foretold the invoice: {preview}"
        );
        let payment = app.get_json(&key, &format!("/v1/payments/{}", paid["payment_id"].as_str().unwrap())).await;
        assert_eq!((payment["amount"].as_str(), payment["status"].as_str()), (Some(total), Some("succeeded")));
        assert_eq!(paid["lines"][0]["quantity"], 3, "{paid}");
    }
    let hidden =
        app.send(Method::GET, &format!("/v1/subscriptions/{sub}/invoice_preview"), Some(&other_key), None).await;
    assert_eq!(error_code(hidden).await.0, StatusCode::NOT_FOUND);

    // A fourth seat now, before the third period starts (the clock ran ahead of it): the period's
    // 30.00 for 3 seats credited, 40.00 for 4 charged, each line taxed (-2.48 and 3.30): 10.82.
    let path = format!("/v1/subscriptions/{sub}/quantity");
    let more: Value =
        app.send(Method::POST, &path, Some(&own_key), Some(json!({ "quantity": 4 }))).await.json().await.unwrap();
    assert_eq!(more["quantity"], 4, "{more}");
    let proration: String = db
        .query_one("SELECT id FROM payments.invoices WHERE subscription_id = $1 AND kind = 'proration'", &[&sub])
        .await
        .unwrap()
        .get(0);
    let paid = app.get_until(&key, &format!("/v1/invoices/{proration}"), |i| i["status"] == "paid").await;
    assert_eq!(paid["total"], "10.82", "{paid}");
    let bad = app.send(Method::POST, &path, Some(&key), Some(json!({ "quantity": 0 }))).await;
    assert_eq!(error_code(bad).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_voided_invoice_is_never_charged_again_and_only_the_platform_may_void() {
    let app = spawn_app(&["--reconcile-min-age-ms", "0", "--reconcile-interval-ms", "100"]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let db = payments_e2e::connect().await;
    let plan = unique_code("voided");
    db.execute("SELECT payments.create_plan($1, 'USD', 15, 'month', trial_days => 1)", &[&plan]).await.unwrap();
    let customer = unique("cust_void");
    let (_, own_key) = payments_e2e::api_key_for(&["payments:read", "payments:write"], &customer).await;
    let create = "SELECT id FROM payments.create_subscription($1, $2, $3, 'pm_card_chargeDeclined', at => now() - interval '2 days')";
    let sub: String = db.query_one(create, &[&unique("k"), &customer, &plan]).await.unwrap().get(0);
    let invoice = renew(&db, &sub).await;
    // The declined card: past due, the invoice open for its retries.
    app.get_until(&key, &format!("/v1/subscriptions/{sub}"), |s| s["status"] == "past_due").await;
    let void_path = format!("/v1/invoices/{invoice}/void");
    let denied = app.send(Method::POST, &void_path, Some(&own_key), None).await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN, "a customer does not void what it owes");
    let voided: Value = app.send(Method::POST, &void_path, Some(&key), None).await.json().await.unwrap();
    assert_eq!(voided["status"], "void", "{voided}");
    // Every retry of the dunning schedule passes: nothing more is charged at the provider.
    let attempts = "SELECT (SELECT attempt_count FROM payments.invoices WHERE id = $1),
                           (SELECT count(*) FROM payments.payments WHERE customer_id = $2)";
    let before = db.query_one(attempts, &[&invoice, &customer]).await.unwrap();
    for days in [1, 3, 5, 9] {
        let at = format!("{days} days");
        db.execute("SELECT payments.run_billing(now() + $1::text::interval)", &[&at]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = db.query_one(attempts, &[&invoice, &customer]).await.unwrap();
    assert_eq!(
        (after.get::<_, i32>(0), after.get::<_, i64>(1)),
        (before.get::<_, i32>(0), before.get::<_, i64>(1)),
        "no retry, no new payment"
    );
    let again = app.send(Method::POST, &format!("/v1/invoices/{invoice}/mark_uncollectible"), Some(&key), None).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn a_renewal_draft_takes_an_invoice_item_and_is_charged_with_it_once_final() {
    let app = spawn_app(&["--reconcile-min-age-ms", "0", "--reconcile-interval-ms", "100"]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let db = payments_e2e::connect().await;
    let plan = unique_code("drafted");
    db.execute("SELECT payments.create_plan($1, 'USD', 15, 'month', trial_days => 1)", &[&plan]).await.unwrap();
    let customer = unique("cust_draft");
    let (_, own_key) = payments_e2e::api_key_for(&["payments:read", "payments:write"], &customer).await;
    let create =
        "SELECT id FROM payments.create_subscription($1, $2, $3, 'pm_card_visa', at => now() - interval '2 days')";
    let sub: String = db.query_one(create, &[&unique("k"), &customer, &plan]).await.unwrap().get(0);
    db.execute(
        "SELECT payments.run_billing((SELECT current_period_end FROM payments.subscriptions WHERE id = $1))",
        &[&sub],
    )
    .await
    .unwrap();
    // The customer's draft, as an app finds it to add to it; another customer's key sees none of it.
    let drafts = app.get_json(&key, &format!("/v1/invoices?customer_id={customer}&status=draft")).await;
    let listed = drafts["data"].as_array().unwrap();
    assert_eq!((listed.len(), listed[0]["subscription_id"].as_str()), (1, Some(sub.as_str())), "{drafts}");
    let invoice = listed[0]["id"].as_str().unwrap().to_string();
    let (_, other_key) = payments_e2e::api_key_for(&["payments:read"], &unique("cust_other")).await;
    let theirs = app.send(Method::GET, &format!("/v1/invoices?customer_id={customer}"), Some(&other_key), None).await;
    assert_eq!(theirs.status(), StatusCode::FORBIDDEN);
    let own = app.get_json(&other_key, "/v1/invoices").await;
    assert_eq!(own["data"], json!([]), "a bound key lists its own customer's invoices only");
    let bad = app.send(Method::GET, "/v1/invoices?status=late", Some(&key), None).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let path = format!("/v1/invoices/{invoice}");
    let draft = app.get_json(&own_key, &path).await;
    assert_eq!(
        (draft["status"].as_str(), draft["number"].clone(), draft["payment_id"].clone(), draft["total"].as_str()),
        (Some("draft"), Value::Null, Value::Null, Some("15.00")),
        "{draft}"
    );
    let page = app.send(Method::GET, &format!("{path}.html"), Some(&own_key), None).await.text().await.unwrap();
    assert!(page.contains("<h1>Draft invoice</h1>"), "{page}");

    let items = format!("{path}/items");
    let item = json!({ "description": "Onboarding call", "amount": "40.00", "quantity": 2 });
    let idem = unique("item");
    let denied = app.post_with_key(&items, &own_key, &idem, item.clone()).await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN, "a customer does not add to its own bill");
    let added = app.post_with_key(&items, &key, &idem, item.clone()).await;
    assert_eq!(added.status(), StatusCode::CREATED);
    let added: Value = added.json().await.unwrap();
    assert_eq!((added["status"].as_str(), added["total"].as_str()), (Some("draft"), Some("95.00")), "{added}");
    assert_eq!(added["lines"][1]["kind"], "item");
    let again = app.post_with_key(&items, &key, &idem, item).await;
    assert_eq!((again.status(), again.headers()["idempotent-replayed"].to_str().unwrap()), (StatusCode::OK, "true"));
    let precise =
        app.post_with_key(&items, &key, &unique("item"), json!({ "description": "x", "amount": "0.001" })).await;
    assert_eq!(precise.status(), StatusCode::BAD_REQUEST);

    // Finalized now rather than in an hour: numbered, and charged at the provider with the item.
    let finalized: Value =
        app.send(Method::POST, &format!("{path}/finalize"), Some(&key), None).await.json().await.unwrap();
    assert_eq!(finalized["status"], "open", "{finalized}");
    let paid = app.get_until(&key, &path, |i| i["status"] == "paid").await;
    assert_eq!((paid["total"].as_str(), paid["lines"].as_array().map(Vec::len)), (Some("95.00"), Some(2)), "{paid}");
    let payment = app.get_json(&key, &format!("/v1/payments/{}", paid["payment_id"].as_str().unwrap())).await;
    assert_eq!((payment["amount"].as_str(), payment["status"].as_str()), (Some("95.00"), Some("succeeded")));
    let missing = app.send(Method::POST, "/v1/invoices/inv_nope/finalize", Some(&key), None).await;
    assert_eq!(error_code(missing).await.0, StatusCode::NOT_FOUND);
    let missing = app
        .post_with_key(
            "/v1/invoices/inv_nope/items",
            &key,
            &unique("item"),
            json!({ "description": "x", "amount": "1" }),
        )
        .await;
    assert_eq!(error_code(missing).await.0, StatusCode::NOT_FOUND);
    let late = app.post_with_key(&items, &key, &unique("item"), json!({ "description": "x", "amount": "1" })).await;
    assert_eq!(error_code(late).await.0, StatusCode::CONFLICT, "a final invoice takes no item");
    let page = app.send(Method::GET, &format!("{path}.html"), Some(&key), None).await.text().await.unwrap();
    assert!(page.contains(paid["number"].as_str().unwrap()) && page.contains("Onboarding call"), "{page}");
}

#[tokio::test]
async fn a_customer_subscribes_in_a_plans_other_currency_at_its_latest_version_and_stays_in_it() {
    let app = spawn_app(&[]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let db = payments_e2e::connect().await;
    let plan = unique_code("global");
    db.execute(
        r#"SELECT payments.create_plan($1, 'USD', 10, 'month', trial_days => 14,
                                      currency_options => '{"EUR": {"amount": "9.00"}, "JPY": {"amount": 1500}}')"#,
        &[&plan],
    )
    .await
    .unwrap();
    db.execute("SELECT payments.create_plan_version($1, 2, 11)", &[&plan]).await.unwrap();
    let customer = unique("cust_eu");
    let subscribe = |customer: &str, currency: Option<&'static str>| {
        let body = json!({ "customer_id": customer, "plan": plan, "currency": currency });
        let (app, key) = (&app, &key);
        async move { app.post_with_key("/v1/subscriptions", key, &unique("k"), body).await }
    };
    let created = subscribe(&customer, Some("eur")).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    assert_eq!(
        (created["currency"].as_str(), created["plan_version"].as_i64()),
        (Some("EUR"), Some(2)),
        "the latest version, in euros: {created}"
    );
    let other = subscribe(&customer, Some("USD")).await;
    assert_eq!(error_code(other).await.0, StatusCode::CONFLICT, "the customer pays in euros");
    let unknown = subscribe(&unique("cust_uk"), Some("GBP")).await;
    assert_eq!(error_code(unknown).await.0, StatusCode::BAD_REQUEST, "no price in pounds");
    // Without a currency: the customer's.
    let second: Value = subscribe(&customer, None).await.json().await.unwrap();
    assert_eq!(second["currency"], "EUR", "{second}");
    let preview =
        app.get_json(&key, &format!("/v1/subscriptions/{}/invoice_preview", created["id"].as_str().unwrap())).await;
    assert_eq!((preview["currency"].as_str(), preview["total"].as_str()), (Some("EUR"), Some("9.00")), "{preview}");
    // A new price in euros too; both subscriptions move to it at their next renewal, which the
    // preview already shows.
    db.execute(
        r#"SELECT payments.create_plan_version($1, 3, 12,
                                               currency_options => '{"EUR": {"amount": "10.00"}, "JPY": {"amount": 1600}}')"#,
        &[&plan],
    )
    .await
    .unwrap();
    let moved: i32 = db.query_one("SELECT payments.migrate_plan_version($1, 2, 3)", &[&plan]).await.unwrap().get(0);
    assert_eq!(moved, 2);
    let preview =
        app.get_json(&key, &format!("/v1/subscriptions/{}/invoice_preview", created["id"].as_str().unwrap())).await;
    assert_eq!(preview["total"], "10.00", "{preview}");
    let still = app.get_json(&key, &format!("/v1/subscriptions/{}", created["id"].as_str().unwrap())).await;
    assert_eq!(still["plan_version"], 2, "until the renewal: {still}");
}

#[tokio::test]
async fn subscription_options_anchor_the_cycle_schedule_the_cancel_and_pause_a_trial_without_a_card() {
    let app = spawn_app(&[]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let db = payments_e2e::connect().await;
    let plan = unique_code("opts");
    db.execute("SELECT payments.create_plan($1, 'USD', 30, 'month')", &[&plan]).await.unwrap();
    let trial = unique_code("optt");
    db.execute("SELECT payments.create_plan($1, 'USD', 30, 'month', trial_days => 1)", &[&trial]).await.unwrap();
    let anchor: String = db
        .query_one(
            "SELECT to_char(now() AT TIME ZONE 'UTC' + interval '10 days', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let body = json!({ "customer_id": unique("cust_opt"), "plan": plan, "billing_cycle_anchor": anchor,
                       "cancel_at": "2099-01-01T00:00:00Z" });
    let created: Value = app.post_with_key("/v1/subscriptions", &key, &unique("k"), body).await.json().await.unwrap();
    assert_eq!(created["status"], "incomplete", "{created}");
    assert!(created["cancel_at"].as_str().unwrap().starts_with("2099-01-01"), "{created}");
    let end: bool = db
        .query_one(
            "SELECT current_period_end = $2::text::timestamptz FROM payments.subscriptions WHERE id = $1",
            &[&created["id"].as_str().unwrap(), &anchor],
        )
        .await
        .unwrap()
        .get(0);
    assert!(end, "the first period ends at the anchor");
    let sub = created["id"].as_str().unwrap();
    // The fee times the share of a whole month (from the start) that ends at the anchor: about 10 of 31 days.
    let row = db
        .query_one(
            "SELECT i.total_minor, round(3000 * extract(epoch FROM s.current_period_end - s.current_period_start)
                                          / extract(epoch FROM payments._utc_add(s.current_period_start, interval '1 month')
                                                               - s.current_period_start))::bigint
             FROM payments.invoices i
             JOIN payments.subscriptions s ON s.customer_id = i.customer_id AND s.id = i.subscription_id WHERE s.id = $1",
            &[&sub],
        )
        .await
        .unwrap();
    let (total, share): (i64, i64) = (row.get(0), row.get(1));
    assert!(total == share && (900..=1100).contains(&total), "{total} of 3000 for about a third of a month");
    let path = format!("/v1/subscriptions/{sub}/cancel_at");
    let cleared: Value =
        app.send(Method::POST, &path, Some(&key), Some(json!({ "cancel_at": null }))).await.json().await.unwrap();
    assert_eq!(cleared["cancel_at"], Value::Null, "{cleared}");
    let past = app.send(Method::POST, &path, Some(&key), Some(json!({ "cancel_at": "2001-01-01T00:00:00Z" }))).await;
    assert_eq!(error_code(past).await.0, StatusCode::BAD_REQUEST);
    let bad = json!({ "customer_id": unique("cust_opt"), "plan": plan, "missing_payment_method": "ignore" });
    let refused = app.post_with_key("/v1/subscriptions", &key, &unique("k"), bad).await;
    assert_eq!(error_code(refused).await.0, StatusCode::BAD_REQUEST);

    // A trial with no card, asked to pause: paused when the trial ends.
    let body = json!({ "customer_id": unique("cust_opt"), "plan": trial, "missing_payment_method": "pause" });
    let trialing: Value = app.post_with_key("/v1/subscriptions", &key, &unique("k"), body).await.json().await.unwrap();
    let id = trialing["id"].as_str().unwrap();
    db.execute("SELECT payments.run_billing((SELECT trial_end FROM payments.subscriptions WHERE id = $1))", &[&id])
        .await
        .unwrap();
    let paused = app.get_json(&key, &format!("/v1/subscriptions/{id}")).await;
    assert_eq!((paused["status"].as_str(), paused["missing_payment_method"].as_str()), (Some("paused"), Some("pause")));
}

#[tokio::test]
async fn an_administrators_key_makes_coupons_promotion_codes_tax_rates_and_plan_versions() {
    let app = spawn_app(&[]).await;
    let (_, admin) = api_key(&["payments:read", "payments:write", "payments:admin"]).await;
    let (_, writer) = api_key(&["payments:read", "payments:write"]).await;
    let db = payments_e2e::connect().await;
    let put = |path: String, key: String, body: Value| {
        let app = &app;
        async move { app.send(Method::PUT, &path, Some(&key), Some(body)).await }
    };
    // Tax rates: an administrator's key only; the same again answers it, another rate is refused.
    let rate = unique("vat").to_lowercase();
    let vat = json!({ "display_name": "VAT", "percentage": "20", "inclusive": true });
    let denied = put(format!("/v1/tax_rates/{rate}"), writer.clone(), vat.clone()).await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN, "a write key does not set prices");
    for _ in 0..2 {
        let made: Value = put(format!("/v1/tax_rates/{rate}"), admin.clone(), vat.clone()).await.json().await.unwrap();
        assert_eq!((made["object"].as_str(), made["percentage"].as_str()), (Some("tax_rate"), Some("20")), "{made}");
    }
    let other = put(
        format!("/v1/tax_rates/{rate}"),
        admin.clone(),
        json!({ "display_name": "VAT", "percentage": 19, "inclusive": true }),
    )
    .await;
    assert_eq!(error_code(other).await.0, StatusCode::CONFLICT);
    // A coupon and a promotion code for it, made inactive then active.
    let coupon = unique("QUARTER");
    let made: Value = put(
        format!("/v1/coupons/{coupon}"),
        admin.clone(),
        json!({ "percent_off": "25", "duration": "repeating", "duration_in_periods": 3 }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!((made["percent_off"].as_str(), made["duration_in_periods"].as_i64()), (Some("25"), Some(3)), "{made}");
    let precise =
        put(format!("/v1/coupons/{}", unique("C")), admin.clone(), json!({ "amount_off": "1.001", "currency": "usd" }))
            .await;
    assert_eq!(error_code(precise).await.0, StatusCode::BAD_REQUEST, "more decimals than the dollar has");
    let promo = unique("SPRING");
    let body = json!({ "coupon": coupon, "max_redemptions": 5, "active": false });
    let made: Value = put(format!("/v1/promotion_codes/{promo}"), admin.clone(), body).await.json().await.unwrap();
    assert_eq!((made["coupon"].as_str(), made["active"].as_bool()), (Some(coupon.as_str()), Some(false)), "{made}");
    // A plan's new price as version 2, and its subscriber moved to it.
    let plan = unique_code("catalog");
    db.execute("SELECT payments.create_plan($1, 'USD', 10, 'month', trial_days => 14)", &[&plan]).await.unwrap();
    let create = "SELECT id FROM payments.create_subscription($1, $2, $3, 'pm_card_visa')";
    let sub: String = db.query_one(create, &[&unique("k"), &unique("cust_cat"), &plan]).await.unwrap().get(0);
    let coupon_path = format!("/v1/subscriptions/{sub}/coupon");
    let inactive = app.send(Method::POST, &coupon_path, Some(&writer), Some(json!({ "code": promo }))).await;
    assert_eq!(error_code(inactive).await.0, StatusCode::CONFLICT, "an inactive code");
    put(
        format!("/v1/promotion_codes/{promo}"),
        admin.clone(),
        json!({ "coupon": coupon, "max_redemptions": 5, "active": true }),
    )
    .await;
    let applied: Value =
        app.send(Method::POST, &coupon_path, Some(&writer), Some(json!({ "code": promo }))).await.json().await.unwrap();
    assert_eq!(applied["coupon"], coupon.as_str(), "{applied}");
    let versions = format!("/v1/plans/{plan}/versions");
    for _ in 0..2 {
        let v: Value = app
            .post_with_key(&versions, &admin, &unique("v"), json!({ "version": 2, "amount": "12.00" }))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!((v["version"].as_i64(), v["amount"].as_str()), (Some(2), Some("12.00")), "{v}");
    }
    let conflict = app.post_with_key(&versions, &admin, &unique("v"), json!({ "version": 2, "amount": "13" })).await;
    assert_eq!(error_code(conflict).await.0, StatusCode::CONFLICT);
    let migrations = format!("/v1/plans/{plan}/migrations");
    for scheduled in [1, 0] {
        let m: Value = app
            .post_with_key(&migrations, &admin, &unique("m"), json!({ "from_version": 1, "to_version": 2 }))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(m["scheduled"], scheduled, "{m}");
    }
    let writes =
        app.post_with_key(&migrations, &writer, &unique("m"), json!({ "from_version": 1, "to_version": 2 })).await;
    assert_eq!(writes.status(), StatusCode::FORBIDDEN);
    let preview = app.get_json(&writer, &format!("/v1/subscriptions/{sub}/invoice_preview")).await;
    assert_eq!(
        (preview["subtotal"].as_str(), preview["discount"].as_str()),
        (Some("12.00"), Some("3.00")),
        "{preview}"
    );
}

#[tokio::test]
async fn a_credit_note_refunds_a_paid_invoice_through_the_provider_and_the_invoice_shows_it() {
    let app = spawn_app(&["--reconcile-min-age-ms", "0", "--reconcile-interval-ms", "100"]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let db = payments_e2e::connect().await;
    let plan = unique_code("refunded");
    db.execute("SELECT payments.create_plan($1, 'USD', 15, 'month', trial_days => 1)", &[&plan]).await.unwrap();
    let customer = unique("cust_cn");
    let (_, own_key) = payments_e2e::api_key_for(&["payments:read", "payments:write"], &customer).await;
    let create =
        "SELECT id FROM payments.create_subscription($1, $2, $3, 'pm_card_visa', at => now() - interval '2 days')";
    let sub: String = db.query_one(create, &[&unique("k"), &customer, &plan]).await.unwrap().get(0);
    let invoice = renew(&db, &sub).await;
    app.get_until(&key, &format!("/v1/invoices/{invoice}"), |i| i["status"] == "paid").await;

    let body = json!({ "invoice_id": invoice, "amount": "5.00", "reason": "product_unsatisfactory", "refund": true });
    let idem = unique("cn");
    let denied = app.post_with_key("/v1/credit_notes", &own_key, &idem, body.clone()).await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN, "a customer does not credit itself");
    let r = app.post_with_key("/v1/credit_notes", &key, &idem, body.clone()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let note: Value = r.json().await.unwrap();
    assert_eq!((note["amount"].as_str(), note["method"].as_str()), (Some("5.00"), Some("refund")), "{note}");
    let again = app.post_with_key("/v1/credit_notes", &key, &idem, body).await;
    assert_eq!((again.status(), again.headers()["idempotent-replayed"].to_str().unwrap()), (StatusCode::OK, "true"));
    // The refund goes through the provider, and the invoice shows the note.
    let refund = note["refund_id"].as_str().unwrap();
    let refunded = app.get_until(&key, &format!("/v1/refunds/{refund}"), |r| r["status"] == "succeeded").await;
    assert_eq!(refunded["amount"], "5.00", "{refunded}");
    let shown = app.get_json(&key, &format!("/v1/invoices/{invoice}")).await;
    assert_eq!(
        (shown["credited"].as_str(), shown["credit_notes"][0]["number"].clone()),
        (Some("5.00"), note["number"].clone())
    );
    let too_much = json!({ "invoice_id": invoice, "amount": "10.01", "reason": "duplicate" });
    let refused = app.post_with_key("/v1/credit_notes", &key, &unique("cn"), too_much).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["error"]["code"], "amount_too_large", "{refused}");
    let page = app
        .send(Method::GET, &format!("/v1/credit_notes/{}.html", note["id"].as_str().unwrap()), Some(&own_key), None)
        .await;
    let page = page.text().await.unwrap();
    assert!(page.contains(note["number"].as_str().unwrap()) && page.contains("$5.00"), "{page}");
}

// ---- renewals and dunning ------------------------------------------------------

/// run_billing at the end of a subscription's period (the clock moved there), which makes its
/// renewal invoice a draft, then at the end of the draft window, when it is finalized and
/// charged; the invoice.
async fn renew(db: &tokio_postgres::Client, sub: &str) -> String {
    let end: String = db
        .query_one("SELECT current_period_end::text FROM payments.subscriptions WHERE id = $1", &[&sub])
        .await
        .unwrap()
        .get(0);
    let newest = "SELECT id, status FROM payments.invoices WHERE subscription_id = $1
                  ORDER BY period_number DESC, id DESC LIMIT 1";
    db.execute("SELECT payments.run_billing($1::text::timestamptz)", &[&end]).await.unwrap();
    let draft = db.query_one(newest, &[&sub]).await.unwrap();
    assert_eq!(draft.get::<_, &str>(1), "draft", "a renewal waits out its draft window");
    // A unit that met another billing run (the gateways of earlier tests run theirs every few
    // milliseconds; on Citus, numbering an invoice can deadlock with one) is left to the next run
    // with the same `at`, as the timer's next tick would: a few runs, then it must be final.
    let invoice: String = draft.get(0);
    let mut status = String::from("draft");
    for _ in 0..5 {
        db.execute("SELECT payments.run_billing($1::text::timestamptz + interval '1 hour')", &[&end]).await.unwrap();
        status = db.query_one(newest, &[&sub]).await.unwrap().get(1);
        if status != "draft" {
            break;
        }
    }
    assert_ne!(status, "draft", "{invoice} final");
    invoice
}

#[tokio::test]
async fn subscriptions_renew_through_the_provider_and_a_declined_card_goes_through_dunning() {
    // The reconciler charges each invoice's payment as soon as run_billing makes it.
    let app = spawn_app(&["--reconcile-min-age-ms", "0", "--reconcile-interval-ms", "100"]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let db = payments_e2e::connect().await;
    let plan = unique_code("monthly");
    db.execute("SELECT payments.create_plan($1, 'USD', 15, 'month', trial_days => 1)", &[&plan]).await.unwrap();
    let subscribe = |pm: &'static str| {
        let (db, plan) = (&db, plan.clone());
        async move {
            let create = "SELECT id FROM payments.create_subscription($1, $2, $3, $4, at => now() - interval '2 days')";
            db.query_one(create, &[&unique("k"), &unique("cust_bill"), &plan, &pm]).await.unwrap().get::<_, String>(0)
        }
    };
    let invoice_of = |sub: String, period: i32| {
        let db = &db;
        async move {
            let sql = "SELECT id FROM payments.invoices WHERE subscription_id = $1 AND period_number = $2";
            db.query_one(sql, &[&sub, &period]).await.unwrap().get::<_, String>(0)
        }
    };
    // Three periods, the clock moved to each period's end; each invoice paid at the provider.
    let sub = subscribe("pm_card_visa").await;
    for period in 1..=3 {
        let invoice = renew(&db, &sub).await;
        assert_eq!(invoice, invoice_of(sub.clone(), period).await);
        let paid = app.get_until(&key, &format!("/v1/invoices/{invoice}"), |i| i["status"] == "paid").await;
        assert_eq!((paid["status"].as_str(), paid["total"].as_str()), (Some("paid"), Some("15.00")), "{paid}");
        assert_eq!(paid["lines"][0]["kind"], "recurring");
        let seen = app.get_json(&key, &format!("/v1/subscriptions/{sub}")).await;
        assert_eq!(seen["status"], "active", "period {period}: {seen}");
        // Printable: the invoice, and the receipt of the payment that paid it.
        let page = app.send(Method::GET, &format!("/v1/invoices/{invoice}.html"), Some(&key), None).await;
        assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
        let page = page.text().await.unwrap();
        assert!(page.contains(paid["number"].as_str().unwrap()) && page.contains("$15.00"), "{page}");
        let payment = paid["payment_id"].as_str().unwrap();
        let receipt = app.send(Method::GET, &format!("/v1/payments/{payment}/receipt.html"), Some(&key), None).await;
        let receipt = receipt.text().await.unwrap();
        assert!(
            receipt.contains("Receipt")
                && receipt.contains("$15.00")
                && receipt.contains(paid["number"].as_str().unwrap())
        );
    }

    // A declined card: past_due, three retries on the schedule, then unpaid; a new card recovers it.
    let declined = subscribe("pm_card_chargeDeclined").await;
    renew(&db, &declined).await;
    let path = format!("/v1/subscriptions/{declined}");
    let past_due = app.get_until(&key, &path, |s| s["status"] == "past_due").await;
    assert_eq!(past_due["status"], "past_due", "{past_due}");
    let attempts = |sub: String| {
        let db = &db;
        async move {
            // The attempts made, once the latest has failed at the provider.
            let sql = "SELECT i.attempt_count FROM payments.invoices i
                       JOIN payments.payments p ON p.customer_id = i.customer_id AND p.id = i.payment_id
                       WHERE i.subscription_id = $1 AND i.period_number = 1 AND p.status = 'failed'";
            db.query_opt(sql, &[&sub]).await.unwrap().map_or(0, |r| r.get::<_, i32>(0))
        }
    };
    // Retries 1, 3 and 5 days after each attempt, each attempt at the time run_billing was given.
    for (retry, days) in [1, 4, 9].iter().enumerate() {
        db.execute(&format!("SELECT payments.run_billing(now() + interval '{days} days')"), &[]).await.unwrap();
        for _ in 0..100 {
            if attempts(declined.clone()).await == retry as i32 + 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(attempts(declined.clone()).await, retry as i32 + 2, "retry {retry} failed at the provider");
    }
    assert_eq!(app.get_json(&key, &path).await["status"], "unpaid");
    db.execute("SELECT payments.set_subscription_payment_method($1, 'pm_card_visa')", &[&declined]).await.unwrap();
    db.execute("SELECT payments.run_billing(now() + interval '9 days')", &[]).await.unwrap();
    let recovered = app.get_until(&key, &path, |s| s["status"] == "active").await;
    assert_eq!(recovered["status"], "active", "{recovered}");
}

#[tokio::test]
async fn a_renewal_waiting_on_3_d_secure_is_past_due_and_its_retry_cancels_it_at_the_provider() {
    let app = spawn_app(&["--reconcile-min-age-ms", "0", "--reconcile-interval-ms", "100"]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let db = payments_e2e::connect().await;
    let plan = unique_code("tds");
    db.execute("SELECT payments.create_plan($1, 'USD', 1000, 'month', trial_days => 1)", &[&plan]).await.unwrap();
    let create = "SELECT id FROM payments.create_subscription($1, $2, $3, 'pm_card_authenticationRequired',
                  at => now() - interval '2 days')";
    let row = db.query_one(create, &[&unique("k"), &unique("cust_3ds"), &plan]).await.unwrap();
    let sub: String = row.get(0);
    renew(&db, &sub).await;
    // The sandbox answers requires_action: the plan is no longer granted for free past the grace period.
    let path = format!("/v1/subscriptions/{sub}");
    let past_due = app.get_until(&key, &path, |s| s["status"] == "past_due").await;
    assert_eq!(past_due["status"], "past_due", "{past_due}");
    let invoice = "SELECT payment_id, next_attempt_at::text FROM payments.invoices WHERE subscription_id = $1";
    let row = db.query_one(invoice, &[&sub]).await.unwrap();
    let (waiting, next): (String, String) = (row.get(0), row.get(1));
    let waiting_payment = app.get_json(&key, &format!("/v1/payments/{waiting}")).await;
    assert_eq!(waiting_payment["status"], "requires_action");
    // The retry on the schedule replaces it; the waiting one is canceled at the provider.
    db.execute("SELECT payments.run_billing($1::text::timestamptz)", &[&next]).await.unwrap();
    let canceled = app.get_until(&key, &format!("/v1/payments/{waiting}"), |p| p["status"] == "canceled").await;
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    let attempts: i32 = db
        .query_one("SELECT attempt_count FROM payments.invoices WHERE subscription_id = $1", &[&sub])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 2);
}

#[tokio::test]
async fn the_billing_timer_bills_every_customer_while_one_cannot_be_billed() {
    let app = spawn_app(&["--billing-interval-ms", "200"]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let db = payments_e2e::connect().await;
    let meter = unique_code("huge");
    db.execute("SELECT payments.create_meter($1, 'sum')", &[&meter]).await.unwrap();
    let metered = json!([{ "meter": meter, "price": { "mode": "per_unit", "tiers": [{ "unit_amount_minor": 1 }] } }]);
    let plan = unique_code("huge_plan");
    db.execute(
        "SELECT payments.create_plan($1, 'USD', 0, 'day', metered => $2::text::jsonb)",
        &[&plan, &metered.to_string()],
    )
    .await
    .unwrap();
    let subscribe = |customer: String| {
        let (db, plan) = (&db, plan.clone());
        async move {
            let create = "SELECT id FROM payments.create_subscription($1, $2, $3, at => now() - interval '25 hours')";
            db.query_one(create, &[&unique("k"), &customer, &plan]).await.unwrap().get::<_, String>(0)
        }
    };
    let (hostile, other) = (unique("cust_hostile"), unique("cust_other"));
    let when = "SELECT to_char(now() AT TIME ZONE 'UTC' - interval '2 hours', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')";
    let occurred_at: String = db.query_one(when, &[]).await.unwrap().get(0);
    let usage = |quantity: &str| json!({ "customer_id": hostile, "meter": meter, "quantity": quantity, "occurred_at": occurred_at });
    // Usage recorded before a subscription bills its meter: two events that fit, together do not.
    for _ in 0..2 {
        let r = app.post_with_key("/v1/usage", &key, &unique("u"), usage("900000000000")).await;
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let bad = subscribe(hostile.clone()).await;
    let good = subscribe(other.clone()).await;
    // From now on the door is shut: no more usage that the next invoice could not charge.
    for quantity in ["999999999999999", "1"] {
        let refused = app.post_with_key("/v1/usage", &key, &unique("u"), usage(quantity)).await;
        assert_eq!(client_error(refused, "huge usage").await, (400, "amount_too_large".to_string()), "{quantity}");
    }
    // The timer renews the other customer's subscription and records the failure on the hostile one.
    let failure = "SELECT sqlstate FROM payments.billing_failures WHERE subscription_id = $1";
    let mut sqlstate = None;
    for _ in 0..100 {
        let period: i32 = db
            .query_one("SELECT period_number FROM payments.subscriptions WHERE id = $1", &[&good])
            .await
            .unwrap()
            .get(0);
        sqlstate = db.query_opt(failure, &[&bad]).await.unwrap().map(|r| r.get::<_, String>(0));
        if period >= 2 && sqlstate.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sqlstate.as_deref(), Some("PM104"));
    // Apps see it on the subscription itself.
    let seen = app.get_json(&key, &format!("/v1/subscriptions/{bad}")).await;
    assert_eq!(seen["billing_error"]["sqlstate"], "PM104", "{seen}");
    let period: i32 =
        db.query_one("SELECT period_number FROM payments.subscriptions WHERE id = $1", &[&good]).await.unwrap().get(0);
    assert!(period >= 2, "the other customer was renewed");
}

// ---- events out to apps ------------------------------------------------------

/// What an app's webhook endpoint received: each request's headers and body, in order.
#[derive(Clone, Default)]
struct Receiver {
    requests: std::sync::Arc<std::sync::Mutex<Vec<(Value, String, bool)>>>,
    /// How many requests to refuse (500) before answering 204.
    failures_left: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Receiver {
    /// Listens on a free port; returns the receiver and its URL.
    async fn start(failures: usize) -> (Receiver, String) {
        let receiver = Receiver::default();
        receiver.failures_left.store(failures, std::sync::atomic::Ordering::SeqCst);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/payments", listener.local_addr().unwrap());
        let state = receiver.clone();
        let router = axum::Router::new().route(
            "/hooks/payments",
            axum::routing::post(|headers: axum::http::HeaderMap, body: String| async move {
                let failing = state
                    .failures_left
                    .fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, |n| {
                        n.checked_sub(1)
                    })
                    .is_ok();
                let headers: serde_json::Map<String, Value> = headers
                    .iter()
                    .filter(|(name, _)| name.as_str().starts_with("webhook-"))
                    .map(|(name, value)| (name.to_string(), json!(value.to_str().unwrap())))
                    .collect();
                state.requests.lock().unwrap().push((Value::Object(headers), body, !failing));
                if failing {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (receiver, url)
    }

    /// The requests answered 204, in the order they came.
    fn accepted(&self) -> Vec<(Value, String)> {
        let requests = self.requests.lock().unwrap();
        requests.iter().filter(|(_, _, ok)| *ok).map(|(h, b, _)| (h.clone(), b.clone())).collect()
    }
}

/// The connection string of every node of the test database: its own, or on Citus each active node's.
async fn node_urls(db: &tokio_postgres::Client) -> Vec<String> {
    if !payments_e2e::on_citus(db).await {
        return vec![payments_e2e::database_url()];
    }
    let nodes = "SELECT nodename, nodeport, current_database()::text FROM pg_dist_node WHERE isactive";
    let rows = db.query(nodes, &[]).await.unwrap();
    rows.iter()
        .map(|r| {
            format!(
                "host={} port={} user=postgres dbname={}",
                r.get::<_, String>(0),
                r.get::<_, i32>(1),
                r.get::<_, String>(2)
            )
        })
        .collect()
}

/// The payloads of `accepted` deliveries, each verified by the official `standardwebhooks`
/// package with the endpoint's `secret` (any that does not verify fails the test).
async fn verified_by_standardwebhooks(secret: &str, accepted: &[(Value, String)]) -> Vec<Value> {
    let python = std::env::var("PAYMENTS_PYTHON").expect("PAYMENTS_PYTHON is set by `make test`");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/oracles/verify_standard_webhooks.py");
    let deliveries: Vec<Value> = accepted.iter().map(|(h, b)| json!({ "headers": h, "body": b })).collect();
    let mut oracle = tokio::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = json!({ "secret": secret, "deliveries": deliveries }).to_string();
    tokio::io::AsyncWriteExt::write_all(&mut oracle.stdin.take().unwrap(), input.as_bytes()).await.unwrap();
    let out = oracle.wait_with_output().await.unwrap();
    assert!(out.status.success(), "standardwebhooks refused a delivery: {}", String::from_utf8_lossy(&out.stderr));
    let verified: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verified.len(), accepted.len());
    verified
}

#[tokio::test]
async fn budget_marks_low_balance_and_expiring_credits_reach_an_endpoint_verified_by_standardwebhooks() {
    let db = payments_e2e::connect().await;
    payments_e2e::remove_webhook_endpoints().await;
    let app = spawn_app(&["--delivery-interval-ms", "100", "--webhook-allowed-networks", "127.0.0.0/8,::1/128"]).await;
    let (_, key) = api_key(&["payments:read", "payments:write", "webhooks:manage"]).await;
    let (receiver, url) = Receiver::start(0).await;
    let body = json!({ "url": url, "event_types": ["spend_limit.*", "credits.expiring", "balance.low"] });
    let endpoint: Value =
        app.send(Method::POST, "/v1/webhook_endpoints", Some(&key), Some(body)).await.json().await.unwrap();
    let secret = endpoint["secret"].as_str().unwrap().to_string();
    let customer = unique("cust_marks");
    db.execute(
        "SELECT payments.grant_credits($1, $2, 100, 'usd', now() + interval '3 days')",
        &[&unique("g"), &customer],
    )
    .await
    .unwrap();
    db.execute("SELECT payments.set_spend_limit($1, 10, 'usd', 'day')", &[&customer]).await.unwrap();
    db.execute("SELECT payments.set_balance_alert($1, 'usd', 92)", &[&customer]).await.unwrap();
    // 6.00 then 4.00 of a 10.00 budget: past 50 %, then past 80 and 100 %; 90.00 left is below 92.00.
    for (amount, request) in [("6", "m1"), ("4", "m2")] {
        let allowed: bool = db
            .query_one(
                "SELECT allowed FROM payments.reserve($1, $2::text::numeric, 'usd', $3)",
                &[&customer, &amount, &request],
            )
            .await
            .unwrap()
            .get(0);
        assert!(allowed);
    }
    db.execute("SELECT payments.run_billing()", &[]).await.unwrap();
    for _ in 0..100 {
        if receiver.accepted().len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let verified = verified_by_standardwebhooks(&secret, &receiver.accepted()).await;
    let mut told: Vec<String> = verified
        .iter()
        .filter(|p| p["data"]["customer_id"] == customer.as_str())
        .map(|p| {
            format!(
                "{} {}",
                p["type"].as_str().unwrap(),
                p["data"]["percent"]
                    .as_i64()
                    .map_or(p["data"]["available"].as_str().unwrap_or("").to_string(), |n| n.to_string())
            )
        })
        .collect();
    told.sort();
    assert_eq!(
        told,
        [
            "balance.low 90.00",
            "credits.expiring ",
            "spend_limit.reached 100",
            "spend_limit.reached 50",
            "spend_limit.reached 80"
        ],
        "{verified:?}"
    );
}

#[tokio::test]
async fn an_endpoint_that_fails_and_recovers_receives_every_event_in_order_verified_by_standardwebhooks() {
    let db = payments_e2e::connect().await;
    // This test's endpoint is the only one enabled; failed attempts come back after a second.
    payments_e2e::remove_webhook_endpoints().await;
    db.execute("SELECT payments.set_webhook_retries('{1 second, 1 second, 1 second, 1 second, 1 second}')", &[])
        .await
        .unwrap();
    let app = spawn_app(&["--delivery-interval-ms", "100", "--webhook-allowed-networks", "127.0.0.0/8,::1/128"]).await;
    let (_, key) = api_key(&["payments:read", "payments:write", "webhooks:manage"]).await;
    let (receiver, url) = Receiver::start(3).await;
    let created = app
        .send(
            Method::POST,
            "/v1/webhook_endpoints",
            Some(&key),
            Some(json!({ "url": url, "event_types": ["payment.*", "refund.*"] })),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let endpoint: Value = created.json().await.unwrap();
    let secret = endpoint["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{endpoint}");
    let listed = app.get_json(&key, "/v1/webhook_endpoints").await;
    let mine = listed["data"].as_array().unwrap().iter().find(|e| e["id"] == endpoint["id"]).unwrap().clone();
    assert!(mine.get("secret").is_none() && mine["enabled"] == true, "{mine}");
    let refused =
        app.send(Method::POST, "/v1/webhook_endpoints", Some(&key), Some(json!({ "url": "gopher://x" }))).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);

    // NOTIFY payments_events announces each change as it commits, on the node that ran it
    // (on Citus a delegated call runs on a worker: a client listens on every node), once
    // an administrator turned notifications on (they make commits wait for each other).
    let (notes_tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
    let mut listeners = Vec::new();
    for url in node_urls(&db).await {
        let (listener, mut connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        let notes_tx = notes_tx.clone();
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = futures::StreamExt::next(&mut messages).await {
                if let tokio_postgres::AsyncMessage::Notification(n) = message {
                    let _ = notes_tx.send(n.payload().to_string());
                }
            }
        });
        listener.batch_execute("LISTEN payments_events").await.unwrap();
        listeners.push(listener);
    }
    db.execute("SELECT payments.set_event_notifications(false)", &[]).await.unwrap();
    let quiet: String = db
        .query_one("SELECT id FROM payments.create_payment($1, 'cust_quiet', 1, 'USD')", &[&unique("quiet")])
        .await
        .unwrap()
        .get(0);
    db.execute("SELECT payments.set_event_notifications(true)", &[]).await.unwrap();

    let payment = paid(&app, &key, "pm_card_visa").await;
    let payment_id = payment["id"].as_str().unwrap();
    let refund = app
        .send(Method::POST, "/v1/refunds", Some(&key), Some(json!({ "payment": payment_id, "amount": "4.00" })))
        .await;
    let refund: Value = refund.json().await.unwrap();
    let refund_id = refund["id"].as_str().unwrap();
    app.get_until(&key, &format!("/v1/refunds/{refund_id}"), |r| r["status"] == "succeeded").await;
    let note = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let note: Value = serde_json::from_str(&notes.recv().await.unwrap()).unwrap();
            // Notes come in commit order: one for the payment made while they were off would be here first.
            assert_ne!(note["id"], quiet.as_str(), "a NOTIFY while notifications were off");
            if note["id"] == payment_id && note["type"] == "payment.succeeded" {
                return note;
            }
        }
    })
    .await
    .expect("NOTIFY payments_events for the payment");
    assert_eq!(note["status"], "succeeded");
    // On Citus each node's notes come in its own order: none of the rest may be the quiet payment's either.
    while let Ok(rest) = notes.try_recv() {
        assert!(!rest.contains(quiet.as_str()), "a NOTIFY while notifications were off: {rest}");
    }
    db.execute("SELECT payments.set_event_notifications(false)", &[]).await.unwrap();

    // Every event of the two objects is delivered once the endpoint recovers.
    let outbox =
        "SELECT id, object_id, seq FROM payments.outbox_events WHERE object_id = ANY($1) ORDER BY object_id, seq";
    let expected: Vec<(String, String, i64)> = db
        .query(outbox, &[&vec![payment_id, refund_id]])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(expected.iter().any(|(_, o, _)| o == refund_id) && expected.len() >= 4, "{expected:?}");
    for _ in 0..300 {
        let got: HashSet<String> =
            receiver.accepted().iter().map(|(h, _)| h["webhook-id"].as_str().unwrap().to_string()).collect();
        if expected.iter().all(|(id, _, _)| got.contains(id)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let accepted = receiver.accepted();
    let ids: Vec<&str> = accepted.iter().map(|(h, _)| h["webhook-id"].as_str().unwrap()).collect();
    for (id, _, _) in &expected {
        assert!(ids.contains(&id.as_str()), "event {id} never delivered; delivered: {ids:?}");
    }
    assert!(receiver.requests.lock().unwrap().len() > accepted.len(), "three attempts were refused");
    // Each object's events arrived in their order.
    for object in [payment_id, refund_id] {
        let want: Vec<&str> = expected.iter().filter(|(_, o, _)| o == object).map(|(id, _, _)| id.as_str()).collect();
        let mut got: Vec<&str> = ids.iter().copied().filter(|id| want.contains(id)).collect();
        got.dedup();
        assert_eq!(got, want, "events of {object} out of order");
    }

    // The official package verifies every delivery; the payload names the object and its status.
    let verified = verified_by_standardwebhooks(&secret, &accepted).await;
    let succeeded = verified.iter().find(|p| p["type"] == "payment.succeeded" && p["data"]["id"] == payment_id);
    assert_eq!(succeeded.map(|p| p["data"]["status"].clone()), Some(json!("succeeded")), "{verified:?}");
    assert!(verified.iter().any(|p| p["type"] == "refund.succeeded" && p["data"]["payment_id"] == payment_id));

    // The delivery log shows each delivered, with the refused attempts logged.
    let log = "SELECT count(*) FILTER (WHERE status = 'delivered'), sum(attempts) FROM payments.webhook_delivery_log
               WHERE endpoint_id = $1";
    let row = db.query_one(log, &[&endpoint["id"].as_str().unwrap()]).await.unwrap();
    let (delivered, attempts): (i64, i64) = (row.get(0), row.get(1));
    assert!(delivered as usize >= expected.len() && attempts >= delivered + 3, "{delivered} delivered in {attempts}");
    let removed = app
        .send(Method::DELETE, &format!("/v1/webhook_endpoints/{}", endpoint["id"].as_str().unwrap()), Some(&key), None)
        .await;
    assert_eq!(removed.status(), StatusCode::OK);
    let unknown = app.send(Method::DELETE, "/v1/webhook_endpoints/we_nope", Some(&key), None).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn webhook_endpoints_need_their_own_scope_and_never_reach_an_internal_address() {
    // Nothing internal is allowed: the gateway as it runs in production.
    let app = spawn_app(&["--delivery-interval-ms", "100"]).await;
    let (_, writer) = api_key(&["payments:read", "payments:write"]).await;
    let (_, manager) = api_key(&["webhooks:manage"]).await;
    let endpoint = |url: &str| Some(json!({ "url": url, "event_types": ["payment.*"] }));
    // A key that may only write payments cannot add an endpoint (it would receive every customer's events).
    let r =
        app.send(Method::POST, "/v1/webhook_endpoints", Some(&writer), endpoint("https://hooks.example.com/in")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    for url in [
        "http://127.0.0.1/",
        "http://127.1:8080/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://user:pass@127.0.0.1/",
        "http://user:pass@hooks.example.com/",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://10.0.0.8/",
        "http://[fd00::1]/",
        "http://localhost:9/",
    ] {
        let r = app.send(Method::POST, "/v1/webhook_endpoints", Some(&manager), endpoint(url)).await;
        assert_eq!(client_error(r, url).await, (400, "url_forbidden".to_string()), "{url}");
    }
    // Registered behind the gateway's back (an administrator in SQL), or a name that now points
    // inside: the worker refuses when it connects, and the receiver hears nothing.
    payments_e2e::remove_webhook_endpoints().await;
    let db = payments_e2e::connect().await;
    let (receiver, url) = Receiver::start(0).await;
    let by_name = url.replace("127.0.0.1", "localhost");
    let mut ids = Vec::new();
    for url in [&url, &by_name] {
        let row =
            db.query_one("SELECT id FROM payments.add_webhook_endpoint($1, '{payment.*}')", &[url]).await.unwrap();
        ids.push(row.get::<_, String>(0));
    }
    let created = app
        .send(
            Method::POST,
            "/v1/payments",
            Some(&writer),
            Some(json!({ "customer_id": unique("c"), "amount": "1", "currency": "USD" })),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let refused = "SELECT count(DISTINCT endpoint_id) FROM payments.webhook_delivery_attempts
                   WHERE endpoint_id = ANY ($1) AND status_code IS NULL AND error LIKE '%internal address%'";
    let mut endpoints_refused = 0;
    for _ in 0..100 {
        endpoints_refused = db.query_one(refused, &[&ids]).await.unwrap().get::<_, i64>(0);
        if endpoints_refused == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(endpoints_refused, 2, "both deliveries refused before connecting");
    assert!(receiver.requests.lock().unwrap().is_empty(), "nothing reached the internal receiver");
    payments_e2e::remove_webhook_endpoints().await;
}

/// An endpoint that holds every request until `release`, counting them.
async fn slow_endpoint() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>, tokio::sync::watch::Sender<bool>) {
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (release, released) = tokio::sync::watch::channel(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/slow", listener.local_addr().unwrap());
    let counter = received.clone();
    let router = axum::Router::new().route(
        "/hooks/slow",
        axum::routing::post(move || {
            let (counter, mut released) = (counter.clone(), released.clone());
            async move {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = released.wait_for(|r| *r).await;
                StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, received, release)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endpoint_that_answers_slowly_never_delays_another() {
    payments_e2e::remove_webhook_endpoints().await;
    let app = spawn_app(&[
        "--delivery-interval-ms",
        "50",
        "--delivery-timeout-ms",
        "30000",
        "--webhook-allowed-networks",
        "127.0.0.0/8",
    ])
    .await;
    let (_, key) = api_key(&["payments:write", "webhooks:manage"]).await;
    let (slow_url, slow_received, release) = slow_endpoint().await;
    let (fast, fast_url) = Receiver::start(0).await;
    for url in [&slow_url, &fast_url] {
        let r = app
            .send(
                Method::POST,
                "/v1/webhook_endpoints",
                Some(&key),
                Some(json!({ "url": url, "event_types": ["payment.created"] })),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let started = std::time::Instant::now();
    let events = 20;
    for _ in 0..events {
        let body = json!({ "customer_id": unique("c"), "amount": "1", "currency": "USD" });
        assert_eq!(app.send(Method::POST, "/v1/payments", Some(&key), Some(body)).await.status(), StatusCode::CREATED);
    }
    // Every event reaches the fast endpoint while the slow one still holds its first requests.
    let mut delivered = 0;
    for _ in 0..200 {
        delivered = fast.requests.lock().unwrap().len();
        if delivered >= events {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fast_took = started.elapsed();
    let held = slow_received.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(delivered, events, "the fast endpoint got every event");
    assert!((1..=4).contains(&held), "the slow endpoint holds only its own share in flight: {held}");
    println!("a fast endpoint beside one holding every request: {events} events delivered in {fast_took:?}");
    // Released, the slow endpoint gets its events too.
    release.send(true).unwrap();
    for _ in 0..200 {
        if slow_received.load(std::sync::atomic::Ordering::SeqCst) >= events {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(slow_received.load(std::sync::atomic::Ordering::SeqCst), events);
    payments_e2e::remove_webhook_endpoints().await;
}

#[tokio::test]
async fn a_key_bound_to_one_customer_never_reaches_another_customers_objects() {
    let app = spawn_app(&[]).await;
    let (_, platform) = api_key(&["payments:read", "payments:write"]).await;
    let db = payments_e2e::connect().await;
    let plan = unique_code("bound");
    db.execute("SELECT payments.create_plan($1, 'USD', 0, 'month', features => '{\"calls\": 10}')", &[&plan])
        .await
        .unwrap();
    let (theirs, mine) = (unique("cust_a"), unique("cust_b"));
    // Another customer's payment (paid) and subscription, made with a platform key.
    let body = json!({ "customer_id": theirs, "amount": "5", "currency": "USD", "payment_method": "pm_card_visa" });
    let their_payment: Value =
        app.post_with_key("/v1/payments", &platform, &unique("k"), body).await.json().await.unwrap();
    let their_payment = their_payment["id"].as_str().unwrap().to_string();
    let body = json!({ "customer_id": theirs, "plan": plan });
    let their_sub: Value =
        app.post_with_key("/v1/subscriptions", &platform, &unique("k"), body).await.json().await.unwrap();
    let their_sub = their_sub["id"].as_str().unwrap().to_string();
    let (_, key) = api_key_for(&["payments:read", "payments:write", "webhooks:manage", "payments:admin"], &mine).await;

    // Named by id, another customer's object is missing (404), whatever the route.
    for (method, path, body) in [
        (Method::GET, format!("/v1/payments/{their_payment}"), None),
        (Method::GET, format!("/v1/payments/{their_payment}/events"), None),
        (Method::GET, format!("/v1/payments/{their_payment}/receipt"), None),
        (Method::GET, format!("/v1/payments/{their_payment}/receipt.html"), None),
        (Method::POST, format!("/v1/payments/{their_payment}/capture"), None),
        (Method::POST, format!("/v1/payments/{their_payment}/cancel"), None),
        (Method::POST, "/v1/refunds".to_string(), Some(json!({ "payment": their_payment }))),
        (Method::GET, format!("/v1/refunds?payment={their_payment}"), None),
        (Method::GET, format!("/v1/disputes?payment={their_payment}"), None),
        (Method::GET, format!("/v1/subscriptions/{their_sub}"), None),
        (Method::POST, format!("/v1/subscriptions/{their_sub}/cancel"), None),
        (Method::POST, format!("/v1/subscriptions/{their_sub}/pause"), None),
        (Method::POST, format!("/v1/subscriptions/{their_sub}/change_plan"), Some(json!({ "plan": plan }))),
        (Method::GET, format!("/v1/customers/{theirs}/entitlements"), None),
        (
            Method::POST,
            format!("/v1/customers/{theirs}/consume"),
            Some(json!({ "feature": "calls", "quantity": "1", "request_id": unique("r") })),
        ),
        (
            Method::GET,
            format!("/v1/customers/{theirs}/usage?meter=m&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z"),
            None,
        ),
    ] {
        let r = app.send(method.clone(), &path, Some(&key), body).await;
        assert_eq!(client_error(r, &path).await, (404, "resource_missing".to_string()), "{method} {path}");
    }
    // Naming another customer in a request, or a platform-wide route: refused (403).
    for (method, path, body) in [
        (Method::POST, "/v1/payments", Some(json!({ "customer_id": theirs, "amount": "1", "currency": "USD" }))),
        (Method::POST, "/v1/subscriptions", Some(json!({ "customer_id": theirs, "plan": plan }))),
        (Method::POST, "/v1/usage", Some(json!({ "customer_id": theirs, "meter": "m", "quantity": "1" }))),
        (Method::GET, &*format!("/v1/payments?customer_id={theirs}"), None),
        (Method::GET, &*format!("/v1/subscriptions?customer_id={theirs}"), None),
        (Method::GET, "/v1/refunds", None),
        (Method::GET, "/v1/plans", None),
        (Method::GET, "/v1/webhook_endpoints", None),
        (
            Method::POST,
            "/v1/reconciliations",
            Some(json!({ "from": "2026-12-01T00:00:00Z", "to": "2026-12-02T00:00:00Z" })),
        ),
    ] {
        let r = app.send(method.clone(), path, Some(&key), body).await;
        assert_eq!(client_error(r, path).await, (403, "customer_bound".to_string()), "{method} {path}");
    }
    // A batch naming another customer is refused whole, even beside an event whose number a
    // JSON value cannot hold (1e400): nothing is recorded for the other customer.
    let meter = unique_code("bound_m");
    db.execute("SELECT payments.create_meter($1, 'sum')", &[&meter]).await.unwrap();
    let batch = format!(
        r#"{{"events": [{{"idempotency_key": "k1", "customer_id": "{theirs}", "meter": "{meter}", "quantity": "1"}},
                        {{"idempotency_key": "k2", "customer_id": "{mine}", "meter": "{meter}", "quantity": 1e400}}]}}"#
    );
    let r = app.http.post(format!("{}/v1/usage", app.url)).bearer_auth(&key).header("content-type", "application/json");
    let r = r.body(batch).send().await.unwrap();
    assert_eq!(client_error(r, "batch").await, (403, "customer_bound".to_string()), "the batch is refused whole");
    let recorded: i64 = db
        .query_one("SELECT count(*) FROM payments.usage_events WHERE customer_id = $1", &[&theirs])
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, 0, "no usage recorded for another customer");
    // Its own customer's: as any key.
    let body = json!({ "customer_id": mine, "amount": "2", "currency": "USD" });
    let own = app.post_with_key("/v1/payments", &key, &unique("k"), body).await;
    assert_eq!(own.status(), StatusCode::CREATED);
    let own: Value = own.json().await.unwrap();
    let fetched = app.get_json(&key, &format!("/v1/payments/{}", own["id"].as_str().unwrap())).await;
    assert_eq!(fetched["customer_id"], mine.as_str());
    let listed = app.get_json(&key, "/v1/payments").await;
    let customers: Vec<&str> =
        listed["data"].as_array().unwrap().iter().map(|p| p["customer_id"].as_str().unwrap()).collect();
    assert_eq!(customers, vec![mine.as_str()], "an unfiltered list is its customer's");
}

#[tokio::test]
async fn plans_are_listed_and_fetched_over_http() {
    let app = spawn_app(&[]).await;
    let (_, key) = api_key(&["payments:read"]).await;
    let db = payments_e2e::connect().await;
    let code = unique_code("plan");
    db.execute("SELECT payments.create_plan($1, 'EUR', 9.90, 'month', features => '{\"seats\": 3}')", &[&code])
        .await
        .unwrap();
    let plan = app.get_json(&key, &format!("/v1/plans/{code}")).await;
    assert_eq!(
        (plan["object"].as_str(), plan["amount"].as_str(), plan["amount_minor"].as_i64(), plan["active"].as_bool()),
        (Some("plan"), Some("9.90"), Some(990), Some(true)),
        "{plan}"
    );
    assert_eq!(plan["features"]["seats"], 3);
    let all = app.get_json(&key, "/v1/plans").await;
    assert!(all["data"].as_array().unwrap().iter().any(|p| p["code"] == code.as_str()), "{all}");
    let missing = app.send(Method::GET, "/v1/plans/no_such_plan", Some(&key), None).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_past_the_threshold_is_invoiced_once_under_ten_concurrent_runs_and_paid_at_the_provider() {
    let app = spawn_app(&["--reconcile-min-age-ms", "0", "--reconcile-interval-ms", "100"]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let db = payments_e2e::connect().await;
    let meter = unique_code("calls");
    let plan = unique_code("thr");
    db.execute("SELECT payments.create_meter($1, 'sum')", &[&meter]).await.unwrap();
    let metered = json!([{ "meter": meter, "price": { "mode": "per_unit", "tiers": [{ "unit_amount_minor": 2 }] } }]);
    db.execute(
        "SELECT payments.create_plan($1, 'USD', 5, 'month', metered => $2::text::jsonb, usage_threshold => 10)",
        &[&plan, &metered.to_string()],
    )
    .await
    .unwrap();
    let customer = unique("cust_thr");
    let create =
        "SELECT id FROM payments.create_subscription($1, $2, $3, 'pm_card_visa', at => now() - interval '3 days')";
    let sub: String = db.query_one(create, &[&unique("k"), &customer, &plan]).await.unwrap().get(0);
    app.get_until(&key, &format!("/v1/subscriptions/{sub}"), |s| s["status"] == "active").await;
    // 600 calls at 2¢: 12.00, past the 10.00 threshold.
    let usage = json!({ "customer_id": customer, "meter": meter, "quantity": "600" });
    assert_eq!(app.send(Method::POST, "/v1/usage", Some(&key), Some(usage)).await.status(), StatusCode::CREATED);
    let runs = (0..10).map(|_| {
        tokio::spawn(async move {
            let db = payments_e2e::connect().await;
            db.execute("SELECT payments.run_billing(now())", &[]).await.unwrap();
        })
    });
    futures::future::join_all(runs).await.into_iter().for_each(|r| r.unwrap());
    let threshold = "SELECT id, total_minor FROM payments.invoices WHERE subscription_id = $1 AND kind = 'threshold'";
    let rows = db.query(threshold, &[&sub]).await.unwrap();
    assert_eq!(rows.len(), 1, "one threshold invoice");
    let (invoice, total): (String, i64) = (rows[0].get(0), rows[0].get(1));
    assert_eq!(total, 1200);
    let paid = app.get_until(&key, &format!("/v1/invoices/{invoice}"), |i| i["status"] == "paid").await;
    assert_eq!((paid["status"].as_str(), paid["total"].as_str()), (Some("paid"), Some("12.00")), "{paid}");
    let charges: i64 = db
        .query_one(
            "SELECT count(*) FROM payments.payments WHERE customer_id = $1 AND metadata ->> 'invoice_id' = $2",
            &[&customer, &invoice],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(charges, 1, "charged once");
}
