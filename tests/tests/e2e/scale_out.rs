//! What only a Citus cluster can show: `payments.distribute()` handed every
//! table to Citus as designed, a customer's rows live together on one node,
//! customers spread over the workers, and the calls that take a distribution
//! value run where their rows live. `make scale-test` starts the 3-node
//! cluster, runs `payments.distribute()`, runs these (hence `#[ignore]` in the
//! single-node suites), then every end-to-end suite against the coordinator.

use std::collections::{HashMap, HashSet};

use payments_e2e::{connect, connect_to, database_url, sqlstate, unique};

/// Every table that belongs to a customer: each one whose primary key starts with
/// `customer_id`, read from the catalog (API keys and SQL logins bound to a customer name one,
/// but belong to the platform: reference tables).
async fn customer_tables(db: &tokio_postgres::Client) -> Vec<String> {
    let tables: Vec<String> = db
        .query(
            "SELECT c.relname::text FROM pg_class c
             JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]
             WHERE c.relnamespace = 'payments'::regnamespace AND c.relkind = 'r' AND a.attname = 'customer_id'
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.len() >= 15 && tables.contains(&"outbox_events".to_string()), "{tables:?}");
    tables
}

#[tokio::test]
#[ignore = "needs the Citus cluster; `make scale-test` (part of `make test`) runs it"]
async fn distribute_gave_every_table_its_place_and_is_idempotent() {
    let db = connect().await;
    let rows = db
        .query(
            "SELECT logicalrelid::regclass::text, partmethod::text, coalesce(column_to_column_name(logicalrelid, partkey), ''),
                    colocationid
             FROM pg_dist_partition WHERE logicalrelid::regclass::text LIKE 'payments.%'",
            &[],
        )
        .await
        .unwrap();
    let placed: HashMap<String, (String, String, i32)> =
        rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3)))).collect();
    let expect = |table: &str, method: &str, column: &str| {
        let (m, c, _) =
            placed.get(&format!("payments.{table}")).unwrap_or_else(|| panic!("{table} is not distributed"));
        assert_eq!((m.as_str(), c.as_str()), (method, column), "{table}");
    };
    let customer_tables = customer_tables(&db).await;
    for table in &customer_tables {
        expect(table, "h", "customer_id");
    }
    expect("payment_customers", "h", "payment_id");
    expect("provider_payments", "h", "provider_payment_id");
    expect("webhook_pending", "h", "provider_payment_id");
    expect("provider_snapshots", "h", "provider_payment_id");
    expect("webhook_events", "h", "event_id");
    for table in [
        "webhook_secrets",
        "api_keys",
        "settings",
        "reconciliation_runs",
        "meters",
        "plans",
        "billing_settings",
        "invoice_numbers",
    ] {
        expect(table, "n", "");
    }
    // Every table of the schema has its place: none is left as a per-node copy.
    let tables: Vec<String> = db
        .query("SELECT c.oid::regclass::text FROM pg_class c WHERE c.relnamespace = 'payments'::regnamespace AND c.relkind = 'r'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let unplaced: Vec<_> = tables.iter().filter(|t| !placed.contains_key(*t)).collect();
    assert!(unplaced.is_empty(), "tables Citus does not manage: {unplaced:?}");
    // Co-location: a customer's tables share one group, waiting webhooks sit beside their provider ids.
    let group = |t: &str| placed[&format!("payments.{t}")].2;
    assert!(customer_tables.iter().all(|t| group(t) == group("payments")), "{customer_tables:?}");
    assert_eq!(group("webhook_pending"), group("provider_payments"));

    assert_eq!(sqlstate(db.query("SELECT * FROM payments.distribute(0)", &[]).await), "PM100");
    let again: Vec<String> =
        db.query("SELECT action FROM payments.distribute()", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert!(again.iter().all(|a| a.starts_with("already")), "a second call changes nothing: {again:?}");
    let delegated: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_dist_object o JOIN pg_proc p ON o.classid = 'pg_proc'::regclass AND o.objid = p.oid
             WHERE p.pronamespace = 'payments'::regnamespace AND o.distribution_argument_index IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(delegated, 12, "four calls by customer and the eight calls naming a payment id");
}

#[tokio::test]
#[ignore = "needs the Citus cluster; `make scale-test` (part of `make test`) runs it"]
async fn a_customers_rows_live_on_one_node_and_customers_spread_over_the_workers() {
    let db = connect().await;
    let prefix = unique("spread");
    for i in 0..40 {
        db.execute(
            // No payment method: nothing for a later suite's reconciler to charge.
            "SELECT payments.create_payment($1, $2, 5, 'USD')",
            &[&format!("{prefix}-k{i}"), &format!("{prefix}-c{i}")],
        )
        .await
        .unwrap();
    }
    // The node of each customer's shard, per table.
    let node_of = "SELECT n.nodeport FROM pg_dist_placement pl JOIN pg_dist_node n ON n.groupid = pl.groupid
                   WHERE pl.shardid = get_shard_id_for_distribution_column($1::text::regclass, $2::text)";
    let (customer_tables, mut nodes) = (customer_tables(&db).await, HashSet::new());
    for i in 0..40 {
        let customer = format!("{prefix}-c{i}");
        let mut ports = HashSet::new();
        for table in &customer_tables {
            let port: i32 = db.query_one(node_of, &[&format!("payments.{table}"), &customer]).await.unwrap().get(0);
            ports.insert(port);
        }
        assert_eq!(ports.len(), 1, "every table's rows of {customer} are on one node");
        nodes.extend(ports);
    }
    assert!(nodes.len() >= 2, "40 customers over {} node(s)", nodes.len());
    // And each row is where the distribution says: counted on its shard, found through the coordinator.
    let found: i64 = db
        .query_one("SELECT count(*) FROM payments.payments WHERE customer_id LIKE $1", &[&format!("{prefix}-%")])
        .await
        .unwrap()
        .get(0);
    assert_eq!(found, 40);
}

#[tokio::test]
#[ignore = "needs the Citus cluster; `make scale-test` (part of `make test`) runs it"]
async fn distribute_runs_on_the_coordinator_only() {
    let url = database_url();
    let port: u16 = url.split_whitespace().find_map(|kv| kv.strip_prefix("port=")).unwrap().parse().unwrap();
    let worker_url = url.replace(&format!("port={port}"), &format!("port={}", port + 1));
    let worker = connect_to(&worker_url).await;
    assert_eq!(sqlstate(worker.query("SELECT * FROM payments.distribute()", &[]).await), "PM401");
}
