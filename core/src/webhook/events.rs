//! What a Stripe event type means for a payment's status.

use crate::state::Status;

/// The status a `payment_intent.*` event reports, or `None` for event types
/// that do not move a payment (they are stored as `ignored`). Refund events are
/// stored too and will be applied by the refunds feature.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_intent_events_map_to_statuses_and_others_to_none() {
        assert_eq!(stripe_payment_status("payment_intent.succeeded"), Some(Status::Succeeded));
        assert_eq!(stripe_payment_status("payment_intent.payment_failed"), Some(Status::Failed));
        assert_eq!(stripe_payment_status("payment_intent.amount_capturable_updated"), Some(Status::RequiresCapture));
        for other in ["payment_intent.created", "charge.refunded", "refund.created", "customer.created", ""] {
            assert_eq!(stripe_payment_status(other), None, "{other}");
        }
    }
}
