//! Webhook signature verification over the exact bytes received.
//!
//! Two schemes: Stripe's (`stripe.rs`) and Standard Webhooks 1.0
//! (`standard.rs`). Both check the signature first, then the timestamp, so a
//! forged message reads as "no matching signature" and a genuine but replayed
//! old one as "timestamp too old". Signatures are compared in constant time.

pub mod destination;
pub mod standard;
pub mod stripe;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Header values longer than this are refused before any parsing.
pub const MAX_HEADER_LEN: usize = 4096;
/// At most this many signatures in one header (rotation needs two or three).
pub const MAX_SIGNATURES: usize = 16;

/// Why a message did not verify. `as_str` gives the stable reason that
/// `payments.webhook_signature_failure` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    UnknownScheme,
    InvalidSecret,
    MissingHeader,
    MalformedHeader,
    NoMatchingSignature,
    TimestampTooOld,
    TimestampInFuture,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::UnknownScheme => "unknown_scheme",
            Failure::InvalidSecret => "invalid_secret",
            Failure::MissingHeader => "missing_header",
            Failure::MalformedHeader => "malformed_header",
            Failure::NoMatchingSignature => "no_matching_signature",
            Failure::TimestampTooOld => "timestamp_too_old",
            Failure::TimestampInFuture => "timestamp_in_future",
        }
    }

    pub fn is_timestamp(self) -> bool {
        matches!(self, Failure::TimestampTooOld | Failure::TimestampInFuture)
    }
}

/// A signature scheme by its SQL name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Stripe,
    Standard,
}

impl Scheme {
    pub const ALL: [Scheme; 2] = [Scheme::Stripe, Scheme::Standard];

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Stripe => "stripe",
            Scheme::Standard => "standard",
        }
    }

    pub fn parse(name: &str) -> Option<Scheme> {
        Scheme::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// The request: headers as (name, value) pairs, matched case-insensitively.
pub struct Message<'a> {
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl Message<'_> {
    fn header(&self, name: &str) -> Result<&str, Failure> {
        let value = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .ok_or(Failure::MissingHeader)?;
        if value.len() > MAX_HEADER_LEN {
            return Err(Failure::MalformedHeader);
        }
        Ok(value)
    }
}

/// Verifies `msg` under `scheme` with `secret`, accepting timestamps within
/// `tolerance_secs` of `now_secs` in either direction.
pub fn verify(scheme: Scheme, secret: &str, msg: &Message, tolerance_secs: i64, now_secs: i64) -> Result<(), Failure> {
    let timestamp = match scheme {
        Scheme::Stripe => stripe::verify_signature(secret, msg)?,
        Scheme::Standard => standard::verify_signature(secret, msg)?,
    };
    if timestamp < now_secs.saturating_sub(tolerance_secs) {
        Err(Failure::TimestampTooOld)
    } else if timestamp > now_secs.saturating_add(tolerance_secs) {
        Err(Failure::TimestampInFuture)
    } else {
        Ok(())
    }
}

/// Checks a secret's format for its scheme, so a bad one is refused when it is added.
pub fn check_secret(scheme: Scheme, secret: &str) -> Result<(), Failure> {
    match scheme {
        Scheme::Stripe if secret.is_empty() => Err(Failure::InvalidSecret),
        Scheme::Stripe => Ok(()),
        Scheme::Standard => standard::key(secret).map(|_| ()),
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// True when any candidate equals `expected`; each comparison is constant-time.
fn any_matches<'a>(expected: &[u8; 32], candidates: impl Iterator<Item = &'a [u8]>) -> bool {
    candidates.fold(false, |found, c| found | bool::from(c.ct_eq(expected)))
}

fn parse_timestamp(text: &str) -> Result<i64, Failure> {
    if text.is_empty() || text.len() > 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Failure::MalformedHeader);
    }
    text.parse().map_err(|_| Failure::MalformedHeader)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn tolerance_holds_at_both_edges_and_fails_one_second_past_them() {
        let body = b"{}";
        let t = 1_700_000_000;
        let sig = stripe::sign("whsec_x", t, body);
        let h = headers(&[("Stripe-Signature", &sig)]);
        let msg = Message { headers: &h, body };
        assert_eq!(verify(Scheme::Stripe, "whsec_x", &msg, 300, t + 300), Ok(()));
        assert_eq!(verify(Scheme::Stripe, "whsec_x", &msg, 300, t - 300), Ok(()));
        assert_eq!(verify(Scheme::Stripe, "whsec_x", &msg, 300, t + 301), Err(Failure::TimestampTooOld));
        assert_eq!(verify(Scheme::Stripe, "whsec_x", &msg, 300, t - 301), Err(Failure::TimestampInFuture));
    }

    #[test]
    fn signature_is_checked_before_the_timestamp() {
        let h = headers(&[("Stripe-Signature", "t=1,v1=00")]);
        let msg = Message { headers: &h, body: b"{}" };
        assert_eq!(verify(Scheme::Stripe, "whsec_x", &msg, 300, 1_700_000_000), Err(Failure::NoMatchingSignature));
    }

    #[test]
    fn oversized_headers_are_malformed() {
        let long = format!("t=1,v1={}", "a".repeat(MAX_HEADER_LEN));
        let h = headers(&[("stripe-signature", &long)]);
        let msg = Message { headers: &h, body: b"" };
        assert_eq!(verify(Scheme::Stripe, "s", &msg, 300, 1), Err(Failure::MalformedHeader));
    }

    #[test]
    fn secrets_are_checked_per_scheme() {
        assert_eq!(check_secret(Scheme::Stripe, "whsec_anything"), Ok(()));
        assert_eq!(check_secret(Scheme::Stripe, ""), Err(Failure::InvalidSecret));
        assert_eq!(check_secret(Scheme::Standard, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), Ok(()));
        assert_eq!(check_secret(Scheme::Standard, "whsec_not base64!"), Err(Failure::InvalidSecret));
        assert_eq!(Scheme::parse("svix"), None);
    }
}
