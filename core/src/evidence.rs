//! Whether a provider's object is evidence for a payment: a payment moves, or
//! is linked to a provider object, only when the object asks for the same
//! money. Anything else is an anomaly: recorded, never applied.

use crate::state::Status;

/// Why a provider object does not match the payment it claims to be about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    /// The object's `amount` is not the payment's amount in minor units (or is missing).
    AmountMismatch,
    /// The object's `currency` is not the payment's (or is missing).
    CurrencyMismatch,
    /// A success whose `amount_received` is not the payment's amount.
    AmountReceivedMismatch,
    /// An authorization whose `amount_capturable` is not the payment's amount.
    AmountCapturableMismatch,
    /// Another provider object than the one the payment is linked to.
    ProviderPaymentMismatch,
}

pub const ALL: [Anomaly; 5] = [
    Anomaly::AmountMismatch,
    Anomaly::CurrencyMismatch,
    Anomaly::AmountReceivedMismatch,
    Anomaly::AmountCapturableMismatch,
    Anomaly::ProviderPaymentMismatch,
];

impl Anomaly {
    pub fn as_str(self) -> &'static str {
        match self {
            Anomaly::AmountMismatch => "amount_mismatch",
            Anomaly::CurrencyMismatch => "currency_mismatch",
            Anomaly::AmountReceivedMismatch => "amount_received_mismatch",
            Anomaly::AmountCapturableMismatch => "amount_capturable_mismatch",
            Anomaly::ProviderPaymentMismatch => "provider_payment_mismatch",
        }
    }
}

/// What the payment asked for.
pub struct Expected<'a> {
    pub amount_minor: i64,
    /// ISO 4217, any case.
    pub currency: &'a str,
}

/// The provider object's money fields as the JSON text holds them (`None`: absent).
pub struct Observed<'a> {
    pub amount: Option<&'a str>,
    pub currency: Option<&'a str>,
    pub amount_received: Option<&'a str>,
    pub amount_capturable: Option<&'a str>,
}

/// The first reason `observed` is not evidence for moving a payment that
/// expects `expected` to `to`; None when it is.
pub fn check(expected: &Expected, to: Status, observed: &Observed) -> Option<Anomaly> {
    // Minor units are integers; "1000.0" or "1e3" are not the amount 1000.
    let is_amount = |text: Option<&str>| text.and_then(|t| t.parse::<i64>().ok()) == Some(expected.amount_minor);
    if !observed.currency.is_some_and(|c| c.eq_ignore_ascii_case(expected.currency)) {
        Some(Anomaly::CurrencyMismatch)
    } else if !is_amount(observed.amount) {
        Some(Anomaly::AmountMismatch)
    } else if to == Status::Succeeded && !is_amount(observed.amount_received) {
        Some(Anomaly::AmountReceivedMismatch)
    } else if to == Status::RequiresCapture && !is_amount(observed.amount_capturable) {
        Some(Anomaly::AmountCapturableMismatch)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USD_1000: Expected = Expected { amount_minor: 100_000, currency: "USD" };

    fn intent<'a>(amount: &'a str, currency: &'a str, received: &'a str, capturable: &'a str) -> Observed<'a> {
        Observed {
            amount: Some(amount),
            currency: Some(currency),
            amount_received: Some(received),
            amount_capturable: Some(capturable),
        }
    }

    #[test]
    fn the_same_money_is_evidence() {
        assert_eq!(check(&USD_1000, Status::Succeeded, &intent("100000", "usd", "100000", "0")), None);
        assert_eq!(check(&USD_1000, Status::RequiresCapture, &intent("100000", "USD", "0", "100000")), None);
        assert_eq!(check(&USD_1000, Status::Processing, &intent("100000", "usd", "0", "0")), None);
    }

    #[test]
    fn a_cent_for_a_thousand_dollars_is_not() {
        let cent = intent("1", "usd", "1", "0");
        assert_eq!(check(&USD_1000, Status::Succeeded, &cent), Some(Anomaly::AmountMismatch));
        assert_eq!(check(&USD_1000, Status::Failed, &cent), Some(Anomaly::AmountMismatch));
    }

    #[test]
    fn currency_received_and_capturable_are_checked() {
        assert_eq!(
            check(&USD_1000, Status::Succeeded, &intent("100000", "jpy", "100000", "0")),
            Some(Anomaly::CurrencyMismatch)
        );
        assert_eq!(
            check(&USD_1000, Status::Succeeded, &intent("100000", "usd", "5", "0")),
            Some(Anomaly::AmountReceivedMismatch)
        );
        assert_eq!(
            check(&USD_1000, Status::RequiresCapture, &intent("100000", "usd", "0", "99999")),
            Some(Anomaly::AmountCapturableMismatch)
        );
    }

    #[test]
    fn missing_or_inexact_fields_are_no_evidence() {
        let none = Observed { amount: None, currency: None, amount_received: None, amount_capturable: None };
        assert_eq!(check(&USD_1000, Status::Processing, &none), Some(Anomaly::CurrencyMismatch));
        for text in ["100000.0", "1e5", " 100000", "", "100000x"] {
            assert_eq!(
                check(&USD_1000, Status::Processing, &intent(text, "usd", "0", "0")),
                Some(Anomaly::AmountMismatch),
                "{text:?}"
            );
        }
    }

    #[test]
    fn kinds_have_distinct_names() {
        let names: std::collections::HashSet<_> = ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(names.len(), ALL.len());
    }
}
