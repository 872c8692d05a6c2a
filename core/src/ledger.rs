//! The double-entry ledger's chart of accounts and its one rule: every transfer balances.
//!
//! Accounts are kept per customer and unit: a customer's own accounts (its balance, its
//! prepaid credits) and the platform's sub-accounts for that customer (revenue, refunds,
//! disputes, provider clearing, credits issued). The platform's total of an account is the
//! sum of its sub-accounts, so no single row serialises every customer's postings, and on
//! Citus every posting stays on its customer's shard.
//!
//! A transfer debits one account and credits another by the same amount, so every transfer
//! balances by construction (TigerBeetle's model). A unit is a currency (amounts in its minor
//! units) or a credit unit such as `tokens` (whole units).

use crate::currency::{self, Currency};
use crate::error::{self, Error};
use crate::money;

/// Whose an account is: the customer's own, or the platform's (kept per customer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Customer,
    Platform,
}

/// The side an account's balance normally sits on: a debit-normal account (an asset, an
/// expense) grows with debits, a credit-normal one (a liability, revenue) with credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Debit,
    Credit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub name: &'static str,
    pub owner: Owner,
    pub normal: Side,
    pub what: &'static str,
}

const fn account(name: &'static str, owner: Owner, normal: Side, what: &'static str) -> Account {
    Account { name, owner, normal, what }
}

/// The chart of accounts.
pub const ACCOUNTS: [Account; 8] = [
    account("balance", Owner::Customer, Side::Credit, "money the platform holds for the customer"),
    account("credits", Owner::Customer, Side::Credit, "prepaid credits granted to the customer, per grant"),
    account(
        "holds",
        Owner::Customer,
        Side::Credit,
        "credits set aside by open holds until they are settled or released",
    ),
    account("revenue", Owner::Platform, Side::Credit, "what the customer's payments earned"),
    account("refunds", Owner::Platform, Side::Debit, "what refunds gave back"),
    account("disputes", Owner::Platform, Side::Debit, "what disputes withhold, open or lost"),
    account("provider_clearing", Owner::Platform, Side::Debit, "money the payment provider holds for the platform"),
    account("credits_issued", Owner::Platform, Side::Debit, "credits granted free of charge, less what expired"),
];

/// What a transfer records: money the provider moved (payment, refund, dispute); credits
/// granted and expired; a hold taking credits, giving the rest back, and what it spent; a
/// `consume` past its plan's quota paid with credits; credits and balance an invoice applied
/// before charging (taken back if it is void); what a downgrade left, into the balance; a credit
/// note credited to the balance.
pub const TRANSFER_KINDS: [&str; 13] = [
    "payment",
    "refund",
    "dispute",
    "credit_grant",
    "credit_expiry",
    "hold",
    "hold_release",
    "spend",
    "consumption",
    "invoice_credits",
    "invoice_balance",
    "downgrade_credit",
    "credit_note",
];

/// What an invoice line is: the plan's fee, usage, a proration, a credit for unused time or
/// usage billed already, and what prepaid credits and the customer's balance paid of it.
pub const INVOICE_LINE_KINDS: [&str; 7] =
    ["recurring", "usage", "proration", "credit", "item", "prepaid_credits", "balance"];

/// Why a reserve was refused: the credits cannot cover it, or it would pass the customer's
/// spend limit for the period (`set_spend_limit`).
pub const HOLD_REFUSALS: [&str; 2] = ["insufficient_credits", "spend_limit_reached"];

pub fn account_named(name: &str) -> Option<&'static Account> {
    ACCOUNTS.iter().find(|a| a.name == name)
}

impl Account {
    /// What the account's debits less its credits are multiplied by to give its balance:
    /// positive on its normal side.
    pub fn sign(&self) -> i32 {
        match self.normal {
            Side::Debit => 1,
            Side::Credit => -1,
        }
    }

    pub fn owner_name(&self) -> &'static str {
        match self.owner {
            Owner::Customer => "customer",
            Owner::Platform => "platform",
        }
    }

    pub fn normal_side(&self) -> &'static str {
        match self.normal {
            Side::Debit => "debit",
            Side::Credit => "credit",
        }
    }
}

/// What amounts are counted in: a currency, or a credit unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unit {
    Currency(Currency),
    /// A lower-case name of 1 to 32 letters, digits and underscores, starting with a letter
    /// (`tokens`, `api_calls`) that is no currency code; counted in whole units.
    Credit(String),
}

impl Unit {
    /// How the unit is stored: a currency's code in upper case, a credit unit as given.
    pub fn code(&self) -> &str {
        match self {
            Unit::Currency(c) => c.code,
            Unit::Credit(name) => name,
        }
    }

    pub fn exponent(&self) -> u32 {
        match self {
            Unit::Currency(c) => c.exponent,
            Unit::Credit(_) => 0,
        }
    }
}

/// The unit `text` names, or None.
pub fn unit(text: &str) -> Option<Unit> {
    if let Some(c) = currency::lookup(text) {
        return Some(Unit::Currency(c));
    }
    let b = text.as_bytes();
    let credit = (1..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_');
    credit.then(|| Unit::Credit(text.to_string()))
}

/// An amount (decimal text) in a unit's smallest steps: a currency's minor units, whole
/// credit units. Excess precision, zero, negative and too large amounts are errors.
pub fn to_units(amount: &str, unit_text: &str) -> Result<(i64, Unit), Error> {
    let unit = unit(unit_text).ok_or_else(|| Error::UnknownUnit(error::shown(unit_text, 40)))?;
    let minor = money::minor_units(amount, unit.code(), unit.exponent())?;
    Ok((minor, unit))
}

/// Smallest steps of a unit as a person reads them (`1250 USD` → `"12.50"`, `7 tokens` → `"7"`).
pub fn to_major(amount: i64, unit_text: &str) -> Option<String> {
    let unit = unit(unit_text)?;
    Some(rust_decimal::Decimal::new(amount, unit.exponent()).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_currencies_or_lower_case_credit_names() {
        assert_eq!(unit("usd").unwrap().code(), "USD");
        assert_eq!(unit("tokens").unwrap(), Unit::Credit("tokens".into()));
        assert_eq!(unit("api_calls2").unwrap().exponent(), 0);
        for bad in ["", "Tokens", "1tokens", "to-kens", &"t".repeat(33)] {
            assert_eq!(unit(bad), None, "{bad}");
        }
        assert_eq!(to_units("12.5", "USD").unwrap().0, 1250);
        assert_eq!(to_units("1000", "tokens").unwrap().0, 1000);
        assert_eq!(to_units("1.5", "tokens").unwrap_err().sqlstate(), "PM101");
        assert_eq!(to_units("0", "tokens").unwrap_err().sqlstate(), "PM102");
        assert_eq!(to_units("1", "Tokens!").unwrap_err().sqlstate(), "PM106");
        assert_eq!(to_major(1250, "usd").as_deref(), Some("12.50"));
        assert_eq!(to_major(-7, "tokens").as_deref(), Some("-7"));
        assert_eq!(to_major(1, "Tokens"), None);
    }

    #[test]
    fn balances_are_shown_on_the_accounts_normal_side() {
        assert_eq!(account_named("credits").unwrap().sign(), -1);
        assert_eq!(account_named("refunds").unwrap().sign(), 1);
        assert!(account_named("cash").is_none());
        // What the customer owns is shown to it; the platform's is summed over customers.
        let customers: Vec<_> = ACCOUNTS.iter().filter(|a| a.owner == Owner::Customer).map(|a| a.name).collect();
        assert_eq!(customers, ["balance", "credits", "holds"]);
        // Every account is named once.
        let mut names: Vec<_> = ACCOUNTS.iter().map(|a| a.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ACCOUNTS.len());
    }
}
