//! RFC 3339 timestamps that PostgreSQL's `timestamptz` input takes as they are,
//! checked without raising: a batch casts them all in one statement, and one
//! bad cast would stop the statement (PostgreSQL 15 has no soft input errors).

/// Whether `s` is `YYYY-MM-DD(T| )hh:mm:ss[.fraction](Z|±hh:mm)` with a real
/// calendar date (leap years counted), hour < 24, minute and second < 60, a
/// fraction of 1 to 6 digits and an offset of at most 15:59.
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |from: usize, n: usize| -> Option<u32> {
        let part = b.get(from..from + n)?;
        part.iter().all(u8::is_ascii_digit).then(|| part.iter().fold(0, |v, d| v * 10 + u32::from(d - b'0')))
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) =
        (digits(0, 4), digits(5, 2), digits(8, 2), digits(11, 2), digits(14, 2), digits(17, 2))
    else {
        return false;
    };
    if !(at(4, b'-') && at(7, b'-') && (at(10, b'T') || at(10, b' ')) && at(13, b':') && at(16, b':')) {
        return false;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if year == 0 || day == 0 || day > days || hour > 23 || minute > 59 || second > 59 {
        return false;
    }
    let mut i = 19;
    if at(i, b'.') {
        let n = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=6).contains(&n) {
            return false;
        }
        i += 1 + n;
    }
    match b.get(i) {
        Some(b'Z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            matches!((digits(i + 1, 2), digits(i + 4, 2)), (Some(h), Some(m)) if h <= 15 && m <= 59)
                && at(i + 3, b':')
                && i + 6 == b.len()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_instants_with_an_offset_pass() {
        for ok in [
            "2026-12-07T10:00:00Z",
            "2026-12-07 10:00:00Z",
            "2024-02-29T23:59:59.999999+15:59",
            "2000-02-29T00:00:00-05:00",
            "0001-01-01T00:00:00.5Z",
        ] {
            assert!(is_rfc3339(ok), "{ok}");
        }
    }

    #[test]
    fn anything_postgresql_might_refuse_or_read_by_the_session_s_zone_does_not() {
        for bad in [
            "2026-12-07T10:00:00",          // no offset: the session's TimeZone would decide
            "2025-02-29T00:00:00Z",         // not a leap year
            "1900-02-29T00:00:00Z",         // nor is 1900
            "2026-04-31T00:00:00Z",         // April has 30 days
            "2026-13-01T00:00:00Z",         // month 13
            "2026-12-07T24:00:00Z",         // hour 24
            "2026-12-07T10:60:00Z",         // minute 60
            "2026-12-07T10:00:60Z",         // a leap second
            "2026-12-07T10:00:00.1234567Z", // seven digits
            "2026-12-07T10:00:00.Z",        // no digits
            "2026-12-07T10:00:00+16:00",    // beyond PostgreSQL's offsets
            "2026-12-07T10:00:00+0100",     // RFC 3339 wants the colon
            "2026-12-07T10:00:00Zjunk",
            "0000-01-01T00:00:00Z",
            "tomorrow",
            "",
            "２026-12-07T10:00:00Z",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }
}
