//! Shared helpers for the end-to-end suites. `make test` starts the cluster,
//! creates a fresh database with the extension and sets
//! `PAYMENTS_TEST_DATABASE_URL` (a superuser connection).

use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::{Client, Error, NoTls};

pub fn database_url() -> String {
    std::env::var("PAYMENTS_TEST_DATABASE_URL")
        .expect("PAYMENTS_TEST_DATABASE_URL is not set: run the end-to-end tests through `make test`")
}

pub async fn connect() -> Client {
    connect_to(&database_url()).await
}

pub async fn connect_to(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect to the test cluster");
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("connection error: {e}");
        }
    });
    client
}

/// The test cluster's connection string with another database name.
pub fn database_url_for(dbname: &str) -> String {
    let base = database_url();
    let others: Vec<&str> = base.split_whitespace().filter(|kv| !kv.starts_with("dbname=")).collect();
    format!("{} dbname={dbname}", others.join(" "))
}

/// Drops `name` if it exists and creates it empty (no extension).
pub async fn recreate_database(name: &str) {
    let db = connect().await;
    // Each its own statement: neither may run inside a transaction block.
    db.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await.expect("drop a test database");
    db.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await.expect("create a test database");
}

/// A prefix no earlier run used, so tests never see each other's rows.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{nanos:x}")
}

/// [`unique`] as a code (a meter's, a plan's, a coupon's, a role's name): lowercase letters,
/// digits and underscores.
pub fn unique_code(prefix: &str) -> String {
    unique(prefix).to_lowercase().replace('-', "_")
}

/// The SQLSTATE of a database error, or a panic naming the unexpected success.
pub fn sqlstate<T: std::fmt::Debug>(result: Result<T, Error>) -> String {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.code().map(|c| c.code().to_string()).unwrap_or_else(|| panic!("not a database error: {e}")),
    }
}

/// A gateway process on a random port, killed when dropped.
pub struct Gateway {
    pub url: String,
    child: tokio::process::Child,
}

impl Gateway {
    /// Starts `payments-gateway <args…>` and waits for its "listening on" line.
    pub async fn spawn(args: &[&str], env: &[(&str, String)]) -> Gateway {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let bin = std::env::var("PAYMENTS_GATEWAY_BIN").expect("PAYMENTS_GATEWAY_BIN is set by `make test`");
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(args).stdout(std::process::Stdio::piped()).kill_on_drop(true);
        // The delivery worker connects as a role of its own, as in production.
        if env.iter().any(|(k, _)| *k == "DATABASE_URL") && !env.iter().any(|(k, _)| *k == "WORKER_DATABASE_URL") {
            cmd.env("WORKER_DATABASE_URL", worker_database_url().await);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start payments-gateway");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
            .await
            .expect("the gateway printed its address in time")
            .unwrap()
            .expect("the gateway exited before listening");
        let url = line.strip_prefix("listening on ").unwrap().split(' ').next().unwrap().to_string();
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Gateway { url, child }
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The key the tests' embedded sandboxes accept.
pub const SANDBOX_KEY: &str = "sk_test_e2e";

/// A gateway with the embedded sandbox under its own provider name and
/// webhook secret (so the sandbox's webhooks come back signed), plus `extra_env`.
pub async fn sandbox_gateway(extra_env: &[(&str, String)]) -> Gateway {
    let provider = unique("sandbox");
    let secret = webhook_secret(&provider).await;
    let mut env = vec![
        ("DATABASE_URL", gateway_database_url().await),
        ("PAYMENTS_PROVIDER", "sandbox".to_string()),
        ("PAYMENTS_PROVIDER_NAME", provider),
        ("SANDBOX_API_KEY", SANDBOX_KEY.to_string()),
        ("SANDBOX_WEBHOOK_SECRET", secret),
        ("SANDBOX_ASYNC_DELAY_MS", "200".to_string()),
    ];
    env.extend(extra_env.iter().cloned());
    Gateway::spawn(&["serve", "--listen", "127.0.0.1:0"], &env).await
}

/// Runs a Python script of this crate (`tests/<script>`) with make setup's
/// venv (`PAYMENTS_PYTHON`) and `args`; it must succeed within `seconds`
/// and print a JSON report as its last line, which is returned.
pub async fn python_report(script: &str, args: &[&str], seconds: u64) -> serde_json::Value {
    let python = std::env::var("PAYMENTS_PYTHON").expect("PAYMENTS_PYTHON is set by `make test`");
    let path = format!("{}/{script}", env!("CARGO_MANIFEST_DIR"));
    let run = tokio::process::Command::new(python).arg(&path).args(args).kill_on_drop(true).output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(seconds), run)
        .await
        .unwrap_or_else(|_| panic!("{script} took more than {seconds} s"))
        .expect("start python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|_| panic!("{script}: no JSON report"))
}

/// A free TCP port on 127.0.0.1 (free when this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The connection string for a login role in payments_gateway, as a gateway uses.
/// A login role in payments_worker: what the gateway's webhook delivery worker connects as.
pub async fn worker_database_url() -> String {
    login_role_url("payments_e2e_worker", "payments_worker").await
}

/// A login role in payments_gateway: what the gateway connects as.
pub async fn gateway_database_url() -> String {
    login_role_url("payments_e2e_gateway", "payments_gateway").await
}

async fn login_role_url(login: &str, group: &str) -> String {
    let db = connect().await;
    db.batch_execute(&format!(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{login}') THEN
             CREATE ROLE {login} LOGIN IN ROLE {group};
           END IF;
         END $$"
    ))
    .await
    .unwrap();
    let base = database_url();
    let without_user: Vec<&str> = base.split_whitespace().filter(|kv| !kv.starts_with("user=")).collect();
    format!("{} user={login}", without_user.join(" "))
}

/// A new API key with the given scopes, acting for `customer` only.
pub async fn api_key_for(scopes: &[&str], customer: &str) -> (String, String) {
    let db = connect().await;
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    let sql = "SELECT id, api_key FROM payments.create_api_key('e2e bound', $1, $2)";
    let row = db.query_one(sql, &[&scopes, &customer]).await.unwrap();
    (row.get(0), row.get(1))
}

/// A new API key with the given scopes.
pub async fn api_key(scopes: &[&str]) -> (String, String) {
    let db = connect().await;
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    let row = db.query_one("SELECT id, api_key FROM payments.create_api_key('e2e', $1)", &[&scopes]).await.unwrap();
    (row.get(0), row.get(1))
}

/// Registers a webhook secret for `provider` and returns it.
pub async fn webhook_secret(provider: &str) -> String {
    let secret = format!("whsec_{}", unique("e2e"));
    connect()
        .await
        .execute("SELECT payments.add_webhook_secret($1, 'stripe', $2)", &[&provider, &secret])
        .await
        .unwrap();
    secret
}

/// Disables every enabled webhook endpoint: the tests share one database, and an
/// endpoint left behind would be sent every later test's events.
pub async fn remove_webhook_endpoints() {
    connect()
        .await
        .execute(
            "SELECT payments.remove_webhook_endpoint(id) FROM payments.webhook_endpoints WHERE disabled_at IS NULL",
            &[],
        )
        .await
        .unwrap();
}

/// Whether the test database is a Citus cluster's (`make scale-test`).
pub async fn on_citus(db: &Client) -> bool {
    let citus = "SELECT count(*) > 0 FROM pg_extension WHERE extname = 'citus'";
    db.query_one(citus, &[]).await.expect("read the installed extensions").get(0)
}

/// How many generated inputs a test that explores an input space tries: `n`, or a fifth of it on
/// a Citus cluster. Citus cannot change what an input means, only how the SQL paths it reaches
/// run; the single-node run explores the whole space, and a fifth of it still reaches each path.
pub async fn explored(db: &Client, n: usize) -> usize {
    if on_citus(db).await {
        n.div_ceil(5)
    } else {
        n
    }
}

/// Whether the long form of the reliability suite runs (`make reliability`
/// sets `RELIABILITY=long`); `make test` runs the quick form.
pub fn long_form() -> bool {
    std::env::var("RELIABILITY").is_ok_and(|v| v == "long")
}

/// `quick` in `make test`, `long` in `make reliability`.
pub fn sized(quick: usize, long: usize) -> usize {
    if long_form() {
        long
    } else {
        quick
    }
}

/// Adds a row to the reliability table (`$PAYMENTS_RELIABILITY_REPORT`, one
/// tab-separated line per case: case, trials, failures, figure). A test
/// reports before it asserts, so a failing case still shows in the table.
pub fn report(case: &str, trials: usize, failures: usize, figure: &str) {
    use std::io::Write;
    let Ok(path) = std::env::var("PAYMENTS_RELIABILITY_REPORT") else { return };
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open the report");
    writeln!(file, "{case}\t{trials}\t{failures}\t{figure}").expect("write the report");
}

/// The sandbox's charge count per idempotency key (`GET …/_sandbox/charges`);
/// `base` is the sandbox's URL (`…/sandbox` when embedded).
pub async fn sandbox_charges(base: &str, key: &str) -> std::collections::HashMap<String, u32> {
    reqwest::Client::new()
        .get(format!("{base}/_sandbox/charges"))
        .bearer_auth(key)
        .send()
        .await
        .expect("the sandbox answers")
        .json()
        .await
        .expect("charges as JSON")
}

/// An API error answer's status and `error.code`.
pub async fn error_code(r: reqwest::Response) -> (reqwest::StatusCode, String) {
    let status = r.status();
    let body: serde_json::Value = r.json().await.expect("every error has a JSON body");
    (status, body["error"]["code"].as_str().expect("error.code").to_string())
}
