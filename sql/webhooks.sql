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
COMMENT ON FUNCTION payments._stripe_event_status(text) IS 'Internal: the payment status a Stripe event type reports, or NULL.';
COMMENT ON FUNCTION payments._is_json_object(bytea) IS 'Internal: whether bytes are UTF-8 JSON with an object at the top.';

-- ---------------------------------------------------------------------------
-- Secrets
-- ---------------------------------------------------------------------------
CREATE TABLE payments.webhook_secrets (
    id         text COLLATE "C" PRIMARY KEY,
    provider   text NOT NULL CHECK (provider <> ''),
    scheme     text NOT NULL CHECK (scheme IN ('stripe', 'standard')),
    secret     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    retired_at timestamptz
);
CREATE INDEX webhook_secrets_provider_idx ON payments.webhook_secrets (provider) WHERE retired_at IS NULL;
COMMENT ON TABLE payments.webhook_secrets IS
    'Webhook signing secrets per provider. Several may be active at once, so a secret can be rotated without downtime. Readable by payments_admin only; never shown in a view or an error.';
COMMENT ON COLUMN payments.webhook_secrets.secret IS 'The signing secret as the provider shows it (whsec_…).';
COMMENT ON COLUMN payments.webhook_secrets.expires_at IS 'When set, the secret stops verifying at this time (the old secret''s end during a rotation).';
COMMENT ON COLUMN payments.webhook_secrets.retired_at IS 'Set by retire_webhook_secret: the secret no longer verifies anything.';
SELECT pg_catalog.pg_extension_config_dump('payments.webhook_secrets', '');

CREATE FUNCTION payments.add_webhook_secret(provider text, scheme text, secret text,
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

CREATE FUNCTION payments.retire_webhook_secret(id text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE payments.webhook_secrets s SET retired_at = now()
    WHERE s.id = retire_webhook_secret.id AND s.retired_at IS NULL;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION payments.retire_webhook_secret(text) IS
    'Stops a secret from verifying anything. Returns false if it was unknown or already retired.';

-- ---------------------------------------------------------------------------
-- Received events
-- ---------------------------------------------------------------------------
CREATE TABLE payments.webhook_events (
    id                  text COLLATE "C" PRIMARY KEY,
    provider            text NOT NULL,
    event_id            text NOT NULL,
    event_type          text NOT NULL,
    event_created       timestamptz,
    provider_payment_id text,
    payment_id          text COLLATE "C" REFERENCES payments.payments (id),
    result              text NOT NULL CHECK (result IN ('applied', 'stale', 'ignored', 'pending_match')),
    secret_id           text COLLATE "C" NOT NULL REFERENCES payments.webhook_secrets (id),
    headers             jsonb NOT NULL,
    body                bytea NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, event_id)
);
CREATE INDEX webhook_events_payment_id_idx ON payments.webhook_events (payment_id) WHERE payment_id IS NOT NULL;
COMMENT ON TABLE payments.webhook_events IS
    'Every verified webhook, once per (provider, event_id), with the exact body and headers received, the secret that verified it and what ingest_webhook did with it. Append-only. Unverified bodies are never stored.';
COMMENT ON COLUMN payments.webhook_events.result IS
    'applied: it moved the payment; stale: older than the payment''s state, recorded only; ignored: an event type that moves no payment; pending_match: no payment had its provider id yet (see webhook_pending).';
COMMENT ON COLUMN payments.webhook_events.payment_id IS 'The payment it matched when received; NULL for ignored and pending_match events.';
SELECT pg_catalog.pg_extension_config_dump('payments.webhook_events', '');

CREATE TRIGGER webhook_events_append_only BEFORE UPDATE OR DELETE ON payments.webhook_events
    FOR EACH ROW EXECUTE FUNCTION payments._refuse_change();
CREATE TRIGGER webhook_events_no_truncate BEFORE TRUNCATE ON payments.webhook_events
    FOR EACH STATEMENT EXECUTE FUNCTION payments._refuse_change();

CREATE TABLE payments.webhook_pending (
    provider            text NOT NULL,
    event_id            text NOT NULL,
    provider_payment_id text NOT NULL,
    event_type          text NOT NULL,
    event_created       timestamptz,
    to_status           text NOT NULL,
    last_error          jsonb,
    PRIMARY KEY (provider, event_id),
    FOREIGN KEY (provider, event_id) REFERENCES payments.webhook_events (provider, event_id)
);
CREATE INDEX webhook_pending_match_idx ON payments.webhook_pending (provider, provider_payment_id);
COMMENT ON TABLE payments.webhook_pending IS
    'Verified events that arrived before their payment was linked to its provider id (the webhook beat the API response). record_provider_result applies them, in event order, when the id is linked, and removes them from here.';
SELECT pg_catalog.pg_extension_config_dump('payments.webhook_pending', '');

CREATE FUNCTION payments._apply_pending_webhooks(p_payment_id text, p_provider text, p_provider_payment_id text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    w payments.webhook_pending%ROWTYPE;
BEGIN
    FOR w IN
        SELECT * FROM payments.webhook_pending wp
        WHERE wp.provider = p_provider AND wp.provider_payment_id = p_provider_payment_id
        ORDER BY wp.event_created, wp.event_id
    LOOP
        PERFORM payments._transition(p_payment_id, w.to_status, 'webhook', w.event_type,
                                     jsonb_build_object('webhook_event_id', w.event_id, 'event_created', w.event_created,
                                                        'arrived_before_link', true),
                                     w.last_error);
        DELETE FROM payments.webhook_pending wp WHERE wp.provider = w.provider AND wp.event_id = w.event_id;
    END LOOP;
END
$$;
COMMENT ON FUNCTION payments._apply_pending_webhooks(text, text, text) IS
    'Internal: applies, oldest first, the webhooks that waited for a provider payment id, as webhook reports.';

CREATE FUNCTION payments.ingest_webhook(provider text, headers jsonb, body bytea) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_tolerance  interval := coalesce(nullif(current_setting('payments.webhook_tolerance', true), ''), '5 minutes')::interval;
    v_secret     record;
    v_secret_id  text;
    v_failures   text[] := '{}';
    v_event      jsonb;
    v_object     jsonb;
    v_event_id   text;
    v_type       text;
    v_created    timestamptz;
    v_ppid       text;
    v_hint       text;
    v_to         text;
    v_payment_id text;
    v_result     text;
BEGIN
    IF provider IS NULL OR headers IS NULL OR body IS NULL THEN
        RAISE EXCEPTION 'provider, headers and body are required' USING ERRCODE = 'PM100';
    END IF;

    -- 1. Verify the exact bytes against each active secret (rotation: several may be).
    FOR v_secret IN
        SELECT s.id, s.scheme, s.secret FROM payments.webhook_secrets s
        WHERE s.provider = ingest_webhook.provider AND s.retired_at IS NULL
          AND (s.expires_at IS NULL OR s.expires_at > now())
        ORDER BY s.created_at DESC
    LOOP
        v_failures := v_failures || payments.webhook_signature_failure(v_secret.scheme, v_secret.secret, headers, body,
                                                                       v_tolerance, now());
        IF v_failures[cardinality(v_failures)] IS NULL THEN
            v_secret_id := v_secret.id;
            EXIT;
        END IF;
    END LOOP;
    IF v_secret_id IS NULL THEN
        IF cardinality(v_failures) = 0 THEN
            RAISE EXCEPTION 'no active webhook secret for provider %', provider USING ERRCODE = 'PM303',
                HINT = 'add one with payments.add_webhook_secret';
        ELSIF v_failures && ARRAY['timestamp_too_old', 'timestamp_in_future'] THEN
            RAISE EXCEPTION 'webhook timestamp is outside the tolerance of %', v_tolerance USING ERRCODE = 'PM302';
        END IF;
        RAISE EXCEPTION 'webhook signature verification failed: %', v_failures[1] USING ERRCODE = 'PM301';
    END IF;

    -- 2. Parse Stripe's event shape.
    IF NOT payments._is_json_object(body) THEN
        RAISE EXCEPTION 'webhook body is not a JSON object' USING ERRCODE = 'PM304';
    END IF;
    v_event := convert_from(body, 'UTF8')::jsonb;
    v_event_id := v_event ->> 'id';
    v_type := v_event ->> 'type';
    IF v_event_id IS NULL OR v_type IS NULL OR jsonb_typeof(v_event -> 'id') <> 'string' THEN
        RAISE EXCEPTION 'webhook event has no id or type' USING ERRCODE = 'PM304';
    END IF;
    IF (v_event ->> 'created') ~ '^[0-9]{1,12}$' THEN
        v_created := timestamptz 'epoch' + (v_event ->> 'created')::bigint * interval '1 second';
    END IF;
    v_object := v_event -> 'data' -> 'object';

    -- 3. Once per (provider, event id), even under concurrent deliveries.
    PERFORM pg_advisory_xact_lock(hashtextextended('payments-webhook/' || provider || '/' || v_event_id, 0));
    SELECT w.payment_id INTO v_payment_id FROM payments.webhook_events w
    WHERE w.provider = ingest_webhook.provider AND w.event_id = v_event_id;
    IF FOUND THEN
        RETURN jsonb_build_object('result', 'duplicate', 'event_id', v_event_id, 'payment_id', v_payment_id,
                                  'status', (SELECT p.status FROM payments.payments p WHERE p.id = v_payment_id));
    END IF;

    -- 4. Match and apply.
    v_to := payments._stripe_event_status(v_type);
    v_ppid := v_object ->> 'id';
    v_hint := v_object -> 'metadata' ->> 'payment_id';
    IF v_to IS NULL OR v_ppid IS NULL THEN
        v_result := 'ignored';
    ELSE
        PERFORM payments._lock_provider_payment(provider, v_ppid);
        SELECT p.id INTO v_payment_id FROM payments.payments p
        WHERE p.provider = ingest_webhook.provider AND p.provider_payment_id = v_ppid;
        IF NOT FOUND AND v_hint IS NOT NULL
           AND EXISTS (SELECT FROM payments.payments p WHERE p.id = v_hint AND p.provider_payment_id IS NULL) THEN
            -- Our own id in metadata: link the provider id now.
            PERFORM payments._link_provider(v_hint, provider, v_ppid);
            v_payment_id := v_hint;
        END IF;
        IF v_payment_id IS NULL THEN
            v_result := 'pending_match';
        ELSE
            v_result := CASE payments._transition(
                                v_payment_id, v_to, 'webhook', v_type,
                                jsonb_build_object('webhook_event_id', v_event_id, 'event_created', v_created),
                                v_object -> 'last_payment_error')
                        WHEN 'applied' THEN 'applied' ELSE 'stale' END;
        END IF;
    END IF;

    INSERT INTO payments.webhook_events (id, provider, event_id, event_type, event_created, provider_payment_id,
                                         payment_id, result, secret_id, headers, body)
    VALUES (payments._new_id('whe'), provider, v_event_id, v_type, v_created, v_ppid,
            v_payment_id, v_result, v_secret_id, headers, body);
    IF v_result = 'pending_match' THEN
        INSERT INTO payments.webhook_pending (provider, event_id, provider_payment_id, event_type, event_created,
                                              to_status, last_error)
        VALUES (provider, v_event_id, v_ppid, v_type, v_created, v_to, v_object -> 'last_payment_error');
    END IF;

    RETURN jsonb_build_object('result', v_result, 'event_id', v_event_id, 'payment_id', v_payment_id,
                              'status', (SELECT p.status FROM payments.payments p WHERE p.id = v_payment_id));
END
$$;
COMMENT ON FUNCTION payments.ingest_webhook(text, jsonb, bytea) IS
    'Verifies a webhook (the exact body bytes and its headers) against the provider''s active secrets, stores it once, and applies it: {"result": applied | duplicate | stale | ignored | pending_match, "event_id", "payment_id", "status"}. Bad signature: PM301; timestamp outside payments.webhook_tolerance (default 5 minutes): PM302; no active secret: PM303; not a Stripe event: PM304. An event never moves a payment backwards or out of a final state; one for a payment not yet linked waits in webhook_pending.';
