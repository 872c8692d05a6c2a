-- payments: invoices, renewals and dunning. run_billing does everything due
-- at a time `at` (tests move the clock by passing it): ends subscriptions
-- canceled at period end, renews the others into their next period with an
-- invoice, and retries unpaid invoices on the dunning schedule. An invoice is
-- charged through an ordinary payment (create_payment, which the gateway's
-- reconciler carries to the provider) whose idempotency key derives from the
-- subscription, the period and the attempt: a retried or concurrent run never
-- charges twice. The payment's outcome settles the invoice and the
-- subscription (_invoice_payment_settled, called by the payment's transition).

CREATE TABLE payments.billing_settings (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    retry_days    integer[] NOT NULL CHECK (cardinality(retry_days) BETWEEN 0 AND 10 AND 0 < ALL (retry_days)),
    final_status  text NOT NULL CHECK (final_status IN ('unpaid', 'canceled')),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    past_due_grace interval NOT NULL CHECK (past_due_grace BETWEEN interval '0' AND interval '60 days')
);
COMMENT ON TABLE payments.billing_settings IS
    'How unpaid renewals are retried (payments_admin, set_dunning). No row: the defaults (retries after 1, 3 and 5 days, then unpaid; past_due grants its plan for 3 days).';
COMMENT ON COLUMN payments.billing_settings.past_due_grace IS 'How long a past_due subscription still grants its plan (has_active_subscription, entitlements, consume).';
COMMENT ON COLUMN payments.billing_settings.retry_days IS 'Days after each failed attempt before the next: {1,3,5} retries three times.';
COMMENT ON COLUMN payments.billing_settings.final_status IS 'What a subscription becomes when the last retry fails: unpaid or canceled.';
SELECT pg_catalog.pg_extension_config_dump('payments.billing_settings', '');

CREATE TABLE payments.invoice_numbers (
    year integer PRIMARY KEY,
    last bigint NOT NULL CHECK (last >= 0)
);
COMMENT ON TABLE payments.invoice_numbers IS
    'The last invoice number given out each year. Its row is locked by the finalizing transaction, so numbers are gapless and never repeat (a rollback gives its number back).';
SELECT pg_catalog.pg_extension_config_dump('payments.invoice_numbers', '');

CREATE TABLE payments.invoices (
    id              text COLLATE "C" NOT NULL,
    customer_id     text COLLATE "C" NOT NULL,
    subscription_id text COLLATE "C" NOT NULL,
    period_number   integer NOT NULL,
    kind            text NOT NULL DEFAULT 'period' CHECK (kind IN ('period', 'proration', 'threshold')),
    number          text NOT NULL,
    status          text COLLATE "C" NOT NULL CHECK (payments._is_allowed('invoice_status', status)),
    currency        text COLLATE "C" NOT NULL,
    total_minor     bigint NOT NULL CHECK (total_minor >= 0),
    period_start    timestamptz NOT NULL,
    period_end      timestamptz NOT NULL,
    payment_id      text COLLATE "C",
    attempt_count   integer NOT NULL DEFAULT 0 CHECK (attempt_count >= 0),
    next_attempt_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    paid_at         timestamptz,
    PRIMARY KEY (customer_id, id),
    FOREIGN KEY (customer_id, subscription_id) REFERENCES payments.subscriptions (customer_id, id)
);
-- One period invoice per subscription period: what makes renewals idempotent.
CREATE UNIQUE INDEX invoices_period_idx ON payments.invoices (customer_id, subscription_id, period_number)
    WHERE kind = 'period';
CREATE INDEX invoices_id_idx ON payments.invoices (id);
CREATE INDEX invoices_retry_idx ON payments.invoices (next_attempt_at) WHERE status = 'open';
COMMENT ON TABLE payments.invoices IS
    'Invoices of subscription periods: open (finalized, numbered, charged), then paid, or left open for dunning; uncollectible when the subscription is canceled for it. Beside the customer (on Citus, by customer_id).';
COMMENT ON COLUMN payments.invoices.kind IS 'period: a period''s recurring fee (one per period) and the usage of the period before; proration: a plan changed within a period; threshold: usage that reached the plan''s usage threshold within a period (period_number is that period).';
COMMENT ON COLUMN payments.invoices.number IS 'YYYY-NNNNNN, gapless and unique per year in the order invoices were finalized.';
COMMENT ON COLUMN payments.invoices.payment_id IS 'The payment of the latest attempt.';
COMMENT ON COLUMN payments.invoices.next_attempt_at IS 'When run_billing retries an open invoice whose payment failed; NULL when no retry is due.';
SELECT pg_catalog.pg_extension_config_dump('payments.invoices', '');

CREATE TABLE payments.invoice_lines (
    customer_id  text COLLATE "C" NOT NULL,
    invoice_id   text COLLATE "C" NOT NULL,
    line_number  integer NOT NULL CHECK (line_number > 0),
    kind         text NOT NULL CHECK (kind IN ('recurring', 'usage', 'proration', 'credit')),
    description  text NOT NULL,
    quantity     numeric NOT NULL,
    amount_minor bigint NOT NULL,
    PRIMARY KEY (customer_id, invoice_id, line_number),
    FOREIGN KEY (customer_id, invoice_id) REFERENCES payments.invoices (customer_id, id)
);
COMMENT ON TABLE payments.invoice_lines IS 'What an invoice charges for, line by line (the recurring fee of its period, for now).';
SELECT pg_catalog.pg_extension_config_dump('payments.invoice_lines', '');

CREATE FUNCTION payments.set_dunning(retry_days integer[], final_status text DEFAULT 'unpaid',
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

CREATE FUNCTION payments._next_invoice_number(p_at timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_year integer := extract(year FROM p_at AT TIME ZONE 'UTC')::integer;
    v_last bigint;
BEGIN
    INSERT INTO payments.invoice_numbers (year, last) VALUES (v_year, 0) ON CONFLICT (year) DO NOTHING;
    UPDATE payments.invoice_numbers n SET last = n.last + 1 WHERE n.year = v_year RETURNING n.last INTO v_last;
    RETURN v_year || '-' || lpad(v_last::text, 6, '0');
END
$$;
COMMENT ON FUNCTION payments._next_invoice_number(timestamptz) IS
    'Internal: the next invoice number of the year (UTC) of p_at; the counter''s row stays locked until the caller''s transaction ends.';

CREATE FUNCTION payments._usage_lines(p_sub payments.subscriptions, p_plan payments.plans, p_from timestamptz,
                                      p_to timestamptz, p_period_number integer) RETURNS jsonb
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
            'description', (v_metered ->> 'meter') || ', ' || p_from::date || ' to ' || p_to::date));
    END LOOP;
    SELECT sum(i.total_minor), string_agg(i.number, ', ' ORDER BY i.number) INTO v_invoiced, v_numbers
    FROM payments.invoices i
    WHERE i.customer_id = p_sub.customer_id AND i.subscription_id = p_sub.id AND i.period_number = p_period_number
      AND i.kind = 'threshold';
    IF v_invoiced > 0 THEN
        v_lines := v_lines || jsonb_build_array(jsonb_build_object(
            'kind', 'credit', 'quantity', 1, 'amount_minor', -v_invoiced,
            'description', 'usage invoiced at its threshold (' || v_numbers || ')'));
    END IF;
    RETURN v_lines;
END
$$;
COMMENT ON FUNCTION payments._usage_lines(payments.subscriptions, payments.plans, timestamptz, timestamptz, integer) IS
    'Internal: the invoice lines of a subscription''s usage in [p_from, p_to), each meter priced by p_plan, less what threshold invoices of period p_period_number already billed.';

CREATE FUNCTION payments._invoice_period(p_sub payments.subscriptions, p_plan payments.plans,
                                         p_usage_plan payments.plans DEFAULT NULL, p_usage_from timestamptz DEFAULT NULL,
                                         p_usage_to timestamptz DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_invoice  payments.invoices%ROWTYPE;
    v_credit   bigint;
    v_lines    jsonb;
    v_total    bigint;
BEGIN
    -- The caller holds the subscription's row lock; the period's invoice is made once.
    SELECT * INTO v_invoice FROM payments.invoices i
    WHERE i.customer_id = p_sub.customer_id AND i.subscription_id = p_sub.id AND i.period_number = p_sub.period_number
      AND i.kind = 'period';
    IF FOUND THEN
        RETURN v_invoice.id;
    END IF;
    v_lines := jsonb_build_array(jsonb_build_object(
        'kind', 'recurring', 'amount_minor', p_plan.amount_minor, 'quantity', 1,
        'description', coalesce(p_plan.name, p_plan.code) || ', period ' || p_sub.period_number));
    -- The usage of the period that just closed, in arrears, less what its thresholds invoiced.
    IF p_usage_from IS NOT NULL THEN
        v_lines := v_lines || payments._usage_lines(p_sub, p_usage_plan, p_usage_from, p_usage_to, p_sub.period_number - 1);
    END IF;
    -- What a downgrade left is taken off, up to the total.
    SELECT sum((l ->> 'amount_minor')::bigint) INTO v_total FROM jsonb_array_elements(v_lines) l;
    v_credit := least(coalesce(p_sub.credit_minor, 0), v_total);
    IF v_credit > 0 THEN
        v_lines := v_lines || jsonb_build_array(jsonb_build_object(
            'kind', 'credit', 'amount_minor', -v_credit, 'quantity', 1, 'description', 'credit from a plan change'));
    END IF;
    RETURN payments._issue_invoice(p_sub, 'period', p_plan.currency, v_lines, v_credit);
END
$$;
COMMENT ON FUNCTION payments._invoice_period(payments.subscriptions, payments.plans, payments.plans, timestamptz, timestamptz) IS
    'Internal: the invoice of a subscription''s current period, made, numbered and charged once (nothing to pay: paid at once): the plan''s fee in advance, the usage of [p_usage_from, p_usage_to) under p_usage_plan''s metered prices in arrears, less the subscription''s credit. The caller holds the subscription''s row lock.';

CREATE FUNCTION payments._invoice_event(p_invoice payments.invoices, p_previous text) RETURNS void
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

CREATE FUNCTION payments._issue_invoice(p_sub payments.subscriptions, p_kind text, p_currency text, p_lines jsonb,
                                        p_credit_used bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_id      text := payments._new_id('inv');
    v_invoice payments.invoices%ROWTYPE;
    v_line    record;
    v_total   bigint;
BEGIN
    SELECT greatest(sum((l ->> 'amount_minor')::bigint), 0) INTO v_total FROM jsonb_array_elements(p_lines) l;
    INSERT INTO payments.invoices (id, customer_id, subscription_id, period_number, kind, number, status, currency,
                                   total_minor, period_start, period_end)
    VALUES (v_id, p_sub.customer_id, p_sub.id, p_sub.period_number, p_kind, payments._next_invoice_number(now()), 'open',
            p_currency, v_total, p_sub.current_period_start, p_sub.current_period_end)
    RETURNING * INTO v_invoice;
    PERFORM payments._invoice_event(v_invoice, NULL);
    FOR v_line IN SELECT l.value, l.ordinality FROM jsonb_array_elements(p_lines) WITH ORDINALITY l LOOP
        INSERT INTO payments.invoice_lines (customer_id, invoice_id, line_number, kind, description, quantity, amount_minor)
        VALUES (p_sub.customer_id, v_id, v_line.ordinality, v_line.value ->> 'kind', v_line.value ->> 'description',
                coalesce((v_line.value ->> 'quantity')::numeric, 1), (v_line.value ->> 'amount_minor')::bigint);
    END LOOP;
    IF p_credit_used > 0 THEN
        UPDATE payments.subscriptions s SET credit_minor = s.credit_minor - p_credit_used
        WHERE s.customer_id = p_sub.customer_id AND s.id = p_sub.id;
    END IF;
    PERFORM payments._charge_invoice(v_invoice, p_sub);
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION payments._issue_invoice(payments.subscriptions, text, text, jsonb, bigint) IS
    'Internal: makes, numbers and charges an invoice of lines ([{kind, description, amount_minor}]; the total is their sum, at least 0) for a subscription whose row the caller has locked, using p_credit_used of its credit.';

CREATE FUNCTION payments._charge_invoice(p_invoice payments.invoices, p_sub payments.subscriptions) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_attempt integer := p_invoice.attempt_count + 1;
    v_payment text;
    v_paid    payments.invoices%ROWTYPE;
BEGIN
    IF p_invoice.total_minor = 0 THEN
        UPDATE payments.invoices i SET status = 'paid', paid_at = now()
        WHERE i.customer_id = p_invoice.customer_id AND i.id = p_invoice.id
        RETURNING * INTO v_paid;
        PERFORM payments._invoice_event(v_paid, p_invoice.status);
        RETURN;
    END IF;
    -- One payment per attempt, its key derived from the subscription, period and attempt
    -- (a proration's from its invoice).
    SELECT p.id INTO v_payment FROM payments.create_payment(
        CASE p_invoice.kind WHEN 'period' THEN 'invoice:' || p_sub.id || ':' || p_invoice.period_number
                            ELSE 'invoice:' || p_invoice.id END || ':' || v_attempt, p_invoice.customer_id,
        payments.to_major(p_invoice.total_minor, p_invoice.currency), p_invoice.currency, p_sub.payment_method,
        'Invoice ' || p_invoice.number, jsonb_build_object('invoice_id', p_invoice.id, 'subscription_id', p_sub.id)) p;
    UPDATE payments.invoices i SET payment_id = v_payment, next_attempt_at = NULL
    WHERE i.customer_id = p_invoice.customer_id AND i.id = p_invoice.id;
    IF p_sub.payment_method IS NULL THEN
        -- Nothing to charge: a failed attempt at once.
        PERFORM payments._invoice_payment_settled(p_invoice.customer_id, v_payment, 'failed');
    END IF;
END
$$;
COMMENT ON FUNCTION payments._charge_invoice(payments.invoices, payments.subscriptions) IS
    'Internal: the next attempt at an invoice: a payment for its total (key invoice:<subscription>:<period>:<attempt>, metadata invoice_id) that the gateway charges; without a payment method, a failed attempt.';

CREATE FUNCTION payments._invoice_payment_settled(p_customer_id text, p_payment_id text, p_status text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_invoice  payments.invoices%ROWTYPE;
    v_settled  payments.invoices%ROWTYPE;
    v_sub      payments.subscriptions%ROWTYPE;
    v_from     text;
    v_settings record;
BEGIN
    SELECT * INTO v_invoice FROM payments.invoices i
    WHERE i.customer_id = p_customer_id AND i.payment_id = p_payment_id AND i.status = 'open' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;  -- an earlier attempt's payment, or an invoice already settled
    END IF;
    SELECT * INTO v_sub FROM payments.subscriptions s
    WHERE s.customer_id = p_customer_id AND s.id = v_invoice.subscription_id FOR UPDATE;
    v_from := v_sub.status;
    IF p_status = 'succeeded' THEN
        UPDATE payments.invoices i SET status = 'paid', paid_at = now(), next_attempt_at = NULL
        WHERE i.customer_id = p_customer_id AND i.id = v_invoice.id
        RETURNING * INTO v_settled;
        IF v_sub.status IN ('incomplete', 'past_due', 'unpaid') THEN
            v_sub.status := 'active';
        END IF;
    ELSE
        SELECT coalesce((SELECT b.retry_days FROM payments.billing_settings b), '{1,3,5}') AS retry_days,
               coalesce((SELECT b.final_status FROM payments.billing_settings b), 'unpaid') AS final_status
        INTO v_settings;
        UPDATE payments.invoices i
        SET attempt_count = v_invoice.attempt_count + 1,
            next_attempt_at = now() + v_settings.retry_days[v_invoice.attempt_count + 1] * interval '1 day',
            status = CASE WHEN v_invoice.attempt_count + 1 > cardinality(v_settings.retry_days)
                               AND v_settings.final_status = 'canceled' THEN 'uncollectible' ELSE 'open' END
        WHERE i.customer_id = p_customer_id AND i.id = v_invoice.id
        RETURNING * INTO v_settled;
        IF v_invoice.attempt_count + 1 > cardinality(v_settings.retry_days) THEN
            v_sub.status := CASE WHEN v_sub.status = 'incomplete' THEN 'canceled' ELSE v_settings.final_status END;
            v_sub.canceled_at := CASE WHEN v_sub.status = 'canceled' THEN now() END;
        ELSIF v_sub.status IN ('active', 'trialing') THEN
            v_sub.status := 'past_due';
        END IF;
    END IF;
    PERFORM payments._invoice_event(v_settled, v_invoice.status);
    IF v_sub.status IS DISTINCT FROM v_from THEN
        PERFORM payments._set_subscription(v_sub, v_from, 'invoice ' || v_invoice.number || ' ' || p_status,
                                           jsonb_build_object('invoice_id', v_invoice.id, 'payment_id', p_payment_id));
    END IF;
END
$$;
COMMENT ON FUNCTION payments._invoice_payment_settled(text, text, text) IS
    'Internal: an invoice payment reached succeeded or failed: the invoice is paid (and an incomplete, past_due or unpaid subscription active again), or its failed attempt is counted and the next scheduled (the subscription past_due; after the last, unpaid or canceled as set_dunning says).';

CREATE FUNCTION payments.run_billing(at timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_due      record;
    v_sub      payments.subscriptions%ROWTYPE;
    v_plan     payments.plans%ROWTYPE;
    v_used_plan payments.plans%ROWTYPE;
    v_used_from timestamptz;
    v_invoice  payments.invoices%ROWTYPE;
    v_from     text;
    v_renewed  integer := 0;
    v_ended    integer := 0;
    v_retried  integer := 0;
    v_thresholds integer := 0;
    v_threshold_plans text[];
    v_lines    jsonb;
BEGIN
    IF at IS NULL THEN
        RAISE EXCEPTION 'at is required' USING ERRCODE = 'PM100';
    END IF;
    -- 1. Periods that ended: canceled at their end, or renewed (possibly several periods
    -- behind: each pass of the loop moves a subscription one period on).
    FOR v_due IN
        SELECT s.customer_id, s.id FROM payments.subscriptions s
        WHERE s.status IN ('trialing', 'active', 'past_due') AND s.current_period_end <= at
        ORDER BY s.current_period_end LIMIT 1000
    LOOP
        LOOP
            SELECT * INTO v_sub FROM payments.subscriptions s
            WHERE s.customer_id = v_due.customer_id AND s.id = v_due.id
              AND s.status IN ('trialing', 'active', 'past_due') AND s.current_period_end <= at
            FOR UPDATE SKIP LOCKED;
            EXIT WHEN NOT FOUND;
            v_from := v_sub.status;
            IF v_sub.cancel_at_period_end THEN
                v_sub.status := 'canceled';
                v_sub.canceled_at := v_sub.current_period_end;
                PERFORM payments._set_subscription(v_sub, v_from, 'canceled at period end', '{}');
                v_ended := v_ended + 1;
                EXIT;
            END IF;
            -- The closed period's usage is billed at the plan it was used under.
            SELECT * INTO v_used_plan FROM payments.plans p WHERE p.code = v_sub.plan;
            -- (A trial's usage is not billed.)
            v_used_from := CASE WHEN v_sub.period_number > 0 THEN v_sub.current_period_start END;
            -- A plan change asked for at period end starts with the new period.
            v_sub.plan := coalesce(v_sub.pending_plan, v_sub.plan);
            SELECT * INTO v_plan FROM payments.plans p WHERE p.code = v_sub.plan;
            v_sub.period_number := v_sub.period_number + 1;
            v_sub.current_period_start := v_sub.current_period_end;
            v_sub.current_period_end := payments._period_end(v_plan, v_sub.billing_anchor, v_sub.period_number);
            v_sub.status := CASE WHEN v_sub.status = 'trialing' THEN 'active' ELSE v_sub.status END;
            UPDATE payments.subscriptions s
            SET period_number = v_sub.period_number, current_period_start = v_sub.current_period_start,
                current_period_end = v_sub.current_period_end, status = v_sub.status, plan = v_sub.plan,
                pending_plan = NULL, updated_at = now()
            WHERE s.customer_id = v_sub.customer_id AND s.id = v_sub.id;
            PERFORM payments._subscription_event(v_sub, v_from, 'renewed',
                                                 jsonb_build_object('period_number', v_sub.period_number, 'plan', v_sub.plan,
                                                                    'period_start', v_sub.current_period_start));
            PERFORM payments._invoice_period(v_sub, v_plan, v_used_plan, v_used_from, v_sub.current_period_start);
            v_renewed := v_renewed + 1;
        END LOOP;
    END LOOP;
    -- 2. Dunning: failed invoices whose retry is due.
    FOR v_due IN
        SELECT i.customer_id, i.id FROM payments.invoices i
        WHERE i.status = 'open' AND i.next_attempt_at <= at ORDER BY i.next_attempt_at LIMIT 1000
    LOOP
        SELECT * INTO v_invoice FROM payments.invoices i
        WHERE i.customer_id = v_due.customer_id AND i.id = v_due.id AND i.status = 'open' AND i.next_attempt_at <= at
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        SELECT * INTO v_sub FROM payments.subscriptions s
        WHERE s.customer_id = v_invoice.customer_id AND s.id = v_invoice.subscription_id;
        PERFORM payments._charge_invoice(v_invoice, v_sub);
        v_retried := v_retried + 1;
    END LOOP;
    -- 3. Threshold billing: usage of the open period that reached its plan's threshold
    -- beyond what the period invoiced, invoiced now (under the subscription's lock: once).
    -- The plans first: on Citus, joining the reference table to every shard after this
    -- transaction's writes is refused.
    SELECT array_agg(p.code) INTO v_threshold_plans FROM payments.plans p WHERE p.usage_threshold_minor IS NOT NULL;
    FOR v_due IN
        SELECT s.customer_id, s.id FROM payments.subscriptions s
        WHERE s.plan = ANY (v_threshold_plans) AND s.status IN ('active', 'past_due') AND s.period_number > 0
          AND s.current_period_start < at AND s.current_period_end > at
        ORDER BY s.customer_id, s.id LIMIT 1000
    LOOP
        SELECT * INTO v_sub FROM payments.subscriptions s
        WHERE s.customer_id = v_due.customer_id AND s.id = v_due.id AND s.status IN ('active', 'past_due')
          AND s.current_period_start < at AND s.current_period_end > at
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        SELECT * INTO v_plan FROM payments.plans p WHERE p.code = v_sub.plan;
        v_lines := payments._usage_lines(v_sub, v_plan, v_sub.current_period_start, at, v_sub.period_number);
        IF (SELECT sum((l ->> 'amount_minor')::bigint) FROM jsonb_array_elements(v_lines) l) >= v_plan.usage_threshold_minor THEN
            PERFORM payments._issue_invoice(v_sub, 'threshold', v_plan.currency, v_lines, 0);
            v_thresholds := v_thresholds + 1;
        END IF;
    END LOOP;
    RETURN jsonb_build_object('renewed', v_renewed, 'ended', v_ended, 'retried', v_retried, 'thresholds', v_thresholds);
END
$$;
COMMENT ON FUNCTION payments.run_billing(timestamptz) IS
    'Does everything billing has due at time at: subscriptions canceled at period end end; trialing, active and past_due ones whose period ended move to the next (a trial becomes active) with an invoice for it, charged through a payment keyed by subscription, period and attempt; failed invoices are retried on the dunning schedule (set_dunning); usage that reached its plan''s usage threshold within the open period is invoiced at once (the period''s end invoices the rest). Returns {"renewed", "ended", "retried", "thresholds"}. Safe to run twice or from two places at once (rows are claimed with SKIP LOCKED and each period is invoiced once). The gateway runs it on a timer.';

CREATE FUNCTION payments.set_subscription_payment_method(id text, payment_method text)
RETURNS SETOF payments.subscription_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_customer text;
    v_sub      payments.subscriptions%ROWTYPE;
    v_invoice  payments.invoices%ROWTYPE;
    v_status   text;
BEGIN
    IF payment_method IS NULL OR length(payment_method) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'payment_method must be 1 to 255 characters' USING ERRCODE = 'PM100';
    END IF;
    -- Lock order as an invoice payment's outcome takes it: the open invoices, then the subscription.
    SELECT s.customer_id INTO v_customer FROM payments.subscriptions s WHERE s.id = set_subscription_payment_method.id;
    PERFORM 1 FROM payments.invoices i
    WHERE i.customer_id = v_customer AND i.subscription_id = set_subscription_payment_method.id AND i.status = 'open'
    FOR UPDATE;
    v_sub := payments._locked_subscription(set_subscription_payment_method.id);
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
        UPDATE payments.invoices i SET next_attempt_at = now()
        WHERE i.customer_id = v_invoice.customer_id AND i.id = v_invoice.id;
    END LOOP;
    PERFORM payments._subscription_event(v_sub, v_sub.status, 'payment method changed', '{}');
    RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'applied');
END
$$;
COMMENT ON FUNCTION payments.set_subscription_payment_method(text, text) IS
    'Sets the payment method a subscription''s invoices are charged with; an open invoice waiting for its retry is retried at the next run_billing.';

CREATE VIEW payments.invoice_details AS
SELECT i.id, i.customer_id, i.subscription_id, i.number, i.status, payments.to_major(i.total_minor, i.currency) AS total,
       i.total_minor, i.currency, i.period_start, i.period_end, i.payment_id, i.attempt_count, i.next_attempt_at,
       i.created_at, i.paid_at
FROM payments.invoices i;
COMMENT ON VIEW payments.invoice_details IS 'Every invoice with its total in major units; readable by payments_reader.';

CREATE FUNCTION payments.get_invoice(id text) RETURNS SETOF payments.invoice_details
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY SELECT * FROM payments.invoice_details d WHERE d.id = get_invoice.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invoice % not found', payments._shown(get_invoice.id) USING ERRCODE = 'PM204';
    END IF;
END
$$;
COMMENT ON FUNCTION payments.get_invoice(text) IS 'One invoice by id; PM204 when there is none.';

CREATE FUNCTION payments.list_invoice_lines(invoice_id text)
RETURNS TABLE (line_number integer, kind text, description text, quantity numeric, amount numeric, amount_minor bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_invoice payments.invoice_details%ROWTYPE;
BEGIN
    SELECT * INTO v_invoice FROM payments.get_invoice(list_invoice_lines.invoice_id);
    RETURN QUERY
    SELECT l.line_number, l.kind, l.description, l.quantity, payments.to_major(l.amount_minor, v_invoice.currency),
           l.amount_minor
    FROM payments.invoice_lines l
    WHERE l.customer_id = v_invoice.customer_id AND l.invoice_id = v_invoice.id
    ORDER BY l.line_number;
END
$$;
COMMENT ON FUNCTION payments.list_invoice_lines(text) IS 'An invoice''s lines in order, amounts in major and minor units; PM204 for an unknown invoice.';

-- ---------------------------------------------------------------------------
-- Receipts
-- ---------------------------------------------------------------------------
CREATE FUNCTION payments.receipt(payment_id text) RETURNS jsonb
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
    IF v_payment.metadata ? 'invoice_id' THEN
        SELECT * INTO v_invoice FROM payments.invoice_details i
        WHERE i.customer_id = v_payment.customer_id AND i.id = v_payment.metadata ->> 'invoice_id';
    END IF;
    RETURN jsonb_build_object(
        'object', 'receipt', 'payment_id', v_payment.id, 'customer_id', v_payment.customer_id,
        'amount', v_payment.amount_captured::text, 'amount_minor', v_payment.amount_captured_minor,
        'currency', v_payment.currency, 'amount_refunded', v_payment.amount_refunded::text,
        'paid_at', v_paid_at, 'description', v_payment.description,
        'payment_method', v_payment.payment_method, 'provider', v_payment.provider,
        'provider_payment_id', v_payment.provider_payment_id, 'refunds', v_refunds,
        'invoice', CASE WHEN v_invoice.id IS NOT NULL THEN
                        jsonb_build_object('id', v_invoice.id, 'number', v_invoice.number) END);
END
$$;
COMMENT ON FUNCTION payments.receipt(text) IS
    'A succeeded payment''s receipt as JSON: what was captured (amounts as exact decimal strings), when, how, the succeeded refunds, and its invoice when it paid one. PM204 for an unknown payment, PM206 for one that did not succeed.';

-- ---------------------------------------------------------------------------
-- Plan changes
-- ---------------------------------------------------------------------------
CREATE FUNCTION payments.change_plan(id text, plan text, prorate boolean DEFAULT true, at timestamptz DEFAULT now())
RETURNS SETOF payments.subscription_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_sub      payments.subscriptions%ROWTYPE := payments._locked_subscription(change_plan.id);
    v_old      payments.plans%ROWTYPE;
    v_new      payments.plans%ROWTYPE;
    v_left     numeric;
    v_credit   bigint;
    v_charge   bigint;
BEGIN
    IF prorate IS NULL OR at IS NULL THEN
        RAISE EXCEPTION 'prorate and at are required' USING ERRCODE = 'PM100';
    END IF;
    SELECT * INTO v_new FROM payments.plans p WHERE p.code = change_plan.plan;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'plan % not found', quote_nullable(payments._shown(change_plan.plan)) USING ERRCODE = 'PM204';
    END IF;
    SELECT * INTO v_old FROM payments.plans p WHERE p.code = v_sub.plan;
    IF v_sub.status NOT IN ('trialing', 'active', 'past_due') OR v_new.archived_at IS NOT NULL THEN
        RAISE EXCEPTION 'subscription % is % (or plan % is archived): its plan cannot change', v_sub.id, v_sub.status,
            v_new.code USING ERRCODE = 'PM206';
    END IF;
    IF v_new.currency <> v_old.currency THEN
        RAISE EXCEPTION 'plan % is in %, the subscription in %: a plan change keeps the currency', v_new.code,
            v_new.currency, v_old.currency USING ERRCODE = 'PM100';
    END IF;
    IF v_new.code = v_sub.plan AND v_sub.pending_plan IS NULL THEN
        RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'noop');
        RETURN;
    END IF;
    IF NOT prorate THEN
        UPDATE payments.subscriptions s
        SET pending_plan = CASE WHEN v_new.code = s.plan THEN NULL ELSE v_new.code END, updated_at = now()
        WHERE s.customer_id = v_sub.customer_id AND s.id = v_sub.id;
        PERFORM payments._subscription_event(v_sub, v_sub.status, 'plan change at period end',
                                             jsonb_build_object('from', v_old.code, 'to', v_new.code));
        RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'applied');
        RETURN;
    END IF;
    UPDATE payments.subscriptions s SET plan = v_new.code, pending_plan = NULL, updated_at = now()
    WHERE s.customer_id = v_sub.customer_id AND s.id = v_sub.id;
    PERFORM payments._subscription_event(v_sub, v_sub.status, 'plan changed',
                                         jsonb_build_object('from', v_old.code, 'to', v_new.code, 'at', at));
    -- A trial has nothing to prorate. Otherwise the unused share of the period is credited at
    -- the old price and charged at the new one, each rounded to a minor unit, as Stripe does.
    IF v_sub.status <> 'trialing' AND at < v_sub.current_period_end THEN
        v_left := greatest(0, least(1, extract(epoch FROM v_sub.current_period_end - greatest(at, v_sub.current_period_start))
                                       / extract(epoch FROM v_sub.current_period_end - v_sub.current_period_start)));
        v_credit := round(v_old.amount_minor * v_left);
        v_charge := round(v_new.amount_minor * v_left);
        IF v_charge > v_credit THEN
            PERFORM payments._issue_invoice(v_sub, 'proration', v_new.currency, jsonb_build_array(
                jsonb_build_object('kind', 'credit', 'amount_minor', -v_credit,
                                   'description', 'unused time on ' || coalesce(v_old.name, v_old.code)),
                jsonb_build_object('kind', 'proration', 'amount_minor', v_charge,
                                   'description', 'remaining time on ' || coalesce(v_new.name, v_new.code))), 0);
        ELSIF v_credit > v_charge THEN
            -- A downgrade: what is left over is taken off the next invoices.
            UPDATE payments.subscriptions s SET credit_minor = s.credit_minor + (v_credit - v_charge)
            WHERE s.customer_id = v_sub.customer_id AND s.id = v_sub.id;
        END IF;
    END IF;
    RETURN QUERY SELECT * FROM payments._subscription_result(v_sub.customer_id, v_sub.id, 'applied');
END
$$;
COMMENT ON FUNCTION payments.change_plan(text, text, boolean, timestamptz) IS
    'Moves a trialing, active or past_due subscription to another plan in the same currency (PM206 for another status or an archived plan; PM100 for another currency). prorate (default): at once, the unused share of the period credited at the old price and charged at the new one (rounded to minor units) — an upgrade is invoiced and charged now, a downgrade''s difference is taken off the next invoices; the new plan''s limits apply at once. Without prorate: at the end of the period. The same plan again is a noop.';
