-- payments: what the HTTP gateway needs: API keys, and claiming work for the
-- provider reconciler. The gateway holds no payment state; this is where it lives.

CREATE OR REPLACE FUNCTION payments.create_api_key(name text, scopes text[], customer_id text DEFAULT NULL)
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

CREATE OR REPLACE FUNCTION payments.authenticate_api_key(api_key text)
RETURNS TABLE (key_id text, scopes text[], customer_id text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY SELECT k.id, k.scopes, k.customer_id FROM payments.api_keys k
    WHERE k.key_hash = sha256(convert_to(authenticate_api_key.api_key, 'UTF8')) AND k.revoked_at IS NULL;
END
$$;
COMMENT ON FUNCTION payments.authenticate_api_key(text) IS
    'The key id, scopes and bound customer (NULL: a platform key) of a valid, unrevoked API key; no row otherwise. The lookup is by hash, so no key is compared as text.';

CREATE OR REPLACE FUNCTION payments.revoke_api_key(id text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE payments.api_keys k SET revoked_at = now() WHERE k.id = revoke_api_key.id AND k.revoked_at IS NULL;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION payments.revoke_api_key(text) IS 'Revokes an API key at once. false if it was unknown or already revoked.';

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
