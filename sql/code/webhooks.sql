-- payments: webhooks verified and applied by the database itself, on the
-- exact bytes received. Secrets are readable by payments_admin only.

-- ---------------------------------------------------------------------------
-- Signature verification (pure; any SQL client)
-- ---------------------------------------------------------------------------
COMMENT ON FUNCTION payments.webhook_signature_failure(text, text, jsonb, bytea, interval, timestamptz) IS
    'Why a webhook does not verify, or NULL when it does: missing_header | malformed_header | no_matching_signature | timestamp_too_old | timestamp_in_future | unknown_scheme | invalid_secret. Schemes: stripe (Stripe-Signature), standard (Standard Webhooks 1.0). Header names match in any case; signatures are compared in constant time; the signature is checked before the timestamp.';
COMMENT ON FUNCTION payments.verify_webhook_signature(text, text, jsonb, bytea, interval, timestamptz) IS
    'true when body (the exact bytes received) carries a valid signature by secret under scheme, timestamped within tolerance of at in either direction. payments.webhook_signature_failure tells why not.';
COMMENT ON FUNCTION payments._webhook_secret_failure(text, text) IS 'Internal: why a secret cannot be used with a scheme, or NULL.';

-- ---------------------------------------------------------------------------
-- Providers' wire formats (payments_core::provider, one Rust module each): what
-- a provider sends becomes a provider-neutral evidence record, {"kind" (payment,
-- refund, dispute, charge), "id", "provider_payment_id", "status" (ours),
-- "amount", "currency", "amount_received", "amount_capturable" (as sent),
-- "created", "our_id", "error", "reason", "due_by", "refunds" (a charge's)}.
-- Nothing below reads a provider's own JSON.
-- ---------------------------------------------------------------------------
COMMENT ON FUNCTION payments._provider_event(text, bytea) IS
    'Internal: a verified webhook body read by the provider''s wire format: {"id", "type", "created" (Unix seconds), "object_id", "evidence" (an evidence record; NULL when the event moves no money), "object" (as received)}, or {"error": why} when it is no event of the provider''s. A provider recorded under another name than a known format''s speaks Stripe''s.';
COMMENT ON FUNCTION payments._provider_object(text, text, jsonb) IS
    'Internal: a provider''s answer or listed object as an evidence record, read as kind (payment, refund, dispute, charge; NULL: as whatever it says it is); NULL when it is no such object.';
COMMENT ON FUNCTION payments._provider_secret_paths(text) IS
    'Internal: where a provider''s objects hold what is never stored, as dotted paths (Stripe: a PaymentIntent''s client_secret, also inside a decline''s error).';

CREATE OR REPLACE FUNCTION payments._unix_time(p_seconds bigint) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN timestamptz 'epoch' + p_seconds * interval '1 second';
COMMENT ON FUNCTION payments._unix_time(bigint) IS 'Internal: Unix seconds (as evidence records give times) as a timestamp; NULL for NULL.';

CREATE OR REPLACE FUNCTION payments._provider_redacted(p_provider text, p_object jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_path text;
BEGIN
    -- Removed in SQL, not in Rust: the rest stays exactly as received (no number is re-encoded).
    FOREACH v_path IN ARRAY payments._provider_secret_paths(p_provider) LOOP
        p_object := p_object #- string_to_array(v_path, '.');
    END LOOP;
    RETURN p_object;
END
$$;
COMMENT ON FUNCTION payments._provider_redacted(text, jsonb) IS
    'Internal: a provider''s object as it may be stored: without the fields that are never kept.';

CREATE OR REPLACE FUNCTION payments.add_webhook_secret(provider text, scheme text, secret text,
                                            expires_at timestamptz DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id      text := payments._new_id('whs');
    v_failure text;
BEGIN
    IF provider IS NULL OR provider = '' OR secret IS NULL THEN
        RAISE EXCEPTION 'provider and secret are required' USING ERRCODE = 'PM100';
    END IF;
    v_failure := payments._webhook_secret_failure(scheme, secret);
    IF v_failure IS NOT NULL THEN
        -- Never echo the secret.
        RAISE EXCEPTION 'cannot add webhook secret: %', v_failure USING ERRCODE = 'PM100',
            HINT = 'schemes: stripe (any secret string), standard (whsec_ followed by base64)';
    END IF;
    INSERT INTO payments.webhook_secrets (id, provider, scheme, secret, expires_at)
    VALUES (v_id, provider, scheme, secret, expires_at);
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION payments.add_webhook_secret(text, text, text, timestamptz) IS
    'Adds a signing secret for a provider and returns its id (whs_…). Rotation: add the new secret, then retire the old one (or give it an expires_at) once the provider signs with the new one.';

CREATE OR REPLACE FUNCTION payments.retire_webhook_secret(id text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE payments.webhook_secrets s SET retired_at = now()
    WHERE s.id = retire_webhook_secret.id AND s.retired_at IS NULL;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION payments.retire_webhook_secret(text) IS
    'Stops a secret from verifying anything. Returns false if it was unknown or already retired.';

CREATE OR REPLACE FUNCTION payments.webhook_tolerance() RETURNS interval
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN coalesce((SELECT s.webhook_tolerance FROM payments.settings s), interval '5 minutes');
END
$$;
COMMENT ON FUNCTION payments.webhook_tolerance() IS 'The webhook timestamp tolerance in force (default 5 minutes).';

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

CREATE OR REPLACE TRIGGER webhook_events_append_only BEFORE UPDATE OR DELETE ON payments.webhook_events
    FOR EACH ROW EXECUTE FUNCTION payments._refuse_change();
CREATE OR REPLACE TRIGGER webhook_events_no_truncate BEFORE TRUNCATE ON payments.webhook_events
    FOR EACH STATEMENT EXECUTE FUNCTION payments._refuse_change();

CREATE OR REPLACE FUNCTION payments._apply_pending_webhooks(p_customer_id text, p_payment_id text, p_provider text,
                                                 p_provider_payment_id text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    w          record;
    v_evidence jsonb;
    v_problem  text;
BEGIN
    FOR w IN
        SELECT wp.* FROM payments.webhook_pending wp
        WHERE wp.provider_payment_id = p_provider_payment_id AND wp.provider = p_provider
        ORDER BY wp.event_created, wp.event_id
    LOOP
        -- Kept as received (rows of earlier versions too): read when applied.
        v_evidence := payments._provider_object(w.provider, 'payment', w.object);
        v_problem := payments._evidence_problem_for(p_customer_id, p_payment_id, w.to_status, v_evidence, p_provider,
                                                    p_provider_payment_id);
        IF v_problem IS NOT NULL THEN
            PERFORM payments._record_anomaly(p_customer_id, p_payment_id, v_problem, 'webhook', p_provider,
                                             p_provider_payment_id,
                                             payments._observed(v_evidence) || jsonb_build_object('webhook_event_id', w.event_id));
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

-- ingest_webhook, step by step. Each step is internal; only ingest_webhook is granted.

CREATE OR REPLACE FUNCTION payments._verify_webhook(p_provider text, p_headers jsonb, p_body bytea) RETURNS text
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

CREATE OR REPLACE FUNCTION payments._read_event(p_provider text, p_body bytea) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_event jsonb := payments._provider_event(p_provider, p_body);
BEGIN
    IF v_event ? 'error' THEN
        RAISE EXCEPTION '%', v_event ->> 'error' USING ERRCODE = 'PM304';
    END IF;
    RETURN v_event;
END
$$;
COMMENT ON FUNCTION payments._read_event(text, bytea) IS
    'Internal, step 2 of ingest_webhook: a verified body read by the provider''s wire format (payments._provider_event); PM304 when it is no event of the provider''s.';

CREATE OR REPLACE FUNCTION payments._apply_webhook(p_provider text, p_event_id text, p_event_type text,
                                        p_event_created timestamptz, p_evidence jsonb,
                                        OUT customer_id text, OUT payment_id text, OUT result text)
LANGUAGE plpgsql AS $$
DECLARE
    v_to      text := p_evidence ->> 'status';
    v_ppid    text := p_evidence ->> 'provider_payment_id';
    v_hint    text := p_evidence ->> 'our_id';
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
        customer_id := payments._payment_customer(v_hint);
        payment_id := CASE WHEN customer_id IS NOT NULL THEN v_hint END;
        v_by_hint := true;
    END IF;
    IF payment_id IS NOT NULL THEN
        v_problem := payments._evidence_problem_for(customer_id, payment_id, v_to, p_evidence, p_provider, v_ppid);
        IF v_problem IS NULL AND v_by_hint THEN
            PERFORM payments._link_provider(customer_id, payment_id, p_provider, v_ppid);
        END IF;
    END IF;
    IF payment_id IS NULL THEN
        result := 'pending_match';
    ELSIF v_problem IS NOT NULL THEN
        PERFORM payments._record_anomaly(customer_id, payment_id, v_problem, 'webhook', p_provider, v_ppid,
                                         payments._observed(p_evidence) || jsonb_build_object('webhook_event_id', p_event_id));
        result := 'mismatch';
    ELSE
        result := payments._transition(customer_id, payment_id, v_to, 'webhook', p_event_type,
                                       jsonb_build_object('webhook_event_id', p_event_id, 'event_created', p_event_created),
                                       p_evidence -> 'error');
    END IF;
END
$$;
COMMENT ON FUNCTION payments._apply_webhook(text, text, text, timestamptz, jsonb) IS
    'Internal, step 4 of ingest_webhook for a payment''s evidence: matches it to a payment (by provider id, or by our_id, the payment id the provider echoes, which links it) and applies its status as a webhook report. An object asking for other money than the payment, or another object than the one the payment is linked to, is an anomaly (result mismatch), never applied. result: applied | noop | stale | ignored | pending_match | mismatch.';

CREATE OR REPLACE FUNCTION payments._apply_money_webhook(p_provider text, p_event_id text, p_evidence jsonb,
                                              OUT customer_id text, OUT payment_id text, OUT result text)
LANGUAGE plpgsql AS $$
DECLARE
    v_payment payments.payments%ROWTYPE;
    v_kind    text := p_evidence ->> 'kind';
    v_one     text;
BEGIN
    -- The caller holds the provider payment id's lock; the payment's row lock comes next.
    SELECT pp.payment_id, pp.customer_id INTO payment_id, customer_id FROM payments.provider_payments pp
    WHERE pp.provider_payment_id = p_evidence ->> 'provider_payment_id' AND pp.provider = p_provider;
    IF payment_id IS NULL THEN
        -- About a payment that is not ours (or not linked): kept in the log, moves nothing.
        customer_id := NULL;
        result := 'ignored';
        RETURN;
    END IF;
    SELECT * INTO v_payment FROM payments.payments p
    WHERE p.customer_id = _apply_money_webhook.customer_id AND p.id = _apply_money_webhook.payment_id FOR UPDATE;
    IF v_kind = 'refund' THEN
        result := payments._apply_refund_object(v_payment, NULL, p_evidence, 'webhook', p_event_id);
    ELSIF v_kind = 'dispute' THEN
        result := payments._apply_dispute_object(v_payment, p_evidence, 'webhook', p_event_id);
    ELSE
        -- A charge: each refund it lists (the strongest outcome answers for the event).
        result := 'ignored';
        FOR v_one IN
            SELECT payments._apply_refund_object(v_payment, NULL, r.value, 'webhook', p_event_id)
            FROM jsonb_array_elements(coalesce(p_evidence -> 'refunds', '[]')) r
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
COMMENT ON FUNCTION payments._apply_money_webhook(text, text, jsonb) IS
    'Internal, step 4 of ingest_webhook for a refund''s, a charge''s or a dispute''s evidence: finds the payment linked to its provider_payment_id and applies the refund (or each refund a charge lists) or the dispute to it. result: applied | noop | stale | ignored | mismatch.';

CREATE OR REPLACE FUNCTION payments.ingest_webhook(provider text, headers jsonb, body bytea) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_secret_id text;
    v_event     jsonb;
    v_evidence  jsonb;
    v_event_id  text;
    v_created   timestamptz;
    v_ppid      text;
    v_applied   record;
    v_status    text;
BEGIN
    IF provider IS NULL OR headers IS NULL OR body IS NULL THEN
        RAISE EXCEPTION 'provider, headers and body are required' USING ERRCODE = 'PM100';
    END IF;
    v_secret_id := payments._verify_webhook(provider, headers, body);
    v_event := payments._read_event(provider, body);
    v_evidence := v_event -> 'evidence';
    v_event_id := v_event ->> 'id';
    v_created := payments._unix_time((v_event ->> 'created')::bigint);

    -- 3. Once per (provider, event id), even under concurrent deliveries. An
    -- event that moves money is serialised by its provider payment id's row
    -- lock (a redelivery names the same object); any other one changes nothing
    -- but its own row, whose primary key keeps it single.
    v_ppid := v_evidence ->> 'provider_payment_id';
    IF v_ppid IS NOT NULL THEN
        PERFORM payments._lock_provider_payment(provider, v_ppid);
    END IF;
    SELECT w.customer_id, w.payment_id, 'duplicate' AS result INTO v_applied FROM payments.webhook_events w
    WHERE w.event_id = v_event_id AND w.provider = ingest_webhook.provider;
    IF NOT FOUND THEN
        IF v_ppid IS NULL THEN
            -- Moves no money: kept in the log only.
            SELECT NULL::text AS customer_id, NULL::text AS payment_id, 'ignored' AS result INTO v_applied;
        ELSIF v_evidence ->> 'kind' = 'payment' THEN
            v_applied := payments._apply_webhook(provider, v_event_id, v_event ->> 'type', v_created, v_evidence);
        ELSE
            v_applied := payments._apply_money_webhook(provider, v_event_id, v_evidence);
        END IF;
        -- 5. Store it, append-only; an unmatched one also waits for its payment.
        INSERT INTO payments.webhook_events (id, provider, event_id, event_type, event_created, provider_payment_id,
                                             customer_id, payment_id, result, secret_id, headers, body)
        VALUES (payments._new_id('whe'), provider, v_event_id, v_event ->> 'type', v_created,
                coalesce(v_ppid, v_event ->> 'object_id'), v_applied.customer_id, v_applied.payment_id, v_applied.result,
                v_secret_id, headers, body)
        ON CONFLICT ON CONSTRAINT webhook_events_pkey DO NOTHING;
        IF NOT FOUND THEN
            IF v_applied.result <> 'ignored' THEN
                -- The same event id for another object: undo, and let the retry see the stored event.
                RAISE EXCEPTION 'webhook event % was stored by a concurrent delivery', payments._shown(v_event_id)
                    USING ERRCODE = '40001', HINT = 'retry the delivery';
            END IF;
            v_applied.result := 'duplicate';
        ELSIF v_applied.result = 'pending_match' THEN
            INSERT INTO payments.webhook_pending (provider, event_id, provider_payment_id, event_type, event_created,
                                                  to_status, last_error, object)
            VALUES (provider, v_event_id, v_ppid, v_event ->> 'type', v_created, v_evidence ->> 'status',
                    v_evidence -> 'error', payments._provider_redacted(provider, v_event -> 'object'));
        END IF;
    END IF;
    IF v_applied.payment_id IS NOT NULL THEN
        SELECT p.status INTO v_status FROM payments.payments p
        WHERE p.customer_id = v_applied.customer_id AND p.id = v_applied.payment_id;
    END IF;
    RETURN jsonb_build_object('result', v_applied.result, 'event_id', v_event_id, 'payment_id', v_applied.payment_id,
                              'status', v_status);
END
$$;
COMMENT ON FUNCTION payments.ingest_webhook(text, jsonb, bytea) IS
    'Verifies a webhook (the exact body bytes and its headers) against the provider''s active secrets, stores it once, and applies it: {"result": applied | noop | stale | ignored | pending_match | mismatch | duplicate, "event_id", "payment_id", "status"}. Bad signature: PM301; timestamp outside payments.webhook_tolerance() (default 5 minutes): PM302; no active secret: PM303; no event of the provider''s wire format (Stripe''s unless the provider is recorded under another known format''s name): PM304. An event never moves a payment backwards or out of a final state (stale); one for a payment not yet linked waits in webhook_pending. Refund events (refund.created, refund.updated, refund.failed, charge.refund.updated, charge.refunded) move the payment''s refunds, charge.dispute.* events its disputes, each checked against them as payments are.';
