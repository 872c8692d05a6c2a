-- payments: the tables of api_keys (its functions: sql/code/api_keys.sql). Created once; a
-- release changes them in its delta (sql/delta/).

-- ---------------------------------------------------------------------------
-- API keys
-- ---------------------------------------------------------------------------
CREATE TABLE payments.api_keys (
    id         text COLLATE "C" PRIMARY KEY,
    name       text NOT NULL CHECK (name <> ''),
    key_hash   bytea NOT NULL UNIQUE,
    scopes     text[] NOT NULL
               CHECK (cardinality(scopes) > 0 AND payments._all_allowed('api_key_scope', scopes)),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    customer_id text COLLATE "C" CHECK (length(customer_id) BETWEEN 1 AND 255)
);
COMMENT ON TABLE payments.api_keys IS
    'Gateway API keys. Only the sha256 of a key is stored; the key itself is shown once, by create_api_key.';
COMMENT ON COLUMN payments.api_keys.scopes IS 'payments:read (GET routes), payments:write (POST routes), webhooks:manage (webhook endpoints), payments:admin (a reconciliation''s repair).';
COMMENT ON COLUMN payments.api_keys.customer_id IS 'The one customer the key acts for (an agent or an app of that customer): it sees and acts on that customer''s objects only, others'' are answered as missing; platform-wide routes refuse it. NULL: a platform key.';
SELECT pg_catalog.pg_extension_config_dump('payments.api_keys', '');

-- ---------------------------------------------------------------------------
-- Provider work for the reconciler
-- ---------------------------------------------------------------------------
CREATE INDEX payments_awaiting_provider_idx ON payments.payments (updated_at)
    WHERE status IN ('requires_confirmation', 'processing');
