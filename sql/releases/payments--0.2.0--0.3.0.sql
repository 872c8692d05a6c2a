-- payments 0.2.0 → 0.3.0. Run by ALTER EXTENSION payments UPDATE; tested by
-- tests/tests/upgrade.rs (the upgraded catalog must equal a fresh install's).
--
-- What changes: the schema is keyed by customer so it can be distributed on
-- Citus (payments.distribute()): every customer's payments, history,
-- idempotency keys and anomalies have keys that start with customer_id;
-- payment_customers finds a payment's customer from its id; provider_payments
-- holds each provider payment id once (the uniqueness payments' own index kept)
-- and its row is the lock that serialises a provider id (advisory locks
-- serialise one node only); webhook_events is keyed by event id and
-- webhook_pending by provider payment id, with the object it waits to apply.
-- Idempotency keys are per customer. Functions Citus cannot plan are PL/pgSQL.
-- Every row is kept; histories keep their hashes (customer_id is not hashed).
-- Functions are dropped IF EXISTS so a database made by a development build of
-- 0.2.0 upgrades too; the upgrade test proves none is left behind.

-- ---------------------------------------------------------------------------
-- SQL logins bound to one customer (the policies and grants come at the end)
-- ---------------------------------------------------------------------------
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'payments_bound') THEN
        CREATE ROLE payments_bound NOLOGIN;
    END IF;
END
$$;
CREATE TABLE payments.role_customers (
    role_name   name PRIMARY KEY,
    customer_id text COLLATE "C" NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 255),
    bound_at    timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE payments.role_customers IS
    'SQL login roles bound to one customer (bind_role_to_customer): a BI tool or an agent connected as one reads that customer''s rows only, in every reader view and read function. On Citus a reference table.';
SELECT pg_catalog.pg_extension_config_dump('payments.role_customers', '');

-- A quoted body, not RETURN: Citus copies the policies' functions to the workers, and
-- loses a SQL-standard body on the way.
CREATE FUNCTION payments._bound_customer() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT c.customer_id FROM payments.role_customers c WHERE c.role_name = session_user $$;

COMMENT ON FUNCTION payments._bound_customer() IS
    'Internal: the customer the session''s login role is bound to (bind_role_to_customer), NULL when it is not. The customer tables'' row-level policies restrict bound logins to it, and the read functions check it (they see the same session user).';

-- ---------------------------------------------------------------------------
-- Routing tables, filled from the rows already there
-- ---------------------------------------------------------------------------
-- Ids are COLLATE "C" throughout: a PL/pgSQL function called with one
-- "C" argument compares all its text in "C", and an index serves only
-- comparisons in its own collation.
CREATE TABLE payments.payment_customers (
    payment_id  text COLLATE "C" PRIMARY KEY,
    customer_id text COLLATE "C" NOT NULL
);
COMMENT ON TABLE payments.payment_customers IS
    'Which customer each payment belongs to, so calls that name only a payment id (get_payment, transition, record_provider_result, …) find its rows by (customer_id, id). On Citus it is distributed by payment_id: one shard answers.';

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

SELECT pg_catalog.pg_extension_config_dump('payments.payment_customers', '');
SELECT pg_catalog.pg_extension_config_dump('payments.provider_payments', '');

INSERT INTO payments.payment_customers (payment_id, customer_id)
SELECT p.id, p.customer_id FROM payments.payments p;
INSERT INTO payments.provider_payments (provider, provider_payment_id, payment_id, customer_id, first_seen_at, linked_at)
SELECT p.provider, p.provider_payment_id, p.id, p.customer_id, p.updated_at, p.updated_at
FROM payments.payments p WHERE p.provider_payment_id IS NOT NULL;
-- Provider ids only a waiting webhook has named.
INSERT INTO payments.provider_payments (provider, provider_payment_id, first_seen_at)
SELECT DISTINCT ON (wp.provider_payment_id, wp.provider) wp.provider, wp.provider_payment_id, we.received_at
FROM payments.webhook_pending wp
JOIN payments.webhook_events we ON we.provider = wp.provider AND we.event_id = wp.event_id
ORDER BY wp.provider_payment_id, wp.provider, we.received_at
ON CONFLICT ON CONSTRAINT provider_payments_pkey DO NOTHING;

-- ---------------------------------------------------------------------------
-- Keys that start with the customer
-- ---------------------------------------------------------------------------
ALTER TABLE payments.payment_events DROP CONSTRAINT payment_events_payment_id_fkey;
ALTER TABLE payments.idempotency_keys DROP CONSTRAINT idempotency_keys_payment_id_fkey;
ALTER TABLE payments.anomalies DROP CONSTRAINT anomalies_payment_id_fkey;
ALTER TABLE payments.webhook_events DROP CONSTRAINT webhook_events_payment_id_fkey;
ALTER TABLE payments.webhook_pending DROP CONSTRAINT webhook_pending_provider_event_id_fkey;

-- Ids compare in "C" (see sql/schema.sql). The views over these columns, and
-- the functions that return payment_details rows, are made anew below.
DROP VIEW payments.open_anomalies;
DROP VIEW payments.customer_payments;
DROP VIEW payments.webhook_log;
DROP FUNCTION IF EXISTS payments._result(text, text);
DROP FUNCTION IF EXISTS payments.get_payment(text);
DROP FUNCTION IF EXISTS payments.list_payments(text, text, int, text);
DROP VIEW payments.payment_details;
-- payment_result gains the payment's new columns: the functions returning it are made anew below.
DROP FUNCTION IF EXISTS payments.create_payment(text, text, numeric, text, text, text, jsonb, text);
DROP FUNCTION IF EXISTS payments.transition(text, text, text, text, jsonb);
DROP FUNCTION IF EXISTS payments.record_provider_result(text, text, text, text, jsonb);
DROP TYPE payments.payment_result;
ALTER TABLE payments.payments
    ADD COLUMN amount_captured_minor bigint CHECK (amount_captured_minor > 0),
    ADD COLUMN cancellation_reason text CHECK (payments._is_allowed('cancellation_reason', cancellation_reason)),
    ADD COLUMN amount_refunded_minor bigint NOT NULL DEFAULT 0 CHECK (amount_refunded_minor >= 0),
    ADD COLUMN amount_disputed_minor bigint NOT NULL DEFAULT 0 CHECK (amount_disputed_minor >= 0);
UPDATE payments.payments p SET amount_captured_minor = p.amount_minor WHERE p.status = 'succeeded';
ALTER TABLE payments.payments
    ALTER COLUMN customer_id TYPE text COLLATE "C", ALTER COLUMN status TYPE text COLLATE "C";
ALTER TABLE payments.anomalies ALTER COLUMN customer_id TYPE text COLLATE "C";
ALTER TABLE payments.webhook_events
    ALTER COLUMN provider TYPE text COLLATE "C", ALTER COLUMN event_id TYPE text COLLATE "C";
ALTER TABLE payments.webhook_pending
    ALTER COLUMN provider TYPE text COLLATE "C", ALTER COLUMN event_id TYPE text COLLATE "C",
    ALTER COLUMN provider_payment_id TYPE text COLLATE "C";

ALTER TABLE payments.payments DROP CONSTRAINT payments_pkey;
ALTER TABLE payments.payments ADD PRIMARY KEY (customer_id, id);
DROP INDEX payments.payments_provider_payment_id_key;  -- provider_payments' primary key now
DROP INDEX payments.payments_customer_id_idx;          -- the primary key's prefix now

-- History is append-only: its guard steps aside for this one backfill.
ALTER TABLE payments.payment_events ADD COLUMN customer_id text COLLATE "C";
ALTER TABLE payments.payment_events DISABLE TRIGGER payment_events_append_only;
UPDATE payments.payment_events e SET customer_id = p.customer_id FROM payments.payments p WHERE p.id = e.payment_id;
ALTER TABLE payments.payment_events ENABLE TRIGGER payment_events_append_only;
ALTER TABLE payments.payment_events ALTER COLUMN customer_id SET NOT NULL;
ALTER TABLE payments.payment_events DROP CONSTRAINT payment_events_pkey;
ALTER TABLE payments.payment_events ADD PRIMARY KEY (customer_id, payment_id, seq);
ALTER TABLE payments.payment_events
    ADD FOREIGN KEY (customer_id, payment_id) REFERENCES payments.payments (customer_id, id);

ALTER TABLE payments.idempotency_keys ADD COLUMN customer_id text COLLATE "C";
UPDATE payments.idempotency_keys k SET customer_id = p.customer_id FROM payments.payments p WHERE p.id = k.payment_id;
ALTER TABLE payments.idempotency_keys ALTER COLUMN customer_id SET NOT NULL;
ALTER TABLE payments.idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE payments.idempotency_keys ADD PRIMARY KEY (customer_id, key);
ALTER TABLE payments.idempotency_keys
    ADD FOREIGN KEY (customer_id, payment_id) REFERENCES payments.payments (customer_id, id) DEFERRABLE INITIALLY DEFERRED;

ALTER TABLE payments.anomalies DROP CONSTRAINT anomalies_pkey;
ALTER TABLE payments.anomalies ADD PRIMARY KEY (customer_id, id);
ALTER TABLE payments.anomalies ADD FOREIGN KEY (customer_id, payment_id) REFERENCES payments.payments (customer_id, id);
DROP INDEX payments.anomalies_payment_id_idx;
CREATE INDEX anomalies_payment_id_idx ON payments.anomalies (customer_id, payment_id);

-- ---------------------------------------------------------------------------
-- Webhooks: the log keyed by event id, waiting events by provider payment id
-- ---------------------------------------------------------------------------
ALTER TABLE payments.webhook_events ADD COLUMN customer_id text COLLATE "C";
ALTER TABLE payments.webhook_events DISABLE TRIGGER webhook_events_append_only;
UPDATE payments.webhook_events w SET customer_id = p.customer_id FROM payments.payments p WHERE p.id = w.payment_id;
ALTER TABLE payments.webhook_events ENABLE TRIGGER webhook_events_append_only;
ALTER TABLE payments.webhook_events ADD CHECK ((payment_id IS NULL) = (customer_id IS NULL));
ALTER TABLE payments.webhook_events DROP CONSTRAINT webhook_events_pkey;
ALTER TABLE payments.webhook_events DROP CONSTRAINT webhook_events_provider_event_id_key;
ALTER TABLE payments.webhook_events ADD PRIMARY KEY (event_id, provider);
DROP INDEX payments.webhook_events_payment_id_idx;
CREATE INDEX webhook_events_payment_id_idx ON payments.webhook_events (customer_id, payment_id) WHERE payment_id IS NOT NULL;

ALTER TABLE payments.webhook_pending ADD COLUMN object jsonb;
UPDATE payments.webhook_pending wp SET object = convert_from(we.body, 'UTF8')::jsonb -> 'data' -> 'object'
FROM payments.webhook_events we WHERE we.provider = wp.provider AND we.event_id = wp.event_id;
ALTER TABLE payments.webhook_pending ALTER COLUMN object SET NOT NULL;
ALTER TABLE payments.webhook_pending DROP CONSTRAINT webhook_pending_pkey;
ALTER TABLE payments.webhook_pending ADD PRIMARY KEY (provider_payment_id, provider, event_id);
ALTER TABLE payments.webhook_pending
    ADD FOREIGN KEY (provider_payment_id, provider) REFERENCES payments.provider_payments (provider_payment_id, provider);
DROP INDEX payments.webhook_pending_match_idx;  -- the primary key's prefix now

-- ---------------------------------------------------------------------------
-- Comments that changed
-- ---------------------------------------------------------------------------
COMMENT ON COLUMN payments.payments.amount_refunded_minor IS 'What succeeded refunds gave back, in minor units (payments.refunds; kept by the refund functions).';
COMMENT ON COLUMN payments.payments.amount_disputed_minor IS 'What its disputes withhold (open or lost), in minor units (payments.disputes; kept by the webhook that moves them).';
COMMENT ON TABLE payments.payments IS
    'One row per payment. Written only by the payments.* API functions; status changes only through payments.transition and the state machine. Keyed by (customer_id, id), the distribution column first; payment_customers finds a payment''s customer by id.';
COMMENT ON COLUMN payments.payments.provider_payment_id IS 'The provider''s id for this payment (a Stripe PaymentIntent id); unique per provider (payments.provider_payments enforces it).';
COMMENT ON COLUMN payments.payments.amount_captured_minor IS
    'What the provider captured, in minor units, once the payment succeeded: the amount, or less after a partial capture of a manual payment (capture_payment).';
COMMENT ON COLUMN payments.payments.cancellation_reason IS 'Why it was canceled (cancel_payment): duplicate, fraudulent, requested_by_customer, abandoned, or automatic (an authorization left uncaptured).';
COMMENT ON COLUMN payments.payment_events.customer_id IS 'The payment''s customer: history lives beside its payment (not part of the hash).';
COMMENT ON TABLE payments.idempotency_keys IS
    'Idempotency keys of create_payment calls, per customer (as Stripe keeps them per account): the same key for two customers is two payments. A key is claimed before its payment is written (hence the deferred foreign key), so a concurrent call with the same key waits and then replays. Kept at least 24 hours; payments.purge_idempotency_keys removes older ones.';
COMMENT ON TABLE payments.webhook_events IS
    'Every verified webhook, once per (provider, event_id), with the exact body and headers received, the secret that verified it and what ingest_webhook did with it. Append-only. Unverified bodies are never stored. What an event did to its payment is in that payment''s history (payment_events, beside the payment), naming the event id.';
COMMENT ON COLUMN payments.webhook_events.customer_id IS 'The matched payment''s customer; NULL when no payment matched.';
COMMENT ON COLUMN payments.webhook_pending.object IS 'The event''s data.object as received (webhook_events keeps the exact body): the evidence checked when it is applied.';

-- ---------------------------------------------------------------------------
-- Row shapes returned by the API
-- ---------------------------------------------------------------------------
CREATE VIEW payments.payment_details WITH (security_invoker) AS
SELECT p.id, p.customer_id, payments.to_major(p.amount_minor, p.currency) AS amount, p.amount_minor, p.currency,
       p.status, p.capture_method, p.provider, p.provider_payment_id, p.payment_method, p.description,
       p.metadata, p.last_error, p.created_at, p.updated_at,
       payments.to_major(p.amount_captured_minor, p.currency) AS amount_captured, p.amount_captured_minor,
       p.cancellation_reason,
       payments.to_major(p.amount_refunded_minor, p.currency) AS amount_refunded, p.amount_refunded_minor,
       CASE WHEN p.amount_refunded_minor = 0 THEN 'none'
            WHEN p.amount_refunded_minor < p.amount_captured_minor THEN 'partial' ELSE 'full' END AS refund_status,
       p.amount_disputed_minor > 0 AS disputed,
       payments.to_major(p.amount_disputed_minor, p.currency) AS amount_disputed, p.amount_disputed_minor
FROM payments.payments p;
COMMENT ON VIEW payments.payment_details IS
    'Every payment with its amounts in major units (amount, amount_captured, amount_refunded, amount_disputed) beside the stored minor units; refund_status: none, partial or full (of what was captured); disputed: a dispute withholds money. What get_payment and list_payments return; readable by payments_reader.';

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
COMMENT ON TYPE payments.payment_result IS
    'A payment as a mutating call leaves it, plus outcome: created | replayed (create_payment), applied | noop | stale (transition, record_provider_result), mismatch (record_provider_result: the provider''s object asked for other money; an anomaly was recorded, nothing applied), queued (capture_payment, cancel_payment: the provider call waits for the gateway).';

-- ---------------------------------------------------------------------------
-- Functions: every query names its customer; row locks instead of advisory
-- locks; PL/pgSQL where Citus cannot plan SQL functions
-- ---------------------------------------------------------------------------
DROP FUNCTION IF EXISTS payments._append_event(text, text, text, boolean, text, text, jsonb);
DROP FUNCTION IF EXISTS payments._transition(text, text, text, text, jsonb, jsonb);
DROP FUNCTION IF EXISTS payments._lock_provider_payment(text, text);
DROP FUNCTION IF EXISTS payments._link_provider(text, text, text);
DROP FUNCTION IF EXISTS payments._evidence_problem_for(text, text, jsonb, text, text);
DROP FUNCTION IF EXISTS payments._record_anomaly(text, text, text, text, text, jsonb);
DROP FUNCTION IF EXISTS payments._apply_pending_webhooks(text, text, text);
DROP FUNCTION IF EXISTS payments._apply_webhook(text, text, text, timestamptz, jsonb);

CREATE FUNCTION payments._customer_of(p_payment_id text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_customer text;
BEGIN
    SELECT r.customer_id INTO v_customer FROM payments.payment_customers r WHERE r.payment_id = p_payment_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment % not found', payments._shown(p_payment_id) USING ERRCODE = 'PM204';
    END IF;
    RETURN v_customer;
END
$$;
COMMENT ON FUNCTION payments._customer_of(text) IS
    'Internal: the customer a payment id belongs to (payment_customers), or PM204 for an unknown payment.';

CREATE FUNCTION payments._locked_payment(p_payment_id text) RETURNS payments.payments
LANGUAGE plpgsql AS $$
DECLARE
    v_customer text := payments._customer_of(p_payment_id);
    v_payment  payments.payments%ROWTYPE;
BEGIN
    SELECT * INTO v_payment FROM payments.payments p WHERE p.customer_id = v_customer AND p.id = p_payment_id FOR UPDATE;
    RETURN v_payment;
END
$$;
COMMENT ON FUNCTION payments._locked_payment(text) IS
    'Internal: a payment by id, its row locked for the rest of the transaction (found through its route); PM204 for an unknown payment.';

CREATE FUNCTION payments._append_event(p_customer_id text, p_payment_id text, p_from text, p_to text,
                                       p_applied boolean, p_source text, p_reason text, p_data jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_seq  bigint := 0;
    v_prev bytea;
    v_now  timestamptz := now();
BEGIN
    -- A creation (no from status) starts the chain; otherwise the caller holds
    -- the payment's row lock, so the chain head cannot move under us.
    IF p_from IS NOT NULL THEN
        SELECT e.seq, e.hash INTO v_seq, v_prev
        FROM payments.payment_events e WHERE e.customer_id = p_customer_id AND e.payment_id = p_payment_id
        ORDER BY e.seq DESC LIMIT 1;
    END IF;
    v_seq := v_seq + 1;
    INSERT INTO payments.payment_events
        (customer_id, payment_id, seq, from_status, to_status, applied, source, reason, data, created_at, prev_hash, hash)
    VALUES (p_customer_id, p_payment_id, v_seq, p_from, p_to, p_applied, p_source, p_reason, p_data, v_now, v_prev,
            payments._event_hash(v_prev, p_payment_id, v_seq, p_from, p_to, p_applied, p_source, p_reason,
                                 p_data::text, payments._epoch_micros(v_now)));
    -- Apps are told of a creation and of each status change (not of notes).
    IF p_applied AND p_from IS DISTINCT FROM p_to THEN
        PERFORM payments._emit(p_customer_id, 'payment', p_payment_id, p_to, p_from, p_from IS NULL);
    END IF;
END
$$;
COMMENT ON FUNCTION payments._append_event(text, text, text, text, boolean, text, text, jsonb) IS
    'Internal: appends one event to a payment''s hash-chained history. The caller must hold the payment''s row lock.';

CREATE FUNCTION payments._transition(p_customer_id text, p_payment_id text, p_to text, p_source text, p_reason text,
                                     p_data jsonb, p_last_error jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_from     text;
    v_capture  text;
    v_decision text;
    v_captured bigint;
    v_reason   text;
    v_invoice  boolean;
BEGIN
    SELECT p.status, p.capture_method, p.metadata ? 'invoice_id' INTO v_from, v_capture, v_invoice FROM payments.payments p
    WHERE p.customer_id = p_customer_id AND p.id = p_payment_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment % not found', payments._shown(p_payment_id) USING ERRCODE = 'PM204';
    END IF;
    v_decision := payments._transition_decision(v_from, p_to, p_source);
    CASE v_decision
    WHEN 'noop' THEN
        RETURN 'noop';
    WHEN 'apply' THEN
        -- What a capture or cancel asked for shows once the provider has done it, whoever reports it.
        IF p_to = 'succeeded' AND v_capture = 'manual' THEN
            v_captured := (payments._requested_command(p_customer_id, p_payment_id, 'capture')).amount_minor;
        ELSIF p_to = 'canceled' THEN
            v_reason := (payments._requested_command(p_customer_id, p_payment_id, 'cancel')).reason;
        END IF;
        -- A new status starts the reconciler's count afresh.
        UPDATE payments.payments p
        SET status = p_to, updated_at = now(), last_error = coalesce(p_last_error, p.last_error),
            reconcile_after = NULL, reconcile_attempts = 0,
            amount_captured_minor = CASE WHEN p_to = 'succeeded' THEN coalesce(v_captured, p.amount_minor) END,
            cancellation_reason = CASE WHEN p_to = 'canceled' THEN coalesce(p.cancellation_reason, v_reason) END
        WHERE p.customer_id = p_customer_id AND p.id = p_payment_id;
        PERFORM payments._append_event(p_customer_id, p_payment_id, v_from, p_to, true, p_source, p_reason, p_data);
        -- An invoice's payment settles its invoice (and subscription) in the same transaction.
        -- (A renewal waiting on the customer is dunned as a failure until it is paid.)
        IF v_invoice AND p_to IN ('succeeded', 'failed', 'requires_action') THEN
            PERFORM payments._invoice_payment_settled(p_customer_id, p_payment_id, p_to);
        END IF;
        RETURN 'applied';
    WHEN 'ignore' THEN
        PERFORM payments._append_event(p_customer_id, p_payment_id, v_from, p_to, false, p_source,
                                       coalesce(p_reason, 'stale: ' || v_from || ' does not move to ' || p_to), p_data);
        RETURN 'stale';
    WHEN 'forbidden' THEN
        RAISE EXCEPTION 'payment % cannot move from % to %', p_payment_id, v_from, p_to
            USING ERRCODE = 'PM202', HINT = 'SELECT * FROM payments.allowed_transitions() shows the state machine';
    ELSE
        RAISE EXCEPTION 'unknown status % or source %', quote_nullable(payments._shown(p_to)),
            quote_nullable(payments._shown(p_source))
            USING ERRCODE = 'PM100',
                  HINT = 'SELECT * FROM payments.allowed_values() WHERE kind IN (''status'', ''source'')';
    END CASE;
END
$$;
COMMENT ON FUNCTION payments._transition(text, text, text, text, text, jsonb, jsonb) IS
    'Internal: locks the payment, asks the state machine, and applies, records as stale or refuses the move. Returns applied | noop | stale.';

-- PL/pgSQL, not LANGUAGE sql: Citus cannot plan parameterised SQL functions over its tables.
CREATE FUNCTION payments._result(p_customer_id text, p_payment_id text, p_outcome text)
RETURNS SETOF payments.payment_result
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY SELECT d.*, p_outcome FROM payments.payment_details d
    WHERE d.customer_id = p_customer_id AND d.id = p_payment_id;
END
$$;
COMMENT ON FUNCTION payments._result(text, text, text) IS 'Internal: a payment as a payment_result row with the call''s outcome.';

-- ---------------------------------------------------------------------------
-- Payments
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION payments.create_payment(
    idempotency_key text,
    customer_id     text,
    amount          numeric,
    currency        text,
    payment_method  text DEFAULT NULL,
    description     text DEFAULT NULL,
    metadata        jsonb DEFAULT '{}',
    capture_method  text DEFAULT 'automatic'
) RETURNS SETOF payments.payment_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_minor    bigint;
    v_currency text := upper(currency);
    v_metadata jsonb := coalesce(metadata, '{}');
    v_capture  text := coalesce(capture_method, 'automatic');
    v_fp       bytea;
    v_id       text := payments._new_id('pay');
    v_status   text;
    v_claimed  payments.idempotency_keys%ROWTYPE;
BEGIN
    IF idempotency_key IS NULL OR length(idempotency_key) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'idempotency_key must be 1 to 255 characters' USING ERRCODE = 'PM100';
    END IF;
    IF customer_id IS NULL OR length(customer_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'customer_id must be 1 to 255 characters' USING ERRCODE = 'PM100';
    END IF;
    IF length(payment_method) > 255 OR length(description) > 1000 THEN
        RAISE EXCEPTION 'payment_method is at most 255 characters, description at most 1000' USING ERRCODE = 'PM100';
    END IF;
    IF payments._metadata_problem(v_metadata) IS NOT NULL THEN
        RAISE EXCEPTION '%', payments._metadata_problem(v_metadata) USING ERRCODE = 'PM100';
    END IF;
    IF NOT payments._is_allowed('capture_method', v_capture) THEN
        RAISE EXCEPTION 'capture_method must be one of %, not %',
            (SELECT string_agg(v.value, ', ') FROM payments.allowed_values() v WHERE v.kind = 'capture_method'),
            quote_literal(payments._shown(v_capture)) USING ERRCODE = 'PM100';
    END IF;
    v_minor := payments.to_minor(amount, currency);
    v_fp := payments._request_fingerprint(customer_id, v_minor, v_currency, payment_method, description,
                                          v_metadata::text, v_capture);

    -- Claim the key first. A concurrent call with the same key blocks here
    -- until this transaction ends, then finds the key and replays.
    INSERT INTO payments.idempotency_keys (customer_id, key, fingerprint, payment_id)
    VALUES (customer_id, idempotency_key, v_fp, v_id)
    ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO NOTHING;

    IF FOUND THEN
        v_status := payments._initial_status(payment_method IS NOT NULL);
        INSERT INTO payments.payments
            (id, customer_id, amount_minor, currency, status, capture_method, payment_method, description, metadata)
        VALUES (v_id, customer_id, v_minor, v_currency, v_status, v_capture, payment_method, description, v_metadata);
        INSERT INTO payments.payment_customers (payment_id, customer_id) VALUES (v_id, customer_id);
        PERFORM payments._append_event(customer_id, v_id, NULL, v_status, true, 'api', 'created',
                                       jsonb_build_object('idempotency_key', idempotency_key));
        RETURN QUERY SELECT * FROM payments._result(customer_id, v_id, 'created');
        RETURN;
    END IF;

    SELECT * INTO v_claimed FROM payments.idempotency_keys k
    WHERE k.customer_id = create_payment.customer_id AND k.key = idempotency_key;
    IF NOT FOUND THEN
        -- Only under REPEATABLE READ or SERIALIZABLE: the key was committed
        -- after this transaction's snapshot was taken.
        RAISE EXCEPTION 'idempotency key % was claimed by a concurrent transaction', quote_literal(idempotency_key)
            USING ERRCODE = '40001', HINT = 'retry the transaction';
    END IF;
    IF v_claimed.fingerprint <> v_fp THEN
        RAISE EXCEPTION 'idempotency key % was already used with different parameters', quote_literal(idempotency_key)
            USING ERRCODE = 'PM201', DETAIL = 'the key belongs to payment ' || v_claimed.payment_id,
                  HINT = 'use a new key for a new payment, or repeat the original parameters to replay it';
    END IF;
    RETURN QUERY SELECT * FROM payments._result(customer_id, v_claimed.payment_id, 'replayed');
END
$$;
COMMENT ON FUNCTION payments.create_payment(text, text, numeric, text, text, text, jsonb, text) IS
    'Creates a payment, idempotently. Keys are per customer. The same key with the same parameters returns the same payment (outcome replayed) and writes nothing; with other parameters it is an error (PM201). Concurrent calls with one key make exactly one payment. Runs inside the caller''s transaction: a rollback leaves no payment, key or event.';

CREATE FUNCTION payments.get_payment(id text) RETURNS SETOF payments.payment_details
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_customer text := payments._customer_of(get_payment.id);
BEGIN
    -- A login bound to another customer is answered as for an unknown id.
    IF v_customer <> coalesce(payments._bound_customer(), v_customer) THEN
        RAISE EXCEPTION 'payment % not found', payments._shown(get_payment.id) USING ERRCODE = 'PM204';
    END IF;
    RETURN QUERY SELECT * FROM payments.payment_details d WHERE d.customer_id = v_customer AND d.id = get_payment.id;
END
$$;
COMMENT ON FUNCTION payments.get_payment(text) IS 'One payment by id; PM204 when there is none.';

CREATE FUNCTION payments.list_payments(customer_id text DEFAULT NULL, status text DEFAULT NULL,
                                       lim int DEFAULT 10, starting_after text DEFAULT NULL)
RETURNS SETOF payments.payment_details
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_bound text := payments._bound_customer();
BEGIN
    IF lim IS NULL OR lim NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'lim must be between 1 and 100' USING ERRCODE = 'PM100';
    END IF;
    -- A login bound to one customer lists that customer's payments (another's: none).
    IF v_bound IS NOT NULL THEN
        IF list_payments.customer_id IS DISTINCT FROM v_bound AND list_payments.customer_id IS NOT NULL THEN
            RETURN;
        END IF;
        list_payments.customer_id := v_bound;
    END IF;
    IF list_payments.status IS NOT NULL AND NOT payments._is_allowed('status', list_payments.status) THEN
        RAISE EXCEPTION 'unknown status %', quote_literal(payments._shown(list_payments.status)) USING ERRCODE = 'PM100';
    END IF;
    -- Each filter shape orders by the columns of its index, so the newest
    -- page is an index range scan whatever the customer's or status's size.
    IF list_payments.customer_id IS NOT NULL THEN
        RETURN QUERY
        SELECT * FROM payments.payment_details d
        WHERE d.customer_id = list_payments.customer_id
          AND (list_payments.status IS NULL OR d.status = list_payments.status)
          AND (starting_after IS NULL OR d.id < starting_after)
        ORDER BY d.customer_id, d.id DESC
        LIMIT lim;
    ELSIF list_payments.status IS NOT NULL THEN
        RETURN QUERY
        SELECT * FROM payments.payment_details d
        WHERE d.status = list_payments.status AND (starting_after IS NULL OR d.id < starting_after)
        ORDER BY d.status, d.id DESC
        LIMIT lim;
    ELSE
        RETURN QUERY
        SELECT * FROM payments.payment_details d
        WHERE starting_after IS NULL OR d.id < starting_after
        ORDER BY d.id DESC
        LIMIT lim;
    END IF;
END
$$;
COMMENT ON FUNCTION payments.list_payments(text, text, int, text) IS
    'Payments newest first, optionally for one customer and/or status. Keyset pagination: pass the last id of a page as starting_after to get the next. lim is 1 to 100, default 10 (as over HTTP).';

CREATE OR REPLACE FUNCTION payments.transition(payment_id text, to_status text, source text,
                                    reason text DEFAULT NULL, data jsonb DEFAULT '{}')
RETURNS SETOF payments.payment_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_customer text := payments._customer_of(transition.payment_id);
    v_outcome  text;
BEGIN
    -- The history says who asked, and money is shown moving only by the provider's
    -- evidence (record_provider_result and ingest_webhook check it): admin, system,
    -- provider and webhook moves, and moves that say money moved, are payments_admin's.
    IF (source IN ('admin', 'system', 'provider', 'webhook')
        OR to_status IN ('processing', 'requires_capture', 'succeeded'))
       AND NOT pg_has_role(payments._invoker(), 'payments_admin', 'MEMBER') THEN
        RAISE EXCEPTION 'only members of payments_admin may move a payment to % as %', payments._shown(to_status),
            payments._shown(source) USING ERRCODE = '42501',
            HINT = 'provider answers go through record_provider_result and webhooks through ingest_webhook, which check the money';
    END IF;
    -- A payment the provider may hold is canceled there first (cancel_payment), or a
    -- capture queued meanwhile could charge a payment shown canceled.
    IF to_status = 'canceled' AND NOT pg_has_role(payments._invoker(), 'payments_admin', 'MEMBER')
       AND EXISTS (SELECT 1 FROM payments.payments p
                   WHERE p.customer_id = v_customer AND p.id = transition.payment_id
                     AND (p.provider_payment_id IS NOT NULL OR p.payment_method IS NOT NULL)) THEN
        RAISE EXCEPTION 'payment % may be held by its provider: cancel it with payments.cancel_payment',
            transition.payment_id USING ERRCODE = '42501';
    END IF;
    v_outcome := payments._transition(v_customer, transition.payment_id, to_status, source, reason,
                                      coalesce(data, '{}'), data -> 'last_error');
    RETURN QUERY SELECT * FROM payments._result(v_customer, transition.payment_id, v_outcome);
END
$$;
COMMENT ON FUNCTION payments.transition(text, text, text, text, jsonb) IS
    'The only way a status changes. source is api | provider | webhook | admin | system; admin and system, provider and webhook reports, and moves to processing, requires_capture or succeeded only for members of payments_admin (42501 otherwise): anyone else shows money moving only with the provider''s evidence, through record_provider_result or ingest_webhook. Canceling a payment the provider may hold (a provider id or a payment method) is payments.cancel_payment''s, for everyone but payments_admin (42501). A move the state machine forbids is an error (PM202) for api, admin and system; a provider or webhook report of it is stale: recorded (applied = false) and changes nothing. data->''last_error'', when given, becomes the payment''s last_error.';

CREATE FUNCTION payments._lock_provider_payment(p_provider text, p_provider_payment_id text,
                                                OUT payment_id text, OUT customer_id text)
LANGUAGE plpgsql AS $$
BEGIN
    -- A row lock, not an advisory lock: it is taken on the node that holds the
    -- row, so it serialises callers on every node of a Citus cluster.
    INSERT INTO payments.provider_payments (provider, provider_payment_id)
    VALUES (p_provider, p_provider_payment_id)
    ON CONFLICT ON CONSTRAINT provider_payments_pkey DO NOTHING;
    SELECT pp.payment_id, pp.customer_id INTO payment_id, customer_id FROM payments.provider_payments pp
    WHERE pp.provider_payment_id = p_provider_payment_id AND pp.provider = p_provider FOR UPDATE;
END
$$;
COMMENT ON FUNCTION payments._lock_provider_payment(text, text) IS
    'Internal: locks one provider payment id''s provider_payments row (made if new) for the rest of the transaction, serialising everything about it (linking it, matching webhooks to it), and returns the payment it is linked to, if any. Taken before any payment row lock, so lock order is always the same.';

CREATE FUNCTION payments._link_provider(p_customer_id text, p_payment_id text, p_provider text,
                                        p_provider_payment_id text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_linked payments.payments%ROWTYPE;
BEGIN
    SELECT * INTO v_linked FROM payments.payments p
    WHERE p.customer_id = p_customer_id AND p.id = p_payment_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment % not found', payments._shown(p_payment_id) USING ERRCODE = 'PM204';
    END IF;
    IF v_linked.provider_payment_id IS NULL THEN
        -- The caller holds this row's lock (_lock_provider_payment).
        UPDATE payments.provider_payments pp
        SET payment_id = p_payment_id, customer_id = p_customer_id, linked_at = now()
        WHERE pp.provider_payment_id = p_provider_payment_id AND pp.provider = p_provider AND pp.payment_id IS NULL;
        IF NOT FOUND THEN
            RAISE EXCEPTION '% payment % is already linked to another payment', payments._shown(p_provider),
                payments._shown(p_provider_payment_id)
                USING ERRCODE = 'PM203';
        END IF;
        UPDATE payments.payments p
        SET provider = p_provider, provider_payment_id = p_provider_payment_id, updated_at = now()
        WHERE p.customer_id = p_customer_id AND p.id = p_payment_id;
        -- Webhooks that arrived before the link can now be applied.
        PERFORM payments._apply_pending_webhooks(p_customer_id, p_payment_id, p_provider, p_provider_payment_id);
    ELSIF (v_linked.provider, v_linked.provider_payment_id) IS DISTINCT FROM (p_provider, p_provider_payment_id) THEN
        RAISE EXCEPTION 'payment % is linked to % payment %, not %', p_payment_id, v_linked.provider,
            v_linked.provider_payment_id, payments._shown(p_provider_payment_id) USING ERRCODE = 'PM203';
    END IF;
END
$$;
COMMENT ON FUNCTION payments._link_provider(text, text, text, text) IS
    'Internal: links a payment to its provider payment id once (PM203 if either side is linked elsewhere), then applies webhooks that were waiting for that id. The caller holds _lock_provider_payment.';

CREATE FUNCTION payments._evidence_problem_for(p_customer_id text, p_payment_id text, p_to text, p_object jsonb,
                                               p_provider text, p_provider_payment_id text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_payment  payments.payments%ROWTYPE;
    v_captured bigint;
BEGIN
    SELECT * INTO v_payment FROM payments.payments p WHERE p.customer_id = p_customer_id AND p.id = p_payment_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment % not found', payments._shown(p_payment_id) USING ERRCODE = 'PM204';
    END IF;
    -- Another object than the one the payment is linked to is no evidence, whatever its money.
    IF v_payment.provider_payment_id IS NOT NULL
       AND (v_payment.provider, v_payment.provider_payment_id) IS DISTINCT FROM (p_provider, p_provider_payment_id) THEN
        RETURN 'provider_payment_mismatch';
    END IF;
    -- Only a manual payment is captured by command (and perhaps in part).
    IF p_to = 'succeeded' AND v_payment.capture_method = 'manual' THEN
        v_captured := (payments._requested_command(p_customer_id, p_payment_id, 'capture')).amount_minor;
    END IF;
    IF v_captured IS NOT NULL AND v_captured <> v_payment.amount_minor THEN
        -- A partial capture: the authorization's money, and what was captured received.
        RETURN coalesce(payments._evidence_problem(v_payment.amount_minor, v_payment.currency, 'processing',
                                                   p_object ->> 'amount', p_object ->> 'currency', NULL, NULL),
                        CASE WHEN (p_object ->> 'amount_received') IS DISTINCT FROM v_captured::text
                             THEN 'amount_received_mismatch' END);
    END IF;
    RETURN payments._evidence_problem(v_payment.amount_minor, v_payment.currency, p_to,
                                      p_object ->> 'amount', p_object ->> 'currency',
                                      p_object ->> 'amount_received', p_object ->> 'amount_capturable');
END
$$;
COMMENT ON FUNCTION payments._evidence_problem_for(text, text, text, jsonb, text, text) IS
    'Internal: why a provider object (the given provider''s object id) is no evidence for moving the payment to a status: another object than the one the payment is linked to, or other money (an anomaly kind); NULL when it is evidence. PM204 for an unknown payment.';

CREATE FUNCTION payments._record_anomaly(p_customer_id text, p_payment_id text, p_kind text, p_source text,
                                         p_provider text, p_provider_payment_id text, p_observed jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_payment payments.payments%ROWTYPE;
BEGIN
    SELECT * INTO v_payment FROM payments.payments p
    WHERE p.customer_id = p_customer_id AND p.id = p_payment_id FOR UPDATE;
    -- The same evidence seen again (a retried call, a redelivered event) is one anomaly.
    IF EXISTS (SELECT 1 FROM payments.anomalies a
               WHERE a.customer_id = p_customer_id AND a.payment_id = p_payment_id AND a.kind = p_kind AND a.resolved_at IS NULL
                 AND a.provider = p_provider AND a.provider_payment_id IS NOT DISTINCT FROM p_provider_payment_id
                 AND a.observed - 'webhook_event_id' = p_observed - 'webhook_event_id') THEN
        RETURN;
    END IF;
    INSERT INTO payments.anomalies (id, payment_id, customer_id, kind, source, provider, provider_payment_id, observed)
    VALUES (payments._new_id('anm'), p_payment_id, p_customer_id, p_kind, p_source, p_provider,
            p_provider_payment_id, p_observed);
    -- In the history without moving the status.
    PERFORM payments._append_event(p_customer_id, p_payment_id, v_payment.status, v_payment.status, false, p_source, 'anomaly: ' || p_kind,
                                   jsonb_build_object('provider', p_provider, 'provider_payment_id', p_provider_payment_id,
                                                      'observed', p_observed));
END
$$;
COMMENT ON FUNCTION payments._record_anomaly(text, text, text, text, text, text, jsonb) IS
    'Internal: records that a provider object was no evidence for a payment: a row in payments.anomalies and an unapplied event in the payment''s history, once per open anomaly (the same evidence again adds nothing).';

CREATE OR REPLACE FUNCTION payments.resolve_anomaly(id text, resolution text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_anomaly payments.anomalies%ROWTYPE;
    v_status  text;
BEGIN
    IF resolution IS NULL OR length(resolution) NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'resolution must be 1 to 1000 characters' USING ERRCODE = 'PM100';
    END IF;
    SELECT * INTO v_anomaly FROM payments.anomalies a WHERE a.id = resolve_anomaly.id AND a.resolved_at IS NULL;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    SELECT p.status INTO v_status FROM payments.payments p
    WHERE p.customer_id = v_anomaly.customer_id AND p.id = v_anomaly.payment_id FOR UPDATE;
    UPDATE payments.anomalies a SET resolved_at = now(), resolution = resolve_anomaly.resolution
    WHERE a.customer_id = v_anomaly.customer_id AND a.id = v_anomaly.id AND a.resolved_at IS NULL;
    IF NOT FOUND THEN
        RETURN false;  -- a concurrent call closed it first
    END IF;
    PERFORM payments._append_event(v_anomaly.customer_id, v_anomaly.payment_id, v_status, v_status, false, 'admin',
                                   'anomaly resolved: ' || v_anomaly.kind,
                                   jsonb_build_object('anomaly_id', v_anomaly.id, 'resolution', resolve_anomaly.resolution));
    RETURN true;
END
$$;
COMMENT ON FUNCTION payments.resolve_anomaly(text, text) IS
    'Closes an open anomaly with an operator''s note (1 to 1000 characters), recorded in the payment''s history. false when it is unknown or already closed. Admin only.';

CREATE OR REPLACE FUNCTION payments.record_provider_result(payment_id text, provider text, provider_payment_id text,
                                                status text, response jsonb)
RETURNS SETOF payments.payment_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- A PaymentIntent's client_secret lets a browser confirm it; it never enters the history.
    v_response jsonb := coalesce(response, '{}') - 'client_secret';
    v_customer text;
    v_outcome  text;
    v_problem  text;
BEGIN
    IF provider IS NULL OR length(provider) NOT BETWEEN 1 AND 255 OR length(record_provider_result.provider_payment_id) > 255 THEN
        RAISE EXCEPTION 'provider (1 to 255 characters) is required; a provider payment id is at most 255'
            USING ERRCODE = 'PM100';
    END IF;
    v_customer := payments._customer_of(record_provider_result.payment_id);
    -- A provider object moves a payment or is linked to it only when it asks for the same money.
    IF record_provider_result.provider_payment_id IS NOT NULL OR status IN ('succeeded', 'requires_capture') THEN
        v_problem := payments._evidence_problem_for(v_customer, record_provider_result.payment_id, status, v_response,
                                                    provider, record_provider_result.provider_payment_id);
        IF v_problem IS NOT NULL THEN
            PERFORM payments._record_anomaly(v_customer, record_provider_result.payment_id, v_problem, 'provider',
                                             provider, record_provider_result.provider_payment_id,
                                             payments._observed(v_response));
            RETURN QUERY SELECT * FROM payments._result(v_customer, record_provider_result.payment_id, 'mismatch');
            RETURN;
        END IF;
    END IF;
    IF record_provider_result.provider_payment_id IS NOT NULL THEN
        PERFORM payments._lock_provider_payment(provider, record_provider_result.provider_payment_id);
        PERFORM payments._link_provider(v_customer, record_provider_result.payment_id, provider,
                                        record_provider_result.provider_payment_id);
    END IF;
    v_outcome := payments._transition(
        v_customer, record_provider_result.payment_id, status, 'provider', NULL,
        jsonb_build_object('provider', provider, 'provider_payment_id', record_provider_result.provider_payment_id,
                           'response', v_response),
        coalesce(v_response -> 'last_payment_error', v_response -> 'error'));
    RETURN QUERY SELECT * FROM payments._result(v_customer, record_provider_result.payment_id, v_outcome);
END
$$;
COMMENT ON FUNCTION payments.record_provider_result(text, text, text, text, jsonb) IS
    'Records what the provider answered for a payment: links its provider id (once; PM203 if it belongs elsewhere), applies webhooks that arrived for that id before the link (in event order), and moves the status as a provider report (a late report is stale, not an error). The response is the provider''s object: unless its amount and currency (and amount_received for succeeded, amount_capturable for requires_capture) equal the payment''s, nothing is linked or applied, an anomaly is recorded and the outcome is mismatch. The response is kept in the history without its client_secret; its last_payment_error becomes last_error.';

-- PL/pgSQL (Citus cannot plan parameterised SQL functions over its tables);
-- verify_event_chain wraps it because its argument and a result column share a name.
CREATE FUNCTION payments._verify_event_chain(p_payment_id text)
RETURNS TABLE (broken_payment_id text, first_bad_seq bigint, problem text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_customer text;
BEGIN
    IF p_payment_id IS NOT NULL THEN
        SELECT r.customer_id INTO v_customer FROM payments.payment_customers r WHERE r.payment_id = p_payment_id;
        IF NOT FOUND THEN
            RETURN;  -- no payment, no history to break
        END IF;
    END IF;
    -- Windows partitioned by the customer too, so Citus checks each shard where it lives.
    RETURN QUERY
    WITH events AS (
        SELECT e.*,
               lag(e.seq) OVER w AS prior_seq,
               lag(e.hash) OVER w AS prior_hash
        FROM payments.payment_events e
        WHERE p_payment_id IS NULL OR (e.customer_id = v_customer AND e.payment_id = p_payment_id)
        WINDOW w AS (PARTITION BY e.customer_id, e.payment_id ORDER BY e.seq)
    ), problems AS (
        SELECT ev.customer_id, ev.payment_id, ev.seq,
               CASE
                   WHEN ev.seq <> coalesce(ev.prior_seq, 0) + 1 THEN 'events missing before this one'
                   WHEN ev.prev_hash IS DISTINCT FROM ev.prior_hash THEN 'prev_hash does not match the previous event'
                   WHEN ev.hash <> payments._event_hash(ev.prev_hash, ev.payment_id, ev.seq, ev.from_status,
                                                        ev.to_status, ev.applied, ev.source, ev.reason,
                                                        ev.data::text, payments._epoch_micros(ev.created_at))
                       THEN 'hash does not match the event'
               END AS problem
        FROM events ev
    ), firsts AS (
        SELECT DISTINCT ON (pr.customer_id, pr.payment_id) pr.payment_id, pr.seq, pr.problem
        FROM problems pr
        WHERE pr.problem IS NOT NULL
        ORDER BY pr.customer_id, pr.payment_id, pr.seq
    )
    SELECT f.payment_id, f.seq, f.problem FROM firsts f ORDER BY f.payment_id;
END
$$;
COMMENT ON FUNCTION payments._verify_event_chain(text) IS 'Internal: what verify_event_chain returns.';

CREATE OR REPLACE FUNCTION payments.verify_event_chain(payment_id text DEFAULT NULL)
RETURNS TABLE (payment_id text, seq bigint, problem text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    -- A login bound to one customer hears only of its customer's payments.
    SELECT v.* FROM payments._verify_event_chain(verify_event_chain.payment_id) v
    WHERE payments._bound_customer() IS NULL OR payments._customer_of(v.broken_payment_id) = payments._bound_customer();
END;
COMMENT ON FUNCTION payments.verify_event_chain(text) IS
    'Recomputes the hash chain of one payment''s history (or of every payment''s when payment_id is NULL) and returns, per broken chain, the first event that does not match. No rows: the history is intact.';

CREATE OR REPLACE FUNCTION payments.webhook_tolerance() RETURNS interval
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN coalesce((SELECT s.webhook_tolerance FROM payments.settings s), interval '5 minutes');
END
$$;
COMMENT ON FUNCTION payments.webhook_tolerance() IS 'The webhook timestamp tolerance in force (default 5 minutes).';

CREATE FUNCTION payments._apply_pending_webhooks(p_customer_id text, p_payment_id text, p_provider text,
                                                 p_provider_payment_id text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    w         record;
    v_problem text;
BEGIN
    FOR w IN
        SELECT wp.* FROM payments.webhook_pending wp
        WHERE wp.provider_payment_id = p_provider_payment_id AND wp.provider = p_provider
        ORDER BY wp.event_created, wp.event_id
    LOOP
        v_problem := payments._evidence_problem_for(p_customer_id, p_payment_id, w.to_status, w.object, p_provider,
                                                    p_provider_payment_id);
        IF v_problem IS NOT NULL THEN
            PERFORM payments._record_anomaly(p_customer_id, p_payment_id, v_problem, 'webhook', p_provider,
                                             p_provider_payment_id,
                                             payments._observed(w.object) || jsonb_build_object('webhook_event_id', w.event_id));
        ELSE
            PERFORM payments._transition(p_customer_id, p_payment_id, w.to_status, 'webhook', w.event_type,
                                         jsonb_build_object('webhook_event_id', w.event_id, 'event_created', w.event_created,
                                                            'arrived_before_link', true),
                                         w.last_error);
        END IF;
        DELETE FROM payments.webhook_pending wp
        WHERE wp.provider_payment_id = p_provider_payment_id AND wp.provider = w.provider AND wp.event_id = w.event_id;
    END LOOP;
END
$$;
COMMENT ON FUNCTION payments._apply_pending_webhooks(text, text, text, text) IS
    'Internal: applies, oldest first, the webhooks that waited for a provider payment id, as webhook reports; one whose object asks for other money is recorded as an anomaly instead.';

CREATE FUNCTION payments._apply_webhook(p_provider text, p_event_id text, p_event_type text,
                                        p_event_created timestamptz, p_object jsonb,
                                        OUT customer_id text, OUT payment_id text, OUT result text)
LANGUAGE plpgsql AS $$
DECLARE
    v_to      text := payments._stripe_event_status(p_event_type);
    v_ppid    text := p_object ->> 'id';
    v_hint    text := p_object -> 'metadata' ->> 'payment_id';
    v_by_hint boolean := false;
    v_linked  record;
    v_problem text;
BEGIN
    -- The caller holds the provider id's lock (_lock_provider_payment) whenever v_to and v_ppid are set.
    IF v_to IS NULL OR v_ppid IS NULL THEN
        result := 'ignored';
        RETURN;
    END IF;
    SELECT pp.payment_id, pp.customer_id INTO v_linked FROM payments.provider_payments pp
    WHERE pp.provider_payment_id = v_ppid AND pp.provider = p_provider;
    payment_id := v_linked.payment_id;
    customer_id := v_linked.customer_id;
    IF payment_id IS NULL AND v_hint IS NOT NULL THEN
        -- Our own id in metadata: the object is linked to that payment if it is evidence for it.
        SELECT r.payment_id, r.customer_id INTO payment_id, customer_id FROM payments.payment_customers r
        WHERE r.payment_id = v_hint;
        v_by_hint := true;
    END IF;
    IF payment_id IS NOT NULL THEN
        v_problem := payments._evidence_problem_for(customer_id, payment_id, v_to, p_object, p_provider, v_ppid);
        IF v_problem IS NULL AND v_by_hint THEN
            PERFORM payments._link_provider(customer_id, payment_id, p_provider, v_ppid);
        END IF;
    END IF;
    IF payment_id IS NULL THEN
        result := 'pending_match';
    ELSIF v_problem IS NOT NULL THEN
        PERFORM payments._record_anomaly(customer_id, payment_id, v_problem, 'webhook', p_provider, v_ppid,
                                         payments._observed(p_object) || jsonb_build_object('webhook_event_id', p_event_id));
        result := 'mismatch';
    ELSE
        result := payments._transition(customer_id, payment_id, v_to, 'webhook', p_event_type,
                                       jsonb_build_object('webhook_event_id', p_event_id, 'event_created', p_event_created),
                                       p_object -> 'last_payment_error');
    END IF;
END
$$;
COMMENT ON FUNCTION payments._apply_webhook(text, text, text, timestamptz, jsonb) IS
    'Internal, step 4 of ingest_webhook: matches the event''s object to a payment (by provider id, or by metadata.payment_id, which links it) and applies its status as a webhook report. An object asking for other money than the payment, or another object than the one the payment is linked to, is an anomaly (result mismatch), never applied. result: applied | noop | stale | ignored | pending_match | mismatch.';

CREATE FUNCTION payments._apply_money_webhook(p_provider text, p_event_id text, p_subject text, p_ppid text,
                                              p_object jsonb, OUT customer_id text, OUT payment_id text, OUT result text)
LANGUAGE plpgsql AS $$
DECLARE
    v_payment payments.payments%ROWTYPE;
    v_one     text;
BEGIN
    -- The caller holds the provider payment id's lock; the payment's row lock comes next.
    SELECT pp.payment_id, pp.customer_id INTO payment_id, customer_id FROM payments.provider_payments pp
    WHERE pp.provider_payment_id = p_ppid AND pp.provider = p_provider;
    IF payment_id IS NULL THEN
        -- About a payment that is not ours (or not linked): kept in the log, moves nothing.
        customer_id := NULL;
        result := 'ignored';
        RETURN;
    END IF;
    SELECT * INTO v_payment FROM payments.payments p
    WHERE p.customer_id = _apply_money_webhook.customer_id AND p.id = _apply_money_webhook.payment_id FOR UPDATE;
    IF p_subject = 'refund' THEN
        result := payments._apply_refund_object(v_payment, NULL, p_object, 'webhook', p_event_id);
    ELSIF p_subject = 'dispute' THEN
        result := payments._apply_dispute_object(v_payment, p_object, 'webhook', p_event_id);
    ELSE
        -- A Charge: each refund it lists (the strongest outcome answers for the event).
        result := 'ignored';
        FOR v_one IN
            SELECT payments._apply_refund_object(v_payment, NULL, r.value || jsonb_build_object('payment_intent', p_ppid),
                                                 'webhook', p_event_id)
            FROM jsonb_array_elements(CASE WHEN jsonb_typeof(p_object -> 'refunds' -> 'data') = 'array'
                                           THEN p_object -> 'refunds' -> 'data' ELSE '[]' END) r
        LOOP
            result := CASE WHEN 'mismatch' IN (result, v_one) THEN 'mismatch'
                           WHEN 'applied' IN (result, v_one) THEN 'applied'
                           WHEN 'stale' IN (result, v_one) THEN 'stale'
                           WHEN 'noop' IN (result, v_one) THEN 'noop' ELSE 'ignored' END;
        END LOOP;
    END IF;
    IF result = 'ignored' THEN
        customer_id := NULL;
        payment_id := NULL;
    END IF;
END
$$;
COMMENT ON FUNCTION payments._apply_money_webhook(text, text, text, text, jsonb) IS
    'Internal, step 4 of ingest_webhook for refund, charge and dispute events: finds the payment linked to the object''s payment_intent and applies the Refund (or each refund a Charge lists) or the Dispute to it. result: applied | noop | stale | ignored | mismatch.';

CREATE OR REPLACE FUNCTION payments.ingest_webhook(provider text, headers jsonb, body bytea) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_secret_id text;
    v_event     record;
    v_ppid      text;
    v_applied   record;
    v_status    text;
    v_subject   text;
BEGIN
    IF provider IS NULL OR headers IS NULL OR body IS NULL THEN
        RAISE EXCEPTION 'provider, headers and body are required' USING ERRCODE = 'PM100';
    END IF;
    v_secret_id := payments._verify_webhook(provider, headers, body);
    v_event := payments._parse_stripe_event(body);

    -- 3. Once per (provider, event id), even under concurrent deliveries. An
    -- event that moves money is serialised by its provider payment id's row
    -- lock (a redelivery names the same object); any other one changes nothing
    -- but its own row, whose primary key keeps it single.
    v_subject := payments._stripe_event_subject(v_event.event_type);
    v_ppid := CASE WHEN v_subject = 'payment' THEN v_event.object ->> 'id'
                   WHEN v_subject IS NOT NULL THEN v_event.object ->> 'payment_intent' END;
    IF length(v_ppid) > 255 THEN
        RAISE EXCEPTION 'webhook event''s payment_intent is longer than 255 characters' USING ERRCODE = 'PM304';
    END IF;
    IF v_ppid IS NOT NULL THEN
        PERFORM payments._lock_provider_payment(provider, v_ppid);
    END IF;
    SELECT w.customer_id, w.payment_id, 'duplicate' AS result INTO v_applied FROM payments.webhook_events w
    WHERE w.event_id = v_event.event_id AND w.provider = ingest_webhook.provider;
    IF NOT FOUND THEN
        IF v_subject = 'payment' OR v_ppid IS NULL THEN
            v_applied := payments._apply_webhook(provider, v_event.event_id, v_event.event_type, v_event.event_created,
                                                 v_event.object);
        ELSE
            v_applied := payments._apply_money_webhook(provider, v_event.event_id, v_subject, v_ppid, v_event.object);
        END IF;
        -- 5. Store it, append-only; an unmatched one also waits for its payment.
        INSERT INTO payments.webhook_events (id, provider, event_id, event_type, event_created, provider_payment_id,
                                             customer_id, payment_id, result, secret_id, headers, body)
        VALUES (payments._new_id('whe'), provider, v_event.event_id, v_event.event_type, v_event.event_created,
                coalesce(v_ppid, v_event.object ->> 'id'), v_applied.customer_id, v_applied.payment_id, v_applied.result, v_secret_id,
                headers, body)
        ON CONFLICT ON CONSTRAINT webhook_events_pkey DO NOTHING;
        IF NOT FOUND THEN
            IF v_applied.result <> 'ignored' THEN
                -- The same event id for another object: undo, and let the retry see the stored event.
                RAISE EXCEPTION 'webhook event % was stored by a concurrent delivery', payments._shown(v_event.event_id)
                    USING ERRCODE = '40001', HINT = 'retry the delivery';
            END IF;
            v_applied.result := 'duplicate';
        ELSIF v_applied.result = 'pending_match' THEN
            INSERT INTO payments.webhook_pending (provider, event_id, provider_payment_id, event_type, event_created,
                                                  to_status, last_error, object)
            VALUES (provider, v_event.event_id, v_ppid, v_event.event_type, v_event.event_created,
                    payments._stripe_event_status(v_event.event_type), v_event.object -> 'last_payment_error',
                    v_event.object);
        END IF;
    END IF;
    IF v_applied.payment_id IS NOT NULL THEN
        SELECT p.status INTO v_status FROM payments.payments p
        WHERE p.customer_id = v_applied.customer_id AND p.id = v_applied.payment_id;
    END IF;
    RETURN jsonb_build_object('result', v_applied.result, 'event_id', v_event.event_id, 'payment_id', v_applied.payment_id,
                              'status', v_status);
END
$$;
COMMENT ON FUNCTION payments.ingest_webhook(text, jsonb, bytea) IS
    'Verifies a webhook (the exact body bytes and its headers) against the provider''s active secrets, stores it once, and applies it: {"result": applied | noop | stale | ignored | pending_match | mismatch | duplicate, "event_id", "payment_id", "status"}. Bad signature: PM301; timestamp outside payments.webhook_tolerance() (default 5 minutes): PM302; no active secret: PM303; not a Stripe event: PM304. An event never moves a payment backwards or out of a final state (stale); one for a payment not yet linked waits in webhook_pending. Refund events (refund.created, refund.updated, refund.failed, charge.refund.updated, charge.refunded) move the payment''s refunds, charge.dispute.* events its disputes, each checked against them as payments are.';

-- Its result gains the key's customer: made anew.
DROP FUNCTION payments.authenticate_api_key(text);
CREATE FUNCTION payments.authenticate_api_key(api_key text)
RETURNS TABLE (key_id text, scopes text[], customer_id text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY SELECT k.id, k.scopes, k.customer_id FROM payments.api_keys k
    WHERE k.key_hash = sha256(convert_to(authenticate_api_key.api_key, 'UTF8')) AND k.revoked_at IS NULL;
END
$$;
COMMENT ON FUNCTION payments.authenticate_api_key(text) IS
    'The key id, scopes and bound customer (NULL: a platform key) of a valid, unrevoked API key; no row otherwise. The lookup is by hash, so no key is compared as text.';

-- ---------------------------------------------------------------------------
-- Reading a payment's history over HTTP
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION payments.list_payment_events(payment_id text) RETURNS SETOF payments.payment_history
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_customer text := payments._customer_of(list_payment_events.payment_id);
BEGIN
    RETURN QUERY SELECT * FROM payments.payment_history h
    WHERE h.customer_id = v_customer AND h.payment_id = list_payment_events.payment_id ORDER BY h.seq;
END
$$;
COMMENT ON FUNCTION payments.list_payment_events(text) IS 'A payment''s history in order; PM204 when the payment does not exist.';

CREATE OR REPLACE FUNCTION payments.claim_provider_work(lim int DEFAULT 10, min_age interval DEFAULT '10 seconds',
                                             lease interval DEFAULT '30 seconds', max_backoff interval DEFAULT '1 hour')
RETURNS TABLE (payment_id text, kind text, customer_id text, amount_minor bigint, currency text,
               payment_method text, capture_method text, description text, provider text, provider_payment_id text,
               status text, attempt integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_due      record;
    v_attempts integer;
BEGIN
    IF lim IS NULL OR lim NOT BETWEEN 1 AND 1000 OR min_age IS NULL OR lease IS NULL OR lease <= interval '0'
       OR max_backoff IS NULL OR max_backoff < lease THEN
        RAISE EXCEPTION 'lim is 1 to 1000; min_age, a positive lease and max_backoff (at least the lease) are required'
            USING ERRCODE = 'PM100';
    END IF;
    -- Candidates first, without locks (on Citus one query over every shard);
    -- then each is claimed where it lives: locked unless another claimer holds
    -- it (SKIP LOCKED), re-checked, and stamped with its lease. The row lock
    -- lasts until this call commits, never across the provider calls the
    -- caller makes next (as pgmq's read sets a visibility timeout).
    FOR v_due IN
        SELECT p.customer_id, p.id
        FROM payments.payments p
        WHERE p.status IN ('requires_confirmation', 'processing')
          AND p.updated_at < now() - min_age
          AND (p.reconcile_after IS NULL OR p.reconcile_after <= now())
          AND (p.provider_payment_id IS NOT NULL OR p.payment_method IS NOT NULL)
        ORDER BY coalesce(p.reconcile_after, p.updated_at)
        LIMIT lim
    LOOP
        SELECT p.reconcile_attempts INTO v_attempts FROM payments.payments p
        WHERE p.customer_id = v_due.customer_id AND p.id = v_due.id
          AND p.status IN ('requires_confirmation', 'processing')
          AND (p.reconcile_after IS NULL OR p.reconcile_after <= now())
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        RETURN QUERY
        UPDATE payments.payments p
        SET reconcile_attempts = v_attempts + 1,
            -- Each attempt waits longer (twice the last, from min_age), at least the lease, at most max_backoff.
            reconcile_after = now() + least(max_backoff, greatest(lease, min_age * power(2, least(v_attempts, 20))))
        WHERE p.customer_id = v_due.customer_id AND p.id = v_due.id
        RETURNING p.id,
                  CASE WHEN p.provider_payment_id IS NULL THEN 'create' ELSE 'refresh' END,
                  p.customer_id, p.amount_minor, p.currency, p.payment_method, p.capture_method, p.description,
                  p.provider, p.provider_payment_id, p.status, p.reconcile_attempts;
    END LOOP;
END
$$;
COMMENT ON FUNCTION payments.claim_provider_work(int, interval, interval, interval) IS
    'Claims up to lim payments whose provider state is unknown, untouched for min_age and not leased: create (the provider call never completed: retry it with the same idempotency key) or refresh (retrieve the provider''s object). The claim is a lease, not a lock: it is stamped in reconcile_after and committed at once, so the caller calls the provider with no transaction open and records each answer on its own. A lease lasts at least lease and grows with each attempt (doubling from min_age, at most max_backoff), so a payment that keeps failing waits longer and never holds up the others; a status change clears it. Gateway replicas share the work; a killed one''s payments come back when their lease ends.';

CREATE OR REPLACE FUNCTION payments.record_provider_error(payment_id text, error jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_payment payments.payments := payments._locked_payment(record_provider_error.payment_id);
BEGIN
    UPDATE payments.payments p SET last_error = error, updated_at = now()
    WHERE p.customer_id = v_payment.customer_id AND p.id = v_payment.id;
    PERFORM payments._append_event(v_payment.customer_id, v_payment.id, v_payment.status, v_payment.status, false,
                                   'provider', 'provider call failed', jsonb_build_object('last_error', error));
END
$$;
COMMENT ON FUNCTION payments.record_provider_error(text, jsonb) IS
    'Notes that a provider call failed (timeout, outage) without changing the status: last_error is set and the history gets an unapplied event; the payment keeps awaiting the provider, and the reconciler tries again after min_age.';

-- ---------------------------------------------------------------------------
-- Views
-- ---------------------------------------------------------------------------
CREATE OR REPLACE VIEW payments.payment_history WITH (security_invoker) AS
SELECT e.payment_id, e.seq, e.from_status, e.to_status, e.applied, e.source, e.reason, e.data, e.created_at,
       encode(e.hash, 'hex') AS hash, e.customer_id
FROM payments.payment_events e;
COMMENT ON VIEW payments.payment_history IS
    'Every payment''s history in order (payment_id, seq). applied = false marks a stale report: recorded, not applied.';

CREATE VIEW payments.customer_payments WITH (security_invoker) AS
SELECT p.customer_id,
       p.currency,
       count(*) FILTER (WHERE p.status = 'succeeded') AS succeeded_count,
       -- sum of minor units times one minor unit: exact, at the currency's scale.
       coalesce(sum(p.amount_minor) FILTER (WHERE p.status = 'succeeded'), 0)
           * payments.to_major(1, p.currency) AS succeeded_amount,
       max(p.updated_at) FILTER (WHERE p.status = 'succeeded') AS last_succeeded_at,
       count(*) FILTER (WHERE NOT s.terminal) AS open_count,
       count(*) FILTER (WHERE p.status = 'failed') AS failed_count
FROM payments.payments p
JOIN payments.statuses() s ON s.status = p.status
GROUP BY p.customer_id, p.currency;
COMMENT ON VIEW payments.customer_payments IS
    'Per customer and currency: how many payments succeeded and for how much, when the last one did, and how many are open or failed. Answers "has this customer paid?".';

CREATE VIEW payments.open_anomalies WITH (security_invoker) AS
SELECT a.id, a.payment_id, a.customer_id, a.kind, a.source, a.provider, a.provider_payment_id,
       p.amount_minor AS expected_amount_minor, p.currency AS expected_currency, p.provider_payment_id AS linked_provider_payment_id,
       a.observed, p.status AS payment_status, a.created_at
FROM payments.anomalies a
JOIN payments.payments p ON p.customer_id = a.customer_id AND p.id = a.payment_id
WHERE a.resolved_at IS NULL;
COMMENT ON VIEW payments.open_anomalies IS
    'Provider objects that named a payment but were not applied (other money, or another object than the linked one), not yet resolved: what the payment expected beside what was observed. Close one with payments.resolve_anomaly.';

-- Through a function with its owner's rights: the log's bodies and headers
-- stay unreadable to readers on Citus too, where a view's query reaches the
-- shards with the reader's own rights.
CREATE FUNCTION payments._webhook_log()
RETURNS TABLE (id text, provider text, event_id text, event_type text, event_created timestamptz,
               provider_payment_id text, payment_id text, result text, still_pending boolean, received_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- The provider's log is the platform's: a login bound to one customer sees none of it.
    IF payments._bound_customer() IS NOT NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT w.id, w.provider, w.event_id, w.event_type, w.event_created, w.provider_payment_id, w.payment_id, w.result,
           wp.event_id IS NOT NULL, w.received_at
    FROM payments.webhook_events w
    -- A join, not EXISTS: Citus plans it (the pending ids first, then each shard of the log).
    LEFT JOIN (SELECT p.provider, p.event_id FROM payments.webhook_pending p) wp
           ON wp.provider = w.provider AND wp.event_id = w.event_id;
END
$$;
COMMENT ON FUNCTION payments._webhook_log() IS 'Internal: the rows of payments.webhook_log.';

CREATE VIEW payments.webhook_log AS
SELECT l.id, l.provider, l.event_id, l.event_type, l.event_created, l.provider_payment_id, l.payment_id, l.result,
       l.still_pending, l.received_at
FROM payments._webhook_log() l;
COMMENT ON VIEW payments.webhook_log IS
    'Received webhooks without their bodies, headers or secrets: what arrived, what it matched and what was done. still_pending: waiting for its payment to be linked.';

-- ---------------------------------------------------------------------------
-- Capture and cancel (sql/lifecycle.sql)
-- ---------------------------------------------------------------------------
-- payments: capture and cancel (and the outbox refunds use too). SQL decides, the gateway carries the provider
-- call out: each command validates, records the intent in the payment's
-- history and queues the provider call in payments.provider_commands (a
-- transactional outbox: it exists only if the caller's transaction commits).
-- The gateway claims queued commands with leases, as the reconciler claims
-- payments, calls the provider and records the answer through record_command_result.

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

CREATE FUNCTION payments._requested_command(p_customer_id text, p_payment_id text, p_kind text)
RETURNS payments.provider_commands
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_command payments.provider_commands%ROWTYPE;
BEGIN
    SELECT * INTO v_command FROM payments.provider_commands c
    WHERE c.customer_id = p_customer_id AND c.payment_id = p_payment_id AND c.kind = p_kind
      AND c.status IN ('pending', 'succeeded')
    ORDER BY c.created_at DESC LIMIT 1;
    RETURN v_command;
END
$$;
COMMENT ON FUNCTION payments._requested_command(text, text, text) IS
    'Internal: the latest capture or cancel asked of the provider for a payment, pending or done (all NULL when none): what a report of succeeded or canceled is checked against and records (the amount captured, the cancellation reason).';

CREATE FUNCTION payments._queue_command(p_payment payments.payments, p_kind text, p_amount_minor bigint,
                                        p_reason text, p_refund_id text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_pending payments.provider_commands%ROWTYPE;
    v_id      text := payments._new_id('cmd');
BEGIN
    -- The caller holds the payment's row lock, so no other command is queued meanwhile.
    SELECT * INTO v_pending FROM payments.provider_commands c
    WHERE c.customer_id = p_payment.customer_id AND c.payment_id = p_payment.id AND c.status = 'pending'
      AND c.kind <> 'refund';
    IF FOUND AND p_kind <> 'refund' THEN
        IF (v_pending.kind, v_pending.amount_minor, v_pending.reason) IS NOT DISTINCT FROM (p_kind, p_amount_minor, p_reason) THEN
            RETURN;  -- the same command asked again: it is already queued
        END IF;
        RAISE EXCEPTION 'payment % has a % pending at the provider', p_payment.id, v_pending.kind
            USING ERRCODE = 'PM208', HINT = 'wait for it to finish (the payment''s history shows it)';
    END IF;
    INSERT INTO payments.provider_commands (id, customer_id, payment_id, kind, amount_minor, reason, refund_id)
    VALUES (v_id, p_payment.customer_id, p_payment.id, p_kind, p_amount_minor, p_reason, p_refund_id);
    PERFORM payments._append_event(p_payment.customer_id, p_payment.id, p_payment.status, p_payment.status, false,
                                   'api', p_kind || ' requested',
                                   jsonb_strip_nulls(jsonb_build_object('command_id', v_id, 'amount_minor', p_amount_minor,
                                                                        'reason', p_reason, 'refund_id', p_refund_id)));
    -- Wakes the gateway's worker at commit when notifications are on (it also polls).
    IF payments._notifying() THEN
        PERFORM pg_catalog.pg_notify('payments_provider_commands', p_payment.customer_id || '/' || v_id);
    END IF;
END
$$;
COMMENT ON FUNCTION payments._queue_command(payments.payments, text, bigint, text, text) IS
    'Internal: queues one provider command for a payment whose row the caller has locked, notes the request in its history and, when notifications are on (set_event_notifications), wakes the gateway (NOTIFY payments_provider_commands). A capture or cancel asked again is a no-op; another one while one is pending is PM208. Refunds (p_refund_id) queue side by side.';

CREATE FUNCTION payments.capture_payment(payment_id text, amount numeric DEFAULT NULL)
RETURNS SETOF payments.payment_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_payment payments.payments := payments._locked_payment(capture_payment.payment_id);
    v_minor   bigint;
BEGIN
    IF v_payment.status <> 'requires_capture' THEN
        RAISE EXCEPTION 'payment % is %, not requires_capture: there is nothing to capture', v_payment.id,
            v_payment.status USING ERRCODE = 'PM206';
    END IF;
    v_minor := CASE WHEN amount IS NULL THEN v_payment.amount_minor ELSE payments.to_minor(amount, v_payment.currency) END;
    IF v_minor > v_payment.amount_minor THEN
        RAISE EXCEPTION 'cannot capture % %: payment % authorized %', amount, v_payment.currency, v_payment.id,
            payments.to_major(v_payment.amount_minor, v_payment.currency) USING ERRCODE = 'PM207';
    END IF;
    PERFORM payments._queue_command(v_payment, 'capture', v_minor, NULL);
    RETURN QUERY SELECT * FROM payments._result(v_payment.customer_id, v_payment.id, 'queued');
END
$$;
COMMENT ON FUNCTION payments.capture_payment(text, numeric) IS
    'Captures an authorized (requires_capture) payment, in full or amount of it (the rest of the authorization is released): queues the capture for the provider and returns the payment with outcome queued; it becomes succeeded, with amount_captured, when the provider confirms. More than authorized: PM207; another status: PM206; another command pending: PM208. Runs in the caller''s transaction: a rollback queues nothing.';

CREATE FUNCTION payments.cancel_payment(payment_id text, reason text DEFAULT NULL)
RETURNS SETOF payments.payment_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_payment  payments.payments%ROWTYPE;
    v_customer text;
    v_outcome  text;
BEGIN
    IF reason IS NOT NULL AND (reason = 'automatic' OR NOT payments._is_allowed('cancellation_reason', reason)) THEN
        RAISE EXCEPTION 'reason must be duplicate, fraudulent, requested_by_customer or abandoned, not %',
            quote_literal(payments._shown(reason)) USING ERRCODE = 'PM100';
    END IF;
    v_payment := payments._locked_payment(cancel_payment.payment_id);
    v_customer := v_payment.customer_id;
    -- Stripe cancels a payment in these statuses only (not while processing).
    IF v_payment.status NOT IN ('requires_payment_method', 'requires_confirmation', 'requires_action', 'requires_capture') THEN
        RAISE EXCEPTION 'payment % is % and cannot be canceled', v_payment.id, v_payment.status USING ERRCODE = 'PM206';
    END IF;
    IF v_payment.provider_payment_id IS NOT NULL THEN
        PERFORM payments._queue_command(v_payment, 'cancel', NULL, reason);
        RETURN QUERY SELECT * FROM payments._result(v_customer, v_payment.id, 'queued');
        RETURN;
    END IF;
    IF v_payment.payment_method IS NOT NULL THEN
        -- The provider may be creating it right now (the gateway or its reconciler):
        -- canceling here could cancel a payment the provider then charges.
        RAISE EXCEPTION 'payment % is being created at the provider; cancel it once it has a provider id', v_payment.id
            USING ERRCODE = 'PM209';
    END IF;
    -- Never sent to a provider: canceled here and now.
    UPDATE payments.payments p SET cancellation_reason = cancel_payment.reason
    WHERE p.customer_id = v_customer AND p.id = v_payment.id;
    v_outcome := payments._transition(v_customer, v_payment.id, 'canceled', 'api', coalesce(reason, 'canceled'), '{}', NULL);
    RETURN QUERY SELECT * FROM payments._result(v_customer, v_payment.id, v_outcome);
END
$$;
COMMENT ON FUNCTION payments.cancel_payment(text, text) IS
    'Cancels a payment in requires_payment_method, requires_confirmation, requires_action or requires_capture (PM206 otherwise; final afterwards). One the provider holds is canceled there first: the cancel is queued (outcome queued) and the payment becomes canceled when the provider confirms; one never sent to a provider is canceled at once (outcome applied). A payment the provider may be creating right now (a payment method, no provider id yet): PM209. reason: duplicate, fraudulent, requested_by_customer or abandoned.';

CREATE FUNCTION payments.cancel_expired_authorizations(older_than interval DEFAULT '7 days', at timestamptz DEFAULT now(),
                                                       provider text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_due     record;
    v_payment payments.payments%ROWTYPE;
    v_queued  integer := 0;
BEGIN
    IF older_than IS NULL OR older_than < interval '1 second' OR at IS NULL THEN
        RAISE EXCEPTION 'older_than (at least 1 second) and at are required' USING ERRCODE = 'PM100';
    END IF;
    FOR v_due IN
        SELECT p.customer_id, p.id FROM payments.payments p
        WHERE p.status = 'requires_capture' AND p.updated_at < at - older_than
          AND (cancel_expired_authorizations.provider IS NULL OR p.provider = cancel_expired_authorizations.provider)
        ORDER BY p.updated_at LIMIT 1000
    LOOP
        -- Each where it lives, skipping one another call holds; re-checked under the lock.
        SELECT * INTO v_payment FROM payments.payments p
        WHERE p.customer_id = v_due.customer_id AND p.id = v_due.id AND p.status = 'requires_capture'
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        -- Not while another command is pending, and once only: a refused automatic
        -- cancel is left to an operator (it shows in provider_commands), never retried in a loop.
        CONTINUE WHEN EXISTS (SELECT 1 FROM payments.provider_commands c
                              WHERE c.customer_id = v_due.customer_id AND c.payment_id = v_due.id
                                AND (c.status = 'pending' OR (c.kind = 'cancel' AND c.reason = 'automatic')));
        PERFORM payments._queue_command(v_payment, 'cancel', NULL, 'automatic');
        v_queued := v_queued + 1;
    END LOOP;
    RETURN v_queued;
END
$$;
COMMENT ON FUNCTION payments.cancel_expired_authorizations(interval, timestamptz, text) IS
    'Queues a cancel (reason automatic) for every authorization (of one provider, when given) left uncaptured longer than older_than (default 7 days, Stripe''s window; at least 1 second) at time at, and returns how many (at most 1000 per call). A payment gets one automatic cancel: if the provider refuses it, it waits for an operator. The gateway calls it on a timer for its provider; safe to call twice or from two places at once.';

CREATE FUNCTION payments.claim_provider_commands(lim int DEFAULT 10, lease interval DEFAULT '30 seconds',
                                                 only_payment_id text DEFAULT NULL, only_provider text DEFAULT NULL)
RETURNS TABLE (command_id text, kind text, payment_id text, customer_id text, provider text, provider_payment_id text,
               amount_minor bigint, currency text, reason text, attempt integer, refund_id text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_only_customer text;
    v_due        record;
    v_attempts   integer;
    v_kind       text;
    v_payment_id text;
    v_refund_id  text;
    v_status     text;
BEGIN
    IF lim IS NULL OR lim NOT BETWEEN 1 AND 1000 OR lease IS NULL OR lease <= interval '0' THEN
        RAISE EXCEPTION 'lim is 1 to 1000 and the lease positive' USING ERRCODE = 'PM100';
    END IF;
    IF only_payment_id IS NOT NULL THEN
        v_only_customer := payments._customer_of(only_payment_id);
    END IF;
    -- As claim_provider_work: candidates without locks, then each claimed where it lives.
    FOR v_due IN
        SELECT c.customer_id, c.id FROM payments.provider_commands c
        JOIN payments.payments p ON p.customer_id = c.customer_id AND p.id = c.payment_id
        WHERE c.status = 'pending' AND c.run_after <= now()
          AND (only_payment_id IS NULL OR (c.customer_id = v_only_customer AND c.payment_id = only_payment_id))
          AND (only_provider IS NULL OR p.provider = only_provider)
        ORDER BY c.run_after LIMIT lim
    LOOP
        SELECT c.attempts, c.kind, c.payment_id, c.refund_id INTO v_attempts, v_kind, v_payment_id, v_refund_id
        FROM payments.provider_commands c
        WHERE c.customer_id = v_due.customer_id AND c.id = v_due.id AND c.status = 'pending' AND c.run_after <= now()
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        -- A payment (or refund) that moved on meanwhile (a webhook, an administrator) is not asked about again.
        IF v_kind = 'refund' THEN
            -- One the provider already reported (a webhook linked its id) is not asked for again.
            SELECT CASE WHEN r.provider_refund_id IS NULL THEN r.status ELSE 'made' END INTO v_status
            FROM payments.refunds r
            WHERE r.customer_id = v_due.customer_id AND r.id = v_refund_id;
        ELSE
            SELECT p.status INTO v_status FROM payments.payments p
            WHERE p.customer_id = v_due.customer_id AND p.id = v_payment_id;
        END IF;
        IF (CASE v_kind WHEN 'refund' THEN v_status <> 'pending'
                        WHEN 'capture' THEN v_status <> 'requires_capture'
                        ELSE v_status NOT IN ('requires_capture', 'requires_payment_method', 'requires_confirmation',
                                              'requires_action') END) THEN
            UPDATE payments.provider_commands c
            SET status = CASE WHEN v_status = 'made' THEN 'succeeded' ELSE 'failed' END, finished_at = now(),
                last_error = CASE WHEN v_status <> 'made' THEN jsonb_build_object('message',
                    CASE v_kind WHEN 'refund' THEN 'the refund is ' ELSE 'the payment is ' END || v_status
                    || ': nothing to ' || v_kind) END
            WHERE c.customer_id = v_due.customer_id AND c.id = v_due.id;
            CONTINUE;
        END IF;
        UPDATE payments.provider_commands c
        SET attempts = v_attempts + 1,
            -- Each attempt waits longer: the lease, doubled per attempt, at most an hour.
            run_after = now() + least(interval '1 hour', lease * power(2, least(v_attempts, 12)))
        WHERE c.customer_id = v_due.customer_id AND c.id = v_due.id;
        RETURN QUERY
        SELECT c.id, c.kind, c.payment_id, c.customer_id, p.provider, p.provider_payment_id, c.amount_minor,
               p.currency, coalesce(c.reason, r.reason), c.attempts, c.refund_id
        FROM payments.provider_commands c
        JOIN payments.payments p ON p.customer_id = c.customer_id AND p.id = c.payment_id
        LEFT JOIN payments.refunds r ON r.customer_id = c.customer_id AND r.id = c.refund_id
        WHERE c.customer_id = v_due.customer_id AND c.id = v_due.id;
    END LOOP;
END
$$;
COMMENT ON FUNCTION payments.claim_provider_commands(int, interval, text, text) IS
    'Leases up to lim queued provider commands (of one payment when only_payment_id is given, as an HTTP route does to run its own at once; of one provider''s payments when only_provider is given, as each gateway asks for its own): each is stamped with a lease that doubles with every attempt (from lease, at most an hour) and committed at once, so the caller calls the provider with no transaction open and records the answer with record_command_result. A gateway killed mid-call leaves the command to the next claim after its lease. A command whose payment (or refund) has moved on (a webhook or an administrator finished it) fails instead of being claimed; a refund the provider already reported (its id linked by a webhook) is done without asking again. refund_id and the refund''s reason come with a refund.';

CREATE FUNCTION payments.record_command_result(command_id text, answered boolean, status text, response jsonb,
                                               customer_id text DEFAULT NULL)
RETURNS SETOF payments.payment_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_command  payments.provider_commands%ROWTYPE;
    v_payment  payments.payments%ROWTYPE;
    -- A PaymentIntent's client_secret lets a browser confirm it: never kept, also not inside a refusal.
    v_response jsonb := coalesce(response, '{}') - 'client_secret' #- '{error,payment_intent,client_secret}';
    v_refused  boolean;
BEGIN
    IF answered IS NULL THEN
        RAISE EXCEPTION 'answered is required' USING ERRCODE = 'PM100';
    END IF;
    -- The claim returned the customer: with it, one shard answers on Citus.
    SELECT * INTO v_command FROM payments.provider_commands c
    WHERE c.id = record_command_result.command_id
      AND (record_command_result.customer_id IS NULL OR c.customer_id = record_command_result.customer_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'provider command % not found', payments._shown(record_command_result.command_id)
            USING ERRCODE = 'PM204';
    END IF;
    SELECT * INTO v_payment FROM payments.payments p
    WHERE p.customer_id = v_command.customer_id AND p.id = v_command.payment_id;
    -- Lock order: the provider id's row, then the payment's, then the command's (a webhook
    -- bringing the same news takes the first two in this order too).
    PERFORM payments._lock_provider_payment(v_payment.provider, v_payment.provider_payment_id);
    SELECT * INTO v_payment FROM payments.payments p
    WHERE p.customer_id = v_command.customer_id AND p.id = v_command.payment_id FOR UPDATE;
    SELECT * INTO v_command FROM payments.provider_commands c
    WHERE c.customer_id = v_command.customer_id AND c.id = v_command.id FOR UPDATE;
    IF v_command.status <> 'pending' THEN
        -- A retry of an answer already recorded.
        RETURN QUERY SELECT * FROM payments._result(v_payment.customer_id, v_payment.id, 'noop');
        RETURN;
    END IF;
    IF answered AND v_command.kind = 'refund' THEN
        PERFORM payments._record_refund_answer(v_command, v_payment, v_response);
        RETURN QUERY SELECT * FROM payments._result(v_payment.customer_id, v_payment.id, 'noop');
        RETURN;
    END IF;
    IF NOT answered THEN
        -- The provider was unreachable: the lease brings the command back.
        UPDATE payments.provider_commands c SET last_error = v_response
        WHERE c.customer_id = v_command.customer_id AND c.id = v_command.id;
        PERFORM payments._append_event(v_payment.customer_id, v_payment.id, v_payment.status, v_payment.status, false,
                                       'provider', v_command.kind || ' call failed',
                                       jsonb_build_object('command_id', v_command.id, 'last_error', v_response));
        RETURN QUERY SELECT * FROM payments._result(v_payment.customer_id, v_payment.id, 'queued');
        RETURN;
    END IF;
    -- The provider did it (its object now has the command's status) or refused (an error, or
    -- an object in a status that is no answer).
    v_refused := v_response ? 'error' OR record_command_result.status IS NULL;
    UPDATE payments.provider_commands c
    SET status = CASE WHEN NOT v_refused AND record_command_result.status = CASE v_command.kind WHEN 'capture' THEN 'succeeded'
                                                                                               ELSE 'canceled' END
                      THEN 'succeeded' ELSE 'failed' END,
        finished_at = now(),
        last_error = CASE WHEN v_refused THEN coalesce(v_response -> 'error', v_response) END
    WHERE c.customer_id = v_command.customer_id AND c.id = v_command.id;
    IF v_refused THEN
        PERFORM payments._append_event(v_payment.customer_id, v_payment.id, v_payment.status, v_payment.status, false,
                                       'provider', v_command.kind || ' refused',
                                       jsonb_build_object('command_id', v_command.id,
                                                          'error', coalesce(v_response -> 'error', v_response)));
        RETURN QUERY SELECT * FROM payments._result(v_payment.customer_id, v_payment.id, 'noop');
        RETURN;
    END IF;
    -- The provider's object, checked and applied as any provider answer is.
    RETURN QUERY SELECT * FROM payments.record_provider_result(v_payment.id, v_payment.provider,
                                                               v_payment.provider_payment_id, record_command_result.status,
                                                               v_response);
END
$$;
COMMENT ON FUNCTION payments.record_command_result(text, boolean, text, jsonb, text) IS
    'Records the provider''s answer to a queued command (customer_id, as the claim returned it, finds it on one shard). answered = false: the provider was unreachable (response: the error); the command stays pending and comes back after its lease. Otherwise response is the provider''s object (a PaymentIntent, applied through record_provider_result with status, its money checked as always; for a refund command the Refund, applied to the refund, status unused) or its refusal ({"error": …}, or an object with no status that answers the command: recorded, the command failed). A client_secret is never kept. A repeat of a recorded answer changes nothing.';

-- ---------------------------------------------------------------------------
-- New Rust functions (payments_ext/src/lib.rs): the words of refunds, disputes and events
-- ---------------------------------------------------------------------------
CREATE FUNCTION payments."_stripe_event_subject"(
	"event_type" TEXT /* & str */
) RETURNS TEXT /* Option < & '_ str > */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'stripe_event_subject_wrapper';
CREATE FUNCTION payments."_stripe_intent_status"(
	"status" TEXT, /* & str */
	"has_last_payment_error" bool /* bool */
) RETURNS TEXT /* Option < & '_ str > */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'stripe_intent_status_wrapper';
CREATE FUNCTION payments."_refund_decision"(
	"from_status" TEXT, /* & str */
	"to_status" TEXT /* & str */
) RETURNS TEXT /* Option < & '_ str > */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'refund_decision_wrapper';
CREATE FUNCTION payments."_stripe_refund_status"(
	"status" TEXT /* & str */
) RETURNS TEXT /* Option < & '_ str > */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'stripe_refund_status_wrapper';
CREATE FUNCTION payments."_dispute_decision"(
	"from_status" TEXT, /* & str */
	"to_status" TEXT /* & str */
) RETURNS TEXT /* Option < & '_ str > */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'dispute_decision_wrapper';
CREATE FUNCTION payments."_dispute_withholds"(
	"status" TEXT /* & str */
) RETURNS bool /* bool */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'dispute_withholds_wrapper';
CREATE FUNCTION payments."_price_problem"(
	"price" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'price_problem_wrapper';
CREATE FUNCTION payments."_usage_price"(
	"quantity" TEXT, /* & str */
	"price" TEXT /* & str */
) RETURNS bigint /* Option < i64 > */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'usage_price_wrapper';

-- ---------------------------------------------------------------------------
-- Refunds (sql/refunds.sql)
-- ---------------------------------------------------------------------------
-- payments: refunds. create_refund validates and records a pending refund and
-- queues its provider call in the outbox (sql/lifecycle.sql), in the caller's
-- transaction; the provider's answer and its webhooks move the refund, each
-- checked against it (its provider object, amount and currency) as payments are.
-- A payment's refunds never add up to more than it captured: create_refund
-- holds the payment's row lock while it sums them.

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

CREATE VIEW payments.refund_details WITH (security_invoker) AS
SELECT r.id, r.customer_id, r.payment_id, payments.to_major(r.amount_minor, r.currency) AS amount, r.amount_minor,
       r.currency, r.status, r.reason, r.provider, r.provider_refund_id, r.failure_reason, r.created_at, r.updated_at
FROM payments.refunds r;
COMMENT ON VIEW payments.refund_details IS
    'Every refund with its amount in major units beside the minor units, without its idempotency fingerprint. What get_refund and list_refunds return; readable by payments_reader.';

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
COMMENT ON TYPE payments.refund_result IS
    'A refund as create_refund leaves it, plus outcome: created (a new refund, its provider call queued) or replayed (the same idempotency key and parameters again).';

CREATE FUNCTION payments._refund_result(p_customer_id text, p_refund_id text, p_outcome text)
RETURNS SETOF payments.refund_result
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY SELECT d.*, p_outcome FROM payments.refund_details d
    WHERE d.customer_id = p_customer_id AND d.id = p_refund_id;
END
$$;
COMMENT ON FUNCTION payments._refund_result(text, text, text) IS 'Internal: a refund as a refund_result row with the call''s outcome.';

CREATE FUNCTION payments._refundable_minor(p_payment payments.payments) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_held bigint;
BEGIN
    SELECT coalesce(sum(r.amount_minor), 0) INTO v_held FROM payments.refunds r
    WHERE r.customer_id = p_payment.customer_id AND r.payment_id = p_payment.id AND r.status IN ('pending', 'succeeded');
    RETURN coalesce(p_payment.amount_captured_minor, 0) - v_held - p_payment.amount_disputed_minor;
END
$$;
COMMENT ON FUNCTION payments._refundable_minor(payments.payments) IS
    'Internal: what is left to refund of a payment, in minor units: what it captured (nothing before it succeeded) less its pending and succeeded refunds and what its disputes withhold (open or lost: that money went back through the bank). Read under the payment''s row lock, it cannot change until the caller commits.';

CREATE FUNCTION payments.create_refund(idempotency_key text, payment_id text, amount numeric DEFAULT NULL,
                                       reason text DEFAULT NULL)
RETURNS SETOF payments.refund_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_payment  payments.payments%ROWTYPE;
    v_minor    bigint;
    v_fp       bytea;
    v_existing payments.refunds%ROWTYPE;
    v_left     bigint;
    v_id       text := payments._new_id('rfd');
BEGIN
    IF idempotency_key IS NULL OR length(idempotency_key) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'idempotency_key must be 1 to 255 characters' USING ERRCODE = 'PM100';
    END IF;
    IF reason IS NOT NULL AND (reason = 'expired_uncaptured_charge' OR NOT payments._is_allowed('refund_reason', reason)) THEN
        RAISE EXCEPTION 'reason must be duplicate, fraudulent or requested_by_customer, not %',
            quote_literal(payments._shown(reason)) USING ERRCODE = 'PM100';
    END IF;
    -- The payment's row lock serialises its refunds: the sum below cannot change under us.
    v_payment := payments._locked_payment(create_refund.payment_id);
    IF amount IS NOT NULL THEN
        v_minor := payments.to_minor(amount, v_payment.currency);
    END IF;
    v_fp := sha256(convert_to(jsonb_build_array(v_payment.id, v_minor, reason)::text, 'UTF8'));
    -- A replay answers as the first call did, whatever happened since.
    SELECT * INTO v_existing FROM payments.refunds r
    WHERE r.customer_id = v_payment.customer_id AND r.idempotency_key = create_refund.idempotency_key;
    IF FOUND THEN
        RETURN QUERY SELECT * FROM payments._replayed_refund(v_existing, v_fp);
        RETURN;
    END IF;
    IF v_payment.status <> 'succeeded' OR v_payment.provider_payment_id IS NULL THEN
        RAISE EXCEPTION 'payment % is % %: only a payment the provider captured can be refunded', v_payment.id,
            v_payment.status, CASE WHEN v_payment.provider_payment_id IS NULL THEN 'without a provider payment' ELSE '' END
            USING ERRCODE = 'PM206';
    END IF;
    -- Stripe refuses refunds of a disputed charge while its funds are withheld: the bank returns them.
    IF v_payment.amount_disputed_minor > 0 AND EXISTS (
           SELECT 1 FROM payments.disputes d
           WHERE d.customer_id = v_payment.customer_id AND d.payment_id = v_payment.id
             AND d.status IN ('needs_response', 'under_review')) THEN
        RAISE EXCEPTION 'payment % has an open dispute: it cannot be refunded while the dispute withholds its funds',
            v_payment.id USING ERRCODE = 'PM206', HINT = 'the dispute''s outcome returns the money (lost) or lets it be refunded (won)';
    END IF;
    v_left := payments._refundable_minor(v_payment);
    v_minor := coalesce(v_minor, v_left);
    IF v_minor > v_left OR v_minor <= 0 THEN
        RAISE EXCEPTION 'cannot refund % %: % is left to refund of payment %',
            payments.to_major(v_minor, v_payment.currency), v_payment.currency,
            payments.to_major(greatest(v_left, 0), v_payment.currency), v_payment.id
            USING ERRCODE = 'PM207', HINT = 'pending and succeeded refunds count against what was captured';
    END IF;
    -- A write, not only a lock: a concurrent REPEATABLE READ or SERIALIZABLE refund of this
    -- payment, whose snapshot predates ours, then fails (40001) instead of summing without us.
    UPDATE payments.payments p SET updated_at = now() WHERE p.customer_id = v_payment.customer_id AND p.id = v_payment.id;
    INSERT INTO payments.refunds (id, customer_id, payment_id, amount_minor, currency, status, reason, idempotency_key,
                                  fingerprint, provider)
    VALUES (v_id, v_payment.customer_id, v_payment.id, v_minor, v_payment.currency, 'pending', reason, idempotency_key,
            v_fp, v_payment.provider)
    ON CONFLICT ON CONSTRAINT refunds_idempotency_key DO NOTHING;
    IF NOT FOUND THEN
        -- The key was taken meanwhile for another payment of this customer (whose lock we do not hold).
        SELECT * INTO v_existing FROM payments.refunds r
        WHERE r.customer_id = v_payment.customer_id AND r.idempotency_key = create_refund.idempotency_key;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'idempotency key % was claimed by a concurrent transaction', quote_literal(idempotency_key)
                USING ERRCODE = '40001', HINT = 'retry the transaction';
        END IF;
        RETURN QUERY SELECT * FROM payments._replayed_refund(v_existing, v_fp);
        RETURN;
    END IF;
    PERFORM payments._emit(v_payment.customer_id, 'refund', v_id, 'pending', NULL, true,
                           jsonb_build_object('payment_id', v_payment.id, 'amount_minor', v_minor,
                                              'currency', v_payment.currency));
    PERFORM payments._queue_command(v_payment, 'refund', v_minor, NULL, v_id);
    RETURN QUERY SELECT * FROM payments._refund_result(v_payment.customer_id, v_id, 'created');
END
$$;
COMMENT ON FUNCTION payments.create_refund(text, text, numeric, text) IS
    'Refunds a succeeded payment, in full or amount of it (default: all that is left), idempotently: the same key (per customer) with the same parameters returns the same refund (outcome replayed), with others PM201. Records a pending refund and queues its provider call (outcome created); it becomes succeeded, failed or canceled as the provider answers and reports. Pending and succeeded refunds never add up to more than was captured, also under concurrent calls (PM207 otherwise); a payment that is not succeeded at a provider: PM206. reason: duplicate, fraudulent or requested_by_customer. Runs in the caller''s transaction: a rollback refunds nothing.';

CREATE FUNCTION payments._replayed_refund(p_refund payments.refunds, p_fingerprint bytea)
RETURNS SETOF payments.refund_result
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_refund.fingerprint <> p_fingerprint THEN
        RAISE EXCEPTION 'idempotency key % was already used with different parameters', quote_literal(p_refund.idempotency_key)
            USING ERRCODE = 'PM201', DETAIL = 'the key belongs to refund ' || p_refund.id,
                  HINT = 'use a new key for a new refund, or repeat the original parameters to replay it';
    END IF;
    RETURN QUERY SELECT * FROM payments._refund_result(p_refund.customer_id, p_refund.id, 'replayed');
END
$$;
COMMENT ON FUNCTION payments._replayed_refund(payments.refunds, bytea) IS
    'Internal: a create_refund replay: the refund the key made, or PM201 when the parameters differ.';

CREATE FUNCTION payments.get_refund(id text) RETURNS SETOF payments.refund_details
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- Read once, here: inside the query Citus would send it to the shards.
    v_bound text := payments._bound_customer();
BEGIN
    RETURN QUERY SELECT * FROM payments.refund_details d
    WHERE d.id = get_refund.id AND d.customer_id = coalesce(v_bound, d.customer_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'refund % not found', payments._shown(get_refund.id) USING ERRCODE = 'PM204';
    END IF;
END
$$;
COMMENT ON FUNCTION payments.get_refund(text) IS 'One refund by id; PM204 when there is none.';

CREATE FUNCTION payments.list_refunds(payment_id text DEFAULT NULL, lim int DEFAULT 10, starting_after text DEFAULT NULL)
RETURNS SETOF payments.refund_details
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_customer text;
BEGIN
    IF lim IS NULL OR lim NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'lim must be between 1 and 100' USING ERRCODE = 'PM100';
    END IF;
    IF list_refunds.payment_id IS NOT NULL THEN
        v_customer := payments._customer_of(list_refunds.payment_id);
    END IF;
    -- A login bound to one customer sees that customer's refunds only.
    v_customer := coalesce(payments._bound_customer(), v_customer);
    RETURN QUERY SELECT * FROM payments.refund_details d
    WHERE (list_refunds.payment_id IS NULL OR d.payment_id = list_refunds.payment_id)
      AND (v_customer IS NULL OR d.customer_id = v_customer)
      AND (starting_after IS NULL OR d.id < starting_after)
    ORDER BY d.id DESC LIMIT lim;
END
$$;
COMMENT ON FUNCTION payments.list_refunds(text, int, text) IS
    'Refunds newest first (of one payment when payment_id is given; PM204 for an unknown payment), lim (1 to 100) at a time; starting_after: the last id of the previous page.';

-- ---------------------------------------------------------------------------
-- What the provider says about a refund
-- ---------------------------------------------------------------------------
CREATE FUNCTION payments._payment_note(p_payment payments.payments, p_applied boolean, p_source text, p_reason text,
                                      p_data jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- In the payment's hash chain; its status does not move (applied: the refund's did).
    PERFORM payments._append_event(p_payment.customer_id, p_payment.id, p_payment.status, p_payment.status, p_applied,
                                   p_source, p_reason, jsonb_strip_nulls(p_data));
END
$$;
COMMENT ON FUNCTION payments._payment_note(payments.payments, boolean, text, text, jsonb) IS
    'Internal: a refund''s or dispute''s step in its payment''s history (the payment''s status unchanged; applied: the refund or dispute moved). The caller holds the payment''s row lock.';

CREATE FUNCTION payments._apply_refund_object(p_payment payments.payments, p_refund_id text, p_object jsonb,
                                              p_source text, p_event_id text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_refund   payments.refunds%ROWTYPE;
    v_to       text := payments._stripe_refund_status(p_object ->> 'status');
    v_rid      text := p_object ->> 'id';
    v_observed jsonb := jsonb_strip_nulls(jsonb_build_object(
        'refund', v_rid, 'amount', p_object -> 'amount', 'currency', p_object -> 'currency',
        'payment_intent', p_object -> 'payment_intent', 'status', p_object -> 'status', 'webhook_event_id', p_event_id));
    v_problem  text;
    v_decision text;
    v_left     bigint;
    v_taken_in boolean := false;
BEGIN
    -- The caller holds the payment's row lock.
    IF v_to IS NULL OR v_rid IS NULL OR length(v_rid) > 255 THEN
        RETURN 'ignored';
    END IF;
    SELECT * INTO v_refund FROM payments.refunds r
    WHERE r.customer_id = p_payment.customer_id
      AND ((p_refund_id IS NOT NULL AND r.id = p_refund_id)
           OR (p_refund_id IS NULL AND r.provider = p_payment.provider AND r.provider_refund_id = v_rid));
    IF NOT FOUND AND p_refund_id IS NULL THEN
        -- Our id in metadata: a webhook that beat the provider's answer.
        SELECT * INTO v_refund FROM payments.refunds r
        WHERE r.customer_id = p_payment.customer_id AND r.id = p_object -> 'metadata' ->> 'refund_id'
          AND r.payment_id = p_payment.id;
    END IF;
    -- Evidence: a refund of this payment's provider object, for the refund's money; a refund
    -- of ours names its own payment's object (another payment's refund is never moved here).
    IF (p_object ->> 'payment_intent') IS DISTINCT FROM p_payment.provider_payment_id
       OR (v_refund.id IS NOT NULL AND v_refund.payment_id <> p_payment.id)
       OR (v_refund.provider_refund_id IS NOT NULL AND v_refund.provider_refund_id <> v_rid) THEN
        v_problem := 'provider_payment_mismatch';
    ELSIF upper(p_object ->> 'currency') IS DISTINCT FROM p_payment.currency THEN
        v_problem := 'currency_mismatch';
    ELSIF v_refund.id IS NOT NULL AND (p_object ->> 'amount') IS DISTINCT FROM v_refund.amount_minor::text THEN
        v_problem := 'amount_mismatch';
    ELSIF v_refund.id IS NULL THEN
        -- Made at the provider directly: taken in only if it fits in what is left to refund
        -- (nothing is, before the payment succeeded here); a failed or canceled one holds nothing.
        v_left := payments._refundable_minor(p_payment);
        IF (p_object ->> 'amount') !~ '^[1-9][0-9]{0,17}$'
           OR (v_to IN ('pending', 'succeeded') AND (p_object ->> 'amount')::bigint > v_left) THEN
            v_problem := 'amount_mismatch';
        END IF;
    END IF;
    IF v_problem IS NOT NULL THEN
        PERFORM payments._record_anomaly(p_payment.customer_id, p_payment.id, v_problem, p_source, p_payment.provider,
                                         p_object ->> 'payment_intent', v_observed);
        RETURN 'mismatch';
    END IF;
    IF v_refund.id IS NULL THEN
        INSERT INTO payments.refunds (id, customer_id, payment_id, amount_minor, currency, status, reason, provider,
                                      provider_refund_id, failure_reason)
        VALUES (payments._new_id('rfd'), p_payment.customer_id, p_payment.id, (p_object ->> 'amount')::bigint,
                p_payment.currency, 'pending',
                CASE WHEN payments._is_allowed('refund_reason', p_object ->> 'reason') THEN p_object ->> 'reason' END,
                p_payment.provider, v_rid, NULL)
        RETURNING * INTO v_refund;
        v_taken_in := true;
        PERFORM payments._refund_event(v_refund, 'pending', NULL);
        PERFORM payments._payment_note(p_payment, true, p_source, 'refund made at the provider',
                                      jsonb_build_object('refund_id', v_refund.id, 'provider_refund_id', v_rid,
                                                         'amount_minor', v_refund.amount_minor,
                                                         'webhook_event_id', p_event_id));
    ELSIF v_refund.provider_refund_id IS NULL THEN
        UPDATE payments.refunds r SET provider_refund_id = v_rid, updated_at = now()
        WHERE r.customer_id = v_refund.customer_id AND r.id = v_refund.id;
    END IF;
    v_decision := payments._refund_decision(v_refund.status, v_to);
    IF v_decision = 'applied' THEN
        UPDATE payments.refunds r
        SET status = v_to, updated_at = now(),
            failure_reason = CASE WHEN v_to = 'failed' THEN coalesce(p_object ->> 'failure_reason', 'unknown') END
        WHERE r.customer_id = v_refund.customer_id AND r.id = v_refund.id;
        PERFORM payments._refund_event(v_refund, v_to, v_refund.status);
        -- What the payment shows as refunded: succeeded refunds only.
        UPDATE payments.payments p
        SET amount_refunded_minor = p.amount_refunded_minor
                + CASE WHEN v_to = 'succeeded' THEN v_refund.amount_minor
                       WHEN v_refund.status = 'succeeded' THEN -v_refund.amount_minor ELSE 0 END,
            updated_at = now()
        WHERE p.customer_id = p_payment.customer_id AND p.id = p_payment.id;
    END IF;
    IF v_decision <> 'noop' THEN
        PERFORM payments._payment_note(p_payment, v_decision = 'applied', p_source,
                                      CASE v_decision WHEN 'applied' THEN 'refund ' || v_to
                                           ELSE 'stale: refund ' || v_refund.status || ' does not move to ' || v_to END,
                                      jsonb_build_object('refund_id', v_refund.id, 'provider_refund_id', v_rid,
                                                         'amount_minor', v_refund.amount_minor,
                                                         'failure_reason', p_object ->> 'failure_reason',
                                                         'webhook_event_id', p_event_id));
    END IF;
    -- A refund taken in is news even while it is still pending.
    RETURN CASE WHEN v_taken_in AND v_decision = 'noop' THEN 'applied' ELSE v_decision END;
END
$$;
COMMENT ON FUNCTION payments._apply_refund_object(payments.payments, text, jsonb, text, text) IS
    'Internal: applies a provider Refund object to the refund it is about (p_refund_id, else its provider id, else metadata.refund_id; one made at the provider directly is taken in if it fits in what is left to refund). Another payment''s refund, another currency or amount is an anomaly (mismatch), never applied. Moves the refund under its state machine, keeps the payment''s amount_refunded and notes each step in its history. Returns applied | noop | stale | ignored | mismatch. The caller holds the payment''s row lock.';

CREATE FUNCTION payments._record_refund_answer(p_command payments.provider_commands, p_payment payments.payments,
                                               p_response jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_refused boolean := p_response ? 'error' OR (p_response ->> 'object') IS DISTINCT FROM 'refund';
    v_outcome text;
    v_refund  payments.refunds%ROWTYPE;
BEGIN
    -- The caller holds the payment's and the command's row locks.
    IF v_refused THEN
        UPDATE payments.refunds r
        SET status = 'failed', updated_at = now(),
            failure_reason = left(coalesce(p_response -> 'error' ->> 'message', 'refused by the provider'), 1000)
        WHERE r.customer_id = p_command.customer_id AND r.id = p_command.refund_id AND r.status = 'pending'
        RETURNING * INTO v_refund;
        IF FOUND THEN
            PERFORM payments._refund_event(v_refund, 'failed', 'pending');
        END IF;
        PERFORM payments._payment_note(p_payment, true, 'provider', 'refund refused',
                                      jsonb_build_object('refund_id', p_command.refund_id, 'command_id', p_command.id,
                                                         'error', coalesce(p_response -> 'error', p_response)));
    ELSE
        v_outcome := payments._apply_refund_object(p_payment, p_command.refund_id, p_response, 'provider', NULL);
    END IF;
    UPDATE payments.provider_commands c
    SET status = CASE WHEN v_refused OR v_outcome = 'mismatch' THEN 'failed' ELSE 'succeeded' END, finished_at = now(),
        last_error = CASE WHEN v_refused THEN coalesce(p_response -> 'error', p_response) END
    WHERE c.customer_id = p_command.customer_id AND c.id = p_command.id;
END
$$;
COMMENT ON FUNCTION payments._record_refund_answer(payments.provider_commands, payments.payments, jsonb) IS
    'Internal: record_command_result for a refund command: the provider''s Refund object is applied to the refund (its money checked); a refusal fails the refund with the provider''s message.';

-- ---------------------------------------------------------------------------
-- Disputes (sql/disputes.sql)
-- ---------------------------------------------------------------------------
-- payments: disputes (chargebacks). They start at the customer's bank, so
-- only the provider's webhooks create and move them; each is checked against
-- its payment (provider object, currency, no more than was captured).

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

CREATE VIEW payments.dispute_details WITH (security_invoker) AS
SELECT d.id, d.customer_id, d.payment_id, payments.to_major(d.amount_minor, d.currency) AS amount, d.amount_minor,
       d.currency, d.status, d.reason, d.evidence_due_by, d.provider, d.provider_dispute_id, d.created_at, d.updated_at
FROM payments.disputes d;
COMMENT ON VIEW payments.dispute_details IS
    'Every dispute with its amount in major units beside the minor units. What get_dispute and list_disputes return; readable by payments_reader.';

CREATE FUNCTION payments.get_dispute(id text) RETURNS SETOF payments.dispute_details
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- Read once, here: inside the query Citus would send it to the shards.
    v_bound text := payments._bound_customer();
BEGIN
    RETURN QUERY SELECT * FROM payments.dispute_details d
    WHERE d.id = get_dispute.id AND d.customer_id = coalesce(v_bound, d.customer_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'dispute % not found', payments._shown(get_dispute.id) USING ERRCODE = 'PM204';
    END IF;
END
$$;
COMMENT ON FUNCTION payments.get_dispute(text) IS 'One dispute by id; PM204 when there is none.';

CREATE FUNCTION payments.list_disputes(payment_id text DEFAULT NULL, status text DEFAULT NULL, lim int DEFAULT 10,
                                       starting_after text DEFAULT NULL)
RETURNS SETOF payments.dispute_details
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_customer text;
BEGIN
    IF lim IS NULL OR lim NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'lim must be between 1 and 100' USING ERRCODE = 'PM100';
    END IF;
    IF list_disputes.status IS NOT NULL AND NOT payments._is_allowed('dispute_status', list_disputes.status) THEN
        RAISE EXCEPTION 'unknown dispute status %', quote_literal(payments._shown(list_disputes.status))
            USING ERRCODE = 'PM100', HINT = 'SELECT * FROM payments.allowed_values() WHERE kind = ''dispute_status''';
    END IF;
    IF list_disputes.payment_id IS NOT NULL THEN
        v_customer := payments._customer_of(list_disputes.payment_id);
    END IF;
    -- A login bound to one customer sees that customer's disputes only.
    v_customer := coalesce(payments._bound_customer(), v_customer);
    RETURN QUERY SELECT * FROM payments.dispute_details d
    WHERE (list_disputes.payment_id IS NULL OR d.payment_id = list_disputes.payment_id)
      AND (v_customer IS NULL OR d.customer_id = v_customer)
      AND (list_disputes.status IS NULL OR d.status = list_disputes.status)
      AND (starting_after IS NULL OR d.id < starting_after)
    ORDER BY d.id DESC LIMIT lim;
END
$$;
COMMENT ON FUNCTION payments.list_disputes(text, text, int, text) IS
    'Disputes newest first (of one payment, in one status, when given), lim (1 to 100) at a time; starting_after: the last id of the previous page.';

CREATE FUNCTION payments._apply_dispute_object(p_payment payments.payments, p_object jsonb, p_source text,
                                               p_event_id text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_dispute  payments.disputes%ROWTYPE;
    v_to       text := p_object ->> 'status';
    v_did      text := p_object ->> 'id';
    v_observed jsonb := jsonb_strip_nulls(jsonb_build_object(
        'dispute', v_did, 'amount', p_object -> 'amount', 'currency', p_object -> 'currency',
        'payment_intent', p_object -> 'payment_intent', 'status', p_object -> 'status', 'webhook_event_id', p_event_id));
    v_problem  text;
    v_decision text;
    v_withheld bigint;
    v_others   bigint;
BEGIN
    -- The caller holds the payment's row lock.
    IF v_did IS NULL OR length(v_did) > 255 OR NOT coalesce(payments._is_allowed('dispute_status', v_to), false) THEN
        RETURN 'ignored';
    END IF;
    SELECT * INTO v_dispute FROM payments.disputes d
    WHERE d.customer_id = p_payment.customer_id AND d.provider = p_payment.provider AND d.provider_dispute_id = v_did;
    -- What the payment's other disputes hold (all but those the merchant won or that closed as inquiries).
    SELECT coalesce(sum(d.amount_minor), 0) INTO v_others FROM payments.disputes d
    WHERE d.customer_id = p_payment.customer_id AND d.payment_id = p_payment.id AND d.provider_dispute_id <> v_did
      AND d.status NOT IN ('won', 'warning_closed');
    IF (p_object ->> 'payment_intent') IS DISTINCT FROM p_payment.provider_payment_id
       OR (v_dispute.id IS NOT NULL AND v_dispute.payment_id <> p_payment.id) THEN
        v_problem := 'provider_payment_mismatch';
    ELSIF upper(p_object ->> 'currency') IS DISTINCT FROM p_payment.currency THEN
        v_problem := 'currency_mismatch';
    ELSIF (p_object ->> 'amount') !~ '^[1-9][0-9]{0,17}$'
          OR (p_object ->> 'amount')::bigint + v_others > coalesce(p_payment.amount_captured_minor, 0)
          OR (v_dispute.id IS NOT NULL AND (p_object ->> 'amount')::bigint <> v_dispute.amount_minor) THEN
        v_problem := 'amount_mismatch';
    END IF;
    IF v_problem IS NOT NULL THEN
        PERFORM payments._record_anomaly(p_payment.customer_id, p_payment.id, v_problem, p_source, p_payment.provider,
                                         p_object ->> 'payment_intent', v_observed);
        RETURN 'mismatch';
    END IF;
    IF v_dispute.id IS NULL THEN
        INSERT INTO payments.disputes (id, customer_id, payment_id, provider, provider_dispute_id, amount_minor, currency,
                                       status, reason, evidence_due_by)
        VALUES (payments._new_id('dsp'), p_payment.customer_id, p_payment.id, p_payment.provider, v_did,
                (p_object ->> 'amount')::bigint, p_payment.currency, v_to, left(p_object ->> 'reason', 255),
                CASE WHEN (p_object -> 'evidence_details' ->> 'due_by') ~ '^[0-9]{1,12}$'
                     THEN timestamptz 'epoch' + (p_object -> 'evidence_details' ->> 'due_by')::bigint * interval '1 second' END)
        RETURNING * INTO v_dispute;
        v_decision := 'applied';
        PERFORM payments._dispute_event(v_dispute, v_to, NULL);
    ELSE
        v_decision := payments._dispute_decision(v_dispute.status, v_to);
        IF v_decision = 'applied' THEN
            UPDATE payments.disputes d SET status = v_to, updated_at = now()
            WHERE d.customer_id = v_dispute.customer_id AND d.id = v_dispute.id;
            PERFORM payments._dispute_event(v_dispute, v_to, v_dispute.status);
        END IF;
    END IF;
    IF v_decision = 'applied' THEN
        -- What the payment shows as disputed: the amounts its disputes withhold.
        SELECT coalesce(sum(d.amount_minor), 0) INTO v_withheld FROM payments.disputes d
        WHERE d.customer_id = p_payment.customer_id AND d.payment_id = p_payment.id AND payments._dispute_withholds(d.status);
        UPDATE payments.payments p SET amount_disputed_minor = v_withheld, updated_at = now()
        WHERE p.customer_id = p_payment.customer_id AND p.id = p_payment.id;
    END IF;
    IF v_decision <> 'noop' THEN
        PERFORM payments._payment_note(p_payment, v_decision = 'applied', p_source,
                                      CASE v_decision WHEN 'applied' THEN 'dispute ' || v_to
                                           ELSE 'stale: dispute ' || v_dispute.status || ' does not move to ' || v_to END,
                                      jsonb_build_object('dispute_id', v_dispute.id, 'provider_dispute_id', v_did,
                                                         'amount_minor', v_dispute.amount_minor,
                                                         'reason', v_dispute.reason, 'webhook_event_id', p_event_id));
    END IF;
    RETURN v_decision;
END
$$;
COMMENT ON FUNCTION payments._apply_dispute_object(payments.payments, jsonb, text, text) IS
    'Internal: applies a provider Dispute object to its payment: creates the dispute the first time, then moves it under its state machine; keeps the payment''s amount_disputed (what open and lost disputes withhold) and notes each step in its history. Another payment''s dispute, another currency, or more than was captured (with the payment''s other disputes not won) is an anomaly (mismatch). Returns applied | noop | stale | ignored | mismatch. The caller holds the payment''s row lock.';

-- ---------------------------------------------------------------------------
-- Balances (sql/balances.sql)
-- ---------------------------------------------------------------------------
-- payments: where the money stands, per currency and per customer. Read from
-- the payments' own running totals (captured, refunded, disputed), so a
-- dashboard's query is one scan, also on Citus.

CREATE VIEW payments.customer_balances WITH (security_invoker) AS
SELECT p.customer_id,
       p.currency,
       count(*) FILTER (WHERE p.amount_captured_minor IS NOT NULL) AS captured_count,
       -- sums of minor units times one minor unit: exact, at the currency's scale.
       coalesce(sum(p.amount_captured_minor), 0) * payments.to_major(1, p.currency) AS gross_captured,
       sum(p.amount_refunded_minor) * payments.to_major(1, p.currency) AS refunded,
       sum(p.amount_disputed_minor) * payments.to_major(1, p.currency) AS disputed,
       (coalesce(sum(p.amount_captured_minor), 0) - sum(p.amount_refunded_minor) - sum(p.amount_disputed_minor))
           * payments.to_major(1, p.currency) AS net,
       coalesce(sum(p.amount_captured_minor), 0) AS gross_captured_minor,
       sum(p.amount_refunded_minor) AS refunded_minor,
       sum(p.amount_disputed_minor) AS disputed_minor,
       coalesce(sum(p.amount_captured_minor), 0) - sum(p.amount_refunded_minor) - sum(p.amount_disputed_minor) AS net_minor
FROM payments.payments p
WHERE p.amount_captured_minor IS NOT NULL
GROUP BY p.customer_id, p.currency;
COMMENT ON VIEW payments.customer_balances IS
    'Per customer and currency: what their payments captured, what was refunded to them and what their disputes withhold, and the net the merchant keeps. Major units beside minor units; readable by payments_reader.';
COMMENT ON COLUMN payments.customer_balances.captured_count IS 'How many of the customer''s payments captured money (succeeded).';
COMMENT ON COLUMN payments.customer_balances.gross_captured IS 'Captured by succeeded payments, in major units (a partial capture counts what was captured).';
COMMENT ON COLUMN payments.customer_balances.refunded IS 'Refunded by succeeded refunds, in major units (a refund that later failed is not counted).';
COMMENT ON COLUMN payments.customer_balances.disputed IS 'Withheld by disputes that are open (needs_response, under_review) or lost, in major units.';
COMMENT ON COLUMN payments.customer_balances.net IS 'gross_captured - refunded - disputed, in major units.';
COMMENT ON COLUMN payments.customer_balances.gross_captured_minor IS 'gross_captured in minor units.';
COMMENT ON COLUMN payments.customer_balances.refunded_minor IS 'refunded in minor units.';
COMMENT ON COLUMN payments.customer_balances.disputed_minor IS 'disputed in minor units.';
COMMENT ON COLUMN payments.customer_balances.net_minor IS 'net in minor units.';

CREATE VIEW payments.balance_by_currency WITH (security_invoker) AS
SELECT b.currency,
       sum(b.captured_count) AS captured_count,
       sum(b.gross_captured) AS gross_captured,
       sum(b.refunded) AS refunded,
       sum(b.disputed) AS disputed,
       sum(b.net) AS net,
       sum(b.gross_captured_minor) AS gross_captured_minor,
       sum(b.refunded_minor) AS refunded_minor,
       sum(b.disputed_minor) AS disputed_minor,
       sum(b.net_minor) AS net_minor
FROM payments.customer_balances b
GROUP BY b.currency;
COMMENT ON VIEW payments.balance_by_currency IS
    'Per currency, over all customers: captured, refunded, withheld by disputes, and net. Major units beside minor units; readable by payments_reader.';
COMMENT ON COLUMN payments.balance_by_currency.captured_count IS 'How many payments captured money (succeeded).';
COMMENT ON COLUMN payments.balance_by_currency.gross_captured IS 'Captured by succeeded payments, in major units.';
COMMENT ON COLUMN payments.balance_by_currency.refunded IS 'Refunded by succeeded refunds, in major units.';
COMMENT ON COLUMN payments.balance_by_currency.disputed IS 'Withheld by open or lost disputes, in major units.';
COMMENT ON COLUMN payments.balance_by_currency.net IS 'gross_captured - refunded - disputed, in major units.';
COMMENT ON COLUMN payments.balance_by_currency.gross_captured_minor IS 'gross_captured in minor units.';
COMMENT ON COLUMN payments.balance_by_currency.refunded_minor IS 'refunded in minor units.';
COMMENT ON COLUMN payments.balance_by_currency.disputed_minor IS 'disputed in minor units.';
COMMENT ON COLUMN payments.balance_by_currency.net_minor IS 'net in minor units.';

-- ---------------------------------------------------------------------------
-- Reconciliation (sql/reconciliation.sql)
-- ---------------------------------------------------------------------------
-- payments: reconciliation against the provider. The gateway pulls the
-- provider's objects of a time window (PaymentIntents and refunds, through
-- its list endpoints) into provider_snapshots; reconciliation_report lists
-- every disagreement between them and our rows; reconcile runs it, optionally
-- repairs what the provider's objects can repair, and records each run.

CREATE TABLE payments.provider_snapshots (
    provider            text COLLATE "C" NOT NULL,
    provider_payment_id text COLLATE "C" NOT NULL,
    object_type         text COLLATE "C" NOT NULL CHECK (object_type IN ('payment_intent', 'refund')),
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
    'The provider''s objects (PaymentIntents and refunds) as its list endpoints last showed them, pulled by the gateway for reconciliation (payments-gateway reconcile, POST /v1/reconciliations). A later pull replaces an object''s row.';
COMMENT ON COLUMN payments.provider_snapshots.provider_payment_id IS 'The PaymentIntent: the object itself, or the one a refund refunds.';
COMMENT ON COLUMN payments.provider_snapshots.status IS 'Our word for the object''s status (a payment status, or a refund status); NULL when it reports none.';
COMMENT ON COLUMN payments.provider_snapshots.created IS 'When the provider created the object: what the window of a report is about.';
COMMENT ON COLUMN payments.provider_snapshots.object IS 'The object as the provider returned it (a PaymentIntent''s client_secret removed).';
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
CREATE TRIGGER reconciliation_runs_append_only BEFORE UPDATE OR DELETE ON payments.reconciliation_runs
    FOR EACH ROW EXECUTE FUNCTION payments._refuse_change();

CREATE FUNCTION payments.record_provider_snapshot(provider text, objects jsonb) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_object  jsonb;
    v_type    text;
    v_ppid    text;
    v_status  text;
    v_amount  bigint;
    v_created timestamptz;
    v_kept    integer := 0;
BEGIN
    IF provider IS NULL OR length(provider) NOT BETWEEN 1 AND 255 OR jsonb_typeof(objects) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'provider (1 to 255 characters) and objects (a JSON array) are required' USING ERRCODE = 'PM100';
    END IF;
    FOR v_object IN SELECT value FROM jsonb_array_elements(objects) LOOP
        v_type := v_object ->> 'object';
        v_ppid := CASE v_type WHEN 'payment_intent' THEN v_object ->> 'id' WHEN 'refund' THEN v_object ->> 'payment_intent' END;
        -- Objects that cannot be ours are passed over: a refund of a bare charge (no
        -- payment_intent), another object type, one without an id or a created time.
        CONTINUE WHEN v_ppid IS NULL OR length(v_ppid) > 255 OR length(v_object ->> 'id') > 255
                      OR v_object ->> 'id' IS NULL OR (v_object ->> 'created') !~ '^[0-9]{1,12}$';
        -- Computed here, not in the INSERT: Citus sends its expressions to a worker, and
        -- deparsed there the status expression fails (text = boolean).
        v_status := CASE v_type WHEN 'refund' THEN payments._stripe_refund_status(v_object ->> 'status')
                        ELSE payments._stripe_intent_status(v_object ->> 'status',
                                                            jsonb_typeof(v_object -> 'last_payment_error') IS NOT DISTINCT FROM 'object') END;
        v_amount := CASE WHEN (v_object ->> 'amount') ~ '^[0-9]{1,18}$' THEN (v_object ->> 'amount')::bigint END;
        v_created := timestamptz 'epoch' + (v_object ->> 'created')::bigint * interval '1 second';
        INSERT INTO payments.provider_snapshots AS s (provider, provider_payment_id, object_type, object_id, status,
                                                      amount_minor, currency, created, object)
        VALUES (record_provider_snapshot.provider, v_ppid, v_type, v_object ->> 'id', v_status, v_amount,
                upper(v_object ->> 'currency'), v_created, v_object - 'client_secret')
        -- excluded.fetched_at, not now(): Citus allows only immutable functions in DO UPDATE SET.
        ON CONFLICT ON CONSTRAINT provider_snapshots_pkey DO UPDATE
        SET status = excluded.status, amount_minor = excluded.amount_minor, currency = excluded.currency,
            created = excluded.created, object = excluded.object, fetched_at = excluded.fetched_at;
        v_kept := v_kept + 1;
    END LOOP;
    RETURN v_kept;
END
$$;
COMMENT ON FUNCTION payments.record_provider_snapshot(text, jsonb) IS
    'Keeps the provider''s objects (a JSON array of PaymentIntents and refunds, as its list endpoints return them) in provider_snapshots, replacing earlier copies; returns how many it kept (objects that cannot be ours, such as a refund of a charge without a PaymentIntent, are passed over). The gateway calls it page by page.';

CREATE FUNCTION payments.reconciliation_report("from" timestamptz, "to" timestamptz, only_provider text DEFAULT NULL)
RETURNS TABLE (kind text, provider text, object_type text, provider_object_id text, payment_id text, refund_id text,
               ours jsonb, theirs jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_snap    record;
    v_link    record;
    v_payment payments.payments%ROWTYPE;
    v_refund  payments.refunds%ROWTYPE;
    v_ours    record;
BEGIN
    PERFORM payments.reconciliation_window("from", "to");
    -- The platform's books: a login bound to one customer gets none of it.
    IF payments._bound_customer() IS NOT NULL THEN
        RETURN;
    END IF;
    -- The provider's objects of the window, each against our row. One lookup per
    -- object, each on its own shard on Citus.
    FOR v_snap IN
        SELECT s.* FROM payments.provider_snapshots s
        WHERE s.created >= "from" AND s.created < "to"
          AND (only_provider IS NULL OR s.provider = only_provider)
        ORDER BY s.created, s.object_id
    LOOP
        provider := v_snap.provider;
        object_type := v_snap.object_type;
        provider_object_id := v_snap.object_id;
        theirs := jsonb_build_object('status', v_snap.status, 'amount_minor', v_snap.amount_minor,
                                     'currency', v_snap.currency);
        SELECT pp.payment_id, pp.customer_id INTO v_link FROM payments.provider_payments pp
        WHERE pp.provider_payment_id = v_snap.provider_payment_id AND pp.provider = v_snap.provider;
        v_payment := NULL;
        IF v_link.payment_id IS NOT NULL THEN
            SELECT * INTO v_payment FROM payments.payments p
            WHERE p.customer_id = v_link.customer_id AND p.id = v_link.payment_id;
        END IF;
        payment_id := v_payment.id;
        refund_id := NULL;
        IF v_snap.object_type = 'payment_intent' THEN
            ours := CASE WHEN v_payment.id IS NOT NULL THEN
                        jsonb_build_object('status', v_payment.status, 'amount_minor', v_payment.amount_minor,
                                           'currency', v_payment.currency) END;
            kind := CASE
                WHEN v_payment.id IS NULL THEN 'unknown_to_us'
                WHEN v_snap.currency IS DISTINCT FROM v_payment.currency THEN 'currency_differs'
                WHEN v_snap.amount_minor IS DISTINCT FROM v_payment.amount_minor THEN 'amount_differs'
                WHEN v_snap.status = 'succeeded' AND v_payment.status <> 'succeeded' THEN 'missed_success'
                WHEN v_snap.status IS NOT NULL AND v_snap.status <> v_payment.status THEN 'status_differs' END;
        ELSE
            v_refund := NULL;
            IF v_payment.id IS NOT NULL THEN
                SELECT * INTO v_refund FROM payments.refunds r
                WHERE r.customer_id = v_payment.customer_id AND r.provider = v_snap.provider
                  AND r.provider_refund_id = v_snap.object_id;
            END IF;
            refund_id := v_refund.id;
            ours := CASE WHEN v_refund.id IS NOT NULL THEN
                        jsonb_build_object('status', v_refund.status, 'amount_minor', v_refund.amount_minor,
                                           'currency', v_refund.currency) END;
            kind := CASE
                WHEN v_refund.id IS NULL THEN 'unknown_to_us'
                WHEN v_snap.currency IS DISTINCT FROM v_refund.currency THEN 'currency_differs'
                WHEN v_snap.amount_minor IS DISTINCT FROM v_refund.amount_minor THEN 'amount_differs'
                WHEN v_snap.status = 'succeeded' AND v_refund.status <> 'succeeded' THEN 'missed_success'
                WHEN v_snap.status IS NOT NULL AND v_snap.status <> v_refund.status THEN 'status_differs' END;
        END IF;
        IF kind IS NOT NULL THEN
            RETURN NEXT;
        END IF;
    END LOOP;
    -- Our rows of the window the provider does not know.
    theirs := NULL;
    FOR v_ours IN
        SELECT p.id, p.customer_id, p.provider, p.provider_payment_id, p.status, p.amount_minor, p.currency
        FROM payments.payments p
        WHERE p.created_at >= "from" AND p.created_at < "to" AND p.provider_payment_id IS NOT NULL
          AND (only_provider IS NULL OR p.provider = only_provider)
        ORDER BY p.created_at, p.id
    LOOP
        PERFORM FROM payments.provider_snapshots s
        WHERE s.provider_payment_id = v_ours.provider_payment_id AND s.provider = v_ours.provider
          AND s.object_type = 'payment_intent';
        CONTINUE WHEN FOUND;
        kind := 'unknown_to_provider';
        provider := v_ours.provider;
        object_type := 'payment_intent';
        provider_object_id := v_ours.provider_payment_id;
        payment_id := v_ours.id;
        refund_id := NULL;
        ours := jsonb_build_object('status', v_ours.status, 'amount_minor', v_ours.amount_minor, 'currency', v_ours.currency);
        RETURN NEXT;
    END LOOP;
    FOR v_ours IN
        SELECT r.id, r.payment_id, r.provider, r.provider_refund_id, r.status, r.amount_minor, r.currency,
               p.provider_payment_id
        FROM payments.refunds r
        JOIN payments.payments p ON p.customer_id = r.customer_id AND p.id = r.payment_id
        WHERE r.created_at >= "from" AND r.created_at < "to" AND r.provider_refund_id IS NOT NULL
          AND (only_provider IS NULL OR r.provider = only_provider)
        ORDER BY r.created_at, r.id
    LOOP
        PERFORM FROM payments.provider_snapshots s
        WHERE s.provider_payment_id = v_ours.provider_payment_id AND s.provider = v_ours.provider
          AND s.object_type = 'refund' AND s.object_id = v_ours.provider_refund_id;
        CONTINUE WHEN FOUND;
        kind := 'unknown_to_provider';
        provider := v_ours.provider;
        object_type := 'refund';
        provider_object_id := v_ours.provider_refund_id;
        payment_id := v_ours.payment_id;
        refund_id := v_ours.id;
        ours := jsonb_build_object('status', v_ours.status, 'amount_minor', v_ours.amount_minor, 'currency', v_ours.currency);
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION payments.reconciliation_report(timestamptz, timestamptz, text) IS
    'Every disagreement between the provider''s objects created in [from, to) (as provider_snapshots last saw them) and our rows created then (of only_provider when given): missed_success (the provider succeeded, we did not: a missed webhook), status_differs, amount_differs, currency_differs, unknown_to_us (a provider object we have no row for), unknown_to_provider (a row of ours linked to an object the provider did not list). ours and theirs show status, amount_minor and currency. Pull the window first (payments-gateway reconcile does).';

CREATE FUNCTION payments.reconcile("from" timestamptz, "to" timestamptz, provider text, repair boolean DEFAULT false)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id       text := payments._new_id('rec');
    v_row      record;
    v_repaired_one boolean;
    v_snap     payments.provider_snapshots%ROWTYPE;
    v_payment  payments.payments%ROWTYPE;
    v_customer text;
    v_outcome  text;
    v_found    jsonb[] := '{}';
    v_repaired integer := 0;
BEGIN
    IF reconcile.provider IS NULL OR repair IS NULL THEN
        RAISE EXCEPTION 'provider and repair are required' USING ERRCODE = 'PM100';
    END IF;
    FOR v_row IN SELECT * FROM payments.reconciliation_report("from", "to", reconcile.provider) LOOP
        v_repaired_one := false;
        -- What the provider's own object settles: the status of a payment or refund we
        -- have, or a refund of one of our payments made at the provider directly.
        IF repair AND (v_row.kind IN ('missed_success', 'status_differs')
                       OR (v_row.kind = 'unknown_to_us' AND v_row.object_type = 'refund' AND v_row.payment_id IS NOT NULL)) THEN
            IF v_row.object_type = 'payment_intent' THEN
                SELECT s.* INTO v_snap FROM payments.provider_snapshots s
                WHERE s.provider_payment_id = v_row.provider_object_id AND s.provider = reconcile.provider
                  AND s.object_type = 'payment_intent' AND s.object_id = v_row.provider_object_id;
                SELECT r.outcome INTO v_outcome
                FROM payments.record_provider_result(v_row.payment_id, reconcile.provider, v_row.provider_object_id,
                                                     v_snap.status, v_snap.object) r;
            ELSE
                -- Lock order as everywhere: the provider id's row, then the payment's.
                v_customer := payments._customer_of(v_row.payment_id);
                SELECT p.* INTO v_payment FROM payments.payments p
                WHERE p.customer_id = v_customer AND p.id = v_row.payment_id;
                PERFORM payments._lock_provider_payment(v_payment.provider, v_payment.provider_payment_id);
                v_payment := payments._locked_payment(v_row.payment_id);
                SELECT s.* INTO v_snap FROM payments.provider_snapshots s
                WHERE s.provider_payment_id = v_payment.provider_payment_id AND s.provider = reconcile.provider
                  AND s.object_type = 'refund' AND s.object_id = v_row.provider_object_id;
                v_outcome := payments._apply_refund_object(v_payment, v_row.refund_id, v_snap.object, 'provider', NULL);
            END IF;
            v_repaired_one := v_outcome = 'applied';
            v_repaired := v_repaired + v_repaired_one::int;
        END IF;
        -- An array appended in place (a jsonb array would be copied at each step: quadratic).
        v_found := v_found || jsonb_build_object('kind', v_row.kind, 'object_type', v_row.object_type,
                                                 'provider_object_id', v_row.provider_object_id,
                                                 'payment_id', v_row.payment_id, 'refund_id', v_row.refund_id,
                                                 'ours', v_row.ours, 'theirs', v_row.theirs, 'repaired', v_repaired_one);
    END LOOP;
    INSERT INTO payments.reconciliation_runs (id, provider, window_from, window_to, repair, disagreements, repaired)
    VALUES (v_id, reconcile.provider, "from", "to", repair, to_jsonb(v_found), v_repaired);
    RETURN jsonb_build_object('id', v_id, 'provider', reconcile.provider, 'from', "from", 'to', "to", 'repair', repair,
                              'repaired', v_repaired, 'disagreements', to_jsonb(v_found));
END
$$;
COMMENT ON FUNCTION payments.reconcile(timestamptz, timestamptz, text, boolean) IS
    'Runs reconciliation_report for one provider, records the run in reconciliation_runs and returns it: {"id", "provider", "from", "to", "repair", "repaired", "disagreements": [{"kind", "object_type", "provider_object_id", "payment_id", "refund_id", "ours", "theirs", "repaired"}]}. With repair, a payment or refund whose status the provider''s object settles (missed_success, status_differs) is refreshed from that object, and a refund of one of our payments made at the provider directly (unknown_to_us) is taken in, through the same checks as any provider answer (its money must match; a final status never moves back): repaired says whether it moved. Amount and currency disagreements and unknown objects are left to an operator.';

-- ---------------------------------------------------------------------------
-- Usage metering (sql/usage.sql)
-- ---------------------------------------------------------------------------
-- payments: usage metering. Meters say how a customer's usage events add up
-- (sum, count, count of unique values of a property, max, last); record_usage
-- keeps each event once per idempotency key, so an agent's retry is never
-- counted twice; usage_summary answers "how much this period".
-- Timestamps follow Stripe's meter events: at most 35 days old, at most 5
-- minutes ahead.

CREATE TABLE payments.meters (
    code            text COLLATE "C" PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    name            text CHECK (length(name) BETWEEN 1 AND 255),
    aggregation     text NOT NULL CHECK (payments._is_allowed('meter_aggregation', aggregation)),
    unique_property text CHECK (length(unique_property) BETWEEN 1 AND 40),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((aggregation = 'count_unique') = (unique_property IS NOT NULL))
);
COMMENT ON TABLE payments.meters IS
    'What is metered and how its events add up over a period. Made by payments_admin with create_meter; on Citus a reference table (a copy on every node).';
COMMENT ON COLUMN payments.meters.code IS 'The meter''s code, as record_usage names it: lower case letters, digits, _ . - (at most 64).';
COMMENT ON COLUMN payments.meters.aggregation IS 'sum (of quantities), count (of events), count_unique (distinct values of unique_property), max (of quantities) or last (the latest event''s quantity).';
COMMENT ON COLUMN payments.meters.unique_property IS 'count_unique: the property of each event whose distinct values are counted (e.g. user_id for active users).';
SELECT pg_catalog.pg_extension_config_dump('payments.meters', '');

CREATE TABLE payments.usage_events (
    id              text COLLATE "C" NOT NULL,
    customer_id     text COLLATE "C" NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 255),
    meter           text COLLATE "C" NOT NULL,
    quantity        numeric NOT NULL CHECK (quantity >= 0 AND quantity < 1e15),
    occurred_at     timestamptz NOT NULL,
    properties      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(properties) = 'object'),
    idempotency_key text COLLATE "C" NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    fingerprint     bytea NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, id),
    CONSTRAINT usage_events_idempotency_key UNIQUE (customer_id, idempotency_key)
);
CREATE INDEX usage_events_meter_idx ON payments.usage_events (customer_id, meter, occurred_at);
COMMENT ON TABLE payments.usage_events IS
    'Every usage event recorded with record_usage, once per (customer, idempotency key). Append-only. On Citus beside the customer''s payments.';
COMMENT ON COLUMN payments.usage_events.id IS 'use_ + 26-character time-sortable id.';
COMMENT ON COLUMN payments.usage_events.meter IS
    'The meter''s code (payments.meters; record_usage checks it, and meters are never deleted). No foreign key: checking one locks the shared meter row in every recording transaction, and concurrent lockers of one row cost a MultiXact each (record_usage ran at half speed at 32 clients).';
COMMENT ON COLUMN payments.usage_events.quantity IS 'How much was used (exact numeric, 0 up to 10^15; count meters count events whatever it is).';
COMMENT ON COLUMN payments.usage_events.occurred_at IS 'When the usage happened (the period it counts in), at most 35 days before it was recorded and 5 minutes after.';
COMMENT ON COLUMN payments.usage_events.properties IS 'The event''s own dimensions (a flat object: at most 50 keys of 1 to 40 characters, scalar values of at most 500 characters).';
COMMENT ON COLUMN payments.usage_events.fingerprint IS 'sha256 of the event''s meter, quantity, given time and properties: the same key with another event is refused (PM201).';
SELECT pg_catalog.pg_extension_config_dump('payments.usage_events', '');
CREATE TRIGGER usage_events_append_only BEFORE UPDATE OR DELETE ON payments.usage_events
    FOR EACH ROW EXECUTE FUNCTION payments._refuse_change();
CREATE TRIGGER usage_events_no_truncate BEFORE TRUNCATE ON payments.usage_events
    FOR EACH STATEMENT EXECUTE FUNCTION payments._refuse_change();

CREATE FUNCTION payments.create_meter(code text, aggregation text, unique_property text DEFAULT NULL,
                                      name text DEFAULT NULL) RETURNS SETOF payments.meters
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_meter payments.meters%ROWTYPE;
BEGIN
    IF code IS NULL OR code !~ '^[a-z][a-z0-9_.-]{0,63}$' THEN
        RAISE EXCEPTION 'a meter code is 1 to 64 lower case letters, digits, _ . - starting with a letter, not %',
            quote_nullable(payments._shown(code)) USING ERRCODE = 'PM100';
    END IF;
    IF aggregation IS NULL OR NOT payments._is_allowed('meter_aggregation', aggregation) THEN
        RAISE EXCEPTION 'aggregation must be sum, count, count_unique, max or last, not %',
            quote_nullable(payments._shown(aggregation)) USING ERRCODE = 'PM100';
    END IF;
    IF (aggregation = 'count_unique') <> (unique_property IS NOT NULL) OR length(unique_property) NOT BETWEEN 1 AND 40
       OR length(name) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'count_unique needs a unique_property (1 to 40 characters), the other aggregations none; a name is 1 to 255 characters'
            USING ERRCODE = 'PM100';
    END IF;
    INSERT INTO payments.meters AS m (code, name, aggregation, unique_property)
    VALUES (create_meter.code, create_meter.name, create_meter.aggregation, create_meter.unique_property)
    ON CONFLICT ON CONSTRAINT meters_pkey DO NOTHING;
    SELECT * INTO v_meter FROM payments.meters m WHERE m.code = create_meter.code;
    -- Asked again the same way: the same meter; another way: refused (events already count by it).
    IF (v_meter.aggregation, v_meter.unique_property, v_meter.name)
       IS DISTINCT FROM (create_meter.aggregation, create_meter.unique_property, create_meter.name) THEN
        RAISE EXCEPTION 'meter % exists with another definition', v_meter.code USING ERRCODE = 'PM201',
            HINT = 'a meter''s definition never changes: make a meter with a new code';
    END IF;
    RETURN NEXT v_meter;
END
$$;
COMMENT ON FUNCTION payments.create_meter(text, text, text, text) IS
    'Makes a meter (admin): its code, aggregation (sum, count, count_unique with the unique_property, max, last) and name. The same call again returns it; another definition for an existing code is PM201.';

CREATE FUNCTION payments._usage_event_problem(p_meter payments.meters, p_quantity numeric, p_occurred_at timestamptz,
                                              p_properties jsonb, p_at timestamptz) RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_quantity IS NULL OR p_quantity = 'NaN' OR p_quantity < 0 OR p_quantity >= 1e15 THEN
        RETURN 'quantity must be a number from 0 to 10^15';
    ELSIF p_occurred_at IS NULL OR p_occurred_at > p_at + interval '5 minutes' THEN
        RETURN 'occurred_at is more than 5 minutes in the future';
    ELSIF p_occurred_at < p_at - interval '35 days' THEN
        RETURN 'occurred_at is more than 35 days in the past';
    ELSIF payments._metadata_problem(coalesce(p_properties, '{}')) IS NOT NULL THEN
        RETURN replace(payments._metadata_problem(p_properties), 'metadata', 'properties');
    ELSIF p_meter.aggregation = 'count_unique'
          AND coalesce(jsonb_typeof(p_properties -> p_meter.unique_property), 'null') NOT IN ('string', 'number') THEN
        RETURN 'meter ' || p_meter.code || ' counts distinct values of property ' || p_meter.unique_property
               || ': the event has none';
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION payments._usage_event_problem(payments.meters, numeric, timestamptz, jsonb, timestamptz) IS
    'Internal: why a usage event cannot be recorded at time p_at (its quantity, time or properties), or NULL.';

CREATE FUNCTION payments.record_usage(idempotency_key text, customer_id text, meter text, quantity numeric,
                                      occurred_at timestamptz DEFAULT NULL, properties jsonb DEFAULT '{}')
RETURNS TABLE (id text, outcome text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_meter    payments.meters%ROWTYPE;
    v_at       timestamptz := coalesce(occurred_at, now());
    v_props    jsonb := coalesce(properties, '{}');
    v_problem  text;
    v_fp       bytea;
    v_existing record;
BEGIN
    IF idempotency_key IS NULL OR length(idempotency_key) NOT BETWEEN 1 AND 255
       OR customer_id IS NULL OR length(customer_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'idempotency_key and customer_id must be 1 to 255 characters' USING ERRCODE = 'PM100';
    END IF;
    SELECT * INTO v_meter FROM payments.meters m WHERE m.code = record_usage.meter;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'meter % not found', quote_nullable(payments._shown(record_usage.meter)) USING ERRCODE = 'PM204';
    END IF;
    v_problem := payments._usage_event_problem(v_meter, quantity, v_at, v_props, now());
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION '%', v_problem USING ERRCODE = 'PM100';
    END IF;
    -- The time only when the caller gave it: a retry without one is the same event.
    v_fp := sha256(convert_to(jsonb_build_array(v_meter.code, quantity, payments._epoch_micros(occurred_at), v_props)::text,
                              'UTF8'));
    id := payments._new_id('use');
    INSERT INTO payments.usage_events AS u (id, customer_id, meter, quantity, occurred_at, properties, idempotency_key,
                                            fingerprint)
    VALUES (record_usage.id, record_usage.customer_id, v_meter.code, quantity, v_at, v_props,
            record_usage.idempotency_key, v_fp)
    ON CONFLICT ON CONSTRAINT usage_events_idempotency_key DO NOTHING;
    IF FOUND THEN
        INSERT INTO payments.usage_daily AS d (customer_id, meter, day, stripe, quantity, events, max_quantity)
        VALUES (record_usage.customer_id, v_meter.code, (v_at AT TIME ZONE 'UTC')::date, pg_backend_pid() % 16,
                quantity, 1, quantity)
        ON CONFLICT ON CONSTRAINT usage_daily_pkey DO UPDATE
        SET quantity = d.quantity + excluded.quantity, events = d.events + 1,
            max_quantity = greatest(d.max_quantity, excluded.max_quantity);
        -- Usage no payment could charge is refused now, not when it is billed (all of it rolls back).
        v_problem := payments._pending_usage_problem(record_usage.customer_id, v_meter.code);
        IF v_problem IS NOT NULL THEN
            RAISE EXCEPTION '%', v_problem USING ERRCODE = 'PM104';
        END IF;
        outcome := 'created';
        RETURN NEXT;
        RETURN;
    END IF;
    -- The key was used: the same event again changes nothing.
    SELECT u.id, u.fingerprint INTO v_existing FROM payments.usage_events u
    WHERE u.customer_id = record_usage.customer_id AND u.idempotency_key = record_usage.idempotency_key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'idempotency key % was claimed by a concurrent transaction', quote_literal(idempotency_key)
            USING ERRCODE = '40001', HINT = 'retry the transaction';
    ELSIF v_existing.fingerprint <> v_fp THEN
        RAISE EXCEPTION 'idempotency key % was already used for another usage event', quote_literal(idempotency_key)
            USING ERRCODE = 'PM201', DETAIL = 'the key belongs to usage event ' || v_existing.id;
    END IF;
    id := v_existing.id;
    outcome := 'replayed';
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION payments.record_usage(text, text, text, numeric, timestamptz, jsonb) IS
    'Records one usage event of a customer on a meter, once per (customer, idempotency_key): the same event again is replayed (outcome replayed) and counts once; the key with another event is PM201. quantity: 0 to 10^15, exact; occurred_at (default: now, and then not part of what a replay must repeat) at most 35 days ago and 5 minutes ahead (as Stripe''s meter events); properties a flat object (count_unique meters need their property). Unknown meter PM204; bad input PM100; an event that would price the next invoice of the subscription billing the meter (its fee and all usage since the period''s start) above what one payment can charge PM104. In the caller''s transaction.';

CREATE FUNCTION payments.record_usage_batch(events jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_event  jsonb;
    v_index  integer;
    v_one    record;
    v_result jsonb[] := '{}';
    v_state  text;
    v_msg    text;
BEGIN
    IF jsonb_typeof(events) IS DISTINCT FROM 'array' OR jsonb_array_length(events) NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'events must be a JSON array of 1 to 1000 usage events' USING ERRCODE = 'PM100';
    END IF;
    -- In the order of the usage_daily rows they add to, so that two batches never wait on each other in a cycle.
    FOR v_event, v_index IN
        SELECT e.value, (e.ordinality - 1)::integer FROM jsonb_array_elements(events) WITH ORDINALITY e
        ORDER BY e.value ->> 'customer_id', e.value ->> 'meter', e.value ->> 'occurred_at', e.ordinality
    LOOP
        BEGIN
            IF jsonb_typeof(v_event) IS DISTINCT FROM 'object' OR jsonb_typeof(v_event -> 'quantity') NOT IN ('number', 'string')
               OR (v_event ? 'occurred_at' AND jsonb_typeof(v_event -> 'occurred_at') <> 'string') THEN
                RAISE EXCEPTION 'each event is an object with idempotency_key, customer_id, meter, quantity and optionally occurred_at (text) and properties'
                    USING ERRCODE = 'PM100';
            END IF;
            SELECT * INTO v_one FROM payments.record_usage(
                v_event ->> 'idempotency_key', v_event ->> 'customer_id', v_event ->> 'meter',
                (v_event ->> 'quantity')::numeric, (v_event ->> 'occurred_at')::timestamptz,
                coalesce(v_event -> 'properties', '{}'));
            v_result[v_index + 1] := jsonb_build_object('index', v_index, 'id', v_one.id, 'outcome', v_one.outcome);
        EXCEPTION WHEN OTHERS THEN
            -- One bad event is reported with its SQLSTATE; the others are recorded.
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
            v_result[v_index + 1] := jsonb_build_object('index', v_index, 'error',
                                                        jsonb_build_object('sqlstate', v_state, 'message', left(v_msg, 200)));
        END;
    END LOOP;
    RETURN to_jsonb(v_result);
END
$$;
COMMENT ON FUNCTION payments.record_usage_batch(jsonb) IS
    'record_usage for up to 1000 events at once ([{"idempotency_key", "customer_id", "meter", "quantity", "occurred_at"?, "properties"?}]): returns one result per event, in order: {"index", "id", "outcome"} or {"index", "error": {"sqlstate", "message"}}; a bad event does not stop the others. Events are recorded in the order of customer, meter, occurred_at and then as given: the first of two events with one key in that order is the one created.';

CREATE FUNCTION payments.usage_summary(customer_id text, meter text, "from" timestamptz, "to" timestamptz)
RETURNS TABLE (value numeric, event_count bigint, aggregation text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_meter   payments.meters%ROWTYPE;
    -- A login bound to another customer sees none of this one's usage.
    v_visible boolean := usage_summary.customer_id = coalesce(payments._bound_customer(), usage_summary.customer_id);
BEGIN
    SELECT * INTO v_meter FROM payments.meters m WHERE m.code = usage_summary.meter;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'meter % not found', quote_nullable(payments._shown(usage_summary.meter)) USING ERRCODE = 'PM204';
    END IF;
    IF "from" IS NULL OR "to" IS NULL OR "from" >= "to" THEN
        RAISE EXCEPTION 'from must be before to' USING ERRCODE = 'PM100';
    END IF;
    aggregation := v_meter.aggregation;
    SELECT CASE v_meter.aggregation
               WHEN 'sum' THEN coalesce(sum(u.quantity), 0)
               WHEN 'count' THEN count(*)
               WHEN 'count_unique' THEN count(DISTINCT u.properties ->> v_meter.unique_property)
               WHEN 'max' THEN coalesce(max(u.quantity), 0)
               ELSE coalesce((array_agg(u.quantity ORDER BY u.occurred_at DESC, u.id DESC))[1], 0) END,
           count(*)
    INTO value, event_count
    FROM payments.usage_events u
    WHERE v_visible AND u.customer_id = usage_summary.customer_id AND u.meter = v_meter.code
      AND u.occurred_at >= "from" AND u.occurred_at < "to";
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION payments.usage_summary(text, text, timestamptz, timestamptz) IS
    'A customer''s usage on a meter over [from, to), by the meter''s aggregation: value (sum, count, distinct count, max or the latest quantity; 0 when none), event_count and the aggregation. Unknown meter PM204.';

CREATE VIEW payments.usage_log WITH (security_invoker) AS
SELECT u.id, u.customer_id, u.meter, u.quantity, u.occurred_at, u.properties, u.recorded_at
FROM payments.usage_events u;
COMMENT ON VIEW payments.usage_log IS
    'Every recorded usage event without its idempotency fingerprint; readable by payments_reader.';

-- ---------------------------------------------------------------------------
-- Plans, subscriptions and quotas (sql/subscriptions.sql)
-- ---------------------------------------------------------------------------
-- payments: plans, subscriptions, and the question agents ask before they act:
-- "may this customer use one more unit?". consume answers it in one
-- statement, never past a limit however many agents ask at once (each
-- subscription's row lock serialises its consumption), and answers a
-- retried request_id as it answered the first time.
-- Renewals, invoices and dunning (run_billing) build on these tables.

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
    usage_threshold_minor bigint CHECK (usage_threshold_minor > 0)
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
COMMENT ON COLUMN payments.plans.features IS 'Each feature the plan grants and its limit per period: {"api_calls": 1000, "seats": 5, "export": null} (null: unlimited).';
SELECT pg_catalog.pg_extension_config_dump('payments.plans', '');

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
    credit_minor         bigint NOT NULL DEFAULT 0 CHECK (credit_minor >= 0),
    anchor_period        integer NOT NULL DEFAULT 0 CHECK (anchor_period >= 0),
    usage_from           timestamptz NOT NULL,
    billing_error        jsonb,
    idempotency_key      text COLLATE "C" NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    fingerprint          bytea NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
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
COMMENT ON COLUMN payments.subscriptions.period_number IS 'Which paid period is current (0: the trial).';
COMMENT ON COLUMN payments.subscriptions.past_due_since IS 'When its renewal first failed; past_due grants its features for the grace period after it (set_dunning).';
COMMENT ON COLUMN payments.subscriptions.pending_plan IS 'The plan it moves to when the current period ends (change_plan without proration).';
COMMENT ON COLUMN payments.subscriptions.credit_minor IS 'What a downgrade left to the customer, in minor units: taken off the next invoices.';
COMMENT ON COLUMN payments.subscriptions.cancel_at_period_end IS 'It ends when the current period does (cancel_subscription with at_period_end).';
SELECT pg_catalog.pg_extension_config_dump('payments.subscriptions', '');

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
CREATE TRIGGER subscription_events_append_only BEFORE UPDATE OR DELETE ON payments.subscription_events
    FOR EACH ROW EXECUTE FUNCTION payments._refuse_change();
CREATE TRIGGER subscription_events_no_truncate BEFORE TRUNCATE ON payments.subscription_events
    FOR EACH STATEMENT EXECUTE FUNCTION payments._refuse_change();

CREATE TABLE payments.feature_usage (
    customer_id     text COLLATE "C" NOT NULL,
    subscription_id text COLLATE "C" NOT NULL,
    feature         text COLLATE "C" NOT NULL,
    period_start    timestamptz NOT NULL,
    used            numeric NOT NULL CHECK (used >= 0),
    PRIMARY KEY (customer_id, subscription_id, feature, period_start),
    FOREIGN KEY (customer_id, subscription_id) REFERENCES payments.subscriptions (customer_id, id)
);
COMMENT ON TABLE payments.feature_usage IS
    'How much of each feature a subscription consumed in each period: the running total consume checks and raises.';

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
    PRIMARY KEY (customer_id, request_id)
);
COMMENT ON TABLE payments.consumptions IS
    'Every consume call''s answer, once per (customer, request_id), allowed or refused: a retried request gets the same answer and consumes nothing more. Append-only.';
COMMENT ON COLUMN payments.consumptions.remaining IS 'What was left of the limit after this call (NULL: unlimited).';
COMMENT ON COLUMN payments.consumptions.reason IS 'Why it was refused: no_entitlement (no active subscription grants the feature) or limit_exceeded.';
SELECT pg_catalog.pg_extension_config_dump('payments.consumptions', '');
CREATE TRIGGER consumptions_append_only BEFORE UPDATE OR DELETE ON payments.consumptions
    FOR EACH ROW EXECUTE FUNCTION payments._refuse_change();

-- ---------------------------------------------------------------------------
-- Plans
-- ---------------------------------------------------------------------------
CREATE FUNCTION payments.create_plan(code text, currency text, amount numeric, billing_interval text,
                                     interval_count integer DEFAULT 1, trial_days integer DEFAULT 0,
                                     features jsonb DEFAULT '{}', name text DEFAULT NULL, metered jsonb DEFAULT '[]',
                                     usage_threshold numeric DEFAULT NULL)
RETURNS SETOF payments.plans
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_plan     payments.plans%ROWTYPE;
    v_currency text := upper(currency);
    v_minor    bigint;
    v_threshold bigint;
    v_features jsonb := coalesce(features, '{}');
    v_metered  jsonb := coalesce(metered, '[]');
    v_problem  text;
BEGIN
    IF code IS NULL OR code !~ '^[a-z][a-z0-9_.-]{0,63}$' THEN
        RAISE EXCEPTION 'a plan code is 1 to 64 lower case letters, digits, _ . - starting with a letter, not %',
            quote_nullable(payments._shown(code)) USING ERRCODE = 'PM100';
    END IF;
    IF billing_interval IS NULL OR NOT payments._is_allowed('billing_interval', billing_interval)
       OR interval_count IS NULL OR interval_count NOT BETWEEN 1 AND 365
       OR trial_days IS NULL OR trial_days NOT BETWEEN 0 AND 730 OR length(name) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'billing_interval is day, week, month or year, interval_count 1 to 365, trial_days 0 to 730, a name 1 to 255 characters'
            USING ERRCODE = 'PM100';
    END IF;
    IF jsonb_typeof(v_features) <> 'object'
       OR EXISTS (SELECT 1 FROM jsonb_each(v_features) f
                  WHERE f.key !~ '^[a-z][a-z0-9_.-]{0,63}$'
                     OR NOT (jsonb_typeof(f.value) = 'null'
                             OR (jsonb_typeof(f.value) = 'number' AND (f.value::text)::numeric >= 0))) THEN
        RAISE EXCEPTION 'features is an object of feature codes to limits (a number from 0, or null for unlimited)'
            USING ERRCODE = 'PM100';
    END IF;
    IF jsonb_typeof(v_metered) <> 'array' THEN
        RAISE EXCEPTION 'metered is an array of {"meter", "price"}' USING ERRCODE = 'PM100';
    END IF;
    SELECT coalesce(
               CASE WHEN NOT EXISTS (SELECT 1 FROM payments.meters m WHERE m.code = e.value ->> 'meter')
                    THEN 'unknown meter ' || quote_nullable(e.value ->> 'meter') END,
               payments._price_problem((e.value -> 'price')::text))
    INTO v_problem
    FROM jsonb_array_elements(v_metered) e
    WHERE NOT EXISTS (SELECT 1 FROM payments.meters m WHERE m.code = e.value ->> 'meter')
       OR payments._price_problem((e.value -> 'price')::text) IS NOT NULL
    LIMIT 1;
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'metered price: %', v_problem USING ERRCODE = 'PM100';
    END IF;
    -- A free plan is a price of 0; anything else is money, checked as money.
    v_minor := CASE WHEN amount = 0 THEN 0 ELSE payments.to_minor(amount, v_currency) END;
    IF payments.to_major(0, v_currency) IS NULL THEN
        PERFORM payments.to_minor(1, v_currency);  -- raises the unknown currency
    END IF;
    v_threshold := CASE WHEN usage_threshold IS NOT NULL THEN payments.to_minor(usage_threshold, v_currency) END;
    IF v_threshold <= 0 OR (v_threshold IS NOT NULL AND jsonb_array_length(v_metered) = 0) THEN
        RAISE EXCEPTION 'usage_threshold is a positive amount, for a plan with metered prices' USING ERRCODE = 'PM100';
    END IF;
    INSERT INTO payments.plans AS p (code, name, currency, amount_minor, billing_interval, interval_count, trial_days,
                                     features, metered, usage_threshold_minor)
    VALUES (create_plan.code, create_plan.name, v_currency, v_minor, create_plan.billing_interval,
            create_plan.interval_count, create_plan.trial_days, v_features, v_metered, v_threshold)
    ON CONFLICT ON CONSTRAINT plans_pkey DO NOTHING;
    SELECT * INTO v_plan FROM payments.plans p WHERE p.code = create_plan.code;
    IF (v_plan.name, v_plan.currency, v_plan.amount_minor, v_plan.billing_interval, v_plan.interval_count,
        v_plan.trial_days, v_plan.features, v_plan.metered, v_plan.usage_threshold_minor)
       IS DISTINCT FROM (create_plan.name, v_currency, v_minor, create_plan.billing_interval, create_plan.interval_count,
                         create_plan.trial_days, v_features, v_metered, v_threshold) THEN
        RAISE EXCEPTION 'plan % exists with another definition', v_plan.code USING ERRCODE = 'PM201',
            HINT = 'a plan never changes under its subscriptions: make a plan with a new code and change_plan to it';
    END IF;
    RETURN NEXT v_plan;
END
$$;
COMMENT ON FUNCTION payments.create_plan(text, text, numeric, text, integer, integer, jsonb, text, jsonb, numeric) IS
    'Makes a plan (admin): code, currency, recurring amount (major units, exact; 0 for free), billing_interval (day, week, month, year) times interval_count, trial_days, features ({"feature": limit or null}), name, metered usage billed in arrears ([{"meter", "price": {"mode": per_unit | graduated | volume, "tiers": [...]}}]), and usage_threshold (major units: usage is invoiced as soon as it reaches this much within a period). The same call again returns it; another definition for its code PM201.';

CREATE FUNCTION payments.archive_plan(code text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE payments.plans p SET archived_at = now() WHERE p.code = archive_plan.code AND p.archived_at IS NULL;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION payments.archive_plan(text) IS
    'Stops a plan taking new subscriptions (admin); its subscriptions keep it. false when unknown or already archived.';

-- ---------------------------------------------------------------------------
-- Subscriptions
-- ---------------------------------------------------------------------------
CREATE VIEW payments.subscription_details WITH (security_invoker) AS
SELECT s.id, s.customer_id, s.plan, s.status, s.payment_method, s.current_period_start, s.current_period_end,
       s.trial_end, s.cancel_at_period_end, s.canceled_at, s.created_at, s.updated_at, s.billing_error
FROM payments.subscriptions s;
COMMENT ON VIEW payments.subscription_details IS
    'Every subscription without its idempotency fingerprint, with why run_billing last failed for it (billing_error, NULL when it did not). What get_subscription returns; readable by payments_reader.';

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
    outcome              text
);
COMMENT ON TYPE payments.subscription_result IS
    'A subscription as a call leaves it, plus outcome: created | replayed (create_subscription), applied | noop (cancel, pause, resume).';

CREATE FUNCTION payments._subscription_result(p_customer_id text, p_id text, p_outcome text)
RETURNS SETOF payments.subscription_result
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY SELECT d.*, p_outcome FROM payments.subscription_details d
    WHERE d.customer_id = p_customer_id AND d.id = p_id;
END
$$;
COMMENT ON FUNCTION payments._subscription_result(text, text, text) IS 'Internal: a subscription as a subscription_result row.';

CREATE FUNCTION payments._utc_add(p_at timestamptz, p_span interval) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ((p_at AT TIME ZONE 'UTC') + p_span) AT TIME ZONE 'UTC';

COMMENT ON FUNCTION payments._utc_add(timestamptz, interval) IS
    'Internal: p_at plus p_span counted on the UTC calendar. timestamptz + interval counts days and months in the session''s TimeZone (a day across a DST change is 23 or 25 hours; January 31 + 1 month is February 28 in UTC but March 1 in Los Angeles at 04:00Z); billing must not depend on who calls it.';

CREATE FUNCTION payments._period_end(p_plan payments.plans, p_anchor timestamptz, p_number integer) RETURNS timestamptz
LANGUAGE sql IMMUTABLE
RETURN payments._utc_add(p_anchor, p_number * p_plan.interval_count
                                   * CASE p_plan.billing_interval WHEN 'day' THEN interval '1 day'
                                                                  WHEN 'week' THEN interval '7 days'
                                                                  WHEN 'month' THEN interval '1 month'
                                                                  ELSE interval '1 year' END);
COMMENT ON FUNCTION payments._period_end(payments.plans, timestamptz, integer) IS
    'Internal: the end of a plan''s p_number-th period counted from p_anchor on the UTC calendar (from January 31: February 28 or 29, then March 31, as Stripe bills).';

CREATE FUNCTION payments._subscription_event(p_sub payments.subscriptions, p_from text, p_reason text, p_data jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
BEGIN
    -- The caller holds the subscription's row lock (or just made it).
    SELECT coalesce(max(e.seq), 0) + 1 INTO v_seq FROM payments.subscription_events e
    WHERE e.customer_id = p_sub.customer_id AND e.subscription_id = p_sub.id;
    INSERT INTO payments.subscription_events (customer_id, subscription_id, seq, from_status, to_status, reason, data)
    VALUES (p_sub.customer_id, p_sub.id, v_seq, p_from, p_sub.status, p_reason, p_data);
    PERFORM payments._emit(p_sub.customer_id, 'subscription', p_sub.id, p_sub.status, p_from, p_from IS NULL,
                           jsonb_build_object('plan', p_sub.plan, 'reason', p_reason));
END
$$;
COMMENT ON FUNCTION payments._subscription_event(payments.subscriptions, text, text, jsonb) IS
    'Internal: appends a step to a subscription''s history. The caller holds its row lock.';

CREATE FUNCTION payments.create_subscription(idempotency_key text, customer_id text, plan text,
                                             payment_method text DEFAULT NULL, trial_days integer DEFAULT NULL,
                                             at timestamptz DEFAULT now())
RETURNS SETOF payments.subscription_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_plan     payments.plans%ROWTYPE;
    v_trial    integer;
    v_fp       bytea;
    v_sub      payments.subscriptions%ROWTYPE;
    v_existing payments.subscriptions%ROWTYPE;
BEGIN
    IF idempotency_key IS NULL OR length(idempotency_key) NOT BETWEEN 1 AND 255
       OR customer_id IS NULL OR length(customer_id) NOT BETWEEN 1 AND 255 OR length(payment_method) > 255
       OR at IS NULL THEN
        RAISE EXCEPTION 'idempotency_key and customer_id must be 1 to 255 characters, a payment method at most 255, at given'
            USING ERRCODE = 'PM100';
    END IF;
    SELECT * INTO v_plan FROM payments.plans p WHERE p.code = create_subscription.plan;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'plan % not found', quote_nullable(payments._shown(create_subscription.plan)) USING ERRCODE = 'PM204';
    END IF;
    v_trial := coalesce(trial_days, v_plan.trial_days);
    IF v_trial NOT BETWEEN 0 AND 730 THEN
        RAISE EXCEPTION 'trial_days must be 0 to 730' USING ERRCODE = 'PM100';
    END IF;
    -- The parameters, not the time: a retry later is the same subscription.
    v_fp := sha256(convert_to(jsonb_build_array(v_plan.code, payment_method, trial_days)::text, 'UTF8'));
    SELECT * INTO v_existing FROM payments.subscriptions s
    WHERE s.customer_id = create_subscription.customer_id AND s.idempotency_key = create_subscription.idempotency_key;
    IF NOT FOUND THEN
        IF v_plan.archived_at IS NOT NULL THEN
            RAISE EXCEPTION 'plan % is archived and takes no new subscriptions', v_plan.code USING ERRCODE = 'PM206';
        END IF;
        v_sub.id := payments._new_id('sub');
        v_sub.customer_id := customer_id;
        v_sub.plan := v_plan.code;
        v_sub.payment_method := payment_method;
        v_sub.current_period_start := at;
        -- A trial is its own first period; a free plan is active at once; a paid one waits
        -- for its first period to be paid (incomplete, as on Stripe).
        IF v_trial > 0 THEN
            v_sub.status := 'trialing';
            v_sub.trial_end := payments._utc_add(at, v_trial * interval '1 day');
            v_sub.current_period_end := v_sub.trial_end;
            v_sub.billing_anchor := v_sub.trial_end;
            v_sub.period_number := 0;
        ELSE
            v_sub.status := CASE WHEN v_plan.amount_minor = 0 THEN 'active' ELSE 'incomplete' END;
            v_sub.billing_anchor := at;
            v_sub.period_number := 1;
            v_sub.current_period_end := payments._period_end(v_plan, at, 1);
        END IF;
        v_sub.usage_from := at;
        INSERT INTO payments.subscriptions (id, customer_id, plan, status, payment_method, current_period_start,
                                            current_period_end, billing_anchor, period_number, trial_end, usage_from,
                                            idempotency_key, fingerprint)
        VALUES (v_sub.id, v_sub.customer_id, v_sub.plan, v_sub.status, v_sub.payment_method, v_sub.current_period_start,
                v_sub.current_period_end, v_sub.billing_anchor, v_sub.period_number, v_sub.trial_end, v_sub.usage_from,
                create_subscription.idempotency_key, v_fp)
        ON CONFLICT ON CONSTRAINT subscriptions_idempotency_key DO NOTHING;
        IF FOUND THEN
            PERFORM payments._claim_meters(v_sub, v_plan);
            PERFORM payments._subscription_event(v_sub, NULL, 'created',
                                                 jsonb_build_object('idempotency_key', idempotency_key, 'trial_days', v_trial));
            IF v_sub.status = 'incomplete' THEN
                -- The first period is invoiced and charged at once; paid, it makes the subscription active.
                PERFORM payments._invoice_period(v_sub, v_plan, v_plan, NULL, NULL, at);
            END IF;
            RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'created');
            RETURN;
        END IF;
        SELECT * INTO v_existing FROM payments.subscriptions s
        WHERE s.customer_id = create_subscription.customer_id AND s.idempotency_key = create_subscription.idempotency_key;
    END IF;
    IF v_existing.fingerprint IS DISTINCT FROM v_fp THEN
        RAISE EXCEPTION 'idempotency key % was already used with different parameters', quote_literal(idempotency_key)
            USING ERRCODE = 'PM201', DETAIL = 'the key belongs to subscription ' || v_existing.id;
    END IF;
    RETURN QUERY SELECT * FROM payments._subscription_result(v_existing.customer_id, v_existing.id, 'replayed');
END
$$;
COMMENT ON FUNCTION payments.create_subscription(text, text, text, text, integer, timestamptz) IS
    'Subscribes a customer to a plan at time at, idempotently per customer (replayed; other parameters PM201). With a trial (trial_days, default the plan''s): trialing until it ends; a free plan: active; a paid plan without trial: incomplete until its first period is paid (incomplete_expired, its invoice void, if that does not happen within 23 hours). Unknown plan PM204; an archived one PM206; a plan pricing a meter that another live subscription of the customer already bills PM206.';

CREATE FUNCTION payments.get_subscription(id text) RETURNS SETOF payments.subscription_details
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- Read once, here: inside the query Citus would send it to the shards.
    v_bound text := payments._bound_customer();
BEGIN
    RETURN QUERY SELECT * FROM payments.subscription_details d
    WHERE d.id = get_subscription.id AND d.customer_id = coalesce(v_bound, d.customer_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription % not found', payments._shown(get_subscription.id) USING ERRCODE = 'PM204';
    END IF;
END
$$;
COMMENT ON FUNCTION payments.get_subscription(text) IS 'One subscription by id; PM204 when there is none.';

CREATE FUNCTION payments.list_subscriptions(customer_id text DEFAULT NULL, status text DEFAULT NULL, lim int DEFAULT 10,
                                            starting_after text DEFAULT NULL)
RETURNS SETOF payments.subscription_details
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- Read once, here: inside the query Citus would send it to the shards.
    v_bound text := payments._bound_customer();
BEGIN
    IF lim IS NULL OR lim NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'lim must be between 1 and 100' USING ERRCODE = 'PM100';
    END IF;
    IF list_subscriptions.status IS NOT NULL AND NOT payments._is_allowed('subscription_status', list_subscriptions.status) THEN
        RAISE EXCEPTION 'unknown subscription status %', quote_literal(payments._shown(list_subscriptions.status))
            USING ERRCODE = 'PM100', HINT = 'SELECT * FROM payments.allowed_values() WHERE kind = ''subscription_status''';
    END IF;
    RETURN QUERY SELECT * FROM payments.subscription_details d
    WHERE (list_subscriptions.customer_id IS NULL OR d.customer_id = list_subscriptions.customer_id)
      -- A login bound to one customer sees that customer's subscriptions only.
      AND d.customer_id = coalesce(v_bound, d.customer_id)
      AND (list_subscriptions.status IS NULL OR d.status = list_subscriptions.status)
      AND (starting_after IS NULL OR d.id < starting_after)
    ORDER BY d.id DESC LIMIT lim;
END
$$;
COMMENT ON FUNCTION payments.list_subscriptions(text, text, int, text) IS
    'Subscriptions newest first (of one customer, in one status, when given), lim (1 to 100) at a time; starting_after: the last id of the previous page.';

CREATE FUNCTION payments._locked_subscription(p_id text) RETURNS payments.subscriptions
LANGUAGE plpgsql AS $$
DECLARE
    v_customer text;
    v_sub      payments.subscriptions%ROWTYPE;
BEGIN
    SELECT s.customer_id INTO v_customer FROM payments.subscriptions s WHERE s.id = p_id;
    SELECT * INTO v_sub FROM payments.subscriptions s WHERE s.customer_id = v_customer AND s.id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription % not found', payments._shown(p_id) USING ERRCODE = 'PM204';
    END IF;
    RETURN v_sub;
END
$$;
COMMENT ON FUNCTION payments._locked_subscription(text) IS
    'Internal: a subscription by id, its row locked for the rest of the transaction; PM204 when unknown.';

CREATE FUNCTION payments._set_subscription(p_sub payments.subscriptions, p_from text, p_reason text, p_data jsonb)
RETURNS SETOF payments.subscription_result
LANGUAGE plpgsql AS $$
DECLARE
    -- A value, not now() in the CASE: Citus allows only immutable functions there.
    v_now timestamptz := now();
BEGIN
    UPDATE payments.subscriptions s
    SET status = p_sub.status, cancel_at_period_end = p_sub.cancel_at_period_end, canceled_at = p_sub.canceled_at,
        past_due_since = CASE WHEN p_sub.status = 'past_due' THEN coalesce(s.past_due_since, p_sub.past_due_since, v_now) END,
        updated_at = now()
    WHERE s.customer_id = p_sub.customer_id AND s.id = p_sub.id;
    PERFORM payments._subscription_event(p_sub, p_from, p_reason, p_data);
    RETURN QUERY SELECT * FROM payments._subscription_result(p_sub.customer_id, p_sub.id, 'applied');
END
$$;
COMMENT ON FUNCTION payments._set_subscription(payments.subscriptions, text, text, jsonb) IS
    'Internal: stores a locked subscription''s new status and cancel fields and notes the step in its history. past_due_since is kept from the first failure on (the caller sets it to the time of the failed attempt).';

CREATE FUNCTION payments.cancel_subscription(id text, at_period_end boolean DEFAULT true, at timestamptz DEFAULT now())
RETURNS SETOF payments.subscription_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_sub  payments.subscriptions%ROWTYPE := payments._locked_for_billing(cancel_subscription.id);
    v_from text := v_sub.status;
BEGIN
    IF at_period_end IS NULL OR at IS NULL THEN
        RAISE EXCEPTION 'at_period_end and at are required' USING ERRCODE = 'PM100';
    END IF;
    IF v_sub.status IN ('canceled', 'incomplete_expired') OR (at_period_end AND v_sub.cancel_at_period_end) THEN
        RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'noop');
        RETURN;
    END IF;
    IF at_period_end AND v_sub.status IN ('trialing', 'active', 'past_due') THEN
        v_sub.cancel_at_period_end := true;
        RETURN QUERY SELECT * FROM payments._set_subscription(v_sub, v_from, 'cancel at period end',
                                                              jsonb_build_object('at', at));
        RETURN;
    END IF;
    PERFORM payments._end_subscription(v_sub, 'canceled', at, 'canceled', at);
    RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'applied');
END
$$;
COMMENT ON FUNCTION payments.cancel_subscription(text, boolean, timestamptz) IS
    'Cancels a subscription: at the end of its period (default; it stays usable until then), or at once (at_period_end false, and always for one that is not trialing, active or past_due). Either way its usage not yet invoiced is invoiced once (a final invoice, one attempt), and its open invoices are no longer collected (uncollectible; a payment waiting on the customer is canceled), as on Stripe. Canceling again is a noop. PM204 when unknown.';

CREATE FUNCTION payments.pause_subscription(id text) RETURNS SETOF payments.subscription_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_sub  payments.subscriptions%ROWTYPE := payments._locked_subscription(pause_subscription.id);
    v_from text := v_sub.status;
BEGIN
    IF v_sub.status = 'paused' THEN
        RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'noop');
        RETURN;
    ELSIF v_sub.status NOT IN ('trialing', 'active') THEN
        RAISE EXCEPTION 'subscription % is % and cannot be paused', v_sub.id, v_sub.status USING ERRCODE = 'PM206';
    END IF;
    v_sub.status := 'paused';
    RETURN QUERY SELECT * FROM payments._set_subscription(v_sub, v_from, 'paused', '{}');
END
$$;
COMMENT ON FUNCTION payments.pause_subscription(text) IS
    'Pauses a trialing or active subscription (PM206 otherwise): it grants nothing until resumed. Pausing again is a noop.';

CREATE FUNCTION payments.resume_subscription(id text, at timestamptz DEFAULT now()) RETURNS SETOF payments.subscription_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_sub  payments.subscriptions%ROWTYPE := payments._locked_for_billing(resume_subscription.id);
BEGIN
    IF at IS NULL THEN
        RAISE EXCEPTION 'at is required' USING ERRCODE = 'PM100';
    END IF;
    IF v_sub.status <> 'paused' THEN
        RAISE EXCEPTION 'subscription % is %, not paused', v_sub.id, v_sub.status USING ERRCODE = 'PM206';
    END IF;
    IF at < v_sub.current_period_end THEN
        -- Within the period it was paused in: it goes on as it was.
        v_sub.status := CASE WHEN v_sub.period_number = 0 THEN 'trialing' ELSE 'active' END;
        RETURN QUERY SELECT * FROM payments._set_subscription(v_sub, 'paused', 'resumed', jsonb_build_object('at', at));
    ELSIF v_sub.cancel_at_period_end THEN
        PERFORM payments._end_subscription(v_sub, 'canceled', v_sub.current_period_end, 'canceled at period end', at);
        RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'applied');
    ELSE
        -- The periods that passed while it was paused are not billed: a new period starts now
        -- (Stripe: a paused subscription does not advance; on resume the anchor is now).
        PERFORM payments._next_period(v_sub, at, true, 'resumed', at);
        RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'applied');
    END IF;
END
$$;
COMMENT ON FUNCTION payments.resume_subscription(text, timestamptz) IS
    'Resumes a paused subscription at time at (PM206 otherwise). Within the period it was paused in, it goes on (trialing while its trial lasts); after, the periods that passed are not billed: a new period starts at at, its anchor, and is invoiced (a trial paused and resumed after its end starts its first paid period then). One canceled at period end whose period passed ends instead.';

-- ---------------------------------------------------------------------------
-- What a customer may do now
-- ---------------------------------------------------------------------------
CREATE FUNCTION payments._grants_now(p_sub payments.subscriptions, p_at timestamptz) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN CASE p_sub.status
               WHEN 'active' THEN true
               WHEN 'trialing' THEN p_at < p_sub.trial_end
               WHEN 'past_due' THEN p_at < p_sub.past_due_since
                                          + coalesce((SELECT b.past_due_grace FROM payments.billing_settings b),
                                                     interval '3 days')
               ELSE false END
           AND NOT (p_sub.cancel_at_period_end AND p_at >= p_sub.current_period_end);
END
$$;
COMMENT ON FUNCTION payments._grants_now(payments.subscriptions, timestamptz) IS
    'Internal: whether a subscription grants its plan at time p_at: active; trialing within its trial; past_due within the grace period (set_dunning, default 3 days); and not past the end of a period it is canceled at.';

CREATE FUNCTION payments.has_active_subscription(customer_id text, plan text DEFAULT NULL, at timestamptz DEFAULT now())
RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_sub payments.subscriptions%ROWTYPE;
BEGIN
    -- A login bound to another customer learns nothing of this one.
    IF has_active_subscription.customer_id IS DISTINCT FROM coalesce(payments._bound_customer(), has_active_subscription.customer_id) THEN
        RETURN false;
    END IF;
    FOR v_sub IN
        SELECT * FROM payments.subscriptions s
        WHERE s.customer_id = has_active_subscription.customer_id AND s.status IN ('trialing', 'active', 'past_due')
          AND (has_active_subscription.plan IS NULL OR s.plan = has_active_subscription.plan)
    LOOP
        IF payments._grants_now(v_sub, at) THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END
$$;
COMMENT ON FUNCTION payments.has_active_subscription(text, text, timestamptz) IS
    'Whether the customer has a subscription (of plan, when given) that grants its plan at time at: active, trialing within its trial, or past_due within the grace period (set_dunning); one canceled at period end counts until the period ends.';

CREATE FUNCTION payments.customer_has_paid(customer_id text, since timestamptz DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- A login bound to another customer learns nothing of this one.
    IF customer_has_paid.customer_id IS DISTINCT FROM coalesce(payments._bound_customer(), customer_has_paid.customer_id) THEN
        RETURN false;
    END IF;
    RETURN EXISTS (
        SELECT 1 FROM payments.payments p
        WHERE p.customer_id = customer_has_paid.customer_id AND p.status = 'succeeded'
          AND p.amount_captured_minor > p.amount_refunded_minor
          AND (since IS NULL OR p.created_at >= since));
END
$$;
COMMENT ON FUNCTION payments.customer_has_paid(text, timestamptz) IS
    'Whether the customer has a succeeded payment (created since since, when given) that was not refunded in full.';

CREATE FUNCTION payments.entitlements(customer_id text, at timestamptz DEFAULT now())
RETURNS TABLE (feature text, "limit" numeric, used numeric, remaining numeric, subscription_id text, plan text,
               period_start timestamptz, period_end timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_sub     payments.subscriptions%ROWTYPE;
    v_period  record;
    v_feature record;
BEGIN
    IF at IS NULL THEN
        RAISE EXCEPTION 'at is required' USING ERRCODE = 'PM100';
    END IF;
    -- A login bound to another customer learns nothing of this one.
    IF entitlements.customer_id IS DISTINCT FROM coalesce(payments._bound_customer(), entitlements.customer_id) THEN
        RETURN;
    END IF;
    FOR v_sub IN
        SELECT * FROM payments.subscriptions s
        WHERE s.customer_id = entitlements.customer_id AND s.status IN ('trialing', 'active', 'past_due')
        ORDER BY s.created_at, s.id
    LOOP
        CONTINUE WHEN NOT payments._grants_now(v_sub, at);
        v_period := payments._period_at(v_sub, at);
        -- One feature at a time, each count read where it lives (Citus plans no lateral join here).
        FOR v_feature IN SELECT f.key, f.value FROM payments.plans p CROSS JOIN jsonb_each(p.features) f
                         WHERE p.code = v_period.plan ORDER BY f.key LOOP
            SELECT fu.used INTO used FROM payments.feature_usage fu
            WHERE fu.customer_id = entitlements.customer_id AND fu.subscription_id = v_sub.id
              AND fu.feature = v_feature.key AND fu.period_start = v_period.period_start;
            feature := v_feature.key;
            "limit" := CASE WHEN jsonb_typeof(v_feature.value) = 'number' THEN (v_feature.value::text)::numeric END;
            used := coalesce(used, 0);
            remaining := "limit" - used;
            subscription_id := v_sub.id;
            plan := v_period.plan;
            period_start := v_period.period_start;
            period_end := v_period.period_end;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;
COMMENT ON FUNCTION payments.entitlements(text, timestamptz) IS
    'Each feature the customer may use at time at, per subscription that grants its plan then (has_active_subscription): its limit in the period at falls in (NULL: unlimited), what was used and what is left. The period follows from at and the subscription alone: a new period''s quota starts at its start, whether run_billing has renewed it yet or not.';

CREATE FUNCTION payments.consume(customer_id text, feature text, quantity numeric, request_id text,
                                 at timestamptz DEFAULT now())
RETURNS TABLE (allowed boolean, remaining numeric, outcome text, reason text, subscription_id text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_candidate record;
    v_grant  jsonb;
    v_sub    payments.subscriptions%ROWTYPE;
    v_period record;
    v_limit  numeric;
    v_used   numeric;
    v_answer payments.consumptions%ROWTYPE;
BEGIN
    IF customer_id IS NULL OR length(customer_id) NOT BETWEEN 1 AND 255 OR request_id IS NULL
       OR length(request_id) NOT BETWEEN 1 AND 255 OR feature IS NULL OR length(feature) NOT BETWEEN 1 AND 64
       OR quantity IS NULL OR quantity = 'NaN' OR quantity <= 0 OR quantity >= 1e15 OR at IS NULL THEN
        RAISE EXCEPTION 'customer_id and request_id are 1 to 255 characters, feature 1 to 64, quantity above 0 and below 10^15'
            USING ERRCODE = 'PM100';
    END IF;
    -- The first subscription that grants the feature now, locked: every consume of it
    -- waits here, so the check and the count below are one step for all of them.
    FOR v_candidate IN
        SELECT s.id, s.plan FROM payments.subscriptions s
        WHERE s.customer_id = consume.customer_id AND s.status IN ('trialing', 'active', 'past_due')
        ORDER BY s.created_at, s.id
    LOOP
        SELECT p.features -> consume.feature INTO v_grant FROM payments.plans p WHERE p.code = v_candidate.plan;
        CONTINUE WHEN v_grant IS NULL;
        SELECT * INTO v_sub FROM payments.subscriptions s
        WHERE s.customer_id = consume.customer_id AND s.id = v_candidate.id FOR UPDATE;
        -- The period at falls in, and the plan it bills (the locked row's: it may have changed).
        v_period := payments._period_at(v_sub, at);
        IF v_period.plan IS DISTINCT FROM v_candidate.plan THEN
            SELECT p.features -> consume.feature INTO v_grant FROM payments.plans p WHERE p.code = v_period.plan;
        END IF;
        EXIT WHEN v_grant IS NOT NULL AND payments._grants_now(v_sub, at);
        v_sub := NULL;
    END LOOP;
    -- A retried request: its first answer, nothing consumed; the same id for another request is refused.
    SELECT * INTO v_answer FROM payments.consumptions c
    WHERE c.customer_id = consume.customer_id AND c.request_id = consume.request_id;
    IF FOUND THEN
        RETURN QUERY SELECT * FROM payments._replayed_consumption(v_answer, feature, quantity);
        RETURN;
    END IF;
    v_answer.customer_id := customer_id;
    v_answer.request_id := request_id;
    v_answer.feature := feature;
    v_answer.quantity := quantity;
    v_answer.subscription_id := v_sub.id;
    IF v_sub.id IS NULL THEN
        v_answer.allowed := false;
        v_answer.reason := 'no_entitlement';
    ELSE
        -- The locked subscription's grant is the limit (JSON null: unlimited).
        v_limit := CASE WHEN jsonb_typeof(v_grant) = 'number' THEN (v_grant::text)::numeric END;
        SELECT fu.used INTO v_used FROM payments.feature_usage fu
        WHERE fu.customer_id = v_sub.customer_id AND fu.subscription_id = v_sub.id AND fu.feature = consume.feature
          AND fu.period_start = v_period.period_start;
        v_used := coalesce(v_used, 0);
        v_answer.allowed := v_limit IS NULL OR v_used + quantity <= v_limit;
        IF v_answer.allowed THEN
            INSERT INTO payments.feature_usage AS fu (customer_id, subscription_id, feature, period_start, used)
            VALUES (v_sub.customer_id, v_sub.id, feature, v_period.period_start, quantity)
            ON CONFLICT ON CONSTRAINT feature_usage_pkey DO UPDATE SET used = fu.used + excluded.used;
            v_answer.remaining := v_limit - v_used - quantity;
        ELSE
            v_answer.remaining := v_limit - v_used;
            v_answer.reason := 'limit_exceeded';
        END IF;
    END IF;
    -- Without a subscription to lock, two calls with one request id meet here.
    INSERT INTO payments.consumptions (customer_id, request_id, feature, quantity, subscription_id, allowed, remaining,
                                       reason)
    VALUES (v_answer.customer_id, v_answer.request_id, v_answer.feature, v_answer.quantity, v_answer.subscription_id,
            v_answer.allowed, v_answer.remaining, v_answer.reason)
    ON CONFLICT ON CONSTRAINT consumptions_pkey DO NOTHING;
    IF NOT FOUND THEN
        SELECT * INTO v_answer FROM payments.consumptions c
        WHERE c.customer_id = consume.customer_id AND c.request_id = consume.request_id;
        RETURN QUERY SELECT * FROM payments._replayed_consumption(v_answer, feature, quantity);
        RETURN;
    END IF;
    RETURN QUERY SELECT v_answer.allowed, v_answer.remaining,
                        CASE WHEN v_answer.allowed THEN 'consumed' ELSE 'refused' END, v_answer.reason, v_answer.subscription_id;
END
$$;
COMMENT ON FUNCTION payments.consume(text, text, numeric, text, timestamptz) IS
    'In one statement: checks that a subscription of the customer that grants its plan now (has_active_subscription) grants feature, and that quantity fits in what is left of its limit this period; then counts it (outcome consumed, allowed, remaining) or refuses without counting (outcome refused, reason no_entitlement or limit_exceeded). Concurrent calls never exceed a limit (the subscription''s row lock serialises them). The period counted in is the one at falls in (a new period''s quota starts at its start, renewed by run_billing or not). A repeated request_id returns the first answer (outcome replayed) and counts nothing; the same request_id with another feature or quantity is PM201.';

-- ---------------------------------------------------------------------------
-- Invoices, renewals and dunning (sql/billing.sql)
-- ---------------------------------------------------------------------------
-- payments: invoices, renewals and dunning. run_billing does everything due
-- at a time `at` (tests move the clock by passing it): ends subscriptions
-- canceled at period end, renews the others into their next period with an
-- invoice, and retries unpaid invoices on the dunning schedule. An invoice is
-- charged through an ordinary payment (create_payment, which the gateway's
-- reconciler carries to the provider) whose idempotency key derives from the
-- subscription, the period and the attempt: a retried or concurrent run never
-- charges twice. The payment's outcome settles the invoice and the
-- subscription (_invoice_payment_settled, called by the payment's transition).

CREATE TABLE payments.billing_settings (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    retry_days    integer[] NOT NULL CHECK (cardinality(retry_days) BETWEEN 0 AND 10 AND 0 < ALL (retry_days)),
    final_status  text NOT NULL CHECK (final_status IN ('unpaid', 'canceled')),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    past_due_grace interval NOT NULL CHECK (past_due_grace BETWEEN interval '0' AND interval '60 days')
);
COMMENT ON TABLE payments.billing_settings IS
    'How unpaid renewals are retried (payments_admin, set_dunning). No row: the defaults (retries after 1, 3 and 5 days, then unpaid; past_due grants its plan for 3 days).';
COMMENT ON COLUMN payments.billing_settings.past_due_grace IS 'How long a past_due subscription still grants its plan (has_active_subscription, entitlements, consume).';
COMMENT ON COLUMN payments.billing_settings.retry_days IS 'Days after each failed attempt before the next: {1,3,5} retries three times.';
COMMENT ON COLUMN payments.billing_settings.final_status IS 'What a subscription becomes when the last retry fails: unpaid or canceled.';
SELECT pg_catalog.pg_extension_config_dump('payments.billing_settings', '');

CREATE TABLE payments.invoice_numbers (
    year integer PRIMARY KEY,
    last bigint NOT NULL CHECK (last >= 0)
);
COMMENT ON TABLE payments.invoice_numbers IS
    'The last invoice number given out each year. Its row is locked by the finalizing transaction, so numbers are gapless and never repeat (a rollback gives its number back).';
SELECT pg_catalog.pg_extension_config_dump('payments.invoice_numbers', '');

CREATE TABLE payments.invoices (
    id              text COLLATE "C" NOT NULL,
    customer_id     text COLLATE "C" NOT NULL,
    subscription_id text COLLATE "C" NOT NULL,
    period_number   integer NOT NULL,
    kind            text NOT NULL DEFAULT 'period' CHECK (kind IN ('period', 'proration', 'threshold', 'final')),
    number          text NOT NULL,
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
    PRIMARY KEY (customer_id, id),
    FOREIGN KEY (customer_id, subscription_id) REFERENCES payments.subscriptions (customer_id, id)
);
-- One period invoice per subscription period: what makes renewals idempotent.
CREATE UNIQUE INDEX invoices_period_idx ON payments.invoices (customer_id, subscription_id, period_number)
    WHERE kind = 'period';
CREATE INDEX invoices_id_idx ON payments.invoices (id);
CREATE INDEX invoices_retry_idx ON payments.invoices (next_attempt_at) WHERE status = 'open';
COMMENT ON TABLE payments.invoices IS
    'Invoices of subscription periods: open (finalized, numbered, charged), then paid, or left open for dunning; uncollectible when its subscription is canceled (collection stops) or its last attempt failed, void when it should never be paid (an incomplete subscription expired, or a plan change netted it). Beside the customer (on Citus, by customer_id).';
COMMENT ON COLUMN payments.invoices.kind IS 'period: a period''s recurring fee (one per period) and the usage not yet invoiced before it; proration: a plan changed within a period (with the usage under the old plan); threshold: usage that reached the plan''s usage threshold within a period (period_number is that period); final: the usage not yet invoiced when the subscription ended (one attempt).';
COMMENT ON COLUMN payments.invoices.number IS 'YYYY-NNNNNN, gapless and unique per year in the order invoices were finalized.';
COMMENT ON COLUMN payments.invoices.payment_id IS 'The payment of the latest attempt, or the one that paid it.';
COMMENT ON COLUMN payments.invoices.next_attempt_at IS 'When run_billing retries an open invoice whose payment failed; NULL when no retry is due.';
SELECT pg_catalog.pg_extension_config_dump('payments.invoices', '');

CREATE TABLE payments.invoice_lines (
    customer_id  text COLLATE "C" NOT NULL,
    invoice_id   text COLLATE "C" NOT NULL,
    line_number  integer NOT NULL CHECK (line_number > 0),
    kind         text NOT NULL CHECK (kind IN ('recurring', 'usage', 'proration', 'credit')),
    description  text NOT NULL,
    quantity     numeric NOT NULL,
    amount_minor bigint NOT NULL,
    PRIMARY KEY (customer_id, invoice_id, line_number),
    FOREIGN KEY (customer_id, invoice_id) REFERENCES payments.invoices (customer_id, id)
);
COMMENT ON TABLE payments.invoice_lines IS 'What an invoice charges for, line by line (the recurring fee of its period, for now).';
SELECT pg_catalog.pg_extension_config_dump('payments.invoice_lines', '');

CREATE FUNCTION payments.set_dunning(retry_days integer[], final_status text DEFAULT 'unpaid',
                                     past_due_grace interval DEFAULT '3 days') RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF retry_days IS NULL OR cardinality(retry_days) > 10 OR NOT (0 < ALL (retry_days))
       OR final_status IS NULL OR final_status NOT IN ('unpaid', 'canceled')
       OR past_due_grace IS NULL OR past_due_grace NOT BETWEEN interval '0' AND interval '60 days' THEN
        RAISE EXCEPTION 'retry_days: up to 10 positive day counts; final_status: unpaid or canceled; past_due_grace: 0 to 60 days'
            USING ERRCODE = 'PM100';
    END IF;
    INSERT INTO payments.billing_settings (retry_days, final_status, past_due_grace)
    VALUES (retry_days, final_status, past_due_grace)
    ON CONFLICT (singleton) DO UPDATE SET retry_days = excluded.retry_days, final_status = excluded.final_status,
                                          past_due_grace = excluded.past_due_grace, updated_at = excluded.updated_at;
END
$$;
COMMENT ON FUNCTION payments.set_dunning(integer[], text, interval) IS
    'Sets dunning (admin): days between the retries of an unpaid renewal (default {1,3,5}), what the subscription becomes after the last one fails (unpaid, the default, or canceled), and how long past_due still grants the plan (default 3 days).';

CREATE FUNCTION payments._next_invoice_number(p_at timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_year integer := extract(year FROM p_at AT TIME ZONE 'UTC')::integer;
    v_last bigint;
BEGIN
    INSERT INTO payments.invoice_numbers (year, last) VALUES (v_year, 0) ON CONFLICT (year) DO NOTHING;
    UPDATE payments.invoice_numbers n SET last = n.last + 1 WHERE n.year = v_year RETURNING n.last INTO v_last;
    RETURN v_year || '-' || lpad(v_last::text, 6, '0');
END
$$;
COMMENT ON FUNCTION payments._next_invoice_number(timestamptz) IS
    'Internal: the next invoice number of the year (UTC) of p_at; the counter''s row stays locked until the caller''s transaction ends.';

CREATE FUNCTION payments._invoice_period(p_sub payments.subscriptions, p_plan payments.plans, p_usage_plan payments.plans,
                                         p_usage_from timestamptz, p_usage_to timestamptz, p_at timestamptz)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_invoice  payments.invoices%ROWTYPE;
    v_credit   bigint;
    v_lines    jsonb;
BEGIN
    -- The caller holds the subscription's row lock; the period's invoice is made once.
    SELECT * INTO v_invoice FROM payments.invoices i
    WHERE i.customer_id = p_sub.customer_id AND i.subscription_id = p_sub.id AND i.period_number = p_sub.period_number
      AND i.kind = 'period';
    IF FOUND THEN
        RETURN v_invoice.id;
    END IF;
    v_lines := jsonb_build_array(jsonb_build_object(
        'kind', 'recurring', 'amount_minor', p_plan.amount_minor, 'quantity', 1,
        'description', coalesce(p_plan.name, p_plan.code) || ', period ' || p_sub.period_number));
    -- The usage not invoiced yet, in arrears, at the plan it was used under.
    IF p_usage_from < p_usage_to THEN
        v_lines := v_lines || payments._usage_lines(p_sub, p_usage_plan, p_usage_from, p_usage_to);
    END IF;
    -- What a downgrade left is taken off, up to the total.
    v_credit := least(coalesce(p_sub.credit_minor, 0), payments._lines_total(v_lines));
    IF v_credit > 0 THEN
        v_lines := v_lines || jsonb_build_array(jsonb_build_object(
            'kind', 'credit', 'amount_minor', -v_credit, 'quantity', 1, 'description', 'credit from a plan change'));
    END IF;
    RETURN payments._issue_invoice(p_sub, 'period', p_plan.currency, v_lines, v_credit,
                                   CASE WHEN p_usage_from < p_usage_to THEN p_usage_from END,
                                   CASE WHEN p_usage_from < p_usage_to THEN p_usage_to END, p_at);
END
$$;
COMMENT ON FUNCTION payments._invoice_period(payments.subscriptions, payments.plans, payments.plans, timestamptz, timestamptz, timestamptz) IS
    'Internal: the invoice of a subscription''s current period, made, numbered and charged once at time p_at (nothing to pay: paid at once): the plan''s fee in advance, the usage of [p_usage_from, p_usage_to) under p_usage_plan''s metered prices in arrears, less the subscription''s credit. The caller holds the subscription''s row lock.';

CREATE FUNCTION payments._issue_invoice(p_sub payments.subscriptions, p_kind text, p_currency text, p_lines jsonb,
                                        p_credit_used bigint, p_usage_from timestamptz, p_usage_to timestamptz,
                                        p_at timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_id      text := payments._new_id('inv');
    v_invoice payments.invoices%ROWTYPE;
    v_line    record;
BEGIN
    INSERT INTO payments.invoices (id, customer_id, subscription_id, period_number, kind, number, status, currency,
                                   total_minor, period_start, period_end, usage_from, usage_to)
    VALUES (v_id, p_sub.customer_id, p_sub.id, p_sub.period_number, p_kind, payments._next_invoice_number(now()), 'open',
            p_currency, greatest(payments._lines_total(p_lines), 0), p_sub.current_period_start, p_sub.current_period_end,
            p_usage_from, p_usage_to)
    RETURNING * INTO v_invoice;
    PERFORM payments._invoice_event(v_invoice, NULL);
    FOR v_line IN SELECT l.value, l.ordinality FROM jsonb_array_elements(p_lines) WITH ORDINALITY l LOOP
        INSERT INTO payments.invoice_lines (customer_id, invoice_id, line_number, kind, description, quantity, amount_minor)
        VALUES (p_sub.customer_id, v_id, v_line.ordinality, v_line.value ->> 'kind', v_line.value ->> 'description',
                coalesce((v_line.value ->> 'quantity')::numeric, 1), (v_line.value ->> 'amount_minor')::bigint);
    END LOOP;
    IF p_credit_used > 0 THEN
        UPDATE payments.subscriptions s SET credit_minor = s.credit_minor - p_credit_used
        WHERE s.customer_id = p_sub.customer_id AND s.id = p_sub.id;
    END IF;
    PERFORM payments._charge_invoice(v_invoice, p_sub, p_at);
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION payments._issue_invoice(payments.subscriptions, text, text, jsonb, bigint, timestamptz, timestamptz, timestamptz) IS
    'Internal: makes, numbers and charges at time p_at an invoice of lines ([{kind, description, amount_minor}]; the total is their sum, at least 0) for a subscription whose row the caller has locked, using p_credit_used of its credit; p_usage_from and p_usage_to: the usage it bills.';

CREATE FUNCTION payments._charge_invoice(p_invoice payments.invoices, p_sub payments.subscriptions, p_at timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_attempt integer := p_invoice.attempt_count + 1;
    v_payment text;
    v_paid    payments.invoices%ROWTYPE;
BEGIN
    IF p_invoice.total_minor = 0 THEN
        UPDATE payments.invoices i SET status = 'paid', paid_at = now()
        WHERE i.customer_id = p_invoice.customer_id AND i.id = p_invoice.id
        RETURNING * INTO v_paid;
        PERFORM payments._invoice_event(v_paid, p_invoice.status);
        RETURN;
    END IF;
    -- The previous attempt, if it still waits on the customer, gives way to this one.
    IF p_invoice.payment_id IS NOT NULL THEN
        PERFORM payments._abandon_payment(p_invoice.customer_id, p_invoice.payment_id);
    END IF;
    -- One payment per attempt, keyed by the invoice (its id is random and exists only in this
    -- transaction, so no API caller can claim the key first) and the attempt.
    SELECT p.id INTO v_payment FROM payments.create_payment(
        'invoice:' || p_invoice.id || ':' || v_attempt, p_invoice.customer_id,
        payments.to_major(p_invoice.total_minor, p_invoice.currency), p_invoice.currency, p_sub.payment_method,
        'Invoice ' || p_invoice.number, jsonb_build_object('invoice_id', p_invoice.id, 'subscription_id', p_sub.id)) p;
    UPDATE payments.invoices i
    SET payment_id = v_payment, attempt_payments = i.attempt_payments || v_payment, attempt_count = v_attempt,
        attempted_at = p_at, next_attempt_at = NULL
    WHERE i.customer_id = p_invoice.customer_id AND i.id = p_invoice.id;
    IF p_sub.payment_method IS NULL THEN
        -- Nothing to charge: a failed attempt at once.
        PERFORM payments._invoice_payment_settled(p_invoice.customer_id, v_payment, 'failed', p_at);
    END IF;
END
$$;
COMMENT ON FUNCTION payments._charge_invoice(payments.invoices, payments.subscriptions, timestamptz) IS
    'Internal: the next attempt at an invoice, at time p_at: a payment for its total (key invoice:<invoice>:<attempt>, metadata invoice_id) that the gateway charges; without a payment method, a failed attempt. A previous attempt still waiting on the customer is canceled first.';

CREATE FUNCTION payments._invoice_payment_settled(p_customer_id text, p_payment_id text, p_status text,
                                                  p_at timestamptz DEFAULT now()) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_invoice  payments.invoices%ROWTYPE;
    v_settled  payments.invoices%ROWTYPE;
    v_sub      payments.subscriptions%ROWTYPE;
    v_from     text;
    v_settings record;
    v_failed_at timestamptz;
    v_last     boolean;
BEGIN
    -- Only the invoice's own attempts count (any payment's metadata can name an invoice).
    SELECT * INTO v_invoice FROM payments.invoices i
    WHERE i.customer_id = p_customer_id AND p_payment_id = ANY (i.attempt_payments) FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    ELSIF p_status = 'succeeded' AND (v_invoice.status = 'void'
                                      OR (v_invoice.status = 'paid' AND v_invoice.payment_id <> p_payment_id)) THEN
        -- Money for an invoice that another attempt paid, or that must not be paid: it goes back.
        PERFORM payments.create_refund('invoice:' || v_invoice.id || ':refund:' || p_payment_id, p_payment_id);
        RETURN;
    ELSIF NOT (v_invoice.status = 'open' OR (p_status = 'succeeded' AND v_invoice.status = 'uncollectible'))
          OR (p_status <> 'succeeded' AND v_invoice.payment_id <> p_payment_id) THEN
        RETURN;  -- settled already, or the failure of an attempt a later one replaced
    END IF;
    SELECT * INTO v_sub FROM payments.subscriptions s
    WHERE s.customer_id = p_customer_id AND s.id = v_invoice.subscription_id FOR UPDATE;
    v_from := v_sub.status;
    IF p_status = 'succeeded' THEN
        -- An earlier attempt paid (3-D Secure completed late): the latest gives way.
        IF v_invoice.payment_id <> p_payment_id THEN
            PERFORM payments._abandon_payment(p_customer_id, v_invoice.payment_id);
        END IF;
        UPDATE payments.invoices i SET status = 'paid', paid_at = now(), next_attempt_at = NULL, payment_id = p_payment_id
        WHERE i.customer_id = p_customer_id AND i.id = v_invoice.id
        RETURNING * INTO v_settled;
        -- Active again only when nothing else is left unpaid (Stripe: past_due means the latest
        -- invoice failed): paying an older invoice does not clear a newer failure.
        IF v_sub.status IN ('incomplete', 'past_due', 'unpaid')
           AND NOT EXISTS (SELECT 1 FROM payments.invoices i
                           WHERE i.customer_id = p_customer_id AND i.subscription_id = v_sub.id AND i.status = 'open'
                             AND i.kind <> 'final') THEN
            v_sub.status := 'active';
        END IF;
    ELSE
        -- failed, or requires_action: a renewal waiting on the customer is dunned as a failure
        -- (its payment stays payable until the next attempt replaces it).
        SELECT coalesce((SELECT b.retry_days FROM payments.billing_settings b), '{1,3,5}') AS retry_days,
               coalesce((SELECT b.final_status FROM payments.billing_settings b), 'unpaid') AS final_status
        INTO v_settings;
        v_failed_at := greatest(p_at, v_invoice.attempted_at);
        v_last := v_invoice.kind = 'final' OR v_invoice.attempt_count > cardinality(v_settings.retry_days)
                  OR v_sub.status IN ('canceled', 'incomplete_expired');
        UPDATE payments.invoices i
        SET next_attempt_at = CASE WHEN NOT v_last THEN payments._utc_add(
                                  coalesce(v_invoice.attempted_at, v_failed_at),
                                  v_settings.retry_days[v_invoice.attempt_count] * interval '1 day') END,
            -- (An incomplete subscription's first invoice is voided when it expires, below.)
            status = CASE WHEN v_invoice.kind = 'final'
                               OR (v_last AND v_settings.final_status = 'canceled' AND v_sub.status <> 'incomplete')
                          THEN 'uncollectible' ELSE 'open' END
        WHERE i.customer_id = p_customer_id AND i.id = v_invoice.id
        RETURNING * INTO v_settled;
        IF v_invoice.kind = 'final' OR v_sub.status NOT IN ('trialing', 'active', 'past_due', 'unpaid', 'incomplete') THEN
            NULL;  -- an ended subscription's last invoice: nothing more to decide
        ELSIF v_last AND v_sub.status = 'incomplete' THEN
            PERFORM payments._invoice_event(v_settled, v_invoice.status);
            PERFORM payments._end_subscription(v_sub, 'incomplete_expired', v_failed_at,
                                               'invoice ' || v_invoice.number || ' ' || p_status, p_at);
            RETURN;
        ELSIF v_last AND v_settings.final_status = 'canceled' THEN
            PERFORM payments._invoice_event(v_settled, v_invoice.status);
            PERFORM payments._end_subscription(v_sub, 'canceled', v_failed_at,
                                               'invoice ' || v_invoice.number || ' ' || p_status, p_at);
            RETURN;
        ELSIF v_last THEN
            v_sub.status := v_settings.final_status;
        ELSIF v_sub.status IN ('active', 'trialing') THEN
            v_sub.status := 'past_due';
            v_sub.past_due_since := v_failed_at;
        END IF;
    END IF;
    PERFORM payments._invoice_event(v_settled, v_invoice.status);
    IF v_sub.status IS DISTINCT FROM v_from THEN
        PERFORM payments._set_subscription(v_sub, v_from, 'invoice ' || v_invoice.number || ' ' || p_status,
                                           jsonb_build_object('invoice_id', v_invoice.id, 'payment_id', p_payment_id));
    END IF;
END
$$;
COMMENT ON FUNCTION payments._invoice_payment_settled(text, text, text, timestamptz) IS
    'Internal: an invoice payment reached succeeded, failed or requires_action (at p_at, the time of the news; retries count from the attempt''s own time): the invoice is paid by any of its attempts (and an incomplete, past_due or unpaid subscription active again once nothing else is left open; a later attempt still waiting is canceled), or its latest attempt''s failure is counted and the next scheduled (the subscription past_due; after the last, unpaid or canceled as set_dunning says, and an incomplete one incomplete_expired). A final invoice gets one attempt. An attempt that succeeds for an invoice another attempt paid, or that is void, is refunded in full.';

CREATE FUNCTION payments.run_billing(at timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_due     record;
    v_invoice payments.invoices%ROWTYPE;
    v_sub     payments.subscriptions%ROWTYPE;
    v_done    jsonb;
    v_counts  jsonb := '{"renewed": 0, "ended": 0, "expired": 0, "retried": 0, "thresholds": 0}';
    v_failed  jsonb[] := '{}';
    v_error   jsonb;
    v_state   text;
    v_msg     text;
    v_sub_id  text;
    v_threshold_plans text[];
BEGIN
    IF at IS NULL OR NOT isfinite(at) THEN
        RAISE EXCEPTION 'at is required (a finite time)' USING ERRCODE = 'PM100';
    END IF;
    -- The plans first: on Citus, joining the reference table to every shard after this
    -- transaction's writes is refused.
    SELECT array_agg(p.code) INTO v_threshold_plans FROM payments.plans p WHERE p.usage_threshold_minor IS NOT NULL;
    -- Three passes, each with a bound of its own so none starves another: 1. periods that
    -- ended (renewals and ends) and incomplete subscriptions to expire, the most overdue first;
    -- 2. failed invoices whose retry is due (after 1: one that expires or ends now is not
    -- charged first); 3. subscriptions on threshold plans, in an order that changes with at
    -- (more than a pass holds are all reached over a few runs). In each, those that failed last
    -- time go last. Each unit is billed in a savepoint of its own: one that fails (its usage
    -- cannot be priced, its payment refused) is recorded on its subscription and the others go on.
    FOR v_due IN
        SELECT * FROM (
            (SELECT 1 AS pass, s.customer_id, s.id, 'subscription' AS unit, s.billing_error IS NOT NULL AS failing,
                    extract(epoch FROM s.current_period_end) AS rank
             FROM payments.subscriptions s
             WHERE (s.status IN ('trialing', 'active', 'past_due') AND s.current_period_end <= at)
                OR (s.status = 'incomplete' AND s.current_period_start <= at - interval '23 hours')
             ORDER BY 5, 6 LIMIT 1000)
            UNION ALL
            (SELECT 2, i.customer_id, i.id, 'invoice', s.billing_error IS NOT NULL, extract(epoch FROM i.next_attempt_at)
             FROM payments.invoices i
             -- Only a subscription that may be charged: others' invoices (paused) never fill the pass.
             JOIN payments.subscriptions s ON s.customer_id = i.customer_id AND s.id = i.subscription_id
             WHERE i.status = 'open' AND i.next_attempt_at <= at
               AND s.status IN ('trialing', 'active', 'past_due', 'unpaid', 'incomplete')
             ORDER BY 5, 6 LIMIT 1000)
            UNION ALL
            (SELECT 3, s.customer_id, s.id, 'subscription', s.billing_error IS NOT NULL,
                    -- The epoch, not at::text: the order must not depend on the session's TimeZone.
                    ('x' || substr(md5(s.id || extract(epoch FROM at)::text), 1, 8))::bit(32)::integer
             FROM payments.subscriptions s
             WHERE s.plan = ANY (v_threshold_plans) AND s.status IN ('active', 'past_due') AND s.period_number > 0
               AND s.current_period_start < at AND s.current_period_end > at
             ORDER BY 5, 6 LIMIT 1000)) due
        ORDER BY due.pass, due.failing, due.rank
    LOOP
        BEGIN
            IF v_due.unit = 'subscription' THEN
                v_sub_id := v_due.id;
                v_done := payments._bill_subscription(v_due.customer_id, v_due.id, at);
            ELSE
                SELECT * INTO v_invoice FROM payments.invoices i
                WHERE i.customer_id = v_due.customer_id AND i.id = v_due.id AND i.status = 'open'
                  AND i.next_attempt_at <= at
                FOR UPDATE SKIP LOCKED;
                CONTINUE WHEN NOT FOUND;
                SELECT * INTO v_sub FROM payments.subscriptions s
                WHERE s.customer_id = v_invoice.customer_id AND s.id = v_invoice.subscription_id;
                -- A canceled or expired subscription is never charged.
                CONTINUE WHEN v_sub.status NOT IN ('trialing', 'active', 'past_due', 'unpaid', 'incomplete');
                v_sub_id := v_sub.id;
                PERFORM payments._charge_invoice(v_invoice, v_sub, at);
                v_done := '{"retried": 1}';
            END IF;
            -- A subscription that failed before and was billed now has recovered.
            IF v_due.failing THEN
                PERFORM payments._billing_outcome(v_due.customer_id, v_sub_id, NULL, at);
            END IF;
            SELECT jsonb_object_agg(c.key, c.value::integer + coalesce((v_done ->> c.key)::integer, 0)) INTO v_counts
            FROM jsonb_each_text(v_counts) c;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
            -- A deadlock or serialization failure is another run's doing: the next run retries it.
            CONTINUE WHEN v_state LIKE '40%';
            v_error := jsonb_build_object('sqlstate', v_state, 'message', left(v_msg, 300));
            v_sub_id := v_due.id;
            IF v_due.unit = 'invoice' THEN
                SELECT i.subscription_id INTO v_sub_id FROM payments.invoices i
                WHERE i.customer_id = v_due.customer_id AND i.id = v_due.id;
            END IF;
            PERFORM payments._billing_outcome(v_due.customer_id, v_sub_id, v_error, at);
            v_failed := v_failed || (v_error || jsonb_build_object('subscription_id', v_sub_id));
        END;
    END LOOP;
    RETURN v_counts || jsonb_build_object('failed', to_jsonb(v_failed));
END
$$;
COMMENT ON FUNCTION payments.run_billing(timestamptz) IS
    'Does everything billing has due at time at (every decision is taken at at, so the same at twice does nothing new), in three passes of at most 1000 each: subscriptions canceled at period end end (their usage invoiced), incomplete ones older than 23 hours expire (incomplete_expired, invoice void); trialing, active and past_due ones whose period ended move to the next (a trial becomes active) with an invoice for it, charged through a payment keyed by invoice and attempt; failed invoices are retried on the dunning schedule (set_dunning), never those of a canceled or expired subscription; usage that reached its plan''s usage threshold within the open period is invoiced at once. Each subscription is billed in a savepoint of its own: one that fails is recorded on it (payments.billing_failures, its history, an event) and the others go on. Returns {"renewed", "ended", "expired", "retried", "thresholds", "failed": [{"subscription_id", "sqlstate", "message"}]}. Safe to run twice or from two places at once (rows are claimed with SKIP LOCKED and each period is invoiced once). The gateway runs it on a timer.';

CREATE FUNCTION payments.set_subscription_payment_method(id text, payment_method text)
RETURNS SETOF payments.subscription_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_sub      payments.subscriptions%ROWTYPE;
    v_invoice  payments.invoices%ROWTYPE;
    v_status   text;
BEGIN
    IF payment_method IS NULL OR length(payment_method) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'payment_method must be 1 to 255 characters' USING ERRCODE = 'PM100';
    END IF;
    v_sub := payments._locked_for_billing(set_subscription_payment_method.id);
    IF v_sub.status IN ('canceled', 'incomplete_expired') THEN
        RAISE EXCEPTION 'subscription % is %: nothing of it is charged any more', v_sub.id, v_sub.status
            USING ERRCODE = 'PM206';
    END IF;
    UPDATE payments.subscriptions s SET payment_method = set_subscription_payment_method.payment_method, updated_at = now()
    WHERE s.customer_id = v_sub.customer_id AND s.id = v_sub.id;
    -- An unpaid invoice is retried at the next run: one waiting for its retry, or one whose
    -- retries ran out (its last payment failed); never one whose payment is still under way.
    FOR v_invoice IN
        SELECT i.* FROM payments.invoices i
        WHERE i.customer_id = v_sub.customer_id AND i.subscription_id = v_sub.id AND i.status = 'open'
    LOOP
        SELECT p.status INTO v_status FROM payments.payments p
        WHERE p.customer_id = v_invoice.customer_id AND p.id = v_invoice.payment_id;
        CONTINUE WHEN v_invoice.next_attempt_at IS NULL AND v_status IS DISTINCT FROM 'failed';
        UPDATE payments.invoices i SET next_attempt_at = least(i.next_attempt_at, i.attempted_at)
        WHERE i.customer_id = v_invoice.customer_id AND i.id = v_invoice.id;
    END LOOP;
    PERFORM payments._subscription_event(v_sub, v_sub.status, 'payment method changed', '{}');
    RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'applied');
END
$$;
COMMENT ON FUNCTION payments.set_subscription_payment_method(text, text) IS
    'Sets the payment method a subscription''s invoices are charged with; an open invoice waiting for its retry is retried at the next run_billing. PM206 for a canceled or expired subscription (nothing of it is charged any more).';

CREATE VIEW payments.invoice_details WITH (security_invoker) AS
SELECT i.id, i.customer_id, i.subscription_id, i.number, i.status, payments.to_major(i.total_minor, i.currency) AS total,
       i.total_minor, i.currency, i.period_start, i.period_end, i.payment_id, i.attempt_count, i.next_attempt_at,
       i.created_at, i.paid_at
FROM payments.invoices i;
COMMENT ON VIEW payments.invoice_details IS 'Every invoice with its total in major units; readable by payments_reader.';

CREATE FUNCTION payments.get_invoice(id text) RETURNS SETOF payments.invoice_details
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- Read once, here: inside the query Citus would send it to the shards.
    v_bound text := payments._bound_customer();
BEGIN
    RETURN QUERY SELECT * FROM payments.invoice_details d
    WHERE d.id = get_invoice.id AND d.customer_id = coalesce(v_bound, d.customer_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invoice % not found', payments._shown(get_invoice.id) USING ERRCODE = 'PM204';
    END IF;
END
$$;
COMMENT ON FUNCTION payments.get_invoice(text) IS 'One invoice by id; PM204 when there is none.';

CREATE FUNCTION payments.list_invoice_lines(invoice_id text)
RETURNS TABLE (line_number integer, kind text, description text, quantity numeric, amount numeric, amount_minor bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_invoice payments.invoice_details%ROWTYPE;
BEGIN
    SELECT * INTO v_invoice FROM payments.get_invoice(list_invoice_lines.invoice_id);
    RETURN QUERY
    SELECT l.line_number, l.kind, l.description, l.quantity, payments.to_major(l.amount_minor, v_invoice.currency),
           l.amount_minor
    FROM payments.invoice_lines l
    WHERE l.customer_id = v_invoice.customer_id AND l.invoice_id = v_invoice.id
    ORDER BY l.line_number;
END
$$;
COMMENT ON FUNCTION payments.list_invoice_lines(text) IS 'An invoice''s lines in order, amounts in major and minor units; PM204 for an unknown invoice.';

-- ---------------------------------------------------------------------------
-- Receipts
-- ---------------------------------------------------------------------------
CREATE FUNCTION payments.receipt(payment_id text) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_payment payments.payment_details%ROWTYPE;
    v_refunds jsonb;
    v_invoice payments.invoice_details%ROWTYPE;
    v_paid_at timestamptz;
BEGIN
    SELECT * INTO v_payment FROM payments.get_payment(receipt.payment_id);
    IF v_payment.status <> 'succeeded' THEN
        RAISE EXCEPTION 'payment % is %: a receipt is for a payment that succeeded', v_payment.id, v_payment.status
            USING ERRCODE = 'PM206';
    END IF;
    -- When it succeeded: its history says (updated_at moves with refunds).
    SELECT e.created_at INTO v_paid_at FROM payments.payment_events e
    WHERE e.customer_id = v_payment.customer_id AND e.payment_id = v_payment.id AND e.applied
      AND e.to_status = 'succeeded' AND e.from_status IS DISTINCT FROM 'succeeded'
    ORDER BY e.seq LIMIT 1;
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', r.id, 'amount', r.amount::text, 'status', r.status,
                                                 'created_at', r.created_at) ORDER BY r.created_at, r.id), '[]')
    INTO v_refunds FROM payments.refund_details r
    WHERE r.customer_id = v_payment.customer_id AND r.payment_id = v_payment.id AND r.status = 'succeeded';
    -- Only the invoice's own payment names it (any payment's metadata can say invoice_id).
    IF v_payment.metadata ? 'invoice_id' THEN
        SELECT * INTO v_invoice FROM payments.invoice_details i
        WHERE i.customer_id = v_payment.customer_id AND i.id = v_payment.metadata ->> 'invoice_id'
          AND i.payment_id = v_payment.id;
    END IF;
    RETURN jsonb_build_object(
        'object', 'receipt', 'payment_id', v_payment.id, 'customer_id', v_payment.customer_id,
        'amount', v_payment.amount_captured::text, 'amount_minor', v_payment.amount_captured_minor,
        'currency', v_payment.currency, 'amount_refunded', v_payment.amount_refunded::text,
        'paid_at', v_paid_at, 'description', v_payment.description,
        'payment_method', v_payment.payment_method, 'provider', v_payment.provider,
        'provider_payment_id', v_payment.provider_payment_id, 'refunds', v_refunds,
        'invoice', CASE WHEN v_invoice.id IS NOT NULL THEN
                        jsonb_build_object('id', v_invoice.id, 'number', v_invoice.number) END);
END
$$;
COMMENT ON FUNCTION payments.receipt(text) IS
    'A succeeded payment''s receipt as JSON: what was captured (amounts as exact decimal strings), when, how, the succeeded refunds, and its invoice when it paid one. PM204 for an unknown payment, PM206 for one that did not succeed.';

-- ---------------------------------------------------------------------------
-- Plan changes
-- ---------------------------------------------------------------------------
CREATE FUNCTION payments.change_plan(id text, plan text, prorate boolean DEFAULT true, at timestamptz DEFAULT now())
RETURNS SETOF payments.subscription_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_sub      payments.subscriptions%ROWTYPE := payments._locked_for_billing(change_plan.id);
    v_old      payments.plans%ROWTYPE;
    v_new      payments.plans%ROWTYPE;
    v_left     numeric;
    v_credit   bigint;
    v_charge   bigint;
    v_lines    jsonb := '[]';
BEGIN
    IF prorate IS NULL OR at IS NULL THEN
        RAISE EXCEPTION 'prorate and at are required' USING ERRCODE = 'PM100';
    END IF;
    SELECT * INTO v_new FROM payments.plans p WHERE p.code = change_plan.plan;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'plan % not found', quote_nullable(payments._shown(change_plan.plan)) USING ERRCODE = 'PM204';
    END IF;
    SELECT * INTO v_old FROM payments.plans p WHERE p.code = v_sub.plan;
    IF v_sub.status NOT IN ('trialing', 'active', 'past_due') OR v_new.archived_at IS NOT NULL THEN
        RAISE EXCEPTION 'subscription % is % (or plan % is archived): its plan cannot change', v_sub.id, v_sub.status,
            v_new.code USING ERRCODE = 'PM206';
    END IF;
    IF v_new.currency <> v_old.currency THEN
        RAISE EXCEPTION 'plan % is in %, the subscription in %: a plan change keeps the currency', v_new.code,
            v_new.currency, v_old.currency USING ERRCODE = 'PM100';
    END IF;
    IF v_new.code = v_sub.plan AND v_sub.pending_plan IS NULL THEN
        RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'noop');
        RETURN;
    END IF;
    -- Its meters are this subscription's from now on (PM206 when another subscription bills one).
    PERFORM payments._claim_meters(v_sub, v_new);
    -- Without proration, or once the period has ended (run_billing not yet renewed it): from the
    -- next period, so that period's usage and anchor follow the plan it was used under.
    IF NOT prorate OR at >= v_sub.current_period_end THEN
        UPDATE payments.subscriptions s
        SET pending_plan = CASE WHEN v_new.code = s.plan THEN NULL ELSE v_new.code END, updated_at = now()
        WHERE s.customer_id = v_sub.customer_id AND s.id = v_sub.id;
        PERFORM payments._subscription_event(v_sub, v_sub.status, 'plan change at period end',
                                             jsonb_build_object('from', v_old.code, 'to', v_new.code));
        RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'applied');
        RETURN;
    END IF;
    -- The unused share of the period is credited at the old price and charged at the new
    -- one, each rounded to a minor unit, as Stripe does (a trial has nothing to prorate).
    IF v_sub.status <> 'trialing' THEN
        v_left := greatest(0, least(1, extract(epoch FROM v_sub.current_period_end - greatest(at, v_sub.current_period_start))
                                       / extract(epoch FROM v_sub.current_period_end - v_sub.current_period_start)));
        v_credit := round(v_old.amount_minor * v_left);
        v_charge := round(v_new.amount_minor * v_left);
        IF NOT payments._same_cycle(v_old, v_new) THEN
            -- Another billing interval: a new period, anchored now, at the new price; the unused
            -- time is credited (netted against what the period still owes) and taken off it.
            v_sub.pending_plan := v_new.code;
            PERFORM payments._credit_unused(v_sub, v_credit, 'unused time on ' || coalesce(v_old.name, v_old.code), at);
            SELECT s.credit_minor INTO v_sub.credit_minor FROM payments.subscriptions s
            WHERE s.customer_id = v_sub.customer_id AND s.id = v_sub.id;
            PERFORM payments._next_period(v_sub, at, true, 'plan changed', at);
            RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'applied');
            RETURN;
        END IF;
        -- The usage so far is billed now, at the plan it was used under.
        IF v_sub.period_number > 0 AND v_sub.usage_from < at THEN
            v_lines := payments._usage_lines(v_sub, v_old, v_sub.usage_from, at);
        END IF;
        IF v_charge > v_credit THEN
            v_lines := v_lines || jsonb_build_array(
                jsonb_build_object('kind', 'credit', 'amount_minor', -v_credit,
                                   'description', 'unused time on ' || coalesce(v_old.name, v_old.code)),
                jsonb_build_object('kind', 'proration', 'amount_minor', v_charge,
                                   'description', 'remaining time on ' || coalesce(v_new.name, v_new.code)));
        ELSIF v_credit > v_charge THEN
            -- A downgrade: what is left over, once netted against what is still owed, is taken
            -- off the next invoices.
            PERFORM payments._credit_unused(v_sub, v_credit - v_charge,
                                            'unused time on ' || coalesce(v_old.name, v_old.code), at);
        END IF;
        IF payments._lines_total(v_lines) > 0 THEN
            PERFORM payments._issue_invoice(v_sub, 'proration', v_new.currency, v_lines, 0,
                                            CASE WHEN v_sub.usage_from < at THEN v_sub.usage_from END,
                                            CASE WHEN v_sub.usage_from < at THEN at END, at);
        END IF;
    END IF;
    UPDATE payments.subscriptions s
    SET plan = v_new.code, pending_plan = NULL, usage_from = greatest(s.usage_from, at), updated_at = now()
    WHERE s.customer_id = v_sub.customer_id AND s.id = v_sub.id;
    v_sub.plan := v_new.code;
    PERFORM payments._subscription_event(v_sub, v_sub.status, 'plan changed',
                                         jsonb_build_object('from', v_old.code, 'to', v_new.code, 'at', at));
    PERFORM payments._release_meters(v_sub, v_new);
    RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'applied');
END
$$;
COMMENT ON FUNCTION payments.change_plan(text, text, boolean, timestamptz) IS
    'Moves a trialing, active or past_due subscription to another plan in the same currency (PM206 for another status, an archived plan, or a plan pricing a meter another subscription of the customer bills; PM100 for another currency). prorate (default): at once, the unused share of the period credited at the old price and charged at the new one (rounded to minor units), and the usage so far invoiced at the old plan''s prices — an upgrade is invoiced and charged now, a downgrade''s difference is netted against what the period still owes and the rest taken off the next invoices; a plan with another billing interval starts a new period (and anchor) at at, invoiced at once less the unused time; the new plan''s limits apply at once. Without prorate: at the end of the period. The same plan again is a noop.';

-- ---------------------------------------------------------------------------
-- Scaling out
-- ---------------------------------------------------------------------------
CREATE FUNCTION payments.distribute(shard_count int DEFAULT 32)
RETURNS TABLE (object text, distributed_by text, action text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- Each table, its distribution column (NULL: a reference table, a copy on
    -- every node) and the table it lives beside ('none': a group of its own).
    -- Order matters: a table comes after those its foreign keys reference.
    v_tables CONSTANT text[][] := ARRAY[
        ['payments.webhook_secrets',   NULL,                  NULL],
        ['payments.api_keys',          NULL,                  NULL],
        ['payments.settings',          NULL,                  NULL],
        ['payments.reconciliation_runs', NULL,                NULL],
        ['payments.meters',            NULL,                  NULL],
        ['payments.plans',             NULL,                  NULL],
        ['payments.billing_settings',  NULL,                  NULL],
        ['payments.invoice_numbers',   NULL,                  NULL],
        ['payments.webhook_endpoints', NULL,                  NULL],
        ['payments.role_customers',    NULL,                  NULL],
        ['payments.webhook_endpoint_secrets', NULL,           NULL],
        ['payments.dashboard_users',   NULL,                  NULL],
        ['payments.dashboard_sessions', NULL,                 NULL],
        ['payments.payments',          'customer_id',         'none'],
        ['payments.payment_events',    'customer_id',         'payments.payments'],
        ['payments.idempotency_keys',  'customer_id',         'payments.payments'],
        ['payments.anomalies',         'customer_id',         'payments.payments'],
        ['payments.provider_commands', 'customer_id',         'payments.payments'],
        ['payments.refunds',           'customer_id',         'payments.payments'],
        ['payments.disputes',          'customer_id',         'payments.payments'],
        ['payments.usage_events',      'customer_id',         'payments.payments'],
        ['payments.usage_daily',       'customer_id',         'payments.payments'],
        ['payments.subscriptions',     'customer_id',         'payments.payments'],
        ['payments.subscription_events', 'customer_id',       'payments.payments'],
        ['payments.feature_usage',     'customer_id',         'payments.payments'],
        ['payments.consumptions',      'customer_id',         'payments.payments'],
        ['payments.meter_claims',      'customer_id',         'payments.payments'],
        ['payments.invoices',          'customer_id',         'payments.payments'],
        ['payments.invoice_lines',     'customer_id',         'payments.payments'],
        ['payments.outbox_events',     'customer_id',         'payments.payments'],
        ['payments.webhook_deliveries', 'customer_id',        'payments.payments'],
        ['payments.webhook_delivery_attempts', 'customer_id', 'payments.payments'],
        ['payments.payment_customers', 'payment_id',          'none'],
        ['payments.provider_payments', 'provider_payment_id', 'none'],
        ['payments.webhook_pending',   'provider_payment_id', 'payments.provider_payments'],
        ['payments.provider_snapshots', 'provider_payment_id', 'payments.provider_payments'],
        ['payments.webhook_events',    'event_id',            'none']];
    -- Each function called with the distribution value of the table it runs beside.
    v_functions CONSTANT text[][] := ARRAY[
        ['payments.create_payment(text, text, numeric, text, text, text, jsonb, text)', 'customer_id', 'payments.payments'],
        ['payments.get_payment(text)',                            'id',         'payments.payment_customers'],
        ['payments.transition(text, text, text, text, jsonb)',    'payment_id', 'payments.payment_customers'],
        ['payments.record_provider_result(text, text, text, text, jsonb)', 'payment_id', 'payments.payment_customers'],
        ['payments.record_provider_error(text, jsonb)',           'payment_id', 'payments.payment_customers'],
        ['payments.list_payment_events(text)',                    'payment_id', 'payments.payment_customers'],
        ['payments.capture_payment(text, numeric)',               'payment_id', 'payments.payment_customers'],
        ['payments.cancel_payment(text, text)',                   'payment_id', 'payments.payment_customers'],
        ['payments.create_refund(text, text, numeric, text)',     'payment_id', 'payments.payment_customers'],
        ['payments.record_usage(text, text, text, numeric, timestamptz, jsonb)', 'customer_id', 'payments.payments'],
        ['payments.consume(text, text, numeric, text, timestamptz)', 'customer_id', 'payments.payments'],
        ['payments.create_subscription(text, text, text, text, integer, timestamptz)', 'customer_id', 'payments.payments']];
    v_row text[];
    v_fks text[][];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname = 'citus') THEN
        RAISE EXCEPTION 'Citus is not installed in this database' USING ERRCODE = 'PM401',
            HINT = 'add citus to shared_preload_libraries on every node, CREATE EXTENSION citus, add the workers, then call payments.distribute() on the coordinator';
    END IF;
    IF NOT pg_catalog.citus_is_coordinator() THEN
        RAISE EXCEPTION 'payments.distribute() runs on the Citus coordinator' USING ERRCODE = 'PM401';
    END IF;
    IF shard_count IS NULL OR shard_count NOT BETWEEN 1 AND 1024 THEN
        RAISE EXCEPTION 'shard_count must be between 1 and 1024' USING ERRCODE = 'PM100';
    END IF;
    -- The append-only triggers must reach every shard.
    PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
    -- Keys to reference tables need one connection per node within the transaction.
    PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);

    -- Citus accepts a foreign key only between tables it already manages (and
    -- would otherwise convert every table of the key graph, which the
    -- extension's views forbid): set the keys aside, distribute, put them back.
    SELECT array_agg(ARRAY[c.conrelid::regclass::text, c.conname::text, pg_catalog.pg_get_constraintdef(c.oid)])
    INTO v_fks
    FROM pg_catalog.pg_constraint c
    WHERE c.contype = 'f' AND c.connamespace = 'payments'::regnamespace
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition d WHERE d.logicalrelid = c.conrelid);
    FOR i IN 1 .. coalesce(array_length(v_fks, 1), 0) LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', v_fks[i][1], v_fks[i][2]);
        -- The workers' copies of the extension's tables become Citus's shell
        -- tables as they are; putting a key back reaches them too.
        PERFORM pg_catalog.run_command_on_workers(
            pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I', v_fks[i][1], v_fks[i][2]));
    END LOOP;

    FOREACH v_row SLICE 1 IN ARRAY v_tables LOOP
        object := v_row[1];
        distributed_by := v_row[2];
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition d WHERE d.logicalrelid = v_row[1]::regclass) THEN
            action := 'already distributed';
        ELSIF v_row[2] IS NULL THEN
            PERFORM pg_catalog.create_reference_table(v_row[1]::regclass);
            action := 'reference table';
        ELSIF v_row[3] = 'none' THEN
            PERFORM pg_catalog.create_distributed_table(v_row[1]::regclass, v_row[2], colocate_with => 'none',
                                                        shard_count => distribute.shard_count);
            action := 'distributed';
        ELSE
            PERFORM pg_catalog.create_distributed_table(v_row[1]::regclass, v_row[2], colocate_with => v_row[3]);
            action := 'distributed beside ' || v_row[3];
        END IF;
        RETURN NEXT;
    END LOOP;
    FOR i IN 1 .. coalesce(array_length(v_fks, 1), 0) LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s ADD CONSTRAINT %I %s', v_fks[i][1], v_fks[i][2], v_fks[i][3]);
    END LOOP;
    -- The views read with their reader's rights (security_invoker), from the columns
    -- roles.sql grants; Citus propagates no column grants. So the roles that read the
    -- views may read the tables behind them, which hold no secrets, keys or webhook
    -- bodies (webhook_log reads through a function with its owner's rights).
    -- (Citus has no column grants: readers see a refund's idempotency key and its
    -- fingerprint too, a client's retry token and a hash of the call, no secret.)
    GRANT SELECT ON payments.payments, payments.payment_events, payments.anomalies, payments.refunds, payments.disputes,
        payments.usage_events, payments.subscriptions, payments.invoices, payments.outbox_events,
        payments.webhook_deliveries TO payments_reader, payments_gateway;

    FOREACH v_row SLICE 1 IN ARRAY v_functions LOOP
        object := v_row[1];
        distributed_by := v_row[2];
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_dist_object o
                   WHERE o.classid = 'pg_catalog.pg_proc'::regclass AND o.objid = v_row[1]::regprocedure
                     AND o.distribution_argument_index IS NOT NULL) THEN
            action := 'already delegated';
        ELSE
            PERFORM pg_catalog.create_distributed_function(v_row[1]::regprocedure, v_row[2], colocate_with => v_row[3]);
            action := 'delegated';
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION payments.distribute(int) IS
    'Scales the extension out on Citus (run once on the coordinator, after CREATE EXTENSION payments reached every node; idempotent): every customer''s payments, history, idempotency keys, anomalies, provider commands, refunds, disputes, usage events (with their daily totals), subscriptions (with their history, feature usage, consumptions and meter claims), invoices, outbox events and their webhook deliveries distributed by customer_id and co-located; payment_customers by payment id, provider_payments, webhook_pending and provider_snapshots by provider payment id, webhook_events by event id; secrets, API keys, settings, reconciliation runs, meters, plans, billing settings, invoice numbers, webhook endpoints (with their secrets) and dashboard users (with their sessions) as reference tables. create_payment, record_usage, consume and create_subscription run on the node of their customer, the calls naming a payment id on the node of its route. Because views cannot lend their owner''s rights to shards, payments_reader and payments_gateway may then select the tables behind the views (payments, payment_events, anomalies, refunds, disputes, usage_events, subscriptions, invoices, outbox_events, webhook_deliveries: no secrets, API keys or webhook bodies). Returns what it did per object. PM401 without Citus or off the coordinator.';

-- ---------------------------------------------------------------------------
-- Events out to apps (sql/events.sql), threshold billing
-- ---------------------------------------------------------------------------
CREATE FUNCTION payments."_new_webhook_secret"() RETURNS TEXT /* String */
STRICT VOLATILE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'new_webhook_secret_wrapper';
ALTER TABLE payments.settings ADD COLUMN webhook_retries interval[];
ALTER TABLE payments.settings ADD COLUMN notify_events boolean NOT NULL DEFAULT false;
ALTER TABLE payments.settings ADD COLUMN webhook_endpoint_limit integer NOT NULL DEFAULT 16
    CHECK (webhook_endpoint_limit BETWEEN 1 AND 1000);
COMMENT ON COLUMN payments.settings.webhook_endpoint_limit IS
    'How many enabled webhook endpoints there may be (default 16; set_webhook_endpoint_limit): each event is written once per endpoint, in the transaction that made it.';
-- On Citus a DO UPDATE may not call now(): the row's own default stamps it.
CREATE OR REPLACE FUNCTION payments.set_webhook_tolerance(tolerance interval) RETURNS interval
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tolerance IS NULL OR tolerance NOT BETWEEN interval '1 second' AND interval '1 hour' THEN
        RAISE EXCEPTION 'the webhook tolerance must be between 1 second and 1 hour' USING ERRCODE = 'PM100';
    END IF;
    INSERT INTO payments.settings (webhook_tolerance) VALUES (tolerance)
    ON CONFLICT (singleton) DO UPDATE SET webhook_tolerance = excluded.webhook_tolerance, updated_at = excluded.updated_at;
    RETURN tolerance;
END
$$;
COMMENT ON FUNCTION payments.set_webhook_tolerance(interval) IS
    'Sets how far a webhook''s timestamp may be from now (1 second to 1 hour; default 5 minutes). Admin only: a wider window lets old, replayed events in.';
COMMENT ON TABLE payments.settings IS
    'The extension''s settings, changed only by payments_admin through payments.set_webhook_tolerance, payments.set_webhook_retries and payments.set_event_notifications. No row: the defaults.';
COMMENT ON COLUMN payments.settings.notify_events IS
    'Whether state changes are announced with NOTIFY payments_events and queued provider commands with NOTIFY payments_provider_commands (default off: a NOTIFY makes commits wait for each other; the gateway polls).';
COMMENT ON COLUMN payments.settings.webhook_retries IS
    'The waits between failed attempts to deliver an event to an endpoint (NULL: the default, payments.webhook_retries()).';

CREATE FUNCTION payments._refund_event(p_refund payments.refunds, p_status text, p_previous text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM payments._emit(p_refund.customer_id, 'refund', p_refund.id, p_status, p_previous, p_previous IS NULL,
                           jsonb_build_object('payment_id', p_refund.payment_id, 'amount_minor', p_refund.amount_minor,
                                              'currency', p_refund.currency));
END
$$;
COMMENT ON FUNCTION payments._refund_event(payments.refunds, text, text) IS
    'Internal: tells apps a refund was made (p_previous NULL) or moved to p_status. The caller holds its payment''s row lock.';


CREATE FUNCTION payments._dispute_event(p_dispute payments.disputes, p_status text, p_previous text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM payments._emit(p_dispute.customer_id, 'dispute', p_dispute.id, p_status, p_previous, p_previous IS NULL,
                           jsonb_build_object('payment_id', p_dispute.payment_id, 'amount_minor', p_dispute.amount_minor,
                                              'currency', p_dispute.currency, 'reason', p_dispute.reason));
END
$$;
COMMENT ON FUNCTION payments._dispute_event(payments.disputes, text, text) IS
    'Internal: tells apps a dispute was opened (p_previous NULL) or moved to p_status. The caller holds its payment''s row lock.';


CREATE FUNCTION payments._invoice_event(p_invoice payments.invoices, p_previous text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM payments._emit(p_invoice.customer_id, 'invoice', p_invoice.id, p_invoice.status, p_previous,
                           p_previous IS NULL,
                           jsonb_build_object('subscription_id', p_invoice.subscription_id, 'number', p_invoice.number,
                                              'kind', p_invoice.kind, 'total_minor', p_invoice.total_minor,
                                              'currency', p_invoice.currency, 'payment_id', p_invoice.payment_id,
                                              'attempt_count', p_invoice.attempt_count));
END
$$;
COMMENT ON FUNCTION payments._invoice_event(payments.invoices, text) IS
    'Internal: tells apps an invoice was issued (p_previous NULL), changed status, or had an attempt fail (invoice.updated). The caller holds its subscription''s or its own row lock.';


CREATE FUNCTION payments._usage_lines(p_sub payments.subscriptions, p_plan payments.plans, p_from timestamptz,
                                      p_to timestamptz) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_lines    jsonb := '[]';
    v_metered  jsonb;
    v_quantity numeric;
    v_invoiced bigint;
    v_numbers  text;
BEGIN
    FOR v_metered IN SELECT value FROM jsonb_array_elements(p_plan.metered) LOOP
        SELECT u.value INTO v_quantity
        FROM payments.usage_summary(p_sub.customer_id, v_metered ->> 'meter', p_from, p_to) u;
        v_lines := v_lines || jsonb_build_array(jsonb_build_object(
            'kind', 'usage', 'quantity', v_quantity,
            'amount_minor', payments._usage_price(v_quantity::text, (v_metered -> 'price')::text),
            'description', (v_metered ->> 'meter') || ', ' || (p_from AT TIME ZONE 'UTC')::date || ' to '
                           || (p_to AT TIME ZONE 'UTC')::date));
    END LOOP;
    -- Threshold invoices of the same stretch of usage billed part of it already.
    SELECT sum(i.total_minor), string_agg(i.number, ', ' ORDER BY i.number) INTO v_invoiced, v_numbers
    FROM payments.invoices i
    WHERE i.customer_id = p_sub.customer_id AND i.subscription_id = p_sub.id AND i.kind = 'threshold'
      AND i.usage_from = p_from;
    IF v_invoiced > 0 THEN
        v_lines := v_lines || jsonb_build_array(jsonb_build_object(
            'kind', 'credit', 'quantity', 1, 'amount_minor', -v_invoiced,
            'description', 'usage invoiced at its threshold (' || v_numbers || ')'));
    END IF;
    RETURN v_lines;
END
$$;
COMMENT ON FUNCTION payments._usage_lines(payments.subscriptions, payments.plans, timestamptz, timestamptz) IS
    'Internal: the invoice lines of a subscription''s usage in [p_from, p_to), each meter priced by p_plan (the plan it was used under), less what threshold invoices of the same stretch (usage_from = p_from) already billed.';


-- payments: events out to apps. Every state change of a payment, refund,
-- dispute, subscription or invoice is written to the outbox (outbox_events)
-- in the transaction that makes it and announced with NOTIFY payments_events;
-- the gateway delivers each event to the endpoints registered for its type,
-- signed with the Standard Webhooks scheme (the one ingest_webhook verifies),
-- retried with backoff, in order per object. Deliveries and every attempt
-- are kept (webhook_delivery_log).

CREATE TABLE payments.outbox_events (
    customer_id text COLLATE "C" NOT NULL,
    id          text COLLATE "C" NOT NULL,
    object      text COLLATE "C" NOT NULL CHECK (object IN ('payment', 'refund', 'dispute', 'subscription', 'invoice')),
    object_id   text COLLATE "C" NOT NULL,
    seq         bigint NOT NULL CHECK (seq > 0),
    type        text COLLATE "C" NOT NULL,
    status      text COLLATE "C" NOT NULL,
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, id),
    CONSTRAINT outbox_events_object_seq UNIQUE (customer_id, object_id, seq)
);
COMMENT ON TABLE payments.outbox_events IS
    'Every state change of a payment, refund, dispute, subscription or invoice, written in the transaction that made it: what apps are told (webhook endpoints; NOTIFY payments_events when set_event_notifications is on). Append-only; beside the customer (on Citus, by customer_id).';
COMMENT ON COLUMN payments.outbox_events.id IS 'evt_ + 26-character time-sortable id; the webhook-id of its deliveries.';
COMMENT ON COLUMN payments.outbox_events.seq IS 'The object''s changes counted from 1: deliveries to an endpoint follow it.';
COMMENT ON COLUMN payments.outbox_events.type IS
    '<object>.created, <object>.<new status> (payment.succeeded, invoice.paid, subscription.past_due), or <object>.updated for a change that keeps the status (a renewal, a failed invoice attempt).';
COMMENT ON COLUMN payments.outbox_events.data IS 'What the event says: object, id, customer_id, status, previous_status and a few fields of the object (get it for the rest).';
CREATE TRIGGER outbox_events_append_only BEFORE UPDATE OR DELETE ON payments.outbox_events
    FOR EACH ROW EXECUTE FUNCTION payments._refuse_change();
CREATE TRIGGER outbox_events_no_truncate BEFORE TRUNCATE ON payments.outbox_events
    FOR EACH STATEMENT EXECUTE FUNCTION payments._refuse_change();
SELECT pg_catalog.pg_extension_config_dump('payments.outbox_events', '');

CREATE TABLE payments.webhook_endpoints (
    id          text COLLATE "C" PRIMARY KEY,
    url         text NOT NULL,
    event_types text[] NOT NULL,
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz
);
COMMENT ON TABLE payments.webhook_endpoints IS
    'Where apps want events delivered (add_webhook_endpoint; remove_webhook_endpoint disables one and keeps its log). Holds no secret (webhook_endpoint_secrets does), so readers may see it. On Citus a reference table.';
COMMENT ON COLUMN payments.webhook_endpoints.event_types IS 'Types it receives: payment.succeeded, invoice.* (every invoice event), * or {} (every event).';
SELECT pg_catalog.pg_extension_config_dump('payments.webhook_endpoints', '');

CREATE TABLE payments.webhook_endpoint_secrets (
    endpoint_id text COLLATE "C" PRIMARY KEY REFERENCES payments.webhook_endpoints (id),
    secret      text NOT NULL
);
COMMENT ON TABLE payments.webhook_endpoint_secrets IS
    'Each endpoint''s Standard Webhooks signing secret (whsec_…), shown once by add_webhook_endpoint and read only by claim_webhook_deliveries; no role selects it. On Citus a reference table.';
SELECT pg_catalog.pg_extension_config_dump('payments.webhook_endpoint_secrets', '');

CREATE TABLE payments.webhook_deliveries (
    customer_id      text COLLATE "C" NOT NULL,
    event_id         text COLLATE "C" NOT NULL,
    endpoint_id      text COLLATE "C" NOT NULL,
    object_id        text COLLATE "C" NOT NULL,
    seq              bigint NOT NULL,
    status           text COLLATE "C" NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status_code integer,
    last_error       text,
    delivered_at     timestamptz,
    PRIMARY KEY (customer_id, event_id, endpoint_id),
    FOREIGN KEY (customer_id, event_id) REFERENCES payments.outbox_events (customer_id, id)
);
-- The next delivery of each object to each endpoint, and the due ones.
CREATE INDEX webhook_deliveries_order_idx ON payments.webhook_deliveries (customer_id, endpoint_id, object_id, seq)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_due_idx ON payments.webhook_deliveries (next_attempt_at) WHERE status = 'pending';
COMMENT ON TABLE payments.webhook_deliveries IS
    'One event to one endpoint: pending until the endpoint answers 2xx (delivered) or the retries run out (failed). An object''s later events wait for its earlier ones. Beside the customer (on Citus, by customer_id).';
COMMENT ON COLUMN payments.webhook_deliveries.next_attempt_at IS 'When it is due: now when made, the lease''s end while an attempt is in flight, then the retry schedule (set_webhook_retries).';
SELECT pg_catalog.pg_extension_config_dump('payments.webhook_deliveries', '');

CREATE TABLE payments.webhook_delivery_attempts (
    customer_id  text COLLATE "C" NOT NULL,
    event_id     text COLLATE "C" NOT NULL,
    endpoint_id  text COLLATE "C" NOT NULL,
    attempt      integer NOT NULL CHECK (attempt > 0),
    attempted_at timestamptz NOT NULL DEFAULT now(),
    status_code  integer CHECK (status_code BETWEEN 100 AND 599),
    error        text,
    duration_ms  integer CHECK (duration_ms >= 0),
    PRIMARY KEY (customer_id, event_id, endpoint_id, attempt),
    FOREIGN KEY (customer_id, event_id, endpoint_id) REFERENCES payments.webhook_deliveries (customer_id, event_id, endpoint_id)
);
COMMENT ON TABLE payments.webhook_delivery_attempts IS
    'Every delivery attempt and how the endpoint answered (a status code, or why there was none). Append-only; beside the customer.';
CREATE TRIGGER webhook_delivery_attempts_append_only BEFORE UPDATE OR DELETE ON payments.webhook_delivery_attempts
    FOR EACH ROW EXECUTE FUNCTION payments._refuse_change();
CREATE TRIGGER webhook_delivery_attempts_no_truncate BEFORE TRUNCATE ON payments.webhook_delivery_attempts
    FOR EACH STATEMENT EXECUTE FUNCTION payments._refuse_change();
SELECT pg_catalog.pg_extension_config_dump('payments.webhook_delivery_attempts', '');

CREATE FUNCTION payments._emit(p_customer_id text, p_object text, p_object_id text, p_status text, p_previous text,
                               p_created boolean DEFAULT false, p_data jsonb DEFAULT '{}') RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_id       text := payments._new_id('evt');
    v_type     text := p_object || '.' || CASE WHEN p_created THEN 'created'
                                               WHEN p_status IS DISTINCT FROM p_previous THEN p_status
                                               ELSE 'updated' END;
    v_seq      bigint;
    v_endpoint record;
BEGIN
    -- The caller holds the object's row lock (or just made it): seq follows its changes.
    IF NOT p_created THEN
        SELECT e.seq INTO v_seq FROM payments.outbox_events e
        WHERE e.customer_id = p_customer_id AND e.object_id = p_object_id ORDER BY e.seq DESC LIMIT 1;
    END IF;
    v_seq := coalesce(v_seq, 0) + 1;
    INSERT INTO payments.outbox_events (customer_id, id, object, object_id, seq, type, status, data)
    VALUES (p_customer_id, v_id, p_object, p_object_id, v_seq, v_type, p_status,
            jsonb_build_object('object', p_object, 'id', p_object_id, 'customer_id', p_customer_id,
                               'status', p_status, 'previous_status', p_previous) || p_data);
    FOR v_endpoint IN
        SELECT w.id FROM payments.webhook_endpoints w
        WHERE w.disabled_at IS NULL
          AND (w.event_types = '{}' OR v_type = ANY (w.event_types) OR (p_object || '.*') = ANY (w.event_types)
               OR '*' = ANY (w.event_types))
    LOOP
        INSERT INTO payments.webhook_deliveries (customer_id, event_id, endpoint_id, object_id, seq)
        VALUES (p_customer_id, v_id, v_endpoint.id, p_object_id, v_seq);
    END LOOP;
    IF payments._notifying() THEN
        PERFORM pg_catalog.pg_notify('payments_events', jsonb_build_object(
            'type', v_type, 'id', p_object_id, 'status', p_status, 'event_id', v_id, 'customer_id', p_customer_id)::text);
    END IF;
END
$$;
COMMENT ON FUNCTION payments._emit(text, text, text, text, text, boolean, jsonb) IS
    'Internal: writes a state change to the outbox with a delivery to each endpoint that wants its type, and, when notifications are on (set_event_notifications), NOTIFYs payments_events ({"type", "id", "status", "event_id", "customer_id"}). The caller holds the object''s row lock.';

CREATE FUNCTION payments._notifying() RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce((SELECT s.notify_events FROM payments.settings s), false);
END
$$;
COMMENT ON FUNCTION payments._notifying() IS
    'Internal: whether changes are announced with NOTIFY (payments.set_event_notifications; default off).';

CREATE FUNCTION payments.set_event_notifications(enabled boolean) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF enabled IS NULL THEN
        RAISE EXCEPTION 'enabled must be true or false' USING ERRCODE = 'PM100';
    END IF;
    INSERT INTO payments.settings (webhook_tolerance, notify_events) VALUES (payments.webhook_tolerance(), enabled)
    ON CONFLICT (singleton) DO UPDATE SET notify_events = excluded.notify_events, updated_at = excluded.updated_at;
    RETURN enabled;
END
$$;
COMMENT ON FUNCTION payments.set_event_notifications(boolean) IS
    'Turns NOTIFY payments_events (every state change, for clients that LISTEN) and NOTIFY payments_provider_commands (instant gateway wake-ups) on or off (admin; default off). PostgreSQL makes transactions that NOTIFY commit one at a time, so with it on every payment, refund and webhook waits for the others'' commits; off, the gateway finds work by polling (DELIVERY_INTERVAL_MS, COMMAND_INTERVAL_MS).';

CREATE FUNCTION payments.add_webhook_endpoint(url text, event_types text[] DEFAULT '{}', description text DEFAULT NULL)
RETURNS TABLE (id text, secret text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id     text := payments._new_id('we');
    v_secret text := payments._new_webhook_secret();
    v_limit  integer := coalesce((SELECT s.webhook_endpoint_limit FROM payments.settings s), 16);
BEGIN
    -- No user name or password before the host: the gateway would send them as Basic auth.
    IF url IS NULL OR length(url) > 2048 OR url !~ '^https?://[^/?#@[:space:]]+([/?#][^[:space:]]*)?$' THEN
        RAISE EXCEPTION 'url must be an http or https URL of at most 2048 characters, without spaces or a user name'
            USING ERRCODE = 'PM100';
    END IF;
    IF event_types IS NULL OR cardinality(event_types) > 100 OR array_position(event_types, NULL) IS NOT NULL
       OR NOT (true = ALL (SELECT t ~ '^(\*|(payment|refund|dispute|subscription|invoice)\.(\*|[a-z_]{1,64}))$'
                           FROM unnest(event_types) t)) THEN
        RAISE EXCEPTION 'event_types: up to 100 of <object>.<event>, <object>.* or * (objects: payment, refund, dispute, subscription, invoice)'
            USING ERRCODE = 'PM100';
    END IF;
    IF length(description) > 255 THEN
        RAISE EXCEPTION 'description must be at most 255 characters' USING ERRCODE = 'PM100';
    END IF;
    -- Every event is written once per endpoint in its own transaction: their number is bounded.
    -- The lock makes two concurrent registrations count one after the other.
    LOCK TABLE payments.webhook_endpoints IN SHARE ROW EXCLUSIVE MODE;
    IF (SELECT count(*) FROM payments.webhook_endpoints w WHERE w.disabled_at IS NULL) >= v_limit THEN
        RAISE EXCEPTION 'there are % enabled webhook endpoints already, the most allowed', v_limit
            USING ERRCODE = 'PM206', HINT = 'remove one, or raise the limit: payments.set_webhook_endpoint_limit (admin)';
    END IF;
    INSERT INTO payments.webhook_endpoints (id, url, event_types, description)
    VALUES (v_id, url, event_types, description);
    INSERT INTO payments.webhook_endpoint_secrets (endpoint_id, secret) VALUES (v_id, v_secret);
    RETURN QUERY SELECT v_id, v_secret;
END
$$;
COMMENT ON FUNCTION payments.add_webhook_endpoint(text, text[], text) IS
    'Registers an endpoint for the events whose types it names (payment.succeeded, invoice.*, * or {}: all) from now on. Returns its id and its Standard Webhooks signing secret (whsec_…), shown this once. PM100 for a URL that is not http(s), carries a user name, or unknown type patterns; PM206 past the limit of enabled endpoints (set_webhook_endpoint_limit, default 16). The gateway also refuses internal addresses (WEBHOOK_ALLOWED_NETWORKS).';

CREATE FUNCTION payments.remove_webhook_endpoint(id text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE payments.webhook_endpoints w SET disabled_at = now()
    WHERE w.id = remove_webhook_endpoint.id AND w.disabled_at IS NULL;
    IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM payments.webhook_endpoints w WHERE w.id = remove_webhook_endpoint.id) THEN
        RAISE EXCEPTION 'no webhook endpoint %', payments._shown(id) USING ERRCODE = 'PM204';
    END IF;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION payments.remove_webhook_endpoint(text) IS
    'Disables an endpoint: no new deliveries, none retried; its log stays. False when it was removed already; PM204 for an unknown id.';

CREATE FUNCTION payments.webhook_retries() RETURNS interval[]
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN coalesce((SELECT s.webhook_retries FROM payments.settings s),
                    '{5 seconds, 5 minutes, 30 minutes, 2 hours, 5 hours, 10 hours, 10 hours}'::interval[]);
END
$$;
COMMENT ON FUNCTION payments.webhook_retries() IS
    'The waits between failed delivery attempts in force (default, as Svix: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; then the delivery fails).';

CREATE FUNCTION payments.set_webhook_retries(retries interval[]) RETURNS interval[]
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF retries IS NULL OR cardinality(retries) > 20 OR array_position(retries, NULL) IS NOT NULL
       OR NOT (interval '0' < ALL (retries)) OR NOT (interval '7 days' >= ALL (retries)) THEN
        RAISE EXCEPTION 'retries: up to 20 waits, each more than 0 and at most 7 days' USING ERRCODE = 'PM100';
    END IF;
    INSERT INTO payments.settings (webhook_tolerance, webhook_retries) VALUES (payments.webhook_tolerance(), retries)
    ON CONFLICT (singleton) DO UPDATE SET webhook_retries = excluded.webhook_retries, updated_at = excluded.updated_at;
    RETURN retries;
END
$$;
COMMENT ON FUNCTION payments.set_webhook_retries(interval[]) IS
    'Sets the waits between failed delivery attempts (admin); after the last one fails the delivery is failed. PM100 outside 1 to 20 waits of up to 7 days.';

CREATE FUNCTION payments.claim_webhook_deliveries(lim int DEFAULT 20, lease interval DEFAULT '30 seconds',
                                                  per_endpoint int DEFAULT 1000, in_flight jsonb DEFAULT '{}')
RETURNS TABLE (customer_id text, event_id text, endpoint_id text, url text, secret text, body text, attempt integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_due      record;
    v_attempts integer;
    v_claimed  integer := 0;
    -- In flight per endpoint (the caller's, then what this call claims): one key per endpoint.
    v_per      jsonb := coalesce(in_flight, '{}');
BEGIN
    IF lim IS NULL OR lim NOT BETWEEN 1 AND 1000 OR lease IS NULL OR lease <= interval '0'
       OR per_endpoint IS NULL OR per_endpoint < 1 THEN
        RAISE EXCEPTION 'lim is 1 to 1000, the lease positive, per_endpoint at least 1' USING ERRCODE = 'PM100';
    END IF;
    -- As claim_provider_commands: candidates without locks (the first pending
    -- delivery of each object to each endpoint, if due), then each claimed where it lives.
    FOR v_due IN
        SELECT h.customer_id, h.event_id, h.endpoint_id
        FROM (SELECT DISTINCT ON (d.customer_id, d.endpoint_id, d.object_id)
                     d.customer_id, d.event_id, d.endpoint_id, d.next_attempt_at
              FROM payments.webhook_deliveries d
              WHERE d.status = 'pending'
              ORDER BY d.customer_id, d.endpoint_id, d.object_id, d.seq) h
        JOIN payments.webhook_endpoints w ON w.id = h.endpoint_id
        WHERE h.next_attempt_at <= now() AND w.disabled_at IS NULL
          AND coalesce((v_per ->> w.id)::integer, 0) < per_endpoint
        ORDER BY h.next_attempt_at LIMIT lim * 4
    LOOP
        EXIT WHEN v_claimed >= lim;
        -- No endpoint takes more than its share: a slow one never holds the others' deliveries.
        CONTINUE WHEN coalesce((v_per ->> v_due.endpoint_id)::integer, 0) >= per_endpoint;
        SELECT d.attempts INTO v_attempts FROM payments.webhook_deliveries d
        WHERE d.customer_id = v_due.customer_id AND d.event_id = v_due.event_id AND d.endpoint_id = v_due.endpoint_id
          AND d.status = 'pending' AND d.next_attempt_at <= now()
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        UPDATE payments.webhook_deliveries d SET attempts = v_attempts + 1, next_attempt_at = now() + lease
        WHERE d.customer_id = v_due.customer_id AND d.event_id = v_due.event_id AND d.endpoint_id = v_due.endpoint_id;
        v_claimed := v_claimed + 1;
        v_per := v_per || jsonb_build_object(v_due.endpoint_id, coalesce((v_per ->> v_due.endpoint_id)::integer, 0) + 1);
        RETURN QUERY
        SELECT e.customer_id, e.id, w.id, w.url, s.secret,
               jsonb_build_object('type', e.type, 'timestamp',
                                  to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                                  'data', e.data)::text,
               v_attempts + 1
        FROM payments.outbox_events e, payments.webhook_endpoints w
        JOIN payments.webhook_endpoint_secrets s ON s.endpoint_id = w.id
        WHERE e.customer_id = v_due.customer_id AND e.id = v_due.event_id AND w.id = v_due.endpoint_id;
    END LOOP;
END
$$;
COMMENT ON FUNCTION payments.claim_webhook_deliveries(int, interval, int, jsonb) IS
    'For the gateway: leases up to lim due deliveries (the earliest pending event of each object for each enabled endpoint, so that no endpoint has more than per_endpoint in flight counting the caller''s own, in_flight: {"endpoint id": count}) for lease, and returns what to send: the endpoint''s URL and secret, the body ({"type", "timestamp", "data"}; the event id is the webhook-id) and the attempt number. Safe from several gateways (SKIP LOCKED); a lease that ends unanswered makes the delivery due again.';

CREATE FUNCTION payments.record_webhook_delivery(customer_id text, event_id text, endpoint_id text, attempt integer,
                                                 status_code integer, error text DEFAULT NULL,
                                                 duration_ms integer DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_delivery payments.webhook_deliveries%ROWTYPE;
    v_retries  interval[] := payments.webhook_retries();
    v_ok       boolean := status_code BETWEEN 200 AND 299;
    v_status   text;
BEGIN
    IF attempt IS NULL OR attempt < 1 OR (status_code IS NOT NULL AND status_code NOT BETWEEN 100 AND 599)
       OR (status_code IS NULL AND error IS NULL) OR duration_ms < 0 THEN
        RAISE EXCEPTION 'an attempt number, and a status code (100 to 599) or an error' USING ERRCODE = 'PM100';
    END IF;
    SELECT * INTO v_delivery FROM payments.webhook_deliveries d
    WHERE d.customer_id = record_webhook_delivery.customer_id AND d.event_id = record_webhook_delivery.event_id
      AND d.endpoint_id = record_webhook_delivery.endpoint_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no delivery of event % to endpoint %', event_id, endpoint_id USING ERRCODE = 'PM204';
    END IF;
    INSERT INTO payments.webhook_delivery_attempts (customer_id, event_id, endpoint_id, attempt, status_code, error,
                                                    duration_ms)
    VALUES (v_delivery.customer_id, v_delivery.event_id, v_delivery.endpoint_id, attempt, status_code,
            left(error, 1000), duration_ms)
    ON CONFLICT DO NOTHING;
    -- A late answer to an attempt whose lease ran out still counts when it was a success.
    IF v_delivery.status = 'pending' AND (v_ok OR attempt = v_delivery.attempts) THEN
        -- Decided here, not in the UPDATE: Citus allows only immutable expressions in its CASEs.
        v_status := CASE WHEN v_ok THEN 'delivered' WHEN attempt > cardinality(v_retries) THEN 'failed' ELSE 'pending' END;
        IF v_status = 'pending' THEN
            v_delivery.next_attempt_at := now() + v_retries[attempt];
        ELSIF v_ok THEN
            v_delivery.delivered_at := now();
        END IF;
        UPDATE payments.webhook_deliveries d
        SET status = v_status, delivered_at = v_delivery.delivered_at, next_attempt_at = v_delivery.next_attempt_at,
            last_status_code = status_code, last_error = left(error, 1000)
        WHERE d.customer_id = v_delivery.customer_id AND d.event_id = v_delivery.event_id
          AND d.endpoint_id = v_delivery.endpoint_id
        RETURNING d.status INTO v_delivery.status;
    END IF;
    RETURN v_delivery.status;
END
$$;
COMMENT ON FUNCTION payments.record_webhook_delivery(text, text, text, integer, integer, text, integer) IS
    'For the gateway: how an endpoint answered an attempt (a status code, or the error when there was no answer). 2xx: delivered; otherwise retried after the next wait of webhook_retries(), failed after the last. Every attempt is logged. Returns the delivery''s status; PM204 for an unknown delivery.';

CREATE VIEW payments.event_log WITH (security_invoker) AS
SELECT e.id, e.customer_id, e.type, e.object, e.object_id, e.status, e.data, e.created_at
FROM payments.outbox_events e;
COMMENT ON VIEW payments.event_log IS 'Every event told to apps, newest last by id; readable by payments_reader.';

CREATE FUNCTION payments._masked_url(p_url text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN regexp_replace(regexp_replace(p_url, '^([a-z]+://)[^/?#]*@', '\1'), '[?#].*$', '?***');

COMMENT ON FUNCTION payments._masked_url(text) IS
    'Internal: a URL as readers see it: without a user name or password, its query and fragment masked (apps put tokens there).';

CREATE FUNCTION payments._webhook_endpoints()
RETURNS TABLE (id text, url text, event_types text[], description text, created_at timestamptz, disabled_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- The platform's endpoints: a login bound to one customer sees none.
    IF payments._bound_customer() IS NOT NULL THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT w.id, payments._masked_url(w.url), w.event_types, w.description, w.created_at, w.disabled_at
    FROM payments.webhook_endpoints w;
END
$$;

COMMENT ON FUNCTION payments._webhook_endpoints() IS
    'Internal: every endpoint with its URL masked, with its owner''s rights (on Citus a view reaches tables with the reader''s own).';

CREATE VIEW payments.webhook_endpoint_list AS SELECT * FROM payments._webhook_endpoints();

COMMENT ON VIEW payments.webhook_endpoint_list IS
    'Every webhook endpoint, its URL''s query and any user name masked; readable by payments_reader (the table itself by payments_admin only).';

CREATE VIEW payments.webhook_delivery_log WITH (security_invoker) AS
SELECT d.event_id, e.type, e.object_id, d.customer_id, d.endpoint_id, w.url, d.status, d.attempts,
       d.next_attempt_at, d.delivered_at, d.last_status_code, d.last_error, e.created_at
FROM payments.webhook_deliveries d
JOIN payments.outbox_events e ON e.customer_id = d.customer_id AND e.id = d.event_id
JOIN payments._webhook_endpoints() w ON w.id = d.endpoint_id;
COMMENT ON VIEW payments.webhook_delivery_log IS
    'Each event''s delivery to each endpoint: status (pending, delivered, failed), attempts, the last answer; every attempt is in webhook_delivery_attempts. Readable by payments_reader (no secrets).';

COMMENT ON COLUMN payments.subscriptions.anchor_period IS 'The period number just before billing_anchor: the anchor''s first period is anchor_period + 1.';

COMMENT ON COLUMN payments.subscriptions.usage_from IS 'Metered usage from this instant on is not invoiced yet (the start of the period, or of the last plan change within it).';

COMMENT ON COLUMN payments.subscriptions.billing_error IS 'Why run_billing last failed for this subscription ({"sqlstate", "message", "first_at", "last_at", "attempts"}), NULL once it succeeds again: one subscription''s failure never stops the others (payments.billing_failures).';

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
GRANT SELECT ON payments.meter_claims TO payments_admin;

CREATE FUNCTION payments._same_cycle(p_a payments.plans, p_b payments.plans) RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN (p_a.billing_interval, p_a.interval_count) = (p_b.billing_interval, p_b.interval_count);

COMMENT ON FUNCTION payments._same_cycle(payments.plans, payments.plans) IS
    'Internal: whether two plans bill over the same interval; a change between plans that do not resets the billing anchor (as Stripe''s).';

CREATE FUNCTION payments._period_at(p_sub payments.subscriptions, p_at timestamptz, OUT period_start timestamptz,
                                    OUT period_end timestamptz, OUT plan text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_old    payments.plans%ROWTYPE;
    v_plan   payments.plans%ROWTYPE;
    v_anchor timestamptz := p_sub.billing_anchor;
    v_base   integer := p_sub.anchor_period;
    v_n      integer := p_sub.period_number + 1;
BEGIN
    period_start := p_sub.current_period_start;
    period_end := p_sub.current_period_end;
    plan := p_sub.plan;
    -- Only a renewing subscription goes on past its period's end (a trial, a cancel at
    -- period end and a pause stop there).
    IF p_at < p_sub.current_period_end OR p_sub.status NOT IN ('active', 'past_due') OR p_sub.cancel_at_period_end THEN
        RETURN;
    END IF;
    plan := coalesce(p_sub.pending_plan, p_sub.plan);
    SELECT * INTO v_old FROM payments.plans p WHERE p.code = p_sub.plan;
    SELECT * INTO v_plan FROM payments.plans p WHERE p.code = plan;
    IF NOT payments._same_cycle(v_old, v_plan) THEN
        v_anchor := p_sub.current_period_end;
        v_base := p_sub.period_number;
    END IF;
    -- Far behind: jump to a period no later than p_at's (counted in periods of the longest
    -- length one can have: 31 days a month, 366 a year), then step.
    v_n := greatest(v_n, v_base + floor(extract(epoch FROM p_at - v_anchor)
                                         / (86400.0 * v_plan.interval_count
                                            * CASE v_plan.billing_interval WHEN 'day' THEN 1 WHEN 'week' THEN 7
                                                                           WHEN 'month' THEN 31 ELSE 366 END))::integer);
    period_end := payments._period_end(v_plan, v_anchor, v_n - 1 - v_base);
    LOOP
        period_start := period_end;
        period_end := payments._period_end(v_plan, v_anchor, v_n - v_base);
        EXIT WHEN p_at < period_end;
        v_n := v_n + 1;
    END LOOP;
END
$$;

COMMENT ON FUNCTION payments._period_at(payments.subscriptions, timestamptz) IS
    'Internal: the period time p_at falls in and the plan it bills, from the subscription alone: its current period, or for an active or past_due one whose period ended before run_billing renewed it, the period run_billing will make (so quotas start afresh at the period''s start whether the billing timer ran or not).';

CREATE FUNCTION payments._claim_meters(p_sub payments.subscriptions, p_plan payments.plans) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_meter text;
    v_owner text;
BEGIN
    FOR v_meter IN SELECT DISTINCT m.value ->> 'meter' FROM jsonb_array_elements(p_plan.metered) m LOOP
        -- A concurrent claim of the same meter waits here for the other transaction.
        INSERT INTO payments.meter_claims (customer_id, meter, subscription_id)
        VALUES (p_sub.customer_id, v_meter, p_sub.id)
        ON CONFLICT ON CONSTRAINT meter_claims_pkey DO NOTHING;
        SELECT c.subscription_id INTO v_owner FROM payments.meter_claims c
        WHERE c.customer_id = p_sub.customer_id AND c.meter = v_meter;
        IF v_owner <> p_sub.id THEN
            RAISE EXCEPTION 'meter % of customer % is already billed by subscription %', v_meter,
                payments._shown(p_sub.customer_id), v_owner USING ERRCODE = 'PM206',
                HINT = 'a meter''s usage is billed by one subscription of a customer: end that one, or change its plan';
        END IF;
    END LOOP;
END
$$;

COMMENT ON FUNCTION payments._claim_meters(payments.subscriptions, payments.plans) IS
    'Internal: makes a subscription the one that bills the usage of each meter p_plan prices; PM206 when another subscription of the customer already does.';

CREATE FUNCTION payments._release_meters(p_sub payments.subscriptions, p_keep payments.plans) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    -- A list, not an expression over the plan in the DELETE: Citus allows only immutable
    -- functions in its COALESCE and CASE.
    v_keep text[] := ARRAY(SELECT m.value ->> 'meter' FROM jsonb_array_elements(coalesce(p_keep.metered, '[]')) m);
BEGIN
    DELETE FROM payments.meter_claims c
    WHERE c.customer_id = p_sub.customer_id AND c.subscription_id = p_sub.id AND c.meter <> ALL (v_keep);
END
$$;

COMMENT ON FUNCTION payments._release_meters(payments.subscriptions, payments.plans) IS
    'Internal: gives up a subscription''s claims on the meters p_keep does not price (NULL: all), once their usage is invoiced.';

CREATE FUNCTION payments._replayed_consumption(p_answer payments.consumptions, p_feature text, p_quantity numeric)
RETURNS TABLE (allowed boolean, remaining numeric, outcome text, reason text, subscription_id text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF (p_answer.feature, p_answer.quantity) IS DISTINCT FROM (p_feature, p_quantity) THEN
        RAISE EXCEPTION 'request_id % was already used for another request', quote_literal(p_answer.request_id)
            USING ERRCODE = 'PM201', DETAIL = 'it consumed ' || p_answer.quantity || ' of ' || p_answer.feature;
    END IF;
    RETURN QUERY SELECT p_answer.allowed, p_answer.remaining, 'replayed'::text, p_answer.reason, p_answer.subscription_id;
END
$$;

COMMENT ON FUNCTION payments._replayed_consumption(payments.consumptions, text, numeric) IS
    'Internal: the first answer to a consume request_id asked again, or PM201 when the request differs (another feature or quantity).';

COMMENT ON COLUMN payments.invoices.attempted_at IS 'The time (run_billing''s at) of the latest attempt: the next retry is counted from it.';

COMMENT ON COLUMN payments.invoices.usage_from IS 'The usage it bills: [usage_from, usage_to), NULL when none.';

COMMENT ON COLUMN payments.invoices.usage_to IS 'The end (exclusive) of the usage it bills.';

CREATE FUNCTION payments._lines_total(p_lines jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE
RETURN (SELECT coalesce(sum((l ->> 'amount_minor')::bigint), 0) FROM jsonb_array_elements(p_lines) l);

COMMENT ON FUNCTION payments._lines_total(jsonb) IS 'Internal: the sum of invoice lines'' amount_minor.';

CREATE FUNCTION payments._invoice_usage(p_sub payments.subscriptions, p_plan payments.plans, p_kind text,
                                        p_from timestamptz, p_to timestamptz, p_at timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_lines jsonb;
BEGIN
    IF NOT p_from < p_to THEN
        RETURN NULL;
    END IF;
    v_lines := payments._usage_lines(p_sub, p_plan, p_from, p_to);
    IF payments._lines_total(v_lines) <= 0 THEN
        RETURN NULL;
    END IF;
    RETURN payments._issue_invoice(p_sub, p_kind, p_plan.currency, v_lines, 0, p_from, p_to, p_at);
END
$$;

COMMENT ON FUNCTION payments._invoice_usage(payments.subscriptions, payments.plans, text, timestamptz, timestamptz, timestamptz) IS
    'Internal: invoices (kind threshold or final) a subscription''s usage of [p_from, p_to) at p_plan''s prices, when it comes to more than nothing; returns the invoice id or NULL.';

CREATE FUNCTION payments._abandon_payment(p_customer_id text, p_payment_id text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
BEGIN
    BEGIN
        -- Out of the usual order (a payment before its invoice): never wait. A payment locked
        -- now is being settled by its own news, which finds its invoice as it then stands.
        SELECT p.status INTO v_status FROM payments.payments p
        WHERE p.customer_id = p_customer_id AND p.id = p_payment_id FOR UPDATE NOWAIT;
        IF v_status IN ('requires_payment_method', 'requires_confirmation', 'requires_action') THEN
            PERFORM payments.cancel_payment(p_payment_id, 'abandoned');
        END IF;
    EXCEPTION WHEN SQLSTATE 'PM206' OR SQLSTATE 'PM208' OR SQLSTATE 'PM209' OR lock_not_available THEN
        NULL;  -- it moved on, is being settled, or the provider has not answered yet
    END;
END
$$;

COMMENT ON FUNCTION payments._abandon_payment(text, text) IS
    'Internal: cancels an invoice attempt''s payment that still waits on the customer (3-D Secure) or a payment method, so it cannot be paid beside the next attempt or for an invoice no longer collected.';

CREATE FUNCTION payments._stop_collection(p_sub payments.subscriptions, p_status text, p_period integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_invoice payments.invoices%ROWTYPE;
    v_stopped payments.invoices%ROWTYPE;
BEGIN
    FOR v_invoice IN
        SELECT * FROM payments.invoices i
        WHERE i.customer_id = p_sub.customer_id AND i.subscription_id = p_sub.id AND i.status = 'open'
          AND (p_period IS NULL OR (i.period_number = p_period AND i.kind IN ('period', 'proration')))
        ORDER BY i.id FOR UPDATE
    LOOP
        IF v_invoice.payment_id IS NOT NULL THEN
            PERFORM payments._abandon_payment(v_invoice.customer_id, v_invoice.payment_id);
        END IF;
        UPDATE payments.invoices i SET status = p_status, next_attempt_at = NULL
        WHERE i.customer_id = v_invoice.customer_id AND i.id = v_invoice.id
        RETURNING * INTO v_stopped;
        PERFORM payments._invoice_event(v_stopped, v_invoice.status);
    END LOOP;
END
$$;

COMMENT ON FUNCTION payments._stop_collection(payments.subscriptions, text, integer) IS
    'Internal: stops collecting a subscription''s open invoices (Stripe stops automatic collection on cancellation), or with p_period only the period and proration invoices of that period (a plan change netted them): each becomes p_status (uncollectible, or void when nothing should ever be paid), without a retry, and a payment still waiting on the customer is canceled. A charge already under way that succeeds still pays an uncollectible invoice.';

CREATE FUNCTION payments._end_subscription(p_sub payments.subscriptions, p_status text, p_ended_at timestamptz,
                                           p_reason text, p_at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_sub  payments.subscriptions%ROWTYPE := p_sub;
    v_plan payments.plans%ROWTYPE;
BEGIN
    -- A subscription that never started (incomplete) owes nothing: its invoice is void.
    PERFORM payments._stop_collection(p_sub, CASE WHEN p_sub.status = 'incomplete' THEN 'void' ELSE 'uncollectible' END);
    v_sub.status := p_status;
    v_sub.canceled_at := p_ended_at;
    PERFORM payments._set_subscription(v_sub, p_sub.status, p_reason, jsonb_build_object('at', p_ended_at));
    -- The usage not invoiced yet, in arrears, once (Stripe and Lago invoice it on termination;
    -- a trial's usage is not billed).
    IF p_status = 'canceled' AND p_sub.period_number > 0 AND p_sub.status <> 'incomplete' THEN
        SELECT * INTO v_plan FROM payments.plans p WHERE p.code = p_sub.plan;
        PERFORM payments._invoice_usage(v_sub, v_plan, 'final', p_sub.usage_from, p_ended_at, p_at);
    END IF;
    UPDATE payments.subscriptions s SET usage_from = greatest(s.usage_from, p_ended_at)
    WHERE s.customer_id = p_sub.customer_id AND s.id = p_sub.id;
    PERFORM payments._release_meters(v_sub, NULL);
END
$$;

COMMENT ON FUNCTION payments._end_subscription(payments.subscriptions, text, timestamptz, text, timestamptz) IS
    'Internal: ends a locked subscription at p_ended_at as canceled or incomplete_expired: its open invoices are no longer collected (void when it never started: incomplete), the usage not invoiced yet is invoiced once (final; none for one that never started), and its meters are free for another subscription.';

CREATE FUNCTION payments._next_period(p_sub payments.subscriptions, p_start timestamptz, p_new_anchor boolean,
                                      p_reason text, p_at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_sub       payments.subscriptions%ROWTYPE := p_sub;
    v_used_plan payments.plans%ROWTYPE;
    v_plan      payments.plans%ROWTYPE;
BEGIN
    SELECT * INTO v_used_plan FROM payments.plans p WHERE p.code = p_sub.plan;
    -- A plan change asked for at period end starts with the new period.
    v_sub.plan := coalesce(p_sub.pending_plan, p_sub.plan);
    SELECT * INTO v_plan FROM payments.plans p WHERE p.code = v_sub.plan;
    -- Another billing interval starts a new anchor (as a resume does): never anchor + n x new interval.
    IF p_new_anchor OR NOT payments._same_cycle(v_used_plan, v_plan) THEN
        v_sub.billing_anchor := p_start;
        v_sub.anchor_period := p_sub.period_number;
    END IF;
    v_sub.period_number := p_sub.period_number + 1;
    v_sub.current_period_start := p_start;
    v_sub.current_period_end := payments._period_end(v_plan, v_sub.billing_anchor, v_sub.period_number - v_sub.anchor_period);
    v_sub.status := CASE WHEN p_sub.status IN ('trialing', 'paused') THEN 'active' ELSE p_sub.status END;
    v_sub.usage_from := p_start;
    v_sub.pending_plan := NULL;
    UPDATE payments.subscriptions s
    SET period_number = v_sub.period_number, current_period_start = v_sub.current_period_start,
        current_period_end = v_sub.current_period_end, status = v_sub.status, plan = v_sub.plan,
        billing_anchor = v_sub.billing_anchor, anchor_period = v_sub.anchor_period, usage_from = v_sub.usage_from,
        pending_plan = NULL, updated_at = now()
    WHERE s.customer_id = v_sub.customer_id AND s.id = v_sub.id;
    PERFORM payments._subscription_event(v_sub, p_sub.status, p_reason,
                                         jsonb_build_object('period_number', v_sub.period_number, 'plan', v_sub.plan,
                                                            'period_start', v_sub.current_period_start, 'at', p_at));
    -- The usage not invoiced yet (none of a trial's) is billed in arrears at the plan it was used under.
    PERFORM payments._invoice_period(v_sub, v_plan, v_used_plan,
                                     CASE WHEN p_sub.period_number > 0 THEN p_sub.usage_from END, p_start, p_at);
    PERFORM payments._release_meters(v_sub, v_plan);
    PERFORM payments._claim_meters(v_sub, v_plan);
END
$$;

COMMENT ON FUNCTION payments._next_period(payments.subscriptions, timestamptz, boolean, text, timestamptz) IS
    'Internal: moves a locked subscription into its next period, starting at p_start (its period''s end for a renewal; the time of a resume or of a change of billing interval, which start a new anchor), on its pending plan if one was asked for, and invoices it at p_at with the usage not yet invoiced.';

CREATE FUNCTION payments._credit_unused(p_sub payments.subscriptions, p_credit bigint, p_description text,
                                        p_at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_unpaid  bigint;
    v_numbers text;
    v_currency text;
BEGIN
    -- A credit can only come from money that was paid: what this period still owes is netted first.
    SELECT sum(i.total_minor), string_agg(i.number, ', ' ORDER BY i.number), min(i.currency)
    INTO v_unpaid, v_numbers, v_currency
    FROM payments.invoices i
    WHERE i.customer_id = p_sub.customer_id AND i.subscription_id = p_sub.id AND i.status = 'open'
      AND i.period_number = p_sub.period_number AND i.kind IN ('period', 'proration');
    IF v_unpaid > 0 THEN
        -- The netted invoices are void; what is still owed after the credit is invoiced anew.
        PERFORM payments._stop_collection(p_sub, 'void', p_sub.period_number);
        IF v_unpaid > p_credit THEN
            PERFORM payments._issue_invoice(p_sub, 'proration', v_currency, jsonb_build_array(
                jsonb_build_object('kind', 'proration', 'amount_minor', v_unpaid,
                                   'description', 'unpaid invoices ' || v_numbers || ', replaced'),
                jsonb_build_object('kind', 'credit', 'amount_minor', -p_credit, 'description', p_description)),
                0, NULL, NULL, p_at);
        END IF;
    END IF;
    IF p_credit > coalesce(v_unpaid, 0) THEN
        UPDATE payments.subscriptions s SET credit_minor = s.credit_minor + (p_credit - coalesce(v_unpaid, 0))
        WHERE s.customer_id = p_sub.customer_id AND s.id = p_sub.id;
    END IF;
END
$$;

COMMENT ON FUNCTION payments._credit_unused(payments.subscriptions, bigint, text, timestamptz) IS
    'Internal: credits a locked subscription p_credit minor units for time it paid for and will not use, netted first against what its current period still owes (those invoices are void and the rest, if any, invoiced anew); only what is left is kept as credit for its next invoices.';

CREATE FUNCTION payments._bill_subscription(p_customer_id text, p_id text, p_at timestamptz) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_sub     payments.subscriptions%ROWTYPE;
    v_plan    payments.plans%ROWTYPE;
    v_renewed integer := 0;
    v_ended   integer := 0;
    v_expired integer := 0;
BEGIN
    LOOP
        SELECT * INTO v_sub FROM payments.subscriptions s
        WHERE s.customer_id = p_customer_id AND s.id = p_id
          AND ((s.status IN ('trialing', 'active', 'past_due') AND s.current_period_end <= p_at)
               OR (s.status = 'incomplete' AND s.current_period_start <= p_at - interval '23 hours'))
        FOR UPDATE SKIP LOCKED;
        EXIT WHEN NOT FOUND;
        IF v_sub.status = 'incomplete' THEN
            -- Its first invoice was not paid within 23 hours (as Stripe's): nothing was delivered.
            PERFORM payments._end_subscription(v_sub, 'incomplete_expired', v_sub.current_period_start + interval '23 hours',
                                               'first invoice not paid within 23 hours', p_at);
            v_expired := v_expired + 1;
            EXIT;
        ELSIF v_sub.cancel_at_period_end THEN
            PERFORM payments._end_subscription(v_sub, 'canceled', v_sub.current_period_end, 'canceled at period end', p_at);
            v_ended := v_ended + 1;
            EXIT;
        END IF;
        -- Possibly several periods behind: each pass moves it one period on.
        PERFORM payments._next_period(v_sub, v_sub.current_period_end, false, 'renewed', p_at);
        v_renewed := v_renewed + 1;
    END LOOP;
    -- Usage that reached its plan's threshold within the open period, invoiced now.
    SELECT * INTO v_sub FROM payments.subscriptions s
    WHERE s.customer_id = p_customer_id AND s.id = p_id AND s.status IN ('active', 'past_due') AND s.period_number > 0
      AND s.current_period_start < p_at AND s.current_period_end > p_at
    FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        SELECT * INTO v_plan FROM payments.plans p WHERE p.code = v_sub.plan;
        IF v_plan.usage_threshold_minor IS NOT NULL
           AND payments._lines_total(payments._usage_lines(v_sub, v_plan, v_sub.usage_from, p_at))
               >= v_plan.usage_threshold_minor THEN
            PERFORM payments._invoice_usage(v_sub, v_plan, 'threshold', v_sub.usage_from, p_at, p_at);
            RETURN jsonb_build_object('renewed', v_renewed, 'ended', v_ended, 'expired', v_expired, 'thresholds', 1);
        END IF;
    END IF;
    RETURN jsonb_build_object('renewed', v_renewed, 'ended', v_ended, 'expired', v_expired, 'thresholds', 0);
END
$$;

COMMENT ON FUNCTION payments._bill_subscription(text, text, timestamptz) IS
    'Internal: what run_billing has due at p_at for one subscription: ends it (canceled at period end, or incomplete for 23 hours), or renews it into each period that ended, then invoices usage that reached its plan''s threshold. Claims its row with SKIP LOCKED. Returns {"renewed", "ended", "expired", "thresholds"}.';

CREATE FUNCTION payments._billing_outcome(p_customer_id text, p_id text, p_error jsonb, p_at timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_sub payments.subscriptions%ROWTYPE;
    -- Values from the locked row, not its columns, in the UPDATE: Citus refuses a stable
    -- function (jsonb_build_object) over column references.
    v_at  jsonb := to_jsonb(p_at);
BEGIN
    -- Never waits: a subscription another run holds is that run's to record (waiting here, holding
    -- the invoice counter, deadlocked concurrent runs).
    SELECT * INTO v_sub FROM payments.subscriptions s WHERE s.customer_id = p_customer_id AND s.id = p_id
    FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    ELSIF p_error IS NULL THEN
        IF v_sub.billing_error IS NOT NULL THEN
            UPDATE payments.subscriptions s SET billing_error = NULL
            WHERE s.customer_id = p_customer_id AND s.id = p_id;
            PERFORM payments._subscription_event(v_sub, v_sub.status, 'billing recovered', '{}');
        END IF;
        RETURN;
    END IF;
    UPDATE payments.subscriptions s
    SET billing_error = p_error || jsonb_build_object(
            'first_at', CASE WHEN v_sub.billing_error ->> 'sqlstate' = p_error ->> 'sqlstate'
                             THEN v_sub.billing_error -> 'first_at' ELSE v_at END,
            'last_at', v_at, 'attempts', coalesce((v_sub.billing_error ->> 'attempts')::integer, 0) + 1)
    WHERE s.customer_id = p_customer_id AND s.id = p_id;
    -- History and apps hear of a new failure once, not at every run.
    IF v_sub.billing_error ->> 'sqlstate' IS DISTINCT FROM p_error ->> 'sqlstate' THEN
        PERFORM payments._subscription_event(v_sub, v_sub.status, 'billing failed', p_error);
    END IF;
END
$$;

COMMENT ON FUNCTION payments._billing_outcome(text, text, jsonb, timestamptz) IS
    'Internal: records on a subscription that billing failed at p_at (p_error: {"sqlstate", "message"}; its history and apps hear of a new failure once) or, p_error NULL, that it succeeded again. A subscription another run holds is skipped, never waited for.';

CREATE VIEW payments.billing_failures WITH (security_invoker) AS
SELECT s.customer_id, s.id AS subscription_id, s.status, s.billing_error ->> 'sqlstate' AS sqlstate,
       s.billing_error ->> 'message' AS message, (s.billing_error ->> 'first_at')::timestamptz AS first_failed_at,
       (s.billing_error ->> 'last_at')::timestamptz AS last_failed_at, (s.billing_error ->> 'attempts')::integer AS attempts
FROM payments.subscriptions s
WHERE s.billing_error IS NOT NULL;

COMMENT ON VIEW payments.billing_failures IS
    'Subscriptions run_billing could not bill at its last try, with the SQLSTATE and message, when it first and last failed and how often: each is retried at every run, the others are billed meanwhile. Readable by payments_reader.';

CREATE FUNCTION payments.reconciliation_window("from" timestamptz, "to" timestamptz)
RETURNS TABLE (from_unix bigint, to_unix bigint)
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF "from" IS NULL OR "to" IS NULL OR NOT isfinite("from") OR NOT isfinite("to") OR "from" >= "to"
       OR "to" - "from" > interval '92 days' THEN
        RAISE EXCEPTION 'from must be before to, both finite and at most 92 days apart' USING ERRCODE = 'PM100',
            HINT = 'reconcile a long history a window at a time';
    END IF;
    from_unix := floor(extract(epoch FROM "from"))::bigint;
    to_unix := ceil(extract(epoch FROM "to"))::bigint;
    RETURN NEXT;
END
$$;

COMMENT ON FUNCTION payments.reconciliation_window(timestamptz, timestamptz) IS
    'The window [from, to) a reconciliation covers, as Unix seconds for the provider''s list calls: both finite, from before to, at most 92 days apart (a run''s work is bounded); PM100 otherwise.';

CREATE INDEX payments_id_idx ON payments.payments (id DESC);

COMMENT ON COLUMN payments.invoices.attempt_payments IS 'The payment of every attempt, in order: an earlier attempt that succeeds late still pays the invoice, or is refunded when another already did (or the invoice is void).';

CREATE FUNCTION payments._locked_for_billing(p_id text) RETURNS payments.subscriptions
LANGUAGE plpgsql AS $$
DECLARE
    v_customer text;
    v_payments text[];
BEGIN
    -- In the order an invoice payment's news takes them (the payment, its invoice, the
    -- subscription), so a call that may settle or stop invoices never deadlocks with it.
    SELECT s.customer_id INTO v_customer FROM payments.subscriptions s WHERE s.id = p_id;
    SELECT array_agg(i.payment_id) INTO v_payments FROM payments.invoices i
    WHERE i.customer_id = v_customer AND i.subscription_id = p_id AND i.status = 'open' AND i.payment_id IS NOT NULL;
    PERFORM 1 FROM payments.payments p WHERE p.customer_id = v_customer AND p.id = ANY (v_payments) ORDER BY p.id FOR UPDATE;
    PERFORM 1 FROM payments.invoices i
    WHERE i.customer_id = v_customer AND i.subscription_id = p_id AND i.status = 'open' ORDER BY i.id FOR UPDATE;
    RETURN payments._locked_subscription(p_id);
END
$$;

COMMENT ON FUNCTION payments._locked_for_billing(text) IS
    'Internal: a subscription by id with its row locked, after the payments of its open invoices and those invoices (the order their payments'' news locks them); PM204 when unknown.';

CREATE FUNCTION payments.set_webhook_endpoint_limit(lim integer) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF lim IS NULL OR lim NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'the limit is 1 to 1000 endpoints' USING ERRCODE = 'PM100';
    END IF;
    INSERT INTO payments.settings (webhook_tolerance, webhook_endpoint_limit) VALUES (payments.webhook_tolerance(), lim)
    ON CONFLICT (singleton) DO UPDATE SET webhook_endpoint_limit = excluded.webhook_endpoint_limit,
                                          updated_at = excluded.updated_at;
    RETURN lim;
END
$$;

COMMENT ON FUNCTION payments.set_webhook_endpoint_limit(integer) IS
    'Sets how many enabled webhook endpoints there may be (admin; 1 to 1000, default 16).';

-- API keys bound to one customer.
ALTER TABLE payments.api_keys ADD COLUMN customer_id text COLLATE "C" CHECK (length(customer_id) BETWEEN 1 AND 255);

COMMENT ON COLUMN payments.api_keys.scopes IS 'payments:read (GET routes), payments:write (POST routes), webhooks:manage (webhook endpoints), payments:admin (a reconciliation''s repair).';

COMMENT ON COLUMN payments.api_keys.customer_id IS 'The one customer the key acts for (an agent or an app of that customer): it sees and acts on that customer''s objects only, others'' are answered as missing; platform-wide routes refuse it. NULL: a platform key.';

DROP FUNCTION payments.create_api_key(text, text[]);
CREATE FUNCTION payments.create_api_key(name text, scopes text[], customer_id text DEFAULT NULL)
RETURNS TABLE (id text, api_key text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id  text := payments._new_id('key');
    v_key text := payments._new_token('sk_pay');
BEGIN
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION 'name is required' USING ERRCODE = 'PM100';
    END IF;
    IF scopes IS NULL OR cardinality(scopes) = 0 OR NOT payments._all_allowed('api_key_scope', scopes) THEN
        RAISE EXCEPTION 'scopes must be a non-empty subset of {%}',
            (SELECT string_agg(v.value, ', ') FROM payments.allowed_values() v WHERE v.kind = 'api_key_scope')
            USING ERRCODE = 'PM100';
    END IF;
    IF length(customer_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'customer_id must be 1 to 255 characters' USING ERRCODE = 'PM100';
    END IF;
    INSERT INTO payments.api_keys (id, name, key_hash, scopes, customer_id)
    VALUES (v_id, name, sha256(convert_to(v_key, 'UTF8')), scopes, create_api_key.customer_id);
    RETURN QUERY SELECT v_id, v_key;
END
$$;

COMMENT ON FUNCTION payments.create_api_key(text, text[], text) IS
    'Creates a gateway API key with the given scopes, bound to one customer when customer_id is given, and returns it. The key is shown only this once; only its sha256 is kept.';

CREATE FUNCTION payments.bind_role_to_customer(role_name name, customer_id text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_role pg_catalog.pg_roles%ROWTYPE;
BEGIN
    SELECT * INTO v_role FROM pg_catalog.pg_roles r WHERE r.rolname = bind_role_to_customer.role_name;
    IF NOT FOUND OR customer_id IS NULL OR length(customer_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'role % does not exist, or customer_id is not 1 to 255 characters',
            quote_ident(coalesce(role_name, '')) USING ERRCODE = 'PM100';
    END IF;
    -- On Citus the row-level policies do not reach the shards, and readers select the
    -- tables there: a binding could not be kept, so none is made.
    IF EXISTS (SELECT FROM pg_catalog.pg_extension e WHERE e.extname = 'citus') THEN
        RAISE EXCEPTION 'logins cannot be bound to a customer on Citus yet: its shards do not apply row-level policies'
            USING ERRCODE = '0A000', HINT = 'bind an API key to the customer instead (create_api_key(…, customer_id))';
    END IF;
    -- A bound login reads; a role that may do more would reach past its customer.
    IF v_role.rolsuper OR v_role.rolbypassrls
       OR pg_catalog.pg_has_role(v_role.oid, 'payments_admin', 'MEMBER')
       OR pg_catalog.pg_has_role(v_role.oid, 'payments_gateway', 'MEMBER')
       OR pg_catalog.pg_has_role(v_role.oid, 'payments_worker', 'MEMBER') THEN
        RAISE EXCEPTION 'role % may do more than read: only a reader (payments_reader) can be bound to a customer',
            quote_ident(role_name) USING ERRCODE = 'PM100';
    END IF;
    INSERT INTO payments.role_customers AS c (role_name, customer_id)
    VALUES (bind_role_to_customer.role_name, bind_role_to_customer.customer_id)
    ON CONFLICT ON CONSTRAINT role_customers_pkey DO UPDATE SET customer_id = excluded.customer_id, bound_at = excluded.bound_at;
    EXECUTE pg_catalog.format('GRANT payments_bound TO %I', role_name);
    RETURN true;
END
$$;

COMMENT ON FUNCTION payments.bind_role_to_customer(name, text) IS
    'Binds a login role to one customer (admin): connected as it, every reader view and customer table (row-level policies) and every read function shows that customer''s rows only, and another customer''s object is not found. Only a reader can be bound (PM100 for a superuser, a role that bypasses row-level security, or a member of payments_admin, payments_gateway or payments_worker). Binding again moves it to another customer.';

CREATE FUNCTION payments.unbind_role(role_name name) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM payments.role_customers c WHERE c.role_name = unbind_role.role_name;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = unbind_role.role_name) THEN
        EXECUTE pg_catalog.format('REVOKE payments_bound FROM %I', role_name);
    END IF;
    RETURN true;
END
$$;

COMMENT ON FUNCTION payments.unbind_role(name) IS 'Lifts a login role''s binding to a customer (admin); false when it was not bound.';

CREATE TABLE payments.usage_daily (
    customer_id  text COLLATE "C" NOT NULL,
    meter        text COLLATE "C" NOT NULL,
    day          date NOT NULL,
    stripe       smallint NOT NULL CHECK (stripe BETWEEN 0 AND 15),
    quantity     numeric NOT NULL,
    events       bigint NOT NULL,
    max_quantity numeric NOT NULL,
    PRIMARY KEY (customer_id, meter, day, stripe)
);

COMMENT ON TABLE payments.usage_daily IS
    'A running total of usage_events per customer, meter and UTC day, kept by record_usage in the same transaction so that the usage a subscription will bill is bounded without reading every event. Not history: the events are; rebuilt from them by the upgrade. Each day is split in 16 stripes (by server process) so that concurrent recorders of one customer rarely wait on one row; readers add the stripes up. On Citus beside the customer''s usage events.';

COMMENT ON COLUMN payments.usage_daily.day IS 'The UTC day the events occurred on.';

COMMENT ON COLUMN payments.usage_daily.stripe IS 'Which of the day''s 16 rows the recording server process adds to (its process id modulo 16).';

COMMENT ON COLUMN payments.usage_daily.quantity IS 'The sum of the events'' quantities.';

COMMENT ON COLUMN payments.usage_daily.events IS 'How many events (a bound of count and count_unique meters).';

COMMENT ON COLUMN payments.usage_daily.max_quantity IS 'The largest quantity (a bound of max and last meters).';
SELECT pg_catalog.pg_extension_config_dump('payments.usage_daily', '');
-- The running totals of the usage recorded before the upgrade.
INSERT INTO payments.usage_daily (customer_id, meter, day, stripe, quantity, events, max_quantity)
SELECT u.customer_id, u.meter, (u.occurred_at AT TIME ZONE 'UTC')::date, 0, sum(u.quantity), count(*), max(u.quantity)
FROM payments.usage_events u GROUP BY 1, 2, 3;
GRANT SELECT ON payments.usage_daily TO payments_admin;

CREATE FUNCTION payments._pending_usage_problem(p_customer_id text, p_meter text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_sub     payments.subscriptions%ROWTYPE;
    v_plan    payments.plans%ROWTYPE;
    v_metered jsonb;
    v_meter   payments.meters%ROWTYPE;
    v_bound   numeric;
    v_total   numeric;
BEGIN
    SELECT s.* INTO v_sub FROM payments.meter_claims c
    JOIN payments.subscriptions s ON s.customer_id = c.customer_id AND s.id = c.subscription_id
    WHERE c.customer_id = p_customer_id AND c.meter = p_meter;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO v_plan FROM payments.plans p WHERE p.code = v_sub.plan;
    v_total := v_plan.amount_minor;
    -- A meter's value since usage_from is at most what its daily totals from that UTC day
    -- on add up to; priced as billing will, with the fee, they must fit in one payment.
    FOR v_metered IN SELECT value FROM jsonb_array_elements(v_plan.metered) LOOP
        SELECT * INTO v_meter FROM payments.meters m WHERE m.code = v_metered ->> 'meter';
        SELECT CASE v_meter.aggregation WHEN 'sum' THEN coalesce(sum(d.quantity), 0)
                                        WHEN 'count' THEN coalesce(sum(d.events), 0)
                                        WHEN 'count_unique' THEN coalesce(sum(d.events), 0)
                                        ELSE coalesce(max(d.max_quantity), 0) END
        INTO v_bound
        FROM payments.usage_daily d
        WHERE d.customer_id = p_customer_id AND d.meter = v_meter.code
          AND d.day >= (v_sub.usage_from AT TIME ZONE 'UTC')::date;
        v_total := v_total + coalesce(payments._usage_price(v_bound::text, (v_metered -> 'price')::text), 1e12);
    END LOOP;
    IF v_total > 999999999999 THEN
        RETURN 'the usage of subscription ' || v_sub.id || ' since ' || (v_sub.usage_from AT TIME ZONE 'UTC')::date
               || ' would price its next invoice above what one payment can charge (plan ' || v_plan.code || ')';
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION payments._pending_usage_problem(text, text) IS
    'Internal: why the usage a customer has recorded cannot be billed, or NULL: the next invoice of the subscription billing p_meter (its fee and each meter''s usage since the UTC day of usage_from, bounded by usage_daily and priced at the plan) would be more than one payment can charge. record_usage asks it after each new event, so an oversized total is refused when recorded, not when billed; concurrent recorders see each other''s usage once committed, and billing isolates what slips through.';

-- ---------------------------------------------------------------------------
-- Privileges of the new functions and tables (as sql/roles.sql grants them)
-- ---------------------------------------------------------------------------
-- As sql/roles.sql: nothing of the schema is PUBLIC's; each role is granted what it needs.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA payments FROM PUBLIC;
REVOKE ALL ON payments.provider_commands, payments.refunds, payments.disputes, payments.refund_details,
    payments.dispute_details, payments.customer_balances, payments.balance_by_currency, payments.provider_snapshots,
    payments.reconciliation_runs, payments.meters, payments.usage_events, payments.usage_log, payments.plans,
    payments.subscriptions, payments.subscription_events, payments.feature_usage, payments.consumptions,
    payments.subscription_details, payments.billing_settings, payments.invoice_numbers, payments.invoices,
    payments.invoice_lines, payments.invoice_details FROM PUBLIC;
GRANT SELECT ON payments.provider_commands, payments.refunds, payments.disputes, payments.provider_snapshots,
    payments.reconciliation_runs, payments.usage_events, payments.subscriptions, payments.subscription_events,
    payments.feature_usage, payments.consumptions, payments.billing_settings, payments.invoice_numbers,
    payments.invoices, payments.invoice_lines TO payments_admin;
GRANT SELECT ON payments.meters, payments.usage_log, payments.plans, payments.subscription_details,
    payments.invoice_details, payments.billing_failures
TO payments_admin, payments_gateway, payments_reader;
GRANT EXECUTE ON FUNCTION payments.create_meter(text, text, text, text),
    payments.create_plan(text, text, numeric, text, integer, integer, jsonb, text, jsonb, numeric), payments.archive_plan(text),
    payments.set_dunning(integer[], text, interval)
TO payments_admin;
GRANT SELECT ON payments.refund_details, payments.dispute_details, payments.customer_balances, payments.balance_by_currency
TO payments_admin, payments_gateway, payments_reader;
GRANT EXECUTE ON FUNCTION
    payments.get_refund(text), payments.list_refunds(text, int, text),
    payments.get_dispute(text), payments.list_disputes(text, text, int, text),
    payments.reconciliation_report(timestamptz, timestamptz, text),
    payments.reconciliation_window(timestamptz, timestamptz),
    payments.usage_summary(text, text, timestamptz, timestamptz),
    payments.get_subscription(text), payments.list_subscriptions(text, text, int, text),
    payments.has_active_subscription(text, text, timestamptz),
    payments.customer_has_paid(text, timestamptz), payments.entitlements(text, timestamptz),
    payments.get_invoice(text), payments.list_invoice_lines(text), payments.receipt(text)
TO payments_admin, payments_gateway, payments_reader;
GRANT EXECUTE ON FUNCTION
    payments.create_payment(text, text, numeric, text, text, text, jsonb, text),
    payments.transition(text, text, text, text, jsonb),
    payments.record_provider_result(text, text, text, text, jsonb),
    payments.capture_payment(text, numeric),
    payments.cancel_payment(text, text),
    payments.cancel_expired_authorizations(interval, timestamptz, text),
    payments.claim_provider_commands(int, interval, text, text),
    payments.record_command_result(text, boolean, text, jsonb, text),
    payments.create_refund(text, text, numeric, text),
    payments.record_provider_snapshot(text, jsonb),
    payments.reconcile(timestamptz, timestamptz, text, boolean),
    payments.record_usage(text, text, text, numeric, timestamptz, jsonb),
    payments.record_usage_batch(jsonb),
    payments.create_subscription(text, text, text, text, integer, timestamptz),
    payments.cancel_subscription(text, boolean, timestamptz),
    payments.pause_subscription(text), payments.resume_subscription(text, timestamptz),
    payments.consume(text, text, numeric, text, timestamptz),
    payments.run_billing(timestamptz),
    payments.set_subscription_payment_method(text, text),
    payments.change_plan(text, text, boolean, timestamptz)
TO payments_admin, payments_gateway;
REVOKE ALL ON payments.payment_customers, payments.provider_payments FROM PUBLIC;
GRANT EXECUTE ON FUNCTION payments.distribute(int) TO payments_admin;
GRANT EXECUTE ON FUNCTION payments._webhook_log() TO payments_admin, payments_gateway, payments_reader;
-- Made anew above.
REVOKE ALL ON FUNCTION payments.get_payment(text), payments.list_payments(text, text, int, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION payments.get_payment(text), payments.list_payments(text, text, int, text)
TO payments_admin, payments_gateway, payments_reader;
REVOKE ALL ON payments.payment_details, payments.customer_payments, payments.open_anomalies, payments.webhook_log
FROM PUBLIC;
GRANT SELECT ON payments.payment_details, payments.customer_payments, payments.open_anomalies, payments.webhook_log
TO payments_admin, payments_gateway, payments_reader;
GRANT SELECT ON payments.payment_customers, payments.provider_payments TO payments_admin;
-- Events out to apps, threshold billing.
REVOKE ALL ON FUNCTION
    payments._new_webhook_secret(), payments._emit(text, text, text, text, text, boolean, jsonb),
    payments._refund_event(payments.refunds, text, text), payments._dispute_event(payments.disputes, text, text),
    payments._invoice_event(payments.invoices, text),
    payments._usage_lines(payments.subscriptions, payments.plans, timestamptz, timestamptz),
    payments.add_webhook_endpoint(text, text[], text), payments.remove_webhook_endpoint(text),
    payments.webhook_retries(), payments.set_webhook_retries(interval[]),
    payments.claim_webhook_deliveries(int, interval, int, jsonb),
    payments.record_webhook_delivery(text, text, text, integer, integer, text, integer)
FROM PUBLIC;
REVOKE ALL ON payments.outbox_events, payments.webhook_endpoints, payments.webhook_endpoint_secrets,
    payments.webhook_deliveries, payments.webhook_delivery_attempts, payments.event_log, payments.webhook_delivery_log
FROM PUBLIC;
GRANT SELECT ON payments.outbox_events, payments.webhook_endpoints, payments.webhook_endpoint_secrets,
    payments.webhook_deliveries, payments.webhook_delivery_attempts, payments.event_log, payments.webhook_delivery_log
TO payments_admin;
GRANT SELECT ON payments.event_log, payments.webhook_delivery_log, payments.webhook_endpoint_list,
    payments.webhook_delivery_attempts
TO payments_gateway, payments_reader;
GRANT SELECT ON payments.webhook_endpoint_list TO payments_admin;
GRANT EXECUTE ON FUNCTION payments._webhook_endpoints() TO payments_admin, payments_gateway, payments_reader;
GRANT EXECUTE ON FUNCTION payments.set_webhook_endpoint_limit(integer) TO payments_admin;
GRANT EXECUTE ON FUNCTION payments.create_api_key(text, text[], text) TO payments_admin;
GRANT EXECUTE ON FUNCTION payments.authenticate_api_key(text) TO payments_admin, payments_gateway;
GRANT EXECUTE ON FUNCTION payments.webhook_retries() TO payments_admin, payments_gateway, payments_reader;
GRANT EXECUTE ON FUNCTION
    payments.add_webhook_endpoint(text, text[], text), payments.remove_webhook_endpoint(text)
TO payments_admin, payments_gateway;
-- Only the delivery worker reads the endpoints' secrets (claim_webhook_deliveries returns them).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'payments_worker') THEN
        CREATE ROLE payments_worker NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA payments TO payments_worker;
GRANT EXECUTE ON FUNCTION
    payments.claim_webhook_deliveries(int, interval, int, jsonb),
    payments.record_webhook_delivery(text, text, text, integer, integer, text, integer)
TO payments_admin, payments_worker;
GRANT EXECUTE ON FUNCTION payments.set_webhook_retries(interval[]) TO payments_admin;
REVOKE ALL ON FUNCTION payments._notifying(), payments.set_event_notifications(boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION payments.set_event_notifications(boolean) TO payments_admin;

-- The metadata check as PL/pgSQL (its query planned once per session, not per call).
CREATE OR REPLACE FUNCTION payments._metadata_problem(p_metadata jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_keys     integer := 0;
    v_bad_key  boolean := false;
    v_nested   boolean := false;
    v_too_long boolean := false;
    v_entry    record;
BEGIN
    -- PL/pgSQL, not one SQL expression: a SQL function with subqueries is planned
    -- anew on every call (180 µs of create_payment's time), this one's query once.
    IF jsonb_typeof(p_metadata) IS DISTINCT FROM 'object' THEN
        RETURN 'metadata must be a JSON object';
    END IF;
    IF p_metadata = '{}' THEN
        RETURN NULL;  -- most calls: no query at all
    END IF;
    FOR v_entry IN SELECT e.key, e.value FROM pg_catalog.jsonb_each(p_metadata) e LOOP
        v_keys := v_keys + 1;
        v_bad_key := v_bad_key OR length(v_entry.key) NOT BETWEEN 1 AND 40;
        v_nested := v_nested OR jsonb_typeof(v_entry.value) IN ('object', 'array');
        v_too_long := v_too_long OR coalesce(length(v_entry.value #>> '{}') > 500, false);
    END LOOP;
    RETURN CASE
        WHEN v_keys > 50 THEN 'metadata has more than 50 keys'
        WHEN v_bad_key THEN 'metadata keys must be 1 to 40 characters'
        WHEN v_nested THEN 'metadata values must be strings, numbers, booleans or null, not objects or arrays'
        WHEN v_too_long THEN 'metadata values must be at most 500 characters'
    END;
END
$$;

-- Usage and webhook events no longer lock a shared meter or secret row each (a MultiXact per transaction).
ALTER TABLE payments.webhook_events DROP CONSTRAINT webhook_events_secret_id_fkey;
COMMENT ON COLUMN payments.webhook_events.secret_id IS
    'The secret that verified it (payments.webhook_secrets; secrets are retired, never deleted). No foreign key: checking one locks the provider''s shared secret row in every ingesting transaction, and concurrent lockers of one row cost a MultiXact each.';

-- ---------------------------------------------------------------------------
-- The dashboard's users and sessions (sql/dashboard.sql), and the Rust it calls
-- ---------------------------------------------------------------------------
CREATE FUNCTION payments."_password_hash"(
	"password" TEXT /* & str */
) RETURNS TEXT /* String */
STRICT VOLATILE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'password_hash_wrapper';
CREATE FUNCTION payments."_password_matches"(
	"hash" TEXT, /* Option < & str > */
	"password" TEXT /* & str */
) RETURNS bool /* bool */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'password_matches_wrapper';
CREATE FUNCTION payments."_password_problem"(
	"password" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'password_problem_wrapper';

-- payments: the people who sign in to the gateway's web dashboard, and their
-- sessions. Passwords are Argon2id hashes made and checked inside the
-- extension (payments-core's password.rs); session tokens are kept as sha256
-- only, as API keys are. The dashboard reads and acts through the same
-- functions and views as every other client; what a role may do is the
-- gateway's check, made against the role stored here.

CREATE TABLE payments.dashboard_users (
    id            text COLLATE "C" PRIMARY KEY,
    email         text NOT NULL UNIQUE
                  CHECK (email = lower(email) AND email ~ '^[^@[:space:]]+@[^@[:space:]]+$' AND length(email) <= 254),
    role          text NOT NULL CHECK (payments._is_allowed('dashboard_role', role)),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz
);
COMMENT ON TABLE payments.dashboard_users IS
    'People who sign in to the dashboard: viewer (reads every page) or operator (may also refund, capture and cancel). Only an Argon2id hash of a password is kept.';
SELECT pg_catalog.pg_extension_config_dump('payments.dashboard_users', '');

CREATE TABLE payments.dashboard_sessions (
    token_hash bytea PRIMARY KEY,
    user_id    text NOT NULL REFERENCES payments.dashboard_users (id),
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    ended_at   timestamptz
);
CREATE INDEX dashboard_sessions_user_idx ON payments.dashboard_sessions (user_id);
COMMENT ON TABLE payments.dashboard_sessions IS
    'Signed-in dashboard sessions by the sha256 of their cookie, with the token every form must carry (CSRF). Sessions are not history: expired ones are deleted at the next sign-in of their user.';

-- The dashboard's date windows (overview, payments by date) over a table that
-- only grows: a BRIN index is a few pages and costs an insert almost nothing.
CREATE INDEX payments_created_at_brin_idx ON payments.payments USING brin (created_at);

CREATE FUNCTION payments._dashboard_email(p_email text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_email text := lower(btrim(p_email));
BEGIN
    IF v_email IS NULL OR v_email !~ '^[^@[:space:]]+@[^@[:space:]]+$' OR length(v_email) > 254 THEN
        RAISE EXCEPTION 'email must look like name@domain (at most 254 characters)' USING ERRCODE = 'PM100';
    END IF;
    RETURN v_email;
END
$$;
COMMENT ON FUNCTION payments._dashboard_email(text) IS
    'Internal: a dashboard user''s email as stored (trimmed, lower case), or PM100.';

CREATE FUNCTION payments._dashboard_password(p_password text) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_problem text := payments._password_problem(p_password);
BEGIN
    IF p_password IS NULL OR v_problem IS NOT NULL THEN
        RAISE EXCEPTION '%', coalesce(v_problem, 'password is required') USING ERRCODE = 'PM100';
    END IF;
    RETURN payments._password_hash(p_password);
END
$$;
COMMENT ON FUNCTION payments._dashboard_password(text) IS
    'Internal: the Argon2id hash of a password that meets the rules (12 characters to 1024 bytes), or PM100.';

CREATE FUNCTION payments.create_dashboard_user(email text, role text, password text DEFAULT NULL)
RETURNS TABLE (user_id text, user_email text, user_role text, generated_password text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_email    text := payments._dashboard_email(create_dashboard_user.email);
    v_password text := coalesce(create_dashboard_user.password, payments._new_token('pw'));
    v_id       text := payments._new_id('dbu');
    v_hash     text;
BEGIN
    IF role IS NULL OR NOT payments._is_allowed('dashboard_role', role) THEN
        RAISE EXCEPTION 'role must be viewer or operator' USING ERRCODE = 'PM100';
    END IF;
    v_hash := payments._dashboard_password(v_password);
    INSERT INTO payments.dashboard_users (id, email, role, password_hash)
    VALUES (v_id, v_email, role, v_hash)
    ON CONFLICT ON CONSTRAINT dashboard_users_email_key DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'a dashboard user with email % exists', payments._shown(v_email) USING ERRCODE = 'PM100',
            HINT = 'payments.reset_dashboard_password(email) gives it a new password';
    END IF;
    RETURN QUERY SELECT v_id, v_email, role,
        CASE WHEN create_dashboard_user.password IS NULL THEN v_password END;
END
$$;
COMMENT ON FUNCTION payments.create_dashboard_user(text, text, text) IS
    'Creates a dashboard user: role viewer (reads) or operator (may also refund, capture and cancel). Without a password one is generated and returned, this once; a chosen one (12 characters or more) is not echoed. Only its Argon2id hash is kept. PM100 for a bad email or role, a short password, or an email already taken.';

CREATE FUNCTION payments.reset_dashboard_password(email text, password text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_password text := coalesce(reset_dashboard_password.password, payments._new_token('pw'));
    v_hash     text := payments._dashboard_password(v_password);
    v_user     text;
BEGIN
    UPDATE payments.dashboard_users u SET password_hash = v_hash, disabled_at = NULL
    WHERE u.email = payments._dashboard_email(reset_dashboard_password.email)
    RETURNING u.id INTO v_user;
    IF v_user IS NULL THEN
        RAISE EXCEPTION 'no dashboard user with email %', payments._shown(email) USING ERRCODE = 'PM204';
    END IF;
    UPDATE payments.dashboard_sessions s SET ended_at = now() WHERE s.user_id = v_user AND s.ended_at IS NULL;
    RETURN CASE WHEN reset_dashboard_password.password IS NULL THEN v_password END;
END
$$;
COMMENT ON FUNCTION payments.reset_dashboard_password(text, text) IS
    'Gives a dashboard user a new password (generated and returned when none is given), enables the user again and ends every session of theirs. PM204 for an unknown email.';

CREATE FUNCTION payments.disable_dashboard_user(email text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_user text;
BEGIN
    UPDATE payments.dashboard_users u SET disabled_at = now()
    WHERE u.email = payments._dashboard_email(disable_dashboard_user.email) AND u.disabled_at IS NULL
    RETURNING u.id INTO v_user;
    UPDATE payments.dashboard_sessions s SET ended_at = now() WHERE s.user_id = v_user AND s.ended_at IS NULL;
    RETURN v_user IS NOT NULL;
END
$$;
COMMENT ON FUNCTION payments.disable_dashboard_user(text) IS
    'Stops a dashboard user from signing in and ends their sessions at once. false if unknown or already disabled.';

CREATE FUNCTION payments.dashboard_sign_in(email text, password text, ttl interval DEFAULT '12 hours')
RETURNS TABLE (session_token text, csrf_token text, user_id text, user_email text, user_role text,
               expires_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_user  payments.dashboard_users;
    v_token text;
    v_csrf  text;
BEGIN
    IF ttl IS NULL OR ttl NOT BETWEEN interval '1 minute' AND interval '30 days' THEN
        RAISE EXCEPTION 'ttl is 1 minute to 30 days' USING ERRCODE = 'PM100';
    END IF;
    SELECT * INTO v_user FROM payments.dashboard_users u
    WHERE u.email = lower(btrim(dashboard_sign_in.email)) AND u.disabled_at IS NULL;
    -- An unknown email is checked against a decoy hash: as slow as a wrong password.
    IF NOT payments._password_matches(v_user.password_hash, coalesce(dashboard_sign_in.password, '')) THEN
        RAISE EXCEPTION 'email or password is wrong' USING ERRCODE = 'PM110';
    END IF;
    DELETE FROM payments.dashboard_sessions s WHERE s.user_id = v_user.id AND s.expires_at < now();
    v_token := payments._new_token('dsh');
    v_csrf := payments._new_token('csrf');
    INSERT INTO payments.dashboard_sessions (token_hash, user_id, csrf_token, expires_at)
    VALUES (sha256(convert_to(v_token, 'UTF8')), v_user.id, v_csrf, now() + ttl);
    RETURN QUERY SELECT v_token, v_csrf, v_user.id, v_user.email, v_user.role, now() + ttl;
END
$$;
COMMENT ON FUNCTION payments.dashboard_sign_in(text, text, interval) IS
    'Checks a dashboard user''s email and password and opens a session: its token (the cookie; only its sha256 is kept), the token forms must carry against cross-site requests, the user and role, and when it ends. PM110 when the email or password is wrong or the user is disabled, the same answer for each so it tells nothing.';

CREATE FUNCTION payments.dashboard_session(session_token text)
RETURNS TABLE (user_id text, user_email text, user_role text, csrf_token text, expires_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    SELECT u.id, u.email, u.role, s.csrf_token, s.expires_at
    FROM payments.dashboard_sessions s
    JOIN payments.dashboard_users u ON u.id = s.user_id
    WHERE s.token_hash = sha256(convert_to(dashboard_session.session_token, 'UTF8'))
      AND s.ended_at IS NULL AND s.expires_at > now() AND u.disabled_at IS NULL;
END
$$;
COMMENT ON FUNCTION payments.dashboard_session(text) IS
    'The user, role and form token of a live session (not ended, not expired, user not disabled); no row otherwise.';

CREATE FUNCTION payments.dashboard_sign_out(session_token text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE payments.dashboard_sessions s SET ended_at = now()
    WHERE s.token_hash = sha256(convert_to(dashboard_sign_out.session_token, 'UTF8')) AND s.ended_at IS NULL;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION payments.dashboard_sign_out(text) IS 'Ends a session at once. false if it was unknown or already ended.';

REVOKE ALL ON FUNCTION
    payments._password_hash(text), payments._password_matches(text, text), payments._password_problem(text),
    payments._dashboard_email(text), payments._dashboard_password(text),
    payments.create_dashboard_user(text, text, text), payments.reset_dashboard_password(text, text),
    payments.disable_dashboard_user(text), payments.dashboard_sign_in(text, text, interval),
    payments.dashboard_session(text), payments.dashboard_sign_out(text)
FROM PUBLIC;
REVOKE ALL ON payments.dashboard_users, payments.dashboard_sessions FROM PUBLIC;
GRANT SELECT ON payments.dashboard_users, payments.dashboard_sessions TO payments_admin;
GRANT EXECUTE ON FUNCTION payments.dashboard_sign_in(text, text, interval), payments.dashboard_session(text),
    payments.dashboard_sign_out(text)
TO payments_admin, payments_gateway;
GRANT EXECUTE ON FUNCTION payments.create_dashboard_user(text, text, text),
    payments.reset_dashboard_password(text, text), payments.disable_dashboard_user(text)
TO payments_admin;

-- ---------------------------------------------------------------------------
-- Views with their reader's rights, and logins bound to one customer (as roles.sql)
-- ---------------------------------------------------------------------------
-- The views read with their reader's rights (security_invoker), so that the customer tables'
-- row-level policies apply to whoever reads: the readers and the gateway may select the
-- columns the views show, found in the catalog (each view's dependencies), and no other
-- (fingerprints, idempotency keys and the webhook log's bodies stay private).
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT DISTINCT t.oid::regclass AS tab, a.attname
        FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid AND d.classid = 'pg_catalog.pg_rewrite'::regclass
        JOIN pg_catalog.pg_class v ON v.oid = r.ev_class AND v.relkind = 'v'
        JOIN pg_catalog.pg_class t ON t.oid = d.refobjid AND d.refclassid = 'pg_catalog.pg_class'::regclass
                                  AND t.relkind = 'r' AND t.relnamespace = v.relnamespace
        JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
        WHERE v.relnamespace = 'payments'::regnamespace AND d.refobjsubid > 0
        ORDER BY 1, 2
    LOOP
        EXECUTE pg_catalog.format('GRANT SELECT (%I) ON %s TO payments_reader, payments_gateway', g.attname, g.tab);
    END LOOP;
END
$$;
GRANT EXECUTE ON FUNCTION payments._webhook_endpoints() TO payments_admin, payments_gateway, payments_reader;

-- Logins bound to one customer: every table with a customer_id (found in the catalog)
-- shows all its rows to everyone, except members of payments_bound, who see their
-- customer's only (a restrictive policy: it costs the other roles nothing). Policies
-- are security quals: a bound login's own functions in a WHERE never see other rows.
DO $$
DECLARE
    t regclass;
BEGIN
    FOR t IN
        SELECT c.oid::regclass FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = 'customer_id' AND NOT a.attisdropped
        WHERE n.nspname = 'payments' AND c.relkind = 'r' AND c.relname <> 'role_customers'
        ORDER BY c.relname
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
        EXECUTE pg_catalog.format('DROP POLICY IF EXISTS every_row ON %s', t);
        EXECUTE pg_catalog.format('CREATE POLICY every_row ON %s AS PERMISSIVE FOR SELECT TO PUBLIC USING (true)', t);
        EXECUTE pg_catalog.format('DROP POLICY IF EXISTS bound_customer ON %s', t);
        EXECUTE pg_catalog.format(
            'CREATE POLICY bound_customer ON %s AS RESTRICTIVE FOR SELECT TO payments_bound '
            'USING (customer_id = payments._bound_customer())', t);
    END LOOP;
END
$$;
-- Whoever reads a table or a view asks it (it answers only for the session's own login).
GRANT EXECUTE ON FUNCTION payments._bound_customer() TO PUBLIC;

REVOKE ALL ON FUNCTION payments.bind_role_to_customer(name, text), payments.unbind_role(name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION payments.bind_role_to_customer(name, text), payments.unbind_role(name) TO payments_admin;
GRANT SELECT ON payments.role_customers TO payments_admin;
