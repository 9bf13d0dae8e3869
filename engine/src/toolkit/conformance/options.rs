//! What the conformance suite needs besides the plugin file.

use super::samples::SampleRows;
use crate::domain::{Grants, Limits};

/// What the suite needs besides the plugin file.
#[derive(Debug, Clone)]
pub struct Options {
    /// A working config (JSON text): the plugin's remote, if it has one, must be reachable.
    pub config: String,
    /// Sources: the query to read.
    pub query: String,
    /// Destinations: a config whose remote cannot be reached, to check that failure is
    /// reported as retryable.
    pub offline_config: Option<String>,
    /// What the plugin is granted (network hosts, environment variables), as a sync's
    /// `grants` would.
    pub grants: Grants,
    /// Memory, time and fuel limits for every call.
    pub limits: Limits,
    /// The author's sample rows (`--rows`, read by [`super::read_rows`]); none: the
    /// built-in sample ([`SampleRows::builtin`]).
    pub rows: Option<SampleRows>,
    /// Destinations: a config pointing at the suite's fault-injecting endpoint, whose URL
    /// replaces `${faults.url}` (see `faults.rs`); none: those checks are skipped.
    pub fault_config: Option<String>,
}
