//! Upgrades in place: a database made with the oldest supported release
//! (0.1.0, `sql/releases/payments--0.1.0.sql`) and holding data written
//! through it is updated to the last release (0.3.0), given billing data
//! through that one, and taken to the version in development (whose upgrade
//! script is generated: `scripts/sqltool.py`) with `ALTER EXTENSION payments
//! UPDATE`, and then
//!  (a) its `payments` schema equals a fresh install's (tests/sql/catalog.sql),
//!  (b) the data of both releases is intact and its hash chains verify,
//!  (c) the in-database test suite (the `#[pg_test]`s) passes against it.
//!
//! Installing 0.1.0 with the current shared library also proves that every
//! Rust function the old script references still exists. `make upgrade-test`
//! installs the `pg_test` build first, which (c) needs; hence `#[ignore]` here.

use payments_core::webhook::stripe;
use payments_e2e::{connect_to, database_url_for, recreate_database};
use tokio_postgres::Client;

const OLDEST: &str = "0.1.0";
const LAST_RELEASE: &str = "0.3.0";
const CATALOG: &str = include_str!("../../sql/catalog.sql");

/// Every row of every table the old version wrote, as text, in a stable order; `keys` says
/// where the idempotency keys are (their own table until 0.4.0, then their payment's row).
fn data_query(keys: &str) -> String {
    format!(
        "SELECT 'payments' AS t, jsonb_agg(to_jsonb(p) - 'idempotency_key' - 'request_fingerprint' ORDER BY p.id)
           FROM payments.payments p
         UNION ALL SELECT 'events', jsonb_agg(to_jsonb(e) ORDER BY e.payment_id, e.seq) FROM payments.payment_events e
         UNION ALL {keys}
         UNION ALL SELECT 'webhooks', jsonb_agg(to_jsonb(w) ORDER BY w.event_id) FROM payments.webhook_events w
         UNION ALL SELECT 'pending', jsonb_agg(to_jsonb(w) ORDER BY w.event_id) FROM payments.webhook_pending w
         UNION ALL SELECT 'secrets', jsonb_agg(to_jsonb(s) ORDER BY s.id) FROM payments.webhook_secrets s
         UNION ALL SELECT 'api_keys', jsonb_agg(to_jsonb(a) ORDER BY a.id) FROM payments.api_keys a"
    )
}
const KEYS_TABLE: &str =
    "SELECT 'keys', jsonb_agg(to_jsonb(k) - 'created_at' ORDER BY k.key) FROM payments.idempotency_keys k";
const KEYS_IN_PAYMENTS: &str = "SELECT 'keys', jsonb_agg(jsonb_build_object('key', p.idempotency_key,
    'fingerprint', p.request_fingerprint, 'payment_id', p.id, 'customer_id', p.customer_id) ORDER BY p.idempotency_key)
    FROM payments.payments p WHERE p.idempotency_key IS NOT NULL";

/// What the last release wrote beside: billing (meters, plans, a subscription, its invoice,
/// usage and the usage's daily totals).
const BILLING_DATA: &str = "SELECT 'meters' AS t, jsonb_agg(to_jsonb(m) ORDER BY m.code) FROM payments.meters m
    UNION ALL SELECT 'plans', jsonb_agg(to_jsonb(p) ORDER BY p.code) FROM payments.plans p
    UNION ALL SELECT 'subscriptions', jsonb_agg(to_jsonb(s) ORDER BY s.id) FROM payments.subscriptions s
    UNION ALL SELECT 'invoices', jsonb_agg(to_jsonb(i) ORDER BY i.id) FROM payments.invoices i
    UNION ALL SELECT 'usage', jsonb_agg(to_jsonb(u) ORDER BY u.id) FROM payments.usage_events u
    UNION ALL SELECT 'usage_daily', jsonb_agg(to_jsonb(d) ORDER BY d.meter, d.day, d.stripe) FROM payments.usage_daily d";

async fn catalog(db: &Client) -> Vec<String> {
    db.query(CATALOG, &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
}

async fn data(db: &Client, query: &str) -> Vec<(String, Option<serde_json::Value>)> {
    db.query(query, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// `after` holds every row of `before` with the same values; columns an upgrade
/// added may only hold their defaults (NULL, 0, false, {}, a quantity of 1) or what they derive from the
/// row: `customer_id` its payment's customer, a subscription's `currency` its plan's, a plan's `version` 1, `object` (a waiting webhook's)
/// the provider object it names, `amount_captured_minor` a success's amount.
fn intact(before: &[(String, Option<serde_json::Value>)], after: &[(String, Option<serde_json::Value>)]) {
    assert_eq!(before.len(), after.len());
    let payments = before.iter().find(|(t, _)| t == "payments").and_then(|(_, rows)| rows.as_ref());
    let plans = before.iter().find(|(t, _)| t == "plans").and_then(|(_, rows)| rows.as_ref());
    let currency_of = |plan: Option<&serde_json::Value>| {
        let mut plans = plans.and_then(|p| p.as_array()).into_iter().flatten();
        plans.find(|p| Some(&p["code"]) == plan).map(|p| p["currency"].clone())
    };
    let customer_of = |payment_id: Option<&serde_json::Value>| {
        let mut payments = payments.and_then(|p| p.as_array()).into_iter().flatten();
        payments.find(|p| Some(&p["id"]) == payment_id).map(|p| p["customer_id"].clone())
    };
    for ((table, old), (_, new)) in before.iter().zip(after) {
        let (old, new) = (old.as_ref().and_then(|v| v.as_array()), new.as_ref().and_then(|v| v.as_array()));
        let (old, new) = (old.expect("rows before"), new.expect("rows after"));
        assert_eq!(old.len(), new.len(), "{table}: rows");
        for (o, n) in old.iter().zip(new) {
            let (o, n) = (o.as_object().unwrap(), n.as_object().unwrap());
            for (column, value) in n {
                match o.get(column) {
                    Some(was) => assert_eq!(was, value, "{table}.{column}"),
                    None if column == "customer_id" => assert_eq!(
                        Some(value),
                        customer_of(o.get("payment_id")).as_ref().or(Some(&serde_json::Value::Null)),
                        "{table}.customer_id, added, is its payment's customer"
                    ),
                    None if column == "amount_captured_minor" => {
                        let captured = if o["status"] == "succeeded" {
                            o["amount_minor"].clone()
                        } else {
                            serde_json::Value::Null
                        };
                        assert_eq!(value, &captured, "{table}.amount_captured_minor, added, is what a success captured")
                    }
                    None if column == "object" => {
                        assert_eq!(
                            value["id"], o["provider_payment_id"],
                            "{table}.object, added, names its provider id"
                        )
                    }
                    None if column == "series" => assert_eq!(value, "invoice", "{table}.series, added"),
                    None if column == "missing_payment_method" => {
                        assert_eq!(value, "create_invoice", "{table}.{column}, added: Stripe's default")
                    }
                    None if column == "version" || column == "plan_version" => {
                        assert_eq!(value, 1, "{table}.{column}, added: what was is version 1")
                    }
                    None if column == "currency" => {
                        assert_eq!(
                            Some(value),
                            currency_of(o.get("plan")).as_ref(),
                            "{table}.currency, added, is its plan's"
                        )
                    }
                    None if column == "consumed_at" => {
                        assert_eq!(Some(value), o.get("created_at"), "{table}.consumed_at, added, is when it was made")
                    }
                    None => assert!(
                        value.is_null()
                            || value == 0
                            || *value == serde_json::json!({})
                            || value == false
                            || (column == "quantity" && value == 1),
                        "{table}.{column}, added, holds {value}"
                    ),
                }
            }
            // What a downgrade left moved into the ledger (checked by the caller).
            let moved = |k: &str| table == "subscriptions" && k == "credit_minor";
            assert!(o.keys().all(|k| n.contains_key(k) || moved(k)), "{table}: no column lost");
        }
    }
}

async fn extension_version(db: &Client) -> String {
    db.query_one("SELECT extversion FROM pg_extension WHERE extname = 'payments'", &[]).await.unwrap().get(0)
}

/// Payments in every state a payment can rest in (up-9 waits in
/// requires_confirmation and up-7 in processing: work for the reconciler),
/// their events, idempotency keys, webhooks
/// (applied, duplicate, stale, ignored and one still pending) and an API key,
/// all through the old version's functions.
async fn write_through_old_version(db: &Client) {
    let secret = "whsec_upgrade_test";
    db.batch_execute(&format!(
        "SELECT payments.add_webhook_secret('upgrade', 'stripe', '{secret}');
         SELECT payments.create_api_key('upgrade', ARRAY['payments:read']);
         SELECT payments.create_payment('up-1', 'cust_up', 10.00, 'USD');
         SELECT payments.create_payment('up-2', 'cust_up', 20.00, 'EUR', 'pm_card_visa', 'two', '{{\"n\": 2}}');
         SELECT payments.create_payment('up-3', 'cust_up', 30, 'JPY', 'pm_card_chargeDeclined');
         SELECT payments.create_payment('up-4', 'cust_up', 4.000, 'KWD');
         SELECT payments.create_payment('up-5', 'cust_up2', 5.00, 'USD', 'pm_card_authenticationRequired',
                                        capture_method => 'manual');
         SELECT payments.create_payment('up-6', 'cust_up2', 6.00, 'USD', 'pm_usBankAccount');
         SELECT payments.create_payment('up-7', 'cust_up2', 7.00, 'USD', 'pm_usBankAccount');
         SELECT payments.create_payment('up-8', 'cust_up2', 8.00, 'USD', 'pm_card_visa', capture_method => 'manual');
         SELECT payments.create_payment('up-9', 'cust_up2', 9.00, 'USD', 'pm_card_visa');
         SELECT payments.record_provider_result(id, 'upgrade', 'pi_up_2', 'succeeded', '{{\"client_secret\": \"x\"}}')
           FROM payments.idempotency_keys k JOIN payments.payments p ON p.id = k.payment_id WHERE k.key = 'up-2';
         SELECT payments.record_provider_result(id, 'upgrade', 'pi_up_3', 'failed',
                                                '{{\"last_payment_error\": {{\"code\": \"card_declined\"}}}}')
           FROM payments.idempotency_keys k JOIN payments.payments p ON p.id = k.payment_id WHERE k.key = 'up-3';
         SELECT payments.transition(payment_id, 'canceled', 'api', 'customer left')
           FROM payments.idempotency_keys WHERE key = 'up-4';
         SELECT payments.record_provider_result(id, 'upgrade', 'pi_up_5', 'requires_action', '{{}}')
           FROM payments.idempotency_keys k JOIN payments.payments p ON p.id = k.payment_id WHERE k.key = 'up-5';
         SELECT payments.record_provider_result(id, 'upgrade', 'pi_up_6', 'requires_action', '{{}}')
           FROM payments.idempotency_keys k JOIN payments.payments p ON p.id = k.payment_id WHERE k.key = 'up-6';
         SELECT payments.record_provider_result(id, 'upgrade', 'pi_up_7', 'processing', '{{}}')
           FROM payments.idempotency_keys k JOIN payments.payments p ON p.id = k.payment_id WHERE k.key = 'up-7';
         SELECT payments.record_provider_result(id, 'upgrade', 'pi_up_8', 'requires_capture', '{{}}')
           FROM payments.idempotency_keys k JOIN payments.payments p ON p.id = k.payment_id WHERE k.key = 'up-8';"
    ))
    .await
    .unwrap();
    let t: i64 = db.query_one("SELECT floor(extract(epoch FROM now()))::bigint", &[]).await.unwrap().get(0);
    let events = [
        ("evt_up_1", "payment_intent.succeeded", "pi_up_6", t),
        ("evt_up_1", "payment_intent.succeeded", "pi_up_6", t),
        ("evt_up_2", "payment_intent.processing", "pi_up_6", t - 10),
        ("evt_up_3", "customer.created", "cus_up", t),
        ("evt_up_4", "payment_intent.succeeded", "pi_up_unknown", t),
    ];
    let mut results = Vec::new();
    for (id, kind, pi, t) in events {
        let body = format!(
            r#"{{"id":"{id}","object":"event","type":"{kind}","created":{t},"data":{{"object":{{"id":"{pi}","object":"payment_intent","amount":600}}}}}}"#
        );
        let headers = serde_json::json!({ "stripe-signature": stripe::sign(secret, t, body.as_bytes()) });
        let row = db
            .query_one("SELECT payments.ingest_webhook('upgrade', $1, $2) ->> 'result'", &[&headers, &body.as_bytes()])
            .await
            .unwrap();
        results.push(row.get::<_, String>(0));
    }
    assert_eq!(results, ["applied", "duplicate", "stale", "ignored", "pending_match"], "0.1.0's own behaviour");
}

/// A metered subscription with its first invoice and usage, ended, through the last release's functions.
async fn write_through_last_release(db: &Client) {
    db.batch_execute(
        r#"SELECT payments.create_meter('upgrade_tokens', 'sum');
           SELECT payments.create_plan('upgrade_plan', 'usd', 10, 'month', metered => '[{"meter": "upgrade_tokens",
               "price": {"mode": "per_unit", "tiers": [{"up_to": null, "unit_amount_minor": 1}]}}]');
           SELECT payments.create_subscription('upgrade-sub', 'cust_up3', 'upgrade_plan', 'pm_card_visa');
           SELECT payments.record_usage('upgrade-use-1', 'cust_up3', 'upgrade_tokens', 250);
           SELECT payments.record_usage('upgrade-use-2', 'cust_up3', 'upgrade_tokens', 0.5);
           -- A paid month downgraded half-way: 0.3.0 keeps what it left on the subscription.
           -- (In euros, by another provider: the in-database suite's sums and reports are of dollars and Stripe.)
           SELECT payments.create_plan('upgrade_big', 'eur', 20, 'month');
           SELECT payments.create_plan('upgrade_small', 'eur', 10, 'month');
           SELECT payments.create_subscription('upgrade-down', 'cust_up4', 'upgrade_big', 'pm_card_visa');
           SELECT payments.record_provider_result(i.payment_id, 'upgrade', 'pi_up_down', 'succeeded',
               '{"id": "pi_up_down", "object": "payment_intent", "amount": 2000, "amount_received": 2000,
                 "amount_capturable": 0, "currency": "eur"}')
           FROM payments.invoices i WHERE i.customer_id = 'cust_up4';
           SELECT payments.change_plan(id, 'upgrade_small', at => current_period_start + interval '10 days')
           FROM payments.subscriptions WHERE customer_id = 'cust_up4';
           -- Ended, so that the in-database suite's billing runs find only their own subscriptions.
           SELECT payments.cancel_subscription(id, at_period_end => false) FROM payments.subscriptions;
           -- Snapshots as 0.3.0 names them (object_type payment_intent).
           SELECT payments.record_provider_snapshot('upgrade', '[
               {"id": "pi_up_snap", "object": "payment_intent", "status": "succeeded", "amount": 600, "currency": "usd",
                "created": 1765000000, "client_secret": "pi_up_snap_secret"},
               {"id": "re_up_snap", "object": "refund", "payment_intent": "pi_up_snap", "status": "requires_action",
                "amount": 100, "currency": "usd", "created": 1765000001}]');"#,
    )
    .await
    .unwrap();
}

/// What 0.4.0 reads differently from the rows 0.3.0 left: snapshots named in our words, and a
/// webhook that waited since 0.1.0 (a Stripe object, with no currency) read by the provider's
/// format when its payment is linked, and checked as any evidence is.
async fn the_provider_seam_reads_what_older_versions_stored(db: &Client) {
    let snapshots: String = db
        .query_one(
            "SELECT string_agg(object_type || ' ' || status || ' ' || (object ? 'client_secret'), ', ' ORDER BY object_id)
             FROM payments.provider_snapshots WHERE provider = 'upgrade'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(snapshots, "payment succeeded false, refund pending false");
    let outcome: String = db
        .query_one(
            "SELECT r.outcome FROM payments.create_payment('up-link', 'cust_up', 6.00, 'USD') p,
               payments.record_provider_result(p.id, 'upgrade', 'pi_up_unknown', 'processing',
                                               '{\"amount\": 600, \"currency\": \"usd\"}') r",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(outcome, "applied");
    let anomaly: String = db
        .query_one(
            "SELECT a.kind || ' ' || (a.observed ->> 'webhook_event_id') || ' ' || p.status
             FROM payments.anomalies a JOIN payments.payments p ON p.id = a.payment_id
             WHERE p.provider_payment_id = 'pi_up_unknown'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(anomaly, "currency_mismatch evt_up_4 processing", "the waiting success had no currency: not applied");
}

/// The `#[pg_test]` functions of the installed `pg_test` build, as a fresh
/// install creates them in schema `tests`, recreated in `db` and run there,
/// each in a transaction that is rolled back (as `cargo pgrx test` runs them).
async fn run_pg_tests(fresh: &Client, db: &mut Client) -> usize {
    let definitions: Vec<(String, String)> = fresh
        .query(
            "SELECT p.proname::text, pg_get_functiondef(p.oid) FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'tests' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(definitions.len() > 10, "the pg_test build is not installed: run `make upgrade-test`");
    db.batch_execute("CREATE SCHEMA tests").await.unwrap();
    for (_, definition) in &definitions {
        db.batch_execute(definition).await.unwrap();
    }
    let mut failures = Vec::new();
    for (name, _) in &definitions {
        let tx = db.transaction().await.unwrap();
        if let Err(e) = tx.batch_execute(&format!("SELECT tests.\"{name}\"()")).await {
            failures.push(format!("{name}: {}", e.as_db_error().map_or(e.to_string(), |d| d.message().to_string())));
        }
        tx.rollback().await.unwrap();
    }
    assert!(failures.is_empty(), "in-database tests failed on the upgraded database:\n{}", failures.join("\n"));
    db.batch_execute("DROP SCHEMA tests CASCADE").await.unwrap();
    definitions.len()
}

#[tokio::test]
#[ignore = "needs the pg_test build installed; `make upgrade-test` (part of `make test`) runs it"]
async fn an_upgraded_database_equals_a_fresh_install_keeps_its_data_and_passes_the_suite() {
    recreate_database("payments_upgrade_old").await;
    recreate_database("payments_upgrade_fresh").await;
    let mut old = connect_to(&database_url_for("payments_upgrade_old")).await;
    let fresh = connect_to(&database_url_for("payments_upgrade_fresh")).await;

    old.batch_execute(&format!("CREATE EXTENSION payments VERSION '{OLDEST}'")).await.unwrap();
    assert_eq!(extension_version(&old).await, OLDEST);
    write_through_old_version(&old).await;
    let before = data(&old, &data_query(KEYS_TABLE)).await;
    assert!(before.iter().all(|(_, rows)| rows.is_some()), "every table holds data: {before:?}");

    old.batch_execute(&format!("ALTER EXTENSION payments UPDATE TO '{LAST_RELEASE}'")).await.unwrap();
    assert_eq!(extension_version(&old).await, LAST_RELEASE);
    intact(&before, &data(&old, &data_query(KEYS_TABLE)).await);
    write_through_last_release(&old).await;
    let before = data(&old, &data_query(KEYS_TABLE)).await;
    let billing_before = data(&old, BILLING_DATA).await;
    assert!(billing_before.iter().all(|(_, rows)| rows.is_some()), "every table holds data: {billing_before:?}");

    let credit_before: i64 = old
        .query_one("SELECT credit_minor FROM payments.subscriptions WHERE customer_id = 'cust_up4'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(credit_before > 0, "the downgrade left a credit: {credit_before}");

    old.batch_execute("ALTER EXTENSION payments UPDATE").await.unwrap();
    fresh.batch_execute("CREATE EXTENSION payments").await.unwrap();
    let current = extension_version(&fresh).await;
    assert_ne!(current, LAST_RELEASE, "the version in development is past the last release");
    assert_eq!(extension_version(&old).await, current);

    // (a) The same schema, line by line.
    let (upgraded, installed) = (catalog(&old).await, catalog(&fresh).await);
    let only_upgraded: Vec<_> = upgraded.iter().filter(|l| !installed.contains(l)).collect();
    let only_fresh: Vec<_> = installed.iter().filter(|l| !upgraded.contains(l)).collect();
    assert!(
        only_upgraded.is_empty() && only_fresh.is_empty(),
        "the upgraded schema differs from a fresh install\n--- only after the upgrade:\n{}\n--- only in a fresh install:\n{}",
        only_upgraded.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n"),
        only_fresh.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n"),
    );
    assert!(upgraded.len() > 200, "the catalog dump sees the schema ({} lines)", upgraded.len());

    // What the downgrade left is the customer's balance, and the ledger balances.
    let balance: String = old
        .query_one(
            "SELECT string_agg(account || ' ' || unit || ' ' || posted, ',') FROM payments.balances('cust_up4')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(balance, format!("balance EUR {}.{:02}", credit_before / 100, credit_before % 100));
    let unbalanced: i64 =
        old.query_one("SELECT count(*) FROM payments.trial_balance() WHERE difference <> 0", &[]).await.unwrap().get(0);
    assert_eq!(unbalanced, 0);

    // Every plan's prices as version 1.
    let unversioned: i64 = old
        .query_one(
            "SELECT count(*) FROM payments.plans p WHERE NOT EXISTS (SELECT 1 FROM payments.plan_versions v
               WHERE v.plan = p.code AND v.version = 1 AND v.amount_minor = p.amount_minor AND v.metered = p.metered)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unversioned, 0, "every plan's prices are its version 1");

    // (b) The data as it was, and every hash chain intact.
    intact(&before, &data(&old, &data_query(KEYS_IN_PAYMENTS)).await);
    intact(&billing_before, &data(&old, BILLING_DATA).await);
    let broken = old.query("SELECT payment_id, problem FROM payments.verify_event_chain()", &[]).await.unwrap();
    assert!(broken.is_empty(), "{} broken chains after the upgrade", broken.len());
    // Every payment found by its id, every linked provider id (and the one only a webhook named) held once.
    let unrouted: i64 = old
        .query_one(
            "SELECT (SELECT count(*) FROM payments.payments p WHERE NOT EXISTS (SELECT 1 FROM payments.payment_customers r
                       WHERE r.payment_id = p.id AND r.customer_id = p.customer_id))
                  + (SELECT count(*) FROM payments.payments p WHERE p.provider_payment_id IS NOT NULL
                       AND NOT EXISTS (SELECT 1 FROM payments.provider_payments pp WHERE pp.provider = p.provider
                         AND pp.provider_payment_id = p.provider_payment_id AND pp.payment_id = p.id))
                  + (SELECT count(*) FROM payments.payments) - (SELECT count(*) FROM payments.payment_customers)
                  + 8 - (SELECT count(*) FROM payments.provider_payments)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unrouted, 0, "routing rows for the upgraded payments: 7 linked provider ids and 1 waiting");

    // The upgraded database keeps working on its old rows.
    let applied: String = old
        .query_one(
            "SELECT outcome FROM payments.transition(
               (SELECT id FROM payments.payments WHERE idempotency_key = 'up-1'), 'canceled', 'api')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, "applied");
    the_provider_seam_reads_what_older_versions_stored(&old).await;

    // (c) The in-database suite, against the upgraded database with its data.
    let ran = run_pg_tests(&fresh, &mut old).await;
    assert!(ran > 10);
}
