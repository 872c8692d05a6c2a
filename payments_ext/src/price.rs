//! Reads a usage price from its JSON text exactly (numbers never pass through
//! a float) for `payments_core::pricing`:
//! `{"mode": "graduated", "tiers": [{"up_to": 1000, "unit_amount_minor": "0"}, {"up_to": null, "unit_amount_minor": "0.1", "flat_amount_minor": 200}]}`.

use std::collections::BTreeMap;
use std::str::FromStr;

use payments_core::pricing::{Mode, Tier};
use rust_decimal::Decimal;
use serde_json::value::RawValue;

type Fields = BTreeMap<String, Box<RawValue>>;

/// A JSON number's or string's exact decimal; None for anything else.
fn decimal(raw: &RawValue) -> Option<Decimal> {
    let text = raw.get();
    let text = match text.strip_prefix('"') {
        Some(quoted) => serde_json::from_str::<String>(text).ok().filter(|_| quoted.ends_with('"'))?,
        None => text.to_string(),
    };
    Decimal::from_str(&text).or_else(|_| Decimal::from_scientific(&text)).ok()
}

/// The mode and tiers of a price, or why it is not one.
pub fn parse(json: &str) -> Result<(Mode, Vec<Tier>), &'static str> {
    let shape = "a price is {\"mode\": per_unit | graduated | volume, \"tiers\": [{\"up_to\", \"unit_amount_minor\", \"flat_amount_minor\"}]}";
    let top: Fields = serde_json::from_str(json).map_err(|_| shape)?;
    let mode = top.get("mode").and_then(|m| serde_json::from_str::<String>(m.get()).ok()).ok_or(shape)?;
    let mode = Mode::parse(&mode).ok_or(shape)?;
    let tiers: Vec<Fields> = serde_json::from_str(top.get("tiers").ok_or(shape)?.get()).map_err(|_| shape)?;
    let tiers = tiers
        .iter()
        .map(|t| {
            let up_to = match t.get("up_to").map(|v| v.get()) {
                None | Some("null") => None,
                Some(_) => Some(decimal(&t["up_to"]).ok_or(shape)?),
            };
            let amount = |key: &str| t.get(key).map_or(Some(Decimal::ZERO), |v| decimal(v)).ok_or(shape);
            Ok(Tier { up_to, unit_minor: amount("unit_amount_minor")?, flat_minor: amount("flat_amount_minor")? })
        })
        .collect::<Result<Vec<_>, &'static str>>()?;
    Ok((mode, tiers))
}
