-- payments: roles and privileges. Runs last in the extension script.
--   payments_admin   everything, including purging keys and reading the tables
--   payments_gateway the API functions only; no direct table access
--   payments_reader  the views and read-only functions; nothing that writes
--   payments_worker  the gateway's webhook delivery worker: claims deliveries with the
--                    endpoints' signing secrets (no application role ever sees a secret)
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['payments_admin', 'payments_gateway', 'payments_reader', 'payments_worker'] LOOP
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
    payments.webhook_retries()
TO payments_admin, payments_gateway, payments_reader;
GRANT SELECT ON payments.meters, payments.usage_log, payments.plans, payments.subscription_details,
    payments.invoice_details, payments.billing_failures, payments.event_log, payments.webhook_delivery_log, payments.webhook_endpoint_list,
    payments.webhook_delivery_attempts
TO payments_admin, payments_gateway, payments_reader;
GRANT SELECT ON payments.payment_details, payments.payment_history, payments.customer_payments, payments.webhook_log,
    payments.open_anomalies, payments.refund_details, payments.dispute_details, payments.customer_balances,
    payments.balance_by_currency
TO payments_admin, payments_gateway, payments_reader;
GRANT EXECUTE ON FUNCTION payments._webhook_log() TO payments_admin, payments_gateway, payments_reader;
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
    payments.create_subscription(text, text, text, text, integer, timestamptz),
    payments.cancel_subscription(text, boolean, timestamptz),
    payments.pause_subscription(text), payments.resume_subscription(text, timestamptz),
    payments.consume(text, text, numeric, text, timestamptz),
    payments.run_billing(timestamptz),
    payments.set_subscription_payment_method(text, text),
    payments.change_plan(text, text, boolean, timestamptz),
    payments.add_webhook_endpoint(text, text[], text), payments.remove_webhook_endpoint(text)
TO payments_admin, payments_gateway;
-- Only the delivery worker reads the endpoints' secrets (claim_webhook_deliveries returns them).
GRANT USAGE ON SCHEMA payments TO payments_worker;
GRANT EXECUTE ON FUNCTION
    payments.claim_webhook_deliveries(int, interval, int, text[]),
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
    payments.create_plan(text, text, numeric, text, integer, integer, jsonb, text, jsonb, numeric),
    payments.archive_plan(text),
    payments.set_dunning(integer[], text, interval),
    payments.set_webhook_retries(interval[]),
    payments.set_webhook_endpoint_limit(integer),
    payments.set_event_notifications(boolean),
    payments.create_dashboard_user(text, text, text), payments.reset_dashboard_password(text, text),
    payments.disable_dashboard_user(text)
TO payments_admin;
GRANT EXECUTE ON FUNCTION payments.webhook_tolerance() TO payments_admin, payments_gateway, payments_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA payments TO payments_admin;
