//! In-database tests: each SQL function and each error path with its SQLSTATE.
//! `cargo pgrx test pg15` runs them inside a throw-away cluster.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// Runs `sql` and returns `ok:<first column as text>`, or `SQLSTATE: message`
    /// of the error it raised. Errors are caught in PL/pgSQL so the test
    /// transaction survives.
    fn attempt(sql: &str) -> String {
        if Spi::get_one::<bool>("SELECT to_regprocedure('pg_temp.attempt(text)') IS NULL").unwrap() == Some(true) {
            Spi::run(
                "CREATE FUNCTION pg_temp.attempt(q text) RETURNS text LANGUAGE plpgsql AS $$
                 DECLARE r text;
                 BEGIN EXECUTE q INTO r; RETURN 'ok:' || coalesce(r, '');
                 EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ': ' || SQLERRM; END $$",
            )
            .unwrap();
        }
        Spi::get_one_with_args::<String>("SELECT pg_temp.attempt($1)", &[sql.into()]).unwrap().unwrap()
    }

    /// `ok`, or `SQLSTATE: message`.
    fn outcome(sql: &str) -> String {
        let result = attempt(sql);
        if result.starts_with("ok:") {
            "ok".into()
        } else {
            result
        }
    }

    fn sqlstate(sql: &str) -> String {
        outcome(sql).chars().take(5).collect()
    }

    fn one<T: FromDatum + IntoDatum>(sql: &str) -> T {
        Spi::get_one::<T>(sql).unwrap().unwrap()
    }

    fn create(key: &str, amount: &str) -> String {
        one(&format!("SELECT id FROM payments.create_payment('{key}', 'cust_1', {amount}, 'usd')"))
    }

    /// A USD PaymentIntent `pi` for `amount_minor`, received and capturable in
    /// full: evidence for a payment of that amount. `extra` adds fields.
    fn intent(pi: &str, amount_minor: i64, extra: &str) -> String {
        format!(
            r#"{{"id":"{pi}","object":"payment_intent","amount":{amount_minor},"currency":"usd","amount_received":{amount_minor},"amount_capturable":{amount_minor}{extra}}}"#
        )
    }

    #[pg_test]
    fn money_functions_convert_exactly_and_reject_bad_amounts() {
        assert_eq!(one::<i64>("SELECT payments.to_minor(49.99, 'usd')"), 4999);
        assert_eq!(one::<i64>("SELECT payments.to_minor(1.5, 'KWD')"), 1500);
        assert_eq!(one::<String>("SELECT payments.to_major(1500, 'KWD')::text"), "1.500");
        assert_eq!(one::<String>("SELECT payments.to_major(1000, 'JPY')::text"), "1000");
        assert_eq!(Spi::get_one::<AnyNumeric>("SELECT payments.to_major(1, 'XYZ')").unwrap(), None);
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.currencies() WHERE exponent = 3"), 7);

        let e = outcome("SELECT payments.to_minor(49.999, 'USD')");
        assert!(e.starts_with("PM101: amount 49.999 has more decimal places than USD allows (2)"), "{e}");
        assert_eq!(sqlstate("SELECT payments.to_minor(1.5, 'JPY')"), "PM101");
        assert_eq!(sqlstate("SELECT payments.to_minor(0, 'USD')"), "PM102");
        assert_eq!(sqlstate("SELECT payments.to_minor(-3, 'USD')"), "PM102");
        assert_eq!(sqlstate("SELECT payments.to_minor(1, 'ABC')"), "PM103");
        assert_eq!(sqlstate("SELECT payments.to_minor(1e20, 'USD')"), "PM104");
        assert_eq!(sqlstate("SELECT payments.to_minor('NaN', 'USD')"), "PM105");
        assert_eq!(sqlstate("SELECT payments.to_minor(NULL, 'USD')"), "PM100");
        // A float has no implicit cast to numeric, so it cannot reach a money path.
        assert_eq!(sqlstate("SELECT payments.to_minor(49.99::float8, 'USD')"), "42883");
    }

    #[pg_test]
    fn create_payment_creates_then_replays() {
        let first =
            one::<String>("SELECT outcome || ' ' || id FROM payments.create_payment('k1', 'cust_1', 49.99, 'usd')");
        let (outcome1, id) = first.split_once(' ').unwrap();
        assert_eq!(outcome1, "created");
        assert!(id.starts_with("pay_") && id.len() == 30, "{id}");
        let again =
            one::<String>("SELECT outcome || ' ' || id FROM payments.create_payment('k1', 'cust_1', 49.990, 'USD')");
        assert_eq!(again, format!("replayed {id}"));
        // The suite also runs on an upgraded database holding other rows
        // (tests/tests/e2e/upgrade.rs), so counts are of this test's own rows.
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.payments WHERE customer_id = 'cust_1'"), 1);
        assert_eq!(one::<i64>(&format!("SELECT count(*) FROM payments.payment_events WHERE payment_id = '{id}'")), 1);
        assert_eq!(
            one::<String>(&format!("SELECT status || ' ' || amount || ' ' || amount_minor || ' ' || currency FROM payments.get_payment('{id}')")),
            "requires_payment_method 49.99 4999 USD"
        );
        let with_method = one::<String>(
            "SELECT status FROM payments.create_payment('k2', 'cust_1', 10, 'EUR', payment_method => 'pm_card_visa')",
        );
        assert_eq!(with_method, "requires_confirmation");
    }

    #[pg_test]
    fn create_payment_rejects_a_reused_key_and_bad_input() {
        create("k1", "49.99");
        let e = outcome("SELECT payments.create_payment('k1', 'cust_1', 50.00, 'USD')");
        assert!(e.starts_with("PM201: idempotency key 'k1' was already used with different parameters"), "{e}");
        // Keys are per customer (as Stripe's are per account): another customer's k1 is another payment.
        let other =
            one::<String>("SELECT outcome || ' ' || id FROM payments.create_payment('k1', 'cust_2', 49.99, 'USD')");
        assert!(other.starts_with("created pay_"), "{other}");
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.payments WHERE idempotency_key = 'k1'"), 2);
        assert_eq!(
            sqlstate("SELECT payments.create_payment('k1', 'cust_1', 49.99, 'USD', metadata => '{\"a\":1}')"),
            "PM201"
        );
        assert_eq!(sqlstate(&format!("SELECT payments.create_payment('{}', 'c', 1, 'USD')", "k".repeat(256))), "PM100");
        assert_eq!(sqlstate(&format!("SELECT payments.create_payment('{}', 'c', 1, 'USD')", "k".repeat(255))), "ok");
        assert_eq!(sqlstate("SELECT payments.create_payment('', 'c', 1, 'USD')"), "PM100");
        assert_eq!(sqlstate("SELECT payments.create_payment('k9', '', 1, 'USD')"), "PM100");
        assert_eq!(sqlstate("SELECT payments.create_payment('k9', 'c', 1, 'USD', metadata => '[1]')"), "PM100");
        assert_eq!(sqlstate("SELECT payments.create_payment('k9', 'c', 1, 'USD', capture_method => 'later')"), "PM100");
        assert_eq!(sqlstate("SELECT payments.create_payment('k9', 'c', 0.001, 'USD')"), "PM101");
        assert_eq!(sqlstate("SELECT payments.create_payment('k9', 'c', 1, 'usdx')"), "PM103");
        // Nothing of the failed calls was written.
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.payments WHERE idempotency_key IN ('k9', '')"), 0);
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.payments WHERE customer_id = 'c'"), 1);
    }

    #[pg_test]
    fn transitions_follow_the_state_machine() {
        let id = create("t1", "5");
        let step = |to: &str, source: &str| {
            one::<String>(&format!(
                "SELECT outcome || ' ' || status FROM payments.transition('{id}', '{to}', '{source}')"
            ))
        };
        assert_eq!(step("requires_confirmation", "api"), "applied requires_confirmation");
        assert_eq!(step("requires_confirmation", "api"), "noop requires_confirmation");
        assert_eq!(step("processing", "provider"), "applied processing");
        // A late report is recorded but changes nothing; a late command is an error.
        assert_eq!(step("requires_action", "webhook"), "stale processing");
        let e = outcome(&format!("SELECT payments.transition('{id}', 'requires_action', 'api')"));
        assert!(e.starts_with(&format!("PM202: payment {id} cannot move from processing to requires_action")), "{e}");
        assert_eq!(sqlstate(&format!("SELECT payments.transition('{id}', 'canceled', 'admin')")), "PM202");
        assert_eq!(step("succeeded", "webhook"), "applied succeeded");
        // Terminal: never left.
        assert_eq!(step("failed", "provider"), "stale succeeded");
        assert_eq!(sqlstate(&format!("SELECT payments.transition('{id}', 'canceled', 'api')")), "PM202");

        assert_eq!(sqlstate(&format!("SELECT payments.transition('{id}', 'paid', 'api')")), "PM100");
        assert_eq!(sqlstate(&format!("SELECT payments.transition('{id}', 'failed', 'robot')")), "PM100");
        assert_eq!(sqlstate("SELECT payments.transition('pay_nope', 'failed', 'api')"), "PM204");

        let history = one::<String>(&format!(
            "SELECT string_agg(coalesce(from_status, '-') || '>' || to_status || ':' || applied, ' ' ORDER BY seq)
             FROM payments.payment_events WHERE payment_id = '{id}'"
        ));
        assert_eq!(
            history,
            "->requires_payment_method:true requires_payment_method>requires_confirmation:true \
             requires_confirmation>processing:true processing>requires_action:false \
             processing>succeeded:true succeeded>failed:false"
        );
    }

    #[pg_test]
    fn failed_transition_records_last_error() {
        let id = create("t2", "5");
        one::<String>(&format!(
            "SELECT status FROM payments.transition('{id}', 'failed', 'api', 'declined', '{{\"last_error\": {{\"code\": \"card_declined\"}}}}')"
        ));
        assert_eq!(
            one::<String>(&format!("SELECT last_error->>'code' FROM payments.payments WHERE id = '{id}'")),
            "card_declined"
        );
    }

    #[pg_test]
    fn record_provider_result_links_once_and_strips_secrets() {
        let id = create("r1", "12.34");
        let r = one::<String>(&format!(
            "SELECT outcome || ' ' || status || ' ' || provider_payment_id FROM payments.record_provider_result(
                 '{id}', 'sandbox', 'pi_1', 'requires_action', '{}')",
            intent("pi_1", 1234, r#","client_secret":"pi_1_secret_x""#)
        ));
        assert_eq!(r, "applied requires_action pi_1");
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.payment_events WHERE data::text LIKE '%secret%'"), 0);
        // Same link again: fine. Another provider id for this payment: an anomaly, applied nowhere
        // (recorded once however often it comes). This provider id for another payment: PM203.
        let r = one::<String>(&format!(
            "SELECT outcome FROM payments.record_provider_result('{id}', 'sandbox', 'pi_1', 'processing', '{}')",
            intent("pi_1", 1234, "")
        ));
        assert_eq!(r, "applied");
        for _ in 0..2 {
            let r = one::<String>(&format!(
                "SELECT outcome || ' ' || status || ' ' || provider_payment_id
                 FROM payments.record_provider_result('{id}', 'sandbox', 'pi_2', 'succeeded', '{}')",
                intent("pi_2", 1234, "")
            ));
            assert_eq!(r, "mismatch processing pi_1");
        }
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(kind, ',') FROM payments.open_anomalies WHERE payment_id = '{id}'"
            )),
            "provider_payment_mismatch"
        );
        let other = create("r2", "1");
        assert_eq!(
            sqlstate(&format!(
                "SELECT payments.record_provider_result('{other}', 'sandbox', 'pi_1', 'processing', '{}')",
                intent("pi_1", 100, "")
            )),
            "PM203"
        );
        let declined = create("r3", "1");
        one::<String>(&format!(
            "SELECT status FROM payments.record_provider_result('{declined}', 'sandbox', 'pi_3', 'failed', '{}')",
            intent("pi_3", 100, r#","last_payment_error":{"code":"card_declined","decline_code":"generic_decline"}"#)
        ));
        assert_eq!(
            one::<String>(&format!(
                "SELECT last_error->>'decline_code' FROM payments.payments WHERE id = '{declined}'"
            )),
            "generic_decline"
        );
        assert_eq!(
            sqlstate("SELECT payments.record_provider_result('pay_x', 'sandbox', 'pi_9', 'succeeded', '{}')"),
            "PM204"
        );
        assert_eq!(
            sqlstate(&format!("SELECT payments.record_provider_result('{id}', '', NULL, 'succeeded', '{{}}')")),
            "PM100"
        );
        let long = "p".repeat(256);
        assert_eq!(
            sqlstate(&format!(
                "SELECT payments.record_provider_result('{id}', 'sandbox', '{long}', 'succeeded', '{{}}')"
            )),
            "PM100"
        );
    }

    #[pg_test]
    fn get_and_list_payments() {
        assert_eq!(sqlstate("SELECT payments.get_payment('pay_missing')"), "PM204");
        let ids: Vec<String> = (0..5).map(|i| create(&format!("l{i}"), "1")).collect();
        one::<String>("SELECT id FROM payments.create_payment('other', 'cust_2', 1, 'USD')");
        let page = |after: &str| {
            one::<String>(&format!(
                "SELECT string_agg(id, ',') FROM payments.list_payments('cust_1', NULL, 2, {after})"
            ))
        };
        let mut newest_first = ids.clone();
        newest_first.sort();
        newest_first.reverse();
        assert_eq!(page("NULL"), newest_first[..2].join(","));
        assert_eq!(page(&format!("'{}'", newest_first[1])), newest_first[2..4].join(","));
        assert_eq!(page(&format!("'{}'", newest_first[3])), newest_first[4]);
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM payments.list_payments(status => 'requires_payment_method', lim => 100)
                 WHERE customer_id IN ('cust_1', 'cust_2')"
            ),
            6
        );
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.list_payments('cust_1', 'succeeded')"), 0);
        // A page is 10 payments unless asked otherwise (the gateway's default too).
        for i in 0..12 {
            one::<String>(&format!("SELECT id FROM payments.create_payment('page{i}', 'cust_page', 1, 'USD')"));
        }
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.list_payments('cust_page')"), 10);
        assert_eq!(sqlstate("SELECT payments.list_payments(lim => 0)"), "PM100");
        assert_eq!(sqlstate("SELECT payments.list_payments(lim => 101)"), "PM100");
        assert_eq!(sqlstate("SELECT payments.list_payments(status => 'paid')"), "PM100");
    }

    #[pg_test]
    fn history_is_append_only_and_hash_chained() {
        let id = create("h1", "1");
        one::<String>(&format!("SELECT outcome FROM payments.transition('{id}', 'succeeded', 'api')"));
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.verify_event_chain()"), 0);
        assert!(one::<bool>(&format!(
            "SELECT e2.prev_hash = e1.hash FROM payments.payment_events e1 JOIN payments.payment_events e2
             USING (payment_id) WHERE payment_id = '{id}' AND e1.seq = 1 AND e2.seq = 2"
        )));
        let e = outcome(&format!("UPDATE payments.payment_events SET reason = 'x' WHERE payment_id = '{id}'"));
        assert!(e.starts_with("PM205: UPDATE on payments.payment_events is not allowed"), "{e}");
        assert_eq!(sqlstate("DELETE FROM payments.payment_events"), "PM205");
        assert_eq!(sqlstate("TRUNCATE payments.payment_events"), "PM205");
        assert_eq!(sqlstate("DELETE FROM payments.payments"), "PM205");

        // Tamper the way only a superuser can: with triggers off.
        Spi::run("SET LOCAL session_replication_role = replica").unwrap();
        Spi::run(&format!(
            "UPDATE payments.payment_events SET to_status = 'failed' WHERE payment_id = '{id}' AND seq = 2"
        ))
        .unwrap();
        Spi::run("SET LOCAL session_replication_role = origin").unwrap();
        assert_eq!(
            one::<String>("SELECT payment_id || ' ' || seq || ' ' || problem FROM payments.verify_event_chain()"),
            format!("{id} 2 hash does not match the event")
        );
        assert_eq!(one::<i64>(&format!("SELECT count(*) FROM payments.verify_event_chain('{id}')")), 1);
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.verify_event_chain('pay_other')"), 0);
    }

    #[pg_test]
    fn purge_keeps_keys_for_a_day() {
        let id = create("p1", "1");
        assert_eq!(sqlstate("SELECT payments.purge_idempotency_keys('1 hour')"), "PM100");
        assert_eq!(one::<i64>("SELECT payments.purge_idempotency_keys('24 hours')"), 0);
        Spi::run("UPDATE payments.payments SET created_at = now() - interval '2 days' WHERE idempotency_key = 'p1'")
            .unwrap();
        assert_eq!(one::<i64>("SELECT payments.purge_idempotency_keys('24 hours')"), 1);
        // The payment stays, without its key, and the key is free again: a new call makes a new payment.
        assert!(one::<bool>(&format!("SELECT idempotency_key IS NULL FROM payments.payments WHERE id = '{id}'")));
        assert_eq!(one::<String>("SELECT outcome FROM payments.create_payment('p1', 'cust_1', 1, 'usd')"), "created");
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.payments WHERE customer_id = 'cust_1'"), 2);
    }

    #[pg_test]
    fn reader_views_answer_has_this_customer_paid() {
        let id = create("v1", "10.50");
        create("v2", "1");
        one::<String>(&format!("SELECT outcome FROM payments.transition('{id}', 'succeeded', 'api')"));
        assert_eq!(
            one::<String>(
                "SELECT succeeded_count || ' ' || succeeded_amount || ' ' || open_count
                 FROM payments.customer_payments WHERE customer_id = 'cust_1' AND currency = 'USD'"
            ),
            "1 10.50 1"
        );
        assert_eq!(one::<i64>(&format!("SELECT count(*) FROM payments.payment_history WHERE payment_id = '{id}'")), 2);
    }

    #[pg_test]
    fn roles_see_only_what_they_should() {
        create("g1", "1");
        attempt("SELECT 1"); // the helper must exist before the role switch
        Spi::run("SET LOCAL ROLE payments_reader").unwrap();
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.payment_details WHERE customer_id = 'cust_1'"), 1);
        assert_eq!(
            sqlstate("SELECT reconcile_after FROM payments.payments"),
            "42501",
            "only the columns the views show"
        );
        assert_eq!(sqlstate("SELECT idempotency_key FROM payments.payments"), "42501", "keys stay private");
        assert_eq!(sqlstate("SELECT request_fingerprint FROM payments.payments"), "42501");
        assert_eq!(sqlstate("SELECT payments.create_payment('g2', 'c', 1, 'USD')"), "42501");
        Spi::run("RESET ROLE").unwrap();
        Spi::run("SET LOCAL ROLE payments_gateway").unwrap();
        assert_eq!(sqlstate("SELECT payments.create_payment('g2', 'c', 1, 'USD')"), "ok");
        assert_eq!(sqlstate("UPDATE payments.payments SET idempotency_key = NULL"), "42501");
        assert_eq!(sqlstate("SELECT payments.purge_idempotency_keys('1 day')"), "42501");
        assert_eq!(
            sqlstate("SELECT payments._append_event('c', 'pay_x', NULL, 'failed', true, 'api', NULL, '{}')"),
            "42501"
        );
        Spi::run("RESET ROLE").unwrap();
    }

    #[pg_test]
    fn distribute_refuses_clearly_without_citus_and_is_the_admins() {
        let e = outcome("SELECT payments.distribute()");
        assert!(e.starts_with("PM401: Citus is not installed in this database"), "{e}");
        attempt("SELECT 1");
        Spi::run("SET LOCAL ROLE payments_gateway").unwrap();
        assert_eq!(sqlstate("SELECT payments.distribute()"), "42501");
    }

    #[pg_test]
    fn a_payment_is_found_by_id_without_a_route_on_one_node() {
        let id = create("rt1", "1");
        // Without Citus no route row is written: the id index finds the payment.
        assert!(!one::<bool>("SELECT payments._citus()"));
        assert_eq!(
            one::<i64>(&format!("SELECT count(*) FROM payments.payment_customers WHERE payment_id = '{id}'")),
            0
        );
        assert_eq!(one::<String>(&format!("SELECT customer_id FROM payments.get_payment('{id}')")), "cust_1");
        assert_eq!(
            one::<String>(&format!("SELECT outcome FROM payments.transition('{id}', 'canceled', 'api')")),
            "applied"
        );
        assert_eq!(sqlstate("SELECT payments.get_payment('pay_unknown')"), "PM204");
    }

    #[pg_test]
    fn the_history_says_who_asked_and_every_provider_failure() {
        let id = create("pv1", "1");
        attempt("SELECT 1");
        Spi::run("SET LOCAL ROLE payments_gateway").unwrap();
        for source in ["admin", "system", "provider", "webhook"] {
            assert_eq!(sqlstate(&format!("SELECT payments.transition('{id}', 'canceled', '{source}')")), "42501");
        }
        // Money shown moving by hand: only an administrator may.
        for to in ["succeeded", "requires_capture", "processing"] {
            assert_eq!(sqlstate(&format!("SELECT payments.transition('{id}', '{to}', 'api')")), "42501", "{to}");
        }
        assert_eq!(
            sqlstate(&format!("SELECT payments.record_provider_error('{id}', '{{\"type\": \"timeout\"}}')")),
            "ok"
        );
        assert_eq!(sqlstate(&format!("SELECT payments.transition('{id}', 'canceled', 'api')")), "ok");
        Spi::run("RESET ROLE").unwrap();
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(source || ':' || to_status || ':' || applied || ':' || coalesce(reason, '-'), ' ' ORDER BY seq)
                 FROM payments.payment_events WHERE payment_id = '{id}' AND seq > 1"
            )),
            "provider:requires_payment_method:false:provider call failed api:canceled:true:-"
        );
        let other = create("pv2", "1");
        Spi::run("SET LOCAL ROLE payments_admin").unwrap();
        assert_eq!(sqlstate(&format!("SELECT payments.transition('{other}', 'canceled', 'admin')")), "ok");
        Spi::run("RESET ROLE").unwrap();
    }

    #[pg_test]
    fn state_machine_is_visible_in_sql() {
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.allowed_transitions()"), 24);
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.statuses() WHERE terminal"), 3);
    }

    #[pg_test]
    fn allowed_values_come_from_one_registry_and_bind_the_tables() {
        assert_eq!(
            one::<String>(
                "SELECT string_agg(value, ',' ORDER BY value) FROM payments.allowed_values() WHERE kind = 'source'"
            ),
            "admin,api,provider,system,webhook"
        );
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM payments.allowed_values() v JOIN payments.statuses() s ON s.status = v.value
                 WHERE v.kind = 'status'"
            ),
            one::<i64>("SELECT count(*) FROM payments.statuses()")
        );
        assert_eq!(
            one::<String>("SELECT status FROM payments.create_payment('av1', 'cust_av', 1, 'USD')"),
            one::<String>("SELECT payments._initial_status(false)")
        );
        // The tables refuse a value outside the registry even from their owner.
        assert_eq!(sqlstate("UPDATE payments.payments SET status = 'paid' WHERE customer_id = 'cust_av'"), "23514");
        one::<String>("SELECT api_key FROM payments.create_api_key('av', ARRAY['payments:read'])");
        assert_eq!(
            sqlstate("UPDATE payments.api_keys SET scopes = ARRAY['payments:read', 'admin'] WHERE name = 'av'"),
            "23514"
        );
        assert!(!one::<bool>("SELECT payments._is_allowed('no_such_kind', 'api')"));
        assert!(!one::<bool>("SELECT payments._all_allowed('api_key_scope', ARRAY['payments:read', NULL])"));
    }

    // ---- webhooks --------------------------------------------------------------

    const STRIPE_SECRET: &str = "whsec_test_secret";

    fn now_unix() -> i64 {
        one::<i64>("SELECT floor(extract(epoch FROM now()))::bigint")
    }

    /// A Stripe event for payment intent `pi` (10.00 USD), signed at `t` with `secret`.
    fn stripe_event(
        id: &str,
        event_type: &str,
        pi: &str,
        payment_id: Option<&str>,
        secret: &str,
        t: i64,
    ) -> (String, String) {
        let metadata = payment_id.map_or(String::from("{}"), |p| format!(r#"{{"payment_id":"{p}"}}"#));
        signed_event(id, event_type, &intent(pi, 1000, &format!(r#","metadata":{metadata}"#)), secret, t)
    }

    /// An event of `event_type` carrying `object`, signed at `t` with `secret`.
    fn signed_event(id: &str, event_type: &str, object: &str, secret: &str, t: i64) -> (String, String) {
        let body = format!(
            r#"{{"id":"{id}","object":"event","type":"{event_type}","created":{t},"data":{{"object":{object}}}}}"#
        );
        let sig = payments_core::webhook::stripe::sign(secret, t, body.as_bytes());
        (body, sig)
    }

    fn ingest(body: &str, sig: &str) -> String {
        result_or_sqlstate(&format!(
            "SELECT payments.ingest_webhook('stripe', jsonb_build_object('stripe-signature', {}), convert_to({}, 'UTF8'))",
            quote(sig),
            quote(body)
        ))
    }

    /// The `result` of the jsonb `sql` returns, or the SQLSTATE it raised.
    fn result_or_sqlstate(sql: &str) -> String {
        let result = attempt(&format!("SELECT ({sql}) ->> 'result'"));
        match result.strip_prefix("ok:") {
            Some(value) => value.to_string(),
            None => result.chars().take(5).collect(),
        }
    }

    fn quote(s: &str) -> String {
        format!("'{}'", s.replace('\'', "''"))
    }

    fn add_secret(secret: &str) -> String {
        one::<String>(&format!("SELECT payments.add_webhook_secret('stripe', 'stripe', {})", quote(secret)))
    }

    #[pg_test]
    fn verify_webhook_signature_passes_published_vectors_and_names_failures() {
        let stripe_headers = r#"'{"Stripe-Signature": "t=1492774577,v1=88a022085c6bdb887b02cb26ff76dd681234d9675c0f22844059f55552a8883a"}'"#;
        let stripe_body = r#"convert_to('{"id":"evt_test_webhook","object":"event"}', 'UTF8')"#;
        let at = "to_timestamp(1492774577)";
        assert!(one::<bool>(&format!(
            "SELECT payments.verify_webhook_signature('stripe', 'whsec_test_secret', {stripe_headers}, {stripe_body}, at => {at})"
        )));
        let standard_headers = r#"'{"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330", "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}'"#;
        assert!(one::<bool>(&format!(
            "SELECT payments.verify_webhook_signature('standard', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', {standard_headers},
                 convert_to('{{\"test\": 2432232314}}', 'UTF8'), at => to_timestamp(1614265330))"
        )));
        let failure = |secret: &str, at: &str| {
            Spi::get_one::<String>(&format!(
                "SELECT payments.webhook_signature_failure('stripe', '{secret}', {stripe_headers}, {stripe_body}, at => {at})"
            ))
            .unwrap()
        };
        assert_eq!(failure("whsec_test_secret", at), None);
        assert_eq!(failure("whsec_wrong", at).as_deref(), Some("no_matching_signature"));
        assert_eq!(
            failure("whsec_test_secret", "to_timestamp(1492774577 + 301)").as_deref(),
            Some("timestamp_too_old")
        );
        assert_eq!(
            failure("whsec_test_secret", "to_timestamp(1492774577 - 301)").as_deref(),
            Some("timestamp_in_future")
        );
        assert_eq!(
            one::<String>("SELECT payments.webhook_signature_failure('stripe', 's', '{}', '\\x00')"),
            "missing_header"
        );
        assert_eq!(
            one::<String>("SELECT payments.webhook_signature_failure('svix', 's', '{}', '\\x00')"),
            "unknown_scheme"
        );
        // Headers are a jsonb object read in its binary form: names in any case,
        // non-string values (which cannot carry a signature) beside them ignored.
        let v1 = "88a022085c6bdb887b02cb26ff76dd681234d9675c0f22844059f55552a8883a";
        let mixed = format!(
            r#"'{{"x-count": 3, "x-nested": {{"stripe-signature": "t=1,v1=00"}}, "x-none": null, "STRIPE-signature": "t=1492774577,v1={v1}"}}'"#
        );
        assert!(one::<bool>(&format!(
            "SELECT payments.verify_webhook_signature('stripe', 'whsec_test_secret', {mixed}, {stripe_body}, at => {at})"
        )));
        for not_an_object in ["'[]'", "'\"t=1492774577\"'", "'null'"] {
            assert_eq!(
                one::<String>(&format!(
                    "SELECT payments.webhook_signature_failure('stripe', 'whsec_test_secret', {not_an_object}, {stripe_body}, at => {at})"
                )),
                "malformed_header"
            );
        }
    }

    #[pg_test]
    fn ingest_applies_dedupes_and_never_moves_backwards() {
        add_secret(STRIPE_SECRET);
        let id = create("w1", "10");
        one::<String>(&format!(
            "SELECT outcome FROM payments.record_provider_result('{id}', 'stripe', 'pi_w1', 'requires_confirmation', '{}')",
            intent("pi_w1", 1000, "")
        ));
        let t = now_unix();
        let (b1, s1) = stripe_event("evt_1", "payment_intent.processing", "pi_w1", None, STRIPE_SECRET, t);
        let (b2, s2) = stripe_event("evt_2", "payment_intent.succeeded", "pi_w1", None, STRIPE_SECRET, t + 1);
        let (b3, s3) = stripe_event("evt_3", "payment_intent.requires_action", "pi_w1", None, STRIPE_SECRET, t - 5);
        let (b4, s4) = stripe_event("evt_4", "customer.created", "cus_1", None, STRIPE_SECRET, t);
        let (b5, s5) = stripe_event("evt_5", "payment_intent.succeeded", "pi_w1", None, STRIPE_SECRET, t + 2);
        assert_eq!(ingest(&b2, &s2), "applied");
        assert_eq!(ingest(&b2, &s2), "duplicate");
        assert_eq!(ingest(&b1, &s1), "stale");
        assert_eq!(ingest(&b3, &s3), "stale");
        assert_eq!(ingest(&b4, &s4), "ignored");
        // Another event confirming the status it already has: a noop, not stale.
        assert_eq!(ingest(&b5, &s5), "noop");
        assert_eq!(one::<String>(&format!("SELECT status FROM payments.payments WHERE id = '{id}'")), "succeeded");
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.webhook_events WHERE provider = 'stripe'"), 5);
        assert_eq!(
            one::<String>(
                "SELECT string_agg(result, ',' ORDER BY event_id) FROM payments.webhook_events WHERE provider = 'stripe'"
            ),
            "stale,applied,stale,ignored,noop"
        );
        // The exact bytes are kept, numbers and all.
        assert_eq!(
            one::<String>("SELECT convert_from(body, 'UTF8') FROM payments.webhook_events WHERE event_id = 'evt_2'"),
            b2
        );
        assert_eq!(sqlstate("UPDATE payments.webhook_events SET result = 'applied'"), "PM205");
    }

    #[pg_test]
    fn ingest_refuses_forged_old_and_unparseable_events() {
        let t = now_unix();
        let (body, sig) = stripe_event("evt_f", "payment_intent.succeeded", "pi_f", None, STRIPE_SECRET, t);
        assert_eq!(ingest(&body, &sig), "PM303", "no secret configured yet");
        add_secret(STRIPE_SECRET);
        let (forged, forged_sig) = stripe_event("evt_f", "payment_intent.succeeded", "pi_f", None, "whsec_attacker", t);
        assert_eq!(ingest(&forged, &forged_sig), "PM301");
        assert_eq!(ingest(&body.replace("pi_f", "pi_g"), &sig), "PM301", "body changed after signing");
        let (old, old_sig) = stripe_event("evt_o", "payment_intent.succeeded", "pi_f", None, STRIPE_SECRET, t - 600);
        assert_eq!(ingest(&old, &old_sig), "PM302");
        let (future, future_sig) =
            stripe_event("evt_u", "payment_intent.succeeded", "pi_f", None, STRIPE_SECRET, t + 600);
        assert_eq!(ingest(&future, &future_sig), "PM302");
        assert_eq!(ingest(&body, "t=1"), "PM301");
        let not_json = "not json";
        assert_eq!(
            ingest(not_json, &payments_core::webhook::stripe::sign(STRIPE_SECRET, t, not_json.as_bytes())),
            "PM304"
        );
        let no_id = r#"{"type":"x"}"#;
        assert_eq!(ingest(no_id, &payments_core::webhook::stripe::sign(STRIPE_SECRET, t, no_id.as_bytes())), "PM304");
        // A session cannot widen the window; only payments_admin can, and only so far.
        Spi::run("SET LOCAL payments.webhook_tolerance = '100 years'").unwrap();
        assert_eq!(ingest(&old, &old_sig), "PM302");
        assert_eq!(sqlstate("SELECT payments.set_webhook_tolerance('100 years')"), "PM100");
        attempt("SELECT 1");
        Spi::run("SET LOCAL ROLE payments_gateway").unwrap();
        assert_eq!(sqlstate("SELECT payments.set_webhook_tolerance('1 hour')"), "42501");
        Spi::run("RESET ROLE").unwrap();
        one::<pgrx::datum::Interval>("SELECT payments.set_webhook_tolerance('1 hour')");
        assert_eq!(ingest(&old, &old_sig), "pending_match");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM payments.webhook_events WHERE provider = 'stripe'"),
            1,
            "only the verified event is stored"
        );
    }

    #[pg_test]
    fn early_events_wait_for_the_link_then_apply_in_order() {
        add_secret(STRIPE_SECRET);
        let id = create("w2", "10");
        let t = now_unix();
        let (b1, s1) = stripe_event("evt_a", "payment_intent.requires_action", "pi_w2", None, STRIPE_SECRET, t);
        let (b2, s2) = stripe_event("evt_b", "payment_intent.succeeded", "pi_w2", None, STRIPE_SECRET, t + 1);
        assert_eq!(ingest(&b2, &s2), "pending_match");
        assert_eq!(ingest(&b1, &s1), "pending_match");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM payments.webhook_log WHERE still_pending AND provider = 'stripe'"),
            2
        );
        let r = one::<String>(&format!(
            "SELECT status FROM payments.record_provider_result('{id}', 'stripe', 'pi_w2', 'requires_confirmation', '{}')",
            intent("pi_w2", 1000, "")
        ));
        assert_eq!(r, "succeeded");
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.webhook_pending WHERE provider = 'stripe'"), 0);
        let history = one::<String>(&format!(
            "SELECT string_agg(to_status || ':' || applied, ' ' ORDER BY seq) FROM payments.payment_events WHERE payment_id = '{id}'"
        ));
        assert_eq!(
            history,
            "requires_payment_method:true requires_action:true succeeded:true requires_confirmation:false"
        );
    }

    #[pg_test]
    fn a_payment_moves_only_on_evidence_for_its_money() {
        add_secret(STRIPE_SECRET);
        let t = now_unix();
        let anomalies = |id: &str| {
            one::<String>(&format!(
                "SELECT coalesce(string_agg(kind || ':' || source, ',' ORDER BY kind), '-')
                 FROM payments.open_anomalies WHERE payment_id = '{id}'"
            ))
        };
        let state = |id: &str| {
            one::<String>(&format!(
                "SELECT status || ' ' || coalesce(provider_payment_id, '-') FROM payments.payments WHERE id = '{id}'"
            ))
        };

        // The attack: a cent-sized intent names a 1000.00 USD payment in its metadata.
        let big = one::<String>("SELECT id FROM payments.create_payment('ev1', 'cust_ev', 1000.00, 'USD')");
        let cent = intent("pi_cent", 1, &format!(r#","metadata":{{"payment_id":"{big}"}}"#));
        let (b, sig) = signed_event("evt_cent", "payment_intent.succeeded", &cent, STRIPE_SECRET, t);
        assert_eq!(ingest(&b, &sig), "mismatch");
        assert_eq!(state(&big), "requires_payment_method -", "neither applied nor linked");
        assert_eq!(anomalies(&big), "amount_mismatch:webhook");
        assert_eq!(
            one::<String>(&format!(
                "SELECT from_status || '>' || to_status || ' ' || applied || ' ' || reason || ' ' || (data->'observed'->>'amount')
                 FROM payments.payment_events WHERE payment_id = '{big}' ORDER BY seq DESC LIMIT 1"
            )),
            "requires_payment_method>requires_payment_method false anomaly: amount_mismatch 1"
        );
        // The same through the API answer path.
        let r = one::<String>(&format!(
            "SELECT outcome || ' ' || status FROM payments.record_provider_result('{big}', 'stripe', 'pi_cent', 'succeeded', '{}')",
            intent("pi_cent", 1, "")
        ));
        assert_eq!(r, "mismatch requires_payment_method");

        // Another currency, and a success without evidence at all.
        let eur = one::<String>(
            "SELECT id FROM payments.create_payment('ev2', 'cust_ev', 10, 'EUR', payment_method => 'pm_card_visa')",
        );
        let r = one::<String>(&format!(
            "SELECT outcome FROM payments.record_provider_result('{eur}', 'stripe', 'pi_usd', 'succeeded', '{}')",
            intent("pi_usd", 1000, "")
        ));
        assert_eq!(r, "mismatch");
        assert_eq!(
            one::<String>(&format!(
                "SELECT outcome FROM payments.record_provider_result('{eur}', 'stripe', NULL, 'succeeded', '{{}}')"
            )),
            "mismatch"
        );
        assert_eq!(state(&eur), "requires_confirmation -");
        assert_eq!(anomalies(&eur), "currency_mismatch:provider,currency_mismatch:provider");

        // Linked honestly, then a success that received less, and a second intent naming it.
        let p = create("ev3", "10");
        let r = one::<String>(&format!(
            "SELECT outcome FROM payments.record_provider_result('{p}', 'stripe', 'pi_ev3', 'processing', '{}')",
            intent("pi_ev3", 1000, "")
        ));
        assert_eq!(r, "applied");
        let short = intent("pi_ev3", 1000, "").replace(r#""amount_received":1000"#, r#""amount_received":500"#);
        let (b, sig) = signed_event("evt_short", "payment_intent.succeeded", &short, STRIPE_SECRET, t);
        assert_eq!(ingest(&b, &sig), "mismatch");
        let second = intent("pi_ev3_again", 1000, &format!(r#","metadata":{{"payment_id":"{p}"}}"#));
        let (b, sig) = signed_event("evt_again", "payment_intent.succeeded", &second, STRIPE_SECRET, t);
        assert_eq!(ingest(&b, &sig), "mismatch");
        assert_eq!(state(&p), "processing pi_ev3");
        assert_eq!(anomalies(&p), "amount_received_mismatch:webhook,provider_payment_mismatch:webhook");
        assert_eq!(
            one::<String>(
                "SELECT string_agg(result, ',' ORDER BY event_id) FROM payments.webhook_events
                 WHERE event_id IN ('evt_cent', 'evt_short', 'evt_again')"
            ),
            "mismatch,mismatch,mismatch"
        );

        // The happy path still moves it; an operator closes the anomalies, in the history too.
        let (b, sig) = stripe_event("evt_ok", "payment_intent.succeeded", "pi_ev3", None, STRIPE_SECRET, t);
        assert_eq!(ingest(&b, &sig), "applied");
        let first = one::<String>(&format!(
            "SELECT id FROM payments.anomalies WHERE payment_id = '{p}' AND kind = 'amount_received_mismatch'"
        ));
        assert!(one::<bool>(&format!("SELECT payments.resolve_anomaly('{first}', 'customer paid the rest by wire')")));
        assert!(!one::<bool>(&format!("SELECT payments.resolve_anomaly('{first}', 'again')")));
        assert_eq!(sqlstate(&format!("SELECT payments.resolve_anomaly('{first}', '')")), "PM100");
        assert_eq!(anomalies(&p), "provider_payment_mismatch:webhook");
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM payments.payment_events WHERE payment_id = '{p}' AND reason = 'anomaly resolved: amount_received_mismatch'"
            )),
            1
        );
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.verify_event_chain()"), 0);
    }

    #[pg_test]
    fn bad_input_is_refused_with_short_messages() {
        let create_with =
            |args: &str| sqlstate(&format!("SELECT payments.create_payment('bi', 'c', 1, 'USD', {args})"));
        let many_keys: String =
            format!("'{{{}}}'", (0..51).map(|i| format!(r#""k{i}": 1"#)).collect::<Vec<_>>().join(", "));
        for args in [
            r#"metadata => '{"a": {"b": 1}}'"#.to_string(),
            r#"metadata => '{"a": [1]}'"#.to_string(),
            format!("metadata => {many_keys}"),
            format!(r#"metadata => '{{"{}": 1}}'"#, "k".repeat(41)),
            format!(r#"metadata => '{{"k": "{}"}}'"#, "v".repeat(501)),
            format!("payment_method => '{}'", "p".repeat(256)),
            format!("description => '{}'", "d".repeat(1001)),
        ] {
            assert_eq!(create_with(&args), "PM100", "{}", &args[..args.len().min(60)]);
        }
        assert_eq!(create_with(r#"metadata => '{"order": 42, "note": "ok", "gift": true, "x": null}'"#), "ok");

        let long = "x".repeat(5000);
        for sql in [
            format!("SELECT payments.get_payment('{long}')"),
            format!("SELECT payments.list_payments(status => '{long}')"),
            format!("SELECT payments.transition('{long}', 'canceled', 'api')"),
            "SELECT payments.to_minor('1e131071'::numeric, 'USD')".to_string(),
        ] {
            let e = outcome(&sql);
            assert!(e.len() < 300, "a {}-byte message for {}", e.len(), &sql[..40]);
        }

        add_secret(STRIPE_SECRET);
        let t = now_unix();
        let (b, sig) =
            signed_event(&"e".repeat(4800), "payment_intent.succeeded", &intent("pi_x", 1, ""), STRIPE_SECRET, t);
        assert_eq!(ingest(&b, &sig), "PM304");
        let e = outcome(&format!(
            "SELECT payments.ingest_webhook('made-up-{long}', jsonb_build_object('stripe-signature', {}), convert_to({}, 'UTF8'))",
            quote(&sig),
            quote(&b)
        ));
        assert!(e.starts_with("PM303") && !e.contains("made-up"), "{}", &e[..e.len().min(200)]);
    }

    #[pg_test]
    fn metadata_payment_id_matches_and_links() {
        add_secret(STRIPE_SECRET);
        let id = create("w3", "10");
        let (b, s) =
            stripe_event("evt_m", "payment_intent.payment_failed", "pi_w3", Some(&id), STRIPE_SECRET, now_unix());
        assert_eq!(ingest(&b, &s), "applied");
        assert_eq!(
            one::<String>(&format!(
                "SELECT status || ' ' || provider_payment_id FROM payments.payments WHERE id = '{id}'"
            )),
            "failed pi_w3"
        );
    }

    #[pg_test]
    fn secrets_rotate_and_stay_private() {
        let old = add_secret("whsec_old");
        add_secret("whsec_new");
        let t = now_unix();
        let (b1, s1) = stripe_event("evt_r1", "customer.created", "cus", None, "whsec_old", t);
        let (b2, s2) = stripe_event("evt_r2", "customer.created", "cus", None, "whsec_new", t);
        assert_eq!(ingest(&b1, &s1), "ignored");
        assert_eq!(ingest(&b2, &s2), "ignored");
        assert!(one::<bool>(&format!("SELECT payments.retire_webhook_secret('{old}')")));
        assert!(!one::<bool>(&format!("SELECT payments.retire_webhook_secret('{old}')")));
        let (b3, s3) = stripe_event("evt_r3", "customer.created", "cus", None, "whsec_old", t);
        assert_eq!(ingest(&b3, &s3), "PM301");
        let e = outcome("SELECT payments.add_webhook_secret('p', 'standard', 'whsec_!!not-base64')");
        assert!(e.starts_with("PM100") && !e.contains("not-base64"), "{e}");
        assert_eq!(sqlstate("SELECT payments.add_webhook_secret('p', 'hmac', 'x')"), "PM100");

        attempt("SELECT 1");
        for role in ["payments_gateway", "payments_reader"] {
            Spi::run(&format!("SET LOCAL ROLE {role}")).unwrap();
            assert_eq!(sqlstate("SELECT secret FROM payments.webhook_secrets"), "42501", "{role}");
            assert_eq!(sqlstate("SELECT payments.add_webhook_secret('p', 'stripe', 'x')"), "42501", "{role}");
            assert_eq!(sqlstate("SELECT * FROM payments.webhook_log"), "ok", "{role}");
            Spi::run("RESET ROLE").unwrap();
        }
    }

    // ---- gateway support ---------------------------------------------------------

    #[pg_test]
    fn api_keys_are_shown_once_stored_hashed_and_revocable() {
        let created =
            one::<String>("SELECT id || ' ' || api_key FROM payments.create_api_key('app', ARRAY['payments:read'])");
        let (id, key) = created.split_once(' ').unwrap();
        assert!(key.starts_with("sk_pay_"));
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM payments.api_keys WHERE key_hash = sha256(convert_to('{key}', 'UTF8'))"
            )),
            1
        );
        // The key itself is nowhere in its row: not as the hash's bytes, not in any column.
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM payments.api_keys a
                 WHERE position(convert_to('{key}', 'UTF8') IN a.key_hash) > 0 OR to_jsonb(a)::text LIKE '%{key}%'"
            )),
            0
        );
        assert_eq!(
            one::<String>(&format!("SELECT array_to_string(scopes, ',') FROM payments.authenticate_api_key('{key}')")),
            "payments:read"
        );
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.authenticate_api_key('sk_pay_wrong')"), 0);
        assert!(one::<bool>(&format!("SELECT payments.revoke_api_key('{id}')")));
        assert_eq!(one::<i64>(&format!("SELECT count(*) FROM payments.authenticate_api_key('{key}')")), 0);
        assert_eq!(sqlstate("SELECT payments.create_api_key('x', ARRAY['payments:root'])"), "PM100");
        assert_eq!(outcome("SELECT payments.create_api_key('ops', ARRAY['webhooks:manage', 'payments:admin'])"), "ok");
        let bound =
            one::<String>("SELECT api_key FROM payments.create_api_key('agent', ARRAY['payments:read'], 'cust_agent')");
        assert_eq!(
            one::<String>(&format!("SELECT customer_id FROM payments.authenticate_api_key('{bound}')")),
            "cust_agent",
            "a key bound to one customer says which"
        );
        assert_eq!(
            sqlstate(&format!("SELECT payments.create_api_key('x', ARRAY['payments:read'], '{}')", "c".repeat(256))),
            "PM100"
        );
        assert_eq!(sqlstate("SELECT payments.create_api_key('', ARRAY['payments:read'])"), "PM100");
    }

    #[pg_test]
    fn provider_work_is_claimed_once_old_enough_and_errors_keep_it_waiting() {
        let waiting = one::<String>(
            "SELECT id FROM payments.create_payment('c1', 'c', 1, 'USD', payment_method => 'pm_card_visa')",
        );
        create("c2", "1"); // no payment method: nothing to do at the provider
        let linked = one::<String>(
            "SELECT id FROM payments.create_payment('c3', 'c', 1, 'USD', payment_method => 'pm_card_visa')",
        );
        one::<String>(&format!(
            "SELECT status FROM payments.record_provider_result('{linked}', 'sandbox', 'pi_c3', 'processing', '{}')",
            intent("pi_c3", 100, "")
        ));
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.claim_provider_work(10, '1 hour')"), 0, "too recent");
        // Everything here shares the test transaction's now(); a negative age includes it.
        let claimed = one::<String>(&format!(
            "SELECT string_agg(kind || ':' || status, ',' ORDER BY kind) FROM payments.claim_provider_work(100, '-1 second')
             WHERE payment_id IN ('{waiting}', '{linked}')"
        ));
        assert_eq!(claimed, "create:requires_confirmation,refresh:processing");
        Spi::run(&format!(
            "SELECT payments.record_provider_error('{waiting}', '{{\"type\": \"provider_unavailable\"}}')"
        ))
        .unwrap();
        assert_eq!(
            one::<String>(&format!(
                "SELECT status || ' ' || (last_error->>'type') FROM payments.payments WHERE id = '{waiting}'"
            )),
            "requires_confirmation provider_unavailable"
        );
        assert_eq!(sqlstate("SELECT payments.record_provider_error('pay_none', '{}')"), "PM204");

        // A claim is a lease: claimed again only after it ends, longer with each attempt; a status change ends it.
        let again = format!(
            "SELECT count(*) FROM payments.claim_provider_work(100, '-1 second') WHERE payment_id IN ('{waiting}', '{linked}')"
        );
        assert_eq!(one::<i64>(&again), 0, "leased");
        assert_eq!(
            one::<String>(&format!(
                "SELECT reconcile_attempts || ' ' || (reconcile_after - now() = interval '30 seconds')
                 FROM payments.payments WHERE id = '{waiting}'"
            )),
            "1 true"
        );
        Spi::run(&format!(
            "UPDATE payments.payments SET reconcile_after = now(), updated_at = now() - interval '1 hour' WHERE id = '{waiting}'"
        ))
        .unwrap();
        assert_eq!(
            one::<String>(&format!(
                "SELECT kind || ':' || attempt FROM payments.claim_provider_work(100, '1 minute', '1 second')
                 WHERE payment_id = '{waiting}'"
            )),
            "create:2"
        );
        assert!(
            one::<bool>(&format!(
                "SELECT reconcile_after - now() = interval '2 minutes' FROM payments.payments WHERE id = '{waiting}'"
            )),
            "the second lease is min_age doubled"
        );
        one::<String>(&format!(
            "SELECT outcome FROM payments.record_provider_result('{linked}', 'sandbox', 'pi_c3', 'succeeded', '{}')",
            intent("pi_c3", 100, "")
        ));
        assert_eq!(
            one::<String>(&format!(
                "SELECT reconcile_attempts || ' ' || (reconcile_after IS NULL) FROM payments.payments WHERE id = '{linked}'"
            )),
            "0 true"
        );
        assert_eq!(sqlstate("SELECT payments.claim_provider_work(0)"), "PM100");
    }

    #[pg_test]
    fn payment_events_are_listed_in_order() {
        let id = create("e1", "1");
        one::<String>(&format!("SELECT outcome FROM payments.transition('{id}', 'canceled', 'api')"));
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(to_status, ',' ORDER BY seq) FROM payments.list_payment_events('{id}')"
            )),
            "requires_payment_method,canceled"
        );
        assert_eq!(sqlstate("SELECT payments.list_payment_events('pay_none')"), "PM204");
    }

    /// A manual-capture payment of `amount` USD that the provider authorized (`pi_<key>`), in requires_capture.
    fn authorized(key: &str, amount: &str) -> String {
        let id = one::<String>(&format!(
            "SELECT id FROM payments.create_payment('{key}', 'cust_1', {amount}, 'usd', 'pm_card_visa',
                                                    capture_method => 'manual')"
        ));
        let minor = one::<i64>(&format!("SELECT amount_minor FROM payments.payments WHERE id = '{id}'"));
        let status = one::<String>(&format!(
            "SELECT status FROM payments.record_provider_result('{id}', 'sandbox', 'pi_{key}', 'requires_capture', '{}')",
            intent(&format!("pi_{key}"), minor, "")
        ));
        assert_eq!(status, "requires_capture");
        id
    }

    /// Claims the payment's queued command: (command id, kind, amount_minor or reason).
    fn claim(id: &str) -> (String, String, String) {
        let row = one::<String>(&format!(
            "SELECT command_id || ' ' || kind || ' ' || coalesce(amount_minor::text, reason, '-')
             FROM payments.claim_provider_commands(10, '30 seconds', '{id}')"
        ));
        let parts: Vec<&str> = row.split(' ').collect();
        (parts[0].to_string(), parts[1].to_string(), parts[2].to_string())
    }

    #[pg_test]
    fn capture_queues_a_command_and_the_providers_answer_captures_part() {
        let id = authorized("cap1", "49.99");
        assert_eq!(sqlstate(&format!("SELECT payments.capture_payment('{id}', 50.00)")), "PM207");
        assert_eq!(sqlstate(&format!("SELECT payments.capture_payment('{id}', 0.001)")), "PM101");
        let queued = format!("SELECT outcome || ' ' || status FROM payments.capture_payment('{id}', 30.00)");
        assert_eq!(one::<String>(&queued), "queued requires_capture");
        assert_eq!(one::<String>(&queued), "queued requires_capture", "the same capture again is the same command");
        // One command at a time per payment.
        assert_eq!(sqlstate(&format!("SELECT payments.capture_payment('{id}')")), "PM208");
        assert_eq!(sqlstate(&format!("SELECT payments.cancel_payment('{id}')")), "PM208");

        let (command, kind, amount) = claim(&id);
        assert_eq!((kind.as_str(), amount.as_str()), ("capture", "3000"));
        assert_eq!(
            one::<i64>(&format!("SELECT count(*) FROM payments.claim_provider_commands(10, '30 seconds', '{id}')")),
            0,
            "leased: not claimed twice"
        );
        let captured = r#"{"id":"pi_cap1","object":"payment_intent","status":"succeeded","amount":4999,"currency":"usd","amount_received":3000,"amount_capturable":0}"#;
        let record = format!(
            "SELECT outcome || ' ' || status || ' ' || amount_captured || ' ' || amount_captured_minor
                              FROM payments.record_command_result('{command}', true, 'succeeded', '{captured}')"
        );
        assert_eq!(one::<String>(&record), "applied succeeded 30.00 3000");
        assert_eq!(
            one::<String>(&format!("SELECT status FROM payments.provider_commands WHERE id = '{command}'")),
            "succeeded"
        );
        assert_eq!(one::<String>(&record), "noop succeeded 30.00 3000", "a repeated answer changes nothing");
        // The receipt of 3000 was evidence, and the request is in the history.
        assert_eq!(one::<i64>(&format!("SELECT count(*) FROM payments.anomalies WHERE payment_id = '{id}'")), 0);
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM payments.payment_events WHERE payment_id = '{id}' AND reason = 'capture requested'"
            )),
            1
        );
        assert_eq!(sqlstate("SELECT payments.record_command_result('cmd_none', true, 'succeeded', '{}')"), "PM204");
    }

    #[pg_test]
    fn capture_needs_an_authorization_and_other_money_received_is_an_anomaly() {
        let unpaid = create("cap2", "10");
        assert_eq!(sqlstate(&format!("SELECT payments.capture_payment('{unpaid}')")), "PM206");
        assert_eq!(sqlstate("SELECT payments.capture_payment('pay_none')"), "PM204");
        let id = authorized("cap3", "10.00");
        one::<String>(&format!("SELECT outcome FROM payments.capture_payment('{id}')"));
        let (command, _, amount) = claim(&id);
        assert_eq!(amount, "1000", "no amount: all of it");
        let wrong = r#"{"id":"pi_cap3","object":"payment_intent","status":"succeeded","amount":1000,"currency":"usd","amount_received":2000,"amount_capturable":0}"#;
        assert_eq!(
            one::<String>(&format!(
                "SELECT outcome || ' ' || status FROM payments.record_command_result('{command}', true, 'succeeded', '{wrong}')"
            )),
            "mismatch requires_capture"
        );
        assert_eq!(
            one::<String>(&format!("SELECT kind FROM payments.anomalies WHERE payment_id = '{id}'")),
            "amount_received_mismatch"
        );
    }

    #[pg_test]
    fn an_unreachable_provider_keeps_the_command_and_a_refusal_ends_it() {
        let id = authorized("cap4", "5");
        one::<String>(&format!("SELECT outcome FROM payments.capture_payment('{id}', 2)"));
        let (command, _, _) = claim(&id);
        let down = format!(
            "SELECT outcome || ' ' || status FROM payments.record_command_result('{command}', false, NULL,
                            '{{\"type\": \"provider_unavailable\"}}')"
        );
        assert_eq!(one::<String>(&down), "queued requires_capture");
        assert_eq!(
            one::<String>(&format!(
                "SELECT status || ' ' || attempts FROM payments.provider_commands WHERE id = '{command}'"
            )),
            "pending 1"
        );
        let refused = format!(
            "SELECT outcome || ' ' || status FROM payments.record_command_result('{command}', true, NULL,
                               '{{\"error\": {{\"code\": \"amount_too_large\"}}}}')"
        );
        assert_eq!(one::<String>(&refused), "noop requires_capture");
        assert_eq!(
            one::<String>(&format!("SELECT status || ' ' || (last_error ->> 'code') FROM payments.provider_commands WHERE id = '{command}'")),
            "failed amount_too_large"
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(reason, ',' ORDER BY seq) FROM payments.payment_events WHERE payment_id = '{id}' AND NOT applied"
            )),
            "capture requested,capture call failed,capture refused"
        );
        // Refused, it no longer blocks another command.
        assert_eq!(one::<String>(&format!("SELECT outcome FROM payments.cancel_payment('{id}')")), "queued");
    }

    #[pg_test]
    fn cancel_is_immediate_before_the_provider_queued_after_and_refused_when_final() {
        let unpaid = create("can1", "3");
        assert_eq!(
            one::<String>(&format!(
                "SELECT outcome || ' ' || status || ' ' || cancellation_reason FROM payments.cancel_payment('{unpaid}', 'abandoned')"
            )),
            "applied canceled abandoned"
        );
        assert_eq!(sqlstate(&format!("SELECT payments.cancel_payment('{unpaid}')")), "PM206");
        let in_flight =
            one::<String>("SELECT id FROM payments.create_payment('can2', 'cust_1', 3, 'usd', 'pm_card_visa')");
        assert_eq!(sqlstate(&format!("SELECT payments.cancel_payment('{in_flight}')")), "PM209");
        // Nor around cancel_payment's checks: only an administrator may cancel it by transition.
        attempt("SELECT 1");
        Spi::run("SET LOCAL ROLE payments_gateway").unwrap();
        assert_eq!(sqlstate(&format!("SELECT payments.transition('{in_flight}', 'canceled', 'api')")), "42501");
        Spi::run("RESET ROLE").unwrap();
        assert_eq!(sqlstate(&format!("SELECT payments.cancel_payment('{in_flight}', 'automatic')")), "PM100");
        assert_eq!(sqlstate(&format!("SELECT payments.cancel_payment('{in_flight}', 'bored')")), "PM100");

        let id = authorized("can3", "7");
        assert_eq!(
            one::<String>(&format!("SELECT outcome FROM payments.cancel_payment('{id}', 'duplicate')")),
            "queued"
        );
        let (command, kind, reason) = claim(&id);
        assert_eq!((kind.as_str(), reason.as_str()), ("cancel", "duplicate"));
        let canceled = r#"{"id":"pi_can3","object":"payment_intent","status":"canceled","amount":700,"currency":"usd","amount_received":0,"amount_capturable":0,"cancellation_reason":"duplicate"}"#;
        assert_eq!(
            one::<String>(&format!(
                "SELECT status || ' ' || cancellation_reason FROM payments.record_command_result('{command}', true, 'canceled', '{canceled}')"
            )),
            "canceled duplicate"
        );
    }

    #[pg_test]
    fn authorizations_left_uncaptured_are_canceled_once() {
        let id = authorized("exp1", "4");
        let due = "SELECT payments.cancel_expired_authorizations('7 days', now() + interval '8 days')";
        assert!(one::<i32>(due) >= 1);
        let pending = format!(
            "SELECT count(*) FROM payments.provider_commands WHERE payment_id = '{id}' AND kind = 'cancel' AND reason = 'automatic'"
        );
        assert_eq!(one::<i64>(&pending), 1);
        one::<i32>(due);
        assert_eq!(one::<i64>(&pending), 1, "queued once however often it runs");
        let fresh = authorized("exp2", "4");
        assert_eq!(one::<i32>("SELECT payments.cancel_expired_authorizations('7 days', now())"), 0);
        assert_eq!(
            one::<i64>(&format!("SELECT count(*) FROM payments.provider_commands WHERE payment_id = '{fresh}'")),
            0
        );
        assert_eq!(sqlstate("SELECT payments.cancel_expired_authorizations('500 milliseconds')"), "PM100");

        // Refused, an automatic cancel is not queued again: it waits for an operator.
        let (command, _, reason) = claim(&id);
        assert_eq!(reason, "automatic");
        let refusal = r#"{"error":{"code":"payment_intent_unexpected_state","payment_intent":{"id":"pi_exp1","client_secret":"pi_exp1_secret_x"}}}"#;
        one::<String>(&format!(
            "SELECT outcome FROM payments.record_command_result('{command}', true, NULL, '{refusal}')"
        ));
        assert!(
            !one::<bool>(&format!(
                "SELECT last_error::text LIKE '%secret%' FROM payments.provider_commands WHERE id = '{command}'"
            )),
            "no client_secret is kept, also not inside a refusal"
        );
        one::<i32>(due);
        assert_eq!(one::<i64>(&pending), 1, "one automatic cancel, refused, and no second");
    }

    #[pg_test]
    fn a_command_whose_payment_moved_on_is_not_carried_out() {
        let id = authorized("mov1", "6");
        one::<String>(&format!("SELECT outcome FROM payments.capture_payment('{id}')"));
        one::<String>(&format!(
            "SELECT outcome FROM payments.transition('{id}', 'canceled', 'admin', 'voided by hand')"
        ));
        assert_eq!(
            one::<i64>(&format!("SELECT count(*) FROM payments.claim_provider_commands(10, '30 seconds', '{id}')")),
            0
        );
        assert_eq!(
            one::<String>(&format!("SELECT status FROM payments.provider_commands WHERE payment_id = '{id}'")),
            "failed"
        );
        assert_eq!(sqlstate("SELECT payments.record_command_result('x', NULL, NULL, '{}')"), "PM100");
    }

    // ---- refunds, disputes and balances ---------------------------------------

    /// A 10.00 USD payment of `customer` the provider captured as `pi`, provider `stripe`.
    fn paid(key: &str, customer: &str, pi: &str) -> String {
        let id = one::<String>(&format!(
            "SELECT id FROM payments.create_payment('{key}', '{customer}', 10, 'usd', 'pm_card_visa')"
        ));
        let status = one::<String>(&format!(
            "SELECT status FROM payments.record_provider_result('{id}', 'stripe', '{pi}', 'succeeded', '{}')",
            intent(pi, 1000, "")
        ));
        assert_eq!(status, "succeeded");
        id
    }

    /// A Stripe Refund object.
    fn refund_object(re: &str, pi: &str, amount: i64, status: &str, extra: &str) -> String {
        format!(
            r#"{{"id":"{re}","object":"refund","amount":{amount},"currency":"usd","payment_intent":"{pi}","status":"{status}"{extra}}}"#
        )
    }

    fn refund_command(refund_id: &str) -> String {
        one::<String>(&format!("SELECT id FROM payments.provider_commands WHERE refund_id = '{refund_id}'"))
    }

    fn refunded(id: &str) -> String {
        one::<String>(&format!("SELECT amount_refunded || ' ' || refund_status FROM payments.get_payment('{id}')"))
    }

    #[pg_test]
    fn create_refund_refunds_part_then_the_rest_and_replays() {
        let unpaid = create("rf0", "10");
        let id = paid("rf1", "cust_rf", "pi_rf1");
        assert_eq!(sqlstate("SELECT payments.create_refund('k', 'pay_none')"), "PM204");
        assert_eq!(sqlstate(&format!("SELECT payments.create_refund('k', '{unpaid}')")), "PM206");
        assert_eq!(sqlstate(&format!("SELECT payments.create_refund('', '{id}')")), "PM100");
        assert_eq!(sqlstate(&format!("SELECT payments.create_refund('k', '{id}', reason => 'automatic')")), "PM100");
        assert_eq!(sqlstate(&format!("SELECT payments.create_refund('k', '{id}', 1.001)")), "PM101");
        assert_eq!(sqlstate(&format!("SELECT payments.create_refund('k', '{id}', -1)")), "PM102");
        assert_eq!(sqlstate(&format!("SELECT payments.create_refund('k', '{id}', 10.01)")), "PM207");

        let first = format!("SELECT id || ' ' || outcome || ' ' || status || ' ' || amount FROM payments.create_refund('k1', '{id}', 3, 'requested_by_customer')");
        let made = one::<String>(&first);
        let refund = made.split(' ').next().unwrap().to_string();
        assert_eq!(made, format!("{refund} created pending 3.00"));
        assert_eq!(one::<String>(&first), format!("{refund} replayed pending 3.00"));
        assert_eq!(sqlstate(&format!("SELECT payments.create_refund('k1', '{id}', 4)")), "PM201");
        let rest = one::<String>(&format!("SELECT id || ' ' || amount FROM payments.create_refund('k2', '{id}')"));
        assert!(rest.ends_with(" 7.00"), "the rest: {rest}");
        let rest = rest.split(' ').next().unwrap().to_string();
        assert_eq!(sqlstate(&format!("SELECT payments.create_refund('k3', '{id}', 0.01)")), "PM207", "nothing left");

        // Both wait as commands: the provider's Refund settles the first.
        assert_eq!(
            one::<i64>(&format!("SELECT count(*) FROM payments.claim_provider_commands(10, '30 seconds', '{id}')")),
            2
        );
        let answer = refund_object("re_1", "pi_rf1", 300, "succeeded", "");
        let record = format!(
            "SELECT outcome FROM payments.record_command_result('{}', true, 'succeeded', '{answer}')",
            refund_command(&refund)
        );
        assert_eq!(one::<String>(&record), "noop", "the payment's status does not move");
        assert_eq!(
            one::<String>(&format!("SELECT status || ' ' || provider_refund_id FROM payments.get_refund('{refund}')")),
            "succeeded re_1"
        );
        assert_eq!(refunded(&id), "3.00 partial");
        assert_eq!(one::<String>(&record), "noop", "a repeated answer changes nothing");
        assert_eq!(refunded(&id), "3.00 partial");

        // The provider refuses the rest: that refund fails and its amount is free again.
        let refusal = r#"{"error":{"type":"invalid_request_error","message":"Charge has been disputed."}}"#;
        one::<String>(&format!(
            "SELECT outcome FROM payments.record_command_result('{}', true, NULL, '{refusal}')",
            refund_command(&rest)
        ));
        assert_eq!(
            one::<String>(&format!("SELECT status || ': ' || failure_reason FROM payments.get_refund('{rest}')")),
            "failed: Charge has been disputed."
        );
        let again = one::<String>(&format!("SELECT id FROM payments.create_refund('k4', '{id}', 7)"));
        // An answer about other money is an anomaly, not a refund.
        one::<String>(&format!(
            "SELECT outcome FROM payments.record_command_result('{}', true, 'succeeded', '{}')",
            refund_command(&again),
            refund_object("re_2", "pi_rf1", 900, "succeeded", "")
        ));
        assert_eq!(one::<String>(&format!("SELECT status FROM payments.get_refund('{again}')")), "pending");
        assert_eq!(
            one::<String>(&format!("SELECT kind FROM payments.anomalies WHERE payment_id = '{id}'")),
            "amount_mismatch"
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(status, ',' ORDER BY status) FROM payments.list_refunds('{id}', 100)"
            )),
            "failed,pending,succeeded"
        );
        assert_eq!(sqlstate("SELECT payments.get_refund('rfd_none')"), "PM204");
        assert_eq!(sqlstate(&format!("SELECT payments.list_refunds('{id}', 0)")), "PM100");
        assert_eq!(sqlstate("SELECT payments.list_refunds('pay_none')"), "PM204");
        assert_eq!(
            one::<i64>(&format!("SELECT count(*) FROM payments.verify_event_chain('{id}')")),
            0,
            "the refunds' steps keep the chain intact"
        );
    }

    #[pg_test]
    fn refund_webhooks_settle_refunds_and_take_in_refunds_made_at_the_provider() {
        add_secret(STRIPE_SECRET);
        let id = paid("rw1", "cust_rw", "pi_rw1");
        let refund = one::<String>(&format!("SELECT id FROM payments.create_refund('k1', '{id}', 4)"));
        let t = now_unix();
        let ours = format!(r#","metadata":{{"refund_id":"{refund}"}}"#);
        // Before the provider's answer: found by our id in metadata.
        let (b, s) = signed_event(
            "evt_r1",
            "refund.updated",
            &refund_object("re_a", "pi_rw1", 400, "succeeded", &ours),
            STRIPE_SECRET,
            t,
        );
        assert_eq!(ingest(&b, &s), "applied");
        assert_eq!(refunded(&id), "4.00 partial");
        // The provider made it: its command is done without asking again, and a late answer changes nothing.
        let command = refund_command(&refund);
        assert_eq!(
            one::<i64>(&format!("SELECT count(*) FROM payments.claim_provider_commands(10, '30 seconds', '{id}')")),
            0
        );
        one::<String>(&format!(
            "SELECT outcome FROM payments.record_command_result('{command}', true, 'pending', '{}')",
            refund_object("re_a", "pi_rw1", 400, "pending", "")
        ));
        assert_eq!(one::<String>(&format!("SELECT status FROM payments.get_refund('{refund}')")), "succeeded");
        assert_eq!(
            one::<String>(&format!("SELECT status FROM payments.provider_commands WHERE id = '{command}'")),
            "succeeded"
        );
        // The bank returns it: failed, and the payment shows nothing refunded.
        let failed = refund_object("re_a", "pi_rw1", 400, "failed", r#","failure_reason":"lost_or_stolen_card""#);
        let (b, s) = signed_event("evt_r2", "refund.failed", &failed, STRIPE_SECRET, t + 1);
        assert_eq!(ingest(&b, &s), "applied");
        assert_eq!(refunded(&id), "0.00 none");
        assert_eq!(
            one::<String>(&format!("SELECT failure_reason FROM payments.get_refund('{refund}')")),
            "lost_or_stolen_card"
        );
        // A refund made in the provider's dashboard arrives in a Charge's list and is taken in.
        let charge = format!(
            r#"{{"id":"ch_1","object":"charge","payment_intent":"pi_rw1","amount":1000,"currency":"usd","refunds":{{"object":"list","data":[{}]}}}}"#,
            refund_object("re_b", "pi_rw1", 200, "succeeded", "")
        );
        let (b, s) = signed_event("evt_r3", "charge.refunded", &charge, STRIPE_SECRET, t + 2);
        assert_eq!(ingest(&b, &s), "applied");
        assert_eq!(refunded(&id), "2.00 partial");
        assert_eq!(
            one::<String>(&format!("SELECT idempotency_key IS NULL || ' ' || provider_refund_id FROM payments.refunds WHERE payment_id = '{id}' AND provider_refund_id = 're_b'")),
            "true re_b"
        );
        // More than is left, or another currency: anomalies, never refunds.
        let (b, s) = signed_event(
            "evt_r4",
            "refund.created",
            &refund_object("re_c", "pi_rw1", 900, "succeeded", ""),
            STRIPE_SECRET,
            t + 3,
        );
        assert_eq!(ingest(&b, &s), "mismatch");
        let yen = refund_object("re_d", "pi_rw1", 100, "succeeded", "").replace("usd", "jpy");
        let (b, s) = signed_event("evt_r5", "refund.created", &yen, STRIPE_SECRET, t + 4);
        assert_eq!(ingest(&b, &s), "mismatch");
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(kind, ',' ORDER BY created_at) FROM payments.anomalies WHERE payment_id = '{id}'"
            )),
            "amount_mismatch,currency_mismatch"
        );
        assert_eq!(refunded(&id), "2.00 partial");
        // About a payment that is not ours: kept in the log, moves nothing.
        let (b, s) = signed_event(
            "evt_r6",
            "refund.created",
            &refund_object("re_e", "pi_unknown", 100, "succeeded", ""),
            STRIPE_SECRET,
            t,
        );
        assert_eq!(ingest(&b, &s), "ignored");
        assert_eq!(ingest(&b, &s), "duplicate");
        assert_eq!(one::<i64>(&format!("SELECT count(*) FROM payments.verify_event_chain('{id}')")), 0);
    }

    /// An event of the provider-neutral format for provider `neutral_bank`, signed with Standard Webhooks.
    fn ingest_neutral(id: &str, data: &str, secret: &str) -> String {
        let t = now_unix();
        let body = format!(r#"{{"id":"{id}","type":"adapter.update","created":{t},"data":{data}}}"#);
        let sig = payments_core::webhook::standard::sign(secret, id, t, body.as_bytes()).unwrap();
        result_or_sqlstate(&format!(
            "SELECT payments.ingest_webhook('neutral_bank', jsonb_build_object('webhook-id', {}, 'webhook-timestamp', '{t}', \
             'webhook-signature', {}), convert_to({}, 'UTF8'))",
            quote(id),
            quote(&sig),
            quote(&body)
        ))
    }

    #[pg_test]
    fn a_provider_without_a_module_of_its_own_speaks_the_neutral_format_through_the_same_sql() {
        // The seam: nothing in SQL names a provider's JSON. A provider recorded as neutral_*
        // sends evidence records in our words, and every check of Stripe's objects holds for it.
        let secret = one::<String>("SELECT payments._new_webhook_secret()");
        one::<String>(&format!("SELECT payments.add_webhook_secret('neutral_bank', 'standard', {})", quote(&secret)));
        let id = one::<String>("SELECT id FROM payments.create_payment('nb1', 'cust_nb', 10, 'usd', 'pm_x')");
        // Linked by our id, then paid; the evidence's money is checked as Stripe's is.
        let paid = format!(
            r#"{{"kind":"payment","id":"bank_1","status":"succeeded","amount":1000,"currency":"usd","amount_received":1000,"our_id":"{id}"}}"#
        );
        assert_eq!(ingest_neutral("ev_1", &paid, &secret), "applied");
        assert_eq!(
            one::<String>(&format!(
                "SELECT status || ' ' || provider || ' ' || provider_payment_id FROM payments.get_payment('{id}')"
            )),
            "succeeded neutral_bank bank_1"
        );
        assert_eq!(ingest_neutral("ev_1", &paid, &secret), "duplicate");
        // A refund made at the bank, then one for more than is left: taken in, then an anomaly.
        let refund = r#"{"kind":"refund","id":"bank_r1","provider_payment_id":"bank_1","status":"succeeded","amount":400,"currency":"usd"}"#;
        assert_eq!(ingest_neutral("ev_2", refund, &secret), "applied");
        assert_eq!(refunded(&id), "4.00 partial");
        let too_much = refund.replace("bank_r1", "bank_r2").replace("400", "700");
        assert_eq!(ingest_neutral("ev_3", &too_much, &secret), "mismatch");
        assert_eq!(
            one::<String>(&format!(
                "SELECT kind || ' ' || (observed ->> 'provider_payment_id') || ' ' || (observed ->> 'amount') \
                 FROM payments.anomalies WHERE payment_id = '{id}'"
            )),
            "amount_mismatch bank_1 700",
            "the anomaly keeps the evidence in our words"
        );
        // A dispute, and a status that is not ours (Stripe's word): no status, nothing moves.
        let dispute = r#"{"kind":"dispute","id":"bank_d1","provider_payment_id":"bank_1","status":"needs_response","amount":600,"currency":"usd","reason":"fraudulent","due_by":1900000000}"#;
        assert_eq!(ingest_neutral("ev_4", dispute, &secret), "applied");
        assert_eq!(
            one::<String>(&format!(
                "SELECT status || ' ' || amount_minor || ' ' || (evidence_due_by = to_timestamp(1900000000)) \
                 FROM payments.disputes WHERE payment_id = '{id}'"
            )),
            "needs_response 600 true"
        );
        let stripe_word = r#"{"kind":"refund","id":"bank_r3","provider_payment_id":"bank_1","status":"requires_action","amount":100,"currency":"usd"}"#;
        assert_eq!(ingest_neutral("ev_5", stripe_word, &secret), "ignored");
        // Another provider's event shape is no neutral event; a signature by no secret of its, PM301.
        assert_eq!(ingest_neutral("ev_6", r#""pi_1""#, &secret), "ignored");
        assert_eq!(
            ingest_neutral("ev_7", paid.as_str(), &one::<String>("SELECT payments._new_webhook_secret()")),
            "PM301"
        );
        assert_eq!(one::<i64>(&format!("SELECT count(*) FROM payments.verify_event_chain('{id}')")), 0);
    }

    #[pg_test]
    fn the_evidence_record_is_the_same_whichever_format_it_comes_from() {
        let stripe = one::<pgrx::JsonB>(
            r#"SELECT payments._provider_object('stripe', NULL, '{"id":"re_1","object":"refund","payment_intent":"pi_1","status":"requires_action","amount":400,"currency":"usd","metadata":{"refund_id":"rfd_1"},"reason":"duplicate"}')"#,
        );
        let neutral = one::<pgrx::JsonB>(
            r#"SELECT payments._provider_object('neutral', NULL, '{"kind":"refund","id":"re_1","provider_payment_id":"pi_1","status":"pending","amount":400,"currency":"usd","our_id":"rfd_1","reason":"duplicate"}')"#,
        );
        assert_eq!(stripe.0, neutral.0);
        assert_eq!(stripe.0["status"], "pending", "Stripe's requires_action, in our words");
        // Secrets never stored: Stripe's client_secret, also inside a decline.
        assert_eq!(
            one::<String>(
                r#"SELECT payments._provider_redacted('stripe', '{"id":"pi_1","client_secret":"s","error":{"payment_intent":{"client_secret":"s","id":"pi_1"}}}')::text"#
            ),
            r#"{"id": "pi_1", "error": {"payment_intent": {"id": "pi_1"}}}"#
        );
        assert!(one::<bool>(
            "SELECT payments._provider_object('stripe', 'refund', '{\"object\":\"payment_intent\"}') IS NULL"
        ));
        assert_eq!(
            one::<String>("SELECT payments._provider_event('stripe', convert_to('[]', 'UTF8')) ->> 'error'"),
            "webhook body is not a JSON object"
        );
    }

    fn dispute_object(dp: &str, pi: &str, amount: i64, status: &str) -> String {
        format!(
            r#"{{"id":"{dp}","object":"dispute","amount":{amount},"currency":"usd","payment_intent":"{pi}","status":"{status}","reason":"fraudulent","evidence_details":{{"due_by":1900000000}}}}"#
        )
    }

    #[pg_test]
    fn dispute_webhooks_open_move_and_close_disputes() {
        add_secret(STRIPE_SECRET);
        let id = paid("dw1", "cust_dw", "pi_dw1");
        let t = now_unix();
        let disputed = |dp: &str, ty: &str, status: &str, amount: i64, at: i64| {
            let (b, s) = signed_event(
                &format!("evt_{dp}_{status}_{at}"),
                ty,
                &dispute_object(dp, "pi_dw1", amount, status),
                STRIPE_SECRET,
                at,
            );
            ingest(&b, &s)
        };
        let shown =
            || one::<String>(&format!("SELECT disputed || ' ' || amount_disputed FROM payments.get_payment('{id}')"));
        assert_eq!(disputed("dp_1", "charge.dispute.created", "needs_response", 1000, t), "applied");
        assert_eq!(shown(), "true 10.00");
        let dispute = one::<String>(&format!("SELECT id FROM payments.list_disputes('{id}')"));
        assert_eq!(
            one::<String>(&format!("SELECT status || ' ' || amount || ' ' || reason || ' ' || evidence_due_by FROM payments.get_dispute('{dispute}')")),
            "needs_response 10.00 fraudulent 2030-03-17 17:46:40+00"
        );
        assert_eq!(disputed("dp_1", "charge.dispute.updated", "under_review", 1000, t + 1), "applied");
        assert_eq!(disputed("dp_1", "charge.dispute.closed", "won", 1000, t + 2), "applied");
        assert_eq!(shown(), "false 0.00");
        // Late news of an earlier step is stale; a dispute for more than was captured is an anomaly.
        assert_eq!(disputed("dp_1", "charge.dispute.updated", "needs_response", 1000, t - 1), "stale");
        assert_eq!(disputed("dp_2", "charge.dispute.created", "needs_response", 5000, t), "mismatch");
        assert_eq!(disputed("dp_3", "charge.dispute.created", "lost", 400, t), "applied");
        assert_eq!(shown(), "true 4.00");
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.list_disputes(status => 'won')"), 1);
        assert_eq!(sqlstate("SELECT payments.get_dispute('dsp_none')"), "PM204");
        assert_eq!(sqlstate("SELECT payments.list_disputes(status => 'open')"), "PM100");
        assert_eq!(sqlstate("SELECT payments.list_disputes(lim => 101)"), "PM100");
        assert_eq!(
            one::<String>(&format!("SELECT string_agg(reason, ',' ORDER BY seq) FROM payments.payment_events WHERE payment_id = '{id}' AND reason LIKE '%dispute%'")),
            "dispute needs_response,dispute under_review,dispute won,stale: dispute won does not move to needs_response,dispute lost"
        );
    }

    #[pg_test]
    fn balances_add_up_captures_refunds_and_disputes_per_currency_and_customer() {
        add_secret(STRIPE_SECRET);
        let a = paid("bl1", "cust_bl", "pi_bl1");
        paid("bl2", "cust_bl", "pi_bl2");
        let refund = one::<String>(&format!("SELECT id FROM payments.create_refund('k1', '{a}', 2.50)"));
        one::<String>(&format!(
            "SELECT outcome FROM payments.record_command_result('{}', true, 'succeeded', '{}')",
            refund_command(&refund),
            refund_object("re_bl", "pi_bl1", 250, "succeeded", "")
        ));
        let (b, s) = signed_event(
            "evt_bl",
            "charge.dispute.created",
            &dispute_object("dp_bl", "pi_bl2", 1000, "needs_response"),
            STRIPE_SECRET,
            now_unix(),
        );
        assert_eq!(ingest(&b, &s), "applied");
        let expected = "2 20.00 2.50 10.00 7.50 750";
        assert_eq!(
            one::<String>("SELECT captured_count || ' ' || gross_captured || ' ' || refunded || ' ' || disputed || ' ' || net || ' ' || net_minor FROM payments.customer_balances WHERE customer_id = 'cust_bl'"),
            expected
        );
        // The currency's totals are every customer's (a database may hold others' payments).
        assert_eq!(
            one::<String>("SELECT captured_count || ' ' || gross_captured || ' ' || refunded || ' ' || disputed || ' ' || net || ' ' || net_minor FROM payments.balance_by_currency WHERE currency = 'USD'"),
            one::<String>("SELECT sum(captured_count) || ' ' || sum(gross_captured) || ' ' || sum(refunded) || ' ' || sum(disputed) || ' ' || sum(net) || ' ' || sum(net_minor) FROM payments.customer_balances WHERE currency = 'USD'")
        );
        attempt("SELECT 1");
        Spi::run("SET LOCAL ROLE payments_reader").unwrap();
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.refund_details"), 1);
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.dispute_details"), 1);
        assert_eq!(
            sqlstate("SELECT fingerprint FROM payments.refunds"),
            "42501",
            "idempotency fingerprints stay private"
        );
        assert_eq!(sqlstate("SELECT idempotency_key FROM payments.refunds"), "42501");
        assert_eq!(sqlstate(&format!("SELECT payments.create_refund('k2', '{a}')")), "42501");
        Spi::run("RESET ROLE").unwrap();
    }

    #[pg_test]
    fn a_reconciliation_report_names_each_disagreement_and_repair_settles_statuses() {
        let missed = paid("rc1", "cust_rc", "pi_rc1");
        // Ours still processing at the provider's success: a missed webhook.
        Spi::run(&format!(
            "UPDATE payments.payments SET status = 'processing', amount_captured_minor = NULL WHERE id = '{missed}'"
        ))
        .unwrap();
        let t = now_unix();
        let objects = format!(
            r#"[{},{},{}]"#,
            intent("pi_rc1", 1000, &format!(r#","status":"succeeded","created":{t}"#)),
            intent("pi_rc_other", 500, &format!(r#","status":"succeeded","created":{t}"#)),
            refund_object("re_rc", "pi_rc1", 100, "succeeded", &format!(r#","created":{t}"#))
        );
        assert_eq!(one::<i32>(&format!("SELECT payments.record_provider_snapshot('stripe', '{objects}')")), 3);
        assert_eq!(
            one::<i32>(&format!("SELECT payments.record_provider_snapshot('stripe', '{objects}')")),
            3,
            "replaced"
        );
        let report = "SELECT string_agg(kind || ':' || provider_object_id, ',' ORDER BY kind, provider_object_id)
                      FROM payments.reconciliation_report(now() - interval '1 hour', now() + interval '1 hour', 'stripe')";
        assert_eq!(one::<String>(report), "missed_success:pi_rc1,unknown_to_us:pi_rc_other,unknown_to_us:re_rc");
        let run = one::<pgrx::JsonB>(
            "SELECT payments.reconcile(now() - interval '1 hour', now() + interval '1 hour', 'stripe', true)",
        );
        assert_eq!(run.0["repaired"], 2, "{}", run.0);
        assert_eq!(refunded(&missed), "1.00 partial");
        assert_eq!(one::<String>(report), "unknown_to_us:pi_rc_other");
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.reconciliation_runs WHERE provider = 'stripe'"), 1);
        assert_eq!(sqlstate("UPDATE payments.reconciliation_runs SET repaired = 0"), "PM205");
        // Bad windows and objects are refused.
        assert_eq!(sqlstate("SELECT * FROM payments.reconciliation_report(now(), now())"), "PM100");
        assert_eq!(sqlstate("SELECT payments.record_provider_snapshot('stripe', '{}')"), "PM100");
        assert_eq!(
            one::<i32>(
                r#"SELECT payments.record_provider_snapshot('stripe', '[{"object":"refund","id":"re_1","created":1}]')"#
            ),
            0,
            "a refund of a charge without a PaymentIntent cannot be ours"
        );
        assert_eq!(sqlstate("SELECT payments.reconcile(now(), now() + interval '1 day', NULL)"), "PM100");
    }

    #[pg_test]
    fn usage_counts_each_key_once_and_adds_up_by_the_meters_aggregation() {
        for (code, aggregation, property) in [
            ("calls", "sum", "NULL"),
            ("runs", "count", "NULL"),
            ("users", "count_unique", "'user_id'"),
            ("peak", "max", "NULL"),
            ("seats", "last", "NULL"),
        ] {
            one::<String>(&format!("SELECT code FROM payments.create_meter('{code}', '{aggregation}', {property})"));
        }
        assert_eq!(
            one::<String>("SELECT aggregation FROM payments.create_meter('calls', 'sum')"),
            "sum",
            "again: the same"
        );
        assert_eq!(sqlstate("SELECT payments.create_meter('calls', 'max')"), "PM201");
        assert_eq!(sqlstate("SELECT payments.create_meter('Bad Code', 'sum')"), "PM100");
        assert_eq!(sqlstate("SELECT payments.create_meter('x', 'median')"), "PM100");
        assert_eq!(sqlstate("SELECT payments.create_meter('y', 'count_unique')"), "PM100");

        let record = |key: &str, meter: &str, quantity: &str, extra: &str| {
            attempt(&format!(
                "SELECT outcome FROM payments.record_usage('{key}', 'cust_u', '{meter}', {quantity}{extra})"
            ))
        };
        assert_eq!(record("k1", "calls", "2.5", ""), "ok:created");
        assert_eq!(record("k1", "calls", "2.5", ""), "ok:replayed", "a retry counts once");
        assert!(record("k1", "calls", "3", "").starts_with("PM201"), "the key with another event");
        assert_eq!(record("k2", "calls", "4", ", now() - interval '1 day'"), "ok:created");
        assert!(record("k3", "calls", "1", ", now() + interval '1 hour'").starts_with("PM100"));
        assert!(record("k3", "calls", "1", ", now() - interval '36 days'").starts_with("PM100"));
        assert!(record("k3", "calls", "-1", "").starts_with("PM100"));
        assert!(record("k3", "nope", "1", "").starts_with("PM204"));
        assert!(record("k3", "users", "1", "").starts_with("PM100"), "count_unique needs its property");
        for (i, user) in ["a", "b", "a"].iter().enumerate() {
            let props = format!(r#", properties => '{{"user_id": "{user}"}}'"#);
            assert_eq!(record(&format!("u{i}"), "users", "1", &props), "ok:created");
            assert_eq!(record(&format!("r{i}"), "runs", "7", ""), "ok:created");
            assert_eq!(record(&format!("p{i}"), "peak", &(i * 10 + 5).to_string(), ""), "ok:created");
            assert_eq!(
                record(&format!("s{i}"), "seats", &(3 - i).to_string(), &format!(", now() - interval '{i} minutes'")),
                "ok:created"
            );
        }
        let summary = |meter: &str| {
            one::<String>(&format!(
                "SELECT value || ' ' || event_count FROM payments.usage_summary('cust_u', '{meter}', now() - interval '2 days', now() + interval '1 minute')"
            ))
        };
        assert_eq!(summary("calls"), "6.5 2");
        assert_eq!(summary("runs"), "3 3");
        assert_eq!(summary("users"), "2 3");
        assert_eq!(summary("peak"), "25 3");
        assert_eq!(summary("seats"), "3 3", "the latest event's quantity");
        assert_eq!(
            sqlstate("SELECT * FROM payments.usage_summary('cust_u', 'nope', now(), now() + interval '1 day')"),
            "PM204"
        );
        assert_eq!(sqlstate("SELECT * FROM payments.usage_summary('cust_u', 'calls', now(), now())"), "PM100");

        let batch = one::<pgrx::JsonB>(
            r#"SELECT payments.record_usage_batch('[{"idempotency_key":"k1","customer_id":"cust_u","meter":"calls","quantity":2.5},
                                                   {"idempotency_key":"k9","customer_id":"cust_u","meter":"calls","quantity":"1"},
                                                   {"idempotency_key":"k8","customer_id":"cust_u","meter":"calls","quantity":"x"},
                                                   {"idempotency_key":"k7","customer_id":"cust_u","meter":"nope","quantity":1}]')"#,
        );
        let results: Vec<String> = batch
            .0
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r["outcome"]
                    .as_str()
                    .map_or_else(|| r["error"]["sqlstate"].as_str().unwrap().to_string(), str::to_string)
            })
            .collect();
        assert_eq!(results, ["replayed", "created", "22P02", "PM204"]);
        assert_eq!(summary("calls"), "7.5 3");
        assert_eq!(sqlstate("SELECT payments.record_usage_batch('[]')"), "PM100");
        assert_eq!(sqlstate("UPDATE payments.usage_events SET quantity = 0"), "PM205");
        attempt("SELECT 1");
        Spi::run("SET LOCAL ROLE payments_reader").unwrap();
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.usage_log WHERE customer_id = 'cust_u'"), 15);
        assert_eq!(sqlstate("SELECT fingerprint FROM payments.usage_events"), "42501");
        assert_eq!(sqlstate("SELECT payments.record_usage('k', 'c', 'calls', 1)"), "42501");
        Spi::run("RESET ROLE").unwrap();
    }

    /// A batch covering every answer an event can get, for customers `{c}_1` and `{c}_2`.
    fn every_kind_of_usage_event(c: &str) -> String {
        let recent = one::<String>("SELECT to_char(now() - interval '1 hour', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')");
        format!(
            r#"[{{"idempotency_key":"a","customer_id":"{c}_1","meter":"b_calls","quantity":2.5}},
                {{"idempotency_key":"a","customer_id":"{c}_1","meter":"b_calls","quantity":2.5}},
                {{"idempotency_key":"b","customer_id":"{c}_1","meter":"b_calls","quantity":"1","occurred_at":"{recent}"}},
                {{"idempotency_key":"b","customer_id":"{c}_1","meter":"b_calls","quantity":"2","occurred_at":"{recent}"}},
                {{"idempotency_key":"c","customer_id":"{c}_2","meter":"b_users","quantity":1,"properties":{{"user":"x"}}}},
                {{"idempotency_key":"d","customer_id":"{c}_2","meter":"b_users","quantity":1}},
                {{"idempotency_key":"e","customer_id":"{c}_2","meter":"nope","quantity":1}},
                {{"idempotency_key":"f","customer_id":"{c}_2","meter":"b_calls","quantity":-1}},
                {{"idempotency_key":"g","customer_id":"{c}_2","meter":"b_calls","quantity":1,"occurred_at":"2020-01-01T00:00:00Z"}},
                {{"idempotency_key":"","customer_id":"{c}_2","meter":"b_calls","quantity":1}},
                {{"idempotency_key":"h","customer_id":"{c}_2","meter":"b_calls","quantity":1,"properties":[1]}},
                {{"idempotency_key":"i","customer_id":"{c}_2","meter":"b_calls"}},
                {{"idempotency_key":"j","customer_id":"{c}_2","meter":"b_calls","quantity":true}},
                7,
                {{"idempotency_key":"old","customer_id":"{c}_2","meter":"b_calls","quantity":4}},
                {{"idempotency_key":"old2","customer_id":"{c}_2","meter":"b_calls","quantity":5}}]"#
        )
    }

    #[pg_test]
    fn a_batch_is_recorded_set_based_with_the_answers_of_the_one_by_one_path() {
        one::<String>("SELECT code FROM payments.create_meter('b_calls', 'sum')");
        one::<String>("SELECT code FROM payments.create_meter('b_users', 'count_unique', 'user')");
        for c in ["each", "set"] {
            // Keys recorded before: one replayed by the batch, one reused for another event.
            one::<String>(&format!("SELECT outcome FROM payments.record_usage('old', '{c}_2', 'b_calls', 4)"));
            one::<String>(&format!("SELECT outcome FROM payments.record_usage('old2', '{c}_2', 'b_calls', 6)"));
        }
        // Without ids (new ones differ): every answer and message, event by event.
        let answers = |path: &str, c: &str| {
            one::<String>(&format!(
                "SELECT string_agg(coalesce(r ->> 'outcome', (r -> 'error') ->> 'sqlstate') || ' ' || \
                 coalesce((r -> 'error') ->> 'message', ''), ' | ' ORDER BY (r ->> 'index')::int) \
                 FROM jsonb_array_elements(payments.{path}({})) r",
                quote(&every_kind_of_usage_event(c))
            ))
        };
        one::<i64>("SELECT count(*) FROM (SELECT set_config('track_functions', 'all', true)) s");
        let each = answers("_record_usage_each", "each");
        let set = answers("record_usage_batch", "set");
        assert_eq!(set, each);
        assert!(
            each.starts_with("created  | replayed  | created  | PM201 idempotency key 'b' was already used"),
            "{each}"
        );
        assert_eq!(
            one::<i64>(
                "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_xact_user_functions WHERE funcname = '_record_usage_each'"
            ),
            1,
            "the batch was recorded set-based (only the comparison went one by one)"
        );
        // The same rows and running totals either way.
        let totals = |c: &str| {
            one::<String>(&format!(
                "SELECT string_agg(customer_id || ' ' || meter || ' ' || q || ' ' || n, ', ' ORDER BY customer_id, meter) FROM \
                 (SELECT replace(customer_id, '{c}', '') AS customer_id, meter, sum(quantity) AS q, sum(events) AS n \
                  FROM payments.usage_daily WHERE customer_id LIKE '{c}\\_%' GROUP BY 1, 2) d"
            ))
        };
        assert_eq!(totals("set"), totals("each"));
        assert_eq!(totals("set"), "_1 b_calls 3.5 2, _2 b_calls 10 2, _2 b_users 1 1");
        // A customer whose plan prices the meter by volume goes one by one: the bound must hold
        // after each event, and a volume price can fall as usage grows.
        one::<String>("SELECT code FROM payments.create_meter('b_vol', 'sum')");
        one::<String>(
            r#"SELECT code FROM payments.create_plan('b_vol_plan', 'usd', 0, 'month', metered => '[{"meter": "b_vol",
               "price": {"mode": "volume", "tiers": [{"up_to": 5, "unit_amount_minor": 500}, {"up_to": null, "unit_amount_minor": 400}]}}]')"#,
        );
        one::<String>("SELECT id FROM payments.create_subscription('b_vol_sub', 'vol_1', 'b_vol_plan')");
        let volume = r#"[{"idempotency_key":"v1","customer_id":"vol_1","meter":"b_vol","quantity":6}]"#;
        assert_eq!(
            one::<String>(&format!("SELECT payments.record_usage_batch({}) -> 0 ->> 'outcome'", quote(volume))),
            "created"
        );
        assert_eq!(
            one::<i64>("SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_xact_user_functions WHERE funcname = '_record_usage_each'"),
            2,
            "the volume-priced batch went one by one"
        );
        // A value PostgreSQL might refuse hands the whole batch to the one-by-one path, which says what it refused.
        let odd = r#"[{"idempotency_key":"z1","customer_id":"set_3","meter":"b_calls","quantity":"1,5"},
                      {"idempotency_key":"z2","customer_id":"set_3","meter":"b_calls","quantity":1,"occurred_at":"yesterday-ish"},
                      {"idempotency_key":"z3","customer_id":"set_3","meter":"b_calls","quantity":1}]"#;
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(coalesce(r ->> 'outcome', (r -> 'error') ->> 'sqlstate'), ' ' ORDER BY (r ->> 'index')::int) \
                 FROM jsonb_array_elements(payments.record_usage_batch({})) r",
                quote(odd)
            )),
            "22P02 22007 created"
        );
    }

    #[pg_test]
    fn a_limit_split_into_slots_is_kept_exactly_and_follows_plan_changes() {
        for (plan, limit) in [("esc10", "10"), ("esc15", "15"), ("esc12", "12"), ("escfree", "null")] {
            one::<String>(&format!(
                "SELECT code FROM payments.create_plan('{plan}', 'usd', 0, 'month', features => '{{\"tokens\": {limit}}}')"
            ));
        }
        let sub = one::<String>("SELECT id FROM payments.create_subscription('esc', 'cust_esc', 'esc10')");
        let consume = |request: &str, quantity: &str| {
            one::<String>(&format!(
                "SELECT outcome || ' ' || coalesce(remaining::text, '-') FROM payments.consume('cust_esc', 'tokens', {quantity}, '{request}')"
            ))
        };
        // What the slots may count in all is the limit, whatever they counted.
        let split = || {
            one::<String>(
                "SELECT sum(used) || ' of ' || coalesce(sum(allowance)::text, '-') FROM payments.feature_usage \
                 WHERE customer_id = 'cust_esc'",
            )
        };
        let answers: Vec<String> = (0..4).map(|i| consume(&format!("a{i}"), "2.5")).collect();
        assert_eq!(answers, ["consumed 7.5", "consumed 5.0", "consumed 2.5", "consumed 0.0"]);
        assert_eq!(consume("a4", "0.1"), "refused 0.0");
        assert_eq!(split(), "10.0 of 10.0");
        // A bigger limit: what is left grows by the difference, split again.
        one::<String>(&format!("SELECT plan FROM payments.change_plan('{sub}', 'esc15')"));
        assert_eq!(consume("b1", "5"), "consumed 0.0");
        assert_eq!(consume("b2", "1"), "refused 0.0");
        assert_eq!(split(), "15.0 of 15.0");
        // A smaller one than was used: nothing more, and the answer says how far over it is.
        one::<String>(&format!("SELECT plan FROM payments.change_plan('{sub}', 'esc12')"));
        assert_eq!(consume("c1", "1"), "refused -3.0");
        // Unlimited: counted, with no allowance left to keep.
        one::<String>(&format!("SELECT plan FROM payments.change_plan('{sub}', 'escfree')"));
        assert_eq!(consume("d1", "100"), "consumed -");
        assert_eq!(
            one::<String>("SELECT used::text FROM payments.entitlements('cust_esc') WHERE feature = 'tokens'"),
            "115.0"
        );
        assert_eq!(consume("d1", "100"), "replayed -", "a retry counts nothing");
        // A subscription that no longer grants (canceled at its period's end, asked after it)
        // answers no_entitlement, with no limit to tell of.
        let ending = one::<String>("SELECT id FROM payments.create_subscription('esc-end', 'cust_end', 'esc10')");
        one::<String>(&format!("SELECT status FROM payments.cancel_subscription('{ending}', at_period_end => true)"));
        assert_eq!(
            one::<String>(
                "SELECT outcome || ' ' || reason || ' ' || coalesce(remaining::text, '-') \
                 FROM payments.consume('cust_end', 'tokens', 1, 'e1', now() + interval '40 days')"
            ),
            "refused no_entitlement -"
        );
    }

    #[pg_test]
    fn plans_and_subscriptions_grant_features_and_consume_never_passes_a_limit() {
        let plan = "SELECT code FROM payments.create_plan('pro', 'usd', 49.99, 'month', features => '{\"calls\": 10, \"export\": null}')";
        assert_eq!(one::<String>(plan), "pro");
        assert_eq!(one::<String>(plan), "pro", "the same plan again");
        assert_eq!(sqlstate("SELECT payments.create_plan('pro', 'usd', 59, 'month')"), "PM201");
        assert_eq!(sqlstate("SELECT payments.create_plan('x', 'usd', 1, 'fortnight')"), "PM100");
        assert_eq!(sqlstate("SELECT payments.create_plan('x', 'usd', 1.001, 'month')"), "PM101");
        assert_eq!(
            sqlstate("SELECT payments.create_plan('x', 'usd', 1, 'month', features => '{\"calls\": -1}')"),
            "PM100"
        );
        one::<String>("SELECT code FROM payments.create_plan('free', 'usd', 0, 'month', features => '{\"calls\": 2}')");
        one::<String>("SELECT code FROM payments.create_plan('old', 'usd', 0, 'year')");
        assert!(one::<bool>("SELECT payments.archive_plan('old')"));
        assert_eq!(sqlstate("SELECT payments.create_subscription('k0', 'cust_s', 'old')"), "PM206");
        assert_eq!(sqlstate("SELECT payments.create_subscription('k0', 'cust_s', 'nope')"), "PM204");

        let t0 = "'2026-01-31 12:00+00'::timestamptz";
        let create = format!("SELECT id || ' ' || status || ' ' || outcome || ' ' || current_period_end FROM payments.create_subscription('k1', 'cust_s', 'pro', 'pm_card_visa', trial_days => 14, at => {t0})");
        let made = one::<String>(&create);
        let sub = made.split(' ').next().unwrap().to_string();
        assert_eq!(made, format!("{sub} trialing created 2026-02-14 12:00:00+00"));
        assert!(one::<String>(&create).contains("replayed"), "a retry is the same subscription");
        assert_eq!(sqlstate("SELECT payments.create_subscription('k1', 'cust_s', 'free')"), "PM201");
        let paid = format!("SELECT status || ' ' || current_period_end FROM payments.create_subscription('k2', 'cust_p', 'pro', at => {t0}, trial_days => 0)");
        assert_eq!(one::<String>(&paid), "incomplete 2026-02-28 12:00:00+00", "a month after January 31");
        assert_eq!(one::<String>("SELECT status FROM payments.create_subscription('k3', 'cust_f', 'free')"), "active");

        let active = |customer: &str, at: &str| {
            one::<bool>(&format!("SELECT payments.has_active_subscription('{customer}', at => {at})"))
        };
        assert!(active("cust_s", t0));
        assert!(!active("cust_s", "'2026-03-01'::timestamptz"), "the trial is over");
        assert!(!active("cust_p", t0), "incomplete grants nothing");
        assert!(active("cust_f", "now()"));
        assert!(!one::<bool>("SELECT payments.has_active_subscription('cust_s', 'free', now())"));

        let consume = |request: &str, quantity: &str| {
            one::<String>(&format!(
                "SELECT allowed || ' ' || coalesce(remaining::text, '-') || ' ' || outcome || coalesce(' ' || reason, '')
                 FROM payments.consume('cust_s', 'calls', {quantity}, '{request}', {t0})"
            ))
        };
        assert_eq!(consume("r1", "4"), "true 6 consumed");
        assert_eq!(consume("r1", "4"), "true 6 replayed", "a retry counts nothing");
        assert_eq!(consume("r2", "7"), "false 6 refused limit_exceeded");
        assert_eq!(consume("r2", "7"), "false 6 replayed limit_exceeded", "the first answer");
        assert_eq!(
            sqlstate(&format!("SELECT payments.consume('cust_s', 'calls', 1, 'r2', {t0})")),
            "PM201",
            "the same request id for another request"
        );
        assert_eq!(consume("r3", "6"), "true 0 consumed");
        assert_eq!(
            one::<String>(&format!("SELECT allowed || ' ' || coalesce(remaining::text, '-') FROM payments.consume('cust_s', 'export', 1000, 'r4', {t0})")),
            "true -",
            "null: unlimited"
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT outcome || ' ' || reason FROM payments.consume('cust_s', 'video', 1, 'r5', {t0})"
            )),
            "refused no_entitlement"
        );
        assert_eq!(
            one::<String>("SELECT outcome || ' ' || reason FROM payments.consume('cust_p', 'calls', 1, 'r1')"),
            "refused no_entitlement",
            "incomplete grants nothing"
        );
        assert_eq!(sqlstate("SELECT payments.consume('cust_s', 'calls', 0, 'r6')"), "PM100");
        assert_eq!(
            one::<String>(&format!("SELECT string_agg(feature || ':' || coalesce(\"limit\"::text, '-') || ':' || used || ':' || coalesce(remaining::text, '-'), ',') FROM payments.entitlements('cust_s', {t0})")),
            "calls:10:10:0,export:-:1000:-"
        );

        // Paused grants nothing; resumed in the trial, trialing again; canceled at period end, usable until then.
        assert_eq!(one::<String>(&format!("SELECT status FROM payments.pause_subscription('{sub}')")), "paused");
        assert_eq!(one::<String>(&format!("SELECT outcome FROM payments.pause_subscription('{sub}')")), "noop");
        assert!(!active("cust_s", t0));
        assert_eq!(
            one::<String>(&format!("SELECT status FROM payments.resume_subscription('{sub}', {t0})")),
            "trialing"
        );
        assert_eq!(sqlstate(&format!("SELECT payments.resume_subscription('{sub}')")), "PM206");
        assert_eq!(
            one::<String>(&format!(
                "SELECT status || ' ' || cancel_at_period_end FROM payments.cancel_subscription('{sub}')"
            )),
            "trialing true"
        );
        assert!(active("cust_s", t0));
        assert_eq!(
            one::<String>(&format!("SELECT status FROM payments.cancel_subscription('{sub}', at_period_end => false)")),
            "canceled"
        );
        assert!(!active("cust_s", t0));
        assert_eq!(sqlstate("SELECT payments.cancel_subscription('sub_none')"), "PM204");
        assert_eq!(
            one::<String>(&format!("SELECT string_agg(reason, ',' ORDER BY seq) FROM payments.subscription_events WHERE subscription_id = '{sub}'")),
            "created,paused,resumed,cancel at period end,canceled"
        );
        assert_eq!(sqlstate("DELETE FROM payments.consumptions"), "PM205");
    }

    #[pg_test]
    fn customer_has_paid_counts_succeeded_payments_not_refunded_in_full() {
        assert!(!one::<bool>("SELECT payments.customer_has_paid('cust_hp')"));
        let id = paid("hp1", "cust_hp", "pi_hp1");
        assert!(one::<bool>("SELECT payments.customer_has_paid('cust_hp')"));
        assert!(!one::<bool>("SELECT payments.customer_has_paid('cust_hp', now() + interval '1 day')"));
        let refund = one::<String>(&format!("SELECT id FROM payments.create_refund('k', '{id}')"));
        one::<String>(&format!(
            "SELECT outcome FROM payments.record_command_result('{}', true, 'succeeded', '{}')",
            refund_command(&refund),
            refund_object("re_hp", "pi_hp1", 1000, "succeeded", "")
        ));
        assert!(!one::<bool>("SELECT payments.customer_has_paid('cust_hp')"), "refunded in full");
    }

    /// The invoice of a subscription's period: (id, status, number, payment id).
    fn invoice_of(sub: &str, period: i32) -> (String, String, String, String) {
        let row = one::<String>(&format!(
            "SELECT id || ' ' || status || ' ' || number || ' ' || coalesce(payment_id, '-') FROM payments.invoices
             WHERE subscription_id = '{sub}' AND period_number = {period} AND kind = 'period'"
        ));
        let p: Vec<&str> = row.split(' ').collect();
        (p[0].into(), p[1].into(), p[2].into(), p[3].into())
    }

    /// What the provider answers for an invoice's payment (the reconciler records it so).
    fn settle(payment: &str, pi: &str, amount_minor: i64, status: &str) {
        let object = if status == "succeeded" {
            intent(pi, amount_minor, "")
        } else {
            intent(
                pi,
                amount_minor,
                r#","status":"requires_payment_method","last_payment_error":{"code":"card_declined"}"#,
            )
        };
        one::<String>(&format!(
            "SELECT outcome FROM payments.record_provider_result('{payment}', 'stripe', '{pi}', '{status}', '{object}')"
        ));
    }

    /// Renewals finalized at once (no draft window): for tests of what follows a renewal's
    /// charge; drafts have tests of their own.
    fn renewals_final_at_once() {
        Spi::run("SELECT payments.set_invoice_drafts('0')").unwrap();
    }

    fn sub_status(sub: &str) -> String {
        one::<String>(&format!("SELECT status || ' ' || period_number FROM payments.subscriptions WHERE id = '{sub}'"))
    }

    #[pg_test]
    fn run_billing_renews_invoices_and_dunning_ends_unpaid_or_recovers() {
        renewals_final_at_once();
        one::<String>("SELECT code FROM payments.create_plan('team', 'usd', 20, 'month', trial_days => 7)");
        // The trial began eight days ago: it ended yesterday.
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('k1', 'cust_b', 'team', 'pm_card_visa', at => now() - interval '8 days')",
        );
        assert_eq!(sub_status(&sub), "trialing 0");
        assert_eq!(one::<pgrx::JsonB>("SELECT payments.run_billing(now() - interval '2 days')").0["renewed"], 0);
        let run = one::<pgrx::JsonB>("SELECT payments.run_billing(now())");
        assert_eq!(run.0["renewed"], 1);
        assert_eq!(one::<pgrx::JsonB>("SELECT payments.run_billing(now())").0["renewed"], 0, "twice: once");
        assert_eq!(sub_status(&sub), "active 1");
        let (inv1, status, number1, pay1) = invoice_of(&sub, 1);
        assert_eq!(status, "open");
        assert_eq!(
            one::<String>(&format!("SELECT amount || ' ' || payment_method || ' ' || (metadata ->> 'invoice_id') FROM payments.payment_details WHERE id = '{pay1}'")),
            format!("20.00 pm_card_visa {inv1}")
        );
        settle(&pay1, "pi_b1", 2000, "succeeded");
        assert_eq!(invoice_of(&sub, 1).1, "paid");
        // Periods count from the end of the trial; each is invoiced once, with the next number.
        assert!(one::<bool>(&format!(
            "SELECT current_period_end = trial_end + interval '1 month' FROM payments.subscriptions WHERE id = '{sub}'"
        )));
        let renewed_at =
            one::<String>(&format!("SELECT current_period_end::text FROM payments.subscriptions WHERE id = '{sub}'"));
        one::<pgrx::JsonB>(&format!("SELECT payments.run_billing('{renewed_at}')"));
        let (_, _, number2, pay2) = invoice_of(&sub, 2);
        let n = |number: &str| number.split('-').nth(1).unwrap().parse::<i64>().unwrap();
        assert_eq!(n(&number2), n(&number1) + 1, "{number1} then {number2}");

        // Dunning: the renewal fails; past_due; retried 1, 3 and 5 days after each attempt; then unpaid.
        settle(&pay2, "pi_b2", 2000, "failed");
        assert_eq!(sub_status(&sub), "past_due 2");
        let mut last = pay2.clone();
        let at = |days: i32, minus: &str| {
            format!("'{renewed_at}'::timestamptz + interval '{days} days' - interval '{minus}'")
        };
        for (i, days) in [1, 4, 9].iter().enumerate() {
            let early = one::<pgrx::JsonB>(&format!("SELECT payments.run_billing({})", at(*days, "1 minute")));
            assert_eq!(early.0["retried"], 0, "not yet due");
            let retried = one::<pgrx::JsonB>(&format!("SELECT payments.run_billing({})", at(*days, "0")));
            assert_eq!(retried.0["retried"], 1, "retry {i} after {days} days");
            let (_, _, _, pay) = invoice_of(&sub, 2);
            assert_ne!(pay, last, "a new payment per attempt");
            settle(&pay, &format!("pi_b2_{i}"), 2000, "failed");
            last = pay;
        }
        assert_eq!(sub_status(&sub), "unpaid 2");
        assert_eq!(
            one::<i32>(&format!(
                "SELECT attempt_count FROM payments.invoices WHERE subscription_id = '{sub}' AND period_number = 2"
            )),
            4
        );
        assert!(!one::<bool>("SELECT payments.has_active_subscription('cust_b')"));
        // A new card: the invoice is retried at the next run, paid, and the subscription active again.
        one::<String>(&format!(
            "SELECT status FROM payments.set_subscription_payment_method('{sub}', 'pm_card_mastercard')"
        ));
        assert_eq!(
            one::<pgrx::JsonB>(&format!("SELECT payments.run_billing({})", at(9, "0"))).0["retried"],
            1,
            "retried with the new card"
        );
        let (_, _, _, pay) = invoice_of(&sub, 2);
        settle(&pay, "pi_b2_ok", 2000, "succeeded");
        assert_eq!(invoice_of(&sub, 2).1, "paid");
        assert_eq!(sub_status(&sub), "active 2");
        assert_eq!(
            one::<String>(&format!("SELECT status FROM payments.get_invoice('{}')", invoice_of(&sub, 2).0)),
            "paid"
        );
        assert_eq!(sqlstate("SELECT payments.get_invoice('inv_none')"), "PM204");
        assert_eq!(sqlstate("SELECT payments.set_dunning('{0}')"), "PM100");
        // Canceled at period end: ends at the next run after it, without an invoice.
        one::<String>(&format!("SELECT status FROM payments.cancel_subscription('{sub}')"));
        let ended = one::<pgrx::JsonB>("SELECT payments.run_billing(now() + interval '100 days')");
        assert_eq!((ended.0["ended"].as_i64(), ended.0["renewed"].as_i64()), (Some(1), Some(0)));
        assert_eq!(sub_status(&sub).split(' ').next(), Some("canceled"));
    }

    #[pg_test]
    fn a_paid_plan_without_trial_is_incomplete_until_its_first_invoice_is_paid() {
        one::<String>("SELECT code FROM payments.create_plan('solo', 'usd', 5, 'week')");
        one::<String>("SELECT payments.set_dunning('{1}', 'canceled')::text");
        let sub = one::<String>("SELECT id FROM payments.create_subscription('k1', 'cust_i', 'solo', 'pm_card_visa')");
        assert_eq!(sub_status(&sub), "incomplete 1");
        let (_, status, _, pay) = invoice_of(&sub, 1);
        assert_eq!(status, "open");
        settle(&pay, "pi_i1", 500, "succeeded");
        assert_eq!(sub_status(&sub), "active 1");
        // Without a payment method, an attempt fails at once; set_dunning('{1}', 'canceled') ends it after one retry.
        let bare = one::<String>("SELECT id FROM payments.create_subscription('k2', 'cust_j', 'solo')");
        assert_eq!(sub_status(&bare), "incomplete 1");
        one::<pgrx::JsonB>("SELECT payments.run_billing(now() + interval '1 day')");
        assert_eq!(sub_status(&bare), "incomplete_expired 1", "its first invoice never paid: nothing was delivered");
        assert_eq!(invoice_of(&bare, 1).1, "void");
    }

    #[pg_test]
    fn a_receipt_shows_what_was_paid_refunded_and_invoiced() {
        let id = paid("rc1", "cust_rc", "pi_rcpt");
        let refund = one::<String>(&format!("SELECT id FROM payments.create_refund('k', '{id}', 2.5)"));
        one::<String>(&format!(
            "SELECT outcome FROM payments.record_command_result('{}', true, 'succeeded', '{}')",
            refund_command(&refund),
            refund_object("re_rc", "pi_rcpt", 250, "succeeded", "")
        ));
        let r = one::<pgrx::JsonB>(&format!("SELECT payments.receipt('{id}')")).0;
        assert_eq!(
            (r["amount"].as_str(), r["currency"].as_str(), r["amount_refunded"].as_str()),
            (Some("10.00"), Some("USD"), Some("2.50"))
        );
        assert_eq!(r["refunds"][0]["amount"], "2.50");
        assert!(r["paid_at"].is_string() && r["invoice"].is_null(), "{r}");
        let unpaid = create("rc2", "3");
        assert_eq!(sqlstate(&format!("SELECT payments.receipt('{unpaid}')")), "PM206");
        assert_eq!(sqlstate("SELECT payments.receipt('pay_none')"), "PM204");
        // An invoice's payment names its invoice.
        one::<String>("SELECT code FROM payments.create_plan('rcpt', 'usd', 7, 'month')");
        let sub = one::<String>("SELECT id FROM payments.create_subscription('k9', 'cust_rc', 'rcpt', 'pm_card_visa')");
        let (_, _, number, pay) = invoice_of(&sub, 1);
        settle(&pay, "pi_rc_inv", 700, "succeeded");
        let r = one::<pgrx::JsonB>(&format!("SELECT payments.receipt('{pay}')")).0;
        assert_eq!(r["invoice"]["number"], number.as_str());
        assert_eq!(
            one::<i64>(&format!("SELECT count(*) FROM payments.list_invoice_lines('{}')", invoice_of(&sub, 1).0)),
            1
        );
    }

    #[pg_test]
    fn plans_change_with_proration_now_or_at_period_end_and_past_due_has_a_grace_period() {
        renewals_final_at_once();
        one::<String>(
            "SELECT code FROM payments.create_plan('basic', 'usd', 10, 'month', features => '{\"calls\": 5}')",
        );
        one::<String>(
            "SELECT code FROM payments.create_plan('plus', 'usd', 30, 'month', features => '{\"calls\": 50}')",
        );
        one::<String>("SELECT code FROM payments.create_plan('euro', 'eur', 30, 'month')");
        // Half-way through its first month.
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('k1', 'cust_cp', 'basic', 'pm_card_visa',
                                                         at => date_trunc('day', now()) - interval '15 days')",
        );
        let (_, _, _, first) = invoice_of(&sub, 1);
        settle(&first, "pi_cp1", 1000, "succeeded");
        let half = "(SELECT current_period_start + (current_period_end - current_period_start) / 2 FROM payments.subscriptions WHERE id = '";
        // Upgrade now: 15.00 for the rest of the month at plus, less 5.00 unused at basic: 10.00 charged at once.
        assert_eq!(
            one::<String>(&format!(
                "SELECT plan || ' ' || outcome FROM payments.change_plan('{sub}', 'plus', at => {half}{sub}'))"
            )),
            "plus applied"
        );
        let proration = one::<String>(&format!(
            "SELECT total || ' ' || (SELECT string_agg(l.kind || ':' || l.amount_minor, ',' ORDER BY l.line_number)
                                     FROM payments.invoice_lines l WHERE l.customer_id = i.customer_id AND l.invoice_id = i.id)
             FROM payments.invoice_details i WHERE subscription_id = '{sub}' AND i.id IN
                  (SELECT id FROM payments.invoices WHERE kind = 'proration')"
        ));
        assert_eq!(proration, "10.00 credit:-500,proration:1500");
        assert_eq!(
            one::<String>("SELECT \"limit\"::text FROM payments.entitlements('cust_cp') WHERE feature = 'calls'"),
            "50",
            "the new limits apply at once"
        );
        // The upgrade is paid; downgrade now: the difference is a credit, taken off the next invoice.
        let upgrade = one::<String>(&format!(
            "SELECT payment_id FROM payments.invoices WHERE subscription_id = '{sub}' AND kind = 'proration'"
        ));
        settle(&upgrade, "pi_cp2", 1000, "succeeded");
        one::<String>(&format!("SELECT plan FROM payments.change_plan('{sub}', 'basic', at => {half}{sub}'))"));
        assert_eq!(
            one::<String>("SELECT posted::text FROM payments.balances('cust_cp') WHERE account = 'balance'"),
            "10.00",
            "what the downgrade left is the customer's balance"
        );
        one::<pgrx::JsonB>(&format!(
            "SELECT payments.run_billing((SELECT current_period_end FROM payments.subscriptions WHERE id = '{sub}'))"
        ));
        assert_eq!(
            one::<String>(&format!("SELECT total::text FROM payments.invoice_details WHERE subscription_id = '{sub}' AND id = (SELECT id FROM payments.invoices WHERE subscription_id = '{sub}' AND period_number = 2 AND kind = 'period')")),
            "0.00",
            "10.00 of balance pays the 10.00 month"
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(l.kind || ':' || l.amount_minor, ',' ORDER BY l.line_number) FROM payments.invoice_lines l
                 WHERE l.invoice_id = (SELECT id FROM payments.invoices WHERE subscription_id = '{sub}' AND period_number = 2 AND kind = 'period')"
            )),
            "recurring:1000,balance:-1000"
        );
        assert_eq!(
            one::<String>("SELECT posted::text FROM payments.balances('cust_cp') WHERE account = 'balance'"),
            "0.00"
        );
        assert!(trial_balance_is_zero());
        // At period end: nothing now, the new plan with the next period.
        one::<String>(&format!("SELECT plan FROM payments.change_plan('{sub}', 'plus', prorate => false)"));
        assert_eq!(
            one::<String>(&format!(
                "SELECT plan || ' ' || pending_plan FROM payments.subscriptions WHERE id = '{sub}'"
            )),
            "basic plus"
        );
        let renewed =
            one::<String>(&format!("SELECT current_period_end::text FROM payments.subscriptions WHERE id = '{sub}'"));
        one::<pgrx::JsonB>(&format!("SELECT payments.run_billing('{renewed}')"));
        assert_eq!(
            one::<String>(&format!(
                "SELECT plan || ' ' || period_number FROM payments.subscriptions WHERE id = '{sub}'"
            )),
            "plus 3"
        );
        assert_eq!(sqlstate(&format!("SELECT payments.change_plan('{sub}', 'euro')")), "PM100");
        assert_eq!(sqlstate(&format!("SELECT payments.change_plan('{sub}', 'nope')")), "PM204");
        assert_eq!(one::<String>(&format!("SELECT outcome FROM payments.change_plan('{sub}', 'plus')")), "noop");

        // A failed renewal: past_due still grants the plan for the grace period, then not.
        let (_, _, _, third) = invoice_of(&sub, 3);
        settle(&third, "pi_cp3", 3000, "failed");
        assert_eq!(sub_status(&sub), "past_due 3");
        assert!(one::<bool>(&format!("SELECT payments.has_active_subscription('cust_cp', at => '{renewed}')")));
        assert!(!one::<bool>(&format!(
            "SELECT payments.has_active_subscription('cust_cp', at => '{renewed}'::timestamptz + interval '4 days')"
        )));
        one::<String>("SELECT payments.set_dunning('{1,3,5}', 'unpaid', '7 days')::text");
        assert!(one::<bool>(&format!(
            "SELECT payments.has_active_subscription('cust_cp', at => '{renewed}'::timestamptz + interval '4 days')"
        )));
        assert_eq!(sqlstate("SELECT payments.set_dunning('{1}', 'unpaid', '90 days')"), "PM100");
    }

    #[pg_test]
    fn a_renewal_bills_the_closed_periods_usage_at_the_plans_tiers() {
        renewals_final_at_once();
        one::<String>("SELECT code FROM payments.create_meter('tok', 'sum')");
        let tiers = r#"[{"meter": "tok", "price": {"mode": "graduated", "tiers": [{"up_to": 1000, "unit_amount_minor": 0}, {"up_to": null, "unit_amount_minor": "0.1", "flat_amount_minor": 200}]}}]"#;
        one::<String>(&format!(
            "SELECT code FROM payments.create_plan('api', 'usd', 10, 'month', metered => '{tiers}')"
        ));
        assert_eq!(
            sqlstate(
                r#"SELECT payments.create_plan('x', 'usd', 1, 'month', metered => '[{"meter": "nope", "price": {"mode": "per_unit", "tiers": [{"unit_amount_minor": 1}]}}]')"#
            ),
            "PM100"
        );
        assert_eq!(
            sqlstate(
                r#"SELECT payments.create_plan('y', 'usd', 1, 'month', metered => '[{"meter": "tok", "price": {"mode": "volume", "tiers": [{"up_to": 5, "unit_amount_minor": 1}]}}]')"#
            ),
            "PM100"
        );
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('k1', 'cust_use', 'api', 'pm_card_visa', at => now() - interval '10 days')",
        );
        let (_, _, _, first) = invoice_of(&sub, 1);
        settle(&first, "pi_use1", 1000, "succeeded");
        one::<String>(
            "SELECT outcome FROM payments.record_usage('u1', 'cust_use', 'tok', 3000, now() - interval '1 day')",
        );
        one::<String>(
            "SELECT outcome FROM payments.record_usage('u2', 'cust_use', 'tok', 345, now() - interval '2 days')",
        );
        one::<pgrx::JsonB>(&format!(
            "SELECT payments.run_billing((SELECT current_period_end FROM payments.subscriptions WHERE id = '{sub}'))"
        ));
        let (invoice, _, _, _) = invoice_of(&sub, 2);
        // 10.00 for the new month in advance; 3345 tokens of the closed one: 1000 free, 2345 × 0.1¢ + 2.00 = 4.345 → 4.35.
        assert_eq!(
            one::<String>(&format!("SELECT string_agg(kind || ':' || quantity || ':' || amount_minor, ',' ORDER BY line_number) FROM payments.list_invoice_lines('{invoice}')")),
            "recurring:1:1000,usage:3345:435"
        );
        assert_eq!(one::<String>(&format!("SELECT total::text FROM payments.get_invoice('{invoice}')")), "14.35");
        assert_eq!(
            one::<i64>(
                r#"SELECT payments._usage_price('12', '{"mode": "volume", "tiers": [{"up_to": 5, "unit_amount_minor": 500}, {"up_to": 10, "unit_amount_minor": 400}, {"up_to": null, "unit_amount_minor": 300}]}')"#
            ),
            3600
        );
    }

    #[pg_test]
    fn subscriptions_are_listed_newest_first_by_customer_and_status() {
        one::<String>("SELECT code FROM payments.create_plan('lst', 'usd', 0, 'month')");
        let first = one::<String>("SELECT id FROM payments.create_subscription('k1', 'cust_ls', 'lst')");
        let second = one::<String>("SELECT id FROM payments.create_subscription('k2', 'cust_ls', 'lst')");
        one::<String>(&format!("SELECT status FROM payments.cancel_subscription('{first}', false)"));
        assert_eq!(
            one::<String>("SELECT string_agg(id, ',') FROM payments.list_subscriptions('cust_ls')"),
            format!("{second},{first}")
        );
        assert_eq!(
            one::<String>("SELECT string_agg(id, ',') FROM payments.list_subscriptions('cust_ls', 'canceled')"),
            first
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(id, ',') FROM payments.list_subscriptions('cust_ls', starting_after => '{second}')"
            )),
            first
        );
        assert_eq!(sqlstate("SELECT payments.list_subscriptions(status => 'gone')"), "PM100");
        assert_eq!(sqlstate("SELECT payments.list_subscriptions(lim => 0)"), "PM100");
    }

    /// The types of an object's events in order, comma-separated.
    fn event_types(object_id: &str) -> String {
        one(&format!(
            "SELECT string_agg(type, ',' ORDER BY seq) FROM payments.outbox_events WHERE object_id = '{object_id}'"
        ))
    }

    #[pg_test]
    fn every_state_change_is_an_event_delivered_in_order_per_object_and_retried() {
        assert_eq!(sqlstate("SELECT payments.add_webhook_endpoint('ftp://example.com/hook')"), "PM100");
        assert_eq!(
            sqlstate("SELECT payments.add_webhook_endpoint('https://app.example/hook', '{payments.*}')"),
            "PM100"
        );
        assert_eq!(sqlstate("SELECT payments.add_webhook_endpoint('https://app.example/ho ok')"), "PM100");
        let all =
            one::<String>("SELECT id || ' ' || secret FROM payments.add_webhook_endpoint('https://app.example/all')");
        let (all, secret) = all.split_once(' ').unwrap();
        assert!(secret.starts_with("whsec_"), "{secret}");
        one::<String>("SELECT id FROM payments.add_webhook_endpoint('https://app.example/refunds', '{refund.*}')");

        let payment = create("k_evt", "12.00");
        settle(&payment, "pi_evt", 1200, "succeeded");
        assert_eq!(event_types(&payment), "payment.created,payment.succeeded");
        // Only the endpoint for every event has deliveries, one per event.
        assert_eq!(
            one::<String>(
                "SELECT string_agg(DISTINCT endpoint_id, ',') || ' ' || count(*) FROM payments.webhook_deliveries"
            ),
            format!("{all} 2")
        );
        // The first event of the object is claimed; the second waits for it.
        let claim = "SELECT string_agg(event_id || ' ' || attempt || ' ' || (body::jsonb ->> 'type') || ' ' || (secret = '{secret}')::text, ';') FROM payments.claim_webhook_deliveries(10)";
        let claim = claim.replace("{secret}", secret);
        let first = one::<String>(&claim);
        let parts: Vec<&str> = first.split(' ').collect();
        assert_eq!(parts[1..].join(" "), "1 payment.created true", "{first}");
        assert_eq!(Spi::get_one::<String>(&claim).unwrap(), None, "leased, and the next waits behind it");
        let record = |event: &str, attempt: i32, code: &str| {
            one::<String>(&format!(
                "SELECT payments.record_webhook_delivery(customer_id, event_id, endpoint_id, {attempt}, {code}, 'answered {code}', 5) FROM payments.webhook_deliveries WHERE event_id = '{event}'"
            ))
        };
        assert_eq!(record(parts[0], 1, "500"), "pending");
        assert!(one::<bool>(&format!(
            "SELECT next_attempt_at > now() + interval '4 seconds' FROM payments.webhook_deliveries WHERE event_id = '{}'",
            parts[0]
        )));
        // Its retry (the wait over) succeeds; then the next event of the object is due.
        Spi::run(&format!(
            "UPDATE payments.webhook_deliveries SET next_attempt_at = now() WHERE event_id = '{}'",
            parts[0]
        ))
        .unwrap();
        assert!(one::<String>(&claim).starts_with(&format!("{} 2 ", parts[0])));
        assert_eq!(record(parts[0], 2, "204"), "delivered");
        let second = one::<String>(&claim);
        assert!(second.ends_with(" 1 payment.succeeded true"), "{second}");
        let second = second.split(' ').next().unwrap().to_string();
        // No retries left: the first failure fails it.
        assert_eq!(sqlstate("SELECT payments.set_webhook_retries('{0 seconds}')"), "PM100");
        one::<Vec<pgrx::datum::Interval>>("SELECT payments.set_webhook_retries('{}')");
        assert_eq!(record(&second, 1, "NULL"), "failed");
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(coalesce(status_code::text, '-') || ':' || error, ',' ORDER BY status_code NULLS FIRST) FROM payments.webhook_delivery_attempts WHERE event_id IN ('{}', '{second}')",
                parts[0]
            )),
            "-:answered NULL,204:answered 204,500:answered 500"
        );
        assert_eq!(
            one::<String>("SELECT string_agg(status, ',' ORDER BY status) FROM payments.webhook_delivery_log"),
            "delivered,failed"
        );

        // Refunds, subscriptions and invoices tell their changes too; the refunds endpoint hears refunds only.
        let refund = one::<String>(&format!("SELECT id FROM payments.create_refund('r_evt', '{payment}', 2)"));
        assert_eq!(event_types(&refund), "refund.created");
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM payments.webhook_deliveries d JOIN payments.webhook_endpoints w ON w.id = d.endpoint_id WHERE d.object_id = '{refund}'"
            )),
            2
        );
        one::<String>("SELECT code FROM payments.create_plan('evt_paid', 'usd', 5, 'month')");
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('s_evt', 'cust_evt', 'evt_paid', 'pm_card_visa')",
        );
        let (invoice, _, _, invoice_payment) = invoice_of(&sub, 1);
        settle(&invoice_payment, "pi_evt_inv", 500, "succeeded");
        one::<String>(&format!("SELECT status FROM payments.cancel_subscription('{sub}', false)"));
        assert_eq!(event_types(&sub), "subscription.created,subscription.active,subscription.canceled");
        assert_eq!(event_types(&invoice), "invoice.created,invoice.paid");

        // History stays; the secret is no reader's.
        assert_ne!(outcome("UPDATE payments.outbox_events SET type = 'x'"), "ok");
        assert!(!one::<bool>(
            "SELECT has_table_privilege('payments_reader', 'payments.webhook_endpoint_secrets', 'SELECT')"
        ));
        assert!(one::<bool>(
            "SELECT has_table_privilege('payments_reader', 'payments.webhook_delivery_log', 'SELECT')"
        ));
        assert_eq!(sqlstate("SELECT payments.record_webhook_delivery('c', 'evt_x', 'we_x', 1, 200)"), "PM204");
        assert_eq!(sqlstate("SELECT payments.remove_webhook_endpoint('we_x')"), "PM204");
        assert_eq!(sqlstate("SELECT payments.record_webhook_delivery('c', 'evt_x', 'we_x', 1, 99)"), "PM100");
        assert_eq!(sqlstate("SELECT payments.claim_webhook_deliveries(0)"), "PM100");
        assert!(one::<bool>(&format!("SELECT payments.remove_webhook_endpoint('{all}')")));
        assert!(!one::<bool>(&format!("SELECT payments.remove_webhook_endpoint('{all}')")));
    }

    #[pg_test]
    fn usage_reaching_the_threshold_is_invoiced_once_and_the_period_end_bills_the_rest() {
        one::<String>("SELECT code FROM payments.create_meter('thr', 'sum')");
        let per_unit = r#"[{"meter": "thr", "price": {"mode": "per_unit", "tiers": [{"unit_amount_minor": 1}]}}]"#;
        assert_eq!(sqlstate("SELECT payments.create_plan('thr0', 'usd', 10, 'month', usage_threshold => 5)"), "PM100");
        assert_eq!(
            sqlstate(&format!(
                "SELECT payments.create_plan('thr1', 'usd', 10, 'month', metered => '{per_unit}', usage_threshold => 0)"
            )),
            "PM102"
        );
        assert_eq!(
            sqlstate(&format!(
                "SELECT payments.create_plan('thr1', 'usd', 10, 'month', metered => '{per_unit}', usage_threshold => 0.001)"
            )),
            "PM101",
            "money, checked as money"
        );
        one::<String>(&format!(
            "SELECT code FROM payments.create_plan('thr', 'usd', 10, 'month', metered => '{per_unit}', usage_threshold => 5)"
        ));
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('k_thr', 'cust_thr', 'thr', 'pm_card_visa', at => now() - interval '10 days')",
        );
        let (first, _, _, payment) = invoice_of(&sub, 1);
        settle(&payment, "pi_thr1", 1000, "succeeded");
        let usage = |key: &str, quantity: i32| {
            one::<String>(&format!(
                "SELECT outcome FROM payments.record_usage('{key}', 'cust_thr', 'thr', {quantity}, now() - interval '1 hour')"
            ));
        };
        let thresholds = || one::<i32>("SELECT (payments.run_billing(now()) ->> 'thresholds')::int");
        usage("u1", 300);
        assert_eq!(thresholds(), 0, "3.00 is below the 5.00 threshold");
        usage("u2", 250);
        assert_eq!(thresholds(), 1);
        assert_eq!(thresholds(), 0, "invoiced once");
        let threshold_invoices = format!(
            "SELECT string_agg(total_minor::text || ' ' || period_number, ',') FROM payments.invoices WHERE subscription_id = '{sub}' AND kind = 'threshold'"
        );
        assert_eq!(one::<String>(&threshold_invoices), "550 1");
        usage("u3", 100);
        assert_eq!(thresholds(), 0, "1.00 beyond what was invoiced");
        one::<pgrx::JsonB>(&format!(
            "SELECT payments.run_billing((SELECT current_period_end FROM payments.subscriptions WHERE id = '{sub}'))"
        ));
        let renewal = one::<String>(&format!(
            "SELECT id FROM payments.invoices WHERE subscription_id = '{sub}' AND kind = 'period' AND period_number = 2"
        ));
        assert_ne!(renewal, first);
        assert_eq!(
            one::<String>(&format!("SELECT string_agg(kind || ':' || amount_minor, ',' ORDER BY line_number) FROM payments.list_invoice_lines('{renewal}')")),
            "recurring:1000,usage:650,credit:-550"
        );
    }

    #[pg_test]
    fn metadata_problems_are_named_first_by_count_then_keys_nesting_and_length() {
        let problem = |metadata: &str| {
            Spi::get_one::<String>(&format!("SELECT payments._metadata_problem('{metadata}')")).unwrap()
        };
        assert_eq!(problem("{}"), None);
        assert_eq!(problem(r#"{"order": 42, "note": "ok", "gift": true, "x": null}"#), None);
        assert_eq!(problem("[1]").as_deref(), Some("metadata must be a JSON object"));
        let many = format!("{{{}}}", (0..51).map(|i| format!(r#""k{i}": {{}}"#)).collect::<Vec<_>>().join(", "));
        assert_eq!(problem(&many).as_deref(), Some("metadata has more than 50 keys"));
        assert_eq!(
            problem(&format!(r#"{{"a": [1], "{}": 1}}"#, "k".repeat(41))).as_deref(),
            Some("metadata keys must be 1 to 40 characters")
        );
        assert_eq!(
            problem(&format!(r#"{{"a": "{}", "b": {{}}}}"#, "v".repeat(501))).as_deref(),
            Some("metadata values must be strings, numbers, booleans or null, not objects or arrays")
        );
        assert_eq!(
            problem(&format!(r#"{{"a": "{}"}}"#, "é".repeat(501))).as_deref(),
            Some("metadata values must be at most 500 characters")
        );
        assert_eq!(problem(&format!(r#"{{"a": "{}"}}"#, "é".repeat(500))), None, "characters, not bytes");
    }

    #[pg_test]
    fn event_notifications_are_an_administrators_switch() {
        assert_eq!(sqlstate("SELECT payments.set_event_notifications(NULL)"), "PM100");
        Spi::run("SELECT payments.set_webhook_tolerance('2 minutes')").unwrap();
        assert!(one::<bool>("SELECT payments.set_event_notifications(true)"));
        assert!(one::<bool>("SELECT payments._notifying()"));
        assert!(!one::<bool>("SELECT payments.set_event_notifications(false)"));
        assert!(!one::<bool>("SELECT payments._notifying()"));
        assert_eq!(
            one::<String>("SELECT payments.webhook_tolerance()::text"),
            "00:02:00",
            "the other settings are kept"
        );
        assert!(!one::<bool>(
            "SELECT has_function_privilege('payments_gateway', 'payments.set_event_notifications(boolean)', 'EXECUTE')"
        ));
    }

    #[pg_test]
    fn meters_and_webhook_secrets_outlive_the_events_that_name_them() {
        // Usage and webhook events name them without a foreign key: no role may delete one.
        for table in ["payments.meters", "payments.webhook_secrets"] {
            for role in ["payments_admin", "payments_gateway", "payments_reader"] {
                for privilege in ["DELETE", "TRUNCATE"] {
                    assert!(
                        !one::<bool>(&format!("SELECT has_table_privilege('{role}', '{table}', '{privilege}')")),
                        "{role} may {privilege} {table}"
                    );
                }
            }
        }
    }

    #[pg_test]
    fn dashboard_users_sign_in_with_argon2_and_sessions_end() {
        let generated = one::<String>(
            "SELECT generated_password FROM payments.create_dashboard_user(' Ops@Example.com ', 'operator')",
        );
        assert!(generated.starts_with("pw_") && generated.len() > 30, "{generated}");
        let stored =
            one::<String>("SELECT password_hash FROM payments.dashboard_users WHERE email = 'ops@example.com'");
        assert!(stored.starts_with("$argon2id$") && !stored.contains(&generated), "only a hash is kept");
        assert_eq!(
            sqlstate("SELECT payments.create_dashboard_user('ops@example.com', 'viewer')"),
            "PM100",
            "email taken"
        );
        assert_eq!(sqlstate("SELECT payments.create_dashboard_user('v@example.com', 'admin')"), "PM100");
        assert_eq!(sqlstate("SELECT payments.create_dashboard_user('not an email', 'viewer')"), "PM100");
        assert_eq!(sqlstate("SELECT payments.create_dashboard_user('v@example.com', 'viewer', 'short')"), "PM100");
        assert!(
            one::<bool>(
                "SELECT generated_password IS NULL
                 FROM payments.create_dashboard_user('v@example.com', 'viewer', 'a long chosen password')"
            ),
            "a chosen password is not echoed"
        );

        let sign_in = |email: &str, password: &str| {
            attempt(&format!(
                "SELECT session_token || ' ' || csrf_token || ' ' || user_role FROM payments.dashboard_sign_in('{email}', '{password}')"
            ))
        };
        assert!(sign_in("v@example.com", "a long chosen password wrong").starts_with("PM110"));
        assert!(
            sign_in("nobody@example.com", "a long chosen password").starts_with("PM110"),
            "no hint which part was wrong"
        );
        let ok = sign_in("OPS@example.com", &generated);
        let fields: Vec<&str> = ok.trim_start_matches("ok:").split(' ').collect();
        assert_eq!(fields.len(), 3, "{ok}");
        assert_eq!(fields[2], "operator");
        let (token, csrf) = (fields[0], fields[1]);
        assert_eq!(
            one::<String>(&format!(
                "SELECT user_email || ' ' || csrf_token FROM payments.dashboard_session('{token}')"
            )),
            format!("ops@example.com {csrf}")
        );
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM payments.dashboard_sessions WHERE token_hash = sha256(convert_to('{token}', 'UTF8'))"
            )),
            1,
            "the session is kept by the sha256 of its token"
        );

        // A password reset or a disabled user ends the sessions at once.
        let reset = one::<String>("SELECT payments.reset_dashboard_password('ops@example.com')");
        assert_eq!(one::<i64>(&format!("SELECT count(*) FROM payments.dashboard_session('{token}')")), 0);
        assert!(sign_in("ops@example.com", &generated).starts_with("PM110"), "the old password is gone");
        let again = sign_in("ops@example.com", &reset);
        let token = again.trim_start_matches("ok:").split(' ').next().unwrap().to_string();
        assert!(one::<bool>("SELECT payments.disable_dashboard_user('ops@example.com')"));
        assert_eq!(one::<i64>(&format!("SELECT count(*) FROM payments.dashboard_session('{token}')")), 0);
        assert!(sign_in("ops@example.com", &reset).starts_with("PM110"), "a disabled user cannot sign in");
        assert_eq!(sqlstate("SELECT payments.reset_dashboard_password('nobody@example.com')"), "PM204");

        // Sign-out ends one session.
        let viewer = sign_in("v@example.com", "a long chosen password");
        let token = viewer.trim_start_matches("ok:").split(' ').next().unwrap().to_string();
        assert!(one::<bool>(&format!("SELECT payments.dashboard_sign_out('{token}')")));
        assert!(!one::<bool>(&format!("SELECT payments.dashboard_sign_out('{token}')")));
        assert_eq!(one::<i64>(&format!("SELECT count(*) FROM payments.dashboard_session('{token}')")), 0);
    }

    #[pg_test]
    fn only_admins_manage_dashboard_users_and_no_reader_sees_a_hash() {
        for (function, role, allowed) in [
            ("payments.create_dashboard_user(text, text, text)", "payments_gateway", false),
            ("payments.create_dashboard_user(text, text, text)", "payments_admin", true),
            ("payments.reset_dashboard_password(text, text)", "payments_gateway", false),
            ("payments.dashboard_sign_in(text, text, interval)", "payments_gateway", true),
            ("payments.dashboard_sign_in(text, text, interval)", "payments_reader", false),
            ("payments.dashboard_session(text)", "payments_gateway", true),
        ] {
            assert_eq!(
                one::<bool>(&format!("SELECT has_function_privilege('{role}', '{function}', 'EXECUTE')")),
                allowed,
                "{role} {function}"
            );
        }
        for role in ["payments_gateway", "payments_reader"] {
            for table in ["payments.dashboard_users", "payments.dashboard_sessions"] {
                assert!(
                    !one::<bool>(&format!("SELECT has_table_privilege('{role}', '{table}', 'SELECT')")),
                    "{role} {table}"
                );
            }
        }
    }

    // -----------------------------------------------------------------------
    // Billing you can trust: each test below failed on the code before it.
    // -----------------------------------------------------------------------

    fn run_billing(at: &str) -> pgrx::JsonB {
        one::<pgrx::JsonB>(&format!("SELECT payments.run_billing('{at}')"))
    }

    fn sub_field(sub: &str, expr: &str) -> String {
        one::<String>(&format!("SELECT ({expr})::text FROM payments.subscriptions WHERE id = '{sub}'"))
    }

    /// A PaymentIntent waiting for 3-D Secure.
    fn requires_action(payment: &str, pi: &str, amount_minor: i64) {
        let object = format!(
            r#"{{"id":"{pi}","object":"payment_intent","amount":{amount_minor},"currency":"usd","amount_received":0,"amount_capturable":0,"status":"requires_action"}}"#
        );
        one::<String>(&format!(
            "SELECT outcome FROM payments.record_provider_result('{payment}', 'stripe', '{pi}', 'requires_action', '{object}')"
        ));
    }

    #[pg_test]
    fn periods_and_trials_are_counted_in_utc_whatever_the_session_time_zone() {
        one::<String>("SELECT code FROM payments.create_plan('tz', 'usd', 0, 'month')");
        one::<String>("SELECT code FROM payments.create_plan('tz_trial', 'usd', 0, 'month', trial_days => 30)");
        Spi::run("SET TimeZone = 'America/Los_Angeles'").unwrap();
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('tz1', 'cust_tz', 'tz', at => '2027-01-31T04:00Z')",
        );
        let utc =
            |sub: &str, col: &str| sub_field(sub, &format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')"));
        assert_eq!(utc(&sub, "current_period_end"), "2027-02-28 04:00");
        // Across the March DST change: the renewal keeps its hour.
        run_billing("2027-03-01T00:00Z");
        run_billing("2027-04-01T00:00Z");
        assert_eq!(utc(&sub, "current_period_end"), "2027-04-30 04:00", "period 3 ends on April 30 at 04:00Z");
        let trial = one::<String>(
            "SELECT id FROM payments.create_subscription('tz2', 'cust_tz2', 'tz_trial', at => '2027-03-01T12:00Z')",
        );
        assert_eq!(utc(&trial, "trial_end"), "2027-03-31 12:00", "30 days of 24 hours");
        Spi::run("RESET TimeZone").unwrap();
    }

    #[pg_test]
    fn a_change_of_billing_interval_starts_a_new_anchor() {
        one::<String>("SELECT code FROM payments.create_plan('m', 'usd', 0, 'month')");
        one::<String>("SELECT code FROM payments.create_plan('y', 'usd', 0, 'year')");
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('ia1', 'cust_ia', 'm', at => '2027-01-01T00:00Z')",
        );
        run_billing("2027-03-01T00:00Z");
        one::<String>(&format!(
            "SELECT status FROM payments.change_plan('{sub}', 'y', prorate => false, at => '2027-03-15T00:00Z')"
        ));
        run_billing("2027-04-01T00:00Z");
        assert_eq!(
            sub_field(&sub, "plan || ' ' || current_period_start || ' ' || current_period_end"),
            "y 2027-04-01 00:00:00+00 2028-04-01 00:00:00+00",
            "a year from the change, not anchor + 4 years"
        );
        // Prorated: the new period starts at the change.
        let now = one::<String>(
            "SELECT id FROM payments.create_subscription('ia2', 'cust_ia2', 'm', at => '2027-01-01T00:00Z')",
        );
        one::<String>(&format!("SELECT status FROM payments.change_plan('{now}', 'y', at => '2027-01-10T00:00Z')"));
        assert_eq!(
            sub_field(&now, "plan || ' ' || current_period_start || ' ' || current_period_end || ' ' || period_number"),
            "y 2027-01-10 00:00:00+00 2028-01-10 00:00:00+00 2"
        );
    }

    #[pg_test]
    fn dunning_and_grace_follow_at_and_a_second_run_at_the_same_time_does_nothing() {
        renewals_final_at_once();
        one::<String>("SELECT code FROM payments.create_plan('dn', 'usd', 20, 'month', trial_days => 7)");
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('dn1', 'cust_dn', 'dn', at => '2027-06-01T00:00Z')",
        );
        let first = run_billing("2027-06-08T00:00Z");
        assert_eq!((first.0["renewed"].as_i64(), first.0["retried"].as_i64()), (Some(1), Some(0)));
        for _ in 0..2 {
            let again = run_billing("2027-06-08T00:00Z");
            assert_eq!((again.0["renewed"].as_i64(), again.0["retried"].as_i64()), (Some(0), Some(0)), "{}", again.0);
        }
        assert_eq!(
            one::<String>(&format!(
                "SELECT attempt_count || ' ' || next_attempt_at FROM payments.invoices WHERE subscription_id = '{sub}'"
            )),
            "1 2027-06-09 00:00:00+00"
        );
        assert_eq!(sub_field(&sub, "status || ' ' || past_due_since"), "past_due 2027-06-08 00:00:00+00");
        assert!(one::<bool>("SELECT payments.has_active_subscription('cust_dn', at => '2027-06-10T23:00Z')"));
        assert!(
            !one::<bool>("SELECT payments.has_active_subscription('cust_dn', at => '2027-06-11T00:00Z')"),
            "grace from at"
        );
        assert_eq!(run_billing("2027-06-09T00:00Z").0["retried"], 1);
    }

    #[pg_test]
    fn a_subscription_billed_after_a_failure_is_no_longer_shown_as_failing() {
        renewals_final_at_once();
        one::<String>("SELECT code FROM payments.create_plan('rv', 'usd', 20, 'month', trial_days => 7)");
        let retrying = one::<String>(
            "SELECT id FROM payments.create_subscription('rv1', 'cust_rv1', 'rv', at => '2027-05-31T00:00Z')",
        );
        let renewing = one::<String>(
            "SELECT id FROM payments.create_subscription('rv2', 'cust_rv2', 'rv', at => '2027-06-01T00:00Z')",
        );
        // The first trial ends: no card, so its invoice is retried on June 8.
        run_billing("2027-06-07T00:00Z");
        // Both failed at an earlier run, as run_billing records a failure.
        Spi::run(&format!(
            "UPDATE payments.subscriptions SET billing_error = '{{\"sqlstate\": \"PM104\", \"message\": \"too large\"}}'
             WHERE id IN ('{retrying}', '{renewing}')"
        ))
        .unwrap();
        // June 8: one is renewed (its trial ends), the other's invoice retried.
        let run = run_billing("2027-06-08T00:00Z");
        assert_eq!((run.0["renewed"].as_i64(), run.0["retried"].as_i64()), (Some(1), Some(1)), "{}", run.0);
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM payments.billing_failures WHERE subscription_id IN ('{retrying}', '{renewing}')"
            )),
            0,
            "billed again, neither is shown as failing"
        );
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM payments.subscription_events
                 WHERE subscription_id IN ('{retrying}', '{renewing}') AND reason = 'billing recovered'"
            )),
            2
        );
    }

    #[pg_test]
    fn a_new_periods_quota_starts_at_its_start_without_run_billing() {
        one::<String>("SELECT code FROM payments.create_plan('qt', 'usd', 0, 'month', features => '{\"calls\": 5}')");
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('qt1', 'cust_qt', 'qt', at => '2027-08-01T00:00Z')",
        );
        let consume = |n: i32, at: &str| {
            one::<String>(&format!(
                "SELECT outcome FROM payments.consume('cust_qt', 'calls', {n}, 'r{n}{at}', at => '{at}')"
            ))
        };
        assert_eq!(consume(5, "2027-08-10T00:00Z"), "consumed");
        assert_eq!(consume(1, "2027-08-31T23:00Z"), "refused");
        assert_eq!(consume(1, "2027-09-01T00:05Z"), "consumed", "September's quota, though run_billing did not run");
        assert_eq!(
            one::<String>(
                "SELECT remaining || ' ' || period_start FROM payments.entitlements('cust_qt', '2027-09-01T00:06Z')"
            ),
            "4 2027-09-01 00:00:00+00"
        );
        run_billing("2027-09-01T00:10Z");
        assert_eq!(sub_field(&sub, "current_period_start"), "2027-09-01 00:00:00+00");
        assert_eq!(
            one::<String>("SELECT remaining::text FROM payments.entitlements('cust_qt', '2027-09-02T00:00Z')"),
            "4",
            "what was used before the renewal counts in its period"
        );
        // Far ahead (a timer stopped for years): still the period at falls in.
        assert_eq!(
            one::<String>(
                "SELECT period_start || ' ' || period_end FROM payments.entitlements('cust_qt', '2031-05-20T00:00Z')"
            ),
            "2031-05-01 00:00:00+00 2031-06-01 00:00:00+00"
        );
    }

    #[pg_test]
    fn canceling_stops_collecting_its_open_invoices() {
        renewals_final_at_once();
        one::<String>("SELECT code FROM payments.create_plan('cn', 'usd', 20, 'month', trial_days => 7)");
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('cn1', 'cust_cn', 'cn', at => '2027-06-01T00:00Z')",
        );
        run_billing("2027-06-08T00:00Z");
        assert_eq!(sub_status(&sub), "past_due 1");
        one::<String>(&format!("SELECT status FROM payments.cancel_subscription('{sub}', false, '2027-06-08T12:00Z')"));
        let (_, status, _, _) = invoice_of(&sub, 1);
        assert_eq!(status, "uncollectible");
        assert_eq!(run_billing("2027-06-12T00:00Z").0["retried"], 0, "no retry after the cancel");
        assert_eq!(
            sqlstate(&format!("SELECT payments.set_subscription_payment_method('{sub}', 'pm_card_visa')")),
            "PM206",
            "a new card charges nothing"
        );
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.payments WHERE customer_id = 'cust_cn'"), 1);
    }

    #[pg_test]
    fn an_incomplete_subscription_expires_after_23_hours_and_its_invoice_is_void() {
        one::<String>("SELECT code FROM payments.create_plan('ic', 'usd', 5, 'month')");
        one::<String>("SELECT payments.set_dunning('{1,3,5}')::text");
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('ic1', 'cust_ic', 'ic', 'pm_card_visa', at => '2027-06-01T00:00Z')",
        );
        let (_, _, _, pay) = invoice_of(&sub, 1);
        settle(&pay, "pi_ic1", 500, "failed");
        assert_eq!(run_billing("2027-06-01T22:59Z").0["expired"], 0);
        assert_eq!(sub_status(&sub), "incomplete 1");
        assert_eq!(run_billing("2027-06-01T23:00Z").0["expired"], 1);
        assert_eq!(sub_status(&sub), "incomplete_expired 1");
        assert_eq!(invoice_of(&sub, 1).1, "void");
        assert_eq!(
            sqlstate(&format!("SELECT payments.set_subscription_payment_method('{sub}', 'pm_card_mastercard')")),
            "PM206"
        );
        assert_eq!(run_billing("2027-06-03T00:00Z").0["retried"], 0);
        assert!(!one::<bool>("SELECT payments.has_active_subscription('cust_ic', at => '2027-06-02T00:00Z')"));
    }

    #[pg_test]
    fn a_renewal_waiting_on_3_d_secure_is_past_due_and_dunned() {
        renewals_final_at_once();
        one::<String>("SELECT code FROM payments.create_plan('tds', 'usd', 1000, 'month', trial_days => 7)");
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('tds1', 'cust_tds', 'tds', 'pm_card_authenticationRequired', at => '2027-06-01T00:00Z')",
        );
        run_billing("2027-06-08T00:00Z");
        let (_, _, _, pay) = invoice_of(&sub, 1);
        requires_action(&pay, "pi_tds1", 100000);
        assert_eq!(sub_status(&sub), "past_due 1");
        assert!(!one::<bool>("SELECT payments.has_active_subscription('cust_tds', at => '2027-06-11T00:00Z')"));
        assert_eq!(run_billing("2027-06-09T00:00Z").0["retried"], 1, "retried on the dunning schedule");
        let (_, _, _, retry) = invoice_of(&sub, 1);
        assert_ne!(retry, pay);
        assert_eq!(
            one::<String>(&format!("SELECT kind FROM payments.provider_commands WHERE payment_id = '{pay}'")),
            "cancel",
            "the attempt waiting on the customer is canceled, so it cannot be paid beside the retry"
        );
    }

    #[pg_test]
    fn paying_an_older_invoice_leaves_the_subscription_past_due_while_the_latest_failed() {
        renewals_final_at_once();
        one::<String>("SELECT code FROM payments.create_plan('old', 'usd', 20, 'month', trial_days => 7)");
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('ol1', 'cust_ol', 'old', 'pm_card_visa', at => '2027-06-01T00:00Z')",
        );
        run_billing("2027-06-08T00:00Z");
        let (_, _, _, pay1) = invoice_of(&sub, 1);
        settle(&pay1, "pi_ol1", 2000, "failed");
        run_billing("2027-07-08T00:00Z");
        let (_, _, _, pay2) = invoice_of(&sub, 2);
        settle(&pay2, "pi_ol2", 2000, "failed");
        // The first invoice's retry is paid; the latest is still unpaid.
        let (_, _, _, retry1) = invoice_of(&sub, 1);
        settle(&retry1, "pi_ol1b", 2000, "succeeded");
        assert_eq!(invoice_of(&sub, 1).1, "paid");
        assert_eq!(sub_status(&sub), "past_due 2");
        assert!(!one::<bool>("SELECT payments.has_active_subscription('cust_ol', at => '2027-07-20T00:00Z')"));
    }

    #[pg_test]
    fn resuming_starts_a_new_period_and_bills_none_of_the_paused_ones() {
        renewals_final_at_once();
        one::<String>("SELECT code FROM payments.create_plan('pz', 'usd', 10, 'month', trial_days => 14)");
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('pz1', 'cust_pz', 'pz', 'pm_card_visa', at => '2026-12-01T00:00Z')",
        );
        run_billing("2026-12-15T00:00Z");
        let (_, _, _, pay) = invoice_of(&sub, 1);
        settle(&pay, "pi_pz1", 1000, "succeeded");
        one::<String>(&format!("SELECT status FROM payments.pause_subscription('{sub}')"));
        one::<String>(&format!("SELECT status FROM payments.resume_subscription('{sub}', '2027-04-15T00:00Z')"));
        assert_eq!(
            sub_field(
                &sub,
                "status || ' ' || period_number || ' ' || current_period_start || ' ' || current_period_end"
            ),
            "active 2 2027-04-15 00:00:00+00 2027-05-15 00:00:00+00"
        );
        assert_eq!(run_billing("2027-04-20T00:00Z").0["renewed"], 0);
        assert_eq!(one::<i64>(&format!("SELECT count(*) FROM payments.invoices WHERE subscription_id = '{sub}'")), 2);
        // Paused in its trial, resumed after it: billed from the resume, not the trial's end.
        let trial = one::<String>(
            "SELECT id FROM payments.create_subscription('pz2', 'cust_pz2', 'pz', 'pm_card_visa', at => '2027-01-01T00:00Z')",
        );
        one::<String>(&format!("SELECT status FROM payments.pause_subscription('{trial}')"));
        one::<String>(&format!("SELECT status FROM payments.resume_subscription('{trial}', '2027-03-01T00:00Z')"));
        assert_eq!(
            one::<String>(&format!(
                "SELECT count(*) || ' ' || min(period_start) FROM payments.invoices WHERE subscription_id = '{trial}'"
            )),
            "1 2027-03-01 00:00:00+00"
        );
    }

    #[pg_test]
    fn a_meters_usage_is_billed_by_one_subscription_of_a_customer() {
        one::<String>("SELECT code FROM payments.create_meter('tok', 'sum')");
        let metered = r#"'[{"meter": "tok", "price": {"mode": "per_unit", "tiers": [{"up_to": null, "unit_amount_minor": 1}]}}]'"#;
        one::<String>(&format!("SELECT code FROM payments.create_plan('ma', 'usd', 0, 'month', metered => {metered})"));
        one::<String>(&format!("SELECT code FROM payments.create_plan('mb', 'usd', 0, 'month', metered => {metered})"));
        one::<String>("SELECT code FROM payments.create_plan('mc', 'usd', 0, 'month')");
        let a = one::<String>("SELECT id FROM payments.create_subscription('mt1', 'cust_mt', 'ma')");
        assert_eq!(sqlstate("SELECT payments.create_subscription('mt2', 'cust_mt', 'mb')"), "PM206");
        let c = one::<String>("SELECT id FROM payments.create_subscription('mt3', 'cust_mt', 'mc')");
        assert_eq!(sqlstate(&format!("SELECT payments.change_plan('{c}', 'mb')")), "PM206");
        // Another customer is not concerned; once the first ends, the meter is free.
        one::<String>("SELECT id FROM payments.create_subscription('mt4', 'cust_mt_other', 'mb')");
        one::<String>(&format!("SELECT status FROM payments.cancel_subscription('{a}', false)"));
        one::<String>("SELECT id FROM payments.create_subscription('mt2', 'cust_mt', 'mb')");
    }

    #[pg_test]
    fn usage_is_priced_at_the_plan_it_was_used_under_and_invoiced_when_a_subscription_ends() {
        one::<String>("SELECT code FROM payments.create_meter('units', 'sum')");
        let plan = |code: &str, cents: i32| {
            let metered = format!(
                r#"'[{{"meter": "units", "price": {{"mode": "per_unit", "tiers": [{{"up_to": null, "unit_amount_minor": {cents}}}]}}}}]'"#
            );
            one::<String>(&format!(
                "SELECT code FROM payments.create_plan('{code}', 'usd', 0, 'month', metered => {metered})"
            ))
        };
        plan("cheap", 1);
        plan("dear", 10);
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('up1', 'cust_up', 'cheap', 'pm_card_visa', at => now() - interval '10 days')",
        );
        let record = |key: &str, ago: &str| {
            one::<String>(&format!(
                "SELECT outcome FROM payments.record_usage('{key}', 'cust_up', 'units', 100, now() - interval '{ago}')"
            ))
        };
        record("u1", "5 days");
        one::<String>(&format!(
            "SELECT status FROM payments.change_plan('{sub}', 'dear', at => now() - interval '3 days')"
        ));
        record("u2", "1 day");
        let usage_billed = |kind: &str| {
            one::<String>(&format!(
                "SELECT coalesce(sum(l.amount_minor), 0)::text FROM payments.invoice_lines l JOIN payments.invoices i
                 ON i.customer_id = l.customer_id AND i.id = l.invoice_id
                 WHERE i.subscription_id = '{sub}' AND i.kind = '{kind}' AND l.kind = 'usage'"
            ))
        };
        assert_eq!(usage_billed("proration"), "100", "100 units at 1 cent, on the change");
        one::<String>(&format!("SELECT status FROM payments.cancel_subscription('{sub}', false)"));
        assert_eq!(usage_billed("final"), "1000", "100 units at 10 cents, when it ended");
        // Canceled at period end: the last period's usage is invoiced when it ends.
        one::<String>("SELECT code FROM payments.create_plan('pe', 'usd', 0, 'week', metered => '[{\"meter\": \"units\", \"price\": {\"mode\": \"per_unit\", \"tiers\": [{\"up_to\": null, \"unit_amount_minor\": 3}]}}]')");
        let pe = one::<String>(
            "SELECT id FROM payments.create_subscription('pe1', 'cust_pe', 'pe', 'pm_card_visa', at => now() - interval '6 days')",
        );
        one::<String>(
            "SELECT outcome FROM payments.record_usage('p1', 'cust_pe', 'units', 100, now() - interval '2 days')",
        );
        one::<String>(&format!("SELECT status FROM payments.cancel_subscription('{pe}')"));
        assert_eq!(run_billing(&one::<String>("SELECT (now() + interval '2 days')::text")).0["ended"], 1);
        assert_eq!(
            one::<String>(&format!(
                "SELECT total_minor::text FROM payments.invoices WHERE subscription_id = '{pe}' AND kind = 'final'"
            )),
            "300"
        );
    }

    #[pg_test]
    fn a_downgrade_credits_only_what_was_paid() {
        one::<String>("SELECT code FROM payments.create_plan('lo', 'usd', 10, 'month')");
        one::<String>("SELECT code FROM payments.create_plan('hi', 'usd', 1000, 'month')");
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('dg1', 'cust_dg', 'lo', 'pm_card_visa', at => '2027-01-01T00:00Z')",
        );
        let (_, _, _, pay) = invoice_of(&sub, 1);
        settle(&pay, "pi_dg1", 1000, "succeeded");
        one::<String>(&format!("SELECT status FROM payments.change_plan('{sub}', 'hi', at => '2027-01-16T12:00Z')"));
        let proration = one::<String>(&format!(
            "SELECT id FROM payments.invoices WHERE subscription_id = '{sub}' AND kind = 'proration'"
        ));
        let upgrade_pay = one::<String>(&format!("SELECT payment_id FROM payments.invoices WHERE id = '{proration}'"));
        settle(&upgrade_pay, "pi_dg2", 49500, "failed");
        one::<String>(&format!("SELECT status FROM payments.change_plan('{sub}', 'lo', at => '2027-01-16T12:00Z')"));
        assert_eq!(
            one::<i64>("SELECT count(*) FROM payments.balances('cust_dg') WHERE account = 'balance' AND posted <> 0"),
            0,
            "no credit for the upgrade that was never paid"
        );
        assert_eq!(one::<String>(&format!("SELECT status FROM payments.invoices WHERE id = '{proration}'")), "void");
    }

    #[pg_test]
    fn one_subscription_that_cannot_be_billed_does_not_stop_the_others() {
        one::<String>("SELECT code FROM payments.create_meter('big', 'sum')");
        one::<String>("SELECT code FROM payments.create_plan('bg', 'usd', 1, 'week', metered => '[{\"meter\": \"big\", \"price\": {\"mode\": \"per_unit\", \"tiers\": [{\"up_to\": null, \"unit_amount_minor\": 1}]}}]')");
        one::<String>("SELECT code FROM payments.create_plan('fine', 'usd', 1, 'week')");
        // Usage recorded before a subscription billed its meter is checked by nobody; together it
        // is more than one payment can charge.
        one::<String>("SELECT outcome FROM payments.record_usage('b1', 'cust_bg', 'big', 900000000000, now() - interval '2 days')");
        one::<String>(
            "SELECT outcome FROM payments.record_usage('b2', 'cust_bg', 'big', 900000000000, now() - interval '1 day')",
        );
        let bad = one::<String>(
            "SELECT id FROM payments.create_subscription('bg1', 'cust_bg', 'bg', 'pm_card_visa', at => now() - interval '6 days')",
        );
        let good = one::<String>(
            "SELECT id FROM payments.create_subscription('bg2', 'cust_ok', 'fine', 'pm_card_visa', at => now() - interval '6 days')",
        );
        for (sub, pi) in [(&bad, "pi_bg1"), (&good, "pi_ok1")] {
            let (_, _, _, pay) = invoice_of(sub, 1);
            settle(&pay, pi, 100, "succeeded");
        }
        let at = one::<String>("SELECT (now() + interval '2 days')::text");
        let run = run_billing(&at);
        assert_eq!(run.0["renewed"], 1, "{}", run.0);
        assert_eq!(run.0["failed"][0]["subscription_id"], bad.as_str());
        assert_eq!(run.0["failed"][0]["sqlstate"], "PM104");
        assert_eq!(sub_status(&good), "active 2");
        assert_eq!(sub_status(&bad), "active 1", "rolled back to where it was");
        run_billing(&at);
        assert_eq!(
            one::<String>(&format!(
                "SELECT sqlstate || ' ' || attempts FROM payments.billing_failures WHERE subscription_id = '{bad}'"
            )),
            "PM104 2"
        );
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM payments.subscription_events WHERE subscription_id = '{bad}' AND reason = 'billing failed'"
            )),
            1,
            "its history hears of it once"
        );
    }

    #[pg_test]
    fn usage_that_would_price_the_next_invoice_above_one_payment_is_refused_when_recorded() {
        one::<String>("SELECT code FROM payments.create_meter('tok', 'sum')");
        one::<String>("SELECT code FROM payments.create_meter('req', 'count')");
        one::<String>(
            r#"SELECT code FROM payments.create_plan('cap', 'usd', 1, 'week', metered => '[
                {"meter": "tok", "price": {"mode": "per_unit", "tiers": [{"up_to": null, "unit_amount_minor": 1}]}},
                {"meter": "req", "price": {"mode": "per_unit", "tiers": [{"up_to": null, "unit_amount_minor": 1}]}}]')"#,
        );
        let sub =
            one::<String>("SELECT id FROM payments.create_subscription('cap1', 'cust_cap', 'cap', 'pm_card_visa')");
        let (_, _, _, pay) = invoice_of(&sub, 1);
        settle(&pay, "pi_cap1", 100, "succeeded");
        let record = |key: &str, meter: &str, quantity: &str| {
            format!("SELECT outcome FROM payments.record_usage('{key}', 'cust_cap', '{meter}', {quantity})")
        };
        // A count meter counts the event, whatever its quantity says.
        assert_eq!(one::<String>(&record("r1", "req", "999999999999999")), "created");
        // Fee 100 + 1 request + tokens up to the last minor unit one payment can charge.
        assert_eq!(one::<String>(&record("t1", "tok", "500000000000")), "created");
        assert_eq!(one::<String>(&record("t2", "tok", "499999999898")), "created");
        // Each of these fits alone; on top of the others it does not.
        assert_eq!(sqlstate(&record("t3", "tok", "1")), "PM104");
        assert_eq!(sqlstate(&record("r2", "req", "0")), "PM104");
        assert_eq!(one::<String>(&record("t2", "tok", "499999999898")), "replayed", "a retry is still answered");
        let batch = one::<pgrx::JsonB>(
            r#"SELECT payments.record_usage_batch('[{"idempotency_key":"t4","customer_id":"cust_cap","meter":"tok","quantity":1},
                {"idempotency_key":"o1","customer_id":"cust_other","meter":"tok","quantity":5}]')"#,
        );
        assert_eq!(batch.0[0]["error"]["sqlstate"], "PM104", "{}", batch.0);
        assert_eq!(batch.0[1]["outcome"], "created", "another customer's usage is not held back");
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.usage_events WHERE customer_id = 'cust_cap'"), 3);
        // What was accepted is billed: exactly the most one payment can charge.
        run_billing(&one::<String>("SELECT (now() + interval '8 days')::text"));
        let (invoice, _, _, _) = invoice_of(&sub, 2);
        assert_eq!(
            one::<String>(&format!("SELECT total_minor::text FROM payments.invoices WHERE id = '{invoice}'")),
            "999999999999"
        );
    }

    #[pg_test]
    fn mrr_counts_each_paid_period_subscription_by_its_monthly_fee() {
        one::<String>("SELECT code FROM payments.create_plan('mrr_m', 'usd', 30, 'month')");
        one::<String>("SELECT code FROM payments.create_plan('mrr_y', 'usd', 120, 'year')");
        one::<String>("SELECT code FROM payments.create_plan('mrr_w', 'usd', 7, 'week')");
        one::<String>("SELECT code FROM payments.create_plan('mrr_q', 'eur', 90, 'month', interval_count => 3)");
        one::<String>("SELECT code FROM payments.create_plan('mrr_t', 'usd', 50, 'month', trial_days => 14)");
        for (i, plan, minor, currency) in
            [(1, "mrr_m", 3000, "usd"), (2, "mrr_y", 12000, "usd"), (3, "mrr_w", 700, "usd"), (4, "mrr_q", 9000, "eur")]
        {
            let sub = one::<String>(&format!(
                "SELECT id FROM payments.create_subscription('mrr{i}', 'cust_mrr{i}', '{plan}', 'pm_card_visa')"
            ));
            let (_, _, _, pay) = invoice_of(&sub, 1);
            // The provider's answer in the plan's own currency (a later key wins in jsonb).
            let paid = intent(&format!("pi_mrr{i}"), minor, &format!(r#","currency":"{currency}""#));
            one::<String>(&format!(
                "SELECT outcome FROM payments.record_provider_result('{pay}', 'stripe', 'pi_mrr{i}', 'succeeded', '{paid}')"
            ));
        }
        // Not in MRR: a trial, a subscription that never paid, one canceled.
        one::<String>("SELECT id FROM payments.create_subscription('mrr5', 'cust_mrr5', 'mrr_t', 'pm_card_visa')");
        one::<String>("SELECT id FROM payments.create_subscription('mrr6', 'cust_mrr6', 'mrr_m', 'pm_card_visa')");
        let gone =
            one::<String>("SELECT id FROM payments.create_subscription('mrr7', 'cust_mrr7', 'mrr_m', 'pm_card_visa')");
        let (_, _, _, pay) = invoice_of(&gone, 1);
        settle(&pay, "pi_mrr7", 3000, "succeeded");
        one::<String>(&format!("SELECT status FROM payments.cancel_subscription('{gone}', at_period_end => false)"));
        // 30.00 + 120.00/12 + 7.00 x 52/12 (30.33) = 70.33 USD; 90.00 every 3 months = 30.00 EUR.
        assert_eq!(
            one::<String>(
                "SELECT string_agg(currency || ' ' || mrr || ' ' || mrr_minor || ' ' || subscriptions, '; ' ORDER BY currency)
                 FROM payments.mrr WHERE currency IN ('USD', 'EUR')"
            ),
            "EUR 30.00 3000 1; USD 70.33 7033 3"
        );
        assert_eq!(
            one::<String>(
                "SELECT string_agg(status || ':' || in_mrr, ',' ORDER BY customer_id) FROM payments.subscription_revenue
                 WHERE customer_id LIKE 'cust_mrr%'"
            ),
            "active:true,active:true,active:true,active:true,trialing:false,incomplete:false,canceled:false"
        );
    }

    #[pg_test]
    fn subscriptions_and_invoices_move_only_along_their_lifecycles() {
        one::<String>("SELECT code FROM payments.create_plan('lc', 'usd', 10, 'month')");
        let sub = one::<String>("SELECT id FROM payments.create_subscription('lc1', 'cust_lc', 'lc', 'pm_card_visa')");
        let (invoice, _, _, pay) = invoice_of(&sub, 1);
        settle(&pay, "pi_lc1", 1000, "succeeded");
        one::<String>(&format!("SELECT status FROM payments.cancel_subscription('{sub}', at_period_end => false)"));
        assert_eq!(sub_status(&sub), "canceled 1");
        // Not even the table's owner brings back what ended, or unpays what was paid.
        assert_eq!(
            sqlstate(&format!("UPDATE payments.subscriptions SET status = 'active' WHERE id = '{sub}'")),
            "PM202"
        );
        assert_eq!(sqlstate(&format!("UPDATE payments.invoices SET status = 'open' WHERE id = '{invoice}'")), "PM202");
        // A change that is no change of status passes.
        one::<i64>(&format!(
            "WITH u AS (UPDATE payments.subscriptions SET status = status WHERE id = '{sub}' RETURNING 1) SELECT count(*) FROM u"
        ));
        assert_eq!(sub_status(&sub), "canceled 1");
    }

    #[pg_test]
    fn an_invoice_key_cannot_be_claimed_before_its_invoice_exists() {
        one::<String>("SELECT code FROM payments.create_plan('pk', 'usd', 7, 'week')");
        let sub = one::<String>("SELECT id FROM payments.create_subscription('pk1', 'cust_pk', 'pk', 'pm_card_visa')");
        let (_, _, _, pay) = invoice_of(&sub, 1);
        settle(&pay, "pi_pk1", 700, "succeeded");
        // A caller claims what the key of the next renewal used to be.
        one::<String>(&format!("SELECT id FROM payments.create_payment('invoice:{sub}:2:1', 'cust_pk', 0.01, 'usd')"));
        run_billing(&one::<String>("SELECT (now() + interval '8 days')::text"));
        let (invoice, _, _, renewal) = invoice_of(&sub, 2);
        assert_eq!(
            one::<String>(&format!("SELECT amount || ' ' || (metadata ->> 'invoice_id') FROM payments.payment_details WHERE id = '{renewal}'")),
            format!("7.00 {invoice}")
        );
    }

    #[pg_test]
    fn a_refund_moves_only_on_evidence_naming_its_own_payment() {
        add_secret(STRIPE_SECRET);
        let p1 = paid("rf1", "cust_rf", "pi_rf1");
        let p2 = paid("rf2", "cust_rf", "pi_rf2");
        let r1 = one::<String>(&format!("SELECT id FROM payments.create_refund('k1', '{p1}')"));
        one::<String>(&format!(
            "SELECT outcome FROM payments.record_command_result('{}', true, 'succeeded', '{}')",
            refund_command(&r1),
            refund_object("re_rf1", "pi_rf1", 1000, "succeeded", "")
        ));
        let r2 = one::<String>(&format!("SELECT id FROM payments.create_refund('k2', '{p2}')"));
        one::<String>(&format!(
            "SELECT outcome FROM payments.record_command_result('{}', true, 'succeeded', '{}')",
            refund_command(&r2),
            refund_object("re_rf2", "pi_rf2", 1000, "succeeded", "")
        ));
        // Signed, but R1's refund with P2's PaymentIntent.
        let forged = refund_object("re_rf1", "pi_rf2", 1000, "failed", r#","failure_reason":"unknown""#);
        let (b, s) = signed_event("evt_rf", "refund.failed", &forged, STRIPE_SECRET, now_unix());
        assert_eq!(ingest(&b, &s), "mismatch");
        assert_eq!(refunded(&p1), "10.00 full");
        assert_eq!(refunded(&p2), "10.00 full");
        assert_eq!(sqlstate(&format!("SELECT payments.create_refund('k3', '{p1}')")), "PM207");
        assert_eq!(one::<i64>(&format!("SELECT count(*) FROM payments.anomalies WHERE payment_id = '{p2}'")), 1);
    }

    #[pg_test]
    fn disputes_never_exceed_what_was_captured_and_block_refunds_while_open() {
        add_secret(STRIPE_SECRET);
        let id = paid("ds1", "cust_ds", "pi_ds1");
        let t = now_unix();
        let dispute = |dp: &str, status: &str, at: i64| {
            let (b, s) = signed_event(
                &format!("evt_{dp}_{status}"),
                "charge.dispute.created",
                &dispute_object(dp, "pi_ds1", 1000, status),
                STRIPE_SECRET,
                at,
            );
            ingest(&b, &s)
        };
        assert_eq!(dispute("dp_a", "needs_response", t), "applied");
        assert_eq!(sqlstate(&format!("SELECT payments.create_refund('k1', '{id}')")), "PM206", "funds withheld");
        assert_eq!(dispute("dp_b", "needs_response", t + 1), "mismatch");
        assert_eq!(dispute("dp_c", "needs_response", t + 2), "mismatch");
        assert_eq!(one::<String>(&format!("SELECT amount_disputed::text FROM payments.get_payment('{id}')")), "10.00");
    }

    #[pg_test]
    fn a_receipt_names_only_the_invoice_its_payment_paid() {
        one::<String>("SELECT code FROM payments.create_plan('rcp', 'usd', 7, 'month')");
        let sub =
            one::<String>("SELECT id FROM payments.create_subscription('rcp1', 'cust_rcp', 'rcp', 'pm_card_visa')");
        let (invoice, _, _, _) = invoice_of(&sub, 1);
        let other = one::<String>(&format!(
            "SELECT id FROM payments.create_payment('rcp2', 'cust_rcp', 10, 'usd', 'pm_card_visa', metadata => '{{\"invoice_id\": \"{invoice}\"}}')"
        ));
        one::<String>(&format!(
            "SELECT status FROM payments.record_provider_result('{other}', 'stripe', 'pi_rcp2', 'succeeded', '{}')",
            intent("pi_rcp2", 1000, "")
        ));
        assert!(one::<pgrx::JsonB>(&format!("SELECT payments.receipt('{other}')")).0["invoice"].is_null());
    }

    #[pg_test]
    fn a_consume_request_id_reused_for_another_request_is_refused() {
        one::<String>("SELECT code FROM payments.create_plan('cr', 'usd', 0, 'month', features => '{\"calls\": 10, \"seats\": 2}')");
        one::<String>("SELECT id FROM payments.create_subscription('cr1', 'cust_cr', 'cr')");
        assert_eq!(one::<String>("SELECT outcome FROM payments.consume('cust_cr', 'calls', 2, 'req1')"), "consumed");
        assert_eq!(one::<String>("SELECT outcome FROM payments.consume('cust_cr', 'calls', 2.0, 'req1')"), "replayed");
        assert_eq!(sqlstate("SELECT payments.consume('cust_cr', 'calls', 3, 'req1')"), "PM201");
        assert_eq!(sqlstate("SELECT payments.consume('cust_cr', 'nothing', 2, 'req1')"), "PM201");
    }

    #[pg_test]
    fn reconciliation_windows_are_bounded_and_the_unfiltered_list_reads_an_index() {
        for (from, to) in [("-infinity", "2027-01-01"), ("2027-01-01", "infinity"), ("2027-01-01", "2027-06-01")] {
            assert_eq!(sqlstate(&format!("SELECT payments.reconciliation_window('{from}', '{to}')")), "PM100");
            assert_eq!(sqlstate(&format!("SELECT payments.reconcile('{from}', '{to}', 'stripe')")), "PM100");
        }
        assert_eq!(
            one::<String>(
                "SELECT from_unix || ' ' || to_unix FROM payments.reconciliation_window('2027-01-01Z', '2027-01-02Z')"
            ),
            "1798761600 1798848000"
        );
        Spi::run("SET LOCAL enable_sort = off").unwrap();
        let plan = one::<pgrx::Json>(
            "EXPLAIN (FORMAT JSON) SELECT * FROM payments.payment_details d ORDER BY d.id DESC LIMIT 10",
        );
        assert!(!plan.0.to_string().contains("\"Sort\""), "{}", plan.0);
    }

    #[pg_test]
    fn a_late_success_of_an_earlier_attempt_pays_the_invoice_and_money_for_nothing_goes_back() {
        renewals_final_at_once();
        one::<String>("SELECT code FROM payments.create_plan('late', 'usd', 30, 'month', trial_days => 7)");
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('lt1', 'cust_lt', 'late', 'pm_card_authenticationRequired', at => '2027-06-01T00:00Z')",
        );
        run_billing("2027-06-08T00:00Z");
        let (_, _, _, first) = invoice_of(&sub, 1);
        requires_action(&first, "pi_lt1", 3000);
        run_billing("2027-06-09T00:00Z");
        let (_, _, _, second) = invoice_of(&sub, 1);
        assert_ne!(first, second, "the retry is a second attempt");
        // The customer completes 3-D Secure on the first attempt after all: it pays the invoice.
        settle(&first, "pi_lt1", 3000, "succeeded");
        let (_, status, _, paid_by) = invoice_of(&sub, 1);
        assert_eq!((status.as_str(), paid_by.as_str()), ("paid", first.as_str()));
        assert_eq!(sub_status(&sub), "active 1");
        // The second attempt was already at the provider and succeeds too: refunded in full.
        settle(&second, "pi_lt2", 3000, "succeeded");
        let refunded = |payment: &str| {
            one::<String>(&format!(
                "SELECT coalesce(string_agg(amount || ' ' || status, ','), 'none') FROM payments.refund_details WHERE payment_id = '{payment}'"
            ))
        };
        assert_eq!(refunded(&second), "30.00 pending");
        assert_eq!(refunded(&first), "none");
        assert_eq!(invoice_of(&sub, 1).3, first);
        // An incomplete subscription expired with its first attempt waiting on 3-D Secure; the
        // customer completes it later: nothing was delivered, the money goes back.
        one::<String>("SELECT code FROM payments.create_plan('late_now', 'usd', 30, 'month')");
        let expired = one::<String>(
            "SELECT id FROM payments.create_subscription('lt2', 'cust_lt2', 'late_now', 'pm_card_authenticationRequired', at => '2027-06-01T00:00Z')",
        );
        let (_, _, _, waiting) = invoice_of(&expired, 1);
        requires_action(&waiting, "pi_lt3", 3000);
        run_billing("2027-06-02T00:00Z");
        assert_eq!(sub_status(&expired), "incomplete_expired 1");
        settle(&waiting, "pi_lt3", 3000, "succeeded");
        assert_eq!(invoice_of(&expired, 1).1, "void");
        assert_eq!(refunded(&waiting), "30.00 pending");
    }

    #[pg_test]
    fn a_plan_change_after_the_period_ended_waits_for_the_renewal() {
        one::<String>("SELECT code FROM payments.create_plan('mo', 'usd', 0, 'month')");
        one::<String>("SELECT code FROM payments.create_plan('yr', 'usd', 0, 'year')");
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('pe1', 'cust_pc', 'mo', at => '2027-01-01T00:00Z')",
        );
        run_billing("2027-03-01T00:00Z");
        // Period 3 ended at April 1; the timer has not renewed it yet.
        one::<String>(&format!("SELECT status FROM payments.change_plan('{sub}', 'yr', at => '2027-04-01T00:30Z')"));
        assert_eq!(sub_field(&sub, "plan || ' ' || pending_plan"), "mo yr", "from the next period");
        run_billing("2027-04-01T01:00Z");
        assert_eq!(
            sub_field(&sub, "plan || ' ' || current_period_start || ' ' || current_period_end"),
            "yr 2027-04-01 00:00:00+00 2028-04-01 00:00:00+00"
        );
        // And back, late again: a month from the yearly period's end, never before its start.
        one::<String>(&format!("SELECT status FROM payments.change_plan('{sub}', 'mo', at => '2028-04-02T00:00Z')"));
        let run = run_billing("2028-04-03T00:00Z");
        assert_eq!(run.0["failed"], serde_json::json!([]), "{}", run.0);
        assert_eq!(sub_field(&sub, "plan || ' ' || current_period_end"), "mo 2028-05-01 00:00:00+00");
    }

    #[pg_test]
    fn canceling_a_subscription_that_never_started_voids_its_invoice_and_refunds_a_late_payment() {
        one::<String>("SELECT code FROM payments.create_plan('ns', 'usd', 12, 'month')");
        let sub = one::<String>("SELECT id FROM payments.create_subscription('ns1', 'cust_ns', 'ns', 'pm_card_visa')");
        let (_, _, _, pay) = invoice_of(&sub, 1);
        one::<String>(&format!("SELECT status FROM payments.cancel_subscription('{sub}', false)"));
        assert_eq!(invoice_of(&sub, 1).1, "void");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM payments.invoices WHERE customer_id = 'cust_ns' AND kind = 'final'"),
            0
        );
        // Its charge was already under way and succeeds: the money goes back.
        settle(&pay, "pi_ns1", 1200, "succeeded");
        assert_eq!(
            one::<String>(&format!(
                "SELECT amount || ' ' || status FROM payments.refund_details WHERE payment_id = '{pay}'"
            )),
            "12.00 pending"
        );
    }

    #[pg_test]
    fn the_period_at_falls_in_is_found_for_long_multi_month_plans() {
        one::<String>("SELECT code FROM payments.create_plan('bi', 'usd', 0, 'month', interval_count => 2, features => '{\"x\": 1}')");
        one::<String>("SELECT id FROM payments.create_subscription('bi1', 'cust_bi', 'bi', at => '2000-01-01T00:00Z')");
        assert_eq!(
            one::<String>(
                "SELECT period_start || ' ' || period_end FROM payments.entitlements('cust_bi', '2020-01-01T01:00Z')"
            ),
            "2020-01-01 00:00:00+00 2020-03-01 00:00:00+00"
        );
    }

    #[pg_test]
    fn webhook_endpoints_are_bounded_carry_no_credentials_and_readers_see_them_masked() {
        assert_eq!(
            sqlstate("SELECT payments.add_webhook_endpoint('http://user:pass@hooks.example.com/in')"),
            "PM100",
            "a user name would be sent as Basic auth"
        );
        one::<i32>("SELECT payments.set_webhook_endpoint_limit(2)");
        let first =
            one::<String>("SELECT id FROM payments.add_webhook_endpoint('https://hooks.example.com/in?token=s3cret')");
        one::<String>("SELECT id FROM payments.add_webhook_endpoint('https://hooks.example.com/b')");
        assert_eq!(sqlstate("SELECT payments.add_webhook_endpoint('https://hooks.example.com/c')"), "PM206");
        one::<bool>(&format!("SELECT payments.remove_webhook_endpoint('{first}')"));
        one::<String>("SELECT id FROM payments.add_webhook_endpoint('https://hooks.example.com/c')");
        assert_eq!(sqlstate("SELECT payments.set_webhook_endpoint_limit(0)"), "PM100");
        // Readers see the URL without its token, and cannot read the table.
        assert_eq!(
            one::<String>(&format!("SELECT url FROM payments.webhook_endpoint_list WHERE id = '{first}'")),
            "https://hooks.example.com/in?***"
        );
        Spi::run("SET LOCAL ROLE payments_reader").unwrap();
        assert_eq!(sqlstate("SELECT count(*) FROM payments.webhook_endpoints"), "42501");
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.webhook_endpoint_list WHERE url LIKE '%s3cret%'"), 0);
        Spi::run("RESET ROLE").unwrap();
        // Only the delivery worker's role may claim deliveries (they carry the signing secrets).
        let may_claim = |role: &str| {
            one::<bool>(&format!(
                "SELECT has_function_privilege('{role}', 'payments.claim_webhook_deliveries(int, interval, int, jsonb)', 'EXECUTE')"
            ))
        };
        assert!(may_claim("payments_worker"));
        assert!(!may_claim("payments_gateway"), "the application role never sees a secret");
        assert!(!may_claim("payments_reader"));
    }

    /// The ledger's transfers of a customer in order: `kind:debit>credit:amount unit`.
    fn ledger_of(customer: &str) -> String {
        one::<String>(&format!(
            "SELECT coalesce(string_agg(kind || ':' || debit_account || '>' || credit_account || ':' || amount || ' ' || unit,
                                        ',' ORDER BY transfer_id), '')
             FROM payments.ledger WHERE customer_id = '{customer}'"
        ))
    }

    /// The trial balance is zero, and what each grant keeps as left is what its transfers add up to.
    fn trial_balance_is_zero() -> bool {
        one::<bool>(
            "SELECT coalesce(bool_and(difference = 0 AND debits = credits), true) FROM payments.trial_balance()",
        ) && one::<i64>(
            "SELECT count(*) FROM payments.credit_grants g
                 WHERE g.remaining <> (SELECT coalesce(sum(CASE WHEN t.credit_account = 'credits' THEN t.amount
                                                                ELSE -t.amount END), 0)
                                       FROM payments.ledger_transfers t
                                       WHERE t.customer_id = g.customer_id AND t.grant_id = g.id)",
        ) == 0
    }

    #[pg_test]
    fn every_money_movement_posts_to_the_ledger_once_and_the_trial_balance_stays_zero() {
        add_secret(STRIPE_SECRET);
        let a = paid("lg1", "cust_lg", "pi_lg1");
        // A repeated provider answer moves nothing again.
        assert_eq!(
            one::<String>(&format!(
                "SELECT outcome FROM payments.record_provider_result('{a}', 'stripe', 'pi_lg1', 'succeeded', '{}')",
                intent("pi_lg1", 1000, "")
            )),
            "noop"
        );
        let refund = one::<String>(&format!("SELECT id FROM payments.create_refund('k1', '{a}', 2.50)"));
        one::<String>(&format!(
            "SELECT outcome FROM payments.record_command_result('{}', true, 'succeeded', '{}')",
            refund_command(&refund),
            refund_object("re_lg", "pi_lg1", 250, "succeeded", "")
        ));
        // The bank returns the refund: the money is back with the provider.
        let failed = refund_object("re_lg", "pi_lg1", 250, "failed", r#","failure_reason":"lost_or_stolen_card""#);
        let t = now_unix();
        let (b, s) = signed_event("evt_lg_r", "refund.failed", &failed, STRIPE_SECRET, t);
        assert_eq!(ingest(&b, &s), "applied");
        paid("lg2", "cust_lg", "pi_lg2");
        for (n, status, ty) in [(1, "needs_response", "charge.dispute.created"), (2, "won", "charge.dispute.closed")] {
            let (b, s) = signed_event(
                &format!("evt_lg_d{n}"),
                ty,
                &dispute_object("dp_lg", "pi_lg2", 1000, status),
                STRIPE_SECRET,
                t + n,
            );
            assert_eq!(ingest(&b, &s), "applied");
        }
        assert_eq!(
            ledger_of("cust_lg"),
            [
                "payment:provider_clearing>revenue:10.00 USD",
                "refund:refunds>provider_clearing:2.50 USD",
                "refund:provider_clearing>refunds:2.50 USD",
                "payment:provider_clearing>revenue:10.00 USD",
                "dispute:disputes>provider_clearing:10.00 USD",
                "dispute:provider_clearing>disputes:10.00 USD",
            ]
            .join(",")
        );
        // Each transfer names what it records.
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM payments.ledger WHERE customer_id = 'cust_lg' AND kind = 'refund' AND reference = '{refund}'"
            )),
            2
        );
        // Card payments move the platform's accounts, none of the customer's own.
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.balances('cust_lg')"), 0);
        assert!(trial_balance_is_zero());
        assert_eq!(
            one::<String>("SELECT debits || ' ' || credits FROM payments.trial_balance() WHERE unit = 'USD'"),
            one::<String>(
                "SELECT sum(amount) FILTER (WHERE debit_account = 'provider_clearing') - sum(amount) FILTER (WHERE credit_account = 'provider_clearing')
                        || ' ' || (sum(amount) FILTER (WHERE credit_account = 'revenue'))
                 FROM payments.ledger WHERE unit = 'USD'"
            ),
            "every customer's clearing nets to what its revenue is"
        );
        // History is history.
        assert_eq!(sqlstate("UPDATE payments.ledger_transfers SET amount = 1"), "PM205");
        assert_eq!(sqlstate("DELETE FROM payments.ledger_transfers"), "PM205");
    }

    #[pg_test]
    fn credits_are_granted_once_per_key_and_expire_into_the_ledger() {
        let grant = "SELECT grant_id || ' ' || outcome FROM payments.grant_credits('g1', 'cust_cr', 1000, 'tokens',
                     '2030-01-01 00:00:00+00', 'calls', 1)";
        let first = one::<String>(grant);
        assert!(first.starts_with("cg_") && first.ends_with(" created"), "{first}");
        let id = first.split(' ').next().unwrap().to_string();
        assert_eq!(one::<String>(grant), format!("{id} replayed"));
        assert_eq!(
            sqlstate(
                "SELECT payments.grant_credits('g1', 'cust_cr', 999, 'tokens', '2030-01-01 00:00:00+00', 'calls', 1)"
            ),
            "PM201"
        );
        // Keys are per customer.
        assert!(
            one::<String>("SELECT outcome FROM payments.grant_credits('g1', 'cust_cr2', 1, 'tokens')") == "created"
        );
        one::<String>("SELECT outcome FROM payments.grant_credits('g2', 'cust_cr', 10.50, 'usd')");
        assert_eq!(
            one::<String>(
                "SELECT string_agg(account || ' ' || unit || ' ' || posted || ' ' || held || ' ' || available, ', ')
                 FROM payments.balances('cust_cr', '2029-12-31 00:00:00+00')"
            ),
            "credits USD 10.50 0.00 10.50, credits tokens 1000 0 1000"
        );
        // Past its expiry a grant is no longer available, even before it is posted out.
        assert_eq!(
            one::<String>("SELECT posted || ' ' || available FROM payments.balances('cust_cr', '2030-01-02') WHERE unit = 'tokens'"),
            "1000 0"
        );
        assert_eq!(one::<i32>("SELECT payments.expire_credits('2029-12-31')"), 0);
        assert_eq!(one::<i32>("SELECT payments.expire_credits('2030-01-01')"), 1);
        assert_eq!(one::<i32>("SELECT payments.expire_credits('2030-01-01')"), 0, "the same at twice does nothing new");
        assert_eq!(
            ledger_of("cust_cr"),
            "credit_grant:credits_issued>credits:1000 tokens,credit_grant:credits_issued>credits:10.50 USD,credit_expiry:credits>credits_issued:1000 tokens"
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT remaining || ' ' || applies_to || ' ' || priority || ' ' || expired_at FROM payments.credit_grant_details WHERE id = '{id}'"
            )),
            "0 calls 1 2030-01-01 00:00:00+00"
        );
        assert!(trial_balance_is_zero());
        // Bad input.
        for (sql, code) in [
            ("SELECT payments.grant_credits('g3', 'cust_cr', 1, 'Tokens!')", "PM106"),
            ("SELECT payments.grant_credits('g3', 'cust_cr', 1.5, 'tokens')", "PM101"),
            ("SELECT payments.grant_credits('g3', 'cust_cr', 1.001, 'USD')", "PM101"),
            ("SELECT payments.grant_credits('g3', 'cust_cr', 0, 'tokens')", "PM102"),
            ("SELECT payments.grant_credits('g3', 'cust_cr', 1e13, 'tokens')", "PM104"),
            ("SELECT payments.grant_credits('g3', 'cust_cr', NULL, 'tokens')", "PM100"),
            ("SELECT payments.grant_credits('g3', 'cust_cr', 1, 'tokens', now() - interval '1 second')", "PM100"),
            ("SELECT payments.grant_credits('', 'cust_cr', 1, 'tokens')", "PM100"),
            ("SELECT payments.grant_credits('g3', '', 1, 'tokens')", "PM100"),
            ("SELECT payments.grant_credits('g3', 'cust_cr', 1, 'tokens', priority => NULL)", "PM100"),
            ("SELECT payments.expire_credits('infinity')", "PM100"),
            ("SELECT payments.balances('cust_cr', NULL)", "PM100"),
        ] {
            assert_eq!(sqlstate(sql), code, "{sql}");
        }
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.credit_grants WHERE customer_id = 'cust_cr'"), 2);
        // Readers see the ledger and balances, never the keys; only the API grants.
        attempt("SELECT 1");
        Spi::run("SET LOCAL ROLE payments_reader").unwrap();
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.ledger WHERE customer_id = 'cust_cr'"), 3);
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.balances('cust_cr')"), 2);
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.credit_grant_details WHERE customer_id = 'cust_cr'"), 2);
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.hold_details"), 0);
        assert_eq!(sqlstate("SELECT idempotency_key FROM payments.ledger_transfers"), "42501");
        assert_eq!(sqlstate("SELECT payments.grant_credits('g9', 'cust_cr', 1, 'tokens')"), "42501");
        Spi::run("RESET ROLE").unwrap();
        Spi::run("SET LOCAL ROLE payments_gateway").unwrap();
        assert_eq!(
            one::<String>("SELECT outcome FROM payments.grant_credits('g9', 'cust_cr', 1, 'tokens')"),
            "created"
        );
        Spi::run("RESET ROLE").unwrap();
    }

    #[pg_test]
    fn holds_set_credits_aside_then_spend_what_the_work_cost_and_give_back_the_rest() {
        one::<String>("SELECT outcome FROM payments.grant_credits('h1', 'cust_h', 100, 'tokens')");
        one::<String>("SELECT outcome FROM payments.grant_credits('h2', 'cust_h', 50, 'tokens', priority => 1)");
        let reserve = |amount: &str, request: &str| {
            one::<String>(&format!(
                "SELECT coalesce(hold_id, '-') || ' ' || allowed || ' ' || available
                 FROM payments.reserve('cust_h', {amount}, 'tokens', '{request}')"
            ))
        };
        let first = reserve("120", "r1");
        let hold = first.split(' ').next().unwrap().to_string();
        assert!(hold.starts_with("hold_") && first.ends_with(" true 30"), "{first}");
        assert_eq!(reserve("120", "r1"), first, "a retry answers alike and sets nothing more aside");
        assert_eq!(sqlstate("SELECT payments.reserve('cust_h', 121, 'tokens', 'r1')"), "PM201");
        // Never more than there is; the refusal is an answer, and its retry the same answer.
        assert_eq!(reserve("40", "r2"), "- false 30");
        assert_eq!(reserve("40", "r2"), "- false 30");
        let balance =
            || one::<String>("SELECT posted || ' ' || held || ' ' || available FROM payments.balances('cust_h')");
        assert_eq!(balance(), "150 120 30");

        let settle = |amount: &str| {
            one::<String>(&format!(
                "SELECT status || ' ' || spent || ' ' || released || ' ' || outcome FROM payments.settle('{hold}', {amount})"
            ))
        };
        assert_eq!(sqlstate(&format!("SELECT payments.settle('{hold}', 121)")), "PM207");
        assert_eq!(settle("70"), "settled 70 50 applied");
        assert_eq!(settle("70"), "settled 70 50 replayed");
        assert_eq!(sqlstate(&format!("SELECT payments.settle('{hold}', 60)")), "PM202");
        assert_eq!(sqlstate(&format!("SELECT payments.release('{hold}')")), "PM202");
        assert_eq!(balance(), "80 0 80");
        // Spent from the first grant it drew on; the rest back where it came from.
        assert_eq!(
            one::<String>("SELECT string_agg(remaining::text, ',' ORDER BY priority) FROM payments.credit_grant_details WHERE customer_id = 'cust_h'"),
            "30,50"
        );
        assert_eq!(
            ledger_of("cust_h").split(',').skip(2).collect::<Vec<_>>().join(","),
            "hold:credits>holds:100 tokens,hold:credits>holds:20 tokens,hold_release:holds>credits:30 tokens,\
             hold_release:holds>credits:20 tokens,spend:holds>revenue:70 tokens"
        );

        // Released: all back. Expired: all back, by expire_holds (run_billing) at its time.
        let released = reserve("10", "r3").split(' ').next().unwrap().to_string();
        assert_eq!(
            one::<String>(&format!(
                "SELECT status || ' ' || released || ' ' || outcome FROM payments.release('{released}')"
            )),
            "released 10 applied"
        );
        assert_eq!(one::<String>(&format!("SELECT outcome FROM payments.release('{released}')")), "replayed");
        let expiring = one::<String>(
            "SELECT hold_id FROM payments.reserve('cust_h', 5, 'tokens', 'r4', '1 minute', '2030-01-01 00:00:00+00')",
        );
        assert_eq!(sqlstate(&format!("SELECT payments.settle('{expiring}', 1, '2030-01-01 00:02:00+00')")), "PM202");
        assert_eq!(one::<i32>("SELECT payments.expire_holds('2030-01-01 00:00:59+00')"), 0);
        assert_eq!(one::<i32>("SELECT payments.expire_holds('2030-01-01 00:01:00+00')"), 1);
        assert_eq!(one::<i32>("SELECT payments.expire_holds('2030-01-01 00:01:00+00')"), 0);
        assert_eq!(balance(), "80 0 80");
        assert_eq!(
            one::<String>("SELECT string_agg(status, ',' ORDER BY created_at, id) FROM payments.hold_details WHERE customer_id = 'cust_h'"),
            "settled,refused,released,expired"
        );
        assert!(trial_balance_is_zero());
        // Bad input; another customer's hold is unknown to a login bound elsewhere.
        for (sql, code) in [
            ("SELECT payments.reserve('cust_h', 1, 'tokens', '')", "PM100"),
            ("SELECT payments.reserve('cust_h', 1, 'tokens', 'r9', '0 seconds')", "PM100"),
            ("SELECT payments.reserve('cust_h', 1, 'tokens', 'r9', '31 days')", "PM100"),
            ("SELECT payments.reserve('cust_h', 0, 'tokens', 'r9')", "PM102"),
            ("SELECT payments.reserve('cust_h', 1, 'Tokens', 'r9')", "PM106"),
            ("SELECT payments.settle('hold_none', 1)", "PM204"),
            ("SELECT payments.release('hold_none')", "PM204"),
            ("SELECT payments.expire_holds(NULL)", "PM100"),
        ] {
            assert_eq!(sqlstate(sql), code, "{sql}");
        }
        assert_eq!(sqlstate("UPDATE payments.holds SET status = 'held'"), "PM202", "a closed hold stays closed");
    }

    #[pg_test]
    fn a_top_up_grants_its_credits_when_its_payment_succeeds_once_and_never_when_declined() {
        let top_up = |key: &str, amount: &str, pm: &str, credits: &str| {
            one::<String>(&format!(
                "SELECT id FROM payments.top_up('{key}', 'cust_tu', {amount}, 'usd', '{pm}', {credits})"
            ))
        };
        let paid = |id: &str, pi: &str, minor: i64, status: &str| {
            one::<String>(&format!(
                "SELECT status FROM payments.record_provider_result('{id}', 'stripe', '{pi}', '{status}', '{}')",
                intent(pi, minor, "")
            ))
        };
        let money = top_up("t1", "10", "pm_card_visa", "NULL");
        assert_eq!(top_up("t1", "10", "pm_card_visa", "NULL"), money, "a retry is the same payment");
        let balance = || {
            one::<String>(
                "SELECT coalesce(string_agg(unit || ' ' || posted, ', ' ORDER BY unit), '') FROM payments.balances('cust_tu')",
            )
        };
        assert_eq!(balance(), "", "nothing before the payment succeeds");
        assert_eq!(paid(&money, "pi_tu1", 1000, "succeeded"), "succeeded");
        assert_eq!(balance(), "USD 10.00");
        // A repeated success grants nothing more.
        assert_eq!(paid(&money, "pi_tu1", 1000, "succeeded"), "succeeded");
        assert_eq!(balance(), "USD 10.00");
        let tokens =
            top_up("t2", "5", "pm_card_visa", r#"'{"amount": 1000, "unit": "tokens", "applies_to": "calls"}'"#);
        assert_eq!(
            sqlstate(&format!(
                "SELECT payments.top_up('t2', 'cust_tu', 5, 'usd', 'pm_card_visa', '{}')",
                r#"{"amount": 2000, "unit": "tokens"}"#
            )),
            "PM201"
        );
        paid(&tokens, "pi_tu2", 500, "succeeded");
        assert_eq!(balance(), "USD 10.00, tokens 1000");
        let declined = top_up("t3", "5", "pm_card_chargeDeclined", "NULL");
        assert_eq!(paid(&declined, "pi_tu3", 500, "failed"), "failed");
        assert_eq!(balance(), "USD 10.00, tokens 1000", "a declined top-up grants nothing");
        // Metadata that names a top-up is no top-up.
        let forged = one::<String>(
            r#"SELECT id FROM payments.create_payment('t4', 'cust_tu', 0.01, 'usd', 'pm_card_visa', NULL,
                '{"top_up": "{\"amount\": 1000000, \"unit\": \"tokens\"}"}')"#,
        );
        paid(&forged, "pi_tu4", 1, "succeeded");
        assert_eq!(balance(), "USD 10.00, tokens 1000");
        assert_eq!(
            ledger_of("cust_tu"),
            "payment:provider_clearing>credits:10.00 USD,payment:provider_clearing>revenue:5.00 USD,\
             credit_grant:credits_issued>credits:1000 tokens,payment:provider_clearing>revenue:0.01 USD"
        );
        assert!(trial_balance_is_zero());
        for (sql, code) in [
            ("SELECT payments.top_up('t5', 'cust_tu', 5, 'usd', NULL)", "PM100"),
            ("SELECT payments.top_up('t5', 'cust_tu', 5, 'usd', 'pm_card_visa', '[1]')", "PM100"),
            ("SELECT payments.top_up('t5', 'cust_tu', 5, 'usd', 'pm_card_visa', '{\"amount\": 1}')", "PM100"),
            ("SELECT payments.top_up('t5', 'cust_tu', 5, 'usd', 'pm_card_visa', '{\"amount\": 1, \"unit\": \"T!\"}')", "PM106"),
            ("SELECT payments.top_up('t5', 'cust_tu', 5, 'usd', 'pm_card_visa', '{\"amount\": 1, \"unit\": \"tokens\", \"x\": 1}')", "PM100"),
            ("SELECT payments.top_up('t5', 'cust_tu', 5.001, 'usd', 'pm_card_visa')", "PM101"),
        ] {
            assert_eq!(sqlstate(sql), code, "{sql}");
        }
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.payments WHERE idempotency_key = 't5'"), 0);
    }

    #[pg_test]
    fn an_automatic_top_up_buys_once_per_crossing_and_never_after_a_failure() {
        one::<String>("SELECT outcome FROM payments.grant_credits('a1', 'cust_at', 3, 'usd')");
        assert!(one::<bool>("SELECT payments.set_auto_top_up('cust_at', 2.00, 10.00, 'pm_card_visa')"));
        let spend = |request: &str, amount: &str| {
            let hold = one::<String>(&format!(
                "SELECT hold_id FROM payments.reserve('cust_at', {amount}, 'usd', '{request}')"
            ));
            one::<String>(&format!("SELECT status FROM payments.settle('{hold}', {amount})"));
        };
        let top_ups = || {
            one::<String>(
                "SELECT coalesce(string_agg(status || ' ' || amount, ',' ORDER BY id), '') FROM payments.payment_details
                 WHERE customer_id = 'cust_at' AND metadata ? 'top_up'",
            )
        };
        spend("s1", "0.50");
        assert_eq!(top_ups(), "", "2.50 left: above the threshold");
        spend("s2", "1.00");
        assert_eq!(top_ups(), "requires_confirmation 10.00", "1.50 left: one top-up, charged by the gateway");
        spend("s3", "0.50");
        assert_eq!(top_ups(), "requires_confirmation 10.00", "none while the first is on its way");
        let first = one::<String>(
            "SELECT id FROM payments.payments WHERE customer_id = 'cust_at' AND metadata ? 'top_up' ORDER BY id LIMIT 1",
        );
        one::<String>(&format!(
            "SELECT status FROM payments.record_provider_result('{first}', 'stripe', 'pi_at1', 'succeeded', '{}')",
            intent("pi_at1", 1000, "")
        ));
        assert_eq!(one::<String>("SELECT available::text FROM payments.balances('cust_at')"), "11.00");
        spend("s4", "9.50");
        let second = one::<String>(
            "SELECT id FROM payments.payments WHERE customer_id = 'cust_at' AND metadata ? 'top_up' ORDER BY id DESC LIMIT 1",
        );
        assert_ne!(second, first, "a new crossing after the first succeeded buys again");
        one::<String>(&format!(
            "SELECT status FROM payments.record_provider_result('{second}', 'stripe', 'pi_at2', 'failed', '{}')",
            intent("pi_at2", 1000, "")
        ));
        spend("s5", "0.50");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM payments.payments WHERE customer_id = 'cust_at' AND metadata ? 'top_up'"),
            2,
            "after a failed top-up, none until the customer sets it again"
        );
        assert!(one::<bool>("SELECT payments.set_auto_top_up('cust_at', 2.00, 10.00, 'pm_card_visa')"));
        spend("s6", "0.10");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM payments.payments WHERE customer_id = 'cust_at' AND metadata ? 'top_up'"),
            3
        );
        assert!(!one::<bool>("SELECT payments.set_auto_top_up('cust_at', NULL, NULL, NULL)"));
        assert!(trial_balance_is_zero());
        for (sql, code) in [
            ("SELECT payments.set_auto_top_up('cust_at', 2, 10, NULL)", "PM100"),
            ("SELECT payments.set_auto_top_up('cust_at', 2, 0, 'pm_card_visa')", "PM102"),
            ("SELECT payments.set_auto_top_up('cust_at', 2.001, 10, 'pm_card_visa')", "PM101"),
            ("SELECT payments.set_auto_top_up('cust_at', 2, 10, 'pm_card_visa', 'tokens')", "PM103"),
            ("SELECT payments.set_auto_top_up('', 2, 10, 'pm_card_visa')", "PM100"),
        ] {
            assert_eq!(sqlstate(sql), code, "{sql}");
        }
    }

    #[pg_test]
    fn a_spend_limit_caps_holds_and_top_ups_per_utc_period_whatever_the_session_time_zone() {
        Spi::run("SET LOCAL TimeZone = 'Pacific/Kiritimati'").unwrap();
        one::<String>("SELECT outcome FROM payments.grant_credits('l1', 'cust_sl', 100, 'usd')");
        assert!(one::<bool>("SELECT payments.set_spend_limit('cust_sl', 50, 'usd', 'month')"));
        let reserve = |amount: &str, request: &str, at: &str| {
            one::<String>(&format!(
                "SELECT allowed || ' ' || coalesce(reason, '-') FROM payments.reserve('cust_sl', {amount}, 'usd', '{request}', '1 day', '{at}')"
            ))
        };
        let settle = |request: &str, amount: &str, at: &str| {
            one::<String>(&format!(
                "SELECT spent::text FROM payments.settle((SELECT id FROM payments.holds WHERE request_id = '{request}'), {amount}, '{at}')"
            ))
        };
        assert_eq!(reserve("30", "r1", "2030-01-10 00:00:00+00"), "true -");
        assert_eq!(reserve("30", "r2", "2030-01-10 00:00:00+00"), "false spend_limit_reached", "30 held of 50");
        assert_eq!(settle("r1", "20", "2030-01-10 01:00:00+00"), "20.00");
        assert_eq!(reserve("30", "r3", "2030-01-10 02:00:00+00"), "true -", "20 spent, 30 more fit");
        assert_eq!(settle("r3", "30", "2030-01-10 03:00:00+00"), "30.00");
        assert_eq!(reserve("1", "r4", "2030-01-31 23:59:59+00"), "false spend_limit_reached");
        // The month turns at midnight UTC (in Kiritimati it is already February 1st at 10:00 UTC of the 31st).
        assert_eq!(reserve("1", "r5", "2030-02-01 00:00:00+00"), "true -");
        assert_eq!(reserve("60", "r6", "2030-02-01 00:00:00+00"), "false insufficient_credits");
        // Top-ups count against the budget of their currency.
        assert!(one::<bool>("SELECT payments.set_spend_limit('cust_sl', 10, 'usd', 'day')"));
        let ok = one::<String>("SELECT status FROM payments.top_up('tu1', 'cust_sl', 8, 'usd', 'pm_card_visa')");
        assert_eq!(ok, "requires_confirmation");
        assert_eq!(sqlstate("SELECT payments.top_up('tu2', 'cust_sl', 3, 'usd', 'pm_card_visa')"), "PM210");
        assert_eq!(
            one::<String>("SELECT status FROM payments.top_up('tu1', 'cust_sl', 8, 'usd', 'pm_card_visa')"),
            "requires_confirmation",
            "a retry of the first is no new spend"
        );
        assert!(!one::<bool>("SELECT payments.set_spend_limit('cust_sl', NULL, 'usd', NULL)"));
        assert_eq!(sqlstate("SELECT payments.top_up('tu2', 'cust_sl', 3, 'usd', 'pm_card_visa')"), "ok");
        for (sql, code) in [
            ("SELECT payments.set_spend_limit('cust_sl', 5, 'usd', 'fortnight')", "PM100"),
            ("SELECT payments.set_spend_limit('cust_sl', 5.001, 'usd', 'day')", "PM101"),
            ("SELECT payments.set_spend_limit('cust_sl', 5, 'Usd!', 'day')", "PM106"),
            ("SELECT payments.set_spend_limit('', 5, 'usd', 'day')", "PM100"),
        ] {
            assert_eq!(sqlstate(sql), code, "{sql}");
        }
    }

    #[pg_test]
    fn apps_are_told_when_a_budget_is_half_used_nearly_used_and_used_and_before_credits_expire() {
        one::<String>("SELECT outcome FROM payments.grant_credits('e1', 'cust_ev', 100, 'usd')");
        one::<String>(
            "SELECT outcome FROM payments.grant_credits('e2', 'cust_ev', 5, 'tokens', '2030-01-10 00:00:00+00')",
        );
        one::<bool>("SELECT payments.set_spend_limit('cust_ev', 10, 'usd', 'day')");
        let told = |object: &str| {
            one::<String>(&format!(
                "SELECT coalesce(string_agg(type || coalesce(':' || (data ->> 'percent'), ''), ',' ORDER BY seq), '')
                 FROM payments.outbox_events WHERE customer_id = 'cust_ev' AND object = '{object}'"
            ))
        };
        for (amount, request) in [("5", "r1"), ("2", "r2"), ("3", "r3"), ("1", "r4")] {
            one::<bool>(&format!("SELECT allowed FROM payments.reserve('cust_ev', {amount}, 'usd', '{request}')"));
        }
        assert_eq!(told("spend_limit"), "spend_limit.reached:50,spend_limit.reached:80,spend_limit.reached:100");
        // A week ahead of its expiry, once.
        let run = |at: &str| one::<String>(&format!("SELECT payments.run_billing('{at}') ->> 'credits_expiring'"));
        assert_eq!(run("2030-01-02 00:00:00+00"), "0");
        assert_eq!(run("2030-01-03 00:00:00+00"), "1");
        assert_eq!(run("2030-01-04 00:00:00+00"), "0");
        assert_eq!(told("credits"), "credits.expiring");
        // Endpoints may ask for them by name; an unknown object is refused.
        assert_eq!(
            sqlstate("SELECT payments.add_webhook_endpoint('https://example.com/h', ARRAY['spend_limit.*', 'credits.expiring'])"),
            "ok"
        );
        assert_eq!(
            sqlstate("SELECT payments.add_webhook_endpoint('https://example.com/h', ARRAY['wallet.*'])"),
            "PM100"
        );
        assert!(trial_balance_is_zero());
    }

    #[pg_test]
    fn a_refund_of_a_top_up_takes_back_only_unspent_credits_and_gives_them_back_if_it_fails() {
        let id = one::<String>("SELECT id FROM payments.top_up('rt1', 'cust_rt', 10, 'usd', 'pm_card_visa')");
        one::<String>(&format!(
            "SELECT status FROM payments.record_provider_result('{id}', 'stripe', 'pi_rt1', 'succeeded', '{}')",
            intent("pi_rt1", 1000, "")
        ));
        let hold = one::<String>("SELECT hold_id FROM payments.reserve('cust_rt', 4, 'usd', 'job')");
        one::<String>(&format!("SELECT status FROM payments.settle('{hold}', 4)"));
        let credits = || one::<String>("SELECT posted::text FROM payments.balances('cust_rt')");
        assert_eq!(credits(), "6.00");
        // Money already spent as credits cannot come back as money too.
        assert_eq!(sqlstate(&format!("SELECT payments.create_refund('back-1', '{id}')")), "PM207");
        let refund = one::<String>(&format!("SELECT id FROM payments.create_refund('back-2', '{id}', 6)"));
        assert_eq!(credits(), "0.00", "taken back when the refund is asked for");
        assert_eq!(sqlstate("SELECT payments.reserve('cust_rt', 1, 'usd', 'job-2')"), "ok");
        assert!(!one::<bool>("SELECT allowed FROM payments.reserve('cust_rt', 1, 'usd', 'job-2')"));
        // The provider refuses the refund: the credits are the customer's again.
        one::<String>(&format!(
            "SELECT outcome FROM payments.record_command_result('{}', true, NULL, '{{\"error\": {{\"message\": \"no\"}}}}')",
            refund_command(&refund)
        ));
        assert_eq!(one::<String>(&format!("SELECT status FROM payments.get_refund('{refund}')")), "failed");
        assert_eq!(credits(), "6.00");
        assert!(trial_balance_is_zero());
    }

    #[pg_test]
    fn consume_past_the_limit_pays_with_credits_in_the_same_statement_never_past_what_is_left() {
        one::<String>(
            "SELECT code FROM payments.create_plan('ai', 'usd', 10, 'month', features => '{\"calls\": 3, \"export\": 1}',
                                                   feature_prices => '{\"calls\": 1.5}')",
        );
        one::<String>("SELECT id FROM payments.create_subscription('s1', 'cust_cc', 'ai', 'pm_card_visa', 14)");
        one::<String>("SELECT outcome FROM payments.grant_credits('u1', 'cust_cc', 2, 'calls', applies_to => 'calls')");
        one::<String>("SELECT outcome FROM payments.grant_credits('m1', 'cust_cc', 0.03, 'usd')");
        let consume = |feature: &str, quantity: &str, request: &str| {
            one::<String>(&format!(
                "SELECT outcome || ' ' || coalesce(remaining::text, '-') || ' ' || coalesce(reason, '-') || ' '
                        || coalesce(credits_drawn || ' ' || credits_unit, '-')
                 FROM payments.consume('cust_cc', '{feature}', {quantity}, '{request}')"
            ))
        };
        assert_eq!(consume("calls", "2", "r1"), "consumed 1 - -", "within the limit: no credits");
        // One left of the limit; the other is paid with a credit granted for calls.
        assert_eq!(consume("calls", "2", "r2"), "consumed 0 - 1 calls");
        // Two past the limit, one call credit left: money credits at 1.5 cents a call, 3 cents.
        assert_eq!(consume("calls", "2", "r3"), "consumed 0 - 0.03 USD");
        assert_eq!(consume("calls", "2", "r3"), "replayed 0 - 0.03 USD", "a retry pays nothing more");
        assert_eq!(consume("calls", "1", "r4"), "consumed 0 - 1 calls");
        assert_eq!(consume("calls", "1", "r5"), "refused 0 limit_exceeded -", "nothing left to pay with");
        assert_eq!(consume("export", "2", "r6"), "refused 1 limit_exceeded -", "no price, no credits for it");
        assert_eq!(
            one::<String>("SELECT used::text FROM payments.entitlements('cust_cc') WHERE feature = 'calls'"),
            "3",
            "the quota counts what it covered, never past its limit"
        );
        assert_eq!(
            ledger_of("cust_cc").split(',').skip(2).collect::<Vec<_>>().join(","),
            "consumption:credits>revenue:1 calls,consumption:credits>revenue:0.03 USD,consumption:credits>revenue:1 calls"
        );
        assert_eq!(
            one::<String>(
                "SELECT string_agg(unit || ':' || available, ',' ORDER BY unit) FROM payments.balances('cust_cc')"
            ),
            "USD:0.00,calls:0"
        );
        // Within the budget only: 3 cents more would pass 2 cents a day (3 were spent today).
        one::<String>("SELECT outcome FROM payments.grant_credits('m2', 'cust_cc', 1, 'usd')");
        one::<bool>("SELECT payments.set_spend_limit('cust_cc', 0.05, 'usd', 'day')");
        assert_eq!(consume("calls", "2", "r7"), "refused 0 spend_limit_reached -");
        assert_eq!(
            one::<String>(
                "SELECT hold_id IS NULL || ' ' || reason FROM payments.reserve('cust_cc', 0.03, 'usd', 'h1')"
            ),
            "true spend_limit_reached",
            "what consume spent counts against the budget of holds too"
        );
        assert!(trial_balance_is_zero());
        assert_eq!(
            sqlstate("SELECT payments.create_plan('bad', 'usd', 1, 'month', features => '{\"a\": null}', feature_prices => '{\"a\": 1}')"),
            "PM100",
            "an unlimited feature has no price past its limit"
        );
        assert_eq!(
            sqlstate("SELECT payments.create_plan('bad', 'usd', 1, 'month', features => '{\"a\": 1}', feature_prices => '{\"a\": 0}')"),
            "PM100"
        );
    }

    #[pg_test]
    fn apps_are_told_once_each_time_available_credits_fall_below_the_alert() {
        one::<String>("SELECT outcome FROM payments.grant_credits('b1', 'cust_bl', 1, 'usd')");
        assert!(one::<bool>("SELECT payments.set_balance_alert('cust_bl', 'usd', 0.50)"));
        let reserve = |amount: &str, request: &str| {
            one::<String>(&format!("SELECT hold_id FROM payments.reserve('cust_bl', {amount}, 'usd', '{request}')"))
        };
        let told = || {
            one::<String>(
                "SELECT coalesce(string_agg(data ->> 'available', ',' ORDER BY seq), '')
                 FROM payments.outbox_events WHERE customer_id = 'cust_bl' AND object = 'balance' AND type = 'balance.low'",
            )
        };
        let a = reserve("0.40", "r1");
        assert_eq!(told(), "", "0.60 left is not low");
        let b = reserve("0.20", "r2");
        assert_eq!(told(), "0.40");
        reserve("0.10", "r3");
        assert_eq!(told(), "0.40", "below already: no second event");
        for hold in [a, b] {
            one::<String>(&format!("SELECT outcome FROM payments.release('{hold}')"));
        }
        reserve("0.50", "r4");
        assert_eq!(told(), "0.40,0.40", "back above, then across again");
        assert!(!one::<bool>("SELECT payments.set_balance_alert('cust_bl', 'usd', NULL)"));
        assert_eq!(sqlstate("SELECT payments.set_balance_alert('cust_bl', 'usd', 0.001)"), "PM101");
        assert_eq!(sqlstate("SELECT payments.set_balance_alert('cust_bl', 'Usd2', 1)"), "PM106");
    }

    #[pg_test]
    fn invoices_apply_prepaid_credits_then_balance_before_charging_and_give_them_back_when_void() {
        renewals_final_at_once();
        one::<String>("SELECT code FROM payments.create_plan('inv', 'usd', 10, 'month')");
        one::<String>("SELECT outcome FROM payments.grant_credits('c1', 'cust_ic', 4, 'usd')");
        one::<String>("SELECT outcome FROM payments.grant_credits('c2', 'cust_ic', 50, 'usd', applies_to => 'calls')");
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('s1', 'cust_ic', 'inv', 'pm_card_visa', at => '2030-01-01T00:00Z')",
        );
        let lines = |invoice: &str| {
            one::<String>(&format!(
                "SELECT string_agg(kind || ':' || amount_minor, ',' ORDER BY line_number) FROM payments.invoice_lines
                 WHERE invoice_id = '{invoice}'"
            ))
        };
        let (first, status, _, payment) = invoice_of(&sub, 1);
        assert_eq!(lines(&first), "recurring:1000,prepaid_credits:-400", "credits for a feature pay no invoice");
        assert_eq!(status, "open");
        assert_eq!(
            one::<String>(&format!("SELECT amount::text FROM payments.get_payment('{payment}')")),
            "6.00",
            "only what is left is charged"
        );
        settle(&payment, "pi_ic1", 600, "succeeded");
        // Credits that cover it all: paid at once, no charge.
        one::<String>("SELECT outcome FROM payments.grant_credits('c3', 'cust_ic', 25, 'usd')");
        one::<pgrx::JsonB>("SELECT payments.run_billing('2030-02-01T00:00Z')");
        let (second, status, _, payment) = invoice_of(&sub, 2);
        assert_eq!(
            (lines(&second).as_str(), status.as_str(), payment.as_str()),
            ("recurring:1000,prepaid_credits:-1000", "paid", "-")
        );
        assert_eq!(
            one::<String>(
                "SELECT available::text FROM payments.balances('cust_ic') WHERE account = 'credits' AND unit = 'USD'"
            ),
            "65.00"
        );

        // An incomplete subscription that expires: its void invoice gives its credits back.
        one::<String>("SELECT outcome FROM payments.grant_credits('v1', 'cust_iv', 3, 'usd')");
        let gone = one::<String>(
            "SELECT id FROM payments.create_subscription('s2', 'cust_iv', 'inv', 'pm_card_visa', at => '2030-01-01T00:00Z')",
        );
        let (void, _, _, _) = invoice_of(&gone, 1);
        assert_eq!(lines(&void), "recurring:1000,prepaid_credits:-300");
        one::<pgrx::JsonB>("SELECT payments.run_billing('2030-01-02T00:00Z')");
        assert_eq!(invoice_of(&gone, 1).1, "void");
        assert_eq!(
            one::<String>("SELECT available::text FROM payments.balances('cust_iv') WHERE account = 'credits'"),
            "3.00"
        );
        assert_eq!(
            ledger_of("cust_iv").split(',').skip(1).collect::<Vec<_>>().join(","),
            "invoice_credits:credits>revenue:3.00 USD,invoice_credits:revenue>credits:3.00 USD"
        );
        assert!(trial_balance_is_zero());
    }

    /// An invoice's lines as `kind:amount-discount+tax` (minor units), in order.
    fn priced_lines(invoice: &str) -> String {
        one::<String>(&format!(
            "SELECT string_agg(kind || ':' || amount_minor || '-' || discount_minor || '+' || tax_minor, ',' ORDER BY line_number)
             FROM payments.invoice_lines WHERE invoice_id = '{invoice}'"
        ))
    }

    #[pg_test]
    fn a_coupon_comes_off_each_line_before_the_tax_and_a_preview_is_the_invoice_that_follows() {
        renewals_final_at_once();
        one::<String>("SELECT code FROM payments.create_plan('team', 'usd', 30, 'month')");
        one::<String>("SELECT code FROM payments.create_tax_rate('us-ca', 'Sales tax', 8.25, false, 'US-CA')");
        one::<String>("SELECT code FROM payments.create_tax_rate('eu-vat', 'VAT', 20, true)");
        one::<String>("SELECT (payments.set_customer_tax('cust_cp2', ARRAY['us-ca'])).customer_id");
        one::<String>(
            "SELECT code FROM payments.create_coupon('SAVE20', percent_off => 20, duration => 'repeating', duration_in_periods => 2)",
        );
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('k1', 'cust_cp2', 'team', 'pm_card_visa', 14, '2030-01-01T00:00Z')",
        );
        let apply = format!("SELECT coupon || ' ' || first_period || '-' || last_period || ' ' || outcome FROM payments.apply_coupon('{sub}', 'SAVE20', '2030-01-02T00:00Z')");
        assert_eq!(one::<String>(&apply), "SAVE20 1-2 applied");
        assert_eq!(one::<String>(&apply), "SAVE20 1-2 replayed", "applied once");
        assert_eq!(one::<i32>("SELECT times_redeemed FROM payments.coupons WHERE code = 'SAVE20'"), 1);
        let preview = |at: &str| {
            one::<String>(&format!(
                "SELECT period_number || ' ' || coalesce(coupon, '-') || ' ' || subtotal || ' ' || discount || ' ' || tax || ' ' || total
                 FROM payments.preview_invoice('{sub}', '{at}')"
            ))
        };
        let end = |sub: &str| {
            one::<String>(&format!("SELECT current_period_end::text FROM payments.subscriptions WHERE id = '{sub}'"))
        };
        // 30.00 less 20 %: 24.00; 8.25 % of that: 1.98 (Stripe's example).
        assert_eq!(preview("2030-01-05T00:00Z"), "1 SAVE20 30.00 6.00 1.98 25.98");
        for (period, pi, shown) in [(1, "pi_cp2_1", "25.98"), (2, "pi_cp2_2", "25.98"), (3, "pi_cp2_3", "32.48")] {
            let at = end(&sub);
            let seen = preview(&at);
            one::<pgrx::JsonB>(&format!("SELECT payments.run_billing('{at}')"));
            let (invoice, _, _, payment) = invoice_of(&sub, period);
            let total =
                one::<String>(&format!("SELECT total::text FROM payments.invoice_details WHERE id = '{invoice}'"));
            assert_eq!(total, shown, "period {period}");
            assert!(
                seen.ends_with(&format!(" {shown}")),
                "the preview ({seen}) is the invoice that follows it ({total})"
            );
            let (discount, tax) = if period < 3 { (600, 198) } else { (0, 248) };
            assert_eq!(priced_lines(&invoice), format!("recurring:3000-{discount}+{tax}"));
            assert_eq!(
                one::<String>(&format!(
                    "SELECT string_agg(tax_rate || ' ' || amount, ',') FROM payments.list_invoice_taxes('{invoice}')"
                )),
                format!("us-ca {}.{:02}", tax / 100, tax % 100)
            );
            settle(
                &payment,
                pi,
                one::<i64>(&format!("SELECT total_minor FROM payments.invoices WHERE id = '{invoice}'")),
                "succeeded",
            );
        }
        // A rate assigned later changes no invoice made before.
        one::<String>("SELECT (payments.set_customer_tax('cust_cp2', ARRAY['eu-vat'])).customer_id");
        assert_eq!(priced_lines(&invoice_of(&sub, 3).0), "recurring:3000-0+248");
        assert_eq!(preview(&end(&sub)), "4 - 30.00 0.00 5.00 30.00", "inclusive VAT: 5.00 of the 30.00, nothing added");
        assert_eq!(
            one::<String>(&format!("SELECT taxes::text FROM payments.preview_invoice('{sub}', '{}')", end(&sub))),
            r#"[{"amount": 5.00, "tax_rate": "eu-vat", "inclusive": true, "percentage": 20, "display_name": "VAT"}]"#
        );
        one::<String>("SELECT (payments.set_customer_tax('cust_cp2', ARRAY['eu-vat'], true)).customer_id");
        assert_eq!(preview(&end(&sub)), "4 - 30.00 0.00 0.00 30.00", "exempt");
        assert!(trial_balance_is_zero());
    }

    #[pg_test]
    fn coupons_are_redeemed_within_their_terms_and_bad_ones_are_refused() {
        one::<String>("SELECT code FROM payments.create_plan('c_usd', 'usd', 10, 'month')");
        one::<String>("SELECT code FROM payments.create_plan('c_other', 'usd', 10, 'month')");
        one::<String>("SELECT code FROM payments.create_coupon('ONE', amount_off => 4, currency => 'usd', max_redemptions => 1, applies_to_plans => ARRAY['c_usd'])");
        one::<String>("SELECT code FROM payments.create_coupon('EURO', amount_off => 1, currency => 'eur')");
        one::<String>(
            "SELECT code FROM payments.create_coupon('OLD', percent_off => 10, redeem_by => '2030-01-01T00:00Z')",
        );
        one::<String>("SELECT code FROM payments.create_coupon('HALF', percent_off => 50, duration => 'forever')");
        let sub = |key: &str, customer: &str, plan: &str| {
            one::<String>(&format!(
                "SELECT id FROM payments.create_subscription('{key}', '{customer}', '{plan}', 'pm_card_visa', 14, '2030-01-01T00:00Z')"
            ))
        };
        let (a, b, c) = (sub("a", "cust_ca", "c_usd"), sub("b", "cust_cb", "c_usd"), sub("c", "cust_cc2", "c_other"));
        assert_eq!(
            one::<String>(&format!("SELECT outcome FROM payments.apply_coupon('{a}', 'ONE', '2030-01-02T00:00Z')")),
            "applied"
        );
        for (sql, code) in [
            (format!("SELECT payments.apply_coupon('{b}', 'ONE', '2030-01-02T00:00Z')"), "PM206"), // none left
            (format!("SELECT payments.apply_coupon('{c}', 'HALF', NULL)"), "PM100"),
            (format!("SELECT payments.apply_coupon('{c}', 'ONE')"), "PM206"), // another plan
            (format!("SELECT payments.apply_coupon('{c}', 'EURO')"), "PM206"), // another currency
            (format!("SELECT payments.apply_coupon('{c}', 'OLD', '2030-01-02T00:00Z')"), "PM206"), // too late
            (format!("SELECT payments.apply_coupon('{c}', 'NOPE')"), "PM204"),
            ("SELECT payments.apply_coupon('sub_nope', 'HALF')".to_string(), "PM204"),
            (
                "SELECT payments.create_coupon('X', percent_off => 10, amount_off => 1, currency => 'usd')".into(),
                "PM100",
            ),
            ("SELECT payments.create_coupon('X')".into(), "PM100"),
            ("SELECT payments.create_coupon('X', percent_off => 101)".into(), "PM100"),
            ("SELECT payments.create_coupon('X', percent_off => 10, duration => 'repeating')".into(), "PM100"),
            ("SELECT payments.create_coupon('X', amount_off => 0.001, currency => 'usd')".into(), "PM101"),
            ("SELECT payments.create_coupon('bad code', percent_off => 10)".into(), "PM100"),
            (
                "SELECT payments.create_coupon('X', percent_off => 10, applies_to_plans => ARRAY['nope'])".into(),
                "PM100",
            ),
            ("SELECT payments.create_coupon('HALF', percent_off => 40, duration => 'forever')".into(), "PM201"),
            ("SELECT payments.create_tax_rate('t', 'Tax', 100.5, false)".into(), "PM100"),
            ("SELECT payments.create_tax_rate('T', 'Tax', 5, false)".into(), "PM100"),
            ("SELECT payments.set_customer_tax('cust_ca', ARRAY['nope'])".into(), "PM100"),
            (format!("SELECT payments.preview_invoice('{a}', NULL)"), "PM100"),
            ("SELECT payments.preview_invoice('sub_nope')".into(), "PM204"),
        ] {
            assert_eq!(sqlstate(&sql), code, "{sql}");
        }
        // Another coupon replaces the first: forever 50 % off from the next period on.
        assert_eq!(
            one::<String>(&format!("SELECT outcome FROM payments.apply_coupon('{a}', 'HALF', '2030-01-03T00:00Z')")),
            "applied"
        );
        assert_eq!(
            one::<String>(&format!("SELECT coupon || ' ' || discount || ' ' || total FROM payments.preview_invoice('{a}', '2030-01-04T00:00Z')")),
            "HALF 5.00 5.00"
        );
        one::<String>(&format!("SELECT status FROM payments.cancel_subscription('{a}', false, '2030-01-05T00:00Z')"));
        assert_eq!(sqlstate(&format!("SELECT payments.preview_invoice('{a}')")), "PM206", "no next invoice");
        assert_eq!(sqlstate(&format!("SELECT payments.apply_coupon('{a}', 'EURO')")), "PM206");
        assert_eq!(
            one::<String>(&format!("SELECT string_agg(reason, ',' ORDER BY seq) FROM payments.subscription_events WHERE subscription_id = '{a}'")).matches("coupon applied").count(),
            2
        );
    }

    #[pg_test]
    fn a_void_invoice_is_never_charged_again_and_gives_its_credits_back() {
        renewals_final_at_once();
        one::<String>("SELECT code FROM payments.create_plan('vd', 'usd', 10, 'month', trial_days => 1)");
        one::<String>("SELECT outcome FROM payments.grant_credits('vd1', 'cust_vd', 3, 'usd')");
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('k1', 'cust_vd', 'vd', 'pm_card_visa', at => '2030-01-01T00:00Z')",
        );
        one::<pgrx::JsonB>("SELECT payments.run_billing('2030-01-02T00:00Z')");
        let (invoice, status, _, payment) = invoice_of(&sub, 1);
        assert_eq!(
            (status.as_str(), priced_lines(&invoice).as_str()),
            ("open", "recurring:1000-0+0,prepaid_credits:-300-0+0")
        );
        settle(&payment, "pi_vd1", 700, "failed");
        assert_eq!(sub_status(&sub), "past_due 1");
        let attempts = || {
            one::<String>(&format!(
                "SELECT attempt_count || ' ' || status FROM payments.invoices WHERE id = '{invoice}'"
            ))
        };
        assert_eq!(attempts(), "1 open");
        let credits =
            || one::<String>("SELECT available::text FROM payments.balances('cust_vd') WHERE account = 'credits'");
        assert_eq!(credits(), "0.00");

        let void = format!("SELECT status FROM payments.void_invoice('{invoice}')");
        assert_eq!(one::<String>(&void), "void");
        assert_eq!(one::<String>(&void), "void", "again: nothing more");
        assert_eq!(credits(), "3.00", "what it applied is the customer's again");
        // The dunning schedule passes: no retry of a void invoice.
        for at in ["2030-01-03T01:00Z", "2030-01-06T01:00Z", "2030-01-12T01:00Z"] {
            one::<pgrx::JsonB>(&format!("SELECT payments.run_billing('{at}')"));
        }
        assert_eq!(attempts(), "1 void");
        assert_eq!(sqlstate(&format!("SELECT payments.mark_uncollectible('{invoice}')")), "PM206");

        // An invoice given up on: no retries, and it can still be voided.
        let other = one::<String>(
            "SELECT id FROM payments.create_subscription('k2', 'cust_vd2', 'vd', 'pm_card_visa', at => '2030-01-01T00:00Z')",
        );
        one::<pgrx::JsonB>("SELECT payments.run_billing('2030-01-02T00:00Z')");
        let (second, _, _, second_payment) = invoice_of(&other, 1);
        settle(&second_payment, "pi_vd2", 1000, "failed");
        let bad_debt = format!("SELECT status FROM payments.mark_uncollectible('{second}')");
        assert_eq!(one::<String>(&bad_debt), "uncollectible");
        assert_eq!(one::<String>(&bad_debt), "uncollectible");
        assert_eq!(
            one::<String>(&format!(
                "SELECT coalesce(next_attempt_at::text, 'none') FROM payments.invoices WHERE id = '{second}'"
            )),
            "none"
        );
        assert_eq!(one::<String>(&format!("SELECT status FROM payments.void_invoice('{second}')")), "void");
        // A paid invoice is corrected by a credit note, never voided.
        let paid_sub = one::<String>(
            "SELECT id FROM payments.create_subscription('k3', 'cust_vd3', 'vd', 'pm_card_visa', at => '2030-01-01T00:00Z')",
        );
        one::<pgrx::JsonB>("SELECT payments.run_billing('2030-01-02T00:00Z')");
        let (paid, _, _, paid_payment) = invoice_of(&paid_sub, 1);
        settle(&paid_payment, "pi_vd3", 1000, "succeeded");
        assert_eq!(sqlstate(&format!("SELECT payments.void_invoice('{paid}')")), "PM206");
        assert_eq!(sqlstate("SELECT payments.void_invoice('inv_nope')"), "PM204");
        assert_eq!(sqlstate("SELECT payments.mark_uncollectible('inv_nope')"), "PM204");
        assert!(trial_balance_is_zero());
    }

    #[pg_test]
    fn credit_notes_lower_what_an_open_invoice_owes_and_refund_or_credit_a_paid_one_never_past_its_total() {
        renewals_final_at_once();
        one::<String>("SELECT code FROM payments.create_plan('cn', 'usd', 15, 'month', trial_days => 1)");
        let subscribe = |key: &str, customer: &str| {
            let sub = one::<String>(&format!(
                "SELECT id FROM payments.create_subscription('{key}', '{customer}', 'cn', 'pm_card_visa', at => '2030-01-01T00:00Z')"
            ));
            one::<pgrx::JsonB>("SELECT payments.run_billing('2030-01-02T00:00Z')");
            sub
        };
        let note = |key: &str, invoice: &str, amount: &str, refund: bool| {
            one::<String>(&format!(
                "SELECT number || ' ' || credited || ' ' || method FROM payments.create_credit_note('{key}', '{invoice}', {amount}, 'order_change', {refund})"
            ))
        };
        // Open, its first attempt declined: 5.00 off, the next attempt charges 10.00.
        let open_sub = subscribe("k1", "cust_cn1");
        let (open, _, _, first) = invoice_of(&open_sub, 1);
        settle(&first, "pi_cn1", 1500, "failed");
        let n1 = note("n1", &open, "5", false);
        assert!(n1.starts_with("CN-") && n1.ends_with(" 5.00 reduced_amount_due"), "{n1}");
        assert_eq!(note("n1", &open, "5", false), n1, "a replay");
        assert_eq!(
            sqlstate(&format!("SELECT payments.create_credit_note('n1', '{open}', 6, 'order_change')")),
            "PM201"
        );
        assert_eq!(
            sqlstate(&format!("SELECT payments.create_credit_note('n2', '{open}', 10.01, 'order_change')")),
            "PM207"
        );
        assert_eq!(
            sqlstate(&format!("SELECT payments.create_credit_note('n2', '{open}', 1, 'order_change', true)")),
            "PM206"
        );
        one::<pgrx::JsonB>("SELECT payments.run_billing('2030-01-03T01:00Z')");
        let retry = one::<String>(&format!("SELECT payment_id FROM payments.invoices WHERE id = '{open}'"));
        assert_ne!(retry, first);
        assert_eq!(one::<String>(&format!("SELECT amount::text FROM payments.get_payment('{retry}')")), "10.00");
        // The rest credited too: nothing is owed, the invoice is paid.
        settle(&retry, "pi_cn2", 1000, "failed");
        assert!(note("n3", &open, "10", false).ends_with(" 10.00 reduced_amount_due"));
        assert_eq!(
            one::<String>(&format!(
                "SELECT status || ' ' || credited FROM payments.invoice_details WHERE id = '{open}'"
            )),
            "paid 15.00"
        );

        // Paid: 3.00 to the customer's balance, 4.00 refunded at the provider.
        let paid_sub = subscribe("k2", "cust_cn2");
        let (paid, _, _, payment) = invoice_of(&paid_sub, 1);
        settle(&payment, "pi_cn3", 1500, "succeeded");
        assert!(note("p1", &paid, "3", false).ends_with(" 3.00 customer_balance"));
        assert!(note("p2", &paid, "4", true).ends_with(" 4.00 refund"));
        assert_eq!(
            one::<String>(
                "SELECT payments.to_major(r.amount_minor, r.currency) || ' ' || r.status
                 FROM payments.credit_notes n JOIN payments.refunds r ON r.id = n.refund_id
                 WHERE n.idempotency_key = 'p2' AND n.customer_id = 'cust_cn2'"
            ),
            "4.00 pending"
        );
        assert_eq!(
            one::<String>("SELECT posted::text FROM payments.balances('cust_cn2') WHERE account = 'balance'"),
            "3.00"
        );
        // A refund made directly makes the invoice's credit note too.
        one::<String>(&format!("SELECT id FROM payments.create_refund('direct', '{payment}', 2)"));
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(amount || ':' || method || ':' || coalesce(reason, '-'), ',' ORDER BY number) FROM payments.list_credit_notes('{paid}')"
            )),
            "3.00:customer_balance:order_change,4.00:refund:order_change,2.00:refund:-"
        );
        assert_eq!(sqlstate(&format!("SELECT payments.create_credit_note('p3', '{paid}', 7, 'duplicate')")), "PM207");
        assert!(note("p3", &paid, "6", false).ends_with(" 6.00 customer_balance"), "what is left: 6.00");
        // Numbers are gapless in their own series.
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(DISTINCT number) FROM payments.credit_notes WHERE invoice_id IN ('{open}', '{paid}')"
            )),
            6
        );
        for (sql, code) in [
            (format!("SELECT payments.create_credit_note('x', '{paid}', 1, 'oops')"), "PM100"),
            (format!("SELECT payments.create_credit_note('x', '{paid}', 0.001, 'duplicate')"), "PM101"),
            ("SELECT payments.create_credit_note('x', 'inv_nope', 1, 'duplicate')".to_string(), "PM204"),
            ("SELECT payments.get_credit_note('cn_nope')".into(), "PM204"),
            ("UPDATE payments.credit_notes SET amount_minor = 1".into(), "PM205"),
        ] {
            assert_eq!(sqlstate(&sql), code, "{sql}");
        }
        // Paid by prepaid credits, no payment: nothing to refund, but its balance can be credited.
        one::<String>("SELECT outcome FROM payments.grant_credits('g3', 'cust_cn3', 15, 'usd')");
        let (covered, status, _, _) = invoice_of(&subscribe("k3", "cust_cn3"), 1);
        assert_eq!(status, "paid");
        assert_eq!(
            sqlstate(&format!("SELECT payments.create_credit_note('c1', '{covered}', 1, 'duplicate', true)")),
            "PM206"
        );
        assert!(note("c1", &covered, "15", false).ends_with(" 15.00 customer_balance"), "what the credits paid counts");
        assert!(trial_balance_is_zero());
    }

    #[pg_test]
    fn seats_price_each_period_and_a_quantity_change_is_prorated_like_a_plan_change() {
        renewals_final_at_once();
        one::<String>(
            "SELECT code FROM payments.create_plan('seat', 'usd', 10, 'month', features => '{\"calls\": 100}',
                                                   features_per_seat => true)",
        );
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('k1', 'cust_seat', 'seat', 'pm_card_visa', 1, '2030-01-01T00:00Z', 3)",
        );
        let limit = || {
            one::<String>("SELECT \"limit\"::text FROM payments.entitlements('cust_seat', '2030-01-01T12:00Z') WHERE feature = 'calls'")
        };
        assert_eq!(limit(), "300", "100 calls per seat");
        one::<pgrx::JsonB>("SELECT payments.run_billing('2030-01-02T00:00Z')");
        let (first, _, _, payment) = invoice_of(&sub, 1);
        assert_eq!(priced_lines(&first), "recurring:3000-0+0");
        assert_eq!(
            one::<String>(&format!("SELECT quantity::text FROM payments.invoice_lines WHERE invoice_id = '{first}'")),
            "3"
        );
        settle(&payment, "pi_seat1", 3000, "succeeded");
        let half = format!("(SELECT current_period_start + (current_period_end - current_period_start) / 2 FROM payments.subscriptions WHERE id = '{sub}')");
        // Five seats half-way: 15.00 unused on 3 credited, 25.00 for 5 charged: 10.00 now.
        let set = |q: i32, prorate: bool| {
            one::<String>(&format!(
                "SELECT quantity || ' ' || outcome FROM payments.set_subscription_quantity('{sub}', {q}, {prorate}, {half})"
            ))
        };
        assert_eq!(set(5, true), "5 applied");
        assert_eq!(set(5, true), "5 noop");
        let proration = one::<String>(&format!(
            "SELECT id FROM payments.invoices WHERE subscription_id = '{sub}' AND kind = 'proration'"
        ));
        assert_eq!(priced_lines(&proration), "credit:-1500-0+0,proration:2500-0+0");
        assert_eq!(
            one::<String>(&format!("SELECT total::text FROM payments.invoice_details WHERE id = '{proration}'")),
            "10.00"
        );
        assert_eq!(one::<String>("SELECT \"limit\"::text FROM payments.entitlements('cust_seat', '2030-01-20T00:00Z') WHERE feature = 'calls'"), "500");
        let upgrade = one::<String>(&format!("SELECT payment_id FROM payments.invoices WHERE id = '{proration}'"));
        settle(&upgrade, "pi_seat2", 1000, "succeeded");
        // Two seats half-way: 25.00 unused on 5 less 10.00 for 2: 15.00 to the customer's balance.
        assert_eq!(set(2, true), "2 applied");
        assert_eq!(
            one::<String>("SELECT posted::text FROM payments.balances('cust_seat') WHERE account = 'balance'"),
            "15.00"
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT monthly_minor::text FROM payments.subscription_revenue WHERE subscription_id = '{sub}'"
            )),
            "2000"
        );
        // The next month: 2 seats, 20.00, less the 15.00 of balance.
        let end =
            one::<String>(&format!("SELECT current_period_end::text FROM payments.subscriptions WHERE id = '{sub}'"));
        one::<pgrx::JsonB>(&format!("SELECT payments.run_billing('{end}')"));
        let (second, _, _, _) = invoice_of(&sub, 2);
        assert_eq!(priced_lines(&second), "recurring:2000-0+0,balance:-1500-0+0");
        // Without proration: from the next invoice, nothing now.
        let invoices =
            || one::<i64>(&format!("SELECT count(*) FROM payments.invoices WHERE subscription_id = '{sub}'"));
        let before = invoices();
        assert_eq!(
            one::<String>(&format!("SELECT quantity::text FROM payments.set_subscription_quantity('{sub}', 4, false)")),
            "4"
        );
        assert_eq!(invoices(), before);
        for (sql, code) in [
            (format!("SELECT payments.set_subscription_quantity('{sub}', 0)"), "PM100"),
            ("SELECT payments.set_subscription_quantity('sub_nope', 2)".to_string(), "PM204"),
            ("SELECT payments.create_subscription('k2', 'cust_seat2', 'seat', quantity => 0)".into(), "PM100"),
        ] {
            assert_eq!(sqlstate(&sql), code, "{sql}");
        }
        one::<String>(&format!("SELECT status FROM payments.cancel_subscription('{sub}', false)"));
        assert_eq!(sqlstate(&format!("SELECT payments.set_subscription_quantity('{sub}', 2)")), "PM206");
        assert!(trial_balance_is_zero());
    }

    #[pg_test]
    fn promotion_codes_redeem_their_coupon_within_limits_of_their_own() {
        one::<String>("SELECT code FROM payments.create_plan('promo', 'usd', 10, 'month', trial_days => 7)");
        one::<String>("SELECT code FROM payments.create_coupon('BASE', percent_off => 10, max_redemptions => 5)");
        one::<String>("SELECT code FROM payments.create_promotion_code('SUMMER', 'BASE', max_redemptions => 1)");
        one::<String>("SELECT code FROM payments.create_promotion_code('VIP', 'BASE', customer_id => 'cust_pc')");
        let sub = |key: &str, customer: &str| {
            one::<String>(&format!("SELECT id FROM payments.create_subscription('{key}', '{customer}', 'promo')"))
        };
        let (a, b, c) = (sub("a", "cust_pa"), sub("b", "cust_pb"), sub("c", "cust_pc"));
        let apply = |sub: &str, code: &str| {
            one::<String>(&format!("SELECT coupon || ' ' || outcome FROM payments.apply_coupon('{sub}', '{code}')"))
        };
        assert_eq!(apply(&a, "SUMMER"), "BASE applied");
        assert_eq!(apply(&a, "SUMMER"), "BASE replayed");
        assert_eq!(
            one::<String>(&format!("SELECT promotion_code FROM payments.discounts WHERE subscription_id = '{a}'")),
            "SUMMER"
        );
        assert_eq!(sqlstate(&format!("SELECT payments.apply_coupon('{b}', 'SUMMER')")), "PM206", "its one use is gone");
        assert_eq!(sqlstate(&format!("SELECT payments.apply_coupon('{b}', 'VIP')")), "PM206", "another customer's");
        assert!(!one::<bool>("SELECT payments.set_promotion_code_active('VIP', false)"));
        assert_eq!(sqlstate(&format!("SELECT payments.apply_coupon('{c}', 'VIP')")), "PM206", "inactive");
        assert!(one::<bool>("SELECT payments.set_promotion_code_active('VIP', true)"));
        assert_eq!(apply(&c, "VIP"), "BASE applied");
        assert_eq!(apply(&b, "BASE"), "BASE applied", "the coupon's own code still works");
        assert_eq!(
            one::<String>("SELECT c.times_redeemed || ' ' || (SELECT string_agg(times_redeemed::text, ',' ORDER BY code) FROM payments.promotion_codes)
                           FROM payments.coupons c WHERE c.code = 'BASE'"),
            "3 1,1"
        );
        for (sql, code) in [
            ("SELECT payments.create_promotion_code('BASE', 'BASE')", "PM100"),
            ("SELECT payments.create_promotion_code('X1', 'NOPE')", "PM204"),
            ("SELECT payments.create_promotion_code('SUMMER', 'BASE', max_redemptions => 2)", "PM201"),
            ("SELECT payments.create_coupon('SUMMER', percent_off => 5)", "PM100"),
            ("SELECT payments.set_promotion_code_active('NOPE', true)", "PM204"),
        ] {
            assert_eq!(sqlstate(sql), code, "{sql}");
        }
    }

    /// A subscription's current period end, as SQL.
    fn period_end(sub: &str) -> String {
        format!("(SELECT current_period_end FROM payments.subscriptions WHERE id = '{sub}')")
    }

    #[pg_test]
    fn a_renewal_is_a_draft_for_its_window_that_takes_invoice_items_and_late_usage() {
        one::<String>("SELECT code FROM payments.create_meter('dtok', 'sum')");
        let per_unit = r#"[{"meter": "dtok", "price": {"mode": "per_unit", "tiers": [{"unit_amount_minor": 1}]}}]"#;
        one::<String>(&format!(
            "SELECT code FROM payments.create_plan('drafty', 'usd', 10, 'month', trial_days => 1, metered => '{per_unit}')"
        ));
        let sub = one::<String>(
            "SELECT id FROM payments.create_subscription('k1', 'cust_dr', 'drafty', 'pm_card_visa', at => now() - interval '40 days')",
        );
        // The trial's end renews it; run an hour later, its invoice is final at once.
        run_billing(&one::<String>(&format!("SELECT ({} + interval '1 hour')::text", period_end(&sub))));
        assert_eq!(invoice_of(&sub, 1).1, "open");
        let end = one::<String>(&format!("SELECT {}::text", period_end(&sub)));
        let record = |key: &str, quantity: i32, at: &str| {
            one::<String>(&format!(
                "SELECT outcome FROM payments.record_usage('{key}', 'cust_dr', 'dtok', {quantity}, '{end}'::timestamptz - interval '{at}')"
            ))
        };
        record("u1", 100, "5 days");
        let run = run_billing(&end);
        assert_eq!((run.0["renewed"].clone(), run.0["finalized"].clone()), (1.into(), 0.into()));
        let draft = one::<String>(&format!(
            "SELECT id FROM payments.invoices WHERE subscription_id = '{sub}' AND period_number = 2"
        ));
        let state = || {
            one::<String>(&format!(
                "SELECT status || ' ' || coalesce(number, '-') || ' ' || total || ' ' || coalesce(payment_id, '-')
                 || ' ' || (finalize_at = '{end}'::timestamptz + interval '1 hour') FROM payments.get_invoice('{draft}')"
            ))
        };
        assert_eq!(state(), "draft - 11.00 - true", "unnumbered, uncharged, its total estimated");
        assert_eq!(
            one::<String>("SELECT string_agg(id, ',') FROM payments.list_invoices('cust_dr', status => 'draft')"),
            draft,
            "found as the customer's draft"
        );
        assert_eq!(sqlstate("SELECT payments.list_invoices(status => 'late')"), "PM100");
        let lines = || {
            one::<String>(&format!(
                "SELECT string_agg(kind || ':' || quantity || ':' || amount_minor, ',' ORDER BY line_number)
                 FROM payments.list_invoice_lines('{draft}')"
            ))
        };
        assert_eq!(lines(), "recurring:1:1000,usage:100:100");
        // Usage of the period that ended, recorded late, and a one-off charge.
        record("u2", 50, "1 minute");
        let item = |key: &str, amount: &str, quantity: i32| {
            format!("SELECT total || ' ' || outcome FROM payments.add_invoice_item('{key}', '{draft}', 'Setup', {amount}, {quantity})")
        };
        assert_eq!(one::<String>(&item("it1", "25.00", 2)), "50.00 created");
        assert_eq!(one::<String>(&item("it1", "25.00", 2)), "50.00 replayed");
        assert_eq!(sqlstate(&item("it1", "25.00", 3)), "PM201", "the key with other parameters");
        assert_eq!(sqlstate(&item("it2", "0.001", 1)), "PM101", "a tenth of a cent: excess precision");
        assert_eq!(sqlstate(&item("it3", "-5", 1)), "PM100");
        assert_eq!(sqlstate(&item("it7", "9999999999", 1000)), "PM104", "more than one payment can charge");
        assert_eq!(
            sqlstate(&format!("SELECT payments.add_invoice_item('it4', '{}', 'x', 1)", invoice_of(&sub, 1).0)),
            "PM206",
            "a final invoice takes none"
        );
        assert_eq!(sqlstate("SELECT payments.add_invoice_item('it5', 'inv_nope', 'x', 1)"), "PM204");
        assert_eq!(state(), "draft - 61.50 - true");
        assert_eq!(lines(), "recurring:1:1000,usage:150:150,item:2:5000");
        let early =
            run_billing(&one::<String>(&format!("SELECT ('{end}'::timestamptz + interval '59 minutes')::text")));
        assert_eq!(early.0["finalized"], 0);
        let at = one::<String>(&format!("SELECT ('{end}'::timestamptz + interval '1 hour')::text"));
        assert_eq!(run_billing(&at).0["finalized"], 1);
        assert_eq!(run_billing(&at).0["finalized"], 0, "twice: once");
        let (_, status, number, payment) = invoice_of(&sub, 2);
        assert_eq!(status, "open");
        assert!(number.len() == 11 && number > invoice_of(&sub, 1).2, "numbered when final: {number}");
        assert_eq!(
            one::<String>(&format!("SELECT amount::text FROM payments.payment_details WHERE id = '{payment}'")),
            "61.50"
        );
        assert_eq!(lines(), "recurring:1:1000,usage:150:150,item:2:5000", "written as the draft showed them");
        assert_eq!(event_types(&draft), "invoice.created,invoice.updated,invoice.open");
        assert_eq!(sqlstate(&item("it6", "1", 1)), "PM206", "final now");
        assert_eq!(one::<String>(&item("it1", "25.00", 2)), "50.00 replayed", "a replay still answers");
        assert_eq!(sqlstate("SELECT payments.set_invoice_drafts('4 days')"), "PM100");

        // Canceled in a draft's window: the draft is void, its usage billed on the final invoice.
        let other = one::<String>(
            "SELECT id FROM payments.create_subscription('k2', 'cust_dr2', 'drafty', 'pm_card_visa', at => now() - interval '40 days')",
        );
        run_billing(&one::<String>(&format!("SELECT ({} + interval '1 hour')::text", period_end(&other))));
        let end = one::<String>(&format!("SELECT {}::text", period_end(&other)));
        one::<String>(&format!(
            "SELECT outcome FROM payments.record_usage('v1', 'cust_dr2', 'dtok', 70, '{end}'::timestamptz - interval '2 days')"
        ));
        // The renewal moves it to a version whose tokens cost twice as much: the tokens used before
        // it keep their price.
        let doubled = r#"[{"meter": "dtok", "price": {"mode": "per_unit", "tiers": [{"unit_amount_minor": 2}]}}]"#;
        one::<i32>(&format!(
            "SELECT version FROM payments.create_plan_version('drafty', 2, 10, metered => '{doubled}')"
        ));
        assert_eq!(one::<i32>("SELECT payments.migrate_plan_version('drafty', 1, 2)"), 2, "both subscribers");
        run_billing(&end);
        one::<String>(&format!(
            "SELECT status FROM payments.cancel_subscription('{other}', false, '{end}'::timestamptz + interval '10 minutes')"
        ));
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(kind || ' ' || status || ' ' || total_minor, ',' ORDER BY period_number, kind)
                 FROM payments.invoices WHERE subscription_id = '{other}' AND period_number = 2"
            )),
            "final open 70,period void 1070",
            "the 70 tokens of the period that ended are billed once, at the price they were used at"
        );
    }

    #[pg_test]
    fn a_draft_is_finalized_on_demand_or_before_a_change_and_void_when_canceled() {
        one::<String>("SELECT code FROM payments.create_plan('drafty2', 'usd', 10, 'month', trial_days => 1)");
        let draft_of = |customer: &str| {
            let sub = one::<String>(&format!(
                "SELECT id FROM payments.create_subscription('k1', '{customer}', 'drafty2', 'pm_card_visa', at => now() - interval '3 days')"
            ));
            run_billing(&one::<String>(&format!("SELECT {}::text", period_end(&sub))).replace("+00", "Z"));
            // The trial ended two days ago: its period began then.
            assert_eq!(invoice_of_status(&sub), "draft", "{customer}");
            sub
        };
        // On demand, at a given time.
        let a = draft_of("cust_df1");
        let inv = one::<String>(&format!("SELECT id FROM payments.invoices WHERE subscription_id = '{a}'"));
        assert_eq!(
            one::<String>(&format!(
                "SELECT status || ' ' || (number IS NOT NULL) FROM payments.finalize_invoice('{inv}')"
            )),
            "open true"
        );
        assert_eq!(
            one::<String>(&format!("SELECT status FROM payments.finalize_invoice('{inv}')")),
            "open",
            "again: as it is"
        );
        assert_eq!(sqlstate("SELECT payments.finalize_invoice('inv_nope')"), "PM204");
        // A quantity change prorates against a final invoice.
        let b = draft_of("cust_df2");
        one::<String>(&format!("SELECT outcome FROM payments.set_subscription_quantity('{b}', 2)"));
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(kind || ':' || status, ',' ORDER BY created_at, kind) FROM payments.invoices WHERE subscription_id = '{b}'"
            )),
            "period:open,proration:open"
        );
        // Canceled in its window: never charged, never numbered.
        let c = draft_of("cust_df3");
        one::<String>(&format!("SELECT status FROM payments.cancel_subscription('{c}', false)"));
        assert_eq!(
            one::<String>(&format!(
                "SELECT status || ' ' || coalesce(number, '-') || ' ' || coalesce(payment_id, '-') FROM payments.invoices WHERE subscription_id = '{c}'"
            )),
            "void - -"
        );
        assert_eq!(run_billing(&one::<String>("SELECT (now() + interval '1 day')::text")).0["finalized"], 0);
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.payments WHERE customer_id = 'cust_df3'"), 0);
        // Paused in its window: the renewal is billed first (a pause never voids it).
        let d = draft_of("cust_df4");
        one::<String>(&format!("SELECT status FROM payments.pause_subscription('{d}')"));
        assert_eq!(invoice_of_status(&d), "open");
    }

    fn invoice_of_status(sub: &str) -> String {
        one::<String>(&format!("SELECT string_agg(status, ',') FROM payments.invoices WHERE subscription_id = '{sub}'"))
    }

    #[pg_test]
    fn a_price_change_is_a_version_subscribers_keep_until_migrated_at_a_renewal() {
        renewals_final_at_once();
        one::<String>("SELECT code FROM payments.create_plan('ver', 'usd', 10, 'month', trial_days => 1)");
        // A day apart: a run at one's period end renews only that one.
        let subscribe = |key: &str, customer: &str, days: i32| {
            one::<String>(&format!(
                "SELECT id FROM payments.create_subscription('{key}', '{customer}', 'ver', 'pm_card_visa', at => now() - interval '{days} days')"
            ))
        };
        let old = subscribe("k1", "cust_v1", 3);
        let bump = "SELECT version || ' ' || amount_minor FROM payments.create_plan_version('ver', 2, 12)";
        assert_eq!(one::<String>(bump), "2 1200");
        assert_eq!(one::<String>(bump), "2 1200", "again: the same version");
        for (sql, code) in [
            ("SELECT payments.create_plan_version('ver', 2, 13)", "PM201"),
            ("SELECT payments.create_plan_version('ver', 4, 13)", "PM100"),
            ("SELECT payments.create_plan_version('nope', 2, 13)", "PM204"),
            ("SELECT payments.create_plan_version('ver', 3, 12.001)", "PM101"),
            ("SELECT payments.create_plan('ver', 'usd', 10, 'month', trial_days => 2)", "PM201"),
            ("SELECT payments.migrate_plan_version('ver', 1, 3)", "PM204"),
            ("SELECT payments.migrate_plan_version('ver', 1, 1)", "PM100"),
        ] {
            assert_eq!(sqlstate(sql), code, "{sql}");
        }
        assert_eq!(
            one::<String>("SELECT code FROM payments.create_plan('ver', 'usd', 10, 'month', trial_days => 1)"),
            "ver",
            "create_plan again is still version 1's definition"
        );
        let new = subscribe("k2", "cust_v2", 2);
        let version = |sub: &str| sub_field(sub, "plan_version::text || ' ' || coalesce(pending_version::text, '-')");
        assert_eq!((version(&old), version(&new)), ("1 -".into(), "2 -".into()), "grandfathered");
        let fee = |sub: &str, period: i32| {
            one::<i64>(&format!(
                "SELECT amount_minor FROM payments.invoice_lines l JOIN payments.invoices i ON i.id = l.invoice_id
                 WHERE i.subscription_id = '{sub}' AND i.period_number = {period} AND l.kind = 'recurring'"
            ))
        };
        for sub in [&old, &new] {
            run_billing(&one::<String>(&format!("SELECT {}::text", period_end(sub))));
        }
        assert_eq!((fee(&old, 1), fee(&new, 1)), (1000, 1200));
        assert_eq!(one::<i32>("SELECT payments.migrate_plan_version('ver', 1, 2)"), 1);
        assert_eq!(one::<i32>("SELECT payments.migrate_plan_version('ver', 1, 2)"), 0, "again: nothing more");
        assert_eq!(version(&old), "1 2", "at its next renewal");
        assert_eq!(
            one::<i64>(&format!(
                "SELECT monthly_minor FROM payments.subscription_revenue WHERE subscription_id = '{old}'"
            )),
            1000,
            "billed at version 1 until then"
        );
        run_billing(&one::<String>(&format!("SELECT {}::text", period_end(&old))));
        assert_eq!((fee(&old, 2), version(&old)), (1200, "2 -".into()));
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(reason, ',' ORDER BY seq) FROM payments.subscription_events
                 WHERE subscription_id = '{old}' AND reason LIKE 'plan version%'"
            )),
            "plan version migration scheduled,plan version migrated"
        );
        assert_eq!(
            one::<i64>(&format!(
                "SELECT monthly_minor FROM payments.subscription_revenue WHERE subscription_id = '{old}'"
            )),
            1200
        );
    }

    #[pg_test]
    fn a_plan_priced_in_several_currencies_bills_each_customer_in_its_first_currency() {
        renewals_final_at_once();
        one::<String>("SELECT code FROM payments.create_meter('cur_tok', 'sum')");
        let metered = |amount: i32| {
            format!(
                r#"[{{"meter": "cur_tok", "price": {{"mode": "per_unit", "tiers": [{{"unit_amount_minor": {amount}}}]}}}}]"#
            )
        };
        let eur = format!(r#"{{"eur": {{"amount": "9.00", "metered": {}}}}}"#, metered(2));
        one::<String>(&format!(
            "SELECT code FROM payments.create_plan('world', 'usd', 10, 'month', trial_days => 1, metered => '{}', currency_options => '{eur}')",
            metered(1)
        ));
        one::<String>("SELECT code FROM payments.create_plan('us_only', 'usd', 5, 'month', trial_days => 1)");
        assert_eq!(
            one::<String>(
                "SELECT currency_options -> 'EUR' ->> 'amount_minor' FROM payments.plans WHERE code = 'world'"
            ),
            "900"
        );
        for (options, code) in [
            (r#"{"EUR": {"amount": "9.001"}}"#.to_string(), "PM101"),
            (r#"{"EUR": {}}"#.to_string(), "PM100"),
            (r#"{"EUR": {"amount": 9, "bonus": 1}}"#.to_string(), "PM100"),
            (r#"{"usd": {"amount": 9}}"#.to_string(), "PM100"),
            (r#"{"EUR": {"amount": 9}}"#.to_string(), "PM100"),
        ] {
            let sql = format!(
                "SELECT payments.create_plan('w2', 'usd', 10, 'month', metered => '{}', currency_options => '{options}')",
                metered(1)
            );
            assert_eq!(sqlstate(&sql), code, "{options}: the same meters in every currency");
        }
        let subscribe = |key: &str, plan: &str, currency: &str| {
            format!(
                "SELECT id || ' ' || currency FROM payments.create_subscription('{key}', 'cust_eur', '{plan}', 'pm_card_visa',
                 at => now() - interval '3 days'{currency})"
            )
        };
        let created = one::<String>(&subscribe("k1", "world", ", currency => 'eur'"));
        let (sub, currency) = created.split_once(' ').unwrap();
        assert_eq!(currency, "EUR");
        assert_eq!(one::<String>(&subscribe("k1", "world", ", currency => 'eur'")), created, "a replay");
        assert_eq!(sqlstate(&subscribe("k2", "world", ", currency => 'usd'")), "PM206", "the customer pays in EUR");
        assert_eq!(sqlstate(&subscribe("k3", "us_only", "")), "PM100", "no price in EUR");
        assert_eq!(sqlstate(&format!("SELECT payments.change_plan('{sub}', 'us_only')")), "PM100");
        assert_eq!(
            sqlstate(&format!(
                r#"SELECT payments.create_plan_version('world', 2, 11, currency_options => '{{"JPY": {{"amount": 1500, "metered": {}}}}}')"#,
                metered(1)
            )),
            "PM100",
            "a version keeps the euros its subscribers pay in"
        );
        run_billing(&one::<String>(&format!("SELECT {}::text", period_end(sub))));
        one::<String>("SELECT outcome FROM payments.record_usage('cu1', 'cust_eur', 'cur_tok', 50, now())");
        run_billing(&one::<String>(&format!("SELECT {}::text", period_end(sub))));
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(i.currency || ' ' || i.total_minor, ',' ORDER BY i.period_number) FROM payments.invoices i
                 WHERE i.subscription_id = '{sub}'"
            )),
            "EUR 900,EUR 1000",
            "9.00 a month, and 50 tokens at 2 euro cents"
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT currency || ' ' || monthly_minor FROM payments.subscription_revenue WHERE subscription_id = '{sub}'"
            )),
            "EUR 900"
        );
    }

    #[pg_test]
    fn a_billing_anchor_prorates_the_first_period_and_whole_periods_follow_it() {
        renewals_final_at_once();
        one::<String>("SELECT code FROM payments.create_plan('anch', 'usd', 31, 'month')");
        let create = |key: &str, anchor: &str, trial: &str| {
            format!(
                "SELECT id FROM payments.create_subscription('{key}', 'cust_anch', 'anch', 'pm_card_visa', at => '2030-01-10T00:00Z',
                 billing_cycle_anchor => '{anchor}'{trial})"
            )
        };
        for (anchor, trial, why) in [
            ("2030-02-11T00:00Z", "", "past the first period"),
            ("2030-01-10T00:00Z", "", "not after at"),
            ("2030-02-01T00:00Z", ", trial_days => 3", "with a trial"),
        ] {
            assert_eq!(sqlstate(&create("k0", anchor, trial)), "PM100", "{why}");
        }
        let sub = one::<String>(&create("k1", "2030-02-01T00:00Z", ""));
        // 22 of January's 31 days to the anchor: 31.00 × 22 / 31 = 22.00.
        let (invoice, status, _, payment) = invoice_of(&sub, 1);
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(kind || ':' || amount_minor || ':' || description, ',') FROM payments.invoice_lines WHERE invoice_id = '{invoice}'"
            )),
            "recurring:2200:anch, 2030-01-10 to 2030-02-01 (prorated to the billing anchor)"
        );
        assert_eq!((status.as_str(), sub_field(&sub, "status")), ("open", "incomplete".into()));
        settle(&payment, "pi_anch", 2200, "succeeded");
        // A second seat with 11 days left: 11 days of a 31-day month on one more seat, 11.00.
        one::<String>(&format!(
            "SELECT outcome FROM payments.set_subscription_quantity('{sub}', 2, at => '2030-01-21T00:00Z')"
        ));
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(l.kind || ':' || l.amount_minor, ',' ORDER BY l.line_number) FROM payments.invoice_lines l
                 JOIN payments.invoices i ON i.id = l.invoice_id WHERE i.subscription_id = '{sub}' AND i.kind = 'proration'"
            )),
            "credit:-1100,proration:2200"
        );
        assert_eq!(sub_field(&sub, "current_period_end AT TIME ZONE 'UTC'"), "2030-02-01 00:00:00");
        run_billing("2030-02-01T00:00Z");
        assert_eq!(
            sub_field(&sub, "status || ' ' || (current_period_end AT TIME ZONE 'UTC')"),
            "active 2030-03-01 00:00:00",
            "whole months from the anchor"
        );
        assert_eq!(
            one::<i64>(&format!("SELECT total_minor FROM payments.invoices WHERE id = '{}'", invoice_of(&sub, 2).0)),
            6200
        );
    }

    #[pg_test]
    fn cancel_at_ends_a_subscription_then_and_it_grants_nothing_from_then_on() {
        one::<String>(r#"SELECT code FROM payments.create_plan('cxl', 'usd', 0, 'month', features => '{"api": 10}')"#);
        assert_eq!(
            sqlstate("SELECT payments.create_subscription('k0', 'cust_cxl', 'cxl', at => '2030-01-01T00:00Z', cancel_at => '2030-01-01T00:00Z')"),
            "PM100"
        );
        let create =
            "SELECT id FROM payments.create_subscription('k1', 'cust_cxl', 'cxl', at => '2030-01-01T00:00Z', cancel_at => '2030-02-15T00:00Z')";
        let sub = one::<String>(create);
        Spi::run("SET LOCAL TIME ZONE 'Asia/Tokyo'").unwrap();
        assert_eq!(one::<String>(create), sub, "a retry from another time zone replays");
        Spi::run("SET LOCAL TIME ZONE 'UTC'").unwrap();
        let active =
            |at: &str| one::<bool>(&format!("SELECT payments.has_active_subscription('cust_cxl', at => '{at}')"));
        assert!(
            active("2030-02-14T23:59Z") && !active("2030-02-15T00:00Z"),
            "nothing from cancel_at on, even before a run"
        );
        assert_eq!(run_billing("2030-02-01T00:00Z").0["renewed"], 1, "a period that starts before it renews");
        assert_eq!(sqlstate(&format!("SELECT payments.preview_invoice('{sub}', '2030-02-02T00:00Z')")), "PM206");
        assert_eq!(run_billing("2030-02-14T00:00Z").0["ended"], 0);
        assert_eq!(run_billing("2030-02-15T00:00Z").0["ended"], 1);
        assert_eq!(
            sub_field(&sub, "status || ' ' || (canceled_at AT TIME ZONE 'UTC')"),
            "canceled 2030-02-15 00:00:00"
        );
        // Set, moved and cleared later.
        let other = one::<String>(
            "SELECT id FROM payments.create_subscription('k2', 'cust_cxl2', 'cxl', at => '2030-01-01T00:00Z')",
        );
        let set = |cancel_at: &str| {
            one::<String>(&format!(
                "SELECT outcome || ' ' || coalesce(cancel_at::text, '-') FROM payments.set_subscription_cancel_at('{other}', {cancel_at}, '2030-01-05T00:00Z')"
            ))
        };
        assert!(set("'2030-03-01T00:00Z'").starts_with("applied 2030-03-01"));
        assert!(set("'2030-03-01T00:00Z'").starts_with("noop"));
        assert_eq!(set("NULL"), "applied -");
        assert_eq!(
            sqlstate(&format!(
                "SELECT payments.set_subscription_cancel_at('{other}', '2030-01-04T00:00Z', '2030-01-05T00:00Z')"
            )),
            "PM100",
            "not before at"
        );
        assert_eq!(sqlstate(&format!("SELECT payments.set_subscription_cancel_at('{sub}', NULL)")), "PM206", "ended");
        run_billing("2030-03-01T00:00Z");
        assert_eq!(sub_field(&other, "status"), "active");
    }

    #[pg_test]
    fn a_trial_ending_without_a_payment_method_pauses_cancels_or_invoices_as_asked() {
        renewals_final_at_once();
        one::<String>("SELECT code FROM payments.create_plan('mpm', 'usd', 10, 'month', trial_days => 1)");
        assert_eq!(
            sqlstate("SELECT payments.create_subscription('k0', 'cust_m0', 'mpm', missing_payment_method => 'ignore')"),
            "PM100"
        );
        let subscribe = |customer: &str, behavior: &str| {
            one::<String>(&format!(
                "SELECT id FROM payments.create_subscription('k1', '{customer}', 'mpm', at => '2030-01-01T00:00Z',
                 missing_payment_method => '{behavior}')"
            ))
        };
        let (paused, canceled, invoiced) =
            (subscribe("cust_m1", "pause"), subscribe("cust_m2", "cancel"), subscribe("cust_m3", "create_invoice"));
        run_billing("2030-01-02T00:00Z");
        let state = |sub: &str| {
            one::<String>(&format!(
                "SELECT s.status || ' ' || (SELECT count(*) FROM payments.invoices i WHERE i.subscription_id = s.id)
                 FROM payments.subscriptions s WHERE s.id = '{sub}'"
            ))
        };
        assert_eq!(
            (state(&paused), state(&canceled), state(&invoiced)),
            ("paused 0".into(), "canceled 0".into(), "past_due 1".into())
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT reason FROM payments.subscription_events WHERE subscription_id = '{paused}' ORDER BY seq DESC LIMIT 1"
            )),
            "trial ended without a payment method"
        );
        // With a card, resumed: a paid period starts then.
        one::<String>(&format!(
            "SELECT status FROM payments.set_subscription_payment_method('{paused}', 'pm_card_visa')"
        ));
        one::<String>(&format!("SELECT status FROM payments.resume_subscription('{paused}', '2030-01-05T00:00Z')"));
        assert_eq!(state(&paused), "active 1");
    }

    #[pg_test]
    fn a_first_invoice_paid_by_credits_starts_the_subscription() {
        one::<String>("SELECT code FROM payments.create_plan('prepaid', 'usd', 10, 'month')");
        one::<String>("SELECT outcome FROM payments.grant_credits('g1', 'cust_pre', 10, 'usd')");
        let sub = one::<String>("SELECT id FROM payments.create_subscription('k1', 'cust_pre', 'prepaid')");
        let (_, status, _, payment) = invoice_of(&sub, 1);
        assert_eq!((status.as_str(), payment.as_str(), sub_field(&sub, "status")), ("paid", "-", "active".into()));
    }
}
