#!/usr/bin/env bash
# What `make run` prints once everything is up.
PGPORT=${PGPORT:-54315}
DB=${DB:-payments}
cat <<MSG

payments is running.
  PostgreSQL 15 (local cluster, data in .run/pgdata, log in .run/postgres.log):
    postgresql://postgres@127.0.0.1:$PGPORT/$DB

  Try it:
    psql "postgresql://postgres@127.0.0.1:$PGPORT/$DB"
    SELECT * FROM payments.create_payment('k1', 'cust_1', 49.99, 'USD');   -- created
    SELECT * FROM payments.create_payment('k1', 'cust_1', 49.99, 'USD');   -- replayed, same id
    SELECT * FROM payments.list_payments('cust_1');
    SELECT * FROM payments.payment_history ORDER BY payment_id, seq;

  Stop the cluster with: make stop
MSG
