-- payments: tables, the append-only guard, and the row shapes the API returns.
-- Loaded into the extension script after the Rust functions it uses.

-- A quoted body, not RETURN: Citus copies the policies' functions to the workers, and
-- loses a SQL-standard body on the way.
CREATE OR REPLACE FUNCTION payments._bound_customer() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT c.customer_id FROM payments.role_customers c WHERE c.role_name = session_user $$;
COMMENT ON FUNCTION payments._bound_customer() IS
    'Internal: the customer the session''s login role is bound to (bind_role_to_customer), NULL when it is not. The customer tables'' row-level policies restrict bound logins to it, and the read functions check it (they see the same session user).';

-- ---------------------------------------------------------------------------
-- Append-only guard
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION payments._refuse_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION '% on %.% is not allowed: its rows are permanent history', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'PM205';
END
$$;
COMMENT ON FUNCTION payments._refuse_change() IS
    'Trigger function that refuses a change to append-only history, whoever asks (SQLSTATE PM205).';

CREATE OR REPLACE TRIGGER payment_events_append_only BEFORE UPDATE OR DELETE ON payments.payment_events
    FOR EACH ROW EXECUTE FUNCTION payments._refuse_change();
CREATE OR REPLACE TRIGGER payment_events_no_truncate BEFORE TRUNCATE ON payments.payment_events
    FOR EACH STATEMENT EXECUTE FUNCTION payments._refuse_change();
CREATE OR REPLACE TRIGGER payments_never_deleted BEFORE DELETE ON payments.payments
    FOR EACH ROW EXECUTE FUNCTION payments._refuse_change();
CREATE OR REPLACE TRIGGER payments_no_truncate BEFORE TRUNCATE ON payments.payments
    FOR EACH STATEMENT EXECUTE FUNCTION payments._refuse_change();

-- ---------------------------------------------------------------------------
-- Row shapes returned by the API
-- ---------------------------------------------------------------------------
CREATE OR REPLACE VIEW payments.payment_details WITH (security_invoker) AS
SELECT p.id, p.customer_id, payments.to_major(p.amount_minor, p.currency) AS amount, p.amount_minor, p.currency,
       p.status, p.capture_method, p.provider, p.provider_payment_id, p.payment_method, p.description,
       p.metadata, p.last_error, p.created_at, p.updated_at,
       payments.to_major(p.amount_captured_minor, p.currency) AS amount_captured, p.amount_captured_minor,
       p.cancellation_reason,
       payments.to_major(p.amount_refunded_minor, p.currency) AS amount_refunded, p.amount_refunded_minor,
       CASE WHEN p.amount_refunded_minor = 0 THEN 'none'
            WHEN p.amount_refunded_minor < p.amount_captured_minor THEN 'partial' ELSE 'full' END AS refund_status,
       p.amount_disputed_minor > 0 AS disputed,
       payments.to_major(p.amount_disputed_minor, p.currency) AS amount_disputed, p.amount_disputed_minor
FROM payments.payments p;
COMMENT ON VIEW payments.payment_details IS
    'Every payment with its amounts in major units (amount, amount_captured, amount_refunded, amount_disputed) beside the stored minor units; refund_status: none, partial or full (of what was captured); disputed: a dispute withholds money. What get_payment and list_payments return; readable by payments_reader.';
COMMENT ON TYPE payments.payment_result IS
    'A payment as a mutating call leaves it, plus outcome: created | replayed (create_payment), applied | noop | stale (transition, record_provider_result), mismatch (record_provider_result: the provider''s object asked for other money; an anomaly was recorded, nothing applied), queued (capture_payment, cancel_payment: the provider call waits for the gateway).';
