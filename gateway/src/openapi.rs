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
        crate::routes::webhooks::receive,
    ),
    components(schemas(Payment, PaymentList, Event, EventList, ErrorBody, ErrorDetail, WebhookResult,
                       crate::routes::payments::CreatePayment)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

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
    /// applied | noop | stale | ignored | pending_match | duplicate
    result: String,
    event_id: String,
    payment_id: Option<String>,
    status: Option<String>,
}
