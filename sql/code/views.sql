-- payments: read-only views for BI tools and agents (role payments_reader).
-- They run with their owner's rights, so readers need no table privileges,
-- and they show no secrets.

CREATE OR REPLACE VIEW payments.payment_history WITH (security_invoker) AS
SELECT e.payment_id, e.seq, e.from_status, e.to_status, e.applied, e.source, e.reason, e.data, e.created_at,
       encode(e.hash, 'hex') AS hash, e.customer_id
FROM payments.payment_events e;
COMMENT ON VIEW payments.payment_history IS
    'Every payment''s history in order (payment_id, seq). applied = false marks a stale report: recorded, not applied.';

CREATE OR REPLACE VIEW payments.customer_payments WITH (security_invoker) AS
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

CREATE OR REPLACE VIEW payments.open_anomalies WITH (security_invoker) AS
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
CREATE OR REPLACE FUNCTION payments._webhook_log()
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

CREATE OR REPLACE VIEW payments.webhook_log AS
SELECT l.id, l.provider, l.event_id, l.event_type, l.event_created, l.provider_payment_id, l.payment_id, l.result,
       l.still_pending, l.received_at
FROM payments._webhook_log() l;
COMMENT ON VIEW payments.webhook_log IS
    'Received webhooks without their bodies, headers or secrets: what arrived, what it matched and what was done. still_pending: waiting for its payment to be linked.';

CREATE OR REPLACE FUNCTION payments.api_reference() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
SELECT string_agg(entry, E'\n\n' ORDER BY kind, name) FROM (
    SELECT 1 AS kind, p.proname::text AS name,
           '## payments.' || p.proname || '(' || pg_get_function_arguments(p.oid) || ')' || E'\n' ||
           'returns ' || pg_get_function_result(p.oid) || E'\n\n' || coalesce(obj_description(p.oid, 'pg_proc'), '') AS entry
    FROM pg_proc p
    WHERE p.pronamespace = 'payments'::regnamespace AND p.proname !~ '^_'
    UNION ALL
    SELECT 2, c.relname::text, '## view payments.' || c.relname || E'\n\n' || coalesce(obj_description(c.oid, 'pg_class'), '')
    FROM pg_class c WHERE c.relnamespace = 'payments'::regnamespace AND c.relkind = 'v') entries
$$;
COMMENT ON FUNCTION payments.api_reference() IS
    'The SQL API reference as markdown: every function a client may call (its arguments, result and COMMENT) and every view, by name. The MCP resource payments://sql-api and the book''s generated reference page are this.';

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
