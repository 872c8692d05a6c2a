#!/usr/bin/env bash
# What `make run` prints once everything is up.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PGPORT=${PGPORT:-54315}
DB=${DB:-payments}
GATEWAY_PORT=${GATEWAY_PORT:-8080}
KEY=$(cat "$ROOT/.run/demo-api-key")
URL=http://127.0.0.1:$GATEWAY_PORT
cat <<MSG

payments is running.
  PostgreSQL 15   postgresql://postgres@127.0.0.1:$PGPORT/$DB   (data .run/pgdata, log .run/postgres.log)
  Gateway         $URL   (embedded Stripe sandbox at $URL/sandbox, log .run/gateway.log)
  Demo API key    $KEY   (also in .run/demo-api-key)
  Sandbox API key $(cat "$ROOT/.run/sandbox-api-key")   (the only key the sandbox accepts; .run/sandbox-api-key)

  Dashboard       $URL/dashboard
    sign in as    operator@localhost.test   password $(cat "$ROOT/.run/dashboard-password")   (.run/dashboard-password)
  MCP             $URL/mcp (streamable HTTP, Authorization: Bearer <API key>), or over stdio:
                  DATABASE_URL="host=127.0.0.1 port=$PGPORT user=payments_app dbname=$DB" PAYMENTS_API_KEY=$KEY \\
                    target/release/payments-gateway mcp

Create a payment (the sandbox charges pm_card_visa; try pm_card_chargeDeclined,
pm_card_authenticationRequired, or pm_usBankAccount, which settles by webhook):
  curl -s $URL/v1/payments -H "Authorization: Bearer $KEY" -H "Idempotency-Key: demo-\$(date +%s)" \\
       -H 'Content-Type: application/json' \\
       -d '{"customer_id": "cust_1", "amount": "49.99", "currency": "USD", "payment_method": "pm_usBankAccount"}'

Fetch it (succeeded once the sandbox's webhook has arrived, about half a second later):
  curl -s $URL/v1/payments/<id> -H "Authorization: Bearer $KEY"
  curl -s $URL/v1/payments/<id>/events -H "Authorization: Bearer $KEY"

Authorize, then capture part of it (the rest is released) or cancel it:
  curl -s $URL/v1/payments -H "Authorization: Bearer $KEY" -H "Idempotency-Key: hold-\$(date +%s)" \\
       -H 'Content-Type: application/json' \\
       -d '{"customer_id": "cust_1", "amount": "80.00", "currency": "USD", "payment_method": "pm_card_visa", "capture_method": "manual"}'
  curl -s $URL/v1/payments/<id>/capture -H "Authorization: Bearer $KEY" -d '{"amount": "50.00"}'
  curl -s -X POST $URL/v1/payments/<id>/cancel -H "Authorization: Bearer $KEY"

Refund part of a succeeded payment (settled by the sandbox's webhook shortly after), list its refunds,
see where the money stands, and reconcile today against the provider:
  curl -s $URL/v1/refunds -H "Authorization: Bearer $KEY" -H "Idempotency-Key: refund-\$(date +%s)" \\
       -H 'Content-Type: application/json' -d '{"payment": "<id>", "amount": "10.00"}'
  curl -s "$URL/v1/refunds?payment=<id>" -H "Authorization: Bearer $KEY"
  psql "postgresql://postgres@127.0.0.1:$PGPORT/$DB" -c "SELECT * FROM payments.balance_by_currency"
  curl -s $URL/v1/reconciliations -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \\
       -d "{\"from\": \"\$(date -u +%F)T00:00:00Z\", \"to\": \"\$(date -u -d tomorrow +%F)T00:00:00Z\"}"

The same row and its history in SQL:
  psql "postgresql://postgres@127.0.0.1:$PGPORT/$DB" -c "SELECT id, amount, status FROM payments.payment_details" \\
       -c "SELECT payment_id, seq, from_status, to_status, source FROM payments.payment_history ORDER BY payment_id, seq"
  SELECT * FROM payments.create_payment('k1', 'cust_1', 49.99, 'USD');   -- SQL directly; a second call replays

API description: $URL/openapi.json   Metrics: $URL/metrics   Stop everything: make stop
MSG
