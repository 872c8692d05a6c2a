-- payments: invoices, renewals and dunning. run_billing does everything due
-- at a time `at` (tests move the clock by passing it): ends subscriptions
-- canceled at period end, renews the others into their next period with an
-- invoice, and retries unpaid invoices on the dunning schedule. An invoice is
-- charged through an ordinary payment (create_payment, which the gateway's
-- reconciler carries to the provider) whose idempotency key derives from the
-- subscription, the period and the attempt: a retried or concurrent run never
-- charges twice. The payment's outcome settles the invoice and the
-- subscription (_invoice_payment_settled, called by the payment's transition).

CREATE OR REPLACE TRIGGER invoices_lifecycle BEFORE UPDATE OF status ON payments.invoices
    FOR EACH ROW EXECUTE FUNCTION payments._lifecycle_guard('invoice_status');

CREATE OR REPLACE FUNCTION payments.set_dunning(retry_days integer[], final_status text DEFAULT 'unpaid',
                                     past_due_grace interval DEFAULT '3 days') RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF retry_days IS NULL OR cardinality(retry_days) > 10 OR NOT (0 < ALL (retry_days))
       OR final_status IS NULL OR final_status NOT IN ('unpaid', 'canceled')
       OR past_due_grace IS NULL OR past_due_grace NOT BETWEEN interval '0' AND interval '60 days' THEN
        RAISE EXCEPTION 'retry_days: up to 10 positive day counts; final_status: unpaid or canceled; past_due_grace: 0 to 60 days'
            USING ERRCODE = 'PM100';
    END IF;
    INSERT INTO payments.billing_settings (retry_days, final_status, past_due_grace)
    VALUES (retry_days, final_status, past_due_grace)
    ON CONFLICT (singleton) DO UPDATE SET retry_days = excluded.retry_days, final_status = excluded.final_status,
                                          past_due_grace = excluded.past_due_grace, updated_at = excluded.updated_at;
END
$$;
COMMENT ON FUNCTION payments.set_dunning(integer[], text, interval) IS
    'Sets dunning (admin): days between the retries of an unpaid renewal (default {1,3,5}), what the subscription becomes after the last one fails (unpaid, the default, or canceled), and how long past_due still grants the plan (default 3 days).';

CREATE OR REPLACE FUNCTION payments.set_invoice_drafts(draft_window interval) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF draft_window IS NULL OR draft_window NOT BETWEEN interval '0' AND interval '3 days' THEN
        RAISE EXCEPTION 'draft_window is 0 to 3 days, not %', quote_nullable(draft_window) USING ERRCODE = 'PM100';
    END IF;
    INSERT INTO payments.billing_settings AS b (retry_days, final_status, past_due_grace, draft_window)
    VALUES ('{1,3,5}', 'unpaid', '3 days', set_invoice_drafts.draft_window)
    ON CONFLICT (singleton) DO UPDATE SET draft_window = excluded.draft_window, updated_at = excluded.updated_at;
END
$$;
COMMENT ON FUNCTION payments.set_invoice_drafts(interval) IS
    'Sets how long a renewal invoice stays a draft after its period starts (admin; default 1 hour, as Stripe''s; 0 to 3 days): meanwhile add_invoice_item adds to it and usage recorded late for the period that ended is billed; run_billing then finalizes (numbers) and charges it. 0: renewals are finalized at once. Drafts already made keep their time.';

CREATE OR REPLACE FUNCTION payments._draft_window() RETURNS interval
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce((SELECT b.draft_window FROM payments.billing_settings b), interval '1 hour');
END
$$;
COMMENT ON FUNCTION payments._draft_window() IS 'Internal: how long renewal invoices stay drafts (set_invoice_drafts).';

CREATE OR REPLACE FUNCTION payments._next_number(p_series text, p_at timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_year integer := extract(year FROM p_at AT TIME ZONE 'UTC')::integer;
    v_last bigint;
BEGIN
    INSERT INTO payments.invoice_numbers (series, year, last) VALUES (p_series, v_year, 0)
    ON CONFLICT ON CONSTRAINT invoice_numbers_pkey DO NOTHING;
    UPDATE payments.invoice_numbers n SET last = n.last + 1 WHERE n.series = p_series AND n.year = v_year
    RETURNING n.last INTO v_last;
    RETURN CASE WHEN p_series = 'credit_note' THEN 'CN-' ELSE '' END || v_year || '-' || lpad(v_last::text, 6, '0');
END
$$;
COMMENT ON FUNCTION payments._next_number(text, timestamptz) IS
    'Internal: the next number of a series (invoice: YYYY-NNNNNN; credit_note: CN-YYYY-NNNNNN) in the year (UTC) of p_at; the counter''s row stays locked until the caller''s transaction ends, so numbers are gapless.';

CREATE OR REPLACE FUNCTION payments._usage_lines(p_sub payments.subscriptions, p_plan payments.plans, p_from timestamptz,
                                      p_to timestamptz) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_lines    jsonb := '[]';
    v_metered  jsonb;
    v_quantity numeric;
    v_invoiced bigint;
    v_numbers  text;
BEGIN
    FOR v_metered IN SELECT value FROM jsonb_array_elements(p_plan.metered) LOOP
        SELECT u.value INTO v_quantity
        FROM payments.usage_summary(p_sub.customer_id, v_metered ->> 'meter', p_from, p_to) u;
        v_lines := v_lines || jsonb_build_array(jsonb_build_object(
            'kind', 'usage', 'quantity', v_quantity,
            'amount_minor', payments._usage_price(v_quantity::text, (v_metered -> 'price')::text),
            'description', (v_metered ->> 'meter') || ', ' || (p_from AT TIME ZONE 'UTC')::date || ' to '
                           || (p_to AT TIME ZONE 'UTC')::date));
    END LOOP;
    -- Threshold invoices of the same stretch of usage billed part of it already.
    SELECT sum(i.total_minor), string_agg(i.number, ', ' ORDER BY i.number) INTO v_invoiced, v_numbers
    FROM payments.invoices i
    WHERE i.customer_id = p_sub.customer_id AND i.subscription_id = p_sub.id AND i.kind = 'threshold'
      AND i.usage_from = p_from;
    IF v_invoiced > 0 THEN
        v_lines := v_lines || jsonb_build_array(jsonb_build_object(
            'kind', 'credit', 'quantity', 1, 'amount_minor', -v_invoiced,
            'description', 'usage invoiced at its threshold (' || v_numbers || ')'));
    END IF;
    RETURN v_lines;
END
$$;
COMMENT ON FUNCTION payments._usage_lines(payments.subscriptions, payments.plans, timestamptz, timestamptz) IS
    'Internal: the invoice lines of a subscription''s usage in [p_from, p_to), each meter priced by p_plan (the plan it was used under), less what threshold invoices of the same stretch (usage_from = p_from) already billed.';

CREATE OR REPLACE FUNCTION payments._lines_total(p_lines jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE
RETURN (SELECT coalesce(sum((l ->> 'amount_minor')::bigint), 0) FROM jsonb_array_elements(p_lines) l);
COMMENT ON FUNCTION payments._lines_total(jsonb) IS 'Internal: the sum of invoice lines'' amount_minor.';

CREATE OR REPLACE FUNCTION payments._pending_usage_problem(p_customer_id text, p_meter text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_sub     payments.subscriptions%ROWTYPE;
    v_plan    payments.plans%ROWTYPE;
    v_metered jsonb;
    v_meter   payments.meters%ROWTYPE;
    v_bound   numeric;
    v_total   numeric;
BEGIN
    SELECT s.* INTO v_sub FROM payments.meter_claims c
    JOIN payments.subscriptions s ON s.customer_id = c.customer_id AND s.id = c.subscription_id
    WHERE c.customer_id = p_customer_id AND c.meter = p_meter;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_plan := payments._sub_plan(v_sub);
    v_total := v_plan.amount_minor * v_sub.quantity;
    -- A meter's value since usage_from is at most what its daily totals from that UTC day
    -- on add up to; priced as billing will, with the fee, they must fit in one payment.
    FOR v_metered IN SELECT value FROM jsonb_array_elements(v_plan.metered) LOOP
        SELECT * INTO v_meter FROM payments.meters m WHERE m.code = v_metered ->> 'meter';
        SELECT CASE v_meter.aggregation WHEN 'sum' THEN coalesce(sum(d.quantity), 0)
                                        WHEN 'count' THEN coalesce(sum(d.events), 0)
                                        WHEN 'count_unique' THEN coalesce(sum(d.events), 0)
                                        ELSE coalesce(max(d.max_quantity), 0) END
        INTO v_bound
        FROM payments.usage_daily d
        WHERE d.customer_id = p_customer_id AND d.meter = v_meter.code
          AND d.day >= (v_sub.usage_from AT TIME ZONE 'UTC')::date;
        v_total := v_total + coalesce(payments._usage_price(v_bound::text, (v_metered -> 'price')::text), 1e12);
    END LOOP;
    IF v_total > 999999999999 THEN
        RETURN 'the usage of subscription ' || v_sub.id || ' since ' || (v_sub.usage_from AT TIME ZONE 'UTC')::date
               || ' would price its next invoice above what one payment can charge (plan ' || v_plan.code || ')';
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION payments._pending_usage_problem(text, text) IS
    'Internal: why the usage a customer has recorded cannot be billed, or NULL: the next invoice of the subscription billing p_meter (its fee and each meter''s usage since the UTC day of usage_from, bounded by usage_daily and priced at the plan) would be more than one payment can charge. record_usage asks it after each new event, so an oversized total is refused when recorded, not when billed; concurrent recorders see each other''s usage once committed, and billing isolates what slips through.';

CREATE OR REPLACE FUNCTION payments._period_lines(p_plan payments.plans, p_period integer, p_sub payments.subscriptions,
                                                  p_usage_plan payments.plans, p_usage_from timestamptz,
                                                  p_usage_to timestamptz) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_lines jsonb := jsonb_build_array(jsonb_build_object(
        'kind', 'recurring', 'amount_minor', p_plan.amount_minor * p_sub.quantity, 'quantity', p_sub.quantity,
        'description', coalesce(p_plan.name, p_plan.code) || ', period ' || p_period));
BEGIN
    -- The usage not invoiced yet, in arrears, at the plan it was used under.
    IF p_usage_from < p_usage_to THEN
        v_lines := v_lines || payments._usage_lines(p_sub, p_usage_plan, p_usage_from, p_usage_to);
    END IF;
    RETURN v_lines;
END
$$;
COMMENT ON FUNCTION payments._period_lines(payments.plans, integer, payments.subscriptions, payments.plans, timestamptz, timestamptz) IS
    'Internal: the lines of a period''s invoice: p_plan''s fee for period p_period in advance (times the subscription''s quantity), and the usage of [p_usage_from, p_usage_to) under p_usage_plan''s metered prices in arrears.';

CREATE OR REPLACE FUNCTION payments._invoice_period(p_sub payments.subscriptions, p_plan payments.plans, p_usage_plan payments.plans,
                                         p_usage_from timestamptz, p_usage_to timestamptz, p_at timestamptz,
                                         p_finalize_at timestamptz DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_invoice  payments.invoices%ROWTYPE;
    v_usage    boolean := p_usage_from < p_usage_to;
    v_amounts  jsonb;
BEGIN
    -- The caller holds the subscription's row lock; the period's invoice is made once.
    SELECT * INTO v_invoice FROM payments.invoices i
    WHERE i.customer_id = p_sub.customer_id AND i.subscription_id = p_sub.id AND i.period_number = p_sub.period_number
      AND i.kind = 'period';
    IF FOUND THEN
        RETURN v_invoice.id;
    ELSIF p_finalize_at > p_at THEN
        -- A draft until p_finalize_at: its usage is priced when it is finalized, late events included.
        INSERT INTO payments.invoices (id, customer_id, subscription_id, period_number, kind, status, currency, total_minor,
                                       period_start, period_end, usage_from, usage_to, finalize_at, draft)
        VALUES (payments._new_id('inv'), p_sub.customer_id, p_sub.id, p_sub.period_number, 'period', 'draft',
                p_plan.currency, 0, p_sub.current_period_start, p_sub.current_period_end,
                CASE WHEN v_usage THEN p_usage_from END, CASE WHEN v_usage THEN p_usage_to END, p_finalize_at,
                jsonb_build_object('lines', payments._period_lines(p_plan, p_sub.period_number, p_sub, p_usage_plan,
                                                                   NULL, NULL),
                                   'usage_plan', to_jsonb(p_usage_plan)))
        RETURNING * INTO v_invoice;
        v_amounts := payments._draft_amounts(v_invoice, p_at);
        v_invoice := payments._estimate_draft(v_invoice, v_amounts);
        PERFORM payments._invoice_event(v_invoice, NULL);
        RETURN v_invoice.id;
    END IF;
    RETURN payments._issue_invoice(p_sub, 'period', p_plan.currency,
                                   payments._period_lines(p_plan, p_sub.period_number, p_sub, p_usage_plan,
                                                          p_usage_from, p_usage_to),
                                   CASE WHEN v_usage THEN p_usage_from END, CASE WHEN v_usage THEN p_usage_to END, p_at);
END
$$;
COMMENT ON FUNCTION payments._invoice_period(payments.subscriptions, payments.plans, payments.plans, timestamptz, timestamptz, timestamptz, timestamptz) IS
    'Internal: the invoice of a subscription''s current period, made once at time p_at: the plan''s fee in advance, the usage of [p_usage_from, p_usage_to) under p_usage_plan''s metered prices in arrears (_period_lines), with its discount, taxes, credits and balance (_issue_invoice), numbered and charged (nothing to pay: paid at once). With p_finalize_at after p_at: a draft until then (_finalize_invoice). The caller holds the subscription''s row lock.';

CREATE OR REPLACE FUNCTION payments._draft_usage_lines(p_sub payments.subscriptions, p_invoice payments.invoices)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT p_invoice.usage_from < p_invoice.usage_to THEN
        RETURN '[]';
    END IF;
    RETURN payments._usage_lines(p_sub, jsonb_populate_record(NULL::payments.plans, p_invoice.draft -> 'usage_plan'),
                                 p_invoice.usage_from, p_invoice.usage_to);
END
$$;
COMMENT ON FUNCTION payments._draft_usage_lines(payments.subscriptions, payments.invoices) IS
    'Internal: the usage a draft invoice of p_sub bills in arrears, as recorded so far, at the plan it was used under (_usage_lines: less what threshold invoices of its stretch billed); none without a usage window.';

CREATE OR REPLACE FUNCTION payments._draft_lines(p_invoice payments.invoices) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_sub   payments.subscriptions%ROWTYPE;
    v_lines jsonb;
BEGIN
    SELECT * INTO v_sub FROM payments.subscriptions s
    WHERE s.customer_id = p_invoice.customer_id AND s.id = p_invoice.subscription_id;
    -- Its own statement: beside the items' query, Citus would run it on the shard.
    v_lines := (p_invoice.draft -> 'lines') || payments._draft_usage_lines(v_sub, p_invoice);
    RETURN v_lines || coalesce((
        SELECT jsonb_agg(jsonb_build_object('kind', 'item', 'description', it.description, 'quantity', it.quantity,
                                            'amount_minor', it.unit_amount_minor * it.quantity) ORDER BY it.id)
        FROM payments.invoice_items it
        WHERE it.customer_id = p_invoice.customer_id AND it.invoice_id = p_invoice.id), '[]');
END
$$;
COMMENT ON FUNCTION payments._draft_lines(payments.invoices) IS
    'Internal: the lines a draft invoice has now: its fee, its usage as recorded so far (late events included), and its invoice items.';

CREATE OR REPLACE FUNCTION payments._draft_amounts(p_invoice payments.invoices, p_at timestamptz) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_sub payments.subscriptions%ROWTYPE;
BEGIN
    SELECT * INTO v_sub FROM payments.subscriptions s
    WHERE s.customer_id = p_invoice.customer_id AND s.id = p_invoice.subscription_id;
    RETURN payments._invoice_amounts(v_sub, p_invoice.period_number, p_invoice.currency, payments._draft_lines(p_invoice),
                                     p_at);
END
$$;
COMMENT ON FUNCTION payments._draft_amounts(payments.invoices, timestamptz) IS
    'Internal: what a draft invoice would be if finalized at p_at (_invoice_amounts of its lines now).';

CREATE OR REPLACE FUNCTION payments._estimate_draft(p_invoice payments.invoices, p_amounts jsonb)
RETURNS payments.invoices
LANGUAGE plpgsql AS $$
DECLARE
    v_invoice payments.invoices%ROWTYPE;
    -- Values, not calls, in the UPDATE: Citus refuses volatile functions there.
    v_total   bigint := (p_amounts ->> 'total_minor')::bigint;
BEGIN
    UPDATE payments.invoices i SET total_minor = v_total
    WHERE i.customer_id = p_invoice.customer_id AND i.id = p_invoice.id
    RETURNING * INTO v_invoice;
    RETURN v_invoice;
END
$$;
COMMENT ON FUNCTION payments._estimate_draft(payments.invoices, jsonb) IS
    'Internal: sets a draft invoice''s total to what it would be now (p_amounts: its _draft_amounts; it is fixed when finalized).';

CREATE OR REPLACE FUNCTION payments._finalize_invoice(p_invoice payments.invoices, p_sub payments.subscriptions,
                                                      p_at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_invoice payments.invoices%ROWTYPE;
    v_amounts jsonb;
    v_number  text;
BEGIN
    -- A canceled, expired or paused subscription is never charged: its draft never becomes due.
    IF NOT (p_sub.status = ANY (payments._group('collected_subscription_status'))) THEN
        PERFORM payments._close_invoice(p_invoice, 'void');
        RETURN;
    END IF;
    v_amounts := payments._amounts_applied(p_sub, p_invoice.currency, payments._draft_lines(p_invoice), p_at);
    v_number := payments._next_number('invoice', now());
    UPDATE payments.invoices i
    SET status = 'open', number = v_number, total_minor = (v_amounts ->> 'total_minor')::bigint,
        coupon = v_amounts ->> 'coupon'
    WHERE i.customer_id = p_invoice.customer_id AND i.id = p_invoice.id
    RETURNING * INTO v_invoice;
    PERFORM payments._invoice_event(v_invoice, 'draft');
    PERFORM payments._record_invoice(v_invoice, p_sub, v_amounts, p_at);
END
$$;
COMMENT ON FUNCTION payments._finalize_invoice(payments.invoices, payments.subscriptions, timestamptz) IS
    'Internal: finalizes a draft invoice at p_at (the caller holds its subscription''s row lock, then its own): its lines as they are now (fee, usage recorded so far, invoice items), priced, numbered and charged as _issue_invoice does (invoice.open). The draft of a subscription no longer collected (canceled, expired, paused) is void instead.';

CREATE OR REPLACE FUNCTION payments._finalize_drafts(p_sub payments.subscriptions, p_at timestamptz,
                                                     p_due_only boolean DEFAULT false) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_invoice payments.invoices%ROWTYPE;
    v_count   integer := 0;
BEGIN
    FOR v_invoice IN
        SELECT * FROM payments.invoices i
        WHERE i.customer_id = p_sub.customer_id AND i.subscription_id = p_sub.id AND i.status = 'draft'
          AND (NOT p_due_only OR i.finalize_at <= p_at)
        ORDER BY i.period_number FOR UPDATE
    LOOP
        PERFORM payments._finalize_invoice(v_invoice, p_sub, p_at);
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION payments._finalize_drafts(payments.subscriptions, timestamptz, boolean) IS
    'Internal: finalizes a locked subscription''s drafts at p_at (with p_due_only, those whose time has come): before it renews again, or before a plan or quantity change prorates against what its period was invoiced.';

CREATE OR REPLACE FUNCTION payments.preview_invoice(subscription_id text, at timestamptz DEFAULT now())
RETURNS TABLE (period_number integer, period_start timestamptz, period_end timestamptz, currency text, coupon text,
               subtotal numeric, discount numeric, tax numeric, credits_applied numeric, balance_applied numeric,
               total numeric, lines jsonb, taxes jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_sub     payments.subscriptions%ROWTYPE;
    v_next    payments.subscriptions%ROWTYPE;
    v_used    payments.plans%ROWTYPE;
    v_plan    payments.plans%ROWTYPE;
    v_amounts jsonb;
    v_minor   text[] := ARRAY['subtotal_minor', 'discount_minor', 'tax_minor', 'credits_minor', 'balance_minor',
                              'total_minor'];
BEGIN
    IF at IS NULL OR NOT isfinite(at) THEN
        RAISE EXCEPTION 'at is required (a finite time)' USING ERRCODE = 'PM100';
    END IF;
    SELECT s.* INTO v_sub FROM payments.subscriptions s
    WHERE s.customer_id = (SELECT s2.customer_id FROM payments.subscriptions s2 WHERE s2.id = preview_invoice.subscription_id)
      AND s.id = preview_invoice.subscription_id;
    -- A login bound to another customer is answered as for an unknown id.
    IF NOT FOUND OR v_sub.customer_id <> coalesce(payments._bound_customer(), v_sub.customer_id) THEN
        RAISE EXCEPTION 'subscription % not found', payments._shown(preview_invoice.subscription_id) USING ERRCODE = 'PM204';
    ELSIF NOT (v_sub.status = ANY (payments._group('current_subscription_status'))) OR v_sub.cancel_at_period_end
          OR v_sub.cancel_at <= v_sub.current_period_end THEN
        RAISE EXCEPTION 'subscription % is % and has no next invoice', v_sub.id,
            CASE WHEN v_sub.status = ANY (payments._group('current_subscription_status'))
                 THEN 'ending by its period''s end' ELSE v_sub.status END
            USING ERRCODE = 'PM206';
    END IF;
    -- The invoice run_billing makes at the period's end, as _next_period makes it: the next
    -- period (on the plan asked for at period end), with the usage so far in arrears.
    v_used := payments._sub_plan(v_sub);
    v_plan := payments._next_plan(v_sub);
    v_next := v_sub;
    v_next.period_number := v_sub.period_number + 1;
    IF v_sub.status = 'trialing' OR NOT payments._same_cycle(v_used, v_plan) THEN
        v_next.billing_anchor := v_sub.current_period_end;
        v_next.anchor_period := v_sub.period_number;
    END IF;
    v_next.current_period_start := v_sub.current_period_end;
    v_next.current_period_end := payments._period_end(v_plan, v_next.billing_anchor,
                                                      v_next.period_number - v_next.anchor_period);
    v_amounts := payments._invoice_amounts(
        v_next, v_next.period_number, v_plan.currency,
        payments._period_lines(v_plan, v_next.period_number, v_sub, v_used,
                               CASE WHEN v_sub.period_number > 0 THEN v_sub.usage_from END,
                               least(at, v_sub.current_period_end)),
        greatest(at, v_sub.current_period_end));
    RETURN QUERY SELECT v_next.period_number, v_next.current_period_start, v_next.current_period_end, v_plan.currency,
        v_amounts ->> 'coupon',
        payments.to_major((v_amounts ->> v_minor[1])::bigint, v_plan.currency),
        payments.to_major((v_amounts ->> v_minor[2])::bigint, v_plan.currency),
        payments.to_major((v_amounts ->> v_minor[3])::bigint, v_plan.currency),
        payments.to_major((v_amounts ->> v_minor[4])::bigint, v_plan.currency),
        payments.to_major((v_amounts ->> v_minor[5])::bigint, v_plan.currency),
        payments.to_major((v_amounts ->> v_minor[6])::bigint, v_plan.currency),
        (SELECT jsonb_agg(jsonb_build_object('kind', l ->> 'kind', 'description', l ->> 'description',
                                             'quantity', (l ->> 'quantity')::numeric,
                                             'amount', payments.to_major((l ->> 'amount_minor')::bigint, v_plan.currency),
                                             'discount', payments.to_major((l ->> 'discount_minor')::bigint, v_plan.currency),
                                             'tax', payments.to_major((l ->> 'tax_minor')::bigint, v_plan.currency))
                          ORDER BY n)
         FROM jsonb_array_elements(v_amounts -> 'lines') WITH ORDINALITY e(l, n)),
        (SELECT coalesce(jsonb_agg((t - 'amount_minor') || jsonb_build_object(
                    'amount', payments.to_major((t ->> 'amount_minor')::bigint, v_plan.currency)) ORDER BY n), '[]')
         FROM jsonb_array_elements(v_amounts -> 'taxes') WITH ORDINALITY e(t, n));
END
$$;
COMMENT ON FUNCTION payments.preview_invoice(text, timestamptz) IS
    'The next invoice of a subscription as run_billing will make it at its period''s end, seen at time at, writing nothing: the next period''s fee (on the plan a change at period end asked for), the usage so far in arrears, the coupon''s discount for that period, the customer''s taxes (tax: all of them, inclusive ones being inside the lines as Stripe shows them), then its prepaid credits and balance as they stand; amounts in major units, lines [{kind, description, quantity, amount, discount, tax}] and taxes [{tax_rate, display_name, percentage, inclusive, amount}]. PM204 for an unknown subscription (or another customer''s, to a bound login); PM206 for one that has no next invoice (canceled, paused, ending at its period''s end).';

CREATE OR REPLACE FUNCTION payments._invoice_usage(p_sub payments.subscriptions, p_plan payments.plans, p_kind text,
                                        p_from timestamptz, p_to timestamptz, p_at timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_lines jsonb;
BEGIN
    IF NOT p_from < p_to THEN
        RETURN NULL;
    END IF;
    v_lines := payments._usage_lines(p_sub, p_plan, p_from, p_to);
    IF payments._lines_total(v_lines) <= 0 THEN
        RETURN NULL;
    END IF;
    RETURN payments._issue_invoice(p_sub, p_kind, p_plan.currency, v_lines, p_from, p_to, p_at);
END
$$;
COMMENT ON FUNCTION payments._invoice_usage(payments.subscriptions, payments.plans, text, timestamptz, timestamptz, timestamptz) IS
    'Internal: invoices (kind threshold or final) a subscription''s usage of [p_from, p_to) at p_plan''s prices, when it comes to more than nothing; returns the invoice id or NULL.';

CREATE OR REPLACE FUNCTION payments._invoice_event(p_invoice payments.invoices, p_previous text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM payments._emit(p_invoice.customer_id, 'invoice', p_invoice.id, p_invoice.status, p_previous,
                           p_previous IS NULL,
                           jsonb_build_object('subscription_id', p_invoice.subscription_id, 'number', p_invoice.number,
                                              'kind', p_invoice.kind, 'total_minor', p_invoice.total_minor,
                                              'currency', p_invoice.currency, 'payment_id', p_invoice.payment_id,
                                              'attempt_count', p_invoice.attempt_count));
END
$$;
COMMENT ON FUNCTION payments._invoice_event(payments.invoices, text) IS
    'Internal: tells apps an invoice was issued (p_previous NULL), changed status, or had an attempt fail (invoice.updated). The caller holds its subscription''s or its own row lock.';

CREATE OR REPLACE FUNCTION payments._invoice_amounts(p_sub payments.subscriptions, p_period integer, p_currency text,
                                                    p_lines jsonb, p_at timestamptz) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_priced  jsonb := payments._priced_lines(p_sub.customer_id, p_sub.id, p_period, p_currency, p_lines);
    v_due     bigint := greatest((v_priced ->> 'total_minor')::bigint, 0);
    v_credits bigint := 0;
    v_balance bigint := 0;
    v_lines   jsonb := v_priced -> 'lines';
BEGIN
    -- Prepaid credits for invoices, then the customer's balance, pay what they can of what is
    -- due after discounts and taxes (as Stripe's credit grants and customer balance).
    IF v_due > 0 THEN
        SELECT least(v_due, coalesce(sum(g.remaining), 0)) INTO v_credits
        FROM payments._usable_grants(p_sub.customer_id, p_currency, p_at, '') g;
        v_balance := least(v_due - v_credits, greatest(payments._customer_balance(p_sub.customer_id, p_currency), 0));
    END IF;
    IF v_credits > 0 THEN
        v_lines := v_lines || jsonb_build_array(jsonb_build_object(
            'kind', 'prepaid_credits', 'amount_minor', -v_credits, 'quantity', 1, 'description', 'prepaid credits applied',
            'discount_minor', 0, 'tax_minor', 0));
    END IF;
    IF v_balance > 0 THEN
        v_lines := v_lines || jsonb_build_array(jsonb_build_object(
            'kind', 'balance', 'amount_minor', -v_balance, 'quantity', 1, 'description', 'customer balance applied',
            'discount_minor', 0, 'tax_minor', 0));
    END IF;
    RETURN v_priced || jsonb_build_object('lines', v_lines, 'credits_minor', v_credits, 'balance_minor', v_balance,
                                          'total_minor', v_due - v_credits - v_balance);
END
$$;
COMMENT ON FUNCTION payments._invoice_amounts(payments.subscriptions, integer, text, jsonb, timestamptz) IS
    'Internal: what an invoice of a subscription''s period would be at p_at: its lines priced (_priced_lines: the coupon''s discount, then taxes), then the customer''s prepaid credits for invoices and its balance applied to what is due, each a line of its own. Returns _priced_lines'' document with credits_minor, balance_minor and the total due. Writes nothing (preview_invoice and _issue_invoice both use it).';

CREATE OR REPLACE FUNCTION payments._amounts_applied(p_sub payments.subscriptions, p_currency text, p_lines jsonb,
                                                     p_at timestamptz) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    -- Under the wallet's lock when there are credits or a balance to apply: two invoices never
    -- spend the same ones.
    IF EXISTS (SELECT 1 FROM payments._usable_grants(p_sub.customer_id, p_currency, p_at, ''))
       OR payments._customer_balance(p_sub.customer_id, p_currency) > 0 THEN
        PERFORM payments._lock_wallet(p_sub.customer_id, p_currency);
    END IF;
    RETURN payments._invoice_amounts(p_sub, p_sub.period_number, p_currency, p_lines, p_at);
END
$$;
COMMENT ON FUNCTION payments._amounts_applied(payments.subscriptions, text, jsonb, timestamptz) IS
    'Internal: _invoice_amounts of an invoice about to be finalized, under the customer''s wallet lock when it has credits or a balance to apply.';

CREATE OR REPLACE FUNCTION payments._record_invoice(p_invoice payments.invoices, p_sub payments.subscriptions,
                                                    p_amounts jsonb, p_at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_line    record;
    v_credits bigint := (p_amounts ->> 'credits_minor')::bigint;
BEGIN
    FOR v_line IN SELECT l.value, l.ordinality FROM jsonb_array_elements(p_amounts -> 'lines') WITH ORDINALITY l LOOP
        INSERT INTO payments.invoice_lines (customer_id, invoice_id, line_number, kind, description, quantity, amount_minor,
                                            discount_minor, tax_minor)
        VALUES (p_invoice.customer_id, p_invoice.id, v_line.ordinality, v_line.value ->> 'kind',
                v_line.value ->> 'description', coalesce((v_line.value ->> 'quantity')::numeric, 1),
                (v_line.value ->> 'amount_minor')::bigint, (v_line.value ->> 'discount_minor')::bigint,
                (v_line.value ->> 'tax_minor')::bigint);
    END LOOP;
    INSERT INTO payments.invoice_taxes (customer_id, invoice_id, tax_rate, display_name, percentage, inclusive, amount_minor)
    SELECT p_invoice.customer_id, p_invoice.id, t ->> 'tax_rate', t ->> 'display_name', (t ->> 'percentage')::numeric,
           (t ->> 'inclusive')::boolean, (t ->> 'amount_minor')::bigint
    FROM jsonb_array_elements(p_amounts -> 'taxes') t;
    PERFORM payments._move(p_invoice.customer_id, 'invoice_balance', p_invoice.id, p_invoice.currency,
                           (p_amounts ->> 'balance_minor')::bigint, 'balance', 'revenue');
    IF v_credits > 0 THEN
        PERFORM payments._draw_credits(p_invoice.customer_id, p_invoice.currency, '', v_credits, 'invoice_credits',
                                       p_invoice.id, 'revenue', p_at);
        PERFORM payments._after_spend(p_invoice.customer_id, p_invoice.currency, v_credits, p_at);
    END IF;
    PERFORM payments._charge_invoice(p_invoice, p_sub, p_at);
END
$$;
COMMENT ON FUNCTION payments._record_invoice(payments.invoices, payments.subscriptions, jsonb, timestamptz) IS
    'Internal: writes what a just finalized invoice charges (p_amounts, from _amounts_applied): its lines, its taxes as they are (payments.invoice_taxes keeps each rate), the prepaid credits and balance it applied as ledger transfers; then charges it (nothing left: paid at once).';

CREATE OR REPLACE FUNCTION payments._issue_invoice(p_sub payments.subscriptions, p_kind text, p_currency text, p_lines jsonb,
                                        p_usage_from timestamptz, p_usage_to timestamptz, p_at timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_invoice payments.invoices%ROWTYPE;
    v_amounts jsonb := payments._amounts_applied(p_sub, p_currency, p_lines, p_at);
BEGIN
    INSERT INTO payments.invoices (id, customer_id, subscription_id, period_number, kind, number, status, currency,
                                   total_minor, period_start, period_end, usage_from, usage_to, coupon)
    VALUES (payments._new_id('inv'), p_sub.customer_id, p_sub.id, p_sub.period_number, p_kind,
            payments._next_number('invoice', now()), 'open', p_currency, (v_amounts ->> 'total_minor')::bigint,
            p_sub.current_period_start, p_sub.current_period_end, p_usage_from, p_usage_to, v_amounts ->> 'coupon')
    RETURNING * INTO v_invoice;
    PERFORM payments._invoice_event(v_invoice, NULL);
    PERFORM payments._record_invoice(v_invoice, p_sub, v_amounts, p_at);
    RETURN v_invoice.id;
END
$$;
COMMENT ON FUNCTION payments._issue_invoice(payments.subscriptions, text, text, jsonb, timestamptz, timestamptz, timestamptz) IS
    'Internal: makes, numbers and charges at time p_at an invoice of lines ([{kind, description, amount_minor}]) for a subscription whose row the caller has locked, as _invoice_amounts prices it: the coupon''s discount and the customer''s taxes on each line, then its prepaid credits for invoices and its balance, each a line of its own and a ledger transfer (_record_invoice); the total is what is left, charged (nothing left: paid at once). p_usage_from and p_usage_to: the usage it bills.';

CREATE OR REPLACE FUNCTION payments._invoice_voided(p_customer_id text, p_invoice_id text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_applied record;
BEGIN
    -- What it applied goes back where it came from; to a grant that expired meanwhile, and out again.
    FOR v_applied IN
        SELECT t.kind, t.unit, t.amount, t.grant_id, g.expired_at IS NOT NULL AS gone
        FROM payments.ledger_transfers t
        LEFT JOIN payments.credit_grants g ON g.customer_id = t.customer_id AND g.id = t.grant_id
        WHERE t.customer_id = p_customer_id AND t.reference = p_invoice_id
          AND t.kind IN ('invoice_credits', 'invoice_balance') AND t.credit_account = 'revenue'
        ORDER BY t.id
    LOOP
        PERFORM payments._move(p_customer_id, v_applied.kind, p_invoice_id, v_applied.unit, -v_applied.amount,
                               CASE WHEN v_applied.kind = 'invoice_credits' THEN 'credits' ELSE 'balance' END, 'revenue',
                               v_applied.grant_id);
        IF v_applied.gone THEN
            PERFORM payments._move(p_customer_id, 'credit_expiry', v_applied.grant_id, v_applied.unit, v_applied.amount,
                                   'credits', 'credits_issued', v_applied.grant_id);
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION payments._invoice_voided(text, text) IS
    'Internal: an invoice became void: the credits and balance it applied go back to the customer (the ledger transfers reversed).';

CREATE OR REPLACE FUNCTION payments._abandon_payment(p_customer_id text, p_payment_id text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
BEGIN
    BEGIN
        -- Out of the usual order (a payment before its invoice): never wait. A payment locked
        -- now is being settled by its own news, which finds its invoice as it then stands.
        SELECT p.status INTO v_status FROM payments.payments p
        WHERE p.customer_id = p_customer_id AND p.id = p_payment_id FOR UPDATE NOWAIT;
        IF v_status = ANY (payments._group('awaiting_customer_payment_status')) THEN
            PERFORM payments.cancel_payment(p_payment_id, 'abandoned');
        END IF;
    EXCEPTION WHEN SQLSTATE 'PM206' OR SQLSTATE 'PM208' OR SQLSTATE 'PM209' OR lock_not_available THEN
        NULL;  -- it moved on, is being settled, or the provider has not answered yet
    END;
END
$$;
COMMENT ON FUNCTION payments._abandon_payment(text, text) IS
    'Internal: cancels an invoice attempt''s payment that still waits on the customer (3-D Secure) or a payment method, so it cannot be paid beside the next attempt or for an invoice no longer collected.';

CREATE OR REPLACE FUNCTION payments._charge_invoice(p_invoice payments.invoices, p_sub payments.subscriptions, p_at timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_attempt integer := p_invoice.attempt_count + 1;
    v_payment text;
    v_paid    payments.invoices%ROWTYPE;
    v_started payments.subscriptions%ROWTYPE;
BEGIN
    IF p_invoice.total_minor - p_invoice.credited_minor = 0 THEN
        UPDATE payments.invoices i SET status = 'paid', paid_at = now()
        WHERE i.customer_id = p_invoice.customer_id AND i.id = p_invoice.id
        RETURNING * INTO v_paid;
        PERFORM payments._invoice_event(v_paid, p_invoice.status);
        -- A first invoice paid in full by credits or balance: the subscription has started.
        IF p_sub.status = 'incomplete' THEN
            SELECT * INTO v_started FROM payments.subscriptions s WHERE s.customer_id = p_sub.customer_id AND s.id = p_sub.id;
            v_started.status := 'active';
            PERFORM payments._set_subscription(v_started, 'incomplete', 'invoice ' || v_paid.number || ' paid',
                                               jsonb_build_object('invoice_id', v_paid.id));
        END IF;
        RETURN;
    END IF;
    -- The previous attempt, if it still waits on the customer, gives way to this one.
    IF p_invoice.payment_id IS NOT NULL THEN
        PERFORM payments._abandon_payment(p_invoice.customer_id, p_invoice.payment_id);
    END IF;
    -- One payment per attempt, keyed by the invoice (its id is random and exists only in this
    -- transaction, so no API caller can claim the key first) and the attempt.
    SELECT p.id INTO v_payment FROM payments.create_payment(
        'invoice:' || p_invoice.id || ':' || v_attempt, p_invoice.customer_id,
        payments.to_major(p_invoice.total_minor - p_invoice.credited_minor, p_invoice.currency), p_invoice.currency,
        p_sub.payment_method,
        'Invoice ' || p_invoice.number, jsonb_build_object('invoice_id', p_invoice.id, 'subscription_id', p_sub.id)) p;
    UPDATE payments.invoices i
    SET payment_id = v_payment, attempt_payments = i.attempt_payments || v_payment, attempt_count = v_attempt,
        attempted_at = p_at, next_attempt_at = NULL
    WHERE i.customer_id = p_invoice.customer_id AND i.id = p_invoice.id;
    IF p_sub.payment_method IS NULL THEN
        -- Nothing to charge: a failed attempt at once.
        PERFORM payments._invoice_payment_settled(p_invoice.customer_id, v_payment, 'failed', p_at);
    END IF;
END
$$;
COMMENT ON FUNCTION payments._charge_invoice(payments.invoices, payments.subscriptions, timestamptz) IS
    'Internal: the next attempt at an invoice, at time p_at: a payment for what it owes (its total less its credit notes; key invoice:<invoice>:<attempt>, metadata invoice_id) that the gateway charges; without a payment method, a failed attempt; nothing to pay: paid at once (and an incomplete subscription active). A previous attempt still waiting on the customer is canceled first.';

CREATE OR REPLACE FUNCTION payments._invoice_payment_settled(p_customer_id text, p_payment_id text, p_status text,
                                                  p_at timestamptz DEFAULT now()) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_invoice  payments.invoices%ROWTYPE;
    v_settled  payments.invoices%ROWTYPE;
    v_sub      payments.subscriptions%ROWTYPE;
    v_from     text;
    v_settings record;
    v_failed_at timestamptz;
    v_last     boolean;
BEGIN
    -- Only the invoice's own attempts count (any payment's metadata can name an invoice).
    SELECT * INTO v_invoice FROM payments.invoices i
    WHERE i.customer_id = p_customer_id AND p_payment_id = ANY (i.attempt_payments) FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    ELSIF p_status = 'succeeded' AND (v_invoice.status = 'void'
                                      OR (v_invoice.status = 'paid' AND v_invoice.payment_id <> p_payment_id)) THEN
        -- Money for an invoice that another attempt paid, or that must not be paid: it goes back.
        PERFORM payments.create_refund('invoice:' || v_invoice.id || ':refund:' || p_payment_id, p_payment_id);
        RETURN;
    ELSIF NOT (v_invoice.status = 'open' OR (p_status = 'succeeded' AND v_invoice.status = 'uncollectible'))
          OR (p_status <> 'succeeded' AND v_invoice.payment_id <> p_payment_id) THEN
        RETURN;  -- settled already, or the failure of an attempt a later one replaced
    END IF;
    SELECT * INTO v_sub FROM payments.subscriptions s
    WHERE s.customer_id = p_customer_id AND s.id = v_invoice.subscription_id FOR UPDATE;
    v_from := v_sub.status;
    IF p_status = 'succeeded' THEN
        -- An earlier attempt paid (3-D Secure completed late): the latest gives way.
        IF v_invoice.payment_id <> p_payment_id THEN
            PERFORM payments._abandon_payment(p_customer_id, v_invoice.payment_id);
        END IF;
        UPDATE payments.invoices i SET status = 'paid', paid_at = now(), next_attempt_at = NULL, payment_id = p_payment_id
        WHERE i.customer_id = p_customer_id AND i.id = v_invoice.id
        RETURNING * INTO v_settled;
        -- Active again only when nothing else is left unpaid (Stripe: past_due means the latest
        -- invoice failed): paying an older invoice does not clear a newer failure.
        IF v_sub.status IN ('incomplete', 'past_due', 'unpaid')
           AND NOT EXISTS (SELECT 1 FROM payments.invoices i
                           WHERE i.customer_id = p_customer_id AND i.subscription_id = v_sub.id AND i.status = 'open'
                             AND i.kind <> 'final') THEN
            v_sub.status := 'active';
        END IF;
    ELSE
        -- failed, or requires_action: a renewal waiting on the customer is dunned as a failure
        -- (its payment stays payable until the next attempt replaces it).
        SELECT coalesce((SELECT b.retry_days FROM payments.billing_settings b), '{1,3,5}') AS retry_days,
               coalesce((SELECT b.final_status FROM payments.billing_settings b), 'unpaid') AS final_status
        INTO v_settings;
        v_failed_at := greatest(p_at, v_invoice.attempted_at);
        v_last := v_invoice.kind = 'final' OR v_invoice.attempt_count > cardinality(v_settings.retry_days)
                  OR v_sub.status IN ('canceled', 'incomplete_expired');
        UPDATE payments.invoices i
        SET next_attempt_at = CASE WHEN NOT v_last THEN payments._utc_add(
                                  coalesce(v_invoice.attempted_at, v_failed_at),
                                  v_settings.retry_days[v_invoice.attempt_count] * interval '1 day') END,
            -- (An incomplete subscription's first invoice is voided when it expires, below.)
            status = CASE WHEN v_invoice.kind = 'final'
                               OR (v_last AND v_settings.final_status = 'canceled' AND v_sub.status <> 'incomplete')
                          THEN 'uncollectible' ELSE 'open' END
        WHERE i.customer_id = p_customer_id AND i.id = v_invoice.id
        RETURNING * INTO v_settled;
        IF v_invoice.kind = 'final' OR NOT (v_sub.status = ANY (payments._group('collected_subscription_status'))) THEN
            NULL;  -- an ended subscription's last invoice: nothing more to decide
        ELSIF v_last AND v_sub.status = 'incomplete' THEN
            PERFORM payments._invoice_event(v_settled, v_invoice.status);
            PERFORM payments._end_subscription(v_sub, 'incomplete_expired', v_failed_at,
                                               'invoice ' || v_invoice.number || ' ' || p_status, p_at);
            RETURN;
        ELSIF v_last AND v_settings.final_status = 'canceled' THEN
            PERFORM payments._invoice_event(v_settled, v_invoice.status);
            PERFORM payments._end_subscription(v_sub, 'canceled', v_failed_at,
                                               'invoice ' || v_invoice.number || ' ' || p_status, p_at);
            RETURN;
        ELSIF v_last THEN
            v_sub.status := v_settings.final_status;
        ELSIF v_sub.status IN ('active', 'trialing') THEN
            v_sub.status := 'past_due';
            v_sub.past_due_since := v_failed_at;
        END IF;
    END IF;
    PERFORM payments._invoice_event(v_settled, v_invoice.status);
    IF v_sub.status IS DISTINCT FROM v_from THEN
        PERFORM payments._set_subscription(v_sub, v_from, 'invoice ' || v_invoice.number || ' ' || p_status,
                                           jsonb_build_object('invoice_id', v_invoice.id, 'payment_id', p_payment_id));
    END IF;
END
$$;
COMMENT ON FUNCTION payments._invoice_payment_settled(text, text, text, timestamptz) IS
    'Internal: an invoice payment reached succeeded, failed or requires_action (at p_at, the time of the news; retries count from the attempt''s own time): the invoice is paid by any of its attempts (and an incomplete, past_due or unpaid subscription active again once nothing else is left open; a later attempt still waiting is canceled), or its latest attempt''s failure is counted and the next scheduled (the subscription past_due; after the last, unpaid or canceled as set_dunning says, and an incomplete one incomplete_expired). A final invoice gets one attempt. An attempt that succeeds for an invoice another attempt paid, or that is void, is refunded in full.';

CREATE OR REPLACE FUNCTION payments._close_invoice(p_invoice payments.invoices, p_status text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_closed payments.invoices%ROWTYPE;
BEGIN
    IF p_invoice.payment_id IS NOT NULL THEN
        PERFORM payments._abandon_payment(p_invoice.customer_id, p_invoice.payment_id);
    END IF;
    -- A draft was never final: it can only be void.
    p_status := CASE WHEN p_invoice.status = 'draft' THEN 'void' ELSE p_status END;
    UPDATE payments.invoices i SET status = p_status, next_attempt_at = NULL
    WHERE i.customer_id = p_invoice.customer_id AND i.id = p_invoice.id
    RETURNING * INTO v_closed;
    IF p_status = 'void' THEN
        PERFORM payments._invoice_voided(p_invoice.customer_id, p_invoice.id);
    END IF;
    PERFORM payments._invoice_event(v_closed, p_invoice.status);
END
$$;
COMMENT ON FUNCTION payments._close_invoice(payments.invoices, text) IS
    'Internal: an invoice the caller has locked stops being collected: it becomes p_status (uncollectible, or void: the credits and balance it applied go back; a draft is always void), with no retry, and a payment still waiting on the customer is canceled. A charge already under way that succeeds still pays an uncollectible invoice, and is refunded for a void one.';

CREATE OR REPLACE FUNCTION payments._stop_collection(p_sub payments.subscriptions, p_status text, p_period integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_invoice payments.invoices%ROWTYPE;
BEGIN
    FOR v_invoice IN
        SELECT * FROM payments.invoices i
        WHERE i.customer_id = p_sub.customer_id AND i.subscription_id = p_sub.id AND i.status IN ('open', 'draft')
          AND (p_period IS NULL OR (i.period_number = p_period AND i.kind IN ('period', 'proration')))
        ORDER BY i.id FOR UPDATE
    LOOP
        PERFORM payments._close_invoice(v_invoice, p_status);
    END LOOP;
END
$$;
COMMENT ON FUNCTION payments._stop_collection(payments.subscriptions, text, integer) IS
    'Internal: stops collecting a subscription''s open invoices (Stripe stops automatic collection on cancellation; drafts are void), or with p_period only the period and proration invoices of that period (a plan change netted them): each becomes p_status (_close_invoice).';

CREATE OR REPLACE FUNCTION payments._locked_invoice(p_id text) RETURNS payments.invoices
LANGUAGE plpgsql AS $$
DECLARE
    v_customer text;
    v_invoice  payments.invoices%ROWTYPE;
BEGIN
    -- Found by id, then locked where it lives (on Citus, on its customer's shard: two
    -- statements, as Citus locks rows of one shard only). Its payment, when the caller needs
    -- it, is locked before it (a payment, then its invoice, as a payment's news settles it).
    SELECT i.customer_id INTO v_customer FROM payments.invoices i WHERE i.id = p_id;
    SELECT i.* INTO v_invoice FROM payments.invoices i WHERE i.customer_id = v_customer AND i.id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invoice % not found', payments._shown(p_id) USING ERRCODE = 'PM204';
    END IF;
    RETURN v_invoice;
END
$$;
COMMENT ON FUNCTION payments._locked_invoice(text) IS 'Internal: an invoice by id, its row locked; PM204 for none.';

CREATE OR REPLACE FUNCTION payments._end_subscription(p_sub payments.subscriptions, p_status text, p_ended_at timestamptz,
                                           p_reason text, p_at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_sub   payments.subscriptions%ROWTYPE := p_sub;
    v_plan  payments.plans%ROWTYPE;
    v_from  timestamptz;
    v_draft payments.invoices%ROWTYPE;
    v_lines jsonb := '[]';
BEGIN
    -- A renewal still a draft is void (its period's fee is not charged), but the usage it was to
    -- bill in arrears is billed on the final invoice, with the rest: at the plan it was used
    -- under, less what threshold invoices of its stretch billed (_usage_lines).
    FOR v_draft IN
        SELECT * FROM payments.invoices i
        WHERE i.customer_id = p_sub.customer_id AND i.subscription_id = p_sub.id AND i.status = 'draft'
        ORDER BY i.period_number
    LOOP
        v_lines := v_lines || payments._draft_usage_lines(p_sub, v_draft);
        v_from := least(v_from, v_draft.usage_from);
    END LOOP;
    -- A subscription that never started (incomplete) owes nothing: its invoice is void.
    PERFORM payments._stop_collection(p_sub, CASE WHEN p_sub.status = 'incomplete' THEN 'void' ELSE 'uncollectible' END);
    v_sub.status := p_status;
    v_sub.canceled_at := p_ended_at;
    PERFORM payments._set_subscription(v_sub, p_sub.status, p_reason, jsonb_build_object('at', p_ended_at));
    -- The usage not invoiced yet, in arrears, once (Stripe and Lago invoice it on termination;
    -- a trial's usage is not billed).
    IF p_status = 'canceled' AND p_sub.period_number > 0 AND p_sub.status <> 'incomplete' THEN
        v_plan := payments._sub_plan(p_sub);
        IF p_sub.usage_from < p_ended_at THEN
            v_lines := v_lines || payments._usage_lines(v_sub, v_plan, p_sub.usage_from, p_ended_at);
        END IF;
        IF payments._lines_total(v_lines) > 0 THEN
            PERFORM payments._issue_invoice(v_sub, 'final', v_plan.currency, v_lines, least(p_sub.usage_from, v_from),
                                            p_ended_at, p_at);
        END IF;
    END IF;
    UPDATE payments.subscriptions s SET usage_from = greatest(s.usage_from, p_ended_at)
    WHERE s.customer_id = p_sub.customer_id AND s.id = p_sub.id;
    PERFORM payments._release_meters(v_sub, NULL);
END
$$;
COMMENT ON FUNCTION payments._end_subscription(payments.subscriptions, text, timestamptz, text, timestamptz) IS
    'Internal: ends a locked subscription at p_ended_at as canceled or incomplete_expired: its open invoices are no longer collected (void when it never started: incomplete; a draft is void, its usage billed on the final invoice), the usage not invoiced yet is invoiced once (final; none for one that never started), and its meters are free for another subscription.';

CREATE OR REPLACE FUNCTION payments._next_period(p_sub payments.subscriptions, p_start timestamptz, p_new_anchor boolean,
                                      p_reason text, p_at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_sub       payments.subscriptions%ROWTYPE := p_sub;
    v_used_plan payments.plans%ROWTYPE;
    v_plan      payments.plans%ROWTYPE;
BEGIN
    v_used_plan := payments._sub_plan(p_sub);
    -- A plan change asked for at period end, or a version migration, starts with the new period.
    v_plan := payments._next_plan(p_sub);
    v_sub.plan := v_plan.code;
    v_sub.plan_version := v_plan.version;
    -- Another billing interval starts a new anchor (as a resume does): never anchor + n x new interval.
    IF p_new_anchor OR NOT payments._same_cycle(v_used_plan, v_plan) THEN
        v_sub.billing_anchor := p_start;
        v_sub.anchor_period := p_sub.period_number;
    END IF;
    v_sub.period_number := p_sub.period_number + 1;
    v_sub.current_period_start := p_start;
    v_sub.current_period_end := payments._period_end(v_plan, v_sub.billing_anchor, v_sub.period_number - v_sub.anchor_period);
    v_sub.status := CASE WHEN p_sub.status IN ('trialing', 'paused') THEN 'active' ELSE p_sub.status END;
    v_sub.usage_from := p_start;
    v_sub.pending_plan := NULL;
    UPDATE payments.subscriptions s
    SET period_number = v_sub.period_number, current_period_start = v_sub.current_period_start,
        current_period_end = v_sub.current_period_end, status = v_sub.status, plan = v_sub.plan,
        billing_anchor = v_sub.billing_anchor, anchor_period = v_sub.anchor_period, usage_from = v_sub.usage_from,
        pending_plan = NULL, plan_version = v_sub.plan_version, pending_version = NULL, updated_at = now()
    WHERE s.customer_id = v_sub.customer_id AND s.id = v_sub.id;
    PERFORM payments._subscription_event(v_sub, p_sub.status, p_reason,
                                         jsonb_build_object('period_number', v_sub.period_number, 'plan', v_sub.plan,
                                                            'plan_version', v_sub.plan_version,
                                                            'period_start', v_sub.current_period_start, 'at', p_at));
    IF p_sub.pending_version IS NOT NULL AND p_sub.pending_plan IS NULL THEN
        PERFORM payments._subscription_event(v_sub, v_sub.status, 'plan version migrated',
                                             jsonb_build_object('plan', v_sub.plan, 'from_version', p_sub.plan_version,
                                                                'to_version', v_sub.plan_version, 'at', p_at));
    END IF;
    -- The usage not invoiced yet (none of a trial's) is billed in arrears at the plan it was used under.
    -- A renewal's invoice is a draft for the draft window after the period starts (when that
    -- has not passed yet); a resume's or a plan change's is final at once.
    PERFORM payments._invoice_period(v_sub, v_plan, v_used_plan,
                                     CASE WHEN p_sub.period_number > 0 THEN p_sub.usage_from END, p_start, p_at,
                                     CASE WHEN p_reason = 'renewed' THEN p_start + payments._draft_window() END);
    PERFORM payments._release_meters(v_sub, v_plan);
    PERFORM payments._claim_meters(v_sub, v_plan);
END
$$;
COMMENT ON FUNCTION payments._next_period(payments.subscriptions, timestamptz, boolean, text, timestamptz) IS
    'Internal: moves a locked subscription into its next period, starting at p_start (its period''s end for a renewal; the time of a resume or of a change of billing interval, which start a new anchor), on its pending plan if one was asked for, and invoices it at p_at with the usage not yet invoiced (a renewal''s invoice is a draft for the draft window).';

CREATE OR REPLACE FUNCTION payments._credit_unused(p_sub payments.subscriptions, p_credit bigint, p_description text,
                                        p_at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_unpaid  bigint;
    v_numbers text;
    v_currency text;
BEGIN
    -- A credit can only come from money that was paid: what this period still owes is netted first.
    SELECT sum(i.total_minor - i.credited_minor), string_agg(i.number, ', ' ORDER BY i.number), min(i.currency)
    INTO v_unpaid, v_numbers, v_currency
    FROM payments.invoices i
    WHERE i.customer_id = p_sub.customer_id AND i.subscription_id = p_sub.id AND i.status = 'open'
      AND i.period_number = p_sub.period_number AND i.kind IN ('period', 'proration');
    IF v_unpaid > 0 THEN
        -- The netted invoices are void; what is still owed after the credit is invoiced anew.
        PERFORM payments._stop_collection(p_sub, 'void', p_sub.period_number);
        IF v_unpaid > p_credit THEN
            PERFORM payments._issue_invoice(p_sub, 'proration', v_currency, jsonb_build_array(
                jsonb_build_object('kind', 'proration', 'amount_minor', v_unpaid, 'discountable', false,
                                   'taxable', false, 'description', 'unpaid invoices ' || v_numbers || ', replaced'),
                jsonb_build_object('kind', 'credit', 'amount_minor', -p_credit, 'description', p_description)),
                NULL, NULL, p_at);
        END IF;
    END IF;
    -- The rest is the customer's: its balance, which its next invoices draw from.
    IF p_credit > coalesce(v_unpaid, 0) THEN
        PERFORM payments._move(p_sub.customer_id, 'downgrade_credit', p_sub.id,
                               p_sub.currency,
                               p_credit - coalesce(v_unpaid, 0), 'revenue', 'balance');
    END IF;
END
$$;
COMMENT ON FUNCTION payments._credit_unused(payments.subscriptions, bigint, text, timestamptz) IS
    'Internal: credits a locked subscription p_credit minor units for time it paid for and will not use, netted first against what its current period still owes (those invoices are void and the rest, if any, invoiced anew); what is left goes to the customer''s balance (ledger transfer downgrade_credit), which its next invoices draw from.';

CREATE OR REPLACE FUNCTION payments._bill_subscription(p_customer_id text, p_id text, p_at timestamptz) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_sub     payments.subscriptions%ROWTYPE;
    v_plan    payments.plans%ROWTYPE;
    v_renewed integer := 0;
    v_ended   integer := 0;
    v_expired integer := 0;
    v_finalized integer := 0;
BEGIN
    -- Drafts whose time has come are finalized before the subscription moves on.
    SELECT * INTO v_sub FROM payments.subscriptions s WHERE s.customer_id = p_customer_id AND s.id = p_id
    FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        v_finalized := payments._finalize_drafts(v_sub, p_at, true);
    END IF;
    LOOP
        SELECT * INTO v_sub FROM payments.subscriptions s
        WHERE s.customer_id = p_customer_id AND s.id = p_id
          AND ((s.status = ANY (payments._group('current_subscription_status')) AND s.current_period_end <= p_at)
               OR (s.status = 'incomplete' AND s.current_period_start <= p_at - interval '23 hours')
               OR (s.status = ANY (payments._group('live_subscription_status')) AND s.cancel_at <= p_at))
        FOR UPDATE SKIP LOCKED;
        EXIT WHEN NOT FOUND;
        IF v_sub.cancel_at <= p_at AND (v_sub.cancel_at <= v_sub.current_period_end
                                        OR NOT (v_sub.status = ANY (payments._group('current_subscription_status')))) THEN
            -- Its cancel_at came within this period (or while it does not renew): it ends then.
            PERFORM payments._end_subscription(v_sub, 'canceled', v_sub.cancel_at, 'canceled at cancel_at', p_at);
            v_ended := v_ended + 1;
            EXIT;
        ELSIF v_sub.status = 'incomplete' THEN
            -- Its first invoice was not paid within 23 hours (as Stripe's): nothing was delivered.
            PERFORM payments._end_subscription(v_sub, 'incomplete_expired', v_sub.current_period_start + interval '23 hours',
                                               'first invoice not paid within 23 hours', p_at);
            v_expired := v_expired + 1;
            EXIT;
        ELSIF v_sub.cancel_at_period_end THEN
            PERFORM payments._end_subscription(v_sub, 'canceled', v_sub.current_period_end, 'canceled at period end', p_at);
            v_ended := v_ended + 1;
            EXIT;
        ELSIF v_sub.status = 'trialing' AND v_sub.payment_method IS NULL AND v_sub.missing_payment_method <> 'create_invoice'
              AND (payments._next_plan(v_sub)).amount_minor > 0 THEN
            -- Its trial ended with nothing to charge: paused or canceled, as it asked (Stripe's
            -- missing_payment_method); resumed with a payment method, a paid period starts then.
            IF v_sub.missing_payment_method = 'cancel' THEN
                PERFORM payments._end_subscription(v_sub, 'canceled', v_sub.trial_end,
                                                   'trial ended without a payment method', p_at);
                v_ended := v_ended + 1;
            ELSE
                v_sub.status := 'paused';
                PERFORM payments._set_subscription(v_sub, 'trialing', 'trial ended without a payment method',
                                                   jsonb_build_object('at', v_sub.trial_end));
            END IF;
            EXIT;
        END IF;
        -- Possibly several periods behind: each pass moves it one period on.
        PERFORM payments._next_period(v_sub, v_sub.current_period_end, false, 'renewed', p_at);
        v_renewed := v_renewed + 1;
    END LOOP;
    -- Usage that reached its plan's threshold within the open period, invoiced now.
    SELECT * INTO v_sub FROM payments.subscriptions s
    WHERE s.customer_id = p_customer_id AND s.id = p_id AND s.status = ANY (payments._group('paid_period_subscription_status')) AND s.period_number > 0
      AND s.current_period_start < p_at AND s.current_period_end > p_at
    FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        v_plan := payments._sub_plan(v_sub);
        IF v_plan.usage_threshold_minor IS NOT NULL
           AND payments._lines_total(payments._usage_lines(v_sub, v_plan, v_sub.usage_from, p_at))
               >= v_plan.usage_threshold_minor THEN
            PERFORM payments._invoice_usage(v_sub, v_plan, 'threshold', v_sub.usage_from, p_at, p_at);
            RETURN jsonb_build_object('renewed', v_renewed, 'ended', v_ended, 'expired', v_expired, 'thresholds', 1,
                                      'finalized', v_finalized);
        END IF;
    END IF;
    RETURN jsonb_build_object('renewed', v_renewed, 'ended', v_ended, 'expired', v_expired, 'thresholds', 0,
                              'finalized', v_finalized);
END
$$;
COMMENT ON FUNCTION payments._bill_subscription(text, text, timestamptz) IS
    'Internal: what run_billing has due at p_at for one subscription: finalizes its drafts whose time has come, ends it (canceled at period end or at its cancel_at, or incomplete for 23 hours), pauses or cancels it at the end of a trial without a payment method when it asked so (missing_payment_method), or renews it into each period that ended, then invoices usage that reached its plan''s threshold. Claims its row with SKIP LOCKED. Returns {"renewed", "ended", "expired", "thresholds", "finalized"}.';

CREATE OR REPLACE FUNCTION payments._billing_outcome(p_customer_id text, p_id text, p_error jsonb, p_at timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_sub payments.subscriptions%ROWTYPE;
    -- Values from the locked row, not its columns, in the UPDATE: Citus refuses a stable
    -- function (jsonb_build_object) over column references.
    v_at  jsonb := to_jsonb(p_at);
BEGIN
    -- Never waits: a subscription another run holds is that run's to record (waiting here, holding
    -- the invoice counter, deadlocked concurrent runs).
    SELECT * INTO v_sub FROM payments.subscriptions s WHERE s.customer_id = p_customer_id AND s.id = p_id
    FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    ELSIF p_error IS NULL THEN
        IF v_sub.billing_error IS NOT NULL THEN
            UPDATE payments.subscriptions s SET billing_error = NULL
            WHERE s.customer_id = p_customer_id AND s.id = p_id;
            PERFORM payments._subscription_event(v_sub, v_sub.status, 'billing recovered', '{}');
        END IF;
        RETURN;
    END IF;
    UPDATE payments.subscriptions s
    SET billing_error = p_error || jsonb_build_object(
            'first_at', CASE WHEN v_sub.billing_error ->> 'sqlstate' = p_error ->> 'sqlstate'
                             THEN v_sub.billing_error -> 'first_at' ELSE v_at END,
            'last_at', v_at, 'attempts', coalesce((v_sub.billing_error ->> 'attempts')::integer, 0) + 1)
    WHERE s.customer_id = p_customer_id AND s.id = p_id;
    -- History and apps hear of a new failure once, not at every run.
    IF v_sub.billing_error ->> 'sqlstate' IS DISTINCT FROM p_error ->> 'sqlstate' THEN
        PERFORM payments._subscription_event(v_sub, v_sub.status, 'billing failed', p_error);
    END IF;
END
$$;
COMMENT ON FUNCTION payments._billing_outcome(text, text, jsonb, timestamptz) IS
    'Internal: records on a subscription that billing failed at p_at (p_error: {"sqlstate", "message"}; its history and apps hear of a new failure once) or, p_error NULL, that it succeeded again. A subscription another run holds is skipped, never waited for.';

CREATE OR REPLACE FUNCTION payments.run_billing(at timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_due     record;
    v_invoice payments.invoices%ROWTYPE;
    v_sub     payments.subscriptions%ROWTYPE;
    v_done    jsonb;
    v_counts  jsonb := '{"finalized": 0, "renewed": 0, "ended": 0, "expired": 0, "retried": 0, "thresholds": 0}';
    v_failed  jsonb[] := '{}';
    v_error   jsonb;
    v_state   text;
    v_msg     text;
    v_sub_id  text;
    v_threshold_plans text[];
BEGIN
    IF at IS NULL OR NOT isfinite(at) THEN
        RAISE EXCEPTION 'at is required (a finite time)' USING ERRCODE = 'PM100';
    END IF;
    -- The plans first: on Citus, joining the reference table to every shard after this
    -- transaction's writes is refused.
    SELECT array_agg(DISTINCT v.plan) INTO v_threshold_plans FROM payments.plan_versions v
    WHERE v.usage_threshold_minor IS NOT NULL OR jsonb_path_exists(v.currency_options, '$.*.usage_threshold_minor ? (@ != null)');
    -- Three passes, each with a bound of its own so none starves another: 1. periods that
    -- ended (renewals and ends) and incomplete subscriptions to expire, the most overdue first;
    -- 2. failed invoices whose retry is due (after 1: one that expires or ends now is not
    -- charged first); 3. subscriptions on threshold plans, in an order that changes with at
    -- (more than a pass holds are all reached over a few runs). In each, those that failed last
    -- time go last. Each unit is billed in a savepoint of its own: one that fails (its usage
    -- cannot be priced, its payment refused) is recorded on its subscription and the others go on.
    FOR v_due IN
        SELECT * FROM (
            (SELECT 1 AS pass, s.customer_id, s.id, 'subscription' AS unit, s.billing_error IS NOT NULL AS failing,
                    extract(epoch FROM least(s.current_period_end, s.cancel_at)) AS rank
             FROM payments.subscriptions s
             WHERE (s.status = ANY (payments._group('current_subscription_status')) AND s.current_period_end <= at)
                OR (s.status = 'incomplete' AND s.current_period_start <= at - interval '23 hours')
                OR (s.status = ANY (payments._group('live_subscription_status')) AND s.cancel_at <= at)
             ORDER BY 5, 6 LIMIT 1000)
            UNION ALL
            -- Drafts whose time has come (their subscription's pass finalizes them).
            (SELECT 1, i.customer_id, i.subscription_id, 'subscription', false, extract(epoch FROM i.finalize_at)
             FROM payments.invoices i
             WHERE i.status = 'draft' AND i.finalize_at <= at
             ORDER BY 6 LIMIT 1000)
            UNION ALL
            (SELECT 2, i.customer_id, i.id, 'invoice', s.billing_error IS NOT NULL, extract(epoch FROM i.next_attempt_at)
             FROM payments.invoices i
             -- Only a subscription that may be charged: others' invoices (paused) never fill the pass.
             JOIN payments.subscriptions s ON s.customer_id = i.customer_id AND s.id = i.subscription_id
             WHERE i.status = 'open' AND i.next_attempt_at <= at
               AND s.status = ANY (payments._group('collected_subscription_status'))
             ORDER BY 5, 6 LIMIT 1000)
            UNION ALL
            (SELECT 3, s.customer_id, s.id, 'subscription', s.billing_error IS NOT NULL,
                    -- The epoch, not at::text: the order must not depend on the session's TimeZone.
                    ('x' || substr(md5(s.id || extract(epoch FROM at)::text), 1, 8))::bit(32)::integer
             FROM payments.subscriptions s
             WHERE s.plan = ANY (v_threshold_plans) AND s.status = ANY (payments._group('paid_period_subscription_status')) AND s.period_number > 0
               AND s.current_period_start < at AND s.current_period_end > at
             ORDER BY 5, 6 LIMIT 1000)) due
        ORDER BY due.pass, due.failing, due.rank
    LOOP
        BEGIN
            IF v_due.unit = 'subscription' THEN
                v_sub_id := v_due.id;
                v_done := payments._bill_subscription(v_due.customer_id, v_due.id, at);
            ELSE
                SELECT * INTO v_invoice FROM payments.invoices i
                WHERE i.customer_id = v_due.customer_id AND i.id = v_due.id AND i.status = 'open'
                  AND i.next_attempt_at <= at
                FOR UPDATE SKIP LOCKED;
                CONTINUE WHEN NOT FOUND;
                SELECT * INTO v_sub FROM payments.subscriptions s
                WHERE s.customer_id = v_invoice.customer_id AND s.id = v_invoice.subscription_id;
                -- A canceled or expired subscription is never charged.
                CONTINUE WHEN NOT (v_sub.status = ANY (payments._group('collected_subscription_status')));
                v_sub_id := v_sub.id;
                PERFORM payments._charge_invoice(v_invoice, v_sub, at);
                v_done := '{"retried": 1}';
            END IF;
            -- A subscription that failed before and was billed now has recovered.
            IF v_due.failing THEN
                PERFORM payments._billing_outcome(v_due.customer_id, v_sub_id, NULL, at);
            END IF;
            SELECT jsonb_object_agg(c.key, c.value::integer + coalesce((v_done ->> c.key)::integer, 0)) INTO v_counts
            FROM jsonb_each_text(v_counts) c;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
            -- A deadlock or serialization failure is another run's doing: the next run retries it.
            CONTINUE WHEN v_state LIKE '40%';
            v_error := jsonb_build_object('sqlstate', v_state, 'message', left(v_msg, 300));
            v_sub_id := v_due.id;
            IF v_due.unit = 'invoice' THEN
                SELECT i.subscription_id INTO v_sub_id FROM payments.invoices i
                WHERE i.customer_id = v_due.customer_id AND i.id = v_due.id;
            END IF;
            PERFORM payments._billing_outcome(v_due.customer_id, v_sub_id, v_error, at);
            v_failed := v_failed || (v_error || jsonb_build_object('subscription_id', v_sub_id));
        END;
    END LOOP;
    -- Holds and credit grants that expired by at are released and posted out.
    v_counts := v_counts || jsonb_build_object('holds_expired', payments.expire_holds(at));
    v_counts := v_counts || jsonb_build_object('credits_expired', payments.expire_credits(at));
    v_counts := v_counts || jsonb_build_object('credits_expiring', payments._notice_expiring_credits(at));
    RETURN v_counts || jsonb_build_object('failed', to_jsonb(v_failed));
END
$$;
COMMENT ON FUNCTION payments.run_billing(timestamptz) IS
    'Does everything billing has due at time at (every decision is taken at at, so the same at twice does nothing new), in three passes of at most 1000 each: draft invoices whose draft window ended are finalized (numbered and charged with the usage and invoice items they have by then); subscriptions canceled at period end or whose cancel_at came end (their usage invoiced), trials that end without a payment method pause or cancel when their subscription asked so, incomplete ones older than 23 hours expire (incomplete_expired, invoice void); trialing, active and past_due ones whose period ended move to the next (a trial becomes active) with an invoice for it (a draft for the draft window, set_invoice_drafts, when it has not passed by at), charged through a payment keyed by invoice and attempt; failed invoices are retried on the dunning schedule (set_dunning), never those of a canceled or expired subscription; usage that reached its plan''s usage threshold within the open period is invoiced at once; holds that expired by at are released (expire_holds) and credit grants that expired are posted out (expire_credits); apps are told of grants expiring within a week (credits.expiring). Each subscription is billed in a savepoint of its own: one that fails is recorded on it (payments.billing_failures, its history, an event) and the others go on. Returns {"finalized", "renewed", "ended", "expired", "retried", "thresholds", "holds_expired", "credits_expired", "credits_expiring", "failed": [{"subscription_id", "sqlstate", "message"}]}. Safe to run twice or from two places at once (rows are claimed with SKIP LOCKED and each period is invoiced once). The gateway runs it on a timer.';

CREATE OR REPLACE VIEW payments.billing_failures WITH (security_invoker) AS
SELECT s.customer_id, s.id AS subscription_id, s.status, s.billing_error ->> 'sqlstate' AS sqlstate,
       s.billing_error ->> 'message' AS message, (s.billing_error ->> 'first_at')::timestamptz AS first_failed_at,
       (s.billing_error ->> 'last_at')::timestamptz AS last_failed_at, (s.billing_error ->> 'attempts')::integer AS attempts
FROM payments.subscriptions s
WHERE s.billing_error IS NOT NULL;
COMMENT ON VIEW payments.billing_failures IS
    'Subscriptions run_billing could not bill at its last try, with the SQLSTATE and message, when it first and last failed and how often: each is retried at every run, the others are billed meanwhile. Readable by payments_reader.';

CREATE OR REPLACE FUNCTION payments.set_subscription_payment_method(id text, payment_method text)
RETURNS SETOF payments.subscription_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_sub      payments.subscriptions%ROWTYPE;
    v_invoice  payments.invoices%ROWTYPE;
    v_status   text;
BEGIN
    IF payment_method IS NULL OR length(payment_method) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'payment_method must be 1 to 255 characters' USING ERRCODE = 'PM100';
    END IF;
    v_sub := payments._locked_for_billing(set_subscription_payment_method.id);
    IF v_sub.status IN ('canceled', 'incomplete_expired') THEN
        RAISE EXCEPTION 'subscription % is %: nothing of it is charged any more', v_sub.id, v_sub.status
            USING ERRCODE = 'PM206';
    END IF;
    UPDATE payments.subscriptions s SET payment_method = set_subscription_payment_method.payment_method, updated_at = now()
    WHERE s.customer_id = v_sub.customer_id AND s.id = v_sub.id;
    -- An unpaid invoice is retried at the next run: one waiting for its retry, or one whose
    -- retries ran out (its last payment failed); never one whose payment is still under way.
    FOR v_invoice IN
        SELECT i.* FROM payments.invoices i
        WHERE i.customer_id = v_sub.customer_id AND i.subscription_id = v_sub.id AND i.status = 'open'
    LOOP
        SELECT p.status INTO v_status FROM payments.payments p
        WHERE p.customer_id = v_invoice.customer_id AND p.id = v_invoice.payment_id;
        CONTINUE WHEN v_invoice.next_attempt_at IS NULL AND v_status IS DISTINCT FROM 'failed';
        UPDATE payments.invoices i SET next_attempt_at = least(i.next_attempt_at, i.attempted_at)
        WHERE i.customer_id = v_invoice.customer_id AND i.id = v_invoice.id;
    END LOOP;
    PERFORM payments._subscription_event(v_sub, v_sub.status, 'payment method changed', '{}');
    RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'applied');
END
$$;
COMMENT ON FUNCTION payments.set_subscription_payment_method(text, text) IS
    'Sets the payment method a subscription''s invoices are charged with; an open invoice waiting for its retry is retried at the next run_billing. PM206 for a canceled or expired subscription (nothing of it is charged any more).';

CREATE OR REPLACE VIEW payments.invoice_details WITH (security_invoker) AS
SELECT i.id, i.customer_id, i.subscription_id, i.number, i.status, payments.to_major(i.total_minor, i.currency) AS total,
       i.total_minor, i.currency, i.period_start, i.period_end, i.payment_id, i.attempt_count, i.next_attempt_at,
       i.created_at, i.paid_at, i.coupon, payments.to_major(i.credited_minor, i.currency) AS credited, i.finalize_at
FROM payments.invoices i;
COMMENT ON VIEW payments.invoice_details IS
    'Every invoice with its total in major units, the coupon whose discount it carries, what its credit notes credited, and for a draft when it is finalized (its number is NULL until then); readable by payments_reader.';

CREATE OR REPLACE VIEW payments.invoice_line_details WITH (security_invoker) AS
SELECT l.customer_id, l.invoice_id, l.line_number, l.kind, l.description, l.quantity, l.amount_minor, l.discount_minor,
       l.tax_minor
FROM payments.invoice_lines l;
COMMENT ON VIEW payments.invoice_line_details IS
    'Every invoice line: its amount, what its coupon took off it and its taxes, in minor units of the invoice''s currency; readable by payments_reader (BI tools sum discounts and taxes from it).';

-- Revenue, defined once for the dashboard and for BI tools alike.
CREATE OR REPLACE VIEW payments.subscription_revenue WITH (security_invoker) AS
SELECT s.id AS subscription_id, s.customer_id, s.plan, s.status, s.currency,
       round(CASE WHEN s.currency = pl.currency THEN v.amount_minor
                  ELSE (v.currency_options -> s.currency ->> 'amount_minor')::bigint END
             * s.quantity * CASE pl.billing_interval WHEN 'day' THEN 365 / 12.0 WHEN 'week' THEN 52 / 12.0
                                                     WHEN 'month' THEN 1 ELSE 1 / 12.0 END
             / pl.interval_count)::bigint AS monthly_minor,
       s.status = ANY (payments._group('paid_period_subscription_status')) AS in_mrr,
       s.created_at, s.trial_end, s.canceled_at
FROM payments.subscription_details s JOIN payments.plans pl ON pl.code = s.plan
JOIN payments.plan_versions v ON v.plan = s.plan AND v.version = s.plan_version;
COMMENT ON VIEW payments.subscription_revenue IS
    'What each subscription brings in a month: its plan''s fee (at its version, in its currency) times its quantity over its interval (a year is 12 months, a week 52/12 of one, a day 365/12), in minor units of its currency, rounded once; metered usage is not recurring and not in it. in_mrr: it counts in MRR now (active or past_due, a paid period: not a trial, a pause or an end). Readable by payments_reader.';

CREATE OR REPLACE VIEW payments.mrr WITH (security_invoker) AS
SELECT r.currency, sum(r.monthly_minor)::bigint AS mrr_minor, payments.to_major(sum(r.monthly_minor)::bigint, r.currency) AS mrr,
       count(*) AS subscriptions
FROM payments.subscription_revenue r
WHERE r.in_mrr
GROUP BY r.currency;
COMMENT ON VIEW payments.mrr IS
    'Monthly recurring revenue now, per currency: the sum of subscription_revenue over the subscriptions in MRR, in minor units and in major units, with how many they are. Readable by payments_reader.';

CREATE OR REPLACE FUNCTION payments.get_invoice(id text) RETURNS SETOF payments.invoice_details
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- Read once, here: inside the query Citus would send it to the shards.
    v_bound text := payments._bound_customer();
BEGIN
    RETURN QUERY SELECT * FROM payments.invoice_details d
    WHERE d.id = get_invoice.id AND d.customer_id = coalesce(v_bound, d.customer_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invoice % not found', payments._shown(get_invoice.id) USING ERRCODE = 'PM204';
    END IF;
END
$$;
COMMENT ON FUNCTION payments.get_invoice(text) IS 'One invoice by id; PM204 when there is none.';

CREATE OR REPLACE FUNCTION payments.list_invoices(customer_id text DEFAULT NULL, subscription_id text DEFAULT NULL,
                                                  status text DEFAULT NULL, lim int DEFAULT 10,
                                                  starting_after text DEFAULT NULL)
RETURNS SETOF payments.invoice_details
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- Read once, here: inside the query Citus would send it to the shards.
    v_bound text := payments._bound_customer();
BEGIN
    IF lim IS NULL OR lim NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'lim must be between 1 and 100' USING ERRCODE = 'PM100';
    ELSIF list_invoices.status IS NOT NULL AND NOT payments._is_allowed('invoice_status', list_invoices.status) THEN
        RAISE EXCEPTION 'unknown invoice status %', quote_literal(payments._shown(list_invoices.status))
            USING ERRCODE = 'PM100', HINT = 'SELECT * FROM payments.allowed_values() WHERE kind = ''invoice_status''';
    END IF;
    RETURN QUERY SELECT * FROM payments.invoice_details d
    WHERE (list_invoices.customer_id IS NULL OR d.customer_id = list_invoices.customer_id)
      -- A login bound to one customer sees that customer's invoices only.
      AND d.customer_id = coalesce(v_bound, d.customer_id)
      AND (list_invoices.subscription_id IS NULL OR d.subscription_id = list_invoices.subscription_id)
      AND (list_invoices.status IS NULL OR d.status = list_invoices.status)
      AND (starting_after IS NULL OR d.id < starting_after)
    ORDER BY d.id DESC LIMIT lim;
END
$$;
COMMENT ON FUNCTION payments.list_invoices(text, text, text, int, text) IS
    'A page of invoices, newest first (lim 1 to 100; starting_after: the last id of the previous page), of a customer or a subscription and in a status if given: a draft to add items to is status => ''draft''. A bound login sees its customer''s only. PM100 for an unknown status.';

CREATE OR REPLACE FUNCTION payments.void_invoice(invoice_id text) RETURNS SETOF payments.invoice_details
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_invoice payments.invoices%ROWTYPE := payments._locked_invoice(void_invoice.invoice_id);
BEGIN
    IF v_invoice.status = 'paid' THEN
        RAISE EXCEPTION 'invoice % is paid: a credit note corrects it', v_invoice.number USING ERRCODE = 'PM206';
    ELSIF v_invoice.status <> 'void' THEN
        PERFORM payments._close_invoice(v_invoice, 'void');
    END IF;
    RETURN QUERY SELECT * FROM payments.invoice_details d WHERE d.customer_id = v_invoice.customer_id AND d.id = v_invoice.id;
END
$$;
COMMENT ON FUNCTION payments.void_invoice(text) IS
    'Voids an open or uncollectible invoice: it is never charged again (no retry; a payment waiting on the customer is canceled, and one already under way that succeeds is refunded), and the prepaid credits and balance it applied go back to the customer. Again: nothing more. A paid invoice is PM206 (a credit note corrects it); an unknown one PM204. The subscription keeps its status.';

CREATE OR REPLACE FUNCTION payments.mark_uncollectible(invoice_id text) RETURNS SETOF payments.invoice_details
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_invoice payments.invoices%ROWTYPE := payments._locked_invoice(mark_uncollectible.invoice_id);
BEGIN
    IF v_invoice.status = 'open' THEN
        PERFORM payments._close_invoice(v_invoice, 'uncollectible');
    ELSIF v_invoice.status <> 'uncollectible' THEN
        RAISE EXCEPTION 'invoice % is %, not open', coalesce(v_invoice.number, v_invoice.id), v_invoice.status
            USING ERRCODE = 'PM206';
    END IF;
    RETURN QUERY SELECT * FROM payments.invoice_details d WHERE d.customer_id = v_invoice.customer_id AND d.id = v_invoice.id;
END
$$;
COMMENT ON FUNCTION payments.mark_uncollectible(text) IS
    'Gives up collecting an open invoice (a bad debt): no more retries, a payment waiting on the customer canceled; a charge already under way that succeeds still pays it. Revenue is counted when money arrives, so the ledger has nothing to write off. Again: nothing more. A paid or void invoice is PM206; an unknown one PM204.';

CREATE OR REPLACE FUNCTION payments.finalize_invoice(invoice_id text, at timestamptz DEFAULT now())
RETURNS SETOF payments.invoice_details
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_invoice payments.invoices%ROWTYPE;
    v_sub     payments.subscriptions%ROWTYPE;
BEGIN
    IF at IS NULL OR NOT isfinite(at) THEN
        RAISE EXCEPTION 'at is required (a finite time)' USING ERRCODE = 'PM100';
    END IF;
    SELECT i.* INTO v_invoice FROM payments.invoices i
    WHERE i.customer_id = (SELECT i2.customer_id FROM payments.invoices i2 WHERE i2.id = finalize_invoice.invoice_id)
      AND i.id = finalize_invoice.invoice_id;
    IF NOT FOUND OR v_invoice.customer_id <> coalesce(payments._bound_customer(), v_invoice.customer_id) THEN
        RAISE EXCEPTION 'invoice % not found', payments._shown(finalize_invoice.invoice_id) USING ERRCODE = 'PM204';
    END IF;
    -- The subscription, then the draft: the order run_billing takes them.
    v_sub := payments._locked_for_billing(v_invoice.subscription_id);
    SELECT i.* INTO v_invoice FROM payments.invoices i
    WHERE i.customer_id = v_invoice.customer_id AND i.id = v_invoice.id FOR UPDATE;
    IF v_invoice.status = 'draft' THEN
        PERFORM payments._finalize_invoice(v_invoice, v_sub, finalize_invoice.at);
    END IF;
    RETURN QUERY SELECT * FROM payments.invoice_details d WHERE d.customer_id = v_invoice.customer_id AND d.id = v_invoice.id;
END
$$;
COMMENT ON FUNCTION payments.finalize_invoice(text, timestamptz) IS
    'Finalizes a draft invoice now rather than at the end of its draft window: numbered, priced with its usage and invoice items as they are, and charged at time at (a canceled, expired or paused subscription''s draft is void instead). An invoice already final is returned as it is. PM204 for an unknown invoice.';

CREATE OR REPLACE FUNCTION payments.add_invoice_item(idempotency_key text, invoice_id text, description text,
                                                     amount numeric, quantity integer DEFAULT 1)
RETURNS TABLE (invoice_item_id text, total numeric, currency text, invoice_total numeric, outcome text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_invoice payments.invoices%ROWTYPE;
    v_item    payments.invoice_items%ROWTYPE;
    v_minor   bigint;
    v_fp      bytea;
    v_outcome text := 'created';
    v_amounts jsonb;
BEGIN
    IF add_invoice_item.idempotency_key IS NULL OR length(add_invoice_item.idempotency_key) NOT BETWEEN 1 AND 255
       OR add_invoice_item.description IS NULL OR length(add_invoice_item.description) NOT BETWEEN 1 AND 500
       OR add_invoice_item.quantity IS NULL OR add_invoice_item.quantity NOT BETWEEN 1 AND 1000000
       OR NOT (add_invoice_item.amount > 0) THEN
        RAISE EXCEPTION 'idempotency_key 1 to 255 characters, description 1 to 500, amount above 0, quantity 1 to 1000000'
            USING ERRCODE = 'PM100';
    END IF;
    -- Found by id, then locked on its customer's shard (Citus locks rows of one shard only).
    SELECT i.customer_id INTO v_invoice.customer_id FROM payments.invoices i WHERE i.id = add_invoice_item.invoice_id;
    SELECT i.* INTO v_invoice FROM payments.invoices i
    WHERE i.customer_id = v_invoice.customer_id AND i.id = add_invoice_item.invoice_id FOR UPDATE;
    IF NOT FOUND OR v_invoice.customer_id <> coalesce(payments._bound_customer(), v_invoice.customer_id) THEN
        RAISE EXCEPTION 'invoice % not found', payments._shown(add_invoice_item.invoice_id) USING ERRCODE = 'PM204';
    END IF;
    v_minor := payments.to_minor(add_invoice_item.amount, v_invoice.currency);
    v_fp := sha256(convert_to(jsonb_build_array(v_invoice.id, add_invoice_item.description, v_minor,
                                                add_invoice_item.quantity)::text, 'UTF8'));
    -- A replay answers as the first call did, even once the invoice is final.
    SELECT * INTO v_item FROM payments.invoice_items it
    WHERE it.customer_id = v_invoice.customer_id AND it.idempotency_key = add_invoice_item.idempotency_key;
    IF FOUND THEN
        IF v_item.request_fingerprint <> v_fp THEN
            RAISE EXCEPTION 'idempotency key % was already used with different parameters',
                quote_literal(add_invoice_item.idempotency_key)
                USING ERRCODE = 'PM201', DETAIL = 'the key belongs to invoice item ' || v_item.id;
        END IF;
        v_outcome := 'replayed';
    ELSIF v_invoice.status <> 'draft' THEN
        RAISE EXCEPTION 'invoice % is %: only a draft takes invoice items', coalesce(v_invoice.number, v_invoice.id),
            v_invoice.status USING ERRCODE = 'PM206', HINT = 'a credit note corrects a final invoice';
    ELSE
        INSERT INTO payments.invoice_items (customer_id, id, invoice_id, description, quantity, unit_amount_minor,
                                            idempotency_key, request_fingerprint)
        VALUES (v_invoice.customer_id, payments._new_id('ii'), v_invoice.id, add_invoice_item.description,
                add_invoice_item.quantity, v_minor, add_invoice_item.idempotency_key, v_fp)
        RETURNING * INTO v_item;
        v_amounts := payments._draft_amounts(v_invoice, now());
        v_invoice := payments._estimate_draft(v_invoice, v_amounts);
        -- What it charges before credits and balance, which may be spent elsewhere before it is final.
        IF (v_amounts ->> 'total_minor')::bigint + (v_amounts ->> 'credits_minor')::bigint
           + (v_amounts ->> 'balance_minor')::bigint > 999999999999 THEN
            RAISE EXCEPTION 'invoice % would come to more than one payment can charge', v_invoice.id USING ERRCODE = 'PM104';
        END IF;
        PERFORM payments._invoice_event(v_invoice, v_invoice.status);
    END IF;
    RETURN QUERY SELECT v_item.id, payments.to_major(v_item.unit_amount_minor * v_item.quantity, v_invoice.currency),
        v_invoice.currency, payments.to_major(v_invoice.total_minor, v_invoice.currency), v_outcome;
END
$$;
COMMENT ON FUNCTION payments.add_invoice_item(text, text, text, numeric, integer) IS
    'Adds a one-off charge to a draft invoice (as Stripe''s invoice items): quantity times amount (major units of the invoice''s currency, above 0), a line of the invoice when it is finalized, discounted and taxed as the others; the draft''s total is estimated again (invoice.updated). Returns the item''s id, its total (quantity times amount), the currency and the invoice''s total as it stands. Idempotent per customer and key (replayed, even once the invoice is final; other parameters PM201). PM206 for an invoice that is not a draft (a credit note corrects a final one), PM204 for an unknown one, PM100 for bad input, PM101 for more decimals than the currency has, PM104 when the invoice would come to more than one payment can charge.';

CREATE OR REPLACE FUNCTION payments.list_invoice_lines(invoice_id text)
RETURNS TABLE (line_number integer, kind text, description text, quantity numeric, amount numeric, amount_minor bigint,
               discount numeric, tax numeric)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_invoice payments.invoice_details%ROWTYPE;
    v_draft   payments.invoices%ROWTYPE;
BEGIN
    SELECT * INTO v_invoice FROM payments.get_invoice(list_invoice_lines.invoice_id);
    IF v_invoice.status = 'draft' THEN
        -- What it would be if finalized now: its lines are written when it is. (The row first,
        -- on its own: Citus plans no function call over a distributed table's row.)
        SELECT * INTO v_draft FROM payments.invoices i WHERE i.customer_id = v_invoice.customer_id AND i.id = v_invoice.id;
        RETURN QUERY
        SELECT n::integer, l ->> 'kind', l ->> 'description', (l ->> 'quantity')::numeric,
               payments.to_major((l ->> 'amount_minor')::bigint, v_invoice.currency), (l ->> 'amount_minor')::bigint,
               payments.to_major((l ->> 'discount_minor')::bigint, v_invoice.currency),
               payments.to_major((l ->> 'tax_minor')::bigint, v_invoice.currency)
        FROM jsonb_array_elements(payments._draft_amounts(v_draft, now()) -> 'lines') WITH ORDINALITY e(l, n)
        ORDER BY n;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT l.line_number, l.kind, l.description, l.quantity, payments.to_major(l.amount_minor, v_invoice.currency),
           l.amount_minor, payments.to_major(l.discount_minor, v_invoice.currency),
           payments.to_major(l.tax_minor, v_invoice.currency)
    FROM payments.invoice_lines l
    WHERE l.customer_id = v_invoice.customer_id AND l.invoice_id = v_invoice.id
    ORDER BY l.line_number;
END
$$;
COMMENT ON FUNCTION payments.list_invoice_lines(text) IS
    'An invoice''s lines in order: amount (major and minor units), what its coupon took off it, and its taxes (a draft''s: as they would be if it were finalized now); PM204 for an unknown invoice.';

CREATE OR REPLACE FUNCTION payments.list_invoice_taxes(invoice_id text)
RETURNS TABLE (tax_rate text, display_name text, percentage numeric, inclusive boolean, amount numeric)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_invoice payments.invoice_details%ROWTYPE;
BEGIN
    SELECT * INTO v_invoice FROM payments.get_invoice(list_invoice_taxes.invoice_id);
    RETURN QUERY
    SELECT t.tax_rate, t.display_name, t.percentage, t.inclusive, payments.to_major(t.amount_minor, v_invoice.currency)
    FROM payments.invoice_taxes t
    WHERE t.customer_id = v_invoice.customer_id AND t.invoice_id = v_invoice.id
    ORDER BY t.tax_rate;
END
$$;
COMMENT ON FUNCTION payments.list_invoice_taxes(text) IS
    'What each tax rate charged on an invoice, with the rate as it was when the invoice was made (inclusive ones are inside the lines, exclusive ones were added to the total); PM204 for an unknown invoice.';

-- ---------------------------------------------------------------------------
-- Receipts
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION payments.receipt(payment_id text) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_payment payments.payment_details%ROWTYPE;
    v_refunds jsonb;
    v_invoice payments.invoice_details%ROWTYPE;
    v_paid_at timestamptz;
BEGIN
    SELECT * INTO v_payment FROM payments.get_payment(receipt.payment_id);
    IF v_payment.status <> 'succeeded' THEN
        RAISE EXCEPTION 'payment % is %: a receipt is for a payment that succeeded', v_payment.id, v_payment.status
            USING ERRCODE = 'PM206';
    END IF;
    -- When it succeeded: its history says (updated_at moves with refunds).
    SELECT e.created_at INTO v_paid_at FROM payments.payment_events e
    WHERE e.customer_id = v_payment.customer_id AND e.payment_id = v_payment.id AND e.applied
      AND e.to_status = 'succeeded' AND e.from_status IS DISTINCT FROM 'succeeded'
    ORDER BY e.seq LIMIT 1;
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', r.id, 'amount', r.amount::text, 'status', r.status,
                                                 'created_at', r.created_at) ORDER BY r.created_at, r.id), '[]')
    INTO v_refunds FROM payments.refund_details r
    WHERE r.customer_id = v_payment.customer_id AND r.payment_id = v_payment.id AND r.status = 'succeeded';
    -- Only the invoice's own payment names it (any payment's metadata can say invoice_id).
    IF v_payment.metadata ? 'invoice_id' THEN
        SELECT * INTO v_invoice FROM payments.invoice_details i
        WHERE i.customer_id = v_payment.customer_id AND i.id = v_payment.metadata ->> 'invoice_id'
          AND i.payment_id = v_payment.id;
    END IF;
    RETURN jsonb_build_object(
        'object', 'receipt', 'payment_id', v_payment.id, 'customer_id', v_payment.customer_id,
        'amount', v_payment.amount_captured::text, 'amount_minor', v_payment.amount_captured_minor,
        'currency', v_payment.currency, 'amount_refunded', v_payment.amount_refunded::text,
        'paid_at', v_paid_at, 'description', v_payment.description,
        'payment_method', v_payment.payment_method, 'provider', v_payment.provider,
        'provider_payment_id', v_payment.provider_payment_id, 'refunds', v_refunds,
        'invoice', CASE WHEN v_invoice.id IS NOT NULL THEN
                        jsonb_build_object('id', v_invoice.id, 'number', v_invoice.number, 'taxes', (
                            SELECT coalesce(jsonb_agg(jsonb_build_object(
                                       'display_name', t.display_name, 'percentage', t.percentage::text,
                                       'inclusive', t.inclusive,
                                       'amount', payments.to_major(t.amount_minor, v_invoice.currency)::text)
                                   ORDER BY t.tax_rate), '[]')
                            FROM payments.invoice_taxes t
                            WHERE t.customer_id = v_invoice.customer_id AND t.invoice_id = v_invoice.id)) END);
END
$$;
COMMENT ON FUNCTION payments.receipt(text) IS
    'A succeeded payment''s receipt as JSON: what was captured (amounts as exact decimal strings), when, how, the succeeded refunds, and its invoice when it paid one ({id, number, taxes: [{display_name, percentage, inclusive, amount}]}: the taxes the amount paid includes). PM204 for an unknown payment, PM206 for one that did not succeed.';

-- ---------------------------------------------------------------------------
-- Plan changes
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION payments._unused_share(p_sub payments.subscriptions, p_at timestamptz) RETURNS numeric
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_whole timestamptz := p_sub.current_period_end;
BEGIN
    -- The short first period before a billing anchor was charged as its share of a whole
    -- interval: what is left of it is counted the same way.
    IF p_sub.period_number > 0 AND p_sub.period_number = p_sub.anchor_period THEN
        v_whole := payments._period_end(payments._sub_plan(p_sub), p_sub.current_period_start, 1);
    END IF;
    RETURN greatest(0, least(1, extract(epoch FROM p_sub.current_period_end - greatest(p_at, p_sub.current_period_start))
                                / extract(epoch FROM v_whole - p_sub.current_period_start)));
END
$$;
COMMENT ON FUNCTION payments._unused_share(payments.subscriptions, timestamptz) IS
    'Internal: the share (0 to 1) of a whole period left in a subscription''s current period after p_at: what a prorated change credits and charges (for the short first period before a billing anchor, a share of a whole interval, as its fee was).';

CREATE OR REPLACE FUNCTION payments.change_plan(id text, plan text, prorate boolean DEFAULT true, at timestamptz DEFAULT now())
RETURNS SETOF payments.subscription_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_sub      payments.subscriptions%ROWTYPE := payments._locked_for_billing(change_plan.id);
    v_old      payments.plans%ROWTYPE;
    v_new      payments.plans%ROWTYPE;
    v_left     numeric;
    v_credit   bigint;
    v_charge   bigint;
    v_lines    jsonb := '[]';
BEGIN
    IF prorate IS NULL OR at IS NULL THEN
        RAISE EXCEPTION 'prorate and at are required' USING ERRCODE = 'PM100';
    END IF;
    SELECT * INTO v_new FROM payments.plans p WHERE p.code = change_plan.plan;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'plan % not found', quote_nullable(payments._shown(change_plan.plan)) USING ERRCODE = 'PM204';
    END IF;
    v_old := payments._sub_plan(v_sub);
    IF NOT (v_sub.status = ANY (payments._group('current_subscription_status'))) OR v_new.archived_at IS NOT NULL THEN
        RAISE EXCEPTION 'subscription % is % (or plan % is archived): its plan cannot change', v_sub.id, v_sub.status,
            v_new.code USING ERRCODE = 'PM206';
    END IF;
    IF v_new.currency <> v_sub.currency AND NOT v_new.currency_options ? v_sub.currency THEN
        RAISE EXCEPTION 'plan % has no price in %, the subscription''s currency: a plan change keeps the currency',
            v_new.code, v_sub.currency USING ERRCODE = 'PM100';
    END IF;
    -- Its latest version, in the subscription's currency.
    v_new := payments._plan_of(v_new.code, NULL, v_sub.currency);
    IF v_new.code = v_sub.plan AND v_sub.pending_plan IS NULL THEN
        RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'noop');
        RETURN;
    END IF;
    -- A change is prorated against what the period was invoiced: a draft is final first.
    PERFORM payments._finalize_drafts(v_sub, at);
    -- Its meters are this subscription's from now on (PM206 when another subscription bills one).
    PERFORM payments._claim_meters(v_sub, v_new);
    -- Without proration, or once the period has ended (run_billing not yet renewed it): from the
    -- next period, so that period's usage and anchor follow the plan it was used under.
    IF NOT prorate OR at >= v_sub.current_period_end THEN
        UPDATE payments.subscriptions s
        SET pending_plan = CASE WHEN v_new.code = s.plan THEN NULL ELSE v_new.code END, updated_at = now()
        WHERE s.customer_id = v_sub.customer_id AND s.id = v_sub.id;
        PERFORM payments._subscription_event(v_sub, v_sub.status, 'plan change at period end',
                                             jsonb_build_object('from', v_old.code, 'to', v_new.code));
        RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'applied');
        RETURN;
    END IF;
    -- The unused share of the period is credited at the old price and charged at the new
    -- one, each rounded to a minor unit, as Stripe does (a trial has nothing to prorate).
    IF v_sub.status <> 'trialing' THEN
        v_left := payments._unused_share(v_sub, at);
        v_credit := round(v_old.amount_minor * v_sub.quantity * v_left);
        v_charge := round(v_new.amount_minor * v_sub.quantity * v_left);
        IF NOT payments._same_cycle(v_old, v_new) THEN
            -- Another billing interval: a new period, anchored now, at the new price; the unused
            -- time is credited (netted against what the period still owes) and taken off it.
            v_sub.pending_plan := v_new.code;
            PERFORM payments._credit_unused(v_sub, v_credit, 'unused time on ' || coalesce(v_old.name, v_old.code), at);
            PERFORM payments._next_period(v_sub, at, true, 'plan changed', at);
            RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'applied');
            RETURN;
        END IF;
        -- The usage so far is billed now, at the plan it was used under.
        IF v_sub.period_number > 0 AND v_sub.usage_from < at THEN
            v_lines := payments._usage_lines(v_sub, v_old, v_sub.usage_from, at);
        END IF;
        IF v_charge > v_credit THEN
            v_lines := v_lines || jsonb_build_array(
                jsonb_build_object('kind', 'credit', 'amount_minor', -v_credit,
                                   'description', 'unused time on ' || coalesce(v_old.name, v_old.code)),
                jsonb_build_object('kind', 'proration', 'amount_minor', v_charge,
                                   'description', 'remaining time on ' || coalesce(v_new.name, v_new.code)));
        ELSIF v_credit > v_charge THEN
            -- A downgrade: what is left over, once netted against what is still owed, is taken
            -- off the next invoices.
            PERFORM payments._credit_unused(v_sub, v_credit - v_charge,
                                            'unused time on ' || coalesce(v_old.name, v_old.code), at);
        END IF;
        IF payments._lines_total(v_lines) > 0 THEN
            PERFORM payments._issue_invoice(v_sub, 'proration', v_new.currency, v_lines,
                                            CASE WHEN v_sub.usage_from < at THEN v_sub.usage_from END,
                                            CASE WHEN v_sub.usage_from < at THEN at END, at);
        END IF;
    END IF;
    UPDATE payments.subscriptions s
    SET plan = v_new.code, plan_version = v_new.version, pending_plan = NULL, pending_version = NULL,
        usage_from = greatest(s.usage_from, at), updated_at = now()
    WHERE s.customer_id = v_sub.customer_id AND s.id = v_sub.id;
    v_sub.plan := v_new.code;
    PERFORM payments._subscription_event(v_sub, v_sub.status, 'plan changed',
                                         jsonb_build_object('from', v_old.code, 'to', v_new.code, 'at', at));
    PERFORM payments._release_meters(v_sub, v_new);
    RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'applied');
END
$$;
COMMENT ON FUNCTION payments.change_plan(text, text, boolean, timestamptz) IS
    'Moves a trialing, active or past_due subscription to another plan in the same currency (PM206 for another status, an archived plan, or a plan pricing a meter another subscription of the customer bills; PM100 for another currency). prorate (default): at once, the unused share of the period credited at the old price and charged at the new one (rounded to minor units), and the usage so far invoiced at the old plan''s prices — an upgrade is invoiced and charged now, a downgrade''s difference is netted against what the period still owes and the rest goes to the customer''s balance, which its next invoices draw from; a plan with another billing interval starts a new period (and anchor) at at, invoiced at once less the unused time; the new plan''s limits apply at once. Without prorate: at the end of the period. The same plan again is a noop.';

CREATE OR REPLACE FUNCTION payments.set_subscription_quantity(id text, quantity integer, prorate boolean DEFAULT true,
                                                              at timestamptz DEFAULT now())
RETURNS SETOF payments.subscription_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_sub    payments.subscriptions%ROWTYPE := payments._locked_for_billing(set_subscription_quantity.id);
    v_plan   payments.plans%ROWTYPE;
    v_name   text;
    v_left   numeric;
    v_credit bigint;
    v_charge bigint;
BEGIN
    IF quantity IS NULL OR quantity NOT BETWEEN 1 AND 1000000 OR prorate IS NULL OR at IS NULL THEN
        RAISE EXCEPTION 'quantity is 1 to 1000000; prorate and at are required' USING ERRCODE = 'PM100';
    ELSIF NOT (v_sub.status = ANY (payments._group('current_subscription_status'))) THEN
        RAISE EXCEPTION 'subscription % is % and its quantity cannot change', v_sub.id, v_sub.status USING ERRCODE = 'PM206';
    ELSIF quantity = v_sub.quantity THEN
        RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'noop');
        RETURN;
    END IF;
    v_plan := payments._sub_plan(v_sub);
    v_name := coalesce(v_plan.name, v_plan.code);
    PERFORM payments._finalize_drafts(v_sub, at);
    -- The unused share of the period is credited at the old quantity and charged at the new one,
    -- each rounded to a minor unit, as change_plan does (a trial has nothing to prorate).
    IF prorate AND v_sub.status <> 'trialing' AND at < v_sub.current_period_end THEN
        v_left := payments._unused_share(v_sub, at);
        v_credit := round(v_plan.amount_minor * v_sub.quantity * v_left);
        v_charge := round(v_plan.amount_minor * set_subscription_quantity.quantity * v_left);
        IF v_charge > v_credit THEN
            -- More seats: invoiced and charged now.
            PERFORM payments._issue_invoice(v_sub, 'proration', v_plan.currency, jsonb_build_array(
                jsonb_build_object('kind', 'credit', 'amount_minor', -v_credit, 'quantity', v_sub.quantity,
                                   'description', 'unused time on ' || v_name),
                jsonb_build_object('kind', 'proration', 'amount_minor', v_charge,
                                   'quantity', set_subscription_quantity.quantity,
                                   'description', 'remaining time on ' || v_name)),
                NULL, NULL, at);
        ELSIF v_credit > v_charge THEN
            -- Fewer: netted against what the period still owes, the rest to the customer's balance.
            PERFORM payments._credit_unused(v_sub, v_credit - v_charge, 'unused time on ' || v_name, at);
        END IF;
    END IF;
    UPDATE payments.subscriptions s SET quantity = set_subscription_quantity.quantity, updated_at = now()
    WHERE s.customer_id = v_sub.customer_id AND s.id = v_sub.id;
    PERFORM payments._subscription_event(v_sub, v_sub.status, 'quantity changed',
                                         jsonb_build_object('from', v_sub.quantity, 'to', set_subscription_quantity.quantity,
                                                            'prorated', prorate, 'at', at));
    RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'applied');
END
$$;
COMMENT ON FUNCTION payments.set_subscription_quantity(text, integer, boolean, timestamptz) IS
    'Changes a trialing, active or past_due subscription''s quantity (seats; PM206 otherwise): prorate (default): the unused share of the period credited at the old quantity and charged at the new one, rounded to minor units, as change_plan does: more seats are invoiced and charged now, fewer are netted against what the period still owes and the rest goes to the customer''s balance. Without prorate (or in a trial): from the next invoice on. Per-seat feature limits follow at once. The same quantity again is a noop.';
