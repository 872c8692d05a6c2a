//! `Authorization: Bearer <key>`: the key is checked by the extension
//! (`payments.authenticate_api_key`, a lookup by sha256); scopes gate routes.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::app::AppState;
use crate::error::ApiError;

pub const READ: &str = "payments:read";
pub const WRITE: &str = "payments:write";

pub struct Caller {
    scopes: Vec<String>,
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

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or(ApiError::Unauthenticated("missing Authorization: Bearer <api key>"))?;
        let key = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(ApiError::Unauthenticated("Authorization must be: Bearer <api key>"))?;
        let db = state.pool.get().await?;
        let stmt = db.prepare_cached(crate::db::AUTHENTICATE).await?;
        let row = db.query_opt(&stmt, &[&key]).await?.ok_or(ApiError::Unauthenticated("unknown or revoked API key"))?;
        Ok(Caller { scopes: row.get(1) })
    }
}
