//! HTTP handlers, one file per resource. Each forwards into one extension function.

pub mod ops;
pub mod payments;
pub mod webhooks;
