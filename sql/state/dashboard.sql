-- payments: the tables of dashboard (its functions: sql/code/dashboard.sql). Created once; a
-- release changes them in its delta (sql/delta/).

CREATE TABLE payments.dashboard_users (
    id            text COLLATE "C" PRIMARY KEY,
    email         text NOT NULL UNIQUE
                  CHECK (email = lower(email) AND email ~ '^[^@[:space:]]+@[^@[:space:]]+$' AND length(email) <= 254),
    role          text NOT NULL CHECK (payments._is_allowed('dashboard_role', role)),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz
);
COMMENT ON TABLE payments.dashboard_users IS
    'People who sign in to the dashboard: viewer (reads every page) or operator (may also refund, capture and cancel). Only an Argon2id hash of a password is kept.';
SELECT pg_catalog.pg_extension_config_dump('payments.dashboard_users', '');

CREATE TABLE payments.dashboard_sessions (
    token_hash bytea PRIMARY KEY,
    user_id    text NOT NULL REFERENCES payments.dashboard_users (id),
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    ended_at   timestamptz
);
CREATE INDEX dashboard_sessions_user_idx ON payments.dashboard_sessions (user_id);
COMMENT ON TABLE payments.dashboard_sessions IS
    'Signed-in dashboard sessions by the sha256 of their cookie, with the token every form must carry (CSRF). Sessions are not history: expired ones are deleted at the next sign-in of their user.';

-- The dashboard's date windows (overview, payments by date) over a table that
-- only grows: a BRIN index is a few pages and costs an insert almost nothing.
CREATE INDEX payments_created_at_brin_idx ON payments.payments USING brin (created_at);
