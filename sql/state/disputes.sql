-- payments: the tables of disputes (its functions: sql/code/disputes.sql). Created once; a
-- release changes them in its delta (sql/delta/).

CREATE TABLE payments.disputes (
    id                  text COLLATE "C" NOT NULL,
    customer_id         text COLLATE "C" NOT NULL,
    payment_id          text COLLATE "C" NOT NULL,
    provider            text COLLATE "C" NOT NULL,
    provider_dispute_id text COLLATE "C" NOT NULL CHECK (length(provider_dispute_id) <= 255),
    amount_minor        bigint NOT NULL CHECK (amount_minor > 0),
    currency            text COLLATE "C" NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status              text COLLATE "C" NOT NULL CHECK (payments._is_allowed('dispute_status', status)),
    reason              text CHECK (length(reason) <= 255),
    evidence_due_by     timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, id),
    FOREIGN KEY (customer_id, payment_id) REFERENCES payments.payments (customer_id, id)
);
CREATE UNIQUE INDEX disputes_provider_dispute_idx ON payments.disputes (customer_id, provider, provider_dispute_id);
CREATE INDEX disputes_payment_idx ON payments.disputes (customer_id, payment_id);
-- get_dispute by id alone, as get_refund.
CREATE INDEX disputes_id_idx ON payments.disputes (id);
COMMENT ON TABLE payments.disputes IS
    'Disputes (chargebacks and inquiries) of payments, created and moved only by the provider''s charge.dispute.* webhooks. Beside their payment (on Citus, by customer_id).';
COMMENT ON COLUMN payments.disputes.id IS 'dsp_ + 26-character time-sortable id.';
COMMENT ON COLUMN payments.disputes.provider_dispute_id IS 'The provider''s dispute id (dp_… or du_…).';
COMMENT ON COLUMN payments.disputes.amount_minor IS 'The disputed amount in the currency''s minor unit.';
COMMENT ON COLUMN payments.disputes.status IS
    'Stripe''s dispute status: warning_needs_response, warning_under_review, warning_closed (an inquiry, no money withheld), needs_response, under_review (the amount is withheld), won (returned), lost (kept by the bank).';
COMMENT ON COLUMN payments.disputes.reason IS 'The bank''s reason as the provider gives it (fraudulent, product_not_received, …).';
COMMENT ON COLUMN payments.disputes.evidence_due_by IS 'When the evidence must reach the provider.';
SELECT pg_catalog.pg_extension_config_dump('payments.disputes', '');
