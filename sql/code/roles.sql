-- payments: roles and privileges. Runs last in the extension script.
--   payments_admin   everything, including purging keys and reading the tables
--   payments_gateway the API functions only; no direct table access
--   payments_reader  the views and read-only functions; nothing that writes
--   payments_worker  the gateway's webhook delivery worker: claims deliveries with the
--                    endpoints' signing secrets (no application role ever sees a secret)
--   payments_bound   logins bound to one customer (bind_role_to_customer): every customer
--                    table's row-level policy shows them that customer's rows only

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['payments_admin', 'payments_gateway', 'payments_reader', 'payments_worker',
                             'payments_bound'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;

REVOKE ALL ON ALL TABLES IN SCHEMA payments FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA payments FROM PUBLIC;
GRANT USAGE ON SCHEMA payments TO payments_admin, payments_gateway, payments_reader;

-- Pure functions: no data, no side effects.
GRANT EXECUTE ON FUNCTION
    payments.to_minor(numeric, text), payments._to_minor(numeric, text), payments._money_error(numeric, text),
    payments.to_major(bigint, text), payments.currencies(), payments.statuses(), payments.allowed_transitions(),
    payments.allowed_values(), payments._is_allowed(text, text), payments._all_allowed(text, text[]),
    payments.api_reference(), payments._group(text),
    payments.ledger_accounts(), payments._unit(text), payments._units_major(bigint, text),
    payments._account_sign(text), payments._account_owner(text),
    payments.verify_webhook_signature(text, text, jsonb, bytea, interval, timestamptz),
    payments.webhook_signature_failure(text, text, jsonb, bytea, interval, timestamptz)
TO payments_admin, payments_gateway, payments_reader;

-- Reading.
GRANT EXECUTE ON FUNCTION
    payments.get_payment(text), payments.list_payments(text, text, int, text), payments.verify_event_chain(text),
    payments.get_refund(text), payments.list_refunds(text, int, text),
    payments.get_dispute(text), payments.list_disputes(text, text, int, text),
    payments.reconciliation_report(timestamptz, timestamptz, text),
    payments.reconciliation_window(timestamptz, timestamptz),
    payments.usage_summary(text, text, timestamptz, timestamptz),
    payments.get_subscription(text), payments.list_subscriptions(text, text, int, text),
    payments.has_active_subscription(text, text, timestamptz),
    payments.customer_has_paid(text, timestamptz), payments.entitlements(text, timestamptz),
    payments.get_invoice(text), payments.list_invoice_lines(text), payments.receipt(text),
    payments.list_invoices(text, text, text, int, text),
    payments.webhook_retries(),
    payments.balances(text, timestamptz), payments.trial_balance(),
    payments.list_invoice_taxes(text), payments.preview_invoice(text, timestamptz),
    payments.list_credit_notes(text), payments.get_credit_note(text)
TO payments_admin, payments_gateway, payments_reader;
GRANT SELECT ON payments.meters, payments.usage_log, payments.plans, payments.plan_versions, payments.coupons, payments.tax_rates,
    payments.discounts, payments.customer_taxes, payments.subscription_details,
    payments.subscription_revenue, payments.mrr, payments.ledger, payments.credit_grant_details, payments.hold_details,
    payments.invoice_details, payments.invoice_line_details, payments.credit_note_details, payments.billing_failures, payments.event_log, payments.webhook_delivery_log, payments.webhook_endpoint_list,
    payments.webhook_delivery_attempts
TO payments_admin, payments_gateway, payments_reader;
GRANT SELECT ON payments.payment_details, payments.payment_history, payments.customer_payments, payments.webhook_log,
    payments.open_anomalies, payments.refund_details, payments.dispute_details, payments.customer_balances,
    payments.balance_by_currency
TO payments_admin, payments_gateway, payments_reader;
GRANT EXECUTE ON FUNCTION payments._webhook_log() TO payments_admin, payments_gateway, payments_reader;
-- The views read with their reader's rights (security_invoker), so that the customer tables'
-- row-level policies apply to whoever reads: the readers and the gateway may select the
-- columns the views show, found in the catalog (each view's dependencies), and no other
-- (fingerprints, idempotency keys and the webhook log's bodies stay private).
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT DISTINCT t.oid::regclass AS tab, a.attname
        FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid AND d.classid = 'pg_catalog.pg_rewrite'::regclass
        JOIN pg_catalog.pg_class v ON v.oid = r.ev_class AND v.relkind = 'v'
        JOIN pg_catalog.pg_class t ON t.oid = d.refobjid AND d.refclassid = 'pg_catalog.pg_class'::regclass
                                  AND t.relkind = 'r' AND t.relnamespace = v.relnamespace
        JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
        WHERE v.relnamespace = 'payments'::regnamespace AND d.refobjsubid > 0
        ORDER BY 1, 2
    LOOP
        EXECUTE pg_catalog.format('GRANT SELECT (%I) ON %s TO payments_reader, payments_gateway', g.attname, g.tab);
    END LOOP;
END
$$;
GRANT EXECUTE ON FUNCTION payments._webhook_endpoints() TO payments_admin, payments_gateway, payments_reader;

-- Writing, only through the API.
GRANT EXECUTE ON FUNCTION
    payments.create_payment(text, text, numeric, text, text, text, jsonb, text),
    payments.transition(text, text, text, text, jsonb),
    payments.record_provider_result(text, text, text, text, jsonb),
    payments.ingest_webhook(text, jsonb, bytea),
    payments.claim_provider_work(int, interval, interval, interval),
    payments.record_provider_error(text, jsonb),
    payments.capture_payment(text, numeric),
    payments.cancel_payment(text, text),
    payments.cancel_expired_authorizations(interval, timestamptz, text),
    payments.claim_provider_commands(int, interval, text, text),
    payments.record_command_result(text, boolean, text, jsonb, text),
    payments.create_refund(text, text, numeric, text),
    payments.record_provider_snapshot(text, jsonb),
    payments.reconcile(timestamptz, timestamptz, text, boolean),
    payments.record_usage(text, text, text, numeric, timestamptz, jsonb),
    payments.record_usage_batch(jsonb),
    payments.create_subscription(text, text, text, text, integer, timestamptz, integer, text, timestamptz, timestamptz, text),
    payments.set_subscription_quantity(text, integer, boolean, timestamptz),
    payments.set_subscription_cancel_at(text, timestamptz, timestamptz),
    payments.cancel_subscription(text, boolean, timestamptz),
    payments.pause_subscription(text, timestamptz), payments.resume_subscription(text, timestamptz),
    payments.consume(text, text, numeric, text, timestamptz),
    payments.run_billing(timestamptz),
    payments.grant_credits(text, text, numeric, text, timestamptz, text, integer), payments.expire_credits(timestamptz),
    payments.reserve(text, numeric, text, text, interval, timestamptz), payments.settle(text, numeric, timestamptz),
    payments.release(text), payments.expire_holds(timestamptz),
    payments.top_up(text, text, numeric, text, text, jsonb),
    payments.set_auto_top_up(text, numeric, numeric, text, text), payments.set_spend_limit(text, numeric, text, text),
    payments.set_balance_alert(text, text, numeric),
    payments.apply_coupon(text, text, timestamptz), payments.set_customer_tax(text, text[], boolean),
    payments.void_invoice(text), payments.mark_uncollectible(text),
    payments.finalize_invoice(text, timestamptz), payments.add_invoice_item(text, text, text, numeric, integer),
    payments.create_credit_note(text, text, numeric, text, boolean),
    payments.set_subscription_payment_method(text, text),
    payments.change_plan(text, text, boolean, timestamptz),
    payments.add_webhook_endpoint(text, text[], text), payments.remove_webhook_endpoint(text)
TO payments_admin, payments_gateway;
-- The catalog over HTTP: the gateway lets only an administrator's key (payments:admin) call these.
GRANT EXECUTE ON FUNCTION
    payments.create_coupon(text, numeric, numeric, text, text, integer, integer, timestamptz, text[], text),
    payments.create_promotion_code(text, text, integer, timestamptz, text),
    payments.set_promotion_code_active(text, boolean),
    payments.create_tax_rate(text, text, numeric, boolean, text),
    payments.create_plan_version(text, integer, numeric, jsonb, jsonb, numeric, jsonb),
    payments.migrate_plan_version(text, integer, integer, timestamptz)
TO payments_gateway;
-- Only the delivery worker reads the endpoints' secrets (claim_webhook_deliveries returns them).
GRANT USAGE ON SCHEMA payments TO payments_worker;
GRANT EXECUTE ON FUNCTION
    payments.claim_webhook_deliveries(int, interval, int, jsonb),
    payments.record_webhook_delivery(text, text, text, integer, integer, text, integer)
TO payments_admin, payments_worker;

-- The gateway checks keys and dashboard sessions, and reads histories.
GRANT EXECUTE ON FUNCTION payments.authenticate_api_key(text), payments.list_payment_events(text),
    payments.dashboard_sign_in(text, text, interval), payments.dashboard_session(text),
    payments.dashboard_sign_out(text)
TO payments_admin, payments_gateway;

-- Administration.
GRANT EXECUTE ON FUNCTION
    payments.purge_idempotency_keys(interval),
    payments.add_webhook_secret(text, text, text, timestamptz),
    payments.retire_webhook_secret(text),
    payments.create_api_key(text, text[], text),
    payments.revoke_api_key(text),
    payments.resolve_anomaly(text, text),
    payments.set_webhook_tolerance(interval),
    payments.distribute(int),
    payments.create_meter(text, text, text, text),
    payments.create_plan(text, text, numeric, text, integer, integer, jsonb, text, jsonb, numeric, jsonb, boolean, jsonb),
    payments.create_plan_version(text, integer, numeric, jsonb, jsonb, numeric, jsonb),
    payments.migrate_plan_version(text, integer, integer, timestamptz),
    payments.archive_plan(text),
    payments.create_coupon(text, numeric, numeric, text, text, integer, integer, timestamptz, text[], text),
    payments.create_tax_rate(text, text, numeric, boolean, text),
    payments.create_promotion_code(text, text, integer, timestamptz, text),
    payments.set_promotion_code_active(text, boolean),
    payments.set_dunning(integer[], text, interval), payments.set_invoice_drafts(interval),
    payments.set_webhook_retries(interval[]),
    payments.set_webhook_endpoint_limit(integer),
    payments.set_event_notifications(boolean),
    payments.create_dashboard_user(text, text, text), payments.reset_dashboard_password(text, text),
    payments.disable_dashboard_user(text)
TO payments_admin;
GRANT EXECUTE ON FUNCTION payments.webhook_tolerance() TO payments_admin, payments_gateway, payments_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA payments TO payments_admin;

-- Logins bound to one customer: every table with a customer_id (found in the catalog)
-- shows all its rows to everyone, except members of payments_bound, who see their
-- customer's only (a restrictive policy: it costs the other roles nothing). Policies
-- are security quals: a bound login's own functions in a WHERE never see other rows.
DO $$
DECLARE
    t regclass;
BEGIN
    FOR t IN
        SELECT c.oid::regclass FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = 'customer_id' AND NOT a.attisdropped
        WHERE n.nspname = 'payments' AND c.relkind = 'r' AND c.relname <> 'role_customers'
        ORDER BY c.relname
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
        EXECUTE pg_catalog.format('DROP POLICY IF EXISTS every_row ON %s', t);
        EXECUTE pg_catalog.format('CREATE POLICY every_row ON %s AS PERMISSIVE FOR SELECT TO PUBLIC USING (true)', t);
        EXECUTE pg_catalog.format('DROP POLICY IF EXISTS bound_customer ON %s', t);
        EXECUTE pg_catalog.format(
            'CREATE POLICY bound_customer ON %s AS RESTRICTIVE FOR SELECT TO payments_bound '
            'USING (customer_id = payments._bound_customer())', t);
    END LOOP;
END
$$;
-- Whoever reads a table or a view asks it (it answers only for the session's own login).
GRANT EXECUTE ON FUNCTION payments._bound_customer() TO PUBLIC;

CREATE OR REPLACE FUNCTION payments.bind_role_to_customer(role_name name, customer_id text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_role pg_catalog.pg_roles%ROWTYPE;
BEGIN
    SELECT * INTO v_role FROM pg_catalog.pg_roles r WHERE r.rolname = bind_role_to_customer.role_name;
    IF NOT FOUND OR customer_id IS NULL OR length(customer_id) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'role % does not exist, or customer_id is not 1 to 255 characters',
            quote_ident(coalesce(role_name, '')) USING ERRCODE = 'PM100';
    END IF;
    -- On Citus the row-level policies do not reach the shards, and readers select the
    -- tables there: a binding could not be kept, so none is made.
    IF EXISTS (SELECT FROM pg_catalog.pg_extension e WHERE e.extname = 'citus') THEN
        RAISE EXCEPTION 'logins cannot be bound to a customer on Citus yet: its shards do not apply row-level policies'
            USING ERRCODE = '0A000', HINT = 'bind an API key to the customer instead (create_api_key(…, customer_id))';
    END IF;
    -- A bound login reads; a role that may do more would reach past its customer.
    IF v_role.rolsuper OR v_role.rolbypassrls
       OR pg_catalog.pg_has_role(v_role.oid, 'payments_admin', 'MEMBER')
       OR pg_catalog.pg_has_role(v_role.oid, 'payments_gateway', 'MEMBER')
       OR pg_catalog.pg_has_role(v_role.oid, 'payments_worker', 'MEMBER') THEN
        RAISE EXCEPTION 'role % may do more than read: only a reader (payments_reader) can be bound to a customer',
            quote_ident(role_name) USING ERRCODE = 'PM100';
    END IF;
    INSERT INTO payments.role_customers AS c (role_name, customer_id)
    VALUES (bind_role_to_customer.role_name, bind_role_to_customer.customer_id)
    ON CONFLICT ON CONSTRAINT role_customers_pkey DO UPDATE SET customer_id = excluded.customer_id, bound_at = excluded.bound_at;
    EXECUTE pg_catalog.format('GRANT payments_bound TO %I', role_name);
    RETURN true;
END
$$;
COMMENT ON FUNCTION payments.bind_role_to_customer(name, text) IS
    'Binds a login role to one customer (admin): connected as it, every reader view and customer table (row-level policies) and every read function shows that customer''s rows only, and another customer''s object is not found. Only a reader can be bound (PM100 for a superuser, a role that bypasses row-level security, or a member of payments_admin, payments_gateway or payments_worker). Binding again moves it to another customer.';

CREATE OR REPLACE FUNCTION payments.unbind_role(role_name name) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM payments.role_customers c WHERE c.role_name = unbind_role.role_name;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = unbind_role.role_name) THEN
        EXECUTE pg_catalog.format('REVOKE payments_bound FROM %I', role_name);
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION payments.unbind_role(name) IS 'Lifts a login role''s binding to a customer (admin); false when it was not bound.';

REVOKE ALL ON FUNCTION payments.bind_role_to_customer(name, text), payments.unbind_role(name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION payments.bind_role_to_customer(name, text), payments.unbind_role(name) TO payments_admin;
