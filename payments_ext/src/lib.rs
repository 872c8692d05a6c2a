//! The `payments` extension. This file is the table of contents of what Rust
//! adds to SQL: thin `#[pg_extern]` wrappers over the pure logic in `payments-core`.
//! The SQL API itself (`create_payment`, `transition`, …) is PL/pgSQL in
//! `sql/code/payments.sql`, which calls these for money, state decisions and hashes.

use pgrx::prelude::*;
use pgrx::JsonB;

use payments_core::{
    canonical, currency, evidence, id, ledger, lifecycle, money, provider, state, vocabulary, webhook,
};

mod headers;
mod price;
mod released;
use headers::Headers;

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

pgrx::pg_module_magic!();

// Hand-written SQL, in load order: each subsystem's state (sql/state/: tables,
// types, indexes; created once, changed by a release's delta) and then its code
// (sql/code/: functions, views, triggers, grants; every upgrade runs it again,
// scripts/sqltool.py). Rust functions are created first (they live in the
// extension's schema, `payments`); roles and grants come last.
extension_sql_file!(
    "../../sql/state/payments.sql",
    name = "payments_state",
    requires = [to_major, is_allowed, all_allowed, group]
);
extension_sql_file!(
    "../../sql/code/payments.sql",
    name = "payments",
    requires = [
        "payments_state",
        to_minor_or_null,
        money_error,
        currencies,
        statuses,
        allowed_transitions,
        transition_decision,
        initial_status,
        allowed_values,
        evidence_problem,
        new_id,
        event_hash,
        request_fingerprint
    ]
);
extension_sql_file!(
    "../../sql/state/webhooks.sql",
    name = "webhooks_state",
    requires = [
        "payments",
        webhook_signature_failure,
        verify_webhook_signature,
        webhook_secret_failure,
        provider_event,
        provider_object,
        provider_secret_paths
    ]
);
extension_sql_file!("../../sql/code/webhooks.sql", name = "webhooks", requires = ["webhooks_state"]);
extension_sql_file!("../../sql/code/views.sql", name = "views", requires = ["webhooks"]);
extension_sql_file!("../../sql/state/api_keys.sql", name = "api_keys_state", requires = ["views", new_token]);
extension_sql_file!("../../sql/code/api_keys.sql", name = "api_keys", requires = ["api_keys_state"]);
extension_sql_file!("../../sql/state/provider_commands.sql", name = "provider_commands_state", requires = ["api_keys"]);
extension_sql_file!(
    "../../sql/code/provider_commands.sql",
    name = "provider_commands",
    requires = ["provider_commands_state"]
);
extension_sql_file!(
    "../../sql/state/refunds.sql",
    name = "refunds_state",
    requires = ["provider_commands", refund_decision]
);
extension_sql_file!("../../sql/code/refunds.sql", name = "refunds", requires = ["refunds_state"]);
extension_sql_file!(
    "../../sql/state/disputes.sql",
    name = "disputes_state",
    requires = ["refunds", dispute_decision, dispute_withholds]
);
extension_sql_file!("../../sql/code/disputes.sql", name = "disputes", requires = ["disputes_state"]);
extension_sql_file!("../../sql/code/balances.sql", name = "balances", requires = ["disputes"]);
extension_sql_file!("../../sql/state/reconciliation.sql", name = "reconciliation_state", requires = ["balances"]);
extension_sql_file!("../../sql/code/reconciliation.sql", name = "reconciliation", requires = ["reconciliation_state"]);
extension_sql_file!("../../sql/state/usage.sql", name = "usage_state", requires = ["reconciliation", is_rfc3339]);
extension_sql_file!("../../sql/code/usage.sql", name = "usage", requires = ["usage_state"]);
extension_sql_file!(
    "../../sql/state/subscriptions.sql",
    name = "subscriptions_state",
    requires = ["usage", lifecycle_decision]
);
extension_sql_file!("../../sql/code/subscriptions.sql", name = "subscriptions", requires = ["subscriptions_state"]);
extension_sql_file!(
    "../../sql/state/billing.sql",
    name = "billing_state",
    requires = ["subscriptions", price_problem, usage_price]
);
extension_sql_file!("../../sql/code/billing.sql", name = "billing", requires = ["billing_state"]);
extension_sql_file!("../../sql/state/events.sql", name = "events_state", requires = ["billing", new_webhook_secret]);
extension_sql_file!("../../sql/code/events.sql", name = "events", requires = ["events_state"]);
extension_sql_file!(
    "../../sql/state/dashboard.sql",
    name = "dashboard_state",
    requires = ["events", password_problem, password_hash, password_matches]
);
extension_sql_file!("../../sql/code/dashboard.sql", name = "dashboard", requires = ["dashboard_state"]);
extension_sql_file!(
    "../../sql/state/ledger.sql",
    name = "ledger_state",
    requires = [
        "dashboard",
        unit_code,
        to_units_or_null,
        units_error,
        units_major,
        account_sign,
        account_owner,
        ledger_accounts
    ]
);
extension_sql_file!("../../sql/code/ledger.sql", name = "ledger", requires = ["ledger_state"]);
extension_sql_file!("../../sql/state/coupons_and_taxes.sql", name = "coupons_and_taxes_state", requires = ["ledger"]);
extension_sql_file!(
    "../../sql/code/coupons_and_taxes.sql",
    name = "coupons_and_taxes",
    requires = ["coupons_and_taxes_state", price_invoice]
);
extension_sql_file!("../../sql/state/credit_notes.sql", name = "credit_notes_state", requires = ["coupons_and_taxes"]);
extension_sql_file!("../../sql/code/credit_notes.sql", name = "credit_notes", requires = ["credit_notes_state"]);
extension_sql_file!("../../sql/code/scale_out.sql", name = "scale_out", requires = ["credit_notes"]);
extension_sql_file!("../../sql/code/roles.sql", name = "roles", finalize);

// ---- money -----------------------------------------------------------------

/// Minor units of `amount` in `currency`, or NULL when the pair is invalid
/// (`payments.to_minor` then asks `_money_error` why and raises it).
#[pg_extern(immutable, parallel_safe, name = "_to_minor")]
fn to_minor_or_null(amount: AnyNumeric, currency: &str) -> Option<i64> {
    money::to_minor(&amount.to_string(), currency).ok().map(|(minor, _)| minor)
}

/// `{sqlstate, message, hint}` for an invalid amount/currency pair, NULL if valid.
#[pg_extern(immutable, parallel_safe, name = "_money_error")]
fn money_error(amount: AnyNumeric, currency: &str) -> Option<Vec<Option<String>>> {
    money::to_minor(&amount.to_string(), currency).err().map(|e| e.to_report())
}

/// Minor units rendered in major units at the currency's scale; NULL for an unknown currency.
#[pg_extern(immutable, parallel_safe)]
fn to_major(amount_minor: i64, currency: &str) -> Option<AnyNumeric> {
    let text = money::to_major(amount_minor, currency).ok()?;
    Some(text.parse().expect("a rendered Decimal is valid numeric input"))
}

#[pg_extern(immutable, parallel_safe)]
fn currencies() -> TableIterator<'static, (name!(code, &'static str), name!(exponent, i32))> {
    TableIterator::new(currency::all().map(|c| (c.code, c.exponent as i32)))
}

// ---- state machine -----------------------------------------------------------

#[pg_extern(immutable, parallel_safe)]
fn statuses() -> TableIterator<'static, (name!(status, &'static str), name!(rank, i32), name!(terminal, bool))> {
    TableIterator::new(state::ALL.into_iter().map(|s| (s.as_str(), i32::from(s.rank()), s.is_terminal())))
}

#[pg_extern(immutable, parallel_safe)]
fn allowed_transitions() -> TableIterator<'static, (name!(from_status, &'static str), name!(to_status, &'static str))> {
    TableIterator::new(
        state::ALL.into_iter().flat_map(|from| from.successors().iter().map(move |to| (from.as_str(), to.as_str()))),
    )
}

/// `apply`, `noop`, `ignore` (a stale report) or `forbidden`; NULL when a status or the source is not a
/// known name. Frozen words: see `state::Decision::as_str`.
#[pg_extern(immutable, parallel_safe, name = "_transition_decision")]
fn transition_decision(from_status: &str, to_status: &str, source: &str) -> Option<&'static str> {
    let (from, to, source) =
        (state::Status::parse(from_status)?, state::Status::parse(to_status)?, state::Source::parse(source)?);
    Some(state::decide(from, to, source).as_str())
}

/// The status a new payment starts in.
#[pg_extern(immutable, parallel_safe, name = "_initial_status")]
fn initial_status(has_payment_method: bool) -> &'static str {
    state::initial_status(has_payment_method).as_str()
}

/// Why a provider object (its money fields as JSON text) is no evidence for
/// moving a payment of `expected_amount` `expected_currency` to `to_status`:
/// an anomaly kind, or NULL when it is evidence.
#[pg_extern(immutable, parallel_safe, name = "_evidence_problem")]
fn evidence_problem(
    expected_amount: i64,
    expected_currency: &str,
    to_status: &str,
    amount: Option<&str>,
    currency: Option<&str>,
    amount_received: Option<&str>,
    amount_capturable: Option<&str>,
) -> Option<&'static str> {
    let expected = evidence::Expected { amount_minor: expected_amount, currency: expected_currency };
    let observed = evidence::Observed { amount, currency, amount_received, amount_capturable };
    // An unknown status is refused later by the state machine; the money is checked all the same.
    let to = state::Status::parse(to_status).unwrap_or(state::Status::RequiresPaymentMethod);
    evidence::check(&expected, to, &observed).map(evidence::Anomaly::as_str)
}

// ---- allowed values (one registry: payments_core::vocabulary) ----------------

#[pg_extern(immutable, parallel_safe)]
fn allowed_values() -> TableIterator<'static, (name!(kind, &'static str), name!(value, &'static str))> {
    TableIterator::new(vocabulary::KINDS.iter().flat_map(|k| k.values().into_iter().map(move |v| (k.as_str(), v))))
}

/// Whether `value` is one of the allowed values of `kind`; what CHECK constraints use.
#[pg_extern(immutable, parallel_safe, name = "_is_allowed")]
fn is_allowed(kind: &str, value: &str) -> bool {
    vocabulary::Kind::parse(kind).is_some_and(|k| k.allows(value))
}

/// Whether every element of `values` is an allowed value of `kind` (NULL elements are not).
#[pg_extern(immutable, parallel_safe, name = "_all_allowed")]
fn all_allowed(kind: &str, values: Vec<Option<String>>) -> bool {
    vocabulary::Kind::parse(kind).is_some_and(|k| values.iter().all(|v| v.as_deref().is_some_and(|v| k.allows(v))))
}

/// The members of a named subset of statuses (`vocabulary::GROUPS`), for
/// `status = ANY (payments._group('current_subscription_status'))`: immutable, so the
/// planner folds it to a constant array. An unknown name is an error, never an empty set.
#[pg_extern(immutable, parallel_safe, name = "_group")]
fn group(name: &str) -> Vec<&'static str> {
    vocabulary::group(name).unwrap_or_else(|| error!("no status group {name:?}"))
}

// ---- ids and hashes ----------------------------------------------------------

#[pg_extern(volatile, parallel_safe, name = "_new_id")]
fn new_id(prefix: &str) -> String {
    thread_local! {
        // One backend's ids sort in the order it made them.
        static IDS: std::cell::RefCell<id::Monotonic> = std::cell::RefCell::default();
    }
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    IDS.with_borrow_mut(|ids| ids.new_id(prefix, millis))
        .unwrap_or_else(|e| error!("no randomness available for a new id: {e}"))
}

/// A secret token: `<prefix>_` and 160 random bits.
#[pg_extern(volatile, parallel_safe, name = "_new_token")]
fn new_token(prefix: &str) -> String {
    id::new_token(prefix).unwrap_or_else(|e| error!("no randomness available for a new token: {e}"))
}

/// A Standard Webhooks signing secret for an endpoint events are delivered to.
#[pg_extern(volatile, parallel_safe, name = "_new_webhook_secret")]
fn new_webhook_secret() -> String {
    webhook::standard::new_secret().unwrap_or_else(|e| error!("no randomness available for a new secret: {e}"))
}

#[allow(clippy::too_many_arguments)]
#[pg_extern(immutable, parallel_safe, name = "_event_hash")]
fn event_hash(
    prev_hash: Option<&[u8]>,
    payment_id: &str,
    seq: i64,
    from_status: Option<&str>,
    to_status: &str,
    applied: bool,
    source: &str,
    reason: Option<&str>,
    data: &str,
    created_at_micros: i64,
) -> Vec<u8> {
    let event =
        canonical::Event { payment_id, seq, from_status, to_status, applied, source, reason, data, created_at_micros };
    canonical::event_hash(prev_hash, &event).to_vec()
}

#[pg_extern(immutable, parallel_safe, name = "_request_fingerprint")]
fn request_fingerprint(
    customer_id: &str,
    amount_minor: i64,
    currency: &str,
    payment_method: Option<&str>,
    description: Option<&str>,
    metadata: &str,
    capture_method: &str,
) -> Vec<u8> {
    let request = canonical::PaymentRequest {
        customer_id,
        amount_minor,
        currency,
        payment_method,
        description,
        metadata,
        capture_method,
    };
    canonical::request_fingerprint(&request).to_vec()
}

// ---- webhooks ------------------------------------------------------------------

/// Why a webhook does not verify, or NULL when it does: `missing_header`,
/// `malformed_header`, `no_matching_signature`, `timestamp_too_old`,
/// `timestamp_in_future`, `unknown_scheme` or `invalid_secret`.
#[pg_extern(stable, parallel_safe)]
fn webhook_signature_failure(
    scheme: &str,
    secret: &str,
    headers: Headers,
    body: &[u8],
    tolerance: default!(Interval, "'5 minutes'"),
    at: default!(TimestampWithTimeZone, "now()"),
) -> Option<&'static str> {
    let Some(scheme) = webhook::Scheme::parse(scheme) else {
        return Some(webhook::Failure::UnknownScheme.as_str());
    };
    let Headers(Some(pairs)) = headers else {
        return Some(webhook::Failure::MalformedHeader.as_str());
    };
    let tolerance_secs = i64::try_from(tolerance.as_micros() / 1_000_000).unwrap_or(i64::MAX);
    let message = webhook::Message { headers: &pairs, body };
    webhook::verify(scheme, secret, &message, tolerance_secs, unix_seconds(at)).err().map(webhook::Failure::as_str)
}

/// true when `body` carries a valid signature by `secret` under `scheme`,
/// timestamped within `tolerance` of `at` in either direction.
#[pg_extern(stable, parallel_safe)]
fn verify_webhook_signature(
    scheme: &str,
    secret: &str,
    headers: Headers,
    body: &[u8],
    tolerance: default!(Interval, "'5 minutes'"),
    at: default!(TimestampWithTimeZone, "now()"),
) -> bool {
    webhook_signature_failure(scheme, secret, headers, body, tolerance, at).is_none()
}

/// Seconds since 1970 (floored) of a PostgreSQL timestamp (microseconds since 2000).
fn unix_seconds(at: TimestampWithTimeZone) -> i64 {
    const UNIX_TO_PG_EPOCH_MICROS: i64 = 946_684_800 * 1_000_000;
    at.into_inner().saturating_add(UNIX_TO_PG_EPOCH_MICROS).div_euclid(1_000_000)
}

/// NULL when `secret` is usable with `scheme`, else the reason.
#[pg_extern(immutable, parallel_safe, name = "_webhook_secret_failure")]
fn webhook_secret_failure(scheme: &str, secret: &str) -> Option<&'static str> {
    match webhook::Scheme::parse(scheme) {
        None => Some(webhook::Failure::UnknownScheme.as_str()),
        Some(s) => webhook::check_secret(s, secret).err().map(webhook::Failure::as_str),
    }
}

// ---- providers' wire formats (payments_core::provider) ------------------------

/// A verified webhook body read by the provider's format: `{"id", "type", "created"
/// (Unix seconds), "object_id", "evidence" (NULL when the event moves no money),
/// "object"}`, or `{"error": why}` when it is no event of the provider's.
#[pg_extern(immutable, parallel_safe, name = "_provider_event")]
fn provider_event(provider: &str, body: &[u8]) -> JsonB {
    JsonB(match provider::format(provider).event(body) {
        Ok(event) => event.to_json(),
        Err(why) => serde_json::json!({ "error": why }),
    })
}

/// A provider object (an answer or a listed object) as evidence, read as `kind`
/// (NULL: as whatever it says it is); NULL when it is no such object.
#[pg_extern(immutable, parallel_safe, name = "_provider_object")]
fn provider_object(provider: &str, kind: Option<&str>, object: JsonB) -> Option<JsonB> {
    let kind = match kind {
        Some(k) => Some(provider::Kind::parse(k)?),
        None => None,
    };
    provider::format(provider).object(kind, &object.0).map(|e| JsonB(e.to_json()))
}

/// Where a provider's objects hold what is never stored, as dotted paths.
#[pg_extern(immutable, parallel_safe, name = "_provider_secret_paths")]
fn provider_secret_paths(provider: &str) -> Vec<&'static str> {
    provider::format(provider).secret_paths().to_vec()
}

// ---- refunds and disputes (payments_core::lifecycle) ------------------------

/// `applied`, `noop` or `stale` for a move of an object whose lifecycle is `machine`
/// (`subscription_status`, `invoice_status`, …); NULL for an unknown machine or status.
#[pg_extern(immutable, parallel_safe, name = "_lifecycle_decision")]
fn lifecycle_decision(machine: &str, from_status: &str, to_status: &str) -> Option<&'static str> {
    lifecycle::machine(machine)?.decide(from_status, to_status).map(lifecycle::Move::as_str)
}

/// `applied`, `noop` or `stale` for a refund reported in `to_status`; NULL for an unknown status.
#[pg_extern(immutable, parallel_safe, name = "_refund_decision")]
fn refund_decision(from_status: &str, to_status: &str) -> Option<&'static str> {
    lifecycle::REFUND.decide(from_status, to_status).map(lifecycle::Move::as_str)
}

/// `applied`, `noop` or `stale` for a dispute reported in `to_status`; NULL for an unknown status.
#[pg_extern(immutable, parallel_safe, name = "_dispute_decision")]
fn dispute_decision(from_status: &str, to_status: &str) -> Option<&'static str> {
    lifecycle::DISPUTE.decide(from_status, to_status).map(lifecycle::Move::as_str)
}

/// Whether a dispute in this status withholds its amount from the merchant.
#[pg_extern(immutable, parallel_safe, name = "_dispute_withholds")]
fn dispute_withholds(status: &str) -> bool {
    lifecycle::dispute_withholds(status)
}

// ---- the ledger (payments_core::ledger) --------------------------------------

#[pg_extern(immutable, parallel_safe)]
fn ledger_accounts() -> TableIterator<
    'static,
    (
        name!(account, &'static str),
        name!(owner, &'static str),
        name!(normal_side, &'static str),
        name!(description, &'static str),
    ),
> {
    TableIterator::new(ledger::ACCOUNTS.iter().map(|a| (a.name, a.owner_name(), a.normal_side(), a.what)))
}

#[pg_extern(immutable, parallel_safe, name = "_unit")]
fn unit_code(unit: &str) -> Option<String> {
    ledger::unit(unit).map(|u| u.code().to_string())
}

#[pg_extern(immutable, parallel_safe, name = "_to_units")]
fn to_units_or_null(amount: AnyNumeric, unit: &str) -> Option<i64> {
    ledger::to_units(&amount.to_string(), unit).ok().map(|(units, _)| units)
}

#[pg_extern(immutable, parallel_safe, name = "_units_error")]
fn units_error(amount: AnyNumeric, unit: &str) -> Option<Vec<Option<String>>> {
    ledger::to_units(&amount.to_string(), unit).err().map(|e| e.to_report())
}

#[pg_extern(immutable, parallel_safe, name = "_units_major")]
fn units_major(amount: i64, unit: &str) -> Option<AnyNumeric> {
    let text = ledger::to_major(amount, unit)?;
    Some(text.parse().expect("a rendered Decimal is valid numeric input"))
}

#[pg_extern(immutable, parallel_safe, name = "_account_sign")]
fn account_sign(account: &str) -> Option<i32> {
    ledger::account_named(account).map(ledger::Account::sign)
}

#[pg_extern(immutable, parallel_safe, name = "_account_owner")]
fn account_owner(account: &str) -> Option<&'static str> {
    ledger::account_named(account).map(ledger::Account::owner_name)
}

// ---- usage (payments_core::timestamp) ----------------------------------------

/// Whether a text is an RFC 3339 timestamp with an offset that `timestamptz` takes as it is.
#[pg_extern(immutable, parallel_safe, name = "_is_rfc3339")]
fn is_rfc3339(s: &str) -> bool {
    payments_core::timestamp::is_rfc3339(s)
}

// ---- usage prices (payments_core::pricing) -----------------------------------

/// Why a dashboard password cannot be set, or NULL.
#[pg_extern(immutable, parallel_safe, name = "_password_problem")]
fn password_problem(password: &str) -> Option<String> {
    payments_core::password::problem(password)
}

/// A salted Argon2id hash (PHC string) of a dashboard password.
#[pg_extern(volatile, parallel_safe, name = "_password_hash")]
fn password_hash(password: &str) -> String {
    payments_core::password::hash(password).unwrap_or_else(|e| error!("cannot hash a password: {e}"))
}

/// Whether a password is the one the hash was made from; with no hash, a
/// decoy is checked so that an unknown user takes as long as a wrong password.
#[pg_extern(immutable, parallel_safe, name = "_password_matches")]
fn password_matches(hash: Option<&str>, password: &str) -> bool {
    payments_core::password::matches(hash, password)
}

/// Why a usage price (its JSON text) is not one, or NULL when it is.
#[pg_extern(immutable, parallel_safe, name = "_price_problem")]
fn price_problem(price: &str) -> Option<String> {
    match price::parse(price) {
        Err(why) => Some(why.to_string()),
        Ok((mode, tiers)) => payments_core::pricing::check(mode, &tiers).err().map(|e| e.to_string()),
    }
}

/// What `quantity` (numeric text) costs under a usage price, in whole minor units; NULL when either is invalid.
#[pg_extern(immutable, parallel_safe, name = "_usage_price")]
fn usage_price(quantity: &str, price: &str) -> Option<i64> {
    let quantity = <rust_decimal::Decimal as std::str::FromStr>::from_str(quantity).ok()?;
    let (mode, tiers) = price::parse(price).ok()?;
    payments_core::pricing::price(quantity, mode, &tiers).ok()
}

/// An invoice's discount and taxes per line and per rate (`payments_core::invoice`): lines in
/// minor units, whether the coupon and the taxes apply to each, a coupon's percent or amount off
/// (or neither), each tax rate's percentage and whether it is inclusive. `problem` says why it
/// cannot be priced.
#[allow(clippy::type_complexity)]
#[pg_extern(immutable, parallel_safe, name = "_price_invoice")]
fn price_invoice(
    amounts: Vec<i64>,
    discountable: Vec<bool>,
    taxable: Vec<bool>,
    percent_off: Option<AnyNumeric>,
    amount_off: Option<i64>,
    rate_percentages: Vec<AnyNumeric>,
    rate_inclusive: Vec<bool>,
) -> TableIterator<
    'static,
    (
        name!(discounts, Option<Vec<i64>>),
        name!(line_taxes, Option<Vec<i64>>),
        name!(rate_taxes, Option<Vec<i64>>),
        name!(exclusive_tax, Option<i64>),
        name!(problem, Option<String>),
    ),
> {
    use payments_core::invoice::{self, Discount, Line, Rate};
    use std::str::FromStr;
    let decimal = |n: &AnyNumeric| rust_decimal::Decimal::from_str(&n.to_string()).ok();
    let discount = match (percent_off.as_ref().map(decimal), amount_off) {
        (Some(Some(p)), None) => Some(Discount::Percent(p)),
        (None, Some(a)) => Some(Discount::Amount(a)),
        (None, None) => None,
        _ => return TableIterator::once((None, None, None, None, Some("one discount, a percent or an amount".into()))),
    };
    let rates: Option<Vec<Rate>> = rate_percentages
        .iter()
        .zip(rate_inclusive.iter().chain(std::iter::repeat(&false)))
        .map(|(p, &inclusive)| decimal(p).map(|percentage| Rate { percentage, inclusive }))
        .collect();
    let flag = |flags: &[bool], i: usize| flags.get(i).copied().unwrap_or(false);
    let lines: Vec<Line> = (amounts.iter().enumerate())
        .map(|(i, &amount)| Line { amount, discountable: flag(&discountable, i), taxable: flag(&taxable, i) })
        .collect();
    let row =
        match rates.ok_or(invoice::InvoiceError::BadRate).and_then(|rates| invoice::price(&lines, discount, &rates)) {
            Ok(p) => (Some(p.discounts), Some(p.line_taxes), Some(p.rate_taxes), Some(p.exclusive_tax), None),
            Err(e) => (None, None, None, None, Some(e.to_string())),
        };
    TableIterator::once(row)
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
