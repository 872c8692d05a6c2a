//! HTTP handlers, one file per resource. Each forwards into one extension function.

pub mod catalog;
pub mod credits;
pub mod customers;
pub mod disputes;
pub mod holds;
pub mod invoices;
pub mod ops;
pub mod payments;
pub mod plans;
pub mod reconciliations;
pub mod refunds;
pub mod subscriptions;
pub mod usage;
pub mod webhook_endpoints;
pub mod webhooks;
