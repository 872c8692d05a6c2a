#!/usr/bin/env bash
# `make run`'s gateway: a login role in payments_gateway (and one in payments_worker for
# its webhook delivery worker), a demo API key, the
# embedded sandbox's webhook secret, and the gateway itself in the background
# (restarted so a rebuilt binary takes over). State lives in .run/.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN_DIR=$ROOT/.run
PGPORT=${PGPORT:-54315}
DB=${DB:-payments}
GATEWAY_PORT=${GATEWAY_PORT:-8080}
BIN=${GATEWAY_BIN:-$ROOT/target/release/payments-gateway}
SUPERUSER="host=127.0.0.1 port=$PGPORT user=postgres dbname=$DB"

sql() { /usr/lib/postgresql/15/bin/psql -X -q -tA -v ON_ERROR_STOP=1 "$SUPERUSER" "$@"; }

sql -c "DO \$\$ BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'payments_app') THEN
            CREATE ROLE payments_app LOGIN IN ROLE payments_gateway;
          END IF;
          -- The webhook delivery worker's own login: only it reads endpoints' secrets.
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'payments_app_worker') THEN
            CREATE ROLE payments_app_worker LOGIN IN ROLE payments_worker;
          END IF;
        END \$\$"

# Keys and secrets below are readable by their owner only.
umask 077
chmod 600 "$RUN_DIR"/demo-api-key "$RUN_DIR"/sandbox-webhook-secret "$RUN_DIR"/sandbox-api-key \
  "$RUN_DIR"/dashboard-password 2>/dev/null || true

# The embedded sandbox answers only to this key (make run's provider is the sandbox).
if [ ! -s "$RUN_DIR/sandbox-api-key" ]; then
  echo "sk_test_$(head -c 20 /dev/urandom | base64 | tr -d '/+=')" > "$RUN_DIR/sandbox-api-key"
fi

# The sandbox signs webhooks with this secret; the database verifies them with it.
if [ ! -s "$RUN_DIR/sandbox-webhook-secret" ] \
   || [ -z "$(sql -c "SELECT 1 FROM payments.webhook_secrets WHERE provider = 'sandbox' AND retired_at IS NULL
                       AND secret = '$(cat "$RUN_DIR/sandbox-webhook-secret")'")" ]; then
  echo "whsec_$(head -c 24 /dev/urandom | base64 | tr -d '/+=')" > "$RUN_DIR/sandbox-webhook-secret"
  sql -c "SELECT payments.add_webhook_secret('sandbox', 'stripe', '$(cat "$RUN_DIR/sandbox-webhook-secret")')" >/dev/null
fi

# A demo key with both scopes, kept while it still authenticates.
if [ ! -s "$RUN_DIR/demo-api-key" ] \
   || [ -z "$(sql -c "SELECT 1 FROM payments.authenticate_api_key('$(cat "$RUN_DIR/demo-api-key")')")" ]; then
  sql -c "SELECT api_key FROM payments.create_api_key('make run demo', ARRAY['payments:read', 'payments:write'])" \
    > "$RUN_DIR/demo-api-key"
fi

# A dashboard operator for the demo; its password is kept while it still signs in, else reset.
DASHBOARD_EMAIL=operator@localhost.test
if [ -z "$(sql -c "SELECT 1 FROM payments.dashboard_users WHERE email = '$DASHBOARD_EMAIL'")" ]; then
  sql -c "SELECT generated_password FROM payments.create_dashboard_user('$DASHBOARD_EMAIL', 'operator')" \
    > "$RUN_DIR/dashboard-password"
# (The password goes to psql on stdin, not on its command line, which ps shows.)
elif [ ! -s "$RUN_DIR/dashboard-password" ] || ! sql >/dev/null 2>&1 <<SQL
SELECT payments.dashboard_sign_out(session_token)
FROM payments.dashboard_sign_in('$DASHBOARD_EMAIL', '$(cat "$RUN_DIR/dashboard-password")');
SQL
then
  sql -c "SELECT payments.reset_dashboard_password('$DASHBOARD_EMAIL')" > "$RUN_DIR/dashboard-password"
fi

if [ -s "$RUN_DIR/gateway.pid" ] && kill -0 "$(cat "$RUN_DIR/gateway.pid")" 2>/dev/null; then
  kill "$(cat "$RUN_DIR/gateway.pid")"
  while kill -0 "$(cat "$RUN_DIR/gateway.pid")" 2>/dev/null; do sleep 0.1; done
fi
# Development: webhook endpoints on this machine are allowed (nothing internal is by default).
DATABASE_URL="host=127.0.0.1 port=$PGPORT user=payments_app dbname=$DB" \
WORKER_DATABASE_URL="host=127.0.0.1 port=$PGPORT user=payments_app_worker dbname=$DB" \
PAYMENTS_PROVIDER=sandbox \
SANDBOX_API_KEY=$(cat "$RUN_DIR/sandbox-api-key") \
SANDBOX_WEBHOOK_SECRET=$(cat "$RUN_DIR/sandbox-webhook-secret") \
WEBHOOK_ALLOWED_NETWORKS=${WEBHOOK_ALLOWED_NETWORKS:-127.0.0.0/8,::1/128} \
  nohup "$BIN" serve --listen "127.0.0.1:$GATEWAY_PORT" > "$RUN_DIR/gateway.log" 2>&1 &
echo $! > "$RUN_DIR/gateway.pid"
for _ in $(seq 50); do
  curl -fsS "http://127.0.0.1:$GATEWAY_PORT/readyz" >/dev/null 2>&1 && exit 0
  sleep 0.1
done
echo "the gateway did not become ready; see $RUN_DIR/gateway.log" >&2
exit 1
