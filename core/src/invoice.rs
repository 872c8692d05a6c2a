//! An invoice's arithmetic, as Stripe does it: a coupon's discount comes off each line first,
//! then each tax rate is computed on each line's discounted amount and rounded per line, half
//! away from zero, to a whole minor unit.
//!
//! - A percentage discount takes that share of each discountable line.
//! - An amount discount (at most what the discountable lines add up to) is shared among them in
//!   proportion to their amounts; the minor units the shares' rounding leaves over go, one each,
//!   to the lines with the largest remainders (then the earliest).
//! - An exclusive rate adds `amount × rate` to the invoice. An inclusive rate is inside the
//!   amount already: its share is `amount × rate / (1 + the sum of the inclusive rates)`.
//!
//! Negative lines (a credit for unused time) are not discounted, and are taxed negatively, so a
//! prorated change taxes only its difference. A line may be neither (an amount taxed already).

use rust_decimal::{Decimal, RoundingStrategy};

/// A coupon's discount on one invoice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Discount {
    /// Above 0, at most 100 (percent).
    Percent(Decimal),
    /// Minor units of the invoice's currency, above 0.
    Amount(i64),
}

/// One line of an invoice: minor units, and whether the coupon and the taxes apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub amount: i64,
    pub discountable: bool,
    pub taxable: bool,
}

/// A tax rate, in percent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub percentage: Decimal,
    pub inclusive: bool,
}

/// What each line's discount and taxes came to, and each rate's total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    /// Per line, the discount (0 or more).
    pub discounts: Vec<i64>,
    /// Per line, its taxes of every rate (inclusive ones included).
    pub line_taxes: Vec<i64>,
    /// Per rate, its tax on the whole invoice.
    pub rate_taxes: Vec<i64>,
    /// What the exclusive rates add to the invoice.
    pub exclusive_tax: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvoiceError {
    #[error("a percentage discount is above 0 and at most 100, an amount discount above 0")]
    BadDiscount,
    #[error("a tax rate is from 0 up to 100 percent")]
    BadRate,
    #[error("the invoice is too large to price")]
    TooLarge,
}

fn round(d: Decimal) -> Result<i64, InvoiceError> {
    i64::try_from(d.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero))
        .map_err(|_| InvoiceError::TooLarge)
}

fn discounts(lines: &[Line], discount: Option<Discount>) -> Result<Vec<i64>, InvoiceError> {
    let eligible: Vec<i64> = lines.iter().map(|l| if l.discountable && l.amount > 0 { l.amount } else { 0 }).collect();
    match discount {
        None => Ok(vec![0; lines.len()]),
        Some(Discount::Percent(p)) => {
            if p <= Decimal::ZERO || p > Decimal::ONE_HUNDRED {
                return Err(InvoiceError::BadDiscount);
            }
            eligible.iter().map(|&a| round(Decimal::from(a) * p / Decimal::ONE_HUNDRED)).collect()
        }
        Some(Discount::Amount(off)) => {
            if off <= 0 {
                return Err(InvoiceError::BadDiscount);
            }
            let total: i128 = eligible.iter().map(|&a| i128::from(a)).sum();
            let off = i128::from(off).min(total);
            if total == 0 {
                return Ok(vec![0; lines.len()]);
            }
            // Each line's exact share, floored; the rest by largest remainder.
            let mut shares: Vec<(i128, i128)> =
                eligible.iter().map(|&a| (off * i128::from(a) / total, off * i128::from(a) % total)).collect();
            let mut left = off - shares.iter().map(|(s, _)| s).sum::<i128>();
            let mut order: Vec<usize> = (0..shares.len()).filter(|&i| eligible[i] > 0).collect();
            order.sort_by(|&x, &y| shares[y].1.cmp(&shares[x].1).then(x.cmp(&y)));
            for i in order {
                if left == 0 {
                    break;
                }
                shares[i].0 += 1;
                left -= 1;
            }
            shares.iter().map(|(s, _)| i64::try_from(*s).map_err(|_| InvoiceError::TooLarge)).collect()
        }
    }
}

/// Prices an invoice's lines.
pub fn price(lines: &[Line], discount: Option<Discount>, rates: &[Rate]) -> Result<Priced, InvoiceError> {
    if rates.iter().any(|r| r.percentage < Decimal::ZERO || r.percentage > Decimal::ONE_HUNDRED) {
        return Err(InvoiceError::BadRate);
    }
    let discounts = discounts(lines, discount)?;
    let inclusive: Decimal = rates.iter().filter(|r| r.inclusive).map(|r| r.percentage).sum();
    let mut line_taxes = vec![0i64; lines.len()];
    let mut rate_taxes = vec![0i64; rates.len()];
    let mut exclusive_tax = 0i64;
    for (i, (line, &off)) in lines.iter().zip(&discounts).enumerate().filter(|(_, (l, _))| l.taxable) {
        let taxable = Decimal::from(line.amount) - Decimal::from(off);
        for (r, rate) in rates.iter().enumerate() {
            let tax = if rate.inclusive {
                round(taxable * rate.percentage / (Decimal::ONE_HUNDRED + inclusive))?
            } else {
                round(taxable * rate.percentage / Decimal::ONE_HUNDRED)?
            };
            line_taxes[i] = line_taxes[i].checked_add(tax).ok_or(InvoiceError::TooLarge)?;
            rate_taxes[r] = rate_taxes[r].checked_add(tax).ok_or(InvoiceError::TooLarge)?;
            if !rate.inclusive {
                exclusive_tax = exclusive_tax.checked_add(tax).ok_or(InvoiceError::TooLarge)?;
            }
        }
    }
    Ok(Priced { discounts, line_taxes, rate_taxes, exclusive_tax })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn rate(p: &str, inclusive: bool) -> Rate {
        Rate { percentage: d(p), inclusive }
    }

    /// Lines that the coupon and the taxes apply to, and credits (negative) they are taxed on.
    fn lines(amounts: &[i64]) -> Vec<Line> {
        amounts.iter().map(|&amount| Line { amount, discountable: amount > 0, taxable: true }).collect()
    }

    #[test]
    fn a_percentage_off_then_an_exclusive_tax_on_what_is_left() {
        // Stripe's example: 3 seats at 10.00, 20 % off, 8.25 % sales tax: 24.00 + 1.98.
        let p = price(&lines(&[3000]), Some(Discount::Percent(d("20"))), &[rate("8.25", false)]).unwrap();
        assert_eq!(p.discounts, [600]);
        assert_eq!((p.line_taxes.as_slice(), p.rate_taxes.as_slice(), p.exclusive_tax), (&[198][..], &[198][..], 198));
    }

    #[test]
    fn an_inclusive_tax_is_inside_the_amount() {
        // 12.00 including 20 % VAT: 2.00 of it is tax, nothing added.
        let p = price(&lines(&[1200]), None, &[rate("20", true)]).unwrap();
        assert_eq!((p.rate_taxes[0], p.exclusive_tax), (200, 0));
        // Two inclusive rates share the amount: 11.50 with 10 % and 5 %: 1.00 and 0.50.
        let p = price(&lines(&[1150]), None, &[rate("10", true), rate("5", true)]).unwrap();
        assert_eq!(p.rate_taxes, [100, 50]);
    }

    #[test]
    fn an_amount_off_is_shared_in_proportion_and_never_more_than_the_lines() {
        // 10.00 off lines of 10.00, 20.00 and 0.01: shares 3.33, 6.67 (the larger remainder), 0.00.
        let p = price(&lines(&[1000, 2000, 1]), Some(Discount::Amount(1000)), &[]).unwrap();
        assert_eq!(p.discounts, [333, 667, 0]);
        assert_eq!(p.discounts.iter().sum::<i64>(), 1000);
        // More off than there is: all of it, and the credit line is left alone.
        let p = price(&lines(&[500, -200]), Some(Discount::Amount(900)), &[]).unwrap();
        assert_eq!(p.discounts, [500, 0]);
    }

    #[test]
    fn credits_are_taxed_negatively_and_not_discounted() {
        let p = price(&lines(&[1500, -500]), Some(Discount::Percent(d("10"))), &[rate("10", false)]).unwrap();
        assert_eq!(p.discounts, [150, 0]);
        assert_eq!(p.line_taxes, [135, -50]);
        assert_eq!(p.exclusive_tax, 85);
    }

    #[test]
    fn tax_is_rounded_per_line_half_away_from_zero() {
        // 0.05 at 10 % is 0.5 of a cent: 1 cent; two such lines: 2 (not 1 on their sum).
        let p = price(&lines(&[5, 5]), None, &[rate("10", false)]).unwrap();
        assert_eq!(p.line_taxes, [1, 1]);
        assert_eq!(p.exclusive_tax, 2);
    }

    #[test]
    fn bad_discounts_and_rates_are_refused() {
        let one = lines(&[1]);
        assert_eq!(price(&one, Some(Discount::Percent(d("0"))), &[]), Err(InvoiceError::BadDiscount));
        assert_eq!(price(&one, Some(Discount::Percent(d("100.01"))), &[]), Err(InvoiceError::BadDiscount));
        assert_eq!(price(&one, Some(Discount::Amount(0)), &[]), Err(InvoiceError::BadDiscount));
        assert_eq!(price(&one, None, &[rate("-1", false)]), Err(InvoiceError::BadRate));
        assert_eq!(price(&lines(&[i64::MAX]), None, &[rate("100", false)]).unwrap().exclusive_tax, i64::MAX);
        assert_eq!(price(&lines(&[i64::MAX, 1]), None, &[rate("100", false)]), Err(InvoiceError::TooLarge));
    }

    #[test]
    fn a_line_taxed_already_is_neither_discounted_nor_taxed_again() {
        let taxed = Line { amount: 1100, discountable: false, taxable: false };
        let p = price(&[taxed], Some(Discount::Percent(d("50"))), &[rate("10", false)]).unwrap();
        assert_eq!((p.discounts[0], p.line_taxes[0], p.exclusive_tax), (0, 0, 0));
    }
}
