//! A Stripe-compatible sandbox: PaymentIntents, refunds and disputes in Stripe's form
//! encoding, id formats, idempotency semantics and error shapes, with webhooks
//! delivered asynchronously and signed with `Stripe-Signature`. The gateway's
//! Stripe connector and the official Stripe SDKs talk to it unchanged.
#![forbid(unsafe_code)]

mod bounded;
mod delivery;
mod intents;
mod knobs;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use subtle::ConstantTimeEq;

pub use delivery::WebhookTarget;
pub use knobs::Knobs;

/// The Stripe API version the sandbox answers as (and stamps on its events).
pub const API_VERSION: &str = "2024-06-20";
/// A fresh secret key for a sandbox: `sk_test_` and 160 random bits.
pub fn new_api_key() -> String {
    payments_core::id::new_token("sk_test").expect("the OS has randomness")
}

/// The largest request body the sandbox reads (Stripe refuses large requests too).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
use bounded::Bounded;
use intents::{Objects, Outcome, Params, MAX_OBJECTS};

pub struct Sandbox {
    /// The one secret key the sandbox accepts, as Stripe accepts only an account's own keys.
    api_key: String,
    objects: Mutex<Objects>,
    idempotency: Mutex<Bounded<Stored>>,
    /// Charges made per idempotency key (or per intent without one): proves no double charge.
    charges: Mutex<Bounded<u32>>,
    knobs: RwLock<Knobs>,
    delivery: delivery::Delivery,
    /// Randomness for the error, duplicate and jitter knobs.
    rng: Mutex<fastrand::Rng>,
}

struct Stored {
    fingerprint: String,
    status: u16,
    body: serde_json::Value,
}

impl Sandbox {
    /// A sandbox that accepts only `api_key`.
    pub fn new(knobs: Knobs, webhooks: Option<WebhookTarget>, api_key: String) -> Arc<Self> {
        Arc::new(Sandbox {
            api_key,
            objects: Mutex::default(),
            idempotency: Mutex::new(Bounded::new(MAX_OBJECTS)),
            charges: Mutex::new(Bounded::new(MAX_OBJECTS)),
            knobs: RwLock::new(knobs),
            delivery: delivery::Delivery::new(webhooks),
            rng: Mutex::new(fastrand::Rng::new()),
        })
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/v1/payment_intents", post(create_intent).get(list_intents))
            .route("/v1/payment_intents/{id}", get(retrieve_intent))
            .route("/v1/payment_intents/{id}/{action}", post(act_on_intent))
            .route("/v1/refunds", post(create_refund).get(list_refunds))
            .route("/v1/refunds/{id}", get(retrieve_refund))
            .route("/v1/disputes/{id}", get(retrieve_dispute).post(update_dispute))
            .route("/v1/disputes/{id}/close", post(close_dispute))
            .route("/_sandbox/charges", get(charges))
            .route("/_sandbox/config", get(get_config).post(set_config))
            .layer(axum::middleware::from_fn_with_state(self.clone(), require_api_key))
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(self)
    }

    fn accepts(&self, headers: &HeaderMap) -> bool {
        let given = headers.get("authorization").and_then(|h| h.to_str().ok()).and_then(|h| h.strip_prefix("Bearer "));
        given.is_some_and(|k| bool::from(k.as_bytes().ct_eq(self.api_key.as_bytes())))
    }

    fn knobs(&self) -> Knobs {
        self.knobs.read().expect("knobs lock").clone()
    }

    /// A number below `n` (test behaviour only).
    fn roll(&self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.rng.lock().expect("rng lock").u64(..n)
        }
    }

    /// Everything every API call goes through: auth, latency and error knobs,
    /// idempotency, then `op` on the objects, then webhooks.
    async fn call(
        self: &Arc<Self>,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        op: impl FnOnce(&mut Objects, &Params) -> Outcome,
    ) -> Response {
        let knobs = self.knobs();
        if knobs.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(knobs.latency_ms)).await;
        }
        if self.roll(100) < u64::from(knobs.error_percent) {
            return respond(
                intents::error(
                    500,
                    "api_error",
                    "sandbox_injected_error",
                    "An error occurred with our connection to Stripe (injected by the sandbox).",
                    None,
                ),
                false,
            );
        }
        let params: Params = match serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) {
            Ok(pairs) => pairs.into_iter().collect(),
            Err(_) => {
                return respond(
                    intents::error(
                        400,
                        "invalid_request_error",
                        "parameter_invalid",
                        "The request body is not form-encoded.",
                        None,
                    ),
                    false,
                )
            }
        };
        let key = (*method == Method::POST)
            .then(|| headers.get("idempotency-key").and_then(|k| k.to_str().ok()))
            .flatten()
            .map(|k| format!("{}:{k}", uri.path()));
        let mut sorted: Vec<_> = params.iter().collect();
        sorted.sort();
        let fingerprint = format!("{sorted:?}");

        let outcome = {
            // One lock for the key table while the call runs, so concurrent
            // retries with one key see a single result.
            let mut idempotency = self.idempotency.lock().expect("idempotency lock");
            if let Some(stored) = key.as_ref().and_then(|k| idempotency.get(k)) {
                if stored.fingerprint != fingerprint {
                    return respond(intents::error(400, "idempotency_error", "idempotency_key_in_use",
                        "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                        None), false);
                }
                return respond(
                    Outcome { status: stored.status, body: stored.body.clone(), events: vec![], charged: false },
                    true,
                );
            }
            let outcome = op(&mut self.objects.lock().expect("objects lock"), &params);
            if let Some(k) = &key {
                idempotency
                    .insert(k.clone(), Stored { fingerprint, status: outcome.status, body: outcome.body.clone() });
            }
            outcome
        };
        if outcome.charged {
            let counted = headers
                .get("idempotency-key")
                .and_then(|k| k.to_str().ok())
                .map(str::to_string)
                .unwrap_or_else(|| outcome.body["id"].as_str().unwrap_or_default().to_string());
            let mut charges = self.charges.lock().expect("charges lock");
            match charges.get_mut(&counted) {
                Some(n) => *n += 1,
                None => charges.insert(counted, 1),
            }
        }
        let idempotency_key = headers.get("idempotency-key").and_then(|k| k.to_str().ok()).map(str::to_string);
        for (kind, object) in &outcome.events {
            self.deliver(kind, object.clone(), idempotency_key.clone(), &knobs);
            self.follow_up(kind, object, knobs.async_delay_ms);
        }
        if outcome.body["status"] == "processing" {
            let id = outcome.body["id"].as_str().unwrap_or_default().to_string();
            self.later(knobs.async_delay_ms, move |o| o.settle(&id).into_iter().collect());
        }
        respond(outcome, false)
    }

    /// What the bank does some time after an event: settles a refund, opens
    /// a disputed card's dispute, decides a dispute under review.
    fn follow_up(self: &Arc<Self>, kind: &str, object: &serde_json::Value, after_ms: u64) {
        let id = object["id"].as_str().unwrap_or_default().to_string();
        match kind {
            "refund.created" => self.later(after_ms, move |o| o.settle_refund(&id)),
            "payment_intent.succeeded" if object["payment_method"] == intents::DISPUTED => {
                self.later(after_ms, move |o| o.open_dispute(&id))
            }
            "charge.dispute.updated" if object["status"] == "under_review" => {
                self.later(after_ms, move |o| o.decide_dispute(&id))
            }
            _ => {}
        }
    }

    fn deliver(self: &Arc<Self>, kind: &'static str, object: serde_json::Value, key: Option<String>, knobs: &Knobs) {
        let copies = if self.roll(100) < u64::from(knobs.webhook_duplicate_percent) { 2 } else { 1 };
        let event = delivery::event(kind, object, key);
        for _ in 0..copies {
            let delay = knobs.webhook_delay_ms + self.roll(knobs.webhook_jitter_ms + 1);
            self.delivery.send(event.clone(), Duration::from_millis(delay));
        }
    }

    /// Runs `change` on the objects after `after_ms` and delivers the events it made (and their follow-ups).
    fn later(
        self: &Arc<Self>,
        after_ms: u64,
        change: impl FnOnce(&mut Objects) -> Vec<(&'static str, serde_json::Value)> + Send + 'static,
    ) {
        let sandbox = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            let events = change(&mut sandbox.objects.lock().expect("objects lock"));
            let knobs = sandbox.knobs();
            for (kind, object) in events {
                sandbox.deliver(kind, object.clone(), None, &knobs);
                sandbox.follow_up(kind, &object, knobs.async_delay_ms);
            }
        });
    }
}

fn respond(outcome: Outcome, replayed: bool) -> Response {
    let status = StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(outcome.body)).into_response();
    let headers = response.headers_mut();
    headers.insert("request-id", HeaderValue::from_str(&intents::new_id("req")).expect("ids are ASCII"));
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

type Sb = State<Arc<Sandbox>>;

async fn create_intent(State(sb): Sb, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    sb.call(&method, &uri, &headers, &body, |o, p| o.create_intent(p)).await
}

async fn list_intents(State(sb): Sb, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let query = query_params(&uri);
    sb.call(&method, &uri, &headers, b"", move |o, _| o.list(false, &query)).await
}

async fn list_refunds(State(sb): Sb, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let query = query_params(&uri);
    sb.call(&method, &uri, &headers, b"", move |o, _| o.list(true, &query)).await
}

/// A GET's parameters, from its query string (`created[gte]=…&limit=…`).
fn query_params(uri: &Uri) -> intents::Params {
    serde_urlencoded::from_str::<Vec<(String, String)>>(uri.query().unwrap_or_default())
        .map(|pairs| pairs.into_iter().collect())
        .unwrap_or_default()
}

async fn retrieve_intent(
    State(sb): Sb,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    sb.call(&method, &uri, &headers, b"", |o, _| o.retrieve(&id)).await
}

async fn act_on_intent(
    State(sb): Sb,
    Path((id, action)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sb.call(&method, &uri, &headers, &body, |o, p| match action.as_str() {
        "confirm" => o.confirm(&id, p),
        "capture" => o.capture(&id, p),
        "cancel" => o.cancel(&id, p),
        other => intents::error(
            404,
            "invalid_request_error",
            "resource_missing",
            &format!("Unrecognized request URL: {other}"),
            None,
        ),
    })
    .await
}

async fn create_refund(State(sb): Sb, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    sb.call(&method, &uri, &headers, &body, |o, p| o.create_refund(p)).await
}

async fn retrieve_refund(
    State(sb): Sb,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    sb.call(&method, &uri, &headers, b"", |o, _| o.retrieve_refund(&id)).await
}

async fn retrieve_dispute(
    State(sb): Sb,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    sb.call(&method, &uri, &headers, b"", |o, _| o.retrieve_dispute(&id)).await
}

async fn update_dispute(
    State(sb): Sb,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sb.call(&method, &uri, &headers, &body, |o, p| o.update_dispute(&id, p)).await
}

async fn close_dispute(
    State(sb): Sb,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sb.call(&method, &uri, &headers, &body, |o, _| o.close_dispute(&id)).await
}

async fn charges(State(sb): Sb) -> Json<HashMap<String, u32>> {
    Json(sb.charges.lock().expect("charges lock").iter().map(|(k, n)| (k.clone(), *n)).collect())
}

/// Every route, control endpoints included, answers only to the sandbox's key,
/// with Stripe's 401 otherwise.
async fn require_api_key(State(sb): Sb, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if sb.accepts(request.headers()) {
        return next.run(request).await;
    }
    respond(
        intents::error(
            401,
            "invalid_request_error",
            "api_key_invalid",
            "Invalid API Key provided. The sandbox accepts only its own key (SANDBOX_API_KEY).",
            None,
        ),
        false,
    )
}

async fn get_config(State(sb): Sb) -> Json<Knobs> {
    Json(sb.knobs())
}

async fn set_config(State(sb): Sb, Json(knobs): Json<Knobs>) -> Json<Knobs> {
    *sb.knobs.write().expect("knobs lock") = knobs.clone();
    Json(knobs)
}
