//! The reconciler: finishes payments whose provider call never completed
//! (retrying it with the same idempotency key) and refreshes those whose
//! provider state is unknown. Work is claimed with FOR UPDATE SKIP LOCKED inside
//! one transaction, so replicas share it and a killed gateway's work returns.

use std::time::Duration;

use crate::app::AppState;
use crate::db;
use crate::error::ApiError;
use crate::provider::{self, Charge};

const BATCH: i32 = 20;

pub async fn run(state: AppState, interval: Duration, min_age: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match reconcile_once(&state, min_age).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(payments = n, "reconciled"),
            Err(e) => tracing::warn!(error = %e, "reconciler pass failed"),
        }
    }
}

/// One pass: returns how many payments it looked at.
pub async fn reconcile_once(state: &AppState, min_age: Duration) -> Result<usize, ApiError> {
    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    let claim = tx.prepare_cached(db::CLAIM_PROVIDER_WORK).await?;
    let min_age_ms = i64::try_from(min_age.as_millis()).unwrap_or(i64::MAX);
    let rows = tx.query(&claim, &[&BATCH, &min_age_ms]).await?;
    for row in &rows {
        let payment_id: String = row.try_get("id")?;
        let kind: &str = row.try_get("kind")?;
        let answer = match (kind, Charge::from_row(row)?) {
            ("create", Some(charge)) => state.provider.create_payment(&charge).await,
            _ => state.provider.retrieve_payment(row.try_get("provider_payment_id")?).await,
        };
        metrics::counter!("reconciler_payments_total", "kind" => kind.to_string()).increment(1);
        provider::record(&tx, state.provider.name(), &payment_id, provider::status_of(row)?, answer).await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}
