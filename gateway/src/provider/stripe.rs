//! The Stripe connector: Stripe's real HTTP API (form-encoded bodies, Bearer
//! secret key, Idempotency-Key, Stripe-Version), used unchanged against the
//! sandbox.

use std::time::Duration;

use payments_core::provider::stripe::{intent_status, refund_status};
use payments_core::state::Status;
use serde_json::Value;

use super::{Answer, Charge, CommandAnswer, ObjectKind, ObjectPage, Provider, ProviderError, RefundRequest};

pub const STRIPE_VERSION: &str = "2024-06-20";

pub struct Stripe {
    /// The provider name payments are recorded under (`stripe`, or `sandbox` when pointed at it).
    name: String,
    http: reqwest::Client,
    base: String,
    secret_key: String,
}

impl Stripe {
    pub fn new(name: &str, base: &str, secret_key: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("payments-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a TLS backend is compiled in");
        Stripe {
            name: name.to_string(),
            http,
            base: base.trim_end_matches('/').to_string(),
            secret_key: secret_key.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl Provider for Stripe {
    fn name(&self) -> &str {
        &self.name
    }

    /// Creates and confirms a PaymentIntent. The payment id is the idempotency
    /// key, so a retry after a timeout can never charge twice.
    async fn create_payment(&self, c: &Charge) -> Result<Answer, ProviderError> {
        let mut form = vec![
            ("amount", c.amount_minor.to_string()),
            ("currency", c.currency.to_ascii_lowercase()),
            ("payment_method", c.payment_method.clone()),
            ("confirm", "true".into()),
            ("capture_method", c.capture_method.clone()),
            ("metadata[payment_id]", c.payment_id.clone()),
            ("metadata[customer_id]", c.customer_id.clone()),
        ];
        if let Some(d) = &c.description {
            form.push(("description", d.clone()));
        }
        let request = self.http.post(format!("{}/v1/payment_intents", self.base)).form(&form);
        self.send(request.header("Idempotency-Key", &c.payment_id), "create").await
    }

    async fn retrieve_payment(&self, id: &str) -> Result<Answer, ProviderError> {
        self.send(self.http.get(format!("{}/v1/payment_intents/{id}", self.base)), "retrieve").await
    }

    async fn capture_payment(&self, id: &str, amount_minor: i64, key: &str) -> Result<CommandAnswer, ProviderError> {
        let form = [("amount_to_capture", amount_minor.to_string())];
        let request = self.http.post(format!("{}/v1/payment_intents/{id}/capture", self.base)).form(&form);
        self.command(request.header("Idempotency-Key", key), "capture").await
    }

    async fn cancel_payment(&self, id: &str, reason: Option<&str>, key: &str) -> Result<CommandAnswer, ProviderError> {
        let form: Vec<(&str, &str)> = reason.map(|r| ("cancellation_reason", r)).into_iter().collect();
        let request = self.http.post(format!("{}/v1/payment_intents/{id}/cancel", self.base)).form(&form);
        self.command(request.header("Idempotency-Key", key), "cancel").await
    }

    /// Our refund id rides in metadata, so a webhook that beats this answer still finds its refund.
    async fn create_refund(&self, r: &RefundRequest<'_>) -> Result<CommandAnswer, ProviderError> {
        let mut form = vec![
            ("payment_intent", r.provider_payment_id.to_string()),
            ("amount", r.amount_minor.to_string()),
            ("metadata[refund_id]", r.refund_id.to_string()),
        ];
        if let Some(reason) = r.reason {
            form.push(("reason", reason.to_string()));
        }
        let request = self.http.post(format!("{}/v1/refunds", self.base)).form(&form);
        self.call(request.header("Idempotency-Key", r.key), "refund", interpret_refund).await
    }

    async fn list_objects(
        &self,
        kind: ObjectKind,
        from: i64,
        to: i64,
        starting_after: Option<&str>,
    ) -> Result<ObjectPage, ProviderError> {
        let path = match kind {
            ObjectKind::PaymentIntents => "payment_intents",
            ObjectKind::Refunds => "refunds",
        };
        let mut query =
            vec![("created[gte]", from.to_string()), ("created[lt]", to.to_string()), ("limit", "100".to_string())];
        if let Some(after) = starting_after {
            query.push(("starting_after", after.to_string()));
        }
        let request = self.http.get(format!("{}/v1/{path}", self.base)).query(&query);
        self.call(request, "list", interpret_page).await
    }
}

impl Stripe {
    async fn send(&self, request: reqwest::RequestBuilder, operation: &'static str) -> Result<Answer, ProviderError> {
        self.call(request, operation, interpret).await
    }

    async fn command(
        &self,
        request: reqwest::RequestBuilder,
        operation: &'static str,
    ) -> Result<CommandAnswer, ProviderError> {
        self.call(request, operation, interpret_command).await
    }

    /// One HTTP call with its metrics; `interpret` reads the status and body.
    async fn call<T>(
        &self,
        request: reqwest::RequestBuilder,
        operation: &'static str,
        interpret: fn(u16, String) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let started = std::time::Instant::now();
        let result = request.bearer_auth(&self.secret_key).header("Stripe-Version", STRIPE_VERSION).send().await;
        let outcome = match result {
            Err(e) => Err(ProviderError::Unavailable(e.without_url().to_string())),
            Ok(resp) => {
                let status = resp.status();
                match resp.text().await {
                    Err(e) => Err(ProviderError::Unavailable(e.without_url().to_string())),
                    Ok(body) => interpret(status.as_u16(), body),
                }
            }
        };
        let label = if outcome.is_ok() { "answered" } else { "unavailable" };
        metrics::counter!("provider_calls_total", "operation" => operation, "outcome" => label).increment(1);
        metrics::histogram!("provider_call_duration_seconds", "operation" => operation).record(started.elapsed());
        outcome
    }
}

/// Whether an answer means "try again later": an outage, a rate limit, our own
/// configuration, or a concurrent request with the same idempotency key.
fn retryable(http_status: u16, error: &Value) -> Option<ProviderError> {
    (http_status == 429 || http_status >= 500 || http_status == 401 || error["type"] == "idempotency_error").then(
        || {
            ProviderError::Unavailable(format!(
                "HTTP {http_status}: {}",
                error["message"].as_str().unwrap_or("no message")
            ))
        },
    )
}

/// Turns Stripe's answer into ours: a PaymentIntent, a card error carrying
/// one (a decline), or a request error (the payment can never go through).
fn interpret(http_status: u16, body: String) -> Result<Answer, ProviderError> {
    let parsed: Value = serde_json::from_str(&body)
        .map_err(|_| ProviderError::Unavailable(format!("HTTP {http_status} with a body that is not JSON")))?;
    if (200..300).contains(&http_status) {
        return Ok(from_intent(&parsed, body.clone()));
    }
    let error = &parsed["error"];
    if let Some(e) = retryable(http_status, error) {
        return Err(e);
    }
    match error.get("payment_intent") {
        // A card error carries the PaymentIntent, with last_payment_error set.
        Some(intent) if intent.is_object() => Ok(from_intent(intent, intent.to_string())),
        // Any other refusal: no PaymentIntent exists and none will; the payment fails.
        _ => Ok(Answer { provider_payment_id: None, status: Some(Status::Failed), raw: body }),
    }
}

/// A command's answer: the PaymentIntent it left, or the provider's refusal.
fn interpret_command(http_status: u16, body: String) -> Result<CommandAnswer, ProviderError> {
    let parsed: Value = serde_json::from_str(&body)
        .map_err(|_| ProviderError::Unavailable(format!("HTTP {http_status} with a body that is not JSON")))?;
    if let Some(e) = retryable(http_status, &parsed["error"]) {
        return Err(e);
    }
    match from_intent(&parsed, body.clone()) {
        Answer { status: Some(status), raw, .. } if (200..300).contains(&http_status) => {
            Ok(CommandAnswer::Object { status: status.as_str(), raw })
        }
        _ => Ok(CommandAnswer::Refused { raw: body }),
    }
}

/// A refund's answer: the Refund it made (in our refund status), or the provider's refusal.
fn interpret_refund(http_status: u16, body: String) -> Result<CommandAnswer, ProviderError> {
    let parsed: Value = serde_json::from_str(&body)
        .map_err(|_| ProviderError::Unavailable(format!("HTTP {http_status} with a body that is not JSON")))?;
    if let Some(e) = retryable(http_status, &parsed["error"]) {
        return Err(e);
    }
    let status = parsed["status"].as_str().and_then(refund_status);
    match status {
        Some(status) if (200..300).contains(&http_status) && parsed["object"] == "refund" => {
            Ok(CommandAnswer::Object { status, raw: body })
        }
        _ => Ok(CommandAnswer::Refused { raw: body }),
    }
}

/// A list page: its objects as received, and the last id when more follow.
fn interpret_page(http_status: u16, body: String) -> Result<ObjectPage, ProviderError> {
    let parsed: Value = serde_json::from_str(&body)
        .map_err(|_| ProviderError::Unavailable(format!("HTTP {http_status} with a body that is not JSON")))?;
    let data = parsed["data"].as_array().filter(|_| (200..300).contains(&http_status)).ok_or_else(|| {
        let why = parsed["error"]["message"].as_str().unwrap_or("not a list");
        ProviderError::Unavailable(format!("HTTP {http_status}: {why}"))
    })?;
    let next_after = if parsed["has_more"] == true {
        let last = data.last().and_then(|o| o["id"].as_str()).map(str::to_string);
        Some(last.ok_or_else(|| ProviderError::Unavailable("has_more on a page without objects".into()))?)
    } else {
        None
    };
    Ok(ObjectPage { objects: parsed["data"].to_string(), next_after })
}

fn from_intent(intent: &Value, raw: String) -> Answer {
    let has_error = intent.get("last_payment_error").is_some_and(|e| !e.is_null());
    Answer {
        provider_payment_id: intent["id"].as_str().map(str::to_string),
        // None: the provider reports nothing new (recorded without moving the status).
        status: intent["status"].as_str().and_then(|s| intent_status(s, has_error)),
        raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decline_carries_its_payment_intent_and_fails_the_payment() {
        let body = r#"{"error":{"type":"card_error","code":"card_declined","decline_code":"generic_decline",
            "payment_intent":{"id":"pi_1","object":"payment_intent","status":"requires_payment_method",
            "last_payment_error":{"code":"card_declined"}}}}"#;
        let a = interpret(402, body.into()).unwrap();
        assert_eq!(a.provider_payment_id.as_deref(), Some("pi_1"));
        assert_eq!(a.status, Some(Status::Failed));
    }

    #[test]
    fn outages_are_retryable_and_request_errors_are_final() {
        assert!(interpret(500, r#"{"error":{"type":"api_error"}}"#.into()).is_err());
        assert!(interpret(429, r#"{"error":{"type":"rate_limit_error"}}"#.into()).is_err());
        assert!(interpret(200, "<html>".into()).is_err());
        let a =
            interpret(400, r#"{"error":{"type":"invalid_request_error","param":"payment_method"}}"#.into()).unwrap();
        assert_eq!((a.provider_payment_id, a.status), (None, Some(Status::Failed)));
    }

    #[test]
    fn a_command_is_done_refused_or_retried() {
        let done = interpret_command(200, r#"{"id":"pi_3","status":"succeeded","amount_received":3000}"#.into());
        assert!(matches!(done, Ok(CommandAnswer::Object { status: "succeeded", .. })));
        let refused =
            interpret_command(400, r#"{"error":{"type":"invalid_request_error","code":"amount_too_large"}}"#.into());
        assert!(matches!(refused, Ok(CommandAnswer::Refused { .. })));
        assert!(interpret_command(503, r#"{"error":{"type":"api_error"}}"#.into()).is_err());
    }

    #[test]
    fn a_refund_is_made_refused_or_retried() {
        let made = interpret_refund(200, r#"{"id":"re_1","object":"refund","status":"requires_action"}"#.into());
        assert!(matches!(made, Ok(CommandAnswer::Object { status: "pending", .. })));
        let refused =
            interpret_refund(400, r#"{"error":{"type":"invalid_request_error","code":"amount_too_large"}}"#.into());
        assert!(matches!(refused, Ok(CommandAnswer::Refused { .. })));
        let not_a_refund =
            interpret_refund(200, r#"{"id":"pi_1","object":"payment_intent","status":"succeeded"}"#.into());
        assert!(matches!(not_a_refund, Ok(CommandAnswer::Refused { .. })));
        assert!(interpret_refund(500, r#"{"error":{"type":"api_error"}}"#.into()).is_err());
    }

    #[test]
    fn a_page_says_where_the_next_starts() {
        let page =
            interpret_page(200, r#"{"object":"list","data":[{"id":"pi_1"},{"id":"pi_2"}],"has_more":true}"#.into())
                .unwrap();
        assert_eq!(page.next_after.as_deref(), Some("pi_2"));
        assert_eq!(page.objects, r#"[{"id":"pi_1"},{"id":"pi_2"}]"#);
        let last = interpret_page(200, r#"{"object":"list","data":[],"has_more":false}"#.into()).unwrap();
        assert_eq!((last.next_after, last.objects.as_str()), (None, "[]"));
        assert!(interpret_page(401, r#"{"error":{"message":"Invalid API Key"}}"#.into()).is_err());
    }

    #[test]
    fn statuses_map_one_to_one() {
        let a = interpret(200, r#"{"id":"pi_2","status":"requires_action"}"#.into()).unwrap();
        assert_eq!(a.status, Some(Status::RequiresAction));
        let a = interpret(200, r#"{"id":"pi_2","status":"requires_payment_method","last_payment_error":null}"#.into())
            .unwrap();
        assert_eq!(a.status, None);
    }
}
