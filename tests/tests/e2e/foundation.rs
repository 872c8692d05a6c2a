//! The foundation's promises, checked against a real cluster over the wire.

use std::collections::{HashMap, HashSet};

use futures::future::join_all;
use payments_e2e::{connect, sqlstate, unique, unique_code};

const CREATE: &str = "SELECT id, outcome, amount::text, status, created_at::text
                      FROM payments.create_payment($1, $2, $3::text::numeric, 'USD')";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_of_the_same_keys_make_exactly_one_payment_per_key() {
    let prefix = unique("conc");
    let keys: Vec<String> = (0..100).map(|i| format!("{prefix}-{i}")).collect();

    let workers = (0..32).map(|w| {
        let keys = keys.clone();
        tokio::spawn(async move {
            let db = connect().await;
            let create = db.prepare(CREATE).await.unwrap();
            let mut seen = Vec::new();
            // Each connection walks the keys from a different start, so every
            // key is raced by several connections at once.
            for i in 0..keys.len() {
                let key = &keys[(i + w * 3) % keys.len()];
                let row = db.query_one(&create, &[key, &"cust_conc", &"10.00"]).await.unwrap();
                let shape: (String, String, String, String) = (row.get(0), row.get(2), row.get(3), row.get(4));
                seen.push((key.clone(), row.get::<_, String>(1), shape));
            }
            seen
        })
    });
    let results: Vec<_> = join_all(workers).await.into_iter().flat_map(|r| r.unwrap()).collect();
    assert_eq!(results.len(), 32 * 100);

    let mut rows_per_key: HashMap<&str, HashSet<&(String, String, String, String)>> = HashMap::new();
    let mut created = 0;
    for (key, outcome, shape) in &results {
        rows_per_key.entry(key).or_default().insert(shape);
        match outcome.as_str() {
            "created" => created += 1,
            "replayed" => {}
            other => panic!("unexpected outcome {other}"),
        }
    }
    assert_eq!(created, 100, "exactly one call per key creates");
    assert!(rows_per_key.values().all(|rows| rows.len() == 1), "every replay returns the identical row");

    let db = connect().await;
    let pattern = format!("{prefix}-%");
    let counts = db
        .query_one(
            "SELECT count(DISTINCT p.id), count(e.*)
             FROM payments.payments p
             JOIN payments.payment_events e ON e.customer_id = p.customer_id AND e.payment_id = p.id
             WHERE p.idempotency_key LIKE $1",
            &[&pattern],
        )
        .await
        .unwrap();
    assert_eq!(counts.get::<_, i64>(0), 100, "payments");
    assert_eq!(counts.get::<_, i64>(1), 100, "one creation event each, nothing for replays");
}

#[tokio::test]
async fn a_key_reused_with_another_amount_is_refused_and_named() {
    let db = connect().await;
    let key = unique("reuse");
    db.query_one(CREATE, &[&key, &"cust_1", &"49.99"]).await.unwrap();
    let err = db.query_one(CREATE, &[&key, &"cust_1", &"50.00"]).await.unwrap_err();
    let db_err = err.as_db_error().expect("a database error");
    assert_eq!(db_err.code().code(), "PM201");
    assert!(db_err.message().contains(&key), "{}", db_err.message());
}

#[tokio::test]
async fn the_event_chain_verifies_and_finds_a_tampered_event() {
    let db = connect().await;
    let id: String = db.query_one(CREATE, &[&unique("chain"), &"cust_chain", &"5"]).await.unwrap().get(0);
    for (to, source) in [("requires_confirmation", "api"), ("processing", "provider"), ("succeeded", "webhook")] {
        db.execute("SELECT payments.transition($1, $2, $3)", &[&id, &to, &source]).await.unwrap();
    }
    let broken = db.query("SELECT * FROM payments.verify_event_chain($1)", &[&id]).await.unwrap();
    assert!(broken.is_empty(), "an untouched history verifies");

    // As a superuser, with triggers off, rewrite one event's reason (on Citus
    // the SET LOCAL reaches the node holding the row).
    db.batch_execute(
        "BEGIN; SET LOCAL citus.propagate_set_commands = 'local'; SET LOCAL session_replication_role = replica",
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE payments.payment_events SET reason = 'forged' WHERE customer_id = 'cust_chain' AND payment_id = $1 AND seq = 3",
        &[&id],
    )
    .await
    .unwrap();
    db.batch_execute("COMMIT").await.unwrap();

    let broken = db.query("SELECT seq, problem FROM payments.verify_event_chain($1)", &[&id]).await.unwrap();
    assert_eq!(broken.len(), 1);
    assert_eq!(broken[0].get::<_, i64>(0), 3);
    assert_eq!(broken[0].get::<_, String>(1), "hash does not match the event");
}

#[tokio::test]
async fn history_refuses_changes_even_from_its_owner() {
    let db = connect().await;
    let id: String = db.query_one(CREATE, &[&unique("owner"), &"cust_owner", &"5"]).await.unwrap().get(0);
    let update = db.execute("UPDATE payments.payment_events SET reason = 'x' WHERE payment_id = $1", &[&id]).await;
    assert_eq!(sqlstate(update), "PM205");
    let delete = db.execute("DELETE FROM payments.payment_events WHERE payment_id = $1", &[&id]).await;
    assert_eq!(sqlstate(delete), "PM205");
}

#[tokio::test]
async fn the_reader_role_can_read_but_never_write() {
    let db = connect().await;
    let id: String = db.query_one(CREATE, &[&unique("reader"), &"cust_reader", &"5"]).await.unwrap().get(0);
    // A login role in payments_reader, as BI tools connect (on Citus the
    // coordinator reaches the workers as the current role, which must log in).
    db.batch_execute(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'payments_e2e_reader') THEN
             CREATE ROLE payments_e2e_reader LOGIN IN ROLE payments_reader;
           END IF;
         END $$; SET ROLE payments_e2e_reader",
    )
    .await
    .unwrap();

    let row = db.query_one("SELECT status FROM payments.payment_details WHERE id = $1", &[&id]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "requires_payment_method");
    let got = db.query_one("SELECT id FROM payments.get_payment($1)", &[&id]).await.unwrap();
    assert_eq!(got.get::<_, String>(0), id);

    let denied = [
        db.execute(
            "INSERT INTO payments.payments (id, customer_id, amount_minor, currency, status, capture_method)
             VALUES ('pay_x', 'c', 1, 'USD', 'succeeded', 'automatic')",
            &[],
        )
        .await,
        db.execute("UPDATE payments.payments SET status = 'succeeded' WHERE id = $1", &[&id]).await,
        db.execute("SELECT payments.create_payment('reader-key', 'c', 1, 'USD')", &[]).await,
        db.execute("SELECT payments.transition($1, 'succeeded', 'api')", &[&id]).await,
        db.execute("SELECT payments.record_provider_result($1, 'sandbox', 'pi_r', 'succeeded', '{}')", &[&id]).await,
        db.execute("SELECT payments.purge_idempotency_keys('2 days')", &[]).await,
        db.execute("SELECT * FROM payments.api_keys", &[]).await,
    ];
    for result in denied {
        assert_eq!(sqlstate(result), "42501");
    }
    db.batch_execute("RESET ROLE").await.unwrap();
    let status: String =
        db.query_one("SELECT status FROM payments.payments WHERE id = $1", &[&id]).await.unwrap().get(0);
    assert_eq!(status, "requires_payment_method");
}

/// The README's pattern: a payment in the same transaction as the app's own rows.
#[tokio::test]
async fn create_payment_lives_and_dies_with_the_callers_transaction() {
    let mut db = connect().await;
    let count = "SELECT (SELECT count(*) FROM payments.payments p WHERE p.idempotency_key = $1)
                      + (SELECT count(*) FROM payments.payment_events e JOIN payments.payments p
                           ON p.customer_id = e.customer_id AND p.id = e.payment_id WHERE p.idempotency_key = $1)";

    let rolled_back = unique("txn-rollback");
    let tx = db.transaction().await.unwrap();
    let id: String = tx.query_one(CREATE, &[&rolled_back, &"cust_txn", &"7.50"]).await.unwrap().get(0);
    tx.rollback().await.unwrap();
    assert_eq!(db.query_one(count, &[&rolled_back]).await.unwrap().get::<_, i64>(0), 0);
    let gone = db.query("SELECT 1 FROM payments.payments WHERE id = $1", &[&id]).await.unwrap();
    assert!(gone.is_empty());

    let committed = unique("txn-commit");
    let tx = db.transaction().await.unwrap();
    tx.query_one(CREATE, &[&committed, &"cust_txn", &"7.50"]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        db.query_one(count, &[&committed]).await.unwrap().get::<_, i64>(0),
        2,
        "the payment (with its key) and its event"
    );
}

/// A payment of `amount_minor` cents the provider captured in full: (customer, payment id).
async fn captured(db: &tokio_postgres::Client, amount_minor: i64) -> (String, String) {
    let customer = unique("cust_rf");
    let create = "SELECT id FROM payments.create_payment($1, $2, payments.to_major($3, 'USD'), 'USD', 'pm_card_visa')";
    let id: String = db.query_one(create, &[&unique("k"), &customer, &amount_minor]).await.unwrap().get(0);
    let pi = unique("pi_rf");
    let intent = format!(
        r#"{{"id":"{pi}","object":"payment_intent","amount":{amount_minor},"currency":"usd","amount_received":{amount_minor},"amount_capturable":0}}"#
    );
    let record = "SELECT payments.record_provider_result($1, 'sandbox', $2, 'succeeded', $3::text::jsonb)";
    db.execute(record, &[&id, &pi, &intent]).await.unwrap();
    (customer, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_connections_refunding_one_payment_never_refund_more_than_it_captured() {
    let db = connect().await;
    let (customer, id) = captured(&db, 1000).await;
    // Each connection asks for 0.70 (a different key each): 14 fit in 10.00, and at most that.
    let workers = (0..32).map(|_| {
        let id = id.clone();
        tokio::spawn(async move {
            let db = connect().await;
            let r =
                db.query_one("SELECT outcome FROM payments.create_refund($1, $2, 0.70)", &[&unique("rk"), &id]).await;
            r.map(|row| row.get::<_, String>(0)).map_err(|e| e.code().map(|c| c.code().to_string()))
        })
    });
    let answers: Vec<_> = join_all(workers).await.into_iter().map(|r| r.unwrap()).collect();
    let created = answers.iter().filter(|a| a.as_deref() == Ok("created")).count();
    let refused = answers.iter().filter(|a| a.as_ref().err() == Some(&Some("PM207".to_string()))).count();
    assert_eq!((created, refused), (14, 18), "{answers:?}");
    let total: i64 = db
        .query_one(
            "SELECT sum(amount_minor)::bigint FROM payments.refunds WHERE customer_id = $1 AND payment_id = $2",
            &[&customer, &id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 980);
}

#[tokio::test]
async fn create_refund_lives_and_dies_with_the_callers_transaction() {
    let mut db = connect().await;
    let (customer, id) = captured(&db, 500).await;
    // An app refunds and marks its order returned in one transaction; the second step fails.
    let tx = db.transaction().await.unwrap();
    tx.execute("SELECT payments.create_refund($1, $2)", &[&unique("rk"), &id]).await.unwrap();
    assert_eq!(sqlstate(tx.execute("SELECT 1/0", &[]).await), "22012");
    drop(tx);
    let mut counts = vec![];
    for table in ["refunds", "provider_commands"] {
        let sql = format!("SELECT count(*) FROM payments.{table} WHERE customer_id = $1 AND payment_id = $2");
        counts.push(db.query_one(&sql, &[&customer, &id]).await.unwrap().get::<_, i64>(0));
    }
    assert_eq!(counts, [0, 0], "no refund and no provider call survive the rollback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_agents_consuming_at_once_never_pass_the_limit() {
    let db = connect().await;
    let plan = unique_code("quota");
    db.execute("SELECT payments.create_plan($1, 'USD', 0, 'month', features => '{\"calls\": 100}')", &[&plan])
        .await
        .unwrap();
    let customer = unique("cust_q");
    db.execute("SELECT payments.create_subscription($1, $2, $3)", &[&unique("k"), &customer, &plan]).await.unwrap();
    // 64 connections each ask for 3 calls, twice (an agent's retry with the same request id).
    let workers = (0..64).map(|i| {
        let customer = customer.clone();
        tokio::spawn(async move {
            let db = connect().await;
            let request = format!("req-{i}");
            let mut answers = vec![];
            for _ in 0..2 {
                let row = db
                    .query_one(
                        "SELECT allowed, outcome FROM payments.consume($1, 'calls', 3, $2)",
                        &[&customer, &request],
                    )
                    .await
                    .unwrap();
                answers.push((row.get::<_, bool>(0), row.get::<_, String>(1)));
            }
            answers
        })
    });
    let answers: Vec<_> = join_all(workers).await.into_iter().map(|r| r.unwrap()).collect();
    let allowed = answers.iter().filter(|a| a[0] == (true, "consumed".to_string())).count();
    assert_eq!(allowed, 33, "33 × 3 = 99 of 100 calls; the 34th would pass the limit");
    assert!(answers.iter().all(|a| a[1].1 == "replayed" && a[1].0 == a[0].0), "a retry answers as the first time");
    let used: String = db
        .query_one("SELECT used::text FROM payments.entitlements($1) WHERE feature = 'calls'", &[&customer])
        .await
        .unwrap()
        .get(0);
    assert_eq!(used, "99");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_agents_granting_credits_at_once_grant_each_key_once() {
    let db = connect().await;
    let customer = unique("cust_cr");
    // 64 connections: the even ones all send key "same" (one grant), each odd one its own key;
    // every one of them twice (a retry).
    let workers = (0..64).map(|i| {
        let customer = customer.clone();
        tokio::spawn(async move {
            let db = connect().await;
            let key = if i % 2 == 0 { "same".to_string() } else { format!("own-{i}") };
            let mut answers = vec![];
            for _ in 0..2 {
                let row = db
                    .query_one(
                        "SELECT grant_id, outcome FROM payments.grant_credits($1, $2, 100, 'tokens')",
                        &[&key, &customer],
                    )
                    .await
                    .unwrap();
                answers.push((key.clone(), row.get::<_, String>(0), row.get::<_, String>(1)));
            }
            answers
        })
    });
    let answers: Vec<_> = join_all(workers).await.into_iter().flat_map(|r| r.unwrap()).collect();
    let created = answers.iter().filter(|(_, _, outcome)| outcome == "created").count();
    assert_eq!(created, 33, "one grant for the shared key and one per own key");
    let same: HashSet<_> = answers.iter().filter(|(k, _, _)| k == "same").map(|(_, id, _)| id).collect();
    assert_eq!(same.len(), 1, "every call with the shared key answers with the same grant");
    // (On Citus a function call may not sit beside queries of distributed tables: one query each.)
    let posted = "SELECT posted::text FROM payments.balances($1) WHERE account = 'credits' AND unit = 'tokens'";
    assert_eq!(db.query_one(posted, &[&customer]).await.unwrap().get::<_, String>(0), "3300");
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM payments.ledger WHERE customer_id = $1),
                    (SELECT count(*) FROM payments.credit_grants WHERE customer_id = $1)",
            &[&customer],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (33, 33), "a transfer per grant, nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_agents_reserving_against_one_balance_never_overspend() {
    let db = connect().await;
    let customer = unique("cust_hold");
    db.execute("SELECT payments.grant_credits($1, $2, 100, 'tokens')", &[&unique("g"), &customer]).await.unwrap();
    // 64 agents reserve 3 tokens each, twice (a retry with the same request id); once all have
    // their answer, each settles what it was given for 2 (the work cost less than reserved).
    let all_answered = std::sync::Arc::new(tokio::sync::Barrier::new(64));
    let workers = (0..64).map(|i| {
        let (customer, all_answered) = (customer.clone(), all_answered.clone());
        tokio::spawn(async move {
            let db = connect().await;
            let request = format!("job-{i}");
            let reserve = "SELECT hold_id, allowed FROM payments.reserve($1, 3, 'tokens', $2)";
            let first = db.query_one(reserve, &[&customer, &request]).await.unwrap();
            let retry = db.query_one(reserve, &[&customer, &request]).await.unwrap();
            let hold: Option<String> = first.get(0);
            assert_eq!(hold, retry.get::<_, Option<String>>(0), "a retry answers alike");
            all_answered.wait().await;
            if let Some(hold) = &hold {
                let spent: String =
                    db.query_one("SELECT spent::text FROM payments.settle($1, 2)", &[hold]).await.unwrap().get(0);
                assert_eq!(spent, "2");
            }
            first.get::<_, bool>(1)
        })
    });
    let allowed = join_all(workers).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(allowed, 33, "33 × 3 = 99 of 100 tokens may be set aside at once; the 34th would overspend");
    let balance: String = db
        .query_one("SELECT posted || ' ' || held || ' ' || available FROM payments.balances($1)", &[&customer])
        .await
        .unwrap()
        .get(0);
    assert_eq!(balance, "34 0 34", "33 settled for 2: 66 spent, the rest back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_agents_crossing_the_auto_top_up_threshold_at_once_buy_once() {
    let db = connect().await;
    let customer = unique("cust_auto");
    db.execute("SELECT payments.grant_credits($1, $2, 10, 'usd')", &[&unique("g"), &customer]).await.unwrap();
    db.execute("SELECT payments.set_auto_top_up($1, 5.00, 20.00, 'pm_card_visa')", &[&customer]).await.unwrap();
    // 64 agents hold 0.10 each, then all settle at once: 6.40 spent, the threshold crossed once.
    let all_held = std::sync::Arc::new(tokio::sync::Barrier::new(64));
    let workers = (0..64).map(|i| {
        let (customer, all_held) = (customer.clone(), all_held.clone());
        tokio::spawn(async move {
            let db = connect().await;
            let reserve = "SELECT hold_id FROM payments.reserve($1, 0.10, 'usd', $2)";
            let hold: String = db.query_one(reserve, &[&customer, &format!("job-{i}")]).await.unwrap().get(0);
            all_held.wait().await;
            db.execute("SELECT payments.settle($1, 0.10)", &[&hold]).await.unwrap();
        })
    });
    for worker in join_all(workers).await {
        worker.unwrap();
    }
    let top_ups: i64 = db
        .query_one(
            "SELECT count(*) FROM payments.payment_details WHERE customer_id = $1 AND metadata ? 'top_up'",
            &[&customer],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(top_ups, 1, "one charge for one crossing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_agents_consuming_past_the_limit_pay_with_credits_never_past_them_and_top_up_once() {
    let db = connect().await;
    let plan = unique_code("paid_calls");
    db.execute(
        "SELECT payments.create_plan($1, 'USD', 0, 'month', features => '{\"calls\": 10}',
                                     feature_prices => '{\"calls\": 10}')",
        &[&plan],
    )
    .await
    .unwrap();
    let customer = unique("cust_past");
    db.execute("SELECT payments.create_subscription($1, $2, $3)", &[&unique("k"), &customer, &plan]).await.unwrap();
    db.execute("SELECT payments.grant_credits($1, $2, 3, 'usd')", &[&unique("g"), &customer]).await.unwrap();
    db.execute("SELECT payments.set_auto_top_up($1, 1.00, 5.00, 'pm_card_visa')", &[&customer]).await.unwrap();
    // 64 agents use one call each, twice (a retry): 10 within the limit, then 0.10 a call from
    // 3.00 of credits; the top-up's credits come only once its payment succeeds.
    let workers = (0..64).map(|i| {
        let customer = customer.clone();
        tokio::spawn(async move {
            let db = connect().await;
            let consume =
                "SELECT allowed, outcome, coalesce(credits_drawn::text, '') FROM payments.consume($1, 'calls', 1, $2)";
            let first = db.query_one(consume, &[&customer, &format!("call-{i}")]).await.unwrap();
            let retry = db.query_one(consume, &[&customer, &format!("call-{i}")]).await.unwrap();
            assert_eq!(
                (first.get::<_, bool>(0), first.get::<_, String>(2)),
                (retry.get::<_, bool>(0), retry.get::<_, String>(2)),
                "a retry answers alike"
            );
            assert_eq!(retry.get::<_, String>(1), "replayed");
            (first.get::<_, bool>(0), first.get::<_, String>(2))
        })
    });
    let answers: Vec<_> = join_all(workers).await.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(answers.iter().filter(|(allowed, _)| *allowed).count(), 40, "10 in the plan, 30 paid with credits");
    assert_eq!(answers.iter().filter(|(_, drawn)| drawn == "0.10").count(), 30);
    // (On Citus a function call may not sit beside queries of distributed tables: one query each.)
    let available = "SELECT available::text FROM payments.balances($1) WHERE account = 'credits'";
    assert_eq!(db.query_one(available, &[&customer]).await.unwrap().get::<_, String>(0), "0.00");
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM payments.payment_details WHERE customer_id = $1 AND metadata ? 'top_up'),
                    (SELECT sum(amount) FROM payments.ledger WHERE customer_id = $1 AND kind = 'consumption')::text",
            &[&customer],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, String>(1)), (1, "3.00".to_string()), "one top-up for one crossing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_subscriptions_redeeming_a_coupons_last_use_at_once_get_one() {
    let db = connect().await;
    let plan = unique_code("promo_plan");
    let coupon = unique("LAST");
    db.execute("SELECT payments.create_plan($1, 'USD', 0, 'month')", &[&plan]).await.unwrap();
    db.execute("SELECT payments.create_coupon($1, percent_off => 10, max_redemptions => 3)", &[&coupon]).await.unwrap();
    let mut subs = vec![];
    for _ in 0..66 {
        let sql = "SELECT id FROM payments.create_subscription($1, $2, $3)";
        subs.push(db.query_one(sql, &[&unique("k"), &unique("cust_promo"), &plan]).await.unwrap().get::<_, String>(0));
    }
    // Two uses go first; then 64 subscriptions ask for the last one at once.
    for sub in &subs[..2] {
        db.execute("SELECT payments.apply_coupon($1, $2)", &[sub, &coupon]).await.unwrap();
    }
    let workers = subs[2..].iter().cloned().map(|sub| {
        let coupon = coupon.clone();
        tokio::spawn(async move {
            let db = connect().await;
            let result = db.query_one("SELECT outcome FROM payments.apply_coupon($1, $2)", &[&sub, &coupon]).await;
            match result {
                Ok(row) => row.get::<_, String>(0),
                Err(e) => e.code().map_or("?".to_string(), |c| c.code().to_string()),
            }
        })
    });
    let answers: Vec<String> = join_all(workers).await.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(answers.iter().filter(|a| *a == "applied").count(), 1, "{answers:?}");
    assert!(answers.iter().all(|a| a == "applied" || a == "PM206"), "the others: no redemptions left: {answers:?}");
    let row = db
        .query_one(
            "SELECT (SELECT times_redeemed FROM payments.coupons WHERE code = $1),
                    (SELECT count(*) FROM payments.discounts WHERE coupon = $1)",
            &[&coupon],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i32>(0), row.get::<_, i64>(1)), (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_credit_notes_at_once_never_credit_past_the_invoice() {
    let db = connect().await;
    let plan = unique_code("noted");
    db.execute("SELECT payments.create_plan($1, 'USD', 10, 'month')", &[&plan]).await.unwrap();
    let customer = unique("cust_noted");
    // Prepaid credits pay the first invoice in full: paid at once, no provider involved.
    db.execute("SELECT payments.grant_credits($1, $2, 10, 'usd')", &[&unique("g"), &customer]).await.unwrap();
    db.execute("SELECT payments.create_subscription($1, $2, $3, 'pm_card_visa')", &[&unique("k"), &customer, &plan])
        .await
        .unwrap();
    let invoice: String = db
        .query_one("SELECT id FROM payments.invoices WHERE customer_id = $1 AND status = 'paid'", &[&customer])
        .await
        .unwrap()
        .get(0);
    // 64 agents credit 1.00 each to the customer's balance, each twice (a retry with its key).
    let workers = (0..64).map(|i| {
        let invoice = invoice.clone();
        tokio::spawn(async move {
            let db = connect().await;
            let sql = "SELECT outcome FROM payments.create_credit_note($1, $2, 1, 'order_change')";
            let mut answers = vec![];
            for _ in 0..2 {
                answers.push(match db.query_one(sql, &[&format!("note-{i}"), &invoice]).await {
                    Ok(row) => row.get::<_, String>(0),
                    Err(e) => e.code().map_or("?".to_string(), |c| c.code().to_string()),
                });
            }
            answers
        })
    });
    let answers: Vec<Vec<String>> = join_all(workers).await.into_iter().map(|r| r.unwrap()).collect();
    let created = answers.iter().filter(|a| a[0] == "created").count();
    assert_eq!(created, 10, "10.00 of 10.00: {answers:?}");
    assert!(answers.iter().all(|a| (a[0] == "created" && a[1] == "replayed") || (a[0] == "PM207" && a[1] == "PM207")));
    let row = db
        .query_one(
            "SELECT (SELECT credited::text FROM payments.invoice_details WHERE id = $1),
                    (SELECT count(DISTINCT number) FROM payments.credit_notes WHERE invoice_id = $1)",
            &[&invoice],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, i64>(1)), ("10.00".to_string(), 10));
    let balance = "SELECT posted::text FROM payments.balances($1) WHERE account = 'balance'";
    assert_eq!(db.query_one(balance, &[&customer]).await.unwrap().get::<_, String>(0), "10.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_agents_never_spend_past_a_budget() {
    let db = connect().await;
    let customer = unique("cust_budget");
    db.execute("SELECT payments.grant_credits($1, $2, 100, 'usd')", &[&unique("g"), &customer]).await.unwrap();
    db.execute("SELECT payments.set_spend_limit($1, 10, 'usd', 'day')", &[&customer]).await.unwrap();
    let workers = (0..64).map(|i| {
        let customer = customer.clone();
        tokio::spawn(async move {
            let db = connect().await;
            let row = db
                .query_one(
                    "SELECT allowed, reason FROM payments.reserve($1, 1, 'usd', $2)",
                    &[&customer, &format!("r{i}")],
                )
                .await
                .unwrap();
            (row.get::<_, bool>(0), row.get::<_, Option<String>>(1))
        })
    });
    let answers: Vec<_> = join_all(workers).await.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(answers.iter().filter(|(allowed, _)| *allowed).count(), 10, "a budget of 10.00 holds ten 1.00 holds");
    assert!(answers.iter().all(|(allowed, reason)| *allowed || reason.as_deref() == Some("spend_limit_reached")));
}

/// A new customer subscribed two days ago to a new monthly plan of `amount` dollars with a one-day
/// trial, so its first paid period is due; its id and the subscription's. No payment method: the
/// invoice's payment is made (and fails at once), and no gateway started later finds one to charge.
async fn trial_ended(db: &tokio_postgres::Client, name: &str, amount: i32) -> (String, String) {
    let plan = unique_code(name);
    db.execute("SELECT payments.create_plan($1, 'USD', $2::int, 'month', trial_days => 1)", &[&plan, &amount])
        .await
        .unwrap();
    let customer = unique("cust_trial");
    let sub: String = db
        .query_one(
            "SELECT id FROM payments.create_subscription($1, $2, $3, at => now() - interval '2 days')",
            &[&unique("k"), &customer, &plan],
        )
        .await
        .unwrap()
        .get(0);
    (customer, sub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_billing_runs_renew_and_charge_once() {
    let db = connect().await;
    let (customer, sub) = trial_ended(&db, "renew", 9).await;
    let runs = (0..10).map(|_| {
        tokio::spawn(async move {
            let db = connect().await;
            db.execute("SELECT payments.run_billing(now())", &[]).await.unwrap();
        })
    });
    join_all(runs).await.into_iter().for_each(|r| r.unwrap());
    let invoices: i64 = db
        .query_one(
            "SELECT count(*) FROM payments.invoices WHERE customer_id = $1 AND subscription_id = $2",
            &[&customer, &sub],
        )
        .await
        .unwrap()
        .get(0);
    let payments: i64 = db
        .query_one("SELECT count(*) FROM payments.payments WHERE customer_id = $1", &[&customer])
        .await
        .unwrap()
        .get(0);
    assert_eq!((invoices, payments), (1, 1), "one invoice, one payment for the period");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invoices_finalized_concurrently_get_gapless_numbers() {
    let db = connect().await;
    let plan = unique_code("numbered");
    db.execute("SELECT payments.create_plan($1, 'USD', 3, 'week')", &[&plan]).await.unwrap();
    // 24 connections subscribe at once (each paid subscription finalizes its first invoice), some rolling back.
    let workers = (0..24).map(|i| {
        let plan = plan.clone();
        tokio::spawn(async move {
            let mut db = connect().await;
            let tx = db.transaction().await.unwrap();
            let customer = unique("cust_num");
            let create = "SELECT id FROM payments.create_subscription($1, $2, $3)";
            let sub: String = tx.query_one(create, &[&unique("k"), &customer, &plan]).await.unwrap().get(0);
            let number: String = tx
                .query_one(
                    "SELECT number FROM payments.invoices WHERE customer_id = $1 AND subscription_id = $2",
                    &[&customer, &sub],
                )
                .await
                .unwrap()
                .get(0);
            if i % 4 == 0 {
                tx.rollback().await.unwrap();
                None
            } else {
                tx.commit().await.unwrap();
                Some(number)
            }
        })
    });
    let mut kept: Vec<i64> = join_all(workers)
        .await
        .into_iter()
        .filter_map(|r| r.unwrap())
        .map(|n| n.split('-').nth(1).unwrap().parse().unwrap())
        .collect();
    kept.sort();
    assert_eq!(kept.len(), 18);
    assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "no gap and no repeat: {kept:?}");
}

/// A login role bound to one customer, as an agent or a BI tool would connect.
async fn bound_login(customer: &str) -> tokio_postgres::Client {
    let db = connect().await;
    let login = format!("agent_{}", unique_code("sql"));
    db.batch_execute(&format!("CREATE ROLE {login} LOGIN IN ROLE payments_reader")).await.unwrap();
    db.execute("SELECT payments.bind_role_to_customer($1, $2)", &[&login, &customer]).await.unwrap();
    let base = payments_e2e::database_url();
    let others: Vec<&str> = base.split_whitespace().filter(|kv| !kv.starts_with("user=")).collect();
    payments_e2e::connect_to(&format!("{} user={login}", others.join(" "))).await
}

#[tokio::test]
async fn a_login_bound_to_one_customer_reads_that_customers_rows_only() {
    let db = connect().await;
    let (mine, theirs) = (unique("cust_mine"), unique("cust_theirs"));
    let plan = unique_code("bound_sql");
    db.execute("SELECT payments.create_plan($1, 'USD', 0, 'month', features => '{\"calls\": 5}')", &[&plan])
        .await
        .unwrap();
    let mut their_payment = String::new();
    for customer in [&mine, &theirs] {
        let row = db.query_one(CREATE, &[&unique("k"), customer, &"7.00"]).await.unwrap();
        if customer == &theirs {
            their_payment = row.get(0);
        }
        db.execute("SELECT payments.create_subscription($1, $2, $3)", &[&unique("s"), customer, &plan]).await.unwrap();
    }
    if payments_e2e::on_citus(&db).await {
        // The shards do not apply row-level policies: the binding is refused, never half kept.
        let login = format!("agent_{}", unique_code("sql"));
        db.batch_execute(&format!("CREATE ROLE {login} LOGIN IN ROLE payments_reader")).await.unwrap();
        let refused = db.execute("SELECT payments.bind_role_to_customer($1, $2)", &[&login, &mine]).await;
        assert_eq!(sqlstate(refused), "0A000");
        return;
    }
    let agent = bound_login(&mine).await;

    // Every relation of the schema the reader role may read (found in the catalog: the views,
    // and the columns of tables it may select), read whole: every row naming a customer is
    // this one's, and the other customer appears nowhere.
    let readable = db
        .query(
            "SELECT c.relname::text, string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
             FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             WHERE c.relnamespace = 'payments'::regnamespace AND c.relkind IN ('r', 'v', 'p')
               AND has_column_privilege('payments_reader', c.oid, a.attnum, 'SELECT')
             GROUP BY c.relname ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let names: Vec<String> = readable.iter().map(|r| r.get(0)).collect();
    assert!(names.iter().any(|r| r == "payment_details") && names.len() > 10, "{names:?}");
    let mut seen_mine = 0;
    for relation in &readable {
        let (name, columns): (String, String) = (relation.get(0), relation.get(1));
        let sql = format!("SELECT to_jsonb(r) FROM (SELECT {columns} FROM payments.{name}) r");
        for row in agent.query(&sql, &[]).await.unwrap() {
            let row: serde_json::Value = row.get(0);
            if let Some(customer) = row.get("customer_id").and_then(|c| c.as_str()) {
                assert_eq!(customer, mine, "{name} showed another customer's row: {row}");
                seen_mine += 1;
            }
            assert!(!row.to_string().contains(&theirs), "{name} named the other customer: {row}");
        }
    }
    assert!(seen_mine >= 3, "its own rows are there ({seen_mine})");

    // The read functions answer for this customer only; another's object is not found.
    let missing = agent.query("SELECT * FROM payments.get_payment($1)", &[&their_payment]).await;
    assert_eq!(sqlstate(missing), "PM204");
    let listed: Vec<String> = agent
        .query("SELECT customer_id FROM payments.list_payments(lim => 100)", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!listed.is_empty() && listed.iter().all(|c| c == &mine), "{listed:?}");
    for (sql, expected) in [
        ("SELECT payments.has_active_subscription($1)::text", "false"),
        ("SELECT payments.customer_has_paid($1)::text", "false"),
        ("SELECT count(*)::text FROM payments.entitlements($1)", "0"),
        ("SELECT count(*)::text FROM payments.list_subscriptions($1)", "0"),
        ("SELECT count(*)::text FROM payments.list_payments($1)", "0"),
    ] {
        let answer: String = agent.query_one(sql, &[&theirs]).await.unwrap().get(0);
        assert_eq!(answer, expected, "{sql} for the other customer");
    }
    let own: String =
        agent.query_one("SELECT payments.has_active_subscription($1)::text", &[&mine]).await.unwrap().get(0);
    assert_eq!(own, "true");
    // Only a reader can be bound.
    let refused = db.execute("SELECT payments.bind_role_to_customer('payments_gateway', 'x')", &[]).await;
    assert_eq!(sqlstate(refused), "PM100");
}

/// The answer of one concurrent call: its first column, or its SQLSTATE.
async fn outcome_or_sqlstate(sql: &'static str, params: Vec<String>) -> String {
    let db = connect().await;
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        params.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
    match db.query_one(sql, &params).await {
        Ok(row) => row.get::<_, String>(0),
        Err(e) => sqlstate(Err::<(), _>(e)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_agents_add_items_to_a_draft_while_it_is_finalized_and_none_is_lost() {
    let db = connect().await;
    let (_, sub) = trial_ended(&db, "items_plan", 10).await;
    db.execute(
        "SELECT payments.run_billing((SELECT current_period_end FROM payments.subscriptions WHERE id = $1))",
        &[&sub],
    )
    .await
    .unwrap();
    let draft: String = db
        .query_one("SELECT id FROM payments.invoices WHERE subscription_id = $1 AND status = 'draft'", &[&sub])
        .await
        .unwrap()
        .get(0);
    // 32 keys, each sent twice at once, and the draft finalized among them.
    let add = "SELECT outcome FROM payments.add_invoice_item($1, $2, 'Seat', 1.00)";
    let prefix = unique("item");
    let mut calls: Vec<_> = (0..64)
        .map(|i| {
            let params = vec![format!("{prefix}-{}", i / 2), draft.clone()];
            tokio::spawn(outcome_or_sqlstate(add, params))
        })
        .collect();
    calls.insert(
        32,
        tokio::spawn(outcome_or_sqlstate("SELECT status FROM payments.finalize_invoice($1)", vec![draft.clone()])),
    );
    let answers: Vec<String> = join_all(calls).await.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(answers[32], "open", "finalized: {answers:?}");
    let items: Vec<&String> = answers.iter().enumerate().filter(|(i, _)| *i != 32).map(|(_, a)| a).collect();
    assert!(items.iter().all(|a| ["created", "replayed", "PM206"].contains(&a.as_str())), "{items:?}");
    // Every item a call was told exists is a line of the final invoice, once.
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM payments.invoice_items WHERE invoice_id = $1),
                    (SELECT count(*) FROM payments.invoice_lines WHERE invoice_id = $1 AND kind = 'item'),
                    (SELECT total_minor FROM payments.invoices WHERE id = $1)",
            &[&draft],
        )
        .await
        .unwrap();
    let (stored, lines, total): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let created = items.iter().filter(|a| a.as_str() == "created").count() as i64;
    assert_eq!((stored, lines), (created, created), "{items:?}");
    assert_eq!(total, 1000 + 100 * created, "the fee and each item");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_first_subscriptions_at_once_fix_one_currency() {
    let db = connect().await;
    let plan = unique_code("two_currencies");
    db.execute(
        r#"SELECT payments.create_plan($1, 'USD', 10, 'month', trial_days => 7, currency_options => '{"EUR": {"amount": 9}}')"#,
        &[&plan],
    )
    .await
    .unwrap();
    let customer = unique("cust_two");
    let create = "SELECT currency FROM payments.create_subscription($1, $2, $3, currency => $4)";
    let calls = (0..64).map(|i| {
        let currency = if i % 2 == 0 { "EUR" } else { "USD" }.to_string();
        tokio::spawn(outcome_or_sqlstate(create, vec![unique("k"), customer.clone(), plan.clone(), currency]))
    });
    let answers: Vec<String> = join_all(calls).await.into_iter().map(|r| r.unwrap()).collect();
    let fixed: HashSet<&String> = answers.iter().filter(|a| a.len() == 3 && !a.starts_with("PM")).collect();
    assert_eq!(fixed.len(), 1, "one currency: {answers:?}");
    assert!(answers.iter().all(|a| fixed.contains(a) || a == "PM206"), "the others refused: {answers:?}");
    let currencies: i64 = db
        .query_one("SELECT count(DISTINCT currency) FROM payments.subscriptions WHERE customer_id = $1", &[&customer])
        .await
        .unwrap()
        .get(0);
    assert_eq!(currencies, 1);
}
