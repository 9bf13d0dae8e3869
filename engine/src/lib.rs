//! backflow: a reverse-ETL sync engine whose connectors, quality checks and approval
//! policies are sandboxed WebAssembly components.
//!
//! - [`app`] is the application layer: every user operation, taking an authenticated actor;
//! - [`authz`] is the one authorization table;
//! - [`domain`] holds the shared vocabulary (a leaf: it imports none of the others);
//! - [`workspace`] loads and checks a workspace;
//! - [`host`] runs plugins in wasmtime with explicit grants and limits;
//! - [`plugins`] finds plugins by name;
//! - [`sync`] runs a sync, one module per stage: prepare, read, plan, checks, gate, deliver, commit;
//! - [`state`] keeps run history, snapshots, leases, change requests and the audit log in redb;
//! - [`governance`] owns change requests, approval policies and the run-time gate;
//! - [`preview`] reads the first rows of a model;
//! - [`schedule`] computes cron fire times; [`serve`] is the long-running service (scheduler,
//!   HTTP API, plugin hot reload); [`alerts`] posts run outcomes; [`metrics`] counts for `/metrics`;
//! - [`toolkit`] holds what is not the engine but serves its users: the plugin scaffold and
//!   conformance suite for plugin authors, a local webhook receiver for demos and tests. The
//!   sync path never uses it.

#![warn(missing_docs)]

pub mod alerts;
pub mod app;
pub mod authz;
pub mod domain;
pub mod governance;
pub mod host;
pub mod metrics;
pub mod plugins;
pub mod preview;
pub mod redact;
pub mod schedule;
pub mod serve;
pub mod state;
pub mod sync;
pub mod toolkit;
pub mod workspace;

#[cfg(test)]
mod proptest_cases;
