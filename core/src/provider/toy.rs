// CONTRIBUTING.md's walk-through, compiled and tested here (and not shipped):
// its code block is this file up to the tests, which `the_walkthrough_shows_this_file` keeps so.
use super::{present, read_event, text, Event, Evidence, Format, Kind};
use serde_json::Value;

/// Toy's events are flat: `{"id", "type": "paid", "ref", "cents", "cur", "order"}`.
pub struct Toy;

impl Format for Toy {
    fn name(&self) -> &'static str {
        "toy"
    }

    fn event(&self, body: &[u8]) -> Result<Event, String> {
        read_event(
            body,
            |event| event,
            |event_type, o| match event_type {
                "paid" => self.object(Some(Kind::Payment), o).map(|e| Evidence { status: Some("succeeded"), ..e }),
                _ => None,
            },
        )
    }

    fn object(&self, kind: Option<Kind>, o: &Value) -> Option<Evidence> {
        (kind == Some(Kind::Payment) && o.is_object()).then(|| Evidence {
            kind: Some(Kind::Payment),
            id: text(&o["ref"]),
            provider_payment_id: text(&o["ref"]),
            amount: present(&o["cents"]),
            amount_received: present(&o["cents"]),
            currency: present(&o["cur"]),
            our_id: text(&o["order"]),
            ..Default::default()
        })
    }

    fn secret_paths(&self) -> &'static [&'static str] {
        &[]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paid_event_is_a_succeeded_payment_in_our_words() {
        let body = br#"{"id": "e1", "type": "paid", "ref": "toy_9", "cents": 1000, "cur": "usd", "order": "pay_1"}"#;
        let e = Toy.event(body).unwrap().evidence.unwrap();
        assert_eq!(
            (e.status, e.provider_payment_id.as_deref(), e.our_id.as_deref()),
            (Some("succeeded"), Some("toy_9"), Some("pay_1"))
        );
        assert_eq!(Toy.event(br#"{"id": "e2", "type": "refunded"}"#).unwrap().evidence, None);
        assert!(Toy.event(b"[]").is_err());
    }

    #[test]
    fn the_walkthrough_shows_this_file() {
        let this = include_str!("toy.rs");
        let code = &this[this.find("use super::").unwrap()..this.find("#[cfg(test)]").unwrap()];
        let guide = include_str!("../../../CONTRIBUTING.md");
        let shown: String = guide.lines().map(|l| l.strip_prefix("   ").unwrap_or(l)).collect::<Vec<_>>().join("\n");
        assert!(shown.contains(code.trim_end()), "CONTRIBUTING.md's toy provider is not core/src/provider/toy.rs");
    }
}
