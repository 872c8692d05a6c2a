-- payments: the double-entry ledger (its tables: sql/state/ledger.sql; its chart of accounts:
-- core/src/ledger.rs). Every transfer is one row that debits one account and credits another by
-- the same amount, so every transfer balances by construction, in the transaction of what it
-- records. Accounts are per customer and unit, the platform's too (summed on read): no row is
-- shared by every customer's postings.

CREATE OR REPLACE TRIGGER ledger_transfers_append_only BEFORE UPDATE OR DELETE ON payments.ledger_transfers
    FOR EACH ROW EXECUTE FUNCTION payments._refuse_change();
CREATE OR REPLACE TRIGGER ledger_transfers_no_truncate BEFORE TRUNCATE ON payments.ledger_transfers
    FOR EACH STATEMENT EXECUTE FUNCTION payments._refuse_change();
CREATE OR REPLACE TRIGGER holds_lifecycle BEFORE UPDATE OF status ON payments.holds
    FOR EACH ROW EXECUTE FUNCTION payments._lifecycle_guard('hold_status');

COMMENT ON FUNCTION payments.ledger_accounts() IS
    'The chart of accounts: each account''s owner (customer: the customer''s own; platform: the platform''s, kept per customer and summed over them), the side its balance normally sits on, and what it holds.';
COMMENT ON FUNCTION payments._unit(text) IS
    'Internal: how a unit is stored (a currency''s code in upper case, a credit unit such as tokens as given), NULL for no unit.';
COMMENT ON FUNCTION payments._to_units(numeric, text) IS
    'Internal: an amount in the unit''s smallest steps (minor units, whole credit units), NULL when invalid (payments._units raises why).';
COMMENT ON FUNCTION payments._units_error(numeric, text) IS 'Internal: {sqlstate, message, hint} of an invalid amount in a unit, NULL when valid.';
COMMENT ON FUNCTION payments._units_major(bigint, text) IS
    'Internal: smallest steps of a unit as the amount a person reads (major units of a currency, whole credit units).';
COMMENT ON FUNCTION payments._account_sign(text) IS
    'Internal: 1 for a debit-normal account, -1 for a credit-normal one: times the debits less the credits, its balance.';
COMMENT ON FUNCTION payments._account_owner(text) IS 'Internal: customer or platform, whose account it is.';

CREATE OR REPLACE FUNCTION payments._units(p_amount numeric, p_unit text) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_units bigint := payments._to_units(p_amount, p_unit);
    v_error text[];
BEGIN
    IF v_units IS NULL THEN
        IF p_unit IS NULL OR p_amount IS NULL THEN
            RAISE EXCEPTION 'an amount and a unit are required' USING ERRCODE = 'PM100';
        END IF;
        v_error := payments._units_error(p_amount, p_unit);
        RAISE EXCEPTION USING ERRCODE = v_error[1], MESSAGE = v_error[2], HINT = coalesce(v_error[3], '');
    END IF;
    RETURN v_units;
END
$$;
COMMENT ON FUNCTION payments._units(numeric, text) IS
    'Internal: an amount in a unit''s smallest steps, or the error: excess precision (PM101; credit units are whole), zero or negative (PM102), above the maximum (PM104), no unit (PM106).';

CREATE OR REPLACE FUNCTION payments._move(p_customer_id text, p_kind text, p_reference text, p_unit text, p_amount bigint,
                                          p_debit text, p_credit text, p_grant_id text DEFAULT NULL,
                                          p_key text DEFAULT NULL, p_fingerprint bytea DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_id text := payments._new_id('tr');
BEGIN
    IF p_amount = 0 THEN
        RETURN NULL;  -- nothing moved
    END IF;
    -- A negative amount moves the other way (a refund that failed after it succeeded).
    INSERT INTO payments.ledger_transfers (customer_id, id, kind, reference, debit_account, credit_account, unit, amount,
                                           grant_id, idempotency_key, request_fingerprint)
    VALUES (p_customer_id, v_id, p_kind, p_reference,
            CASE WHEN p_amount > 0 THEN p_debit ELSE p_credit END, CASE WHEN p_amount > 0 THEN p_credit ELSE p_debit END,
            p_unit, abs(p_amount), p_grant_id, p_key, p_fingerprint)
    ON CONFLICT ON CONSTRAINT ledger_transfers_idempotency_key DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- What is left of the grant moves with it (a grant made after its first transfer starts
    -- from that transfer's amount: grant_credits).
    IF p_grant_id IS NOT NULL THEN
        UPDATE payments.credit_grants g
        SET remaining = g.remaining + CASE WHEN p_credit = 'credits' THEN p_amount ELSE -p_amount END
        WHERE g.customer_id = p_customer_id AND g.id = p_grant_id;
    END IF;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION payments._move(text, text, text, text, bigint, text, text, text, text, bytea) IS
    'Internal: posts one transfer of p_amount (negative: the other way) from p_credit to p_debit for a customer and returns its id; NULL when nothing moved or p_key was taken (the caller replays). Called in the transaction of the change it records.';

CREATE OR REPLACE FUNCTION payments._check_grant(p_expires_at timestamptz, p_applies_to text, p_priority integer)
RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF length(p_applies_to) NOT BETWEEN 1 AND 255 OR p_priority IS NULL THEN
        RAISE EXCEPTION 'applies_to is 1 to 255 characters (or NULL: invoices), priority an integer' USING ERRCODE = 'PM100';
    END IF;
    IF p_expires_at <= now() OR NOT isfinite(p_expires_at) THEN
        RAISE EXCEPTION 'expires_at must be a finite time in the future (or NULL: never)' USING ERRCODE = 'PM100';
    END IF;
END
$$;
COMMENT ON FUNCTION payments._check_grant(timestamptz, text, integer) IS
    'Internal: PM100 unless a grant''s expiry is in the future (or none), applies_to 1 to 255 characters (or none) and its priority given.';

CREATE OR REPLACE FUNCTION payments.grant_credits(idempotency_key text, customer_id text, amount numeric, unit text,
                                                  expires_at timestamptz DEFAULT NULL, applies_to text DEFAULT NULL,
                                                  priority integer DEFAULT 0)
RETURNS TABLE (grant_id text, outcome text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_units    bigint;
    v_unit     text;
    v_id       text := payments._new_id('cg');
    v_fp       bytea;
    v_transfer payments.ledger_transfers%ROWTYPE;
BEGIN
    PERFORM payments._check_key_and_customer(idempotency_key, customer_id);
    PERFORM payments._check_grant(expires_at, applies_to, priority);
    v_units := payments._units(amount, unit);
    v_unit := payments._unit(unit);
    v_fp := sha256(convert_to(jsonb_build_array(v_units, v_unit, expires_at, applies_to, priority)::text, 'UTF8'));
    -- The transfer carries the key: a concurrent call with the same key waits on it, then replays.
    IF payments._move(grant_credits.customer_id, 'credit_grant', v_id, v_unit, v_units, 'credits_issued', 'credits', v_id,
                      grant_credits.idempotency_key, v_fp) IS NOT NULL THEN
        INSERT INTO payments.credit_grants (customer_id, id, unit, amount, applies_to, priority, expires_at, remaining)
        VALUES (grant_credits.customer_id, v_id, v_unit, v_units, grant_credits.applies_to, grant_credits.priority,
                grant_credits.expires_at, v_units);
        RETURN QUERY SELECT v_id, 'created'::text;
        RETURN;
    END IF;
    SELECT * INTO v_transfer FROM payments.ledger_transfers t
    WHERE t.customer_id = grant_credits.customer_id AND t.idempotency_key = grant_credits.idempotency_key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'idempotency key % was claimed by a concurrent transaction', quote_literal(idempotency_key)
            USING ERRCODE = '40001', HINT = 'retry the transaction';
    ELSIF v_transfer.request_fingerprint <> v_fp OR v_transfer.kind <> 'credit_grant' THEN
        RAISE EXCEPTION 'idempotency key % was already used with different parameters', quote_literal(idempotency_key)
            USING ERRCODE = 'PM201', DETAIL = 'the key belongs to transfer ' || v_transfer.id;
    END IF;
    RETURN QUERY SELECT v_transfer.reference, 'replayed'::text;
END
$$;
COMMENT ON FUNCTION payments.grant_credits(text, text, numeric, text, timestamptz, text, integer) IS
    'Grants a customer prepaid credits, idempotently: amount of unit (a currency: money credit in major units; or a credit unit such as tokens, in whole units), lasting until expires_at (NULL: never), for applies_to (a feature or meter; NULL: invoices), used by priority (lower first) then soonest expiry. Posts credits_issued to the customer''s credits and returns the grant''s id (payments.credit_grant_details shows it) and outcome created; the same key with the same parameters replays it (outcome replayed), with others it is PM201. Bad amounts and units: PM101, PM102, PM104, PM106; a past expiry: PM100.';

CREATE OR REPLACE FUNCTION payments.top_up(idempotency_key text, customer_id text, amount numeric, currency text,
                                           payment_method text, credits jsonb DEFAULT NULL)
RETURNS SETOF payments.payment_result
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_minor  bigint := payments.to_minor(amount, currency);
    v_unit   text := upper(currency);
    v_units  bigint := v_minor;
    v_expiry timestamptz;
    v_result payments.payment_result;
BEGIN
    IF payment_method IS NULL OR length(payment_method) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'a top-up is paid: payment_method is required' USING ERRCODE = 'PM100';
    END IF;
    IF credits IS NOT NULL THEN
        IF jsonb_typeof(credits) <> 'object' OR NOT credits ?& ARRAY['amount', 'unit']
           OR credits - ARRAY['amount', 'unit', 'expires_at', 'applies_to', 'priority'] <> '{}' THEN
            RAISE EXCEPTION 'credits is {"amount", "unit", "expires_at"?, "applies_to"?, "priority"?} or NULL (money credit of the amount paid)'
                USING ERRCODE = 'PM100';
        END IF;
        v_units := payments._units((credits ->> 'amount')::numeric, credits ->> 'unit');
        v_unit := payments._unit(credits ->> 'unit');
        v_expiry := (credits ->> 'expires_at')::timestamptz;
        PERFORM payments._check_grant(v_expiry, credits ->> 'applies_to', coalesce((credits ->> 'priority')::integer, 0));
    END IF;
    -- A budget in the currency counts top-ups too (the wallet's lock orders concurrent ones).
    IF EXISTS (SELECT 1 FROM payments.wallets w WHERE w.customer_id = top_up.customer_id AND w.unit = upper(currency)
               AND w.spend_limit IS NOT NULL)
       AND NOT EXISTS (SELECT 1 FROM payments.payments p
                       WHERE p.customer_id = top_up.customer_id AND p.idempotency_key = top_up.idempotency_key) THEN
        PERFORM 1 FROM payments.wallets w WHERE w.customer_id = top_up.customer_id AND w.unit = upper(currency) FOR UPDATE;
        IF v_minor > payments._spend_room(top_up.customer_id, upper(currency), now()) THEN
            RAISE EXCEPTION 'a top-up of % % would pass the spend limit', amount, upper(currency) USING ERRCODE = 'PM210',
                DETAIL = 'left this period: ' || payments._units_major(payments._spend_room(top_up.customer_id,
                                                                                            upper(currency), now()),
                                                                       upper(currency));
        END IF;
    END IF;
    -- What it grants is part of the payment's parameters (its metadata), so a key reused for
    -- other credits is PM201; the trusted copy is the top_ups row.
    SELECT * INTO v_result FROM payments.create_payment(idempotency_key, customer_id, amount, currency, payment_method,
        'top-up', jsonb_build_object('top_up', jsonb_build_object('amount', v_units, 'unit', v_unit,
                                                                  'expires_at', v_expiry,
                                                                  'applies_to', credits ->> 'applies_to',
                                                                  'priority', credits ->> 'priority')::text));
    INSERT INTO payments.top_ups (customer_id, payment_id, unit, amount, applies_to, priority, expires_at)
    VALUES (top_up.customer_id, v_result.id, v_unit, v_units, credits ->> 'applies_to',
            coalesce((credits ->> 'priority')::integer, 0), v_expiry)
    ON CONFLICT ON CONSTRAINT top_ups_pkey DO NOTHING;
    IF v_result.outcome = 'created' THEN
        PERFORM payments._tell_spend(top_up.customer_id, upper(currency), v_minor, now());
    END IF;
    RETURN NEXT v_result;
END
$$;
COMMENT ON FUNCTION payments.top_up(text, text, numeric, text, text, jsonb) IS
    'Buys credits: a payment of amount in currency with payment_method (charged by the gateway like any payment made in SQL), which grants, when it succeeds and never before or twice, money credit of what was paid (credits NULL) or credits {"amount", "unit", "expires_at"?, "applies_to"?, "priority"?} such as 1000 tokens. A declined payment grants nothing. Idempotent as create_payment: the same key with other parameters or credits is PM201. Returns the payment.';

CREATE OR REPLACE FUNCTION payments._top_up_refunded(p_customer_id text, p_payment_id text, p_refund_id text,
                                                     p_amount bigint, p_strict boolean) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_top      payments.top_ups%ROWTYPE;
    v_currency text;
    v_paid     bigint;
    v_left     bigint;
    v_take     bigint;
BEGIN
    SELECT * INTO v_top FROM payments.top_ups t
    WHERE t.customer_id = p_customer_id AND t.payment_id = p_payment_id AND t.grant_id IS NOT NULL;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT p.currency, p.amount_captured_minor INTO v_currency, v_paid FROM payments.payments p
    WHERE p.customer_id = p_customer_id AND p.id = p_payment_id;
    SELECT g.remaining INTO v_left FROM payments.credit_grants g
    WHERE g.customer_id = p_customer_id AND g.id = v_top.grant_id FOR UPDATE;
    -- The credits the refunded money bought: as much money credit, or its share of other credits.
    v_take := CASE WHEN v_top.unit = v_currency THEN p_amount ELSE ceil(v_top.amount::numeric * p_amount / v_paid)::bigint END;
    IF p_strict AND v_take > v_left THEN
        RAISE EXCEPTION 'only what is unspent of a top-up can be refunded: % % of its credits are left',
            payments._units_major(v_left, v_top.unit), v_top.unit USING ERRCODE = 'PM207';
    END IF;
    -- Money credit goes back as the refund (credits > refunds; the refund then leaves clearing);
    -- credits of another unit are taken back from what was issued.
    PERFORM payments._move(p_customer_id, 'refund', p_refund_id, v_top.unit, least(v_take, v_left), 'credits',
                           CASE WHEN v_top.unit = v_currency THEN 'refunds' ELSE 'credits_issued' END, v_top.grant_id);
END
$$;
COMMENT ON FUNCTION payments._top_up_refunded(text, text, text, bigint, boolean) IS
    'Internal: a refund of a top-up''s payment takes back the credits the refunded money bought, when the refund is made: create_refund (p_strict) refuses more than is unspent (PM207); a refund made at the provider takes back what is left.';

CREATE OR REPLACE FUNCTION payments._top_up_refund_undone(p_customer_id text, p_refund_id text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_taken record;
BEGIN
    -- A refund that failed or was canceled gives the credits it took back.
    FOR v_taken IN
        SELECT t.unit, t.amount, t.credit_account, t.grant_id FROM payments.ledger_transfers t
        WHERE t.customer_id = p_customer_id AND t.reference = p_refund_id AND t.kind = 'refund'
          AND t.debit_account = 'credits'
    LOOP
        PERFORM payments._move(p_customer_id, 'refund', p_refund_id, v_taken.unit, v_taken.amount,
                               v_taken.credit_account, 'credits', v_taken.grant_id);
    END LOOP;
END
$$;
COMMENT ON FUNCTION payments._top_up_refund_undone(text, text) IS
    'Internal: gives back to a top-up''s grant the credits a refund took, when the refund fails or is canceled.';

CREATE OR REPLACE FUNCTION payments.set_auto_top_up(customer_id text, below numeric, amount numeric,
                                                    payment_method text, currency text DEFAULT 'usd') RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_below  bigint;
    v_amount bigint;
BEGIN
    IF customer_id IS NULL OR length(customer_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'customer_id must be 1 to 255 characters' USING ERRCODE = 'PM100';
    END IF;
    PERFORM payments.to_minor(1, currency);
    IF below IS NOT NULL THEN
        v_below := CASE WHEN below = 0 THEN 0 ELSE payments.to_minor(below, currency) END;
        v_amount := payments.to_minor(amount, currency);
        IF payment_method IS NULL OR length(payment_method) NOT BETWEEN 1 AND 255 THEN
            RAISE EXCEPTION 'an automatic top-up is paid: payment_method is required' USING ERRCODE = 'PM100';
        END IF;
    END IF;
    -- Setting it again clears the memory of a failed top-up.
    INSERT INTO payments.wallets (customer_id, unit, auto_top_up_below, auto_top_up_amount, auto_top_up_method)
    VALUES (set_auto_top_up.customer_id, upper(currency), v_below, v_amount,
            CASE WHEN below IS NOT NULL THEN payment_method END)
    ON CONFLICT ON CONSTRAINT wallets_pkey DO UPDATE
    SET auto_top_up_below = excluded.auto_top_up_below, auto_top_up_amount = excluded.auto_top_up_amount,
        auto_top_up_method = excluded.auto_top_up_method, auto_top_up_payment = NULL;
    RETURN below IS NOT NULL;
END
$$;
COMMENT ON FUNCTION payments.set_auto_top_up(text, numeric, numeric, text, text) IS
    'Automatic top-up of a customer''s money credit in currency (default USD): when a settled hold or an expiry leaves less than below available, amount is bought with payment_method (payments.top_up, charged by the gateway), once per crossing however many agents spend at once; while that payment is not final no other is made, and after one that did not succeed none until this is called again. below NULL turns it off. Returns whether it is on.';

CREATE OR REPLACE FUNCTION payments._maybe_top_up(p_customer_id text, p_unit text, p_at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_wallet    payments.wallets%ROWTYPE;
    v_status    text;
    v_available bigint;
    v_payment   text;
BEGIN
    -- Most wallets have none: no lock is taken for them.
    IF NOT EXISTS (SELECT 1 FROM payments.wallets w WHERE w.customer_id = p_customer_id AND w.unit = p_unit
                   AND w.auto_top_up_below IS NOT NULL) THEN
        RETURN;
    END IF;
    -- The wallet's lock: of concurrent spends that cross the threshold, one buys.
    SELECT * INTO v_wallet FROM payments.wallets w WHERE w.customer_id = p_customer_id AND w.unit = p_unit FOR UPDATE;
    IF v_wallet.auto_top_up_below IS NULL THEN
        RETURN;
    END IF;
    IF v_wallet.auto_top_up_payment IS NOT NULL THEN
        SELECT p.status INTO v_status FROM payments.payments p
        WHERE p.customer_id = p_customer_id AND p.id = v_wallet.auto_top_up_payment;
        IF v_status IS DISTINCT FROM 'succeeded' THEN
            RETURN;  -- still on its way, or it did not succeed: never a second charge
        END IF;
    END IF;
    SELECT coalesce(sum(g.remaining), 0) INTO v_available FROM payments._usable_grants(p_customer_id, p_unit, p_at) g;
    IF v_available >= v_wallet.auto_top_up_below
       OR v_wallet.auto_top_up_amount > coalesce(payments._spend_room(p_customer_id, p_unit, p_at),
                                                 v_wallet.auto_top_up_amount) THEN
        RETURN;  -- enough left, or the budget has no room for it
    END IF;
    BEGIN
        SELECT t.id INTO v_payment
        FROM payments.top_up('top-up:' || payments._new_id('auto'), p_customer_id,
                             payments._units_major(v_wallet.auto_top_up_amount, p_unit), p_unit,
                             v_wallet.auto_top_up_method) t;
    EXCEPTION WHEN SQLSTATE 'PM210' THEN
        RETURN;  -- the budget: the spend that crossed stands, no top-up
    END;
    UPDATE payments.wallets w SET auto_top_up_payment = v_payment WHERE w.customer_id = p_customer_id AND w.unit = p_unit;
END
$$;
COMMENT ON FUNCTION payments._maybe_top_up(text, text, timestamptz) IS
    'Internal: after a spend or an expiry, buys the customer''s automatic top-up when what is available fell below its threshold and no earlier one is on its way or failed.';

CREATE OR REPLACE FUNCTION payments._top_up_paid(p_customer_id text, p_payment_id text, p_currency text, p_paid bigint)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_top payments.top_ups%ROWTYPE;
    v_id  text := payments._new_id('cg');
BEGIN
    SELECT * INTO v_top FROM payments.top_ups t
    WHERE t.customer_id = p_customer_id AND t.payment_id = p_payment_id AND t.grant_id IS NULL FOR UPDATE;
    IF NOT FOUND THEN
        -- Metadata naming a top-up is no top-up: an ordinary payment.
        PERFORM payments._move(p_customer_id, 'payment', p_payment_id, p_currency, p_paid, 'provider_clearing', 'revenue');
        RETURN;
    END IF;
    INSERT INTO payments.credit_grants (customer_id, id, unit, amount, applies_to, priority, expires_at)
    VALUES (p_customer_id, v_id, v_top.unit, CASE WHEN v_top.unit = p_currency THEN p_paid ELSE v_top.amount END,
            v_top.applies_to, v_top.priority, v_top.expires_at);
    IF v_top.unit = p_currency THEN
        -- Money credit: what was paid is the customer's, held as credits until spent.
        PERFORM payments._move(p_customer_id, 'payment', p_payment_id, p_currency, p_paid, 'provider_clearing', 'credits',
                               v_id);
    ELSE
        -- Credits of another unit: the money is earned now, the credits issued beside it.
        PERFORM payments._move(p_customer_id, 'payment', p_payment_id, p_currency, p_paid, 'provider_clearing', 'revenue');
        PERFORM payments._move(p_customer_id, 'credit_grant', v_id, v_top.unit, v_top.amount, 'credits_issued', 'credits',
                               v_id);
    END IF;
    UPDATE payments.top_ups t SET grant_id = v_id WHERE t.customer_id = p_customer_id AND t.payment_id = p_payment_id;
END
$$;
COMMENT ON FUNCTION payments._top_up_paid(text, text, text, bigint) IS
    'Internal: a payment succeeded whose metadata names a top-up: grants what its top_ups row says (once), or, with no such row, posts it as any payment.';

CREATE OR REPLACE FUNCTION payments._notice_expiring_credits(p_at timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_grant record;
    v_count integer := 0;
BEGIN
    FOR v_grant IN
        SELECT g.customer_id, g.id FROM payments.credit_grants g
        WHERE g.expires_at > p_at AND g.expires_at <= p_at + interval '7 days' AND g.expiry_noticed_at IS NULL
          AND g.expired_at IS NULL AND g.remaining > 0
        ORDER BY g.expires_at, g.id
    LOOP
        SELECT g.customer_id, g.id, g.unit, g.remaining, g.expires_at INTO v_grant FROM payments.credit_grants g
        WHERE g.customer_id = v_grant.customer_id AND g.id = v_grant.id AND g.expiry_noticed_at IS NULL
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        PERFORM payments._emit(v_grant.customer_id, 'credits', v_grant.id, 'expiring', NULL, false,
                               jsonb_build_object('unit', v_grant.unit, 'expires_at', v_grant.expires_at,
                                                  'remaining', payments._units_major(v_grant.remaining, v_grant.unit)::text));
        UPDATE payments.credit_grants g SET expiry_noticed_at = p_at
        WHERE g.customer_id = v_grant.customer_id AND g.id = v_grant.id;
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION payments._notice_expiring_credits(timestamptz) IS
    'Internal (run_billing): tells apps once of each grant with credits left that expires within a week of p_at (event credits.expiring with unit, expires_at and remaining).';

CREATE OR REPLACE FUNCTION payments.expire_credits(at timestamptz DEFAULT now()) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_grant  record;
    v_unit   text;
    v_left   bigint;
    v_count  integer := 0;
BEGIN
    IF at IS NULL OR NOT isfinite(at) THEN
        RAISE EXCEPTION 'at is required (a finite time)' USING ERRCODE = 'PM100';
    END IF;
    -- Found without a lock, then each claimed where it lives (on Citus, one shard), never waiting.
    FOR v_grant IN
        SELECT g.customer_id, g.id FROM payments.credit_grants g
        WHERE g.expires_at <= at AND g.expired_at IS NULL
        ORDER BY g.expires_at, g.id
    LOOP
        SELECT g.unit, g.remaining INTO v_unit, v_left FROM payments.credit_grants g
        WHERE g.customer_id = v_grant.customer_id AND g.id = v_grant.id AND g.expired_at IS NULL
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        PERFORM payments._move(v_grant.customer_id, 'credit_expiry', v_grant.id, v_unit, v_left, 'credits',
                               'credits_issued', v_grant.id);
        UPDATE payments.credit_grants g SET expired_at = at WHERE g.customer_id = v_grant.customer_id AND g.id = v_grant.id;
        IF v_left > 0 THEN
            PERFORM payments._tell_low(v_grant.customer_id, v_unit, v_left, at);
            PERFORM payments._maybe_top_up(v_grant.customer_id, v_unit, at);
        END IF;
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION payments.expire_credits(timestamptz) IS
    'Posts out what is left of every credit grant that expired at or before at (credits to credits_issued; a ledger entry, not a delete) and returns how many grants it closed. The same at twice does nothing new; safe from two places at once (SKIP LOCKED). run_billing calls it.';

CREATE OR REPLACE FUNCTION payments.balances(customer_id text, at timestamptz DEFAULT now())
RETURNS TABLE (account text, unit text, posted numeric, held numeric, available numeric)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF at IS NULL OR NOT isfinite(at) THEN
        RAISE EXCEPTION 'at is required (a finite time)' USING ERRCODE = 'PM100';
    END IF;
    -- A login bound to another customer sees no balances of it.
    IF balances.customer_id IS DISTINCT FROM coalesce(payments._bound_customer(), balances.customer_id) THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH sides AS (
        SELECT t.debit_account AS account, t.unit, t.amount AS signed, t.grant_id
        FROM payments.ledger_transfers t WHERE t.customer_id = balances.customer_id AND t.created_at <= at
        UNION ALL
        SELECT t.credit_account, t.unit, -t.amount, t.grant_id
        FROM payments.ledger_transfers t WHERE t.customer_id = balances.customer_id AND t.created_at <= at
    ), totals AS (
        SELECT s.account, s.unit, payments._account_sign(s.account) * sum(s.signed) AS shown,
               -- Credits of a grant that expired by at are not available, posted out or not yet.
               payments._account_sign(s.account)
                   * coalesce(sum(s.signed) FILTER (WHERE g.expires_at IS NULL OR g.expires_at > at), 0) AS usable
        FROM sides s
        LEFT JOIN payments.credit_grants g ON g.customer_id = balances.customer_id AND g.id = s.grant_id
        WHERE payments._account_owner(s.account) = 'customer'
        GROUP BY s.account, s.unit
    )
    -- What holds set aside is shown as held credits (posted, not available), not as an account of its own.
    SELECT t.account, t.unit,
           payments._units_major((t.shown + coalesce(h.shown, 0))::bigint, t.unit),
           payments._units_major(coalesce(h.shown, 0)::bigint, t.unit),
           payments._units_major(t.usable::bigint, t.unit)
    FROM totals t
    LEFT JOIN totals h ON h.account = 'holds' AND h.unit = t.unit AND t.account = 'credits'
    WHERE t.account <> 'holds'
    ORDER BY t.account, t.unit;
END
$$;
COMMENT ON FUNCTION payments.balances(text, timestamptz) IS
    'A customer''s accounts at an instant (default now): per account (balance, credits) and unit, what is posted, what open holds set aside of it (held), and what is available to spend or reserve (posted less held; credits of grants that expired by then are not). Amounts in major units of a currency or whole credit units. A login bound to another customer gets no rows.';

CREATE OR REPLACE FUNCTION payments.trial_balance()
RETURNS TABLE (unit text, debits numeric, credits numeric, difference numeric)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Each account of each customer, netted: the debit balances on one side, the credit
    -- balances on the other.
    RETURN QUERY
    WITH sides AS (
        SELECT t.customer_id, t.debit_account AS account, t.unit, t.amount AS signed FROM payments.ledger_transfers t
        UNION ALL
        SELECT t.customer_id, t.credit_account, t.unit, -t.amount FROM payments.ledger_transfers t
    ), nets AS (
        SELECT s.customer_id, s.account, s.unit, sum(s.signed) AS net FROM sides s GROUP BY s.customer_id, s.account, s.unit
    )
    SELECT n.unit, payments._units_major(coalesce(sum(n.net) FILTER (WHERE n.net > 0), 0)::bigint, n.unit),
           payments._units_major(coalesce(-sum(n.net) FILTER (WHERE n.net < 0), 0)::bigint, n.unit),
           payments._units_major(sum(n.net)::bigint, n.unit)
    FROM nets n
    GROUP BY n.unit
    ORDER BY n.unit;
END
$$;
COMMENT ON FUNCTION payments.trial_balance() IS
    'The trial balance per unit: every account of every customer (its own and the platform''s kept for it) netted, the debit balances summed against the credit balances. Their difference is zero, always: every transfer debits and credits the same amount.';

-- ---------------------------------------------------------------------------
-- Holds: two-phase spending for agents (TigerBeetle's pending, post and void)
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION payments._usable_grants(p_customer_id text, p_unit text, p_at timestamptz,
                                                   p_for text DEFAULT NULL)
RETURNS TABLE (grant_id text, remaining bigint)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT g.id, g.remaining
    FROM payments.credit_grants g
    WHERE g.customer_id = p_customer_id AND g.unit = p_unit AND g.expired_at IS NULL
      AND (g.expires_at IS NULL OR g.expires_at > p_at) AND g.remaining > 0
      AND (p_for IS NULL OR g.applies_to IS NULL OR g.applies_to = p_for)
    ORDER BY g.priority, g.expires_at NULLS LAST, g.id;
END
$$;
COMMENT ON FUNCTION payments._usable_grants(text, text, timestamptz, text) IS
    'Internal: a customer''s grants in a unit with something left at p_at, in the order they are used: priority, then soonest expiry. p_for: only grants for anything (applies_to NULL) or for that feature;  (empty): only those for anything, as an invoice uses; NULL: all, as a hold uses.';

CREATE OR REPLACE FUNCTION payments._customer_balance(p_customer_id text, p_unit text) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
BEGIN
    -- PL/pgSQL, not SQL: Citus plans no SQL function's parameterised query.
    RETURN (SELECT coalesce(sum(CASE WHEN t.credit_account = 'balance' THEN t.amount ELSE -t.amount END), 0)
            FROM payments.ledger_transfers t
            WHERE t.customer_id = p_customer_id AND t.unit = p_unit AND 'balance' IN (t.debit_account, t.credit_account));
END
$$;
COMMENT ON FUNCTION payments._customer_balance(text, text) IS
    'Internal: what the platform holds for a customer in a currency (its balance account: what downgrades left), in minor units.';

CREATE OR REPLACE FUNCTION payments._lock_wallet(p_customer_id text, p_unit text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO payments.wallets (customer_id, unit) VALUES (p_customer_id, p_unit)
    ON CONFLICT ON CONSTRAINT wallets_pkey DO NOTHING;
    PERFORM 1 FROM payments.wallets w WHERE w.customer_id = p_customer_id AND w.unit = p_unit FOR UPDATE;
END
$$;
COMMENT ON FUNCTION payments._lock_wallet(text, text) IS
    'Internal: makes and locks the customer''s wallet row of a unit, which orders everything that takes its credits (holds, consume past a limit, invoices): what one sees left, no other takes meanwhile.';

CREATE OR REPLACE FUNCTION payments._draw_credits(p_customer_id text, p_unit text, p_for text, p_amount bigint,
                                                  p_kind text, p_reference text, p_to text, p_at timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_grant record;
    v_left  bigint := p_amount;
BEGIN
    -- Grant by grant, in the order credits are used; the caller has checked there is enough.
    FOR v_grant IN SELECT * FROM payments._usable_grants(p_customer_id, p_unit, p_at, p_for) LOOP
        EXIT WHEN v_left = 0;
        PERFORM payments._move(p_customer_id, p_kind, p_reference, p_unit, least(v_left, v_grant.remaining),
                               'credits', p_to, v_grant.grant_id);
        v_left := v_left - least(v_left, v_grant.remaining);
    END LOOP;
END
$$;
COMMENT ON FUNCTION payments._draw_credits(text, text, text, bigint, text, text, text, timestamptz) IS
    'Internal: takes p_amount of a customer''s usable credits in a unit (_usable_grants with p_for), grant by grant, to account p_to (holds, revenue) in transfers of kind p_kind for p_reference. The caller holds the wallet''s lock and has checked they cover it.';

CREATE OR REPLACE FUNCTION payments._pay_past_limit(p_customer_id text, p_feature text, p_request_id text,
                                                    p_past numeric, p_plan payments.plans, p_at timestamptz,
                                                    OUT unit text, OUT drawn bigint, OUT refusal text)
LANGUAGE plpgsql AS $$
DECLARE
    v_plan  payments.plans%ROWTYPE := p_plan;
    v_unit  text;
    v_cost  bigint;
    v_room  bigint;
BEGIN
    refusal := 'limit_exceeded';
    -- Credits granted for the feature in a credit unit, one per unit used (whole: rounded up).
    FOR v_unit IN
        SELECT DISTINCT g.unit FROM payments.credit_grants g
        WHERE g.customer_id = p_customer_id AND g.applies_to = p_feature AND g.unit !~ '^[A-Z]{3}$'
          AND g.expired_at IS NULL AND g.remaining > 0
        ORDER BY g.unit
    LOOP
        refusal := payments._spend_credits(p_customer_id, v_unit, p_feature, ceil(p_past)::bigint, 'consumption',
                                           p_request_id, p_at);
        IF refusal IS NULL THEN
            unit := v_unit;
            drawn := ceil(p_past)::bigint;
            RETURN;
        END IF;
    END LOOP;
    -- Else money credits at the plan's price for a unit past the limit.
    IF v_plan.feature_prices ? p_feature THEN
        v_cost := ceil(p_past * (v_plan.feature_prices ->> p_feature)::numeric)::bigint;
        refusal := payments._spend_credits(p_customer_id, v_plan.currency, p_feature, v_cost, 'consumption',
                                           p_request_id, p_at);
        IF refusal IS NULL THEN
            unit := v_plan.currency;
            drawn := v_cost;
        END IF;
    END IF;
    refusal := CASE WHEN refusal = 'insufficient_credits' THEN 'limit_exceeded' ELSE refusal END;
END
$$;
COMMENT ON FUNCTION payments._pay_past_limit(text, text, text, numeric, payments.plans, timestamptz) IS
    'Internal (consume): pays for p_past units of a feature beyond its plan''s limit with the customer''s credits, in the same transaction: credits granted for the feature in a credit unit (one per unit, rounded up to whole), else money credits in p_plan''s currency at its feature price (p_plan: the subscription''s version of its plan, in its currency) (rounded up to a minor unit). Returns the unit and amount drawn, or why not: limit_exceeded (no credits cover it) or spend_limit_reached.';

CREATE OR REPLACE FUNCTION payments._spend_credits(p_customer_id text, p_unit text, p_for text, p_amount bigint,
                                                   p_kind text, p_reference text, p_at timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_available bigint;
BEGIN
    PERFORM payments._lock_wallet(p_customer_id, p_unit);
    SELECT coalesce(sum(g.remaining), 0) INTO v_available
    FROM payments._usable_grants(p_customer_id, p_unit, p_at, p_for) g;
    IF p_amount > v_available THEN
        RETURN 'insufficient_credits';
    ELSIF p_amount > payments._spend_room(p_customer_id, p_unit, p_at) THEN
        RETURN 'spend_limit_reached';
    END IF;
    PERFORM payments._draw_credits(p_customer_id, p_unit, p_for, p_amount, p_kind, p_reference, 'revenue', p_at);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION payments._spend_credits(text, text, text, bigint, text, text, timestamptz) IS
    'Internal: under the wallet''s lock, spends p_amount of a customer''s credits in a unit usable for p_for (to revenue, transfers of kind p_kind for p_reference), or returns why not: insufficient_credits, spend_limit_reached. The caller records the spend, then calls _after_spend.';

CREATE OR REPLACE FUNCTION payments._after_spend(p_customer_id text, p_unit text, p_spent bigint, p_at timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_wallet payments.wallets%ROWTYPE;
BEGIN
    -- Most wallets have no budget, alert or top-up: one read decides.
    SELECT * INTO v_wallet FROM payments.wallets w WHERE w.customer_id = p_customer_id AND w.unit = p_unit;
    IF v_wallet.spend_limit IS NOT NULL THEN
        PERFORM payments._tell_spend(p_customer_id, p_unit, p_spent, p_at);
    END IF;
    IF v_wallet.low_balance_below IS NOT NULL THEN
        PERFORM payments._tell_low(p_customer_id, p_unit, p_spent, p_at);
    END IF;
    IF v_wallet.auto_top_up_below IS NOT NULL THEN
        PERFORM payments._maybe_top_up(p_customer_id, p_unit, p_at);
    END IF;
END
$$;
COMMENT ON FUNCTION payments._after_spend(text, text, bigint, timestamptz) IS
    'Internal: after p_spent of a customer''s credits in a unit were taken (and recorded): the budget''s events (spend_limit.reached), a low balance (balance.low), an automatic top-up.';

CREATE OR REPLACE FUNCTION payments._tell_low(p_customer_id text, p_unit text, p_taken bigint, p_at timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_below     bigint;
    v_available bigint;
BEGIN
    SELECT w.low_balance_below INTO v_below FROM payments.wallets w
    WHERE w.customer_id = p_customer_id AND w.unit = p_unit;
    IF v_below IS NULL OR p_taken <= 0 THEN
        RETURN;
    END IF;
    SELECT coalesce(sum(g.remaining), 0) INTO v_available FROM payments._usable_grants(p_customer_id, p_unit, p_at) g;
    -- Once per crossing: it was at or above the threshold before p_taken, and is below now.
    IF v_available < v_below AND v_available + p_taken >= v_below THEN
        PERFORM payments._emit(p_customer_id, 'balance', p_unit, 'low', NULL, false,
                               jsonb_build_object('unit', p_unit,
                                                  'available', payments._units_major(v_available, p_unit)::text,
                                                  'below', payments._units_major(v_below, p_unit)::text));
    END IF;
END
$$;
COMMENT ON FUNCTION payments._tell_low(text, text, bigint, timestamptz) IS
    'Internal: after p_taken of a customer''s available credits in a unit were taken (held, spent, expired), tells apps when that crossed below the threshold set_balance_alert set (event balance.low with unit, available and below), once per crossing.';

CREATE OR REPLACE FUNCTION payments.set_balance_alert(customer_id text, unit text, below numeric) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_below bigint := CASE WHEN below IS NOT NULL THEN payments._units(below, unit) END;
BEGIN
    IF customer_id IS NULL OR length(customer_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'customer_id must be 1 to 255 characters' USING ERRCODE = 'PM100';
    END IF;
    IF payments._unit(unit) IS NULL THEN
        PERFORM payments._units(1, unit);  -- PM106, named
    END IF;
    INSERT INTO payments.wallets (customer_id, unit, low_balance_below)
    VALUES (set_balance_alert.customer_id, payments._unit(unit), v_below)
    ON CONFLICT ON CONSTRAINT wallets_pkey DO UPDATE SET low_balance_below = excluded.low_balance_below;
    RETURN v_below IS NOT NULL;
END
$$;
COMMENT ON FUNCTION payments.set_balance_alert(text, text, numeric) IS
    'Tells apps when a customer''s available credits in unit fall below below (major units of a currency, whole credit units): event balance.low, once each time a hold, a consume past its limit, an invoice or an expiry takes them across it. below NULL turns it off. Returns whether an alert is set.';

CREATE OR REPLACE FUNCTION payments.set_spend_limit(customer_id text, amount numeric, unit text, period text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_limit bigint;
BEGIN
    IF customer_id IS NULL OR length(customer_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'customer_id must be 1 to 255 characters' USING ERRCODE = 'PM100';
    END IF;
    IF amount IS NOT NULL THEN
        v_limit := CASE WHEN amount = 0 THEN 0 ELSE payments._units(amount, unit) END;
        IF period IS NULL OR NOT payments._is_allowed('billing_interval', period) THEN
            RAISE EXCEPTION 'period must be day, week, month or year, not %', quote_nullable(payments._shown(period))
                USING ERRCODE = 'PM100';
        END IF;
    END IF;
    IF payments._unit(unit) IS NULL THEN
        PERFORM payments._units(1, unit);  -- PM106, named
    END IF;
    INSERT INTO payments.wallets (customer_id, unit, spend_limit, spend_period)
    VALUES (set_spend_limit.customer_id, payments._unit(unit), v_limit, CASE WHEN amount IS NOT NULL THEN period END)
    ON CONFLICT ON CONSTRAINT wallets_pkey DO UPDATE
    SET spend_limit = excluded.spend_limit, spend_period = excluded.spend_period;
    RETURN amount IS NOT NULL;
END
$$;
COMMENT ON FUNCTION payments.set_spend_limit(text, numeric, text, text) IS
    'A budget: what the customer may spend of unit per period (day, week, month, year; periods start at midnight UTC, weeks on Monday, whatever the session''s TimeZone). Settled and open holds count, and reserve refuses (reason spend_limit_reached) what would pass it, however many agents ask at once; top-ups in that currency count too, and top_up refuses one that would pass it (PM210), an automatic top-up is then skipped. amount NULL removes it. Returns whether a limit is set.';

CREATE OR REPLACE FUNCTION payments._period_spend(p_customer_id text, p_unit text, p_period text, p_at timestamptz)
RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_start timestamptz := date_trunc(p_period, p_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    v_spent bigint;
BEGIN
    SELECT coalesce(sum(CASE WHEN h.status = 'held' THEN h.amount ELSE h.settled_amount END), 0) INTO v_spent
    FROM payments.holds h
    WHERE h.customer_id = p_customer_id AND h.unit = p_unit
      AND (h.status = 'held' OR (h.status = 'settled' AND h.closed_at >= v_start AND h.closed_at <= p_at));
    -- What consume drew past a plan's limit in the period.
    SELECT v_spent + coalesce(sum(c.credits_drawn), 0) INTO v_spent
    FROM payments.consumptions c
    WHERE c.customer_id = p_customer_id AND c.credits_unit = p_unit AND c.consumed_at >= v_start AND c.consumed_at <= p_at;
    -- Top-ups bought in the period (not those that failed), in a currency.
    SELECT v_spent + coalesce(sum(p.amount_minor), 0) INTO v_spent
    FROM payments.top_ups t
    JOIN payments.payments p ON p.customer_id = t.customer_id AND p.id = t.payment_id
    WHERE t.customer_id = p_customer_id AND p.currency = p_unit AND t.created_at >= v_start
      AND p.status NOT IN ('failed', 'canceled');
    RETURN v_spent;
END
$$;
COMMENT ON FUNCTION payments._period_spend(text, text, text, timestamptz) IS
    'Internal: what counts against a customer''s spend limit in a unit in the period (day, week, month, year; from midnight UTC) at falls in: settled holds of the period, open holds, credits consume drew past a limit, and top-ups bought in the period.';

CREATE OR REPLACE FUNCTION payments._spend_room(p_customer_id text, p_unit text, p_at timestamptz) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_wallet payments.wallets%ROWTYPE;
BEGIN
    SELECT * INTO v_wallet FROM payments.wallets w WHERE w.customer_id = p_customer_id AND w.unit = p_unit;
    IF v_wallet.spend_limit IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN greatest(v_wallet.spend_limit - payments._period_spend(p_customer_id, p_unit, v_wallet.spend_period, p_at), 0);
END
$$;
COMMENT ON FUNCTION payments._spend_room(text, text, timestamptz) IS
    'Internal: what the customer may still spend of a unit in the period at falls in, or NULL without a limit.';

CREATE OR REPLACE FUNCTION payments._tell_spend(p_customer_id text, p_unit text, p_added bigint, p_at timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_wallet  payments.wallets%ROWTYPE;
    v_spent   bigint;
    v_percent integer;
BEGIN
    SELECT * INTO v_wallet FROM payments.wallets w WHERE w.customer_id = p_customer_id AND w.unit = p_unit;
    IF v_wallet.spend_limit IS NULL OR v_wallet.spend_limit = 0 THEN
        RETURN;
    END IF;
    v_spent := payments._period_spend(p_customer_id, p_unit, v_wallet.spend_period, p_at);
    -- Each mark the spend just crossed, once per crossing.
    FOREACH v_percent IN ARRAY ARRAY[50, 80, 100] LOOP
        IF (v_spent - p_added) * 100 < v_percent * v_wallet.spend_limit AND v_spent * 100 >= v_percent * v_wallet.spend_limit THEN
            PERFORM payments._emit(p_customer_id, 'spend_limit', p_unit, 'reached', NULL, false,
                                   jsonb_build_object('percent', v_percent, 'unit', p_unit, 'period', v_wallet.spend_period,
                                                      'limit', payments._units_major(v_wallet.spend_limit, p_unit)::text,
                                                      'spent', payments._units_major(v_spent, p_unit)::text));
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION payments._tell_spend(text, text, bigint, timestamptz) IS
    'Internal: after p_added more counted against a customer''s spend limit, tells apps of each of 50, 80 and 100 % it crossed (event spend_limit.reached with percent, limit and spent).';

CREATE OR REPLACE FUNCTION payments.reserve(customer_id text, amount numeric, unit text, request_id text,
                                            expires_in interval DEFAULT '15 minutes', at timestamptz DEFAULT now())
RETURNS TABLE (hold_id text, allowed boolean, available numeric, reason text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_room      bigint;
    v_refusal   text;
    v_units     bigint;
    v_unit      text;
    v_fp        bytea;
    v_available bigint;
    v_hold      payments.holds%ROWTYPE;
BEGIN
    IF customer_id IS NULL OR length(customer_id) NOT BETWEEN 1 AND 255
       OR request_id IS NULL OR length(request_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'customer_id and request_id must be 1 to 255 characters' USING ERRCODE = 'PM100';
    END IF;
    IF expires_in IS NULL OR expires_in <= interval '0' OR expires_in > interval '30 days'
       OR at IS NULL OR NOT isfinite(at) THEN
        RAISE EXCEPTION 'expires_in must be above zero and at most 30 days, at a finite time' USING ERRCODE = 'PM100';
    END IF;
    v_units := payments._units(amount, unit);
    v_unit := payments._unit(unit);
    v_fp := sha256(convert_to(jsonb_build_array(v_units, v_unit, extract(epoch FROM expires_in))::text, 'UTF8'));
    -- The wallet's row orders the customer's holds in the unit: what one reserve sees left,
    -- no other takes meanwhile.
    PERFORM payments._lock_wallet(reserve.customer_id, v_unit);
    SELECT coalesce(sum(g.remaining), 0) INTO v_available FROM payments._usable_grants(reserve.customer_id, v_unit, at) g;
    v_room := payments._spend_room(reserve.customer_id, v_unit, at);
    v_refusal := CASE WHEN v_units > v_available THEN 'insufficient_credits'
                      WHEN v_units > v_room THEN 'spend_limit_reached' END;
    INSERT INTO payments.holds (customer_id, id, unit, amount, status, available, request_id, request_fingerprint,
                                expires_at, refusal)
    VALUES (reserve.customer_id, payments._new_id('hold'), v_unit, v_units,
            CASE WHEN v_refusal IS NULL THEN 'held' ELSE 'refused' END,
            CASE WHEN v_refusal IS NULL THEN v_available - v_units ELSE v_available END,
            reserve.request_id, v_fp, at + expires_in, v_refusal)
    ON CONFLICT ON CONSTRAINT holds_request_id DO NOTHING
    RETURNING * INTO v_hold;
    IF v_hold.id IS NULL THEN
        -- A retry: the first answer, unless the request asked for something else.
        SELECT * INTO v_hold FROM payments.holds h
        WHERE h.customer_id = reserve.customer_id AND h.request_id = reserve.request_id;
        IF v_hold.request_fingerprint <> v_fp THEN
            RAISE EXCEPTION 'request_id % was already used with a different amount, unit or expiry',
                quote_literal(request_id) USING ERRCODE = 'PM201', DETAIL = 'the request made hold ' || v_hold.id;
        END IF;
    ELSIF v_hold.status = 'held' THEN
        PERFORM payments._draw_credits(reserve.customer_id, v_unit, NULL, v_units, 'hold', v_hold.id, 'holds', at);
        PERFORM payments._tell_spend(reserve.customer_id, v_unit, v_units, at);
        PERFORM payments._tell_low(reserve.customer_id, v_unit, v_units, at);
    END IF;
    RETURN QUERY SELECT CASE WHEN v_hold.status <> 'refused' THEN v_hold.id END, v_hold.status <> 'refused',
                        payments._units_major(v_hold.available, v_hold.unit), v_hold.refusal;
END
$$;
COMMENT ON FUNCTION payments.reserve(text, numeric, text, text, interval, timestamptz) IS
    'Sets amount of unit aside from the customer''s credits before work whose cost is known only afterwards (an LLM call, a job): allowed with a hold_id when the credits usable at at cover it (grants by priority, then soonest expiry), refused (allowed false, no hold, reason insufficient_credits) when not, or when it would pass the customer''s spend limit for the period (reason spend_limit_reached, set_spend_limit); never more than there is, however many reserve at once. available: what is left after the answer. The hold lasts expires_in (at most 30 days); settle it with the actual cost, or release it. A repeated request_id returns the first answer; with another amount, unit or expiry it is PM201.';

CREATE OR REPLACE FUNCTION payments._close_hold(p_customer_id text, p_hold_id text, p_status text, p_spent bigint,
                                                p_at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_unit   text;
    v_left   bigint := p_spent;
    v_drawn  record;
    v_back   bigint;
BEGIN
    SELECT h.unit INTO v_unit FROM payments.holds h WHERE h.customer_id = p_customer_id AND h.id = p_hold_id;
    -- What it spent comes from the grants it drew first; the rest goes back to each.
    FOR v_drawn IN
        SELECT t.grant_id, t.amount, g.expired_at IS NOT NULL AS gone
        FROM payments.ledger_transfers t
        JOIN payments.credit_grants g ON g.customer_id = t.customer_id AND g.id = t.grant_id
        WHERE t.customer_id = p_customer_id AND t.reference = p_hold_id AND t.kind = 'hold'
        ORDER BY t.id
    LOOP
        v_back := v_drawn.amount - least(v_left, v_drawn.amount);
        v_left := v_left - least(v_left, v_drawn.amount);
        PERFORM payments._move(p_customer_id, 'hold_release', p_hold_id, v_unit, v_back, 'holds', 'credits',
                               v_drawn.grant_id);
        -- Back to a grant that expired meanwhile: out with it, as its expiry posted the rest.
        IF v_drawn.gone THEN
            PERFORM payments._move(p_customer_id, 'credit_expiry', v_drawn.grant_id, v_unit, v_back, 'credits',
                                   'credits_issued', v_drawn.grant_id);
        END IF;
    END LOOP;
    PERFORM payments._move(p_customer_id, 'spend', p_hold_id, v_unit, p_spent, 'holds', 'revenue');
    UPDATE payments.holds h
    SET status = p_status, settled_amount = CASE WHEN p_status = 'settled' THEN p_spent END, closed_at = p_at
    WHERE h.customer_id = p_customer_id AND h.id = p_hold_id;
    IF p_spent > 0 THEN
        PERFORM payments._maybe_top_up(p_customer_id, v_unit, p_at);
    END IF;
END
$$;
COMMENT ON FUNCTION payments._close_hold(text, text, text, bigint, timestamptz) IS
    'Internal: ends a held hold (the caller has locked it) as settled (p_spent to revenue), released or expired (p_spent 0): what it drew that was not spent goes back to its grants.';

CREATE OR REPLACE FUNCTION payments._locked_hold(p_hold_id text) RETURNS payments.holds
LANGUAGE plpgsql AS $$
DECLARE
    v_customer text;
    v_hold     payments.holds%ROWTYPE;
BEGIN
    -- Found by id, then locked where it lives (on Citus, on its customer's shard).
    SELECT h.customer_id INTO v_customer FROM payments.holds h WHERE h.id = p_hold_id;
    SELECT * INTO v_hold FROM payments.holds h WHERE h.customer_id = v_customer AND h.id = p_hold_id FOR UPDATE;
    -- A login bound to another customer is answered as for an unknown id.
    IF NOT FOUND OR v_hold.status = 'refused'
       OR v_hold.customer_id <> coalesce(payments._bound_customer(), v_hold.customer_id) THEN
        RAISE EXCEPTION 'hold % not found', payments._shown(p_hold_id) USING ERRCODE = 'PM204';
    END IF;
    RETURN v_hold;
END
$$;
COMMENT ON FUNCTION payments._locked_hold(text) IS 'Internal: a hold by id, locked; PM204 for none.';

CREATE OR REPLACE FUNCTION payments.settle(hold_id text, amount numeric, at timestamptz DEFAULT now())
RETURNS TABLE (id text, status text, spent numeric, released numeric, outcome text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_hold  payments.holds%ROWTYPE := payments._locked_hold(settle.hold_id);
    v_units bigint;
BEGIN
    IF at IS NULL OR NOT isfinite(at) THEN
        RAISE EXCEPTION 'at is required (a finite time)' USING ERRCODE = 'PM100';
    END IF;
    -- Nothing spent is a settle too (the work cost nothing).
    v_units := CASE WHEN settle.amount = 0 THEN 0 ELSE payments._units(settle.amount, v_hold.unit) END;
    IF v_hold.status = 'settled' AND v_hold.settled_amount = v_units THEN
        RETURN QUERY SELECT v_hold.id, v_hold.status, payments._units_major(v_units, v_hold.unit),
                            payments._units_major(v_hold.amount - v_units, v_hold.unit), 'replayed'::text;
        RETURN;
    ELSIF v_hold.status <> 'held' OR v_hold.expires_at <= at THEN
        RAISE EXCEPTION 'hold % is %', v_hold.id, CASE WHEN v_hold.status = 'held' THEN 'expired' ELSE v_hold.status END
            USING ERRCODE = 'PM202', HINT = 'reserve again';
    ELSIF v_units > v_hold.amount THEN
        RAISE EXCEPTION 'hold % holds %, not %', v_hold.id, payments._units_major(v_hold.amount, v_hold.unit),
            payments._units_major(v_units, v_hold.unit) USING ERRCODE = 'PM207';
    END IF;
    PERFORM payments._close_hold(v_hold.customer_id, v_hold.id, 'settled', v_units, at);
    RETURN QUERY SELECT v_hold.id, 'settled'::text, payments._units_major(v_units, v_hold.unit),
                        payments._units_major(v_hold.amount - v_units, v_hold.unit), 'applied'::text;
END
$$;
COMMENT ON FUNCTION payments.settle(text, numeric, timestamptz) IS
    'Spends what the work cost (0 to the held amount; more is PM207) from a hold and gives the rest back to the grants it came from, in the ledger. The same settle again is replayed; a settle of a hold that is released, expired by at, or settled for another amount is PM202; an unknown hold PM204.';

CREATE OR REPLACE FUNCTION payments.release(hold_id text)
RETURNS TABLE (id text, status text, spent numeric, released numeric, outcome text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_hold payments.holds%ROWTYPE := payments._locked_hold(release.hold_id);
BEGIN
    IF v_hold.status = 'held' THEN
        PERFORM payments._close_hold(v_hold.customer_id, v_hold.id, 'released', 0, now());
    ELSIF v_hold.status <> 'released' THEN
        RAISE EXCEPTION 'hold % is %', v_hold.id, v_hold.status USING ERRCODE = 'PM202';
    END IF;
    RETURN QUERY SELECT v_hold.id, 'released'::text, payments._units_major(0, v_hold.unit),
                        payments._units_major(v_hold.amount, v_hold.unit),
                        CASE WHEN v_hold.status = 'held' THEN 'applied' ELSE 'replayed' END;
END
$$;
COMMENT ON FUNCTION payments.release(text) IS
    'Gives everything a hold set aside back to its grants (the work was not done). Again: replayed; a settled or expired hold is PM202, an unknown one PM204.';

CREATE OR REPLACE FUNCTION payments.expire_holds(at timestamptz DEFAULT now()) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_due   record;
    v_count integer := 0;
BEGIN
    IF at IS NULL OR NOT isfinite(at) THEN
        RAISE EXCEPTION 'at is required (a finite time)' USING ERRCODE = 'PM100';
    END IF;
    FOR v_due IN
        SELECT h.customer_id, h.id FROM payments.holds h WHERE h.status = 'held' AND h.expires_at <= at
        ORDER BY h.expires_at, h.id
    LOOP
        PERFORM 1 FROM payments.holds h
        WHERE h.customer_id = v_due.customer_id AND h.id = v_due.id AND h.status = 'held' FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        PERFORM payments._close_hold(v_due.customer_id, v_due.id, 'expired', 0, at);
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION payments.expire_holds(timestamptz) IS
    'Releases every hold that expired by at (status expired; what it set aside goes back to its grants, in the ledger) and returns how many. The same at twice does nothing new; safe from two places at once. run_billing calls it.';

CREATE OR REPLACE VIEW payments.hold_details WITH (security_invoker) AS
SELECT h.customer_id, h.id, h.unit, payments._units_major(h.amount, h.unit) AS amount, h.status,
       payments._units_major(h.settled_amount, h.unit) AS settled, h.expires_at, h.created_at, h.closed_at
FROM payments.holds h;
COMMENT ON VIEW payments.hold_details IS
    'Every hold and reserve refusal: amount, status (held, settled, released, expired, refused), what was spent, when it expires or closed. Readable by payments_reader (no request ids).';

CREATE OR REPLACE VIEW payments.ledger WITH (security_invoker) AS
SELECT t.customer_id, t.id AS transfer_id, t.kind, t.reference, t.debit_account, t.credit_account, t.unit,
       payments._units_major(t.amount, t.unit) AS amount, t.grant_id, t.created_at
FROM payments.ledger_transfers t;
COMMENT ON VIEW payments.ledger IS
    'Every transfer of the ledger, oldest first by id: which account of the customer''s (or the platform''s, kept for it) was debited and which credited, by how much. Readable by payments_reader (no idempotency keys); a bound login sees its customer''s.';

CREATE OR REPLACE VIEW payments.credit_grant_details WITH (security_invoker) AS
SELECT g.customer_id, g.id, g.unit, payments._units_major(g.amount, g.unit) AS amount,
       payments._units_major(g.remaining, g.unit) AS remaining,
       g.applies_to, g.priority, g.expires_at, g.expired_at, g.created_at
FROM payments.credit_grants g;
COMMENT ON VIEW payments.credit_grant_details IS
    'Every credit grant with what is left of it (its credits entries'' balance). Readable by payments_reader.';
