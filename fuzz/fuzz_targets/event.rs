//! A provider event as the extension reads it: any bytes through every wire
//! format, no panic; and of what it reads, nothing but the exact amount and
//! currency is evidence for a payment.
#![no_main]
use libfuzzer_sys::fuzz_target;
use payments_core::evidence::{check, Expected, Observed};
use payments_core::provider::FORMATS;
use payments_core::state::Status;

fuzz_target!(|body: &[u8]| {
    for format in FORMATS {
        let Ok(event) = format.event(body) else { continue };
        let Some(evidence) = event.evidence else { continue };
        let text = |v: &Option<serde_json::Value>| {
            v.as_ref().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        };
        let (amount, currency, received) =
            (text(&evidence.amount), text(&evidence.currency), text(&evidence.amount_received));
        let observed = Observed {
            amount: amount.as_deref(),
            currency: currency.as_deref(),
            amount_received: received.as_deref(),
            amount_capturable: None,
        };
        if check(&Expected { amount_minor: 4999, currency: "USD" }, Status::Succeeded, &observed).is_none() {
            assert_eq!(amount.and_then(|a| a.parse::<i64>().ok()), Some(4999));
            assert!(currency.is_some_and(|c| c.eq_ignore_ascii_case("usd")));
        }
    }
});
