//! The Standard Webhooks headers parser and verifier: random headers and bodies never verify.
#![no_main]
use libfuzzer_sys::fuzz_target;
use payments_core::webhook::{verify, Message, Scheme};

fuzz_target!(|input: (&str, &str, &str, &[u8])| {
    let headers = vec![
        ("webhook-id".to_string(), input.0.to_string()),
        ("webhook-timestamp".to_string(), input.1.to_string()),
        ("webhook-signature".to_string(), input.2.to_string()),
    ];
    let message = Message { headers: &headers, body: input.3 };
    assert!(verify(Scheme::Standard, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &message, 300, 1_700_000_000).is_err());
});
