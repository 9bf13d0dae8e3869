//! The conformance suite: whether one plugin file keeps the contract, whatever language it
//! was written in. `backflow plugin conformance FILE` runs it; the templates' tests and CI
//! run it on the Rust, JavaScript and Python plugins alike.
//!
//! It drives the plugin through the same host code a sync uses (`host::instance`), so what
//! passes here behaves the same in a run. Checks, per kind:
//!
//! - every plugin: it loads (a hosted contract version, a spec with a name, a version and a
//!   config schema that is JSON); `check-config` answers malformed JSON with errors, not a
//!   trap; the given config passes `check-config`; removing a field the schema requires gives
//!   an error naming that field; opening with a malformed config is an error value, not a
//!   trap;
//! - destinations: batches of 0, 1 and many rows with a column of every value type (edge
//!   values included; or the author's own rows, `--rows FILE.csv|jsonl`, `rows_file.rs`)
//!   for every operation it declares, one outcome per row; `finish`; with
//!   `--offline-config` (a config whose remote cannot be reached), a retryable error rather
//!   than a fatal one or a trap;
//!   with `--fault-config`, a fault-injecting endpoint (429, 5xx storms, slow answers, a
//!   lost acknowledgement) and retries that must keep the idempotency key (`faults.rs`);
//! - quality checks: every change kind with 0, 1 and many rows (and `before` rows for
//!   changes), then `finish` with a verdict;
//! - sources: reading the query to the end with small and large `max-rows`, every batch
//!   within the limit and in the declared columns;
//! - approval policies: a run and a config change each get a decision.
//!
//! One file per kind of check: `spec.rs` (the spec and `check-config`, for every plugin),
//! then `destination.rs`, `quality_check.rs`, `source.rs` and `policy.rs`; the samples they
//! send (`samples.rs`) and the report they fill (`report.rs`) are beside them.

mod destination;
mod faults;
mod options;
mod policy;
mod quality_check;
mod report;
mod rows_file;
mod samples;
mod source;
mod spec;

pub use options::Options;
pub use report::{Check, Outcome, Report};
pub use rows_file::{read_rows, RowsFileError};
pub use samples::{sample_columns, sample_row, SampleRows};

use crate::host::PluginHost;
use backflow_plugin_sdk::PluginKind;
use destination::check_destination;
use policy::check_policy;
use quality_check::check_quality_check;
use source::check_source;
use spec::{check_config, check_spec};
use std::path::Path;

/// Runs the suite on `file`. Never fails itself: what goes wrong is a failed check.
pub async fn run(host: &PluginHost, file: &Path, options: &Options) -> Report {
    let mut report = Report {
        file: file.display().to_string(),
        ..Report::default()
    };
    let plugin = match host.load(file).await {
        Ok(p) => p,
        Err(e) => {
            report.record("loads", Outcome::Fail, format!("{e:#}"));
            return report;
        }
    };
    report.plugin = Some(plugin.spec.name.clone());
    report.kind = Some(plugin.spec.kind);
    report.contract = Some(plugin.contract.to_string());
    report.row_encoding = Some(plugin.row_encoding.as_str().to_string());
    check_spec(&mut report, &plugin);
    check_config(&mut report, host, &plugin, options).await;
    match plugin.spec.kind {
        PluginKind::Destination => check_destination(&mut report, host, &plugin, options).await,
        PluginKind::QualityCheck => check_quality_check(&mut report, host, &plugin, options).await,
        PluginKind::Source => check_source(&mut report, host, &plugin, options).await,
        PluginKind::ApprovalPolicy => check_policy(&mut report, host, &plugin, options).await,
    }
    report
}
