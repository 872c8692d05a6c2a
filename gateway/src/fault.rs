//! Fault points for the reliability suite: with `PAYMENTS_FAULT_POINT=<name>`
//! in its environment, the gateway process dies at that point, as a crash or
//! a `kill -9` would leave it. Unset (always, outside tests) they do nothing.

use std::sync::OnceLock;

/// Dies here if this is the configured fault point.
pub fn point(name: &str) {
    static CONFIGURED: OnceLock<Option<String>> = OnceLock::new();
    let configured = CONFIGURED.get_or_init(|| std::env::var("PAYMENTS_FAULT_POINT").ok());
    if configured.as_deref() == Some(name) {
        eprintln!("payments-gateway: fault point {name}: exiting as a crash would");
        std::process::exit(86);
    }
}
