//! The suite's report: one check per line, each passed, warned, failed or skipped.

use crate::host::CallError;
use backflow_plugin_sdk::PluginKind;

/// How one check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The plugin keeps the contract here.
    Pass,
    /// Allowed by the contract but likely a mistake (a plugin that accepts malformed config).
    Warn,
    /// The plugin breaks the contract here.
    Fail,
    /// Not applicable with the options given.
    Skip,
}

impl Outcome {
    /// The outcome as the text report prints it (`ok`, `warn`, `FAIL`, `skip`).
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "ok",
            Outcome::Warn => "warn",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "skip",
        }
    }
}

/// One check of the suite.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// What was checked (`write insert × 1 rows`, `check-config accepts the given config`).
    pub name: String,
    /// How it went.
    pub outcome: Outcome,
    /// What the plugin answered or did (empty when there is nothing to add).
    pub detail: String,
}

/// Everything the suite found about one plugin file.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// The plugin file, as given.
    pub file: String,
    /// The plugin's name (none if it did not load).
    pub plugin: Option<String>,
    /// The plugin's kind (none if it did not load).
    pub kind: Option<PluginKind>,
    /// The contract version it implements (none if it did not load).
    pub contract: Option<String>,
    /// How its rows are encoded (none if it did not load).
    pub row_encoding: Option<String>,
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether no check failed (warnings and skips pass).
    pub fn passed(&self) -> bool {
        !self.checks.iter().any(|c| c.outcome == Outcome::Fail)
    }

    pub(super) fn record(
        &mut self,
        name: impl Into<String>,
        outcome: Outcome,
        detail: impl Into<String>,
    ) {
        self.checks.push(Check {
            name: name.into(),
            outcome,
            detail: detail.into(),
        });
    }

    /// Records a call's result: its error is a failure, a trap says so.
    pub(super) fn record_call<T>(
        &mut self,
        name: impl Into<String>,
        result: &Result<T, CallError>,
        ok_detail: impl FnOnce(&T) -> String,
    ) {
        match result {
            Ok(v) => self.record(name, Outcome::Pass, ok_detail(v)),
            Err(e) => self.record(name, Outcome::Fail, describe_error(e)),
        }
    }

    /// Records how opening with the config text `{not json` went: an error value passes, a
    /// trap fails, and an instance that opened is worth a warning (`opened` says what it
    /// opened, e.g. "opened a writer with the config text `{not json`"). The caller closes
    /// such an instance.
    pub(super) fn record_malformed_open<T>(&mut self, result: &Result<T, CallError>, opened: &str) {
        let name = "open refuses malformed config";
        match result {
            Ok(_) => self.record(name, Outcome::Warn, opened),
            Err(CallError::Plugin(e)) => self.record(name, Outcome::Pass, e.to_string()),
            Err(e) => self.record(name, Outcome::Fail, describe_error(e)),
        }
    }
}

/// A failed call in the report's words: a trap, an error the plugin returned, or the host's.
pub(super) fn describe_error(e: &CallError) -> String {
    match e {
        CallError::Trap(m) => format!("trapped (a plugin must return errors as values): {m}"),
        CallError::Plugin(p) => format!("returned an error: {p}"),
        CallError::Host(m) => format!("host error: {m}"),
    }
}
