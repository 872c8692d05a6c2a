//! Command line and environment. Every flag has an environment variable.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "payments-gateway", version, about = "HTTP gateway over the payments PostgreSQL extension")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (with `--provider sandbox`, the embedded development sandbox too).
    Serve(Box<ServeArgs>),
    /// Serve only the Stripe-compatible sandbox.
    #[cfg(feature = "sandbox")]
    Sandbox(SandboxArgs),
    /// Compare the provider's objects of a time window with ours and print every disagreement (JSON).
    Reconcile(ReconcileArgs),
    /// Serve the MCP tools over stdin/stdout, for an agent that starts this as a subprocess.
    Mcp(McpArgs),
    /// Print the OpenAPI document of the HTTP API (JSON), as `GET /openapi.json` serves it.
    Openapi,
}

#[derive(Debug, Clone, Args)]
pub struct McpArgs {
    /// PostgreSQL connection string for a role in payments_gateway.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// A gateway API key (payments.create_api_key): its scopes decide which tools may be called.
    #[arg(long, env = "PAYMENTS_API_KEY", hide_env_values = true)]
    pub api_key: String,
}

#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
    /// PostgreSQL connection string for a role in payments_gateway.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Start of the window (inclusive), any PostgreSQL timestamptz: 2026-11-01T00:00:00Z.
    #[arg(long)]
    pub from: String,
    /// End of the window (exclusive).
    #[arg(long)]
    pub to: String,
    /// Refresh what the provider's objects settle (a missed success, another status), recorded as provider answers.
    #[arg(long)]
    pub repair: bool,
    /// The Stripe (or sandbox) secret key.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: String,
    /// Stripe's API, or a sandbox's (http://127.0.0.1:8080/sandbox).
    #[arg(long, env = "STRIPE_API_BASE", default_value = "https://api.stripe.com")]
    pub stripe_api_base: String,
    /// The provider name the payments were recorded under.
    #[arg(long, env = "PAYMENTS_PROVIDER_NAME", default_value = "stripe")]
    pub provider_name: String,
    #[arg(long, env = "PROVIDER_TIMEOUT_MS", default_value_t = 10_000)]
    pub provider_timeout_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// PostgreSQL connection string (key=value or URL) for a role in payments_gateway.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Connection string for the webhook delivery worker, a role in payments_worker (the
    /// only role that reads endpoints' signing secrets). Default: DATABASE_URL, whose role
    /// then needs payments_worker too.
    #[arg(long, env = "WORKER_DATABASE_URL")]
    pub worker_database_url: Option<String>,
    #[arg(long, env = "GATEWAY_POOL_SIZE", default_value_t = 16)]
    pub pool_size: usize,
    /// How long a request waits for a free connection before answering 503.
    #[arg(long, env = "GATEWAY_POOL_WAIT_MS", default_value_t = 100)]
    pub pool_wait_ms: u64,
    /// How long a verified API key is trusted before the database is asked
    /// again: a revoked key stops working within this time. 0 asks every time.
    #[arg(long, env = "GATEWAY_AUTH_CACHE_MS", default_value_t = 1000)]
    pub auth_cache_ms: u64,
    /// A connection that has not sent its request headers within this time is closed.
    #[arg(long, env = "GATEWAY_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// Requests taking longer are answered 408.
    #[arg(long, env = "GATEWAY_REQUEST_TIMEOUT_MS", default_value_t = 15_000)]
    pub request_timeout_ms: u64,
    /// Larger request bodies are answered 413.
    #[arg(long, env = "GATEWAY_BODY_LIMIT_BYTES", default_value_t = 256 * 1024)]
    pub body_limit_bytes: usize,
    /// Stripe secret key: Stripe is the provider. Required unless `--provider sandbox`.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<String>,
    #[arg(long, env = "STRIPE_API_BASE", default_value = "https://api.stripe.com")]
    pub stripe_api_base: String,
    /// `stripe` (with STRIPE_SECRET_KEY), or `sandbox`: the embedded development
    /// sandbox at /sandbox, where no money moves. Never chosen implicitly.
    #[arg(long, env = "PAYMENTS_PROVIDER", value_enum)]
    pub provider: Option<ProviderKind>,
    /// Name under which payments and webhook secrets are recorded (the webhook
    /// route is /v1/webhooks/<name>); default: the provider's kind.
    #[arg(long, env = "PAYMENTS_PROVIDER_NAME")]
    pub provider_name: Option<String>,
    /// The one key the embedded sandbox accepts; generated (and logged) when unset.
    #[cfg(feature = "sandbox")]
    #[arg(long, env = "SANDBOX_API_KEY", hide_env_values = true)]
    pub sandbox_api_key: Option<String>,
    #[arg(long, env = "PROVIDER_TIMEOUT_MS", default_value_t = 10_000)]
    pub provider_timeout_ms: u64,
    /// How often the reconciler looks for payments whose provider state is unknown.
    #[arg(long, env = "RECONCILE_INTERVAL_MS", default_value_t = 5_000)]
    pub reconcile_interval_ms: u64,
    /// How long a payment must be untouched before the reconciler takes it over.
    #[arg(long, env = "RECONCILE_MIN_AGE_MS", default_value_t = 10_000)]
    pub reconcile_min_age_ms: u64,
    /// How long a claimed payment is left to this gateway before another may
    /// take it (never less than twice PROVIDER_TIMEOUT_MS); grows with each attempt.
    #[arg(long, env = "RECONCILE_LEASE_MS", default_value_t = 30_000)]
    pub reconcile_lease_ms: u64,
    /// How often queued provider commands (capture, cancel, refund) are looked for
    /// (with payments.set_event_notifications(true), a NOTIFY also wakes the worker).
    #[arg(long, env = "COMMAND_INTERVAL_MS", default_value_t = 1_000)]
    pub command_interval_ms: u64,
    /// How often events due to webhook endpoints are looked for (with
    /// payments.set_event_notifications(true), NOTIFY payments_events also wakes the worker).
    #[arg(long, env = "DELIVERY_INTERVAL_MS", default_value_t = 1_000)]
    pub delivery_interval_ms: u64,
    /// How long a webhook endpoint has to answer a delivery.
    #[arg(long, env = "DELIVERY_TIMEOUT_MS", default_value_t = 10_000)]
    pub delivery_timeout_ms: u64,
    /// Internal networks webhook endpoints may nevertheless be at, comma-separated
    /// (`127.0.0.0/8,::1/128` for development). Loopback, private, link-local, shared,
    /// multicast and reserved addresses are refused otherwise.
    #[arg(long, env = "WEBHOOK_ALLOWED_NETWORKS", value_delimiter = ',')]
    pub webhook_allowed_networks: Vec<payments_core::webhook::destination::Network>,
    /// How often run_billing does what is due (renewals, invoices, dunning retries).
    #[arg(long, env = "BILLING_INTERVAL_MS", default_value_t = 60_000)]
    pub billing_interval_ms: u64,
    /// How long an authorization may wait for its capture before it is canceled
    /// (reason `automatic`; Stripe's window is 7 days).
    #[arg(long, env = "CAPTURE_WINDOW_MS", default_value_t = 7 * 24 * 3_600_000)]
    pub capture_window_ms: u64,
    /// Host headers /mcp answers, comma-separated (a defence against DNS rebinding):
    /// add the name clients reach the gateway by.
    #[arg(long, env = "MCP_ALLOWED_HOSTS", value_delimiter = ',', default_value = "localhost,127.0.0.1,::1")]
    pub mcp_allowed_hosts: Vec<String>,
    #[cfg(feature = "sandbox")]
    #[command(flatten)]
    pub sandbox: payments_sandbox::Knobs,
    /// Secret the embedded sandbox signs its webhooks with (register it with payments.add_webhook_secret).
    #[cfg(feature = "sandbox")]
    #[arg(long, env = "SANDBOX_WEBHOOK_SECRET", hide_env_values = true)]
    pub sandbox_webhook_secret: Option<String>,
}

#[cfg(feature = "sandbox")]
#[derive(Debug, Clone, Args)]
pub struct SandboxArgs {
    #[arg(long, env = "SANDBOX_LISTEN", default_value = "127.0.0.1:12111")]
    pub listen: SocketAddr,
    /// Where to deliver webhooks, e.g. http://127.0.0.1:8080/v1/webhooks/stripe.
    #[arg(long, env = "SANDBOX_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    #[arg(long, env = "SANDBOX_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// The one key the sandbox accepts; generated (and logged) when unset.
    #[arg(long, env = "SANDBOX_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    #[command(flatten)]
    pub knobs: payments_sandbox::Knobs,
}

/// Which payment provider the gateway talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProviderKind {
    Stripe,
    /// The embedded Stripe-compatible sandbox: development and tests only.
    Sandbox,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Stripe => "stripe",
            ProviderKind::Sandbox => "sandbox",
        }
    }
}

/// The provider a `serve` configuration asks for, or why it asks for none:
/// the sandbox only when named, Stripe only with a non-empty key.
pub fn provider_kind(args: &ServeArgs) -> Result<ProviderKind, String> {
    #[cfg(feature = "sandbox")]
    if args.sandbox_api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
        return Err("SANDBOX_API_KEY is set but empty".into());
    }
    #[cfg(not(feature = "sandbox"))]
    if args.provider == Some(ProviderKind::Sandbox) {
        return Err("this build has no sandbox (it was built without the `sandbox` feature)".into());
    }
    match (args.provider, args.stripe_secret_key.as_deref()) {
        (_, Some(key)) if key.trim().is_empty() => Err("STRIPE_SECRET_KEY is set but empty".into()),
        (Some(ProviderKind::Sandbox), Some(_)) => {
            Err("PAYMENTS_PROVIDER=sandbox and STRIPE_SECRET_KEY exclude each other: choose one".into())
        }
        (Some(ProviderKind::Sandbox), None) => Ok(ProviderKind::Sandbox),
        (_, Some(_)) => Ok(ProviderKind::Stripe),
        (_, None) => Err("no payment provider: set STRIPE_SECRET_KEY for Stripe, or PAYMENTS_PROVIDER=sandbox \
                          (--provider sandbox) for the development sandbox"
            .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(flags: &[&str]) -> ServeArgs {
        let mut argv = vec!["payments-gateway", "serve", "--database-url", "host=x"];
        argv.extend(flags);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(args) => *args,
            _ => unreachable!(),
        }
    }

    #[test]
    #[cfg(feature = "sandbox")]
    fn the_sandbox_runs_only_when_asked_for_and_stripe_only_with_a_key() {
        assert_eq!(provider_kind(&serve(&["--provider", "sandbox"])), Ok(ProviderKind::Sandbox));
        assert_eq!(provider_kind(&serve(&["--stripe-secret-key", "sk_live_x"])), Ok(ProviderKind::Stripe));
        let none = provider_kind(&serve(&[])).unwrap_err();
        assert!(none.contains("STRIPE_SECRET_KEY") && none.contains("PAYMENTS_PROVIDER=sandbox"), "{none}");
        assert!(provider_kind(&serve(&["--stripe-secret-key", ""])).unwrap_err().contains("empty"));
        assert!(provider_kind(&serve(&["--provider", "stripe"])).is_err());
        assert!(provider_kind(&serve(&["--provider", "sandbox", "--stripe-secret-key", "sk_x"])).is_err());
        assert!(provider_kind(&serve(&["--provider", "sandbox", "--sandbox-api-key", " "]))
            .unwrap_err()
            .contains("empty"));
    }

    #[test]
    #[cfg(not(feature = "sandbox"))]
    fn a_build_without_the_sandbox_refuses_it() {
        assert!(provider_kind(&serve(&["--provider", "sandbox"])).unwrap_err().contains("no sandbox"));
        assert!(Cli::try_parse_from(["payments-gateway", "sandbox"]).is_err());
    }
}
