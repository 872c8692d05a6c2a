-- payments: reconciliation against the provider. The gateway pulls the
-- provider's objects of a time window (PaymentIntents and refunds, through
-- its list endpoints) into provider_snapshots; reconciliation_report lists
-- every disagreement between them and our rows; reconcile runs it, optionally
-- repairs what the provider's objects can repair, and records each run.

CREATE OR REPLACE TRIGGER reconciliation_runs_append_only BEFORE UPDATE OR DELETE ON payments.reconciliation_runs
    FOR EACH ROW EXECUTE FUNCTION payments._refuse_change();

CREATE OR REPLACE FUNCTION payments.record_provider_snapshot(provider text, objects jsonb) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_object   jsonb;
    v_evidence jsonb;
    v_ppid     text;
    v_status   text;
    v_amount   bigint;
    v_created  timestamptz;
    v_kept     integer := 0;
BEGIN
    IF provider IS NULL OR length(provider) NOT BETWEEN 1 AND 255 OR jsonb_typeof(objects) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'provider (1 to 255 characters) and objects (a JSON array) are required' USING ERRCODE = 'PM100';
    END IF;
    FOR v_object IN SELECT value FROM jsonb_array_elements(objects) LOOP
        v_evidence := payments._provider_object(record_provider_snapshot.provider, NULL, v_object);
        v_ppid := v_evidence ->> 'provider_payment_id';
        -- Objects that cannot be ours are passed over: a refund of a bare charge (no
        -- payment of the provider's), another kind of object, one without an id or a created time.
        CONTINUE WHEN coalesce(v_evidence ->> 'kind', '') NOT IN ('payment', 'refund') OR v_ppid IS NULL OR length(v_ppid) > 255
                      OR length(v_evidence ->> 'id') > 255 OR v_evidence ->> 'id' IS NULL OR v_evidence ->> 'created' IS NULL;
        -- Computed here, not in the INSERT: Citus sends its expressions to a worker.
        v_status := v_evidence ->> 'status';
        v_amount := CASE WHEN (v_evidence ->> 'amount') ~ '^[0-9]{1,18}$' THEN (v_evidence ->> 'amount')::bigint END;
        v_created := payments._unix_time((v_evidence ->> 'created')::bigint);
        INSERT INTO payments.provider_snapshots AS s (provider, provider_payment_id, object_type, object_id, status,
                                                      amount_minor, currency, created, object)
        VALUES (record_provider_snapshot.provider, v_ppid, v_evidence ->> 'kind', v_evidence ->> 'id', v_status, v_amount,
                upper(v_evidence ->> 'currency'), v_created,
                payments._provider_redacted(record_provider_snapshot.provider, v_object))
        -- excluded.fetched_at, not now(): Citus allows only immutable functions in DO UPDATE SET.
        ON CONFLICT ON CONSTRAINT provider_snapshots_pkey DO UPDATE
        SET status = excluded.status, amount_minor = excluded.amount_minor, currency = excluded.currency,
            created = excluded.created, object = excluded.object, fetched_at = excluded.fetched_at;
        v_kept := v_kept + 1;
    END LOOP;
    RETURN v_kept;
END
$$;
COMMENT ON FUNCTION payments.record_provider_snapshot(text, jsonb) IS
    'Keeps the provider''s objects (a JSON array of its payments and refunds, as its list endpoints return them: Stripe''s PaymentIntents and Refunds) in provider_snapshots, read by its wire format, replacing earlier copies; returns how many it kept (objects that cannot be ours, such as a refund of a charge without a PaymentIntent, are passed over). The gateway calls it page by page.';

CREATE OR REPLACE FUNCTION payments.reconciliation_window("from" timestamptz, "to" timestamptz)
RETURNS TABLE (from_unix bigint, to_unix bigint)
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF "from" IS NULL OR "to" IS NULL OR NOT isfinite("from") OR NOT isfinite("to") OR "from" >= "to"
       OR "to" - "from" > interval '92 days' THEN
        RAISE EXCEPTION 'from must be before to, both finite and at most 92 days apart' USING ERRCODE = 'PM100',
            HINT = 'reconcile a long history a window at a time';
    END IF;
    from_unix := floor(extract(epoch FROM "from"))::bigint;
    to_unix := ceil(extract(epoch FROM "to"))::bigint;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION payments.reconciliation_window(timestamptz, timestamptz) IS
    'The window [from, to) a reconciliation covers, as Unix seconds for the provider''s list calls: both finite, from before to, at most 92 days apart (a run''s work is bounded); PM100 otherwise.';

CREATE OR REPLACE FUNCTION payments.reconciliation_report("from" timestamptz, "to" timestamptz, only_provider text DEFAULT NULL)
RETURNS TABLE (kind text, provider text, object_type text, provider_object_id text, payment_id text, refund_id text,
               ours jsonb, theirs jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_snap    record;
    v_link    record;
    v_payment payments.payments%ROWTYPE;
    v_refund  payments.refunds%ROWTYPE;
    v_ours    record;
BEGIN
    PERFORM payments.reconciliation_window("from", "to");
    -- The platform's books: a login bound to one customer gets none of it.
    IF payments._bound_customer() IS NOT NULL THEN
        RETURN;
    END IF;
    -- The provider's objects of the window, each against our row. One lookup per
    -- object, each on its own shard on Citus.
    FOR v_snap IN
        SELECT s.* FROM payments.provider_snapshots s
        WHERE s.created >= "from" AND s.created < "to"
          AND (only_provider IS NULL OR s.provider = only_provider)
        ORDER BY s.created, s.object_id
    LOOP
        provider := v_snap.provider;
        object_type := v_snap.object_type;
        provider_object_id := v_snap.object_id;
        theirs := jsonb_build_object('status', v_snap.status, 'amount_minor', v_snap.amount_minor,
                                     'currency', v_snap.currency);
        SELECT pp.payment_id, pp.customer_id INTO v_link FROM payments.provider_payments pp
        WHERE pp.provider_payment_id = v_snap.provider_payment_id AND pp.provider = v_snap.provider;
        v_payment := NULL;
        IF v_link.payment_id IS NOT NULL THEN
            SELECT * INTO v_payment FROM payments.payments p
            WHERE p.customer_id = v_link.customer_id AND p.id = v_link.payment_id;
        END IF;
        payment_id := v_payment.id;
        refund_id := NULL;
        IF v_snap.object_type = 'payment' THEN
            ours := CASE WHEN v_payment.id IS NOT NULL THEN
                        jsonb_build_object('status', v_payment.status, 'amount_minor', v_payment.amount_minor,
                                           'currency', v_payment.currency) END;
            kind := CASE
                WHEN v_payment.id IS NULL THEN 'unknown_to_us'
                WHEN v_snap.currency IS DISTINCT FROM v_payment.currency THEN 'currency_differs'
                WHEN v_snap.amount_minor IS DISTINCT FROM v_payment.amount_minor THEN 'amount_differs'
                WHEN v_snap.status = 'succeeded' AND v_payment.status <> 'succeeded' THEN 'missed_success'
                WHEN v_snap.status IS NOT NULL AND v_snap.status <> v_payment.status THEN 'status_differs' END;
        ELSE
            v_refund := NULL;
            IF v_payment.id IS NOT NULL THEN
                SELECT * INTO v_refund FROM payments.refunds r
                WHERE r.customer_id = v_payment.customer_id AND r.provider = v_snap.provider
                  AND r.provider_refund_id = v_snap.object_id;
            END IF;
            refund_id := v_refund.id;
            ours := CASE WHEN v_refund.id IS NOT NULL THEN
                        jsonb_build_object('status', v_refund.status, 'amount_minor', v_refund.amount_minor,
                                           'currency', v_refund.currency) END;
            kind := CASE
                WHEN v_refund.id IS NULL THEN 'unknown_to_us'
                WHEN v_snap.currency IS DISTINCT FROM v_refund.currency THEN 'currency_differs'
                WHEN v_snap.amount_minor IS DISTINCT FROM v_refund.amount_minor THEN 'amount_differs'
                WHEN v_snap.status = 'succeeded' AND v_refund.status <> 'succeeded' THEN 'missed_success'
                WHEN v_snap.status IS NOT NULL AND v_snap.status <> v_refund.status THEN 'status_differs' END;
        END IF;
        IF kind IS NOT NULL THEN
            RETURN NEXT;
        END IF;
    END LOOP;
    -- Our rows of the window the provider does not know.
    theirs := NULL;
    FOR v_ours IN
        SELECT p.id, p.customer_id, p.provider, p.provider_payment_id, p.status, p.amount_minor, p.currency
        FROM payments.payments p
        WHERE p.created_at >= "from" AND p.created_at < "to" AND p.provider_payment_id IS NOT NULL
          AND (only_provider IS NULL OR p.provider = only_provider)
        ORDER BY p.created_at, p.id
    LOOP
        PERFORM FROM payments.provider_snapshots s
        WHERE s.provider_payment_id = v_ours.provider_payment_id AND s.provider = v_ours.provider
          AND s.object_type = 'payment';
        CONTINUE WHEN FOUND;
        kind := 'unknown_to_provider';
        provider := v_ours.provider;
        object_type := 'payment';
        provider_object_id := v_ours.provider_payment_id;
        payment_id := v_ours.id;
        refund_id := NULL;
        ours := jsonb_build_object('status', v_ours.status, 'amount_minor', v_ours.amount_minor, 'currency', v_ours.currency);
        RETURN NEXT;
    END LOOP;
    FOR v_ours IN
        SELECT r.id, r.payment_id, r.provider, r.provider_refund_id, r.status, r.amount_minor, r.currency,
               p.provider_payment_id
        FROM payments.refunds r
        JOIN payments.payments p ON p.customer_id = r.customer_id AND p.id = r.payment_id
        WHERE r.created_at >= "from" AND r.created_at < "to" AND r.provider_refund_id IS NOT NULL
          AND (only_provider IS NULL OR r.provider = only_provider)
        ORDER BY r.created_at, r.id
    LOOP
        PERFORM FROM payments.provider_snapshots s
        WHERE s.provider_payment_id = v_ours.provider_payment_id AND s.provider = v_ours.provider
          AND s.object_type = 'refund' AND s.object_id = v_ours.provider_refund_id;
        CONTINUE WHEN FOUND;
        kind := 'unknown_to_provider';
        provider := v_ours.provider;
        object_type := 'refund';
        provider_object_id := v_ours.provider_refund_id;
        payment_id := v_ours.payment_id;
        refund_id := v_ours.id;
        ours := jsonb_build_object('status', v_ours.status, 'amount_minor', v_ours.amount_minor, 'currency', v_ours.currency);
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION payments.reconciliation_report(timestamptz, timestamptz, text) IS
    'Every disagreement between the provider''s objects created in [from, to) (as provider_snapshots last saw them) and our rows created then (of only_provider when given): missed_success (the provider succeeded, we did not: a missed webhook), status_differs, amount_differs, currency_differs, unknown_to_us (a provider object we have no row for), unknown_to_provider (a row of ours linked to an object the provider did not list). ours and theirs show status, amount_minor and currency. Pull the window first (payments-gateway reconcile does).';

CREATE OR REPLACE FUNCTION payments.reconcile("from" timestamptz, "to" timestamptz, provider text, repair boolean DEFAULT false)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id       text := payments._new_id('rec');
    v_row      record;
    v_repaired_one boolean;
    v_snap     payments.provider_snapshots%ROWTYPE;
    v_payment  payments.payments%ROWTYPE;
    v_customer text;
    v_outcome  text;
    v_found    jsonb[] := '{}';
    v_repaired integer := 0;
BEGIN
    IF reconcile.provider IS NULL OR repair IS NULL THEN
        RAISE EXCEPTION 'provider and repair are required' USING ERRCODE = 'PM100';
    END IF;
    FOR v_row IN SELECT * FROM payments.reconciliation_report("from", "to", reconcile.provider) LOOP
        v_repaired_one := false;
        -- What the provider's own object settles: the status of a payment or refund we
        -- have, or a refund of one of our payments made at the provider directly.
        IF repair AND (v_row.kind IN ('missed_success', 'status_differs')
                       OR (v_row.kind = 'unknown_to_us' AND v_row.object_type = 'refund' AND v_row.payment_id IS NOT NULL)) THEN
            IF v_row.object_type = 'payment' THEN
                SELECT s.* INTO v_snap FROM payments.provider_snapshots s
                WHERE s.provider_payment_id = v_row.provider_object_id AND s.provider = reconcile.provider
                  AND s.object_type = 'payment' AND s.object_id = v_row.provider_object_id;
                SELECT r.outcome INTO v_outcome
                FROM payments.record_provider_result(v_row.payment_id, reconcile.provider, v_row.provider_object_id,
                                                     v_snap.status, v_snap.object) r;
            ELSE
                -- Lock order as everywhere: the provider id's row, then the payment's.
                v_customer := payments._customer_of(v_row.payment_id);
                SELECT p.* INTO v_payment FROM payments.payments p
                WHERE p.customer_id = v_customer AND p.id = v_row.payment_id;
                PERFORM payments._lock_provider_payment(v_payment.provider, v_payment.provider_payment_id);
                v_payment := payments._locked_payment(v_row.payment_id);
                SELECT s.* INTO v_snap FROM payments.provider_snapshots s
                WHERE s.provider_payment_id = v_payment.provider_payment_id AND s.provider = reconcile.provider
                  AND s.object_type = 'refund' AND s.object_id = v_row.provider_object_id;
                v_outcome := payments._apply_refund_object(v_payment, v_row.refund_id,
                                                           payments._provider_object(reconcile.provider, 'refund', v_snap.object),
                                                           'provider', NULL);
            END IF;
            v_repaired_one := v_outcome = 'applied';
            v_repaired := v_repaired + v_repaired_one::int;
        END IF;
        -- An array appended in place (a jsonb array would be copied at each step: quadratic).
        v_found := v_found || jsonb_build_object('kind', v_row.kind, 'object_type', v_row.object_type,
                                                 'provider_object_id', v_row.provider_object_id,
                                                 'payment_id', v_row.payment_id, 'refund_id', v_row.refund_id,
                                                 'ours', v_row.ours, 'theirs', v_row.theirs, 'repaired', v_repaired_one);
    END LOOP;
    INSERT INTO payments.reconciliation_runs (id, provider, window_from, window_to, repair, disagreements, repaired)
    VALUES (v_id, reconcile.provider, "from", "to", repair, to_jsonb(v_found), v_repaired);
    RETURN jsonb_build_object('id', v_id, 'provider', reconcile.provider, 'from', "from", 'to', "to", 'repair', repair,
                              'repaired', v_repaired, 'disagreements', to_jsonb(v_found));
END
$$;
COMMENT ON FUNCTION payments.reconcile(timestamptz, timestamptz, text, boolean) IS
    'Runs reconciliation_report for one provider, records the run in reconciliation_runs and returns it: {"id", "provider", "from", "to", "repair", "repaired", "disagreements": [{"kind", "object_type", "provider_object_id", "payment_id", "refund_id", "ours", "theirs", "repaired"}]}. With repair, a payment or refund whose status the provider''s object settles (missed_success, status_differs) is refreshed from that object, and a refund of one of our payments made at the provider directly (unknown_to_us) is taken in, through the same checks as any provider answer (its money must match; a final status never moves back): repaired says whether it moved. Amount and currency disagreements and unknown objects are left to an operator.';
