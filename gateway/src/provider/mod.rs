//! Calls to the payment provider, and the one sequence every payment follows:
//! the row exists first, then the provider call (idempotent on the payment id),
//! then `record_provider_result`. A call that fails leaves the payment awaiting
//! the provider; the reconciler finishes it.

pub mod stripe;

use deadpool_postgres::GenericClient;
use serde_json::json;

use crate::db;
use crate::error::ApiError;

/// What the gateway needs of a payment to charge it.
pub struct Charge {
    pub payment_id: String,
    pub customer_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub payment_method: String,
    pub capture_method: String,
    pub description: Option<String>,
}

/// The provider's answer about one payment.
pub struct Answer {
    /// The provider's payment id; None when the provider refused before creating one.
    pub provider_payment_id: Option<String>,
    /// Our status for it.
    pub status: &'static str,
    /// The provider's object (or error) as received, JSON text.
    pub raw: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Network failure, timeout, 5xx, 429 or a configuration problem: try again later.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
}

/// Records a provider answer, or the failure to get one, and returns the payment JSON when recorded.
pub async fn record(
    db: &impl GenericClient,
    provider: &str,
    payment_id: &str,
    current_status: &str,
    answer: Result<Answer, ProviderError>,
) -> Result<Option<String>, ApiError> {
    match answer {
        Ok(a) => {
            let stmt = db.prepare_cached(db::RECORD_PROVIDER_RESULT).await?;
            let status = if a.status.is_empty() { current_status } else { a.status };
            let row = db.query_one(&stmt, &[&payment_id, &provider, &a.provider_payment_id, &status, &a.raw]).await?;
            Ok(Some(row.get(0)))
        }
        Err(ProviderError::Unavailable(why)) => {
            metrics::counter!("provider_calls_total", "outcome" => "unavailable").increment(1);
            tracing::warn!(payment_id, error = %why, "provider call failed; the reconciler will retry");
            let stmt = db.prepare_cached(db::RECORD_PROVIDER_ERROR).await?;
            let error = json!({ "type": "provider_unavailable", "message": why }).to_string();
            db.execute(&stmt, &[&payment_id, &error]).await?;
            Ok(None)
        }
    }
}
