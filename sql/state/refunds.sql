-- payments: the tables of refunds (its functions: sql/code/refunds.sql). Created once; a
-- release changes them in its delta (sql/delta/).

CREATE TABLE payments.refunds (
    id                 text COLLATE "C" NOT NULL,
    customer_id        text COLLATE "C" NOT NULL,
    payment_id         text COLLATE "C" NOT NULL,
    amount_minor       bigint NOT NULL CHECK (amount_minor > 0),
    currency           text COLLATE "C" NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status             text COLLATE "C" NOT NULL CHECK (payments._is_allowed('refund_status', status)),
    reason             text CHECK (payments._is_allowed('refund_reason', reason)),
    idempotency_key    text COLLATE "C" CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    fingerprint        bytea,
    provider           text COLLATE "C" NOT NULL,
    provider_refund_id text COLLATE "C" CHECK (length(provider_refund_id) <= 255),
    failure_reason     text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, id),
    FOREIGN KEY (customer_id, payment_id) REFERENCES payments.payments (customer_id, id),
    CONSTRAINT refunds_idempotency_key UNIQUE (customer_id, idempotency_key),
    CHECK ((idempotency_key IS NULL) = (fingerprint IS NULL))
);
CREATE UNIQUE INDEX refunds_provider_refund_idx ON payments.refunds (customer_id, provider, provider_refund_id);
CREATE INDEX refunds_payment_idx ON payments.refunds (customer_id, payment_id);
-- get_refund by id alone: one index probe here, one per shard on Citus (refunds are rare next to payments).
CREATE INDEX refunds_id_idx ON payments.refunds (id);
COMMENT ON TABLE payments.refunds IS
    'Refunds of succeeded payments, from create_refund (with its idempotency key) or made at the provider directly and learnt from its webhooks. Beside their payment (on Citus, by customer_id). The sum of a payment''s pending and succeeded refunds never exceeds what it captured.';
COMMENT ON COLUMN payments.refunds.id IS 'rfd_ + 26-character time-sortable id.';
COMMENT ON COLUMN payments.refunds.amount_minor IS 'The refunded amount in the currency''s minor unit.';
COMMENT ON COLUMN payments.refunds.currency IS 'The payment''s currency.';
COMMENT ON COLUMN payments.refunds.status IS 'pending until the provider settles it: succeeded, failed or canceled. A succeeded refund can still fail (the bank returned it).';
COMMENT ON COLUMN payments.refunds.reason IS 'Stripe''s refund reason: duplicate, fraudulent, requested_by_customer (expired_uncaptured_charge only from the provider).';
COMMENT ON COLUMN payments.refunds.idempotency_key IS 'The create_refund key, per customer; NULL for a refund made at the provider directly.';
COMMENT ON COLUMN payments.refunds.fingerprint IS 'sha256 of the call''s parameters (payment, amount, reason); a replay with other parameters is refused (PM201).';
COMMENT ON COLUMN payments.refunds.provider_refund_id IS 'The provider''s refund id (re_…), once it answered.';
COMMENT ON COLUMN payments.refunds.failure_reason IS 'Why the provider could not refund (its failure_reason, or its refusal''s message).';
SELECT pg_catalog.pg_extension_config_dump('payments.refunds', '');

-- refund_details' columns plus what the call did; keep the two in step.
CREATE TYPE payments.refund_result AS (
    id                 text,
    customer_id        text,
    payment_id         text,
    amount             numeric,
    amount_minor       bigint,
    currency           text,
    status             text,
    reason             text,
    provider           text,
    provider_refund_id text,
    failure_reason     text,
    created_at         timestamptz,
    updated_at         timestamptz,
    outcome            text
);
