//! The Stripe-Signature header parser and verifier: random headers and bodies never verify.
#![no_main]
use libfuzzer_sys::fuzz_target;
use payments_core::webhook::{verify, Message, Scheme};

fuzz_target!(|input: (&str, &[u8])| {
    let headers = vec![("Stripe-Signature".to_string(), input.0.to_string())];
    let message = Message { headers: &headers, body: input.1 };
    assert!(verify(Scheme::Stripe, "whsec_fuzz", &message, 300, 1_700_000_000).is_err());
});
