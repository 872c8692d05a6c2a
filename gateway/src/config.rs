//! Command line and environment. Every flag has an environment variable.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "payments-gateway", version, about = "HTTP gateway over the payments PostgreSQL extension")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (and the embedded sandbox when no Stripe key is set).
    Serve(ServeArgs),
    /// Serve only the Stripe-compatible sandbox.
    Sandbox(SandboxArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// PostgreSQL connection string (key=value or URL) for a role in payments_gateway.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    #[arg(long, env = "GATEWAY_POOL_SIZE", default_value_t = 16)]
    pub pool_size: usize,
    /// How long a request waits for a free connection before answering 503.
    #[arg(long, env = "GATEWAY_POOL_WAIT_MS", default_value_t = 100)]
    pub pool_wait_ms: u64,
    /// How long a verified API key is trusted before the database is asked
    /// again: a revoked key stops working within this time. 0 asks every time.
    #[arg(long, env = "GATEWAY_AUTH_CACHE_MS", default_value_t = 1000)]
    pub auth_cache_ms: u64,
    /// Requests taking longer are answered 408.
    #[arg(long, env = "GATEWAY_REQUEST_TIMEOUT_MS", default_value_t = 15_000)]
    pub request_timeout_ms: u64,
    /// Larger request bodies are answered 413.
    #[arg(long, env = "GATEWAY_BODY_LIMIT_BYTES", default_value_t = 256 * 1024)]
    pub body_limit_bytes: usize,
    /// Stripe secret key. Without one, the embedded sandbox is the provider.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<String>,
    #[arg(long, env = "STRIPE_API_BASE", default_value = "https://api.stripe.com")]
    pub stripe_api_base: String,
    /// Name under which payments and webhook secrets are recorded; default `stripe`, or `sandbox` when embedded.
    #[arg(long, env = "PAYMENTS_PROVIDER")]
    pub provider: Option<String>,
    #[arg(long, env = "PROVIDER_TIMEOUT_MS", default_value_t = 10_000)]
    pub provider_timeout_ms: u64,
    /// How often the reconciler looks for payments whose provider state is unknown.
    #[arg(long, env = "RECONCILE_INTERVAL_MS", default_value_t = 5_000)]
    pub reconcile_interval_ms: u64,
    /// How long a payment must be untouched before the reconciler takes it over.
    #[arg(long, env = "RECONCILE_MIN_AGE_MS", default_value_t = 10_000)]
    pub reconcile_min_age_ms: u64,
    #[command(flatten)]
    pub sandbox: payments_sandbox::Knobs,
    /// Secret the embedded sandbox signs its webhooks with (register it with payments.add_webhook_secret).
    #[arg(long, env = "SANDBOX_WEBHOOK_SECRET", hide_env_values = true)]
    pub sandbox_webhook_secret: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct SandboxArgs {
    #[arg(long, env = "SANDBOX_LISTEN", default_value = "127.0.0.1:12111")]
    pub listen: SocketAddr,
    /// Where to deliver webhooks, e.g. http://127.0.0.1:8080/v1/webhooks/stripe.
    #[arg(long, env = "SANDBOX_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    #[arg(long, env = "SANDBOX_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    #[command(flatten)]
    pub knobs: payments_sandbox::Knobs,
}
