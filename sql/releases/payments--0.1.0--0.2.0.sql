-- payments 0.1.0 → 0.2.0. Run by ALTER EXTENSION payments UPDATE; tested by
-- tests/tests/upgrade.rs (the upgraded catalog must equal a fresh install's).
--
-- What changes: one registry for allowed values (payments.allowed_values(),
-- and CHECK constraints that read it, including a new one on
-- payments.status); "stale" is the one word for a late report recorded but
-- not applied (transition outcome `ignored` becomes `stale`, and a webhook that
-- confirms the status a payment already has is `noop`, not `stale`);
-- customer_payments counts open payments by statuses().terminal;
-- list_payments pages 10 rows by default, as over HTTP; provider objects
-- must match the payment's money or become anomalies (payments.anomalies);
-- input limits and short error messages; admin/system sources only for
-- payments_admin; the webhook tolerance is an admin setting (payments.settings);
-- the reconciler claims with leases (reconcile_after) instead of held locks; ingest_webhook is split
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
COMMENT ON COLUMN payments.payment_events.applied IS 'false for a report recorded but not applied: a stale one (it would have moved the payment backwards or out of a final state), or an anomaly (reason ''anomaly: <kind>'', see payments.anomalies).';
COMMENT ON TYPE payments.payment_result IS
    'A payment as a mutating call leaves it, plus outcome: created | replayed (create_payment), applied | noop | stale (transition, record_provider_result), mismatch (record_provider_result: the provider''s object asked for other money; an anomaly was recorded, nothing applied).';
COMMENT ON COLUMN payments.webhook_events.result IS
    'applied: it moved the payment; noop: the payment already had the status it reports; stale: older than the payment''s state, recorded only; ignored: an event type that moves no payment; pending_match: no payment had its provider id yet (see webhook_pending); mismatch: its object asked for other money than the payment it named, or was another object than the payment''s (see anomalies). Rows stored by version 0.1.0 say stale for noop too.';

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
        RAISE EXCEPTION 'payment % not found', payments._shown(p_payment_id) USING ERRCODE = 'PM204';
    END IF;
    v_decision := payments._transition_decision(v_from, p_to, p_source);
    CASE v_decision
    WHEN 'noop' THEN
        RETURN 'noop';
    WHEN 'apply' THEN
        -- A new status starts the reconciler's count afresh.
        UPDATE payments.payments p
        SET status = p_to, updated_at = now(), last_error = coalesce(p_last_error, p.last_error),
            reconcile_after = NULL, reconcile_attempts = 0
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
        RAISE EXCEPTION 'unknown status % or source %', quote_nullable(payments._shown(p_to)),
            quote_nullable(payments._shown(p_source))
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
    'Verifies a webhook (the exact body bytes and its headers) against the provider''s active secrets, stores it once, and applies it: {"result": applied | noop | stale | ignored | pending_match | mismatch | duplicate, "event_id", "payment_id", "status"}. Bad signature: PM301; timestamp outside payments.webhook_tolerance() (default 5 minutes): PM302; no active secret: PM303; not a Stripe event: PM304. An event never moves a payment backwards or out of a final state (stale); one for a payment not yet linked waits in webhook_pending.';

COMMENT ON FUNCTION payments.record_provider_result(text, text, text, text, jsonb) IS
    'Records what the provider answered for a payment: links its provider id (once; PM203 if it belongs elsewhere), applies webhooks that arrived for that id before the link (in event order), and moves the status as a provider report (a late report is stale, not an error). The response is the provider''s object: unless its amount and currency (and amount_received for succeeded, amount_capturable for requires_capture) equal the payment''s, nothing is linked or applied, an anomaly is recorded and the outcome is mismatch. The response is kept in the history without its client_secret; its last_payment_error becomes last_error.';

-- ---------------------------------------------------------------------------
-- ingest_webhook's steps (internal)
-- ---------------------------------------------------------------------------
CREATE FUNCTION payments._verify_webhook(p_provider text, p_headers jsonb, p_body bytea) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_tolerance interval := payments.webhook_tolerance();
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
        -- Anyone can name a provider in a webhook URL: the name is not echoed.
        RAISE EXCEPTION 'no active webhook secret for this provider' USING ERRCODE = 'PM303',
            HINT = 'add one with payments.add_webhook_secret';
    ELSIF v_failures && ARRAY['timestamp_too_old', 'timestamp_in_future'] THEN
        RAISE EXCEPTION 'webhook timestamp is outside the tolerance of %', v_tolerance USING ERRCODE = 'PM302';
    END IF;
    RAISE EXCEPTION 'webhook signature verification failed: %', v_failures[1] USING ERRCODE = 'PM301';
END
$$;
COMMENT ON FUNCTION payments._verify_webhook(text, jsonb, bytea) IS
    'Internal, step 1 of ingest_webhook: the id of the active secret that verifies the exact bytes, or PM301 (signature), PM302 (timestamp outside payments.webhook_tolerance()), PM303 (no active secret).';

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
    -- Stripe's ids are short; a long one could not be indexed (and is no event of theirs).
    IF length(v_event ->> 'id') > 255 OR length(v_event ->> 'type') > 255
       OR length(v_event -> 'data' -> 'object' ->> 'id') > 255 THEN
        RAISE EXCEPTION 'webhook event id, type or object id longer than 255 characters' USING ERRCODE = 'PM304';
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
    v_to      text := payments._stripe_event_status(p_event_type);
    v_ppid    text := p_object ->> 'id';
    v_hint    text := p_object -> 'metadata' ->> 'payment_id';
    v_by_hint boolean := false;
    v_problem text;
BEGIN
    IF v_to IS NULL OR v_ppid IS NULL THEN
        result := 'ignored';
        RETURN;
    END IF;
    PERFORM payments._lock_provider_payment(p_provider, v_ppid);
    SELECT p.id INTO payment_id FROM payments.payments p
    WHERE p.provider = p_provider AND p.provider_payment_id = v_ppid;
    IF payment_id IS NULL AND v_hint IS NOT NULL THEN
        -- Our own id in metadata: the object is linked to that payment if it is evidence for it.
        SELECT p.id INTO payment_id FROM payments.payments p WHERE p.id = v_hint;
        v_by_hint := true;
    END IF;
    IF payment_id IS NOT NULL THEN
        v_problem := payments._evidence_problem_for(payment_id, v_to, p_object, p_provider, v_ppid);
        IF v_problem IS NULL AND v_by_hint THEN
            PERFORM payments._link_provider(payment_id, p_provider, v_ppid);
        END IF;
    END IF;
    IF payment_id IS NULL THEN
        result := 'pending_match';
    ELSIF v_problem IS NOT NULL THEN
        PERFORM payments._record_anomaly(payment_id, v_problem, 'webhook', p_provider, v_ppid,
                                         payments._observed(p_object) || jsonb_build_object('webhook_event_id', p_event_id));
        result := 'mismatch';
    ELSE
        result := payments._transition(payment_id, v_to, 'webhook', p_event_type,
                                       jsonb_build_object('webhook_event_id', p_event_id, 'event_created', p_event_created),
                                       p_object -> 'last_payment_error');
    END IF;
END
$$;
COMMENT ON FUNCTION payments._apply_webhook(text, text, text, timestamptz, jsonb) IS
    'Internal, step 4 of ingest_webhook: matches the event''s object to a payment (by provider id, or by metadata.payment_id, which links it) and applies its status as a webhook report. An object asking for other money than the payment, or another object than the one the payment is linked to, is an anomaly (result mismatch), never applied. result: applied | noop | stale | ignored | pending_match | mismatch.';


-- ---------------------------------------------------------------------------
-- Evidence: a provider object moves or links a payment only when it asks for
-- the same money; anything else is an anomaly
-- ---------------------------------------------------------------------------
CREATE FUNCTION payments."_evidence_problem"(
	"expected_amount" bigint, /* i64 */
	"expected_currency" TEXT, /* & str */
	"to_status" TEXT, /* & str */
	"amount" TEXT, /* Option < & str > */
	"currency" TEXT, /* Option < & str > */
	"amount_received" TEXT, /* Option < & str > */
	"amount_capturable" TEXT /* Option < & str > */
) RETURNS TEXT /* Option < & '_ str > */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'evidence_problem_wrapper';
COMMENT ON FUNCTION payments._evidence_problem(bigint, text, text, text, text, text, text) IS
    'Internal: the anomaly kind when the money fields of a provider object (amount, currency, and amount_received for succeeded or amount_capturable for requires_capture) differ from the payment''s; NULL when they match.';

-- ---------------------------------------------------------------------------
-- Anomalies: provider objects that were no evidence for the payment they named
-- ---------------------------------------------------------------------------
CREATE TABLE payments.anomalies (
    id                  text COLLATE "C" PRIMARY KEY,
    payment_id          text COLLATE "C" NOT NULL REFERENCES payments.payments (id),
    customer_id         text NOT NULL,
    kind                text NOT NULL CHECK (payments._is_allowed('anomaly_kind', kind)),
    source              text NOT NULL CHECK (payments._is_allowed('source', source)),
    provider            text NOT NULL,
    provider_payment_id text,
    observed            jsonb NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    resolved_at         timestamptz,
    resolution          text CHECK (length(resolution) BETWEEN 1 AND 1000),
    CHECK ((resolved_at IS NULL) = (resolution IS NULL))
);
CREATE INDEX anomalies_open_idx ON payments.anomalies (created_at) WHERE resolved_at IS NULL;
CREATE INDEX anomalies_payment_id_idx ON payments.anomalies (payment_id);
COMMENT ON TABLE payments.anomalies IS
    'A provider object (an API answer or a webhook) that named a payment but asked for other money, or was another object than the one the payment is linked to. It was not applied: the payment kept its status and link, and its history has an event with reason ''anomaly: <kind>''. Operators read payments.open_anomalies and close one with payments.resolve_anomaly.';
COMMENT ON COLUMN payments.anomalies.kind IS 'amount_mismatch | currency_mismatch | amount_received_mismatch | amount_capturable_mismatch | provider_payment_mismatch (SELECT * FROM payments.allowed_values() WHERE kind = ''anomaly_kind'').';
COMMENT ON COLUMN payments.anomalies.source IS 'provider (an API answer recorded by record_provider_result) or webhook.';
COMMENT ON COLUMN payments.anomalies.observed IS 'The object''s money fields and status as received (amount, currency, amount_received, amount_capturable, status), and the webhook event id when a webhook brought it.';
COMMENT ON COLUMN payments.anomalies.resolved_at IS 'When an operator closed it (resolve_anomaly); NULL while open.';

SELECT pg_catalog.pg_extension_config_dump('payments.anomalies', '');

CREATE FUNCTION payments._evidence_problem_for(p_payment_id text, p_to text, p_object jsonb, p_provider text,
                                               p_provider_payment_id text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_payment payments.payments%ROWTYPE;
BEGIN
    SELECT * INTO v_payment FROM payments.payments p WHERE p.id = p_payment_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment % not found', payments._shown(p_payment_id) USING ERRCODE = 'PM204';
    END IF;
    -- Another object than the one the payment is linked to is no evidence, whatever its money.
    IF v_payment.provider_payment_id IS NOT NULL
       AND (v_payment.provider, v_payment.provider_payment_id) IS DISTINCT FROM (p_provider, p_provider_payment_id) THEN
        RETURN 'provider_payment_mismatch';
    END IF;
    RETURN payments._evidence_problem(v_payment.amount_minor, v_payment.currency, p_to,
                                      p_object ->> 'amount', p_object ->> 'currency',
                                      p_object ->> 'amount_received', p_object ->> 'amount_capturable');
END
$$;
COMMENT ON FUNCTION payments._evidence_problem_for(text, text, jsonb, text, text) IS
    'Internal: why a provider object (the given provider''s object id) is no evidence for moving the payment to a status: another object than the one the payment is linked to, or other money (an anomaly kind); NULL when it is evidence. PM204 for an unknown payment.';

CREATE FUNCTION payments._record_anomaly(p_payment_id text, p_kind text, p_source text, p_provider text,
                                         p_provider_payment_id text, p_observed jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_payment payments.payments%ROWTYPE;
BEGIN
    SELECT * INTO v_payment FROM payments.payments p WHERE p.id = p_payment_id FOR UPDATE;
    -- The same evidence seen again (a retried call, a redelivered event) is one anomaly.
    IF EXISTS (SELECT 1 FROM payments.anomalies a
               WHERE a.payment_id = p_payment_id AND a.kind = p_kind AND a.resolved_at IS NULL
                 AND a.provider = p_provider AND a.provider_payment_id IS NOT DISTINCT FROM p_provider_payment_id
                 AND a.observed - 'webhook_event_id' = p_observed - 'webhook_event_id') THEN
        RETURN;
    END IF;
    INSERT INTO payments.anomalies (id, payment_id, customer_id, kind, source, provider, provider_payment_id, observed)
    VALUES (payments._new_id('anm'), p_payment_id, v_payment.customer_id, p_kind, p_source, p_provider,
            p_provider_payment_id, p_observed);
    -- In the history without moving the status.
    PERFORM payments._append_event(p_payment_id, v_payment.status, v_payment.status, false, p_source, 'anomaly: ' || p_kind,
                                   jsonb_build_object('provider', p_provider, 'provider_payment_id', p_provider_payment_id,
                                                      'observed', p_observed));
END
$$;
COMMENT ON FUNCTION payments._record_anomaly(text, text, text, text, text, jsonb) IS
    'Internal: records that a provider object was no evidence for a payment: a row in payments.anomalies and an unapplied event in the payment''s history, once per open anomaly (the same evidence again adds nothing).';

CREATE FUNCTION payments._observed(p_object jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN jsonb_strip_nulls(jsonb_build_object(
    'amount', p_object -> 'amount', 'currency', p_object -> 'currency', 'amount_received', p_object -> 'amount_received',
    'amount_capturable', p_object -> 'amount_capturable', 'status', p_object -> 'status'));
COMMENT ON FUNCTION payments._observed(jsonb) IS 'Internal: the money fields and status of a provider object, as an anomaly keeps them.';

CREATE FUNCTION payments.resolve_anomaly(id text, resolution text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_anomaly payments.anomalies%ROWTYPE;
BEGIN
    IF resolution IS NULL OR length(resolution) NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'resolution must be 1 to 1000 characters' USING ERRCODE = 'PM100';
    END IF;
    SELECT * INTO v_anomaly FROM payments.anomalies a WHERE a.id = resolve_anomaly.id AND a.resolved_at IS NULL;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM 1 FROM payments.payments p WHERE p.id = v_anomaly.payment_id FOR UPDATE;
    UPDATE payments.anomalies a SET resolved_at = now(), resolution = resolve_anomaly.resolution
    WHERE a.id = v_anomaly.id;
    PERFORM payments._append_event(p.id, p.status, p.status, false, 'admin', 'anomaly resolved: ' || v_anomaly.kind,
                                   jsonb_build_object('anomaly_id', v_anomaly.id, 'resolution', resolve_anomaly.resolution))
    FROM payments.payments p WHERE p.id = v_anomaly.payment_id;
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
    v_outcome  text;
    v_problem  text;
BEGIN
    IF provider IS NULL OR length(provider) NOT BETWEEN 1 AND 255 OR length(record_provider_result.provider_payment_id) > 255 THEN
        RAISE EXCEPTION 'provider (1 to 255 characters) is required; a provider payment id is at most 255'
            USING ERRCODE = 'PM100';
    END IF;
    -- A provider object moves a payment or is linked to it only when it asks for the same money.
    IF record_provider_result.provider_payment_id IS NOT NULL OR status IN ('succeeded', 'requires_capture') THEN
        v_problem := payments._evidence_problem_for(record_provider_result.payment_id, status, v_response, provider,
                                                    record_provider_result.provider_payment_id);
        IF v_problem IS NOT NULL THEN
            PERFORM payments._record_anomaly(record_provider_result.payment_id, v_problem, 'provider', provider,
                                             record_provider_result.provider_payment_id, payments._observed(v_response));
            RETURN QUERY SELECT * FROM payments._result(record_provider_result.payment_id, 'mismatch');
            RETURN;
        END IF;
    END IF;
    IF record_provider_result.provider_payment_id IS NOT NULL THEN
        PERFORM payments._lock_provider_payment(provider, record_provider_result.provider_payment_id);
        PERFORM payments._link_provider(record_provider_result.payment_id, provider,
                                        record_provider_result.provider_payment_id);
    END IF;
    v_outcome := payments._transition(
        record_provider_result.payment_id, status, 'provider', NULL,
        jsonb_build_object('provider', provider, 'provider_payment_id', record_provider_result.provider_payment_id,
                           'response', v_response),
        coalesce(v_response -> 'last_payment_error', v_response -> 'error'));
    RETURN QUERY SELECT * FROM payments._result(record_provider_result.payment_id, v_outcome);
END
$$;
CREATE OR REPLACE FUNCTION payments._apply_pending_webhooks(p_payment_id text, p_provider text, p_provider_payment_id text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    w         record;
    v_object  jsonb;
    v_problem text;
BEGIN
    FOR w IN
        SELECT wp.*, we.body FROM payments.webhook_pending wp
        JOIN payments.webhook_events we ON we.provider = wp.provider AND we.event_id = wp.event_id
        WHERE wp.provider = p_provider AND wp.provider_payment_id = p_provider_payment_id
        ORDER BY wp.event_created, wp.event_id
    LOOP
        v_object := convert_from(w.body, 'UTF8')::jsonb -> 'data' -> 'object';
        v_problem := payments._evidence_problem_for(p_payment_id, w.to_status, v_object, p_provider,
                                                    p_provider_payment_id);
        IF v_problem IS NOT NULL THEN
            PERFORM payments._record_anomaly(p_payment_id, v_problem, 'webhook', p_provider, p_provider_payment_id,
                                             payments._observed(v_object) || jsonb_build_object('webhook_event_id', w.event_id));
        ELSE
            PERFORM payments._transition(p_payment_id, w.to_status, 'webhook', w.event_type,
                                         jsonb_build_object('webhook_event_id', w.event_id, 'event_created', w.event_created,
                                                            'arrived_before_link', true),
                                         w.last_error);
        END IF;
        DELETE FROM payments.webhook_pending wp WHERE wp.provider = w.provider AND wp.event_id = w.event_id;
    END LOOP;
END
$$;
COMMENT ON FUNCTION payments._apply_pending_webhooks(text, text, text) IS
    'Internal: applies, oldest first, the webhooks that waited for a provider payment id, as webhook reports; one whose object asks for other money is recorded as an anomaly instead.';

CREATE VIEW payments.open_anomalies AS
SELECT a.id, a.payment_id, a.customer_id, a.kind, a.source, a.provider, a.provider_payment_id,
       p.amount_minor AS expected_amount_minor, p.currency AS expected_currency, p.provider_payment_id AS linked_provider_payment_id,
       a.observed, p.status AS payment_status, a.created_at
FROM payments.anomalies a
JOIN payments.payments p ON p.id = a.payment_id
WHERE a.resolved_at IS NULL;
COMMENT ON VIEW payments.open_anomalies IS
    'Provider objects that named a payment but were not applied (other money, or another object than the linked one), not yet resolved: what the payment expected beside what was observed. Close one with payments.resolve_anomaly.';

-- ---------------------------------------------------------------------------
-- Input limits, provenance, settings only an administrator changes
-- ---------------------------------------------------------------------------
-- At most one row; none means the defaults (so pg_dump never dumps a row
-- that CREATE EXTENSION also makes).
CREATE TABLE payments.settings (
    singleton         boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    webhook_tolerance interval NOT NULL CHECK (webhook_tolerance BETWEEN interval '1 second' AND interval '1 hour'),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE payments.settings IS
    'The extension''s settings, changed only by payments_admin through payments.set_webhook_tolerance. No row: the defaults.';
COMMENT ON COLUMN payments.settings.webhook_tolerance IS
    'How far a webhook''s signed timestamp may be from now, either way (default 5 minutes, at most 1 hour).';
SELECT pg_catalog.pg_extension_config_dump('payments.settings', '');

CREATE FUNCTION payments._shown(p_input text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN length(p_input) <= 100 THEN p_input ELSE left(p_input, 100) || '…' END;
COMMENT ON FUNCTION payments._shown(text) IS
    'Internal: caller input as an error message quotes it, at most 100 characters, so no message (or log line) grows with the input.';

CREATE FUNCTION payments._invoker() RETURNS name
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE WHEN current_setting('role') = 'none' THEN session_user ELSE current_setting('role')::name END;
COMMENT ON FUNCTION payments._invoker() IS
    'Internal: the role that called, seen from inside a SECURITY DEFINER function (SET ROLE''s role, else the session''s).';

CREATE FUNCTION payments._metadata_problem(p_metadata jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN jsonb_typeof(p_metadata) IS DISTINCT FROM 'object' THEN 'metadata must be a JSON object'
    WHEN (SELECT count(*) FROM jsonb_object_keys(p_metadata)) > 50 THEN 'metadata has more than 50 keys'
    WHEN EXISTS (SELECT FROM jsonb_each(p_metadata) e WHERE length(e.key) NOT BETWEEN 1 AND 40)
        THEN 'metadata keys must be 1 to 40 characters'
    WHEN EXISTS (SELECT FROM jsonb_each(p_metadata) e WHERE jsonb_typeof(e.value) IN ('object', 'array'))
        THEN 'metadata values must be strings, numbers, booleans or null, not objects or arrays'
    WHEN EXISTS (SELECT FROM jsonb_each(p_metadata) e WHERE length(e.value #>> '{}') > 500)
        THEN 'metadata values must be at most 500 characters'
END;
COMMENT ON FUNCTION payments._metadata_problem(jsonb) IS
    'Internal: why metadata breaks Stripe''s limits (a flat object of at most 50 keys of 1 to 40 characters, scalar values of at most 500 characters), or NULL.';

CREATE FUNCTION payments.webhook_tolerance() RETURNS interval
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT coalesce((SELECT s.webhook_tolerance FROM payments.settings s), interval '5 minutes');
END;
COMMENT ON FUNCTION payments.webhook_tolerance() IS 'The webhook timestamp tolerance in force (default 5 minutes).';

CREATE FUNCTION payments.set_webhook_tolerance(tolerance interval) RETURNS interval
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tolerance IS NULL OR tolerance NOT BETWEEN interval '1 second' AND interval '1 hour' THEN
        RAISE EXCEPTION 'the webhook tolerance must be between 1 second and 1 hour' USING ERRCODE = 'PM100';
    END IF;
    INSERT INTO payments.settings (webhook_tolerance) VALUES (tolerance)
    ON CONFLICT (singleton) DO UPDATE SET webhook_tolerance = excluded.webhook_tolerance, updated_at = now();
    RETURN tolerance;
END
$$;
COMMENT ON FUNCTION payments.set_webhook_tolerance(interval) IS
    'Sets how far a webhook''s timestamp may be from now (1 second to 1 hour; default 5 minutes). Admin only: a wider window lets old, replayed events in.';

CREATE OR REPLACE FUNCTION payments.transition(payment_id text, to_status text, source text,
                                    reason text DEFAULT NULL, data jsonb DEFAULT '{}')
RETURNS SETOF payments.payment_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_outcome text;
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
    v_outcome := payments._transition(transition.payment_id, to_status, source, reason, coalesce(data, '{}'),
                                      data -> 'last_error');
    RETURN QUERY SELECT * FROM payments._result(transition.payment_id, v_outcome);
END
$$;
COMMENT ON FUNCTION payments.transition(text, text, text, text, jsonb) IS
    'The only way a status changes. source is api | provider | webhook | admin | system; admin and system, provider and webhook reports, and moves to processing, requires_capture or succeeded only for members of payments_admin (42501 otherwise): anyone else shows money moving only with the provider''s evidence, through record_provider_result or ingest_webhook. A move the state machine forbids is an error (PM202) for api, admin and system; a provider or webhook report of it is stale: recorded (applied = false) and changes nothing. data->''last_error'', when given, becomes the payment''s last_error.';

CREATE OR REPLACE FUNCTION payments.get_payment(id text) RETURNS SETOF payments.payment_details
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY SELECT * FROM payments.payment_details d WHERE d.id = get_payment.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment % not found', payments._shown(get_payment.id) USING ERRCODE = 'PM204';
    END IF;
END
$$;
COMMENT ON FUNCTION payments.get_payment(text) IS 'One payment by id; PM204 when there is none.';

CREATE OR REPLACE FUNCTION payments._link_provider(p_payment_id text, p_provider text, p_provider_payment_id text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_linked payments.payments%ROWTYPE;
BEGIN
    SELECT * INTO v_linked FROM payments.payments p WHERE p.id = p_payment_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment % not found', payments._shown(p_payment_id) USING ERRCODE = 'PM204';
    END IF;
    IF v_linked.provider_payment_id IS NULL THEN
        IF EXISTS (SELECT FROM payments.payments p
                   WHERE p.provider = p_provider AND p.provider_payment_id = p_provider_payment_id) THEN
            RAISE EXCEPTION '% payment % is already linked to another payment', payments._shown(p_provider),
                payments._shown(p_provider_payment_id)
                USING ERRCODE = 'PM203';
        END IF;
        UPDATE payments.payments p
        SET provider = p_provider, provider_payment_id = p_provider_payment_id, updated_at = now()
        WHERE p.id = p_payment_id;
        -- Webhooks that arrived before the link can now be applied.
        PERFORM payments._apply_pending_webhooks(p_payment_id, p_provider, p_provider_payment_id);
    ELSIF (v_linked.provider, v_linked.provider_payment_id) IS DISTINCT FROM (p_provider, p_provider_payment_id) THEN
        RAISE EXCEPTION 'payment % is linked to % payment %, not %', p_payment_id, v_linked.provider,
            v_linked.provider_payment_id, payments._shown(p_provider_payment_id) USING ERRCODE = 'PM203';
    END IF;
END
$$;
COMMENT ON FUNCTION payments._link_provider(text, text, text) IS
    'Internal: links a payment to its provider payment id once (PM203 if either side is linked elsewhere), then applies webhooks that were waiting for that id. The caller holds _lock_provider_payment.';

CREATE OR REPLACE FUNCTION payments.list_payment_events(payment_id text) RETURNS SETOF payments.payment_history
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM payments.payments p WHERE p.id = list_payment_events.payment_id) THEN
        RAISE EXCEPTION 'payment % not found', payments._shown(list_payment_events.payment_id) USING ERRCODE = 'PM204';
    END IF;
    RETURN QUERY SELECT * FROM payments.payment_history h WHERE h.payment_id = list_payment_events.payment_id ORDER BY h.seq;
END
$$;
COMMENT ON FUNCTION payments.list_payment_events(text) IS 'A payment''s history in order; PM204 when the payment does not exist.';

CREATE OR REPLACE FUNCTION payments.record_provider_error(payment_id text, error jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_status text;
BEGIN
    SELECT p.status INTO v_status FROM payments.payments p WHERE p.id = record_provider_error.payment_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment % not found', payments._shown(record_provider_error.payment_id) USING ERRCODE = 'PM204';
    END IF;
    UPDATE payments.payments p SET last_error = error, updated_at = now() WHERE p.id = record_provider_error.payment_id;
    PERFORM payments._append_event(record_provider_error.payment_id, v_status, v_status, false, 'provider',
                                   'provider call failed', jsonb_build_object('last_error', error));
END
$$;
COMMENT ON FUNCTION payments.record_provider_error(text, jsonb) IS
    'Notes that a provider call failed (timeout, outage) without changing the status: last_error is set and the history gets an unapplied event; the payment keeps awaiting the provider, and the reconciler tries again after min_age.';

-- ---------------------------------------------------------------------------
-- The reconciler leases payments instead of holding their row locks
-- ---------------------------------------------------------------------------
ALTER TABLE payments.payments
    ADD COLUMN reconcile_after timestamptz,
    ADD COLUMN reconcile_attempts integer NOT NULL DEFAULT 0 CHECK (reconcile_attempts >= 0);
COMMENT ON COLUMN payments.payments.reconcile_after IS
    'The reconciler''s lease: claim_provider_work sets it and leaves the payment alone until then (the claim''s lease, growing with each attempt); a status change clears it.';
COMMENT ON COLUMN payments.payments.reconcile_attempts IS 'How often the reconciler has claimed the payment since its status last changed.';
DROP FUNCTION payments.claim_provider_work(int, interval);
CREATE FUNCTION payments.claim_provider_work(lim int DEFAULT 10, min_age interval DEFAULT '10 seconds',
                                             lease interval DEFAULT '30 seconds', max_backoff interval DEFAULT '1 hour')
RETURNS TABLE (payment_id text, kind text, customer_id text, amount_minor bigint, currency text,
               payment_method text, capture_method text, description text, provider text, provider_payment_id text,
               status text, attempt integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF lim IS NULL OR lim NOT BETWEEN 1 AND 1000 OR min_age IS NULL OR lease IS NULL OR lease <= interval '0'
       OR max_backoff IS NULL OR max_backoff < lease THEN
        RAISE EXCEPTION 'lim is 1 to 1000; min_age, a positive lease and max_backoff (at least the lease) are required'
            USING ERRCODE = 'PM100';
    END IF;
    -- Claim and stamp the lease in one statement (as pgmq's read sets a visibility
    -- timeout): the row locks last only as long as this statement, never across
    -- the provider calls the caller makes next.
    RETURN QUERY
    WITH due AS (
        SELECT p.id
        FROM payments.payments p
        WHERE p.status IN ('requires_confirmation', 'processing')
          AND p.updated_at < now() - min_age
          AND (p.reconcile_after IS NULL OR p.reconcile_after <= now())
          AND (p.provider_payment_id IS NOT NULL OR p.payment_method IS NOT NULL)
        ORDER BY coalesce(p.reconcile_after, p.updated_at)
        LIMIT lim
        FOR UPDATE OF p SKIP LOCKED
    ), claimed AS (
        UPDATE payments.payments p
        SET reconcile_attempts = p.reconcile_attempts + 1,
            -- Each attempt waits longer (twice the last, from min_age), at least the lease, at most max_backoff.
            reconcile_after = now() + least(max_backoff,
                                            greatest(lease, min_age * power(2, least(p.reconcile_attempts, 20))))
        FROM due
        WHERE p.id = due.id
        RETURNING p.*
    )
    SELECT c.id,
           CASE WHEN c.provider_payment_id IS NULL THEN 'create' ELSE 'refresh' END,
           c.customer_id, c.amount_minor, c.currency, c.payment_method, c.capture_method, c.description,
           c.provider, c.provider_payment_id, c.status, c.reconcile_attempts
    FROM claimed c
    ORDER BY coalesce(c.reconcile_after, c.updated_at);
END
$$;
COMMENT ON FUNCTION payments.claim_provider_work(int, interval, interval, interval) IS
    'Claims up to lim payments whose provider state is unknown, untouched for min_age and not leased: create (the provider call never completed: retry it with the same idempotency key) or refresh (retrieve the provider''s object). The claim is a lease, not a lock: it is stamped in reconcile_after and committed at once, so the caller calls the provider with no transaction open and records each answer on its own. A lease lasts at least lease and grows with each attempt (doubling from min_age, at most max_backoff), so a payment that keeps failing waits longer and never holds up the others; a status change clears it. Gateway replicas share the work; a killed one''s payments come back when their lease ends.';

REVOKE ALL ON FUNCTION payments.claim_provider_work(int, interval, interval, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION payments.claim_provider_work(int, interval, interval, interval) TO payments_admin, payments_gateway;

-- ---------------------------------------------------------------------------
-- Privileges of the new functions (as sql/roles.sql grants them)
-- ---------------------------------------------------------------------------
REVOKE ALL ON FUNCTION
    payments._initial_status(boolean), payments.allowed_values(), payments._is_allowed(text, text),
    payments._all_allowed(text, text[]), payments._verify_webhook(text, jsonb, bytea),
    payments._parse_stripe_event(bytea), payments._apply_webhook(text, text, text, timestamptz, jsonb),
    payments._evidence_problem(bigint, text, text, text, text, text, text),
    payments._evidence_problem_for(text, text, jsonb, text, text), payments._observed(jsonb),
    payments._record_anomaly(text, text, text, text, text, jsonb), payments.resolve_anomaly(text, text),
    payments._shown(text), payments._invoker(), payments._metadata_problem(jsonb), payments.webhook_tolerance(),
    payments.set_webhook_tolerance(interval)
FROM PUBLIC;
REVOKE ALL ON payments.anomalies, payments.open_anomalies, payments.settings FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    payments.allowed_values(), payments._is_allowed(text, text), payments._all_allowed(text, text[])
TO payments_admin, payments_gateway, payments_reader;
GRANT EXECUTE ON FUNCTION payments.resolve_anomaly(text, text), payments.set_webhook_tolerance(interval)
TO payments_admin;
GRANT EXECUTE ON FUNCTION payments.webhook_tolerance() TO payments_admin, payments_gateway, payments_reader;
GRANT SELECT ON payments.open_anomalies TO payments_admin, payments_gateway, payments_reader;
GRANT SELECT ON payments.anomalies, payments.settings TO payments_admin;
