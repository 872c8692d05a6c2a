-- payments: scaling out on Citus. The schema is already shaped for it (every
-- customer's rows keyed by customer_id first); payments.distribute() hands the
-- tables to Citus and tells it which functions to run where their rows live.

CREATE OR REPLACE FUNCTION payments.distribute(shard_count int DEFAULT 32)
RETURNS TABLE (object text, distributed_by text, action text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- The tables keyed by something else than their customer (the routes from a payment id,
    -- a provider's id or an event id to it): each, its distribution column and the table it
    -- lives beside ('none': a group of its own). Every other table is placed by the catalog:
    -- one whose primary key starts with customer_id lives beside the customer's payments, any
    -- other is a reference table (a copy on every node).
    v_routes CONSTANT text[][] := ARRAY[
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
        ['payments.create_subscription(text, text, text, text, integer, timestamptz, integer, text, timestamptz, timestamptz, text)', 'customer_id', 'payments.payments']];
    v_row text[];
    v_fks text[][];
    v_table regclass;
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

    -- Payments made before Citus was installed have no route (payments._citus): each gets one.
    INSERT INTO payments.payment_customers (payment_id, customer_id)
    SELECT p.id, p.customer_id FROM payments.payments p
    ON CONFLICT (payment_id) DO NOTHING;

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

    -- (The keys are set aside, so only co-location orders this: payments first, then the
    -- rest of each customer's tables, then the routes in their order.)
    FOR v_row IN
        SELECT t.placement FROM (
            SELECT ARRAY[c.oid::regclass::text,
                         CASE WHEN k.attname = 'customer_id' THEN 'customer_id' END,
                         CASE WHEN k.attname = 'customer_id' AND c.relname = 'payments' THEN 'none'
                              WHEN k.attname = 'customer_id' THEN 'payments.payments' END] AS placement,
                   CASE WHEN k.attname IS DISTINCT FROM 'customer_id' THEN 0 WHEN c.relname = 'payments' THEN 1 ELSE 2 END
                       AS rank, c.relname::text AS name
            FROM pg_catalog.pg_class c
            LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary
            LEFT JOIN pg_catalog.pg_attribute k ON k.attrelid = c.oid AND k.attnum = i.indkey[0]
            WHERE c.relnamespace = 'payments'::regnamespace AND c.relkind = 'r'
              AND c.oid::regclass::text <> ALL (ARRAY(
                  SELECT v_routes[n][1] FROM pg_catalog.generate_series(1, pg_catalog.array_length(v_routes, 1)) n))
            UNION ALL
            SELECT ARRAY[v_routes[n][1], v_routes[n][2], v_routes[n][3]], 3 + n, ''
            FROM pg_catalog.generate_series(1, pg_catalog.array_length(v_routes, 1)) n) t
        ORDER BY t.rank, t.name
    LOOP
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
    -- views may read the tables behind them (found in the catalog, as roles.sql finds their
    -- columns), which hold no secrets, keys or webhook bodies (webhook_log reads through a
    -- function with its owner's rights). (Readers then also see a payment's, refund's or
    -- transfer's idempotency key and its fingerprint, and a hold's request id: a client's retry
    -- token and a hash of the call, no secret.)
    FOR v_table IN
        SELECT DISTINCT t.oid::regclass
        FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid AND d.classid = 'pg_catalog.pg_rewrite'::regclass
        JOIN pg_catalog.pg_class v ON v.oid = r.ev_class AND v.relkind = 'v'
        JOIN pg_catalog.pg_class t ON t.oid = d.refobjid AND d.refclassid = 'pg_catalog.pg_class'::regclass
                                  AND t.relkind = 'r' AND t.relnamespace = v.relnamespace
        WHERE v.relnamespace = 'payments'::regnamespace
    LOOP
        EXECUTE pg_catalog.format('GRANT SELECT ON %s TO payments_reader, payments_gateway', v_table);
    END LOOP;

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
    'Scales the extension out on Citus (run once on the coordinator, after CREATE EXTENSION payments reached every node; idempotent): every table whose primary key starts with customer_id (each customer''s payments (with their idempotency keys), history, anomalies, provider commands, refunds, disputes, usage events (with their daily totals), subscriptions (with their history, feature usage, consumptions and meter claims), invoices, outbox events and their webhook deliveries) distributed by customer_id and co-located; payment_customers by payment id, provider_payments, webhook_pending and provider_snapshots by provider payment id, webhook_events by event id; secrets, API keys, settings, reconciliation runs, meters, plans, billing settings, invoice numbers, webhook endpoints (with their secrets) and dashboard users (with their sessions): every other table, as reference tables. create_payment, record_usage, consume and create_subscription run on the node of their customer, the calls naming a payment id on the node of its route. Because views cannot lend their owner''s rights to shards, payments_reader and payments_gateway may then select the tables behind the views, found in the catalog (payments, their events, anomalies, refunds, disputes, usage events, plans, subscriptions, invoices, outbox events, webhook deliveries, ledger transfers, credit grants, holds: no secrets, API keys or webhook bodies). Returns what it did per object. PM401 without Citus or off the coordinator.';
