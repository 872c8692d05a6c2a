//! The reconciler: finishes payments whose provider call never completed
//! (retrying it with the same idempotency key) and refreshes those whose
//! provider state is stale. Work is claimed with FOR UPDATE SKIP LOCKED inside
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
    let rows = tx.query(&claim, &[&BATCH, &(min_age.as_secs() as i64)]).await?;
    for row in &rows {
        let payment_id: String = row.get(0);
        let kind: &str = row.get(1);
        let answer = if kind == "create" {
            let charge = Charge {
                payment_id: payment_id.clone(),
                customer_id: row.get(2),
                amount_minor: row.get(3),
                currency: row.get(4),
                payment_method: row.get(5),
                capture_method: row.get(6),
                description: row.get(7),
            };
            state.stripe.create_payment_intent(&charge).await
        } else {
            let provider_payment_id: String = row.get(8);
            state.stripe.retrieve_payment_intent(&provider_payment_id).await
        };
        let status: String = row.get(9);
        metrics::counter!("reconciler_payments_total", "kind" => kind.to_string()).increment(1);
        provider::record(&tx, &state.provider, &payment_id, &status, answer).await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}
