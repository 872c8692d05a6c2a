//! Exact conversion between major-unit decimals and integer minor units.
//! No float ever touches an amount: input arrives as PostgreSQL `numeric` text.

use std::str::FromStr;

use rust_decimal::Decimal;

use crate::currency::{self, Currency};
use crate::error::{self, Error};

/// The largest amount accepted, in minor units, in every currency
/// (9,999,999,999.99 USD; 999,999,999,999 JPY).
pub const MAX_MINOR: i64 = 999_999_999_999;

/// How much of a bad amount or currency an error message quotes.
const QUOTED: usize = 40;

/// Converts `amount` (major units, decimal text such as `"49.99"`) into minor
/// units of `currency`. Trailing zeros are fine (`49.990`); digits beyond the
/// currency's exponent are an error, never rounded.
pub fn to_minor(amount: &str, currency: &str) -> Result<(i64, Currency), Error> {
    let cur = currency::lookup(currency).ok_or_else(|| Error::UnknownCurrency(error::shown(currency, QUOTED)))?;
    Ok((minor_units(amount, cur.code, cur.exponent)?, cur))
}

/// `amount` (decimal text) in steps of 10^-`exponent` of `unit` (a currency's minor units,
/// or whole credit units with exponent 0): positive, at most MAX_MINOR, never rounded.
pub fn minor_units(amount: &str, unit: &str, exponent: u32) -> Result<i64, Error> {
    let text = amount.trim();
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (int_part, frac_part) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty()) || !all_digits(int_part) || !all_digits(frac_part) {
        return Err(Error::NotANumber(error::shown(amount, QUOTED)));
    }
    let frac = frac_part.trim_end_matches('0');
    let int = int_part.trim_start_matches('0');
    if negative || (int.is_empty() && frac.is_empty()) {
        return Err(Error::NotPositive(error::shown(amount, QUOTED)));
    }
    if frac.len() as u32 > exponent {
        return Err(Error::ExcessPrecision { amount: error::shown(amount, QUOTED), unit: unit.to_string(), exponent });
    }
    let too_large = || Error::TooLarge {
        amount: error::shown(amount, QUOTED),
        unit: unit.to_string(),
        max: Decimal::new(MAX_MINOR, exponent).to_string(),
    };
    // More integer digits than MAX_MINOR has cannot fit; this also keeps huge
    // inputs away from Decimal's 96-bit mantissa.
    if int.len() > 18 {
        return Err(too_large());
    }
    let exact =
        Decimal::from_str(&format!("{}.{}", if int.is_empty() { "0" } else { int }, frac)).map_err(|_| too_large())?;
    exact
        .checked_mul(Decimal::from(10i64.pow(exponent)))
        .and_then(|d| i64::try_from(d).ok())
        .filter(|m| *m <= MAX_MINOR)
        .ok_or_else(too_large)
}

/// Renders minor units as a major-unit decimal with exactly the currency's
/// number of decimal places (`4999 USD` → `"49.99"`, `1500 KWD` → `"1.500"`).
pub fn to_major(minor: i64, currency: &str) -> Result<String, Error> {
    let cur = currency::lookup(currency).ok_or_else(|| Error::UnknownCurrency(error::shown(currency, QUOTED)))?;
    Ok(Decimal::new(minor, cur.exponent).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minor(amount: &str, currency: &str) -> i64 {
        to_minor(amount, currency).unwrap().0
    }

    #[test]
    fn converts_each_exponent_class_exactly() {
        assert_eq!(minor("49.99", "USD"), 4999);
        assert_eq!(minor("49.990", "usd"), 4999);
        assert_eq!(minor("0.01", "EUR"), 1);
        assert_eq!(minor("1000", "JPY"), 1000);
        assert_eq!(minor("1000.000", "JPY"), 1000);
        assert_eq!(minor("1.5", "KWD"), 1500);
        assert_eq!(minor("0.001", "BHD"), 1);
        assert_eq!(minor("1.2345", "CLF"), 12345);
        assert_eq!(minor("+7", "USD"), 700);
        assert_eq!(minor(".5", "USD"), 50);
    }

    #[test]
    fn excess_precision_is_rejected_not_rounded() {
        for (amount, cur) in [("49.999", "USD"), ("1.5", "JPY"), ("0.0001", "KWD"), ("0.001", "EUR")] {
            let err = to_minor(amount, cur).unwrap_err();
            assert!(matches!(err, Error::ExcessPrecision { .. }), "{amount} {cur}: {err}");
            assert_eq!(err.sqlstate(), "PM101");
        }
        assert!(to_minor("49.999", "USD").unwrap_err().to_string().contains("USD allows (2)"));
    }

    #[test]
    fn zero_and_negative_are_rejected() {
        for amount in ["0", "0.00", "-0", "-1", "-0.01", "000.000"] {
            assert_eq!(to_minor(amount, "USD").unwrap_err().sqlstate(), "PM102", "{amount}");
        }
    }

    #[test]
    fn unknown_currency_is_rejected_before_the_amount_is_read() {
        assert_eq!(to_minor("1", "XYZ").unwrap_err(), Error::UnknownCurrency("XYZ".into()));
        assert_eq!(to_minor("-1", "").unwrap_err().sqlstate(), "PM103");
    }

    #[test]
    fn maximum_is_enforced_in_minor_units() {
        assert_eq!(minor("9999999999.99", "USD"), MAX_MINOR);
        assert_eq!(minor("999999999999", "JPY"), MAX_MINOR);
        for (amount, cur) in [
            ("10000000000", "USD"),
            ("1000000000000", "JPY"),
            ("99999999999999999999999999999999999999", "USD"),
            ("1000000000", "KWD"),
        ] {
            assert_eq!(to_minor(amount, cur).unwrap_err().sqlstate(), "PM104", "{amount} {cur}");
        }
    }

    #[test]
    fn non_numbers_are_rejected() {
        for amount in ["NaN", "Infinity", "-Infinity", "", ".", "1e3", "1.2.3", "12a"] {
            assert_eq!(to_minor(amount, "USD").unwrap_err().sqlstate(), "PM105", "{amount:?}");
        }
    }

    #[test]
    fn errors_quote_at_most_a_short_prefix_of_the_input() {
        let huge = format!("1{}", "0".repeat(131_071));
        let message = to_minor(&huge, "USD").unwrap_err().to_string();
        assert!(message.len() < 200, "{} bytes", message.len());
        assert!(message.contains("131072 characters"), "{message}");
        let message = to_minor("1", &"X".repeat(5000)).unwrap_err().to_string();
        assert!(message.len() < 200, "{} bytes", message.len());
    }

    #[test]
    fn to_major_renders_the_currency_scale() {
        assert_eq!(to_major(4999, "USD").unwrap(), "49.99");
        assert_eq!(to_major(100, "USD").unwrap(), "1.00");
        assert_eq!(to_major(1000, "JPY").unwrap(), "1000");
        assert_eq!(to_major(1500, "kwd").unwrap(), "1.500");
        assert_eq!(to_major(-5, "USD").unwrap(), "-0.05");
    }

    #[test]
    fn round_trips() {
        for (amount, cur) in [("12.34", "USD"), ("7", "JPY"), ("0.125", "KWD"), ("9999999999.99", "EUR")] {
            let m = minor(amount, cur);
            assert_eq!(to_major(m, cur).unwrap(), amount);
        }
    }
}
