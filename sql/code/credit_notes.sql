-- payments: credit notes (their table: sql/state/credit_notes.sql). A credit note reduces a
-- finalized invoice, as Stripe's do: an open invoice owes less (the next attempt charges what is
-- left), a paid one is refunded through the provider (create_refund: the provider outbox) or
-- credited to the customer's balance (the ledger). Never past the invoice's total less its
-- earlier notes: the invoice's row orders them.

CREATE OR REPLACE TRIGGER credit_notes_append_only BEFORE UPDATE OR DELETE ON payments.credit_notes
    FOR EACH ROW EXECUTE FUNCTION payments._refuse_change();
CREATE OR REPLACE TRIGGER credit_notes_no_truncate BEFORE TRUNCATE ON payments.credit_notes
    FOR EACH STATEMENT EXECUTE FUNCTION payments._refuse_change();

CREATE OR REPLACE VIEW payments.credit_note_details WITH (security_invoker) AS
SELECT n.id, n.customer_id, n.invoice_id, n.number, payments.to_major(n.amount_minor, n.currency) AS amount,
       n.amount_minor, n.currency, n.reason, n.method, n.refund_id, n.created_at
FROM payments.credit_notes n;
COMMENT ON VIEW payments.credit_note_details IS
    'Every credit note with its amount in major units (no idempotency keys); readable by payments_reader.';

CREATE OR REPLACE FUNCTION payments._add_credit_note(p_invoice payments.invoices, p_id text, p_amount bigint,
                                                     p_reason text, p_method text, p_refund_id text, p_key text,
                                                     p_fingerprint bytea) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO payments.credit_notes (customer_id, id, invoice_id, number, amount_minor, currency, reason, method,
                                       refund_id, idempotency_key, request_fingerprint)
    VALUES (p_invoice.customer_id, p_id, p_invoice.id, payments._next_number('credit_note', now()), p_amount,
            p_invoice.currency, p_reason, p_method, p_refund_id, p_key, p_fingerprint);
    UPDATE payments.invoices i SET credited_minor = i.credited_minor + p_amount
    WHERE i.customer_id = p_invoice.customer_id AND i.id = p_invoice.id;
    PERFORM payments._emit(p_invoice.customer_id, 'credit_note', p_id, 'created', NULL, false,
                           jsonb_build_object('invoice_id', p_invoice.id, 'amount_minor', p_amount,
                                              'currency', p_invoice.currency, 'method', p_method, 'reason', p_reason));
END
$$;
COMMENT ON FUNCTION payments._add_credit_note(payments.invoices, text, bigint, text, text, text, text, bytea) IS
    'Internal: records a credit note of an invoice the caller has locked (numbered, its amount added to the invoice''s credited_minor) and tells apps (credit_note.created).';

CREATE OR REPLACE FUNCTION payments._creditable(p_invoice payments.invoices) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_applied bigint;
BEGIN
    IF p_invoice.status = 'open' THEN
        RETURN p_invoice.total_minor - p_invoice.credited_minor;  -- what it still owes
    END IF;
    -- A paid invoice: what it charged, prepaid credits and balance included (they paid it too).
    SELECT coalesce(-sum(l.amount_minor), 0) INTO v_applied FROM payments.invoice_lines l
    WHERE l.customer_id = p_invoice.customer_id AND l.invoice_id = p_invoice.id AND l.kind IN ('prepaid_credits', 'balance');
    RETURN p_invoice.total_minor + v_applied - p_invoice.credited_minor;
END
$$;
COMMENT ON FUNCTION payments._creditable(payments.invoices) IS
    'Internal: what credit notes may still credit on an invoice: an open one''s amount due, a paid one''s total before prepaid credits and balance paid part of it, less earlier notes.';

CREATE OR REPLACE FUNCTION payments._credit_note_result(p_customer_id text, p_id text, p_outcome text)
RETURNS TABLE (credit_note_id text, number text, credited numeric, currency text, method text, refund_id text,
               outcome text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY SELECT d.id, d.number, d.amount, d.currency, d.method, d.refund_id, p_outcome
    FROM payments.credit_note_details d WHERE d.customer_id = p_customer_id AND d.id = p_id;
END
$$;
COMMENT ON FUNCTION payments._credit_note_result(text, text, text) IS 'Internal: a credit note as create_credit_note answers it.';

CREATE OR REPLACE FUNCTION payments.create_credit_note(idempotency_key text, invoice_id text, amount numeric,
                                                       reason text, refund boolean DEFAULT false)
RETURNS TABLE (credit_note_id text, number text, credited numeric, currency text, method text, refund_id text,
               outcome text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_invoice  payments.invoices%ROWTYPE;
    v_note     payments.credit_notes%ROWTYPE;
    v_minor    bigint;
    v_fp       bytea;
    v_id       text := payments._new_id('cn');
    v_method   text;
    v_refund   text;
    v_status   text;
    v_paid     payments.invoices%ROWTYPE;
    v_now      timestamptz := now();
BEGIN
    IF idempotency_key IS NULL OR length(idempotency_key) NOT BETWEEN 1 AND 255 OR refund IS NULL THEN
        RAISE EXCEPTION 'idempotency_key must be 1 to 255 characters, refund true or false' USING ERRCODE = 'PM100';
    END IF;
    IF reason IS NULL OR NOT payments._is_allowed('credit_note_reason', reason) THEN
        RAISE EXCEPTION 'reason must be one of %, not %',
            (SELECT string_agg(v.value, ', ') FROM payments.allowed_values() v WHERE v.kind = 'credit_note_reason'),
            quote_nullable(payments._shown(reason)) USING ERRCODE = 'PM100';
    END IF;
    -- The invoice's payment first, then the invoice: the order a payment's news takes.
    SELECT i.* INTO v_invoice FROM payments.invoices i
    WHERE i.customer_id = (SELECT i2.customer_id FROM payments.invoices i2 WHERE i2.id = create_credit_note.invoice_id)
      AND i.id = create_credit_note.invoice_id;
    IF v_invoice.payment_id IS NOT NULL THEN
        PERFORM payments._locked_payment(v_invoice.payment_id);
    END IF;
    v_invoice := payments._locked_invoice(create_credit_note.invoice_id);
    v_minor := payments.to_minor(amount, v_invoice.currency);
    v_fp := sha256(convert_to(jsonb_build_array(v_invoice.id, v_minor, reason, refund)::text, 'UTF8'));
    -- A replay answers as the first call did.
    SELECT * INTO v_note FROM payments.credit_notes n
    WHERE n.customer_id = v_invoice.customer_id AND n.idempotency_key = create_credit_note.idempotency_key;
    IF FOUND THEN
        IF v_note.request_fingerprint <> v_fp THEN
            RAISE EXCEPTION 'idempotency key % was already used with different parameters', quote_literal(idempotency_key)
                USING ERRCODE = 'PM201', DETAIL = 'the key belongs to credit note ' || v_note.number;
        END IF;
        RETURN QUERY SELECT * FROM payments._credit_note_result(v_note.customer_id, v_note.id, 'replayed');
        RETURN;
    END IF;
    IF v_invoice.status NOT IN ('open', 'paid') THEN
        RAISE EXCEPTION 'invoice % is %: only an open or paid invoice takes a credit note', coalesce(v_invoice.number, v_invoice.id),
            v_invoice.status USING ERRCODE = 'PM206';
    ELSIF v_minor > payments._creditable(v_invoice) THEN
        RAISE EXCEPTION 'invoice % has % left to credit, not %', v_invoice.number,
            payments.to_major(payments._creditable(v_invoice), v_invoice.currency),
            payments.to_major(v_minor, v_invoice.currency)
            USING ERRCODE = 'PM207', HINT = 'its total less its earlier credit notes';
    ELSIF refund AND (v_invoice.status = 'open' OR v_invoice.payment_id IS NULL) THEN
        RAISE EXCEPTION 'invoice % was not paid through the provider: nothing to refund', v_invoice.number
            USING ERRCODE = 'PM206', HINT = 'credit the customer''s balance (refund false), or lower what an open invoice owes';
    END IF;
    IF v_invoice.status = 'open' THEN
        -- What it owes drops; an attempt under way at the provider would charge the old amount.
        SELECT p.status INTO v_status FROM payments.payments p
        WHERE p.customer_id = v_invoice.customer_id AND p.id = v_invoice.payment_id;
        IF v_status = 'processing' THEN
            RAISE EXCEPTION 'invoice % has a charge under way at the provider', v_invoice.number
                USING ERRCODE = 'PM206', HINT = 'credit it once that charge has failed or paid it';
        ELSIF v_invoice.payment_id IS NOT NULL THEN
            PERFORM payments._abandon_payment(v_invoice.customer_id, v_invoice.payment_id);
        END IF;
        v_method := 'reduced_amount_due';
        PERFORM payments._add_credit_note(v_invoice, v_id, v_minor, reason, v_method, NULL, idempotency_key, v_fp);
        IF v_invoice.total_minor - v_invoice.credited_minor - v_minor = 0 THEN
            -- Nothing left to owe: paid, as Stripe marks an invoice its credit notes cover.
            UPDATE payments.invoices i SET status = 'paid', paid_at = now(), next_attempt_at = NULL
            WHERE i.customer_id = v_invoice.customer_id AND i.id = v_invoice.id
            RETURNING * INTO v_paid;
            PERFORM payments._invoice_event(v_paid, v_invoice.status);
        ELSIF v_status IS NULL OR v_status = ANY (payments._group('awaiting_customer_payment_status')) THEN
            -- The attempt waiting on the customer was canceled: the next one charges what is left.
            -- (A value, not now() in the coalesce: Citus allows only immutable functions there.)
            UPDATE payments.invoices i SET next_attempt_at = coalesce(i.next_attempt_at, v_now)
            WHERE i.customer_id = v_invoice.customer_id AND i.id = v_invoice.id;
        END IF;
    ELSIF refund THEN
        v_method := 'refund';
        SELECT r.id INTO v_refund FROM payments.create_refund(
            'invoice:' || v_invoice.id || ':credit-note:' || v_id, v_invoice.payment_id,
            payments.to_major(v_minor, v_invoice.currency),
            CASE WHEN reason IN ('duplicate', 'fraudulent') THEN reason ELSE 'requested_by_customer' END) r;
        PERFORM payments._add_credit_note(v_invoice, v_id, v_minor, reason, v_method, v_refund, idempotency_key, v_fp);
    ELSE
        v_method := 'customer_balance';
        PERFORM payments._add_credit_note(v_invoice, v_id, v_minor, reason, v_method, NULL, idempotency_key, v_fp);
        PERFORM payments._move(v_invoice.customer_id, 'credit_note', v_id, v_invoice.currency, v_minor, 'revenue', 'balance');
    END IF;
    RETURN QUERY SELECT * FROM payments._credit_note_result(v_invoice.customer_id, v_id, 'created');
END
$$;
COMMENT ON FUNCTION payments.create_credit_note(text, text, numeric, text, boolean) IS
    'Reduces a finalized invoice by amount (major units, exact), idempotently, as Stripe''s credit notes: on an open invoice it lowers what is owed (a payment waiting on the customer is canceled and the next attempt charges the rest; nothing left: the invoice is paid); on a paid one it refunds that much of its payment through the provider (refund true; create_refund) or credits the customer''s balance in the ledger (refund false), which pays its next invoices. Never more than the invoice''s total less its earlier notes, however many are made at once (PM207). reason: duplicate, fraudulent, order_change or product_unsatisfactory. Numbered CN-YYYY-NNNNNN, gaplessly; outcome created, or replayed for the same key and parameters again. A draft or void invoice, a refund of an invoice not paid through the provider (open, or paid by credits), or an open one whose charge is under way at the provider: PM206; an unknown invoice PM204; the same key with other parameters PM201.';

CREATE OR REPLACE FUNCTION payments._credit_note_for_refund(p_customer_id text, p_payment_id text, p_refund_id text,
                                                            p_amount bigint, p_key text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_invoice payments.invoices%ROWTYPE;
    v_amount  bigint;
BEGIN
    -- A refund the product made for an invoice (a credit note's, money for nothing) has its own account.
    IF p_key LIKE 'invoice:%' THEN
        RETURN;
    END IF;
    SELECT * INTO v_invoice FROM payments.invoices i
    WHERE i.customer_id = p_customer_id AND i.payment_id = p_payment_id AND i.status = 'paid' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;  -- a payment of no invoice
    END IF;
    v_amount := least(p_amount, payments._creditable(v_invoice));
    IF v_amount > 0 THEN
        PERFORM payments._add_credit_note(v_invoice, payments._new_id('cn'), v_amount, NULL, 'refund', p_refund_id,
                                          NULL, NULL);
    END IF;
END
$$;
COMMENT ON FUNCTION payments._credit_note_for_refund(text, text, text, bigint, text) IS
    'Internal (create_refund): a refund of the payment that paid an invoice makes that invoice''s credit note (method refund), so the invoice shows it; never past what the invoice has left to credit.';

CREATE OR REPLACE FUNCTION payments.list_credit_notes(invoice_id text) RETURNS SETOF payments.credit_note_details
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_invoice payments.invoice_details%ROWTYPE;
BEGIN
    SELECT * INTO v_invoice FROM payments.get_invoice(list_credit_notes.invoice_id);
    RETURN QUERY SELECT * FROM payments.credit_note_details d
    WHERE d.customer_id = v_invoice.customer_id AND d.invoice_id = v_invoice.id ORDER BY d.number;
END
$$;
COMMENT ON FUNCTION payments.list_credit_notes(text) IS 'An invoice''s credit notes in the order they were numbered; PM204 for an unknown invoice.';

CREATE OR REPLACE FUNCTION payments.get_credit_note(id text) RETURNS SETOF payments.credit_note_details
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- Read once, here: inside the query Citus would send it to the shards.
    v_bound text := payments._bound_customer();
BEGIN
    RETURN QUERY SELECT * FROM payments.credit_note_details d
    WHERE d.customer_id = (SELECT n.customer_id FROM payments.credit_notes n WHERE n.id = get_credit_note.id)
      AND d.id = get_credit_note.id AND d.customer_id = coalesce(v_bound, d.customer_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'credit note % not found', payments._shown(get_credit_note.id) USING ERRCODE = 'PM204';
    END IF;
END
$$;
COMMENT ON FUNCTION payments.get_credit_note(text) IS 'One credit note by id; PM204 when there is none (or it is another customer''s, to a bound login).';
