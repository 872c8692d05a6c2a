-- payments: the tables of webhooks (its functions: sql/code/webhooks.sql). Created once; a
-- release changes them in its delta (sql/delta/).

-- ---------------------------------------------------------------------------
-- Secrets
-- ---------------------------------------------------------------------------
CREATE TABLE payments.webhook_secrets (
    id         text COLLATE "C" PRIMARY KEY,
    provider   text NOT NULL CHECK (provider <> ''),
    scheme     text NOT NULL CHECK (payments._is_allowed('webhook_scheme', scheme)),
    secret     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    retired_at timestamptz
);
CREATE INDEX webhook_secrets_provider_idx ON payments.webhook_secrets (provider) WHERE retired_at IS NULL;
COMMENT ON TABLE payments.webhook_secrets IS
    'Webhook signing secrets per provider. Several may be active at once, so a secret can be rotated without downtime. Readable by payments_admin only; never shown in a view or an error.';
COMMENT ON COLUMN payments.webhook_secrets.secret IS 'The signing secret as the provider shows it (whsec_…).';
COMMENT ON COLUMN payments.webhook_secrets.expires_at IS 'When set, the secret stops verifying at this time (the old secret''s end during a rotation).';
COMMENT ON COLUMN payments.webhook_secrets.retired_at IS 'Set by retire_webhook_secret: the secret no longer verifies anything.';
SELECT pg_catalog.pg_extension_config_dump('payments.webhook_secrets', '');

-- ---------------------------------------------------------------------------
-- Settings only an administrator changes
-- ---------------------------------------------------------------------------
-- At most one row; none means the defaults (so pg_dump never dumps a row
-- that CREATE EXTENSION also makes).
CREATE TABLE payments.settings (
    singleton         boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    webhook_tolerance interval NOT NULL CHECK (webhook_tolerance BETWEEN interval '1 second' AND interval '1 hour'),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    webhook_retries   interval[],
    notify_events     boolean NOT NULL DEFAULT false,
    webhook_endpoint_limit integer NOT NULL DEFAULT 16 CHECK (webhook_endpoint_limit BETWEEN 1 AND 1000)
);
COMMENT ON TABLE payments.settings IS
    'The extension''s settings, changed only by payments_admin through payments.set_webhook_tolerance, payments.set_webhook_retries and payments.set_event_notifications. No row: the defaults.';
COMMENT ON COLUMN payments.settings.notify_events IS
    'Whether state changes are announced with NOTIFY payments_events and queued provider commands with NOTIFY payments_provider_commands (default off: a NOTIFY makes commits wait for each other; the gateway polls).';
COMMENT ON COLUMN payments.settings.webhook_tolerance IS
    'How far a webhook''s signed timestamp may be from now, either way (default 5 minutes, at most 1 hour).';
COMMENT ON COLUMN payments.settings.webhook_endpoint_limit IS
    'How many enabled webhook endpoints there may be (default 16; set_webhook_endpoint_limit): each event is written once per endpoint, in the transaction that made it.';
COMMENT ON COLUMN payments.settings.webhook_retries IS
    'The waits between failed attempts to deliver an event to an endpoint (NULL: the default, payments.webhook_retries()).';
SELECT pg_catalog.pg_extension_config_dump('payments.settings', '');

-- ---------------------------------------------------------------------------
-- Received events
-- ---------------------------------------------------------------------------
CREATE TABLE payments.webhook_events (
    id                  text COLLATE "C" NOT NULL,
    provider            text COLLATE "C" NOT NULL,
    event_id            text COLLATE "C" NOT NULL,
    event_type          text NOT NULL,
    event_created       timestamptz,
    provider_payment_id text,
    payment_id          text COLLATE "C",
    result              text NOT NULL CHECK (payments._is_allowed('webhook_result', result)),
    secret_id           text COLLATE "C" NOT NULL,
    headers             jsonb NOT NULL,
    body                bytea NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT now(),
    customer_id         text COLLATE "C",
    -- The event id first: on Citus the log is distributed by it, so the dedupe is one shard's.
    PRIMARY KEY (event_id, provider),
    CHECK ((payment_id IS NULL) = (customer_id IS NULL))
);
CREATE INDEX webhook_events_payment_id_idx ON payments.webhook_events (customer_id, payment_id) WHERE payment_id IS NOT NULL;
COMMENT ON TABLE payments.webhook_events IS
    'Every verified webhook, once per (provider, event_id), with the exact body and headers received, the secret that verified it and what ingest_webhook did with it. Append-only. Unverified bodies are never stored. What an event did to its payment is in that payment''s history (payment_events, beside the payment), naming the event id.';
COMMENT ON COLUMN payments.webhook_events.result IS
    'applied: it moved the payment; noop: the payment already had the status it reports; stale: older than the payment''s state, recorded only; ignored: an event type that moves no payment; pending_match: no payment had its provider id yet (see webhook_pending); mismatch: its object asked for other money than the payment it named, or was another object than the payment''s (see anomalies). Rows stored by version 0.1.0 say stale for noop too.';
COMMENT ON COLUMN payments.webhook_events.secret_id IS
    'The secret that verified it (payments.webhook_secrets; secrets are retired, never deleted). No foreign key: checking one locks the provider''s shared secret row in every ingesting transaction, and concurrent lockers of one row cost a MultiXact each.';
COMMENT ON COLUMN payments.webhook_events.payment_id IS 'The payment it matched when received; NULL for ignored and pending_match events.';
COMMENT ON COLUMN payments.webhook_events.customer_id IS 'The matched payment''s customer; NULL when no payment matched.';
SELECT pg_catalog.pg_extension_config_dump('payments.webhook_events', '');

CREATE TABLE payments.webhook_pending (
    provider            text COLLATE "C" NOT NULL,
    event_id            text COLLATE "C" NOT NULL,
    provider_payment_id text COLLATE "C" NOT NULL,
    event_type          text NOT NULL,
    event_created       timestamptz,
    to_status           text NOT NULL,
    last_error          jsonb,
    object              jsonb NOT NULL,
    -- Beside its provider_payments row (on Citus, the same shard).
    PRIMARY KEY (provider_payment_id, provider, event_id),
    FOREIGN KEY (provider_payment_id, provider) REFERENCES payments.provider_payments (provider_payment_id, provider)
);
COMMENT ON TABLE payments.webhook_pending IS
    'Verified events that arrived before their payment was linked to its provider id (the webhook beat the API response). record_provider_result applies them, in event order, when the id is linked, and removes them from here.';
COMMENT ON COLUMN payments.webhook_pending.object IS 'The event''s data.object as received (webhook_events keeps the exact body): the evidence checked when it is applied.';
SELECT pg_catalog.pg_extension_config_dump('payments.webhook_pending', '');
