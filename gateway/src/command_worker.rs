//! The provider-command outbox: the captures, cancels and refunds SQL queued
//! (`payments.provider_commands`), carried out at the provider.
//!
//! As the reconciler does, it leases instead of locking: `claim_provider_commands`
//! stamps a lease and commits, the provider is called with no transaction open
//! (idempotently on the command id, so a retry after a crash never captures
//! twice), and `record_command_result` records the answer. It runs on a timer,
//! at once for the command an HTTP route just queued, and, when notifications
//! are on (`payments.set_event_notifications`), when a command is queued
//! (LISTEN payments_provider_commands; on Citus the NOTIFY of a delegated call
//! stays on its worker, so the timer remains). The same timer queues the cancel of
//! every authorization older than the capture window.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::db;
use crate::error::ApiError;
use crate::provider::{CommandAnswer, ProviderError, RefundRequest};
use crate::state::AppState;

const BATCH: i32 = 20;
const CHANNEL: &str = "payments_provider_commands";
const EXPIRY_CHECK: Duration = Duration::from_secs(60);

/// How the outbox paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// How often it looks for commands without a wake-up.
    pub interval: Duration,
    /// How long a claimed command is left to this gateway (at least twice the provider timeout).
    pub lease: Duration,
    /// How long an authorization may wait for its capture.
    pub capture_window: Duration,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub async fn run(state: AppState, pace: Pace, database_url: String) {
    let wake = Arc::new(Notify::new());
    tokio::spawn(crate::listen::listen(database_url, CHANNEL, wake.clone()));
    let mut tick = tokio::time::interval(pace.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut expiry_checked: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // The search for expired authorizations reads every shard: at most once a minute.
                if expiry_checked.is_none_or(|t| t.elapsed() >= EXPIRY_CHECK.min(pace.capture_window)) {
                    expiry_checked = Some(std::time::Instant::now());
                    if let Err(e) = queue_expired_cancels(&state, pace).await {
                        tracing::warn!(error = %e, "queuing the cancels of expired authorizations failed");
                    }
                }
            }
            _ = wake.notified() => {}
        }
        match run_due(&state, pace.lease).await {
            Ok(0) => {}
            Ok(done) => tracing::info!(commands = done, "provider commands carried out"),
            Err(e) => tracing::warn!(error = %e, "provider command pass failed"),
        }
    }
}

async fn queue_expired_cancels(state: &AppState, pace: Pace) -> Result<(), ApiError> {
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::CANCEL_EXPIRED_AUTHORIZATIONS).await?;
    let provider = state.provider.name();
    let queued: i32 = db.query_one(&stmt, &[&millis(pace.capture_window), &provider]).await?.try_get(0)?;
    if queued > 0 {
        tracing::info!(payments = queued, "authorizations past the capture window: cancels queued");
    }
    Ok(())
}

/// Claims due commands of this gateway's provider and carries each out on its
/// own; returns how many were recorded (failures are logged and retried after their lease).
pub async fn run_due(state: &AppState, lease: Duration) -> Result<usize, ApiError> {
    let rows = {
        let db = state.pool.get().await?;
        claim(state, &db, None, lease).await?
    };
    Ok(carry_out_all(state, rows).await.iter().filter(|r| r.is_ok()).count())
}

/// Leases due commands (of one payment when given) on `db`: inside the
/// caller's transaction when it has one, as a route queues and claims its own
/// command in one, so the worker its NOTIFY wakes never races it.
pub async fn claim(
    state: &AppState,
    db: &impl GenericClient,
    payment_id: Option<&str>,
    lease: Duration,
) -> Result<Vec<tokio_postgres::Row>, ApiError> {
    let stmt = db.prepare_cached(db::CLAIM_PROVIDER_COMMANDS).await?;
    Ok(db.query(&stmt, &[&BATCH, &millis(lease), &payment_id, &state.provider.name()]).await?)
}

/// Carries out claimed commands concurrently; returns, per command, the payment as
/// the answer left it (JSON) or why it could not be recorded.
pub async fn carry_out_all(state: &AppState, rows: Vec<tokio_postgres::Row>) -> Vec<Result<String, ApiError>> {
    let mut work = JoinSet::new();
    for row in rows {
        let state = state.clone();
        work.spawn(async move {
            let result = carry_out(&state, &row).await;
            if let Err(e) = &result {
                let command_id = row.try_get::<_, &str>("command_id").unwrap_or_default();
                tracing::warn!(command_id, error = %e, "a provider command failed; it is retried after its lease");
            }
            result
        });
    }
    let mut results = Vec::new();
    while let Some(done) = work.join_next().await {
        results.push(done.unwrap_or_else(|e| Err(ApiError::Internal(format!("a provider command task failed: {e}")))));
    }
    results
}

/// The provider call of one claimed command, then its answer recorded (no
/// connection is held during the call).
async fn carry_out(state: &AppState, row: &tokio_postgres::Row) -> Result<String, ApiError> {
    let command_id: String = row.try_get("command_id")?;
    let kind: String = row.try_get("kind")?;
    let provider_payment_id: String = row.try_get("provider_payment_id")?;
    let answer = match kind.as_str() {
        "capture" => {
            state.provider.capture_payment(&provider_payment_id, row.try_get("amount_minor")?, &command_id).await
        }
        "cancel" => {
            // `automatic` is the extension's own word (an expired authorization): Stripe sets it
            // itself and refuses it from callers, so such a cancel carries no reason.
            let reason = row.try_get::<_, Option<&str>>("reason")?.filter(|r| *r != "automatic");
            state.provider.cancel_payment(&provider_payment_id, reason, &command_id).await
        }
        "refund" => {
            let refund = RefundRequest {
                provider_payment_id: &provider_payment_id,
                amount_minor: row.try_get("amount_minor")?,
                reason: row.try_get("reason")?,
                refund_id: row.try_get("refund_id")?,
                key: &command_id,
            };
            state.provider.create_refund(&refund).await
        }
        // A kind a newer extension queues is left to a gateway that knows it (its lease brings it back).
        other => return Err(ApiError::Internal(format!("provider command of unknown kind {other:?}"))),
    };
    let (answered, status, response) = match answer {
        Ok(CommandAnswer::Object { status, raw }) => (true, Some(status), raw),
        Ok(CommandAnswer::Refused { raw }) => (true, None, raw),
        Err(ProviderError::Unavailable(why)) => {
            (false, None, json!({ "type": "provider_unavailable", "message": why }).to_string())
        }
    };
    metrics::counter!("provider_commands_total", "kind" => kind.clone(),
        "outcome" => if !answered { "unavailable" } else if status.is_some() { "answered" } else { "refused" })
    .increment(1);
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::RECORD_COMMAND_RESULT).await?;
    let customer_id: &str = row.try_get("customer_id")?;
    Ok(db.query_one(&stmt, &[&command_id, &answered, &status, &response, &customer_id]).await?.try_get("payment")?)
}
