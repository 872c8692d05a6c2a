//! Every closed set of words the extension stores or answers with, in one
//! place. SQL reads them from here (`payments.allowed_values()`, and CHECK
//! constraints through `payments._is_allowed`), and so does the gateway.
//!
//! One word, one idea: `noop` is a report of the status a payment already has;
//! `stale` is a report older than the payment's state (recorded, not applied);
//! `ignored` is a webhook whose event type moves no payment.

use crate::evidence;
use crate::ledger;
use crate::lifecycle;
use crate::state::{self, Source, Status};
use crate::webhook::Scheme;

/// Declares the closed sets, each once: its variant, its SQL name, its values and the
/// allocation-free test CHECK constraints ask (`value` is the word tested). Adding a set is one
/// entry here.
macro_rules! kinds {
    ($value:ident;
     $($(#[$doc:meta])* $variant:ident => $name:literal, values: $values:expr, allows: $allows:expr;)*) => {
        /// A set of allowed values, by its SQL name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Kind {
            $($(#[$doc])* $variant,)*
        }

        /// Every set, in the order `payments.allowed_values()` lists them.
        pub const KINDS: &[Kind] = &[$(Kind::$variant,)*];

        impl Kind {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Kind::$variant => $name,)*
                }
            }

            pub fn values(self) -> Vec<&'static str> {
                match self {
                    $(Kind::$variant => $values,)*
                }
            }

            /// What CHECK constraints ask on every insert: no allocation.
            pub fn allows(self, $value: &str) -> bool {
                match self {
                    $(Kind::$variant => $allows,)*
                }
            }
        }
    };
}

kinds! { value;
    /// `payments.payments.status`.
    Status => "status",
        values: state::ALL.iter().map(|s| s.as_str()).collect(),
        allows: Status::parse(value).is_some();
    /// `payments.payment_events.source`: who asked for a transition.
    Source => "source",
        values: Source::ALL.iter().map(|s| s.as_str()).collect(),
        allows: Source::parse(value).is_some();
    /// `payments.payments.capture_method`.
    CaptureMethod => "capture_method",
        values: CAPTURE_METHODS.to_vec(),
        allows: CAPTURE_METHODS.contains(&value);
    /// `payments.webhook_secrets.scheme`.
    WebhookScheme => "webhook_scheme",
        values: Scheme::ALL.iter().map(|s| s.as_str()).collect(),
        allows: Scheme::parse(value).is_some();
    /// `payments.api_keys.scopes`.
    ApiKeyScope => "api_key_scope",
        values: API_KEY_SCOPES.to_vec(),
        allows: API_KEY_SCOPES.contains(&value);
    /// `payment_result.outcome`: what a mutating call did.
    Outcome => "outcome",
        values: OUTCOMES.to_vec(),
        allows: OUTCOMES.contains(&value);
    /// `payments.webhook_events.result`: what ingest_webhook did with an event.
    WebhookResult => "webhook_result",
        values: WEBHOOK_RESULTS.to_vec(),
        allows: WEBHOOK_RESULTS.contains(&value);
    /// `payments.anomalies.kind`: why a provider object was not evidence for a payment.
    AnomalyKind => "anomaly_kind",
        values: evidence::ALL.iter().map(|a| a.as_str()).collect(),
        allows: evidence::ALL.iter().any(|a| a.as_str() == value);
    /// `payments.provider_commands.kind`: what the gateway is asked to tell the provider.
    CommandKind => "command_kind",
        values: COMMAND_KINDS.to_vec(),
        allows: COMMAND_KINDS.contains(&value);
    /// `payments.provider_commands.status`.
    CommandStatus => "command_status",
        values: COMMAND_STATUSES.to_vec(),
        allows: COMMAND_STATUSES.contains(&value);
    /// `payments.payments.cancellation_reason`, as Stripe names them.
    CancellationReason => "cancellation_reason",
        values: CANCELLATION_REASONS.to_vec(),
        allows: CANCELLATION_REASONS.contains(&value);
    /// `payments.refunds.status`.
    RefundStatus => "refund_status",
        values: lifecycle::REFUND.statuses.to_vec(),
        allows: lifecycle::REFUND.is_status(value);
    /// `payments.refunds.reason`, as Stripe names them.
    RefundReason => "refund_reason",
        values: REFUND_REASONS.to_vec(),
        allows: REFUND_REASONS.contains(&value);
    /// `payments.disputes.status`, Stripe's.
    DisputeStatus => "dispute_status",
        values: lifecycle::DISPUTE.statuses.to_vec(),
        allows: lifecycle::DISPUTE.is_status(value);
    /// `payments.meters.aggregation`: how a meter's usage events add up.
    MeterAggregation => "meter_aggregation",
        values: METER_AGGREGATIONS.to_vec(),
        allows: METER_AGGREGATIONS.contains(&value);
    /// `payments.subscriptions.status`, Stripe's.
    SubscriptionStatus => "subscription_status",
        values: lifecycle::SUBSCRIPTION.statuses.to_vec(),
        allows: lifecycle::SUBSCRIPTION.is_status(value);
    /// `payments.plans.billing_interval`.
    BillingInterval => "billing_interval",
        values: BILLING_INTERVALS.to_vec(),
        allows: BILLING_INTERVALS.contains(&value);
    /// `payments.invoices.status`, Stripe's.
    InvoiceStatus => "invoice_status",
        values: lifecycle::INVOICE.statuses.to_vec(),
        allows: lifecycle::INVOICE.is_status(value);
    /// `payments.dashboard_users.role`: what a person signed in to the dashboard may do.
    DashboardRole => "dashboard_role",
        values: DASHBOARD_ROLES.to_vec(),
        allows: DASHBOARD_ROLES.contains(&value);
    /// `payments.ledger_transfers.debit_account` and `credit_account`: the chart of accounts.
    LedgerAccount => "ledger_account",
        values: ledger::ACCOUNTS.iter().map(|a| a.name).collect(),
        allows: ledger::account_named(value).is_some();
    /// `payments.ledger_transfers.kind`: what a transfer records.
    TransferKind => "transfer_kind",
        values: ledger::TRANSFER_KINDS.to_vec(),
        allows: ledger::TRANSFER_KINDS.contains(&value);
    /// `payments.holds.status`.
    HoldStatus => "hold_status",
        values: lifecycle::HOLD.statuses.to_vec(),
        allows: lifecycle::HOLD.is_status(value);
    /// `payments.holds.refusal`: why a reserve was refused.
    HoldRefusal => "hold_refusal",
        values: ledger::HOLD_REFUSALS.to_vec(),
        allows: ledger::HOLD_REFUSALS.contains(&value);
    /// `payments.invoice_lines.kind`: what a line of an invoice charges or takes off.
    InvoiceLineKind => "invoice_line_kind",
        values: ledger::INVOICE_LINE_KINDS.to_vec(),
        allows: ledger::INVOICE_LINE_KINDS.contains(&value);
    /// `payments.coupons.duration`: how long a coupon's discount lasts, as Stripe's.
    CouponDuration => "coupon_duration",
        values: COUPON_DURATIONS.to_vec(),
        allows: COUPON_DURATIONS.contains(&value);
    /// `payments.credit_notes.reason`, Stripe's.
    CreditNoteReason => "credit_note_reason",
        values: CREDIT_NOTE_REASONS.to_vec(),
        allows: CREDIT_NOTE_REASONS.contains(&value);
    /// `payments.credit_notes.method`: what a credit note did.
    CreditNoteMethod => "credit_note_method",
        values: CREDIT_NOTE_METHODS.to_vec(),
        allows: CREDIT_NOTE_METHODS.contains(&value);
    /// `payments.subscriptions.missing_payment_method`: what a trial's end does without a payment method.
    MissingPaymentMethod => "missing_payment_method",
        values: MISSING_PAYMENT_METHOD.to_vec(),
        allows: MISSING_PAYMENT_METHOD.contains(&value);
    /// `payments.outbox_events.object`: what an event told to apps is about (the `<object>` of
    /// its type `<object>.<event>`, and of a webhook endpoint's event types).
    EventObject => "event_object",
        values: EVENT_OBJECTS.to_vec(),
        allows: EVENT_OBJECTS.contains(&value);
}

pub const CAPTURE_METHODS: [&str; 2] = ["automatic", "manual"];
/// The scope of GET routes.
pub const SCOPE_READ: &str = "payments:read";
/// The scope of POST routes.
pub const SCOPE_WRITE: &str = "payments:write";
/// Registering, listing and removing webhook endpoints: an endpoint receives every
/// customer's events, so a key that may only write must not be able to add one.
pub const SCOPE_WEBHOOKS: &str = "webhooks:manage";
/// What changes the platform's records wholesale (a reconciliation's repair).
pub const SCOPE_ADMIN: &str = "payments:admin";
pub const API_KEY_SCOPES: [&str; 4] = [SCOPE_READ, SCOPE_WRITE, SCOPE_WEBHOOKS, SCOPE_ADMIN];
/// `created` and `replayed` come from create_payment; `applied`, `noop` and
/// `stale` are transition decisions; `mismatch`: the provider's object was not
/// evidence for the payment (an anomaly was recorded, nothing applied);
/// `queued`: a provider command (capture, cancel, refund) waits for the gateway.
pub const OUTCOMES: [&str; 7] = ["created", "replayed", "applied", "noop", "stale", "mismatch", "queued"];
pub const COMMAND_KINDS: [&str; 3] = ["capture", "cancel", "refund"];
/// `pending` until the provider answered: `succeeded` (it did it) or `failed` (it refused).
pub const COMMAND_STATUSES: [&str; 3] = ["pending", "succeeded", "failed"];
/// Stripe's cancellation reasons; `automatic` only the extension gives (an authorization left uncaptured).
pub const CANCELLATION_REASONS: [&str; 5] =
    ["duplicate", "fraudulent", "requested_by_customer", "abandoned", "automatic"];
/// Stripe's refund reasons (`expired_uncaptured_charge` only Stripe gives).
pub const REFUND_REASONS: [&str; 4] = ["duplicate", "fraudulent", "requested_by_customer", "expired_uncaptured_charge"];
/// Stripe's and Lago's meter aggregations.
pub const METER_AGGREGATIONS: [&str; 5] = ["sum", "count", "count_unique", "max", "last"];
/// Subscriptions that grant their plan and renew.
pub const SUBSCRIPTION_CURRENT: [&str; 3] = ["trialing", "active", "past_due"];
/// Subscriptions whose open invoices are still collected: the current ones, and those whose
/// renewal (`unpaid`) or first invoice (`incomplete`) has not been paid yet.
pub const SUBSCRIPTION_COLLECTED: [&str; 5] = ["trialing", "active", "past_due", "unpaid", "incomplete"];
/// Subscriptions in a period that was paid for (not a trial): usage thresholds, period-end changes.
pub const SUBSCRIPTION_PAID_PERIOD: [&str; 2] = ["active", "past_due"];
/// Payments that wait on their customer (a payment method, a confirmation, an action).
pub const PAYMENT_AWAITING_CUSTOMER: [&str; 3] =
    ["requires_payment_method", "requires_confirmation", "requires_action"];
pub const BILLING_INTERVALS: [&str; 4] = ["day", "week", "month", "year"];
/// How long a coupon's discount lasts on a subscription, as Stripe's: the next invoice's period,
/// `duration_in_periods` periods, or as long as the subscription.
pub const COUPON_DURATIONS: [&str; 3] = ["once", "repeating", "forever"];
/// Why a credit note was issued: Stripe's reasons.
pub const CREDIT_NOTE_REASONS: [&str; 4] = ["duplicate", "fraudulent", "order_change", "product_unsatisfactory"];
/// What a credit note did: lowered what an open invoice owes, refunded a paid one's payment, or
/// credited the customer's balance.
pub const CREDIT_NOTE_METHODS: [&str; 3] = ["reduced_amount_due", "refund", "customer_balance"];
/// Idempotency keys the extension and the gateway make for themselves (an
/// invoice's attempts, a dashboard operator's refunds, automatic top-ups): an API caller may not
/// send one, so it can never claim a key before the product uses it.
pub const RESERVED_KEY_PREFIXES: [&str; 3] = ["invoice:", "dashboard:", "top-up:"];

/// What a status group holds, worked out when asked (some derive from a state machine).
pub type Members = fn() -> Vec<&'static str>;

/// The named subsets SQL tests membership of (`status = ANY (payments._group('…'))`),
/// each written once: here or, for payments, in the state machine.
pub const GROUPS: [(&str, Members); 6] = [
    // A payment can be canceled exactly when the state machine has an edge to `canceled`.
    ("cancelable_payment_status", || {
        state::ALL.iter().filter(|s| s.can_move_to(Status::Canceled)).map(|s| s.as_str()).collect()
    }),
    ("awaiting_customer_payment_status", || PAYMENT_AWAITING_CUSTOMER.to_vec()),
    ("current_subscription_status", || SUBSCRIPTION_CURRENT.to_vec()),
    ("collected_subscription_status", || SUBSCRIPTION_COLLECTED.to_vec()),
    ("paid_period_subscription_status", || SUBSCRIPTION_PAID_PERIOD.to_vec()),
    // A subscription that has not ended: every status its lifecycle can still leave.
    ("live_subscription_status", || lifecycle::SUBSCRIPTION.open_statuses()),
];

/// The members of a named subset (`GROUPS`), or None for a name that is not one.
pub fn group(name: &str) -> Option<Vec<&'static str>> {
    GROUPS.iter().find(|(n, _)| *n == name).map(|(_, members)| members())
}

/// The reserved prefix `key` starts with, if any.
pub fn reserved_key_prefix(key: &str) -> Option<&'static str> {
    RESERVED_KEY_PREFIXES.into_iter().find(|prefix| key.starts_with(prefix))
}
/// `duplicate` is answered for a repeat delivery but never stored (the first one is).
/// A viewer reads every page; an operator may also refund, capture and cancel.
pub const DASHBOARD_VIEWER: &str = "viewer";
pub const DASHBOARD_OPERATOR: &str = "operator";
pub const DASHBOARD_ROLES: [&str; 2] = [DASHBOARD_VIEWER, DASHBOARD_OPERATOR];
/// What events told to apps are about: the objects with a lifecycle, a customer's credits
/// (`credits.expiring`, a week ahead), its budget (`spend_limit.reached`, at 50, 80 and 100 %)
/// and its balance of credits in a unit (`balance.low`, below the threshold it was given).
pub const EVENT_OBJECTS: [&str; 9] =
    ["payment", "refund", "dispute", "subscription", "invoice", "credit_note", "credits", "spend_limit", "balance"];
/// What a trial's end does to a subscription without a payment method, as Stripe's
/// `trial_settings.end_behavior.missing_payment_method`: invoice it anyway (it goes past_due,
/// the default), pause it, or cancel it.
pub const MISSING_PAYMENT_METHOD: [&str; 3] = ["create_invoice", "pause", "cancel"];
pub const WEBHOOK_RESULTS: [&str; 6] = ["applied", "noop", "stale", "ignored", "pending_match", "mismatch"];

impl Kind {
    pub fn parse(name: &str) -> Option<Kind> {
        KINDS.iter().copied().find(|k| k.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_is_a_subset_of_its_closed_set() {
        for (name, _) in GROUPS {
            let members = group(name).unwrap();
            let kind = if name.ends_with("subscription_status") { Kind::SubscriptionStatus } else { Kind::Status };
            assert!(!members.is_empty() && members.iter().all(|m| kind.allows(m)), "{name}: {members:?}");
        }
        assert_eq!(group("no_such_group"), None);
        // Stripe's cancelable PaymentIntent statuses, and what waits on the customer among them.
        let cancelable = group("cancelable_payment_status").unwrap();
        assert_eq!(
            cancelable,
            ["requires_payment_method", "requires_confirmation", "requires_action", "requires_capture"]
        );
        assert!(PAYMENT_AWAITING_CUSTOMER.iter().all(|s| cancelable.contains(s)));
        assert!(SUBSCRIPTION_PAID_PERIOD.iter().all(|s| SUBSCRIPTION_CURRENT.contains(s)));
        assert!(SUBSCRIPTION_CURRENT.iter().all(|s| SUBSCRIPTION_COLLECTED.contains(s)));
    }

    #[test]
    fn names_round_trip_and_every_set_is_non_empty() {
        for &k in KINDS {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
            assert!(!k.values().is_empty());
            for v in k.values() {
                assert!(k.allows(v), "{} {v}", k.as_str());
            }
            assert!(!k.allows(""));
            assert!(!k.allows("unknown"));
        }
    }

    #[test]
    fn transition_decisions_are_outcomes() {
        for d in [state::Decision::Apply, state::Decision::Noop, state::Decision::Stale] {
            assert!(Kind::Outcome.allows(d.outcome().unwrap()));
        }
        assert_eq!(state::Decision::Forbidden.outcome(), None);
    }

    #[test]
    fn keys_the_product_makes_are_reserved() {
        assert_eq!(super::reserved_key_prefix("invoice:inv_1:1"), Some("invoice:"));
        assert_eq!(super::reserved_key_prefix("dashboard:7:abc"), Some("dashboard:"));
        assert_eq!(super::reserved_key_prefix("order-invoice:1"), None);
    }
}
