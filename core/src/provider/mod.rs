//! Providers' wire formats, one module each. A module turns what its provider
//! sends (a webhook event, an API answer, a listed object) into [`Evidence`]:
//! the provider-neutral record that is all the SQL reads. Adding a provider is
//! one module here, one entry in [`FORMATS`], and its signature scheme in
//! `webhook/` when it has its own; no SQL changes.

pub mod neutral;
pub mod stripe;
#[cfg(test)]
mod toy;

use serde_json::{json, Map, Value};

/// Provider ids (object ids, payment ids) longer than this cannot be ours:
/// they are refused before they reach an index.
pub const MAX_ID_LEN: usize = 255;

/// What a provider object is about, in our words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A payment (Stripe: PaymentIntent).
    Payment,
    /// A refund of a payment.
    Refund,
    /// A dispute (chargeback or inquiry) of a payment.
    Dispute,
    /// A charge listing refunds of its payment (each applied as a refund).
    Charge,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Payment, Kind::Refund, Kind::Dispute, Kind::Charge];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Payment => "payment",
            Kind::Refund => "refund",
            Kind::Dispute => "dispute",
            Kind::Charge => "charge",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A provider object as evidence, in our vocabulary. Money fields stay as the
/// provider sent them (a JSON value): `evidence::check` and the SQL decide
/// whether they are the exact integer the payment expects.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evidence {
    pub kind: Option<Kind>,
    /// The object's own id.
    pub id: Option<String>,
    /// The provider's id of the payment the object is about (a payment's own id).
    pub provider_payment_id: Option<String>,
    /// Our status for the object, in its kind's lifecycle; None: it reports none.
    pub status: Option<&'static str>,
    pub amount: Option<Value>,
    pub currency: Option<Value>,
    /// What a succeeded payment received, and what an authorized one may capture.
    pub amount_received: Option<Value>,
    pub amount_capturable: Option<Value>,
    /// When the provider created it, in Unix seconds.
    pub created: Option<i64>,
    /// Our own id, as the provider echoes it back (payment or refund id in metadata).
    pub our_id: Option<String>,
    /// Why a payment was declined or a refund failed, as the provider says it.
    pub error: Option<Value>,
    pub reason: Option<String>,
    /// When a dispute's evidence is due, in Unix seconds.
    pub due_by: Option<i64>,
    /// A charge's refunds.
    pub refunds: Vec<Evidence>,
}

impl Evidence {
    /// The record SQL reads (`payments._provider_object`, `payments._provider_event`).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.into(), v);
            }
        };
        put("kind", self.kind.map(|k| k.as_str().into()));
        put("id", self.id.clone().map(Value::from));
        put("provider_payment_id", self.provider_payment_id.clone().map(Value::from));
        put("status", self.status.map(Value::from));
        put("amount", self.amount.clone());
        put("currency", self.currency.clone());
        put("amount_received", self.amount_received.clone());
        put("amount_capturable", self.amount_capturable.clone());
        put("created", self.created.map(Value::from));
        put("our_id", self.our_id.clone().map(Value::from));
        put("error", self.error.clone());
        put("reason", self.reason.clone().map(Value::from));
        put("due_by", self.due_by.map(Value::from));
        if self.kind == Some(Kind::Charge) {
            put("refunds", Some(self.refunds.iter().map(Evidence::to_json).collect()));
        }
        Value::Object(m)
    }
}

/// A verified webhook body, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub event_type: String,
    /// Unix seconds.
    pub created: Option<i64>,
    /// The id of the object the event carries, whatever it is.
    pub object_id: Option<String>,
    /// What the event says about money; None: an event type that moves none (stored, ignored).
    pub evidence: Option<Evidence>,
    /// The object as received (kept while it waits for its payment to be linked).
    pub object: Value,
}

impl Event {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "type": self.event_type,
            "created": self.created,
            "object_id": self.object_id,
            "evidence": self.evidence.as_ref().map(Evidence::to_json),
            "object": self.object,
        })
    }
}

/// A provider's wire format.
pub trait Format: Sync {
    /// The provider name that selects this format.
    fn name(&self) -> &'static str;
    /// A verified webhook body as an event; Err: why it is no event of this provider's.
    fn event(&self, body: &[u8]) -> Result<Event, String>;
    /// An object the provider answered or listed, read as `kind` (None: as whatever
    /// it says it is). None: not such an object.
    fn object(&self, kind: Option<Kind>, object: &Value) -> Option<Evidence>;
    /// Where its objects hold what must never be stored (a browser's client
    /// secret), as dotted paths; SQL removes them, keeping the rest byte for byte.
    fn secret_paths(&self) -> &'static [&'static str];
}

/// Every wire format, by the provider name that selects it.
pub static FORMATS: &[&dyn Format] = &[&stripe::Stripe, &neutral::Neutral];

/// The format of the provider recorded under `name`: the one named `name`, or
/// the one its prefix up to an underscore names (`neutral_acme`, `stripe_eu`);
/// else Stripe's (`sandbox` and any other name: a Stripe-compatible provider).
pub fn format(name: &str) -> &'static dyn Format {
    let prefix = name.split_once('_').map_or(name, |(p, _)| p);
    FORMATS.iter().copied().find(|f| f.name() == name || f.name() == prefix).unwrap_or(&stripe::Stripe)
}

/// A webhook body as an event: a JSON object with a string `id` and `type`, an
/// optional Unix `created`, and the object that `object_at` finds in it, which
/// `evidence` reads for the event's type. Ids longer than [`MAX_ID_LEN`] are
/// refused: no provider's are, and they could not be indexed.
pub fn read_event(
    body: &[u8],
    object_at: impl FnOnce(&Value) -> &Value,
    evidence: impl FnOnce(&str, &Value) -> Option<Evidence>,
) -> Result<Event, String> {
    let event: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return Err("webhook body is not a JSON object".into()),
    };
    let (Some(id), Some(event_type)) = (event["id"].as_str(), event["type"].as_str()) else {
        return Err("webhook event has no id or type".into());
    };
    let object = object_at(&event);
    let object_id = text(&object["id"]);
    let too_long = |s: &str| s.chars().count() > MAX_ID_LEN;
    if [Some(id), Some(event_type), object_id.as_deref()].into_iter().flatten().any(too_long) {
        return Err("webhook event id, type or object id longer than 255 characters".into());
    }
    let evidence = evidence(event_type, object);
    if evidence.as_ref().and_then(|e| e.provider_payment_id.as_deref()).is_some_and(too_long) {
        return Err("webhook event's payment id is longer than 255 characters".into());
    }
    Ok(Event {
        id: id.into(),
        event_type: event_type.into(),
        created: unix_seconds(&event["created"]),
        object_id,
        evidence,
        object: object.clone(),
    })
}

/// The refunds a charge lists (a JSON array; anything else lists none), each read
/// by `format` as a refund of the charge's payment.
pub fn refunds_of(format: &dyn Format, list: &Value, charge: &Evidence) -> Vec<Evidence> {
    let refunds = list.as_array().into_iter().flatten().filter_map(|r| format.object(Some(Kind::Refund), r));
    refunds.map(|r| Evidence { provider_payment_id: charge.provider_payment_id.clone(), ..r }).collect()
}

/// A JSON value that is an integer of 1 to 12 digits, or a string of them: a Unix time.
pub fn unix_seconds(v: &Value) -> Option<i64> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    (!text.is_empty() && text.len() <= 12 && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// A field as text, as SQL's `->>` reads it: a string as itself, another scalar
/// or a structure as its JSON; None when absent or null.
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A field worth keeping: present and not null.
pub fn present(v: &Value) -> Option<Value> {
    (!v.is_null()).then(|| v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_name_but_a_known_format_s_is_stripe_compatible() {
        assert_eq!(format("stripe").name(), "stripe");
        assert_eq!(format("sandbox").name(), "stripe");
        assert_eq!(format("stripe_eu").name(), "stripe");
        assert_eq!(format("neutral").name(), "neutral");
        assert_eq!(format("neutral_acme").name(), "neutral");
        assert_eq!(format("acme_neutral").name(), "stripe");
    }

    #[test]
    fn unix_times_are_whole_seconds_of_at_most_twelve_digits() {
        assert_eq!(unix_seconds(&json!(1_700_000_000)), Some(1_700_000_000));
        assert_eq!(unix_seconds(&json!("1700000000")), Some(1_700_000_000));
        for bad in [json!(1.5), json!(-1), json!("1e9"), json!(""), json!(1_000_000_000_000_i64), json!(null)] {
            assert_eq!(unix_seconds(&bad), None, "{bad}");
        }
    }

    #[test]
    fn the_record_leaves_out_what_is_absent() {
        let e = Evidence { kind: Some(Kind::Refund), id: Some("re_1".into()), ..Default::default() };
        assert_eq!(e.to_json(), json!({"kind": "refund", "id": "re_1"}));
    }
}
