//! The MCP server: tools for agents over the same extension functions the
//! HTTP API calls (`db.rs`), and the SQL API reference as a resource. Served
//! over stdio (`payments-gateway mcp`, `stdio.rs`) and streamable HTTP at
//! `/mcp` (`http.rs`); both authenticate an API key, and its scopes decide
//! what may be called: reads (`balance` and `preview_invoice` among them) need `payments:read`;
//! `consume`, `record_usage`, `reserve`, `settle`, `release` and `apply_coupon` need `payments:write`.

pub mod http;
pub mod stdio;

use deadpool_postgres::Pool;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    AnnotateAble, CallToolResult, Content, ListResourcesResult, PaginatedRequestParams, RawResource,
    ReadResourceRequestParams, ReadResourceResult, ResourceContents, ServerCapabilities, ServerInfo,
};
use rmcp::service::RequestContext;
use rmcp::{schemars, tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler};
use serde::Deserialize;
use tokio_postgres::types::ToSql;

use crate::auth::{Caller, Object, READ, WRITE};
use crate::db;
use crate::error::ApiError;
use crate::http::{instant, optional_instant};

/// The SQL API reference: every public function of schema `payments` with
/// its arguments, result and the comment that documents it, and every view.
const SQL_API_URI: &str = "payments://sql-api";

#[derive(Clone)]
pub struct PaymentsMcp {
    pool: Pool,
    /// stdio: the key given at start. HTTP: none; each request's key is in its parts.
    caller: Option<Caller>,
    tool_router: ToolRouter<Self>,
}

/// A decimal as a string ("1.5"), or a whole JSON number. The SDK has parsed
/// arguments before they reach us, so a fractional JSON number has been a float
/// already: it is refused rather than passed on inexact.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Decimal {
    Text(String),
    Number(serde_json::Number),
}

impl Decimal {
    fn text(&self) -> Result<String, ApiError> {
        match self {
            Decimal::Text(t) => Ok(t.clone()),
            Decimal::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
            Decimal::Number(_) => Err(ApiError::invalid(
                "parameter_invalid",
                "send a fractional quantity as a decimal string, e.g. \"1.5\": a JSON number with a fraction is a float",
                Some("quantity"),
            )),
        }
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CustomerArgs {
    /// The customer's id, as the app names it.
    pub customer_id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct PaymentArgs {
    /// The payment's id (pay_…).
    pub payment_id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ListPaymentsArgs {
    /// Only this customer's payments.
    pub customer_id: Option<String>,
    /// Only payments in this status (succeeded, failed, requires_capture, …).
    pub status: Option<String>,
    /// How many, 1 to 100 (default 10), newest first.
    pub limit: Option<i32>,
    /// The last payment id of the previous page, for the next one.
    pub starting_after: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct UsageSummaryArgs {
    pub customer_id: String,
    /// The meter's code.
    pub meter: String,
    /// Start of the window (inclusive), RFC 3339 with its offset.
    pub from: String,
    /// End of the window (exclusive), RFC 3339 with its offset.
    pub to: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ConsumeArgs {
    pub customer_id: String,
    /// The feature of the customer's plan.
    pub feature: String,
    /// How much, above 0: a decimal string ("2.5") or a whole number.
    pub quantity: Decimal,
    /// Your id for this request: a retry with it gets the first answer and consumes nothing more.
    pub request_id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ReserveArgs {
    pub customer_id: String,
    /// How much to set aside, above 0: a decimal string ("0.50") or a whole number.
    pub amount: Decimal,
    /// A currency (usd) or a credit unit (tokens).
    pub unit: String,
    /// Your id for this reserve: a retry with it gets the first answer and sets nothing more aside.
    pub request_id: String,
    /// How long the hold lasts unless settled or released; default 900 seconds.
    pub expires_in_seconds: Option<i32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SettleArgs {
    pub hold_id: String,
    /// What the work cost, 0 up to the held amount: a decimal string or a whole number.
    pub amount: Decimal,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct HoldArgs {
    pub hold_id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SubscriptionArgs {
    /// sub_…
    pub subscription_id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ApplyCouponArgs {
    /// sub_…
    pub subscription_id: String,
    /// The coupon's code.
    pub code: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RecordUsageArgs {
    pub customer_id: String,
    /// The meter's code.
    pub meter: String,
    /// 0 to 10^15: a decimal string ("2.5") or a whole number.
    pub quantity: Decimal,
    /// Your id for this event: a retry with it records nothing more.
    pub request_id: String,
    /// When it happened (RFC 3339 with its offset; default now): at most 35 days ago and 5 minutes ahead.
    pub occurred_at: Option<String>,
}

/// Who calls: the stdio key, or the key the HTTP layer put into the request's parts.
fn caller(fixed: &Option<Caller>, ctx: &RequestContext<RoleServer>) -> Result<Caller, ApiError> {
    fixed
        .clone()
        .or_else(|| ctx.extensions.get::<axum::http::request::Parts>()?.extensions.get::<Caller>().cloned())
        .ok_or(ApiError::Unauthenticated("missing Authorization: Bearer <api key>"))
}

/// A tool's answer: the JSON document, or the error as the API would answer it.
fn answer(result: Result<String, ApiError>) -> CallToolResult {
    match result {
        Ok(json) => CallToolResult::success(vec![Content::text(json)]),
        Err(e) => {
            let a = e.answer();
            let body = serde_json::json!({ "error": { "type": a.kind, "code": a.code, "message": a.message, "param": a.param } });
            CallToolResult::error(vec![Content::text(body.to_string())])
        }
    }
}

impl PaymentsMcp {
    pub fn new(pool: Pool, caller: Option<Caller>) -> Self {
        PaymentsMcp { pool, caller, tool_router: Self::tool_router() }
    }

    /// The one row `sql` answers, rendered by `render`, for a caller with `scope` who may act
    /// for `customer` (a key bound to one customer names only its own); with `object`, the
    /// answer is that object, which must be the caller's customer's.
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        ctx: &RequestContext<RoleServer>,
        scope: &'static str,
        customer: Option<&str>,
        object: Option<&'static str>,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        render: fn(&tokio_postgres::Row) -> Result<String, ApiError>,
    ) -> CallToolResult {
        answer(
            async {
                let who = caller(&self.caller, ctx)?;
                who.require(scope)?;
                if let Some(customer) = customer {
                    who.may_act_for(customer)?;
                }
                let db = self.pool.get().await?;
                let stmt = db.prepare_cached(sql).await?;
                let json = render(&db.query_one(&stmt, params).await?)?;
                // An object asked for by id: another customer's is answered as missing.
                if let Some(object) = object {
                    who.sees_json(&json, object)?;
                }
                Ok(json)
            }
            .await,
        )
    }
}

impl PaymentsMcp {
    /// Settle or release a hold, for a caller with the write scope whose key may see the hold.
    /// The one row `sql` answers about one object of a customer (a hold, a subscription), for a
    /// caller with `scope` whose key may see that object: another customer's is not found.
    async fn owned_call(
        &self,
        ctx: &RequestContext<RoleServer>,
        scope: &'static str,
        object: Object,
        id: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> CallToolResult {
        answer(
            async {
                let who = caller(&self.caller, ctx)?;
                who.require(scope)?;
                let db = self.pool.get().await?;
                who.owns(&db, object, id).await?;
                let stmt = db.prepare_cached(sql).await?;
                first(&db.query_one(&stmt, params).await?)
            }
            .await,
        )
    }
}

/// The JSON document in a row's first column.
fn first(row: &tokio_postgres::Row) -> Result<String, ApiError> {
    Ok(row.try_get(0)?)
}

#[tool_router]
impl PaymentsMcp {
    #[tool(
        description = "Whether a customer has paid, whether a plan is active, and each feature's limit, use and what is left this period. Read-only."
    )]
    async fn customer_status(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<CustomerArgs>,
    ) -> CallToolResult {
        self.run(&ctx, READ, Some(&a.customer_id), None, CUSTOMER_STATUS, &[&a.customer_id], first).await
    }

    #[tool(
        description = "A customer's balances now, from the ledger: per account (balance, credits) and unit (a currency or a credit unit such as tokens), what is posted, held and available, as exact decimal strings. Read-only."
    )]
    async fn balance(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<CustomerArgs>,
    ) -> CallToolResult {
        self.run(&ctx, READ, Some(&a.customer_id), None, db::BALANCES, &[&a.customer_id], first).await
    }

    #[tool(
        description = "One payment by id: amount (exact decimal string), currency, status, amounts captured, refunded and disputed. Read-only."
    )]
    async fn get_payment(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<PaymentArgs>,
    ) -> CallToolResult {
        self.run(&ctx, READ, None, Some("payment"), db::GET_PAYMENT, &[&a.payment_id], first).await
    }

    #[tool(
        description = "Payments newest first, optionally of one customer and one status; has_more and starting_after page through. Read-only."
    )]
    async fn list_payments(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<ListPaymentsArgs>,
    ) -> CallToolResult {
        let limit = a.limit.unwrap_or(10);
        // A bound key lists its own customer's payments (another's it may not name).
        let bound = caller(&self.caller, &ctx).ok().and_then(|c| c.customer().map(str::to_string));
        let customer = a.customer_id.clone().or(bound);
        let params: [&(dyn ToSql + Sync); 4] = [&customer, &a.status, &a.starting_after, &limit];
        self.run(
            &ctx,
            READ,
            Some(customer.as_deref().unwrap_or("")).filter(|c| !c.is_empty()),
            None,
            db::LIST_PAYMENTS_LIMIT,
            &params,
            |row| crate::http::list_body("/v1/payments", row),
        )
        .await
    }

    #[tool(
        description = "A customer's usage of one meter over a window, aggregated as the meter says (sum, count, max, …). Read-only."
    )]
    async fn usage_summary(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<UsageSummaryArgs>,
    ) -> CallToolResult {
        let (from, to) = match (instant("from", &a.from), instant("to", &a.to)) {
            (Ok(from), Ok(to)) => (from, to),
            (Err(e), _) | (_, Err(e)) => return answer(Err(e)),
        };
        self.run(
            &ctx,
            READ,
            Some(&a.customer_id),
            None,
            db::USAGE_SUMMARY,
            &[&a.customer_id, &a.meter, &from, &to],
            first,
        )
        .await
    }

    #[tool(
        description = "Uses `quantity` of a feature of the customer's plan if the limit allows, or past it when the customer's credits can pay for the rest: allowed, remaining, outcome (consumed, refused, replayed), credits_drawn and credits_unit. Idempotent with request_id. Needs the payments:write scope."
    )]
    async fn consume(&self, ctx: RequestContext<RoleServer>, Parameters(a): Parameters<ConsumeArgs>) -> CallToolResult {
        let quantity = match a.quantity.text() {
            Ok(q) => q,
            Err(e) => return answer(Err(e)),
        };
        let params: [&(dyn ToSql + Sync); 4] = [&a.customer_id, &a.feature, &quantity, &a.request_id];
        self.run(&ctx, WRITE, Some(&a.customer_id), None, db::CONSUME, &params, first).await
    }

    #[tool(
        description = "Sets credits aside before work whose cost is known only afterwards: allowed with a hold_id when the customer's credits cover amount, else refused (never more than there is, however many agents ask at once); available is what is left. Idempotent with request_id. Then settle or release the hold. Needs the payments:write scope."
    )]
    async fn reserve(&self, ctx: RequestContext<RoleServer>, Parameters(a): Parameters<ReserveArgs>) -> CallToolResult {
        let amount = match a.amount.text() {
            Ok(q) => q,
            Err(e) => return answer(Err(e)),
        };
        let seconds = a.expires_in_seconds.unwrap_or(900);
        let params: [&(dyn ToSql + Sync); 5] = [&a.customer_id, &amount, &a.unit, &a.request_id, &seconds];
        self.run(&ctx, WRITE, Some(&a.customer_id), None, db::RESERVE, &params, first).await
    }

    #[tool(
        description = "Spends what the work cost (0 up to the held amount) from a hold and gives the rest back: {status, spent, released, outcome}. Settling again with the same amount is replayed. Needs the payments:write scope."
    )]
    async fn settle(&self, ctx: RequestContext<RoleServer>, Parameters(a): Parameters<SettleArgs>) -> CallToolResult {
        let amount = match a.amount.text() {
            Ok(q) => q,
            Err(e) => return answer(Err(e)),
        };
        self.owned_call(&ctx, WRITE, Object::Hold, &a.hold_id, db::SETTLE, &[&a.hold_id, &amount]).await
    }

    #[tool(
        description = "Gives everything a hold set aside back (the work was not done): {status: released, released, outcome}. Needs the payments:write scope."
    )]
    async fn release(&self, ctx: RequestContext<RoleServer>, Parameters(a): Parameters<HoldArgs>) -> CallToolResult {
        self.owned_call(&ctx, WRITE, Object::Hold, &a.hold_id, db::RELEASE, &[&a.hold_id]).await
    }

    #[tool(
        description = "The next invoice of a subscription as it stands now, writing nothing: its lines with usage so far, the coupon's discount, taxes, prepaid credits and balance applied, and the total the customer will pay (exact decimal strings). Read-only."
    )]
    async fn preview_invoice(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<SubscriptionArgs>,
    ) -> CallToolResult {
        let id = &a.subscription_id;
        self.owned_call(&ctx, READ, Object::Subscription, id, db::PREVIEW_INVOICE, &[id]).await
    }

    #[tool(
        description = "Redeems a coupon for a subscription: its discount comes off the invoices of the periods after the current one (once, for some periods or forever, as the coupon says). Applying the same coupon again is replayed; one with no redemptions left, expired or for another plan is refused. Needs the payments:write scope."
    )]
    async fn apply_coupon(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<ApplyCouponArgs>,
    ) -> CallToolResult {
        let id = &a.subscription_id;
        self.owned_call(&ctx, WRITE, Object::Subscription, id, db::APPLY_COUPON, &[id, &a.code]).await
    }

    #[tool(
        description = "Records one usage event on a meter, billed at renewal: {id, outcome: created | replayed}. Idempotent with request_id (a retry never bills twice). Needs the payments:write scope."
    )]
    async fn record_usage(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<RecordUsageArgs>,
    ) -> CallToolResult {
        let quantity = match a.quantity.text() {
            Ok(q) => q,
            Err(e) => return answer(Err(e)),
        };
        let occurred_at = match optional_instant("occurred_at", &a.occurred_at) {
            Ok(at) => at,
            Err(e) => return answer(Err(e)),
        };
        let none: Option<String> = None;
        let params: [&(dyn ToSql + Sync); 6] =
            [&a.request_id, &a.customer_id, &a.meter, &quantity, &occurred_at, &none];
        self.run(&ctx, WRITE, Some(&a.customer_id), None, db::RECORD_USAGE, &params, first).await
    }
}

/// A customer's status for an agent: has paid, active subscriptions, entitlements.
const CUSTOMER_STATUS: &str = "SELECT jsonb_build_object('customer_id', $1::text,
        'has_paid', payments.customer_has_paid($1), 'active_subscription', payments.has_active_subscription($1),
        'subscriptions', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', s.id, 'plan', s.plan, 'status', s.status,
                              'current_period_end', s.current_period_end, 'cancel_at_period_end', s.cancel_at_period_end)
                              ORDER BY s.id DESC), '[]')
                          FROM payments.list_subscriptions($1, NULL, 100) s
                          WHERE s.status IN ('trialing', 'active', 'past_due', 'paused')),
        'entitlements', coalesce((SELECT jsonb_agg(jsonb_build_object('feature', e.feature, 'limit', e.\"limit\"::text,
                    'used', e.used::text, 'remaining', e.remaining::text, 'plan', e.plan, 'period_end', e.period_end))
                  FROM payments.entitlements($1) e), '[]'))::text AS status";

/// Every function a client may call and every view, with the comments that document them.
const SQL_API: &str = "SELECT payments.api_reference()";

#[tool_handler(router = self.tool_router)]
impl ServerHandler for PaymentsMcp {
    fn get_info(&self) -> ServerInfo {
        ServerInfo::new(ServerCapabilities::builder().enable_tools().enable_resources().build()).with_instructions(
            "Payments kept in PostgreSQL: ask whether a customer has paid and what their plan allows \
             (customer_status), look up payments, read usage; with a write key, consume a feature or record usage. \
             Amounts are exact decimal strings. The SQL API reference is the resource payments://sql-api.",
        )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let mut resource = RawResource::new(SQL_API_URI, "payments SQL API reference");
        resource.description = Some("Every function and view of schema payments, with its documentation".into());
        resource.mime_type = Some("text/markdown".into());
        Ok(ListResourcesResult::with_all_items(vec![resource.no_annotation()]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResult, ErrorData> {
        if request.uri != SQL_API_URI {
            return Err(ErrorData::resource_not_found(format!("no resource {}", request.uri), None));
        }
        let text = async {
            caller(&self.caller, &ctx)?.require(READ)?;
            let db = self.pool.get().await?;
            let text: Option<String> = db.query_one(SQL_API, &[]).await?.try_get(0)?;
            Ok::<_, ApiError>(format!("# payments SQL API (schema payments)\n\n{}", text.unwrap_or_default()))
        }
        .await
        .map_err(|e| ErrorData::invalid_request(e.answer().message, None))?;
        Ok(ReadResourceResult::new(vec![ResourceContents::text(text, SQL_API_URI).with_mime_type("text/markdown")]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_exact_or_refused() {
        let parse = |json: &str| serde_json::from_str::<Decimal>(json).unwrap().text().map_err(|e| e.code());
        assert_eq!(parse(r#""0.000000000000000001""#), Ok("0.000000000000000001".to_string()));
        assert_eq!(parse("7"), Ok("7".to_string()));
        assert_eq!(parse("1.5"), Err("parameter_invalid"), "a float never becomes a quantity");
    }
}
