//! Pure payment logic, free of PostgreSQL: the extension (`payments_ext`) wraps
//! it for SQL, and its unit tests run in milliseconds with `cargo test`.
#![forbid(unsafe_code)]

pub mod canonical;
pub mod currency;
pub mod error;
pub mod evidence;
pub mod id;
pub mod invoice;
pub mod ledger;
pub mod lifecycle;
pub mod money;
pub mod password;
pub mod pricing;
pub mod provider;
pub mod sqlstate;
pub mod state;
pub mod timestamp;
pub mod vocabulary;
pub mod webhook;
