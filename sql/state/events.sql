-- payments: the tables of events (its functions: sql/code/events.sql). Created once; a
-- release changes them in its delta (sql/delta/).

CREATE TABLE payments.outbox_events (
    customer_id text COLLATE "C" NOT NULL,
    id          text COLLATE "C" NOT NULL,
    object      text COLLATE "C" NOT NULL CHECK (payments._is_allowed('event_object', object)),
    object_id   text COLLATE "C" NOT NULL,
    seq         bigint NOT NULL CHECK (seq > 0),
    type        text COLLATE "C" NOT NULL,
    status      text COLLATE "C" NOT NULL,
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, id),
    CONSTRAINT outbox_events_object_seq UNIQUE (customer_id, object_id, seq)
);
COMMENT ON TABLE payments.outbox_events IS
    'Every state change of a payment, refund, dispute, subscription or invoice, written in the transaction that made it: what apps are told (webhook endpoints; NOTIFY payments_events when set_event_notifications is on). Append-only; beside the customer (on Citus, by customer_id).';
COMMENT ON COLUMN payments.outbox_events.id IS 'evt_ + 26-character time-sortable id; the webhook-id of its deliveries.';
COMMENT ON COLUMN payments.outbox_events.seq IS 'The object''s changes counted from 1: deliveries to an endpoint follow it.';
COMMENT ON COLUMN payments.outbox_events.type IS
    '<object>.created, <object>.<new status> (payment.succeeded, invoice.paid, subscription.past_due), or <object>.updated for a change that keeps the status (a renewal, a failed invoice attempt).';
COMMENT ON COLUMN payments.outbox_events.data IS 'What the event says: object, id, customer_id, status, previous_status and a few fields of the object (get it for the rest).';
SELECT pg_catalog.pg_extension_config_dump('payments.outbox_events', '');

CREATE TABLE payments.webhook_endpoints (
    id          text COLLATE "C" PRIMARY KEY,
    url         text NOT NULL,
    event_types text[] NOT NULL,
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz
);
COMMENT ON TABLE payments.webhook_endpoints IS
    'Where apps want events delivered (add_webhook_endpoint; remove_webhook_endpoint disables one and keeps its log). Holds no secret (webhook_endpoint_secrets does), so readers may see it. On Citus a reference table.';
COMMENT ON COLUMN payments.webhook_endpoints.event_types IS 'Types it receives: payment.succeeded, invoice.* (every invoice event), * or {} (every event).';
SELECT pg_catalog.pg_extension_config_dump('payments.webhook_endpoints', '');

CREATE TABLE payments.webhook_endpoint_secrets (
    endpoint_id text COLLATE "C" PRIMARY KEY REFERENCES payments.webhook_endpoints (id),
    secret      text NOT NULL
);
COMMENT ON TABLE payments.webhook_endpoint_secrets IS
    'Each endpoint''s Standard Webhooks signing secret (whsec_…), shown once by add_webhook_endpoint and read only by claim_webhook_deliveries; no role selects it. On Citus a reference table.';
SELECT pg_catalog.pg_extension_config_dump('payments.webhook_endpoint_secrets', '');

CREATE TABLE payments.webhook_deliveries (
    customer_id      text COLLATE "C" NOT NULL,
    event_id         text COLLATE "C" NOT NULL,
    endpoint_id      text COLLATE "C" NOT NULL,
    object_id        text COLLATE "C" NOT NULL,
    seq              bigint NOT NULL,
    status           text COLLATE "C" NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status_code integer,
    last_error       text,
    delivered_at     timestamptz,
    PRIMARY KEY (customer_id, event_id, endpoint_id),
    FOREIGN KEY (customer_id, event_id) REFERENCES payments.outbox_events (customer_id, id)
);
-- The next delivery of each object to each endpoint, and the due ones.
CREATE INDEX webhook_deliveries_order_idx ON payments.webhook_deliveries (customer_id, endpoint_id, object_id, seq)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_due_idx ON payments.webhook_deliveries (next_attempt_at) WHERE status = 'pending';
COMMENT ON TABLE payments.webhook_deliveries IS
    'One event to one endpoint: pending until the endpoint answers 2xx (delivered) or the retries run out (failed). An object''s later events wait for its earlier ones. Beside the customer (on Citus, by customer_id).';
COMMENT ON COLUMN payments.webhook_deliveries.next_attempt_at IS 'When it is due: now when made, the lease''s end while an attempt is in flight, then the retry schedule (set_webhook_retries).';
SELECT pg_catalog.pg_extension_config_dump('payments.webhook_deliveries', '');

CREATE TABLE payments.webhook_delivery_attempts (
    customer_id  text COLLATE "C" NOT NULL,
    event_id     text COLLATE "C" NOT NULL,
    endpoint_id  text COLLATE "C" NOT NULL,
    attempt      integer NOT NULL CHECK (attempt > 0),
    attempted_at timestamptz NOT NULL DEFAULT now(),
    status_code  integer CHECK (status_code BETWEEN 100 AND 599),
    error        text,
    duration_ms  integer CHECK (duration_ms >= 0),
    PRIMARY KEY (customer_id, event_id, endpoint_id, attempt),
    FOREIGN KEY (customer_id, event_id, endpoint_id) REFERENCES payments.webhook_deliveries (customer_id, event_id, endpoint_id)
);
COMMENT ON TABLE payments.webhook_delivery_attempts IS
    'Every delivery attempt and how the endpoint answered (a status code, or why there was none). Append-only; beside the customer.';
SELECT pg_catalog.pg_extension_config_dump('payments.webhook_delivery_attempts', '');
