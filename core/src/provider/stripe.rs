//! Stripe's wire format: its event types, PaymentIntent, Refund, Dispute and
//! Charge objects, read as evidence. The sandbox speaks it too.

use super::{present, read_event, refunds_of, text, unix_seconds, Event, Evidence, Format, Kind};
use crate::lifecycle::{DISPUTE, REFUND};
use crate::state::Status;
use serde_json::Value;

pub struct Stripe;

impl Format for Stripe {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn event(&self, body: &[u8]) -> Result<Event, String> {
        read_event(
            body,
            |event| &event["data"]["object"],
            |event_type, object| match subject(event_type)? {
                Kind::Payment => self.object(Some(Kind::Payment), object).map(|e| Evidence {
                    // The event type says what happened; the object may already be further along.
                    status: payment_status(event_type).map(Status::as_str),
                    ..e
                }),
                kind => self.object(Some(kind), object),
            },
        )
    }

    fn object(&self, kind: Option<Kind>, object: &Value) -> Option<Evidence> {
        if !object.is_object() {
            return None;
        }
        // An object says what it is; one that does not (a bare answer) is what the caller expects.
        let kind = match (kind, object.get("object")) {
            (Some(expected), None) => expected,
            (expected, Some(named)) => {
                let named = named.as_str().and_then(object_kind)?;
                if expected.is_some_and(|e| e != named) {
                    return None;
                }
                named
            }
            (None, None) => return None,
        };
        let o = object;
        let common = Evidence {
            kind: Some(kind),
            id: text(&o["id"]),
            provider_payment_id: text(&o["payment_intent"]),
            amount: present(&o["amount"]),
            currency: present(&o["currency"]),
            created: unix_seconds(&o["created"]),
            ..Default::default()
        };
        Some(match kind {
            Kind::Payment => Evidence {
                provider_payment_id: text(&o["id"]),
                status: intent_status(o["status"].as_str().unwrap_or(""), o["last_payment_error"].is_object())
                    .map(Status::as_str),
                amount_received: present(&o["amount_received"]),
                amount_capturable: present(&o["amount_capturable"]),
                our_id: text(&o["metadata"]["payment_id"]),
                error: present(&o["last_payment_error"]),
                ..common
            },
            Kind::Refund => Evidence {
                status: o["status"].as_str().and_then(refund_status),
                our_id: text(&o["metadata"]["refund_id"]),
                error: present(&o["failure_reason"]),
                reason: text(&o["reason"]),
                ..common
            },
            Kind::Dispute => Evidence {
                status: o["status"].as_str().and_then(|s| DISPUTE.statuses.iter().copied().find(|d| *d == s)),
                reason: text(&o["reason"]),
                due_by: unix_seconds(&o["evidence_details"]["due_by"]),
                ..common
            },
            Kind::Charge => Evidence { refunds: refunds_of(self, &o["refunds"]["data"], &common), ..common },
        })
    }

    fn secret_paths(&self) -> &'static [&'static str] {
        // A PaymentIntent's, also inside a decline's error.
        &["client_secret", "error.payment_intent.client_secret"]
    }
}

/// Our kind for a Stripe object type.
fn object_kind(object: &str) -> Option<Kind> {
    Some(match object {
        "payment_intent" => Kind::Payment,
        "refund" => Kind::Refund,
        "dispute" => Kind::Dispute,
        "charge" => Kind::Charge,
        _ => return None,
    })
}

/// The status a `payment_intent.*` event reports, or `None` for event types
/// that do not move a payment.
pub fn payment_status(event_type: &str) -> Option<Status> {
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

/// What an event's `data.object` is, for the events that move money; None: stored as `ignored`.
pub fn subject(event_type: &str) -> Option<Kind> {
    if payment_status(event_type).is_some() {
        return Some(Kind::Payment);
    }
    match event_type {
        "refund.created" | "refund.updated" | "refund.failed" | "charge.refund.updated" => Some(Kind::Refund),
        "charge.refunded" => Some(Kind::Charge),
        "charge.dispute.created"
        | "charge.dispute.updated"
        | "charge.dispute.closed"
        | "charge.dispute.funds_withdrawn"
        | "charge.dispute.funds_reinstated" => Some(Kind::Dispute),
        _ => None,
    }
}

/// Our status for a PaymentIntent status. Stripe leaves a declined intent in
/// `requires_payment_method` with `last_payment_error`; here a decline is final
/// (`failed`). Without an error that status reports nothing (`None`).
pub fn intent_status(status: &str, has_last_payment_error: bool) -> Option<Status> {
    match status {
        "requires_payment_method" if has_last_payment_error => Some(Status::Failed),
        "requires_payment_method" => None,
        other => Status::parse(other).filter(|s| *s != Status::Failed),
    }
}

/// Our refund status for Stripe's. `requires_action` is Stripe's word for a
/// refund waiting on the customer (some payment methods): pending here.
pub fn refund_status(stripe: &str) -> Option<&'static str> {
    match stripe {
        "requires_action" => Some("pending"),
        other => REFUND.statuses.iter().copied().find(|s| *s == other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(body: Value) -> Result<Event, String> {
        Stripe.event(body.to_string().as_bytes())
    }

    #[test]
    fn payment_intent_statuses_map_one_to_one_and_a_decline_fails() {
        assert_eq!(intent_status("succeeded", false), Some(Status::Succeeded));
        assert_eq!(intent_status("requires_capture", false), Some(Status::RequiresCapture));
        assert_eq!(intent_status("requires_payment_method", true), Some(Status::Failed));
        assert_eq!(intent_status("requires_payment_method", false), None);
        assert_eq!(intent_status("failed", false), None, "not a Stripe status");
    }

    #[test]
    fn payment_intent_events_map_to_statuses_and_others_to_none() {
        assert_eq!(payment_status("payment_intent.succeeded"), Some(Status::Succeeded));
        assert_eq!(payment_status("payment_intent.payment_failed"), Some(Status::Failed));
        assert_eq!(payment_status("payment_intent.amount_capturable_updated"), Some(Status::RequiresCapture));
        for other in ["payment_intent.created", "charge.refunded", "refund.created", "customer.created", ""] {
            assert_eq!(payment_status(other), None, "{other}");
        }
    }

    #[test]
    fn money_events_name_their_object_and_others_none() {
        assert_eq!(subject("payment_intent.succeeded"), Some(Kind::Payment));
        assert_eq!(subject("refund.failed"), Some(Kind::Refund));
        assert_eq!(subject("charge.refund.updated"), Some(Kind::Refund));
        assert_eq!(subject("charge.refunded"), Some(Kind::Charge));
        assert_eq!(subject("charge.dispute.closed"), Some(Kind::Dispute));
        for other in ["payment_intent.created", "charge.succeeded", "customer.created", ""] {
            assert_eq!(subject(other), None, "{other}");
        }
    }

    #[test]
    fn stripe_refund_statuses_map_and_requires_action_is_pending() {
        assert_eq!(refund_status("succeeded"), Some("succeeded"));
        assert_eq!(refund_status("requires_action"), Some("pending"));
        assert_eq!(refund_status("failed"), Some("failed"));
        assert_eq!(refund_status("reversed"), None);
    }

    #[test]
    fn a_payment_event_reports_the_status_its_type_names_with_the_intent_s_money() {
        let e = event(json!({"id": "evt_1", "type": "payment_intent.succeeded", "created": 1_700_000_000,
            "data": {"object": {"id": "pi_1", "object": "payment_intent", "status": "processing", "amount": 1000,
                                "currency": "usd", "amount_received": 1000, "metadata": {"payment_id": "pay_1"}}}}))
        .unwrap();
        assert_eq!((e.id.as_str(), e.created, e.object_id.as_deref()), ("evt_1", Some(1_700_000_000), Some("pi_1")));
        let ev = e.evidence.unwrap();
        assert_eq!(ev.kind, Some(Kind::Payment));
        assert_eq!(ev.status, Some("succeeded"), "the event's type, not the object's status");
        assert_eq!((ev.id.as_deref(), ev.provider_payment_id.as_deref()), (Some("pi_1"), Some("pi_1")));
        assert_eq!((ev.amount, ev.amount_received), (Some(json!(1000)), Some(json!(1000))));
        assert_eq!(ev.our_id.as_deref(), Some("pay_1"));
    }

    #[test]
    fn a_charge_event_lists_its_refunds_each_of_the_charge_s_payment() {
        let e = event(json!({"id": "evt_2", "type": "charge.refunded", "data": {"object": {
            "id": "ch_1", "object": "charge", "payment_intent": "pi_1",
            "refunds": {"data": [{"id": "re_1", "object": "refund", "status": "succeeded", "amount": 300, "currency": "usd"},
                                 {"id": "re_2", "status": "requires_action", "amount": 200, "currency": "usd"}, 7]}}}}))
        .unwrap();
        let refunds = e.evidence.unwrap().refunds;
        assert_eq!(refunds.len(), 2, "the number is no refund");
        assert!(refunds
            .iter()
            .all(|r| r.provider_payment_id.as_deref() == Some("pi_1") && r.kind == Some(Kind::Refund)));
        assert_eq!(refunds[1].status, Some("pending"));
    }

    #[test]
    fn a_dispute_reads_its_status_reason_and_due_date() {
        let e = event(json!({"id": "evt_3", "type": "charge.dispute.created", "data": {"object": {
            "id": "dp_1", "object": "dispute", "payment_intent": "pi_1", "status": "needs_response", "amount": 500,
            "currency": "usd", "reason": "fraudulent", "evidence_details": {"due_by": 1_700_100_000}}}}))
        .unwrap();
        let d = e.evidence.unwrap();
        assert_eq!(
            (d.status, d.reason.as_deref(), d.due_by),
            (Some("needs_response"), Some("fraudulent"), Some(1_700_100_000))
        );
        let unknown = Stripe.object(Some(Kind::Dispute), &json!({"id": "dp_2", "status": "charge_refunded"})).unwrap();
        assert_eq!(unknown.status, None, "not a dispute status of ours");
    }

    #[test]
    fn other_events_are_kept_but_carry_no_evidence() {
        let e = event(json!({"id": "evt_4", "type": "customer.created", "data": {"object": {"id": "cus_1"}}})).unwrap();
        assert_eq!((e.evidence, e.object_id.as_deref()), (None, Some("cus_1")));
    }

    #[test]
    fn what_is_not_a_stripe_event_is_refused_with_the_reason() {
        assert_eq!(Stripe.event(b"[1]").unwrap_err(), "webhook body is not a JSON object");
        assert_eq!(Stripe.event(b"{\"id\": 1").unwrap_err(), "webhook body is not a JSON object");
        assert_eq!(event(json!({"id": "evt"})).unwrap_err(), "webhook event has no id or type");
        let long = "x".repeat(256);
        assert!(event(json!({"id": long, "type": "t"})).unwrap_err().contains("longer than 255"));
        let long_pi =
            json!({"id": "e", "type": "refund.created", "data": {"object": {"id": "re", "payment_intent": long}}});
        assert!(event(long_pi).unwrap_err().contains("payment id"));
    }

    #[test]
    fn an_object_of_another_kind_than_expected_is_no_evidence() {
        let intent = json!({"id": "pi_1", "object": "payment_intent", "status": "succeeded"});
        assert_eq!(Stripe.object(Some(Kind::Refund), &intent), None);
        assert_eq!(Stripe.object(None, &intent).unwrap().kind, Some(Kind::Payment));
        assert_eq!(Stripe.object(None, &json!({"id": "x"})), None, "says nothing of what it is");
        assert_eq!(Stripe.object(None, &json!({"object": "customer"})), None);
        let bare = Stripe.object(Some(Kind::Payment), &json!({"amount": 1000, "currency": "usd"})).unwrap();
        assert_eq!((bare.kind, bare.amount), (Some(Kind::Payment), Some(json!(1000))));
        assert_eq!(Stripe.object(Some(Kind::Payment), &json!("pi_1")), None);
    }
}
