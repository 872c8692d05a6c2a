-- payments 0.1.0 → 0.2.0. Run by ALTER EXTENSION payments UPDATE; tested by
-- tests/tests/upgrade.rs (the upgraded catalog must equal a fresh install's).
--
-- What changes: one registry for allowed values (payments.allowed_values(),
-- and CHECK constraints that read it, including a new one on
-- payments.status); "stale" is the one word for a late report recorded but
-- not applied (transition outcome `ignored` becomes `stale`, and a webhook that
-- confirms the status a payment already has is `noop`, not `stale`);
-- customer_payments counts open payments by statuses().terminal;
-- list_payments pages 10 rows by default, as over HTTP; ingest_webhook is split
-- into named steps.

-- ---------------------------------------------------------------------------
-- New Rust functions (payments_ext/src/lib.rs)
-- ---------------------------------------------------------------------------
CREATE FUNCTION payments."_initial_status"(
	"has_payment_method" bool /* bool */
) RETURNS TEXT /* & '_ str */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'initial_status_wrapper';
CREATE FUNCTION payments."allowed_values"() RETURNS TABLE (
	"kind" TEXT,  /* & '_ str */
	"value" TEXT  /* & '_ str */
)
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'allowed_values_wrapper';
CREATE FUNCTION payments."_is_allowed"(
	"kind" TEXT, /* & str */
	"value" TEXT /* & str */
) RETURNS bool /* bool */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'is_allowed_wrapper';
CREATE FUNCTION payments."_all_allowed"(
	"kind" TEXT, /* & str */
	"values" TEXT[] /* Vec < Option < String > > */
) RETURNS bool /* bool */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'all_allowed_wrapper';
COMMENT ON FUNCTION payments._transition_decision(text, text, text) IS
    'Internal: apply | noop | ignore (the report is stale) | forbidden for a requested transition; NULL for an unknown status or source. These words never change: released scripts depend on them.';
COMMENT ON FUNCTION payments._initial_status(boolean) IS 'Internal: the status a new payment starts in, with or without a payment method.';
COMMENT ON FUNCTION payments.allowed_values() IS
    'Every closed set of values the extension stores or answers with (kind: status, source, capture_method, webhook_scheme, api_key_scope, outcome, webhook_result), from the same Rust table the CHECK constraints use.';
COMMENT ON FUNCTION payments._is_allowed(text, text) IS 'Internal: whether a value belongs to a kind of allowed_values(); used by CHECK constraints.';
COMMENT ON FUNCTION payments._all_allowed(text, text[]) IS 'Internal: whether every element of an array belongs to a kind of allowed_values().';

-- ---------------------------------------------------------------------------
-- CHECK constraints read the registry
-- ---------------------------------------------------------------------------
ALTER TABLE payments.payments
    ADD CONSTRAINT payments_status_check CHECK (payments._is_allowed('status', status)),
    DROP CONSTRAINT payments_capture_method_check,
    ADD CONSTRAINT payments_capture_method_check CHECK (payments._is_allowed('capture_method', capture_method));
ALTER TABLE payments.payment_events
    DROP CONSTRAINT payment_events_source_check,
    ADD CONSTRAINT payment_events_source_check CHECK (payments._is_allowed('source', source));
ALTER TABLE payments.webhook_secrets
    DROP CONSTRAINT webhook_secrets_scheme_check,
    ADD CONSTRAINT webhook_secrets_scheme_check CHECK (payments._is_allowed('webhook_scheme', scheme));
-- Rows stored by 0.1.0 hold applied | stale | ignored | pending_match: all still allowed.
ALTER TABLE payments.webhook_events
    DROP CONSTRAINT webhook_events_result_check,
    ADD CONSTRAINT webhook_events_result_check CHECK (payments._is_allowed('webhook_result', result));
ALTER TABLE payments.api_keys
    DROP CONSTRAINT api_keys_scopes_check,
    ADD CONSTRAINT api_keys_scopes_check CHECK (cardinality(scopes) > 0 AND payments._all_allowed('api_key_scope', scopes));

COMMENT ON COLUMN payments.payments.status IS 'Lifecycle status (SELECT * FROM payments.statuses()); SELECT * FROM payments.allowed_transitions() shows the state machine.';
COMMENT ON COLUMN payments.payment_events.applied IS 'false for a stale report: a provider or webhook report recorded but not applied (it would have moved the payment backwards or out of a final state).';
COMMENT ON TYPE payments.payment_result IS
    'A payment as a mutating call leaves it, plus outcome: created | replayed (create_payment), applied | noop | stale (transition, record_provider_result).';
COMMENT ON COLUMN payments.webhook_events.result IS
    'applied: it moved the payment; noop: the payment already had the status it reports; stale: older than the payment''s state, recorded only; ignored: an event type that moves no payment; pending_match: no payment had its provider id yet (see webhook_pending). Rows stored by version 0.1.0 say stale for noop too.';

-- ---------------------------------------------------------------------------
-- Views: open payments are those in a status the state machine calls non-final
-- ---------------------------------------------------------------------------
CREATE OR REPLACE VIEW payments.customer_payments AS
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
COMMENT ON VIEW payments.payment_history IS
    'Every payment''s history in order (payment_id, seq). applied = false marks a stale report: recorded, not applied.';

-- ---------------------------------------------------------------------------
-- Functions whose body changed
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION payments._transition(p_payment_id text, p_to text, p_source text, p_reason text,
                                     p_data jsonb, p_last_error jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_from     text;
    v_decision text;
BEGIN
    SELECT p.status INTO v_from FROM payments.payments p WHERE p.id = p_payment_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment % not found', p_payment_id USING ERRCODE = 'PM204';
    END IF;
    v_decision := payments._transition_decision(v_from, p_to, p_source);
    CASE v_decision
    WHEN 'noop' THEN
        RETURN 'noop';
    WHEN 'apply' THEN
        UPDATE payments.payments p
        SET status = p_to, updated_at = now(), last_error = coalesce(p_last_error, p.last_error)
        WHERE p.id = p_payment_id;
        PERFORM payments._append_event(p_payment_id, v_from, p_to, true, p_source, p_reason, p_data);
        RETURN 'applied';
    WHEN 'ignore' THEN
        PERFORM payments._append_event(p_payment_id, v_from, p_to, false, p_source,
                                       coalesce(p_reason, 'stale: ' || v_from || ' does not move to ' || p_to), p_data);
        RETURN 'stale';
    WHEN 'forbidden' THEN
        RAISE EXCEPTION 'payment % cannot move from % to %', p_payment_id, v_from, p_to
            USING ERRCODE = 'PM202', HINT = 'SELECT * FROM payments.allowed_transitions() shows the state machine';
    ELSE
        RAISE EXCEPTION 'unknown status % or source %', quote_nullable(p_to), quote_nullable(p_source)
            USING ERRCODE = 'PM100',
                  HINT = 'SELECT * FROM payments.allowed_values() WHERE kind IN (''status'', ''source'')';
    END CASE;
END
$$;
COMMENT ON FUNCTION payments._transition(text, text, text, text, jsonb, jsonb) IS
    'Internal: locks the payment, asks the state machine, and applies, records as stale or refuses the move. Returns applied | noop | stale.';

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
    IF jsonb_typeof(v_metadata) <> 'object' THEN
        RAISE EXCEPTION 'metadata must be a JSON object' USING ERRCODE = 'PM100';
    END IF;
    IF NOT payments._is_allowed('capture_method', v_capture) THEN
        RAISE EXCEPTION 'capture_method must be one of %, not %',
            (SELECT string_agg(v.value, ', ') FROM payments.allowed_values() v WHERE v.kind = 'capture_method'),
            quote_literal(v_capture) USING ERRCODE = 'PM100';
    END IF;
    v_minor := payments.to_minor(amount, currency);
    v_fp := payments._request_fingerprint(customer_id, v_minor, v_currency, payment_method, description,
                                          v_metadata::text, v_capture);

    -- Claim the key first. A concurrent call with the same key blocks here
    -- until this transaction ends, then finds the key and replays.
    INSERT INTO payments.idempotency_keys (key, fingerprint, payment_id)
    VALUES (idempotency_key, v_fp, v_id)
    ON CONFLICT (key) DO NOTHING;

    IF FOUND THEN
        v_status := payments._initial_status(payment_method IS NOT NULL);
        INSERT INTO payments.payments
            (id, customer_id, amount_minor, currency, status, capture_method, payment_method, description, metadata)
        VALUES (v_id, customer_id, v_minor, v_currency, v_status, v_capture, payment_method, description, v_metadata);
        PERFORM payments._append_event(v_id, NULL, v_status, true, 'api', 'created',
                                       jsonb_build_object('idempotency_key', idempotency_key));
        RETURN QUERY SELECT * FROM payments._result(v_id, 'created');
        RETURN;
    END IF;

    SELECT * INTO v_claimed FROM payments.idempotency_keys k WHERE k.key = idempotency_key;
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
    RETURN QUERY SELECT * FROM payments._result(v_claimed.payment_id, 'replayed');
END
$$;
COMMENT ON FUNCTION payments.create_payment(text, text, numeric, text, text, text, jsonb, text) IS
    'Creates a payment, idempotently. The same key with the same parameters returns the same payment (outcome replayed) and writes nothing; with other parameters it is an error (PM201). Concurrent calls with one key make exactly one payment. Runs inside the caller''s transaction: a rollback leaves no payment, key or event.';

CREATE OR REPLACE FUNCTION payments.list_payments(customer_id text DEFAULT NULL, status text DEFAULT NULL,
                                       lim int DEFAULT 10, starting_after text DEFAULT NULL)
RETURNS SETOF payments.payment_details
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF lim IS NULL OR lim NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'lim must be between 1 and 100' USING ERRCODE = 'PM100';
    END IF;
    IF list_payments.status IS NOT NULL AND NOT payments._is_allowed('status', list_payments.status) THEN
        RAISE EXCEPTION 'unknown status %', quote_literal(list_payments.status) USING ERRCODE = 'PM100';
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

CREATE OR REPLACE FUNCTION payments.create_api_key(name text, scopes text[]) RETURNS TABLE (id text, api_key text)
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
    INSERT INTO payments.api_keys (id, name, key_hash, scopes)
    VALUES (v_id, name, sha256(convert_to(v_key, 'UTF8')), scopes);
    RETURN QUERY SELECT v_id, v_key;
END
$$;
COMMENT ON FUNCTION payments.create_api_key(text, text[]) IS
    'Creates a gateway API key with the given scopes and returns it. The key is shown only this once; only its sha256 is kept.';

CREATE OR REPLACE FUNCTION payments.ingest_webhook(provider text, headers jsonb, body bytea) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_secret_id text;
    v_event     record;
    v_applied   record;
BEGIN
    IF provider IS NULL OR headers IS NULL OR body IS NULL THEN
        RAISE EXCEPTION 'provider, headers and body are required' USING ERRCODE = 'PM100';
    END IF;
    v_secret_id := payments._verify_webhook(provider, headers, body);
    v_event := payments._parse_stripe_event(body);

    -- 3. Once per (provider, event id), even under concurrent deliveries.
    PERFORM pg_advisory_xact_lock(hashtextextended('payments-webhook/' || provider || '/' || v_event.event_id, 0));
    SELECT w.payment_id, 'duplicate' AS result INTO v_applied FROM payments.webhook_events w
    WHERE w.provider = ingest_webhook.provider AND w.event_id = v_event.event_id;
    IF NOT FOUND THEN
        v_applied := payments._apply_webhook(provider, v_event.event_id, v_event.event_type, v_event.event_created,
                                             v_event.object);
        -- 5. Store it, append-only; an unmatched one also waits for its payment.
        INSERT INTO payments.webhook_events (id, provider, event_id, event_type, event_created, provider_payment_id,
                                             payment_id, result, secret_id, headers, body)
        VALUES (payments._new_id('whe'), provider, v_event.event_id, v_event.event_type, v_event.event_created,
                v_event.object ->> 'id', v_applied.payment_id, v_applied.result, v_secret_id, headers, body);
        IF v_applied.result = 'pending_match' THEN
            INSERT INTO payments.webhook_pending (provider, event_id, provider_payment_id, event_type, event_created,
                                                  to_status, last_error)
            VALUES (provider, v_event.event_id, v_event.object ->> 'id', v_event.event_type, v_event.event_created,
                    payments._stripe_event_status(v_event.event_type), v_event.object -> 'last_payment_error');
        END IF;
    END IF;
    RETURN jsonb_build_object('result', v_applied.result, 'event_id', v_event.event_id, 'payment_id', v_applied.payment_id,
                              'status', (SELECT p.status FROM payments.payments p WHERE p.id = v_applied.payment_id));
END
$$;
COMMENT ON FUNCTION payments.ingest_webhook(text, jsonb, bytea) IS
    'Verifies a webhook (the exact body bytes and its headers) against the provider''s active secrets, stores it once, and applies it: {"result": applied | noop | stale | ignored | pending_match | duplicate, "event_id", "payment_id", "status"}. Bad signature: PM301; timestamp outside payments.webhook_tolerance (default 5 minutes): PM302; no active secret: PM303; not a Stripe event: PM304. An event never moves a payment backwards or out of a final state (stale); one for a payment not yet linked waits in webhook_pending.';

COMMENT ON FUNCTION payments.transition(text, text, text, text, jsonb) IS
    'The only way a status changes. source is api | provider | webhook | admin | system. A move the state machine forbids is an error (PM202) for api, admin and system; a provider or webhook report of it is stale: recorded (applied = false) and changes nothing. data->''last_error'', when given, becomes the payment''s last_error.';
COMMENT ON FUNCTION payments.record_provider_result(text, text, text, text, jsonb) IS
    'Records what the provider answered for a payment: links its provider id (once; PM203 if it belongs elsewhere), applies webhooks that arrived for that id before the link (in event order), and moves the status as a provider report (a late report is stale, not an error). The response is kept in the history without its client_secret; its last_payment_error becomes last_error.';

-- ---------------------------------------------------------------------------
-- ingest_webhook's steps (internal)
-- ---------------------------------------------------------------------------
CREATE FUNCTION payments._verify_webhook(p_provider text, p_headers jsonb, p_body bytea) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_tolerance interval := coalesce(nullif(current_setting('payments.webhook_tolerance', true), ''), '5 minutes')::interval;
    v_secret    record;
    v_failures  text[] := '{}';
BEGIN
    -- Rotation: several secrets may be active; the newest is tried first.
    FOR v_secret IN
        SELECT s.id, s.scheme, s.secret FROM payments.webhook_secrets s
        WHERE s.provider = p_provider AND s.retired_at IS NULL AND (s.expires_at IS NULL OR s.expires_at > now())
        ORDER BY s.created_at DESC
    LOOP
        v_failures := v_failures || payments.webhook_signature_failure(v_secret.scheme, v_secret.secret, p_headers,
                                                                       p_body, v_tolerance, now());
        IF v_failures[cardinality(v_failures)] IS NULL THEN
            RETURN v_secret.id;
        END IF;
    END LOOP;
    IF cardinality(v_failures) = 0 THEN
        RAISE EXCEPTION 'no active webhook secret for provider %', p_provider USING ERRCODE = 'PM303',
            HINT = 'add one with payments.add_webhook_secret';
    ELSIF v_failures && ARRAY['timestamp_too_old', 'timestamp_in_future'] THEN
        RAISE EXCEPTION 'webhook timestamp is outside the tolerance of %', v_tolerance USING ERRCODE = 'PM302';
    END IF;
    RAISE EXCEPTION 'webhook signature verification failed: %', v_failures[1] USING ERRCODE = 'PM301';
END
$$;
COMMENT ON FUNCTION payments._verify_webhook(text, jsonb, bytea) IS
    'Internal, step 1 of ingest_webhook: the id of the active secret that verifies the exact bytes, or PM301 (signature), PM302 (timestamp outside payments.webhook_tolerance), PM303 (no active secret).';

CREATE FUNCTION payments._parse_stripe_event(p_body bytea, OUT event_id text, OUT event_type text,
                                             OUT event_created timestamptz, OUT object jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_event jsonb;
BEGIN
    IF NOT payments._is_json_object(p_body) THEN
        RAISE EXCEPTION 'webhook body is not a JSON object' USING ERRCODE = 'PM304';
    END IF;
    v_event := convert_from(p_body, 'UTF8')::jsonb;
    IF jsonb_typeof(v_event -> 'id') IS DISTINCT FROM 'string' OR jsonb_typeof(v_event -> 'type') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'webhook event has no id or type' USING ERRCODE = 'PM304';
    END IF;
    event_id := v_event ->> 'id';
    event_type := v_event ->> 'type';
    IF (v_event ->> 'created') ~ '^[0-9]{1,12}$' THEN
        event_created := timestamptz 'epoch' + (v_event ->> 'created')::bigint * interval '1 second';
    END IF;
    object := v_event -> 'data' -> 'object';
END
$$;
COMMENT ON FUNCTION payments._parse_stripe_event(bytea) IS
    'Internal, step 2 of ingest_webhook: a verified body as Stripe''s event shape (id, type, created, data.object); PM304 when it is not one.';

CREATE FUNCTION payments._apply_webhook(p_provider text, p_event_id text, p_event_type text,
                                        p_event_created timestamptz, p_object jsonb,
                                        OUT payment_id text, OUT result text)
LANGUAGE plpgsql AS $$
DECLARE
    v_to   text := payments._stripe_event_status(p_event_type);
    v_ppid text := p_object ->> 'id';
    v_hint text := p_object -> 'metadata' ->> 'payment_id';
BEGIN
    IF v_to IS NULL OR v_ppid IS NULL THEN
        result := 'ignored';
        RETURN;
    END IF;
    PERFORM payments._lock_provider_payment(p_provider, v_ppid);
    SELECT p.id INTO payment_id FROM payments.payments p
    WHERE p.provider = p_provider AND p.provider_payment_id = v_ppid;
    IF payment_id IS NULL AND v_hint IS NOT NULL
       AND EXISTS (SELECT FROM payments.payments p WHERE p.id = v_hint AND p.provider_payment_id IS NULL) THEN
        -- Our own id in metadata: link the provider id now.
        PERFORM payments._link_provider(v_hint, p_provider, v_ppid);
        payment_id := v_hint;
    END IF;
    IF payment_id IS NULL THEN
        result := 'pending_match';
    ELSE
        result := payments._transition(payment_id, v_to, 'webhook', p_event_type,
                                       jsonb_build_object('webhook_event_id', p_event_id, 'event_created', p_event_created),
                                       p_object -> 'last_payment_error');
    END IF;
END
$$;
COMMENT ON FUNCTION payments._apply_webhook(text, text, text, timestamptz, jsonb) IS
    'Internal, step 4 of ingest_webhook: matches the event''s object to a payment (by provider id, or by metadata.payment_id, which links it) and applies its status as a webhook report. result: applied | noop | stale | ignored | pending_match.';

-- ---------------------------------------------------------------------------
-- Privileges of the new functions (as sql/roles.sql grants them)
-- ---------------------------------------------------------------------------
REVOKE ALL ON FUNCTION
    payments._initial_status(boolean), payments.allowed_values(), payments._is_allowed(text, text),
    payments._all_allowed(text, text[]), payments._verify_webhook(text, jsonb, bytea),
    payments._parse_stripe_event(bytea), payments._apply_webhook(text, text, text, timestamptz, jsonb)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    payments.allowed_values(), payments._is_allowed(text, text), payments._all_allowed(text, text[])
TO payments_admin, payments_gateway, payments_reader;
