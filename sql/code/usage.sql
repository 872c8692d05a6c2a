-- payments: usage metering. Meters say how a customer's usage events add up
-- (sum, count, count of unique values of a property, max, last); record_usage
-- keeps each event once per idempotency key, so an agent's retry is never
-- counted twice; usage_summary answers "how much this period".
-- Timestamps follow Stripe's meter events: at most 35 days old, at most 5
-- minutes ahead.

CREATE OR REPLACE TRIGGER usage_events_append_only BEFORE UPDATE OR DELETE ON payments.usage_events
    FOR EACH ROW EXECUTE FUNCTION payments._refuse_change();
CREATE OR REPLACE TRIGGER usage_events_no_truncate BEFORE TRUNCATE ON payments.usage_events
    FOR EACH STATEMENT EXECUTE FUNCTION payments._refuse_change();

CREATE OR REPLACE FUNCTION payments.create_meter(code text, aggregation text, unique_property text DEFAULT NULL,
                                      name text DEFAULT NULL) RETURNS SETOF payments.meters
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_meter payments.meters%ROWTYPE;
BEGIN
    IF code IS NULL OR code !~ '^[a-z][a-z0-9_.-]{0,63}$' THEN
        RAISE EXCEPTION 'a meter code is 1 to 64 lower case letters, digits, _ . - starting with a letter, not %',
            quote_nullable(payments._shown(code)) USING ERRCODE = 'PM100';
    END IF;
    IF aggregation IS NULL OR NOT payments._is_allowed('meter_aggregation', aggregation) THEN
        RAISE EXCEPTION 'aggregation must be sum, count, count_unique, max or last, not %',
            quote_nullable(payments._shown(aggregation)) USING ERRCODE = 'PM100';
    END IF;
    IF (aggregation = 'count_unique') <> (unique_property IS NOT NULL) OR length(unique_property) NOT BETWEEN 1 AND 40
       OR length(name) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'count_unique needs a unique_property (1 to 40 characters), the other aggregations none; a name is 1 to 255 characters'
            USING ERRCODE = 'PM100';
    END IF;
    INSERT INTO payments.meters AS m (code, name, aggregation, unique_property)
    VALUES (create_meter.code, create_meter.name, create_meter.aggregation, create_meter.unique_property)
    ON CONFLICT ON CONSTRAINT meters_pkey DO NOTHING;
    SELECT * INTO v_meter FROM payments.meters m WHERE m.code = create_meter.code;
    -- Asked again the same way: the same meter; another way: refused (events already count by it).
    IF (v_meter.aggregation, v_meter.unique_property, v_meter.name)
       IS DISTINCT FROM (create_meter.aggregation, create_meter.unique_property, create_meter.name) THEN
        RAISE EXCEPTION 'meter % exists with another definition', v_meter.code USING ERRCODE = 'PM201',
            HINT = 'a meter''s definition never changes: make a meter with a new code';
    END IF;
    RETURN NEXT v_meter;
END
$$;
COMMENT ON FUNCTION payments.create_meter(text, text, text, text) IS
    'Makes a meter (admin): its code, aggregation (sum, count, count_unique with the unique_property, max, last) and name. The same call again returns it; another definition for an existing code is PM201.';

CREATE OR REPLACE FUNCTION payments._usage_event_problem(p_meter text, p_aggregation text, p_unique_property text,
                                              p_quantity numeric, p_occurred_at timestamptz, p_properties jsonb,
                                              p_at timestamptz) RETURNS text
LANGUAGE sql STABLE
-- One expression (inlined where it is used): a batch asks it of every event.
RETURN CASE
    WHEN p_quantity IS NULL OR p_quantity = 'NaN' OR p_quantity < 0 OR p_quantity >= 1e15 THEN
        'quantity must be a number from 0 to 10^15'
    WHEN p_occurred_at IS NULL OR p_occurred_at > p_at + interval '5 minutes' THEN
        'occurred_at is more than 5 minutes in the future'
    WHEN p_occurred_at < p_at - interval '35 days' THEN
        'occurred_at is more than 35 days in the past'
    WHEN coalesce(p_properties, '{}') <> '{}' AND payments._metadata_problem(p_properties) IS NOT NULL THEN
        replace(payments._metadata_problem(p_properties), 'metadata', 'properties')
    WHEN p_aggregation = 'count_unique'
         AND coalesce(jsonb_typeof(p_properties -> p_unique_property), 'null') NOT IN ('string', 'number') THEN
        'meter ' || p_meter || ' counts distinct values of property ' || p_unique_property || ': the event has none'
END;
COMMENT ON FUNCTION payments._usage_event_problem(text, text, text, numeric, timestamptz, jsonb, timestamptz) IS
    'Internal: why a usage event on a meter (its code, aggregation and unique property) cannot be recorded at time p_at (its quantity, time or properties), or NULL.';

CREATE OR REPLACE FUNCTION payments.record_usage(idempotency_key text, customer_id text, meter text, quantity numeric,
                                      occurred_at timestamptz DEFAULT NULL, properties jsonb DEFAULT '{}')
RETURNS TABLE (id text, outcome text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_meter    payments.meters%ROWTYPE;
    v_at       timestamptz := coalesce(occurred_at, now());
    v_props    jsonb := coalesce(properties, '{}');
    v_problem  text;
    v_fp       bytea;
    v_existing record;
BEGIN
    IF idempotency_key IS NULL OR length(idempotency_key) NOT BETWEEN 1 AND 255
       OR customer_id IS NULL OR length(customer_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'idempotency_key and customer_id must be 1 to 255 characters' USING ERRCODE = 'PM100';
    END IF;
    SELECT * INTO v_meter FROM payments.meters m WHERE m.code = record_usage.meter;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'meter % not found', quote_nullable(payments._shown(record_usage.meter)) USING ERRCODE = 'PM204';
    END IF;
    v_problem := payments._usage_event_problem(v_meter.code, v_meter.aggregation, v_meter.unique_property, quantity, v_at,
                                               v_props, now());
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION '%', v_problem USING ERRCODE = 'PM100';
    END IF;
    -- The time only when the caller gave it: a retry without one is the same event.
    v_fp := sha256(convert_to(jsonb_build_array(v_meter.code, quantity, payments._epoch_micros(occurred_at), v_props)::text,
                              'UTF8'));
    id := payments._new_id('use');
    INSERT INTO payments.usage_events AS u (id, customer_id, meter, quantity, occurred_at, properties, idempotency_key,
                                            fingerprint)
    VALUES (record_usage.id, record_usage.customer_id, v_meter.code, quantity, v_at, v_props,
            record_usage.idempotency_key, v_fp)
    ON CONFLICT ON CONSTRAINT usage_events_idempotency_key DO NOTHING;
    IF FOUND THEN
        INSERT INTO payments.usage_daily AS d (customer_id, meter, day, stripe, quantity, events, max_quantity)
        VALUES (record_usage.customer_id, v_meter.code, (v_at AT TIME ZONE 'UTC')::date, pg_backend_pid() % 16,
                quantity, 1, quantity)
        ON CONFLICT ON CONSTRAINT usage_daily_pkey DO UPDATE
        SET quantity = d.quantity + excluded.quantity, events = d.events + 1,
            max_quantity = greatest(d.max_quantity, excluded.max_quantity);
        -- Usage no payment could charge is refused now, not when it is billed (all of it rolls back).
        v_problem := payments._pending_usage_problem(record_usage.customer_id, v_meter.code);
        IF v_problem IS NOT NULL THEN
            RAISE EXCEPTION '%', v_problem USING ERRCODE = 'PM104';
        END IF;
        outcome := 'created';
        RETURN NEXT;
        RETURN;
    END IF;
    -- The key was used: the same event again changes nothing.
    SELECT u.id, u.fingerprint INTO v_existing FROM payments.usage_events u
    WHERE u.customer_id = record_usage.customer_id AND u.idempotency_key = record_usage.idempotency_key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'idempotency key % was claimed by a concurrent transaction', quote_literal(idempotency_key)
            USING ERRCODE = '40001', HINT = 'retry the transaction';
    ELSIF v_existing.fingerprint <> v_fp THEN
        RAISE EXCEPTION 'idempotency key % was already used for another usage event', quote_literal(idempotency_key)
            USING ERRCODE = 'PM201', DETAIL = 'the key belongs to usage event ' || v_existing.id;
    END IF;
    id := v_existing.id;
    outcome := 'replayed';
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION payments.record_usage(text, text, text, numeric, timestamptz, jsonb) IS
    'Records one usage event of a customer on a meter, once per (customer, idempotency_key): the same event again is replayed (outcome replayed) and counts once; the key with another event is PM201. quantity: 0 to 10^15, exact; occurred_at (default: now, and then not part of what a replay must repeat) at most 35 days ago and 5 minutes ahead (as Stripe''s meter events); properties a flat object (count_unique meters need their property). Unknown meter PM204; bad input PM100; an event that would price the next invoice of the subscription billing the meter (its fee and all usage since the period''s start) above what one payment can charge PM104. In the caller''s transaction.';

-- A batch of usage, two ways. The set path records the whole batch in a handful of
-- statements (one INSERT for every event, one upsert per day total); the one-by-one path
-- calls record_usage for each event in a subtransaction of its own. Both give the same
-- answers; the set path hands over to the other when only it can give them: a value
-- whose cast PostgreSQL might refuse, or a batch that would raise as a whole (usage no
-- payment could charge, a key claimed concurrently).

CREATE OR REPLACE FUNCTION payments._record_usage_each(p_events jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_event  jsonb;
    v_index  integer;
    v_one    record;
    v_result jsonb[] := '{}';
    v_state  text;
    v_msg    text;
BEGIN
    -- In the order of the usage_daily rows they add to, then of the keys, so that two batches
    -- rarely wait on each other in a cycle (times with other UTC offsets can still order days
    -- apart; a deadlock then fails one event with 40P01, to be retried).
    FOR v_event, v_index IN
        SELECT e.value, (e.ordinality - 1)::integer FROM jsonb_array_elements(p_events) WITH ORDINALITY e
        ORDER BY e.value ->> 'customer_id', e.value ->> 'meter', e.value ->> 'occurred_at',
                 e.value ->> 'idempotency_key', e.ordinality
    LOOP
        BEGIN
            IF jsonb_typeof(v_event) IS DISTINCT FROM 'object' OR jsonb_typeof(v_event -> 'quantity') NOT IN ('number', 'string')
               OR (v_event ? 'occurred_at' AND jsonb_typeof(v_event -> 'occurred_at') <> 'string') THEN
                RAISE EXCEPTION 'each event is an object with idempotency_key, customer_id, meter, quantity and optionally occurred_at (text) and properties'
                    USING ERRCODE = 'PM100';
            END IF;
            SELECT * INTO v_one FROM payments.record_usage(
                v_event ->> 'idempotency_key', v_event ->> 'customer_id', v_event ->> 'meter',
                (v_event ->> 'quantity')::numeric, (v_event ->> 'occurred_at')::timestamptz,
                coalesce(v_event -> 'properties', '{}'));
            v_result[v_index + 1] := jsonb_build_object('index', v_index, 'id', v_one.id, 'outcome', v_one.outcome);
        EXCEPTION WHEN OTHERS THEN
            -- One bad event is reported with its SQLSTATE; the others are recorded.
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
            v_result[v_index + 1] := jsonb_build_object('index', v_index, 'error',
                                                        jsonb_build_object('sqlstate', v_state, 'message', left(v_msg, 200)));
        END;
    END LOOP;
    RETURN to_jsonb(v_result);
END
$$;
COMMENT ON FUNCTION payments._record_usage_each(jsonb) IS
    'Internal: record_usage_batch one event at a time (record_usage in a subtransaction each): the path that answers every batch, used when the set path cannot.';

CREATE OR REPLACE FUNCTION payments._record_usage_set(p_events jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    -- One element per event, in the order the one-by-one path takes them (customer, meter, time, key, then as given).
    v_index             integer[];
    v_key               text[];
    v_customer          text[];
    v_meter             text[];
    v_quantity          numeric[];
    v_at                timestamptz[];
    v_props             jsonb[];
    v_fp                bytea[];
    v_id                text[];      -- the new event's id; NULL for an event with an error
    v_error             jsonb[];
    v_created           boolean[];
    v_unsafe            bigint;
    v_meters            text[];
    v_aggregations      text[];
    v_unique_properties text[];
    v_inserted          bigint;
    v_claims            text[];
    v_held              jsonb;       -- what each key holds after the INSERT: {"[customer, key]": [id, fingerprint]}
    v_result            jsonb;
    v_pair              record;
    v_plans             text[];
    v_problem           text;
BEGIN
    -- The meters, read first: the statement below then touches no table (on Citus it runs where it is called).
    SELECT array_agg(m.code), array_agg(m.aggregation), array_agg(m.unique_property)
    INTO v_meters, v_aggregations, v_unique_properties FROM payments.meters m;
    SELECT array_agg(t.idx ORDER BY t.ord), array_agg(t.key ORDER BY t.ord), array_agg(t.customer ORDER BY t.ord),
           array_agg(t.meter ORDER BY t.ord), array_agg(t.quantity ORDER BY t.ord), array_agg(t.at ORDER BY t.ord),
           array_agg(t.props ORDER BY t.ord),
           -- As record_usage fingerprints it: the time only when the caller gave it.
           array_agg(CASE WHEN t.error IS NULL THEN sha256(convert_to(jsonb_build_array(t.meter, t.quantity,
                         payments._epoch_micros(t.given_at), t.props)::text, 'UTF8')) END ORDER BY t.ord),
           array_agg(CASE WHEN t.error IS NULL THEN payments._new_id('use') END ORDER BY t.ord),
           array_agg(t.error ORDER BY t.ord), count(*) FILTER (WHERE t.unsafe)
    INTO v_index, v_key, v_customer, v_meter, v_quantity, v_at, v_props, v_fp, v_id, v_error, v_unsafe
    FROM (
        SELECT p.*, CASE
                   WHEN p.bad_shape THEN jsonb_build_object('sqlstate', 'PM100', 'message',
                       'each event is an object with idempotency_key, customer_id, meter, quantity and optionally occurred_at (text) and properties')
                   WHEN NOT p.ids_ok THEN jsonb_build_object('sqlstate', 'PM100', 'message',
                       'idempotency_key and customer_id must be 1 to 255 characters')
                   WHEN p.meter_code IS NULL THEN jsonb_build_object('sqlstate', 'PM204', 'message',
                       left('meter ' || quote_nullable(payments._shown(p.meter)) || ' not found', 200))
                   WHEN p.problem IS NOT NULL THEN jsonb_build_object('sqlstate', 'PM100', 'message', left(p.problem, 200))
               END AS error
        FROM (
            SELECT v.*, CASE WHEN NOT v.bad_shape AND v.ids_ok AND v.meter_code IS NOT NULL AND NOT v.unsafe
                             THEN payments._usage_event_problem(v.meter_code, v.aggregation, v.unique_property, v.quantity,
                                                                v.at, v.props, now()) END AS problem
            FROM (
                SELECT (e.ordinality - 1)::integer AS idx, e.value ->> 'idempotency_key' AS key,
                       e.value ->> 'customer_id' AS customer, e.value ->> 'meter' AS meter, m.code AS meter_code,
                       m.aggregation, m.unique_property,
                       coalesce(e.value -> 'properties', '{}') AS props, c.bad_shape, c.unsafe,
                       coalesce(length(e.value ->> 'idempotency_key') BETWEEN 1 AND 255
                                AND length(e.value ->> 'customer_id') BETWEEN 1 AND 255, false) AS ids_ok,
                       q.quantity, q.given_at, coalesce(q.given_at, now()) AS at,
                       row_number() OVER (ORDER BY e.value ->> 'customer_id', e.value ->> 'meter',
                                                   e.value ->> 'occurred_at', e.value ->> 'idempotency_key',
                                                   e.ordinality) AS ord
                FROM jsonb_array_elements(p_events) WITH ORDINALITY e
                LEFT JOIN unnest(v_meters, v_aggregations, v_unique_properties) AS m(code, aggregation, unique_property)
                       ON m.code = e.value ->> 'meter'
                CROSS JOIN LATERAL (SELECT
                    -- As the one-by-one path checks it (a missing quantity is the quantity's problem).
                    coalesce(jsonb_typeof(e.value) IS DISTINCT FROM 'object'
                             OR jsonb_typeof(e.value -> 'quantity') NOT IN ('number', 'string')
                             OR (e.value ? 'occurred_at' AND jsonb_typeof(e.value -> 'occurred_at') <> 'string'),
                             false) AS bad_shape,
                    -- A value PostgreSQL might refuse to cast: only the one-by-one path reports it as PostgreSQL does.
                    coalesce((jsonb_typeof(e.value -> 'quantity') = 'string'
                              AND (e.value ->> 'quantity') !~ '^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,4})?$')
                             OR (jsonb_typeof(e.value -> 'occurred_at') = 'string'
                                 AND NOT payments._is_rfc3339(e.value ->> 'occurred_at')), false) AS unsafe) c
                CROSS JOIN LATERAL (SELECT
                    CASE WHEN NOT c.unsafe AND NOT c.bad_shape THEN (e.value ->> 'quantity')::numeric END AS quantity,
                    CASE WHEN NOT c.unsafe AND NOT c.bad_shape THEN (e.value ->> 'occurred_at')::timestamptz END AS given_at) q
            ) v
            OFFSET 0  -- each event's problem found once, not once per mention above
        ) p
    ) t;
    IF v_unsafe > 0 THEN
        RETURN NULL;
    END IF;

    -- Every event at once; of two with one key, the first in this order is the one created.
    -- (What went in is counted from RETURNING: on Citus, ROW_COUNT counts the rows offered.)
    WITH inserted AS (
        INSERT INTO payments.usage_events AS u (id, customer_id, meter, quantity, occurred_at, properties, idempotency_key,
                                                fingerprint)
        SELECT r.id, r.customer, r.meter, r.quantity, r.at, r.props, r.key, r.fp
        FROM unnest(v_id, v_customer, v_meter, v_quantity, v_at, v_props, v_key, v_fp) WITH ORDINALITY
             AS r(id, customer, meter, quantity, at, props, key, fp, n)
        WHERE r.id IS NOT NULL
        ORDER BY r.n
        ON CONFLICT ON CONSTRAINT usage_events_idempotency_key DO NOTHING
        RETURNING u.id)
    SELECT count(*) INTO v_inserted FROM inserted;

    -- Each event's answer: ours (created), the same event (replayed), another (PM201). When
    -- every event without an error went in, each key holds ours: nothing to look up.
    IF v_inserted = (SELECT count(*) FROM unnest(v_id) i WHERE i IS NOT NULL) THEN
        SELECT jsonb_agg(CASE WHEN r.error IS NOT NULL THEN jsonb_build_object('index', r.idx, 'error', r.error)
                              ELSE jsonb_build_object('index', r.idx, 'id', r.id, 'outcome', 'created') END ORDER BY r.idx),
               array_agg(r.error IS NULL ORDER BY r.n)
        INTO v_result, v_created
        FROM unnest(v_index, v_id, v_error) WITH ORDINALITY AS r(idx, id, error, n);
    ELSE
        -- (By arrays, not a join with them: on Citus each shard answers for its customers.)
        SELECT jsonb_object_agg(jsonb_build_array(u.customer_id, u.idempotency_key)::text,
                                jsonb_build_array(u.id, encode(u.fingerprint, 'hex')))
        INTO v_held
        FROM payments.usage_events u
        WHERE u.customer_id = ANY (v_customer) AND u.idempotency_key = ANY (v_key);
        SELECT jsonb_agg(CASE
                   WHEN r.error IS NOT NULL THEN jsonb_build_object('index', r.idx, 'error', r.error)
                   WHEN h.held IS NULL THEN NULL
                   WHEN h.held ->> 0 = r.id THEN jsonb_build_object('index', r.idx, 'id', r.id, 'outcome', 'created')
                   WHEN h.held ->> 1 = encode(r.fp, 'hex') THEN
                       jsonb_build_object('index', r.idx, 'id', h.held ->> 0, 'outcome', 'replayed')
                   ELSE jsonb_build_object('index', r.idx, 'error', jsonb_build_object('sqlstate', 'PM201', 'message',
                       left('idempotency key ' || quote_literal(r.key) || ' was already used for another usage event', 200)))
               END ORDER BY r.idx),
               array_agg(r.error IS NULL AND h.held ->> 0 = r.id ORDER BY r.n)
        INTO v_result, v_created
        FROM unnest(v_index, v_id, v_customer, v_key, v_fp, v_error) WITH ORDINALITY AS r(idx, id, customer, key, fp, error, n)
        CROSS JOIN LATERAL (SELECT v_held -> jsonb_build_array(r.customer, r.key)::text AS held) h;
        IF jsonb_path_exists(v_result, '$[*] ? (@ == null)') THEN
            -- A key whose insert waited on a transaction that did not leave it visible: the one-by-one path tells.
            RAISE EXCEPTION 'an idempotency key was claimed by a concurrent transaction' USING ERRCODE = '40001';
        END IF;
    END IF;

    -- The running totals: one upsert per customer, meter and day, in that order (as the locks are taken).
    INSERT INTO payments.usage_daily AS d (customer_id, meter, day, stripe, quantity, events, max_quantity)
    SELECT r.customer, r.meter, (r.at AT TIME ZONE 'UTC')::date, pg_backend_pid() % 16, sum(r.quantity), count(*),
           max(r.quantity)
    FROM unnest(v_created, v_customer, v_meter, v_quantity, v_at) AS r(created, customer, meter, quantity, at)
    WHERE r.created
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT ON CONSTRAINT usage_daily_pkey DO UPDATE
    SET quantity = d.quantity + excluded.quantity, events = d.events + excluded.events,
        max_quantity = greatest(d.max_quantity, excluded.max_quantity);

    -- Usage no payment could charge: the one-by-one path refuses the very event that crosses.
    -- Only a customer whose subscription bills the meter can have any. Checking the totals
    -- once is checking after each event only while a price never falls as usage grows; a
    -- volume price can (all units at the tier reached), so such a plan's batch goes one by one.
    SELECT array_agg(jsonb_build_array(c.customer_id, c.meter)::text), array_agg(DISTINCT s.plan)
    INTO v_claims, v_plans
    FROM payments.meter_claims c
    JOIN payments.subscriptions s ON s.customer_id = c.customer_id AND s.id = c.subscription_id
    WHERE c.customer_id = ANY (v_customer) AND c.meter = ANY (v_meter);
    IF EXISTS (SELECT FROM payments.plan_versions v
               WHERE v.plan = ANY (v_plans)
                 AND jsonb_path_exists(jsonb_build_array(v.metered, v.currency_options), '$.**.mode ? (@ == "volume")')) THEN
        RAISE EXCEPTION 'a volume price: the one-by-one path checks each event' USING ERRCODE = 'P0001';
    END IF;
    FOR v_pair IN
        SELECT DISTINCT r.customer, r.meter FROM unnest(v_created, v_customer, v_meter) AS r(created, customer, meter)
        WHERE r.created AND jsonb_build_array(r.customer, r.meter)::text = ANY (v_claims)
        ORDER BY 1, 2
    LOOP
        v_problem := payments._pending_usage_problem(v_pair.customer, v_pair.meter);
        IF v_problem IS NOT NULL THEN
            RAISE EXCEPTION '%', v_problem USING ERRCODE = 'PM104';
        END IF;
    END LOOP;
    RETURN v_result;
END
$$;
COMMENT ON FUNCTION payments._record_usage_set(jsonb) IS
    'Internal: record_usage_batch as a handful of set-based statements, with the answers of the one-by-one path; NULL when a value''s cast might fail (only that path reports it as PostgreSQL does); raises (and writes nothing) when the batch needs that path: usage no payment could charge (PM104), a customer whose plan prices a meter by volume (the bound must hold after each event, and a volume price can fall as usage grows), or a key claimed concurrently (40001).';

CREATE OR REPLACE FUNCTION payments.record_usage_batch(events jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_result jsonb;
BEGIN
    IF jsonb_typeof(events) IS DISTINCT FROM 'array' OR jsonb_array_length(events) NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'events must be a JSON array of 1 to 1000 usage events' USING ERRCODE = 'PM100';
    END IF;
    BEGIN
        v_result := payments._record_usage_set(events);
    EXCEPTION WHEN OTHERS THEN
        -- Rolled back to here: the one-by-one path answers event by event.
        v_result := NULL;
    END;
    RETURN coalesce(v_result, payments._record_usage_each(events));
END
$$;
COMMENT ON FUNCTION payments.record_usage_batch(jsonb) IS
    'record_usage for up to 1000 events at once ([{"idempotency_key", "customer_id", "meter", "quantity", "occurred_at"?, "properties"?}]): returns one result per event, in order: {"index", "id", "outcome"} or {"index", "error": {"sqlstate", "message"}}; a bad event does not stop the others. Events are recorded in the order of customer, meter, occurred_at, key and then as given: the first of two events with one key in that order is the one created.';

CREATE OR REPLACE FUNCTION payments.usage_summary(customer_id text, meter text, "from" timestamptz, "to" timestamptz)
RETURNS TABLE (value numeric, event_count bigint, aggregation text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_meter   payments.meters%ROWTYPE;
    -- A login bound to another customer sees none of this one's usage.
    v_visible boolean := usage_summary.customer_id = coalesce(payments._bound_customer(), usage_summary.customer_id);
BEGIN
    SELECT * INTO v_meter FROM payments.meters m WHERE m.code = usage_summary.meter;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'meter % not found', quote_nullable(payments._shown(usage_summary.meter)) USING ERRCODE = 'PM204';
    END IF;
    IF "from" IS NULL OR "to" IS NULL OR "from" >= "to" THEN
        RAISE EXCEPTION 'from must be before to' USING ERRCODE = 'PM100';
    END IF;
    aggregation := v_meter.aggregation;
    SELECT CASE v_meter.aggregation
               WHEN 'sum' THEN coalesce(sum(u.quantity), 0)
               WHEN 'count' THEN count(*)
               WHEN 'count_unique' THEN count(DISTINCT u.properties ->> v_meter.unique_property)
               WHEN 'max' THEN coalesce(max(u.quantity), 0)
               ELSE coalesce((array_agg(u.quantity ORDER BY u.occurred_at DESC, u.id DESC))[1], 0) END,
           count(*)
    INTO value, event_count
    FROM payments.usage_events u
    WHERE v_visible AND u.customer_id = usage_summary.customer_id AND u.meter = v_meter.code
      AND u.occurred_at >= "from" AND u.occurred_at < "to";
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION payments.usage_summary(text, text, timestamptz, timestamptz) IS
    'A customer''s usage on a meter over [from, to), by the meter''s aggregation: value (sum, count, distinct count, max or the latest quantity; 0 when none), event_count and the aggregation. Unknown meter PM204.';

CREATE OR REPLACE VIEW payments.usage_log WITH (security_invoker) AS
SELECT u.id, u.customer_id, u.meter, u.quantity, u.occurred_at, u.properties, u.recorded_at
FROM payments.usage_events u;
COMMENT ON VIEW payments.usage_log IS
    'Every recorded usage event without its idempotency fingerprint; readable by payments_reader.';
