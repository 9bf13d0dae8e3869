//! backflow: a reverse-ETL sync engine whose connectors, quality checks and approval
//! policies are sandboxed WebAssembly components.
//!
//! - [`config`] loads and checks a workspace;
//! - [`host`] runs plugins in wasmtime with explicit grants and limits;
//! - [`plugins`] finds plugins by name;
//! - [`pipeline`] runs a sync: read, plan, deliver, record;
//! - [`state`] keeps run history, snapshots, change requests and the audit log in redb;
//! - [`governance`] owns roles, change requests, approval policies and the run-time gate;
//! - [`receiver`] is a local webhook receiver for demos and tests.

pub mod domain;
pub mod authz;
pub mod app;
pub mod config;
pub mod host;
pub mod plugins;
pub mod sync;
pub mod state;
pub mod receiver;
pub mod governance;
pub mod preview;
