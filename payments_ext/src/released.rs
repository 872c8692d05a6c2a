//! Functions that released versions' install scripts still create, and that
//! the current version no longer has (its upgrade drops them). One shared
//! library serves every version: `CREATE EXTENSION payments VERSION '0.3.0'`
//! followed by an update must find their symbols, so they stay here, with no
//! SQL of their own (`sql = false`). Remove one only when no release in
//! `sql/releases/` names it.

use payments_core::provider::stripe;
use pgrx::prelude::*;

/// 0.1.0–0.3.0 `_stripe_event_status`.
#[pg_extern(immutable, parallel_safe, sql = false)]
fn stripe_event_status(event_type: &str) -> Option<&'static str> {
    stripe::payment_status(event_type).map(|s| s.as_str())
}

/// 0.3.0 `_stripe_event_subject`.
#[pg_extern(immutable, parallel_safe, sql = false)]
fn stripe_event_subject(event_type: &str) -> Option<&'static str> {
    stripe::subject(event_type).map(|k| k.as_str())
}

/// 0.3.0 `_stripe_refund_status`.
#[pg_extern(immutable, parallel_safe, sql = false)]
fn stripe_refund_status(status: &str) -> Option<&'static str> {
    stripe::refund_status(status)
}

/// 0.3.0 `_stripe_intent_status`.
#[pg_extern(immutable, parallel_safe, sql = false)]
fn stripe_intent_status(status: &str, has_last_payment_error: bool) -> Option<&'static str> {
    stripe::intent_status(status, has_last_payment_error).map(|s| s.as_str())
}

/// 0.1.0–0.3.0 `_is_json_object`.
#[pg_extern(immutable, parallel_safe, sql = false)]
fn is_json_object(body: &[u8]) -> bool {
    body.trim_ascii_start().first() == Some(&b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}
