-- payments: the tables of provider_commands (its functions: sql/code/provider_commands.sql). Created once; a
-- release changes them in its delta (sql/delta/).

CREATE TABLE payments.provider_commands (
    id            text COLLATE "C" NOT NULL,
    customer_id   text COLLATE "C" NOT NULL,
    payment_id    text COLLATE "C" NOT NULL,
    kind          text NOT NULL CHECK (payments._is_allowed('command_kind', kind)),
    amount_minor  bigint CHECK (amount_minor > 0),
    reason        text CHECK (payments._is_allowed('cancellation_reason', reason)),
    status        text COLLATE "C" NOT NULL DEFAULT 'pending' CHECK (payments._is_allowed('command_status', status)),
    attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    run_after     timestamptz NOT NULL DEFAULT now(),
    last_error    jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    refund_id     text COLLATE "C",
    PRIMARY KEY (customer_id, id),
    FOREIGN KEY (customer_id, payment_id) REFERENCES payments.payments (customer_id, id),
    CHECK ((status = 'pending') = (finished_at IS NULL)),
    CHECK ((kind IN ('capture', 'refund')) = (amount_minor IS NOT NULL)),
    CHECK ((kind = 'refund') = (refund_id IS NOT NULL))
);
-- One outstanding capture or cancel per payment: the two never race at the provider.
-- Refunds of a payment may be pending together (create_refund keeps their sum in bounds).
CREATE UNIQUE INDEX provider_commands_one_pending_idx ON payments.provider_commands (customer_id, payment_id)
    WHERE status = 'pending' AND kind <> 'refund';
CREATE INDEX provider_commands_due_idx ON payments.provider_commands (run_after) WHERE status = 'pending';
CREATE INDEX provider_commands_payment_idx ON payments.provider_commands (customer_id, payment_id);
COMMENT ON TABLE payments.provider_commands IS
    'The provider calls that capture_payment, cancel_payment and create_refund queued (a transactional outbox): pending until the gateway has the provider''s answer, then succeeded or failed. At most one capture or cancel pending per payment. Beside its payment (on Citus, by customer_id).';
COMMENT ON COLUMN payments.provider_commands.amount_minor IS 'capture: the minor units to capture (the rest of the authorization is released); refund: the minor units to refund.';
COMMENT ON COLUMN payments.provider_commands.refund_id IS 'refund: the refund (payments.refunds) the call creates at the provider.';
COMMENT ON COLUMN payments.provider_commands.reason IS 'cancel: Stripe''s cancellation_reason; automatic when the authorization was left uncaptured.';
COMMENT ON COLUMN payments.provider_commands.run_after IS 'The gateway''s lease: not claimed again before this time (it grows with each attempt).';
COMMENT ON COLUMN payments.provider_commands.last_error IS 'Why the last attempt did not finish it (the provider unreachable, or its refusal).';
SELECT pg_catalog.pg_extension_config_dump('payments.provider_commands', '');
