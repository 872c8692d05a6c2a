//! Usage prices as Stripe and Lago price them: per unit, graduated tiers (each
//! unit at the price of the tier it falls in) and volume tiers (every unit at
//! the price of the tier the total falls in), each tier with an optional flat
//! fee. Prices are in minor units and may be fractional (a tenth of a cent per
//! token); the total is rounded once, half away from zero, to a whole minor unit.

use rust_decimal::{Decimal, RoundingStrategy};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    PerUnit,
    Graduated,
    Volume,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "per_unit" => Some(Mode::PerUnit),
            "graduated" => Some(Mode::Graduated),
            "volume" => Some(Mode::Volume),
            _ => None,
        }
    }
}

/// One tier: up to `up_to` units (None: no bound; only the last tier), at `unit_minor` each, plus `flat_minor`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub up_to: Option<Decimal>,
    pub unit_minor: Decimal,
    pub flat_minor: Decimal,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("a price needs at least one tier, and per_unit exactly one")]
    TierCount,
    #[error("tiers must rise (each up_to above the one before), only the last may have no up_to, and it must not")]
    TierOrder,
    #[error("quantities, up_to and amounts cannot be negative")]
    Negative,
    #[error("the price is too large")]
    TooLarge,
}

/// Checks a price's shape once, when a plan is made.
pub fn check(mode: Mode, tiers: &[Tier]) -> Result<(), PriceError> {
    if tiers.is_empty() || (mode == Mode::PerUnit && tiers.len() != 1) {
        return Err(PriceError::TierCount);
    }
    let (last, rest) = tiers.split_last().expect("not empty");
    if last.up_to.is_some() || rest.iter().any(|t| t.up_to.is_none()) {
        return Err(PriceError::TierOrder);
    }
    let bounds: Vec<Decimal> = rest.iter().filter_map(|t| t.up_to).collect();
    if bounds.windows(2).any(|w| w[1] <= w[0]) || bounds.first().is_some_and(|b| *b <= Decimal::ZERO) {
        return Err(PriceError::TierOrder);
    }
    if tiers.iter().any(|t| t.unit_minor.is_sign_negative() || t.flat_minor.is_sign_negative()) {
        return Err(PriceError::Negative);
    }
    Ok(())
}

/// What `quantity` units cost, in whole minor units.
pub fn price(quantity: Decimal, mode: Mode, tiers: &[Tier]) -> Result<i64, PriceError> {
    check(mode, tiers)?;
    if quantity.is_sign_negative() {
        return Err(PriceError::Negative);
    }
    let mul = |a: Decimal, b: Decimal| a.checked_mul(b).ok_or(PriceError::TooLarge);
    let add = |a: Decimal, b: Decimal| a.checked_add(b).ok_or(PriceError::TooLarge);
    let total = match mode {
        Mode::PerUnit => add(mul(quantity, tiers[0].unit_minor)?, tiers[0].flat_minor)?,
        Mode::Volume => {
            let tier =
                tiers.iter().find(|t| t.up_to.is_none_or(|u| quantity <= u)).expect("the last tier has no bound");
            if quantity.is_zero() {
                Decimal::ZERO
            } else {
                add(mul(quantity, tier.unit_minor)?, tier.flat_minor)?
            }
        }
        Mode::Graduated => {
            let mut total = Decimal::ZERO;
            let mut below = Decimal::ZERO;
            for tier in tiers {
                if quantity <= below {
                    break;
                }
                let top = tier.up_to.map_or(quantity, |u| u.min(quantity));
                total = add(total, add(mul(top - below, tier.unit_minor)?, tier.flat_minor)?)?;
                below = tier.up_to.unwrap_or(quantity);
            }
            total
        }
    };
    let rounded = total.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
    i64::try_from(rounded).map_err(|_| PriceError::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn tier(up_to: Option<&str>, unit: &str, flat: &str) -> Tier {
        Tier { up_to: up_to.map(d), unit_minor: d(unit), flat_minor: d(flat) }
    }

    /// Stripe's documented example: 1–5 at $5, 6–10 at $4, 11+ at $3 (in cents).
    fn stripe_tiers() -> Vec<Tier> {
        vec![tier(Some("5"), "500", "0"), tier(Some("10"), "400", "0"), tier(None, "300", "0")]
    }

    #[test]
    fn graduated_prices_each_unit_in_its_tier_as_stripe_documents() {
        // 12 units: 5×$5 + 5×$4 + 2×$3 = $51.
        assert_eq!(price(d("12"), Mode::Graduated, &stripe_tiers()), Ok(5100));
        assert_eq!(price(d("5"), Mode::Graduated, &stripe_tiers()), Ok(2500));
        assert_eq!(price(d("0"), Mode::Graduated, &stripe_tiers()), Ok(0));
    }

    #[test]
    fn volume_prices_every_unit_at_the_tier_of_the_total() {
        // 12 units: all at $3 = $36; 6 units: all at $4 = $24.
        assert_eq!(price(d("12"), Mode::Volume, &stripe_tiers()), Ok(3600));
        assert_eq!(price(d("6"), Mode::Volume, &stripe_tiers()), Ok(2400));
        assert_eq!(price(d("0"), Mode::Volume, &stripe_tiers()), Ok(0));
    }

    #[test]
    fn flat_fees_and_fractional_unit_prices_round_once_at_the_end() {
        let tokens = [tier(Some("1000"), "0", "0"), tier(None, "0.1", "200")];
        // 1000 free, then 2345 × 0.1¢ = 234.5¢ + 200¢ flat = 434.5 → 435.
        assert_eq!(price(d("3345"), Mode::Graduated, &tokens), Ok(435));
        assert_eq!(price(d("1000"), Mode::Graduated, &tokens), Ok(0), "the flat fee only once the tier is reached");
        assert_eq!(price(d("2.5"), Mode::PerUnit, &[tier(None, "3", "0")]), Ok(8), "7.5 rounds away from zero");
    }

    #[test]
    fn malformed_prices_are_refused() {
        assert_eq!(check(Mode::Graduated, &[]), Err(PriceError::TierCount));
        assert_eq!(check(Mode::PerUnit, &stripe_tiers()), Err(PriceError::TierCount));
        assert_eq!(check(Mode::Volume, &[tier(Some("5"), "1", "0")]), Err(PriceError::TierOrder));
        assert_eq!(
            check(Mode::Volume, &[tier(Some("5"), "1", "0"), tier(Some("3"), "1", "0"), tier(None, "1", "0")]),
            Err(PriceError::TierOrder)
        );
        assert_eq!(check(Mode::Volume, &[tier(None, "-1", "0")]), Err(PriceError::Negative));
        assert_eq!(price(d("-1"), Mode::PerUnit, &[tier(None, "1", "0")]), Err(PriceError::Negative));
        assert!(price(d("1e20"), Mode::PerUnit, &[tier(None, "1e10", "0")]).is_err(), "too large for minor units");
    }
}
