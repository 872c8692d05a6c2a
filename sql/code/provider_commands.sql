-- payments: capture and cancel (and the outbox refunds use too). SQL decides, the gateway carries the provider
-- call out: each command validates, records the intent in the payment's
-- history and queues the provider call in payments.provider_commands (a
-- transactional outbox: it exists only if the caller's transaction commits).
-- The gateway claims queued commands with leases, as the reconciler claims
-- payments, calls the provider and records the answer through record_command_result.

CREATE OR REPLACE FUNCTION payments._requested_command(p_customer_id text, p_payment_id text, p_kind text)
RETURNS payments.provider_commands
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_command payments.provider_commands%ROWTYPE;
BEGIN
    SELECT * INTO v_command FROM payments.provider_commands c
    WHERE c.customer_id = p_customer_id AND c.payment_id = p_payment_id AND c.kind = p_kind
      AND c.status IN ('pending', 'succeeded')
    ORDER BY c.created_at DESC LIMIT 1;
    RETURN v_command;
END
$$;
COMMENT ON FUNCTION payments._requested_command(text, text, text) IS
    'Internal: the latest capture or cancel asked of the provider for a payment, pending or done (all NULL when none): what a report of succeeded or canceled is checked against and records (the amount captured, the cancellation reason).';

CREATE OR REPLACE FUNCTION payments._queue_command(p_payment payments.payments, p_kind text, p_amount_minor bigint,
                                        p_reason text, p_refund_id text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_pending payments.provider_commands%ROWTYPE;
    v_id      text := payments._new_id('cmd');
BEGIN
    -- The caller holds the payment's row lock, so no other command is queued meanwhile.
    SELECT * INTO v_pending FROM payments.provider_commands c
    WHERE c.customer_id = p_payment.customer_id AND c.payment_id = p_payment.id AND c.status = 'pending'
      AND c.kind <> 'refund';
    IF FOUND AND p_kind <> 'refund' THEN
        IF (v_pending.kind, v_pending.amount_minor, v_pending.reason) IS NOT DISTINCT FROM (p_kind, p_amount_minor, p_reason) THEN
            RETURN;  -- the same command asked again: it is already queued
        END IF;
        RAISE EXCEPTION 'payment % has a % pending at the provider', p_payment.id, v_pending.kind
            USING ERRCODE = 'PM208', HINT = 'wait for it to finish (the payment''s history shows it)';
    END IF;
    INSERT INTO payments.provider_commands (id, customer_id, payment_id, kind, amount_minor, reason, refund_id)
    VALUES (v_id, p_payment.customer_id, p_payment.id, p_kind, p_amount_minor, p_reason, p_refund_id);
    PERFORM payments._append_event(p_payment.customer_id, p_payment.id, p_payment.status, p_payment.status, false,
                                   'api', p_kind || ' requested',
                                   jsonb_strip_nulls(jsonb_build_object('command_id', v_id, 'amount_minor', p_amount_minor,
                                                                        'reason', p_reason, 'refund_id', p_refund_id)));
    -- Wakes the gateway's worker at commit when notifications are on (it also polls).
    IF payments._notifying() THEN
        PERFORM pg_catalog.pg_notify('payments_provider_commands', p_payment.customer_id || '/' || v_id);
    END IF;
END
$$;
COMMENT ON FUNCTION payments._queue_command(payments.payments, text, bigint, text, text) IS
    'Internal: queues one provider command for a payment whose row the caller has locked, notes the request in its history and, when notifications are on (set_event_notifications), wakes the gateway (NOTIFY payments_provider_commands). A capture or cancel asked again is a no-op; another one while one is pending is PM208. Refunds (p_refund_id) queue side by side.';

CREATE OR REPLACE FUNCTION payments.capture_payment(payment_id text, amount numeric DEFAULT NULL)
RETURNS SETOF payments.payment_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_payment payments.payments := payments._locked_payment(capture_payment.payment_id);
    v_minor   bigint;
BEGIN
    IF v_payment.status <> 'requires_capture' THEN
        RAISE EXCEPTION 'payment % is %, not requires_capture: there is nothing to capture', v_payment.id,
            v_payment.status USING ERRCODE = 'PM206';
    END IF;
    v_minor := CASE WHEN amount IS NULL THEN v_payment.amount_minor ELSE payments.to_minor(amount, v_payment.currency) END;
    IF v_minor > v_payment.amount_minor THEN
        RAISE EXCEPTION 'cannot capture % %: payment % authorized %', amount, v_payment.currency, v_payment.id,
            payments.to_major(v_payment.amount_minor, v_payment.currency) USING ERRCODE = 'PM207';
    END IF;
    PERFORM payments._queue_command(v_payment, 'capture', v_minor, NULL);
    RETURN QUERY SELECT * FROM payments._result(v_payment.customer_id, v_payment.id, 'queued');
END
$$;
COMMENT ON FUNCTION payments.capture_payment(text, numeric) IS
    'Captures an authorized (requires_capture) payment, in full or amount of it (the rest of the authorization is released): queues the capture for the provider and returns the payment with outcome queued; it becomes succeeded, with amount_captured, when the provider confirms. More than authorized: PM207; another status: PM206; another command pending: PM208. Runs in the caller''s transaction: a rollback queues nothing.';

CREATE OR REPLACE FUNCTION payments.cancel_payment(payment_id text, reason text DEFAULT NULL)
RETURNS SETOF payments.payment_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_payment  payments.payments%ROWTYPE;
    v_customer text;
    v_outcome  text;
BEGIN
    IF reason IS NOT NULL AND (reason = 'automatic' OR NOT payments._is_allowed('cancellation_reason', reason)) THEN
        RAISE EXCEPTION 'reason must be duplicate, fraudulent, requested_by_customer or abandoned, not %',
            quote_literal(payments._shown(reason)) USING ERRCODE = 'PM100';
    END IF;
    v_payment := payments._locked_payment(cancel_payment.payment_id);
    v_customer := v_payment.customer_id;
    -- Stripe cancels a payment in these statuses only (not while processing).
    IF NOT (v_payment.status = ANY (payments._group('cancelable_payment_status'))) THEN
        RAISE EXCEPTION 'payment % is % and cannot be canceled', v_payment.id, v_payment.status USING ERRCODE = 'PM206';
    END IF;
    IF v_payment.provider_payment_id IS NOT NULL THEN
        PERFORM payments._queue_command(v_payment, 'cancel', NULL, reason);
        RETURN QUERY SELECT * FROM payments._result(v_customer, v_payment.id, 'queued');
        RETURN;
    END IF;
    IF v_payment.payment_method IS NOT NULL THEN
        -- The provider may be creating it right now (the gateway or its reconciler):
        -- canceling here could cancel a payment the provider then charges.
        RAISE EXCEPTION 'payment % is being created at the provider; cancel it once it has a provider id', v_payment.id
            USING ERRCODE = 'PM209';
    END IF;
    -- Never sent to a provider: canceled here and now.
    UPDATE payments.payments p SET cancellation_reason = cancel_payment.reason
    WHERE p.customer_id = v_customer AND p.id = v_payment.id;
    v_outcome := payments._transition(v_customer, v_payment.id, 'canceled', 'api', coalesce(reason, 'canceled'), '{}', NULL);
    RETURN QUERY SELECT * FROM payments._result(v_customer, v_payment.id, v_outcome);
END
$$;
COMMENT ON FUNCTION payments.cancel_payment(text, text) IS
    'Cancels a payment in requires_payment_method, requires_confirmation, requires_action or requires_capture (PM206 otherwise; final afterwards). One the provider holds is canceled there first: the cancel is queued (outcome queued) and the payment becomes canceled when the provider confirms; one never sent to a provider is canceled at once (outcome applied). A payment the provider may be creating right now (a payment method, no provider id yet): PM209. reason: duplicate, fraudulent, requested_by_customer or abandoned.';

CREATE OR REPLACE FUNCTION payments.cancel_expired_authorizations(older_than interval DEFAULT '7 days', at timestamptz DEFAULT now(),
                                                       provider text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_due     record;
    v_payment payments.payments%ROWTYPE;
    v_queued  integer := 0;
BEGIN
    IF older_than IS NULL OR older_than < interval '1 second' OR at IS NULL THEN
        RAISE EXCEPTION 'older_than (at least 1 second) and at are required' USING ERRCODE = 'PM100';
    END IF;
    FOR v_due IN
        SELECT p.customer_id, p.id FROM payments.payments p
        WHERE p.status = 'requires_capture' AND p.updated_at < at - older_than
          AND (cancel_expired_authorizations.provider IS NULL OR p.provider = cancel_expired_authorizations.provider)
        ORDER BY p.updated_at LIMIT 1000
    LOOP
        -- Each where it lives, skipping one another call holds; re-checked under the lock.
        SELECT * INTO v_payment FROM payments.payments p
        WHERE p.customer_id = v_due.customer_id AND p.id = v_due.id AND p.status = 'requires_capture'
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        -- Not while another command is pending, and once only: a refused automatic
        -- cancel is left to an operator (it shows in provider_commands), never retried in a loop.
        CONTINUE WHEN EXISTS (SELECT 1 FROM payments.provider_commands c
                              WHERE c.customer_id = v_due.customer_id AND c.payment_id = v_due.id
                                AND (c.status = 'pending' OR (c.kind = 'cancel' AND c.reason = 'automatic')));
        PERFORM payments._queue_command(v_payment, 'cancel', NULL, 'automatic');
        v_queued := v_queued + 1;
    END LOOP;
    RETURN v_queued;
END
$$;
COMMENT ON FUNCTION payments.cancel_expired_authorizations(interval, timestamptz, text) IS
    'Queues a cancel (reason automatic) for every authorization (of one provider, when given) left uncaptured longer than older_than (default 7 days, Stripe''s window; at least 1 second) at time at, and returns how many (at most 1000 per call). A payment gets one automatic cancel: if the provider refuses it, it waits for an operator. The gateway calls it on a timer for its provider; safe to call twice or from two places at once.';

CREATE OR REPLACE FUNCTION payments.claim_provider_commands(lim int DEFAULT 10, lease interval DEFAULT '30 seconds',
                                                 only_payment_id text DEFAULT NULL, only_provider text DEFAULT NULL)
RETURNS TABLE (command_id text, kind text, payment_id text, customer_id text, provider text, provider_payment_id text,
               amount_minor bigint, currency text, reason text, attempt integer, refund_id text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_only_customer text;
    v_due        record;
    v_attempts   integer;
    v_kind       text;
    v_payment_id text;
    v_refund_id  text;
    v_status     text;
BEGIN
    IF lim IS NULL OR lim NOT BETWEEN 1 AND 1000 OR lease IS NULL OR lease <= interval '0' THEN
        RAISE EXCEPTION 'lim is 1 to 1000 and the lease positive' USING ERRCODE = 'PM100';
    END IF;
    IF only_payment_id IS NOT NULL THEN
        v_only_customer := payments._customer_of(only_payment_id);
    END IF;
    -- As claim_provider_work: candidates without locks, then each claimed where it lives.
    FOR v_due IN
        SELECT c.customer_id, c.id FROM payments.provider_commands c
        JOIN payments.payments p ON p.customer_id = c.customer_id AND p.id = c.payment_id
        WHERE c.status = 'pending' AND c.run_after <= now()
          AND (only_payment_id IS NULL OR (c.customer_id = v_only_customer AND c.payment_id = only_payment_id))
          AND (only_provider IS NULL OR p.provider = only_provider)
        ORDER BY c.run_after LIMIT lim
    LOOP
        SELECT c.attempts, c.kind, c.payment_id, c.refund_id INTO v_attempts, v_kind, v_payment_id, v_refund_id
        FROM payments.provider_commands c
        WHERE c.customer_id = v_due.customer_id AND c.id = v_due.id AND c.status = 'pending' AND c.run_after <= now()
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        -- A payment (or refund) that moved on meanwhile (a webhook, an administrator) is not asked about again.
        IF v_kind = 'refund' THEN
            -- One the provider already reported (a webhook linked its id) is not asked for again.
            SELECT CASE WHEN r.provider_refund_id IS NULL THEN r.status ELSE 'made' END INTO v_status
            FROM payments.refunds r
            WHERE r.customer_id = v_due.customer_id AND r.id = v_refund_id;
        ELSE
            SELECT p.status INTO v_status FROM payments.payments p
            WHERE p.customer_id = v_due.customer_id AND p.id = v_payment_id;
        END IF;
        IF (CASE v_kind WHEN 'refund' THEN v_status <> 'pending'
                        WHEN 'capture' THEN v_status <> 'requires_capture'
                        ELSE NOT (v_status = ANY (payments._group('cancelable_payment_status'))) END) THEN
            UPDATE payments.provider_commands c
            SET status = CASE WHEN v_status = 'made' THEN 'succeeded' ELSE 'failed' END, finished_at = now(),
                last_error = CASE WHEN v_status <> 'made' THEN jsonb_build_object('message',
                    CASE v_kind WHEN 'refund' THEN 'the refund is ' ELSE 'the payment is ' END || v_status
                    || ': nothing to ' || v_kind) END
            WHERE c.customer_id = v_due.customer_id AND c.id = v_due.id;
            CONTINUE;
        END IF;
        UPDATE payments.provider_commands c
        SET attempts = v_attempts + 1,
            -- Each attempt waits longer: the lease, doubled per attempt, at most an hour.
            run_after = now() + least(interval '1 hour', lease * power(2, least(v_attempts, 12)))
        WHERE c.customer_id = v_due.customer_id AND c.id = v_due.id;
        RETURN QUERY
        SELECT c.id, c.kind, c.payment_id, c.customer_id, p.provider, p.provider_payment_id, c.amount_minor,
               p.currency, coalesce(c.reason, r.reason), c.attempts, c.refund_id
        FROM payments.provider_commands c
        JOIN payments.payments p ON p.customer_id = c.customer_id AND p.id = c.payment_id
        LEFT JOIN payments.refunds r ON r.customer_id = c.customer_id AND r.id = c.refund_id
        WHERE c.customer_id = v_due.customer_id AND c.id = v_due.id;
    END LOOP;
END
$$;
COMMENT ON FUNCTION payments.claim_provider_commands(int, interval, text, text) IS
    'Leases up to lim queued provider commands (of one payment when only_payment_id is given, as an HTTP route does to run its own at once; of one provider''s payments when only_provider is given, as each gateway asks for its own): each is stamped with a lease that doubles with every attempt (from lease, at most an hour) and committed at once, so the caller calls the provider with no transaction open and records the answer with record_command_result. A gateway killed mid-call leaves the command to the next claim after its lease. A command whose payment (or refund) has moved on (a webhook or an administrator finished it) fails instead of being claimed; a refund the provider already reported (its id linked by a webhook) is done without asking again. refund_id and the refund''s reason come with a refund.';

CREATE OR REPLACE FUNCTION payments.record_command_result(command_id text, answered boolean, status text, response jsonb,
                                               customer_id text DEFAULT NULL)
RETURNS SETOF payments.payment_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_command  payments.provider_commands%ROWTYPE;
    v_payment  payments.payments%ROWTYPE;
    v_response jsonb;
    v_refused  boolean;
BEGIN
    IF answered IS NULL THEN
        RAISE EXCEPTION 'answered is required' USING ERRCODE = 'PM100';
    END IF;
    -- The claim returned the customer: with it, one shard answers on Citus.
    SELECT * INTO v_command FROM payments.provider_commands c
    WHERE c.id = record_command_result.command_id
      AND (record_command_result.customer_id IS NULL OR c.customer_id = record_command_result.customer_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'provider command % not found', payments._shown(record_command_result.command_id)
            USING ERRCODE = 'PM204';
    END IF;
    SELECT * INTO v_payment FROM payments.payments p
    WHERE p.customer_id = v_command.customer_id AND p.id = v_command.payment_id;
    -- A secret a browser confirms with (Stripe: client_secret) is never kept, also not inside a refusal.
    v_response := payments._provider_redacted(v_payment.provider, coalesce(response, '{}'));
    -- Lock order: the provider id's row, then the payment's, then the command's (a webhook
    -- bringing the same news takes the first two in this order too).
    PERFORM payments._lock_provider_payment(v_payment.provider, v_payment.provider_payment_id);
    SELECT * INTO v_payment FROM payments.payments p
    WHERE p.customer_id = v_command.customer_id AND p.id = v_command.payment_id FOR UPDATE;
    SELECT * INTO v_command FROM payments.provider_commands c
    WHERE c.customer_id = v_command.customer_id AND c.id = v_command.id FOR UPDATE;
    IF v_command.status <> 'pending' THEN
        -- A retry of an answer already recorded.
        RETURN QUERY SELECT * FROM payments._result(v_payment.customer_id, v_payment.id, 'noop');
        RETURN;
    END IF;
    IF answered AND v_command.kind = 'refund' THEN
        PERFORM payments._record_refund_answer(v_command, v_payment, v_response);
        RETURN QUERY SELECT * FROM payments._result(v_payment.customer_id, v_payment.id, 'noop');
        RETURN;
    END IF;
    IF NOT answered THEN
        -- The provider was unreachable: the lease brings the command back.
        UPDATE payments.provider_commands c SET last_error = v_response
        WHERE c.customer_id = v_command.customer_id AND c.id = v_command.id;
        PERFORM payments._append_event(v_payment.customer_id, v_payment.id, v_payment.status, v_payment.status, false,
                                       'provider', v_command.kind || ' call failed',
                                       jsonb_build_object('command_id', v_command.id, 'last_error', v_response));
        RETURN QUERY SELECT * FROM payments._result(v_payment.customer_id, v_payment.id, 'queued');
        RETURN;
    END IF;
    -- The provider did it (its object now has the command's status) or refused (an error, or
    -- an object in a status that is no answer).
    v_refused := v_response ? 'error' OR record_command_result.status IS NULL;
    UPDATE payments.provider_commands c
    SET status = CASE WHEN NOT v_refused AND record_command_result.status = CASE v_command.kind WHEN 'capture' THEN 'succeeded'
                                                                                               ELSE 'canceled' END
                      THEN 'succeeded' ELSE 'failed' END,
        finished_at = now(),
        last_error = CASE WHEN v_refused THEN coalesce(v_response -> 'error', v_response) END
    WHERE c.customer_id = v_command.customer_id AND c.id = v_command.id;
    IF v_refused THEN
        PERFORM payments._append_event(v_payment.customer_id, v_payment.id, v_payment.status, v_payment.status, false,
                                       'provider', v_command.kind || ' refused',
                                       jsonb_build_object('command_id', v_command.id,
                                                          'error', coalesce(v_response -> 'error', v_response)));
        RETURN QUERY SELECT * FROM payments._result(v_payment.customer_id, v_payment.id, 'noop');
        RETURN;
    END IF;
    -- The provider's object, checked and applied as any provider answer is.
    RETURN QUERY SELECT * FROM payments.record_provider_result(v_payment.id, v_payment.provider,
                                                               v_payment.provider_payment_id, record_command_result.status,
                                                               v_response);
END
$$;
COMMENT ON FUNCTION payments.record_command_result(text, boolean, text, jsonb, text) IS
    'Records the provider''s answer to a queued command (customer_id, as the claim returned it, finds it on one shard). answered = false: the provider was unreachable (response: the error); the command stays pending and comes back after its lease. Otherwise response is the provider''s object (a PaymentIntent, applied through record_provider_result with status, its money checked as always; for a refund command the Refund, applied to the refund, status unused) or its refusal ({"error": …}, or an object with no status that answers the command: recorded, the command failed). A client_secret is never kept. A repeat of a recorded answer changes nothing.';

-- Payments whose provider call was interrupted, claimed by the gateway's reconciler.
CREATE OR REPLACE FUNCTION payments.claim_provider_work(lim int DEFAULT 10, min_age interval DEFAULT '10 seconds',
                                             lease interval DEFAULT '30 seconds', max_backoff interval DEFAULT '1 hour')
RETURNS TABLE (payment_id text, kind text, customer_id text, amount_minor bigint, currency text,
               payment_method text, capture_method text, description text, provider text, provider_payment_id text,
               status text, attempt integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_due      record;
    v_attempts integer;
BEGIN
    IF lim IS NULL OR lim NOT BETWEEN 1 AND 1000 OR min_age IS NULL OR lease IS NULL OR lease <= interval '0'
       OR max_backoff IS NULL OR max_backoff < lease THEN
        RAISE EXCEPTION 'lim is 1 to 1000; min_age, a positive lease and max_backoff (at least the lease) are required'
            USING ERRCODE = 'PM100';
    END IF;
    -- Candidates first, without locks (on Citus one query over every shard);
    -- then each is claimed where it lives: locked unless another claimer holds
    -- it (SKIP LOCKED), re-checked, and stamped with its lease. The row lock
    -- lasts until this call commits, never across the provider calls the
    -- caller makes next (as pgmq's read sets a visibility timeout).
    FOR v_due IN
        SELECT p.customer_id, p.id
        FROM payments.payments p
        WHERE p.status IN ('requires_confirmation', 'processing')
          AND p.updated_at < now() - min_age
          AND (p.reconcile_after IS NULL OR p.reconcile_after <= now())
          AND (p.provider_payment_id IS NOT NULL OR p.payment_method IS NOT NULL)
        ORDER BY coalesce(p.reconcile_after, p.updated_at)
        LIMIT lim
    LOOP
        SELECT p.reconcile_attempts INTO v_attempts FROM payments.payments p
        WHERE p.customer_id = v_due.customer_id AND p.id = v_due.id
          AND p.status IN ('requires_confirmation', 'processing')
          AND (p.reconcile_after IS NULL OR p.reconcile_after <= now())
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        RETURN QUERY
        UPDATE payments.payments p
        SET reconcile_attempts = v_attempts + 1,
            -- Each attempt waits longer (twice the last, from min_age), at least the lease, at most max_backoff.
            reconcile_after = now() + least(max_backoff, greatest(lease, min_age * power(2, least(v_attempts, 20))))
        WHERE p.customer_id = v_due.customer_id AND p.id = v_due.id
        RETURNING p.id,
                  CASE WHEN p.provider_payment_id IS NULL THEN 'create' ELSE 'refresh' END,
                  p.customer_id, p.amount_minor, p.currency, p.payment_method, p.capture_method, p.description,
                  p.provider, p.provider_payment_id, p.status, p.reconcile_attempts;
    END LOOP;
END
$$;
COMMENT ON FUNCTION payments.claim_provider_work(int, interval, interval, interval) IS
    'Claims up to lim payments whose provider state is unknown, untouched for min_age and not leased: create (the provider call never completed: retry it with the same idempotency key) or refresh (retrieve the provider''s object). The claim is a lease, not a lock: it is stamped in reconcile_after and committed at once, so the caller calls the provider with no transaction open and records each answer on its own. A lease lasts at least lease and grows with each attempt (doubling from min_age, at most max_backoff), so a payment that keeps failing waits longer and never holds up the others; a status change clears it. Gateway replicas share the work; a killed one''s payments come back when their lease ends.';

CREATE OR REPLACE FUNCTION payments.record_provider_error(payment_id text, error jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_payment payments.payments := payments._locked_payment(record_provider_error.payment_id);
BEGIN
    UPDATE payments.payments p SET last_error = error, updated_at = now()
    WHERE p.customer_id = v_payment.customer_id AND p.id = v_payment.id;
    PERFORM payments._append_event(v_payment.customer_id, v_payment.id, v_payment.status, v_payment.status, false,
                                   'provider', 'provider call failed', jsonb_build_object('last_error', error));
END
$$;
COMMENT ON FUNCTION payments.record_provider_error(text, jsonb) IS
    'Notes that a provider call failed (timeout, outage) without changing the status: last_error is set and the history gets an unapplied event; the payment keeps awaiting the provider, and the reconciler tries again after min_age.';
