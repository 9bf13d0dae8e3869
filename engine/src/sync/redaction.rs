//! The last line of secret redaction behind the host's: what a run record shows.

use super::prepare::PreparedSync;
use crate::domain::RunRecord;

/// Cuts secrets from everything a run record shows (errors, refusals, check messages), as a
/// last line behind the host's redaction of plugin errors: engine messages can quote URLs
/// and answers too. The secrets are the values of every variable granted to the sync's
/// plugins.
pub(super) fn redact_record(record: &mut RunRecord, p: &PreparedSync) {
    let mut secrets: Vec<String> = Vec::new();
    let connectors = [&p.source, &p.destination]
        .into_iter()
        .chain(p.checks.iter().map(|(c, _)| &c.connector));
    for c in connectors {
        secrets.extend(
            c.grants
                .env
                .iter()
                .filter_map(|name| std::env::var(name).ok()),
        );
    }
    let r = |m: &mut String| *m = crate::redact::redact(&secrets, m);
    if let Some(e) = &mut record.error {
        r(e);
    }
    record.rejected.iter_mut().for_each(|row| r(&mut row.error));
    for check in &mut record.checks {
        r(&mut check.message);
        check.samples.iter_mut().for_each(r);
    }
}
