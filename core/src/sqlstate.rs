//! Every SQLSTATE a client can get from the extension or the gateway, in one
//! table: the code, the gateway's error code and HTTP status, and what it
//! means. The gateway maps errors from it, and tests check `sql/*.sql`, the
//! core error enum and the book's error table (docs/src/errors.md) against it, so none can drift.

/// One documented SQLSTATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    /// The five-character SQLSTATE (class `PM` is the extension's own).
    pub sqlstate: &'static str,
    /// The gateway's `error.code`.
    pub name: &'static str,
    /// The gateway's HTTP status.
    pub http_status: u16,
    /// The gateway's `error.type` (Stripe's error types).
    pub kind: ErrorKind,
    /// The request parameter the error is about, when there is one.
    pub param: Option<&'static str>,
    /// What it means, as the book's error table (docs/src/errors.md) says it.
    pub meaning: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    Idempotency,
    Permission,
    Api,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request_error",
            Self::Authentication => "authentication_error",
            Self::Idempotency => "idempotency_error",
            Self::Permission => "permission_error",
            Self::Api => "api_error",
        }
    }
}

use ErrorKind::*;

const fn code(
    sqlstate: &'static str,
    name: &'static str,
    http_status: u16,
    kind: ErrorKind,
    param: Option<&'static str>,
    meaning: &'static str,
) -> Code {
    Code { sqlstate, name, http_status, kind, param, meaning }
}

/// Every code, in the order of the book's error table. PostgreSQL's own codes follow the extension's.
pub const REGISTRY: &[Code] = &[
    code("PM100", "parameter_invalid", 400, InvalidRequest, None,
         "invalid argument (a text too long or empty, metadata beyond Stripe's limits, capture method, unknown status or source, `lim` out of range, purge under 24 h, tolerance out of bounds)"),
    code("PM101", "amount_too_precise", 400, InvalidRequest, Some("amount"),
         "amount has more decimal places than the currency allows"),
    code("PM102", "amount_not_positive", 400, InvalidRequest, Some("amount"), "amount is zero or negative"),
    code("PM103", "currency_unknown", 400, InvalidRequest, Some("currency"), "unknown currency"),
    code("PM104", "amount_too_large", 400, InvalidRequest, Some("amount"), "amount above the maximum"),
    code("PM105", "amount_invalid", 400, InvalidRequest, Some("amount"),
         "amount is not a finite number (NaN, Infinity)"),
    code("PM106", "unit_unknown", 400, InvalidRequest, Some("unit"),
         "unknown unit: neither a currency nor a credit unit's name (lower-case letters, digits, underscores)"),
    code("PM110", "sign_in_failed", 401, Authentication, None,
         "dashboard sign-in refused: wrong email or password, or a disabled user (one answer for each)"),
    code("PM201", "idempotency_key_reused", 409, Idempotency, Some("Idempotency-Key"),
         "idempotency key already used with different parameters (create_payment, create_refund)"),
    code("PM202", "transition_not_allowed", 409, InvalidRequest, Some("status"),
         "transition not allowed by the state machine"),
    code("PM203", "provider_payment_conflict", 409, InvalidRequest, None,
         "provider payment id already linked elsewhere"),
    code("PM204", "resource_missing", 404, InvalidRequest, Some("id"), "payment, refund, dispute, subscription, invoice, webhook endpoint or delivery (or provider command) not found"),
    code("PM205", "history_append_only", 409, InvalidRequest, None, "append-only history: change refused"),
    code("PM206", "payment_unexpected_state", 409, InvalidRequest, None,
         "the payment's status does not allow the command (capture: requires_capture; cancel: not processing or final; refund: succeeded at a provider)"),
    code("PM207", "amount_too_large", 400, InvalidRequest, Some("amount"), "capture above the authorized amount, refund above what is left to refund, a settle above what its hold holds, or a credit note above what its invoice has left to credit"),
    code("PM208", "command_pending", 409, InvalidRequest, None,
         "another capture or cancel is pending at the provider for the payment"),
    code("PM209", "payment_not_at_provider_yet", 409, InvalidRequest, None,
         "cancel while the provider may be creating the payment (no provider id yet): retry shortly"),
    code("PM210", "spend_limit_reached", 409, InvalidRequest, Some("amount"),
         "a top-up would pass the customer's spend limit for the period (set_spend_limit)"),
    code("PM301", "webhook_signature_invalid", 400, InvalidRequest, None,
         "webhook signature does not verify (or its header is missing or malformed)"),
    code("PM302", "webhook_timestamp_outside_tolerance", 400, InvalidRequest, None,
         "webhook timestamp outside the tolerance (too old or in the future)"),
    code("PM303", "webhook_provider_unknown", 404, InvalidRequest, None,
         "no active webhook secret for the provider named in the URL (not echoed)"),
    code("PM304", "webhook_event_invalid", 400, InvalidRequest, None,
         "verified webhook body is no event of the provider's wire format (Stripe: `id`, `type`)"),
    code("PM401", "scale_out_unavailable", 409, InvalidRequest, None,
         "`payments.distribute()` without Citus, or not on the coordinator"),
    code("40001", "concurrent_update_retry", 409, Api, None,
         "a concurrent transaction claimed the idempotency key (REPEATABLE READ/SERIALIZABLE) or stored the webhook event: retry"),
    code("40P01", "concurrent_update_retry", 409, Api, None, "deadlock detected: retry"),
    code("42501", "database_permission_denied", 403, Permission, None, "the role lacks the privilege"),
    code("22P02", "parameter_invalid", 400, InvalidRequest, None,
         "a value that is not valid input for its type (e.g. an amount that is not a number)"),
    code("22021", "parameter_invalid", 400, InvalidRequest, None,
         "text that PostgreSQL cannot store, such as a NUL character"),
    code("22007", "parameter_invalid", 400, InvalidRequest, None,
         "a date or time that is not valid input (e.g. a reconciliation window's bound)"),
    code("22008", "parameter_invalid", 400, InvalidRequest, None, "a date or time out of range"),
    code("22P05", "parameter_invalid", 400, InvalidRequest, None,
         "JSON that PostgreSQL cannot store, such as \\u0000 in a string"),
    code("22003", "parameter_invalid", 400, InvalidRequest, None, "a number out of range, such as an amount of 1e131072"),
    code("54000", "parameter_invalid", 400, InvalidRequest, None, "a value too large to store or index"),
    code("54001", "parameter_invalid", 400, InvalidRequest, None, "input nested too deeply"),
    code("57014", "database_timeout", 504, Api, None, "statement timeout"),
];

/// Whole SQLSTATE classes the gateway answers alike: the database is
/// unreachable or out of resources.
pub const UNAVAILABLE_CLASSES: &[&str] = &["08", "53", "57P"];

/// The answer for a SQLSTATE that is neither registered nor in an unavailable class.
pub const INTERNAL: Code = code("XX000", "internal_error", 500, Api, None, "an unexpected error");

const UNAVAILABLE: Code =
    code("08000", "database_unavailable", 503, Api, None, "database unreachable or out of resources");

/// How a SQLSTATE is answered.
pub fn lookup(sqlstate: &str) -> &'static Code {
    if let Some(c) = REGISTRY.iter().find(|c| c.sqlstate == sqlstate) {
        c
    } else if UNAVAILABLE_CLASSES.iter().any(|class| sqlstate.starts_with(class)) {
        &UNAVAILABLE
    } else {
        &INTERNAL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for c in REGISTRY {
            assert!(seen.insert(c.sqlstate), "{} twice", c.sqlstate);
            assert_eq!(c.sqlstate.len(), 5);
            assert!(c.sqlstate.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
            assert!((400..600).contains(&c.http_status));
        }
    }

    #[test]
    fn every_error_of_the_money_enum_is_registered() {
        use crate::error::Error;
        for e in Error::one_of_each() {
            assert_ne!(lookup(e.sqlstate()), &INTERNAL, "{}", e.sqlstate());
        }
    }

    #[test]
    fn unknown_codes_are_internal_and_connection_classes_unavailable() {
        assert_eq!(lookup("XX000").http_status, 500);
        assert_eq!(lookup("PM999").http_status, 500);
        assert_eq!(lookup("08006").http_status, 503);
        assert_eq!(lookup("53300").http_status, 503);
        assert_eq!(lookup("57P01").http_status, 503);
        assert_eq!(lookup("57014").http_status, 504);
    }
}
