//! Reconciliation against the provider: pull the provider's PaymentIntents and
//! refunds of a time window into `payments.provider_snapshots` (page by page,
//! through its list endpoints), then run `payments.reconcile`, which lists every
//! disagreement with our rows, repairs what the provider's objects settle when
//! asked to, and records the run. `payments-gateway reconcile` and
//! `POST /v1/reconciliations` both run this.

use deadpool_postgres::Pool;

use crate::db;
use crate::error::ApiError;
use crate::provider::{ObjectKind, Provider, ProviderError};

/// At most this many pages per kind (100 objects each) in one run.
const MAX_PAGES: usize = 10_000;

/// The window `[from, to)` (any timestamptz text) reconciled; the report as JSON.
pub async fn run(pool: &Pool, provider: &dyn Provider, from: &str, to: &str, repair: bool) -> Result<String, ApiError> {
    let (from_unix, to_unix) = {
        let db = pool.get().await?;
        let stmt = db.prepare_cached(db::RECONCILIATION_WINDOW).await?;
        let row = db.query_one(&stmt, &[&from, &to]).await?;
        (row.try_get::<_, i64>("from_unix")?, row.try_get::<_, i64>("to_unix")?)
    };
    let mut fetched = 0;
    for kind in [ObjectKind::PaymentIntents, ObjectKind::Refunds] {
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page =
                provider.list_objects(kind, from_unix, to_unix, after.as_deref()).await.map_err(|e| match e {
                    ProviderError::Unavailable(why) => ApiError::ProviderUnavailable(why),
                })?;
            let db = pool.get().await?;
            let stmt = db.prepare_cached(db::RECORD_PROVIDER_SNAPSHOT).await?;
            fetched += db.query_one(&stmt, &[&provider.name(), &page.objects]).await?.try_get::<_, i32>(0)?;
            match page.next_after {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    let db = db::CancelOnDrop::new(pool.get().await?);
    let stmt = db.prepare_cached(db::RECONCILE).await?;
    let row = db.query_one(&stmt, &[&from, &to, &provider.name(), &repair, &fetched]).await?;
    db.done();
    Ok(row.try_get("report")?)
}
