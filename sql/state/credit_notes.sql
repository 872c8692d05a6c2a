-- payments: the table of credit notes (its functions: sql/code/credit_notes.sql). Created once; a
-- release changes it in its delta (sql/delta/).

CREATE TABLE payments.credit_notes (
    customer_id         text COLLATE "C" NOT NULL,
    id                  text COLLATE "C" NOT NULL,
    invoice_id          text COLLATE "C" NOT NULL,
    number              text COLLATE "C" NOT NULL,
    amount_minor        bigint NOT NULL CHECK (amount_minor > 0),
    currency            text COLLATE "C" NOT NULL,
    reason              text COLLATE "C" CHECK (payments._is_allowed('credit_note_reason', reason)),
    method              text COLLATE "C" NOT NULL CHECK (payments._is_allowed('credit_note_method', method)),
    refund_id           text COLLATE "C",
    idempotency_key     text COLLATE "C" CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_fingerprint bytea,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT credit_notes_refund_named CHECK ((method = 'refund') = (refund_id IS NOT NULL)),
    CONSTRAINT credit_notes_key_has_fingerprint CHECK ((idempotency_key IS NULL) = (request_fingerprint IS NULL)),
    PRIMARY KEY (customer_id, id),
    CONSTRAINT credit_notes_idempotency_key UNIQUE (customer_id, idempotency_key),
    CONSTRAINT credit_notes_number UNIQUE (customer_id, number),
    FOREIGN KEY (customer_id, invoice_id) REFERENCES payments.invoices (customer_id, id)
);
CREATE INDEX credit_notes_invoice_idx ON payments.credit_notes (customer_id, invoice_id);
CREATE INDEX credit_notes_id_idx ON payments.credit_notes (id);
COMMENT ON TABLE payments.credit_notes IS
    'Credit notes (create_credit_note, as Stripe''s): each reduces a finalized invoice by an amount, never past its total less earlier notes: an open invoice owes less, a paid one is refunded through the provider or credited to the customer''s balance. A refund of an invoice''s payment makes its own. Numbered gaplessly per year (CN-YYYY-NNNNNN). Beside the customer (on Citus, by customer_id). Append-only.';
COMMENT ON COLUMN payments.credit_notes.id IS 'cn_ + 26-character time-sortable id.';
COMMENT ON COLUMN payments.credit_notes.reason IS 'Why (SELECT * FROM payments.allowed_values() WHERE kind = ''credit_note_reason''): Stripe''s reasons; NULL for the note a refund made.';
COMMENT ON COLUMN payments.credit_notes.method IS
    'What it did: reduced_amount_due (an open invoice), refund (a paid one''s payment, refund_id), customer_balance (credited to the customer''s balance in the ledger).';
COMMENT ON COLUMN payments.credit_notes.idempotency_key IS 'The caller''s key: the same key with the same parameters replays, with others PM201. NULL for the note a refund made.';
SELECT pg_catalog.pg_extension_config_dump('payments.credit_notes', '');
