//! The connection pool and every SQL statement the gateway sends. Each HTTP
//! call is one statement around one extension function; JSON is rendered by
//! PostgreSQL and passed through untouched, so no amount is ever parsed here.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

/// A payment_result or payment_details row `r` as the API's JSON object (column
/// `payment`): the amounts as decimal strings (exact), everything else as stored.
macro_rules! payment_json {
    ($r:literal) => {
        concat!(
            "(to_jsonb(",
            $r,
            ") - 'outcome' || jsonb_build_object('object', 'payment', 'amount', ",
            $r,
            ".amount::text, 'amount_captured', ",
            $r,
            ".amount_captured::text, 'amount_refunded', ",
            $r,
            ".amount_refunded::text, 'amount_disputed', ",
            $r,
            ".amount_disputed::text))::text AS payment"
        )
    };
}

/// `list_payments` with the given arguments as one JSON page, plus whether more follow.
macro_rules! list_payments {
    ($args:literal) => {
        concat!(
            "WITH page AS (SELECT * FROM payments.list_payments(", $args, "))
             SELECT coalesce(jsonb_agg(rendered.payment::jsonb ORDER BY rendered.id DESC), '[]')::text AS data,
                    count(*) > 0 AND EXISTS (SELECT FROM payments.list_payments($1, $2, 1, (SELECT min(id) FROM page)))
                        AS has_more
             FROM (SELECT p.id, ", payment_json!("p"), " FROM page p) rendered"
        )
    };
}

pub const AUTHENTICATE: &str = "SELECT key_id, scopes, customer_id FROM payments.authenticate_api_key($1)";

/// The new (or replayed) payment as JSON, its outcome, and the columns a charge needs.
pub const CREATE_PAYMENT: &str = concat!(
    "SELECT ",
    payment_json!("r"),
    ", r.outcome, r.id, r.customer_id, r.amount_minor, r.currency, r.payment_method, r.capture_method,
            r.description, r.status
     FROM payments.create_payment($1, $2, coalesce($3::text::numeric, payments.to_major($4, $5)), $5, $6, $7,
                                  $8::text::jsonb, $9) r"
);

/// A top-up's payment, as CREATE_PAYMENT answers.
pub const TOP_UP: &str = concat!(
    "SELECT ",
    payment_json!("r"),
    ", r.outcome, r.id, r.customer_id, r.amount_minor, r.currency, r.payment_method, r.capture_method,
            r.description, r.status
     FROM payments.top_up($1, $2, $3::text::numeric, $4, $5, $6::text::jsonb) r"
);

pub const RECORD_PROVIDER_RESULT: &str = concat!(
    "SELECT ",
    payment_json!("r"),
    ", r.outcome FROM payments.record_provider_result($1, $2, $3, $4, $5::text::jsonb) r"
);

pub const RECORD_PROVIDER_ERROR: &str = "SELECT payments.record_provider_error($1, $2::text::jsonb)";

pub const CAPTURE_PAYMENT: &str =
    concat!("SELECT ", payment_json!("r"), " FROM payments.capture_payment($1, $2::text::numeric) r");

pub const CANCEL_PAYMENT: &str = concat!("SELECT ", payment_json!("r"), " FROM payments.cancel_payment($1, $2) r");

/// Leases queued provider commands of provider `$4`: `$1` at most, `$2` ms, of payment `$3` only when given.
pub const CLAIM_PROVIDER_COMMANDS: &str =
    "SELECT command_id, kind, payment_id, customer_id, provider, provider_payment_id,
        amount_minor, reason, refund_id
     FROM payments.claim_provider_commands($1, $2::bigint * interval '1 millisecond', $3, $4)";

pub const RECORD_COMMAND_RESULT: &str =
    concat!("SELECT ", payment_json!("r"), " FROM payments.record_command_result($1, $2, $3, $4::text::jsonb, $5) r");

/// Queues a cancel for every authorization of provider `$2` older than `$1` ms.
pub const CANCEL_EXPIRED_AUTHORIZATIONS: &str =
    "SELECT payments.cancel_expired_authorizations($1::bigint * interval '1 millisecond', provider => $2)";

/// A refund_details (or refund_result) row `r` as the API's JSON object: the amount as a decimal string.
macro_rules! refund_json {
    ($r:literal) => {
        concat!(
            "(to_jsonb(",
            $r,
            ") - 'outcome' || jsonb_build_object('object', 'refund', 'amount', ",
            $r,
            ".amount::text))"
        )
    };
}

/// A dispute_details row `d` as the API's JSON object: the amount as a decimal string.
macro_rules! dispute_json {
    ($r:literal) => {
        concat!("(to_jsonb(", $r, ") || jsonb_build_object('object', 'dispute', 'amount', ", $r, ".amount::text))")
    };
}

/// The refund as JSON and whether it was a replay.
pub const CREATE_REFUND: &str = concat!(
    "SELECT ",
    refund_json!("r"),
    "::text AS refund, r.outcome, r.payment_id FROM payments.create_refund($1, $2, $3::text::numeric, $4) r"
);

pub const GET_REFUND: &str = concat!("SELECT ", refund_json!("r"), "::text AS refund FROM payments.get_refund($1) r");

/// A page of `$2` refunds (of payment `$1` when given) after `$3`, plus whether more follow.
pub const LIST_REFUNDS: &str = concat!(
    "WITH page AS (SELECT * FROM payments.list_refunds($1, $2, $3))
     SELECT coalesce(jsonb_agg(",
    refund_json!("p"),
    " ORDER BY p.id DESC), '[]')::text AS data,
            count(*) > 0 AND EXISTS (SELECT FROM payments.list_refunds($1, 1, (SELECT min(id) FROM page))) AS has_more
     FROM page p"
);

pub const GET_DISPUTE: &str =
    concat!("SELECT ", dispute_json!("d"), "::text AS dispute FROM payments.get_dispute($1) d");

/// A page of `$3` disputes (of payment `$1`, in status `$2`, when given) after `$4`, plus whether more follow.
pub const LIST_DISPUTES: &str = concat!(
    "WITH page AS (SELECT * FROM payments.list_disputes($1, $2, $3, $4))
     SELECT coalesce(jsonb_agg(",
    dispute_json!("p"),
    " ORDER BY p.id DESC), '[]')::text AS data,
            count(*) > 0 AND EXISTS (SELECT FROM payments.list_disputes($1, $2, 1, (SELECT min(id) FROM page))) AS has_more
     FROM page p"
);

/// A reconciliation window's bounds as Unix seconds (`to` rounded up), for the provider's list filters.
pub const RECONCILIATION_WINDOW: &str =
    "SELECT from_unix, to_unix FROM payments.reconciliation_window($1::text::timestamptz, $2::text::timestamptz)";

pub const RECORD_PROVIDER_SNAPSHOT: &str = "SELECT payments.record_provider_snapshot($1, $2::text::jsonb)";

/// The run over `[$1, $2)` of provider `$3` (repairing when `$4`), with `$5` objects fetched, as the API's JSON.
pub const RECONCILE: &str = "SELECT (jsonb_build_object('object', 'reconciliation', 'fetched', $5::int)
        || payments.reconcile($1::text::timestamptz, $2::text::timestamptz, $3, $4))::text AS report";

/// One usage event: the event as JSON (`id`, `outcome`).
/// (The time in a subquery: Citus, delegating the call to the customer's node, sends a text
/// cast to timestamptz there as a cstring it cannot cast, answering 42846 for every event with
/// an occurred_at. Evaluated first, the call runs on the coordinator instead.)
pub const RECORD_USAGE: &str =
    "SELECT jsonb_build_object('object', 'usage_event', 'id', r.id, 'outcome', r.outcome)::text
        AS event, r.outcome
     FROM payments.record_usage($1, $2, $3, $4::text::numeric, (SELECT $5::text::timestamptz),
                                coalesce($6::text::jsonb, '{}')) r";

pub const RECORD_USAGE_BATCH: &str = "SELECT payments.record_usage_batch($1::text::jsonb)::text";

/// A customer's usage on a meter over a window, as JSON (the value a decimal string).
pub const USAGE_SUMMARY: &str = "SELECT jsonb_build_object('object', 'usage_summary', 'customer_id', $1::text,
        'meter', $2::text, 'aggregation', s.aggregation, 'value', s.value::text, 'event_count', s.event_count,
        'from', $3::text::timestamptz, 'to', $4::text::timestamptz)::text
     FROM payments.usage_summary($1, $2, $3::text::timestamptz, $4::text::timestamptz) s";

/// A subscription_result or subscription_details row `s` as the API's JSON object.
macro_rules! subscription_json {
    ($s:literal) => {
        concat!(
            "(to_jsonb(",
            $s,
            ") - 'outcome' || jsonb_build_object('object', 'subscription'))::text AS subscription"
        )
    };
}

/// (Times in a subquery, as in RECORD_USAGE: a text cast in a delegated call fails on Citus.)
pub const CREATE_SUBSCRIPTION: &str = concat!(
    "SELECT ",
    subscription_json!("s"),
    ", s.outcome
     FROM payments.create_subscription($1, $2, $3, $4, $5, quantity => coalesce($6::int, 1), currency => $7,
                                       billing_cycle_anchor => (SELECT $8::text::timestamptz),
                                       cancel_at => (SELECT $9::text::timestamptz),
                                       missing_payment_method => coalesce($10, 'create_invoice')) s"
);

pub const SET_SUBSCRIPTION_CANCEL_AT: &str = concat!(
    "SELECT ",
    subscription_json!("s"),
    " FROM payments.set_subscription_cancel_at($1, (SELECT $2::text::timestamptz)) s"
);

pub const SET_SUBSCRIPTION_QUANTITY: &str = concat!(
    "SELECT ",
    subscription_json!("s"),
    " FROM payments.set_subscription_quantity($1, $2, coalesce($3::bool, true)) s"
);

pub const GET_SUBSCRIPTION: &str = concat!("SELECT ", subscription_json!("s"), " FROM payments.get_subscription($1) s");

/// A page of `$3` subscriptions (of customer `$1`, in status `$2`, when given) after `$4`, plus whether more follow.
pub const LIST_SUBSCRIPTIONS: &str = "WITH page AS (SELECT * FROM payments.list_subscriptions($1, $2, $3, $4))
     SELECT coalesce(jsonb_agg(to_jsonb(p) || jsonb_build_object('object', 'subscription') ORDER BY p.id DESC), '[]')::text
                AS data,
            count(*) > 0 AND EXISTS (SELECT FROM payments.list_subscriptions($1, $2, 1, (SELECT min(id) FROM page)))
                AS has_more
     FROM page p";

pub const CHANGE_PLAN: &str = concat!("SELECT ", subscription_json!("s"), " FROM payments.change_plan($1, $2, $3) s");

pub const PAUSE_SUBSCRIPTION: &str =
    concat!("SELECT ", subscription_json!("s"), " FROM payments.pause_subscription($1) s");

pub const RESUME_SUBSCRIPTION: &str =
    concat!("SELECT ", subscription_json!("s"), " FROM payments.resume_subscription($1) s");

pub const CANCEL_SUBSCRIPTION: &str =
    concat!("SELECT ", subscription_json!("s"), " FROM payments.cancel_subscription($1, $2) s");

/// The customer's entitlements now as one JSON object (numbers as exact decimal strings).
pub const ENTITLEMENTS: &str = "SELECT jsonb_build_object('object', 'entitlements', 'customer_id', $1::text,
        'active', payments.has_active_subscription($1),
        'data', coalesce((SELECT jsonb_agg(jsonb_build_object('feature', e.feature, 'limit', e.\"limit\"::text,
                    'used', e.used::text, 'remaining', e.remaining::text, 'subscription_id', e.subscription_id,
                    'plan', e.plan, 'period_start', e.period_start, 'period_end', e.period_end))
                  FROM payments.entitlements($1) e), '[]'))::text";

/// One consume call's answer as JSON.
pub const CONSUME: &str = "SELECT jsonb_build_object('object', 'consumption', 'allowed', c.allowed,
        'remaining', c.remaining::text, 'outcome', c.outcome, 'reason', c.reason, 'subscription_id', c.subscription_id,
        'credits_drawn', c.credits_drawn::text, 'credits_unit', c.credits_unit)::text
     FROM payments.consume($1, $2, $3::text::numeric, $4) c";

/// A customer's balances now, as JSON (amounts as decimal strings).
pub const BALANCES: &str = "SELECT jsonb_build_object('object', 'balances', 'customer_id', $1::text,
        'data', coalesce((SELECT jsonb_agg(jsonb_build_object('account', b.account, 'unit', b.unit,
                    'posted', b.posted::text, 'held', b.held::text, 'available', b.available::text))
                  FROM payments.balances($1) b), '[]'))::text";

pub const GRANT_CREDITS: &str = "SELECT g.grant_id, g.outcome
     FROM payments.grant_credits($1, $2, $3::text::numeric, $4, (SELECT $5::text::timestamptz), $6, coalesce($7::int, 0)) g";

/// A credit grant as the API's JSON object, with the outcome of the call that made or replayed it.
pub const CREDIT_GRANT: &str = "SELECT (to_jsonb(d) - 'created_at' - 'expired_at' || jsonb_build_object(
        'object', 'credit_grant', 'amount', d.amount::text, 'remaining', d.remaining::text, 'outcome', $3::text))::text
     FROM payments.credit_grant_details d WHERE d.customer_id = $1 AND d.id = $2";

pub const SET_SPEND_LIMIT: &str = "SELECT jsonb_build_object('object', 'spend_limit', 'customer_id', $1::text,
        'unit', $3::text, 'limited', payments.set_spend_limit($1, $2::text::numeric, $3, $4))::text";

/// A reserve's answer as JSON.
pub const RESERVE: &str =
    "SELECT jsonb_build_object('object', 'hold_answer', 'hold_id', r.hold_id, 'allowed', r.allowed,
        'available', r.available::text, 'reason', r.reason)::text
     FROM payments.reserve($1, $2::text::numeric, $3, $4, make_interval(secs => $5::int)) r";

/// What settle and release did, as JSON.
pub const SETTLE: &str = "SELECT (to_jsonb(h) || jsonb_build_object('object', 'hold', 'spent', h.spent::text,
        'released', h.released::text))::text FROM payments.settle($1, $2::text::numeric) h";
pub const RELEASE: &str = "SELECT (to_jsonb(h) || jsonb_build_object('object', 'hold', 'spent', h.spent::text,
        'released', h.released::text))::text FROM payments.release($1) h";

pub const RECEIPT: &str = "SELECT payments.receipt($1)::text";

pub const RUN_BILLING: &str = "SELECT payments.run_billing()::text";

/// An invoice with its lines, as the API's JSON object (the total a decimal string).
pub const GET_INVOICE: &str = "SELECT (to_jsonb(i) || jsonb_build_object('object', 'invoice', 'total', i.total::text,
        'lines', (SELECT coalesce(jsonb_agg(to_jsonb(l) || jsonb_build_object('amount', l.amount::text,
                                                'discount', l.discount::text, 'tax', l.tax::text)
                                            ORDER BY l.line_number), '[]')
                  FROM payments.list_invoice_lines($1) l),
        'taxes', (SELECT coalesce(jsonb_agg(to_jsonb(t) || jsonb_build_object('amount', t.amount::text,
                                                'percentage', t.percentage::text)
                                            ORDER BY t.tax_rate), '[]')
                  FROM payments.list_invoice_taxes($1) t),
        'credited', i.credited::text,
        'credit_notes', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', n.id, 'number', n.number,
                                                'amount', n.amount::text, 'method', n.method, 'reason', n.reason,
                                                'refund_id', n.refund_id) ORDER BY n.number), '[]')
                         FROM payments.list_credit_notes($1) n)))::text
     FROM payments.get_invoice($1) i";

/// A page of invoices (without their lines), newest first, and whether another follows.
pub const LIST_INVOICES: &str = "WITH page AS (SELECT * FROM payments.list_invoices($1, $2, $3, $4, $5))
     SELECT coalesce(jsonb_agg(to_jsonb(p) || jsonb_build_object('object', 'invoice', 'total', p.total::text,
                                                                 'credited', p.credited::text) ORDER BY p.id DESC), '[]')::text
                AS data,
            count(*) > 0 AND EXISTS (SELECT FROM payments.list_invoices($1, $2, $3, 1, (SELECT min(id) FROM page)))
                AS has_more
     FROM page p";

/// The next invoice of a subscription, written nowhere, as JSON (amounts as decimal strings).
pub const PREVIEW_INVOICE: &str = "SELECT (to_jsonb(p) || jsonb_build_object('object', 'invoice_preview',
        'subscription_id', $1::text, 'customer_id', (SELECT s.customer_id FROM payments.get_subscription($1) s),
        'subtotal', p.subtotal::text, 'discount', p.discount::text, 'tax', p.tax::text,
        'credits_applied', p.credits_applied::text, 'balance_applied', p.balance_applied::text, 'total', p.total::text,
        'lines', (SELECT coalesce(jsonb_agg(l || jsonb_build_object('amount', l ->> 'amount', 'discount', l ->> 'discount',
                                                                   'tax', l ->> 'tax', 'quantity', l ->> 'quantity')
                                            ORDER BY n), '[]')
                  FROM jsonb_array_elements(p.lines) WITH ORDINALITY e(l, n)),
        'taxes', (SELECT coalesce(jsonb_agg(t || jsonb_build_object('amount', t ->> 'amount',
                                                                   'percentage', t ->> 'percentage') ORDER BY n), '[]')
                  FROM jsonb_array_elements(p.taxes) WITH ORDINALITY e(t, n))))::text
     FROM payments.preview_invoice($1) p";

/// Stop collecting invoice $1 (void it, or give it up); the route then answers it as GET /v1/invoices/{id}.
pub const VOID_INVOICE: &str = "SELECT count(*) FROM payments.void_invoice($1)";
pub const MARK_UNCOLLECTIBLE: &str = "SELECT count(*) FROM payments.mark_uncollectible($1)";
pub const FINALIZE_INVOICE: &str = "SELECT count(*) FROM payments.finalize_invoice($1)";
pub const ADD_INVOICE_ITEM: &str = "SELECT i.outcome
     FROM payments.add_invoice_item($1, $2, $3, $4::text::numeric, coalesce($5::int, 1)) i";

pub const CREATE_CREDIT_NOTE: &str = "SELECT n.credit_note_id, n.outcome
     FROM payments.create_credit_note($1, $2, $3::text::numeric, $4, coalesce($5::bool, false)) n";

/// A credit note as the API's JSON object (amount a decimal string).
pub const GET_CREDIT_NOTE: &str = "SELECT (to_jsonb(n) - 'amount_minor' || jsonb_build_object('object', 'credit_note',
        'amount', n.amount::text))::text
     FROM payments.get_credit_note($1) n";

/// A coupon redeemed by a subscription, as JSON.
pub const APPLY_COUPON: &str = "SELECT jsonb_build_object('object', 'discount', 'id', d.discount_id,
        'subscription_id', $1::text, 'coupon', d.coupon, 'first_period', d.first_period, 'last_period', d.last_period,
        'outcome', d.outcome)::text
     FROM payments.apply_coupon($1, $2) d";

/// The tax rates a customer's invoices charge, as JSON.
pub const SET_CUSTOMER_TAX: &str = "SELECT jsonb_build_object('object', 'customer_tax', 'customer_id', t.customer_id,
        'tax_rates', to_jsonb(t.tax_rates), 'tax_exempt', t.tax_exempt)::text
     FROM payments.set_customer_tax($1, $2, $3) t";

pub const GET_PAYMENT: &str = concat!("SELECT ", payment_json!("d"), " FROM payments.get_payment($1) d");

/// A page of the SQL function's default size (no `limit` in the request).
pub const LIST_PAYMENTS: &str = list_payments!("customer_id => $1, status => $2, starting_after => $3");
/// A page of `$4` payments.
pub const LIST_PAYMENTS_LIMIT: &str = list_payments!("$1, $2, $4, $3");

pub const LIST_EVENTS: &str =
    "SELECT coalesce(jsonb_agg(to_jsonb(h) ORDER BY h.seq), '[]')::text AS data FROM payments.list_payment_events($1) h";

pub const INGEST_WEBHOOK: &str =
    "SELECT r::text AS answer, r ->> 'result' AS result FROM payments.ingest_webhook($1, $2::text::jsonb, $3) r";

pub const CLAIM_PROVIDER_WORK: &str = "SELECT payment_id AS id, kind, customer_id, amount_minor, currency,
        payment_method, capture_method, description, provider_payment_id, status
     FROM payments.claim_provider_work($1, $2::bigint * interval '1 millisecond', $3::bigint * interval '1 millisecond')";

/// Due webhook deliveries, leased for `$2` milliseconds.
pub const CLAIM_WEBHOOK_DELIVERIES: &str = "SELECT customer_id, event_id, endpoint_id, url, secret, body, attempt
     FROM payments.claim_webhook_deliveries($1, $2::bigint * interval '1 millisecond', $3, $4::text::jsonb)";

pub const RECORD_WEBHOOK_DELIVERY: &str = "SELECT payments.record_webhook_delivery($1, $2, $3, $4, $5, $6, $7)";

/// A new endpoint as the API's JSON object, with its secret (shown this once).
pub const ADD_WEBHOOK_ENDPOINT: &str =
    "SELECT jsonb_build_object('object', 'webhook_endpoint', 'id', a.id, 'url', $1::text,
        'event_types', coalesce($2::text[], '{}'), 'description', $3::text, 'enabled', true, 'secret', a.secret)::text
     FROM payments.add_webhook_endpoint($1, coalesce($2::text[], '{}'), $3) a";

/// Every endpoint, newest first, as one JSON array.
pub const LIST_WEBHOOK_ENDPOINTS: &str = "SELECT coalesce(jsonb_agg(jsonb_build_object('object', 'webhook_endpoint',
        'id', w.id, 'url', w.url, 'event_types', w.event_types, 'description', w.description,
        'enabled', w.disabled_at IS NULL, 'created_at', w.created_at) ORDER BY w.id DESC), '[]')::text
     FROM payments.webhook_endpoint_list w";

pub const REMOVE_WEBHOOK_ENDPOINT: &str = "SELECT payments.remove_webhook_endpoint($1)";

/// Plans as the API's JSON objects (amounts as exact decimal strings), one or all.
/// A plan row as the API's JSON object (amounts as decimal strings).
macro_rules! plan_json {
    ($p:literal) => {
        concat!(
            "to_jsonb(",
            $p,
            ") || jsonb_build_object('object', 'plan', 'amount', payments.to_major(",
            $p,
            ".amount_minor, ",
            $p,
            ".currency)::text, 'usage_threshold', payments.to_major(",
            $p,
            ".usage_threshold_minor, ",
            $p,
            ".currency)::text, 'active', ",
            $p,
            ".archived_at IS NULL)"
        )
    };
}

pub const LIST_PLANS: &str = concat!(
    "SELECT coalesce(jsonb_agg(",
    plan_json!("p"),
    " ORDER BY p.code), '[]')::text FROM payments.plans p WHERE $1::text IS NULL OR p.code = $1"
);

// The catalog over HTTP (routes::catalog): an administrator's key.
pub const PUT_COUPON: &str = "SELECT (to_jsonb(c) || jsonb_build_object('object', 'coupon',
        'percent_off', c.percent_off::text, 'amount_off', payments.to_major(c.amount_off_minor, c.currency)::text))::text
     FROM payments.create_coupon($1, $2::text::numeric, $3::text::numeric, $4, coalesce($5, 'once'), $6, $7,
                                 $8::text::timestamptz, $9, $10) c";
pub const PUT_PROMOTION_CODE: &str = "SELECT (to_jsonb(pc) || jsonb_build_object('object', 'promotion_code'))::text
     FROM payments.create_promotion_code($1, $2, $3, $4::text::timestamptz, $5) pc";
pub const SET_PROMOTION_CODE_ACTIVE: &str = "SELECT payments.set_promotion_code_active($1, $2)::text";
pub const PUT_TAX_RATE: &str = "SELECT (to_jsonb(t) || jsonb_build_object('object', 'tax_rate',
        'percentage', t.percentage::text))::text
     FROM payments.create_tax_rate($1, $2, $3::text::numeric, $4, $5) t";
pub const CREATE_PLAN_VERSION: &str = concat!(
    "SELECT (",
    plan_json!("p"),
    ")::text FROM payments.create_plan_version($1, $2, $3::text::numeric, $4::jsonb, $5::jsonb, $6::text::numeric,
                                               $7::jsonb) p"
);
pub const MIGRATE_PLAN_VERSION: &str = "SELECT jsonb_build_object('object', 'plan_migration', 'plan', $1::text,
        'from_version', $2::int, 'to_version', $3::int,
        'scheduled', payments.migrate_plan_version($1, $2, $3))::text";

pub fn pool(database_url: &str, size: usize, wait: Duration) -> Result<Pool, Box<dyn std::error::Error + Send + Sync>> {
    let config = tokio_postgres::Config::from_str(database_url)?;
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Ok(Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(wait))
        .create_timeout(Some(Duration::from_secs(5)))
        .runtime(Runtime::Tokio1)
        .build()?)
}

/// A pooled connection whose statement is canceled if dropped before `done`:
/// a request that times out (its future dropped) stops its SQL on the server
/// too, instead of leaving it to finish and commit after the client was told 408.
/// The canceled connection leaves the pool, so the cancel, which arrives later,
/// can never stop the next borrower's statement.
pub struct CancelOnDrop(Option<deadpool_postgres::Client>);

impl CancelOnDrop {
    pub fn new(client: deadpool_postgres::Client) -> Self {
        CancelOnDrop(Some(client))
    }

    /// The statement finished: the connection goes back to the pool.
    pub fn done(mut self) {
        self.0 = None;
    }
}

impl std::ops::Deref for CancelOnDrop {
    type Target = deadpool_postgres::Client;

    fn deref(&self) -> &Self::Target {
        // Only `done` and `drop` empty it, and both consume the guard.
        self.0.as_ref().expect("a CancelOnDrop holds its connection until done")
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            let token = client.cancel_token();
            let detached = deadpool_postgres::Client::take(client);
            tokio::spawn(async move {
                if let Err(e) = token.cancel_query(NoTls).await {
                    tracing::warn!(error = %e, "canceling an abandoned statement failed");
                }
                drop(detached);
            });
        }
    }
}
