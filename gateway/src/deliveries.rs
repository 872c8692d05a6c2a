//! Events out to apps: the extension writes every state change to its outbox
//! with one delivery per registered endpoint (`payments.add_webhook_endpoint`);
//! this worker sends them, signed with the Standard Webhooks scheme
//! (`webhook-id` is the event id, so a receiver can drop repeats).
//!
//! As the provider-command outbox does, it leases instead of locking:
//! `claim_webhook_deliveries` leases the first pending event of each object for
//! each endpoint and commits, the POST is made with no transaction open, and
//! `record_webhook_delivery` records the answer (2xx delivered; otherwise the
//! retry schedule, `payments.set_webhook_retries`). An object's next event is
//! claimed only once the one before it is delivered or failed, so an endpoint
//! sees each object's changes in order. It runs on a timer and, when
//! notifications are on (`payments.set_event_notifications`), on NOTIFY payments_events.
//! Deliveries run side by side, each endpoint with a bounded share in flight, and
//! a finished one makes room for the next at once: an endpoint that answers
//! slowly or not at all delays only its own deliveries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use payments_core::webhook::standard;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use deadpool_postgres::Pool;

use crate::db;
use crate::error::ApiError;
use crate::state::AppState;

/// How many deliveries one claim leases at most.
const BATCH: usize = 50;
/// How many POSTs may be in flight at once, and to any one endpoint: a slow or failing
/// endpoint holds at most its own share, never the others' deliveries.
const IN_FLIGHT: usize = 200;
const PER_ENDPOINT: usize = 4;
const CHANNEL: &str = "payments_events";

/// How the worker paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// How often it looks for due deliveries without a wake-up.
    pub interval: Duration,
    /// How long an endpoint has to answer.
    pub timeout: Duration,
}

impl Pace {
    /// How long a claimed delivery is left to this gateway: the POST, with as long again to record it.
    fn lease(self) -> Duration {
        2 * self.timeout + Duration::from_secs(1)
    }
}

/// `pool` connects as the delivery worker (payments_worker): the application's own role never
/// reads an endpoint's secret.
pub async fn run(state: AppState, pool: Pool, pace: Pace, database_url: String) {
    let wake = Arc::new(Notify::new());
    tokio::spawn(crate::listen::listen(database_url, CHANNEL, wake.clone()));
    // No redirect, no proxy from the environment, and every name resolved through the guard.
    let http = match reqwest::Client::builder()
        .timeout(pace.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(state.destinations.resolver())
        .user_agent(concat!("payments-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(http) => http,
        Err(e) => return tracing::error!(error = %e, "no HTTP client: events are not delivered"),
    };
    let mut tick = tokio::time::interval(pace.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Deliveries in flight, the endpoint of each task, and how many per endpoint.
    let mut in_flight: JoinSet<()> = JoinSet::new();
    let mut endpoints: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut per_endpoint: HashMap<String, usize> = HashMap::new();
    loop {
        // Claim while there is room: a delivery that finishes makes room at once (and may let
        // its object's next event go), whatever the others are waiting for.
        loop {
            let room = (IN_FLIGHT - in_flight.len()).min(BATCH);
            if room == 0 {
                break;
            }
            let rows = match claim(&pool, pace, room, &per_endpoint).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming webhook deliveries failed");
                    break;
                }
            };
            let claimed = rows.len();
            for row in rows {
                let endpoint: String = row.get("endpoint_id");
                *per_endpoint.entry(endpoint.clone()).or_default() += 1;
                let (state, pool, http) = (state.clone(), pool.clone(), http.clone());
                let task = in_flight.spawn(async move {
                    if let Err(e) = deliver(&state, &pool, &http, &row).await {
                        tracing::warn!(error = %e, "a webhook delivery was not recorded; it is retried after its lease");
                    }
                });
                endpoints.insert(task.id(), endpoint);
            }
            if claimed < room {
                break;
            }
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = wake.notified() => {}
            Some(done) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                // Every delivery finished by now, then one claim for them all (not one per POST).
                let mut done = Some(done);
                while let Some(result) = done.take().or_else(|| in_flight.try_join_next_with_id()) {
                    let id = match result {
                        Ok((id, ())) => id,
                        // A panicked task gives its endpoint's place back too; its lease makes the delivery due again.
                        Err(e) => {
                            tracing::warn!(error = %e, "a webhook delivery task failed");
                            e.id()
                        }
                    };
                    if let Some(endpoint) = endpoints.remove(&id) {
                        finished(&mut per_endpoint, &endpoint);
                    }
                }
            }
        }
    }
}

/// One fewer delivery in flight to `endpoint`.
fn finished(per_endpoint: &mut HashMap<String, usize>, endpoint: &str) {
    if let Some(n) = per_endpoint.get_mut(endpoint) {
        *n -= 1;
        if *n == 0 {
            per_endpoint.remove(endpoint);
        }
    }
}

/// Leases up to `room` due deliveries, so that no endpoint has more than `PER_ENDPOINT` in flight
/// (counting `in_flight`, those already under way here).
async fn claim(
    pool: &Pool,
    pace: Pace,
    room: usize,
    in_flight: &HashMap<String, usize>,
) -> Result<Vec<tokio_postgres::Row>, ApiError> {
    let db = pool.get().await?;
    let stmt = db.prepare_cached(db::CLAIM_WEBHOOK_DELIVERIES).await?;
    let lease = i64::try_from(pace.lease().as_millis()).unwrap_or(i64::MAX);
    let (room, per_endpoint) = (room as i32, PER_ENDPOINT as i32);
    let in_flight = serde_json::to_string(in_flight).unwrap_or_else(|_| "{}".into());
    Ok(db.query(&stmt, &[&room, &lease, &per_endpoint, &in_flight]).await?)
}

/// One signed POST, then its answer recorded.
async fn deliver(
    state: &AppState,
    pool: &Pool,
    http: &reqwest::Client,
    row: &tokio_postgres::Row,
) -> Result<(), ApiError> {
    let event_id: &str = row.try_get("event_id")?;
    let body: String = row.try_get("body")?;
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let signature = standard::sign(row.try_get("secret")?, event_id, timestamp, body.as_bytes())
        .map_err(|_| ApiError::Internal("an endpoint's secret is not a Standard Webhooks secret".into()))?;
    let started = Instant::now();
    // An address in the URL is never resolved: it is checked here (a name, when it connects).
    let url = state.destinations.check_url(row.try_get::<_, &str>("url")?);
    let answer = match url {
        Ok(url) => http.post(url),
        Err(why) => return record(pool, row, None, Some(why), 0).await,
    };
    let answer = answer
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    let duration_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
    // The URL stays out of the error: apps put tokens in them.
    let (status_code, error) = match answer {
        Ok(response) => (Some(i32::from(response.status().as_u16())), None),
        Err(e) => (None, Some(describe(&e))),
    };
    let outcome = match status_code {
        Some(200..=299) => "delivered",
        Some(_) => "refused",
        None => "unreachable",
    };
    metrics::counter!("webhook_deliveries_total", "outcome" => outcome).increment(1);
    record(pool, row, status_code, error, duration_ms).await
}

/// An attempt's answer (a status code, or why there was none), recorded.
async fn record(
    pool: &Pool,
    row: &tokio_postgres::Row,
    status_code: Option<i32>,
    error: Option<String>,
    duration_ms: i32,
) -> Result<(), ApiError> {
    let db = pool.get().await?;
    let stmt = db.prepare_cached(db::RECORD_WEBHOOK_DELIVERY).await?;
    let (customer_id, event_id): (&str, &str) = (row.try_get("customer_id")?, row.try_get("event_id")?);
    let endpoint_id: &str = row.try_get("endpoint_id")?;
    let attempt: i32 = row.try_get("attempt")?;
    db.query_one(&stmt, &[&customer_id, &event_id, &endpoint_id, &attempt, &status_code, &error, &duration_ms]).await?;
    Ok(())
}

/// Why an endpoint gave no answer, without its URL.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_redirect() {
        "redirected"
    } else {
        "request failed"
    };
    // The whole chain: the innermost cause says why (a refused internal address, a reset).
    let mut text = kind.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
