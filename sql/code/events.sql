-- payments: events out to apps. Every state change of a payment, refund,
-- dispute, subscription or invoice is written to the outbox (outbox_events)
-- in the transaction that makes it (and announced with NOTIFY payments_events
-- when an administrator turned notifications on);
-- the gateway delivers each event to the endpoints registered for its type,
-- signed with the Standard Webhooks scheme (the one ingest_webhook verifies),
-- retried with backoff, in order per object. Deliveries and every attempt
-- are kept (webhook_delivery_log).

CREATE OR REPLACE TRIGGER outbox_events_append_only BEFORE UPDATE OR DELETE ON payments.outbox_events
    FOR EACH ROW EXECUTE FUNCTION payments._refuse_change();
CREATE OR REPLACE TRIGGER outbox_events_no_truncate BEFORE TRUNCATE ON payments.outbox_events
    FOR EACH STATEMENT EXECUTE FUNCTION payments._refuse_change();
CREATE OR REPLACE TRIGGER webhook_delivery_attempts_append_only BEFORE UPDATE OR DELETE ON payments.webhook_delivery_attempts
    FOR EACH ROW EXECUTE FUNCTION payments._refuse_change();
CREATE OR REPLACE TRIGGER webhook_delivery_attempts_no_truncate BEFORE TRUNCATE ON payments.webhook_delivery_attempts
    FOR EACH STATEMENT EXECUTE FUNCTION payments._refuse_change();

CREATE OR REPLACE FUNCTION payments._emit(p_customer_id text, p_object text, p_object_id text, p_status text, p_previous text,
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

CREATE OR REPLACE FUNCTION payments._notifying() RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce((SELECT s.notify_events FROM payments.settings s), false);
END
$$;
COMMENT ON FUNCTION payments._notifying() IS
    'Internal: whether changes are announced with NOTIFY (payments.set_event_notifications; default off).';

CREATE OR REPLACE FUNCTION payments.set_event_notifications(enabled boolean) RETURNS boolean
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

CREATE OR REPLACE FUNCTION payments.add_webhook_endpoint(url text, event_types text[] DEFAULT '{}', description text DEFAULT NULL)
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
       OR NOT (true = ALL (SELECT t = '*' OR (t ~ '^[a-z_]{1,64}\.(\*|[a-z_]{1,64})$'
                                             AND payments._is_allowed('event_object', split_part(t, '.', 1)))
                           FROM unnest(event_types) t)) THEN
        RAISE EXCEPTION 'event_types: up to 100 of <object>.<event>, <object>.* or * (objects: %)',
            (SELECT string_agg(v.value, ', ') FROM payments.allowed_values() v WHERE v.kind = 'event_object')
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

CREATE OR REPLACE FUNCTION payments.set_webhook_endpoint_limit(lim integer) RETURNS integer
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

CREATE OR REPLACE FUNCTION payments._masked_url(p_url text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN regexp_replace(regexp_replace(p_url, '^([a-z]+://)[^/?#]*@', '\1'), '[?#].*$', '?***');
COMMENT ON FUNCTION payments._masked_url(text) IS
    'Internal: a URL as readers see it: without a user name or password, its query and fragment masked (apps put tokens there).';

CREATE OR REPLACE FUNCTION payments._webhook_endpoints()
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

CREATE OR REPLACE VIEW payments.webhook_endpoint_list AS SELECT * FROM payments._webhook_endpoints();
COMMENT ON VIEW payments.webhook_endpoint_list IS
    'Every webhook endpoint, its URL''s query and any user name masked; readable by payments_reader (the table itself by payments_admin only).';

CREATE OR REPLACE FUNCTION payments.remove_webhook_endpoint(id text) RETURNS boolean
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

CREATE OR REPLACE FUNCTION payments.webhook_retries() RETURNS interval[]
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN coalesce((SELECT s.webhook_retries FROM payments.settings s),
                    '{5 seconds, 5 minutes, 30 minutes, 2 hours, 5 hours, 10 hours, 10 hours}'::interval[]);
END
$$;
COMMENT ON FUNCTION payments.webhook_retries() IS
    'The waits between failed delivery attempts in force (default, as Svix: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; then the delivery fails).';

CREATE OR REPLACE FUNCTION payments.set_webhook_retries(retries interval[]) RETURNS interval[]
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

CREATE OR REPLACE FUNCTION payments.claim_webhook_deliveries(lim int DEFAULT 20, lease interval DEFAULT '30 seconds',
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

CREATE OR REPLACE FUNCTION payments.record_webhook_delivery(customer_id text, event_id text, endpoint_id text, attempt integer,
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

CREATE OR REPLACE VIEW payments.event_log WITH (security_invoker) AS
SELECT e.id, e.customer_id, e.type, e.object, e.object_id, e.status, e.data, e.created_at
FROM payments.outbox_events e;
COMMENT ON VIEW payments.event_log IS 'Every event told to apps, newest last by id; readable by payments_reader.';

CREATE OR REPLACE VIEW payments.webhook_delivery_log WITH (security_invoker) AS
SELECT d.event_id, e.type, e.object_id, d.customer_id, d.endpoint_id, w.url, d.status, d.attempts,
       d.next_attempt_at, d.delivered_at, d.last_status_code, d.last_error, e.created_at
FROM payments.webhook_deliveries d
JOIN payments.outbox_events e ON e.customer_id = d.customer_id AND e.id = d.event_id
JOIN payments._webhook_endpoints() w ON w.id = d.endpoint_id;
COMMENT ON VIEW payments.webhook_delivery_log IS
    'Each event''s delivery to each endpoint: status (pending, delivered, failed), attempts, the last answer; every attempt is in webhook_delivery_attempts. Readable by payments_reader (no secrets).';
