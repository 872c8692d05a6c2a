-- payments: disputes (chargebacks). They start at the customer's bank, so
-- only the provider's webhooks create and move them; each is checked against
-- its payment (provider object, currency, no more than was captured).

CREATE OR REPLACE VIEW payments.dispute_details WITH (security_invoker) AS
SELECT d.id, d.customer_id, d.payment_id, payments.to_major(d.amount_minor, d.currency) AS amount, d.amount_minor,
       d.currency, d.status, d.reason, d.evidence_due_by, d.provider, d.provider_dispute_id, d.created_at, d.updated_at
FROM payments.disputes d;
COMMENT ON VIEW payments.dispute_details IS
    'Every dispute with its amount in major units beside the minor units. What get_dispute and list_disputes return; readable by payments_reader.';

CREATE OR REPLACE FUNCTION payments.get_dispute(id text) RETURNS SETOF payments.dispute_details
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- Read once, here: inside the query Citus would send it to the shards.
    v_bound text := payments._bound_customer();
BEGIN
    RETURN QUERY SELECT * FROM payments.dispute_details d
    WHERE d.id = get_dispute.id AND d.customer_id = coalesce(v_bound, d.customer_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'dispute % not found', payments._shown(get_dispute.id) USING ERRCODE = 'PM204';
    END IF;
END
$$;
COMMENT ON FUNCTION payments.get_dispute(text) IS 'One dispute by id; PM204 when there is none.';

CREATE OR REPLACE FUNCTION payments.list_disputes(payment_id text DEFAULT NULL, status text DEFAULT NULL, lim int DEFAULT 10,
                                       starting_after text DEFAULT NULL)
RETURNS SETOF payments.dispute_details
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_customer text;
BEGIN
    IF lim IS NULL OR lim NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'lim must be between 1 and 100' USING ERRCODE = 'PM100';
    END IF;
    IF list_disputes.status IS NOT NULL AND NOT payments._is_allowed('dispute_status', list_disputes.status) THEN
        RAISE EXCEPTION 'unknown dispute status %', quote_literal(payments._shown(list_disputes.status))
            USING ERRCODE = 'PM100', HINT = 'SELECT * FROM payments.allowed_values() WHERE kind = ''dispute_status''';
    END IF;
    IF list_disputes.payment_id IS NOT NULL THEN
        v_customer := payments._customer_of(list_disputes.payment_id);
    END IF;
    -- A login bound to one customer sees that customer's disputes only.
    v_customer := coalesce(payments._bound_customer(), v_customer);
    RETURN QUERY SELECT * FROM payments.dispute_details d
    WHERE (list_disputes.payment_id IS NULL OR d.payment_id = list_disputes.payment_id)
      AND (v_customer IS NULL OR d.customer_id = v_customer)
      AND (list_disputes.status IS NULL OR d.status = list_disputes.status)
      AND (starting_after IS NULL OR d.id < starting_after)
    ORDER BY d.id DESC LIMIT lim;
END
$$;
COMMENT ON FUNCTION payments.list_disputes(text, text, int, text) IS
    'Disputes newest first (of one payment, in one status, when given), lim (1 to 100) at a time; starting_after: the last id of the previous page.';

CREATE OR REPLACE FUNCTION payments._dispute_event(p_dispute payments.disputes, p_status text, p_previous text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM payments._emit(p_dispute.customer_id, 'dispute', p_dispute.id, p_status, p_previous, p_previous IS NULL,
                           jsonb_build_object('payment_id', p_dispute.payment_id, 'amount_minor', p_dispute.amount_minor,
                                              'currency', p_dispute.currency, 'reason', p_dispute.reason));
END
$$;
COMMENT ON FUNCTION payments._dispute_event(payments.disputes, text, text) IS
    'Internal: tells apps a dispute was opened (p_previous NULL) or moved to p_status. The caller holds its payment''s row lock.';

CREATE OR REPLACE FUNCTION payments._apply_dispute_object(p_payment payments.payments, p_evidence jsonb, p_source text,
                                               p_event_id text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_dispute  payments.disputes%ROWTYPE;
    v_to       text := p_evidence ->> 'status';
    v_did      text := p_evidence ->> 'id';
    v_ppid     text := p_evidence ->> 'provider_payment_id';
    v_amount   text := p_evidence ->> 'amount';
    v_observed jsonb := jsonb_strip_nulls(jsonb_build_object(
        'dispute', v_did, 'amount', p_evidence -> 'amount', 'currency', p_evidence -> 'currency',
        'provider_payment_id', v_ppid, 'status', v_to, 'webhook_event_id', p_event_id));
    v_problem  text;
    v_decision text;
    v_withheld bigint;
    v_was_withheld bigint;
    v_others   bigint;
BEGIN
    -- The caller holds the payment's row lock.
    IF v_did IS NULL OR length(v_did) > 255 OR NOT coalesce(payments._is_allowed('dispute_status', v_to), false) THEN
        RETURN 'ignored';
    END IF;
    SELECT * INTO v_dispute FROM payments.disputes d
    WHERE d.customer_id = p_payment.customer_id AND d.provider = p_payment.provider AND d.provider_dispute_id = v_did;
    -- What the payment's other disputes hold (all but those the merchant won or that closed as inquiries).
    SELECT coalesce(sum(d.amount_minor), 0) INTO v_others FROM payments.disputes d
    WHERE d.customer_id = p_payment.customer_id AND d.payment_id = p_payment.id AND d.provider_dispute_id <> v_did
      AND d.status NOT IN ('won', 'warning_closed');
    IF v_ppid IS DISTINCT FROM p_payment.provider_payment_id
       OR (v_dispute.id IS NOT NULL AND v_dispute.payment_id <> p_payment.id) THEN
        v_problem := 'provider_payment_mismatch';
    ELSIF upper(p_evidence ->> 'currency') IS DISTINCT FROM p_payment.currency THEN
        v_problem := 'currency_mismatch';
    ELSIF v_amount IS NULL OR v_amount !~ '^[1-9][0-9]{0,17}$'
          OR v_amount::bigint + v_others > coalesce(p_payment.amount_captured_minor, 0)
          OR (v_dispute.id IS NOT NULL AND v_amount::bigint <> v_dispute.amount_minor) THEN
        v_problem := 'amount_mismatch';
    END IF;
    IF v_problem IS NOT NULL THEN
        PERFORM payments._record_anomaly(p_payment.customer_id, p_payment.id, v_problem, p_source, p_payment.provider,
                                         v_ppid, v_observed);
        RETURN 'mismatch';
    END IF;
    IF v_dispute.id IS NULL THEN
        INSERT INTO payments.disputes (id, customer_id, payment_id, provider, provider_dispute_id, amount_minor, currency,
                                       status, reason, evidence_due_by)
        VALUES (payments._new_id('dsp'), p_payment.customer_id, p_payment.id, p_payment.provider, v_did,
                v_amount::bigint, p_payment.currency, v_to, left(p_evidence ->> 'reason', 255),
                payments._unix_time((p_evidence ->> 'due_by')::bigint))
        RETURNING * INTO v_dispute;
        v_decision := 'applied';
        PERFORM payments._dispute_event(v_dispute, v_to, NULL);
    ELSE
        v_decision := payments._dispute_decision(v_dispute.status, v_to);
        IF v_decision = 'applied' THEN
            UPDATE payments.disputes d SET status = v_to, updated_at = now()
            WHERE d.customer_id = v_dispute.customer_id AND d.id = v_dispute.id;
            PERFORM payments._dispute_event(v_dispute, v_to, v_dispute.status);
        END IF;
    END IF;
    IF v_decision = 'applied' THEN
        -- What the payment shows as disputed: the amounts its disputes withhold.
        SELECT coalesce(sum(d.amount_minor), 0) INTO v_withheld FROM payments.disputes d
        WHERE d.customer_id = p_payment.customer_id AND d.payment_id = p_payment.id AND payments._dispute_withholds(d.status);
        SELECT p.amount_disputed_minor INTO v_was_withheld FROM payments.payments p
        WHERE p.customer_id = p_payment.customer_id AND p.id = p_payment.id;
        UPDATE payments.payments p SET amount_disputed_minor = v_withheld, updated_at = now()
        WHERE p.customer_id = p_payment.customer_id AND p.id = p_payment.id;
        -- The ledger: what disputes withhold left the provider's hands (a won dispute brings it back).
        PERFORM payments._move(p_payment.customer_id, 'dispute', v_dispute.id, p_payment.currency,
                               v_withheld - v_was_withheld, 'disputes', 'provider_clearing');
    END IF;
    IF v_decision <> 'noop' THEN
        PERFORM payments._payment_note(p_payment, v_decision = 'applied', p_source,
                                      CASE v_decision WHEN 'applied' THEN 'dispute ' || v_to
                                           ELSE 'stale: dispute ' || v_dispute.status || ' does not move to ' || v_to END,
                                      jsonb_build_object('dispute_id', v_dispute.id, 'provider_dispute_id', v_did,
                                                         'amount_minor', v_dispute.amount_minor,
                                                         'reason', v_dispute.reason, 'webhook_event_id', p_event_id));
    END IF;
    RETURN v_decision;
END
$$;
COMMENT ON FUNCTION payments._apply_dispute_object(payments.payments, jsonb, text, text) IS
    'Internal: applies a dispute''s evidence record to its payment: creates the dispute the first time, then moves it under its state machine; keeps the payment''s amount_disputed (what open and lost disputes withhold) and notes each step in its history. Another payment''s dispute, another currency, or more than was captured (with the payment''s other disputes not won) is an anomaly (mismatch). Returns applied | noop | stale | ignored | mismatch. The caller holds the payment''s row lock.';
