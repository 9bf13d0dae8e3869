//! End-to-end tests: real plugins compiled from `plugins/` (and `tests/fixtures/`), real
//! HTTP servers on 127.0.0.1, the real CLI binary. Build the plugins first
//! (`scripts/build-plugins`); `scripts/test` does that.

mod pg;
mod serve_support;
mod support;

mod changes;
mod checks;
mod cli;
mod config_errors;
mod crash;
mod delivery;
mod engine_core;
mod file_source;
mod governance;
mod help;
mod listener;
mod messages;
mod plugin_languages;
mod postgres;
mod readme;
mod sandbox;
mod secrets;
mod serve;
mod sync;
mod ui;
mod undo;
