-- payments 0.3.0 -> 0.4.0: what changes in state (tables, types, indexes) and
-- what an upgrade must drop, by hand; the generated upgrade script runs every
-- replaceable statement of sql/code/ after it.

-- Providers' wire formats moved out of SQL (payments_core::provider): the functions
-- that read Stripe's JSON are gone, replaced by _provider_event and _provider_object.
DROP FUNCTION payments._parse_stripe_event(bytea);
DROP FUNCTION payments._stripe_event_status(text);
DROP FUNCTION payments._stripe_event_subject(text);
DROP FUNCTION payments._stripe_refund_status(text);
DROP FUNCTION payments._stripe_intent_status(text, boolean);
DROP FUNCTION payments._is_json_object(bytea);
DROP FUNCTION payments._apply_money_webhook(text, text, text, text, jsonb);
-- These now take an evidence record (their parameter is renamed, which CREATE OR REPLACE cannot do).
DROP FUNCTION payments._evidence_problem_for(text, text, text, jsonb, text, text);
DROP FUNCTION payments._observed(jsonb);
DROP FUNCTION payments._apply_webhook(text, text, text, timestamptz, jsonb);
DROP FUNCTION payments._apply_refund_object(payments.payments, text, jsonb, text, text);
DROP FUNCTION payments._apply_dispute_object(payments.payments, jsonb, text, text);

-- Snapshots name what an object is in our words (payment, refund), not Stripe's.
ALTER TABLE payments.provider_snapshots DROP CONSTRAINT provider_snapshots_object_type_check;
UPDATE payments.provider_snapshots SET object_type = 'payment' WHERE object_type = 'payment_intent';
ALTER TABLE payments.provider_snapshots ADD CONSTRAINT provider_snapshots_object_type_check
    CHECK (object_type IN ('payment', 'refund'));

-- A usage event's problem takes the meter's fields (a whole row cannot cross to a Citus worker).
DROP FUNCTION payments._usage_event_problem(payments.meters, numeric, timestamptz, jsonb, timestamptz);

-- A quota in up to 32 slots with allowances (escrow): one customer's consume calls stop waiting on
-- one row. What each period used so far stays in slot 0, not yet split.
ALTER TABLE payments.feature_usage ADD COLUMN slot smallint NOT NULL DEFAULT 0 CHECK (slot BETWEEN 0 AND 31),
    ADD COLUMN allowance numeric, ADD COLUMN basis numeric,
    ADD CONSTRAINT feature_usage_within_allowance CHECK (used <= allowance);
ALTER TABLE payments.feature_usage ALTER COLUMN slot DROP DEFAULT;
ALTER TABLE payments.feature_usage DROP CONSTRAINT feature_usage_pkey,
    ADD CONSTRAINT feature_usage_pkey PRIMARY KEY (customer_id, subscription_id, feature, period_start, slot);

-- A payment's idempotency key lives in its own row: one row and two index entries less per
-- payment. The keys move over; the table goes (as a member of the extension, and from the
-- tables pg_dump keeps the rows of).
ALTER TABLE payments.payments
    ADD COLUMN idempotency_key text COLLATE "C" CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    ADD COLUMN request_fingerprint bytea,
    ADD CONSTRAINT payments_key_has_fingerprint CHECK ((idempotency_key IS NULL) = (request_fingerprint IS NULL));
UPDATE payments.payments p SET idempotency_key = k.key, request_fingerprint = k.fingerprint
FROM payments.idempotency_keys k
WHERE k.customer_id = p.customer_id AND k.payment_id = p.id;
ALTER TABLE payments.payments ADD CONSTRAINT payments_idempotency_key UNIQUE (customer_id, idempotency_key);
-- On one node a payment is found by id through this index (no route is written): with the
-- customer in it, without visiting the payment's row.
DROP INDEX payments.payments_id_idx;
CREATE INDEX payments_id_idx ON payments.payments (id DESC) INCLUDE (customer_id);
ALTER EXTENSION payments DROP TABLE payments.idempotency_keys;
DROP TABLE payments.idempotency_keys;

-- The double-entry ledger and prepaid credits (sql/state/ledger.sql).
CREATE TABLE payments.ledger_transfers (
    customer_id         text COLLATE "C" NOT NULL,
    id                  text COLLATE "C" NOT NULL,
    kind                text COLLATE "C" NOT NULL CHECK (payments._is_allowed('transfer_kind', kind)),
    reference           text COLLATE "C" NOT NULL,
    debit_account       text COLLATE "C" NOT NULL CHECK (payments._is_allowed('ledger_account', debit_account)),
    credit_account      text COLLATE "C" NOT NULL CHECK (payments._is_allowed('ledger_account', credit_account)),
    unit                text COLLATE "C" NOT NULL CHECK (unit ~ '^([A-Z]{3}|[a-z][a-z0-9_]{0,31})$'),
    amount              bigint NOT NULL CHECK (amount > 0),
    grant_id            text COLLATE "C",
    idempotency_key     text COLLATE "C" CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_fingerprint bytea,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_transfers_two_accounts CHECK (debit_account <> credit_account),
    CONSTRAINT ledger_transfers_credits_name_their_grant
        CHECK ((grant_id IS NOT NULL) = ('credits' IN (debit_account, credit_account))),
    CONSTRAINT ledger_transfers_key_has_fingerprint CHECK ((idempotency_key IS NULL) = (request_fingerprint IS NULL)),
    PRIMARY KEY (customer_id, id),
    CONSTRAINT ledger_transfers_idempotency_key UNIQUE (customer_id, idempotency_key)
);
CREATE INDEX ledger_transfers_grant_idx ON payments.ledger_transfers (customer_id, grant_id) WHERE grant_id IS NOT NULL;
CREATE INDEX ledger_transfers_reference_idx ON payments.ledger_transfers (customer_id, reference);
SELECT pg_catalog.pg_extension_config_dump('payments.ledger_transfers', '');
CREATE TABLE payments.credit_grants (
    customer_id text COLLATE "C" NOT NULL,
    id          text COLLATE "C" NOT NULL,
    unit        text COLLATE "C" NOT NULL CHECK (unit ~ '^([A-Z]{3}|[a-z][a-z0-9_]{0,31})$'),
    amount      bigint NOT NULL CHECK (amount > 0),
    applies_to  text COLLATE "C" CHECK (length(applies_to) BETWEEN 1 AND 255),
    priority    integer NOT NULL DEFAULT 0,
    expires_at  timestamptz,
    expired_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    remaining   bigint NOT NULL DEFAULT 0 CHECK (remaining >= 0),
    expiry_noticed_at timestamptz,
    CONSTRAINT credit_grants_remaining_within CHECK (remaining <= amount),
    PRIMARY KEY (customer_id, id)
);
CREATE INDEX credit_grants_expiry_idx ON payments.credit_grants (expires_at) WHERE expired_at IS NULL;
SELECT pg_catalog.pg_extension_config_dump('payments.credit_grants', '');
CREATE TABLE payments.wallets (
    customer_id         text COLLATE "C" NOT NULL,
    unit                text COLLATE "C" NOT NULL CHECK (unit ~ '^([A-Z]{3}|[a-z][a-z0-9_]{0,31})$'),
    created_at          timestamptz NOT NULL DEFAULT now(),
    auto_top_up_below   bigint CHECK (auto_top_up_below >= 0),
    auto_top_up_amount  bigint CHECK (auto_top_up_amount > 0),
    auto_top_up_method  text CHECK (length(auto_top_up_method) BETWEEN 1 AND 255),
    auto_top_up_payment text COLLATE "C",
    spend_limit         bigint CHECK (spend_limit >= 0),
    spend_period        text COLLATE "C" CHECK (payments._is_allowed('billing_interval', spend_period)),
    low_balance_below   bigint CHECK (low_balance_below > 0),
    CONSTRAINT wallets_spend_limit_whole CHECK ((spend_limit IS NULL) = (spend_period IS NULL)),
    CONSTRAINT wallets_auto_top_up_whole CHECK ((auto_top_up_below IS NULL) = (auto_top_up_amount IS NULL)
                                                AND (auto_top_up_below IS NULL) = (auto_top_up_method IS NULL)),
    PRIMARY KEY (customer_id, unit)
);
SELECT pg_catalog.pg_extension_config_dump('payments.wallets', '');
CREATE TABLE payments.holds (
    customer_id         text COLLATE "C" NOT NULL,
    id                  text COLLATE "C" NOT NULL,
    unit                text COLLATE "C" NOT NULL CHECK (unit ~ '^([A-Z]{3}|[a-z][a-z0-9_]{0,31})$'),
    amount              bigint NOT NULL CHECK (amount > 0),
    status              text COLLATE "C" NOT NULL CHECK (payments._is_allowed('hold_status', status)),
    available           bigint NOT NULL CHECK (available >= 0),
    settled_amount      bigint CHECK (settled_amount >= 0),
    request_id          text COLLATE "C" NOT NULL CHECK (length(request_id) BETWEEN 1 AND 255),
    request_fingerprint bytea NOT NULL,
    expires_at          timestamptz NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    closed_at           timestamptz,
    refusal             text COLLATE "C" CHECK (payments._is_allowed('hold_refusal', refusal)),
    CONSTRAINT holds_settled_within CHECK (settled_amount <= amount),
    CONSTRAINT holds_refused_for_a_reason CHECK ((status = 'refused') = (refusal IS NOT NULL)),
    PRIMARY KEY (customer_id, id),
    CONSTRAINT holds_request_id UNIQUE (customer_id, request_id)
);
CREATE INDEX holds_id_idx ON payments.holds (id);
CREATE INDEX holds_open_idx ON payments.holds (expires_at) WHERE status = 'held';
SELECT pg_catalog.pg_extension_config_dump('payments.holds', '');
CREATE TABLE payments.top_ups (
    customer_id text COLLATE "C" NOT NULL,
    payment_id  text COLLATE "C" NOT NULL,
    unit        text COLLATE "C" NOT NULL CHECK (unit ~ '^([A-Z]{3}|[a-z][a-z0-9_]{0,31})$'),
    amount      bigint NOT NULL CHECK (amount > 0),
    applies_to  text COLLATE "C" CHECK (length(applies_to) BETWEEN 1 AND 255),
    priority    integer NOT NULL DEFAULT 0,
    expires_at  timestamptz,
    grant_id    text COLLATE "C",
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, payment_id),
    FOREIGN KEY (customer_id, payment_id) REFERENCES payments.payments (customer_id, id)
);
SELECT pg_catalog.pg_extension_config_dump('payments.top_ups', '');

-- What events are about comes from one registry (vocabulary::EVENT_OBJECTS), credits and budgets among it.
ALTER TABLE payments.outbox_events DROP CONSTRAINT outbox_events_object_check,
    ADD CONSTRAINT outbox_events_object_check CHECK (payments._is_allowed('event_object', object));

-- consume pays with credits for what passes a plan's limit: a plan's feature prices, and what
-- each answer drew; its period is the call's at. (A new column checked on existing plans is
-- refused while SQL-bodied functions use the plans row type: they are made again below.)
DROP FUNCTION payments._period_end(payments.plans, timestamptz, integer);
DROP FUNCTION payments._same_cycle(payments.plans, payments.plans);
ALTER TABLE payments.plans
    ADD COLUMN feature_prices jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(feature_prices) = 'object'),
    ADD COLUMN features_per_seat boolean NOT NULL DEFAULT false;
ALTER TABLE payments.consumptions
    ADD COLUMN consumed_at timestamptz,
    ADD COLUMN credits_unit text COLLATE "C",
    ADD COLUMN credits_drawn bigint CHECK (credits_drawn > 0),
    ADD CONSTRAINT consumptions_credits_whole CHECK ((credits_unit IS NULL) = (credits_drawn IS NULL));
ALTER TABLE payments.consumptions DISABLE TRIGGER consumptions_append_only;
UPDATE payments.consumptions SET consumed_at = created_at;
ALTER TABLE payments.consumptions ENABLE TRIGGER consumptions_append_only;
ALTER TABLE payments.consumptions ALTER COLUMN consumed_at SET NOT NULL;
DROP FUNCTION payments.consume(text, text, numeric, text, timestamptz);
DROP FUNCTION payments._replayed_consumption(payments.consumptions, text, numeric);
DROP FUNCTION payments.create_plan(text, text, numeric, text, integer, integer, jsonb, text, jsonb, numeric);

-- Invoices apply prepaid credits and the customer's balance before they charge, line by line.
ALTER TABLE payments.invoice_lines DROP CONSTRAINT invoice_lines_kind_check,
    ADD CONSTRAINT invoice_lines_kind_check CHECK (payments._is_allowed('invoice_line_kind', kind));
DROP FUNCTION payments._issue_invoice(payments.subscriptions, text, text, jsonb, bigint, timestamptz, timestamptz, timestamptz);

-- What a downgrade left moves from the subscription (lost when it ended) into the customer's
-- balance in the ledger, which every later invoice of the customer draws from.
INSERT INTO payments.ledger_transfers (customer_id, id, kind, reference, debit_account, credit_account, unit, amount)
SELECT s.customer_id, payments._new_id('tr'), 'downgrade_credit', s.id, 'revenue', 'balance', p.currency, s.credit_minor
FROM payments.subscriptions s JOIN payments.plans p ON p.code = s.plan
WHERE s.credit_minor > 0;
ALTER TABLE payments.subscriptions DROP COLUMN credit_minor;

-- Coupons, discounts and tax rates (sql/state/coupons_and_taxes.sql).
CREATE TABLE payments.coupons (
    code                text COLLATE "C" PRIMARY KEY CHECK (code ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    name                text CHECK (length(name) BETWEEN 1 AND 255),
    percent_off         numeric CHECK (percent_off > 0 AND percent_off <= 100 AND scale(percent_off) <= 4),
    amount_off_minor    bigint CHECK (amount_off_minor > 0),
    currency            text COLLATE "C" CHECK (currency ~ '^[A-Z]{3}$'),
    duration            text COLLATE "C" NOT NULL CHECK (payments._is_allowed('coupon_duration', duration)),
    duration_in_periods integer CHECK (duration_in_periods BETWEEN 1 AND 1200),
    max_redemptions     integer CHECK (max_redemptions > 0),
    times_redeemed      integer NOT NULL DEFAULT 0 CHECK (times_redeemed >= 0),
    redeem_by           timestamptz,
    applies_to_plans    text[] COLLATE "C" CHECK (cardinality(applies_to_plans) BETWEEN 1 AND 100),
    created_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT coupons_one_discount CHECK ((percent_off IS NULL) <> (amount_off_minor IS NULL)),
    CONSTRAINT coupons_amount_has_currency CHECK ((amount_off_minor IS NULL) = (currency IS NULL)),
    CONSTRAINT coupons_repeating_has_periods CHECK ((duration = 'repeating') = (duration_in_periods IS NOT NULL)),
    CONSTRAINT coupons_redeemed_within CHECK (times_redeemed <= max_redemptions)
);
SELECT pg_catalog.pg_extension_config_dump('payments.coupons', '');
CREATE TABLE payments.promotion_codes (
    code             text COLLATE "C" PRIMARY KEY CHECK (code ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    coupon           text COLLATE "C" NOT NULL,
    only_customer    text COLLATE "C" CHECK (length(only_customer) BETWEEN 1 AND 255),
    max_redemptions  integer CHECK (max_redemptions > 0),
    times_redeemed   integer NOT NULL DEFAULT 0 CHECK (times_redeemed >= 0),
    redeem_by        timestamptz,
    active           boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT promotion_codes_redeemed_within CHECK (times_redeemed <= max_redemptions)
);
SELECT pg_catalog.pg_extension_config_dump('payments.promotion_codes', '');
CREATE TABLE payments.discounts (
    customer_id     text COLLATE "C" NOT NULL,
    id              text COLLATE "C" NOT NULL,
    subscription_id text COLLATE "C" NOT NULL,
    coupon          text COLLATE "C" NOT NULL,
    promotion_code  text COLLATE "C",
    first_period    integer NOT NULL CHECK (first_period >= 1),
    last_period     integer,
    applied_at      timestamptz NOT NULL,
    ended_at        timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT discounts_periods_in_order CHECK (last_period >= first_period),
    PRIMARY KEY (customer_id, id),
    CONSTRAINT discounts_once_per_subscription UNIQUE (customer_id, subscription_id, coupon),
    FOREIGN KEY (customer_id, subscription_id) REFERENCES payments.subscriptions (customer_id, id)
);
SELECT pg_catalog.pg_extension_config_dump('payments.discounts', '');
CREATE TABLE payments.tax_rates (
    code         text COLLATE "C" PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    display_name text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 100),
    percentage   numeric NOT NULL CHECK (percentage >= 0 AND percentage <= 100 AND scale(percentage) <= 4),
    inclusive    boolean NOT NULL,
    jurisdiction text CHECK (length(jurisdiction) BETWEEN 1 AND 100),
    created_at   timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('payments.tax_rates', '');
CREATE TABLE payments.customer_taxes (
    customer_id text COLLATE "C" PRIMARY KEY CHECK (length(customer_id) BETWEEN 1 AND 255),
    tax_rates   text[] COLLATE "C" NOT NULL DEFAULT '{}' CHECK (cardinality(tax_rates) <= 5),
    tax_exempt  boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('payments.customer_taxes', '');
CREATE TABLE payments.invoice_taxes (
    customer_id  text COLLATE "C" NOT NULL,
    invoice_id   text COLLATE "C" NOT NULL,
    tax_rate     text COLLATE "C" NOT NULL,
    display_name text NOT NULL,
    percentage   numeric NOT NULL,
    inclusive    boolean NOT NULL,
    amount_minor bigint NOT NULL,
    PRIMARY KEY (customer_id, invoice_id, tax_rate),
    FOREIGN KEY (customer_id, invoice_id) REFERENCES payments.invoices (customer_id, id)
);
SELECT pg_catalog.pg_extension_config_dump('payments.invoice_taxes', '');
ALTER TABLE payments.invoices ADD COLUMN coupon text COLLATE "C";
ALTER TABLE payments.invoice_lines
    ADD COLUMN discount_minor bigint NOT NULL DEFAULT 0 CHECK (discount_minor >= 0),
    ADD COLUMN tax_minor bigint NOT NULL DEFAULT 0;
-- An invoice's lines say what their discount and taxes were (the result type changed).
DROP FUNCTION payments.list_invoice_lines(text);

-- Credit notes (sql/state/credit_notes.sql), numbered in a series of their own.
DROP FUNCTION payments._next_invoice_number(timestamptz);
ALTER TABLE payments.invoice_numbers ADD COLUMN series text COLLATE "C" NOT NULL DEFAULT 'invoice'
    CHECK (series IN ('invoice', 'credit_note'));
ALTER TABLE payments.invoice_numbers DROP CONSTRAINT invoice_numbers_pkey,
    ADD CONSTRAINT invoice_numbers_pkey PRIMARY KEY (series, year);
ALTER TABLE payments.invoices ADD COLUMN credited_minor bigint NOT NULL DEFAULT 0 CHECK (credited_minor >= 0);
CREATE TABLE payments.credit_notes (
    customer_id         text COLLATE "C" NOT NULL,
    id                  text COLLATE "C" NOT NULL,
    invoice_id          text COLLATE "C" NOT NULL,
    number              text COLLATE "C" NOT NULL,
    amount_minor        bigint NOT NULL CHECK (amount_minor > 0),
    currency            text COLLATE "C" NOT NULL,
    reason              text COLLATE "C" CHECK (payments._is_allowed('credit_note_reason', reason)),
    method              text COLLATE "C" NOT NULL CHECK (payments._is_allowed('credit_note_method', method)),
    refund_id           text COLLATE "C",
    idempotency_key     text COLLATE "C" CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_fingerprint bytea,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT credit_notes_refund_named CHECK ((method = 'refund') = (refund_id IS NOT NULL)),
    CONSTRAINT credit_notes_key_has_fingerprint CHECK ((idempotency_key IS NULL) = (request_fingerprint IS NULL)),
    PRIMARY KEY (customer_id, id),
    CONSTRAINT credit_notes_idempotency_key UNIQUE (customer_id, idempotency_key),
    CONSTRAINT credit_notes_number UNIQUE (customer_id, number),
    FOREIGN KEY (customer_id, invoice_id) REFERENCES payments.invoices (customer_id, id)
);
CREATE INDEX credit_notes_invoice_idx ON payments.credit_notes (customer_id, invoice_id);
CREATE INDEX credit_notes_id_idx ON payments.credit_notes (id);
SELECT pg_catalog.pg_extension_config_dump('payments.credit_notes', '');

-- Seats: a subscription's quantity (each period's fee is the plan's amount times it).
ALTER TABLE payments.subscriptions
    ADD COLUMN quantity integer NOT NULL DEFAULT 1 CHECK (quantity BETWEEN 1 AND 1000000);
ALTER TYPE payments.subscription_result ADD ATTRIBUTE quantity integer;
DROP FUNCTION payments.create_subscription(text, text, text, text, integer, timestamptz);

-- Draft invoices: a renewal waits the draft window (default 1 hour) for invoice items and late
-- usage, unnumbered and uncharged.
ALTER TABLE payments.billing_settings
    ADD COLUMN draft_window interval NOT NULL DEFAULT '1 hour'
        CHECK (draft_window BETWEEN interval '0' AND interval '3 days');
ALTER TABLE payments.invoices ALTER COLUMN number DROP NOT NULL,
    ADD COLUMN finalize_at timestamptz, ADD COLUMN draft jsonb,
    ADD CONSTRAINT invoices_numbered CHECK (CASE WHEN status = 'draft' THEN number IS NULL ELSE number IS NOT NULL OR status = 'void' END),
    ADD CONSTRAINT invoices_draft_finalized CHECK (status <> 'draft' OR (finalize_at IS NOT NULL AND draft IS NOT NULL));
CREATE INDEX invoices_draft_idx ON payments.invoices (finalize_at) WHERE status = 'draft';
DROP FUNCTION payments._invoice_period(payments.subscriptions, payments.plans, payments.plans, timestamptz, timestamptz, timestamptz);

CREATE TABLE payments.invoice_items (
    customer_id         text COLLATE "C" NOT NULL,
    id                  text COLLATE "C" NOT NULL,
    invoice_id          text COLLATE "C" NOT NULL,
    description         text NOT NULL CHECK (length(description) BETWEEN 1 AND 500),
    quantity            integer NOT NULL CHECK (quantity BETWEEN 1 AND 1000000),
    unit_amount_minor   bigint NOT NULL CHECK (unit_amount_minor > 0),
    idempotency_key     text COLLATE "C" NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_fingerprint bytea NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, id),
    CONSTRAINT invoice_items_idempotency_key UNIQUE (customer_id, idempotency_key),
    FOREIGN KEY (customer_id, invoice_id) REFERENCES payments.invoices (customer_id, id)
);
CREATE INDEX invoice_items_invoice_idx ON payments.invoice_items (customer_id, invoice_id);
COMMENT ON TABLE payments.invoice_items IS
    'One-off charges added to a draft invoice (add_invoice_item, as Stripe''s invoice items): each is a line of the invoice when it is finalized, discounted and taxed as the others. Beside the customer (on Citus, by customer_id). Append-only.';
COMMENT ON COLUMN payments.invoice_items.id IS 'ii_ + 26-character time-sortable id.';
COMMENT ON COLUMN payments.invoice_items.unit_amount_minor IS 'The price of one, in minor units of the invoice''s currency; the line is it times quantity.';
COMMENT ON COLUMN payments.invoice_items.idempotency_key IS 'The caller''s key: the same key with the same parameters replays, with others PM201.';
SELECT pg_catalog.pg_extension_config_dump('payments.invoice_items', '');

-- Plan versions and prices in several currencies: a subscription keeps the version and currency
-- it was billed at. What exists is version 1, in the plan's currency.
ALTER TABLE payments.plans
    ADD COLUMN version integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    ADD COLUMN currency_options jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(currency_options) = 'object');
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
INSERT INTO payments.plan_versions (plan, version, amount_minor, metered, feature_prices, usage_threshold_minor,
                                    currency_options, created_at)
SELECT p.code, 1, p.amount_minor, p.metered, p.feature_prices, p.usage_threshold_minor, '{}', p.created_at
FROM payments.plans p;
ALTER TABLE payments.subscriptions
    ADD COLUMN currency text COLLATE "C" CHECK (currency ~ '^[A-Z]{3}$'),
    ADD COLUMN plan_version integer NOT NULL DEFAULT 1 CHECK (plan_version >= 1),
    ADD COLUMN pending_version integer CHECK (pending_version >= 1);
UPDATE payments.subscriptions s SET currency = p.currency FROM payments.plans p WHERE p.code = s.plan;
ALTER TABLE payments.subscriptions ALTER COLUMN currency SET NOT NULL;
ALTER TYPE payments.subscription_result ADD ATTRIBUTE currency text, ADD ATTRIBUTE plan_version integer;

-- Subscription options: cancel at a given time, and what a trial's end does without a payment method.
ALTER TABLE payments.subscriptions ADD COLUMN cancel_at timestamptz,
    ADD COLUMN missing_payment_method text COLLATE "C" NOT NULL DEFAULT 'create_invoice'
        CHECK (payments._is_allowed('missing_payment_method', missing_payment_method));
ALTER TYPE payments.subscription_result ADD ATTRIBUTE cancel_at timestamptz, ADD ATTRIBUTE missing_payment_method text;

-- The currency each customer pays in, fixed by its first subscription (one row orders its first two).
CREATE TABLE payments.customer_currencies (
    customer_id text COLLATE "C" PRIMARY KEY CHECK (length(customer_id) BETWEEN 1 AND 255),
    currency    text COLLATE "C" NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    fixed_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE payments.customer_currencies IS
    'The currency each customer pays its subscriptions in, fixed by its first one (create_subscription): its key orders a customer''s first two subscriptions made at once, on one node or on Citus (beside the customer, by customer_id).';
SELECT pg_catalog.pg_extension_config_dump('payments.customer_currencies', '');

INSERT INTO payments.customer_currencies (customer_id, currency, fixed_at)
SELECT DISTINCT ON (s.customer_id) s.customer_id, s.currency, s.created_at
FROM payments.subscriptions s ORDER BY s.customer_id, s.created_at, s.id;

-- A pause takes its time (it may finalize a renewal's draft).
DROP FUNCTION payments.pause_subscription(text);
