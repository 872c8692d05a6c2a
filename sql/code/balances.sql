-- payments: where the money stands, per currency and per customer. Read from
-- the payments' own running totals (captured, refunded, disputed), so a
-- dashboard's query is one scan, also on Citus.

CREATE OR REPLACE VIEW payments.customer_balances WITH (security_invoker) AS
SELECT p.customer_id,
       p.currency,
       count(*) FILTER (WHERE p.amount_captured_minor IS NOT NULL) AS captured_count,
       -- sums of minor units times one minor unit: exact, at the currency's scale.
       coalesce(sum(p.amount_captured_minor), 0) * payments.to_major(1, p.currency) AS gross_captured,
       sum(p.amount_refunded_minor) * payments.to_major(1, p.currency) AS refunded,
       sum(p.amount_disputed_minor) * payments.to_major(1, p.currency) AS disputed,
       (coalesce(sum(p.amount_captured_minor), 0) - sum(p.amount_refunded_minor) - sum(p.amount_disputed_minor))
           * payments.to_major(1, p.currency) AS net,
       coalesce(sum(p.amount_captured_minor), 0) AS gross_captured_minor,
       sum(p.amount_refunded_minor) AS refunded_minor,
       sum(p.amount_disputed_minor) AS disputed_minor,
       coalesce(sum(p.amount_captured_minor), 0) - sum(p.amount_refunded_minor) - sum(p.amount_disputed_minor) AS net_minor
FROM payments.payments p
WHERE p.amount_captured_minor IS NOT NULL
GROUP BY p.customer_id, p.currency;
COMMENT ON VIEW payments.customer_balances IS
    'Per customer and currency: what their payments captured, what was refunded to them and what their disputes withhold, and the net the merchant keeps. Major units beside minor units; readable by payments_reader.';
COMMENT ON COLUMN payments.customer_balances.captured_count IS 'How many of the customer''s payments captured money (succeeded).';
COMMENT ON COLUMN payments.customer_balances.gross_captured IS 'Captured by succeeded payments, in major units (a partial capture counts what was captured).';
COMMENT ON COLUMN payments.customer_balances.refunded IS 'Refunded by succeeded refunds, in major units (a refund that later failed is not counted).';
COMMENT ON COLUMN payments.customer_balances.disputed IS 'Withheld by disputes that are open (needs_response, under_review) or lost, in major units.';
COMMENT ON COLUMN payments.customer_balances.net IS 'gross_captured - refunded - disputed, in major units.';
COMMENT ON COLUMN payments.customer_balances.gross_captured_minor IS 'gross_captured in minor units.';
COMMENT ON COLUMN payments.customer_balances.refunded_minor IS 'refunded in minor units.';
COMMENT ON COLUMN payments.customer_balances.disputed_minor IS 'disputed in minor units.';
COMMENT ON COLUMN payments.customer_balances.net_minor IS 'net in minor units.';

CREATE OR REPLACE VIEW payments.balance_by_currency WITH (security_invoker) AS
SELECT b.currency,
       sum(b.captured_count) AS captured_count,
       sum(b.gross_captured) AS gross_captured,
       sum(b.refunded) AS refunded,
       sum(b.disputed) AS disputed,
       sum(b.net) AS net,
       sum(b.gross_captured_minor) AS gross_captured_minor,
       sum(b.refunded_minor) AS refunded_minor,
       sum(b.disputed_minor) AS disputed_minor,
       sum(b.net_minor) AS net_minor
FROM payments.customer_balances b
GROUP BY b.currency;
COMMENT ON VIEW payments.balance_by_currency IS
    'Per currency, over all customers: captured, refunded, withheld by disputes, and net. Major units beside minor units; readable by payments_reader.';
COMMENT ON COLUMN payments.balance_by_currency.captured_count IS 'How many payments captured money (succeeded).';
COMMENT ON COLUMN payments.balance_by_currency.gross_captured IS 'Captured by succeeded payments, in major units.';
COMMENT ON COLUMN payments.balance_by_currency.refunded IS 'Refunded by succeeded refunds, in major units.';
COMMENT ON COLUMN payments.balance_by_currency.disputed IS 'Withheld by open or lost disputes, in major units.';
COMMENT ON COLUMN payments.balance_by_currency.net IS 'gross_captured - refunded - disputed, in major units.';
COMMENT ON COLUMN payments.balance_by_currency.gross_captured_minor IS 'gross_captured in minor units.';
COMMENT ON COLUMN payments.balance_by_currency.refunded_minor IS 'refunded in minor units.';
COMMENT ON COLUMN payments.balance_by_currency.disputed_minor IS 'disputed in minor units.';
COMMENT ON COLUMN payments.balance_by_currency.net_minor IS 'net in minor units.';
