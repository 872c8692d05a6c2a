-- payments: the SQL API. Every function that changes data is SECURITY DEFINER
-- (callers hold no table privileges), pins search_path and qualifies every name.
-- Errors carry SQLSTATEs of class PM; the book's docs/src/errors.md lists them.
--
-- Every query names the customer of the rows it touches: on Citus
-- (payments.distribute()) that routes it to the one node holding them.
--
-- Lock order, for every path that changes a payment (docs/src/concepts.md, "Concurrency"):
-- the provider payment's row (_lock_provider_payment), then the payment row
-- (FOR UPDATE), then its history. Locks are row locks, taken where the rows
-- live, so they serialise on every node of a Citus cluster alike.

-- A quoted body, not RETURN: Citus copies the policies' functions to the workers, and
-- loses a SQL-standard body on the way.
CREATE OR REPLACE FUNCTION payments._bound_customer() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT c.customer_id FROM payments.role_customers c WHERE c.role_name = session_user $$;
COMMENT ON FUNCTION payments._bound_customer() IS
    'Internal: the customer the session''s login role is bound to (bind_role_to_customer), NULL when it is not. The customer tables'' row-level policies restrict bound logins to it, and the read functions check it (they see the same session user).';

-- ---------------------------------------------------------------------------
-- Append-only guard
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION payments._refuse_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION '% on %.% is not allowed: its rows are permanent history', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'PM205';
END
$$;
COMMENT ON FUNCTION payments._refuse_change() IS
    'Trigger function that refuses a change to append-only history, whoever asks (SQLSTATE PM205).';

CREATE OR REPLACE TRIGGER payment_events_append_only BEFORE UPDATE OR DELETE ON payments.payment_events
    FOR EACH ROW EXECUTE FUNCTION payments._refuse_change();
CREATE OR REPLACE TRIGGER payment_events_no_truncate BEFORE TRUNCATE ON payments.payment_events
    FOR EACH STATEMENT EXECUTE FUNCTION payments._refuse_change();
CREATE OR REPLACE TRIGGER payments_never_deleted BEFORE DELETE ON payments.payments
    FOR EACH ROW EXECUTE FUNCTION payments._refuse_change();
CREATE OR REPLACE TRIGGER payments_no_truncate BEFORE TRUNCATE ON payments.payments
    FOR EACH STATEMENT EXECUTE FUNCTION payments._refuse_change();

-- ---------------------------------------------------------------------------
-- Row shapes returned by the API
-- ---------------------------------------------------------------------------
CREATE OR REPLACE VIEW payments.payment_details WITH (security_invoker) AS
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
COMMENT ON TYPE payments.payment_result IS
    'A payment as a mutating call leaves it, plus outcome: created | replayed (create_payment), applied | noop | stale (transition, record_provider_result), mismatch (record_provider_result: the provider''s object asked for other money; an anomaly was recorded, nothing applied), queued (capture_payment, cancel_payment: the provider call waits for the gateway).';

-- ---------------------------------------------------------------------------
-- Money
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION payments.to_minor(amount numeric, currency text) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    minor bigint := payments._to_minor(amount, currency);
    err text[];
BEGIN
    IF minor IS NULL THEN
        IF currency IS NULL THEN
            RAISE EXCEPTION 'currency is required' USING ERRCODE = 'PM100';
        END IF;
        -- The currency is judged first, so a bad one is named even without an amount.
        err := payments._money_error(coalesce(amount, 1), currency);
        IF err IS NULL THEN
            RAISE EXCEPTION 'amount is required' USING ERRCODE = 'PM100';
        END IF;
        RAISE EXCEPTION USING ERRCODE = err[1], MESSAGE = err[2], HINT = coalesce(err[3], '');
    END IF;
    RETURN minor;
END
$$;
COMMENT ON FUNCTION payments.to_minor(numeric, text) IS
    'Exact minor units of a major-unit amount: to_minor(49.99, ''usd'') = 4999. Excess precision (PM101), zero or negative (PM102), an unknown currency (PM103) and amounts above 999,999,999,999 minor units (PM104) are errors, never rounded.';
COMMENT ON FUNCTION payments.to_major(bigint, text) IS
    'Minor units as a major-unit numeric at the currency''s scale: to_major(4999, ''USD'') = 49.99. NULL for an unknown currency.';
COMMENT ON FUNCTION payments.currencies() IS 'The accepted ISO 4217 currencies and their minor-unit exponents.';
COMMENT ON FUNCTION payments._to_minor(numeric, text) IS 'Internal: minor units, or NULL when invalid (to_minor raises the reason).';
COMMENT ON FUNCTION payments._money_error(numeric, text) IS 'Internal: {sqlstate, message, hint} of an invalid amount, NULL when valid.';

-- ---------------------------------------------------------------------------
-- State machine and audit trail (internal)
-- ---------------------------------------------------------------------------
COMMENT ON FUNCTION payments.statuses() IS 'Every payment status with its lifecycle rank and whether it is final.';
COMMENT ON FUNCTION payments.allowed_transitions() IS 'The state machine: every allowed (from_status, to_status) edge. Anything else is refused.';
COMMENT ON FUNCTION payments._transition_decision(text, text, text) IS
    'Internal: apply | noop | ignore (the report is stale) | forbidden for a requested transition; NULL for an unknown status or source. These words never change: released scripts depend on them.';
COMMENT ON FUNCTION payments._initial_status(boolean) IS 'Internal: the status a new payment starts in, with or without a payment method.';
COMMENT ON FUNCTION payments.allowed_values() IS
    'Every closed set of values the extension stores or answers with (kind: status, source, capture_method, webhook_scheme, api_key_scope, outcome, webhook_result), from the same Rust table the CHECK constraints use.';
COMMENT ON FUNCTION payments._is_allowed(text, text) IS 'Internal: whether a value belongs to a kind of allowed_values(); used by CHECK constraints.';
COMMENT ON FUNCTION payments._all_allowed(text, text[]) IS 'Internal: whether every element of an array belongs to a kind of allowed_values().';
COMMENT ON FUNCTION payments._new_id(text) IS 'Internal: a new time-sortable id with the given prefix.';
COMMENT ON FUNCTION payments._event_hash(bytea, text, bigint, text, text, boolean, text, text, text, bigint) IS
    'Internal: sha256(prev_hash ‖ canonical event), the audit trail''s chain link.';
COMMENT ON FUNCTION payments._request_fingerprint(text, bigint, text, text, text, text, text) IS
    'Internal: sha256 of the canonical create_payment parameters an idempotency key binds.';

CREATE OR REPLACE FUNCTION payments._epoch_micros(ts timestamptz) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
RETURN (extract(epoch FROM ts) * 1000000)::bigint;
COMMENT ON FUNCTION payments._epoch_micros(timestamptz) IS 'Internal: a timestamp as exact Unix microseconds, as event hashes encode it.';

CREATE OR REPLACE FUNCTION payments._shown(p_input text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN length(p_input) <= 100 THEN p_input ELSE left(p_input, 100) || '…' END;
COMMENT ON FUNCTION payments._shown(text) IS
    'Internal: caller input as an error message quotes it, at most 100 characters, so no message (or log line) grows with the input.';

CREATE OR REPLACE FUNCTION payments._invoker() RETURNS name
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE WHEN current_setting('role') = 'none' THEN session_user ELSE current_setting('role')::name END;
COMMENT ON FUNCTION payments._invoker() IS
    'Internal: the role that called, seen from inside a SECURITY DEFINER function (SET ROLE''s role, else the session''s).';

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
COMMENT ON FUNCTION payments._metadata_problem(jsonb) IS
    'Internal: why metadata breaks Stripe''s limits (a flat object of at most 50 keys of 1 to 40 characters, scalar values of at most 500 characters), or NULL.';

-- PL/pgSQL, whose plans a session keeps: a SQL function with a subquery is parsed at every call.
CREATE OR REPLACE FUNCTION payments._citus() RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname = 'citus');
END
$$;
COMMENT ON FUNCTION payments._citus() IS
    'Internal: whether Citus is installed. Payments are then found by id through payment_customers (distributed by payment id, so one shard answers), and create_payment writes that route; on one node the index payments_id_idx finds them and no route is written.';

CREATE OR REPLACE FUNCTION payments._payment_customer(p_payment_id text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_customer text;
BEGIN
    IF payments._citus() THEN
        SELECT r.customer_id INTO v_customer FROM payments.payment_customers r WHERE r.payment_id = p_payment_id;
    ELSE
        SELECT p.customer_id INTO v_customer FROM payments.payments p WHERE p.id = p_payment_id;
    END IF;
    RETURN v_customer;
END
$$;
COMMENT ON FUNCTION payments._payment_customer(text) IS
    'Internal: the customer a payment id belongs to, or NULL for an unknown payment (payments._citus says where it looks).';

CREATE OR REPLACE FUNCTION payments._customer_of(p_payment_id text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_customer text := payments._payment_customer(p_payment_id);
BEGIN
    IF v_customer IS NULL THEN
        RAISE EXCEPTION 'payment % not found', payments._shown(p_payment_id) USING ERRCODE = 'PM204';
    END IF;
    RETURN v_customer;
END
$$;
COMMENT ON FUNCTION payments._customer_of(text) IS
    'Internal: the customer a payment id belongs to, or PM204 for an unknown payment.';

CREATE OR REPLACE FUNCTION payments._locked_payment(p_payment_id text) RETURNS payments.payments
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

CREATE OR REPLACE FUNCTION payments._append_event(p_customer_id text, p_payment_id text, p_from text, p_to text,
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

CREATE OR REPLACE FUNCTION payments._transition(p_customer_id text, p_payment_id text, p_to text, p_source text, p_reason text,
                                     p_data jsonb, p_last_error jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_from     text;
    v_capture  text;
    v_decision text;
    v_captured bigint;
    v_currency text;
    v_reason   text;
    v_invoice  boolean;
    v_top_up   boolean;
BEGIN
    SELECT p.status, p.capture_method, p.metadata ? 'invoice_id', p.metadata ? 'top_up'
    INTO v_from, v_capture, v_invoice, v_top_up FROM payments.payments p
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
        WHERE p.customer_id = p_customer_id AND p.id = p_payment_id
        RETURNING p.amount_captured_minor, p.currency INTO v_captured, v_currency;
        PERFORM payments._append_event(p_customer_id, p_payment_id, v_from, p_to, true, p_source, p_reason, p_data);
        -- The money the provider took is the platform's, held by the provider until paid out.
        IF p_to = 'succeeded' AND v_top_up THEN
            PERFORM payments._top_up_paid(p_customer_id, p_payment_id, v_currency, v_captured);
        ELSIF p_to = 'succeeded' THEN
            PERFORM payments._move(p_customer_id, 'payment', p_payment_id, v_currency, v_captured, 'provider_clearing',
                                   'revenue');
        END IF;
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
CREATE OR REPLACE FUNCTION payments._result(p_customer_id text, p_payment_id text, p_outcome text)
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
CREATE OR REPLACE FUNCTION payments._check_key_and_customer(p_key text, p_customer_id text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_key IS NULL OR length(p_key) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'idempotency_key must be 1 to 255 characters' USING ERRCODE = 'PM100';
    END IF;
    IF p_customer_id IS NULL OR length(p_customer_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'customer_id must be 1 to 255 characters' USING ERRCODE = 'PM100';
    END IF;
END
$$;
COMMENT ON FUNCTION payments._check_key_and_customer(text, text) IS
    'Internal: PM100 unless an idempotency key and a customer id are each 1 to 255 characters.';

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
    v_claimed  record;
BEGIN
    PERFORM payments._check_key_and_customer(idempotency_key, customer_id);
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

    -- The key is the payment row's own (unique per customer): a concurrent call with the
    -- same key blocks on this insert until the first transaction ends, then replays.
    v_status := payments._initial_status(payment_method IS NOT NULL);
    INSERT INTO payments.payments
        (id, customer_id, amount_minor, currency, status, capture_method, payment_method, description, metadata,
         idempotency_key, request_fingerprint)
    VALUES (v_id, customer_id, v_minor, v_currency, v_status, v_capture, payment_method, description, v_metadata,
            idempotency_key, v_fp)
    ON CONFLICT ON CONSTRAINT payments_idempotency_key DO NOTHING;

    IF FOUND THEN
        -- The route from a payment id to its customer is only a cluster's need (payments._citus).
        IF payments._citus() THEN
            INSERT INTO payments.payment_customers (payment_id, customer_id) VALUES (v_id, customer_id);
        END IF;
        PERFORM payments._append_event(customer_id, v_id, NULL, v_status, true, 'api', 'created',
                                       jsonb_build_object('idempotency_key', idempotency_key));
        RETURN QUERY SELECT * FROM payments._result(customer_id, v_id, 'created');
        RETURN;
    END IF;

    SELECT p.id AS payment_id, p.request_fingerprint AS fingerprint INTO v_claimed FROM payments.payments p
    WHERE p.customer_id = create_payment.customer_id AND p.idempotency_key = create_payment.idempotency_key;
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

CREATE OR REPLACE FUNCTION payments.get_payment(id text) RETURNS SETOF payments.payment_details
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

CREATE OR REPLACE FUNCTION payments.list_payments(customer_id text DEFAULT NULL, status text DEFAULT NULL,
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

CREATE OR REPLACE FUNCTION payments._lock_provider_payment(p_provider text, p_provider_payment_id text,
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

CREATE OR REPLACE FUNCTION payments._link_provider(p_customer_id text, p_payment_id text, p_provider text,
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

CREATE OR REPLACE FUNCTION payments._evidence_problem_for(p_customer_id text, p_payment_id text, p_to text, p_evidence jsonb,
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
                                                   p_evidence ->> 'amount', p_evidence ->> 'currency', NULL, NULL),
                        CASE WHEN (p_evidence ->> 'amount_received') IS DISTINCT FROM v_captured::text
                             THEN 'amount_received_mismatch' END);
    END IF;
    RETURN payments._evidence_problem(v_payment.amount_minor, v_payment.currency, p_to,
                                      p_evidence ->> 'amount', p_evidence ->> 'currency',
                                      p_evidence ->> 'amount_received', p_evidence ->> 'amount_capturable');
END
$$;
COMMENT ON FUNCTION payments._evidence_problem_for(text, text, text, jsonb, text, text) IS
    'Internal: why a payment''s evidence record (the given provider''s payment id) is no evidence for moving the payment to a status: another object than the one the payment is linked to, or other money (an anomaly kind); NULL when it is evidence. PM204 for an unknown payment.';
COMMENT ON FUNCTION payments._evidence_problem(bigint, text, text, text, text, text, text) IS
    'Internal: the anomaly kind when the money fields of a provider object (amount, currency, and amount_received for succeeded or amount_capturable for requires_capture) differ from the payment''s; NULL when they match.';

CREATE OR REPLACE FUNCTION payments._record_anomaly(p_customer_id text, p_payment_id text, p_kind text, p_source text,
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

CREATE OR REPLACE FUNCTION payments._observed(p_evidence jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN jsonb_strip_nulls(jsonb_build_object(
    'amount', p_evidence -> 'amount', 'currency', p_evidence -> 'currency', 'amount_received', p_evidence -> 'amount_received',
    'amount_capturable', p_evidence -> 'amount_capturable', 'status', p_evidence -> 'status'));
COMMENT ON FUNCTION payments._observed(jsonb) IS 'Internal: the money fields and status of an evidence record, as an anomaly keeps them.';

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
    -- A secret a browser confirms with (a PaymentIntent's client_secret) never enters the history.
    v_response jsonb := payments._provider_redacted(provider, coalesce(response, '{}'));
    v_evidence jsonb := coalesce(payments._provider_object(provider, 'payment', v_response), '{}');
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
        v_problem := payments._evidence_problem_for(v_customer, record_provider_result.payment_id, status, v_evidence,
                                                    provider, record_provider_result.provider_payment_id);
        IF v_problem IS NOT NULL THEN
            PERFORM payments._record_anomaly(v_customer, record_provider_result.payment_id, v_problem, 'provider',
                                             provider, record_provider_result.provider_payment_id,
                                             payments._observed(v_evidence));
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
        coalesce(v_evidence -> 'error', v_response -> 'error'));
    RETURN QUERY SELECT * FROM payments._result(v_customer, record_provider_result.payment_id, v_outcome);
END
$$;
COMMENT ON FUNCTION payments.record_provider_result(text, text, text, text, jsonb) IS
    'Records what the provider answered for a payment: links its provider id (once; PM203 if it belongs elsewhere), applies webhooks that arrived for that id before the link (in event order), and moves the status as a provider report (a late report is stale, not an error). The response is the provider''s payment object (read by its wire format, payments._provider_object): unless its amount and currency (and amount_received for succeeded, amount_capturable for requires_capture) equal the payment''s, nothing is linked or applied, an anomaly is recorded and the outcome is mismatch. The response is kept in the history without its secrets (Stripe: client_secret); its error (Stripe: last_payment_error; or an {"error"} of the caller''s) becomes last_error.';

CREATE OR REPLACE FUNCTION payments.purge_idempotency_keys(older_than interval) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_purged bigint;
BEGIN
    IF older_than IS NULL OR older_than < interval '24 hours' THEN
        RAISE EXCEPTION 'idempotency keys are kept at least 24 hours; older_than was %', older_than
            USING ERRCODE = 'PM100';
    END IF;
    -- The payment stays; only its key is forgotten.
    UPDATE payments.payments p SET idempotency_key = NULL, request_fingerprint = NULL
    WHERE p.created_at < now() - older_than AND p.idempotency_key IS NOT NULL;
    GET DIAGNOSTICS v_purged = ROW_COUNT;
    RETURN v_purged;
END
$$;
COMMENT ON FUNCTION payments.purge_idempotency_keys(interval) IS
    'Forgets the idempotency keys of payments made more than older_than ago (at least 24 hours) and returns how many. The payments stay; a forgotten key can be used again for a new payment.';

-- PL/pgSQL (Citus cannot plan parameterised SQL functions over its tables);
-- verify_event_chain wraps it because its argument and a result column share a name.
CREATE OR REPLACE FUNCTION payments._verify_event_chain(p_payment_id text)
RETURNS TABLE (broken_payment_id text, first_bad_seq bigint, problem text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_customer text;
BEGIN
    IF p_payment_id IS NOT NULL THEN
        v_customer := payments._payment_customer(p_payment_id);
        IF v_customer IS NULL THEN
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
