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
    let (client, connection) = tokio_postgres::connect(&database_url(), NoTls).await.expect("connect to the test cluster");
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("connection error: {e}");
        }
    });
    client
}

/// A prefix no earlier run used, so tests never see each other's rows.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{nanos:x}")
}

/// The SQLSTATE of a database error, or a panic naming the unexpected success.
pub fn sqlstate<T: std::fmt::Debug>(result: Result<T, Error>) -> String {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.code().map(|c| c.code().to_string()).unwrap_or_else(|| panic!("not a database error: {e}")),
    }
}
