-- payments: the tables of subscriptions (its functions: sql/code/subscriptions.sql). Created once; a
-- release changes them in its delta (sql/delta/).

CREATE TABLE payments.plans (
    code             text COLLATE "C" PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    name             text CHECK (length(name) BETWEEN 1 AND 255),
    currency         text COLLATE "C" NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount_minor     bigint NOT NULL CHECK (amount_minor >= 0),
    billing_interval text NOT NULL CHECK (payments._is_allowed('billing_interval', billing_interval)),
    interval_count   integer NOT NULL DEFAULT 1 CHECK (interval_count BETWEEN 1 AND 365),
    trial_days       integer NOT NULL DEFAULT 0 CHECK (trial_days BETWEEN 0 AND 730),
    features         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(features) = 'object'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    archived_at      timestamptz,
    metered          jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(metered) = 'array'),
    usage_threshold_minor bigint CHECK (usage_threshold_minor > 0),
    feature_prices   jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(feature_prices) = 'object'),
    features_per_seat boolean NOT NULL DEFAULT false,
    version          integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    currency_options jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(currency_options) = 'object')
);
COMMENT ON TABLE payments.plans IS
    'What a subscription buys: a recurring price per interval, a trial, and the features it grants with their limits per period. Made by payments_admin with create_plan; archived plans take no new subscriptions, existing ones keep them. On Citus a reference table.';
COMMENT ON COLUMN payments.plans.amount_minor IS 'The recurring price per period in the currency''s minor unit (0: a free plan).';
COMMENT ON COLUMN payments.plans.billing_interval IS 'day, week, month or year; a period is interval_count of them.';
COMMENT ON COLUMN payments.plans.trial_days IS 'Days of trial a new subscription gets unless create_subscription says otherwise.';
COMMENT ON COLUMN payments.plans.metered IS
    'The usage it bills in arrears, each closed period: [{"meter": "tokens", "price": {"mode": "graduated", "tiers": [{"up_to": 1000, "unit_amount_minor": 0}, {"up_to": null, "unit_amount_minor": "0.1"}]}}] (modes per_unit, graduated, volume; amounts in minor units, fractions allowed; each line rounded once to a minor unit).';
COMMENT ON COLUMN payments.plans.usage_threshold_minor IS
    'Threshold billing: when a period''s metered usage, priced, reaches this many minor units beyond what the period has invoiced, run_billing invoices it at once (NULL: usage waits for the period''s end).';
COMMENT ON COLUMN payments.plans.feature_prices IS
    'What one unit of a feature costs once the plan''s limit for the period is used up, in minor units of the plan''s currency (fractions allowed): {"calls": 0.2}. consume then pays for what passes the limit with the customer''s money credits, the cost of each call rounded up to a minor unit. A feature without a price draws only credits granted for it (credit units, one per unit).';
COMMENT ON COLUMN payments.plans.features_per_seat IS
    'Whether each feature''s limit is per seat: a subscription of quantity n may use n times it (calls: 1000 per seat). The price is always per seat (amount_minor times the quantity).';
COMMENT ON COLUMN payments.plans.version IS
    'Its latest version (create_plan_version): new subscriptions get it; existing ones keep theirs until migrate_plan_version moves them. The prices of every version are in payments.plan_versions; the columns here are the latest''s.';
COMMENT ON COLUMN payments.plans.currency_options IS
    'Its prices in other currencies than its own, as Stripe''s currency_options: {"EUR": {"amount_minor": 900, "metered": [...], "feature_prices": {...}, "usage_threshold_minor": n}} (the same meters and priced features as in its own currency). A customer pays in the currency of its first subscription.';
COMMENT ON COLUMN payments.plans.features IS 'Each feature the plan grants and its limit per period: {"api_calls": 1000, "seats": 5, "export": null} (null: unlimited).';
SELECT pg_catalog.pg_extension_config_dump('payments.plans', '');

CREATE TABLE payments.plan_versions (
    plan                  text COLLATE "C" NOT NULL,
    version               integer NOT NULL CHECK (version >= 1),
    amount_minor          bigint NOT NULL CHECK (amount_minor >= 0),
    metered               jsonb NOT NULL CHECK (jsonb_typeof(metered) = 'array'),
    feature_prices        jsonb NOT NULL CHECK (jsonb_typeof(feature_prices) = 'object'),
    usage_threshold_minor bigint CHECK (usage_threshold_minor > 0),
    currency_options      jsonb NOT NULL CHECK (jsonb_typeof(currency_options) = 'object'),
    created_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plan, version)
);
COMMENT ON TABLE payments.plan_versions IS
    'Every version of every plan''s prices (create_plan, create_plan_version), never changed: a subscription is billed at its own version (subscriptions.plan_version) until migrate_plan_version moves it at a renewal, so a price change never reaches existing subscribers unasked (grandfathering). The plan''s other terms (interval, trial, features) belong to the plan. On Citus a reference table.';
COMMENT ON COLUMN payments.plan_versions.amount_minor IS 'The recurring price per period in the plan''s currency (see plans.amount_minor).';
COMMENT ON COLUMN payments.plan_versions.currency_options IS 'Its prices in other currencies (see plans.currency_options).';
SELECT pg_catalog.pg_extension_config_dump('payments.plan_versions', '');

CREATE TABLE payments.subscriptions (
    id                   text COLLATE "C" NOT NULL,
    customer_id          text COLLATE "C" NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 255),
    plan                 text COLLATE "C" NOT NULL REFERENCES payments.plans (code),
    status               text COLLATE "C" NOT NULL CHECK (payments._is_allowed('subscription_status', status)),
    payment_method       text CHECK (length(payment_method) <= 255),
    current_period_start timestamptz NOT NULL,
    current_period_end   timestamptz NOT NULL,
    billing_anchor       timestamptz NOT NULL,
    period_number        integer NOT NULL CHECK (period_number >= 0),
    trial_end            timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    canceled_at          timestamptz,
    past_due_since       timestamptz,
    pending_plan         text COLLATE "C" REFERENCES payments.plans (code),
    anchor_period        integer NOT NULL DEFAULT 0 CHECK (anchor_period >= 0),
    usage_from           timestamptz NOT NULL,
    billing_error        jsonb,
    idempotency_key      text COLLATE "C" NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    fingerprint          bytea NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    quantity             integer NOT NULL DEFAULT 1 CHECK (quantity BETWEEN 1 AND 1000000),
    currency             text COLLATE "C" NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    plan_version         integer NOT NULL DEFAULT 1 CHECK (plan_version >= 1),
    pending_version      integer CHECK (pending_version >= 1),
    cancel_at            timestamptz,
    missing_payment_method text COLLATE "C" NOT NULL DEFAULT 'create_invoice'
        CHECK (payments._is_allowed('missing_payment_method', missing_payment_method)),
    PRIMARY KEY (customer_id, id),
    CONSTRAINT subscriptions_idempotency_key UNIQUE (customer_id, idempotency_key),
    CHECK (current_period_start < current_period_end)
);
-- get_subscription by id alone, as get_refund.
CREATE INDEX subscriptions_id_idx ON payments.subscriptions (id);
COMMENT ON TABLE payments.subscriptions IS
    'Customers'' subscriptions to plans, with Stripe''s statuses. Beside the customer''s payments (on Citus, by customer_id). Every change is in subscription_events.';
COMMENT ON COLUMN payments.subscriptions.id IS 'sub_ + 26-character time-sortable id.';
COMMENT ON COLUMN payments.subscriptions.status IS
    'trialing, active, past_due, unpaid, canceled, incomplete (a paid plan without trial, until its first period is paid), paused.';
COMMENT ON COLUMN payments.subscriptions.current_period_start IS 'Start of the period limits and usage count in.';
COMMENT ON COLUMN payments.subscriptions.billing_anchor IS 'The instant paid periods are counted from (the start, the end of the trial, a resume, or a change of billing interval): period n ends n - anchor_period intervals after it, counted in UTC whatever the session''s TimeZone, so a subscription begun on January 31 renews on the last day of each month.';
COMMENT ON COLUMN payments.subscriptions.anchor_period IS 'The period number just before billing_anchor: the anchor''s first period is anchor_period + 1.';
COMMENT ON COLUMN payments.subscriptions.usage_from IS 'Metered usage from this instant on is not invoiced yet (the start of the period, or of the last plan change within it).';
COMMENT ON COLUMN payments.subscriptions.billing_error IS 'Why run_billing last failed for this subscription ({"sqlstate", "message", "first_at", "last_at", "attempts"}), NULL once it succeeds again: one subscription''s failure never stops the others (payments.billing_failures).';
COMMENT ON COLUMN payments.subscriptions.period_number IS 'Which paid period is current (0: the trial).';
COMMENT ON COLUMN payments.subscriptions.past_due_since IS 'When its renewal first failed; past_due grants its features for the grace period after it (set_dunning).';
COMMENT ON COLUMN payments.subscriptions.pending_plan IS 'The plan it moves to when the current period ends (change_plan without proration).';
COMMENT ON COLUMN payments.subscriptions.quantity IS
    'Seats (or units) of the plan it pays for: each period''s fee is the plan''s amount times it (set_subscription_quantity changes it, prorated).';
COMMENT ON COLUMN payments.subscriptions.currency IS
    'What it is billed in: its plan''s currency or one of its currency_options, the same for every subscription of a customer (the first one fixes it).';
COMMENT ON COLUMN payments.subscriptions.plan_version IS 'The version of its plan''s prices it is billed at (payments.plan_versions).';
COMMENT ON COLUMN payments.subscriptions.pending_version IS 'The version of its plan it moves to at its next renewal (migrate_plan_version).';
COMMENT ON COLUMN payments.subscriptions.cancel_at IS
    'When it is canceled (as Stripe''s cancel_at; create_subscription, set_subscription_cancel_at): it grants nothing from then on, and run_billing ends it then, with its usage invoiced.';
COMMENT ON COLUMN payments.subscriptions.missing_payment_method IS
    'What the end of its trial does when it has no payment method (Stripe''s trial_settings.end_behavior): create_invoice (invoice it anyway: past_due when it fails), pause or cancel.';
COMMENT ON COLUMN payments.subscriptions.cancel_at_period_end IS 'It ends when the current period does (cancel_subscription with at_period_end).';
SELECT pg_catalog.pg_extension_config_dump('payments.subscriptions', '');

CREATE TABLE payments.customer_currencies (
    customer_id text COLLATE "C" PRIMARY KEY CHECK (length(customer_id) BETWEEN 1 AND 255),
    currency    text COLLATE "C" NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    fixed_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE payments.customer_currencies IS
    'The currency each customer pays its subscriptions in, fixed by its first one (create_subscription): its key orders a customer''s first two subscriptions made at once, on one node or on Citus (beside the customer, by customer_id).';
SELECT pg_catalog.pg_extension_config_dump('payments.customer_currencies', '');

CREATE TABLE payments.subscription_events (
    customer_id     text COLLATE "C" NOT NULL,
    subscription_id text COLLATE "C" NOT NULL,
    seq             bigint NOT NULL CHECK (seq > 0),
    from_status     text,
    to_status       text NOT NULL,
    reason          text NOT NULL,
    data            jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, subscription_id, seq),
    FOREIGN KEY (customer_id, subscription_id) REFERENCES payments.subscriptions (customer_id, id)
);
COMMENT ON TABLE payments.subscription_events IS
    'Append-only history of every subscription: its creation and every change, in order.';
SELECT pg_catalog.pg_extension_config_dump('payments.subscription_events', '');

CREATE TABLE payments.feature_usage (
    customer_id     text COLLATE "C" NOT NULL,
    subscription_id text COLLATE "C" NOT NULL,
    feature         text COLLATE "C" NOT NULL,
    period_start    timestamptz NOT NULL,
    used            numeric NOT NULL CHECK (used >= 0),
    slot            smallint NOT NULL CHECK (slot BETWEEN 0 AND 31),
    allowance       numeric,
    basis           numeric,
    CONSTRAINT feature_usage_pkey PRIMARY KEY (customer_id, subscription_id, feature, period_start, slot),
    FOREIGN KEY (customer_id, subscription_id) REFERENCES payments.subscriptions (customer_id, id),
    CONSTRAINT feature_usage_within_allowance CHECK (used <= allowance)
);
COMMENT ON TABLE payments.feature_usage IS
    'How much of each feature a subscription consumed in each period, in up to 32 slots (what it used is their sum; a slot is made when a server process first counts there), so that one customer''s concurrent consume calls rarely wait on each other. A limited feature''s limit is split among the slots (escrow): each slot may count up to its allowance, and a call that finds no slot with room locks them all, then refuses or moves what is left to where it is needed; the slots'' allowances always add up to the limit, so the limit is never exceeded.';
COMMENT ON COLUMN payments.feature_usage.slot IS 'Which of the quota''s up to 32 rows this is (a call tries its server process''s slot first).';
COMMENT ON COLUMN payments.feature_usage.allowance IS 'How much this slot may count in all (used included); NULL: unlimited, or not yet split.';
COMMENT ON COLUMN payments.feature_usage.basis IS 'The limit the allowances were split from: a plan change with another limit splits them again.';

CREATE TABLE payments.consumptions (
    customer_id     text COLLATE "C" NOT NULL,
    request_id      text COLLATE "C" NOT NULL CHECK (length(request_id) BETWEEN 1 AND 255),
    feature         text COLLATE "C" NOT NULL,
    quantity        numeric NOT NULL,
    subscription_id text COLLATE "C",
    allowed         boolean NOT NULL,
    remaining       numeric,
    reason          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    consumed_at     timestamptz NOT NULL,
    credits_unit    text COLLATE "C",
    credits_drawn   bigint CHECK (credits_drawn > 0),
    CONSTRAINT consumptions_credits_whole CHECK ((credits_unit IS NULL) = (credits_drawn IS NULL)),
    PRIMARY KEY (customer_id, request_id)
);
COMMENT ON TABLE payments.consumptions IS
    'Every consume call''s answer, once per (customer, request_id), allowed or refused: a retried request gets the same answer and consumes nothing more. Append-only.';
COMMENT ON COLUMN payments.consumptions.remaining IS 'What was left of the limit after this call (NULL: unlimited).';
COMMENT ON COLUMN payments.consumptions.reason IS
    'Why it was refused: no_entitlement (no active subscription grants the feature), limit_exceeded (past the limit, and credits cannot pay for the rest) or spend_limit_reached (credits could, but the customer''s budget has no room).';
COMMENT ON COLUMN payments.consumptions.consumed_at IS 'The at of the call: the period its quota and its spend count in.';
COMMENT ON COLUMN payments.consumptions.credits_unit IS 'The unit of the credits that paid for what passed the limit (a credit unit, or the plan''s currency at its feature price); NULL: none.';
COMMENT ON COLUMN payments.consumptions.credits_drawn IS 'How much of them, in the unit''s smallest steps (ledger transfers of kind consumption, reference the request id).';
SELECT pg_catalog.pg_extension_config_dump('payments.consumptions', '');

CREATE TABLE payments.meter_claims (
    customer_id     text COLLATE "C" NOT NULL,
    meter           text COLLATE "C" NOT NULL,
    subscription_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (customer_id, meter),
    FOREIGN KEY (customer_id, subscription_id) REFERENCES payments.subscriptions (customer_id, id)
);
COMMENT ON TABLE payments.meter_claims IS
    'Which subscription of a customer bills each meter''s usage: one, so an event is never billed twice. Claimed when a subscription (or a plan change) starts pricing the meter, released when it stops or ends; a second live subscription pricing the meter is refused (PM206).';
SELECT pg_catalog.pg_extension_config_dump('payments.meter_claims', '');

CREATE TYPE payments.subscription_result AS (
    id                   text,
    customer_id          text,
    plan                 text,
    status               text,
    payment_method       text,
    current_period_start timestamptz,
    current_period_end   timestamptz,
    trial_end            timestamptz,
    cancel_at_period_end boolean,
    canceled_at          timestamptz,
    created_at           timestamptz,
    updated_at           timestamptz,
    billing_error        jsonb,
    outcome              text,
    quantity             integer,
    currency             text,
    plan_version         integer,
    cancel_at            timestamptz,
    missing_payment_method text
);
