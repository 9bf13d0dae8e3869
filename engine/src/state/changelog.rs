//! Run changelogs: what each run did to each row (values before, fingerprint sent), for
//! `runs undo` and `rows history`. Written by [`StateStore::apply`] in the snapshot's own
//! transaction; read and pruned here.

use super::{StateError, StateStore};
use redb::{ReadableTable, TableDefinition};

/// The table `changelog/NAME`: (run ID, encoded primary key) → `RowChange` (the entry
/// before, the fingerprint sent); (run ID, empty key) → JSON `ChangelogHeader`. Pruned to
/// the last `[state] keep_changelog_runs` runs of the sync.
pub(super) fn changelog_table(sync: &str) -> String {
    format!("changelog/{sync}")
}
pub(super) fn changelog_def(name: &str) -> TableDefinition<'_, (&'static str, &'static [u8]), &'static [u8]> {
    TableDefinition::new(name)
}

impl StateStore {
    /// The header of a run's changelog, if the run delivered anything and is still retained.
    pub fn changelog_header(&self, sync: &str, run_id: &str) -> Result<Option<crate::domain::ChangelogHeader>, StateError> {
        self.read_table(changelog_def(&changelog_table(sync)), || None, |table| {
            let value = table.get((run_id, &[][..])).map_err(|e| self.err(e))?;
            value.map(|v| serde_json::from_slice(v.value()).map_err(|e| self.err(format!("unreadable changelog header: {e}")))).transpose()
        })
    }

    /// Up to `limit` changelog entries of a run, in key order, after `after`.
    pub fn changelog_chunk(&self, sync: &str, run_id: &str, after: Option<&[u8]>, limit: usize) -> Result<Vec<(Vec<u8>, crate::domain::RowChange)>, StateError> {
        self.read_table(changelog_def(&changelog_table(sync)), || Vec::new(), |table| {
            let start = after.unwrap_or(&[]);
            let mut out = Vec::new();
            for entry in table.range((run_id, start)..).map_err(|e| self.err(e))? {
                let (k, v) = entry.map_err(|e| self.err(e))?;
                let (run, key) = k.value();
                if run != run_id || out.len() >= limit {
                    break;
                }
                if key.is_empty() || Some(key) == after {
                    continue;
                }
                let change = crate::domain::RowChange::decode(v.value()).ok_or_else(|| self.err("corrupt changelog entry"))?;
                out.push((key.to_vec(), change));
            }
            Ok(out)
        })
    }

    /// What each of `run_ids` did to one key (`None` where it did not touch it).
    pub fn changelog_entries(&self, sync: &str, run_ids: &[&str], key: &[u8]) -> Result<Vec<Option<crate::domain::RowChange>>, StateError> {
        self.read_table(changelog_def(&changelog_table(sync)), || vec![None; run_ids.len()], |table| {
            run_ids
                .iter()
                .map(|run| {
                    let v = table.get((*run, key)).map_err(|e| self.err(e))?;
                    Ok(v.and_then(|v| crate::domain::RowChange::decode(v.value())))
                })
                .collect()
        })
    }

    /// Keeps the changelogs of the newest `keep` runs of a sync that have one; drops older ones.
    pub fn prune_changelog(&self, sync: &str, keep: u64) -> Result<(), StateError> {
        let name = changelog_table(sync);
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = match txn.open_table(changelog_def(&name)) {
                Ok(t) => t,
                Err(e) => return Err(self.err(e)),
            };
            // Runs with a changelog, oldest first (run IDs are ULIDs: they sort by time).
            let mut runs: Vec<String> = Vec::new();
            loop {
                let from = runs.last().map(|r| format!("{r}\u{0}")).unwrap_or_default();
                let next = table.range((from.as_str(), &[][..])..).map_err(|e| self.err(e))?.next();
                match next {
                    Some(entry) => runs.push(entry.map_err(|e| self.err(e))?.0.value().0.to_string()),
                    None => break,
                }
            }
            let excess = runs.len().saturating_sub(usize::try_from(keep).unwrap_or(usize::MAX));
            for run in &runs[..excess] {
                let end = format!("{run}\u{0}");
                table.retain_in((run.as_str(), &[][..])..(end.as_str(), &[][..]), |_, _| false).map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }

}
