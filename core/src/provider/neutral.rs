//! The provider-neutral format: what a provider with no module of its own
//! sends through an adapter you run. Its events carry the evidence record
//! itself, in our words, signed with Standard Webhooks:
//!
//! `{"id": "evt_1", "type": "payment.succeeded", "created": 1700000000,
//!   "data": {"kind": "payment", "id": "psp_42", "status": "succeeded",
//!            "amount": 1000, "currency": "usd", "amount_received": 1000,
//!            "our_id": "pay_…"}}`
//!
//! `type` is the adapter's own label; `data.kind` and `data.status` say what
//! happened. Statuses are ours (a payment's, a refund's, a dispute's); any
//! other is no status.

use super::{present, read_event, refunds_of, text, unix_seconds, Event, Evidence, Format, Kind};
use crate::lifecycle::{DISPUTE, REFUND};
use crate::state::Status;
use serde_json::Value;

pub struct Neutral;

impl Format for Neutral {
    fn name(&self) -> &'static str {
        "neutral"
    }

    fn event(&self, body: &[u8]) -> Result<Event, String> {
        read_event(body, |event| &event["data"], |_, data| self.object(None, data))
    }

    fn object(&self, kind: Option<Kind>, o: &Value) -> Option<Evidence> {
        let named = match o.get("kind") {
            Some(k) => Some(k.as_str().and_then(Kind::parse)?),
            None => None,
        };
        let kind = match (kind, named) {
            (Some(expected), Some(named)) if expected != named => return None,
            (_, Some(k)) | (Some(k), None) => k,
            (None, None) => return None,
        };
        let status = o["status"].as_str();
        let evidence = Evidence {
            kind: Some(kind),
            id: text(&o["id"]),
            provider_payment_id: text(&o["provider_payment_id"]),
            status: match kind {
                Kind::Payment => status.and_then(Status::parse).map(Status::as_str),
                Kind::Refund => status.and_then(|s| REFUND.statuses.iter().copied().find(|r| *r == s)),
                Kind::Dispute => status.and_then(|s| DISPUTE.statuses.iter().copied().find(|d| *d == s)),
                Kind::Charge => None,
            },
            amount: present(&o["amount"]),
            currency: present(&o["currency"]),
            amount_received: present(&o["amount_received"]),
            amount_capturable: present(&o["amount_capturable"]),
            created: unix_seconds(&o["created"]),
            our_id: text(&o["our_id"]),
            error: present(&o["error"]),
            reason: text(&o["reason"]),
            due_by: unix_seconds(&o["due_by"]),
            refunds: Vec::new(),
        };
        Some(match kind {
            // A payment is its own provider payment.
            Kind::Payment => Evidence { provider_payment_id: evidence.id.clone(), ..evidence },
            Kind::Charge => Evidence { refunds: refunds_of(self, &o["refunds"], &evidence), ..evidence },
            _ => evidence,
        })
    }

    fn secret_paths(&self) -> &'static [&'static str] {
        &[]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_event_carries_its_evidence_in_our_words() {
        let body = json!({"id": "evt_1", "type": "payment.succeeded", "created": 1_700_000_000,
            "data": {"kind": "payment", "id": "psp_42", "status": "succeeded", "amount": 1000, "currency": "usd",
                     "amount_received": 1000, "our_id": "pay_1"}});
        let e = Neutral.event(body.to_string().as_bytes()).unwrap();
        let ev = e.evidence.unwrap();
        assert_eq!((ev.kind, ev.status), (Some(Kind::Payment), Some("succeeded")));
        assert_eq!(ev.provider_payment_id.as_deref(), Some("psp_42"), "a payment is its own");
        assert_eq!((ev.our_id.as_deref(), ev.amount_received), (Some("pay_1"), Some(json!(1000))));
    }

    #[test]
    fn statuses_are_ours_or_none() {
        let failed = Neutral.object(None, &json!({"kind": "payment", "id": "p", "status": "failed"})).unwrap();
        assert_eq!(failed.status, Some("failed"));
        let stripe_word =
            Neutral.object(None, &json!({"kind": "refund", "id": "r", "status": "requires_action"})).unwrap();
        assert_eq!(stripe_word.status, None);
        let dispute = Neutral.object(None, &json!({"kind": "dispute", "id": "d", "status": "lost"})).unwrap();
        assert_eq!(dispute.status, Some("lost"));
    }

    #[test]
    fn a_charge_s_refunds_are_of_its_payment_and_other_kinds_are_refused() {
        let charge = json!({"kind": "charge", "id": "c", "provider_payment_id": "psp_1",
                            "refunds": [{"id": "r1", "status": "succeeded", "amount": 5}, {"kind": "dispute", "id": "d"}]});
        let refunds = Neutral.object(None, &charge).unwrap().refunds;
        assert_eq!(refunds.len(), 1, "a dispute is no refund");
        assert_eq!(refunds[0].provider_payment_id.as_deref(), Some("psp_1"));
        assert_eq!(Neutral.object(Some(Kind::Refund), &json!({"kind": "payment"})), None);
        assert_eq!(Neutral.object(None, &json!({"kind": "invoice"})), None);
        assert_eq!(Neutral.object(None, &json!({"id": "x"})), None, "says nothing of what it is");
    }
}
