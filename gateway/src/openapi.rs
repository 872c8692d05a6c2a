//! The OpenAPI document, generated from the handlers' annotations. The
//! response schemas below describe the JSON PostgreSQL renders; a test checks
//! their field names against a real response.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::{ErrorBody, ErrorDetail};
use crate::routes::disputes::{Dispute, DisputeList};
use crate::routes::payments::{Event, EventList, Payment, PaymentList};
use crate::routes::plans::{Plan, PlanList};
use crate::routes::reconciliations::{Disagreement, Reconciliation};
use crate::routes::refunds::{Refund, RefundList};
use crate::routes::subscriptions::Subscription;
use crate::routes::webhook_endpoints::{DeletedWebhookEndpoint, WebhookEndpoint, WebhookEndpointList};
use crate::routes::webhooks::WebhookResult;

#[derive(OpenApi)]
#[openapi(
    info(title = "payments gateway", description = "HTTP API over the payments PostgreSQL extension. Amounts are exact: `amount` is a decimal string in major units, `amount_minor` an integer in minor units."),
    paths(
        crate::routes::payments::create,
        crate::routes::payments::get,
        crate::routes::payments::list,
        crate::routes::payments::events,
        crate::routes::payments::capture,
        crate::routes::payments::cancel,
        crate::routes::refunds::create,
        crate::routes::refunds::get,
        crate::routes::refunds::list,
        crate::routes::disputes::get,
        crate::routes::disputes::list,
        crate::routes::reconciliations::create,
        crate::routes::usage::record,
        crate::routes::usage::summary,
        crate::routes::subscriptions::create,
        crate::routes::subscriptions::get,
        crate::routes::subscriptions::cancel,
        crate::routes::subscriptions::list,
        crate::routes::subscriptions::change_plan,
        crate::routes::subscriptions::pause,
        crate::routes::subscriptions::resume,
        crate::routes::subscriptions::apply_coupon,
        crate::routes::subscriptions::set_quantity,
        crate::routes::subscriptions::set_cancel_at,
        crate::routes::invoices::preview,
        crate::routes::invoices::invoice,
        crate::routes::invoices::list,
        crate::routes::invoices::void,
        crate::routes::invoices::finalize,
        crate::routes::invoices::add_item,
        crate::routes::invoices::create_credit_note,
        crate::routes::invoices::credit_note,
        crate::routes::invoices::mark_uncollectible,
        crate::routes::invoices::receipt,
        crate::routes::invoices::receipt_html,
        crate::routes::customers::entitlements,
        crate::routes::customers::consume,
        crate::routes::customers::balances,
        crate::routes::customers::set_spend_limit,
        crate::routes::customers::set_tax,
        crate::routes::credits::grant,
        crate::routes::credits::top_up,
        crate::routes::holds::reserve,
        crate::routes::holds::settle,
        crate::routes::holds::release,
        crate::routes::webhooks::receive,
        crate::routes::webhook_endpoints::create,
        crate::routes::webhook_endpoints::list,
        crate::routes::webhook_endpoints::delete,
        crate::routes::plans::list,
        crate::routes::plans::get,
        crate::routes::catalog::put_coupon,
        crate::routes::catalog::put_promotion_code,
        crate::routes::catalog::put_tax_rate,
        crate::routes::catalog::create_plan_version,
        crate::routes::catalog::migrate_plan_version,
    ),
    components(schemas(Payment, PaymentList, Event, EventList, Refund, RefundList, Dispute, DisputeList, ErrorBody,
                       ErrorDetail, WebhookResult, crate::routes::payments::CreatePayment,
                       crate::routes::payments::CapturePayment, crate::routes::payments::CancelPayment,
                       crate::routes::refunds::CreateRefund, crate::routes::reconciliations::CreateReconciliation,
                       Reconciliation, Disagreement, crate::routes::usage::RecordUsage, Subscription,
                       crate::routes::subscriptions::CreateSubscription,
                       crate::routes::subscriptions::CancelSubscription, crate::routes::subscriptions::ChangePlan,
                       crate::routes::customers::Consume, crate::routes::customers::SpendLimit,
                       crate::routes::customers::CustomerTax, crate::routes::subscriptions::ApplyCoupon,
                       crate::routes::subscriptions::SetQuantity,
                       crate::routes::invoices::CreateCreditNote,
                       crate::routes::credits::GrantCredits, crate::routes::credits::TopUp,
                       crate::routes::holds::Reserve, crate::routes::holds::Settle, WebhookEndpoint, WebhookEndpointList,
                       DeletedWebhookEndpoint, crate::routes::webhook_endpoints::CreateWebhookEndpoint, Plan,
                       PlanList)),
    modifiers(&BearerAuth, &CommonErrors)
)]
pub struct ApiDoc;

/// The OpenAPI document the gateway serves at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /openapi.json`. Here rather than among the routes: this module reads theirs, and
/// they never read it.
pub async fn serve() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(document())
}

/// The answers any route can give besides its own, in the error body shape:
/// from the middleware (408, 413), the pool (503), the database (504, 409 for
/// a write that must be retried), authentication (401, 403) on keyed routes,
/// and 400/404 for input the route's own list does not name.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let operations =
                [(&mut item.get, false), (&mut item.post, true), (&mut item.put, true), (&mut item.delete, true)];
            for (operation, writes) in operations {
                let Some(op) = operation else { continue };
                let keyed = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let mut common = vec![
                    ("400", "invalid input"),
                    ("404", "not found"),
                    ("408", "the request took longer than GATEWAY_REQUEST_TIMEOUT_MS"),
                    ("413", "the body is larger than GATEWAY_BODY_LIMIT_BYTES"),
                    ("503", "no database connection became free in time, or the database is down"),
                    ("504", "a database statement timed out"),
                ];
                if keyed {
                    common.extend([("401", "missing, unknown or revoked API key"), ("403", "the key lacks the scope")]);
                }
                if writes {
                    common.push(("409", "a conflict, or a concurrent write to retry"));
                }
                for (status, description) in common {
                    op.responses.responses.entry(status.to_string()).or_insert_with(|| error(description).into());
                }
            }
        }
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
