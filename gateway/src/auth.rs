//! `Authorization: Bearer <key>`: the key is checked by the extension
//! (`payments.authenticate_api_key`, a lookup by sha256); scopes gate routes.
//! A verified key is trusted for `GATEWAY_AUTH_CACHE_MS` before the database
//! is asked again, which saves one round trip on almost every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::header::AUTHORIZATION;
use deadpool_postgres::Pool;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

pub use payments_core::vocabulary::{
    SCOPE_ADMIN as ADMIN, SCOPE_READ as READ, SCOPE_WEBHOOKS as WEBHOOKS, SCOPE_WRITE as WRITE,
};

#[derive(Clone)]
pub struct Caller {
    key: Arc<Key>,
}

/// What a verified key may do: its scopes, and the one customer it acts for (None: a platform key).
pub struct Key {
    scopes: Vec<String>,
    customer: Option<String>,
}

/// Recently verified keys, by sha256 of the key (the key itself is not kept).
/// Unknown and revoked keys are never cached: each such request asks the database.
///
/// Hand-rolled rather than `moka`: a bounded TTL map read under one mutex is
/// all this needs, and moka would add its own eviction threads and a dozen
/// crates to the request path for it.
pub struct KeyCache {
    ttl: Duration,
    verified: Mutex<HashMap<[u8; 32], Verified>>,
}

/// When a key was verified, and what it may do.
type Verified = (Instant, Arc<Key>);

impl KeyCache {
    /// Bounds memory under a flood of distinct valid keys; a full cache starts over.
    const CAPACITY: usize = 10_000;

    pub fn new(ttl: Duration) -> Self {
        KeyCache { ttl, verified: Mutex::new(HashMap::new()) }
    }

    fn get(&self, digest: &[u8; 32]) -> Option<Arc<Key>> {
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified.get(digest).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, key)| key.clone())
    }

    fn put(&self, digest: [u8; 32], key: Arc<Key>) {
        if self.ttl.is_zero() {
            return;
        }
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= Self::CAPACITY {
            verified.clear();
        }
        verified.insert(digest, (Instant::now(), key));
    }
}

impl Caller {
    pub fn require(&self, scope: &'static str) -> Result<(), ApiError> {
        if self.key.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(scope))
        }
    }

    /// The one customer a bound key acts for; None for a platform key.
    pub fn customer(&self) -> Option<&str> {
        self.key.customer.as_deref()
    }

    /// Platform-wide routes (reconciliation, webhook endpoints, plans) are a platform key's.
    pub fn require_platform(&self) -> Result<(), ApiError> {
        match self.customer() {
            Some(_) => Err(ApiError::CustomerBound("this key acts for one customer: platform routes are not its")),
            None => Ok(()),
        }
    }

    /// A request naming `customer` (a new payment, usage, a list's filter): a bound key names its own.
    pub fn may_act_for(&self, customer: &str) -> Result<(), ApiError> {
        match self.customer() {
            Some(own) if own != customer => Err(ApiError::CustomerBound("this key acts for another customer")),
            _ => Ok(()),
        }
    }

    /// The customer a list is of: the one `named` (a bound key may name only its own), else a bound
    /// key's own, else none (a platform key's list of every customer's).
    pub fn listed_customer<'a>(&'a self, named: &'a Option<String>) -> Result<Option<&'a str>, ApiError> {
        if let Some(customer) = named {
            self.may_act_for(customer)?;
        }
        Ok(named.as_deref().or(self.customer()))
    }

    /// An object of `customer` that was asked for by id: another customer's is answered as missing
    /// (404, as an unknown id: a bound key never learns another customer's object exists).
    pub fn sees(&self, customer: Option<&str>, what: &'static str) -> Result<(), ApiError> {
        match (self.customer(), customer) {
            (Some(own), Some(customer)) if own == customer => Ok(()),
            (Some(_), _) => Err(ApiError::NotFound(what)),
            (None, _) => Ok(()),
        }
    }

    /// For a bound key, before acting on an object named by id: 404 unless it is its
    /// customer's (one lookup, made only for bound keys).
    pub async fn owns(&self, db: &deadpool_postgres::ClientWrapper, object: Object, id: &str) -> Result<(), ApiError> {
        if self.customer().is_none() {
            return Ok(());
        }
        let stmt = db.prepare_cached(object.customer_sql()).await?;
        let customer = match db.query_opt(&stmt, &[&id]).await {
            Ok(row) => row.map(|r| r.get::<_, String>(0)),
            Err(e) if e.code().map(|c| c.code()) == Some(crate::error::NOT_FOUND) => None,
            Err(e) => return Err(e.into()),
        };
        self.sees(customer.as_deref(), object.name())
    }

    /// `sees` for an object given as the API's JSON text (its `customer_id`).
    pub fn sees_json(&self, object: &str, what: &'static str) -> Result<(), ApiError> {
        if self.customer().is_none() {
            return Ok(());
        }
        let parsed: serde_json::Value = serde_json::from_str(object).unwrap_or_default();
        self.sees(parsed["customer_id"].as_str(), what)
    }
}

impl Caller {
    /// The caller `key` belongs to, from `cache` or the database; 401 for an unknown or revoked key.
    pub async fn verify(pool: &Pool, cache: &KeyCache, key: &str) -> Result<Caller, ApiError> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        if let Some(key) = cache.get(&digest) {
            return Ok(Caller { key });
        }
        let db = pool.get().await?;
        let stmt = db.prepare_cached(crate::db::AUTHENTICATE).await?;
        let row = db.query_opt(&stmt, &[&key]).await?.ok_or(ApiError::Unauthenticated("unknown or revoked API key"))?;
        let key = Arc::new(Key { scopes: row.try_get("scopes")?, customer: row.try_get("customer_id")? });
        cache.put(digest, key.clone());
        Ok(Caller { key })
    }
}

/// The key of the one `Authorization: Bearer <key>` header (the scheme in any case).
pub fn bearer_key(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let mut all = headers.get_all(AUTHORIZATION).iter();
    let header = all.next().ok_or(ApiError::Unauthenticated("missing Authorization: Bearer <api key>"))?;
    if all.next().is_some() {
        return Err(ApiError::Unauthenticated("send one Authorization header"));
    }
    header
        .to_str()
        .ok()
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim())
        .filter(|k| !k.is_empty())
        .ok_or(ApiError::Unauthenticated("Authorization must be: Bearer <api key>"))
}

/// What a bound key may name by id, and how its customer is found.
#[derive(Debug, Clone, Copy)]
pub enum Object {
    Payment,
    Refund,
    Dispute,
    Subscription,
    Invoice,
    Hold,
}

impl Object {
    fn name(self) -> &'static str {
        match self {
            Object::Payment => "payment",
            Object::Refund => "refund",
            Object::Dispute => "dispute",
            Object::Subscription => "subscription",
            Object::Invoice => "invoice",
            Object::Hold => "hold",
        }
    }

    fn customer_sql(self) -> &'static str {
        match self {
            Object::Payment => "SELECT customer_id FROM payments.get_payment($1)",
            Object::Refund => "SELECT customer_id FROM payments.get_refund($1)",
            Object::Dispute => "SELECT customer_id FROM payments.get_dispute($1)",
            Object::Subscription => "SELECT customer_id FROM payments.get_subscription($1)",
            Object::Invoice => "SELECT customer_id FROM payments.get_invoice($1)",
            Object::Hold => "SELECT customer_id FROM payments.hold_details WHERE id = $1",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bearer_header_in_any_case() {
        use axum::http::{HeaderMap, HeaderValue};
        let with = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            }
            h
        };
        assert_eq!(bearer_key(&with(&["Bearer sk_1"])).unwrap(), "sk_1");
        assert_eq!(bearer_key(&with(&["bearer sk_1"])).unwrap(), "sk_1");
        assert_eq!(bearer_key(&with(&["BEARER  sk_1 "])).unwrap(), "sk_1");
        for bad in [&[][..], &["Basic abc"], &["Bearer"], &["Bearer "], &["Bearer sk_1", "Bearer sk_2"]] {
            assert!(bearer_key(&with(bad)).is_err(), "{bad:?}");
        }
    }

    fn scopes() -> Arc<Key> {
        Arc::new(Key { scopes: vec![READ.to_string()], customer: None })
    }

    #[test]
    fn a_verified_key_is_trusted_only_for_the_ttl() {
        let cache = KeyCache::new(Duration::from_millis(50));
        cache.put([1; 32], scopes());
        assert_eq!(cache.get(&[1; 32]).map(|k| k.scopes.clone()), Some(vec![READ.to_string()]));
        assert!(cache.get(&[2; 32]).is_none());
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get(&[1; 32]).is_none(), "an expired entry must send the request to the database");
    }

    #[test]
    fn a_zero_ttl_never_caches() {
        let cache = KeyCache::new(Duration::ZERO);
        cache.put([1; 32], scopes());
        assert!(cache.get(&[1; 32]).is_none());
    }

    #[test]
    fn a_full_cache_starts_over_instead_of_growing() {
        let cache = KeyCache::new(Duration::from_secs(60));
        for i in 0..=KeyCache::CAPACITY {
            let mut digest = [0u8; 32];
            digest[..8].copy_from_slice(&(i as u64).to_le_bytes());
            cache.put(digest, scopes());
        }
        assert_eq!(cache.verified.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_bound_key_acts_for_its_customer_only() {
        let bound = Caller { key: Arc::new(Key { scopes: vec![READ.to_string()], customer: Some("c1".into()) }) };
        assert!(bound.may_act_for("c1").is_ok());
        assert_eq!(bound.may_act_for("c2").unwrap_err().code(), "customer_bound");
        assert_eq!(bound.sees(Some("c2"), "payment").unwrap_err().code(), "resource_missing");
        assert_eq!(bound.sees_json(r#"{"customer_id": "c2"}"#, "payment").unwrap_err().code(), "resource_missing");
        assert!(bound.sees_json(r#"{"customer_id": "c1"}"#, "payment").is_ok());
        assert_eq!(bound.require_platform().unwrap_err().code(), "customer_bound");
        let platform = Caller { key: scopes() };
        assert!(platform.may_act_for("c2").is_ok() && platform.sees(Some("c2"), "payment").is_ok());
        assert!(platform.require_platform().is_ok());
    }
}
