//! Building and running the service: the listener, the pool, the provider,
//! the router and the reconciler, from the `serve` arguments.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::app;
use crate::auth::KeyCache;
use crate::config::{self, ProviderKind, ServeArgs};
use crate::dashboard::throttle::SignInThrottle;
use crate::provider::stripe::Stripe;
use crate::state::{AppState, Limits};
use crate::{billing, command_worker, db, deliveries, recovery};

pub type Fallible<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A bound, configured gateway that has not started serving yet.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    args: ServeArgs,
    kind: ProviderKind,
}

impl Application {
    /// Binds `args.listen` (port 0 picks a free port) and wires everything.
    /// The provider is Stripe (with `STRIPE_SECRET_KEY`) or, only when asked
    /// for with `--provider sandbox`, the embedded sandbox at `/sandbox`; with
    /// neither, building fails and says so.
    pub async fn build(mut args: ServeArgs) -> Fallible<Application> {
        let kind = config::provider_kind(&args)?;
        let listener = TcpListener::bind(args.listen).await?;
        let addr = listener.local_addr()?;
        let pool = db::pool(&args.database_url, args.pool_size, Duration::from_millis(args.pool_wait_ms))?;
        let provider_timeout = Duration::from_millis(args.provider_timeout_ms);
        let name = args.provider_name.clone().unwrap_or_else(|| kind.as_str().to_string());
        let stripe = match kind {
            ProviderKind::Stripe => {
                let key = args.stripe_secret_key.as_deref().unwrap_or_default();
                tracing::info!(provider = %name, api = %args.stripe_api_base, "provider: Stripe");
                Stripe::new(&name, &args.stripe_api_base, key, provider_timeout)
            }
            ProviderKind::Sandbox => sandbox::provider(&mut args, &name, addr, provider_timeout)?,
        };
        let state = AppState {
            pool,
            provider: Arc::new(stripe),
            metrics: metrics_handle()?,
            keys: Arc::new(KeyCache::new(Duration::from_millis(args.auth_cache_ms))),
            // As the reconciler's: the call it covers, with as long again to record the answer.
            command_lease: Duration::from_millis(args.reconcile_lease_ms.max(2 * args.provider_timeout_ms)),
            sign_ins: Arc::new(SignInThrottle::new(SignInThrottle::WINDOW)),
            destinations: crate::destinations::Destinations::new(args.webhook_allowed_networks.clone()),
        };
        let limits = Limits {
            body_bytes: args.body_limit_bytes,
            request_timeout: Duration::from_millis(args.request_timeout_ms),
            mcp_allowed_hosts: args.mcp_allowed_hosts.clone(),
        };
        let router = app::router(state.clone(), limits);
        #[cfg(feature = "sandbox")]
        let router = match kind {
            ProviderKind::Sandbox => {
                router.nest_service("/sandbox", sandbox::router(&args, addr, state.provider.name()))
            }
            ProviderKind::Stripe => router,
        };
        Ok(Application { listener, router, state, args, kind })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, with the reconciler, the provider-command outbox, billing and
    /// webhook deliveries running beside.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Fallible {
        let pace = recovery::Pace {
            interval: Duration::from_millis(self.args.reconcile_interval_ms),
            min_age: Duration::from_millis(self.args.reconcile_min_age_ms),
            // A lease outlives the provider call it covers, with as long again to record the answer.
            lease: Duration::from_millis(self.args.reconcile_lease_ms.max(2 * self.args.provider_timeout_ms)),
        };
        let recovery = tokio::spawn(recovery::run(self.state.clone(), pace));
        let outbox = command_worker::Pace {
            interval: Duration::from_millis(self.args.command_interval_ms),
            lease: self.state.command_lease,
            capture_window: Duration::from_millis(self.args.capture_window_ms),
        };
        let commands = tokio::spawn(command_worker::run(self.state.clone(), outbox, self.args.database_url.clone()));
        let billing =
            tokio::spawn(billing::run(self.state.clone(), Duration::from_millis(self.args.billing_interval_ms)));
        let delivery = deliveries::Pace {
            interval: Duration::from_millis(self.args.delivery_interval_ms),
            timeout: Duration::from_millis(self.args.delivery_timeout_ms),
        };
        let worker_url = self.args.worker_database_url.clone().unwrap_or_else(|| self.args.database_url.clone());
        let worker_pool = db::pool(&worker_url, 4, Duration::from_millis(self.args.pool_wait_ms.max(1000)))?;
        let deliveries = tokio::spawn(deliveries::run(self.state.clone(), worker_pool, delivery, worker_url));
        // Tests and scripts read this line to find the port.
        println!(
            "listening on http://{} (provider: {}{})",
            self.listener.local_addr()?,
            self.state.provider.name(),
            if self.kind == ProviderKind::Sandbox { ", embedded sandbox" } else { "" }
        );
        let header_timeout = Duration::from_millis(self.args.header_read_timeout_ms);
        let served = crate::serve::serve(self.listener, self.router, header_timeout, shutdown).await;
        recovery.abort();
        commands.abort();
        billing.abort();
        deliveries.abort();
        Ok(served?)
    }
}

/// The embedded sandbox as the provider (`--provider sandbox`): development and tests only.
#[cfg(feature = "sandbox")]
mod sandbox {
    use super::*;

    /// A Stripe client of the sandbox mounted at this gateway's `/sandbox`, with its one key.
    pub(super) fn provider(args: &mut ServeArgs, name: &str, addr: SocketAddr, timeout: Duration) -> Fallible<Stripe> {
        let key = args.sandbox_api_key.get_or_insert_with(payments_sandbox::new_api_key).clone();
        tracing::warn!(provider = %name, sandbox_api_key = %key,
            "provider: the embedded sandbox at /sandbox; development only, no money moves");
        Ok(Stripe::new(name, &format!("http://{addr}/sandbox"), &key, timeout))
    }

    pub(super) fn router(args: &ServeArgs, addr: SocketAddr, provider: &str) -> Router {
        let target = args.sandbox_webhook_secret.clone().map(|secret| payments_sandbox::WebhookTarget {
            url: format!("http://{addr}/v1/webhooks/{provider}"),
            secret,
        });
        if target.is_none() {
            tracing::warn!("no SANDBOX_WEBHOOK_SECRET: the sandbox will not deliver webhooks");
        }
        let key = args.sandbox_api_key.clone().unwrap_or_default();
        payments_sandbox::Sandbox::new(args.sandbox.clone(), target, key).router()
    }
}

/// A build without the sandbox refuses `--provider sandbox` (config::provider_kind says so first).
#[cfg(not(feature = "sandbox"))]
mod sandbox {
    use super::*;

    pub(super) fn provider(_: &mut ServeArgs, _: &str, _: SocketAddr, _: Duration) -> Fallible<Stripe> {
        Err("this build has no sandbox (it was built without the `sandbox` feature)".into())
    }
}

/// The process's Prometheus recorder: the `metrics` macros write to one
/// global recorder, so every application in a process (tests start several)
/// shares it.
fn metrics_handle() -> Fallible<PrometheusHandle> {
    static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut handle = HANDLE.lock().unwrap_or_else(|e| e.into_inner());
    if handle.is_none() {
        *handle = Some(metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?);
    }
    Ok(handle.clone().expect("installed above"))
}
