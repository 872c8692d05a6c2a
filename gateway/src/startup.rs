//! Building and running the service: the listener, the pool, the provider,
//! the router and the reconciler, from the `serve` arguments.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::app::{self, AppState, Limits};
use crate::auth::KeyCache;
use crate::config::ServeArgs;
use crate::provider::stripe::Stripe;
use crate::{db, reconciler};

pub type Fallible<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A bound, configured gateway that has not started serving yet.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    args: ServeArgs,
    embedded: bool,
}

impl Application {
    /// Binds `args.listen` (port 0 picks a free port) and wires everything.
    /// With a Stripe key the provider is Stripe; without one, the embedded
    /// sandbox mounted at `/sandbox`.
    pub async fn build(args: ServeArgs) -> Fallible<Application> {
        let listener = TcpListener::bind(args.listen).await?;
        let addr = listener.local_addr()?;
        let pool = db::pool(&args.database_url, args.pool_size, Duration::from_millis(args.pool_wait_ms))?;
        let provider_timeout = Duration::from_millis(args.provider_timeout_ms);
        let embedded = args.stripe_secret_key.is_none();
        let name = args.provider.clone().unwrap_or_else(|| if embedded { "sandbox" } else { "stripe" }.to_string());
        let stripe = match &args.stripe_secret_key {
            Some(key) => Stripe::new(&name, &args.stripe_api_base, key, provider_timeout),
            None => Stripe::new(&name, &format!("http://{addr}/sandbox"), "sk_test_sandbox", provider_timeout),
        };
        let state = AppState {
            pool,
            provider: Arc::new(stripe),
            metrics: metrics_handle()?,
            keys: Arc::new(KeyCache::new(Duration::from_millis(args.auth_cache_ms))),
        };
        let limits = Limits {
            body_bytes: args.body_limit_bytes,
            request_timeout: Duration::from_millis(args.request_timeout_ms),
        };
        let mut router = app::router(state.clone(), limits);
        if embedded {
            router = router.nest_service("/sandbox", sandbox_router(&args, addr, state.provider.name()));
        }
        Ok(Application { listener, router, state, args, embedded })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, with the reconciler running beside.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Fallible {
        let reconciler = tokio::spawn(reconciler::run(
            self.state.clone(),
            Duration::from_millis(self.args.reconcile_interval_ms),
            Duration::from_millis(self.args.reconcile_min_age_ms),
        ));
        // Tests and scripts read this line to find the port.
        println!(
            "listening on http://{} (provider: {}{})",
            self.listener.local_addr()?,
            self.state.provider.name(),
            if self.embedded { ", embedded sandbox" } else { "" }
        );
        let served = axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown).await;
        reconciler.abort();
        Ok(served?)
    }
}

fn sandbox_router(args: &ServeArgs, addr: SocketAddr, provider: &str) -> Router {
    let target = args
        .sandbox_webhook_secret
        .clone()
        .map(|secret| payments_sandbox::WebhookTarget { url: format!("http://{addr}/v1/webhooks/{provider}"), secret });
    if target.is_none() {
        tracing::warn!("no SANDBOX_WEBHOOK_SECRET: the sandbox will not deliver webhooks");
    }
    payments_sandbox::Sandbox::new(args.sandbox.clone(), target).router()
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
