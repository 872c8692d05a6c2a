//! The billing timer: `payments.run_billing` every `BILLING_INTERVAL_MS`, so
//! renewals, invoices and dunning retries happen without anyone calling. The
//! invoices' payments it creates are charged by the reconciler like any
//! payment created in SQL. Safe with several gateways: the function claims
//! its rows with SKIP LOCKED and invoices each period once.

use std::time::Duration;

use crate::app::AppState;
use crate::db;
use crate::error::ApiError;

pub async fn run(state: AppState, interval: Duration) {
    // The first run one interval after start, not at once: a starting gateway has enough to do
    // (its reconciler and outbox look at every shard too).
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match run_once(&state).await {
            Ok(done) if did_something(&done) => tracing::info!(%done, "billing run"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "billing run failed; the next tick tries again"),
        }
    }
}

/// Whether a run's counts (`{"renewed": 0, …}`) are not all zero.
fn did_something(done: &str) -> bool {
    serde_json::from_str::<std::collections::BTreeMap<String, i64>>(done)
        .map_or(true, |counts| counts.values().any(|n| *n != 0))
}

async fn run_once(state: &AppState) -> Result<String, ApiError> {
    let db = state.pool.get().await?;
    let stmt = db.prepare_cached(db::RUN_BILLING).await?;
    Ok(db.query_one(&stmt, &[]).await?.try_get(0)?)
}

#[cfg(test)]
mod tests {
    use super::did_something;

    #[test]
    fn a_run_that_did_nothing_is_not_logged() {
        assert!(!did_something(r#"{"ended": 0, "renewed": 0, "retried": 0, "thresholds": 0}"#));
        assert!(did_something(r#"{"ended": 0, "renewed": 2, "retried": 0, "thresholds": 0}"#));
        assert!(did_something("not json"));
    }
}
