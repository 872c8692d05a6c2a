-- payments: coupons, discounts and tax rates (their tables: sql/state/coupons_and_taxes.sql).
-- An invoice's lines are priced by payments-core (core/src/invoice.rs, as Stripe prices them):
-- the subscription's discount off each line first, then each of the customer's tax rates on
-- what is left, rounded per line. _priced_lines does it for _issue_invoice and preview_invoice
-- alike, so a preview is the invoice that follows it.

CREATE OR REPLACE FUNCTION payments.create_coupon(code text, percent_off numeric DEFAULT NULL,
                                                  amount_off numeric DEFAULT NULL, currency text DEFAULT NULL,
                                                  duration text DEFAULT 'once', duration_in_periods integer DEFAULT NULL,
                                                  max_redemptions integer DEFAULT NULL,
                                                  redeem_by timestamptz DEFAULT NULL,
                                                  applies_to_plans text[] DEFAULT NULL, name text DEFAULT NULL)
RETURNS SETOF payments.coupons
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_currency text := upper(currency);
    v_minor    bigint;
    v_coupon   payments.coupons%ROWTYPE;
BEGIN
    IF code IS NULL OR code !~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$' THEN
        RAISE EXCEPTION 'a coupon code is 1 to 64 letters, digits, _ and -, not %', quote_nullable(payments._shown(code))
            USING ERRCODE = 'PM100';
    END IF;
    IF (percent_off IS NULL) = (amount_off IS NULL)
       OR NOT coalesce(percent_off > 0 AND percent_off <= 100 AND scale(percent_off) <= 4, true)
       OR (amount_off IS NULL) <> (currency IS NULL) THEN
        RAISE EXCEPTION 'a coupon takes percent_off (above 0, at most 100) or amount_off with its currency'
            USING ERRCODE = 'PM100';
    END IF;
    IF duration IS NULL OR NOT payments._is_allowed('coupon_duration', duration)
       OR (duration = 'repeating') <> (duration_in_periods IS NOT NULL)
       OR duration_in_periods NOT BETWEEN 1 AND 1200 OR max_redemptions <= 0
       OR NOT isfinite(redeem_by) OR length(name) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'duration is once, forever or repeating (with duration_in_periods, 1 to 1200); max_redemptions above 0; redeem_by finite'
            USING ERRCODE = 'PM100';
    END IF;
    IF cardinality(applies_to_plans) NOT BETWEEN 1 AND 100
       OR EXISTS (SELECT 1 FROM unnest(applies_to_plans) p(code)
                  WHERE NOT EXISTS (SELECT 1 FROM payments.plans pl WHERE pl.code = p.code)) THEN
        RAISE EXCEPTION 'applies_to_plans names 1 to 100 existing plans (or is NULL: any)' USING ERRCODE = 'PM100';
    END IF;
    IF EXISTS (SELECT 1 FROM payments.promotion_codes pc WHERE pc.code = create_coupon.code) THEN
        RAISE EXCEPTION '% is a promotion code: a coupon takes another code', create_coupon.code USING ERRCODE = 'PM100';
    END IF;
    IF amount_off IS NOT NULL THEN
        v_minor := payments.to_minor(amount_off, v_currency);
    END IF;
    INSERT INTO payments.coupons AS c (code, name, percent_off, amount_off_minor, currency, duration,
                                       duration_in_periods, max_redemptions, redeem_by, applies_to_plans)
    VALUES (create_coupon.code, create_coupon.name, create_coupon.percent_off, v_minor,
            CASE WHEN v_minor IS NOT NULL THEN v_currency END, create_coupon.duration,
            create_coupon.duration_in_periods, create_coupon.max_redemptions, create_coupon.redeem_by,
            create_coupon.applies_to_plans)
    ON CONFLICT ON CONSTRAINT coupons_pkey DO NOTHING;
    SELECT * INTO v_coupon FROM payments.coupons c WHERE c.code = create_coupon.code;
    IF (v_coupon.name, v_coupon.percent_off, v_coupon.amount_off_minor, v_coupon.duration,
        v_coupon.duration_in_periods, v_coupon.max_redemptions, v_coupon.redeem_by, v_coupon.applies_to_plans)
       IS DISTINCT FROM (create_coupon.name, create_coupon.percent_off, v_minor, create_coupon.duration,
                         create_coupon.duration_in_periods, create_coupon.max_redemptions, create_coupon.redeem_by,
                         create_coupon.applies_to_plans) THEN
        RAISE EXCEPTION 'coupon % exists with another definition', v_coupon.code USING ERRCODE = 'PM201',
            HINT = 'a coupon never changes under its redemptions: make one with a new code';
    END IF;
    RETURN NEXT v_coupon;
END
$$;
COMMENT ON FUNCTION payments.create_coupon(text, numeric, numeric, text, text, integer, integer, timestamptz, text[], text) IS
    'Makes a coupon (admin), as Stripe''s: percent_off (above 0, at most 100) or amount_off in currency (major units, exact), lasting once (the first period after it is applied), repeating (duration_in_periods periods) or forever; at most max_redemptions subscriptions, until redeem_by, for applies_to_plans (NULL: any plan). The same call again returns it; another definition for its code is PM201; bad input PM100 (PM101 for excess precision).';

CREATE OR REPLACE FUNCTION payments.apply_coupon(subscription_id text, code text, at timestamptz DEFAULT now())
RETURNS TABLE (discount_id text, coupon text, first_period integer, last_period integer, outcome text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_sub      payments.subscriptions%ROWTYPE;
    v_coupon   payments.coupons%ROWTYPE;
    v_plan     payments.plans%ROWTYPE;
    v_discount payments.discounts%ROWTYPE;
    v_promo    payments.promotion_codes%ROWTYPE;
    v_first    integer;
    v_last     integer;
BEGIN
    IF at IS NULL OR NOT isfinite(at) THEN
        RAISE EXCEPTION 'at is required (a finite time)' USING ERRCODE = 'PM100';
    END IF;
    v_sub := payments._locked_subscription(apply_coupon.subscription_id);
    -- A promotion code names its coupon.
    SELECT * INTO v_promo FROM payments.promotion_codes pc WHERE pc.code = apply_coupon.code;
    -- Applied already: the same answer, nothing redeemed again.
    SELECT * INTO v_discount FROM payments.discounts d
    WHERE d.customer_id = v_sub.customer_id AND d.subscription_id = v_sub.id
      AND d.coupon = coalesce(v_promo.coupon, apply_coupon.code);
    IF FOUND THEN
        RETURN QUERY SELECT v_discount.id, v_discount.coupon, v_discount.first_period, v_discount.last_period,
                            'replayed'::text;
        RETURN;
    END IF;
    SELECT * INTO v_coupon FROM payments.coupons c WHERE c.code = coalesce(v_promo.coupon, apply_coupon.code);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'coupon % not found', payments._shown(apply_coupon.code) USING ERRCODE = 'PM204';
    END IF;
    IF v_promo.code IS NOT NULL THEN
        IF NOT v_promo.active OR at > v_promo.redeem_by
           OR v_promo.only_customer <> v_sub.customer_id THEN
            RAISE EXCEPTION 'promotion code % is %', v_promo.code,
                CASE WHEN NOT v_promo.active THEN 'not active' WHEN at > v_promo.redeem_by THEN 'expired'
                     ELSE 'for another customer' END USING ERRCODE = 'PM206';
        END IF;
        -- Its own limit first (its row orders its redeemers), then the coupon's below.
        UPDATE payments.promotion_codes pc SET times_redeemed = pc.times_redeemed + 1
        WHERE pc.code = v_promo.code AND (pc.max_redemptions IS NULL OR pc.times_redeemed < pc.max_redemptions);
        IF NOT FOUND THEN
            RAISE EXCEPTION 'promotion code % has no redemptions left', v_promo.code USING ERRCODE = 'PM206';
        END IF;
    END IF;
    v_plan := payments._sub_plan(v_sub);
    IF NOT (v_sub.status = ANY (payments._group('current_subscription_status'))) THEN
        RAISE EXCEPTION 'subscription % is % and takes no coupon', v_sub.id, v_sub.status USING ERRCODE = 'PM206';
    ELSIF at > v_coupon.redeem_by THEN
        RAISE EXCEPTION 'coupon % could be redeemed until %', v_coupon.code, v_coupon.redeem_by USING ERRCODE = 'PM206';
    ELSIF NOT (v_sub.plan = ANY (coalesce(v_coupon.applies_to_plans, ARRAY[v_sub.plan]))) THEN
        RAISE EXCEPTION 'coupon % does not apply to plan %', v_coupon.code, v_sub.plan USING ERRCODE = 'PM206';
    ELSIF v_coupon.currency <> v_plan.currency THEN
        RAISE EXCEPTION 'coupon % takes % off, and plan % bills in %', v_coupon.code, v_coupon.currency, v_plan.code,
            v_plan.currency USING ERRCODE = 'PM206';
    END IF;
    -- One redemption more, never past the limit: concurrent redeemers of the last one wait on
    -- the coupon's row, and one of them gets it.
    UPDATE payments.coupons c SET times_redeemed = c.times_redeemed + 1
    WHERE c.code = v_coupon.code AND (c.max_redemptions IS NULL OR c.times_redeemed < c.max_redemptions);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'coupon % has no redemptions left', v_coupon.code USING ERRCODE = 'PM206';
    END IF;
    -- A subscription has one discount at a time (Stripe replaces it).
    UPDATE payments.discounts d SET ended_at = at
    WHERE d.customer_id = v_sub.customer_id AND d.subscription_id = v_sub.id AND d.ended_at IS NULL;
    v_first := v_sub.period_number + 1;
    -- (Computed apart: Citus sends the INSERT to a worker with its values as parameters.)
    v_last := CASE WHEN v_coupon.duration = 'once' THEN v_first
                   WHEN v_coupon.duration = 'repeating' THEN v_first + v_coupon.duration_in_periods - 1 END;
    INSERT INTO payments.discounts (customer_id, id, subscription_id, coupon, promotion_code, first_period, last_period,
                                    applied_at)
    VALUES (v_sub.customer_id, payments._new_id('dsc'), v_sub.id, v_coupon.code, v_promo.code, v_first, v_last, at)
    RETURNING * INTO v_discount;
    PERFORM payments._subscription_event(v_sub, v_sub.status, 'coupon applied',
                                         jsonb_build_object('coupon', v_coupon.code, 'first_period', v_first,
                                                            'last_period', v_discount.last_period));
    RETURN QUERY SELECT v_discount.id, v_discount.coupon, v_discount.first_period, v_discount.last_period,
                        'applied'::text;
END
$$;
COMMENT ON FUNCTION payments.apply_coupon(text, text, timestamptz) IS
    'Redeems a coupon, or a promotion code for one, for a trialing, active or past_due subscription (PM206 otherwise): its discount comes off the invoices of the periods after the current one (a trial''s: from the first paid one), once, for duration_in_periods periods, or forever, replacing the subscription''s earlier discount. Never past the coupon''s max_redemptions (nor a promotion code''s), however many redeem it at once; a promotion code that is inactive, expired or for another customer: PM206; after redeem_by, for a plan it does not apply to, or in another currency than the plan''s: PM206. An unknown coupon or subscription: PM204. The same coupon again is replayed.';

CREATE OR REPLACE FUNCTION payments.create_promotion_code(code text, coupon text, max_redemptions integer DEFAULT NULL,
                                                          redeem_by timestamptz DEFAULT NULL,
                                                          customer_id text DEFAULT NULL)
RETURNS SETOF payments.promotion_codes
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_promo payments.promotion_codes%ROWTYPE;
BEGIN
    IF code IS NULL OR code !~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$' OR max_redemptions <= 0 OR NOT isfinite(redeem_by)
       OR length(customer_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'a promotion code is 1 to 64 letters, digits, _ and -; max_redemptions above 0; redeem_by finite'
            USING ERRCODE = 'PM100';
    ELSIF NOT EXISTS (SELECT 1 FROM payments.coupons c WHERE c.code = create_promotion_code.coupon) THEN
        RAISE EXCEPTION 'coupon % not found', payments._shown(coupon) USING ERRCODE = 'PM204';
    ELSIF EXISTS (SELECT 1 FROM payments.coupons c WHERE c.code = create_promotion_code.code) THEN
        RAISE EXCEPTION '% is a coupon''s code: a promotion code takes another', code USING ERRCODE = 'PM100';
    END IF;
    INSERT INTO payments.promotion_codes AS pc (code, coupon, only_customer, max_redemptions, redeem_by)
    VALUES (create_promotion_code.code, create_promotion_code.coupon, create_promotion_code.customer_id,
            create_promotion_code.max_redemptions, create_promotion_code.redeem_by)
    ON CONFLICT ON CONSTRAINT promotion_codes_pkey DO NOTHING;
    SELECT * INTO v_promo FROM payments.promotion_codes pc WHERE pc.code = create_promotion_code.code;
    IF (v_promo.coupon, v_promo.only_customer, v_promo.max_redemptions, v_promo.redeem_by)
       IS DISTINCT FROM (create_promotion_code.coupon, create_promotion_code.customer_id,
                         create_promotion_code.max_redemptions, create_promotion_code.redeem_by) THEN
        RAISE EXCEPTION 'promotion code % exists with another definition', v_promo.code USING ERRCODE = 'PM201';
    END IF;
    RETURN NEXT v_promo;
END
$$;
COMMENT ON FUNCTION payments.create_promotion_code(text, text, integer, timestamptz, text) IS
    'Makes a promotion code (admin), as Stripe''s: a code customers type for a coupon, with limits of its own on top of the coupon''s (max_redemptions, redeem_by, customer_id: one customer only). apply_coupon takes it in place of the coupon''s code. The same call again returns it; another definition PM201; an unknown coupon PM204; a code a coupon already has PM100.';

CREATE OR REPLACE FUNCTION payments.set_promotion_code_active(code text, active boolean) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF active IS NULL THEN
        RAISE EXCEPTION 'active must be true or false' USING ERRCODE = 'PM100';
    END IF;
    UPDATE payments.promotion_codes pc SET active = set_promotion_code_active.active
    WHERE pc.code = set_promotion_code_active.code;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'promotion code % not found', payments._shown(code) USING ERRCODE = 'PM204';
    END IF;
    RETURN active;
END
$$;
COMMENT ON FUNCTION payments.set_promotion_code_active(text, boolean) IS
    'Turns a promotion code off (it redeems nothing more; discounts it gave stay) or on again (admin); PM204 for an unknown code.';

CREATE OR REPLACE FUNCTION payments.create_tax_rate(code text, display_name text, percentage numeric, inclusive boolean,
                                                    jurisdiction text DEFAULT NULL)
RETURNS SETOF payments.tax_rates
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rate payments.tax_rates%ROWTYPE;
BEGIN
    IF code IS NULL OR code !~ '^[a-z][a-z0-9_.-]{0,63}$' OR display_name IS NULL
       OR length(display_name) NOT BETWEEN 1 AND 100 OR length(jurisdiction) NOT BETWEEN 1 AND 100
       OR inclusive IS NULL OR percentage IS NULL OR percentage NOT BETWEEN 0 AND 100 OR scale(percentage) > 4 THEN
        RAISE EXCEPTION 'a tax rate has a code (lower case letters, digits, _ . -), a display name of 1 to 100 characters, a percentage from 0 to 100 (at most 4 decimals) and inclusive true or false'
            USING ERRCODE = 'PM100';
    END IF;
    INSERT INTO payments.tax_rates (code, display_name, percentage, inclusive, jurisdiction)
    VALUES (create_tax_rate.code, create_tax_rate.display_name, create_tax_rate.percentage, create_tax_rate.inclusive,
            create_tax_rate.jurisdiction)
    ON CONFLICT ON CONSTRAINT tax_rates_pkey DO NOTHING;
    SELECT * INTO v_rate FROM payments.tax_rates t WHERE t.code = create_tax_rate.code;
    IF (v_rate.display_name, v_rate.percentage, v_rate.inclusive, v_rate.jurisdiction)
       IS DISTINCT FROM (create_tax_rate.display_name, create_tax_rate.percentage, create_tax_rate.inclusive,
                         create_tax_rate.jurisdiction) THEN
        RAISE EXCEPTION 'tax rate % exists with another definition', v_rate.code USING ERRCODE = 'PM201',
            HINT = 'a rate never changes under its invoices: make one with a new code and set_customer_tax to it';
    END IF;
    RETURN NEXT v_rate;
END
$$;
COMMENT ON FUNCTION payments.create_tax_rate(text, text, numeric, boolean, text) IS
    'Makes a tax rate (admin): its code, the name invoices show, a percentage (0 to 100), whether prices include it, and a jurisdiction for the record. The same call again returns it; another definition for its code is PM201 (a rate never changes: make a new one). Which rate applies to an address is not computed here (Stripe Tax''s job): the operator assigns rates with set_customer_tax.';

CREATE OR REPLACE FUNCTION payments.set_customer_tax(customer_id text, tax_rates text[], tax_exempt boolean DEFAULT false)
RETURNS payments.customer_taxes
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_row payments.customer_taxes%ROWTYPE;
BEGIN
    IF customer_id IS NULL OR length(customer_id) NOT BETWEEN 1 AND 255 OR tax_exempt IS NULL
       OR cardinality(coalesce(tax_rates, '{}')) > 5
       OR EXISTS (SELECT 1 FROM unnest(tax_rates) r(code)
                  WHERE NOT EXISTS (SELECT 1 FROM payments.tax_rates t WHERE t.code = r.code))
       OR (SELECT count(DISTINCT r) <> count(*) FROM unnest(tax_rates) r) THEN
        RAISE EXCEPTION 'tax_rates names up to 5 distinct existing tax rates; customer_id is 1 to 255 characters'
            USING ERRCODE = 'PM100';
    END IF;
    INSERT INTO payments.customer_taxes AS c (customer_id, tax_rates, tax_exempt)
    VALUES (set_customer_tax.customer_id, coalesce(set_customer_tax.tax_rates, '{}'), set_customer_tax.tax_exempt)
    ON CONFLICT ON CONSTRAINT customer_taxes_pkey DO UPDATE
    SET tax_rates = excluded.tax_rates, tax_exempt = excluded.tax_exempt, updated_at = excluded.updated_at
    RETURNING * INTO v_row;
    RETURN v_row;
END
$$;
COMMENT ON FUNCTION payments.set_customer_tax(text, text[], boolean) IS
    'The tax rates (up to 5, made with create_tax_rate) every new invoice of the customer charges, unless tax_exempt. Invoices issued before keep what they charged. PM100 for an unknown rate.';

CREATE OR REPLACE FUNCTION payments._priced_lines(p_customer_id text, p_subscription_id text, p_period integer,
                                                  p_currency text, p_lines jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_coupon  payments.coupons%ROWTYPE;
    -- The customer's rates, column by column (on Citus a worker knows no array of the
    -- reference table's row type).
    v_codes   text[];
    v_names   text[];
    v_pcts    numeric[];
    v_incl    boolean[];
    v_priced  record;
    v_lines   jsonb;
    v_taxes   jsonb;
    v_discount bigint;
BEGIN
    -- The discount of the period, if one: the coupon's terms as they are (they never change).
    SELECT c.* INTO v_coupon FROM payments.discounts d JOIN payments.coupons c ON c.code = d.coupon
    WHERE d.customer_id = p_customer_id AND d.subscription_id = p_subscription_id AND d.ended_at IS NULL
      AND p_period >= d.first_period AND p_period <= coalesce(d.last_period, p_period)
      AND coalesce(c.currency, p_currency) = p_currency;
    -- The customer's rates, in the order it gave them, unless it is exempt.
    SELECT coalesce(array_agg(t.code ORDER BY r.ord), '{}'), coalesce(array_agg(t.display_name ORDER BY r.ord), '{}'),
           coalesce(array_agg(t.percentage ORDER BY r.ord), '{}'), coalesce(array_agg(t.inclusive ORDER BY r.ord), '{}')
    INTO v_codes, v_names, v_pcts, v_incl
    FROM payments.customer_taxes ct
    CROSS JOIN LATERAL unnest(ct.tax_rates) WITH ORDINALITY r(code, ord)
    JOIN payments.tax_rates t ON t.code = r.code
    WHERE ct.customer_id = p_customer_id AND NOT ct.tax_exempt;
    SELECT * INTO v_priced FROM payments._price_invoice(
        ARRAY(SELECT (l ->> 'amount_minor')::bigint FROM jsonb_array_elements(p_lines) WITH ORDINALITY e(l, n) ORDER BY n),
        ARRAY(SELECT coalesce((l ->> 'discountable')::boolean, l ->> 'kind' IN ('recurring', 'usage', 'proration', 'item'))
              FROM jsonb_array_elements(p_lines) WITH ORDINALITY e(l, n) ORDER BY n),
        ARRAY(SELECT coalesce((l ->> 'taxable')::boolean, true)
              FROM jsonb_array_elements(p_lines) WITH ORDINALITY e(l, n) ORDER BY n),
        v_coupon.percent_off, v_coupon.amount_off_minor, v_pcts, v_incl);
    IF v_priced.problem IS NOT NULL THEN
        RAISE EXCEPTION 'the invoice cannot be priced: %', v_priced.problem USING ERRCODE = 'PM104';
    END IF;
    SELECT jsonb_agg((l - 'discountable' - 'taxable')
                     || jsonb_build_object('discount_minor', v_priced.discounts[n], 'tax_minor', v_priced.line_taxes[n])
                     ORDER BY n)
    INTO v_lines FROM jsonb_array_elements(p_lines) WITH ORDINALITY e(l, n);
    SELECT coalesce(jsonb_agg(jsonb_build_object('tax_rate', v_codes[n], 'display_name', v_names[n],
                                                 'percentage', v_pcts[n], 'inclusive', v_incl[n],
                                                 'amount_minor', v_priced.rate_taxes[n]) ORDER BY n), '[]')
    INTO v_taxes FROM generate_series(1, cardinality(v_codes)) n;
    SELECT coalesce(sum(x), 0) INTO v_discount FROM unnest(v_priced.discounts) x;
    RETURN jsonb_build_object(
        'lines', coalesce(v_lines, '[]'), 'taxes', v_taxes, 'coupon', v_coupon.code,
        'subtotal_minor', payments._lines_total(p_lines), 'discount_minor', v_discount,
        'tax_minor', (SELECT coalesce(sum(x), 0) FROM unnest(v_priced.rate_taxes) x),
        'total_minor', payments._lines_total(p_lines) - v_discount + v_priced.exclusive_tax);
END
$$;
COMMENT ON FUNCTION payments._priced_lines(text, text, integer, text, jsonb) IS
    'Internal: an invoice''s lines ([{kind, description, amount_minor, quantity, discountable?, taxable?}]) priced for a subscription''s period: the discount of its coupon for that period off each line (recurring, usage, proration and invoice item lines), then each of the customer''s tax rates on each line (payments-core''s invoice.rs). Returns {lines (with discount_minor and tax_minor), taxes [{tax_rate, display_name, percentage, inclusive, amount_minor}], coupon, subtotal_minor, discount_minor, tax_minor (every rate''s, as Stripe''s tax: inclusive ones are inside the lines), total_minor (the lines less the discount plus the exclusive taxes)}. Writes nothing.';
