//! Dashboard passwords: Argon2id with argon2's default parameters (OWASP's
//! minimum: 19 MiB, two passes), stored as a PHC string (`$argon2id$v=19$…`)
//! that names its own parameters, so a later change of them keeps old hashes valid.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

pub const MIN_CHARS: usize = 12;
/// Argon2 reads any length; a bound keeps a sign-in request from hashing megabytes.
pub const MAX_BYTES: usize = 1024;

/// Why a password cannot be set, or `None`.
pub fn problem(password: &str) -> Option<String> {
    if password.chars().count() < MIN_CHARS {
        Some(format!("a password has at least {MIN_CHARS} characters"))
    } else if password.len() > MAX_BYTES {
        Some(format!("a password has at most {MAX_BYTES} bytes"))
    } else {
        None
    }
}

/// A salted Argon2id hash of `password` (the caller checked `problem`).
pub fn hash(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| format!("no randomness available for a salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Whether `password` is the one `phc` was made from. With no hash (an
/// unknown user) a decoy is verified instead, so a wrong email takes as long
/// to refuse as a wrong password and sign-in does not tell which emails exist.
/// The comparison inside argon2 is constant-time.
pub fn matches(phc: Option<&str>, password: &str) -> bool {
    if password.len() > MAX_BYTES {
        return false;
    }
    let (phc, real) = match phc {
        Some(p) => (p, true),
        None => (decoy(), false),
    };
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok() && real
}

/// The hash of a random password no one kept, with the parameters `hash` uses,
/// so checking it costs what checking a real one does (from the first call on).
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$dvN71M5eX5Pbvzo37dSiXQ$0jGp9ZqybtZsTWYIRx2OWzQlqGi1I6YHyDo6pffR2W4";

fn decoy() -> &'static str {
    DECOY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(matches(Some(&h), "correct horse battery"));
        assert!(!matches(Some(&h), "correct horse batterY"));
        assert!(!matches(Some(&h), ""));
        assert_ne!(h, hash("correct horse battery").unwrap(), "each hash has its own salt");
    }

    #[test]
    fn no_user_and_a_broken_hash_never_match() {
        assert!(!matches(None, "no one's password"), "no password signs in without a user");
        let real = hash("twelve chars").unwrap();
        let (decoy, real) = (PasswordHash::new(DECOY).unwrap(), PasswordHash::new(&real).unwrap());
        assert_eq!((decoy.algorithm, decoy.version), (real.algorithm, real.version));
        assert_eq!(decoy.params, real.params, "the decoy costs what a real check costs");
        assert!(!matches(Some("not a phc string"), "whatever password"));
        assert!(!matches(Some(&hash("a long enough one").unwrap()), &"x".repeat(MAX_BYTES + 1)));
    }

    #[test]
    fn length_rules() {
        assert!(problem("short").unwrap().contains("12"));
        assert!(problem("twelve chars").is_none());
        assert!(problem("ééééééééééé").is_some(), "11 characters, 22 bytes: characters count");
        assert!(problem(&"x".repeat(MAX_BYTES + 1)).unwrap().contains("1024"));
    }
}
