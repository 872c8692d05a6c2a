//! Webhooks end to end: independent signature oracles, and shuffled,
//! duplicated, forged and replayed delivery converging to the in-order result.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;

use futures::future::join_all;
use payments_core::provider::stripe::payment_status;
use payments_core::state::Status;
use payments_core::webhook::stripe;
use payments_e2e::{connect, report, sized, unique};
use serde_json::{json, Value};

#[tokio::test]
async fn signatures_from_the_official_python_packages_verify_and_one_byte_changes_do_not() {
    let python = std::env::var("PAYMENTS_PYTHON").expect("PAYMENTS_PYTHON is set by `make test`");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/oracles/sign_webhooks.py");
    let output = Command::new(python).args([script, "60", "20261124"]).output().expect("run the oracle");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let vectors: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(vectors.len(), 60);

    let db = connect().await;
    let verify = db
        .prepare("SELECT payments.webhook_signature_failure($1, $2, $3, $4, at => to_timestamp($5::bigint))")
        .await
        .unwrap();
    // Seeded, so a failing run can be replayed.
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    for v in &vectors {
        let scheme = v["scheme"].as_str().unwrap();
        let secret = v["secret"].as_str().unwrap();
        let headers = v["headers"].clone();
        let body = v["body"].as_str().unwrap().as_bytes().to_vec();
        let t = v["timestamp"].as_i64().unwrap();
        let failure = |headers: Value, body: Vec<u8>| {
            let (db, verify) = (&db, &verify);
            async move {
                db.query_one(verify, &[&scheme, &secret, &headers, &body, &t])
                    .await
                    .unwrap()
                    .get::<_, Option<String>>(0)
            }
        };
        assert_eq!(failure(headers.clone(), body.clone()).await, None, "{scheme} vector must verify: {v}");

        if !body.is_empty() {
            let mut changed = body.clone();
            let i = rng.usize(..changed.len());
            changed[i] ^= 1 << rng.u8(..8);
            assert_eq!(failure(headers.clone(), changed).await.as_deref(), Some("no_matching_signature"));
        }

        let (sig_header, ts_header) = match scheme {
            "stripe" => ("Stripe-Signature", "Stripe-Signature"),
            _ => ("webhook-signature", "webhook-timestamp"),
        };
        let ts_text = headers[ts_header].as_str().unwrap();
        let moved = ts_text.replacen(&t.to_string(), &(t + 1).to_string(), 1);
        let mut ts_changed = headers.clone();
        ts_changed[ts_header] = json!(moved);
        assert_ne!(failure(ts_changed, body.clone()).await, None, "a moved timestamp must not verify");

        let sig = headers[sig_header].as_str().unwrap();
        // Change one character of the signature itself (the last one), keeping its encoding valid.
        let mut chars: Vec<char> = sig.chars().collect();
        let last = chars.len() - if scheme == "standard" && sig.ends_with('=') { 2 } else { 1 };
        chars[last] = if chars[last] == 'a' { 'b' } else { 'a' };
        let mut sig_changed = headers.clone();
        sig_changed[sig_header] = json!(chars.into_iter().collect::<String>());
        assert_ne!(failure(sig_changed, body).await, None, "a changed signature must not verify");
    }
}

/// One payment's event stream, as the provider would send it, oldest first.
const STREAMS: [&[&str]; 6] = [
    &["payment_intent.processing", "payment_intent.succeeded"],
    &["payment_intent.requires_action", "payment_intent.processing", "payment_intent.succeeded"],
    &["payment_intent.requires_action", "payment_intent.payment_failed"],
    &["payment_intent.amount_capturable_updated", "payment_intent.succeeded"],
    &["payment_intent.amount_capturable_updated", "payment_intent.canceled"],
    &["payment_intent.payment_failed"],
];

/// The 10.00 USD PaymentIntent `pi` as the provider answers it: evidence for the test's payments.
fn intent(pi: &str) -> Value {
    json!({ "id": pi, "object": "payment_intent", "amount": 1000, "currency": "usd" })
}

struct Delivery {
    body: String,
    signature: String,
    expect: Result<(), &'static str>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shuffled_duplicated_forged_and_replayed_delivery_ends_where_in_order_delivery_does() {
    let db = connect().await;
    let run = unique("wh");
    let provider = format!("stripe-{run}");
    let secret = format!("whsec_{run}");
    db.execute("SELECT payments.add_webhook_secret($1, 'stripe', $2)", &[&provider, &secret]).await.unwrap();
    let now: i64 = db.query_one("SELECT floor(extract(epoch FROM now()))::bigint", &[]).await.unwrap().get(0);

    let mut rng = fastrand::Rng::with_seed(0xC0FFEE);
    let mut deliveries = Vec::new();
    let mut payments = Vec::new(); // (payment id, provider id, linked late, expected status)
    let count = sized(200, 1000);
    let mut mismatched = 0;
    for i in 0..count {
        let id: String = db
            .query_one(
                "SELECT id FROM payments.create_payment($1, 'cust_wh', 10, 'USD', payment_method => 'pm_card_visa')",
                &[&format!("{run}-{i}")],
            )
            .await
            .unwrap()
            .get(0);
        let pi = format!("pi_{run}_{i}");
        // A quarter are linked only after their events arrive (the early-webhook race);
        // a quarter are matched through metadata.payment_id; the rest are linked first.
        let late = i % 4 == 0;
        let by_metadata = i % 4 == 1;
        if !late && !by_metadata {
            db.execute(
                "SELECT payments.record_provider_result($1, $2, $3, 'requires_confirmation', $4)",
                &[&id, &provider, &pi, &intent(&pi)],
            )
            .await
            .unwrap();
        }
        let metadata = if by_metadata { json!({ "payment_id": id }) } else { json!({}) };
        let event_for = |event_id: String, event_type: &str, created: i64, amount: i64| {
            json!({
                "id": event_id, "object": "event", "type": event_type, "created": created,
                "data": { "object": {
                    "id": pi, "object": "payment_intent", "amount": amount, "currency": "usd",
                    "amount_received": amount, "amount_capturable": amount, "metadata": metadata } }
            })
            .to_string()
        };
        let event = |event_id: String, event_type: &str, created: i64| event_for(event_id, event_type, created, 1000);

        let stream = STREAMS[i % STREAMS.len()];
        let mut expected = Status::RequiresConfirmation;
        for (n, event_type) in stream.iter().enumerate() {
            let to = payment_status(event_type).unwrap();
            if expected.can_move_to(to) {
                expected = to;
            }
            let body = event(format!("evt_{run}_{i}_{n}"), event_type, now - 100 + n as i64);
            let signature = stripe::sign(&secret, now, body.as_bytes());
            if rng.usize(..4) == 0 {
                deliveries.push(Delivery { body: body.clone(), signature: signature.clone(), expect: Ok(()) });
            }
            deliveries.push(Delivery { body, signature, expect: Ok(()) });
        }
        if i % 5 == 0 {
            let body = event(format!("evt_{run}_{i}_forged"), "payment_intent.canceled", now);
            let signature = stripe::sign("whsec_attacker", now, body.as_bytes());
            deliveries.push(Delivery { body, signature, expect: Err("PM301") });
        }
        if i % 7 == 0 {
            let body = event(format!("evt_{run}_{i}_old"), "payment_intent.payment_failed", now - 3600);
            let signature = stripe::sign(&secret, now - 3600, body.as_bytes());
            deliveries.push(Delivery { body, signature, expect: Err("PM302") });
        }
        if i % 11 == 0 {
            let body = event(format!("evt_{run}_{i}_garbled"), "payment_intent.succeeded", now);
            let signature = format!("t={now},v1={}", "0".repeat(64));
            deliveries.push(Delivery { body, signature, expect: Err("PM301") });
        }
        if i % 5 == 0 {
            // A correctly signed event about other money (every stream, every way of matching): recorded as an anomaly, never applied.
            mismatched += 1;
            let body = event_for(format!("evt_{run}_{i}_mismatch"), "payment_intent.succeeded", now - 50, 1);
            let signature = stripe::sign(&secret, now, body.as_bytes());
            deliveries.push(Delivery { body, signature, expect: Ok(()) });
        }
        payments.push((id, pi, late, expected));
    }
    rng.shuffle(&mut deliveries);

    // Eight connections deliver at once, as concurrent webhook requests would.
    let deliveries = Arc::new(deliveries);
    let workers = (0..8).map(|w| {
        let (deliveries, provider) = (deliveries.clone(), provider.clone());
        tokio::spawn(async move {
            let db = connect().await;
            let ingest = db
                .prepare("SELECT payments.ingest_webhook($1, jsonb_build_object('Stripe-Signature', $2::text), $3)")
                .await
                .unwrap();
            for d in deliveries.iter().skip(w).step_by(8) {
                // A duplicate that meets its twin mid-flight is answered 40001, "retry the
                // delivery" (the gateway's 503), and the provider delivers it again.
                let mut got = db.query_one(&ingest, &[&provider, &d.signature, &d.body.as_bytes()]).await;
                for _ in 0..20 {
                    match &got {
                        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE) => {
                            got = db.query_one(&ingest, &[&provider, &d.signature, &d.body.as_bytes()]).await
                        }
                        _ => break,
                    }
                }
                match (&d.expect, got) {
                    (Ok(()), Ok(_)) => {}
                    (Err(code), Err(e)) => assert_eq!(e.code().unwrap().code(), *code, "{}", d.body),
                    (want, got) => panic!("{}: wanted {want:?}, got {got:?}", d.body),
                }
            }
        })
    });
    for w in join_all(workers).await {
        w.unwrap();
    }

    for (id, pi, late, _) in &payments {
        if *late {
            db.execute(
                "SELECT payments.record_provider_result($1, $2, $3, 'requires_confirmation', $4)",
                &[id, &provider, pi, &intent(pi)],
            )
            .await
            .unwrap();
        }
    }

    let statuses: HashMap<String, String> = db
        .query(
            "SELECT id, status FROM payments.payments WHERE customer_id = 'cust_wh' AND id = ANY($1)",
            &[&payments.iter().map(|p| p.0.clone()).collect::<Vec<_>>()],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let wrong = payments.iter().filter(|(id, _, _, expected)| statuses[id] != expected.as_str()).count();
    let ids: Vec<String> = payments.iter().map(|p| p.0.clone()).collect();
    let anomalies: i64 = db
        .query_one("SELECT count(*) FROM payments.anomalies WHERE payment_id = ANY($1)", &[&ids])
        .await
        .unwrap()
        .get(0);
    report(
        "webhook chaos: shuffled, duplicated, forged, garbled, replayed, mismatched",
        count,
        wrong + (anomalies as usize).abs_diff(mismatched),
        &format!("{} deliveries; {wrong} payments off their in-order status; {anomalies} of {mismatched} mismatches held as anomalies", deliveries.len()),
    );
    for (id, _, _, expected) in &payments {
        assert_eq!(statuses[id], expected.as_str(), "payment {id}");
    }
    assert_eq!(anomalies as usize, mismatched, "every mismatched event is an anomaly, none applied");

    let stored = db
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE event_id LIKE '%forged' OR event_id LIKE '%old' OR event_id LIKE '%garbled')
             FROM payments.webhook_events WHERE provider = $1",
            &[&provider],
        )
        .await
        .unwrap();
    let distinct_valid: usize = (0..count).map(|i| STREAMS[i % STREAMS.len()].len()).sum::<usize>() + mismatched;
    assert_eq!(stored.get::<_, i64>(0) as usize, distinct_valid, "each verified event stored exactly once");
    assert_eq!(stored.get::<_, i64>(1), 0, "no forged or replayed event is stored");
    let waiting: i64 = db
        .query_one("SELECT count(*) FROM payments.webhook_pending WHERE provider = $1", &[&provider])
        .await
        .unwrap()
        .get(0);
    assert_eq!(waiting, 0, "every early event was applied once its payment was linked");

    let broken =
        db.query("SELECT v.* FROM unnest($1::text[]) id, payments.verify_event_chain(id) v", &[&ids]).await.unwrap();
    assert!(broken.is_empty(), "every history verifies");
}
