//! The SQL the dashboard sends: the extension's functions and views, as every
//! client reads them. Each statement answers one JSON document (rendered by
//! PostgreSQL; amounts come as exact decimal strings with their currency).

pub const SIGN_IN: &str = "SELECT session_token FROM payments.dashboard_sign_in($1, $2, $3::text::interval)";
pub const SESSION: &str = "SELECT user_id, user_email, user_role, csrf_token FROM payments.dashboard_session($1)";
pub const SIGN_OUT: &str = "SELECT payments.dashboard_sign_out($1)";

/// An amount `$m` (minor units; sums are numeric) of currency column `$c` as "12.34 USD".
macro_rules! money {
    ($m:literal, $c:literal) => {
        concat!("payments.to_major((", $m, ")::bigint, ", $c, ")::text || ' ' || ", $c)
    };
}

/// The overview over the last `$1` days (UTC): every day, succeeded volume by day and currency,
/// succeeded and failed payments by day, refunds and disputes opened by day, subscriptions by
/// status, monthly recurring revenue now (`payments.mrr`) and by day (from
/// `payments.subscription_revenue`): a day's are those paying now, or canceled since, that had
/// started and left their trial by then (the history of pauses is not kept, so a paused one is
/// left out).
pub const OVERVIEW: &str = "
WITH bounds AS (SELECT (now() AT TIME ZONE 'UTC')::date - ($1::int - 1) AS first_day),
days AS (SELECT d::date AS day FROM bounds, generate_series(bounds.first_day, (now() AT TIME ZONE 'UTC')::date, '1 day') d),
since AS (SELECT first_day::timestamp AT TIME ZONE 'UTC' AS at FROM bounds),
recent AS (
    SELECT (p.created_at AT TIME ZONE 'UTC')::date AS day, p.currency, p.status, p.amount_minor
    FROM payments.payment_details p, since WHERE p.created_at >= since.at),
-- What each subscription brings in a month (the extension's revenue view, as BI tools read it).
monthly AS (
    SELECT r.status, r.created_at, r.canceled_at, r.trial_end, r.currency, r.monthly_minor AS minor
    FROM payments.subscription_revenue r)
SELECT jsonb_build_object(
    'days', (SELECT jsonb_agg(day ORDER BY day) FROM days),
    'volume', (SELECT coalesce(jsonb_agg(v), '[]') FROM (
        SELECT day, currency, sum(amount_minor) AS minor FROM recent WHERE status = 'succeeded' GROUP BY 1, 2) v),
    'outcomes', (SELECT coalesce(jsonb_agg(o), '[]') FROM (
        SELECT day, count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
               count(*) FILTER (WHERE status = 'failed') AS failed FROM recent GROUP BY 1) o),
    'refunds', (SELECT coalesce(jsonb_agg(r), '[]') FROM (
        SELECT (r.created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n
        FROM payments.refund_details r, since WHERE r.created_at >= since.at GROUP BY 1) r),
    'disputes', (SELECT coalesce(jsonb_agg(d), '[]') FROM (
        SELECT (d.created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n
        FROM payments.dispute_details d, since WHERE d.created_at >= since.at GROUP BY 1) d),
    'subscriptions', (SELECT coalesce(jsonb_object_agg(status, n), '{}') FROM (
        SELECT status, count(*) AS n FROM payments.subscription_details GROUP BY 1) s),
    'mrr', (SELECT coalesce(jsonb_agg(m ORDER BY m.currency), '[]') FROM (
        SELECT currency, mrr_minor AS minor FROM payments.mrr) m),
    'mrr_days', (SELECT coalesce(jsonb_agg(m), '[]') FROM (
        SELECT days.day, monthly.currency, sum(monthly.minor) AS minor,
               count(*) AS active
        FROM days JOIN monthly
          ON monthly.created_at < (days.day + 1)::timestamp AT TIME ZONE 'UTC'
         AND (monthly.canceled_at IS NULL OR monthly.canceled_at >= (days.day + 1)::timestamp AT TIME ZONE 'UTC')
         AND (monthly.trial_end IS NULL OR monthly.trial_end < (days.day + 1)::timestamp AT TIME ZONE 'UTC')
         AND monthly.status IN ('active', 'past_due', 'canceled')
        GROUP BY 1, 2) m)
)::text";

/// Payments newest first, 51 at most (the 51st says an older page exists), filtered by
/// customer `$1`, status `$2`, first day `$3`, last day `$4` (UTC dates), older than id `$5`;
/// without a first day, `$6` days back (when given). Answers `{from, rows}`: the first day
/// applied, and the page. The page is chosen from plain columns first and shown after: a window
/// of a month holds tens of thousands of payments, and formatting each before the sort cost
/// most of the time.
pub const PAYMENTS: &str = concat!(
    "
SELECT jsonb_build_object(
    'from', coalesce($3::text::date, (now() AT TIME ZONE 'UTC')::date - ($6::int - 1)),
    'rows', coalesce(jsonb_agg(jsonb_build_object('id', p.id, 'customer_id', p.customer_id,
           'amount', ",
    money!("p.amount_minor", "p.currency"),
    ", 'status', p.status, 'refund_status', p.refund_status,
           'disputed', p.disputed, 'created', to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'))
           ORDER BY p.id DESC), '[]'))::text
FROM (
    SELECT p.id, p.customer_id, p.amount_minor, p.currency, p.status, p.refund_status, p.disputed, p.created_at
    FROM payments.payment_details p
    WHERE ($1::text IS NULL OR p.customer_id = $1) AND ($2::text IS NULL OR p.status = $2)
      AND ($3::text IS NULL OR p.created_at >= $3::text::date::timestamp AT TIME ZONE 'UTC')
      AND ($3::text IS NOT NULL OR $6::int IS NULL
           OR p.created_at >= ((now() AT TIME ZONE 'UTC')::date - ($6::int - 1))::timestamp AT TIME ZONE 'UTC')
      AND ($4::text IS NULL OR p.created_at < ($4::text::date + 1)::timestamp AT TIME ZONE 'UTC')
      AND ($5::text IS NULL OR p.id < $5)
    ORDER BY p.id DESC LIMIT 51) p"
);

/// A refund (a refund_details row aliased `r`) as the dashboard shows it.
macro_rules! refund_json {
    () => {
        concat!(
            "jsonb_build_object('id', r.id, 'payment_id', r.payment_id, 'customer_id', r.customer_id, 'amount', ",
            money!("r.amount_minor", "r.currency"),
            ", 'status', r.status, 'reason', r.reason,
               'created', to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'))"
        )
    };
}

/// A dispute (a dispute_details row aliased `d`) as the dashboard shows it.
macro_rules! dispute_json {
    () => {
        concat!(
            "jsonb_build_object('id', d.id, 'payment_id', d.payment_id, 'customer_id', d.customer_id, 'amount', ",
            money!("d.amount_minor", "d.currency"),
            ", 'status', d.status, 'reason', d.reason,
               'evidence_due_by', to_char(d.evidence_due_by AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
               'created', to_char(d.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'))"
        )
    };
}

/// One payment with everything its page shows: amounts, its history with the chain's
/// verdict, refunds, disputes and open anomalies. The subqueries name the payment by `$1`,
/// not by the outer row: Citus plans no correlated subquery beside a function in FROM.
pub const PAYMENT: &str = concat!(
    "
SELECT jsonb_build_object(
    'payment', to_jsonb(p) || jsonb_build_object(
        'amount_shown', ",
    money!("p.amount_minor", "p.currency"),
    ",
        'captured_shown', ",
    money!("coalesce(p.amount_captured_minor, 0)", "p.currency"),
    ",
        'refunded_shown', ",
    money!("p.amount_refunded_minor", "p.currency"),
    ",
        'disputed_shown', ",
    money!("p.amount_disputed_minor", "p.currency"),
    ",
        'net_shown', ",
    money!("coalesce(p.amount_captured_minor, 0) - p.amount_refunded_minor - p.amount_disputed_minor", "p.currency"),
    ",
        'refundable', coalesce(p.amount_captured_minor, 0) - p.amount_refunded_minor > 0,
        'created_shown', to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC'),
    'events', (SELECT coalesce(jsonb_agg(jsonb_build_object('seq', h.seq, 'from_status', h.from_status,
                   'to_status', h.to_status, 'applied', h.applied, 'source', h.source, 'reason', h.reason,
                   'at', to_char(h.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                   'hash', left(h.hash, 12)) ORDER BY h.seq), '[]')
               FROM payments.list_payment_events($1) h),
    'chain_problems', (SELECT coalesce(jsonb_agg(v.problem), '[]') FROM payments.verify_event_chain($1) v),
    'refunds', (SELECT coalesce(jsonb_agg(",
    refund_json!(),
    " ORDER BY r.id), '[]') FROM payments.list_refunds($1, 100) r),
    'disputes', (SELECT coalesce(jsonb_agg(",
    dispute_json!(),
    " ORDER BY d.id), '[]') FROM payments.list_disputes($1, NULL, 100) d),
    'anomalies', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', a.id, 'kind', a.kind, 'source', a.source,
                   'observed', a.observed::text,
                   'created', to_char(a.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')) ORDER BY a.id), '[]')
                  FROM payments.open_anomalies a
                  WHERE a.customer_id = (SELECT g.customer_id FROM payments.get_payment($1) g) AND a.payment_id = $1)
)::text
FROM payments.get_payment($1) p"
);

/// Customers with payments in the last `$1` days (UTC), most recently active first: their
/// payments, succeeded and failed, and their newest subscription's plan and status.
pub const CUSTOMERS: &str = "
SELECT coalesce(jsonb_agg(c ORDER BY c.last_payment DESC), '[]')::text FROM (
    SELECT r.customer_id, count(*) AS payments, count(*) FILTER (WHERE r.status = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE r.status = 'failed') AS failed,
           to_char(max(r.created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') AS last_payment
    FROM payments.payment_details r
    WHERE r.created_at >= ((now() AT TIME ZONE 'UTC')::date - ($1::int - 1))::timestamp AT TIME ZONE 'UTC'
    GROUP BY r.customer_id ORDER BY max(r.created_at) DESC LIMIT 100) c";

/// Refunds and disputes, newest first.
pub const REFUNDS_AND_DISPUTES: &str = concat!(
    "
SELECT jsonb_build_object(
    'refunds', (SELECT coalesce(jsonb_agg(",
    refund_json!(),
    " ORDER BY r.id DESC), '[]') FROM payments.list_refunds(NULL, 100) r),
    'disputes', (SELECT coalesce(jsonb_agg(",
    dispute_json!(),
    " ORDER BY d.id DESC), '[]') FROM payments.list_disputes(NULL, NULL, 100) d)
)::text"
);

/// Subscriptions of status `$1` (all when NULL), newest first, with their plan's price.
pub const SUBSCRIPTIONS: &str = concat!(
    "
SELECT coalesce(jsonb_agg(jsonb_build_object('id', s.id, 'customer_id', s.customer_id, 'plan', s.plan,
           'price', ",
    money!("pl.amount_minor", "pl.currency"),
    " || ' / ' || pl.interval_count || ' ' || pl.billing_interval,
           'status', s.status, 'cancel_at_period_end', s.cancel_at_period_end,
           'period_end', to_char(s.current_period_end AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
           'billing_error', (s.billing_error ->> 'sqlstate') || ': ' || (s.billing_error ->> 'message'))
           ORDER BY s.id DESC), '[]')::text
FROM payments.list_subscriptions(NULL, $1, 100) s JOIN payments.plans pl ON pl.code = s.plan"
);

/// A customer's balances by currency. A statement of its own: on Citus a query that reads
/// one customer's shard is sent to that shard whole, and the functions of `CUSTOMER` must
/// run on the coordinator.
pub const CUSTOMER_BALANCES: &str = concat!(
    "
SELECT coalesce(jsonb_agg(jsonb_build_object('currency', b.currency,
           'gross', ",
    money!("b.gross_captured_minor", "b.currency"),
    ",
           'refunded', ",
    money!("b.refunded_minor", "b.currency"),
    ",
           'disputed', ",
    money!("b.disputed_minor", "b.currency"),
    ",
           'net', ",
    money!("b.net_minor", "b.currency"),
    ") ORDER BY b.currency), '[]')::text
FROM payments.customer_balances b WHERE b.customer_id = $1"
);

/// A customer: subscriptions, what each feature has left, usage of every meter this period
/// (the latest current subscription period, else the calendar month, whole: billing run with a
/// later `at` may have started it after now), latest payments.
pub const CUSTOMER: &str = concat!("
WITH current AS (
    SELECT s.current_period_start AS start, s.current_period_end AS finish
    FROM payments.list_subscriptions($1, NULL, 100) s
    WHERE s.status IN ('active', 'trialing', 'past_due')
    ORDER BY s.current_period_start DESC LIMIT 1
), month AS (
    SELECT date_trunc('month', now() AT TIME ZONE 'UTC') AS start
), period AS (
    SELECT coalesce(c.start, m.start AT TIME ZONE 'UTC') AS start,
           coalesce(c.finish, (m.start + interval '1 month') AT TIME ZONE 'UTC') AS finish
    FROM month m LEFT JOIN current c ON true
)
SELECT jsonb_build_object(
    'has_paid', payments.customer_has_paid($1),
    'active', payments.has_active_subscription($1),
    'period_start', (SELECT to_char(start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') FROM period),
    'subscriptions', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', s.id, 'plan', s.plan, 'status', s.status,
                    'period_end', to_char(s.current_period_end AT TIME ZONE 'UTC', 'YYYY-MM-DD')) ORDER BY s.id DESC), '[]')
                 FROM payments.list_subscriptions($1, NULL, 100) s),
    'entitlements', (SELECT coalesce(jsonb_agg(jsonb_build_object('feature', e.feature, 'plan', e.plan,
                    'limit', coalesce(e.\"limit\"::text, 'unlimited'), 'used', e.used::text,
                    'remaining', coalesce(e.remaining::text, 'unlimited')) ORDER BY e.feature), '[]')
                 FROM payments.entitlements($1) e),
    'usage', (SELECT coalesce(jsonb_agg(jsonb_build_object('meter', m.code, 'aggregation', u.aggregation,
                    'value', u.value::text, 'events', u.event_count) ORDER BY m.code), '[]')
              FROM payments.meters m, period, payments.usage_summary($1, m.code, period.start, period.finish) u),
    'payments', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', p.id, 'amount', ", money!("p.amount_minor", "p.currency"), ",
                    'status', p.status, 'created', to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'))
                    ORDER BY p.id DESC), '[]')
                 FROM payments.list_payments($1, NULL, 20) p)
)::text");

/// The ledger's trial balance: per unit, the debit balances, the credit balances and their
/// difference (zero when every account nets), as `payments.trial_balance()` answers.
pub const TRIAL_BALANCE: &str = "
SELECT coalesce(jsonb_agg(jsonb_build_object('unit', t.unit, 'debits', t.debits::text, 'credits', t.credits::text,
           'difference', t.difference::text) ORDER BY t.unit), '[]')::text
FROM payments.trial_balance() t";

/// A customer's wallet now: per account and unit, what is posted, held and available
/// (`payments.balances`). (On Citus a function call may not sit beside queries of distributed
/// tables: the grants, holds and entries are `CUSTOMER_WALLET_ENTRIES`.)
pub const CUSTOMER_WALLET: &str = "
SELECT coalesce(jsonb_agg(jsonb_build_object('account', b.account, 'unit', b.unit, 'posted', b.posted::text,
           'held', b.held::text, 'available', b.available::text) ORDER BY b.account, b.unit), '[]')::text
FROM payments.balances($1) b";

/// A customer's credit grants (with what is left and when they expire), its latest holds and
/// its latest ledger entries.
pub const CUSTOMER_WALLET_ENTRIES: &str = "
SELECT jsonb_build_object(
    'grants', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', g.id, 'unit', g.unit, 'amount', g.amount::text,
                    'remaining', g.remaining::text, 'applies_to', coalesce(g.applies_to, 'invoices'),
                    'expires', coalesce(to_char(g.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), 'never'),
                    'state', CASE WHEN g.expired_at IS NOT NULL THEN 'expired' WHEN g.remaining = 0 THEN 'used' ELSE 'active' END)
                    ORDER BY g.expired_at IS NOT NULL, g.priority, g.expires_at NULLS LAST, g.id), '[]')
               FROM payments.credit_grant_details g WHERE g.customer_id = $1),
    'holds', (SELECT coalesce(jsonb_agg(h ORDER BY h.id DESC), '[]') FROM (
                SELECT h.id, h.unit, h.amount::text AS amount, h.status, coalesce(h.settled::text, '') AS settled,
                       to_char(h.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') AS expires
                FROM payments.hold_details h WHERE h.customer_id = $1 ORDER BY h.id DESC LIMIT 20) h),
    'entries', (SELECT coalesce(jsonb_agg(e ORDER BY e.transfer_id DESC), '[]') FROM (
                SELECT l.transfer_id, to_char(l.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS created,
                       l.kind, l.debit_account AS debit, l.credit_account AS credit, l.amount || ' ' || l.unit AS amount,
                       l.reference
                FROM payments.ledger l WHERE l.customer_id = $1 ORDER BY l.transfer_id DESC LIMIT 20) e)
)::text";

/// A customer's billing: its latest invoices (subtotal, discount, tax, credited, total), the
/// discounts its subscriptions redeemed, and the tax rates its invoices charge.
pub const CUSTOMER_BILLING: &str = "
SELECT jsonb_build_object(
    'invoices', (SELECT coalesce(jsonb_agg(v ORDER BY v.id DESC), '[]') FROM (
        SELECT i.id, i.number, i.status, coalesce(i.coupon, '') AS coupon,
               l.subtotal || ' ' || i.currency AS subtotal, l.discount || ' ' || i.currency AS discount,
               l.tax || ' ' || i.currency AS tax, i.credited || ' ' || i.currency AS credited,
               i.total || ' ' || i.currency AS total
        FROM (SELECT * FROM payments.invoice_details d WHERE d.customer_id = $1 ORDER BY d.id DESC LIMIT 20) i
        JOIN (SELECT x.invoice_id,
                     payments.to_major(sum(x.amount_minor) FILTER (WHERE x.kind NOT IN ('prepaid_credits', 'balance'))::bigint,
                                       min(d.currency)) AS subtotal,
                     payments.to_major(sum(x.discount_minor)::bigint, min(d.currency)) AS discount,
                     payments.to_major(sum(x.tax_minor)::bigint, min(d.currency)) AS tax
              FROM payments.invoice_line_details x
              JOIN payments.invoice_details d ON d.customer_id = x.customer_id AND d.id = x.invoice_id
              WHERE x.customer_id = $1 GROUP BY x.invoice_id) l ON l.invoice_id = i.id) v),
    'discounts', (SELECT coalesce(jsonb_agg(jsonb_build_object('subscription_id', d.subscription_id, 'coupon', d.coupon,
                    'periods', d.first_period || ' to ' || coalesce(d.last_period::text, 'forever'),
                    'state', CASE WHEN d.ended_at IS NULL THEN 'active' ELSE 'replaced' END) ORDER BY d.id DESC), '[]')
                  FROM payments.discounts d WHERE d.customer_id = $1),
    'taxes', (SELECT coalesce(jsonb_agg(jsonb_build_object('tax_rate', t.code, 'display_name', t.display_name,
                    'percentage', t.percentage::text || ' %', 'inclusive', CASE WHEN t.inclusive THEN 'inclusive' ELSE 'exclusive' END,
                    'exempt', CASE WHEN ct.tax_exempt THEN 'exempt' ELSE 'charged' END) ORDER BY r.ord), '[]')
              FROM payments.customer_taxes ct CROSS JOIN LATERAL unnest(ct.tax_rates) WITH ORDINALITY r(code, ord)
              JOIN payments.tax_rates t ON t.code = r.code WHERE ct.customer_id = $1)
)::text";

/// The latest webhooks received from the provider and delivered to apps' endpoints.
pub const WEBHOOKS: &str = "
SELECT jsonb_build_object(
    'received', (SELECT coalesce(jsonb_agg(w ORDER BY w.received DESC), '[]') FROM (
        SELECT l.provider, l.event_id, l.event_type, l.payment_id, l.result, l.still_pending,
               to_char(l.received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS received
        FROM payments.webhook_log l ORDER BY l.received_at DESC LIMIT 50) w),
    'delivered', (SELECT coalesce(jsonb_agg(d ORDER BY d.created DESC), '[]') FROM (
        SELECT l.event_id, l.type, l.object_id, l.url, l.status, l.attempts, l.last_status_code, l.last_error,
               to_char(l.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS created
        FROM payments.webhook_delivery_log l ORDER BY l.created_at DESC LIMIT 50) d)
)::text";

/// Open anomalies, newest first: what each payment expected beside what was observed.
pub const ANOMALIES: &str = concat!(
    "
SELECT coalesce(jsonb_agg(jsonb_build_object('id', a.id, 'payment_id', a.payment_id, 'customer_id', a.customer_id,
           'kind', a.kind, 'source', a.source, 'provider', a.provider,
           'expected', ",
    money!("a.expected_amount_minor", "a.expected_currency"),
    ",
           'observed', a.observed::text, 'created', to_char(a.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'))
           ORDER BY a.created_at DESC), '[]')::text
FROM (SELECT * FROM payments.open_anomalies ORDER BY created_at DESC LIMIT 100) a"
);

/// Whether invoice $1 is customer $2's (an action on a customer's page acts on its own).
pub const INVOICE_OF_CUSTOMER: &str =
    "SELECT count(*) FROM payments.invoice_details d WHERE d.id = $1 AND d.customer_id = $2";
/// Whether subscription $1 is customer $2's.
pub const SUBSCRIPTION_OF_CUSTOMER: &str =
    "SELECT count(*) FROM payments.subscription_details d WHERE d.id = $1 AND d.customer_id = $2";
