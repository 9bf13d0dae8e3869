//! End-to-end tests: real plugins compiled from `plugins/` (and `tests/fixtures/`), real
//! HTTP servers on 127.0.0.1, the real CLI binary. Build the plugins first
//! (`scripts/build-plugins`); `scripts/test` does that.

mod pg;
mod serve_support;
mod support;

mod authors;
mod changes;
mod checks;
mod cli;
mod config_errors;
mod contract_v0_3_0;
mod crash;
mod debugger;
mod delivery;
mod drift;
mod edges;
mod engine_core;
mod failures;
mod field_rules;
mod file_source;
mod governance;
mod held;
mod help;
mod listener;
mod messages;
mod newcomer;
mod plugin_languages;
mod postgres;
mod postgres_destination;
mod promises;
mod readme;
mod reviews;
mod sandbox;
mod secrets;
mod serve;
mod state_ops;
mod sync;
mod ui;
mod unattended;
mod undo;
mod warehouse_diff;
