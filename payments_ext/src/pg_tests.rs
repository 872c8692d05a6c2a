//! In-database tests: each SQL function and each error path with its SQLSTATE.
//! `cargo pgrx test pg15` runs them inside a throw-away cluster.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// Runs `sql` and returns `SQLSTATE: message` of the error it raised, or
    /// `ok`. Errors are caught in PL/pgSQL so the test transaction survives.
    fn outcome(sql: &str) -> String {
        if Spi::get_one::<bool>("SELECT to_regprocedure('pg_temp.outcome(text)') IS NULL").unwrap() == Some(true) {
            Spi::run(
                "CREATE FUNCTION pg_temp.outcome(q text) RETURNS text LANGUAGE plpgsql AS $$
                 BEGIN EXECUTE q; RETURN 'ok';
                 EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ': ' || SQLERRM; END $$",
            )
            .unwrap();
        }
        Spi::get_one_with_args::<String>("SELECT pg_temp.outcome($1)", &[sql.into()]).unwrap().unwrap()
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
        let first = one::<String>("SELECT outcome || ' ' || id FROM payments.create_payment('k1', 'cust_1', 49.99, 'usd')");
        let (outcome1, id) = first.split_once(' ').unwrap();
        assert_eq!(outcome1, "created");
        assert!(id.starts_with("pay_") && id.len() == 30, "{id}");
        let again = one::<String>("SELECT outcome || ' ' || id FROM payments.create_payment('k1', 'cust_1', 49.990, 'USD')");
        assert_eq!(again, format!("replayed {id}"));
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.payments"), 1);
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.payment_events"), 1);
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
        assert_eq!(sqlstate("SELECT payments.create_payment('k1', 'cust_2', 49.99, 'USD')"), "PM201");
        assert_eq!(sqlstate("SELECT payments.create_payment('k1', 'cust_1', 49.99, 'USD', metadata => '{\"a\":1}')"), "PM201");
        assert_eq!(sqlstate(&format!("SELECT payments.create_payment('{}', 'c', 1, 'USD')", "k".repeat(256))), "PM100");
        assert_eq!(sqlstate(&format!("SELECT payments.create_payment('{}', 'c', 1, 'USD')", "k".repeat(255))), "ok");
        assert_eq!(sqlstate("SELECT payments.create_payment('', 'c', 1, 'USD')"), "PM100");
        assert_eq!(sqlstate("SELECT payments.create_payment('k9', '', 1, 'USD')"), "PM100");
        assert_eq!(sqlstate("SELECT payments.create_payment('k9', 'c', 1, 'USD', metadata => '[1]')"), "PM100");
        assert_eq!(sqlstate("SELECT payments.create_payment('k9', 'c', 1, 'USD', capture_method => 'later')"), "PM100");
        assert_eq!(sqlstate("SELECT payments.create_payment('k9', 'c', 0.001, 'USD')"), "PM101");
        assert_eq!(sqlstate("SELECT payments.create_payment('k9', 'c', 1, 'usdx')"), "PM103");
        // Nothing of the failed calls was written.
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.idempotency_keys"), 2);
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.payments"), 2);
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
        assert_eq!(step("requires_action", "webhook"), "ignored processing");
        let e = outcome(&format!("SELECT payments.transition('{id}', 'requires_action', 'api')"));
        assert!(e.starts_with(&format!("PM202: payment {id} cannot move from processing to requires_action")), "{e}");
        assert_eq!(sqlstate(&format!("SELECT payments.transition('{id}', 'canceled', 'admin')")), "PM202");
        assert_eq!(step("succeeded", "webhook"), "applied succeeded");
        // Terminal: never left.
        assert_eq!(step("failed", "provider"), "ignored succeeded");
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
        assert_eq!(one::<String>(&format!("SELECT last_error->>'code' FROM payments.payments WHERE id = '{id}'")), "card_declined");
    }

    #[pg_test]
    fn record_provider_result_links_once_and_strips_secrets() {
        let id = create("r1", "12.34");
        let r = one::<String>(&format!(
            "SELECT outcome || ' ' || status || ' ' || provider_payment_id FROM payments.record_provider_result(
                 '{id}', 'sandbox', 'pi_1', 'requires_action', '{{\"id\": \"pi_1\", \"client_secret\": \"pi_1_secret_x\"}}')"
        ));
        assert_eq!(r, "applied requires_action pi_1");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM payments.payment_events WHERE data::text LIKE '%secret%'"),
            0
        );
        // Same link again: fine. Another provider id for this payment, or this provider id for another payment: PM203.
        let r = one::<String>(&format!(
            "SELECT outcome FROM payments.record_provider_result('{id}', 'sandbox', 'pi_1', 'succeeded', '{{}}')"
        ));
        assert_eq!(r, "applied");
        assert_eq!(
            sqlstate(&format!("SELECT payments.record_provider_result('{id}', 'sandbox', 'pi_2', 'succeeded', '{{}}')")),
            "PM203"
        );
        let other = create("r2", "1");
        assert_eq!(
            sqlstate(&format!("SELECT payments.record_provider_result('{other}', 'sandbox', 'pi_1', 'processing', '{{}}')")),
            "PM203"
        );
        let declined = create("r3", "1");
        one::<String>(&format!(
            "SELECT status FROM payments.record_provider_result('{declined}', 'sandbox', 'pi_3', 'failed',
                 '{{\"last_payment_error\": {{\"code\": \"card_declined\", \"decline_code\": \"generic_decline\"}}}}')"
        ));
        assert_eq!(
            one::<String>(&format!("SELECT last_error->>'decline_code' FROM payments.payments WHERE id = '{declined}'")),
            "generic_decline"
        );
        assert_eq!(sqlstate("SELECT payments.record_provider_result('pay_x', 'sandbox', 'pi_9', 'succeeded', '{}')"), "PM204");
        assert_eq!(sqlstate(&format!("SELECT payments.record_provider_result('{id}', '', NULL, 'succeeded', '{{}}')")), "PM100");
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
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.list_payments(status => 'requires_payment_method')"), 6);
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.list_payments(status => 'succeeded')"), 0);
        assert_eq!(sqlstate("SELECT payments.list_payments(lim => 0)"), "PM100");
        assert_eq!(sqlstate("SELECT payments.list_payments(lim => 101)"), "PM100");
        assert_eq!(sqlstate("SELECT payments.list_payments(status => 'paid')"), "PM100");
    }

    #[pg_test]
    fn history_is_append_only_and_hash_chained() {
        let id = create("h1", "1");
        one::<String>(&format!("SELECT outcome FROM payments.transition('{id}', 'succeeded', 'api')"));
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.verify_event_chain()"), 0);
        assert_eq!(
            one::<bool>(&format!(
                "SELECT e2.prev_hash = e1.hash FROM payments.payment_events e1 JOIN payments.payment_events e2
                 USING (payment_id) WHERE payment_id = '{id}' AND e1.seq = 1 AND e2.seq = 2"
            )),
            true
        );
        let e = outcome(&format!("UPDATE payments.payment_events SET reason = 'x' WHERE payment_id = '{id}'"));
        assert!(e.starts_with("PM205: UPDATE on payments.payment_events is not allowed"), "{e}");
        assert_eq!(sqlstate("DELETE FROM payments.payment_events"), "PM205");
        assert_eq!(sqlstate("TRUNCATE payments.payment_events"), "PM205");
        assert_eq!(sqlstate("DELETE FROM payments.payments"), "PM205");

        // Tamper the way only a superuser can: with triggers off.
        Spi::run("SET LOCAL session_replication_role = replica").unwrap();
        Spi::run(&format!("UPDATE payments.payment_events SET to_status = 'failed' WHERE payment_id = '{id}' AND seq = 2")).unwrap();
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
        create("p1", "1");
        assert_eq!(sqlstate("SELECT payments.purge_idempotency_keys('1 hour')"), "PM100");
        assert_eq!(one::<i64>("SELECT payments.purge_idempotency_keys('24 hours')"), 0);
        Spi::run("UPDATE payments.idempotency_keys SET created_at = now() - interval '2 days'").unwrap();
        assert_eq!(one::<i64>("SELECT payments.purge_idempotency_keys('24 hours')"), 1);
        // The key is free again: a new call makes a new payment.
        assert_eq!(one::<String>("SELECT outcome FROM payments.create_payment('p1', 'cust_1', 1, 'usd')"), "created");
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
        outcome("SELECT 1"); // the helper must exist before the role switch
        Spi::run("SET LOCAL ROLE payments_reader").unwrap();
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.payment_details"), 1);
        assert_eq!(sqlstate("SELECT count(*) FROM payments.payments"), "42501");
        assert_eq!(sqlstate("SELECT payments.create_payment('g2', 'c', 1, 'USD')"), "42501");
        Spi::run("RESET ROLE").unwrap();
        Spi::run("SET LOCAL ROLE payments_gateway").unwrap();
        assert_eq!(sqlstate("SELECT payments.create_payment('g2', 'c', 1, 'USD')"), "ok");
        assert_eq!(sqlstate("INSERT INTO payments.idempotency_keys VALUES ('x', '\\x00', 'pay_x')"), "42501");
        assert_eq!(sqlstate("SELECT payments.purge_idempotency_keys('1 day')"), "42501");
        assert_eq!(sqlstate("SELECT payments._append_event('pay_x', NULL, 'failed', true, 'api', NULL, '{}')"), "42501");
        Spi::run("RESET ROLE").unwrap();
    }

    #[pg_test]
    fn state_machine_is_visible_in_sql() {
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.allowed_transitions()"), 24);
        assert_eq!(one::<i64>("SELECT count(*) FROM payments.statuses() WHERE terminal"), 3);
    }
}
