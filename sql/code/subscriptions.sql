-- payments: plans, subscriptions, and the question agents ask before they act:
-- "may this customer use one more unit?". consume answers it in one
-- statement, never past a limit however many agents ask at once (each
-- subscription's row lock serialises its consumption), and answers a
-- retried request_id as it answered the first time.
-- Renewals, invoices and dunning (run_billing) build on these tables.

CREATE OR REPLACE TRIGGER subscription_events_append_only BEFORE UPDATE OR DELETE ON payments.subscription_events
    FOR EACH ROW EXECUTE FUNCTION payments._refuse_change();
CREATE OR REPLACE TRIGGER subscription_events_no_truncate BEFORE TRUNCATE ON payments.subscription_events
    FOR EACH STATEMENT EXECUTE FUNCTION payments._refuse_change();
CREATE OR REPLACE TRIGGER consumptions_append_only BEFORE UPDATE OR DELETE ON payments.consumptions
    FOR EACH ROW EXECUTE FUNCTION payments._refuse_change();

-- ---------------------------------------------------------------------------
-- Plans
-- ---------------------------------------------------------------------------
-- One enforced lifecycle per billing object, as payments have: every change of status is an
-- edge of the object's machine in payments-core (core/src/lifecycle.rs), whoever makes it.
CREATE OR REPLACE FUNCTION payments._lifecycle_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status
       AND payments._lifecycle_decision(TG_ARGV[0], OLD.status, NEW.status) IS DISTINCT FROM 'applied' THEN
        RAISE EXCEPTION '% cannot go from % to %', NEW.id, OLD.status, NEW.status USING ERRCODE = 'PM202',
            DETAIL = 'the lifecycle ' || TG_ARGV[0] || ' has no such edge';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION payments._lifecycle_guard() IS
    'Internal: the trigger that refuses (PM202) a change of status its row''s lifecycle (TG_ARGV[0]: subscription_status, invoice_status) has no edge for.';

CREATE OR REPLACE TRIGGER subscriptions_lifecycle BEFORE UPDATE OF status ON payments.subscriptions
    FOR EACH ROW EXECUTE FUNCTION payments._lifecycle_guard('subscription_status');

CREATE OR REPLACE FUNCTION payments._price_set(p_currency text, p_amount numeric, p_metered jsonb,
                                               p_feature_prices jsonb, p_threshold numeric, p_features jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_metered jsonb := coalesce(p_metered, '[]');
    v_prices  jsonb := coalesce(p_feature_prices, '{}');
    v_minor   bigint;
    v_threshold bigint;
    v_problem text;
BEGIN
    -- A feature's price is what a unit past its limit costs: only a limited feature has one.
    IF jsonb_typeof(v_prices) <> 'object'
       OR EXISTS (SELECT 1 FROM jsonb_each(v_prices) f
                  WHERE jsonb_typeof(p_features -> f.key) IS DISTINCT FROM 'number'
                     OR jsonb_typeof(f.value) <> 'number' OR (f.value::text)::numeric <= 0
                     OR (f.value::text)::numeric >= 1e12) THEN
        RAISE EXCEPTION 'feature_prices is an object of limited features to what one unit past the limit costs (minor units above 0)'
            USING ERRCODE = 'PM100';
    END IF;
    IF jsonb_typeof(v_metered) <> 'array' THEN
        RAISE EXCEPTION 'metered is an array of {"meter", "price"}' USING ERRCODE = 'PM100';
    END IF;
    SELECT coalesce(
               CASE WHEN NOT EXISTS (SELECT 1 FROM payments.meters m WHERE m.code = e.value ->> 'meter')
                    THEN 'unknown meter ' || quote_nullable(e.value ->> 'meter') END,
               payments._price_problem((e.value -> 'price')::text))
    INTO v_problem
    FROM jsonb_array_elements(v_metered) e
    WHERE NOT EXISTS (SELECT 1 FROM payments.meters m WHERE m.code = e.value ->> 'meter')
       OR payments._price_problem((e.value -> 'price')::text) IS NOT NULL
    LIMIT 1;
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'metered price: %', v_problem USING ERRCODE = 'PM100';
    END IF;
    IF p_amount IS NULL THEN
        RAISE EXCEPTION 'an amount is required (0 for free)' USING ERRCODE = 'PM100';
    END IF;
    -- A free plan is a price of 0; anything else is money, checked as money.
    v_minor := CASE WHEN p_amount = 0 THEN 0 ELSE payments.to_minor(p_amount, p_currency) END;
    IF payments.to_major(0, p_currency) IS NULL THEN
        PERFORM payments.to_minor(1, p_currency);  -- raises the unknown currency
    END IF;
    v_threshold := CASE WHEN p_threshold IS NOT NULL THEN payments.to_minor(p_threshold, p_currency) END;
    IF v_threshold <= 0 OR (v_threshold IS NOT NULL AND jsonb_array_length(v_metered) = 0) THEN
        RAISE EXCEPTION 'usage_threshold is a positive amount, for a plan with metered prices' USING ERRCODE = 'PM100';
    END IF;
    RETURN jsonb_build_object('amount_minor', v_minor, 'metered', v_metered, 'feature_prices', v_prices,
                              'usage_threshold_minor', v_threshold);
END
$$;
COMMENT ON FUNCTION payments._price_set(text, numeric, jsonb, jsonb, numeric, jsonb) IS
    'Internal: a plan''s prices in one currency, checked (PM100, PM101 for excess precision) and in minor units: {"amount_minor", "metered", "feature_prices", "usage_threshold_minor"}. p_features: the plan''s features (only a limited one has a price).';

CREATE OR REPLACE FUNCTION payments._currency_options(p_currency text, p_base jsonb, p_options jsonb, p_features jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_option  record;
    v_set     jsonb;
    v_options jsonb := '{}';
BEGIN
    IF jsonb_typeof(coalesce(p_options, '{}')) <> 'object' THEN
        RAISE EXCEPTION 'currency_options is an object of currencies to {"amount", "metered"?, "feature_prices"?, "usage_threshold"?}'
            USING ERRCODE = 'PM100';
    END IF;
    FOR v_option IN SELECT upper(o.key) AS currency, o.value FROM jsonb_each(coalesce(p_options, '{}')) o LOOP
        IF v_option.currency !~ '^[A-Z]{3}$' OR v_option.currency = p_currency OR jsonb_typeof(v_option.value) <> 'object'
           OR EXISTS (SELECT 1 FROM jsonb_object_keys(v_option.value) k
                      WHERE k NOT IN ('amount', 'metered', 'feature_prices', 'usage_threshold')) THEN
            RAISE EXCEPTION 'currency_options: % is not another currency with {"amount", "metered"?, "feature_prices"?, "usage_threshold"?}',
                quote_literal(v_option.currency) USING ERRCODE = 'PM100';
        END IF;
        v_set := payments._price_set(v_option.currency, (v_option.value ->> 'amount')::numeric, v_option.value -> 'metered',
                                     v_option.value -> 'feature_prices', (v_option.value ->> 'usage_threshold')::numeric,
                                     p_features);
        -- The same meters and priced features in every currency: what is billed never depends on it.
        IF (SELECT array_agg(m ->> 'meter' ORDER BY m ->> 'meter') FROM jsonb_array_elements(v_set -> 'metered') m)
           IS DISTINCT FROM (SELECT array_agg(m ->> 'meter' ORDER BY m ->> 'meter') FROM jsonb_array_elements(p_base -> 'metered') m)
           OR (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(v_set -> 'feature_prices') k)
              IS DISTINCT FROM (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(p_base -> 'feature_prices') k) THEN
            RAISE EXCEPTION 'currency_options.%: price the same meters and features as in %', v_option.currency, p_currency
                USING ERRCODE = 'PM100';
        END IF;
        v_options := v_options || jsonb_build_object(v_option.currency, v_set);
    END LOOP;
    RETURN v_options;
END
$$;
COMMENT ON FUNCTION payments._currency_options(text, jsonb, jsonb, jsonb) IS
    'Internal: a plan''s prices in other currencies than p_currency, checked as _price_set does and pricing the same meters and features as p_base (its prices in p_currency), in minor units: {"EUR": {"amount_minor", …}}.';

CREATE OR REPLACE FUNCTION payments.create_plan(code text, currency text, amount numeric, billing_interval text,
                                     interval_count integer DEFAULT 1, trial_days integer DEFAULT 0,
                                     features jsonb DEFAULT '{}', name text DEFAULT NULL, metered jsonb DEFAULT '[]',
                                     usage_threshold numeric DEFAULT NULL, feature_prices jsonb DEFAULT '{}',
                                     features_per_seat boolean DEFAULT false, currency_options jsonb DEFAULT NULL)
RETURNS SETOF payments.plans
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_plan     payments.plans%ROWTYPE;
    v_currency text := upper(currency);
    v_features jsonb := coalesce(features, '{}');
    v_base     jsonb;
    v_options  jsonb;
BEGIN
    IF code IS NULL OR code !~ '^[a-z][a-z0-9_.-]{0,63}$' THEN
        RAISE EXCEPTION 'a plan code is 1 to 64 lower case letters, digits, _ . - starting with a letter, not %',
            quote_nullable(payments._shown(code)) USING ERRCODE = 'PM100';
    END IF;
    IF billing_interval IS NULL OR NOT payments._is_allowed('billing_interval', billing_interval)
       OR interval_count IS NULL OR interval_count NOT BETWEEN 1 AND 365
       OR trial_days IS NULL OR trial_days NOT BETWEEN 0 AND 730 OR length(name) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'billing_interval is day, week, month or year, interval_count 1 to 365, trial_days 0 to 730, a name 1 to 255 characters'
            USING ERRCODE = 'PM100';
    END IF;
    IF jsonb_typeof(v_features) <> 'object'
       OR EXISTS (SELECT 1 FROM jsonb_each(v_features) f
                  WHERE f.key !~ '^[a-z][a-z0-9_.-]{0,63}$'
                     OR NOT (jsonb_typeof(f.value) = 'null'
                             OR (jsonb_typeof(f.value) = 'number' AND (f.value::text)::numeric >= 0))) THEN
        RAISE EXCEPTION 'features is an object of feature codes to limits (a number from 0, or null for unlimited)'
            USING ERRCODE = 'PM100';
    END IF;
    v_base := payments._price_set(v_currency, amount, metered, feature_prices, usage_threshold, v_features);
    v_options := payments._currency_options(v_currency, v_base, currency_options, v_features);
    INSERT INTO payments.plans AS p (code, name, currency, amount_minor, billing_interval, interval_count, trial_days,
                                     features, metered, usage_threshold_minor, feature_prices, features_per_seat,
                                     currency_options)
    VALUES (create_plan.code, create_plan.name, v_currency, (v_base ->> 'amount_minor')::bigint, create_plan.billing_interval,
            create_plan.interval_count, create_plan.trial_days, v_features, v_base -> 'metered',
            (v_base ->> 'usage_threshold_minor')::bigint, v_base -> 'feature_prices',
            coalesce(create_plan.features_per_seat, false), v_options)
    ON CONFLICT ON CONSTRAINT plans_pkey DO NOTHING;
    IF FOUND THEN
        PERFORM payments._record_plan_version(create_plan.code, 1, v_base, v_options);
    END IF;
    SELECT * INTO v_plan FROM payments.plans p WHERE p.code = create_plan.code;
    -- Its first version's prices, whatever versions followed.
    IF (v_plan.name, v_plan.currency, v_plan.billing_interval, v_plan.interval_count, v_plan.trial_days,
        v_plan.features, v_plan.features_per_seat, payments._version_prices(v_plan.code, 1))
       IS DISTINCT FROM (create_plan.name, v_currency, create_plan.billing_interval, create_plan.interval_count,
                         create_plan.trial_days, v_features, coalesce(create_plan.features_per_seat, false),
                         v_base || jsonb_build_object('currency_options', v_options)) THEN
        RAISE EXCEPTION 'plan % exists with another definition', v_plan.code USING ERRCODE = 'PM201',
            HINT = 'a plan''s terms never change under its subscriptions: create_plan_version changes its prices, a new code anything else';
    END IF;
    RETURN NEXT v_plan;
END
$$;
COMMENT ON FUNCTION payments.create_plan(text, text, numeric, text, integer, integer, jsonb, text, jsonb, numeric, jsonb, boolean, jsonb) IS
    'Makes a plan (admin): code, currency, recurring amount (major units, exact; 0 for free), billing_interval (day, week, month, year) times interval_count, trial_days, features ({"feature": limit or null}), name, metered usage billed in arrears ([{"meter", "price": {"mode": per_unit | graduated | volume, "tiers": [...]}}]), usage_threshold (major units: usage is invoiced as soon as it reaches this much within a period), and feature_prices ({"feature": minor units per unit, fractions allowed}: what consume charges the customer''s money credits for a unit past the feature''s limit), features_per_seat (each limit is per seat: times the subscription''s quantity), and currency_options: its prices in other currencies ({"EUR": {"amount": 9, "metered"?, "feature_prices"?, "usage_threshold"?}}, pricing the same meters and features). The amount is per seat: a subscription pays it times its quantity. This is version 1 of its prices (create_plan_version makes the next). The same call again returns it; another definition for its code PM201.';

CREATE OR REPLACE FUNCTION payments._record_plan_version(p_plan text, p_version integer, p_prices jsonb, p_options jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO payments.plan_versions (plan, version, amount_minor, metered, feature_prices, usage_threshold_minor,
                                        currency_options)
    VALUES (p_plan, p_version, (p_prices ->> 'amount_minor')::bigint, p_prices -> 'metered', p_prices -> 'feature_prices',
            (p_prices ->> 'usage_threshold_minor')::bigint, p_options);
END
$$;
COMMENT ON FUNCTION payments._record_plan_version(text, integer, jsonb, jsonb) IS
    'Internal: keeps a version of a plan''s prices (_price_set''s document and its currency options).';

CREATE OR REPLACE FUNCTION payments._version_prices(p_plan text, p_version integer) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT jsonb_build_object('amount_minor', v.amount_minor, 'metered', v.metered,
                                      'feature_prices', v.feature_prices, 'usage_threshold_minor', v.usage_threshold_minor,
                                      'currency_options', v.currency_options)
            FROM payments.plan_versions v WHERE v.plan = p_plan AND v.version = p_version);
END
$$;
COMMENT ON FUNCTION payments._version_prices(text, integer) IS
    'Internal: a version of a plan''s prices as one document (what create_plan and create_plan_version compare a repeat with).';

CREATE OR REPLACE FUNCTION payments.create_plan_version(plan text, version integer, amount numeric,
                                                        metered jsonb DEFAULT NULL, feature_prices jsonb DEFAULT NULL,
                                                        usage_threshold numeric DEFAULT NULL,
                                                        currency_options jsonb DEFAULT NULL)
RETURNS SETOF payments.plans
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_plan    payments.plans%ROWTYPE;
    v_prices  jsonb;
    v_options jsonb;
BEGIN
    SELECT * INTO v_plan FROM payments.plans p WHERE p.code = create_plan_version.plan;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'plan % not found', quote_nullable(payments._shown(create_plan_version.plan)) USING ERRCODE = 'PM204';
    ELSIF version IS NULL OR version < 2 OR version > v_plan.version + 1 THEN
        RAISE EXCEPTION 'the next version of plan % is %', v_plan.code, v_plan.version + 1 USING ERRCODE = 'PM100';
    END IF;
    -- What is not given stays as the latest version has it; the metered prices price the same meters.
    v_prices := payments._price_set(v_plan.currency, amount, coalesce(metered, v_plan.metered),
                                    coalesce(feature_prices, v_plan.feature_prices),
                                    coalesce(usage_threshold, payments.to_major(v_plan.usage_threshold_minor, v_plan.currency)),
                                    v_plan.features);
    IF (SELECT array_agg(m ->> 'meter' ORDER BY m ->> 'meter') FROM jsonb_array_elements(v_prices -> 'metered') m)
       IS DISTINCT FROM (SELECT array_agg(m ->> 'meter' ORDER BY m ->> 'meter') FROM jsonb_array_elements(v_plan.metered) m) THEN
        RAISE EXCEPTION 'a new version of plan % prices the same meters (a new plan prices others)', v_plan.code
            USING ERRCODE = 'PM100';
    END IF;
    v_options := CASE WHEN currency_options IS NULL THEN v_plan.currency_options
                      ELSE payments._currency_options(v_plan.currency, v_prices, currency_options, v_plan.features) END;
    -- Its subscribers, and a change to it at period end, may bill in any currency it had.
    IF EXISTS (SELECT 1 FROM jsonb_object_keys(v_plan.currency_options) k WHERE NOT v_options ? k) THEN
        RAISE EXCEPTION 'a new version of plan % keeps every currency it has (%)', v_plan.code,
            (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(v_plan.currency_options) k)
            USING ERRCODE = 'PM100', HINT = 'a new plan drops one';
    END IF;
    -- The claim: one caller moves the plan to this version; a repeat compares with what it made.
    UPDATE payments.plans p
    SET version = create_plan_version.version, amount_minor = (v_prices ->> 'amount_minor')::bigint,
        metered = v_prices -> 'metered', feature_prices = v_prices -> 'feature_prices',
        usage_threshold_minor = (v_prices ->> 'usage_threshold_minor')::bigint, currency_options = v_options
    WHERE p.code = v_plan.code AND p.version = create_plan_version.version - 1;
    IF FOUND THEN
        PERFORM payments._record_plan_version(v_plan.code, create_plan_version.version, v_prices, v_options);
    ELSIF payments._version_prices(v_plan.code, create_plan_version.version)
          IS DISTINCT FROM v_prices || jsonb_build_object('currency_options', v_options) THEN
        RAISE EXCEPTION 'version % of plan % exists with other prices', create_plan_version.version, v_plan.code
            USING ERRCODE = 'PM201';
    END IF;
    RETURN QUERY SELECT * FROM payments.plans p WHERE p.code = v_plan.code;
END
$$;
COMMENT ON FUNCTION payments.create_plan_version(text, integer, numeric, jsonb, jsonb, numeric, jsonb) IS
    'Changes a plan''s prices (admin) as a new version (version: the latest plus 1): amount, and, when given, metered prices (of the same meters), feature_prices, usage_threshold and currency_options (else as the latest version has them; every currency the latest has stays). New subscriptions get it; existing ones keep the version they have (grandfathered) until migrate_plan_version moves them at a renewal. The same call again returns the plan; other prices for an existing version PM201; PM204 for an unknown plan.';

CREATE OR REPLACE FUNCTION payments._plan_of(p_code text, p_version integer, p_currency text) RETURNS payments.plans
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_plan    payments.plans%ROWTYPE;
    v_version payments.plan_versions%ROWTYPE;
    v_option  jsonb;
BEGIN
    SELECT * INTO v_plan FROM payments.plans p WHERE p.code = p_code;
    IF p_version IS DISTINCT FROM v_plan.version AND p_version IS NOT NULL THEN
        SELECT * INTO v_version FROM payments.plan_versions v WHERE v.plan = p_code AND v.version = p_version;
        v_plan.version := v_version.version;
        v_plan.amount_minor := v_version.amount_minor;
        v_plan.metered := v_version.metered;
        v_plan.feature_prices := v_version.feature_prices;
        v_plan.usage_threshold_minor := v_version.usage_threshold_minor;
        v_plan.currency_options := v_version.currency_options;
    END IF;
    IF p_currency IS DISTINCT FROM v_plan.currency AND p_currency IS NOT NULL THEN
        v_option := v_plan.currency_options -> p_currency;
        IF v_option IS NULL THEN
            RAISE EXCEPTION 'plan % has no price in %', p_code, p_currency USING ERRCODE = 'PM100',
                HINT = 'its currencies: ' || (SELECT string_agg(c, ', ' ORDER BY c)
                                              FROM (SELECT v_plan.currency UNION SELECT jsonb_object_keys(v_plan.currency_options)) o(c));
        END IF;
        v_plan.currency := p_currency;
        v_plan.amount_minor := (v_option ->> 'amount_minor')::bigint;
        v_plan.metered := v_option -> 'metered';
        v_plan.feature_prices := v_option -> 'feature_prices';
        v_plan.usage_threshold_minor := (v_option ->> 'usage_threshold_minor')::bigint;
    END IF;
    RETURN v_plan;
END
$$;
COMMENT ON FUNCTION payments._plan_of(text, integer, text) IS
    'Internal: a plan as one version of its prices (NULL: the latest) in one currency (NULL: its own) bills it: the plan''s row with that version''s and currency''s amount, metered and feature prices and usage threshold. PM100 when it has no price in the currency.';

CREATE OR REPLACE FUNCTION payments._sub_plan(p_sub payments.subscriptions) RETURNS payments.plans
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN payments._plan_of(p_sub.plan, p_sub.plan_version, p_sub.currency);
END
$$;
COMMENT ON FUNCTION payments._sub_plan(payments.subscriptions) IS
    'Internal: the plan a subscription is billed at: its version, in its currency (_plan_of).';

CREATE OR REPLACE FUNCTION payments._next_plan(p_sub payments.subscriptions) RETURNS payments.plans
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_sub.pending_plan IS NOT NULL THEN
        RETURN payments._plan_of(p_sub.pending_plan, NULL, p_sub.currency);
    END IF;
    RETURN payments._plan_of(p_sub.plan, coalesce(p_sub.pending_version, p_sub.plan_version), p_sub.currency);
END
$$;
COMMENT ON FUNCTION payments._next_plan(payments.subscriptions) IS
    'Internal: the plan a subscription''s next period bills: the latest version of a plan it changes to at period end, else its own plan at the version a migration moves it to, or its own.';

CREATE OR REPLACE FUNCTION payments.migrate_plan_version(plan text, from_version integer, to_version integer,
                                                         at timestamptz DEFAULT now()) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_due   record;
    v_sub   payments.subscriptions%ROWTYPE;
    v_count integer := 0;
BEGIN
    IF at IS NULL OR NOT isfinite(at) OR from_version IS NULL OR to_version IS NULL OR from_version = to_version THEN
        RAISE EXCEPTION 'from_version and to_version are two versions, at a finite time' USING ERRCODE = 'PM100';
    ELSIF (SELECT count(*) FROM payments.plan_versions v
           WHERE v.plan = migrate_plan_version.plan AND v.version IN (from_version, to_version)) < 2 THEN
        RAISE EXCEPTION 'plan % has no version % or %', quote_nullable(payments._shown(migrate_plan_version.plan)),
            from_version, to_version USING ERRCODE = 'PM204';
    END IF;
    -- Each subscription on its own customer's shard: found first, then locked and checked again.
    FOR v_due IN
        SELECT s.customer_id, s.id FROM payments.subscriptions s
        WHERE s.plan = migrate_plan_version.plan AND s.plan_version = from_version AND s.pending_plan IS NULL
          AND s.pending_version IS DISTINCT FROM to_version AND s.status = ANY (payments._group('live_subscription_status'))
          -- A version without a price in its currency would leave it unbillable.
          AND (s.currency = (SELECT p.currency FROM payments.plans p WHERE p.code = migrate_plan_version.plan)
               OR (SELECT v.currency_options FROM payments.plan_versions v
                   WHERE v.plan = migrate_plan_version.plan AND v.version = to_version) ? s.currency)
        ORDER BY s.customer_id, s.id
    LOOP
        SELECT * INTO v_sub FROM payments.subscriptions s
        WHERE s.customer_id = v_due.customer_id AND s.id = v_due.id FOR UPDATE;
        CONTINUE WHEN v_sub.plan <> migrate_plan_version.plan OR v_sub.plan_version <> from_version
                      OR v_sub.pending_plan IS NOT NULL OR v_sub.pending_version IS NOT DISTINCT FROM to_version;
        UPDATE payments.subscriptions s SET pending_version = to_version, updated_at = now()
        WHERE s.customer_id = v_sub.customer_id AND s.id = v_sub.id;
        PERFORM payments._subscription_event(v_sub, v_sub.status, 'plan version migration scheduled',
                                             jsonb_build_object('plan', v_sub.plan, 'from_version', from_version,
                                                                'to_version', to_version, 'at', at));
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION payments.migrate_plan_version(text, integer, integer, timestamptz) IS
    'Moves every subscription of a plan billed at from_version to to_version at its next renewal (admin), in one call: each gets pending_version and an entry in its history (decided at at); the renewal then bills the new version and records the change. Subscriptions that end, change plan at period end, or pay in a currency to_version has no price in are left as they are. Returns how many were scheduled (again: 0). PM204 for an unknown plan or version, PM100 for bad input.';

CREATE OR REPLACE FUNCTION payments.archive_plan(code text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE payments.plans p SET archived_at = now() WHERE p.code = archive_plan.code AND p.archived_at IS NULL;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION payments.archive_plan(text) IS
    'Stops a plan taking new subscriptions (admin); its subscriptions keep it. false when unknown or already archived.';

-- ---------------------------------------------------------------------------
-- Subscriptions
-- ---------------------------------------------------------------------------
CREATE OR REPLACE VIEW payments.subscription_details WITH (security_invoker) AS
SELECT s.id, s.customer_id, s.plan, s.status, s.payment_method, s.current_period_start, s.current_period_end,
       s.trial_end, s.cancel_at_period_end, s.canceled_at, s.created_at, s.updated_at, s.billing_error, s.quantity,
       s.currency, s.plan_version, s.pending_version, s.cancel_at, s.missing_payment_method
FROM payments.subscriptions s;
COMMENT ON VIEW payments.subscription_details IS
    'Every subscription without its idempotency fingerprint, with the currency and version of its plan''s prices it is billed at (and the version it moves to at its next renewal), and why run_billing last failed for it (billing_error, NULL when it did not). What get_subscription returns; readable by payments_reader.';
COMMENT ON TYPE payments.subscription_result IS
    'A subscription as a call leaves it, plus outcome: created | replayed (create_subscription), applied | noop (cancel, pause, resume).';

CREATE OR REPLACE FUNCTION payments._subscription_result(p_customer_id text, p_id text, p_outcome text)
RETURNS SETOF payments.subscription_result
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY SELECT d.id, d.customer_id, d.plan, d.status, d.payment_method, d.current_period_start,
                        d.current_period_end, d.trial_end, d.cancel_at_period_end, d.canceled_at, d.created_at,
                        d.updated_at, d.billing_error, p_outcome, d.quantity, d.currency, d.plan_version, d.cancel_at,
                        d.missing_payment_method
    FROM payments.subscription_details d
    WHERE d.customer_id = p_customer_id AND d.id = p_id;
END
$$;
COMMENT ON FUNCTION payments._subscription_result(text, text, text) IS 'Internal: a subscription as a subscription_result row.';

CREATE OR REPLACE FUNCTION payments._utc_add(p_at timestamptz, p_span interval) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ((p_at AT TIME ZONE 'UTC') + p_span) AT TIME ZONE 'UTC';
COMMENT ON FUNCTION payments._utc_add(timestamptz, interval) IS
    'Internal: p_at plus p_span counted on the UTC calendar. timestamptz + interval counts days and months in the session''s TimeZone (a day across a DST change is 23 or 25 hours; January 31 + 1 month is February 28 in UTC but March 1 in Los Angeles at 04:00Z); billing must not depend on who calls it.';

CREATE OR REPLACE FUNCTION payments._period_end(p_plan payments.plans, p_anchor timestamptz, p_number integer) RETURNS timestamptz
LANGUAGE sql IMMUTABLE
RETURN payments._utc_add(p_anchor, p_number * p_plan.interval_count
                                   * CASE p_plan.billing_interval WHEN 'day' THEN interval '1 day'
                                                                  WHEN 'week' THEN interval '7 days'
                                                                  WHEN 'month' THEN interval '1 month'
                                                                  ELSE interval '1 year' END);
COMMENT ON FUNCTION payments._period_end(payments.plans, timestamptz, integer) IS
    'Internal: the end of a plan''s p_number-th period counted from p_anchor on the UTC calendar (from January 31: February 28 or 29, then March 31, as Stripe bills).';

CREATE OR REPLACE FUNCTION payments._same_cycle(p_a payments.plans, p_b payments.plans) RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN (p_a.billing_interval, p_a.interval_count) = (p_b.billing_interval, p_b.interval_count);
COMMENT ON FUNCTION payments._same_cycle(payments.plans, payments.plans) IS
    'Internal: whether two plans bill over the same interval; a change between plans that do not resets the billing anchor (as Stripe''s).';

CREATE OR REPLACE FUNCTION payments._period_at(p_sub payments.subscriptions, p_at timestamptz, OUT period_start timestamptz,
                                    OUT period_end timestamptz, OUT plan text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_old    payments.plans%ROWTYPE;
    v_plan   payments.plans%ROWTYPE;
    v_anchor timestamptz := p_sub.billing_anchor;
    v_base   integer := p_sub.anchor_period;
    v_n      integer := p_sub.period_number + 1;
BEGIN
    period_start := p_sub.current_period_start;
    period_end := p_sub.current_period_end;
    plan := p_sub.plan;
    -- Only a renewing subscription goes on past its period's end (a trial, a cancel at
    -- period end and a pause stop there).
    IF p_at < p_sub.current_period_end OR NOT (p_sub.status = ANY (payments._group('paid_period_subscription_status'))) OR p_sub.cancel_at_period_end THEN
        RETURN;
    END IF;
    plan := coalesce(p_sub.pending_plan, p_sub.plan);
    SELECT * INTO v_old FROM payments.plans p WHERE p.code = p_sub.plan;
    SELECT * INTO v_plan FROM payments.plans p WHERE p.code = plan;
    IF NOT payments._same_cycle(v_old, v_plan) THEN
        v_anchor := p_sub.current_period_end;
        v_base := p_sub.period_number;
    END IF;
    -- Far behind: jump to a period no later than p_at's (counted in periods of the longest
    -- length one can have: 31 days a month, 366 a year), then step.
    v_n := greatest(v_n, v_base + floor(extract(epoch FROM p_at - v_anchor)
                                         / (86400.0 * v_plan.interval_count
                                            * CASE v_plan.billing_interval WHEN 'day' THEN 1 WHEN 'week' THEN 7
                                                                           WHEN 'month' THEN 31 ELSE 366 END))::integer);
    period_end := payments._period_end(v_plan, v_anchor, v_n - 1 - v_base);
    LOOP
        period_start := period_end;
        period_end := payments._period_end(v_plan, v_anchor, v_n - v_base);
        EXIT WHEN p_at < period_end;
        v_n := v_n + 1;
    END LOOP;
END
$$;
COMMENT ON FUNCTION payments._period_at(payments.subscriptions, timestamptz) IS
    'Internal: the period time p_at falls in and the plan it bills, from the subscription alone: its current period, or for an active or past_due one whose period ended before run_billing renewed it, the period run_billing will make (so quotas start afresh at the period''s start whether the billing timer ran or not).';

CREATE OR REPLACE FUNCTION payments._subscription_event(p_sub payments.subscriptions, p_from text, p_reason text, p_data jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
BEGIN
    -- The caller holds the subscription's row lock (or just made it).
    SELECT coalesce(max(e.seq), 0) + 1 INTO v_seq FROM payments.subscription_events e
    WHERE e.customer_id = p_sub.customer_id AND e.subscription_id = p_sub.id;
    INSERT INTO payments.subscription_events (customer_id, subscription_id, seq, from_status, to_status, reason, data)
    VALUES (p_sub.customer_id, p_sub.id, v_seq, p_from, p_sub.status, p_reason, p_data);
    PERFORM payments._emit(p_sub.customer_id, 'subscription', p_sub.id, p_sub.status, p_from, p_from IS NULL,
                           jsonb_build_object('plan', p_sub.plan, 'reason', p_reason));
END
$$;
COMMENT ON FUNCTION payments._subscription_event(payments.subscriptions, text, text, jsonb) IS
    'Internal: appends a step to a subscription''s history. The caller holds its row lock.';

CREATE OR REPLACE FUNCTION payments._claim_meters(p_sub payments.subscriptions, p_plan payments.plans) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_meter text;
    v_owner text;
BEGIN
    FOR v_meter IN SELECT DISTINCT m.value ->> 'meter' FROM jsonb_array_elements(p_plan.metered) m LOOP
        -- A concurrent claim of the same meter waits here for the other transaction.
        INSERT INTO payments.meter_claims (customer_id, meter, subscription_id)
        VALUES (p_sub.customer_id, v_meter, p_sub.id)
        ON CONFLICT ON CONSTRAINT meter_claims_pkey DO NOTHING;
        SELECT c.subscription_id INTO v_owner FROM payments.meter_claims c
        WHERE c.customer_id = p_sub.customer_id AND c.meter = v_meter;
        IF v_owner <> p_sub.id THEN
            RAISE EXCEPTION 'meter % of customer % is already billed by subscription %', v_meter,
                payments._shown(p_sub.customer_id), v_owner USING ERRCODE = 'PM206',
                HINT = 'a meter''s usage is billed by one subscription of a customer: end that one, or change its plan';
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION payments._claim_meters(payments.subscriptions, payments.plans) IS
    'Internal: makes a subscription the one that bills the usage of each meter p_plan prices; PM206 when another subscription of the customer already does.';

CREATE OR REPLACE FUNCTION payments._release_meters(p_sub payments.subscriptions, p_keep payments.plans) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    -- A list, not an expression over the plan in the DELETE: Citus allows only immutable
    -- functions in its COALESCE and CASE.
    v_keep text[] := ARRAY(SELECT m.value ->> 'meter' FROM jsonb_array_elements(coalesce(p_keep.metered, '[]')) m);
BEGIN
    DELETE FROM payments.meter_claims c
    WHERE c.customer_id = p_sub.customer_id AND c.subscription_id = p_sub.id AND c.meter <> ALL (v_keep);
END
$$;
COMMENT ON FUNCTION payments._release_meters(payments.subscriptions, payments.plans) IS
    'Internal: gives up a subscription''s claims on the meters p_keep does not price (NULL: all), once their usage is invoiced.';

CREATE OR REPLACE FUNCTION payments.create_subscription(idempotency_key text, customer_id text, plan text,
                                             payment_method text DEFAULT NULL, trial_days integer DEFAULT NULL,
                                             at timestamptz DEFAULT now(), quantity integer DEFAULT 1,
                                             currency text DEFAULT NULL, billing_cycle_anchor timestamptz DEFAULT NULL,
                                             cancel_at timestamptz DEFAULT NULL,
                                             missing_payment_method text DEFAULT 'create_invoice')
RETURNS SETOF payments.subscription_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_plan     payments.plans%ROWTYPE;
    v_currency text := upper(create_subscription.currency);
    v_fixed    text;
    v_trial    integer;
    v_fp       bytea;
    v_sub      payments.subscriptions%ROWTYPE;
    v_existing payments.subscriptions%ROWTYPE;
    v_first    bigint;
BEGIN
    IF idempotency_key IS NULL OR length(idempotency_key) NOT BETWEEN 1 AND 255
       OR customer_id IS NULL OR length(customer_id) NOT BETWEEN 1 AND 255 OR length(payment_method) > 255
       OR at IS NULL OR NOT isfinite(at) OR quantity IS NULL OR quantity NOT BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION 'idempotency_key and customer_id must be 1 to 255 characters, a payment method at most 255, at given, quantity 1 to 1000000'
            USING ERRCODE = 'PM100';
    END IF;
    IF NOT isfinite(cancel_at) OR missing_payment_method IS NULL
       OR NOT payments._is_allowed('missing_payment_method', missing_payment_method) THEN
        RAISE EXCEPTION 'cancel_at is a finite time; missing_payment_method is create_invoice, pause or cancel'
            USING ERRCODE = 'PM100';
    END IF;
    SELECT * INTO v_plan FROM payments.plans p WHERE p.code = create_subscription.plan;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'plan % not found', quote_nullable(payments._shown(create_subscription.plan)) USING ERRCODE = 'PM204';
    END IF;
    v_trial := coalesce(trial_days, v_plan.trial_days);
    IF v_trial NOT BETWEEN 0 AND 730 THEN
        RAISE EXCEPTION 'trial_days must be 0 to 730' USING ERRCODE = 'PM100';
    END IF;
    -- The parameters, not the time: a retry later is the same subscription.
    -- (Options given only: a key used before they existed keeps its fingerprint.)
    v_fp := sha256(convert_to(jsonb_build_array(v_plan.code, payment_method, trial_days)::text
                              || CASE WHEN quantity = 1 THEN '' ELSE quantity::text END || coalesce(v_currency, '')
                              || CASE WHEN billing_cycle_anchor IS NULL AND cancel_at IS NULL
                                           AND missing_payment_method = 'create_invoice' THEN ''
                                      ELSE jsonb_build_array(extract(epoch FROM billing_cycle_anchor), extract(epoch FROM cancel_at),
                                                             missing_payment_method)::text
                                 END, 'UTF8'));
    SELECT * INTO v_existing FROM payments.subscriptions s
    WHERE s.customer_id = create_subscription.customer_id AND s.idempotency_key = create_subscription.idempotency_key;
    IF NOT FOUND THEN
        IF v_plan.archived_at IS NOT NULL THEN
            RAISE EXCEPTION 'plan % is archived and takes no new subscriptions', v_plan.code USING ERRCODE = 'PM206';
        ELSIF NOT (cancel_at > at) THEN
            -- (Checked when creating: a retry after that time still replays.)
            RAISE EXCEPTION 'cancel_at is after at' USING ERRCODE = 'PM100';
        END IF;
        -- A customer pays in one currency, the one its first subscription chose: its first two,
        -- made at once, meet on the key of its row (a rollback frees it).
        SELECT c.currency INTO v_fixed FROM payments.customer_currencies c WHERE c.customer_id = create_subscription.customer_id;
        IF NOT FOUND THEN
            INSERT INTO payments.customer_currencies AS c (customer_id, currency)
            VALUES (create_subscription.customer_id, coalesce(v_currency, v_plan.currency))
            ON CONFLICT ON CONSTRAINT customer_currencies_pkey DO NOTHING;
            SELECT c.currency INTO v_fixed FROM payments.customer_currencies c
            WHERE c.customer_id = create_subscription.customer_id;
        END IF;
        v_currency := coalesce(v_currency, v_fixed);
        IF v_currency <> v_fixed THEN
            RAISE EXCEPTION 'customer % pays in % (the currency of its first subscription), not %',
                payments._shown(customer_id), v_fixed, v_currency USING ERRCODE = 'PM206';
        END IF;
        v_plan := payments._plan_of(v_plan.code, NULL, v_currency);
        v_sub.id := payments._new_id('sub');
        v_sub.customer_id := customer_id;
        v_sub.plan := v_plan.code;
        v_sub.payment_method := payment_method;
        v_sub.current_period_start := at;
        -- A trial is its own first period; a free plan is active at once; a paid one waits
        -- for its first period to be paid (incomplete, as on Stripe).
        IF v_trial > 0 THEN
            v_sub.status := 'trialing';
            v_sub.trial_end := payments._utc_add(at, v_trial * interval '1 day');
            v_sub.current_period_end := v_sub.trial_end;
            v_sub.billing_anchor := v_sub.trial_end;
            v_sub.period_number := 0;
        ELSE
            v_sub.status := CASE WHEN v_plan.amount_minor = 0 THEN 'active' ELSE 'incomplete' END;
            v_sub.billing_anchor := at;
            v_sub.period_number := 1;
            v_sub.current_period_end := payments._period_end(v_plan, at, 1);
        END IF;
        IF billing_cycle_anchor IS NOT NULL THEN
            -- A first period up to the anchor, its fee prorated (as Stripe's); whole periods from it.
            IF v_trial > 0 OR NOT (billing_cycle_anchor > at AND billing_cycle_anchor <= v_sub.current_period_end) THEN
                RAISE EXCEPTION 'billing_cycle_anchor is within the first period (after at, at most %), without a trial',
                    v_sub.current_period_end USING ERRCODE = 'PM100';
            END IF;
            v_first := round(v_plan.amount_minor * quantity * extract(epoch FROM billing_cycle_anchor - at)
                             / extract(epoch FROM v_sub.current_period_end - at));
            v_sub.current_period_end := billing_cycle_anchor;
            v_sub.billing_anchor := billing_cycle_anchor;
            v_sub.anchor_period := 1;
            v_sub.status := CASE WHEN v_first = 0 THEN 'active' ELSE v_sub.status END;
        END IF;
        v_sub.anchor_period := coalesce(v_sub.anchor_period, 0);
        v_sub.cancel_at := cancel_at;
        v_sub.missing_payment_method := missing_payment_method;
        v_sub.usage_from := at;
        v_sub.quantity := quantity;
        v_sub.currency := v_currency;
        v_sub.plan_version := v_plan.version;
        INSERT INTO payments.subscriptions (id, customer_id, plan, status, payment_method, current_period_start,
                                            current_period_end, billing_anchor, period_number, trial_end, usage_from,
                                            idempotency_key, fingerprint, quantity, currency, plan_version,
                                            anchor_period, cancel_at, missing_payment_method)
        VALUES (v_sub.id, v_sub.customer_id, v_sub.plan, v_sub.status, v_sub.payment_method, v_sub.current_period_start,
                v_sub.current_period_end, v_sub.billing_anchor, v_sub.period_number, v_sub.trial_end, v_sub.usage_from,
                create_subscription.idempotency_key, v_fp, v_sub.quantity, v_sub.currency, v_sub.plan_version,
                v_sub.anchor_period, v_sub.cancel_at, v_sub.missing_payment_method)
        ON CONFLICT ON CONSTRAINT subscriptions_idempotency_key DO NOTHING;
        IF FOUND THEN
            PERFORM payments._claim_meters(v_sub, v_plan);
            PERFORM payments._subscription_event(v_sub, NULL, 'created',
                                                 jsonb_build_object('idempotency_key', idempotency_key, 'trial_days', v_trial));
            IF v_first > 0 THEN
                PERFORM payments._issue_invoice(v_sub, 'period', v_plan.currency, jsonb_build_array(jsonb_build_object(
                    'kind', 'recurring', 'amount_minor', v_first, 'quantity', quantity,
                    'description', coalesce(v_plan.name, v_plan.code) || ', ' || (at AT TIME ZONE 'UTC')::date || ' to '
                                   || (billing_cycle_anchor AT TIME ZONE 'UTC')::date || ' (prorated to the billing anchor)')),
                    NULL, NULL, at);
            ELSIF v_sub.status = 'incomplete' THEN
                -- The first period is invoiced and charged at once; paid, it makes the subscription active.
                PERFORM payments._invoice_period(v_sub, v_plan, v_plan, NULL, NULL, at);
            END IF;
            RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'created');
            RETURN;
        END IF;
        SELECT * INTO v_existing FROM payments.subscriptions s
        WHERE s.customer_id = create_subscription.customer_id AND s.idempotency_key = create_subscription.idempotency_key;
    END IF;
    IF v_existing.fingerprint IS DISTINCT FROM v_fp THEN
        RAISE EXCEPTION 'idempotency key % was already used with different parameters', quote_literal(idempotency_key)
            USING ERRCODE = 'PM201', DETAIL = 'the key belongs to subscription ' || v_existing.id;
    END IF;
    RETURN QUERY SELECT * FROM payments._subscription_result(v_existing.customer_id, v_existing.id, 'replayed');
END
$$;
COMMENT ON FUNCTION payments.create_subscription(text, text, text, text, integer, timestamptz, integer, text, timestamptz, timestamptz, text) IS
    'Subscribes a customer to quantity seats (default 1) of a plan at time at, in currency (default: the customer''s, else the plan''s own; the plan''s currency_options give its prices in others) at the plan''s latest version, idempotently per customer (replayed; other parameters PM201). With a trial (trial_days, default the plan''s): trialing until it ends; a free plan: active; a paid plan without trial: incomplete until its first period is paid (incomplete_expired, its invoice void, if that does not happen within 23 hours). Unknown plan PM204; an archived one PM206; a plan pricing a meter that another live subscription of the customer already bills PM206; a currency other than the customer''s (fixed by its first subscription) PM206; a currency the plan has no price in PM100. Options, as Stripe''s: billing_cycle_anchor (a time within the first period, without a trial: the first period ends there, its fee prorated, and whole periods follow from it), cancel_at (it ends then: see set_subscription_cancel_at), missing_payment_method (what its trial''s end does without a payment method: create_invoice, the default, pause or cancel).';

CREATE OR REPLACE FUNCTION payments.get_subscription(id text) RETURNS SETOF payments.subscription_details
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- Read once, here: inside the query Citus would send it to the shards.
    v_bound text := payments._bound_customer();
BEGIN
    RETURN QUERY SELECT * FROM payments.subscription_details d
    WHERE d.id = get_subscription.id AND d.customer_id = coalesce(v_bound, d.customer_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription % not found', payments._shown(get_subscription.id) USING ERRCODE = 'PM204';
    END IF;
END
$$;
COMMENT ON FUNCTION payments.get_subscription(text) IS 'One subscription by id; PM204 when there is none.';

CREATE OR REPLACE FUNCTION payments.list_subscriptions(customer_id text DEFAULT NULL, status text DEFAULT NULL, lim int DEFAULT 10,
                                            starting_after text DEFAULT NULL)
RETURNS SETOF payments.subscription_details
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- Read once, here: inside the query Citus would send it to the shards.
    v_bound text := payments._bound_customer();
BEGIN
    IF lim IS NULL OR lim NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'lim must be between 1 and 100' USING ERRCODE = 'PM100';
    END IF;
    IF list_subscriptions.status IS NOT NULL AND NOT payments._is_allowed('subscription_status', list_subscriptions.status) THEN
        RAISE EXCEPTION 'unknown subscription status %', quote_literal(payments._shown(list_subscriptions.status))
            USING ERRCODE = 'PM100', HINT = 'SELECT * FROM payments.allowed_values() WHERE kind = ''subscription_status''';
    END IF;
    RETURN QUERY SELECT * FROM payments.subscription_details d
    WHERE (list_subscriptions.customer_id IS NULL OR d.customer_id = list_subscriptions.customer_id)
      -- A login bound to one customer sees that customer's subscriptions only.
      AND d.customer_id = coalesce(v_bound, d.customer_id)
      AND (list_subscriptions.status IS NULL OR d.status = list_subscriptions.status)
      AND (starting_after IS NULL OR d.id < starting_after)
    ORDER BY d.id DESC LIMIT lim;
END
$$;
COMMENT ON FUNCTION payments.list_subscriptions(text, text, int, text) IS
    'Subscriptions newest first (of one customer, in one status, when given), lim (1 to 100) at a time; starting_after: the last id of the previous page.';

CREATE OR REPLACE FUNCTION payments._locked_subscription(p_id text) RETURNS payments.subscriptions
LANGUAGE plpgsql AS $$
DECLARE
    v_customer text;
    v_sub      payments.subscriptions%ROWTYPE;
BEGIN
    SELECT s.customer_id INTO v_customer FROM payments.subscriptions s WHERE s.id = p_id;
    SELECT * INTO v_sub FROM payments.subscriptions s WHERE s.customer_id = v_customer AND s.id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription % not found', payments._shown(p_id) USING ERRCODE = 'PM204';
    END IF;
    RETURN v_sub;
END
$$;
COMMENT ON FUNCTION payments._locked_subscription(text) IS
    'Internal: a subscription by id, its row locked for the rest of the transaction; PM204 when unknown.';

CREATE OR REPLACE FUNCTION payments._locked_for_billing(p_id text) RETURNS payments.subscriptions
LANGUAGE plpgsql AS $$
DECLARE
    v_customer text;
    v_payments text[];
BEGIN
    -- In the order an invoice payment's news takes them (the payment, its invoice, the
    -- subscription), so a call that may settle or stop invoices never deadlocks with it.
    SELECT s.customer_id INTO v_customer FROM payments.subscriptions s WHERE s.id = p_id;
    SELECT array_agg(i.payment_id) INTO v_payments FROM payments.invoices i
    WHERE i.customer_id = v_customer AND i.subscription_id = p_id AND i.status = 'open' AND i.payment_id IS NOT NULL;
    PERFORM 1 FROM payments.payments p WHERE p.customer_id = v_customer AND p.id = ANY (v_payments) ORDER BY p.id FOR UPDATE;
    PERFORM 1 FROM payments.invoices i
    WHERE i.customer_id = v_customer AND i.subscription_id = p_id AND i.status = 'open' ORDER BY i.id FOR UPDATE;
    RETURN payments._locked_subscription(p_id);
END
$$;
COMMENT ON FUNCTION payments._locked_for_billing(text) IS
    'Internal: a subscription by id with its row locked, after the payments of its open invoices and those invoices (the order their payments'' news locks them); PM204 when unknown.';

CREATE OR REPLACE FUNCTION payments._set_subscription(p_sub payments.subscriptions, p_from text, p_reason text, p_data jsonb)
RETURNS SETOF payments.subscription_result
LANGUAGE plpgsql AS $$
DECLARE
    -- A value, not now() in the CASE: Citus allows only immutable functions there.
    v_now timestamptz := now();
BEGIN
    UPDATE payments.subscriptions s
    SET status = p_sub.status, cancel_at_period_end = p_sub.cancel_at_period_end, canceled_at = p_sub.canceled_at,
        cancel_at = p_sub.cancel_at,
        past_due_since = CASE WHEN p_sub.status = 'past_due' THEN coalesce(s.past_due_since, p_sub.past_due_since, v_now) END,
        updated_at = now()
    WHERE s.customer_id = p_sub.customer_id AND s.id = p_sub.id;
    PERFORM payments._subscription_event(p_sub, p_from, p_reason, p_data);
    RETURN QUERY SELECT * FROM payments._subscription_result(p_sub.customer_id, p_sub.id, 'applied');
END
$$;
COMMENT ON FUNCTION payments._set_subscription(payments.subscriptions, text, text, jsonb) IS
    'Internal: stores a locked subscription''s new status and cancel fields and notes the step in its history. past_due_since is kept from the first failure on (the caller sets it to the time of the failed attempt).';

CREATE OR REPLACE FUNCTION payments.cancel_subscription(id text, at_period_end boolean DEFAULT true, at timestamptz DEFAULT now())
RETURNS SETOF payments.subscription_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_sub  payments.subscriptions%ROWTYPE := payments._locked_for_billing(cancel_subscription.id);
    v_from text := v_sub.status;
BEGIN
    IF at_period_end IS NULL OR at IS NULL THEN
        RAISE EXCEPTION 'at_period_end and at are required' USING ERRCODE = 'PM100';
    END IF;
    IF v_sub.status IN ('canceled', 'incomplete_expired') OR (at_period_end AND v_sub.cancel_at_period_end) THEN
        RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'noop');
        RETURN;
    END IF;
    IF at_period_end AND v_sub.status = ANY (payments._group('current_subscription_status')) THEN
        v_sub.cancel_at_period_end := true;
        RETURN QUERY SELECT * FROM payments._set_subscription(v_sub, v_from, 'cancel at period end',
                                                              jsonb_build_object('at', at));
        RETURN;
    END IF;
    PERFORM payments._end_subscription(v_sub, 'canceled', at, 'canceled', at);
    RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'applied');
END
$$;
COMMENT ON FUNCTION payments.cancel_subscription(text, boolean, timestamptz) IS
    'Cancels a subscription: at the end of its period (default; it stays usable until then), or at once (at_period_end false, and always for one that is not trialing, active or past_due). Either way its usage not yet invoiced is invoiced once (a final invoice, one attempt), and its open invoices are no longer collected (uncollectible; a payment waiting on the customer is canceled), as on Stripe. Canceling again is a noop. PM204 when unknown.';

CREATE OR REPLACE FUNCTION payments.set_subscription_cancel_at(id text, cancel_at timestamptz,
                                                               at timestamptz DEFAULT now())
RETURNS SETOF payments.subscription_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_sub payments.subscriptions%ROWTYPE := payments._locked_subscription(set_subscription_cancel_at.id);
BEGIN
    IF at IS NULL OR NOT isfinite(at) OR NOT coalesce(set_subscription_cancel_at.cancel_at > at, true)
       OR NOT isfinite(set_subscription_cancel_at.cancel_at) THEN
        RAISE EXCEPTION 'cancel_at is a finite time after at (or NULL: no longer)' USING ERRCODE = 'PM100';
    ELSIF NOT (v_sub.status = ANY (payments._group('live_subscription_status'))) THEN
        RAISE EXCEPTION 'subscription % is % already', v_sub.id, v_sub.status USING ERRCODE = 'PM206';
    ELSIF v_sub.cancel_at IS NOT DISTINCT FROM set_subscription_cancel_at.cancel_at THEN
        RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'noop');
        RETURN;
    END IF;
    v_sub.cancel_at := set_subscription_cancel_at.cancel_at;
    RETURN QUERY SELECT * FROM payments._set_subscription(v_sub, v_sub.status, 'cancel_at set',
                                                          jsonb_build_object('cancel_at', v_sub.cancel_at, 'at', at));
END
$$;
COMMENT ON FUNCTION payments.set_subscription_cancel_at(text, timestamptz, timestamptz) IS
    'Sets when a subscription is canceled (as Stripe''s cancel_at; NULL: no longer), decided at time at (cancel_at after it): from then on it grants nothing, and run_billing ends it at that time, invoicing its usage up to it once; periods that start before it renew as usual (a period it falls in is not prorated: cancel at a period''s end to bill only whole periods). The same time again is a noop; PM206 for a subscription that ended.';

CREATE OR REPLACE FUNCTION payments.pause_subscription(id text, at timestamptz DEFAULT now())
RETURNS SETOF payments.subscription_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- Locked as billing locks it: finalizing a draft may charge it.
    v_sub  payments.subscriptions%ROWTYPE := payments._locked_for_billing(pause_subscription.id);
    v_from text := v_sub.status;
BEGIN
    IF v_sub.status = 'paused' THEN
        RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'noop');
        RETURN;
    ELSIF v_sub.status NOT IN ('trialing', 'active') THEN
        RAISE EXCEPTION 'subscription % is % and cannot be paused', v_sub.id, v_sub.status USING ERRCODE = 'PM206';
    END IF;
    IF at IS NULL OR NOT isfinite(at) THEN
        RAISE EXCEPTION 'at is required (a finite time)' USING ERRCODE = 'PM100';
    END IF;
    -- The period it was renewed into is billed as it stands: a pause never voids a draft.
    PERFORM payments._finalize_drafts(v_sub, at);
    v_sub.status := 'paused';
    RETURN QUERY SELECT * FROM payments._set_subscription(v_sub, v_from, 'paused', jsonb_build_object('at', at));
END
$$;
COMMENT ON FUNCTION payments.pause_subscription(text, timestamptz) IS
    'Pauses a trialing or active subscription at time at (PM206 otherwise): it grants nothing until resumed (a renewal still a draft is finalized first, at at). Pausing again is a noop.';

CREATE OR REPLACE FUNCTION payments.resume_subscription(id text, at timestamptz DEFAULT now()) RETURNS SETOF payments.subscription_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_sub  payments.subscriptions%ROWTYPE := payments._locked_for_billing(resume_subscription.id);
BEGIN
    IF at IS NULL THEN
        RAISE EXCEPTION 'at is required' USING ERRCODE = 'PM100';
    END IF;
    IF v_sub.status <> 'paused' THEN
        RAISE EXCEPTION 'subscription % is %, not paused', v_sub.id, v_sub.status USING ERRCODE = 'PM206';
    END IF;
    IF at < v_sub.current_period_end THEN
        -- Within the period it was paused in: it goes on as it was.
        v_sub.status := CASE WHEN v_sub.period_number = 0 THEN 'trialing' ELSE 'active' END;
        RETURN QUERY SELECT * FROM payments._set_subscription(v_sub, 'paused', 'resumed', jsonb_build_object('at', at));
    ELSIF v_sub.cancel_at_period_end THEN
        PERFORM payments._end_subscription(v_sub, 'canceled', v_sub.current_period_end, 'canceled at period end', at);
        RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'applied');
    ELSE
        -- The periods that passed while it was paused are not billed: a new period starts now
        -- (Stripe: a paused subscription does not advance; on resume the anchor is now).
        PERFORM payments._next_period(v_sub, at, true, 'resumed', at);
        RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'applied');
    END IF;
END
$$;
COMMENT ON FUNCTION payments.resume_subscription(text, timestamptz) IS
    'Resumes a paused subscription at time at (PM206 otherwise). Within the period it was paused in, it goes on (trialing while its trial lasts); after, the periods that passed are not billed: a new period starts at at, its anchor, and is invoiced (a trial paused and resumed after its end starts its first paid period then). One canceled at period end whose period passed ends instead.';

-- ---------------------------------------------------------------------------
-- What a customer may do now
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION payments._grants_now(p_sub payments.subscriptions, p_at timestamptz) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN CASE p_sub.status
               WHEN 'active' THEN true
               WHEN 'trialing' THEN p_at < p_sub.trial_end
               WHEN 'past_due' THEN p_at < p_sub.past_due_since
                                          + coalesce((SELECT b.past_due_grace FROM payments.billing_settings b),
                                                     interval '3 days')
               ELSE false END
           AND NOT (p_sub.cancel_at_period_end AND p_at >= p_sub.current_period_end)
           AND NOT coalesce(p_at >= p_sub.cancel_at, false);
END
$$;
COMMENT ON FUNCTION payments._grants_now(payments.subscriptions, timestamptz) IS
    'Internal: whether a subscription grants its plan at time p_at: active; trialing within its trial; past_due within the grace period (set_dunning, default 3 days); and not past the end of a period it is canceled at, nor past its cancel_at.';

CREATE OR REPLACE FUNCTION payments.has_active_subscription(customer_id text, plan text DEFAULT NULL, at timestamptz DEFAULT now())
RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_sub payments.subscriptions%ROWTYPE;
BEGIN
    -- A login bound to another customer learns nothing of this one.
    IF has_active_subscription.customer_id IS DISTINCT FROM coalesce(payments._bound_customer(), has_active_subscription.customer_id) THEN
        RETURN false;
    END IF;
    FOR v_sub IN
        SELECT * FROM payments.subscriptions s
        WHERE s.customer_id = has_active_subscription.customer_id AND s.status = ANY (payments._group('current_subscription_status'))
          AND (has_active_subscription.plan IS NULL OR s.plan = has_active_subscription.plan)
    LOOP
        IF payments._grants_now(v_sub, at) THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END
$$;
COMMENT ON FUNCTION payments.has_active_subscription(text, text, timestamptz) IS
    'Whether the customer has a subscription (of plan, when given) that grants its plan at time at: active, trialing within its trial, or past_due within the grace period (set_dunning); one canceled at period end counts until the period ends.';

CREATE OR REPLACE FUNCTION payments.customer_has_paid(customer_id text, since timestamptz DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- A login bound to another customer learns nothing of this one.
    IF customer_has_paid.customer_id IS DISTINCT FROM coalesce(payments._bound_customer(), customer_has_paid.customer_id) THEN
        RETURN false;
    END IF;
    RETURN EXISTS (
        SELECT 1 FROM payments.payments p
        WHERE p.customer_id = customer_has_paid.customer_id AND p.status = 'succeeded'
          AND p.amount_captured_minor > p.amount_refunded_minor
          AND (since IS NULL OR p.created_at >= since));
END
$$;
COMMENT ON FUNCTION payments.customer_has_paid(text, timestamptz) IS
    'Whether the customer has a succeeded payment (created since since, when given) that was not refunded in full.';

CREATE OR REPLACE FUNCTION payments.entitlements(customer_id text, at timestamptz DEFAULT now())
RETURNS TABLE (feature text, "limit" numeric, used numeric, remaining numeric, subscription_id text, plan text,
               period_start timestamptz, period_end timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_sub     payments.subscriptions%ROWTYPE;
    v_period  record;
    v_feature record;
BEGIN
    IF at IS NULL THEN
        RAISE EXCEPTION 'at is required' USING ERRCODE = 'PM100';
    END IF;
    -- A login bound to another customer learns nothing of this one.
    IF entitlements.customer_id IS DISTINCT FROM coalesce(payments._bound_customer(), entitlements.customer_id) THEN
        RETURN;
    END IF;
    FOR v_sub IN
        SELECT * FROM payments.subscriptions s
        WHERE s.customer_id = entitlements.customer_id AND s.status = ANY (payments._group('current_subscription_status'))
        ORDER BY s.created_at, s.id
    LOOP
        CONTINUE WHEN NOT payments._grants_now(v_sub, at);
        v_period := payments._period_at(v_sub, at);
        -- One feature at a time, each count read where it lives (Citus plans no lateral join here).
        FOR v_feature IN SELECT f.key, f.value, p.features_per_seat AS per_seat
                         FROM payments.plans p CROSS JOIN jsonb_each(p.features) f
                         WHERE p.code = v_period.plan ORDER BY f.key LOOP
            SELECT sum(fu.used) INTO used FROM payments.feature_usage fu
            WHERE fu.customer_id = entitlements.customer_id AND fu.subscription_id = v_sub.id
              AND fu.feature = v_feature.key AND fu.period_start = v_period.period_start;
            feature := v_feature.key;
            "limit" := CASE WHEN jsonb_typeof(v_feature.value) = 'number' THEN (v_feature.value::text)::numeric END
                       * CASE WHEN v_feature.per_seat THEN v_sub.quantity ELSE 1 END;
            used := coalesce(used, 0);
            remaining := "limit" - used;
            subscription_id := v_sub.id;
            plan := v_period.plan;
            period_start := v_period.period_start;
            period_end := v_period.period_end;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;
COMMENT ON FUNCTION payments.entitlements(text, timestamptz) IS
    'Each feature the customer may use at time at, per subscription that grants its plan then (has_active_subscription): its limit in the period at falls in (NULL: unlimited; per seat, times the quantity, when the plan says so), what was used and what is left. The period follows from at and the subscription alone: a new period''s quota starts at its start, whether run_billing has renewed it yet or not.';

CREATE OR REPLACE FUNCTION payments._quota_answer(p_answer payments.consumptions, p_period_start timestamptz,
                                      p_limit numeric, p_pending numeric,
                                      OUT answer payments.consumptions, OUT replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_used numeric;
BEGIN
    answer := p_answer;
    IF p_limit IS NOT NULL THEN
        SELECT coalesce(sum(fu.used), 0) INTO v_used FROM payments.feature_usage fu
        WHERE fu.customer_id = answer.customer_id AND fu.subscription_id = answer.subscription_id
          AND fu.feature = answer.feature AND fu.period_start = p_period_start;
        answer.remaining := p_limit - v_used - CASE WHEN answer.allowed THEN p_pending ELSE 0 END;
    END IF;
    -- Of two calls with one request id, the second waits here for the first and answers as it did.
    INSERT INTO payments.consumptions (customer_id, request_id, feature, quantity, subscription_id, allowed, remaining,
                                       reason, consumed_at, credits_unit, credits_drawn)
    VALUES (answer.customer_id, answer.request_id, answer.feature, answer.quantity, answer.subscription_id,
            answer.allowed, answer.remaining, answer.reason, answer.consumed_at, answer.credits_unit, answer.credits_drawn)
    ON CONFLICT ON CONSTRAINT consumptions_pkey DO NOTHING;
    replayed := NOT FOUND;
    IF replayed THEN
        SELECT * INTO answer FROM payments.consumptions c
        WHERE c.customer_id = p_answer.customer_id AND c.request_id = p_answer.request_id;
    END IF;
END
$$;
COMMENT ON FUNCTION payments._quota_answer(payments.consumptions, timestamptz, numeric, numeric) IS
    'Internal: records a consume answer, with what remains under p_limit as far as this call can see (p_pending: what it counts in the slots that is not there yet); a request id already answered returns that answer instead (replayed), waiting for a concurrent call with it to end.';

CREATE OR REPLACE FUNCTION payments._quota_take(p_answer payments.consumptions, p_period_start timestamptz,
                                    p_slot smallint, p_limit numeric, p_count numeric,
                                    OUT answer payments.consumptions, OUT replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_answered record;
BEGIN
    v_answered := payments._quota_answer(p_answer, p_period_start, p_limit, p_count);
    answer := v_answered.answer;
    replayed := v_answered.replayed;
    IF NOT replayed AND answer.allowed THEN
        IF p_limit IS NULL THEN
            -- Counted without a limit: a split made for a limit earlier this period is over (a
            -- limit back later splits again, counting this too). Nothing to write once it is.
            UPDATE payments.feature_usage fu SET allowance = NULL, basis = NULL
            WHERE fu.customer_id = answer.customer_id AND fu.subscription_id = answer.subscription_id
              AND fu.feature = answer.feature AND fu.period_start = p_period_start AND fu.basis IS NOT NULL;
        END IF;
        INSERT INTO payments.feature_usage AS fu (customer_id, subscription_id, feature, period_start, slot, used)
        VALUES (answer.customer_id, answer.subscription_id, answer.feature, p_period_start, p_slot, p_count)
        ON CONFLICT ON CONSTRAINT feature_usage_pkey DO UPDATE SET used = fu.used + excluded.used
        WHERE excluded.used > 0;  -- credits paid for all of it: nothing to count
    END IF;
END
$$;
COMMENT ON FUNCTION payments._quota_take(payments.consumptions, timestamptz, smallint, numeric, numeric) IS
    'Internal: records a consume answer (_quota_answer) and, when allowed and not replayed, counts p_count (the quantity, less what credits paid for) in slot p_slot of the quota. The caller holds the slot''s lock when the feature has a limit.';

CREATE OR REPLACE FUNCTION payments._quota_consume(p_answer payments.consumptions, p_period_start timestamptz,
                                       p_limit numeric, p_plan text, p_version integer, p_currency text,
                                       OUT answer payments.consumptions, OUT replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    -- This server process's own slot, tried first: concurrent callers start apart.
    v_mine     smallint := pg_backend_pid() % 32;
    v_slot     smallint;
    v_room     boolean;
    v_used     numeric;
    v_leftover numeric;
    v_part     numeric;
    v_slots    integer;
    v_held     smallint[];
    v_count    numeric;
    v_drew     boolean := false;  -- credits paid for part of it (and must not for an answer taken meanwhile)
    v_paid     record;
    v_taken    record;
    v_first    payments.consumptions;  -- the answer a request id got already
BEGIN
    answer := p_answer;
    answer.allowed := true;
    -- Steps 1 to 3 each run in a block that, when it finds no slot, is rolled back, letting go
    -- of what it locked (a locking read keeps rows it re-checked and passed over): a caller never
    -- holds one slot while it waits for another, and step 4, which takes every slot in order,
    -- starts holding none, so no two callers wait on each other in a cycle. A slot found is
    -- counted in the same block (a row locked in one transaction and changed in another, even
    -- its parent, would need a MultiXact).
    -- A quota used up (a limit of 0, or a busy period past it) goes straight to step 4: each
    -- block below is a subtransaction, three spent for nothing. (A slot seen with room may be
    -- taken meanwhile; the steps find that out.)
    IF EXISTS (SELECT 1 FROM payments.feature_usage fu
               WHERE fu.customer_id = answer.customer_id AND fu.subscription_id = answer.subscription_id
                 AND fu.feature = answer.feature AND fu.period_start = p_period_start AND fu.basis = p_limit
                 AND fu.allowance - fu.used >= answer.quantity) THEN
        BEGIN
            -- 1. Its own slot, counted in place when it has room; then the answer, as in every step
            -- (a slot, then the request id: two calls with one request id never wait on each other
            -- in a cycle). A request answered already takes the count back with the block.
            UPDATE payments.feature_usage fu SET used = fu.used + answer.quantity
            WHERE fu.customer_id = answer.customer_id AND fu.subscription_id = answer.subscription_id
              AND fu.feature = answer.feature AND fu.period_start = p_period_start AND fu.slot = v_mine
              AND fu.basis = p_limit AND fu.allowance - fu.used >= answer.quantity;
            IF FOUND THEN
                v_taken := payments._quota_answer(answer, p_period_start, p_limit, 0);
                IF NOT v_taken.replayed THEN
                    answer := v_taken.answer;
                    replayed := false;
                    RETURN;
                END IF;
                v_first := v_taken.answer;
            END IF;
            RAISE EXCEPTION USING ERRCODE = 'P0001';
        EXCEPTION WHEN raise_exception THEN
            IF v_first.request_id IS NOT NULL THEN
                answer := v_first;
                replayed := true;
                RETURN;
            END IF;
        END;
        BEGIN
            -- 2. Another slot with room that no one holds.
            SELECT fu.slot INTO v_slot FROM payments.feature_usage fu
            WHERE fu.customer_id = answer.customer_id AND fu.subscription_id = answer.subscription_id
              AND fu.feature = answer.feature AND fu.period_start = p_period_start AND fu.basis = p_limit
              AND fu.allowance - fu.used >= answer.quantity
            ORDER BY (fu.slot - v_mine + 32) % 32 LIMIT 1
            FOR UPDATE SKIP LOCKED;
            IF FOUND THEN
                v_taken := payments._quota_take(answer, p_period_start, v_slot, p_limit, answer.quantity);
                answer := v_taken.answer;
                replayed := v_taken.replayed;
                RETURN;
            END IF;
            RAISE EXCEPTION USING ERRCODE = 'P0001';
        EXCEPTION WHEN raise_exception THEN
            NULL;
        END;
        BEGIN
            -- 3. All busy: wait for the one that had room last, and see whether it still has. (A
            -- process without a slot of its own makes one in step 4 instead: the quota grows as
            -- more of its customer's calls run at once.)
            SELECT fu.slot INTO v_slot FROM payments.feature_usage fu
            WHERE fu.customer_id = answer.customer_id AND fu.subscription_id = answer.subscription_id
              AND fu.feature = answer.feature AND fu.period_start = p_period_start AND fu.basis = p_limit
              AND fu.allowance - fu.used >= answer.quantity
              AND EXISTS (SELECT FROM payments.feature_usage mine
                          WHERE mine.customer_id = answer.customer_id AND mine.subscription_id = answer.subscription_id
                            AND mine.feature = answer.feature AND mine.period_start = p_period_start AND mine.slot = v_mine)
            ORDER BY (fu.slot - v_mine + 32) % 32 LIMIT 1;
            IF FOUND THEN
                SELECT fu.basis = p_limit AND fu.allowance - fu.used >= answer.quantity INTO v_room
                FROM payments.feature_usage fu
                WHERE fu.customer_id = answer.customer_id AND fu.subscription_id = answer.subscription_id
                  AND fu.feature = answer.feature AND fu.period_start = p_period_start AND fu.slot = v_slot
                FOR UPDATE;
                IF v_room THEN
                    v_taken := payments._quota_take(answer, p_period_start, v_slot, p_limit, answer.quantity);
                    answer := v_taken.answer;
                    replayed := v_taken.replayed;
                    RETURN;
                END IF;
            END IF;
            RAISE EXCEPTION USING ERRCODE = 'P0001';
        EXCEPTION WHEN raise_exception THEN
            NULL;
        END;
    END IF;
    -- 4. No slot has room. Slot 0 is the quota's anchor: made first, and held by whoever splits
    -- (one caller at a time). Then this process's own slot is made if it is not there yet (a
    -- quiet customer has one or two), and every slot is locked and added up in one statement,
    -- in order: what it locks is what it adds, and no slot can appear meanwhile (its maker
    -- would need the anchor).
    INSERT INTO payments.feature_usage AS fu (customer_id, subscription_id, feature, period_start, slot, used)
    VALUES (answer.customer_id, answer.subscription_id, answer.feature, p_period_start, 0, 0)
    ON CONFLICT ON CONSTRAINT feature_usage_pkey DO NOTHING;
    PERFORM FROM payments.feature_usage fu
    WHERE fu.customer_id = answer.customer_id AND fu.subscription_id = answer.subscription_id
      AND fu.feature = answer.feature AND fu.period_start = p_period_start AND fu.slot = 0
    FOR UPDATE;
    INSERT INTO payments.feature_usage AS fu (customer_id, subscription_id, feature, period_start, slot, used)
    VALUES (answer.customer_id, answer.subscription_id, answer.feature, p_period_start, v_mine, 0)
    ON CONFLICT ON CONSTRAINT feature_usage_pkey DO NOTHING;
    SELECT array_agg(l.slot), sum(l.used) INTO v_held, v_used FROM (
        SELECT fu.slot, fu.used FROM payments.feature_usage fu
        WHERE fu.customer_id = answer.customer_id AND fu.subscription_id = answer.subscription_id
          AND fu.feature = answer.feature AND fu.period_start = p_period_start
        ORDER BY fu.slot FOR UPDATE) l;
    v_slots := cardinality(v_held);
    v_count := answer.quantity;
    IF v_used + answer.quantity > p_limit THEN
        -- Past the limit. A call with this request id that ended while this one waited for the
        -- slots answered already: never pay twice.
        SELECT * INTO v_first FROM payments.consumptions c
        WHERE c.customer_id = answer.customer_id AND c.request_id = answer.request_id;
        IF FOUND THEN
            answer := v_first;
            replayed := true;
            RETURN;
        END IF;
        -- What is left of the limit is counted, credits pay for the rest; no slot keeps room.
        v_count := greatest(p_limit - v_used, 0);
        v_paid := payments._pay_past_limit(answer.customer_id, answer.feature, answer.request_id,
                                           answer.quantity - v_count,
                                           payments._plan_of(p_plan, p_version, p_currency), answer.consumed_at);
        IF v_paid.refusal IS NOT NULL THEN
            answer.allowed := false;
            answer.reason := v_paid.refusal;
        ELSE
            answer.credits_unit := v_paid.unit;
            answer.credits_drawn := v_paid.drawn;
            v_drew := true;
            UPDATE payments.feature_usage fu
            SET allowance = fu.used + CASE WHEN fu.slot = v_mine THEN v_count ELSE 0 END, basis = p_limit
            WHERE fu.customer_id = answer.customer_id AND fu.subscription_id = answer.subscription_id
              AND fu.feature = answer.feature AND fu.period_start = p_period_start AND fu.slot = ANY (v_held)
              AND (fu.allowance, fu.basis) IS DISTINCT FROM
                  (fu.used + CASE WHEN fu.slot = v_mine THEN v_count ELSE 0 END, p_limit);
        END IF;
    ELSE
        -- What is left after this call, split evenly among the slots there are (at its own scale,
        -- so exactly); this slot gets the quantity and what the split leaves over. The
        -- allowances add up to the limit.
        v_leftover := p_limit - v_used - answer.quantity;
        v_part := trunc(v_leftover / v_slots, scale(v_leftover));
        UPDATE payments.feature_usage fu
        SET allowance = fu.used + v_part
                        + CASE WHEN fu.slot = v_mine THEN answer.quantity + v_leftover - v_slots * v_part ELSE 0 END,
            basis = p_limit
        WHERE fu.customer_id = answer.customer_id AND fu.subscription_id = answer.subscription_id
          AND fu.feature = answer.feature AND fu.period_start = p_period_start AND fu.slot = ANY (v_held);
    END IF;
    v_taken := payments._quota_take(answer, p_period_start, v_mine, p_limit, v_count);
    answer := v_taken.answer;
    replayed := v_taken.replayed;
    IF answer.credits_drawn IS NOT NULL AND NOT replayed THEN
        PERFORM payments._after_spend(answer.customer_id, answer.credits_unit, answer.credits_drawn, answer.consumed_at);
    ELSIF v_drew THEN
        -- Answered meanwhile by a call that took another way: what this one drew goes back.
        RAISE EXCEPTION 'request_id % was answered by a concurrent call', quote_literal(answer.request_id)
            USING ERRCODE = '40001', HINT = 'retry the transaction';
    END IF;
END
$$;
COMMENT ON FUNCTION payments._quota_consume(payments.consumptions, timestamptz, numeric, text, integer, text) IS
    'Internal: consume for a feature with a limit, through its quota''s slots (payments.feature_usage): counts the quantity in a slot with room, waiting for one if all are busy; when none has room, takes every slot in order and either splits what is left evenly among them (escrow) and counts, or, past the limit, counts what is left of it and pays for the rest with credits (_pay_past_limit, under the feature prices of p_plan''s version p_version in p_currency) or refuses. The limit is never exceeded: the slots'' allowances add up to it.';

CREATE OR REPLACE FUNCTION payments.consume(customer_id text, feature text, quantity numeric, request_id text,
                                 at timestamptz DEFAULT now())
RETURNS TABLE (allowed boolean, remaining numeric, outcome text, reason text, subscription_id text,
               credits_drawn numeric, credits_unit text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_candidate record;
    v_grant    jsonb;
    v_per_seat boolean;
    v_sub      payments.subscriptions%ROWTYPE;
    v_period   record;
    v_period_start timestamptz;
    v_limit    numeric;
    v_answer   payments.consumptions%ROWTYPE;
    v_taken    record;
BEGIN
    IF customer_id IS NULL OR length(customer_id) NOT BETWEEN 1 AND 255 OR request_id IS NULL
       OR length(request_id) NOT BETWEEN 1 AND 255 OR feature IS NULL OR length(feature) NOT BETWEEN 1 AND 64
       OR quantity IS NULL OR quantity = 'NaN' OR quantity <= 0 OR quantity >= 1e15 OR at IS NULL THEN
        RAISE EXCEPTION 'customer_id and request_id are 1 to 255 characters, feature 1 to 64, quantity above 0 and below 10^15'
            USING ERRCODE = 'PM100';
    END IF;
    -- A retried request: its first answer, nothing consumed; the same id for another request is refused.
    SELECT * INTO v_answer FROM payments.consumptions c
    WHERE c.customer_id = consume.customer_id AND c.request_id = consume.request_id;
    IF FOUND THEN
        RETURN QUERY SELECT * FROM payments._replayed_consumption(v_answer, feature, quantity);
        RETURN;
    END IF;
    -- The first subscription that grants the feature at this time, in the plan of the period
    -- at falls in. Not locked: the quota's own rows keep the limit, and a change of the
    -- subscription committed meanwhile simply comes after this call.
    FOR v_candidate IN
        SELECT * FROM payments.subscriptions s
        WHERE s.customer_id = consume.customer_id AND s.status = ANY (payments._group('current_subscription_status'))
        ORDER BY s.created_at, s.id
    LOOP
        v_sub := v_candidate;
        v_period := payments._period_at(v_sub, at);
        SELECT p.features -> consume.feature, p.features_per_seat INTO v_grant, v_per_seat
        FROM payments.plans p WHERE p.code = v_period.plan;
        v_period_start := v_period.period_start;
        EXIT WHEN v_grant IS NOT NULL AND payments._grants_now(v_sub, at);
        v_sub := NULL;
        v_grant := NULL;
        v_period_start := NULL;
    END LOOP;
    v_answer.customer_id := customer_id;
    v_answer.request_id := request_id;
    v_answer.feature := feature;
    v_answer.quantity := quantity;
    v_answer.subscription_id := v_sub.id;
    v_answer.consumed_at := at;
    -- The grant is the limit (JSON null: unlimited); past it, credits may pay (_quota_consume).
    v_limit := CASE WHEN jsonb_typeof(v_grant) = 'number' THEN (v_grant::text)::numeric END
               * CASE WHEN v_per_seat THEN v_sub.quantity ELSE 1 END;
    v_answer.allowed := v_sub.id IS NOT NULL;
    v_answer.reason := CASE WHEN v_sub.id IS NULL THEN 'no_entitlement' END;
    IF v_answer.allowed AND v_limit IS NOT NULL THEN
        -- Its prices: the subscription's version of its plan, or the latest of the plan it moves to.
        v_taken := payments._quota_consume(v_answer, v_period_start, v_limit, v_period.plan,
                                           CASE WHEN v_period.plan <> v_sub.plan THEN NULL
                                                WHEN v_period_start >= v_sub.current_period_end
                                                THEN coalesce(v_sub.pending_version, v_sub.plan_version)
                                                ELSE v_sub.plan_version END,
                                           v_sub.currency);
    ELSE
        -- Refused at once, or unlimited: counted in this server process's slot, no limit to keep.
        v_taken := payments._quota_take(v_answer, v_period_start, (pg_backend_pid() % 32)::smallint, v_limit,
                                        quantity);
    END IF;
    v_answer := v_taken.answer;
    IF v_taken.replayed THEN
        RETURN QUERY SELECT * FROM payments._replayed_consumption(v_answer, feature, quantity);
        RETURN;
    END IF;
    RETURN QUERY SELECT v_answer.allowed, v_answer.remaining,
                        CASE WHEN v_answer.allowed THEN 'consumed' ELSE 'refused' END, v_answer.reason, v_answer.subscription_id,
                        payments._units_major(v_answer.credits_drawn, v_answer.credits_unit), v_answer.credits_unit;
END
$$;
COMMENT ON FUNCTION payments.consume(text, text, numeric, text, timestamptz) IS
    'In one statement: checks that a subscription of the customer that grants its plan now (has_active_subscription) grants feature, and that quantity fits in what is left of its limit this period; then counts it (outcome consumed, allowed, remaining: what is left, as far as this call can see) or refuses without counting (outcome refused, reason no_entitlement, limit_exceeded or spend_limit_reached). Past the limit, what is left of it is counted and the customer''s credits pay for the rest in the same statement, never past what is available: credits granted for the feature in a credit unit (one per unit, rounded up to whole), else money credits in the plan''s currency at its feature price (create_plan''s feature_prices; the cost rounded up to a minor unit), within the customer''s spend limit (credits_drawn and credits_unit say what was drawn; ledger transfers of kind consumption). Concurrent calls never exceed a limit, and one customer''s calls rarely wait on each other: the limit is split among up to 32 slots (payments.feature_usage), each locked by one call at a time (a transaction that calls consume more than once on a busy customer''s limited feature keeps the slots it took and may, rarely, deadlock with another call: 40P01, retry). The period counted in is the one at falls in (a new period''s quota starts at its start, renewed by run_billing or not). A repeated request_id returns the first answer (outcome replayed) and counts nothing; the same request_id with another feature or quantity is PM201.';

CREATE OR REPLACE FUNCTION payments._replayed_consumption(p_answer payments.consumptions, p_feature text, p_quantity numeric)
RETURNS TABLE (allowed boolean, remaining numeric, outcome text, reason text, subscription_id text,
               credits_drawn numeric, credits_unit text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF (p_answer.feature, p_answer.quantity) IS DISTINCT FROM (p_feature, p_quantity) THEN
        RAISE EXCEPTION 'request_id % was already used for another request', quote_literal(p_answer.request_id)
            USING ERRCODE = 'PM201', DETAIL = 'it consumed ' || p_answer.quantity || ' of ' || p_answer.feature;
    END IF;
    RETURN QUERY SELECT p_answer.allowed, p_answer.remaining, 'replayed'::text, p_answer.reason, p_answer.subscription_id,
                        payments._units_major(p_answer.credits_drawn, p_answer.credits_unit), p_answer.credits_unit;
END
$$;
COMMENT ON FUNCTION payments._replayed_consumption(payments.consumptions, text, numeric) IS
    'Internal: the first answer to a consume request_id asked again, or PM201 when the request differs (another feature or quantity).';
