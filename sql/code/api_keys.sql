-- payments: the gateway's API keys (scopes, an optional customer binding), made and checked
-- in SQL; the gateway keeps no key of its own.

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

