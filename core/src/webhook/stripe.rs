//! Stripe's scheme: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`,
//! HMAC-SHA256 over `<t>.<raw body>` keyed with the secret string's bytes as
//! given (`whsec_…` is not decoded). Any matching `v1` passes; `v0` and other
//! schemes in the header are ignored.

use super::{any_matches, hmac_sha256, parse_timestamp, Failure, Message, MAX_SIGNATURES};

pub const HEADER: &str = "Stripe-Signature";

/// Checks the signature and returns the signed timestamp.
pub fn verify_signature(secret: &str, msg: &Message) -> Result<i64, Failure> {
    let header = msg.header(HEADER)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let (key, value) = item.trim().split_once('=').ok_or(Failure::MalformedHeader)?;
        match key {
            "t" if timestamp.is_none() => timestamp = Some(value),
            "t" => return Err(Failure::MalformedHeader),
            // A v1 that is not 64 hex digits can never match; skip it like Stripe does.
            "v1" => signatures.extend(hex::decode(value).ok().filter(|s| s.len() == 32)),
            _ => {}
        }
        if signatures.len() > MAX_SIGNATURES {
            return Err(Failure::MalformedHeader);
        }
    }
    let t_text = timestamp.ok_or(Failure::MalformedHeader)?;
    let t = parse_timestamp(t_text)?;
    let expected = hmac_sha256(secret.as_bytes(), &[t_text.as_bytes(), b".", msg.body]);
    if any_matches(&expected, signatures.iter().map(Vec::as_slice)) {
        Ok(t)
    } else {
        Err(Failure::NoMatchingSignature)
    }
}

/// A `Stripe-Signature` header value for `body`, as Stripe (and the sandbox) sends it.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let t = timestamp.to_string();
    let mac = hmac_sha256(secret.as_bytes(), &[t.as_bytes(), b".", body]);
    format!("t={t},v1={}", hex::encode(mac))
}

#[cfg(test)]
mod tests {
    use super::super::{verify, Scheme};
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const T: i64 = 1492774577;
    const BODY: &[u8] = br#"{"id":"evt_test_webhook","object":"event"}"#;
    const PUBLISHED: &str = "88a022085c6bdb887b02cb26ff76dd681234d9675c0f22844059f55552a8883a";

    fn check(header: &str, secret: &str, body: &[u8]) -> Result<i64, Failure> {
        let headers = vec![("stripe-signature".to_string(), header.to_string())];
        verify_signature(secret, &Message { headers: &headers, body })
    }

    #[test]
    fn published_vector_verifies() {
        assert_eq!(sign(SECRET, T, BODY), format!("t={T},v1={PUBLISHED}"));
        assert_eq!(check(&format!("t={T},v1={PUBLISHED}"), SECRET, BODY), Ok(T));
    }

    #[test]
    fn tampered_body_or_wrong_secret_fails() {
        let header = format!("t={T},v1={PUBLISHED}");
        let mut body = BODY.to_vec();
        body[10] ^= 1;
        assert_eq!(check(&header, SECRET, &body), Err(Failure::NoMatchingSignature));
        assert_eq!(check(&header, "whsec_other", BODY), Err(Failure::NoMatchingSignature));
        assert_eq!(check(&format!("t={},v1={PUBLISHED}", T + 1), SECRET, BODY), Err(Failure::NoMatchingSignature));
    }

    #[test]
    fn any_of_several_signatures_may_match_and_other_schemes_are_ignored() {
        let other = "0".repeat(64);
        assert_eq!(check(&format!("t={T},v1={other},v1={PUBLISHED}"), SECRET, BODY), Ok(T));
        assert_eq!(check(&format!("t={T},v0={PUBLISHED},v1={other}"), SECRET, BODY), Err(Failure::NoMatchingSignature));
        assert_eq!(check(&format!("t={T},v1=zz,v1={PUBLISHED}"), SECRET, BODY), Ok(T));
    }

    #[test]
    fn rotation_a_header_signed_by_old_and_new_secret_verifies_with_either() {
        let old = sign("whsec_old", T, BODY);
        let new = sign("whsec_new", T, BODY);
        let both = format!("{old},{}", new.split_once(',').unwrap().1);
        assert_eq!(check(&both, "whsec_old", BODY), Ok(T));
        assert_eq!(check(&both, "whsec_new", BODY), Ok(T));
    }

    #[test]
    fn malformed_headers() {
        for header in ["", "garbage", "v1=abc", "t=abc,v1=00", "t=1,t=2,v1=00", "t=-5,v1=00"] {
            assert_eq!(check(header, SECRET, BODY), Err(Failure::MalformedHeader), "{header:?}");
        }
        let many = format!("t={T},v1={}", [PUBLISHED; 20].join(",v1="));
        assert_eq!(check(&many, SECRET, BODY), Err(Failure::MalformedHeader));
        let headers = vec![("Other".to_string(), "x".to_string())];
        assert_eq!(
            verify(Scheme::Stripe, SECRET, &Message { headers: &headers, body: BODY }, 300, T),
            Err(Failure::MissingHeader)
        );
    }
}
