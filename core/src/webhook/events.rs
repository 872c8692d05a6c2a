//! What Stripe's event types and PaymentIntent statuses mean for a payment.

use crate::state::Status;

/// The status a `payment_intent.*` event reports, or `None` for event types
/// that do not move a payment (see `stripe_subject` for the others).
pub fn stripe_payment_status(event_type: &str) -> Option<Status> {
    Some(match event_type {
        "payment_intent.processing" => Status::Processing,
        "payment_intent.requires_action" => Status::RequiresAction,
        "payment_intent.amount_capturable_updated" => Status::RequiresCapture,
        "payment_intent.succeeded" => Status::Succeeded,
        "payment_intent.payment_failed" => Status::Failed,
        "payment_intent.canceled" => Status::Canceled,
        _ => return None,
    })
}

/// What an event's `data.object` is, for the events that move money: `payment`
/// (a PaymentIntent), `refund` (a Refund), `charge` (a Charge listing its
/// refunds) or `dispute` (a Dispute). None: stored as `ignored`.
pub fn stripe_subject(event_type: &str) -> Option<&'static str> {
    if stripe_payment_status(event_type).is_some() {
        return Some("payment");
    }
    match event_type {
        "refund.created" | "refund.updated" | "refund.failed" | "charge.refund.updated" => Some("refund"),
        "charge.refunded" => Some("charge"),
        "charge.dispute.created"
        | "charge.dispute.updated"
        | "charge.dispute.closed"
        | "charge.dispute.funds_withdrawn"
        | "charge.dispute.funds_reinstated" => Some("dispute"),
        _ => None,
    }
}

/// Our status for a PaymentIntent status. Stripe leaves a declined intent in
/// `requires_payment_method` with `last_payment_error`; here a decline is final
/// (`failed`). Without an error that status reports nothing (`None`).
pub fn payment_intent_status(status: &str, has_last_payment_error: bool) -> Option<Status> {
    match status {
        "requires_payment_method" if has_last_payment_error => Some(Status::Failed),
        "requires_payment_method" => None,
        other => Status::parse(other).filter(|s| *s != Status::Failed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_intent_statuses_map_one_to_one_and_a_decline_fails() {
        assert_eq!(payment_intent_status("succeeded", false), Some(Status::Succeeded));
        assert_eq!(payment_intent_status("requires_capture", false), Some(Status::RequiresCapture));
        assert_eq!(payment_intent_status("requires_payment_method", true), Some(Status::Failed));
        assert_eq!(payment_intent_status("requires_payment_method", false), None);
        assert_eq!(payment_intent_status("failed", false), None, "not a Stripe status");
    }

    #[test]
    fn payment_intent_events_map_to_statuses_and_others_to_none() {
        assert_eq!(stripe_payment_status("payment_intent.succeeded"), Some(Status::Succeeded));
        assert_eq!(stripe_payment_status("payment_intent.payment_failed"), Some(Status::Failed));
        assert_eq!(stripe_payment_status("payment_intent.amount_capturable_updated"), Some(Status::RequiresCapture));
        for other in ["payment_intent.created", "charge.refunded", "refund.created", "customer.created", ""] {
            assert_eq!(stripe_payment_status(other), None, "{other}");
        }
    }

    #[test]
    fn money_events_name_their_object_and_others_none() {
        assert_eq!(stripe_subject("payment_intent.succeeded"), Some("payment"));
        assert_eq!(stripe_subject("refund.failed"), Some("refund"));
        assert_eq!(stripe_subject("charge.refund.updated"), Some("refund"));
        assert_eq!(stripe_subject("charge.refunded"), Some("charge"));
        assert_eq!(stripe_subject("charge.dispute.closed"), Some("dispute"));
        for other in ["payment_intent.created", "charge.succeeded", "customer.created", ""] {
            assert_eq!(stripe_subject(other), None, "{other}");
        }
    }
}
