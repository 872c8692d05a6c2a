//! payments-gateway: a thin HTTP front for the `payments` PostgreSQL
//! extension. Every call becomes one extension function call; the gateway
//! adds authentication, the provider calls and HTTP conventions, and holds no
//! payment state.
//!
//! `startup::Application` builds the whole service (tests start it in
//! process on port 0); `main.rs` only parses the command line.
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod billing;
pub mod command_worker;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod deliveries;
pub mod destinations;
pub mod error;
pub mod extract;
pub mod fault;
pub mod http;
pub mod listen;
pub mod mcp;
pub mod openapi;
pub mod provider;
pub mod reconciliation;
pub mod recovery;
pub mod render;
pub mod routes;
pub mod serve;
pub mod startup;
pub mod state;
