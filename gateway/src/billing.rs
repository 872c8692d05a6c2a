//! The billing timer: `payments.run_billing` every `BILLING_INTERVAL_MS`, so
//! renewals, invoices and dunning retries happen without anyone calling. The
//! invoices' payments it creates are charged by the reconciler like any
//! payment created in SQL. Safe with several gateways: the function claims
//! its rows with SKIP LOCKED and invoices each period once.

use std::time::Duration;

use crate::db;
use crate::error::ApiError;
use crate::state::AppState;

pub async fn run(state: AppState, interval: Duration) {
    // The first run one interval after start, not at once: a starting gateway has enough to do
    // (its reconciler and outbox look at every shard too).
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match run_once(&state).await {
            Ok(done) => log_run(&done),
            Err(e) => tracing::warn!(error = %e, "billing run failed; the next tick tries again"),
        }
    }
}

/// Logs what a run did (nothing when it did nothing), and each subscription it
/// could not bill with its SQLSTATE: the others were billed, this one is
/// retried at every tick and listed in `payments.billing_failures`.
fn log_run(done: &serde_json::Value) {
    for failed in done["failed"].as_array().into_iter().flatten() {
        tracing::error!(
            subscription_id = failed["subscription_id"].as_str().unwrap_or("?"),
            sqlstate = failed["sqlstate"].as_str().unwrap_or("?"),
            message = failed["message"].as_str().unwrap_or(""),
            "billing a subscription failed; the others were billed"
        );
    }
    if did_something(done) {
        tracing::info!(%done, "billing run");
    }
}

/// Whether a run's counts (`{"renewed": 0, …, "failed": []}`) are not all zero.
fn did_something(done: &serde_json::Value) -> bool {
    done.as_object().is_none_or(|counts| {
        counts.values().any(|v| v.as_i64().is_some_and(|n| n != 0) || v.as_array().is_some_and(|a| !a.is_empty()))
    })
}

async fn run_once(state: &AppState) -> Result<serde_json::Value, ApiError> {
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::RUN_BILLING).await?;
    let done: String = db.query_one(&stmt, &[]).await?.try_get(0)?;
    Ok(serde_json::from_str(&done).unwrap_or(serde_json::Value::Null))
}

#[cfg(test)]
mod tests {
    use super::did_something;
    use serde_json::json;

    #[test]
    fn a_run_that_did_nothing_is_not_logged() {
        assert!(!did_something(&json!({"ended": 0, "renewed": 0, "retried": 0, "thresholds": 0, "failed": []})));
        assert!(did_something(&json!({"ended": 0, "renewed": 2, "retried": 0, "thresholds": 0, "failed": []})));
        assert!(did_something(&json!({"renewed": 0, "failed": [{"subscription_id": "sub_1"}]})));
        assert!(did_something(&json!("not an object")));
    }
}
