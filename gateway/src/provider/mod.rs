//! Calls to the payment provider, and the one sequence every payment follows:
//! the row exists first, then the provider call (idempotent on the payment id),
//! then `record_provider_result`. A call that fails leaves the payment awaiting
//! the provider; the reconciler finishes it.
//!
//! Routes and the reconciler see only the `Provider` trait; `stripe.rs` is its
//! production implementation (and talks to the sandbox unchanged).

pub mod stripe;

use deadpool_postgres::GenericClient;
use payments_core::state::Status;
use serde_json::json;
use tokio_postgres::Row;

use crate::db;
use crate::error::ApiError;

/// A payment provider.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// The name payments and webhook secrets are recorded under (`stripe`, `sandbox`, …).
    fn name(&self) -> &str;
    /// Creates and confirms the provider's payment, idempotently on our payment id.
    async fn create_payment(&self, charge: &Charge) -> Result<Answer, ProviderError>;
    /// The provider's current view of one of its payments.
    async fn retrieve_payment(&self, provider_payment_id: &str) -> Result<Answer, ProviderError>;
    /// Captures `amount_minor` of an authorized payment (the rest is released), idempotently on `key`.
    async fn capture_payment(
        &self,
        provider_payment_id: &str,
        amount_minor: i64,
        key: &str,
    ) -> Result<CommandAnswer, ProviderError>;
    /// Cancels a payment, idempotently on `key`.
    async fn cancel_payment(
        &self,
        provider_payment_id: &str,
        reason: Option<&str>,
        key: &str,
    ) -> Result<CommandAnswer, ProviderError>;
    /// Refunds part or all of a captured payment, idempotently on its `key`.
    async fn create_refund(&self, refund: &RefundRequest<'_>) -> Result<CommandAnswer, ProviderError>;
    /// One page of the provider's objects of a kind created in `[from, to)` (Unix seconds), newest first.
    async fn list_objects(
        &self,
        kind: ObjectKind,
        from: i64,
        to: i64,
        starting_after: Option<&str>,
    ) -> Result<ObjectPage, ProviderError>;
}

/// The provider objects reconciliation compares with ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    PaymentIntents,
    Refunds,
}

/// One page of a list: the objects as received (a JSON array's text), and where the next starts.
#[derive(Debug)]
pub struct ObjectPage {
    pub objects: String,
    /// The last object's id when more follow.
    pub next_after: Option<String>,
}

/// What the provider needs to make one refund.
#[derive(Debug)]
pub struct RefundRequest<'a> {
    pub provider_payment_id: &'a str,
    pub amount_minor: i64,
    pub reason: Option<&'a str>,
    /// Ours (payments.refunds), sent as metadata.
    pub refund_id: &'a str,
    /// The idempotency key: the command's id.
    pub key: &'a str,
}

/// What the gateway needs of a payment to charge it.
#[derive(Debug)]
pub struct Charge {
    pub payment_id: String,
    pub customer_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub payment_method: String,
    pub capture_method: String,
    pub description: Option<String>,
}

impl Charge {
    /// From a row with the columns of `payments.payments` (by name); None
    /// when the payment has no payment method, so there is nothing to charge.
    pub fn from_row(row: &Row) -> Result<Option<Charge>, ApiError> {
        let Some(payment_method) = row.try_get::<_, Option<String>>("payment_method")? else {
            return Ok(None);
        };
        Ok(Some(Charge {
            payment_id: row.try_get("id")?,
            customer_id: row.try_get("customer_id")?,
            amount_minor: row.try_get("amount_minor")?,
            currency: row.try_get("currency")?,
            payment_method,
            capture_method: row.try_get("capture_method")?,
            description: row.try_get("description")?,
        }))
    }
}

/// A status column as the state machine's type.
pub fn status_of(row: &Row) -> Result<Status, ApiError> {
    let name: &str = row.try_get("status")?;
    Status::parse(name).ok_or_else(|| ApiError::Internal(format!("the database returned an unknown status {name:?}")))
}

/// The provider's answer about one payment.
#[derive(Debug)]
pub struct Answer {
    /// The provider's payment id; None when the provider refused before creating one.
    pub provider_payment_id: Option<String>,
    /// Our status for it; None when the provider reports nothing new.
    pub status: Option<Status>,
    /// The provider's object (or error) as received, JSON text.
    pub raw: String,
}

/// The provider's answer to a command (capture, cancel, refund) about one of its payments.
#[derive(Debug)]
pub enum CommandAnswer {
    /// It answered with its object (JSON text: the PaymentIntent, or the Refund), in `status`
    /// (our payment status, or our refund status).
    Object { status: &'static str, raw: String },
    /// It refused (the payment is in another state, the amount is wrong): its error, JSON text.
    Refused { raw: String },
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
    current_status: Status,
    answer: Result<Answer, ProviderError>,
) -> Result<Option<String>, ApiError> {
    match answer {
        Ok(a) => {
            let stmt = db.prepare_cached(db::RECORD_PROVIDER_RESULT).await?;
            let status = a.status.unwrap_or(current_status).as_str();
            let row = db.query_one(&stmt, &[&payment_id, &provider, &a.provider_payment_id, &status, &a.raw]).await?;
            if row.try_get::<_, &str>("outcome")? == "mismatch" {
                // The provider answered about other money than the payment's: recorded as an anomaly.
                metrics::counter!("payment_anomalies_total", "source" => "provider").increment(1);
                tracing::warn!(payment_id, "the provider's answer does not match the payment; anomaly recorded");
            }
            Ok(Some(row.try_get("payment")?))
        }
        Err(ProviderError::Unavailable(why)) => {
            tracing::warn!(payment_id, error = %why, "provider call failed; the reconciler will retry");
            let stmt = db.prepare_cached(db::RECORD_PROVIDER_ERROR).await?;
            let error = json!({ "type": "provider_unavailable", "message": why }).to_string();
            db.execute(&stmt, &[&payment_id, &error]).await?;
            Ok(None)
        }
    }
}
