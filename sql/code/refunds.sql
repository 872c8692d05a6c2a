-- payments: refunds. create_refund validates and records a pending refund and
-- queues its provider call in the outbox (sql/code/provider_commands.sql), in the caller's
-- transaction; the provider's answer and its webhooks move the refund, each
-- checked against it (its provider object, amount and currency) as payments are.
-- A payment's refunds never add up to more than it captured: create_refund
-- holds the payment's row lock while it sums them.

CREATE OR REPLACE VIEW payments.refund_details WITH (security_invoker) AS
SELECT r.id, r.customer_id, r.payment_id, payments.to_major(r.amount_minor, r.currency) AS amount, r.amount_minor,
       r.currency, r.status, r.reason, r.provider, r.provider_refund_id, r.failure_reason, r.created_at, r.updated_at
FROM payments.refunds r;
COMMENT ON VIEW payments.refund_details IS
    'Every refund with its amount in major units beside the minor units, without its idempotency fingerprint. What get_refund and list_refunds return; readable by payments_reader.';
COMMENT ON TYPE payments.refund_result IS
    'A refund as create_refund leaves it, plus outcome: created (a new refund, its provider call queued) or replayed (the same idempotency key and parameters again).';

CREATE OR REPLACE FUNCTION payments._refund_result(p_customer_id text, p_refund_id text, p_outcome text)
RETURNS SETOF payments.refund_result
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY SELECT d.*, p_outcome FROM payments.refund_details d
    WHERE d.customer_id = p_customer_id AND d.id = p_refund_id;
END
$$;
COMMENT ON FUNCTION payments._refund_result(text, text, text) IS 'Internal: a refund as a refund_result row with the call''s outcome.';

CREATE OR REPLACE FUNCTION payments._refundable_minor(p_payment payments.payments) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_held bigint;
BEGIN
    SELECT coalesce(sum(r.amount_minor), 0) INTO v_held FROM payments.refunds r
    WHERE r.customer_id = p_payment.customer_id AND r.payment_id = p_payment.id AND r.status IN ('pending', 'succeeded');
    RETURN coalesce(p_payment.amount_captured_minor, 0) - v_held - p_payment.amount_disputed_minor;
END
$$;
COMMENT ON FUNCTION payments._refundable_minor(payments.payments) IS
    'Internal: what is left to refund of a payment, in minor units: what it captured (nothing before it succeeded) less its pending and succeeded refunds and what its disputes withhold (open or lost: that money went back through the bank). Read under the payment''s row lock, it cannot change until the caller commits.';

CREATE OR REPLACE FUNCTION payments.create_refund(idempotency_key text, payment_id text, amount numeric DEFAULT NULL,
                                       reason text DEFAULT NULL)
RETURNS SETOF payments.refund_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_payment  payments.payments%ROWTYPE;
    v_minor    bigint;
    v_fp       bytea;
    v_existing payments.refunds%ROWTYPE;
    v_left     bigint;
    v_id       text := payments._new_id('rfd');
BEGIN
    IF idempotency_key IS NULL OR length(idempotency_key) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'idempotency_key must be 1 to 255 characters' USING ERRCODE = 'PM100';
    END IF;
    IF reason IS NOT NULL AND (reason = 'expired_uncaptured_charge' OR NOT payments._is_allowed('refund_reason', reason)) THEN
        RAISE EXCEPTION 'reason must be duplicate, fraudulent or requested_by_customer, not %',
            quote_literal(payments._shown(reason)) USING ERRCODE = 'PM100';
    END IF;
    -- The payment's row lock serialises its refunds: the sum below cannot change under us.
    v_payment := payments._locked_payment(create_refund.payment_id);
    IF amount IS NOT NULL THEN
        v_minor := payments.to_minor(amount, v_payment.currency);
    END IF;
    v_fp := sha256(convert_to(jsonb_build_array(v_payment.id, v_minor, reason)::text, 'UTF8'));
    -- A replay answers as the first call did, whatever happened since.
    SELECT * INTO v_existing FROM payments.refunds r
    WHERE r.customer_id = v_payment.customer_id AND r.idempotency_key = create_refund.idempotency_key;
    IF FOUND THEN
        RETURN QUERY SELECT * FROM payments._replayed_refund(v_existing, v_fp);
        RETURN;
    END IF;
    IF v_payment.status <> 'succeeded' OR v_payment.provider_payment_id IS NULL THEN
        RAISE EXCEPTION 'payment % is % %: only a payment the provider captured can be refunded', v_payment.id,
            v_payment.status, CASE WHEN v_payment.provider_payment_id IS NULL THEN 'without a provider payment' ELSE '' END
            USING ERRCODE = 'PM206';
    END IF;
    -- Stripe refuses refunds of a disputed charge while its funds are withheld: the bank returns them.
    IF v_payment.amount_disputed_minor > 0 AND EXISTS (
           SELECT 1 FROM payments.disputes d
           WHERE d.customer_id = v_payment.customer_id AND d.payment_id = v_payment.id
             AND d.status IN ('needs_response', 'under_review')) THEN
        RAISE EXCEPTION 'payment % has an open dispute: it cannot be refunded while the dispute withholds its funds',
            v_payment.id USING ERRCODE = 'PM206', HINT = 'the dispute''s outcome returns the money (lost) or lets it be refunded (won)';
    END IF;
    v_left := payments._refundable_minor(v_payment);
    v_minor := coalesce(v_minor, v_left);
    IF v_minor > v_left OR v_minor <= 0 THEN
        RAISE EXCEPTION 'cannot refund % %: % is left to refund of payment %',
            payments.to_major(v_minor, v_payment.currency), v_payment.currency,
            payments.to_major(greatest(v_left, 0), v_payment.currency), v_payment.id
            USING ERRCODE = 'PM207', HINT = 'pending and succeeded refunds count against what was captured';
    END IF;
    -- A write, not only a lock: a concurrent REPEATABLE READ or SERIALIZABLE refund of this
    -- payment, whose snapshot predates ours, then fails (40001) instead of summing without us.
    UPDATE payments.payments p SET updated_at = now() WHERE p.customer_id = v_payment.customer_id AND p.id = v_payment.id;
    INSERT INTO payments.refunds (id, customer_id, payment_id, amount_minor, currency, status, reason, idempotency_key,
                                  fingerprint, provider)
    VALUES (v_id, v_payment.customer_id, v_payment.id, v_minor, v_payment.currency, 'pending', reason, idempotency_key,
            v_fp, v_payment.provider)
    ON CONFLICT ON CONSTRAINT refunds_idempotency_key DO NOTHING;
    IF NOT FOUND THEN
        -- The key was taken meanwhile for another payment of this customer (whose lock we do not hold).
        SELECT * INTO v_existing FROM payments.refunds r
        WHERE r.customer_id = v_payment.customer_id AND r.idempotency_key = create_refund.idempotency_key;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'idempotency key % was claimed by a concurrent transaction', quote_literal(idempotency_key)
                USING ERRCODE = '40001', HINT = 'retry the transaction';
        END IF;
        RETURN QUERY SELECT * FROM payments._replayed_refund(v_existing, v_fp);
        RETURN;
    END IF;
    -- A top-up's refund takes back the credits it bought, never more than is unspent.
    PERFORM payments._top_up_refunded(v_payment.customer_id, v_payment.id, v_id, v_minor, true);
    -- A refund of the payment that paid an invoice is that invoice's credit note.
    PERFORM payments._credit_note_for_refund(v_payment.customer_id, v_payment.id, v_id, v_minor, idempotency_key);
    PERFORM payments._emit(v_payment.customer_id, 'refund', v_id, 'pending', NULL, true,
                           jsonb_build_object('payment_id', v_payment.id, 'amount_minor', v_minor,
                                              'currency', v_payment.currency));
    PERFORM payments._queue_command(v_payment, 'refund', v_minor, NULL, v_id);
    RETURN QUERY SELECT * FROM payments._refund_result(v_payment.customer_id, v_id, 'created');
END
$$;
COMMENT ON FUNCTION payments.create_refund(text, text, numeric, text) IS
    'Refunds a succeeded payment, in full or amount of it (default: all that is left), idempotently: the same key (per customer) with the same parameters returns the same refund (outcome replayed), with others PM201. Records a pending refund and queues its provider call (outcome created); it becomes succeeded, failed or canceled as the provider answers and reports. Pending and succeeded refunds never add up to more than was captured, also under concurrent calls (PM207 otherwise); a payment that is not succeeded at a provider: PM206. reason: duplicate, fraudulent or requested_by_customer. Runs in the caller''s transaction: a rollback refunds nothing.';

CREATE OR REPLACE FUNCTION payments._replayed_refund(p_refund payments.refunds, p_fingerprint bytea)
RETURNS SETOF payments.refund_result
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_refund.fingerprint <> p_fingerprint THEN
        RAISE EXCEPTION 'idempotency key % was already used with different parameters', quote_literal(p_refund.idempotency_key)
            USING ERRCODE = 'PM201', DETAIL = 'the key belongs to refund ' || p_refund.id,
                  HINT = 'use a new key for a new refund, or repeat the original parameters to replay it';
    END IF;
    RETURN QUERY SELECT * FROM payments._refund_result(p_refund.customer_id, p_refund.id, 'replayed');
END
$$;
COMMENT ON FUNCTION payments._replayed_refund(payments.refunds, bytea) IS
    'Internal: a create_refund replay: the refund the key made, or PM201 when the parameters differ.';

CREATE OR REPLACE FUNCTION payments.get_refund(id text) RETURNS SETOF payments.refund_details
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- Read once, here: inside the query Citus would send it to the shards.
    v_bound text := payments._bound_customer();
BEGIN
    RETURN QUERY SELECT * FROM payments.refund_details d
    WHERE d.id = get_refund.id AND d.customer_id = coalesce(v_bound, d.customer_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'refund % not found', payments._shown(get_refund.id) USING ERRCODE = 'PM204';
    END IF;
END
$$;
COMMENT ON FUNCTION payments.get_refund(text) IS 'One refund by id; PM204 when there is none.';

CREATE OR REPLACE FUNCTION payments.list_refunds(payment_id text DEFAULT NULL, lim int DEFAULT 10, starting_after text DEFAULT NULL)
RETURNS SETOF payments.refund_details
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_customer text;
BEGIN
    IF lim IS NULL OR lim NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'lim must be between 1 and 100' USING ERRCODE = 'PM100';
    END IF;
    IF list_refunds.payment_id IS NOT NULL THEN
        v_customer := payments._customer_of(list_refunds.payment_id);
    END IF;
    -- A login bound to one customer sees that customer's refunds only.
    v_customer := coalesce(payments._bound_customer(), v_customer);
    RETURN QUERY SELECT * FROM payments.refund_details d
    WHERE (list_refunds.payment_id IS NULL OR d.payment_id = list_refunds.payment_id)
      AND (v_customer IS NULL OR d.customer_id = v_customer)
      AND (starting_after IS NULL OR d.id < starting_after)
    ORDER BY d.id DESC LIMIT lim;
END
$$;
COMMENT ON FUNCTION payments.list_refunds(text, int, text) IS
    'Refunds newest first (of one payment when payment_id is given; PM204 for an unknown payment), lim (1 to 100) at a time; starting_after: the last id of the previous page.';

-- ---------------------------------------------------------------------------
-- What the provider says about a refund
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION payments._payment_note(p_payment payments.payments, p_applied boolean, p_source text, p_reason text,
                                      p_data jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- In the payment's hash chain; its status does not move (applied: the refund's did).
    PERFORM payments._append_event(p_payment.customer_id, p_payment.id, p_payment.status, p_payment.status, p_applied,
                                   p_source, p_reason, jsonb_strip_nulls(p_data));
END
$$;
COMMENT ON FUNCTION payments._payment_note(payments.payments, boolean, text, text, jsonb) IS
    'Internal: a refund''s or dispute''s step in its payment''s history (the payment''s status unchanged; applied: the refund or dispute moved). The caller holds the payment''s row lock.';

CREATE OR REPLACE FUNCTION payments._refund_event(p_refund payments.refunds, p_status text, p_previous text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM payments._emit(p_refund.customer_id, 'refund', p_refund.id, p_status, p_previous, p_previous IS NULL,
                           jsonb_build_object('payment_id', p_refund.payment_id, 'amount_minor', p_refund.amount_minor,
                                              'currency', p_refund.currency));
END
$$;
COMMENT ON FUNCTION payments._refund_event(payments.refunds, text, text) IS
    'Internal: tells apps a refund was made (p_previous NULL) or moved to p_status. The caller holds its payment''s row lock.';

CREATE OR REPLACE FUNCTION payments._apply_refund_object(p_payment payments.payments, p_refund_id text, p_evidence jsonb,
                                              p_source text, p_event_id text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_refund   payments.refunds%ROWTYPE;
    v_to       text := p_evidence ->> 'status';
    v_rid      text := p_evidence ->> 'id';
    v_ppid     text := p_evidence ->> 'provider_payment_id';
    v_amount   text := p_evidence ->> 'amount';
    v_observed jsonb := jsonb_strip_nulls(jsonb_build_object(
        'refund', v_rid, 'amount', p_evidence -> 'amount', 'currency', p_evidence -> 'currency',
        'provider_payment_id', v_ppid, 'status', v_to, 'webhook_event_id', p_event_id));
    v_problem  text;
    v_decision text;
    v_left     bigint;
    v_taken_in boolean := false;
BEGIN
    -- The caller holds the payment's row lock.
    IF v_to IS NULL OR v_rid IS NULL OR length(v_rid) > 255 THEN
        RETURN 'ignored';
    END IF;
    SELECT * INTO v_refund FROM payments.refunds r
    WHERE r.customer_id = p_payment.customer_id
      AND ((p_refund_id IS NOT NULL AND r.id = p_refund_id)
           OR (p_refund_id IS NULL AND r.provider = p_payment.provider AND r.provider_refund_id = v_rid));
    IF NOT FOUND AND p_refund_id IS NULL THEN
        -- Our id in metadata: a webhook that beat the provider's answer.
        SELECT * INTO v_refund FROM payments.refunds r
        WHERE r.customer_id = p_payment.customer_id AND r.id = p_evidence ->> 'our_id'
          AND r.payment_id = p_payment.id;
    END IF;
    -- Evidence: a refund of this payment's provider object, for the refund's money; a refund
    -- of ours names its own payment's object (another payment's refund is never moved here).
    IF v_ppid IS DISTINCT FROM p_payment.provider_payment_id
       OR (v_refund.id IS NOT NULL AND v_refund.payment_id <> p_payment.id)
       OR (v_refund.provider_refund_id IS NOT NULL AND v_refund.provider_refund_id <> v_rid) THEN
        v_problem := 'provider_payment_mismatch';
    ELSIF upper(p_evidence ->> 'currency') IS DISTINCT FROM p_payment.currency THEN
        v_problem := 'currency_mismatch';
    ELSIF v_refund.id IS NOT NULL AND v_amount IS DISTINCT FROM v_refund.amount_minor::text THEN
        v_problem := 'amount_mismatch';
    ELSIF v_refund.id IS NULL THEN
        -- Made at the provider directly: taken in only if it fits in what is left to refund
        -- (nothing is, before the payment succeeded here); a failed or canceled one holds nothing.
        v_left := payments._refundable_minor(p_payment);
        IF v_amount IS NULL OR v_amount !~ '^[1-9][0-9]{0,17}$' OR (v_to IN ('pending', 'succeeded') AND v_amount::bigint > v_left) THEN
            v_problem := 'amount_mismatch';
        END IF;
    END IF;
    IF v_problem IS NOT NULL THEN
        PERFORM payments._record_anomaly(p_payment.customer_id, p_payment.id, v_problem, p_source, p_payment.provider,
                                         v_ppid, v_observed);
        RETURN 'mismatch';
    END IF;
    IF v_refund.id IS NULL THEN
        INSERT INTO payments.refunds (id, customer_id, payment_id, amount_minor, currency, status, reason, provider,
                                      provider_refund_id, failure_reason)
        VALUES (payments._new_id('rfd'), p_payment.customer_id, p_payment.id, v_amount::bigint,
                p_payment.currency, 'pending',
                CASE WHEN payments._is_allowed('refund_reason', p_evidence ->> 'reason') THEN p_evidence ->> 'reason' END,
                p_payment.provider, v_rid, NULL)
        RETURNING * INTO v_refund;
        v_taken_in := true;
        PERFORM payments._top_up_refunded(p_payment.customer_id, p_payment.id, v_refund.id, v_refund.amount_minor, false);
        PERFORM payments._refund_event(v_refund, 'pending', NULL);
        PERFORM payments._payment_note(p_payment, true, p_source, 'refund made at the provider',
                                      jsonb_build_object('refund_id', v_refund.id, 'provider_refund_id', v_rid,
                                                         'amount_minor', v_refund.amount_minor,
                                                         'webhook_event_id', p_event_id));
    ELSIF v_refund.provider_refund_id IS NULL THEN
        UPDATE payments.refunds r SET provider_refund_id = v_rid, updated_at = now()
        WHERE r.customer_id = v_refund.customer_id AND r.id = v_refund.id;
    END IF;
    v_decision := payments._refund_decision(v_refund.status, v_to);
    IF v_decision = 'applied' THEN
        UPDATE payments.refunds r
        SET status = v_to, updated_at = now(),
            failure_reason = CASE WHEN v_to = 'failed' THEN coalesce(p_evidence ->> 'error', 'unknown') END
        WHERE r.customer_id = v_refund.customer_id AND r.id = v_refund.id;
        PERFORM payments._refund_event(v_refund, v_to, v_refund.status);
        -- What the payment shows as refunded: succeeded refunds only.
        UPDATE payments.payments p
        SET amount_refunded_minor = p.amount_refunded_minor
                + CASE WHEN v_to = 'succeeded' THEN v_refund.amount_minor
                       WHEN v_refund.status = 'succeeded' THEN -v_refund.amount_minor ELSE 0 END,
            updated_at = now()
        WHERE p.customer_id = p_payment.customer_id AND p.id = p_payment.id;
        -- The ledger: what the refund gave back left the provider's hands (a refund that failed
        -- after it succeeded moves it back).
        PERFORM payments._move(p_payment.customer_id, 'refund', v_refund.id, v_refund.currency,
                               CASE WHEN v_to = 'succeeded' THEN v_refund.amount_minor
                                    WHEN v_refund.status = 'succeeded' THEN -v_refund.amount_minor ELSE 0 END,
                               'refunds', 'provider_clearing');
        IF v_to IN ('failed', 'canceled') THEN
            PERFORM payments._top_up_refund_undone(p_payment.customer_id, v_refund.id);
        END IF;
    END IF;
    IF v_decision <> 'noop' THEN
        PERFORM payments._payment_note(p_payment, v_decision = 'applied', p_source,
                                      CASE v_decision WHEN 'applied' THEN 'refund ' || v_to
                                           ELSE 'stale: refund ' || v_refund.status || ' does not move to ' || v_to END,
                                      jsonb_build_object('refund_id', v_refund.id, 'provider_refund_id', v_rid,
                                                         'amount_minor', v_refund.amount_minor,
                                                         'failure_reason', p_evidence ->> 'error',
                                                         'webhook_event_id', p_event_id));
    END IF;
    -- A refund taken in is news even while it is still pending.
    RETURN CASE WHEN v_taken_in AND v_decision = 'noop' THEN 'applied' ELSE v_decision END;
END
$$;
COMMENT ON FUNCTION payments._apply_refund_object(payments.payments, text, jsonb, text, text) IS
    'Internal: applies a refund''s evidence record to the refund it is about (p_refund_id, else its provider id, else our_id, the refund id the provider echoes; one made at the provider directly is taken in if it fits in what is left to refund). Another payment''s refund, another currency or amount is an anomaly (mismatch), never applied. Moves the refund under its state machine, keeps the payment''s amount_refunded and notes each step in its history. Returns applied | noop | stale | ignored | mismatch. The caller holds the payment''s row lock.';

CREATE OR REPLACE FUNCTION payments._record_refund_answer(p_command payments.provider_commands, p_payment payments.payments,
                                               p_response jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    -- An answer is a refund when it says it is one.
    v_evidence jsonb := payments._provider_object(p_payment.provider, NULL, p_response);
    v_refused  boolean := p_response ? 'error' OR (v_evidence ->> 'kind') IS DISTINCT FROM 'refund';
    v_outcome  text;
    v_refund   payments.refunds%ROWTYPE;
BEGIN
    -- The caller holds the payment's and the command's row locks.
    IF v_refused THEN
        UPDATE payments.refunds r
        SET status = 'failed', updated_at = now(),
            failure_reason = left(coalesce(p_response -> 'error' ->> 'message', 'refused by the provider'), 1000)
        WHERE r.customer_id = p_command.customer_id AND r.id = p_command.refund_id AND r.status = 'pending'
        RETURNING * INTO v_refund;
        IF FOUND THEN
            PERFORM payments._refund_event(v_refund, 'failed', 'pending');
            PERFORM payments._top_up_refund_undone(p_command.customer_id, v_refund.id);
        END IF;
        PERFORM payments._payment_note(p_payment, true, 'provider', 'refund refused',
                                      jsonb_build_object('refund_id', p_command.refund_id, 'command_id', p_command.id,
                                                         'error', coalesce(p_response -> 'error', p_response)));
    ELSE
        v_outcome := payments._apply_refund_object(p_payment, p_command.refund_id, v_evidence, 'provider', NULL);
    END IF;
    UPDATE payments.provider_commands c
    SET status = CASE WHEN v_refused OR v_outcome = 'mismatch' THEN 'failed' ELSE 'succeeded' END, finished_at = now(),
        last_error = CASE WHEN v_refused THEN coalesce(p_response -> 'error', p_response) END
    WHERE c.customer_id = p_command.customer_id AND c.id = p_command.id;
END
$$;
COMMENT ON FUNCTION payments._record_refund_answer(payments.provider_commands, payments.payments, jsonb) IS
    'Internal: record_command_result for a refund command: the provider''s Refund object is applied to the refund (its money checked); a refusal fails the refund with the provider''s message.';
