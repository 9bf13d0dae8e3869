//! The delivery debugger's vocabulary: which requests a run keeps (`[debug] capture`), how
//! long they are kept, and one kept request as the host recorded it (secrets redacted).

use serde::{Deserialize, Serialize};

/// Which of a run's destination requests are kept (`[debug] capture`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    /// None.
    Off,
    /// Requests that failed: an HTTP status of 400 or above, or no answer at all.
    Failed,
    /// Failed requests, and the first [`SAMPLE_FIRST`] requests of each run. The default.
    #[default]
    Sample,
    /// Every request (costly on large runs: see the README's "Delivery debugger").
    All,
}

impl CaptureMode {
    /// The mode `capture = "..."` names, or `None` for an unknown one.
    pub fn parse(s: &str) -> Option<CaptureMode> {
        Some(match s {
            "off" => CaptureMode::Off,
            "failed" => CaptureMode::Failed,
            "sample" => CaptureMode::Sample,
            "all" => CaptureMode::All,
            _ => return None,
        })
    }

    /// Whether a run's request number `seq` (from 1), failed or not, is kept.
    pub fn keeps(self, seq: u64, failed: bool) -> bool {
        match self {
            CaptureMode::Off => false,
            CaptureMode::Failed => failed,
            CaptureMode::Sample => failed || seq <= SAMPLE_FIRST,
            CaptureMode::All => true,
        }
    }
}

/// How many of a run's first requests `capture = "sample"` keeps, failed or not.
pub const SAMPLE_FIRST: u64 = 5;

/// The `[debug]` settings of a workspace, with their defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugSettings {
    /// Which requests are kept.
    pub capture: CaptureMode,
    /// How much of each request and response body is kept, in bytes.
    pub max_body_bytes: usize,
    /// Runs per sync whose requests are kept.
    pub keep_debug_runs: u64,
    /// Days requests are kept.
    pub keep_debug_days: u64,
    /// Bytes all kept requests may take together; the oldest runs' go first.
    pub max_bytes: u64,
}

impl Default for DebugSettings {
    fn default() -> Self {
        DebugSettings {
            capture: CaptureMode::Sample,
            max_body_bytes: 16 * 1024,
            keep_debug_runs: 20,
            keep_debug_days: 7,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// One HTTP request a destination made through the host during a run, and its answer, as
/// kept by the delivery debugger. Headers and bodies are redacted; bodies are cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedRequest {
    /// The run that made it.
    pub run_id: String,
    /// Its number among all the run's requests (kept or not), from 1.
    pub seq: u64,
    /// The destination plugin that sent it.
    pub plugin: String,
    /// When it was sent, Unix milliseconds.
    pub started_at_ms: u64,
    /// How long until the answer's body was read (or the request failed), in milliseconds.
    pub duration_ms: u64,
    /// The HTTP method.
    pub method: String,
    /// The URL (credential-shaped query values redacted).
    pub url: String,
    /// The answer's HTTP status; `None` when there was no answer.
    pub status: Option<u16>,
    /// Why there was no answer (refused by the grants, timeout, connection error).
    pub error: Option<String>,
    /// Whether it failed: no answer, or a status of 400 or above.
    pub failed: bool,
    /// The request's headers, credentials and granted secrets redacted.
    pub request_headers: Vec<(String, String)>,
    /// The request body's first bytes (text, redacted).
    pub request_body: String,
    /// The request body's full size in bytes.
    pub request_bytes: u64,
    /// The answer's headers, redacted like the request's.
    pub response_headers: Vec<(String, String)>,
    /// The answer body's first bytes (text, redacted).
    pub response_body: String,
    /// The answer body's full size in bytes.
    pub response_bytes: u64,
    /// The write call it was part of, when made during one.
    pub batch: Option<CapturedBatch>,
}

/// The write call a captured request was part of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedBatch {
    /// The call's number in the run, from 1 (a retried or halved batch is a new call).
    pub index: u64,
    /// The operation the rows were sent as (`insert`, `upsert`, …).
    pub operation: String,
    /// Rows in the batch.
    pub rows: u64,
    /// The rows' primary keys, as text (`1`, `1|eu`), in batch order.
    pub keys: Vec<String>,
}

impl CapturedRequest {
    /// The request without its headers, bodies and row keys: what a list shows.
    pub fn summary(&self) -> CapturedRequest {
        CapturedRequest {
            request_headers: Vec::new(),
            request_body: String::new(),
            response_headers: Vec::new(),
            response_body: String::new(),
            batch: self.batch.as_ref().map(|b| CapturedBatch {
                keys: Vec::new(),
                ..b.clone()
            }),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_keeps_what_it_says() {
        assert!(!CaptureMode::Off.keeps(1, true));
        assert!(CaptureMode::Failed.keeps(100, true) && !CaptureMode::Failed.keeps(1, false));
        assert!(CaptureMode::Sample.keeps(SAMPLE_FIRST, false));
        assert!(!CaptureMode::Sample.keeps(SAMPLE_FIRST + 1, false));
        assert!(CaptureMode::Sample.keeps(1000, true));
        assert!(CaptureMode::All.keeps(1000, false));
        assert_eq!(CaptureMode::parse("sample"), Some(CaptureMode::Sample));
        assert_eq!(CaptureMode::parse("some"), None);
    }
}
