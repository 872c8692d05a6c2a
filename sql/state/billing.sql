-- payments: the tables of billing (its functions: sql/code/billing.sql). Created once; a
-- release changes them in its delta (sql/delta/).

CREATE TABLE payments.billing_settings (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    retry_days    integer[] NOT NULL CHECK (cardinality(retry_days) BETWEEN 0 AND 10 AND 0 < ALL (retry_days)),
    final_status  text NOT NULL CHECK (final_status IN ('unpaid', 'canceled')),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    past_due_grace interval NOT NULL CHECK (past_due_grace BETWEEN interval '0' AND interval '60 days'),
    draft_window  interval NOT NULL DEFAULT '1 hour' CHECK (draft_window BETWEEN interval '0' AND interval '3 days')
);
COMMENT ON TABLE payments.billing_settings IS
    'How renewals are invoiced and unpaid ones retried (payments_admin, set_dunning and set_invoice_drafts). No row: the defaults (renewal invoices are drafts for 1 hour; retries after 1, 3 and 5 days, then unpaid; past_due grants its plan for 3 days).';
COMMENT ON COLUMN payments.billing_settings.past_due_grace IS 'How long a past_due subscription still grants its plan (has_active_subscription, entitlements, consume).';
COMMENT ON COLUMN payments.billing_settings.retry_days IS 'Days after each failed attempt before the next: {1,3,5} retries three times.';
COMMENT ON COLUMN payments.billing_settings.draft_window IS
    'How long a renewal invoice stays a draft after its period starts (set_invoice_drafts; default 1 hour, as Stripe''s): add_invoice_item adds to it, and usage recorded late for the period that ended is billed. 0: renewals are finalized at once.';
COMMENT ON COLUMN payments.billing_settings.final_status IS 'What a subscription becomes when the last retry fails: unpaid or canceled.';
SELECT pg_catalog.pg_extension_config_dump('payments.billing_settings', '');

CREATE TABLE payments.invoice_numbers (
    year   integer NOT NULL,
    last   bigint NOT NULL CHECK (last >= 0),
    series text COLLATE "C" NOT NULL DEFAULT 'invoice' CHECK (series IN ('invoice', 'credit_note')),
    PRIMARY KEY (series, year)
);
COMMENT ON TABLE payments.invoice_numbers IS
    'The last number given out each year in each series (invoices, credit notes). Its row is locked by the transaction that numbers, so numbers are gapless and never repeat (a rollback gives its number back).';
SELECT pg_catalog.pg_extension_config_dump('payments.invoice_numbers', '');

CREATE TABLE payments.invoices (
    id              text COLLATE "C" NOT NULL,
    customer_id     text COLLATE "C" NOT NULL,
    subscription_id text COLLATE "C" NOT NULL,
    period_number   integer NOT NULL,
    kind            text NOT NULL DEFAULT 'period' CHECK (kind IN ('period', 'proration', 'threshold', 'final')),
    number          text,
    status          text COLLATE "C" NOT NULL CHECK (payments._is_allowed('invoice_status', status)),
    currency        text COLLATE "C" NOT NULL,
    total_minor     bigint NOT NULL CHECK (total_minor >= 0),
    period_start    timestamptz NOT NULL,
    period_end      timestamptz NOT NULL,
    payment_id      text COLLATE "C",
    attempt_payments text[] COLLATE "C" NOT NULL DEFAULT '{}',
    attempt_count   integer NOT NULL DEFAULT 0 CHECK (attempt_count >= 0),
    attempted_at    timestamptz,
    next_attempt_at timestamptz,
    usage_from      timestamptz,
    usage_to        timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    paid_at         timestamptz,
    coupon          text COLLATE "C",
    credited_minor  bigint NOT NULL DEFAULT 0 CHECK (credited_minor >= 0),
    finalize_at     timestamptz,
    draft           jsonb,
    CONSTRAINT invoices_numbered CHECK (CASE WHEN status = 'draft' THEN number IS NULL ELSE number IS NOT NULL OR status = 'void' END),
    CONSTRAINT invoices_draft_finalized CHECK (status <> 'draft' OR (finalize_at IS NOT NULL AND draft IS NOT NULL)),
    PRIMARY KEY (customer_id, id),
    FOREIGN KEY (customer_id, subscription_id) REFERENCES payments.subscriptions (customer_id, id)
);
-- One period invoice per subscription period: what makes renewals idempotent.
CREATE UNIQUE INDEX invoices_period_idx ON payments.invoices (customer_id, subscription_id, period_number)
    WHERE kind = 'period';
CREATE INDEX invoices_id_idx ON payments.invoices (id);
CREATE INDEX invoices_retry_idx ON payments.invoices (next_attempt_at) WHERE status = 'open';
CREATE INDEX invoices_draft_idx ON payments.invoices (finalize_at) WHERE status = 'draft';
COMMENT ON TABLE payments.invoices IS
    'Invoices of subscription periods: draft (a renewal, for the draft window: it takes invoice items and late usage, has no number and is not charged), open (finalized, numbered, charged), then paid, or left open for dunning; uncollectible when its subscription is canceled (collection stops) or its last attempt failed, void when it should never be paid (an incomplete subscription expired, or a plan change netted it). Beside the customer (on Citus, by customer_id).';
COMMENT ON COLUMN payments.invoices.kind IS 'period: a period''s recurring fee (one per period) and the usage not yet invoiced before it; proration: a plan changed within a period (with the usage under the old plan); threshold: usage that reached the plan''s usage threshold within a period (period_number is that period); final: the usage not yet invoiced when the subscription ended (one attempt).';
COMMENT ON COLUMN payments.invoices.attempted_at IS 'The time (run_billing''s at) of the latest attempt: the next retry is counted from it.';
COMMENT ON COLUMN payments.invoices.usage_from IS 'The usage it bills: [usage_from, usage_to), NULL when none.';
COMMENT ON COLUMN payments.invoices.usage_to IS 'The end (exclusive) of the usage it bills.';
COMMENT ON COLUMN payments.invoices.number IS 'YYYY-NNNNNN, gapless and unique per year in the order invoices were finalized; NULL while a draft.';
COMMENT ON COLUMN payments.invoices.finalize_at IS 'When run_billing finalizes it, if it was made a draft (its period''s start plus the draft window).';
COMMENT ON COLUMN payments.invoices.draft IS
    'What a draft was made of, for its finalization: {"lines": the fee lines, "usage_plan": the plan its usage is priced at}; kept once finalized.';
COMMENT ON COLUMN payments.invoices.payment_id IS 'The payment of the latest attempt, or the one that paid it.';
COMMENT ON COLUMN payments.invoices.attempt_payments IS 'The payment of every attempt, in order: an earlier attempt that succeeds late still pays the invoice, or is refunded when another already did (or the invoice is void).';
COMMENT ON COLUMN payments.invoices.credited_minor IS
    'What its credit notes credited (payments.credit_notes): an open invoice''s amount due is total_minor less it. Never above what the invoice charged before prepaid credits and balance paid part of it (create_credit_note keeps it so).';
COMMENT ON COLUMN payments.invoices.coupon IS 'The coupon whose discount its lines carry (payments.discounts), if any.';
COMMENT ON COLUMN payments.invoices.total_minor IS 'What is due: the lines, less their discounts, plus exclusive taxes, less the prepaid credits and balance applied (never below 0). A draft''s: what it would be when last changed (finalizing sets it).';
COMMENT ON COLUMN payments.invoices.next_attempt_at IS 'When run_billing retries an open invoice whose payment failed; NULL when no retry is due.';
SELECT pg_catalog.pg_extension_config_dump('payments.invoices', '');

CREATE TABLE payments.invoice_lines (
    customer_id  text COLLATE "C" NOT NULL,
    invoice_id   text COLLATE "C" NOT NULL,
    line_number  integer NOT NULL CHECK (line_number > 0),
    kind         text NOT NULL CHECK (payments._is_allowed('invoice_line_kind', kind)),
    description  text NOT NULL,
    quantity     numeric NOT NULL,
    amount_minor bigint NOT NULL,
    discount_minor bigint NOT NULL DEFAULT 0 CHECK (discount_minor >= 0),
    tax_minor    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (customer_id, invoice_id, line_number),
    FOREIGN KEY (customer_id, invoice_id) REFERENCES payments.invoices (customer_id, id)
);
COMMENT ON TABLE payments.invoice_lines IS
    'What an invoice charges for, line by line: the recurring fee, usage, prorations and credits, then what prepaid credits and the customer''s balance paid of it (kinds: SELECT * FROM payments.allowed_values() WHERE kind = ''invoice_line_kind'').';
COMMENT ON COLUMN payments.invoice_lines.amount_minor IS 'The line before its discount (inclusive taxes inside it, exclusive ones not).';
COMMENT ON COLUMN payments.invoice_lines.discount_minor IS 'What the coupon took off it.';
COMMENT ON COLUMN payments.invoice_lines.tax_minor IS 'Its taxes of every rate, on its amount less its discount (negative on a credit).';
SELECT pg_catalog.pg_extension_config_dump('payments.invoice_lines', '');

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
