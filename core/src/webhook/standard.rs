//! Standard Webhooks 1.0: headers `webhook-id`, `webhook-timestamp` and
//! `webhook-signature` (space-separated `v1,<base64>`), HMAC-SHA256 over
//! `<id>.<timestamp>.<raw body>` keyed with the base64-decoded secret
//! (`whsec_<base64>`).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::{any_matches, hmac_sha256, parse_timestamp, Failure, Message, MAX_SIGNATURES};

/// The HMAC key: the secret without its `whsec_` prefix, base64-decoded.
pub fn key(secret: &str) -> Result<Vec<u8>, Failure> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    B64.decode(encoded).ok().filter(|k| !k.is_empty()).ok_or(Failure::InvalidSecret)
}

/// Checks the signature and returns the signed timestamp.
pub fn verify_signature(secret: &str, msg: &Message) -> Result<i64, Failure> {
    let id = msg.header("webhook-id")?;
    let t_text = msg.header("webhook-timestamp")?;
    let header = msg.header("webhook-signature")?;
    let t = parse_timestamp(t_text)?;
    let key = key(secret)?;
    let mut signatures = Vec::new();
    for item in header.split(' ').filter(|s| !s.is_empty()) {
        let (version, sig) = item.split_once(',').ok_or(Failure::MalformedHeader)?;
        if version == "v1" {
            signatures.extend(B64.decode(sig).ok().filter(|s| s.len() == 32));
        }
        if signatures.len() > MAX_SIGNATURES {
            return Err(Failure::MalformedHeader);
        }
    }
    let expected = hmac_sha256(&key, &[id.as_bytes(), b".", t_text.as_bytes(), b".", msg.body]);
    if any_matches(&expected, signatures.iter().map(Vec::as_slice)) {
        Ok(t)
    } else {
        Err(Failure::NoMatchingSignature)
    }
}

/// A new signing secret for an endpoint the extension delivers to:
/// `whsec_` and 24 random bytes in base64, as Standard Webhooks libraries expect.
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut random = [0u8; 24];
    getrandom::getrandom(&mut random)?;
    Ok(format!("whsec_{}", B64.encode(random)))
}

/// A `webhook-signature` header value for the message.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, Failure> {
    let mac = hmac_sha256(&key(secret)?, &[id.as_bytes(), b".", timestamp.to_string().as_bytes(), b".", body]);
    Ok(format!("v1,{}", B64.encode(mac)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const T: &str = "1614265330";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const PUBLISHED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn check(id: &str, t: &str, sig: &str, secret: &str, body: &[u8]) -> Result<i64, Failure> {
        let headers = vec![
            ("Webhook-Id".to_string(), id.to_string()),
            ("WEBHOOK-TIMESTAMP".to_string(), t.to_string()),
            ("webhook-signature".to_string(), sig.to_string()),
        ];
        verify_signature(secret, &Message { headers: &headers, body })
    }

    #[test]
    fn published_vector_verifies() {
        assert_eq!(sign(SECRET, ID, 1614265330, BODY).unwrap(), PUBLISHED);
        assert_eq!(check(ID, T, PUBLISHED, SECRET, BODY), Ok(1614265330));
    }

    #[test]
    fn tampering_with_any_signed_part_fails() {
        let mut body = BODY.to_vec();
        body[3] ^= 0x20;
        assert_eq!(check(ID, T, PUBLISHED, SECRET, &body), Err(Failure::NoMatchingSignature));
        assert_eq!(check("msg_other", T, PUBLISHED, SECRET, BODY), Err(Failure::NoMatchingSignature));
        assert_eq!(check(ID, "1614265331", PUBLISHED, SECRET, BODY), Err(Failure::NoMatchingSignature));
        assert_eq!(check(ID, T, PUBLISHED, "whsec_bm90IHRoZSBzYW1lIGtleQ==", BODY), Err(Failure::NoMatchingSignature));
    }

    #[test]
    fn several_signatures_and_unknown_versions() {
        let other = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        assert_eq!(check(ID, T, &format!("{other} v2,xyz {PUBLISHED}"), SECRET, BODY), Ok(1614265330));
        assert_eq!(check(ID, T, other, SECRET, BODY), Err(Failure::NoMatchingSignature));
    }

    #[test]
    fn new_secrets_are_random_keys_that_sign() {
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert_ne!(a, b);
        assert_eq!(key(&a).unwrap().len(), 24);
        let signature = sign(&a, ID, 1614265330, BODY).unwrap();
        assert_eq!(check(ID, T, &signature, &a, BODY), Ok(1614265330));
        assert_eq!(check(ID, T, &signature, &b, BODY), Err(Failure::NoMatchingSignature));
    }

    #[test]
    fn missing_and_malformed() {
        let headers = vec![("webhook-id".to_string(), ID.to_string())];
        assert_eq!(verify_signature(SECRET, &Message { headers: &headers, body: BODY }), Err(Failure::MissingHeader));
        assert_eq!(check(ID, "soon", PUBLISHED, SECRET, BODY), Err(Failure::MalformedHeader));
        assert_eq!(check(ID, T, "v1", SECRET, BODY), Err(Failure::MalformedHeader));
        assert_eq!(check(ID, T, PUBLISHED, "whsec_***", BODY), Err(Failure::InvalidSecret));
    }
}
