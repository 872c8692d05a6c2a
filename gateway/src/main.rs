//! The `payments-gateway` binary: `serve` (the HTTP API, the dashboard and
//! /mcp), `sandbox` (only the Stripe-compatible sandbox), `reconcile` (a
//! report against the provider), `mcp` (the MCP server over stdio) or `openapi` (print the
//! HTTP API's OpenAPI document). Everything else is in the library.

use clap::Parser;
use payments_gateway::config::{Cli, Command, ReconcileArgs};
use payments_gateway::provider::stripe::Stripe;
use payments_gateway::startup::{Application, Fallible};
use tracing_subscriber::EnvFilter;

// Many small short-lived allocations per request (HTTP, JSON, rows): mimalloc
// measured faster than glibc's malloc here (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn")))
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Serve(args) => match Application::build(*args).await {
            Ok(app) => app.run_until(shutdown()).await,
            Err(e) => Err(e),
        },
        #[cfg(feature = "sandbox")]
        Command::Sandbox(args) => sandbox(args).await,
        Command::Reconcile(args) => reconcile(args).await,
        Command::Mcp(args) => payments_gateway::mcp::stdio::run(args).await,
        Command::Openapi => serde_json::to_string_pretty(&payments_gateway::openapi::document())
            .map(|json| println!("{json}"))
            .map_err(Into::into),
    };
    if let Err(e) = result {
        eprintln!("payments-gateway: {e}");
        std::process::exit(1);
    }
}

#[cfg(feature = "sandbox")]
async fn sandbox(args: payments_gateway::config::SandboxArgs) -> Fallible {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let target = match (args.webhook_url, args.webhook_secret) {
        (Some(url), Some(secret)) => Some(payments_sandbox::WebhookTarget { url, secret }),
        _ => None,
    };
    if args.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
        return Err("SANDBOX_API_KEY is set but empty".into());
    }
    let key = args.api_key.unwrap_or_else(payments_sandbox::new_api_key);
    tracing::warn!(sandbox_api_key = %key, "the sandbox accepts only this key; development only, no money moves");
    println!("listening on http://{} (sandbox)", listener.local_addr()?);
    let router = payments_sandbox::Sandbox::new(args.knobs, target, key).router();
    axum::serve(listener, router).with_graceful_shutdown(shutdown()).await?;
    Ok(())
}

async fn reconcile(args: ReconcileArgs) -> Fallible {
    let pool = payments_gateway::db::pool(&args.database_url, 2, std::time::Duration::from_secs(5))?;
    let timeout = std::time::Duration::from_millis(args.provider_timeout_ms);
    let provider = Stripe::new(&args.provider_name, &args.stripe_api_base, &args.stripe_secret_key, timeout);
    let report = payments_gateway::reconciliation::run(&pool, &provider, &args.from, &args.to, args.repair)
        .await
        .map_err(|e| format!("reconcile: {}", e.code()))?;
    println!("{report}");
    Ok(())
}

async fn shutdown() {
    let _ = tokio::signal::ctrl_c().await;
}
