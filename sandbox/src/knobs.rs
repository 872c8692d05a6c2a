//! What tests can make the sandbox do: latency, errors, webhook delay,
//! reordering and duplicates. Flags and environment variables (clap), or
//! `POST /_sandbox/config` at run time.

use clap::Args;

#[derive(Debug, Clone, Args, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Knobs {
    /// Added latency on every API call, in milliseconds.
    #[arg(long = "sandbox-latency-ms", env = "SANDBOX_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Share of API calls answered with a 500 api_error, in percent.
    #[arg(long = "sandbox-error-percent", env = "SANDBOX_ERROR_PERCENT", default_value_t = 0)]
    pub error_percent: u8,
    /// Delay before each webhook delivery, in milliseconds.
    #[arg(long = "sandbox-webhook-delay-ms", env = "SANDBOX_WEBHOOK_DELAY_MS", default_value_t = 0)]
    pub webhook_delay_ms: u64,
    /// Random extra delay per delivery, up to this many milliseconds: reorders webhooks.
    #[arg(long = "sandbox-webhook-jitter-ms", env = "SANDBOX_WEBHOOK_JITTER_MS", default_value_t = 0)]
    pub webhook_jitter_ms: u64,
    /// Share of webhooks delivered twice, in percent.
    #[arg(long = "sandbox-webhook-duplicate-percent", env = "SANDBOX_WEBHOOK_DUPLICATE_PERCENT", default_value_t = 0)]
    pub webhook_duplicate_percent: u8,
    /// How long an asynchronous payment method stays in processing, in milliseconds.
    #[arg(long = "sandbox-async-delay-ms", env = "SANDBOX_ASYNC_DELAY_MS", default_value_t = 500)]
    pub async_delay_ms: u64,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            latency_ms: 0,
            error_percent: 0,
            webhook_delay_ms: 0,
            webhook_jitter_ms: 0,
            webhook_duplicate_percent: 0,
            async_delay_ms: 500,
        }
    }
}
