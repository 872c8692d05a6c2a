//! The extension's one error enum. Every variant carries a stable SQLSTATE.
//!
//! pgrx can only raise SQLSTATEs from PostgreSQL's own list, so Rust code never
//! raises these itself: the `#[pg_extern]` layer hands `(sqlstate, message, hint)`
//! to the PL/pgSQL API (`sql/code/payments.sql`), which raises them with `RAISE ... USING
//! ERRCODE`. The same codes are raised directly by PL/pgSQL for errors found in
//! SQL (an unknown payment, a reused idempotency key). The book's docs/src/errors.md has the table.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    #[error("unknown currency \"{0}\": expected an active ISO 4217 code such as USD, EUR or JPY")]
    UnknownCurrency(String),
    #[error("amount {amount} has more decimal places than {unit} allows ({exponent})")]
    ExcessPrecision { amount: String, unit: String, exponent: u32 },
    #[error("amount must be greater than zero, got {0}")]
    NotPositive(String),
    #[error("amount {amount} {unit} exceeds the maximum of {max} {unit}")]
    TooLarge { amount: String, unit: String, max: String },
    #[error("amount \"{0}\" is not a finite decimal number")]
    NotANumber(String),
    #[error("unknown unit \"{0}\": expected a currency code such as USD, or a credit unit such as tokens")]
    UnknownUnit(String),
}

impl Error {
    /// The SQLSTATE raised for this error; class `PM` is the extension's own.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Error::ExcessPrecision { .. } => "PM101",
            Error::NotPositive(_) => "PM102",
            Error::UnknownCurrency(_) => "PM103",
            Error::TooLarge { .. } => "PM104",
            Error::NotANumber(_) => "PM105",
            Error::UnknownUnit(_) => "PM106",
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            Error::ExcessPrecision { unit, exponent, .. } => Some(format!(
                "{unit} amounts are given in major units with at most {exponent} decimal place(s); round before calling"
            )),
            Error::UnknownCurrency(_) => Some("SELECT * FROM payments.currencies() lists the accepted codes".into()),
            Error::UnknownUnit(_) => Some(
                "a credit unit is 1 to 32 lower-case letters, digits and underscores, starting with a letter".into(),
            ),
            _ => None,
        }
    }

    /// One error of each kind: what the tests hold the SQLSTATE registry and the book against.
    pub fn one_of_each() -> Vec<Error> {
        vec![
            Error::UnknownCurrency("XYZ".into()),
            Error::ExcessPrecision { amount: "1.001".into(), unit: "USD".into(), exponent: 2 },
            Error::NotPositive("0".into()),
            Error::TooLarge { amount: "1e13".into(), unit: "USD".into(), max: "1".into() },
            Error::NotANumber("NaN".into()),
            Error::UnknownUnit("Tokens".into()),
        ]
    }

    /// `{sqlstate, message, hint}` as the PL/pgSQL layer raises it.
    pub fn to_report(&self) -> Vec<Option<String>> {
        vec![Some(self.sqlstate().to_string()), Some(self.to_string()), self.hint()]
    }
}

/// Caller input as a message quotes it: whole up to `max` characters, else its
/// start and its length, so no message (or log line) grows with the input; a
/// numeric such as 1e131071 is 131,072 digits long. The SQL layer's
/// `payments._shown` does the same.
pub fn shown(input: &str, max: usize) -> String {
    match input.char_indices().nth(max) {
        None => input.to_string(),
        Some((cut, _)) => format!("{}… ({} characters)", &input[..cut], input.chars().count()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_input_is_quoted_by_its_start_and_length() {
        assert_eq!(shown("49.999", 40), "49.999");
        let cut = shown(&"é".repeat(5000), 200);
        assert!(cut.starts_with(&"é".repeat(200)) && cut.ends_with("… (5000 characters)"), "{cut}");
    }

    #[test]
    fn every_variant_has_a_distinct_pm_sqlstate() {
        let all = Error::one_of_each();
        let mut codes: Vec<_> = all.iter().map(Error::sqlstate).collect();
        assert!(codes.iter().all(|c| c.len() == 5 && c.starts_with("PM")));
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }
}
