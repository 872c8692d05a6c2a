//! Sortable unique ids: `<prefix>_` + a ULID (48 bits of Unix milliseconds,
//! 80 random bits) in lower-case Crockford base32, so ids sort by creation
//! time under the "C" collation. The `ulid` crate encodes; the randomness is
//! the OS's.

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

pub fn encode(millis: u64, random: [u8; 10]) -> String {
    let mut bits = [0u8; 16];
    bits[6..].copy_from_slice(&random);
    ulid::Ulid::from_parts(millis, u128::from_be_bytes(bits)).to_string().to_ascii_lowercase()
}

pub fn new_id(prefix: &str, millis: u64) -> Result<String, getrandom::Error> {
    let mut random = [0u8; 10];
    getrandom::getrandom(&mut random)?;
    Ok(format!("{prefix}_{}", encode(millis, random)))
}

/// A secret token (an API key): `<prefix>_` + 32 base32 characters of 160
/// random bits (ULID's alphabet; a ULID holds only 80 random bits).
pub fn new_token(prefix: &str) -> Result<String, getrandom::Error> {
    let mut random = [0u8; 20];
    getrandom::getrandom(&mut random)?;
    let bits = random.iter().flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1));
    let mut out = format!("{prefix}_");
    let bits: Vec<u8> = bits.collect();
    for chunk in bits.chunks(5) {
        let v = chunk.iter().fold(0usize, |acc, b| (acc << 1) | usize::from(*b));
        out.push(ALPHABET[v] as char);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_have_a_fixed_shape() {
        let a = encode(1_700_000_000_000, [0xff; 10]);
        let b = encode(1_700_000_000_001, [0x00; 10]);
        assert!(a < b);
        assert_eq!(a.len(), 26);
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)));
    }

    #[test]
    fn random_part_is_fully_encoded() {
        assert_eq!(encode(0, [0; 10]), "00000000000000000000000000");
        assert_eq!(encode(0, [0xff; 10]), "0000000000zzzzzzzzzzzzzzzz");
        assert_eq!(encode(0xFFFF_FFFF_FFFF, [0; 10]), "7zzzzzzzzz0000000000000000");
    }

    #[test]
    fn tokens_are_long_random_and_distinct() {
        let a = new_token("sk").unwrap();
        let b = new_token("sk").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 32);
        assert!(a[3..].bytes().all(|c| ALPHABET.contains(&c)));
    }

    #[test]
    fn new_ids_are_unique() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| new_id("pay", 1).unwrap()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.starts_with("pay_") && id.len() == 30));
    }
}
