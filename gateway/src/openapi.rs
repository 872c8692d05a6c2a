//! The OpenAPI document, generated from the handlers' annotations. The
//! response schemas below describe the JSON PostgreSQL renders; a test checks
//! their field names against a real response.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

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
        crate::routes::subscriptions::invoice,
        crate::routes::subscriptions::receipt,
        crate::routes::subscriptions::receipt_html,
        crate::routes::customers::entitlements,
        crate::routes::customers::consume,
        crate::routes::webhooks::receive,
        crate::routes::webhook_endpoints::create,
        crate::routes::webhook_endpoints::list,
        crate::routes::webhook_endpoints::delete,
        crate::routes::plans::list,
        crate::routes::plans::get,
    ),
    components(schemas(Payment, PaymentList, Event, EventList, Refund, RefundList, Dispute, DisputeList, ErrorBody,
                       ErrorDetail, WebhookResult, crate::routes::payments::CreatePayment,
                       crate::routes::payments::CapturePayment, crate::routes::payments::CancelPayment,
                       crate::routes::refunds::CreateRefund, crate::routes::reconciliations::CreateReconciliation,
                       Reconciliation, Disagreement, crate::routes::usage::RecordUsage, Subscription,
                       crate::routes::subscriptions::CreateSubscription,
                       crate::routes::subscriptions::CancelSubscription, crate::routes::subscriptions::ChangePlan,
                       crate::routes::customers::Consume, WebhookEndpoint, WebhookEndpointList,
                       DeletedWebhookEndpoint, crate::routes::webhook_endpoints::CreateWebhookEndpoint, Plan,
                       PlanList)),
    modifiers(&BearerAuth, &CommonErrors)
)]
pub struct ApiDoc;

/// The OpenAPI document the gateway serves at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
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
            let operations = [(&mut item.get, false), (&mut item.post, true), (&mut item.delete, true)];
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

/// A payment.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Payment {
    /// `payment`
    object: String,
    /// pay_…
    id: String,
    customer_id: String,
    /// Major units, exact, as a decimal string: "49.99".
    amount: String,
    /// Minor units: 4999.
    amount_minor: i64,
    currency: String,
    /// requires_payment_method | requires_confirmation | requires_action | processing | requires_capture | succeeded | canceled | failed
    status: String,
    capture_method: String,
    provider: Option<String>,
    provider_payment_id: Option<String>,
    payment_method: Option<String>,
    description: Option<String>,
    #[schema(value_type = Object)]
    metadata: (),
    #[schema(value_type = Option<Object>)]
    last_error: (),
    created_at: String,
    updated_at: String,
    /// What was captured once succeeded, major units as a decimal string: the amount, or less after a partial capture.
    amount_captured: Option<String>,
    amount_captured_minor: Option<i64>,
    /// Why it was canceled: duplicate | fraudulent | requested_by_customer | abandoned | automatic
    cancellation_reason: Option<String>,
    /// What succeeded refunds gave back, major units as a decimal string.
    amount_refunded: String,
    amount_refunded_minor: i64,
    /// none | partial | full (of what was captured)
    refund_status: String,
    /// Whether a dispute withholds money (open or lost).
    disputed: bool,
    /// What disputes withhold, major units as a decimal string.
    amount_disputed: String,
    amount_disputed_minor: i64,
}

/// A refund of a payment.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Refund {
    /// `refund`
    object: String,
    /// rfd_…
    id: String,
    customer_id: String,
    payment_id: String,
    /// Major units, exact, as a decimal string.
    amount: String,
    amount_minor: i64,
    currency: String,
    /// pending | succeeded | failed | canceled
    status: String,
    /// duplicate | fraudulent | requested_by_customer | expired_uncaptured_charge
    reason: Option<String>,
    provider: String,
    /// The provider's refund id (re_…), once it answered.
    provider_refund_id: Option<String>,
    failure_reason: Option<String>,
    created_at: String,
    updated_at: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RefundList {
    object: String,
    url: String,
    has_more: bool,
    data: Vec<Refund>,
}

/// A dispute (chargeback or inquiry) of a payment, from the provider's webhooks.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Dispute {
    /// `dispute`
    object: String,
    /// dsp_…
    id: String,
    customer_id: String,
    payment_id: String,
    /// Major units, exact, as a decimal string.
    amount: String,
    amount_minor: i64,
    currency: String,
    /// warning_needs_response | warning_under_review | warning_closed | needs_response | under_review | won | lost
    status: String,
    reason: Option<String>,
    evidence_due_by: Option<String>,
    provider: String,
    /// The provider's dispute id (dp_…).
    provider_dispute_id: String,
    created_at: String,
    updated_at: String,
}

/// A customer's subscription to a plan.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Subscription {
    /// `subscription`
    object: String,
    /// sub_…
    id: String,
    customer_id: String,
    plan: String,
    /// trialing | active | past_due | unpaid | canceled | incomplete | incomplete_expired | paused
    status: String,
    payment_method: Option<String>,
    current_period_start: String,
    current_period_end: String,
    trial_end: Option<String>,
    cancel_at_period_end: bool,
    canceled_at: Option<String>,
    created_at: String,
    updated_at: String,
    /// Why the last billing run failed for it: `{sqlstate, message, first_at, last_at, attempts}`; null when it did not.
    #[schema(value_type = Option<Object>)]
    billing_error: Option<serde_json::Value>,
}

/// A reconciliation run: the provider's objects of a window against ours.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Reconciliation {
    /// `reconciliation`
    object: String,
    /// rec_…
    id: String,
    provider: String,
    from: String,
    to: String,
    repair: bool,
    /// How many provider objects were pulled.
    fetched: i32,
    /// How many disagreements were repaired from the provider's objects.
    repaired: i32,
    disagreements: Vec<Disagreement>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Disagreement {
    /// missed_success | status_differs | amount_differs | currency_differs | unknown_to_us | unknown_to_provider
    kind: String,
    /// payment_intent | refund
    object_type: String,
    provider_object_id: String,
    payment_id: Option<String>,
    refund_id: Option<String>,
    /// Our status, amount_minor and currency.
    #[schema(value_type = Option<Object>)]
    ours: (),
    /// The provider's status (in our words), amount_minor and currency.
    #[schema(value_type = Option<Object>)]
    theirs: (),
    repaired: bool,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DisputeList {
    object: String,
    url: String,
    has_more: bool,
    data: Vec<Dispute>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PaymentList {
    object: String,
    url: String,
    has_more: bool,
    data: Vec<Payment>,
}

/// One entry of a payment's append-only history.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Event {
    payment_id: String,
    seq: i64,
    from_status: Option<String>,
    to_status: String,
    /// false: a stale report, recorded but not applied.
    applied: bool,
    source: String,
    reason: Option<String>,
    #[schema(value_type = Object)]
    data: (),
    created_at: String,
    hash: String,
    customer_id: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventList {
    object: String,
    data: Vec<Event>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// invalid_request_error | idempotency_error | authentication_error | permission_error | api_error
    r#type: String,
    code: String,
    message: String,
    param: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct WebhookResult {
    /// applied | noop | stale | ignored | pending_match | mismatch | duplicate
    result: String,
    event_id: String,
    payment_id: Option<String>,
    status: Option<String>,
}

/// Where events are delivered, signed with the Standard Webhooks scheme.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct WebhookEndpoint {
    /// `webhook_endpoint`
    object: String,
    /// we_…
    id: String,
    url: String,
    /// payment.succeeded, invoice.* or *; empty: every event.
    event_types: Vec<String>,
    description: Option<String>,
    /// false once deleted.
    enabled: bool,
    /// Only when created: the signing secret (whsec_…), shown once.
    secret: Option<String>,
    /// In lists.
    created_at: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct WebhookEndpointList {
    object: String,
    url: String,
    has_more: bool,
    data: Vec<WebhookEndpoint>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeletedWebhookEndpoint {
    object: String,
    id: String,
    deleted: bool,
}

/// What a subscription buys.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Plan {
    /// `plan`
    object: String,
    code: String,
    name: Option<String>,
    currency: String,
    /// The recurring price per period, major units, exact, as a decimal string.
    amount: String,
    amount_minor: i64,
    /// day | week | month | year
    billing_interval: String,
    interval_count: i32,
    trial_days: i32,
    /// Each feature and its limit per period (null: unlimited).
    #[schema(value_type = Object)]
    features: (),
    /// The usage it bills in arrears: [{"meter", "price"}].
    #[schema(value_type = Vec<Object>)]
    metered: (),
    /// Usage is invoiced as soon as it reaches this much within a period (major units).
    usage_threshold: Option<String>,
    usage_threshold_minor: Option<i64>,
    /// false once archived (existing subscriptions keep it).
    active: bool,
    created_at: String,
    archived_at: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PlanList {
    object: String,
    url: String,
    has_more: bool,
    data: Vec<Plan>,
}
