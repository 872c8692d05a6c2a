//! payments-gateway: a thin HTTP front for the `payments` PostgreSQL
//! extension. Every call becomes one extension function call; the gateway
//! adds authentication, the provider calls and HTTP conventions, and holds no
//! payment state.

mod app;
mod auth;
mod config;
mod db;
mod error;
mod extract;
mod openapi;
mod provider;
mod reconciler;
mod routes;
mod sandbox;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::config::{Cli, Command, SandboxArgs, ServeArgs};

// Many small short-lived allocations per request (HTTP, JSON, rows): mimalloc
// measured faster than glibc's malloc here (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Sandbox(args) => sandbox(args).await,
    };
    if let Err(e) = result {
        eprintln!("payments-gateway: {e}");
        std::process::exit(1);
    }
}

type Fallible = Result<(), Box<dyn std::error::Error>>;

async fn serve(args: ServeArgs) -> Fallible {
    let listener = TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let pool = db::pool(&args.database_url, args.pool_size, Duration::from_millis(args.pool_wait_ms))?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let provider_timeout = Duration::from_millis(args.provider_timeout_ms);

    // With a Stripe key, Stripe; without one, the sandbox mounted at /sandbox.
    let embedded = args.stripe_secret_key.is_none();
    let provider: Arc<str> = args.provider.as_deref().unwrap_or(if embedded { "sandbox" } else { "stripe" }).into();
    let stripe = match &args.stripe_secret_key {
        Some(key) => provider::stripe::Stripe::new(&args.stripe_api_base, key, provider_timeout),
        None => provider::stripe::Stripe::new(&format!("http://{addr}/sandbox"), "sk_test_sandbox", provider_timeout),
    };
    let keys = Arc::new(auth::KeyCache::new(Duration::from_millis(args.auth_cache_ms)));
    let state = app::AppState { pool, stripe, provider: provider.clone(), metrics, keys };
    let limits = app::Limits {
        body_bytes: args.body_limit_bytes,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
    };
    let mut router = app::router(state.clone(), limits);
    if embedded {
        let target = args.sandbox_webhook_secret.clone().map(|secret| sandbox::WebhookTarget {
            url: format!("http://{addr}/v1/webhooks/{provider}"),
            secret,
        });
        if target.is_none() {
            tracing::warn!("no SANDBOX_WEBHOOK_SECRET: the sandbox will not deliver webhooks");
        }
        router = router.nest_service("/sandbox", sandbox::Sandbox::new(args.sandbox.clone(), target).router());
    }
    tokio::spawn(reconciler::run(
        state,
        Duration::from_millis(args.reconcile_interval_ms),
        Duration::from_millis(args.reconcile_min_age_ms),
    ));
    // Tests and scripts read this line to find the port.
    println!("listening on http://{addr} (provider: {provider}{})", if embedded { ", embedded sandbox" } else { "" });
    axum::serve(listener, router).with_graceful_shutdown(shutdown()).await?;
    Ok(())
}

async fn sandbox(args: SandboxArgs) -> Fallible {
    let listener = TcpListener::bind(args.listen).await?;
    let target = match (args.webhook_url, args.webhook_secret) {
        (Some(url), Some(secret)) => Some(sandbox::WebhookTarget { url, secret }),
        _ => None,
    };
    println!("listening on http://{} (sandbox)", listener.local_addr()?);
    axum::serve(listener, sandbox::Sandbox::new(args.knobs, target).router()).with_graceful_shutdown(shutdown()).await?;
    Ok(())
}

async fn shutdown() {
    let _ = tokio::signal::ctrl_c().await;
}
