-- payments: the tables of usage (its functions: sql/code/usage.sql). Created once; a
-- release changes them in its delta (sql/delta/).

CREATE TABLE payments.meters (
    code            text COLLATE "C" PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    name            text CHECK (length(name) BETWEEN 1 AND 255),
    aggregation     text NOT NULL CHECK (payments._is_allowed('meter_aggregation', aggregation)),
    unique_property text CHECK (length(unique_property) BETWEEN 1 AND 40),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((aggregation = 'count_unique') = (unique_property IS NOT NULL))
);
COMMENT ON TABLE payments.meters IS
    'What is metered and how its events add up over a period. Made by payments_admin with create_meter; on Citus a reference table (a copy on every node).';
COMMENT ON COLUMN payments.meters.code IS 'The meter''s code, as record_usage names it: lower case letters, digits, _ . - (at most 64).';
COMMENT ON COLUMN payments.meters.aggregation IS 'sum (of quantities), count (of events), count_unique (distinct values of unique_property), max (of quantities) or last (the latest event''s quantity).';
COMMENT ON COLUMN payments.meters.unique_property IS 'count_unique: the property of each event whose distinct values are counted (e.g. user_id for active users).';
SELECT pg_catalog.pg_extension_config_dump('payments.meters', '');

CREATE TABLE payments.usage_events (
    id              text COLLATE "C" NOT NULL,
    customer_id     text COLLATE "C" NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 255),
    meter           text COLLATE "C" NOT NULL,
    quantity        numeric NOT NULL CHECK (quantity >= 0 AND quantity < 1e15),
    occurred_at     timestamptz NOT NULL,
    properties      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(properties) = 'object'),
    idempotency_key text COLLATE "C" NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    fingerprint     bytea NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, id),
    CONSTRAINT usage_events_idempotency_key UNIQUE (customer_id, idempotency_key)
);
CREATE INDEX usage_events_meter_idx ON payments.usage_events (customer_id, meter, occurred_at);
COMMENT ON TABLE payments.usage_events IS
    'Every usage event recorded with record_usage, once per (customer, idempotency key). Append-only. On Citus beside the customer''s payments.';
COMMENT ON COLUMN payments.usage_events.id IS 'use_ + 26-character time-sortable id.';
COMMENT ON COLUMN payments.usage_events.meter IS
    'The meter''s code (payments.meters; record_usage checks it, and meters are never deleted). No foreign key: checking one locks the shared meter row in every recording transaction, and concurrent lockers of one row cost a MultiXact each (record_usage ran at half speed at 32 clients).';
COMMENT ON COLUMN payments.usage_events.quantity IS 'How much was used (exact numeric, 0 up to 10^15; count meters count events whatever it is).';
COMMENT ON COLUMN payments.usage_events.occurred_at IS 'When the usage happened (the period it counts in), at most 35 days before it was recorded and 5 minutes after.';
COMMENT ON COLUMN payments.usage_events.properties IS 'The event''s own dimensions (a flat object: at most 50 keys of 1 to 40 characters, scalar values of at most 500 characters).';
COMMENT ON COLUMN payments.usage_events.fingerprint IS 'sha256 of the event''s meter, quantity, given time and properties: the same key with another event is refused (PM201).';
SELECT pg_catalog.pg_extension_config_dump('payments.usage_events', '');

CREATE TABLE payments.usage_daily (
    customer_id  text COLLATE "C" NOT NULL,
    meter        text COLLATE "C" NOT NULL,
    day          date NOT NULL,
    stripe       smallint NOT NULL CHECK (stripe BETWEEN 0 AND 15),
    quantity     numeric NOT NULL,
    events       bigint NOT NULL,
    max_quantity numeric NOT NULL,
    PRIMARY KEY (customer_id, meter, day, stripe)
);
COMMENT ON TABLE payments.usage_daily IS
    'A running total of usage_events per customer, meter and UTC day, kept by record_usage in the same transaction so that the usage a subscription will bill is bounded without reading every event. Not history: the events are; rebuilt from them by the upgrade. Each day is split in 16 stripes (by server process) so that concurrent recorders of one customer rarely wait on one row; readers add the stripes up. On Citus beside the customer''s usage events. Readable by payments_admin only (readers have payments.usage_log).';
COMMENT ON COLUMN payments.usage_daily.day IS 'The UTC day the events occurred on.';
COMMENT ON COLUMN payments.usage_daily.stripe IS 'Which of the day''s 16 rows the recording server process adds to (its process id modulo 16).';
COMMENT ON COLUMN payments.usage_daily.quantity IS 'The sum of the events'' quantities.';
COMMENT ON COLUMN payments.usage_daily.events IS 'How many events (a bound of count and count_unique meters).';
COMMENT ON COLUMN payments.usage_daily.max_quantity IS 'The largest quantity (a bound of max and last meters).';
SELECT pg_catalog.pg_extension_config_dump('payments.usage_daily', '');
