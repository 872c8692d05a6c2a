//! What every handler, worker and page can reach: the pool, the provider, the caches and
//! the limits. No payment state: that lives in PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::KeyCache;
use crate::provider::Provider;

/// What every handler can reach. No payment state: that lives in PostgreSQL.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    /// The payment provider (Stripe, or the sandbox through the same connector).
    pub provider: Arc<dyn Provider>,
    pub metrics: PrometheusHandle,
    /// API keys verified recently (see `auth::KeyCache`).
    pub keys: Arc<KeyCache>,
    /// How long a claimed provider command is left to this gateway.
    pub command_lease: Duration,
    /// Dashboard sign-ins: how many run at once, emails with too many wrong passwords.
    pub sign_ins: Arc<crate::dashboard::throttle::SignInThrottle>,
    /// Where webhook endpoints may be (no internal address unless allowed).
    pub destinations: crate::destinations::Destinations,
}

pub struct Limits {
    pub body_bytes: usize,
    pub request_timeout: Duration,
    /// Host headers /mcp answers.
    pub mcp_allowed_hosts: Vec<String>,
}
