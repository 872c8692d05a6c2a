//! `/v1/coupons/{code}`, `/v1/promotion_codes/{code}`, `/v1/tax_rates/{code}`,
//! `/v1/plans/{code}/versions` and `/v1/plans/{code}/migrations`: what the platform sells
//! and takes off, made over HTTP by an administrator's key (`payments:admin`, never bound to a
//! customer). Each is the extension's own function; a coupon, promotion code or tax rate is
//! named by its code, so `PUT` makes it or answers the one that exists (another definition: 409).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_postgres::types::ToSql;
use utoipa::ToSchema;

use crate::auth::{Caller, ADMIN};
use crate::db;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::http::{amount_schema, decimal_text, json_response, optional_instant};
use crate::state::AppState;

/// An optional exact decimal of the body (`http::decimal_text`).
fn decimal(raw: &Option<Box<RawValue>>, param: &'static str) -> Result<Option<String>, ApiError> {
    raw.as_deref().map(|r| decimal_text(r, param)).transpose()
}

/// Runs one of the catalog's statements (`db`) for an administrator's key: its one JSON answer.
async fn admin(
    state: &AppState,
    caller: &Caller,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<String, ApiError> {
    caller.require(ADMIN)?;
    caller.require_platform()?;
    let db = state.pool.get().await?;
    Ok(db.query_one(&db.prepare_cached(sql).await?, params).await?.try_get(0)?)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutCoupon {
    pub name: Option<String>,
    /// Above 0, at most 100 (not with `amount_off`).
    #[schema(schema_with = amount_schema)]
    pub percent_off: Option<Box<RawValue>>,
    /// Major units, exact, with `currency` (not with `percent_off`).
    #[schema(schema_with = amount_schema)]
    pub amount_off: Option<Box<RawValue>>,
    pub currency: Option<String>,
    /// once (default), repeating (with `duration_in_periods`) or forever.
    pub duration: Option<String>,
    pub duration_in_periods: Option<i32>,
    pub max_redemptions: Option<i32>,
    /// RFC 3339 with its offset: redeemable until then.
    pub redeem_by: Option<String>,
    /// Plan codes it applies to (default: any).
    pub applies_to_plans: Option<Vec<String>>,
}

#[utoipa::path(put, path = "/v1/coupons/{code}", tag = "catalog", request_body = PutCoupon,
    params(("code" = String, Path, description = "1 to 64 letters, digits, _ and -")),
    responses((status = 200, description = "The coupon: `{object: coupon, code, name, percent_off, amount_off, currency, duration, duration_in_periods, max_redemptions, times_redeemed, redeem_by, applies_to_plans, created_at}`"),
        (status = 400, body = crate::http::ErrorBody), (status = 403, body = crate::http::ErrorBody),
        (status = 409, body = crate::http::ErrorBody, description = "The code exists with another definition")),
    security(("bearer" = [])))]
pub async fn put_coupon(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
    JsonBody(body): JsonBody<PutCoupon>,
) -> Result<Response, ApiError> {
    let (percent_off, amount_off) =
        (decimal(&body.percent_off, "percent_off")?, decimal(&body.amount_off, "amount_off")?);
    let redeem_by = optional_instant("redeem_by", &body.redeem_by)?;
    let params: [&(dyn ToSql + Sync); 10] = [
        &code,
        &percent_off,
        &amount_off,
        &body.currency,
        &body.duration,
        &body.duration_in_periods,
        &body.max_redemptions,
        &redeem_by,
        &body.applies_to_plans,
        &body.name,
    ];
    Ok(json_response(StatusCode::OK, admin(&state, &caller, db::PUT_COUPON, &params).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutPromotionCode {
    /// The coupon's code.
    pub coupon: String,
    pub max_redemptions: Option<i32>,
    /// RFC 3339 with its offset: redeemable until then.
    pub redeem_by: Option<String>,
    /// Only this customer may redeem it.
    pub customer_id: Option<String>,
    /// false stops its redemptions (true again resumes them).
    pub active: Option<bool>,
}

#[utoipa::path(put, path = "/v1/promotion_codes/{code}", tag = "catalog", request_body = PutPromotionCode,
    params(("code" = String, Path, description = "What customers type: 1 to 64 letters, digits, _ and -")),
    responses((status = 200, description = "The promotion code: `{object: promotion_code, code, coupon, only_customer, max_redemptions, times_redeemed, redeem_by, active, created_at}`"),
        (status = 400, body = crate::http::ErrorBody), (status = 403, body = crate::http::ErrorBody),
        (status = 404, body = crate::http::ErrorBody, description = "No such coupon"),
        (status = 409, body = crate::http::ErrorBody, description = "The code exists with another definition")),
    security(("bearer" = [])))]
pub async fn put_promotion_code(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
    JsonBody(body): JsonBody<PutPromotionCode>,
) -> Result<Response, ApiError> {
    let redeem_by = optional_instant("redeem_by", &body.redeem_by)?;
    let params: [&(dyn ToSql + Sync); 5] = [&code, &body.coupon, &body.max_redemptions, &redeem_by, &body.customer_id];
    let mut code_json = admin(&state, &caller, db::PUT_PROMOTION_CODE, &params).await?;
    if let Some(active) = body.active {
        admin(&state, &caller, db::SET_PROMOTION_CODE_ACTIVE, &[&code, &active]).await?;
        // The same definition again: the code as it now is.
        code_json = admin(&state, &caller, db::PUT_PROMOTION_CODE, &params).await?;
    }
    Ok(json_response(StatusCode::OK, code_json))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutTaxRate {
    /// What invoices call it ("Sales tax").
    pub display_name: String,
    /// 0 to 100, at most 4 decimals.
    #[schema(schema_with = amount_schema)]
    pub percentage: Box<RawValue>,
    /// true: inside the prices; false: added to the invoice.
    pub inclusive: bool,
    pub jurisdiction: Option<String>,
}

#[utoipa::path(put, path = "/v1/tax_rates/{code}", tag = "catalog", request_body = PutTaxRate,
    params(("code" = String, Path, description = "Lower case letters, digits, _ . -")),
    responses((status = 200, description = "The tax rate: `{object: tax_rate, code, display_name, percentage, inclusive, jurisdiction, created_at}`"),
        (status = 400, body = crate::http::ErrorBody), (status = 403, body = crate::http::ErrorBody),
        (status = 409, body = crate::http::ErrorBody, description = "The code exists with another rate")),
    security(("bearer" = [])))]
pub async fn put_tax_rate(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
    JsonBody(body): JsonBody<PutTaxRate>,
) -> Result<Response, ApiError> {
    let percentage = decimal_text(&body.percentage, "percentage")?;
    let params: [&(dyn ToSql + Sync); 5] =
        [&code, &body.display_name, &percentage, &body.inclusive, &body.jurisdiction];
    Ok(json_response(StatusCode::OK, admin(&state, &caller, db::PUT_TAX_RATE, &params).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlanVersion {
    /// The latest version plus 1.
    pub version: i32,
    /// The new recurring price, major units, exact.
    #[schema(schema_with = amount_schema)]
    pub amount: Box<RawValue>,
    /// New metered prices (the same meters); default: as the latest version.
    #[schema(value_type = Option<Vec<Object>>)]
    pub metered: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub feature_prices: Option<serde_json::Value>,
    #[schema(schema_with = amount_schema)]
    pub usage_threshold: Option<Box<RawValue>>,
    /// Its prices in other currencies: `{"EUR": {"amount": "9.00"}}`; default: as the latest version.
    #[schema(value_type = Option<Object>)]
    pub currency_options: Option<serde_json::Value>,
}

#[utoipa::path(post, path = "/v1/plans/{code}/versions", tag = "catalog", request_body = CreatePlanVersion,
    params(("code" = String, Path, description = "The plan's code")),
    responses((status = 200, description = "The plan at its new version (the same call again: the same)", body = crate::routes::plans::Plan),
        (status = 400, body = crate::http::ErrorBody), (status = 403, body = crate::http::ErrorBody),
        (status = 404, body = crate::http::ErrorBody),
        (status = 409, body = crate::http::ErrorBody, description = "That version exists with other prices")),
    security(("bearer" = [])))]
pub async fn create_plan_version(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
    JsonBody(body): JsonBody<CreatePlanVersion>,
) -> Result<Response, ApiError> {
    let amount = decimal_text(&body.amount, "amount")?;
    let threshold = decimal(&body.usage_threshold, "usage_threshold")?;
    let params: [&(dyn ToSql + Sync); 7] =
        [&code, &body.version, &amount, &body.metered, &body.feature_prices, &threshold, &body.currency_options];
    Ok(json_response(StatusCode::OK, admin(&state, &caller, db::CREATE_PLAN_VERSION, &params).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigratePlanVersion {
    pub from_version: i32,
    pub to_version: i32,
}

#[utoipa::path(post, path = "/v1/plans/{code}/migrations", tag = "catalog", request_body = MigratePlanVersion,
    params(("code" = String, Path, description = "The plan's code")),
    responses((status = 200, description = "`{object: plan_migration, plan, from_version, to_version, scheduled}`: how many subscriptions move at their next renewal (again: 0)"),
        (status = 400, body = crate::http::ErrorBody), (status = 403, body = crate::http::ErrorBody),
        (status = 404, body = crate::http::ErrorBody, description = "No such plan or version")),
    security(("bearer" = [])))]
pub async fn migrate_plan_version(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
    JsonBody(body): JsonBody<MigratePlanVersion>,
) -> Result<Response, ApiError> {
    let params: [&(dyn ToSql + Sync); 3] = [&code, &body.from_version, &body.to_version];
    Ok(json_response(StatusCode::OK, admin(&state, &caller, db::MIGRATE_PLAN_VERSION, &params).await?))
}
