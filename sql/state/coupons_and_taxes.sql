-- payments: the tables of coupons, discounts and tax rates (their functions:
-- sql/code/coupons_and_taxes.sql; the arithmetic: core/src/invoice.rs). Created once; a release
-- changes them in its delta (sql/delta/).

CREATE TABLE payments.coupons (
    code                text COLLATE "C" PRIMARY KEY CHECK (code ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    name                text CHECK (length(name) BETWEEN 1 AND 255),
    percent_off         numeric CHECK (percent_off > 0 AND percent_off <= 100 AND scale(percent_off) <= 4),
    amount_off_minor    bigint CHECK (amount_off_minor > 0),
    currency            text COLLATE "C" CHECK (currency ~ '^[A-Z]{3}$'),
    duration            text COLLATE "C" NOT NULL CHECK (payments._is_allowed('coupon_duration', duration)),
    duration_in_periods integer CHECK (duration_in_periods BETWEEN 1 AND 1200),
    max_redemptions     integer CHECK (max_redemptions > 0),
    times_redeemed      integer NOT NULL DEFAULT 0 CHECK (times_redeemed >= 0),
    redeem_by           timestamptz,
    applies_to_plans    text[] COLLATE "C" CHECK (cardinality(applies_to_plans) BETWEEN 1 AND 100),
    created_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT coupons_one_discount CHECK ((percent_off IS NULL) <> (amount_off_minor IS NULL)),
    CONSTRAINT coupons_amount_has_currency CHECK ((amount_off_minor IS NULL) = (currency IS NULL)),
    CONSTRAINT coupons_repeating_has_periods CHECK ((duration = 'repeating') = (duration_in_periods IS NOT NULL)),
    CONSTRAINT coupons_redeemed_within CHECK (times_redeemed <= max_redemptions)
);
COMMENT ON TABLE payments.coupons IS
    'Discounts subscriptions can redeem (apply_coupon), as Stripe''s coupons: a percent or an amount off, once, for some periods or forever, up to max_redemptions times and until redeem_by, for some plans or all. Made by payments_admin with create_coupon; on Citus a reference table.';
COMMENT ON COLUMN payments.coupons.code IS 'The code customers type: letters, digits, _ and - (at most 64; case kept).';
COMMENT ON COLUMN payments.coupons.percent_off IS 'Percent off each discountable line (above 0, at most 100); or amount_off_minor.';
COMMENT ON COLUMN payments.coupons.amount_off_minor IS 'Minor units of currency off an invoice, shared among its lines in proportion; only on invoices in that currency.';
COMMENT ON COLUMN payments.coupons.duration IS 'once: the first invoice period after it is applied; repeating: duration_in_periods periods from it; forever.';
COMMENT ON COLUMN payments.coupons.times_redeemed IS 'How many subscriptions redeemed it: never above max_redemptions, however many apply it at once.';
COMMENT ON COLUMN payments.coupons.applies_to_plans IS 'The plans whose subscriptions may redeem it; NULL: any.';
SELECT pg_catalog.pg_extension_config_dump('payments.coupons', '');

CREATE TABLE payments.promotion_codes (
    code             text COLLATE "C" PRIMARY KEY CHECK (code ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    coupon           text COLLATE "C" NOT NULL,
    only_customer    text COLLATE "C" CHECK (length(only_customer) BETWEEN 1 AND 255),
    max_redemptions  integer CHECK (max_redemptions > 0),
    times_redeemed   integer NOT NULL DEFAULT 0 CHECK (times_redeemed >= 0),
    redeem_by        timestamptz,
    active           boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT promotion_codes_redeemed_within CHECK (times_redeemed <= max_redemptions)
);
COMMENT ON TABLE payments.promotion_codes IS
    'Codes customers type for a coupon (create_promotion_code), as Stripe''s promotion codes: each with its own limits (max_redemptions, redeem_by, one customer only) on top of its coupon''s. apply_coupon takes either. Made by payments_admin and readable by it only (a code is a key to a discount); on Citus a reference table.';
COMMENT ON COLUMN payments.promotion_codes.coupon IS
    'The coupon''s code (payments.coupons; create_promotion_code checks it, and coupons are never deleted). No foreign key: on Citus one between reference tables makes every redemption''s update of the coupon wait for sequential mode, which a transaction that read a distributed table in parallel cannot take.';
COMMENT ON COLUMN payments.promotion_codes.only_customer IS
    'Only this customer may redeem it; NULL: anyone. (Not named customer_id: the code is the platform''s, not the customer''s row; on Citus a reference table.)';
COMMENT ON COLUMN payments.promotion_codes.active IS 'An inactive code redeems nothing (set_promotion_code_active).';
SELECT pg_catalog.pg_extension_config_dump('payments.promotion_codes', '');

CREATE TABLE payments.discounts (
    customer_id     text COLLATE "C" NOT NULL,
    id              text COLLATE "C" NOT NULL,
    subscription_id text COLLATE "C" NOT NULL,
    coupon          text COLLATE "C" NOT NULL,
    promotion_code  text COLLATE "C",
    first_period    integer NOT NULL CHECK (first_period >= 1),
    last_period     integer,
    applied_at      timestamptz NOT NULL,
    ended_at        timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT discounts_periods_in_order CHECK (last_period >= first_period),
    PRIMARY KEY (customer_id, id),
    CONSTRAINT discounts_once_per_subscription UNIQUE (customer_id, subscription_id, coupon),
    FOREIGN KEY (customer_id, subscription_id) REFERENCES payments.subscriptions (customer_id, id)
);
COMMENT ON TABLE payments.discounts IS
    'A coupon redeemed by a subscription (apply_coupon): it takes its discount off the subscription''s invoices of periods first_period to last_period. One per subscription at a time: applying another ends it (ended_at), as Stripe replaces a subscription''s discount. Beside the customer (on Citus, by customer_id).';
COMMENT ON COLUMN payments.discounts.id IS 'dsc_ + 26-character time-sortable id.';
COMMENT ON COLUMN payments.discounts.coupon IS 'The coupon''s code (payments.coupons; never deleted).';
COMMENT ON COLUMN payments.discounts.promotion_code IS 'The promotion code it was redeemed with, if any.';
COMMENT ON COLUMN payments.discounts.first_period IS 'The first period whose invoices it discounts: the one after the period it was applied in (a trial''s: the first paid one).';
COMMENT ON COLUMN payments.discounts.last_period IS 'The last period it discounts; NULL: forever.';
COMMENT ON COLUMN payments.discounts.applied_at IS 'The at of apply_coupon.';
COMMENT ON COLUMN payments.discounts.ended_at IS 'When another coupon replaced it; it discounts nothing after.';
SELECT pg_catalog.pg_extension_config_dump('payments.discounts', '');

CREATE TABLE payments.tax_rates (
    code         text COLLATE "C" PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    display_name text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 100),
    percentage   numeric NOT NULL CHECK (percentage >= 0 AND percentage <= 100 AND scale(percentage) <= 4),
    inclusive    boolean NOT NULL,
    jurisdiction text CHECK (length(jurisdiction) BETWEEN 1 AND 100),
    created_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE payments.tax_rates IS
    'Tax rates the operator assigns to customers (set_customer_tax), as Stripe''s tax rates: a percentage, exclusive (added to the invoice) or inclusive (inside its prices). A rate never changes (a new code for a new rate), and invoices keep what they charged (payments.invoice_taxes). Which rate applies to an address is not computed here. Made by payments_admin with create_tax_rate; on Citus a reference table.';
COMMENT ON COLUMN payments.tax_rates.display_name IS 'How invoices name it: VAT, Sales tax.';
COMMENT ON COLUMN payments.tax_rates.percentage IS 'Percent, 0 to 100, at most 4 decimals.';
COMMENT ON COLUMN payments.tax_rates.inclusive IS 'Whether prices include it (VAT in Europe) or it is added (US sales tax).';
SELECT pg_catalog.pg_extension_config_dump('payments.tax_rates', '');

CREATE TABLE payments.customer_taxes (
    customer_id text COLLATE "C" PRIMARY KEY CHECK (length(customer_id) BETWEEN 1 AND 255),
    tax_rates   text[] COLLATE "C" NOT NULL DEFAULT '{}' CHECK (cardinality(tax_rates) <= 5),
    tax_exempt  boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE payments.customer_taxes IS
    'The tax rates each new invoice of a customer charges (set_customer_tax), unless it is exempt. Beside the customer (on Citus, by customer_id).';
SELECT pg_catalog.pg_extension_config_dump('payments.customer_taxes', '');

CREATE TABLE payments.invoice_taxes (
    customer_id  text COLLATE "C" NOT NULL,
    invoice_id   text COLLATE "C" NOT NULL,
    tax_rate     text COLLATE "C" NOT NULL,
    display_name text NOT NULL,
    percentage   numeric NOT NULL,
    inclusive    boolean NOT NULL,
    amount_minor bigint NOT NULL,
    PRIMARY KEY (customer_id, invoice_id, tax_rate),
    FOREIGN KEY (customer_id, invoice_id) REFERENCES payments.invoices (customer_id, id)
);
COMMENT ON TABLE payments.invoice_taxes IS
    'What each tax rate charged on an invoice, with the rate as it was: an invoice never changes with its rates. Inclusive taxes are inside the lines'' amounts; exclusive ones were added to the total.';
SELECT pg_catalog.pg_extension_config_dump('payments.invoice_taxes', '');
