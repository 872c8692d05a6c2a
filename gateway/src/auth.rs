//! `Authorization: Bearer <key>`: the key is checked by the extension
//! (`payments.authenticate_api_key`, a lookup by sha256); scopes gate routes.
//! A verified key is trusted for `GATEWAY_AUTH_CACHE_MS` before the database
//! is asked again, which saves one round trip on almost every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use deadpool_postgres::Pool;
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::error::ApiError;

pub use payments_core::vocabulary::{
    SCOPE_ADMIN as ADMIN, SCOPE_READ as READ, SCOPE_WEBHOOKS as WEBHOOKS, SCOPE_WRITE as WRITE,
};

#[derive(Clone)]
pub struct Caller {
    scopes: Arc<[String]>,
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

/// When a key was verified, and its scopes.
type Verified = (Instant, Arc<[String]>);

impl KeyCache {
    /// Bounds memory under a flood of distinct valid keys; a full cache starts over.
    const CAPACITY: usize = 10_000;

    pub fn new(ttl: Duration) -> Self {
        KeyCache { ttl, verified: Mutex::new(HashMap::new()) }
    }

    fn get(&self, digest: &[u8; 32]) -> Option<Arc<[String]>> {
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified.get(digest).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, scopes)| scopes.clone())
    }

    fn put(&self, digest: [u8; 32], scopes: Arc<[String]>) {
        if self.ttl.is_zero() {
            return;
        }
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= Self::CAPACITY {
            verified.clear();
        }
        verified.insert(digest, (Instant::now(), scopes));
    }
}

impl Caller {
    pub fn require(&self, scope: &'static str) -> Result<(), ApiError> {
        if self.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(scope))
        }
    }
}

impl Caller {
    /// The caller `key` belongs to, from `cache` or the database; 401 for an unknown or revoked key.
    pub async fn verify(pool: &Pool, cache: &KeyCache, key: &str) -> Result<Caller, ApiError> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        if let Some(scopes) = cache.get(&digest) {
            return Ok(Caller { scopes });
        }
        let db = pool.get().await?;
        let stmt = db.prepare_cached(crate::db::AUTHENTICATE).await?;
        let row = db.query_opt(&stmt, &[&key]).await?.ok_or(ApiError::Unauthenticated("unknown or revoked API key"))?;
        let scopes: Arc<[String]> = row.try_get::<_, Vec<String>>("scopes")?.into();
        cache.put(digest, scopes.clone());
        Ok(Caller { scopes })
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Caller::verify(&state.pool, &state.keys, bearer_key(&parts.headers)?).await
    }
}

/// The key of the one `Authorization: Bearer <key>` header (the scheme in any case).
fn bearer_key(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
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

    fn scopes() -> Arc<[String]> {
        vec![READ.to_string()].into()
    }

    #[test]
    fn a_verified_key_is_trusted_only_for_the_ttl() {
        let cache = KeyCache::new(Duration::from_millis(50));
        cache.put([1; 32], scopes());
        assert_eq!(cache.get(&[1; 32]).as_deref(), Some(&[READ.to_string()][..]));
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
}
