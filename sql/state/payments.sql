-- payments: the tables of payments (its functions: sql/code/payments.sql). Created once; a
-- release changes them in its delta (sql/delta/).

-- ---------------------------------------------------------------------------
-- SQL logins bound to one customer (roles.sql binds them and sets the policies)
-- ---------------------------------------------------------------------------
CREATE TABLE payments.role_customers (
    role_name   name PRIMARY KEY,
    customer_id text COLLATE "C" NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 255),
    bound_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE payments.role_customers IS
    'SQL login roles bound to one customer (bind_role_to_customer): a BI tool or an agent connected as one reads that customer''s rows only, in every reader view and read function. On Citus a reference table.';
SELECT pg_catalog.pg_extension_config_dump('payments.role_customers', '');

-- ---------------------------------------------------------------------------
-- Payments
-- ---------------------------------------------------------------------------
CREATE TABLE payments.payments (
    id                  text COLLATE "C" NOT NULL,
    customer_id         text COLLATE "C" NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 255),
    amount_minor        bigint NOT NULL CHECK (amount_minor > 0),
    currency            text COLLATE "C" NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status              text COLLATE "C" NOT NULL CHECK (payments._is_allowed('status', status)),
    capture_method      text NOT NULL CHECK (payments._is_allowed('capture_method', capture_method)),
    provider            text,
    provider_payment_id text,
    payment_method      text,
    description         text,
    metadata            jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    last_error          jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    reconcile_after     timestamptz,
    reconcile_attempts  integer NOT NULL DEFAULT 0 CHECK (reconcile_attempts >= 0),
    amount_captured_minor bigint CHECK (amount_captured_minor > 0),
    cancellation_reason text CHECK (payments._is_allowed('cancellation_reason', cancellation_reason)),
    amount_refunded_minor bigint NOT NULL DEFAULT 0 CHECK (amount_refunded_minor >= 0),
    amount_disputed_minor bigint NOT NULL DEFAULT 0 CHECK (amount_disputed_minor >= 0),
    idempotency_key     text COLLATE "C" CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_fingerprint bytea,
    CHECK ((provider_payment_id IS NULL) OR (provider IS NOT NULL)),
    CONSTRAINT payments_key_has_fingerprint CHECK ((idempotency_key IS NULL) = (request_fingerprint IS NULL)),
    -- The customer first: on Citus every customer's rows live together (payments.distribute()).
    PRIMARY KEY (customer_id, id),
    -- Keys are per customer, as Stripe keeps them per account; NULL (a forgotten key) repeats.
    CONSTRAINT payments_idempotency_key UNIQUE (customer_id, idempotency_key)
);
CREATE INDEX payments_status_idx ON payments.payments (status, id DESC);
-- The unfiltered list (newest first) reads a page of this index, never sorting the table; with
-- the customer in it, a payment is found by id alone without visiting its row (payments._payment_customer).
CREATE INDEX payments_id_idx ON payments.payments (id DESC) INCLUDE (customer_id);

COMMENT ON TABLE payments.payments IS
    'One row per payment. Written only by the payments.* API functions; status changes only through payments.transition and the state machine. Keyed by (customer_id, id), the distribution column first; payment_customers finds a payment''s customer by id.';
COMMENT ON COLUMN payments.payments.id IS 'pay_ + 26-character time-sortable id (ULID layout, lower-case Crockford base32).';
COMMENT ON COLUMN payments.payments.customer_id IS 'The application''s own customer reference.';
COMMENT ON COLUMN payments.payments.amount_minor IS 'Amount in the currency''s minor unit (cents for USD, yen for JPY, fils for KWD). Never a float.';
COMMENT ON COLUMN payments.payments.currency IS 'ISO 4217 code, upper case; SELECT * FROM payments.currencies() lists them.';
COMMENT ON COLUMN payments.payments.status IS 'Lifecycle status (SELECT * FROM payments.statuses()); SELECT * FROM payments.allowed_transitions() shows the state machine.';
COMMENT ON COLUMN payments.payments.capture_method IS 'automatic: funds are captured on authorisation; manual: the payment waits in requires_capture.';
COMMENT ON COLUMN payments.payments.provider IS 'The payment provider that holds this payment (stripe, sandbox, …), once known.';
COMMENT ON COLUMN payments.payments.provider_payment_id IS 'The provider''s id for this payment (a Stripe PaymentIntent id); unique per provider (payments.provider_payments enforces it).';
COMMENT ON COLUMN payments.payments.reconcile_after IS
    'The reconciler''s lease: claim_provider_work sets it and leaves the payment alone until then (the claim''s lease, growing with each attempt); a status change clears it.';
COMMENT ON COLUMN payments.payments.reconcile_attempts IS 'How often the reconciler has claimed the payment since its status last changed.';
COMMENT ON COLUMN payments.payments.amount_captured_minor IS
    'What the provider captured, in minor units, once the payment succeeded: the amount, or less after a partial capture of a manual payment (capture_payment).';
COMMENT ON COLUMN payments.payments.cancellation_reason IS 'Why it was canceled (cancel_payment): duplicate, fraudulent, requested_by_customer, abandoned, or automatic (an authorization left uncaptured).';
COMMENT ON COLUMN payments.payments.amount_refunded_minor IS 'What succeeded refunds gave back, in minor units (payments.refunds; kept by the refund functions).';
COMMENT ON COLUMN payments.payments.amount_disputed_minor IS 'What its disputes withhold (open or lost), in minor units (payments.disputes; kept by the webhook that moves them).';
COMMENT ON COLUMN payments.payments.idempotency_key IS
    'The key create_payment was called with, unique per customer: the same key with the same parameters replays this payment, with others it is refused (PM201). A key is kept at least 24 hours; payments.purge_idempotency_keys forgets older ones (NULL), after which it may make a new payment. Not shown to readers.';
COMMENT ON COLUMN payments.payments.request_fingerprint IS
    'sha256 of the canonical parameters of the call that made the payment, to tell a replay from a reused key (PM201). NULL once the key is forgotten.';
COMMENT ON COLUMN payments.payments.last_error IS 'The provider''s error for the last failed attempt (a decline, an authentication failure), as JSON.';

-- ---------------------------------------------------------------------------
-- Routing: what finds a customer's rows from an id that is not the customer's
-- ---------------------------------------------------------------------------
-- Ids are COLLATE "C" throughout: a PL/pgSQL function called with one
-- "C" argument compares all its text in "C", and an index serves only
-- comparisons in its own collation.
CREATE TABLE payments.payment_customers (
    payment_id  text COLLATE "C" PRIMARY KEY,
    customer_id text COLLATE "C" NOT NULL
);
COMMENT ON TABLE payments.payment_customers IS
    'Which customer each payment belongs to, so that on Citus calls that name only a payment id (get_payment, transition, record_provider_result, …) find its rows by (customer_id, id): distributed by payment_id, one shard answers. Written only where Citus is installed (payments._citus; distribute() fills it for older payments): on one node the index payments_id_idx finds a payment by id. Rows written by versions before 0.4.0 stay.';

CREATE TABLE payments.provider_payments (
    provider            text COLLATE "C" NOT NULL,
    provider_payment_id text COLLATE "C" NOT NULL,
    payment_id          text COLLATE "C",
    customer_id         text COLLATE "C",
    first_seen_at       timestamptz NOT NULL DEFAULT now(),
    linked_at           timestamptz,
    PRIMARY KEY (provider_payment_id, provider),
    CHECK ((payment_id IS NULL) = (customer_id IS NULL) AND (payment_id IS NULL) = (linked_at IS NULL))
);
COMMENT ON TABLE payments.provider_payments IS
    'Every provider payment id the extension has heard of (from a provider answer or a webhook) and the payment it is linked to, once: the primary key makes a provider id belong to one payment only. Its row is also the lock that serialises everything about that provider id (linking it, applying its webhooks). On Citus it is distributed by provider_payment_id, with webhook_pending beside it.';
COMMENT ON COLUMN payments.provider_payments.payment_id IS 'The linked payment; NULL while only a webhook has named this provider id.';

-- ---------------------------------------------------------------------------
-- Audit trail
-- ---------------------------------------------------------------------------
CREATE TABLE payments.payment_events (
    payment_id  text COLLATE "C" NOT NULL,
    seq         bigint NOT NULL CHECK (seq > 0),
    from_status text,
    to_status   text NOT NULL,
    applied     boolean NOT NULL,
    source      text NOT NULL CHECK (payments._is_allowed('source', source)),
    reason      text,
    data        jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    prev_hash   bytea,
    hash        bytea NOT NULL,
    customer_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (customer_id, payment_id, seq),
    FOREIGN KEY (customer_id, payment_id) REFERENCES payments.payments (customer_id, id)
);
COMMENT ON TABLE payments.payment_events IS
    'Append-only history of every payment: its creation and every transition asked of it, in order. UPDATE, DELETE and TRUNCATE are refused by trigger. payments.verify_event_chain() checks the hashes.';
COMMENT ON COLUMN payments.payment_events.seq IS 'Position in this payment''s history, from 1, without gaps.';
COMMENT ON COLUMN payments.payment_events.from_status IS 'Status before the event; NULL for the creation.';
COMMENT ON COLUMN payments.payment_events.to_status IS 'Status the event asked for.';
COMMENT ON COLUMN payments.payment_events.applied IS 'false for a report recorded but not applied: a stale one (it would have moved the payment backwards or out of a final state), or an anomaly (reason ''anomaly: <kind>'', see payments.anomalies).';
COMMENT ON COLUMN payments.payment_events.source IS 'Who asked: api, provider (a provider API response), webhook, admin or system.';
COMMENT ON COLUMN payments.payment_events.prev_hash IS 'hash of the previous event of the same payment; NULL for the first.';
COMMENT ON COLUMN payments.payment_events.customer_id IS 'The payment''s customer: history lives beside its payment (not part of the hash).';
COMMENT ON COLUMN payments.payment_events.hash IS 'sha256(prev_hash ‖ canonical encoding of this event), computed by payments._event_hash.';

-- ---------------------------------------------------------------------------
-- Anomalies: provider objects that were no evidence for the payment they named
-- ---------------------------------------------------------------------------
CREATE TABLE payments.anomalies (
    id                  text COLLATE "C" NOT NULL,
    payment_id          text COLLATE "C" NOT NULL,
    customer_id         text COLLATE "C" NOT NULL,
    kind                text NOT NULL CHECK (payments._is_allowed('anomaly_kind', kind)),
    source              text NOT NULL CHECK (payments._is_allowed('source', source)),
    provider            text NOT NULL,
    provider_payment_id text,
    observed            jsonb NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    resolved_at         timestamptz,
    resolution          text CHECK (length(resolution) BETWEEN 1 AND 1000),
    CHECK ((resolved_at IS NULL) = (resolution IS NULL)),
    PRIMARY KEY (customer_id, id),
    FOREIGN KEY (customer_id, payment_id) REFERENCES payments.payments (customer_id, id)
);
CREATE INDEX anomalies_open_idx ON payments.anomalies (created_at) WHERE resolved_at IS NULL;
CREATE INDEX anomalies_payment_id_idx ON payments.anomalies (customer_id, payment_id);
COMMENT ON TABLE payments.anomalies IS
    'A provider object (an API answer or a webhook) that named a payment but asked for other money, or was another object than the one the payment is linked to. It was not applied: the payment kept its status and link, and its history has an event with reason ''anomaly: <kind>''. Operators read payments.open_anomalies and close one with payments.resolve_anomaly.';
COMMENT ON COLUMN payments.anomalies.kind IS 'amount_mismatch | currency_mismatch | amount_received_mismatch | amount_capturable_mismatch | provider_payment_mismatch (SELECT * FROM payments.allowed_values() WHERE kind = ''anomaly_kind'').';
COMMENT ON COLUMN payments.anomalies.source IS 'provider (an API answer recorded by record_provider_result) or webhook.';
COMMENT ON COLUMN payments.anomalies.observed IS 'The object''s money fields and status as received (amount, currency, amount_received, amount_capturable, status), and the webhook event id when a webhook brought it.';
COMMENT ON COLUMN payments.anomalies.resolved_at IS 'When an operator closed it (resolve_anomaly); NULL while open.';

-- pg_dump keeps the rows of extension tables only when told to.
SELECT pg_catalog.pg_extension_config_dump('payments.payments', '');
SELECT pg_catalog.pg_extension_config_dump('payments.payment_events', '');
SELECT pg_catalog.pg_extension_config_dump('payments.anomalies', '');
SELECT pg_catalog.pg_extension_config_dump('payments.payment_customers', '');
SELECT pg_catalog.pg_extension_config_dump('payments.provider_payments', '');

-- payment_details' columns plus what the call did; keep the two in step.
CREATE TYPE payments.payment_result AS (
    id                  text,
    customer_id         text,
    amount              numeric,
    amount_minor        bigint,
    currency            text,
    status              text,
    capture_method      text,
    provider            text,
    provider_payment_id text,
    payment_method      text,
    description         text,
    metadata            jsonb,
    last_error          jsonb,
    created_at          timestamptz,
    updated_at          timestamptz,
    amount_captured     numeric,
    amount_captured_minor bigint,
    cancellation_reason text,
    amount_refunded     numeric,
    amount_refunded_minor bigint,
    refund_status       text,
    disputed            boolean,
    amount_disputed     numeric,
    amount_disputed_minor bigint,
    outcome             text
);
