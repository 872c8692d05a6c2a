-- payments: the tables of the double-entry ledger (its functions: sql/code/ledger.sql; its chart
-- of accounts: core/src/ledger.rs). Created once; a release changes them in its delta (sql/delta/).

CREATE TABLE payments.ledger_transfers (
    customer_id         text COLLATE "C" NOT NULL,
    id                  text COLLATE "C" NOT NULL,
    kind                text COLLATE "C" NOT NULL CHECK (payments._is_allowed('transfer_kind', kind)),
    reference           text COLLATE "C" NOT NULL,
    debit_account       text COLLATE "C" NOT NULL CHECK (payments._is_allowed('ledger_account', debit_account)),
    credit_account      text COLLATE "C" NOT NULL CHECK (payments._is_allowed('ledger_account', credit_account)),
    unit                text COLLATE "C" NOT NULL CHECK (unit ~ '^([A-Z]{3}|[a-z][a-z0-9_]{0,31})$'),
    amount              bigint NOT NULL CHECK (amount > 0),
    grant_id            text COLLATE "C",
    idempotency_key     text COLLATE "C" CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_fingerprint bytea,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_transfers_two_accounts CHECK (debit_account <> credit_account),
    CONSTRAINT ledger_transfers_credits_name_their_grant
        CHECK ((grant_id IS NOT NULL) = ('credits' IN (debit_account, credit_account))),
    CONSTRAINT ledger_transfers_key_has_fingerprint CHECK ((idempotency_key IS NULL) = (request_fingerprint IS NULL)),
    PRIMARY KEY (customer_id, id),
    CONSTRAINT ledger_transfers_idempotency_key UNIQUE (customer_id, idempotency_key)
);
CREATE INDEX ledger_transfers_grant_idx ON payments.ledger_transfers (customer_id, grant_id) WHERE grant_id IS NOT NULL;
CREATE INDEX ledger_transfers_reference_idx ON payments.ledger_transfers (customer_id, reference);
COMMENT ON TABLE payments.ledger_transfers IS
    'The ledger: every movement of money or credits, one row each, debiting one account and crediting another by the same amount (so every transfer balances), written in the transaction of what it records: a payment succeeding, a refund, a dispute, a credit grant or its expiry. Accounts are per customer and unit, the platform''s too (payments.ledger_accounts()): an account''s balance is its debits less its credits, and the platform''s is the sum over its customers, so no row is shared by every customer''s postings. Append-only.';
COMMENT ON COLUMN payments.ledger_transfers.id IS 'tr_ + 26-character time-sortable id.';
COMMENT ON COLUMN payments.ledger_transfers.kind IS 'What it records (SELECT * FROM payments.allowed_values() WHERE kind = ''transfer_kind'').';
COMMENT ON COLUMN payments.ledger_transfers.reference IS 'The id of the object it records: a payment, refund, dispute or credit grant.';
COMMENT ON COLUMN payments.ledger_transfers.debit_account IS 'The account debited (one of payments.ledger_accounts()).';
COMMENT ON COLUMN payments.ledger_transfers.credit_account IS 'The account credited.';
COMMENT ON COLUMN payments.ledger_transfers.unit IS 'A currency code (upper case) or a credit unit (lower case, such as tokens).';
COMMENT ON COLUMN payments.ledger_transfers.amount IS 'In the unit''s smallest steps: a currency''s minor units, whole credit units.';
COMMENT ON COLUMN payments.ledger_transfers.grant_id IS 'The credit grant whose credits it adds or takes (credits transfers only).';
COMMENT ON COLUMN payments.ledger_transfers.idempotency_key IS
    'The caller''s key for a transfer a caller asks for (grant_credits): the same key with the same parameters replays, with others it is refused (PM201). NULL for the transfers the product makes itself, once each, in the transaction of the change they record. Not shown to readers.';
SELECT pg_catalog.pg_extension_config_dump('payments.ledger_transfers', '');

CREATE TABLE payments.credit_grants (
    customer_id text COLLATE "C" NOT NULL,
    id          text COLLATE "C" NOT NULL,
    unit        text COLLATE "C" NOT NULL CHECK (unit ~ '^([A-Z]{3}|[a-z][a-z0-9_]{0,31})$'),
    amount      bigint NOT NULL CHECK (amount > 0),
    applies_to  text COLLATE "C" CHECK (length(applies_to) BETWEEN 1 AND 255),
    priority    integer NOT NULL DEFAULT 0,
    expires_at  timestamptz,
    expired_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    remaining   bigint NOT NULL DEFAULT 0 CHECK (remaining >= 0),
    expiry_noticed_at timestamptz,
    CONSTRAINT credit_grants_remaining_within CHECK (remaining <= amount),
    PRIMARY KEY (customer_id, id)
);
CREATE INDEX credit_grants_expiry_idx ON payments.credit_grants (expires_at) WHERE expired_at IS NULL;
COMMENT ON TABLE payments.credit_grants IS
    'Prepaid credits granted to a customer (payments.grant_credits); what is left of each (remaining) is the balance of its credits transfers, kept beside it. Credits are used by priority, then soonest expiry; an expired remainder is posted out (payments.expire_credits), never deleted.';
COMMENT ON COLUMN payments.credit_grants.id IS 'cg_ + 26-character time-sortable id.';
COMMENT ON COLUMN payments.credit_grants.amount IS 'What was granted, in the unit''s smallest steps.';
COMMENT ON COLUMN payments.credit_grants.applies_to IS 'A feature or meter the credits pay for; NULL: invoices.';
COMMENT ON COLUMN payments.credit_grants.priority IS 'Lower is used first.';
COMMENT ON COLUMN payments.credit_grants.remaining IS
    'What is left of it: the balance of its credits transfers, kept with each one (payments._move) so that a reserve reads it in one row rather than summing a grant''s history. Never below 0 or above what was granted.';
COMMENT ON COLUMN payments.credit_grants.expiry_noticed_at IS
    'The at of the run_billing that told apps it expires within a week (event credits.expiring), once.';
COMMENT ON COLUMN payments.credit_grants.expired_at IS 'The at of the expire_credits run that posted out its remainder; NULL while it lasts.';
SELECT pg_catalog.pg_extension_config_dump('payments.credit_grants', '');

CREATE TABLE payments.wallets (
    customer_id         text COLLATE "C" NOT NULL,
    unit                text COLLATE "C" NOT NULL CHECK (unit ~ '^([A-Z]{3}|[a-z][a-z0-9_]{0,31})$'),
    created_at          timestamptz NOT NULL DEFAULT now(),
    auto_top_up_below   bigint CHECK (auto_top_up_below >= 0),
    auto_top_up_amount  bigint CHECK (auto_top_up_amount > 0),
    auto_top_up_method  text CHECK (length(auto_top_up_method) BETWEEN 1 AND 255),
    auto_top_up_payment text COLLATE "C",
    spend_limit         bigint CHECK (spend_limit >= 0),
    spend_period        text COLLATE "C" CHECK (payments._is_allowed('billing_interval', spend_period)),
    low_balance_below   bigint CHECK (low_balance_below > 0),
    CONSTRAINT wallets_spend_limit_whole CHECK ((spend_limit IS NULL) = (spend_period IS NULL)),
    CONSTRAINT wallets_auto_top_up_whole CHECK ((auto_top_up_below IS NULL) = (auto_top_up_amount IS NULL)
                                                AND (auto_top_up_below IS NULL) = (auto_top_up_method IS NULL)),
    PRIMARY KEY (customer_id, unit)
);
COMMENT ON TABLE payments.wallets IS
    'A customer''s credits in one unit, made at its first hold or auto top-up: the row whose lock orders the holds on them (so that concurrent reserves never set aside more than there is) and its automatic top-ups (so that a crossing of the threshold charges once).';
COMMENT ON COLUMN payments.wallets.auto_top_up_below IS
    'Automatic top-up (set_auto_top_up): when a spend or an expiry leaves less than this available, auto_top_up_amount is bought with auto_top_up_method. NULL: off.';
COMMENT ON COLUMN payments.wallets.spend_limit IS
    'What the customer may spend in the unit per spend_period (set_spend_limit): settled holds, open holds and top-ups of the period (in UTC) count; NULL: no limit.';
COMMENT ON COLUMN payments.wallets.low_balance_below IS
    'When a spend leaves less than this available (set_balance_alert), apps are told once per crossing (event balance.low). NULL: off.';
COMMENT ON COLUMN payments.wallets.auto_top_up_payment IS
    'The last automatic top-up''s payment: while it is not final no other is made, and after it failed none until set_auto_top_up is called again.';
SELECT pg_catalog.pg_extension_config_dump('payments.wallets', '');

CREATE TABLE payments.holds (
    customer_id         text COLLATE "C" NOT NULL,
    id                  text COLLATE "C" NOT NULL,
    unit                text COLLATE "C" NOT NULL CHECK (unit ~ '^([A-Z]{3}|[a-z][a-z0-9_]{0,31})$'),
    amount              bigint NOT NULL CHECK (amount > 0),
    status              text COLLATE "C" NOT NULL CHECK (payments._is_allowed('hold_status', status)),
    available           bigint NOT NULL CHECK (available >= 0),
    settled_amount      bigint CHECK (settled_amount >= 0),
    request_id          text COLLATE "C" NOT NULL CHECK (length(request_id) BETWEEN 1 AND 255),
    request_fingerprint bytea NOT NULL,
    expires_at          timestamptz NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    closed_at           timestamptz,
    refusal             text COLLATE "C" CHECK (payments._is_allowed('hold_refusal', refusal)),
    CONSTRAINT holds_settled_within CHECK (settled_amount <= amount),
    CONSTRAINT holds_refused_for_a_reason CHECK ((status = 'refused') = (refusal IS NOT NULL)),
    PRIMARY KEY (customer_id, id),
    CONSTRAINT holds_request_id UNIQUE (customer_id, request_id)
);
CREATE INDEX holds_id_idx ON payments.holds (id);
CREATE INDEX holds_open_idx ON payments.holds (expires_at) WHERE status = 'held';
COMMENT ON TABLE payments.holds IS
    'Two-phase spending (payments.reserve, settle, release): a hold sets credits aside (ledger transfers credits to holds, per grant) until it is settled for the actual amount (spent to revenue, the rest back to its grants), released or expired (all back). A reserve that could not be covered is kept as refused, so its retry answers alike.';
COMMENT ON COLUMN payments.holds.amount IS 'What was asked for, in the unit''s smallest steps.';
COMMENT ON COLUMN payments.holds.available IS 'What the customer''s credits had left after the answer (refused: what they had).';
COMMENT ON COLUMN payments.holds.refusal IS 'Why a reserve was refused: insufficient_credits or spend_limit_reached.';
COMMENT ON COLUMN payments.holds.settled_amount IS 'What settle spent; the rest went back.';
COMMENT ON COLUMN payments.holds.request_id IS 'The caller''s id for the reserve, unique per customer: a retry returns the first answer.';
SELECT pg_catalog.pg_extension_config_dump('payments.holds', '');

CREATE TABLE payments.top_ups (
    customer_id text COLLATE "C" NOT NULL,
    payment_id  text COLLATE "C" NOT NULL,
    unit        text COLLATE "C" NOT NULL CHECK (unit ~ '^([A-Z]{3}|[a-z][a-z0-9_]{0,31})$'),
    amount      bigint NOT NULL CHECK (amount > 0),
    applies_to  text COLLATE "C" CHECK (length(applies_to) BETWEEN 1 AND 255),
    priority    integer NOT NULL DEFAULT 0,
    expires_at  timestamptz,
    grant_id    text COLLATE "C",
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, payment_id),
    FOREIGN KEY (customer_id, payment_id) REFERENCES payments.payments (customer_id, id)
);
COMMENT ON TABLE payments.top_ups IS
    'Credits bought with a payment (payments.top_up): what its payment grants when it succeeds, once, never before (grant_id is then set). Only a row here makes a payment a top-up: a payment''s metadata alone never grants anything.';
COMMENT ON COLUMN payments.top_ups.amount IS 'The credits it grants, in the unit''s smallest steps (for money credit in the payment''s currency: what was paid).';
SELECT pg_catalog.pg_extension_config_dump('payments.top_ups', '');
