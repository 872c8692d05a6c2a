//! Active ISO 4217 currencies and their minor-unit exponents (ISO 4217 list
//! published 2025; BGN, ANG, HRK, SLL, ZWL and other withdrawn codes are gone).

/// A currency we accept: its code and how many decimal places its minor unit has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency {
    pub code: &'static str,
    pub exponent: u32,
}

const ZERO_DECIMAL: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF",
    "XPF",
];
const THREE_DECIMAL: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
const FOUR_DECIMAL: &[&str] = &["CLF", "UYW"];

/// Every active code, sorted, so lookups are a binary search.
const ALL: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BHD", "BIF", "BMD", "BND",
    "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY",
    "COP", "COU", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP",
    "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD",
    "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP",
    "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN",
    "MXV", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN",
    "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD",
    "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX",
    "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF",
    "YER", "ZAR", "ZMW", "ZWG",
];

fn exponent_of(code: &str) -> u32 {
    if ZERO_DECIMAL.contains(&code) {
        0
    } else if THREE_DECIMAL.contains(&code) {
        3
    } else if FOUR_DECIMAL.contains(&code) {
        4
    } else {
        2
    }
}

/// Looks a code up in any letter case; `None` when it is not an active currency.
pub fn lookup(code: &str) -> Option<Currency> {
    let upper = code.to_ascii_uppercase();
    ALL.binary_search(&upper.as_str()).ok().map(|i| Currency { code: ALL[i], exponent: exponent_of(ALL[i]) })
}

/// All accepted currencies, in code order.
pub fn all() -> impl Iterator<Item = Currency> {
    ALL.iter().map(|code| Currency { code, exponent: exponent_of(code) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique_so_binary_search_is_valid() {
        assert!(ALL.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn exception_lists_only_name_active_codes() {
        for code in ZERO_DECIMAL.iter().chain(THREE_DECIMAL).chain(FOUR_DECIMAL) {
            assert!(lookup(code).is_some(), "{code} is not in the table");
        }
    }

    #[test]
    fn exponent_classes() {
        for (code, exp) in [
            ("JPY", 0),
            ("KRW", 0),
            ("CLP", 0),
            ("USD", 2),
            ("EUR", 2),
            ("GBP", 2),
            ("KWD", 3),
            ("BHD", 3),
            ("JOD", 3),
            ("OMR", 3),
            ("TND", 3),
            ("CLF", 4),
        ] {
            assert_eq!(lookup(code).unwrap().exponent, exp, "{code}");
        }
    }

    #[test]
    fn lookup_is_case_insensitive_and_rejects_unknown_or_withdrawn_codes() {
        assert_eq!(lookup("usd").unwrap().code, "USD");
        assert_eq!(lookup("eUr").unwrap().code, "EUR");
        for bad in ["", " USD", "US", "USDD", "XYZ", "HRK", "XAU", "BGN"] {
            assert!(lookup(bad).is_none(), "{bad}");
        }
    }
}
