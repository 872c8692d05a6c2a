//! The end-to-end suites: one test binary (one link), a module per suite. `make e2e` runs
//! the modules side by side, each against a database of its own (scripts/e2e.py); one
//! module alone: `cargo test -p payments-e2e --test e2e -- <module>::` with
//! PAYMENTS_TEST_DATABASE_URL set, as `make test` sets it.

mod dashboard;
mod foundation;
mod gateway;
mod in_process;
mod mcp;
mod reliability;
mod scale_out;
mod upgrade;
mod webhooks;
