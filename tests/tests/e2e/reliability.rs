//! The reliability suite: races, the state machine in SQL against Rust,
//! fuzzing the parsers, crashes of PostgreSQL and of the gateway. Each case
//! reports a row (case, trials, failures, figure) to the table `make
//! reliability` prints; `make test` runs the quick form (`payments_e2e::sized`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use payments_core::evidence;
use payments_core::state::{self, Source, Status};
use payments_e2e::{api_key, connect, explored, gateway_database_url, report, sized, unique, Gateway};
use serde_json::{json, Value};

/// A gateway binary with the embedded sandbox, under its own provider name.
async fn sandbox_gateway(extra: &[(&str, String)]) -> Gateway {
    let provider = unique("rel");
    let secret = payments_e2e::webhook_secret(&provider).await;
    let mut env = vec![
        ("DATABASE_URL", gateway_database_url().await),
        ("PAYMENTS_PROVIDER", "sandbox".to_string()),
        ("PAYMENTS_PROVIDER_NAME", provider),
        ("SANDBOX_WEBHOOK_SECRET", secret),
        ("GATEWAY_POOL_SIZE", "32".to_string()),
        ("GATEWAY_POOL_WAIT_MS", "5000".to_string()),
    ];
    env.extend(extra.iter().cloned());
    Gateway::spawn(&["serve", "--listen", "127.0.0.1:0"], &env).await
}

/// 64 clients, half through the gateway and half through SQL, race over the
/// same idempotency keys: one payment per key, and every replay identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_clients_race_the_same_keys_through_http_and_sql() {
    let gateway = sandbox_gateway(&[]).await;
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let prefix = unique("race");
    let customer = Arc::new(prefix.clone());
    let keys: Arc<Vec<String>> = Arc::new((0..sized(40, 400)).map(|i| format!("{prefix}-{i}")).collect());
    let http = reqwest::Client::new();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..64usize {
        let (keys, http, url, api_key) = (keys.clone(), http.clone(), gateway.url.clone(), key.clone());
        let customer = customer.clone();
        clients.spawn(async move {
            // (key, what the call answered: the whole payment over HTTP; id, amount, status, time over SQL)
            let mut seen: Vec<(String, String)> = Vec::new();
            let db = if c % 2 == 1 { Some(connect().await) } else { None };
            for i in 0..keys.len() {
                let key = &keys[(i + c * 7) % keys.len()];
                let id = match &db {
                    None => {
                        let r = http
                            .post(format!("{url}/v1/payments"))
                            .bearer_auth(&api_key)
                            .header("Idempotency-Key", key)
                            .json(&json!({"customer_id": *customer, "amount": "10.00", "currency": "USD"}))
                            .send()
                            .await
                            .unwrap();
                        assert!(r.status().is_success(), "{}", r.status());
                        r.text().await.unwrap()
                    }
                    Some(db) => db
                        .query_one(
                            "SELECT id || ' ' || amount || ' ' || status || ' ' || created_at
                             FROM payments.create_payment($1, $2, 10.00, 'USD')",
                            &[key, &*customer],
                        )
                        .await
                        .unwrap()
                        .get(0),
                };
                seen.push((key.clone(), id));
            }
            seen
        });
    }
    // Every answer for one key, by channel: each channel must have answered identically.
    let mut answers_per_key: HashMap<(String, bool), HashSet<String>> = HashMap::new();
    let mut ids_per_key: HashMap<String, HashSet<String>> = HashMap::new();
    let mut calls = 0;
    while let Some(done) = clients.join_next().await {
        for (key, answer) in done.unwrap() {
            calls += 1;
            let over_http = answer.starts_with('{');
            let id = if over_http {
                serde_json::from_str::<Value>(&answer).unwrap()["id"].as_str().unwrap().to_string()
            } else {
                answer.split(' ').next().unwrap().to_string()
            };
            ids_per_key.entry(key.clone()).or_default().insert(id);
            answers_per_key.entry((key, over_http)).or_default().insert(answer);
        }
    }
    let payments: i64 = connect()
        .await
        .query_one("SELECT count(*) FROM payments.payments WHERE customer_id = $1", &[&*customer])
        .await
        .unwrap()
        .get(0);
    let split = ids_per_key.values().filter(|ids| ids.len() != 1).count()
        + answers_per_key.values().filter(|answers| answers.len() != 1).count();
    let failures = split + (payments as usize).abs_diff(keys.len());
    report(
        "idempotency races: 64 clients (HTTP and SQL) on the same keys",
        calls,
        failures,
        &format!("{} keys, {payments} payments, {split} keys answered two ways", keys.len()),
    );
    assert_eq!(failures, 0);
    gateway.stop().await;
}

/// Random sequences of transitions through SQL give exactly what the Rust
/// state machine decides, never leave a final state and never move backwards.
#[tokio::test]
async fn the_sql_state_machine_agrees_with_the_rust_one() {
    let db = connect().await;
    let mut rng = fastrand::Rng::with_seed(0x57a7e);
    let sequences = explored(&db, sized(60, 600)).await;
    // The customer too, as an application would: on Citus the id alone is asked of every shard.
    const STATUS: &str = "SELECT status FROM payments.payments WHERE customer_id = 'cust_sm' AND id = $1";
    let mut disagreements = Vec::new();
    let mut steps = 0;
    for n in 0..sequences {
        let id: String = db
            .query_one("SELECT id FROM payments.create_payment($1, 'cust_sm', 1, 'USD')", &[&unique(&format!("sm{n}"))])
            .await
            .unwrap()
            .get(0);
        let mut model = Status::RequiresPaymentMethod;
        for _ in 0..rng.usize(1..12) {
            steps += 1;
            let to = state::ALL[rng.usize(..state::ALL.len())];
            let source = Source::ALL[rng.usize(..Source::ALL.len())];
            let expected = state::decide(model, to, source);
            let got = db
                .query_one(
                    "SELECT outcome, status FROM payments.transition($1, $2, $3)",
                    &[&id, &to.as_str(), &source.as_str()],
                )
                .await;
            let got_outcome = match &got {
                Ok(row) => row.get::<_, String>(0),
                Err(e) => e.code().map_or("?".into(), |c| c.code().to_string()),
            };
            let want_outcome = expected.outcome().unwrap_or("PM202");
            let before = model;
            if expected == state::Decision::Apply {
                model = to;
            }
            let status: String = db.query_one(STATUS, &[&id]).await.unwrap().get(0);
            let backwards = model.rank() < before.rank() || (before.is_terminal() && model != before);
            if got_outcome != want_outcome || status != model.as_str() || backwards {
                disagreements.push(format!(
                    "{id}: {} -> {} by {}: sql {got_outcome}/{status}, rust {want_outcome}/{}",
                    before.as_str(),
                    to.as_str(),
                    source.as_str(),
                    model.as_str()
                ));
            }
        }
    }
    report(
        "state machine: SQL against Rust on random sequences",
        steps,
        disagreements.len(),
        &format!("{sequences} sequences, {steps} transitions"),
    );
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

/// Random and mutated request bodies and provider amounts: no parser panics,
/// and each answers within its contract (money amounts, signature headers and
/// provider events are fuzzed once, by the cargo fuzz targets in fuzz/).
#[test]
fn parsers_take_any_input_without_panicking() {
    // Per target: the two targets take turns.
    let iterations = 2 * sized(40_000, 10_000_000);
    let mut rng = fastrand::Rng::with_seed(0xf022);
    let seeds: [&[u8]; 8] = [
        b"49.99",
        b"1000",
        br#"{"customer_id":"c","amount":"1.00","currency":"USD","metadata":{"a":"b"}}"#,
        br#"{"customer_id":"c","amount":49.99,"currency":"JPY","capture_method":"manual"}"#,
        br#"{"customer_id":"c","amount_minor":1000,"currency":"usd","payment_method":"pm_card_visa"}"#,
        b"1e3",
        b"",
        b"-0.001",
    ];
    // The documented fields of a payment request, from the OpenAPI document the gateway serves.
    let api = serde_json::to_value(payments_gateway::openapi::document()).unwrap();
    let fields: HashSet<String> =
        api["components"]["schemas"]["CreatePayment"]["properties"].as_object().unwrap().keys().cloned().collect();
    assert!(fields.contains("customer_id") && fields.contains("amount"), "{fields:?}");
    let mut input = Vec::new();
    let started = Instant::now();
    let (mut runs, mut failures) = ([0usize; 2], Vec::<String>::new());
    for i in 0..iterations {
        // Mutate a seed: flip, insert, delete or splice bytes.
        input.clear();
        input.extend_from_slice(seeds[rng.usize(..seeds.len())]);
        for _ in 0..rng.usize(0..4) {
            match rng.u8(..4) {
                0 if !input.is_empty() => {
                    let at = rng.usize(..input.len());
                    input[at] = rng.u8(..);
                }
                1 => input.insert(rng.usize(..=input.len()), rng.u8(..)),
                2 if !input.is_empty() => {
                    input.remove(rng.usize(..input.len()));
                }
                _ => input.extend_from_slice(seeds[rng.usize(..seeds.len())]),
            }
        }
        // A panic or a broken contract is counted (the first few kept), and the loop goes on.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse_one(i % 2, &input, &fields)));
        if let Err(panic) = outcome {
            let why = panic.downcast_ref::<String>().cloned().or(panic.downcast_ref::<&str>().map(|s| s.to_string()));
            failures.push(format!("target {}: {}", i % 2, why.unwrap_or_default()));
        }
        runs[i % 2] += 1;
    }
    report(
        "fuzzing: request bodies and provider evidence",
        iterations,
        failures.len(),
        &format!(
            "{} runs per target in {:.0?}, {} panics or broken contracts",
            runs[0],
            started.elapsed(),
            failures.len()
        ),
    );
    assert!(failures.is_empty(), "{} failures, the first: {:?}", failures.len(), &failures[..failures.len().min(5)]);
}

/// One input to one parser; panics when the parser panics or breaks its contract. (Money
/// amounts, signature headers and provider events: the cargo fuzz targets in fuzz/.)
fn parse_one(target: usize, input: &[u8], payment_fields: &HashSet<String>) {
    let text = String::from_utf8_lossy(input);
    match target {
        0 => {
            // A body is taken only as a JSON object of the documented fields, its amount as written.
            if let Ok(payment) = serde_json::from_slice::<payments_gateway::routes::payments::CreatePayment>(input) {
                let object: serde_json::Map<String, Value> = serde_json::from_slice(input).expect("a JSON object");
                assert!(object.keys().all(|k| payment_fields.contains(k)), "{text:?}: an undocumented field accepted");
                assert_eq!(object["customer_id"], payment.customer_id.as_str(), "{text:?}");
                if let Some(amount) = &payment.amount {
                    assert!(text.contains(amount.get()), "{text:?}: the amount {} is not the one sent", amount.get());
                }
            }
        }
        _ => {
            let expected = evidence::Expected { amount_minor: 1000, currency: "USD" };
            let observed = evidence::Observed {
                amount: Some(&text),
                currency: Some("usd"),
                amount_received: Some(&text),
                amount_capturable: None,
            };
            if evidence::check(&expected, Status::Succeeded, &observed).is_none() {
                assert_eq!(text.parse::<i64>().ok(), Some(1000), "{text:?} accepted as 1000 minor units");
            }
        }
    }
}

/// A PostgreSQL cluster of the suite's own, which it may kill.
struct Cluster {
    data: std::path::PathBuf,
    port: u16,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl Cluster {
    /// As the postgres user when running as root (the server refuses root),
    /// without RUST_BACKTRACE (a server started with it adds backtraces to errors).
    fn command(program: &str) -> std::process::Command {
        let is_root = std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
        let mut cmd = if is_root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", &format!("{PG_BIN}/{program}")]);
            c
        } else {
            std::process::Command::new(format!("{PG_BIN}/{program}"))
        };
        cmd.env_remove("RUST_BACKTRACE");
        cmd
    }

    fn run(cmd: &mut std::process::Command) {
        let out = cmd.output().expect("run a PostgreSQL program");
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn create() -> Cluster {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.run");
        let data = root.join(unique("reliability-pg"));
        std::fs::create_dir_all(&data).unwrap();
        let _ = std::process::Command::new("chown").args(["postgres", data.to_str().unwrap()]).status();
        Self::run(Self::command("initdb").args(["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust"]));
        let cluster = Cluster { data, port: payments_e2e::free_port() };
        cluster.start();
        cluster
    }

    fn start(&self) {
        let options = format!("-c listen_addresses=127.0.0.1 -p {} -k {}", self.port, self.data.display());
        Self::run(
            Self::command("pg_ctl").args(["-D", self.data.to_str().unwrap(), "-w", "-t", "60", "-o", &options]).args([
                "-l",
                &format!("{}/log", self.data.display()),
                "start",
            ]),
        );
    }

    /// `kill -9` of the postmaster, then waits for its children to die with it.
    fn kill_postmaster(&self) {
        let pid = std::fs::read_to_string(self.data.join("postmaster.pid")).unwrap();
        let pid = pid.lines().next().unwrap().trim().to_string();
        // Its children, from /proc (field 4 of /proc/N/stat is the parent's pid).
        let children: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .filter(|n| {
                std::fs::read_to_string(format!("/proc/{n}/stat")).is_ok_and(|stat| {
                    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)) == Some(pid.as_str())
                })
            })
            .collect();
        // The shell's own kill: no procps needed.
        std::process::Command::new("sh").args(["-c", &format!("kill -9 {pid}")]).status().unwrap();
        for child in children {
            while std::path::Path::new(&format!("/proc/{child}")).exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn url(&self, db: &str) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname={db}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Self::command("pg_ctl").args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Under gateway load, the postmaster is killed with SIGKILL and restarted,
/// again and again: every payment the gateway acknowledged survives with an
/// intact history, nothing is half-written, and the gateway answers 503 while
/// the database is down and recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_killed_under_load_loses_no_acknowledged_payment() {
    let cluster = Cluster::create();
    let admin = payments_e2e::connect_to(&cluster.url("postgres")).await;
    admin.batch_execute("CREATE DATABASE payments").await.unwrap();
    let db = payments_e2e::connect_to(&cluster.url("payments")).await;
    db.batch_execute("CREATE EXTENSION payments; CREATE ROLE rel_gateway LOGIN IN ROLE payments_gateway;")
        .await
        .unwrap();
    let key: String = db
        .query_one("SELECT api_key FROM payments.create_api_key('rel', ARRAY['payments:write'])", &[])
        .await
        .unwrap()
        .get(0);
    let gateway_url = cluster.url("payments").replace("user=postgres", "user=rel_gateway");
    let gateway = Gateway::spawn(
        &["serve", "--listen", "127.0.0.1:0"],
        &[
            ("DATABASE_URL", gateway_url),
            ("PAYMENTS_PROVIDER", "sandbox".to_string()),
            ("GATEWAY_POOL_SIZE", "16".to_string()),
            ("GATEWAY_POOL_WAIT_MS", "1000".to_string()),
            ("GATEWAY_AUTH_CACHE_MS", "60000".to_string()),
            ("RECONCILE_INTERVAL_MS", "3600000".to_string()),
        ],
    )
    .await;
    drop(db);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let mut load = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let (stop, http, url, key) = (stop.clone(), http.clone(), gateway.url.clone(), key.clone());
        load.spawn(async move {
            let (mut acked, mut answers, mut hangs) = (Vec::new(), HashMap::<u16, usize>::new(), 0usize);
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let r = http
                    .post(format!("{url}/v1/payments"))
                    .bearer_auth(&key)
                    .header("Idempotency-Key", format!("w{worker}-{n}"))
                    .json(&json!({"customer_id": "cust_crash", "amount": "1.00", "currency": "USD"}))
                    .send()
                    .await;
                match r {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        *answers.entry(status).or_default() += 1;
                        if r.status().is_success() {
                            let body: Value = r.json().await.unwrap();
                            acked.push(body["id"].as_str().unwrap().to_string());
                        } else {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    Err(_) => hangs += 1,
                }
            }
            (acked, answers, hangs)
        });
    }

    let kills = sized(2, 10);
    let (mut down_503, mut recovered) = (0, 0);
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.kill_postmaster();
        let ready = http.get(format!("{}/readyz", gateway.url)).send().await.map(|r| r.status().as_u16());
        if ready.is_ok_and(|s| s == 503) {
            down_503 += 1;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.start();
        for _ in 0..300 {
            let ready = http.get(format!("{}/readyz", gateway.url)).send().await.map(|r| r.status().as_u16());
            if ready.is_ok_and(|s| s == 200) {
                recovered += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut acked, mut answers, mut hangs) = (Vec::new(), HashMap::<u16, usize>::new(), 0);
    while let Some(done) = load.join_next().await {
        let (a, s, h) = done.unwrap();
        acked.extend(a);
        hangs += h;
        for (k, v) in s {
            *answers.entry(k).or_default() += v;
        }
    }

    let db = payments_e2e::connect_to(&cluster.url("payments")).await;
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM payments.payments WHERE id = ANY($1)),
                    (SELECT count(*) FROM payments.verify_event_chain()),
                    (SELECT count(*) FROM payments.payments p
                     WHERE NOT EXISTS (SELECT FROM payments.payment_events e WHERE e.payment_id = p.id)),
                    (SELECT count(*) FROM payments.payments WHERE id = ANY($1) AND idempotency_key IS NULL)",
            &[&acked],
        )
        .await
        .unwrap();
    let (found, broken, no_history, keyless): (i64, i64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
    let server_errors: usize = answers.iter().filter(|(s, _)| **s >= 500 && **s != 503).map(|(_, n)| n).sum();
    let lost = acked.len() - found as usize;
    let failures = lost
        + broken as usize
        + no_history as usize
        + keyless as usize
        + server_errors
        + hangs
        + (kills - recovered)
        + (kills - down_503);
    let mut answers: Vec<_> = answers.into_iter().collect();
    answers.sort();
    report(
        "PostgreSQL killed (SIGKILL) under 16 connections of gateway load",
        kills,
        failures,
        &format!(
            "{} acknowledged, {found} found; answers {answers:?}; {hangs} hangs; 503 while down {down_503}/{kills}, recovered {recovered}/{kills}",
            acked.len()
        ),
    );
    assert_eq!(failures, 0, "lost {lost}, broken {broken}, without history {no_history}, without a key {keyless}, 5xx {server_errors}, hangs {hangs}");
    gateway.stop().await;
}

/// The gateway dies before its provider call, or after the provider answered
/// and before it recorded the answer; a new gateway's reconciler brings every
/// payment to its provider state, and the provider charged each exactly once.
#[tokio::test]
async fn gateway_crashes_around_the_provider_call_never_charge_twice() {
    let sandbox_key = "sk_test_reliability";
    let sandbox =
        Gateway::spawn(&["sandbox", "--listen", "127.0.0.1:0"], &[("SANDBOX_API_KEY", sandbox_key.to_string())]).await;
    let provider = unique("crash");
    let base_env = vec![
        ("DATABASE_URL", gateway_database_url().await),
        ("PAYMENTS_PROVIDER_NAME", provider.clone()),
        ("STRIPE_SECRET_KEY", sandbox_key.to_string()),
        ("STRIPE_API_BASE", sandbox.url.clone()),
        ("RECONCILE_INTERVAL_MS", "3600000".to_string()),
    ];
    let (_, key) = api_key(&["payments:read", "payments:write"]).await;
    let customer = unique("cust_crash");
    let http = reqwest::Client::new();
    let per_point = sized(2, 10);
    let mut crashes = 0;
    for point in ["before_provider_call", "after_provider_answer"] {
        for _ in 0..per_point {
            let mut env = base_env.clone();
            env.push(("PAYMENTS_FAULT_POINT", point.to_string()));
            let gateway = Gateway::spawn(&["serve", "--listen", "127.0.0.1:0"], &env).await;
            let r = http
                .post(format!("{}/v1/payments", gateway.url))
                .bearer_auth(&key)
                .header("Idempotency-Key", unique("crash"))
                .json(&json!({"customer_id": customer, "amount": "5.00", "currency": "USD", "payment_method": "pm_card_visa"}))
                .send()
                .await;
            assert!(r.is_err(), "the gateway died mid-request ({point})");
            crashes += 1;
            gateway.stop().await;
        }
    }
    // A healthy gateway takes the work over.
    let mut env = base_env.clone();
    env.extend([
        ("RECONCILE_INTERVAL_MS", "100".to_string()),
        ("RECONCILE_MIN_AGE_MS", "0".to_string()),
        ("RECONCILE_LEASE_MS", "1000".to_string()),
        ("PROVIDER_TIMEOUT_MS", "1000".to_string()),
    ]);
    let healthy = Gateway::spawn(&["serve", "--listen", "127.0.0.1:0"], &env).await;
    let db = connect().await;
    let mut statuses: Vec<(String, String)> = Vec::new();
    for _ in 0..200 {
        statuses = db
            .query("SELECT id, status FROM payments.payments WHERE customer_id = $1", &[&customer])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if statuses.len() == crashes && statuses.iter().all(|(_, s)| s == "succeeded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let charges = payments_e2e::sandbox_charges(&sandbox.url, sandbox_key).await;
    let unfinished = statuses.iter().filter(|(_, s)| s != "succeeded").count();
    let wrong_charges = statuses.iter().filter(|(id, _)| charges.get(id).copied() != Some(1)).count();
    // The sandbox serves this test alone: no charge under any other key either.
    let all_charges: u32 = charges.values().sum();
    let failures =
        unfinished + wrong_charges + crashes.abs_diff(statuses.len()) + crashes.abs_diff(all_charges as usize);
    report(
        "gateway killed before the provider call / after its answer",
        crashes,
        failures,
        &format!(
            "{crashes} crashes, {} payments, {} succeeded after takeover, {all_charges} charges in all, per payment: {:?}",
            statuses.len(),
            statuses.len() - unfinished,
            statuses.iter().map(|(id, _)| charges.get(id).copied().unwrap_or(0)).collect::<Vec<_>>()
        ),
    );
    assert_eq!(failures, 0, "{statuses:?} {charges:?}");
    healthy.stop().await;
    sandbox.stop().await;
}
