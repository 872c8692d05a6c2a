//! A provider event's parts as the extension reads them: the event type to a
//! status, and the object's money fields as evidence; any input, no panic, and
//! nothing but the exact amount is evidence.
#![no_main]
use libfuzzer_sys::fuzz_target;
use payments_core::evidence::{check, Expected, Observed};
use payments_core::state::Status;
use payments_core::webhook::events::stripe_payment_status;

fuzz_target!(|input: (&str, &str, &str)| {
    let (event_type, amount, currency) = input;
    let to = stripe_payment_status(event_type).unwrap_or(Status::Processing);
    let observed = Observed {
        amount: Some(amount),
        currency: Some(currency),
        amount_received: Some(amount),
        amount_capturable: Some(amount),
    };
    if check(&Expected { amount_minor: 4999, currency: "USD" }, to, &observed).is_none() {
        assert_eq!(amount.parse::<i64>().ok(), Some(4999));
        assert!(currency.eq_ignore_ascii_case("usd"));
    }
});
