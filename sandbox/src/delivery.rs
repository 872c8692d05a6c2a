//! Webhook delivery: each event is POSTed on its own task after its delay,
//! signed with `Stripe-Signature`, and retried with backoff until a 2xx.

use std::time::Duration;

use payments_core::webhook::stripe;
use serde_json::{json, Value};

#[derive(Clone)]
pub struct WebhookTarget {
    pub url: String,
    pub secret: String,
}

pub struct Delivery {
    target: Option<WebhookTarget>,
    http: reqwest::Client,
}

const ATTEMPTS: u32 = 8;

pub fn event(kind: &str, object: Value, idempotency_key: Option<String>) -> Value {
    json!({
        "id": super::intents::new_id("evt"), "object": "event", "api_version": crate::API_VERSION,
        "created": unix_now(), "type": kind, "livemode": false, "pending_webhooks": 1,
        "data": { "object": object },
        "request": { "id": null, "idempotency_key": idempotency_key },
    })
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl Delivery {
    pub fn new(target: Option<WebhookTarget>) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("a TLS backend");
        Delivery { target, http }
    }

    pub fn send(&self, event: Value, delay: Duration) {
        let Some(target) = self.target.clone() else { return };
        let http = self.http.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let body = event.to_string();
            for attempt in 0..ATTEMPTS {
                let signature = stripe::sign(&target.secret, unix_now(), body.as_bytes());
                let sent = http
                    .post(&target.url)
                    .header("Content-Type", "application/json")
                    .header("Stripe-Signature", signature)
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => tracing::debug!(status = %r.status(), attempt, "sandbox webhook refused; retrying"),
                    Err(e) => tracing::debug!(error = %e, attempt, "sandbox webhook failed; retrying"),
                }
                tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
            }
            tracing::warn!(event = %event["id"], "sandbox gave up delivering a webhook");
        });
    }
}
