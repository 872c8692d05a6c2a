//! The money parser: any text and currency; an accepted amount is in range.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str)| {
    let (amount, currency) = input;
    if let Ok((minor, _)) = payments_core::money::to_minor(amount, currency) {
        assert!(minor > 0 && minor <= payments_core::money::MAX_MINOR);
        let major = payments_core::money::to_major(minor, currency).expect("a known currency");
        assert_eq!(payments_core::money::to_minor(&major, currency).unwrap().0, minor, "round trip");
    }
});
