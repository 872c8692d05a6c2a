//! Recovery (the reconciler): finishes payments whose provider call never completed
//! (retrying it with the same idempotency key) and refreshes those whose
//! provider state is unknown.
//!
//! It leases work instead of locking it: `claim_provider_work` stamps a lease
//! on each payment and commits at once, the provider calls run with no
//! transaction open (concurrently), and each answer is recorded on its own, so
//! a webhook for a claimed payment never waits on a provider call, and one
//! payment whose recording fails never holds up the others (its lease grows
//! with each attempt).

use std::time::Duration;

use tokio::task::JoinSet;

use crate::db;
use crate::error::ApiError;
use crate::provider::{self, Charge};
use crate::state::AppState;

const BATCH: i32 = 20;

/// How the reconciler paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// How often it looks for work.
    pub interval: Duration,
    /// How long a payment must be untouched before it is taken over.
    pub min_age: Duration,
    /// How long a claim keeps other replicas away (at least twice the provider timeout).
    pub lease: Duration,
}

pub async fn run(state: AppState, pace: Pace) {
    let mut tick = tokio::time::interval(pace.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match reconcile_once(&state, pace).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(payments = n, "reconciled"),
            Err(e) => tracing::warn!(error = %e, "reconciler pass failed"),
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One pass: claims a batch and finishes each payment independently. Returns
/// how many payments it claimed.
pub async fn reconcile_once(state: &AppState, pace: Pace) -> Result<usize, ApiError> {
    let rows = {
        let db = state.pool.get().await?;
        let claim = db.prepare_cached(db::CLAIM_PROVIDER_WORK).await?;
        db.query(&claim, &[&BATCH, &millis(pace.min_age), &millis(pace.lease)]).await?
    };
    let claimed = rows.len();
    let mut work = JoinSet::new();
    for row in rows {
        let state = state.clone();
        work.spawn(async move {
            if let Err(e) = finish(&state, &row).await {
                let payment_id = row.try_get::<_, &str>("id").unwrap_or_default();
                tracing::warn!(payment_id, error = %e, "reconciling a payment failed; it is retried after its lease");
            }
        });
    }
    while work.join_next().await.is_some() {}
    Ok(claimed)
}

/// The provider call for one claimed payment, then its answer recorded in a
/// statement of its own (no connection is held during the call).
async fn finish(state: &AppState, row: &tokio_postgres::Row) -> Result<(), ApiError> {
    let payment_id: String = row.try_get("id")?;
    let kind: &str = row.try_get("kind")?;
    let provider = &state.provider;
    let answer = match (kind, Charge::from_row(row)?) {
        ("create", Some(charge)) => provider.create_payment(&charge).await,
        _ => provider.retrieve_payment(row.try_get("provider_payment_id")?).await,
    };
    metrics::counter!("reconciler_payments_total", "kind" => kind.to_string()).increment(1);
    let db = state.pool.get().await?;
    provider::record(&db, provider.name(), &payment_id, provider::status_of(row)?, answer).await?;
    Ok(())
}
