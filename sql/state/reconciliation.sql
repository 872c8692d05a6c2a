-- payments: the tables of reconciliation (its functions: sql/code/reconciliation.sql). Created once; a
-- release changes them in its delta (sql/delta/).

CREATE TABLE payments.provider_snapshots (
    provider            text COLLATE "C" NOT NULL,
    provider_payment_id text COLLATE "C" NOT NULL,
    object_type         text COLLATE "C" NOT NULL CHECK (object_type IN ('payment', 'refund')),
    object_id           text COLLATE "C" NOT NULL CHECK (length(object_id) <= 255),
    status              text,
    amount_minor        bigint,
    currency            text,
    created             timestamptz NOT NULL,
    object              jsonb NOT NULL,
    fetched_at          timestamptz NOT NULL DEFAULT now(),
    -- By provider payment id: on Citus beside provider_payments, which finds our payment.
    CONSTRAINT provider_snapshots_pkey PRIMARY KEY (provider_payment_id, provider, object_type, object_id)
);
CREATE INDEX provider_snapshots_created_idx ON payments.provider_snapshots (provider, created);
COMMENT ON TABLE payments.provider_snapshots IS
    'The provider''s payments and refunds (Stripe: PaymentIntents and Refunds) as its list endpoints last showed them, pulled by the gateway for reconciliation (payments-gateway reconcile, POST /v1/reconciliations). A later pull replaces an object''s row.';
COMMENT ON COLUMN payments.provider_snapshots.provider_payment_id IS 'The provider''s payment: the object itself, or the one a refund refunds.';
COMMENT ON COLUMN payments.provider_snapshots.object_type IS 'What the object is: payment or refund.';
COMMENT ON COLUMN payments.provider_snapshots.status IS 'Our word for the object''s status (a payment status, or a refund status); NULL when it reports none.';
COMMENT ON COLUMN payments.provider_snapshots.created IS 'When the provider created the object: what the window of a report is about.';
COMMENT ON COLUMN payments.provider_snapshots.object IS 'The object as the provider returned it, without the fields that are never stored (Stripe: a PaymentIntent''s client_secret).';
SELECT pg_catalog.pg_extension_config_dump('payments.provider_snapshots', '');

CREATE TABLE payments.reconciliation_runs (
    id            text COLLATE "C" PRIMARY KEY,
    provider      text NOT NULL,
    window_from   timestamptz NOT NULL,
    window_to     timestamptz NOT NULL,
    repair        boolean NOT NULL,
    disagreements jsonb NOT NULL,
    repaired      integer NOT NULL CHECK (repaired >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (window_from < window_to)
);
COMMENT ON TABLE payments.reconciliation_runs IS
    'Every reconcile run: its window, what it found (the report as JSON) and how many disagreements it repaired from the provider''s objects. Append-only.';
SELECT pg_catalog.pg_extension_config_dump('payments.reconciliation_runs', '');
