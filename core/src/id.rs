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

/// The largest 80-bit random part.
const RANDOM_MAX: u128 = (1 << 80) - 1;

/// Makes the ids of one process sort in the order it made them, as ULID's monotonic mode does:
/// within one millisecond (or after the clock stepped back) an id takes the previous one's time
/// and random part plus one; "newest first" lists then hold for objects made in the same
/// millisecond. Ids of different processes in one millisecond still sort at random.
#[derive(Debug, Default)]
pub struct Monotonic {
    last: Option<(u64, u128)>,
}

impl Monotonic {
    /// The next id's time and random part, given the clock and fresh random bits.
    pub fn next(&mut self, millis: u64, fresh: [u8; 10]) -> (u64, [u8; 10]) {
        let (millis, random) = match self.last {
            Some((last, random)) if millis <= last && random < RANDOM_MAX => (last, random + 1),
            _ => {
                let mut bits = [0u8; 16];
                bits[6..].copy_from_slice(&fresh);
                (millis, u128::from_be_bytes(bits))
            }
        };
        self.last = Some((millis, random));
        let mut out = [0u8; 10];
        out.copy_from_slice(&random.to_be_bytes()[6..]);
        (millis, out)
    }

    /// A new id, after every id this generator made.
    pub fn new_id(&mut self, prefix: &str, millis: u64) -> Result<String, getrandom::Error> {
        let mut fresh = [0u8; 10];
        getrandom::getrandom(&mut fresh)?;
        let (millis, random) = self.next(millis, fresh);
        Ok(format!("{prefix}_{}", encode(millis, random)))
    }
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
    fn ids_made_in_one_millisecond_or_after_the_clock_stepped_back_sort_in_order() {
        let mut ids = Monotonic::default();
        let made: Vec<String> = [5, 5, 5, 4, 5, 6]
            .iter()
            .map(|&ms| {
                let (ms, random) = ids.next(ms, [0xab; 10]);
                encode(ms, random)
            })
            .collect();
        let mut sorted = made.clone();
        sorted.sort();
        assert_eq!(made, sorted);
        assert_eq!(made.iter().collect::<std::collections::BTreeSet<_>>().len(), made.len());
        // A new millisecond starts from fresh random bits again.
        assert_eq!(made[5], encode(6, [0xab; 10]));
        // The random part never wraps: at its largest the next id takes fresh bits.
        let mut full = Monotonic { last: Some((7, RANDOM_MAX)) };
        assert_eq!(full.next(7, [1; 10]), (7, [1; 10]));
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
        let mut made = Monotonic::default();
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| made.new_id("pay", 1).unwrap()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.starts_with("pay_") && id.len() == 30));
    }
}
