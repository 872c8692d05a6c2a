//! Canonical byte encodings hashed with SHA-256: the audit trail's event
//! hashes and idempotency request fingerprints.
//!
//! Every field is written as a 4-byte big-endian length and its bytes, and a
//! NULL as the length 0xFFFFFFFF, so no two different field lists encode alike.
//! A domain tag first keeps an event hash from ever equalling a fingerprint.

use sha2::{Digest, Sha256};

pub struct Canonical(Sha256);

impl Canonical {
    pub fn new(domain: &str) -> Self {
        Canonical(Sha256::new()).field(Some(domain.as_bytes()))
    }

    pub fn field(mut self, value: Option<&[u8]>) -> Self {
        match value {
            Some(bytes) => {
                let len = u32::try_from(bytes.len()).expect("a field over 4 GiB cannot come from PostgreSQL");
                self.0.update(len.to_be_bytes());
                self.0.update(bytes);
            }
            None => self.0.update(u32::MAX.to_be_bytes()),
        }
        self
    }

    pub fn text(self, value: Option<&str>) -> Self {
        self.field(value.map(str::as_bytes))
    }

    pub fn int(self, value: i64) -> Self {
        self.field(Some(&value.to_be_bytes()))
    }

    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// One audit-trail event as it is hashed. `data` is the jsonb's text form,
/// which PostgreSQL prints deterministically (keys sorted, spacing fixed).
pub struct Event<'a> {
    pub payment_id: &'a str,
    pub seq: i64,
    pub from_status: Option<&'a str>,
    pub to_status: &'a str,
    pub applied: bool,
    pub source: &'a str,
    pub reason: Option<&'a str>,
    pub data: &'a str,
    pub created_at_micros: i64,
}

/// hash = sha256(prev_hash ‖ canonical event); `prev_hash` is `None` for a
/// payment's first event.
pub fn event_hash(prev_hash: Option<&[u8]>, e: &Event) -> [u8; 32] {
    Canonical::new("payments.event.v1")
        .field(prev_hash)
        .text(Some(e.payment_id))
        .int(e.seq)
        .text(e.from_status)
        .text(Some(e.to_status))
        .int(i64::from(e.applied))
        .text(Some(e.source))
        .text(e.reason)
        .text(Some(e.data))
        .int(e.created_at_micros)
        .finish()
}

/// The parameters of a `create_payment` call that an idempotency key binds.
pub struct PaymentRequest<'a> {
    pub customer_id: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub payment_method: Option<&'a str>,
    pub description: Option<&'a str>,
    pub metadata: &'a str,
    pub capture_method: &'a str,
}

pub fn request_fingerprint(r: &PaymentRequest) -> [u8; 32] {
    Canonical::new("payments.create_payment.v1")
        .text(Some(r.customer_id))
        .int(r.amount_minor)
        .text(Some(r.currency))
        .text(r.payment_method)
        .text(r.description)
        .text(Some(r.metadata))
        .text(Some(r.capture_method))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64, reason: Option<&'static str>) -> Event<'static> {
        Event {
            payment_id: "pay_1",
            seq,
            from_status: None,
            to_status: "requires_confirmation",
            applied: true,
            source: "api",
            reason,
            data: "{}",
            created_at_micros: 1_700_000_000_000_000,
        }
    }

    #[test]
    fn chain_links_each_event_to_the_one_before() {
        let first = event_hash(None, &event(1, None));
        let second = event_hash(Some(&first), &event(2, None));
        assert_ne!(first, second);
        // The same event after a different predecessor hashes differently.
        let forged_prev = [0u8; 32];
        assert_ne!(event_hash(Some(&forged_prev), &event(2, None)), second);
        // And the hash is a pure function of its inputs.
        assert_eq!(event_hash(Some(&first), &event(2, None)), second);
    }

    #[test]
    fn any_field_change_changes_the_hash() {
        let base = event_hash(None, &event(1, None));
        let mut e = event(1, None);
        e.applied = false;
        assert_ne!(event_hash(None, &e), base);
        assert_ne!(event_hash(None, &event(1, Some(""))), base, "NULL and empty differ");
        let mut e = event(1, None);
        e.created_at_micros += 1;
        assert_ne!(event_hash(None, &e), base);
    }

    #[test]
    fn field_boundaries_cannot_be_shifted() {
        let a = Canonical::new("t").text(Some("ab")).text(Some("c")).finish();
        let b = Canonical::new("t").text(Some("a")).text(Some("bc")).finish();
        assert_ne!(a, b);
    }

    #[test]
    fn fingerprint_binds_every_parameter() {
        let base = PaymentRequest {
            customer_id: "c",
            amount_minor: 100,
            currency: "USD",
            payment_method: None,
            description: None,
            metadata: "{}",
            capture_method: "automatic",
        };
        let fp = request_fingerprint(&base);
        assert_eq!(request_fingerprint(&PaymentRequest { ..base }), fp);
        let variants = [
            PaymentRequest { amount_minor: 101, ..base },
            PaymentRequest { currency: "EUR", ..base },
            PaymentRequest { customer_id: "d", ..base },
            PaymentRequest { payment_method: Some("pm_card_visa"), ..base },
            PaymentRequest { description: Some(""), ..base },
            PaymentRequest { metadata: "{\"a\": 1}", ..base },
            PaymentRequest { capture_method: "manual", ..base },
        ];
        for v in variants {
            assert_ne!(request_fingerprint(&v), fp);
        }
    }
}
